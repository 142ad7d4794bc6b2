//! `stockroom-bench import`: the latency of one-unit holds over HTTP while `stockroom import
//! receipts` runs beside the server on the same SQLite file, with the import's old behaviour
//! (fixed batches back to back) and with its bound on transactions and pause between them.
//!
//! Per setting, on a fresh SQLite file (FULL, the defaults of `stockroom serve`): the real
//! server is started inside this process (as the HTTP layer does), holds of one unit of one SKU
//! are sent open loop at a fixed rate (latency measured from the instant each was due), first
//! with nothing else running (`idle`), then while the `stockroom` binary imports a file of
//! receipts into the same file as a separate process (`import`, from its start to its exit).
//! Afterwards every receipt must have been applied exactly once (on hand per SKU equals the
//! seed plus the file) and the reconciliation must be clean.

use crate::database::BenchDatabase;
use crate::load::{OpFn, OpKind, OpRecord, Tally, open_loop, stop_after};
use crate::seed::{Catalogue, SeedPlan};
use crate::stats::Recorder;
use crate::systems::stockroom::{GroupCommitOverrides, HttpClient, start_server};
use crate::systems::{HoldRequest, Line, System};
use anyhow::{Context, bail};
use clap::Args;
use kernel::{Clock, SystemClock};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use store::Backend;
use tokio_util::sync::CancellationToken;

/// The SKU the holds take from (in the first warehouse), with stock that never runs out.
const HOT: &str = "HOT-1";
const HOT_STOCK: i64 = 1_000_000_000_000;
/// The imported receipts go to these SKUs' rows (`IMP0`..), one warehouse.
const PREFIX: &str = "IMP";
/// Most requests in flight before the open loop counts a request as backlog.
const MAX_IN_FLIGHT: usize = 1_024;

#[derive(Debug, Clone, Args)]
pub struct ImportArgs {
    /// Smaller file and shorter idle phase (for CI).
    #[arg(long)]
    pub quick: bool,
    /// Receipt rows in the imported file (default 200,000; quick 20,000).
    #[arg(long)]
    pub rows: Option<usize>,
    /// SKUs (stock rows) the receipts are spread over.
    #[arg(long, default_value_t = 5_000)]
    pub skus: usize,
    /// Holds per second, open loop.
    #[arg(long, default_value_t = 200.0)]
    pub rate: f64,
    /// Seconds of the idle measurement, after a 1 s warm-up (default 10; quick 3).
    #[arg(long)]
    pub idle_s: Option<f64>,
    /// Import settings to run, each on a fresh file: `unbounded` (`--max-tx-ms 0 --pause-ms
    /// 0`: the behaviour before the bound), `default` (the binary's defaults), or
    /// `MAX_TX_MS/PAUSE_MS` such as `5/10`, with `/normal` the import's connection on
    /// `--sqlite-synchronous normal` (its commits do not wait for an fsync).
    #[arg(long, value_delimiter = ',', default_value = "unbounded,default")]
    pub settings: Vec<String>,
    /// `--batch-size` of the import (its upper bound on rows per transaction).
    #[arg(long, default_value_t = 1_000)]
    pub batch_size: usize,
    /// The `stockroom` binary to import with (default: next to this one).
    #[arg(long)]
    pub stockroom_bin: Option<PathBuf>,
}

impl ImportArgs {
    fn rows(&self) -> usize {
        self.rows.unwrap_or(if self.quick { 20_000 } else { 200_000 }).max(1)
    }

    fn idle(&self) -> Duration {
        Duration::from_secs_f64(self.idle_s.unwrap_or(if self.quick { 3.0 } else { 10.0 }).max(0.5))
    }

    fn binary(&self) -> anyhow::Result<PathBuf> {
        let path = match &self.stockroom_bin {
            Some(path) => path.clone(),
            None => std::env::current_exe()?.with_file_name("stockroom"),
        };
        anyhow::ensure!(
            path.exists(),
            "no stockroom binary at {} (cargo build --release -p stockroom)",
            path.display()
        );
        Ok(path)
    }
}

/// The import's flags for one setting.
fn setting_flags(setting: &str) -> anyhow::Result<Vec<String>> {
    Ok(match setting {
        "unbounded" => vec!["--max-tx-ms".into(), "0".into(), "--pause-ms".into(), "0".into()],
        "default" => Vec::new(),
        other => {
            let parts: Vec<&str> = other.split('/').map(str::trim).collect();
            let (max_tx, pause, normal) = match parts[..] {
                [max_tx, pause] => (max_tx, pause, false),
                [max_tx, pause, "normal"] => (max_tx, pause, true),
                _ => bail!("unknown import setting {other:?}: unbounded, default or MAX_TX_MS/PAUSE_MS[/normal]"),
            };
            let (max_tx, pause): (u64, u64) = (max_tx.parse()?, pause.parse()?);
            let mut flags = vec!["--max-tx-ms".into(), max_tx.to_string(), "--pause-ms".into(), pause.to_string()];
            if normal {
                flags.extend(["--sqlite-synchronous".into(), "normal".into()]);
            }
            flags
        }
    })
}

struct Phase {
    holds: Recorder,
    window: Duration,
}

struct Run {
    setting: String,
    idle: Phase,
    during: Phase,
    import_seconds: f64,
    import_summary: String,
    import_rows_per_s: f64,
}

pub fn run(args: &ImportArgs) -> anyhow::Result<()> {
    crate::probe::install();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        println!("{}", crate::env::header(None, args.quick).await?.line());
        let binary = args.binary()?;
        let rows = args.rows();
        println!(
            "import: holds of 1 unit over HTTP, open loop at {:.0}/s, SQLite FULL; idle for {:.0} s, then while `{} \
             import receipts` of {rows} rows over {} stock rows (--batch-size {}) runs as a separate process on the \
             same file",
            args.rate,
            args.idle().as_secs_f64(),
            binary.display(),
            args.skus,
            args.batch_size
        );
        let dir = std::env::temp_dir().join(format!("stockroom-bench-import-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir)?;
        let file = dir.join("receipts.csv");
        let per_sku = write_receipts(&file, rows, args.skus)?;
        let mut runs = Vec::new();
        for setting in &args.settings {
            let flags = setting_flags(setting.trim())?;
            let run = one_run(args, &binary, &file, &per_sku, setting.trim(), &flags)
                .await
                .with_context(|| format!("the run with import setting {setting}"))?;
            println!("{}: {}", run.setting, run.import_summary);
            runs.push(run);
        }
        let _ = std::fs::remove_dir_all(&dir);

        println!();
        println!(
            "| import setting | phase | holds answered | errors | p50 ms | p99 ms | p99.9 ms | max ms | import rows/s \
             (wall) |"
        );
        println!("|---|---|---|---|---|---|---|---|---|");
        for run in &runs {
            for (phase, p, rate) in [
                ("idle", &run.idle, String::from("")),
                ("during import", &run.during, format!("{:.0}", run.import_rows_per_s)),
            ] {
                let l = p.holds.latency();
                println!(
                    "| {} | {phase} | {} in {:.1} s | {} | {:.2} | {:.2} | {:.2} | {:.2} | {rate} |",
                    run.setting,
                    p.holds.ok + p.holds.refused,
                    p.window.as_secs_f64(),
                    p.holds.errors.total(),
                    l.p50_ms,
                    l.p99_ms,
                    l.p999_ms,
                    l.max_ms
                );
            }
        }
        println!();
        for run in &runs {
            let (idle, during) = (run.idle.holds.latency(), run.during.holds.latency());
            let ratio = |a: f64, b: f64| a / b.max(1e-9);
            println!(
                "{}: during import / idle: p50 {:.2}x, p99 {:.2}x, max {:.2}x; import {:.0} rows/s over {:.1} s",
                run.setting,
                ratio(during.p50_ms, idle.p50_ms),
                ratio(during.p99_ms, idle.p99_ms),
                ratio(during.max_ms, idle.max_ms),
                run.import_rows_per_s,
                run.import_seconds
            );
            for (name, p) in [("idle", &run.idle), ("during import", &run.during)] {
                if let Some(sample) = &p.holds.error_sample {
                    println!("  {name}: first error: {sample}");
                }
            }
        }
        Ok(())
    })
}

/// Writes `rows` receipts (`warehouse,sku,quantity,reference`) spread over `skus` SKUs; returns
/// the units per SKU.
fn write_receipts(path: &Path, rows: usize, skus: usize) -> anyhow::Result<Vec<i64>> {
    let skus = skus.max(1);
    let mut per_sku = vec![0i64; skus];
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(out, "warehouse,sku,quantity,reference")?;
    let mut rng = crate::rng::Rng::for_request(7, 0);
    for n in 0..rows {
        let sku = rng.below(skus as u64) as usize;
        let quantity = 1 + rng.below(10) as i64;
        per_sku[sku] += quantity;
        writeln!(out, "W1,{PREFIX}{sku},{quantity},PO-{}", n / 100)?;
    }
    out.flush()?;
    Ok(per_sku)
}

fn hold_op(client: &Arc<HttpClient>) -> OpFn {
    let client = client.clone();
    let candidates: Arc<[String]> = Arc::from(vec!["W1".to_owned()]);
    Arc::new(move |_| {
        let client = client.clone();
        let request = HoldRequest {
            lines: vec![Line {
                sku: HOT.into(),
                warehouse: Some("W1".into()),
                quantity: 1,
                candidates: candidates.clone(),
            }],
        };
        Box::pin(async move {
            let outcome = client.hold(&request).await;
            OpRecord { kind: OpKind::Hold, outcome, units: 1, satisfiable: true }
        })
    })
}

async fn one_run(
    args: &ImportArgs,
    binary: &Path,
    file: &Path,
    per_sku: &[i64],
    setting: &str,
    flags: &[String],
) -> anyhow::Result<Run> {
    let database = BenchDatabase::create(Backend::Sqlite, None).await?;
    const SEEDED: i64 = 1_000;
    {
        let db = store::Db::connect_and_migrate(&database.url, &store::DbOptions::default()).await?;
        let plan = SeedPlan {
            warehouses: 1,
            rows: vec![(HOT.into(), 0, HOT_STOCK)],
            catalogue: Some(Catalogue { prefix: PREFIX.into(), skus: per_sku.len(), on_hand: SEEDED }),
            ..SeedPlan::default()
        };
        crate::seed::seed(&db, &plan, SystemClock.now()).await?;
        db.close().await;
    }
    let running = start_server(System::StockroomSqliteFull, &database.url, GroupCommitOverrides::default()).await?;
    let client = Arc::new(HttpClient::new(running.addr, MAX_IN_FLIGHT, false)?);
    let tally = Arc::new(Tally::default());
    let op = hold_op(&client);

    let warmup = Duration::from_secs(1);
    let idle = open_loop(args.rate, warmup, stop_after(warmup + args.idle()), MAX_IN_FLIGHT, &tally, &op).await;

    let stop = CancellationToken::new();
    let holds = {
        let (stop, tally, op, rate) = (stop.clone(), tally.clone(), op.clone(), args.rate);
        tokio::spawn(async move { open_loop(rate, Duration::ZERO, stop, MAX_IN_FLIGHT, &tally, &op).await })
    };
    // Let the open loop start before the import does.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let output = tokio::process::Command::new(binary)
        .arg("import")
        .arg("receipts")
        .arg(file)
        .arg("--batch-size")
        .arg(args.batch_size.to_string())
        .args(flags)
        .env("STOCKROOM_DATABASE_URL", &database.url)
        .output()
        .await
        .context("running stockroom import")?;
    let import_seconds = started.elapsed().as_secs_f64();
    stop.cancel();
    let during = holds.await?;
    let summary = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    anyhow::ensure!(
        output.status.success(),
        "stockroom import failed ({}): {summary} {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );

    // Exactly once: every SKU's on hand is the seed plus what the file brings.
    let on_hand: Vec<(String, i64)> =
        sqlx::query_as("SELECT sku, on_hand FROM stock_levels WHERE sku LIKE 'IMP%' AND warehouse = 'W1'")
            .fetch_all(running.db.reader())
            .await?;
    let mut wrong = 0;
    for (sku, units) in &on_hand {
        let n: usize = sku[PREFIX.len()..].parse()?;
        if *units != SEEDED + per_sku[n] {
            wrong += 1;
        }
    }
    anyhow::ensure!(wrong == 0 && on_hand.len() == per_sku.len(), "{wrong} SKUs with on hand not seed + file");
    let reconciliation = warehouse::reconcile::reconcile(running.db.reader()).await?;
    anyhow::ensure!(reconciliation.mismatches.is_empty(), "reconciliation: {:?}", reconciliation.mismatches);
    running.stop().await?;
    database.drop_database().await;

    let rows = args.rows() as f64;
    Ok(Run {
        setting: if flags.is_empty() {
            format!("{setting} (defaults)")
        } else {
            format!("{setting} ({})", flags.join(" "))
        },
        idle: Phase { holds: idle.holds, window: idle.window },
        during: Phase { holds: during.holds, window: during.window },
        import_seconds,
        import_summary: summary,
        import_rows_per_s: rows / import_seconds.max(1e-9),
    })
}
