//! Settling part of a reservation (a fulfilment shipping what it packed, units failing QC)
//! keeps the rest held, first expiry first, on every backend; settling what is left ends it.

use kernel::{Quantity, ReservationId, SkuCode, Timestamp, WarehouseCode};
use store::Db;
use warehouse::WarehouseError;
use warehouse::reservation::{HoldCommand, HoldLine, Part, Settlement, Status, settle_part};

fn sku(code: &str) -> SkuCode {
    SkuCode::parse(code).unwrap()
}

async fn setup(db: &Db) -> ReservationId {
    let now = Timestamp::from_millis(0);
    let mut tx = db.begin().await.unwrap();
    for (code, track_lots) in [("BOX", false), ("MILK", true)] {
        let new = warehouse::item::NewItem { sku: sku(code), name: "x".into(), weight_grams: None, track_lots };
        warehouse::item::item_create(&mut tx, new, now).await.unwrap();
    }
    tx.commit().await.unwrap();
    testdb::seed_warehouse(db, "W1", 10).await;
    let mut tx = db.begin().await.unwrap();
    let line = |code: &str, units: i64, lot: Option<&str>, expires_on: Option<&str>| warehouse::receipt::ReceiptLine {
        sku: sku(code),
        quantity: Quantity::new(units).unwrap(),
        lot: lot.map(Into::into),
        expires_on: expires_on.map(Into::into),
        bin: None,
    };
    let receipt = warehouse::receipt::Receipt {
        warehouse: WarehouseCode::parse("W1").unwrap(),
        reference: None,
        lines: vec![
            line("BOX", 10, None, None),
            line("MILK", 3, Some("OLD"), Some("2090-01-01")),
            line("MILK", 5, Some("NEW"), Some("2099-01-01")),
        ],
    };
    warehouse::receipt::receive(&mut tx, receipt, now).await.unwrap();
    let id = ReservationId::new();
    let hold_line =
        |code: &str, units: i64| HoldLine { sku: sku(code), quantity: Quantity::new(units).unwrap(), warehouse: None };
    let command = HoldCommand {
        id: id.clone(),
        reference: "order".into(),
        ttl_seconds: 600,
        lines: vec![hold_line("BOX", 4), hold_line("MILK", 5)],
    };
    warehouse::reservation::hold_batch(&mut tx, vec![command], now).await.unwrap().pop().unwrap().unwrap();
    tx.commit().await.unwrap();
    id
}

fn part(code: &str, quantity: i64) -> Part {
    Part { sku: sku(code), warehouse: WarehouseCode::parse("W1").unwrap(), quantity }
}

async fn settle(
    db: &Db,
    id: &ReservationId,
    parts: &[Part],
    how: Settlement,
) -> warehouse::Result<warehouse::reservation::Reservation> {
    let mut tx = db.begin().await.unwrap();
    let outcome = settle_part(&mut tx, id, parts, how, Timestamp::from_millis(1)).await;
    if outcome.is_ok() {
        tx.commit().await.unwrap();
    }
    outcome
}

/// (on hand, reserved) of a SKU, and the held units per lot of the reservation.
async fn levels(db: &Db, code: &str) -> (i64, i64) {
    let view = warehouse::stock::stock_view(db.reader(), &sku(code), Timestamp::from_millis(1)).await.unwrap();
    (view.on_hand, view.reserved)
}

async fn assert_reconciled(db: &Db) {
    let report = warehouse::reconcile::reconcile(db.reader()).await.unwrap();
    assert!(report.mismatches.is_empty(), "{:?}", report.mismatches);
}

#[tokio::test]
async fn settling_part_ships_or_gives_back_those_units_and_keeps_the_rest_held() {
    for backend in testdb::backends() {
        let database = testdb::TestDatabase::create(backend).await;
        let db = database.connect().await;
        let id = setup(&db).await;

        let early = settle(&db, &id, &[part("BOX", 1)], Settlement::Fulfill).await;
        assert!(matches!(early, Err(WarehouseError::InvalidState { .. })), "an active hold does not ship: {early:?}");
        let mut tx = db.begin().await.unwrap();
        warehouse::reservation::confirm(&mut tx, &id, Timestamp::from_millis(1)).await.unwrap();
        tx.commit().await.unwrap();

        let too_many = settle(&db, &id, &[part("BOX", 5)], Settlement::Fulfill).await;
        assert!(matches!(too_many, Err(WarehouseError::Invalid { .. })), "{too_many:?}");
        assert_eq!(levels(&db, "BOX").await, (10, 4), "a refused settle changes nothing");

        let left = settle(&db, &id, &[part("BOX", 1), part("MILK", 4)], Settlement::Fulfill).await.unwrap();
        assert_eq!(left.status, Status::Confirmed);
        let held: Vec<(String, i64)> = left.lines.iter().map(|l| (l.sku.clone(), l.quantity)).collect();
        assert_eq!(held, [("BOX".to_owned(), 3), ("MILK".to_owned(), 1)]);
        let milk = left.lines.iter().find(|l| l.sku == "MILK").unwrap();
        let lots: Vec<(&str, i64)> = milk.lots.iter().map(|l| (l.lot.as_str(), l.quantity)).collect();
        assert_eq!(lots, [("NEW", 1)], "the first-expiring lot ships first");
        assert_eq!(levels(&db, "BOX").await, (9, 3));
        assert_eq!(levels(&db, "MILK").await, (4, 1));
        assert_reconciled(&db).await;

        let left = settle(&db, &id, &[part("BOX", 3)], Settlement::Release).await.unwrap();
        assert_eq!(levels(&db, "BOX").await, (9, 0), "released units are available again");
        assert_eq!(left.lines.len(), 1);
        let done = settle(&db, &id, &[part("MILK", 1)], Settlement::Fulfill).await.unwrap();
        assert_eq!(done.status, Status::Fulfilled, "settling what is left ends the reservation");
        assert_eq!(levels(&db, "MILK").await, (3, 0));
        assert_reconciled(&db).await;
        drop(db);
        database.drop_database().await;
    }
}
