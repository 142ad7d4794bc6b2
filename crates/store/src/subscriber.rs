//! Subscribers: the one way a context consumes the outbox.
//!
//! A subscriber has a name, a persisted offset (`worker_offsets`), and a handler that gets a
//! bounded batch of events per run, in `seq` order (so each aggregate's events in
//! `aggregate_seq` order), inside the transaction that moves its offset. Its database effects
//! and its offset therefore commit together; anything it does outside the database is
//! at-least-once (a run that fails after the effect is run again from the same offset).
//!
//! One holder at a time, on any replica: a run locks the subscriber's offset row
//! (`FOR UPDATE` on PostgreSQL; SQLite has one writer), so two replicas never hand the same
//! range to the handler at once. Runs are driven by the binary's supervisor, which restarts a
//! failed run with backoff and counts it. `stockroom_subscriber_lag{subscriber}` is how many
//! events are committed past its offset after each run.

use crate::outbox::StoredEvent;
use crate::sql::{Lock, dynamic, list_placeholders};
use crate::workers::{Progress, Worker};
use crate::{Db, StoreError, Tx};
use kernel::{Clock, Timestamp};
use sqlx::Row;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// A consumer of the outbox.
pub trait Subscriber: Send + Sync + 'static {
    type Error: std::error::Error + From<StoreError> + Send + Sync + 'static;

    /// Names the offset, the metrics and the worker.
    fn name(&self) -> &'static str;

    /// The event types it handles; the others still move its offset. Each must be a
    /// registered event type (see `kernel::event`), or start-up fails.
    fn event_types(&self) -> &'static [&'static str];

    /// Handles `events` (never empty, `seq` ascending) inside `tx`, which then moves the
    /// offset past them and commits.
    fn handle<'a>(
        &'a self,
        tx: &'a mut Tx,
        events: &'a [StoredEvent],
        now: Timestamp,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'a;
}

/// What one run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunReport {
    /// Events handed to the handler.
    pub handled: usize,
    /// The offset after the run.
    pub offset: i64,
    /// Committed events past the offset after the run.
    pub lag: i64,
    /// How long, at the run's `now`, the oldest of them has waited, ms (0 when none; `None`
    /// when it could not be read, which does not fail a run that has committed).
    pub lag_ms: Option<i64>,
}

impl RunReport {
    /// Committed events are left past the offset: run again at once.
    pub fn more(&self) -> bool {
        self.lag > 0
    }
}

/// A subscriber as the binary composes it: its worker, and what start-up checks.
#[derive(Debug, Clone)]
pub struct Subscription {
    pub name: &'static str,
    pub event_types: &'static [&'static str],
    pub worker: Worker,
}

/// `subscriber` as a subscription: a worker for the binary to supervise, each run handing up
/// to `batch_max` events to it and asking for the next run at once while it lags.
pub fn subscription<S: Subscriber>(
    db: Db,
    clock: Arc<dyn Clock>,
    subscriber: S,
    interval: Duration,
    batch_max: i64,
) -> Subscription {
    let (name, event_types) = (subscriber.name(), subscriber.event_types());
    let subscriber = Arc::new(subscriber);
    let worker = Worker::new(name, interval, move || {
        let (db, clock, subscriber) = (db.clone(), clock.clone(), subscriber.clone());
        async move {
            let report = run_once(&db, subscriber.as_ref(), batch_max, clock.now()).await?;
            Ok::<_, S::Error>(Progress { done: report.handled, more: report.more() })
        }
    });
    Subscription { name, event_types, worker }
}

/// Checks, before the server starts, that every subscription can run: names are unique,
/// every event type it wants is registered, and its offset row exists (created at 0, the
/// start of the feed). A subscriber that cannot start fails start-up instead of being skipped.
pub async fn prepare(
    db: &Db,
    subscriptions: &[Subscription],
    registered: &[&str],
    now: Timestamp,
) -> Result<(), String> {
    // Every check before any write, so a refused composition leaves nothing behind.
    for (i, s) in subscriptions.iter().enumerate() {
        if subscriptions[..i].iter().any(|earlier| earlier.name == s.name) {
            return Err(format!("two subscribers are named {}", s.name));
        }
        let unknown: Vec<&str> = s.event_types.iter().copied().filter(|t| !registered.contains(t)).collect();
        if !unknown.is_empty() {
            return Err(format!(
                "subscriber {} wants event types that no context registers: {}",
                s.name,
                unknown.join(", ")
            ));
        }
    }
    for s in subscriptions {
        let created = async {
            let mut tx = db.begin().await?;
            ensure_offset(&mut tx, s.name, now).await?;
            tx.commit().await.map_err(StoreError::from)
        };
        created.await.map_err(|e: StoreError| format!("subscriber {}: {e}", s.name))?;
    }
    Ok(())
}

async fn ensure_offset(tx: &mut Tx, name: &str, now: Timestamp) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO worker_offsets (worker, last_seq, updated_at_ms) VALUES ($1, 0, $2) \
         ON CONFLICT (worker) DO NOTHING",
    )
    .bind(name.to_owned())
    .bind(now.millis())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// One run: scans the next `batch_max` seqs after the offset (up to the committed head),
/// hands the wanted events among them to the handler and moves the offset past them, in one
/// transaction.
pub async fn run_once<S: Subscriber>(
    db: &Db,
    subscriber: &S,
    batch_max: i64,
    now: Timestamp,
) -> Result<RunReport, S::Error> {
    let name = subscriber.name();
    let mut tx = db.begin().await?;
    ensure_offset(&mut tx, name, now).await?;
    let offset: i64 = Lock::ForUpdate
        .select(&tx, "SELECT last_seq FROM worker_offsets WHERE worker = $1")
        .bind(name.to_owned())
        .fetch_one(&mut *tx)
        .await
        .map_err(StoreError::from)?
        .try_get(0)
        .map_err(StoreError::from)?;
    // Every seq up to the committed head is committed (see `outbox`), so events up to it can
    // be scanned without a gap. A run scans at most `batch_max` seqs, wanted or not, so the
    // transaction (and on SQLite the write lock) stays short however the types are mixed.
    let head = crate::outbox::committed_head_in(&mut tx).await?;
    let upto = head.min(offset.saturating_add(batch_max.max(1)));
    let types = subscriber.event_types();
    let sql = format!(
        "SELECT seq, id, event_type, aggregate, aggregate_seq, at, version, data FROM events \
         WHERE seq > $1 AND seq <= $2{} ORDER BY seq",
        if types.is_empty() {
            String::new()
        } else {
            format!(" AND event_type IN ({})", list_placeholders(types.len(), 3))
        }
    );
    let mut query = dynamic(sql).bind(offset).bind(upto);
    for event_type in types {
        query = query.bind(event_type.to_string());
    }
    let rows = query.fetch_all(&mut *tx).await.map_err(StoreError::from)?;
    let events = rows.iter().map(crate::outbox::decode_row).collect::<Result<Vec<_>, _>>()?;
    let new_offset = upto.max(offset);
    if !events.is_empty() {
        subscriber.handle(&mut tx, &events, now).await?;
    }
    if new_offset != offset {
        sqlx::query("UPDATE worker_offsets SET last_seq = $1, updated_at_ms = $2 WHERE worker = $3")
            .bind(new_offset)
            .bind(now.millis())
            .bind(name.to_owned())
            .execute(&mut *tx)
            .await
            .map_err(StoreError::from)?;
    }
    tx.commit().await.map_err(StoreError::from)?;
    let lag = (head - new_offset).max(0);
    let lag_ms = if lag > 0 { lag_ms(db, new_offset, now).await } else { Ok(0) };
    let lag_ms =
        lag_ms.inspect_err(|error| tracing::warn!(%error, subscriber = name, "the lag in time could not be read")).ok();
    report_lag(name, lag, lag_ms);
    metrics::counter!("stockroom_subscriber_events_total", "subscriber" => name).increment(events.len() as u64);
    Ok(RunReport { handled: events.len(), offset: new_offset, lag, lag_ms })
}

/// How long, at `now`, the first committed event past `offset` has waited, ms (0 when none):
/// the lag in time beside the lag in events.
pub async fn lag_ms(db: &Db, offset: i64, now: Timestamp) -> Result<i64, StoreError> {
    let at: Option<String> = sqlx::query_scalar("SELECT at FROM events WHERE seq > $1 ORDER BY seq LIMIT 1")
        .bind(offset)
        .fetch_optional(db.reader())
        .await?;
    let Some(at) = at else { return Ok(0) };
    let at = time::OffsetDateTime::parse(&at, &time::format_description::well_known::Rfc3339)
        .map_err(|e| StoreError::Corrupt(format!("event after {offset}: at {at:?}: {e}")))?;
    let at_ms = (at.unix_timestamp_nanos() / 1_000_000) as i64;
    Ok((now.millis() - at_ms).max(0))
}

/// Sets a consumer's lag gauges: `stockroom_subscriber_lag` (events) and
/// `stockroom_subscriber_lag_seconds`, the same pair for every consumer of the outbox.
/// A lag in time that could not be read leaves the seconds gauge as it was.
pub fn report_lag(name: &'static str, lag: i64, lag_ms: Option<i64>) {
    metrics::gauge!("stockroom_subscriber_lag", "subscriber" => name).set(lag as f64);
    if let Some(ms) = lag_ms {
        metrics::gauge!("stockroom_subscriber_lag_seconds", "subscriber" => name).set(ms as f64 / 1000.0);
    }
}

/// A subscriber's offset and lag, for operators.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct OffsetReport {
    pub subscriber: String,
    pub offset: i64,
    pub lag: i64,
}

/// Every subscriber's offset and how far the committed feed is past it.
pub async fn offsets(db: &Db) -> Result<Vec<OffsetReport>, StoreError> {
    let head: i64 =
        sqlx::query_scalar("SELECT last_seq FROM event_sequence WHERE id = 1").fetch_one(db.reader()).await?;
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT worker, last_seq FROM worker_offsets ORDER BY worker").fetch_all(db.reader()).await?;
    Ok(rows
        .into_iter()
        .map(|(subscriber, offset)| OffsetReport { subscriber, offset, lag: (head - offset).max(0) })
        .collect())
}
