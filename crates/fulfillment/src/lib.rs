//! The fulfillment context: a paid order's fulfilments (one per warehouse it is allocated
//! from), taken from `fulfillment.requested` by the [`intake`] subscriber, picked in batches
//! on routes [`route`] plans ([`picking`]), packed and weighed ([`packing`]), then shipped and
//! delivered ([`shipping`]), and returned ([`returns`]). Shipping consumes exactly the
//! fulfilment's share of the order's holds (`warehouse::reservation::settle_part`) in the
//! transaction of the status change.
//!
//! It reads orders only through `order`'s public API and moves stock only through
//! `warehouse`'s. Its refusals take the order context's error type: they are the same
//! refusals (not found, invalid state), rendered the same way.

pub mod events;
pub mod intake;
pub mod packing;
pub mod picking;
pub mod quality;
pub mod record;
pub mod returns;
pub mod route;
pub mod settings;
pub mod shipping;

use kernel::Clock;
use std::sync::Arc;
use std::time::Duration;
use store::Db;
use store::subscriber::{Subscription, subscription};

pub use order::OrderError as FulfillmentError;
pub type Result<T> = std::result::Result<T, FulfillmentError>;

/// The context's subscribers: the intake of requested fulfilments.
pub fn subscriptions(db: &Db, clock: &Arc<dyn Clock>, interval: Duration) -> Vec<Subscription> {
    vec![subscription(db.clone(), clock.clone(), intake::Intake, interval, kernel::limits::OUTBOX_BATCH_MAX)]
}
