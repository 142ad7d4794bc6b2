//! `ceiling-sqlite`: what this machine can do with the rows Stockroom writes per hold, written
//! with the leanest code there is, so Stockroom's figure can be read as a share of the limit
//! measured in the same run (issue 13).
//!
//! One writer thread owns a rusqlite connection to the same file (WAL, `synchronous=FULL`, the
//! same page cache as Stockroom's writer). Requests queue on a channel; the thread takes
//! whatever is queued (up to [`BATCH_MAX`]) and applies it in one `BEGIN IMMEDIATE`
//! transaction with cached single-row prepared statements: no hand-off per statement, no
//! statement text that changes with the batch, nothing but the rows.
//!
//! The rows per hold are Stockroom's: the reservation and its lines, one `reserve` movement
//! and one `stock.changed` event per line, one `reservation.created` event, the per-aggregate
//! heads of both, the global sequence bumped once per batch, and one guarded `UPDATE` per
//! touched stock row with its net change. No idempotency keys, no sourcing rules beyond
//! "first candidate warehouse with the units", no expired-hold reclaim, no lots: the ceiling
//! is an upper bound, not a second implementation.

use super::{HoldRequest, REFERENCE};
use crate::stats::Outcome;
use kernel::{Clock, ReservationId, SystemClock};
use rusqlite::{Connection, params};
use std::collections::HashMap;
use tokio::sync::{mpsc, oneshot};

/// Most holds in one transaction, as Stockroom's group commit default.
const BATCH_MAX: usize = 512;
const TTL_MS: i64 = 900_000;
const QUEUE_MAX: usize = 20_000;

type Reply = oneshot::Sender<Result<bool, String>>;

pub struct Ceiling {
    queue: mpsc::Sender<(HoldRequest, Reply)>,
    pub db: store::Db,
}

/// Which rows a hold writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// One `reserve` movement and one `stock.changed` per hold line (Stockroom before issue 13).
    PerHold,
    /// One `reserve` movement and one `stock.changed` per stock row per batch (Stockroom's
    /// shape since issue 13).
    PerRow,
}

impl Ceiling {
    /// Starts the writer thread on the SQLite file of `url` (already migrated and seeded
    /// through `db`).
    pub fn start(url: &str, db: store::Db, shape: Shape) -> anyhow::Result<Self> {
        let path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .map(|p| p.split('?').next().unwrap_or(p).to_owned())
            .ok_or_else(|| anyhow::anyhow!("the ceiling runs on SQLite only, not {url}"))?;
        let conn = Connection::open(&path)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; \
             PRAGMA cache_size = -65536; PRAGMA temp_store = MEMORY; PRAGMA busy_timeout = 10000;",
        )?;
        conn.set_prepared_statement_cache_capacity(64);
        let (queue, receiver) = mpsc::channel(QUEUE_MAX);
        std::thread::Builder::new().name("ceiling-writer".into()).spawn(move || writer(conn, receiver, shape))?;
        Ok(Self { queue, db })
    }

    pub async fn hold(&self, request: &HoldRequest) -> Outcome {
        let (reply, answer) = oneshot::channel();
        if self.queue.send((request.clone(), reply)).await.is_err() {
            return Outcome::other("the ceiling writer stopped");
        }
        match answer.await {
            Ok(Ok(true)) => Outcome::Ok,
            Ok(Ok(false)) => Outcome::Refused,
            Ok(Err(e)) => Outcome::other(e),
            Err(_) => Outcome::other("the ceiling writer dropped a request"),
        }
    }
}

fn writer(mut conn: Connection, mut receiver: mpsc::Receiver<(HoldRequest, Reply)>, shape: Shape) {
    let mut batch = Vec::with_capacity(BATCH_MAX);
    while let Some(first) = receiver.blocking_recv() {
        batch.push(first);
        while batch.len() < BATCH_MAX {
            match receiver.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        match apply(&mut conn, &batch, shape) {
            Ok(held) => {
                for ((_, reply), held) in batch.drain(..).zip(held) {
                    let _ = reply.send(Ok(held));
                }
            }
            Err(e) => {
                for (_, reply) in batch.drain(..) {
                    let _ = reply.send(Err(e.to_string()));
                }
            }
        }
    }
}

/// A stock row as the batch has left it: on hand, reserved, quarantined, and what the batch
/// added to reserved.
struct Row {
    on_hand: i64,
    reserved: i64,
    quarantined: i64,
    added: i64,
    holds: i64,
}

/// A line as held: SKU, warehouse, quantity, the row's reserved units after it.
type Placed = (String, String, i64, i64);

fn apply(conn: &mut Connection, batch: &[(HoldRequest, Reply)], shape: Shape) -> rusqlite::Result<Vec<bool>> {
    let now = SystemClock.now();
    let at = now.to_rfc3339();
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut rows: HashMap<(String, String), Row> = HashMap::new();
    // Plan every hold in memory, in queue order, all or nothing per request.
    let mut placed: Vec<Option<Vec<Placed>>> = Vec::with_capacity(batch.len());
    {
        let mut read = tx.prepare_cached(
            "SELECT on_hand, reserved, quarantined FROM stock_levels WHERE sku = ?1 AND warehouse = ?2",
        )?;
        for (request, _) in batch {
            let mut lines = Vec::with_capacity(request.lines.len());
            let mut ok = true;
            for line in &request.lines {
                let wanted: Vec<&str> = match &line.warehouse {
                    Some(w) => vec![w.as_str()],
                    None => line.candidates.iter().map(String::as_str).collect(),
                };
                let mut chosen = None;
                for warehouse in wanted {
                    let key = (line.sku.clone(), warehouse.to_owned());
                    if !rows.contains_key(&key) {
                        let found = read
                            .query_row(params![line.sku, warehouse], |r| {
                                Ok(Row {
                                    on_hand: r.get(0)?,
                                    reserved: r.get(1)?,
                                    quarantined: r.get(2)?,
                                    added: 0,
                                    holds: 0,
                                })
                            })
                            .ok();
                        match found {
                            Some(row) => rows.insert(key.clone(), row),
                            None => continue,
                        };
                    }
                    let row = rows.get_mut(&key).expect("just loaded");
                    if row.on_hand - row.reserved - row.quarantined >= line.quantity {
                        row.reserved += line.quantity;
                        row.added += line.quantity;
                        row.holds += 1;
                        chosen = Some((line.sku.clone(), warehouse.to_owned(), line.quantity, row.reserved));
                        break;
                    }
                }
                match chosen {
                    Some(c) => lines.push(c),
                    None => {
                        ok = false;
                        break;
                    }
                }
            }
            if !ok {
                // Give back what this request's earlier lines took in memory.
                for (sku, warehouse, quantity, _) in &lines {
                    let row = rows.get_mut(&(sku.clone(), warehouse.clone())).expect("planned");
                    row.reserved -= quantity;
                    row.added -= quantity;
                    row.holds -= 1;
                }
                placed.push(None);
            } else {
                placed.push(Some(lines));
            }
        }
    }
    {
        let mut update = tx.prepare_cached(
            "UPDATE stock_levels SET reserved = reserved + ?1 \
             WHERE sku = ?2 AND warehouse = ?3 AND on_hand - reserved - quarantined >= ?1",
        )?;
        for ((sku, warehouse), row) in rows.iter().filter(|(_, r)| r.added > 0) {
            if update.execute(params![row.added, sku, warehouse])? != 1 {
                return Err(rusqlite::Error::QueryReturnedNoRows);
            }
        }
    }
    let holds = placed.iter().flatten().count() as i64;
    let batch_reference = format!("hbt_{}", uuid::Uuid::now_v7().simple());
    let stock_rows_written = match shape {
        Shape::PerHold => placed.iter().flatten().map(|l| l.len() as i64).sum(),
        Shape::PerRow => rows.values().filter(|r| r.added > 0).count() as i64,
    };
    let events = holds + stock_rows_written;
    if events > 0 {
        let last: i64 = tx.query_row(
            "UPDATE event_sequence SET last_seq = last_seq + ?1 WHERE id = 1 RETURNING last_seq",
            params![events],
            |r| r.get(0),
        )?;
        let mut seq = last - events + 1;
        // The stock aggregates' heads, bumped once per batch for all their events.
        let mut stock_events: HashMap<String, i64> = HashMap::new();
        match shape {
            Shape::PerHold => {
                for (sku, warehouse, _, _) in placed.iter().flatten().flatten() {
                    *stock_events.entry(format!("stock:{warehouse}:{sku}")).or_default() += 1;
                }
            }
            Shape::PerRow => {
                for (sku, warehouse) in rows.iter().filter(|(_, r)| r.added > 0).map(|(k, _)| k) {
                    *stock_events.entry(format!("stock:{warehouse}:{sku}")).or_default() += 1;
                }
            }
        }
        let mut next_stock_seq: HashMap<String, i64> = HashMap::with_capacity(stock_events.len());
        {
            let mut head = tx.prepare_cached(
                "INSERT INTO aggregate_heads (aggregate, last_seq) VALUES (?1, ?2) \
                 ON CONFLICT (aggregate) DO UPDATE SET last_seq = aggregate_heads.last_seq + excluded.last_seq \
                 RETURNING last_seq",
            )?;
            for (aggregate, count) in &stock_events {
                let last: i64 = head.query_row(params![aggregate, count], |r| r.get(0))?;
                next_stock_seq.insert(aggregate.clone(), last - count + 1);
            }
        }
        let mut reservation = tx.prepare_cached(
            "INSERT INTO reservations (id, reference, status, expires_at_ms, created_at, updated_at, hold_batch) \
             VALUES (?1, ?2, 'active', ?3, ?4, ?4, ?5)",
        )?;
        let hold_batch = (shape == Shape::PerRow && holds > 1).then_some(batch_reference.as_str());
        let mut line_insert = tx.prepare_cached(
            "INSERT INTO reservation_lines (reservation_id, line_no, sku, warehouse, quantity) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        let mut movement = tx.prepare_cached(
            "INSERT INTO movements (id, warehouse, sku, kind, on_hand_delta, reserved_delta, on_hand_after, \
             reserved_after, reference, reason, at) VALUES (?1, ?2, ?3, 'reserve', 0, ?4, ?5, ?6, ?7, NULL, ?8)",
        )?;
        let mut event = tx.prepare_cached(
            "INSERT INTO events (seq, id, event_type, aggregate, aggregate_seq, at, version, data) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?;
        let mut head = tx.prepare_cached("INSERT INTO aggregate_heads (aggregate, last_seq) VALUES (?1, 1)")?;
        let expires_at_ms = now.millis() + TTL_MS;
        for lines in placed.iter().flatten() {
            let id = ReservationId::new().to_string();
            reservation.execute(params![id, REFERENCE, expires_at_ms, at, hold_batch])?;
            for (no, (sku, warehouse, quantity, reserved_after)) in lines.iter().enumerate() {
                line_insert.execute(params![id, no as i64, sku, warehouse, quantity])?;
                if shape == Shape::PerRow {
                    continue;
                }
                let on_hand = rows[&(sku.clone(), warehouse.clone())].on_hand;
                movement.execute(params![
                    format!("mov_{}", uuid::Uuid::now_v7().simple()),
                    warehouse,
                    sku,
                    quantity,
                    on_hand,
                    reserved_after,
                    id,
                    at
                ])?;
                let aggregate = format!("stock:{warehouse}:{sku}");
                let aggregate_seq = next_stock_seq.get_mut(&aggregate).expect("counted");
                let data = serde_json::json!({
                    "warehouse": warehouse, "sku": sku, "kind": "reserve", "on_hand_delta": 0,
                    "reserved_delta": quantity, "on_hand": on_hand, "reserved": reserved_after,
                    "available": on_hand - reserved_after, "reference": id,
                });
                event.execute(params![
                    seq,
                    format!("evt_{}", uuid::Uuid::now_v7().simple()),
                    "stock.changed",
                    aggregate,
                    *aggregate_seq,
                    at,
                    1,
                    data.to_string()
                ])?;
                *aggregate_seq += 1;
                seq += 1;
            }
            let aggregate = format!("reservation:{id}");
            head.execute(params![aggregate])?;
            let data = serde_json::json!({
                "id": id, "status": "active", "reference": REFERENCE,
                "expires_at": now.plus_seconds(TTL_MS / 1000).to_rfc3339(), "created_at": at,
                "lines": lines.iter().map(|(s, w, q, _)| serde_json::json!({"sku": s, "warehouse": w, "quantity": q, "lots": []})).collect::<Vec<_>>(),
            });
            event.execute(params![
                seq,
                format!("evt_{}", uuid::Uuid::now_v7().simple()),
                "reservation.created",
                aggregate,
                1,
                at,
                2,
                data.to_string()
            ])?;
            seq += 1;
        }
        if shape == Shape::PerRow {
            drop((reservation, line_insert, movement, event, head));
            // Stockroom names a lone hold's reservation instead; an id of the same size.
            write_per_row(&tx, &rows, &mut next_stock_seq, &mut seq, &batch_reference, &at)?;
        }
    }
    tx.commit()?;
    Ok(placed.iter().map(Option::is_some).collect())
}

/// The per-row shape's movement and `stock.changed` of every row the batch held from.
fn write_per_row(
    tx: &rusqlite::Transaction<'_>,
    rows: &HashMap<(String, String), Row>,
    next_stock_seq: &mut HashMap<String, i64>,
    seq: &mut i64,
    reference: &str,
    at: &str,
) -> rusqlite::Result<()> {
    let mut movement = tx.prepare_cached(
        "INSERT INTO movements (id, warehouse, sku, kind, on_hand_delta, reserved_delta, on_hand_after, \
         reserved_after, reference, reason, at, reservations) VALUES (?1, ?2, ?3, 'reserve', 0, ?4, ?5, ?6, ?7, NULL, ?8, ?9)",
    )?;
    let mut event = tx.prepare_cached(
        "INSERT INTO events (seq, id, event_type, aggregate, aggregate_seq, at, version, data) \
         VALUES (?1, ?2, 'stock.changed', ?3, ?4, ?5, 1, ?6)",
    )?;
    for ((sku, warehouse), row) in rows.iter().filter(|(_, r)| r.added > 0) {
        movement.execute(params![
            format!("mov_{}", uuid::Uuid::now_v7().simple()),
            warehouse,
            sku,
            row.added,
            row.on_hand,
            row.reserved,
            reference,
            at,
            row.holds
        ])?;
        let aggregate = format!("stock:{warehouse}:{sku}");
        let aggregate_seq = next_stock_seq.get_mut(&aggregate).expect("counted");
        let data = serde_json::json!({
            "warehouse": warehouse, "sku": sku, "kind": "reserve", "on_hand_delta": 0,
            "reserved_delta": row.added, "on_hand": row.on_hand, "reserved": row.reserved,
            "available": row.on_hand - row.reserved, "reference": reference,
        });
        event.execute(params![
            *seq,
            format!("evt_{}", uuid::Uuid::now_v7().simple()),
            aggregate,
            *aggregate_seq,
            at,
            data.to_string()
        ])?;
        *aggregate_seq += 1;
        *seq += 1;
    }
    Ok(())
}
