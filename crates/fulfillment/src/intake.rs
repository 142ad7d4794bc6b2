//! The intake: a subscriber of `fulfillment.requested` that records each requested
//! fulfilment as `pending`, and of `order.cancelled` that cancels an order's fulfilments not
//! yet shipped. It runs in the transaction that moves its offset, so a fulfilment is taken
//! exactly once however often the events are handed to it.

use crate::Result;
use kernel::Timestamp;
use store::Tx;
use store::outbox::StoredEvent;
use store::subscriber::Subscriber;

/// The subscriber. Its offset is `fulfillment-intake`.
#[derive(Debug, Default, Clone, Copy)]
pub struct Intake;

impl Subscriber for Intake {
    type Error = crate::FulfillmentError;

    fn name(&self) -> &'static str {
        "fulfillment-intake"
    }

    fn event_types(&self) -> &'static [&'static str] {
        &[
            <order::events::FulfillmentRequested as kernel::Event>::TYPE,
            <order::events::OrderCancelled as kernel::Event>::TYPE,
        ]
    }

    fn handle<'a>(
        &'a self,
        tx: &'a mut Tx,
        events: &'a [StoredEvent],
        now: Timestamp,
    ) -> impl std::future::Future<Output = Result<()>> + Send + 'a {
        take(tx, events, now)
    }
}

fn corrupt(event: &StoredEvent, what: &str) -> crate::FulfillmentError {
    store::StoreError::Corrupt(format!("event {} ({}) {what}", event.seq, event.event_type)).into()
}

async fn take(tx: &mut Tx, events: &[StoredEvent], now: Timestamp) -> Result<()> {
    let at = now.to_rfc3339();
    for event in events {
        let data = &event.data;
        if event.event_type == <order::events::OrderCancelled as kernel::Event>::TYPE {
            let order = data["order"].as_str().ok_or_else(|| corrupt(event, "lacks order"))?;
            sqlx::query(
                "UPDATE fulfillments SET status = 'cancelled', updated_at = $2 \
                 WHERE order_id = $1 AND status IN ('pending', 'picking', 'picked', 'packed', 'on_hold')",
            )
            .bind(order.to_owned())
            .bind(at.clone())
            .execute(&mut **tx)
            .await
            .map_err(store::StoreError::from)?;
            continue;
        }
        let (Some(id), Some(order), Some(warehouse), Some(lines)) = (
            data["fulfillment"].as_str(),
            data["order"].as_str(),
            data["warehouse"].as_str(),
            data["lines"].as_array(),
        ) else {
            return Err(corrupt(event, "lacks fulfillment, order, warehouse or lines"));
        };
        let hold_reason = lost_holds(tx, order, warehouse, lines, now).await?;
        let status = if hold_reason.is_some() { "on_hold" } else { "pending" };
        sqlx::query(
            "INSERT INTO fulfillments (id, order_id, warehouse, status, hold_reason, lines, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7) ON CONFLICT (id) DO NOTHING",
        )
        .bind(id.to_owned())
        .bind(order.to_owned())
        .bind(warehouse.to_owned())
        .bind(status)
        .bind(hold_reason)
        .bind(serde_json::Value::Array(lines.clone()).to_string())
        .bind(at.clone())
        .execute(&mut **tx)
        .await
        .map_err(store::StoreError::from)?;
    }
    Ok(())
}

/// Why a requested fulfilment cannot proceed: a line the order's confirmed holds in the
/// warehouse no longer cover (a hold released or expired meanwhile), or `None`. Such a
/// fulfilment is taken `on_hold` with that reason, visibly, instead of being picked without
/// stock behind it.
async fn lost_holds(
    tx: &mut Tx,
    order_id: &str,
    warehouse: &str,
    lines: &[serde_json::Value],
    now: Timestamp,
) -> Result<Option<String>> {
    let order = order::record::order_in(tx, order_id, false).await?;
    let mut reservations: Vec<&str> =
        order.allocations.iter().filter(|a| a.warehouse == warehouse).map(|a| a.reservation_id.as_str()).collect();
    reservations.sort_unstable();
    reservations.dedup();
    let mut held: std::collections::BTreeMap<String, i64> = Default::default();
    for reservation in reservations {
        let id = kernel::ReservationId::from_stored(reservation.to_owned());
        let current = warehouse::reservation::reservation_in_tx(tx, &id, now).await?;
        if current.status != warehouse::reservation::Status::Confirmed {
            continue;
        }
        for line in current.lines.iter().filter(|l| l.warehouse == warehouse) {
            *held.entry(line.sku.clone()).or_default() += line.quantity;
        }
    }
    let mut lacking = Vec::new();
    for line in lines {
        let (Some(sku), Some(quantity)) = (line["sku"].as_str(), line["quantity"].as_i64()) else {
            return Err(store::StoreError::Corrupt(format!(
                "order {order_id}: a fulfilment line without sku or quantity"
            ))
            .into());
        };
        let have = held.get(sku).copied().unwrap_or(0);
        if have < quantity {
            lacking.push(format!("{sku} held {have} of {quantity}"));
        }
    }
    Ok((!lacking.is_empty()).then(|| format!("holds_lost: {}", lacking.join(", "))))
}
