//! The order context: carts, checkout, sourcing, orders, promotions, payments and the sagas
//! that tie them together.
//!
//! Stock stays the warehouse context's and prices the catalog's: this crate calls them only
//! through their public APIs (`warehouse::stock::sellable_by_warehouse`,
//! `warehouse::reservation::hold_batch`/`confirm`/`release`, `catalog::price::offers_in`,
//! `catalog::channel::*`), inside its own transactions. Use cases take the caller's
//! [`store::Tx`]; reads take a pool. Nothing here knows HTTP.
//!
//! Invariants: an order's stock holds, its promotion uses and its saga's first step commit
//! with the order or not at all; a promotion's uses never exceed its `usage_limit` (a
//! guarded update backed by a `CHECK`); an order awaiting payment past its hold's expiry is
//! cancelled by the saga worker, which releases what it held.

pub mod backorder;
pub mod cart;
pub mod checkout;
pub mod error;
pub mod events;
pub mod lifecycle;
pub mod progress;
pub mod promotion;
pub mod record;
pub mod returns;
pub mod saga;
pub mod shortfall;
pub mod sourcing;

pub use checkout::Checkouts;
pub use error::OrderError;

pub type Result<T, E = OrderError> = std::result::Result<T, E>;

use kernel::Clock;
use std::sync::Arc;
use std::time::Duration;
use store::Db;
use store::subscriber::{Subscription, subscription};
use store::workers::{Progress, Worker};

/// Sagas one worker run moves at most.
pub const SAGAS_PER_RUN_MAX: i64 = 200;

/// Carts one run of the cart worker cleans at most.
pub const CARTS_PER_RUN_MAX: i64 = 500;

/// The context's background workers, for the binary to supervise: the saga runner, which
/// compensates checkouts whose hold expired unpaid and marks overdue sagas stuck, and the
/// cart worker, which releases the soft holds of abandoned carts.
pub fn workers(db: &Db, clock: &Arc<dyn Clock>, interval: Duration) -> Vec<Worker> {
    let sagas = {
        let (db, clock) = (db.clone(), clock.clone());
        Worker::new("order-sagas", interval, move || {
            let (db, clock) = (db.clone(), clock.clone());
            async move {
                let moved = lifecycle::run_due(&db, clock.now(), SAGAS_PER_RUN_MAX).await?;
                Ok::<_, OrderError>(Progress { done: moved, more: moved as i64 >= SAGAS_PER_RUN_MAX })
            }
        })
    };
    let carts = {
        let (db, clock) = (db.clone(), clock.clone());
        Worker::new("order-carts", interval, move || {
            let (db, clock) = (db.clone(), clock.clone());
            async move {
                let cleaned = cart::release_abandoned(&db, clock.now(), CARTS_PER_RUN_MAX).await?;
                Ok::<_, OrderError>(Progress { done: cleaned, more: cleaned as i64 >= CARTS_PER_RUN_MAX })
            }
        })
    };
    vec![sagas, carts]
}

/// The context's subscribers: the backorder allocator, which holds arrived stock for
/// backordered lines.
pub fn subscriptions(db: &Db, clock: &Arc<dyn Clock>, interval: Duration) -> Vec<Subscription> {
    vec![
        subscription(
            db.clone(),
            clock.clone(),
            backorder::BackorderAllocator,
            interval,
            kernel::limits::OUTBOX_BATCH_MAX,
        ),
        subscription(
            db.clone(),
            clock.clone(),
            progress::FulfillmentProgress,
            interval,
            kernel::limits::OUTBOX_BATCH_MAX,
        ),
    ]
}
