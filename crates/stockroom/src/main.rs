//! `stockroom`: serve the API, migrate, manage keys, reconcile.

use anyhow::Context;
use clap::{Parser, Subcommand};
use kernel::SystemClock;
use metrics_exporter_prometheus::PrometheusBuilder;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use store::{Db, DbOptions, SqliteSync};
use tracing_subscriber::EnvFilter;
use warehouse::reservation::group_commit::GroupCommitConfig;

/// mimalloc: glibc malloc was 8% of the availability read path's profile (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "stockroom", version, about = "Inventory, order and fulfillment backbone")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct DatabaseArgs {
    /// sqlite://PATH (created if missing) or postgres://...
    #[arg(long, env = "STOCKROOM_DATABASE_URL", default_value = "sqlite://stockroom.db")]
    database_url: String,
    /// SQLite durability: `full` survives a power cut; `normal` (WAL) may lose the last
    /// commits on power loss.
    #[arg(long, env = "STOCKROOM_SQLITE_SYNCHRONOUS", default_value = "full", value_parser = ["full", "normal"])]
    sqlite_synchronous: String,
    /// Database connections (PostgreSQL), or SQLite readers.
    #[arg(long, env = "STOCKROOM_DB_MAX_CONNECTIONS", default_value_t = 16)]
    db_max_connections: u32,
}

impl DatabaseArgs {
    fn options(&self) -> DbOptions {
        DbOptions {
            max_connections: self.db_max_connections,
            sqlite_sync: if self.sqlite_synchronous == "normal" { SqliteSync::Normal } else { SqliteSync::Full },
            ..DbOptions::default()
        }
    }
}

/// SQLite page cache of an import's writer, KiB.
const IMPORT_SQLITE_CACHE_KIB: u32 = 256 * 1024;

/// WAL pages between an import's checkpoints (256 MiB of 4 KiB pages).
const IMPORT_SQLITE_AUTOCHECKPOINT_PAGES: u32 = 65_536;

/// Group commit of reservation writes.
#[derive(clap::Args, Clone)]
struct GroupCommitArgs {
    /// Most reservation requests applied in one transaction.
    #[arg(long, env = "STOCKROOM_GROUP_COMMIT_BATCH_MAX", default_value_t = 512)]
    group_commit_batch_max: usize,
    /// Microseconds a batch waits for more requests after the first (0: take what is queued).
    #[arg(long, env = "STOCKROOM_GROUP_COMMIT_WINDOW_US", default_value_t = 0)]
    group_commit_window_us: u64,
    /// Most reservation requests waiting; beyond it they get 503 with Retry-After.
    #[arg(long, env = "STOCKROOM_GROUP_COMMIT_QUEUE_MAX", default_value_t = 20_000)]
    group_commit_queue_max: usize,
    /// Batches applied concurrently (0: 1 on SQLite, 4 on PostgreSQL).
    #[arg(long, env = "STOCKROOM_GROUP_COMMIT_WORKERS", default_value_t = 0)]
    group_commit_workers: usize,
}

impl GroupCommitArgs {
    fn config(&self) -> GroupCommitConfig {
        GroupCommitConfig {
            batch_max: self.group_commit_batch_max.max(1),
            window: Duration::from_micros(self.group_commit_window_us),
            queue_max: self.group_commit_queue_max.max(1),
            workers: self.group_commit_workers,
        }
    }
}

/// The availability view's cache.
#[derive(clap::Args, Clone)]
struct AvailabilityArgs {
    /// Secret the cache's keys and values are MACed under; default: one made on first start
    /// and kept in the database (shared by every replica).
    #[arg(long, env = "STOCKROOM_CACHE_SECRET", hide_env_values = true)]
    cache_secret: Option<String>,
    /// Redis for the availability cache's shared tier (many replicas), e.g. redis://127.0.0.1:6379.
    #[arg(long, env = "STOCKROOM_REDIS_URL")]
    redis_url: Option<String>,
    /// TTL of a cached SKU with 0 available, ms (each entry gets a random TTL in [ttl/2, ttl)).
    #[arg(long, env = "STOCKROOM_CACHE_TTL_ZERO_MS", default_value_t = 2_000)]
    cache_ttl_zero_ms: u64,
    /// TTL of a cached SKU with low stock (see --cache-low-stock-units), ms.
    #[arg(long, env = "STOCKROOM_CACHE_TTL_LOW_MS", default_value_t = 10_000)]
    cache_ttl_low_ms: u64,
    /// TTL of a cached SKU with more stock, ms.
    #[arg(long, env = "STOCKROOM_CACHE_TTL_STABLE_MS", default_value_t = 300_000)]
    cache_ttl_stable_ms: u64,
    /// At most this many available counts as low stock.
    #[arg(long, env = "STOCKROOM_CACHE_LOW_STOCK_UNITS", default_value_t = 5)]
    cache_low_stock_units: i64,
    /// When the event follower is behind by more than this, entries older than it are re-read, ms.
    #[arg(long, env = "STOCKROOM_CACHE_TRUST_BOUND_MS", default_value_t = 1_000)]
    cache_trust_bound_ms: u64,
    /// Longest a read of the database may take before cached figures are served as stale, ms.
    #[arg(long, env = "STOCKROOM_CACHE_FETCH_TIMEOUT_MS", default_value_t = 1_500)]
    cache_fetch_timeout_ms: u64,
    /// Most cached entries.
    #[arg(long, env = "STOCKROOM_CACHE_MAX_ENTRIES", default_value_t = 1_000_000)]
    cache_max_entries: u64,
    /// `false`: every availability read goes to the database (for comparison only).
    #[arg(long, env = "STOCKROOM_AVAILABILITY_CACHE", default_value_t = true, action = clap::ArgAction::Set)]
    availability_cache: bool,
}

impl AvailabilityArgs {
    fn config(&self) -> stockroom::CatalogConfig {
        let ms = Duration::from_millis;
        stockroom::CatalogConfig {
            cache_secret: self.cache_secret.clone().filter(|s| !s.is_empty()),
            redis_url: self.redis_url.clone().filter(|s| !s.is_empty()),
            view: catalog::availability::ViewSettings {
                ttl_zero: ms(self.cache_ttl_zero_ms.max(2)),
                ttl_low: ms(self.cache_ttl_low_ms.max(2)),
                ttl_stable: ms(self.cache_ttl_stable_ms.max(2)),
                low_stock_units: self.cache_low_stock_units.max(0),
                trust_bound: ms(self.cache_trust_bound_ms.max(1)),
                fetch_timeout: ms(self.cache_fetch_timeout_ms.max(1)),
                max_entries: self.cache_max_entries.max(1),
                cache: self.availability_cache,
                ..Default::default()
            },
            intervals: Default::default(),
        }
    }
}

/// The order context.
#[derive(clap::Args, Clone)]
struct OrderArgs {
    /// Stock figures the availability view could not refresh for longer than this are not
    /// shown in carts at all (`available: null, stale: true`), seconds.
    #[arg(long, env = "STOCKROOM_MAX_STALE_SECONDS", default_value_t = 300)]
    max_stale_seconds: i64,
    /// How often the saga worker cancels checkouts whose hold expired unpaid, ms.
    #[arg(long, env = "STOCKROOM_SAGA_INTERVAL_MS", default_value_t = 1_000)]
    saga_interval_ms: u64,
}

impl OrderArgs {
    fn config(&self) -> stockroom::OrderConfig {
        stockroom::OrderConfig {
            max_stale_seconds: self.max_stale_seconds.max(0),
            saga_interval: Duration::from_millis(self.saga_interval_ms.max(1)),
        }
    }
}

/// Events out: webhooks.
#[derive(clap::Args, Clone)]
struct EventsArgs {
    /// Allow webhook URLs on loopback and private addresses (refused by default, so a key
    /// holder cannot make Stockroom call internal services).
    #[arg(long, env = "STOCKROOM_WEBHOOK_ALLOW_PRIVATE", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    webhook_allow_private: bool,
    /// A failing webhook delivery is retried (with backoff) this long before it is dead-lettered, seconds.
    #[arg(long, env = "STOCKROOM_WEBHOOK_RETRY_WINDOW_SECONDS", default_value_t = 86_400)]
    webhook_retry_window_seconds: u64,
    /// NATS with JetStream: every event is also published to `stockroom.<type>`, e.g. nats://127.0.0.1:4222.
    #[arg(long, env = "STOCKROOM_NATS_URL")]
    nats_url: Option<String>,
    /// One webhook attempt's time limit, ms.
    #[arg(long, env = "STOCKROOM_WEBHOOK_TIMEOUT_MS", default_value_t = 10_000)]
    webhook_timeout_ms: u64,
}

impl EventsArgs {
    fn config(&self) -> events::EventsSettings {
        events::EventsSettings {
            allow_private: self.webhook_allow_private,
            retry_window: Duration::from_secs(self.webhook_retry_window_seconds.max(1)),
            request_timeout: Duration::from_millis(self.webhook_timeout_ms.max(1)),
            nats: self.nats_url.clone().filter(|u| !u.is_empty()).map(events::nats::NatsSettings::new),
            ..Default::default()
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API and run the workers.
    Serve {
        #[arg(long, env = "STOCKROOM_LISTEN", default_value = "127.0.0.1:8080")]
        listen: String,
        #[command(flatten)]
        database: DatabaseArgs,
        /// Admin key (all scopes). Without one, the first start creates one and prints it once.
        #[arg(long, env = "STOCKROOM_ADMIN_KEY", hide_env_values = true)]
        admin_key: Option<String>,
        #[arg(long, env = "STOCKROOM_SWEEP_INTERVAL_MS", default_value_t = 1000)]
        sweep_interval_ms: u64,
        #[command(flatten)]
        group_commit: GroupCommitArgs,
        #[command(flatten)]
        availability: AvailabilityArgs,
        #[command(flatten)]
        orders: OrderArgs,
        #[command(flatten)]
        events: EventsArgs,
    },
    /// Apply pending migrations and exit.
    Migrate {
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Manage API keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Import items, receipts or adjustments from CSV or JSON lines; safe to run again.
    Import {
        #[arg(value_enum)]
        kind: stockroom::import::Kind,
        file: std::path::PathBuf,
        /// Default: by the file's extension (.jsonl/.ndjson: JSON lines, else CSV).
        #[arg(long, value_enum)]
        format: Option<stockroom::import::Format>,
        /// Most rows per transaction.
        #[arg(long, default_value_t = 1000)]
        batch_size: usize,
        /// Milliseconds a transaction may hold the database (SQLite's write lock), begin to
        /// commit: the rows per transaction adapt to it, up to --batch-size. 0: no bound,
        /// always --batch-size rows. Not for --all-or-nothing or --dry-run (one transaction).
        #[arg(long, env = "STOCKROOM_IMPORT_MAX_TX_MS", default_value_t = stockroom::import::DEFAULT_MAX_TX_MS)]
        max_tx_ms: u64,
        /// Milliseconds to wait after each transaction, so a server's writes waiting for the
        /// lock go first. 0: none.
        #[arg(long, env = "STOCKROOM_IMPORT_PAUSE_MS", default_value_t = stockroom::import::DEFAULT_PAUSE_MS)]
        pause_ms: u64,
        /// Key rows without a `key` column BATCH_ID:ROW instead of by their content.
        #[arg(long)]
        batch_id: Option<String>,
        /// Apply nothing unless every row can be applied.
        #[arg(long)]
        all_or_nothing: bool,
        /// Check and report every row as it would be applied; keep nothing.
        #[arg(long)]
        dry_run: bool,
        /// Write every rejected row (number, reason, text) to this file as JSON lines.
        #[arg(long)]
        rejects: Option<std::path::PathBuf>,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Write stock levels or movements as CSV or JSON lines.
    Export {
        #[arg(value_enum)]
        what: stockroom::export::What,
        #[arg(long, value_enum, default_value = "csv")]
        format: stockroom::export::Format,
        /// File to write; standard output if omitted.
        #[arg(long)]
        output: Option<std::path::PathBuf>,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Print the OpenAPI document (the one `/openapi.json` serves) and exit; needs no database.
    Openapi,
    /// Check every stock level against its movements; exit 1 on a mismatch.
    Reconcile {
        #[command(flatten)]
        database: DatabaseArgs,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a key and print it once.
    Create {
        /// admin, inventory:read, inventory:write (repeatable).
        #[arg(long = "scope", required = true, num_args = 1..)]
        scopes: Vec<String>,
        #[arg(long, default_value = "cli")]
        label: String,
        #[command(flatten)]
        database: DatabaseArgs,
    },
}

fn main() -> ExitCode {
    events::install_tls();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn")))
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(Cli::parse())) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve {
            listen,
            database,
            admin_key,
            sweep_interval_ms,
            group_commit,
            availability,
            orders,
            events,
        } => {
            let metrics = PrometheusBuilder::new().install_recorder().context("installing the metrics recorder")?;
            let config = stockroom::ServeConfig {
                listen,
                database_url: database.database_url.clone(),
                admin_key: admin_key.filter(|k| !k.is_empty()),
                sweep_interval: Duration::from_millis(sweep_interval_ms.max(1)),
                db: database.options(),
                group_commit: group_commit.config(),
                catalog: availability.config(),
                orders: orders.config(),
                events: events.config(),
            };
            let running = stockroom::start(config, Arc::new(SystemClock), metrics).await?;
            if let Some(key) = &running.bootstrap_key {
                println!("Created the admin key (shown once, store it now): {key}");
            }
            tracing::info!("listening on http://{}", running.addr);
            shutdown_signal().await;
            tracing::info!("shutting down");
            running.stop().await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate { database } => {
            Db::connect_and_migrate(&database.database_url, &database.options()).await?;
            println!("migrations applied to {}", stockroom::redact(&database.database_url));
            Ok(ExitCode::SUCCESS)
        }
        Command::Keys { command: KeysCommand::Create { scopes, label, database } } => {
            let scopes = scopes
                .iter()
                .flat_map(|s| s.split(','))
                .map(|s| api::auth::Scope::parse(s.trim()).with_context(|| format!("unknown scope {s:?}")))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let db = Db::connect_existing(&database.database_url, &database.options()).await?;
            let key = api::auth::key_create(&db, &scopes, &label, kernel::Clock::now(&SystemClock)).await?;
            println!("{}", key.secret);
            eprintln!("created key {} (shown once)", key.id);
            Ok(ExitCode::SUCCESS)
        }
        Command::Import {
            kind,
            file,
            format,
            batch_size,
            max_tx_ms,
            pause_ms,
            batch_id,
            all_or_nothing,
            dry_run,
            rejects,
            database,
        } => {
            // An import touches index pages all over large tables: a big writer cache (only
            // what is used is allocated) keeps them in memory from batch to batch.
            let options = DbOptions {
                sqlite_writer_cache_kib: IMPORT_SQLITE_CACHE_KIB,
                sqlite_wal_autocheckpoint_pages: IMPORT_SQLITE_AUTOCHECKPOINT_PAGES,
                ..database.options()
            };
            let db = Db::connect_existing(&database.database_url, &options).await?;
            let options = stockroom::import::Options {
                format: format.unwrap_or_else(|| stockroom::import::format_of(&file)),
                batch_size,
                progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
                batch_id,
                all_or_nothing,
                dry_run,
                rejects,
                max_tx: (max_tx_ms > 0).then(|| Duration::from_millis(max_tx_ms)),
                pause: Duration::from_millis(pause_ms),
            };
            let report = stockroom::import::import(&db, kind, &file, &options).await?;
            for (row, message) in report.errors.iter().take(100) {
                eprintln!("row {row}: {message}");
            }
            if report.errors.len() > 100 {
                eprintln!("... and {} more errors", report.errors.len() - 100);
            }
            let kept = match (dry_run, report.rolled_back) {
                (true, _) => "; dry run: nothing kept",
                (false, true) => "; all or nothing: rows were rejected, nothing kept",
                (false, false) => "",
            };
            println!(
                "{} rows read, {} applied, {} skipped (applied before), {} rejected, {:.1} s, {:.0} rows/s, {} \
                 transactions (longest {:.1} ms){kept}",
                report.rows,
                report.applied,
                report.skipped,
                report.errors.len(),
                report.seconds,
                report.rows as f64 / report.seconds.max(1e-9),
                report.transactions,
                report.longest_tx.as_secs_f64() * 1000.0
            );
            Ok(if report.errors.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        Command::Export { what, format, output, database } => {
            let db = Db::connect_existing(&database.database_url, &database.options()).await?;
            let progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
            let written = match output {
                Some(path) => {
                    let file = std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
                    stockroom::export::export(&db, what, format, std::io::BufWriter::new(file), progress).await?
                }
                None => stockroom::export::export(&db, what, format, std::io::stdout().lock(), progress).await?,
            };
            eprintln!("exported {written} rows");
            Ok(ExitCode::SUCCESS)
        }
        Command::Openapi => {
            println!("{}", serde_json::to_string_pretty(&api::openapi::document())?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Reconcile { database } => {
            let db = Db::connect_existing(&database.database_url, &database.options()).await?;
            let report = warehouse::reconcile::reconcile(db.reader()).await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(if report.mismatches.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
