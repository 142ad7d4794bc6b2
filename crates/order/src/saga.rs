//! Sagas: every multi-step flow of an order, persisted so any replica can resume it.
//!
//! A `checkout` saga starts when an order is placed (its first step, holding stock and
//! promotion uses, commits with the order) and waits on payment until the hold's deadline;
//! paid, it confirms the holds and requests fulfilment; failed or expired, it compensates
//! (releases holds and uses, cancels the order). A `cancellation` saga starts when a paid
//! order is cancelled: holds released and a refund requested through the outbox, it waits
//! for the integration to report `refunded`. Each step is one transaction that also records
//! the step, so a crash between steps leaves a saga that the worker ([`run_due`]) picks up.
//! A saga waiting past its bound is marked stuck, counted and announced (`saga.stuck`).

use crate::Result;
use crate::error::OrderError;
use crate::events::SagaStuck;
use kernel::{NewEvent, Timestamp};
use serde::{Deserialize, Serialize};
use sqlx::AnyPool;
use store::Tx;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SagaKind {
    Checkout,
    Cancellation,
}

impl SagaKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SagaKind::Checkout => "checkout",
            SagaKind::Cancellation => "cancellation",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "checkout" => Some(SagaKind::Checkout),
            "cancellation" => Some(SagaKind::Cancellation),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SagaStatus {
    /// Going forward, or waiting on an outside event (a payment, a refund).
    Running,
    /// Undoing its done steps.
    Compensating,
    /// Gave up; needs a person.
    Failed,
    /// Finished: `outcome` says how.
    Done,
}

impl SagaStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SagaStatus::Running => "running",
            SagaStatus::Compensating => "compensating",
            SagaStatus::Failed => "failed",
            SagaStatus::Done => "done",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "running" => Some(SagaStatus::Running),
            "compensating" => Some(SagaStatus::Compensating),
            "failed" => Some(SagaStatus::Failed),
            "done" => Some(SagaStatus::Done),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct SagaStep {
    pub n: i64,
    pub name: String,
    /// `done`, `compensated` or `failed`.
    pub status: String,
    pub detail: Option<String>,
    pub at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Saga {
    pub id: String,
    pub kind: SagaKind,
    pub order: String,
    pub status: SagaStatus,
    /// The step it waits on or runs next; the last one once done.
    pub step: String,
    /// Once done: `paid`, `compensated`, `refunded`.
    pub outcome: Option<String>,
    pub attempts: i64,
    /// When the step it waits on is due.
    pub deadline_at: Option<String>,
    /// Waited past its bound; an alert was raised.
    pub stuck: bool,
    pub last_error: Option<String>,
    pub steps: Vec<SagaStep>,
    pub created_at: String,
    pub updated_at: String,
}

pub fn new_saga_id() -> String {
    format!("saga_{}", uuid::Uuid::now_v7().simple())
}

/// Starts a saga whose first step is done: it now waits on `waiting` until `deadline_ms`.
pub async fn start(
    tx: &mut Tx,
    kind: SagaKind,
    order_id: &str,
    first_step: (&str, Option<String>),
    waiting: &str,
    deadline_ms: Option<i64>,
    now: Timestamp,
) -> Result<String> {
    let id = new_saga_id();
    let at = now.to_rfc3339();
    sqlx::query(
        "INSERT INTO sagas (id, kind, order_id, status, step, outcome, attempts, deadline_at_ms, stuck, last_error, created_at, updated_at) \
         VALUES ($1, $2, $3, 'running', $4, NULL, 0, $5, 0, NULL, $6, $6)",
    )
    .bind(id.clone())
    .bind(kind.as_str())
    .bind(order_id.to_owned())
    .bind(waiting.to_owned())
    .bind(deadline_ms)
    .bind(at.clone())
    .execute(&mut **tx)
    .await?;
    record_step(tx, &id, first_step.0, "done", first_step.1, now).await?;
    metrics::counter!("stockroom_sagas_started_total", "kind" => kind.as_str()).increment(1);
    Ok(id)
}

/// Appends a step to a saga's history.
pub async fn record_step(
    tx: &mut Tx,
    saga_id: &str,
    name: &str,
    status: &str,
    detail: Option<String>,
    now: Timestamp,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO saga_steps (saga_id, n, name, status, detail, at) \
         SELECT $1, CAST(COALESCE(MAX(n), 0) + 1 AS BIGINT), $2, $3, $4, $5 FROM saga_steps WHERE saga_id = $1",
    )
    .bind(saga_id.to_owned())
    .bind(name.to_owned())
    .bind(status.to_owned())
    .bind(detail)
    .bind(now.to_rfc3339())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Moves a saga on: its status, the step it is at, and (once done) its outcome.
pub async fn advance(
    tx: &mut Tx,
    saga_id: &str,
    status: SagaStatus,
    step: &str,
    outcome: Option<&str>,
    deadline_ms: Option<i64>,
    now: Timestamp,
) -> Result<()> {
    sqlx::query(
        "UPDATE sagas SET status = $2, step = $3, outcome = $4, deadline_at_ms = $5, attempts = attempts + 1, updated_at = $6 WHERE id = $1",
    )
    .bind(saga_id.to_owned())
    .bind(status.as_str())
    .bind(step.to_owned())
    .bind(outcome.map(str::to_owned))
    .bind(deadline_ms)
    .bind(now.to_rfc3339())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Finishes a saga: done with `outcome`, counted by kind and outcome.
pub async fn finish(
    tx: &mut Tx,
    saga_id: &str,
    kind: SagaKind,
    step: &str,
    outcome: &'static str,
    now: Timestamp,
) -> Result<()> {
    advance(tx, saga_id, SagaStatus::Done, step, Some(outcome), None, now).await?;
    sqlx::query("UPDATE sagas SET stuck = 0 WHERE id = $1").bind(saga_id.to_owned()).execute(&mut **tx).await?;
    metrics::counter!("stockroom_sagas_finished_total", "kind" => kind.as_str(), "outcome" => outcome).increment(1);
    Ok(())
}

/// The open (not done) saga of `kind` of an order, if any: `(id, step)`.
pub async fn open_of(tx: &mut Tx, order_id: &str, kind: SagaKind) -> Result<Option<(String, String)>> {
    Ok(sqlx::query_as(
        "SELECT id, step FROM sagas WHERE order_id = $1 AND kind = $2 AND status <> 'done' ORDER BY id LIMIT 1",
    )
    .bind(order_id.to_owned())
    .bind(kind.as_str())
    .fetch_optional(&mut **tx)
    .await?)
}

type SagaRow =
    (String, String, String, String, String, Option<String>, i64, Option<i64>, i64, Option<String>, String, String);

const SAGA_COLUMNS: &str =
    "id, kind, order_id, status, step, outcome, attempts, deadline_at_ms, stuck, last_error, created_at, updated_at";

async fn with_steps(pool: &AnyPool, row: SagaRow) -> Result<Saga> {
    let corrupt = |what: String| OrderError::Store(store::StoreError::Corrupt(what));
    let steps: Vec<(i64, String, String, Option<String>, String)> =
        sqlx::query_as("SELECT n, name, status, detail, at FROM saga_steps WHERE saga_id = $1 ORDER BY n")
            .bind(row.0.clone())
            .fetch_all(pool)
            .await?;
    Ok(Saga {
        kind: SagaKind::parse(&row.1).ok_or_else(|| corrupt(format!("saga kind {}", row.1)))?,
        status: SagaStatus::parse(&row.3).ok_or_else(|| corrupt(format!("saga status {}", row.3)))?,
        id: row.0,
        order: row.2,
        step: row.4,
        outcome: row.5,
        attempts: row.6,
        deadline_at: row.7.map(|ms| Timestamp::from_millis(ms).to_rfc3339()),
        stuck: row.8 == 1,
        last_error: row.9,
        steps: steps
            .into_iter()
            .map(|(n, name, status, detail, at)| SagaStep { n, name, status, detail, at })
            .collect(),
        created_at: row.10,
        updated_at: row.11,
    })
}

pub async fn saga_get(pool: &AnyPool, id: &str) -> Result<Saga> {
    let row: Option<SagaRow> =
        sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {SAGA_COLUMNS} FROM sagas WHERE id = $1")))
            .bind(id.to_owned())
            .fetch_optional(pool)
            .await?;
    with_steps(pool, row.ok_or_else(|| OrderError::not_found("saga", id))?).await
}

#[derive(Debug, Clone, Default)]
pub struct SagaFilter {
    pub status: Option<SagaStatus>,
    pub kind: Option<SagaKind>,
    pub order: Option<String>,
}

/// Sagas newest first (ids are time-ordered), before a cursor.
pub async fn sagas_list(pool: &AnyPool, filter: &SagaFilter, before: Option<&str>, limit: u32) -> Result<Vec<Saga>> {
    let rows: Vec<SagaRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {SAGA_COLUMNS} FROM sagas WHERE ($1 IS NULL OR status = $1) AND ($2 IS NULL OR kind = $2) \
         AND ($3 IS NULL OR order_id = $3) AND ($4 IS NULL OR id < $4) ORDER BY id DESC LIMIT $5"
    )))
    .bind(filter.status.map(|s| s.as_str()))
    .bind(filter.kind.map(|k| k.as_str()))
    .bind(filter.order.clone())
    .bind(before.map(str::to_owned))
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        out.push(with_steps(pool, row).await?);
    }
    Ok(out)
}

/// Sagas by status, for the metrics gauge: `(kind, status, stuck, count)`.
pub async fn saga_counts(pool: &AnyPool) -> Result<Vec<(String, String, i64, i64)>> {
    Ok(sqlx::query_as(
        "SELECT kind, status, stuck, CAST(COUNT(*) AS BIGINT) FROM sagas WHERE status <> 'done' OR stuck = 1 GROUP BY kind, status, stuck",
    )
    .fetch_all(pool)
    .await?)
}

/// Running sagas whose deadline has passed, oldest deadline first, locked for this
/// transaction (other replicas skip them): `(id, kind, order, step, deadline)`.
pub async fn due(tx: &mut Tx, now: Timestamp, limit: i64) -> Result<Vec<(String, String, String, String, i64)>> {
    let lock = store::sql::Lock::ForUpdateSkipLocked.clause(store::db::backend_of(tx));
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT id, kind, order_id, step, deadline_at_ms FROM sagas WHERE status = 'running' AND stuck = 0 \
         AND deadline_at_ms IS NOT NULL AND deadline_at_ms <= $1 ORDER BY deadline_at_ms, id LIMIT $2{lock}"
    )))
    .bind(now.millis())
    .bind(limit)
    .fetch_all(&mut **tx)
    .await?)
}

/// Marks a saga stuck: it has waited on `step` past its bound. Counted and announced once.
pub async fn mark_stuck(
    tx: &mut Tx,
    id: &str,
    kind: &str,
    order_id: &str,
    step: &str,
    overdue_ms: i64,
    now: Timestamp,
) -> Result<()> {
    sqlx::query("UPDATE sagas SET stuck = 1, last_error = $2, updated_at = $3 WHERE id = $1")
        .bind(id.to_owned())
        .bind(format!("waited on {step} past its bound"))
        .bind(now.to_rfc3339())
        .execute(&mut **tx)
        .await?;
    let event = SagaStuck {
        saga: id.to_owned(),
        kind: kind.to_owned(),
        order: order_id.to_owned(),
        step: step.to_owned(),
        overdue_ms,
    };
    store::outbox::append(tx, &[NewEvent::of(format!("saga:{id}"), &event)], now).await?;
    metrics::counter!("stockroom_sagas_stuck_total", "kind" => kind.to_owned()).increment(1);
    tracing::warn!(saga = id, kind, order = order_id, step, overdue_ms, "a saga is stuck");
    Ok(())
}
