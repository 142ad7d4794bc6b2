//! Shipping and delivery. Shipping consumes the fulfilment's lines from the order's holds in
//! this warehouse (`settle_part`, first expiry first for lots) in the transaction that marks
//! it shipped, so stock and status never disagree.

use crate::events::{FulfillmentDelivered, FulfillmentShipped, ShippedLine};
use crate::record::{Fulfillment, FulfillmentStatus, fulfillment_answer, fulfillment_locked};
use crate::{FulfillmentError, Result};
use kernel::{NewEvent, ReservationId, SkuCode, Timestamp, WarehouseCode};
use order::record::OrderStatus;
use store::Tx;
use warehouse::reservation::{Part, Settlement};

/// Ships a `packed` fulfilment of a paid order: its units leave on hand (`fulfill` movements)
/// and it is `shipped`. Another state (an unpacked one), or an order that is not paid
/// (cancelled meanwhile), is `invalid_state`.
pub async fn ship(tx: &mut Tx, id: &str, carrier: &str, tracking: &str, now: Timestamp) -> Result<Fulfillment> {
    let fulfillment = fulfillment_locked(tx, id).await?;
    if fulfillment.status != FulfillmentStatus::Packed {
        return Err(FulfillmentError::invalid_state(
            "fulfillment",
            fulfillment.status.as_str(),
            "ship: only a packed fulfilment ships",
        ));
    }
    let order = order::record::order_in(tx, &fulfillment.order, true).await?;
    if !matches!(order.status, OrderStatus::Paid | OrderStatus::Fulfilled) {
        return Err(FulfillmentError::invalid_state(
            "order",
            order.status.as_str(),
            "ship a fulfilment of it: only a paid order ships",
        ));
    }
    let warehouse = WarehouseCode::parse(&fulfillment.warehouse)
        .map_err(|_| store::StoreError::Corrupt(format!("fulfillment {id}: bad warehouse")))?;
    for line in &fulfillment.lines {
        let sku =
            SkuCode::parse(&line.sku).map_err(|_| store::StoreError::Corrupt(format!("fulfillment {id}: bad sku")))?;
        let mut need = line.quantity;
        let reservations = order
            .allocations
            .iter()
            .filter(|a| a.sku == line.sku && a.warehouse == fulfillment.warehouse)
            .map(|a| a.reservation_id.as_str());
        for reservation in reservations {
            if need == 0 {
                break;
            }
            let reservation = ReservationId::from_stored(reservation.to_owned());
            let current = warehouse::reservation::reservation_in_tx(tx, &reservation, now).await?;
            // A hold another fulfilment of the order shipped in full holds nothing any more.
            if current.status != warehouse::reservation::Status::Confirmed {
                continue;
            }
            let held: i64 = current
                .lines
                .iter()
                .filter(|l| l.sku == line.sku && l.warehouse == fulfillment.warehouse)
                .map(|l| l.quantity)
                .sum();
            let take = need.min(held);
            if take == 0 {
                continue;
            }
            let part = Part { sku: sku.clone(), warehouse: warehouse.clone(), quantity: take };
            warehouse::reservation::settle_part(tx, &reservation, &[part], Settlement::Fulfill, now).await?;
            need -= take;
        }
        if need > 0 {
            return Err(FulfillmentError::conflict(format!(
                "the order's holds in {} lack {need} of {}: nothing was shipped",
                fulfillment.warehouse, line.sku
            )));
        }
    }
    let at = now.to_rfc3339();
    sqlx::query(
        "UPDATE fulfillments SET status = 'shipped', carrier = $2, tracking = $3, shipped_at = $4, updated_at = $4 \
         WHERE id = $1",
    )
    .bind(id.to_owned())
    .bind(carrier.to_owned())
    .bind(tracking.to_owned())
    .bind(at)
    .execute(&mut **tx)
    .await
    .map_err(store::StoreError::from)?;
    let event = FulfillmentShipped {
        fulfillment: id.to_owned(),
        order: fulfillment.order.clone(),
        warehouse: fulfillment.warehouse.clone(),
        carrier: carrier.to_owned(),
        tracking: tracking.to_owned(),
        lines: fulfillment.lines.iter().map(|l| ShippedLine { sku: l.sku.clone(), quantity: l.quantity }).collect(),
    };
    store::outbox::append(tx, &[NewEvent::of(format!("fulfillment:{id}"), &event)], now).await?;
    metrics::counter!("stockroom_fulfillments_shipped_total").increment(1);
    fulfillment_answer(tx, id).await
}

/// Marks a shipped fulfilment delivered. Another state is `invalid_state`.
pub async fn deliver(tx: &mut Tx, id: &str, now: Timestamp) -> Result<Fulfillment> {
    let fulfillment = fulfillment_locked(tx, id).await?;
    if fulfillment.status != FulfillmentStatus::Shipped {
        return Err(FulfillmentError::invalid_state(
            "fulfillment",
            fulfillment.status.as_str(),
            "deliver: only a shipped fulfilment is delivered",
        ));
    }
    let at = now.to_rfc3339();
    sqlx::query("UPDATE fulfillments SET status = 'delivered', delivered_at = $2, updated_at = $2 WHERE id = $1")
        .bind(id.to_owned())
        .bind(at)
        .execute(&mut **tx)
        .await
        .map_err(store::StoreError::from)?;
    let event = FulfillmentDelivered {
        fulfillment: id.to_owned(),
        order: fulfillment.order.clone(),
        warehouse: fulfillment.warehouse.clone(),
    };
    store::outbox::append(tx, &[NewEvent::of(format!("fulfillment:{id}"), &event)], now).await?;
    fulfillment_answer(tx, id).await
}
