//! Test support: start the real Stockroom on port 0 with a throwaway database, on SQLite
//! always and on PostgreSQL when `STOCKROOM_TEST_POSTGRES_URL` is set.
//!
//! `STOCKROOM_TEST_POSTGRES_URL` names a database to connect to for creating and dropping the
//! per-test databases, e.g. `postgres://postgres@127.0.0.1:5432/postgres`. Each test gets its
//! own database (`stockroom_test_<uuid>`), dropped when the test passes.

use kernel::{Clock, SystemClock};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use store::{Backend, Db, DbOptions};
use warehouse::reservation::group_commit::GroupCommitConfig;

pub const ADMIN_KEY: &str = "test-admin-key";
pub const POSTGRES_URL_VAR: &str = "STOCKROOM_TEST_POSTGRES_URL";

/// The backends tests run on: SQLite always, PostgreSQL when its URL is set.
pub fn backends() -> Vec<Backend> {
    let mut backends = vec![Backend::Sqlite];
    if std::env::var(POSTGRES_URL_VAR).is_ok_and(|u| !u.is_empty()) {
        backends.push(Backend::Postgres);
    }
    backends
}

/// A throwaway database: a temp SQLite file or a fresh PostgreSQL database.
#[derive(Debug, Clone)]
pub struct TestDatabase {
    pub backend: Backend,
    pub url: String,
    sqlite_file: Option<PathBuf>,
    postgres: Option<(String, String)>,
}

impl TestDatabase {
    pub async fn create(backend: Backend) -> Self {
        let name = format!("stockroom_test_{}", uuid::Uuid::new_v4().simple());
        match backend {
            Backend::Sqlite => {
                let path = std::env::temp_dir().join(format!("{name}.db"));
                Self { backend, url: format!("sqlite://{}", path.display()), sqlite_file: Some(path), postgres: None }
            }
            Backend::Postgres => {
                let admin_url = std::env::var(POSTGRES_URL_VAR).expect("STOCKROOM_TEST_POSTGRES_URL is set");
                sqlx::any::install_default_drivers();
                let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&admin_url)
                    .await
                    .expect("connect to the PostgreSQL admin database");
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut conn)
                    .await
                    .expect("create the test database");
                let _ = sqlx::Connection::close(conn).await;
                let base = admin_url.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin_url);
                Self {
                    backend,
                    url: format!("{base}/{name}"),
                    sqlite_file: None,
                    postgres: Some((admin_url.clone(), name)),
                }
            }
        }
    }

    /// Connects and migrates.
    pub async fn connect(&self) -> Db {
        Db::connect_and_migrate(&self.url, &DbOptions::default()).await.expect("connect to the test database")
    }

    /// Removes the database (best effort: a failed cleanup must not fail a test).
    pub async fn drop_database(&self) {
        if let Some(path) = &self.sqlite_file {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
            }
        }
        if let Some((admin_url, name)) = &self.postgres
            && let Ok(mut conn) = <sqlx::AnyConnection as sqlx::Connection>::connect(admin_url).await
        {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
                .execute(&mut conn)
                .await;
        }
    }
}

/// Options for [`spawn_app_with`].
#[derive(Debug, Clone)]
pub struct AppOptions {
    pub sweep_interval: Duration,
    pub clock: Arc<dyn Clock>,
}

impl Default for AppOptions {
    fn default() -> Self {
        Self {
            // The API's default period, so tests check the documented behaviour.
            sweep_interval: Duration::from_millis(1000),
            clock: Arc::new(SystemClock),
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

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, AppOptions::default()).await
}

pub async fn spawn_app_with(backend: Backend, options: AppOptions) -> TestApp {
    let database = TestDatabase::create(backend).await;
    let config = stockroom::ServeConfig {
        listen: "127.0.0.1:0".into(),
        database_url: database.url.clone(),
        admin_key: Some(ADMIN_KEY.into()),
        sweep_interval: options.sweep_interval,
        db: DbOptions { max_connections: 8, ..DbOptions::default() },
        group_commit: GroupCommitConfig { workers: 0, ..GroupCommitConfig::default() },
    };
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder().handle();
    let running = stockroom::start(config, options.clock, metrics).await.expect("start the app");
    let base_url = format!("http://{}", running.addr);
    let db = running.db.clone();
    let client = reqwest::Client::builder().pool_max_idle_per_host(256).build().expect("build the HTTP client");
    TestApp { base_url, backend, db, client, database, running: Arc::new(Mutex::new(Some(running))) }
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

/// Creates a warehouse through the Rust API, for tests that do not go through HTTP.
pub async fn seed_warehouse(db: &Db, code: &str, priority: i64) {
    let mut tx = db.begin().await.expect("begin");
    let new = warehouse::site::NewWarehouse {
        code: kernel::WarehouseCode::parse(code).expect("a valid warehouse code"),
        name: code.to_owned(),
        country: None,
        latitude: None,
        longitude: None,
        priority,
        active: true,
        capacity_units: None,
    };
    warehouse::site::warehouse_create(&mut tx, new, kernel::Timestamp::from_millis(0))
        .await
        .expect("create the warehouse");
    tx.commit().await.expect("commit");
}

/// Runs a property test on every backend: one fresh database per backend with `warehouses`
/// created, then `cases` (SQLite, PostgreSQL) random inputs, each handed to `case` with its
/// number (so cases can use their own SKUs in the shared database).
pub fn property_on_each_backend<S, F>(cases: (u32, u32), warehouses: &[(&str, i64)], strategy: S, case: F)
where
    S: proptest::strategy::Strategy,
    F: Fn(&tokio::runtime::Runtime, &Db, usize, S::Value),
{
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    for backend in backends() {
        let database = runtime.block_on(TestDatabase::create(backend));
        let db = runtime.block_on(database.connect());
        for (code, priority) in warehouses {
            runtime.block_on(seed_warehouse(&db, code, *priority));
        }
        let count = if backend == Backend::Postgres { cases.1 } else { cases.0 };
        let config = proptest::test_runner::Config { cases: count, failure_persistence: None, ..Default::default() };
        let mut runner = proptest::test_runner::TestRunner::new(config);
        let case_no = std::sync::atomic::AtomicUsize::new(0);
        runner
            .run(&strategy, |value| {
                case(&runtime, &db, case_no.fetch_add(1, std::sync::atomic::Ordering::SeqCst), value);
                Ok(())
            })
            .unwrap_or_else(|e| panic!("[{backend:?}] {e}"));
        runtime.block_on(async {
            db.close().await;
            database.drop_database().await;
        });
    }
}
