//! Idempotency records: the first response to each `Idempotency-Key`, replayed for repeats.
//!
//! The claim is an `INSERT` into the same transaction as the work it guards: a concurrent
//! request with the same key waits on the unique index until the first commits (PostgreSQL)
//! or on the single writer (SQLite), then finds the saved response. So the work happens once.

use crate::sql::Values;
use crate::{StoreError, Tx};
use kernel::Timestamp;
use sha2::{Digest, Sha256};
use std::collections::HashSet;

/// What a claim found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// First use of the key: do the work, then [`save`] the response in the same transaction.
    Fresh,
    /// The key was used before with the same request: answer with this.
    Replay { status: u16, body: String },
    /// The key was used before with the same request through a batch executor: its typed
    /// outcome, as the executor stored it (see [`save_outcomes`]).
    ReplayOutcome(String),
    /// The key was used before with a different request.
    Mismatch,
}

/// A stable fingerprint of a request body.
pub fn fingerprint(body: &[u8]) -> String {
    let digest = Sha256::digest(body);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Claims `key` within `scope` (the route and the caller) for a request with `fingerprint`.
pub async fn claim(
    tx: &mut Tx,
    scope: &str,
    key: &str,
    fingerprint: &str,
    now: Timestamp,
) -> Result<Claim, StoreError> {
    let inserted = sqlx::query(
        "INSERT INTO idempotency_keys (scope, idem_key, fingerprint, status, body, created_at_ms) \
         VALUES ($1, $2, $3, NULL, NULL, $4) ON CONFLICT (scope, idem_key) DO NOTHING",
    )
    .bind(scope.to_owned())
    .bind(key.to_owned())
    .bind(fingerprint.to_owned())
    .bind(now.millis())
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if inserted == 1 {
        return Ok(Claim::Fresh);
    }
    let (stored_fingerprint, status, body, outcome): (String, Option<i64>, Option<String>, Option<String>) =
        sqlx::query_as(
            "SELECT fingerprint, status, body, outcome FROM idempotency_keys WHERE scope = $1 AND idem_key = $2",
        )
        .bind(scope.to_owned())
        .bind(key.to_owned())
        .fetch_one(&mut **tx)
        .await?;
    if stored_fingerprint != fingerprint {
        return Ok(Claim::Mismatch);
    }
    match (status, body, outcome) {
        (_, _, Some(outcome)) => Ok(Claim::ReplayOutcome(outcome)),
        (Some(status), Some(body), None) => Ok(Claim::Replay { status: status as u16, body }),
        // Only possible if a claim was committed without its response, which the API never does.
        _ => Err(StoreError::Corrupt(format!("idempotency key {key} has no saved response"))),
    }
}

/// A key to claim with [`claim_many`]: (scope, key, fingerprint).
pub type KeyClaim<'a> = (&'a str, &'a str, &'a str);

/// [`claim`] for many distinct keys at once: one multi-row `INSERT`, then a look-up of each
/// key that was there already. Answers one [`Claim`] per key, in order.
pub async fn claim_many(tx: &mut Tx, keys: &[KeyClaim<'_>], now: Timestamp) -> Result<Vec<Claim>, StoreError> {
    let mut fresh: HashSet<(String, String)> = HashSet::with_capacity(keys.len());
    for chunk in crate::sql::fixed_chunks(keys) {
        let mut values = Values::new(tx, 4);
        for (scope, key, fingerprint) in chunk {
            values.row().text(*scope).text(*key).text(*fingerprint).int(now.millis());
        }
        let query = values.query_as::<(String, String)>(
            "INSERT INTO idempotency_keys (scope, idem_key, fingerprint, created_at_ms) VALUES {values} \
             ON CONFLICT (scope, idem_key) DO NOTHING RETURNING scope, idem_key",
        );
        fresh.extend(query.fetch_all(&mut **tx).await?);
    }
    let mut claims = Vec::with_capacity(keys.len());
    for (scope, key, fingerprint) in keys {
        if fresh.contains(&(scope.to_string(), key.to_string())) {
            claims.push(Claim::Fresh);
        } else {
            // Used before: the insert above did nothing, so this claim reads what is stored.
            claims.push(claim(tx, scope, key, fingerprint, now).await?);
        }
    }
    Ok(claims)
}

/// Saves the typed outcomes of [`Claim::Fresh`] keys claimed by a batch executor:
/// (scope, key, outcome as JSON), one `UPDATE ... FROM (VALUES ...)` per chunk.
pub async fn save_outcomes(tx: &mut Tx, outcomes: &[(&str, &str, String)]) -> Result<(), StoreError> {
    for chunk in crate::sql::fixed_chunks(outcomes) {
        let mut values = Values::new(tx, 3);
        for (scope, key, outcome) in chunk {
            values.row().text(*scope).text(*key).text(outcome.as_str());
        }
        // `VALUES` columns are column1.. on both databases.
        values
            .query(
                "UPDATE idempotency_keys SET outcome = v.column3 FROM (VALUES {values}) AS v \
                 WHERE idempotency_keys.scope = v.column1 AND idempotency_keys.idem_key = v.column2",
            )
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Gives claimed keys back (their request got a passing refusal, such as overload), so a
/// retry with the same key does the work.
pub async fn release_many(tx: &mut Tx, keys: &[(&str, &str)]) -> Result<(), StoreError> {
    for (scope, key) in keys {
        sqlx::query("DELETE FROM idempotency_keys WHERE scope = $1 AND idem_key = $2 AND outcome IS NULL")
            .bind(scope.to_string())
            .bind(key.to_string())
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Saves the response of a [`Claim::Fresh`] key, in the transaction that did the work.
pub async fn save(tx: &mut Tx, scope: &str, key: &str, status: u16, body: &str) -> Result<(), StoreError> {
    sqlx::query("UPDATE idempotency_keys SET status = $1, body = $2 WHERE scope = $3 AND idem_key = $4")
        .bind(i64::from(status))
        .bind(body.to_owned())
        .bind(scope.to_owned())
        .bind(key.to_owned())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Records a refusal (a 4xx outcome whose transaction was rolled back) so that a repeat gets
/// the same answer. Uses its own transaction; a concurrent first use of the key wins.
pub async fn record_refusal(
    tx: &mut Tx,
    scope: &str,
    key: &str,
    fingerprint: &str,
    status: u16,
    body: &str,
    now: Timestamp,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO idempotency_keys (scope, idem_key, fingerprint, status, body, created_at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (scope, idem_key) DO NOTHING",
    )
    .bind(scope.to_owned())
    .bind(key.to_owned())
    .bind(fingerprint.to_owned())
    .bind(i64::from(status))
    .bind(body.to_owned())
    .bind(now.millis())
    .execute(&mut **tx)
    .await?;
    Ok(())
}
