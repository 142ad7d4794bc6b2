//! `hot-sku`: one SKU with plenty of stock in one warehouse, one unit per hold.
//!
//! Phases, on the same database: `hot-sku` (closed loop, `clients` clients, throughput),
//! `hot-sku-open` (open loop at a fixed rate, latency), and `latency-cN` (closed loop with N
//! clients, e.g. 1 and 8: the latency of one reservation at low concurrency).

use super::Run;
use crate::load::{OpFn, OpKind, OpRecord, closed_loop, open_loop, stop_after};
use crate::report::{Entry, Mode, RunResult};
use crate::seed::{SeedPlan, warehouse_code};
use crate::systems::{HoldRequest, Line, Target};
use std::sync::Arc;
use std::time::Duration;

pub const SKU: &str = "HOT-1";
/// Far more than any run can hold: the hot row never runs out.
pub const STOCK: i64 = 1_000_000_000_000;

pub fn plan() -> SeedPlan {
    SeedPlan { warehouses: 1, rows: vec![(SKU.into(), 0, STOCK)], ..SeedPlan::default() }
}

/// One unit of the hot SKU from the first warehouse.
pub fn op(target: &Target) -> OpFn {
    let target = target.clone();
    let warehouse = warehouse_code(0);
    let candidates: Arc<[String]> = Arc::from(vec![warehouse.clone()]);
    Arc::new(move |_| {
        let target = target.clone();
        let request = HoldRequest {
            lines: vec![Line {
                sku: SKU.into(),
                warehouse: Some(warehouse.clone()),
                quantity: 1,
                candidates: candidates.clone(),
            }],
        };
        Box::pin(async move {
            OpRecord { kind: OpKind::Hold, outcome: target.hold(&request).await, units: 1, satisfiable: true }
        })
    })
}

pub async fn run(run: &Run<'_>) -> anyhow::Result<Vec<RunResult>> {
    let p = run.params();
    let op = op(&run.instance.target);
    let mut results = Vec::new();

    let measured = closed_loop(p.clients, p.warmup(), p.duration(), &run.tally, &op).await;
    let entry = Entry { workload: "hot-sku", mode: Mode::Closed, clients: p.clients, rate: None };
    results.push(run.record(entry, &measured).await?);

    let open = Duration::from_millis(p.open_duration_ms);
    let measured =
        open_loop(p.open_rate, p.warmup(), stop_after(p.warmup() + open), p.max_in_flight, &run.tally, &op).await;
    let entry = Entry { workload: "hot-sku-open", mode: Mode::Open, clients: p.max_in_flight, rate: Some(p.open_rate) };
    results.push(run.record(entry, &measured).await?);

    for &clients in &p.low_concurrency {
        let measured = closed_loop(
            clients,
            p.warmup().min(Duration::from_millis(300)),
            Duration::from_millis(p.low_duration_ms),
            &run.tally,
            &op,
        )
        .await;
        let name = format!("latency-c{clients}");
        let entry = Entry { workload: &name, mode: Mode::Closed, clients, rate: None };
        results.push(run.record(entry, &measured).await?);
    }
    Ok(results)
}
