//! Bulk import of items, receipts and adjustments in batches: each batch is one transaction,
//! applied all or nothing, and records the keys of its rows so that running the same import
//! again (after an interruption) skips what was applied.
//!
//! Items and plain receipts take a fast path (multi-row statements: one upsert for all the
//! batch's stock rows, one insert each for movements, events and keys); lot-tracked receipts,
//! receipts into a bin or into a warehouse that has bins (for the putaway suggestion) and
//! adjustments go through the ordinary use cases row by row.

use crate::ledger::{Journal, MovementKind, NewMovement};
use crate::receipt::{Receipt, ReceiptLine};
use crate::{Result, WarehouseError};
use kernel::limits::INSERT_ROWS_MAX;
use kernel::{NewEvent, SkuCode, Timestamp, WarehouseCode};
use std::collections::{BTreeMap, HashSet};
use store::Tx;
use store::sql::{Values, list_placeholders};

/// A parsed row with its position in the file and its key.
#[derive(Debug, Clone)]
pub struct Row<T> {
    pub number: u64,
    pub key: String,
    pub value: T,
}

/// What a batch did: rows applied, rows skipped because their key was applied before.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    pub applied: u64,
    pub skipped: u64,
}

/// A batch that was refused as a whole: the row that refused it and why.
#[derive(Debug)]
pub struct BatchRefusal {
    pub row: u64,
    pub error: WarehouseError,
}

impl From<WarehouseError> for BatchRefusal {
    fn from(error: WarehouseError) -> Self {
        BatchRefusal { row: 0, error }
    }
}

impl From<sqlx::Error> for BatchRefusal {
    fn from(error: sqlx::Error) -> Self {
        BatchRefusal { row: 0, error: error.into() }
    }
}

/// Keeps the rows whose key was not applied before; returns them and how many were skipped.
async fn unapplied<T>(tx: &mut Tx, kind: &str, rows: Vec<Row<T>>) -> Result<(Vec<Row<T>>, u64)> {
    let mut done: HashSet<String> = HashSet::new();
    for chunk in rows.chunks(INSERT_ROWS_MAX) {
        let sql = format!(
            "SELECT row_key FROM import_keys WHERE kind = $1 AND row_key IN ({})",
            list_placeholders(chunk.len(), 2)
        );
        let mut query = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql)).bind(kind.to_owned());
        for row in chunk {
            query = query.bind(row.key.clone());
        }
        done.extend(query.fetch_all(&mut **tx).await?);
    }
    let before = rows.len() as u64;
    // A key repeated within the batch counts once, like a key applied earlier.
    let mut seen = HashSet::new();
    let fresh: Vec<Row<T>> =
        rows.into_iter().filter(|r| !done.contains(&r.key) && seen.insert(r.key.clone())).collect();
    let skipped = before - fresh.len() as u64;
    Ok((fresh, skipped))
}

async fn keys_record(tx: &mut Tx, kind: &str, keys: &[&str], now: Timestamp) -> Result<()> {
    for chunk in keys.chunks(INSERT_ROWS_MAX) {
        let at = now.to_rfc3339();
        let mut values = Values::new(tx, 3);
        for key in chunk {
            values.row().text(kind).text(*key).text(at.as_str());
        }
        values.query("INSERT INTO import_keys (kind, row_key, imported_at) VALUES {values}").execute(&mut **tx).await?;
    }
    Ok(())
}

/// Imports items; an existing SKU refuses the batch.
pub async fn import_items(
    tx: &mut Tx,
    rows: Vec<Row<crate::item::NewItem>>,
    now: Timestamp,
) -> std::result::Result<BatchOutcome, BatchRefusal> {
    let (rows, skipped) = unapplied(tx, "items", rows).await?;
    let at = now.to_rfc3339();
    for chunk in rows.chunks(INSERT_ROWS_MAX) {
        let mut values = Values::new(tx, 5);
        for row in chunk {
            let item = &row.value;
            values
                .row()
                .text(item.sku.as_str())
                .text(item.name.as_str())
                .opt_int(item.weight_grams)
                .flag(item.track_lots)
                .text(at.as_str());
        }
        let inserted: HashSet<String> = values
            .query_as::<(String,)>(
                "INSERT INTO items (sku, name, weight_grams, track_lots, created_at) VALUES {values} \
                 ON CONFLICT (sku) DO NOTHING RETURNING sku",
            )
            .fetch_all(&mut **tx)
            .await?
            .into_iter()
            .map(|(sku,)| sku)
            .collect();
        if let Some(row) = chunk.iter().find(|r| !inserted.contains(r.value.sku.as_str())) {
            return Err(BatchRefusal {
                row: row.number,
                error: WarehouseError::Conflict(format!("an item with SKU {} exists already", row.value.sku)),
            });
        }
    }
    let events: Vec<NewEvent> = rows
        .iter()
        .map(|r| {
            NewEvent::of(
                format!("item:{}", r.value.sku),
                &crate::events::ItemCreated {
                    sku: r.value.sku.as_str().to_owned(),
                    name: r.value.name.clone(),
                    weight_grams: r.value.weight_grams,
                    track_lots: r.value.track_lots,
                    created_at: at.clone(),
                },
            )
        })
        .collect();
    let keys: Vec<&str> = rows.iter().map(|r| r.key.as_str()).collect();
    keys_record(tx, "items", &keys, now).await?;
    store::outbox::append(tx, &events, now).await.map_err(WarehouseError::from)?;
    Ok(BatchOutcome { applied: rows.len() as u64, skipped })
}

/// One line of a receipt import.
#[derive(Debug, Clone)]
pub struct ReceiptRow {
    pub warehouse: WarehouseCode,
    pub line: ReceiptLine,
    pub reference: Option<String>,
}

/// Imports receipt rows: plain rows in bulk, lot-tracked rows and rows naming a bin through
/// [`crate::receipt::receive`]. Unknown SKUs or warehouses, or a capacity exceeded, refuse the
/// batch.
pub async fn import_receipts(
    tx: &mut Tx,
    rows: Vec<Row<ReceiptRow>>,
    now: Timestamp,
) -> std::result::Result<BatchOutcome, BatchRefusal> {
    let (rows, skipped) = unapplied(tx, "receipts", rows).await?;
    let mut skus: Vec<&SkuCode> = rows.iter().map(|r| &r.value.line.sku).collect();
    skus.sort();
    skus.dedup();
    let items = crate::item::items_known(tx, &skus).await?;
    let mut warehouses: Vec<&WarehouseCode> = rows.iter().map(|r| &r.value.warehouse).collect();
    warehouses.sort();
    warehouses.dedup();
    let known_warehouses = crate::site::warehouses_known(tx, &warehouses).await?;
    for row in &rows {
        if !items.iter().any(|(s, _)| s == row.value.line.sku.as_str()) {
            return Err(BatchRefusal {
                row: row.number,
                error: WarehouseError::invalid("sku", format!("unknown SKU {}", row.value.line.sku)),
            });
        }
        if !known_warehouses.contains(row.value.warehouse.as_str()) {
            return Err(BatchRefusal {
                row: row.number,
                error: WarehouseError::invalid("warehouse", format!("unknown warehouse {}", row.value.warehouse)),
            });
        }
    }
    let tracks_lots = |sku: &SkuCode| items.iter().any(|(s, lots)| s == sku.as_str() && *lots);
    // Into a warehouse with bins, a row without a bin gets the receipt's putaway suggestion.
    let with_bins = crate::site::warehouses_with_bins(tx, &warehouses).await?;
    let (slow, fast): (Vec<&Row<ReceiptRow>>, Vec<&Row<ReceiptRow>>) = rows.iter().partition(|r| {
        tracks_lots(&r.value.line.sku) || r.value.line.bin.is_some() || with_bins.contains(r.value.warehouse.as_str())
    });

    for row in slow {
        let receipt = Receipt {
            warehouse: row.value.warehouse.clone(),
            reference: row.value.reference.clone(),
            lines: vec![row.value.line.clone()],
        };
        crate::receipt::receive(tx, receipt, now).await.map_err(|error| BatchRefusal { row: row.number, error })?;
    }

    // Fast path: one upsert per chunk of distinct stock rows, then movements and events.
    // Per stock row: the units received and the rows that bring them.
    type LevelRows<'a> = (i64, Vec<&'a Row<ReceiptRow>>);
    let mut per_level: BTreeMap<(&SkuCode, &WarehouseCode), LevelRows> = BTreeMap::new();
    for row in &fast {
        let entry = per_level.entry((&row.value.line.sku, &row.value.warehouse)).or_default();
        entry.0 += row.value.line.quantity.get();
        entry.1.push(row);
    }
    let levels: Vec<_> = per_level.into_iter().collect();
    let mut capacities = Vec::with_capacity(warehouses.len());
    for warehouse in &warehouses {
        capacities.push((*warehouse, crate::site::capacity_lock(tx, warehouse).await?));
    }
    let mut journal = Journal::new();
    for chunk in levels.chunks(INSERT_ROWS_MAX) {
        let mut values = Values::new(tx, 4);
        for ((sku, warehouse), (units, _)) in chunk {
            values.row().text(sku.as_str()).text(warehouse.as_str()).int(*units).int(0);
        }
        let query = values.query_as::<(String, String, i64, i64)>(
            "INSERT INTO stock_levels (sku, warehouse, on_hand, reserved) VALUES {values} \
             ON CONFLICT (sku, warehouse) DO UPDATE SET on_hand = stock_levels.on_hand + excluded.on_hand \
             RETURNING sku, warehouse, on_hand, reserved",
        );
        let after: std::collections::HashMap<(String, String), (i64, i64)> =
            query.fetch_all(&mut **tx).await?.into_iter().map(|(s, w, o, r)| ((s, w), (o, r))).collect();
        for ((sku, warehouse), (_, level_rows)) in chunk {
            let (mut on_hand, reserved) = after[&(sku.as_str().to_owned(), warehouse.as_str().to_owned())];
            on_hand -= level_rows.iter().map(|r| r.value.line.quantity.get()).sum::<i64>();
            // One movement per row, each with the level after it.
            for row in level_rows {
                on_hand += row.value.line.quantity.get();
                journal.stock_changed(NewMovement {
                    warehouse: (*warehouse).clone(),
                    sku: (*sku).clone(),
                    kind: MovementKind::Receipt,
                    on_hand_delta: row.value.line.quantity.get(),
                    reserved_delta: 0,
                    on_hand_after: on_hand,
                    reserved_after: reserved,
                    reference: Some(row.value.reference.clone().unwrap_or_else(|| format!("import:{}", row.key))),
                    reason: None,
                });
            }
        }
    }
    for (warehouse, capacity) in capacities {
        crate::site::capacity_check(tx, warehouse, capacity).await?;
    }
    let keys: Vec<&str> = rows.iter().map(|r| r.key.as_str()).collect();
    keys_record(tx, "receipts", &keys, now).await?;
    journal.flush(tx, now).await?;
    Ok(BatchOutcome { applied: rows.len() as u64, skipped })
}

/// Imports adjustments through [`crate::adjustment::adjust`], row by row, in one transaction.
pub async fn import_adjustments(
    tx: &mut Tx,
    rows: Vec<Row<crate::adjustment::Adjustment>>,
    now: Timestamp,
) -> std::result::Result<BatchOutcome, BatchRefusal> {
    let (rows, skipped) = unapplied(tx, "adjustments", rows).await?;
    for row in &rows {
        crate::adjustment::adjust(tx, row.value.clone(), now)
            .await
            .map_err(|error| BatchRefusal { row: row.number, error })?;
    }
    let keys: Vec<&str> = rows.iter().map(|r| r.key.as_str()).collect();
    keys_record(tx, "adjustments", &keys, now).await?;
    Ok(BatchOutcome { applied: rows.len() as u64, skipped })
}
