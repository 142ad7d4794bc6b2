//! Fulfilments: listed, read, shipped and delivered.

use crate::AppState;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::extract::{ApiJson, NoQuery, QueryMap, check_text, finish, problem};
use crate::idempotency::{Answer, run_write};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use fulfillment::record::{Fulfillment, FulfillmentFilter, FulfillmentStatus};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/fulfillments", get(fulfillment_list))
        .route("/fulfillments/{id}", get(fulfillment_get))
        .route("/fulfillments/{id}/ship", post(fulfillment_ship))
        .route("/fulfillments/{id}/deliver", post(fulfillment_deliver))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FulfillmentPage {
    pub items: Vec<Fulfillment>,
    pub next: Option<String>,
}

/// Lists fulfilments, oldest first.
#[utoipa::path(get, path = "/v1/fulfillments", tag = "fulfillment",
    params(("order" = Option<String>, Query), ("warehouse" = Option<String>, Query),
           ("status" = Option<FulfillmentStatus>, Query),
           ("limit" = Option<u32>, Query, description = "1 to 1000 (default 100)"), ("next" = Option<String>, Query)),
    responses((status = 200, body = FulfillmentPage), (status = 422, body = crate::error::Problem)), security(("bearer" = [])))]
pub async fn fulfillment_list(
    State(state): State<AppState>,
    query: QueryMap,
) -> Result<Json<FulfillmentPage>, ApiError> {
    query.only(&["order", "warehouse", "status", "limit", "next"]).finish()?;
    let page = query.page()?;
    let mut errors = Vec::new();
    let status = query.get("status").and_then(|s| {
        FulfillmentStatus::parse(s).or_else(|| {
            problem(
                &mut errors,
                "status",
                "must be pending, picking, picked, packed, shipped, delivered, on_hold or cancelled",
            );
            None
        })
    });
    finish(errors)?;
    let filter = FulfillmentFilter {
        order: query.get("order").map(str::to_owned),
        warehouse: query.get("warehouse").map(str::to_owned),
        status,
    };
    let rows =
        fulfillment::record::fulfillments_list(state.db.reader(), &filter, page.after.as_deref(), page.limit).await?;
    let page = kernel::Page::from_rows(rows, page.limit, |f| f.id.clone());
    Ok(Json(FulfillmentPage { items: page.items, next: page.next }))
}

/// Reads a fulfilment.
#[utoipa::path(get, path = "/v1/fulfillments/{id}", tag = "fulfillment", params(("id" = String, Path)),
    responses((status = 200, body = Fulfillment), (status = 404, body = crate::error::Problem)), security(("bearer" = [])))]
pub async fn fulfillment_get(
    State(state): State<AppState>,
    _query: NoQuery,
    Path(id): Path<String>,
) -> Result<Json<Fulfillment>, ApiError> {
    Ok(Json(fulfillment::record::fulfillment_get(state.db.reader(), &id).await?))
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"carrier": "dhl", "tracking": "JJD000390007"}))]
pub struct ShipRequest {
    /// 1 to 200 characters.
    pub carrier: String,
    /// 1 to 200 characters.
    pub tracking: String,
}

/// Ships a pending or packed fulfilment of a paid order: its stock is consumed (the order's
/// holds in that warehouse give up exactly its lines) in the transaction that marks it
/// `shipped`.
#[utoipa::path(post, path = "/v1/fulfillments/{id}/ship", tag = "fulfillment", params(("id" = String, Path)),
    request_body = ShipRequest,
    responses((status = 200, body = Fulfillment, description = "The shipped fulfilment"),
              (status = 404, body = crate::error::Problem, description = "No such fulfilment"),
              (status = 409, body = crate::error::Problem, description = "Shipped, delivered or cancelled already, or the order is no longer paid (`invalid_state`)"),
              (status = 422, body = crate::error::Problem, description = "Bad fields")),
    security(("bearer" = [])))]
pub async fn fulfillment_ship(
    State(state): State<AppState>,
    _query: NoQuery,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: ApiJson<ShipRequest>,
) -> Result<Response, ApiError> {
    let req = body.value;
    let mut errors = Vec::new();
    check_text("carrier", &req.carrier, true, &mut errors);
    check_text("tracking", &req.tracking, true, &mut errors);
    finish(errors)?;
    fulfillment::record::fulfillment_get(state.db.reader(), &id).await?;
    let key = [id.as_bytes(), b"\0", &body.raw].concat();
    run_write(&state, &principal, "POST /v1/fulfillments/{id}/ship", &headers, &key, move |tx, now| {
        let (id, req) = (id.clone(), req.clone());
        Box::pin(async move {
            let shipped = fulfillment::shipping::ship(tx, &id, &req.carrier, &req.tracking, now).await?;
            Ok(Answer::json(StatusCode::OK, &shipped))
        })
    })
    .await
}

/// Marks a shipped fulfilment delivered.
#[utoipa::path(post, path = "/v1/fulfillments/{id}/deliver", tag = "fulfillment", params(("id" = String, Path)),
    responses((status = 200, body = Fulfillment, description = "The delivered fulfilment"),
              (status = 404, body = crate::error::Problem, description = "No such fulfilment"),
              (status = 409, body = crate::error::Problem, description = "Not shipped (`invalid_state`)")),
    security(("bearer" = [])))]
pub async fn fulfillment_deliver(
    State(state): State<AppState>,
    _query: NoQuery,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let key = id.clone().into_bytes();
    run_write(&state, &principal, "POST /v1/fulfillments/{id}/deliver", &headers, &key, move |tx, now| {
        let id = id.clone();
        Box::pin(async move {
            let delivered = fulfillment::shipping::deliver(tx, &id, now).await?;
            Ok(Answer::json(StatusCode::OK, &delivered))
        })
    })
    .await
}
