//! The fulfillment context's events, aggregate `fulfillment:<id>` (returns: `return:<id>`).

use kernel::{EventType, event};
use schemars::JsonSchema;
use serde::Serialize;

pub fn event_types() -> Vec<EventType> {
    vec![
        EventType::of::<FulfillmentShipped>(),
        EventType::of::<FulfillmentDelivered>(),
        EventType::of::<ReturnReceived>(),
        EventType::of::<FulfillmentStatusChanged>(),
    ]
}

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct ShippedLine {
    pub sku: String,
    pub quantity: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct FulfillmentShipped {
    pub fulfillment: String,
    pub order: String,
    pub warehouse: String,
    pub carrier: String,
    pub tracking: String,
    pub lines: Vec<ShippedLine>,
}
event!(FulfillmentShipped, "fulfillment.shipped", 1, "A fulfilment left its warehouse: its stock was consumed.");

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct FulfillmentDelivered {
    pub fulfillment: String,
    pub order: String,
    pub warehouse: String,
}
event!(FulfillmentDelivered, "fulfillment.delivered", 1, "A shipped fulfilment reached the customer.");

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct ReturnedLine {
    pub sku: String,
    pub quantity: i64,
    /// `sellable`, `damaged` or `defective`.
    pub condition: String,
}

/// Aggregate `return:<id>`.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct ReturnReceived {
    pub r#return: String,
    pub order: String,
    pub customer: Option<String>,
    pub warehouse: String,
    pub lines: Vec<ReturnedLine>,
}
event!(
    ReturnReceived,
    "return.received",
    1,
    "A customer's return arrived: its units went back to stock, to quarantine or to scrap, and their refund was requested."
);

/// A fulfilment moved short of shipping: `picking`, `picked`, `packed`, `on_hold` or
/// `cancelled` (shipping and delivery have their own events).
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct FulfillmentStatusChanged {
    pub fulfillment: String,
    pub order: String,
    pub warehouse: String,
    pub from: String,
    pub to: String,
    /// Why it is `on_hold` or `cancelled`, when it is.
    pub hold_reason: Option<String>,
}
event!(
    FulfillmentStatusChanged,
    "fulfillment.status_changed",
    1,
    "A fulfilment was picked, packed, held or cancelled (shipping and delivery have their own events)."
);

/// The event of `fulfillment` moving from `from` to `to`.
pub fn status_changed(
    fulfillment: &crate::record::Fulfillment,
    to: crate::record::FulfillmentStatus,
    hold_reason: Option<&str>,
) -> kernel::NewEvent {
    kernel::NewEvent::of(
        format!("fulfillment:{}", fulfillment.id),
        &FulfillmentStatusChanged {
            fulfillment: fulfillment.id.clone(),
            order: fulfillment.order.clone(),
            warehouse: fulfillment.warehouse.clone(),
            from: fulfillment.status.as_str().to_owned(),
            to: to.as_str().to_owned(),
            hold_reason: hold_reason.map(str::to_owned),
        },
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_type_is_registered_once_with_a_schema_of_an_object() {
        let mut registry = kernel::EventRegistry::default();
        registry.register(super::event_types()).unwrap();
        assert_eq!(registry.types().len(), 4);
        for t in registry.types() {
            assert_eq!(t.schema()["type"], "object", "{}", t.name);
        }
    }
}
