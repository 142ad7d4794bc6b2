//! Quality control between picking and packing: units that fail leave the shipment. Each
//! failed unit is given back by the order (which waits for it again as a backorder, so it is
//! re-held from stock wherever the channel has some) and goes to quarantine (on hand, not
//! available) or to scrap (on hand down), as movements whose reference is the fulfilment, in
//! the transaction that takes it off the fulfilment's lines.

use crate::record::{Fulfillment, FulfillmentLine, FulfillmentStatus, fulfillment_answer, fulfillment_locked};
use crate::{FulfillmentError, Result};
use kernel::{SkuCode, Timestamp, WarehouseCode};
use serde::Deserialize;
use std::collections::BTreeMap;
use store::Tx;
use warehouse::FieldIssue;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum QcResult {
    Pass,
    Fail,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Disposition {
    /// On hand, set aside: it may be released back or scrapped later.
    Quarantine,
    /// Written off.
    Scrap,
}

#[derive(Debug, Clone, PartialEq, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QcLine {
    pub sku: String,
    pub quantity: i64,
    pub result: QcResult,
    /// Required for a failed line.
    #[serde(default)]
    pub disposition: Option<Disposition>,
}

fn issues(lines: &[QcLine], held: &[FulfillmentLine]) -> Vec<FieldIssue> {
    let mut issues = Vec::new();
    if lines.is_empty() {
        issues.push(FieldIssue::new("lines", "must hold at least one line"));
    }
    let mut checked: BTreeMap<&str, i64> = BTreeMap::new();
    for (i, line) in lines.iter().enumerate() {
        if line.quantity <= 0 {
            issues.push(FieldIssue::new(format!("lines[{i}].quantity"), "must be 1 or more"));
        }
        if line.result == QcResult::Fail && line.disposition.is_none() {
            issues.push(FieldIssue::new(format!("lines[{i}].disposition"), "a failed line needs quarantine or scrap"));
        }
        let Some(held) = held.iter().find(|l| l.sku == line.sku) else {
            issues.push(FieldIssue::new(
                format!("lines[{i}].sku"),
                format!("{} is not a line of this fulfilment", line.sku),
            ));
            continue;
        };
        let total = checked.entry(line.sku.as_str()).or_default();
        *total += line.quantity.max(0);
        if *total > held.quantity {
            issues.push(FieldIssue::new(
                format!("lines[{i}].quantity"),
                format!("the fulfilment holds {} of {}", held.quantity, line.sku),
            ));
        }
    }
    issues
}

/// Records quality control of a `picked` fulfilment. Failed units leave it (re-held through the
/// order's backorder) and go to quarantine or scrap; it is `cancelled` (`qc_failed`) when none is
/// left. Bad lines are refused, all named, and change nothing. Units of a lot-tracked item
/// are set aside from the lots the fulfilment held them from.
pub async fn quality_check(tx: &mut Tx, id: &str, lines: &[QcLine], now: Timestamp) -> Result<Fulfillment> {
    let fulfillment = fulfillment_locked(tx, id).await?;
    if fulfillment.status != FulfillmentStatus::Picked {
        return Err(FulfillmentError::invalid_state(
            "fulfillment",
            fulfillment.status.as_str(),
            "check its quality: only a picked fulfilment is checked, before packing",
        ));
    }
    let issues = issues(lines, &fulfillment.lines);
    if !issues.is_empty() {
        return Err(FulfillmentError::invalid_fields(issues));
    }
    let warehouse = WarehouseCode::parse(&fulfillment.warehouse)
        .map_err(|_| store::StoreError::Corrupt(format!("fulfillment {id}: bad warehouse")))?;
    let mut failed: BTreeMap<String, i64> = BTreeMap::new();
    for line in lines.iter().filter(|l| l.result == QcResult::Fail) {
        let sku = SkuCode::parse(&line.sku)
            .map_err(|_| store::StoreError::Corrupt(format!("fulfillment {id}: bad sku {}", line.sku)))?;
        let lots = order::shortfall::reopen_short(
            tx,
            &fulfillment.order,
            id,
            &fulfillment.warehouse,
            &line.sku,
            line.quantity,
            now,
        )
        .await?;
        let reason = "failed quality control";
        // A lot-tracked item's failed units are set aside from the lots they were held from.
        let parts: Vec<(Option<String>, i64)> = if lots.is_empty() {
            vec![(None, line.quantity)]
        } else {
            lots.into_iter().map(|(lot, units)| (Some(lot), units)).collect()
        };
        for (lot, units) in parts {
            let what = warehouse::quarantine::Units { sku: sku.clone(), warehouse: warehouse.clone(), lot, units };
            match line.disposition {
                Some(Disposition::Quarantine) => {
                    let source = warehouse::quarantine::Source::Available;
                    warehouse::quarantine::quarantine_units(tx, &what, source, Some(id.to_owned()), reason, now)
                        .await?;
                }
                Some(Disposition::Scrap) | None => {
                    warehouse::quarantine::scrap_free(tx, &what, id, reason, now).await?;
                }
            }
        }
        let disposition = if line.disposition == Some(Disposition::Quarantine) { "quarantine" } else { "scrap" };
        metrics::counter!("stockroom_qc_failed_units_total", "disposition" => disposition)
            .increment(line.quantity as u64);
        *failed.entry(line.sku.clone()).or_default() += line.quantity;
    }
    let remaining: Vec<FulfillmentLine> = fulfillment
        .lines
        .iter()
        .map(|l| FulfillmentLine {
            sku: l.sku.clone(),
            quantity: l.quantity - failed.get(&l.sku).copied().unwrap_or(0),
        })
        .filter(|l| l.quantity > 0)
        .collect();
    let (status, reason) = if remaining.is_empty() {
        (FulfillmentStatus::Cancelled, Some("qc_failed"))
    } else {
        (FulfillmentStatus::Picked, None)
    };
    sqlx::query("UPDATE fulfillments SET status = $2, hold_reason = $3, lines = $4, updated_at = $5 WHERE id = $1")
        .bind(id.to_owned())
        .bind(status.as_str())
        .bind(reason)
        .bind(serde_json::to_string(&remaining).unwrap_or_default())
        .bind(now.to_rfc3339())
        .execute(&mut **tx)
        .await
        .map_err(store::StoreError::from)?;
    if status != fulfillment.status {
        store::outbox::append(tx, &[crate::events::status_changed(&fulfillment, status, reason)], now).await?;
    }
    fulfillment_answer(tx, id).await
}
