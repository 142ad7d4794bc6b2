//! The intake: a subscriber of `fulfillment.requested` that records each requested
//! fulfilment as `pending`, and of `order.cancelled` that cancels an order's fulfilments not
//! yet shipped. Units whose holds are gone by then (released or expired) go back to the
//! order's backorder and are re-held from any warehouse of the channel; the fulfilment keeps
//! the rest (`cancelled`, `holds_lost`, when nothing is left), and goes `on_hold` with the
//! lines named only when the missing units cannot be traced to the order's allocations. It runs in the transaction that moves its offset, so a fulfilment is taken
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
        let known: Option<String> = sqlx::query_scalar("SELECT id FROM fulfillments WHERE id = $1")
            .bind(id.to_owned())
            .fetch_optional(&mut **tx)
            .await
            .map_err(store::StoreError::from)?;
        if known.is_some() {
            continue;
        }
        let mut lines: Vec<crate::record::FulfillmentLine> =
            serde_json::from_value(serde_json::Value::Array(lines.clone()))
                .map_err(|_| corrupt(event, "has bad lines"))?;
        // Units whose holds are gone go back to the order's backorder, to be re-held from any
        // warehouse of the channel; only what cannot be traced that way holds the fulfilment.
        let mut unresolved = Vec::new();
        for (sku, have, wanted) in lost_holds(tx, order, warehouse, &lines, now).await? {
            if order::shortfall::reopen_lost(tx, order, id, warehouse, &sku, wanted - have, now).await? {
                metrics::counter!("stockroom_fulfillment_rehold_units_total").increment((wanted - have) as u64);
                for line in lines.iter_mut().filter(|l| l.sku == sku) {
                    line.quantity = have;
                }
            } else {
                unresolved.push(format!("{sku} held {have} of {wanted}"));
            }
        }
        lines.retain(|l| l.quantity > 0);
        let (status, hold_reason) = match (unresolved.is_empty(), lines.is_empty()) {
            (false, _) => ("on_hold", Some(format!("holds_lost: {}", unresolved.join(", ")))),
            (true, true) => ("cancelled", Some("holds_lost".to_owned())),
            (true, false) => ("pending", None),
        };
        let lines = serde_json::to_value(&lines).map_err(|_| corrupt(event, "has bad lines"))?;
        let lines = lines.as_array().cloned().unwrap_or_default();
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

/// The lines of a requested fulfilment that the order's confirmed holds in the warehouse no
/// longer cover (a hold released or expired meanwhile), as (SKU, held, wanted).
async fn lost_holds(
    tx: &mut Tx,
    order_id: &str,
    warehouse: &str,
    lines: &[crate::record::FulfillmentLine],
    now: Timestamp,
) -> Result<Vec<(String, i64, i64)>> {
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
    Ok(lines
        .iter()
        .filter_map(|line| {
            let have = held.get(&line.sku).copied().unwrap_or(0);
            (have < line.quantity).then(|| (line.sku.clone(), have, line.quantity))
        })
        .collect())
}
