//! The systems under test and how a workload talks to them.
//!
//! Stockroom runs on three stores (SQLite FULL, SQLite NORMAL, PostgreSQL) and through two
//! layers: `in-process` (its Rust API: [`GroupCommit::hold`] for writes, `stock_views` for
//! reads) and `http` (the real server, started in this process on loopback). The baselines
//! are SQL designs on the same schema, driven in-process only.
//!
//! [`GroupCommit::hold`]: warehouse::reservation::group_commit::GroupCommit::hold

pub mod baseline;
pub mod ceiling;
pub mod stockroom;

use crate::database::BenchDatabase;
use crate::seed::SeedPlan;
use crate::stats::{ErrorKind, Outcome};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use store::Backend;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum System {
    StockroomSqliteFull,
    StockroomSqliteNormal,
    StockroomPostgres,
    BaselineSqliteTxPerRequest,
    BaselineSaleorPostgres,
    BaselineGuardedUpdatePostgres,
    CeilingSqlite,
    CeilingSqliteLean,
}

impl System {
    pub const ALL: [System; 8] = [
        System::StockroomSqliteFull,
        System::StockroomSqliteNormal,
        System::StockroomPostgres,
        System::BaselineSqliteTxPerRequest,
        System::BaselineSaleorPostgres,
        System::BaselineGuardedUpdatePostgres,
        System::CeilingSqlite,
        System::CeilingSqliteLean,
    ];

    pub fn name(self) -> &'static str {
        match self {
            System::StockroomSqliteFull => "stockroom-sqlite-full",
            System::StockroomSqliteNormal => "stockroom-sqlite-normal",
            System::StockroomPostgres => "stockroom-postgres",
            System::BaselineSqliteTxPerRequest => "baseline-sqlite-tx-per-request",
            System::BaselineSaleorPostgres => "baseline-saleor-postgres",
            System::BaselineGuardedUpdatePostgres => "baseline-guarded-update-postgres",
            System::CeilingSqlite => "ceiling-sqlite",
            System::CeilingSqliteLean => "ceiling-sqlite-lean",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == raw)
    }

    pub fn backend(self) -> Backend {
        match self {
            System::StockroomSqliteFull
            | System::StockroomSqliteNormal
            | System::BaselineSqliteTxPerRequest
            | System::CeilingSqlite
            | System::CeilingSqliteLean => Backend::Sqlite,
            _ => Backend::Postgres,
        }
    }

    /// Baselines and the ceiling: Stockroom's figures are reported as ratios to theirs.
    pub fn is_baseline(self) -> bool {
        matches!(
            self,
            System::BaselineSqliteTxPerRequest
                | System::BaselineSaleorPostgres
                | System::BaselineGuardedUpdatePostgres
                | System::CeilingSqlite
                | System::CeilingSqliteLean
        )
    }

    /// The rows a ceiling system writes per hold; `None` for every other system.
    pub fn ceiling_shape(self) -> Option<ceiling::Shape> {
        match self {
            System::CeilingSqlite => Some(ceiling::Shape::PerHold),
            System::CeilingSqliteLean => Some(ceiling::Shape::PerRow),
            _ => None,
        }
    }

    /// Baselines are SQL designs, not servers: in-process only.
    pub fn layers(self) -> &'static [Layer] {
        if self.is_baseline() { &[Layer::InProcess] } else { &[Layer::InProcess, Layer::Http] }
    }

    /// What an acknowledged write survives.
    pub fn durability(self) -> &'static str {
        match self {
            System::StockroomSqliteFull
            | System::BaselineSqliteTxPerRequest
            | System::CeilingSqlite
            | System::CeilingSqliteLean => "SQLite WAL, synchronous=FULL: survives power loss",
            System::StockroomSqliteNormal => {
                "SQLite WAL, synchronous=NORMAL: NOT power-loss durable (survives a process crash)"
            }
            _ => "PostgreSQL server settings (see header)",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layer {
    InProcess,
    Http,
}

impl Layer {
    pub fn name(self) -> &'static str {
        match self {
            Layer::InProcess => "in-process",
            Layer::Http => "http",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [Layer::InProcess, Layer::Http].into_iter().find(|l| l.name() == raw)
    }
}

/// One line of a hold request.
#[derive(Debug, Clone)]
pub struct Line {
    pub sku: String,
    /// `None`: the system chooses among `candidates` (Stockroom sources by itself).
    pub warehouse: Option<String>,
    pub quantity: i64,
    /// The warehouses holding the SKU, in preference order; used by baselines when
    /// `warehouse` is `None`.
    pub candidates: Arc<[String]>,
}

#[derive(Debug, Clone)]
pub struct HoldRequest {
    pub lines: Vec<Line>,
}

/// Every hold a workload makes carries this reference, so the checks can find them.
pub const REFERENCE: &str = "bench";

/// How a workload reaches the system under test; cheap to clone.
#[derive(Clone)]
pub enum Target {
    InProcess(Arc<stockroom::InProcess>),
    Http(Arc<stockroom::HttpClient>),
    Baseline(Arc<baseline::Baseline>),
    Ceiling(Arc<ceiling::Ceiling>),
}

impl Target {
    pub async fn hold(&self, request: &HoldRequest) -> Outcome {
        match self {
            Target::InProcess(t) => t.hold(request).await,
            Target::Http(t) => t.hold(request).await,
            Target::Baseline(t) => t.hold(request).await,
            Target::Ceiling(t) => t.hold(request).await,
        }
    }

    /// The availability of one SKU across warehouses.
    pub async fn read(&self, sku: &str) -> Outcome {
        match self {
            Target::InProcess(t) => t.read(sku).await,
            Target::Http(t) => t.read(sku).await,
            Target::Baseline(t) => t.read(sku).await,
            // The ceiling is a write path; reads go to the same reader pool as the baselines'.
            Target::Ceiling(t) => baseline::read_levels(t.db.reader(), sku).await,
        }
    }
}

/// Settings a system is started with.
#[derive(Debug, Clone)]
pub struct StartOptions {
    pub postgres_admin_url: Option<String>,
    /// Most HTTP requests in flight from this client (a connection each).
    pub http_connections: usize,
    /// HTTP holds carry a fresh `Idempotency-Key` each.
    pub http_idempotency_keys: bool,
    pub group_commit: stockroom::GroupCommitOverrides,
}

/// A started system with its database; [`Instance::stop`] tears both down.
pub struct Instance {
    pub target: Target,
    /// The system's database, for the checks and for direct work such as sweeping.
    pub db: store::Db,
    database: BenchDatabase,
    running: Option<::stockroom::Running>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Instance {
    /// Creates a fresh database, seeds it with `plan`, and starts the system on it.
    pub async fn start(system: System, layer: Layer, plan: &SeedPlan, options: &StartOptions) -> anyhow::Result<Self> {
        let database = BenchDatabase::create(system.backend(), options.postgres_admin_url.as_deref()).await?;
        match Self::start_on(system, layer, plan, options, &database).await {
            Ok(instance) => Ok(instance),
            Err(e) => {
                database.drop_database().await;
                Err(e)
            }
        }
    }

    async fn start_on(
        system: System,
        layer: Layer,
        plan: &SeedPlan,
        options: &StartOptions,
        database: &BenchDatabase,
    ) -> anyhow::Result<Self> {
        let now = kernel::Clock::now(&kernel::SystemClock);
        if let Some(shape) = system.ceiling_shape() {
            let options = store::DbOptions { max_connections: 64, ..store::DbOptions::default() };
            let db = store::Db::connect_and_migrate(&database.url, &options).await?;
            crate::seed::seed(&db, plan, now).await?;
            let ceiling = ceiling::Ceiling::start(&database.url, db.clone(), shape)?;
            return Ok(Self {
                db,
                target: Target::Ceiling(Arc::new(ceiling)),
                database: database.clone(),
                running: None,
                workers: Vec::new(),
            });
        }
        if system.is_baseline() {
            let baseline = baseline::Baseline::connect(system, &database.url).await?;
            crate::seed::seed(&baseline.db, plan, now).await?;
            baseline.prepare().await?;
            return Ok(Self {
                db: baseline.db.clone(),
                target: Target::Baseline(Arc::new(baseline)),
                database: database.clone(),
                running: None,
                workers: Vec::new(),
            });
        }
        let db_options = stockroom::db_options(system);
        let db = store::Db::connect_and_migrate(&database.url, &db_options).await?;
        crate::seed::seed(&db, plan, now).await?;
        match layer {
            Layer::InProcess => {
                let (target, workers) = stockroom::InProcess::start(db.clone(), options.group_commit);
                Ok(Self {
                    target: Target::InProcess(Arc::new(target)),
                    db,
                    database: database.clone(),
                    running: None,
                    workers,
                })
            }
            Layer::Http => {
                db.close().await;
                let running = stockroom::start_server(system, &database.url, options.group_commit).await?;
                let client =
                    stockroom::HttpClient::new(running.addr, options.http_connections, options.http_idempotency_keys)?;
                Ok(Self {
                    target: Target::Http(Arc::new(client)),
                    db: running.db.clone(),
                    database: database.clone(),
                    running: Some(running),
                    workers: Vec::new(),
                })
            }
        }
    }

    /// Stops the system and drops its database.
    pub async fn stop(self) {
        let Instance { target, db, database, running, workers, .. } = self;
        // Dropping the last group-commit handle lets its workers drain and stop.
        drop(target);
        for worker in workers {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), worker).await;
        }
        match running {
            Some(running) => {
                if let Err(e) = running.stop().await {
                    tracing::warn!(error = %e, "stopping the server");
                }
            }
            None => db.close().await,
        }
        database.drop_database().await;
    }
}

/// Classifies a database error.
pub fn classify_sqlx(error: &sqlx::Error) -> Outcome {
    let kind = match error {
        sqlx::Error::PoolTimedOut => ErrorKind::Timeout,
        e => match e.as_database_error().and_then(|d| d.code().map(|c| c.into_owned())).as_deref() {
            Some("40P01") => ErrorKind::Deadlock,
            Some("40001") => ErrorKind::Serialization,
            Some("5" | "6" | "517") => ErrorKind::Busy,
            _ => ErrorKind::Other,
        },
    };
    Outcome::Error(kind, error.to_string())
}

pub fn classify_store(error: &store::StoreError) -> Outcome {
    match error {
        store::StoreError::Database(e) => classify_sqlx(e),
        other => Outcome::other(other),
    }
}
