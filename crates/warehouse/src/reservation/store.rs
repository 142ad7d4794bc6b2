//! SQL of reservations. Both dialects share these statements except where noted.

use super::{Reservation, ReservationLine, Status};
use crate::Result;
use kernel::{ReservationId, SkuCode, Timestamp, WarehouseCode};
use sqlx::FromRow;
use std::collections::HashMap;
use store::sql::{Lock, Values, dynamic, list_placeholders};
use store::{Backend, Tx};

/// A stock row a batch of holds works on, as locked at the start of the batch.
#[derive(Debug, Clone, FromRow)]
pub(crate) struct StockRow {
    pub sku: String,
    pub warehouse: String,
    pub on_hand: i64,
    pub reserved: i64,
    pub quarantined: i64,
    pub priority: i64,
    #[sqlx(try_from = "store::sql::IntFlag")]
    pub active: bool,
}

/// Loads the stock rows of `skus`, locking them (PostgreSQL) in (SKU, warehouse) order so
/// concurrent batches cannot deadlock and nobody changes them until this transaction ends.
/// On SQLite the single writer already excludes everyone else.
pub(crate) async fn stock_rows_lock(tx: &mut Tx, skus: &[&SkuCode]) -> Result<Vec<StockRow>> {
    if skus.is_empty() {
        return Ok(Vec::new());
    }
    let skus = &::store::sql::padded_in_list(skus);
    let lock = Lock::ForUpdateOf("s").clause(::store::db::backend_of(tx));
    let sql = format!(
        "SELECT s.sku, s.warehouse, s.on_hand, s.reserved, s.quarantined, w.priority, w.active \
         FROM stock_levels s JOIN warehouses w ON w.code = s.warehouse \
         WHERE s.sku IN ({}) ORDER BY s.sku, s.warehouse{lock}",
        list_placeholders(skus.len(), 1)
    );
    let mut query = sqlx::query_as::<_, StockRow>(sqlx::AssertSqlSafe(sql));
    for sku in skus {
        query = query.bind(sku.as_str().to_owned());
    }
    Ok(query.fetch_all(&mut **tx).await?)
}

/// Adds `net` to reserved of each row, one guarded statement per row.
pub(crate) async fn stock_rows_add_reserved(tx: &mut Tx, deltas: &[(&SkuCode, &WarehouseCode, i64)]) -> Result<()> {
    for (sku, warehouse, net) in deltas {
        let updated = sqlx::query(
            "UPDATE stock_levels SET reserved = reserved + $1 \
             WHERE sku = $2 AND warehouse = $3 AND on_hand - reserved - quarantined >= $1",
        )
        .bind(*net)
        .bind(sku.as_str().to_owned())
        .bind(warehouse.as_str().to_owned())
        .execute(&mut **tx)
        .await?
        .rows_affected();
        if updated != 1 {
            // The rows were locked when planned, so this is a bug, not a race.
            return Err(crate::WarehouseError::Store(::store::StoreError::Corrupt(format!(
                "stock {warehouse}/{sku} changed under a locked batch"
            ))));
        }
    }
    Ok(())
}

/// Gives back held units of many stock rows with one statement per chunk (the sweeper's path):
/// `deltas` are (SKU, warehouse, units), one entry per row. Returns each row's level after.
pub(crate) async fn stock_rows_unhold(
    tx: &mut Tx,
    deltas: &[(&str, &str, i64)],
) -> Result<HashMap<(String, String), (i64, i64)>> {
    let mut after = HashMap::with_capacity(deltas.len());
    for chunk in ::store::sql::fixed_chunks(deltas) {
        // `VALUES` columns are column1.. on both databases.
        let mut values = Values::new(tx, 3);
        for (sku, warehouse, units) in chunk {
            values.row().text(*sku).text(*warehouse).int(*units);
        }
        let rows = values
            .query_as::<(String, String, i64, i64)>(
                "UPDATE stock_levels SET reserved = stock_levels.reserved - v.column3 FROM (VALUES {values}) AS v \
                 WHERE stock_levels.sku = v.column1 AND stock_levels.warehouse = v.column2 \
                 RETURNING stock_levels.sku, stock_levels.warehouse, stock_levels.on_hand, stock_levels.reserved",
            )
            .fetch_all(&mut **tx)
            .await?;
        if rows.len() != chunk.len() {
            return Err(crate::WarehouseError::Store(::store::StoreError::Corrupt(
                "a reservation line names a stock row that does not exist".into(),
            )));
        }
        after.extend(rows.into_iter().map(|(s, w, on_hand, reserved)| ((s, w), (on_hand, reserved))));
    }
    Ok(after)
}

/// Inserts reservations with their lines: multi-row statements, whatever the batch size.
pub(crate) async fn reservations_insert(tx: &mut Tx, reservations: &[(Reservation, Timestamp)]) -> Result<()> {
    for chunk in ::store::sql::fixed_chunks(reservations) {
        let mut values = Values::new(tx, 7);
        for (r, expires_at) in chunk {
            values
                .row()
                .text(r.id.as_str())
                .text(r.reference.as_deref().unwrap_or(""))
                .text(r.status.as_str())
                .int(expires_at.millis())
                .text(r.created_at.as_str())
                .text(r.created_at.as_str())
                .opt_text(r.hold_batch.as_deref());
        }
        values
            .query(
                "INSERT INTO reservations (id, reference, status, expires_at_ms, created_at, updated_at, hold_batch) \
                 VALUES {values}",
            )
            .execute(&mut **tx)
            .await?;
    }
    let lines: Vec<(&str, usize, &ReservationLine)> = reservations
        .iter()
        .flat_map(|(r, _)| r.lines.iter().enumerate().map(move |(i, l)| (r.id.as_str(), i, l)))
        .collect();
    for chunk in ::store::sql::fixed_chunks(&lines) {
        let mut values = Values::new(tx, 5);
        for (id, line_no, line) in chunk {
            values
                .row()
                .text(*id)
                .int(*line_no as i64)
                .text(line.sku.as_str())
                .text(line.warehouse.as_str())
                .int(line.quantity);
        }
        values
            .query("INSERT INTO reservation_lines (reservation_id, line_no, sku, warehouse, quantity) VALUES {values}")
            .execute(&mut **tx)
            .await?;
    }
    let lots: Vec<(&str, usize, usize, &super::LotTake)> = reservations
        .iter()
        .flat_map(|(r, _)| {
            r.lines
                .iter()
                .enumerate()
                .flat_map(move |(i, l)| l.lots.iter().enumerate().map(move |(p, t)| (r.id.as_str(), i, p, t)))
        })
        .collect();
    for chunk in ::store::sql::fixed_chunks(&lots) {
        let mut values = Values::new(tx, 5);
        for (id, line_no, position, taken) in chunk {
            values
                .row()
                .text(*id)
                .int(*line_no as i64)
                .text(taken.lot.as_str())
                .int(*position as i64)
                .int(taken.quantity);
        }
        values
            .query("INSERT INTO reservation_lots (reservation_id, line_no, lot, position, quantity) VALUES {values}")
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

#[derive(FromRow)]
struct ReservationRow {
    id: String,
    reference: String,
    status: String,
    expires_at_ms: i64,
    created_at: String,
    hold_batch: Option<String>,
}

#[derive(FromRow)]
struct LotRow {
    reservation_id: String,
    line_no: i64,
    lot: String,
    quantity: i64,
}

/// Attaches the lots of `lines` (by reservation id and line number).
async fn attach_lots(
    conn: &mut sqlx::AnyConnection,
    ids: &[String],
    lines: &mut [(String, i64, ReservationLine)],
) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let ids = &::store::sql::padded_in_list(ids);
    let sql = format!(
        "SELECT reservation_id, line_no, lot, quantity FROM reservation_lots WHERE reservation_id IN ({}) \
         ORDER BY reservation_id, line_no, position",
        list_placeholders(ids.len(), 1)
    );
    let mut query = sqlx::query_as::<_, LotRow>(sqlx::AssertSqlSafe(sql));
    for id in ids {
        query = query.bind(id.clone());
    }
    for row in query.fetch_all(&mut *conn).await? {
        if let Some((_, _, line)) = lines.iter_mut().find(|(id, no, _)| *id == row.reservation_id && *no == row.line_no)
        {
            line.lots.push(super::LotTake { lot: row.lot, quantity: row.quantity });
        }
    }
    Ok(())
}

#[derive(FromRow)]
struct LineRow {
    line_no: i64,
    reservation_id: String,
    sku: String,
    warehouse: String,
    quantity: i64,
}

/// The reservation with its lines, status as stored (see [`Reservation::status_at`]).
pub(crate) async fn reservation_find(
    conn: &mut sqlx::AnyConnection,
    id: &ReservationId,
) -> Result<Option<(Reservation, Timestamp)>> {
    let Some(row) = sqlx::query_as::<_, ReservationRow>(
        "SELECT id, reference, status, expires_at_ms, created_at, hold_batch FROM reservations WHERE id = $1",
    )
    .bind(id.as_str().to_owned())
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(None);
    };
    let lines: Vec<LineRow> = sqlx::query_as(
        "SELECT line_no, reservation_id, sku, warehouse, quantity FROM reservation_lines WHERE reservation_id = $1 ORDER BY line_no",
    )
    .bind(id.as_str().to_owned())
    .fetch_all(&mut *conn)
    .await?;
    let mut lines: Vec<(String, i64, ReservationLine)> = lines
        .into_iter()
        .map(|l| {
            let line = ReservationLine { sku: l.sku, warehouse: l.warehouse, quantity: l.quantity, lots: Vec::new() };
            (l.reservation_id, l.line_no, line)
        })
        .collect();
    attach_lots(conn, &[id.to_string()], &mut lines).await?;
    let expires_at = Timestamp::from_millis(row.expires_at_ms);
    let status = Status::parse(&row.status)?;
    Ok(Some((
        Reservation {
            id: row.id,
            status,
            // Stored as "" when none was given.
            reference: Some(row.reference).filter(|r| !r.is_empty()),
            expires_at: Reservation::shown_expiry(status, expires_at),
            created_at: row.created_at,
            lines: lines.into_iter().map(|(_, _, line)| line).collect(),
            hold_batch: row.hold_batch,
        },
        expires_at,
    )))
}

/// Moves the reservation from one of `from` to `to`; true if it did. With `unexpired_at`,
/// only if it has not expired at that instant.
pub(crate) async fn reservation_transition(
    tx: &mut Tx,
    id: &ReservationId,
    from: &[Status],
    to: Status,
    unexpired_at: Option<Timestamp>,
    now: Timestamp,
) -> Result<bool> {
    let sql = format!(
        "UPDATE reservations SET status = $1, updated_at = $2 WHERE id = $3 AND status IN ({}) {}",
        list_placeholders(from.len(), 5),
        if unexpired_at.is_some() { "AND expires_at_ms > $4" } else { "AND $4 = $4" }
    );
    let mut query = dynamic(sql)
        .bind(to.as_str())
        .bind(now.to_rfc3339())
        .bind(id.as_str().to_owned())
        .bind(unexpired_at.map(|t| t.millis()).unwrap_or(0));
    for status in from {
        query = query.bind(status.as_str());
    }
    Ok(query.execute(&mut **tx).await?.rows_affected() == 1)
}

/// Marks as expired those of `ids` still active and due at `now`; returns them.
pub(crate) async fn reservations_expire(tx: &mut Tx, ids: &[String], now: Timestamp) -> Result<Vec<String>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let ids = &::store::sql::padded_in_list(ids);
    let sql = format!(
        "UPDATE reservations SET status = 'expired', updated_at = $1 \
         WHERE status = 'active' AND expires_at_ms <= $2 AND id IN ({}) RETURNING id",
        list_placeholders(ids.len(), 3)
    );
    let mut query = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql)).bind(now.to_rfc3339()).bind(now.millis());
    for id in ids {
        query = query.bind(id.clone());
    }
    Ok(query.fetch_all(&mut **tx).await?)
}

/// Lines of the reservations `ids`, as (reservation id, line).
pub(crate) async fn lines_of(tx: &mut Tx, ids: &[String]) -> Result<Vec<(String, ReservationLine)>> {
    lines_of_conn(tx, ids).await
}

async fn lines_of_conn(conn: &mut sqlx::AnyConnection, ids: &[String]) -> Result<Vec<(String, ReservationLine)>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let ids = &::store::sql::padded_in_list(ids);
    let sql = format!(
        "SELECT line_no, reservation_id, sku, warehouse, quantity FROM reservation_lines WHERE reservation_id IN ({}) \
         ORDER BY reservation_id, line_no",
        list_placeholders(ids.len(), 1)
    );
    let mut query = sqlx::query_as::<_, LineRow>(sqlx::AssertSqlSafe(sql));
    for id in ids {
        query = query.bind(id.clone());
    }
    let mut lines: Vec<(String, i64, ReservationLine)> = query
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .map(|l| {
            let line = ReservationLine { sku: l.sku, warehouse: l.warehouse, quantity: l.quantity, lots: Vec::new() };
            (l.reservation_id, l.line_no, line)
        })
        .collect();
    attach_lots(conn, ids, &mut lines).await?;
    Ok(lines.into_iter().map(|(id, _, line)| (id, line)).collect())
}

/// A page of reservations by id after `after`, filtered (status as it reads at `now`), with
/// their lines: three queries whatever the page size.
pub(crate) async fn reservations_page(
    conn: &mut sqlx::AnyConnection,
    filter: &super::ReservationFilter,
    after: Option<&str>,
    limit: u32,
    now: Timestamp,
) -> Result<Vec<(Reservation, Timestamp)>> {
    let status = match filter.status {
        None => "$5 = $5",
        Some(Status::Active) => "status = 'active' AND expires_at_ms > $5",
        Some(Status::Expired) => "(status = 'expired' OR (status = 'active' AND expires_at_ms <= $5))",
        Some(Status::Confirmed) => "status = 'confirmed' AND $5 = $5",
        Some(Status::Released) => "status = 'released' AND $5 = $5",
        Some(Status::Fulfilled) => "status = 'fulfilled' AND $5 = $5",
    };
    let sql = format!(
        "SELECT id, reference, status, expires_at_ms, created_at, hold_batch FROM reservations r \
         WHERE id > $1 AND ($2 IS NULL OR reference = $2) AND {status} \
         AND (($3 IS NULL AND $4 IS NULL) OR EXISTS (SELECT 1 FROM reservation_lines l WHERE l.reservation_id = r.id \
              AND ($3 IS NULL OR l.sku = $3) AND ($4 IS NULL OR l.warehouse = $4))) \
         ORDER BY id LIMIT $6"
    );
    let rows: Vec<ReservationRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(after.unwrap_or("").to_owned())
        .bind(filter.reference.clone())
        .bind(filter.sku.as_ref().map(|s| s.as_str().to_owned()))
        .bind(filter.warehouse.as_ref().map(|w| w.as_str().to_owned()))
        .bind(now.millis())
        .bind(i64::from(limit))
        .fetch_all(&mut *conn)
        .await?;
    let ids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
    let mut lines: HashMap<String, Vec<ReservationLine>> = HashMap::new();
    for (id, line) in lines_of_conn(conn, &ids).await? {
        lines.entry(id).or_default().push(line);
    }
    rows.into_iter()
        .map(|row| {
            let expires_at = Timestamp::from_millis(row.expires_at_ms);
            let status = Status::parse(&row.status)?;
            let reservation = Reservation {
                lines: lines.remove(&row.id).unwrap_or_default(),
                id: row.id,
                status,
                reference: Some(row.reference).filter(|r| !r.is_empty()),
                expires_at: Reservation::shown_expiry(status, expires_at),
                created_at: row.created_at,
                hold_batch: row.hold_batch,
            };
            Ok((reservation, expires_at))
        })
        .collect()
}

/// Moves an active, unexpired reservation's expiry to `expires_at`; true if it did.
pub(crate) async fn reservation_set_expiry(
    tx: &mut Tx,
    id: &ReservationId,
    expires_at: Timestamp,
    now: Timestamp,
) -> Result<bool> {
    let updated = sqlx::query(
        "UPDATE reservations SET expires_at_ms = $1, updated_at = $2 \
         WHERE id = $3 AND status = 'active' AND expires_at_ms > $4",
    )
    .bind(expires_at.millis())
    .bind(now.to_rfc3339())
    .bind(id.as_str().to_owned())
    .bind(now.millis())
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(updated == 1)
}

/// Up to `limit` active reservations due at `now`, oldest expiry first. On PostgreSQL, rows
/// another sweeper has locked are skipped, so replicas share the work.
pub(crate) async fn reservations_due(tx: &mut Tx, backend: Backend, now: Timestamp, limit: i64) -> Result<Vec<String>> {
    let sql = format!(
        "SELECT id FROM reservations WHERE status = 'active' AND expires_at_ms <= $1 \
         ORDER BY expires_at_ms LIMIT $2{}",
        Lock::ForUpdateSkipLocked.clause(backend)
    );
    Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).bind(now.millis()).bind(limit).fetch_all(&mut **tx).await?)
}

/// Up to `limit` active reservations due at `now` that hold any of `skus`.
pub(crate) async fn reservations_due_holding(
    tx: &mut Tx,
    skus: &[&SkuCode],
    now: Timestamp,
    limit: i64,
) -> Result<Vec<String>> {
    if skus.is_empty() {
        return Ok(Vec::new());
    }
    let skus = &::store::sql::padded_in_list(skus);
    let sql = format!(
        "SELECT DISTINCT r.id FROM reservations r JOIN reservation_lines l ON l.reservation_id = r.id \
         WHERE r.status = 'active' AND r.expires_at_ms <= $1 AND l.sku IN ({}) LIMIT $2",
        list_placeholders(skus.len(), 3)
    );
    let mut query = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql)).bind(now.millis()).bind(limit);
    for sku in skus {
        query = query.bind(sku.as_str().to_owned());
    }
    Ok(query.fetch_all(&mut **tx).await?)
}
