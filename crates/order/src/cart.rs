//! Carts: a customer's lines in one channel, priced in the channel's currency.
//!
//! Lines are validated when added (a SKU with no product or no price in the channel is
//! refused, never shown as out of stock), lines of one SKU are one line, and a cart's stock
//! is read in one batched read of the catalog's availability view.
//!
//! In a channel with `cart_hold_ttl_seconds` 0 a cart holds nothing: checkout holds stock in
//! the order's own transaction. Above 0, a cart soft-holds its lines: one reservation,
//! replaced by every line change (so it expires that long after the last change), holding
//! what the channel's warehouses have of each line in their order. Checkout releases it in
//! its own transaction before it reads and holds stock, and the `order-carts` worker releases
//! the holds of carts left alone past their expiry.

use crate::Result;
use crate::error::OrderError;
use catalog::availability::AvailabilityItem;
use catalog::price::Offer;
use kernel::limits::QUANTITY_MAX;
use kernel::{ChannelCode, Currency, Quantity, ReservationId, SkuCode, Timestamp, WarehouseCode};
use serde::Serialize;
use std::collections::HashMap;
use store::{Db, Tx};
use warehouse::WarehouseError;
use warehouse::reservation::{HoldCommand, HoldLine};

/// Most lines in a cart.
pub const CART_LINES_MAX: usize = 100;

#[derive(Debug, Clone, PartialEq)]
pub struct CartRecord {
    pub id: String,
    pub channel: String,
    pub customer: Option<String>,
    pub currency: Currency,
    pub status: String,
    pub version: i64,
    pub order_id: Option<String>,
    /// In the order they were first added.
    pub lines: Vec<(String, i64)>,
    /// The soft hold: its reservation and expiry, and units held per SKU.
    pub hold: Option<(String, i64)>,
    pub held: HashMap<String, i64>,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct CartLine {
    pub sku: String,
    pub quantity: i64,
    /// `null` when the SKU lost its price in the channel since it was added.
    pub unit_price: Option<String>,
    pub line_total: Option<String>,
    /// Units available in the channel's warehouses; `null` when the stock source cannot
    /// answer, or its last figures are older than the trusted bound.
    pub available: Option<i64>,
    pub in_stock: Option<bool>,
    /// True when the figures are the last known ones, not fresh.
    pub stale: bool,
    pub as_of: Option<String>,
    /// Units soft-held for this cart (0 in a channel whose carts hold nothing, or once the
    /// hold expired).
    pub held: i64,
}

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct CartTotals {
    pub subtotal: String,
    pub items: i64,
    pub currency: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Cart {
    pub id: String,
    pub channel: String,
    pub customer: Option<String>,
    pub currency: String,
    /// `open`, or `checked_out` once an order was placed from it.
    pub status: String,
    /// The order placed from it.
    pub order: Option<String>,
    pub lines: Vec<CartLine>,
    pub totals: CartTotals,
    /// Until when the soft hold lasts; `null` when the cart holds nothing.
    pub hold_expires_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

/// What the availability view said of a cart's SKUs: per SKU its item, or nothing when the
/// view could not answer.
#[derive(Debug, Clone, Default)]
pub struct StockFigures {
    pub items: HashMap<String, AvailabilityItem>,
    /// Figures older than this many milliseconds are not shown (`--max-stale-seconds`).
    pub max_stale_ms: i64,
}

impl StockFigures {
    /// Available units if the figures may be shown: fresh, or stale within the bound.
    pub fn shown(&self, sku: &str, now: Timestamp) -> Option<&AvailabilityItem> {
        self.items.get(sku).filter(|item| !item.stale || !is_older(&item.as_of, now, self.max_stale_ms))
    }
}

fn is_older(as_of: &str, now: Timestamp, bound_ms: i64) -> bool {
    match time::OffsetDateTime::parse(as_of, &time::format_description::well_known::Rfc3339) {
        Ok(at) => now.millis() - (at.unix_timestamp_nanos() / 1_000_000) as i64 > bound_ms,
        Err(_) => true,
    }
}

impl CartRecord {
    pub fn view(&self, offers: &HashMap<String, Offer>, stock: &StockFigures, now: Timestamp) -> Cart {
        let mut subtotal = 0i64;
        let mut items = 0i64;
        let live_hold = self.live_hold(now);
        let lines = self
            .lines
            .iter()
            .map(|(sku, quantity)| {
                let price = offers.get(sku).and_then(|o| o.price_minor);
                if let Some(p) = price {
                    subtotal += p * quantity;
                }
                items += quantity;
                let shown = stock.shown(sku, now);
                CartLine {
                    sku: sku.clone(),
                    quantity: *quantity,
                    unit_price: price.map(|p| self.currency.format_amount(p)),
                    line_total: price.map(|p| self.currency.format_amount(p * quantity)),
                    available: shown.map(|i| i.available),
                    in_stock: shown.map(|i| i.in_stock),
                    stale: shown.is_none_or(|i| i.stale),
                    as_of: shown.map(|i| i.as_of.clone()),
                    held: if live_hold.is_some() { self.held_of(sku) } else { 0 },
                }
            })
            .collect();
        Cart {
            id: self.id.clone(),
            channel: self.channel.clone(),
            customer: self.customer.clone(),
            currency: self.currency.to_string(),
            status: self.status.clone(),
            order: self.order_id.clone(),
            lines,
            totals: CartTotals {
                subtotal: self.currency.format_amount(subtotal),
                items,
                currency: self.currency.to_string(),
            },
            hold_expires_at: live_hold.map(|(_, at)| Timestamp::from_millis(at).to_rfc3339()),
            created_at: self.created_at.clone(),
            updated_at: self.updated_at.clone(),
        }
    }

    pub fn skus(&self) -> Vec<String> {
        self.lines.iter().map(|(s, _)| s.clone()).collect()
    }

    /// The soft hold, if it has not expired.
    pub fn live_hold(&self, now: Timestamp) -> Option<(&str, i64)> {
        self.hold.as_ref().filter(|(_, at)| *at > now.millis()).map(|(id, at)| (id.as_str(), *at))
    }

    /// Units of `sku` the soft hold holds (expired or not).
    pub fn held_of(&self, sku: &str) -> i64 {
        self.held.get(sku).copied().unwrap_or(0)
    }
}

pub fn new_cart_id() -> String {
    format!("cart_{}", uuid::Uuid::now_v7().simple())
}

/// Accepts any id of the right shape; whether it exists is the store's question.
pub fn parse_cart_id(raw: &str) -> Option<String> {
    let ok = raw.len() <= 64 && raw.starts_with("cart_") && raw[5..].bytes().all(|b| b.is_ascii_hexdigit());
    ok.then(|| raw.to_owned())
}

pub async fn cart_create(
    tx: &mut Tx,
    id: &str,
    channel: &ChannelCode,
    customer: Option<String>,
    now: Timestamp,
) -> Result<CartRecord> {
    let config = catalog::channel::channel_in(tx, channel).await.map_err(|e| match e {
        catalog::CatalogError::NotFound { .. } => {
            OrderError::invalid("channel", format!("channel {channel} does not exist"))
        }
        other => other.into(),
    })?;
    let at = now.to_rfc3339();
    sqlx::query(
        "INSERT INTO carts (id, channel, customer, currency, status, version, order_id, created_at, updated_at, updated_at_ms) \
         VALUES ($1, $2, $3, $4, 'open', 0, NULL, $5, $5, $6)",
    )
    .bind(id.to_owned())
    .bind(channel.as_str().to_owned())
    .bind(customer.clone())
    .bind(config.currency.to_string())
    .bind(at.clone())
    .bind(now.millis())
    .execute(&mut **tx)
    .await?;
    Ok(CartRecord {
        id: id.to_owned(),
        channel: channel.as_str().to_owned(),
        customer,
        currency: config.currency,
        status: "open".into(),
        version: 0,
        order_id: None,
        lines: Vec::new(),
        hold: None,
        held: HashMap::new(),
        created_at: at.clone(),
        updated_at: at,
    })
}

#[derive(sqlx::FromRow)]
struct CartRow {
    id: String,
    channel: String,
    customer: Option<String>,
    currency: String,
    status: String,
    version: i64,
    order_id: Option<String>,
    hold_reservation: Option<String>,
    hold_expires_at_ms: Option<i64>,
    created_at: String,
    updated_at: String,
}

/// A cart and its lines, on the caller's connection.
pub async fn cart_in(conn: &mut sqlx::AnyConnection, id: &str) -> Result<CartRecord> {
    let row: Option<CartRow> = sqlx::query_as(
        "SELECT id, channel, customer, currency, status, version, order_id, hold_reservation, hold_expires_at_ms, \
         created_at, updated_at FROM carts WHERE id = $1",
    )
    .bind(id.to_owned())
    .fetch_optional(&mut *conn)
    .await?;
    let row = row.ok_or_else(|| OrderError::not_found("cart", id))?;
    let lines: Vec<(String, i64, i64)> =
        sqlx::query_as("SELECT sku, quantity, held FROM cart_lines WHERE cart_id = $1 ORDER BY position, sku")
            .bind(id.to_owned())
            .fetch_all(&mut *conn)
            .await?;
    Ok(CartRecord {
        id: row.id,
        channel: row.channel,
        customer: row.customer,
        currency: Currency::parse(&row.currency)
            .map_err(|_| store::StoreError::Corrupt(format!("cart currency {}", row.currency)))?,
        status: row.status,
        version: row.version,
        order_id: row.order_id,
        hold: row.hold_reservation.zip(row.hold_expires_at_ms),
        held: lines.iter().filter(|(_, _, h)| *h > 0).map(|(s, _, h)| (s.clone(), *h)).collect(),
        lines: lines.into_iter().map(|(s, q, _)| (s, q)).collect(),
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

pub async fn cart_get(pool: &sqlx::AnyPool, id: &str) -> Result<CartRecord> {
    let mut conn = pool.acquire().await?;
    cart_in(&mut conn, id).await
}

/// Refuses a change to a cart that was checked out.
fn open(cart: &CartRecord) -> Result<()> {
    if cart.status != "open" {
        return Err(OrderError::invalid_state("cart", &cart.status, "change its lines"));
    }
    Ok(())
}

/// Sets a line's quantity (`0` removes it), for `sku` whose offer the caller checked.
/// `add`: adds to the line's quantity instead of replacing it.
pub async fn cart_set_line(
    tx: &mut Tx,
    id: &str,
    sku: &str,
    quantity: i64,
    add: bool,
    now: Timestamp,
) -> Result<CartRecord> {
    let cart = cart_in(tx, id).await?;
    open(&cart)?;
    let current = cart.lines.iter().find(|(s, _)| s == sku).map(|(_, q)| *q);
    let wanted = if add { current.unwrap_or(0) + quantity } else { quantity };
    if wanted > QUANTITY_MAX {
        return Err(OrderError::invalid(
            "quantity",
            format!("the line would hold {wanted} units; at most {QUANTITY_MAX}"),
        ));
    }
    match (current, wanted) {
        (None, 0) => return Err(OrderError::not_found("cart line", format!("{id}/{sku}"))),
        (None, _) => {
            if cart.lines.len() >= CART_LINES_MAX {
                return Err(OrderError::invalid("sku", format!("a cart holds at most {CART_LINES_MAX} lines")));
            }
            let position: i64 = sqlx::query_scalar(
                "SELECT CAST(COALESCE(MAX(position), 0) + 1 AS BIGINT) FROM cart_lines WHERE cart_id = $1",
            )
            .bind(id.to_owned())
            .fetch_one(&mut **tx)
            .await?;
            sqlx::query("INSERT INTO cart_lines (cart_id, sku, quantity, position) VALUES ($1, $2, $3, $4)")
                .bind(id.to_owned())
                .bind(sku.to_owned())
                .bind(wanted)
                .bind(position)
                .execute(&mut **tx)
                .await?;
        }
        (Some(_), 0) => {
            sqlx::query("DELETE FROM cart_lines WHERE cart_id = $1 AND sku = $2")
                .bind(id.to_owned())
                .bind(sku.to_owned())
                .execute(&mut **tx)
                .await?;
        }
        (Some(_), _) => {
            sqlx::query("UPDATE cart_lines SET quantity = $3 WHERE cart_id = $1 AND sku = $2")
                .bind(id.to_owned())
                .bind(sku.to_owned())
                .bind(wanted)
                .execute(&mut **tx)
                .await?;
        }
    }
    // The version guard makes a checkout that read the cart before this change refuse it.
    sqlx::query(
        "UPDATE carts SET version = version + 1, updated_at = $2, updated_at_ms = $3 WHERE id = $1 AND status = 'open'",
    )
    .bind(id.to_owned())
    .bind(now.to_rfc3339())
    .bind(now.millis())
    .execute(&mut **tx)
    .await?;
    let cart = cart_in(tx, id).await?;
    let channel = ChannelCode::parse(&cart.channel)
        .map_err(|_| store::StoreError::Corrupt(format!("cart channel {}", cart.channel)))?;
    let config = catalog::channel::channel_in(tx, &channel).await?;
    if config.cart_hold_ttl_seconds > 0 || cart.hold.is_some() {
        renew_hold(tx, &cart, &config, now).await?;
        return cart_in(tx, id).await;
    }
    Ok(cart)
}

/// Releases a cart's soft hold if it still holds; one already released or expired is fine.
async fn release_hold(tx: &mut Tx, cart_id: &str, reservation: &str, now: Timestamp) -> Result<bool> {
    let released =
        match warehouse::reservation::release(tx, &ReservationId::from_stored(reservation.to_owned()), now).await {
            Ok(_) => true,
            Err(WarehouseError::InvalidState { .. } | WarehouseError::NotFound { .. }) => false,
            Err(e) => return Err(e.into()),
        };
    sqlx::query("UPDATE carts SET hold_reservation = NULL, hold_expires_at_ms = NULL WHERE id = $1")
        .bind(cart_id.to_owned())
        .execute(&mut **tx)
        .await?;
    sqlx::query("UPDATE cart_lines SET held = 0 WHERE cart_id = $1 AND held > 0")
        .bind(cart_id.to_owned())
        .execute(&mut **tx)
        .await?;
    Ok(released)
}

/// Replaces the cart's soft hold with one of its current lines, for the channel's
/// `cart_hold_ttl_seconds` from now: what the channel's warehouses have of each line, in
/// their order (a line short of stock holds what there is). With the channel's holds turned
/// off since, the old hold is only released.
async fn renew_hold(
    tx: &mut Tx,
    cart: &CartRecord,
    channel: &catalog::channel::ChannelConfig,
    now: Timestamp,
) -> Result<()> {
    if let Some((reservation, _)) = &cart.hold {
        release_hold(tx, &cart.id, reservation, now).await?;
    }
    if channel.cart_hold_ttl_seconds <= 0 || cart.lines.is_empty() {
        return Ok(());
    }
    let figures = warehouse::stock::sellable_by_warehouse(tx, &cart.skus(), &channel.warehouses, now, true).await?;
    let corrupt = |what: String| OrderError::Store(store::StoreError::Corrupt(what));
    let mut lines = Vec::new();
    let mut held: Vec<(String, i64)> = Vec::new();
    for (sku, quantity) in &cart.lines {
        let mut left = *quantity;
        for warehouse in &channel.warehouses {
            let sellable =
                figures.iter().find(|(s, w, _)| s == sku && w == warehouse).map(|(_, _, units)| *units).unwrap_or(0);
            let take = sellable.min(left);
            if take <= 0 {
                continue;
            }
            left -= take;
            lines.push(HoldLine {
                sku: SkuCode::parse(sku).map_err(|_| corrupt(format!("cart sku {sku}")))?,
                quantity: Quantity::new(take).map_err(|_| corrupt(format!("hold of {take}")))?,
                warehouse: Some(
                    WarehouseCode::parse(warehouse).map_err(|_| corrupt(format!("warehouse {warehouse}")))?,
                ),
            });
            if left == 0 {
                break;
            }
        }
        if quantity - left > 0 {
            held.push((sku.clone(), quantity - left));
        }
    }
    if lines.is_empty() {
        return Ok(());
    }
    let id = ReservationId::new();
    let command = HoldCommand {
        id: id.clone(),
        reference: format!("cart:{}", cart.id),
        ttl_seconds: channel.cart_hold_ttl_seconds,
        lines,
    };
    match warehouse::reservation::hold_batch(tx, vec![command], now).await?.pop() {
        Some(Ok(_)) => {}
        // Lots quarantined or expired under the figures: the cart holds nothing this time.
        Some(Err(WarehouseError::InsufficientStock { .. })) => return Ok(()),
        Some(Err(e)) => return Err(e.into()),
        None => return Err(corrupt("a hold batch of one answered nothing".into())),
    }
    sqlx::query("UPDATE carts SET hold_reservation = $2, hold_expires_at_ms = $3 WHERE id = $1")
        .bind(cart.id.clone())
        .bind(id.as_str().to_owned())
        .bind(now.plus_seconds(channel.cart_hold_ttl_seconds).millis())
        .execute(&mut **tx)
        .await?;
    for (sku, units) in held {
        sqlx::query("UPDATE cart_lines SET held = $3 WHERE cart_id = $1 AND sku = $2")
            .bind(cart.id.clone())
            .bind(sku)
            .bind(units)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Releases the soft hold of a cart being checked out, in the checkout's transaction, so the
/// units it held count for the order. Nothing happens for a cart that holds nothing.
pub async fn release_for_checkout(tx: &mut Tx, cart: &CartRecord, now: Timestamp) -> Result<()> {
    if let Some((reservation, _)) = &cart.hold {
        release_hold(tx, &cart.id, reservation, now).await?;
    }
    Ok(())
}

/// One run of the `order-carts` worker: releases the soft holds of open carts left alone past
/// their expiry (the sweeper may have expired the reservation already; the cart is cleaned
/// either way), each cart its own transaction. Answers how many carts it cleaned.
pub async fn release_abandoned(db: &Db, now: Timestamp, limit: i64) -> Result<usize> {
    let due: Vec<(String, String)> = sqlx::query_as(
        "SELECT id, hold_reservation FROM carts WHERE hold_expires_at_ms <= $1 AND hold_reservation IS NOT NULL \
         ORDER BY hold_expires_at_ms LIMIT $2",
    )
    .bind(now.millis())
    .bind(limit)
    .fetch_all(db.reader())
    .await?;
    let mut cleaned = 0;
    for (cart_id, reservation) in due {
        let mut tx = db.begin().await?;
        // Checked again under a lock: a line change may have renewed it meanwhile.
        let still: Option<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT hold_reservation FROM carts WHERE id = $1 AND hold_expires_at_ms <= $2{}",
            store::sql::Lock::ForUpdateSkipLocked.clause(store::db::backend_of(&tx))
        )))
        .bind(cart_id.clone())
        .bind(now.millis())
        .fetch_optional(&mut *tx)
        .await?
        .flatten();
        if still.as_deref() != Some(reservation.as_str()) {
            tx.rollback().await?;
            continue;
        }
        let released = release_hold(&mut tx, &cart_id, &reservation, now).await?;
        tx.commit().await?;
        cleaned += 1;
        metrics::counter!("stockroom_cart_holds_released_total", "by" => if released { "worker" } else { "sweeper" })
            .increment(1);
    }
    Ok(cleaned)
}

/// Marks a cart checked out by an order, if it is still open at `version`; why not otherwise.
pub async fn cart_check_out(tx: &mut Tx, id: &str, version: i64, order_id: &str, now: Timestamp) -> Result<()> {
    let done = sqlx::query(
        "UPDATE carts SET status = 'checked_out', order_id = $3, version = version + 1, updated_at = $4, updated_at_ms = $5 \
         WHERE id = $1 AND status = 'open' AND version = $2",
    )
    .bind(id.to_owned())
    .bind(version)
    .bind(order_id.to_owned())
    .bind(now.to_rfc3339())
    .bind(now.millis())
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if done == 1 {
        return Ok(());
    }
    let cart = cart_in(tx, id).await?;
    if cart.status != "open" {
        return Err(OrderError::invalid_state("cart", &cart.status, "be checked out"));
    }
    Err(OrderError::conflict(format!("cart {id} changed during checkout; read it and retry")))
}
