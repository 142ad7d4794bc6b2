//! Results: one record per (workload, system, layer), the ratios of Stockroom to each
//! baseline, a readable table and the JSON file.

use crate::check::Checked;
use crate::env::Header;
use crate::load::Measured;
use crate::stats::{ErrorCounts, Recorder};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// How a record was measured, which decides what its ratios compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Clients back to back: throughput (ratios compare `ok_per_s`).
    Closed,
    /// Fixed request rate: latency (ratios compare p99, baseline over Stockroom).
    Open,
    /// Everyone at once: time to finish (ratios compare it, baseline over Stockroom).
    Burst,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResult {
    pub workload: String,
    pub system: String,
    pub layer: String,
    pub mode: Mode,
    pub durability: String,
    /// Concurrent clients (closed loop, burst) or requests in flight at most (open loop).
    pub clients: usize,
    /// Requests per second asked for (open loop).
    pub rate: Option<f64>,
    pub window_s: f64,
    pub ok: u64,
    pub attempted: u64,
    pub refused: u64,
    pub ok_per_s: f64,
    pub attempted_per_s: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
    pub oversell: i64,
    pub undersell: i64,
    pub errors: u64,
    pub error_counts: ErrorCounts,
    pub error_sample: Option<String>,
    pub checks: Checked,
    /// Peak resident set of the child process that ran this job (load generator, HTTP
    /// client, Stockroom or the baseline's client side, SQLite's cache; not the PostgreSQL
    /// server's processes).
    pub peak_rss_mb: f64,
    /// Ratio of this Stockroom record to each baseline's record of the same workload (see
    /// [`Mode`]); empty for baselines.
    pub ratio_vs: BTreeMap<String, f64>,
    /// Workload-specific figures (burst time, sweep rate, read/write split, ...).
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// The parts of a record a workload fills in.
#[derive(Debug, Clone)]
pub struct Entry<'a> {
    pub workload: &'a str,
    pub mode: Mode,
    pub clients: usize,
    pub rate: Option<f64>,
}

impl RunResult {
    pub fn new(entry: &Entry<'_>, spec: &crate::workloads::JobSpec, measured: &Measured, checks: Checked) -> Self {
        let all: Recorder = measured.all();
        let latency = all.latency();
        let seconds = measured.window.as_secs_f64().max(1e-9);
        let mut extra = BTreeMap::new();
        if measured.reads.attempted() > 0 && measured.holds.attempted() > 0 {
            for (name, recorder) in [("read", &measured.reads), ("hold", &measured.holds)] {
                let l = recorder.latency();
                extra.insert(format!("{name}_ok_per_s"), json_f64(recorder.ok as f64 / seconds));
                extra.insert(format!("{name}_p50_ms"), json_f64(l.p50_ms));
                extra.insert(format!("{name}_p99_ms"), json_f64(l.p99_ms));
            }
        }
        Self {
            workload: entry.workload.to_owned(),
            system: spec.system.name().to_owned(),
            layer: spec.layer.name().to_owned(),
            mode: entry.mode,
            durability: spec.system.durability().to_owned(),
            clients: entry.clients,
            rate: entry.rate,
            window_s: seconds,
            ok: all.ok,
            attempted: all.attempted(),
            refused: all.refused,
            ok_per_s: all.ok as f64 / seconds,
            attempted_per_s: all.attempted() as f64 / seconds,
            p50_ms: latency.p50_ms,
            p95_ms: latency.p95_ms,
            p99_ms: latency.p99_ms,
            p999_ms: latency.p999_ms,
            max_ms: latency.max_ms,
            mean_ms: latency.mean_ms,
            oversell: checks.oversell,
            undersell: checks.undersell,
            errors: all.errors.total(),
            error_counts: all.errors,
            error_sample: all.error_sample.clone(),
            checks,
            peak_rss_mb: 0.0,
            ratio_vs: BTreeMap::new(),
            extra,
        }
    }

    fn key(&self) -> (String, String, String) {
        (self.workload.clone(), self.system.clone(), self.layer.clone())
    }
}

pub fn json_f64(x: f64) -> serde_json::Value {
    serde_json::Number::from_f64((x * 1000.0).round() / 1000.0)
        .map(serde_json::Value::Number)
        .unwrap_or(serde_json::Value::Null)
}

/// Orders records by workload (in the order workloads first appear), keeping the order of
/// systems within each.
pub fn sort_by_workload(results: &mut [RunResult]) {
    let mut order: Vec<String> = Vec::new();
    for r in results.iter() {
        if !order.contains(&r.workload) {
            order.push(r.workload.clone());
        }
    }
    results.sort_by_key(|r| order.iter().position(|w| *w == r.workload));
}

/// Fills `ratio_vs` of every Stockroom record against each baseline and ceiling record of its
/// workload (above 1: better than that system; against a ceiling, the share of the limit
/// Stockroom reaches), and of each ceiling record against the baselines.
pub fn compute_ratios(results: &mut [RunResult]) {
    let reference = |system: &str| system.starts_with("baseline-") || system.starts_with("ceiling-");
    let baselines: Vec<RunResult> = results.iter().filter(|r| reference(&r.system)).cloned().collect();
    for result in results.iter_mut() {
        if result.system.starts_with("baseline-") {
            continue;
        }
        let is_ceiling = result.system.starts_with("ceiling-");
        for baseline in baselines.iter().filter(|b| b.workload == result.workload) {
            if is_ceiling && baseline.system.starts_with("ceiling-") {
                continue;
            }
            let ratio = match result.mode {
                Mode::Closed => ratio(result.ok_per_s, baseline.ok_per_s),
                Mode::Open => ratio(baseline.p99_ms, result.p99_ms),
                Mode::Burst => ratio(baseline.window_s, result.window_s),
            };
            if let Some(ratio) = ratio {
                result.ratio_vs.insert(baseline.system.clone(), (ratio * 100.0).round() / 100.0);
            }
        }
    }
}

fn ratio(numerator: f64, denominator: f64) -> Option<f64> {
    (denominator > 0.0 && numerator.is_finite()).then(|| numerator / denominator)
}

/// Several rounds of the same (workload, system, layer): keeps the median by `ok_per_s`
/// (by time for bursts), and notes every round's figure.
pub fn median_of_rounds(results: Vec<RunResult>) -> Vec<RunResult> {
    let mut groups: BTreeMap<(String, String, String), Vec<RunResult>> = BTreeMap::new();
    let mut order = Vec::new();
    for r in results {
        let key = r.key();
        if !groups.contains_key(&key) {
            order.push(key.clone());
        }
        groups.entry(key).or_default().push(r);
    }
    order
        .into_iter()
        .filter_map(|key| {
            let mut rounds = groups.remove(&key)?;
            if rounds.len() == 1 {
                return rounds.pop();
            }
            let figure = |r: &RunResult| match r.mode {
                Mode::Burst => -r.window_s,
                Mode::Open => -r.p99_ms,
                Mode::Closed => r.ok_per_s,
            };
            rounds.sort_by(|a, b| figure(a).total_cmp(&figure(b)));
            let all: Vec<serde_json::Value> = rounds.iter().map(|r| json_f64(figure(r).abs())).collect();
            let mut median = rounds.swap_remove(rounds.len() / 2);
            median.extra.insert("rounds".into(), serde_json::Value::Array(all));
            Some(median)
        })
        .collect()
}

fn short_system(name: &str) -> String {
    name.replace("stockroom-", "sr-")
        .replace("baseline-", "bl-")
        .replace("tx-per-request", "tx/req")
        .replace("guarded-update", "guarded")
        .replace("ceiling-sqlite", "ceil")
}

/// The table printed at the end.
pub fn table(header: &Header, results: &[RunResult]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}", header.line());
    let _ = writeln!(
        out,
        "{:<18} {:<22} {:<10} {:>6} {:>10} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8} {:>5} {:>5} {:>6} {:>6}  vs baselines",
        "workload",
        "system",
        "layer",
        "conc",
        "ok/s",
        "tried/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "p99.9",
        "max ms",
        "over",
        "under",
        "errors",
        "rss MB"
    );
    let mut last_workload = String::new();
    for r in results {
        if r.workload != last_workload && !last_workload.is_empty() {
            let _ = writeln!(out);
        }
        last_workload.clone_from(&r.workload);
        let conc = match r.rate {
            Some(rate) => format!("{}/s", si(rate)),
            None => r.clients.to_string(),
        };
        let ratios: Vec<String> = r.ratio_vs.iter().map(|(k, v)| format!("{}={v:.1}x", short_system(k))).collect();
        let _ = writeln!(
            out,
            "{:<18} {:<22} {:<10} {:>6} {:>10} {:>10} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.1} {:>5} {:>5} {:>6} {:>6.0}  {}",
            r.workload,
            short_system(&r.system),
            r.layer,
            conc,
            format!("{:.0}", r.ok_per_s),
            format!("{:.0}", r.attempted_per_s),
            r.p50_ms,
            r.p95_ms,
            r.p99_ms,
            r.p999_ms,
            r.max_ms,
            r.oversell,
            r.undersell,
            r.errors,
            r.peak_rss_mb,
            ratios.join(" ")
        );
        let notes = notes(r);
        if !notes.is_empty() {
            let _ = writeln!(out, "{:<18} {}", "", notes);
        }
    }
    out
}

fn notes(r: &RunResult) -> String {
    let mut notes = Vec::new();
    for key in [
        "mean_batch",
        "process_cpu_cores",
        "time_to_finish_ms",
        "winners",
        "read_ok_per_s",
        "read_p99_ms",
        "hold_ok_per_s",
        "hold_p99_ms",
        "swept",
        "sweep_s",
        "sweep_per_s",
        "foreground_rate",
        "foreground_p99_alone_ms",
        "foreground_p99_during_sweep_ms",
        "foreground_p99_ratio",
        "rounds",
    ] {
        if let Some(v) = r.extra.get(key) {
            notes.push(format!("{key}={v}"));
        }
    }
    if r.errors > 0
        && let Some(sample) = &r.error_sample
    {
        let c = &r.error_counts;
        notes.push(format!(
            "errors: deadlock={} serialization={} busy={} overloaded={} timeout={} backlog={} other={}; e.g. {}",
            c.deadlock,
            c.serialization,
            c.busy,
            c.overloaded,
            c.timeout,
            c.backlog,
            c.other,
            sample.chars().take(160).collect::<String>()
        ));
    }
    let checks = &r.checks;
    if checks.held_units != checks.acked_units
        || checks.reserved_mismatch_rows != 0
        || checks.reconcile_mismatches.is_some_and(|m| m != 0)
    {
        notes.push(format!(
            "CHECK: held={} acked={} reserved_mismatch_rows={} reconcile_mismatches={:?}",
            checks.held_units, checks.acked_units, checks.reserved_mismatch_rows, checks.reconcile_mismatches
        ));
    }
    notes.join("  ")
}

fn si(x: f64) -> String {
    if x >= 1000.0 { format!("{:.0}k", x / 1000.0) } else { format!("{x:.0}") }
}

/// The JSON file: the header and one object per (workload, system, layer).
pub fn json(header: &Header, results: &[RunResult], notes: &[String]) -> serde_json::Value {
    serde_json::json!({
        "header": header,
        "notes": notes,
        "results": results,
    })
}
