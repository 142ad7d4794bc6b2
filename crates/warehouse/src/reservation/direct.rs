//! The statements of [`super::hold_batch_direct`] on SQLite's direct writer: the same SQL as
//! the general path's (`store.rs`, `item.rs`, `site.rs`), one row per statement or an `IN`
//! list padded to a fixed length, so every statement text is fixed and stays prepared.

use super::store::StockRow;
use super::{Reservation, ReservationLine, Status};
use crate::{Result, WarehouseError};
use ::store::StoreError;
use ::store::sql::padded_in_list;
use kernel::{SkuCode, Timestamp, WarehouseCode};
use rusqlite::{Transaction, params, params_from_iter};
use std::collections::{HashMap, HashSet};

fn db(e: rusqlite::Error) -> WarehouseError {
    WarehouseError::Store(StoreError::Sqlite(e))
}

/// `?1, ?2, ...` for `count` values.
fn placeholders(count: usize) -> String {
    (1..=count).map(|n| format!("?{n}")).collect::<Vec<_>>().join(", ")
}

/// The known items among `skus`, with whether each tracks lots.
pub(super) fn items_known(tx: &Transaction<'_>, skus: &[&SkuCode]) -> Result<Vec<(String, bool)>> {
    if skus.is_empty() {
        return Ok(Vec::new());
    }
    let skus = padded_in_list(skus);
    let sql = format!("SELECT sku, track_lots FROM items WHERE sku IN ({})", placeholders(skus.len()));
    let mut statement = tx.prepare_cached(&sql).map_err(db)?;
    let rows = statement
        .query_map(params_from_iter(skus.iter().map(|s| s.as_str())), |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)? != 0))
        })
        .map_err(db)?;
    rows.collect::<rusqlite::Result<_>>().map_err(db)
}

/// Runs `select ... WHERE column` with `IN (codes)` appended; the codes it returns.
pub(super) fn warehouses_where(
    tx: &Transaction<'_>,
    select_where_column: &'static str,
    codes: &[&WarehouseCode],
) -> Result<HashSet<String>> {
    if codes.is_empty() {
        return Ok(HashSet::new());
    }
    let codes = padded_in_list(codes);
    let sql = format!("{select_where_column} IN ({})", placeholders(codes.len()));
    let mut statement = tx.prepare_cached(&sql).map_err(db)?;
    let rows = statement
        .query_map(params_from_iter(codes.iter().map(|c| c.as_str())), |row| row.get::<_, String>(0))
        .map_err(db)?;
    rows.collect::<rusqlite::Result<_>>().map_err(db)
}

/// The stock rows of `skus` with their warehouse's priority and state, in (SKU, warehouse)
/// order. The writer thread holds SQLite's write lock: nobody changes them until commit.
pub(super) fn stock_rows(tx: &Transaction<'_>, skus: &[&SkuCode]) -> Result<Vec<StockRow>> {
    if skus.is_empty() {
        return Ok(Vec::new());
    }
    let skus = padded_in_list(skus);
    let sql = format!(
        "SELECT s.sku, s.warehouse, s.on_hand, s.reserved, s.quarantined, w.priority, w.active \
         FROM stock_levels s JOIN warehouses w ON w.code = s.warehouse \
         WHERE s.sku IN ({}) ORDER BY s.sku, s.warehouse",
        placeholders(skus.len())
    );
    let mut statement = tx.prepare_cached(&sql).map_err(db)?;
    let rows = statement
        .query_map(params_from_iter(skus.iter().map(|s| s.as_str())), |row| {
            Ok(StockRow {
                sku: row.get(0)?,
                warehouse: row.get(1)?,
                on_hand: row.get(2)?,
                reserved: row.get(3)?,
                quarantined: row.get(4)?,
                priority: row.get(5)?,
                active: row.get::<_, i64>(6)? != 0,
            })
        })
        .map_err(db)?;
    rows.collect::<rusqlite::Result<_>>().map_err(db)
}

/// Whether any active reservation due at `now` holds one of `skus`.
pub(super) fn any_due_holding(tx: &Transaction<'_>, skus: &[&SkuCode], now: Timestamp) -> Result<bool> {
    let skus = padded_in_list(skus);
    let sql = format!(
        "SELECT EXISTS (SELECT 1 FROM reservations r JOIN reservation_lines l ON l.reservation_id = r.id \
         WHERE r.status = 'active' AND r.expires_at_ms <= ?1 AND l.sku IN ({}))",
        (2..=skus.len() + 1).map(|n| format!("?{n}")).collect::<Vec<_>>().join(", ")
    );
    let mut statement = tx.prepare_cached(&sql).map_err(db)?;
    let mut values: Vec<rusqlite::types::Value> = vec![now.millis().into()];
    values.extend(skus.iter().map(|s| rusqlite::types::Value::Text(s.as_str().to_owned())));
    statement.query_row(params_from_iter(values), |row| row.get::<_, bool>(0)).map_err(db)
}

/// Adds each row's net change to reserved, one guarded statement per row.
pub(super) fn stock_rows_add_reserved(tx: &Transaction<'_>, deltas: &[(SkuCode, WarehouseCode, i64)]) -> Result<()> {
    let mut statement = tx
        .prepare_cached(
            "UPDATE stock_levels SET reserved = reserved + ?1 \
             WHERE sku = ?2 AND warehouse = ?3 AND on_hand - reserved - quarantined >= ?1",
        )
        .map_err(db)?;
    for (sku, warehouse, net) in deltas {
        if statement.execute(params![net, sku.as_str(), warehouse.as_str()]).map_err(db)? != 1 {
            // The rows were read under the write lock when planned: a bug, not a race.
            return Err(WarehouseError::Store(StoreError::Corrupt(format!(
                "stock {warehouse}/{sku} changed under a locked batch"
            ))));
        }
    }
    Ok(())
}

/// The reservations and their lines (none of them holds lots on this path).
pub(super) fn reservations_insert(tx: &Transaction<'_>, reservations: &[(Reservation, Timestamp)]) -> Result<()> {
    let mut reservation = tx
        .prepare_cached(
            "INSERT INTO reservations (id, reference, status, expires_at_ms, created_at, updated_at, hold_batch) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6)",
        )
        .map_err(db)?;
    let mut line = tx
        .prepare_cached(
            "INSERT INTO reservation_lines (reservation_id, line_no, sku, warehouse, quantity) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .map_err(db)?;
    for (r, expires_at) in reservations {
        debug_assert_eq!(r.status, Status::Active);
        reservation
            .execute(params![
                r.id,
                r.reference.as_deref().unwrap_or(""),
                r.status.as_str(),
                expires_at.millis(),
                r.created_at,
                r.hold_batch
            ])
            .map_err(db)?;
        for (line_no, l) in r.lines.iter().enumerate() {
            line.execute(params![r.id, line_no as i64, l.sku, l.warehouse, l.quantity]).map_err(db)?;
        }
    }
    Ok(())
}

/// Up to `limit` active reservations due at `now`, soonest due first.
pub(super) fn reservations_due(tx: &Transaction<'_>, now: Timestamp, limit: i64) -> Result<Vec<String>> {
    let mut statement = tx
        .prepare_cached(
            "SELECT id FROM reservations WHERE status = 'active' AND expires_at_ms <= ?1 \
             ORDER BY expires_at_ms LIMIT ?2",
        )
        .map_err(db)?;
    let rows = statement.query_map(params![now.millis(), limit], |row| row.get::<_, String>(0)).map_err(db)?;
    rows.collect::<rusqlite::Result<_>>().map_err(db)
}

/// The lines of the reservations `ids`, as (reservation id, line), in order; `None` if any line
/// holds lots.
pub(super) fn lines_without_lots(
    tx: &Transaction<'_>,
    ids: &[String],
) -> Result<Option<Vec<(String, ReservationLine)>>> {
    let mut statement = tx
        .prepare_cached(
            "SELECT l.sku, l.warehouse, l.quantity, \
             EXISTS (SELECT 1 FROM reservation_lots x WHERE x.reservation_id = l.reservation_id AND x.line_no = l.line_no) \
             FROM reservation_lines l WHERE l.reservation_id = ?1 ORDER BY l.line_no",
        )
        .map_err(db)?;
    let mut lines = Vec::new();
    for id in ids {
        let rows = statement
            .query_map([id], |row| {
                Ok((
                    ReservationLine {
                        sku: row.get(0)?,
                        warehouse: row.get(1)?,
                        quantity: row.get(2)?,
                        lots: Vec::new(),
                    },
                    row.get::<_, bool>(3)?,
                ))
            })
            .map_err(db)?;
        for row in rows {
            let (line, has_lots) = row.map_err(db)?;
            if has_lots {
                return Ok(None);
            }
            lines.push((id.clone(), line));
        }
    }
    Ok(Some(lines))
}

/// Marks the reservations `ids` expired; each must still be active and due (they were read
/// under the write lock).
pub(super) fn reservations_expire(tx: &Transaction<'_>, ids: &[String], now: Timestamp) -> Result<()> {
    let mut statement = tx
        .prepare_cached(
            "UPDATE reservations SET status = 'expired', updated_at = ?1 \
             WHERE id = ?2 AND status = 'active' AND expires_at_ms <= ?3",
        )
        .map_err(db)?;
    let at = now.to_rfc3339();
    for id in ids {
        if statement.execute(params![at, id, now.millis()]).map_err(db)? != 1 {
            return Err(WarehouseError::Store(StoreError::Corrupt(format!(
                "reservation {id} changed under the write lock"
            ))));
        }
    }
    Ok(())
}

/// Takes `units` off reserved of each (SKU, warehouse) row; each row's (on hand, reserved)
/// after.
pub(super) fn stock_rows_unhold(
    tx: &Transaction<'_>,
    per_row: &[(&str, &str, i64)],
) -> Result<HashMap<(String, String), (i64, i64)>> {
    let mut statement = tx
        .prepare_cached(
            "UPDATE stock_levels SET reserved = reserved - ?1 WHERE sku = ?2 AND warehouse = ?3 \
             RETURNING on_hand, reserved",
        )
        .map_err(db)?;
    let mut after = HashMap::with_capacity(per_row.len());
    for (sku, warehouse, units) in per_row {
        let level = statement
            .query_row(params![units, sku, warehouse], |row| Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?)))
            .map_err(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => WarehouseError::Store(StoreError::Corrupt(
                    "a reservation line names a stock row that does not exist".into(),
                )),
                other => db(other),
            })?;
        after.insert((sku.to_string(), warehouse.to_string()), level);
    }
    Ok(after)
}
