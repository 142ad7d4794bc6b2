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

use crate::sql::{dynamic, insert_values};
use crate::{StoreError, Tx};
use kernel::limits::INSERT_ROWS_MAX;
use kernel::{NewEvent, Timestamp};
use serde::Serialize;
use sqlx::{AnyPool, FromRow, Row};
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
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

#[derive(FromRow)]
struct EventRow {
    seq: i64,
    id: String,
    event_type: String,
    aggregate: String,
    aggregate_seq: i64,
    at: String,
    data: String,
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
    for chunk in per_aggregate.chunks(INSERT_ROWS_MAX) {
        let sql = format!(
            "INSERT INTO aggregate_heads (aggregate, last_seq) VALUES {} \
             ON CONFLICT (aggregate) DO UPDATE SET last_seq = aggregate_heads.last_seq + excluded.last_seq \
             RETURNING aggregate, last_seq",
            insert_values(tx, chunk.len(), 2)
        );
        let mut query = dynamic(sql);
        for (aggregate, count) in chunk {
            query = query.bind(aggregate.to_string()).bind(*count);
        }
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
    for (chunk_no, chunk) in events.chunks(INSERT_ROWS_MAX).enumerate() {
        let sql = format!(
            "INSERT INTO events (seq, id, event_type, aggregate, aggregate_seq, at, data) VALUES {}",
            insert_values(tx, chunk.len(), 7)
        );
        let mut query = dynamic(sql);
        for (i, event) in chunk.iter().enumerate() {
            let seq = first_seq + (chunk_no * INSERT_ROWS_MAX + i) as i64;
            let aggregate_seq = next_aggregate_seq
                .get_mut(&event.aggregate)
                .ok_or_else(|| StoreError::Corrupt("aggregate head missing".into()))?;
            query = query
                .bind(seq)
                .bind(format!("evt_{}", uuid::Uuid::now_v7().simple()))
                .bind(event.event_type)
                .bind(event.aggregate.clone())
                .bind(*aggregate_seq)
                .bind(at.clone())
                .bind(event.data.to_string());
            *aggregate_seq += 1;
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

/// Events with `seq > after`, oldest first.
pub async fn events_after(pool: &AnyPool, after: i64, limit: u32) -> Result<Vec<StoredEvent>, StoreError> {
    let rows: Vec<EventRow> = sqlx::query_as(
        "SELECT seq, id, event_type, aggregate, aggregate_seq, at, data FROM events \
         WHERE seq > $1 ORDER BY seq LIMIT $2",
    )
    .bind(after)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|r| {
            Ok(StoredEvent {
                seq: r.seq,
                id: r.id,
                event_type: r.event_type,
                aggregate: r.aggregate,
                aggregate_seq: r.aggregate_seq,
                at: r.at,
                data: serde_json::from_str(&r.data).map_err(|e| StoreError::Corrupt(format!("event data: {e}")))?,
            })
        })
        .collect()
}
