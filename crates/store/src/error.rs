//! The store's error type.

/// A database failure. Business errors are the contexts' own; this is only "the database
/// said no" or "the database is not there".
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// An error on the direct SQLite writer ([`crate::direct`]).
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("unsupported database URL {0:?}: use sqlite://PATH or postgres://...")]
    UnsupportedUrl(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The database to work on is not there, or not migrated.
    #[error("{0}")]
    Missing(String),
}

impl StoreError {
    /// The name of the constraint a write broke, if that is what happened.
    pub fn constraint(&self) -> Option<&str> {
        match self {
            StoreError::Database(e) => constraint_of(e),
            _ => None,
        }
    }

    /// A lock conflict the caller may retry: PostgreSQL deadlock or serialization failure,
    /// SQLite busy.
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Database(e) => is_retryable(e),
            StoreError::Sqlite(e) => matches!(
                e.sqlite_error_code(),
                Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
            ),
            _ => false,
        }
    }

    /// The database could not be reached or the connection broke: nothing was committed by
    /// this request, and it may be retried once the database is back.
    pub fn is_unreachable(&self) -> bool {
        match self {
            StoreError::Database(e) => is_unreachable(e),
            _ => false,
        }
    }
}

/// A connection that could not be made or was lost: pool timeouts, I/O and TLS failures, and
/// the protocol errors a connection cut mid-handshake gives (e.g. the server's side closing
/// before it answers the SSL request).
pub fn is_unreachable(error: &sqlx::Error) -> bool {
    matches!(
        error,
        sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::WorkerCrashed
    )
}

/// The constraint named by a database error. SQLite reports CHECK failures as
/// `CHECK constraint failed: name` and does not fill in `constraint()`.
pub fn constraint_of(error: &sqlx::Error) -> Option<&str> {
    let db = error.as_database_error()?;
    if let Some(name) = db.constraint() {
        return Some(name);
    }
    db.message().strip_prefix("CHECK constraint failed: ")
}

pub fn is_unique_violation(error: &sqlx::Error) -> bool {
    error.as_database_error().is_some_and(|db| db.is_unique_violation())
}

pub fn is_retryable(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .is_some_and(|db| matches!(db.code().as_deref(), Some("40P01" | "40001" | "5" | "6" | "517")))
}
