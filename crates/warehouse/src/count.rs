//! Cycle counts: a warehouse (or one zone, or some SKUs) is counted bin by bin without the
//! counters seeing the expected figures; lines far off ask for a recount; approval applies
//! the differences as `count` movements in one transaction.
//!
//! Each line's variance is measured against what the ledger held in that place when the line
//! was counted, and approval adds that variance to the level as it is then: movements during
//! the count (a pick, a receipt) are kept, not mistaken for variance. Lot-tracked items are
//! counted per lot with counted adjustments instead (a bin count does not say which lot).

use crate::ledger::{Journal, MovementKind, NewMovement};
use crate::reservation::CutHold;
use crate::{Result, ShortLine, WarehouseError};
use kernel::{SkuCode, Timestamp, WarehouseCode};
use serde::Serialize;
use sqlx::{AnyPool, FromRow};
use std::collections::BTreeMap;
use store::Tx;

/// Most lines in one count: a large zone, still one bounded approval transaction.
pub const COUNT_LINES_MAX: i64 = 10_000;

#[derive(Debug, Clone)]
pub struct OpenCount {
    pub warehouse: WarehouseCode,
    pub zone: Option<String>,
    pub skus: Option<Vec<SkuCode>>,
    /// Lines whose variance exceeds this many units ask for a recount.
    pub recount_threshold_units: i64,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct CountLineView {
    /// `null`: stock of the warehouse not in any bin.
    pub bin: Option<String>,
    pub sku: String,
    pub counted: Option<i64>,
    pub needs_recount: bool,
    /// Shown once the count is approved, so counters count blind.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variance: Option<i64>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct CountView {
    pub id: String,
    pub warehouse: String,
    pub zone: Option<String>,
    /// `open`, `approved` or `cancelled`.
    pub status: String,
    pub recount_threshold_units: i64,
    pub created_at: String,
    pub approved_at: Option<String>,
    pub lines: Vec<CountLineView>,
    /// Holds given up at approval because the count found fewer units than were held (unpaid
    /// holds before confirmed ones, newest first); empty when none.
    pub holds_cut: Vec<CutHold>,
}

#[derive(FromRow)]
struct CountRow {
    id: String,
    warehouse: String,
    zone: Option<String>,
    status: String,
    recount_threshold_units: i64,
    created_at: String,
    approved_at: Option<String>,
}

#[derive(FromRow)]
struct LineRow {
    bin: String,
    sku: String,
    expected: Option<i64>,
    counted: Option<i64>,
    needs_recount: i64,
}

/// Why a lot-tracked item has no place in a cycle count.
const LOT_TRACKED_NOT_COUNTED: &str = "item {sku} tracks lots and is counted per lot: \
     POST /v1/adjustments with counted and lot";

pub async fn count_open(tx: &mut Tx, open: OpenCount, now: Timestamp) -> Result<CountView> {
    let mut issues = crate::error::Issues::default();
    check_open(tx, &open, &mut issues).await?;
    issues.finish()?;
    let id = format!("cnt_{}", uuid::Uuid::now_v7().simple());
    count_insert(tx, &id, open, now).await
}

/// What the database finds wrong with a count to open, every field at once: the warehouse and
/// each SKU (unknown, or tracking lots). Reads only; [`count_open`] refuses with the same.
pub async fn count_open_issues(tx: &mut Tx, open: &OpenCount) -> Result<Vec<crate::FieldIssue>> {
    let mut issues = crate::error::Issues::default();
    check_open(tx, open, &mut issues).await?;
    Ok(issues.into_vec())
}

async fn check_open(tx: &mut Tx, open: &OpenCount, issues: &mut crate::error::Issues) -> Result<()> {
    issues.keep(crate::site::require_warehouse(tx, "warehouse", &open.warehouse).await)?;
    if let Some(skus) = &open.skus {
        let known =
            crate::item::check_items(tx, skus.iter().enumerate().map(|(i, s)| (format!("skus[{i}]"), s)), issues)
                .await?;
        // A bin count cannot say which lot it saw, so such a count could never be finished.
        for (i, sku) in skus.iter().enumerate() {
            if known.iter().any(|(k, lots)| k == sku.as_str() && *lots) {
                issues.push(format!("skus[{i}]"), LOT_TRACKED_NOT_COUNTED.replace("{sku}", sku.as_str()));
            }
        }
    }
    Ok(())
}

async fn count_insert(tx: &mut Tx, id: &str, open: OpenCount, now: Timestamp) -> Result<CountView> {
    let id = id.to_owned();
    sqlx::query(
        "INSERT INTO counts (id, warehouse, zone, status, recount_threshold_units, created_at) VALUES ($1, $2, $3, 'open', $4, $5)",
    )
    .bind(id.clone())
    .bind(open.warehouse.as_str().to_owned())
    .bind(open.zone.clone())
    .bind(open.recount_threshold_units)
    .bind(now.to_rfc3339())
    .execute(&mut **tx)
    .await?;

    // Binned stock of the zone (or all bins), then the unbinned stock when counting the whole
    // warehouse, then the named SKUs anywhere they are not listed yet (to count zero or found).
    let wh = open.warehouse.as_str().to_owned();
    let mut places: Vec<(String, String)> = sqlx::query_as(
        "SELECT bs.bin, bs.sku FROM bin_stock bs JOIN bins b ON b.warehouse = bs.warehouse AND b.code = bs.bin \
         JOIN items i ON i.sku = bs.sku AND i.track_lots = 0 \
         WHERE bs.warehouse = $1 AND bs.on_hand > 0 AND ($2 IS NULL OR b.zone = $2) ORDER BY bs.bin, bs.sku LIMIT $3",
    )
    .bind(wh.clone())
    .bind(open.zone.clone())
    .bind(COUNT_LINES_MAX)
    .fetch_all(&mut **tx)
    .await?;
    if open.zone.is_none() {
        let unbinned: Vec<String> = sqlx::query_scalar(
            "SELECT s.sku FROM stock_levels s JOIN items i ON i.sku = s.sku AND i.track_lots = 0 \
             WHERE s.warehouse = $1 AND s.on_hand > COALESCE((SELECT SUM(bs.on_hand) FROM bin_stock bs \
                   WHERE bs.warehouse = s.warehouse AND bs.sku = s.sku), 0) ORDER BY s.sku LIMIT $2",
        )
        .bind(wh.clone())
        .bind(COUNT_LINES_MAX)
        .fetch_all(&mut **tx)
        .await?;
        places.extend(unbinned.into_iter().map(|sku| (String::new(), sku)));
    }
    if let Some(skus) = &open.skus {
        places.retain(|(_, sku)| skus.iter().any(|s| s.as_str() == sku));
        for sku in skus {
            if !places.iter().any(|(_, s)| s == sku.as_str()) {
                places.push((String::new(), sku.to_string()));
            }
        }
    }
    places.truncate(COUNT_LINES_MAX as usize);
    for (bin, sku) in &places {
        sqlx::query("INSERT INTO count_lines (count_id, bin, sku) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
            .bind(id.clone())
            .bind(bin.clone())
            .bind(sku.clone())
            .execute(&mut **tx)
            .await?;
    }
    count_in_tx(tx, &id).await
}

async fn count_row(conn: &mut sqlx::AnyConnection, id: &str) -> Result<CountRow> {
    sqlx::query_as(
        "SELECT id, warehouse, zone, status, recount_threshold_units, created_at, approved_at FROM counts WHERE id = $1",
    )
    .bind(id.to_owned())
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| WarehouseError::NotFound { what: "count", key: id.to_owned() })
}

async fn view(conn: &mut sqlx::AnyConnection, id: &str) -> Result<CountView> {
    let count = count_row(conn, id).await?;
    let lines: Vec<LineRow> = sqlx::query_as(
        "SELECT bin, sku, expected, counted, needs_recount FROM count_lines WHERE count_id = $1 ORDER BY bin, sku",
    )
    .bind(id.to_owned())
    .fetch_all(&mut *conn)
    .await?;
    let approved = count.status == "approved";
    let holds_cut = if approved { holds_cut_of(conn, id).await? } else { Vec::new() };
    Ok(CountView {
        holds_cut,
        lines: lines
            .into_iter()
            .map(|l| CountLineView {
                bin: (!l.bin.is_empty()).then_some(l.bin),
                sku: l.sku,
                counted: l.counted,
                needs_recount: l.needs_recount == 1,
                expected: if approved { l.expected } else { None },
                variance: if approved { l.counted.zip(l.expected).map(|(c, e)| c - e) } else { None },
            })
            .collect(),
        id: count.id,
        warehouse: count.warehouse,
        zone: count.zone,
        status: count.status,
        recount_threshold_units: count.recount_threshold_units,
        created_at: count.created_at,
        approved_at: count.approved_at,
    })
}

async fn count_in_tx(tx: &mut Tx, id: &str) -> Result<CountView> {
    view(tx, id).await
}

pub async fn count_get(pool: &AnyPool, id: &str) -> Result<CountView> {
    let mut conn = pool.acquire().await?;
    view(&mut conn, id).await
}

/// Counts oldest first (ids are time-ordered), after the id `after`, of one warehouse or all,
/// in one status or any.
pub async fn counts_list(
    pool: &AnyPool,
    warehouse: Option<&str>,
    status: Option<&str>,
    after: Option<&str>,
    limit: u32,
) -> Result<Vec<CountView>> {
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT id FROM counts WHERE id > $1 AND ($2 = '' OR warehouse = $2) AND ($3 = '' OR status = $3) \
         ORDER BY id LIMIT $4",
    )
    .bind(after.unwrap_or("").to_owned())
    .bind(warehouse.unwrap_or("").to_owned())
    .bind(status.unwrap_or("").to_owned())
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    let mut conn = pool.acquire().await?;
    let mut views = Vec::with_capacity(ids.len());
    for id in ids {
        views.push(view(&mut conn, &id).await?);
    }
    Ok(views)
}

/// A counted figure for a bin (`None`: unbinned stock) and SKU.
#[derive(Debug, Clone)]
pub struct CountedLine {
    pub bin: Option<String>,
    pub sku: SkuCode,
    pub counted: i64,
}

/// What the ledger holds in a place now: a bin's units, or the units in no bin.
async fn held_in_place(tx: &mut Tx, warehouse: &str, bin: &str, sku: &str) -> Result<i64> {
    let held: Option<i64> = if bin.is_empty() {
        sqlx::query_scalar(
            "SELECT s.on_hand - CAST(COALESCE((SELECT SUM(bs.on_hand) FROM bin_stock bs \
                WHERE bs.warehouse = s.warehouse AND bs.sku = s.sku), 0) AS BIGINT) \
             FROM stock_levels s WHERE s.warehouse = $1 AND s.sku = $2",
        )
        .bind(warehouse.to_owned())
        .bind(sku.to_owned())
        .fetch_optional(&mut **tx)
        .await?
    } else {
        sqlx::query_scalar("SELECT on_hand FROM bin_stock WHERE warehouse = $1 AND bin = $2 AND sku = $3")
            .bind(warehouse.to_owned())
            .bind(bin.to_owned())
            .bind(sku.to_owned())
            .fetch_optional(&mut **tx)
            .await?
    };
    Ok(held.unwrap_or(0))
}

/// Records counted figures. A line whose variance exceeds the threshold asks for a recount,
/// unless this count repeats the previous one (the recount confirmed it).
pub async fn count_submit(tx: &mut Tx, id: &str, lines: Vec<CountedLine>, now: Timestamp) -> Result<CountView> {
    let count = count_row(tx, id).await?;
    if count.status != "open" {
        return Err(WarehouseError::InvalidState { what: "count", from: count.status, action: "take counts" });
    }
    let warehouse = WarehouseCode::parse(count.warehouse.clone())
        .map_err(|e| WarehouseError::invalid("warehouse", e.to_string()))?;
    // Every bad line at once, before anything is written.
    let mut issues = crate::error::Issues::default();
    check_lines(tx, &warehouse, &lines, &mut issues).await?;
    issues.finish()?;
    for line in &lines {
        let bin = line.bin.clone().unwrap_or_default();
        let expected = held_in_place(tx, warehouse.as_str(), &bin, line.sku.as_str()).await?;
        let previous: Option<i64> =
            sqlx::query_scalar("SELECT counted FROM count_lines WHERE count_id = $1 AND bin = $2 AND sku = $3")
                .bind(id.to_owned())
                .bind(bin.clone())
                .bind(line.sku.as_str().to_owned())
                .fetch_optional(&mut **tx)
                .await?
                .flatten();
        let far_off = (line.counted - expected).abs() > count.recount_threshold_units;
        let needs_recount = far_off && previous != Some(line.counted);
        sqlx::query(
            "INSERT INTO count_lines (count_id, bin, sku, expected, counted, previous_counted, needs_recount, counted_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (count_id, bin, sku) DO UPDATE SET expected = excluded.expected, counted = excluded.counted, \
             previous_counted = count_lines.counted, needs_recount = excluded.needs_recount, counted_at = excluded.counted_at",
        )
        .bind(id.to_owned())
        .bind(bin)
        .bind(line.sku.as_str().to_owned())
        .bind(expected)
        .bind(line.counted)
        .bind(previous)
        .bind(i64::from(needs_recount))
        .bind(now.to_rfc3339())
        .execute(&mut **tx)
        .await?;
    }
    count_in_tx(tx, id).await
}

/// What the database finds wrong with counted lines for the count `id`, every line at once:
/// unknown SKUs, lot-tracked SKUs, unknown bins. Reads only; [`count_submit`] refuses with the
/// same. An unknown count is `NotFound`.
pub async fn count_lines_issues(tx: &mut Tx, id: &str, lines: &[CountedLine]) -> Result<Vec<crate::FieldIssue>> {
    let count = count_row(tx, id).await?;
    let warehouse = WarehouseCode::parse(count.warehouse.clone())
        .map_err(|e| WarehouseError::invalid("warehouse", e.to_string()))?;
    let mut issues = crate::error::Issues::default();
    check_lines(tx, &warehouse, lines, &mut issues).await?;
    Ok(issues.into_vec())
}

async fn check_lines(
    tx: &mut Tx,
    warehouse: &WarehouseCode,
    lines: &[CountedLine],
    issues: &mut crate::error::Issues,
) -> Result<()> {
    let known = crate::item::check_items(
        tx,
        lines.iter().enumerate().map(|(i, l)| (format!("lines[{i}].sku"), &l.sku)),
        issues,
    )
    .await?;
    for (i, line) in lines.iter().enumerate() {
        if known.iter().any(|(s, lots)| s == line.sku.as_str() && *lots) {
            issues.push(format!("lines[{i}].sku"), LOT_TRACKED_NOT_COUNTED.replace("{sku}", line.sku.as_str()));
        }
        if let Some(bin) = line.bin.as_ref().filter(|b| !b.is_empty()) {
            let exists: Option<String> = sqlx::query_scalar("SELECT code FROM bins WHERE warehouse = $1 AND code = $2")
                .bind(warehouse.as_str().to_owned())
                .bind(bin.clone())
                .fetch_optional(&mut **tx)
                .await?;
            if exists.is_none() {
                issues.push(format!("lines[{i}].bin"), format!("unknown bin {bin} in {warehouse}"));
            }
        }
    }
    Ok(())
}

/// Applies every line's variance as `count` movements (one per SKU) and closes the count.
/// Refused while a line is uncounted or asks for a recount. A variance that takes on hand
/// below what is reserved is recorded all the same: the holds that no longer fit are cut
/// ([`crate::reservation::cut_holds`]), listed on the count (`holds_cut`) and raised as a
/// `holds_cut` alert naming them. Refused only if quarantined units would still be above on
/// hand (they are released or scrapped first).
pub async fn count_approve(tx: &mut Tx, id: &str, now: Timestamp) -> Result<CountView> {
    let count = count_row(tx, id).await?;
    if count.status != "open" {
        return Err(WarehouseError::InvalidState { what: "count", from: count.status, action: "be approved" });
    }
    let warehouse = WarehouseCode::parse(count.warehouse.clone())
        .map_err(|e| WarehouseError::invalid("warehouse", e.to_string()))?;
    let lines: Vec<LineRow> = sqlx::query_as(
        "SELECT bin, sku, expected, counted, needs_recount FROM count_lines WHERE count_id = $1 ORDER BY sku, bin",
    )
    .bind(id.to_owned())
    .fetch_all(&mut **tx)
    .await?;
    if lines.iter().any(|l| l.counted.is_none()) {
        return Err(WarehouseError::InvalidState {
            what: "count",
            from: "open with uncounted lines".into(),
            action: "be approved",
        });
    }
    if lines.iter().any(|l| l.needs_recount == 1) {
        return Err(WarehouseError::InvalidState {
            what: "count",
            from: "open with lines to recount".into(),
            action: "be approved",
        });
    }
    let mut per_sku: BTreeMap<String, i64> = BTreeMap::new();
    for line in &lines {
        let variance = line.counted.unwrap_or(0) - line.expected.unwrap_or(0);
        *per_sku.entry(line.sku.clone()).or_default() += variance;
        if !line.bin.is_empty() && variance != 0 {
            sqlx::query(
                "INSERT INTO bin_stock (warehouse, bin, sku, on_hand) VALUES ($1, $2, $3, CASE WHEN $4 < 0 THEN 0 ELSE $4 END) \
                 ON CONFLICT (warehouse, bin, sku) DO UPDATE SET on_hand = \
                 CASE WHEN bin_stock.on_hand + $4 < 0 THEN 0 ELSE bin_stock.on_hand + $4 END",
            )
            .bind(warehouse.as_str().to_owned())
            .bind(line.bin.clone())
            .bind(line.sku.clone())
            .bind(variance)
            .execute(&mut **tx)
            .await?;
        }
    }
    let mut journal = Journal::new();
    for (sku, delta) in per_sku {
        let sku = SkuCode::parse(sku).map_err(|e| WarehouseError::invalid("sku", e.to_string()))?;
        if delta == 0 {
            // Units found in one bin and missing from another (or unbinned) move between
            // them with no change to on hand; on hand may have dropped since the count, so
            // the bins still give up what exceeds it.
            let level = crate::stock::stock_level_in_tx(tx, &sku, &warehouse).await?;
            crate::bin::bins_shrink_to(tx, &warehouse, &sku, level.on_hand).await?;
            continue;
        }
        let level = if delta > 0 {
            crate::stock::stock_level_receive(tx, &sku, &warehouse, delta).await?
        } else {
            let mut taken = crate::stock::stock_level_take(tx, &sku, &warehouse, -delta).await?;
            if taken.is_none() {
                // The shelf has fewer units than are held: the count is the truth, so the
                // holds that no longer fit are given back and named, never kept as if the
                // stock were there.
                let cut = crate::reservation::cut_holds(tx, &sku, &warehouse, -delta, now).await?;
                if !cut.is_empty() {
                    record_holds_cut(tx, &mut journal, id, &warehouse, &sku, -delta, &cut, now).await?;
                    taken = crate::stock::stock_level_take(tx, &sku, &warehouse, -delta).await?;
                }
            }
            match taken {
                Some(level) => level,
                None => {
                    // Only quarantined units stand in the way now: they are released or
                    // scrapped first, which is a person's decision.
                    let level = crate::stock::stock_level_in_tx(tx, &sku, &warehouse).await?;
                    return Err(WarehouseError::InsufficientStock {
                        lines: vec![ShortLine {
                            sku: sku.to_string(),
                            warehouse: Some(warehouse.to_string()),
                            requested: -delta,
                            available: level.available(),
                            reason: None,
                        }],
                    });
                }
            }
        };
        crate::bin::bins_shrink_to(tx, &warehouse, &sku, level.on_hand).await?;
        journal.stock_changed(NewMovement {
            warehouse: warehouse.clone(),
            sku,
            kind: MovementKind::Count,
            on_hand_delta: delta,
            reserved_delta: 0,
            on_hand_after: level.on_hand,
            reserved_after: level.reserved,
            reference: Some(id.to_owned()),
            reason: Some("cycle count".into()),
        });
    }
    sqlx::query("UPDATE counts SET status = 'approved', approved_at = $1 WHERE id = $2")
        .bind(now.to_rfc3339())
        .bind(id.to_owned())
        .execute(&mut **tx)
        .await?;
    journal.flush(tx, now).await?;
    count_in_tx(tx, id).await
}

/// The holds a count cut, in the order they were cut.
async fn holds_cut_of(conn: &mut sqlx::AnyConnection, id: &str) -> Result<Vec<CutHold>> {
    let rows: Vec<(String, Option<String>, String, String, String, i64)> = sqlx::query_as(
        "SELECT reservation_id, reference, status, sku, warehouse, quantity FROM count_holds_cut \
         WHERE count_id = $1 ORDER BY position",
    )
    .bind(id.to_owned())
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(reservation, reference, status, sku, warehouse, quantity)| CutHold {
            reservation,
            reference,
            status,
            sku,
            warehouse,
            quantity,
        })
        .collect())
}

/// Keeps the holds a count cut with the count and raises a `holds_cut` alert naming them.
#[allow(clippy::too_many_arguments)]
async fn record_holds_cut(
    tx: &mut Tx,
    journal: &mut Journal,
    id: &str,
    warehouse: &WarehouseCode,
    sku: &SkuCode,
    missing: i64,
    cut: &[CutHold],
    now: Timestamp,
) -> Result<()> {
    let first: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM count_holds_cut WHERE count_id = $1")
        .bind(id.to_owned())
        .fetch_one(&mut **tx)
        .await?;
    for (i, hold) in cut.iter().enumerate() {
        sqlx::query(
            "INSERT INTO count_holds_cut (count_id, position, reservation_id, reference, status, sku, warehouse, quantity) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(id.to_owned())
        .bind(first + i as i64)
        .bind(hold.reservation.clone())
        .bind(hold.reference.clone())
        .bind(hold.status.clone())
        .bind(hold.sku.clone())
        .bind(hold.warehouse.clone())
        .bind(hold.quantity)
        .execute(&mut **tx)
        .await?;
    }
    crate::alert::raise_holds_cut(tx, journal, id, warehouse, sku, missing, cut, now).await
}

/// Cancels an open count; nothing is applied.
pub async fn count_cancel(tx: &mut Tx, id: &str) -> Result<CountView> {
    let count = count_row(tx, id).await?;
    match count.status.as_str() {
        "open" => {
            sqlx::query("UPDATE counts SET status = 'cancelled' WHERE id = $1")
                .bind(id.to_owned())
                .execute(&mut **tx)
                .await?;
        }
        "cancelled" => {}
        other => {
            return Err(WarehouseError::InvalidState { what: "count", from: other.to_owned(), action: "be cancelled" });
        }
    }
    count_in_tx(tx, id).await
}
