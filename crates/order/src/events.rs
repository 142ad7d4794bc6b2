//! The order context's events: one payload type each, with its type name and version.
//! [`event_types`] is what the context registers (`GET /v1/event-types`). Amounts are in the
//! order's currency's minor units.

use kernel::{EventType, event};
use schemars::JsonSchema;
use serde::Serialize;

pub fn event_types() -> Vec<EventType> {
    vec![
        EventType::of::<OrderCreated>(),
        EventType::of::<OrderPaid>(),
        EventType::of::<OrderCancelled>(),
        EventType::of::<OrderFulfilled>(),
        EventType::of::<OrderDelivered>(),
        EventType::of::<BackorderAllocated>(),
        EventType::of::<PaymentRecorded>(),
        EventType::of::<RefundRequested>(),
        EventType::of::<FulfillmentRequested>(),
        EventType::of::<PromotionSaved>(),
        EventType::of::<SagaStuck>(),
    ]
}

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct OrderLineState {
    pub sku: String,
    pub quantity: i64,
    pub unit_price_minor: i64,
    pub discount_minor: i64,
    pub allocated: i64,
    pub backordered: i64,
    pub cancelled: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct OrderCreated {
    pub order: String,
    pub channel: String,
    pub customer: Option<String>,
    pub currency: String,
    pub total_minor: i64,
    pub lines: Vec<OrderLineState>,
    pub promotions: Vec<String>,
}
event!(OrderCreated, "order.created", 1, "An order was placed at checkout, its stock and promotion uses held.");

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct OrderPaid {
    pub order: String,
    pub paid_minor: i64,
    pub total_minor: i64,
}
event!(
    OrderPaid,
    "order.paid",
    1,
    "Payments cover an order's total: its holds are confirmed and fulfilment requested."
);

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct OrderFulfilled {
    pub order: String,
}
event!(OrderFulfilled, "order.fulfilled", 1, "Every requested fulfilment of a paid order has shipped.");

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct OrderDelivered {
    pub order: String,
}
event!(OrderDelivered, "order.delivered", 1, "Every fulfilment of an order has been delivered.");

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct OrderCancelled {
    pub order: String,
    /// `requested`, `payment_failed` or `hold_expired`.
    pub reason: String,
    /// The status it was cancelled from.
    pub from: String,
}
event!(OrderCancelled, "order.cancelled", 1, "An order was cancelled: its holds and promotion uses were released.");

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct BackorderAllocated {
    pub order: String,
    pub sku: String,
    pub warehouse: String,
    pub quantity: i64,
    /// Still backordered after this allocation.
    pub backordered: i64,
}
event!(BackorderAllocated, "order.backorder_allocated", 1, "Arrived stock was held for a backordered order line.");

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct PaymentRecorded {
    pub order: String,
    pub provider: String,
    pub reference: String,
    pub status: String,
    pub amount_minor: i64,
    pub currency: String,
}
event!(PaymentRecorded, "payment.recorded", 1, "The payment integration reported a payment event for an order.");

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct RefundRequested {
    pub order: String,
    pub amount_minor: i64,
    pub currency: String,
    /// The payments to refund: provider and reference.
    pub payments: Vec<(String, String)>,
}
event!(
    RefundRequested,
    "payment.refund_requested",
    1,
    "A paid order was cancelled, or units of it came back: the payment integration should refund the amount."
);

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct FulfillmentLineState {
    pub sku: String,
    pub quantity: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct FulfillmentRequested {
    pub fulfillment: String,
    pub order: String,
    pub warehouse: String,
    pub lines: Vec<FulfillmentLineState>,
}
event!(FulfillmentRequested, "fulfillment.requested", 1, "A paid order asks a warehouse to ship its allocated lines.");

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct PromotionSaved {
    pub code: String,
    pub channel: String,
    pub kind: String,
    pub usage_limit: Option<i64>,
    pub per_customer_limit: Option<i64>,
}
event!(PromotionSaved, "promotion.saved", 1, "A promotion was created or changed.");

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct SagaStuck {
    pub saga: String,
    pub kind: String,
    pub order: String,
    pub step: String,
    pub overdue_ms: i64,
}
event!(SagaStuck, "saga.stuck", 1, "A saga has waited on a step past its bound (a refund never reported, say).");
