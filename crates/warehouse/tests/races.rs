//! Races on the warehouse's Rust API, on every backend: holds racing a lot's expiry instant,
//! and imports running while holds happen. Each ends with a clean reconciliation.

use kernel::{Quantity, ReservationId, SkuCode, Timestamp, WarehouseCode};
use std::sync::Arc;
use store::Db;
use warehouse::import::{ReceiptRow, Row};
use warehouse::reservation::{HoldCommand, HoldLine};

const TASKS: usize = 16;

async fn setup(db: &Db, skus: &[(&str, bool)]) {
    let now = Timestamp::from_millis(0);
    let mut tx = db.begin().await.unwrap();
    for (sku, lots) in skus {
        let new = warehouse::item::NewItem {
            sku: SkuCode::parse(*sku).unwrap(),
            name: "x".into(),
            weight_grams: None,
            track_lots: *lots,
        };
        warehouse::item::item_create(&mut tx, new, now).await.unwrap();
    }
    tx.commit().await.unwrap();
    testdb::seed_warehouse(db, "W1", 10).await;
}

fn hold(sku: &str, quantity: i64) -> HoldCommand {
    HoldCommand {
        id: ReservationId::new(),
        reference: "race".into(),
        ttl_seconds: 600,
        lines: vec![HoldLine {
            sku: SkuCode::parse(sku).unwrap(),
            quantity: Quantity::new(quantity).unwrap(),
            warehouse: None,
        }],
    }
}

/// Receives `units` of SKU A into W1.
async fn receive_a(db: &Db, units: i64) {
    let mut tx = db.begin().await.unwrap();
    let line = warehouse::receipt::ReceiptLine {
        sku: SkuCode::parse("A").unwrap(),
        quantity: Quantity::new(units).unwrap(),
        lot: None,
        expires_on: None,
        bin: None,
    };
    let receipt = warehouse::receipt::Receipt {
        warehouse: WarehouseCode::parse("W1").unwrap(),
        reference: None,
        lines: vec![line],
    };
    warehouse::receipt::receive(&mut tx, receipt, Timestamp::from_millis(0)).await.unwrap();
    tx.commit().await.unwrap();
}

/// A transaction that stalls every write to SKU A until it ends: on SQLite it holds the single
/// writer connection, on PostgreSQL the stock row's lock.
async fn stall_writes_of_a(db: &Db) -> store::Tx {
    let mut writer_held = db.begin().await.unwrap();
    if db.backend() == store::Backend::Postgres {
        sqlx::query("SELECT on_hand FROM stock_levels WHERE sku = 'A' FOR UPDATE")
            .execute(&mut *writer_held)
            .await
            .unwrap();
    }
    writer_held
}

async fn assert_reconciled(db: &Db) {
    let report = warehouse::reconcile::reconcile(db.reader()).await.unwrap();
    assert!(report.mismatches.is_empty(), "{:?}", report.mismatches);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn holds_racing_a_lot_expiry_instant_never_take_the_expired_lot() {
    for backend in testdb::backends() {
        let database = testdb::TestDatabase::create(backend).await;
        let db = Arc::new(database.connect().await);
        setup(&db, &[("MILK", true)]).await;
        let expiry = warehouse::lot::expiry_instant("2030-01-02").unwrap();
        let mut tx = db.begin().await.unwrap();
        for (lot, expires_on, units) in [("OLD", "2030-01-02", 50), ("NEW", "2031-01-01", 30)] {
            let line = warehouse::receipt::ReceiptLine {
                sku: SkuCode::parse("MILK").unwrap(),
                quantity: Quantity::new(units).unwrap(),
                lot: Some(lot.into()),
                expires_on: Some(expires_on.into()),
                bin: None,
            };
            let receipt = warehouse::receipt::Receipt {
                warehouse: WarehouseCode::parse("W1").unwrap(),
                reference: None,
                lines: vec![line],
            };
            warehouse::receipt::receive(&mut tx, receipt, Timestamp::from_millis(0)).await.unwrap();
        }
        tx.commit().await.unwrap();

        // Half the tasks hold just before the instant, half at and after it; all at once.
        let tasks: Vec<_> = (0..TASKS * 4)
            .map(|i| {
                let db = db.clone();
                tokio::spawn(async move {
                    let now = Timestamp::from_millis(expiry.millis() + if i % 2 == 0 { -1 } else { (i as i64) * 1000 });
                    let mut tx = db.begin().await.unwrap();
                    let outcome = warehouse::reservation::hold_batch(&mut tx, vec![hold("MILK", 3)], now)
                        .await
                        .unwrap()
                        .pop()
                        .unwrap();
                    tx.commit().await.unwrap();
                    (now < expiry, outcome)
                })
            })
            .collect();
        let mut after_instant_from_old = 0;
        let mut held = 0;
        for task in tasks {
            let (before, outcome) = task.await.unwrap();
            if let Ok(reservation) = outcome {
                held += reservation.lines.iter().map(|l| l.quantity).sum::<i64>();
                let from_old: i64 =
                    reservation.lines.iter().flat_map(|l| &l.lots).filter(|t| t.lot == "OLD").map(|t| t.quantity).sum();
                if !before {
                    after_instant_from_old += from_old;
                }
            }
        }
        assert_eq!(
            after_instant_from_old, 0,
            "[{backend:?}] a hold at or after the expiry instant took the expired lot"
        );
        assert!(held <= 80, "[{backend:?}] held {held} of 80");
        let lots = warehouse::lot::lots_view(db.reader(), &SkuCode::parse("MILK").unwrap(), expiry).await.unwrap();
        for lot in &lots {
            assert!(0 <= lot.reserved && lot.reserved <= lot.on_hand, "{lot:?}");
        }
        assert_reconciled(&db).await;
        db.close().await;
        database.drop_database().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn imports_running_while_holds_happen_lose_nothing() {
    for backend in testdb::backends() {
        let database = testdb::TestDatabase::create(backend).await;
        let db = Arc::new(database.connect().await);
        setup(&db, &[("A", false), ("B", false)]).await;

        let importer = {
            let db = db.clone();
            tokio::spawn(async move {
                for batch in 0..20 {
                    let rows: Vec<Row<ReceiptRow>> = (0..50)
                        .map(|i| Row {
                            number: (batch * 50 + i) as u64 + 1,
                            key: format!("k{batch}-{i}"),
                            value: ReceiptRow {
                                warehouse: WarehouseCode::parse("W1").unwrap(),
                                reference: None,
                                line: warehouse::receipt::ReceiptLine {
                                    sku: SkuCode::parse(if i % 2 == 0 { "A" } else { "B" }).unwrap(),
                                    quantity: Quantity::new(2).unwrap(),
                                    lot: None,
                                    expires_on: None,
                                    bin: None,
                                },
                            },
                        })
                        .collect();
                    let mut tx = db.begin().await.unwrap();
                    warehouse::import::import_receipts(&mut tx, rows, Timestamp::from_millis(1)).await.unwrap();
                    tx.commit().await.unwrap();
                }
            })
        };
        let holders: Vec<_> = (0..TASKS)
            .map(|t| {
                let db = db.clone();
                tokio::spawn(async move {
                    let mut held = 0;
                    for _ in 0..25 {
                        let mut tx = db.begin().await.unwrap();
                        let sku = if t % 2 == 0 { "A" } else { "B" };
                        let outcome =
                            warehouse::reservation::hold_batch(&mut tx, vec![hold(sku, 1)], Timestamp::from_millis(2))
                                .await
                                .unwrap()
                                .pop()
                                .unwrap();
                        tx.commit().await.unwrap();
                        if outcome.is_ok() {
                            held += 1;
                        }
                        tokio::task::yield_now().await;
                    }
                    held
                })
            })
            .collect();
        importer.await.unwrap();
        let mut held = 0;
        for holder in holders {
            held += holder.await.unwrap();
        }
        let views = warehouse::stock::stock_views(
            db.reader(),
            &[SkuCode::parse("A").unwrap(), SkuCode::parse("B").unwrap()],
            None,
        )
        .await
        .unwrap();
        let on_hand: i64 = views.iter().map(|v| v.on_hand).sum();
        let reserved: i64 = views.iter().map(|v| v.reserved).sum();
        assert_eq!(on_hand, 2000, "[{backend:?}] every imported unit arrived once");
        assert_eq!(reserved, held, "[{backend:?}] every successful hold is held");
        assert_reconciled(&db).await;
        db.close().await;
        database.drop_database().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_reservation_queue_refuses_at_once_and_loses_nothing() {
    use warehouse::reservation::group_commit::{GroupCommit, GroupCommitConfig};
    for backend in testdb::backends() {
        let database = testdb::TestDatabase::create(backend).await;
        let db = database.connect().await;
        setup(&db, &[("A", false)]).await;
        receive_a(&db, 10).await;

        let config = GroupCommitConfig { batch_max: 1, window: std::time::Duration::ZERO, queue_max: 1, workers: 1 };
        let (group, _workers) =
            GroupCommit::start(db.clone(), Arc::new(kernel::SystemClock), config, store::workers::Workers::new());
        let writer_held = stall_writes_of_a(&db).await;
        // The worker takes the first hold and waits for the writer; the second fills the queue.
        let first = tokio::spawn({
            let group = group.clone();
            async move { group.hold(hold("A", 1)).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let second = tokio::spawn({
            let group = group.clone();
            async move { group.hold(hold("A", 1)).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let third = group.hold(hold("A", 1)).await;
        assert!(matches!(third, Err(warehouse::WarehouseError::Overloaded)), "{third:?}");

        drop(writer_held);
        assert!(first.await.unwrap().is_ok());
        assert!(second.await.unwrap().is_ok());
        let stock = warehouse::stock::stock_view(db.reader(), &SkuCode::parse("A").unwrap(), Timestamp::from_millis(0))
            .await
            .unwrap();
        assert_eq!(stock.reserved, 2, "the two queued holds are held, the refused one is not");
        assert_reconciled(&db).await;
        db.close().await;
        database.drop_database().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn receipts_and_bin_moves_racing_into_one_bin_never_overfill_it() {
    for backend in testdb::backends() {
        let database = testdb::TestDatabase::create(backend).await;
        let db = Arc::new(database.connect().await);
        setup(&db, &[("A", false), ("B", false)]).await;
        let w1 = WarehouseCode::parse("W1").unwrap();
        let now = Timestamp::from_millis(0);
        let mut tx = db.begin().await.unwrap();
        for (code, capacity_units) in [("BIG", None), ("SMALL", Some(10))] {
            let bin = warehouse::bin::NewBin { code: code.into(), zone: None, x: None, y: None, capacity_units };
            warehouse::bin::bin_create(&mut tx, &w1, bin, now).await.unwrap();
        }
        let line = |sku: &str, units: i64, bin: &str| warehouse::receipt::ReceiptLine {
            sku: SkuCode::parse(sku).unwrap(),
            quantity: Quantity::new(units).unwrap(),
            lot: None,
            expires_on: None,
            bin: Some(bin.into()),
        };
        let receipt = |line| warehouse::receipt::Receipt { warehouse: w1.clone(), reference: None, lines: vec![line] };
        warehouse::receipt::receive(&mut tx, receipt(line("A", 40, "BIG")), now).await.unwrap();
        tx.commit().await.unwrap();

        // Half receive a unit of B into SMALL, half move a unit of A from BIG into it.
        let tasks: Vec<_> = (0..TASKS * 2)
            .map(|i| {
                let (db, receipt) = (db.clone(), receipt(line("B", 1, "SMALL")));
                let w1 = w1.clone();
                tokio::spawn(async move {
                    let mut tx = db.begin().await.unwrap();
                    let outcome = if i % 2 == 0 {
                        warehouse::receipt::receive(&mut tx, receipt, now).await.map(|_| ())
                    } else {
                        let m = warehouse::bin::BinMove {
                            warehouse: w1,
                            sku: SkuCode::parse("A").unwrap(),
                            from_bin: "BIG".into(),
                            to_bin: "SMALL".into(),
                            quantity: 1,
                        };
                        warehouse::bin::bin_move(&mut tx, m, now).await.map(|_| ())
                    };
                    match outcome {
                        Ok(()) => {
                            tx.commit().await.unwrap();
                            true
                        }
                        Err(warehouse::WarehouseError::CapacityExceeded(_)) => {
                            tx.rollback().await.unwrap();
                            false
                        }
                        Err(e) => panic!("[{backend:?}] unexpected error: {e}"),
                    }
                })
            })
            .collect();
        let mut filled = 0;
        for task in tasks {
            filled += usize::from(task.await.unwrap());
        }
        let in_small: i64 =
            sqlx::query_scalar("SELECT CAST(COALESCE(SUM(on_hand), 0) AS BIGINT) FROM bin_stock WHERE bin = 'SMALL'")
                .fetch_one(db.reader())
                .await
                .unwrap();
        assert_eq!((filled, in_small), (10, 10), "[{backend:?}] exactly the bin's capacity went in");
        assert_reconciled(&db).await;
        db.close().await;
        database.drop_database().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idempotent_holds_in_one_batch_hold_once_per_key_and_replay_their_first_answer() {
    use futures::future::{BoxFuture, FutureExt, join_all};
    use store::batch::IdempotencyKey;
    use warehouse::reservation::Reservation;
    use warehouse::reservation::group_commit::{GroupCommit, GroupCommitConfig};
    let idem =
        |key: &str, body: &str| IdempotencyKey { scope: "test".into(), key: key.into(), fingerprint: body.into() };
    for backend in testdb::backends() {
        let database = testdb::TestDatabase::create(backend).await;
        let db = database.connect().await;
        setup(&db, &[("A", false)]).await;
        receive_a(&db, 10).await;

        let config = GroupCommitConfig { batch_max: 64, window: std::time::Duration::ZERO, queue_max: 64, workers: 1 };
        let (group, _workers) =
            GroupCommit::start(db.clone(), Arc::new(kernel::SystemClock), config, store::workers::Workers::new());
        // Stall the worker on a first hold, so that the next requests queue up and form one
        // batch, in this order.
        let writer_held = stall_writes_of_a(&db).await;
        let plug = tokio::spawn({
            let group = group.clone();
            async move { group.hold(hold("A", 1)).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let once =
            |key: &'static str, body: &'static str, units: i64| -> BoxFuture<'static, warehouse::Result<Reservation>> {
                let group = group.clone();
                async move { group.hold_once(hold("A", units), idem(key, body)).await.answer }.boxed()
            };
        let plain = {
            let group = group.clone();
            async move { group.hold(hold("A", 1)).await }.boxed()
        };
        // join_all polls in order, and a request is queued when first polled.
        let batch = tokio::spawn(join_all(vec![
            once("k1", "two", 2),
            once("k1", "two", 2),
            once("k1", "three", 3),
            once("k2", "too-many", 100),
            plain,
        ]));
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        drop(writer_held);
        assert!(plug.await.unwrap().is_ok());
        let answers = batch.await.unwrap();
        let first = answers[0].as_ref().unwrap().clone();
        assert_eq!(answers[1].as_ref().unwrap(), &first, "[{backend:?}] the repeat gets the same answer");
        assert!(
            matches!(answers[2], Err(warehouse::WarehouseError::IdempotencyKeyReused)),
            "[{backend:?}] another body with the same key is refused: {:?}",
            answers[2]
        );
        let refused = answers[3].as_ref().unwrap_err().refusal();
        assert!(
            matches!(refused, Some(warehouse::Refusal::InsufficientStock { .. })),
            "[{backend:?}] {:?}",
            answers[3]
        );
        assert!(answers[4].is_ok(), "[{backend:?}] {:?}", answers[4]);

        // Later repeats replay the stored outcomes, success and refusal alike.
        let again = group.hold_once(hold("A", 2), idem("k1", "two")).await;
        assert!(again.replayed, "[{backend:?}] a later repeat is marked replayed");
        assert_eq!(again.answer.unwrap(), first);
        let replayed = group.hold_once(hold("A", 100), idem("k2", "too-many")).await.answer.unwrap_err();
        assert!(matches!(replayed, warehouse::WarehouseError::Refused(_)), "{replayed:?}");
        assert_eq!(replayed.refusal(), refused, "[{backend:?}] the refusal is replayed as it was");
        let stock = warehouse::stock::stock_view(db.reader(), &SkuCode::parse("A").unwrap(), Timestamp::from_millis(0))
            .await
            .unwrap();
        assert_eq!(stock.reserved, 4, "[{backend:?}] the plug, k1 once and the plain hold");
        assert_reconciled(&db).await;
        db.close().await;
        database.drop_database().await;
    }
}
