//! The warehouse context: what is physically where, and who may take it.
//!
//! It owns items (SKUs as physical goods), warehouses, stock levels, reservations and the
//! movement ledger. Its invariants, held at every instant on both databases:
//!
//! - `0 <= reserved <= on_hand` for every stock level (checked in the guarded `UPDATE`s and
//!   backed by the `stock_reserved_*` CHECK constraints);
//! - for every warehouse and SKU, the sums of the ledger's deltas equal the stock level
//!   (every change writes its movement in the same transaction, see [`ledger::Journal`]);
//! - reserved equals the sum of the lines of active and confirmed reservations.
//!
//! Use cases take the caller's [`store::Tx`] and the current time; reads take a pool. Nothing
//! here knows about HTTP.

pub mod adjustment;
pub mod alert;
pub mod bin;
pub mod count;
pub mod error;
pub mod import;
pub mod item;
pub mod ledger;
pub mod lot;
pub mod receipt;
pub mod reconcile;
pub mod reservation;
pub mod site;
pub mod stock;
pub mod transfer;

pub use error::{ShortLine, WarehouseError};

pub type Result<T, E = WarehouseError> = std::result::Result<T, E>;
