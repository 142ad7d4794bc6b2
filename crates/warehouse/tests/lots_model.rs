//! Property test of lots: random receipts into lots with random expiry dates, holds at random
//! instants, releases and fulfilments, against the real store and an in-memory model of the
//! lots. Holds must take unexpired lots first expiry first (then first received), never more
//! than they have free; lots must sum to the level; the ledger must reconcile. Every backend.

use kernel::{Quantity, ReservationId, SkuCode, Timestamp, WarehouseCode};
use proptest::prelude::*;
use store::Db;
use testdb::model::{ModelLine, StockModel};
use warehouse::reservation::{HoldCommand, HoldLine};

const DAY_MS: i64 = 86_400_000;
/// 2030-01-01T00:00:00Z: lots expire on days after it.
const EPOCH_MS: i64 = 1_893_456_000_000;

#[derive(Debug, Clone)]
enum Op {
    Receive { lot: usize, expiry_day: i64, quantity: i64 },
    Hold { day: i64, quantity: i64 },
    Release(usize),
    Fulfill(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..5_usize, 1..10_i64, 1..10_i64).prop_map(|(lot, expiry_day, quantity)| Op::Receive { lot, expiry_day, quantity }),
        // Holds happen within a week, the reservations' time to live: none expires in the test.
        4 => (0..7_i64, 1..8_i64).prop_map(|(day, quantity)| Op::Hold { day, quantity }),
        1 => (0..10_usize).prop_map(Op::Release),
        1 => (0..10_usize).prop_map(Op::Fulfill),
    ]
}

/// The case's one SKU and warehouse, as indices in the model.
const SKU: usize = 0;
const WH: usize = 0;

fn date_of(day: i64) -> String {
    Timestamp::from_millis(EPOCH_MS + day * DAY_MS).to_rfc3339()[..10].to_owned()
}

async fn run_case(db: &Db, case_no: usize, ops: &[Op]) {
    let sku = SkuCode::parse(format!("LOT{case_no}")).unwrap();
    let warehouse = WarehouseCode::parse("W1").unwrap();
    let mut tx = db.begin().await.unwrap();
    let item = warehouse::item::NewItem { sku: sku.clone(), name: "x".into(), weight_grams: None, track_lots: true };
    warehouse::item::item_create(&mut tx, item, Timestamp::from_millis(0)).await.unwrap();
    tx.commit().await.unwrap();

    let mut model = StockModel::default();
    for (step, op) in ops.iter().enumerate() {
        let mut tx = db.begin().await.unwrap();
        match op {
            Op::Receive { lot, expiry_day, quantity } => {
                let name = format!("L{lot}");
                // A lot keeps its first expiry date; receiving it again adds units.
                let expires_on = match model.lot(SKU, WH, &name) {
                    Some(l) => Timestamp::from_millis(l.expires_at_ms).to_rfc3339()[..10].to_owned(),
                    None => date_of(*expiry_day),
                };
                let line = warehouse::receipt::ReceiptLine {
                    sku: sku.clone(),
                    quantity: Quantity::new(*quantity).unwrap(),
                    lot: Some(name.clone()),
                    expires_on: Some(expires_on),
                    bin: None,
                };
                let receipt =
                    warehouse::receipt::Receipt { warehouse: warehouse.clone(), reference: None, lines: vec![line] };
                // Receipts a millisecond apart: "first received" compares receipt times (a tie,
                // within one millisecond, falls back to the lot code).
                warehouse::receipt::receive(&mut tx, receipt, Timestamp::from_millis(EPOCH_MS + step as i64))
                    .await
                    .unwrap();
                model.receive_lot(SKU, WH, &name, EPOCH_MS + expiry_day * DAY_MS, *quantity);
            }
            Op::Hold { day, quantity } => {
                let now = Timestamp::from_millis(EPOCH_MS + day * DAY_MS + 1);
                let command = HoldCommand {
                    id: ReservationId::new(),
                    reference: "p".into(),
                    ttl_seconds: 604_800,
                    lines: vec![HoldLine {
                        sku: sku.clone(),
                        quantity: Quantity::new(*quantity).unwrap(),
                        warehouse: None,
                    }],
                };
                let outcome = warehouse::reservation::hold_batch(&mut tx, vec![command.clone()], now)
                    .await
                    .unwrap()
                    .pop()
                    .unwrap();
                // Model: unexpired lots, first expiry first, then first received.
                let expected = model.fefo_take(SKU, WH, *quantity, now);
                assert_eq!(
                    outcome.is_ok(),
                    expected.is_some(),
                    "hold {quantity} against {:?}: {outcome:?}",
                    model.lots
                );
                if let (Ok(reservation), Some(expected)) = (outcome, expected) {
                    let taken: Vec<(String, i64)> =
                        reservation.lines[0].lots.iter().map(|t| (t.lot.clone(), t.quantity)).collect();
                    assert_eq!(taken, expected, "FEFO");
                    let line = ModelLine { sku: SKU, wh: WH, quantity: *quantity, lots: taken };
                    model.hold(command.id, now.plus_seconds(command.ttl_seconds), vec![line]);
                }
            }
            Op::Release(i) | Op::Fulfill(i) => {
                let Some(id) = model.reservations.get(*i).map(|r| r.id.clone()) else {
                    tx.rollback().await.unwrap();
                    continue;
                };
                let now = Timestamp::from_millis(EPOCH_MS);
                if matches!(op, Op::Release(_)) {
                    let released = warehouse::reservation::release(&mut tx, &id, now).await;
                    assert_eq!(released.is_ok(), model.release(*i, now).is_ok(), "{released:?}");
                } else {
                    if model.reservations[*i].holding() {
                        warehouse::reservation::confirm(&mut tx, &id, now).await.unwrap();
                        model.confirm(*i, now).unwrap();
                    }
                    let fulfilled = warehouse::reservation::fulfill(&mut tx, &id, now).await;
                    assert_eq!(fulfilled.is_ok(), model.fulfill(*i).is_ok(), "{fulfilled:?}");
                }
            }
        }
        tx.commit().await.unwrap();

        let real = warehouse::lot::lots_view(db.reader(), &sku, Timestamp::from_millis(EPOCH_MS)).await.unwrap();
        let lots = model.lots.get(&(SKU, WH)).map(Vec::as_slice).unwrap_or_default();
        for lot in lots.iter().filter(|l| l.on_hand > 0) {
            let found = real.iter().find(|r| r.lot == lot.name).unwrap_or_else(|| panic!("lot {} missing", lot.name));
            assert_eq!((found.on_hand, found.reserved), (lot.on_hand, lot.reserved), "lot {}", lot.name);
        }
        assert_eq!(real.len(), lots.iter().filter(|l| l.on_hand > 0).count());
    }
    let report = warehouse::reconcile::reconcile(db.reader()).await.unwrap();
    let mine: Vec<_> = report.mismatches.iter().filter(|m| m.sku == sku.as_str()).collect();
    assert!(mine.is_empty(), "reconciliation: {mine:?}");
}

#[test]
fn holds_take_unexpired_lots_first_expiry_first_and_lots_sum_to_the_level() {
    testdb::property_on_each_backend(
        (96, 32),
        &[("W1", 10)],
        prop::collection::vec(op(), 1..30),
        |runtime, db, n, ops| runtime.block_on(run_case(db, n, &ops)),
    );
}
