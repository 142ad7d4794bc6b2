//! The availability cache's shared tier in real Redis (when `STOCKROOM_TEST_REDIS_URL` is
//! set; `.ci/run` starts one): values a replica wrote are used, a forged value and a genuine but
//! outdated one are rejected and the figure comes from the database, on every backend.

use catalog::availability::Snapshot;
use catalog::availability::keys::Keyer;
use catalog::availability::shared::redis_key;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use testkit::{AppOptions, TestApp, backends, spawn_app_with};

fn redis_url() -> Option<String> {
    std::env::var("STOCKROOM_TEST_REDIS_URL").ok().filter(|u| !u.is_empty())
}

async fn shop(app: &TestApp) {
    app.create_warehouse("BER-1", 10).await;
    for sku in ["TEE-RED", "TEE-BLUE"] {
        app.create_item(sku).await;
        app.receive("BER-1", sku, 10).await;
    }
    app.post(
        "/v1/channels",
        json!({"code": "web", "name": "Web", "currency": "EUR", "country": "DE", "warehouses": ["BER-1"]}),
    )
    .await
    .expect(201);
    app.post(
        "/v1/products",
        json!({"handle": "tee", "name": "Tee", "variants": [{"sku": "TEE-RED"}, {"sku": "TEE-BLUE"}]}),
    )
    .await
    .expect(201);
}

async fn available(app: &TestApp, sku: &str) -> Value {
    app.get(&format!("/v1/availability?channel=web&skus={sku}")).await.expect(200)["items"][0].clone()
}

async fn status(app: &TestApp) -> Value {
    app.get("/v1/availability/status").await.expect(200)
}

#[tokio::test]
async fn the_shared_tier_rejects_forged_and_outdated_values() {
    let Some(url) = redis_url() else { return };
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut redis = client.get_multiplexed_async_connection().await.unwrap();
    for backend in backends() {
        // A secret of this run only, so keys of other runs cannot collide.
        let secret = format!("test-{}", uuid::Uuid::new_v4().simple());
        let mut options = AppOptions::default();
        options.catalog.cache_secret = Some(secret.clone());
        options.catalog.redis_url = Some(url.clone());
        let app = spawn_app_with(backend, options).await;
        shop(&app).await;
        assert_eq!(status(&app).await["shared"], true);
        let keyer = Keyer::new(secret.as_bytes());

        // A read fills Redis with a sealed value under the HMAC key.
        assert_eq!(available(&app, "TEE-RED").await["available"], 10);
        let red = keyer.key("web", "TEE-RED");
        let stored: Option<Vec<u8>> = redis::cmd("GET").arg(redis_key(&red)).query_async(&mut redis).await.unwrap();
        let genuine = stored.expect("the read stored a value in Redis");
        let unsealed = keyer.unseal(&red, "web", &genuine, 0).expect("a genuine value");
        assert_eq!(unsealed.available, 10);

        // A forged value (no secret) where TEE-BLUE will be looked up: rejected, the truth is read.
        let blue = keyer.key("web", "TEE-BLUE");
        let lie = Snapshot {
            sku: "TEE-BLUE".into(),
            known: true,
            available: 0,
            backorder: false,
            price_minor: None,
            seq: i64::MAX / 2,
            read_at_ms: 0,
        };
        let forged = Keyer::new(b"a guess").seal(&blue, "web", &lie);
        let _: () = redis::cmd("SET").arg(redis_key(&blue)).arg(forged).query_async(&mut redis).await.unwrap();
        assert_eq!(available(&app, "TEE-BLUE").await["available"], 10, "[{}] a forged value was served", app.label());
        assert!(status(&app).await["shared_rejected"].as_u64().unwrap() >= 1);

        // A genuine value from before a change, put back after the change invalidated it (a
        // replay, or a slow writer): older than the invalidation, so rejected.
        let rejected_before = status(&app).await["shared_rejected"].as_u64().unwrap();
        app.receive("BER-1", "TEE-RED", 5).await;
        let head = app.all_events().await.last().unwrap()["seq"].as_i64().unwrap();
        let started = Instant::now();
        // No reads meanwhile: the invalidation leaves no local entry behind.
        while status(&app).await["applied_seq"].as_i64().unwrap() < head {
            assert!(started.elapsed() < Duration::from_secs(5), "[{}] the follower stayed behind", app.label());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let _: () = redis::cmd("SET").arg(redis_key(&red)).arg(genuine).query_async(&mut redis).await.unwrap();
        assert_eq!(
            available(&app, "TEE-RED").await["available"],
            15,
            "[{}] an outdated genuine value was served",
            app.label()
        );
        let after = status(&app).await;
        assert_eq!(after["shared_rejected"].as_u64().unwrap(), rejected_before + 1, "[{}] {after}", app.label());
        // And the fresh figure went back to Redis for the other replicas.
        let stored: Option<Vec<u8>> = redis::cmd("GET").arg(redis_key(&red)).query_async(&mut redis).await.unwrap();
        assert_eq!(keyer.unseal(&red, "web", &stored.unwrap(), 0).unwrap().available, 15);
        app.shutdown().await;
    }
}
