//! Backorders: a line checked out with `partial: backorder` records what was short, and this
//! subscriber of `stock.changed` holds arrived stock for those lines, oldest order first.
//!
//! It reacts to any change that makes units sellable (a receipt, an adjustment up, a transfer
//! arriving, another hold released), in the transaction that moves its offset, so an
//! allocation and its order's update commit together or are retried from the same events.
//! An order awaiting payment gets an active hold that expires with its checkout hold; a paid
//! order gets a confirmed hold and one more fulfilment request for that warehouse.

use crate::Result;
use crate::error::OrderError;
use crate::events::BackorderAllocated;
use crate::record::{OrderStatus, order_in};
use kernel::{ChannelCode, NewEvent, Quantity, ReservationId, SkuCode, Timestamp, WarehouseCode};
use std::collections::{BTreeSet, HashSet};
use store::Tx;
use store::outbox::StoredEvent;
use store::subscriber::Subscriber;
use warehouse::reservation::{HoldCommand, HoldLine};

/// Waiting lines read per page.
const PAGE: i64 = 200;

/// The subscriber. Its offset is `order-backorders`.
#[derive(Debug, Default, Clone, Copy)]
pub struct BackorderAllocator;

impl Subscriber for BackorderAllocator {
    type Error = OrderError;

    fn name(&self) -> &'static str {
        "order-backorders"
    }

    fn event_types(&self) -> &'static [&'static str] {
        &[<warehouse::events::StockChanged as kernel::Event>::TYPE]
    }

    fn handle<'a>(
        &'a self,
        tx: &'a mut Tx,
        events: &'a [StoredEvent],
        now: Timestamp,
    ) -> impl std::future::Future<Output = Result<()>> + Send + 'a {
        allocate_freed(tx, events, now)
    }
}

async fn allocate_freed(tx: &mut Tx, events: &[StoredEvent], now: Timestamp) -> Result<()> {
    for sku in freed_skus(events)? {
        allocate_sku(tx, &sku, now).await?;
    }
    Ok(())
}

/// SKUs whose sellable units grew in these events. A payload without its fields is corrupt:
/// an error, never skipped.
fn freed_skus(events: &[StoredEvent]) -> Result<BTreeSet<String>> {
    let mut skus = BTreeSet::new();
    for event in events {
        let data = &event.data;
        let (Some(sku), Some(on_hand), Some(reserved)) =
            (data["sku"].as_str(), data["on_hand_delta"].as_i64(), data["reserved_delta"].as_i64())
        else {
            return Err(store::StoreError::Corrupt(format!(
                "event {} ({}) lacks sku or deltas",
                event.seq, event.event_type
            ))
            .into());
        };
        if on_hand - reserved > 0 {
            skus.insert(sku.to_owned());
        }
    }
    Ok(skus)
}

/// Allocates what is sellable of `sku` to its backordered lines, in order of placement (order
/// ids are time-ordered). A channel found without stock of it is not asked again in this run,
/// so a long queue of backorders costs one look per channel once stock is gone. Answers the
/// units allocated.
pub async fn allocate_sku(tx: &mut Tx, sku: &str, now: Timestamp) -> Result<i64> {
    let mut exhausted: HashSet<String> = HashSet::new();
    let mut after = String::new();
    let mut allocated = 0;
    loop {
        let waiting: Vec<(String, String)> = sqlx::query_as(
            "SELECT o.id, o.channel FROM order_lines l JOIN orders o ON o.id = l.order_id \
             WHERE l.sku = $1 AND l.backordered > 0 AND o.status IN ('awaiting_payment', 'paid') AND o.id > $2 \
             ORDER BY o.id LIMIT $3",
        )
        .bind(sku.to_owned())
        .bind(after.clone())
        .bind(PAGE)
        .fetch_all(&mut **tx)
        .await?;
        let Some((last, _)) = waiting.last() else { break };
        after = last.clone();
        let full_page = waiting.len() as i64 == PAGE;
        for (order_id, channel) in waiting {
            if exhausted.contains(&channel) {
                continue;
            }
            match allocate_line(tx, &order_id, sku, now).await? {
                Allocation::Units(units) => allocated += units,
                Allocation::NoStock => {
                    exhausted.insert(channel);
                }
            }
        }
        if !full_page {
            break;
        }
    }
    Ok(allocated)
}

enum Allocation {
    Units(i64),
    /// The order's channel has none of the SKU to give.
    NoStock,
}

/// Holds what the order's channel has of `sku` for its backordered line, in the channel's
/// warehouse order, and records it on the order. Answers the units allocated.
async fn allocate_line(tx: &mut Tx, order_id: &str, sku: &str, now: Timestamp) -> Result<Allocation> {
    let order = order_in(tx, order_id, true).await?;
    let Some(line) = order.lines.iter().find(|l| l.sku == sku) else { return Ok(Allocation::Units(0)) };
    let wanted = line.backordered;
    let ttl_seconds = match order.status {
        // Until its checkout hold would expire, with the checkout's grace: the saga worker
        // cancels it then and releases this hold with the others.
        OrderStatus::AwaitingPayment => {
            let left_ms = order.hold_expires_at_ms - now.millis();
            if left_ms <= 0 {
                return Ok(Allocation::Units(0));
            }
            (left_ms + 999) / 1000 + crate::checkout::HOLD_GRACE_SECONDS
        }
        OrderStatus::Paid => crate::checkout::HOLD_GRACE_SECONDS,
        _ => return Ok(Allocation::Units(0)),
    };
    if wanted <= 0 {
        return Ok(Allocation::Units(0));
    }
    let channel_code = ChannelCode::parse(&order.channel)
        .map_err(|_| store::StoreError::Corrupt(format!("order channel {}", order.channel)))?;
    let channel = catalog::channel::channel_in(tx, &channel_code).await?;
    let figures =
        warehouse::stock::sellable_by_warehouse(tx, &[sku.to_owned()], &channel.warehouses, now, true).await?;
    let mut takes: Vec<(String, i64)> = Vec::new();
    let mut left = wanted;
    for warehouse in &channel.warehouses {
        if left == 0 {
            break;
        }
        let sellable = figures.iter().find(|(_, w, _)| w == warehouse).map(|(_, _, units)| *units).unwrap_or(0);
        let take = sellable.min(left);
        if take > 0 {
            takes.push((warehouse.clone(), take));
            left -= take;
        }
    }
    if takes.is_empty() {
        return Ok(Allocation::NoStock);
    }
    let reservation_id = ReservationId::new();
    let corrupt = |what: String| OrderError::Store(store::StoreError::Corrupt(what));
    let mut lines = Vec::with_capacity(takes.len());
    for (warehouse, quantity) in &takes {
        lines.push(HoldLine {
            sku: SkuCode::parse(sku).map_err(|_| corrupt(format!("order sku {sku}")))?,
            quantity: Quantity::new(*quantity).map_err(|_| corrupt(format!("allocation of {quantity}")))?,
            warehouse: Some(WarehouseCode::parse(warehouse).map_err(|_| corrupt(format!("warehouse {warehouse}")))?),
        });
    }
    let command = HoldCommand { id: reservation_id.clone(), reference: order.id.clone(), ttl_seconds, lines };
    match warehouse::reservation::hold_batch(tx, vec![command], now).await?.pop() {
        Some(Ok(_)) => {}
        // Lots quarantined or expired since the figures were read: nothing was held; the
        // next stock change tries again.
        Some(Err(warehouse::WarehouseError::InsufficientStock { .. })) => return Ok(Allocation::NoStock),
        Some(Err(e)) => return Err(e.into()),
        None => return Err(corrupt("a hold batch of one answered nothing".into())),
    }
    let units: i64 = takes.iter().map(|(_, q)| q).sum();
    let still = wanted - units;
    sqlx::query("UPDATE order_lines SET backordered = $3 WHERE order_id = $1 AND sku = $2")
        .bind(order.id.clone())
        .bind(sku.to_owned())
        .bind(still)
        .execute(&mut **tx)
        .await?;
    let mut events = Vec::new();
    for (warehouse, quantity) in &takes {
        sqlx::query(
            "INSERT INTO order_allocations (order_id, sku, warehouse, reservation_id, quantity) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(order.id.clone())
        .bind(sku.to_owned())
        .bind(warehouse.clone())
        .bind(reservation_id.as_str().to_owned())
        .bind(*quantity)
        .execute(&mut **tx)
        .await?;
        events.push(NewEvent::of(
            format!("order:{}", order.id),
            &BackorderAllocated {
                order: order.id.clone(),
                sku: sku.to_owned(),
                warehouse: warehouse.clone(),
                quantity: *quantity,
                backordered: still,
            },
        ));
    }
    if order.status == OrderStatus::Paid {
        // Paid: the hold is kept with no expiry, and the warehouse is asked to ship it.
        warehouse::reservation::confirm(tx, &reservation_id, now).await?;
        for (warehouse, quantity) in &takes {
            let lines = vec![crate::record::FulfillmentLine { sku: sku.to_owned(), quantity: *quantity }];
            let (_, event) = crate::lifecycle::request_fulfillment(tx, &order.id, warehouse, lines, now).await?;
            events.push(event);
        }
    }
    sqlx::query("UPDATE orders SET updated_at = $2 WHERE id = $1")
        .bind(order.id.clone())
        .bind(now.to_rfc3339())
        .execute(&mut **tx)
        .await?;
    store::outbox::append(tx, &events, now).await?;
    metrics::counter!("stockroom_backorder_units_allocated_total").increment(units as u64);
    Ok(Allocation::Units(units))
}
