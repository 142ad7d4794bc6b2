//! The transactional outbox: events written in the same transaction as the change they
//! describe, read back by `GET /v1/events` and, later, relayed to NATS and webhooks.
//!
//! # Why readers never miss an event
//!
//! On PostgreSQL a plain sequence is not enough: transaction A can take `seq = 5`, transaction
//! B `seq = 6`, and B commit first; a reader that saw 6 and then polls `after=6` never sees 5.
//! Here every appending transaction first bumps the single `event_sequence` row. That row lock
//! is held until commit, so transactions take their `seq` ranges in commit order: when a
//! reader can see `seq = n`, every `seq < n` is already committed. The same lock orders the
//! per-aggregate counters (`aggregate_heads`). The cost is that appends serialize from that
//! point to commit; use cases therefore append last, and group commit amortizes it over
//! many requests. On SQLite there is one writer anyway.

use crate::sql::Values;
use crate::{StoreError, Tx};
use kernel::{NewEvent, Timestamp};
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row};
use std::collections::HashMap;

/// An event as stored and as served by the event feed.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct StoredEvent {
    pub seq: i64,
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub aggregate: String,
    pub aggregate_seq: i64,
    pub at: String,
    /// Version of the payload's schema (`GET /v1/event-types`).
    pub version: i64,
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

/// Decodes a row of `SELECT seq, id, event_type, aggregate, aggregate_seq, at, version, data`.
/// A row that does not decode is an error, never skipped.
pub fn decode_row(row: &AnyRow) -> Result<StoredEvent, StoreError> {
    let seq: i64 = row.try_get(0)?;
    let data: String = row.try_get(7)?;
    Ok(StoredEvent {
        seq,
        id: row.try_get(1)?,
        event_type: row.try_get(2)?,
        aggregate: row.try_get(3)?,
        aggregate_seq: row.try_get(4)?,
        at: row.try_get(5)?,
        version: row.try_get(6)?,
        data: serde_json::from_str(&data).map_err(|e| StoreError::Corrupt(format!("event {seq}: data: {e}")))?,
    })
}

/// Takes the sequence lock (see the module docs) and reserves `count` global sequence numbers;
/// returns the first. With `count = 0` it only takes the lock.
pub async fn lock_sequence(tx: &mut Tx, count: i64) -> Result<i64, StoreError> {
    let last: i64 =
        sqlx::query_scalar("UPDATE event_sequence SET last_seq = last_seq + $1 WHERE id = 1 RETURNING last_seq")
            .bind(count)
            .fetch_one(&mut **tx)
            .await?;
    Ok(last - count + 1)
}

/// Appends `events` in order. Call it last in a transaction: it holds the sequence lock until
/// commit.
pub async fn append(tx: &mut Tx, events: &[NewEvent], at: Timestamp) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    let first_seq = lock_sequence(tx, events.len() as i64).await?;

    // Per-aggregate counters, bumped once per aggregate with one multi-row upsert.
    let mut per_aggregate: Vec<(&str, i64)> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    for event in events {
        let i = *index.entry(event.aggregate.as_str()).or_insert_with(|| {
            per_aggregate.push((event.aggregate.as_str(), 0));
            per_aggregate.len() - 1
        });
        per_aggregate[i].1 += 1;
    }
    let mut next_aggregate_seq: HashMap<String, i64> = HashMap::with_capacity(per_aggregate.len());
    for chunk in crate::sql::fixed_chunks(&per_aggregate) {
        let mut values = Values::new(tx, 2);
        for (aggregate, count) in chunk {
            values.row().text(*aggregate).int(*count);
        }
        let query = values.query(
            "INSERT INTO aggregate_heads (aggregate, last_seq) VALUES {values} \
             ON CONFLICT (aggregate) DO UPDATE SET last_seq = aggregate_heads.last_seq + excluded.last_seq \
             RETURNING aggregate, last_seq",
        );
        for row in query.fetch_all(&mut **tx).await? {
            let aggregate: String = row.try_get(0)?;
            let last: i64 = row.try_get(1)?;
            let count = index
                .get(aggregate.as_str())
                .map(|i| per_aggregate[*i].1)
                .ok_or_else(|| StoreError::Corrupt(format!("unexpected aggregate {aggregate}")))?;
            next_aggregate_seq.insert(aggregate, last - count + 1);
        }
    }

    let at = at.to_rfc3339();
    let mut seq = first_seq;
    for chunk in crate::sql::fixed_chunks(events) {
        let mut values = Values::new(tx, 8);
        for event in chunk {
            let aggregate_seq = next_aggregate_seq
                .get_mut(&event.aggregate)
                .ok_or_else(|| StoreError::Corrupt("aggregate head missing".into()))?;
            values
                .row()
                .int(seq)
                .text(format!("evt_{}", uuid::Uuid::now_v7().simple()))
                .text(event.event_type)
                .text(event.aggregate.as_str())
                .int(*aggregate_seq)
                .text(at.as_str())
                .int(i64::from(event.version))
                .text(event.data.to_string());
            *aggregate_seq += 1;
            seq += 1;
        }
        values
            .query(
                "INSERT INTO events (seq, id, event_type, aggregate, aggregate_seq, at, version, data) VALUES {values}",
            )
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Events with `seq > after`, oldest first.
pub async fn events_after(pool: &AnyPool, after: i64, limit: u32) -> Result<Vec<StoredEvent>, StoreError> {
    let rows = sqlx::query(
        "SELECT seq, id, event_type, aggregate, aggregate_seq, at, version, data FROM events \
         WHERE seq > $1 ORDER BY seq LIMIT $2",
    )
    .bind(after)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    rows.iter().map(decode_row).collect()
}

/// The latest committed `seq` (0 when none): every event up to it is committed and visible.
pub async fn committed_head(pool: &AnyPool) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar("SELECT last_seq FROM event_sequence WHERE id = 1").fetch_one(pool).await?)
}

/// [`committed_head`] inside `tx`.
pub async fn committed_head_in(tx: &mut Tx) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar("SELECT last_seq FROM event_sequence WHERE id = 1").fetch_one(&mut **tx).await?)
}

/// The latest committed `seq` (0 when there is none). Appends take their `seq`s in commit
/// order (see the module docs), so every event up to it is visible once it is.
pub async fn events_head(pool: &AnyPool) -> Result<i64, StoreError> {
    let head: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM events").fetch_one(pool).await?;
    Ok(head.unwrap_or(0))
}

/// Which events a reader wants: types by exact name or by prefix (`order.` for `order.*`),
/// and one aggregate. Empty lists and `None` match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    pub types: Vec<String>,
    /// Each ends with `.`: `order.` matches `order.created`, not `orders.x`.
    pub type_prefixes: Vec<String>,
    pub aggregate: Option<String>,
}

impl EventFilter {
    pub fn is_empty(&self) -> bool {
        self.types.is_empty() && self.type_prefixes.is_empty() && self.aggregate.is_none()
    }
}

/// Events with `after < seq <= through` that match `filter`, oldest first, at most `limit`.
pub async fn events_matching(
    pool: &AnyPool,
    after: i64,
    through: i64,
    filter: &EventFilter,
    limit: u32,
) -> Result<Vec<StoredEvent>, StoreError> {
    let mut sql = String::from(
        "SELECT seq, id, event_type, aggregate, aggregate_seq, at, version, data FROM events \
         WHERE seq > $1 AND seq <= $2",
    );
    let mut texts: Vec<String> = Vec::new();
    let mut type_terms: Vec<String> = Vec::new();
    if !filter.types.is_empty() {
        let first = 3 + texts.len();
        type_terms.push(format!("event_type IN ({})", crate::sql::list_placeholders(filter.types.len(), first)));
        texts.extend(filter.types.iter().cloned());
    }
    for prefix in &filter.type_prefixes {
        // substr, not LIKE: `_` in a type name is no wildcard.
        let n = 3 + texts.len();
        type_terms.push(format!("substr(event_type, 1, {}) = ${n}", prefix.chars().count()));
        texts.push(prefix.clone());
    }
    if !type_terms.is_empty() {
        sql.push_str(&format!(" AND ({})", type_terms.join(" OR ")));
    }
    if let Some(aggregate) = &filter.aggregate {
        sql.push_str(&format!(" AND aggregate = ${}", 3 + texts.len()));
        texts.push(aggregate.clone());
    }
    sql.push_str(&format!(" ORDER BY seq LIMIT ${}", 3 + texts.len()));
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(after).bind(through);
    for text in texts {
        query = query.bind(text);
    }
    let rows = query.bind(i64::from(limit)).fetch_all(pool).await?;
    rows.iter().map(decode_row).collect()
}
