//! Property test: random sequences of receive, adjust, count, transfer, reserve, confirm,
//! release, fulfill and expire, applied through the public Rust API to the real store and to a
//! small in-memory model. After every step the stock levels agree and the invariants hold;
//! after every sequence the ledger reconciles. Runs on every backend.

use kernel::{Quantity, ReservationId, SkuCode, Timestamp, WarehouseCode};
use proptest::prelude::*;
use std::collections::HashMap;
use store::Db;
use warehouse::adjustment::{Adjustment, Change};
use warehouse::receipt::{Receipt, ReceiptLine};
use warehouse::reservation::{HoldCommand, HoldLine, Status};
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

#[derive(Debug, Clone)]
struct ModelReservation {
    id: ReservationId,
    status: Status,
    expires_at: Timestamp,
    lines: Vec<(usize, usize, i64)>,
}

#[derive(Debug, Default)]
struct Model {
    levels: HashMap<(usize, usize), (i64, i64)>,
    reservations: Vec<ModelReservation>,
}

impl Model {
    fn level(&mut self, sku: usize, wh: usize) -> &mut (i64, i64) {
        self.levels.entry((sku, wh)).or_default()
    }

    fn available(&self, sku: usize, wh: usize) -> i64 {
        self.levels.get(&(sku, wh)).map(|(o, r)| o - r).unwrap_or(0)
    }

    fn give_back(&mut self, index: usize, status: Status) {
        let lines = self.reservations[index].lines.clone();
        for (sku, wh, q) in lines {
            let level = self.level(sku, wh);
            level.1 -= q;
            if status == Status::Fulfilled {
                level.0 -= q;
            }
        }
        self.reservations[index].status = status;
    }

    fn expire_due(&mut self, now: Timestamp, holding: Option<&[usize]>) {
        for i in 0..self.reservations.len() {
            let r = &self.reservations[i];
            let holds = holding.is_none_or(|skus| r.lines.iter().any(|(s, _, _)| skus.contains(s)));
            if r.status == Status::Active && r.expires_at <= now && holds {
                self.give_back(i, Status::Expired);
            }
        }
    }
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

    let mut model = Model::default();
    for op in ops {
        apply(db, &case, &mut model, op, &mut now).await;
        compare(db, &case, &mut model).await;
    }
    // Other cases share the database; a failing one must not blame this one while shrinking.
    let report = warehouse::reconcile::reconcile(db.reader()).await.unwrap();
    let mine: Vec<_> = report.mismatches.iter().filter(|m| case.skus.iter().any(|s| s.as_str() == m.sku)).collect();
    assert!(mine.is_empty(), "reconciliation: {mine:?}");
}

/// Applies `op` to both sides. A refused use case may have written part of its work, like
/// any use case that fails halfway: as the API does, the transaction is then rolled back.
async fn apply(db: &Db, case: &Case, model: &mut Model, op: &Op, now: &mut Timestamp) {
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
            model.level(*s, *w).0 += quantity;
        }
        Op::Adjust { sku: s, wh: w, delta } => {
            let result = warehouse::adjustment::adjust(
                &mut tx,
                Adjustment { warehouse: wh(*w), sku: sku(*s), change: Change::Delta(*delta), lot: None, reason: None },
                *now,
            )
            .await;
            let allowed = *delta > 0 || model.available(*s, *w) >= -delta;
            assert_eq!(result.is_ok(), allowed, "adjust {delta}: {result:?}");
            refused = !allowed;
            if allowed {
                model.level(*s, *w).0 += delta;
            }
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
            let allowed = *counted >= model.levels.get(&(*s, *w)).map(|l| l.1).unwrap_or(0);
            assert_eq!(result.is_ok(), allowed, "count {counted}: {result:?}");
            refused = !allowed;
            if allowed {
                model.level(*s, *w).0 = *counted;
            }
        }
        Op::Transfer { sku: s, from, quantity } => {
            let to = 1 - from;
            let transfer = Transfer {
                from: wh(*from),
                to: wh(to),
                reference: None,
                lines: vec![TransferLine { sku: sku(*s), quantity: Quantity::new(*quantity).unwrap() }],
            };
            let result = warehouse::transfer::transfer(&mut tx, transfer, *now).await;
            let allowed = model.available(*s, *from) >= *quantity;
            assert_eq!(result.is_ok(), allowed, "transfer {quantity}: {result:?}");
            refused = !allowed;
            if allowed {
                model.level(*s, *from).0 -= quantity;
                model.level(*s, to).0 += quantity;
            }
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
            let due = r.status == Status::Active && r.expires_at <= *now;
            match op {
                Op::Confirm(_) => {
                    let result = warehouse::reservation::confirm(&mut tx, &r.id, *now).await;
                    let allowed = matches!(r.status, Status::Confirmed) || (r.status == Status::Active && !due);
                    assert_eq!(result.is_ok(), allowed, "confirm {r:?}: {result:?}");
                    if allowed {
                        model.reservations[*i].status = Status::Confirmed;
                    }
                }
                Op::Release(_) => {
                    let result = warehouse::reservation::release(&mut tx, &r.id, *now).await;
                    assert_eq!(result.is_ok(), r.status != Status::Fulfilled, "release {r:?}: {result:?}");
                    match r.status {
                        Status::Active if due => model.give_back(*i, Status::Expired),
                        Status::Active | Status::Confirmed => model.give_back(*i, Status::Released),
                        _ => {}
                    }
                }
                _ => {
                    let result = warehouse::reservation::fulfill(&mut tx, &r.id, *now).await;
                    assert_eq!(result.is_ok(), r.status == Status::Confirmed, "fulfill {r:?}: {result:?}");
                    if r.status == Status::Confirmed {
                        model.give_back(*i, Status::Fulfilled);
                    }
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
    model: &mut Model,
    case: &Case,
    id: ReservationId,
    lines: &[GenLine],
    ttl_seconds: i64,
    outcome: warehouse::Result<warehouse::reservation::Reservation>,
    now: Timestamp,
) {
    // Feasible iff explicit lines fit their warehouse and free lines fit what is left.
    let mut explicit: HashMap<(usize, usize), i64> = HashMap::new();
    let mut free: HashMap<usize, i64> = HashMap::new();
    let mut demand: HashMap<usize, i64> = HashMap::new();
    for (s, q, w) in lines {
        *demand.entry(*s).or_default() += q;
        match w {
            Some(w) => *explicit.entry((*s, *w)).or_default() += q,
            None => *free.entry(*s).or_default() += q,
        }
    }
    let explicit_fits = explicit.iter().all(|((s, w), q)| model.available(*s, *w) >= *q);
    let free_fits = free.iter().all(|(s, q)| {
        let left: i64 =
            (0..WAREHOUSES.len()).map(|w| model.available(*s, w) - explicit.get(&(*s, w)).copied().unwrap_or(0)).sum();
        left >= *q
    });
    assert_eq!(outcome.is_ok(), explicit_fits && free_fits, "reserve {lines:?}: {outcome:?}");
    let Ok(reservation) = outcome else { return };
    let mut held: Vec<(usize, usize, i64)> = Vec::new();
    for line in &reservation.lines {
        let s = case.skus.iter().position(|k| k.as_str() == line.sku).unwrap();
        let w = case.warehouses.iter().position(|k| k.as_str() == line.warehouse).unwrap();
        assert!(model.available(s, w) >= line.quantity, "held more than available: {reservation:?}");
        model.level(s, w).1 += line.quantity;
        held.push((s, w, line.quantity));
    }
    for (s, d) in demand {
        assert_eq!(held.iter().filter(|h| h.0 == s).map(|h| h.2).sum::<i64>(), d, "held per SKU");
    }
    for ((s, w), q) in explicit {
        assert!(held.iter().filter(|h| h.0 == s && h.1 == w).map(|h| h.2).sum::<i64>() >= q);
    }
    model.reservations.push(ModelReservation {
        id,
        status: Status::Active,
        expires_at: now.plus_seconds(ttl_seconds),
        lines: held,
    });
}

async fn compare(db: &Db, case: &Case, model: &mut Model) {
    let views = warehouse::stock::stock_views(db.reader(), &case.skus, None).await.unwrap();
    for (s, view) in views.iter().enumerate() {
        for (w, code) in case.warehouses.iter().enumerate() {
            let real = view
                .warehouses
                .iter()
                .find(|row| row.warehouse == code.as_str())
                .map(|row| (row.on_hand, row.reserved))
                .unwrap_or((0, 0));
            let expected = model.levels.get(&(s, w)).copied().unwrap_or((0, 0));
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
