//! An order follows its fulfilments: a subscriber of `fulfillment.shipped` and
//! `fulfillment.delivered` records each step (`order_fulfillment_progress`) and moves the
//! order to `fulfilled` once every requested fulfilment has shipped and no units wait on
//! backorder, and to `delivered` once every one is delivered. It runs in the transaction that
//! moves its offset, so a crash between the fulfilment's step and the order's is resumed from
//! the same events, never lost. The fulfillment context is named by its event types only:
//! it depends on this crate, not the other way round.

use crate::Result;
use crate::events::{OrderDelivered, OrderFulfilled};
use crate::lifecycle::set_status;
use crate::record::{OrderStatus, order_in};
use kernel::{NewEvent, Timestamp};
use store::Tx;
use store::outbox::StoredEvent;
use store::subscriber::Subscriber;

pub const SHIPPED: &str = "fulfillment.shipped";
pub const DELIVERED: &str = "fulfillment.delivered";

/// The subscriber. Its offset is `order-fulfillment-progress`.
#[derive(Debug, Default, Clone, Copy)]
pub struct FulfillmentProgress;

impl Subscriber for FulfillmentProgress {
    type Error = crate::OrderError;

    fn name(&self) -> &'static str {
        "order-fulfillment-progress"
    }

    fn event_types(&self) -> &'static [&'static str] {
        &[SHIPPED, DELIVERED]
    }

    fn handle<'a>(
        &'a self,
        tx: &'a mut Tx,
        events: &'a [StoredEvent],
        now: Timestamp,
    ) -> impl std::future::Future<Output = Result<()>> + Send + 'a {
        follow(tx, events, now)
    }
}

async fn follow(tx: &mut Tx, events: &[StoredEvent], now: Timestamp) -> Result<()> {
    let at = now.to_rfc3339();
    let mut orders = std::collections::BTreeSet::new();
    for event in events {
        let (Some(fulfillment), Some(order)) = (event.data["fulfillment"].as_str(), event.data["order"].as_str())
        else {
            return Err(store::StoreError::Corrupt(format!(
                "event {} ({}) lacks fulfillment or order",
                event.seq, event.event_type
            ))
            .into());
        };
        let sql = if event.event_type == DELIVERED {
            "INSERT INTO order_fulfillment_progress (fulfillment_id, order_id, shipped_at, delivered_at) \
             VALUES ($1, $2, $3, $3) ON CONFLICT (fulfillment_id) DO UPDATE SET delivered_at = $3"
        } else {
            "INSERT INTO order_fulfillment_progress (fulfillment_id, order_id, shipped_at) \
             VALUES ($1, $2, $3) ON CONFLICT (fulfillment_id) DO NOTHING"
        };
        sqlx::query(sql)
            .bind(fulfillment.to_owned())
            .bind(order.to_owned())
            .bind(at.clone())
            .execute(&mut **tx)
            .await?;
        orders.insert(order.to_owned());
    }
    // The events of every order go out in one append at the end: appending takes the outbox's
    // sequence lock until commit, and holding it while locking the next order would deadlock
    // with a ship of that order (which holds the order and then appends).
    let mut events = Vec::new();
    for order in orders {
        events.extend(advance(tx, &order, now).await?);
    }
    store::outbox::append(tx, &events, now).await?;
    Ok(())
}

/// Moves a paid order to `fulfilled`, and a fulfilled one to `delivered`, as far as its
/// fulfilments have got; answers the events to append.
async fn advance(tx: &mut Tx, order_id: &str, now: Timestamp) -> Result<Vec<NewEvent>> {
    let mut order = order_in(tx, order_id, true).await?;
    let (requested, shipped, delivered): (i64, i64, i64) = sqlx::query_as(
        "SELECT CAST(COUNT(*) AS BIGINT), CAST(COUNT(p.fulfillment_id) AS BIGINT), \
         CAST(COUNT(p.delivered_at) AS BIGINT) \
         FROM order_fulfillments f LEFT JOIN order_fulfillment_progress p ON p.fulfillment_id = f.id \
         WHERE f.order_id = $1 AND f.status = 'requested'",
    )
    .bind(order_id.to_owned())
    .fetch_one(&mut **tx)
    .await?;
    let waiting: i64 = order.lines.iter().map(|l| l.backordered).sum();
    let all_shipped = requested > 0 && shipped == requested && waiting == 0;
    let mut events = Vec::new();
    if order.status == OrderStatus::Paid && all_shipped {
        set_status(tx, &mut order, OrderStatus::Fulfilled, None, now).await?;
        events.push(NewEvent::of(format!("order:{order_id}"), &OrderFulfilled { order: order_id.to_owned() }));
    }
    if order.status == OrderStatus::Fulfilled && all_shipped && delivered == requested {
        set_status(tx, &mut order, OrderStatus::Delivered, None, now).await?;
        events.push(NewEvent::of(format!("order:{order_id}"), &OrderDelivered { order: order_id.to_owned() }));
    }
    Ok(events)
}
