//! The availability cache's shared tier in real Redis (when `STOCKROOM_TEST_REDIS_URL` is
//! set; `.ci/run` starts one): values a replica wrote are used, a forged value and a genuine but
//! outdated one are rejected and the figure comes from the database, on every backend.

use catalog::availability::Snapshot;
use catalog::availability::keys::Keyer;
use catalog::availability::shared::redis_key;
use serde_json::{Value, json};
use testkit::{AppOptions, TestApp, backends, spawn_app_with};

fn redis_url() -> Option<String> {
    std::env::var("STOCKROOM_TEST_REDIS_URL").ok().filter(|u| !u.is_empty())
}

async fn shop(app: &TestApp) {
    app.create_warehouse("BER-1", 10).await;
    for sku in ["TEE-RED", "TEE-BLUE", "F-0", "F-1", "F-2", "F-3", "F-4"] {
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
        json!({"handle": "tee", "name": "Tee", "variants": [{"sku": "TEE-RED"}, {"sku": "TEE-BLUE"},
            {"sku": "F-0"}, {"sku": "F-1"}, {"sku": "F-2"}, {"sku": "F-3"}, {"sku": "F-4"}]}),
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
        // The replay below needs the invalidated entry gone here, as on a replica whose
        // follower has not read it again yet: no background refreshes.
        options.catalog.view.refresh_per_run = 0;
        let app = spawn_app_with(backend, options).await;
        shop(&app).await;
        // Every event of the shop applied first: the follower applying one of them after the
        // read below (which already reflects it) would delete the value the read stored.
        app.availability_caught_up().await;
        assert_eq!(status(&app).await["shared"], true);
        let keyer = Keyer::new(secret.as_bytes());

        // A read fills Redis with a sealed value under the HMAC key.
        assert_eq!(available(&app, "TEE-RED").await["available"], 10);
        let red = keyer.key("web", "TEE-RED");
        let stored: Option<Vec<u8>> = redis::cmd("GET").arg(redis_key(&red)).query_async(&mut redis).await.unwrap();
        let genuine = stored.expect("the read stored a value in Redis");
        let unsealed = keyer.unseal(&red, "web", &genuine, 0).expect("a genuine value");
        assert_eq!(unsealed.available, 10);

        // A forged value (no secret) where a SKU will be looked up: never served, and rejected
        // (counted) whenever Redis answered in time; a loaded machine may skip the tier for a
        // read, so up to five SKUs are tried.
        let mut rejected = false;
        for sku in ["F-0", "F-1", "F-2", "F-3", "F-4"] {
            let key = keyer.key("web", sku);
            let lie = Snapshot {
                sku: sku.into(),
                known: true,
                available: 0,
                backorder: false,
                price_minor: None,
                seq: i64::MAX / 2,
                read_at_ms: 0,
            };
            let forged = Keyer::new(b"a guess").seal(&key, "web", &lie);
            let _: () = redis::cmd("SET").arg(redis_key(&key)).arg(forged).query_async(&mut redis).await.unwrap();
            assert_eq!(available(&app, sku).await["available"], 10, "[{}] a forged value was served", app.label());
            if status(&app).await["shared_rejected"].as_u64().unwrap() >= 1 {
                rejected = true;
                break;
            }
        }
        assert!(rejected, "[{}] no forged value was ever looked at: {}", app.label(), status(&app).await);

        // A genuine value from before a change, put back after the change invalidated it (a
        // replay, or a slow writer): older than the invalidation, so rejected; tried up to five
        // times, as above.
        let mut expected = 10;
        let mut replay_rejected = false;
        for _ in 0..5 {
            let rejected_before = status(&app).await["shared_rejected"].as_u64().unwrap();
            app.receive("BER-1", "TEE-RED", 1).await;
            expected += 1;
            // No reads meanwhile: the invalidation leaves no local entry behind.
            app.availability_caught_up().await;
            let _: () =
                redis::cmd("SET").arg(redis_key(&red)).arg(genuine.clone()).query_async(&mut redis).await.unwrap();
            let now = available(&app, "TEE-RED").await["available"].as_i64().unwrap();
            assert_eq!(now, expected, "[{}] an outdated genuine value was served", app.label());
            if status(&app).await["shared_rejected"].as_u64().unwrap() > rejected_before {
                replay_rejected = true;
                break;
            }
        }
        assert!(replay_rejected, "[{}] the replayed value was never looked at", app.label());
        // And the fresh figure went back to Redis for the other replicas.
        let stored: Option<Vec<u8>> = redis::cmd("GET").arg(redis_key(&red)).query_async(&mut redis).await.unwrap();
        assert_eq!(keyer.unseal(&red, "web", &stored.unwrap(), 0).unwrap().available, expected);
        app.shutdown().await;
    }
}
