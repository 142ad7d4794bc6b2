//! The event record a use case appends to the outbox.

use serde_json::Value;

/// An event before the outbox gives it its global `seq` and its `aggregate_seq`.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// Dotted type, e.g. `stock.changed`, `reservation.created`.
    pub event_type: &'static str,
    /// The aggregate the event belongs to, e.g. `stock:BER-1:SKU` or `reservation:res_...`.
    pub aggregate: String,
    pub data: Value,
}
