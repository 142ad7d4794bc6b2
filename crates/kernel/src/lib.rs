//! Stockroom's shared vocabulary.
//!
//! Every context speaks in these types: codes and ids that cannot hold a bad value
//! ([`SkuCode`], [`WarehouseCode`], [`ReservationId`]), [`Quantity`], the [`Clock`], the named
//! [`limits`], pagination and the event record that goes into the outbox. Nothing here knows
//! about SQL or HTTP, so every other crate can depend on it.

pub mod clock;
pub mod codes;
pub mod event;
pub mod limits;
pub mod money;
pub mod page;
pub mod quantity;

pub use clock::{Clock, FakeClock, SystemClock, Timestamp};
pub use codes::{ChannelCode, CodeError, ProductHandle, ReservationId, SkuCode, WarehouseCode};
pub use event::{Event, EventRegistry, EventType, NewEvent};
pub use money::{Currency, MoneyError};
pub use page::{Page, PageRequest};
pub use quantity::{Quantity, QuantityError};
