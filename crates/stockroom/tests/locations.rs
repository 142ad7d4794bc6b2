//! Lots with expiry (FEFO), bins and capacity, over HTTP on every backend.

use serde_json::{Value, json};
use std::time::Duration;
use testkit::{TestApp, each_backend};

async fn milk(app: &TestApp) {
    app.post("/v1/items", json!({"sku": "MILK", "name": "Milk 1l", "track_lots": true})).await.expect(201);
    app.create_warehouse("BER-1", 10).await;
    app.create_warehouse("MUC-1", 20).await;
    for (lot, expires_on, quantity) in
        [("L-LATE", "2099-01-01", 5), ("L-SOON", "2098-01-01", 3), ("L-OLD", "2000-01-01", 4)]
    {
        app.post(
            "/v1/receipts",
            json!({"warehouse": "BER-1", "lines": [{"sku": "MILK", "quantity": quantity, "lot": lot, "expires_on": expires_on}]}),
        )
        .await
        .expect(201);
    }
}

fn lot<'a>(lots: &'a Value, name: &str) -> &'a Value {
    lots["items"].as_array().unwrap().iter().find(|l| l["lot"] == name).unwrap_or(&Value::Null)
}

#[tokio::test]
async fn holds_take_lots_first_expiry_first_and_expired_lots_are_never_available() {
    each_backend(|app| async move {
        milk(&app).await;
        let lots = app.get("/v1/stock/MILK/lots").await.expect(200);
        let names: Vec<&str> = lots["items"].as_array().unwrap().iter().map(|l| l["lot"].as_str().unwrap()).collect();
        assert_eq!(names, ["L-OLD", "L-SOON", "L-LATE"], "first expiry first");
        assert_eq!(lot(&lots, "L-OLD")["status"], "expired");
        assert_eq!(lot(&lots, "L-OLD")["available"], 0);
        assert_eq!(lot(&lots, "L-SOON")["status"], "available");
        let stock = app.stock("MILK").await;
        assert_eq!((stock["on_hand"].as_i64(), stock["available"].as_i64()), (Some(12), Some(8)), "{stock}");

        let r = app.post("/v1/reservations", json!({"lines": [{"sku": "MILK", "quantity": 4}]})).await.expect(201);
        assert_eq!(r["lines"][0]["lots"], json!([{"lot": "L-SOON", "quantity": 3}, {"lot": "L-LATE", "quantity": 1}]));
        let short = app
            .post("/v1/reservations", json!({"lines": [{"sku": "MILK", "quantity": 5}]}))
            .await
            .expect_problem(409, "insufficient_stock");
        assert_eq!(short["lines"][0]["available"], 4, "expired units are not available: {short}");

        let id = r["id"].as_str().unwrap();
        assert_eq!(app.get(&format!("/v1/reservations/{id}")).await.expect(200)["lines"], r["lines"]);
        app.post(&format!("/v1/reservations/{id}/confirm"), json!({})).await.expect(200);
        app.post(&format!("/v1/reservations/{id}/fulfill"), json!({})).await.expect(200);
        let lots = app.get("/v1/stock/MILK/lots").await.expect(200);
        assert_eq!(lot(&lots, "L-SOON"), &Value::Null, "an emptied lot is not listed");
        assert_eq!(
            (lot(&lots, "L-LATE")["on_hand"].as_i64(), lot(&lots, "L-LATE")["reserved"].as_i64()),
            (Some(4), Some(0))
        );

        let again = app.post("/v1/reservations", json!({"lines": [{"sku": "MILK", "quantity": 2}]})).await.expect(201);
        let id = again["id"].as_str().unwrap();
        assert_eq!(lot(&app.get("/v1/stock/MILK/lots").await.expect(200), "L-LATE")["reserved"], 2);
        app.post(&format!("/v1/reservations/{id}/release"), json!({})).await.expect(200);
        assert_eq!(lot(&app.get("/v1/stock/MILK/lots").await.expect(200), "L-LATE")["reserved"], 0);
        app.reconcile().await;
    })
    .await;
}

#[tokio::test]
async fn the_lot_expiry_worker_records_expired_lots_in_the_ledger_and_the_feed() {
    each_backend(|app| async move {
        milk(&app).await;
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let movements = app.get("/v1/movements?sku=MILK&warehouse=BER-1").await.expect(200);
            let expired: Vec<&Value> =
                movements["items"].as_array().unwrap().iter().filter(|m| m["kind"] == "lot_expired").collect();
            if !expired.is_empty() {
                assert_eq!(expired.len(), 1);
                assert_eq!(expired[0]["reference"], "L-OLD");
                assert_eq!(expired[0]["on_hand_delta"], 0);
                break;
            }
            assert!(std::time::Instant::now() < deadline, "the lot expiry was not recorded");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let events = app.all_events().await;
        assert!(events.iter().any(|e| e["type"] == "lot.expired" && e["data"]["lot"] == "L-OLD"));
        app.reconcile().await;
    })
    .await;
}

#[tokio::test]
async fn lot_items_are_adjusted_per_lot_and_transferred_fefo() {
    each_backend(|app| async move {
        milk(&app).await;
        let refused = app
            .post("/v1/adjustments", json!({"warehouse": "BER-1", "sku": "MILK", "delta": -1}))
            .await
            .expect_problem(422, "validation_failed");
        assert_eq!(refused["errors"][0]["field"], "lot");
        // Write the expired lot off.
        app.post(
            "/v1/adjustments",
            json!({"warehouse": "BER-1", "sku": "MILK", "lot": "L-OLD", "delta": -4, "reason": "expired"}),
        )
        .await
        .expect(201);
        app.post("/v1/adjustments", json!({"warehouse": "BER-1", "sku": "MILK", "lot": "L-LATE", "counted": 6}))
            .await
            .expect(201);
        app.post("/v1/adjustments", json!({"warehouse": "BER-1", "sku": "MILK", "lot": "NOPE", "delta": 1}))
            .await
            .expect_problem(422, "validation_failed");

        app.post("/v1/transfers", json!({"from": "BER-1", "to": "MUC-1", "lines": [{"sku": "MILK", "quantity": 4}]}))
            .await
            .expect(201);
        let lots = app.get("/v1/stock/MILK/lots").await.expect(200);
        let at = |warehouse: &str, name: &str| {
            lots["items"]
                .as_array()
                .unwrap()
                .iter()
                .find(|l| l["warehouse"] == warehouse && l["lot"] == name)
                .map(|l| (l["on_hand"].as_i64().unwrap(), l["expires_on"].as_str().unwrap().to_owned()))
        };
        assert_eq!(at("MUC-1", "L-SOON"), Some((3, "2098-01-01".into())), "{lots}");
        assert_eq!(at("MUC-1", "L-LATE"), Some((1, "2099-01-01".into())));
        assert_eq!(at("BER-1", "L-LATE"), Some((5, "2099-01-01".into())));
        let stock = app.stock("MILK").await;
        assert_eq!(stock["on_hand"], 9);
        app.reconcile().await;
    })
    .await;
}

#[tokio::test]
async fn receipts_go_to_bins_and_never_beyond_a_capacity() {
    each_backend(|app| async move {
        app.create_item("BOX").await;
        app.create_item("CUP").await;
        app.post("/v1/warehouses", json!({"code": "BER-1", "name": "Berlin", "priority": 10, "capacity_units": 100}))
            .await
            .expect(201);
        app.create_warehouse("MUC-1", 20).await;
        let bin = app
            .post(
                "/v1/warehouses/BER-1/bins",
                json!({"code": "A-01-1", "zone": "A", "x": 3.5, "y": 12.0, "capacity_units": 20}),
            )
            .await
            .expect(201);
        assert_eq!(bin["used_units"], 0);
        app.post("/v1/warehouses/BER-1/bins", json!({"code": "B-01-1", "zone": "B", "capacity_units": 50}))
            .await
            .expect(201);
        app.post("/v1/warehouses/BER-1/bins", json!({"code": "A-01-1"})).await.expect_problem(409, "conflict");
        app.post("/v1/warehouses/NOPE/bins", json!({"code": "A"})).await.expect_problem(404, "not_found");

        let receipt = app
            .post(
                "/v1/receipts",
                json!({"warehouse": "BER-1", "lines": [{"sku": "BOX", "quantity": 15, "bin": "A-01-1"}]}),
            )
            .await
            .expect(201);
        assert_eq!(receipt["lines"][0]["bin"], "A-01-1");
        // No bin named: a bin already holding the SKU with room, else the emptiest that fits.
        let suggested = app
            .post("/v1/receipts", json!({"warehouse": "BER-1", "lines": [{"sku": "BOX", "quantity": 5}]}))
            .await
            .expect(201);
        assert_eq!(suggested["lines"][0]["bin"], "A-01-1");
        let suggested = app
            .post("/v1/receipts", json!({"warehouse": "BER-1", "lines": [{"sku": "CUP", "quantity": 10}]}))
            .await
            .expect(201);
        assert_eq!(suggested["lines"][0]["bin"], "B-01-1");

        let before = (app.stock("BOX").await, app.get("/v1/warehouses/BER-1/bins").await.expect(200));
        let full = app
            .post(
                "/v1/receipts",
                json!({"warehouse": "BER-1", "lines": [{"sku": "BOX", "quantity": 1, "bin": "A-01-1"}]}),
            )
            .await
            .expect_problem(409, "capacity_exceeded");
        assert!(full["detail"].as_str().unwrap().contains("A-01-1"));
        app.post("/v1/receipts", json!({"warehouse": "BER-1", "lines": [{"sku": "CUP", "quantity": 71}]}))
            .await
            .expect_problem(409, "capacity_exceeded");
        app.receive("MUC-1", "CUP", 100).await;
        app.post("/v1/transfers", json!({"from": "MUC-1", "to": "BER-1", "lines": [{"sku": "CUP", "quantity": 71}]}))
            .await
            .expect_problem(409, "capacity_exceeded");
        let after = (app.stock("BOX").await, app.get("/v1/warehouses/BER-1/bins").await.expect(200));
        assert_eq!(before, after, "refused receipts and transfers change nothing");
        let warehouse = app.get("/v1/warehouses/BER-1").await.expect(200);
        assert_eq!((warehouse["capacity_units"].as_i64(), warehouse["used_units"].as_i64()), (Some(100), Some(30)));
        app.post("/v1/transfers", json!({"from": "MUC-1", "to": "BER-1", "lines": [{"sku": "CUP", "quantity": 70}]}))
            .await
            .expect(201);

        let bins = app.get("/v1/warehouses/BER-1/bins").await.expect(200);
        let used = |code: &str| {
            bins["items"].as_array().unwrap().iter().find(|b| b["code"] == code).unwrap()["used_units"].clone()
        };
        // 70 units fit no bin (A is full, B has room for 40): they stay unbinned.
        assert_eq!((used("A-01-1"), used("B-01-1")), (json!(20), json!(10)), "{bins}");
        app.reconcile().await;
    })
    .await;
}

#[tokio::test]
async fn units_move_between_bins_and_leave_bins_when_they_leave_the_building() {
    each_backend(|app| async move {
        app.create_item("BOX").await;
        app.create_warehouse("BER-1", 10).await;
        app.post("/v1/warehouses/BER-1/bins", json!({"code": "A", "capacity_units": 10})).await.expect(201);
        app.post("/v1/warehouses/BER-1/bins", json!({"code": "B", "capacity_units": 10})).await.expect(201);
        app.post("/v1/receipts", json!({"warehouse": "BER-1", "lines": [{"sku": "BOX", "quantity": 8, "bin": "A"}]}))
            .await
            .expect(201);

        let moved = app
            .post(
                "/v1/warehouses/BER-1/bin-moves",
                json!({"sku": "BOX", "from_bin": "A", "to_bin": "B", "quantity": 3}),
            )
            .await
            .expect(201);
        assert_eq!(
            moved["bins"],
            json!([{"bin": "A", "sku": "BOX", "on_hand": 5}, {"bin": "B", "sku": "BOX", "on_hand": 3}])
        );
        app.post(
            "/v1/warehouses/BER-1/bin-moves",
            json!({"sku": "BOX", "from_bin": "A", "to_bin": "B", "quantity": 9}),
        )
        .await
        .expect_problem(409, "insufficient_stock");
        app.post(
            "/v1/warehouses/BER-1/bin-moves",
            json!({"sku": "BOX", "from_bin": "A", "to_bin": "NOPE", "quantity": 1}),
        )
        .await
        .expect_problem(422, "validation_failed");
        let kinds: Vec<String> = app.get("/v1/movements?sku=BOX").await.expect(200)["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["kind"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(kinds, ["receipt", "bin_move"]);

        app.post("/v1/adjustments", json!({"warehouse": "BER-1", "sku": "BOX", "delta": -6})).await.expect(201);
        let bins = app.get("/v1/stock/BOX/bins?warehouse=BER-1").await.expect(200);
        let binned: i64 = bins["items"].as_array().unwrap().iter().map(|b| b["on_hand"].as_i64().unwrap()).sum();
        assert_eq!(binned, 2, "bins never hold more than on hand: {bins}");
        app.reconcile().await;
    })
    .await;
}

#[tokio::test]
async fn a_quarantined_lot_stays_on_hand_but_is_never_held_until_released() {
    each_backend(|app| async move {
        milk(&app).await;
        let held = app.post("/v1/reservations", json!({"lines": [{"sku": "MILK", "quantity": 2}]})).await.expect(201);
        assert_eq!(held["lines"][0]["lots"][0]["lot"], "L-SOON");

        let body = json!({"warehouse": "BER-1", "reason": "supplier recall"});
        let view = app.post("/v1/stock/MILK/lots/L-LATE/quarantine", body.clone()).await.expect(200);
        assert_eq!(
            (view["status"].as_str(), view["available"].as_i64(), view["on_hand"].as_i64()),
            (Some("quarantined"), Some(0), Some(5))
        );
        let stock = app.stock("MILK").await;
        assert_eq!((stock["on_hand"].as_i64(), stock["available"].as_i64()), (Some(12), Some(1)), "{stock}");
        let short = app.post("/v1/reservations", json!({"lines": [{"sku": "MILK", "quantity": 2}]})).await;
        assert_eq!(short.expect_problem(409, "insufficient_stock")["lines"][0]["available"], 1);

        let movements = |app: TestApp| async move {
            app.get("/v1/movements?sku=MILK").await.expect(200)["items"].as_array().unwrap().clone()
        };
        let before = movements(app.clone()).await;
        let quarantined = before.iter().find(|m| m["kind"] == "lot_quarantined").expect("a lot_quarantined movement");
        assert_eq!(
            (quarantined["on_hand_delta"].as_i64(), quarantined["reference"].as_str()),
            (Some(0), Some("L-LATE"))
        );
        assert!(quarantined["reason"].as_str().unwrap().contains("supplier recall"), "{quarantined}");
        app.post("/v1/stock/MILK/lots/L-LATE/quarantine", body).await.expect(200);
        assert_eq!(movements(app.clone()).await.len(), before.len(), "quarantining again changes nothing");

        app.post("/v1/stock/MILK/lots/NOPE/quarantine", json!({"warehouse": "BER-1"}))
            .await
            .expect_problem(404, "not_found");
        app.post("/v1/stock/MILK/lots/L-LATE/quarantine", json!({"warehouse": "HAM-9"}))
            .await
            .expect_problem(422, "validation_failed");
        app.post("/v1/stock/MILK/lots/L-LATE/quarantine", json!({})).await.expect_problem(422, "validation_failed");
        app.post("/v1/stock/NOPE/lots/L-LATE/release", json!({"warehouse": "BER-1"}))
            .await
            .expect_problem(404, "not_found");
        assert_eq!(movements(app.clone()).await.len(), before.len(), "refused requests change nothing");

        let view = app.post("/v1/stock/MILK/lots/L-LATE/release", json!({"warehouse": "BER-1"})).await.expect(200);
        assert_eq!((view["status"].as_str(), view["available"].as_i64()), (Some("available"), Some(5)));
        let held = app.post("/v1/reservations", json!({"lines": [{"sku": "MILK", "quantity": 5}]})).await.expect(201);
        let lots: Vec<(&str, i64)> = held["lines"][0]["lots"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| (l["lot"].as_str().unwrap(), l["quantity"].as_i64().unwrap()))
            .collect();
        assert_eq!(lots, [("L-SOON", 1), ("L-LATE", 4)]);
        let events = app.all_events().await;
        for kind in ["lot.quarantined", "lot.released"] {
            assert_eq!(events.iter().filter(|e| e["type"] == kind).count(), 1, "one {kind} event");
        }
        app.reconcile().await;
    })
    .await;
}
