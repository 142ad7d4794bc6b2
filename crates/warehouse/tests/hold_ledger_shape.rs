//! The ledger shape of holds (issue 13) on every backend: holds applied in one batch share one
//! `reserve` movement and one `stock.changed` per stock row, naming the batch, and each of
//! those reservations names it too; a lone hold's movement names the reservation itself.

use kernel::{Quantity, ReservationId, SkuCode, Timestamp, WarehouseCode};
use warehouse::reservation::{HoldCommand, HoldLine};

/// A `reserve` movement as checked: warehouse, reserved delta, reserved after, reference, holds.
type Reserve<'a> = (&'a str, i64, i64, Option<&'a str>, Option<i64>);

fn hold(units: i64, warehouse: &str) -> HoldCommand {
    HoldCommand {
        id: ReservationId::new(),
        reference: "cart".into(),
        ttl_seconds: 600,
        lines: vec![HoldLine {
            sku: SkuCode::parse("BOX").unwrap(),
            quantity: Quantity::new(units).unwrap(),
            warehouse: Some(WarehouseCode::parse(warehouse).unwrap()),
        }],
    }
}

/// The first 100 movements, oldest first.
async fn movements(db: &store::Db) -> kernel::Page<warehouse::ledger::Movement> {
    warehouse::ledger::movements_list(
        db.reader(),
        &Default::default(),
        0,
        &kernel::PageRequest { after: None, limit: 100 },
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn a_batch_of_holds_shares_one_movement_per_stock_row_and_every_hold_names_it() {
    for backend in testdb::backends() {
        let database = testdb::TestDatabase::create(backend).await;
        let db = database.connect().await;
        let now = Timestamp::from_millis(0);
        let mut tx = db.begin().await.unwrap();
        let new = warehouse::item::NewItem {
            sku: SkuCode::parse("BOX").unwrap(),
            name: "x".into(),
            weight_grams: None,
            track_lots: false,
        };
        warehouse::item::item_create(&mut tx, new, now).await.unwrap();
        tx.commit().await.unwrap();
        for code in ["W1", "W2"] {
            testdb::seed_warehouse(&db, code, 10).await;
            let mut tx = db.begin().await.unwrap();
            let receipt = warehouse::receipt::Receipt {
                warehouse: WarehouseCode::parse(code).unwrap(),
                reference: None,
                lines: vec![warehouse::receipt::ReceiptLine {
                    sku: SkuCode::parse("BOX").unwrap(),
                    quantity: Quantity::new(10).unwrap(),
                    lot: None,
                    expires_on: None,
                    bin: None,
                }],
            };
            warehouse::receipt::receive(&mut tx, receipt, now).await.unwrap();
            tx.commit().await.unwrap();
        }

        // Three holds in one batch: two on W1, one on W2; a fourth is refused and carries nothing.
        let mut tx = db.begin().await.unwrap();
        let batch = vec![hold(2, "W1"), hold(3, "W1"), hold(1, "W2"), hold(50, "W2")];
        let outcomes = warehouse::reservation::hold_batch(&mut tx, batch, now).await.unwrap();
        tx.commit().await.unwrap();
        assert!(outcomes[3].is_err(), "{:?}", outcomes[3]);
        let held: Vec<_> = outcomes.into_iter().take(3).map(Result::unwrap).collect();
        let batch_id = held[0].hold_batch.clone().expect("a batch of several names its batch");
        assert!(batch_id.starts_with("hbt_"), "{batch_id}");
        assert!(held.iter().all(|r| r.hold_batch.as_deref() == Some(batch_id.as_str())), "{held:?}");
        let read = warehouse::reservation::reservation_get(&db, &ReservationId::from_stored(held[1].id.clone()), now)
            .await
            .unwrap();
        assert_eq!(read.hold_batch.as_deref(), Some(batch_id.as_str()), "stored and read back");

        let page = movements(&db).await;
        let reserves: Vec<Reserve> = page
            .items
            .iter()
            .filter(|m| m.kind == "reserve")
            .map(|m| (m.warehouse.as_str(), m.reserved_delta, m.reserved_after, m.reference.as_deref(), m.reservations))
            .collect();
        assert_eq!(
            reserves,
            [("W1", 5, 5, Some(batch_id.as_str()), Some(2)), ("W2", 1, 1, Some(batch_id.as_str()), Some(1))]
        );

        // A lone hold writes what it always did: its movement names the reservation.
        let mut tx = db.begin().await.unwrap();
        let alone = warehouse::reservation::hold_batch(&mut tx, vec![hold(1, "W1")], now).await.unwrap();
        tx.commit().await.unwrap();
        let alone = alone.into_iter().next().unwrap().unwrap();
        assert_eq!(alone.hold_batch, None);
        let page = movements(&db).await;
        let last = page.items.last().unwrap();
        assert_eq!((last.reference.as_deref(), last.reservations), (Some(alone.id.as_str()), Some(1)));

        let report = warehouse::reconcile::reconcile(db.reader()).await.unwrap();
        assert!(report.mismatches.is_empty(), "{:?}", report.mismatches);
        drop(db);
        database.drop_database().await;
    }
}
