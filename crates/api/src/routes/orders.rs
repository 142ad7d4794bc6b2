//! Carts, checkout, sourcing plans, orders, payments, promotions and sagas.

use crate::AppState;
use crate::auth::Principal;
use crate::error::{ApiError, FieldError};
use crate::extract::{ApiJson, NoQuery, QueryMap, check_text, explicit, finish, problem};
use crate::idempotency::{Answer, idempotency_key, idempotency_scope, mark_replayed, run_write};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use kernel::limits::QUANTITY_MAX;
use kernel::{ChannelCode, SkuCode};
use order::OrderError;
use order::cart::{Cart, CartRecord, StockFigures};
use order::checkout::{CheckoutBatch, CheckoutRequest, Quote};
use order::lifecycle::{PaymentReport, PaymentStatus};
use order::promotion::{Kind, NewPromotion, PromotionPatch, PromotionView, Target};
use order::record::{Address, Order, OrderFilter, OrderStatus, Partial};
use order::saga::{Saga, SagaFilter, SagaKind, SagaStatus};
use order::sourcing::Plan;
use serde::{Deserialize, Serialize};
use store::batch::IdempotencyKey;
use utoipa::ToSchema;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/carts", post(cart_create))
        .route("/carts/{id}", get(cart_get))
        .route("/carts/{id}/lines", post(cart_line_add))
        .route("/carts/{id}/lines/{sku}", axum::routing::patch(cart_line_patch).delete(cart_line_delete))
        .route("/carts/{id}/preview", post(cart_preview))
        .route("/carts/{id}/checkout", post(cart_checkout))
        .route("/sourcing/plan", post(sourcing_plan))
        .route("/orders", get(order_list))
        .route("/orders/{id}", get(order_get))
        .route("/orders/{id}/payments", post(payment_report))
        .route("/orders/{id}/cancel", post(order_cancel))
        .route("/promotions", post(promotion_create).get(promotion_list))
        .route("/promotions/{code}", get(promotion_get).patch(promotion_patch))
        .route("/sagas", get(saga_list))
        .route("/sagas/{id}", get(saga_get))
}

impl From<OrderError> for ApiError {
    fn from(error: OrderError) -> Self {
        match error {
            OrderError::Refused(refusal) => ApiError::from(refusal),
            OrderError::Unavailable(detail) => ApiError::unavailable(detail),
            OrderError::Executor(e) => ApiError::from(warehouse::WarehouseError::from(e)),
            OrderError::Store(e) => ApiError::from(e),
            OrderError::Warehouse(e) => ApiError::from(e),
            OrderError::Catalog(e) => ApiError::from(e),
        }
    }
}

fn path_cart(raw: &str) -> Result<String, ApiError> {
    order::cart::parse_cart_id(raw).ok_or_else(|| ApiError::not_found(format!("cart {raw} does not exist")))
}

fn path_order(raw: &str) -> Result<String, ApiError> {
    order::record::parse_order_id(raw).ok_or_else(|| ApiError::not_found(format!("order {raw} does not exist")))
}

fn path_sku(raw: &str) -> Result<SkuCode, ApiError> {
    SkuCode::parse(raw).map_err(|_| ApiError::not_found(format!("item {raw} does not exist")))
}

fn check_quantity(field: &str, quantity: i64, errors: &mut Vec<FieldError>) {
    if !(1..=QUANTITY_MAX).contains(&quantity) {
        problem(errors, field, format!("must be an integer from 1 to {QUANTITY_MAX}"));
    }
}

/// A customer reference: 1 to 128 visible characters.
fn check_customer(field: &str, value: &str, errors: &mut Vec<FieldError>) {
    if value.is_empty() || value.len() > 128 || !value.bytes().all(|b| b.is_ascii_graphic()) {
        problem(errors, field, "must be 1 to 128 visible ASCII characters");
    }
}

fn check_address(field: &str, address: &Address, errors: &mut Vec<FieldError>) {
    if !(address.country.len() == 2 && address.country.bytes().all(|b| b.is_ascii_uppercase())) {
        problem(errors, format!("{field}.country"), "must be an ISO 3166-1 alpha-2 country code in capitals, e.g. DE");
    }
    if let Some(code) = &address.postal_code {
        check_text(&format!("{field}.postal_code"), code, true, errors);
    }
    match (address.latitude, address.longitude) {
        (Some(lat), _) if !(-90.0..=90.0).contains(&lat) => {
            problem(errors, format!("{field}.latitude"), "must be from -90 to 90")
        }
        (_, Some(lon)) if !(-180.0..=180.0).contains(&lon) => {
            problem(errors, format!("{field}.longitude"), "must be from -180 to 180")
        }
        (Some(_), None) => problem(errors, format!("{field}.longitude"), "must be given with latitude"),
        (None, Some(_)) => problem(errors, format!("{field}.latitude"), "must be given with longitude"),
        _ => {}
    }
}

fn max_stale_ms(state: &AppState) -> i64 {
    state.orders.max_stale_seconds * 1000
}

/// The cart's stock, in one batched read of the availability view. When the view cannot
/// answer at all, the lines show no figures and `stale: true`; that is never "out of stock".
async fn stock_of(state: &AppState, cart: &CartRecord) -> StockFigures {
    let mut figures = StockFigures { items: Default::default(), max_stale_ms: max_stale_ms(state) };
    let skus: Vec<SkuCode> = cart.lines.iter().filter_map(|(s, _)| SkuCode::parse(s).ok()).collect();
    let Ok(channel) = ChannelCode::parse(&cart.channel) else { return figures };
    if skus.is_empty() {
        return figures;
    }
    match state.availability.read(&channel, &skus).await {
        Ok(answer) => figures.items = answer.items.into_iter().map(|i| (i.sku.clone(), i)).collect(),
        Err(e) => tracing::warn!(error = %e, cart = cart.id, "the availability view could not answer for a cart"),
    }
    figures
}

async fn render(state: &AppState, cart: &CartRecord) -> Result<Cart, ApiError> {
    let stock = stock_of(state, cart).await;
    let offers = {
        let channel = ChannelCode::parse(&cart.channel).map_err(|_| ApiError::internal())?;
        let mut conn = state.db.reader().acquire().await?;
        catalog::price::offers_in(&mut conn, &channel, &cart.skus()).await?
    };
    Ok(cart.view(&offers, &stock, state.clock.now()))
}

// ---------------------------------------------------------------- carts

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"channel": "web-de", "customer": "cust-42"}))]
pub struct CreateCart {
    #[schema(value_type = String)]
    pub channel: String,
    /// The shopper; needed for first-order and per-customer promotions.
    pub customer: Option<String>,
}

/// Creates an empty cart in a channel; its currency is the channel's.
#[utoipa::path(post, path = "/v1/carts", tag = "carts", request_body = CreateCart,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer for repeats")),
    responses((status = 201, body = Cart, description = "Created"),
              (status = 422, body = crate::error::Problem, description = "Unknown channel or bad customer")),
    security(("bearer" = [])))]
pub async fn cart_create(
    State(state): State<AppState>,
    _query: NoQuery,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    body: ApiJson<CreateCart>,
) -> Result<Response, ApiError> {
    let req = body.value;
    let mut errors = Vec::new();
    let channel = ChannelCode::parse(&req.channel).map_err(|e| problem(&mut errors, "channel", e.to_string())).ok();
    if let Some(c) = &req.customer {
        check_customer("customer", c, &mut errors);
    }
    finish(errors)?;
    let channel = channel.expect("checked above");
    let customer = req.customer;
    let id = order::cart::new_cart_id();
    run_write(&state, &principal, "POST /v1/carts", &headers, &body.raw, move |tx, now| {
        let (channel, customer, id) = (channel.clone(), customer.clone(), id.clone());
        Box::pin(async move {
            let cart = order::cart::cart_create(tx, &id, &channel, customer, now).await?;
            let view = cart.view(&Default::default(), &StockFigures::default(), now);
            Ok(Answer::json(StatusCode::CREATED, &view))
        })
    })
    .await
}

/// Reads a cart, with each line's price and availability (one batched read).
#[utoipa::path(get, path = "/v1/carts/{id}", tag = "carts", params(("id" = String, Path)),
    responses((status = 200, body = Cart), (status = 404, body = crate::error::Problem)), security(("bearer" = [])))]
pub async fn cart_get(
    State(state): State<AppState>,
    _query: NoQuery,
    Path(id): Path<String>,
) -> Result<Json<Cart>, ApiError> {
    let cart = order::cart::cart_get(state.db.reader(), &path_cart(&id)?).await?;
    Ok(Json(render(&state, &cart).await?))
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"sku": "TSHIRT-RED-M", "quantity": 2}))]
pub struct AddLine {
    pub sku: String,
    pub quantity: i64,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"quantity": 3}))]
pub struct PatchLine {
    pub quantity: i64,
}

/// Checks a line change against the catalog and the view, then applies it: a SKU with no
/// product or no price in the channel is 422; more than available without backorder is 409.
struct LineChange {
    route: &'static str,
    cart_id: String,
    sku: SkuCode,
    quantity: i64,
    /// Adds to the line instead of setting it.
    add: bool,
}

async fn change_line(
    state: &AppState,
    principal: &Principal,
    headers: &HeaderMap,
    raw: &[u8],
    change: LineChange,
) -> Result<Response, ApiError> {
    let LineChange { route, cart_id, sku, quantity, add } = change;
    let cart = order::cart::cart_get(state.db.reader(), &cart_id).await?;
    if cart.status != "open" {
        return Err(OrderError::invalid_state("cart", &cart.status, "change its lines").into());
    }
    let channel = ChannelCode::parse(&cart.channel).map_err(|_| ApiError::internal())?;
    let offer = {
        let mut conn = state.db.reader().acquire().await?;
        catalog::price::offers_in(&mut conn, &channel, &[sku.to_string()]).await?.remove(sku.as_str())
    };
    let field = if add { "sku" } else { "sku (path)" };
    let offer = match offer {
        None => return Err(ApiError::validation(field, format!("{sku} is not a variant of any product"))),
        Some(o) if o.price_minor.is_none() => {
            return Err(ApiError::validation(field, format!("{sku} has no price in channel {channel}")));
        }
        Some(o) => o,
    };
    let current = cart.lines.iter().find(|(s, _)| s == sku.as_str()).map(|(_, q)| *q);
    if !add && current.is_none() && quantity > 0 {
        return Err(ApiError::not_found(format!("cart {cart_id} has no line {sku}")));
    }
    let wanted = if add { current.unwrap_or(0) + quantity } else { quantity };
    if wanted > 0 && !offer.backorder {
        let mut probe = cart.clone();
        probe.lines = vec![(sku.to_string(), wanted)];
        let stock = stock_of(state, &probe).await;
        let now = state.clock.now();
        // Units this cart soft-holds are its own, not someone else's.
        let own = if cart.live_hold(now).is_some() { cart.held_of(sku.as_str()) } else { 0 };
        if let Some(item) = stock.shown(sku.as_str(), now)
            && item.available + own < wanted
        {
            return Err(OrderError::insufficient(vec![warehouse::ShortLine {
                sku: sku.to_string(),
                warehouse: None,
                requested: wanted,
                available: item.available + own,
                reason: None,
            }])
            .into());
        }
    }
    let response = run_write(state, principal, route, headers, raw, move |tx, now| {
        let (cart_id, sku) = (cart_id.clone(), sku.to_string());
        Box::pin(async move {
            let cart = order::cart::cart_set_line(tx, &cart_id, &sku, quantity, add, now).await?;
            Ok(Answer::json(StatusCode::OK, &serde_json::json!({ "id": cart.id })))
        })
    })
    .await?;
    if !response.status().is_success() {
        return Ok(response);
    }
    let cart = order::cart::cart_get(state.db.reader(), &cart.id).await?;
    Ok(Json(render(state, &cart).await?).into_response())
}

/// Adds a SKU to a cart; a SKU already in it adds to its line.
#[utoipa::path(post, path = "/v1/carts/{id}/lines", tag = "carts", params(("id" = String, Path)), request_body = AddLine,
    responses((status = 200, body = Cart, description = "The cart"),
              (status = 404, body = crate::error::Problem, description = "No such cart"),
              (status = 409, body = crate::error::Problem, description = "More than available (`insufficient_stock`, with `lines`), or the cart was checked out (`invalid_state`)"),
              (status = 422, body = crate::error::Problem, description = "No product or no price in the channel, bad quantity")),
    security(("bearer" = [])))]
pub async fn cart_line_add(
    State(state): State<AppState>,
    _query: NoQuery,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: ApiJson<AddLine>,
) -> Result<Response, ApiError> {
    let id = path_cart(&id)?;
    let mut errors = Vec::new();
    let sku = SkuCode::parse(&body.value.sku).map_err(|e| problem(&mut errors, "sku", e.to_string())).ok();
    check_quantity("quantity", body.value.quantity, &mut errors);
    finish(errors)?;
    let change = LineChange {
        route: "POST /v1/carts/{id}/lines",
        cart_id: id,
        sku: sku.expect("checked"),
        quantity: body.value.quantity,
        add: true,
    };
    change_line(&state, &principal, &headers, &body.raw, change).await
}

/// Sets a line's quantity.
#[utoipa::path(patch, path = "/v1/carts/{id}/lines/{sku}", tag = "carts", params(("id" = String, Path), ("sku" = String, Path)), request_body = PatchLine,
    responses((status = 200, body = Cart, description = "The cart"),
              (status = 404, body = crate::error::Problem, description = "No such cart or line"),
              (status = 409, body = crate::error::Problem, description = "More than available, or the cart was checked out"),
              (status = 422, body = crate::error::Problem, description = "Bad quantity")),
    security(("bearer" = [])))]
pub async fn cart_line_patch(
    State(state): State<AppState>,
    _query: NoQuery,
    Extension(principal): Extension<Principal>,
    Path((id, sku)): Path<(String, String)>,
    headers: HeaderMap,
    body: ApiJson<PatchLine>,
) -> Result<Response, ApiError> {
    let (id, sku) = (path_cart(&id)?, path_sku(&sku)?);
    let mut errors = Vec::new();
    check_quantity("quantity", body.value.quantity, &mut errors);
    finish(errors)?;
    let change = LineChange {
        route: "PATCH /v1/carts/{id}/lines/{sku}",
        cart_id: id,
        sku,
        quantity: body.value.quantity,
        add: false,
    };
    change_line(&state, &principal, &headers, &body.raw, change).await
}

/// Removes a line.
#[utoipa::path(delete, path = "/v1/carts/{id}/lines/{sku}", tag = "carts", params(("id" = String, Path), ("sku" = String, Path)),
    responses((status = 200, body = Cart, description = "The cart"),
              (status = 404, body = crate::error::Problem, description = "No such cart or line"),
              (status = 409, body = crate::error::Problem, description = "The cart was checked out")),
    security(("bearer" = [])))]
pub async fn cart_line_delete(
    State(state): State<AppState>,
    _query: NoQuery,
    Extension(principal): Extension<Principal>,
    Path((id, sku)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (id, sku) = (path_cart(&id)?, path_sku(&sku)?);
    let cart_id = id.clone();
    let response = run_write(&state, &principal, "DELETE /v1/carts/{id}/lines/{sku}", &headers, b"", move |tx, now| {
        let (id, sku) = (id.clone(), sku.to_string());
        Box::pin(async move {
            let cart = order::cart::cart_set_line(tx, &id, &sku, 0, false, now).await?;
            Ok(Answer::json(StatusCode::OK, &serde_json::json!({ "id": cart.id })))
        })
    })
    .await?;
    if !response.status().is_success() {
        return Ok(response);
    }
    let cart = order::cart::cart_get(state.db.reader(), &cart_id).await?;
    Ok(Json(render(&state, &cart).await?).into_response())
}

// ---------------------------------------------------------------- preview and checkout

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LinePartial {
    pub sku: String,
    pub partial: Partial,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"shipping_address": {"country": "DE", "postal_code": "10115", "latitude": 52.53, "longitude": 13.38},
    "partial": "reject", "promotion_codes": ["SUMMER10"]}))]
pub struct CheckoutBody {
    pub shipping_address: Address,
    #[serde(default)]
    pub partial: Partial,
    #[serde(default)]
    pub lines: Vec<LinePartial>,
    #[serde(default)]
    pub promotion_codes: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"shipping_address": {"country": "DE"}, "promotion_codes": ["SUMMER10"]}))]
pub struct PreviewBody {
    pub shipping_address: Address,
    #[serde(default)]
    pub partial: Partial,
    #[serde(default)]
    pub lines: Vec<LinePartial>,
    #[serde(default)]
    pub promotion_codes: Vec<String>,
}

fn checkout_request(
    cart_id: String,
    address: Address,
    partial: Partial,
    lines: &[LinePartial],
    codes: Vec<String>,
) -> Result<CheckoutRequest, ApiError> {
    let mut errors = Vec::new();
    check_address("shipping_address", &address, &mut errors);
    for (i, code) in codes.iter().enumerate() {
        check_text(&format!("promotion_codes[{i}]"), code, true, &mut errors);
    }
    finish(errors)?;
    Ok(CheckoutRequest {
        cart_id,
        address,
        partial,
        line_partials: lines.iter().map(|l| (l.sku.clone(), l.partial)).collect(),
        promotion_codes: codes,
    })
}

/// What a checkout of the cart would make now: lines, shipments, promotions and totals.
/// Changes nothing.
#[utoipa::path(post, path = "/v1/carts/{id}/preview", tag = "carts", params(("id" = String, Path)), request_body = PreviewBody,
    responses((status = 200, body = Quote, description = "The plan"),
              (status = 404, body = crate::error::Problem, description = "No such cart"),
              (status = 409, body = crate::error::Problem, description = "A `reject` line is short (`insufficient_stock`), or the cart was checked out"),
              (status = 422, body = crate::error::Problem, description = "Unknown, expired or ineligible promotion code, bad address, empty cart")),
    security(("bearer" = [])))]
pub async fn cart_preview(
    State(state): State<AppState>,
    _query: NoQuery,
    Path(id): Path<String>,
    body: ApiJson<PreviewBody>,
) -> Result<Json<Quote>, ApiError> {
    let id = path_cart(&id)?;
    let b = body.value;
    let request = checkout_request(id, b.shipping_address, b.partial, &b.lines, b.promotion_codes)?;
    let now = state.clock.now();
    let prepared = order::checkout::prepare(state.db.reader(), request, now).await?;
    Ok(Json(order::checkout::preview(state.db.reader(), &prepared, now).await?))
}

/// Places an order from the cart: the order, its stock holds and promotion uses commit in
/// one transaction. `Idempotency-Key` is required; a retry answers the first order.
#[utoipa::path(post, path = "/v1/carts/{id}/checkout", tag = "carts", params(("id" = String, Path),
        ("Idempotency-Key" = String, Header, description = "Required: a retried checkout answers the first order")),
    request_body = CheckoutBody,
    responses((status = 201, body = Order, description = "The order, `awaiting_payment`"),
              (status = 404, body = crate::error::Problem, description = "No such cart"),
              (status = 409, body = crate::error::Problem, description = "`insufficient_stock` (with `lines`), a promotion's uses all taken (`conflict`), the cart checked out or changed"),
              (status = 422, body = crate::error::Problem, description = "No Idempotency-Key, bad promotion code, empty cart, bad address"),
              (status = 503, body = crate::error::Problem, description = "Overloaded or shutting down; nothing was changed")),
    security(("bearer" = [])))]
pub async fn cart_checkout(
    State(state): State<AppState>,
    _query: NoQuery,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: ApiJson<CheckoutBody>,
) -> Result<Response, ApiError> {
    let id = path_cart(&id)?;
    let Some(key) = idempotency_key(&headers)? else {
        return Err(ApiError::validation("Idempotency-Key", "is required for a checkout"));
    };
    let key = IdempotencyKey {
        scope: idempotency_scope("POST /v1/carts/{id}/checkout", &principal),
        key: format!("{id} {key}"),
        fingerprint: store::idempotency::fingerprint(&body.raw),
    };
    // A retry of a checkout that went through finds its cart checked out: answer the first
    // order before checking the cart again.
    if let Some(answer) = store::batch::stored_answer::<CheckoutBatch>(state.db.reader(), &key).await? {
        let mut response = match answer {
            Ok(order) => (StatusCode::CREATED, Json(order)).into_response(),
            Err(e) => ApiError::from(e).into_response(),
        };
        mark_replayed(&mut response);
        return Ok(response);
    }
    let b = body.value;
    let request = checkout_request(id, b.shipping_address, b.partial, &b.lines, b.promotion_codes)?;
    let prepared = order::checkout::prepare(state.db.reader(), request, state.clock.now()).await?;
    let once = state.orders.checkouts.checkout_once(prepared, key).await;
    let mut response = match once.answer {
        Ok(order) => (StatusCode::CREATED, Json(order)).into_response(),
        Err(error) => ApiError::from(error).into_response(),
    };
    if once.replayed {
        mark_replayed(&mut response);
    }
    Ok(response)
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanLine {
    pub sku: String,
    pub quantity: i64,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"channel": "web-de", "shipping_address": {"country": "DE", "latitude": 52.53, "longitude": 13.38},
    "lines": [{"sku": "TSHIRT-RED-M", "quantity": 2}]}))]
pub struct PlanBody {
    pub channel: String,
    pub shipping_address: Address,
    pub lines: Vec<PlanLine>,
}

/// The sourcing plan checkout would make, with its explanation. Changes nothing.
#[utoipa::path(post, path = "/v1/sourcing/plan", tag = "orders", request_body = PlanBody,
    responses((status = 200, body = Plan, description = "The plan, its short lines and why it won"),
              (status = 422, body = crate::error::Problem, description = "Unknown channel or SKU, bad quantity or address")),
    security(("bearer" = [])))]
pub async fn sourcing_plan(
    State(state): State<AppState>,
    _query: NoQuery,
    body: ApiJson<PlanBody>,
) -> Result<Json<Plan>, ApiError> {
    let b = body.value;
    let mut errors = Vec::new();
    let channel = ChannelCode::parse(&b.channel).map_err(|e| problem(&mut errors, "channel", e.to_string())).ok();
    check_address("shipping_address", &b.shipping_address, &mut errors);
    if b.lines.is_empty() {
        problem(&mut errors, "lines", "must have at least one line");
    }
    if b.lines.len() > order::cart::CART_LINES_MAX {
        problem(&mut errors, "lines", format!("at most {} lines", order::cart::CART_LINES_MAX));
    }
    let mut lines: Vec<(String, i64)> = Vec::new();
    for (i, l) in b.lines.iter().enumerate() {
        if let Err(e) = SkuCode::parse(&l.sku) {
            problem(&mut errors, format!("lines[{i}].sku"), e.to_string());
        }
        check_quantity(&format!("lines[{i}].quantity"), l.quantity, &mut errors);
        // Lines of one SKU are summed, as a cart sums them.
        match lines.iter_mut().find(|(s, _)| *s == l.sku) {
            Some((_, q)) => *q = q.saturating_add(l.quantity),
            None => lines.push((l.sku.clone(), l.quantity)),
        }
    }
    finish(errors)?;
    let plan = order::checkout::plan_dry_run(
        state.db.reader(),
        &channel.expect("checked"),
        &b.shipping_address,
        &lines,
        state.clock.now(),
    )
    .await?;
    Ok(Json(plan))
}

// ---------------------------------------------------------------- orders

#[derive(Debug, Serialize, ToSchema)]
pub struct OrderPage {
    pub items: Vec<Order>,
    pub next: Option<String>,
}

/// Lists orders, newest first.
#[utoipa::path(get, path = "/v1/orders", tag = "orders",
    params(("customer" = Option<String>, Query), ("status" = Option<OrderStatus>, Query),
           ("limit" = Option<u32>, Query, description = "1 to 1000 (default 100)"), ("next" = Option<String>, Query)),
    responses((status = 200, body = OrderPage), (status = 422, body = crate::error::Problem)), security(("bearer" = [])))]
pub async fn order_list(State(state): State<AppState>, query: QueryMap) -> Result<Json<OrderPage>, ApiError> {
    query.only(&["customer", "status", "limit", "next"]).finish()?;
    let page = query.page()?;
    let mut errors = Vec::new();
    let status = query.get("status").and_then(|s| {
        OrderStatus::parse(s).or_else(|| {
            problem(&mut errors, "status", "must be awaiting_payment, paid, fulfilled, delivered or cancelled");
            None
        })
    });
    finish(errors)?;
    let filter = OrderFilter { customer: query.get("customer").map(str::to_owned), status };
    let rows = order::record::orders_list(state.db.reader(), &filter, page.after.as_deref(), page.limit).await?;
    let page = kernel::Page::from_rows(rows, page.limit, |o| o.id.clone());
    Ok(Json(OrderPage { items: page.items, next: page.next }))
}

/// Reads an order: lines with allocations, fulfilments, the sourcing plan, payments, totals.
#[utoipa::path(get, path = "/v1/orders/{id}", tag = "orders", params(("id" = String, Path)),
    responses((status = 200, body = Order), (status = 404, body = crate::error::Problem)), security(("bearer" = [])))]
pub async fn order_get(
    State(state): State<AppState>,
    _query: NoQuery,
    Path(id): Path<String>,
) -> Result<Json<Order>, ApiError> {
    Ok(Json(order::record::order_get(state.db.reader(), &path_order(&id)?).await?))
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"provider": "stripe", "reference": "pi_123", "amount": "39.98", "status": "captured"}))]
pub struct ReportPayment {
    pub provider: String,
    pub reference: String,
    /// In the order's currency.
    pub amount: String,
    pub status: PaymentStatus,
    /// If given, must be the order's currency.
    pub currency: Option<String>,
}

/// Records a payment event reported by the payment integration; idempotent by `(provider,
/// reference, status)`. Once authorized or captured amounts cover the total, the order is
/// paid: holds confirmed, fulfilments requested, in one transaction. A failed payment
/// cancels an order awaiting payment.
#[utoipa::path(post, path = "/v1/orders/{id}/payments", tag = "orders", params(("id" = String, Path)), request_body = ReportPayment,
    responses((status = 200, body = Order, description = "The order"),
              (status = 404, body = crate::error::Problem, description = "No such order"),
              (status = 409, body = crate::error::Problem, description = "Paying a cancelled or paid order (`invalid_state`), the same payment reported with another amount (`conflict`)"),
              (status = 422, body = crate::error::Problem, description = "Wrong currency, an amount above what is still to pay, bad fields")),
    security(("bearer" = [])))]
pub async fn payment_report(
    State(state): State<AppState>,
    _query: NoQuery,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: ApiJson<ReportPayment>,
) -> Result<Response, ApiError> {
    let id = path_order(&id)?;
    let req = body.value;
    let mut errors = Vec::new();
    check_text("provider", &req.provider, true, &mut errors);
    check_text("reference", &req.reference, true, &mut errors);
    let order = order::record::order_get(state.db.reader(), &id).await?;
    let currency = kernel::Currency::parse(&order.currency).map_err(|_| ApiError::internal())?;
    if let Some(c) = &req.currency
        && c != &order.currency
    {
        problem(&mut errors, "currency", format!("the order is in {}, not {c}", order.currency));
    }
    let amount = currency
        .parse_amount(&req.amount)
        .map_err(|e| problem(&mut errors, "amount", format!("{e} ({currency})")))
        .ok();
    finish(errors)?;
    let report = PaymentReport {
        provider: req.provider,
        reference: req.reference,
        status: req.status,
        amount_minor: amount.expect("checked"),
    };
    run_write(&state, &principal, "POST /v1/orders/{id}/payments", &headers, &body.raw, move |tx, now| {
        let (id, report) = (id.clone(), report.clone());
        Box::pin(async move {
            let order = order::lifecycle::payment_report(tx, &id, report, now).await?;
            Ok(Answer::json(StatusCode::OK, &order))
        })
    })
    .await
}

/// Cancels an order awaiting payment or paid: holds and promotion uses released; a paid
/// order's refund is requested (`payment.refund_requested`).
#[utoipa::path(post, path = "/v1/orders/{id}/cancel", tag = "orders", params(("id" = String, Path)),
    responses((status = 200, body = Order, description = "The cancelled order"),
              (status = 404, body = crate::error::Problem, description = "No such order"),
              (status = 409, body = crate::error::Problem, description = "Cancelled, fulfilled or delivered already (`invalid_state`)")),
    security(("bearer" = [])))]
pub async fn order_cancel(
    State(state): State<AppState>,
    _query: NoQuery,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = path_order(&id)?;
    let raw = id.clone().into_bytes();
    run_write(&state, &principal, "POST /v1/orders/{id}/cancel", &headers, &raw, move |tx, now| {
        let id = id.clone();
        Box::pin(async move {
            let order = order::lifecycle::order_cancel(tx, &id, now).await?;
            Ok(Answer::json(StatusCode::OK, &order))
        })
    })
    .await
}

// ---------------------------------------------------------------- promotions

#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PromotionConditions {
    /// In the channel's currency.
    pub min_subtotal: Option<String>,
    #[serde(default)]
    pub skus: Vec<String>,
    /// Category paths; a product in a sub-category matches (`apparel` matches `apparel/tops`).
    #[serde(default)]
    pub categories: Vec<String>,
    #[serde(default)]
    pub first_order_only: bool,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"code": "SUMMER10", "channel": "web-de", "kind": "percentage", "value": "10", "target": "order",
    "conditions": {"min_subtotal": "50.00", "skus": [], "categories": [], "first_order_only": false},
    "starts_at": "2026-06-01T00:00:00Z", "ends_at": "2026-09-01T00:00:00Z", "usage_limit": 1000, "per_customer_limit": 1}))]
pub struct CreatePromotion {
    /// 1 to 64 of `A-Z a-z 0-9 . _ -`.
    pub code: String,
    pub channel: String,
    pub kind: Kind,
    /// Percent (`"10"`, `"12.5"`) for `percentage` and `buy_x_get_y`; an amount in the
    /// channel's currency for `fixed`.
    pub value: String,
    #[serde(default = "default_target")]
    pub target: Target,
    /// For `buy_x_get_y`: units to buy, and units then discounted.
    pub buy: Option<i64>,
    pub get: Option<i64>,
    #[serde(default)]
    pub conditions: PromotionConditions,
    pub starts_at: Option<String>,
    pub ends_at: Option<String>,
    pub usage_limit: Option<i64>,
    pub per_customer_limit: Option<i64>,
}

fn default_target() -> Target {
    Target::Order
}

fn parse_time(field: &str, raw: &str, errors: &mut Vec<FieldError>) -> Option<i64> {
    match time::OffsetDateTime::parse(raw, &time::format_description::well_known::Rfc3339) {
        Ok(at) => Some((at.unix_timestamp_nanos() / 1_000_000) as i64),
        Err(_) => {
            problem(errors, field, "must be an RFC 3339 timestamp, e.g. 2026-06-01T00:00:00Z");
            None
        }
    }
}

fn check_code(field: &str, code: &str, errors: &mut Vec<FieldError>) {
    let ok =
        !code.is_empty() && code.len() <= 64 && code.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if !ok {
        problem(errors, field, "must be 1 to 64 characters of A-Z a-z 0-9 . _ -");
    }
}

fn check_limit(field: &str, value: Option<i64>, errors: &mut Vec<FieldError>) {
    if let Some(v) = value
        && !(1..=QUANTITY_MAX).contains(&v)
    {
        problem(errors, field, format!("must be from 1 to {QUANTITY_MAX}"));
    }
}

fn check_conditions(
    c: &PromotionConditions,
    currency: Option<&kernel::Currency>,
    errors: &mut Vec<FieldError>,
) -> Option<i64> {
    for (i, sku) in c.skus.iter().enumerate() {
        if let Err(e) = SkuCode::parse(sku) {
            problem(errors, format!("conditions.skus[{i}]"), e.to_string());
        }
    }
    for (i, category) in c.categories.iter().enumerate() {
        check_text(&format!("conditions.categories[{i}]"), category, true, errors);
    }
    match (&c.min_subtotal, currency) {
        (Some(raw), Some(cur)) => {
            cur.parse_amount(raw).map_err(|e| problem(errors, "conditions.min_subtotal", format!("{e} ({cur})"))).ok()
        }
        _ => None,
    }
}

/// Creates a promotion in a channel.
#[utoipa::path(post, path = "/v1/promotions", tag = "promotions", request_body = CreatePromotion,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer for repeats")),
    responses((status = 201, body = PromotionView, description = "Created"),
              (status = 409, body = crate::error::Problem, description = "The code exists"),
              (status = 422, body = crate::error::Problem, description = "Bad fields, unknown channel")),
    security(("bearer" = [])))]
pub async fn promotion_create(
    State(state): State<AppState>,
    _query: NoQuery,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    body: ApiJson<CreatePromotion>,
) -> Result<Response, ApiError> {
    let req = body.value;
    let mut errors = Vec::new();
    check_code("code", &req.code, &mut errors);
    let channel = ChannelCode::parse(&req.channel).map_err(|e| problem(&mut errors, "channel", e.to_string())).ok();
    let currency = match &channel {
        Some(c) => match catalog::channel::channel_get(state.db.reader(), c).await {
            Ok(config) => Some(config.currency),
            Err(catalog::CatalogError::NotFound { .. }) => {
                problem(&mut errors, "channel", format!("channel {c} does not exist"));
                None
            }
            Err(e) => return Err(e.into()),
        },
        None => None,
    };
    let value = match req.kind {
        Kind::Percentage | Kind::BuyXGetY => {
            order::promotion::parse_percent(&req.value).map_err(|e| problem(&mut errors, "value", e)).ok()
        }
        Kind::Fixed => currency.as_ref().and_then(|c| {
            c.parse_amount(&req.value).ok().filter(|v| *v > 0).or_else(|| {
                problem(&mut errors, "value", format!("must be an amount above 0 in {c}"));
                None
            })
        }),
    };
    match req.kind {
        Kind::BuyXGetY => {
            for (field, v) in [("buy", req.buy), ("get", req.get)] {
                match v {
                    Some(n) if (1..=1000).contains(&n) => {}
                    _ => problem(&mut errors, field, "must be from 1 to 1000 for buy_x_get_y"),
                }
            }
        }
        _ => {
            for (field, v) in [("buy", req.buy), ("get", req.get)] {
                if v.is_some() {
                    problem(&mut errors, field, "is only for buy_x_get_y");
                }
            }
        }
    }
    let min_subtotal = check_conditions(&req.conditions, currency.as_ref(), &mut errors);
    let starts = req.starts_at.as_deref().and_then(|r| parse_time("starts_at", r, &mut errors));
    let ends = req.ends_at.as_deref().and_then(|r| parse_time("ends_at", r, &mut errors));
    if let (Some(s), Some(e)) = (starts, ends)
        && e <= s
    {
        problem(&mut errors, "ends_at", "must be after starts_at");
    }
    check_limit("usage_limit", req.usage_limit, &mut errors);
    check_limit("per_customer_limit", req.per_customer_limit, &mut errors);
    finish(errors)?;
    let new = NewPromotion {
        code: req.code,
        channel: channel.expect("checked"),
        kind: req.kind,
        value: value.expect("checked"),
        target: req.target,
        buy: req.buy,
        get: req.get,
        min_subtotal_minor: min_subtotal,
        skus: req.conditions.skus,
        categories: req.conditions.categories,
        first_order_only: req.conditions.first_order_only,
        starts_at_ms: starts,
        ends_at_ms: ends,
        usage_limit: req.usage_limit,
        per_customer_limit: req.per_customer_limit,
    };
    run_write(&state, &principal, "POST /v1/promotions", &headers, &body.raw, move |tx, now| {
        let new = new.clone();
        Box::pin(async move {
            let promotion = order::promotion::promotion_create(tx, new, now).await?;
            Ok(Answer::json(StatusCode::CREATED, &promotion.view()))
        })
    })
    .await
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PromotionPage {
    pub items: Vec<PromotionView>,
    pub next: Option<String>,
}

/// Lists promotions by code.
#[utoipa::path(get, path = "/v1/promotions", tag = "promotions",
    params(("channel" = Option<String>, Query), ("limit" = Option<u32>, Query), ("next" = Option<String>, Query)),
    responses((status = 200, body = PromotionPage), (status = 422, body = crate::error::Problem)), security(("bearer" = [])))]
pub async fn promotion_list(State(state): State<AppState>, query: QueryMap) -> Result<Json<PromotionPage>, ApiError> {
    query.only(&["channel", "limit", "next"]).finish()?;
    let page = query.page()?;
    let rows =
        order::promotion::promotions_list(state.db.reader(), query.get("channel"), page.after.as_deref(), page.limit)
            .await?;
    let page = kernel::Page::from_rows(rows, page.limit, |p| p.code.clone());
    Ok(Json(PromotionPage { items: page.items.iter().map(|p| p.view()).collect(), next: page.next }))
}

/// Reads a promotion with its uses taken.
#[utoipa::path(get, path = "/v1/promotions/{code}", tag = "promotions", params(("code" = String, Path)),
    responses((status = 200, body = PromotionView), (status = 404, body = crate::error::Problem)), security(("bearer" = [])))]
pub async fn promotion_get(
    State(state): State<AppState>,
    _query: NoQuery,
    Path(code): Path<String>,
) -> Result<Json<PromotionView>, ApiError> {
    Ok(Json(order::promotion::promotion_get(state.db.reader(), &code).await?.view()))
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchPromotion {
    pub value: Option<String>,
    #[serde(default, deserialize_with = "explicit")]
    #[schema(value_type = Option<String>)]
    pub min_subtotal: Option<Option<String>>,
    pub skus: Option<Vec<String>>,
    pub categories: Option<Vec<String>>,
    pub first_order_only: Option<bool>,
    #[serde(default, deserialize_with = "explicit")]
    #[schema(value_type = Option<String>)]
    pub starts_at: Option<Option<String>>,
    #[serde(default, deserialize_with = "explicit")]
    #[schema(value_type = Option<String>)]
    pub ends_at: Option<Option<String>>,
    #[serde(default, deserialize_with = "explicit")]
    #[schema(value_type = Option<i64>)]
    pub usage_limit: Option<Option<i64>>,
    #[serde(default, deserialize_with = "explicit")]
    #[schema(value_type = Option<i64>)]
    pub per_customer_limit: Option<Option<i64>>,
}

/// Changes a promotion's rules (JSON Merge Patch); its code, channel and kind stay.
#[utoipa::path(patch, path = "/v1/promotions/{code}", tag = "promotions", params(("code" = String, Path)), request_body = PatchPromotion,
    responses((status = 200, body = PromotionView), (status = 404, body = crate::error::Problem),
              (status = 422, body = crate::error::Problem, description = "Bad fields, a usage limit below the uses taken")),
    security(("bearer" = [])))]
pub async fn promotion_patch(
    State(state): State<AppState>,
    _query: NoQuery,
    Extension(principal): Extension<Principal>,
    Path(code): Path<String>,
    headers: HeaderMap,
    body: ApiJson<PatchPromotion>,
) -> Result<Response, ApiError> {
    let current = order::promotion::promotion_get(state.db.reader(), &code).await?;
    let req = body.value;
    let mut errors = Vec::new();
    let value = req.value.as_deref().and_then(|raw| match current.kind {
        Kind::Percentage | Kind::BuyXGetY => {
            order::promotion::parse_percent(raw).map_err(|e| problem(&mut errors, "value", e)).ok()
        }
        Kind::Fixed => current.currency.parse_amount(raw).ok().filter(|v| *v > 0).or_else(|| {
            problem(&mut errors, "value", format!("must be an amount above 0 in {}", current.currency));
            None
        }),
    });
    let min_subtotal = req.min_subtotal.as_ref().map(|v| {
        v.as_deref().and_then(|raw| {
            current.currency.parse_amount(raw).map_err(|e| problem(&mut errors, "min_subtotal", e.to_string())).ok()
        })
    });
    let conditions = PromotionConditions {
        min_subtotal: None,
        skus: req.skus.clone().unwrap_or_default(),
        categories: req.categories.clone().unwrap_or_default(),
        first_order_only: false,
    };
    check_conditions(&conditions, None, &mut errors);
    let starts = req.starts_at.as_ref().map(|v| v.as_deref().and_then(|r| parse_time("starts_at", r, &mut errors)));
    let ends = req.ends_at.as_ref().map(|v| v.as_deref().and_then(|r| parse_time("ends_at", r, &mut errors)));
    check_limit("usage_limit", req.usage_limit.flatten(), &mut errors);
    check_limit("per_customer_limit", req.per_customer_limit.flatten(), &mut errors);
    finish(errors)?;
    let patch = PromotionPatch {
        value,
        min_subtotal_minor: min_subtotal,
        skus: req.skus,
        categories: req.categories,
        first_order_only: req.first_order_only,
        starts_at_ms: starts,
        ends_at_ms: ends,
        usage_limit: req.usage_limit,
        per_customer_limit: req.per_customer_limit,
    };
    run_write(&state, &principal, "PATCH /v1/promotions/{code}", &headers, &body.raw, move |tx, now| {
        let (code, patch) = (code.clone(), patch.clone());
        Box::pin(async move {
            let promotion = order::promotion::promotion_update(tx, &code, patch, now).await?;
            Ok(Answer::json(StatusCode::OK, &promotion.view()))
        })
    })
    .await
}

// ---------------------------------------------------------------- sagas

#[derive(Debug, Serialize, ToSchema)]
pub struct SagaPage {
    pub items: Vec<Saga>,
    pub next: Option<String>,
}

/// Lists sagas, newest first.
#[utoipa::path(get, path = "/v1/sagas", tag = "orders",
    params(("status" = Option<SagaStatus>, Query), ("kind" = Option<SagaKind>, Query), ("order" = Option<String>, Query),
           ("limit" = Option<u32>, Query), ("next" = Option<String>, Query)),
    responses((status = 200, body = SagaPage), (status = 422, body = crate::error::Problem)), security(("bearer" = [])))]
pub async fn saga_list(State(state): State<AppState>, query: QueryMap) -> Result<Json<SagaPage>, ApiError> {
    query.only(&["status", "kind", "order", "limit", "next"]).finish()?;
    let page = query.page()?;
    let mut errors = Vec::new();
    let status = query.get("status").and_then(|s| {
        SagaStatus::parse(s).or_else(|| {
            problem(&mut errors, "status", "must be running, compensating, failed or done");
            None
        })
    });
    let kind = query.get("kind").and_then(|s| {
        SagaKind::parse(s).or_else(|| {
            problem(&mut errors, "kind", "must be checkout or cancellation");
            None
        })
    });
    finish(errors)?;
    let filter = SagaFilter { status, kind, order: query.get("order").map(str::to_owned) };
    let rows = order::saga::sagas_list(state.db.reader(), &filter, page.after.as_deref(), page.limit).await?;
    let page = kernel::Page::from_rows(rows, page.limit, |s| s.id.clone());
    Ok(Json(SagaPage { items: page.items, next: page.next }))
}

/// Reads a saga with its steps.
#[utoipa::path(get, path = "/v1/sagas/{id}", tag = "orders", params(("id" = String, Path)),
    responses((status = 200, body = Saga), (status = 404, body = crate::error::Problem)), security(("bearer" = [])))]
pub async fn saga_get(
    State(state): State<AppState>,
    _query: NoQuery,
    Path(id): Path<String>,
) -> Result<Json<Saga>, ApiError> {
    Ok(Json(order::saga::saga_get(state.db.reader(), &id).await?))
}
