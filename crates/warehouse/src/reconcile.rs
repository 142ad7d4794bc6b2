//! Reconciliation: every stock level against the sum of its movements, every movement's
//! level-after against the running sums, and reserved against the reservations that hold it.
//! A mismatch means a bug, never a normal state.

use crate::Result;
use serde::Serialize;
use sqlx::{AnyPool, FromRow};

#[derive(Debug, Clone, Serialize, PartialEq, Eq, FromRow, utoipa::ToSchema)]
pub struct Mismatch {
    pub warehouse: String,
    pub sku: String,
    /// `ledger`: the level differs from the sum of its movements; `reservations`: reserved
    /// differs from the lines of active and confirmed reservations; `lots`: a lot-tracked
    /// level differs from the sum of its lots and its held quarantine entries; `quarantine`:
    /// quarantined (shown as `reserved`) differs from the held quarantine entries; `movement_after`: a movement's `on_hand_after`
    /// and `reserved_after` (here `on_hand`, `reserved`) differ from the running sums of the
    /// deltas up to it (the first such movement of the level).
    pub check: String,
    pub on_hand: i64,
    pub reserved: i64,
    pub expected_on_hand: i64,
    pub expected_reserved: i64,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Reconciliation {
    pub checked: i64,
    pub mismatches: Vec<Mismatch>,
}

pub async fn reconcile(pool: &AnyPool) -> Result<Reconciliation> {
    let mut tx = pool.begin().await?;
    let checked: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM stock_levels").fetch_one(&mut *tx).await?;
    let mut mismatches: Vec<Mismatch> = sqlx::query_as(
        "SELECT k.warehouse, k.sku, 'ledger' AS \"check\", \
                COALESCE(s.on_hand, 0) AS on_hand, COALESCE(s.reserved, 0) AS reserved, \
                COALESCE(m.on_hand_sum, 0) AS expected_on_hand, COALESCE(m.reserved_sum, 0) AS expected_reserved \
         FROM (SELECT warehouse, sku FROM stock_levels UNION SELECT warehouse, sku FROM movements) k \
         LEFT JOIN stock_levels s ON s.warehouse = k.warehouse AND s.sku = k.sku \
         LEFT JOIN (SELECT warehouse, sku, CAST(SUM(on_hand_delta) AS BIGINT) AS on_hand_sum, CAST(SUM(reserved_delta) AS BIGINT) AS reserved_sum \
                    FROM movements GROUP BY warehouse, sku) m ON m.warehouse = k.warehouse AND m.sku = k.sku \
         WHERE COALESCE(s.on_hand, 0) <> COALESCE(m.on_hand_sum, 0) \
            OR COALESCE(s.reserved, 0) <> COALESCE(m.reserved_sum, 0) \
         ORDER BY k.warehouse, k.sku",
    )
    .fetch_all(&mut *tx)
    .await?;
    let held: Vec<Mismatch> = sqlx::query_as(
        "SELECT s.warehouse, s.sku, 'reservations' AS \"check\", s.on_hand, s.reserved, \
                s.on_hand AS expected_on_hand, COALESCE(h.held, 0) AS expected_reserved \
         FROM stock_levels s \
         LEFT JOIN (SELECT l.warehouse, l.sku, CAST(SUM(l.quantity) AS BIGINT) AS held FROM reservation_lines l \
                    JOIN reservations r ON r.id = l.reservation_id \
                    WHERE r.status IN ('active', 'confirmed') GROUP BY l.warehouse, l.sku) h \
                ON h.warehouse = s.warehouse AND h.sku = s.sku \
         WHERE s.reserved <> COALESCE(h.held, 0) ORDER BY s.warehouse, s.sku",
    )
    .fetch_all(&mut *tx)
    .await?;
    mismatches.extend(held);
    let lots: Vec<Mismatch> = sqlx::query_as(
        "SELECT s.warehouse, s.sku, 'lots' AS \"check\", s.on_hand, s.reserved, \
                COALESCE(l.on_hand_sum, 0) + COALESCE(q.held, 0) AS expected_on_hand, \
                COALESCE(l.reserved_sum, 0) AS expected_reserved \
         FROM stock_levels s JOIN items i ON i.sku = s.sku AND i.track_lots = 1 \
         LEFT JOIN (SELECT warehouse, sku, CAST(SUM(on_hand) AS BIGINT) AS on_hand_sum, CAST(SUM(reserved) AS BIGINT) AS reserved_sum \
                    FROM stock_lots GROUP BY warehouse, sku) l ON l.warehouse = s.warehouse AND l.sku = s.sku \
         LEFT JOIN (SELECT warehouse, sku, CAST(SUM(units) AS BIGINT) AS held FROM stock_quarantine \
                    WHERE status = 'held' GROUP BY warehouse, sku) q ON q.warehouse = s.warehouse AND q.sku = s.sku \
         WHERE s.on_hand <> COALESCE(l.on_hand_sum, 0) + COALESCE(q.held, 0) OR s.reserved <> COALESCE(l.reserved_sum, 0) \
         ORDER BY s.warehouse, s.sku",
    )
    .fetch_all(&mut *tx)
    .await?;
    mismatches.extend(lots);
    // Quarantined units against the held quarantine entries (here `reserved` stands for
    // quarantined).
    let quarantined: Vec<Mismatch> = sqlx::query_as(
        "SELECT s.warehouse, s.sku, 'quarantine' AS \"check\", s.on_hand, s.quarantined AS reserved, \
                s.on_hand AS expected_on_hand, COALESCE(q.held, 0) AS expected_reserved \
         FROM stock_levels s \
         LEFT JOIN (SELECT warehouse, sku, CAST(SUM(units) AS BIGINT) AS held FROM stock_quarantine \
                    WHERE status = 'held' GROUP BY warehouse, sku) q ON q.warehouse = s.warehouse AND q.sku = s.sku \
         WHERE s.quarantined <> COALESCE(q.held, 0) ORDER BY s.warehouse, s.sku",
    )
    .fetch_all(&mut *tx)
    .await?;
    mismatches.extend(quarantined);
    // Every movement states the level after it: those must be the running sums of the deltas
    // (the first movement that breaks this, per level).
    let after: Vec<Mismatch> = sqlx::query_as(
        "WITH running AS (SELECT warehouse, sku, seq, on_hand_after, reserved_after, \
                CAST(SUM(on_hand_delta) OVER w AS BIGINT) AS on_hand_sum, \
                CAST(SUM(reserved_delta) OVER w AS BIGINT) AS reserved_sum \
              FROM movements WINDOW w AS (PARTITION BY warehouse, sku ORDER BY seq)), \
              first_bad AS (SELECT warehouse, sku, MIN(seq) AS seq FROM running \
              WHERE on_hand_sum <> on_hand_after OR reserved_sum <> reserved_after GROUP BY warehouse, sku) \
         SELECT r.warehouse, r.sku, 'movement_after' AS \"check\", r.on_hand_after AS on_hand, \
                r.reserved_after AS reserved, r.on_hand_sum AS expected_on_hand, r.reserved_sum AS expected_reserved \
         FROM running r JOIN first_bad b ON b.warehouse = r.warehouse AND b.sku = r.sku AND b.seq = r.seq \
         ORDER BY r.warehouse, r.sku",
    )
    .fetch_all(&mut *tx)
    .await?;
    mismatches.extend(after);
    tx.commit().await?;
    Ok(Reconciliation { checked, mismatches })
}
