//! Command line.

use crate::systems::{Layer, System};
use crate::workloads::{Params, Workload};
use anyhow::bail;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// Runs Stockroom and the usual designs side by side on the same workloads and data.
#[derive(Debug, Parser)]
#[command(name = "stockroom-bench", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Runs one job (a workload on one system and layer) and prints its records; the parent
    /// process starts one of these per job.
    #[command(hide = true)]
    Job {
        #[arg(long)]
        spec: String,
    },
    /// The catalog's availability view over HTTP with its cache and without it (straight to
    /// the database), side by side; freshness of a change; cached batches in process.
    Availability(crate::availability::AvailabilityArgs),
    /// Order checkout over HTTP with the group commit and with one checkout per transaction,
    /// side by side, then a flash sale; the books are checked after each.
    Orders(crate::orders::OrdersArgs),
    /// Fulfilments from pick to ship over HTTP, batched pick lists against one walk per
    /// fulfilment, side by side; every fulfilment shipped and the books reconciled after each.
    Fulfillment(crate::fulfilment::FulfilmentArgs),
    /// Hold latency over HTTP, idle and while `stockroom import receipts` runs on the same
    /// SQLite file as a separate process, with the import unbounded and bounded.
    Import(crate::import::ImportArgs),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Every workload for a few seconds, smaller data (the whole run takes a few minutes).
    #[arg(long)]
    pub quick: bool,
    /// Writes the header and one object per (workload, system, layer) to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Admin URL of a PostgreSQL server to create and drop bench databases through, e.g.
    /// postgres://postgres@127.0.0.1:5432/postgres. Without it, PostgreSQL systems are skipped.
    #[arg(long, env = "STOCKROOM_BENCH_POSTGRES_URL")]
    pub postgres_url: Option<String>,
    /// Workloads to run: hot-sku, burst, checkout, mix, expiry (default: all, in that order).
    #[arg(long, value_delimiter = ',')]
    pub workloads: Vec<String>,
    /// Systems to run (default: all): stockroom-sqlite-full, stockroom-sqlite-normal,
    /// stockroom-postgres, baseline-sqlite-tx-per-request, baseline-saleor-postgres,
    /// baseline-guarded-update-postgres, ceiling-sqlite (Stockroom's earlier rows per hold,
    /// leanest code), ceiling-sqlite-lean (Stockroom's rows per hold now, leanest code).
    #[arg(long, value_delimiter = ',')]
    pub systems: Vec<String>,
    /// Layers of Stockroom to run: in-process, http (default: both).
    #[arg(long, value_delimiter = ',')]
    pub layers: Vec<String>,
    /// Seconds of each closed-loop and open-loop measurement (after a warm-up).
    #[arg(long)]
    pub duration_s: Option<f64>,
    /// Concurrent clients of the closed-loop runs.
    #[arg(long)]
    pub clients: Option<usize>,
    /// Requests per second of the open-loop hot-sku run.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Client counts of the low-concurrency latency runs.
    #[arg(long, value_delimiter = ',')]
    pub low_concurrency: Option<Vec<usize>>,
    /// Buyers and units of the burst.
    #[arg(long)]
    pub burst_buyers: Option<usize>,
    #[arg(long)]
    pub burst_units: Option<i64>,
    /// SKUs of the mix (and of the expiry catalogue), 5 warehouses each.
    #[arg(long)]
    pub mix_skus: Option<usize>,
    /// Expired reservations to sweep.
    #[arg(long)]
    pub expiry_reservations: Option<usize>,
    /// Runs each job this many times, systems interleaved, and reports the median.
    #[arg(long, default_value_t = 1)]
    pub rounds: usize,
    /// Experiments: group-commit workers of the Stockroom systems (default: 1 on SQLite, 4 on
    /// PostgreSQL).
    #[arg(long)]
    pub gc_workers: Option<usize>,
    /// Experiments: most requests per group-commit batch (default 512).
    #[arg(long)]
    pub gc_batch_max: Option<usize>,
    /// Experiments: group-commit batch window in microseconds (default 0).
    #[arg(long)]
    pub gc_window_us: Option<u64>,
    /// HTTP holds send a fresh `Idempotency-Key` each, as a checkout would.
    #[arg(long)]
    pub idempotency_keys: bool,
    /// Seed of the request sequences (the same for every system).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

impl RunArgs {
    pub fn params(&self) -> Params {
        let mut p = if self.quick { Params::quick() } else { Params::full() };
        p.seed = self.seed;
        if let Some(s) = self.duration_s {
            let ms = (s * 1000.0).round().max(100.0) as u64;
            p.duration_ms = ms;
            p.open_duration_ms = ms;
            p.low_duration_ms = p.low_duration_ms.min(ms);
        }
        if let Some(c) = self.clients {
            p.clients = c.max(1);
        }
        if let Some(r) = self.rate {
            p.open_rate = r;
        }
        if let Some(l) = &self.low_concurrency {
            p.low_concurrency.clone_from(l);
        }
        if let Some(b) = self.burst_buyers {
            p.burst_buyers = b;
        }
        if let Some(u) = self.burst_units {
            p.burst_units = u;
        }
        if let Some(m) = self.mix_skus {
            p.mix_skus = m;
            p.expiry_skus = m;
        }
        p.http_idempotency_keys = self.idempotency_keys;
        p.group_commit.workers = self.gc_workers;
        p.group_commit.batch_max = self.gc_batch_max;
        p.group_commit.window_us = self.gc_window_us;
        if let Some(e) = self.expiry_reservations {
            p.expiry_reservations = e;
        }
        p
    }

    pub fn workloads(&self) -> anyhow::Result<Vec<Workload>> {
        if self.workloads.is_empty() {
            return Ok(Workload::ALL.to_vec());
        }
        let mut chosen = Vec::new();
        for raw in &self.workloads {
            match Workload::parse(raw.trim()) {
                Some(w) => chosen.push(w),
                None => bail!("unknown workload {raw:?}"),
            }
        }
        // Always in the documented order.
        Ok(Workload::ALL.into_iter().filter(|w| chosen.contains(w)).collect())
    }

    pub fn systems(&self) -> anyhow::Result<Vec<System>> {
        if self.systems.is_empty() {
            return Ok(System::ALL.to_vec());
        }
        self.systems
            .iter()
            .map(|raw| System::parse(raw.trim()).ok_or_else(|| anyhow::anyhow!("unknown system {raw:?}")))
            .collect()
    }

    pub fn layers(&self) -> anyhow::Result<Vec<Layer>> {
        if self.layers.is_empty() {
            return Ok(vec![Layer::InProcess, Layer::Http]);
        }
        self.layers
            .iter()
            .map(|raw| Layer::parse(raw.trim()).ok_or_else(|| anyhow::anyhow!("unknown layer {raw:?}")))
            .collect()
    }
}
