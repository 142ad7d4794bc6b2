//! Fulfilments as stored and as the API shows them.

use crate::settings::{Settings, WeightTolerance, settings_of};
use crate::{FulfillmentError, Result};
use serde::{Deserialize, Serialize};
use sqlx::AnyPool;
use std::collections::HashMap;
use store::Tx;

/// `pending` → `picking` → `picked` → `packed` → `shipped` → `delivered`; `on_hold` and
/// `cancelled` on the side.
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
    /// The pick list it was picked on.
    pub picklist: Option<String>,
    /// As packed and weighed; empty before packing.
    pub packages: Vec<Package>,
    /// The items' weights plus packaging for each package (one before packing).
    pub expected_weight_grams: i64,
    /// What a package may weigh off its expected weight: the larger of the two.
    pub weight_tolerance: WeightTolerance,
    /// Shipping as recomputed from the weighed packages and the warehouse's rates; `null`
    /// before packing or when the warehouse has no rate to the order's country.
    pub shipping: Option<ShippingCost>,
    pub created_at: String,
    pub updated_at: String,
    pub shipped_at: Option<String>,
    pub delivered_at: Option<String>,
}

/// A weighed package.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Package {
    pub weight_grams: i64,
    pub expected_weight_grams: i64,
    /// Weighed less expected.
    pub difference_grams: i64,
    pub lines: Vec<FulfillmentLine>,
}

/// Shipping of a packed fulfilment: as planned at checkout and as weighed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ShippingCost {
    /// From the checkout's plan for this warehouse.
    pub planned: String,
    /// From the weighed packages.
    pub actual: String,
    /// Actual less planned: what the order's shipping is adjusted by.
    pub adjustment: String,
    pub currency: String,
}

pub(crate) const COLUMNS: &str = "id, order_id, warehouse, status, hold_reason, lines, carrier, tracking, picklist_id, \
                                  packages, shipping, created_at, updated_at, shipped_at, delivered_at";

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
    picklist_id: Option<String>,
    packages: Option<String>,
    shipping: Option<String>,
    created_at: String,
    updated_at: String,
    shipped_at: Option<String>,
    delivered_at: Option<String>,
}

impl Row {
    /// The view, with weights filled in by [`weigh`].
    fn into_view(self) -> Result<Fulfillment> {
        let corrupt = |what: &str| store::StoreError::Corrupt(format!("fulfillment {}: {what}", self.id));
        let status = FulfillmentStatus::parse(&self.status).ok_or_else(|| corrupt("unknown status"))?;
        let lines = serde_json::from_str(&self.lines).map_err(|_| corrupt("lines are not JSON"))?;
        let packages = match &self.packages {
            Some(json) => serde_json::from_str(json).map_err(|_| corrupt("packages are not JSON"))?,
            None => Vec::new(),
        };
        let shipping = match &self.shipping {
            Some(json) => Some(serde_json::from_str(json).map_err(|_| corrupt("shipping is not JSON"))?),
            None => None,
        };
        Ok(Fulfillment {
            id: self.id,
            order: self.order_id,
            warehouse: self.warehouse,
            status,
            hold_reason: self.hold_reason,
            lines,
            carrier: self.carrier,
            tracking: self.tracking,
            picklist: self.picklist_id,
            packages,
            expected_weight_grams: 0,
            weight_tolerance: Settings::default().tolerance(),
            shipping,
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
    let mut conn = pool.acquire().await.map_err(store::StoreError::from)?;
    Ok(weigh(&mut conn, vec![row.ok_or_else(|| not_found(id))?.into_view()?]).await?.remove(0))
}

/// Fills in the expected weights and tolerances: one read of the items' weights and one of
/// each warehouse's settings.
pub(crate) async fn weigh(conn: &mut sqlx::AnyConnection, mut views: Vec<Fulfillment>) -> Result<Vec<Fulfillment>> {
    let mut skus: Vec<String> = views.iter().flat_map(|f| f.lines.iter().map(|l| l.sku.clone())).collect();
    skus.sort();
    skus.dedup();
    let weights = warehouse::item::weights_of(conn, &skus).await?;
    let mut settings: HashMap<String, Settings> = HashMap::new();
    for view in &mut views {
        if !settings.contains_key(&view.warehouse) {
            let these = settings_of(conn, &view.warehouse).await?;
            settings.insert(view.warehouse.clone(), these);
        }
        let these = settings[&view.warehouse];
        let items: i64 =
            view.lines.iter().map(|l| l.quantity * weights.get(&l.sku).copied().flatten().unwrap_or(0)).sum();
        view.expected_weight_grams = items + these.packaging_grams * (view.packages.len().max(1) as i64);
        view.weight_tolerance = these.tolerance();
    }
    Ok(views)
}

/// The fulfilment inside `tx`, its row locked on PostgreSQL until commit, as an answer: with
/// its expected weight and tolerance.
pub(crate) async fn fulfillment_answer(tx: &mut Tx, id: &str) -> Result<Fulfillment> {
    let fulfillment = fulfillment_locked(tx, id).await?;
    Ok(weigh(tx, vec![fulfillment]).await?.remove(0))
}

/// The fulfilment inside `tx`, its row locked on PostgreSQL until commit. Its weight figures
/// are not filled in (the steps that lock it do not read them; [`fulfillment_answer`] does).
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
    let views = rows.into_iter().map(Row::into_view).collect::<Result<Vec<_>>>()?;
    let mut conn = pool.acquire().await.map_err(store::StoreError::from)?;
    weigh(&mut conn, views).await
}
