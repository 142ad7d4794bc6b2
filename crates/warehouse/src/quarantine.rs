//! Quarantine and scrap: units on hand that may not be sold, one by one (a whole lot is set
//! aside with [`crate::lot::lot_quarantine`] instead).
//!
//! Every quarantined unit belongs to one `held` entry, so reconciliation can prove a level's
//! `quarantined` the way it proves `reserved` from reservations. An entry is released back to
//! available stock or scrapped (on hand down); each change is a movement with the entry or
//! the caller's reference, in the caller's transaction.
//!
//! Units of a lot-tracked item name their lot. While held they are out of that lot's on hand
//! (so every hold, FEFO plan and lot view stays as it is), and the level's on hand is its
//! lots plus its held entries; released, they go back to the lot they came from.

use crate::ledger::{Journal, MovementKind, NewMovement};
use crate::stock::Level;
use crate::{Result, ShortLine, WarehouseError};
use kernel::{SkuCode, Timestamp, WarehouseCode};
use serde::Serialize;
use sqlx::FromRow;
use store::Tx;

#[derive(Debug, Clone, Serialize, PartialEq, Eq, FromRow, utoipa::ToSchema)]
pub struct QuarantineEntry {
    pub id: String,
    pub sku: String,
    pub warehouse: String,
    pub units: i64,
    /// For a lot-tracked item: the lot the units belong to (and go back to when released).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lot: Option<String>,
    /// `held`, `released` or `scrapped`.
    pub status: String,
    /// What set the units aside: a fulfillment or a return.
    pub reference: Option<String>,
    pub reason: String,
    pub created_at: String,
    pub updated_at: String,
}

/// Where quarantined units come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Free units of the level (on hand stays; available goes down).
    Available,
    /// Units arriving from outside (a damaged return): on hand goes up, set aside at once.
    Arriving,
}

/// Units of one SKU in one warehouse, of one lot for a lot-tracked item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Units {
    pub sku: SkuCode,
    pub warehouse: WarehouseCode,
    /// Required for a lot-tracked item, refused for any other (on the field `lot`).
    pub lot: Option<String>,
    pub units: i64,
}

/// Sets `units` aside as a new held entry, with a `quarantine` movement. From available
/// stock it refuses with `InsufficientStock` when fewer are free (in the lot, for a lot).
pub async fn quarantine_units(
    tx: &mut Tx,
    what: &Units,
    source: Source,
    reference: Option<String>,
    reason: &str,
    now: Timestamp,
) -> Result<QuarantineEntry> {
    let Units { sku, warehouse, units, .. } = what;
    let (sku, warehouse, units) = (sku, warehouse, *units);
    let lot = lot_of(tx, sku, what.lot.as_deref()).await?;
    if let Some(lot) = &lot {
        match source {
            Source::Available => lot_take_free(tx, what, lot).await?,
            Source::Arriving => crate::lot::lot_ensure(tx, sku, warehouse, lot, now).await?,
        }
    }
    let level: Option<Level> = match source {
        Source::Available => {
            sqlx::query_as(
                "UPDATE stock_levels SET quarantined = quarantined + $1 \
                 WHERE sku = $2 AND warehouse = $3 AND on_hand - reserved - quarantined >= $1 \
                 RETURNING on_hand, reserved",
            )
            .bind(units)
            .bind(sku.as_str().to_owned())
            .bind(warehouse.as_str().to_owned())
            .fetch_optional(&mut **tx)
            .await?
        }
        Source::Arriving => {
            crate::stock::stock_level_receive(tx, sku, warehouse, units).await?;
            sqlx::query_as(
                "UPDATE stock_levels SET quarantined = quarantined + $1 WHERE sku = $2 AND warehouse = $3 \
                 RETURNING on_hand, reserved",
            )
            .bind(units)
            .bind(sku.as_str().to_owned())
            .bind(warehouse.as_str().to_owned())
            .fetch_optional(&mut **tx)
            .await?
        }
    };
    let Some(level) = level else {
        let free = free_units(tx, sku, warehouse).await?;
        return Err(WarehouseError::InsufficientStock {
            lines: vec![ShortLine {
                sku: sku.to_string(),
                warehouse: Some(warehouse.to_string()),
                requested: units,
                available: free,
                reason: None,
            }],
        });
    };
    let id = format!("qua_{}", uuid::Uuid::now_v7().simple());
    let at = now.to_rfc3339();
    sqlx::query(
        "INSERT INTO stock_quarantine (id, sku, warehouse, units, status, reference, reason, created_at, updated_at, lot) \
         VALUES ($1, $2, $3, $4, 'held', $5, $6, $7, $7, $8)",
    )
    .bind(id.clone())
    .bind(sku.as_str().to_owned())
    .bind(warehouse.as_str().to_owned())
    .bind(units)
    .bind(reference.clone())
    .bind(reason.to_owned())
    .bind(at.clone())
    .bind(lot.clone())
    .execute(&mut **tx)
    .await?;
    let on_hand_delta = if source == Source::Arriving { units } else { 0 };
    let mut journal = Journal::new();
    journal.stock_changed(movement(sku, warehouse, MovementKind::Quarantine, on_hand_delta, level, &id, reason));
    journal.flush(tx, now).await?;
    Ok(QuarantineEntry {
        id,
        sku: sku.to_string(),
        warehouse: warehouse.to_string(),
        units,
        lot,
        status: "held".into(),
        reference,
        reason: reason.to_owned(),
        created_at: at.clone(),
        updated_at: at,
    })
}

/// What to do with a held entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    /// Back to available stock (`quarantine_release` movement).
    Release,
    /// Written off: on hand down (`scrap` movement).
    Scrap,
}

/// Releases or scraps a held entry; anything but `held` is `InvalidState`.
pub async fn quarantine_settle(tx: &mut Tx, id: &str, settle: Settle, now: Timestamp) -> Result<QuarantineEntry> {
    let (status, kind) = match settle {
        Settle::Release => ("released", MovementKind::QuarantineRelease),
        Settle::Scrap => ("scrapped", MovementKind::Scrap),
    };
    let taken: Option<(String, String, i64, Option<String>)> = sqlx::query_as(
        "UPDATE stock_quarantine SET status = $1, updated_at = $2 WHERE id = $3 AND status = 'held' \
         RETURNING sku, warehouse, units, lot",
    )
    .bind(status)
    .bind(now.to_rfc3339())
    .bind(id.to_owned())
    .fetch_optional(&mut **tx)
    .await?;
    let Some((sku, warehouse, units, lot)) = taken else {
        let current = quarantine_get(tx, id).await?;
        return Err(WarehouseError::InvalidState {
            what: "quarantine entry",
            from: current.status,
            action: "be released or scrapped: only a held entry can",
        });
    };
    let on_hand_delta = if settle == Settle::Scrap { -units } else { 0 };
    // Released units go back to their lot; scrapped ones were in none.
    if let Some(lot) = &lot
        && settle == Settle::Release
    {
        crate::lot::lot_change_held(tx, &sku, &warehouse, lot, units, 0).await?;
    }
    let level: Level = sqlx::query_as(
        "UPDATE stock_levels SET quarantined = quarantined - $1, on_hand = on_hand + $2 \
         WHERE sku = $3 AND warehouse = $4 AND quarantined >= $1 RETURNING on_hand, reserved",
    )
    .bind(units)
    .bind(on_hand_delta)
    .bind(sku.clone())
    .bind(warehouse.clone())
    .fetch_optional(&mut **tx)
    .await?
    .ok_or_else(|| corrupt(format!("stock {warehouse}/{sku}: quarantined below an entry's units")))?;
    let sku = SkuCode::parse(sku).map_err(|e| corrupt(format!("stored SKU: {e}")))?;
    let warehouse = WarehouseCode::parse(warehouse).map_err(|e| corrupt(format!("stored warehouse: {e}")))?;
    if settle == Settle::Scrap {
        crate::bin::bins_shrink_to(tx, &warehouse, &sku, level.on_hand).await?;
    }
    let reason = if settle == Settle::Scrap { "scrapped from quarantine" } else { "released from quarantine" };
    let mut journal = Journal::new();
    journal.stock_changed(movement(&sku, &warehouse, kind, on_hand_delta, level, id, reason));
    journal.flush(tx, now).await?;
    quarantine_get(tx, id).await
}

/// Writes off `units` of free stock (on hand down) with a `scrap` movement; refuses with
/// `InsufficientStock` when fewer are free. A unit that never entered stock is recorded with
/// [`scrap_record`] instead.
pub async fn scrap_free(tx: &mut Tx, what: &Units, reference: &str, reason: &str, now: Timestamp) -> Result<()> {
    let Units { sku, warehouse, units, .. } = what;
    let (sku, warehouse, units) = (sku, warehouse, *units);
    if let Some(lot) = lot_of(tx, sku, what.lot.as_deref()).await? {
        lot_take_free(tx, what, &lot).await?;
    }
    let Some(level) = crate::stock::stock_level_take(tx, sku, warehouse, units).await? else {
        let free = free_units(tx, sku, warehouse).await?;
        return Err(WarehouseError::InsufficientStock {
            lines: vec![ShortLine {
                sku: sku.to_string(),
                warehouse: Some(warehouse.to_string()),
                requested: units,
                available: free,
                reason: None,
            }],
        });
    };
    crate::bin::bins_shrink_to(tx, warehouse, sku, level.on_hand).await?;
    let mut journal = Journal::new();
    journal.stock_changed(movement(sku, warehouse, MovementKind::Scrap, -units, level, reference, reason));
    journal.flush(tx, now).await?;
    Ok(())
}

/// Takes `units` returned by a customer back into available stock (on hand up, a `return`
/// movement) and puts them away in the bin [`crate::bin::putaway_suggestion`] picks, if any.
/// Answers that bin. Units of a lot-tracked item go back to the lot they name.
pub async fn return_units(
    tx: &mut Tx,
    what: &Units,
    reference: &str,
    reason: &str,
    now: Timestamp,
) -> Result<Option<String>> {
    let Units { sku, warehouse, units, .. } = what;
    let (sku, warehouse, units) = (sku, warehouse, *units);
    if let Some(lot) = lot_of(tx, sku, what.lot.as_deref()).await? {
        crate::lot::lot_ensure(tx, sku, warehouse, &lot, now).await?;
        crate::lot::lot_change_held(tx, sku.as_str(), warehouse.as_str(), &lot, units, 0).await?;
    }
    let level = crate::stock::stock_level_receive(tx, sku, warehouse, units).await?;
    let bin = crate::bin::putaway_suggestion(tx, warehouse, sku, units).await?;
    if let Some(bin) = &bin {
        crate::bin::bin_put(tx, warehouse, bin, sku, units, "bin").await?;
    }
    let mut journal = Journal::new();
    journal.stock_changed(movement(sku, warehouse, MovementKind::Return, units, level, reference, reason));
    journal.flush(tx, now).await?;
    Ok(bin)
}

/// Records units written off that never entered stock (a defective return): a `scrap`
/// movement with zero deltas, so the ledger still shows where they went.
pub async fn scrap_record(
    tx: &mut Tx,
    sku: &SkuCode,
    warehouse: &WarehouseCode,
    reference: &str,
    reason: &str,
    now: Timestamp,
) -> Result<()> {
    let level = crate::stock::stock_level_in_tx(tx, sku, warehouse).await?;
    let mut journal = Journal::new();
    journal.stock_changed(movement(sku, warehouse, MovementKind::Scrap, 0, level, reference, reason));
    journal.flush(tx, now).await
}

/// Entries of a warehouse (all, or those in `status`), oldest first.
pub async fn quarantine_list(
    pool: &sqlx::AnyPool,
    warehouse: Option<&WarehouseCode>,
    status: Option<&str>,
    limit: u32,
) -> Result<Vec<QuarantineEntry>> {
    Ok(sqlx::query_as(
        "SELECT id, sku, warehouse, units, lot, status, reference, reason, created_at, updated_at FROM stock_quarantine \
         WHERE ($1 IS NULL OR warehouse = $1) AND ($2 IS NULL OR status = $2) ORDER BY id LIMIT $3",
    )
    .bind(warehouse.map(|w| w.as_str().to_owned()))
    .bind(status.map(str::to_owned))
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?)
}

async fn quarantine_get(tx: &mut Tx, id: &str) -> Result<QuarantineEntry> {
    sqlx::query_as(
        "SELECT id, sku, warehouse, units, lot, status, reference, reason, created_at, updated_at FROM stock_quarantine \
         WHERE id = $1",
    )
    .bind(id.to_owned())
    .fetch_optional(&mut **tx)
    .await?
    .ok_or_else(|| WarehouseError::NotFound { what: "quarantine entry", key: id.to_owned() })
}

/// The lot `lot` names for `sku`: required for a lot-tracked item, refused for any other.
async fn lot_of(tx: &mut Tx, sku: &SkuCode, lot: Option<&str>) -> Result<Option<String>> {
    let tracks_lots: Option<i64> = sqlx::query_scalar("SELECT track_lots FROM items WHERE sku = $1")
        .bind(sku.as_str().to_owned())
        .fetch_optional(&mut **tx)
        .await?;
    match (tracks_lots, lot) {
        (None, _) => Err(WarehouseError::NotFound { what: "item", key: sku.to_string() }),
        (Some(1), Some(lot)) => Ok(Some(lot.to_owned())),
        (Some(1), None) => Err(WarehouseError::invalid("lot", format!("item {sku} tracks lots: name the lot"))),
        (Some(_), Some(_)) => Err(WarehouseError::invalid("lot", format!("item {sku} does not track lots"))),
        (Some(_), None) => Ok(None),
    }
}

/// Takes free units out of a lot's on hand (quarantine or scrap from stock), or refuses with
/// the lot's free units.
async fn lot_take_free(tx: &mut Tx, what: &Units, lot: &str) -> Result<()> {
    let (sku, warehouse) = (what.sku.as_str(), what.warehouse.as_str());
    if crate::lot::lot_change(tx, sku, warehouse, lot, -what.units, 0).await? {
        return Ok(());
    }
    let free: Option<i64> =
        sqlx::query_scalar("SELECT on_hand - reserved FROM stock_lots WHERE sku = $1 AND warehouse = $2 AND lot = $3")
            .bind(sku.to_owned())
            .bind(warehouse.to_owned())
            .bind(lot.to_owned())
            .fetch_optional(&mut **tx)
            .await?;
    let Some(free) = free else {
        return Err(WarehouseError::invalid("lot", format!("no lot {lot} of {sku} in {warehouse}")));
    };
    Err(WarehouseError::InsufficientStock {
        lines: vec![ShortLine {
            sku: sku.to_owned(),
            warehouse: Some(warehouse.to_owned()),
            requested: what.units,
            available: free.max(0),
            reason: None,
        }],
    })
}

async fn free_units(tx: &mut Tx, sku: &SkuCode, warehouse: &WarehouseCode) -> Result<i64> {
    Ok(sqlx::query_scalar::<_, i64>(
        "SELECT on_hand - reserved - quarantined FROM stock_levels WHERE sku = $1 AND warehouse = $2",
    )
    .bind(sku.as_str().to_owned())
    .bind(warehouse.as_str().to_owned())
    .fetch_optional(&mut **tx)
    .await?
    .unwrap_or(0)
    .max(0))
}

fn movement(
    sku: &SkuCode,
    warehouse: &WarehouseCode,
    kind: MovementKind,
    on_hand_delta: i64,
    level: Level,
    reference: &str,
    reason: &str,
) -> NewMovement {
    NewMovement {
        warehouse: warehouse.clone(),
        sku: sku.clone(),
        kind,
        on_hand_delta,
        reserved_delta: 0,
        on_hand_after: level.on_hand,
        reserved_after: level.reserved,
        reference: Some(reference.to_owned()),
        reason: Some(reason.to_owned()),
    }
}

fn corrupt(message: String) -> WarehouseError {
    WarehouseError::Store(store::StoreError::Corrupt(message))
}
