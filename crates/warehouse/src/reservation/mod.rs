//! Reservations: two-phase holds on stock, like pending transfers in a ledger.
//!
//! `active` (holds stock until `expires_at`) → `confirmed` (holds with no expiry) →
//! `fulfilled` (the stock left: on hand and reserved both go down); or `active`/`confirmed` →
//! `released`; or `active` → `expired`. An expired reservation never blocks a sale: a hold
//! that finds stock short first reclaims due reservations of its SKUs, and the sweeper
//! ([`sweep_expired`]) releases the rest in bounded batches.
//!
//! Holding takes a batch of commands ([`hold_batch`]) and answers one outcome per command,
//! exactly as if they had been applied one by one in order; a batch of one is the simple case.

mod direct;
pub mod group_commit;
pub mod rules;
mod store;

use crate::events;
use crate::ledger::{Journal, MovementKind, NewMovement};
use crate::stock::{stock_level_ship, stock_level_unhold};
use crate::{Result, WarehouseError};
use ::store::{Db, Tx};
use kernel::limits::INLINE_RECLAIM_MAX;
use kernel::{NewEvent, Quantity, ReservationId, SkuCode, Timestamp, WarehouseCode};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Active,
    Confirmed,
    Released,
    Expired,
    Fulfilled,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Confirmed => "confirmed",
            Status::Released => "released",
            Status::Expired => "expired",
            Status::Fulfilled => "fulfilled",
        }
    }

    fn parse(raw: &str) -> Result<Self> {
        Ok(match raw {
            "active" => Status::Active,
            "confirmed" => Status::Confirmed,
            "released" => Status::Released,
            "expired" => Status::Expired,
            "fulfilled" => Status::Fulfilled,
            other => {
                return Err(WarehouseError::Store(::store::StoreError::Corrupt(format!(
                    "unknown reservation status {other}"
                ))));
            }
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct ReservationLine {
    pub sku: String,
    pub warehouse: String,
    pub quantity: i64,
    /// For lot-tracked items: the lots held, first expiry first.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub lots: Vec<LotTake>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct LotTake {
    pub lot: String,
    pub quantity: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Reservation {
    pub id: String,
    pub status: Status,
    /// The caller's reference; `null` when none was given.
    #[serde(default, deserialize_with = "empty_as_none")]
    pub reference: Option<String>,
    /// When an active reservation expires (or an expired one did); `null` once it is
    /// confirmed (it holds with no expiry), fulfilled or released.
    pub expires_at: Option<String>,
    pub created_at: String,
    pub lines: Vec<ReservationLine>,
    /// When this hold was applied in one group-commit batch with other holds: the batch
    /// (`hbt_...`), which the `reserve` movements that carried it name as their `reference`
    /// (one movement per stock row per batch). Absent when the hold was alone: its movements
    /// name the reservation itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_batch: Option<String>,
}

/// Answers stored before references became optional said `""` for none.
fn empty_as_none<'de, D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Option<String>, D::Error> {
    Ok(Option::<String>::deserialize(deserializer)?.filter(|r| !r.is_empty()))
}

impl Reservation {
    /// An active reservation past its expiry reads as expired, swept or not.
    fn read_at(mut self, expires_at: Timestamp, now: Timestamp) -> Self {
        if self.status == Status::Active && expires_at <= now {
            self.status = Status::Expired;
        }
        self
    }

    /// The expiry as shown for a reservation in `status`.
    fn shown_expiry(status: Status, expires_at: Timestamp) -> Option<String> {
        matches!(status, Status::Active | Status::Expired).then(|| expires_at.to_rfc3339())
    }
}

#[derive(Debug, Clone)]
pub struct HoldLine {
    pub sku: SkuCode,
    pub quantity: Quantity,
    /// `None`: the server chooses, and may split across warehouses.
    pub warehouse: Option<WarehouseCode>,
}

#[derive(Debug, Clone)]
pub struct HoldCommand {
    pub id: ReservationId,
    /// `""`: none.
    pub reference: String,
    pub ttl_seconds: i64,
    pub lines: Vec<HoldLine>,
}

/// Applies the commands in order in the caller's transaction and answers one outcome per
/// command: the reservation, or why it was refused (`Invalid`, `InsufficientStock`). A refused
/// command leaves no trace. The outer error is a database failure, after which the caller
/// must roll back.
///
/// The batch is coalesced: the stock rows of all its SKUs are loaded and locked once, the
/// commands are planned one by one against those figures in memory (so outcomes are exactly
/// those of applying them in order), and then each touched row gets one guarded `UPDATE` with
/// its net change, and reservations, movements and events go in with multi-row inserts.
pub async fn hold_batch(tx: &mut Tx, commands: Vec<HoldCommand>, now: Timestamp) -> Result<Vec<Result<Reservation>>> {
    let mut distinct = distinct_skus(&commands);
    let known_items = crate::item::items_known(tx, &distinct).await?;
    let known: HashSet<String> = known_items.iter().map(|(s, _)| s.clone()).collect();
    let lot_tracked: HashSet<String> = known_items.iter().filter(|(_, lots)| *lots).map(|(s, _)| s.clone()).collect();
    distinct.retain(|s| known.contains(s.as_str()));
    let lot_skus: Vec<&SkuCode> = distinct.iter().copied().filter(|s| lot_tracked.contains(s.as_str())).collect();
    let named = named_warehouses(&commands);
    let known_warehouses = crate::site::warehouses_known(tx, &named).await?;
    let inactive = crate::site::warehouses_inactive(tx, &named).await?;

    let mut journal = Journal::new();
    let mut rows = store::stock_rows_lock(tx, &distinct).await?;
    let mut lots = load_lots(tx, &lot_skus).await?;

    // An expired reservation never blocks a sale: where the batch asks for more of a SKU than
    // is available, reclaim that SKU's due reservations first, then read the rows again.
    let short_skus = short_skus(&commands, &distinct, &rows);
    if !short_skus.is_empty() {
        let due = store::reservations_due_holding(tx, &short_skus, now, INLINE_RECLAIM_MAX).await?;
        if expire_reservations(tx, &mut journal, &due, now).await? > 0 {
            rows = store::stock_rows_lock(tx, &distinct).await?;
            lots = load_lots(tx, &lot_skus).await?;
        }
    }

    let reads = HoldReads { known_items, known_warehouses, inactive, rows, lots };
    let planned = plan_holds(reads, commands, now, &mut journal)?;
    let deltas: Vec<(&SkuCode, &WarehouseCode, i64)> = planned.deltas.iter().map(|(s, w, u)| (s, w, *u)).collect();
    store::stock_rows_add_reserved(tx, &deltas).await?;
    for ((sku, warehouse, lot), q) in &planned.lot_net {
        crate::lot::lot_change_held(tx, sku, warehouse, lot, 0, *q).await?;
    }
    store::reservations_insert(tx, &planned.created).await?;
    journal.flush(tx, now).await?;
    metrics::counter!("stockroom_reservations_held_total").increment(planned.created.len() as u64);
    Ok(planned.outcomes)
}

/// [`hold_batch`] on SQLite's direct writer (`store::direct`), for batches of plain holds:
/// the same reads, the same plan ([`plan_holds`]) and the same rows, through cached
/// prepared statements on the writer thread. `None` (nothing written) when the batch needs
/// what only the general path does: lot-tracked SKUs, or due reservations to reclaim first.
pub fn hold_batch_direct(
    tx: &rusqlite::Transaction<'_>,
    commands: Vec<HoldCommand>,
    now: Timestamp,
) -> Result<Option<Vec<Result<Reservation>>>> {
    let mut distinct = distinct_skus(&commands);
    let known_items = direct::items_known(tx, &distinct)?;
    if known_items.iter().any(|(_, lots)| *lots) {
        return Ok(None);
    }
    let known: HashSet<String> = known_items.iter().map(|(s, _)| s.clone()).collect();
    distinct.retain(|s| known.contains(s.as_str()));
    let named = named_warehouses(&commands);
    let known_warehouses = direct::warehouses_where(tx, "SELECT code FROM warehouses WHERE code", &named)?;
    let inactive = direct::warehouses_where(tx, "SELECT code FROM warehouses WHERE active = 0 AND code", &named)?;
    let rows = direct::stock_rows(tx, &distinct)?;
    let short_skus = short_skus(&commands, &distinct, &rows);
    if !short_skus.is_empty() && direct::any_due_holding(tx, &short_skus, now)? {
        return Ok(None);
    }

    let mut journal = Journal::new();
    let reads = HoldReads { known_items, known_warehouses, inactive, rows, lots: HashMap::new() };
    let planned = plan_holds(reads, commands, now, &mut journal)?;
    direct::stock_rows_add_reserved(tx, &planned.deltas)?;
    direct::reservations_insert(tx, &planned.created)?;
    journal.flush_direct(tx, now)?;
    metrics::counter!("stockroom_reservations_held_total").increment(planned.created.len() as u64);
    Ok(Some(planned.outcomes))
}

fn distinct_skus(commands: &[HoldCommand]) -> Vec<&SkuCode> {
    let mut distinct: Vec<&SkuCode> = commands.iter().flat_map(|c| c.lines.iter().map(|l| &l.sku)).collect();
    distinct.sort();
    distinct.dedup();
    distinct
}

fn named_warehouses(commands: &[HoldCommand]) -> Vec<&WarehouseCode> {
    let mut named: Vec<&WarehouseCode> =
        commands.iter().flat_map(|c| c.lines.iter().filter_map(|l| l.warehouse.as_ref())).collect();
    named.sort();
    named.dedup();
    named
}

/// The SKUs the batch asks more of than their rows have available.
fn short_skus<'a>(commands: &[HoldCommand], distinct: &[&'a SkuCode], rows: &[store::StockRow]) -> Vec<&'a SkuCode> {
    let mut demand: HashMap<&SkuCode, i64> = HashMap::new();
    for line in commands.iter().flat_map(|c| c.lines.iter()) {
        *demand.entry(&line.sku).or_default() += line.quantity.get();
    }
    distinct
        .iter()
        .copied()
        .filter(|sku| {
            let available: i64 = rows
                .iter()
                .filter(|r| r.sku == sku.as_str() && r.active)
                .map(|r| r.on_hand - r.reserved - r.quarantined)
                .sum();
            demand.get(sku).copied().unwrap_or(0) > available
        })
        .collect()
}

/// What a hold batch reads before it plans.
struct HoldReads {
    known_items: Vec<(String, bool)>,
    known_warehouses: HashSet<String>,
    inactive: HashSet<String>,
    rows: Vec<store::StockRow>,
    lots: HashMap<(String, String), Vec<crate::lot::LotRow>>,
}

/// What a hold batch writes, planned: one outcome per command, the reservations made, each
/// touched stock row's net change and each lot's. The movements and events are in the journal.
struct PlannedHolds {
    outcomes: Vec<Result<Reservation>>,
    created: Vec<(Reservation, Timestamp)>,
    deltas: Vec<(SkuCode, WarehouseCode, i64)>,
    lot_net: BTreeMap<(String, String, String), i64>,
}

/// Plans the commands in order against what was read (no database), and journals the
/// batch's movements and events.
fn plan_holds(
    reads: HoldReads,
    commands: Vec<HoldCommand>,
    now: Timestamp,
    journal: &mut Journal,
) -> Result<PlannedHolds> {
    let HoldReads { known_items, known_warehouses, inactive, rows, lots } = reads;
    let mut figures = rules::Figures {
        items: known_items.into_iter().collect(),
        warehouses: known_warehouses,
        levels: HashMap::with_capacity(rows.len()),
        lots,
    };
    for row in rows {
        // A stock row that does not parse is corrupt: an error, never a row silently left out
        // of the plan.
        let sku = SkuCode::parse(row.sku.clone()).map_err(|e| corrupt(format!("stock row SKU {:?}: {e}", row.sku)))?;
        let warehouse = WarehouseCode::parse(row.warehouse.clone())
            .map_err(|e| corrupt(format!("stock row warehouse {:?}: {e}", row.warehouse)))?;
        let level = rules::Level {
            on_hand: row.on_hand,
            reserved: row.reserved,
            quarantined: row.quarantined,
            priority: row.priority,
            active: row.active,
        };
        figures.levels.insert((sku, warehouse), level);
    }
    let plans = rules::plan_batch(&mut figures, commands.iter().map(|c| c.lines.as_slice()), now)?;

    let mut lot_net: BTreeMap<(String, String, String), i64> = BTreeMap::new();
    let mut created: Vec<(Reservation, Timestamp)> = Vec::new();
    // Per stock row: units held, on hand and reserved after the batch, holds carried.
    let mut carried_by_row: BTreeMap<(SkuCode, WarehouseCode), (i64, i64, i64, i64)> = BTreeMap::new();
    // The index into `created` of each command's reservation, or its refusal.
    let mut outcomes: Vec<Result<usize>> = Vec::with_capacity(commands.len());
    for (command, plan) in commands.into_iter().zip(plans) {
        let held = match plan {
            Ok(held) => held,
            Err(rules::HoldRefusal::Short(mut lines)) => {
                // A line naming an inactive warehouse says so, not just "available 0".
                for line in &mut lines {
                    if line.warehouse.as_ref().is_some_and(|w| inactive.contains(w)) {
                        line.reason = Some("warehouse_inactive".into());
                    }
                }
                outcomes.push(Err(rules::HoldRefusal::Short(lines).into()));
                continue;
            }
            Err(refusal) => {
                outcomes.push(Err(refusal.into()));
                continue;
            }
        };
        let expires_at = now.plus_seconds(command.ttl_seconds);
        let reservation = Reservation {
            id: command.id.to_string(),
            status: Status::Active,
            reference: Some(command.reference).filter(|r| !r.is_empty()),
            expires_at: Some(expires_at.to_rfc3339()),
            created_at: now.to_rfc3339(),
            hold_batch: None,
            lines: held
                .iter()
                .map(|line| ReservationLine {
                    sku: line.sku.to_string(),
                    warehouse: line.warehouse.to_string(),
                    quantity: line.quantity,
                    lots: line
                        .lots
                        .iter()
                        .map(|(lot, quantity)| LotTake { lot: lot.clone(), quantity: *quantity })
                        .collect(),
                })
                .collect(),
        };
        for line in held {
            for (lot, q) in &line.lots {
                *lot_net.entry((line.sku.to_string(), line.warehouse.to_string(), lot.clone())).or_default() += q;
            }
            // Lines are planned in queue order, so the last line on a row leaves its level.
            let carried = carried_by_row.entry((line.sku, line.warehouse)).or_insert((0, 0, 0, 0));
            *carried = (carried.0 + line.quantity, line.on_hand_after, line.reserved_after, carried.3 + 1);
        }
        outcomes.push(Ok(created.len()));
        created.push((reservation, expires_at));
    }

    // The lean ledger shape (issue 13): one `reserve` movement and one `stock.changed` per
    // stock row per batch, carrying every hold of the batch on that row. A batch of one hold
    // writes exactly what a lone hold always wrote (its movements name the reservation); a
    // batch of several names the batch, and each of its reservations names the batch too
    // (`hold_batch`), so every hold is traced to the movement that carried it.
    let batch_reference = match created.as_slice() {
        [(alone, _)] => alone.id.clone(),
        _ => format!("hbt_{}", uuid::Uuid::now_v7().simple()),
    };
    if created.len() > 1 {
        for (reservation, _) in &mut created {
            reservation.hold_batch = Some(batch_reference.clone());
        }
    }
    for ((sku, warehouse), (units, on_hand_after, reserved_after, holds)) in &carried_by_row {
        journal.holds_carried(
            NewMovement {
                warehouse: warehouse.clone(),
                sku: sku.clone(),
                kind: MovementKind::Reserve,
                on_hand_delta: 0,
                reserved_delta: *units,
                on_hand_after: *on_hand_after,
                reserved_after: *reserved_after,
                reference: Some(batch_reference.clone()),
                reason: None,
            },
            *holds,
        );
    }
    for (reservation, _) in &created {
        journal.event(reservation_event(reservation, events::ReservationCreated));
    }
    let outcomes: Vec<Result<Reservation>> = outcomes.into_iter().map(|o| o.map(|i| created[i].0.clone())).collect();
    let deltas = carried_by_row.into_iter().map(|((s, w), (units, ..))| (s, w, units)).collect();
    Ok(PlannedHolds { outcomes, created, deltas, lot_net })
}

/// What the database finds wrong with a hold's lines, every line at once: each unknown SKU and
/// unknown warehouse. Reads only; [`hold_batch`] refuses a command with the same.
pub async fn hold_issues(tx: &mut Tx, lines: &[HoldLine]) -> Result<Vec<crate::FieldIssue>> {
    let mut skus: Vec<&SkuCode> = lines.iter().map(|l| &l.sku).collect();
    skus.sort();
    skus.dedup();
    let mut named: Vec<&WarehouseCode> = lines.iter().filter_map(|l| l.warehouse.as_ref()).collect();
    named.sort();
    named.dedup();
    let figures = rules::Figures {
        items: crate::item::items_known(tx, &skus).await?.into_iter().collect(),
        warehouses: crate::site::warehouses_known(tx, &named).await?,
        ..Default::default()
    };
    Ok(rules::unknown_in_lines(&figures, lines))
}

/// Lots of `skus` by (SKU, warehouse), each list in FEFO order.
async fn load_lots(tx: &mut Tx, skus: &[&SkuCode]) -> Result<HashMap<(String, String), Vec<crate::lot::LotRow>>> {
    let mut lots: HashMap<(String, String), Vec<crate::lot::LotRow>> = HashMap::new();
    for lot in crate::lot::lots_lock(tx, skus).await? {
        lots.entry((lot.sku.clone(), lot.warehouse.clone())).or_default().push(lot);
    }
    for list in lots.values_mut() {
        crate::lot::fefo_order(list);
    }
    Ok(lots)
}

fn reservation_event<E: kernel::Event>(
    reservation: &Reservation,
    wrap: impl FnOnce(events::ReservationState) -> E,
) -> NewEvent {
    NewEvent::of(format!("reservation:{}", reservation.id), &wrap(reservation.into()))
}

/// Expires those of `ids` that are still active and due, giving back their stock with
/// `expire` movements; returns how many it expired.
async fn expire_reservations(tx: &mut Tx, journal: &mut Journal, ids: &[String], now: Timestamp) -> Result<usize> {
    let returned: HashSet<String> = store::reservations_expire(tx, ids, now).await?.into_iter().collect();
    if returned.is_empty() {
        return Ok(0);
    }
    // In the order given (the sweep's: soonest due first), not the order the database
    // returned them in, which depends on its plan; the direct path writes the same order.
    let expired: Vec<String> = ids.iter().filter(|id| returned.contains(*id)).cloned().collect();
    let mut lines = store::lines_of(tx, &expired).await?;
    lines.sort_by(by_stock_row);
    // Lines of lot-tracked items give back lot by lot; the others (every line of other items)
    // all at once, one statement for all their stock rows.
    let (with_lots, plain): (Vec<_>, Vec<_>) = lines.iter().partition(|(_, line)| !line.lots.is_empty());
    for (reservation_id, line) in with_lots {
        give_back(tx, journal, reservation_id, line, MovementKind::Expire).await?;
    }
    unhold_many(tx, journal, &plain, MovementKind::Expire).await?;
    journal_expired(journal, &expired);
    Ok(expired.len())
}

/// Lines in stock-row order (then by reservation), the order their movements are journaled in.
fn by_stock_row(a: &(String, ReservationLine), b: &(String, ReservationLine)) -> std::cmp::Ordering {
    (&a.1.sku, &a.1.warehouse, &a.0).cmp(&(&b.1.sku, &b.1.warehouse, &b.0))
}

/// The `reservation.expired` event of each of `expired`, in order, and the count.
fn journal_expired(journal: &mut Journal, expired: &[String]) {
    for id in expired {
        journal.event(NewEvent::of(
            format!("reservation:{id}"),
            &events::ReservationExpired { id: id.clone(), status: Status::Expired },
        ));
    }
    metrics::counter!("stockroom_reservations_expired_total").increment(expired.len() as u64);
}

/// Gives back the held units of `lines` (sorted by stock row, none holding lots) with one
/// `UPDATE` per chunk of stock rows, and journals one movement per line with the level after
/// it, as if they had been given back one by one in that order.
async fn unhold_many(
    tx: &mut Tx,
    journal: &mut Journal,
    lines: &[&(String, ReservationLine)],
    kind: MovementKind,
) -> Result<()> {
    let per_row = units_per_row(lines);
    let after = store::stock_rows_unhold(tx, &per_row).await?;
    journal_unheld(journal, lines, &per_row, &after, kind)
}

/// The units given back of each stock row, in `lines`' order (sorted by stock row).
fn units_per_row<'a>(lines: &[&'a (String, ReservationLine)]) -> Vec<(&'a str, &'a str, i64)> {
    let mut per_row: Vec<(&str, &str, i64)> = Vec::new();
    for (_, line) in lines {
        match per_row.last_mut() {
            Some((sku, warehouse, units)) if *sku == line.sku && *warehouse == line.warehouse => {
                *units += line.quantity
            }
            _ => per_row.push((&line.sku, &line.warehouse, line.quantity)),
        }
    }
    per_row
}

/// Journals one movement per line given back with the level after it, as if the lines had
/// been given back one by one in order, from each row's level `after` all of them.
fn journal_unheld(
    journal: &mut Journal,
    lines: &[&(String, ReservationLine)],
    per_row: &[(&str, &str, i64)],
    after: &HashMap<(String, String), (i64, i64)>,
    kind: MovementKind,
) -> Result<()> {
    let mut running: HashMap<(&str, &str), (i64, i64)> = HashMap::with_capacity(per_row.len());
    for (sku, warehouse, units) in per_row {
        let (on_hand, reserved) = after[&(sku.to_string(), warehouse.to_string())];
        running.insert((sku, warehouse), (on_hand, reserved + units));
    }
    for (reservation_id, line) in lines {
        let level = running.get_mut(&(line.sku.as_str(), line.warehouse.as_str())).expect("every row was updated");
        level.1 -= line.quantity;
        journal.stock_changed(NewMovement {
            warehouse: WarehouseCode::parse(line.warehouse.clone())
                .map_err(|e| corrupt(format!("stored warehouse: {e}")))?,
            sku: SkuCode::parse(line.sku.clone()).map_err(|e| corrupt(format!("stored SKU: {e}")))?,
            kind,
            on_hand_delta: 0,
            reserved_delta: -line.quantity,
            on_hand_after: level.0,
            reserved_after: level.1,
            reference: Some(reservation_id.clone()),
            reason: None,
        });
    }
    Ok(())
}

/// Releases, expires or ships one reservation line.
async fn give_back(
    tx: &mut Tx,
    journal: &mut Journal,
    reservation_id: &str,
    line: &ReservationLine,
    kind: MovementKind,
) -> Result<()> {
    let sku = SkuCode::parse(line.sku.clone()).map_err(|e| corrupt(format!("stored SKU: {e}")))?;
    let warehouse =
        WarehouseCode::parse(line.warehouse.clone()).map_err(|e| corrupt(format!("stored warehouse: {e}")))?;
    let (level, on_hand_delta) = if kind == MovementKind::Fulfill {
        (stock_level_ship(tx, &sku, &warehouse, line.quantity).await?, -line.quantity)
    } else {
        (stock_level_unhold(tx, &sku, &warehouse, line.quantity).await?, 0)
    };
    for taken in &line.lots {
        let shipped = if kind == MovementKind::Fulfill { -taken.quantity } else { 0 };
        crate::lot::lot_change_held(tx, &line.sku, &line.warehouse, &taken.lot, shipped, -taken.quantity).await?;
    }
    if kind == MovementKind::Fulfill {
        crate::bin::bins_shrink_to(tx, &warehouse, &sku, level.on_hand).await?;
    }
    journal.stock_changed(NewMovement {
        warehouse,
        sku,
        kind,
        on_hand_delta,
        reserved_delta: -line.quantity,
        on_hand_after: level.on_hand,
        reserved_after: level.reserved,
        reference: Some(reservation_id.to_owned()),
        reason: None,
    });
    Ok(())
}

fn corrupt(message: String) -> WarehouseError {
    WarehouseError::Store(::store::StoreError::Corrupt(message))
}

/// The reservation as it reads now.
pub async fn reservation_get(db: &Db, id: &ReservationId, now: Timestamp) -> Result<Reservation> {
    let mut conn = db.reader().acquire().await?;
    let (reservation, expires_at) = store::reservation_find(&mut conn, id).await?.ok_or_else(|| not_found(id))?;
    Ok(reservation.read_at(expires_at, now))
}

fn not_found(id: &ReservationId) -> WarehouseError {
    WarehouseError::NotFound { what: "reservation", key: id.to_string() }
}

/// Reads a reservation inside `tx` (what a caller is about to settle part of).
pub async fn reservation_in_tx(tx: &mut Tx, id: &ReservationId, now: Timestamp) -> Result<Reservation> {
    find_in_tx(tx, id, now).await
}

async fn find_in_tx(tx: &mut Tx, id: &ReservationId, now: Timestamp) -> Result<Reservation> {
    let (reservation, expires_at) = store::reservation_find(tx, id).await?.ok_or_else(|| not_found(id))?;
    Ok(reservation.read_at(expires_at, now))
}

/// `active` → `confirmed`; confirming a confirmed reservation changes nothing.
pub async fn confirm(tx: &mut Tx, id: &ReservationId, now: Timestamp) -> Result<Reservation> {
    if store::reservation_transition(tx, id, &[Status::Active], Status::Confirmed, Some(now), now).await? {
        let reservation = find_in_tx(tx, id, now).await?;
        let mut journal = Journal::new();
        journal.event(reservation_event(&reservation, events::ReservationConfirmed));
        journal.flush(tx, now).await?;
        return Ok(reservation);
    }
    let current = find_in_tx(tx, id, now).await?;
    match current.status {
        Status::Confirmed => Ok(current),
        other => Err(WarehouseError::InvalidState {
            what: "reservation",
            from: other.as_str().to_owned(),
            action: "be confirmed",
        }),
    }
}

/// `active`/`confirmed` → `released`, giving the stock back. Releasing a released or expired
/// reservation changes nothing; an active one past its expiry is expired instead.
pub async fn release(tx: &mut Tx, id: &ReservationId, now: Timestamp) -> Result<Reservation> {
    let mut journal = Journal::new();
    if expire_reservations(tx, &mut journal, &[id.to_string()], now).await? == 0
        && store::reservation_transition(tx, id, &[Status::Active, Status::Confirmed], Status::Released, None, now)
            .await?
    {
        for (_, line) in store::lines_of(tx, &[id.to_string()]).await? {
            give_back(tx, &mut journal, id.as_str(), &line, MovementKind::Release).await?;
        }
        let reservation = find_in_tx(tx, id, now).await?;
        journal.event(reservation_event(&reservation, events::ReservationReleased));
        journal.flush(tx, now).await?;
        return Ok(reservation);
    }
    journal.flush(tx, now).await?;
    let current = find_in_tx(tx, id, now).await?;
    match current.status {
        Status::Released | Status::Expired => Ok(current),
        other => Err(WarehouseError::InvalidState {
            what: "reservation",
            from: other.as_str().to_owned(),
            action: "be released",
        }),
    }
}

/// `confirmed` → `fulfilled`: the stock left the building.
pub async fn fulfill(tx: &mut Tx, id: &ReservationId, now: Timestamp) -> Result<Reservation> {
    if store::reservation_transition(tx, id, &[Status::Confirmed], Status::Fulfilled, None, now).await? {
        let mut journal = Journal::new();
        let mut lines = store::lines_of(tx, &[id.to_string()]).await?;
        lines.sort_by(|a, b| (&a.1.sku, &a.1.warehouse).cmp(&(&b.1.sku, &b.1.warehouse)));
        for (_, line) in &lines {
            give_back(tx, &mut journal, id.as_str(), line, MovementKind::Fulfill).await?;
        }
        let reservation = find_in_tx(tx, id, now).await?;
        journal.event(reservation_event(&reservation, events::ReservationFulfilled));
        journal.flush(tx, now).await?;
        return Ok(reservation);
    }
    let current = find_in_tx(tx, id, now).await?;
    Err(WarehouseError::InvalidState {
        what: "reservation",
        from: current.status.as_str().to_owned(),
        action: if current.status == Status::Active {
            "be fulfilled before it is confirmed: confirm it first"
        } else {
            "be fulfilled"
        },
    })
}

/// Units of one SKU in one warehouse that a reservation holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub sku: SkuCode,
    pub warehouse: WarehouseCode,
    pub quantity: i64,
}

/// How held units are settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    /// Shipped: on hand and reserved both go down (`fulfill` movements). Confirmed only.
    Fulfill,
    /// Given back to available stock (`release` movements). Active or confirmed.
    Release,
}

/// Ships or gives back `parts` of a reservation and keeps the rest held: a fulfilment
/// shipping one warehouse of an order, or units that failed quality control. Lot-tracked
/// lines give up their lots first expiry first. Settling everything the reservation still
/// holds is [`fulfill`] or [`release`]. Asking for more than a line holds is `Invalid`; a
/// reservation in another state is `InvalidState`.
pub async fn settle_part(
    tx: &mut Tx,
    id: &ReservationId,
    parts: &[Part],
    settlement: Settlement,
    now: Timestamp,
) -> Result<Reservation> {
    let current = find_in_tx(tx, id, now).await?;
    let allowed = match settlement {
        Settlement::Fulfill => current.status == Status::Confirmed,
        Settlement::Release => matches!(current.status, Status::Active | Status::Confirmed),
    };
    if !allowed {
        return Err(WarehouseError::InvalidState {
            what: "reservation",
            from: current.status.as_str().to_owned(),
            action: match settlement {
                Settlement::Fulfill => "ship part of it: only a confirmed reservation ships",
                Settlement::Release => "give part of it back: it holds nothing",
            },
        });
    }
    let mut wanted: BTreeMap<(String, String), i64> = BTreeMap::new();
    for part in parts.iter().filter(|p| p.quantity > 0) {
        *wanted.entry((part.sku.to_string(), part.warehouse.to_string())).or_default() += part.quantity;
    }
    let held_total: i64 = current.lines.iter().map(|l| l.quantity).sum();
    for ((sku, warehouse), units) in &wanted {
        let held: i64 =
            current.lines.iter().filter(|l| &l.sku == sku && &l.warehouse == warehouse).map(|l| l.quantity).sum();
        if held < *units {
            return Err(WarehouseError::invalid(
                "quantity",
                format!("reservation {id} holds {held} of {sku} in {warehouse}; {units} cannot be settled"),
            ));
        }
    }
    if wanted.is_empty() {
        return Ok(current);
    }
    if wanted.values().sum::<i64>() == held_total {
        return match settlement {
            Settlement::Fulfill => fulfill(tx, id, now).await,
            Settlement::Release => release(tx, id, now).await,
        };
    }
    let line_rows: Vec<(i64, String, String, i64)> = sqlx::query_as(
        "SELECT line_no, sku, warehouse, quantity FROM reservation_lines WHERE reservation_id = $1 ORDER BY line_no",
    )
    .bind(id.as_str().to_owned())
    .fetch_all(&mut **tx)
    .await?;
    let lot_rows: Vec<(i64, String, i64)> = sqlx::query_as(
        "SELECT line_no, lot, quantity FROM reservation_lots WHERE reservation_id = $1 ORDER BY line_no, position",
    )
    .bind(id.as_str().to_owned())
    .fetch_all(&mut **tx)
    .await?;
    let mut journal = Journal::new();
    let kind = match settlement {
        Settlement::Fulfill => MovementKind::Fulfill,
        Settlement::Release => MovementKind::Release,
    };
    let mut settled = Vec::new();
    for ((sku, warehouse), units) in &wanted {
        let mut need = *units;
        for (line_no, _, _, quantity) in line_rows.iter().filter(|(_, s, w, _)| s == sku && w == warehouse) {
            if need == 0 {
                break;
            }
            let take = need.min(*quantity);
            need -= take;
            let mut lot_need = take;
            for (_, lot, lot_quantity) in lot_rows.iter().filter(|(n, _, _)| n == line_no) {
                if lot_need == 0 {
                    break;
                }
                let lot_take = lot_need.min(*lot_quantity);
                lot_need -= lot_take;
                let shipped = if settlement == Settlement::Fulfill { -lot_take } else { 0 };
                crate::lot::lot_change_held(tx, sku, warehouse, lot, shipped, -lot_take).await?;
                let sql = if lot_take == *lot_quantity {
                    "DELETE FROM reservation_lots WHERE reservation_id = $2 AND line_no = $3 AND lot = $4 AND $1 > 0"
                } else {
                    "UPDATE reservation_lots SET quantity = quantity - $1 WHERE reservation_id = $2 AND line_no = $3 AND lot = $4"
                };
                sqlx::query(sql)
                    .bind(lot_take)
                    .bind(id.as_str().to_owned())
                    .bind(*line_no)
                    .bind(lot.clone())
                    .execute(&mut **tx)
                    .await?;
            }
            let sql = if take == *quantity {
                "DELETE FROM reservation_lines WHERE reservation_id = $2 AND line_no = $3 AND $1 > 0"
            } else {
                "UPDATE reservation_lines SET quantity = quantity - $1 WHERE reservation_id = $2 AND line_no = $3"
            };
            sqlx::query(sql).bind(take).bind(id.as_str().to_owned()).bind(*line_no).execute(&mut **tx).await?;
        }
        let sku_code = SkuCode::parse(sku.clone()).map_err(|e| corrupt(format!("stored SKU: {e}")))?;
        let warehouse_code =
            WarehouseCode::parse(warehouse.clone()).map_err(|e| corrupt(format!("stored warehouse: {e}")))?;
        let (level, on_hand_delta) = match settlement {
            Settlement::Fulfill => (stock_level_ship(tx, &sku_code, &warehouse_code, *units).await?, -units),
            Settlement::Release => (stock_level_unhold(tx, &sku_code, &warehouse_code, *units).await?, 0),
        };
        if settlement == Settlement::Fulfill {
            crate::bin::bins_shrink_to(tx, &warehouse_code, &sku_code, level.on_hand).await?;
        }
        journal.stock_changed(NewMovement {
            warehouse: warehouse_code,
            sku: sku_code,
            kind,
            on_hand_delta,
            reserved_delta: -units,
            on_hand_after: level.on_hand,
            reserved_after: level.reserved,
            reference: Some(id.to_string()),
            reason: None,
        });
        settled.push((sku.clone(), warehouse.clone(), *units));
    }
    let reservation = find_in_tx(tx, id, now).await?;
    journal.event(NewEvent::of(
        format!("reservation:{id}"),
        &events::ReservationReduced {
            id: id.to_string(),
            status: reservation.status,
            kind: kind.as_str().to_owned(),
            settled,
        },
    ));
    journal.flush(tx, now).await?;
    Ok(reservation)
}

/// Which reservations a list shows; `None` matches any.
#[derive(Debug, Clone, Default)]
pub struct ReservationFilter {
    pub reference: Option<String>,
    /// As the reservation reads now: an active one past its expiry is `expired`.
    pub status: Option<Status>,
    /// Reservations with a line of this SKU (in `warehouse`, when both are given).
    pub sku: Option<SkuCode>,
    pub warehouse: Option<WarehouseCode>,
}

impl Status {
    /// The status named `raw`, if it is one.
    pub fn named(raw: &str) -> Option<Self> {
        Status::parse(raw).ok()
    }
}

/// Reservations by id (so oldest first) after the id `after`, as they read now.
pub async fn reservations_list(
    db: &Db,
    filter: &ReservationFilter,
    after: Option<&str>,
    limit: u32,
    now: Timestamp,
) -> Result<Vec<Reservation>> {
    let mut conn = db.reader().acquire().await?;
    let page = store::reservations_page(&mut conn, filter, after, limit, now).await?;
    Ok(page.into_iter().map(|(r, expires_at)| r.read_at(expires_at, now)).collect())
}

/// An active reservation holds on until `ttl_seconds` from now (longer or shorter than
/// before). Anything but an active, unexpired reservation: `InvalidState`.
pub async fn extend(tx: &mut Tx, id: &ReservationId, ttl_seconds: i64, now: Timestamp) -> Result<Reservation> {
    if store::reservation_set_expiry(tx, id, now.plus_seconds(ttl_seconds), now).await? {
        let reservation = find_in_tx(tx, id, now).await?;
        let mut journal = Journal::new();
        journal.event(reservation_event(&reservation, events::ReservationExtended));
        journal.flush(tx, now).await?;
        return Ok(reservation);
    }
    let current = find_in_tx(tx, id, now).await?;
    Err(WarehouseError::InvalidState {
        what: "reservation",
        from: current.status.as_str().to_owned(),
        action: "be extended: only an active reservation expires",
    })
}

/// One sweeper run: expires up to `batch_max` due reservations; returns how many. One
/// transaction, except on SQLite's direct writer while holds are queued: there it goes in
/// jobs of [`SWEEP_CHUNK_UNDER_LOAD`], each its own transaction.
pub async fn sweep_expired(db: &Db, now: Timestamp, batch_max: i64) -> Result<usize> {
    // On SQLite the batch runs on the direct writer unless it meets lots, yielding to the
    // foreground: while holds are being written it goes in short jobs, each in a gap between
    // their batches, so a hold waits for at most one short job.
    let mut expired = 0usize;
    while (expired as i64) < batch_max {
        let left = batch_max - expired as i64;
        let chunk = if db.foreground_busy() { left.min(SWEEP_CHUNK_UNDER_LOAD) } else { left };
        let Some(swept) =
            db.write_direct_background(SWEEP_PATIENCE, move |tx| sweep_expired_direct(tx, now, chunk)).await
        else {
            break;
        };
        let swept = match swept {
            Ok(swept) => swept,
            // What earlier jobs expired is committed: count it; the next run retries the rest.
            Err(error) if expired > 0 => {
                tracing::warn!(%error, expired, "an expiry sweep job failed after earlier ones committed");
                return Ok(expired);
            }
            Err(error) => return Err(error),
        };
        match swept {
            Some(n) => {
                expired += n;
                if (n as i64) < chunk {
                    return Ok(expired);
                }
            }
            // Lots among them: the rest of the run goes the general way.
            None => break,
        }
    }
    if expired as i64 >= batch_max {
        return Ok(expired);
    }
    let mut tx = db.begin().await?;
    expired += sweep_expired_in(&mut tx, now, batch_max - expired as i64).await?;
    tx.commit().await?;
    Ok(expired)
}

/// Reservations one sweep job expires while the foreground is writing: about 10 ms of the
/// writer on this machine (docs/benchmarks.md), so a hold queued behind it barely notices.
const SWEEP_CHUNK_UNDER_LOAD: i64 = 64;

/// Longest a sweep job waits for a gap in the foreground before it goes anyway: expiry must
/// not starve under a writer that is never idle (due holds keep stock from sale).
const SWEEP_PATIENCE: std::time::Duration = std::time::Duration::from_millis(100);

/// One sweeper run in the caller's transaction, through sqlx (the general path).
pub async fn sweep_expired_in(tx: &mut Tx, now: Timestamp, batch_max: i64) -> Result<usize> {
    let due = store::reservations_due(tx, ::store::db::backend_of(tx), now, batch_max).await?;
    let mut journal = Journal::new();
    let expired = expire_reservations(tx, &mut journal, &due, now).await?;
    journal.flush(tx, now).await?;
    Ok(expired)
}

/// [`sweep_expired`] on SQLite's direct writer: the same rows through cached single-row
/// statements. `None` (nothing written) when a due reservation holds lots: the general path
/// gives those back lot by lot.
pub fn sweep_expired_direct(tx: &rusqlite::Transaction<'_>, now: Timestamp, batch_max: i64) -> Result<Option<usize>> {
    let due = direct::reservations_due(tx, now, batch_max)?;
    if due.is_empty() {
        return Ok(Some(0));
    }
    let Some(lines) = direct::lines_without_lots(tx, &due)? else {
        return Ok(None);
    };
    direct::reservations_expire(tx, &due, now)?;
    let mut lines: Vec<&(String, ReservationLine)> = lines.iter().collect();
    lines.sort_by(|a, b| by_stock_row(a, b));
    let per_row = units_per_row(&lines);
    let after = direct::stock_rows_unhold(tx, &per_row)?;
    let mut journal = Journal::new();
    journal_unheld(&mut journal, &lines, &per_row, &after, MovementKind::Expire)?;
    journal_expired(&mut journal, &due);
    journal.flush_direct(tx, now)?;
    Ok(Some(due.len()))
}

/// A hold given up because the stock under it is not there (a cycle count found less).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CutHold {
    pub reservation: String,
    /// The reservation's reference (an order, a cart), so whoever owns it can be told.
    pub reference: Option<String>,
    /// What the reservation was when it was cut: `active` or `confirmed`.
    pub status: String,
    pub sku: String,
    pub warehouse: String,
    /// Units no longer held.
    pub quantity: i64,
}

/// Makes `units` of `sku` in `warehouse` free to take away, for a count that found them
/// missing: due reservations holding the SKU expire first, then held units are given back
/// (`release` movements, `reservation.reduced` or `reservation.released`), unpaid holds
/// (`active`) before confirmed ones and the newest first within each, so the oldest and most
/// committed holds keep their stock. Returns what was cut; stops early (leaving the caller's
/// guarded take to refuse) when quarantined units are what stands in the way.
pub(crate) async fn cut_holds(
    tx: &mut Tx,
    sku: &SkuCode,
    warehouse: &WarehouseCode,
    units: i64,
    now: Timestamp,
) -> Result<Vec<CutHold>> {
    let due = store::reservations_due_holding(tx, &[sku], now, INLINE_RECLAIM_MAX).await?;
    if !due.is_empty() {
        let mut journal = Journal::new();
        expire_reservations(tx, &mut journal, &due, now).await?;
        journal.flush(tx, now).await?;
    }
    let free: Option<i64> = sqlx::query_scalar(
        "SELECT on_hand - reserved - quarantined FROM stock_levels WHERE sku = $1 AND warehouse = $2",
    )
    .bind(sku.as_str().to_owned())
    .bind(warehouse.as_str().to_owned())
    .fetch_optional(&mut **tx)
    .await?;
    let mut short = units - free.unwrap_or(0);
    if short <= 0 {
        return Ok(Vec::new());
    }
    let holders: Vec<(String, String, String, i64)> = sqlx::query_as(
        "SELECT r.id, r.reference, r.status, CAST(SUM(l.quantity) AS BIGINT) FROM reservations r \
         JOIN reservation_lines l ON l.reservation_id = r.id \
         WHERE l.sku = $1 AND l.warehouse = $2 AND r.status IN ('active', 'confirmed') \
         GROUP BY r.id, r.reference, r.status, r.created_at \
         ORDER BY CASE r.status WHEN 'active' THEN 0 ELSE 1 END, r.created_at DESC, r.id DESC",
    )
    .bind(sku.as_str().to_owned())
    .bind(warehouse.as_str().to_owned())
    .fetch_all(&mut **tx)
    .await?;
    let mut cut = Vec::new();
    for (id, reference, status, held) in holders {
        if short <= 0 {
            break;
        }
        let quantity = held.min(short);
        let reservation_id = ReservationId::from_stored(id.clone());
        let part = Part { sku: sku.clone(), warehouse: warehouse.clone(), quantity };
        settle_part(tx, &reservation_id, &[part], Settlement::Release, now).await?;
        short -= quantity;
        cut.push(CutHold {
            reservation: id,
            reference: Some(reference).filter(|r| !r.is_empty()),
            status,
            sku: sku.to_string(),
            warehouse: warehouse.to_string(),
            quantity,
        });
    }
    metrics::counter!("stockroom_reservation_units_cut_total").increment(cut.iter().map(|c| c.quantity as u64).sum());
    Ok(cut)
}
