//! Route quality and planning time on a synthetic 20-aisle warehouse, printed as a markdown table.
//!
//! `cargo bench --bench route` runs the full set; `cargo bench --bench route -- --quick` runs a tenth
//! of the lists, for a CI smoke run.

use std::hint::black_box;
use std::time::Instant;

use fulfillment::route::{Point, STOPS_MAX, naive_length, optimal_length, plan, tour_length};
use hdrhistogram::Histogram;

const AISLE_COUNT: usize = 20;
const AISLE_SPACING_M: f64 = 3.0;
const BIN_SIDE_OFFSET_M: f64 = 0.6;
const BIN_Y_FIRST_M: f64 = 2.0;
const BIN_Y_LAST_M: f64 = 40.0;
const BIN_Y_SPACING_M: f64 = 1.2;
const DOCK: Point = Point { x: 0.0, y: -5.0 };

/// A bin and the parts of its name an alphabetical sort orders by.
#[derive(Clone, Copy)]
struct Bin {
    aisle: usize,
    level: usize,
    side: usize,
    at: Point,
}

fn warehouse_bins() -> Vec<Bin> {
    let level_count = ((BIN_Y_LAST_M - BIN_Y_FIRST_M) / BIN_Y_SPACING_M + 1e-9).floor() as usize + 1;
    let mut bins = Vec::new();
    for aisle in 0..AISLE_COUNT {
        let aisle_x = aisle as f64 * AISLE_SPACING_M;
        for level in 0..level_count {
            let y = BIN_Y_FIRST_M + level as f64 * BIN_Y_SPACING_M;
            for (side, x) in [aisle_x - BIN_SIDE_OFFSET_M, aisle_x + BIN_SIDE_OFFSET_M].into_iter().enumerate() {
                bins.push(Bin { aisle, level, side, at: Point { x, y } });
            }
        }
    }
    bins
}

/// SplitMix64: deterministic, so every run measures the same pick lists.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: usize) -> usize {
        // Modulo bias is below 1e-16 for a few hundred bins.
        (self.next_u64() % bound as u64) as usize
    }
}

/// Uniformly chosen bins; the same bin may appear twice, as two order lines would.
fn pick_list(bins: &[Bin], rng: &mut SplitMix64, stop_count: usize) -> Vec<Bin> {
    (0..stop_count).map(|_| bins[rng.below(bins.len())]).collect()
}

fn points(list: &[Bin]) -> Vec<Point> {
    list.iter().map(|bin| bin.at).collect()
}

/// The order a system that sorts pick lines by bin name walks: aisle, then along the aisle.
fn bin_name_order(list: &[Bin]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..list.len()).collect();
    order.sort_by_key(|&index| (list[index].aisle, list[index].level, list[index].side));
    order
}

struct Summary {
    mean: f64,
    p50: f64,
    p95: f64,
    p99: f64,
    max: f64,
}

fn summarize(mut samples: Vec<f64>) -> Summary {
    samples.sort_by(f64::total_cmp);
    let rank = |quantile: f64| samples[((quantile * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1];
    Summary {
        mean: samples.iter().sum::<f64>() / samples.len() as f64,
        p50: rank(0.50),
        p95: rank(0.95),
        p99: rank(0.99),
        max: samples[samples.len() - 1],
    }
}

fn ratio_row(label: &str, samples: Vec<f64>) {
    let count = samples.len();
    let s = summarize(samples);
    println!("| {label} | {count} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} |", s.mean, s.p50, s.p95, s.p99, s.max);
}

fn time_row(label: &str, bins: &[Bin], rng: &mut SplitMix64, stop_count: usize, plans: usize) {
    let lists: Vec<Vec<Point>> = (0..plans).map(|_| points(&pick_list(bins, rng, stop_count))).collect();
    for list in lists.iter().take(plans.min(50)) {
        black_box(plan(DOCK, list));
    }
    let mut micros = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds");
    let mut total_us = 0.0;
    for list in &lists {
        let started = Instant::now();
        black_box(plan(black_box(DOCK), black_box(list)));
        let elapsed_us = started.elapsed().as_secs_f64() * 1e6;
        total_us += elapsed_us;
        micros.saturating_record(elapsed_us.ceil() as u64);
    }
    println!(
        "| {label} | {plans} | {:.0} | {} | {} | {} | {} |",
        total_us / plans as f64,
        micros.value_at_quantile(0.50),
        micros.value_at_quantile(0.95),
        micros.value_at_quantile(0.99),
        micros.max()
    );
}

fn main() {
    let quick = std::env::args().any(|arg| arg == "--quick");
    let scale = if quick { 10 } else { 1 };
    let bins = warehouse_bins();
    let mut rng = SplitMix64(0x5EED_F057_00C4_0001);

    println!(
        "Warehouse: {AISLE_COUNT} aisles, {} bins, dock at ({}, {}){}.\n",
        bins.len(),
        DOCK.x,
        DOCK.y,
        if quick { ", quick run (1/10 of the lists)" } else { "" }
    );
    println!("| measure | samples | mean | p50 | p95 | p99 | max |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");

    let (mut planned_to_naive, mut by_name_to_naive) = (Vec::new(), Vec::new());
    for _ in 0..1_000 / scale {
        let list = pick_list(&bins, &mut rng, 30);
        let stops = points(&list);
        let naive = naive_length(DOCK, &stops);
        planned_to_naive.push(plan(DOCK, &stops).length_m / naive);
        by_name_to_naive.push(tour_length(DOCK, &stops, &bin_name_order(&list)) / naive);
    }
    ratio_row("30 stops: planned / naive length", planned_to_naive);
    ratio_row("30 stops: sorted by bin name / naive length", by_name_to_naive);

    let (mut planned_to_optimal, mut naive_to_optimal) = (Vec::new(), Vec::new());
    for _ in 0..300 / scale {
        let stops = points(&pick_list(&bins, &mut rng, 10));
        let optimal = optimal_length(DOCK, &stops).expect("ten stops are within Held-Karp's limit");
        planned_to_optimal.push(plan(DOCK, &stops).length_m / optimal);
        naive_to_optimal.push(naive_length(DOCK, &stops) / optimal);
    }
    ratio_row("10 stops: planned / optimal length", planned_to_optimal);
    ratio_row("10 stops: naive / optimal length", naive_to_optimal);

    time_row("100 stops: plan time (µs)", &bins, &mut rng, 100, 1_000 / scale);
    time_row("30 stops: plan time (µs)", &bins, &mut rng, 30, 1_000 / scale);
    time_row("500 stops (STOPS_MAX): plan time (µs)", &bins, &mut rng, STOPS_MAX, 50 / scale);
}
