//! Alert rules and the alert lifecycle, raised and resolved by the supervised checker, on
//! every backend.

use kernel::Clock;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use testkit::{TestApp, each_backend};

/// Polls the alert list until `wanted` holds (the checker runs every second).
async fn wait_for_alerts(app: &TestApp, query: &str, wanted: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(6);
    loop {
        let page = app.get(&format!("/v1/alerts{query}")).await.expect(200);
        let items = page["items"].as_array().cloned().unwrap_or_default();
        if wanted(&items) {
            return items;
        }
        assert!(Instant::now() < deadline, "[{}] alerts never matched; last: {items:?}", app.label());
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

fn of_kind<'a>(alerts: &'a [Value], kind: &str, sku: &str) -> Option<&'a Value> {
    alerts.iter().find(|a| a["kind"] == kind && a["sku"] == sku)
}

#[tokio::test]
async fn low_and_out_of_stock_alerts_are_raised_acknowledged_and_resolved() {
    each_backend(|app| async move {
        app.create_item("A").await;
        app.create_item("B").await;
        app.create_warehouse("BER-1", 10).await;
        let rule = app
            .put_json("/v1/alert-rules/default", json!({"low_stock_units": 5, "out_of_stock": true}))
            .await
            .expect(200);
        assert_eq!(rule["scope"], "default");
        app.put_json("/v1/alert-rules/items/B", json!({"low_stock_units": 1})).await.expect(200);
        app.put_json("/v1/alert-rules/items/NOPE", json!({"low_stock_units": 1}))
            .await
            .expect_problem(404, "not_found");
        app.put_json("/v1/alert-rules/default", json!({"capacity_share_percent": 101}))
            .await
            .expect_problem(422, "validation_failed");
        assert_eq!(app.get("/v1/alert-rules").await.expect(200)["items"].as_array().unwrap().len(), 2);

        app.receive("BER-1", "A", 10).await;
        app.receive("BER-1", "B", 3).await;
        app.post("/v1/reservations", json!({"lines": [{"sku": "A", "quantity": 6}, {"sku": "B", "quantity": 1}]}))
            .await
            .expect(201);
        let open = wait_for_alerts(&app, "?status=open", |a| of_kind(a, "low_stock", "A").is_some()).await;
        assert!(of_kind(&open, "low_stock", "B").is_none(), "B has its own rule (at or below 1): {open:?}");
        let low = of_kind(&open, "low_stock", "A").unwrap().clone();
        assert_eq!(low["detail"]["available"], 4);
        let id = low["id"].as_str().unwrap();

        let acknowledged = app.post(&format!("/v1/alerts/{id}/acknowledge"), json!({})).await.expect(200);
        assert_eq!(acknowledged["status"], "acknowledged");
        app.post(&format!("/v1/alerts/{id}/acknowledge"), json!({})).await.expect(200);

        app.receive("BER-1", "A", 10).await;
        wait_for_alerts(&app, "?status=resolved", |a| a.iter().any(|x| x["id"] == id)).await;
        app.post(&format!("/v1/alerts/{id}/acknowledge"), json!({})).await.expect_problem(409, "invalid_state");

        app.post("/v1/reservations", json!({"lines": [{"sku": "A", "quantity": 14}]})).await.expect(201);
        let open = wait_for_alerts(&app, "?status=open", |a| of_kind(a, "out_of_stock", "A").is_some()).await;
        assert!(of_kind(&open, "low_stock", "A").is_none(), "out of stock replaces low stock");
        let events = app.all_events().await;
        for kind in ["alert.raised", "alert.acknowledged", "alert.resolved"] {
            assert!(events.iter().any(|e| e["type"] == kind), "no {kind} event");
        }
        app.get("/v1/alerts?status=bogus").await.expect_problem(422, "validation_failed");
        app.post("/v1/alerts/alr_0/acknowledge", json!({})).await.expect_problem(404, "not_found");
    })
    .await;
}

#[tokio::test]
async fn expiring_lots_and_full_warehouses_raise_alerts() {
    each_backend(|app| async move {
        app.post("/v1/items", json!({"sku": "MILK", "name": "Milk", "track_lots": true})).await.expect(201);
        app.post("/v1/warehouses", json!({"code": "BER-1", "name": "Berlin", "capacity_units": 100})).await.expect(201);
        app.put_json("/v1/alert-rules/default", json!({"expiring_within_days": 30, "capacity_share_percent": 80})).await.expect(200);
        let in_ten_days = kernel::SystemClock.now().plus_seconds(10 * 86_400).to_rfc3339()[..10].to_owned();
        for (lot, expires_on, quantity) in [("SOON", in_ten_days.as_str(), 40), ("LATER", "2099-01-01", 45)] {
            app.post(
                "/v1/receipts",
                json!({"warehouse": "BER-1", "lines": [{"sku": "MILK", "quantity": quantity, "lot": lot, "expires_on": expires_on}]}),
            )
            .await
            .expect(201);
        }
        let open = wait_for_alerts(&app, "?status=open", |a| {
            a.iter().any(|x| x["kind"] == "expiring_soon") && a.iter().any(|x| x["kind"] == "capacity")
        })
        .await;
        let expiring: Vec<&Value> = open.iter().filter(|a| a["kind"] == "expiring_soon").collect();
        assert_eq!(expiring.len(), 1);
        assert_eq!(expiring[0]["lot"], "SOON");
        let capacity = open.iter().find(|a| a["kind"] == "capacity").unwrap();
        assert_eq!(capacity["warehouse"], "BER-1");
        assert_eq!(capacity["detail"]["used_units"], 85);

        app.post("/v1/adjustments", json!({"warehouse": "BER-1", "sku": "MILK", "lot": "SOON", "delta": -40})).await.expect(201);
        wait_for_alerts(&app, "?status=resolved", |a| a.len() == 2).await;
    })
    .await;
}

#[tokio::test]
async fn a_changed_rule_applies_to_stock_that_did_not_move() {
    each_backend(|app| async move {
        for sku in ["A", "B"] {
            app.create_item(sku).await;
        }
        app.create_warehouse("BER-1", 10).await;
        app.create_warehouse("HAM-1", 20).await;
        app.receive("BER-1", "A", 20).await;
        app.receive("HAM-1", "A", 3).await;
        app.receive("BER-1", "B", 50).await;

        // No stock moves after this: only the rule changes.
        app.put_json("/v1/alert-rules/items/A", json!({"low_stock_units": 5})).await.expect(200);
        let open = wait_for_alerts(&app, "?status=open", |a| of_kind(a, "low_stock", "A").is_some()).await;
        let low: Vec<&Value> = open.iter().filter(|a| a["kind"] == "low_stock").collect();
        assert_eq!(low.len(), 1, "only HAM-1 holds 5 or fewer: {open:?}");
        assert_eq!(low[0]["warehouse"], "HAM-1");

        app.put_json("/v1/alert-rules/default", json!({"overstock_units": 40})).await.expect(200);
        let open = wait_for_alerts(&app, "?status=open", |a| of_kind(a, "overstock", "B").is_some()).await;
        assert!(of_kind(&open, "overstock", "A").is_none(), "A has its own rule: {open:?}");

        app.put_json("/v1/alert-rules/items/A", json!({"low_stock_units": 2})).await.expect(200);
        let resolved = wait_for_alerts(&app, "?status=resolved", |a| of_kind(a, "low_stock", "A").is_some()).await;
        assert_eq!(of_kind(&resolved, "low_stock", "A").unwrap()["warehouse"], "HAM-1");
        let events = app.all_events().await;
        assert_eq!(events.iter().filter(|e| e["type"] == "alert_rule.updated").count(), 3);
    })
    .await;
}

#[tokio::test]
async fn a_rescan_after_a_default_rule_change_is_bounded_per_run_and_resumes() {
    // Through the Rust API with no server, so no worker runs the check beside the test.
    for backend in testkit::backends() {
        let database = testkit::TestDatabase::create(backend).await;
        let db = database.connect().await;
        testkit::seed_warehouse(&db, "BER-1", 10).await;
        let now = kernel::SystemClock.now();
        let mut tx = db.begin().await.unwrap();
        for sku in ["A", "B", "C", "D", "E"] {
            let sku = kernel::SkuCode::parse(sku).unwrap();
            let item =
                warehouse::item::NewItem { sku: sku.clone(), name: "x".into(), weight_grams: None, track_lots: false };
            warehouse::item::item_create(&mut tx, item, now).await.unwrap();
            let line = warehouse::receipt::ReceiptLine {
                sku,
                quantity: kernel::Quantity::new(1).unwrap(),
                lot: None,
                expires_on: None,
                bin: None,
            };
            let receipt = warehouse::receipt::Receipt {
                warehouse: kernel::WarehouseCode::parse("BER-1").unwrap(),
                reference: None,
                lines: vec![line],
            };
            warehouse::receipt::receive(&mut tx, receipt, now).await.unwrap();
        }
        let spec = warehouse::alert::RuleSpec { low_stock_units: Some(1), ..Default::default() };
        warehouse::alert::rule_put(&mut tx, None, None, spec, now).await.unwrap();
        tx.commit().await.unwrap();

        let mut runs = Vec::new();
        for _ in 0..4 {
            runs.push(warehouse::alert::check_rule_changes(&db, now, 2).await.unwrap());
        }
        assert_eq!(runs, [2, 2, 1, 0], "[{backend:?}] five levels, two a run, then done");
        let open = warehouse::alert::alerts_list(db.reader(), Some("open"), None, 100).await.unwrap();
        let mut skus: Vec<&str> =
            open.iter().filter(|a| a.kind == "low_stock").filter_map(|a| a.sku.as_deref()).collect();
        skus.sort();
        assert_eq!(skus, ["A", "B", "C", "D", "E"], "[{backend:?}] every level is at the threshold");
        db.close().await;
        database.drop_database().await;
    }
}
