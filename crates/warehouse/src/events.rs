//! The warehouse context's events: one payload type each, with its type name and version.
//!
//! These are the outbox's wire format, separate from the API's response types: a response
//! field can be renamed without changing an event. Each payload is built from the domain
//! value it describes with a `From` conversion, so the fields are listed once, here.
//! [`event_types`] is what the context registers (`GET /v1/event-types`).

use crate::alert::{Alert, AlertRule};
use crate::item::Item;
use crate::ledger::NewMovement;
use crate::reservation::{Reservation, Status};
use crate::site::Warehouse;
use kernel::{EventType, event};
use schemars::JsonSchema;
use serde::Serialize;

/// Every event type the warehouse context emits.
pub fn event_types() -> Vec<EventType> {
    vec![
        EventType::of::<ItemCreated>(),
        EventType::of::<ItemUpdated>(),
        EventType::of::<WarehouseCreated>(),
        EventType::of::<WarehouseUpdated>(),
        EventType::of::<StockChanged>(),
        EventType::of::<ReservationCreated>(),
        EventType::of::<ReservationExtended>(),
        EventType::of::<ReservationConfirmed>(),
        EventType::of::<ReservationReleased>(),
        EventType::of::<ReservationFulfilled>(),
        EventType::of::<ReservationReduced>(),
        EventType::of::<ReservationExpired>(),
        EventType::of::<LotQuarantined>(),
        EventType::of::<LotReleased>(),
        EventType::of::<LotExpired>(),
        EventType::of::<AlertRuleUpdated>(),
        EventType::of::<AlertRaised>(),
        EventType::of::<AlertAcknowledged>(),
        EventType::of::<AlertResolved>(),
    ]
}

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct ItemCreated {
    pub sku: String,
    pub name: String,
    pub weight_grams: Option<i64>,
    pub track_lots: bool,
    pub created_at: String,
}
event!(ItemCreated, "item.created", 1, "An item (SKU) was created.");

impl From<&Item> for ItemCreated {
    fn from(item: &Item) -> Self {
        Self {
            sku: item.sku.clone(),
            name: item.name.clone(),
            weight_grams: item.weight_grams,
            track_lots: item.track_lots,
            created_at: item.created_at.clone(),
        }
    }
}

/// An item as its events show it after a change.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct ItemUpdated {
    pub sku: String,
    pub name: String,
    pub weight_grams: Option<i64>,
    pub track_lots: bool,
    pub gtin: Option<String>,
    pub archived: bool,
}
event!(ItemUpdated, "item.updated", 1, "An item's name, weight, GTIN, archiving or lot tracking changed.");

impl From<&Item> for ItemUpdated {
    fn from(item: &Item) -> Self {
        Self {
            sku: item.sku.clone(),
            name: item.name.clone(),
            weight_grams: item.weight_grams,
            track_lots: item.track_lots,
            gtin: item.gtin.clone(),
            archived: item.archived,
        }
    }
}

/// A warehouse as its events show it.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct WarehouseState {
    pub code: String,
    pub name: String,
    pub country: Option<String>,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    /// Lower is preferred.
    pub priority: i64,
    pub active: bool,
    pub capacity_units: Option<i64>,
    pub used_units: i64,
    pub created_at: String,
    pub updated_at: String,
}

impl From<&Warehouse> for WarehouseState {
    fn from(w: &Warehouse) -> Self {
        Self {
            code: w.code.clone(),
            name: w.name.clone(),
            country: w.country.clone(),
            latitude: w.latitude,
            longitude: w.longitude,
            priority: w.priority,
            active: w.active,
            capacity_units: w.capacity_units,
            used_units: w.used_units,
            created_at: w.created_at.clone(),
            updated_at: w.updated_at.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(transparent)]
pub struct WarehouseCreated(pub WarehouseState);
event!(WarehouseCreated, "warehouse.created", 1, "A warehouse was created.");

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(transparent)]
pub struct WarehouseUpdated(pub WarehouseState);
event!(
    WarehouseUpdated,
    "warehouse.updated",
    1,
    "A warehouse's name, priority, location, activity or capacity changed."
);

/// One movement of the ledger and the stock level after it.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct StockChanged {
    pub warehouse: String,
    pub sku: String,
    /// The movement's kind: `receipt`, `adjustment`, `reserve`, `fulfill`, `release`, ...
    pub kind: String,
    pub on_hand_delta: i64,
    pub reserved_delta: i64,
    pub on_hand: i64,
    pub reserved: i64,
    pub available: i64,
    pub reference: Option<String>,
}
event!(StockChanged, "stock.changed", 1, "A stock level changed: one movement of the ledger and the level after it.");

impl From<&NewMovement> for StockChanged {
    fn from(m: &NewMovement) -> Self {
        Self {
            warehouse: m.warehouse.as_str().to_owned(),
            sku: m.sku.as_str().to_owned(),
            kind: m.kind.as_str().to_owned(),
            on_hand_delta: m.on_hand_delta,
            reserved_delta: m.reserved_delta,
            on_hand: m.on_hand_after,
            reserved: m.reserved_after,
            available: m.on_hand_after - m.reserved_after,
            reference: m.reference.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct LotHeld {
    pub lot: String,
    pub quantity: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct ReservationLineState {
    pub sku: String,
    pub warehouse: String,
    pub quantity: i64,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub lots: Vec<LotHeld>,
}

/// A reservation as its events show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct ReservationState {
    pub id: String,
    pub status: Status,
    /// `null` when none was given.
    pub reference: Option<String>,
    /// `null` once the reservation no longer expires (confirmed, fulfilled, released).
    pub expires_at: Option<String>,
    pub created_at: String,
    pub lines: Vec<ReservationLineState>,
}

impl From<&Reservation> for ReservationState {
    fn from(r: &Reservation) -> Self {
        Self {
            id: r.id.clone(),
            status: r.status,
            reference: r.reference.clone(),
            expires_at: r.expires_at.clone(),
            created_at: r.created_at.clone(),
            lines: r
                .lines
                .iter()
                .map(|l| ReservationLineState {
                    sku: l.sku.clone(),
                    warehouse: l.warehouse.clone(),
                    quantity: l.quantity,
                    lots: l.lots.iter().map(|t| LotHeld { lot: t.lot.clone(), quantity: t.quantity }).collect(),
                })
                .collect(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(transparent)]
pub struct ReservationCreated(pub ReservationState);
event!(ReservationCreated, "reservation.created", 2, "Stock was held: an active reservation with an expiry.");

#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(transparent)]
pub struct ReservationExtended(pub ReservationState);
event!(ReservationExtended, "reservation.extended", 1, "An active reservation's expiry moved (POST .../extend).");

#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(transparent)]
pub struct ReservationConfirmed(pub ReservationState);
event!(ReservationConfirmed, "reservation.confirmed", 2, "A reservation was confirmed: it holds with no expiry.");

#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(transparent)]
pub struct ReservationReleased(pub ReservationState);
event!(ReservationReleased, "reservation.released", 2, "A reservation was released: its stock is available again.");

#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(transparent)]
pub struct ReservationFulfilled(pub ReservationState);
event!(ReservationFulfilled, "reservation.fulfilled", 2, "A reservation was fulfilled: its stock left the warehouse.");

/// Part of a reservation was shipped or given back; the rest still holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct ReservationReduced {
    pub id: String,
    pub status: Status,
    /// `fulfill` (the units left the warehouse) or `release` (they are available again).
    pub kind: String,
    /// What was settled: (SKU, warehouse, units).
    pub settled: Vec<(String, String, i64)>,
}
event!(
    ReservationReduced,
    "reservation.reduced",
    1,
    "Part of a reservation was shipped or given back; the rest of it still holds."
);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct ReservationExpired {
    pub id: String,
    pub status: Status,
}
event!(
    ReservationExpired,
    "reservation.expired",
    1,
    "An active reservation passed its expiry and gave its stock back."
);

/// A lot whose quarantine changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct LotState {
    pub warehouse: String,
    pub sku: String,
    pub lot: String,
    pub on_hand: i64,
    pub reserved: i64,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(transparent)]
pub struct LotQuarantined(pub LotState);
event!(LotQuarantined, "lot.quarantined", 1, "A lot was quarantined: its free units stop counting as available.");

#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(transparent)]
pub struct LotReleased(pub LotState);
event!(LotReleased, "lot.released", 1, "A lot was released from quarantine.");

#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct LotExpired {
    pub warehouse: String,
    pub sku: String,
    pub lot: String,
    /// The lot expires at the start (UTC) of this date.
    pub expires_on: String,
    pub on_hand: i64,
    pub reserved: i64,
}
event!(LotExpired, "lot.expired", 1, "A lot reached its expiry date: its free units are no longer available.");

#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct AlertRuleUpdated {
    /// `default`, `item:SKU` or `item:SKU@WAREHOUSE`.
    pub scope: String,
    pub sku: Option<String>,
    pub warehouse: Option<String>,
    pub low_stock_units: Option<i64>,
    pub out_of_stock: bool,
    pub overstock_units: Option<i64>,
    pub expiring_within_days: Option<i64>,
    pub capacity_share_percent: Option<i64>,
    pub updated_at: String,
}
event!(AlertRuleUpdated, "alert_rule.updated", 1, "An alert rule was set; the levels of its scope are re-evaluated.");

impl From<&AlertRule> for AlertRuleUpdated {
    fn from(r: &AlertRule) -> Self {
        Self {
            scope: r.scope.clone(),
            sku: r.sku.clone(),
            warehouse: r.warehouse.clone(),
            low_stock_units: r.low_stock_units,
            out_of_stock: r.out_of_stock,
            overstock_units: r.overstock_units,
            expiring_within_days: r.expiring_within_days,
            capacity_share_percent: r.capacity_share_percent,
            updated_at: r.updated_at.clone(),
        }
    }
}

/// An alert as its events show it.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct AlertState {
    pub id: String,
    /// `low_stock`, `out_of_stock`, `overstock`, `expiring_soon`, `capacity` or `holds_cut`.
    pub kind: String,
    pub warehouse: Option<String>,
    pub sku: Option<String>,
    pub lot: Option<String>,
    pub bin: Option<String>,
    /// `raised`, `acknowledged` or `resolved`.
    pub status: String,
    /// What the condition measured (available units, threshold, ...).
    pub detail: serde_json::Value,
    pub raised_at: String,
    pub acknowledged_at: Option<String>,
    pub resolved_at: Option<String>,
}

impl From<&Alert> for AlertState {
    fn from(a: &Alert) -> Self {
        Self {
            id: a.id.clone(),
            kind: a.kind.clone(),
            warehouse: a.warehouse.clone(),
            sku: a.sku.clone(),
            lot: a.lot.clone(),
            bin: a.bin.clone(),
            status: a.status.clone(),
            detail: a.detail.clone(),
            raised_at: a.raised_at.clone(),
            acknowledged_at: a.acknowledged_at.clone(),
            resolved_at: a.resolved_at.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(transparent)]
pub struct AlertRaised(pub AlertState);
event!(AlertRaised, "alert.raised", 1, "A stock, expiry or capacity condition started to hold.");

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(transparent)]
pub struct AlertAcknowledged(pub AlertState);
event!(AlertAcknowledged, "alert.acknowledged", 1, "An operator acknowledged an alert.");

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(transparent)]
pub struct AlertResolved(pub AlertState);
event!(AlertResolved, "alert.resolved", 1, "An alert's condition no longer holds.");

#[cfg(test)]
mod tests {
    #[test]
    fn every_type_is_registered_once_with_a_schema_of_an_object() {
        let mut registry = kernel::EventRegistry::default();
        registry.register(super::event_types()).unwrap();
        assert_eq!(registry.types().len(), 19);
        for t in registry.types() {
            let schema = t.schema();
            assert_eq!(schema["type"], "object", "{}: {schema}", t.name);
        }
    }
}
