//! SQLite's direct writer (issue 13) against the general path: the same random batches of
//! holds, applied with `hold_batch_direct` on the writer thread in one database and with
//! `hold_batch` through sqlx in another, answer the same outcomes and leave the same stock
//! levels, reservations, movements and events (ids aside). A batch the direct path leaves to
//! the general one (due holds to reclaim) writes nothing there. Then everything expires and
//! the sweep runs both ways (`sweep_expired_direct` on the writer thread, `sweep_expired_in` through
//! sqlx), with the same result, events in the same feed order.
//!
//! SQLite only: the direct writer exists only there (PostgreSQL keeps sqlx).

use kernel::{Quantity, ReservationId, SkuCode, Timestamp, WarehouseCode};
use proptest::prelude::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use store::{Backend, Db};
use warehouse::reservation::{HoldCommand, HoldLine};

const SKUS: usize = 3;
/// W1 and W2 are active (W1 first by priority), W3 is inactive, W9 does not exist.
const WAREHOUSES: [&str; 4] = ["W1", "W2", "W3", "W9"];

#[derive(Debug, Clone)]
struct Case {
    /// Units received per (SKU, warehouse W1..W3).
    stock: Vec<[i64; 3]>,
    /// A hold made before the batch, expired by the time it runs: (SKU, units, warehouse).
    due: Option<(usize, i64, usize)>,
    /// Commands of (SKU pick: `SKUS` is an unknown SKU, units, warehouse pick or any) lines.
    batch: Vec<Vec<(usize, i64, Option<usize>)>>,
}

fn case() -> impl Strategy<Value = Case> {
    let line = (0..=SKUS, 1..6_i64, prop::option::of(0..WAREHOUSES.len()));
    (
        prop::collection::vec(prop::array::uniform3(0..6_i64), SKUS),
        prop::option::weighted(0.3, (0..SKUS, 1..4_i64, 0..2_usize)),
        prop::collection::vec(prop::collection::vec(line, 1..4), 1..12),
    )
        .prop_map(|(stock, due, batch)| Case { stock, due, batch })
}

fn sku(case_no: usize, i: usize) -> SkuCode {
    SkuCode::parse(if i < SKUS { format!("D{case_no}-S{i}") } else { format!("D{case_no}-NONE") }).unwrap()
}

fn warehouse(i: usize) -> WarehouseCode {
    WarehouseCode::parse(WAREHOUSES[i]).unwrap()
}

/// The commands, with reservation ids fixed by the case so both databases get the same.
fn commands(case_no: usize, lines: &[Vec<(usize, i64, Option<usize>)>], id_base: usize) -> Vec<HoldCommand> {
    lines
        .iter()
        .enumerate()
        .map(|(n, lines)| HoldCommand {
            id: ReservationId::from_stored(format!("res_d{case_no}_{}", id_base + n)),
            reference: if n % 2 == 0 { format!("cart-{n}") } else { String::new() },
            ttl_seconds: 600,
            lines: lines
                .iter()
                .map(|(s, units, w)| HoldLine {
                    sku: sku(case_no, *s),
                    quantity: Quantity::new(*units).unwrap(),
                    warehouse: w.map(warehouse),
                })
                .collect(),
        })
        .collect()
}

async fn prepare(db: &Db, case_no: usize, case: &Case, start: Timestamp) {
    let mut tx = db.begin().await.unwrap();
    for s in 0..SKUS {
        let new =
            warehouse::item::NewItem { sku: sku(case_no, s), name: "x".into(), weight_grams: None, track_lots: false };
        warehouse::item::item_create(&mut tx, new, start).await.unwrap();
        for (w, units) in case.stock[s].iter().enumerate().filter(|(_, u)| **u > 0) {
            let receipt = warehouse::receipt::Receipt {
                warehouse: warehouse(w),
                reference: None,
                lines: vec![warehouse::receipt::ReceiptLine {
                    sku: sku(case_no, s),
                    quantity: Quantity::new(*units).unwrap(),
                    lot: None,
                    expires_on: None,
                    bin: None,
                }],
            };
            warehouse::receipt::receive(&mut tx, receipt, start).await.unwrap();
        }
    }
    if let Some((s, units, w)) = case.due {
        let mut due = commands(case_no, &[vec![(s, units, Some(w))]], 1_000);
        due[0].ttl_seconds = 1;
        // It may be refused for want of stock; both databases refuse it alike.
        let _ = warehouse::reservation::hold_batch(&mut tx, due, start).await.unwrap();
    }
    tx.commit().await.unwrap();
}

/// seq, warehouse, SKU, kind, on hand and reserved deltas and after, reference, holds carried.
type MovementSeen = (i64, String, String, String, i64, i64, i64, i64, Option<String>, Option<i64>);

/// What a database shows of a case, ids of rows and batches aside.
async fn seen(db: &Db, case_no: usize) -> Vec<String> {
    let like = format!("D{case_no}-%");
    let mut seen = Vec::new();
    let levels: Vec<(String, String, i64, i64)> = sqlx::query_as(
        "SELECT sku, warehouse, on_hand, reserved FROM stock_levels WHERE sku LIKE $1 ORDER BY sku, warehouse",
    )
    .bind(like.clone())
    .fetch_all(db.reader())
    .await
    .unwrap();
    seen.extend(levels.iter().map(|l| format!("level {l:?}")));
    let reservations: Vec<(String, String, String, i64, Option<String>)> = sqlx::query_as(
        "SELECT id, reference, status, expires_at_ms, hold_batch FROM reservations WHERE id LIKE $1 ORDER BY id",
    )
    .bind(format!("res_d{case_no}_%"))
    .fetch_all(db.reader())
    .await
    .unwrap();
    seen.extend(reservations.iter().map(|r| without_batch_ids(&format!("reservation {r:?}"))));
    let lines: Vec<(String, i64, String, String, i64)> = sqlx::query_as(
        "SELECT reservation_id, line_no, sku, warehouse, quantity FROM reservation_lines \
         WHERE reservation_id LIKE $1 ORDER BY reservation_id, line_no",
    )
    .bind(format!("res_d{case_no}_%"))
    .fetch_all(db.reader())
    .await
    .unwrap();
    seen.extend(lines.iter().map(|l| format!("line {l:?}")));
    let movements: Vec<MovementSeen> = sqlx::query_as(
        "SELECT seq, warehouse, sku, kind, on_hand_delta, reserved_delta, on_hand_after, reserved_after, \
             reference, reservations FROM movements WHERE sku LIKE $1 ORDER BY seq",
    )
    .bind(like)
    .fetch_all(db.reader())
    .await
    .unwrap();
    seen.extend(movements.iter().map(|m| without_batch_ids(&format!("movement {m:?}"))));
    let events: Vec<(i64, String, String, i64, i64, String)> = sqlx::query_as(
        "SELECT seq, event_type, aggregate, aggregate_seq, version, data FROM events \
         WHERE aggregate LIKE $1 OR aggregate LIKE $2 ORDER BY seq",
    )
    .bind(format!("stock:%:D{case_no}-%"))
    .bind(format!("reservation:res_d{case_no}_%"))
    .fetch_all(db.reader())
    .await
    .unwrap();
    seen.extend(events.iter().map(|e| without_batch_ids(&format!("event {e:?}"))));
    seen
}

/// Batch (`hbt_`) and receipt (`rcp_`) ids as `hbt_*` and `rcp_*`: they are random.
fn without_batch_ids(text: &str) -> String {
    let mut out = text.to_owned();
    for prefix in ["hbt_", "rcp_"] {
        let mut masked = String::with_capacity(out.len());
        let mut rest = out.as_str();
        while let Some(at) = rest.find(prefix) {
            masked.push_str(&rest[..at + prefix.len()]);
            masked.push('*');
            let after = &rest[at + prefix.len()..];
            let hex = after.chars().take_while(char::is_ascii_hexdigit).count();
            rest = &after[hex..];
        }
        masked.push_str(rest);
        out = masked;
    }
    out
}

fn outcomes_seen(outcomes: Vec<warehouse::Result<warehouse::reservation::Reservation>>) -> Vec<String> {
    outcomes.into_iter().map(|o| without_batch_ids(&format!("{o:?}"))).collect()
}

#[test]
fn the_direct_writer_holds_exactly_as_the_general_path() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (direct, general) = runtime.block_on(async {
        let direct = testdb::TestDatabase::create(Backend::Sqlite).await;
        let general = testdb::TestDatabase::create(Backend::Sqlite).await;
        let (a, b) = (direct.connect().await, general.connect().await);
        for db in [&a, &b] {
            for (code, priority) in [("W1", 10), ("W2", 20), ("W3", 5)] {
                testdb::seed_warehouse(db, code, priority).await;
            }
            let mut tx = db.begin().await.unwrap();
            let change = warehouse::site::WarehousePatch { active: Some(false), ..Default::default() };
            warehouse::site::warehouse_update(&mut tx, &warehouse(2), change, Timestamp::from_millis(0)).await.unwrap();
            tx.commit().await.unwrap();
        }
        (a, b)
    });
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig { cases: 64, ..ProptestConfig::default() });
    let next_case = AtomicUsize::new(0);
    let (took_direct, left_to_general) = (AtomicUsize::new(0), AtomicUsize::new(0));
    runner
        .run(&case(), |case| {
            let case_no = next_case.fetch_add(1, Ordering::Relaxed);
            let start = Timestamp::from_millis(1_900_000_000_000 + case_no as i64 * 100_000);
            let now = Timestamp::from_millis(start.millis() + 5_000);
            let (a, b, went_direct) = runtime.block_on(async {
                prepare(&direct, case_no, &case, start).await;
                prepare(&general, case_no, &case, start).await;
                let batch = commands(case_no, &case.batch, 0);
                let on_writer = batch.clone();
                let direct_outcomes = direct
                    .write_direct(move |tx| warehouse::reservation::hold_batch_direct(tx, on_writer, now))
                    .await
                    .expect("a SQLite file has a direct writer")
                    .unwrap();
                let went_direct = direct_outcomes.is_some();
                let direct_outcomes = match direct_outcomes {
                    Some(outcomes) => outcomes,
                    None => {
                        // Left to the general path, as the executor does.
                        let mut tx = direct.begin().await.unwrap();
                        let outcomes = warehouse::reservation::hold_batch(&mut tx, batch.clone(), now).await.unwrap();
                        tx.commit().await.unwrap();
                        outcomes
                    }
                };
                let mut tx = general.begin().await.unwrap();
                let general_outcomes = warehouse::reservation::hold_batch(&mut tx, batch, now).await.unwrap();
                tx.commit().await.unwrap();
                let mut a = outcomes_seen(direct_outcomes);
                a.extend(seen(&direct, case_no).await);
                let mut b = outcomes_seen(general_outcomes);
                b.extend(seen(&general, case_no).await);
                // Then everything expires: the sweep on the writer thread against sqlx's.
                let later = Timestamp::from_millis(now.millis() + 601_000);
                let swept = direct
                    .write_direct(move |tx| warehouse::reservation::sweep_expired_direct(tx, later, 500))
                    .await
                    .expect("a SQLite file has a direct writer")
                    .unwrap()
                    .expect("no lots: the sweep runs on the writer thread");
                let mut tx = general.begin().await.unwrap();
                let swept_general = warehouse::reservation::sweep_expired_in(&mut tx, later, 500).await.unwrap();
                tx.commit().await.unwrap();
                a.push(format!("swept {swept}"));
                a.extend(seen(&direct, case_no).await);
                b.push(format!("swept {swept_general}"));
                b.extend(seen(&general, case_no).await);
                (a, b, went_direct)
            });
            let path = if went_direct { &took_direct } else { &left_to_general };
            path.fetch_add(1, Ordering::Relaxed);
            prop_assert_eq!(a, b, "case {} {:?}", case_no, case);
            Ok(())
        })
        .unwrap();
    // Both paths were exercised: most batches go direct, those with due holds to reclaim do not.
    let (took_direct, left_to_general) = (took_direct.into_inner(), left_to_general.into_inner());
    assert!(took_direct > 0 && left_to_general > 0, "direct {took_direct}, left to general {left_to_general}");
}
