//! `stockroom-bench availability`: the catalog's availability view over HTTP, with its cache
//! and without it (every read straight to the database, the baseline), side by side on the
//! same data in one run; then how fast a change shows (ack → visible), and cached 20-SKU
//! batches through the Rust API.
//!
//! The cached run first reads every SKU once (a long-running server's cache: under this
//! traffic every SKU is read more often than its TTL); the hit ratio counts the measured
//! window only.
//!
//! Load: `clients` closed-loop clients; each request reads one SKU drawn from Zipf(1.1) over
//! `skus` SKUs, and `write_fraction` of them instead adjust a SKU (+1 unit) in one warehouse.
//! Every read is checked: one that shows less than a write acknowledged more than `bound`
//! before the read started is counted as stale (writes only add, so the figure only grows).

use crate::database::BenchDatabase;
use crate::rng::{Rng, Zipf};
use crate::seed::{Catalogue, SeedPlan, series};
use crate::stats::{Outcome, Recorder};
use anyhow::Context;
use clap::Args;
use kernel::{Clock, SystemClock};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use store::Backend;

const STOCK: i64 = 1_000_000;
const WAREHOUSES: usize = 2;
const CHANNEL: &str = "web";
const PREFIX: &str = "AV-";

#[derive(Debug, Clone, Args)]
pub struct AvailabilityArgs {
    /// Fewer SKUs and shorter runs (for CI).
    #[arg(long)]
    pub quick: bool,
    /// SKUs in the catalogue (default 100,000; quick 10,000).
    #[arg(long)]
    pub skus: Option<usize>,
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// Seconds of each measurement (default 10; quick 2).
    #[arg(long)]
    pub duration_s: Option<f64>,
    /// Share of requests that change stock.
    #[arg(long, default_value_t = 0.01)]
    pub write_fraction: f64,
    #[arg(long, default_value_t = 1.1)]
    pub zipf_exponent: f64,
    /// A read older than this behind an acknowledged write counts as stale, ms.
    #[arg(long, default_value_t = 100)]
    pub bound_ms: u64,
    /// `false`: skip the run without the cache (to profile the cached one).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub baseline: bool,
    /// `false`: skip freshness, in-process batches and search.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub extras: bool,
    /// Admin URL of a PostgreSQL server: the same runs on PostgreSQL too.
    #[arg(long, env = "STOCKROOM_BENCH_POSTGRES_URL")]
    pub postgres_url: Option<String>,
}

impl AvailabilityArgs {
    fn skus(&self) -> usize {
        self.skus.unwrap_or(if self.quick { 10_000 } else { 100_000 }).max(1)
    }

    fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.duration_s.unwrap_or(if self.quick { 2.0 } else { 10.0 }).max(0.1))
    }
}

pub fn run(args: &AvailabilityArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        println!("{}", crate::env::header(args.postgres_url.as_deref(), args.quick).await?.line());
        println!(
            "availability: {} SKUs, Zipf({}), {} clients, {:.1} s per run, {:.1}% writes, stale bound {} ms",
            args.skus(),
            args.zipf_exponent,
            args.clients,
            args.duration().as_secs_f64(),
            args.write_fraction * 100.0,
            args.bound_ms
        );
        println!();
        println!("| backend | view | reads/s | p50 ms | p99 ms | hit ratio | stale reads | writes | errors |");
        println!("|---|---|---|---|---|---|---|---|---|");
        let mut backends = vec![Backend::Sqlite];
        if args.postgres_url.is_some() {
            backends.push(Backend::Postgres);
        }
        let mut freshness = Vec::new();
        let mut in_process = Vec::new();
        let mut searches = Vec::new();
        let mut ceilings = Vec::new();
        for backend in backends {
            for cache in [true, false] {
                if !cache && !args.baseline {
                    continue;
                }
                let report = one_run(args, backend, cache).await?;
                println!(
                    "| {} | {} | {:.0} | {:.2} | {:.2} | {} | {} | {} | {} |",
                    label(backend),
                    if cache { "cached" } else { "database (baseline)" },
                    report.reads_per_s,
                    report.reads.latency().p50_ms,
                    report.reads.latency().p99_ms,
                    report.hit_ratio.map(|h| format!("{:.2}%", h * 100.0)).unwrap_or_else(|| "-".into()),
                    report.stale_reads,
                    report.writes,
                    report.reads.errors.total() + report.write_errors,
                );
                if let Some(e) = &report.reads.error_sample {
                    println!("|  | first error: {e} | | | | | | | |");
                }
                if cache {
                    freshness.push((backend, report.freshness));
                    in_process.push((backend, report.in_process));
                    searches.push((backend, report.search));
                    ceilings.extend(report.http_ceiling.map(|c| (backend, c)));
                }
            }
        }
        println!();
        println!("| backend | change → view, p50 ms | p99 ms | max ms | samples |");
        println!("|---|---|---|---|---|");
        for (backend, f) in &freshness {
            let l = f.latency();
            println!("| {} | {:.2} | {:.2} | {:.2} | {} |", label(*backend), l.p50_ms, l.p99_ms, l.max_ms, f.ok);
        }
        println!();
        println!("| backend | cached 20-SKU batch in process, p50 ms | p99 ms | p99.9 ms | batches/s (1 task) |");
        println!("|---|---|---|---|---|");
        for (backend, (r, rate)) in &in_process {
            let l = r.latency();
            println!("| {} | {:.3} | {:.3} | {:.3} | {:.0} |", label(*backend), l.p50_ms, l.p99_ms, l.p999_ms, rate);
        }
        println!();
        println!(
            "| backend | HTTP ceiling: GET /health, {} clients | requests/s | p50 ms | p99 ms | errors |",
            args.clients
        );
        println!("|---|---|---|---|---|---|");
        for (backend, (r, rate)) in &ceilings {
            let l = r.latency();
            println!(
                "| {} | same load generator, no key, no database | {rate:.0} | {:.2} | {:.2} | {} |",
                label(*backend),
                l.p50_ms,
                l.p99_ms,
                r.errors.total()
            );
        }
        println!();
        println!(
            "| backend | search over {} products, 8 clients | queries/s | p50 ms | p99 ms | errors |",
            args.skus()
        );
        println!("|---|---|---|---|---|---|");
        for (backend, kinds) in &searches {
            for (name, r, rate) in kinds {
                let l = r.latency();
                println!(
                    "| {} | {name} | {rate:.0} | {:.2} | {:.2} | {} |",
                    label(*backend),
                    l.p50_ms,
                    l.p99_ms,
                    r.errors.total()
                );
            }
        }
        Ok(())
    })
}

pub(crate) fn label(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "sqlite-full",
        Backend::Postgres => "postgres",
    }
}

struct Report {
    reads: Recorder,
    reads_per_s: f64,
    writes: u64,
    write_errors: u64,
    stale_reads: u64,
    hit_ratio: Option<f64>,
    freshness: Recorder,
    in_process: (Recorder, f64),
    /// Per query kind: its name and what it measured.
    search: Vec<(&'static str, Recorder, f64)>,
    /// `GET /health` under the same clients, and its rate.
    http_ceiling: Option<(Recorder, f64)>,
}

/// Seeds the catalog tables beside the warehouse's: one product per SKU `{prefix}{n}`, priced
/// in `channel` (priority sourcing) over the first `warehouses` warehouses.
pub(crate) async fn seed_catalog(
    db: &store::Db,
    channel: &str,
    warehouses: usize,
    prefix: &str,
    skus: usize,
) -> anyhow::Result<()> {
    let at = SystemClock.now().to_rfc3339();
    let backend = db.backend();
    let mut tx = db.begin().await?;
    sqlx::query(
        "INSERT INTO channels (code, name, currency, country, sourcing, split_penalty_minor, cart_hold_ttl_seconds, \
         checkout_hold_ttl_seconds, created_at, updated_at) VALUES ($1, 'Web', 'EUR', 'DE', 'priority', 0, 0, 900, $2, $2)",
    )
    .bind(channel.to_owned())
    .bind(at.clone())
    .execute(&mut *tx)
    .await?;
    for i in 0..warehouses {
        sqlx::query("INSERT INTO channel_warehouses (channel, warehouse, position) VALUES ($1, $2, $3)")
            .bind(channel.to_owned())
            .bind(crate::seed::warehouse_code(i))
            .bind(i as i64)
            .execute(&mut *tx)
            .await?;
    }
    let from = series(backend, skus);
    for sql in [
        format!(
            "INSERT INTO products (handle, name, description, category, attributes, created_at, updated_at) \
             SELECT 'p' || CAST(g.n AS TEXT), 'Product ' || CAST(g.n AS TEXT), NULL, 'bench', '{{}}', $1, $1 FROM {from}"
        ),
        format!(
            "INSERT INTO product_variants (sku, product, position, options, backorder) \
             SELECT '{prefix}' || CAST(g.n AS TEXT), 'p' || CAST(g.n AS TEXT), 0, '{{}}', 0 FROM {from}"
        ),
        format!(
            "INSERT INTO prices (sku, channel, currency, amount_minor, compare_at_minor, updated_at) \
             SELECT '{prefix}' || CAST(g.n AS TEXT), '{channel}', 'EUR', 1000 + g.n % 5000, NULL, $1 FROM {from}"
        ),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(at.clone())
            .execute(&mut *tx)
            .await
            .context("seeding the catalog")?;
    }
    tx.commit().await?;
    Ok(())
}

/// Writes acknowledged per SKU index, in time order: (when acknowledged, the highest figure
/// any write acknowledged by then guarantees).
type Acked = Mutex<HashMap<usize, Vec<(Instant, i64)>>>;

async fn one_run(args: &AvailabilityArgs, backend: Backend, cache: bool) -> anyhow::Result<Report> {
    let database = BenchDatabase::create(backend, args.postgres_url.as_deref()).await?;
    let skus = args.skus();
    {
        let db = store::Db::connect_and_migrate(&database.url, &store::DbOptions::default()).await?;
        let plan = SeedPlan {
            warehouses: WAREHOUSES,
            catalogue: Some(Catalogue { prefix: PREFIX.into(), skus, on_hand: STOCK }),
            ..SeedPlan::default()
        };
        crate::seed::seed(&db, &plan, SystemClock.now()).await?;
        seed_catalog(&db, CHANNEL, WAREHOUSES, PREFIX, skus).await?;
        db.close().await;
    }
    let mut catalog = ::stockroom::CatalogConfig::default();
    catalog.view.cache = cache;
    let config = ::stockroom::ServeConfig {
        listen: "127.0.0.1:0".into(),
        database_url: database.url.clone(),
        admin_key: Some(crate::systems::stockroom::ADMIN_KEY.into()),
        sweep_interval: Duration::from_secs(1),
        db: store::DbOptions::default(),
        group_commit: warehouse::reservation::group_commit::GroupCommitConfig::default(),
        catalog,
        orders: ::stockroom::OrderConfig::default(),
        events: events::EventsSettings::default(),
    };
    let running = ::stockroom::start(config, Arc::new(SystemClock), crate::probe::handle()).await?;
    let base = format!("http://{}", running.addr);
    let client = reqwest::Client::builder().pool_max_idle_per_host(args.clients * 2).tcp_nodelay(true).build()?;
    let authorization = format!("Bearer {}", crate::systems::stockroom::ADMIN_KEY);
    let zipf = Arc::new(Zipf::new(skus, args.zipf_exponent));
    let acked: Arc<Acked> = Arc::new(Mutex::new(HashMap::new()));
    let stale = Arc::new(AtomicU64::new(0));
    let bound = Duration::from_millis(args.bound_ms);

    // A server that has run a while under this traffic has every SKU cached: each is read
    // more often than the stable TTL, and entries read near expiry are refreshed ahead. Prime
    // that state (every SKU once, in batches), then warm up, then measure.
    if cache {
        prime(&client, &base, &authorization, skus).await?;
    }
    let mut status_before = json!({});
    // Warm-up (not measured), then the measured window.
    let mut reads = Recorder::new();
    let (mut writes, mut write_errors) = (0u64, 0u64);
    let mut window = Duration::ZERO;
    for (phase, length) in [
        ("warm-up", Duration::from_secs_f64((args.duration().as_secs_f64() / 4.0).max(0.2))),
        ("measure", args.duration()),
    ] {
        if phase == "measure" {
            status_before = view_status(&client, &base, &authorization).await?;
        }
        // On stderr, for a profiler to attach to the window.
        eprintln!("availability: {phase} ({}, cache {cache}) for {:.1} s", label(backend), length.as_secs_f64());
        let stop = Instant::now() + length;
        let started = Instant::now();
        let mut tasks = Vec::new();
        for c in 0..args.clients {
            let (client, base, authorization, zipf, acked, stale) =
                (client.clone(), base.clone(), authorization.clone(), zipf.clone(), acked.clone(), stale.clone());
            let write_fraction = args.write_fraction;
            let seed = 7 + c as u64 + if phase == "measure" { 1_000 } else { 0 };
            tasks.push(tokio::spawn(async move {
                let mut rng = Rng::for_request(seed, 0);
                let mut recorder = Recorder::new();
                let (mut writes, mut write_errors) = (0u64, 0u64);
                while Instant::now() < stop {
                    let n = zipf.sample(&mut rng);
                    let sku = format!("{PREFIX}{n}");
                    if rng.unit() < write_fraction {
                        match adjust(&client, &base, &authorization, &sku).await {
                            Some(on_hand) => {
                                writes += 1;
                                // The other warehouse keeps STOCK; nothing is reserved.
                                // Acknowledged in time order per SKU (the clock is read under
                                // the lock); each entry keeps the highest figure so far.
                                let mut acked = acked.lock().unwrap();
                                let list = acked.entry(n).or_default();
                                let highest = list.last().map_or(i64::MIN, |(_, v)| *v).max(on_hand + STOCK);
                                list.push((Instant::now(), highest));
                            }
                            None => write_errors += 1,
                        }
                        continue;
                    }
                    let sent = Instant::now();
                    let answer = read(&client, &base, &authorization, &sku).await;
                    let latency = sent.elapsed();
                    match answer {
                        Ok(available) => {
                            recorder.record(&Outcome::Ok, latency);
                            let floor = acked.lock().unwrap().get(&n).and_then(|w| {
                                let settled = w.partition_point(|(at, _)| *at + bound <= sent);
                                settled.checked_sub(1).map(|last| w[last].1)
                            });
                            if floor.is_some_and(|f| available < f) {
                                stale.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Err(e) => recorder.record(&Outcome::other(e), latency),
                    }
                }
                (recorder, writes, write_errors)
            }));
        }
        let mut phase_reads = Recorder::new();
        let (mut phase_writes, mut phase_errors) = (0, 0);
        for task in tasks {
            let (r, w, e) = task.await?;
            phase_reads.merge(&r);
            phase_writes += w;
            phase_errors += e;
        }
        if phase == "measure" {
            window = started.elapsed();
            reads = phase_reads;
            writes = phase_writes;
            write_errors = phase_errors;
        } else {
            stale.store(0, Ordering::Relaxed);
        }
    }
    // Lookups in the measured window only.
    let status = view_status(&client, &base, &authorization).await?;
    let counted = |field: &str| status[field].as_f64().unwrap_or(0.0) - status_before[field].as_f64().unwrap_or(0.0);
    let (hits, misses) = (counted("hits"), counted("misses"));
    let hit_ratio = cache.then(|| hits / (hits + misses).max(1.0));

    let extras = cache && args.extras;
    let freshness = if extras {
        measure_freshness(&client, &base, &authorization, &zipf, args.quick).await
    } else {
        Recorder::new()
    };
    let in_process = if extras {
        measure_in_process(&running.availability, &zipf, args.duration()).await
    } else {
        (Recorder::new(), 0.0)
    };
    let search =
        if extras { measure_search(&client, &base, &authorization, skus, args.duration()).await } else { Vec::new() };
    let http_ceiling =
        if extras { Some(measure_http_ceiling(&client, &base, args.clients, args.duration()).await) } else { None };
    running.stop().await?;
    database.drop_database().await;
    Ok(Report {
        reads_per_s: reads.ok as f64 / window.as_secs_f64().max(1e-9),
        reads,
        writes,
        write_errors,
        stale_reads: stale.load(Ordering::Relaxed),
        hit_ratio,
        freshness,
        in_process,
        search,
        http_ceiling,
    })
}

/// The same clients, client library and server asking `GET /health` (no key, no database, a
/// constant answer): what HTTP alone reaches on this machine with this load generator, the
/// ceiling any route's reads/s sit under.
async fn measure_http_ceiling(
    client: &reqwest::Client,
    base: &str,
    clients: usize,
    duration: Duration,
) -> (Recorder, f64) {
    let (client, url) = (client.clone(), format!("{base}/health"));
    closed_loop(clients as u64, duration, move |_| client.get(&url)).await
}

/// `clients` tasks each sending `request` back to back for `duration` (each with its own
/// random numbers); a 200 whose body was read counts. Returns the outcomes and the rate.
async fn closed_loop<F>(clients: u64, duration: Duration, request: F) -> (Recorder, f64)
where
    F: Fn(&mut Rng) -> reqwest::RequestBuilder + Clone + Send + 'static,
{
    let stop = Instant::now() + duration;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let request = request.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng::for_request(500 + c, 0);
            let mut recorder = Recorder::new();
            while Instant::now() < stop {
                let sent = Instant::now();
                let outcome = match request(&mut rng).send().await {
                    Ok(r) if r.status() == 200 => match r.bytes().await {
                        Ok(_) => Outcome::Ok,
                        Err(e) => Outcome::other(e),
                    },
                    Ok(r) => Outcome::other(format!("HTTP {}", r.status())),
                    Err(e) => Outcome::other(e),
                };
                recorder.record(&outcome, sent.elapsed());
            }
            recorder
        }));
    }
    let mut recorder = Recorder::new();
    for task in tasks {
        if let Ok(r) = task.await {
            recorder.merge(&r);
        }
    }
    let rate = recorder.ok as f64 / started.elapsed().as_secs_f64();
    (recorder, rate)
}

/// A kind of search: its name, and the query string for a random number.
type SearchKind = (&'static str, fn(usize) -> String);

/// Search over every product (one per SKU), 8 clients back to back, per kind of query.
async fn measure_search(
    client: &reqwest::Client,
    base: &str,
    authorization: &str,
    skus: usize,
    duration: Duration,
) -> Vec<(&'static str, Recorder, f64)> {
    let kinds: [SearchKind; 4] = [
        ("two words, ranked", |n| format!("q=product+{n}")),
        ("one rare word, ranked", |n| format!("q={n}")),
        ("one word in every product, ranked", |_| "q=product&limit=20".to_owned()),
        ("in stock, by price, no words", |_| "in_stock=true&sort=price_asc&limit=20".to_owned()),
    ];
    let mut results = Vec::new();
    for (name, query) in kinds {
        let (client, base, authorization) = (client.clone(), base.to_owned(), authorization.to_owned());
        let request = move |rng: &mut Rng| {
            let url = format!("{base}/v1/search?channel={CHANNEL}&{}", query(rng.below(skus as u64) as usize));
            client.get(url).header(reqwest::header::AUTHORIZATION, &authorization)
        };
        let (recorder, rate) = closed_loop(8, duration / 2, request).await;
        results.push((name, recorder, rate));
    }
    results
}

async fn view_status(client: &reqwest::Client, base: &str, authorization: &str) -> anyhow::Result<Value> {
    Ok(client
        .get(format!("{base}/v1/availability/status"))
        .header(reqwest::header::AUTHORIZATION, authorization)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?)
}

/// Reads every SKU once, 500 to a request.
async fn prime(client: &reqwest::Client, base: &str, authorization: &str, skus: usize) -> anyhow::Result<()> {
    for start in (0..skus).step_by(500) {
        let list: Vec<String> = (start..(start + 500).min(skus)).map(|n| format!("{PREFIX}{n}")).collect();
        client
            .get(format!("{base}/v1/availability?channel={CHANNEL}&skus={}", list.join(",")))
            .header(reqwest::header::AUTHORIZATION, authorization)
            .send()
            .await?
            .error_for_status()
            .context("priming the cache")?;
    }
    Ok(())
}

async fn adjust(client: &reqwest::Client, base: &str, authorization: &str, sku: &str) -> Option<i64> {
    let body = json!({"warehouse": crate::seed::warehouse_code(0), "sku": sku, "delta": 1, "reason": "bench"});
    let response = client
        .post(format!("{base}/v1/adjustments"))
        .header(reqwest::header::AUTHORIZATION, authorization)
        .json(&body)
        .send()
        .await
        .ok()?;
    if response.status() != 201 {
        return None;
    }
    response.json::<Value>().await.ok()?["on_hand"].as_i64()
}

async fn read(client: &reqwest::Client, base: &str, authorization: &str, sku: &str) -> Result<i64, String> {
    let response = client
        .get(format!("{base}/v1/availability?channel={CHANNEL}&skus={sku}"))
        .header(reqwest::header::AUTHORIZATION, authorization)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let body: Value = response.json().await.map_err(|e| e.to_string())?;
    if status != 200 {
        return Err(format!("HTTP {status}: {body}"));
    }
    body["items"][0]["available"].as_i64().ok_or_else(|| format!("no figure in {body}"))
}

/// How long after a write's acknowledgement the view shows it, for SKUs already cached.
async fn measure_freshness(
    client: &reqwest::Client,
    base: &str,
    authorization: &str,
    zipf: &Zipf,
    quick: bool,
) -> Recorder {
    let mut recorder = Recorder::new();
    let mut rng = Rng::for_request(99, 0);
    for _ in 0..if quick { 50 } else { 300 } {
        let sku = format!("{PREFIX}{}", zipf.sample(&mut rng));
        if read(client, base, authorization, &sku).await.is_err() {
            continue;
        }
        let Some(on_hand) = adjust(client, base, authorization, &sku).await else { continue };
        let acked = Instant::now();
        loop {
            match read(client, base, authorization, &sku).await {
                Ok(v) if v >= on_hand + STOCK => {
                    recorder.record(&Outcome::Ok, acked.elapsed());
                    break;
                }
                _ if acked.elapsed() > Duration::from_secs(5) => {
                    recorder.record(&Outcome::other("not visible within 5 s"), acked.elapsed());
                    break;
                }
                _ => tokio::time::sleep(Duration::from_micros(500)).await,
            }
        }
    }
    recorder
}

/// Cached 20-SKU batches through the view's Rust API, one task back to back.
async fn measure_in_process(view: &catalog::AvailabilityView, zipf: &Zipf, duration: Duration) -> (Recorder, f64) {
    let channel = kernel::ChannelCode::parse(CHANNEL).expect("a valid code");
    let mut rng = Rng::for_request(123, 0);
    let batches: Vec<Vec<kernel::SkuCode>> = (0..256)
        .map(|_| {
            (0..20).map(|_| kernel::SkuCode::parse(format!("{PREFIX}{}", zipf.sample(&mut rng))).unwrap()).collect()
        })
        .collect();
    // Warm: every batch once, so the measurement reads the cache.
    for batch in &batches {
        let _ = view.read(&channel, batch).await;
    }
    let mut recorder = Recorder::new();
    let started = Instant::now();
    let mut i = 0;
    while started.elapsed() < duration {
        let sent = Instant::now();
        let outcome = match view.read(&channel, &batches[i % batches.len()]).await {
            Ok(answer) if answer.items.len() + answer.not_found.len() > 0 => Outcome::Ok,
            Ok(_) => Outcome::other("empty answer"),
            Err(e) => Outcome::other(e),
        };
        recorder.record(&outcome, sent.elapsed());
        i += 1;
    }
    let rate = recorder.ok as f64 / started.elapsed().as_secs_f64();
    (recorder, rate)
}
