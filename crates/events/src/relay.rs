//! The webhook relay: per endpoint, queue what the cursor passed, then send what is due.
//!
//! Each active endpoint gets its own task while it has work, so a slow receiver holds up only
//! itself. A task queues (delivery rows and the cursor in one transaction), picks due
//! deliveries (at most one per aggregate: the oldest owed), sends them concurrently, records
//! every outcome, and goes on until nothing is left or the breaker opens.

use crate::webhook::{WEBHOOK_COLUMNS, WebhookRow, event_filter, is_private, row_in};
use crate::{EventsSettings, Result};
use kernel::Clock;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use store::Db;
use store::outbox::StoredEvent;
use tokio::sync::Semaphore;

/// Events queued per transaction.
const QUEUE_BATCH: u32 = 1000;
/// A task hands its endpoint back after this long, so the next tick re-reads its settings.
const TASK_TURN: Duration = Duration::from_secs(5);

/// The relay; cheap to clone.
#[derive(Clone)]
pub struct Relay {
    db: Db,
    clock: Arc<dyn Clock>,
    settings: EventsSettings,
    client: reqwest::Client,
    in_flight: Arc<Mutex<HashSet<String>>>,
    overall: Arc<Semaphore>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay").field("settings", &self.settings).finish_non_exhaustive()
    }
}

/// Resolves a receiver's host and refuses private addresses, at every connection: a name that
/// resolved to a public address when the endpoint was created cannot be pointed inside later.
struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = addrs.into_iter().filter(|a| !is_private(a.ip())).collect();
            if public.is_empty() {
                return Err(format!("{host} has no public address").into());
            }
            Ok(Box::new(public.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The HTTP client of deliveries: no redirects followed, a timeout per attempt, TLS with the
/// ring provider (the one sqlx links), and the public-only resolver unless private addresses
/// are allowed.
fn client(settings: &EventsSettings) -> Result<reqwest::Client> {
    crate::install_tls();
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        // A proxy would resolve the receiver itself, past the address check.
        .no_proxy()
        .timeout(settings.request_timeout)
        .connect_timeout(settings.request_timeout)
        .pool_max_idle_per_host(settings.per_endpoint_concurrency)
        .user_agent(concat!("Stockroom-Webhooks/", env!("CARGO_PKG_VERSION")));
    if !settings.allow_private {
        builder = builder.dns_resolver(Arc::new(PublicOnly));
    }
    builder.build().map_err(|e| crate::EventsError::Conflict(format!("building the webhook client: {e}")))
}

/// How one attempt ended.
#[derive(Debug)]
enum Attempt {
    Delivered(u16),
    /// 410 Gone: the receiver wants no more.
    Gone,
    Failed {
        status: Option<u16>,
        error: String,
    },
}

#[derive(sqlx::FromRow)]
struct Due {
    id: String,
    event_seq: i64,
    attempts: i64,
    /// `None` before the first try of the window.
    window_started_ms: Option<i64>,
}

/// Takes an endpoint out of the in-flight set when its task ends, panics included.
struct InFlight {
    set: Arc<Mutex<HashSet<String>>>,
    id: String,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.set.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.id);
    }
}

impl Relay {
    pub fn new(db: Db, clock: Arc<dyn Clock>, settings: EventsSettings) -> Result<Self> {
        Ok(Self {
            client: client(&settings)?,
            overall: Arc::new(Semaphore::new(settings.overall_concurrency.max(1))),
            db,
            clock,
            settings,
            in_flight: Arc::new(Mutex::new(HashSet::new())),
        })
    }

    pub fn settings(&self) -> &EventsSettings {
        &self.settings
    }

    /// Starts a task for every active endpoint that has none; returns how many it started.
    pub async fn tick(&self) -> Result<usize> {
        let ids: Vec<String> = sqlx::query_scalar("SELECT id FROM webhooks WHERE active = 1 ORDER BY id")
            .fetch_all(self.db.reader())
            .await?;
        let head = store::outbox::committed_head(self.db.reader()).await?;
        let mut started = 0;
        for id in ids {
            let fresh = self.in_flight.lock().unwrap_or_else(|p| p.into_inner()).insert(id.clone());
            if !fresh {
                continue;
            }
            started += 1;
            let relay = self.clone();
            let guard = InFlight { set: self.in_flight.clone(), id: id.clone() };
            tokio::spawn(async move {
                let _guard = guard;
                let outcome = relay.serve(&id, head).await;
                if let Err(error) = outcome {
                    tracing::warn!(webhook = %id, %error, "webhook relay turn failed; retried next tick");
                }
            });
        }
        Ok(started)
    }

    /// One turn for one endpoint.
    async fn serve(&self, id: &str, head: i64) -> Result<()> {
        let turn_ends = Instant::now() + TASK_TURN;
        while Instant::now() < turn_ends {
            let queued = self.queue(id).await?;
            let sent = self.send_due(id).await?;
            if queued == 0 && sent == 0 {
                break;
            }
        }
        if let Ok(row) = self.row(id).await {
            metrics::gauge!("stockroom_webhook_lag_events", "webhook" => id.to_owned())
                .set((head - row.cursor_seq).max(0) as f64);
            let open = row.consecutive_failures >= self.settings.breaker_failures;
            metrics::gauge!("stockroom_webhook_breaker_open", "webhook" => id.to_owned())
                .set(f64::from(u8::from(open)));
        }
        Ok(())
    }

    async fn row(&self, id: &str) -> Result<WebhookRow> {
        let mut tx = self.db.reader().begin().await?;
        let row = row_in(&mut tx, id).await;
        tx.rollback().await?;
        row
    }

    /// Turns the events past the cursor into delivery rows and moves the cursor, in one
    /// transaction. Returns how many events it passed.
    async fn queue(&self, id: &str) -> Result<usize> {
        // Checked on a reader first: the write transaction (SQLite's write lock) only when
        // there are events to queue, not on every turn of an idle endpoint.
        let cursor: Option<i64> = sqlx::query_scalar("SELECT cursor_seq FROM webhooks WHERE id = $1 AND active = 1")
            .bind(id.to_owned())
            .fetch_optional(self.db.reader())
            .await?;
        let head = store::outbox::committed_head(self.db.reader()).await?;
        if cursor.is_none_or(|c| c >= head) {
            return Ok(0);
        }
        let now = self.clock.now();
        let mut tx = self.db.begin().await?;
        // Locked, so two relays (replicas) never queue the same events twice.
        let locked = store::sql::Lock::ForUpdate
            .select(&tx, &format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE id = $1"))
            .bind(id.to_owned())
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| crate::EventsError::NotFound { what: "webhook", key: id.to_owned() })?;
        let row = <WebhookRow as sqlx::FromRow<_>>::from_row(&locked)?;
        let head = store::outbox::committed_head_in(&mut tx).await?;
        let upto = head.min(row.cursor_seq + i64::from(QUEUE_BATCH));
        if upto <= row.cursor_seq || row.active == 0 {
            tx.rollback().await?;
            return Ok(0);
        }
        let filter = event_filter(&row.filters());
        let events =
            store::outbox::events_matching(self.db.reader(), row.cursor_seq, upto, &filter, QUEUE_BATCH).await?;
        let through = if events.len() == QUEUE_BATCH as usize { events.last().map_or(upto, |e| e.seq) } else { upto };
        for chunk in events.chunks(kernel::limits::INSERT_ROWS_MAX / 2) {
            let mut values = store::sql::Values::new(&tx, 11);
            for e in chunk {
                values
                    .row()
                    .text(uuid::Uuid::now_v7().to_string())
                    .text(id)
                    .int(e.seq)
                    .text(e.id.clone())
                    .text(e.event_type.clone())
                    .text(e.aggregate.clone())
                    .int(e.aggregate_seq)
                    .text("pending")
                    .int(0)
                    .int(now.millis())
                    .int(now.millis());
            }
            values
                .query(
                    "INSERT INTO webhook_deliveries (id, webhook, event_seq, event_id, event_type, aggregate, \
                     aggregate_seq, status, attempts, next_attempt_at_ms, created_at_ms) VALUES {values}",
                )
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("UPDATE webhooks SET cursor_seq = $1, updated_at_ms = $2 WHERE id = $3")
            .bind(through)
            .bind(now.millis())
            .bind(id.to_owned())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok((through - row.cursor_seq) as usize)
    }

    /// Sends what is due (unless the breaker is open), records the outcomes; returns how many
    /// it sent.
    async fn send_due(&self, id: &str) -> Result<usize> {
        let now = self.clock.now();
        let row = self.row(id).await?;
        if row.active == 0 {
            return Ok(0);
        }
        let open = row.consecutive_failures >= self.settings.breaker_failures;
        if open && row.breaker_open_until_ms.is_some_and(|until| now.millis() < until) {
            return Ok(0);
        }
        // Half open: one probe.
        let limit = if open { 1 } else { self.settings.per_endpoint_concurrency.max(1) };
        let due: Vec<Due> = sqlx::query_as(
            "SELECT d.id, d.event_seq, d.attempts, d.window_started_ms FROM webhook_deliveries d \
             WHERE d.webhook = $1 AND d.status IN ('pending', 'failed') AND d.next_attempt_at_ms <= $2 \
             AND NOT EXISTS (SELECT 1 FROM webhook_deliveries e WHERE e.webhook = d.webhook \
               AND e.aggregate = d.aggregate AND e.status IN ('pending', 'failed') \
               AND (e.event_seq < d.event_seq OR (e.event_seq = d.event_seq AND e.id < d.id))) \
             ORDER BY d.event_seq LIMIT $3",
        )
        .bind(id.to_owned())
        .bind(now.millis())
        .bind(limit as i64)
        .fetch_all(self.db.reader())
        .await?;
        if due.is_empty() {
            return Ok(0);
        }
        let events = self.events(&due).await?;
        let secrets: Vec<String> = std::iter::once(row.secret.clone())
            .chain(
                row.previous_secret.clone().filter(|_| row.previous_secret_until_ms.is_some_and(|u| now.millis() < u)),
            )
            .collect();
        let attempts = due.iter().map(|d| {
            let event = events.iter().find(|e| e.seq == d.event_seq).cloned();
            let (url, secrets, client, overall, clock) =
                (row.url.clone(), secrets.clone(), self.client.clone(), self.overall.clone(), self.clock.clone());
            async move {
                let Some(event) = event else {
                    return Attempt::Failed { status: None, error: "the event is no longer in the outbox".into() };
                };
                let Ok(_permit) = overall.acquire_owned().await else {
                    return Attempt::Failed { status: None, error: "the relay is stopping".into() };
                };
                // Signed after the wait for a permit, so the timestamp is the sending time.
                attempt(&client, &url, &secrets, &event, clock.now().millis() / 1000).await
            }
        });
        let outcomes = futures::future::join_all(attempts).await;
        self.record(id, &due, outcomes).await?;
        Ok(due.len())
    }

    async fn events(&self, due: &[Due]) -> Result<Vec<StoredEvent>> {
        let seqs: Vec<i64> = due.iter().map(|d| d.event_seq).collect();
        let sql = format!(
            "SELECT seq, id, event_type, aggregate, aggregate_seq, at, version, data FROM events WHERE seq IN ({})",
            store::sql::list_placeholders(seqs.len(), 1)
        );
        let mut query = store::sql::dynamic(sql);
        for seq in &seqs {
            query = query.bind(*seq);
        }
        let rows = query.fetch_all(self.db.reader()).await?;
        Ok(rows.iter().map(store::outbox::decode_row).collect::<Result<Vec<_>, _>>()?)
    }

    /// Records the outcomes and the endpoint's breaker in one transaction.
    async fn record(&self, id: &str, due: &[Due], outcomes: Vec<Attempt>) -> Result<()> {
        let now = self.clock.now();
        let s = &self.settings;
        let mut tx = self.db.begin().await?;
        let row = row_in(&mut tx, id).await?;
        let (mut failures, mut delivered_seq, mut gone) = (row.consecutive_failures, row.last_delivered_seq, false);
        let mut open_until = row.breaker_open_until_ms;
        for (d, outcome) in due.iter().zip(outcomes) {
            let attempts = d.attempts + 1;
            let (status, code, error, next) = match &outcome {
                Attempt::Delivered(code) => {
                    failures = 0;
                    open_until = None;
                    delivered_seq = delivered_seq.max(d.event_seq);
                    ("delivered", Some(*code), None, now.millis())
                }
                Attempt::Gone => {
                    gone = true;
                    ("failed", Some(410), Some("410 Gone: the endpoint is disabled".to_owned()), now.millis())
                }
                Attempt::Failed { status, error } => {
                    failures += 1;
                    if failures >= s.breaker_failures {
                        open_until = Some(now.millis() + s.breaker_cooldown.as_millis() as i64);
                    }
                    let started = d.window_started_ms.unwrap_or(now.millis());
                    let over = now.millis() - started >= s.retry_window.as_millis() as i64;
                    let status_now = if over { "dead" } else { "failed" };
                    (status_now, *status, Some(error.clone()), now.millis() + backoff(s, attempts))
                }
            };
            let outcome_label = if gone && status == "failed" { "gone" } else { status };
            metrics::counter!("stockroom_webhook_deliveries_total", "outcome" => outcome_label).increment(1);
            sqlx::query(
                "UPDATE webhook_deliveries SET status = $1, attempts = $2, last_attempt_at_ms = $3, last_status = $4, \
                 last_error = $5, next_attempt_at_ms = $6, delivered_at_ms = $7, \
                 window_started_ms = COALESCE(window_started_ms, $3) WHERE id = $8",
            )
            .bind(status)
            .bind(attempts)
            .bind(now.millis())
            .bind(code.map(i64::from))
            .bind(error)
            .bind(next)
            .bind((status == "delivered").then_some(now.millis()))
            .bind(d.id.clone())
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "UPDATE webhooks SET consecutive_failures = $1, breaker_open_until_ms = $2, last_delivered_seq = $3, \
             active = $4, disabled_reason = $5, updated_at_ms = $6 WHERE id = $7",
        )
        .bind(failures)
        .bind(open_until)
        .bind(delivered_seq)
        .bind(i64::from(row.active != 0 && !gone))
        .bind(if gone { Some("the receiver answered 410 Gone".to_owned()) } else { row.disabled_reason })
        .bind(now.millis())
        .bind(id.to_owned())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

/// The wait before attempt `attempts + 1`: `base × 2^(attempts-1)`, at most `max`, ±20%.
fn backoff(settings: &EventsSettings, attempts: i64) -> i64 {
    let base = settings.backoff_base.as_millis() as f64;
    let exp = 2f64.powi((attempts - 1).clamp(0, 30) as i32);
    let wait = (base * exp).min(settings.backoff_max.as_millis() as f64);
    // Jitter from the UUID generator's randomness: spreads retries of many deliveries.
    let unit = f64::from(uuid::Uuid::new_v4().as_bytes()[0]) / 255.0;
    (wait * (0.8 + 0.4 * unit)) as i64
}

/// One POST of `event` to `url`, signed with every secret in `secrets`.
async fn attempt(
    client: &reqwest::Client,
    url: &str,
    secrets: &[String],
    event: &StoredEvent,
    timestamp: i64,
) -> Attempt {
    let body = match serde_json::to_vec(event) {
        Ok(b) => b,
        Err(e) => return Attempt::Failed { status: None, error: format!("encoding the event: {e}") },
    };
    let signature = secrets
        .iter()
        .filter_map(|s| crate::signature::sign(s, &event.id, timestamp, &body))
        .collect::<Vec<_>>()
        .join(" ");
    let sent = client
        .post(url)
        .header("content-type", "application/json")
        .header("webhook-id", &event.id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body)
        .send()
        .await;
    match sent {
        Ok(response) => {
            let status = response.status().as_u16();
            // The answer's body is not read: a receiver could send an endless one.
            drop(response);
            match status {
                200..=299 => Attempt::Delivered(status),
                410 => Attempt::Gone,
                300..=399 => Attempt::Failed { status: Some(status), error: "redirects are not followed".into() },
                _ => Attempt::Failed { status: Some(status), error: format!("the receiver answered {status}") },
            }
        }
        Err(e) if e.is_timeout() => Attempt::Failed { status: None, error: "timed out".into() },
        Err(e) => Attempt::Failed { status: None, error: format!("{e}") },
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn backoff_doubles_up_to_its_bound_with_jitter() {
        let s = crate::EventsSettings::default();
        for attempts in 1..40 {
            let wait = super::backoff(&s, attempts) as f64;
            let nominal = (1000.0 * 2f64.powi((attempts - 1).min(30) as i32)).min(3_600_000.0);
            assert!(wait >= nominal * 0.8 - 1.0 && wait <= nominal * 1.2 + 1.0, "{attempts}: {wait}");
        }
    }
}
