//! `stockroom-bench orders`: order checkout over HTTP against the real server, with the
//! checkout executor's group commit and without it (`batch_max = 1`: one transaction and one
//! commit per checkout, the baseline), side by side on the same data in one run; then a flash
//! sale on the same server.
//!
//! Throughput: 5 warehouses in one channel (priority sourcing), `POOL_SKUS` SKUs each stocked
//! plentifully in one or two warehouses only. Every cart has 5 lines of distinct SKUs whose
//! first warehouses are all different, 1 to 3 units each, so every order splits over several
//! warehouses. Each checkout applies one percentage promotion whose usage limit never runs out.
//! Carts are written to the database before the server starts (not timed); the measured request
//! is `POST /v1/carts/{id}/checkout` with a fresh `Idempotency-Key`, `clients` closed-loop.
//!
//! Flash sale: `flash_buyers` carts of one unit of one SKU with `flash_units` units over three
//! warehouses, all checkouts released at once through a gate, at most `FLASH_IN_FLIGHT` in
//! flight.
//!
//! After each part the books are checked from the database and the API: every order's
//! reservation lines equal its allocation, held units equal acknowledged units, the
//! reconciliation is clean, and the promotion's uses equal the orders that used it.

use crate::database::BenchDatabase;
use crate::seed::{SeedPlan, series};
use crate::stats::{ErrorCounts, ErrorKind, Outcome, Recorder};
use anyhow::Context;
use clap::Args;
use kernel::{Clock, SystemClock};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use store::Backend;
use warehouse::reservation::group_commit::GroupCommitConfig;

pub(crate) const CHANNEL: &str = "shop";
pub(crate) const WAREHOUSES: usize = 5;
pub(crate) const PREFIX: &str = "OR-";
/// SKUs of the throughput carts; a multiple of 25, so that line `j` of every cart lands on a
/// different first warehouse (see `cart_line_sku`).
pub(crate) const POOL_SKUS: usize = 1_000;
const LINES_PER_CART: usize = 5;
/// Units of every stock row of the pool: far more than any run sells.
const POOL_STOCK: i64 = 100_000_000;
const PROMOTION: &str = "BENCH10";
/// Carts written per second of warm-up and measurement: above the 5,000/s target, so a run
/// does not run out (if it does, the report says so).
const CARTS_PER_SECOND: f64 = 10_000.0;
/// Flash-sale checkouts in flight at once: more simultaneous connects overflow the listen
/// backlog (connection timeouts), which is not what this measures.
const FLASH_IN_FLIGHT: usize = 1_000;

#[derive(Debug, Clone, Args)]
pub struct OrdersArgs {
    /// Shorter runs and a smaller flash sale (for CI).
    #[arg(long)]
    pub quick: bool,
    /// Seconds of each throughput measurement (default 10; quick 1.5), after a warm-up of a
    /// quarter of it.
    #[arg(long)]
    pub duration_s: Option<f64>,
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// Buyers of the flash sale (default 10,000; quick 1,000).
    #[arg(long)]
    pub flash_buyers: Option<usize>,
    /// Units of the flash sale's SKU (default 1,000; quick 100).
    #[arg(long)]
    pub flash_units: Option<i64>,
    /// Admin URL of a PostgreSQL server: the same runs on PostgreSQL too.
    #[arg(long, env = "STOCKROOM_BENCH_POSTGRES_URL")]
    pub postgres_url: Option<String>,
}

impl OrdersArgs {
    fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.duration_s.unwrap_or(if self.quick { 1.5 } else { 10.0 }).max(0.1))
    }

    fn warm_up(&self) -> Duration {
        Duration::from_secs_f64((self.duration().as_secs_f64() / 4.0).max(0.2))
    }

    fn carts(&self) -> usize {
        ((self.warm_up() + self.duration()).as_secs_f64() * CARTS_PER_SECOND).ceil() as usize
    }

    fn flash_buyers(&self) -> usize {
        self.flash_buyers.unwrap_or(if self.quick { 1_000 } else { 10_000 }).max(1)
    }

    fn flash_units(&self) -> i64 {
        self.flash_units.unwrap_or(if self.quick { 100 } else { 1_000 }).max(3)
    }
}

/// The same server with its group commit, or with one checkout per transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    Stockroom,
    Baseline,
}

impl Variant {
    fn label(self) -> &'static str {
        match self {
            Variant::Stockroom => "stockroom (group commit)",
            Variant::Baseline => "baseline (batch_max 1)",
        }
    }

    fn group_commit(self) -> GroupCommitConfig {
        // workers 0: the backend's default (1 on SQLite, 4 on PostgreSQL), as `stockroom serve`.
        let config = GroupCommitConfig { workers: 0, ..GroupCommitConfig::default() };
        match self {
            Variant::Stockroom => config,
            Variant::Baseline => GroupCommitConfig { batch_max: 1, ..config },
        }
    }
}

pub fn run(args: &OrdersArgs) -> anyhow::Result<()> {
    crate::probe::install();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        println!("{}", crate::env::header(args.postgres_url.as_deref(), args.quick).await?.line());
        println!(
            "orders: {} SKUs over {WAREHOUSES} warehouses (1 or 2 each), carts of {LINES_PER_CART} lines, \
             promotion {PROMOTION}, {} clients, {:.1} s per run after {:.1} s warm-up, {} carts written \
             before each run; flash sale {} buyers for {} units, at most {FLASH_IN_FLIGHT} in flight",
            POOL_SKUS,
            args.clients,
            args.duration().as_secs_f64(),
            args.warm_up().as_secs_f64(),
            args.carts(),
            args.flash_buyers(),
            args.flash_units(),
        );
        let mut backends = vec![Backend::Sqlite];
        if args.postgres_url.is_some() {
            backends.push(Backend::Postgres);
        } else {
            println!("note: no --postgres-url (or STOCKROOM_BENCH_POSTGRES_URL): PostgreSQL runs skipped");
        }
        let mut reports = Vec::new();
        for backend in backends {
            for variant in [Variant::Stockroom, Variant::Baseline] {
                let report = one_run(args, backend, variant).await.with_context(|| {
                    format!("the {} run on {}", variant.label(), crate::availability::label(backend))
                })?;
                reports.push((backend, variant, report));
            }
        }
        print_reports(&reports);
        Ok(())
    })
}

fn print_reports(reports: &[(Backend, Variant, Report)]) {
    println!();
    println!("| backend | system | checkouts/s | p50 ms | p99 ms | max ms | refused | errors | checkouts per commit |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for (backend, variant, r) in reports {
        let l = r.throughput.latency();
        println!(
            "| {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {} | {:.1} |",
            crate::availability::label(*backend),
            variant.label(),
            r.checkouts_per_s,
            l.p50_ms,
            l.p99_ms,
            l.max_ms,
            r.throughput.refused,
            errors_by_kind(&r.throughput.errors),
            r.checkouts_per_commit,
        );
        if let Some(e) = &r.throughput.error_sample {
            println!("|  | first error: {} | | | | | | | |", e.replace('|', "/"));
        }
        if r.carts_ran_out {
            println!("|  | note: the written carts ran out before the end of the measurement | | | | | | | |");
        }
    }
    println!();
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let rate = |v: Variant| {
            reports.iter().find(|(b, variant, _)| *b == backend && *variant == v).map(|(_, _, r)| r.checkouts_per_s)
        };
        if let (Some(s), Some(b)) = (rate(Variant::Stockroom), rate(Variant::Baseline)) {
            println!(
                "ratio stockroom/baseline, {}: {:.2}x checkouts/s",
                crate::availability::label(backend),
                s / b.max(1e-9)
            );
        }
    }
    println!();
    println!(
        "| backend | system | orders acknowledged | orders in database | allocation ≠ reservation | held units | \
         acknowledged units | promotion uses | reconciliation |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (backend, variant, r) in reports {
        let c = &r.checks;
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            crate::availability::label(*backend),
            variant.label(),
            c.orders_acknowledged,
            c.orders_in_database,
            c.allocation_mismatches,
            c.held_units,
            c.acknowledged_units,
            c.promotion_uses,
            c.reconciliation,
        );
    }
    println!();
    println!(
        "| backend | system | buyers | units | release → last answer s | winners | refused | errors | \
         units held | units acknowledged | oversold rows | p99 ms | reconciliation |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (backend, variant, r) in reports {
        let f = &r.flash;
        println!(
            "| {} | {} | {} | {} | {:.2} | {} | {} | {} | {} | {} | {} | {:.1} | {} |",
            crate::availability::label(*backend),
            variant.label(),
            f.buyers,
            f.units,
            f.release_to_last.as_secs_f64(),
            f.recorder.ok,
            f.recorder.refused,
            errors_by_kind(&f.recorder.errors),
            f.units_sold,
            f.acknowledged_units,
            f.oversold_rows,
            f.recorder.latency().p99_ms,
            f.reconciliation,
        );
        if let Some(e) = &f.recorder.error_sample {
            println!("|  | first error: {} | | | | | | | | | | | |", e.replace('|', "/"));
        }
    }
}

fn errors_by_kind(e: &ErrorCounts) -> String {
    let kinds = [
        ("deadlock", e.deadlock),
        ("serialization", e.serialization),
        ("busy", e.busy),
        ("overloaded", e.overloaded),
        ("timeout", e.timeout),
        ("other", e.other),
    ];
    let named: Vec<String> = kinds.iter().filter(|(_, n)| *n > 0).map(|(k, n)| format!("{n} {k}")).collect();
    if named.is_empty() { "0".into() } else { named.join(", ") }
}

struct Report {
    throughput: Recorder,
    checkouts_per_s: f64,
    checkouts_per_commit: f64,
    carts_ran_out: bool,
    checks: Checks,
    flash: Flash,
}

/// What the books say after the throughput part.
struct Checks {
    orders_acknowledged: usize,
    orders_in_database: i64,
    /// (reservation, SKU, warehouse) triples where an order's allocation and its reservation's
    /// lines differ, plus order lines whose allocation does not add up to what was ordered.
    allocation_mismatches: i64,
    /// Units reserved in the pool's stock rows.
    held_units: i64,
    /// Units allocated in the 201 answers.
    acknowledged_units: i64,
    /// `uses_taken` of the promotion, as the API shows it.
    promotion_uses: i64,
    reconciliation: String,
}

struct Flash {
    buyers: usize,
    units: i64,
    release_to_last: Duration,
    recorder: Recorder,
    /// Units reserved in the flash SKU's stock rows.
    units_sold: i64,
    /// Units allocated in the winners' 201 answers.
    acknowledged_units: i64,
    /// Stock rows of the flash SKU with more reserved than on hand.
    oversold_rows: i64,
    reconciliation: String,
}

/// An order acknowledged with 201: the units it allocated.
struct Placed {
    units: i64,
}

/// Line `j` of throughput cart `n`: `(n * 37 + j * (POOL_SKUS / 5 + 1)) % POOL_SKUS`. Its first
/// warehouse (`sku % 5`) is `(2n + j) % 5`, so the 5 lines start in 5 different warehouses.
fn cart_line_sku(j: usize) -> String {
    format!("(g.n * 37 + {}) % {POOL_SKUS}", j * (POOL_SKUS / 5 + 1))
}

fn flash_sku() -> String {
    format!("{PREFIX}{POOL_SKUS}")
}

/// The pool's stock rows: SKU `s` in warehouse `s % 5`, and even SKUs also in the next one.
pub(crate) fn pool_rows() -> Vec<(String, usize, i64)> {
    let mut rows = Vec::new();
    for s in 0..POOL_SKUS {
        rows.push((format!("{PREFIX}{s}"), s % WAREHOUSES, POOL_STOCK));
        if s % 2 == 0 {
            rows.push((format!("{PREFIX}{s}"), (s + 1) % WAREHOUSES, POOL_STOCK));
        }
    }
    rows
}

/// The flash SKU's units over warehouses 1, 3 and 5 (40%, 35%, the rest).
fn flash_rows(units: i64) -> Vec<(String, usize, i64)> {
    let first = units * 40 / 100;
    let second = units * 35 / 100;
    vec![(flash_sku(), 0, first), (flash_sku(), 2, second), (flash_sku(), 4, units - first - second)]
}

/// Writes open carts as the cart routes would (`cart_create`, then `cart_set_line` per line):
/// `carts` throughput carts `cart_a{n}` of 5 lines and `buyers` flash carts `cart_f{n}` of one
/// unit of the flash SKU, each with its own customer.
pub(crate) async fn seed_carts(db: &store::Db, carts: usize, buyers: usize) -> anyhow::Result<()> {
    let backend = db.backend();
    let now = SystemClock.now();
    let mut tx = db.begin().await?;
    for (prefix, customer, n) in [("cart_a", "c", carts), ("cart_f", "f", buyers)] {
        let from = series(backend, n);
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO carts (id, channel, customer, currency, status, version, order_id, created_at, updated_at, \
             updated_at_ms) SELECT '{prefix}' || CAST(g.n AS TEXT), '{CHANNEL}', '{customer}' || CAST(g.n AS TEXT), \
             'EUR', 'open', {lines}, NULL, $1, $1, $2 FROM {from}",
            lines = if prefix == "cart_a" { LINES_PER_CART } else { 1 },
        )))
        .bind(now.to_rfc3339())
        .bind(now.millis())
        .execute(&mut *tx)
        .await
        .context("seeding carts")?;
    }
    let from = series(backend, carts);
    for j in 0..LINES_PER_CART {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO cart_lines (cart_id, sku, quantity, position) SELECT 'cart_a' || CAST(g.n AS TEXT), \
             '{PREFIX}' || CAST({sku} AS TEXT), 1 + (g.n + {j}) % 3, {position} FROM {from}",
            sku = cart_line_sku(j),
            position = j + 1,
        )))
        .execute(&mut *tx)
        .await
        .context("seeding cart lines")?;
    }
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO cart_lines (cart_id, sku, quantity, position) SELECT 'cart_f' || CAST(g.n AS TEXT), '{}', 1, 1 \
         FROM {}",
        flash_sku(),
        series(backend, buyers)
    )))
    .execute(&mut *tx)
    .await
    .context("seeding flash-sale cart lines")?;
    tx.commit().await?;
    let settle = match backend {
        Backend::Postgres => "ANALYZE",
        // Checkpoint the carts' large WAL now rather than in the middle of the measurement.
        Backend::Sqlite => "PRAGMA wal_checkpoint(TRUNCATE)",
    };
    sqlx::query(settle).execute(db.reader()).await?;
    Ok(())
}

async fn one_run(args: &OrdersArgs, backend: Backend, variant: Variant) -> anyhow::Result<Report> {
    let database = BenchDatabase::create(backend, args.postgres_url.as_deref()).await?;
    let (carts, buyers, units) = (args.carts(), args.flash_buyers(), args.flash_units());
    {
        let db = store::Db::connect_and_migrate(&database.url, &store::DbOptions::default()).await?;
        let mut rows = pool_rows();
        rows.extend(flash_rows(units));
        let plan = SeedPlan { warehouses: WAREHOUSES, rows, ..SeedPlan::default() };
        crate::seed::seed(&db, &plan, SystemClock.now()).await?;
        crate::availability::seed_catalog(&db, CHANNEL, WAREHOUSES, PREFIX, POOL_SKUS + 1).await?;
        seed_carts(&db, carts, buyers).await?;
        db.close().await;
    }
    let config = ::stockroom::ServeConfig {
        listen: "127.0.0.1:0".into(),
        database_url: database.url.clone(),
        admin_key: Some(crate::systems::stockroom::ADMIN_KEY.into()),
        sweep_interval: Duration::from_secs(1),
        // SQLite FULL: the default of `stockroom serve`.
        db: store::DbOptions::default(),
        group_commit: variant.group_commit(),
        catalog: ::stockroom::CatalogConfig::default(),
        orders: ::stockroom::OrderConfig::default(),
        events: events::EventsSettings::default(),
    };
    let running = ::stockroom::start(config, Arc::new(SystemClock), crate::probe::handle()).await?;
    let api = Api::new(&running, FLASH_IN_FLIGHT.max(args.clients))?;
    api.post(
        "/v1/promotions",
        json!({"code": PROMOTION, "channel": CHANNEL, "kind": "percentage", "value": "10", "target": "order",
               "usage_limit": 1_000_000_000}),
        201,
    )
    .await
    .context("creating the promotion")?;
    let sample = api.get("/v1/carts/cart_a0").await?;
    anyhow::ensure!(
        sample["lines"].as_array().map(Vec::len) == Some(LINES_PER_CART),
        "a written cart reads back wrong: {sample}"
    );

    let next_cart = Arc::new(AtomicUsize::new(0));
    let ran_out = Arc::new(AtomicBool::new(false));
    let mut placed: Vec<Placed> = Vec::new();
    let mut throughput = Recorder::new();
    let (mut window, mut per_commit) = (Duration::ZERO, 0.0);
    for (phase, length) in [("warm-up", args.warm_up()), ("measure", args.duration())] {
        let (batches_before, requests_before) = crate::probe::batch_totals();
        let stop = Instant::now() + length;
        let started = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..args.clients {
            let (api, next_cart, ran_out) = (api.clone(), next_cart.clone(), ran_out.clone());
            tasks.push(tokio::spawn(async move {
                let mut recorder = Recorder::new();
                let mut placed = Vec::new();
                while Instant::now() < stop {
                    let n = next_cart.fetch_add(1, Ordering::Relaxed);
                    if n >= carts {
                        ran_out.store(true, Ordering::Relaxed);
                        break;
                    }
                    let body = json!({"shipping_address": {"country": "DE"}, "promotion_codes": [PROMOTION]});
                    let sent = Instant::now();
                    let (outcome, order) = api.checkout(&format!("cart_a{n}"), &body).await;
                    recorder.record(&outcome, sent.elapsed());
                    placed.extend(order);
                }
                (recorder, placed)
            }));
        }
        let mut phase_recorder = Recorder::new();
        for task in tasks {
            let (r, p) = task.await?;
            phase_recorder.merge(&r);
            placed.extend(p);
        }
        if phase == "measure" {
            window = started.elapsed();
            throughput = phase_recorder;
            let (batches, requests) = crate::probe::batch_totals();
            per_commit = (requests - requests_before) / (batches - batches_before).max(1.0);
        }
    }
    let checks = check_throughput(&api, &running.db, &placed).await?;
    let flash = flash_sale(&api, &running.db, buyers, units).await?;
    running.stop().await?;
    database.drop_database().await;
    Ok(Report {
        checkouts_per_s: throughput.ok as f64 / window.as_secs_f64().max(1e-9),
        throughput,
        checkouts_per_commit: per_commit,
        carts_ran_out: ran_out.load(Ordering::Relaxed),
        checks,
        flash,
    })
}

async fn scalar(db: &store::Db, sql: &str) -> anyhow::Result<i64> {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(db.reader())
        .await
        .with_context(|| format!("checking with {sql}"))
}

async fn check_throughput(api: &Api, db: &store::Db, placed: &[Placed]) -> anyhow::Result<Checks> {
    let flash = flash_sku();
    let orders_in_database = scalar(db, "SELECT CAST(COUNT(*) AS BIGINT) FROM orders").await?;
    // Both directions: every allocation against its reservation's lines, and every line of a
    // reservation an order uses against the allocation; then every order line against its
    // allocation.
    let allocation_mismatches = scalar(
        db,
        "SELECT CAST(COUNT(*) AS BIGINT) FROM \
         (SELECT reservation_id, sku, warehouse, SUM(quantity) AS q FROM order_allocations \
          GROUP BY reservation_id, sku, warehouse) a \
         LEFT JOIN (SELECT l.reservation_id, l.sku, l.warehouse, SUM(l.quantity) AS q FROM reservation_lines l \
          JOIN reservations r ON r.id = l.reservation_id AND r.status = 'active' \
          GROUP BY l.reservation_id, l.sku, l.warehouse) h \
         ON h.reservation_id = a.reservation_id AND h.sku = a.sku AND h.warehouse = a.warehouse \
         WHERE h.q IS NULL OR h.q <> a.q",
    )
    .await?
        + scalar(
            db,
            "SELECT CAST(COUNT(*) AS BIGINT) FROM \
             (SELECT reservation_id, sku, warehouse, SUM(quantity) AS q FROM reservation_lines \
              WHERE reservation_id IN (SELECT reservation_id FROM order_allocations) \
              GROUP BY reservation_id, sku, warehouse) h \
             LEFT JOIN (SELECT reservation_id, sku, warehouse, SUM(quantity) AS q FROM order_allocations \
              GROUP BY reservation_id, sku, warehouse) a \
             ON h.reservation_id = a.reservation_id AND h.sku = a.sku AND h.warehouse = a.warehouse \
             WHERE a.q IS NULL OR h.q <> a.q",
        )
        .await?
        + scalar(
            db,
            "SELECT CAST(COUNT(*) AS BIGINT) FROM order_lines o \
             LEFT JOIN (SELECT order_id, sku, SUM(quantity) AS q FROM order_allocations GROUP BY order_id, sku) a \
             ON a.order_id = o.order_id AND a.sku = o.sku \
             WHERE COALESCE(a.q, 0) <> o.quantity - o.backordered - o.cancelled",
        )
        .await?;
    let held_units = scalar(
        db,
        &format!("SELECT CAST(COALESCE(SUM(reserved), 0) AS BIGINT) FROM stock_levels WHERE sku <> '{flash}'"),
    )
    .await?;
    let promotion = api.get(&format!("/v1/promotions/{PROMOTION}")).await?;
    Ok(Checks {
        orders_acknowledged: placed.len(),
        orders_in_database,
        allocation_mismatches,
        held_units,
        acknowledged_units: placed.iter().map(|p| p.units).sum(),
        promotion_uses: promotion["uses_taken"].as_i64().context("uses_taken of the promotion")?,
        reconciliation: api.reconciliation().await?,
    })
}

async fn flash_sale(api: &Api, db: &store::Db, buyers: usize, units: i64) -> anyhow::Result<Flash> {
    // Open the connections first (in waves, so the listen backlog holds them), so that the
    // release measures checkouts, not connects.
    for _ in 0..FLASH_IN_FLIGHT.div_ceil(250) {
        let waves = (0..250).map(|_| api.get("/health"));
        for answer in futures::future::join_all(waves).await {
            answer.context("opening connections before the flash sale")?;
        }
    }
    // The gate: no permits until the release, then `FLASH_IN_FLIGHT` of them.
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let mut tasks = Vec::with_capacity(buyers);
    for n in 0..buyers {
        let (api, gate) = (api.clone(), gate.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire().await.expect("the gate stays open");
            let body = json!({"shipping_address": {"country": "DE"}});
            let sent = Instant::now();
            let (outcome, placed) = api.checkout(&format!("cart_f{n}"), &body).await;
            (outcome, sent.elapsed(), placed, Instant::now())
        }));
    }
    // Let every task reach the gate.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let released = Instant::now();
    gate.add_permits(FLASH_IN_FLIGHT);
    let mut recorder = Recorder::new();
    let mut last = released;
    let mut acknowledged = 0;
    for task in tasks {
        let (outcome, latency, placed, answered) = task.await?;
        recorder.record(&outcome, latency);
        acknowledged += placed.map(|p| p.units).unwrap_or(0);
        last = last.max(answered);
    }
    let release_to_last = last - released;
    let flash = flash_sku();
    let units_sold = scalar(
        db,
        &format!("SELECT CAST(COALESCE(SUM(reserved), 0) AS BIGINT) FROM stock_levels WHERE sku = '{flash}'"),
    )
    .await?;
    let oversold_rows = scalar(
        db,
        &format!("SELECT CAST(COUNT(*) AS BIGINT) FROM stock_levels WHERE sku = '{flash}' AND reserved > on_hand"),
    )
    .await?;
    Ok(Flash {
        buyers,
        units,
        release_to_last,
        recorder,
        units_sold,
        acknowledged_units: acknowledged,
        oversold_rows,
        reconciliation: api.reconciliation().await?,
    })
}

/// The server's HTTP API over loopback, with the admin key.
#[derive(Clone)]
pub(crate) struct Api {
    client: reqwest::Client,
    base: String,
    authorization: String,
}

impl Api {
    pub(crate) fn new(running: &::stockroom::Running, connections: usize) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(connections)
            .tcp_nodelay(true)
            .timeout(Duration::from_secs(60))
            .build()?;
        Ok(Self {
            client,
            base: format!("http://{}", running.addr),
            authorization: format!("Bearer {}", crate::systems::stockroom::ADMIN_KEY),
        })
    }

    pub(crate) async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .header(reqwest::header::AUTHORIZATION, &self.authorization)
            .send()
            .await?;
        let status = response.status();
        let body = response.bytes().await?;
        anyhow::ensure!(status == 200, "GET {path}: HTTP {status}: {}", String::from_utf8_lossy(&body));
        Ok(serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    pub(crate) async fn post(&self, path: &str, body: Value, expected: u16) -> anyhow::Result<Value> {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .header(reqwest::header::AUTHORIZATION, &self.authorization)
            .json(&body)
            .send()
            .await?;
        let status = response.status();
        let body: Value = response.json().await?;
        anyhow::ensure!(status.as_u16() == expected, "POST {path}: HTTP {status}: {body}");
        Ok(body)
    }

    /// POSTs (with `Idempotency-Key: key` when given) and answers the status and body, whatever
    /// the status.
    pub(crate) async fn post_any(&self, path: &str, body: &Value, key: Option<&str>) -> anyhow::Result<(u16, Value)> {
        let mut request = self
            .client
            .post(format!("{}{path}", self.base))
            .header(reqwest::header::AUTHORIZATION, &self.authorization);
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        let response = request.json(body).send().await?;
        let status = response.status().as_u16();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }

    /// "clean (N checked)" or the mismatches.
    pub(crate) async fn reconciliation(&self) -> anyhow::Result<String> {
        let report = self.get("/v1/reconciliation").await?;
        let mismatches = report["mismatches"].as_array().map(Vec::len).unwrap_or(usize::MAX);
        Ok(if mismatches == 0 {
            format!("clean ({} checked)", report["checked"])
        } else {
            format!("{mismatches} mismatches: {}", report["mismatches"])
        })
    }

    /// Checks the cart out with a fresh `Idempotency-Key`; a 201 also yields the order.
    async fn checkout(&self, cart: &str, body: &Value) -> (Outcome, Option<Placed>) {
        let sent = self
            .client
            .post(format!("{}/v1/carts/{cart}/checkout", self.base))
            .header(reqwest::header::AUTHORIZATION, &self.authorization)
            .header("Idempotency-Key", format!("bench-{}", uuid::Uuid::new_v4().simple()))
            .json(body)
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(e) if e.is_timeout() => return (Outcome::Error(ErrorKind::Timeout, e.to_string()), None),
            Err(e) => return (Outcome::other(e), None),
        };
        let status = response.status().as_u16();
        let body = match response.bytes().await {
            Ok(body) => body,
            Err(e) => return (Outcome::other(e), None),
        };
        let text = || String::from_utf8_lossy(&body).into_owned();
        match status {
            201 => match serde_json::from_slice::<Value>(&body) {
                Ok(order) => {
                    let units = order["lines"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .flat_map(|l| l["allocated"].as_array().into_iter().flatten())
                        .filter_map(|a| a["quantity"].as_i64())
                        .sum();
                    (Outcome::Ok, Some(Placed { units }))
                }
                Err(e) => (Outcome::other(format!("unreadable order: {e}")), None),
            },
            409 if body.windows(18).any(|w| w == b"insufficient_stock") => (Outcome::Refused, None),
            503 => (Outcome::Error(ErrorKind::Overloaded, format!("HTTP 503: {}", text())), None),
            s => (Outcome::other(format!("HTTP {s}: {}", text())), None),
        }
    }
}
