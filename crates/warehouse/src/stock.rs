//! Stock levels: one row per warehouse and SKU, changed only by guarded `UPDATE`s.
//!
//! Every function here that changes a level does its arithmetic in SQL with the invariant in
//! the `WHERE` clause and returns the level after the change, or `None` when the guard did not
//! hold. The CHECK constraints `stock_reserved_*` back the same rules in the database.

use crate::{Result, WarehouseError};
use kernel::{SkuCode, WarehouseCode};
use serde::Serialize;
use sqlx::{AnyPool, FromRow};
use store::Tx;
use store::sql::list_placeholders;

/// A level after a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromRow)]
pub struct Level {
    pub on_hand: i64,
    pub reserved: i64,
}

impl Level {
    pub fn available(self) -> i64 {
        self.on_hand - self.reserved
    }
}

fn key(sku: &SkuCode, warehouse: &WarehouseCode) -> (String, String) {
    (sku.as_str().to_owned(), warehouse.as_str().to_owned())
}

/// Adds `units` to on hand, creating the level if needed.
pub async fn stock_level_receive(tx: &mut Tx, sku: &SkuCode, warehouse: &WarehouseCode, units: i64) -> Result<Level> {
    let (sku, warehouse) = key(sku, warehouse);
    let result = sqlx::query_as(
        "INSERT INTO stock_levels (sku, warehouse, on_hand, reserved) VALUES ($1, $2, $3, 0) \
         ON CONFLICT (sku, warehouse) DO UPDATE SET on_hand = stock_levels.on_hand + excluded.on_hand \
         RETURNING on_hand, reserved",
    )
    .bind(sku.clone())
    .bind(warehouse)
    .bind(units)
    .fetch_one(&mut **tx)
    .await;
    match result {
        Ok(level) => Ok(level),
        Err(e) if store::error::constraint_of(&e) == Some("stock_on_hand_bounded") => {
            Err(WarehouseError::Conflict(format!("stock of {sku} would exceed the largest level a warehouse may hold")))
        }
        Err(e) => Err(e.into()),
    }
}

/// Takes `units` of available stock out of on hand (transfer out, negative adjustment).
pub async fn stock_level_take(
    tx: &mut Tx,
    sku: &SkuCode,
    warehouse: &WarehouseCode,
    units: i64,
) -> Result<Option<Level>> {
    let (sku, warehouse) = key(sku, warehouse);
    Ok(sqlx::query_as(
        "UPDATE stock_levels SET on_hand = on_hand - $1 \
         WHERE sku = $2 AND warehouse = $3 AND on_hand - reserved - quarantined >= $1 RETURNING on_hand, reserved",
    )
    .bind(units)
    .bind(sku)
    .bind(warehouse)
    .fetch_optional(&mut **tx)
    .await?)
}

/// Sets on hand to `counted` if it still is `expected` and stays at or above reserved.
pub async fn stock_level_set_counted(
    tx: &mut Tx,
    sku: &SkuCode,
    warehouse: &WarehouseCode,
    expected: i64,
    counted: i64,
) -> Result<Option<Level>> {
    let (sku, warehouse) = key(sku, warehouse);
    Ok(sqlx::query_as(
        "UPDATE stock_levels SET on_hand = $1 \
         WHERE sku = $2 AND warehouse = $3 AND on_hand = $4 AND reserved + quarantined <= $1 RETURNING on_hand, reserved",
    )
    .bind(counted)
    .bind(sku)
    .bind(warehouse)
    .bind(expected)
    .fetch_optional(&mut **tx)
    .await?)
}

/// Reserves `units` if that many are available.
pub async fn stock_level_hold(
    tx: &mut Tx,
    sku: &SkuCode,
    warehouse: &WarehouseCode,
    units: i64,
) -> Result<Option<Level>> {
    let (sku, warehouse) = key(sku, warehouse);
    Ok(sqlx::query_as(
        "UPDATE stock_levels SET reserved = reserved + $1 \
         WHERE sku = $2 AND warehouse = $3 AND on_hand - reserved - quarantined >= $1 RETURNING on_hand, reserved",
    )
    .bind(units)
    .bind(sku)
    .bind(warehouse)
    .fetch_optional(&mut **tx)
    .await?)
}

/// Gives back `units` of reserved stock (release, expiry).
pub async fn stock_level_unhold(tx: &mut Tx, sku: &SkuCode, warehouse: &WarehouseCode, units: i64) -> Result<Level> {
    let (sku_s, warehouse_s) = key(sku, warehouse);
    sqlx::query_as(
        "UPDATE stock_levels SET reserved = reserved - $1 \
         WHERE sku = $2 AND warehouse = $3 AND reserved >= $1 RETURNING on_hand, reserved",
    )
    .bind(units)
    .bind(sku_s)
    .bind(warehouse_s)
    .fetch_optional(&mut **tx)
    .await?
    .ok_or_else(|| broken_invariant(sku, warehouse, "reserved below a reservation's hold"))
}

/// Ships `units` of reserved stock: on hand and reserved both go down.
pub async fn stock_level_ship(tx: &mut Tx, sku: &SkuCode, warehouse: &WarehouseCode, units: i64) -> Result<Level> {
    let (sku_s, warehouse_s) = key(sku, warehouse);
    sqlx::query_as(
        "UPDATE stock_levels SET on_hand = on_hand - $1, reserved = reserved - $1 \
         WHERE sku = $2 AND warehouse = $3 AND reserved >= $1 RETURNING on_hand, reserved",
    )
    .bind(units)
    .bind(sku_s)
    .bind(warehouse_s)
    .fetch_optional(&mut **tx)
    .await?
    .ok_or_else(|| broken_invariant(sku, warehouse, "reserved below a reservation's hold"))
}

fn broken_invariant(sku: &SkuCode, warehouse: &WarehouseCode, what: &str) -> WarehouseError {
    tracing::error!(%sku, %warehouse, what, "stock invariant broken");
    WarehouseError::Store(store::StoreError::Corrupt(format!("stock {warehouse}/{sku}: {what}")))
}

/// The current level of one warehouse and SKU in the transaction, if it has a row.
pub async fn stock_level_find(tx: &mut Tx, sku: &SkuCode, warehouse: &WarehouseCode) -> Result<Option<Level>> {
    let (sku, warehouse) = key(sku, warehouse);
    Ok(sqlx::query_as("SELECT on_hand, reserved FROM stock_levels WHERE sku = $1 AND warehouse = $2")
        .bind(sku)
        .bind(warehouse)
        .fetch_optional(&mut **tx)
        .await?)
}

/// The current level of one warehouse and SKU in the transaction (zero if there is none).
pub async fn stock_level_in_tx(tx: &mut Tx, sku: &SkuCode, warehouse: &WarehouseCode) -> Result<Level> {
    Ok(stock_level_find(tx, sku, warehouse).await?.unwrap_or(Level { on_hand: 0, reserved: 0 }))
}

/// Creates the level with `on_hand` units unless it exists.
pub async fn stock_level_create(
    tx: &mut Tx,
    sku: &SkuCode,
    warehouse: &WarehouseCode,
    on_hand: i64,
) -> Result<Option<Level>> {
    let (sku, warehouse) = key(sku, warehouse);
    Ok(sqlx::query_as(
        "INSERT INTO stock_levels (sku, warehouse, on_hand, reserved) VALUES ($1, $2, $3, 0) \
         ON CONFLICT (sku, warehouse) DO NOTHING RETURNING on_hand, reserved",
    )
    .bind(sku)
    .bind(warehouse)
    .bind(on_hand)
    .fetch_optional(&mut **tx)
    .await?)
}

/// Stock of one SKU in one warehouse, as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct WarehouseStock {
    pub warehouse: String,
    pub on_hand: i64,
    pub reserved: i64,
    /// On hand but not for sale: quarantined units and the free units of expired or
    /// quarantined lots.
    pub unavailable: i64,
    pub available: i64,
    /// Units on their way here in two-step transfers: in no warehouse's stock until received.
    pub incoming: i64,
    /// Inactive warehouses are listed but not counted in the totals.
    pub active: bool,
}

/// Stock of one SKU across warehouses; totals count active warehouses only.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct StockView {
    pub sku: String,
    pub on_hand: i64,
    pub reserved: i64,
    pub unavailable: i64,
    pub available: i64,
    pub incoming: i64,
    pub warehouses: Vec<WarehouseStock>,
}

impl StockView {
    fn empty(sku: String) -> Self {
        Self { sku, on_hand: 0, reserved: 0, unavailable: 0, available: 0, incoming: 0, warehouses: Vec::new() }
    }

    fn add(&mut self, row: WarehouseStock) {
        if row.active {
            self.on_hand += row.on_hand;
            self.reserved += row.reserved;
            self.unavailable += row.unavailable;
            self.available += row.available;
            self.incoming += row.incoming;
        }
        self.warehouses.push(row);
    }
}

#[derive(FromRow)]
struct StockRow {
    item_sku: String,
    track_lots: i64,
    warehouse: Option<String>,
    on_hand: Option<i64>,
    reserved: Option<i64>,
    quarantined: Option<i64>,
    incoming: Option<i64>,
    active: Option<i64>,
}

/// Stock of each known SKU among `skus` now (wall clock); see [`stock_views_at`].
pub async fn stock_views(
    pool: &AnyPool,
    skus: &[SkuCode],
    warehouse: Option<&WarehouseCode>,
) -> Result<Vec<StockView>> {
    stock_views_at(pool, skus, warehouse, kernel::Clock::now(&kernel::SystemClock)).await
}

/// Stock of each known SKU among `skus` at `now`, in the order asked. Unknown SKUs are left
/// out. With `warehouse`, only that warehouse's row is shown and counted. Units in expired or
/// quarantined lots are on hand but not available.
pub async fn stock_views_at(
    pool: &AnyPool,
    skus: &[SkuCode],
    warehouse: Option<&WarehouseCode>,
    now: kernel::Timestamp,
) -> Result<Vec<StockView>> {
    if skus.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT i.sku AS item_sku, i.track_lots, s.warehouse, s.on_hand, s.reserved, s.quarantined, w.active, \
                (SELECT CAST(SUM(l.quantity) AS BIGINT) FROM transfer_lines l \
                 JOIN transfers t ON t.id = l.transfer_id \
                 WHERE l.sku = s.sku AND t.to_wh = s.warehouse AND t.status = 'in_transit') AS incoming \
         FROM items i \
         LEFT JOIN stock_levels s ON s.sku = i.sku AND ($1 IS NULL OR s.warehouse = $1) \
         LEFT JOIN warehouses w ON w.code = s.warehouse \
         WHERE i.sku IN ({}) ORDER BY i.sku, s.warehouse",
        list_placeholders(skus.len(), 2)
    );
    let mut query =
        sqlx::query_as::<_, StockRow>(sqlx::AssertSqlSafe(sql)).bind(warehouse.map(|w| w.as_str().to_owned()));
    for sku in skus {
        query = query.bind(sku.as_str().to_owned());
    }
    let rows = query.fetch_all(pool).await?;
    // Only lots can block units: a read of SKUs that track none makes no second round trip.
    let mut lot_skus: Vec<SkuCode> =
        skus.iter().filter(|s| rows.iter().any(|r| r.track_lots != 0 && r.item_sku == s.as_str())).cloned().collect();
    lot_skus.dedup();
    let blocked = crate::lot::blocked_units(pool, &lot_skus, now).await?;
    let mut views: Vec<StockView> = Vec::new();
    for row in rows {
        if views.last().is_none_or(|v| v.sku != row.item_sku) {
            views.push(StockView::empty(row.item_sku.clone()));
        }
        let view = views.last_mut().expect("pushed above");
        if let (Some(warehouse), Some(on_hand), Some(reserved)) = (row.warehouse, row.on_hand, row.reserved) {
            let unavailable = (blocked.get(&(view.sku.clone(), warehouse.clone())).copied().unwrap_or(0)
                + row.quarantined.unwrap_or(0))
            .min(on_hand - reserved);
            view.add(WarehouseStock {
                warehouse,
                on_hand,
                reserved,
                unavailable,
                available: (on_hand - reserved - unavailable).max(0),
                incoming: row.incoming.unwrap_or(0),
                active: row.active == Some(1),
            });
        }
    }
    // Answer in the order asked (and once per SKU even if asked twice).
    let mut by_sku: std::collections::HashMap<String, StockView> =
        views.into_iter().map(|v| (v.sku.clone(), v)).collect();
    Ok(skus.iter().filter_map(|sku| by_sku.remove(sku.as_str())).collect())
}

pub async fn stock_view(pool: &AnyPool, sku: &SkuCode, now: kernel::Timestamp) -> Result<StockView> {
    stock_views_at(pool, std::slice::from_ref(sku), None, now)
        .await?
        .pop()
        .ok_or_else(|| WarehouseError::NotFound { what: "item", key: sku.to_string() })
}

/// Sellable units of each SKU among `skus`, summed over the active warehouses among
/// `warehouses`: per warehouse `on_hand - reserved - quarantined` less the free units of
/// expired or quarantined lots, never below 0. One query, on the caller's connection, so a caller can
/// read it inside its own snapshot (the catalog reads prices in the same one). SKUs with no
/// stock in those warehouses are left out.
pub async fn sellable_in(
    conn: &mut sqlx::AnyConnection,
    skus: &[String],
    warehouses: &[String],
    now: kernel::Timestamp,
) -> Result<std::collections::HashMap<String, i64>> {
    if skus.is_empty() || warehouses.is_empty() {
        return Ok(Default::default());
    }
    let sku_list = list_placeholders(skus.len(), 2);
    let warehouse_list = list_placeholders(warehouses.len(), 2 + skus.len());
    let sql = format!(
        "SELECT s.sku, CAST(SUM(CASE WHEN s.on_hand - s.reserved - s.quarantined - COALESCE(b.blocked, 0) > 0 \
                                 THEN s.on_hand - s.reserved - s.quarantined - COALESCE(b.blocked, 0) ELSE 0 END) AS BIGINT) \
         FROM stock_levels s \
         JOIN warehouses w ON w.code = s.warehouse AND w.active = 1 \
         LEFT JOIN (SELECT sku, warehouse, SUM(on_hand - reserved) AS blocked FROM stock_lots \
                    WHERE (quarantined = 1 OR expires_at_ms <= $1) AND sku IN ({sku_list}) \
                    GROUP BY sku, warehouse) b ON b.sku = s.sku AND b.warehouse = s.warehouse \
         WHERE s.sku IN ({sku_list}) AND s.warehouse IN ({warehouse_list}) \
         GROUP BY s.sku"
    );
    let mut query = sqlx::query_as::<_, (String, i64)>(sqlx::AssertSqlSafe(sql)).bind(now.millis());
    for sku in skus {
        query = query.bind(sku.clone());
    }
    for warehouse in warehouses {
        query = query.bind(warehouse.clone());
    }
    Ok(query.fetch_all(conn).await?.into_iter().collect())
}

/// Sellable units per SKU and warehouse among `skus` and the active warehouses among
/// `warehouses` (the figures of [`sellable_in`], not summed), ordered by SKU and warehouse.
/// With `lock`, the stock rows read are locked until the caller's transaction ends (on
/// PostgreSQL; a SQLite write transaction excludes other writers anyway), so a checkout plans
/// its sourcing against figures nobody changes before it holds them.
pub async fn sellable_by_warehouse(
    conn: &mut sqlx::AnyConnection,
    skus: &[String],
    warehouses: &[String],
    now: kernel::Timestamp,
    lock: bool,
) -> Result<Vec<(String, String, i64)>> {
    if skus.is_empty() || warehouses.is_empty() {
        return Ok(Vec::new());
    }
    let sku_list = list_placeholders(skus.len(), 2);
    let warehouse_list = list_placeholders(warehouses.len(), 2 + skus.len());
    let select = format!(
        "SELECT s.sku, s.warehouse, CAST(CASE WHEN s.on_hand - s.reserved - s.quarantined - COALESCE(b.blocked, 0) > 0 \
                                 THEN s.on_hand - s.reserved - s.quarantined - COALESCE(b.blocked, 0) ELSE 0 END AS BIGINT) \
         FROM stock_levels s \
         JOIN warehouses w ON w.code = s.warehouse AND w.active = 1 \
         LEFT JOIN (SELECT sku, warehouse, SUM(on_hand - reserved) AS blocked FROM stock_lots \
                    WHERE (quarantined = 1 OR expires_at_ms <= $1) AND sku IN ({sku_list}) \
                    GROUP BY sku, warehouse) b ON b.sku = s.sku AND b.warehouse = s.warehouse \
         WHERE s.sku IN ({sku_list}) AND s.warehouse IN ({warehouse_list}) \
         ORDER BY s.sku, s.warehouse"
    );
    let sql = if lock {
        format!("{select}{}", store::sql::Lock::ForUpdateOf("s").clause(store::db::backend_of(conn)))
    } else {
        select
    };
    let mut query = sqlx::query_as::<_, (String, String, i64)>(sqlx::AssertSqlSafe(sql)).bind(now.millis());
    for sku in skus {
        query = query.bind(sku.clone());
    }
    for warehouse in warehouses {
        query = query.bind(warehouse.clone());
    }
    Ok(query.fetch_all(conn).await?)
}
