//! Checkout when the database goes away: a real outage (a TCP proxy between the app and
//! PostgreSQL, cut) gives 503 `unavailable` and leaves nothing behind; the same checkout,
//! retried with its key once the database is back, places the order once.

use serde_json::json;
use std::time::{Duration, Instant};
use testkit::proxy::TcpProxy;
use testkit::{AppOptions, TestApp, postgres_addr, spawn_app_with};

async fn shop(app: &TestApp) {
    app.create_warehouse("BER-1", 10).await;
    app.create_item("TEE").await;
    app.receive("BER-1", "TEE", 5).await;
    app.post(
        "/v1/channels",
        json!({"code": "web", "name": "Web", "currency": "EUR", "country": "DE", "warehouses": ["BER-1"]}),
    )
    .await
    .expect(201);
    app.post("/v1/products", json!({"handle": "tee", "name": "Tee", "variants": [{"sku": "TEE"}]})).await.expect(201);
    app.put_json("/v1/prices/TEE", json!({"channel": "web", "amount": "20.00"})).await.expect(200);
    app.availability_caught_up().await;
}

#[tokio::test]
async fn a_checkout_during_a_database_outage_is_503_and_changes_nothing() {
    // A network outage needs a database over the network: PostgreSQL only (SQLite is a file
    // in the process).
    let Some(target) = postgres_addr() else { return };
    let proxy = TcpProxy::start(target).await;
    let mut options = AppOptions { database_proxy: Some(proxy.addr), ..AppOptions::default() };
    options.orders.saga_interval = Duration::from_millis(100);
    let app = spawn_app_with(store::Backend::Postgres, options).await;
    shop(&app).await;
    let cart = app.post("/v1/carts", json!({"channel": "web", "customer": "cust-1"})).await.expect(201);
    let cart_id = cart["id"].as_str().unwrap().to_owned();
    app.post(&format!("/v1/carts/{cart_id}/lines"), json!({"sku": "TEE", "quantity": 2})).await.expect(200);
    let body = json!({"shipping_address": {"country": "DE"}});
    let path = format!("/v1/carts/{cart_id}/checkout");

    proxy.cut();
    let started = Instant::now();
    let refused = app.post_with(&path, body.clone(), &[("idempotency-key", "outage-1")]).await;
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert_eq!(refused.body["code"], "unavailable", "{}", refused.body);
    assert!(started.elapsed() < Duration::from_secs(15), "the refusal took {:?}", started.elapsed());
    // The process keeps serving what needs no database.
    app.request(reqwest::Method::GET, "/health", None, None, &[]).await.expect(200);
    proxy.restore();

    // Nothing was written: the cart is open, no order, nothing held.
    let started = Instant::now();
    let view = loop {
        let reply = app.get(&format!("/v1/carts/{cart_id}")).await;
        if reply.status == 200 {
            break reply.body;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "the database never came back: {}", reply.body);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(view["status"], "open", "{view}");
    assert_eq!(app.get("/v1/orders?customer=cust-1").await.expect(200)["items"].as_array().unwrap().len(), 0);
    let reserved: i64 = app.stock("TEE").await["warehouses"][0]["reserved"].as_i64().unwrap();
    assert_eq!(reserved, 0);

    // The retry with the same key places the order, once.
    let order = app.post_with(&path, body.clone(), &[("idempotency-key", "outage-1")]).await.expect(201);
    let again = app.post_with(&path, body, &[("idempotency-key", "outage-1")]).await.expect(201);
    assert_eq!(order["id"], again["id"]);
    assert_eq!(app.get("/v1/orders?customer=cust-1").await.expect(200)["items"].as_array().unwrap().len(), 1);
    app.reconcile().await;
    app.shutdown().await;
}
