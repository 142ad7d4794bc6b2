//! What happens to an order after checkout: payments reported by the integration, paying
//! (holds confirmed, fulfilments requested), cancelling (holds and promotion uses released,
//! a refund requested for a paid order) and expiry. Every change is one transaction with its
//! saga step and its events.

use crate::Result;
use crate::error::OrderError;
use crate::events::{
    FulfillmentLineState, FulfillmentRequested, OrderCancelled, OrderPaid, PaymentRecorded, RefundRequested,
};
use crate::promotion;
use crate::record::{FulfillmentLine, FulfillmentRecord, Order, OrderRecord, OrderStatus, order_in};
use crate::saga::{self, SagaKind, SagaStatus};
use kernel::{NewEvent, ReservationId, Timestamp};
use serde::{Deserialize, Serialize};
use store::{Db, Tx};
use warehouse::WarehouseError;

/// How long a cancelled paid order waits for the integration to report its refund before
/// its saga is marked stuck.
pub const REFUND_WAIT_SECONDS: i64 = 24 * 3600;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    Authorized,
    Captured,
    Failed,
    Refunded,
}

impl PaymentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::Authorized => "authorized",
            PaymentStatus::Captured => "captured",
            PaymentStatus::Failed => "failed",
            PaymentStatus::Refunded => "refunded",
        }
    }
}

/// A payment event as the integration reports it (the amount parsed in the order's currency
/// by the caller).
#[derive(Debug, Clone)]
pub struct PaymentReport {
    pub provider: String,
    pub reference: String,
    pub status: PaymentStatus,
    pub amount_minor: i64,
}

/// Paid: authorized or captured per reference (a capture of an authorized reference is not
/// counted twice), less refunded.
async fn paid_of(tx: &mut Tx, order_id: &str) -> Result<i64> {
    let covered: i64 = sqlx::query_scalar(
        "SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM (SELECT MAX(amount_minor) AS amount FROM payments \
         WHERE order_id = $1 AND status IN ('authorized', 'captured') GROUP BY provider, reference) p",
    )
    .bind(order_id.to_owned())
    .fetch_one(&mut **tx)
    .await?;
    let refunded: i64 = sqlx::query_scalar(
        "SELECT CAST(COALESCE(SUM(amount_minor), 0) AS BIGINT) FROM payments WHERE order_id = $1 AND status = 'refunded'",
    )
    .bind(order_id.to_owned())
    .fetch_one(&mut **tx)
    .await?;
    Ok(covered - refunded)
}

pub(crate) async fn set_status(
    tx: &mut Tx,
    order: &mut OrderRecord,
    status: OrderStatus,
    reason: Option<&str>,
    now: Timestamp,
) -> Result<()> {
    order.status = status;
    order.updated_at = now.to_rfc3339();
    if let Some(r) = reason {
        order.cancel_reason = Some(r.to_owned());
    }
    sqlx::query("UPDATE orders SET status = $2, paid_minor = $3, cancel_reason = $4, updated_at = $5 WHERE id = $1")
        .bind(order.id.clone())
        .bind(status.as_str())
        .bind(order.paid_minor)
        .bind(order.cancel_reason.clone())
        .bind(order.updated_at.clone())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Releases every reservation of an order; one already released or expired is fine (the
/// sweeper may have been first), anything else fails the transaction.
async fn release_holds(tx: &mut Tx, order: &OrderRecord, now: Timestamp) -> Result<usize> {
    let mut released = 0;
    for id in order.reservations() {
        match warehouse::reservation::release(tx, &ReservationId::from_stored(id), now).await {
            Ok(_) => released += 1,
            Err(WarehouseError::InvalidState { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(released)
}

/// Cancels an order awaiting payment or paid: holds and promotion uses released, pending
/// fulfilments cancelled; a paid order's refund is requested and its cancellation saga
/// started. The checkout saga, if open, is finished as compensated.
async fn cancel(tx: &mut Tx, order: &mut OrderRecord, reason: &str, now: Timestamp) -> Result<()> {
    let from = order.status;
    let released = release_holds(tx, order, now).await?;
    let uses = promotion::release_uses(tx, &order.id).await?;
    sqlx::query("UPDATE order_fulfillments SET status = 'cancelled' WHERE order_id = $1 AND status = 'requested'")
        .bind(order.id.clone())
        .execute(&mut **tx)
        .await?;
    for f in &mut order.fulfillments {
        f.status = "cancelled".into();
    }
    // What was still backordered will not be allocated now.
    sqlx::query("UPDATE order_lines SET cancelled = cancelled + backordered, backordered = 0 WHERE order_id = $1 AND backordered > 0")
        .bind(order.id.clone())
        .execute(&mut **tx)
        .await?;
    for l in &mut order.lines {
        l.cancelled += l.backordered;
        l.backordered = 0;
    }
    for (_, _, status) in &mut order.promotions {
        *status = "released".into();
    }
    set_status(tx, order, OrderStatus::Cancelled, Some(reason), now).await?;
    let mut events = vec![NewEvent::of(
        format!("order:{}", order.id),
        &OrderCancelled { order: order.id.clone(), reason: reason.to_owned(), from: from.as_str().to_owned() },
    )];
    if let Some((saga_id, _)) = saga::open_of(tx, &order.id, SagaKind::Checkout).await? {
        let detail = Some(format!("{reason}: {released} reservation(s) and {uses} promotion use(s) released"));
        saga::advance(tx, &saga_id, SagaStatus::Compensating, "release_holds", None, None, now).await?;
        saga::record_step(tx, &saga_id, "release_holds", "compensated", detail, now).await?;
        saga::finish(tx, &saga_id, SagaKind::Checkout, "release_holds", "compensated", now).await?;
    }
    if order.paid_minor > 0 {
        let payments: Vec<(String, String)> = sqlx::query_as(
            "SELECT DISTINCT provider, reference FROM payments WHERE order_id = $1 AND status IN ('authorized', 'captured') ORDER BY provider, reference",
        )
        .bind(order.id.clone())
        .fetch_all(&mut **tx)
        .await?;
        events.push(NewEvent::of(
            format!("order:{}", order.id),
            &RefundRequested {
                order: order.id.clone(),
                amount_minor: order.paid_minor,
                currency: order.currency.to_string(),
                payments,
            },
        ));
        saga::start(
            tx,
            SagaKind::Cancellation,
            &order.id,
            (
                "release_holds_and_request_refund",
                Some(format!(
                    "{released} reservation(s) released; refund of {} requested",
                    order.currency.format_amount(order.paid_minor)
                )),
            ),
            "await_refund",
            Some(now.plus_seconds(REFUND_WAIT_SECONDS).millis()),
            now,
        )
        .await?;
    }
    store::outbox::append(tx, &events, now).await?;
    metrics::counter!("stockroom_orders_cancelled_total", "reason" => reason.to_owned()).increment(1);
    Ok(())
}

/// Asks `warehouse` to ship `lines` of a paid order: the request row and its
/// `fulfillment.requested` event, for the caller to append with its others.
pub(crate) async fn request_fulfillment(
    tx: &mut Tx,
    order_id: &str,
    warehouse: &str,
    lines: Vec<FulfillmentLine>,
    now: Timestamp,
) -> Result<(FulfillmentRecord, NewEvent)> {
    let id = format!("ful_{}", uuid::Uuid::now_v7().simple());
    let at = now.to_rfc3339();
    sqlx::query("INSERT INTO order_fulfillments (id, order_id, warehouse, status, lines, created_at) VALUES ($1, $2, $3, 'requested', $4, $5)")
        .bind(id.clone())
        .bind(order_id.to_owned())
        .bind(warehouse.to_owned())
        .bind(serde_json::to_string(&lines).unwrap_or_default())
        .bind(at.clone())
        .execute(&mut **tx)
        .await?;
    let event = NewEvent::of(
        format!("order:{order_id}"),
        &FulfillmentRequested {
            fulfillment: id.clone(),
            order: order_id.to_owned(),
            warehouse: warehouse.to_owned(),
            lines: lines.iter().map(|l| FulfillmentLineState { sku: l.sku.clone(), quantity: l.quantity }).collect(),
        },
    );
    let record = FulfillmentRecord {
        id,
        warehouse: warehouse.to_owned(),
        status: "requested".into(),
        lines,
        shipping_minor: None,
        created_at: at,
    };
    Ok((record, event))
}

/// Pays an order whose payments cover its total: holds confirmed, one fulfilment requested
/// per warehouse of its allocations, promotion uses kept, the checkout saga done.
async fn pay(tx: &mut Tx, order: &mut OrderRecord, now: Timestamp) -> Result<()> {
    for id in order.reservations() {
        match warehouse::reservation::confirm(tx, &ReservationId::from_stored(id), now).await {
            Ok(_) => {}
            // A hold given back from under the order (a cycle count found its stock missing, a
            // person released it): the order is paid all the same, and its fulfilment intake
            // sends the units no hold covers to the backorder, re-held from any warehouse of
            // the channel (`shortfall::reopen_lost`). An expired hold is still refused: its
            // saga cancels the order.
            Err(WarehouseError::InvalidState { from, .. }) if from == "released" => {}
            Err(error) => return Err(error.into()),
        }
    }
    promotion::keep_uses(tx, &order.id).await?;
    for (_, _, status) in &mut order.promotions {
        *status = "kept".into();
    }
    let mut by_warehouse: std::collections::BTreeMap<String, Vec<FulfillmentLine>> = Default::default();
    for a in &order.allocations {
        let lines = by_warehouse.entry(a.warehouse.clone()).or_default();
        match lines.iter_mut().find(|l| l.sku == a.sku) {
            Some(l) => l.quantity += a.quantity,
            None => lines.push(FulfillmentLine { sku: a.sku.clone(), quantity: a.quantity }),
        }
    }
    let mut events = vec![NewEvent::of(
        format!("order:{}", order.id),
        &OrderPaid { order: order.id.clone(), paid_minor: order.paid_minor, total_minor: order.total_minor },
    )];
    for (warehouse, lines) in by_warehouse {
        let (fulfillment, event) = request_fulfillment(tx, &order.id, &warehouse, lines, now).await?;
        events.push(event);
        order.fulfillments.push(fulfillment);
    }
    set_status(tx, order, OrderStatus::Paid, None, now).await?;
    if let Some((saga_id, _)) = saga::open_of(tx, &order.id, SagaKind::Checkout).await? {
        saga::record_step(
            tx,
            &saga_id,
            "confirm_holds",
            "done",
            Some(format!("{} reservation(s) confirmed", order.reservations().len())),
            now,
        )
        .await?;
        saga::record_step(
            tx,
            &saga_id,
            "request_fulfillment",
            "done",
            Some(format!("{} fulfilment(s) requested", order.fulfillments.len())),
            now,
        )
        .await?;
        saga::finish(tx, &saga_id, SagaKind::Checkout, "request_fulfillment", "paid", now).await?;
    }
    store::outbox::append(tx, &events, now).await?;
    metrics::counter!("stockroom_orders_paid_total").increment(1);
    Ok(())
}

/// Records a payment event for an order and acts on it, in the caller's transaction.
/// Idempotent by `(provider, reference, status)`: a repeat of the same report answers the
/// order as it is; the same key with another order or amount is a conflict.
pub async fn payment_report(tx: &mut Tx, order_id: &str, report: PaymentReport, now: Timestamp) -> Result<Order> {
    let mut order = order_in(tx, order_id, true).await?;
    let known: Option<(String, i64)> = sqlx::query_as(
        "SELECT order_id, amount_minor FROM payments WHERE provider = $1 AND reference = $2 AND status = $3",
    )
    .bind(report.provider.clone())
    .bind(report.reference.clone())
    .bind(report.status.as_str())
    .fetch_optional(&mut **tx)
    .await?;
    match known {
        Some((o, amount)) if o == order.id && amount == report.amount_minor => return Ok(order.view()),
        Some((o, _)) if o != order.id => {
            return Err(OrderError::conflict(format!(
                "payment {} {} {} was reported for order {o}",
                report.provider,
                report.reference,
                report.status.as_str()
            )));
        }
        Some(_) => {
            return Err(OrderError::conflict(format!(
                "payment {} {} {} was reported with another amount",
                report.provider,
                report.reference,
                report.status.as_str()
            )));
        }
        None => {}
    }
    let outstanding = order.total_minor - order.paid_minor;
    match report.status {
        PaymentStatus::Authorized | PaymentStatus::Captured => {
            if order.status != OrderStatus::AwaitingPayment {
                return Err(OrderError::invalid_state("order", order.status.as_str(), "take a payment"));
            }
            // A capture of a reference already authorized may repeat its amount.
            let authorized: Option<i64> = sqlx::query_scalar(
                "SELECT MAX(amount_minor) FROM payments WHERE order_id = $1 AND provider = $2 AND reference = $3 AND status IN ('authorized', 'captured')",
            )
            .bind(order.id.clone())
            .bind(report.provider.clone())
            .bind(report.reference.clone())
            .fetch_one(&mut **tx)
            .await?;
            let room = outstanding + authorized.unwrap_or(0);
            if report.amount_minor > room {
                return Err(OrderError::invalid(
                    "amount",
                    format!(
                        "{} is more than the {} still to pay",
                        order.currency.format_amount(report.amount_minor),
                        order.currency.format_amount(room)
                    ),
                ));
            }
        }
        PaymentStatus::Refunded => {
            if report.amount_minor > order.paid_minor {
                return Err(OrderError::invalid(
                    "amount",
                    format!(
                        "{} is more than the {} paid",
                        order.currency.format_amount(report.amount_minor),
                        order.currency.format_amount(order.paid_minor)
                    ),
                ));
            }
        }
        PaymentStatus::Failed => {}
    }
    let at = now.to_rfc3339();
    sqlx::query(
        "INSERT INTO payments (provider, reference, status, order_id, amount_minor, currency, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(report.provider.clone())
    .bind(report.reference.clone())
    .bind(report.status.as_str())
    .bind(order.id.clone())
    .bind(report.amount_minor)
    .bind(order.currency.to_string())
    .bind(at.clone())
    .execute(&mut **tx)
    .await?;
    order.payments.push((
        report.provider.clone(),
        report.reference.clone(),
        report.status.as_str().to_owned(),
        report.amount_minor,
        order.currency.to_string(),
        at,
    ));
    order.paid_minor = paid_of(tx, &order.id).await?;
    store::outbox::append(
        tx,
        &[NewEvent::of(
            format!("order:{}", order.id),
            &PaymentRecorded {
                order: order.id.clone(),
                provider: report.provider.clone(),
                reference: report.reference.clone(),
                status: report.status.as_str().to_owned(),
                amount_minor: report.amount_minor,
                currency: order.currency.to_string(),
            },
        )],
        now,
    )
    .await?;
    match (report.status, order.status) {
        (PaymentStatus::Authorized | PaymentStatus::Captured, OrderStatus::AwaitingPayment) => {
            if order.paid_minor >= order.total_minor {
                pay(tx, &mut order, now).await?;
            } else {
                set_status(tx, &mut order, OrderStatus::AwaitingPayment, None, now).await?;
            }
        }
        (PaymentStatus::Failed, OrderStatus::AwaitingPayment) => cancel(tx, &mut order, "payment_failed", now).await?,
        (PaymentStatus::Refunded, status) => {
            set_status(tx, &mut order, status, None, now).await?;
            if order.paid_minor <= 0
                && let Some((saga_id, _)) = saga::open_of(tx, &order.id, SagaKind::Cancellation).await?
            {
                saga::record_step(
                    tx,
                    &saga_id,
                    "await_refund",
                    "done",
                    Some(format!("refund reported: {}", report.reference)),
                    now,
                )
                .await?;
                saga::finish(tx, &saga_id, SagaKind::Cancellation, "await_refund", "refunded", now).await?;
            }
        }
        _ => {}
    }
    Ok(order.view())
}

/// Cancels an order on request, in the caller's transaction.
pub async fn order_cancel(tx: &mut Tx, order_id: &str, now: Timestamp) -> Result<Order> {
    let mut order = order_in(tx, order_id, true).await?;
    match order.status {
        OrderStatus::AwaitingPayment | OrderStatus::Paid => {}
        other => return Err(OrderError::invalid_state("order", other.as_str(), "be cancelled")),
    }
    cancel(tx, &mut order, "requested", now).await?;
    Ok(order.view())
}

/// One run of the saga worker: checkout sagas whose hold expired unpaid are compensated
/// (the order cancelled, its holds and uses released); sagas waiting past their bound on
/// something outside (a refund) are marked stuck. Each saga is its own transaction, so one
/// that fails does not hold up the others; locked rows are skipped, so replicas share the
/// work. Answers how many sagas it moved.
pub async fn run_due(db: &Db, now: Timestamp, limit: i64) -> Result<usize> {
    let mut moved = 0;
    let mut tx = db.begin().await?;
    let due = saga::due(&mut tx, now, limit).await?;
    tx.rollback().await?;
    for (id, kind, order_id, step, deadline) in due {
        let mut tx = db.begin().await?;
        // Locked again, and checked again: another replica may have moved it meanwhile.
        let still: Option<(String, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT status, stuck FROM sagas WHERE id = $1{}",
            store::sql::Lock::ForUpdateSkipLocked.clause(store::db::backend_of(&tx))
        )))
        .bind(id.clone())
        .fetch_optional(&mut *tx)
        .await?;
        if !matches!(still, Some((ref s, 0)) if s == "running") {
            tx.rollback().await?;
            continue;
        }
        match (SagaKind::parse(&kind), step.as_str()) {
            (Some(SagaKind::Checkout), "await_payment") => {
                let mut order = order_in(&mut tx, &order_id, true).await?;
                if order.status == OrderStatus::AwaitingPayment {
                    cancel(&mut tx, &mut order, "hold_expired", now).await?;
                } else {
                    saga::finish(&mut tx, &id, SagaKind::Checkout, &step, "superseded", now).await?;
                }
            }
            _ => saga::mark_stuck(&mut tx, &id, &kind, &order_id, &step, now.millis() - deadline, now).await?,
        }
        tx.commit().await?;
        moved += 1;
    }
    Ok(moved)
}
