//! Units a fulfilment cannot ship after all (not found in their bin): the order gives up its
//! hold on them and waits for them again as a backorder, so the backorder allocator re-sources
//! them from any warehouse of the channel, in the order the orders were placed.

use crate::Result;
use crate::error::OrderError;
use crate::record::{AllocationRecord, FulfillmentLine, order_in};
use kernel::{ReservationId, SkuCode, Timestamp, WarehouseCode};
use std::collections::BTreeMap;
use store::Tx;
use warehouse::reservation::{Part, Settlement, Status};

/// Releases `units` of `sku` that the order holds in `warehouse`, moves them from the line's
/// allocation to its backorder, and takes them off the requested fulfilment `fulfillment`
/// (cancelled when nothing is left of it, so the order does not wait for it to ship).
/// Answers the lots the released units were held from (none for an item without lots).
pub async fn reopen_short(
    tx: &mut Tx,
    order_id: &str,
    fulfillment: &str,
    warehouse: &str,
    sku: &str,
    units: i64,
    now: Timestamp,
) -> Result<Vec<(String, i64)>> {
    let mut released_lots: Vec<(String, i64)> = Vec::new();
    if units <= 0 {
        return Ok(released_lots);
    }
    let order = order_in(tx, order_id, true).await?;
    let corrupt = |what: String| OrderError::Store(store::StoreError::Corrupt(what));
    let sku_code = SkuCode::parse(sku).map_err(|_| corrupt(format!("order {order_id}: sku {sku}")))?;
    let warehouse_code =
        WarehouseCode::parse(warehouse).map_err(|_| corrupt(format!("order {order_id}: warehouse {warehouse}")))?;
    let mut left = units;
    for allocation in order.allocations.iter().filter(|a| a.sku == sku && a.warehouse == warehouse) {
        if left == 0 {
            break;
        }
        let reservation = ReservationId::from_stored(allocation.reservation_id.clone());
        // Allocations are not shrunk by shipping: what a hold still holds bounds what it gives.
        let current = warehouse::reservation::reservation_in_tx(tx, &reservation, now).await?;
        let held: i64 = if matches!(current.status, Status::Active | Status::Confirmed) {
            current.lines.iter().filter(|l| l.sku == sku && l.warehouse == warehouse).map(|l| l.quantity).sum()
        } else {
            0
        };
        let take = left.min(allocation.quantity).min(held);
        if take == 0 {
            continue;
        }
        let part = Part { sku: sku_code.clone(), warehouse: warehouse_code.clone(), quantity: take };
        let after = warehouse::reservation::settle_part(tx, &reservation, &[part], Settlement::Release, now).await?;
        let lots_of = |r: &warehouse::reservation::Reservation| {
            let mut lots: BTreeMap<String, i64> = BTreeMap::new();
            for take in r.lines.iter().filter(|l| l.sku == sku && l.warehouse == warehouse).flat_map(|l| &l.lots) {
                *lots.entry(take.lot.clone()).or_default() += take.quantity;
            }
            lots
        };
        let still =
            if matches!(after.status, Status::Active | Status::Confirmed) { lots_of(&after) } else { BTreeMap::new() };
        for (lot, before) in lots_of(&current) {
            let given = before - still.get(&lot).copied().unwrap_or(0);
            if given > 0 {
                match released_lots.iter_mut().find(|(l, _)| *l == lot) {
                    Some((_, units)) => *units += given,
                    None => released_lots.push((lot, given)),
                }
            }
        }
        shrink_allocation(tx, order_id, allocation, take).await?;
        left -= take;
    }
    if left > 0 {
        return Err(OrderError::conflict(format!(
            "order {order_id} holds {} of {sku} in {warehouse}; {units} cannot be given back",
            units - left
        )));
    }
    to_backorder(tx, &order, fulfillment, sku, units, now).await?;
    Ok(released_lots)
}

/// A requested fulfilment's units whose holds are gone (released or expired after the order
/// was paid): the allocation gives them up without touching stock, and the order waits for
/// them again as a backorder, so the backorder allocator re-holds them from any warehouse of
/// the channel. False, changing nothing, when the order is not `paid` or its allocations in
/// `warehouse` do not show that many units without a hold.
pub async fn reopen_lost(
    tx: &mut Tx,
    order_id: &str,
    fulfillment: &str,
    warehouse: &str,
    sku: &str,
    units: i64,
    now: Timestamp,
) -> Result<bool> {
    if units <= 0 {
        return Ok(true);
    }
    let order = order_in(tx, order_id, true).await?;
    // Only a paid order waits for its units; a cancelled one gave its holds back on purpose.
    if order.status != crate::record::OrderStatus::Paid {
        return Ok(false);
    }
    let mut takes = Vec::new();
    let mut left = units;
    for allocation in order.allocations.iter().filter(|a| a.sku == sku && a.warehouse == warehouse) {
        if left == 0 {
            break;
        }
        let reservation = ReservationId::from_stored(allocation.reservation_id.clone());
        let current = warehouse::reservation::reservation_in_tx(tx, &reservation, now).await?;
        let held: i64 = match current.status {
            Status::Active | Status::Confirmed => {
                current.lines.iter().filter(|l| l.sku == sku && l.warehouse == warehouse).map(|l| l.quantity).sum()
            }
            // Shipped: what it carried is gone for a good reason.
            Status::Fulfilled => continue,
            _ => 0,
        };
        let take = left.min((allocation.quantity - held).max(0));
        if take > 0 {
            takes.push((allocation, take));
            left -= take;
        }
    }
    if left > 0 {
        return Ok(false);
    }
    for (allocation, take) in takes {
        shrink_allocation(tx, order_id, allocation, take).await?;
    }
    to_backorder(tx, &order, fulfillment, sku, units, now).await?;
    Ok(true)
}

async fn shrink_allocation(tx: &mut Tx, order_id: &str, allocation: &AllocationRecord, take: i64) -> Result<()> {
    let sku = allocation.sku.as_str();
    let warehouse = allocation.warehouse.as_str();
    // The quantity column may not reach 0: an allocation given back whole goes.
    let whole = take == allocation.quantity;
    let sql = if whole {
        "DELETE FROM order_allocations WHERE order_id = $1 AND sku = $2 AND warehouse = $3 AND reservation_id = $4"
    } else {
        "UPDATE order_allocations SET quantity = quantity - $5 \
         WHERE order_id = $1 AND sku = $2 AND warehouse = $3 AND reservation_id = $4"
    };
    let query = sqlx::query(sql)
        .bind(order_id.to_owned())
        .bind(sku.to_owned())
        .bind(warehouse.to_owned())
        .bind(allocation.reservation_id.clone());
    let query = if whole { query } else { query.bind(take) };
    query.execute(&mut **tx).await?;
    Ok(())
}

/// The line's backorder grows by `units`, and the requested fulfilment `fulfillment` loses
/// them (cancelled when nothing is left of it).
async fn to_backorder(
    tx: &mut Tx,
    order: &crate::record::OrderRecord,
    fulfillment: &str,
    sku: &str,
    units: i64,
    now: Timestamp,
) -> Result<()> {
    let order_id = order.id.as_str();
    sqlx::query("UPDATE order_lines SET backordered = backordered + $3 WHERE order_id = $1 AND sku = $2")
        .bind(order_id.to_owned())
        .bind(sku.to_owned())
        .bind(units)
        .execute(&mut **tx)
        .await?;
    if let Some(requested) = order.fulfillments.iter().find(|f| f.id == fulfillment) {
        let lines: Vec<FulfillmentLine> = requested
            .lines
            .iter()
            .map(|l| FulfillmentLine {
                sku: l.sku.clone(),
                quantity: if l.sku == sku { (l.quantity - units).max(0) } else { l.quantity },
            })
            .filter(|l| l.quantity > 0)
            .collect();
        let status = if lines.is_empty() { "cancelled" } else { "requested" };
        sqlx::query("UPDATE order_fulfillments SET lines = $2, status = $3 WHERE id = $1")
            .bind(fulfillment.to_owned())
            .bind(serde_json::to_string(&lines).unwrap_or_default())
            .bind(status)
            .execute(&mut **tx)
            .await?;
    }
    sqlx::query("UPDATE orders SET updated_at = $2 WHERE id = $1")
        .bind(order_id.to_owned())
        .bind(now.to_rfc3339())
        .execute(&mut **tx)
        .await?;
    Ok(())
}
