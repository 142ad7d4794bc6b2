//! Issue 15, the warehouse core as a new user finds it: strict queries, every bad field at
//! once, clear refusals, null for what is missing, the event feed's head, filters and long
//! poll, item lookups and updates, reservation lookups and extension. Over HTTP against the
//! real app, on every backend.

use reqwest::Method;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use testkit::{ADMIN_KEY, TestApp, each_backend};

const BER: &str = "BER-1";
const MUC: &str = "MUC-1";
const SHIRT: &str = "SHIRT";
const MUG: &str = "MUG";
const MILK: &str = "MILK";

/// BER-1 and MUC-1, SHIRT (10 in BER-1, 5 in MUC-1), MUG (3 in BER-1), lot-tracked MILK.
async fn seed(app: &TestApp) {
    app.create_warehouse(BER, 10).await;
    app.create_warehouse(MUC, 20).await;
    app.create_item(SHIRT).await;
    app.create_item(MUG).await;
    app.post("/v1/items", json!({"sku": MILK, "name": "Milk", "track_lots": true})).await.expect(201);
    app.receive(BER, SHIRT, 10).await;
    app.receive(MUC, SHIRT, 5).await;
    app.receive(BER, MUG, 3).await;
}

/// The fields a 422 names, sorted.
#[track_caller]
fn fields(problem: &Value) -> Vec<String> {
    let mut named: Vec<String> = problem["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no errors in {problem}"))
        .iter()
        .map(|e| e["field"].as_str().expect("a field").to_owned())
        .collect();
    named.sort();
    named
}

fn sorted(names: &[&str]) -> Vec<String> {
    let mut names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    names.sort();
    names
}

fn hold(lines: Value) -> Value {
    json!({"ttl_seconds": 600, "lines": lines})
}

async fn reserve(app: &TestApp, body: Value) -> Value {
    app.post("/v1/reservations", body).await.expect(201)
}

// ------------------------------------------------------------------------------ strictness

#[tokio::test]
async fn every_bad_query_parameter_is_reported_at_once() {
    each_backend(|app| async move {
        seed(&app).await;
        let problem = app
            .get("/v1/movements?sku=bad%20sku&warehouse=NOPE&limit=0&next=garbage&skuu=X")
            .await
            .expect_problem(422, "validation_failed");
        assert_eq!(fields(&problem), sorted(&["sku", "warehouse", "limit", "next", "skuu"]), "[{}]", app.label());

        let problem =
            app.get("/v1/stock?skus=A,bad%20sku&warehouse=NOPE").await.expect_problem(422, "validation_failed");
        assert_eq!(fields(&problem), sorted(&["skus", "warehouse"]), "[{}] {problem}", app.label());

        let problem = app
            .get("/v1/events?after=-1&limit=0&type=Bad&wait_ms=99999&aggregate=")
            .await
            .expect_problem(422, "validation_failed");
        assert_eq!(
            fields(&problem),
            sorted(&["after", "limit", "type", "wait_ms", "aggregate"]),
            "[{}] {problem}",
            app.label()
        );

        // An unknown warehouse filter is an error, not a page of zeros.
        let problem =
            app.get(&format!("/v1/stock?skus={SHIRT}&warehouse=NOPE")).await.expect_problem(422, "validation_failed");
        assert_eq!(fields(&problem), ["warehouse"]);
        assert!(problem["detail"].as_str().unwrap().contains("NOPE"), "{problem}");
        let known = app.get(&format!("/v1/stock?skus={SHIRT}&warehouse={BER}")).await.expect(200);
        assert_eq!(known["items"][0]["on_hand"], 10, "[{}] {known}", app.label());

        // A route that takes no parameters refuses any, on reads and on writes.
        let problem =
            app.get(&format!("/v1/items/{SHIRT}?expand=stock")).await.expect_problem(422, "validation_failed");
        assert_eq!(fields(&problem), ["expand"]);
        let before = app.stock(SHIRT).await;
        let reply = app
            .post("/v1/receipts?dry_run=true", json!({"warehouse": BER, "lines": [{"sku": SHIRT, "quantity": 1}]}))
            .await;
        assert_eq!(fields(&reply.expect_problem(422, "validation_failed")), ["dry_run"]);
        assert_eq!(app.stock(SHIRT).await, before, "[{}] a refused receipt changed stock", app.label());
    })
    .await;
}

#[tokio::test]
async fn bodies_with_several_bad_values_name_every_one() {
    each_backend(|app| async move {
        seed(&app).await;
        let before = (app.stock(SHIRT).await, app.all_events().await.len());
        let cases: Vec<(&str, Value, Vec<&str>)> = vec![
            (
                "/v1/warehouses",
                json!({"code": "NEW-1", "name": "", "latitude": 91, "longitude": 200, "priority": -1, "country": "Germany"}),
                vec!["name", "latitude", "longitude", "priority", "country"],
            ),
            (
                "/v1/receipts",
                json!({"warehouse": "NOWHERE", "reference": "", "lines": [
                    {"sku": "NO-SUCH", "quantity": 1},
                    {"sku": SHIRT, "quantity": 1, "lot": "L1"},
                    {"sku": MILK, "quantity": 1},
                    {"sku": MUG, "quantity": 1, "expires_on": "yesterday"}]}),
                // The request's own errors and what the database finds, in one answer.
                vec![
                    "reference",
                    "lines[3].expires_on",
                    "warehouse",
                    "lines[0].sku",
                    "lines[1].lot",
                    "lines[2].lot",
                    "lines[2].expires_on",
                ],
            ),
            (
                "/v1/receipts",
                json!({"warehouse": "NOWHERE", "lines": [
                    {"sku": "NO-SUCH", "quantity": 1},
                    {"sku": SHIRT, "quantity": 1, "lot": "L1"},
                    {"sku": MILK, "quantity": 1},
                    {"sku": "NO-SUCH-2", "quantity": 1}]}),
                vec![
                    "warehouse",
                    "lines[0].sku",
                    "lines[1].lot",
                    "lines[2].lot",
                    "lines[2].expires_on",
                    "lines[3].sku",
                ],
            ),
            (
                "/v1/transfers",
                json!({"from": "NOWHERE", "to": "ELSEWHERE", "lines": [{"sku": "NO-SUCH", "quantity": 1}]}),
                vec!["from", "to", "lines[0].sku"],
            ),
            (
                "/v1/transfers",
                json!({"from": BER, "to": "ELSEWHERE", "reference": "", "lines": [{"sku": "NO-SUCH", "quantity": 1}]}),
                vec!["reference", "to", "lines[0].sku"],
            ),
            ("/v1/adjustments", json!({"warehouse": "NOWHERE", "sku": "NO-SUCH", "delta": 1}), vec!["warehouse", "sku"]),
            (
                "/v1/adjustments",
                json!({"warehouse": BER, "sku": SHIRT, "delta": 0, "reason": "", "lot": ""}),
                vec!["delta", "reason", "lot"],
            ),
            (
                "/v1/adjustments",
                json!({"warehouse": "NOWHERE", "sku": SHIRT, "counted": -1, "lot": "L1"}),
                vec!["counted", "warehouse", "lot"],
            ),
            (
                "/v1/reservations",
                hold(json!([{"sku": "NO-SUCH", "quantity": 1},
                            {"sku": SHIRT, "quantity": 1, "warehouse": "NOWHERE"},
                            {"sku": "NO-SUCH-2", "quantity": 1, "warehouse": "ELSEWHERE"}])),
                vec!["lines[0].sku", "lines[1].warehouse", "lines[2].sku", "lines[2].warehouse"],
            ),
            (
                "/v1/reservations",
                json!({"ttl_seconds": 0, "reference": "a\u{0}b", "lines": []}),
                vec!["ttl_seconds", "reference", "lines"],
            ),
            (
                "/v1/reservations",
                json!({"ttl_seconds": 0, "lines": [{"sku": "NO-SUCH", "quantity": 1}, {"sku": SHIRT, "quantity": 1, "warehouse": "NOWHERE"}]}),
                vec!["ttl_seconds", "lines[0].sku", "lines[1].warehouse"],
            ),
            (
                "/v1/counts",
                json!({"warehouse": "NOWHERE", "skus": ["NO-SUCH", MILK]}),
                vec!["warehouse", "skus[0]", "skus[1]"],
            ),
            (
                "/v1/counts",
                json!({"warehouse": BER, "zone": "", "recount_threshold_units": -1, "skus": [MILK]}),
                vec!["zone", "recount_threshold_units", "skus[0]"],
            ),
        ];
        for (path, body, expected) in cases {
            let problem = app.post(path, body.clone()).await.expect_problem(422, "validation_failed");
            assert_eq!(fields(&problem), sorted(&expected), "[{}] POST {path} {body}: {problem}", app.label());
            for field in &expected {
                assert!(problem["detail"].as_str().unwrap().contains(field), "[{}] detail of {problem}", app.label());
            }
        }
        assert_eq!((app.stock(SHIRT).await, app.all_events().await.len()), before, "[{}] a refusal changed something", app.label());
        app.reconcile().await;
    })
    .await;
}

#[tokio::test]
async fn a_method_a_path_does_not_take_is_method_not_allowed() {
    each_backend(|app| async move {
        seed(&app).await;
        for (method, path) in [
            (Method::DELETE, format!("/v1/items/{SHIRT}")),
            (Method::PUT, "/v1/reservations".to_owned()),
            (Method::POST, format!("/v1/stock/{SHIRT}")),
            (Method::DELETE, "/v1/warehouses".to_owned()),
            (Method::PATCH, "/v1/events".to_owned()),
        ] {
            let reply = app.request(method.clone(), &path, None, Some(ADMIN_KEY), &[]).await;
            // RFC 9110: a 405 lists the methods the path takes.
            let allow = reply.headers.get("allow").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
            assert!(allow.contains("GET"), "[{}] {method} {path}: Allow {allow:?}", app.label());
            let problem = reply.expect_problem(405, "method_not_allowed");
            assert_eq!(
                problem["type"],
                "urn:stockroom:problem:method_not_allowed",
                "[{}] {method} {path}",
                app.label()
            );
            assert_eq!(problem["title"], "Method not allowed");
        }
    })
    .await;
}

// ------------------------------------------------------------------------------ lots and counts

#[tokio::test]
async fn lot_fields_for_an_item_that_does_not_track_lots_are_refused_never_dropped() {
    each_backend(|app| async move {
        seed(&app).await;
        let before = app.stock(SHIRT).await;
        let receipt = |line: Value| json!({"warehouse": BER, "lines": [line]});
        for (line, expected) in [
            (json!({"sku": SHIRT, "quantity": 2, "lot": "L1"}), vec!["lines[0].lot"]),
            (json!({"sku": SHIRT, "quantity": 2, "expires_on": "2030-01-01"}), vec!["lines[0].expires_on"]),
            (
                json!({"sku": SHIRT, "quantity": 2, "lot": "L1", "expires_on": "2030-01-01"}),
                vec!["lines[0].lot", "lines[0].expires_on"],
            ),
        ] {
            let problem =
                app.post("/v1/receipts", receipt(line.clone())).await.expect_problem(422, "validation_failed");
            assert_eq!(fields(&problem), sorted(&expected), "[{}] {line}: {problem}", app.label());
            assert!(problem["detail"].as_str().unwrap().contains("does not track lots"), "{problem}");
        }
        let problem = app
            .post("/v1/adjustments", json!({"warehouse": BER, "sku": SHIRT, "delta": 1, "lot": "L1"}))
            .await
            .expect_problem(422, "validation_failed");
        assert_eq!(fields(&problem), ["lot"], "[{}] {problem}", app.label());
        assert_eq!(app.stock(SHIRT).await, before, "[{}] a refused line changed stock", app.label());

        // The same lines without lot fields, and lot-tracked lines with them, are accepted.
        let created = app.post("/v1/receipts", receipt(json!({"sku": SHIRT, "quantity": 2}))).await.expect(201);
        assert!(created["lines"][0].get("lot").is_none(), "{created}");
        let milk = json!({"sku": MILK, "quantity": 2, "lot": "L1", "expires_on": "2099-01-01"});
        let created = app.post("/v1/receipts", receipt(milk)).await.expect(201);
        assert_eq!(created["lines"][0]["lot"], "L1");
        app.reconcile().await;
    })
    .await;
}

#[tokio::test]
async fn a_count_of_a_lot_tracked_item_is_refused_when_opened_and_count_refusals_speak_of_the_count() {
    each_backend(|app| async move {
        seed(&app).await;
        let problem = app
            .post("/v1/counts", json!({"warehouse": BER, "skus": [MUG, MILK]}))
            .await
            .expect_problem(422, "validation_failed");
        assert_eq!(fields(&problem), ["skus[1]"], "[{}] {problem}", app.label());
        assert!(problem["detail"].as_str().unwrap().contains("per lot"), "{problem}");

        // A whole-warehouse count leaves lot-tracked stock out, so it can be finished.
        app.post(
            "/v1/receipts",
            json!({"warehouse": BER, "lines": [{"sku": MILK, "quantity": 2, "lot": "L1", "expires_on": "2099-01-01"}]}),
        )
        .await
        .expect(201);
        let count = app.post("/v1/counts", json!({"warehouse": BER})).await.expect(201);
        let lines = count["lines"].as_array().unwrap();
        assert!(lines.iter().all(|l| l["sku"] != MILK), "[{}] {count}", app.label());
        let id = count["id"].as_str().unwrap();
        // What is there: nothing far off, nothing to recount.
        let counted: Vec<Value> = lines
            .iter()
            .map(|l| json!({"bin": l["bin"], "sku": l["sku"], "counted": if l["sku"] == SHIRT { 10 } else { 3 }}))
            .collect();
        app.post(&format!("/v1/counts/{id}/lines"), json!({"lines": counted})).await.expect(200);
        let problem = app
            .post(&format!("/v1/counts/{id}/lines"), json!({"lines": [{"sku": MILK, "counted": 1}]}))
            .await
            .expect_problem(422, "validation_failed");
        assert_eq!(fields(&problem), ["lines[0].sku"]);
        // Form and database errors of counted lines in one answer.
        let problem = app
            .post(
                &format!("/v1/counts/{id}/lines"),
                json!({"lines": [{"sku": MUG, "counted": -1}, {"sku": "NO-SUCH", "counted": 1}, {"sku": MUG, "bin": "NOWHERE", "counted": 1}]}),
            )
            .await
            .expect_problem(422, "validation_failed");
        assert_eq!(fields(&problem), sorted(&["lines[0].counted", "lines[1].sku", "lines[2].bin"]), "[{}] {problem}", app.label());
        app.post(&format!("/v1/counts/{id}/approve"), json!({})).await.expect(200);
        for action in ["approve", "cancel"] {
            let problem =
                app.post(&format!("/v1/counts/{id}/{action}"), json!({})).await.expect_problem(409, "invalid_state");
            let detail = problem["detail"].as_str().unwrap();
            assert!(
                detail.contains("count") && !detail.contains("reservation"),
                "[{}] {action}: {detail}",
                app.label()
            );
        }
        app.reconcile().await;
    })
    .await;
}

// ------------------------------------------------------------------------------ clear refusals

#[tokio::test]
async fn a_hold_on_an_inactive_warehouse_and_fulfilling_an_unconfirmed_reservation_say_why() {
    each_backend(|app| async move {
        seed(&app).await;
        app.patch(&format!("/v1/warehouses/{MUC}"), json!({"active": false})).await.expect(200);
        let problem = app
            .post("/v1/reservations", hold(json!([{"sku": SHIRT, "quantity": 1, "warehouse": MUC}])))
            .await
            .expect_problem(409, "insufficient_stock");
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains(&format!("warehouse {MUC} is inactive")), "[{}] {detail}", app.label());
        assert_eq!(problem["lines"][0]["reason"], "warehouse_inactive", "{problem}");
        assert_eq!(problem["lines"][0]["warehouse"], MUC);
        // A line short in an active warehouse gives no such reason.
        let problem = app
            .post("/v1/reservations", hold(json!([{"sku": SHIRT, "quantity": 99, "warehouse": BER}])))
            .await
            .expect_problem(409, "insufficient_stock");
        assert!(problem["lines"][0].get("reason").is_none(), "{problem}");

        let active = reserve(&app, hold(json!([{"sku": SHIRT, "quantity": 1}]))).await;
        let id = active["id"].as_str().unwrap();
        let problem =
            app.post(&format!("/v1/reservations/{id}/fulfill"), json!({})).await.expect_problem(409, "invalid_state");
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains("active") && detail.contains("confirm"), "[{}] {detail}", app.label());
        app.post(&format!("/v1/reservations/{id}/release"), json!({})).await.expect(200);
        let problem =
            app.post(&format!("/v1/reservations/{id}/confirm"), json!({})).await.expect_problem(409, "invalid_state");
        assert_eq!(problem["detail"], "the reservation is released and cannot be confirmed", "[{}]", app.label());
        app.reconcile().await;
    })
    .await;
}

#[tokio::test]
async fn a_missing_reference_is_null_and_a_confirmed_reservation_has_no_expiry() {
    each_backend(|app| async move {
        seed(&app).await;
        let created = reserve(&app, hold(json!([{"sku": SHIRT, "quantity": 1}]))).await;
        assert_eq!(created["reference"], Value::Null, "[{}] {created}", app.label());
        assert!(created["expires_at"].is_string(), "{created}");
        let id = created["id"].as_str().unwrap();
        let read = app.get(&format!("/v1/reservations/{id}")).await.expect(200);
        assert_eq!(read["reference"], Value::Null, "{read}");
        let confirmed = app.post(&format!("/v1/reservations/{id}/confirm"), json!({})).await.expect(200);
        assert_eq!(confirmed["status"], "confirmed");
        assert_eq!(confirmed["expires_at"], Value::Null, "[{}] {confirmed}", app.label());
        assert_eq!(app.get(&format!("/v1/reservations/{id}")).await.expect(200)["expires_at"], Value::Null);
        // An explicit empty reference is no reference either.
        let blank = reserve(&app, json!({"reference": "", "lines": [{"sku": SHIRT, "quantity": 1}]})).await;
        assert_eq!(blank["reference"], Value::Null, "{blank}");
        let named = reserve(&app, json!({"reference": "cart-7", "lines": [{"sku": SHIRT, "quantity": 1}]})).await;
        assert_eq!(named["reference"], "cart-7");

        let receipt = app
            .post("/v1/receipts", json!({"warehouse": BER, "lines": [{"sku": MUG, "quantity": 1}]}))
            .await
            .expect(201);
        assert_eq!(receipt["reference"], Value::Null, "{receipt}");
        let transfer = app
            .post("/v1/transfers", json!({"from": BER, "to": MUC, "lines": [{"sku": MUG, "quantity": 1}]}))
            .await
            .expect(201);
        assert_eq!(transfer["reference"], Value::Null, "{transfer}");

        let events = app.all_events().await;
        let of = |kind: &str| {
            events.iter().find(|e| e["type"] == kind && e["aggregate"] == format!("reservation:{id}")).cloned()
        };
        let created_event = of("reservation.created").expect("a created event");
        assert_eq!(created_event["data"]["reference"], Value::Null, "{created_event}");
        assert_eq!(created_event["version"], 2);
        let confirmed_event = of("reservation.confirmed").expect("a confirmed event");
        assert_eq!(confirmed_event["data"]["expires_at"], Value::Null, "{confirmed_event}");
    })
    .await;
}

// ------------------------------------------------------------------------------ the event feed

#[tokio::test]
async fn the_event_head_and_type_and_aggregate_filters() {
    each_backend(|app| async move {
        assert_eq!(app.get("/v1/events/head").await.expect(200), json!({"seq": 0}), "[{}]", app.label());
        seed(&app).await;
        reserve(&app, hold(json!([{"sku": SHIRT, "quantity": 1}]))).await;
        let events = app.all_events().await;
        let last = events.last().unwrap()["seq"].as_i64().unwrap();
        assert_eq!(app.get("/v1/events/head").await.expect(200), json!({"seq": last}), "[{}]", app.label());

        let page = app.get("/v1/events?type=stock.changed&limit=1000").await.expect(200);
        let items = page["items"].as_array().unwrap();
        let expected = events.iter().filter(|e| e["type"] == "stock.changed").count();
        assert_eq!(items.len(), expected, "[{}] {page}", app.label());
        assert!(expected > 0);
        assert_eq!(page["next"], Value::Null);
        assert_eq!(page["scanned_through"], last);

        let page = app.get("/v1/events?type=reservation.*,item.created&limit=1000").await.expect(200);
        let types: Vec<&str> = page["items"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
        let expected: Vec<&str> = events
            .iter()
            .map(|e| e["type"].as_str().unwrap())
            .filter(|t| t.starts_with("reservation.") || *t == "item.created")
            .collect();
        assert_eq!(types, expected, "[{}]", app.label());
        assert!(types.contains(&"item.created") && types.contains(&"reservation.created"));
        // A family matches whole segments only.
        let page = app.get("/v1/events?type=reserv.*").await.expect(200);
        assert_eq!(page["items"], json!([]), "[{}] {page}", app.label());

        let aggregate = format!("stock:{BER}:{SHIRT}");
        let page = app.get(&format!("/v1/events?aggregate={aggregate}&type=stock.changed")).await.expect(200);
        let items = page["items"].as_array().unwrap();
        assert_eq!(items.len(), 2, "[{}] a receipt and a hold: {page}", app.label());
        assert!(items.iter().all(|e| e["aggregate"] == aggregate));
        assert_eq!(items[0]["aggregate_seq"], 1);
        assert_eq!(items[1]["aggregate_seq"], 2);

        // A full page says where to go on; following `next` reads the rest, in order.
        let mut seen = Vec::new();
        let mut after = 0;
        loop {
            let page = app.get(&format!("/v1/events?type=stock.changed&limit=2&after={after}")).await.expect(200);
            seen.extend(page["items"].as_array().unwrap().iter().map(|e| e["seq"].as_i64().unwrap()));
            match page["next"].as_str() {
                Some(next) => after = next.parse().unwrap(),
                None => break,
            }
        }
        let expected: Vec<i64> =
            events.iter().filter(|e| e["type"] == "stock.changed").map(|e| e["seq"].as_i64().unwrap()).collect();
        assert_eq!(seen, expected, "[{}]", app.label());
    })
    .await;
}

#[tokio::test]
async fn a_long_poll_waits_for_the_next_matching_event() {
    each_backend(|app| async move {
        seed(&app).await;
        let head = app.get("/v1/events/head").await.expect(200)["seq"].as_i64().unwrap();

        // Nothing comes: the answer is an empty page, after the wait.
        let started = Instant::now();
        let page = app.get(&format!("/v1/events?after={head}&wait_ms=400")).await.expect(200);
        assert!(started.elapsed() >= Duration::from_millis(400), "[{}] answered early", app.label());
        assert_eq!(page["items"], json!([]));
        assert_eq!(page["scanned_through"], head);

        // An event of another type does not end the wait for `reservation.*`; a hold does.
        let poller = {
            let app = app.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let page =
                    app.get(&format!("/v1/events?after={head}&type=reservation.*&wait_ms=10000")).await.expect(200);
                (page, started.elapsed())
            })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        app.receive(BER, MUG, 1).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let held = reserve(&app, hold(json!([{"sku": SHIRT, "quantity": 1}]))).await;
        let (page, waited) = poller.await.unwrap();
        assert!(waited >= Duration::from_millis(500), "[{}] woke before the hold: {page}", app.label());
        assert!(waited < Duration::from_secs(5), "[{}] waited {waited:?}", app.label());
        let items = page["items"].as_array().unwrap();
        assert_eq!(items.len(), 1, "[{}] {page}", app.label());
        assert_eq!(items[0]["type"], "reservation.created");
        assert_eq!(items[0]["data"]["id"], held["id"]);
    })
    .await;
}

/// A long poll does not hold up shutdown (which finishes requests in flight within 10 s): a
/// stopping server answers it at once.
#[tokio::test]
async fn a_long_poll_is_answered_when_the_server_stops() {
    each_backend(|app| async move {
        seed(&app).await;
        let head = app.get("/v1/events/head").await.expect(200)["seq"].as_i64().unwrap();
        let poller = {
            let app = app.clone();
            tokio::spawn(async move { app.get(&format!("/v1/events?after={head}&wait_ms=30000")).await })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        let started = Instant::now();
        app.shutdown().await;
        let reply = poller.await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(3), "[{}] shutdown took {:?}", app.label(), started.elapsed());
        let page = reply.expect(200);
        assert_eq!(page["items"], json!([]), "[{}] {page}", app.label());
        assert_eq!(page["scanned_through"], head);
    })
    .await;
}

// ------------------------------------------------------------------------------ items

#[tokio::test]
async fn items_are_listed_by_prefix_and_archiving_and_patched_as_merge_patches() {
    each_backend(|app| async move {
        for sku in ["TSHIRT-RED-M", "TSHIRT-RED-L", "TSHIRT_X", "MUG-1"] {
            app.create_item(sku).await;
        }
        let page = app.get("/v1/items?sku_prefix=TSHIRT-&limit=1").await.expect(200);
        assert_eq!(page["items"][0]["sku"], "TSHIRT-RED-L", "[{}] {page}", app.label());
        let next = page["next"].as_str().expect("a full page has a next cursor");
        let rest = app.get(&format!("/v1/items?sku_prefix=TSHIRT-&limit=1&next={next}")).await.expect(200);
        assert_eq!(rest["items"][0]["sku"], "TSHIRT-RED-M", "{rest}");
        let rest = app.get(&format!("/v1/items?sku_prefix=TSHIRT-&next={next}")).await.expect(200);
        assert_eq!(rest["items"].as_array().unwrap().len(), 1, "{rest}");
        let underscored = app.get("/v1/items?sku_prefix=TSHIRT_").await.expect(200);
        assert_eq!(underscored["items"].as_array().unwrap().len(), 1, "`_` is no wildcard: {underscored}");
        assert_eq!(underscored["items"][0]["sku"], "TSHIRT_X");
        assert_eq!(app.get("/v1/items").await.expect(200)["items"].as_array().unwrap().len(), 4);

        let patched = app
            .patch("/v1/items/MUG-1", json!({"name": "Mug", "weight_grams": 350, "gtin": "4006381333931"}))
            .await
            .expect(200);
        assert_eq!((patched["name"].clone(), patched["weight_grams"].clone()), (json!("Mug"), json!(350)));
        assert_eq!(patched["gtin"], "4006381333931");
        assert_eq!(patched["archived"], false);
        // Left out: kept; null: cleared.
        let patched = app.patch("/v1/items/MUG-1", json!({"weight_grams": null})).await.expect(200);
        assert_eq!(patched["weight_grams"], Value::Null, "[{}] {patched}", app.label());
        assert_eq!(patched["gtin"], "4006381333931");
        assert_eq!(patched["name"], "Mug");
        let bytes = serde_json::to_vec(&json!({"gtin": null, "archived": true})).unwrap();
        let reply = app
            .request(
                Method::PATCH,
                "/v1/items/MUG-1",
                Some(("application/merge-patch+json", bytes)),
                Some(ADMIN_KEY),
                &[],
            )
            .await;
        let patched = reply.expect(200);
        assert_eq!((patched["gtin"].clone(), patched["archived"].clone()), (Value::Null, json!(true)));
        assert_eq!(app.get("/v1/items/MUG-1").await.expect(200), patched);

        let archived = app.get("/v1/items?archived=true").await.expect(200);
        assert_eq!(archived["items"].as_array().unwrap().len(), 1);
        assert_eq!(archived["items"][0]["sku"], "MUG-1");
        assert_eq!(app.get("/v1/items?archived=false").await.expect(200)["items"].as_array().unwrap().len(), 3);

        let problem = app
            .patch(
                "/v1/items/MUG-1",
                json!({"name": null, "gtin": "4006381333932", "weight_grams": -1, "archived": null}),
            )
            .await
            .expect_problem(422, "validation_failed");
        assert_eq!(
            fields(&problem),
            sorted(&["name", "gtin", "weight_grams", "archived"]),
            "[{}] {problem}",
            app.label()
        );
        let problem =
            app.patch("/v1/items/MUG-1", json!({"colour": "blue"})).await.expect_problem(422, "validation_failed");
        assert_eq!(fields(&problem), ["colour"]);
        let problem =
            app.patch("/v1/items/MUG-1", json!({"gtin": "12345"})).await.expect_problem(422, "validation_failed");
        assert_eq!(fields(&problem), ["gtin"]);
        app.patch("/v1/items/NO-SUCH", json!({"name": "x"})).await.expect_problem(404, "not_found");

        // track_lots changes only while the item has no stock.
        let switched = app.patch("/v1/items/TSHIRT_X", json!({"track_lots": true})).await.expect(200);
        assert_eq!(switched["track_lots"], true);
        app.patch("/v1/items/TSHIRT_X", json!({"track_lots": false})).await.expect(200);
        app.create_warehouse(BER, 10).await;
        app.receive(BER, "TSHIRT_X", 3).await;
        let problem =
            app.patch("/v1/items/TSHIRT_X", json!({"track_lots": true})).await.expect_problem(422, "validation_failed");
        assert_eq!(fields(&problem), ["track_lots"], "[{}] {problem}", app.label());
        assert_eq!(app.get("/v1/items/TSHIRT_X").await.expect(200)["track_lots"], false);
        // Repeating the value it has is no change, stock or not.
        app.patch("/v1/items/TSHIRT_X", json!({"track_lots": false})).await.expect(200);

        let updates: Vec<Value> = app.all_events().await.into_iter().filter(|e| e["type"] == "item.updated").collect();
        assert_eq!(updates.len(), 6, "[{}] one item.updated per accepted patch", app.label());
        assert_eq!(updates[2]["data"]["archived"], true);
        assert_eq!(updates[2]["aggregate"], "item:MUG-1");
    })
    .await;
}

#[tokio::test]
async fn a_warehouse_patch_is_a_merge_patch_null_clears_what_is_optional() {
    each_backend(|app| async move {
        let created = app
            .post(
                "/v1/warehouses",
                json!({"code": BER, "name": "Berlin", "country": "DE", "latitude": 52.5, "longitude": 13.4, "capacity_units": 100}),
            )
            .await
            .expect(201);
        assert_eq!(created["capacity_units"], 100);
        let patched = app
            .patch(&format!("/v1/warehouses/{BER}"), json!({"latitude": null, "longitude": null, "capacity_units": null}))
            .await
            .expect(200);
        assert_eq!(patched["latitude"], Value::Null, "[{}] {patched}", app.label());
        assert_eq!(patched["longitude"], Value::Null);
        assert_eq!(patched["capacity_units"], Value::Null);
        assert_eq!((patched["country"].clone(), patched["name"].clone()), (json!("DE"), json!("Berlin")));
        assert_eq!(app.get(&format!("/v1/warehouses/{BER}")).await.expect(200), patched);
        let problem = app
            .patch(&format!("/v1/warehouses/{BER}"), json!({"name": null, "priority": null, "active": null, "latitude": 99}))
            .await
            .expect_problem(422, "validation_failed");
        assert_eq!(fields(&problem), sorted(&["name", "priority", "active", "latitude"]), "[{}] {problem}", app.label());
        let problem = app.patch(&format!("/v1/warehouses/{BER}"), json!([])).await.expect_problem(422, "validation_failed");
        assert_eq!(fields(&problem), ["body"]);
    })
    .await;
}

// ------------------------------------------------------------------------------ reservations

#[tokio::test]
async fn reservations_are_listed_by_reference_status_sku_and_warehouse() {
    each_backend(|app| async move {
        seed(&app).await;
        let cart = reserve(&app, json!({"reference": "cart-1", "lines": [{"sku": SHIRT, "quantity": 1, "warehouse": BER}]})).await;
        let order = reserve(
            &app,
            json!({"reference": "order-1", "lines": [{"sku": SHIRT, "quantity": 2, "warehouse": MUC}, {"sku": MUG, "quantity": 1}]}),
        )
        .await;
        let other = reserve(&app, json!({"reference": "cart-1", "lines": [{"sku": MUG, "quantity": 1}]})).await;
        let id = |r: &Value| r["id"].as_str().unwrap().to_owned();
        app.post(&format!("/v1/reservations/{}/confirm", id(&order)), json!({})).await.expect(200);
        app.post(&format!("/v1/reservations/{}/release", id(&other)), json!({})).await.expect(200);
        let short = reserve(&app, json!({"ttl_seconds": 1, "lines": [{"sku": MUG, "quantity": 1}]})).await;
        tokio::time::sleep(Duration::from_millis(1100)).await;

        let ids = |page: Value| -> Vec<String> { page["items"].as_array().unwrap().iter().map(&id).collect() };
        let list = |query: &str| {
            let app = app.clone();
            let query = query.to_owned();
            async move { app.get(&format!("/v1/reservations{query}")).await.expect(200) }
        };
        assert_eq!(ids(list("").await), vec![id(&cart), id(&order), id(&other), id(&short)], "[{}]", app.label());
        assert_eq!(ids(list("?reference=cart-1").await), vec![id(&cart), id(&other)]);
        assert_eq!(ids(list("?status=active").await), vec![id(&cart)]);
        assert_eq!(ids(list("?status=confirmed").await), vec![id(&order)]);
        assert_eq!(ids(list("?status=released").await), vec![id(&other)]);
        // Past its expiry it reads as expired, swept or not.
        let expired = list("?status=expired").await;
        assert_eq!(ids(expired.clone()), vec![id(&short)], "[{}] {expired}", app.label());
        assert_eq!(expired["items"][0]["status"], "expired");
        assert_eq!(ids(list(&format!("?sku={SHIRT}")).await), vec![id(&cart), id(&order)]);
        assert_eq!(ids(list(&format!("?sku={SHIRT}&warehouse={MUC}")).await), vec![id(&order)]);
        assert_eq!(ids(list(&format!("?warehouse={MUC}")).await), vec![id(&order)]);
        assert_eq!(ids(list(&format!("?reference=cart-1&sku={MUG}&status=released")).await), vec![id(&other)]);

        let first = list("?limit=3").await;
        assert_eq!(ids(first.clone()).len(), 3);
        let next = first["next"].as_str().expect("a next cursor");
        assert_eq!(ids(list(&format!("?limit=3&next={next}")).await), vec![id(&short)]);

        // Each item reads as GET /v1/reservations/{id} does.
        let listed = list("?reference=order-1").await;
        let read = app.get(&format!("/v1/reservations/{}", id(&order))).await.expect(200);
        assert_eq!(listed["items"][0], read, "[{}]", app.label());
        assert_eq!(read["lines"].as_array().unwrap().len(), 2);
    })
    .await;
}

#[tokio::test]
async fn an_active_reservation_is_extended_and_nothing_else_is() {
    each_backend(|app| async move {
        seed(&app).await;
        let active = reserve(&app, json!({"ttl_seconds": 60, "lines": [{"sku": SHIRT, "quantity": 1}]})).await;
        let id = active["id"].as_str().unwrap().to_owned();
        let extended =
            app.post(&format!("/v1/reservations/{id}/extend"), json!({"ttl_seconds": 3600})).await.expect(200);
        assert_eq!(extended["status"], "active");
        let at = |r: &Value| {
            time::OffsetDateTime::parse(
                r["expires_at"].as_str().unwrap(),
                &time::format_description::well_known::Rfc3339,
            )
            .unwrap()
        };
        let gained = at(&extended) - at(&active);
        assert!(gained >= time::Duration::seconds(3500), "[{}] {active} -> {extended}", app.label());
        assert_eq!(app.get(&format!("/v1/reservations/{id}")).await.expect(200)["expires_at"], extended["expires_at"]);

        // A 1-second hold extended before it runs out stays held past its first expiry.
        let brief = reserve(&app, json!({"ttl_seconds": 1, "lines": [{"sku": SHIRT, "quantity": 1}]})).await;
        let brief_id = brief["id"].as_str().unwrap().to_owned();
        app.post(&format!("/v1/reservations/{brief_id}/extend"), json!({"ttl_seconds": 600})).await.expect(200);
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert_eq!(app.get(&format!("/v1/reservations/{brief_id}")).await.expect(200)["status"], "active");
        assert_eq!(app.stock(SHIRT).await["reserved"], 2, "[{}] the sweeper left it", app.label());

        for problem in [
            app.post(&format!("/v1/reservations/{id}/extend"), json!({"ttl_seconds": 0})).await,
            app.post(&format!("/v1/reservations/{id}/extend"), json!({"ttl_seconds": 604801})).await,
            app.post(&format!("/v1/reservations/{id}/extend"), json!({})).await,
        ] {
            assert_eq!(fields(&problem.expect_problem(422, "validation_failed")), ["ttl_seconds"]);
        }
        app.post("/v1/reservations/res_0123456789abcdef/extend", json!({"ttl_seconds": 60}))
            .await
            .expect_problem(404, "not_found");

        app.post(&format!("/v1/reservations/{id}/confirm"), json!({})).await.expect(200);
        let problem = app
            .post(&format!("/v1/reservations/{id}/extend"), json!({"ttl_seconds": 60}))
            .await
            .expect_problem(409, "invalid_state");
        assert!(problem["detail"].as_str().unwrap().contains("confirmed"), "[{}] {problem}", app.label());
        app.post(&format!("/v1/reservations/{brief_id}/release"), json!({})).await.expect(200);
        app.post(&format!("/v1/reservations/{brief_id}/extend"), json!({"ttl_seconds": 60}))
            .await
            .expect_problem(409, "invalid_state");
        let expiring = reserve(&app, json!({"ttl_seconds": 1, "lines": [{"sku": SHIRT, "quantity": 1}]})).await;
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let problem = app
            .post(&format!("/v1/reservations/{}/extend", expiring["id"].as_str().unwrap()), json!({"ttl_seconds": 60}))
            .await
            .expect_problem(409, "invalid_state");
        assert!(problem["detail"].as_str().unwrap().contains("expired"), "[{}] {problem}", app.label());

        // With a key, a repeat replays the first answer and says so.
        let keyed = reserve(&app, json!({"ttl_seconds": 60, "lines": [{"sku": MUG, "quantity": 1}]})).await;
        let path = format!("/v1/reservations/{}/extend", keyed["id"].as_str().unwrap());
        let first = app.post_with(&path, json!({"ttl_seconds": 120}), &[("Idempotency-Key", "ext-1")]).await;
        assert_eq!(first.status, 200);
        let again = app.post_with(&path, json!({"ttl_seconds": 120}), &[("Idempotency-Key", "ext-1")]).await;
        assert_eq!(again.headers.get("idempotent-replayed").and_then(|v| v.to_str().ok()), Some("true"));
        assert_eq!(again.body, first.body);
        app.reconcile().await;
    })
    .await;
}
