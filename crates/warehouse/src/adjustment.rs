//! Adjustments: corrections of on hand by a delta (damage, loss, found stock) or to a counted
//! figure.

use crate::ledger::{Journal, MovementKind, NewMovement};
use crate::stock::{
    Level, stock_level_create, stock_level_find, stock_level_in_tx, stock_level_receive, stock_level_set_counted,
    stock_level_take,
};
use crate::{Result, ShortLine, WarehouseError};
use kernel::{SkuCode, Timestamp, WarehouseCode};
use serde::Serialize;
use store::Tx;

/// How many times a count retries when on hand changes between reading and setting it.
const COUNT_ATTEMPTS_MAX: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Add (or, when negative, remove) this many units; never zero.
    Delta(i64),
    /// Set on hand to this figure.
    Counted(i64),
}

#[derive(Debug, Clone)]
pub struct Adjustment {
    pub warehouse: WarehouseCode,
    pub sku: SkuCode,
    pub change: Change,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct AdjustmentView {
    pub id: String,
    pub warehouse: String,
    pub sku: String,
    pub kind: String,
    pub on_hand_delta: i64,
    pub on_hand: i64,
    pub reserved: i64,
    pub available: i64,
    pub reason: Option<String>,
    pub at: String,
}

/// Applies the adjustment; refuses with `InsufficientStock` if on hand would drop below
/// reserved.
pub async fn adjust(tx: &mut Tx, adjustment: Adjustment, now: Timestamp) -> Result<AdjustmentView> {
    crate::site::require_warehouse(tx, "warehouse", &adjustment.warehouse).await?;
    crate::item::require_items(tx, [("sku".to_owned(), &adjustment.sku)]).await?;
    let (sku, warehouse) = (&adjustment.sku, &adjustment.warehouse);

    let (kind, delta, level) = match adjustment.change {
        Change::Delta(delta) if delta > 0 => {
            (MovementKind::Adjustment, delta, stock_level_receive(tx, sku, warehouse, delta).await?)
        }
        Change::Delta(delta) => match stock_level_take(tx, sku, warehouse, -delta).await? {
            Some(level) => (MovementKind::Adjustment, delta, level),
            None => return Err(short(tx, sku, warehouse, -delta).await?),
        },
        Change::Counted(counted) => {
            let mut outcome = None;
            for _ in 0..COUNT_ATTEMPTS_MAX {
                let existing = stock_level_find(tx, sku, warehouse).await?;
                let before = existing.unwrap_or(Level { on_hand: 0, reserved: 0 });
                if counted < before.reserved {
                    return Err(WarehouseError::InsufficientStock {
                        lines: vec![ShortLine {
                            sku: sku.to_string(),
                            warehouse: Some(warehouse.to_string()),
                            requested: before.reserved,
                            available: counted,
                        }],
                    });
                }
                let delta = counted - before.on_hand;
                // Both branches only write if nobody changed the level since we read it.
                let level = match existing {
                    None => stock_level_create(tx, sku, warehouse, counted).await?,
                    Some(_) => stock_level_set_counted(tx, sku, warehouse, before.on_hand, counted).await?,
                };
                if let Some(level) = level {
                    outcome = Some((MovementKind::Count, delta, level));
                    break;
                }
            }
            outcome.ok_or_else(|| WarehouseError::Contention(format!("stock {warehouse}/{sku}")))?
        }
    };

    let mut journal = Journal::new();
    let id = format!("adj_{}", uuid::Uuid::now_v7().simple());
    journal.stock_changed(NewMovement {
        warehouse: warehouse.clone(),
        sku: sku.clone(),
        kind,
        on_hand_delta: delta,
        reserved_delta: 0,
        on_hand_after: level.on_hand,
        reserved_after: level.reserved,
        reference: Some(id.clone()),
        reason: adjustment.reason.clone(),
    });
    journal.flush(tx, now).await?;
    Ok(AdjustmentView {
        id,
        warehouse: warehouse.to_string(),
        sku: sku.to_string(),
        kind: kind.as_str().to_owned(),
        on_hand_delta: delta,
        on_hand: level.on_hand,
        reserved: level.reserved,
        available: level.available(),
        reason: adjustment.reason,
        at: now.to_rfc3339(),
    })
}

async fn short(tx: &mut Tx, sku: &SkuCode, warehouse: &WarehouseCode, requested: i64) -> Result<WarehouseError> {
    let level = stock_level_in_tx(tx, sku, warehouse).await?;
    Ok(WarehouseError::InsufficientStock {
        lines: vec![ShortLine {
            sku: sku.to_string(),
            warehouse: Some(warehouse.to_string()),
            requested,
            available: level.available(),
        }],
    })
}
