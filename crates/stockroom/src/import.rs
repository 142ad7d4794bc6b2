//! `stockroom import`: items, receipts or adjustments from CSV (with a header row) or JSON
//! lines, in batches applied all or nothing, safe to run again.
//!
//! Every row has a key: the `key` column, else its content and occurrence (or `BATCH:ROW`
//! with `--batch-id`). A batch records the keys it applied, so the same data run again, under
//! any file name, is skipped. Rows that do not parse, and rows the database refuses (an
//! unknown SKU, a capacity), are rejected with their row number (1 is the first data row) and
//! reason, and written to the rejects file; every other row is applied, or with
//! `--all-or-nothing` none unless all are. `--dry-run` checks and reports everything and keeps
//! nothing. The exit code is 1 if anything was rejected.
//!
//! An import shares its database with a running server, so it is a polite writer: each
//! transaction takes as many rows as fit in `--max-tx-ms` (at most `--batch-size`; the count
//! adapts to the time the transactions before it took, begin to commit), and it waits
//! `--pause-ms` after each one. On SQLite a transaction holds the one write lock of the file
//! from `BEGIN IMMEDIATE` to its commit, and a server's writer that finds it taken sleeps in
//! SQLite's busy handler (1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50, 100 ms, then 100 ms, up to
//! the busy timeout) and tries again: short transactions bound how long it waits, and the pause
//! lets its next try find the lock free instead of the import's next transaction. On
//! PostgreSQL (row locks) the same bound and pause apply. `--all-or-nothing` and `--dry-run`
//! run the whole file in one transaction, so they are not polite: the server's writes wait for
//! the whole import.

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use kernel::{Clock, Quantity, SkuCode, WarehouseCode};
use serde::Deserialize;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
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
    /// All or nothing with a rejected row, or a dry run: nothing was kept.
    pub rolled_back: bool,
    /// Transactions begun (with all or nothing or a dry run: 1).
    pub transactions: u64,
    /// The longest time a transaction held the database, from its begin (once granted) to
    /// the end of its commit or rollback; for all or nothing and dry runs, the whole import.
    pub longest_tx: Duration,
}

#[derive(Deserialize, Serialize)]
struct ItemRecord {
    sku: String,
    name: String,
    weight_grams: Option<i64>,
    track_lots: Option<bool>,
    key: Option<String>,
}

#[derive(Deserialize, Serialize)]
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

#[derive(Deserialize, Serialize)]
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

/// One row of a file: its number (1 = the first data row), its text as read (for the rejects
/// file), and the record or why it does not parse.
struct RawRow<R> {
    number: u64,
    text: String,
    record: Result<R, String>,
}

type Records<R> = Box<dyn Iterator<Item = RawRow<R>>>;

/// Reads records of type `R` one by one.
fn records<R: DeserializeOwned + 'static>(path: &Path, format: Format) -> anyhow::Result<Records<R>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let reader = std::io::BufReader::with_capacity(1 << 20, file);
    Ok(match format {
        Format::Csv => {
            let mut csv = csv::ReaderBuilder::new().trim(csv::Trim::All).from_reader(reader);
            let headers =
                csv.headers().with_context(|| format!("reading the header row of {}", path.display()))?.clone();
            Box::new(csv.into_records().enumerate().map(move |(i, r)| {
                let number = i as u64 + 1;
                match r {
                    Ok(record) => RawRow {
                        number,
                        text: record.iter().collect::<Vec<_>>().join(","),
                        record: record.deserialize::<R>(Some(&headers)).map_err(|e| e.to_string()),
                    },
                    Err(e) => RawRow { number, text: String::new(), record: Err(e.to_string()) },
                }
            }))
        }
        Format::Jsonl => Box::new(
            reader
                .lines()
                .enumerate()
                .filter(|(_, line)| line.as_ref().map(|l| !l.trim().is_empty()).unwrap_or(true))
                .map(|(i, line)| {
                    let number = i as u64 + 1;
                    match line {
                        Ok(text) => {
                            let record = serde_json::from_str::<R>(&text).map_err(|e| e.to_string());
                            RawRow { number, text, record }
                        }
                        Err(e) => RawRow { number, text: String::new(), record: Err(e.to_string()) },
                    }
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

/// How an import runs.
#[derive(Debug, Clone)]
pub struct Options {
    pub format: Format,
    /// Rows per transaction (1 to 10,000).
    pub batch_size: usize,
    /// A progress line with rows/s on standard error.
    pub progress: bool,
    /// Rows without a `key` column are keyed `BATCH_ID:ROW` instead of by their content.
    pub batch_id: Option<String>,
    /// Nothing is applied unless every row is.
    pub all_or_nothing: bool,
    /// Everything is checked and reported as it would be applied; nothing is kept.
    pub dry_run: bool,
    /// Every rejected row, with its number, reason and text, as JSON lines.
    pub rejects: Option<PathBuf>,
    /// The longest a transaction should hold the database: the rows per transaction adapt to
    /// it (up to `batch_size`). `None`: always `batch_size` rows (the behaviour before the
    /// bound). Not applied to all or nothing and dry runs (one transaction).
    pub max_tx: Option<Duration>,
    /// The wait after each transaction, so a server's writer waiting for the lock gets it.
    pub pause: Duration,
}

/// Default of `--max-tx-ms`.
pub const DEFAULT_MAX_TX_MS: u64 = 5;
/// Default of `--pause-ms`.
pub const DEFAULT_PAUSE_MS: u64 = 20;

/// Rows in the first transaction of a bounded import, before any has been timed.
const FIRST_BOUNDED_ROWS: usize = 50;

/// How many rows the next transaction takes. Bounded, the count follows the time the last
/// transaction took: scaled by `max_tx / took` (which, with a fixed cost per commit such as
/// SQLite's fsync, approaches the best count from below), at most doubling at once.
struct Pace {
    max_rows: usize,
    rows: usize,
    max_tx: Option<Duration>,
}

impl Pace {
    fn new(options: &Options) -> Self {
        let max_rows = options.batch_size.clamp(1, 10_000);
        let bounded = options.max_tx.is_some() && !options.all_or_nothing && !options.dry_run;
        let max_tx = if bounded { options.max_tx } else { None };
        let rows = if max_tx.is_some() { FIRST_BOUNDED_ROWS.min(max_rows) } else { max_rows };
        Self { max_rows, rows, max_tx }
    }

    /// A transaction of `rows` rows took `took` from begin to the end of its commit.
    fn took(&mut self, rows: usize, took: Duration) {
        let Some(max_tx) = self.max_tx else { return };
        if rows == 0 {
            return;
        }
        let scaled = rows as f64 * max_tx.as_secs_f64() / took.as_secs_f64().max(1e-6);
        let next = scaled.min(rows as f64 * 2.0).floor() as usize;
        self.rows = next.clamp(1, self.max_rows);
    }
}

/// The key of a row without a `key` column: its content (every field but the key, after
/// parsing, so a renamed copy of a file or another column order keys the same) and which
/// occurrence of that content in the file it is (so two equal rows are two rows).
struct ContentKeys {
    seen: HashMap<u128, u32>,
}

impl ContentKeys {
    fn key<R: Serialize>(&mut self, record: &R) -> String {
        let digest = Sha256::digest(serde_json::to_vec(record).unwrap_or_default());
        let mut first = [0u8; 16];
        first.copy_from_slice(&digest[..16]);
        let hash = u128::from_be_bytes(first);
        let occurrence = self.seen.entry(hash).or_default();
        *occurrence += 1;
        format!("content:{hash:032x}:{occurrence}")
    }
}

/// Where the rows go: one transaction per batch, or (all or nothing, dry run) one for the
/// whole file with a savepoint per batch.
struct Sink {
    db: Db,
    whole: Option<store::Tx>,
    rejects: Option<std::io::BufWriter<std::fs::File>>,
    pace: Pace,
    pause: Duration,
}

impl Sink {
    fn reject(&mut self, report: &mut Report, number: u64, text: &str, reason: String) -> anyhow::Result<()> {
        if let Some(out) = &mut self.rejects {
            let line = serde_json::json!({"row": number, "reason": reason, "text": text});
            writeln!(out, "{line}").context("writing the rejects file")?;
        }
        report.errors.push((number, reason));
        Ok(())
    }

    /// A transaction of its own, of `rows` rows, begun at `began`, has committed or rolled
    /// back: the next one's size follows its time, and the lock is left free for `pause`.
    async fn finished(&mut self, report: &mut Report, rows: usize, began: Instant) {
        let took = began.elapsed();
        report.longest_tx = report.longest_tx.max(took);
        self.pace.took(rows, took);
        if self.pause.is_zero() {
            return;
        }
        let paused = Instant::now();
        if self.db.backend() == store::Backend::Sqlite {
            // Copy this transaction's pages from the WAL into the file now, while the lock is
            // free anyway: otherwise the server's next commit finds the WAL past its
            // auto-checkpoint size and copies them (with an fsync of the file) before it
            // answers. Passive: it waits for nobody, and a failure only leaves it to the next.
            let _ = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(self.db.reader()).await;
        }
        tokio::time::sleep(self.pause.saturating_sub(paused.elapsed())).await;
    }
}

/// Runs the import.
pub async fn import(db: &Db, kind: Kind, path: &Path, options: &Options) -> anyhow::Result<Report> {
    let started = Instant::now();
    let bar = if options.progress { ProgressBar::new_spinner() } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template("{spinner} {pos} rows [{elapsed_precise}] {per_sec} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    let rejects = match &options.rejects {
        Some(file) => Some(std::io::BufWriter::new(
            std::fs::File::create(file).with_context(|| format!("creating {}", file.display()))?,
        )),
        None => None,
    };
    let whole = if options.all_or_nothing || options.dry_run { Some(db.begin().await?) } else { None };
    let whole_began = Instant::now();
    let mut report = Report::default();
    if whole.is_some() {
        report.transactions = 1;
    }
    let mut sink = Sink { db: db.clone(), whole, rejects, pace: Pace::new(options), pause: options.pause };
    match kind {
        Kind::Items => {
            let rows = records::<ItemRecord>(path, options.format)?;
            run_kind(&mut sink, &mut report, options, &bar, rows, parse_item, warehouse::import::import_items).await?
        }
        Kind::Receipts => {
            let rows = records::<ReceiptRecord>(path, options.format)?;
            run_kind(&mut sink, &mut report, options, &bar, rows, parse_receipt, warehouse::import::import_receipts)
                .await?
        }
        Kind::Adjustments => {
            let rows = records::<AdjustmentRecord>(path, options.format)?;
            let run = warehouse::import::import_adjustments;
            run_kind(&mut sink, &mut report, options, &bar, rows, parse_adjustment, run).await?
        }
    }
    if let Some(tx) = sink.whole.take() {
        if options.dry_run || !report.errors.is_empty() {
            tx.rollback().await?;
            report.rolled_back = true;
        } else {
            tx.commit().await?;
        }
        report.longest_tx = whole_began.elapsed();
    }
    if let Some(out) = &mut sink.rejects {
        out.flush().context("writing the rejects file")?;
    }
    bar.finish_and_clear();
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Parses one record: its `key` column, if any, and the value to apply.
type Parse<R, T> = fn(R) -> Result<(Option<String>, T), String>;

async fn run_kind<R, T, F>(
    sink: &mut Sink,
    report: &mut Report,
    options: &Options,
    bar: &ProgressBar,
    rows: Records<R>,
    parse: Parse<R, T>,
    run: F,
) -> anyhow::Result<()>
where
    R: Serialize,
    T: Clone,
    F: for<'t> AsyncFn(
        &'t mut store::Tx,
        Vec<Row<T>>,
        kernel::Timestamp,
    ) -> Result<warehouse::import::BatchOutcome, BatchRefusal>,
{
    let mut keys = ContentKeys { seen: HashMap::new() };
    let mut batch: Vec<(Row<T>, String)> = Vec::with_capacity(sink.pace.rows);
    for row in rows {
        report.rows += 1;
        let parsed = row.record.and_then(|record| {
            let content = match &options.batch_id {
                Some(id) => format!("{id}:{}", row.number),
                None => keys.key(&record),
            };
            parse(record).map(|(key, value)| (key.unwrap_or(content), value))
        });
        match parsed {
            Ok((key, value)) => batch.push((Row { number: row.number, key, value }, row.text)),
            Err(message) => sink.reject(report, row.number, &row.text, message)?,
        }
        if batch.len() >= sink.pace.rows {
            apply(sink, report, std::mem::take(&mut batch), &run).await?;
            bar.set_position(report.rows);
        }
    }
    apply(sink, report, batch, &run).await
}

/// Applies one batch: in its own transaction, or under a savepoint of the whole import's. A
/// row the database refuses (an unknown SKU, a capacity) is rejected and the batch is applied
/// again without it, so every good row is applied and every bad one reported; a database
/// failure stops the import (the batches before it stay applied, unless all or nothing, and
/// are skipped on the next run).
async fn apply<T, F>(
    sink: &mut Sink,
    report: &mut Report,
    mut batch: Vec<(Row<T>, String)>,
    run: &F,
) -> anyhow::Result<()>
where
    T: Clone,
    F: for<'t> AsyncFn(
        &'t mut store::Tx,
        Vec<Row<T>>,
        kernel::Timestamp,
    ) -> Result<warehouse::import::BatchOutcome, BatchRefusal>,
{
    while !batch.is_empty() {
        let (first, last) = (batch[0].0.number, batch[batch.len() - 1].0.number);
        let rows: Vec<Row<T>> = batch
            .iter()
            .map(|(row, _)| Row { number: row.number, key: row.key.clone(), value: row.value.clone() })
            .collect();
        let count = rows.len();
        let now = kernel::SystemClock.now();
        let (outcome, mut own, began) = match &mut sink.whole {
            Some(tx) => {
                sqlx::query("SAVEPOINT import_batch").execute(&mut **tx).await?;
                (run(tx, rows, now).await, None, Instant::now())
            }
            None => {
                let mut tx = sink.db.begin().await?;
                // Timed from when the lock is granted: waiting for it holds nothing.
                let began = Instant::now();
                report.transactions += 1;
                (run(&mut tx, rows, now).await, Some(tx), began)
            }
        };
        match outcome {
            Ok(outcome) => {
                match (own.take(), &mut sink.whole) {
                    (Some(tx), _) => {
                        tx.commit().await?;
                        sink.finished(report, count, began).await;
                    }
                    (None, Some(tx)) => {
                        sqlx::query("RELEASE SAVEPOINT import_batch").execute(&mut **tx).await?;
                    }
                    (None, None) => {}
                }
                report.applied += outcome.applied;
                report.skipped += outcome.skipped;
                return Ok(());
            }
            Err(BatchRefusal { error: warehouse::WarehouseError::Store(e), .. }) => {
                return Err(anyhow::Error::new(e).context(format!("rows {first} to {last}")));
            }
            Err(refusal) => {
                match (own.take(), &mut sink.whole) {
                    (Some(tx), _) => {
                        tx.rollback().await?;
                        sink.finished(report, count, began).await;
                    }
                    (None, Some(tx)) => {
                        sqlx::query("ROLLBACK TO SAVEPOINT import_batch").execute(&mut **tx).await?;
                        sqlx::query("RELEASE SAVEPOINT import_batch").execute(&mut **tx).await?;
                    }
                    (None, None) => {}
                }
                match batch.iter().position(|(row, _)| row.number == refusal.row) {
                    Some(at) => {
                        let (row, text) = batch.remove(at);
                        sink.reject(report, row.number, &text, refusal.error.to_string())?;
                    }
                    // Not one row's fault: the batch is refused whole.
                    None => {
                        let reason = format!("{}; rows {first} to {last} not applied", refusal.error);
                        for (row, text) in std::mem::take(&mut batch) {
                            sink.reject(report, row.number, &text, reason.clone())?;
                        }
                    }
                }
            }
        }
    }
    Ok(())
}
