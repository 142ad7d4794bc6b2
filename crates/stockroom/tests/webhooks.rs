//! Webhooks against a real HTTP receiver (axum on port 0): every event arrives, signed, in
//! order per aggregate, after the receiver was down; the breaker opens, probes and closes; a
//! 410 disables the endpoint; dead letters are retried by hand; replay repeats with the same
//! `webhook-id`; redirects are not followed; bad input changes nothing. On both backends.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use testkit::{AppOptions, TestApp, each_backend_with};

/// What the receiver answers, and everything it received.
#[derive(Default)]
struct Receiver {
    answer: Mutex<u16>,
    received: Mutex<Vec<Received>>,
}

#[derive(Debug, Clone)]
struct Received {
    id: String,
    timestamp: i64,
    signature: String,
    body: Bytes,
    answered: u16,
}

impl Received {
    fn event(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

async fn receive(State(receiver): State<Arc<Receiver>>, headers: HeaderMap, body: Bytes) -> (StatusCode, HeaderMap) {
    let answered = *receiver.answer.lock().unwrap();
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    receiver.received.lock().unwrap().push(Received {
        id: header("webhook-id"),
        timestamp: header("webhook-timestamp").parse().unwrap_or(0),
        signature: header("webhook-signature"),
        body,
        answered,
    });
    let mut out = HeaderMap::new();
    if answered == 307 {
        out.insert("location", "http://127.0.0.1:9/elsewhere".parse().unwrap());
    }
    (StatusCode::from_u16(answered).unwrap(), out)
}

/// A receiver on loopback answering `answer` until told otherwise; its URL.
async fn start_receiver(answer: u16) -> (Arc<Receiver>, String) {
    let receiver = Arc::new(Receiver { answer: Mutex::new(answer), ..Default::default() });
    let app = Router::new().route("/hook", post(receive)).with_state(receiver.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (receiver, format!("http://{addr}/hook"))
}

fn options() -> AppOptions {
    let mut options = AppOptions::default();
    options.events.allow_private = true;
    options.events.backoff_base = Duration::from_millis(20);
    options.events.backoff_max = Duration::from_millis(200);
    options.events.breaker_failures = 3;
    options.events.breaker_cooldown = Duration::from_millis(300);
    options.events.interval = Duration::from_millis(20);
    options.events.request_timeout = Duration::from_secs(2);
    options
}

async fn wait_for(app: &TestApp, what: &str, mut done: impl AsyncFnMut() -> bool) {
    let started = Instant::now();
    while !done().await {
        assert!(started.elapsed() < Duration::from_secs(20), "[{}] waited too long for {what}", app.label());
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn head(events: &[Value]) -> i64 {
    events.last().map_or(0, |e| e["seq"].as_i64().unwrap())
}

#[tokio::test]
async fn every_event_arrives_signed_and_in_order_per_aggregate_after_the_receiver_was_down() {
    each_backend_with(options, |app| async move {
        let (receiver, url) = start_receiver(503).await;
        let before = head(&app.all_events().await);
        let created =
            app.post("/v1/webhooks", json!({"url": url, "events": ["stock.*", "item.created"]})).await.expect(201);
        let (id, secret) = (created["id"].as_str().unwrap().to_owned(), created["secret"].as_str().unwrap().to_owned());
        assert!(secret.starts_with("whsec_"));
        assert_eq!(created["state"], "healthy");
        // The secret is shown once.
        let shown = app.get(&format!("/v1/webhooks/{id}")).await.expect(200);
        assert!(shown.get("secret").is_none(), "{shown}");

        app.create_warehouse("BER-1", 1).await;
        for sku in ["A", "B", "C"] {
            app.create_item(sku).await;
        }
        for round in 1..=4 {
            for sku in ["A", "B", "C"] {
                app.receive("BER-1", sku, round).await;
            }
        }
        // Down: attempts fail and are retried, the breaker opens.
        wait_for(&app, "failures", async || receiver.received.lock().unwrap().len() >= 3).await;
        let failing = app.get(&format!("/v1/webhooks/{id}")).await.expect(200);
        assert_ne!(failing["state"], "healthy", "{failing}");
        let failed = app.get(&format!("/v1/webhooks/{id}/deliveries?status=failed")).await.expect(200);
        assert!(!failed["items"].as_array().unwrap().is_empty());
        assert!(failed["items"][0]["last_status"] == 503, "{failed}");

        // Up again: everything arrives.
        *receiver.answer.lock().unwrap() = 200;
        let wanted: Vec<Value> = app
            .all_events()
            .await
            .into_iter()
            .filter(|e| {
                e["seq"].as_i64().unwrap() > before && {
                    let t = e["type"].as_str().unwrap();
                    t.starts_with("stock.") || t == "item.created"
                }
            })
            .collect();
        assert!(wanted.len() >= 15, "{}", wanted.len());
        let wanted_ids: Vec<String> = wanted.iter().map(|e| e["id"].as_str().unwrap().to_owned()).collect();
        wait_for(&app, "every event delivered", async || {
            let got = receiver.received.lock().unwrap();
            wanted_ids.iter().all(|id| got.iter().any(|r| r.answered == 200 && &r.id == id))
        })
        .await;

        let received = receiver.received.lock().unwrap().clone();
        // Nothing else, every signature verifies, the payload is the feed's event.
        let by_id: HashMap<&str, &Value> = wanted.iter().map(|e| (e["id"].as_str().unwrap(), e)).collect();
        for r in &received {
            let event = r.event();
            assert_eq!(by_id.get(r.id.as_str()).copied(), Some(&event), "an event it did not ask for, or changed");
            assert!(events::signature::verify(&secret, &r.id, r.timestamp, &r.body, &r.signature));
            assert!(!events::signature::verify(&secret, &r.id, r.timestamp, b"{}", &r.signature));
        }
        // Per aggregate, first successful arrivals come in aggregate_seq order.
        let mut last: BTreeMap<String, i64> = BTreeMap::new();
        for r in received.iter().filter(|r| r.answered == 200) {
            let event = r.event();
            let aggregate = event["aggregate"].as_str().unwrap().to_owned();
            let seq = event["aggregate_seq"].as_i64().unwrap();
            let previous = last.insert(aggregate.clone(), seq).unwrap_or(0);
            assert!(seq > previous, "[{}] {aggregate}: {seq} after {previous}", app.label());
        }
        // The relay records outcomes after the receiver answered: wait for the records.
        let newest = head(&wanted);
        wait_for(&app, "the outcomes recorded", async || {
            let w = app.get(&format!("/v1/webhooks/{id}")).await.expect(200);
            w["state"] == "healthy" && w["last_delivered_seq"] == newest
        })
        .await;
        let delivered = app.get(&format!("/v1/webhooks/{id}/deliveries?status=delivered&limit=1000")).await.expect(200);
        assert_eq!(delivered["items"].as_array().unwrap().len(), wanted.len());

        // Replay from the first: the same events again, with the same webhook-id.
        let first = wanted[0]["seq"].as_i64().unwrap();
        let count_before = received.len();
        app.post(&format!("/v1/webhooks/{id}/replay"), json!({"from_seq": first})).await.expect(200);
        wait_for(&app, "the replay", async || receiver.received.lock().unwrap().len() >= count_before + wanted.len())
            .await;
        let again = receiver.received.lock().unwrap()[count_before..].to_vec();
        let mut replayed: Vec<String> = again.iter().map(|r| r.id.clone()).collect();
        replayed.sort();
        let mut expected = wanted_ids.clone();
        expected.sort();
        assert_eq!(replayed, expected);
    })
    .await;
}

#[tokio::test]
async fn the_breaker_opens_probes_and_closes_and_a_410_disables_the_endpoint() {
    each_backend_with(options, |app| async move {
        let (receiver, url) = start_receiver(500).await;
        let created = app.post("/v1/webhooks", json!({"url": url, "events": ["item.*"]})).await.expect(201);
        let id = created["id"].as_str().unwrap().to_owned();
        for n in 0..6 {
            app.create_item(&format!("S{n}")).await;
        }
        wait_for(&app, "the breaker to open", async || {
            app.get(&format!("/v1/webhooks/{id}")).await.expect(200)["state"] == "open"
        })
        .await;
        let open = app.get(&format!("/v1/webhooks/{id}")).await.expect(200);
        assert!(open["breaker_open_until"].is_string(), "{open}");
        // While open, at most one probe per cool-down: attempts grow slowly.
        let attempts_open = receiver.received.lock().unwrap().len();
        tokio::time::sleep(Duration::from_millis(700)).await;
        let probes = receiver.received.lock().unwrap().len() - attempts_open;
        assert!(probes <= 3, "[{}] {probes} attempts while the breaker was open", app.label());
        // The receiver recovers: the next probe closes the breaker and the rest follows.
        *receiver.answer.lock().unwrap() = 204;
        wait_for(&app, "the breaker to close", async || {
            let w = app.get(&format!("/v1/webhooks/{id}")).await.expect(200);
            w["state"] == "healthy"
                && app.get(&format!("/v1/webhooks/{id}/deliveries?status=delivered")).await.expect(200)["items"]
                    .as_array()
                    .unwrap()
                    .len()
                    == 6
        })
        .await;

        // 410 Gone: the endpoint is disabled and nothing more is sent.
        *receiver.answer.lock().unwrap() = 410;
        app.create_item("GONE-1").await;
        wait_for(&app, "the endpoint to be disabled", async || {
            app.get(&format!("/v1/webhooks/{id}")).await.expect(200)["active"] == false
        })
        .await;
        let disabled = app.get(&format!("/v1/webhooks/{id}")).await.expect(200);
        assert!(disabled["disabled_reason"].as_str().unwrap().contains("410"), "{disabled}");
        let count = receiver.received.lock().unwrap().len();
        app.create_item("GONE-2").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(receiver.received.lock().unwrap().len(), count);
    })
    .await;
}

#[tokio::test]
async fn dead_letters_are_kept_and_retried_by_hand_and_redirects_are_not_followed() {
    let short_window = || {
        let mut o = options();
        o.events.retry_window = Duration::from_millis(150);
        o.events.breaker_failures = 1_000;
        o
    };
    each_backend_with(short_window, |app| async move {
        let (receiver, url) = start_receiver(307).await;
        let created = app.post("/v1/webhooks", json!({"url": url, "events": ["item.created"]})).await.expect(201);
        let id = created["id"].as_str().unwrap().to_owned();
        app.create_item("DEAD-1").await;
        wait_for(&app, "a dead letter", async || {
            !app.get(&format!("/v1/webhooks/{id}/deliveries?status=dead")).await.expect(200)["items"]
                .as_array()
                .unwrap()
                .is_empty()
        })
        .await;
        let dead = app.get(&format!("/v1/webhooks/{id}/deliveries?status=dead")).await.expect(200);
        let delivery = &dead["items"][0];
        assert_eq!(delivery["last_status"], 307);
        assert!(delivery["last_error"].as_str().unwrap().contains("redirect"), "{delivery}");
        assert!(delivery["attempts"].as_i64().unwrap() >= 1);
        // Only the receiver was called: the redirect's target was not.
        assert!(receiver.received.lock().unwrap().iter().all(|r| r.answered == 307));
        // A delivered or pending delivery is not retried; a dead one is.
        let delivery_id = delivery["id"].as_str().unwrap().to_owned();
        *receiver.answer.lock().unwrap() = 200;
        app.post(&format!("/v1/webhooks/{id}/deliveries/{delivery_id}/retry"), json!({})).await.expect(200);
        wait_for(&app, "the retried delivery", async || {
            app.get(&format!("/v1/webhooks/{id}/deliveries?status=delivered")).await.expect(200)["items"]
                .as_array()
                .unwrap()
                .len()
                == 1
        })
        .await;
        app.post(&format!("/v1/webhooks/{id}/deliveries/{delivery_id}/retry"), json!({}))
            .await
            .expect_problem(409, "conflict");
        app.post(&format!("/v1/webhooks/{id}/deliveries/nope/retry"), json!({})).await.expect_problem(404, "not_found");
    })
    .await;
}

#[tokio::test]
async fn bad_webhooks_are_refused_with_every_field_named_and_change_nothing() {
    let strict = || {
        let mut o = options();
        o.events.allow_private = false;
        o
    };
    each_backend_with(strict, |app| async move {
        for (body, fields) in [
            (json!({"url": "not a url", "events": ["item.created"]}), vec!["url"]),
            (json!({"url": "ftp://example.com/x", "events": ["item.created"]}), vec!["url"]),
            (json!({"url": "http://127.0.0.1:9/x", "events": ["item.created"]}), vec!["url"]),
            (json!({"url": "http://10.1.2.3/x", "events": ["item.created"]}), vec!["url"]),
            (json!({"url": "http://[::1]/x", "events": ["item.created"]}), vec!["url"]),
            (json!({"url": "http://localhost/x", "events": ["item.created"]}), vec!["url"]),
            (
                json!({"url": "http://169.254.169.254/latest", "events": ["nope.*", "item.created", "stock.changd"]}),
                vec!["url", "events[0]", "events[2]"],
            ),
            (json!({"url": "http://93.184.215.14/x", "events": []}), vec!["events"]),
            (json!({"url": "http://93.184.215.14/x", "events": vec!["item.created"; 65]}), vec!["events"]),
        ] {
            let p = app.post("/v1/webhooks", body.clone()).await.expect_problem(422, "validation_failed");
            let named: Vec<&str> =
                p["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
            assert_eq!(named, fields, "[{}] {body}: {p}", app.label());
        }
        app.post("/v1/webhooks", json!({"url": "http://93.184.215.14/x", "events": ["item.created"], "secret": "x"}))
            .await
            .expect_problem(422, "validation_failed");
        assert_eq!(app.get("/v1/webhooks").await.expect(200)["items"], json!([]));
        app.get("/v1/webhooks/nope").await.expect_problem(404, "not_found");
        app.post("/v1/webhooks/nope/replay", json!({"from_seq": 1})).await.expect_problem(404, "not_found");

        // A public IP literal is accepted (nothing is sent until an event matches).
        let created =
            app.post("/v1/webhooks", json!({"url": "http://93.184.215.14/x", "events": ["order.*"]})).await.expect(201);
        let id = created["id"].as_str().unwrap();
        app.post(&format!("/v1/webhooks/{id}/replay"), json!({"from_seq": 0}))
            .await
            .expect_problem(422, "validation_failed");
        app.post(&format!("/v1/webhooks/{id}/replay"), json!({"from_seq": 1_000_000}))
            .await
            .expect_problem(422, "validation_failed");
        app.get(&format!("/v1/webhooks/{id}/deliveries?status=lost")).await.expect_problem(422, "validation_failed");
        app.get(&format!("/v1/webhooks/{id}/deliveries?colour=red")).await.expect_problem(422, "validation_failed");
        // Rotation: a new secret, the previous one still signs for the overlap.
        let rotated = app.post(&format!("/v1/webhooks/{id}/rotate-secret"), json!(null)).await.expect(200);
        assert_ne!(rotated["secret"], created["secret"]);
        assert!(rotated["previous_secret_until"].is_string(), "{rotated}");
        app.request(reqwest::Method::DELETE, &format!("/v1/webhooks/{id}"), None, Some(testkit::ADMIN_KEY), &[])
            .await
            .expect(204);
        app.get(&format!("/v1/webhooks/{id}")).await.expect_problem(404, "not_found");
    })
    .await;
}
