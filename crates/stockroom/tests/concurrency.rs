//! Concurrency claims, tested with many concurrent HTTP clients on every backend: exactly the
//! stock is sold, an idempotency key holds once, and a poller of the event feed misses nothing.

use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use testkit::{TestApp, each_backend};

const CLIENTS: usize = 64;

/// Polls `after=` its last seq until told to stop, then once more; returns every seq seen.
fn spawn_poller(app: TestApp, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<Vec<i64>> {
    tokio::spawn(async move {
        let mut seen = Vec::new();
        let mut after = 0;
        loop {
            let stopping = stop.load(Ordering::SeqCst);
            let page = app.get(&format!("/v1/events?after={after}&limit=1000")).await.expect(200);
            let items = page["items"].as_array().cloned().unwrap_or_default();
            for e in &items {
                let seq = e["seq"].as_i64().unwrap();
                assert!(seq > after, "the feed went backwards: {seq} after {after}");
                seen.push(seq);
                after = seq;
            }
            if items.is_empty() {
                if stopping {
                    return seen;
                }
                tokio::task::yield_now().await;
            }
        }
    })
}

fn assert_poller_saw_everything(seen: &[i64], all: &[Value]) {
    let all: Vec<i64> = all.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(all, (1..=all.len() as i64).collect::<Vec<_>>(), "the feed has gaps");
    assert_eq!(seen, all.as_slice(), "the concurrent poller missed or repeated events");
}

#[tokio::test]
async fn racing_clients_sell_exactly_the_stock_and_the_feed_misses_nothing() {
    each_backend(|app| async move {
        app.create_item("HOT").await;
        app.create_warehouse("BER-1", 10).await;
        app.create_warehouse("MUC-1", 20).await;
        app.receive("BER-1", "HOT", 30).await;
        app.receive("MUC-1", "HOT", 20).await;

        let stop = Arc::new(AtomicBool::new(false));
        let poller = spawn_poller(app.clone(), stop.clone());
        // Each client tries three holds of 1 unit; half of them send an idempotency key, so
        // the group-commit path and the per-request path race each other.
        let clients: Vec<_> = (0..CLIENTS)
            .map(|client| {
                let app = app.clone();
                tokio::spawn(async move {
                    let mut won = 0;
                    let mut refused = 0;
                    for attempt in 0..3 {
                        let body = json!({"reference": format!("c{client}"), "lines": [{"sku": "HOT", "quantity": 1}]});
                        let key = format!("k-{client}-{attempt}");
                        let headers: Vec<(&str, &str)> =
                            if client % 2 == 0 { vec![("Idempotency-Key", key.as_str())] } else { vec![] };
                        let reply = app.post_with("/v1/reservations", body, &headers).await;
                        match reply.status.as_u16() {
                            201 => won += 1,
                            409 => {
                                assert_eq!(reply.body["code"], "insufficient_stock");
                                refused += 1;
                            }
                            other => panic!("unexpected {other}: {}", reply.body),
                        }
                    }
                    (won, refused)
                })
            })
            .collect();
        let mut won = 0;
        let mut refused = 0;
        for client in clients {
            let (w, r) = client.await.unwrap();
            won += w;
            refused += r;
        }
        stop.store(true, Ordering::SeqCst);
        let seen = poller.await.unwrap();

        assert_eq!(won, 50, "[{}] exactly the stock is sold", app.label());
        assert_eq!(refused, CLIENTS * 3 - 50);
        let stock = app.stock("HOT").await;
        assert_eq!((stock["on_hand"].as_i64(), stock["reserved"].as_i64()), (Some(50), Some(50)));
        app.reconcile().await;
        assert_poller_saw_everything(&seen, &app.all_events().await);
    })
    .await;
}

#[tokio::test]
async fn concurrent_writers_on_many_rows_never_hide_an_event_from_a_poller() {
    each_backend(|app| async move {
        app.create_warehouse("BER-1", 10).await;
        for i in 0..CLIENTS {
            app.create_item(&format!("SKU-{i}")).await;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let poller = spawn_poller(app.clone(), stop.clone());
        let writers: Vec<_> = (0..CLIENTS)
            .map(|i| {
                let app = app.clone();
                tokio::spawn(async move {
                    for _ in 0..5 {
                        app.receive("BER-1", &format!("SKU-{i}"), 1).await;
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.await.unwrap();
        }
        stop.store(true, Ordering::SeqCst);
        let seen = poller.await.unwrap();
        assert_poller_saw_everything(&seen, &app.all_events().await);
        app.reconcile().await;
    })
    .await;
}

#[tokio::test]
async fn the_same_idempotency_key_sent_concurrently_holds_stock_once() {
    each_backend(|app| async move {
        app.create_item("SKU-1").await;
        app.create_warehouse("BER-1", 10).await;
        app.receive("BER-1", "SKU-1", 100).await;
        let body = json!({"reference": "cart-1", "lines": [{"sku": "SKU-1", "quantity": 3}]});
        let replies: Vec<_> = (0..16)
            .map(|_| {
                let (app, body) = (app.clone(), body.clone());
                tokio::spawn(
                    async move { app.post_with("/v1/reservations", body, &[("Idempotency-Key", "same")]).await },
                )
            })
            .collect();
        let mut bodies = Vec::new();
        for reply in replies {
            bodies.push(reply.await.unwrap().expect(201));
        }
        assert!(bodies.windows(2).all(|w| w[0] == w[1]), "every repeat gets the first answer");
        assert_eq!(app.stock("SKU-1").await["reserved"], 3, "[{}] held once", app.label());
        app.reconcile().await;
    })
    .await;
}
