//! Bins: places inside a warehouse with a zone, coordinates (for pick routes) and an optional
//! capacity. Stock is known per bin where it was put away; units never put in a bin are
//! unbinned. The binned units of a SKU never exceed its on hand: when on hand drops, bins give
//! up units ([`bins_shrink_to`]).

use crate::ledger::{Journal, MovementKind, NewMovement};
use crate::{Result, WarehouseError};
use kernel::{SkuCode, Timestamp, WarehouseCode};
use serde::Serialize;
use sqlx::FromRow;
use store::Tx;

#[derive(Debug, Clone)]
pub struct NewBin {
    pub code: String,
    pub zone: Option<String>,
    pub x: Option<f64>,
    pub y: Option<f64>,
    pub capacity_units: Option<i64>,
}

#[derive(Debug, Clone, Serialize, FromRow, PartialEq, utoipa::ToSchema)]
pub struct Bin {
    pub warehouse: String,
    pub code: String,
    pub zone: Option<String>,
    pub x: Option<f64>,
    pub y: Option<f64>,
    pub capacity_units: Option<i64>,
    /// Units of all SKUs in the bin.
    pub used_units: i64,
    pub created_at: String,
}

pub async fn bin_create(tx: &mut Tx, warehouse: &WarehouseCode, new: NewBin, now: Timestamp) -> Result<Bin> {
    crate::site::warehouse_found(tx, warehouse).await?;
    let inserted = sqlx::query(
        "INSERT INTO bins (warehouse, code, zone, x, y, capacity_units, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (warehouse, code) DO NOTHING",
    )
    .bind(warehouse.as_str().to_owned())
    .bind(new.code.clone())
    .bind(new.zone.clone())
    .bind(new.x)
    .bind(new.y)
    .bind(new.capacity_units)
    .bind(now.to_rfc3339())
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if inserted == 0 {
        return Err(WarehouseError::Conflict(format!("bin {} exists already in {warehouse}", new.code)));
    }
    Ok(Bin {
        warehouse: warehouse.to_string(),
        code: new.code,
        zone: new.zone,
        x: new.x,
        y: new.y,
        capacity_units: new.capacity_units,
        used_units: 0,
        created_at: now.to_rfc3339(),
    })
}

const BIN_SELECT: &str = "SELECT b.warehouse, b.code, b.zone, b.x, b.y, b.capacity_units, \
     CAST(COALESCE((SELECT SUM(s.on_hand) FROM bin_stock s WHERE s.warehouse = b.warehouse AND s.bin = b.code), 0) AS BIGINT) AS used_units, \
     b.created_at FROM bins b";

/// Bins of a warehouse by code, after `after`.
pub async fn bins_list(
    pool: &sqlx::AnyPool,
    warehouse: &WarehouseCode,
    after: Option<&str>,
    limit: u32,
) -> Result<Vec<Bin>> {
    crate::site::warehouse_get(pool, warehouse).await?;
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{BIN_SELECT} WHERE b.warehouse = $1 AND b.code > $2 ORDER BY b.code LIMIT $3"
    )))
    .bind(warehouse.as_str().to_owned())
    .bind(after.unwrap_or("").to_owned())
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?)
}

async fn bin_in_tx(tx: &mut Tx, warehouse: &WarehouseCode, code: &str) -> Result<Option<Bin>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!("{BIN_SELECT} WHERE b.warehouse = $1 AND b.code = $2")))
        .bind(warehouse.as_str().to_owned())
        .bind(code.to_owned())
        .fetch_optional(&mut **tx)
        .await?)
}

/// Where to put `units` of `sku` away: a bin already holding the SKU that has room, else the
/// emptiest bin that fits. `None` if the warehouse has no bin with room (the units stay
/// unbinned).
pub async fn putaway_suggestion(
    tx: &mut Tx,
    warehouse: &WarehouseCode,
    sku: &SkuCode,
    units: i64,
) -> Result<Option<String>> {
    let bins: Vec<Bin> =
        sqlx::query_as(sqlx::AssertSqlSafe(format!("{BIN_SELECT} WHERE b.warehouse = $1 ORDER BY b.code")))
            .bind(warehouse.as_str().to_owned())
            .fetch_all(&mut **tx)
            .await?;
    let fits = |b: &Bin| b.capacity_units.is_none_or(|c| c - b.used_units >= units);
    let holding: Vec<String> =
        sqlx::query_scalar("SELECT bin FROM bin_stock WHERE warehouse = $1 AND sku = $2 AND on_hand > 0")
            .bind(warehouse.as_str().to_owned())
            .bind(sku.as_str().to_owned())
            .fetch_all(&mut **tx)
            .await?;
    if let Some(bin) = bins.iter().find(|b| holding.contains(&b.code) && fits(b)) {
        return Ok(Some(bin.code.clone()));
    }
    let emptiest = bins.iter().filter(|b| fits(b)).max_by_key(|b| {
        (b.capacity_units.map(|c| c - b.used_units).unwrap_or(i64::MAX), std::cmp::Reverse(b.code.clone()))
    });
    Ok(emptiest.map(|b| b.code.clone()))
}

/// Puts `units` of `sku` into `bin`; refuses with `Invalid` on `field` if the bin does not
/// exist and with `CapacityExceeded` if it would overflow.
pub async fn bin_put(
    tx: &mut Tx,
    warehouse: &WarehouseCode,
    bin: &str,
    sku: &SkuCode,
    units: i64,
    field: &str,
) -> Result<()> {
    // Concurrent puts into one bin (receipts, transfers, bin moves) check its room one at a
    // time; SQLite has a single writer already.
    store::sql::Lock::ForUpdate
        .select(tx, "SELECT code FROM bins WHERE warehouse = $1 AND code = $2")
        .bind(warehouse.as_str().to_owned())
        .bind(bin.to_owned())
        .fetch_optional(&mut **tx)
        .await?;
    let Some(found) = bin_in_tx(tx, warehouse, bin).await? else {
        return Err(WarehouseError::invalid(field, format!("unknown bin {bin} in {warehouse}")));
    };
    if let Some(capacity) = found.capacity_units
        && found.used_units + units > capacity
    {
        return Err(WarehouseError::CapacityExceeded(format!(
            "bin {bin} in {warehouse} holds {} of {capacity} units; {units} more do not fit",
            found.used_units
        )));
    }
    sqlx::query(
        "INSERT INTO bin_stock (warehouse, bin, sku, on_hand) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (warehouse, bin, sku) DO UPDATE SET on_hand = bin_stock.on_hand + excluded.on_hand",
    )
    .bind(warehouse.as_str().to_owned())
    .bind(bin.to_owned())
    .bind(sku.as_str().to_owned())
    .bind(units)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Takes up to `units` of `sku` out of one bin without changing on hand: picked units leave
/// their bin for the packing station, and units a picker did not find are taken out before
/// the adjustment that writes them off. Answers the units taken (the bin may hold fewer).
pub async fn bin_take(tx: &mut Tx, warehouse: &WarehouseCode, bin: &str, sku: &SkuCode, units: i64) -> Result<i64> {
    let held: Option<i64> =
        sqlx::query_scalar("SELECT on_hand FROM bin_stock WHERE warehouse = $1 AND bin = $2 AND sku = $3")
            .bind(warehouse.as_str().to_owned())
            .bind(bin.to_owned())
            .bind(sku.as_str().to_owned())
            .fetch_optional(&mut **tx)
            .await?;
    let take = held.unwrap_or(0).min(units.max(0));
    if take > 0 {
        sqlx::query("UPDATE bin_stock SET on_hand = on_hand - $1 WHERE warehouse = $2 AND bin = $3 AND sku = $4")
            .bind(take)
            .bind(warehouse.as_str().to_owned())
            .bind(bin.to_owned())
            .bind(sku.as_str().to_owned())
            .execute(&mut **tx)
            .await?;
    }
    Ok(take)
}

/// Takes units out of bins (in bin order) until the binned units of `sku` are at most
/// `on_hand`. Called after on hand went down.
pub async fn bins_shrink_to(tx: &mut Tx, warehouse: &WarehouseCode, sku: &SkuCode, on_hand: i64) -> Result<()> {
    let binned: Vec<(String, i64)> = sqlx::query_as(
        "SELECT bin, on_hand FROM bin_stock WHERE warehouse = $1 AND sku = $2 AND on_hand > 0 ORDER BY bin",
    )
    .bind(warehouse.as_str().to_owned())
    .bind(sku.as_str().to_owned())
    .fetch_all(&mut **tx)
    .await?;
    let mut excess = binned.iter().map(|(_, q)| q).sum::<i64>() - on_hand;
    for (bin, units) in binned {
        if excess <= 0 {
            break;
        }
        let take = excess.min(units);
        sqlx::query("UPDATE bin_stock SET on_hand = on_hand - $1 WHERE warehouse = $2 AND bin = $3 AND sku = $4")
            .bind(take)
            .bind(warehouse.as_str().to_owned())
            .bind(bin)
            .bind(sku.as_str().to_owned())
            .execute(&mut **tx)
            .await?;
        excess -= take;
    }
    Ok(())
}

#[derive(Debug, Clone, FromRow, Serialize, PartialEq, utoipa::ToSchema)]
pub struct BinStock {
    pub bin: String,
    pub sku: String,
    pub on_hand: i64,
}

/// Stock per bin of a SKU in a warehouse.
pub async fn bin_stock_of(pool: &sqlx::AnyPool, warehouse: &WarehouseCode, sku: &SkuCode) -> Result<Vec<BinStock>> {
    Ok(sqlx::query_as(
        "SELECT bin, sku, on_hand FROM bin_stock WHERE warehouse = $1 AND sku = $2 AND on_hand > 0 ORDER BY bin",
    )
    .bind(warehouse.as_str().to_owned())
    .bind(sku.as_str().to_owned())
    .fetch_all(pool)
    .await?)
}

/// A bin's units of a SKU, with where the bin is.
#[derive(Debug, Clone, FromRow, PartialEq)]
pub struct LocatedBinStock {
    pub bin: String,
    pub sku: String,
    pub on_hand: i64,
    pub x: Option<f64>,
    pub y: Option<f64>,
}

/// The bins holding any of `skus` in `warehouse`, by SKU then bin code; one query.
pub async fn bin_stock_located(
    tx: &mut Tx,
    warehouse: &WarehouseCode,
    skus: &[String],
) -> Result<Vec<LocatedBinStock>> {
    if skus.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT s.bin, s.sku, s.on_hand, b.x, b.y FROM bin_stock s \
         JOIN bins b ON b.warehouse = s.warehouse AND b.code = s.bin \
         WHERE s.warehouse = $1 AND s.on_hand > 0 AND s.sku IN ({}) ORDER BY s.sku, s.bin",
        store::sql::list_placeholders(skus.len(), 2)
    );
    let mut query = sqlx::query_as::<_, LocatedBinStock>(sqlx::AssertSqlSafe(sql)).bind(warehouse.as_str().to_owned());
    for sku in skus {
        query = query.bind(sku.clone());
    }
    Ok(query.fetch_all(&mut **tx).await?)
}

#[derive(Debug, Clone)]
pub struct BinMove {
    pub warehouse: WarehouseCode,
    pub sku: SkuCode,
    pub from_bin: String,
    pub to_bin: String,
    pub quantity: i64,
}

/// Moves units between two bins of a warehouse. On hand does not change; the move is
/// recorded as a `bin_move` movement with zero deltas.
pub async fn bin_move(tx: &mut Tx, m: BinMove, now: Timestamp) -> Result<Vec<BinStock>> {
    if m.from_bin == m.to_bin {
        return Err(WarehouseError::invalid("to_bin", "must differ from from_bin"));
    }
    if bin_in_tx(tx, &m.warehouse, &m.from_bin).await?.is_none() {
        return Err(WarehouseError::invalid("from_bin", format!("unknown bin {}", m.from_bin)));
    }
    let taken = sqlx::query(
        "UPDATE bin_stock SET on_hand = on_hand - $1 WHERE warehouse = $2 AND bin = $3 AND sku = $4 AND on_hand >= $1",
    )
    .bind(m.quantity)
    .bind(m.warehouse.as_str().to_owned())
    .bind(m.from_bin.clone())
    .bind(m.sku.as_str().to_owned())
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if taken == 0 {
        let there: i64 =
            sqlx::query_scalar("SELECT on_hand FROM bin_stock WHERE warehouse = $1 AND bin = $2 AND sku = $3")
                .bind(m.warehouse.as_str().to_owned())
                .bind(m.from_bin.clone())
                .bind(m.sku.as_str().to_owned())
                .fetch_optional(&mut **tx)
                .await?
                .unwrap_or(0);
        return Err(WarehouseError::InsufficientStock {
            lines: vec![crate::ShortLine {
                sku: m.sku.to_string(),
                warehouse: Some(m.warehouse.to_string()),
                requested: m.quantity,
                available: there,
                reason: None,
            }],
        });
    }
    bin_put(tx, &m.warehouse, &m.to_bin, &m.sku, m.quantity, "to_bin").await?;
    let level = crate::stock::stock_level_in_tx(tx, &m.sku, &m.warehouse).await?;
    let mut journal = Journal::new();
    journal.stock_changed(NewMovement {
        warehouse: m.warehouse.clone(),
        sku: m.sku.clone(),
        kind: MovementKind::BinMove,
        on_hand_delta: 0,
        reserved_delta: 0,
        on_hand_after: level.on_hand,
        reserved_after: level.reserved,
        reference: None,
        reason: Some(format!("{} units from bin {} to bin {}", m.quantity, m.from_bin, m.to_bin)),
    });
    journal.flush(tx, now).await?;
    let mut conn_rows: Vec<BinStock> = sqlx::query_as(
        "SELECT bin, sku, on_hand FROM bin_stock WHERE warehouse = $1 AND sku = $2 AND on_hand > 0 ORDER BY bin",
    )
    .bind(m.warehouse.as_str().to_owned())
    .bind(m.sku.as_str().to_owned())
    .fetch_all(&mut **tx)
    .await?;
    conn_rows.retain(|b| b.bin == m.from_bin || b.bin == m.to_bin);
    Ok(conn_rows)
}
