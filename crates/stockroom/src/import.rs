//! `stockroom import`: items, receipts or adjustments from CSV (with a header row) or JSON
//! lines, in batches applied all or nothing, safe to run again.
//!
//! Every row has a key (the `key` column, or `FILE:ROW` when absent); a batch records the
//! keys it applied, so after an interruption the same command skips them. Rows that do not
//! parse are reported with their row number (1 is the first data row) and left out; a batch
//! that the database refuses (an unknown SKU, a capacity) is reported with the row that
//! refused it and none of its rows are applied. The exit code is 1 if anything was reported.

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use kernel::{Clock, Quantity, SkuCode, WarehouseCode};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use std::io::BufRead;
use std::path::Path;
use std::time::Instant;
use store::Db;
use warehouse::adjustment::{Adjustment, Change};
use warehouse::import::{BatchRefusal, Row};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    Items,
    Receipts,
    Adjustments,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Csv,
    Jsonl,
}

#[derive(Debug, Default)]
pub struct Report {
    pub rows: u64,
    pub applied: u64,
    pub skipped: u64,
    /// (row number, message)
    pub errors: Vec<(u64, String)>,
    pub seconds: f64,
}

#[derive(Deserialize)]
struct ItemRecord {
    sku: String,
    name: String,
    weight_grams: Option<i64>,
    track_lots: Option<bool>,
    key: Option<String>,
}

#[derive(Deserialize)]
struct ReceiptRecord {
    warehouse: String,
    sku: String,
    quantity: i64,
    lot: Option<String>,
    expires_on: Option<String>,
    bin: Option<String>,
    reference: Option<String>,
    key: Option<String>,
}

#[derive(Deserialize)]
struct AdjustmentRecord {
    warehouse: String,
    sku: String,
    delta: Option<i64>,
    counted: Option<i64>,
    lot: Option<String>,
    reason: Option<String>,
    key: Option<String>,
}

fn empty_to_none(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.trim().is_empty())
}

fn parse_item(r: ItemRecord) -> Result<(Option<String>, warehouse::item::NewItem), String> {
    let sku = SkuCode::parse(r.sku).map_err(|e| format!("sku: {e}"))?;
    if r.name.trim().is_empty() {
        return Err("name: must not be empty".into());
    }
    Ok((
        empty_to_none(r.key),
        warehouse::item::NewItem {
            sku,
            name: r.name,
            weight_grams: r.weight_grams,
            track_lots: r.track_lots.unwrap_or(false),
        },
    ))
}

fn parse_receipt(r: ReceiptRecord) -> Result<(Option<String>, warehouse::import::ReceiptRow), String> {
    Ok((
        empty_to_none(r.key),
        warehouse::import::ReceiptRow {
            warehouse: WarehouseCode::parse(r.warehouse).map_err(|e| format!("warehouse: {e}"))?,
            reference: empty_to_none(r.reference),
            line: warehouse::receipt::ReceiptLine {
                sku: SkuCode::parse(r.sku).map_err(|e| format!("sku: {e}"))?,
                quantity: Quantity::new(r.quantity).map_err(|e| format!("quantity: {e}"))?,
                lot: empty_to_none(r.lot),
                expires_on: empty_to_none(r.expires_on),
                bin: empty_to_none(r.bin),
            },
        },
    ))
}

fn parse_adjustment(r: AdjustmentRecord) -> Result<(Option<String>, Adjustment), String> {
    let change = match (r.delta, r.counted) {
        (Some(d), None) if d != 0 && d.abs() <= kernel::limits::QUANTITY_MAX => Change::Delta(d),
        (None, Some(c)) if (0..=kernel::limits::QUANTITY_MAX).contains(&c) => Change::Counted(c),
        _ => return Err("give a non-zero delta or a counted figure (not both), within 1,000,000,000".into()),
    };
    Ok((
        empty_to_none(r.key),
        Adjustment {
            warehouse: WarehouseCode::parse(r.warehouse).map_err(|e| format!("warehouse: {e}"))?,
            sku: SkuCode::parse(r.sku).map_err(|e| format!("sku: {e}"))?,
            change,
            lot: empty_to_none(r.lot),
            reason: empty_to_none(r.reason),
        },
    ))
}

/// Rows of a file: (row number, record or parse error).
type Records<R> = Box<dyn Iterator<Item = (u64, Result<R, String>)>>;

/// Reads records of type `R` one by one: (row number, record or parse error).
fn records<R: DeserializeOwned + 'static>(path: &Path, format: Format) -> anyhow::Result<Records<R>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let reader = std::io::BufReader::with_capacity(1 << 20, file);
    Ok(match format {
        Format::Csv => {
            let csv = csv::ReaderBuilder::new().trim(csv::Trim::All).from_reader(reader);
            Box::new(csv.into_deserialize::<R>().enumerate().map(|(i, r)| (i as u64 + 1, r.map_err(|e| e.to_string()))))
        }
        Format::Jsonl => Box::new(
            reader
                .lines()
                .enumerate()
                .filter(|(_, line)| line.as_ref().map(|l| !l.trim().is_empty()).unwrap_or(true))
                .map(|(i, line)| {
                    let parsed = line
                        .map_err(|e| e.to_string())
                        .and_then(|l| serde_json::from_str::<R>(&l).map_err(|e| e.to_string()));
                    (i as u64 + 1, parsed)
                }),
        ),
    })
}

pub fn format_of(path: &Path) -> Format {
    match path.extension().and_then(|e| e.to_str()) {
        Some("jsonl" | "ndjson" | "json") => Format::Jsonl,
        _ => Format::Csv,
    }
}

/// Runs the import; `progress` shows a progress line on standard error.
pub async fn import(
    db: &Db,
    kind: Kind,
    path: &Path,
    format: Format,
    batch_size: usize,
    progress: bool,
) -> anyhow::Result<Report> {
    let started = Instant::now();
    let bar = if progress { ProgressBar::new_spinner() } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template("{spinner} {pos} rows [{elapsed_precise}] {per_sec} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("import").to_owned();
    let default_key = |row: u64| format!("{file_name}:{row}");
    let mut report = Report::default();
    let batch_size = batch_size.clamp(1, 10_000);
    match kind {
        Kind::Items => {
            let mut batch = Vec::with_capacity(batch_size);
            for (number, record) in records::<ItemRecord>(path, format)? {
                report.rows += 1;
                match record.and_then(parse_item) {
                    Ok((key, value)) => {
                        batch.push(Row { number, key: key.unwrap_or_else(|| default_key(number)), value })
                    }
                    Err(message) => report.errors.push((number, message)),
                }
                if batch.len() >= batch_size {
                    apply(db, &mut report, std::mem::take(&mut batch), warehouse::import::import_items).await?;
                    bar.set_position(report.rows);
                }
            }
            apply(db, &mut report, batch, warehouse::import::import_items).await?;
        }
        Kind::Receipts => {
            let mut batch = Vec::with_capacity(batch_size);
            for (number, record) in records::<ReceiptRecord>(path, format)? {
                report.rows += 1;
                match record.and_then(parse_receipt) {
                    Ok((key, value)) => {
                        batch.push(Row { number, key: key.unwrap_or_else(|| default_key(number)), value })
                    }
                    Err(message) => report.errors.push((number, message)),
                }
                if batch.len() >= batch_size {
                    apply(db, &mut report, std::mem::take(&mut batch), warehouse::import::import_receipts).await?;
                    bar.set_position(report.rows);
                }
            }
            apply(db, &mut report, batch, warehouse::import::import_receipts).await?;
        }
        Kind::Adjustments => {
            let mut batch = Vec::with_capacity(batch_size);
            for (number, record) in records::<AdjustmentRecord>(path, format)? {
                report.rows += 1;
                match record.and_then(parse_adjustment) {
                    Ok((key, value)) => {
                        batch.push(Row { number, key: key.unwrap_or_else(|| default_key(number)), value })
                    }
                    Err(message) => report.errors.push((number, message)),
                }
                if batch.len() >= batch_size {
                    apply(db, &mut report, std::mem::take(&mut batch), warehouse::import::import_adjustments).await?;
                    bar.set_position(report.rows);
                }
            }
            apply(db, &mut report, batch, warehouse::import::import_adjustments).await?;
        }
    }
    bar.finish_and_clear();
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Applies one batch in its own transaction; a refusal is reported, a database failure stops
/// the import (the batches before it stay applied and will be skipped on the next run).
async fn apply<T, F>(db: &Db, report: &mut Report, batch: Vec<Row<T>>, run: F) -> anyhow::Result<()>
where
    F: for<'t> AsyncFnOnce(
        &'t mut store::Tx,
        Vec<Row<T>>,
        kernel::Timestamp,
    ) -> Result<warehouse::import::BatchOutcome, BatchRefusal>,
{
    if batch.is_empty() {
        return Ok(());
    }
    let (first, last) = (batch[0].number, batch[batch.len() - 1].number);
    let mut tx = db.begin().await?;
    match run(&mut tx, batch, kernel::SystemClock.now()).await {
        Ok(outcome) => {
            tx.commit().await?;
            report.applied += outcome.applied;
            report.skipped += outcome.skipped;
        }
        Err(BatchRefusal { error: warehouse::WarehouseError::Store(e), .. }) => {
            return Err(anyhow::Error::new(e).context(format!("rows {first} to {last}")));
        }
        Err(refusal) => {
            tx.rollback().await?;
            report.errors.push((refusal.row, format!("{}; rows {first} to {last} not applied", refusal.error)));
        }
    }
    Ok(())
}
