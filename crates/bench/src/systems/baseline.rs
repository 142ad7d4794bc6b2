//! The usual designs, on Stockroom's schema, driven in-process:
//!
//! - `baseline-sqlite-tx-per-request`: one SQLite transaction per request (`BEGIN
//!   IMMEDIATE`, a guarded `UPDATE` per line, insert the reservation and its lines, commit),
//!   synchronous=FULL, through one writer connection (requests queue for it; several writers
//!   would only add `SQLITE_BUSY` back-off).
//! - `baseline-saleor-postgres`: Saleor's checkout allocation per request: `BEGIN`; `SELECT
//!   ... FROM stock_levels WHERE sku IN (..) ORDER BY sku, warehouse FOR UPDATE` (every
//!   warehouse's row of each SKU, in key order); check and choose in Rust; `UPDATE` each
//!   chosen row; insert the reservation, its lines and an event row; `COMMIT`. Pool of 64.
//! - `baseline-guarded-update-postgres`: a one-line request is one autocommit statement (a
//!   guarded `UPDATE ... WHERE on_hand - reserved >= $q` and the reservation inserts chained
//!   in one CTE); a multi-line request is one short transaction with a guarded `UPDATE` per
//!   line in the request's order, then the inserts. Pool of 64.
//!
//! Baselines write no movements and (except Saleor's one event row per reservation) no
//! events: they do less work per reservation than Stockroom.

use super::{HoldRequest, Line, REFERENCE, System, classify_sqlx, classify_store};
use crate::stats::Outcome;
use kernel::{Clock, ReservationId, SystemClock};
use std::time::Duration;
use store::sql::{list_placeholders, values_placeholders};
use store::{Db, DbOptions, StoreError, Tx};

const TTL_MS: i64 = 900_000;
const POOL_SIZE: u32 = 64;

pub struct Baseline {
    system: System,
    pub db: Db,
}

impl Baseline {
    pub async fn connect(system: System, url: &str) -> anyhow::Result<Self> {
        let options =
            DbOptions { max_connections: POOL_SIZE, acquire_timeout: Duration::from_secs(300), ..DbOptions::default() };
        let db = Db::connect_and_migrate(url, &options).await?;
        Ok(Self { system, db })
    }

    /// Schema additions of a baseline: Saleor-style event rows take their `seq` from a plain
    /// sequence (Stockroom's ordered outbox is not part of that design).
    pub async fn prepare(&self) -> anyhow::Result<()> {
        if self.system == System::BaselineSaleorPostgres {
            sqlx::query("CREATE SEQUENCE IF NOT EXISTS bench_event_seq").execute(self.db.reader()).await?;
        }
        Ok(())
    }

    pub async fn hold(&self, request: &HoldRequest) -> Outcome {
        let held = match self.system {
            System::BaselineSaleorPostgres => self.saleor(request).await,
            System::BaselineGuardedUpdatePostgres if request.lines.len() == 1 => {
                self.guarded_statement(&request.lines[0]).await
            }
            _ => self.transaction_per_request(request).await,
        };
        match held {
            Ok(true) => Outcome::Ok,
            Ok(false) => Outcome::Refused,
            Err(e) => classify_store(&e),
        }
    }

    pub async fn read(&self, sku: &str) -> Outcome {
        read_levels(self.db.reader(), sku).await
    }

    /// One transaction: a guarded `UPDATE` per line (trying the candidate warehouses in
    /// order), then the reservation.
    async fn transaction_per_request(&self, request: &HoldRequest) -> Result<bool, StoreError> {
        let mut tx = self.db.begin().await?;
        let mut placed = Vec::with_capacity(request.lines.len());
        for line in &request.lines {
            match guarded_update(&mut tx, line).await? {
                Some(warehouse) => placed.push((line.sku.as_str(), warehouse, line.quantity)),
                None => {
                    tx.rollback().await?;
                    return Ok(false);
                }
            }
        }
        insert_reservation(&mut tx, &placed).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// One autocommit statement per candidate warehouse: the guarded update and the inserts
    /// chained in a CTE, so a success is one round trip.
    async fn guarded_statement(&self, line: &Line) -> Result<bool, StoreError> {
        let now = SystemClock.now();
        for warehouse in candidates(line) {
            let inserted = sqlx::query(
                "WITH held AS (UPDATE stock_levels SET reserved = reserved + $3 \
                               WHERE sku = $1 AND warehouse = $2 AND on_hand - reserved >= $3 RETURNING sku), \
                      created AS (INSERT INTO reservations (id, reference, status, expires_at_ms, created_at, updated_at) \
                                  SELECT $4, $5, 'active', $6, $7, $7 FROM held RETURNING id) \
                 INSERT INTO reservation_lines (reservation_id, line_no, sku, warehouse, quantity) \
                 SELECT id, 0, $1, $2, $3 FROM created",
            )
            .bind(line.sku.clone())
            .bind(warehouse.to_owned())
            .bind(line.quantity)
            .bind(ReservationId::new().to_string())
            .bind(REFERENCE)
            .bind(now.millis() + TTL_MS)
            .bind(now.to_rfc3339())
            .execute(self.db.reader())
            .await?
            .rows_affected();
            if inserted == 1 {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Saleor-style: lock every stock row of the request's SKUs in key order, decide in Rust,
    /// update, insert reservation, lines and an event.
    async fn saleor(&self, request: &HoldRequest) -> Result<bool, StoreError> {
        let mut skus: Vec<&str> = request.lines.iter().map(|l| l.sku.as_str()).collect();
        skus.sort_unstable();
        skus.dedup();
        let mut tx = self.db.begin().await?;
        let sql = format!(
            "SELECT sku, warehouse, on_hand, reserved FROM stock_levels WHERE sku IN ({}) \
             ORDER BY sku, warehouse FOR UPDATE",
            list_placeholders(skus.len(), 1)
        );
        let mut query = sqlx::query_as::<_, (String, String, i64, i64)>(sqlx::AssertSqlSafe(sql));
        for sku in &skus {
            query = query.bind(sku.to_string());
        }
        let mut rows = query.fetch_all(&mut *tx).await?;
        let mut placed: Vec<(&str, String, i64)> = Vec::with_capacity(request.lines.len());
        for line in &request.lines {
            let wanted = candidates(line);
            let chosen = wanted
                .iter()
                .find_map(|w| rows.iter().position(|r| r.0 == line.sku && r.1 == *w && r.2 - r.3 >= line.quantity));
            match chosen {
                Some(i) => {
                    let row = &mut rows[i];
                    row.3 += line.quantity;
                    placed.push((line.sku.as_str(), row.1.clone(), line.quantity));
                }
                None => {
                    tx.rollback().await?;
                    return Ok(false);
                }
            }
        }
        for (sku, warehouse, quantity) in &placed {
            sqlx::query("UPDATE stock_levels SET reserved = reserved + $1 WHERE sku = $2 AND warehouse = $3")
                .bind(*quantity)
                .bind(sku.to_string())
                .bind(warehouse.clone())
                .execute(&mut *tx)
                .await?;
        }
        let id = insert_reservation(&mut tx, &placed).await?;
        let data = serde_json::json!({
            "id": id,
            "lines": placed.iter().map(|(s, w, q)| serde_json::json!({"sku": s, "warehouse": w, "quantity": q})).collect::<Vec<_>>(),
        });
        sqlx::query(
            "INSERT INTO events (seq, id, event_type, aggregate, aggregate_seq, at, data) \
             VALUES (nextval('bench_event_seq'), $1, 'reservation.created', $2, 1, $3, $4)",
        )
        .bind(format!("evt_{}", uuid::Uuid::now_v7().simple()))
        .bind(format!("reservation:{id}"))
        .bind(SystemClock.now().to_rfc3339())
        .bind(data.to_string())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }
}

/// A baseline's availability read: the SKU's stock rows.
pub async fn read_levels(pool: &sqlx::AnyPool, sku: &str) -> Outcome {
    let rows: Result<Vec<(String, i64, i64)>, sqlx::Error> =
        sqlx::query_as("SELECT warehouse, on_hand, reserved FROM stock_levels WHERE sku = $1 ORDER BY warehouse")
            .bind(sku.to_owned())
            .fetch_all(pool)
            .await;
    match rows {
        Ok(rows) if !rows.is_empty() => Outcome::Ok,
        Ok(_) => Outcome::other(format!("no stock rows for {sku}")),
        Err(e) => classify_sqlx(&e),
    }
}

fn candidates(line: &Line) -> Vec<&str> {
    match &line.warehouse {
        Some(w) => vec![w.as_str()],
        None => line.candidates.iter().map(String::as_str).collect(),
    }
}

/// Reserves the line in the first candidate warehouse that has the stock; returns it.
async fn guarded_update(tx: &mut Tx, line: &Line) -> Result<Option<String>, StoreError> {
    for warehouse in candidates(line) {
        let updated = sqlx::query(
            "UPDATE stock_levels SET reserved = reserved + $1 \
             WHERE sku = $2 AND warehouse = $3 AND on_hand - reserved >= $1",
        )
        .bind(line.quantity)
        .bind(line.sku.clone())
        .bind(warehouse.to_owned())
        .execute(&mut **tx)
        .await?
        .rows_affected();
        if updated == 1 {
            return Ok(Some(warehouse.to_owned()));
        }
    }
    Ok(None)
}

/// Inserts an active reservation with its lines; returns its id.
async fn insert_reservation(tx: &mut Tx, lines: &[(&str, String, i64)]) -> Result<String, StoreError> {
    let id = ReservationId::new().to_string();
    let now = SystemClock.now();
    sqlx::query(
        "INSERT INTO reservations (id, reference, status, expires_at_ms, created_at, updated_at) \
         VALUES ($1, $2, 'active', $3, $4, $4)",
    )
    .bind(id.clone())
    .bind(REFERENCE)
    .bind(now.millis() + TTL_MS)
    .bind(now.to_rfc3339())
    .execute(&mut **tx)
    .await?;
    let sql = format!(
        "INSERT INTO reservation_lines (reservation_id, line_no, sku, warehouse, quantity) VALUES {}",
        values_placeholders(lines.len(), 5, 1)
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for (i, (sku, warehouse, quantity)) in lines.iter().enumerate() {
        query = query.bind(id.clone()).bind(i as i64).bind(sku.to_string()).bind(warehouse.clone()).bind(*quantity);
    }
    query.execute(&mut **tx).await?;
    Ok(id)
}
