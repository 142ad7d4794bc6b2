//! Channels, shipping rates, products, prices and the availability view.

use crate::AppState;
use crate::auth::Principal;
use crate::error::{ApiError, FieldError};
use crate::extract::{ApiJson, NoQuery, QueryMap, check_text, explicit, finish, problem};
use crate::idempotency::{Answer, run_write};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post, put};
use axum::{Extension, Json, Router};
use catalog::availability::AvailabilityAnswer;
use catalog::channel::{Channel, ChannelPatch, NewChannel, NewShippingRate, ShippingRates, Sourcing};
use catalog::price::{NewPrice, Price};
use catalog::product::{NewProduct, NewVariant, Product, ProductPatch, VARIANTS_MAX};
use kernel::limits::{RESERVATION_TTL_SECONDS_MAX, STOCK_BATCH_SKUS_MAX};
use kernel::{ChannelCode, Currency, ProductHandle, SkuCode, WarehouseCode};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/channels", post(channel_create).get(channel_list))
        .route("/channels/{code}", get(channel_get).patch(channel_patch))
        .route("/warehouses/{code}/shipping-rates", put(shipping_rates_put).get(shipping_rates_get))
        .route("/products", post(product_create).get(product_list))
        .route("/products/{handle}", get(product_get).patch(product_patch))
        .route("/prices/{sku}", put(price_put).get(price_get))
        .route("/prices/{sku}/history", get(price_history))
        .route("/availability", get(availability))
        .route("/availability/status", get(availability_status))
        .route("/search", get(search))
}

fn check_country(field: &str, value: &str, errors: &mut Vec<FieldError>) {
    if !(value.len() == 2 && value.bytes().all(|b| b.is_ascii_uppercase())) {
        problem(errors, field, "must be an ISO 3166-1 alpha-2 country code in capitals, e.g. DE");
    }
}

fn check_ttl(field: &str, value: i64, min: i64, errors: &mut Vec<FieldError>) {
    if !(min..=RESERVATION_TTL_SECONDS_MAX).contains(&value) {
        problem(errors, field, format!("must be between {min} and {RESERVATION_TTL_SECONDS_MAX}"));
    }
}

fn amount(field: &str, currency: &Currency, raw: &str, errors: &mut Vec<FieldError>) -> i64 {
    currency.parse_amount(raw).unwrap_or_else(|e| {
        problem(errors, field, format!("{e} ({currency})"));
        0
    })
}

fn path_channel(raw: &str) -> Result<ChannelCode, ApiError> {
    ChannelCode::parse(raw).map_err(|_| ApiError::not_found(format!("channel {raw} does not exist")))
}

fn path_handle(raw: &str) -> Result<ProductHandle, ApiError> {
    ProductHandle::parse(raw).map_err(|_| ApiError::not_found(format!("product {raw} does not exist")))
}

fn path_sku(raw: &str) -> Result<SkuCode, ApiError> {
    SkuCode::parse(raw).map_err(|_| ApiError::not_found(format!("item {raw} does not exist")))
}

fn codes<C: std::str::FromStr<Err = kernel::CodeError>>(
    field: &str,
    raw: &[String],
    errors: &mut Vec<FieldError>,
) -> Vec<C> {
    raw.iter()
        .enumerate()
        .filter_map(|(i, code)| match code.parse::<C>() {
            Ok(c) => Some(c),
            Err(e) => {
                problem(errors, format!("{field}[{i}]"), e.to_string());
                None
            }
        })
        .collect()
}

// ---------------------------------------------------------------- channels

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"code": "web-de", "name": "Web DE", "currency": "EUR", "country": "DE",
    "warehouses": ["BER-1", "MUC-1"], "sourcing": "priority", "split_penalty": "4.90",
    "cart_hold_ttl_seconds": 0, "checkout_hold_ttl_seconds": 900}))]
pub struct CreateChannel {
    #[schema(value_type = String)]
    pub code: ChannelCode,
    pub name: String,
    /// ISO 4217, e.g. `EUR`.
    pub currency: String,
    /// ISO 3166-1 alpha-2, e.g. `DE`.
    pub country: String,
    /// Warehouse codes, most preferred first.
    pub warehouses: Vec<String>,
    #[serde(default = "default_sourcing")]
    pub sourcing: Sourcing,
    /// In the channel's currency; default `0`.
    pub split_penalty: Option<String>,
    /// 0 (default): carts hold nothing until checkout.
    #[serde(default)]
    pub cart_hold_ttl_seconds: i64,
    /// Default 900.
    #[serde(default = "default_checkout_ttl")]
    pub checkout_hold_ttl_seconds: i64,
}

fn default_sourcing() -> Sourcing {
    Sourcing::Priority
}

fn default_checkout_ttl() -> i64 {
    kernel::limits::RESERVATION_TTL_SECONDS_DEFAULT
}

/// Creates a channel.
#[utoipa::path(post, path = "/v1/channels", tag = "channels", request_body = CreateChannel,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer for repeats")),
    responses((status = 201, body = Channel, description = "Created"),
              (status = 409, body = crate::error::Problem, description = "Duplicate code"),
              (status = 422, body = crate::error::Problem, description = "Invalid: unknown or empty warehouses, bad currency, ...")),
    security(("bearer" = [])))]
pub async fn channel_create(
    State(state): State<AppState>,
    _query: NoQuery,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    body: ApiJson<CreateChannel>,
) -> Result<Response, ApiError> {
    let req = body.value;
    let mut errors = Vec::new();
    check_text("name", &req.name, true, &mut errors);
    let currency = Currency::parse(&req.currency).map_err(|e| problem(&mut errors, "currency", e.to_string())).ok();
    check_country("country", &req.country, &mut errors);
    let warehouses: Vec<WarehouseCode> = codes("warehouses", &req.warehouses, &mut errors);
    if req.warehouses.is_empty() {
        problem(&mut errors, "warehouses", "must list at least one warehouse");
    }
    let split_penalty_minor = match (&currency, &req.split_penalty) {
        (Some(c), Some(raw)) => amount("split_penalty", c, raw, &mut errors),
        _ => 0,
    };
    check_ttl("cart_hold_ttl_seconds", req.cart_hold_ttl_seconds, 0, &mut errors);
    check_ttl("checkout_hold_ttl_seconds", req.checkout_hold_ttl_seconds, 1, &mut errors);
    finish(errors)?;
    let new = NewChannel {
        code: req.code,
        name: req.name,
        currency: currency.expect("checked above"),
        country: req.country,
        warehouses,
        sourcing: req.sourcing,
        split_penalty_minor,
        cart_hold_ttl_seconds: req.cart_hold_ttl_seconds,
        checkout_hold_ttl_seconds: req.checkout_hold_ttl_seconds,
    };
    run_write(&state, &principal, "POST /v1/channels", &headers, &body.raw, move |tx, now| {
        let new = new.clone();
        Box::pin(async move {
            let channel = catalog::channel::channel_create(tx, new, now).await?;
            Ok(Answer::json(StatusCode::CREATED, &channel.view()))
        })
    })
    .await
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChannelPage {
    pub items: Vec<Channel>,
    pub next: Option<String>,
}

/// Lists channels by code.
#[utoipa::path(get, path = "/v1/channels", tag = "channels",
    params(("limit" = Option<u32>, Query, description = "Page size, 1 to 1000 (default 100)"),
           ("next" = Option<String>, Query, description = "Cursor from the previous page")),
    responses((status = 200, body = ChannelPage, description = "A page of channels"),
              (status = 422, body = crate::error::Problem, description = "Bad parameter")),
    security(("bearer" = [])))]
pub async fn channel_list(State(state): State<AppState>, query: QueryMap) -> Result<Json<ChannelPage>, ApiError> {
    query.only(&["limit", "next"]).finish()?;
    let page = query.page()?;
    let rows = catalog::channel::channels_list(state.db.reader(), page.after.as_deref(), page.limit).await?;
    let page = kernel::Page::from_rows(rows, page.limit, |c| c.code.clone());
    Ok(Json(ChannelPage { items: page.items.iter().map(|c| c.view()).collect(), next: page.next }))
}

/// Reads a channel.
#[utoipa::path(get, path = "/v1/channels/{code}", tag = "channels", params(("code" = String, Path, description = "Channel code")),
    responses((status = 200, body = Channel, description = "The channel"),
              (status = 404, body = crate::error::Problem, description = "No such channel")),
    security(("bearer" = [])))]
pub async fn channel_get(
    State(state): State<AppState>,
    _query: NoQuery,
    Path(code): Path<String>,
) -> Result<Json<Channel>, ApiError> {
    Ok(Json(catalog::channel::channel_get(state.db.reader(), &path_channel(&code)?).await?.view()))
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchChannel {
    #[serde(default, deserialize_with = "explicit")]
    #[schema(value_type = Option<String>)]
    pub name: Option<Option<String>>,
    #[serde(default, deserialize_with = "explicit")]
    #[schema(value_type = Option<String>)]
    pub country: Option<Option<String>>,
    #[serde(default, deserialize_with = "explicit")]
    #[schema(value_type = Option<Vec<String>>)]
    pub warehouses: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "explicit")]
    #[schema(value_type = Option<Sourcing>)]
    pub sourcing: Option<Option<Sourcing>>,
    #[serde(default, deserialize_with = "explicit")]
    #[schema(value_type = Option<String>)]
    pub split_penalty: Option<Option<String>>,
    #[serde(default, deserialize_with = "explicit")]
    #[schema(value_type = Option<i64>)]
    pub cart_hold_ttl_seconds: Option<Option<i64>>,
    #[serde(default, deserialize_with = "explicit")]
    #[schema(value_type = Option<i64>)]
    pub checkout_hold_ttl_seconds: Option<Option<i64>>,
}

/// A required field in a merge patch: absent keeps it, `null` is refused.
fn required<T>(field: &str, value: Option<Option<T>>, errors: &mut Vec<FieldError>) -> Option<T> {
    match value {
        None => None,
        Some(None) => {
            problem(errors, field, "cannot be null: this field has no empty value");
            None
        }
        Some(Some(v)) => Some(v),
    }
}

/// Changes a channel (JSON Merge Patch; the currency is fixed at creation).
#[utoipa::path(patch, path = "/v1/channels/{code}", tag = "channels", params(("code" = String, Path, description = "Channel code")),
    request_body = PatchChannel,
    responses((status = 200, body = Channel, description = "The channel after the change"),
              (status = 404, body = crate::error::Problem, description = "No such channel"),
              (status = 422, body = crate::error::Problem, description = "Invalid field")),
    security(("bearer" = [])))]
pub async fn channel_patch(
    State(state): State<AppState>,
    _query: NoQuery,
    Extension(principal): Extension<Principal>,
    Path(code): Path<String>,
    headers: HeaderMap,
    body: ApiJson<PatchChannel>,
) -> Result<Response, ApiError> {
    let code = path_channel(&code)?;
    let current = catalog::channel::channel_get(state.db.reader(), &code).await?;
    let req = body.value;
    let mut errors = Vec::new();
    let name = required("name", req.name, &mut errors);
    if let Some(name) = &name {
        check_text("name", name, true, &mut errors);
    }
    let country = required("country", req.country, &mut errors);
    if let Some(country) = &country {
        check_country("country", country, &mut errors);
    }
    let warehouses = required("warehouses", req.warehouses, &mut errors).map(|ws| {
        if ws.is_empty() {
            problem(&mut errors, "warehouses", "must list at least one warehouse");
        }
        codes::<WarehouseCode>("warehouses", &ws, &mut errors)
    });
    let sourcing = required("sourcing", req.sourcing, &mut errors);
    let split_penalty_minor = required("split_penalty", req.split_penalty, &mut errors)
        .map(|raw| amount("split_penalty", &current.currency, &raw, &mut errors));
    let cart = required("cart_hold_ttl_seconds", req.cart_hold_ttl_seconds, &mut errors);
    if let Some(v) = cart {
        check_ttl("cart_hold_ttl_seconds", v, 0, &mut errors);
    }
    let checkout = required("checkout_hold_ttl_seconds", req.checkout_hold_ttl_seconds, &mut errors);
    if let Some(v) = checkout {
        check_ttl("checkout_hold_ttl_seconds", v, 1, &mut errors);
    }
    finish(errors)?;
    let patch = ChannelPatch {
        name,
        country,
        warehouses,
        sourcing,
        split_penalty_minor,
        cart_hold_ttl_seconds: cart,
        checkout_hold_ttl_seconds: checkout,
    };
    run_write(&state, &principal, "PATCH /v1/channels/{code}", &headers, &body.raw, move |tx, now| {
        let (code, patch) = (code.clone(), patch.clone());
        Box::pin(async move {
            let channel = catalog::channel::channel_update(tx, &code, patch, now).await?;
            Ok(Answer::json(StatusCode::OK, &channel.view()))
        })
    })
    .await
}

// ---------------------------------------------------------------- shipping rates

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShippingRateInput {
    pub country: String,
    pub currency: String,
    pub base: String,
    /// Per started kilogram.
    pub per_kg: String,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"rates": [{"country": "DE", "currency": "EUR", "base": "4.90", "per_kg": "0.80"}]}))]
pub struct PutShippingRates {
    pub rates: Vec<ShippingRateInput>,
}

/// Replaces what shipments from a warehouse cost, per destination country and currency.
#[utoipa::path(put, path = "/v1/warehouses/{code}/shipping-rates", tag = "channels",
    params(("code" = String, Path, description = "Warehouse code")), request_body = PutShippingRates,
    responses((status = 200, body = ShippingRates, description = "The rates now"),
              (status = 404, body = crate::error::Problem, description = "No such warehouse"),
              (status = 422, body = crate::error::Problem, description = "Invalid rate")),
    security(("bearer" = [])))]
pub async fn shipping_rates_put(
    State(state): State<AppState>,
    _query: NoQuery,
    Extension(principal): Extension<Principal>,
    Path(code): Path<String>,
    headers: HeaderMap,
    body: ApiJson<PutShippingRates>,
) -> Result<Response, ApiError> {
    let warehouse = crate::routes::inventory::path_warehouse(&code)?;
    let mut errors = Vec::new();
    if body.value.rates.len() > catalog::channel::SHIPPING_RATES_MAX {
        problem(&mut errors, "rates", format!("must have at most {} rates", catalog::channel::SHIPPING_RATES_MAX));
    }
    let mut rates = Vec::new();
    for (i, rate) in body.value.rates.iter().enumerate() {
        check_country(&format!("rates[{i}].country"), &rate.country, &mut errors);
        match Currency::parse(&rate.currency) {
            Ok(currency) => {
                let base_minor = amount(&format!("rates[{i}].base"), &currency, &rate.base, &mut errors);
                let per_kg_minor = amount(&format!("rates[{i}].per_kg"), &currency, &rate.per_kg, &mut errors);
                rates.push(NewShippingRate { country: rate.country.clone(), currency, base_minor, per_kg_minor });
            }
            Err(e) => problem(&mut errors, format!("rates[{i}].currency"), e.to_string()),
        }
    }
    finish(errors)?;
    run_write(&state, &principal, "PUT /v1/warehouses/{code}/shipping-rates", &headers, &body.raw, move |tx, now| {
        let (warehouse, rates) = (warehouse.clone(), rates.clone());
        Box::pin(async move {
            let rates = catalog::channel::shipping_rates_set(tx, &warehouse, rates, now).await?;
            Ok(Answer::json(StatusCode::OK, &rates))
        })
    })
    .await
}

/// Reads a warehouse's shipping rates.
#[utoipa::path(get, path = "/v1/warehouses/{code}/shipping-rates", tag = "channels",
    params(("code" = String, Path, description = "Warehouse code")),
    responses((status = 200, body = ShippingRates, description = "The rates (empty when none are set)"),
              (status = 404, body = crate::error::Problem, description = "No such warehouse")),
    security(("bearer" = [])))]
pub async fn shipping_rates_get(
    State(state): State<AppState>,
    _query: NoQuery,
    Path(code): Path<String>,
) -> Result<Json<ShippingRates>, ApiError> {
    let warehouse = crate::routes::inventory::path_warehouse(&code)?;
    warehouse::site::warehouse_get(state.db.reader(), &warehouse).await?;
    let rates = catalog::channel::shipping_rates_get(state.db.reader(), &warehouse).await?;
    Ok(Json(catalog::channel::shipping_rates_view(&warehouse, &rates)))
}

// ---------------------------------------------------------------- products

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VariantInput {
    #[schema(value_type = String)]
    pub sku: String,
    /// Option names to values, e.g. `{"color": "red", "size": "M"}`.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub options: Map<String, Value>,
    #[serde(default)]
    pub backorder: bool,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"handle": "tshirt", "name": "T-shirt", "description": "Organic cotton", "category": "apparel/tops",
    "attributes": {"material": "cotton"}, "variants": [{"sku": "TSHIRT-RED-M", "options": {"color": "red", "size": "M"}, "backorder": false}]}))]
pub struct CreateProduct {
    #[schema(value_type = String)]
    pub handle: ProductHandle,
    pub name: String,
    pub description: Option<String>,
    /// A path such as `apparel/tops`.
    pub category: Option<String>,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub attributes: Map<String, Value>,
    pub variants: Vec<VariantInput>,
}

/// Most attributes or options of one product or variant.
const ATTRIBUTES_MAX: usize = 100;

/// Attribute and option values are flat: strings, numbers or booleans, under short names.
fn check_flat_map(field: &str, map: &Map<String, Value>, errors: &mut Vec<FieldError>) {
    if map.len() > ATTRIBUTES_MAX {
        problem(errors, field, format!("must have at most {ATTRIBUTES_MAX} entries"));
    }
    for (name, value) in map {
        if name.is_empty() || name.chars().count() > 64 {
            problem(errors, format!("{field}.{name}"), "names must be 1 to 64 characters");
        }
        match value {
            Value::String(s) => check_text(&format!("{field}.{name}"), s, false, errors),
            Value::Number(_) | Value::Bool(_) => {}
            _ => problem(errors, format!("{field}.{name}"), "must be a string, a number or a boolean"),
        }
    }
}

fn check_category(field: &str, category: &str, errors: &mut Vec<FieldError>) {
    check_text(field, category, true, errors);
    if category.split('/').any(|part| part.trim().is_empty()) {
        problem(errors, field, "must be a path of non-empty parts separated by '/', e.g. apparel/tops");
    }
}

fn variants(input: &[VariantInput], errors: &mut Vec<FieldError>) -> Vec<NewVariant> {
    if input.len() > VARIANTS_MAX {
        problem(errors, "variants", format!("must have at most {VARIANTS_MAX} variants"));
    }
    input
        .iter()
        .enumerate()
        .filter_map(|(i, v)| {
            check_flat_map(&format!("variants[{i}].options"), &v.options, errors);
            match SkuCode::parse(v.sku.clone()) {
                Ok(sku) => Some(NewVariant { sku, options: v.options.clone(), backorder: v.backorder }),
                Err(e) => {
                    problem(errors, format!("variants[{i}].sku"), e.to_string());
                    None
                }
            }
        })
        .collect()
}

/// Creates a product over existing items.
#[utoipa::path(post, path = "/v1/products", tag = "catalog", request_body = CreateProduct,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer for repeats")),
    responses((status = 201, body = Product, description = "Created"),
              (status = 409, body = crate::error::Problem, description = "Duplicate handle, or a SKU that belongs to another product"),
              (status = 422, body = crate::error::Problem, description = "Invalid field, or a variant SKU that is no item")),
    security(("bearer" = [])))]
pub async fn product_create(
    State(state): State<AppState>,
    _query: NoQuery,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    body: ApiJson<CreateProduct>,
) -> Result<Response, ApiError> {
    let req = body.value;
    let mut errors = Vec::new();
    check_text("name", &req.name, true, &mut errors);
    if let Some(d) = &req.description {
        check_text("description", d, false, &mut errors);
    }
    if let Some(c) = &req.category {
        check_category("category", c, &mut errors);
    }
    check_flat_map("attributes", &req.attributes, &mut errors);
    if req.variants.is_empty() {
        problem(&mut errors, "variants", "must have at least one variant");
    }
    let variants = variants(&req.variants, &mut errors);
    finish(errors)?;
    let new = NewProduct {
        handle: req.handle,
        name: req.name,
        description: req.description,
        category: req.category,
        attributes: req.attributes,
        variants,
    };
    run_write(&state, &principal, "POST /v1/products", &headers, &body.raw, move |tx, now| {
        let new = new.clone();
        Box::pin(async move {
            let product = catalog::product::product_create(tx, new, now).await?;
            Ok(Answer::json(StatusCode::CREATED, &product))
        })
    })
    .await
}

/// Reads a product.
#[utoipa::path(get, path = "/v1/products/{handle}", tag = "catalog", params(("handle" = String, Path, description = "Product handle")),
    responses((status = 200, body = Product, description = "The product"),
              (status = 404, body = crate::error::Problem, description = "No such product")),
    security(("bearer" = [])))]
pub async fn product_get(
    State(state): State<AppState>,
    _query: NoQuery,
    Path(handle): Path<String>,
) -> Result<Json<Product>, ApiError> {
    Ok(Json(catalog::product::product_get(state.db.reader(), &path_handle(&handle)?).await?))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProductPage {
    pub items: Vec<Product>,
    pub next: Option<String>,
}

/// Lists products by handle, optionally of a category and its subcategories.
#[utoipa::path(get, path = "/v1/products", tag = "catalog",
    params(("category" = Option<String>, Query, description = "A category; `apparel` also lists `apparel/tops`"),
           ("limit" = Option<u32>, Query, description = "Page size, 1 to 1000 (default 100)"),
           ("next" = Option<String>, Query, description = "Cursor from the previous page")),
    responses((status = 200, body = ProductPage, description = "A page of products"),
              (status = 422, body = crate::error::Problem, description = "Bad parameter")),
    security(("bearer" = [])))]
pub async fn product_list(State(state): State<AppState>, query: QueryMap) -> Result<Json<ProductPage>, ApiError> {
    query.only(&["category", "limit", "next"]).finish()?;
    let page = query.page()?;
    let rows =
        catalog::product::products_list(state.db.reader(), query.get("category"), page.after.as_deref(), page.limit)
            .await?;
    let page = kernel::Page::from_rows(rows, page.limit, |p| p.handle.clone());
    Ok(Json(ProductPage { items: page.items, next: page.next }))
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchProduct {
    #[serde(default, deserialize_with = "explicit")]
    #[schema(value_type = Option<String>)]
    pub name: Option<Option<String>>,
    /// `null` clears it.
    #[serde(default, deserialize_with = "explicit")]
    #[schema(value_type = Option<String>)]
    pub description: Option<Option<String>>,
    /// `null` clears it.
    #[serde(default, deserialize_with = "explicit")]
    #[schema(value_type = Option<String>)]
    pub category: Option<Option<String>>,
    /// Replaces the attributes; `null` clears them.
    #[serde(default, deserialize_with = "explicit")]
    #[schema(value_type = Option<Object>)]
    pub attributes: Option<Option<Map<String, Value>>>,
    /// Replaces the variants.
    #[serde(default, deserialize_with = "explicit")]
    #[schema(value_type = Option<Vec<VariantInput>>)]
    pub variants: Option<Option<Vec<VariantInput>>>,
}

/// Changes a product (JSON Merge Patch: `null` clears an optional field).
#[utoipa::path(patch, path = "/v1/products/{handle}", tag = "catalog", params(("handle" = String, Path, description = "Product handle")),
    request_body = PatchProduct,
    responses((status = 200, body = Product, description = "The product after the change"),
              (status = 404, body = crate::error::Problem, description = "No such product"),
              (status = 409, body = crate::error::Problem, description = "A SKU that belongs to another product"),
              (status = 422, body = crate::error::Problem, description = "Invalid field")),
    security(("bearer" = [])))]
pub async fn product_patch(
    State(state): State<AppState>,
    _query: NoQuery,
    Extension(principal): Extension<Principal>,
    Path(handle): Path<String>,
    headers: HeaderMap,
    body: ApiJson<PatchProduct>,
) -> Result<Response, ApiError> {
    let handle = path_handle(&handle)?;
    let req = body.value;
    let mut errors = Vec::new();
    let name = required("name", req.name, &mut errors);
    if let Some(n) = &name {
        check_text("name", n, true, &mut errors);
    }
    if let Some(Some(d)) = &req.description {
        check_text("description", d, false, &mut errors);
    }
    if let Some(Some(c)) = &req.category {
        check_category("category", c, &mut errors);
    }
    if let Some(Some(a)) = &req.attributes {
        check_flat_map("attributes", a, &mut errors);
    }
    let new_variants = required("variants", req.variants, &mut errors).map(|vs| {
        if vs.is_empty() {
            problem(&mut errors, "variants", "must have at least one variant");
        }
        variants(&vs, &mut errors)
    });
    finish(errors)?;
    let patch = ProductPatch {
        name,
        description: req.description,
        category: req.category,
        attributes: req.attributes.map(Option::unwrap_or_default),
        variants: new_variants,
    };
    run_write(&state, &principal, "PATCH /v1/products/{handle}", &headers, &body.raw, move |tx, now| {
        let (handle, patch) = (handle.clone(), patch.clone());
        Box::pin(async move {
            let product = catalog::product::product_update(tx, &handle, patch, now).await?;
            Ok(Answer::json(StatusCode::OK, &product))
        })
    })
    .await
}

// ---------------------------------------------------------------- prices

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"channel": "web-de", "amount": "19.99", "compare_at": "24.99"}))]
pub struct PutPrice {
    #[schema(value_type = String)]
    pub channel: String,
    /// In the channel's currency's minor units, e.g. `"19.99"` EUR, `"1999"` JPY.
    pub amount: String,
    pub compare_at: Option<String>,
}

/// Sets a SKU's price in a channel (in the channel's currency); emits `price.changed`.
#[utoipa::path(put, path = "/v1/prices/{sku}", tag = "catalog", params(("sku" = String, Path, description = "SKU of a product variant")),
    request_body = PutPrice,
    responses((status = 200, body = Price, description = "The price now"),
              (status = 404, body = crate::error::Problem, description = "No such item"),
              (status = 422, body = crate::error::Problem, description = "Unknown channel, malformed money, or a SKU of no product")),
    security(("bearer" = [])))]
pub async fn price_put(
    State(state): State<AppState>,
    _query: NoQuery,
    Extension(principal): Extension<Principal>,
    Path(sku): Path<String>,
    headers: HeaderMap,
    body: ApiJson<PutPrice>,
) -> Result<Response, ApiError> {
    let sku = path_sku(&sku)?;
    let req = body.value;
    let mut errors = Vec::new();
    let channel = match ChannelCode::parse(req.channel.clone()) {
        Ok(code) => match catalog::channel::channel_get(state.db.reader(), &code).await {
            Ok(channel) => Some(channel),
            Err(catalog::CatalogError::NotFound { .. }) => {
                problem(&mut errors, "channel", format!("unknown channel {code}"));
                None
            }
            Err(e) => return Err(e.into()),
        },
        Err(e) => {
            problem(&mut errors, "channel", e.to_string());
            None
        }
    };
    let (mut amount_minor, mut compare_at_minor) = (0, None);
    if let Some(channel) = &channel {
        amount_minor = amount("amount", &channel.currency, &req.amount, &mut errors);
        compare_at_minor =
            req.compare_at.as_deref().map(|raw| amount("compare_at", &channel.currency, raw, &mut errors));
    }
    finish(errors)?;
    let channel = channel.expect("checked above");
    let new = NewPrice {
        sku,
        channel: ChannelCode::parse(channel.code.clone()).expect("a stored code"),
        amount_minor,
        compare_at_minor,
    };
    let currency = channel.currency.clone();
    run_write(&state, &principal, "PUT /v1/prices/{sku}", &headers, &body.raw, move |tx, now| {
        let (new, currency) = (new.clone(), currency.clone());
        Box::pin(async move {
            let price = catalog::price::price_set(tx, new, &currency, now).await?;
            Ok(Answer::json(StatusCode::OK, &price))
        })
    })
    .await
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SkuPrices {
    pub sku: String,
    pub prices: Vec<Price>,
}

/// A SKU's price in every channel that has one.
#[utoipa::path(get, path = "/v1/prices/{sku}", tag = "catalog", params(("sku" = String, Path, description = "SKU")),
    responses((status = 200, body = SkuPrices, description = "The prices"),
              (status = 404, body = crate::error::Problem, description = "No such item")),
    security(("bearer" = [])))]
pub async fn price_get(
    State(state): State<AppState>,
    _query: NoQuery,
    Path(sku): Path<String>,
) -> Result<Json<SkuPrices>, ApiError> {
    let sku = path_sku(&sku)?;
    warehouse::item::item_get(state.db.reader(), &sku).await?;
    let prices = catalog::price::prices_of(state.db.reader(), &sku).await?;
    Ok(Json(SkuPrices { sku: sku.to_string(), prices }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PriceHistoryPage {
    pub items: Vec<Price>,
    pub next: Option<String>,
}

/// A SKU's price changes, oldest first.
#[utoipa::path(get, path = "/v1/prices/{sku}/history", tag = "catalog",
    params(("sku" = String, Path, description = "SKU"),
           ("channel" = Option<String>, Query, description = "Only this channel's prices"),
           ("limit" = Option<u32>, Query, description = "Page size, 1 to 1000 (default 100)"),
           ("next" = Option<String>, Query, description = "Cursor from the previous page")),
    responses((status = 200, body = PriceHistoryPage, description = "A page of price changes"),
              (status = 404, body = crate::error::Problem, description = "No such item"),
              (status = 422, body = crate::error::Problem, description = "Bad parameter")),
    security(("bearer" = [])))]
pub async fn price_history(
    State(state): State<AppState>,
    Path(sku): Path<String>,
    query: QueryMap,
) -> Result<Json<PriceHistoryPage>, ApiError> {
    query.only(&["channel", "limit", "next"]).finish()?;
    let sku = path_sku(&sku)?;
    let channel: Option<ChannelCode> = query.code("channel")?;
    let page = query.page()?;
    let after = page.after_seq().map_err(|(f, m)| ApiError::validation(f, m))?;
    warehouse::item::item_get(state.db.reader(), &sku).await?;
    let rows = catalog::price::price_history(state.db.reader(), &sku, channel.as_ref(), after, page.limit).await?;
    let page = kernel::Page::from_rows(rows, page.limit, |(id, _)| id.to_string());
    Ok(Json(PriceHistoryPage { items: page.items.into_iter().map(|(_, p)| p).collect(), next: page.next }))
}

// ---------------------------------------------------------------- availability

/// What a shopper may buy of each SKU in a channel, and at what price.
#[utoipa::path(get, path = "/v1/availability", tag = "catalog",
    params(("channel" = String, Query, description = "Channel code"),
           ("skus" = String, Query, description = "Comma-separated SKUs, 1 to 1000")),
    responses((status = 200, body = AvailabilityAnswer, description = "Availability per SKU; unknown SKUs in `not_found`"),
              (status = 422, body = crate::error::Problem, description = "Unknown channel, malformed or too many SKUs"),
              (status = 503, body = crate::error::Problem, description = "The stock source is not answering and nothing is cached")),
    security(("bearer" = [])))]
pub async fn availability(
    State(state): State<AppState>,
    query: QueryMap,
) -> Result<Json<AvailabilityAnswer>, ApiError> {
    query.only(&["channel", "skus"]).finish()?;
    let mut errors = Vec::new();
    let channel = match query.get("channel") {
        None => {
            problem(&mut errors, "channel", "is required");
            None
        }
        Some(raw) => ChannelCode::parse(raw).map_err(|e| problem(&mut errors, "channel", e.to_string())).ok(),
    };
    let mut skus = Vec::new();
    match query.get("skus") {
        None | Some("") => problem(&mut errors, "skus", "is required: a comma-separated list of SKUs"),
        Some(raw) => {
            let parts: Vec<&str> = raw.split(',').collect();
            if parts.len() > STOCK_BATCH_SKUS_MAX {
                problem(&mut errors, "skus", format!("must list at most {STOCK_BATCH_SKUS_MAX} SKUs"));
            } else {
                for (i, part) in parts.iter().enumerate() {
                    match SkuCode::parse(part.trim()) {
                        Ok(sku) => skus.push(sku),
                        Err(e) => problem(&mut errors, format!("skus[{i}]"), e.to_string()),
                    }
                }
            }
        }
    }
    finish(errors)?;
    let channel = channel.expect("checked above");
    Ok(Json(state.availability.read(&channel, &skus).await?))
}

/// The availability cache's state: entries, follower position, hits, misses, stale answers
/// and repairs since start.
#[utoipa::path(get, path = "/v1/availability/status", tag = "catalog",
    responses((status = 200, body = catalog::availability::ViewStatus, description = "The cache's state")),
    security(("bearer" = [])))]
pub async fn availability_status(
    State(state): State<AppState>,
    query: QueryMap,
) -> Result<Json<catalog::availability::ViewStatus>, ApiError> {
    query.only(&[]).finish()?;
    Ok(Json(state.availability.status()))
}

/// Searches the channel's products: full text over name, category, description and
/// attributes, ranked by relevance, with filters, sorting and pages.
#[utoipa::path(get, path = "/v1/search", tag = "catalog",
    params(("channel" = String, Query, description = "Channel code"),
           ("q" = Option<String>, Query, description = "Words to find (each also as a prefix); none: every product"),
           ("category" = Option<String>, Query, description = "A category; `apparel` also finds `apparel/tops`"),
           ("in_stock" = Option<bool>, Query, description = "`true`: only products that can be bought now"),
           ("min_price" = Option<String>, Query, description = "Lowest `price_from`, in the channel's currency"),
           ("max_price" = Option<String>, Query, description = "Highest `price_from`, in the channel's currency"),
           ("sort" = Option<String>, Query, description = "`relevance` (default; by handle without `q`), `price_asc` or `price_desc` (products with a price only; ties by the handle's first 8 bytes, in the price's direction)"),
           ("limit" = Option<u32>, Query, description = "Page size, 1 to 1000 (default 100)"),
           ("next" = Option<String>, Query, description = "Cursor from the previous page")),
    responses((status = 200, body = catalog::search::SearchPage, description = "A page of products and the index's `as_of_seq`"),
              (status = 422, body = crate::error::Problem, description = "Unknown channel or bad parameter")),
    security(("bearer" = [])))]
pub async fn search(
    State(state): State<AppState>,
    query: QueryMap,
) -> Result<Json<catalog::search::SearchPage>, ApiError> {
    use catalog::search::{QUERY_CHARS_MAX, SEARCH_OFFSET_MAX, SearchQuery, Sort};
    query
        .only(&["channel", "q", "category", "in_stock", "min_price", "max_price", "sort", "limit", "next"])
        .finish()?;
    let mut errors = Vec::new();
    let channel = match query.get("channel").map(ChannelCode::parse) {
        None => {
            problem(&mut errors, "channel", "is required");
            None
        }
        Some(Err(e)) => {
            problem(&mut errors, "channel", e.to_string());
            None
        }
        Some(Ok(code)) => match catalog::channel::channel_get(state.db.reader(), &code).await {
            Ok(channel) => Some((code, channel)),
            Err(catalog::CatalogError::NotFound { .. }) => {
                problem(&mut errors, "channel", format!("unknown channel {code}"));
                None
            }
            Err(e) => return Err(e.into()),
        },
    };
    let text = query.get("q").map(str::to_owned).filter(|q| !q.trim().is_empty());
    if let Some(q) = &text
        && q.chars().count() > QUERY_CHARS_MAX
    {
        problem(&mut errors, "q", format!("must be at most {QUERY_CHARS_MAX} characters"));
    }
    let in_stock = match query.get("in_stock") {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => {
            problem(&mut errors, "in_stock", "must be true or false");
            false
        }
    };
    let sort = match query.get("sort") {
        None => Sort::Relevance,
        Some(raw) => Sort::parse(raw).unwrap_or_else(|| {
            problem(&mut errors, "sort", "must be relevance, price_asc or price_desc");
            Sort::Relevance
        }),
    };
    let (mut min_price_minor, mut max_price_minor) = (None, None);
    if let Some((_, channel)) = &channel {
        min_price_minor = query.get("min_price").map(|raw| amount("min_price", &channel.currency, raw, &mut errors));
        max_price_minor = query.get("max_price").map(|raw| amount("max_price", &channel.currency, raw, &mut errors));
    }
    let page = query.page()?;
    let offset = match &page.after {
        None => 0,
        Some(raw) => raw.parse::<usize>().ok().filter(|o| *o <= SEARCH_OFFSET_MAX).unwrap_or_else(|| {
            problem(&mut errors, "next", "is not a cursor of this search");
            0
        }),
    };
    finish(errors)?;
    let (code, channel) = channel.expect("checked above");
    let search = SearchQuery {
        channel: code,
        text,
        category: query.get("category").map(str::to_owned),
        in_stock,
        min_price_minor,
        max_price_minor,
        sort,
        offset,
        limit: page.limit,
    };
    Ok(Json(state.search.search(&search, &channel.currency).await?))
}
