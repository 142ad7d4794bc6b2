//! The warehouse context's one error type. The API maps it to problem documents in one place.

use serde::{Deserialize, Serialize};
use store::StoreError;
use store::batch::ExecutorError;

/// A line that could not be held or moved: what was asked and what was there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ShortLine {
    pub sku: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warehouse: Option<String>,
    pub requested: i64,
    pub available: i64,
    /// Why nothing (or less) is available beyond the figures, when there is a reason to
    /// give: `warehouse_inactive` for a line naming an inactive warehouse.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reason: Option<String>,
}

/// One field of a request and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldIssue {
    pub field: String,
    pub message: String,
}

impl FieldIssue {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

/// Field issues gathered while checking a request, so that one refusal names them all.
#[derive(Debug, Default)]
pub(crate) struct Issues(Vec<FieldIssue>);

impl Issues {
    pub(crate) fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldIssue::new(field, message));
    }

    /// The value of a check; a field refusal is kept (and `None` returned), any other error
    /// is passed on.
    pub(crate) fn keep<T>(&mut self, checked: crate::Result<T>) -> crate::Result<Option<T>> {
        match checked {
            Ok(value) => Ok(Some(value)),
            Err(WarehouseError::Invalid { field, message }) => {
                self.0.push(FieldIssue { field, message });
                Ok(None)
            }
            Err(WarehouseError::InvalidFields(issues)) => {
                self.0.extend(issues);
                Ok(None)
            }
            Err(other) => Err(other),
        }
    }

    pub(crate) fn into_vec(self) -> Vec<FieldIssue> {
        self.0
    }

    /// Refuses with every issue, if any.
    pub(crate) fn finish(self) -> crate::Result<()> {
        if self.0.is_empty() { Ok(()) } else { Err(WarehouseError::invalid_all(self.0)) }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WarehouseError {
    /// The resource the caller addressed does not exist.
    #[error("{what} {key} not found")]
    NotFound { what: &'static str, key: String },
    /// A field of the request names something that does not exist or breaks a rule that
    /// only the database can check (an unknown SKU in a line, say).
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// Like [`WarehouseError::Invalid`], for several fields at once.
    #[error("{}", .0.iter().map(|i| format!("{}: {}", i.field, i.message)).collect::<Vec<_>>().join("; "))]
    InvalidFields(Vec<FieldIssue>),
    /// The thing to create exists already.
    #[error("{0}")]
    Conflict(String),
    /// Not enough available stock; nothing was changed.
    #[error("insufficient stock")]
    InsufficientStock { lines: Vec<ShortLine> },
    /// The state of the resource (`what`: a reservation, a count, an alert) does not allow
    /// the action.
    #[error("{what} is {from}, cannot {action}")]
    InvalidState { what: &'static str, from: String, action: &'static str },
    /// A receipt or transfer would take a warehouse or bin above its capacity; nothing was
    /// changed.
    #[error("{0}")]
    CapacityExceeded(String),
    /// Stock kept changing under a guarded update more often than we retry; nothing was
    /// changed and the request may be retried.
    #[error("too much contention on {0}, retry")]
    Contention(String),
    /// The reservation queue is full; nothing was changed and the request may be retried.
    #[error("too many requests are waiting; retry shortly")]
    Overloaded,
    /// The server is stopping; nothing was changed.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// An idempotency key was used before with a different request; nothing was changed.
    #[error("the idempotency key was used before with a different request")]
    IdempotencyKeyReused,
    /// A refusal given before under the same idempotency key, answered again.
    #[error("{0:?}")]
    Refused(Refusal),
    /// Applying the batch this request was in panicked; nothing was changed.
    #[error("the request failed unexpectedly; nothing was changed")]
    Panicked,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A lasting refusal (one a retry would get again) in the form stored with an idempotency
/// key and replayed. The API renders a fresh refusal and its replay through this one type,
/// so both answer alike.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "refusal", rename_all = "snake_case")]
pub enum Refusal {
    NotFound { what: String, key: String },
    Invalid { field: String, message: String },
    InvalidFields { errors: Vec<FieldIssue> },
    Conflict { detail: String },
    InsufficientStock { lines: Vec<ShortLine> },
    InvalidState { what: String, from: String, action: String },
    CapacityExceeded { detail: String },
}

impl From<ExecutorError> for WarehouseError {
    fn from(error: ExecutorError) -> Self {
        match error {
            ExecutorError::Overloaded => WarehouseError::Overloaded,
            ExecutorError::ShuttingDown => WarehouseError::ShuttingDown,
            ExecutorError::Panicked => WarehouseError::Panicked,
            ExecutorError::KeyReused => WarehouseError::IdempotencyKeyReused,
        }
    }
}

impl From<sqlx::Error> for WarehouseError {
    fn from(e: sqlx::Error) -> Self {
        WarehouseError::Store(StoreError::Database(e))
    }
}

impl WarehouseError {
    /// The lasting form of this error, if it is a refusal a retry would get again.
    pub fn refusal(&self) -> Option<Refusal> {
        Some(match self {
            WarehouseError::NotFound { what, key } => Refusal::NotFound { what: (*what).to_owned(), key: key.clone() },
            WarehouseError::Invalid { field, message } => {
                Refusal::Invalid { field: field.clone(), message: message.clone() }
            }
            WarehouseError::InvalidFields(issues) => Refusal::InvalidFields { errors: issues.clone() },
            WarehouseError::Conflict(detail) => Refusal::Conflict { detail: detail.clone() },
            WarehouseError::InsufficientStock { lines } => Refusal::InsufficientStock { lines: lines.clone() },
            WarehouseError::InvalidState { what, from, action } => {
                Refusal::InvalidState { what: (*what).to_owned(), from: from.clone(), action: (*action).to_owned() }
            }
            WarehouseError::CapacityExceeded(detail) => Refusal::CapacityExceeded { detail: detail.clone() },
            WarehouseError::Refused(refusal) => refusal.clone(),
            WarehouseError::Contention(_)
            | WarehouseError::Overloaded
            | WarehouseError::ShuttingDown
            | WarehouseError::IdempotencyKeyReused
            | WarehouseError::Panicked
            | WarehouseError::Store(_) => return None,
        })
    }

    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        WarehouseError::Invalid { field: field.into(), message: message.into() }
    }

    /// A refusal naming each of `issues` (one: [`WarehouseError::Invalid`]).
    pub fn invalid_all(mut issues: Vec<FieldIssue>) -> Self {
        if issues.len() == 1 {
            let FieldIssue { field, message } = issues.remove(0);
            WarehouseError::Invalid { field, message }
        } else {
            WarehouseError::InvalidFields(issues)
        }
    }
}
