//! Test support: start the real Stockroom on port 0 with a throwaway database, on SQLite
//! always and on PostgreSQL when `STOCKROOM_TEST_POSTGRES_URL` is set.
//!
//! The database-only parts (`TestDatabase`, `backends`, seed helpers,
//! `property_on_each_backend`) live in `testdb` and are re-exported here, so tests of a
//! context can use them without linking the server.

use kernel::{Clock, SystemClock};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use store::{Backend, Db, DbOptions};
use warehouse::reservation::group_commit::GroupCommitConfig;

pub use testdb::*;

pub mod proxy;

pub const ADMIN_KEY: &str = "test-admin-key";

/// Options for [`spawn_app_with`].
pub struct AppOptions {
    pub sweep_interval: Duration,
    pub clock: Arc<dyn Clock>,
    pub catalog: stockroom::CatalogConfig,
    pub orders: stockroom::OrderConfig,
    pub events: events::EventsSettings,
    /// Connect to the PostgreSQL test database through this address (a [`proxy::TcpProxy`]
    /// in front of it) instead of directly.
    pub database_proxy: Option<std::net::SocketAddr>,
}

impl std::fmt::Debug for AppOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppOptions").field("sweep_interval", &self.sweep_interval).finish_non_exhaustive()
    }
}

impl Default for AppOptions {
    fn default() -> Self {
        Self {
            // The API's default period, so tests check the documented behaviour.
            sweep_interval: Duration::from_millis(1000),
            clock: Arc::new(SystemClock),
            catalog: stockroom::CatalogConfig::default(),
            orders: stockroom::OrderConfig::default(),
            // Tests' receivers listen on loopback.
            events: events::EventsSettings { allow_private: true, ..Default::default() },
            database_proxy: None,
        }
    }
}

/// The real app on an ephemeral port, with a client that sends the admin key.
#[derive(Debug, Clone)]
pub struct TestApp {
    pub base_url: String,
    pub backend: Backend,
    pub db: Db,
    pub client: reqwest::Client,
    database: TestDatabase,
    running: Arc<Mutex<Option<stockroom::Running>>>,
}

/// The `picked` body of `POST /v1/picklists/{id}/complete` for a pick list whose every stop
/// was found as listed.
pub fn picked_as_listed(list: &Value) -> Value {
    let stops = list["stops"].as_array().map(Vec::as_slice).unwrap_or_default();
    stops
        .iter()
        .map(|s| json!({"bin": s["bin"], "sku": s["sku"], "quantity": s["quantity"], "lot": s["lot"]}))
        .collect()
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, AppOptions::default()).await
}

pub async fn spawn_app_with(backend: Backend, options: AppOptions) -> TestApp {
    let database = TestDatabase::create(backend).await;
    let config = stockroom::ServeConfig {
        listen: "127.0.0.1:0".into(),
        database_url: match options.database_proxy {
            Some(proxy) => through(&database.url, proxy),
            None => database.url.clone(),
        },
        admin_key: Some(ADMIN_KEY.into()),
        sweep_interval: options.sweep_interval,
        db: DbOptions { max_connections: 8, ..DbOptions::default() },
        group_commit: GroupCommitConfig { workers: 0, ..GroupCommitConfig::default() },
        catalog: options.catalog,
        orders: options.orders,
        events: options.events,
    };
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder().handle();
    let running = stockroom::start(config, options.clock, metrics).await.expect("start the app");
    let base_url = format!("http://{}", running.addr);
    let db = running.db.clone();
    events::install_tls();
    let client = reqwest::Client::builder().pool_max_idle_per_host(256).build().expect("build the HTTP client");
    TestApp { base_url, backend, db, client, database, running: Arc::new(Mutex::new(Some(running))) }
}

/// [`each_backend`] with apps started with `options()`.
pub async fn each_backend_with<O, F, Fut>(options: O, test: F)
where
    O: Fn() -> AppOptions,
    F: Fn(TestApp) -> Fut,
    Fut: Future<Output = ()>,
{
    for backend in backends() {
        let app = spawn_app_with(backend, options()).await;
        test(app.clone()).await;
        app.shutdown().await;
    }
}

/// The host and port of the PostgreSQL test server (`STOCKROOM_TEST_POSTGRES_URL`), for a
/// [`proxy::TcpProxy`] in front of it; `None` when PostgreSQL tests are off.
pub fn postgres_addr() -> Option<std::net::SocketAddr> {
    let url = std::env::var("STOCKROOM_TEST_POSTGRES_URL").ok().filter(|u| !u.is_empty())?;
    let start = url.find('@')? + 1;
    let end = url[start..].find('/').map(|i| start + i).unwrap_or(url.len());
    let authority = &url[start..end];
    let authority = if authority.contains(':') { authority.to_owned() } else { format!("{authority}:5432") };
    use std::net::ToSocketAddrs;
    authority.to_socket_addrs().ok()?.next()
}

/// `url` (`postgres://user@host:port/db`) with its host and port replaced by `proxy`.
fn through(url: &str, proxy: std::net::SocketAddr) -> String {
    let start = url.find('@').map(|i| i + 1).expect("a PostgreSQL URL with a user");
    let end = url[start..].find('/').map(|i| start + i).unwrap_or(url.len());
    format!("{}{proxy}{}", &url[..start], &url[end..])
}

/// Runs `test` once per backend, each on a fresh app, and cleans up after each.
pub async fn each_backend<F, Fut>(test: F)
where
    F: Fn(TestApp) -> Fut,
    Fut: Future<Output = ()>,
{
    for backend in backends() {
        let app = spawn_app(backend).await;
        test(app.clone()).await;
        app.shutdown().await;
    }
}

/// A response: status, parsed JSON body (Null if none), and the content type.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
    pub content_type: String,
    pub headers: reqwest::header::HeaderMap,
}

impl Reply {
    /// Asserts the status and returns the body.
    #[track_caller]
    pub fn expect(self, status: u16) -> Value {
        assert_eq!(self.status.as_u16(), status, "unexpected status; body: {}", self.body);
        self.body
    }

    /// Asserts a problem document with this status and code.
    #[track_caller]
    pub fn expect_problem(self, status: u16, code: &str) -> Value {
        assert_eq!(self.status.as_u16(), status, "unexpected status; body: {}", self.body);
        assert_eq!(self.content_type, "application/problem+json", "body: {}", self.body);
        assert_eq!(self.body["code"], code, "body: {}", self.body);
        assert_eq!(self.body["status"], status, "body: {}", self.body);
        self.body
    }
}

impl TestApp {
    pub fn label(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }

    pub fn database_url(&self) -> &str {
        &self.database.url
    }

    pub async fn shutdown(&self) {
        let running = self.running.lock().expect("lock").take();
        if let Some(running) = running {
            let _ = running.stop().await;
        }
        self.database.drop_database().await;
    }

    /// Any request: `key` None sends no Authorization header.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
        key: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut request = self.client.request(method, format!("{}{path}", self.base_url));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        if let Some((content_type, bytes)) = body {
            request = request.header("content-type", content_type).body(bytes);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("send the request");
        let status = response.status();
        let headers = response.headers().clone();
        let content_type = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        let bytes = response.bytes().await.expect("read the body");
        let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap_or(Value::Null) };
        Reply { status, body, content_type, headers }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.request(Method::GET, path, None, Some(ADMIN_KEY), &[]).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.post_with(path, body, &[]).await
    }

    pub async fn post_with(&self, path: &str, body: Value, headers: &[(&str, &str)]) -> Reply {
        let bytes = serde_json::to_vec(&body).expect("serialize");
        self.request(Method::POST, path, Some(("application/json", bytes)), Some(ADMIN_KEY), headers).await
    }

    pub async fn put_json(&self, path: &str, body: Value) -> Reply {
        let bytes = serde_json::to_vec(&body).expect("serialize");
        self.request(Method::PUT, path, Some(("application/json", bytes)), Some(ADMIN_KEY), &[]).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> Reply {
        let bytes = serde_json::to_vec(&body).expect("serialize");
        self.request(Method::PATCH, path, Some(("application/json", bytes)), Some(ADMIN_KEY), &[]).await
    }

    // ------------------------------------------------------------ domain helpers

    pub async fn create_item(&self, sku: &str) {
        self.post("/v1/items", json!({"sku": sku, "name": format!("Item {sku}")})).await.expect(201);
    }

    pub async fn create_warehouse(&self, code: &str, priority: i64) {
        self.post("/v1/warehouses", json!({"code": code, "name": format!("Warehouse {code}"), "priority": priority}))
            .await
            .expect(201);
    }

    pub async fn receive(&self, warehouse: &str, sku: &str, quantity: i64) {
        self.post("/v1/receipts", json!({"warehouse": warehouse, "lines": [{"sku": sku, "quantity": quantity}]}))
            .await
            .expect(201);
    }

    /// The stock object of `GET /v1/stock/{sku}`.
    pub async fn stock(&self, sku: &str) -> Value {
        self.get(&format!("/v1/stock/{sku}")).await.expect(200)
    }

    /// Asserts a clean reconciliation.
    #[track_caller]
    pub fn assert_reconciled(&self, report: &Value) {
        assert_eq!(report["mismatches"], json!([]), "[{}] reconciliation: {report}", self.label());
    }

    pub async fn reconcile(&self) {
        let report = self.get("/v1/reconciliation").await.expect(200);
        self.assert_reconciled(&report);
    }

    /// Waits (up to 10 s) until the availability view's follower has applied every event
    /// committed so far. A read made before that may be dropped from the cache (and from the
    /// shared tier) a few milliseconds later, when the follower applies an event the read
    /// already reflected; a test that relies on a cached entry waits for this first.
    pub async fn availability_caught_up(&self) {
        let head = self.get("/v1/events/head").await.expect(200)["seq"].as_i64().expect("the head's seq");
        let started = std::time::Instant::now();
        loop {
            let status = self.get("/v1/availability/status").await.expect(200);
            if status["applied_seq"].as_i64().expect("applied_seq") >= head {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "[{}] the availability follower stayed behind seq {head}: {status}",
                self.label()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Picks every pending fulfilment of `warehouse` on one pick list (everything found) and
    /// packs each into one package weighing exactly what it should; answers the packed
    /// fulfilments.
    pub async fn pick_and_pack(&self, warehouse: &str) -> Vec<Value> {
        let list =
            self.post("/v1/picklists", json!({"warehouse": warehouse, "max_fulfillments": 50})).await.expect(201);
        let picked = picked_as_listed(&list);
        let id = list["id"].as_str().expect("the list's id");
        let done = self.post(&format!("/v1/picklists/{id}/complete"), json!({"picked": picked})).await.expect(200);
        assert_eq!(done["short"], json!([]), "[{}] {done}", self.label());
        let mut packed = Vec::new();
        for fulfillment in list["fulfillments"].as_array().expect("fulfillments") {
            let fulfillment = fulfillment.as_str().expect("an id");
            let now = self.get(&format!("/v1/fulfillments/{fulfillment}")).await.expect(200);
            let package = json!({"weight_grams": now["expected_weight_grams"].as_i64().unwrap_or(0).max(1), "lines": now["lines"]});
            let body = json!({"packages": [package]});
            let done = self.post(&format!("/v1/fulfillments/{fulfillment}/pack"), body).await.expect(200);
            assert_eq!(done["status"], "packed", "[{}] {done}", self.label());
            packed.push(done);
        }
        packed
    }

    /// Every event from the feed, following `next` until the end.
    pub async fn all_events(&self) -> Vec<Value> {
        let mut after = 0;
        let mut events = Vec::new();
        loop {
            let page = self.get(&format!("/v1/events?after={after}&limit=1000")).await.expect(200);
            let items = page["items"].as_array().cloned().unwrap_or_default();
            if items.is_empty() {
                return events;
            }
            after = items.last().and_then(|e| e["seq"].as_i64()).expect("events have a seq");
            events.extend(items);
        }
    }
}
