//! `expiry`: `expiry_reservations` active reservations already past their expiry (inserted
//! directly, spread over `expiry_skus` SKUs x 5 warehouses), swept with
//! `warehouse::reservation::sweep_expired` in a loop (batches of the server's
//! `SWEEP_BATCH_MAX`) while `hot-sku` runs in the foreground at half load.
//!
//! Half load is half the hot-sku closed-loop throughput measured first on the same database.
//! The foreground runs open loop at that rate once alone and once during the sweep, and the
//! record compares the two p99s.

use super::{Params, Run, hot_sku};
use crate::load::{closed_loop, open_loop, stop_after};
use crate::report::{Entry, Mode, RunResult, json_f64};
use crate::seed::{Catalogue, SeedPlan};
use kernel::{Clock, SystemClock};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

pub const WAREHOUSES: usize = 5;
pub const STOCK: i64 = 1_000_000;

pub fn plan(p: &Params) -> SeedPlan {
    SeedPlan {
        warehouses: WAREHOUSES,
        rows: vec![(hot_sku::SKU.into(), 0, hot_sku::STOCK)],
        catalogue: Some(Catalogue { prefix: "E-".into(), skus: p.expiry_skus.max(1), on_hand: STOCK }),
        expired_reservations: p.expiry_reservations,
    }
}

pub async fn run(run: &Run<'_>) -> anyhow::Result<Vec<RunResult>> {
    let p = run.params();
    let op = hot_sku::op(&run.instance.target);
    let db = run.instance.db.clone();

    let calibration =
        closed_loop(p.clients, p.warmup(), Duration::from_millis(p.expiry_calibrate_ms), &run.tally, &op).await;
    let full_rate = calibration.holds.ok as f64 / calibration.window.as_secs_f64();
    let rate = (full_rate / 2.0).max(1.0);

    let alone = open_loop(
        rate,
        p.warmup(),
        stop_after(p.warmup() + Duration::from_millis(p.open_duration_ms)),
        p.max_in_flight,
        &run.tally,
        &op,
    )
    .await;

    let stop = CancellationToken::new();
    let sweeper = {
        let (stop, db, batch, limit) =
            (stop.clone(), db.clone(), p.expiry_sweep_batch, Duration::from_millis(p.expiry_max_ms));
        async move {
            let started = Instant::now();
            let mut swept = 0usize;
            let mut error = None;
            while started.elapsed() < limit {
                match warehouse::reservation::sweep_expired(&db, SystemClock.now(), batch).await {
                    Ok(0) => break,
                    Ok(n) => swept += n,
                    Err(e) => {
                        error = Some(e.to_string());
                        break;
                    }
                }
            }
            let elapsed = started.elapsed();
            stop.cancel();
            (swept, elapsed, error)
        }
    };
    let foreground = open_loop(rate, Duration::ZERO, stop.clone(), p.max_in_flight, &run.tally, &op);
    let ((swept, sweep_time, sweep_error), during) = tokio::join!(sweeper, foreground);

    let still_due: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM reservations WHERE status = 'active' AND expires_at_ms <= $1")
            .bind(SystemClock.now().millis() - 1_000)
            .fetch_one(db.reader())
            .await?;

    let entry = Entry { workload: "expiry", mode: Mode::Open, clients: p.max_in_flight, rate: Some(rate) };
    let mut result = run.record(entry, &during).await?;
    let alone_p99 = alone.all().latency().p99_ms;
    let seconds = sweep_time.as_secs_f64();
    let extra = &mut result.extra;
    extra.insert("swept".into(), swept.into());
    extra.insert("seeded_expired".into(), p.expiry_reservations.into());
    extra.insert("still_due_after".into(), still_due.into());
    extra.insert("sweep_s".into(), json_f64(seconds));
    extra.insert("sweep_per_s".into(), json_f64(swept as f64 / seconds.max(1e-9)));
    extra.insert("sweep_batch".into(), p.expiry_sweep_batch.into());
    extra.insert("hot_sku_full_rate".into(), json_f64(full_rate));
    extra.insert("foreground_rate".into(), json_f64(rate));
    extra.insert("foreground_p99_alone_ms".into(), json_f64(alone_p99));
    extra.insert("foreground_p99_during_sweep_ms".into(), json_f64(result.p99_ms));
    extra.insert("foreground_p99_ratio".into(), json_f64(result.p99_ms / alone_p99.max(1e-9)));
    if let Some(error) = sweep_error {
        extra.insert("sweep_error".into(), error.into());
    }
    Ok(vec![result])
}
