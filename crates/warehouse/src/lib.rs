//! The warehouse context: what is physically where, and who may take it.
//!
//! It owns items (SKUs as physical goods), warehouses, stock levels, reservations and the
//! movement ledger. Its invariants, held at every instant on both databases:
//!
//! - `0 <= reserved`, `0 <= quarantined` and `reserved + quarantined <= on_hand` for every
//!   stock level (checked in the guarded `UPDATE`s and backed by the `stock_reserved_*` and
//!   `stock_quarantined_*` CHECK constraints);
//! - for every warehouse and SKU, the sums of the ledger's deltas equal the stock level
//!   (every change writes its movement in the same transaction, see [`ledger::Journal`]);
//! - reserved equals the sum of the lines of active and confirmed reservations, and
//!   quarantined the sum of the held quarantine entries ([`quarantine`]).
//!
//! Use cases take the caller's [`store::Tx`] and the current time; reads take a pool. Nothing
//! here knows about HTTP.

pub mod adjustment;
pub mod alert;
pub mod bin;
pub mod count;
pub mod error;
pub mod events;
pub mod import;
pub mod item;
pub mod ledger;
pub mod lot;
pub mod quarantine;
pub mod receipt;
pub mod reconcile;
pub mod reservation;
pub mod site;
pub mod stock;
pub mod transfer;

pub use error::{FieldIssue, Refusal, ShortLine, WarehouseError};

pub type Result<T, E = WarehouseError> = std::result::Result<T, E>;

use kernel::Clock;
use kernel::limits::{ALERT_RESCAN_LEVELS_MAX, OUTBOX_BATCH_MAX, SWEEP_BATCH_MAX};
use std::sync::Arc;
use std::time::Duration;
use store::Db;
use store::subscriber::{Subscription, subscription};
use store::workers::{Progress, Worker};

/// The context's background workers, for the binary to supervise: each does one bounded run
/// per `interval` (at once again while it has more).
pub fn workers(db: &Db, clock: &Arc<dyn Clock>, interval: Duration) -> Vec<Worker> {
    let sweeper = {
        let (db, clock) = (db.clone(), clock.clone());
        Worker::new("sweeper", interval, move || {
            let (db, clock) = (db.clone(), clock.clone());
            async move {
                #[cfg(feature = "failpoints")]
                fail::fail_point!("sweeper-run", |_| Err(WarehouseError::Store(store::StoreError::Corrupt(
                    "failpoint sweeper-run".into()
                ))));
                let expired = reservation::sweep_expired(&db, clock.now(), SWEEP_BATCH_MAX).await?;
                Ok::<_, WarehouseError>(Progress { done: expired, more: expired as i64 >= SWEEP_BATCH_MAX })
            }
        })
    };
    let lot_expiry = {
        let (db, clock) = (db.clone(), clock.clone());
        Worker::new("lot-expiry", interval, move || {
            let (db, clock) = (db.clone(), clock.clone());
            async move {
                let recorded = lot::record_lot_expiries(&db, clock.now(), SWEEP_BATCH_MAX).await?;
                Ok::<_, WarehouseError>(Progress { done: recorded, more: recorded as i64 >= SWEEP_BATCH_MAX })
            }
        })
    };
    // Rule changes and time-driven conditions (expiring lots, capacity); stock changes come
    // through the `alerts` subscriber.
    let alert_rescan = {
        let (db, clock) = (db.clone(), clock.clone());
        Worker::new("alert-rescan", interval, move || {
            let (db, clock) = (db.clone(), clock.clone());
            async move {
                let rescanned = alert::check_rule_changes(&db, clock.now(), ALERT_RESCAN_LEVELS_MAX).await?;
                let (raised, resolved) = alert::check_periodic(&db, clock.now()).await?;
                Ok::<_, WarehouseError>(Progress {
                    done: rescanned + raised + resolved,
                    more: rescanned as i64 >= ALERT_RESCAN_LEVELS_MAX,
                })
            }
        })
    };
    vec![sweeper, lot_expiry, alert_rescan]
}

/// The context's subscribers to the outbox.
pub fn subscriptions(db: &Db, clock: &Arc<dyn Clock>, interval: Duration) -> Vec<Subscription> {
    vec![subscription(db.clone(), clock.clone(), alert::StockAlerts, interval, OUTBOX_BATCH_MAX)]
}
