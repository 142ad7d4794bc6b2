//! Items, warehouses, stock changes, stock levels, the ledger, events and reconciliation,
//! over HTTP against the real app, on every backend.

use serde_json::{Value, json};
use testkit::{TestApp, each_backend};

async fn two_warehouses_with_stock(app: &TestApp, sku: &str) {
    app.create_item(sku).await;
    app.create_warehouse("BER-1", 10).await;
    app.create_warehouse("MUC-1", 20).await;
    app.receive("BER-1", sku, 10).await;
    app.receive("MUC-1", sku, 20).await;
}

#[tokio::test]
async fn health_ready_metrics_and_openapi_need_no_key() {
    each_backend(|app| async move {
        let health = app.request(reqwest::Method::GET, "/health", None, None, &[]).await.expect(200);
        assert_eq!(health, json!({"status": "ok"}));
        app.request(reqwest::Method::GET, "/ready", None, None, &[]).await.expect(200);
        let metrics = app.request(reqwest::Method::GET, "/metrics", None, None, &[]).await;
        assert_eq!(metrics.status, 200);
        let doc = app.request(reqwest::Method::GET, "/openapi.json", None, None, &[]).await.expect(200);
        for path in [
            "/v1/items",
            "/v1/items/{sku}",
            "/v1/warehouses",
            "/v1/warehouses/{code}",
            "/v1/receipts",
            "/v1/adjustments",
            "/v1/transfers",
            "/v1/stock",
            "/v1/stock/{sku}",
            "/v1/reservations",
            "/v1/reservations/{id}",
            "/v1/reservations/{id}/confirm",
            "/v1/reservations/{id}/release",
            "/v1/reservations/{id}/fulfill",
            "/v1/movements",
            "/v1/events",
            "/v1/reconciliation",
            "/v1/bulk/adjustments",
            "/v1/alert-rules",
            "/v1/alert-rules/default",
            "/v1/alert-rules/items/{sku}",
            "/v1/alert-rules/items/{sku}/warehouses/{code}",
            "/v1/alerts",
            "/v1/alerts/{id}/acknowledge",
            "/v1/counts",
            "/v1/counts/{id}",
            "/v1/counts/{id}/lines",
            "/v1/counts/{id}/approve",
            "/v1/counts/{id}/cancel",
            "/v1/warehouses/{code}/bins",
            "/v1/warehouses/{code}/bin-moves",
            "/v1/stock/{sku}/bins",
            "/v1/stock/{sku}/lots",
            "/v1/stock/{sku}/lots/{lot}/quarantine",
            "/v1/stock/{sku}/lots/{lot}/release",
            "/v1/events/head",
            "/v1/reservations/{id}/extend",
        ] {
            assert!(doc["paths"][path].is_object(), "OpenAPI lacks {path}");
        }
    })
    .await;
}

#[tokio::test]
async fn items_are_created_once_and_read_back() {
    each_backend(|app| async move {
        let body = json!({"sku": "TSHIRT-RED-M", "name": "T-shirt", "weight_grams": 180, "track_lots": false});
        let created = app.post("/v1/items", body.clone()).await.expect(201);
        assert_eq!(created["sku"], "TSHIRT-RED-M");
        assert_eq!(created["weight_grams"], 180);
        let read = app.get("/v1/items/TSHIRT-RED-M").await.expect(200);
        assert_eq!(read, created);
        app.post("/v1/items", body).await.expect_problem(409, "conflict");
        app.get("/v1/items/NOPE").await.expect_problem(404, "not_found");
    })
    .await;
}

#[tokio::test]
async fn warehouses_are_created_listed_and_patched() {
    each_backend(|app| async move {
        let created = app
            .post(
                "/v1/warehouses",
                json!({"code": "BER-1", "name": "Berlin", "country": "DE", "latitude": 52.52, "longitude": 13.40,
                       "priority": 10, "active": true}),
            )
            .await
            .expect(201);
        assert_eq!(created["priority"], 10);
        assert_eq!(created["latitude"], 52.52);
        let defaulted = app.post("/v1/warehouses", json!({"code": "MUC-1", "name": "Munich"})).await.expect(201);
        assert_eq!(defaulted["priority"], 100);
        assert_eq!(defaulted["active"], true);
        app.post("/v1/warehouses", json!({"code": "BER-1", "name": "again"})).await.expect_problem(409, "conflict");

        let list = app.get("/v1/warehouses?limit=1").await.expect(200);
        assert_eq!(list["items"].as_array().unwrap().len(), 1);
        assert_eq!(list["items"][0]["code"], "BER-1");
        let next = list["next"].as_str().expect("a full page has a next cursor");
        let rest = app.get(&format!("/v1/warehouses?limit=1&next={next}")).await.expect(200);
        assert_eq!(rest["items"][0]["code"], "MUC-1");

        let patched = app.patch("/v1/warehouses/MUC-1", json!({"priority": 5, "active": false})).await.expect(200);
        assert_eq!(patched["priority"], 5);
        assert_eq!(patched["active"], false);
        assert_eq!(patched["name"], "Munich");
        assert_eq!(app.get("/v1/warehouses/MUC-1").await.expect(200)["priority"], 5);
        app.patch("/v1/warehouses/NOPE", json!({"priority": 5})).await.expect_problem(404, "not_found");
    })
    .await;
}

#[tokio::test]
async fn receipts_adjustments_and_transfers_change_stock_and_write_the_ledger() {
    each_backend(|app| async move {
        two_warehouses_with_stock(&app, "SKU-1").await;
        let stock = app.stock("SKU-1").await;
        assert_eq!((stock["on_hand"].as_i64(), stock["available"].as_i64()), (Some(30), Some(30)));

        let receipt = app
            .post(
                "/v1/receipts",
                json!({"warehouse": "BER-1", "reference": "PO-1",
                       "lines": [{"sku": "SKU-1", "quantity": 2}, {"sku": "SKU-1", "quantity": 3}]}),
            )
            .await
            .expect(201);
        assert!(receipt["id"].as_str().is_some());
        assert_eq!(receipt["lines"].as_array().unwrap().len(), 2);

        let adjusted = app
            .post("/v1/adjustments", json!({"warehouse": "BER-1", "sku": "SKU-1", "delta": -3, "reason": "damaged"}))
            .await
            .expect(201);
        assert_eq!(adjusted["on_hand"], 12);
        let counted =
            app.post("/v1/adjustments", json!({"warehouse": "MUC-1", "sku": "SKU-1", "counted": 42})).await.expect(201);
        assert_eq!((counted["on_hand"].as_i64(), counted["on_hand_delta"].as_i64()), (Some(42), Some(22)));

        app.post("/v1/transfers", json!({"from": "MUC-1", "to": "BER-1", "lines": [{"sku": "SKU-1", "quantity": 5}]}))
            .await
            .expect(201);
        let short = app
            .post(
                "/v1/transfers",
                json!({"from": "MUC-1", "to": "BER-1", "lines": [{"sku": "SKU-1", "quantity": 500}]}),
            )
            .await
            .expect_problem(409, "insufficient_stock");
        assert_eq!(short["lines"][0]["available"], 37);

        let stock = app.stock("SKU-1").await;
        let at = |code: &str| {
            stock["warehouses"].as_array().unwrap().iter().find(|w| w["warehouse"] == code).unwrap()["on_hand"]
                .as_i64()
                .unwrap()
        };
        assert_eq!((at("BER-1"), at("MUC-1")), (17, 37));

        let movements = app.get("/v1/movements?sku=SKU-1&warehouse=BER-1").await.expect(200);
        let kinds: Vec<&str> =
            movements["items"].as_array().unwrap().iter().map(|m| m["kind"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["receipt", "receipt", "adjustment", "transfer_in"]);
        let all = app.get("/v1/movements?sku=SKU-1").await.expect(200);
        let seqs: Vec<i64> = all["items"].as_array().unwrap().iter().map(|m| m["seq"].as_i64().unwrap()).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "movements oldest first: {seqs:?}");
        let kinds: Vec<&str> = all["items"].as_array().unwrap().iter().map(|m| m["kind"].as_str().unwrap()).collect();
        assert!(kinds.contains(&"count") && kinds.contains(&"transfer_out"));
        app.reconcile().await;
    })
    .await;
}

#[tokio::test]
async fn an_adjustment_below_reserved_is_refused_and_changes_nothing() {
    each_backend(|app| async move {
        two_warehouses_with_stock(&app, "SKU-1").await;
        app.post("/v1/reservations", json!({"lines": [{"sku": "SKU-1", "quantity": 8, "warehouse": "BER-1"}]}))
            .await
            .expect(201);
        let before = app.stock("SKU-1").await;
        app.post("/v1/adjustments", json!({"warehouse": "BER-1", "sku": "SKU-1", "delta": -3}))
            .await
            .expect_problem(409, "insufficient_stock");
        app.post("/v1/adjustments", json!({"warehouse": "BER-1", "sku": "SKU-1", "counted": 7}))
            .await
            .expect_problem(409, "insufficient_stock");
        assert_eq!(app.stock("SKU-1").await, before);
        app.post("/v1/adjustments", json!({"warehouse": "BER-1", "sku": "SKU-1", "counted": 8})).await.expect(201);
        app.reconcile().await;
    })
    .await;
}

#[tokio::test]
async fn stock_totals_count_active_warehouses_only_and_batches_answer_in_one_call() {
    each_backend(|app| async move {
        two_warehouses_with_stock(&app, "A").await;
        app.create_item("B").await;
        app.receive("MUC-1", "B", 4).await;
        app.create_item("C").await;
        app.patch("/v1/warehouses/MUC-1", json!({"active": false})).await.expect(200);

        let a = app.stock("A").await;
        assert_eq!(a["on_hand"], 10, "MUC-1 is inactive: {a}");
        assert_eq!(a["warehouses"].as_array().unwrap().len(), 2);

        let batch = app.get("/v1/stock?skus=C,A,B,UNKNOWN").await.expect(200);
        let items = batch["items"].as_array().unwrap();
        let skus: Vec<&str> = items.iter().map(|i| i["sku"].as_str().unwrap()).collect();
        assert_eq!(skus, ["C", "A", "B"]);
        assert_eq!(items[0]["on_hand"], 0);
        assert_eq!(items[2]["on_hand"], 0);

        let only = app.get("/v1/stock?skus=A&warehouse=MUC-1").await.expect(200);
        assert_eq!(only["items"][0]["warehouses"].as_array().unwrap().len(), 1);
        app.get("/v1/stock/UNKNOWN").await.expect_problem(404, "not_found");
    })
    .await;
}

#[tokio::test]
async fn the_event_feed_is_gapless_and_counts_per_aggregate() {
    each_backend(|app| async move {
        two_warehouses_with_stock(&app, "SKU-1").await;
        app.post("/v1/reservations", json!({"lines": [{"sku": "SKU-1", "quantity": 15}]})).await.expect(201);
        let events = app.all_events().await;
        let seqs: Vec<i64> = events.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
        assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>(), "seq has no gaps");
        let mut per_aggregate: std::collections::HashMap<String, Vec<i64>> = Default::default();
        for e in &events {
            per_aggregate
                .entry(e["aggregate"].as_str().unwrap().to_owned())
                .or_default()
                .push(e["aggregate_seq"].as_i64().unwrap());
        }
        for (aggregate, seqs) in per_aggregate {
            assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>(), "{aggregate}");
        }
        let stock_events: Vec<&Value> = events.iter().filter(|e| e["type"] == "stock.changed").collect();
        assert_eq!(stock_events.len(), 4, "two receipts and a hold split over two warehouses");
        assert!(events.iter().any(|e| e["type"] == "reservation.created"));

        let page = app.get("/v1/events?after=2&limit=3").await.expect(200);
        assert_eq!(page["items"][0]["seq"], 3);
        assert_eq!(page["items"].as_array().unwrap().len(), 3);
        assert_eq!(page["next"], "5");
    })
    .await;
}

#[tokio::test]
async fn the_ledger_pages_with_an_opaque_cursor_and_sums_to_the_levels() {
    each_backend(|app| async move {
        app.create_item("SKU-1").await;
        app.create_warehouse("BER-1", 10).await;
        for q in 1..=7 {
            app.receive("BER-1", "SKU-1", q).await;
        }
        let mut next: Option<String> = None;
        let mut total = 0;
        let mut pages = 0;
        loop {
            let path = match &next {
                Some(cursor) => format!("/v1/movements?sku=SKU-1&limit=3&next={cursor}"),
                None => "/v1/movements?sku=SKU-1&limit=3".to_owned(),
            };
            let page = app.get(&path).await.expect(200);
            pages += 1;
            total +=
                page["items"].as_array().unwrap().iter().map(|m| m["on_hand_delta"].as_i64().unwrap()).sum::<i64>();
            match page["next"].as_str() {
                Some(cursor) => next = Some(cursor.to_owned()),
                None => break,
            }
        }
        assert_eq!(pages, 3);
        assert_eq!(total, 28);
        assert_eq!(app.stock("SKU-1").await["on_hand"], 28);
        let report = app.get("/v1/reconciliation").await.expect(200);
        assert_eq!(report["checked"], 1);
        app.assert_reconciled(&report);
    })
    .await;
}

#[tokio::test]
async fn lot_tracked_items_need_a_lot_and_an_expiry_on_receipt() {
    each_backend(|app| async move {
        app.post("/v1/items", json!({"sku": "MILK", "name": "Milk", "track_lots": true})).await.expect(201);
        app.create_warehouse("BER-1", 10).await;
        let refused = app
            .post("/v1/receipts", json!({"warehouse": "BER-1", "lines": [{"sku": "MILK", "quantity": 5}]}))
            .await
            .expect_problem(422, "validation_failed");
        assert_eq!(refused["errors"][0]["field"], "lines[0].lot");
        app.post(
            "/v1/receipts",
            json!({"warehouse": "BER-1", "lines": [{"sku": "MILK", "quantity": 5, "lot": "L1", "expires_on": "2027-03-01"}]}),
        )
        .await
        .expect(201);
        assert_eq!(app.stock("MILK").await["on_hand"], 5);
    })
    .await;
}

#[tokio::test]
async fn bulk_adjustments_answer_per_line_and_apply_only_the_good_ones() {
    each_backend(|app| async move {
        two_warehouses_with_stock(&app, "SKU-1").await;
        let reply = app
            .post(
                "/v1/bulk/adjustments",
                json!({"lines": [
                    {"warehouse": "BER-1", "sku": "SKU-1", "delta": -2, "reason": "damaged"},
                    {"warehouse": "MUC-1", "sku": "SKU-1", "counted": 25},
                    {"warehouse": "BER-1", "sku": "SKU-1", "delta": -100},
                    {"warehouse": "BER-1", "sku": "SKU-1", "delta": "three"},
                    {"warehouse": "BER-1", "sku": "NOPE", "delta": 1},
                    {"warehouse": "BER-1", "sku": "SKU-1", "delta": 0}
                ]}),
            )
            .await
            .expect(200);
        let statuses: Vec<i64> =
            reply["results"].as_array().unwrap().iter().map(|r| r["status"].as_i64().unwrap()).collect();
        assert_eq!(statuses, [201, 201, 409, 422, 422, 422], "{reply}");
        assert_eq!((reply["applied"].as_i64(), reply["refused"].as_i64()), (Some(2), Some(4)));
        assert_eq!(reply["results"][2]["problem"]["code"], "insufficient_stock");
        assert_eq!(reply["results"][3]["problem"]["errors"][0]["field"], "lines[3].delta");
        assert_eq!(reply["results"][4]["problem"]["errors"][0]["field"], "lines[4].sku");
        let stock = app.stock("SKU-1").await;
        assert_eq!(stock["on_hand"], 33, "8 in BER-1 and 25 in MUC-1: {stock}");
        app.post("/v1/bulk/adjustments", json!({"lines": []})).await.expect_problem(422, "validation_failed");
        app.reconcile().await;
    })
    .await;
}

#[tokio::test]
async fn unknown_body_fields_are_refused_naming_them_and_change_nothing() {
    each_backend(|app| async move {
        two_warehouses_with_stock(&app, "SKU-1").await;
        let events_before = app.all_events().await.len();
        let cases = [
            ("/v1/warehouses/BER-1", json!({"capacity": 5}), "capacity"),
            ("/v1/items", json!({"sku": "SKU-2", "name": "x", "weight": 3}), "weight"),
            (
                "/v1/reservations",
                json!({"lines": [{"sku": "SKU-1", "quantity": 1, "warehuose": "BER-1"}]}),
                "lines[0].warehuose",
            ),
            (
                "/v1/receipts",
                json!({"warehouse": "BER-1", "lines": [{"sku": "SKU-1", "quantity": 1}], "note": "x"}),
                "note",
            ),
        ];
        for (path, body, field) in cases {
            let reply = if path.starts_with("/v1/warehouses/") {
                app.patch(path, body).await
            } else {
                app.post(path, body).await
            };
            let problem = reply.expect_problem(422, "validation_failed");
            assert_eq!(problem["errors"][0]["field"], field, "[{}] {path}: {problem}", app.label());
        }
        assert_eq!(app.all_events().await.len(), events_before, "[{}] nothing changed", app.label());
        assert_eq!(app.stock("SKU-1").await["reserved"], 0);
        app.get("/v1/items/SKU-2").await.expect_problem(404, "not_found");
    })
    .await;
}

#[tokio::test]
async fn a_two_step_transfer_is_in_neither_warehouse_in_transit_and_shows_as_incoming() {
    each_backend(|app| async move {
        two_warehouses_with_stock(&app, "TEE").await;
        let before = app.stock("TEE").await;
        let figure = |stock: &Value, warehouse: &str, name: &str| {
            stock["warehouses"]
                .as_array()
                .unwrap()
                .iter()
                .find(|w| w["warehouse"] == warehouse)
                .map_or(0, |w| w[name].as_i64().unwrap())
        };
        let body =
            json!({"from": "BER-1", "to": "MUC-1", "lines": [{"sku": "TEE", "quantity": 4}], "in_transit": true});
        let shipped = app.post("/v1/transfers", body).await.expect(201);
        assert_eq!(
            (shipped["status"].as_str(), shipped["received_at"].as_str()),
            (Some("in_transit"), None),
            "{shipped}"
        );
        let id = shipped["id"].as_str().unwrap().to_owned();
        let stock = app.stock("TEE").await;
        assert_eq!(figure(&stock, "BER-1", "on_hand"), figure(&before, "BER-1", "on_hand") - 4, "{stock}");
        assert_eq!(figure(&stock, "MUC-1", "on_hand"), figure(&before, "MUC-1", "on_hand"), "{stock}");
        assert_eq!((figure(&stock, "MUC-1", "incoming"), stock["incoming"].as_i64()), (4, Some(4)), "{stock}");
        assert_eq!(stock["on_hand"], before["on_hand"].as_i64().unwrap() - 4, "in neither warehouse: {stock}");
        assert_eq!(app.get(&format!("/v1/transfers/{id}")).await.expect(200), shipped);
        let in_transit = app.get("/v1/transfers?status=in_transit&to=MUC-1").await.expect(200);
        assert_eq!(in_transit["items"].as_array().unwrap().len(), 1, "{in_transit}");
        let bad = app.get("/v1/transfers?status=lost&from=NOPE").await.expect_problem(422, "validation_failed");
        let fields: Vec<&str> =
            bad["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
        assert_eq!(fields, ["status", "from"], "{bad}");
        app.reconcile().await;

        let received = app.post(&format!("/v1/transfers/{id}/receive"), json!(null)).await.expect(200);
        assert_eq!(received["status"], "received", "{received}");
        assert!(received["received_at"].is_string(), "{received}");
        let stock = app.stock("TEE").await;
        assert_eq!(figure(&stock, "MUC-1", "on_hand"), figure(&before, "MUC-1", "on_hand") + 4, "{stock}");
        assert_eq!(stock["incoming"], 0, "{stock}");
        assert_eq!(stock["on_hand"], before["on_hand"], "{stock}");
        app.post(&format!("/v1/transfers/{id}/receive"), json!(null)).await.expect_problem(409, "invalid_state");
        app.post("/v1/transfers/trf_nope/receive", json!(null)).await.expect_problem(404, "not_found");
        app.get("/v1/transfers/trf_nope").await.expect_problem(404, "not_found");
        let movements = app.get("/v1/movements?sku=TEE&warehouse=MUC-1").await.expect(200);
        let last = movements["items"].as_array().unwrap().last().cloned().unwrap();
        assert_eq!((last["kind"].as_str(), last["on_hand_delta"].as_i64()), (Some("transfer_in"), Some(4)), "{last}");

        // A one-step transfer is recorded too, received at once.
        let body = json!({"from": "MUC-1", "to": "BER-1", "lines": [{"sku": "TEE", "quantity": 1}]});
        let moved = app.post("/v1/transfers", body).await.expect(201);
        assert_eq!(moved["status"], "received", "{moved}");
        let all = app.get("/v1/transfers?limit=1").await.expect(200);
        assert_eq!(all["items"][0]["id"].as_str(), Some(id.as_str()), "oldest first: {all}");
        let next = all["next"].as_str().unwrap();
        let rest = app.get(&format!("/v1/transfers?limit=1&next={next}")).await.expect(200);
        assert_eq!(rest["items"][0], moved, "{rest}");
        app.reconcile().await;
    })
    .await;
}

#[tokio::test]
async fn lots_travel_with_a_two_step_transfer_and_receipts_can_be_looked_up() {
    each_backend(|app| async move {
        for code in ["BER-1", "MUC-1"] {
            app.create_warehouse(code, 10).await;
        }
        app.post("/v1/items", json!({"sku": "MILK", "name": "Milk", "track_lots": true})).await.expect(201);
        let lines = json!([{"sku": "MILK", "quantity": 3, "lot": "L-1", "expires_on": "2099-01-01"}]);
        let receipt = app.post("/v1/receipts", json!({"warehouse": "BER-1", "lines": lines})).await.expect(201);
        let rid = receipt["id"].as_str().unwrap();
        assert_eq!(app.get(&format!("/v1/receipts/{rid}")).await.expect(200), receipt);
        let listed = app.get("/v1/receipts?warehouse=BER-1").await.expect(200);
        assert_eq!(listed["items"], json!([receipt]), "{listed}");
        assert_eq!(app.get("/v1/receipts?warehouse=MUC-1").await.expect(200)["items"], json!([]));
        app.get("/v1/receipts/rcp_nope").await.expect_problem(404, "not_found");
        app.get("/v1/receipts?warehouse=NOPE").await.expect_problem(422, "validation_failed");

        let body =
            json!({"from": "BER-1", "to": "MUC-1", "lines": [{"sku": "MILK", "quantity": 2}], "in_transit": true});
        let shipped = app.post("/v1/transfers", body).await.expect(201);
        assert_eq!(shipped["lines"][0]["lots"], json!([{"lot": "L-1", "expires_on": "2099-01-01", "quantity": 2}]));
        let lots = app.get("/v1/stock/MILK/lots").await.expect(200);
        let on_hand: Vec<(&str, i64)> = lots["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| (l["warehouse"].as_str().unwrap(), l["on_hand"].as_i64().unwrap()))
            .collect();
        assert_eq!(on_hand, [("BER-1", 1)], "{lots}");
        app.reconcile().await;
        let id = shipped["id"].as_str().unwrap();
        app.post(&format!("/v1/transfers/{id}/receive"), json!(null)).await.expect(200);
        let lots = app.get("/v1/stock/MILK/lots").await.expect(200);
        let muc: Vec<&Value> = lots["items"].as_array().unwrap().iter().filter(|l| l["warehouse"] == "MUC-1").collect();
        assert_eq!(muc.len(), 1, "{lots}");
        assert_eq!(
            (muc[0]["lot"].as_str(), muc[0]["expires_on"].as_str(), muc[0]["on_hand"].as_i64()),
            (Some("L-1"), Some("2099-01-01"), Some(2))
        );
        app.reconcile().await;
    })
    .await;
}
