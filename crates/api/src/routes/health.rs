//! Liveness, readiness and metrics: no key needed.

use crate::AppState;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

pub fn routes() -> Router<AppState> {
    Router::new().route("/health", get(health)).route("/ready", get(ready)).route("/metrics", get(metrics_text))
}

/// 200 while the process runs.
#[utoipa::path(get, path = "/health", tag = "operations", responses((status = 200, description = "The process runs", example = json!({"status": "ok"}))))]
pub async fn health() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// 200 when the database answers and migrations are applied, else 503.
#[utoipa::path(get, path = "/ready", tag = "operations", responses(
    (status = 200, description = "Ready", example = json!({"status": "ready"})),
    (status = 503, description = "Database unreachable or migrations missing", example = json!({"status": "unavailable"}))
))]
pub async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    // A database that does not answer quickly is as good as down for a load balancer.
    let ready = tokio::time::timeout(std::time::Duration::from_secs(2), state.db.is_ready()).await.unwrap_or(false);
    if ready {
        (StatusCode::OK, Json(json!({ "status": "ready" })))
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "unavailable" })))
    }
}

/// Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus metrics", content_type = "text/plain")))]
pub async fn metrics_text(State(state): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render())
}
