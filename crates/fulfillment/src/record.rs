//! Fulfilments as stored and as the API shows them.

use crate::{FulfillmentError, Result};
use serde::{Deserialize, Serialize};
use sqlx::AnyPool;
use store::Tx;

/// `pending` → `picking` → `picked` → `packed` → `shipped` → `delivered`; `on_hold` and
/// `cancelled` on the side. Picking and packing are not built yet: a fulfilment ships from
/// `pending` or `packed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FulfillmentStatus {
    Pending,
    Picking,
    Picked,
    Packed,
    Shipped,
    Delivered,
    OnHold,
    Cancelled,
}

impl FulfillmentStatus {
    pub const ALL: [Self; 8] = [
        Self::Pending,
        Self::Picking,
        Self::Picked,
        Self::Packed,
        Self::Shipped,
        Self::Delivered,
        Self::OnHold,
        Self::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Picking => "picking",
            Self::Picked => "picked",
            Self::Packed => "packed",
            Self::Shipped => "shipped",
            Self::Delivered => "delivered",
            Self::OnHold => "on_hold",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == raw)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FulfillmentLine {
    pub sku: String,
    pub quantity: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Fulfillment {
    pub id: String,
    pub order: String,
    pub warehouse: String,
    pub status: FulfillmentStatus,
    /// Why it is `on_hold`; `null` otherwise.
    pub hold_reason: Option<String>,
    pub lines: Vec<FulfillmentLine>,
    /// Set when it ships.
    pub carrier: Option<String>,
    pub tracking: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub shipped_at: Option<String>,
    pub delivered_at: Option<String>,
}

pub(crate) const COLUMNS: &str = "id, order_id, warehouse, status, hold_reason, lines, carrier, tracking, created_at, \
                                  updated_at, shipped_at, delivered_at";

#[derive(sqlx::FromRow)]
pub(crate) struct Row {
    id: String,
    order_id: String,
    warehouse: String,
    status: String,
    hold_reason: Option<String>,
    lines: String,
    carrier: Option<String>,
    tracking: Option<String>,
    created_at: String,
    updated_at: String,
    shipped_at: Option<String>,
    delivered_at: Option<String>,
}

impl Row {
    pub(crate) fn into_view(self) -> Result<Fulfillment> {
        let corrupt = |what: &str| store::StoreError::Corrupt(format!("fulfillment {}: {what}", self.id));
        let status = FulfillmentStatus::parse(&self.status).ok_or_else(|| corrupt("unknown status"))?;
        let lines = serde_json::from_str(&self.lines).map_err(|_| corrupt("lines are not JSON"))?;
        Ok(Fulfillment {
            id: self.id,
            order: self.order_id,
            warehouse: self.warehouse,
            status,
            hold_reason: self.hold_reason,
            lines,
            carrier: self.carrier,
            tracking: self.tracking,
            created_at: self.created_at,
            updated_at: self.updated_at,
            shipped_at: self.shipped_at,
            delivered_at: self.delivered_at,
        })
    }
}

fn not_found(id: &str) -> FulfillmentError {
    FulfillmentError::not_found("fulfillment", id)
}

pub async fn fulfillment_get(pool: &AnyPool, id: &str) -> Result<Fulfillment> {
    let row: Option<Row> =
        sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM fulfillments WHERE id = $1")))
            .bind(id.to_owned())
            .fetch_optional(pool)
            .await
            .map_err(store::StoreError::from)?;
    row.ok_or_else(|| not_found(id))?.into_view()
}

/// The fulfilment inside `tx`, its row locked on PostgreSQL until commit.
pub(crate) async fn fulfillment_locked(tx: &mut Tx, id: &str) -> Result<Fulfillment> {
    let lock = store::sql::Lock::ForUpdate.clause(store::db::backend_of(tx));
    let row: Option<Row> =
        sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM fulfillments WHERE id = $1{lock}")))
            .bind(id.to_owned())
            .fetch_optional(&mut **tx)
            .await
            .map_err(store::StoreError::from)?;
    row.ok_or_else(|| not_found(id))?.into_view()
}

#[derive(Debug, Clone, Default)]
pub struct FulfillmentFilter {
    pub order: Option<String>,
    pub warehouse: Option<String>,
    pub status: Option<FulfillmentStatus>,
}

/// Fulfilments oldest first (ids are time-ordered), after the id `after`.
pub async fn fulfillments_list(
    pool: &AnyPool,
    filter: &FulfillmentFilter,
    after: Option<&str>,
    limit: u32,
) -> Result<Vec<Fulfillment>> {
    let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM fulfillments WHERE id > $1 AND ($2 = '' OR order_id = $2) \
         AND ($3 = '' OR warehouse = $3) AND ($4 = '' OR status = $4) ORDER BY id LIMIT $5"
    )))
    .bind(after.unwrap_or("").to_owned())
    .bind(filter.order.clone().unwrap_or_default())
    .bind(filter.warehouse.clone().unwrap_or_default())
    .bind(filter.status.map(|s| s.as_str().to_owned()).unwrap_or_default())
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await
    .map_err(store::StoreError::from)?;
    rows.into_iter().map(Row::into_view).collect()
}
