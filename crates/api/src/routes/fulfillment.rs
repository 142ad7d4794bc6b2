//! Fulfilments: listed, read, picked in batches on pick lists, packed and weighed, shipped and
//! delivered; returns; and each warehouse's picking and packing settings.

use crate::AppState;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::extract::{ApiJson, NoQuery, QueryMap, check_text, finish, problem};
use crate::idempotency::{Answer, run_write};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post, put};
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
        .route("/fulfillments/{id}/pack", post(fulfillment_pack))
        .route("/fulfillments/{id}/qc", post(fulfillment_qc))
        .route("/picklists", post(picklist_create))
        .route("/picklists/{id}", get(picklist_get))
        .route("/picklists/{id}/complete", post(picklist_complete))
        .route("/returns", post(return_create))
        .route("/returns/{id}", get(return_get))
        .route("/returns/{id}/receive", post(return_receive))
        .route("/warehouses/{code}/fulfillment-settings", put(settings_put).get(settings_get))
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

/// Ships a packed fulfilment of a paid order: its stock is consumed (the order's holds in that
/// warehouse give up exactly its lines) in the transaction that marks it `shipped`.
#[utoipa::path(post, path = "/v1/fulfillments/{id}/ship", tag = "fulfillment", params(("id" = String, Path)),
    request_body = ShipRequest,
    responses((status = 200, body = Fulfillment, description = "The shipped fulfilment"),
              (status = 404, body = crate::error::Problem, description = "No such fulfilment"),
              (status = 409, body = crate::error::Problem, description = "Not packed (or shipped already), or the order is no longer paid (`invalid_state`)"),
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

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"packages": [{"weight_grams": 1210, "lines": [{"sku": "TSHIRT-RED-M", "quantity": 2}]}]}))]
pub struct PackRequest {
    pub packages: Vec<fulfillment::packing::PackageIn>,
}

/// Packs a picked fulfilment into weighed packages: `packed`, or `on_hold` with
/// `hold_reason: "weight_mismatch"` when a package weighs outside the tolerance of its items plus
/// packaging. Packing again is allowed while it is held for a weight mismatch. Shipping is
/// recomputed from the weighed packages.
#[utoipa::path(post, path = "/v1/fulfillments/{id}/pack", tag = "fulfillment", params(("id" = String, Path)),
    request_body = PackRequest,
    responses((status = 200, body = Fulfillment, description = "Packed, or on hold for a weight mismatch"),
              (status = 404, body = crate::error::Problem, description = "No such fulfilment"),
              (status = 409, body = crate::error::Problem, description = "Not picked, nor held for a weight mismatch (`invalid_state`)"),
              (status = 422, body = crate::error::Problem, description = "Bad packages, or packed lines that differ from the fulfilment's")),
    security(("bearer" = [])))]
pub async fn fulfillment_pack(
    State(state): State<AppState>,
    _query: NoQuery,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: ApiJson<PackRequest>,
) -> Result<Response, ApiError> {
    let req = body.value;
    fulfillment::record::fulfillment_get(state.db.reader(), &id).await?;
    let key = [id.as_bytes(), b"\0", &body.raw].concat();
    run_write(&state, &principal, "POST /v1/fulfillments/{id}/pack", &headers, &key, move |tx, now| {
        let (id, req) = (id.clone(), req.clone());
        Box::pin(async move {
            let packed = fulfillment::packing::pack(tx, &id, &req.packages, now).await?;
            Ok(Answer::json(StatusCode::OK, &packed))
        })
    })
    .await
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"warehouse": "BER-1", "max_fulfillments": 20}))]
pub struct CreatePickList {
    pub warehouse: String,
    /// 1 to 50 (default 20).
    #[serde(default = "default_batch")]
    pub max_fulfillments: i64,
}

fn default_batch() -> i64 {
    20
}

/// Batches a warehouse's pending fulfilments (oldest first, up to `max_fulfillments` and 2,000
/// units) into one walk over the bins that hold their units, from the warehouse's dock and
/// back; they become `picking`.
#[utoipa::path(post, path = "/v1/picklists", tag = "fulfillment", request_body = CreatePickList,
    responses((status = 201, body = fulfillment::picking::PickList, description = "The pick list, stops in walk order"),
              (status = 404, body = crate::error::Problem, description = "No such warehouse"),
              (status = 409, body = crate::error::Problem, description = "No fulfilment of the warehouse is pending (`conflict`)"),
              (status = 422, body = crate::error::Problem, description = "Bad fields")),
    security(("bearer" = [])))]
pub async fn picklist_create(
    State(state): State<AppState>,
    _query: NoQuery,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    body: ApiJson<CreatePickList>,
) -> Result<Response, ApiError> {
    let req = body.value;
    let mut errors = Vec::new();
    let warehouse = kernel::WarehouseCode::parse(req.warehouse.clone()).ok();
    if warehouse.is_none() {
        problem(&mut errors, "warehouse", "must be a warehouse code");
    }
    if !(1..=fulfillment::picking::FULFILLMENTS_MAX).contains(&req.max_fulfillments) {
        problem(
            &mut errors,
            "max_fulfillments",
            format!("must be from 1 to {}", fulfillment::picking::FULFILLMENTS_MAX),
        );
    }
    finish(errors)?;
    let (warehouse, batch) = (warehouse.expect("checked above"), req.max_fulfillments);
    run_write(&state, &principal, "POST /v1/picklists", &headers, &body.raw, move |tx, now| {
        let warehouse = warehouse.clone();
        Box::pin(async move {
            let list = fulfillment::picking::picklist_create(tx, &warehouse, batch, now).await?;
            Ok(Answer::json(StatusCode::CREATED, &list))
        })
    })
    .await
}

/// Reads a pick list.
#[utoipa::path(get, path = "/v1/picklists/{id}", tag = "fulfillment", params(("id" = String, Path)),
    responses((status = 200, body = fulfillment::picking::PickList), (status = 404, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn picklist_get(
    State(state): State<AppState>,
    _query: NoQuery,
    Path(id): Path<String>,
) -> Result<Json<fulfillment::picking::PickList>, ApiError> {
    let mut conn = state.db.reader().acquire().await.map_err(store::StoreError::from)?;
    Ok(Json(fulfillment::picking::picklist_get(&mut conn, &id, false).await?))
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"picked": [{"bin": "A-01-1", "sku": "TSHIRT-RED-M", "quantity": 2, "lot": null}]}))]
pub struct CompletePickList {
    pub picked: Vec<fulfillment::picking::Picked>,
}

/// Completes an open pick list with what was picked per bin, SKU and lot. Units not found are
/// reported in `short`, adjusted out of their bin (an `adjust` movement naming the list) and
/// re-sourced: the order waits for them as a backorder, held again from any warehouse of its
/// channel as stock allows. Its fulfilments become `picked` (or `cancelled` when nothing of one
/// was found).
#[utoipa::path(post, path = "/v1/picklists/{id}/complete", tag = "fulfillment", params(("id" = String, Path)),
    request_body = CompletePickList,
    responses((status = 200, body = fulfillment::picking::PickList, description = "The completed list with its short picks"),
              (status = 404, body = crate::error::Problem, description = "No such pick list"),
              (status = 409, body = crate::error::Problem, description = "Completed already (`invalid_state`)"),
              (status = 422, body = crate::error::Problem, description = "Picks that match no stop, or more than its stops hold")),
    security(("bearer" = [])))]
pub async fn picklist_complete(
    State(state): State<AppState>,
    _query: NoQuery,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: ApiJson<CompletePickList>,
) -> Result<Response, ApiError> {
    let req = body.value;
    {
        let mut conn = state.db.reader().acquire().await.map_err(store::StoreError::from)?;
        fulfillment::picking::picklist_get(&mut conn, &id, false).await?;
    }
    let key = [id.as_bytes(), b"\0", &body.raw].concat();
    run_write(&state, &principal, "POST /v1/picklists/{id}/complete", &headers, &key, move |tx, now| {
        let (id, req) = (id.clone(), req.clone());
        Box::pin(async move {
            let list = fulfillment::picking::picklist_complete(tx, &id, &req.picked, now).await?;
            Ok(Answer::json(StatusCode::OK, &list))
        })
    })
    .await
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"order": "ord_0190b7a0c1d27f3e8a4b5c6d7e8f9a0b", "lines": [{"sku": "TSHIRT-RED-M", "quantity": 1, "reason": "too small"}]}))]
pub struct CreateReturn {
    pub order: String,
    pub lines: Vec<fulfillment::returns::ReturnLine>,
}

/// Opens a return of shipped units of an order: only units shipped and not yet returned (or
/// asked to be).
#[utoipa::path(post, path = "/v1/returns", tag = "fulfillment", request_body = CreateReturn,
    responses((status = 201, body = fulfillment::returns::Return, description = "The return, `requested`"),
              (status = 422, body = crate::error::Problem, description = "Unknown order, bad lines, or more than shipped and not yet returned")),
    security(("bearer" = [])))]
pub async fn return_create(
    State(state): State<AppState>,
    _query: NoQuery,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    body: ApiJson<CreateReturn>,
) -> Result<Response, ApiError> {
    let req = body.value;
    let mut errors = Vec::new();
    if order::record::parse_order_id(&req.order).is_none() {
        problem(&mut errors, "order", "must be an order id (ord_...)");
    }
    for (i, line) in req.lines.iter().enumerate() {
        check_text(&format!("lines[{i}].reason"), &line.reason, true, &mut errors);
    }
    finish(errors)?;
    run_write(&state, &principal, "POST /v1/returns", &headers, &body.raw, move |tx, now| {
        let req = req.clone();
        Box::pin(async move {
            let created = fulfillment::returns::return_create(tx, &req.order, &req.lines, now).await?;
            Ok(Answer::json(StatusCode::CREATED, &created))
        })
    })
    .await
}

/// Reads a return.
#[utoipa::path(get, path = "/v1/returns/{id}", tag = "fulfillment", params(("id" = String, Path)),
    responses((status = 200, body = fulfillment::returns::Return), (status = 404, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn return_get(
    State(state): State<AppState>,
    _query: NoQuery,
    Path(id): Path<String>,
) -> Result<Json<fulfillment::returns::Return>, ApiError> {
    let mut conn = state.db.reader().acquire().await.map_err(store::StoreError::from)?;
    Ok(Json(fulfillment::returns::return_get(&mut conn, &id, false).await?))
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"warehouse": "BER-1", "lines": [{"sku": "TSHIRT-RED-M", "quantity": 1, "condition": "sellable"}]}))]
pub struct ReceiveReturn {
    pub warehouse: String,
    pub lines: Vec<fulfillment::returns::ReceivedLine>,
}

/// Receives a requested return: sellable units go back to available stock (`return` movement,
/// put away in a bin), damaged ones to quarantine (`quarantine`), defective ones to scrap
/// (`scrap`), in one transaction with the return's status; the order's lines count them as
/// `returned` and their refund is requested (`payment.refund_requested`).
#[utoipa::path(post, path = "/v1/returns/{id}/receive", tag = "fulfillment", params(("id" = String, Path)),
    request_body = ReceiveReturn,
    responses((status = 200, body = fulfillment::returns::Return, description = "The return, `received`"),
              (status = 404, body = crate::error::Problem, description = "No such return"),
              (status = 409, body = crate::error::Problem, description = "Received already (`invalid_state`)"),
              (status = 422, body = crate::error::Problem, description = "Unknown warehouse, or lines the return does not hold")),
    security(("bearer" = [])))]
pub async fn return_receive(
    State(state): State<AppState>,
    _query: NoQuery,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: ApiJson<ReceiveReturn>,
) -> Result<Response, ApiError> {
    let req = body.value;
    let mut errors = Vec::new();
    let warehouse = kernel::WarehouseCode::parse(req.warehouse.clone()).ok();
    if warehouse.is_none() {
        problem(&mut errors, "warehouse", "must be a warehouse code");
    }
    finish(errors)?;
    {
        let mut conn = state.db.reader().acquire().await.map_err(store::StoreError::from)?;
        fulfillment::returns::return_get(&mut conn, &id, false).await?;
    }
    let warehouse = warehouse.expect("checked above");
    let key = [id.as_bytes(), b"\0", &body.raw].concat();
    run_write(&state, &principal, "POST /v1/returns/{id}/receive", &headers, &key, move |tx, now| {
        let (id, warehouse, req) = (id.clone(), warehouse.clone(), req.clone());
        Box::pin(async move {
            let received = fulfillment::returns::return_receive(tx, &id, &warehouse, &req.lines, now).await?;
            Ok(Answer::json(StatusCode::OK, &received))
        })
    })
    .await
}

/// Replaces a warehouse's picking and packing settings: where pick walks start (the dock), the
/// packaging weight added per package, and the weight tolerance (the larger of a percentage and
/// grams).
#[utoipa::path(put, path = "/v1/warehouses/{code}/fulfillment-settings", tag = "fulfillment",
    params(("code" = String, Path, description = "Warehouse code")), request_body = fulfillment::settings::Settings,
    responses((status = 200, body = fulfillment::settings::Settings, description = "The settings now"),
              (status = 404, body = crate::error::Problem, description = "No such warehouse"),
              (status = 422, body = crate::error::Problem, description = "Bad fields")),
    security(("bearer" = [])))]
pub async fn settings_put(
    State(state): State<AppState>,
    _query: NoQuery,
    Extension(principal): Extension<Principal>,
    Path(code): Path<String>,
    headers: HeaderMap,
    body: ApiJson<fulfillment::settings::Settings>,
) -> Result<Response, ApiError> {
    let warehouse = crate::routes::inventory::path_warehouse(&code)?;
    let settings = body.value;
    let issues = settings.issues();
    if !issues.is_empty() {
        return Err(fulfillment::FulfillmentError::invalid_fields(issues).into());
    }
    let key = [code.as_bytes(), b"\0", &body.raw].concat();
    run_write(&state, &principal, "PUT /v1/warehouses/{code}/fulfillment-settings", &headers, &key, move |tx, now| {
        let warehouse = warehouse.clone();
        Box::pin(async move {
            let saved = fulfillment::settings::settings_put(tx, &warehouse, settings, now).await?;
            Ok(Answer::json(StatusCode::OK, &saved))
        })
    })
    .await
}

/// A warehouse's picking and packing settings (the defaults until set).
#[utoipa::path(get, path = "/v1/warehouses/{code}/fulfillment-settings", tag = "fulfillment",
    params(("code" = String, Path, description = "Warehouse code")),
    responses((status = 200, body = fulfillment::settings::Settings), (status = 404, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn settings_get(
    State(state): State<AppState>,
    _query: NoQuery,
    Path(code): Path<String>,
) -> Result<Json<fulfillment::settings::Settings>, ApiError> {
    let warehouse = crate::routes::inventory::path_warehouse(&code)?;
    warehouse::site::warehouse_get(state.db.reader(), &warehouse).await?;
    let mut conn = state.db.reader().acquire().await.map_err(store::StoreError::from)?;
    Ok(Json(fulfillment::settings::settings_of(&mut conn, warehouse.as_str()).await?))
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"lines": [{"sku": "TSHIRT-RED-M", "quantity": 1, "result": "fail", "disposition": "quarantine"}]}))]
pub struct QcRequest {
    pub lines: Vec<fulfillment::quality::QcLine>,
}

/// Records quality control of a picked fulfilment: failed units leave it and go to quarantine
/// (on hand, `unavailable`) or scrap, as movements referencing the fulfilment; the order waits
/// for them as a backorder and re-holds them from stock. A fulfilment with nothing left is
/// `cancelled` (`qc_failed`).
#[utoipa::path(post, path = "/v1/fulfillments/{id}/qc", tag = "fulfillment", params(("id" = String, Path)),
    request_body = QcRequest,
    responses((status = 200, body = Fulfillment, description = "The fulfilment without its failed units"),
              (status = 404, body = crate::error::Problem, description = "No such fulfilment"),
              (status = 409, body = crate::error::Problem, description = "Not picked (`invalid_state`)"),
              (status = 422, body = crate::error::Problem, description = "Lines the fulfilment does not hold, or a failed line without a disposition")),
    security(("bearer" = [])))]
pub async fn fulfillment_qc(
    State(state): State<AppState>,
    _query: NoQuery,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: ApiJson<QcRequest>,
) -> Result<Response, ApiError> {
    let req = body.value;
    fulfillment::record::fulfillment_get(state.db.reader(), &id).await?;
    let key = [id.as_bytes(), b"\0", &body.raw].concat();
    run_write(&state, &principal, "POST /v1/fulfillments/{id}/qc", &headers, &key, move |tx, now| {
        let (id, req) = (id.clone(), req.clone());
        Box::pin(async move {
            let checked = fulfillment::quality::quality_check(tx, &id, &req.lines, now).await?;
            Ok(Answer::json(StatusCode::OK, &checked))
        })
    })
    .await
}
