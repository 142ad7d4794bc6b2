//! Receipts: goods arriving at a warehouse.

use crate::Result;
use crate::error::Issues;
use crate::ledger::{Journal, MovementKind, NewMovement};
use crate::stock::stock_level_receive;
use kernel::{Quantity, SkuCode, Timestamp, WarehouseCode};
use serde::Serialize;
use std::collections::BTreeMap;
use store::Tx;

#[derive(Debug, Clone)]
pub struct ReceiptLine {
    pub sku: SkuCode,
    pub quantity: Quantity,
    pub lot: Option<String>,
    pub expires_on: Option<String>,
    pub bin: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Receipt {
    pub warehouse: WarehouseCode,
    pub reference: Option<String>,
    pub lines: Vec<ReceiptLine>,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, utoipa::ToSchema)]
pub struct ReceiptLineView {
    pub sku: String,
    pub quantity: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lot: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_on: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bin: Option<String>,
    /// On hand of this SKU in the warehouse after the receipt.
    pub on_hand: i64,
}

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct ReceiptView {
    pub id: String,
    pub warehouse: String,
    pub reference: Option<String>,
    pub lines: Vec<ReceiptLineView>,
    pub received_at: String,
}

/// Adds the lines to on hand: one movement per SKU (lines of the same SKU are summed).
///
/// Lot-tracked items go into their lot. A line with a `bin` goes into that bin; without one,
/// into the putaway suggestion (a bin already holding the SKU, else the emptiest that fits),
/// or stays unbinned. Refused with `CapacityExceeded` if the warehouse or a bin would overflow;
/// the caller then rolls back.
pub async fn receive(tx: &mut Tx, receipt: Receipt, now: Timestamp) -> Result<ReceiptView> {
    let mut issues = Issues::default();
    let known = check(tx, &receipt, &mut issues).await?;
    issues.finish()?;
    let capacity = crate::site::capacity_lock(tx, &receipt.warehouse).await?;

    let id = format!("rcp_{}", uuid::Uuid::now_v7().simple());
    let reference = receipt.reference.clone().unwrap_or_else(|| id.clone());
    // Sorted by SKU so concurrent receipts lock stock rows in the same order.
    let mut per_sku: BTreeMap<&SkuCode, i64> = BTreeMap::new();
    for line in &receipt.lines {
        *per_sku.entry(&line.sku).or_default() += line.quantity.get();
    }
    let mut journal = Journal::new();
    let mut after: BTreeMap<&SkuCode, i64> = BTreeMap::new();
    for (sku, units) in per_sku {
        let level = stock_level_receive(tx, sku, &receipt.warehouse, units).await?;
        after.insert(sku, level.on_hand);
        journal.stock_changed(NewMovement {
            warehouse: receipt.warehouse.clone(),
            sku: sku.clone(),
            kind: MovementKind::Receipt,
            on_hand_delta: units,
            reserved_delta: 0,
            on_hand_after: level.on_hand,
            reserved_after: level.reserved,
            reference: Some(reference.clone()),
            reason: None,
        });
    }
    crate::site::capacity_check(tx, &receipt.warehouse, capacity).await?;

    let mut bins = Vec::with_capacity(receipt.lines.len());
    for (i, line) in receipt.lines.iter().enumerate() {
        let tracks_lots = known.iter().any(|(sku, lots)| sku == line.sku.as_str() && *lots);
        if tracks_lots && let (Some(lot), Some(expires_on)) = (&line.lot, &line.expires_on) {
            let field = format!("lines[{i}].expires_on");
            crate::lot::lot_receive(
                tx,
                &line.sku,
                &receipt.warehouse,
                (lot, expires_on, line.quantity.get()),
                now,
                &field,
            )
            .await?;
        }
        let bin = match &line.bin {
            Some(bin) => Some(bin.clone()),
            None => crate::bin::putaway_suggestion(tx, &receipt.warehouse, &line.sku, line.quantity.get()).await?,
        };
        if let Some(bin) = &bin {
            let field = format!("lines[{i}].bin");
            crate::bin::bin_put(tx, &receipt.warehouse, bin, &line.sku, line.quantity.get(), &field).await?;
        }
        bins.push(bin);
    }
    journal.flush(tx, now).await?;
    let lines = receipt
        .lines
        .iter()
        .zip(bins)
        .map(|(l, bin)| ReceiptLineView {
            sku: l.sku.to_string(),
            quantity: l.quantity.get(),
            lot: l.lot.clone(),
            expires_on: l.expires_on.clone(),
            bin,
            on_hand: after.get(&l.sku).copied().unwrap_or_default(),
        })
        .collect();
    let view = ReceiptView {
        id,
        warehouse: receipt.warehouse.to_string(),
        reference: receipt.reference,
        lines,
        received_at: now.to_rfc3339(),
    };
    // Recorded as answered, so `GET /v1/receipts/{id}` shows what the receipt did.
    sqlx::query("INSERT INTO receipts (id, warehouse, reference, lines, created_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(view.id.clone())
        .bind(view.warehouse.clone())
        .bind(view.reference.clone())
        .bind(serde_json::to_string(&view.lines).unwrap_or_default())
        .bind(view.received_at.clone())
        .execute(&mut **tx)
        .await?;
    Ok(view)
}

type ReceiptRow = (String, String, Option<String>, String, String);

fn receipt_of((id, warehouse, reference, lines, received_at): ReceiptRow) -> Result<ReceiptView> {
    let lines = serde_json::from_str(&lines)
        .map_err(|_| crate::WarehouseError::Store(store::StoreError::Corrupt(format!("receipt {id}: stored lines"))))?;
    Ok(ReceiptView { id, warehouse, reference, lines, received_at })
}

/// One receipt as it was answered, or `NotFound`. Rows an import applied in bulk are not
/// receipts of their own (their movements carry the import's reference).
pub async fn receipt_get(pool: &sqlx::AnyPool, id: &str) -> Result<ReceiptView> {
    let row: Option<ReceiptRow> =
        sqlx::query_as("SELECT id, warehouse, reference, lines, created_at FROM receipts WHERE id = $1")
            .bind(id.to_owned())
            .fetch_optional(pool)
            .await?;
    receipt_of(row.ok_or_else(|| crate::WarehouseError::NotFound { what: "receipt", key: id.to_owned() })?)
}

/// Receipts oldest first (ids are time-ordered), after the id `after`, of one warehouse or all.
pub async fn receipts_list(
    pool: &sqlx::AnyPool,
    warehouse: Option<&str>,
    after: Option<&str>,
    limit: u32,
) -> Result<Vec<ReceiptView>> {
    let rows: Vec<ReceiptRow> = sqlx::query_as(
        "SELECT id, warehouse, reference, lines, created_at FROM receipts \
         WHERE id > $1 AND ($2 = '' OR warehouse = $2) ORDER BY id LIMIT $3",
    )
    .bind(after.unwrap_or("").to_owned())
    .bind(warehouse.unwrap_or("").to_owned())
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(receipt_of).collect()
}

/// What the database finds wrong with a receipt, every field at once: the warehouse, each
/// line's SKU, each line's lot fields. Reads only; [`receive`] refuses with the same.
pub async fn receipt_issues(tx: &mut Tx, receipt: &Receipt) -> Result<Vec<crate::FieldIssue>> {
    let mut issues = Issues::default();
    check(tx, receipt, &mut issues).await?;
    Ok(issues.into_vec())
}

async fn check(tx: &mut Tx, receipt: &Receipt, issues: &mut Issues) -> Result<Vec<(String, bool)>> {
    // Every bad field at once: the warehouse, each line's SKU, and each line's lot fields.
    issues.keep(crate::site::require_warehouse(tx, "warehouse", &receipt.warehouse).await)?;
    let known = crate::item::check_items(
        tx,
        receipt.lines.iter().enumerate().map(|(i, l)| (format!("lines[{i}].sku"), &l.sku)),
        issues,
    )
    .await?;
    for (i, line) in receipt.lines.iter().enumerate() {
        let Some((_, tracks_lots)) = known.iter().find(|(sku, _)| sku == line.sku.as_str()) else {
            continue;
        };
        for (name, value) in [("lot", &line.lot), ("expires_on", &line.expires_on)] {
            if *tracks_lots && value.is_none() {
                issues.push(format!("lines[{i}].{name}"), format!("is required: item {} tracks lots", line.sku));
            } else if !*tracks_lots && value.is_some() {
                // Never echoed and dropped: an item that does not track lots has no lot to put it in.
                issues.push(
                    format!("lines[{i}].{name}"),
                    format!("must be omitted: item {} does not track lots", line.sku),
                );
            }
        }
    }
    Ok(known)
}
