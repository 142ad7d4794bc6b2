//! Consistency checks against the database after a run: what is held compared with what
//! there was, and with what the clients were told.

use crate::load::Tally;
use crate::systems::REFERENCE;
use serde::{Deserialize, Serialize};
use sqlx::FromRow;
use store::Db;

/// Figures from the database, compared with the clients' tally.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Checked {
    /// Units held beyond on hand, summed over stock rows, counting the lines of active and
    /// confirmed reservations (not the `reserved` column), plus unsatisfiable requests that
    /// were accepted.
    pub oversell: i64,
    /// Units of satisfiable holds that were refused while at least that much stock was left
    /// unheld (capped by the stock left at the end).
    pub undersell: i64,
    /// Units held by this workload's reservations in the database.
    pub held_units: i64,
    /// Units the clients were told were held.
    pub acked_units: i64,
    /// Stock rows whose `reserved` differs from the sum of their reservations' lines.
    pub reserved_mismatch_rows: i64,
    /// Stockroom's own reconciliation (ledger and reservations): mismatched rows. `None` for
    /// baselines, which write no movements.
    pub reconcile_mismatches: Option<i64>,
}

#[derive(FromRow)]
struct RowFigures {
    over: i64,
    available: i64,
    mismatched: i64,
}

pub async fn check(db: &Db, tally: &Tally, stockroom: bool) -> anyhow::Result<Checked> {
    let pool = db.reader();
    let figures: RowFigures = sqlx::query_as(
        "SELECT CAST(COALESCE(SUM(CASE WHEN COALESCE(h.held, 0) > s.on_hand THEN COALESCE(h.held, 0) - s.on_hand ELSE 0 END), 0) AS BIGINT) AS over, \
                CAST(COALESCE(SUM(CASE WHEN s.on_hand > COALESCE(h.held, 0) THEN s.on_hand - COALESCE(h.held, 0) ELSE 0 END), 0) AS BIGINT) AS available, \
                CAST(COALESCE(SUM(CASE WHEN s.reserved <> COALESCE(h.held, 0) THEN 1 ELSE 0 END), 0) AS BIGINT) AS mismatched \
         FROM stock_levels s \
         LEFT JOIN (SELECT l.sku, l.warehouse, CAST(SUM(l.quantity) AS BIGINT) AS held \
                    FROM reservation_lines l JOIN reservations r ON r.id = l.reservation_id \
                    WHERE r.status IN ('active', 'confirmed') GROUP BY l.sku, l.warehouse) h \
           ON h.sku = s.sku AND h.warehouse = s.warehouse",
    )
    .fetch_one(pool)
    .await?;
    let held_units: i64 = sqlx::query_scalar(
        "SELECT CAST(COALESCE(SUM(l.quantity), 0) AS BIGINT) FROM reservation_lines l \
         JOIN reservations r ON r.id = l.reservation_id \
         WHERE r.reference = $1 AND r.status IN ('active', 'confirmed')",
    )
    .bind(REFERENCE)
    .fetch_one(pool)
    .await?;
    let reconcile_mismatches = if stockroom {
        let report = warehouse::reconcile::reconcile(pool).await?;
        Some(report.mismatches.len() as i64)
    } else {
        None
    };
    let refused = Tally::get(&tally.refused_satisfiable_units);
    Ok(Checked {
        oversell: figures.over + Tally::get(&tally.accepted_unsatisfiable),
        undersell: refused.min(figures.available),
        held_units,
        acked_units: Tally::get(&tally.acked_units),
        reserved_mismatch_rows: figures.mismatched,
        reconcile_mismatches,
    })
}
