//! Test support that needs only a database, not the server: a throwaway database per test on
//! SQLite always and on PostgreSQL when `STOCKROOM_TEST_POSTGRES_URL` is set, seed helpers on
//! the warehouse's Rust API, and property tests run on every backend. A context's tests depend
//! on this crate; `testkit` re-exports it for the tests that spawn the app.
//!
//! `STOCKROOM_TEST_POSTGRES_URL` names a database to connect to for creating and dropping the
//! per-test databases, e.g. `postgres://postgres@127.0.0.1:5432/postgres`. Each test gets its
//! own database (`stockroom_test_<uuid>`), dropped when the test passes.

pub mod model;

use std::path::PathBuf;
use store::{Backend, Db, DbOptions};

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
