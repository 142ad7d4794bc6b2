//! The catalog context's events: one payload type each, with its type name and version.
//! [`event_types`] is what the context registers (`GET /v1/event-types`).

use kernel::{EventType, event};
use schemars::JsonSchema;
use serde::Serialize;

pub fn event_types() -> Vec<EventType> {
    vec![
        EventType::of::<ChannelCreated>(),
        EventType::of::<ChannelUpdated>(),
        EventType::of::<ShippingRatesUpdated>(),
        EventType::of::<ProductCreated>(),
        EventType::of::<ProductUpdated>(),
        EventType::of::<PriceChanged>(),
    ]
}

/// A channel as its events show it.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct ChannelState {
    pub code: String,
    pub name: String,
    pub currency: String,
    pub country: String,
    /// In the channel's order of priority.
    pub warehouses: Vec<String>,
    pub sourcing: String,
    /// In the channel's currency's minor units.
    pub split_penalty_minor: i64,
    pub cart_hold_ttl_seconds: i64,
    pub checkout_hold_ttl_seconds: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct ChannelCreated(pub ChannelState);
event!(ChannelCreated, "channel.created", 1, "A sales channel was created.");

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct ChannelUpdated(pub ChannelState);
event!(ChannelUpdated, "channel.updated", 1, "A sales channel changed: its warehouses, rules or name.");

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct ShippingRateState {
    pub country: String,
    pub currency: String,
    pub base_minor: i64,
    pub per_kg_minor: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct ShippingRatesUpdated {
    pub warehouse: String,
    pub rates: Vec<ShippingRateState>,
}
event!(ShippingRatesUpdated, "shipping_rates.updated", 1, "A warehouse's shipping rates were replaced.");

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct VariantState {
    pub sku: String,
    pub options: serde_json::Map<String, serde_json::Value>,
    pub backorder: bool,
}

/// A product as its events show it.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct ProductState {
    pub handle: String,
    pub name: String,
    pub description: Option<String>,
    pub category: Option<String>,
    pub attributes: serde_json::Map<String, serde_json::Value>,
    pub variants: Vec<VariantState>,
}

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct ProductCreated(pub ProductState);
event!(ProductCreated, "product.created", 1, "A product and its variants were created.");

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct ProductUpdated {
    #[serde(flatten)]
    pub product: ProductState,
    /// SKUs that were variants of the product before this change and are no longer.
    pub removed_skus: Vec<String>,
}
event!(ProductUpdated, "product.updated", 1, "A product changed: its text, category, attributes or variants.");

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct PriceChanged {
    pub sku: String,
    pub channel: String,
    pub currency: String,
    pub amount_minor: i64,
    pub compare_at_minor: Option<i64>,
    /// The price before this change; `null` for the first price.
    pub previous_amount_minor: Option<i64>,
}
event!(PriceChanged, "price.changed", 1, "A SKU's price in a channel was set.");
