//! NATS JetStream: every event of the outbox published to `<prefix>.<type>` (`stockroom.<type>`
//! by default) with `Nats-Msg-Id` set to the event's id, sent in `seq` order, each acknowledged by
//! JetStream before the relay's offset moves past it.
//!
//! The offset is `worker_offsets` row `nats-relay`, like every subscriber's, but it is moved
//! in a short transaction of its own after the acknowledgements: holding a write transaction
//! open across network calls would hold SQLite's only writer while NATS is slow. A crash or a
//! failure between an acknowledgement and the offset's move publishes those events again;
//! JetStream drops them as duplicates by `Nats-Msg-Id` (within the stream's duplicate window,
//! two minutes by default). NATS down: the run fails, the offset waits, the `nats-relay`
//! worker shows down in `/ready`, and `stockroom_subscriber_lag{subscriber="nats-relay"}` grows.

use crate::{EventsError, Result};
use async_nats::jetstream;
use kernel::Clock;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use store::Db;

/// The relay's offset in `worker_offsets`.
pub const NATS_RELAY: &str = "nats-relay";

/// Longest wait for one acknowledgement, or for the stream's creation.
const NATS_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct NatsSettings {
    /// `--nats-url`, e.g. `nats://127.0.0.1:4222`.
    pub url: String,
    /// The stream, created at start when missing.
    pub stream: String,
    /// Subjects are `<prefix>.<event type>`; the stream takes `<prefix>.>`.
    pub subject_prefix: String,
    /// Events published per run, pipelined.
    pub batch: u32,
}

impl NatsSettings {
    pub fn new(url: impl Into<String>) -> Self {
        Self { url: url.into(), stream: "STOCKROOM".into(), subject_prefix: "stockroom".into(), batch: 1000 }
    }
}

fn unavailable(what: &str, error: impl std::fmt::Display) -> EventsError {
    EventsError::Unavailable(format!("NATS: {what}: {error}"))
}

/// The NATS relay; cheap to clone.
#[derive(Clone)]
pub struct NatsRelay {
    db: Db,
    clock: Arc<dyn Clock>,
    settings: NatsSettings,
    context: jetstream::Context,
    stream_ready: Arc<AtomicBool>,
}

impl std::fmt::Debug for NatsRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsRelay").field("settings", &self.settings).finish_non_exhaustive()
    }
}

impl NatsRelay {
    /// Connects (retrying in the background if NATS is not up yet) and creates or checks the
    /// stream; a stream that cannot be made now is retried by every run.
    pub async fn connect(db: Db, clock: Arc<dyn Clock>, settings: NatsSettings) -> Result<Self> {
        let client = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(5))
            .connect(settings.url.as_str())
            .await
            .map_err(|e| unavailable("connecting", e))?;
        let mut tx = db.begin().await?;
        sqlx::query(
            "INSERT INTO worker_offsets (worker, last_seq, updated_at_ms) VALUES ($1, 0, $2) \
             ON CONFLICT (worker) DO NOTHING",
        )
        .bind(NATS_RELAY)
        .bind(clock.now().millis())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        let relay = Self {
            db,
            clock,
            settings,
            context: jetstream::new(client),
            stream_ready: Arc::new(AtomicBool::new(false)),
        };
        if let Err(error) = relay.ensure_stream().await {
            tracing::warn!(%error, "the NATS stream could not be checked at start; the relay retries");
        }
        Ok(relay)
    }

    pub fn settings(&self) -> &NatsSettings {
        &self.settings
    }

    fn subjects(&self) -> String {
        format!("{}.>", self.settings.subject_prefix)
    }

    async fn ensure_stream(&self) -> Result<()> {
        if self.stream_ready.load(Ordering::Acquire) {
            return Ok(());
        }
        let config = jetstream::stream::Config {
            name: self.settings.stream.clone(),
            subjects: vec![self.subjects()],
            ..Default::default()
        };
        let mut stream = tokio::time::timeout(NATS_TIMEOUT, self.context.get_or_create_stream(config))
            .await
            .map_err(|_| unavailable("creating the stream", "timed out"))?
            .map_err(|e| unavailable("creating the stream", e))?;
        let info = stream.info().await.map_err(|e| unavailable("reading the stream", e))?;
        if !info.config.subjects.contains(&self.subjects()) {
            return Err(EventsError::Conflict(format!(
                "NATS stream {} exists without the subjects {}",
                self.settings.stream,
                self.subjects()
            )));
        }
        self.stream_ready.store(true, Ordering::Release);
        Ok(())
    }

    /// Publishes the next batch past the offset and moves the offset past what JetStream
    /// acknowledged, in order. Returns how many it published.
    pub async fn run_once(&self) -> Result<usize> {
        self.ensure_stream().await?;
        let offset: i64 = sqlx::query_scalar("SELECT last_seq FROM worker_offsets WHERE worker = $1")
            .bind(NATS_RELAY)
            .fetch_one(self.db.reader())
            .await?;
        let head = store::outbox::committed_head(self.db.reader()).await?;
        if head <= offset {
            store::subscriber::report_lag(NATS_RELAY, 0, Some(0));
            return Ok(0);
        }
        let events = store::outbox::events_after(self.db.reader(), offset, self.settings.batch).await?;
        let events: Vec<_> = events.into_iter().filter(|e| e.seq <= head).collect();
        // Pipelined: every publish goes out, then the acknowledgements are awaited in order.
        let mut pending = Vec::with_capacity(events.len());
        let mut failure = None;
        for event in &events {
            let subject = format!("{}.{}", self.settings.subject_prefix, event.event_type);
            let payload = serde_json::to_vec(event).map_err(|e| unavailable("encoding an event", e))?;
            let message = jetstream::message::PublishMessage::build().payload(payload.into()).message_id(&event.id);
            match self.context.send_publish(subject, message).await {
                Ok(ack) => pending.push((event.seq, ack)),
                Err(e) => {
                    failure = Some(unavailable("publishing", e));
                    break;
                }
            }
        }
        let mut through = offset;
        for (seq, ack) in pending {
            match tokio::time::timeout(NATS_TIMEOUT, ack).await {
                Ok(Ok(_)) => through = seq,
                Ok(Err(e)) => {
                    failure.get_or_insert(unavailable("acknowledging", e));
                    break;
                }
                Err(_) => {
                    failure.get_or_insert(unavailable("acknowledging", "timed out"));
                    break;
                }
            }
        }
        if through > offset {
            let mut tx = self.db.begin().await?;
            sqlx::query(
                "UPDATE worker_offsets SET last_seq = $1, updated_at_ms = $2 WHERE worker = $3 AND last_seq < $1",
            )
            .bind(through)
            .bind(self.clock.now().millis())
            .bind(NATS_RELAY)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        }
        let published = events.iter().filter(|e| e.seq <= through).count();
        metrics::counter!("stockroom_nats_published_total").increment(published as u64);
        let lag = (head - through).max(0);
        let lag_ms = if lag > 0 { store::subscriber::lag_ms(&self.db, through, self.clock.now()).await } else { Ok(0) };
        let lag_ms =
            lag_ms.inspect_err(|error| tracing::warn!(%error, "nats relay: the lag in time could not be read")).ok();
        store::subscriber::report_lag(NATS_RELAY, lag, lag_ms);
        match failure {
            Some(error) => Err(error),
            None => Ok(published),
        }
    }
}
