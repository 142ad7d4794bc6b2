//! Typed, versioned events: one Rust type per event payload, and the registry of their names,
//! versions and JSON Schemas (`GET /v1/event-types`).
//!
//! A payload type implements [`Event`]; a use case turns it into a [`NewEvent`] with
//! [`NewEvent::of`], the only way to make one, so an event's type name and version are
//! written once, on its payload. Payload types are separate from the API's response types:
//! renaming a response field does not change an event. A change that breaks a payload's
//! readers gets a new `VERSION`.

use schemars::JsonSchema;
use serde::Serialize;
use serde_json::Value;

/// Implements [`Event`] for a payload type: `event!(Payload, "type.name", 1, "What happened.")`.
#[macro_export]
macro_rules! event {
    ($payload:ty, $name:literal, $version:literal, $description:literal) => {
        impl $crate::Event for $payload {
            const TYPE: &'static str = $name;
            const VERSION: u32 = $version;
            const DESCRIPTION: &'static str = $description;
        }
    };
}

/// An event payload.
pub trait Event: Serialize + JsonSchema {
    /// Dotted type, e.g. `stock.changed`, `reservation.created`.
    const TYPE: &'static str;
    /// Version of the payload's schema, from 1.
    const VERSION: u32;
    /// One sentence for the event-type list.
    const DESCRIPTION: &'static str;
}

/// An event before the outbox gives it its global `seq` and its `aggregate_seq`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct NewEvent {
    pub event_type: &'static str,
    pub version: u32,
    /// The aggregate the event belongs to, e.g. `stock:BER-1:SKU` or `reservation:res_...`.
    pub aggregate: String,
    pub data: Value,
}

impl NewEvent {
    pub fn of<E: Event>(aggregate: String, payload: &E) -> Self {
        // A derived `Serialize` of plain data does not fail; `Null` would show in the feed.
        let data = serde_json::to_value(payload).unwrap_or(Value::Null);
        Self { event_type: E::TYPE, version: E::VERSION, aggregate, data }
    }
}

/// A registered event type.
#[derive(Debug, Clone, Copy)]
pub struct EventType {
    pub name: &'static str,
    pub version: u32,
    pub description: &'static str,
    schema: fn() -> Value,
}

impl EventType {
    pub fn of<E: Event>() -> Self {
        Self { name: E::TYPE, version: E::VERSION, description: E::DESCRIPTION, schema: schema_of::<E> }
    }

    /// The payload's JSON Schema (draft 2020-12).
    pub fn schema(&self) -> Value {
        (self.schema)()
    }
}

fn schema_of<E: JsonSchema>() -> Value {
    serde_json::to_value(schemars::schema_for!(E)).unwrap_or(Value::Null)
}

/// The registered types of every context, checked for clashes: one entry per name.
#[derive(Debug, Clone, Default)]
pub struct EventRegistry {
    types: Vec<EventType>,
}

impl EventRegistry {
    /// Registers a context's types; a name registered twice is a composition error.
    pub fn register(&mut self, types: impl IntoIterator<Item = EventType>) -> Result<(), String> {
        for t in types {
            if self.types.iter().any(|known| known.name == t.name) {
                return Err(format!("event type {} is registered twice", t.name));
            }
            self.types.push(t);
        }
        self.types.sort_by_key(|t| t.name);
        Ok(())
    }

    pub fn types(&self) -> &[EventType] {
        &self.types
    }

    pub fn get(&self, name: &str) -> Option<&EventType> {
        self.types.iter().find(|t| t.name == name)
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.types.iter().map(|t| t.name).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, JsonSchema)]
    struct Sample {
        sku: String,
    }

    impl Event for Sample {
        const TYPE: &'static str = "sample.happened";
        const VERSION: u32 = 2;
        const DESCRIPTION: &'static str = "A sample.";
    }

    #[test]
    fn an_event_carries_its_type_version_and_payload_and_its_schema_names_the_fields() {
        let event = NewEvent::of("sample:1".into(), &Sample { sku: "A".into() });
        assert_eq!((event.event_type, event.version), ("sample.happened", 2));
        assert_eq!(event.data, serde_json::json!({"sku": "A"}));
        let schema = EventType::of::<Sample>().schema();
        assert_eq!(schema["properties"]["sku"]["type"], "string");
        assert_eq!(schema["required"], serde_json::json!(["sku"]));
    }

    #[test]
    fn a_type_registered_twice_is_refused() {
        let mut registry = EventRegistry::default();
        registry.register([EventType::of::<Sample>()]).unwrap();
        assert!(registry.register([EventType::of::<Sample>()]).is_err());
    }
}
