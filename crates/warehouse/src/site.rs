//! Warehouses (sites): where stock is kept, and in which order they are preferred.

use crate::events::{WarehouseCreated, WarehouseUpdated};
use crate::{Result, WarehouseError};
use kernel::{NewEvent, Timestamp, WarehouseCode};
use serde::Serialize;
use sqlx::{AnyPool, FromRow};
use store::Tx;

/// Priority of a warehouse created without one: lower is preferred.
pub const PRIORITY_DEFAULT: i64 = 100;

#[derive(FromRow)]
struct WarehouseRow {
    code: String,
    name: String,
    country: Option<String>,
    latitude: Option<f64>,
    longitude: Option<f64>,
    priority: i64,
    active: i64,
    capacity_units: Option<i64>,
    used_units: i64,
    created_at: String,
    updated_at: String,
}

impl From<WarehouseRow> for Warehouse {
    fn from(r: WarehouseRow) -> Self {
        Warehouse {
            code: r.code,
            name: r.name,
            country: r.country,
            latitude: r.latitude,
            longitude: r.longitude,
            priority: r.priority,
            active: r.active != 0,
            capacity_units: r.capacity_units,
            used_units: r.used_units,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Warehouse {
    pub code: String,
    pub name: String,
    pub country: Option<String>,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    pub priority: i64,
    pub active: bool,
    /// Most units of all SKUs on hand; `null`: no limit.
    pub capacity_units: Option<i64>,
    /// Units of all SKUs on hand now.
    pub used_units: i64,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Clone)]
pub struct NewWarehouse {
    pub code: WarehouseCode,
    pub name: String,
    pub country: Option<String>,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    pub priority: i64,
    pub active: bool,
    pub capacity_units: Option<i64>,
}

/// A partial update: `None` leaves a field as it is; `Some(None)` clears an optional one.
#[derive(Debug, Clone, Default)]
pub struct WarehousePatch {
    pub name: Option<String>,
    pub priority: Option<i64>,
    pub active: Option<bool>,
    pub latitude: Option<Option<f64>>,
    pub longitude: Option<Option<f64>>,
    pub country: Option<Option<String>>,
    pub capacity_units: Option<Option<i64>>,
}

const COLUMNS: &str = "code, name, country, latitude, longitude, priority, active, capacity_units, \
     CAST(COALESCE((SELECT SUM(s.on_hand) FROM stock_levels s WHERE s.warehouse = warehouses.code), 0) AS BIGINT) AS used_units, \
     created_at, updated_at";

pub async fn warehouse_create(tx: &mut Tx, new: NewWarehouse, now: Timestamp) -> Result<Warehouse> {
    let at = now.to_rfc3339();
    let warehouse = Warehouse {
        code: new.code.as_str().to_owned(),
        name: new.name,
        country: new.country,
        latitude: new.latitude,
        longitude: new.longitude,
        priority: new.priority,
        active: new.active,
        capacity_units: new.capacity_units,
        used_units: 0,
        created_at: at.clone(),
        updated_at: at,
    };
    let inserted = sqlx::query(
        "INSERT INTO warehouses (code, name, country, latitude, longitude, priority, active, created_at, updated_at, capacity_units) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (code) DO NOTHING",
    )
    .bind(warehouse.code.clone())
    .bind(warehouse.name.clone())
    .bind(warehouse.country.clone())
    .bind(warehouse.latitude)
    .bind(warehouse.longitude)
    .bind(warehouse.priority)
    .bind(i64::from(warehouse.active))
    .bind(warehouse.created_at.clone())
    .bind(warehouse.updated_at.clone())
    .bind(warehouse.capacity_units)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if inserted == 0 {
        return Err(WarehouseError::Conflict(format!("a warehouse with code {} exists already", warehouse.code)));
    }
    append_event(tx, &warehouse, WarehouseCreated((&warehouse).into()), now).await?;
    Ok(warehouse)
}

pub async fn warehouse_update(
    tx: &mut Tx,
    code: &WarehouseCode,
    patch: WarehousePatch,
    now: Timestamp,
) -> Result<Warehouse> {
    let current = warehouse_in_tx(tx, code).await?;
    let updated = Warehouse {
        name: patch.name.unwrap_or(current.name),
        priority: patch.priority.unwrap_or(current.priority),
        active: patch.active.unwrap_or(current.active),
        latitude: patch.latitude.unwrap_or(current.latitude),
        longitude: patch.longitude.unwrap_or(current.longitude),
        country: patch.country.unwrap_or(current.country),
        capacity_units: patch.capacity_units.unwrap_or(current.capacity_units),
        updated_at: now.to_rfc3339(),
        ..current
    };
    sqlx::query(
        "UPDATE warehouses SET name = $1, priority = $2, active = $3, latitude = $4, longitude = $5, \
         country = $6, updated_at = $7, capacity_units = $9 WHERE code = $8",
    )
    .bind(updated.name.clone())
    .bind(updated.priority)
    .bind(i64::from(updated.active))
    .bind(updated.latitude)
    .bind(updated.longitude)
    .bind(updated.country.clone())
    .bind(updated.updated_at.clone())
    .bind(updated.code.clone())
    .bind(updated.capacity_units)
    .execute(&mut **tx)
    .await?;
    append_event(tx, &updated, WarehouseUpdated((&updated).into()), now).await?;
    Ok(updated)
}

async fn append_event<E: kernel::Event>(tx: &mut Tx, w: &Warehouse, event: E, now: Timestamp) -> Result<()> {
    store::outbox::append(tx, &[NewEvent::of(format!("warehouse:{}", w.code), &event)], now).await?;
    Ok(())
}

pub async fn warehouse_get(pool: &AnyPool, code: &WarehouseCode) -> Result<Warehouse> {
    sqlx::query_as::<_, WarehouseRow>(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM warehouses WHERE code = $1")))
        .bind(code.as_str().to_owned())
        .fetch_optional(pool)
        .await?
        .map(Warehouse::from)
        .ok_or_else(|| WarehouseError::NotFound { what: "warehouse", key: code.to_string() })
}

pub async fn warehouse_in_tx(tx: &mut Tx, code: &WarehouseCode) -> Result<Warehouse> {
    sqlx::query_as::<_, WarehouseRow>(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM warehouses WHERE code = $1")))
        .bind(code.as_str().to_owned())
        .fetch_optional(&mut **tx)
        .await?
        .map(Warehouse::from)
        .ok_or_else(|| WarehouseError::NotFound { what: "warehouse", key: code.to_string() })
}

/// Fails with [`WarehouseError::NotFound`] when the warehouse does not exist. Only the key is
/// read: the full row sums the warehouse's stock, which a path that merely names the
/// warehouse must not pay for.
pub async fn warehouse_found(tx: &mut Tx, code: &WarehouseCode) -> Result<()> {
    let found: Option<String> =
        sqlx::query_scalar(WAREHOUSE_KEY).bind(code.as_str().to_owned()).fetch_optional(&mut **tx).await?;
    found.map(|_| ()).ok_or_else(|| WarehouseError::NotFound { what: "warehouse", key: code.to_string() })
}

const WAREHOUSE_KEY: &str = "SELECT code FROM warehouses WHERE code = $1";

/// Fails with [`WarehouseError::Invalid`] on `field` when the warehouse does not exist.
pub async fn require_warehouse(tx: &mut Tx, field: &str, code: &WarehouseCode) -> Result<()> {
    match warehouse_found(tx, code).await {
        Err(WarehouseError::NotFound { .. }) => {
            Err(WarehouseError::invalid(field, format!("unknown warehouse {code}")))
        }
        other => other,
    }
}

/// Whether the warehouse exists (its key only, as [`require_warehouse`]).
pub async fn warehouse_exists(pool: &AnyPool, code: &WarehouseCode) -> Result<bool> {
    let found: Option<String> =
        sqlx::query_scalar(WAREHOUSE_KEY).bind(code.as_str().to_owned()).fetch_optional(pool).await?;
    Ok(found.is_some())
}

/// Warehouses ordered by code, after the code `after`.
pub async fn warehouses_list(pool: &AnyPool, after: Option<&str>, limit: u32) -> Result<Vec<Warehouse>> {
    Ok(sqlx::query_as::<_, WarehouseRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM warehouses WHERE code > $1 ORDER BY code LIMIT $2"
    )))
    .bind(after.unwrap_or("").to_owned())
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(Warehouse::from)
    .collect())
}

/// The codes among `codes` that name a warehouse; one query.
pub async fn warehouses_known(tx: &mut Tx, codes: &[&WarehouseCode]) -> Result<std::collections::HashSet<String>> {
    codes_where(tx, "SELECT code FROM warehouses WHERE code", codes).await
}

/// Those of `codes` that are inactive.
pub(crate) async fn warehouses_inactive(
    tx: &mut Tx,
    codes: &[&WarehouseCode],
) -> Result<std::collections::HashSet<String>> {
    codes_where(tx, "SELECT code FROM warehouses WHERE active = 0 AND code", codes).await
}

/// Those of `codes` that have at least one bin.
pub(crate) async fn warehouses_with_bins(
    tx: &mut Tx,
    codes: &[&WarehouseCode],
) -> Result<std::collections::HashSet<String>> {
    codes_where(tx, "SELECT DISTINCT warehouse FROM bins WHERE warehouse", codes).await
}

/// Runs `select ... WHERE column` with `IN (codes)` appended; the codes it returns.
async fn codes_where(
    tx: &mut Tx,
    select_where_column: &'static str,
    codes: &[&WarehouseCode],
) -> Result<std::collections::HashSet<String>> {
    if codes.is_empty() {
        return Ok(Default::default());
    }
    let codes = &store::sql::padded_in_list(codes);
    let sql = format!("{select_where_column} IN ({})", store::sql::list_placeholders(codes.len(), 1));
    let mut query = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql));
    for code in codes {
        query = query.bind(code.as_str().to_owned());
    }
    Ok(query.fetch_all(&mut **tx).await?.into_iter().collect())
}

/// Locks the warehouse row while a receipt or transfer fills it (PostgreSQL), so two
/// concurrent fills cannot both pass the capacity check; returns its capacity.
pub(crate) async fn capacity_lock(tx: &mut Tx, code: &WarehouseCode) -> Result<Option<i64>> {
    let row = store::sql::Lock::ForUpdate
        .select(tx, "SELECT capacity_units FROM warehouses WHERE code = $1")
        .bind(code.as_str().to_owned())
        .fetch_optional(&mut **tx)
        .await?;
    Ok(match row {
        Some(row) => sqlx::Row::try_get::<Option<i64>, _>(&row, 0)?,
        None => None,
    })
}

/// Refuses with `CapacityExceeded` if the warehouse now holds more than `capacity`.
pub(crate) async fn capacity_check(tx: &mut Tx, code: &WarehouseCode, capacity: Option<i64>) -> Result<()> {
    let Some(capacity) = capacity else { return Ok(()) };
    let used: i64 =
        sqlx::query_scalar("SELECT CAST(COALESCE(SUM(on_hand), 0) AS BIGINT) FROM stock_levels WHERE warehouse = $1")
            .bind(code.as_str().to_owned())
            .fetch_one(&mut **tx)
            .await?;
    if used > capacity {
        return Err(WarehouseError::CapacityExceeded(format!(
            "warehouse {code} would hold {used} units; its capacity is {capacity}"
        )));
    }
    Ok(())
}

/// Where each of `codes` is (latitude, longitude; `None` when not recorded) and whether it is
/// active, for distance sourcing; one query.
pub async fn locations_of(
    conn: &mut sqlx::AnyConnection,
    codes: &[String],
) -> Result<std::collections::HashMap<String, (Option<f64>, Option<f64>, bool)>> {
    if codes.is_empty() {
        return Ok(Default::default());
    }
    let sql = format!(
        "SELECT code, latitude, longitude, active FROM warehouses WHERE code IN ({})",
        store::sql::list_placeholders(codes.len(), 1)
    );
    let mut query = sqlx::query_as::<_, (String, Option<f64>, Option<f64>, i64)>(sqlx::AssertSqlSafe(sql));
    for code in codes {
        query = query.bind(code.clone());
    }
    Ok(query.fetch_all(conn).await?.into_iter().map(|(c, lat, lon, active)| (c, (lat, lon, active == 1))).collect())
}
