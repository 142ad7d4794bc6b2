//! The Stockroom binary's library: configuration, composition of the contexts into one app,
//! worker supervision and graceful shutdown. `main.rs` is only the CLI around it, and
//! `testkit` starts the very same app on port 0.

pub mod export;
pub mod import;
pub mod supervisor;

use anyhow::Context;
use kernel::Clock;
use metrics_exporter_prometheus::PrometheusHandle;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use store::{Db, DbOptions};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use warehouse::reservation::group_commit::{GroupCommit, GroupCommitConfig};

/// How long shutdown waits for requests in flight.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: String,
    pub database_url: String,
    pub admin_key: Option<String>,
    pub sweep_interval: Duration,
    pub db: DbOptions,
    /// `workers: 0` picks the backend's default (1 on SQLite, 4 on PostgreSQL).
    pub group_commit: GroupCommitConfig,
    pub catalog: CatalogConfig,
    pub orders: OrderConfig,
    /// Webhooks: who may be called, retries, timeouts, breakers.
    pub events: events::EventsSettings,
}

/// The order context's settings.
#[derive(Debug, Clone)]
pub struct OrderConfig {
    /// Stock figures of the availability view older than this are not shown in carts.
    pub max_stale_seconds: i64,
    /// How often the saga worker looks for expired holds and overdue sagas.
    pub saga_interval: Duration,
}

impl Default for OrderConfig {
    fn default() -> Self {
        Self { max_stale_seconds: 300, saga_interval: Duration::from_secs(1) }
    }
}

/// The catalog's availability view: its cache secret, figures and worker periods.
#[derive(Debug, Clone, Default)]
pub struct CatalogConfig {
    /// The secret cache keys and values are MACed under; `None`: the one stored in the
    /// database (made on first start).
    pub cache_secret: Option<String>,
    /// A Redis server for the cache's shared tier (many replicas); `None`: in process only.
    pub redis_url: Option<String>,
    pub view: catalog::availability::ViewSettings,
    pub intervals: catalog::ViewIntervals,
}

/// A running server: its address, its database, and the handle to stop it.
#[derive(Debug)]
pub struct Running {
    pub addr: SocketAddr,
    pub db: Db,
    /// The catalog's availability view (for in-process measurements and tests).
    pub availability: catalog::AvailabilityView,
    /// The admin key created on first start when none was configured.
    pub bootstrap_key: Option<String>,
    shutdown: CancellationToken,
    server: JoinHandle<std::io::Result<()>>,
    workers: Vec<JoinHandle<()>>,
}

impl Running {
    /// Stops accepting, finishes requests in flight (up to [`SHUTDOWN_GRACE`]) and stops the
    /// workers.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        let server = tokio::time::timeout(SHUTDOWN_GRACE, self.server).await;
        for worker in self.workers {
            let _ = tokio::time::timeout(Duration::from_secs(2), worker).await;
        }
        self.db.close().await;
        match server {
            Ok(joined) => Ok(joined??),
            Err(_) => {
                anyhow::bail!("requests still in flight after {SHUTDOWN_GRACE:?}; stopped anyway")
            }
        }
    }

    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }
}

/// Connects (migrating), binds, and starts the API and its workers.
pub async fn start(config: ServeConfig, clock: Arc<dyn Clock>, metrics: PrometheusHandle) -> anyhow::Result<Running> {
    let db = Db::connect_and_migrate(&config.database_url, &config.db)
        .await
        .with_context(|| format!("opening the database {}", redact(&config.database_url)))?;
    let (admin_key_hash, bootstrap_key) = match &config.admin_key {
        Some(key) => (Some(api::auth::hash_key(key)), None),
        None => {
            let created = api::auth::bootstrap_admin_key(&db, clock.now()).await?;
            (None, created.map(|k| k.secret))
        }
    };
    let mut group_config = config.group_commit.clone();
    if group_config.workers == 0 {
        group_config.workers = match db.backend() {
            store::Backend::Sqlite => 1,
            store::Backend::Postgres => 4,
        };
    }
    let mut event_types = kernel::EventRegistry::default();
    event_types.register(warehouse::events::event_types()).map_err(anyhow::Error::msg)?;
    event_types.register(catalog::events::event_types()).map_err(anyhow::Error::msg)?;
    event_types.register(order::events::event_types()).map_err(anyhow::Error::msg)?;
    event_types.register(fulfillment::events::event_types()).map_err(anyhow::Error::msg)?;
    for followed in catalog::availability::FOLLOWED_EVENT_TYPES {
        anyhow::ensure!(
            event_types.get(followed).is_some(),
            "the availability view follows unknown event type {followed}"
        );
    }

    // Every context's workers and subscribers; a subscriber that cannot start stops start-up.
    let mut context_workers = warehouse::workers(&db, &clock, config.sweep_interval);
    let mut subscriptions = warehouse::subscriptions(&db, &clock, config.sweep_interval);
    subscriptions.extend(catalog::subscriptions(&db, &clock, &config.catalog.intervals));
    subscriptions.extend(order::subscriptions(&db, &clock, config.orders.saga_interval));
    subscriptions.extend(fulfillment::subscriptions(&db, &clock, config.orders.saga_interval));
    subscriptions.extend(review::subscriptions(&db, &clock, config.orders.saga_interval));
    let rebuilt = catalog::search::rebuild_if_missing(&db, clock.now()).await.context("rebuilding the search index")?;
    if rebuilt > 0 {
        tracing::info!(products = rebuilt, "rebuilt the search index");
    }
    store::subscriber::prepare(&db, &subscriptions, &event_types.names(), clock.now())
        .await
        .map_err(anyhow::Error::msg)
        .context("starting the subscribers")?;
    context_workers.extend(subscriptions.into_iter().map(|s| s.worker));

    let secret = catalog::availability::cache_secret(&db, config.catalog.cache_secret.as_deref(), clock.now())
        .await
        .context("reading the cache secret")?;
    let shared = match &config.catalog.redis_url {
        Some(url) => Some(
            catalog::availability::shared::SharedTier::connect(url)
                .await
                .with_context(|| format!("connecting to Redis at {}", redact(url)))?,
        ),
        None => None,
    };
    let availability =
        catalog::AvailabilityView::start(db.clone(), clock.clone(), &secret, config.catalog.view.clone(), shared)
            .await
            .context("starting the availability view")?;
    // Warm what was read most before the last stop; a failure only means a cold cache.
    if let Err(error) = availability.load_hot().await {
        tracing::warn!(%error, "could not warm the availability cache");
    }
    let search = catalog::search::SearchIndex::new(db.clone()).context("creating the search index")?;
    let loaded = search.catch_up().await.context("loading the search index")?;
    tracing::info!(rows = loaded, "loaded the search index");
    context_workers.extend(catalog::workers(&availability, &search, &config.catalog.intervals));
    context_workers.extend(order::workers(&db, &clock, config.orders.saga_interval));
    let webhooks =
        events::Relay::new(db.clone(), clock.clone(), config.events.clone()).context("starting the webhook relay")?;
    if let Some(nats) = &config.events.nats {
        let relay = events::nats::NatsRelay::connect(db.clone(), clock.clone(), nats.clone())
            .await
            .with_context(|| format!("connecting to NATS at {}", redact(&nats.url)))?;
        context_workers.push(store::workers::Worker::new(
            events::nats::NATS_RELAY,
            config.events.interval,
            move || {
                let relay = relay.clone();
                async move {
                    let published = relay.run_once().await?;
                    let more = published >= relay.settings().batch as usize;
                    Ok::<_, events::EventsError>(store::workers::Progress { done: published, more })
                }
            },
        ));
    }
    context_workers.push({
        let relay = webhooks.clone();
        store::workers::Worker::new("webhook-relay", config.events.interval, move || {
            let relay = relay.clone();
            async move {
                let started = relay.tick().await?;
                Ok::<_, events::EventsError>(store::workers::Progress { done: started, more: false })
            }
        })
    });

    let shutdown = CancellationToken::new();
    let registry = store::workers::Workers::new();
    let (reservations, mut group_workers) =
        GroupCommit::start(db.clone(), clock.clone(), group_config.clone(), registry.clone());
    let (checkouts, checkout_workers) =
        order::Checkouts::start(db.clone(), clock.clone(), group_config, registry.clone());
    group_workers.extend(checkout_workers);
    let state = api::AppState::new(api::Services {
        db: db.clone(),
        clock: clock.clone(),
        admin_key_hash,
        metrics,
        reservations,
        workers: registry.clone(),
        availability: availability.clone(),
        search,
        webhooks,
        orders: api::OrderSettings { checkouts, max_stale_seconds: config.orders.max_stale_seconds },
        event_types: Arc::new(event_types),
        shutdown: shutdown.clone(),
    });
    let listener =
        tokio::net::TcpListener::bind(&config.listen).await.with_context(|| format!("binding {}", config.listen))?;
    let addr = listener.local_addr()?;

    let mut workers = group_workers;
    for worker in context_workers {
        workers.push(supervisor::spawn(worker, shutdown.clone(), registry.clone()));
    }

    let app = api::router(state);
    let server = axum::serve(listener, app).with_graceful_shutdown(shutdown.clone().cancelled_owned());
    let server = tokio::spawn(async move { server.await });
    Ok(Running { addr, db, availability, bootstrap_key, shutdown, server, workers })
}

/// The URL without its password, for logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.find(':') {
                Some(colon) => format!("{}{}:***{}", &url[..scheme + 3], &credentials[..colon], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn redact_hides_passwords_only() {
        assert_eq!(super::redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(super::redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(super::redact("sqlite://stockroom.db"), "sqlite://stockroom.db");
    }
}
