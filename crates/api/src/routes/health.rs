//! Liveness, readiness and metrics: no key needed.

use crate::AppState;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use serde_json::json;
use store::workers::{WorkerReport, WorkerState};
use utoipa::ToSchema;

pub fn routes() -> Router<AppState> {
    Router::new().route("/health", get(health)).route("/ready", get(ready)).route("/metrics", get(metrics_text))
}

/// 200 while the process runs.
#[utoipa::path(get, path = "/health", tag = "operations", responses((status = 200, description = "The process runs", example = json!({"status": "ok"}))))]
pub async fn health() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Readiness and the state of every background worker.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// `ready`, or `unavailable` when the database does not answer, a migration is missing
    /// or a worker is down.
    #[schema(example = "ready")]
    pub status: &'static str,
    pub database: bool,
    pub workers: Vec<WorkerReport>,
}

/// 200 when the database answers, migrations are applied and every worker is up, else 503
/// naming what is not.
#[utoipa::path(get, path = "/ready", tag = "operations", responses(
    (status = 200, description = "Ready", body = Readiness),
    (status = 503, description = "Database unreachable, migrations missing or a worker down", body = Readiness,
     example = json!({"status": "unavailable", "database": true,
                      "workers": [{"name": "sweeper", "state": "down", "failures": 3, "last_error": "database error: pool timed out"}]}))
))]
pub async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    // A database that does not answer quickly is as good as down for a load balancer.
    let database = tokio::time::timeout(std::time::Duration::from_secs(2), state.db.is_ready()).await.unwrap_or(false);
    let workers = state.workers.reports();
    let all_up = workers.iter().all(|w| w.state == WorkerState::Up);
    if database && all_up {
        (StatusCode::OK, Json(Readiness { status: "ready", database, workers }))
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(Readiness { status: "unavailable", database, workers }))
    }
}

/// Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus metrics", content_type = "text/plain")))]
pub async fn metrics_text(State(state): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render())
}
