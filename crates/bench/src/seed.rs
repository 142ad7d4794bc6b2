//! Seeding a run's database directly with SQL, the same rows for every system.
//!
//! Large seeds (100k SKUs x 5 warehouses, 1M expired reservations) are generated inside the
//! database (`generate_series` on PostgreSQL, a recursive CTE on SQLite), which takes seconds
//! instead of minutes. The ledger stays consistent: every seeded stock row gets one `receipt`
//! movement for its on hand, and one `reserve` movement for what seeded reservations hold, so
//! Stockroom's reconciliation still checks something after a run. Seeding writes no outbox
//! events.

use anyhow::Context;
use kernel::Timestamp;
use store::{Backend, Db};

/// Warehouses are `W1..Wn`, preferred in that order (priority 10, 20, ...).
pub fn warehouse_code(i: usize) -> String {
    format!("W{}", i + 1)
}

/// A catalogue of `skus` SKUs named `{prefix}{n}`, stocked in every warehouse.
#[derive(Debug, Clone)]
pub struct Catalogue {
    pub prefix: String,
    pub skus: usize,
    pub on_hand: i64,
}

impl Catalogue {
    pub fn sku(&self, n: usize) -> String {
        format!("{}{n}", self.prefix)
    }
}

#[derive(Debug, Clone, Default)]
pub struct SeedPlan {
    pub warehouses: usize,
    /// Single stock rows: (SKU, warehouse index, on hand).
    pub rows: Vec<(String, usize, i64)>,
    pub catalogue: Option<Catalogue>,
    /// Active reservations of one unit each, already past their expiry, spread over the
    /// catalogue's rows.
    pub expired_reservations: usize,
}

/// Rows `g.n` = 0..n, as a FROM item.
pub fn series(backend: Backend, n: usize) -> String {
    let last = n.saturating_sub(1);
    match backend {
        Backend::Sqlite => format!(
            "(WITH RECURSIVE s(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM s WHERE n < {last}) SELECT n FROM s) AS g"
        ),
        Backend::Postgres => format!("generate_series(0, {last}) AS g(n)"),
    }
}

pub async fn seed(db: &Db, plan: &SeedPlan, now: Timestamp) -> anyhow::Result<()> {
    let backend = db.backend();
    let at = now.to_rfc3339();
    let mut tx = db.begin().await?;
    for i in 0..plan.warehouses {
        sqlx::query(
            "INSERT INTO warehouses (code, name, priority, active, created_at, updated_at) \
             VALUES ($1, $2, $3, 1, $4, $4)",
        )
        .bind(warehouse_code(i))
        .bind(format!("Bench warehouse {}", i + 1))
        .bind(10 * (i as i64 + 1))
        .bind(at.clone())
        .execute(&mut *tx)
        .await
        .context("seeding warehouses")?;
    }
    let mut items: Vec<&str> = plan.rows.iter().map(|(sku, _, _)| sku.as_str()).collect();
    items.sort_unstable();
    items.dedup();
    for sku in items {
        sqlx::query("INSERT INTO items (sku, name, track_lots, created_at) VALUES ($1, 'bench item', 0, $2)")
            .bind(sku.to_owned())
            .bind(at.clone())
            .execute(&mut *tx)
            .await
            .context("seeding items")?;
    }
    for (sku, warehouse, on_hand) in &plan.rows {
        sqlx::query("INSERT INTO stock_levels (sku, warehouse, on_hand, reserved) VALUES ($1, $2, $3, 0)")
            .bind(sku.clone())
            .bind(warehouse_code(*warehouse))
            .bind(*on_hand)
            .execute(&mut *tx)
            .await
            .context("seeding stock")?;
    }
    if let Some(catalogue) = &plan.catalogue {
        let w = plan.warehouses;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO items (sku, name, track_lots, created_at) \
             SELECT $1 || CAST(g.n AS TEXT), 'bench item', 0, $2 FROM {}",
            series(backend, catalogue.skus)
        )))
        .bind(catalogue.prefix.clone())
        .bind(at.clone())
        .execute(&mut *tx)
        .await
        .context("seeding the catalogue's items")?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO stock_levels (sku, warehouse, on_hand, reserved) \
             SELECT $1 || CAST(g.n / {w} AS TEXT), 'W' || CAST(g.n % {w} + 1 AS TEXT), $2, 0 FROM {}",
            series(backend, catalogue.skus * w)
        )))
        .bind(catalogue.prefix.clone())
        .bind(catalogue.on_hand)
        .execute(&mut *tx)
        .await
        .context("seeding the catalogue's stock")?;
    }
    sqlx::query(
        "INSERT INTO movements (id, warehouse, sku, kind, on_hand_delta, reserved_delta, \
         on_hand_after, reserved_after, reference, reason, at) \
         SELECT 'mov_seed_' || sku || '_' || warehouse, warehouse, sku, 'receipt', on_hand, 0, \
         on_hand, 0, 'bench-seed', NULL, $1 FROM stock_levels",
    )
    .bind(at.clone())
    .execute(&mut *tx)
    .await
    .context("seeding receipt movements")?;

    if plan.expired_reservations > 0 {
        let catalogue = plan.catalogue.as_ref().context("expired reservations need a catalogue")?;
        seed_expired(&mut tx, backend, plan, catalogue, now).await?;
    }
    tx.commit().await?;

    match backend {
        Backend::Postgres => {
            sqlx::query("ANALYZE").execute(db.reader()).await?;
        }
        Backend::Sqlite => {
            // A large seed leaves a large WAL; checkpoint it now rather than in the middle of
            // the measurement.
            sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(db.reader()).await?;
        }
    }
    Ok(())
}

async fn seed_expired(
    tx: &mut store::Tx,
    backend: Backend,
    plan: &SeedPlan,
    catalogue: &Catalogue,
    now: Timestamp,
) -> anyhow::Result<()> {
    let at = now.to_rfc3339();
    let (n, skus, w) = (plan.expired_reservations, catalogue.skus, plan.warehouses);
    // Due between one hour and one hour minus a second ago.
    let due_ms = now.millis() - 3_600_000;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO reservations (id, reference, status, expires_at_ms, created_at, updated_at) \
         SELECT 'res_' || CAST(g.n AS TEXT), 'bench-expired', 'active', $1 + g.n % 1000, $2, $2 FROM {}",
        series(backend, n)
    )))
    .bind(due_ms)
    .bind(at.clone())
    .execute(&mut **tx)
    .await
    .context("seeding expired reservations")?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO reservation_lines (reservation_id, line_no, sku, warehouse, quantity) \
         SELECT 'res_' || CAST(g.n AS TEXT), 0, $1 || CAST(g.n % {skus} AS TEXT), \
         'W' || CAST((g.n / {skus}) % {w} + 1 AS TEXT), 1 FROM {}",
        series(backend, n)
    )))
    .bind(catalogue.prefix.clone())
    .execute(&mut **tx)
    .await
    .context("seeding expired reservation lines")?;
    sqlx::query(
        "UPDATE stock_levels SET reserved = (SELECT CAST(COALESCE(SUM(l.quantity), 0) AS BIGINT) \
         FROM reservation_lines l WHERE l.sku = stock_levels.sku AND l.warehouse = stock_levels.warehouse)",
    )
    .execute(&mut **tx)
    .await
    .context("seeding reserved figures")?;
    sqlx::query(
        "INSERT INTO movements (id, warehouse, sku, kind, on_hand_delta, reserved_delta, \
         on_hand_after, reserved_after, reference, reason, at) \
         SELECT 'mov_seedres_' || sku || '_' || warehouse, warehouse, sku, 'reserve', 0, reserved, \
         on_hand, reserved, 'bench-seed', NULL, $1 FROM stock_levels WHERE reserved > 0",
    )
    .bind(at)
    .execute(&mut **tx)
    .await
    .context("seeding reserve movements")?;
    Ok(())
}
