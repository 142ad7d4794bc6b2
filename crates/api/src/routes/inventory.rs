//! Items, warehouses, receipts, adjustments, transfers and stock levels.

use crate::AppState;
use crate::auth::Principal;
use crate::error::{ApiError, FieldError};
use crate::extract::{ApiJson, NoQuery, QueryMap, check_text, finish, problem as field_error};
use crate::idempotency::{Answer, run_write};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use kernel::limits::{LINES_PER_REQUEST_MAX, QUANTITY_MAX, STOCK_BATCH_SKUS_MAX};
use kernel::{Quantity, SkuCode, WarehouseCode};
use serde::Deserialize;
use utoipa::ToSchema;
use warehouse::adjustment::{Adjustment, AdjustmentView, Change};
use warehouse::item::{Item, ItemFilter, ItemPatch, NewItem};
use warehouse::receipt::{Receipt, ReceiptLine, ReceiptView};
use warehouse::site::{NewWarehouse, PRIORITY_DEFAULT, Warehouse, WarehousePatch};
use warehouse::stock::StockView;
use warehouse::transfer::{Transfer, TransferLine, TransferView};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/items", post(item_create).get(item_list))
        .route("/items/{sku}", get(item_get).patch(item_patch))
        .route("/warehouses", post(warehouse_create).get(warehouse_list))
        .route("/warehouses/{code}", get(warehouse_get).patch(warehouse_patch))
        .route("/receipts", post(receipt_create).get(receipt_list))
        .route("/receipts/{id}", get(receipt_get))
        .route("/adjustments", post(adjustment_create))
        .route(
            "/bulk/adjustments",
            post(bulk_adjustments).layer(axum::extract::DefaultBodyLimit::max(BULK_BODY_BYTES_MAX)),
        )
        .route("/transfers", post(transfer_create).get(transfer_list))
        .route("/transfers/{id}", get(transfer_get))
        .route("/transfers/{id}/receive", post(transfer_receive))
        .route("/stock", get(stock_batch))
        .route("/stock/{sku}", get(stock_one))
}

fn check_lines<T>(lines: &[T], errors: &mut Vec<FieldError>) {
    if lines.is_empty() || lines.len() > LINES_PER_REQUEST_MAX {
        field_error(errors, "lines", format!("must have 1 to {LINES_PER_REQUEST_MAX} lines"));
    }
}

/// Capacities are positive unit counts, bounded like stock levels.
pub(crate) fn check_capacity(field: &str, capacity: Option<i64>, errors: &mut Vec<FieldError>) {
    if let Some(c) = capacity
        && !(1..=kernel::limits::STOCK_LEVEL_MAX).contains(&c)
    {
        field_error(errors, field, format!("must be between 1 and {}", kernel::limits::STOCK_LEVEL_MAX));
    }
}

pub(crate) fn path_sku(raw: &str) -> Result<SkuCode, ApiError> {
    SkuCode::parse(raw).map_err(|_| ApiError::not_found(format!("item {raw} does not exist")))
}

pub(crate) fn path_warehouse(raw: &str) -> Result<WarehouseCode, ApiError> {
    WarehouseCode::parse(raw).map_err(|_| ApiError::not_found(format!("warehouse {raw} does not exist")))
}

// ---------------------------------------------------------------- items

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"sku": "TSHIRT-RED-M", "name": "T-shirt red M", "weight_grams": 180, "track_lots": false}))]
pub struct CreateItem {
    #[schema(value_type = String, example = "TSHIRT-RED-M")]
    pub sku: SkuCode,
    pub name: String,
    pub weight_grams: Option<i64>,
    #[serde(default)]
    pub track_lots: bool,
}

/// Creates an item (SKU).
#[utoipa::path(post, path = "/v1/items", tag = "items", request_body = CreateItem,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer for repeats")),
    responses((status = 201, body = Item), (status = 409, body = crate::error::Problem, description = "Duplicate SKU"),
              (status = 422, body = crate::error::Problem)), security(("bearer" = [])))]
pub async fn item_create(
    _query: NoQuery,
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    body: ApiJson<CreateItem>,
) -> Result<Response, ApiError> {
    let req = body.value;
    let mut errors = Vec::new();
    check_text("name", &req.name, true, &mut errors);
    if let Some(w) = req.weight_grams
        && !(0..=QUANTITY_MAX).contains(&w)
    {
        field_error(&mut errors, "weight_grams", format!("must be between 0 and {QUANTITY_MAX}"));
    }
    finish(errors)?;
    let new = NewItem { sku: req.sku, name: req.name, weight_grams: req.weight_grams, track_lots: req.track_lots };
    run_write(&state, &principal, "POST /v1/items", &headers, &body.raw, move |tx, now| {
        let new = new.clone();
        Box::pin(async move {
            let item = warehouse::item::item_create(tx, new, now).await?;
            Ok(Answer::json(StatusCode::CREATED, &item))
        })
    })
    .await
}

/// Reads an item.
#[utoipa::path(get, path = "/v1/items/{sku}", tag = "items", params(("sku" = String, Path)),
    responses((status = 200, body = Item), (status = 404, body = crate::error::Problem)), security(("bearer" = [])))]
pub async fn item_get(
    _query: NoQuery,
    State(state): State<AppState>,
    Path(sku): Path<String>,
) -> Result<Json<Item>, ApiError> {
    Ok(Json(warehouse::item::item_get(state.db.reader(), &path_sku(&sku)?).await?))
}

#[derive(Debug, serde::Serialize, ToSchema)]
pub struct ItemPage {
    pub items: Vec<Item>,
    pub next: Option<String>,
}

/// Lists items by SKU.
#[utoipa::path(get, path = "/v1/items", tag = "items",
    params(("sku_prefix" = Option<String>, Query, description = "Only SKUs starting with this"),
           ("archived" = Option<bool>, Query, description = "`true`: only archived items; `false`: only items not archived; omitted: both"),
           ("limit" = Option<u32>, Query, description = "1 to 1000; default 100"),
           ("next" = Option<String>, Query, description = "The cursor of the previous page")),
    responses((status = 200, body = ItemPage), (status = 422, body = crate::error::Problem)), security(("bearer" = [])))]
pub async fn item_list(State(state): State<AppState>, query: QueryMap) -> Result<Json<ItemPage>, ApiError> {
    let mut query = query.only(&["sku_prefix", "archived", "limit", "next"]);
    let page = query.page();
    let mut filter = ItemFilter::default();
    if let Some(prefix) = query.get("sku_prefix").map(str::to_owned) {
        // A prefix of a code is a code, except that it may be empty.
        if !prefix.is_empty() && SkuCode::parse(prefix.clone()).is_err() {
            query.refuse("sku_prefix", "must be at most 64 characters of A-Z a-z 0-9 . _ -");
        } else {
            filter.sku_prefix = Some(prefix);
        }
    }
    match query.get("archived") {
        None => {}
        Some("true") => filter.archived = Some(true),
        Some("false") => filter.archived = Some(false),
        Some(_) => query.refuse("archived", "must be true or false"),
    }
    query.finish()?;
    let rows = warehouse::item::items_list(state.db.reader(), &filter, page.after.as_deref(), page.limit).await?;
    let page = kernel::Page::from_rows(rows, page.limit, |i| i.sku.clone());
    Ok(Json(ItemPage { items: page.items, next: page.next }))
}

/// A member of a JSON Merge Patch: absent is `None`, `null` is `Some(None)`.
fn merge_member<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Option<Option<T>>, D::Error> {
    Ok(Some(Option::<T>::deserialize(deserializer)?))
}

/// A JSON Merge Patch (RFC 7396) of an item: members left out are kept, `null` clears an
/// optional member (`weight_grams`, `gtin`); `name`, `archived` and `track_lots` cannot be
/// cleared.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "T-shirt red M (2027)", "gtin": "4006381333931", "weight_grams": null}))]
pub struct PatchItem {
    #[serde(default, deserialize_with = "merge_member")]
    #[schema(value_type = Option<String>)]
    pub name: Option<Option<String>>,
    #[serde(default, deserialize_with = "merge_member")]
    #[schema(value_type = Option<i64>, nullable)]
    pub weight_grams: Option<Option<i64>>,
    /// A GTIN-8, -12, -13 or -14 with a valid check digit; `null` clears it.
    #[serde(default, deserialize_with = "merge_member")]
    #[schema(value_type = Option<String>, nullable)]
    pub gtin: Option<Option<String>>,
    #[serde(default, deserialize_with = "merge_member")]
    #[schema(value_type = Option<bool>)]
    pub archived: Option<Option<bool>>,
    /// Only while the item has no stock anywhere.
    #[serde(default, deserialize_with = "merge_member")]
    #[schema(value_type = Option<bool>)]
    pub track_lots: Option<Option<bool>>,
}

/// A GTIN-8, -12, -13 or -14: digits, the last a GS1 check digit.
fn check_gtin(gtin: &str, errors: &mut Vec<FieldError>) {
    let digits: Vec<u32> = gtin.chars().filter_map(|c| c.to_digit(10)).collect();
    if digits.len() != gtin.len() || ![8, 12, 13, 14].contains(&digits.len()) {
        field_error(errors, "gtin", "must be a GTIN of 8, 12, 13 or 14 digits");
        return;
    }
    let (body, check) = digits.split_at(digits.len() - 1);
    let sum: u32 = body.iter().rev().enumerate().map(|(i, d)| if i % 2 == 0 { d * 3 } else { *d }).sum();
    if (10 - sum % 10) % 10 != check[0] {
        field_error(errors, "gtin", "has a wrong check digit");
    }
}

/// Changes an item (JSON Merge Patch): name, weight_grams, gtin, archived, and track_lots
/// while the item has no stock. An `item.updated` event records the item after.
#[utoipa::path(patch, path = "/v1/items/{sku}", tag = "items", params(("sku" = String, Path)), request_body(content = PatchItem, content_type = "application/merge-patch+json", description = "Also accepted as application/json"),
    responses((status = 200, body = Item), (status = 404, body = crate::error::Problem), (status = 422, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn item_patch(
    _query: NoQuery,
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(sku): Path<String>,
    headers: HeaderMap,
    body: ApiJson<PatchItem>,
) -> Result<Response, ApiError> {
    let sku = path_sku(&sku)?;
    let req = body.value;
    let mut errors = Vec::new();
    let required = |field: &str, present: bool, errors: &mut Vec<FieldError>| {
        if !present {
            field_error(errors, field, "cannot be cleared (null)");
        }
    };
    if let Some(name) = &req.name {
        required("name", name.is_some(), &mut errors);
    }
    if let Some(Some(name)) = &req.name {
        check_text("name", name, true, &mut errors);
    }
    if let Some(Some(w)) = req.weight_grams
        && !(0..=QUANTITY_MAX).contains(&w)
    {
        field_error(&mut errors, "weight_grams", format!("must be between 0 and {QUANTITY_MAX}"));
    }
    if let Some(Some(gtin)) = &req.gtin {
        check_gtin(gtin, &mut errors);
    }
    if let Some(archived) = req.archived {
        required("archived", archived.is_some(), &mut errors);
    }
    if let Some(track_lots) = req.track_lots {
        required("track_lots", track_lots.is_some(), &mut errors);
    }
    finish(errors)?;
    let patch = ItemPatch {
        name: req.name.flatten(),
        weight_grams: req.weight_grams,
        gtin: req.gtin,
        archived: req.archived.flatten(),
        track_lots: req.track_lots.flatten(),
    };
    run_write(
        &state,
        &principal,
        "PATCH /v1/items",
        &headers,
        &[sku.as_str().as_bytes(), b"\0", &body.raw].concat(),
        move |tx, now| {
            let (sku, patch) = (sku.clone(), patch.clone());
            Box::pin(async move {
                let item = warehouse::item::item_update(tx, &sku, patch, now).await?;
                Ok(Answer::json(StatusCode::OK, &item))
            })
        },
    )
    .await
}

// ---------------------------------------------------------------- warehouses

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"code": "BER-1", "name": "Berlin", "country": "DE", "latitude": 52.52, "longitude": 13.40, "priority": 10, "active": true}))]
pub struct CreateWarehouse {
    #[schema(value_type = String, example = "BER-1")]
    pub code: WarehouseCode,
    pub name: String,
    pub country: Option<String>,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    /// Lower is preferred; default 100.
    pub priority: Option<i64>,
    pub active: Option<bool>,
    /// Most units of all SKUs on hand; omit for no limit.
    pub capacity_units: Option<i64>,
}

/// A JSON Merge Patch (RFC 7396) of a warehouse: members left out are kept; `null` clears an
/// optional member (`latitude`, `longitude`, `country`, `capacity_units`); `name`, `priority`
/// and `active` cannot be cleared.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"priority": 5, "active": false, "capacity_units": null}))]
pub struct PatchWarehouse {
    #[serde(default, deserialize_with = "merge_member")]
    #[schema(value_type = Option<String>)]
    pub name: Option<Option<String>>,
    #[serde(default, deserialize_with = "merge_member")]
    #[schema(value_type = Option<i64>)]
    pub priority: Option<Option<i64>>,
    #[serde(default, deserialize_with = "merge_member")]
    #[schema(value_type = Option<bool>)]
    pub active: Option<Option<bool>>,
    #[serde(default, deserialize_with = "merge_member")]
    #[schema(value_type = Option<f64>, nullable)]
    pub latitude: Option<Option<f64>>,
    #[serde(default, deserialize_with = "merge_member")]
    #[schema(value_type = Option<f64>, nullable)]
    pub longitude: Option<Option<f64>>,
    #[serde(default, deserialize_with = "merge_member")]
    #[schema(value_type = Option<String>, nullable)]
    pub country: Option<Option<String>>,
    /// `null`: no limit.
    #[serde(default, deserialize_with = "merge_member")]
    #[schema(value_type = Option<i64>, nullable)]
    pub capacity_units: Option<Option<i64>>,
}

/// Largest warehouse priority; priorities are small ranks, not arbitrary numbers.
const PRIORITY_MAX: i64 = 1_000_000;

fn check_site(
    name: Option<&str>,
    country: Option<&str>,
    latitude: Option<f64>,
    longitude: Option<f64>,
    priority: Option<i64>,
    errors: &mut Vec<FieldError>,
) {
    if let Some(name) = name {
        check_text("name", name, true, errors);
    }
    if let Some(country) = country
        && !(country.len() == 2 && country.bytes().all(|b| b.is_ascii_uppercase()))
    {
        field_error(errors, "country", "must be an ISO 3166-1 alpha-2 code such as DE");
    }
    if let Some(lat) = latitude
        && !(-90.0..=90.0).contains(&lat)
    {
        field_error(errors, "latitude", "must be between -90 and 90");
    }
    if let Some(lon) = longitude
        && !(-180.0..=180.0).contains(&lon)
    {
        field_error(errors, "longitude", "must be between -180 and 180");
    }
    if let Some(p) = priority
        && !(0..=PRIORITY_MAX).contains(&p)
    {
        field_error(errors, "priority", format!("must be between 0 and {PRIORITY_MAX}"));
    }
}

/// Creates a warehouse.
#[utoipa::path(post, path = "/v1/warehouses", tag = "warehouses", request_body = CreateWarehouse,
    params(("Idempotency-Key" = Option<String>, Header)),
    responses((status = 201, body = Warehouse), (status = 409, body = crate::error::Problem), (status = 422, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn warehouse_create(
    _query: NoQuery,
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    body: ApiJson<CreateWarehouse>,
) -> Result<Response, ApiError> {
    let req = body.value;
    let mut errors = Vec::new();
    check_site(Some(&req.name), req.country.as_deref(), req.latitude, req.longitude, req.priority, &mut errors);
    check_capacity("capacity_units", req.capacity_units, &mut errors);
    finish(errors)?;
    let new = NewWarehouse {
        code: req.code,
        name: req.name,
        country: req.country,
        latitude: req.latitude,
        longitude: req.longitude,
        priority: req.priority.unwrap_or(PRIORITY_DEFAULT),
        active: req.active.unwrap_or(true),
        capacity_units: req.capacity_units,
    };
    run_write(&state, &principal, "POST /v1/warehouses", &headers, &body.raw, move |tx, now| {
        let new = new.clone();
        Box::pin(async move {
            let created = warehouse::site::warehouse_create(tx, new, now).await?;
            Ok(Answer::json(StatusCode::CREATED, &created))
        })
    })
    .await
}

#[derive(Debug, serde::Serialize, ToSchema)]
pub struct WarehousePage {
    pub items: Vec<Warehouse>,
    pub next: Option<String>,
}

/// Lists warehouses by code.
#[utoipa::path(get, path = "/v1/warehouses", tag = "warehouses",
    params(("limit" = Option<u32>, Query), ("next" = Option<String>, Query)),
    responses((status = 200, body = WarehousePage)), security(("bearer" = [])))]
pub async fn warehouse_list(State(state): State<AppState>, query: QueryMap) -> Result<Json<WarehousePage>, ApiError> {
    let mut query = query.only(&["limit", "next"]);
    let page = query.page();
    query.finish()?;
    let rows = warehouse::site::warehouses_list(state.db.reader(), page.after.as_deref(), page.limit).await?;
    let page = kernel::Page::from_rows(rows, page.limit, |w| w.code.clone());
    Ok(Json(WarehousePage { items: page.items, next: page.next }))
}

/// Reads a warehouse.
#[utoipa::path(get, path = "/v1/warehouses/{code}", tag = "warehouses", params(("code" = String, Path)),
    responses((status = 200, body = Warehouse), (status = 404, body = crate::error::Problem)), security(("bearer" = [])))]
pub async fn warehouse_get(
    _query: NoQuery,
    State(state): State<AppState>,
    Path(code): Path<String>,
) -> Result<Json<Warehouse>, ApiError> {
    Ok(Json(warehouse::site::warehouse_get(state.db.reader(), &path_warehouse(&code)?).await?))
}

/// Changes any of name, priority, active, latitude, longitude, country, capacity_units, as a
/// JSON Merge Patch: `null` clears an optional member.
#[utoipa::path(patch, path = "/v1/warehouses/{code}", tag = "warehouses", params(("code" = String, Path)), request_body = PatchWarehouse,
    responses((status = 200, body = Warehouse), (status = 404, body = crate::error::Problem), (status = 422, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn warehouse_patch(
    _query: NoQuery,
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(code): Path<String>,
    headers: HeaderMap,
    body: ApiJson<PatchWarehouse>,
) -> Result<Response, ApiError> {
    let code = path_warehouse(&code)?;
    let req = body.value;
    let mut errors = Vec::new();
    for (field, cleared) in [
        ("name", req.name == Some(None)),
        ("priority", req.priority == Some(None)),
        ("active", req.active == Some(None)),
    ] {
        if cleared {
            field_error(&mut errors, field, "cannot be cleared (null)");
        }
    }
    check_site(
        req.name.clone().flatten().as_deref(),
        req.country.clone().flatten().as_deref(),
        req.latitude.flatten(),
        req.longitude.flatten(),
        req.priority.flatten(),
        &mut errors,
    );
    check_capacity("capacity_units", req.capacity_units.flatten(), &mut errors);
    finish(errors)?;
    let patch = WarehousePatch {
        name: req.name.flatten(),
        priority: req.priority.flatten(),
        active: req.active.flatten(),
        latitude: req.latitude,
        longitude: req.longitude,
        country: req.country,
        capacity_units: req.capacity_units,
    };
    run_write(
        &state,
        &principal,
        "PATCH /v1/warehouses",
        &headers,
        &[code.as_str().as_bytes(), b"\0", &body.raw].concat(),
        move |tx, now| {
            let (code, patch) = (code.clone(), patch.clone());
            Box::pin(async move {
                let updated = warehouse::site::warehouse_update(tx, &code, patch, now).await?;
                Ok(Answer::json(StatusCode::OK, &updated))
            })
        },
    )
    .await
}

// ---------------------------------------------------------------- receipts

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReceiptLineRequest {
    #[schema(value_type = String, example = "TSHIRT-RED-M")]
    pub sku: SkuCode,
    #[schema(value_type = i64, example = 10, minimum = 1, maximum = 1000000000)]
    pub quantity: Quantity,
    pub lot: Option<String>,
    /// A date, `YYYY-MM-DD`.
    pub expires_on: Option<String>,
    pub bin: Option<String>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"warehouse": "BER-1", "reference": "PO-1", "lines": [{"sku": "TSHIRT-RED-M", "quantity": 10}]}))]
pub struct CreateReceipt {
    #[schema(value_type = String)]
    pub warehouse: WarehouseCode,
    pub reference: Option<String>,
    pub lines: Vec<ReceiptLineRequest>,
}

fn check_date(field: String, raw: &str, errors: &mut Vec<FieldError>) {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    if time::Date::parse(raw, &format).is_err() {
        field_error(errors, field, "must be a date YYYY-MM-DD");
    }
}

/// Receives goods into a warehouse.
#[utoipa::path(post, path = "/v1/receipts", tag = "stock", request_body = CreateReceipt,
    params(("Idempotency-Key" = Option<String>, Header)),
    responses((status = 201, body = ReceiptView), (status = 422, body = crate::error::Problem)), security(("bearer" = [])))]
pub async fn receipt_create(
    _query: NoQuery,
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    body: ApiJson<CreateReceipt>,
) -> Result<Response, ApiError> {
    let req = body.value;
    let mut errors = Vec::new();
    check_lines(&req.lines, &mut errors);
    if let Some(r) = &req.reference {
        check_text("reference", r, true, &mut errors);
    }
    for (i, line) in req.lines.iter().enumerate() {
        for (name, value) in [("lot", &line.lot), ("bin", &line.bin)] {
            if let Some(v) = value {
                check_text(&format!("lines[{i}].{name}"), v, true, &mut errors);
            }
        }
        if let Some(d) = &line.expires_on {
            check_date(format!("lines[{i}].expires_on"), d, &mut errors);
        }
    }
    if req.lines.len() > LINES_PER_REQUEST_MAX {
        // Too many lines to look up: the form's errors (among them `lines`) alone.
        return Err(ApiError::validation_many(errors));
    }
    let receipt = Receipt {
        warehouse: req.warehouse,
        reference: req.reference,
        lines: req
            .lines
            .into_iter()
            .map(|l| ReceiptLine { sku: l.sku, quantity: l.quantity, lot: l.lot, expires_on: l.expires_on, bin: l.bin })
            .collect(),
    };
    let checked = receipt.clone();
    crate::extract::finish_all(&state, errors, move |tx| {
        Box::pin(async move { warehouse::receipt::receipt_issues(tx, &checked).await })
    })
    .await?;
    run_write(&state, &principal, "POST /v1/receipts", &headers, &body.raw, move |tx, now| {
        let receipt = receipt.clone();
        Box::pin(async move {
            let view = warehouse::receipt::receive(tx, receipt, now).await?;
            Ok(Answer::json(StatusCode::CREATED, &view))
        })
    })
    .await
}

// ---------------------------------------------------------------- adjustments

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"warehouse": "BER-1", "sku": "TSHIRT-RED-M", "delta": -3, "reason": "damaged"}))]
pub struct CreateAdjustment {
    #[schema(value_type = String)]
    pub warehouse: WarehouseCode,
    #[schema(value_type = String)]
    pub sku: SkuCode,
    /// Units to add (positive) or remove (negative); exactly one of `delta` and `counted`.
    pub delta: Option<i64>,
    /// Sets on hand to this counted figure.
    pub counted: Option<i64>,
    /// Required for lot-tracked items: the lot adjusted or counted.
    pub lot: Option<String>,
    pub reason: Option<String>,
}

/// Corrects on hand by a delta or to a counted figure.
#[utoipa::path(post, path = "/v1/adjustments", tag = "stock", request_body = CreateAdjustment,
    params(("Idempotency-Key" = Option<String>, Header)),
    responses((status = 201, body = AdjustmentView), (status = 409, body = crate::error::Problem, description = "Would take on hand below reserved"),
              (status = 422, body = crate::error::Problem)), security(("bearer" = [])))]
pub async fn adjustment_create(
    _query: NoQuery,
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    body: ApiJson<CreateAdjustment>,
) -> Result<Response, ApiError> {
    let (warehouse, sku, with_lot) = (body.value.warehouse.clone(), body.value.sku.clone(), body.value.lot.is_some());
    let adjustment = match adjustment_command(body.value, "") {
        Ok(adjustment) => adjustment,
        Err(refused) => {
            crate::extract::finish_all(&state, refused.errors.clone(), move |tx| {
                Box::pin(async move { warehouse::adjustment::adjustment_issues(tx, &warehouse, &sku, with_lot).await })
            })
            .await?;
            return Err(refused);
        }
    };
    run_write(&state, &principal, "POST /v1/adjustments", &headers, &body.raw, move |tx, now| {
        let adjustment = adjustment.clone();
        Box::pin(async move {
            let view = warehouse::adjustment::adjust(tx, adjustment, now).await?;
            Ok(Answer::json(StatusCode::CREATED, &view))
        })
    })
    .await
}

/// Parses an adjustment request; `prefix` goes before field names (`lines[3].`).
fn adjustment_command(req: CreateAdjustment, prefix: &str) -> Result<Adjustment, ApiError> {
    let mut errors = Vec::new();
    let field = |name: &str| format!("{prefix}{name}");
    let change = match (req.delta, req.counted) {
        (Some(delta), None) if delta != 0 && (-QUANTITY_MAX..=QUANTITY_MAX).contains(&delta) => {
            Some(Change::Delta(delta))
        }
        (Some(_), None) => {
            field_error(
                &mut errors,
                field("delta"),
                format!("must be non-zero and between -{QUANTITY_MAX} and {QUANTITY_MAX}"),
            );
            None
        }
        (None, Some(counted)) if (0..=QUANTITY_MAX).contains(&counted) => Some(Change::Counted(counted)),
        (None, Some(_)) => {
            field_error(&mut errors, field("counted"), format!("must be between 0 and {QUANTITY_MAX}"));
            None
        }
        (Some(_), Some(_)) => {
            field_error(&mut errors, field("counted"), "give either delta or counted, not both");
            None
        }
        (None, None) => {
            field_error(&mut errors, field("delta"), "one of delta or counted is required");
            None
        }
    };
    if let Some(r) = &req.reason {
        check_text(&field("reason"), r, true, &mut errors);
    }
    if let Some(lot) = &req.lot {
        check_text(&field("lot"), lot, true, &mut errors);
    }
    match change {
        Some(change) if errors.is_empty() => {
            Ok(Adjustment { warehouse: req.warehouse, sku: req.sku, change, lot: req.lot, reason: req.reason })
        }
        _ => Err(ApiError::validation_many(errors)),
    }
}

/// Most lines of one bulk adjustment: a large stock take, still one bounded transaction.
pub const BULK_LINES_MAX: usize = 10_000;

/// Largest bulk request body: 10,000 lines of about 150 bytes.
pub const BULK_BODY_BYTES_MAX: usize = 4 * 1024 * 1024;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"lines": [{"warehouse": "BER-1", "sku": "TSHIRT-RED-M", "counted": 42},
                                    {"warehouse": "BER-1", "sku": "MUG", "delta": -2, "reason": "damaged"}]}))]
pub struct CreateBulkAdjustments {
    /// 1 to 10,000 adjustments, each shaped like `POST /v1/adjustments`.
    #[schema(value_type = Vec<CreateAdjustment>)]
    pub lines: Vec<serde_json::Value>,
}

#[derive(Debug, serde::Serialize, ToSchema)]
pub struct BulkLineResult {
    pub line: usize,
    /// 201 applied; otherwise the status the line would have had on its own.
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adjustment: Option<AdjustmentView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<crate::error::Problem>,
}

#[derive(Debug, serde::Serialize, ToSchema)]
pub struct BulkResult {
    pub applied: usize,
    pub refused: usize,
    pub results: Vec<BulkLineResult>,
}

/// Applies up to 10,000 adjustments in one transaction and answers per line: each line is
/// applied or refused on its own (a refused line changes nothing), like `POST /v1/adjustments`.
#[utoipa::path(post, path = "/v1/bulk/adjustments", tag = "stock", request_body = CreateBulkAdjustments,
    params(("Idempotency-Key" = Option<String>, Header)),
    responses((status = 200, body = BulkResult), (status = 413, body = crate::error::Problem), (status = 422, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn bulk_adjustments(
    _query: NoQuery,
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    body: ApiJson<CreateBulkAdjustments>,
) -> Result<Response, ApiError> {
    let lines = body.value.lines;
    if lines.is_empty() || lines.len() > BULK_LINES_MAX {
        return Err(ApiError::validation("lines", format!("must have 1 to {BULK_LINES_MAX} lines")));
    }
    // Lines that do not parse are answered as refused; the rest are applied.
    let parsed: Vec<Result<Adjustment, ApiError>> = lines
        .into_iter()
        .enumerate()
        .map(|(i, value)| {
            let raw = serde_json::to_vec(&value).unwrap_or_default();
            crate::extract::parse_json::<CreateAdjustment>(&raw)
                .map_err(|e| prefix_fields(e, i))
                .and_then(|req| adjustment_command(req, &format!("lines[{i}].")))
        })
        .collect();
    run_write(&state, &principal, "POST /v1/bulk/adjustments", &headers, &body.raw, move |tx, now| {
        let parsed = parsed.clone();
        Box::pin(async move {
            let valid: Vec<Adjustment> = parsed.iter().filter_map(|p| p.as_ref().ok().cloned()).collect();
            let mut applied = warehouse::adjustment::adjust_many(tx, valid, now).await?.into_iter();
            let mut results = Vec::with_capacity(parsed.len());
            for (line, p) in parsed.into_iter().enumerate() {
                let outcome = match p {
                    Err(e) => Err(e),
                    Ok(_) => applied
                        .next()
                        .ok_or_else(ApiError::internal)?
                        .map_err(|e| prefix_fields(ApiError::from(e), line)),
                };
                results.push(match outcome {
                    Ok(view) => BulkLineResult { line, status: 201, adjustment: Some(view), problem: None },
                    Err(e) if e.is_refusal() => BulkLineResult {
                        line,
                        status: e.status.as_u16(),
                        adjustment: None,
                        problem: Some(e.to_problem()),
                    },
                    Err(e) => return Err(e),
                });
            }
            let applied = results.iter().filter(|r| r.status == 201).count();
            let result = BulkResult { applied, refused: results.len() - applied, results };
            Ok(Answer::json(StatusCode::OK, &result))
        })
    })
    .await
}

fn prefix_fields(mut error: ApiError, line: usize) -> ApiError {
    for e in &mut error.errors {
        e.field = if e.field == "body" { format!("lines[{line}]") } else { format!("lines[{line}].{}", e.field) };
    }
    error
}

// ---------------------------------------------------------------- transfers

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferLineRequest {
    #[schema(value_type = String)]
    pub sku: SkuCode,
    #[schema(value_type = i64, minimum = 1, maximum = 1000000000)]
    pub quantity: Quantity,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"from": "BER-1", "to": "MUC-1", "lines": [{"sku": "TSHIRT-RED-M", "quantity": 5}]}))]
pub struct CreateTransfer {
    #[schema(value_type = String)]
    pub from: WarehouseCode,
    #[schema(value_type = String)]
    pub to: WarehouseCode,
    pub reference: Option<String>,
    pub lines: Vec<TransferLineRequest>,
    /// Two steps: the units leave `from` now, are `incoming` at `to` meanwhile, and arrive
    /// with `POST /v1/transfers/{id}/receive`. Default false: one transaction.
    #[serde(default)]
    pub in_transit: bool,
}

/// Moves available stock between warehouses: in one transaction (`received`), or with
/// `in_transit` out of `from` now and into `to` when received.
#[utoipa::path(post, path = "/v1/transfers", tag = "stock", request_body = CreateTransfer,
    params(("Idempotency-Key" = Option<String>, Header)),
    responses((status = 201, body = TransferView), (status = 409, body = crate::error::Problem), (status = 422, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn transfer_create(
    _query: NoQuery,
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    body: ApiJson<CreateTransfer>,
) -> Result<Response, ApiError> {
    let req = body.value;
    let mut errors = Vec::new();
    check_lines(&req.lines, &mut errors);
    if let Some(r) = &req.reference {
        check_text("reference", r, true, &mut errors);
    }
    if req.lines.len() > LINES_PER_REQUEST_MAX {
        // Too many lines to look up: the form's errors (among them `lines`) alone.
        return Err(ApiError::validation_many(errors));
    }
    let transfer = Transfer {
        from: req.from,
        to: req.to,
        reference: req.reference,
        lines: req.lines.into_iter().map(|l| TransferLine { sku: l.sku, quantity: l.quantity }).collect(),
        in_transit: req.in_transit,
    };
    let checked = transfer.clone();
    crate::extract::finish_all(&state, errors, move |tx| {
        Box::pin(async move { warehouse::transfer::transfer_issues(tx, &checked).await })
    })
    .await?;
    run_write(&state, &principal, "POST /v1/transfers", &headers, &body.raw, move |tx, now| {
        let transfer = transfer.clone();
        Box::pin(async move {
            let view = warehouse::transfer::transfer(tx, transfer, now).await?;
            Ok(Answer::json(StatusCode::CREATED, &view))
        })
    })
    .await
}

#[derive(Debug, serde::Serialize, ToSchema)]
pub struct TransferPage {
    pub items: Vec<TransferView>,
    pub next: Option<String>,
}

/// Transfers, oldest first.
#[utoipa::path(get, path = "/v1/transfers", tag = "stock",
    params(("from" = Option<String>, Query), ("to" = Option<String>, Query),
           ("status" = Option<String>, Query, description = "`in_transit` or `received`"),
           ("limit" = Option<u32>, Query, description = "1 to 1000 (default 100)"), ("next" = Option<String>, Query)),
    responses((status = 200, body = TransferPage), (status = 422, body = crate::error::Problem)), security(("bearer" = [])))]
pub async fn transfer_list(State(state): State<AppState>, query: QueryMap) -> Result<Json<TransferPage>, ApiError> {
    let mut parse = query.only(&["from", "to", "status", "limit", "next"]);
    let from = parse.code::<WarehouseCode>("from");
    let to = parse.code::<WarehouseCode>("to");
    let status = parse.get("status").map(str::to_owned);
    if let Some(s) = &status
        && !["in_transit", "received"].contains(&s.as_str())
    {
        parse.refuse("status", "must be in_transit or received");
    }
    let page = parse.page();
    parse.require_warehouse(state.db.reader(), "from", from.as_ref()).await?;
    parse.require_warehouse(state.db.reader(), "to", to.as_ref()).await?;
    parse.finish()?;
    let filter = warehouse::transfer::TransferFilter {
        from: from.map(|w| w.to_string()),
        to: to.map(|w| w.to_string()),
        status,
    };
    let rows =
        warehouse::transfer::transfers_list(state.db.reader(), &filter, page.after.as_deref(), page.limit).await?;
    let page = kernel::Page::from_rows(rows, page.limit, |t| t.id.clone());
    Ok(Json(TransferPage { items: page.items, next: page.next }))
}

/// Reads a transfer.
#[utoipa::path(get, path = "/v1/transfers/{id}", tag = "stock", params(("id" = String, Path)),
    responses((status = 200, body = TransferView), (status = 404, body = crate::error::Problem)), security(("bearer" = [])))]
pub async fn transfer_get(
    _query: NoQuery,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<TransferView>, ApiError> {
    let mut conn = state.db.reader().acquire().await.map_err(store::StoreError::from)?;
    Ok(Json(warehouse::transfer::transfer_get(&mut conn, &id).await?))
}

/// Receives a transfer in transit: its units go into the destination's stock (lots kept, bins
/// by putaway), each a `transfer_in` movement.
#[utoipa::path(post, path = "/v1/transfers/{id}/receive", tag = "stock",
    params(("id" = String, Path), ("Idempotency-Key" = Option<String>, Header)),
    responses((status = 200, body = TransferView, description = "The received transfer"),
              (status = 404, body = crate::error::Problem, description = "No such transfer"),
              (status = 409, body = crate::error::Problem, description = "Not in transit (`invalid_state`), or the destination would overflow (`capacity_exceeded`)")),
    security(("bearer" = [])))]
pub async fn transfer_receive(
    _query: NoQuery,
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let key = id.clone().into_bytes();
    run_write(&state, &principal, "POST /v1/transfers/{id}/receive", &headers, &key, move |tx, now| {
        let id = id.clone();
        Box::pin(async move {
            let view = warehouse::transfer::transfer_receive(tx, &id, now).await?;
            Ok(Answer::json(StatusCode::OK, &view))
        })
    })
    .await
}

#[derive(Debug, serde::Serialize, ToSchema)]
pub struct ReceiptPage {
    pub items: Vec<ReceiptView>,
    pub next: Option<String>,
}

/// Receipts, oldest first (those of the API; rows an import applies in bulk are not receipts).
#[utoipa::path(get, path = "/v1/receipts", tag = "stock",
    params(("warehouse" = Option<String>, Query),
           ("limit" = Option<u32>, Query, description = "1 to 1000 (default 100)"), ("next" = Option<String>, Query)),
    responses((status = 200, body = ReceiptPage), (status = 422, body = crate::error::Problem)), security(("bearer" = [])))]
pub async fn receipt_list(State(state): State<AppState>, query: QueryMap) -> Result<Json<ReceiptPage>, ApiError> {
    let mut parse = query.only(&["warehouse", "limit", "next"]);
    let warehouse = parse.code::<WarehouseCode>("warehouse");
    let page = parse.page();
    parse.require_warehouse(state.db.reader(), "warehouse", warehouse.as_ref()).await?;
    parse.finish()?;
    let rows = warehouse::receipt::receipts_list(
        state.db.reader(),
        warehouse.as_ref().map(|w| w.as_str()),
        page.after.as_deref(),
        page.limit,
    )
    .await?;
    let page = kernel::Page::from_rows(rows, page.limit, |r| r.id.clone());
    Ok(Json(ReceiptPage { items: page.items, next: page.next }))
}

/// Reads a receipt as it was answered.
#[utoipa::path(get, path = "/v1/receipts/{id}", tag = "stock", params(("id" = String, Path)),
    responses((status = 200, body = ReceiptView), (status = 404, body = crate::error::Problem)), security(("bearer" = [])))]
pub async fn receipt_get(
    _query: NoQuery,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ReceiptView>, ApiError> {
    Ok(Json(warehouse::receipt::receipt_get(state.db.reader(), &id).await?))
}

// ---------------------------------------------------------------- stock

/// Stock of one SKU across warehouses; totals count active warehouses only.
#[utoipa::path(get, path = "/v1/stock/{sku}", tag = "stock", params(("sku" = String, Path)),
    responses((status = 200, body = StockView), (status = 404, body = crate::error::Problem)), security(("bearer" = [])))]
pub async fn stock_one(
    _query: NoQuery,
    State(state): State<AppState>,
    Path(sku): Path<String>,
) -> Result<Json<StockView>, ApiError> {
    Ok(Json(warehouse::stock::stock_view(state.db.reader(), &path_sku(&sku)?, state.clock.now()).await?))
}

#[derive(Debug, serde::Serialize, ToSchema)]
pub struct StockBatch {
    pub items: Vec<StockView>,
}

/// Stock of up to 1000 SKUs in one query; unknown SKUs are left out.
#[utoipa::path(get, path = "/v1/stock", tag = "stock",
    params(("skus" = String, Query, description = "Comma-separated SKU codes, 1 to 1000"), ("warehouse" = Option<String>, Query)),
    responses((status = 200, body = StockBatch), (status = 422, body = crate::error::Problem)), security(("bearer" = [])))]
pub async fn stock_batch(State(state): State<AppState>, query: QueryMap) -> Result<Json<StockBatch>, ApiError> {
    let mut query = query.only(&["skus", "warehouse"]);
    let mut skus = Vec::new();
    match query.get("skus").map(|raw| raw.split(',').filter(|s| !s.is_empty()).map(str::to_owned).collect::<Vec<_>>()) {
        None => query.refuse("skus", "is required"),
        Some(parts) if parts.is_empty() || parts.len() > STOCK_BATCH_SKUS_MAX => {
            query.refuse("skus", format!("must list 1 to {STOCK_BATCH_SKUS_MAX} SKUs"))
        }
        Some(parts) => {
            // Every bad code in one message, so the field is named once.
            let mut bad = Vec::new();
            for part in parts {
                match SkuCode::parse(part.clone()) {
                    Ok(sku) => skus.push(sku),
                    Err(e) => bad.push(format!("{part}: {e}")),
                }
            }
            if !bad.is_empty() {
                query.refuse("skus", bad.join("; "));
            }
        }
    }
    let warehouse = query.code::<WarehouseCode>("warehouse");
    query.require_warehouse(state.db.reader(), "warehouse", warehouse.as_ref()).await?;
    query.finish()?;
    let items =
        warehouse::stock::stock_views_at(state.db.reader(), &skus, warehouse.as_ref(), state.clock.now()).await?;
    Ok(Json(StockBatch { items }))
}
