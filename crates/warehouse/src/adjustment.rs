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
    /// Required for lot-tracked items: the lot adjusted or counted.
    pub lot: Option<String>,
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
    let mut issues = crate::error::Issues::default();
    let known = check(tx, &adjustment.warehouse, &adjustment.sku, adjustment.lot.is_some(), &mut issues).await?;
    issues.finish()?;
    let (sku, warehouse) = (&adjustment.sku, &adjustment.warehouse);
    let tracks_lots = known.iter().any(|(_, lots)| *lots);

    let (kind, delta, level) = if tracks_lots {
        adjust_lot(tx, &adjustment).await?
    } else {
        match adjustment.change {
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
                                reason: None,
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
        }
    };
    if delta < 0 {
        crate::bin::bins_shrink_to(tx, warehouse, sku, level.on_hand).await?;
    }

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
            reason: None,
        }],
    })
}

/// An adjustment or count of one lot of a lot-tracked item, and the level with it.
async fn adjust_lot(tx: &mut Tx, adjustment: &Adjustment) -> Result<(MovementKind, i64, Level)> {
    let (sku, warehouse) = (&adjustment.sku, &adjustment.warehouse);
    let Some(lot) = &adjustment.lot else {
        return Err(WarehouseError::invalid("lot", format!("is required: item {sku} tracks lots")));
    };
    let lot_level: Option<(i64, i64)> =
        sqlx::query_as("SELECT on_hand, reserved FROM stock_lots WHERE sku = $1 AND warehouse = $2 AND lot = $3")
            .bind(sku.as_str().to_owned())
            .bind(warehouse.as_str().to_owned())
            .bind(lot.clone())
            .fetch_optional(&mut **tx)
            .await?;
    let Some((lot_on_hand, lot_reserved)) = lot_level else {
        return Err(WarehouseError::invalid("lot", format!("no lot {lot} of {sku} in {warehouse}: receive it first")));
    };
    let (kind, delta) = match adjustment.change {
        Change::Delta(delta) => (MovementKind::Adjustment, delta),
        Change::Counted(counted) => (MovementKind::Count, counted - lot_on_hand),
    };
    if !crate::lot::lot_change(tx, sku.as_str(), warehouse.as_str(), lot, delta, 0).await? {
        return Err(WarehouseError::InsufficientStock {
            lines: vec![ShortLine {
                sku: sku.to_string(),
                warehouse: Some(warehouse.to_string()),
                requested: -delta,
                available: lot_on_hand - lot_reserved,
                reason: None,
            }],
        });
    }
    let level = match delta {
        d if d > 0 => stock_level_receive(tx, sku, warehouse, d).await?,
        0 => stock_level_in_tx(tx, sku, warehouse).await?,
        d => stock_level_take(tx, sku, warehouse, -d)
            .await?
            .ok_or_else(|| WarehouseError::Contention(format!("stock {warehouse}/{sku}")))?,
    };
    Ok((kind, delta, level))
}

/// Applies each adjustment on its own within the caller's transaction (a savepoint per
/// line): a refused line changes nothing and the others still apply. The outer error is a
/// database failure.
pub async fn adjust_many(
    tx: &mut Tx,
    adjustments: Vec<Adjustment>,
    now: Timestamp,
) -> Result<Vec<Result<AdjustmentView>>> {
    let mut outcomes = Vec::with_capacity(adjustments.len());
    for adjustment in adjustments {
        sqlx::query("SAVEPOINT adjust_line").execute(&mut **tx).await?;
        match adjust(tx, adjustment, now).await {
            Err(WarehouseError::Store(e)) => return Err(WarehouseError::Store(e)),
            Ok(view) => {
                sqlx::query("RELEASE SAVEPOINT adjust_line").execute(&mut **tx).await?;
                outcomes.push(Ok(view));
            }
            Err(refusal) => {
                sqlx::query("ROLLBACK TO SAVEPOINT adjust_line").execute(&mut **tx).await?;
                sqlx::query("RELEASE SAVEPOINT adjust_line").execute(&mut **tx).await?;
                outcomes.push(Err(refusal));
            }
        }
    }
    Ok(outcomes)
}

/// What the database finds wrong with an adjustment of `sku` in `warehouse` (with a lot or
/// not), every field at once. Reads only; [`adjust`] refuses with the same.
pub async fn adjustment_issues(
    tx: &mut Tx,
    warehouse: &WarehouseCode,
    sku: &SkuCode,
    with_lot: bool,
) -> Result<Vec<crate::FieldIssue>> {
    let mut issues = crate::error::Issues::default();
    check(tx, warehouse, sku, with_lot, &mut issues).await?;
    Ok(issues.into_vec())
}

async fn check(
    tx: &mut Tx,
    warehouse: &WarehouseCode,
    sku: &SkuCode,
    with_lot: bool,
    issues: &mut crate::error::Issues,
) -> Result<Vec<(String, bool)>> {
    issues.keep(crate::site::require_warehouse(tx, "warehouse", warehouse).await)?;
    let known = crate::item::check_items(tx, [("sku".to_owned(), sku)], issues).await?;
    if known.iter().any(|(_, lots)| !*lots) && with_lot {
        issues.push("lot", format!("must be omitted: item {sku} does not track lots"));
    }
    Ok(known)
}
