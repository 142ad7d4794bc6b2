//! Stockroom's database plumbing, with no business rules.
//!
//! - [`Db`] connects to SQLite or PostgreSQL, chosen by the URL, and applies the migrations of
//!   that dialect (`migrations/sqlite`, `migrations/postgres`, embedded at compile time).
//! - [`Tx`] is the one transaction type: use cases take `&mut Tx` so the caller owns the
//!   transaction boundary.
//! - [`outbox`] appends events with a global `seq` and a per-aggregate `aggregate_seq`, in an
//!   order a reader can trust (see that module for how).
//! - [`idempotency`] keeps the first response to each `Idempotency-Key`.

pub mod db;
pub mod error;
pub mod idempotency;
pub mod outbox;
pub mod sql;

pub use db::{Backend, Db, DbOptions, SqliteSync, Tx};
pub use error::StoreError;
