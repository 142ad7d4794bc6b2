//! Fulfilments of paid orders over HTTP, on every backend: one per warehouse an order is
//! allocated from, only a packed one ships, shipping consumes exactly its stock in the same
//! transaction, delivery follows, a cancelled order's fulfilments never ship.

use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use testkit::{TestApp, each_backend};

async fn shop(app: &TestApp) {
    for (code, lat, lon) in [("BER-1", 52.52, 13.40), ("MUC-1", 48.14, 11.58)] {
        app.post(
            "/v1/warehouses",
            json!({"code": code, "name": code, "priority": 10, "latitude": lat, "longitude": lon}),
        )
        .await
        .expect(201);
        app.put_json(
            &format!("/v1/warehouses/{code}/shipping-rates"),
            json!({"rates": [{"country": "DE", "currency": "EUR", "base": "4.90", "per_kg": "0.80"}]}),
        )
        .await
        .expect(200);
    }
    for sku in ["TEE", "MUG"] {
        app.post("/v1/items", json!({"sku": sku, "name": sku, "weight_grams": 200})).await.expect(201);
    }
    app.receive("BER-1", "TEE", 2).await;
    app.receive("MUC-1", "TEE", 3).await;
    app.receive("MUC-1", "MUG", 4).await;
    app.post(
        "/v1/channels",
        json!({"code": "web-de", "name": "Web DE", "currency": "EUR", "country": "DE", "warehouses": ["BER-1", "MUC-1"]}),
    )
    .await
    .expect(201);
    for sku in ["TEE", "MUG"] {
        let handle = sku.to_lowercase();
        app.post("/v1/products", json!({"handle": handle, "name": sku, "variants": [{"sku": sku}]})).await.expect(201);
        app.put_json(&format!("/v1/prices/{sku}"), json!({"channel": "web-de", "amount": "10.00"})).await.expect(200);
    }
    app.availability_caught_up().await;
}

/// Checks out `lines` and pays the order; answers the paid order.
async fn paid_order(app: &TestApp, key: &str, lines: &[(&str, i64)]) -> Value {
    let cart = app.post("/v1/carts", json!({"channel": "web-de", "customer": "c-1"})).await.expect(201);
    let cart = cart["id"].as_str().unwrap().to_owned();
    for (sku, quantity) in lines {
        app.post(&format!("/v1/carts/{cart}/lines"), json!({"sku": sku, "quantity": quantity})).await.expect(200);
    }
    let body = json!({"shipping_address": {"country": "DE", "latitude": 52.53, "longitude": 13.38}});
    let order =
        app.post_with(&format!("/v1/carts/{cart}/checkout"), body, &[("idempotency-key", key)]).await.expect(201);
    let id = order["id"].as_str().unwrap();
    let payment = json!({"provider": "stripe", "reference": format!("pi_{key}"), "amount": order["totals"]["total"], "status": "captured"});
    app.post(&format!("/v1/orders/{id}/payments"), payment).await.expect(200)
}

/// The order's fulfilments once the intake has taken all `count` of them.
async fn fulfillments_of(app: &TestApp, order: &str, count: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let page = app.get(&format!("/v1/fulfillments?order={order}")).await.expect(200);
        let items = page["items"].as_array().unwrap().clone();
        if items.len() >= count {
            assert_eq!(items.len(), count, "[{}] {page}", app.label());
            return items;
        }
        assert!(Instant::now() < deadline, "[{}] the intake took {} of {count} fulfilments", app.label(), items.len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the order's status follows its fulfilments to `status`.
async fn order_reaches(app: &TestApp, order: &str, status: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let now = app.get(&format!("/v1/orders/{order}")).await.expect(200);
        if now["status"] == status {
            return;
        }
        assert!(Instant::now() < deadline, "[{}] the order stayed {} instead of {status}", app.label(), now["status"]);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `(warehouse, sku) → units` of an order's allocations.
fn allocations(order: &Value) -> BTreeMap<(String, String), i64> {
    let mut by = BTreeMap::new();
    for line in order["lines"].as_array().unwrap() {
        for a in line["allocated"].as_array().unwrap() {
            let key = (a["warehouse"].as_str().unwrap().to_owned(), line["sku"].as_str().unwrap().to_owned());
            *by.entry(key).or_default() += a["quantity"].as_i64().unwrap();
        }
    }
    by
}

fn on_hand_in(stock: &Value, warehouse: &str) -> i64 {
    stock["warehouses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["warehouse"] == warehouse)
        .map_or(0, |w| w["on_hand"].as_i64().unwrap())
}

#[tokio::test]
async fn a_paid_order_gets_a_fulfilment_per_warehouse_and_shipping_consumes_exactly_its_stock() {
    each_backend(|app| async move {
        shop(&app).await;
        let order = paid_order(&app, "f-1", &[("TEE", 4), ("MUG", 1)]).await;
        let order_id = order["id"].as_str().unwrap();
        let allocated = allocations(&order);
        let warehouses: std::collections::BTreeSet<&String> = allocated.keys().map(|(w, _)| w).collect();
        assert_eq!(warehouses.len(), 2, "4 TEE come from both warehouses: {order}");
        let fulfillments = fulfillments_of(&app, order_id, warehouses.len()).await;
        for f in &fulfillments {
            assert_eq!((f["status"].as_str(), f["order"].as_str()), (Some("pending"), Some(order_id)), "{f}");
            for line in f["lines"].as_array().unwrap() {
                let key = (f["warehouse"].as_str().unwrap().to_owned(), line["sku"].as_str().unwrap().to_owned());
                assert_eq!(line["quantity"].as_i64(), allocated.get(&key).copied(), "{f}");
            }
        }

        let first = &fulfillments[0];
        let (id, warehouse) = (first["id"].as_str().unwrap(), first["warehouse"].as_str().unwrap());
        let ship = format!("/v1/fulfillments/{id}/ship");
        let tee_before = app.stock("TEE").await;
        app.post(&ship, json!({"carrier": "dhl", "tracking": "1"})).await.expect_problem(409, "invalid_state");
        for warehouse in &warehouses {
            app.pick_and_pack(warehouse).await;
        }
        assert_eq!(app.stock("TEE").await, tee_before, "picking and packing move no stock");
        // Refused requests change nothing.
        let bad =
            app.post(&ship, json!({"carrier": "", "tracking": ""})).await.expect_problem(422, "validation_failed");
        assert_eq!(bad["errors"].as_array().unwrap().len(), 2, "both fields named: {bad}");
        app.post(&ship, json!({"carrier": "dhl", "tracking": "1", "insured": true}))
            .await
            .expect_problem(422, "validation_failed");
        app.post(&format!("/v1/fulfillments/{id}/deliver"), json!({})).await.expect_problem(409, "invalid_state");
        app.post("/v1/fulfillments/ful_nope/ship", json!({"carrier": "dhl", "tracking": "1"}))
            .await
            .expect_problem(404, "not_found");
        assert_eq!(app.stock("TEE").await, tee_before);

        let shipped = app.post(&ship, json!({"carrier": "dhl", "tracking": "JJD1"})).await.expect(200);
        assert_eq!((shipped["status"].as_str(), shipped["tracking"].as_str()), (Some("shipped"), Some("JJD1")));
        assert!(shipped["shipped_at"].is_string(), "{shipped}");
        let tee_after = app.stock("TEE").await;
        let shipped_tee = allocated.get(&(warehouse.to_owned(), "TEE".to_owned())).copied().unwrap_or(0);
        assert_eq!(on_hand_in(&tee_after, warehouse), on_hand_in(&tee_before, warehouse) - shipped_tee, "{tee_after}");
        assert_eq!(
            tee_after["reserved"].as_i64(),
            Some(tee_before["reserved"].as_i64().unwrap() - shipped_tee),
            "the other warehouse's share stays held: {tee_after}"
        );
        app.post(&ship, json!({"carrier": "dhl", "tracking": "JJD1b"})).await.expect_problem(409, "invalid_state");

        let second = fulfillments[1]["id"].as_str().unwrap();
        app.post(&format!("/v1/fulfillments/{second}/ship"), json!({"carrier": "ups", "tracking": "1Z"}))
            .await
            .expect(200);
        for sku in ["TEE", "MUG"] {
            let stock = app.stock(sku).await;
            assert_eq!(stock["reserved"], 0, "everything the order held has shipped: {stock}");
        }
        assert_eq!(app.stock("TEE").await["on_hand"], 1);
        assert_eq!(app.stock("MUG").await["on_hand"], 3);

        order_reaches(&app, order_id, "fulfilled").await;
        let delivered = app.post(&format!("/v1/fulfillments/{id}/deliver"), json!({})).await.expect(200);
        assert_eq!(delivered["status"], "delivered");
        assert!(delivered["delivered_at"].is_string());
        assert_eq!(app.get(&format!("/v1/fulfillments/{id}")).await.expect(200), delivered);
        let listed = app.get("/v1/fulfillments?status=shipped").await.expect(200);
        let ids: Vec<&str> = listed["items"].as_array().unwrap().iter().map(|f| f["id"].as_str().unwrap()).collect();
        assert_eq!(ids, [second]);
        app.get("/v1/fulfillments?status=lost").await.expect_problem(422, "validation_failed");
        app.get("/v1/fulfillments?colour=red").await.expect_problem(422, "validation_failed");
        app.get("/v1/fulfillments/ful_nope").await.expect_problem(404, "not_found");

        assert_eq!(
            app.get(&format!("/v1/orders/{order_id}")).await.expect(200)["status"],
            "fulfilled",
            "one delivered of two"
        );
        app.post(&format!("/v1/fulfillments/{second}/deliver"), json!({})).await.expect(200);
        order_reaches(&app, order_id, "delivered").await;
        app.post(&format!("/v1/orders/{order_id}/cancel"), json!({})).await.expect_problem(409, "invalid_state");
        let events = app.all_events().await;
        for (kind, count) in
            [("fulfillment.shipped", 2), ("fulfillment.delivered", 2), ("order.fulfilled", 1), ("order.delivered", 1)]
        {
            assert_eq!(events.iter().filter(|e| e["type"] == kind).count(), count, "{kind}");
        }
        app.reconcile().await;
    })
    .await;
}

#[tokio::test]
async fn a_cancelled_order_s_fulfilments_are_cancelled_and_never_ship() {
    each_backend(|app| async move {
        shop(&app).await;
        let order = paid_order(&app, "f-2", &[("MUG", 2)]).await;
        let order_id = order["id"].as_str().unwrap();
        let fulfillment = fulfillments_of(&app, order_id, 1).await.remove(0);
        let id = fulfillment["id"].as_str().unwrap();
        app.post(&format!("/v1/orders/{order_id}/cancel"), json!({})).await.expect(200);
        // Whether or not the intake has seen the cancellation yet, nothing ships.
        app.post(&format!("/v1/fulfillments/{id}/ship"), json!({"carrier": "dhl", "tracking": "1"}))
            .await
            .expect_problem(409, "invalid_state");
        let deadline = Instant::now() + Duration::from_secs(15);
        while app.get(&format!("/v1/fulfillments/{id}")).await.expect(200)["status"] != "cancelled" {
            assert!(Instant::now() < deadline, "[{}] the fulfilment was never cancelled", app.label());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let stock = app.stock("MUG").await;
        assert_eq!((stock["on_hand"].as_i64(), stock["reserved"].as_i64()), (Some(4), Some(0)), "{stock}");
        app.reconcile().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_ships_of_one_fulfilment_ship_it_once() {
    each_backend(|app| async move {
        shop(&app).await;
        let order = paid_order(&app, "f-3", &[("MUG", 3)]).await;
        let id = fulfillments_of(&app, order["id"].as_str().unwrap(), 1).await[0]["id"].as_str().unwrap().to_owned();
        app.pick_and_pack("MUC-1").await;
        let ships: Vec<_> = (0..8)
            .map(|i| {
                let (app, id) = (app.clone(), id.clone());
                tokio::spawn(async move {
                    let body = json!({"carrier": "dhl", "tracking": format!("T{i}")});
                    app.post(&format!("/v1/fulfillments/{id}/ship"), body).await
                })
            })
            .collect();
        let mut shipped = 0;
        for ship in ships {
            let reply = ship.await.unwrap();
            if reply.status.as_u16() == 200 {
                shipped += 1;
            } else {
                reply.expect_problem(409, "invalid_state");
            }
        }
        assert_eq!(shipped, 1, "[{}] exactly one ship wins", app.label());
        let stock = app.stock("MUG").await;
        assert_eq!((stock["on_hand"].as_i64(), stock["reserved"].as_i64()), (Some(1), Some(0)), "{stock}");
        app.reconcile().await;
    })
    .await;
}
