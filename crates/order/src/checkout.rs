//! Checkout: a cart becomes an order, its stock held and its promotion uses taken, in one
//! transaction, through the batch executor so a flash sale's checkouts share commits.
//!
//! [`prepare`] reads and validates what a checkout needs outside the write transaction (the
//! cart, the channel, offers, weights, warehouse locations, shipping rates, promotions).
//! [`CheckoutBatch`] then applies checkouts one by one inside one transaction, each within a
//! savepoint: it marks the cart checked out (refused if it changed since it was read), locks
//! and reads the stock of the cart's SKUs in the channel's warehouses, plans sourcing
//! against those figures, applies the `partial` rules and promotions ([`quote`], pure),
//! takes promotion uses with guarded updates, holds the plan with explicit warehouses
//! (`warehouse::reservation::hold_batch`), and writes the order, its saga's first step and
//! `order.created`. A refused checkout rolls back to its savepoint and leaves no trace;
//! stock is never checked in one transaction and taken in another.

use crate::Result;
use crate::cart::{CartRecord, cart_check_out, cart_get};
use crate::error::{OrderError, issue};
use crate::events::{OrderCreated, OrderLineState};
use crate::promotion::{self, PricedLine, Promotion};
use crate::record::{
    Address, AllocationRecord, LineRecord, Order, OrderRecord, OrderStatus, Partial, new_order_id, order_insert,
};
use crate::saga::{self, SagaKind};
use crate::sourcing::{self, Destination, Plan, Rate, SourcingInput, SourcingLine, SourcingWarehouse, Strategy};
use catalog::channel::{ChannelConfig, Sourcing};
use catalog::price::Offer;
use kernel::{ChannelCode, Clock, NewEvent, Quantity, ReservationId, SkuCode, Timestamp, WarehouseCode};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use store::batch::{Applied, Batch, BatchConfig, Executor, IdempotencyKey, Once};
use store::workers::Workers;
use store::{Db, Tx};
use tokio::task::JoinHandle;
use warehouse::reservation::{HoldCommand, HoldLine};
use warehouse::{Refusal, ShortLine};

/// A checkout's reservation outlives the order's payment deadline by this much, so the
/// order's saga releases it (and cancels the order) before the sweeper would; if the saga
/// worker is down the sweeper still releases it.
pub const HOLD_GRACE_SECONDS: i64 = 60;

/// The longest the exact `cost` sourcing solve may take before its greedy fallback.
pub const SOURCING_BUDGET: Duration = Duration::from_millis(5);

/// Most promotion codes in one checkout.
pub const PROMOTION_CODES_MAX: usize = 10;

#[derive(Debug, Clone, PartialEq)]
pub struct CheckoutRequest {
    pub cart_id: String,
    pub address: Address,
    pub partial: Partial,
    /// Per-SKU overrides of `partial`, with the request field each came from.
    pub line_partials: Vec<(String, Partial)>,
    pub promotion_codes: Vec<String>,
}

/// Everything a checkout needs, read and validated before its transaction.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub order_id: String,
    pub cart: CartRecord,
    pub channel: ChannelConfig,
    pub offers: HashMap<String, Offer>,
    pub weights: HashMap<String, Option<i64>>,
    pub locations: HashMap<String, (Option<f64>, Option<f64>, bool)>,
    pub rates: HashMap<String, (i64, i64)>,
    pub promotions: Vec<Promotion>,
    pub address: Address,
    pub partial: Partial,
    pub line_partials: HashMap<String, Partial>,
}

fn strategy_of(sourcing: Sourcing) -> Strategy {
    match sourcing {
        Sourcing::Priority => Strategy::Priority,
        Sourcing::Distance => Strategy::Distance,
        Sourcing::Cost => Strategy::Cost,
    }
}

/// What sourcing needs of a channel and an address: warehouses in priority order with
/// their locations and rates.
#[derive(Debug, Clone)]
pub struct SourcingContext {
    pub channel: ChannelConfig,
    pub locations: HashMap<String, (Option<f64>, Option<f64>, bool)>,
    pub rates: HashMap<String, (i64, i64)>,
    pub weights: HashMap<String, Option<i64>>,
}

pub async fn sourcing_context(
    pool: &sqlx::AnyPool,
    channel: ChannelConfig,
    address: &Address,
    skus: &[String],
) -> Result<SourcingContext> {
    let mut conn = pool.acquire().await?;
    let locations = warehouse::site::locations_of(&mut conn, &channel.warehouses).await?;
    let rates =
        catalog::channel::shipping_rates_to(&mut conn, &channel.warehouses, &address.country, &channel.currency)
            .await?;
    let weights = warehouse::item::weights_of(&mut conn, skus).await?;
    Ok(SourcingContext { channel, locations, rates, weights })
}

/// The sourcing problem of `lines` against `figures` (sellable units per SKU and warehouse).
pub fn sourcing_input(
    ctx: &SourcingContext,
    address: &Address,
    lines: &[(String, i64)],
    figures: &HashMap<(String, String), i64>,
) -> SourcingInput {
    SourcingInput {
        strategy: strategy_of(ctx.channel.sourcing),
        lines: lines
            .iter()
            .map(|(sku, quantity)| SourcingLine {
                sku: sku.clone(),
                quantity: *quantity,
                unit_grams: ctx.weights.get(sku).copied().flatten().unwrap_or(0),
            })
            .collect(),
        warehouses: ctx
            .channel
            .warehouses
            .iter()
            .filter(|w| ctx.locations.get(*w).is_some_and(|l| l.2))
            .map(|w| {
                let (latitude, longitude, _) = ctx.locations.get(w).copied().unwrap_or((None, None, false));
                SourcingWarehouse {
                    code: w.clone(),
                    latitude,
                    longitude,
                    rate: ctx.rates.get(w).map(|(base, per_kg)| Rate { base_minor: *base, per_kg_minor: *per_kg }),
                }
            })
            .collect(),
        available: figures.clone(),
        split_penalty_minor: ctx.channel.split_penalty_minor,
        destination: Destination { latitude: address.latitude, longitude: address.longitude },
        time_budget: SOURCING_BUDGET,
    }
}

/// Sellable units per SKU and warehouse of the channel, on the caller's connection.
pub async fn figures_in(
    conn: &mut sqlx::AnyConnection,
    skus: &[String],
    channel: &ChannelConfig,
    now: Timestamp,
    lock: bool,
) -> Result<HashMap<(String, String), i64>> {
    Ok(warehouse::stock::sellable_by_warehouse(conn, skus, &channel.warehouses, now, lock)
        .await?
        .into_iter()
        .map(|(sku, warehouse, units)| ((sku, warehouse), units))
        .collect())
}

/// Reads and checks what a checkout or preview of a cart needs. Every bad field is named.
pub async fn prepare(pool: &sqlx::AnyPool, request: CheckoutRequest, now: Timestamp) -> Result<Prepared> {
    let cart = cart_get(pool, &request.cart_id).await?;
    if cart.status != "open" {
        return Err(OrderError::invalid_state("cart", &cart.status, "be checked out"));
    }
    let channel_code = ChannelCode::parse(&cart.channel)
        .map_err(|_| store::StoreError::Corrupt(format!("cart channel {}", cart.channel)))?;
    let channel = catalog::channel::channel_get(pool, &channel_code).await?;
    let skus = cart.skus();
    let mut problems = Vec::new();
    if cart.lines.is_empty() {
        problems.push(issue("cart", "the cart has no lines"));
    }
    let offers = {
        let mut conn = pool.acquire().await?;
        catalog::price::offers_in(&mut conn, &channel_code, &skus).await?
    };
    for (i, (sku, _)) in cart.lines.iter().enumerate() {
        match offers.get(sku) {
            None => problems
                .push(issue(format!("cart.lines[{i}].sku"), format!("{sku} is no longer a variant of any product"))),
            Some(o) if o.price_minor.is_none() => problems
                .push(issue(format!("cart.lines[{i}].sku"), format!("{sku} has no price in channel {}", channel.code))),
            Some(_) => {}
        }
    }
    let mut line_partials = HashMap::new();
    for (i, (sku, partial)) in request.line_partials.iter().enumerate() {
        if !skus.contains(sku) {
            problems.push(issue(format!("lines[{i}].sku"), format!("{sku} is not in the cart")));
        } else if line_partials.insert(sku.clone(), *partial).is_some() {
            problems.push(issue(format!("lines[{i}].sku"), format!("{sku} is named twice")));
        }
    }
    let mut named = Vec::new();
    for (i, code) in request.promotion_codes.iter().enumerate() {
        if request.promotion_codes[..i].contains(code) {
            problems.push(issue(format!("promotion_codes[{i}]"), format!("{code} is given twice")));
        } else {
            named.push(code.clone());
        }
    }
    if request.promotion_codes.len() > PROMOTION_CODES_MAX {
        problems.push(issue("promotion_codes", format!("at most {PROMOTION_CODES_MAX} codes")));
    }
    let found = {
        let mut conn = pool.acquire().await?;
        promotion::promotions_named(&mut conn, &named, &channel.currency).await?
    };
    let prior = match &cart.customer {
        Some(c) => Some(prior_orders(pool, c).await?),
        None => None,
    };
    let priced: Vec<PricedLine> = cart
        .lines
        .iter()
        .map(|(sku, quantity)| PricedLine {
            sku: sku.clone(),
            quantity: *quantity,
            unit_price_minor: offers.get(sku).and_then(|o| o.price_minor).unwrap_or(0),
            category: offers.get(sku).and_then(|o| o.category.clone()),
        })
        .collect();
    let mut promotions = Vec::new();
    for (i, code) in request.promotion_codes.iter().enumerate() {
        if request.promotion_codes[..i].contains(code) {
            continue;
        }
        match found.iter().find(|p| &p.code == code) {
            None => problems.push(issue(format!("promotion_codes[{i}]"), format!("{code} is not a promotion"))),
            Some(p) => match promotion::ineligibility(p, &channel.code, &priced, prior, now) {
                Some(reason) => problems.push(issue(format!("promotion_codes[{i}]"), reason)),
                None => promotions.push(p.clone()),
            },
        }
    }
    if !problems.is_empty() {
        return Err(OrderError::invalid_fields(problems));
    }
    let ctx = sourcing_context(pool, channel, &request.address, &skus).await?;
    Ok(Prepared {
        order_id: new_order_id(),
        cart,
        channel: ctx.channel,
        offers,
        weights: ctx.weights,
        locations: ctx.locations,
        rates: ctx.rates,
        promotions,
        address: request.address,
        partial: request.partial,
        line_partials,
    })
}

/// The customer's orders that were not cancelled, counted up to 1: promotions ask only
/// whether there is one, and a full count grows with the customer's history.
async fn prior_orders(conn: impl sqlx::Executor<'_, Database = sqlx::Any>, customer: &str) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT CAST(COUNT(*) AS BIGINT) FROM (SELECT 1 FROM orders WHERE customer = $1 AND status <> 'cancelled' LIMIT 1) AS o",
    )
        .bind(customer.to_owned())
        .fetch_one(conn)
        .await?)
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct QuotedLine {
    pub sku: String,
    pub quantity: i64,
    #[serde(skip)]
    pub unit_price_minor: i64,
    #[serde(skip)]
    pub discount_minor: i64,
    pub unit_price: String,
    pub discount: String,
    pub allocated: Vec<crate::record::Allocated>,
    pub backordered: i64,
    pub cancelled: i64,
    pub partial: Partial,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct QuotedShipment {
    pub warehouse: String,
    pub lines: Vec<sourcing::Allocation>,
    pub shipping: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct QuotedPromotion {
    pub code: String,
    pub discount: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct QuoteTotals {
    pub subtotal: String,
    pub discount: String,
    pub shipping: String,
    pub total: String,
    pub currency: String,
}

/// What a checkout of the cart would make now: the preview's answer.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Quote {
    pub lines: Vec<QuotedLine>,
    pub shipments: Vec<QuotedShipment>,
    pub promotions: Vec<QuotedPromotion>,
    pub totals: QuoteTotals,
    /// `{"strategy", "explanation"}`.
    #[schema(value_type = Object)]
    pub sourcing: serde_json::Value,
    #[serde(skip)]
    pub minor: (i64, i64, i64, i64),
    #[serde(skip)]
    pub promotion_discounts: Vec<(usize, i64)>,
}

/// Plans a prepared checkout against `figures`: sourcing, the `partial` rules, promotions
/// and totals. Pure. Refused when a `reject` line is short (409 with the short lines),
/// when nothing at all could be allocated or backordered, or when a promotion no longer
/// applies to what is left.
pub fn quote(
    p: &Prepared,
    figures: &HashMap<(String, String), i64>,
    prior: Option<i64>,
    now: Timestamp,
) -> Result<Quote> {
    let ctx = SourcingContext {
        channel: p.channel.clone(),
        locations: p.locations.clone(),
        rates: p.rates.clone(),
        weights: p.weights.clone(),
    };
    let input = sourcing_input(&ctx, &p.address, &p.cart.lines, figures);
    let plan = sourcing::plan(&input);
    let short: HashMap<&str, &sourcing::ShortLine> = plan.short.iter().map(|s| (s.sku.as_str(), s)).collect();
    let money = |m: i64| p.channel.currency.format_amount(m);
    let mut refused = Vec::new();
    let mut lines = Vec::new();
    for (sku, quantity) in &p.cart.lines {
        let partial = p.line_partials.get(sku).copied().unwrap_or(p.partial);
        let allocated: Vec<crate::record::Allocated> = plan
            .shipments
            .iter()
            .flat_map(|s| {
                s.lines
                    .iter()
                    .filter(|l| &l.sku == sku)
                    .map(|l| crate::record::Allocated { warehouse: s.warehouse.clone(), quantity: l.quantity })
            })
            .collect();
        let held: i64 = allocated.iter().map(|a| a.quantity).sum();
        let missing = quantity - held;
        let (backordered, cancelled) = match (missing, partial) {
            (0, _) => (0, 0),
            (_, Partial::Reject) => {
                refused.push(ShortLine {
                    sku: sku.clone(),
                    warehouse: None,
                    requested: *quantity,
                    available: short.get(sku.as_str()).map(|s| s.available).unwrap_or(held),
                    reason: None,
                });
                (0, 0)
            }
            (_, Partial::ShipAvailable) => (0, missing),
            (_, Partial::Backorder) => (missing, 0),
        };
        let unit_price_minor = p.offers.get(sku).and_then(|o| o.price_minor).unwrap_or(0);
        lines.push(QuotedLine {
            sku: sku.clone(),
            quantity: *quantity,
            unit_price_minor,
            discount_minor: 0,
            unit_price: money(unit_price_minor),
            discount: money(0),
            allocated,
            backordered,
            cancelled,
            partial,
        });
    }
    if !refused.is_empty() {
        return Err(OrderError::insufficient(refused));
    }
    if lines.iter().all(|l| l.quantity == l.cancelled) {
        return Err(OrderError::insufficient(
            lines
                .iter()
                .map(|l| ShortLine {
                    sku: l.sku.clone(),
                    warehouse: None,
                    requested: l.quantity,
                    available: 0,
                    reason: None,
                })
                .collect(),
        ));
    }
    let priced: Vec<PricedLine> = lines
        .iter()
        .map(|l| PricedLine {
            sku: l.sku.clone(),
            quantity: l.quantity - l.cancelled,
            unit_price_minor: l.unit_price_minor,
            category: p.offers.get(&l.sku).and_then(|o| o.category.clone()),
        })
        .collect();
    let mut problems = Vec::new();
    for (i, promotion) in p.promotions.iter().enumerate() {
        if let Some(reason) = promotion::ineligibility(promotion, &p.channel.code, &priced, prior, now) {
            problems.push(issue(
                format!("promotion_codes[{i}]"),
                format!("{reason} (after the lines short of stock were cut)"),
            ));
        }
    }
    if !problems.is_empty() {
        return Err(OrderError::invalid_fields(problems));
    }
    let per_promotion = promotion::apply_all(&p.promotions, &priced);
    for (i, line) in lines.iter_mut().enumerate() {
        line.discount_minor = per_promotion.iter().map(|d| d[i]).sum();
        line.discount = money(line.discount_minor);
    }
    let subtotal: i64 = priced.iter().map(PricedLine::amount).sum();
    let discount: i64 = lines.iter().map(|l| l.discount_minor).sum();
    let shipping: i64 = plan.shipments.iter().map(|s| s.shipping_minor.unwrap_or(0)).sum();
    let total = subtotal - discount + shipping;
    let promotion_discounts: Vec<(usize, i64)> =
        per_promotion.iter().enumerate().map(|(i, d)| (i, d.iter().sum())).collect();
    Ok(Quote {
        shipments: plan
            .shipments
            .iter()
            .map(|s| QuotedShipment {
                warehouse: s.warehouse.clone(),
                lines: s.lines.clone(),
                shipping: money(s.shipping_minor.unwrap_or(0)),
            })
            .collect(),
        promotions: promotion_discounts
            .iter()
            .map(|(i, d)| QuotedPromotion { code: p.promotions[*i].code.clone(), discount: money(*d) })
            .collect(),
        totals: QuoteTotals {
            subtotal: money(subtotal),
            discount: money(discount),
            shipping: money(shipping),
            total: money(total),
            currency: p.channel.currency.to_string(),
        },
        sourcing: sourcing_json(&plan),
        minor: (subtotal, discount, shipping, total),
        promotion_discounts,
        lines,
    })
}

/// A plan as an order stores and shows it.
pub fn sourcing_json(plan: &Plan) -> serde_json::Value {
    serde_json::json!({ "strategy": plan.strategy, "explanation": plan.explanation, "shipments": plan.shipments })
}

/// The preview: what a checkout would make now, from unlocked figures. Changes nothing.
pub async fn preview(pool: &sqlx::AnyPool, prepared: &Prepared, now: Timestamp) -> Result<Quote> {
    let mut conn = pool.acquire().await?;
    let figures = figures_in(&mut conn, &prepared.cart.skus(), &prepared.channel, now, false).await?;
    let prior = match &prepared.cart.customer {
        Some(c) => Some(prior_orders(&mut *conn, c).await?),
        None => None,
    };
    quote(prepared, &figures, prior, now)
}

/// `POST /v1/sourcing/plan`: the plan checkout would make for `lines`. Changes nothing.
pub async fn plan_dry_run(
    pool: &sqlx::AnyPool,
    channel: &ChannelCode,
    address: &Address,
    lines: &[(String, i64)],
    now: Timestamp,
) -> Result<Plan> {
    let channel = catalog::channel::channel_get(pool, channel).await.map_err(|e| match e {
        catalog::CatalogError::NotFound { .. } => {
            OrderError::invalid("channel", format!("channel {channel} does not exist"))
        }
        other => other.into(),
    })?;
    let skus: Vec<String> = lines.iter().map(|(s, _)| s.clone()).collect();
    let ctx = sourcing_context(pool, channel, address, &skus).await?;
    let unknown: Vec<_> = skus
        .iter()
        .enumerate()
        .filter(|(_, s)| !ctx.weights.contains_key(*s))
        .map(|(i, s)| issue(format!("lines[{i}].sku"), format!("item {s} does not exist")))
        .collect();
    if !unknown.is_empty() {
        return Err(OrderError::invalid_fields(unknown));
    }
    let mut conn = pool.acquire().await?;
    let figures = figures_in(&mut conn, &skus, &ctx.channel, now, false).await?;
    Ok(sourcing::plan(&sourcing_input(&ctx, address, lines, &figures)))
}

/// Applies one checkout in the batch's transaction (inside its savepoint).
async fn apply_one(tx: &mut Tx, p: &Prepared, now: Timestamp) -> Result<Order> {
    cart_check_out(tx, &p.cart.id, p.cart.version, &p.order_id, now).await?;
    // Its soft hold goes first, so the units it held count for the order read below.
    crate::cart::release_for_checkout(tx, &p.cart, now).await?;
    let figures = figures_in(tx, &p.cart.skus(), &p.channel, now, true).await?;
    let prior = match &p.cart.customer {
        Some(c) if p.promotions.iter().any(|pr| pr.first_order_only || pr.per_customer_limit.is_some()) => {
            Some(prior_orders(&mut **tx, c).await?)
        }
        Some(_) => Some(0),
        None => None,
    };
    let quote = quote(p, &figures, prior, now)?;
    let applied: Vec<(&Promotion, i64)> =
        quote.promotion_discounts.iter().map(|(i, d)| (&p.promotions[*i], *d)).collect();
    let codes: Vec<&str> = p.promotions.iter().map(|pr| pr.code.as_str()).collect();
    let reservation_id = ReservationId::new();
    let mut hold_lines = Vec::new();
    for line in &quote.lines {
        for a in &line.allocated {
            hold_lines.push(HoldLine {
                sku: SkuCode::parse(&line.sku)
                    .map_err(|_| store::StoreError::Corrupt(format!("cart sku {}", line.sku)))?,
                quantity: Quantity::new(a.quantity)
                    .map_err(|_| store::StoreError::Corrupt(format!("allocation of {}", a.quantity)))?,
                warehouse: Some(
                    WarehouseCode::parse(&a.warehouse)
                        .map_err(|_| store::StoreError::Corrupt(format!("warehouse {}", a.warehouse)))?,
                ),
            });
        }
    }
    let ttl = p.channel.checkout_hold_ttl_seconds;
    let at = now.to_rfc3339();
    let (subtotal, discount, shipping, total) = quote.minor;
    let order = OrderRecord {
        id: p.order_id.clone(),
        channel: p.channel.code.clone(),
        customer: p.cart.customer.clone(),
        cart_id: Some(p.cart.id.clone()),
        currency: p.channel.currency.clone(),
        status: OrderStatus::AwaitingPayment,
        subtotal_minor: subtotal,
        discount_minor: discount,
        shipping_minor: shipping,
        total_minor: total,
        paid_minor: 0,
        address: p.address.clone(),
        sourcing: quote.sourcing.clone(),
        hold_expires_at_ms: now.plus_seconds(ttl).millis(),
        cancel_reason: None,
        created_at: at.clone(),
        updated_at: at,
        lines: quote
            .lines
            .iter()
            .enumerate()
            .map(|(i, l)| LineRecord {
                position: i as i64 + 1,
                sku: l.sku.clone(),
                quantity: l.quantity,
                unit_price_minor: l.unit_price_minor,
                discount_minor: l.discount_minor,
                backordered: l.backordered,
                cancelled: l.cancelled,
                returned: 0,
                partial: l.partial,
            })
            .collect(),
        allocations: quote
            .lines
            .iter()
            .flat_map(|l| {
                l.allocated.iter().map(|a| AllocationRecord {
                    sku: l.sku.clone(),
                    warehouse: a.warehouse.clone(),
                    reservation_id: reservation_id.as_str().to_owned(),
                    quantity: a.quantity,
                })
            })
            .collect(),
        payments: Vec::new(),
        fulfillments: Vec::new(),
        promotions: applied.iter().map(|(pr, d)| (pr.code.clone(), *d, "held".to_owned())).collect(),
    };
    // The order first: its uses, allocations and saga refer to it.
    order_insert(tx, &order).await?;
    promotion::take_uses(tx, &p.order_id, p.cart.customer.as_deref(), &applied, |code| {
        format!("promotion_codes[{}]", codes.iter().position(|c| *c == code).unwrap_or(0))
    })
    .await?;
    if !hold_lines.is_empty() {
        let command = HoldCommand {
            id: reservation_id.clone(),
            reference: p.order_id.clone(),
            ttl_seconds: ttl + HOLD_GRACE_SECONDS,
            lines: hold_lines,
        };
        let outcome = warehouse::reservation::hold_batch(tx, vec![command], now).await?.pop();
        match outcome {
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
            None => return Err(store::StoreError::Corrupt("a hold batch of one answered nothing".into()).into()),
        }
    }
    let held: i64 = order.allocations.iter().map(|a| a.quantity).sum();
    saga::start(
        tx,
        SagaKind::Checkout,
        &order.id,
        (
            "hold_stock",
            Some(format!(
                "{held} unit(s) held in {}; {} promotion use(s) held",
                reservation_id.as_str(),
                applied.len()
            )),
        ),
        "await_payment",
        Some(order.hold_expires_at_ms),
        now,
    )
    .await?;
    let event = OrderCreated {
        order: order.id.clone(),
        channel: order.channel.clone(),
        customer: order.customer.clone(),
        currency: order.currency.to_string(),
        total_minor: order.total_minor,
        lines: order
            .lines
            .iter()
            .map(|l| OrderLineState {
                sku: l.sku.clone(),
                quantity: l.quantity,
                unit_price_minor: l.unit_price_minor,
                discount_minor: l.discount_minor,
                allocated: order.allocations.iter().filter(|a| a.sku == l.sku).map(|a| a.quantity).sum(),
                backordered: l.backordered,
                cancelled: l.cancelled,
            })
            .collect(),
        promotions: order.promotions.iter().map(|(c, _, _)| c.clone()).collect(),
    };
    store::outbox::append(tx, &[NewEvent::of(format!("order:{}", order.id), &event)], now).await?;
    Ok(order.view())
}

/// The order context's batch: checkouts.
#[derive(Debug, Clone, Copy, Default)]
pub struct CheckoutBatch;

impl Batch for CheckoutBatch {
    type Op = Prepared;
    type Outcome = Order;
    type Refusal = Refusal;
    type Error = OrderError;

    fn name(&self) -> &'static str {
        "checkouts"
    }

    async fn apply(&self, tx: &mut Tx, ops: &[Prepared], now: Timestamp) -> Applied<Order, OrderError> {
        let mut outcomes = Vec::with_capacity(ops.len());
        for op in ops {
            sqlx::query("SAVEPOINT checkout").execute(&mut **tx).await?;
            match apply_one(tx, op, now).await {
                Ok(order) => {
                    sqlx::query("RELEASE SAVEPOINT checkout").execute(&mut **tx).await?;
                    metrics::counter!("stockroom_checkouts_total", "outcome" => "placed").increment(1);
                    outcomes.push(Ok(order));
                }
                Err(e) if e.refusal().is_some() => {
                    sqlx::query("ROLLBACK TO SAVEPOINT checkout").execute(&mut **tx).await?;
                    sqlx::query("RELEASE SAVEPOINT checkout").execute(&mut **tx).await?;
                    metrics::counter!("stockroom_checkouts_total", "outcome" => "refused").increment(1);
                    outcomes.push(Err(e));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(outcomes)
    }

    fn is_retryable(error: &OrderError) -> bool {
        match error {
            OrderError::Store(e) | OrderError::Warehouse(warehouse::WarehouseError::Store(e)) => e.is_retryable(),
            _ => false,
        }
    }

    fn lasting_refusal(error: &OrderError) -> Option<Refusal> {
        error.refusal()
    }

    fn replay_refusal(refusal: Refusal) -> OrderError {
        OrderError::Refused(refusal)
    }
}

/// The checkout handle requests go through; cheap to clone.
#[derive(Debug, Clone)]
pub struct Checkouts {
    executor: Executor<CheckoutBatch>,
}

impl Checkouts {
    pub fn start(db: Db, clock: Arc<dyn Clock>, config: BatchConfig, workers: Workers) -> (Self, Vec<JoinHandle<()>>) {
        let (executor, handles) = Executor::start(CheckoutBatch, db, clock, config, workers);
        (Self { executor }, handles)
    }

    /// Places the order once per key: a retried checkout answers the first order (or the
    /// first refusal), marked replayed.
    pub async fn checkout_once(&self, prepared: Prepared, key: IdempotencyKey) -> Once<Order, OrderError> {
        self.executor.submit_once(prepared, key).await
    }
}
