//! `burst`: a flash sale. `burst_buyers` buyers (10,000) want one unit each of one SKU with
//! `burst_units` units (1,000) split over two warehouses; all are released at once. Reports
//! the time from release to the last answer, and checks that exactly `burst_units` were held.

use super::Params;
use super::Run;
use crate::load::{OpFn, OpKind, OpRecord, burst};
use crate::report::{Entry, Mode, RunResult, json_f64};
use crate::seed::{SeedPlan, warehouse_code};
use crate::systems::{HoldRequest, Line, Target};
use std::sync::Arc;

pub const SKU: &str = "BURST-1";

pub fn plan(p: &Params) -> SeedPlan {
    let first = p.burst_units / 2;
    SeedPlan {
        warehouses: 2,
        rows: vec![(SKU.into(), 0, first), (SKU.into(), 1, p.burst_units - first)],
        ..SeedPlan::default()
    }
}

/// One unit, the warehouse left to the system.
fn op(target: &Target) -> OpFn {
    let target = target.clone();
    let candidates: Arc<[String]> = Arc::from(vec![warehouse_code(0), warehouse_code(1)]);
    Arc::new(move |_| {
        let target = target.clone();
        let request = HoldRequest {
            lines: vec![Line { sku: SKU.into(), warehouse: None, quantity: 1, candidates: candidates.clone() }],
        };
        Box::pin(async move {
            OpRecord { kind: OpKind::Hold, outcome: target.hold(&request).await, units: 1, satisfiable: true }
        })
    })
}

pub async fn run(run: &Run<'_>) -> anyhow::Result<Vec<RunResult>> {
    let p = run.params();
    let op = op(&run.instance.target);
    let (elapsed, measured) = burst(p.burst_buyers, &run.tally, &op).await;
    let entry = Entry { workload: "burst", mode: Mode::Burst, clients: p.burst_buyers, rate: None };
    let mut result = run.record(entry, &measured).await?;
    let winners = measured.holds.ok;
    result.extra.insert("time_to_finish_ms".into(), json_f64(elapsed.as_secs_f64() * 1000.0));
    result.extra.insert("winners".into(), winners.into());
    result.extra.insert("units".into(), p.burst_units.into());
    result.extra.insert(
        "exactly_all_units_held".into(),
        (winners as i64 == p.burst_units && result.checks.held_units == p.burst_units).into(),
    );
    Ok(vec![result])
}
