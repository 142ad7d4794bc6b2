//! `checkout`: 5-line holds, each line a different SKU from a different warehouse (all five
//! warehouses per hold), over a small pool of SKUs so concurrent holds overlap; 10% of the
//! holds ask one line for more than the row will ever have, so they must be refused whole.
//!
//! Phases: `checkout` (lines in key order, as a careful client sends them) and
//! `checkout-opposite` (every other hold lists its lines in the opposite order, which
//! deadlocks designs that lock rows in request order).

use super::{Params, Run};
use crate::load::{OpFn, OpKind, OpRecord, closed_loop};
use crate::report::{Entry, Mode, RunResult};
use crate::rng::Rng;
use crate::seed::{Catalogue, SeedPlan, warehouse_code};
use crate::systems::{HoldRequest, Line, Target};
use std::sync::Arc;

pub const WAREHOUSES: usize = 5;
pub const LINES: usize = 5;
/// Stock of each row: never exhausted by satisfiable holds in a run.
pub const STOCK: i64 = 100_000_000;
/// More than a row holds: a line asking this much is unsatisfiable.
pub const UNSATISFIABLE: i64 = 1_000_000_000;

fn catalogue(p: &Params) -> Catalogue {
    Catalogue { prefix: "CO-".into(), skus: p.checkout_skus.max(LINES), on_hand: STOCK }
}

pub fn plan(p: &Params) -> SeedPlan {
    SeedPlan { warehouses: WAREHOUSES, catalogue: Some(catalogue(p)), ..SeedPlan::default() }
}

/// The request number `index`: (request, satisfiable, units).
pub fn request(catalogue: &Catalogue, seed: u64, index: u64, opposite: bool) -> (HoldRequest, bool, i64) {
    let mut rng = Rng::for_request(seed, index);
    let unsatisfiable = rng.below(10) == 0;
    let mut skus: Vec<usize> = Vec::with_capacity(LINES);
    while skus.len() < LINES {
        let sku = rng.below(catalogue.skus as u64) as usize;
        if !skus.contains(&sku) {
            skus.push(sku);
        }
    }
    let mut warehouses: Vec<usize> = (0..WAREHOUSES).collect();
    for i in (1..warehouses.len()).rev() {
        warehouses.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let short_line = rng.below(LINES as u64) as usize;
    let candidates: Arc<[String]> = Arc::from(Vec::new());
    let mut lines: Vec<Line> = skus
        .iter()
        .zip(&warehouses)
        .enumerate()
        .map(|(i, (sku, warehouse))| Line {
            sku: catalogue.sku(*sku),
            warehouse: Some(warehouse_code(*warehouse)),
            quantity: if unsatisfiable && i == short_line { UNSATISFIABLE } else { 1 + rng.below(3) as i64 },
            candidates: candidates.clone(),
        })
        .collect();
    lines.sort_by(|a, b| (&a.sku, &a.warehouse).cmp(&(&b.sku, &b.warehouse)));
    if opposite && index % 2 == 1 {
        lines.reverse();
    }
    let units = lines.iter().map(|l| l.quantity).sum();
    (HoldRequest { lines }, !unsatisfiable, units)
}

fn op(target: &Target, p: &Params, opposite: bool) -> OpFn {
    let target = target.clone();
    let catalogue = catalogue(p);
    let seed = p.seed;
    Arc::new(move |index| {
        let target = target.clone();
        let (request, satisfiable, units) = request(&catalogue, seed, index, opposite);
        Box::pin(
            async move { OpRecord { kind: OpKind::Hold, outcome: target.hold(&request).await, units, satisfiable } },
        )
    })
}

pub async fn run(run: &Run<'_>) -> anyhow::Result<Vec<RunResult>> {
    let p = run.params();
    let mut results = Vec::new();
    for (name, opposite) in [("checkout", false), ("checkout-opposite", true)] {
        let op = op(&run.instance.target, p, opposite);
        let measured = closed_loop(p.clients, p.warmup(), p.duration(), &run.tally, &op).await;
        let entry = Entry { workload: name, mode: Mode::Closed, clients: p.clients, rate: None };
        results.push(run.record(entry, &measured).await?);
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_have_five_distinct_rows_and_ten_percent_unsatisfiable() {
        let catalogue = catalogue(&Params::quick());
        let mut unsatisfiable = 0;
        for index in 0..10_000 {
            let (request, satisfiable, _) = request(&catalogue, 42, index, false);
            assert_eq!(request.lines.len(), LINES);
            let mut skus: Vec<&str> = request.lines.iter().map(|l| l.sku.as_str()).collect();
            skus.dedup();
            assert_eq!(skus.len(), LINES, "sorted and distinct");
            let mut warehouses: Vec<_> = request.lines.iter().map(|l| l.warehouse.clone()).collect();
            warehouses.sort();
            warehouses.dedup();
            assert_eq!(warehouses.len(), WAREHOUSES);
            let short = request.lines.iter().any(|l| l.quantity > STOCK);
            assert_eq!(short, !satisfiable);
            unsatisfiable += usize::from(!satisfiable);
        }
        assert!((900..1100).contains(&unsatisfiable), "{unsatisfiable}");
    }

    #[test]
    fn opposite_variant_reverses_every_other_request() {
        let catalogue = catalogue(&Params::quick());
        let (ordered, _, _) = request(&catalogue, 42, 7, false);
        let (reversed, _, _) = request(&catalogue, 42, 7, true);
        let forward: Vec<_> = ordered.lines.iter().map(|l| l.sku.clone()).collect();
        let mut backward: Vec<_> = reversed.lines.iter().map(|l| l.sku.clone()).collect();
        backward.reverse();
        assert_eq!(forward, backward);
    }
}
