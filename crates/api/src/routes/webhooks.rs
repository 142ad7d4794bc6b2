//! Webhooks: endpoints that receive the outbox's events, signed, in order per aggregate,
//! retried, behind a circuit breaker, replayable. They need the `webhooks:admin` scope.

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, NoQuery, QueryMap};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use events::webhook::DeliveryPage;
use events::{Delivery, Webhook, WebhookWithSecret};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/webhooks", post(webhook_create).get(webhook_list))
        .route("/webhooks/{id}", get(webhook_get).delete(webhook_delete))
        .route("/webhooks/{id}/rotate-secret", post(webhook_rotate_secret))
        .route("/webhooks/{id}/replay", post(webhook_replay))
        .route("/webhooks/{id}/deliveries", get(delivery_list))
        .route("/webhooks/{id}/deliveries/{delivery}/retry", post(delivery_retry))
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"url": "https://hooks.example.com/stockroom", "events": ["stock.changed", "order.*"]}))]
pub struct CreateWebhook {
    /// http or https; loopback and private addresses only with `--webhook-allow-private`.
    pub url: String,
    /// Event types (`GET /v1/event-types`), `prefix.*`, or `*`; 1 to 64.
    pub events: Vec<String>,
}

/// Registers an endpoint. It receives every matching event committed from now on; its secret
/// is in this answer only.
#[utoipa::path(post, path = "/v1/webhooks", tag = "webhooks", request_body = CreateWebhook,
    responses((status = 201, body = WebhookWithSecret, description = "The endpoint and its secret (shown once)"),
              (status = 422, body = crate::error::Problem, description = "A bad URL, a private address, an unknown event type or too many filters")),
    security(("bearer" = [])))]
pub async fn webhook_create(
    State(state): State<AppState>,
    _query: NoQuery,
    body: ApiJson<CreateWebhook>,
) -> Result<(StatusCode, Json<WebhookWithSecret>), ApiError> {
    let req = body.value;
    let known = state.event_types.names();
    let created =
        events::webhook::create(&state.db, state.webhooks.settings(), &known, &req.url, req.events, state.clock.now())
            .await?;
    Ok((StatusCode::CREATED, Json(created)))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookList {
    pub items: Vec<Webhook>,
}

/// Every endpoint, without secrets.
#[utoipa::path(get, path = "/v1/webhooks", tag = "webhooks",
    responses((status = 200, body = WebhookList), (status = 422, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn webhook_list(State(state): State<AppState>, _query: NoQuery) -> Result<Json<WebhookList>, ApiError> {
    Ok(Json(WebhookList { items: events::webhook::list(&state.db, state.webhooks.settings()).await? }))
}

/// An endpoint: its breaker `state`, `last_delivered_seq` and how far it has queued.
#[utoipa::path(get, path = "/v1/webhooks/{id}", tag = "webhooks", params(("id" = String, Path)),
    responses((status = 200, body = Webhook), (status = 404, body = crate::error::Problem),
              (status = 422, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn webhook_get(
    State(state): State<AppState>,
    _query: NoQuery,
    Path(id): Path<String>,
) -> Result<Json<Webhook>, ApiError> {
    Ok(Json(events::webhook::get(&state.db, &id, state.webhooks.settings()).await?))
}

/// Removes an endpoint and its delivery records; nothing more is sent to it.
#[utoipa::path(delete, path = "/v1/webhooks/{id}", tag = "webhooks", params(("id" = String, Path)),
    responses((status = 204, description = "Deleted"), (status = 404, body = crate::error::Problem),
              (status = 422, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn webhook_delete(
    State(state): State<AppState>,
    _query: NoQuery,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    events::webhook::delete(&state.db, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A new secret (shown once). The previous one keeps signing beside it for the overlap
/// (24 h), so receivers can switch without losing a delivery.
#[utoipa::path(post, path = "/v1/webhooks/{id}/rotate-secret", tag = "webhooks", params(("id" = String, Path)),
    responses((status = 200, body = WebhookWithSecret), (status = 404, body = crate::error::Problem),
              (status = 422, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn webhook_rotate_secret(
    State(state): State<AppState>,
    _query: NoQuery,
    Path(id): Path<String>,
) -> Result<Json<WebhookWithSecret>, ApiError> {
    Ok(Json(events::webhook::rotate_secret(&state.db, &id, state.webhooks.settings(), state.clock.now()).await?))
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"from_seq": 1}))]
pub struct Replay {
    /// The first event to send again: 1 to the next event's `seq`.
    pub from_seq: i64,
}

/// Queues every matching event from `from_seq` again. Receivers see repeats with the same
/// `webhook-id` (the event's id).
#[utoipa::path(post, path = "/v1/webhooks/{id}/replay", tag = "webhooks", params(("id" = String, Path)),
    request_body = Replay,
    responses((status = 200, body = Webhook), (status = 404, body = crate::error::Problem),
              (status = 422, body = crate::error::Problem, description = "`from_seq` outside 1 to the next event")),
    security(("bearer" = [])))]
pub async fn webhook_replay(
    State(state): State<AppState>,
    _query: NoQuery,
    Path(id): Path<String>,
    body: ApiJson<Replay>,
) -> Result<Json<Webhook>, ApiError> {
    let from = body.value.from_seq;
    Ok(Json(events::webhook::replay(&state.db, &id, from, state.webhooks.settings(), state.clock.now()).await?))
}

/// An endpoint's deliveries, newest event first: every attempt's outcome is kept.
#[utoipa::path(get, path = "/v1/webhooks/{id}/deliveries", tag = "webhooks",
    params(("id" = String, Path),
           ("status" = Option<String>, Query, description = "`pending`, `delivered`, `failed` (to be retried) or `dead` (dead-lettered)"),
           ("limit" = Option<u32>, Query, description = "1 to 1000 (default 100)"), ("next" = Option<String>, Query)),
    responses((status = 200, body = DeliveryPage), (status = 404, body = crate::error::Problem),
              (status = 422, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn delivery_list(
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: QueryMap,
) -> Result<Json<DeliveryPage>, ApiError> {
    let mut query = query.only(&["status", "limit", "next"]);
    let status = query.get("status").map(str::to_owned);
    if let Some(s) = &status
        && !events::webhook::DELIVERY_STATUSES.contains(&s.as_str())
    {
        query.refuse("status", "must be pending, delivered, failed or dead");
    }
    let page = query.page();
    let after = match page.after.as_deref() {
        None => None,
        Some(raw) => match raw.split_once(':').and_then(|(s, id)| Some((s.parse::<i64>().ok()?, id.to_owned()))) {
            Some(after) => Some(after),
            None => {
                query.refuse("next", "is not a cursor of this list");
                None
            }
        },
    };
    query.finish()?;
    Ok(Json(events::webhook::deliveries(&state.db, &id, status.as_deref(), after, page.limit).await?))
}

/// Sends a failed or dead-lettered delivery again now, with a fresh retry window.
#[utoipa::path(post, path = "/v1/webhooks/{id}/deliveries/{delivery}/retry", tag = "webhooks",
    params(("id" = String, Path), ("delivery" = String, Path)),
    responses((status = 200, body = Delivery, description = "The delivery, pending again"),
              (status = 404, body = crate::error::Problem),
              (status = 409, body = crate::error::Problem, description = "Delivered or pending already, or the endpoint is disabled"),
              (status = 422, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn delivery_retry(
    State(state): State<AppState>,
    _query: NoQuery,
    Path((id, delivery)): Path<(String, String)>,
) -> Result<Json<Delivery>, ApiError> {
    Ok(Json(events::webhook::retry(&state.db, &id, &delivery, state.clock.now()).await?))
}
