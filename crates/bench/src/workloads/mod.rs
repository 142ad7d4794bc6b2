//! The workloads. Each one seeds its data ([`SeedPlan`]), drives a started system, checks the
//! database afterwards and returns one record per phase.
//!
//! A job is one workload on one (system, layer), run in a child process of its own so that
//! its peak RSS is its own and nothing of one system lingers into the next.

pub mod burst;
pub mod checkout;
pub mod expiry;
pub mod hot_sku;
pub mod mix;

use crate::check::{Checked, check};
use crate::load::{Measured, Tally};
use crate::report::{Entry, RunResult, json_f64};
use crate::seed::SeedPlan;
use crate::systems::stockroom::GroupCommitOverrides;
use crate::systems::{Instance, Layer, StartOptions, System};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    HotSku,
    Burst,
    Checkout,
    Mix,
    Expiry,
}

impl Workload {
    /// In the order they run.
    pub const ALL: [Workload; 5] =
        [Workload::HotSku, Workload::Burst, Workload::Checkout, Workload::Mix, Workload::Expiry];

    pub fn name(self) -> &'static str {
        match self {
            Workload::HotSku => "hot-sku",
            Workload::Burst => "burst",
            Workload::Checkout => "checkout",
            Workload::Mix => "mix",
            Workload::Expiry => "expiry",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|w| w.name() == raw)
    }

    /// Expiry measures Stockroom's sweeper through its Rust API; it has no baseline.
    pub fn applies_to(self, system: System, layer: Layer) -> bool {
        match self {
            Workload::Expiry => !system.is_baseline() && layer == Layer::InProcess,
            _ => true,
        }
    }
}

/// Sizes and durations of every workload; `--quick` shrinks them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Params {
    pub seed: u64,
    pub warmup_ms: u64,
    /// Closed-loop runs (hot-sku, checkout, mix).
    pub duration_ms: u64,
    pub clients: usize,
    /// Open-loop request rate of `hot-sku-open`.
    pub open_rate: f64,
    pub open_duration_ms: u64,
    /// Client counts of the low-concurrency latency runs (`latency-cN`, hot SKU).
    pub low_concurrency: Vec<usize>,
    pub low_duration_ms: u64,
    pub burst_buyers: usize,
    pub burst_units: i64,
    pub checkout_skus: usize,
    pub mix_skus: usize,
    pub mix_read_fraction: f64,
    pub zipf_exponent: f64,
    pub expiry_reservations: usize,
    pub expiry_skus: usize,
    pub expiry_calibrate_ms: u64,
    pub expiry_sweep_batch: i64,
    pub expiry_max_ms: u64,
    /// HTTP requests (and connections) in flight at most from the bench's client.
    pub http_connections: usize,
    /// HTTP holds carry a fresh `Idempotency-Key` each, as a checkout would.
    pub http_idempotency_keys: bool,
    /// Open loop: requests outstanding at most before new ones count as backlog errors.
    pub max_in_flight: usize,
    /// Changes to Stockroom's group-commit defaults (experiments only).
    pub group_commit: GroupCommitOverrides,
}

impl Params {
    pub fn full() -> Self {
        Self {
            seed: 42,
            warmup_ms: 1_000,
            duration_ms: 10_000,
            clients: 64,
            open_rate: 1_000.0,
            open_duration_ms: 10_000,
            low_concurrency: vec![1, 8],
            low_duration_ms: 5_000,
            burst_buyers: 10_000,
            burst_units: 1_000,
            checkout_skus: 100,
            mix_skus: 100_000,
            mix_read_fraction: 0.95,
            zipf_exponent: 1.0,
            expiry_reservations: 1_000_000,
            expiry_skus: 100_000,
            expiry_calibrate_ms: 3_000,
            expiry_sweep_batch: kernel::limits::SWEEP_BATCH_MAX,
            expiry_max_ms: 120_000,
            http_connections: 1_024,
            http_idempotency_keys: false,
            max_in_flight: 10_000,
            group_commit: GroupCommitOverrides::default(),
        }
    }

    pub fn quick() -> Self {
        Self {
            warmup_ms: 200,
            duration_ms: 1_500,
            open_duration_ms: 1_000,
            low_duration_ms: 700,
            mix_skus: 5_000,
            expiry_reservations: 20_000,
            expiry_skus: 5_000,
            expiry_calibrate_ms: 1_000,
            expiry_max_ms: 60_000,
            ..Self::full()
        }
    }

    pub fn warmup(&self) -> Duration {
        Duration::from_millis(self.warmup_ms)
    }

    pub fn duration(&self) -> Duration {
        Duration::from_millis(self.duration_ms)
    }
}

/// One job: what a child process runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobSpec {
    pub workload: Workload,
    pub system: System,
    pub layer: Layer,
    pub params: Params,
    pub postgres_url: Option<String>,
}

/// Seeds, starts, runs and tears down one job.
pub async fn run_job(spec: &JobSpec) -> anyhow::Result<Vec<RunResult>> {
    let params = &spec.params;
    let plan: SeedPlan = match spec.workload {
        Workload::HotSku => hot_sku::plan(),
        Workload::Burst => burst::plan(params),
        Workload::Checkout => checkout::plan(params),
        Workload::Mix => mix::plan(params),
        Workload::Expiry => expiry::plan(params),
    };
    let options = StartOptions {
        postgres_admin_url: spec.postgres_url.clone(),
        http_connections: params.http_connections,
        http_idempotency_keys: params.http_idempotency_keys,
        group_commit: params.group_commit,
    };
    let instance = Instance::start(spec.system, spec.layer, &plan, &options).await?;
    let run = Run {
        spec,
        instance: &instance,
        tally: Arc::new(Tally::default()),
        marks: std::sync::Mutex::new(Marks::now()),
    };
    let results = match spec.workload {
        Workload::HotSku => hot_sku::run(&run).await,
        Workload::Burst => burst::run(&run).await,
        Workload::Checkout => checkout::run(&run).await,
        Workload::Mix => mix::run(&run).await,
        Workload::Expiry => expiry::run(&run).await,
    };
    instance.stop().await;
    let mut results = results?;
    let rss = crate::env::peak_rss_mb();
    for r in &mut results {
        r.peak_rss_mb = rss;
    }
    Ok(results)
}

/// What a workload works with.
pub struct Run<'a> {
    pub spec: &'a JobSpec,
    pub instance: &'a Instance,
    /// Cumulative over the job's phases, like the database it is checked against.
    pub tally: Arc<Tally>,
    /// Where the current phase started.
    marks: std::sync::Mutex<Marks>,
}

/// Process CPU time and group-commit totals at an instant, to report per phase.
#[derive(Debug, Clone, Copy)]
struct Marks {
    at: std::time::Instant,
    cpu_s: f64,
    batches: f64,
    batched_requests: f64,
}

impl Marks {
    fn now() -> Self {
        let (batches, batched_requests) = crate::probe::batch_totals();
        Self { at: std::time::Instant::now(), cpu_s: crate::env::process_cpu_s(), batches, batched_requests }
    }
}

impl Run<'_> {
    pub fn params(&self) -> &Params {
        &self.spec.params
    }

    /// Checks the database and makes the record of the phase that just ended.
    pub async fn record(&self, entry: Entry<'_>, measured: &Measured) -> anyhow::Result<RunResult> {
        let end = Marks::now();
        let start = *self.marks.lock().unwrap_or_else(|e| e.into_inner());
        // The ceiling writes the ledger too, so its books are reconciled like Stockroom's.
        let reconciles = !self.spec.system.is_baseline() || self.spec.system.ceiling_shape().is_some();
        let checked: Checked = check(&self.instance.db, &self.tally, reconciles).await?;
        let mut result = RunResult::new(&entry, self.spec, measured, checked);
        let extra = &mut result.extra;
        let wall = end.at.duration_since(start.at).as_secs_f64().max(1e-9);
        // Cores busy in this process (load generator and, in-process or HTTP, Stockroom and
        // SQLite; not the PostgreSQL server), over the phase including its warm-up.
        extra.insert("process_cpu_cores".into(), json_f64((end.cpu_s - start.cpu_s) / wall));
        extra.insert("loadavg_1m".into(), json_f64(crate::env::loadavg_1m()));
        let batches = end.batches - start.batches;
        if batches > 0.0 {
            extra.insert("group_commit_batches".into(), json_f64(batches));
            extra.insert("mean_batch".into(), json_f64((end.batched_requests - start.batched_requests) / batches));
        }
        *self.marks.lock().unwrap_or_else(|e| e.into_inner()) = Marks::now();
        Ok(result)
    }
}
