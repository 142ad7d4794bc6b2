//! `stockroom-bench fulfillment`: fulfilments from pick to ship over HTTP against the real
//! server, batched (pick lists of up to `batch` fulfilments) and one walk per fulfilment (pick
//! lists of 1, the baseline), side by side on the same data in one run.
//!
//! Each run checks out and pays `orders` carts of 5 lines that split over 5 warehouses (not
//! timed), so every order asks for up to 5 fulfilments (one per warehouse its lines are held in). Then one client per warehouse drains its
//! pending fulfilments: `POST /v1/picklists`, `POST /v1/picklists/{id}/complete` with every
//! stop found, and per fulfilment `GET /v1/fulfillments/{id}`, `POST .../pack` at the expected
//! weight and `POST .../ship`. The figure is fulfilments shipped per second of the drain.
//! Afterwards every fulfilment must be shipped and the reconciliation clean. Stock sits in bins
//! on a 20-aisle floor, so the walk each list plans (and its fulfilment-order baseline) is real.

use crate::database::BenchDatabase;
use crate::orders::{Api, CHANNEL, POOL_SKUS, PREFIX, WAREHOUSES};
use crate::seed::SeedPlan;
use anyhow::Context;
use clap::Args;
use kernel::{Clock, SystemClock};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use store::Backend;

/// Clients checking out and paying before a drain.
const SETUP_CLIENTS: usize = 16;

#[derive(Debug, Clone, Args)]
pub struct FulfilmentArgs {
    /// Fewer orders (for CI).
    #[arg(long)]
    pub quick: bool,
    /// Orders per run (default 400; quick 60), up to 5 fulfilments each.
    #[arg(long)]
    pub orders: Option<usize>,
    /// Fulfilments per pick list of the batched run.
    #[arg(long, default_value_t = 20)]
    pub batch: i64,
    /// Admin URL of a PostgreSQL server: the same runs on PostgreSQL too.
    #[arg(long, env = "STOCKROOM_BENCH_POSTGRES_URL")]
    pub postgres_url: Option<String>,
}

impl FulfilmentArgs {
    fn orders(&self) -> usize {
        self.orders.unwrap_or(if self.quick { 60 } else { 400 }).max(1)
    }
}

struct Report {
    batch: i64,
    shipped: usize,
    seconds: f64,
    requests: usize,
    route_m: f64,
    naive_m: f64,
    left_unshipped: i64,
    reconciliation: String,
}

pub fn run(args: &FulfilmentArgs) -> anyhow::Result<()> {
    crate::probe::install();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        println!("{}", crate::env::header(args.postgres_url.as_deref(), args.quick).await?.line());
        println!(
            "fulfillment: {} paid orders per run, up to 5 fulfilments each over {WAREHOUSES} warehouses; one client per \
             warehouse drains pick list → complete → per fulfilment read, pack, ship; batched lists of {} against \
             lists of 1",
            args.orders(),
            args.batch
        );
        let mut backends = vec![Backend::Sqlite];
        if args.postgres_url.is_some() {
            backends.push(Backend::Postgres);
        } else {
            println!("note: no --postgres-url (or STOCKROOM_BENCH_POSTGRES_URL): PostgreSQL runs skipped");
        }
        let mut reports = Vec::new();
        for backend in backends {
            for batch in [args.batch.clamp(1, 50), 1] {
                let report = one_run(args, backend, batch).await.with_context(|| {
                    format!("the run of pick lists of {batch} on {}", crate::availability::label(backend))
                })?;
                reports.push((backend, report));
            }
        }
        println!();
        println!(
            "| backend | pick lists of | fulfilments shipped | fulfilments/s | requests per fulfilment | walked m per \
             fulfilment (naive) | left unshipped | reconciliation |"
        );
        println!("|---|---|---|---|---|---|---|---|");
        for (backend, r) in &reports {
            println!(
                "| {} | {} | {} | {:.0} | {:.2} | {:.1} ({:.1}) | {} | {} |",
                crate::availability::label(*backend),
                r.batch,
                r.shipped,
                r.shipped as f64 / r.seconds.max(1e-9),
                r.requests as f64 / r.shipped.max(1) as f64,
                r.route_m / r.shipped.max(1) as f64,
                r.naive_m / r.shipped.max(1) as f64,
                r.left_unshipped,
                r.reconciliation
            );
        }
        println!();
        for backend in [Backend::Sqlite, Backend::Postgres] {
            let rate = |batched: bool| {
                reports
                    .iter()
                    .find(|(b, r)| *b == backend && (r.batch > 1) == batched)
                    .map(|(_, r)| r.shipped as f64 / r.seconds.max(1e-9))
            };
            if let (Some(batched), Some(single)) = (rate(true), rate(false)) {
                println!(
                    "ratio batched/single, {}: {:.2}x fulfilments/s",
                    crate::availability::label(backend),
                    batched / single.max(1e-9)
                );
            }
        }
        Ok(())
    })
}

async fn one_run(args: &FulfilmentArgs, backend: Backend, batch: i64) -> anyhow::Result<Report> {
    let database = BenchDatabase::create(backend, args.postgres_url.as_deref()).await?;
    let orders = args.orders();
    {
        let db = store::Db::connect_and_migrate(&database.url, &store::DbOptions::default()).await?;
        let plan = SeedPlan { warehouses: WAREHOUSES, rows: crate::orders::pool_rows(), ..SeedPlan::default() };
        crate::seed::seed(&db, &plan, SystemClock.now()).await?;
        crate::availability::seed_catalog(&db, CHANNEL, WAREHOUSES, PREFIX, POOL_SKUS).await?;
        crate::orders::seed_carts(&db, orders, 0).await?;
        seed_bins(&db).await?;
        db.close().await;
    }
    let config = ::stockroom::ServeConfig {
        listen: "127.0.0.1:0".into(),
        database_url: database.url.clone(),
        admin_key: Some(crate::systems::stockroom::ADMIN_KEY.into()),
        sweep_interval: Duration::from_secs(1),
        db: store::DbOptions::default(),
        group_commit: Default::default(),
        catalog: ::stockroom::CatalogConfig::default(),
        orders: ::stockroom::OrderConfig::default(),
        events: events::EventsSettings::default(),
    };
    let running = ::stockroom::start(config, Arc::new(SystemClock), crate::probe::handle()).await?;
    let api = Api::new(&running, SETUP_CLIENTS.max(WAREHOUSES))?;
    place_and_pay(&api, orders).await?;
    let requested =
        scalar(&running.db, "SELECT CAST(COUNT(*) AS BIGINT) FROM order_fulfillments WHERE status = 'requested'")
            .await?;
    let expected = wait_for_pending(&running.db, requested).await?;

    let started = Instant::now();
    let mut drains = Vec::new();
    for w in 0..WAREHOUSES {
        let api = api.clone();
        let warehouse = crate::seed::warehouse_code(w);
        drains.push(tokio::spawn(async move { drain(&api, &warehouse, batch).await }));
    }
    let (mut shipped, mut requests, mut route_m, mut naive_m) = (0, 0, 0.0, 0.0);
    for drain in drains {
        let d = drain.await??;
        shipped += d.shipped;
        requests += d.requests;
        route_m += d.route_m;
        naive_m += d.naive_m;
    }
    let seconds = started.elapsed().as_secs_f64();
    let left_unshipped =
        scalar(&running.db, "SELECT CAST(COUNT(*) AS BIGINT) FROM fulfillments WHERE status <> 'shipped'").await?;
    anyhow::ensure!(shipped as i64 == expected, "shipped {shipped} of {expected} fulfilments");
    let reconciliation = api.reconciliation().await?;
    running.stop().await?;
    database.drop_database().await;
    Ok(Report { batch, shipped, seconds, requests, route_m, naive_m, left_unshipped, reconciliation })
}

/// Every warehouse gets a bin per pool SKU on a floor of 20 aisles 3 m apart with 50 bins 1 m
/// apart along each (SKU `s` in aisle `s % 20`, position `(s / 20) % 50`; the dock at the origin,
/// the default), and each stock row is put in its SKU's bin, so pick lists walk real distances.
async fn seed_bins(db: &store::Db) -> anyhow::Result<()> {
    let now = SystemClock.now().to_rfc3339();
    let mut tx = db.begin().await?;
    for w in 0..WAREHOUSES {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO bins (warehouse, code, zone, x, y, capacity_units, created_at) \
             SELECT '{warehouse}', 'B' || CAST(g.n AS TEXT), NULL, (g.n % 20) * 3.0, ((g.n / 20) % 50) * 1.0 + 2.0, \
             NULL, $1 FROM {from}",
            warehouse = crate::seed::warehouse_code(w),
            from = crate::seed::series(db.backend(), POOL_SKUS),
        )))
        .bind(now.clone())
        .execute(&mut *tx)
        .await
        .context("seeding bins")?;
    }
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO bin_stock (warehouse, bin, sku, on_hand) \
         SELECT warehouse, 'B' || substr(sku, {start}), sku, on_hand FROM stock_levels WHERE sku LIKE '{PREFIX}%'",
        start = PREFIX.len() + 1
    )))
    .execute(&mut *tx)
    .await
    .context("putting the stock in its bins")?;
    tx.commit().await?;
    Ok(())
}

async fn scalar(db: &store::Db, sql: &'static str) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar::<_, i64>(sql).fetch_one(db.reader()).await?)
}

/// Checks out and pays carts `cart_a0..orders`, `SETUP_CLIENTS` at a time.
async fn place_and_pay(api: &Api, orders: usize) -> anyhow::Result<()> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..SETUP_CLIENTS {
        let (api, next) = (api.clone(), next.clone());
        clients.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n >= orders {
                    return anyhow::Ok(());
                }
                let (status, order) = api
                    .post_any(
                        &format!("/v1/carts/cart_a{n}/checkout"),
                        &json!({"shipping_address": {"country": "DE"}}),
                        Some(&format!("place-{n}")),
                    )
                    .await?;
                anyhow::ensure!(status == 201, "checkout of cart_a{n}: HTTP {status}: {order}");
                let id = order["id"].as_str().context("an order id")?;
                let payment = json!({"provider": "bench", "reference": format!("pay-{n}"),
                                     "amount": order["totals"]["total"], "status": "captured"});
                api.post(&format!("/v1/orders/{id}/payments"), payment, 200).await?;
            }
        }));
    }
    for client in clients {
        client.await??;
    }
    Ok(())
}

/// Waits (up to a minute) until the intake has taken `expected` pending fulfilments.
async fn wait_for_pending(db: &store::Db, expected: i64) -> anyhow::Result<i64> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let pending = scalar(db, "SELECT CAST(COUNT(*) AS BIGINT) FROM fulfillments WHERE status = 'pending'").await?;
        if pending >= expected {
            return Ok(pending);
        }
        anyhow::ensure!(Instant::now() < deadline, "the intake took {pending} of {expected} fulfilments");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[derive(Default)]
struct Drained {
    shipped: usize,
    requests: usize,
    route_m: f64,
    naive_m: f64,
}

/// Picks, packs and ships every pending fulfilment of `warehouse`, `batch` per pick list.
async fn drain(api: &Api, warehouse: &str, batch: i64) -> anyhow::Result<Drained> {
    let mut d = Drained::default();
    loop {
        let (status, list) =
            api.post_any("/v1/picklists", &json!({"warehouse": warehouse, "max_fulfillments": batch}), None).await?;
        d.requests += 1;
        if status == 409 {
            return Ok(d);
        }
        anyhow::ensure!(status == 201, "pick list of {warehouse}: HTTP {status}: {list}");
        d.route_m += list["route_length_m"].as_f64().unwrap_or(0.0);
        d.naive_m += list["naive_route_length_m"].as_f64().unwrap_or(0.0);
        let picked: Vec<Value> = list["stops"]
            .as_array()
            .context("stops")?
            .iter()
            .map(|s| json!({"bin": s["bin"], "sku": s["sku"], "quantity": s["quantity"], "lot": s["lot"]}))
            .collect();
        let id = list["id"].as_str().context("a pick list id")?;
        let done = api.post(&format!("/v1/picklists/{id}/complete"), json!({"picked": picked}), 200).await?;
        d.requests += 1;
        anyhow::ensure!(done["short"] == json!([]), "short picks: {done}");
        for fulfilment in list["fulfillments"].as_array().context("fulfillments")? {
            let fulfilment = fulfilment.as_str().context("an id")?;
            let now = api.get(&format!("/v1/fulfillments/{fulfilment}")).await?;
            let package = json!({"weight_grams": now["expected_weight_grams"].as_i64().unwrap_or(0).max(1), "lines": now["lines"]});
            api.post(&format!("/v1/fulfillments/{fulfilment}/pack"), json!({"packages": [package]}), 200).await?;
            api.post(
                &format!("/v1/fulfillments/{fulfilment}/ship"),
                json!({"carrier": "bench", "tracking": fulfilment}),
                200,
            )
            .await?;
            d.requests += 3;
            d.shipped += 1;
        }
    }
}
