//! The availability view: per channel, what a shopper may buy of each SKU (the sum over the
//! channel's active warehouses, expired and quarantined lots excluded) and at what price,
//! from one consistent snapshot ([`snapshot`]), behind an in-process cache.
//!
//! How the cache stays right:
//! - **Invalidated by events.** Each process follows the outbox itself ([`AvailabilityView::follow`],
//!   with an in-memory offset: every replica has its own cache, so the shared, persisted
//!   offsets of `store::subscriber` would be wrong here) and drops the entries that stock,
//!   lot, price, product, channel and warehouse events touch.
//! - **No lost race with a read in flight.** A read that took its snapshot at `seq` S inserts
//!   it as fresh only if no invalidation of that key after S was applied meanwhile (per-key
//!   tombstones); inserting and invalidating exclude each other, so an event is either in the
//!   snapshot or drops the entry after it lands.
//! - **Bounded when invalidation fails.** While the follower is not caught up within
//!   `trust_bound`, entries read longer ago than that are re-read; a verifier samples entries
//!   against the database and repairs (and counts) any drift.
//! - **TTLs adaptive and randomized**: shortest for zero and low stock, longest for stable
//!   items, each drawn from `[ttl/2, ttl)` with an unpredictable number.
//! - **Never an error as 0.** When the database cannot answer within `fetch_timeout`, cached
//!   figures (even past their TTL, kept for `stale_retention`) come back with `stale: true`;
//!   with nothing cached the read fails with [`CatalogError::Unavailable`].
//! - **No thundering herd.** Misses are fetched in batches (one snapshot per request's
//!   misses), at most `fetch_concurrency` at once, re-checking the cache after waiting.

pub mod keys;
pub mod shared;
pub mod snapshot;

pub use snapshot::Snapshot;

use crate::channel::ChannelConfig;
use crate::{CatalogError, Result};
use kernel::{ChannelCode, Clock, SkuCode, Timestamp};
use keys::{CacheKey, Keyer};
use serde::Serialize;
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use store::Db;

/// The view's figures; all are settings of `stockroom serve`.
#[derive(Debug, Clone)]
pub struct ViewSettings {
    /// TTL of an entry with 0 available (before jitter).
    pub ttl_zero: Duration,
    /// TTL of an entry with at most `low_stock_units` available, or of an unknown SKU.
    pub ttl_low: Duration,
    /// TTL of an entry with more.
    pub ttl_stable: Duration,
    pub low_stock_units: i64,
    /// How long an entry is kept as a stale fallback after its TTL.
    pub stale_retention: Duration,
    /// How far behind the follower may be before entries older than this are re-read.
    pub trust_bound: Duration,
    /// Longest a read of the database may take before cached figures stand in.
    pub fetch_timeout: Duration,
    /// Most snapshot reads at once.
    pub fetch_concurrency: usize,
    pub max_entries: u64,
    /// Entries the verifier checks per run.
    pub verify_sample: usize,
    /// Most-read SKUs the warmer keeps fresh (and saves for the next start).
    pub warm_top: usize,
    /// Most entries the follower re-reads per run: those an event dropped while they were
    /// cached, and those read past three quarters of their TTL. The rest are read when asked,
    /// so a bulk change never turns into a herd of reads.
    pub refresh_per_run: usize,
    /// False: every read goes to the database (the benchmark's baseline; nothing stale can
    /// be served then, so an outage is a 503).
    pub cache: bool,
}

impl Default for ViewSettings {
    fn default() -> Self {
        Self {
            ttl_zero: Duration::from_secs(2),
            ttl_low: Duration::from_secs(10),
            ttl_stable: Duration::from_secs(300),
            low_stock_units: 5,
            stale_retention: Duration::from_secs(3600),
            trust_bound: Duration::from_secs(1),
            fetch_timeout: Duration::from_millis(1500),
            fetch_concurrency: 4,
            max_entries: 1_000_000,
            verify_sample: 64,
            warm_top: 1_000,
            refresh_per_run: 2_000,
            cache: true,
        }
    }
}

/// A price as the view shows it.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct PriceTag {
    pub amount: String,
    pub currency: String,
    pub compare_at: Option<String>,
}

/// One SKU's availability in a channel.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct AvailabilityItem {
    pub sku: String,
    /// Units a shopper may buy now: the sum over the channel's active warehouses.
    pub available: i64,
    pub in_stock: bool,
    /// Sold beyond stock.
    pub backorder: bool,
    /// `null` when the SKU has no price in this channel.
    pub price: Option<PriceTag>,
    /// The snapshot price and stock were read from: the outbox `seq` they reflect.
    pub version: i64,
    /// When the snapshot was read.
    pub as_of: String,
    /// True when the stock source could not answer and these are the last figures known.
    pub stale: bool,
}

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct AvailabilityAnswer {
    pub items: Vec<AvailabilityItem>,
    /// Asked SKUs that are no variant of any product.
    pub not_found: Vec<String>,
}

#[derive(Debug)]
struct Entry {
    channel: String,
    snapshot: Snapshot,
    /// Until when it may be served without reading the database; 0: only as a fallback.
    fresh_until_ms: i64,
    /// A read after this queues a refresh ahead of expiry, so an entry in use never expires.
    refresh_after_ms: i64,
    /// Queued for a refresh already (each entry once).
    refresh_queued: AtomicBool,
    /// `read_at_ms` as RFC 3339, formatted once rather than on every read.
    as_of: String,
}

impl Entry {
    fn new(channel: &str, snapshot: Snapshot, fresh_until_ms: i64, refresh_after_ms: i64) -> Self {
        Self {
            channel: channel.to_owned(),
            fresh_until_ms,
            refresh_after_ms,
            refresh_queued: AtomicBool::new(false),
            as_of: Timestamp::from_millis(snapshot.read_at_ms).to_rfc3339(),
            snapshot,
        }
    }
}

/// What an event invalidates.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Touch {
    /// A SKU in every channel (stock and lots are per warehouse; channels overlap).
    Sku(String),
    /// A SKU in one channel (its price).
    ChannelSku(String, String),
    /// Everything: channels or warehouses changed.
    All,
}

fn touches(event: &store::outbox::StoredEvent) -> Vec<Touch> {
    let text = |field: &str| event.data.get(field).and_then(|v| v.as_str()).map(str::to_owned);
    match event.event_type.as_str() {
        "stock.changed" | "lot.quarantined" | "lot.released" | "lot.expired" => {
            text("sku").map(Touch::Sku).into_iter().collect()
        }
        "price.changed" => match (text("channel"), text("sku")) {
            (Some(channel), Some(sku)) => vec![Touch::ChannelSku(channel, sku)],
            _ => vec![Touch::All],
        },
        "product.created" | "product.updated" => {
            let mut skus: Vec<Touch> = Vec::new();
            for list in ["variants", "removed_skus"] {
                for v in event.data.get(list).and_then(|v| v.as_array()).into_iter().flatten() {
                    let sku = v
                        .as_str()
                        .map(str::to_owned)
                        .or_else(|| v.get("sku").and_then(|s| s.as_str()).map(str::to_owned));
                    skus.extend(sku.map(Touch::Sku));
                }
            }
            skus
        }
        "channel.created" | "channel.updated" | "warehouse.updated" => vec![Touch::All],
        _ => Vec::new(),
    }
}

/// The event types the view follows.
pub const FOLLOWED_EVENT_TYPES: &[&str] = &[
    "stock.changed",
    "lot.quarantined",
    "lot.released",
    "lot.expired",
    "price.changed",
    "product.created",
    "product.updated",
    "channel.created",
    "channel.updated",
    "warehouse.updated",
];

/// Longest the follower waits to read ahead what it is about to drop: the drop (and so the
/// freshness of every read) waits for it, and past this a miss is the cheaper outcome.
const READ_AHEAD_BUDGET: Duration = Duration::from_millis(20);

/// Most events one follower run applies.
const FOLLOW_BATCH_MAX: u32 = 1_000;

/// Counts reads per (channel, SKU), bounded: when full, every count is halved and the zeros
/// dropped, so it tracks what is read most lately. A hit on a counted SKU allocates nothing,
/// and the top is picked without copying the rest: the lock is on the read path.
#[derive(Debug, Default)]
struct HotCounter {
    counts: HashMap<String, HashMap<String, u64>>,
    len: usize,
}

const HOT_COUNTER_MAX: usize = 50_000;

impl HotCounter {
    fn hit(&mut self, channel: &str, sku: &str) {
        if let Some(count) = self.counts.get_mut(channel).and_then(|skus| skus.get_mut(sku)) {
            *count += 1;
            return;
        }
        if self.len >= HOT_COUNTER_MAX {
            self.len = 0;
            for skus in self.counts.values_mut() {
                skus.retain(|_, c| {
                    *c /= 2;
                    *c > 0
                });
                self.len += skus.len();
            }
            self.counts.retain(|_, skus| !skus.is_empty());
        }
        self.counts.entry(channel.to_owned()).or_default().insert(sku.to_owned(), 1);
        self.len += 1;
    }

    /// The `n` most-read, most first (ties by channel and SKU).
    fn top(&self, n: usize) -> Vec<((String, String), u64)> {
        let mut all: Vec<(u64, &str, &str)> = self
            .counts
            .iter()
            .flat_map(|(channel, skus)| skus.iter().map(move |(sku, c)| (*c, channel.as_str(), sku.as_str())))
            .collect();
        let order =
            |a: &(u64, &str, &str), b: &(u64, &str, &str)| b.0.cmp(&a.0).then_with(|| (a.1, a.2).cmp(&(b.1, b.2)));
        if all.len() > n && n > 0 {
            all.select_nth_unstable_by(n - 1, order);
        }
        all.truncate(n);
        all.sort_unstable_by(order);
        all.into_iter().map(|(c, channel, sku)| ((channel.to_owned(), sku.to_owned()), c)).collect()
    }
}

/// One in this many reads is counted for warming (counting every read would serialize
/// the hot path on the counter's lock).
const HOT_SAMPLE_EVERY: u64 = 8;

struct Inner {
    db: Db,
    clock: Arc<dyn Clock>,
    settings: ViewSettings,
    keys: Keyer,
    entries: moka::sync::Cache<CacheKey, Arc<Entry>>,
    /// The `seq` of the last invalidation applied per key.
    tombstones: moka::sync::Cache<CacheKey, i64>,
    /// The `seq` of the last invalidation of everything.
    all_invalidated_seq: AtomicI64,
    /// Held shared by inserts (check and insert), exclusively by invalidation.
    gate: RwLock<()>,
    channels: RwLock<HashMap<String, Arc<ChannelConfig>>>,
    applied_seq: AtomicI64,
    caught_up_at_ms: AtomicI64,
    /// The follower's last run read a full batch: it is catching up on a backlog.
    backlog: AtomicBool,
    fetches: tokio::sync::Semaphore,
    hot: Mutex<HotCounter>,
    /// Per channel, SKUs the follower re-reads on its next run.
    refresh_due: Mutex<HashMap<String, BTreeSet<String>>>,
    reads: AtomicU64,
    stats: Stats,
    shared: Option<shared::SharedTier>,
}

#[derive(Default)]
struct Stats {
    hits: AtomicU64,
    misses: AtomicU64,
    stale: AtomicU64,
    repairs: AtomicU64,
    invalidations: AtomicU64,
    refreshes: AtomicU64,
    shared_hits: AtomicU64,
    shared_rejected: AtomicU64,
}

/// The cache's state, for operators (`GET /v1/availability/status`).
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct ViewStatus {
    pub entries: u64,
    /// The last outbox `seq` the follower applied.
    pub applied_seq: i64,
    /// Whether the follower reached the outbox head within the trust bound.
    pub follower_caught_up: bool,
    /// SKU lookups answered from the cache, read from the database, and served stale since start.
    pub hits: u64,
    pub misses: u64,
    pub stale: u64,
    /// Entries the verifier found wrong and repaired (lost invalidations).
    pub repairs: u64,
    pub invalidations: u64,
    /// Entries re-read in the background: dropped by an event while cached, or read close to
    /// their expiry.
    pub refreshes: u64,
    /// Whether a shared tier (Redis) is in use.
    pub shared: bool,
    /// SKU lookups answered from the shared tier, and its values rejected (forged, moved
    /// under another key, or older than an invalidation seen here).
    pub shared_hits: u64,
    pub shared_rejected: u64,
}

/// The availability view and its cache. Cheap to clone.
#[derive(Clone)]
pub struct AvailabilityView {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for AvailabilityView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AvailabilityView").field("entries", &self.inner.entries.entry_count()).finish_non_exhaustive()
    }
}

/// What the verifier did in one run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VerifyReport {
    pub checked: usize,
    /// Entries that were served as fresh but differed from the database although the follower
    /// had passed the change: a lost invalidation, repaired.
    pub repaired: usize,
}

impl AvailabilityView {
    /// A view over `db` with the server's `secret`; loads the channels and starts following
    /// the outbox from its current head (the cache starts empty).
    pub async fn start(
        db: Db,
        clock: Arc<dyn Clock>,
        secret: &[u8],
        settings: ViewSettings,
        shared: Option<shared::SharedTier>,
    ) -> Result<Self> {
        let head = store::outbox::committed_head(db.reader()).await?;
        let channels = crate::channel::channels_all(db.reader()).await?;
        let stale_retention = settings.stale_retention;
        let view = Self {
            inner: Arc::new(Inner {
                keys: Keyer::new(secret),
                entries: moka::sync::Cache::builder()
                    .max_capacity(settings.max_entries)
                    .time_to_live(settings.ttl_stable + stale_retention)
                    .build(),
                tombstones: moka::sync::Cache::builder()
                    .max_capacity(settings.max_entries)
                    // Longer than any read in flight can take (reads time out sooner).
                    .time_to_live(Duration::from_secs(300).max(settings.fetch_timeout * 4))
                    .build(),
                all_invalidated_seq: AtomicI64::new(head),
                gate: RwLock::new(()),
                channels: RwLock::new(channels.into_iter().map(|c| (c.code.clone(), Arc::new(c))).collect()),
                applied_seq: AtomicI64::new(head),
                caught_up_at_ms: AtomicI64::new(clock.now().millis()),
                backlog: AtomicBool::new(false),
                fetches: tokio::sync::Semaphore::new(settings.fetch_concurrency.max(1)),
                hot: Mutex::new(HotCounter::default()),
                refresh_due: Mutex::new(HashMap::new()),
                reads: AtomicU64::new(0),
                stats: Stats::default(),
                shared,
                db,
                clock,
                settings,
            }),
        };
        Ok(view)
    }

    pub fn settings(&self) -> &ViewSettings {
        &self.inner.settings
    }

    /// Entries cached now (approximate, as moka counts).
    pub fn entry_count(&self) -> u64 {
        self.inner.entries.run_pending_tasks();
        self.inner.entries.entry_count()
    }

    pub fn status(&self) -> ViewStatus {
        let stats = &self.inner.stats;
        ViewStatus {
            entries: self.entry_count(),
            applied_seq: self.applied_seq(),
            follower_caught_up: self.follower_trusted(self.inner.clock.now().millis()),
            hits: stats.hits.load(Ordering::Relaxed),
            misses: stats.misses.load(Ordering::Relaxed),
            stale: stats.stale.load(Ordering::Relaxed),
            repairs: stats.repairs.load(Ordering::Relaxed),
            invalidations: stats.invalidations.load(Ordering::Relaxed),
            refreshes: stats.refreshes.load(Ordering::Relaxed),
            shared: self.inner.shared.is_some(),
            shared_hits: stats.shared_hits.load(Ordering::Relaxed),
            shared_rejected: stats.shared_rejected.load(Ordering::Relaxed),
        }
    }

    /// The last outbox `seq` the follower applied.
    pub fn applied_seq(&self) -> i64 {
        self.inner.applied_seq.load(Ordering::Acquire)
    }

    async fn channel(&self, code: &ChannelCode) -> Result<Arc<ChannelConfig>> {
        if let Some(channel) = self.inner.channels.read().expect("channels lock").get(code.as_str()) {
            return Ok(channel.clone());
        }
        // Made on another replica (or just now) and not yet followed: read it.
        match crate::channel::channel_get(self.inner.db.reader(), code).await {
            Ok(channel) => Ok(Arc::new(channel)),
            Err(CatalogError::NotFound { .. }) => {
                Err(CatalogError::invalid("channel", format!("unknown channel {code}")))
            }
            Err(e) => Err(e),
        }
    }

    fn is_fresh(&self, entry: &Entry, now_ms: i64, trust_all: bool) -> bool {
        let bound = self.inner.settings.trust_bound.as_millis() as i64;
        entry.fresh_until_ms > now_ms && (trust_all || entry.snapshot.read_at_ms >= now_ms - bound)
    }

    /// The follower's last run read a full batch (a refresh now would read what it is about
    /// to drop).
    pub fn follower_behind(&self) -> bool {
        self.inner.backlog.load(Ordering::Acquire)
    }

    fn follower_trusted(&self, now_ms: i64) -> bool {
        now_ms - self.inner.caught_up_at_ms.load(Ordering::Acquire)
            <= self.inner.settings.trust_bound.as_millis() as i64
    }

    /// Availability of `skus` (at most [`kernel::limits::STOCK_BATCH_SKUS_MAX`]) in `channel`.
    pub async fn read(&self, channel: &ChannelCode, skus: &[SkuCode]) -> Result<AvailabilityAnswer> {
        let channel = self.channel(channel).await?;
        let now = self.inner.clock.now();
        let now_ms = now.millis();
        let trust_all = self.follower_trusted(now_ms);
        let mut asked: Vec<&str> = Vec::with_capacity(skus.len());
        for sku in skus {
            if !asked.contains(&sku.as_str()) {
                asked.push(sku.as_str());
            }
        }
        if self.inner.reads.fetch_add(1, Ordering::Relaxed).is_multiple_of(HOT_SAMPLE_EVERY) {
            let mut hot = self.inner.hot.lock().expect("hot counter lock");
            for sku in &asked {
                hot.hit(&channel.code, sku);
            }
        }
        let mut found: Vec<Option<(Arc<Entry>, bool)>> = Vec::with_capacity(asked.len());
        let mut misses: Vec<String> = Vec::new();
        for sku in &asked {
            let key = self.inner.keys.key(&channel.code, sku);
            match self.inner.entries.get(&key).filter(|_| self.inner.settings.cache) {
                Some(entry) if self.is_fresh(&entry, now_ms, trust_all) => {
                    if now_ms >= entry.refresh_after_ms
                        && !entry.refresh_queued.load(Ordering::Relaxed)
                        && self.queue_refresh(&channel.code, sku)
                    {
                        entry.refresh_queued.store(true, Ordering::Relaxed);
                    }
                    found.push(Some((entry, false)))
                }
                other => {
                    misses.push((*sku).to_owned());
                    found.push(other.map(|e| (e, true)));
                }
            }
        }
        let hits = (asked.len() - misses.len()) as u64;
        self.inner.stats.hits.fetch_add(hits, Ordering::Relaxed);
        self.inner.stats.misses.fetch_add(misses.len() as u64, Ordering::Relaxed);
        metrics::counter!("stockroom_availability_cache_total", "result" => "hit").increment(hits);
        if !misses.is_empty() {
            metrics::counter!("stockroom_availability_cache_total", "result" => "miss").increment(misses.len() as u64);
            match self.fetch(&channel, &misses, now).await {
                Ok(fetched) => {
                    let mut fetched: HashMap<String, Arc<Entry>> =
                        fetched.into_iter().map(|e| (e.snapshot.sku.clone(), e)).collect();
                    for (slot, sku) in found.iter_mut().zip(&asked) {
                        if let Some(entry) = fetched.remove(*sku) {
                            *slot = Some((entry, false));
                        }
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, channel = %channel.code, "availability read failed; serving cached figures as stale");
                    metrics::counter!("stockroom_availability_cache_total", "result" => "stale")
                        .increment(misses.len() as u64);
                    self.inner.stats.stale.fetch_add(misses.len() as u64, Ordering::Relaxed);
                    if found.iter().any(Option::is_none) {
                        return Err(CatalogError::Unavailable(
                            "the stock source is not answering and these SKUs are not cached; retry shortly".into(),
                        ));
                    }
                }
            }
        }
        let currency = &channel.currency;
        let mut answer = AvailabilityAnswer { items: Vec::with_capacity(asked.len()), not_found: Vec::new() };
        for slot in found {
            let (entry, stale) = slot.expect("every slot is filled or the read failed above");
            let s = &entry.snapshot;
            if !s.known {
                answer.not_found.push(s.sku.clone());
                continue;
            }
            answer.items.push(AvailabilityItem {
                sku: s.sku.clone(),
                available: s.available,
                in_stock: s.available > 0,
                backorder: s.backorder,
                price: s.price_minor.map(|(amount, compare_at)| PriceTag {
                    amount: currency.format_amount(amount),
                    currency: currency.to_string(),
                    compare_at: compare_at.map(|c| currency.format_amount(c)),
                }),
                version: s.seq,
                as_of: entry.as_of.clone(),
                stale,
            });
        }
        Ok(answer)
    }

    /// Reads `skus` from the database (bounded in concurrency and time) and caches them.
    async fn fetch(&self, channel: &ChannelConfig, skus: &[String], now: Timestamp) -> Result<Vec<Arc<Entry>>> {
        let work = async {
            let _permit =
                self.inner.fetches.acquire().await.map_err(|_| CatalogError::Unavailable("closing".into()))?;
            // Another read may have fetched these while this one waited.
            let now_ms = self.inner.clock.now().millis();
            let trust_all = self.follower_trusted(now_ms);
            let mut ready = Vec::new();
            let mut still: Vec<String> = Vec::new();
            for sku in skus {
                match self
                    .inner
                    .entries
                    .get(&self.inner.keys.key(&channel.code, sku))
                    .filter(|_| self.inner.settings.cache)
                {
                    Some(entry) if self.is_fresh(&entry, now_ms, trust_all) => ready.push(entry),
                    _ => still.push(sku.clone()),
                }
            }
            if !still.is_empty()
                && self.inner.settings.cache
                && let Some(tier) = &self.inner.shared
            {
                still = self.read_shared(tier, &channel.code, still, &mut ready).await;
            }
            if !still.is_empty() {
                let started = std::time::Instant::now();
                let snapshots =
                    snapshot::read_snapshots(self.inner.db.reader(), self.inner.db.backend(), channel, &still, now)
                        .await?;
                metrics::histogram!("stockroom_availability_fetch_seconds").record(started.elapsed().as_secs_f64());
                let mut sealed = Vec::new();
                for snapshot in snapshots {
                    if self.inner.settings.cache {
                        let entry = self.insert(&channel.code, snapshot, now_ms);
                        if self.inner.shared.is_some() && entry.fresh_until_ms > now_ms {
                            let key = self.inner.keys.key(&channel.code, &entry.snapshot.sku);
                            let value = self.inner.keys.seal(&key, &channel.code, &entry.snapshot);
                            sealed.push((key, value, entry.fresh_until_ms - now_ms));
                        }
                        ready.push(entry);
                    } else {
                        ready.push(Arc::new(Entry::new(&channel.code, snapshot, 0, i64::MAX)));
                    }
                }
                if let Some(tier) = &self.inner.shared {
                    tier.put_many(sealed).await;
                }
            }
            Ok::<_, CatalogError>(ready)
        };
        match tokio::time::timeout(self.inner.settings.fetch_timeout, work).await {
            Ok(result) => result,
            Err(_) => Err(CatalogError::Unavailable("the stock source did not answer in time".into())),
        }
    }

    /// Looks `skus` up in the shared tier; caches and pushes what unseals and is not older than
    /// an invalidation seen here. Returns the SKUs still to read.
    async fn read_shared(
        &self,
        tier: &shared::SharedTier,
        channel: &str,
        skus: Vec<String>,
        ready: &mut Vec<Arc<Entry>>,
    ) -> Vec<String> {
        let keys: Vec<CacheKey> = skus.iter().map(|sku| self.inner.keys.key(channel, sku)).collect();
        let Some(values) = tier.get_many(&keys).await else { return skus };
        let mut still = Vec::new();
        for ((sku, key), value) in skus.into_iter().zip(&keys).zip(values) {
            let Some(bytes) = value else {
                still.push(sku);
                continue;
            };
            let min_seq =
                self.inner.all_invalidated_seq.load(Ordering::Acquire).max(self.inner.tombstones.get(key).unwrap_or(0));
            match self.inner.keys.unseal(key, channel, &bytes, min_seq) {
                Ok(snapshot) if snapshot.sku == sku => {
                    self.inner.stats.shared_hits.fetch_add(1, Ordering::Relaxed);
                    let read_at = snapshot.read_at_ms;
                    let entry = self.insert(channel, snapshot, read_at);
                    if entry.fresh_until_ms > self.inner.clock.now().millis() {
                        ready.push(entry);
                    } else {
                        still.push(sku);
                    }
                }
                rejected => {
                    self.inner.stats.shared_rejected.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("stockroom_availability_shared_rejected_total").increment(1);
                    tracing::warn!(channel, sku = %sku, ?rejected, "a shared cache value was rejected");
                    still.push(sku);
                }
            }
        }
        still
    }

    fn ttl_ms(&self, key: &CacheKey, snapshot: &Snapshot) -> i64 {
        let s = &self.inner.settings;
        let base = if !snapshot.known || (snapshot.available > 0 && snapshot.available <= s.low_stock_units) {
            s.ttl_low
        } else if snapshot.available <= 0 {
            s.ttl_zero
        } else {
            s.ttl_stable
        };
        let base = base.as_millis().max(2) as u64;
        (base / 2 + self.inner.keys.jitter(key, snapshot.seq) % (base / 2)) as i64
    }

    /// Caches `snapshot`; fresh unless an invalidation of its key newer than the snapshot was
    /// applied while it was read (then it is kept only as a fallback), and never replacing a
    /// newer fresh entry.
    fn insert(&self, channel: &str, snapshot: Snapshot, now_ms: i64) -> Arc<Entry> {
        let key = self.inner.keys.key(channel, &snapshot.sku);
        let ttl = self.ttl_ms(&key, &snapshot);
        let _shared = self.inner.gate.read().expect("gate lock");
        if let Some(existing) = self.inner.entries.get(&key)
            && existing.snapshot.seq > snapshot.seq
            && existing.fresh_until_ms > now_ms
        {
            return existing;
        }
        let invalidated_after = snapshot.seq < self.inner.all_invalidated_seq.load(Ordering::Acquire)
            || self.inner.tombstones.get(&key).is_some_and(|t| t > snapshot.seq);
        let entry = Arc::new(if invalidated_after {
            Entry::new(channel, snapshot, 0, i64::MAX)
        } else {
            Entry::new(channel, snapshot, now_ms + ttl, now_ms + ttl * 3 / 4)
        });
        self.inner.entries.insert(key, entry.clone());
        entry
    }

    /// One follower run: applies up to [`FOLLOW_BATCH_MAX`] events past the applied `seq`;
    /// returns how many it read.
    pub async fn follow(&self) -> Result<usize> {
        let after = self.applied_seq();
        let events = store::outbox::events_after(self.inner.db.reader(), after, FOLLOW_BATCH_MAX).await?;
        let now_ms = self.inner.clock.now().millis();
        self.inner.backlog.store(events.len() >= FOLLOW_BATCH_MAX as usize, Ordering::Release);
        let Some(last) = events.last().map(|e| e.seq) else {
            self.inner.caught_up_at_ms.store(now_ms, Ordering::Release);
            return Ok(0);
        };
        let mut plan: Vec<(i64, Touch)> = Vec::new();
        for event in &events {
            for touch in touches(event) {
                plan.push((event.seq, touch));
            }
        }
        #[cfg(feature = "failpoints")]
        fail::fail_point!("availability-follower-drop", |_| {
            // Test only: the events are passed over without invalidating anything, and the
            // follower believes it is caught up (an invalidation lost without a trace).
            self.inner.applied_seq.store(last, Ordering::Release);
            self.inner.caught_up_at_ms.store(now_ms, Ordering::Release);
            Ok(events.len())
        });
        // Channel changes need the new channel list in place before entries are read again.
        let channels = if plan.iter().any(|(_, t)| *t == Touch::All) {
            Some(crate::channel::channels_all(self.inner.db.reader()).await?)
        } else {
            None
        };
        let all_channels: Vec<String> = match &channels {
            Some(list) => list.iter().map(|c| c.code.clone()).collect(),
            None => self.inner.channels.read().expect("channels lock").keys().cloned().collect(),
        };
        let read_ahead =
            if channels.is_none() { self.read_ahead(&plan, &all_channels, now_ms).await } else { Vec::new() };
        let dropped_keys = {
            let _exclusive = self.inner.gate.write().expect("gate lock");
            if let Some(list) = channels {
                *self.inner.channels.write().expect("channels lock") =
                    list.into_iter().map(|c| (c.code.clone(), Arc::new(c))).collect();
            }
            let mut dropped = 0u64;
            let mut dropped_keys: Vec<CacheKey> = Vec::new();
            for (seq, touch) in &plan {
                match touch {
                    Touch::All => {
                        self.inner.all_invalidated_seq.fetch_max(*seq, Ordering::AcqRel);
                        self.inner.entries.invalidate_all();
                        dropped += 1;
                    }
                    Touch::Sku(sku) => {
                        for channel in &all_channels {
                            let key = self.inner.keys.key(channel, sku);
                            if self.drop_key(key, *seq, now_ms) {
                                self.queue_refresh(channel, sku);
                            }
                            dropped_keys.push(key);
                            dropped += 1;
                        }
                    }
                    Touch::ChannelSku(channel, sku) => {
                        let key = self.inner.keys.key(channel, sku);
                        if self.drop_key(key, *seq, now_ms) {
                            self.queue_refresh(channel, sku);
                        }
                        dropped_keys.push(key);
                        dropped += 1;
                    }
                }
            }
            self.inner.applied_seq.store(last, Ordering::Release);
            metrics::counter!("stockroom_availability_invalidations_total").increment(dropped);
            self.inner.stats.invalidations.fetch_add(dropped, Ordering::Relaxed);
            dropped_keys
        };
        if !read_ahead.is_empty() {
            let mut due = self.inner.refresh_due.lock().expect("refresh queue lock");
            for (channel, snapshot) in &read_ahead {
                if let Some(skus) = due.get_mut(channel) {
                    skus.remove(&snapshot.sku);
                }
            }
            due.retain(|_, skus| !skus.is_empty());
        }
        let read = read_ahead.len() as u64;
        for (channel, snapshot) in read_ahead {
            self.insert(&channel, snapshot, now_ms);
        }
        self.inner.stats.refreshes.fetch_add(read, Ordering::Relaxed);
        metrics::counter!("stockroom_availability_refreshes_total").increment(read);
        // Everything invalidated at once is not deleted in Redis (no key list): the `seq`
        // check on read rejects what an invalidation of everything left behind.
        if let Some(tier) = &self.inner.shared {
            for chunk in dropped_keys.chunks(1_000) {
                tier.delete_many(chunk).await;
            }
        }
        if events.len() < FOLLOW_BATCH_MAX as usize {
            self.inner.caught_up_at_ms.store(now_ms, Ordering::Release);
        }
        Ok(events.len())
    }

    /// Reads again, before they are dropped, the entries `plan` touches that are being served
    /// as fresh (at most `refresh_per_run`): dropped and then read, a hot SKU would miss for a
    /// database round trip and send every read in that window to the database. Until the
    /// drop the old figure is served, for one read's time, well inside the freshness bound.
    /// A failed read returns nothing: the entries are then dropped and read when asked.
    async fn read_ahead(&self, plan: &[(i64, Touch)], all_channels: &[String], now_ms: i64) -> Vec<(String, Snapshot)> {
        let mut wanted: HashMap<&str, BTreeSet<&str>> = HashMap::new();
        let mut left = self.inner.settings.refresh_per_run;
        for (_, touch) in plan {
            let pairs: Vec<(&str, &str)> = match touch {
                Touch::All => return Vec::new(),
                Touch::Sku(sku) => all_channels.iter().map(|c| (c.as_str(), sku.as_str())).collect(),
                Touch::ChannelSku(channel, sku) => vec![(channel.as_str(), sku.as_str())],
            };
            for (channel, sku) in pairs {
                let fresh = self
                    .inner
                    .entries
                    .get(&self.inner.keys.key(channel, sku))
                    .is_some_and(|e| e.fresh_until_ms > now_ms);
                if fresh && left > 0 && wanted.entry(channel).or_default().insert(sku) {
                    left -= 1;
                }
            }
        }
        let wanted: HashMap<String, Vec<String>> = wanted
            .into_iter()
            .map(|(code, skus)| (code.to_owned(), skus.into_iter().map(str::to_owned).collect()))
            .collect();
        // No fetch permit: the follower's one read per run must not queue behind requests'
        // misses, since the invalidations wait for it.
        let work = self.read_due(wanted, self.inner.clock.now(), false);
        match tokio::time::timeout(READ_AHEAD_BUDGET, work).await {
            Ok(Ok(read)) => read,
            Ok(Err(error)) => {
                tracing::warn!(%error, "availability read-ahead failed; the entries are dropped and read when asked");
                Vec::new()
            }
            Err(_) => {
                // Expected now and then under load (the budget is short on purpose): not a warning.
                tracing::debug!("availability read-ahead timed out; the entries are dropped and read when asked");
                Vec::new()
            }
        }
    }

    /// Drops `key`'s entry; true if it was being served as fresh at `now_ms` (then it is worth
    /// reading again before anyone asks; a stale fallback is not).
    fn drop_key(&self, key: CacheKey, seq: i64, now_ms: i64) -> bool {
        let newer = self.inner.tombstones.get(&key).is_none_or(|t| t < seq);
        if newer {
            self.inner.tombstones.insert(key, seq);
        }
        self.inner.entries.remove(&key).is_some_and(|e| e.fresh_until_ms > now_ms)
    }

    /// Queues a refresh; false when the queue is full (then the entry is read when asked).
    fn queue_refresh(&self, channel: &str, sku: &str) -> bool {
        if !self.inner.settings.cache {
            return false;
        }
        let mut due = self.inner.refresh_due.lock().expect("refresh queue lock");
        let queued: usize = due.values().map(BTreeSet::len).sum();
        // Past a few runs' worth, what is dropped is read when asked.
        if queued >= self.inner.settings.refresh_per_run * 4 {
            return false;
        }
        due.entry(channel.to_owned()).or_default().insert(sku.to_owned());
        true
    }

    /// Re-reads up to `refresh_per_run` queued entries (one snapshot per channel and 1,000
    /// SKUs); returns how many. A failed read leaves them to be read when asked.
    pub async fn refresh_queued(&self) -> usize {
        let mut take: HashMap<String, Vec<String>> = HashMap::new();
        {
            let mut due = self.inner.refresh_due.lock().expect("refresh queue lock");
            let mut left = self.inner.settings.refresh_per_run;
            for (channel, skus) in due.iter_mut() {
                while left > 0
                    && let Some(sku) = skus.pop_first()
                {
                    take.entry(channel.clone()).or_default().push(sku);
                    left -= 1;
                }
            }
            due.retain(|_, skus| !skus.is_empty());
        }
        if take.is_empty() {
            return 0;
        }
        // Bounded like a request's read, so the follower is never held up for long.
        let refreshed =
            tokio::time::timeout(self.inner.settings.fetch_timeout, self.refresh(take, self.inner.clock.now()))
                .await
                .unwrap_or_else(|_| Err(CatalogError::Unavailable("the refresh did not finish in time".into())));
        match refreshed {
            Ok(read) => {
                self.inner.stats.refreshes.fetch_add(read as u64, Ordering::Relaxed);
                metrics::counter!("stockroom_availability_refreshes_total").increment(read as u64);
                read
            }
            Err(error) => {
                tracing::warn!(%error, "availability refresh failed; the entries are read when asked");
                0
            }
        }
    }

    /// One verifier run: re-reads a sample of the cached entries and repairs any that differ
    /// from the database although the follower has passed the change.
    pub async fn verify(&self) -> Result<VerifyReport> {
        let sample = self.inner.settings.verify_sample.max(1);
        let count = self.inner.entries.entry_count().max(1) as usize;
        let stride = (count / sample).max(1);
        let offset = (self.inner.reads.load(Ordering::Relaxed) as usize) % stride;
        let mut by_channel: HashMap<String, Vec<Arc<Entry>>> = HashMap::new();
        for (i, (_, entry)) in self.inner.entries.iter().enumerate() {
            if i % stride == offset && entry.fresh_until_ms > 0 {
                by_channel.entry(entry.channel.clone()).or_default().push(entry);
            }
            if by_channel.values().map(Vec::len).sum::<usize>() >= sample {
                break;
            }
        }
        let mut report = VerifyReport::default();
        let now = self.inner.clock.now();
        for (code, entries) in by_channel {
            // The channel as a read finds it: from the follower's list, else from the database.
            // A channel whose event the follower lost is not in the list, and its entries are
            // exactly the ones that may have drifted: skipping them would hide the loss.
            let Ok(parsed) = ChannelCode::parse(code.as_str()) else { continue };
            let channel = match self.channel(&parsed).await {
                Ok(channel) => channel,
                // No such channel (any more): nothing to compare with.
                Err(CatalogError::Invalid(_)) => continue,
                Err(error) => return Err(error),
            };
            let skus: Vec<String> = entries.iter().map(|e| e.snapshot.sku.clone()).collect();
            let fresh =
                snapshot::read_snapshots(self.inner.db.reader(), self.inner.db.backend(), &channel, &skus, now).await?;
            let applied = self.applied_seq();
            for (old, new) in entries.iter().zip(fresh) {
                report.checked += 1;
                let differs =
                    (old.snapshot.known, old.snapshot.available, old.snapshot.backorder, old.snapshot.price_minor)
                        != (new.known, new.available, new.backorder, new.price_minor);
                let key = self.inner.keys.key(&code, &new.sku);
                // An entry an invalidation has dropped (or a read has replaced) since it was
                // sampled is no drift: only the one still cached can be wrong.
                let still_cached = self.inner.entries.get(&key).is_some_and(|current| Arc::ptr_eq(&current, old));
                if differs && new.seq > old.snapshot.seq && still_cached {
                    let served_as_fresh = old.fresh_until_ms > now.millis();
                    // Behind the follower: the invalidation that should have dropped it was lost.
                    if served_as_fresh && applied >= new.seq {
                        report.repaired += 1;
                        tracing::warn!(channel = %code, sku = %new.sku, "availability cache drift repaired");
                    }
                    {
                        let _exclusive = self.inner.gate.write().expect("gate lock");
                        self.inner.entries.invalidate(&key);
                    }
                    self.insert(&code, new, now.millis());
                }
            }
        }
        metrics::counter!("stockroom_availability_cache_repairs_total").increment(report.repaired as u64);
        self.inner.stats.repairs.fetch_add(report.repaired as u64, Ordering::Relaxed);
        Ok(report)
    }

    /// One warmer run: re-reads the most-read SKUs whose entries are missing or about to
    /// expire (`within`), a channel at a time in batches; returns how many it read.
    pub async fn warm(&self, within: Duration) -> Result<usize> {
        let top = self.inner.hot.lock().expect("hot counter lock").top(self.inner.settings.warm_top);
        let now = self.inner.clock.now();
        let horizon = now.millis() + within.as_millis() as i64;
        let mut due: HashMap<String, Vec<String>> = HashMap::new();
        for ((channel, sku), _) in top {
            let key = self.inner.keys.key(&channel, &sku);
            if self.inner.entries.get(&key).is_none_or(|e| e.fresh_until_ms < horizon) {
                due.entry(channel).or_default().push(sku);
            }
        }
        self.refresh(due, now).await
    }

    async fn refresh(&self, due: HashMap<String, Vec<String>>, now: Timestamp) -> Result<usize> {
        let read = self.read_due(due, now, true).await?;
        let count = read.len();
        for (code, snapshot) in read {
            // `insert` replaces anything older and keeps a newer fresh entry (a request may
            // have read one meanwhile), so the version never goes back.
            self.insert(&code, snapshot, now.millis());
        }
        Ok(count)
    }

    /// Reads `due` (SKUs per channel code; unknown channels skipped) in snapshots of at most
    /// 1,000 SKUs; with `permit`, each read waits for a fetch permit first.
    async fn read_due(
        &self,
        due: HashMap<String, Vec<String>>,
        now: Timestamp,
        permit: bool,
    ) -> Result<Vec<(String, Snapshot)>> {
        let mut read = Vec::new();
        for (code, skus) in due {
            let Some(channel) = self.inner.channels.read().expect("channels lock").get(&code).cloned() else {
                continue;
            };
            for chunk in skus.chunks(kernel::limits::STOCK_BATCH_SKUS_MAX) {
                let _permit = match permit {
                    true => Some(
                        self.inner.fetches.acquire().await.map_err(|_| CatalogError::Unavailable("closing".into()))?,
                    ),
                    false => None,
                };
                let snapshots =
                    snapshot::read_snapshots(self.inner.db.reader(), self.inner.db.backend(), &channel, chunk, now)
                        .await?;
                read.extend(snapshots.into_iter().map(|s| (code.clone(), s)));
            }
        }
        Ok(read)
    }

    /// Saves the most-read SKUs, so the next start warms them.
    pub async fn save_hot(&self) -> Result<usize> {
        let top = self.inner.hot.lock().expect("hot counter lock").top(self.inner.settings.warm_top);
        let mut tx = self.inner.db.begin().await?;
        sqlx::query("DELETE FROM availability_hot_skus").execute(&mut *tx).await?;
        for chunk in top.chunks(kernel::limits::INSERT_ROWS_MAX) {
            let mut values = store::sql::Values::new(&tx, 3);
            for ((channel, sku), hits) in chunk {
                values.row().text(channel.as_str()).text(sku.as_str()).int(*hits as i64);
            }
            values
                .query("INSERT INTO availability_hot_skus (channel, sku, hits) VALUES {values}")
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(top.len())
    }

    /// Loads the SKUs saved by [`AvailabilityView::save_hot`] into the cache (at start-up).
    pub async fn load_hot(&self) -> Result<usize> {
        let rows: Vec<(String, String, i64)> =
            sqlx::query_as("SELECT channel, sku, hits FROM availability_hot_skus ORDER BY hits DESC LIMIT $1")
                .bind(self.inner.settings.warm_top as i64)
                .fetch_all(self.inner.db.reader())
                .await?;
        let mut due: HashMap<String, Vec<String>> = HashMap::new();
        {
            let mut hot = self.inner.hot.lock().expect("hot counter lock");
            for (channel, sku, hits) in rows {
                for _ in 0..hits.clamp(1, 16) {
                    hot.hit(&channel, &sku);
                }
                due.entry(channel).or_default().push(sku);
            }
        }
        self.refresh(due, self.inner.clock.now()).await
    }
}

/// The server's cache secret: `configured` if given, else the one stored in the database
/// (made on first start, shared by every replica of the database).
pub async fn cache_secret(db: &Db, configured: Option<&str>, now: Timestamp) -> Result<Vec<u8>> {
    if let Some(secret) = configured {
        return Ok(secret.as_bytes().to_vec());
    }
    let fresh = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
    let mut tx = db.begin().await?;
    sqlx::query(
        "INSERT INTO server_secrets (name, value, created_at) VALUES ('cache', $1, $2) ON CONFLICT (name) DO NOTHING",
    )
    .bind(fresh)
    .bind(now.to_rfc3339())
    .execute(&mut *tx)
    .await?;
    let value: String =
        sqlx::query_scalar("SELECT value FROM server_secrets WHERE name = 'cache'").fetch_one(&mut *tx).await?;
    tx.commit().await?;
    Ok(value.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hot_counter_is_bounded_and_keeps_the_most_read() {
        let mut hot = HotCounter::default();
        for _ in 0..100 {
            hot.hit("web", "HOT");
        }
        for i in 0..HOT_COUNTER_MAX * 2 {
            hot.hit("web", &format!("COLD-{i}"));
        }
        let counted: usize = hot.counts.values().map(HashMap::len).sum();
        assert_eq!(counted, hot.len);
        assert!(counted <= HOT_COUNTER_MAX);
        assert_eq!(hot.top(1)[0].0.1, "HOT");
    }

    #[test]
    fn the_hot_counters_top_is_the_full_sorts_prefix() {
        let mut hot = HotCounter::default();
        for i in 0..500u64 {
            let channel = if i % 3 == 0 { "app" } else { "web" };
            for _ in 0..(i * 7919 % 13) {
                hot.hit(channel, &format!("S{i}"));
            }
        }
        let mut all: Vec<((String, String), u64)> = hot
            .counts
            .iter()
            .flat_map(|(c, skus)| skus.iter().map(move |(s, n)| ((c.clone(), s.clone()), *n)))
            .collect();
        all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        for n in [0, 1, 10, 37, all.len(), all.len() + 5] {
            assert_eq!(hot.top(n), all[..n.min(all.len())].to_vec(), "top {n}");
        }
    }

    #[test]
    fn events_touch_what_they_change() {
        let event = |event_type: &str, data: serde_json::Value| store::outbox::StoredEvent {
            seq: 1,
            id: "e".into(),
            event_type: event_type.into(),
            aggregate: "a".into(),
            aggregate_seq: 1,
            at: "t".into(),
            version: 1,
            data,
        };
        assert_eq!(
            touches(&event("stock.changed", serde_json::json!({"sku": "A", "warehouse": "W"}))),
            vec![Touch::Sku("A".into())]
        );
        assert_eq!(
            touches(&event("price.changed", serde_json::json!({"sku": "A", "channel": "web"}))),
            vec![Touch::ChannelSku("web".into(), "A".into())]
        );
        assert_eq!(
            touches(&event("product.updated", serde_json::json!({"variants": [{"sku": "A"}], "removed_skus": ["B"]}))),
            vec![Touch::Sku("A".into()), Touch::Sku("B".into())]
        );
        assert_eq!(touches(&event("warehouse.updated", serde_json::json!({}))), vec![Touch::All]);
        assert!(touches(&event("item.created", serde_json::json!({"sku": "A"}))).is_empty());
    }
}
