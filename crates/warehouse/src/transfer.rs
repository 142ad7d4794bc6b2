//! Transfers: moving available stock from one warehouse to another, in one transaction or
//! in two steps. A two-step transfer (`in_transit`) takes the units out of `from` when it is
//! created and puts them into `to` when it is received; in between they are in neither
//! warehouse's stock and show as `incoming` at `to`. Every transfer is recorded (`transfers`,
//! `transfer_lines`) so it can be looked up; lots keep their code and expiry on the way.

use crate::ledger::{Journal, MovementKind, NewMovement};
use crate::stock::{stock_level_in_tx, stock_level_receive, stock_level_take};
use crate::{Result, ShortLine, WarehouseError};
use kernel::{Quantity, SkuCode, Timestamp, WarehouseCode};
use serde::{Deserialize, Serialize};
use sqlx::FromRow;
use std::collections::BTreeMap;
use store::Tx;

#[derive(Debug, Clone)]
pub struct TransferLine {
    pub sku: SkuCode,
    pub quantity: Quantity,
}

#[derive(Debug, Clone)]
pub struct Transfer {
    pub from: WarehouseCode,
    pub to: WarehouseCode,
    pub reference: Option<String>,
    pub lines: Vec<TransferLine>,
    /// Two steps: the units leave `from` now and reach `to` when the transfer is received.
    pub in_transit: bool,
}

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct TransferLineView {
    pub sku: String,
    pub quantity: i64,
    /// For lot-tracked items: the lots moved, first expiry first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub lots: Vec<MovedLot>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct MovedLot {
    pub lot: String,
    pub expires_on: String,
    pub quantity: i64,
}

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct TransferView {
    pub id: String,
    pub from: String,
    pub to: String,
    pub reference: Option<String>,
    pub lines: Vec<TransferLineView>,
    /// `in_transit` (two steps, not yet received) or `received`.
    pub status: String,
    /// When the units left `from`.
    pub at: String,
    /// When the units reached `to`.
    pub received_at: Option<String>,
}

/// Moves the lines' units out of `from`'s available stock and into `to`'s on hand (or, in
/// transit, into neither until [`transfer_receive`]). All or nothing: if a line is short, the
/// error names every short line and the caller rolls back.
pub async fn transfer(tx: &mut Tx, transfer: Transfer, now: Timestamp) -> Result<TransferView> {
    let mut issues = crate::error::Issues::default();
    let known = check(tx, &transfer, &mut issues).await?;
    issues.finish()?;
    let capacity = if transfer.in_transit { None } else { Some(crate::site::capacity_lock(tx, &transfer.to).await?) };

    let id = format!("trf_{}", uuid::Uuid::now_v7().simple());
    let reference = transfer.reference.clone().unwrap_or_else(|| id.clone());
    let mut per_sku: BTreeMap<&SkuCode, i64> = BTreeMap::new();
    for line in &transfer.lines {
        *per_sku.entry(&line.sku).or_default() += line.quantity.get();
    }

    // Rows are locked in (SKU, warehouse) order whatever the direction, so two transfers in
    // opposite directions cannot deadlock.
    let mut journal = Journal::new();
    let mut short = Vec::new();
    let mut moved: BTreeMap<&SkuCode, Vec<MovedLot>> = BTreeMap::new();
    for (sku, units) in &per_sku {
        let tracks_lots = known.iter().any(|(k, lots)| k == sku.as_str() && *lots);
        if tracks_lots {
            // Lots move FEFO and keep their code and expiry; expired lots stay behind.
            match crate::lot::lots_take_fefo(tx, sku, &transfer.from, *units, now).await? {
                Ok(taken) => {
                    let lots = moved.entry(sku).or_default();
                    for (lot, expires_on, quantity) in taken {
                        if !transfer.in_transit {
                            crate::lot::lot_receive(tx, sku, &transfer.to, (&lot, &expires_on, quantity), now, "lines")
                                .await?;
                        }
                        lots.push(MovedLot { lot, expires_on, quantity });
                    }
                }
                Err(short_line) => {
                    short.push(short_line);
                    continue;
                }
            }
        }
        let take_first = transfer.from < transfer.to;
        if transfer.in_transit {
            // `to` shows the units as incoming on its level from now on.
            crate::stock::stock_level_create(tx, sku, &transfer.to, 0).await?;
        } else if !take_first {
            receive_line(tx, &mut journal, sku, &transfer.to, *units, &reference).await?;
        }
        match stock_level_take(tx, sku, &transfer.from, *units).await? {
            Some(level) => {
                crate::bin::bins_shrink_to(tx, &transfer.from, sku, level.on_hand).await?;
                journal.stock_changed(NewMovement {
                    warehouse: transfer.from.clone(),
                    sku: (*sku).clone(),
                    kind: MovementKind::TransferOut,
                    on_hand_delta: -units,
                    reserved_delta: 0,
                    on_hand_after: level.on_hand,
                    reserved_after: level.reserved,
                    reference: Some(reference.clone()),
                    reason: None,
                })
            }
            None => short.push(ShortLine {
                sku: sku.to_string(),
                warehouse: Some(transfer.from.to_string()),
                requested: *units,
                available: stock_level_in_tx(tx, sku, &transfer.from).await?.available(),
                reason: None,
            }),
        }
        if take_first && !transfer.in_transit {
            receive_line(tx, &mut journal, sku, &transfer.to, *units, &reference).await?;
        }
    }
    if !short.is_empty() {
        return Err(WarehouseError::InsufficientStock { lines: short });
    }
    if let Some(capacity) = capacity {
        crate::site::capacity_check(tx, &transfer.to, capacity).await?;
    }
    journal.flush(tx, now).await?;
    let view = TransferView {
        id,
        from: transfer.from.to_string(),
        to: transfer.to.to_string(),
        reference: transfer.reference,
        lines: per_sku
            .into_iter()
            .map(|(sku, quantity)| TransferLineView {
                sku: sku.to_string(),
                quantity,
                lots: moved.remove(sku).unwrap_or_default(),
            })
            .collect(),
        status: if transfer.in_transit { "in_transit" } else { "received" }.to_owned(),
        at: now.to_rfc3339(),
        received_at: (!transfer.in_transit).then(|| now.to_rfc3339()),
    };
    record(tx, &view).await?;
    Ok(view)
}

async fn record(tx: &mut Tx, view: &TransferView) -> Result<()> {
    sqlx::query(
        "INSERT INTO transfers (id, from_wh, to_wh, reference, status, created_at, received_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(view.id.clone())
    .bind(view.from.clone())
    .bind(view.to.clone())
    .bind(view.reference.clone())
    .bind(view.status.clone())
    .bind(view.at.clone())
    .bind(view.received_at.clone())
    .execute(&mut **tx)
    .await?;
    for line in &view.lines {
        let lots = (!line.lots.is_empty()).then(|| serde_json::to_string(&line.lots).unwrap_or_default());
        sqlx::query("INSERT INTO transfer_lines (transfer_id, sku, quantity, lots) VALUES ($1, $2, $3, $4)")
            .bind(view.id.clone())
            .bind(line.sku.clone())
            .bind(line.quantity)
            .bind(lots)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Receives a transfer in transit: its units go into `to`'s on hand (lots with their codes and
/// expiry, bins by putaway), each a `transfer_in` movement, and it becomes `received`. One not
/// in transit is `InvalidState`; a warehouse that would overflow is `CapacityExceeded`.
pub async fn transfer_receive(tx: &mut Tx, id: &str, now: Timestamp) -> Result<TransferView> {
    let at = now.to_rfc3339();
    let taken: Option<(String, Option<String>)> = sqlx::query_as(
        "UPDATE transfers SET status = 'received', received_at = $2 WHERE id = $1 AND status = 'in_transit' \
         RETURNING to_wh, reference",
    )
    .bind(id.to_owned())
    .bind(at)
    .fetch_optional(&mut **tx)
    .await?;
    let Some((to, reference)) = taken else {
        let current = transfer_get(tx, id).await?;
        return Err(WarehouseError::InvalidState {
            what: "transfer",
            from: current.status,
            action: "be received: only a transfer in transit is",
        });
    };
    let to = WarehouseCode::parse(to).map_err(|e| corrupt(format!("transfer {id}: warehouse {e}")))?;
    let reference = reference.unwrap_or_else(|| id.to_owned());
    let capacity = crate::site::capacity_lock(tx, &to).await?;
    let view = transfer_get(tx, id).await?;
    let mut journal = Journal::new();
    for line in &view.lines {
        let sku = SkuCode::parse(line.sku.clone()).map_err(|e| corrupt(format!("transfer {id}: sku {e}")))?;
        for lot in &line.lots {
            crate::lot::lot_receive(tx, &sku, &to, (&lot.lot, &lot.expires_on, lot.quantity), now, "lines").await?;
        }
        receive_line(tx, &mut journal, &sku, &to, line.quantity, &reference).await?;
    }
    crate::site::capacity_check(tx, &to, capacity).await?;
    journal.flush(tx, now).await?;
    Ok(view)
}

#[derive(FromRow)]
struct TransferRow {
    id: String,
    from_wh: String,
    to_wh: String,
    reference: Option<String>,
    status: String,
    created_at: String,
    received_at: Option<String>,
}

/// One transfer, or `NotFound`.
pub async fn transfer_get(conn: &mut sqlx::AnyConnection, id: &str) -> Result<TransferView> {
    let row: Option<TransferRow> = sqlx::query_as(
        "SELECT id, from_wh, to_wh, reference, status, created_at, received_at FROM transfers WHERE id = $1",
    )
    .bind(id.to_owned())
    .fetch_optional(&mut *conn)
    .await?;
    let row = row.ok_or_else(|| WarehouseError::NotFound { what: "transfer", key: id.to_owned() })?;
    let mut views = with_lines(conn, vec![row]).await?;
    views.pop().ok_or_else(|| corrupt(format!("transfer {id} vanished")))
}

/// Which transfers a list shows.
#[derive(Debug, Clone, Default)]
pub struct TransferFilter {
    pub from: Option<String>,
    pub to: Option<String>,
    pub status: Option<String>,
}

/// Transfers oldest first (ids are time-ordered), after the id `after`.
pub async fn transfers_list(
    pool: &sqlx::AnyPool,
    filter: &TransferFilter,
    after: Option<&str>,
    limit: u32,
) -> Result<Vec<TransferView>> {
    let rows: Vec<TransferRow> = sqlx::query_as(
        "SELECT id, from_wh, to_wh, reference, status, created_at, received_at FROM transfers \
         WHERE id > $1 AND ($2 = '' OR from_wh = $2) AND ($3 = '' OR to_wh = $3) AND ($4 = '' OR status = $4) \
         ORDER BY id LIMIT $5",
    )
    .bind(after.unwrap_or("").to_owned())
    .bind(filter.from.clone().unwrap_or_default())
    .bind(filter.to.clone().unwrap_or_default())
    .bind(filter.status.clone().unwrap_or_default())
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    let mut conn = pool.acquire().await?;
    with_lines(&mut conn, rows).await
}

async fn with_lines(conn: &mut sqlx::AnyConnection, rows: Vec<TransferRow>) -> Result<Vec<TransferView>> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    // Every line of the page in one query.
    let sql = format!(
        "SELECT transfer_id, sku, quantity, lots FROM transfer_lines WHERE transfer_id IN ({}) ORDER BY transfer_id, sku",
        store::sql::list_placeholders(rows.len(), 1)
    );
    let mut query = sqlx::query_as::<_, (String, String, i64, Option<String>)>(sqlx::AssertSqlSafe(sql));
    for row in &rows {
        query = query.bind(row.id.clone());
    }
    let mut lines: std::collections::HashMap<String, Vec<TransferLineView>> = Default::default();
    for (transfer, sku, quantity, lots) in query.fetch_all(&mut *conn).await? {
        let lots = match lots {
            Some(text) => {
                serde_json::from_str(&text).map_err(|_| corrupt(format!("transfer {transfer}: lots of {sku}")))?
            }
            None => Vec::new(),
        };
        lines.entry(transfer).or_default().push(TransferLineView { sku, quantity, lots });
    }
    Ok(rows
        .into_iter()
        .map(|row| TransferView {
            lines: lines.remove(&row.id).unwrap_or_default(),
            id: row.id,
            from: row.from_wh,
            to: row.to_wh,
            reference: row.reference,
            status: row.status,
            at: row.created_at,
            received_at: row.received_at,
        })
        .collect())
}

fn corrupt(message: String) -> WarehouseError {
    WarehouseError::Store(store::StoreError::Corrupt(message))
}

async fn receive_line(
    tx: &mut Tx,
    journal: &mut Journal,
    sku: &SkuCode,
    to: &WarehouseCode,
    units: i64,
    reference: &str,
) -> Result<()> {
    let level = stock_level_receive(tx, sku, to, units).await?;
    // Like a receipt: into a bin already holding the SKU or the emptiest that fits, if any.
    if let Some(bin) = crate::bin::putaway_suggestion(tx, to, sku, units).await? {
        crate::bin::bin_put(tx, to, &bin, sku, units, "lines").await?;
    }
    journal.stock_changed(NewMovement {
        warehouse: to.clone(),
        sku: sku.clone(),
        kind: MovementKind::TransferIn,
        on_hand_delta: units,
        reserved_delta: 0,
        on_hand_after: level.on_hand,
        reserved_after: level.reserved,
        reference: Some(reference.to_owned()),
        reason: None,
    });
    Ok(())
}

/// What the database finds wrong with a transfer, every field at once: both warehouses and each
/// line's SKU. Reads only; [`transfer`] refuses with the same.
pub async fn transfer_issues(tx: &mut Tx, transfer: &Transfer) -> Result<Vec<crate::FieldIssue>> {
    let mut issues = crate::error::Issues::default();
    check(tx, transfer, &mut issues).await?;
    Ok(issues.into_vec())
}

async fn check(tx: &mut Tx, transfer: &Transfer, issues: &mut crate::error::Issues) -> Result<Vec<(String, bool)>> {
    if transfer.from == transfer.to {
        issues.push("to", "must differ from `from`");
    }
    issues.keep(crate::site::require_warehouse(tx, "from", &transfer.from).await)?;
    if transfer.from != transfer.to {
        issues.keep(crate::site::require_warehouse(tx, "to", &transfer.to).await)?;
    }
    crate::item::check_items(
        tx,
        transfer.lines.iter().enumerate().map(|(i, l)| (format!("lines[{i}].sku"), &l.sku)),
        issues,
    )
    .await
}
