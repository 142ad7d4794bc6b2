//! Returns: a customer sends back shipped units. Only units shipped and not yet returned (or
//! asked to be) may be returned. Receiving a return puts each unit where its condition sends it
//! (sellable back to available stock in the putaway bin, damaged to quarantine, defective to
//! scrap), counts them as returned on the order and requests their refund, all in the
//! transaction that marks the return received.

use crate::events::{ReturnReceived, ReturnedLine};
use crate::record::FulfillmentLine;
use crate::{FulfillmentError, Result};
use kernel::{NewEvent, SkuCode, Timestamp, WarehouseCode};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use store::Tx;
use warehouse::FieldIssue;

pub const LINES_MAX: usize = 100;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReturnLine {
    pub sku: String,
    pub quantity: i64,
    /// Why it came back, 1 to 200 characters.
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// Back to available stock (`return` movement).
    Sellable,
    /// On hand but set aside (`quarantine` movement).
    Damaged,
    /// Written off (`scrap` movement).
    Defective,
}

impl Condition {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sellable => "sellable",
            Self::Damaged => "damaged",
            Self::Defective => "defective",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReceivedLine {
    pub sku: String,
    pub quantity: i64,
    pub condition: Condition,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Return {
    pub id: String,
    pub order: String,
    /// `requested`, then `received`.
    pub status: String,
    pub lines: Vec<ReturnLine>,
    /// Where it was received; `null` before.
    pub warehouse: Option<String>,
    pub received: Vec<ReceivedLine>,
    /// The amount asked back from the payment integration on receipt.
    pub refund: Option<String>,
    pub created_at: String,
    pub received_at: Option<String>,
}

#[derive(sqlx::FromRow)]
struct Row {
    id: String,
    order_id: String,
    status: String,
    lines: String,
    warehouse: Option<String>,
    received: Option<String>,
    refund: Option<String>,
    created_at: String,
    received_at: Option<String>,
}

impl Row {
    fn into_view(self) -> Result<Return> {
        let bad =
            |what: &str| FulfillmentError::from(store::StoreError::Corrupt(format!("return {}: {what}", self.id)));
        Ok(Return {
            lines: serde_json::from_str(&self.lines).map_err(|_| bad("lines are not JSON"))?,
            received: match &self.received {
                Some(json) => serde_json::from_str(json).map_err(|_| bad("received lines are not JSON"))?,
                None => Vec::new(),
            },
            id: self.id,
            order: self.order_id,
            status: self.status,
            warehouse: self.warehouse,
            refund: self.refund,
            created_at: self.created_at,
            received_at: self.received_at,
        })
    }
}

const COLUMNS: &str = "id, order_id, status, lines, warehouse, received, refund, created_at, received_at";

pub async fn return_get(conn: &mut sqlx::AnyConnection, id: &str, lock: bool) -> Result<Return> {
    let lock = if lock { store::sql::Lock::ForUpdate.clause(store::db::backend_of(conn)) } else { String::new() };
    let row: Option<Row> =
        sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM returns WHERE id = $1{lock}")))
            .bind(id.to_owned())
            .fetch_optional(conn)
            .await
            .map_err(store::StoreError::from)?;
    row.ok_or_else(|| FulfillmentError::not_found("return", id))?.into_view()
}

/// Units per SKU of the order that shipped and are not yet returned or asked to be.
async fn returnable(tx: &mut Tx, order_id: &str) -> Result<BTreeMap<String, i64>> {
    let corrupt = |what: String| FulfillmentError::from(store::StoreError::Corrupt(what));
    let mut units: BTreeMap<String, i64> = BTreeMap::new();
    let shipped: Vec<String> =
        sqlx::query_scalar("SELECT lines FROM fulfillments WHERE order_id = $1 AND status IN ('shipped', 'delivered')")
            .bind(order_id.to_owned())
            .fetch_all(&mut **tx)
            .await
            .map_err(store::StoreError::from)?;
    for lines in shipped {
        let lines: Vec<FulfillmentLine> =
            serde_json::from_str(&lines).map_err(|_| corrupt(format!("order {order_id}: fulfilment lines")))?;
        for line in lines {
            *units.entry(line.sku).or_default() += line.quantity;
        }
    }
    let lock = store::sql::Lock::ForUpdate.clause(store::db::backend_of(tx));
    let returns: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM returns WHERE order_id = $1 ORDER BY id{lock}"
    )))
    .bind(order_id.to_owned())
    .fetch_all(&mut **tx)
    .await
    .map_err(store::StoreError::from)?;
    for earlier in returns {
        let earlier = earlier.into_view()?;
        let taken: Vec<(String, i64)> = if earlier.status == "received" {
            earlier.received.into_iter().map(|l| (l.sku, l.quantity)).collect()
        } else {
            earlier.lines.into_iter().map(|l| (l.sku, l.quantity)).collect()
        };
        for (sku, quantity) in taken {
            *units.entry(sku).or_default() -= quantity;
        }
    }
    Ok(units)
}

/// For a lot-tracked SKU: the lot returned units go back to, the earliest-expiring lot the
/// order's shipped fulfilments were picked from, so a returned unit is never credited with a
/// later expiry than it may have. `None` for an item without lots (its stops name none).
async fn shipped_lot(tx: &mut Tx, order_id: &str, sku: &str) -> Result<Option<String>> {
    let corrupt = |what: String| FulfillmentError::from(store::StoreError::Corrupt(what));
    let lists: Vec<(String, String)> = sqlx::query_as(
        "SELECT f.id, p.stops FROM fulfillments f JOIN picklists p ON p.id = f.picklist_id \
         WHERE f.order_id = $1 AND f.status IN ('shipped', 'delivered') ORDER BY f.id",
    )
    .bind(order_id.to_owned())
    .fetch_all(&mut **tx)
    .await
    .map_err(store::StoreError::from)?;
    let mut lots = std::collections::BTreeSet::new();
    for (fulfillment, stops) in lists {
        let stops: Vec<crate::picking::Stop> =
            serde_json::from_str(&stops).map_err(|_| corrupt(format!("fulfillment {fulfillment}: pick list stops")))?;
        lots.extend(stops.into_iter().filter(|s| s.fulfillment == fulfillment && s.sku == sku).filter_map(|s| s.lot));
    }
    let mut earliest: Option<(i64, String)> = None;
    for lot in lots {
        let expires: Option<i64> =
            sqlx::query_scalar("SELECT MIN(expires_at_ms) FROM stock_lots WHERE sku = $1 AND lot = $2")
                .bind(sku.to_owned())
                .bind(lot.clone())
                .fetch_one(&mut **tx)
                .await
                .map_err(store::StoreError::from)?;
        let expires = expires.unwrap_or(i64::MAX);
        if earliest.as_ref().is_none_or(|(at, known)| (expires, &lot) < (*at, known)) {
            earliest = Some((expires, lot));
        }
    }
    Ok(earliest.map(|(_, lot)| lot))
}

/// Opens a return of shipped units of `order_id`. An unknown order, or a line for more than
/// shipped and not yet returned, is refused (every bad field named) and changes nothing.
pub async fn return_create(tx: &mut Tx, order_id: &str, lines: &[ReturnLine], now: Timestamp) -> Result<Return> {
    match order::record::order_in(tx, order_id, true).await {
        Err(FulfillmentError::Refused(warehouse::Refusal::NotFound { .. })) => {
            return Err(FulfillmentError::invalid("order", format!("unknown order {order_id}")));
        }
        other => other?,
    };
    let mut left = returnable(tx, order_id).await?;
    let mut issues = Vec::new();
    if lines.is_empty() || lines.len() > LINES_MAX {
        issues.push(FieldIssue::new("lines", format!("must hold 1 to {LINES_MAX} lines")));
    }
    for (i, line) in lines.iter().enumerate() {
        if line.quantity <= 0 {
            issues.push(FieldIssue::new(format!("lines[{i}].quantity"), "must be 1 or more"));
            continue;
        }
        let units = left.entry(line.sku.clone()).or_default();
        if line.quantity > *units {
            issues.push(FieldIssue::new(
                format!("lines[{i}].quantity"),
                format!("only {} of {} shipped and not yet returned", (*units).max(0), line.sku),
            ));
        }
        *units -= line.quantity;
    }
    if !issues.is_empty() {
        return Err(FulfillmentError::invalid_fields(issues));
    }
    let view = Return {
        id: format!("ret_{}", uuid::Uuid::now_v7().simple()),
        order: order_id.to_owned(),
        status: "requested".into(),
        lines: lines.to_vec(),
        warehouse: None,
        received: Vec::new(),
        refund: None,
        created_at: now.to_rfc3339(),
        received_at: None,
    };
    sqlx::query("INSERT INTO returns (id, order_id, status, lines, created_at) VALUES ($1, $2, 'requested', $3, $4)")
        .bind(view.id.clone())
        .bind(view.order.clone())
        .bind(serde_json::to_string(&view.lines).unwrap_or_default())
        .bind(view.created_at.clone())
        .execute(&mut **tx)
        .await
        .map_err(store::StoreError::from)?;
    Ok(view)
}

/// Receives a requested return at `warehouse`: each unit goes where its condition sends it, the
/// order counts them returned and their refund is requested. A line for a SKU the return does
/// not hold, or for more than it asked to return, is refused (all named) and changes nothing.
pub async fn return_receive(
    tx: &mut Tx,
    id: &str,
    warehouse: &WarehouseCode,
    lines: &[ReceivedLine],
    now: Timestamp,
) -> Result<Return> {
    let mut view = return_get(tx, id, true).await?;
    if view.status != "requested" {
        return Err(FulfillmentError::invalid_state("return", &view.status, "receive: it was received already"));
    }
    let mut issues = Vec::new();
    if warehouse::site::require_warehouse(tx, "warehouse", warehouse).await.is_err() {
        issues.push(FieldIssue::new("warehouse", format!("unknown warehouse {warehouse}")));
    }
    if lines.is_empty() || lines.len() > LINES_MAX {
        issues.push(FieldIssue::new("lines", format!("must hold 1 to {LINES_MAX} lines")));
    }
    let mut left: BTreeMap<String, i64> = BTreeMap::new();
    for line in &view.lines {
        *left.entry(line.sku.clone()).or_default() += line.quantity;
    }
    for (i, line) in lines.iter().enumerate() {
        if line.quantity <= 0 {
            issues.push(FieldIssue::new(format!("lines[{i}].quantity"), "must be 1 or more"));
            continue;
        }
        let Some(units) = left.get_mut(&line.sku) else {
            issues
                .push(FieldIssue::new(format!("lines[{i}].sku"), format!("{} is not a line of this return", line.sku)));
            continue;
        };
        if line.quantity > *units {
            issues.push(FieldIssue::new(
                format!("lines[{i}].quantity"),
                format!("the return holds {} of {} not received on earlier lines", (*units).max(0), line.sku),
            ));
        }
        *units -= line.quantity;
    }
    if !issues.is_empty() {
        return Err(FulfillmentError::invalid_fields(issues));
    }
    // The order is locked before the stock moves append to the outbox (see picking.rs).
    order::record::order_in(tx, &view.order, true).await?;
    let mut by_sku: BTreeMap<String, i64> = BTreeMap::new();
    for line in lines {
        let sku = SkuCode::parse(&line.sku)
            .map_err(|_| FulfillmentError::invalid("sku", format!("{} is not a SKU", line.sku)))?;
        let reason = format!("returned {} (return {id})", line.condition.as_str());
        let what = warehouse::quarantine::Units {
            sku: sku.clone(),
            warehouse: warehouse.clone(),
            lot: shipped_lot(tx, &view.order, &line.sku).await?,
            units: line.quantity,
        };
        match line.condition {
            Condition::Sellable => {
                warehouse::quarantine::return_units(tx, &what, id, &reason, now).await?;
            }
            Condition::Damaged => {
                let source = warehouse::quarantine::Source::Arriving;
                warehouse::quarantine::quarantine_units(tx, &what, source, Some(id.to_owned()), &reason, now).await?;
            }
            Condition::Defective => {
                warehouse::quarantine::scrap_record(tx, &sku, warehouse, id, &reason, now).await?;
            }
        }
        metrics::counter!("stockroom_returned_units_total", "condition" => line.condition.as_str())
            .increment(line.quantity as u64);
        *by_sku.entry(line.sku.clone()).or_default() += line.quantity;
    }
    let units: Vec<(String, i64)> = by_sku.into_iter().collect();
    let refund_minor = order::returns::record_returned(tx, &view.order, &units, now).await?;
    let order = order::record::order_in(tx, &view.order, false).await?;
    let refund = order.currency.format_amount(refund_minor);
    let at = now.to_rfc3339();
    sqlx::query(
        "UPDATE returns SET status = 'received', warehouse = $2, received = $3, refund = $4, received_at = $5 \
         WHERE id = $1",
    )
    .bind(id.to_owned())
    .bind(warehouse.as_str().to_owned())
    .bind(serde_json::to_string(lines).unwrap_or_default())
    .bind(refund.clone())
    .bind(at.clone())
    .execute(&mut **tx)
    .await
    .map_err(store::StoreError::from)?;
    let event = ReturnReceived {
        r#return: id.to_owned(),
        order: view.order.clone(),
        customer: order.customer.clone(),
        warehouse: warehouse.to_string(),
        lines: lines
            .iter()
            .map(|l| ReturnedLine { sku: l.sku.clone(), quantity: l.quantity, condition: l.condition.as_str().into() })
            .collect(),
    };
    store::outbox::append(tx, &[NewEvent::of(format!("return:{id}"), &event)], now).await?;
    view.status = "received".into();
    view.warehouse = Some(warehouse.to_string());
    view.received = lines.to_vec();
    view.refund = Some(refund);
    view.received_at = Some(at);
    Ok(view)
}
