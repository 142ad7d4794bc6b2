//! An order as stored ([`OrderRecord`]) and as the API shows it ([`Order`]): one view
//! function serves a fresh checkout's answer and every later read, so they cannot drift.

use crate::Result;
use crate::error::OrderError;
use kernel::Currency;
use serde::{Deserialize, Serialize};
use store::Tx;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    AwaitingPayment,
    Paid,
    Fulfilled,
    Delivered,
    Cancelled,
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::AwaitingPayment => "awaiting_payment",
            OrderStatus::Paid => "paid",
            OrderStatus::Fulfilled => "fulfilled",
            OrderStatus::Delivered => "delivered",
            OrderStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Some(match raw {
            "awaiting_payment" => OrderStatus::AwaitingPayment,
            "paid" => OrderStatus::Paid,
            "fulfilled" => OrderStatus::Fulfilled,
            "delivered" => OrderStatus::Delivered,
            "cancelled" => OrderStatus::Cancelled,
            _ => return None,
        })
    }
}

/// What a line short of stock gets at checkout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Partial {
    /// The checkout is refused with 409 `insufficient_stock`; nothing is held.
    #[default]
    Reject,
    /// The line is cut to what is available.
    ShipAvailable,
    /// The rest is recorded as backordered and allocated when stock arrives.
    Backorder,
}

impl Partial {
    pub fn as_str(self) -> &'static str {
        match self {
            Partial::Reject => "reject",
            Partial::ShipAvailable => "ship_available",
            Partial::Backorder => "backorder",
        }
    }

    fn parse(raw: &str) -> Result<Self> {
        Ok(match raw {
            "reject" => Partial::Reject,
            "ship_available" => Partial::ShipAvailable,
            "backorder" => Partial::Backorder,
            other => return Err(store::StoreError::Corrupt(format!("order line partial {other}")).into()),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Address {
    /// ISO 3166-1 alpha-2, e.g. `DE`.
    pub country: String,
    #[serde(default)]
    pub postal_code: Option<String>,
    #[serde(default)]
    pub latitude: Option<f64>,
    #[serde(default)]
    pub longitude: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LineRecord {
    pub position: i64,
    pub sku: String,
    pub quantity: i64,
    pub unit_price_minor: i64,
    pub discount_minor: i64,
    pub backordered: i64,
    pub cancelled: i64,
    pub returned: i64,
    pub partial: Partial,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AllocationRecord {
    pub sku: String,
    pub warehouse: String,
    pub reservation_id: String,
    pub quantity: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Payment {
    pub provider: String,
    pub reference: String,
    pub status: String,
    pub amount: String,
    pub currency: String,
    pub created_at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FulfillmentLine {
    pub sku: String,
    pub quantity: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Fulfillment {
    pub id: String,
    pub warehouse: String,
    /// `requested` (the fulfilment context takes it from there) or `cancelled`.
    pub status: String,
    pub lines: Vec<FulfillmentLine>,
    /// Set once its packages are weighed: shipping as planned and as weighed.
    #[serde(default)]
    pub shipping: Option<ShippingAdjustment>,
    pub created_at: String,
}

/// A requested fulfilment as stored; [`Fulfillment`] is its view.
#[derive(Debug, Clone, PartialEq)]
pub struct FulfillmentRecord {
    pub id: String,
    pub warehouse: String,
    pub status: String,
    pub lines: Vec<FulfillmentLine>,
    /// `(planned, actual)` shipping in minor units, once packed.
    pub shipping_minor: Option<(i64, i64)>,
    pub created_at: String,
}

/// A fulfilment's shipping as the checkout planned it and as its packages weighed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ShippingAdjustment {
    pub planned: String,
    pub actual: String,
    /// Actual less planned.
    pub adjustment: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AppliedPromotion {
    pub code: String,
    pub discount: String,
    /// `held` (awaiting payment), `kept` (paid) or `released`.
    pub status: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OrderRecord {
    pub id: String,
    pub channel: String,
    pub customer: Option<String>,
    pub cart_id: Option<String>,
    pub currency: Currency,
    pub status: OrderStatus,
    pub subtotal_minor: i64,
    pub discount_minor: i64,
    pub shipping_minor: i64,
    pub total_minor: i64,
    pub paid_minor: i64,
    pub address: Address,
    /// `{"strategy", "explanation", "shipments"}` as planned at checkout.
    pub sourcing: serde_json::Value,
    pub hold_expires_at_ms: i64,
    pub cancel_reason: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub lines: Vec<LineRecord>,
    pub allocations: Vec<AllocationRecord>,
    pub payments: Vec<(String, String, String, i64, String, String)>,
    pub fulfillments: Vec<FulfillmentRecord>,
    /// `(code, discount, status)`.
    pub promotions: Vec<(String, i64, String)>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Allocated {
    pub warehouse: String,
    pub quantity: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OrderLine {
    pub sku: String,
    /// Ordered: allocated + backordered + cancelled.
    pub quantity: i64,
    pub unit_price: String,
    /// Of the whole line, from promotions.
    pub discount: String,
    pub allocated: Vec<Allocated>,
    pub backordered: i64,
    pub cancelled: i64,
    pub returned: i64,
    pub partial: Partial,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OrderTotals {
    pub subtotal: String,
    pub discount: String,
    /// As charged at checkout.
    pub shipping: String,
    /// Weighed shipping less planned, over the fulfilments packed so far (not charged: the
    /// order's total stays what was paid).
    pub shipping_adjustment: String,
    pub total: String,
    /// Authorized or captured, less refunded.
    pub paid: String,
    pub currency: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Order {
    pub id: String,
    pub status: OrderStatus,
    pub channel: String,
    pub customer: Option<String>,
    pub cart: Option<String>,
    pub currency: String,
    pub lines: Vec<OrderLine>,
    pub fulfillments: Vec<Fulfillment>,
    /// `{"strategy", "explanation", "shipments"}`: the plan made at checkout and why.
    #[schema(value_type = Object)]
    pub sourcing: serde_json::Value,
    pub payments: Vec<Payment>,
    pub promotions: Vec<AppliedPromotion>,
    pub shipping_address: Address,
    pub totals: OrderTotals,
    /// Until when the checkout's holds wait for payment.
    pub hold_expires_at: String,
    /// `requested`, `payment_failed` or `hold_expired` for a cancelled order.
    pub cancel_reason: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl OrderRecord {
    pub fn view(&self) -> Order {
        let money = |m: i64| self.currency.format_amount(m);
        let lines = self
            .lines
            .iter()
            .map(|l| OrderLine {
                sku: l.sku.clone(),
                quantity: l.quantity,
                unit_price: money(l.unit_price_minor),
                discount: money(l.discount_minor),
                allocated: self.allocations.iter().filter(|a| a.sku == l.sku).fold(
                    Vec::<Allocated>::new(),
                    |mut acc, a| {
                        match acc.iter_mut().find(|x| x.warehouse == a.warehouse) {
                            Some(x) => x.quantity += a.quantity,
                            None => acc.push(Allocated { warehouse: a.warehouse.clone(), quantity: a.quantity }),
                        }
                        acc
                    },
                ),
                backordered: l.backordered,
                cancelled: l.cancelled,
                returned: l.returned,
                partial: l.partial,
            })
            .collect();
        Order {
            id: self.id.clone(),
            status: self.status,
            channel: self.channel.clone(),
            customer: self.customer.clone(),
            cart: self.cart_id.clone(),
            currency: self.currency.to_string(),
            lines,
            fulfillments: self
                .fulfillments
                .iter()
                .map(|f| Fulfillment {
                    id: f.id.clone(),
                    warehouse: f.warehouse.clone(),
                    status: f.status.clone(),
                    lines: f.lines.clone(),
                    shipping: f.shipping_minor.map(|(planned, actual)| ShippingAdjustment {
                        planned: money(planned),
                        actual: money(actual),
                        adjustment: money(actual - planned),
                    }),
                    created_at: f.created_at.clone(),
                })
                .collect(),
            sourcing: self.sourcing.clone(),
            payments: self
                .payments
                .iter()
                .map(|(provider, reference, status, amount, currency, at)| Payment {
                    provider: provider.clone(),
                    reference: reference.clone(),
                    status: status.clone(),
                    amount: money(*amount),
                    currency: currency.clone(),
                    created_at: at.clone(),
                })
                .collect(),
            promotions: self
                .promotions
                .iter()
                .map(|(code, discount, status)| AppliedPromotion {
                    code: code.clone(),
                    discount: money(*discount),
                    status: status.clone(),
                })
                .collect(),
            shipping_address: self.address.clone(),
            totals: OrderTotals {
                subtotal: money(self.subtotal_minor),
                discount: money(self.discount_minor),
                shipping: money(self.shipping_minor),
                shipping_adjustment: money(
                    self.fulfillments
                        .iter()
                        .filter_map(|f| f.shipping_minor)
                        .map(|(planned, actual)| actual - planned)
                        .sum(),
                ),
                total: money(self.total_minor),
                paid: money(self.paid_minor),
                currency: self.currency.to_string(),
            },
            hold_expires_at: kernel::Timestamp::from_millis(self.hold_expires_at_ms).to_rfc3339(),
            cancel_reason: self.cancel_reason.clone(),
            created_at: self.created_at.clone(),
            updated_at: self.updated_at.clone(),
        }
    }

    /// The distinct reservations holding this order's stock.
    pub fn reservations(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.allocations.iter().map(|a| a.reservation_id.clone()).collect();
        ids.sort();
        ids.dedup();
        ids
    }
}

pub fn new_order_id() -> String {
    format!("ord_{}", uuid::Uuid::now_v7().simple())
}

pub fn parse_order_id(raw: &str) -> Option<String> {
    let ok = raw.len() <= 64 && raw.starts_with("ord_") && raw[4..].bytes().all(|b| b.is_ascii_hexdigit());
    ok.then(|| raw.to_owned())
}

/// Records what a packed fulfilment's packages cost to ship beside what the checkout planned;
/// the order shows the difference (`totals.shipping_adjustment`).
pub async fn record_shipping(tx: &mut Tx, fulfillment: &str, planned_minor: i64, actual_minor: i64) -> Result<()> {
    sqlx::query("UPDATE order_fulfillments SET shipping_planned_minor = $2, shipping_actual_minor = $3 WHERE id = $1")
        .bind(fulfillment.to_owned())
        .bind(planned_minor)
        .bind(actual_minor)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Writes a new order and its lines and allocations.
pub async fn order_insert(tx: &mut Tx, order: &OrderRecord) -> Result<()> {
    sqlx::query(
        "INSERT INTO orders (id, channel, customer, cart_id, currency, status, subtotal_minor, discount_minor, shipping_minor, \
         total_minor, paid_minor, shipping_address, sourcing, hold_expires_at_ms, cancel_reason, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
    )
    .bind(order.id.clone())
    .bind(order.channel.clone())
    .bind(order.customer.clone())
    .bind(order.cart_id.clone())
    .bind(order.currency.to_string())
    .bind(order.status.as_str())
    .bind(order.subtotal_minor)
    .bind(order.discount_minor)
    .bind(order.shipping_minor)
    .bind(order.total_minor)
    .bind(order.paid_minor)
    .bind(serde_json::to_string(&order.address).unwrap_or_default())
    .bind(order.sourcing.to_string())
    .bind(order.hold_expires_at_ms)
    .bind(order.cancel_reason.clone())
    .bind(order.created_at.clone())
    .bind(order.updated_at.clone())
    .execute(&mut **tx)
    .await?;
    let mut values = store::sql::Values::new(tx, 10);
    for l in &order.lines {
        values
            .row()
            .text(order.id.clone())
            .int(l.position)
            .text(l.sku.clone())
            .int(l.quantity)
            .int(l.unit_price_minor)
            .int(l.discount_minor)
            .int(l.backordered)
            .int(l.cancelled)
            .int(l.returned)
            .text(l.partial.as_str());
    }
    values
        .query(
            "INSERT INTO order_lines (order_id, position, sku, quantity, unit_price_minor, discount_minor, backordered, cancelled, returned, partial) VALUES {values}",
        )
        .execute(&mut **tx)
        .await?;
    if !order.allocations.is_empty() {
        let mut values = store::sql::Values::new(tx, 5);
        for a in &order.allocations {
            values
                .row()
                .text(order.id.clone())
                .text(a.sku.clone())
                .text(a.warehouse.clone())
                .text(a.reservation_id.clone())
                .int(a.quantity);
        }
        values
            .query("INSERT INTO order_allocations (order_id, sku, warehouse, reservation_id, quantity) VALUES {values}")
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// position, sku, quantity, unit price, discount, backordered, cancelled, returned, partial.
type LineRow = (i64, String, i64, i64, i64, i64, i64, i64, String);

#[derive(sqlx::FromRow)]
struct OrderRow {
    id: String,
    channel: String,
    customer: Option<String>,
    cart_id: Option<String>,
    currency: String,
    status: String,
    subtotal_minor: i64,
    discount_minor: i64,
    shipping_minor: i64,
    total_minor: i64,
    paid_minor: i64,
    shipping_address: String,
    sourcing: String,
    hold_expires_at_ms: i64,
    cancel_reason: Option<String>,
    created_at: String,
    updated_at: String,
}

const ORDER_COLUMNS: &str = "id, channel, customer, cart_id, currency, status, subtotal_minor, discount_minor, shipping_minor, \
     total_minor, paid_minor, shipping_address, sourcing, hold_expires_at_ms, cancel_reason, created_at, updated_at";

fn corrupt(what: String) -> OrderError {
    OrderError::Store(store::StoreError::Corrupt(what))
}

/// An order with everything it shows, on the caller's connection; with `lock`, its row is
/// locked until the caller's transaction ends (on PostgreSQL; SQLite writers exclude each
/// other anyway).
pub async fn order_in(conn: &mut sqlx::AnyConnection, id: &str, lock: bool) -> Result<OrderRecord> {
    let select = format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1");
    let sql = if lock {
        format!("{select}{}", store::sql::Lock::ForUpdate.clause(store::db::backend_of(conn)))
    } else {
        select
    };
    let row: Option<OrderRow> =
        sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(id.to_owned()).fetch_optional(&mut *conn).await?;
    let row = row.ok_or_else(|| OrderError::not_found("order", id))?;
    let lines: Vec<LineRow> = sqlx::query_as(
        "SELECT position, sku, quantity, unit_price_minor, discount_minor, backordered, cancelled, returned, partial \
         FROM order_lines WHERE order_id = $1 ORDER BY position",
    )
    .bind(id.to_owned())
    .fetch_all(&mut *conn)
    .await?;
    let allocations: Vec<(String, String, String, i64)> = sqlx::query_as(
        "SELECT sku, warehouse, reservation_id, quantity FROM order_allocations WHERE order_id = $1 ORDER BY sku, warehouse, reservation_id",
    )
    .bind(id.to_owned())
    .fetch_all(&mut *conn)
    .await?;
    let payments: Vec<(String, String, String, i64, String, String)> = sqlx::query_as(
        "SELECT provider, reference, status, amount_minor, currency, created_at FROM payments WHERE order_id = $1 \
         ORDER BY created_at, provider, reference, status",
    )
    .bind(id.to_owned())
    .fetch_all(&mut *conn)
    .await?;
    #[expect(clippy::type_complexity, reason = "one row of order_fulfillments")]
    let fulfillments: Vec<(String, String, String, String, Option<i64>, Option<i64>, String)> = sqlx::query_as(
        "SELECT id, warehouse, status, lines, shipping_planned_minor, shipping_actual_minor, created_at \
         FROM order_fulfillments WHERE order_id = $1 ORDER BY id",
    )
    .bind(id.to_owned())
    .fetch_all(&mut *conn)
    .await?;
    let promotions: Vec<(String, i64, String)> =
        sqlx::query_as("SELECT code, discount_minor, status FROM promotion_uses WHERE order_id = $1 ORDER BY code")
            .bind(id.to_owned())
            .fetch_all(&mut *conn)
            .await?;
    let currency = Currency::parse(&row.currency).map_err(|_| corrupt(format!("order currency {}", row.currency)))?;
    let status = OrderStatus::parse(&row.status).ok_or_else(|| corrupt(format!("order status {}", row.status)))?;
    let lines = lines
        .into_iter()
        .map(
            |(position, sku, quantity, unit_price_minor, discount_minor, backordered, cancelled, returned, partial)| {
                Ok(LineRecord {
                    position,
                    sku,
                    quantity,
                    unit_price_minor,
                    discount_minor,
                    backordered,
                    cancelled,
                    returned,
                    partial: Partial::parse(&partial)?,
                })
            },
        )
        .collect::<Result<Vec<_>>>()?;
    let fulfillments = fulfillments
        .into_iter()
        .map(|(id, warehouse, status, lines, planned, actual, created_at)| {
            Ok(FulfillmentRecord {
                id,
                warehouse,
                status,
                lines: serde_json::from_str(&lines).map_err(|_| corrupt("fulfillment lines".into()))?,
                shipping_minor: planned.zip(actual),
                created_at,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(OrderRecord {
        id: row.id,
        channel: row.channel,
        customer: row.customer,
        cart_id: row.cart_id,
        currency,
        status,
        subtotal_minor: row.subtotal_minor,
        discount_minor: row.discount_minor,
        shipping_minor: row.shipping_minor,
        total_minor: row.total_minor,
        paid_minor: row.paid_minor,
        address: serde_json::from_str(&row.shipping_address).map_err(|_| corrupt("order address".into()))?,
        sourcing: serde_json::from_str(&row.sourcing).map_err(|_| corrupt("order sourcing".into()))?,
        hold_expires_at_ms: row.hold_expires_at_ms,
        cancel_reason: row.cancel_reason,
        created_at: row.created_at,
        updated_at: row.updated_at,
        lines,
        allocations: allocations
            .into_iter()
            .map(|(sku, warehouse, reservation_id, quantity)| AllocationRecord {
                sku,
                warehouse,
                reservation_id,
                quantity,
            })
            .collect(),
        payments,
        fulfillments,
        promotions,
    })
}

pub async fn order_get(pool: &sqlx::AnyPool, id: &str) -> Result<Order> {
    let mut conn = pool.acquire().await?;
    Ok(order_in(&mut conn, id, false).await?.view())
}

#[derive(Debug, Clone, Default)]
pub struct OrderFilter {
    pub customer: Option<String>,
    pub status: Option<OrderStatus>,
}

/// Orders newest first (ids are time-ordered), after a cursor.
pub async fn orders_list(
    pool: &sqlx::AnyPool,
    filter: &OrderFilter,
    before: Option<&str>,
    limit: u32,
) -> Result<Vec<Order>> {
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT id FROM orders WHERE ($1 IS NULL OR customer = $1) AND ($2 IS NULL OR status = $2) AND ($3 IS NULL OR id < $3) \
         ORDER BY id DESC LIMIT $4",
    )
    .bind(filter.customer.clone())
    .bind(filter.status.map(|s| s.as_str()))
    .bind(before.map(str::to_owned))
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    let mut conn = pool.acquire().await?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        out.push(order_in(&mut conn, &id, false).await?.view());
    }
    Ok(out)
}
