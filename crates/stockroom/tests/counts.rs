//! Cycle counts over HTTP on every backend: blind counting, recounts, movements during the
//! count, approval as `count` movements.

use serde_json::json;
use testkit::each_backend;

#[tokio::test]
async fn a_cycle_count_applies_variances_measured_when_counted_and_asks_for_recounts() {
    each_backend(|app| async move {
        app.create_item("X").await;
        app.create_warehouse("BER-1", 10).await;
        app.post("/v1/warehouses/BER-1/bins", json!({"code": "A-1", "zone": "A", "capacity_units": 10}))
            .await
            .expect(201);
        app.post("/v1/warehouses/BER-1/bins", json!({"code": "B-1", "zone": "B", "capacity_units": 5}))
            .await
            .expect(201);
        app.post("/v1/receipts", json!({"warehouse": "BER-1", "lines": [{"sku": "X", "quantity": 10, "bin": "A-1"}]}))
            .await
            .expect(201);
        app.post("/v1/receipts", json!({"warehouse": "BER-1", "lines": [{"sku": "X", "quantity": 5, "bin": "B-1"}]}))
            .await
            .expect(201);
        let unbinned = app
            .post("/v1/receipts", json!({"warehouse": "BER-1", "lines": [{"sku": "X", "quantity": 3}]}))
            .await
            .expect(201);
        assert_eq!(unbinned["lines"][0]["bin"], serde_json::Value::Null, "no bin has room");

        let count =
            app.post("/v1/counts", json!({"warehouse": "BER-1", "recount_threshold_units": 1})).await.expect(201);
        let id = count["id"].as_str().unwrap().to_owned();
        let places: Vec<(serde_json::Value, serde_json::Value)> =
            count["lines"].as_array().unwrap().iter().map(|l| (l["bin"].clone(), l["sku"].clone())).collect();
        assert_eq!(places, [(json!(null), json!("X")), (json!("A-1"), json!("X")), (json!("B-1"), json!("X"))]);
        assert!(count["lines"][0].get("expected").is_none(), "counters count blind: {count}");

        let submitted = app
            .post(
                &format!("/v1/counts/{id}/lines"),
                json!({"lines": [{"bin": "A-1", "sku": "X", "counted": 9}, {"bin": "B-1", "sku": "X", "counted": 8},
                                 {"sku": "X", "counted": 3}]}),
            )
            .await
            .expect(200);
        let recount: Vec<bool> =
            submitted["lines"].as_array().unwrap().iter().map(|l| l["needs_recount"].as_bool().unwrap()).collect();
        assert_eq!(recount, [false, false, true], "B-1 is 3 off with a threshold of 1");
        app.post(&format!("/v1/counts/{id}/approve"), json!({})).await.expect_problem(409, "invalid_state");

        // Stock moves while the count is open: a shipment of 2 from the preferred place.
        let r = app.post("/v1/reservations", json!({"lines": [{"sku": "X", "quantity": 2}]})).await.expect(201);
        let rid = r["id"].as_str().unwrap();
        app.post(&format!("/v1/reservations/{rid}/confirm"), json!({})).await.expect(200);
        app.post(&format!("/v1/reservations/{rid}/fulfill"), json!({})).await.expect(200);
        assert_eq!(app.stock("X").await["on_hand"], 16);

        // The recount confirms 8: accepted.
        let recounted = app
            .post(&format!("/v1/counts/{id}/lines"), json!({"lines": [{"bin": "B-1", "sku": "X", "counted": 8}]}))
            .await
            .expect(200);
        assert!(recounted["lines"].as_array().unwrap().iter().all(|l| l["needs_recount"] == false), "{recounted}");
        let approved = app.post(&format!("/v1/counts/{id}/approve"), json!({})).await.expect(200);
        assert_eq!(approved["status"], "approved");
        let variances: Vec<i64> =
            approved["lines"].as_array().unwrap().iter().map(|l| l["variance"].as_i64().unwrap()).collect();
        assert_eq!(variances, [0, -1, 3]);
        // 16 after the shipment, plus the net variance of +2: the shipment is not mistaken for variance.
        assert_eq!(app.stock("X").await["on_hand"], 18);
        let movements = app.get("/v1/movements?sku=X").await.expect(200);
        let last = movements["items"].as_array().unwrap().last().unwrap().clone();
        assert_eq!((last["kind"].as_str(), last["on_hand_delta"].as_i64()), (Some("count"), Some(2)));
        app.post(&format!("/v1/counts/{id}/approve"), json!({})).await.expect_problem(409, "invalid_state");
        app.post(&format!("/v1/counts/{id}/lines"), json!({"lines": [{"sku": "X", "counted": 1}]}))
            .await
            .expect_problem(409, "invalid_state");
        app.reconcile().await;
    })
    .await;
}

#[tokio::test]
async fn a_count_of_one_zone_lists_only_its_bins_and_can_be_cancelled() {
    each_backend(|app| async move {
        app.create_item("X").await;
        app.create_warehouse("BER-1", 10).await;
        app.post("/v1/warehouses/BER-1/bins", json!({"code": "A-1", "zone": "A"})).await.expect(201);
        app.post("/v1/warehouses/BER-1/bins", json!({"code": "B-1", "zone": "B"})).await.expect(201);
        app.post("/v1/receipts", json!({"warehouse": "BER-1", "lines": [{"sku": "X", "quantity": 4, "bin": "A-1"}]}))
            .await
            .expect(201);
        app.post("/v1/receipts", json!({"warehouse": "BER-1", "lines": [{"sku": "X", "quantity": 4, "bin": "B-1"}]}))
            .await
            .expect(201);
        let count = app.post("/v1/counts", json!({"warehouse": "BER-1", "zone": "B"})).await.expect(201);
        assert_eq!(count["lines"], json!([{"bin": "B-1", "sku": "X", "counted": null, "needs_recount": false}]));
        let id = count["id"].as_str().unwrap();
        app.post(&format!("/v1/counts/{id}/lines"), json!({"lines": [{"bin": "NOPE", "sku": "X", "counted": 1}]}))
            .await
            .expect_problem(422, "validation_failed");
        app.post(&format!("/v1/counts/{id}/approve"), json!({})).await.expect_problem(409, "invalid_state");
        assert_eq!(app.post(&format!("/v1/counts/{id}/cancel"), json!({})).await.expect(200)["status"], "cancelled");
        app.get("/v1/counts/cnt_nope").await.expect_problem(404, "not_found");
        app.post("/v1/counts", json!({"warehouse": "NOPE"})).await.expect_problem(422, "validation_failed");
        assert_eq!(app.stock("X").await["on_hand"], 8);
    })
    .await;
}

#[tokio::test]
async fn counts_are_listed_by_warehouse_and_status_oldest_first() {
    each_backend(|app| async move {
        app.create_item("X").await;
        for code in ["BER-1", "MUC-1"] {
            app.create_warehouse(code, 10).await;
            app.receive(code, "X", 2).await;
        }
        let first = app.post("/v1/counts", json!({"warehouse": "BER-1"})).await.expect(201);
        let second = app.post("/v1/counts", json!({"warehouse": "MUC-1"})).await.expect(201);
        let first_id = first["id"].as_str().unwrap();
        let cancelled = app.post(&format!("/v1/counts/{first_id}/cancel"), json!(null)).await.expect(200);
        let all = app.get("/v1/counts").await.expect(200);
        assert_eq!(all["items"], json!([cancelled, second]), "{all}");
        let open = app.get("/v1/counts?status=open").await.expect(200);
        assert_eq!(open["items"], json!([second]), "{open}");
        assert_eq!(app.get("/v1/counts?warehouse=BER-1").await.expect(200)["items"], json!([cancelled]));
        let page = app.get("/v1/counts?limit=1").await.expect(200);
        let next = page["next"].as_str().unwrap();
        assert_eq!(app.get(&format!("/v1/counts?limit=1&next={next}")).await.expect(200)["items"], json!([second]));
        let bad = app.get("/v1/counts?status=done&warehouse=NOPE").await.expect_problem(422, "validation_failed");
        let fields: Vec<&str> =
            bad["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
        assert_eq!(fields, ["status", "warehouse"], "{bad}");
    })
    .await;
}

#[tokio::test]
async fn a_count_below_what_is_held_is_recorded_and_cuts_the_newest_unpaid_holds_first() {
    each_backend(|app| async move {
        app.create_item("X").await;
        app.create_warehouse("BER-1", 10).await;
        app.receive("BER-1", "X", 10).await;
        let hold = |reference: &'static str, quantity: i64| {
            let app = &app;
            async move {
                let body = json!({"reference": reference, "lines": [{"sku": "X", "quantity": quantity, "warehouse": "BER-1"}]});
                app.post("/v1/reservations", body).await.expect(201)["id"].as_str().unwrap().to_owned()
            }
        };
        let older_cart = hold("cart-1", 3).await;
        let paid = hold("order-1", 4).await;
        app.post(&format!("/v1/reservations/{paid}/confirm"), json!({})).await.expect(200);
        let newer_cart = hold("cart-2", 2).await;
        assert_eq!(app.stock("X").await["reserved"], 9);

        // The shelf has 5: four units fewer than are held.
        let open = json!({"warehouse": "BER-1", "recount_threshold_units": 100});
        let count = app.post("/v1/counts", open.clone()).await.expect(201);
        let id = count["id"].as_str().unwrap().to_owned();
        app.post(&format!("/v1/counts/{id}/lines"), json!({"lines": [{"sku": "X", "counted": 5}]})).await.expect(200);
        let approved = app.post(&format!("/v1/counts/{id}/approve"), json!({})).await.expect(200);
        assert_eq!(
            approved["holds_cut"],
            json!([
                {"reservation": newer_cart, "reference": "cart-2", "status": "active", "sku": "X", "warehouse": "BER-1", "quantity": 2},
                {"reservation": older_cart, "reference": "cart-1", "status": "active", "sku": "X", "warehouse": "BER-1", "quantity": 2},
            ]),
            "{approved}"
        );
        assert_eq!(app.get(&format!("/v1/counts/{id}")).await.expect(200), approved);
        let stock = app.stock("X").await;
        assert_eq!((stock["on_hand"].as_i64(), stock["reserved"].as_i64()), (Some(5), Some(5)), "{stock}");
        assert_eq!(app.get(&format!("/v1/reservations/{newer_cart}")).await.expect(200)["status"], "released");
        let older = app.get(&format!("/v1/reservations/{older_cart}")).await.expect(200);
        assert_eq!((older["status"].as_str(), older["lines"][0]["quantity"].as_i64()), (Some("active"), Some(1)));
        let kept = app.get(&format!("/v1/reservations/{paid}")).await.expect(200);
        assert_eq!((kept["status"].as_str(), kept["lines"][0]["quantity"].as_i64()), (Some("confirmed"), Some(4)));

        // The cut holds are named in an alert, and the ledger shows them before the count.
        let alerts = app.get("/v1/alerts").await.expect(200);
        let cut_alert = alerts["items"].as_array().unwrap().iter().find(|a| a["kind"] == "holds_cut").cloned();
        let cut_alert = cut_alert.unwrap_or_else(|| panic!("no holds_cut alert: {alerts}"));
        assert_eq!((cut_alert["warehouse"].as_str(), cut_alert["sku"].as_str()), (Some("BER-1"), Some("X")));
        assert_eq!(cut_alert["detail"]["count"], id.as_str());
        assert_eq!(cut_alert["detail"]["missing_units"], 5);
        assert_eq!(cut_alert["detail"]["units_cut"], 4);
        assert_eq!(cut_alert["detail"]["reservations"], approved["holds_cut"]);
        let movements = app.get("/v1/movements?sku=X").await.expect(200);
        let kinds: Vec<&str> =
            movements["items"].as_array().unwrap().iter().map(|m| m["kind"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["receipt", "reserve", "reserve", "reserve", "release", "release", "count"]);
        let events = app.get("/v1/events?type=reservation.released,reservation.reduced,alert.raised").await.expect(200);
        let types: Vec<&str> =
            events["items"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(types, ["reservation.released", "reservation.reduced", "alert.raised"], "{events}");
        app.reconcile().await;

        // Nothing on the shelf: the paid hold is cut too, last.
        let count = app.post("/v1/counts", open).await.expect(201);
        let id = count["id"].as_str().unwrap().to_owned();
        app.post(&format!("/v1/counts/{id}/lines"), json!({"lines": [{"sku": "X", "counted": 0}]})).await.expect(200);
        let approved = app.post(&format!("/v1/counts/{id}/approve"), json!({})).await.expect(200);
        let cut: Vec<(&str, i64)> = approved["holds_cut"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c["reservation"].as_str().unwrap(), c["quantity"].as_i64().unwrap()))
            .collect();
        assert_eq!(cut, [(older_cart.as_str(), 1), (paid.as_str(), 4)]);
        let stock = app.stock("X").await;
        assert_eq!((stock["on_hand"].as_i64(), stock["reserved"].as_i64()), (Some(0), Some(0)), "{stock}");
        assert_eq!(app.get(&format!("/v1/reservations/{paid}")).await.expect(200)["status"], "released");
        app.reconcile().await;
    })
    .await;
}
