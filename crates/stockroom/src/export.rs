//! `stockroom export`: stock levels or the movement ledger as CSV or JSON lines, streamed
//! row by row (constant memory, whatever the size), with a progress bar on a terminal.

use futures::TryStreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use sqlx::FromRow;
use std::io::Write;
use store::Db;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum What {
    Stock,
    Movements,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Csv,
    Jsonl,
}

#[derive(Debug, Serialize, FromRow)]
struct StockRow {
    warehouse: String,
    sku: String,
    on_hand: i64,
    reserved: i64,
}

enum Sink<W: Write> {
    Csv(Box<csv::Writer<W>>),
    Jsonl(W),
}

impl<W: Write> Sink<W> {
    fn write<T: Serialize>(&mut self, row: &T) -> anyhow::Result<()> {
        match self {
            Sink::Csv(w) => w.serialize(row)?,
            Sink::Jsonl(w) => {
                serde_json::to_writer(&mut *w, row)?;
                w.write_all(b"\n")?;
            }
        }
        Ok(())
    }

    fn finish(self) -> anyhow::Result<()> {
        match self {
            Sink::Csv(mut w) => w.flush()?,
            Sink::Jsonl(mut w) => w.flush()?,
        }
        Ok(())
    }
}

/// Writes every row of `what` to `out`; returns how many.
pub async fn export<W: Write>(db: &Db, what: What, format: Format, out: W, progress: bool) -> anyhow::Result<u64> {
    let table = match what {
        What::Stock => "stock_levels",
        What::Movements => "movements",
    };
    let total: i64 =
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}"))).fetch_one(db.reader()).await?;
    let bar = if progress { ProgressBar::new(total.max(0) as u64) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template("{spinner} {pos}/{len} rows [{elapsed_precise}] {per_sec}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut sink = match format {
        Format::Csv => Sink::Csv(Box::new(csv::Writer::from_writer(out))),
        Format::Jsonl => Sink::Jsonl(out),
    };
    let mut written = 0u64;
    match what {
        What::Stock => {
            let mut rows = sqlx::query_as::<_, StockRow>(
                "SELECT warehouse, sku, on_hand, reserved FROM stock_levels ORDER BY warehouse, sku",
            )
            .fetch(db.reader());
            while let Some(row) = rows.try_next().await? {
                sink.write(&row)?;
                written += 1;
                bar.inc(1);
            }
        }
        What::Movements => {
            let mut rows = sqlx::query_as::<_, warehouse::ledger::Movement>(
                "SELECT id, seq, warehouse, sku, kind, on_hand_delta, reserved_delta, on_hand_after, reserved_after, \
                 reference, reason, at, reservations FROM movements ORDER BY seq",
            )
            .fetch(db.reader());
            while let Some(row) = rows.try_next().await? {
                sink.write(&row)?;
                written += 1;
                bar.inc(1);
            }
        }
    }
    sink.finish()?;
    bar.finish_and_clear();
    Ok(written)
}
