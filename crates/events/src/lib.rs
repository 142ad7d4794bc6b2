//! The events context: the outbox delivered out of the process.
//!
//! Webhooks: each endpoint has its own cursor over the outbox. The relay turns every event
//! past the cursor that the endpoint's filter matches into a delivery row, in the transaction
//! that moves the cursor, so nothing is skipped or queued twice; then it sends due deliveries,
//! at most one at a time per aggregate (so `aggregate_seq` order holds per aggregate while
//! other aggregates go on), signed the Standard Webhooks way, retried with backoff and jitter
//! until the retry window (24 h by default) is over, behind a circuit breaker per endpoint.
//! Every outcome is recorded on the delivery row. Endpoints progress independently: a slow
//! one never holds up another.

pub mod nats;
pub mod relay;
pub mod signature;
pub mod webhook;

pub use relay::Relay;
pub use webhook::{Delivery, Webhook, WebhookWithSecret};

use std::time::Duration;
use store::StoreError;

/// Installs the TLS crypto provider (ring, the one sqlx links) for every HTTP client of the
/// process. Webhooks need TLS, and reqwest's rustls then wants a provider before any client
/// is built, the tests' and the bench's included. A second call changes nothing.
pub fn install_tls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The relay's settings.
#[derive(Debug, Clone)]
pub struct EventsSettings {
    /// Webhook URLs on loopback and private addresses are refused unless this is set
    /// (`--webhook-allow-private`).
    pub allow_private: bool,
    /// A delivery that still fails this long after its first try is dead-lettered.
    pub retry_window: Duration,
    /// The first retry comes after this, doubling per attempt up to `backoff_max`, with
    /// ±20% jitter.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// One attempt's whole time (connect, send, answer).
    pub request_timeout: Duration,
    /// Deliveries in flight per endpoint (of different aggregates).
    pub per_endpoint_concurrency: usize,
    /// Deliveries in flight over all endpoints.
    pub overall_concurrency: usize,
    /// Consecutive failures that open an endpoint's breaker.
    pub breaker_failures: i64,
    /// How long an open breaker waits before one probe.
    pub breaker_cooldown: Duration,
    /// How long the secret before a rotation still signs deliveries.
    pub secret_overlap: Duration,
    /// How often the relay looks for work.
    pub interval: Duration,
    /// NATS JetStream (`--nats-url`); `None`: no NATS.
    pub nats: Option<nats::NatsSettings>,
}

impl Default for EventsSettings {
    fn default() -> Self {
        Self {
            allow_private: false,
            retry_window: Duration::from_secs(24 * 3600),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(3600),
            request_timeout: Duration::from_secs(10),
            per_endpoint_concurrency: 16,
            overall_concurrency: 256,
            breaker_failures: 5,
            breaker_cooldown: Duration::from_secs(30),
            secret_overlap: Duration::from_secs(24 * 3600),
            interval: Duration::from_millis(50),
            nats: None,
        }
    }
}

/// One bad field of a request and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldProblem {
    pub field: String,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    #[error("{what} {key} not found")]
    NotFound { what: &'static str, key: String },
    #[error("invalid request: {0:?}")]
    Invalid(Vec<FieldProblem>),
    #[error("{0}")]
    Conflict(String),
    /// A destination (NATS) did not answer; nothing moved past it.
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for EventsError {
    fn from(error: sqlx::Error) -> Self {
        EventsError::Store(StoreError::Database(error))
    }
}

pub type Result<T, E = EventsError> = std::result::Result<T, E>;
