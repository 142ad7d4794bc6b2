//! Connecting, migrating and beginning transactions, on SQLite or PostgreSQL.

use crate::StoreError;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{Any, AnyPool, ConnectOptions, Executor, Transaction};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// The one transaction type of every use case.
pub type Tx = Transaction<'static, Any>;

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// SQLite's `synchronous` setting: `Full` makes an acknowledged commit survive a power cut;
/// `Normal` in WAL mode survives a crash of the process but may lose the last commits on
/// power loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SqliteSync {
    #[default]
    Full,
    Normal,
}

#[derive(Debug, Clone)]
pub struct DbOptions {
    /// Connections to PostgreSQL, and SQLite readers. SQLite always has exactly one writer.
    pub max_connections: u32,
    pub sqlite_sync: SqliteSync,
    /// How long a connection waits for a lock or a free pool slot before giving up.
    pub acquire_timeout: Duration,
    /// SQLite page cache of the writer connection, KiB. Large batches (group commit, imports)
    /// dirty many pages; a cache smaller than that spills to disk mid-transaction.
    pub sqlite_writer_cache_kib: u32,
    /// SQLite page cache of each reader connection, KiB.
    pub sqlite_reader_cache_kib: u32,
    /// WAL pages after which a SQLite commit checkpoints (SQLite's default is 1,000). Bulk
    /// writers raise it: each checkpoint writes pages back all over the file and syncs it.
    pub sqlite_wal_autocheckpoint_pages: u32,
}

impl Default for DbOptions {
    fn default() -> Self {
        Self {
            max_connections: 16,
            sqlite_sync: SqliteSync::Full,
            acquire_timeout: Duration::from_secs(10),
            sqlite_writer_cache_kib: 64 * 1024,
            sqlite_reader_cache_kib: 8 * 1024,
            sqlite_wal_autocheckpoint_pages: 1_000,
        }
    }
}

/// The database: a pool for writes and one for reads (the same pool on PostgreSQL).
///
/// SQLite allows one writer at a time; giving it a pool of one connection turns what would be
/// `SQLITE_BUSY` retries into an orderly queue, while WAL lets readers run beside it.
#[derive(Debug, Clone)]
pub struct Db {
    write: AnyPool,
    read: AnyPool,
    backend: Backend,
    /// SQLite files only: the writer thread hot batches run on ([`crate::direct`]).
    direct: Option<crate::direct::DirectWriter>,
    /// Foreground jobs on the direct writer, queued or running: background work (the expiry
    /// sweep) waits for a gap in them.
    foreground: Arc<Foreground>,
}

#[derive(Debug, Default)]
struct Foreground {
    busy: std::sync::atomic::AtomicUsize,
    idle: tokio::sync::Notify,
}

/// A job for the direct writer: it answers `Ok(Some(_))` to commit, `Ok(None)` to roll back
/// and leave the work to the general path, an error to roll back.
pub trait DirectJob<T, E>: FnOnce(&rusqlite::Transaction<'_>) -> Result<Option<T>, E> + Send + 'static {}

impl<T, E, F> DirectJob<T, E> for F where F: FnOnce(&rusqlite::Transaction<'_>) -> Result<Option<T>, E> + Send + 'static {}

/// What a direct-writer call answers: `None` where there is no direct writer.
pub type DirectOutcome<T, E> = Option<Result<Option<T>, E>>;

/// Counts one foreground job from its queueing to its end.
struct ForegroundTurn(Arc<Foreground>);

impl ForegroundTurn {
    fn start(foreground: &Arc<Foreground>) -> Self {
        foreground.busy.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Self(foreground.clone())
    }
}

impl Drop for ForegroundTurn {
    fn drop(&mut self) {
        if self.0.busy.fetch_sub(1, std::sync::atomic::Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl Db {
    /// Connects to `url` (`sqlite://PATH` or `postgres://...`); a SQLite file is created if
    /// missing. Does not migrate: call [`Db::migrate`].
    pub async fn connect(url: &str, options: &DbOptions) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        if url.starts_with("sqlite:") {
            let plain_file = sqlite_path(url).filter(|_| !url.contains('?') && !url.contains('%'));
            let url = sqlite_url_with_create(url);
            let write = sqlite_pool(&url, 1, options.sqlite_writer_cache_kib, options).await?;
            let read =
                sqlite_pool(&url, options.max_connections.max(1), options.sqlite_reader_cache_kib, options).await?;
            // Only a plain file path: a URL with options (`mode=`, `immutable=`, `vfs=`) or
            // percent-encoding is left to sqlx alone, which reads them; rusqlite would not.
            let direct = match plain_file {
                Some(path) => Some(crate::direct::DirectWriter::open(path, options)?),
                None => None,
            };
            Ok(Self { write, read, backend: Backend::Sqlite, direct, foreground: Arc::default() })
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let connect = AnyConnectOptions::from_str(url)?
                .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_secs(1));
            let pool = AnyPoolOptions::new()
                .max_connections(options.max_connections.max(2))
                .acquire_timeout(options.acquire_timeout)
                .connect_with(connect)
                .await?;
            Ok(Self {
                write: pool.clone(),
                read: pool,
                backend: Backend::Postgres,
                direct: None,
                foreground: Arc::default(),
            })
        } else {
            Err(StoreError::UnsupportedUrl(url.to_owned()))
        }
    }

    /// Connects to a database that must exist already with every migration applied: for the
    /// commands that read or change data (`reconcile`, `import`, `export`, `keys`), which must
    /// not create an empty database at a mistyped path and report on it.
    pub async fn connect_existing(url: &str, options: &DbOptions) -> Result<Self, StoreError> {
        if let Some(path) = sqlite_path(url)
            && !std::path::Path::new(path).exists()
        {
            return Err(StoreError::Missing(format!("no SQLite database at {path}")));
        }
        let db = Self::connect(url, options).await?;
        if !db.is_ready().await {
            db.close().await;
            return Err(StoreError::Missing(
                "the database is not migrated to this version: run `stockroom migrate` first".into(),
            ));
        }
        Ok(db)
    }

    /// Connects and applies pending migrations.
    pub async fn connect_and_migrate(url: &str, options: &DbOptions) -> Result<Self, StoreError> {
        let db = Self::connect(url, options).await?;
        db.migrate().await?;
        Ok(db)
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    fn migrator(&self) -> &'static sqlx::migrate::Migrator {
        match self.backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        }
    }

    pub async fn migrate(&self) -> Result<(), StoreError> {
        self.migrator().run(&self.write).await?;
        Ok(())
    }

    /// True when the database answers and every embedded migration is applied.
    pub async fn is_ready(&self) -> bool {
        let expected = self.migrator().iter().filter(|m| m.migration_type.is_up_migration()).count();
        let applied: Result<i64, _> = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success = TRUE")
            .fetch_one(&self.read)
            .await;
        matches!(applied, Ok(n) if n as usize >= expected)
    }

    /// Begins a write transaction. On SQLite it takes the write lock at once
    /// (`BEGIN IMMEDIATE`), so a transaction that reads before it writes cannot fail halfway
    /// with `SQLITE_BUSY` when another process writes.
    pub async fn begin(&self) -> Result<Tx, StoreError> {
        let tx = match self.backend {
            Backend::Sqlite => self.write.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.write.begin().await?,
        };
        Ok(tx)
    }

    /// Runs `work` in one `BEGIN IMMEDIATE` transaction on SQLite's direct writer
    /// ([`crate::direct`]); `None` where there is none (PostgreSQL, in-memory SQLite). `work`
    /// answers `Ok(Some(_))` to commit, `Ok(None)` to roll back and leave the batch to the
    /// general path, an error to roll back.
    pub async fn write_direct<T: Send + 'static, E: From<StoreError> + Send + 'static>(
        &self,
        work: impl DirectJob<T, E>,
    ) -> DirectOutcome<T, E> {
        self.direct.as_ref()?;
        let _turn = ForegroundTurn::start(&self.foreground);
        self.run_direct(work).await
    }

    /// [`Db::write_direct`] for work that can wait (the expiry sweep): it first waits, at most
    /// `patience`, for a moment when no foreground job is queued or running, so a foreground
    /// batch waits for at most one background job, never for a train of them.
    pub async fn write_direct_background<T: Send + 'static, E: From<StoreError> + Send + 'static>(
        &self,
        patience: Duration,
        work: impl DirectJob<T, E>,
    ) -> DirectOutcome<T, E> {
        self.direct.as_ref()?;
        let _ = tokio::time::timeout(patience, async {
            loop {
                let idle = self.foreground.idle.notified();
                if self.foreground.busy.load(std::sync::atomic::Ordering::Acquire) == 0 {
                    return;
                }
                idle.await;
            }
        })
        .await;
        self.run_direct(work).await
    }

    /// Whether a foreground job is queued for or running on the direct writer now.
    pub fn foreground_busy(&self) -> bool {
        self.foreground.busy.load(std::sync::atomic::Ordering::Acquire) > 0
    }

    async fn run_direct<T: Send + 'static, E: From<StoreError> + Send + 'static>(
        &self,
        work: impl DirectJob<T, E>,
    ) -> DirectOutcome<T, E> {
        let writer = self.direct.as_ref()?;
        let outcome = async {
            // The sqlx writer's one connection is the in-process write lock: holding it keeps
            // the two writers queueing in order rather than in SQLite's busy handler. The job
            // owns it, so a caller that stops waiting cannot release it while the job runs.
            let turn = WriteTurn {
                conn: Some(self.write.acquire().await.map_err(StoreError::from)?),
                runtime: tokio::runtime::Handle::current(),
            };
            writer
                .run(move |conn| {
                    let done = (|| {
                        let tx = conn
                            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                            .map_err(StoreError::from)?;
                        match work(&tx)? {
                            Some(done) => {
                                tx.commit().map_err(StoreError::from)?;
                                Ok(Some(done))
                            }
                            // Dropping the transaction rolls it back.
                            None => Ok(None),
                        }
                    })();
                    drop(turn);
                    done
                })
                .await?
        };
        Some(outcome.await)
    }

    /// The pool for reads that need no transaction.
    pub fn reader(&self) -> &AnyPool {
        &self.read
    }

    pub async fn close(&self) {
        self.write.close().await;
        self.read.close().await;
    }
}

/// The sqlx writer connection a direct job holds as the in-process write lock. It may be
/// dropped on the writer thread (also while a panicking job unwinds), and returning a pooled
/// connection spawns on the runtime: the drop enters it first.
struct WriteTurn {
    conn: Option<sqlx::pool::PoolConnection<sqlx::Any>>,
    runtime: tokio::runtime::Handle,
}

impl Drop for WriteTurn {
    fn drop(&mut self) {
        let _entered = self.runtime.enter();
        self.conn.take();
    }
}

/// The backend a connection (or transaction) talks to.
pub fn backend_of(conn: &sqlx::AnyConnection) -> Backend {
    if conn.backend_name() == "PostgreSQL" { Backend::Postgres } else { Backend::Sqlite }
}

/// The file of a `sqlite:` URL, without its query string; `None` for in-memory or other URLs.
fn sqlite_path(url: &str) -> Option<&str> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or(rest);
    (!path.is_empty() && !path.starts_with(":memory:")).then_some(path)
}

fn sqlite_url_with_create(url: &str) -> String {
    if url.contains("mode=") {
        url.to_owned()
    } else if url.contains('?') {
        format!("{url}&mode=rwc")
    } else {
        format!("{url}?mode=rwc")
    }
}

async fn sqlite_pool(url: &str, max: u32, cache_kib: u32, options: &DbOptions) -> Result<AnyPool, StoreError> {
    let synchronous = match options.sqlite_sync {
        SqliteSync::Full => "PRAGMA synchronous = FULL",
        SqliteSync::Normal => "PRAGMA synchronous = NORMAL",
    };
    let busy_ms = options.acquire_timeout.as_millis();
    let autocheckpoint = options.sqlite_wal_autocheckpoint_pages;
    let connect = AnyConnectOptions::from_str(url)?;
    let pool = AnyPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(options.acquire_timeout)
        // A connection to a local file cannot go stale: no ping (a round trip through the
        // driver's worker thread) before every transaction (issue 13).
        .test_before_acquire(false)
        .after_connect(move |conn, _meta| {
            Box::pin(async move {
                // WAL lets readers run beside the writer; foreign keys are off by default in
                // SQLite; the busy timeout covers other processes (the CLI) writing.
                conn.execute("PRAGMA journal_mode = WAL").await?;
                conn.execute("PRAGMA foreign_keys = ON").await?;
                // The default 2 MB page cache spills to disk mid-transaction on large batches
                // (bulk imports, big group-commit batches); statement journals stay in memory.
                conn.execute(sqlx::AssertSqlSafe(format!("PRAGMA cache_size = -{cache_kib}"))).await?;
                conn.execute("PRAGMA temp_store = MEMORY").await?;
                conn.execute(synchronous).await?;
                conn.execute(sqlx::AssertSqlSafe(format!("PRAGMA wal_autocheckpoint = {autocheckpoint}"))).await?;
                conn.execute(sqlx::AssertSqlSafe(format!("PRAGMA busy_timeout = {busy_ms}"))).await?;
                Ok(())
            })
        })
        .connect_with(connect)
        .await?;
    Ok(pool)
}
