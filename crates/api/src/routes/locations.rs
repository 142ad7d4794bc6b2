//! Where stock is: bins of a warehouse, stock per bin, moves between bins, and lots.

use crate::AppState;
use crate::auth::Principal;
use crate::error::{ApiError, FieldError};
use crate::extract::{ApiJson, NoQuery, QueryMap, check_text};
use crate::idempotency::{Answer, run_write};
use crate::routes::inventory::{check_capacity, path_sku, path_warehouse};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use kernel::{Quantity, SkuCode, WarehouseCode};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use warehouse::bin::{Bin, BinMove, BinStock, NewBin};
use warehouse::lot::LotView;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/warehouses/{code}/bins", post(bin_create).get(bin_list))
        .route("/warehouses/{code}/bin-moves", post(bin_move_create))
        .route("/stock/{sku}/lots", get(lots))
        .route("/stock/{sku}/lots/{lot}/quarantine", post(lot_quarantine))
        .route("/stock/{sku}/lots/{lot}/release", post(lot_release))
        .route("/stock/{sku}/bins", get(bins_of_sku))
        .route("/stock/{sku}/quarantine", post(quarantine_create))
        .route("/quarantine", get(quarantine_list))
        .route("/quarantine/{id}/release", post(quarantine_release))
        .route("/quarantine/{id}/scrap", post(quarantine_scrap))
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"code": "A-01-1", "zone": "A", "x": 3.5, "y": 12.0, "capacity_units": 200}))]
pub struct CreateBin {
    /// 1 to 64 characters of `A-Z a-z 0-9 . _ -`, unique within the warehouse.
    pub code: String,
    pub zone: Option<String>,
    pub x: Option<f64>,
    pub y: Option<f64>,
    pub capacity_units: Option<i64>,
}

/// Adds a bin to a warehouse.
#[utoipa::path(post, path = "/v1/warehouses/{code}/bins", tag = "warehouses", params(("code" = String, Path)),
    request_body = CreateBin,
    responses((status = 201, body = Bin), (status = 404, body = crate::error::Problem), (status = 409, body = crate::error::Problem),
              (status = 422, body = crate::error::Problem)), security(("bearer" = [])))]
pub async fn bin_create(
    _query: NoQuery,
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(code): Path<String>,
    headers: HeaderMap,
    body: ApiJson<CreateBin>,
) -> Result<Response, ApiError> {
    let warehouse = path_warehouse(&code)?;
    let req = body.value;
    let mut errors = Vec::new();
    if WarehouseCode::parse(req.code.clone()).is_err() {
        errors.push(FieldError {
            field: "code".into(),
            message: "must be 1 to 64 characters of A-Z a-z 0-9 . _ -".into(),
        });
    }
    if let Some(zone) = &req.zone {
        check_text("zone", zone, true, &mut errors);
    }
    for (field, value) in [("x", req.x), ("y", req.y)] {
        if value.is_some_and(|v| !v.is_finite() || v.abs() > 1e9) {
            errors
                .push(FieldError { field: field.into(), message: "must be a coordinate between -1e9 and 1e9".into() });
        }
    }
    check_capacity("capacity_units", req.capacity_units, &mut errors);
    if !errors.is_empty() {
        return Err(ApiError::validation_many(errors));
    }
    let new = NewBin { code: req.code, zone: req.zone, x: req.x, y: req.y, capacity_units: req.capacity_units };
    run_write(
        &state,
        &principal,
        "POST /v1/warehouses/bins",
        &headers,
        &[code.as_bytes(), &body.raw].concat(),
        move |tx, now| {
            let (warehouse, new) = (warehouse.clone(), new.clone());
            Box::pin(async move {
                let bin = warehouse::bin::bin_create(tx, &warehouse, new, now).await?;
                Ok(Answer::json(StatusCode::CREATED, &bin))
            })
        },
    )
    .await
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BinPage {
    pub items: Vec<Bin>,
    pub next: Option<String>,
}

/// Bins of a warehouse by code, with the units in each.
#[utoipa::path(get, path = "/v1/warehouses/{code}/bins", tag = "warehouses",
    params(("code" = String, Path), ("limit" = Option<u32>, Query), ("next" = Option<String>, Query)),
    responses((status = 200, body = BinPage), (status = 404, body = crate::error::Problem)), security(("bearer" = [])))]
pub async fn bin_list(
    State(state): State<AppState>,
    Path(code): Path<String>,
    query: QueryMap,
) -> Result<Json<BinPage>, ApiError> {
    let warehouse = path_warehouse(&code)?;
    let mut query = query.only(&["limit", "next"]);
    let page = query.page();
    query.finish()?;
    let rows = warehouse::bin::bins_list(state.db.reader(), &warehouse, page.after.as_deref(), page.limit).await?;
    let page = kernel::Page::from_rows(rows, page.limit, |b| b.code.clone());
    Ok(Json(BinPage { items: page.items, next: page.next }))
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"sku": "TSHIRT-RED-M", "from_bin": "A-01-1", "to_bin": "B-02-3", "quantity": 4}))]
pub struct CreateBinMove {
    #[schema(value_type = String)]
    pub sku: SkuCode,
    pub from_bin: String,
    pub to_bin: String,
    #[schema(value_type = i64, minimum = 1, maximum = 1000000000)]
    pub quantity: Quantity,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BinMoveResult {
    /// The SKU's stock in the two bins after the move.
    pub bins: Vec<BinStock>,
}

/// Moves units of a SKU between two bins of a warehouse (a `bin_move` movement).
#[utoipa::path(post, path = "/v1/warehouses/{code}/bin-moves", tag = "warehouses", params(("code" = String, Path)),
    request_body = CreateBinMove,
    responses((status = 201, body = BinMoveResult), (status = 409, body = crate::error::Problem), (status = 422, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn bin_move_create(
    _query: NoQuery,
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(code): Path<String>,
    headers: HeaderMap,
    body: ApiJson<CreateBinMove>,
) -> Result<Response, ApiError> {
    let warehouse = path_warehouse(&code)?;
    let req = body.value;
    let mut errors = Vec::new();
    check_text("from_bin", &req.from_bin, true, &mut errors);
    check_text("to_bin", &req.to_bin, true, &mut errors);
    if !errors.is_empty() {
        return Err(ApiError::validation_many(errors));
    }
    let command =
        BinMove { warehouse, sku: req.sku, from_bin: req.from_bin, to_bin: req.to_bin, quantity: req.quantity.get() };
    run_write(
        &state,
        &principal,
        "POST /v1/warehouses/bin-moves",
        &headers,
        &[code.as_bytes(), &body.raw].concat(),
        move |tx, now| {
            let command = command.clone();
            Box::pin(async move {
                let bins = warehouse::bin::bin_move(tx, command, now).await?;
                Ok(Answer::json(StatusCode::CREATED, &BinMoveResult { bins }))
            })
        },
    )
    .await
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LotList {
    pub items: Vec<LotView>,
}

/// Lots of a SKU with stock, per warehouse, first expiry first. Expired and quarantined lots
/// are never available.
#[utoipa::path(get, path = "/v1/stock/{sku}/lots", tag = "stock", params(("sku" = String, Path)),
    responses((status = 200, body = LotList), (status = 404, body = crate::error::Problem)), security(("bearer" = [])))]
pub async fn lots(
    _query: NoQuery,
    State(state): State<AppState>,
    Path(sku): Path<String>,
) -> Result<Json<LotList>, ApiError> {
    let sku = path_sku(&sku)?;
    Ok(Json(LotList { items: warehouse::lot::lots_view(state.db.reader(), &sku, state.clock.now()).await? }))
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"warehouse": "BER-1", "reason": "supplier recall 2026-11"}))]
pub struct LotStateChange {
    /// The warehouse whose lot it is (lot codes are per SKU and warehouse).
    #[schema(value_type = String)]
    pub warehouse: WarehouseCode,
    /// Why, for the ledger (the movement's reason) and the event.
    pub reason: Option<String>,
}

/// Puts a lot in quarantine: it stays on hand, but its free units are no longer available
/// (holds skip it). Units already reserved in it stay reserved. A `lot_quarantined` movement
/// and a `lot.quarantined` event record it; quarantining a quarantined lot changes nothing.
#[utoipa::path(post, path = "/v1/stock/{sku}/lots/{lot}/quarantine", tag = "stock",
    params(("sku" = String, Path), ("lot" = String, Path)), request_body = LotStateChange,
    responses((status = 200, body = LotView), (status = 404, body = crate::error::Problem), (status = 422, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn lot_quarantine(
    _query: NoQuery,
    state: State<AppState>,
    principal: Extension<Principal>,
    path: Path<(String, String)>,
    headers: HeaderMap,
    body: ApiJson<LotStateChange>,
) -> Result<Response, ApiError> {
    lot_state_change(state, principal, path, headers, body, true).await
}

/// Takes a lot out of quarantine: its free units are available again unless it has expired.
/// A `lot_released` movement and a `lot.released` event record it.
#[utoipa::path(post, path = "/v1/stock/{sku}/lots/{lot}/release", tag = "stock",
    params(("sku" = String, Path), ("lot" = String, Path)), request_body = LotStateChange,
    responses((status = 200, body = LotView), (status = 404, body = crate::error::Problem), (status = 422, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn lot_release(
    _query: NoQuery,
    state: State<AppState>,
    principal: Extension<Principal>,
    path: Path<(String, String)>,
    headers: HeaderMap,
    body: ApiJson<LotStateChange>,
) -> Result<Response, ApiError> {
    lot_state_change(state, principal, path, headers, body, false).await
}

async fn lot_state_change(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path((sku, lot)): Path<(String, String)>,
    headers: HeaderMap,
    body: ApiJson<LotStateChange>,
    quarantined: bool,
) -> Result<Response, ApiError> {
    let sku = path_sku(&sku)?;
    let req = body.value;
    let mut errors = Vec::new();
    check_text("lot", &lot, true, &mut errors);
    if let Some(reason) = &req.reason {
        check_text("reason", reason, false, &mut errors);
    }
    if !errors.is_empty() {
        return Err(ApiError::validation_many(errors));
    }
    warehouse::item::item_get(state.db.reader(), &sku).await?;
    let route = if quarantined { "POST /v1/stock/lots/quarantine" } else { "POST /v1/stock/lots/release" };
    let key = [sku.as_str().as_bytes(), b"\0", lot.as_bytes(), b"\0", &body.raw].concat();
    run_write(&state, &principal, route, &headers, &key, move |tx, now| {
        let (sku, lot, req) = (sku.clone(), lot.clone(), req.clone());
        Box::pin(async move {
            let view =
                warehouse::lot::lot_quarantine(tx, &sku, &req.warehouse, &lot, quarantined, req.reason, now).await?;
            Ok(Answer::json(StatusCode::OK, &view))
        })
    })
    .await
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BinStockList {
    pub items: Vec<BinStock>,
}

/// Stock of a SKU per bin of one warehouse (`?warehouse=` required).
#[utoipa::path(get, path = "/v1/stock/{sku}/bins", tag = "stock", params(("sku" = String, Path), ("warehouse" = String, Query)),
    responses((status = 200, body = BinStockList), (status = 404, body = crate::error::Problem), (status = 422, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn bins_of_sku(
    State(state): State<AppState>,
    Path(sku): Path<String>,
    query: QueryMap,
) -> Result<Json<BinStockList>, ApiError> {
    let sku = path_sku(&sku)?;
    let mut query = query.only(&["warehouse"]);
    let warehouse = query.code::<WarehouseCode>("warehouse");
    if query.get("warehouse").is_none() {
        query.refuse("warehouse", "is required");
    }
    warehouse::item::item_get(state.db.reader(), &sku).await?;
    query.require_warehouse(state.db.reader(), "warehouse", warehouse.as_ref()).await?;
    query.finish()?;
    let warehouse = warehouse.ok_or_else(ApiError::internal)?;
    Ok(Json(BinStockList { items: warehouse::bin::bin_stock_of(state.db.reader(), &warehouse, &sku).await? }))
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"warehouse": "BER-1", "quantity": 2, "reason": "crushed box"}))]
pub struct QuarantineRequest {
    #[schema(value_type = String)]
    pub warehouse: WarehouseCode,
    /// Free units to set aside, at least 1.
    pub quantity: i64,
    /// For a lot-tracked item (required): the lot whose free units are set aside; they are
    /// out of its on hand until released back to it. Refused for any other item.
    #[serde(default)]
    pub lot: Option<String>,
    /// Why, for the ledger (the movement's reason).
    pub reason: String,
}

/// Sets free units of an item aside: they stay on hand but count as `unavailable`, not
/// `available`, until the entry is released or scrapped. A `quarantine` movement records it.
/// A lot-tracked item names the `lot` (422 without one, or with one for an item without
/// lots). Fewer free units than asked: 409 `insufficient_stock`.
#[utoipa::path(post, path = "/v1/stock/{sku}/quarantine", tag = "stock", params(("sku" = String, Path)),
    request_body = QuarantineRequest,
    responses((status = 201, body = warehouse::quarantine::QuarantineEntry), (status = 404, body = crate::error::Problem),
        (status = 409, body = crate::error::Problem), (status = 422, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn quarantine_create(
    _query: NoQuery,
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(sku): Path<String>,
    headers: HeaderMap,
    body: ApiJson<QuarantineRequest>,
) -> Result<Response, ApiError> {
    let sku = path_sku(&sku)?;
    let req = body.value;
    let mut errors = Vec::new();
    if !(1..=kernel::limits::QUANTITY_MAX).contains(&req.quantity) {
        errors.push(FieldError {
            field: "quantity".into(),
            message: format!("must be 1 to {}", kernel::limits::QUANTITY_MAX),
        });
    }
    check_text("reason", &req.reason, true, &mut errors);
    if let Some(lot) = &req.lot {
        check_text("lot", lot, true, &mut errors);
    }
    if !errors.is_empty() {
        return Err(ApiError::validation_many(errors));
    }
    warehouse::item::item_get(state.db.reader(), &sku).await?;
    let key = [sku.as_str().as_bytes(), b"\0", &body.raw].concat();
    run_write(&state, &principal, "POST /v1/stock/quarantine", &headers, &key, move |tx, now| {
        let (sku, req) = (sku.clone(), req.clone());
        Box::pin(async move {
            let mut issues = Vec::new();
            if let Err(e) = warehouse::site::require_warehouse(tx, "warehouse", &req.warehouse).await {
                match e {
                    warehouse::WarehouseError::Invalid { field, message } => issues.push(FieldError { field, message }),
                    other => return Err(other.into()),
                }
            }
            if !issues.is_empty() {
                return Err(ApiError::validation_many(issues));
            }
            let what = warehouse::quarantine::Units {
                sku: sku.clone(),
                warehouse: req.warehouse.clone(),
                lot: req.lot.clone(),
                units: req.quantity,
            };
            let source = warehouse::quarantine::Source::Available;
            let entry = warehouse::quarantine::quarantine_units(tx, &what, source, None, &req.reason, now).await?;
            Ok(Answer::json(StatusCode::CREATED, &entry))
        })
    })
    .await
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QuarantineList {
    pub items: Vec<warehouse::quarantine::QuarantineEntry>,
}

/// Quarantine entries, oldest first (`?warehouse=`, `?status=held|released|scrapped`, `?limit=`).
#[utoipa::path(get, path = "/v1/quarantine", tag = "stock",
    params(("warehouse" = Option<String>, Query), ("status" = Option<String>, Query), ("limit" = Option<u32>, Query)),
    responses((status = 200, body = QuarantineList), (status = 422, body = crate::error::Problem)), security(("bearer" = [])))]
pub async fn quarantine_list(State(state): State<AppState>, query: QueryMap) -> Result<Json<QuarantineList>, ApiError> {
    let mut query = query.only(&["warehouse", "status", "limit"]);
    let warehouse = query.code::<WarehouseCode>("warehouse");
    let status = query.get("status").map(str::to_owned);
    if let Some(s) = &status
        && !["held", "released", "scrapped"].contains(&s.as_str())
    {
        query.refuse("status", "must be held, released or scrapped");
    }
    let page = query.page();
    query.require_warehouse(state.db.reader(), "warehouse", warehouse.as_ref()).await?;
    query.finish()?;
    let items =
        warehouse::quarantine::quarantine_list(state.db.reader(), warehouse.as_ref(), status.as_deref(), page.limit)
            .await?;
    Ok(Json(QuarantineList { items }))
}

/// Releases a held quarantine entry: its units are available again (`quarantine_release`
/// movement). An entry already released or scrapped: 409 `invalid_state`.
#[utoipa::path(post, path = "/v1/quarantine/{id}/release", tag = "stock", params(("id" = String, Path)),
    responses((status = 200, body = warehouse::quarantine::QuarantineEntry), (status = 404, body = crate::error::Problem),
        (status = 409, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn quarantine_release(
    query: NoQuery,
    state: State<AppState>,
    principal: Extension<Principal>,
    path: Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    quarantine_settle(query, state, principal, path, headers, warehouse::quarantine::Settle::Release).await
}

/// Scraps a held quarantine entry: its units leave on hand (`scrap` movement). An entry
/// already released or scrapped: 409 `invalid_state`.
#[utoipa::path(post, path = "/v1/quarantine/{id}/scrap", tag = "stock", params(("id" = String, Path)),
    responses((status = 200, body = warehouse::quarantine::QuarantineEntry), (status = 404, body = crate::error::Problem),
        (status = 409, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn quarantine_scrap(
    query: NoQuery,
    state: State<AppState>,
    principal: Extension<Principal>,
    path: Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    quarantine_settle(query, state, principal, path, headers, warehouse::quarantine::Settle::Scrap).await
}

async fn quarantine_settle(
    _query: NoQuery,
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    headers: HeaderMap,
    settle: warehouse::quarantine::Settle,
) -> Result<Response, ApiError> {
    let route = match settle {
        warehouse::quarantine::Settle::Release => "POST /v1/quarantine/release",
        warehouse::quarantine::Settle::Scrap => "POST /v1/quarantine/scrap",
    };
    let key = id.clone().into_bytes();
    run_write(&state, &principal, route, &headers, &key, move |tx, now| {
        let id = id.clone();
        Box::pin(async move {
            let entry = warehouse::quarantine::quarantine_settle(tx, &id, settle, now).await?;
            Ok(Answer::json(StatusCode::OK, &entry))
        })
    })
    .await
}
