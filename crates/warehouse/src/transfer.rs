//! Transfers: moving available stock from one warehouse to another in one transaction.

use crate::ledger::{Journal, MovementKind, NewMovement};
use crate::stock::{stock_level_in_tx, stock_level_receive, stock_level_take};
use crate::{Result, ShortLine, WarehouseError};
use kernel::{Quantity, SkuCode, Timestamp, WarehouseCode};
use serde::Serialize;
use std::collections::BTreeMap;
use store::Tx;

#[derive(Debug, Clone)]
pub struct TransferLine {
    pub sku: SkuCode,
    pub quantity: Quantity,
}

#[derive(Debug, Clone)]
pub struct Transfer {
    pub from: WarehouseCode,
    pub to: WarehouseCode,
    pub reference: Option<String>,
    pub lines: Vec<TransferLine>,
}

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct TransferLineView {
    pub sku: String,
    pub quantity: i64,
}

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct TransferView {
    pub id: String,
    pub from: String,
    pub to: String,
    pub reference: Option<String>,
    pub lines: Vec<TransferLineView>,
    pub at: String,
}

/// Moves the lines' units out of `from`'s available stock and into `to`'s on hand. All or
/// nothing: if a line is short, the error names every short line and the caller rolls back.
pub async fn transfer(tx: &mut Tx, transfer: Transfer, now: Timestamp) -> Result<TransferView> {
    let mut issues = crate::error::Issues::default();
    let known = check(tx, &transfer, &mut issues).await?;
    issues.finish()?;
    let capacity = crate::site::capacity_lock(tx, &transfer.to).await?;

    let id = format!("trf_{}", uuid::Uuid::now_v7().simple());
    let reference = transfer.reference.clone().unwrap_or_else(|| id.clone());
    let mut per_sku: BTreeMap<&SkuCode, i64> = BTreeMap::new();
    for line in &transfer.lines {
        *per_sku.entry(&line.sku).or_default() += line.quantity.get();
    }

    // Rows are locked in (SKU, warehouse) order whatever the direction, so two transfers in
    // opposite directions cannot deadlock.
    let mut journal = Journal::new();
    let mut short = Vec::new();
    for (sku, units) in &per_sku {
        let tracks_lots = known.iter().any(|(k, lots)| k == sku.as_str() && *lots);
        if tracks_lots {
            // Lots move FEFO and keep their code and expiry; expired lots stay behind.
            match crate::lot::lots_take_fefo(tx, sku, &transfer.from, *units, now).await? {
                Ok(taken) => {
                    for (lot, expires_on, q) in taken {
                        crate::lot::lot_receive(tx, sku, &transfer.to, (&lot, &expires_on, q), now, "lines").await?;
                    }
                }
                Err(short_line) => {
                    short.push(short_line);
                    continue;
                }
            }
        }
        let take_first = transfer.from < transfer.to;
        if !take_first {
            receive_line(tx, &mut journal, sku, &transfer.to, *units, &reference).await?;
        }
        match stock_level_take(tx, sku, &transfer.from, *units).await? {
            Some(level) => {
                crate::bin::bins_shrink_to(tx, &transfer.from, sku, level.on_hand).await?;
                journal.stock_changed(NewMovement {
                    warehouse: transfer.from.clone(),
                    sku: (*sku).clone(),
                    kind: MovementKind::TransferOut,
                    on_hand_delta: -units,
                    reserved_delta: 0,
                    on_hand_after: level.on_hand,
                    reserved_after: level.reserved,
                    reference: Some(reference.clone()),
                    reason: None,
                })
            }
            None => short.push(ShortLine {
                sku: sku.to_string(),
                warehouse: Some(transfer.from.to_string()),
                requested: *units,
                available: stock_level_in_tx(tx, sku, &transfer.from).await?.available(),
                reason: None,
            }),
        }
        if take_first {
            receive_line(tx, &mut journal, sku, &transfer.to, *units, &reference).await?;
        }
    }
    if !short.is_empty() {
        return Err(WarehouseError::InsufficientStock { lines: short });
    }
    crate::site::capacity_check(tx, &transfer.to, capacity).await?;
    journal.flush(tx, now).await?;
    Ok(TransferView {
        id,
        from: transfer.from.to_string(),
        to: transfer.to.to_string(),
        reference: transfer.reference,
        lines: per_sku.into_iter().map(|(sku, quantity)| TransferLineView { sku: sku.to_string(), quantity }).collect(),
        at: now.to_rfc3339(),
    })
}

async fn receive_line(
    tx: &mut Tx,
    journal: &mut Journal,
    sku: &SkuCode,
    to: &WarehouseCode,
    units: i64,
    reference: &str,
) -> Result<()> {
    let level = stock_level_receive(tx, sku, to, units).await?;
    // Like a receipt: into a bin already holding the SKU or the emptiest that fits, if any.
    if let Some(bin) = crate::bin::putaway_suggestion(tx, to, sku, units).await? {
        crate::bin::bin_put(tx, to, &bin, sku, units, "lines").await?;
    }
    journal.stock_changed(NewMovement {
        warehouse: to.clone(),
        sku: sku.clone(),
        kind: MovementKind::TransferIn,
        on_hand_delta: units,
        reserved_delta: 0,
        on_hand_after: level.on_hand,
        reserved_after: level.reserved,
        reference: Some(reference.to_owned()),
        reason: None,
    });
    Ok(())
}

/// What the database finds wrong with a transfer, every field at once: both warehouses and each
/// line's SKU. Reads only; [`transfer`] refuses with the same.
pub async fn transfer_issues(tx: &mut Tx, transfer: &Transfer) -> Result<Vec<crate::FieldIssue>> {
    let mut issues = crate::error::Issues::default();
    check(tx, transfer, &mut issues).await?;
    Ok(issues.into_vec())
}

async fn check(tx: &mut Tx, transfer: &Transfer, issues: &mut crate::error::Issues) -> Result<Vec<(String, bool)>> {
    if transfer.from == transfer.to {
        issues.push("to", "must differ from `from`");
    }
    issues.keep(crate::site::require_warehouse(tx, "from", &transfer.from).await)?;
    if transfer.from != transfer.to {
        issues.keep(crate::site::require_warehouse(tx, "to", &transfer.to).await)?;
    }
    crate::item::check_items(
        tx,
        transfer.lines.iter().enumerate().map(|(i, l)| (format!("lines[{i}].sku"), &l.sku)),
        issues,
    )
    .await
}
