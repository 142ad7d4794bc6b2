//! Bad input, on every endpoint: each bad request is refused with a 4xx RFC 9457
//! problem document (`application/problem+json` with `type`, `title`, `status`, `code` and
//! `detail`) carrying the right status and `code`, naming the offending field when it is a 422
//! `validation_failed`, and it changes nothing: stock, items, warehouses and reservations read
//! the same afterwards and the event feed has not grown.
//!
//! The sweeps over all endpoints take them from the OpenAPI document the app serves, so a
//! documented route cannot be left out. Each test collects every wrong answer before failing,
//! so one run lists them all.

use api::auth::Scope;
use api::routes::inventory::BULK_BODY_BYTES_MAX;
use kernel::limits::REQUEST_BODY_BYTES_MAX;
use kernel::{Clock, SystemClock};
use reqwest::Method;
use serde_json::{Value, json};
use testkit::{ADMIN_KEY, Reply, TestApp, each_backend};

const JSON: &str = "application/json";
const BER: &str = "BER-1";
const MUC: &str = "MUC-1";
const SHIRT: &str = "SHIRT-RED-M";
const MUG: &str = "MUG-BLUE";
const MIB: usize = 1024 * 1024;
/// Lot-tracked, with a lot in a bin: what the lot and bin paths name.
const MILK: &str = "MILK";
const LOT: &str = "L-1";
const BIN: &str = "A-01";
const EMPTY_BIN: &str = "B-01";
const CHANNEL: &str = "web";
const PRODUCT: &str = "shirt";
const PROMO: &str = "SEED10";

// ------------------------------------------------------------------------------ fixtures

/// Two warehouses, two items, stock of both: SHIRT 10 in BER-1 and 5 in MUC-1, MUG 3 in BER-1.
async fn seed(app: &TestApp) {
    app.create_warehouse(BER, 10).await;
    app.create_warehouse(MUC, 20).await;
    app.create_item(SHIRT).await;
    app.create_item(MUG).await;
    app.receive(BER, SHIRT, 10).await;
    app.receive(MUC, SHIRT, 5).await;
    app.receive(BER, MUG, 3).await;
}

/// Holds `quantity` SHIRT in `warehouse` and returns the reservation id.
async fn reserve(app: &TestApp, quantity: i64, warehouse: &str, ttl_seconds: i64) -> String {
    let body = json!({"reference": "cart-1", "ttl_seconds": ttl_seconds,
                      "lines": [{"sku": SHIRT, "quantity": quantity, "warehouse": warehouse}]});
    let reservation = app.post("/v1/reservations", body).await.expect(201);
    reservation["id"].as_str().expect("a reservation id").to_owned()
}

async fn action(app: &TestApp, id: &str, action: &str) -> Value {
    app.post(&format!("/v1/reservations/{id}/{action}"), Value::Null).await.expect(200)
}

fn line(sku: &str, quantity: i64) -> Value {
    json!({"sku": sku, "quantity": quantity})
}

fn lines(count: usize) -> Value {
    Value::Array(vec![line(SHIRT, 1); count])
}

/// Adds `member` to a JSON object.
fn with(mut body: Value, member: &str, value: Value) -> Value {
    body[member] = value;
    body
}

// ------------------------------------------------------------------------------ the OpenAPI document

/// The ids of what [`seed_every_resource`] creates, for the paths that name them.
struct Seeded {
    reservation: String,
    count: String,
    alert: String,
    /// An open cart with one SHIRT, and another that the checkout sweep checks out.
    cart: String,
    checkout_cart: String,
    /// An order awaiting payment, and its checkout saga.
    order: String,
    saga: String,
    /// A held quarantine entry of 1 SHIRT in BER-1.
    quarantine: String,
    /// The picked fulfilment of a paid order of 1 SHIRT, and another for quality control.
    fulfillment: String,
    checked_fulfillment: String,
    /// An open pick list of BER-1.
    picklist: String,
    /// A paid order of 2 SHIRT that has shipped; 1 is asked back by `return_id`, 1 may be.
    shipped_order: String,
    return_id: String,
    /// A receipt of 10 SHIRT into BER-1, and a transfer of 1 SHIRT from MUC-1 in transit.
    receipt: String,
    transfer: String,
    /// A webhook to a closed loopback port, for `lot.expired` only (nothing the sweeps emit).
    webhook: String,
}

/// Checks out `quantity` SHIRT, pays and waits for the order's fulfilment; answers the order's
/// and the fulfilment's ids.
async fn paid_fulfillment(app: &TestApp, key: &str, quantity: i64) -> (String, String) {
    let cart = app.post("/v1/carts", json!({"channel": CHANNEL, "customer": "cust-2"})).await.expect(201);
    let cart = cart["id"].as_str().expect("a cart id").to_owned();
    app.post(&format!("/v1/carts/{cart}/lines"), line(SHIRT, quantity)).await.expect(200);
    let body = json!({"shipping_address": {"country": "DE"}});
    let paid =
        app.post_with(&format!("/v1/carts/{cart}/checkout"), body, &[("idempotency-key", key)]).await.expect(201);
    let order = paid["id"].as_str().expect("an order id").to_owned();
    let payment = json!({"provider": "stripe", "reference": format!("pi_{key}"), "amount": paid["totals"]["total"], "status": "captured"});
    app.post(&format!("/v1/orders/{order}/payments"), payment).await.expect(200);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let page = app.get(&format!("/v1/fulfillments?order={order}")).await.expect(200);
        if let Some(id) = page["items"][0]["id"].as_str() {
            return (order, id.to_owned());
        }
        assert!(std::time::Instant::now() < deadline, "[{}] the paid order got no fulfilment", app.label());
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// [`seed`], plus one of everything a path of the API can name: a reservation of 1 SHIRT in
/// BER-1, the lot-tracked MILK with 4 units of lot L-1 in bin A-01 of BER-1 (bin B-01 is empty),
/// an open count of MUG in BER-1 and a raised low-stock alert on MILK. Returns once the alert is
/// raised, so that no background work changes anything afterwards.
async fn seed_every_resource(app: &TestApp) -> Seeded {
    seed(app).await;
    app.post("/v1/items", json!({"sku": MILK, "name": "Milk", "track_lots": true})).await.expect(201);
    for bin in [BIN, EMPTY_BIN] {
        app.post(&format!("/v1/warehouses/{BER}/bins"), json!({"code": bin, "capacity_units": 100})).await.expect(201);
    }
    let milk = json!({"sku": MILK, "quantity": 4, "lot": LOT, "expires_on": "2099-01-01", "bin": BIN});
    app.post("/v1/receipts", json!({"warehouse": BER, "lines": [milk]})).await.expect(201);
    let reservation = reserve(app, 1, BER, 600).await;
    let count = app.post("/v1/counts", json!({"warehouse": BER, "skus": [MUG]})).await.expect(201);
    let rule = format!("/v1/alert-rules/items/{MILK}/warehouses/{BER}");
    app.put_json(&rule, json!({"low_stock_units": 10})).await.expect(200);
    let alert = raised_alert(app, MILK).await;
    let quarantine = json!({"warehouse": BER, "quantity": 1, "reason": "damaged"});
    let quarantine = app.post(&format!("/v1/stock/{SHIRT}/quarantine"), quarantine).await.expect(201);
    let channel = json!({"code": CHANNEL, "name": "Web", "currency": "EUR", "country": "DE", "warehouses": [BER]});
    app.post("/v1/channels", channel).await.expect(201);
    app.post("/v1/products", json!({"handle": PRODUCT, "name": "Shirt", "variants": [{"sku": SHIRT}]}))
        .await
        .expect(201);
    app.put_json(&format!("/v1/prices/{SHIRT}"), json!({"channel": CHANNEL, "amount": "19.99"})).await.expect(200);
    app.post("/v1/promotions", json!({"code": PROMO, "channel": CHANNEL, "kind": "percentage", "value": "10"}))
        .await
        .expect(201);
    let mut carts = Vec::new();
    for _ in 0..3 {
        let cart = app.post("/v1/carts", json!({"channel": CHANNEL, "customer": "cust-1"})).await.expect(201);
        let id = cart["id"].as_str().expect("a cart id").to_owned();
        app.post(&format!("/v1/carts/{id}/lines"), line(SHIRT, 1)).await.expect(200);
        carts.push(id);
    }
    let order = app
        .post_with(
            &format!("/v1/carts/{}/checkout", carts[1]),
            json!({"shipping_address": {"country": "DE"}}),
            &[("idempotency-key", "seed")],
        )
        .await
        .expect(201);
    let order = order["id"].as_str().expect("an order id").to_owned();
    let saga = app.get(&format!("/v1/sagas?order={order}")).await.expect(200)["items"][0]["id"]
        .as_str()
        .expect("a saga")
        .to_owned();
    // Enough for the four paid orders below and the valid bodies after them.
    let receipt = app.post("/v1/receipts", json!({"warehouse": BER, "lines": [line(SHIRT, 10)]})).await.expect(201);
    let receipt = receipt["id"].as_str().expect("a receipt id").to_owned();
    let transfer = json!({"from": MUC, "to": BER, "lines": [line(SHIRT, 1)], "in_transit": true});
    let transfer = app.post("/v1/transfers", transfer).await.expect(201)["id"].as_str().expect("an id").to_owned();
    let (_, fulfillment) = paid_fulfillment(app, "seed-paid", 1).await;
    let (_, checked_fulfillment) = paid_fulfillment(app, "seed-qc", 1).await;
    // The seeded fulfilment is picked (ready to pack), and so is the one for quality control;
    // another waits on an open pick list; another is pending (for a new pick list); an order of
    // 2 has shipped, 1 of it asked back.
    let two = json!({"warehouse": BER, "max_fulfillments": 2});
    let list = app.post("/v1/picklists", two).await.expect(201);
    let stops = testkit::picked_as_listed(&list);
    let list = list["id"].as_str().expect("a pick list id");
    app.post(&format!("/v1/picklists/{list}/complete"), json!({"picked": stops})).await.expect(200);
    paid_fulfillment(app, "seed-picking", 1).await;
    let one = json!({"warehouse": BER, "max_fulfillments": 1});
    let picklist = app.post("/v1/picklists", one).await.expect(201)["id"].as_str().expect("an id").to_owned();
    let (shipped_order, _) = paid_fulfillment(app, "seed-shipped", 2).await;
    app.pick_and_pack(BER).await;
    let packed = app.get("/v1/fulfillments?status=packed").await.expect(200);
    let packed = packed["items"][0]["id"].as_str().expect("a packed fulfilment").to_owned();
    app.post(&format!("/v1/fulfillments/{packed}/ship"), json!({"carrier": "dhl", "tracking": "S1"})).await.expect(200);
    // The order follows its shipped fulfilment in the background (`order.fulfilled`): wait, so
    // that no event lands after the reads the sweeps compare.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while app.get(&format!("/v1/orders/{shipped_order}")).await.expect(200)["status"] != "fulfilled" {
        assert!(std::time::Instant::now() < deadline, "[{}] the shipped order never became fulfilled", app.label());
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    paid_fulfillment(app, "seed-pending", 1).await;
    let asked = json!({"order": shipped_order, "lines": [{"sku": SHIRT, "quantity": 1, "reason": "too small"}]});
    let return_id = app.post("/v1/returns", asked).await.expect(201)["id"].as_str().expect("an id").to_owned();
    // The search index follows the feed: let it catch up, so reads before and after a refused
    // request compare like with like.
    let head = app.all_events().await.last().map(|e| e["seq"].as_i64().expect("a seq")).unwrap_or(0);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while app.get(&format!("/v1/search?channel={CHANNEL}")).await.expect(200)["as_of_seq"].as_i64() < Some(head) {
        assert!(std::time::Instant::now() < deadline, "[{}] the search index stayed behind", app.label());
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let hook = json!({"url": "http://127.0.0.1:9/hook", "events": ["lot.expired"]});
    let webhook = app.post("/v1/webhooks", hook).await.expect(201)["id"].as_str().expect("an id").to_owned();
    Seeded {
        webhook,
        reservation,
        count: count["id"].as_str().expect("a count id").to_owned(),
        alert,
        cart: carts[0].clone(),
        checkout_cart: carts[2].clone(),
        order,
        saga,
        quarantine: quarantine["id"].as_str().expect("a quarantine id").to_owned(),
        fulfillment,
        checked_fulfillment,
        picklist,
        shipped_order,
        return_id,
        receipt,
        transfer,
    }
}

/// Waits for the alerts worker (it runs every second) to raise an alert on `sku`.
async fn raised_alert(app: &TestApp, sku: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let page = app.get("/v1/alerts?status=open").await.expect(200);
        let items = page["items"].as_array().cloned().unwrap_or_default();
        if let Some(id) = items.iter().find(|a| a["sku"] == sku).and_then(|a| a["id"].as_str()) {
            return id.to_owned();
        }
        assert!(std::time::Instant::now() < deadline, "[{}] no alert on {sku} was raised", app.label());
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// One operation of the OpenAPI document.
#[derive(Debug, Clone)]
struct Operation {
    method: Method,
    /// The path as documented, e.g. `/v1/stock/{sku}/lots/{lot}/quarantine`.
    template: String,
    /// The template filled with seeded values, with its required query parameters.
    path: String,
    /// The document asks for a key.
    secured: bool,
    /// The document gives it a JSON request body.
    takes_json: bool,
    /// The lowest 2xx status the document lists.
    success: Option<u16>,
}

const HTTP_METHODS: [&str; 8] = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

/// Fewest secured operations the document may list: the 38 routes under `/v1` it had when the
/// sweeps were made to read it, so that losing routes from the document (and so from the sweeps)
/// does not go unnoticed.
const SECURED_OPERATIONS_MIN: usize = 38;

/// Every operation of the document the app serves at `/openapi.json`, paths filled from
/// `seeded`: the sweeps cover a route as soon as it is documented.
async fn documented_operations(app: &TestApp, seeded: &Seeded) -> Vec<Operation> {
    let doc = app.request(Method::GET, "/openapi.json", None, None, &[]).await.expect(200);
    let paths = doc["paths"].as_object().expect("the document has paths");
    let mut operations = Vec::new();
    for (template, item) in paths {
        for (name, operation) in item.as_object().expect("a path item is an object") {
            // A path item also holds `parameters`, `summary` and the like.
            if !HTTP_METHODS.contains(&name.as_str()) {
                continue;
            }
            let method = Method::from_bytes(name.to_ascii_uppercase().as_bytes()).expect("an HTTP method");
            let parameters = [&item["parameters"], &operation["parameters"]];
            let required_query: Vec<&str> = parameters
                .iter()
                .filter_map(|p| p.as_array())
                .flatten()
                .filter(|p| p["in"] == "query" && p["required"] == true)
                .filter_map(|p| p["name"].as_str())
                .collect();
            // An operation without `security` falls back to the document's; an empty
            // requirement among the alternatives means no key is needed.
            let security = operation.get("security").unwrap_or(&doc["security"]);
            let secured = security
                .as_array()
                .is_some_and(|alternatives| !alternatives.is_empty() && alternatives.iter().all(|a| a != &json!({})));
            let takes_json = operation["requestBody"]["content"]
                .as_object()
                .is_some_and(|content| content.keys().any(|t| t == JSON || t.ends_with("+json")));
            let success = operation["responses"]
                .as_object()
                .into_iter()
                .flat_map(|responses| responses.keys())
                .filter_map(|status| status.parse::<u16>().ok())
                .filter(|status| (200..300).contains(status))
                .min();
            let path = fill(template, &required_query, seeded);
            operations.push(Operation { method, template: template.clone(), path, secured, takes_json, success });
        }
    }
    let secured = operations.iter().filter(|o| o.secured).count();
    assert!(
        secured >= SECURED_OPERATIONS_MIN,
        "the document lists {secured} secured operations, fewer than {SECURED_OPERATIONS_MIN}"
    );
    operations
}

/// `template` with each `{parameter}` replaced by its seeded value, and `required_query`
/// appended.
fn fill(template: &str, required_query: &[&str], seeded: &Seeded) -> String {
    let mut segments = Vec::new();
    let mut collection = "";
    for segment in template.split('/') {
        match segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            Some(name) => segments.push(path_value(template, collection, name, seeded)),
            None => {
                segments.push(segment.to_owned());
                collection = segment;
            }
        }
    }
    let path = segments.join("/");
    assert!(!path.contains(['{', '}']), "{template}: a parameter shares a segment with text; fill() cannot place it");
    if required_query.is_empty() {
        return path;
    }
    let query: Vec<String> =
        required_query.iter().map(|name| format!("{name}={}", query_value(template, name))).collect();
    format!("{path}?{}", query.join("&"))
}

/// The seeded value of the path parameter `name` that follows `/{collection}/` in `template`.
/// Fails for any other, so that a route with a new kind of parameter gets a value here instead
/// of escaping the sweeps.
fn path_value(template: &str, collection: &str, name: &str, seeded: &Seeded) -> String {
    match (collection, name) {
        // Items with lots quarantine whole lots; units of an item without them.
        ("stock", "sku") if template.ends_with("/{sku}/quarantine") => SHIRT.to_owned(),
        ("items" | "stock", "sku") => MILK.to_owned(),
        ("warehouses", "code") => BER.to_owned(),
        ("lots", "lot") => LOT.to_owned(),
        ("reservations", "id") => seeded.reservation.clone(),
        ("counts", "id") => seeded.count.clone(),
        ("alerts", "id") => seeded.alert.clone(),
        ("channels", "code") => CHANNEL.to_owned(),
        ("products", "handle") => PRODUCT.to_owned(),
        ("prices", "sku") => SHIRT.to_owned(),
        ("carts", "id") if template.ends_with("/checkout") => seeded.checkout_cart.clone(),
        ("carts", "id") => seeded.cart.clone(),
        ("lines", "sku") => SHIRT.to_owned(),
        ("orders", "id") => seeded.order.clone(),
        ("promotions", "code") => PROMO.to_owned(),
        ("sagas", "id") => seeded.saga.clone(),
        ("quarantine", "id") => seeded.quarantine.clone(),
        ("fulfillments", "id") if template.ends_with("/qc") => seeded.checked_fulfillment.clone(),
        ("fulfillments", "id") => seeded.fulfillment.clone(),
        ("picklists", "id") => seeded.picklist.clone(),
        ("returns", "id") => seeded.return_id.clone(),
        ("receipts", "id") => seeded.receipt.clone(),
        ("transfers", "id") => seeded.transfer.clone(),
        ("webhooks", "id") => seeded.webhook.clone(),
        // No delivery exists (the webhook matches nothing the sweeps emit): its routes are
        // swept for everything decided before the delivery is looked up.
        ("deliveries", "delivery") => "no-such-delivery".to_owned(),
        _ => panic!(
            "{template}: no seeded value for the path parameter {{{name}}} after /{collection}/; \
             seed one in seed_every_resource and map it in path_value"
        ),
    }
}

/// The seeded value of the required query parameter `name` of `template`; fails for unknown
/// ones, like [`path_value`].
fn query_value(template: &str, name: &str) -> String {
    match name {
        "skus" => format!("{SHIRT},{MUG},{MILK}"),
        "warehouse" => BER.to_owned(),
        "channel" => CHANNEL.to_owned(),
        _ => panic!("{template}: no seeded value for the required query parameter {name}; map one in query_value"),
    }
}

/// Bodies the seeded app accepts, keyed by method and template, for every documented operation
/// that takes JSON. Adjustments have two, one per form. Each is accepted whichever of the
/// others were sent before it.
fn valid_bodies(seeded: &Seeded) -> Vec<(Method, &'static str, Value)> {
    let rule = json!({"low_stock_units": 1});
    vec![
        (Method::POST, "/v1/items", json!({"sku": "NEW-ITEM", "name": "New item"})),
        (Method::PATCH, "/v1/items/{sku}", json!({"name": "Milk, fresh", "weight_grams": null})),
        (Method::POST, "/v1/warehouses", json!({"code": "NEW-1", "name": "New warehouse"})),
        (Method::PATCH, "/v1/warehouses/{code}", json!({"priority": 1})),
        (Method::POST, "/v1/warehouses/{code}/bins", json!({"code": "NEW-BIN"})),
        (
            Method::POST,
            "/v1/warehouses/{code}/bin-moves",
            json!({"sku": MILK, "from_bin": BIN, "to_bin": EMPTY_BIN, "quantity": 1}),
        ),
        (Method::POST, "/v1/receipts", json!({"warehouse": BER, "lines": [line(SHIRT, 1)]})),
        (Method::POST, "/v1/adjustments", json!({"warehouse": BER, "sku": SHIRT, "delta": 1})),
        (Method::POST, "/v1/adjustments", json!({"warehouse": BER, "sku": SHIRT, "counted": 42})),
        (Method::POST, "/v1/bulk/adjustments", json!({"lines": [{"warehouse": BER, "sku": MUG, "delta": 1}]})),
        (Method::POST, "/v1/transfers", json!({"from": BER, "to": MUC, "lines": [line(SHIRT, 1)]})),
        (Method::POST, "/v1/reservations", json!({"ttl_seconds": 60, "lines": [line(SHIRT, 1)]})),
        (Method::POST, "/v1/reservations/{id}/extend", json!({"ttl_seconds": 600})),
        (Method::POST, "/v1/stock/{sku}/lots/{lot}/quarantine", json!({"warehouse": BER, "reason": "recall"})),
        (Method::POST, "/v1/stock/{sku}/lots/{lot}/release", json!({"warehouse": BER})),
        (Method::POST, "/v1/stock/{sku}/quarantine", json!({"warehouse": BER, "quantity": 1, "reason": "damaged"})),
        (Method::PUT, "/v1/alert-rules/default", json!({"out_of_stock": true})),
        (Method::PUT, "/v1/alert-rules/items/{sku}", rule.clone()),
        (Method::PUT, "/v1/alert-rules/items/{sku}/warehouses/{code}", rule),
        (Method::POST, "/v1/counts", json!({"warehouse": MUC})),
        (Method::POST, "/v1/counts/{id}/lines", json!({"lines": [{"sku": MUG, "counted": 3}]})),
        (
            Method::POST,
            "/v1/channels",
            json!({"code": "new-channel", "name": "New", "currency": "EUR", "country": "DE", "warehouses": [BER]}),
        ),
        (Method::PATCH, "/v1/channels/{code}", json!({"name": "Renamed"})),
        (
            Method::PUT,
            "/v1/warehouses/{code}/shipping-rates",
            json!({"rates": [{"country": "DE", "currency": "EUR", "base": "4.90", "per_kg": "0.80"}]}),
        ),
        (Method::POST, "/v1/products", json!({"handle": "new-product", "name": "New", "variants": [{"sku": MUG}]})),
        (Method::PATCH, "/v1/products/{handle}", json!({"name": "Renamed"})),
        (Method::PUT, "/v1/prices/{sku}", json!({"channel": CHANNEL, "amount": "1.00"})),
        (Method::POST, "/v1/carts", json!({"channel": CHANNEL})),
        (Method::POST, "/v1/carts/{id}/lines", line(SHIRT, 1)),
        (Method::PATCH, "/v1/carts/{id}/lines/{sku}", json!({"quantity": 1})),
        (
            Method::POST,
            "/v1/carts/{id}/preview",
            json!({"shipping_address": {"country": "DE"}, "promotion_codes": [PROMO]}),
        ),
        (Method::POST, "/v1/carts/{id}/checkout", json!({"shipping_address": {"country": "DE"}, "partial": "reject"})),
        (
            Method::POST,
            "/v1/sourcing/plan",
            json!({"channel": CHANNEL, "shipping_address": {"country": "DE"}, "lines": [line(SHIRT, 2)]}),
        ),
        (
            Method::POST,
            "/v1/orders/{id}/payments",
            json!({"provider": "stripe", "reference": "pi_1", "amount": "1.00", "status": "authorized"}),
        ),
        (
            Method::POST,
            "/v1/promotions",
            json!({"code": "NEW-PROMO", "channel": CHANNEL, "kind": "fixed", "value": "5.00", "usage_limit": 10}),
        ),
        (Method::PATCH, "/v1/promotions/{code}", json!({"usage_limit": 500})),
        (
            Method::POST,
            "/v1/fulfillments/{id}/pack",
            json!({"packages": [{"weight_grams": 30, "lines": [line(SHIRT, 1)]}]}),
        ),
        (
            Method::POST,
            "/v1/fulfillments/{id}/qc",
            json!({"lines": [{"sku": SHIRT, "quantity": 1, "result": "fail", "disposition": "quarantine"}]}),
        ),
        (Method::POST, "/v1/fulfillments/{id}/ship", json!({"carrier": "dhl", "tracking": "JJD1"})),
        (Method::POST, "/v1/picklists", json!({"warehouse": BER, "max_fulfillments": 5})),
        (Method::POST, "/v1/webhooks", json!({"url": "http://127.0.0.1:9/other", "events": ["lot.expired"]})),
        (Method::POST, "/v1/webhooks/{id}/replay", json!({"from_seq": 1})),
        (
            Method::POST,
            "/v1/reservations/{id}/reduce",
            json!({"lines": [{"sku": SHIRT, "warehouse": BER, "quantity": 1}]}),
        ),
        (
            Method::POST,
            "/v1/products/{handle}/reviews",
            json!({"customer": "cust-7", "rating": 4, "title": "Good shirt", "body": ""}),
        ),
        (Method::POST, "/v1/picklists/{id}/complete", json!({"picked": []})),
        (
            Method::PUT,
            "/v1/warehouses/{code}/fulfillment-settings",
            json!({"dock_x": 0.0, "dock_y": 1.5, "packaging_grams": 100, "tolerance_percent": 5.0, "tolerance_grams": 50}),
        ),
        (
            Method::POST,
            "/v1/returns",
            json!({"order": seeded.shipped_order, "lines": [{"sku": SHIRT, "quantity": 1, "reason": "late"}]}),
        ),
        (
            Method::POST,
            "/v1/returns/{id}/receive",
            json!({"warehouse": BER, "lines": [{"sku": SHIRT, "quantity": 1, "condition": "sellable"}]}),
        ),
    ]
}

/// Each documented operation that takes JSON, with each of its valid bodies. Fails if one has
/// none in [`valid_bodies`], or if the table names an operation the document does not.
fn writes(operations: &[Operation], seeded: &Seeded) -> Vec<(Operation, Value)> {
    let table = valid_bodies(seeded);
    for (method, template, _) in &table {
        assert!(
            operations.iter().any(|o| o.takes_json && o.method == method && o.template == *template),
            "valid_bodies has {method} {template}, which the document lists as no operation taking JSON"
        );
    }
    let mut writes = Vec::new();
    for operation in operations.iter().filter(|o| o.takes_json) {
        let bodies: Vec<&Value> = table
            .iter()
            .filter(|(method, template, _)| *method == operation.method && *template == operation.template)
            .map(|(_, _, body)| body)
            .collect();
        assert!(
            !bodies.is_empty(),
            "{} {}: the document gives it a JSON body, valid_bodies has none; add one",
            operation.method,
            operation.template
        );
        writes.extend(bodies.into_iter().map(|body| (operation.clone(), body.clone())));
    }
    writes
}

/// Every secured operation, with a valid body where it takes one.
fn secured_requests(operations: &[Operation], seeded: &Seeded) -> Vec<(Operation, Option<Value>)> {
    let writes = writes(operations, seeded);
    operations
        .iter()
        .filter(|o| o.secured)
        .map(|o| {
            let body = writes.iter().find(|(w, _)| w.method == o.method && w.template == o.template);
            (o.clone(), body.map(|(_, body)| body.clone()))
        })
        .collect()
}

/// The paths of every secured read, to watch for changes.
fn reads(operations: &[Operation]) -> Vec<String> {
    operations
        .iter()
        .filter(|o| o.secured && o.method == Method::GET)
        // The cache's counters move with every read: they are not state a refusal could change.
        .filter(|o| o.template != "/v1/availability/status")
        .map(|o| o.path.clone())
        .collect()
}

/// The most bytes a body may have on `template`: bulk adjustments take a large stock take.
fn body_limit(template: &str) -> usize {
    if template == "/v1/bulk/adjustments" { BULK_BODY_BYTES_MAX } else { REQUEST_BODY_BYTES_MAX }
}

// ------------------------------------------------------------------------------ requests

/// Sends a JSON body; a checkout gets the `Idempotency-Key` it requires (a fresh one each).
async fn send(app: &TestApp, method: Method, path: &str, body: &Value) -> Reply {
    static KEYS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let bytes = serde_json::to_vec(body).expect("serialize");
    let key = format!("sweep-{}", KEYS.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    let headers: &[(&str, &str)] = if path.ends_with("/checkout") { &[("idempotency-key", &key)] } else { &[] };
    app.request(method, path, Some((JSON, bytes)), Some(ADMIN_KEY), headers).await
}

async fn send_text(app: &TestApp, method: Method, path: &str, body: &str) -> Reply {
    app.request(method, path, Some((JSON, body.as_bytes().to_vec())), Some(ADMIN_KEY), &[]).await
}

async fn send_bytes(app: &TestApp, method: Method, path: &str, content_type: &str, bytes: &[u8]) -> Reply {
    app.request(method, path, Some((content_type, bytes.to_vec())), Some(ADMIN_KEY), &[]).await
}

/// A request with a body but no Content-Type header at all.
async fn send_undeclared(app: &TestApp, method: Method, path: &str, bytes: &[u8]) -> Reply {
    let response = app
        .client
        .request(method, format!("{}{path}", app.base_url))
        .bearer_auth(ADMIN_KEY)
        .body(bytes.to_vec())
        .send()
        .await
        .expect("send the request");
    let status = response.status();
    let headers = response.headers().clone();
    let content_type = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let bytes = response.bytes().await.expect("read the body");
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Reply { status, body, content_type, headers }
}

// ------------------------------------------------------------------------------ checks

/// What bad input must not change.
#[derive(Debug)]
struct Snapshot {
    reads: Vec<(String, Value)>,
    events: usize,
}

/// Reads the stock of both SKUs, both items, the warehouses and `extra` paths, and counts
/// the events.
async fn snapshot(app: &TestApp, extra: &[String]) -> Snapshot {
    let mut reads = Vec::new();
    for sku in [SHIRT, MUG] {
        reads.push((format!("/v1/stock/{sku}"), app.stock(sku).await));
    }
    let mut paths = vec![format!("/v1/items/{SHIRT}"), format!("/v1/items/{MUG}"), "/v1/warehouses".to_owned()];
    paths.extend(extra.iter().cloned());
    for path in paths {
        let value = app.get(&path).await.expect(200);
        reads.push((path, value));
    }
    Snapshot { reads, events: app.all_events().await.len() }
}

/// Collects wrong answers, so that a test reports all of them at once.
struct Verdicts {
    label: &'static str,
    failures: Vec<String>,
    checked: usize,
}

impl Verdicts {
    fn new(app: &TestApp) -> Self {
        Self { label: app.label(), failures: Vec::new(), checked: 0 }
    }

    fn fail(&mut self, failure: String) {
        self.failures.push(failure);
    }

    /// Checks that `reply` is a problem document with `status` and `code`; for a 422
    /// `validation_failed`, that `errors` lists fields and messages and names one of `fields`
    /// (any field if `fields` is empty).
    fn refused(&mut self, what: &str, reply: Reply, status: u16, code: &str, fields: &[&str]) -> Value {
        self.checked += 1;
        let body = reply.body;
        let mut wrong = Vec::new();
        if reply.status.as_u16() != status {
            wrong.push(format!("status {} instead of {status}", reply.status.as_u16()));
        }
        if reply.content_type != "application/problem+json" {
            wrong.push(format!("content type {:?} instead of application/problem+json", reply.content_type));
        }
        for member in ["type", "title", "detail"] {
            if body[member].as_str().is_none_or(str::is_empty) {
                wrong.push(format!("no `{member}`"));
            }
        }
        if body["status"] != json!(reply.status.as_u16()) {
            wrong.push(format!("member status {} differs from the HTTP status", body["status"]));
        }
        if body["code"] != code {
            wrong.push(format!("code {} instead of {code}", body["code"]));
        }
        if code == "validation_failed" && reply.status.as_u16() == 422 {
            let errors = body["errors"].as_array().cloned().unwrap_or_default();
            let named: Vec<&str> = errors.iter().filter_map(|e| e["field"].as_str()).collect();
            if errors.is_empty() || named.len() != errors.len() || errors.iter().any(|e| !e["message"].is_string()) {
                wrong.push("`errors` is not a non-empty list of {field, message}".to_owned());
            } else if !fields.is_empty() && !fields.iter().any(|f| named.contains(f)) {
                wrong.push(format!("errors name {named:?}, not {fields:?}"));
            }
        }
        if !wrong.is_empty() {
            self.failures.push(format!("{what}: {}; body: {body}", wrong.join(", ")));
        }
        body
    }

    /// Checks that `reply` is a 4xx problem document with a consistent `status`, whatever its
    /// code (for input API.md does not pin to one code).
    fn client_error(&mut self, what: &str, reply: Reply) -> Value {
        let status = reply.status.as_u16();
        let code = reply.body["code"].as_str().unwrap_or("").to_owned();
        if (400..500).contains(&status) && !code.is_empty() {
            self.refused(what, reply, status, &code, &[])
        } else {
            self.checked += 1;
            self.failures.push(format!("{what}: status {status} is not a 4xx problem; body: {}", reply.body));
            reply.body
        }
    }

    /// Checks that a successful request answered `status` (used for the controls at the
    /// edges of each range).
    fn accepted(&mut self, what: &str, reply: Reply, status: u16) -> Value {
        self.checked += 1;
        if reply.status.as_u16() != status {
            self.failures.push(format!(
                "{what}: status {} instead of {status}; body: {}",
                reply.status.as_u16(),
                reply.body
            ));
        }
        reply.body
    }

    /// Checks that nothing `before` watched has changed and no event was written.
    async fn unchanged(&mut self, app: &TestApp, before: &Snapshot) {
        let extra: Vec<String> = before.reads.iter().skip(5).map(|(path, _)| path.clone()).collect();
        let after = snapshot(app, &extra).await;
        for ((path, then), (_, now)) in before.reads.iter().zip(&after.reads) {
            if then != now {
                self.failures.push(format!("GET {path} changed: was {then}, is {now}"));
            }
        }
        if after.events != before.events {
            self.failures.push(format!("the event feed grew from {} to {} events", before.events, after.events));
        }
        let report = app.get("/v1/reconciliation").await.expect(200);
        if report["mismatches"] != json!([]) {
            self.failures.push(format!("reconciliation found mismatches: {report}"));
        }
    }

    #[track_caller]
    fn finish(self) {
        assert!(
            self.failures.is_empty(),
            "[{}] {} of {} checks failed:\n  {}",
            self.label,
            self.failures.len(),
            self.checked,
            self.failures.join("\n  ")
        );
    }
}

// ------------------------------------------------------------------------------ bodies

#[tokio::test]
async fn bodies_that_are_not_json_objects_are_refused_on_every_write_endpoint() {
    each_backend(|app| async move {
        let seeded = seed_every_resource(&app).await;
        let operations = documented_operations(&app, &seeded).await;
        let writes = writes(&operations, &seeded);
        let before = snapshot(&app, &reads(&operations)).await;
        let mut v = Verdicts::new(&app);
        for (operation, valid) in &writes {
            let (method, path) = (&operation.method, &operation.path);
            let valid = serde_json::to_vec(valid).expect("serialize");
            let truncated = valid[..valid.len() - 1].to_vec();
            let two_documents = [valid.as_slice(), b" {}"].concat();
            let not_json: [(&str, &[u8]); 9] = [
                ("plain text", b"this is not json"),
                ("an empty body", b""),
                ("a truncated object", &truncated),
                ("two documents", &two_documents),
                ("single quotes", b"{'sku': 'X'}"),
                ("a trailing comma", b"{\"name\": \"x\",}"),
                ("a bare word", b"undefined"),
                ("an unclosed string", b"{\"name\": \"x"),
                ("invalid UTF-8", b"{\"\xff\xfe\": 1}"),
            ];
            for (what, bytes) in not_json {
                let reply = send_bytes(&app, method.clone(), path, JSON, bytes).await;
                v.refused(&format!("{method} {path} with {what}"), reply, 400, "malformed_request", &[]);
            }
            for content_type in [
                "text/plain",
                "application/x-www-form-urlencoded",
                "application/xml",
                "multipart/form-data; boundary=x",
                "application/octet-stream",
            ] {
                let reply = send_bytes(&app, method.clone(), path, content_type, &valid).await;
                v.refused(
                    &format!("{method} {path} with valid JSON as {content_type}"),
                    reply,
                    400,
                    "malformed_request",
                    &[],
                );
            }
            let reply = send_undeclared(&app, method.clone(), path, &valid).await;
            v.refused(
                &format!("{method} {path} with valid JSON and no content type"),
                reply,
                400,
                "malformed_request",
                &[],
            );
            for (what, text) in
                [("an array", "[]"), ("a number", "42"), ("a string", "\"x\""), ("null", "null"), ("true", "true")]
            {
                let reply = send_text(&app, method.clone(), path, text).await;
                v.refused(&format!("{method} {path} with {what} for a body"), reply, 422, "validation_failed", &[]);
            }
        }
        // Duplicate members: API.md pins no code, but the answer is a 4xx problem.
        let duplicates = [
            ("/v1/items", r#"{"sku": "DUP-1", "sku": "DUP-2", "name": "x"}"#.to_owned()),
            (
                "/v1/receipts",
                format!(r#"{{"warehouse": "{BER}", "lines": [{{"sku": "{SHIRT}", "quantity": 1, "quantity": 2}}]}}"#),
            ),
            (
                "/v1/reservations",
                format!(r#"{{"ttl_seconds": 900, "ttl_seconds": 0, "lines": [{{"sku": "{SHIRT}", "quantity": 1}}]}}"#),
            ),
        ];
        for (path, body) in duplicates {
            let reply = send_text(&app, Method::POST, path, &body).await;
            v.client_error(&format!("POST {path} with {body}"), reply);
        }
        v.unchanged(&app, &before).await;
        // The valid bodies are accepted, so the refusals above were about the form alone.
        for (operation, valid) in &writes {
            let (method, path) = (&operation.method, &operation.path);
            let Some(success) = operation.success else {
                v.fail(format!("{method} {}: the document lists no 2xx answer", operation.template));
                continue;
            };
            let reply = send(&app, method.clone(), path, valid).await;
            v.accepted(&format!("{method} {path} with {valid}"), reply, success);
        }
        v.finish();
    })
    .await;
}

#[tokio::test]
async fn items_with_missing_or_invalid_fields_are_refused_naming_the_field() {
    each_backend(|app| async move {
        seed(&app).await;
        let before = snapshot(&app, &[]).await;
        let mut v = Verdicts::new(&app);
        let long_name = "n".repeat(10_000);
        let cases: Vec<(&str, Value, &str)> = vec![
            ("no sku", json!({"name": "X"}), "sku"),
            ("no name", json!({"sku": "NEW-ITEM"}), "name"),
            ("an empty object", json!({}), "sku"),
            ("a numeric sku", json!({"sku": 42, "name": "X"}), "sku"),
            ("a null sku", json!({"sku": null, "name": "X"}), "sku"),
            ("a numeric name", json!({"sku": "NEW-ITEM", "name": 42}), "name"),
            ("an empty name", json!({"sku": "NEW-ITEM", "name": ""}), "name"),
            ("a blank name", json!({"sku": "NEW-ITEM", "name": "   "}), "name"),
            ("a 10000-character name", json!({"sku": "NEW-ITEM", "name": long_name}), "name"),
            ("negative weight_grams", json!({"sku": "NEW-ITEM", "name": "X", "weight_grams": -1}), "weight_grams"),
            ("huge weight_grams", json!({"sku": "NEW-ITEM", "name": "X", "weight_grams": 1e30}), "weight_grams"),
            ("textual weight_grams", json!({"sku": "NEW-ITEM", "name": "X", "weight_grams": "heavy"}), "weight_grams"),
            ("fractional weight_grams", json!({"sku": "NEW-ITEM", "name": "X", "weight_grams": 1.5}), "weight_grams"),
            ("textual track_lots", json!({"sku": "NEW-ITEM", "name": "X", "track_lots": "yes"}), "track_lots"),
            ("numeric track_lots", json!({"sku": "NEW-ITEM", "name": "X", "track_lots": 1}), "track_lots"),
        ];
        for (what, body, field) in cases {
            let reply = app.post("/v1/items", body).await;
            v.refused(&format!("POST /v1/items with {what}"), reply, 422, "validation_failed", &[field]);
        }
        let reply = app.post("/v1/items", json!({"sku": SHIRT, "name": "Again"})).await;
        v.refused("POST /v1/items with an existing SKU", reply, 409, "conflict", &[]);
        v.refused("GET of the refused item", app.get("/v1/items/NEW-ITEM").await, 404, "not_found", &[]);
        v.unchanged(&app, &before).await;
        v.finish();
    })
    .await;
}

#[tokio::test]
async fn warehouses_with_missing_or_invalid_fields_are_refused_on_create_and_patch() {
    each_backend(|app| async move {
        seed(&app).await;
        let before = snapshot(&app, &[format!("/v1/warehouses/{BER}")]).await;
        let mut v = Verdicts::new(&app);
        let create = |member: &str, value: Value| with(json!({"code": "NEW-1", "name": "New"}), member, value);
        let cases: Vec<(&str, Value, &str)> = vec![
            ("no code", json!({"name": "X"}), "code"),
            ("no name", json!({"code": "NEW-1"}), "name"),
            ("a numeric code", create("code", json!(7)), "code"),
            ("an empty name", create("name", json!("")), "name"),
            ("a numeric name", create("name", json!(7)), "name"),
            ("a textual priority", create("priority", json!("high")), "priority"),
            ("a fractional priority", create("priority", json!(1.5)), "priority"),
            ("a huge priority", create("priority", json!(1e30)), "priority"),
            ("a negative priority", create("priority", json!(-1)), "priority"),
            ("a textual active", create("active", json!("yes")), "active"),
            ("latitude 90.5", create("latitude", json!(90.5)), "latitude"),
            ("latitude -91", create("latitude", json!(-91)), "latitude"),
            ("a textual latitude", create("latitude", json!("north")), "latitude"),
            ("longitude 180.1", create("longitude", json!(180.1)), "longitude"),
            ("longitude -181", create("longitude", json!(-181)), "longitude"),
            ("country Germany", create("country", json!("Germany")), "country"),
            ("country de", create("country", json!("de")), "country"),
            ("a numeric country", create("country", json!(49)), "country"),
        ];
        for (what, body, field) in cases {
            let reply = app.post("/v1/warehouses", body).await;
            v.refused(&format!("POST /v1/warehouses with {what}"), reply, 422, "validation_failed", &[field]);
        }
        let reply = app.post("/v1/warehouses", json!({"code": BER, "name": "Again"})).await;
        v.refused("POST /v1/warehouses with an existing code", reply, 409, "conflict", &[]);
        v.refused("GET of the refused warehouse", app.get("/v1/warehouses/NEW-1").await, 404, "not_found", &[]);

        let patches: Vec<(&str, Value, &str)> = vec![
            ("an empty name", json!({"name": ""}), "name"),
            ("a numeric name", json!({"name": 1}), "name"),
            ("a textual priority", json!({"priority": "high"}), "priority"),
            ("a fractional priority", json!({"priority": 2.5}), "priority"),
            ("a huge priority", json!({"priority": 1e30}), "priority"),
            ("a negative priority", json!({"priority": -1}), "priority"),
            ("a textual active", json!({"active": "no"}), "active"),
            ("latitude 91", json!({"latitude": 91}), "latitude"),
            ("longitude -180.5", json!({"longitude": -180.5}), "longitude"),
            ("a textual longitude", json!({"longitude": "east"}), "longitude"),
            ("country DEU", json!({"country": "DEU"}), "country"),
            ("a valid priority but a bad latitude", json!({"priority": 1, "latitude": 100}), "latitude"),
        ];
        for (what, body, field) in patches {
            let reply = app.patch(&format!("/v1/warehouses/{BER}"), body).await;
            v.refused(&format!("PATCH /v1/warehouses/{BER} with {what}"), reply, 422, "validation_failed", &[field]);
        }
        v.unchanged(&app, &before).await;
        v.finish();
    })
    .await;
}

#[tokio::test]
async fn receipts_with_missing_or_invalid_fields_are_refused_naming_the_field() {
    each_backend(|app| async move {
        seed(&app).await;
        app.post("/v1/items", json!({"sku": "MILK", "name": "Milk", "track_lots": true})).await.expect(201);
        let before = snapshot(&app, &["/v1/stock/MILK".to_owned()]).await;
        let mut v = Verdicts::new(&app);
        let receipt = |lines: Value| json!({"warehouse": BER, "reference": "PO-1", "lines": lines});
        let milk = |lot: Value, expires_on: Value| {
            receipt(json!([{"sku": "MILK", "quantity": 1, "lot": lot, "expires_on": expires_on}]))
        };
        let cases: Vec<(&str, Value, &str)> = vec![
            ("no warehouse", json!({"lines": [line(SHIRT, 1)]}), "warehouse"),
            ("a numeric warehouse", json!({"warehouse": 1, "lines": [line(SHIRT, 1)]}), "warehouse"),
            ("no lines", json!({"warehouse": BER}), "lines"),
            ("lines as an object", json!({"warehouse": BER, "lines": line(SHIRT, 1)}), "lines"),
            ("lines as null", json!({"warehouse": BER, "lines": null}), "lines"),
            ("a line that is a string", receipt(json!([SHIRT])), "lines[0]"),
            ("a line without sku", receipt(json!([{"quantity": 1}])), "lines[0].sku"),
            ("a line without quantity", receipt(json!([{"sku": SHIRT}])), "lines[0].quantity"),
            ("a second line without quantity", receipt(json!([line(SHIRT, 1), {"sku": MUG}])), "lines[1].quantity"),
            ("a numeric reference", with(receipt(json!([line(SHIRT, 1)])), "reference", json!(5)), "reference"),
            ("an empty reference", with(receipt(json!([line(SHIRT, 1)])), "reference", json!("")), "reference"),
            ("an expires_on that is not a date", milk(json!("L1"), json!("tomorrow")), "lines[0].expires_on"),
            ("an expires_on of February 30", milk(json!("L1"), json!("2027-02-30")), "lines[0].expires_on"),
            ("a numeric expires_on", milk(json!("L1"), json!(20270301)), "lines[0].expires_on"),
            ("an empty lot", milk(json!(""), json!("2027-03-01")), "lines[0].lot"),
            ("a lot-tracked line without lot", milk(Value::Null, json!("2027-03-01")), "lines[0].lot"),
            ("a lot-tracked line without expires_on", milk(json!("L1"), Value::Null), "lines[0].expires_on"),
            ("an empty bin", receipt(json!([{"sku": SHIRT, "quantity": 1, "bin": ""}])), "lines[0].bin"),
        ];
        for (what, body, field) in cases {
            let reply = app.post("/v1/receipts", body).await;
            v.refused(&format!("POST /v1/receipts with {what}"), reply, 422, "validation_failed", &[field]);
        }
        v.unchanged(&app, &before).await;
        v.finish();
    })
    .await;
}

#[tokio::test]
async fn adjustments_with_bad_delta_or_counted_are_refused_naming_the_field() {
    each_backend(|app| async move {
        seed(&app).await;
        let before = snapshot(&app, &[]).await;
        let mut v = Verdicts::new(&app);
        let template = format!(r#"{{"warehouse": "{BER}", "sku": "{SHIRT}", "MEMBER": VALUE, "reason": "count"}}"#);
        let bad_delta = [
            "0",
            "1000000001",
            "-1000000001",
            "1e30",
            "-1e30",
            "2.5",
            "\"3\"",
            "true",
            "[1]",
            "9223372036854775807",
            "99999999999999999999",
        ];
        for raw in bad_delta {
            let body = template.replace("MEMBER", "delta").replace("VALUE", raw);
            let reply = send_text(&app, Method::POST, "/v1/adjustments", &body).await;
            v.refused(&format!("POST /v1/adjustments with delta {raw}"), reply, 422, "validation_failed", &["delta"]);
        }
        let bad_counted =
            ["-1", "1000000001", "1e30", "2.5", "\"4\"", "false", "-9223372036854775808", "99999999999999999999"];
        for raw in bad_counted {
            let body = template.replace("MEMBER", "counted").replace("VALUE", raw);
            let reply = send_text(&app, Method::POST, "/v1/adjustments", &body).await;
            v.refused(
                &format!("POST /v1/adjustments with counted {raw}"),
                reply,
                422,
                "validation_failed",
                &["counted"],
            );
        }
        let base = json!({"warehouse": BER, "sku": SHIRT});
        let cases: Vec<(&str, Value, &[&str])> = vec![
            ("neither delta nor counted", base.clone(), &["delta", "counted"]),
            ("delta null and no counted", with(base.clone(), "delta", Value::Null), &["delta", "counted"]),
            (
                "both delta and counted",
                with(with(base.clone(), "delta", json!(1)), "counted", json!(5)),
                &["delta", "counted"],
            ),
            ("no warehouse", json!({"sku": SHIRT, "delta": 1}), &["warehouse"]),
            ("no sku", json!({"warehouse": BER, "delta": 1}), &["sku"]),
            ("a numeric sku", json!({"warehouse": BER, "sku": 5, "delta": 1}), &["sku"]),
            ("a numeric reason", with(with(base.clone(), "delta", json!(1)), "reason", json!(9)), &["reason"]),
            ("an empty reason", with(with(base.clone(), "delta", json!(1)), "reason", json!("")), &["reason"]),
        ];
        for (what, body, fields) in cases {
            let reply = app.post("/v1/adjustments", body).await;
            v.refused(&format!("POST /v1/adjustments with {what}"), reply, 422, "validation_failed", fields);
        }
        v.unchanged(&app, &before).await;
        // The edges of the ranges are accepted.
        for (member, value) in
            [("delta", 1_000_000_000), ("delta", -1_000_000_000), ("counted", 0), ("counted", 1_000_000_000)]
        {
            let reply = app.post("/v1/adjustments", with(base.clone(), member, json!(value))).await;
            v.accepted(&format!("POST /v1/adjustments with {member} {value}"), reply, 201);
        }
        v.finish();
    })
    .await;
}

#[tokio::test]

async fn an_adjustment_delta_of_the_smallest_integer_is_refused_naming_the_field() {
    each_backend(|app| async move {
        seed(&app).await;
        let before = snapshot(&app, &[]).await;
        let mut v = Verdicts::new(&app);
        let body = format!(r#"{{"warehouse": "{BER}", "sku": "{SHIRT}", "delta": -9223372036854775808}}"#);
        let reply = send_text(&app, Method::POST, "/v1/adjustments", &body).await;
        v.refused("POST /v1/adjustments with delta -9223372036854775808", reply, 422, "validation_failed", &["delta"]);
        v.unchanged(&app, &before).await;
        v.finish();
    })
    .await;
}

#[tokio::test]
async fn transfers_with_missing_or_invalid_fields_are_refused_naming_the_field() {
    each_backend(|app| async move {
        seed(&app).await;
        let before = snapshot(&app, &[]).await;
        let mut v = Verdicts::new(&app);
        let transfer = json!({"from": BER, "to": MUC, "lines": [line(SHIRT, 1)]});
        let cases: Vec<(&str, Value, &[&str])> = vec![
            ("no from", json!({"to": MUC, "lines": [line(SHIRT, 1)]}), &["from"]),
            ("no to", json!({"from": BER, "lines": [line(SHIRT, 1)]}), &["to"]),
            ("no lines", json!({"from": BER, "to": MUC}), &["lines"]),
            ("a numeric from", with(transfer.clone(), "from", json!(1)), &["from"]),
            ("a null to", with(transfer.clone(), "to", Value::Null), &["to"]),
            ("lines as a string", with(transfer.clone(), "lines", json!("SHIRT")), &["lines"]),
            ("a line without sku", with(transfer.clone(), "lines", json!([{"quantity": 1}])), &["lines[0].sku"]),
            (
                "a line without quantity",
                with(transfer.clone(), "lines", json!([{"sku": SHIRT}])),
                &["lines[0].quantity"],
            ),
            ("a numeric reference", with(transfer.clone(), "reference", json!(1)), &["reference"]),
            ("from equal to to", with(transfer.clone(), "to", json!(BER)), &["to", "from"]),
        ];
        for (what, body, fields) in cases {
            let reply = app.post("/v1/transfers", body).await;
            v.refused(&format!("POST /v1/transfers with {what}"), reply, 422, "validation_failed", fields);
        }
        v.unchanged(&app, &before).await;
        v.finish();
    })
    .await;
}

#[tokio::test]
async fn reservations_with_bad_ttl_or_missing_fields_are_refused_naming_the_field() {
    each_backend(|app| async move {
        seed(&app).await;
        let before = snapshot(&app, &[]).await;
        let mut v = Verdicts::new(&app);
        let template =
            format!(r#"{{"reference": "cart-1", "ttl_seconds": TTL, "lines": [{{"sku": "{SHIRT}", "quantity": 1}}]}}"#);
        for raw in
            ["0", "604801", "-1", "1e30", "1.5", "\"900\"", "true", "9223372036854775807", "-9223372036854775808"]
        {
            let reply = send_text(&app, Method::POST, "/v1/reservations", &template.replace("TTL", raw)).await;
            v.refused(
                &format!("POST /v1/reservations with ttl_seconds {raw}"),
                reply,
                422,
                "validation_failed",
                &["ttl_seconds"],
            );
        }
        let hold = json!({"reference": "cart-1", "lines": [line(SHIRT, 1)]});
        let cases: Vec<(&str, Value, &str)> = vec![
            ("no lines", json!({"reference": "cart-1"}), "lines"),
            ("lines as an object", with(hold.clone(), "lines", line(SHIRT, 1)), "lines"),
            ("a line that is a number", with(hold.clone(), "lines", json!([3])), "lines[0]"),
            ("a line without sku", with(hold.clone(), "lines", json!([{"quantity": 1}])), "lines[0].sku"),
            ("a line without quantity", with(hold.clone(), "lines", json!([{"sku": SHIRT}])), "lines[0].quantity"),
            (
                "a numeric warehouse",
                with(hold.clone(), "lines", json!([{"sku": SHIRT, "quantity": 1, "warehouse": 1}])),
                "lines[0].warehouse",
            ),
            ("a numeric reference", with(hold.clone(), "reference", json!(1)), "reference"),
        ];
        for (what, body, field) in cases {
            let reply = app.post("/v1/reservations", body).await;
            v.refused(&format!("POST /v1/reservations with {what}"), reply, 422, "validation_failed", &[field]);
        }
        v.unchanged(&app, &before).await;
        // The edges of the range are accepted.
        for ttl in [1, 604_800] {
            let reply = app.post("/v1/reservations", with(hold.clone(), "ttl_seconds", json!(ttl))).await;
            v.accepted(&format!("POST /v1/reservations with ttl_seconds {ttl}"), reply, 201);
        }
        v.finish();
    })
    .await;
}

#[tokio::test]
async fn quantities_out_of_range_are_refused_naming_the_field() {
    each_backend(|app| async move {
        seed(&app).await;
        let before = snapshot(&app, &[]).await;
        let mut v = Verdicts::new(&app);
        let one_line = format!(r#"[{{"sku": "{SHIRT}", "quantity": QTY}}]"#);
        let two_lines = format!(r#"[{{"sku": "{SHIRT}", "quantity": 1}}, {{"sku": "{MUG}", "quantity": QTY}}]"#);
        let bodies = [
            ("/v1/receipts", format!(r#"{{"warehouse": "{BER}", "lines": LINES}}"#)),
            ("/v1/transfers", format!(r#"{{"from": "{BER}", "to": "{MUC}", "lines": LINES}}"#)),
            ("/v1/reservations", r#"{"ttl_seconds": 60, "lines": LINES}"#.to_owned()),
        ];
        let bad = [
            "0",
            "-1",
            "1000000001",
            "1e30",
            "-1e30",
            "2.5",
            "\"5\"",
            "null",
            "true",
            "{}",
            "-9223372036854775808",
            "9223372036854775807",
            "99999999999999999999",
        ];
        for (path, template) in &bodies {
            for (lines, field) in [(&one_line, "lines[0].quantity"), (&two_lines, "lines[1].quantity")] {
                for raw in bad {
                    let body = template.replace("LINES", lines).replace("QTY", raw);
                    let reply = send_text(&app, Method::POST, path, &body).await;
                    v.refused(&format!("POST {path} with {field} {raw}"), reply, 422, "validation_failed", &[field]);
                }
            }
        }
        v.unchanged(&app, &before).await;
        // The largest quantity is accepted.
        let reply = app.post("/v1/receipts", json!({"warehouse": BER, "lines": [line(SHIRT, 1_000_000_000)]})).await;
        v.accepted("POST /v1/receipts with quantity 1000000000", reply, 201);
        v.finish();
    })
    .await;
}

/// `1e400` is valid JSON (RFC 8259 puts no bound on numbers) but out of range for every
/// field: API.md makes that 422 naming the field, not 400.
#[tokio::test]

async fn numbers_beyond_the_range_of_a_double_are_refused_naming_the_field() {
    each_backend(|app| async move {
        seed(&app).await;
        let before = snapshot(&app, &[]).await;
        let mut v = Verdicts::new(&app);
        let cases = [
            (
                "/v1/receipts",
                format!(r#"{{"warehouse": "{BER}", "lines": [{{"sku": "{SHIRT}", "quantity": 1e400}}]}}"#),
                "lines[0].quantity",
            ),
            (
                "/v1/transfers",
                format!(r#"{{"from": "{BER}", "to": "{MUC}", "lines": [{{"sku": "{SHIRT}", "quantity": 1e400}}]}}"#),
                "lines[0].quantity",
            ),
            (
                "/v1/reservations",
                format!(r#"{{"lines": [{{"sku": "{SHIRT}", "quantity": 1e400}}]}}"#),
                "lines[0].quantity",
            ),
            (
                "/v1/reservations",
                format!(r#"{{"ttl_seconds": 1e400, "lines": [{{"sku": "{SHIRT}", "quantity": 1}}]}}"#),
                "ttl_seconds",
            ),
            ("/v1/adjustments", format!(r#"{{"warehouse": "{BER}", "sku": "{SHIRT}", "delta": -1e400}}"#), "delta"),
            ("/v1/adjustments", format!(r#"{{"warehouse": "{BER}", "sku": "{SHIRT}", "counted": 1e400}}"#), "counted"),
        ];
        for (path, body, field) in cases {
            let reply = send_text(&app, Method::POST, path, &body).await;
            v.refused(&format!("POST {path} with {field} 1e400"), reply, 422, "validation_failed", &[field]);
        }
        v.unchanged(&app, &before).await;
        v.finish();
    })
    .await;
}

#[tokio::test]
async fn empty_and_overlong_line_lists_are_refused() {
    each_backend(|app| async move {
        seed(&app).await;
        let before = snapshot(&app, &[]).await;
        let mut v = Verdicts::new(&app);
        for count in [0, 1001, 5000] {
            let bodies = [
                ("/v1/receipts", json!({"warehouse": BER, "lines": lines(count)})),
                ("/v1/transfers", json!({"from": BER, "to": MUC, "lines": lines(count)})),
                ("/v1/reservations", json!({"ttl_seconds": 60, "lines": lines(count)})),
            ];
            for (path, body) in bodies {
                let reply = app.post(path, body).await;
                v.refused(&format!("POST {path} with {count} lines"), reply, 422, "validation_failed", &["lines"]);
            }
        }
        v.unchanged(&app, &before).await;
        // 1000 lines are accepted.
        let reply = app.post("/v1/receipts", json!({"warehouse": BER, "lines": lines(1000)})).await;
        v.accepted("POST /v1/receipts with 1000 lines", reply, 201);
        v.finish();
    })
    .await;
}

#[tokio::test]
async fn codes_that_break_the_code_rules_are_refused_naming_the_field() {
    each_backend(|app| async move {
        seed(&app).await;
        let before = snapshot(&app, &[]).await;
        let mut v = Verdicts::new(&app);
        let too_long = "A".repeat(65);
        let bad_codes = ["BER 1", " BER-1", too_long.as_str(), "", "BÉR-1", "a/b", "x\u{0}y", "SKU,2", "ж"];
        for code in bad_codes {
            let cases: Vec<(&str, Value, &str)> = vec![
                ("/v1/items", json!({"sku": code, "name": "X"}), "sku"),
                ("/v1/warehouses", json!({"code": code, "name": "X"}), "code"),
                ("/v1/receipts", json!({"warehouse": code, "lines": [line(SHIRT, 1)]}), "warehouse"),
                ("/v1/receipts", json!({"warehouse": BER, "lines": [line(code, 1)]}), "lines[0].sku"),
                ("/v1/receipts", json!({"warehouse": BER, "lines": [line(SHIRT, 1), line(code, 1)]}), "lines[1].sku"),
                ("/v1/adjustments", json!({"warehouse": code, "sku": SHIRT, "delta": 1}), "warehouse"),
                ("/v1/adjustments", json!({"warehouse": BER, "sku": code, "counted": 1}), "sku"),
                ("/v1/transfers", json!({"from": code, "to": MUC, "lines": [line(SHIRT, 1)]}), "from"),
                ("/v1/transfers", json!({"from": BER, "to": code, "lines": [line(SHIRT, 1)]}), "to"),
                ("/v1/transfers", json!({"from": BER, "to": MUC, "lines": [line(code, 1)]}), "lines[0].sku"),
                ("/v1/reservations", json!({"lines": [line(code, 1)]}), "lines[0].sku"),
                (
                    "/v1/reservations",
                    json!({"lines": [{"sku": SHIRT, "quantity": 1, "warehouse": code}]}),
                    "lines[0].warehouse",
                ),
            ];
            for (path, body, field) in cases {
                let reply = app.post(path, body).await;
                v.refused(&format!("POST {path} with {field} {code:?}"), reply, 422, "validation_failed", &[field]);
            }
        }
        v.unchanged(&app, &before).await;
        // 64 characters are accepted.
        let reply = app.post("/v1/items", json!({"sku": "S".repeat(64), "name": "Long"})).await;
        v.accepted("POST /v1/items with a 64-character SKU", reply, 201);
        v.finish();
    })
    .await;
}

#[tokio::test]
async fn unknown_skus_and_warehouses_in_bodies_are_refused_naming_the_field() {
    each_backend(|app| async move {
        seed(&app).await;
        let before = snapshot(&app, &[]).await;
        let mut v = Verdicts::new(&app);
        let cases: Vec<(&str, Value, &str)> = vec![
            ("/v1/receipts", json!({"warehouse": "NOWHERE", "lines": [line(SHIRT, 1)]}), "warehouse"),
            ("/v1/receipts", json!({"warehouse": BER, "lines": [line("NO-SUCH-SKU", 1)]}), "lines[0].sku"),
            (
                "/v1/receipts",
                json!({"warehouse": BER, "lines": [line(SHIRT, 1), line("NO-SUCH-SKU", 1)]}),
                "lines[1].sku",
            ),
            ("/v1/adjustments", json!({"warehouse": "NOWHERE", "sku": SHIRT, "delta": 1}), "warehouse"),
            ("/v1/adjustments", json!({"warehouse": BER, "sku": "NO-SUCH-SKU", "delta": 1}), "sku"),
            ("/v1/adjustments", json!({"warehouse": BER, "sku": "NO-SUCH-SKU", "counted": 4}), "sku"),
            ("/v1/transfers", json!({"from": "NOWHERE", "to": MUC, "lines": [line(SHIRT, 1)]}), "from"),
            ("/v1/transfers", json!({"from": BER, "to": "NOWHERE", "lines": [line(SHIRT, 1)]}), "to"),
            ("/v1/transfers", json!({"from": BER, "to": MUC, "lines": [line("NO-SUCH-SKU", 1)]}), "lines[0].sku"),
            (
                "/v1/transfers",
                json!({"from": BER, "to": MUC, "lines": [line(SHIRT, 1), line("NO-SUCH-SKU", 1)]}),
                "lines[1].sku",
            ),
            ("/v1/reservations", json!({"lines": [line("NO-SUCH-SKU", 1)]}), "lines[0].sku"),
            ("/v1/reservations", json!({"lines": [line(SHIRT, 1), line("NO-SUCH-SKU", 1)]}), "lines[1].sku"),
        ];
        for (path, body, field) in cases {
            let reply = app.post(path, body.clone()).await;
            v.refused(
                &format!("POST {path} with an unknown {field}: {body}"),
                reply,
                422,
                "validation_failed",
                &[field],
            );
        }
        v.unchanged(&app, &before).await;
        v.finish();
    })
    .await;
}

#[tokio::test]

async fn reservation_lines_naming_an_unknown_warehouse_are_refused_naming_the_field() {
    each_backend(|app| async move {
        seed(&app).await;
        let before = snapshot(&app, &[]).await;
        let mut v = Verdicts::new(&app);
        let cases: Vec<(Value, &str)> = vec![
            (json!({"lines": [{"sku": SHIRT, "quantity": 1, "warehouse": "NOWHERE"}]}), "lines[0].warehouse"),
            (
                json!({"lines": [{"sku": SHIRT, "quantity": 1, "warehouse": BER}, {"sku": MUG, "quantity": 1, "warehouse": "NOWHERE"}]}),
                "lines[1].warehouse",
            ),
        ];
        for (body, field) in cases {
            let reply = app.post("/v1/reservations", body.clone()).await;
            v.refused(&format!("POST /v1/reservations with {body}"), reply, 422, "validation_failed", &[field]);
        }
        v.unchanged(&app, &before).await;
        v.finish();
    })
    .await;
}

/// PostgreSQL cannot store a NUL character in text; SQLite can. Either way the answer is not a
/// 5xx: the text is refused naming the field, or stored and read back as sent.
#[tokio::test]

async fn free_text_with_a_nul_character_is_refused_or_stored_never_a_server_error() {
    each_backend(|app| async move {
        seed(&app).await;
        let mut v = Verdicts::new(&app);
        let nul = "before\u{0}after";
        let cases: Vec<(&str, Value, &str, Option<String>)> = vec![
            ("/v1/items", json!({"sku": "NUL-ITEM", "name": nul}), "name", Some("/v1/items/NUL-ITEM".into())),
            ("/v1/warehouses", json!({"code": "NUL-1", "name": nul}), "name", Some("/v1/warehouses/NUL-1".into())),
            ("/v1/receipts", json!({"warehouse": BER, "reference": nul, "lines": [line(SHIRT, 1)]}), "reference", None),
            (
                "/v1/receipts",
                json!({"warehouse": BER, "lines": [{"sku": SHIRT, "quantity": 1, "lot": nul, "expires_on": "2027-03-01"}]}),
                "lines[0].lot",
                None,
            ),
            ("/v1/adjustments", json!({"warehouse": BER, "sku": SHIRT, "delta": 1, "reason": nul}), "reason", None),
            ("/v1/transfers", json!({"from": BER, "to": MUC, "reference": nul, "lines": [line(SHIRT, 1)]}), "reference", None),
            ("/v1/reservations", json!({"reference": nul, "lines": [line(SHIRT, 1)]}), "reference", None),
        ];
        for (path, body, field, read_back) in cases {
            let before = snapshot(&app, &[]).await;
            let reply = app.post(path, body.clone()).await;
            let what = format!("POST {path} with a NUL character in {field}");
            if reply.status.is_success() {
                let stored = match &read_back {
                    Some(read) => app.get(read).await.expect(200),
                    None => reply.body.clone(),
                };
                let sent = if field == "lines[0].lot" { &body["lines"][0]["lot"] } else { &body[field] };
                let kept = if field == "lines[0].lot" { &stored["lines"][0]["lot"] } else { &stored[field] };
                if kept != sent {
                    v.fail(format!("{what}: stored {kept} instead of {sent}"));
                }
            } else {
                v.refused(&what, reply, 422, "validation_failed", &[field]);
                v.unchanged(&app, &before).await;
            }
        }
        v.finish();
    })
    .await;
}

#[tokio::test]

async fn the_bearer_scheme_is_matched_case_insensitively() {
    each_backend(|app| async move {
        seed(&app).await;
        let mut v = Verdicts::new(&app);
        for scheme in ["bearer", "BEARER"] {
            let header = format!("{scheme} {ADMIN_KEY}");
            let reply = app
                .request(Method::GET, &format!("/v1/stock/{SHIRT}"), None, None, &[("authorization", &header)])
                .await;
            v.accepted(&format!("GET /v1/stock/{SHIRT} with `{scheme} <admin key>`"), reply, 200);
        }
        v.finish();
    })
    .await;
}

// ------------------------------------------------------------------------------ paths and queries

#[tokio::test]
async fn unknown_resources_in_paths_are_not_found() {
    each_backend(|app| async move {
        seed(&app).await;
        let id = reserve(&app, 1, BER, 600).await;
        let before = snapshot(&app, &[format!("/v1/reservations/{id}")]).await;
        let mut v = Verdicts::new(&app);
        let too_long = "A".repeat(65);
        let unknown_id = "res_0123456789abcdef0123456789abcdef";
        let long_id = format!("res_{}", "0".repeat(70));
        let mut requests: Vec<(Method, String, Option<Value>)> = Vec::new();
        for sku in ["NO-SUCH-SKU", "has%20space", too_long.as_str(), "%C3%A9", "a%2Fb"] {
            requests.push((Method::GET, format!("/v1/items/{sku}"), None));
            requests.push((Method::GET, format!("/v1/stock/{sku}"), None));
        }
        for code in ["NOWHERE", "bad%20code", too_long.as_str()] {
            requests.push((Method::GET, format!("/v1/warehouses/{code}"), None));
            requests.push((Method::PATCH, format!("/v1/warehouses/{code}"), Some(json!({"priority": 1}))));
        }
        for rid in [unknown_id, "not-an-id", "res_xyz", long_id.as_str(), "res_"] {
            requests.push((Method::GET, format!("/v1/reservations/{rid}"), None));
            for act in ["confirm", "release", "fulfill"] {
                requests.push((Method::POST, format!("/v1/reservations/{rid}/{act}"), None));
            }
        }
        requests.push((Method::GET, "/v1/nothing-here".to_owned(), None));
        requests.push((Method::GET, format!("/v1/items/{SHIRT}/extra"), None));
        requests.push((Method::POST, format!("/v1/reservations/{id}/cancel"), None));
        for (method, path, body) in requests {
            let reply = match &body {
                Some(body) => send(&app, method.clone(), &path, body).await,
                None => app.request(method.clone(), &path, None, Some(ADMIN_KEY), &[]).await,
            };
            v.refused(&format!("{method} {path}"), reply, 404, "not_found", &[]);
        }
        v.unchanged(&app, &before).await;
        v.finish();
    })
    .await;
}

#[tokio::test]
async fn bad_query_parameters_are_refused_naming_the_parameter() {
    each_backend(|app| async move {
        seed(&app).await;
        let before = snapshot(&app, &[]).await;
        let mut v = Verdicts::new(&app);
        let not_a_number_cursor: String = "abc".bytes().map(|b| format!("{b:02x}")).collect();
        let too_long = "A".repeat(65);
        let mut cases: Vec<(String, &str)> = Vec::new();
        for list in ["/v1/warehouses", "/v1/movements", "/v1/items", "/v1/reservations", "/v1/alerts"] {
            for limit in ["0", "1001", "-1", "ten", "1.5", "", "99999999999"] {
                cases.push((format!("{list}?limit={limit}"), "limit"));
            }
            cases.push((format!("{list}?limit=1&limit=2"), "limit"));
            for next in ["garbage", "zz", "%FF%FE", "0"] {
                cases.push((format!("{list}?next={next}"), "next"));
            }
        }
        cases.push((format!("/v1/movements?next={not_a_number_cursor}"), "next"));
        cases.push(("/v1/movements?next=2d31".to_owned(), "next")); // the cursor of "-1"
        for sku in ["bad%20sku", too_long.as_str(), "%C3%A9"] {
            cases.push((format!("/v1/movements?sku={sku}"), "sku"));
            cases.push((format!("/v1/movements?warehouse={sku}"), "warehouse"));
        }
        for after in ["-1", "abc", "1.5", "", "99999999999999999999"] {
            cases.push((format!("/v1/events?after={after}"), "after"));
        }
        for limit in ["0", "1001", "-5", "x", ""] {
            cases.push((format!("/v1/events?limit={limit}"), "limit"));
        }
        let many: Vec<String> = (0..1001).map(|i| format!("S{i}")).collect();
        cases.push(("/v1/stock".to_owned(), "skus"));
        cases.push(("/v1/stock?skus=".to_owned(), "skus"));
        cases.push(("/v1/stock?skus=,,".to_owned(), "skus"));
        cases.push((format!("/v1/stock?skus={}", many.join(",")), "skus"));
        cases.push((format!("/v1/stock?skus={SHIRT},bad%20sku"), "skus"));
        cases.push((format!("/v1/stock?skus={too_long}"), "skus"));
        cases.push((format!("/v1/stock?skus={SHIRT}&warehouse=bad%20code"), "warehouse"));
        cases.push((format!("/v1/stock?skus={SHIRT}&warehouse={too_long}"), "warehouse"));
        // Filters naming what does not exist are refused, not answered with nothing.
        cases.push((format!("/v1/stock?skus={SHIRT}&warehouse=NOPE"), "warehouse"));
        cases.push(("/v1/movements?sku=NO-SUCH-SKU".to_owned(), "sku"));
        cases.push(("/v1/movements?warehouse=NOPE".to_owned(), "warehouse"));
        cases.push((format!("/v1/stock/{SHIRT}/bins?warehouse=NOPE"), "warehouse"));
        cases.push((format!("/v1/stock/{SHIRT}/bins"), "warehouse"));
        cases.push(("/v1/reservations?sku=NO-SUCH-SKU".to_owned(), "sku"));
        cases.push(("/v1/reservations?warehouse=NOPE".to_owned(), "warehouse"));
        cases.push(("/v1/reservations?status=pending".to_owned(), "status"));
        cases.push(("/v1/reservations?reference=".to_owned(), "reference"));
        cases.push(("/v1/alerts?status=closed".to_owned(), "status"));
        cases.push(("/v1/items?archived=maybe".to_owned(), "archived"));
        cases.push(("/v1/items?sku_prefix=bad%20prefix".to_owned(), "sku_prefix"));
        for kind in ["Stock.Changed", "stock..changed", "*", "stock.*.x", ",", "a%20b"] {
            cases.push((format!("/v1/events?type={kind}"), "type"));
        }
        for wait in ["-1", "30001", "soon", ""] {
            cases.push((format!("/v1/events?wait_ms={wait}"), "wait_ms"));
        }
        cases.push(("/v1/events?aggregate=".to_owned(), "aggregate"));
        // A typo in a parameter's name is refused, not ignored.
        cases.push((format!("/v1/movements?skuu={SHIRT}"), "skuu"));
        cases.push((format!("/v1/stock?skus={SHIRT}&warehous={BER}"), "warehous"));
        for (path, field) in cases {
            let shown = if path.len() > 120 { format!("{}…", &path[..120]) } else { path.clone() };
            v.refused(&format!("GET {shown}"), app.get(&path).await, 422, "validation_failed", &[field]);
        }
        v.unchanged(&app, &before).await;
        // The edges are accepted.
        for path in [
            "/v1/warehouses?limit=1000".to_owned(),
            "/v1/movements?limit=1".to_owned(),
            "/v1/events?after=0&limit=1000".to_owned(),
            "/v1/events?type=stock.changed,reservation.*&wait_ms=0".to_owned(),
            "/v1/items?limit=1000&archived=false&sku_prefix=".to_owned(),
            "/v1/reservations?limit=1000&status=active".to_owned(),
            format!("/v1/movements?sku={SHIRT}&warehouse={BER}"),
            format!("/v1/stock?skus={}", many[..1000].join(",")),
        ] {
            let shown = if path.len() > 120 { format!("{}…", &path[..120]) } else { path.clone() };
            v.accepted(&format!("GET {shown}"), app.get(&path).await, 200);
        }
        v.finish();
    })
    .await;
}

/// Every documented operation refuses query parameters it does not take, naming each, before
/// doing anything: a typo (`?skuu=`) or a wish (`?dry_run=true`) is never silently ignored.
#[tokio::test]
async fn unknown_query_parameters_are_refused_naming_each_on_every_endpoint() {
    each_backend(|app| async move {
        let seeded = seed_every_resource(&app).await;
        let operations = documented_operations(&app, &seeded).await;
        let before = snapshot(&app, &reads(&operations)).await;
        let mut v = Verdicts::new(&app);
        for (operation, body) in secured_requests(&operations, &seeded) {
            let (method, path) = (&operation.method, &operation.path);
            let separator = if path.contains('?') { '&' } else { '?' };
            let with_unknown = format!("{path}{separator}dry_run=true&zz_typo=1");
            let reply = match &body {
                Some(body) => send(&app, method.clone(), &with_unknown, body).await,
                None => app.request(method.clone(), &with_unknown, None, Some(ADMIN_KEY), &[]).await,
            };
            let what = format!("{method} {with_unknown}");
            let problem = v.refused(&what, reply, 422, "validation_failed", &["dry_run"]);
            let named: Vec<&str> =
                problem["errors"].as_array().into_iter().flatten().filter_map(|e| e["field"].as_str()).collect();
            if !named.contains(&"zz_typo") {
                v.fail(format!("{what}: the second unknown parameter is not named: {problem}"));
            }
        }
        v.unchanged(&app, &before).await;
        v.finish();
    })
    .await;
}

#[tokio::test]
async fn bodies_over_the_size_limit_are_refused_as_payload_too_large() {
    each_backend(|app| async move {
        let seeded = seed_every_resource(&app).await;
        let operations = documented_operations(&app, &seeded).await;
        let before = snapshot(&app, &reads(&operations)).await;
        let mut v = Verdicts::new(&app);
        for (operation, valid) in writes(&operations, &seeded) {
            let (method, path) = (&operation.method, &operation.path);
            let size = body_limit(&operation.template) + 1024;
            let body = with(valid, "padding", json!("x".repeat(size)));
            let reply = send(&app, method.clone(), path, &body).await;
            v.refused(&format!("{method} {path} with a body of {size} bytes"), reply, 413, "payload_too_large", &[]);
        }
        let huge_lines = json!({"warehouse": BER, "reference": "r".repeat(2 * MIB), "lines": [line(SHIRT, 1)]});
        let reply = app.post("/v1/receipts", huge_lines).await;
        v.refused("POST /v1/receipts with a 2 MiB reference", reply, 413, "payload_too_large", &[]);
        v.unchanged(&app, &before).await;
        v.finish();
    })
    .await;
}

// ------------------------------------------------------------------------------ keys

#[tokio::test]
async fn requests_without_a_valid_key_are_unauthorized_on_every_endpoint() {
    each_backend(|app| async move {
        let seeded = seed_every_resource(&app).await;
        let operations = documented_operations(&app, &seeded).await;
        let before = snapshot(&app, &reads(&operations)).await;
        let mut v = Verdicts::new(&app);
        let long_key = "k".repeat(10_000);
        let wrong: [(&str, Option<&str>, Option<&str>); 7] = [
            ("no Authorization", None, None),
            ("an unknown key", Some("sk_0123456789abcdef0123456789abcdef"), None),
            ("the admin key with a typo", Some("test-admin-keY"), None),
            ("Basic credentials", None, Some("Basic dGVzdC1hZG1pbi1rZXk6")),
            ("Bearer without a key", None, Some("Bearer ")),
            ("the key without a scheme", None, Some(ADMIN_KEY)),
            ("a 10000-character key", Some(long_key.as_str()), None),
        ];
        let requests = secured_requests(&operations, &seeded);
        let mut swept = std::collections::BTreeSet::new();
        for (operation, body) in &requests {
            let (method, path) = (&operation.method, &operation.path);
            for (what, key, header) in &wrong {
                let headers: Vec<(&str, &str)> = header.iter().map(|h| ("authorization", *h)).collect();
                let body = body.as_ref().map(|b| (JSON, serde_json::to_vec(b).expect("serialize")));
                let reply = app.request(method.clone(), path, body, *key, &headers).await;
                let challenge = reply.headers.get("www-authenticate").and_then(|h| h.to_str().ok()).map(str::to_owned);
                if challenge.as_deref() != Some("Bearer") {
                    v.fail(format!("{method} {path} with {what}: WWW-Authenticate is {challenge:?}, not Bearer"));
                }
                v.refused(&format!("{method} {path} with {what}"), reply, 401, "unauthorized", &[]);
            }
            swept.insert((method.to_string(), operation.template.clone()));
        }
        let secured = operations.iter().filter(|o| o.secured).count();
        assert!(
            swept.len() >= secured,
            "[{}] the sweep covered {} of the {secured} secured operations",
            app.label(),
            swept.len()
        );
        v.unchanged(&app, &before).await;
        // What the document leaves unsecured needs no key; so does the document itself.
        for operation in operations.iter().filter(|o| !o.secured) {
            let (method, path) = (&operation.method, &operation.path);
            if *method == Method::GET {
                v.accepted(
                    &format!("GET {path} without a key"),
                    app.request(Method::GET, path, None, None, &[]).await,
                    200,
                );
            } else {
                v.fail(format!("{method} {path} is documented without security; this test checks only such reads"));
            }
        }
        let reply = app.request(Method::GET, "/openapi.json", None, None, &[]).await;
        v.accepted("GET /openapi.json without a key", reply, 200);
        v.finish();
    })
    .await;
}

#[tokio::test]
async fn a_key_without_the_scope_is_forbidden_on_every_endpoint() {
    each_backend(|app| async move {
        let seeded = seed_every_resource(&app).await;
        let operations = documented_operations(&app, &seeded).await;
        let now = SystemClock.now();
        let read = api::auth::key_create(&app.db, &[Scope::InventoryRead], "test", now).await.expect("create a key");
        let write = api::auth::key_create(&app.db, &[Scope::InventoryWrite], "test", now).await.expect("create a key");
        let catalog_read =
            api::auth::key_create(&app.db, &[Scope::CatalogRead], "test", now).await.expect("create a key");
        let catalog_write =
            api::auth::key_create(&app.db, &[Scope::CatalogWrite], "test", now).await.expect("create a key");
        let orders_read =
            api::auth::key_create(&app.db, &[Scope::OrdersRead], "test", now).await.expect("create a key");
        let orders_write =
            api::auth::key_create(&app.db, &[Scope::OrdersWrite], "test", now).await.expect("create a key");
        let webhooks_admin =
            api::auth::key_create(&app.db, &[Scope::WebhooksAdmin], "test", now).await.expect("create a key");
        let before = snapshot(&app, &reads(&operations)).await;
        let mut v = Verdicts::new(&app);
        for (operation, body) in secured_requests(&operations, &seeded) {
            let (method, path) = (&operation.method, &operation.path);
            let bytes = body.as_ref().map(|b| (JSON, serde_json::to_vec(b).expect("serialize")));
            // Webhook routes, reads included, take `webhooks:admin` only.
            if operation.template.starts_with("/v1/webhooks") {
                for (what, key) in [
                    ("inventory:read", &read),
                    ("inventory:write", &write),
                    ("catalog:write", &catalog_write),
                    ("orders:write", &orders_write),
                ] {
                    let reply = app.request(method.clone(), path, bytes.clone(), Some(&key.secret), &[]).await;
                    v.refused(&format!("{method} {path} with an {what} key"), reply, 403, "forbidden", &[]);
                }
                if *method == Method::GET {
                    let reply = app.request(method.clone(), path, None, Some(&webhooks_admin.secret), &[]).await;
                    v.accepted(&format!("{method} {path} with a webhooks:admin key"), reply, 200);
                }
                continue;
            }
            // Catalog routes take the catalog scopes, order routes the order ones, every other
            // route the inventory ones.
            let (read_key, write_key, other_read, area) = if is_catalog_route(&operation.template) {
                (&catalog_read, &catalog_write, &read, "catalog")
            } else if is_order_route(&operation.template) {
                (&orders_read, &orders_write, &catalog_read, "orders")
            } else {
                (&read, &write, &orders_read, "inventory")
            };
            let reply = app.request(method.clone(), path, bytes.clone(), Some(&read_key.secret), &[]).await;
            if *method == Method::GET {
                v.accepted(&format!("{method} {path} with an {area}:read key"), reply, 200);
                let reply = app.request(method.clone(), path, None, Some(&write_key.secret), &[]).await;
                v.refused(&format!("{method} {path} with an {area}:write key"), reply, 403, "forbidden", &[]);
                let reply = app.request(method.clone(), path, None, Some(&other_read.secret), &[]).await;
                v.refused(&format!("{method} {path} with a read key of another area"), reply, 403, "forbidden", &[]);
            } else {
                v.refused(&format!("{method} {path} with an {area}:read key"), reply, 403, "forbidden", &[]);
            }
        }
        v.unchanged(&app, &before).await;
        v.finish();
    })
    .await;
}

/// The catalog's routes, which need `catalog:*` scopes (API.md, "The rest of the platform").
fn is_catalog_route(template: &str) -> bool {
    ["/v1/channels", "/v1/products", "/v1/prices", "/v1/availability", "/v1/search"]
        .iter()
        .any(|prefix| template == *prefix || template.starts_with(&format!("{prefix}/")))
        || template.ends_with("/shipping-rates")
}

/// The order context's routes, which need `orders:*` scopes.
fn is_order_route(template: &str) -> bool {
    ["/v1/carts", "/v1/orders", "/v1/promotions", "/v1/sourcing", "/v1/sagas"]
        .iter()
        .any(|prefix| template == *prefix || template.starts_with(&format!("{prefix}/")))
}

// ------------------------------------------------------------------------------ idempotency

#[tokio::test]
async fn reusing_an_idempotency_key_with_another_body_is_refused_and_the_same_body_replays() {
    each_backend(|app| async move {
        seed(&app).await;
        let mut v = Verdicts::new(&app);
        let (a, b) = (reserve(&app, 1, BER, 600).await, reserve(&app, 1, BER, 600).await);
        let creations = [
            ("/v1/items", json!({"sku": "IDEM-1", "name": "A"}), json!({"sku": "IDEM-2", "name": "B"})),
            ("/v1/warehouses", json!({"code": "IDEM-1", "name": "A"}), json!({"code": "IDEM-2", "name": "B"})),
            (
                "/v1/receipts",
                json!({"warehouse": BER, "lines": [line(SHIRT, 2)]}),
                json!({"warehouse": BER, "lines": [line(SHIRT, 3)]}),
            ),
            (
                "/v1/adjustments",
                json!({"warehouse": BER, "sku": MUG, "delta": 1}),
                json!({"warehouse": BER, "sku": MUG, "delta": 2}),
            ),
            (
                "/v1/transfers",
                json!({"from": BER, "to": MUC, "lines": [line(SHIRT, 1)]}),
                json!({"from": MUC, "to": BER, "lines": [line(SHIRT, 1)]}),
            ),
            (
                "/v1/reservations",
                json!({"ttl_seconds": 600, "lines": [line(SHIRT, 1)]}),
                json!({"ttl_seconds": 600, "lines": [line(SHIRT, 2)]}),
            ),
            // A refusal (409) is an answer too: repeating it replays it.
            ("/v1/reservations", json!({"lines": [line(SHIRT, 500)]}), json!({"lines": [line(SHIRT, 600)]})),
        ];
        for (n, (path, body, other)) in creations.into_iter().enumerate() {
            let key = format!("idem-{n}");
            let headers = [("Idempotency-Key", key.as_str())];
            let original = app.post_with(path, body.clone(), &headers).await;
            let (status, original_body) = (original.status.as_u16(), original.body);
            let expected = if n == 6 { 409 } else { 201 };
            if status != expected {
                v.fail(format!("POST {path} with key {key}: {status} instead of {expected}; body: {original_body}"));
            }
            let before = snapshot(&app, &[]).await;
            let again = app.post_with(path, body.clone(), &headers).await;
            if again.status.as_u16() != status || again.body != original_body {
                v.fail(format!(
                    "POST {path} repeated with key {key}: {} {} instead of {status} {original_body}",
                    again.status.as_u16(),
                    again.body
                ));
            }
            let reply = app.post_with(path, other.clone(), &headers).await;
            v.refused(
                &format!("POST {path} with key {key} and another body"),
                reply,
                422,
                "idempotency_key_reused",
                &[],
            );
            v.unchanged(&app, &before).await;
        }
        // Actions on reservations: the key guards the reservation it was first used on.
        for act in ["confirm", "release"] {
            let key = format!("act-{act}");
            let headers = [("Idempotency-Key", key.as_str())];
            let path_a = format!("/v1/reservations/{a}/{act}");
            let first = app.request(Method::POST, &path_a, None, Some(ADMIN_KEY), &headers).await;
            let (status, first_body) = (first.status.as_u16(), first.body);
            let again = app.request(Method::POST, &path_a, None, Some(ADMIN_KEY), &headers).await;
            if status != 200 || again.status.as_u16() != 200 || again.body != first_body {
                v.fail(format!(
                    "POST {path_a} twice with key {key}: {status} then {} {}",
                    again.status.as_u16(),
                    again.body
                ));
            }
            let path_b = format!("/v1/reservations/{b}/{act}");
            let reply = app.request(Method::POST, &path_b, None, Some(ADMIN_KEY), &headers).await;
            v.refused(&format!("POST {path_b} with key {key} used on {a}"), reply, 422, "idempotency_key_reused", &[]);
        }
        let reservation_b = app.get(&format!("/v1/reservations/{b}")).await.expect(200);
        if reservation_b["status"] != "active" {
            v.fail(format!("reservation {b} changed under a reused key: {reservation_b}"));
        }
        // Keys themselves are checked.
        let before_bad_keys = snapshot(&app, &[]).await;
        for key in ["".to_owned(), "k".repeat(256)] {
            let reply =
                app.post_with("/v1/items", json!({"sku": "IDEM-9", "name": "X"}), &[("Idempotency-Key", &key)]).await;
            v.refused(
                &format!("POST /v1/items with an Idempotency-Key of {} characters", key.len()),
                reply,
                422,
                "validation_failed",
                &["Idempotency-Key"],
            );
        }
        v.unchanged(&app, &before_bad_keys).await;
        v.finish();
    })
    .await;
}

// ------------------------------------------------------------------------------ state

#[tokio::test]
async fn requests_beyond_the_stock_or_in_the_wrong_state_are_refused_and_change_nothing() {
    each_backend(|app| async move {
        seed(&app).await;
        // BER-1 SHIRT: 10 on hand, 2 reserved by `held`, later more by the others.
        let held = reserve(&app, 2, BER, 600).await;
        let released = reserve(&app, 1, MUC, 600).await;
        action(&app, &released, "release").await;
        let fulfilled = reserve(&app, 1, MUC, 600).await;
        action(&app, &fulfilled, "confirm").await;
        action(&app, &fulfilled, "fulfill").await;
        let expired = reserve(&app, 1, MUC, 1).await;
        // Wait for the sweeper to expire it, so that it does not change anything later.
        let mut swept = false;
        for _ in 0..100 {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            let movements = app.get(&format!("/v1/movements?sku={SHIRT}&warehouse={MUC}&limit=1000")).await.expect(200);
            let items = movements["items"].as_array().cloned().unwrap_or_default();
            if items.iter().any(|m| m["kind"] == "expire") {
                swept = true;
                break;
            }
        }
        assert!(swept, "[{}] the sweeper expired the reservation", app.label());
        // SHIRT: BER-1 10 on hand, 2 reserved; MUC-1 4 on hand, 0 reserved. MUG: BER-1 3.
        let watched: Vec<String> =
            [&held, &released, &fulfilled, &expired].iter().map(|id| format!("/v1/reservations/{id}")).collect();
        let before = snapshot(&app, &watched).await;
        let mut v = Verdicts::new(&app);

        let shorts: Vec<(&str, Value)> = vec![
            ("/v1/reservations", json!({"lines": [line(SHIRT, 13)]})),
            ("/v1/reservations", json!({"lines": [{"sku": SHIRT, "quantity": 9, "warehouse": BER}]})),
            ("/v1/reservations", json!({"lines": [line(MUG, 1), line(SHIRT, 13)]})),
            ("/v1/reservations", json!({"lines": [{"sku": MUG, "quantity": 1, "warehouse": MUC}]})),
            ("/v1/transfers", json!({"from": BER, "to": MUC, "lines": [line(SHIRT, 9)]})),
            ("/v1/transfers", json!({"from": BER, "to": MUC, "lines": [line(MUG, 1), line(SHIRT, 9)]})),
            ("/v1/transfers", json!({"from": MUC, "to": BER, "lines": [line(MUG, 1)]})),
            ("/v1/adjustments", json!({"warehouse": BER, "sku": SHIRT, "delta": -9})),
            ("/v1/adjustments", json!({"warehouse": BER, "sku": SHIRT, "counted": 1})),
            ("/v1/adjustments", json!({"warehouse": BER, "sku": MUG, "delta": -4})),
            ("/v1/adjustments", json!({"warehouse": MUC, "sku": MUG, "delta": -1})),
        ];
        for (path, body) in shorts {
            let reply = app.post(path, body.clone()).await;
            let problem = v.refused(&format!("POST {path} with {body}"), reply, 409, "insufficient_stock", &[]);
            if path == "/v1/reservations" {
                let short = problem["lines"].as_array().cloned().unwrap_or_default();
                if short.is_empty()
                    || short
                        .iter()
                        .any(|l| !l["sku"].is_string() || !l["requested"].is_i64() || !l["available"].is_i64())
                {
                    v.fail(format!("POST {path} with {body}: no lines [{{sku, requested, available}}] in {problem}"));
                }
            }
        }
        let reply = app.post("/v1/reservations", json!({"lines": [line(SHIRT, 13)]})).await;
        let short = &reply.body["lines"][0];
        if short["sku"] != SHIRT || short["requested"] != 13 || short["available"] != 12 {
            v.fail(format!("a hold of 13 SHIRT with 12 available reports {}", reply.body));
        }

        let wrong_state = [
            (&held, "fulfill"),
            (&released, "confirm"),
            (&released, "fulfill"),
            (&fulfilled, "release"),
            (&expired, "confirm"),
            (&expired, "fulfill"),
        ];
        for (id, act) in wrong_state {
            let reply = app.post(&format!("/v1/reservations/{id}/{act}"), Value::Null).await;
            v.refused(&format!("POST /v1/reservations/{id}/{act}"), reply, 409, "invalid_state", &[]);
        }
        v.unchanged(&app, &before).await;
        v.finish();
    })
    .await;
}
