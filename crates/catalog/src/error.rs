//! The catalog context's one error type. The API maps it to problem documents in one place.

use store::StoreError;
use warehouse::WarehouseError;

/// One bad field of a request and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldProblem {
    pub field: String,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The resource the caller addressed does not exist.
    #[error("{what} {key} not found")]
    NotFound { what: &'static str, key: String },
    /// Fields of the request name things that do not exist or break a rule only the database
    /// can check; every such field is listed.
    #[error("invalid request: {0:?}")]
    Invalid(Vec<FieldProblem>),
    /// The thing to create exists already, or belongs to something else.
    #[error("{0}")]
    Conflict(String),
    /// The stock source did not answer in time and nothing cached could stand in for it.
    #[error("{0}")]
    Unavailable(String),
    /// The in-process search index failed (tantivy); the database is untouched.
    #[error("search index: {0}")]
    SearchIndex(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Warehouse(#[from] WarehouseError),
}

impl CatalogError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        CatalogError::Invalid(vec![FieldProblem { field: field.into(), message: message.into() }])
    }
}

impl From<sqlx::Error> for CatalogError {
    fn from(error: sqlx::Error) -> Self {
        CatalogError::Store(StoreError::Database(error))
    }
}
