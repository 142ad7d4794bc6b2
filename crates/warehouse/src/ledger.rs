//! The movement ledger: one row per change of a stock level, written in the transaction that
//! makes the change, with the level after it. Summing a warehouse and SKU's deltas gives its
//! current level; [`crate::reconcile`] checks exactly that.

use crate::Result;
use kernel::{NewEvent, Page, PageRequest, SkuCode, Timestamp, WarehouseCode};
use serde::Serialize;
use sqlx::{AnyPool, FromRow};
use store::Tx;
use store::sql::Values;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MovementKind {
    Receipt,
    Adjustment,
    Count,
    TransferOut,
    TransferIn,
    Reserve,
    Release,
    Expire,
    Fulfill,
    /// Units moved between bins of one warehouse: no change of the level.
    BinMove,
    /// A lot reached its expiry date: its free units stop being available.
    LotExpired,
    /// A lot was put in quarantine: its free units stop being available.
    LotQuarantined,
    /// A lot left quarantine: its free units are available again (unless expired).
    LotReleased,
    /// Units came back from a customer into available stock.
    Return,
    /// Units were set aside as not for sale (on hand stays; a returned damaged unit comes
    /// onto on hand set aside).
    Quarantine,
    /// Quarantined units were found fit and are available again.
    QuarantineRelease,
    /// Units were written off (failed quality control, defective, scrapped from quarantine).
    Scrap,
}

impl MovementKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MovementKind::Receipt => "receipt",
            MovementKind::Adjustment => "adjustment",
            MovementKind::Count => "count",
            MovementKind::TransferOut => "transfer_out",
            MovementKind::TransferIn => "transfer_in",
            MovementKind::Reserve => "reserve",
            MovementKind::Release => "release",
            MovementKind::Expire => "expire",
            MovementKind::Fulfill => "fulfill",
            MovementKind::BinMove => "bin_move",
            MovementKind::LotExpired => "lot_expired",
            MovementKind::LotQuarantined => "lot_quarantined",
            MovementKind::LotReleased => "lot_released",
            MovementKind::Return => "return",
            MovementKind::Quarantine => "quarantine",
            MovementKind::QuarantineRelease => "quarantine_release",
            MovementKind::Scrap => "scrap",
        }
    }
}

/// A change of one stock level, with the level after it.
#[derive(Debug, Clone)]
pub struct NewMovement {
    pub warehouse: WarehouseCode,
    pub sku: SkuCode,
    pub kind: MovementKind,
    pub on_hand_delta: i64,
    pub reserved_delta: i64,
    pub on_hand_after: i64,
    pub reserved_after: i64,
    pub reference: Option<String>,
    pub reason: Option<String>,
}

/// What a use case changed, written at its end: the movements and the outbox events.
///
/// Buffering lets the append happen last, after every guarded update: the outbox's sequence
/// lock is then held only from the append to the commit (see `store::outbox`).
#[derive(Debug, Default)]
pub struct Journal {
    /// Each movement with how many holds it carries (`reserve` movements of a hold batch;
    /// `None` for every other).
    movements: Vec<(NewMovement, Option<i64>)>,
    events: Vec<NewEvent>,
}

impl Journal {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a movement and its `stock.changed` event.
    pub fn stock_changed(&mut self, movement: NewMovement) {
        self.events.push(NewEvent::of(
            format!("stock:{}:{}", movement.warehouse, movement.sku),
            &crate::events::StockChanged::from(&movement),
        ));
        self.movements.push((movement, None));
    }

    /// Records the `reserve` movement of a stock row carrying `holds` holds of one batch, and
    /// its `stock.changed` event.
    pub fn holds_carried(&mut self, movement: NewMovement, holds: i64) {
        self.stock_changed(movement);
        if let Some((_, carried)) = self.movements.last_mut() {
            *carried = Some(holds);
        }
    }

    pub fn event(&mut self, event: NewEvent) {
        self.events.push(event);
    }

    pub fn is_empty(&self) -> bool {
        self.movements.is_empty() && self.events.is_empty()
    }

    /// Writes the events (taking the sequence lock) and then the movements, so movement
    /// `seq`s also follow commit order.
    pub async fn flush(self, tx: &mut Tx, now: Timestamp) -> Result<()> {
        store::outbox::append(tx, &self.events, now).await?;
        if self.events.is_empty() && !self.movements.is_empty() {
            store::outbox::lock_sequence(tx, 0).await?;
        }
        let at = now.to_rfc3339();
        for chunk in store::sql::fixed_chunks(&self.movements) {
            let mut values = Values::new(tx, 12);
            for (m, carried) in chunk {
                values
                    .row()
                    .text(format!("mov_{}", uuid::Uuid::now_v7().simple()))
                    .text(m.warehouse.as_str())
                    .text(m.sku.as_str())
                    .text(m.kind.as_str())
                    .int(m.on_hand_delta)
                    .int(m.reserved_delta)
                    .int(m.on_hand_after)
                    .int(m.reserved_after)
                    .opt_text(m.reference.clone())
                    .opt_text(m.reason.clone())
                    .text(at.as_str())
                    .opt_int(*carried);
            }
            values
                .query(
                    "INSERT INTO movements (id, warehouse, sku, kind, on_hand_delta, reserved_delta, \
                     on_hand_after, reserved_after, reference, reason, at, reservations) VALUES {values}",
                )
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }
}

impl Journal {
    /// [`Journal::flush`] on SQLite's direct writer (`store::direct`): the same rows in the
    /// same order, one cached single-row statement each.
    pub(crate) fn flush_direct(self, tx: &rusqlite::Transaction<'_>, now: Timestamp) -> Result<()> {
        store::direct::append_events(tx, &self.events, now)?;
        if self.events.is_empty() && !self.movements.is_empty() {
            store::direct::lock_sequence(tx, 0)?;
        }
        let at = now.to_rfc3339();
        let mut insert = tx
            .prepare_cached(
                "INSERT INTO movements (id, warehouse, sku, kind, on_hand_delta, reserved_delta, \
                 on_hand_after, reserved_after, reference, reason, at, reservations) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            )
            .map_err(store::StoreError::from)?;
        for (m, carried) in &self.movements {
            insert
                .execute(rusqlite::params![
                    format!("mov_{}", uuid::Uuid::now_v7().simple()),
                    m.warehouse.as_str(),
                    m.sku.as_str(),
                    m.kind.as_str(),
                    m.on_hand_delta,
                    m.reserved_delta,
                    m.on_hand_after,
                    m.reserved_after,
                    m.reference,
                    m.reason,
                    at,
                    carried,
                ])
                .map_err(store::StoreError::from)?;
        }
        Ok(())
    }
}

/// A movement as the API shows it.
#[derive(Debug, Clone, Serialize, FromRow, PartialEq, utoipa::ToSchema)]
pub struct Movement {
    pub id: String,
    pub seq: i64,
    pub warehouse: String,
    pub sku: String,
    pub kind: String,
    pub on_hand_delta: i64,
    pub reserved_delta: i64,
    pub on_hand_after: i64,
    pub reserved_after: i64,
    pub reference: Option<String>,
    pub reason: Option<String>,
    pub at: String,
    /// `reserve` movements: how many holds this one carries. Holds applied together in one
    /// group-commit batch share one movement per stock row; its `reference` is then the batch
    /// (`hbt_...`), which each of those reservations shows as `hold_batch`. `null` for other
    /// kinds.
    pub reservations: Option<i64>,
}

#[derive(Debug, Clone, Default)]
pub struct MovementFilter {
    pub sku: Option<SkuCode>,
    pub warehouse: Option<WarehouseCode>,
}

/// Movements oldest first, optionally for one SKU and/or warehouse.
pub async fn movements_list(
    pool: &AnyPool,
    filter: &MovementFilter,
    after_seq: i64,
    page: &PageRequest,
) -> Result<Page<Movement>> {
    let rows: Vec<Movement> = sqlx::query_as(
        "SELECT id, seq, warehouse, sku, kind, on_hand_delta, reserved_delta, on_hand_after, \
         reserved_after, reference, reason, at, reservations FROM movements \
         WHERE seq > $1 AND ($2 IS NULL OR sku = $2) AND ($3 IS NULL OR warehouse = $3) \
         ORDER BY seq LIMIT $4",
    )
    .bind(after_seq)
    .bind(filter.sku.as_ref().map(|s| s.as_str().to_owned()))
    .bind(filter.warehouse.as_ref().map(|w| w.as_str().to_owned()))
    .bind(i64::from(page.limit))
    .fetch_all(pool)
    .await?;
    Ok(Page::from_rows(rows, page.limit, |m| m.seq.to_string()))
}
