//! Reviews over HTTP, on every backend, as the end of an order's whole road: receipt, checkout,
//! payment, pick, pack, ship, deliver, a verified review, a full return that unverifies it, and
//! the ledger reconciled at the end. Bad reviews are refused by name and change nothing.

use serde_json::{Value, json};
use std::time::{Duration, Instant};
use testkit::{TestApp, each_backend};

async fn shop(app: &TestApp) {
    app.post("/v1/warehouses", json!({"code": "BER-1", "name": "Berlin", "latitude": 52.52, "longitude": 13.40}))
        .await
        .expect(201);
    app.post("/v1/warehouses/BER-1/bins", json!({"code": "A-01", "x": 3.0, "y": 7.0})).await.expect(201);
    app.post("/v1/items", json!({"sku": "TEE-M", "name": "Tee M", "weight_grams": 180})).await.expect(201);
    app.post("/v1/items", json!({"sku": "TEE-L", "name": "Tee L", "weight_grams": 200})).await.expect(201);
    let lines = json!([{"sku": "TEE-M", "quantity": 5, "bin": "A-01"}, {"sku": "TEE-L", "quantity": 5, "bin": "A-01"}]);
    app.post("/v1/receipts", json!({"warehouse": "BER-1", "reference": "PO-1", "lines": lines})).await.expect(201);
    app.post(
        "/v1/channels",
        json!({"code": "web-de", "name": "Web DE", "currency": "EUR", "country": "DE", "warehouses": ["BER-1"]}),
    )
    .await
    .expect(201);
    app.post("/v1/products", json!({"handle": "tee", "name": "Tee", "variants": [{"sku": "TEE-M"}, {"sku": "TEE-L"}]}))
        .await
        .expect(201);
    for sku in ["TEE-M", "TEE-L"] {
        app.put_json(&format!("/v1/prices/{sku}"), json!({"channel": "web-de", "amount": "15.00"})).await.expect(200);
    }
    app.availability_caught_up().await;
}

/// `customer` buys `quantity` of `sku`; the order is paid, picked, packed, shipped and
/// delivered. Answers the order's id.
async fn delivered_order(app: &TestApp, customer: &str, sku: &str, quantity: i64) -> String {
    let cart = app.post("/v1/carts", json!({"channel": "web-de", "customer": customer})).await.expect(201);
    let cart = cart["id"].as_str().unwrap().to_owned();
    app.post(&format!("/v1/carts/{cart}/lines"), json!({"sku": sku, "quantity": quantity})).await.expect(200);
    let body = json!({"shipping_address": {"country": "DE"}});
    let key = format!("buy-{customer}-{sku}");
    let order =
        app.post_with(&format!("/v1/carts/{cart}/checkout"), body, &[("idempotency-key", &key)]).await.expect(201);
    let id = order["id"].as_str().unwrap().to_owned();
    let payment = json!({"provider": "stripe", "reference": format!("pi_{key}"), "amount": order["totals"]["total"], "status": "captured"});
    app.post(&format!("/v1/orders/{id}/payments"), payment).await.expect(200);
    let deadline = Instant::now() + Duration::from_secs(15);
    while app.get(&format!("/v1/fulfillments?order={id}&status=pending")).await.expect(200)["items"]
        .as_array()
        .unwrap()
        .is_empty()
    {
        assert!(Instant::now() < deadline, "[{}] the paid order got no fulfilment", app.label());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for packed in app.pick_and_pack("BER-1").await {
        let fulfillment = packed["id"].as_str().unwrap();
        app.post(&format!("/v1/fulfillments/{fulfillment}/ship"), json!({"carrier": "dhl", "tracking": "T"}))
            .await
            .expect(200);
        app.post(&format!("/v1/fulfillments/{fulfillment}/deliver"), json!({})).await.expect(200);
    }
    wait_for(app, "the order to be delivered", || async {
        app.get(&format!("/v1/orders/{id}")).await.expect(200)["status"] == "delivered"
    })
    .await;
    id
}

async fn wait_for<F, Fut>(app: &TestApp, what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(15);
    while !done().await {
        assert!(Instant::now() < deadline, "[{}] waited in vain for {what}", app.label());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Returns `quantity` of `sku` of the order and receives them sellable in BER-1.
async fn return_units(app: &TestApp, order: &str, sku: &str, quantity: i64) {
    let asked = json!({"order": order, "lines": [{"sku": sku, "quantity": quantity, "reason": "too big"}]});
    let asked = app.post("/v1/returns", asked).await.expect(201);
    let receive = json!({"warehouse": "BER-1", "lines": [{"sku": sku, "quantity": quantity, "condition": "sellable"}]});
    app.post(&format!("/v1/returns/{}/receive", asked["id"].as_str().unwrap()), receive).await.expect(200);
}

fn review(customer: &str, rating: i64) -> Value {
    json!({"customer": customer, "rating": rating, "title": "Tee", "body": "Soft."})
}

#[tokio::test]
async fn only_a_customer_with_a_delivered_unreturned_line_writes_a_verified_review() {
    each_backend(|app| async move {
        shop(&app).await;
        // Before buying: a review, unverified.
        let early = app.post("/v1/products/tee/reviews", review("c-1", 3)).await.expect(201);
        assert_eq!(early["verified"], false, "{early}");

        let order = delivered_order(&app, "c-2", "TEE-L", 2).await;
        let verified = app.post("/v1/products/tee/reviews", review("c-2", 5)).await.expect(201);
        assert_eq!(verified["verified"], true, "a delivered line of a variant verifies: {verified}");

        // Refusals: all named, nothing changed.
        let before = app.get("/v1/products/tee/reviews").await.expect(200);
        for rating in [0, 6] {
            let bad = app
                .post("/v1/products/tee/reviews", review("c-9", rating))
                .await
                .expect_problem(422, "validation_failed");
            assert_eq!(bad["errors"][0]["field"], "rating", "{bad}");
        }
        let bad = app
            .post("/v1/products/tee/reviews", json!({"customer": "", "rating": 9, "title": "", "stars": 1}))
            .await
            .expect_problem(422, "validation_failed");
        assert!(bad.to_string().contains("stars"), "the unknown field is named: {bad}");
        let bad = app
            .post("/v1/products/tee/reviews", json!({"customer": "", "rating": 9, "title": ""}))
            .await
            .expect_problem(422, "validation_failed");
        let fields: Vec<&str> =
            bad["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
        assert_eq!(fields, ["customer", "rating", "title"], "{bad}");
        app.post("/v1/products/nope/reviews", review("c-9", 4)).await.expect_problem(404, "not_found");
        app.get("/v1/products/nope/reviews").await.expect_problem(404, "not_found");
        app.post("/v1/products/tee/reviews", review("c-2", 1)).await.expect_problem(409, "conflict");
        app.get("/v1/products/tee/reviews?sort=best").await.expect_problem(422, "validation_failed");
        assert_eq!(app.get("/v1/products/tee/reviews").await.expect(200), before);

        let page = app.get("/v1/products/tee/reviews").await.expect(200);
        assert_eq!(page["items"].as_array().unwrap().len(), 2);
        assert_eq!(page["summary"], json!({"count": 2, "average": 4.0, "verified_count": 1, "verified_average": 5.0}));
        let first = app.get("/v1/products/tee/reviews?limit=1").await.expect(200);
        let next = first["next"].as_str().expect("a second page");
        let second = app.get(&format!("/v1/products/tee/reviews?limit=1&next={next}")).await.expect(200);
        assert_eq!(second["items"][0]["customer"], "c-2");

        // A full return unverifies c-2's review (the verification subscriber follows
        // `return.received`); a partial return leaves c-3's purchase verified.
        return_units(&app, &order, "TEE-L", 2).await;
        wait_for(&app, "c-2's review to be unverified", || async {
            let page = app.get("/v1/products/tee/reviews").await.expect(200);
            page["items"].as_array().unwrap().iter().any(|r| r["customer"] == "c-2" && r["verified"] == false)
        })
        .await;
        let partly = delivered_order(&app, "c-3", "TEE-M", 2).await;
        return_units(&app, &partly, "TEE-M", 1).await;
        let kept = app.post("/v1/products/tee/reviews", review("c-3", 4)).await.expect(201);
        assert_eq!(kept["verified"], true, "one of two units kept: {kept}");
        app.post("/v1/products/tee/reviews", review("c-3", 4)).await.expect_problem(409, "conflict");
        let page = app.get("/v1/products/tee/reviews").await.expect(200);
        assert_eq!(page["summary"], json!({"count": 3, "average": 4.0, "verified_count": 1, "verified_average": 4.0}));

        // The whole road is in the ledger, and it reconciles.
        let movements = app.get("/v1/movements?sku=TEE-L&warehouse=BER-1").await.expect(200);
        let kinds: Vec<&str> =
            movements["items"].as_array().unwrap().iter().map(|m| m["kind"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["receipt", "reserve", "fulfill", "return"], "{movements}");
        let stock = app.stock("TEE-L").await;
        assert_eq!((stock["on_hand"].as_i64(), stock["available"].as_i64()), (Some(5), Some(5)), "{stock}");
        app.reconcile().await;
    })
    .await;
}

/// The end-to-end road on one order: receipt, checkout, payment, pick, QC failure,
/// pack, ship, deliver, return and a verified review, with the ledger reconciled at the end.
#[tokio::test]
async fn end_to_end_from_receipt_to_a_verified_review_reconciles() {
    each_backend(|app| async move {
        shop(&app).await;
        let cart = app.post("/v1/carts", json!({"channel": "web-de", "customer": "c-5"})).await.expect(201);
        let cart = cart["id"].as_str().unwrap().to_owned();
        app.post(&format!("/v1/carts/{cart}/lines"), json!({"sku": "TEE-M", "quantity": 2})).await.expect(200);
        let body = json!({"shipping_address": {"country": "DE"}});
        let order = app.post_with(&format!("/v1/carts/{cart}/checkout"), body, &[("idempotency-key", "e2e")]).await.expect(201);
        let order_id = order["id"].as_str().unwrap().to_owned();
        let payment = json!({"provider": "stripe", "reference": "pi_e2e", "amount": order["totals"]["total"], "status": "captured"});
        assert_eq!(app.post(&format!("/v1/orders/{order_id}/payments"), payment).await.expect(200)["status"], "paid");
        wait_for(&app, "the fulfilment", || async {
            app.get(&format!("/v1/fulfillments?order={order_id}")).await.expect(200)["items"][0].is_object()
        })
        .await;

        // Pick, then one unit fails quality control: quarantined, and re-held for the order.
        let list = app.post("/v1/picklists", json!({"warehouse": "BER-1"})).await.expect(201);
        let first = list["fulfillments"][0].as_str().unwrap().to_owned();
        let picked = testkit::picked_as_listed(&list);
        let complete = format!("/v1/picklists/{}/complete", list["id"].as_str().unwrap());
        assert_eq!(app.post(&complete, json!({"picked": picked})).await.expect(200)["short"], json!([]));
        let qc = json!({"lines": [
            {"sku": "TEE-M", "quantity": 1, "result": "pass"},
            {"sku": "TEE-M", "quantity": 1, "result": "fail", "disposition": "quarantine"},
        ]});
        app.post(&format!("/v1/fulfillments/{first}/qc"), qc).await.expect(200);
        wait_for(&app, "the failed unit to be re-held", || async {
            app.get(&format!("/v1/fulfillments?order={order_id}&status=pending")).await.expect(200)["items"][0].is_object()
        })
        .await;

        // Pack both (the first at 180 g + no packaging), ship, deliver.
        let mut fulfilments = app.pick_and_pack("BER-1").await;
        let package = json!({"packages": [{"weight_grams": 185, "lines": [{"sku": "TEE-M", "quantity": 1}]}]});
        fulfilments.push(app.post(&format!("/v1/fulfillments/{first}/pack"), package).await.expect(200));
        assert_eq!(fulfilments.len(), 2);
        for f in &fulfilments {
            assert_eq!(f["status"], "packed", "{f}");
            let id = f["id"].as_str().unwrap();
            app.post(&format!("/v1/fulfillments/{id}/ship"), json!({"carrier": "dhl", "tracking": id})).await.expect(200);
            app.post(&format!("/v1/fulfillments/{id}/deliver"), json!({})).await.expect(200);
        }
        wait_for(&app, "the order to be delivered", || async {
            app.get(&format!("/v1/orders/{order_id}")).await.expect(200)["status"] == "delivered"
        })
        .await;

        let verified = app.post("/v1/products/tee/reviews", review("c-5", 5)).await.expect(201);
        assert_eq!(verified["verified"], true);
        return_units(&app, &order_id, "TEE-M", 2).await;
        wait_for(&app, "the review to be unverified after the full return", || async {
            let page = app.get("/v1/products/tee/reviews").await.expect(200);
            page["items"][0]["verified"] == false
        })
        .await;

        // The ledger of the road: 5 received, 2 shipped, 1 quarantined, 2 back.
        let movements = app.get("/v1/movements?sku=TEE-M&warehouse=BER-1").await.expect(200);
        let mut kinds: Vec<&str> = movements["items"].as_array().unwrap().iter().map(|m| m["kind"].as_str().unwrap()).collect();
        kinds.sort_unstable();
        assert_eq!(
            kinds,
            ["fulfill", "fulfill", "quarantine", "receipt", "release", "reserve", "reserve", "return"],
            "{movements}"
        );
        let stock = app.stock("TEE-M").await;
        assert_eq!(
            (stock["on_hand"].as_i64(), stock["unavailable"].as_i64(), stock["available"].as_i64()),
            (Some(5), Some(1), Some(4)),
            "{stock}"
        );
        app.reconcile().await;
    })
    .await;
}
