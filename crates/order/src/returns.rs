//! Returned units as the order sees them: its lines count them as `returned`, and their price
//! (less their share of the line's discount) is asked back from the payment integration with a
//! `payment.refund_requested` event in the transaction that received them.

use crate::Result;
use crate::error::OrderError;
use crate::events::RefundRequested;
use crate::record::order_in;
use kernel::{NewEvent, Timestamp};
use store::Tx;

/// Counts `units` of each `(sku, units)` as returned on the order's lines and requests their
/// refund. More than a line has left to return is `conflict`. Answers the refund in minor
/// units.
pub async fn record_returned(tx: &mut Tx, order_id: &str, lines: &[(String, i64)], now: Timestamp) -> Result<i64> {
    let order = order_in(tx, order_id, true).await?;
    let mut refund = 0_i64;
    for (sku, units) in lines.iter().filter(|(_, units)| *units > 0) {
        let Some(line) = order.lines.iter().find(|l| &l.sku == sku) else {
            return Err(OrderError::conflict(format!("order {order_id} has no line of {sku} to return")));
        };
        let returnable = line.quantity - line.cancelled - line.backordered - line.returned;
        if *units > returnable {
            return Err(OrderError::conflict(format!(
                "order {order_id} has {returnable} of {sku} left to return; {units} cannot be"
            )));
        }
        refund += units * line.unit_price_minor - line.discount_minor * units / line.quantity;
        sqlx::query("UPDATE order_lines SET returned = returned + $3 WHERE order_id = $1 AND sku = $2")
            .bind(order_id.to_owned())
            .bind(sku.clone())
            .bind(*units)
            .execute(&mut **tx)
            .await?;
    }
    sqlx::query("UPDATE orders SET updated_at = $2 WHERE id = $1")
        .bind(order_id.to_owned())
        .bind(now.to_rfc3339())
        .execute(&mut **tx)
        .await?;
    if refund > 0 {
        let payments: Vec<(String, String)> = sqlx::query_as(
            "SELECT DISTINCT provider, reference FROM payments WHERE order_id = $1 AND status IN ('authorized', 'captured') \
             ORDER BY provider, reference",
        )
        .bind(order_id.to_owned())
        .fetch_all(&mut **tx)
        .await?;
        let event = RefundRequested {
            order: order_id.to_owned(),
            amount_minor: refund,
            currency: order.currency.to_string(),
            payments,
        };
        store::outbox::append(tx, &[NewEvent::of(format!("order:{order_id}"), &event)], now).await?;
    }
    Ok(refund)
}

/// Whether `customer` has a delivered order with a line of one of `skus` that was not fully
/// returned (or cancelled): what makes a review a verified purchase.
pub async fn has_delivered_unreturned(conn: &mut sqlx::AnyConnection, customer: &str, skus: &[String]) -> Result<bool> {
    if skus.is_empty() {
        return Ok(false);
    }
    let sql = format!(
        "SELECT CAST(COUNT(*) AS BIGINT) FROM order_lines l JOIN orders o ON o.id = l.order_id \
         WHERE o.customer = $1 AND o.status = 'delivered' AND l.quantity - l.cancelled - l.backordered - l.returned > 0 \
         AND l.sku IN ({})",
        store::sql::list_placeholders(skus.len(), 2)
    );
    let mut query = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql)).bind(customer.to_owned());
    for sku in skus {
        query = query.bind(sku.clone());
    }
    Ok(query.fetch_one(conn).await? > 0)
}
