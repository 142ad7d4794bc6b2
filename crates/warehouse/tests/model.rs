//! Property test: random sequences of receive, adjust, count, transfer, reserve, confirm,
//! release, fulfill and expire, applied through the public Rust API to the real store and to a
//! small in-memory model. After every step the stock levels agree and the invariants hold;
//! after every sequence the ledger reconciles. Runs on every backend.

use kernel::{Quantity, ReservationId, SkuCode, Timestamp, WarehouseCode};
use proptest::prelude::*;
use std::collections::HashMap;
use store::Db;
use testdb::model::{ModelLine, StockModel};
use warehouse::adjustment::{Adjustment, Change};
use warehouse::receipt::{Receipt, ReceiptLine};
use warehouse::reservation::{HoldCommand, HoldLine};
use warehouse::transfer::{Transfer, TransferLine};

const SKUS: usize = 2;
const WAREHOUSES: [&str; 2] = ["W1", "W2"];

/// A hold line as generated: SKU index, quantity, warehouse index (None: the server chooses).
type GenLine = (usize, i64, Option<usize>);

#[derive(Debug, Clone)]
enum Op {
    Receive {
        sku: usize,
        wh: usize,
        quantity: i64,
    },
    Adjust {
        sku: usize,
        wh: usize,
        delta: i64,
    },
    Count {
        sku: usize,
        wh: usize,
        counted: i64,
    },
    Transfer {
        sku: usize,
        from: usize,
        quantity: i64,
    },
    /// One batch of holds, as group commit applies them: outcomes must equal applying each in
    /// order.
    Reserve {
        commands: Vec<(Vec<GenLine>, i64)>,
    },
    Confirm(usize),
    Release(usize),
    Fulfill(usize),
    /// Moves time on and runs the sweeper.
    Expire {
        seconds: i64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let sku = 0..SKUS;
    let wh = 0..WAREHOUSES.len();
    prop_oneof![
        3 => (sku.clone(), wh.clone(), 1..20_i64).prop_map(|(sku, wh, quantity)| Op::Receive { sku, wh, quantity }),
        1 => (sku.clone(), wh.clone(), prop_oneof![-10..0_i64, 1..10_i64]).prop_map(|(sku, wh, delta)| Op::Adjust { sku, wh, delta }),
        1 => (sku.clone(), wh.clone(), 0..30_i64).prop_map(|(sku, wh, counted)| Op::Count { sku, wh, counted }),
        1 => (sku.clone(), wh.clone(), 1..15_i64).prop_map(|(sku, from, quantity)| Op::Transfer { sku, from, quantity }),
        4 => prop::collection::vec(
                (prop::collection::vec((sku, 1..10_i64, prop::option::of(wh)), 1..3), 1..100_i64),
                1..4
            )
            .prop_map(|commands| Op::Reserve { commands }),
        2 => (0..8_usize).prop_map(Op::Confirm),
        1 => (0..8_usize).prop_map(Op::Release),
        2 => (0..8_usize).prop_map(Op::Fulfill),
        1 => (0..120_i64).prop_map(|seconds| Op::Expire { seconds }),
    ]
}

struct Case {
    skus: Vec<SkuCode>,
    warehouses: Vec<WarehouseCode>,
}

async fn run_case(db: &Db, case_no: usize, ops: &[Op]) {
    let case = Case {
        skus: (0..SKUS).map(|i| SkuCode::parse(format!("C{case_no}-S{i}")).unwrap()).collect(),
        warehouses: WAREHOUSES.iter().map(|w| WarehouseCode::parse(*w).unwrap()).collect(),
    };
    let mut now = Timestamp::from_millis(1_900_000_000_000 + case_no as i64 * 10_000_000);
    let mut tx = db.begin().await.unwrap();
    for sku in &case.skus {
        let new =
            warehouse::item::NewItem { sku: sku.clone(), name: "x".into(), weight_grams: None, track_lots: false };
        warehouse::item::item_create(&mut tx, new, now).await.unwrap();
    }
    tx.commit().await.unwrap();

    let mut model = StockModel::default();
    for op in ops {
        apply(db, &case, &mut model, op, &mut now).await;
        compare(db, &case, &model).await;
    }
    // Other cases share the database; a failing one must not blame this one while shrinking.
    let report = warehouse::reconcile::reconcile(db.reader()).await.unwrap();
    let mine: Vec<_> = report.mismatches.iter().filter(|m| case.skus.iter().any(|s| s.as_str() == m.sku)).collect();
    assert!(mine.is_empty(), "reconciliation: {mine:?}");
}

/// Applies `op` to both sides. A refused use case may have written part of its work, like
/// any use case that fails halfway: as the API does, the transaction is then rolled back.
async fn apply(db: &Db, case: &Case, model: &mut StockModel, op: &Op, now: &mut Timestamp) {
    let mut tx = db.begin().await.unwrap();
    let mut refused = false;
    let sku = |i: usize| case.skus[i].clone();
    let wh = |i: usize| case.warehouses[i].clone();
    match op {
        Op::Receive { sku: s, wh: w, quantity } => {
            let line = ReceiptLine {
                sku: sku(*s),
                quantity: Quantity::new(*quantity).unwrap(),
                lot: None,
                expires_on: None,
                bin: None,
            };
            warehouse::receipt::receive(
                &mut tx,
                Receipt { warehouse: wh(*w), reference: None, lines: vec![line] },
                *now,
            )
            .await
            .unwrap();
            model.receive(*s, *w, *quantity);
        }
        Op::Adjust { sku: s, wh: w, delta } => {
            let result = warehouse::adjustment::adjust(
                &mut tx,
                Adjustment { warehouse: wh(*w), sku: sku(*s), change: Change::Delta(*delta), lot: None, reason: None },
                *now,
            )
            .await;
            let expected = model.adjust(*s, *w, *delta);
            assert_eq!(result.is_ok(), expected.is_ok(), "adjust {delta}: {result:?}");
            refused = expected.is_err();
        }
        Op::Count { sku: s, wh: w, counted } => {
            let result = warehouse::adjustment::adjust(
                &mut tx,
                Adjustment {
                    warehouse: wh(*w),
                    sku: sku(*s),
                    change: Change::Counted(*counted),
                    lot: None,
                    reason: None,
                },
                *now,
            )
            .await;
            let expected = model.count(*s, *w, *counted);
            assert_eq!(result.is_ok(), expected.is_ok(), "count {counted}: {result:?}");
            refused = expected.is_err();
        }
        Op::Transfer { sku: s, from, quantity } => {
            let to = 1 - from;
            let transfer = Transfer {
                from: wh(*from),
                to: wh(to),
                reference: None,
                in_transit: false,
                lines: vec![TransferLine { sku: sku(*s), quantity: Quantity::new(*quantity).unwrap() }],
            };
            let result = warehouse::transfer::transfer(&mut tx, transfer, *now).await;
            let expected = model.transfer(*s, *from, to, *quantity);
            assert_eq!(result.is_ok(), expected.is_ok(), "transfer {quantity}: {result:?}");
            refused = expected.is_err();
        }
        Op::Reserve { commands } => {
            // Mirror the inline reclaim: SKUs the batch asks for beyond what is available get
            // their due reservations expired first.
            let mut demand: HashMap<usize, i64> = HashMap::new();
            for (s, q, _) in commands.iter().flat_map(|(lines, _)| lines) {
                *demand.entry(*s).or_default() += q;
            }
            let short: Vec<usize> = demand
                .iter()
                .filter(|(s, d)| (0..WAREHOUSES.len()).map(|w| model.available(**s, w)).sum::<i64>() < **d)
                .map(|(s, _)| *s)
                .collect();
            if !short.is_empty() {
                model.expire_due(*now, Some(&short));
            }
            let holds: Vec<HoldCommand> = commands
                .iter()
                .map(|(lines, ttl_seconds)| HoldCommand {
                    id: ReservationId::new(),
                    reference: "model".into(),
                    ttl_seconds: *ttl_seconds,
                    lines: lines
                        .iter()
                        .map(|(s, q, w)| HoldLine {
                            sku: sku(*s),
                            quantity: Quantity::new(*q).unwrap(),
                            warehouse: w.map(wh),
                        })
                        .collect(),
                })
                .collect();
            let outcomes = warehouse::reservation::hold_batch(&mut tx, holds.clone(), *now).await.unwrap();
            for ((command, (lines, ttl_seconds)), outcome) in holds.into_iter().zip(commands).zip(outcomes) {
                model_hold(model, case, command.id, lines, *ttl_seconds, outcome, *now);
            }
        }
        Op::Confirm(i) | Op::Release(i) | Op::Fulfill(i) => {
            let Some(r) = model.reservations.get(*i).cloned() else {
                tx.rollback().await.unwrap();
                return;
            };
            match op {
                Op::Confirm(_) => {
                    let result = warehouse::reservation::confirm(&mut tx, &r.id, *now).await;
                    let expected = model.confirm(*i, *now);
                    assert_eq!(result.is_ok(), expected.is_ok(), "confirm {r:?}: {result:?}");
                }
                Op::Release(_) => {
                    let result = warehouse::reservation::release(&mut tx, &r.id, *now).await;
                    let expected = model.release(*i, *now);
                    assert_eq!(result.is_ok(), expected.is_ok(), "release {r:?}: {result:?}");
                }
                _ => {
                    let result = warehouse::reservation::fulfill(&mut tx, &r.id, *now).await;
                    let expected = model.fulfill(*i);
                    assert_eq!(result.is_ok(), expected.is_ok(), "fulfill {r:?}: {result:?}");
                }
            }
        }
        Op::Expire { seconds } => {
            tx.rollback().await.unwrap();
            *now = now.plus_seconds(*seconds);
            warehouse::reservation::sweep_expired(db, *now, 500).await.unwrap();
            model.expire_due(*now, None);
            return;
        }
    }
    if refused {
        tx.rollback().await.unwrap();
    } else {
        tx.commit().await.unwrap();
    }
}

/// Checks one hold's outcome against the model, in batch order, and applies it.
fn model_hold(
    model: &mut StockModel,
    case: &Case,
    id: ReservationId,
    lines: &[GenLine],
    ttl_seconds: i64,
    outcome: warehouse::Result<warehouse::reservation::Reservation>,
    now: Timestamp,
) {
    // Feasible iff explicit lines fit their warehouse and free lines fit what is left.
    let fits = model.hold_fits(lines, WAREHOUSES.len());
    assert_eq!(outcome.is_ok(), fits, "reserve {lines:?}: {outcome:?}");
    let Ok(reservation) = outcome else { return };
    let mut held: Vec<ModelLine> = Vec::new();
    for line in &reservation.lines {
        let s = case.skus.iter().position(|k| k.as_str() == line.sku).unwrap();
        let w = case.warehouses.iter().position(|k| k.as_str() == line.warehouse).unwrap();
        let already: i64 = held.iter().filter(|h| h.sku == s && h.wh == w).map(|h| h.quantity).sum();
        assert!(model.available(s, w) - already >= line.quantity, "held more than available: {reservation:?}");
        held.push(ModelLine { sku: s, wh: w, quantity: line.quantity, lots: Vec::new() });
    }
    let mut demand: HashMap<usize, i64> = HashMap::new();
    let mut explicit: HashMap<(usize, usize), i64> = HashMap::new();
    for (s, q, w) in lines {
        *demand.entry(*s).or_default() += q;
        if let Some(w) = w {
            *explicit.entry((*s, *w)).or_default() += q;
        }
    }
    for (s, d) in demand {
        assert_eq!(held.iter().filter(|h| h.sku == s).map(|h| h.quantity).sum::<i64>(), d, "held per SKU");
    }
    for ((s, w), q) in explicit {
        assert!(held.iter().filter(|h| h.sku == s && h.wh == w).map(|h| h.quantity).sum::<i64>() >= q);
    }
    model.hold(id, now.plus_seconds(ttl_seconds), held);
}

async fn compare(db: &Db, case: &Case, model: &StockModel) {
    let views = warehouse::stock::stock_views(db.reader(), &case.skus, None).await.unwrap();
    for (s, view) in views.iter().enumerate() {
        for (w, code) in case.warehouses.iter().enumerate() {
            let real = view
                .warehouses
                .iter()
                .find(|row| row.warehouse == code.as_str())
                .map(|row| (row.on_hand, row.reserved))
                .unwrap_or((0, 0));
            let expected = model.level(s, w);
            assert_eq!(real, expected, "stock of {} at {code}", view.sku);
            assert!(0 <= real.1 && real.1 <= real.0, "invariant 0 <= reserved <= on_hand broken: {real:?}");
        }
    }
}

#[test]
fn random_operation_sequences_match_the_model_and_reconcile() {
    let warehouses: Vec<(&str, i64)> = WAREHOUSES.iter().enumerate().map(|(i, w)| (*w, 10 * (i as i64 + 1))).collect();
    testdb::property_on_each_backend(
        (128, 48),
        &warehouses,
        prop::collection::vec(op(), 1..40),
        |runtime, db, n, ops| runtime.block_on(run_case(db, n, &ops)),
    );
}
