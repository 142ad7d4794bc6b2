//! Stockroom's database plumbing, with no business rules.
//!
//! - [`Db`] connects to SQLite or PostgreSQL, chosen by the URL, and applies the migrations of
//!   that dialect (`migrations/sqlite`, `migrations/postgres`, embedded at compile time).
//! - [`Tx`] is the one transaction type: use cases take `&mut Tx` so the caller owns the
//!   transaction boundary.
//! - [`outbox`] appends events with a global `seq` and a per-aggregate `aggregate_seq`, in an
//!   order a reader can trust (see that module for how).
//! - [`idempotency`] keeps the first response to each `Idempotency-Key`.
//! - [`batch`] is the generic batch executor (group commit) every context's hot write path
//!   goes through.
//! - [`subscriber`] is the one way a context consumes the outbox.
//! - [`sql`] speaks the two dialects: row locks and multi-row `VALUES`.
//! - [`direct`] is SQLite's direct writer: a thread that applies a whole batch with no
//!   hand-off per statement.
//! - [`workers`] records which background workers are up, for `/ready`.

pub mod batch;
pub mod db;
pub mod direct;
pub mod error;
pub mod idempotency;
pub mod outbox;
pub mod sql;
pub mod subscriber;
pub mod workers;

pub use db::{Backend, Db, DbOptions, SqliteSync, Tx};
pub use error::StoreError;
