//! The order context's one error type. Lasting refusals take the warehouse's stored form
//! ([`Refusal`]), so a refusal and its replay under an idempotency key render alike.

use catalog::CatalogError;
use store::StoreError;
use store::batch::ExecutorError;
use warehouse::{FieldIssue, Refusal, ShortLine, WarehouseError};

#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    /// A refusal a retry would get again: not found, invalid, conflict, insufficient stock,
    /// invalid state. Nothing was changed.
    #[error("{0:?}")]
    Refused(Refusal),
    /// A dependency did not answer; nothing was changed and the request may be retried.
    #[error("{0}")]
    Unavailable(String),
    /// The checkout queue is full or the server is stopping; nothing was changed.
    #[error(transparent)]
    Executor(#[from] ExecutorError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Warehouse(#[from] WarehouseError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

impl OrderError {
    pub fn not_found(what: &str, key: impl Into<String>) -> Self {
        OrderError::Refused(Refusal::NotFound { what: what.to_owned(), key: key.into() })
    }

    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        OrderError::Refused(Refusal::Invalid { field: field.into(), message: message.into() })
    }

    /// Several bad fields at once (one stays the single form).
    pub fn invalid_fields(mut issues: Vec<FieldIssue>) -> Self {
        if issues.len() == 1 {
            let issue = issues.remove(0);
            return Self::invalid(issue.field, issue.message);
        }
        OrderError::Refused(Refusal::InvalidFields { errors: issues })
    }

    pub fn conflict(detail: impl Into<String>) -> Self {
        OrderError::Refused(Refusal::Conflict { detail: detail.into() })
    }

    pub fn invalid_state(what: &str, from: &str, action: &str) -> Self {
        OrderError::Refused(Refusal::InvalidState {
            what: what.to_owned(),
            from: from.to_owned(),
            action: action.to_owned(),
        })
    }

    pub fn insufficient(lines: Vec<ShortLine>) -> Self {
        OrderError::Refused(Refusal::InsufficientStock { lines })
    }

    /// The lasting form to store with an idempotency key, if this is one.
    pub fn refusal(&self) -> Option<Refusal> {
        match self {
            OrderError::Refused(r) => Some(r.clone()),
            OrderError::Warehouse(e) => e.refusal(),
            _ => None,
        }
    }
}

pub fn issue(field: impl Into<String>, message: impl Into<String>) -> FieldIssue {
    FieldIssue { field: field.into(), message: message.into() }
}

impl From<sqlx::Error> for OrderError {
    fn from(error: sqlx::Error) -> Self {
        OrderError::Store(StoreError::Database(error))
    }
}
