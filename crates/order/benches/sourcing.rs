//! Sourcing bench: the exact `cost` solve against the `priority` baseline on carts of 10 lines
//! over 10 rated warehouses, stock spread so that about a third of the carts have no single
//! warehouse that can ship them.
//!
//! `cargo bench -p order --bench sourcing`; `SOURCING_BENCH_INSTANCES` (default 2000) and
//! `SOURCING_BENCH_BUDGET_US` (the cost solve's time budget, default 2000) tune it. Instances
//! are deterministic (a fixed seed) and generated before timing; each is planned by both
//! strategies in turn, after a warm-up. Columns: plans a second (planning time only), latency
//! percentiles, the share of plans that fell back to greedy, the share that split, and the
//! complete plans each solve priced.

use hdrhistogram::Histogram;
use order::sourcing::{
    Destination, Plan, Rate, Solver, SourcingInput, SourcingLine, SourcingWarehouse, Strategy, plan,
};
use std::collections::HashMap;
use std::time::{Duration, Instant};

const LINES: usize = 10;
const WAREHOUSES: usize = 10;
const WARM_UP: usize = 200;
const SEED: u64 = 0x5EED_2026;

/// SplitMix64: small, deterministic, good enough for instances.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next() % (hi - lo + 1) as u64) as i64
    }

    fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1_u64 << 53) as f64 <= p
    }

    fn coordinate(&mut self) -> (f64, f64) {
        (47.5 + self.range(0, 7000) as f64 / 1000.0, 6.0 + self.range(0, 9000) as f64 / 1000.0)
    }
}

fn instance(rng: &mut Rng, budget: Duration) -> SourcingInput {
    let lines: Vec<SourcingLine> = (0..LINES)
        .map(|l| SourcingLine {
            sku: format!("SKU-{l:02}"),
            quantity: [1, 1, 1, 2, 2, 3, 4][rng.range(0, 6) as usize],
            unit_grams: if rng.chance(0.1) { 0 } else { rng.range(50, 3000) },
        })
        .collect();
    let warehouses: Vec<SourcingWarehouse> = (0..WAREHOUSES)
        .map(|w| {
            let (latitude, longitude) = rng.coordinate();
            SourcingWarehouse {
                code: format!("WH-{w:02}"),
                latitude: Some(latitude),
                longitude: Some(longitude),
                rate: Some(Rate { base_minor: rng.range(300, 900), per_kg_minor: rng.range(30, 250) }),
            }
        })
        .collect();
    // Hubs (about one in seven) carry nearly the whole range in depth, regional warehouses part of
    // it and satellites little, often short of a line's quantity: a good share of carts has
    // no single warehouse that can ship it all.
    let mut available = HashMap::new();
    for warehouse in &warehouses {
        let hub = rng.chance(0.15);
        let carries = if hub { 0.98 } else { [0.6, 0.35][rng.range(0, 1) as usize] };
        for line in &lines {
            if rng.chance(carries) {
                let q = line.quantity;
                let units = if hub && rng.chance(0.92) { rng.range(q, 3 * q) } else { rng.range(0, 2 * q) };
                available.insert((line.sku.clone(), warehouse.code.clone()), units);
            }
        }
    }
    let (latitude, longitude) = rng.coordinate();
    SourcingInput {
        strategy: Strategy::Cost,
        lines,
        warehouses,
        available,
        split_penalty_minor: rng.range(0, 600),
        destination: Destination { latitude: Some(latitude), longitude: Some(longitude) },
        time_budget: budget,
    }
}

#[derive(Default)]
struct Run {
    total: Duration,
    fallbacks: usize,
    splits: usize,
    plans_evaluated: u64,
}

fn time(input: &SourcingInput, histogram: &mut Histogram<u64>, run: &mut Run) -> Plan {
    let started = Instant::now();
    let planned = plan(input);
    let elapsed = started.elapsed();
    run.total += elapsed;
    histogram.record(elapsed.as_nanos().max(1) as u64).unwrap();
    run.fallbacks += usize::from(planned.explanation.solver == Solver::GreedyFallback);
    run.splits += usize::from(planned.shipments.len() > 1);
    run.plans_evaluated += planned.explanation.plans_evaluated;
    planned
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    let count = env("SOURCING_BENCH_INSTANCES", 2000) as usize;
    let budget = Duration::from_micros(env("SOURCING_BENCH_BUDGET_US", 2000));
    let mut rng = Rng(SEED);
    let costs: Vec<SourcingInput> = (0..WARM_UP + count).map(|_| instance(&mut rng, budget)).collect();
    let priorities: Vec<SourcingInput> =
        costs.iter().map(|i| SourcingInput { strategy: Strategy::Priority, ..i.clone() }).collect();

    let new_histogram = || Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap();
    let (mut cost_h, mut priority_h) = (new_histogram(), new_histogram());
    let (mut cost_run, mut priority_run) = (Run::default(), Run::default());
    let mut saved_minor = 0_i64;
    for (n, (cost, priority)) in costs.iter().zip(&priorities).enumerate() {
        if n == WARM_UP {
            (cost_h, priority_h) = (new_histogram(), new_histogram());
            (cost_run, priority_run) = (Run::default(), Run::default());
            saved_minor = 0;
        }
        let by_cost = time(cost, &mut cost_h, &mut cost_run);
        let by_priority = time(priority, &mut priority_h, &mut priority_run);
        saved_minor += by_priority.cost_minor.unwrap_or(0) - by_cost.cost_minor.unwrap_or(0);
    }

    let us = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "sourcing: {count} instances of {LINES} lines over {WAREHOUSES} rated warehouses \
         (after {WARM_UP} warm-up), cost time budget {} µs",
        budget.as_micros()
    );
    println!(
        "{:<10} {:>10} {:>9} {:>9} {:>9} {:>10} {:>8} {:>12}",
        "strategy", "plans/s", "p50 µs", "p99 µs", "max µs", "greedy", "split", "priced"
    );
    for (name, h, run) in [("cost", &cost_h, &cost_run), ("priority", &priority_h, &priority_run)] {
        println!(
            "{:<10} {:>10.0} {:>9.1} {:>9.1} {:>9.1} {:>9.1}% {:>7.1}% {:>12.1}",
            name,
            count as f64 / run.total.as_secs_f64(),
            us(h, 0.50),
            us(h, 0.99),
            h.max() as f64 / 1000.0,
            100.0 * run.fallbacks as f64 / count as f64,
            100.0 * run.splits as f64 / count as f64,
            run.plans_evaluated as f64 / count as f64,
        );
    }
    println!("cost p99 / priority p99: {:.1}x", us(&cost_h, 0.99) / us(&priority_h, 0.99));
    println!(
        "carts no single warehouse can ship: {:.1}% (priority splits exactly those)",
        100.0 * priority_run.splits as f64 / count as f64
    );
    println!("cost saves {:.1} minor units a plan on average over priority", saved_minor as f64 / count as f64);
}
