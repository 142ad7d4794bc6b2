//! Routes, one module per area of the API.

pub mod alerts;
pub mod catalog;
pub mod counts;
pub mod fulfillment;
pub mod health;
pub mod inventory;
pub mod ledger;
pub mod locations;
pub mod orders;
pub mod reservations;
pub mod reviews;
pub mod webhooks;

use crate::AppState;
use crate::error::ApiError;
use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use std::time::Instant;

pub fn v1_routes() -> Router<AppState> {
    Router::new()
        .merge(inventory::routes())
        .merge(locations::routes())
        .merge(reservations::routes())
        .merge(ledger::routes())
        .merge(alerts::routes())
        .merge(counts::routes())
        .merge(catalog::routes())
        .merge(orders::routes())
        .merge(fulfillment::routes())
        .merge(reviews::routes())
        .merge(webhooks::routes())
}

pub async fn not_found() -> ApiError {
    ApiError::not_found("no such path")
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::method_not_allowed()
}

/// Counts requests and their latency per route and status.
pub async fn record_metrics(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = request.method().clone();
    let started = Instant::now();
    let response = next.run(request).await;
    // Static labels where they can be: every request passes here.
    let method: metrics::SharedString = match method.as_str() {
        "GET" => "GET".into(),
        "POST" => "POST".into(),
        "PUT" => "PUT".into(),
        "PATCH" => "PATCH".into(),
        "DELETE" => "DELETE".into(),
        other => other.to_owned().into(),
    };
    let status: metrics::SharedString = match response.status().as_u16() {
        200 => "200".into(),
        201 => "201".into(),
        202 => "202".into(),
        204 => "204".into(),
        304 => "304".into(),
        404 => "404".into(),
        409 => "409".into(),
        422 => "422".into(),
        other => other.to_string().into(),
    };
    let labels = [("method", method), ("route", route.into()), ("status", status)];
    metrics::counter!("stockroom_http_requests_total", &labels).increment(1);
    metrics::histogram!("stockroom_http_request_seconds", &labels).record(started.elapsed().as_secs_f64());
    response
}
