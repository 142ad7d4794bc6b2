//! Lots and expiry: stock of lot-tracked items is kept per lot, and holds and shipments take
//! lots first expiry first, then first received (FEFO).
//!
//! A lot expires at the start (UTC) of its `expires_on` date. From that instant its free
//! units stop counting as available, whether or not the lot expiry worker has run; the worker
//! ([`record_lot_expiries`]) then records the expiry with a `lot_expired` movement and a
//! `lot.expired` event. Units stay on hand until written off by an adjustment. The stock level
//! of a lot-tracked item is always the sum of its lots (reconciliation checks it).

use crate::ledger::{Journal, MovementKind, NewMovement};
use crate::{Result, ShortLine, WarehouseError};
use kernel::{NewEvent, SkuCode, Timestamp, WarehouseCode};
use serde::Serialize;
use sqlx::FromRow;
use store::sql::Lock;
use store::sql::list_placeholders;
use store::{Db, Tx};

/// The instant a lot expires: the start of `expires_on` (`YYYY-MM-DD`) in UTC.
pub fn expiry_instant(expires_on: &str) -> Option<Timestamp> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let date = time::Date::parse(expires_on, &format).ok()?;
    let at = date.midnight().assume_utc();
    Some(Timestamp::from_millis((at.unix_timestamp_nanos() / 1_000_000) as i64))
}

/// A lot of one SKU in one warehouse, as loaded for planning.
#[derive(Debug, Clone, FromRow, PartialEq, Eq)]
pub struct LotRow {
    pub sku: String,
    pub warehouse: String,
    pub lot: String,
    pub expires_on: String,
    pub expires_at_ms: i64,
    pub received_at_ms: i64,
    pub on_hand: i64,
    pub reserved: i64,
    #[sqlx(try_from = "store::sql::IntFlag")]
    pub quarantined: bool,
}

impl LotRow {
    /// Units that may be held or shipped at `now`.
    pub fn available_at(&self, now: Timestamp) -> i64 {
        if self.quarantined || self.expires_at_ms <= now.millis() { 0 } else { self.on_hand - self.reserved }
    }

    pub fn status_at(&self, now: Timestamp) -> &'static str {
        if self.quarantined {
            "quarantined"
        } else if self.expires_at_ms <= now.millis() {
            "expired"
        } else {
            "available"
        }
    }
}

/// Lots in FEFO order: first expiry first, then first received (receipt time in milliseconds),
/// then lot code.
pub fn fefo_order(lots: &mut [LotRow]) {
    lots.sort_by(|a, b| {
        (a.expires_at_ms, a.received_at_ms, a.lot.as_str()).cmp(&(b.expires_at_ms, b.received_at_ms, b.lot.as_str()))
    });
}

/// Takes `units` from `lots` (already in FEFO order) at `now`, reducing their free units in
/// place; returns what it took from which lot, or `None` (and takes nothing) if they do not
/// have enough.
pub fn fefo_take(lots: &mut [LotRow], units: i64, now: Timestamp) -> Option<Vec<(String, i64)>> {
    if lots.iter().map(|l| l.available_at(now)).sum::<i64>() < units {
        return None;
    }
    let mut need = units;
    let mut taken = Vec::new();
    for lot in lots.iter_mut() {
        if need == 0 {
            break;
        }
        let take = need.min(lot.available_at(now));
        if take > 0 {
            lot.reserved += take;
            need -= take;
            taken.push((lot.lot.clone(), take));
        }
    }
    Some(taken)
}

/// Lots of `skus`, in (SKU, warehouse) then FEFO order, locked on PostgreSQL.
pub(crate) async fn lots_lock(tx: &mut Tx, skus: &[&SkuCode]) -> Result<Vec<LotRow>> {
    if skus.is_empty() {
        return Ok(Vec::new());
    }
    let skus = &store::sql::padded_in_list(skus);
    let lock = Lock::ForUpdate.clause(store::db::backend_of(tx));
    let sql = format!(
        "SELECT sku, warehouse, lot, expires_on, expires_at_ms, received_at_ms, on_hand, reserved, quarantined \
         FROM stock_lots WHERE sku IN ({}) ORDER BY sku, warehouse, expires_at_ms, received_at_ms, lot{lock}",
        list_placeholders(skus.len(), 1)
    );
    let mut query = sqlx::query_as::<_, LotRow>(sqlx::AssertSqlSafe(sql));
    for sku in skus {
        query = query.bind(sku.as_str().to_owned());
    }
    Ok(query.fetch_all(&mut **tx).await?)
}

/// Adds `units` to a lot's on hand, creating it with `expires_on`. A lot keeps the expiry it
/// was first received with; another date for the same lot is refused on `field`.
pub(crate) async fn lot_receive(
    tx: &mut Tx,
    sku: &SkuCode,
    warehouse: &WarehouseCode,
    (lot, expires_on, units): (&str, &str, i64),
    now: Timestamp,
    field: &str,
) -> Result<()> {
    let expires_at =
        expiry_instant(expires_on).ok_or_else(|| WarehouseError::invalid(field, "must be a date YYYY-MM-DD"))?;
    let existing: Option<String> =
        sqlx::query_scalar("SELECT expires_on FROM stock_lots WHERE sku = $1 AND warehouse = $2 AND lot = $3")
            .bind(sku.as_str().to_owned())
            .bind(warehouse.as_str().to_owned())
            .bind(lot.to_owned())
            .fetch_optional(&mut **tx)
            .await?;
    if let Some(known) = existing
        && known != expires_on
    {
        return Err(WarehouseError::invalid(field, format!("lot {lot} of {sku} expires on {known}")));
    }
    sqlx::query(
        "INSERT INTO stock_lots (sku, warehouse, lot, expires_on, expires_at_ms, received_at_ms, on_hand, reserved) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, 0) \
         ON CONFLICT (sku, warehouse, lot) DO UPDATE SET on_hand = stock_lots.on_hand + excluded.on_hand",
    )
    .bind(sku.as_str().to_owned())
    .bind(warehouse.as_str().to_owned())
    .bind(lot.to_owned())
    .bind(expires_on.to_owned())
    .bind(expires_at.millis())
    .bind(now.millis())
    .bind(units)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Makes sure `warehouse` has a row for `lot` of `sku` (units coming back from a customer to
/// another warehouse than the one that shipped them), with the expiry that lot has elsewhere.
/// A lot no warehouse knows is refused on `lot`.
pub(crate) async fn lot_ensure(
    tx: &mut Tx,
    sku: &SkuCode,
    warehouse: &WarehouseCode,
    lot: &str,
    now: Timestamp,
) -> Result<()> {
    let known: Vec<(String, String)> =
        sqlx::query_as("SELECT warehouse, expires_on FROM stock_lots WHERE sku = $1 AND lot = $2 ORDER BY warehouse")
            .bind(sku.as_str().to_owned())
            .bind(lot.to_owned())
            .fetch_all(&mut **tx)
            .await?;
    if known.iter().any(|(w, _)| w == warehouse.as_str()) {
        return Ok(());
    }
    let Some((_, expires_on)) = known.first() else {
        return Err(WarehouseError::invalid("lot", format!("no warehouse holds lot {lot} of {sku}")));
    };
    lot_receive(tx, sku, warehouse, (lot, expires_on, 0), now, "lot").await
}

/// Changes a lot's on hand and reserved by the deltas, guarded so reserved stays within
/// `0..=on_hand`; false if the guard did not hold.
pub(crate) async fn lot_change(
    tx: &mut Tx,
    sku: &str,
    warehouse: &str,
    lot: &str,
    on_hand_delta: i64,
    reserved_delta: i64,
) -> Result<bool> {
    Ok(sqlx::query(
        "UPDATE stock_lots SET on_hand = on_hand + $1, reserved = reserved + $2 \
         WHERE sku = $3 AND warehouse = $4 AND lot = $5 AND reserved + $2 >= 0 AND on_hand + $1 >= reserved + $2",
    )
    .bind(on_hand_delta)
    .bind(reserved_delta)
    .bind(sku.to_owned())
    .bind(warehouse.to_owned())
    .bind(lot.to_owned())
    .execute(&mut **tx)
    .await?
    .rows_affected()
        == 1)
}

/// Like [`lot_change`] but a failed guard is a broken invariant (the units were held).
pub(crate) async fn lot_change_held(
    tx: &mut Tx,
    sku: &str,
    warehouse: &str,
    lot: &str,
    on_hand_delta: i64,
    reserved_delta: i64,
) -> Result<()> {
    if lot_change(tx, sku, warehouse, lot, on_hand_delta, reserved_delta).await? {
        Ok(())
    } else {
        Err(WarehouseError::Store(store::StoreError::Corrupt(format!(
            "lot {lot} of {sku} in {warehouse} does not hold what a reservation holds"
        ))))
    }
}

/// Takes `units` of free, unexpired stock out of a warehouse's lots, FEFO (transfers);
/// returns the lots taken with their expiry, or the short line.
pub(crate) async fn lots_take_fefo(
    tx: &mut Tx,
    sku: &SkuCode,
    warehouse: &WarehouseCode,
    units: i64,
    now: Timestamp,
) -> Result<std::result::Result<Vec<(String, String, i64)>, ShortLine>> {
    let mut lots: Vec<LotRow> =
        lots_lock(tx, &[sku]).await?.into_iter().filter(|l| l.warehouse == warehouse.as_str()).collect();
    fefo_order(&mut lots);
    let available: i64 = lots.iter().map(|l| l.available_at(now)).sum();
    let Some(taken) = fefo_take(&mut lots, units, now) else {
        return Ok(Err(ShortLine {
            sku: sku.to_string(),
            warehouse: Some(warehouse.to_string()),
            requested: units,
            available,
            reason: None,
        }));
    };
    let mut out = Vec::with_capacity(taken.len());
    for (lot, q) in taken {
        lot_change_held(tx, sku.as_str(), warehouse.as_str(), &lot, -q, 0).await?;
        let expires_on = lots.iter().find(|l| l.lot == lot).map(|l| l.expires_on.clone()).unwrap_or_default();
        out.push((lot, expires_on, q));
    }
    Ok(Ok(out))
}

/// A lot as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct LotView {
    pub warehouse: String,
    pub lot: String,
    pub expires_on: String,
    pub on_hand: i64,
    pub reserved: i64,
    pub available: i64,
    /// `available`, `expired` or `quarantined`.
    pub status: String,
}

/// Lots of a SKU with stock, by warehouse and FEFO order.
pub async fn lots_view(pool: &sqlx::AnyPool, sku: &SkuCode, now: Timestamp) -> Result<Vec<LotView>> {
    crate::item::item_get(pool, sku).await?;
    let mut rows: Vec<LotRow> = sqlx::query_as(
        "SELECT sku, warehouse, lot, expires_on, expires_at_ms, received_at_ms, on_hand, reserved, quarantined \
         FROM stock_lots WHERE sku = $1 AND on_hand > 0",
    )
    .bind(sku.as_str().to_owned())
    .fetch_all(pool)
    .await?;
    fefo_order(&mut rows);
    rows.sort_by(|a, b| a.warehouse.cmp(&b.warehouse));
    Ok(rows
        .into_iter()
        .map(|l| LotView {
            available: l.available_at(now),
            status: l.status_at(now).to_owned(),
            warehouse: l.warehouse,
            lot: l.lot,
            expires_on: l.expires_on,
            on_hand: l.on_hand,
            reserved: l.reserved,
        })
        .collect())
}

/// Free units in expired or quarantined lots per (SKU, warehouse) among `skus` at `now`: what
/// the stock level counts as on hand but may not sell.
pub(crate) async fn blocked_units(
    pool: &sqlx::AnyPool,
    skus: &[SkuCode],
    now: Timestamp,
) -> Result<std::collections::HashMap<(String, String), i64>> {
    if skus.is_empty() {
        return Ok(Default::default());
    }
    let sql = format!(
        "SELECT sku, warehouse, CAST(SUM(on_hand - reserved) AS BIGINT) FROM stock_lots \
         WHERE (quarantined = 1 OR expires_at_ms <= $1) AND sku IN ({}) GROUP BY sku, warehouse",
        list_placeholders(skus.len(), 2)
    );
    let mut query = sqlx::query_as::<_, (String, String, i64)>(sqlx::AssertSqlSafe(sql)).bind(now.millis());
    for sku in skus {
        query = query.bind(sku.as_str().to_owned());
    }
    Ok(query.fetch_all(pool).await?.into_iter().map(|(s, w, b)| ((s, w), b)).collect())
}

/// Puts a lot of a SKU in a warehouse in quarantine (`quarantined: true`) or takes it out.
/// A quarantined lot stays on hand, but its free units are not available: holds skip it and
/// the level's available excludes it. Units already held in it stay held (the reservation was
/// promised; cancel it to give them up). Changing the state writes a zero-delta
/// `lot_quarantined` or `lot_released` movement and a `lot.quarantined` or `lot.released`
/// event; asking for the state the lot is in changes nothing.
pub async fn lot_quarantine(
    tx: &mut Tx,
    sku: &SkuCode,
    warehouse: &WarehouseCode,
    lot: &str,
    quarantined: bool,
    reason: Option<String>,
    now: Timestamp,
) -> Result<LotView> {
    crate::site::require_warehouse(tx, "warehouse", warehouse).await?;
    let changed = sqlx::query(
        "UPDATE stock_lots SET quarantined = $1 WHERE sku = $2 AND warehouse = $3 AND lot = $4 AND quarantined <> $1",
    )
    .bind(i64::from(quarantined))
    .bind(sku.as_str().to_owned())
    .bind(warehouse.as_str().to_owned())
    .bind(lot.to_owned())
    .execute(&mut **tx)
    .await?
    .rows_affected();
    let row: LotRow = sqlx::query_as(
        "SELECT sku, warehouse, lot, expires_on, expires_at_ms, received_at_ms, on_hand, reserved, quarantined \
         FROM stock_lots WHERE sku = $1 AND warehouse = $2 AND lot = $3",
    )
    .bind(sku.as_str().to_owned())
    .bind(warehouse.as_str().to_owned())
    .bind(lot.to_owned())
    .fetch_optional(&mut **tx)
    .await?
    .ok_or_else(|| WarehouseError::NotFound { what: "lot", key: format!("{lot} of {sku} in {warehouse}") })?;
    if changed == 1 {
        let level = crate::stock::stock_level_in_tx(tx, sku, warehouse).await?;
        let (kind, into_quarantine, verb) = if quarantined {
            (MovementKind::LotQuarantined, true, "quarantined")
        } else {
            (MovementKind::LotReleased, false, "released from quarantine")
        };
        let free = row.on_hand - row.reserved;
        let mut journal = Journal::new();
        journal.stock_changed(NewMovement {
            warehouse: warehouse.clone(),
            sku: sku.clone(),
            kind,
            on_hand_delta: 0,
            reserved_delta: 0,
            on_hand_after: level.on_hand,
            reserved_after: level.reserved,
            reference: Some(lot.to_owned()),
            reason: Some(match &reason {
                Some(why) => format!("lot {lot} {verb} ({free} free units): {why}"),
                None => format!("lot {lot} {verb} ({free} free units)"),
            }),
        });
        let state = crate::events::LotState {
            warehouse: warehouse.as_str().to_owned(),
            sku: sku.as_str().to_owned(),
            lot: lot.to_owned(),
            on_hand: row.on_hand,
            reserved: row.reserved,
            reason,
        };
        let aggregate = format!("lot:{warehouse}:{sku}:{lot}");
        journal.event(if into_quarantine {
            NewEvent::of(aggregate, &crate::events::LotQuarantined(state))
        } else {
            NewEvent::of(aggregate, &crate::events::LotReleased(state))
        });
        journal.flush(tx, now).await?;
    }
    Ok(LotView {
        available: row.available_at(now),
        status: row.status_at(now).to_owned(),
        warehouse: row.warehouse,
        lot: row.lot,
        expires_on: row.expires_on,
        on_hand: row.on_hand,
        reserved: row.reserved,
    })
}

/// One run of the lot expiry worker: records up to `batch_max` lots that have reached their
/// expiry with a `lot_expired` movement and a `lot.expired` event; returns how many.
pub async fn record_lot_expiries(db: &Db, now: Timestamp, batch_max: i64) -> Result<usize> {
    let mut tx = db.begin().await?;
    let lock = Lock::ForUpdateSkipLocked.clause(db.backend());
    let due: Vec<LotRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT sku, warehouse, lot, expires_on, expires_at_ms, received_at_ms, on_hand, reserved, quarantined \
         FROM stock_lots WHERE expiry_recorded = 0 AND expires_at_ms <= $1 ORDER BY expires_at_ms LIMIT $2{lock}"
    )))
    .bind(now.millis())
    .bind(batch_max)
    .fetch_all(&mut *tx)
    .await?;
    let mut journal = Journal::new();
    for lot in &due {
        // A row that does not parse is corrupt: the run fails (and is counted) before the
        // lot is marked, so its movement and event are not lost.
        let corrupt = |e: kernel::CodeError| {
            WarehouseError::Store(store::StoreError::Corrupt(format!("lot {} of {}: {e}", lot.lot, lot.sku)))
        };
        let sku = SkuCode::parse(lot.sku.clone()).map_err(corrupt)?;
        let warehouse = WarehouseCode::parse(lot.warehouse.clone()).map_err(corrupt)?;
        sqlx::query("UPDATE stock_lots SET expiry_recorded = 1 WHERE sku = $1 AND warehouse = $2 AND lot = $3")
            .bind(lot.sku.clone())
            .bind(lot.warehouse.clone())
            .bind(lot.lot.clone())
            .execute(&mut *tx)
            .await?;
        let level = crate::stock::stock_level_in_tx(&mut tx, &sku, &warehouse).await?;
        journal.stock_changed(NewMovement {
            warehouse,
            sku,
            kind: MovementKind::LotExpired,
            on_hand_delta: 0,
            reserved_delta: 0,
            on_hand_after: level.on_hand,
            reserved_after: level.reserved,
            reference: Some(lot.lot.clone()),
            reason: Some(format!(
                "lot {} expired on {}; {} units no longer available",
                lot.lot,
                lot.expires_on,
                lot.on_hand - lot.reserved
            )),
        });
        journal.event(NewEvent::of(
            format!("lot:{}:{}:{}", lot.warehouse, lot.sku, lot.lot),
            &crate::events::LotExpired {
                warehouse: lot.warehouse.clone(),
                sku: lot.sku.clone(),
                lot: lot.lot.clone(),
                expires_on: lot.expires_on.clone(),
                on_hand: lot.on_hand,
                reserved: lot.reserved,
            },
        ));
    }
    journal.flush(&mut tx, now).await?;
    tx.commit().await?;
    Ok(due.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lot(name: &str, expires_at_ms: i64, received_at_ms: i64, on_hand: i64) -> LotRow {
        LotRow {
            sku: "S".into(),
            warehouse: "W".into(),
            lot: name.into(),
            expires_on: String::new(),
            expires_at_ms,
            received_at_ms,
            on_hand,
            reserved: 0,
            quarantined: false,
        }
    }

    #[test]
    fn fefo_takes_first_expiry_then_first_received_and_skips_expired() {
        let now = Timestamp::from_millis(100);
        let mut lots =
            vec![lot("LATE", 900, 1, 5), lot("SOON-B", 500, 20, 2), lot("SOON-A", 500, 10, 2), lot("GONE", 100, 0, 9)];
        fefo_order(&mut lots);
        let taken = fefo_take(&mut lots, 6, now).unwrap();
        assert_eq!(taken, vec![("SOON-A".into(), 2), ("SOON-B".into(), 2), ("LATE".into(), 2)]);
        assert_eq!(fefo_take(&mut lots, 4, now), None, "3 left in LATE; GONE is expired");
    }

    #[test]
    fn a_lot_expires_at_the_start_of_its_date_in_utc() {
        assert_eq!(expiry_instant("1970-01-02"), Some(Timestamp::from_millis(86_400_000)));
        assert_eq!(expiry_instant("2027-02-30"), None);
    }
}
