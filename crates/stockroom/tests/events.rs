//! Typed events: `GET /v1/event-types` lists every type with its version and JSON Schema, and
//! every event the feed carries is of a listed type, at its version, and valid against its
//! schema. On both backends.

use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::Duration;
use testkit::{TestApp, each_backend};

/// Drives the warehouse through every kind of change that emits an event.
async fn every_kind_of_change(app: &TestApp) {
    app.create_item("SHIRT").await;
    app.patch("/v1/items/SHIRT", json!({"gtin": "4006381333931"})).await.expect(200);
    app.post("/v1/items", json!({"sku": "MILK", "name": "Milk", "track_lots": true})).await.expect(201);
    app.create_warehouse("BER-1", 10).await;
    app.patch("/v1/warehouses/BER-1", json!({"priority": 5})).await.expect(200);
    app.receive("BER-1", "SHIRT", 10).await;
    app.post(
        "/v1/receipts",
        json!({"warehouse": "BER-1", "reference": "PO-2",
               "lines": [{"sku": "MILK", "quantity": 4, "lot": "L1", "expires_on": "2099-01-01"}]}),
    )
    .await
    .expect(201);
    // A lot received past its date: the lot-expiry worker records its expiry.
    app.post(
        "/v1/receipts",
        json!({"warehouse": "BER-1", "reference": "PO-3",
               "lines": [{"sku": "MILK", "quantity": 1, "lot": "OLD", "expires_on": "2000-01-01"}]}),
    )
    .await
    .expect(201);
    app.post("/v1/stock/MILK/lots/L1/quarantine", json!({"warehouse": "BER-1", "reason": "smell"})).await.expect(200);
    app.post("/v1/stock/MILK/lots/L1/release", json!({"warehouse": "BER-1", "reason": "fine"})).await.expect(200);
    app.put_json("/v1/alert-rules/default", json!({"low_stock_units": 9, "out_of_stock": true})).await.expect(200);
    // The catalog: a channel, shipping rates, a product and a price, each created and changed.
    app.post(
        "/v1/channels",
        json!({"code": "web", "name": "Web", "currency": "EUR", "country": "DE", "warehouses": ["BER-1"]}),
    )
    .await
    .expect(201);
    app.patch("/v1/channels/web", json!({"name": "Web shop"})).await.expect(200);
    let rates = json!({"rates": [{"country": "DE", "currency": "EUR", "base": "4.90", "per_kg": "0.80"}]});
    app.put_json("/v1/warehouses/BER-1/shipping-rates", rates).await.expect(200);
    app.post(
        "/v1/products",
        json!({"handle": "shirt", "name": "Shirt", "variants": [{"sku": "SHIRT", "options": {"size": "M"}}]}),
    )
    .await
    .expect(201);
    app.patch("/v1/products/shirt", json!({"category": "apparel"})).await.expect(200);
    app.put_json("/v1/prices/SHIRT", json!({"channel": "web", "amount": "19.99"})).await.expect(200);
    orders(app).await;

    let hold = |quantity: i64, ttl: i64| json!({"ttl_seconds": ttl, "lines": [{"sku": "SHIRT", "quantity": quantity}]});
    let id = |r: Value| r["id"].as_str().unwrap().to_owned();
    let shipped = id(app.post("/v1/reservations", hold(2, 900)).await.expect(201));
    app.post(&format!("/v1/reservations/{shipped}/extend"), json!({"ttl_seconds": 1800})).await.expect(200);
    app.post(&format!("/v1/reservations/{shipped}/confirm"), json!({})).await.expect(200);
    app.post(&format!("/v1/reservations/{shipped}/fulfill"), json!({})).await.expect(200);
    let released = id(app.post("/v1/reservations", hold(1, 900)).await.expect(201));
    app.post(&format!("/v1/reservations/{released}/release"), json!({})).await.expect(200);
    // Part of a hold given back (what quality control does with failed units), through the
    // Rust API until the fulfilment routes drive it: `reservation.reduced`.
    let reduced = id(app.post("/v1/reservations", hold(2, 900)).await.expect(201));
    let part = warehouse::reservation::Part {
        sku: kernel::SkuCode::parse("SHIRT").unwrap(),
        warehouse: kernel::WarehouseCode::parse("BER-1").unwrap(),
        quantity: 1,
    };
    let mut tx = app.db.begin().await.unwrap();
    let reservation_id = kernel::ReservationId::from_stored(reduced.clone());
    let now = kernel::Clock::now(&kernel::SystemClock);
    warehouse::reservation::settle_part(
        &mut tx,
        &reservation_id,
        &[part],
        warehouse::reservation::Settlement::Release,
        now,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    app.post(&format!("/v1/reservations/{reduced}/release"), json!({})).await.expect(200);
    let expiring = id(app.post("/v1/reservations", hold(1, 1)).await.expect(201));

    // The sweeper expires the short hold and the alerts subscriber raises low stock (8 < 9).
    for _ in 0..100 {
        let events = app.all_events().await;
        let has = |t: &str| events.iter().any(|e| e["type"] == t);
        if has("reservation.expired")
            && has("alert.raised")
            && has("lot.expired")
            && has("order.backorder_allocated")
            && has("order.delivered")
        {
            let alert = events.iter().find(|e| e["type"] == "alert.raised" && e["data"]["sku"] == "SHIRT").unwrap();
            let alert_id = alert["data"]["id"].as_str().unwrap();
            app.post(&format!("/v1/alerts/{alert_id}/acknowledge"), json!({})).await.expect(200);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Restocking resolves the low-stock alert.
    app.receive("BER-1", "SHIRT", 20).await;
    for _ in 0..100 {
        if app.all_events().await.iter().any(|e| e["type"] == "alert.resolved") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "[{}] {expiring} never expired, an alert was not raised or not resolved, a lot did not expire or a backorder was not allocated",
        app.label()
    );
}

/// The order context: a promotion; an order placed, paid and cancelled (its refund
/// requested); a backordered one that arriving stock is allocated to.
async fn orders(app: &TestApp) {
    for (sku, backorder) in [("MUG", false), ("POSTER", true)] {
        app.create_item(sku).await;
        app.post(
            "/v1/products",
            json!({"handle": sku.to_lowercase(), "name": sku, "variants": [{"sku": sku, "backorder": backorder}]}),
        )
        .await
        .expect(201);
        app.put_json(&format!("/v1/prices/{sku}"), json!({"channel": "web", "amount": "5.00"})).await.expect(200);
    }
    app.receive("BER-1", "MUG", 5).await;
    app.post(
        "/v1/promotions",
        json!({"code": "FIVE", "channel": "web", "kind": "fixed", "value": "1.00", "target": "order"}),
    )
    .await
    .expect(201);
    app.availability_caught_up().await;
    let checkout = |sku: &'static str, key: &'static str, body: Value| async move {
        let cart = app.post("/v1/carts", json!({"channel": "web", "customer": "c-1"})).await.expect(201);
        let cart = cart["id"].as_str().unwrap().to_owned();
        app.post(&format!("/v1/carts/{cart}/lines"), json!({"sku": sku, "quantity": 2})).await.expect(200);
        app.post_with(&format!("/v1/carts/{cart}/checkout"), body, &[("idempotency-key", key)]).await.expect(201)
    };
    let address = json!({"country": "DE"});
    let order = checkout("MUG", "e-1", json!({"shipping_address": address, "promotion_codes": ["FIVE"]})).await;
    let id = order["id"].as_str().unwrap();
    let payment =
        json!({"provider": "stripe", "reference": "pi_e1", "amount": order["totals"]["total"], "status": "captured"});
    app.post(&format!("/v1/orders/{id}/payments"), payment).await.expect(200);
    app.post(&format!("/v1/orders/{id}/cancel"), json!({})).await.expect(200);
    // A paid order picked, packed, shipped and delivered: `fulfillment.shipped`, `fulfillment.delivered`.
    let order = checkout("MUG", "e-3", json!({"shipping_address": address})).await;
    let id = order["id"].as_str().unwrap();
    let payment =
        json!({"provider": "stripe", "reference": "pi_e3", "amount": order["totals"]["total"], "status": "captured"});
    app.post(&format!("/v1/orders/{id}/payments"), payment).await.expect(200);
    let fulfillment = loop {
        let page = app.get(&format!("/v1/fulfillments?order={id}")).await.expect(200);
        if let Some(f) = page["items"][0]["id"].as_str() {
            break f.to_owned();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    app.pick_and_pack("BER-1").await;
    app.post(&format!("/v1/fulfillments/{fulfillment}/ship"), json!({"carrier": "dhl", "tracking": "1"}))
        .await
        .expect(200);
    app.post(&format!("/v1/fulfillments/{fulfillment}/deliver"), json!({})).await.expect(200);
    // One unit comes back: `return.received` (and a refund request).
    let asked = json!({"order": id, "lines": [{"sku": "MUG", "quantity": 1, "reason": "chipped"}]});
    let returned = app.post("/v1/returns", asked).await.expect(201);
    let receive = json!({"warehouse": "BER-1", "lines": [{"sku": "MUG", "quantity": 1, "condition": "damaged"}]});
    app.post(&format!("/v1/returns/{}/receive", returned["id"].as_str().unwrap()), receive).await.expect(200);
    checkout("POSTER", "e-2", json!({"shipping_address": address, "partial": "backorder"})).await;
    app.receive("BER-1", "POSTER", 2).await;
}

#[tokio::test]
async fn every_event_in_the_feed_is_of_a_listed_type_at_its_version_and_matches_its_schema() {
    each_backend(|app| async move {
        let listed = app.get("/v1/event-types").await.expect(200);
        let types: HashMap<String, &Value> =
            listed["items"].as_array().unwrap().iter().map(|t| (t["type"].as_str().unwrap().to_owned(), t)).collect();
        assert!(types.len() >= 16, "[{}] {listed}", app.label());
        assert_eq!(listed["next"], Value::Null);
        let stock_changed = types["stock.changed"];
        assert_eq!(stock_changed["version"], 1);
        for field in ["warehouse", "sku", "kind", "on_hand", "reserved", "available", "on_hand_delta"] {
            assert!(stock_changed["schema"]["properties"].get(field).is_some(), "stock.changed lacks {field}");
        }

        every_kind_of_change(&app).await;
        let events = app.all_events().await;
        let mut seen: Vec<&str> = Vec::new();
        for event in &events {
            let name = event["type"].as_str().unwrap();
            let listed = types.get(name).unwrap_or_else(|| panic!("[{}] {name} is not listed", app.label()));
            assert_eq!(event["version"], listed["version"], "[{}] {event}", app.label());
            let validator = jsonschema::validator_for(&listed["schema"]).expect("a valid JSON Schema");
            let errors: Vec<String> = validator.iter_errors(&event["data"]).map(|e| e.to_string()).collect();
            assert!(errors.is_empty(), "[{}] {name} does not match its schema: {errors:?}\n{event}", app.label());
            if !seen.contains(&name) {
                seen.push(name);
            }
        }
        seen.sort_unstable();
        // A saga stuck past its bound takes a day of waiting for a refund: tests/orders.rs
        // checks that one against its schema, with a fake clock.
        let mut every: Vec<&str> = types.keys().map(String::as_str).filter(|t| *t != "saga.stuck").collect();
        every.sort_unstable();
        assert_eq!(seen, every, "[{}] the scenario emits every listed type", app.label());

        // The schema check is not vacuous: a payload missing a field is refused.
        let validator = jsonschema::validator_for(&stock_changed["schema"]).unwrap();
        assert!(!validator.is_valid(&json!({"warehouse": "BER-1"})));
    })
    .await;
}

#[tokio::test]
async fn the_event_type_list_refuses_unknown_parameters_naming_them() {
    each_backend(|app| async move {
        let problem = app.get("/v1/event-types?limit=5").await.expect_problem(422, "validation_failed");
        assert_eq!(problem["errors"][0]["field"], "limit", "[{}] {problem}", app.label());
    })
    .await;
}
