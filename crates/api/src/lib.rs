//! Stockroom's HTTP API: the only crate that knows HTTP.
//!
//! Routes per context (`routes/`), request parsing at the edge ([`extract`]), API keys and
//! scopes ([`auth`]), problem documents ([`error`], the one place errors become HTTP),
//! idempotency keys ([`idempotency`]) and the OpenAPI document ([`openapi`]).

pub mod auth;
pub mod error;
pub mod extract;
pub mod idempotency;
pub mod openapi;
pub mod routes;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, Request};
use kernel::Clock;
use kernel::limits::REQUEST_BODY_BYTES_MAX;
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::Arc;
use std::time::Duration;
use store::Db;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

/// Longest a request may take before it is answered with 503; well above any use case's
/// normal time, short enough that a stuck dependency does not pile up requests.
/// It leaves room for a long poll of the event feed (`wait_ms` up to 30 s).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(35);

/// What every handler can reach: one shared allocation, so the clone axum makes for every
/// extractor and middleware of every request is one reference count, not a dozen.
#[derive(Clone)]
pub struct AppState(Arc<Services>);

impl AppState {
    pub fn new(services: Services) -> Self {
        Self(Arc::new(services))
    }
}

impl std::ops::Deref for AppState {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.0
    }
}

/// The services behind [`AppState`].
pub struct Services {
    pub db: Db,
    pub clock: Arc<dyn Clock>,
    /// SHA-256 of the admin key given by flag or environment, if any.
    pub admin_key_hash: Option<String>,
    pub metrics: PrometheusHandle,
    /// The write path of reservations (the batch executor).
    pub reservations: warehouse::reservation::group_commit::GroupCommit,
    /// Which background workers are up, for `/ready`.
    pub workers: store::workers::Workers,
    /// The catalog's availability view and its cache.
    pub availability: catalog::AvailabilityView,
    /// The catalog's search index (in process, following the database's search rows).
    pub search: catalog::search::SearchIndex,
    /// The webhook relay (its settings are the routes' too).
    pub webhooks: events::Relay,
    /// The order context's write path and settings.
    pub orders: OrderSettings,
    /// Every context's event types (`GET /v1/event-types`).
    pub event_types: Arc<kernel::EventRegistry>,
    /// Cancelled when the server stops: long polls answer at once instead of holding up
    /// shutdown.
    pub shutdown: tokio_util::sync::CancellationToken,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").field("db", &self.db).field("clock", &self.clock).finish_non_exhaustive()
    }
}

/// What the order routes need besides the database.
#[derive(Debug, Clone)]
pub struct OrderSettings {
    /// Checkouts through the batch executor.
    pub checkouts: order::Checkouts,
    /// Stock figures of the availability view older than this are not shown in carts
    /// (`--max-stale-seconds`).
    pub max_stale_seconds: i64,
}

/// The whole HTTP application.
pub fn router(state: AppState) -> Router {
    let request_id = HeaderName::from_static("x-request-id");
    let v1 = routes::v1_routes().route_layer(axum::middleware::from_fn_with_state(state.clone(), auth::require_key));
    Router::new()
        .merge(routes::health::routes())
        .merge(openapi::routes())
        .nest("/v1", v1)
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .with_state(state)
        .layer(axum::middleware::from_fn(routes::record_metrics))
        .layer(DefaultBodyLimit::max(REQUEST_BODY_BYTES_MAX))
        .layer(TimeoutLayer::with_status_code(axum::http::StatusCode::SERVICE_UNAVAILABLE, REQUEST_TIMEOUT))
        .layer(CatchPanicLayer::custom(|_panic| {
            tracing::error!("a request handler panicked");
            axum::response::IntoResponse::into_response(error::ApiError::internal())
        }))
        .layer(TraceLayer::new_for_http().make_span_with(|request: &Request<_>| {
            let id = request.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("");
            tracing::info_span!("request", method = %request.method(), path = %request.uri().path(), request_id = %id)
        }))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .layer(SetSensitiveRequestHeadersLayer::new([axum::http::header::AUTHORIZATION]))
}
