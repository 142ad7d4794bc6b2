//! The movement ledger, the event feed and reconciliation.

use crate::AppState;
use crate::error::ApiError;
use crate::extract::QueryMap;
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use kernel::limits::PAGE_SIZE_MAX;
use kernel::{SkuCode, WarehouseCode};
use serde::Serialize;
use store::outbox::StoredEvent;
use utoipa::ToSchema;
use warehouse::ledger::{Movement, MovementFilter};
use warehouse::reconcile::Reconciliation;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/movements", get(movements))
        .route("/events", get(events))
        .route("/event-types", get(event_types))
        .route("/reconciliation", get(reconciliation))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MovementPage {
    pub items: Vec<Movement>,
    pub next: Option<String>,
}

/// Movements, oldest first.
#[utoipa::path(get, path = "/v1/movements", tag = "ledger",
    params(("sku" = Option<String>, Query), ("warehouse" = Option<String>, Query), ("limit" = Option<u32>, Query), ("next" = Option<String>, Query)),
    responses((status = 200, body = MovementPage), (status = 422, body = crate::error::Problem)), security(("bearer" = [])))]
pub async fn movements(State(state): State<AppState>, query: QueryMap) -> Result<Json<MovementPage>, ApiError> {
    let filter =
        MovementFilter { sku: query.code::<SkuCode>("sku")?, warehouse: query.code::<WarehouseCode>("warehouse")? };
    let page = query.page()?;
    let after = page.after_seq().map_err(|(f, m)| ApiError::validation(f, m))?;
    let page = warehouse::ledger::movements_list(state.db.reader(), &filter, after, &page).await?;
    Ok(Json(MovementPage { items: page.items, next: page.next }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventPage {
    pub items: Vec<StoredEvent>,
    /// The `seq` to poll `after=` next; `null` when this page reached the end.
    pub next: Option<String>,
}

/// Events with `seq > after`, in `seq` order. Polling `after=` the last `seq` seen never
/// misses an event.
#[utoipa::path(get, path = "/v1/events", tag = "ledger",
    params(("after" = Option<i64>, Query), ("limit" = Option<u32>, Query)),
    responses((status = 200, body = EventPage), (status = 422, body = crate::error::Problem)), security(("bearer" = [])))]
pub async fn events(State(state): State<AppState>, query: QueryMap) -> Result<Json<EventPage>, ApiError> {
    let after = match query.get("after") {
        None => 0,
        Some(raw) => raw
            .parse::<i64>()
            .ok()
            .filter(|a| *a >= 0)
            .ok_or_else(|| ApiError::validation("after", "must be a non-negative integer"))?,
    };
    let limit =
        match query.get("limit") {
            None => kernel::limits::PAGE_SIZE_DEFAULT,
            Some(raw) => raw.parse::<u32>().ok().filter(|l| (1..=PAGE_SIZE_MAX).contains(l)).ok_or_else(|| {
                ApiError::validation("limit", format!("must be an integer from 1 to {PAGE_SIZE_MAX}"))
            })?,
        };
    let items = store::outbox::events_after(state.db.reader(), after, limit).await?;
    let next = if items.len() as u32 >= limit { items.last().map(|e| e.seq.to_string()) } else { None };
    Ok(Json(EventPage { items, next }))
}

/// A registered event type: its name, the version of its payload and the payload's JSON
/// Schema (draft 2020-12).
#[derive(Debug, Serialize, ToSchema)]
pub struct EventTypeView {
    #[serde(rename = "type")]
    #[schema(example = "stock.changed")]
    pub event_type: &'static str,
    #[schema(example = 1)]
    pub version: u32,
    pub description: &'static str,
    #[schema(value_type = Object)]
    pub schema: serde_json::Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventTypePage {
    pub items: Vec<EventTypeView>,
    /// Always `null`: every type fits one page.
    pub next: Option<String>,
}

/// Every event type the feed can carry, with its version and JSON Schema.
#[utoipa::path(get, path = "/v1/event-types", tag = "ledger",
    responses((status = 200, body = EventTypePage), (status = 422, body = crate::error::Problem)), security(("bearer" = [])))]
pub async fn event_types(State(state): State<AppState>, query: QueryMap) -> Result<Json<EventTypePage>, ApiError> {
    if let Some(unknown) = query.0.keys().min() {
        return Err(ApiError::validation(unknown.clone(), "is not a parameter of this route"));
    }
    let items = state
        .event_types
        .types()
        .iter()
        .map(|t| EventTypeView {
            event_type: t.name,
            version: t.version,
            description: t.description,
            schema: t.schema(),
        })
        .collect();
    Ok(Json(EventTypePage { items, next: None }))
}

/// Every stock level against the sum of its movements and reserved against the reservations.
#[utoipa::path(get, path = "/v1/reconciliation", tag = "ledger",
    responses((status = 200, body = Reconciliation)), security(("bearer" = [])))]
pub async fn reconciliation(State(state): State<AppState>) -> Result<Json<Reconciliation>, ApiError> {
    Ok(Json(warehouse::reconcile::reconcile(state.db.reader()).await?))
}
