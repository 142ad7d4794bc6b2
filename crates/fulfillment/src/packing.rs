//! Packing: the picked units go into packages that are weighed. A package is expected to weigh
//! its items plus the warehouse's packaging; one outside the tolerance puts the fulfilment
//! `on_hold` for `weight_mismatch` (a wrong item, a missing one, a wrong quantity), and it may be
//! packed again once re-weighed. Shipping is recomputed from the weighed packages and the
//! warehouse's rates beside the figure the checkout planned.

use crate::record::{
    Fulfillment, FulfillmentLine, FulfillmentStatus, Package, ShippingCost, fulfillment_answer, fulfillment_locked,
};
use crate::{FulfillmentError, Result};
use kernel::Timestamp;
use serde::Deserialize;
use std::collections::BTreeMap;
use store::Tx;
use warehouse::FieldIssue;

pub const PACKAGES_MAX: usize = 50;
pub const PACKAGE_GRAMS_MAX: i64 = 1_000_000;
pub const HOLD_WEIGHT_MISMATCH: &str = "weight_mismatch";

#[derive(Debug, Clone, PartialEq, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PackageIn {
    /// As weighed, 1 to 1000000.
    pub weight_grams: i64,
    pub lines: Vec<FulfillmentLine>,
}

/// Every bad field of the packages, named; packed lines must equal the fulfilment's lines.
fn issues(packages: &[PackageIn], lines: &[FulfillmentLine]) -> Vec<FieldIssue> {
    let mut issues = Vec::new();
    if packages.is_empty() || packages.len() > PACKAGES_MAX {
        issues.push(FieldIssue::new("packages", format!("must hold 1 to {PACKAGES_MAX} packages")));
    }
    let mut packed: BTreeMap<&str, i64> = BTreeMap::new();
    for (i, package) in packages.iter().enumerate() {
        if !(1..=PACKAGE_GRAMS_MAX).contains(&package.weight_grams) {
            issues.push(FieldIssue::new(format!("packages[{i}].weight_grams"), "must be from 1 to 1000000"));
        }
        if package.lines.is_empty() {
            issues.push(FieldIssue::new(format!("packages[{i}].lines"), "must not be empty"));
        }
        for (j, line) in package.lines.iter().enumerate() {
            if line.quantity <= 0 {
                issues.push(FieldIssue::new(format!("packages[{i}].lines[{j}].quantity"), "must be 1 or more"));
            }
            if !lines.iter().any(|l| l.sku == line.sku) {
                issues.push(FieldIssue::new(
                    format!("packages[{i}].lines[{j}].sku"),
                    format!("{} is not a line of this fulfilment", line.sku),
                ));
            }
            *packed.entry(line.sku.as_str()).or_default() += line.quantity.max(0);
        }
    }
    for line in lines {
        let units = packed.get(line.sku.as_str()).copied().unwrap_or(0);
        if units != line.quantity {
            issues.push(FieldIssue::new(
                "packages",
                format!(
                    "packed lines must equal the fulfilment's: {} of {} packed, {} picked",
                    units, line.sku, line.quantity
                ),
            ));
        }
    }
    issues
}

/// Packs a `picked` fulfilment (or one `on_hold` for `weight_mismatch`, re-weighed) into the
/// packages given: `packed` when every package weighs within the tolerance, `on_hold` with
/// `weight_mismatch` otherwise. Bad packages are refused, all named, and change nothing.
pub async fn pack(tx: &mut Tx, id: &str, packages: &[PackageIn], now: Timestamp) -> Result<Fulfillment> {
    let fulfillment = fulfillment_locked(tx, id).await?;
    let repack = fulfillment.status == FulfillmentStatus::OnHold
        && fulfillment.hold_reason.as_deref() == Some(HOLD_WEIGHT_MISMATCH);
    if fulfillment.status != FulfillmentStatus::Picked && !repack {
        return Err(FulfillmentError::invalid_state(
            "fulfillment",
            fulfillment.status.as_str(),
            "pack: only a picked fulfilment (or one held for a weight mismatch) is packed",
        ));
    }
    let issues = issues(packages, &fulfillment.lines);
    if !issues.is_empty() {
        return Err(FulfillmentError::invalid_fields(issues));
    }
    let skus: Vec<String> = fulfillment.lines.iter().map(|l| l.sku.clone()).collect();
    let weights = warehouse::item::weights_of(tx, &skus).await?;
    let settings = crate::settings::settings_of(tx, &fulfillment.warehouse).await?;
    let mut weighed = Vec::with_capacity(packages.len());
    let mut mismatch = false;
    for package in packages {
        let items: i64 =
            package.lines.iter().map(|l| l.quantity * weights.get(&l.sku).copied().flatten().unwrap_or(0)).sum();
        let expected = items + settings.packaging_grams;
        let difference = package.weight_grams - expected;
        mismatch |= difference.abs() > settings.allowed_difference(expected);
        weighed.push(Package {
            weight_grams: package.weight_grams,
            expected_weight_grams: expected,
            difference_grams: difference,
            lines: package.lines.clone(),
        });
    }
    let grams: i64 = packages.iter().map(|p| p.weight_grams).sum();
    let shipping = shipping_of(tx, &fulfillment, grams).await?;
    let (status, reason) = if mismatch {
        (FulfillmentStatus::OnHold, Some(HOLD_WEIGHT_MISMATCH))
    } else {
        (FulfillmentStatus::Packed, None)
    };
    let result = if mismatch { "mismatch" } else { "ok" };
    metrics::counter!("stockroom_packings_total", "result" => result).increment(1);
    sqlx::query(
        "UPDATE fulfillments SET status = $2, hold_reason = $3, packages = $4, shipping = $5, updated_at = $6 \
         WHERE id = $1",
    )
    .bind(id.to_owned())
    .bind(status.as_str())
    .bind(reason)
    .bind(serde_json::to_string(&weighed).unwrap_or_default())
    .bind(shipping.as_ref().map(|s| serde_json::to_string(s).unwrap_or_default()))
    .bind(now.to_rfc3339())
    .execute(&mut **tx)
    .await
    .map_err(store::StoreError::from)?;
    let event = crate::events::status_changed(&fulfillment, status, reason);
    store::outbox::append(tx, &[event], now).await?;
    fulfillment_answer(tx, id).await
}

/// Shipping of `grams` from the fulfilment's warehouse to its order's country at the warehouse's
/// rate, beside what the checkout planned for that warehouse, recorded on the order too. `None`
/// without a rate.
async fn shipping_of(tx: &mut Tx, fulfillment: &Fulfillment, grams: i64) -> Result<Option<ShippingCost>> {
    let order = order::record::order_in(tx, &fulfillment.order, false).await?;
    let warehouses = [fulfillment.warehouse.clone()];
    let rates = catalog::channel::shipping_rates_to(tx, &warehouses, &order.address.country, &order.currency).await?;
    let Some(&(base_minor, per_kg_minor)) = rates.get(&fulfillment.warehouse) else { return Ok(None) };
    let actual = order::sourcing::shipping_minor(&order::sourcing::Rate { base_minor, per_kg_minor }, grams);
    let planned = order.sourcing["shipments"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["warehouse"] == fulfillment.warehouse.as_str())
        .and_then(|s| s["shipping_minor"].as_i64())
        .unwrap_or(0);
    order::record::record_shipping(tx, &fulfillment.id, planned, actual).await?;
    let money = |minor: i64| order.currency.format_amount(minor);
    Ok(Some(ShippingCost {
        planned: money(planned),
        actual: money(actual),
        adjustment: money(actual - planned),
        currency: order.currency.to_string(),
    }))
}
