//! Running a write use case under an optional `Idempotency-Key`, in one transaction.

use crate::AppState;
use crate::auth::Principal;
use crate::error::ApiError;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;
use kernel::Timestamp;
use serde::Serialize;
use store::Tx;
use store::idempotency::{Claim, claim, fingerprint, record_refusal, save};

/// Attempts of a transaction that failed on a deadlock or serialization conflict.
const TX_ATTEMPTS_MAX: usize = 3;

/// Longest accepted `Idempotency-Key`.
const IDEMPOTENCY_KEY_CHARS_MAX: usize = 255;

pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(raw) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = raw.to_str().map_err(|_| ApiError::validation("Idempotency-Key", "must be visible ASCII"))?;
    if key.is_empty() || key.len() > IDEMPOTENCY_KEY_CHARS_MAX {
        return Err(ApiError::validation(
            "Idempotency-Key",
            format!("must be 1 to {IDEMPOTENCY_KEY_CHARS_MAX} characters"),
        ));
    }
    Ok(Some(key.to_owned()))
}

/// What a use case answered: a status and a JSON body.
pub struct Answer {
    pub status: StatusCode,
    pub body: String,
}

impl Answer {
    pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Self {
        Self { status, body: serde_json::to_string(value).unwrap_or_default() }
    }
}

/// A stored or fresh answer as a response: JSON, or a problem document for an error status.
pub fn respond(status: StatusCode, body: String) -> Response {
    let content_type = if status.is_success() { "application/json" } else { "application/problem+json" };
    let mut response = (status, body).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// Marks a response as the stored answer of an earlier request under its key.
pub fn mark_replayed(response: &mut Response) {
    response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
}

/// What an idempotency key is unique within: the route and the caller's key.
pub fn idempotency_scope(route: &str, principal: &Principal) -> String {
    format!("{route} {}", principal.key_id)
}

/// Runs `work` in a transaction. With an idempotency key, the first answer (success or
/// refusal) is stored with the key in the same transaction and replayed for repeats; a repeat
/// with a different body is refused. Deadlocks and serialization failures are retried.
pub async fn run_write<F>(
    state: &AppState,
    principal: &Principal,
    route: &'static str,
    headers: &HeaderMap,
    raw_body: &[u8],
    work: F,
) -> Result<Response, ApiError>
where
    F: for<'t> Fn(&'t mut Tx, Timestamp) -> BoxFuture<'t, Result<Answer, ApiError>>,
{
    let key = idempotency_key(headers)?;
    let scope = idempotency_scope(route, principal);
    let print = fingerprint(raw_body);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let now = state.clock.now();
        let mut tx = state.db.begin().await?;
        if let Some(key) = &key {
            match claim(&mut tx, &scope, key, &print, now).await {
                Ok(Claim::Fresh) => {}
                Ok(Claim::Replay { status, body }) => {
                    tx.rollback().await?;
                    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
                    let mut response = respond(status, body);
                    mark_replayed(&mut response);
                    return Ok(response);
                }
                Ok(Claim::Mismatch) => {
                    tx.rollback().await?;
                    return Err(ApiError::idempotency_key_reused());
                }
                // Scopes name the route, and routes through a batch executor never come here.
                Ok(Claim::ReplayOutcome(_)) => {
                    tx.rollback().await?;
                    return Err(
                        store::StoreError::Corrupt(format!("idempotency key {key} holds a batch outcome")).into()
                    );
                }
                Err(e) if e.is_retryable() && attempt < TX_ATTEMPTS_MAX => continue,
                Err(e) => return Err(e.into()),
            }
        }
        let outcome = work(&mut tx, now).await;
        let outcome = match outcome {
            Ok(answer) => {
                if let Some(key) = &key {
                    save(&mut tx, &scope, key, answer.status.as_u16(), &answer.body).await?;
                }
                match tx.commit().await {
                    Ok(()) => Ok(respond(answer.status, answer.body)),
                    Err(e) => Err(ApiError::from(e)),
                }
            }
            Err(refusal) if refusal.is_refusal() => {
                tx.rollback().await?;
                if let Some(key) = &key {
                    let mut tx = state.db.begin().await?;
                    record_refusal(&mut tx, &scope, key, &print, refusal.status.as_u16(), &refusal.body(), now).await?;
                    tx.commit().await?;
                }
                return Err(refusal);
            }
            Err(error) => Err(error),
        };
        match outcome {
            Err(e) if e.code == "unavailable" && attempt < TX_ATTEMPTS_MAX => continue,
            other => return other,
        }
    }
}
