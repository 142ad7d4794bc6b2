//! The catalog context: what shoppers see. Channels (where a retailer sells: currency,
//! country, warehouses in priority order, rules) and warehouses' shipping rates; products and
//! their variants over the warehouse context's items (a SKU belongs to one product); prices
//! per SKU and channel with their history; and the availability view with its cache.
//!
//! Stock stays the warehouse context's: the catalog reads it only through
//! `warehouse::stock::sellable_in` (inside its own snapshot) and follows its events.
//! Use cases take the caller's [`store::Tx`]; reads take a pool. Nothing here knows HTTP.

pub mod availability;
pub mod channel;
pub mod error;
pub mod events;
pub mod price;
pub mod product;
pub mod search;

pub use availability::AvailabilityView;
pub use error::{CatalogError, FieldProblem};

pub type Result<T, E = CatalogError> = std::result::Result<T, E>;

use std::time::Duration;
use store::workers::{Progress, Worker};

/// How often the view's background runs happen.
#[derive(Debug, Clone)]
pub struct ViewIntervals {
    /// The follower polls the outbox this often (the freshness floor: a change shows within
    /// about this, plus a read).
    pub follow: Duration,
    pub verify: Duration,
    pub warm: Duration,
    /// The search index's subscriber runs this often.
    pub search: Duration,
    /// Each process's search index reads what the subscriber wrote this often.
    pub search_follow: Duration,
}

impl Default for ViewIntervals {
    fn default() -> Self {
        Self {
            follow: Duration::from_millis(10),
            verify: Duration::from_secs(1),
            warm: Duration::from_secs(5),
            search: Duration::from_millis(200),
            search_follow: Duration::from_millis(50),
        }
    }
}

/// The context's background workers, for the binary to supervise: the view's event
/// follower (which also refreshes what it dropped and what is read close to expiry), its
/// verifier and its warmer (which also saves the most-read SKUs); and the search index's
/// follower of the search rows.
pub fn workers(view: &AvailabilityView, search: &search::SearchIndex, intervals: &ViewIntervals) -> Vec<Worker> {
    let follower = {
        let view = view.clone();
        Worker::new("availability-follower", intervals.follow, move || {
            let view = view.clone();
            async move {
                let read = view.follow().await?;
                Ok::<_, CatalogError>(Progress { done: read, more: read >= 1_000 })
            }
        })
    };
    // Apart from the follower: a refresh waits for fetch permits and may take up to the fetch
    // timeout, and the follower's invalidations (what keeps every read inside the freshness
    // bound) must never wait behind it.
    let refresher = {
        let view = view.clone();
        Worker::new("availability-refresher", intervals.follow, move || {
            let view = view.clone();
            async move {
                // Not while the follower catches up on a backlog, which comes first.
                let refreshed = if view.follower_behind() { 0 } else { view.refresh_queued().await };
                Ok::<_, CatalogError>(Progress { done: refreshed, more: false })
            }
        })
    };
    let verifier = {
        let view = view.clone();
        Worker::new("availability-verifier", intervals.verify, move || {
            let view = view.clone();
            async move {
                let report = view.verify().await?;
                Ok::<_, CatalogError>(Progress { done: report.repaired, more: false })
            }
        })
    };
    let warmer = {
        let view = view.clone();
        let within = intervals.warm * 2;
        Worker::new("availability-warmer", intervals.warm, move || {
            let view = view.clone();
            async move {
                let read = view.warm(within).await?;
                view.save_hot().await?;
                Ok::<_, CatalogError>(Progress { done: read, more: false })
            }
        })
    };
    let search_follower = {
        let search = search.clone();
        Worker::new("search-follower", intervals.search_follow, move || {
            let search = search.clone();
            async move {
                let read = search.catch_up().await?;
                Ok::<_, CatalogError>(Progress { done: read, more: false })
            }
        })
    };
    vec![follower, refresher, verifier, warmer, search_follower]
}

/// The context's subscribers to the outbox: the search index.
pub fn subscriptions(
    db: &store::Db,
    clock: &std::sync::Arc<dyn kernel::Clock>,
    intervals: &ViewIntervals,
) -> Vec<store::subscriber::Subscription> {
    vec![store::subscriber::subscription(
        db.clone(),
        clock.clone(),
        search::SearchIndexer,
        intervals.search,
        kernel::limits::OUTBOX_BATCH_MAX,
    )]
}
