//! `mix`: 95% availability reads of one SKU, 5% one-unit holds (warehouse left to the
//! system), over `mix_skus` SKUs x 5 warehouses, SKUs drawn from a Zipf distribution.

use super::{Params, Run};
use crate::load::{OpFn, OpKind, OpRecord, closed_loop};
use crate::report::{Entry, Mode, RunResult};
use crate::rng::{Rng, Zipf};
use crate::seed::{Catalogue, SeedPlan, warehouse_code};
use crate::systems::{HoldRequest, Line, Target};
use std::sync::Arc;

pub const WAREHOUSES: usize = 5;
pub const STOCK: i64 = 1_000_000;

fn catalogue(p: &Params) -> Catalogue {
    Catalogue { prefix: "M-".into(), skus: p.mix_skus.max(1), on_hand: STOCK }
}

pub fn plan(p: &Params) -> SeedPlan {
    SeedPlan { warehouses: WAREHOUSES, catalogue: Some(catalogue(p)), ..SeedPlan::default() }
}

fn op(target: &Target, p: &Params) -> OpFn {
    let target = target.clone();
    let catalogue = catalogue(p);
    let zipf = Arc::new(Zipf::new(catalogue.skus, p.zipf_exponent));
    let candidates: Arc<[String]> = Arc::from((0..WAREHOUSES).map(warehouse_code).collect::<Vec<_>>());
    let (seed, read_fraction) = (p.seed, p.mix_read_fraction);
    Arc::new(move |index| {
        let target = target.clone();
        let mut rng = Rng::for_request(seed, index);
        let read = rng.unit() < read_fraction;
        let sku = catalogue.sku(zipf.sample(&mut rng));
        let candidates = candidates.clone();
        Box::pin(async move {
            if read {
                OpRecord { kind: OpKind::Read, outcome: target.read(&sku).await, units: 0, satisfiable: true }
            } else {
                let request = HoldRequest { lines: vec![Line { sku, warehouse: None, quantity: 1, candidates }] };
                OpRecord { kind: OpKind::Hold, outcome: target.hold(&request).await, units: 1, satisfiable: true }
            }
        })
    })
}

pub async fn run(run: &Run<'_>) -> anyhow::Result<Vec<RunResult>> {
    let p = run.params();
    let op = op(&run.instance.target, p);
    let measured = closed_loop(p.clients, p.warmup(), p.duration(), &run.tally, &op).await;
    let entry = Entry { workload: "mix", mode: Mode::Closed, clients: p.clients, rate: None };
    let mut result = run.record(entry, &measured).await?;
    result.extra.insert("skus".into(), p.mix_skus.into());
    Ok(vec![result])
}
