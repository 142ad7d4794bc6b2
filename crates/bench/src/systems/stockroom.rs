//! Stockroom itself: in-process through its group commit, or over HTTP to the real server.

use super::{HoldRequest, REFERENCE, System, classify_store};
use crate::stats::{ErrorKind, Outcome};
use anyhow::Context;
use kernel::{Quantity, ReservationId, SkuCode, SystemClock, WarehouseCode};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use store::{Backend, Db, DbOptions, SqliteSync};
use tokio::sync::Semaphore;
use warehouse::WarehouseError;
use warehouse::reservation::group_commit::{GroupCommit, GroupCommitConfig};
use warehouse::reservation::{HoldCommand, HoldLine};

pub const ADMIN_KEY: &str = "stockroom-bench-admin-key";
const TTL_SECONDS: i64 = 900;

/// The database settings of `stockroom serve` with its defaults, but the durability of
/// `system`.
pub fn db_options(system: System) -> DbOptions {
    DbOptions {
        sqlite_sync: if system == System::StockroomSqliteNormal { SqliteSync::Normal } else { SqliteSync::Full },
        ..DbOptions::default()
    }
}

/// Changes to the group-commit defaults, for experiments (`--gc-*` flags); `None` keeps the
/// default of `stockroom serve`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupCommitOverrides {
    pub workers: Option<usize>,
    pub batch_max: Option<usize>,
    pub window_us: Option<u64>,
}

impl GroupCommitOverrides {
    fn apply(self, mut config: GroupCommitConfig) -> GroupCommitConfig {
        if let Some(workers) = self.workers {
            config.workers = workers;
        }
        if let Some(batch_max) = self.batch_max {
            config.batch_max = batch_max.max(1);
        }
        if let Some(window_us) = self.window_us {
            config.window = Duration::from_micros(window_us);
        }
        config
    }
}

/// The group-commit settings of `stockroom serve` with its defaults (workers: 1 on SQLite, 4
/// on PostgreSQL, as `stockroom::start` picks them), then `overrides`.
pub fn group_commit_config(backend: Backend, overrides: GroupCommitOverrides) -> GroupCommitConfig {
    let defaults = GroupCommitConfig {
        workers: match backend {
            Backend::Sqlite => 1,
            Backend::Postgres => 4,
        },
        ..GroupCommitConfig::default()
    };
    overrides.apply(defaults)
}

fn hold_command(request: &HoldRequest) -> Result<HoldCommand, Outcome> {
    let lines = request
        .lines
        .iter()
        .map(|l| {
            Ok(HoldLine {
                sku: SkuCode::parse(l.sku.clone()).map_err(Outcome::other)?,
                quantity: Quantity::new(l.quantity).map_err(Outcome::other)?,
                warehouse: l
                    .warehouse
                    .as_ref()
                    .map(|w| WarehouseCode::parse(w.clone()))
                    .transpose()
                    .map_err(Outcome::other)?,
            })
        })
        .collect::<Result<Vec<_>, Outcome>>()?;
    Ok(HoldCommand { id: ReservationId::new(), reference: REFERENCE.to_owned(), ttl_seconds: TTL_SECONDS, lines })
}

fn classify_warehouse(error: &WarehouseError) -> Outcome {
    match error {
        WarehouseError::InsufficientStock { .. } => Outcome::Refused,
        WarehouseError::Overloaded => Outcome::Error(ErrorKind::Overloaded, error.to_string()),
        WarehouseError::Store(e) => classify_store(e),
        other => Outcome::other(other),
    }
}

/// Stockroom's Rust API: holds through [`GroupCommit::hold`], reads through `stock_views`.
pub struct InProcess {
    group: GroupCommit,
    db: Db,
}

impl InProcess {
    pub fn start(db: Db, overrides: GroupCommitOverrides) -> (Self, Vec<tokio::task::JoinHandle<()>>) {
        let (group, workers) = GroupCommit::start(
            db.clone(),
            Arc::new(SystemClock),
            group_commit_config(db.backend(), overrides),
            store::workers::Workers::new(),
        );
        (Self { group, db }, workers)
    }

    pub async fn hold(&self, request: &HoldRequest) -> Outcome {
        let command = match hold_command(request) {
            Ok(command) => command,
            Err(outcome) => return outcome,
        };
        match self.group.hold(command).await {
            Ok(_) => Outcome::Ok,
            Err(e) => classify_warehouse(&e),
        }
    }

    pub async fn read(&self, sku: &str) -> Outcome {
        let sku = match SkuCode::parse(sku) {
            Ok(sku) => sku,
            Err(e) => return Outcome::other(e),
        };
        match warehouse::stock::stock_views(self.db.reader(), &[sku], None).await {
            Ok(views) if views.len() == 1 => Outcome::Ok,
            Ok(views) => Outcome::other(format!("expected one stock view, got {}", views.len())),
            Err(e) => classify_warehouse(&e),
        }
    }
}

/// Starts the full server (`stockroom::start`) on an ephemeral loopback port, with the
/// defaults of `stockroom serve` and the durability of `system`.
pub async fn start_server(
    system: System,
    url: &str,
    overrides: GroupCommitOverrides,
) -> anyhow::Result<::stockroom::Running> {
    let config = ::stockroom::ServeConfig {
        listen: "127.0.0.1:0".into(),
        database_url: url.to_owned(),
        admin_key: Some(ADMIN_KEY.into()),
        sweep_interval: Duration::from_secs(1),
        db: db_options(system),
        // workers 0: the backend's default, chosen by `stockroom::start`.
        group_commit: overrides.apply(GroupCommitConfig { workers: 0, ..GroupCommitConfig::default() }),
        catalog: ::stockroom::CatalogConfig::default(),
        orders: ::stockroom::OrderConfig::default(),
        events: events::EventsSettings::default(),
    };
    ::stockroom::start(config, Arc::new(SystemClock), crate::probe::handle())
        .await
        .context("starting the Stockroom server")
}

/// A client of the HTTP API over loopback, one keep-alive connection per request in flight.
pub struct HttpClient {
    client: reqwest::Client,
    reservations_url: String,
    stock_url: String,
    authorization: String,
    /// Bounds requests in flight (and so connections).
    permits: Semaphore,
    /// Each hold sends a fresh `Idempotency-Key`.
    idempotency_keys: bool,
}

impl HttpClient {
    pub fn new(addr: SocketAddr, connections: usize, idempotency_keys: bool) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(connections)
            .tcp_nodelay(true)
            .timeout(Duration::from_secs(60))
            .build()?;
        Ok(Self {
            client,
            reservations_url: format!("http://{addr}/v1/reservations"),
            stock_url: format!("http://{addr}/v1/stock/"),
            authorization: format!("Bearer {ADMIN_KEY}"),
            permits: Semaphore::new(connections.max(1)),
            idempotency_keys,
        })
    }

    pub async fn hold(&self, request: &HoldRequest) -> Outcome {
        let lines: Vec<serde_json::Value> = request
            .lines
            .iter()
            .map(|l| match &l.warehouse {
                Some(w) => json!({"sku": l.sku, "quantity": l.quantity, "warehouse": w}),
                None => json!({"sku": l.sku, "quantity": l.quantity}),
            })
            .collect();
        let body = json!({"reference": REFERENCE, "ttl_seconds": TTL_SECONDS, "lines": lines});
        let Ok(_permit) = self.permits.acquire().await else {
            return Outcome::other("client closed");
        };
        let mut post =
            self.client.post(&self.reservations_url).header(reqwest::header::AUTHORIZATION, &self.authorization);
        if self.idempotency_keys {
            post = post.header("Idempotency-Key", format!("bench-{}", uuid::Uuid::new_v4().simple()));
        }
        let sent = post.json(&body).send().await;
        answer(sent, 201).await
    }

    pub async fn read(&self, sku: &str) -> Outcome {
        let Ok(_permit) = self.permits.acquire().await else {
            return Outcome::other("client closed");
        };
        let sent = self
            .client
            .get(format!("{}{sku}", self.stock_url))
            .header(reqwest::header::AUTHORIZATION, &self.authorization)
            .send()
            .await;
        answer(sent, 200).await
    }
}

/// Reads the whole answer (so the connection is reused) and classifies it.
async fn answer(sent: reqwest::Result<reqwest::Response>, success: u16) -> Outcome {
    let response = match sent {
        Ok(response) => response,
        Err(e) if e.is_timeout() => return Outcome::Error(ErrorKind::Timeout, e.to_string()),
        Err(e) => return Outcome::other(e),
    };
    let status = response.status().as_u16();
    let body = match response.bytes().await {
        Ok(body) => body,
        Err(e) => return Outcome::other(e),
    };
    match status {
        s if s == success => Outcome::Ok,
        409 if body.windows(18).any(|w| w == b"insufficient_stock") => Outcome::Refused,
        503 => Outcome::Error(ErrorKind::Overloaded, format!("HTTP 503: {}", String::from_utf8_lossy(&body))),
        s => Outcome::other(format!("HTTP {s}: {}", String::from_utf8_lossy(&body))),
    }
}
