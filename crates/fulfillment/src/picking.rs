//! Pick lists: a batch of a warehouse's pending fulfilments picked in one walk.
//!
//! Stops come from the bins that hold the fulfilments' units (lots first expiry first, as the
//! order's holds took them) and are walked in the order [`crate::route::plan`] chose, from the
//! warehouse's dock and back. Completing a list takes the picked units out of their bins (they
//! are at the packing station now, still on hand and held) and settles every short pick at once:
//! the units not found are given back by the order (which waits for them again as a backorder,
//! so they are re-sourced from any warehouse of its channel) and adjusted out of their bin as an
//! `adjust` movement whose reason names the pick list.

use crate::record::{FulfillmentLine, FulfillmentStatus, fulfillment_locked};
use crate::route::{self, Point};
use crate::{FulfillmentError, Result};
use kernel::{ReservationId, SkuCode, Timestamp, WarehouseCode};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use store::Tx;
use warehouse::FieldIssue;

/// The most fulfilments one list batches.
pub const FULFILLMENTS_MAX: i64 = 50;
/// The most units one walk carries; a fulfilment that would go past it waits for the next list
/// (a list always takes at least one fulfilment).
pub const UNITS_MAX: i64 = 2_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Stop {
    /// `null`: units not recorded in any bin, picked at the dock.
    pub bin: Option<String>,
    pub sku: String,
    pub quantity: i64,
    /// For lot-tracked items: the lot held.
    pub lot: Option<String>,
    pub fulfillment: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ShortPick {
    pub fulfillment: String,
    pub bin: Option<String>,
    pub sku: String,
    pub lot: Option<String>,
    /// Units not found.
    pub quantity: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct PickList {
    pub id: String,
    pub warehouse: String,
    /// `open` until completed.
    pub status: String,
    pub fulfillments: Vec<String>,
    /// In walk order.
    pub stops: Vec<Stop>,
    /// Dock → stops in walk order → dock, in metres.
    pub route_length_m: f64,
    /// The same stops walked in fulfilment order.
    pub naive_route_length_m: f64,
    /// Set on completion: what was not found.
    pub short: Vec<ShortPick>,
    pub created_at: String,
    pub completed_at: Option<String>,
}

/// A unit count picked at one stop key.
#[derive(Debug, Clone, PartialEq, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Picked {
    #[serde(default)]
    pub bin: Option<String>,
    pub sku: String,
    pub quantity: i64,
    #[serde(default)]
    pub lot: Option<String>,
}

fn corrupt(what: String) -> FulfillmentError {
    store::StoreError::Corrupt(what).into()
}

/// Builds a pick list of up to `max_fulfillments` pending fulfilments of `warehouse`, oldest
/// first, and marks them `picking`. None pending is `conflict`.
pub async fn picklist_create(
    tx: &mut Tx,
    warehouse: &WarehouseCode,
    max_fulfillments: i64,
    now: Timestamp,
) -> Result<PickList> {
    if !(1..=FULFILLMENTS_MAX).contains(&max_fulfillments) {
        return Err(FulfillmentError::invalid("max_fulfillments", format!("must be from 1 to {FULFILLMENTS_MAX}")));
    }
    warehouse::site::warehouse_found(tx, warehouse).await?;
    let lock = store::sql::Lock::ForUpdate.clause(store::db::backend_of(tx));
    let candidates: Vec<(String, String, String)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT id, order_id, lines FROM fulfillments WHERE warehouse = $1 AND status = 'pending' ORDER BY id LIMIT $2{lock}"
    )))
    .bind(warehouse.as_str().to_owned())
    .bind(max_fulfillments)
    .fetch_all(&mut **tx)
    .await
    .map_err(store::StoreError::from)?;
    if candidates.is_empty() {
        return Err(FulfillmentError::conflict(format!("no fulfilment of {warehouse} is pending: nothing to pick")));
    }
    let mut batch: Vec<(String, String, Vec<FulfillmentLine>)> = Vec::new();
    let mut units = 0;
    for (id, order, lines) in candidates {
        let lines: Vec<FulfillmentLine> =
            serde_json::from_str(&lines).map_err(|_| corrupt(format!("fulfillment {id}: lines are not JSON")))?;
        let these: i64 = lines.iter().map(|l| l.quantity).sum();
        if !batch.is_empty() && units + these > UNITS_MAX {
            break;
        }
        units += these;
        batch.push((id, order, lines));
    }

    // Units to pick per fulfilment, SKU and lot (lots first expiry first as held).
    let mut wanted: Vec<(String, String, Option<String>, i64)> = Vec::new();
    for (id, order_id, lines) in &batch {
        let order = order::record::order_in(tx, order_id, false).await?;
        for line in lines {
            let lots = held_lots(tx, &order, warehouse.as_str(), &line.sku, line.quantity, now).await?;
            if lots.is_empty() {
                wanted.push((id.clone(), line.sku.clone(), None, line.quantity));
            }
            for (lot, quantity) in lots {
                wanted.push((id.clone(), line.sku.clone(), Some(lot), quantity));
            }
        }
    }
    let mut skus: Vec<String> = wanted.iter().map(|(_, sku, _, _)| sku.clone()).collect();
    skus.sort();
    skus.dedup();
    let settings = crate::settings::settings_of(tx, warehouse.as_str()).await?;
    let dock = Point { x: settings.dock_x, y: settings.dock_y };
    // Bins of each SKU with the units not yet given to a stop of this list, in bin order.
    let mut bins: HashMap<String, Vec<warehouse::bin::LocatedBinStock>> = HashMap::new();
    for bin in warehouse::bin::bin_stock_located(tx, warehouse, &skus).await? {
        bins.entry(bin.sku.clone()).or_default().push(bin);
    }
    let mut stops: Vec<Stop> = Vec::new();
    let mut points: Vec<Point> = Vec::new();
    for (fulfillment, sku, lot, quantity) in wanted {
        let mut left = quantity;
        for bin in bins.get_mut(&sku).into_iter().flatten() {
            if left == 0 {
                break;
            }
            let take = left.min(bin.on_hand);
            if take == 0 {
                continue;
            }
            bin.on_hand -= take;
            left -= take;
            stops.push(Stop {
                bin: Some(bin.bin.clone()),
                sku: sku.clone(),
                quantity: take,
                lot: lot.clone(),
                fulfillment: fulfillment.clone(),
            });
            // A bin without coordinates is taken to be at the dock.
            points.push(Point { x: bin.x.unwrap_or(dock.x), y: bin.y.unwrap_or(dock.y) });
        }
        if left > 0 {
            stops.push(Stop { bin: None, sku, quantity: left, lot, fulfillment });
            points.push(dock);
        }
    }
    let planned = route::plan(dock, &points);
    let walk: Vec<Stop> = planned.order.iter().map(|&i| stops[i].clone()).collect();
    let list = PickList {
        id: format!("pck_{}", uuid::Uuid::now_v7().simple()),
        warehouse: warehouse.to_string(),
        status: "open".into(),
        fulfillments: batch.iter().map(|(id, _, _)| id.clone()).collect(),
        stops: walk,
        route_length_m: round_cm(planned.length_m),
        naive_route_length_m: round_cm(planned.naive_length_m),
        short: Vec::new(),
        created_at: now.to_rfc3339(),
        completed_at: None,
    };
    sqlx::query(
        "INSERT INTO picklists (id, warehouse, status, fulfillments, stops, route_length_m, naive_route_length_m, \
         created_at) VALUES ($1, $2, 'open', $3, $4, $5, $6, $7)",
    )
    .bind(list.id.clone())
    .bind(list.warehouse.clone())
    .bind(serde_json::to_string(&list.fulfillments).unwrap_or_default())
    .bind(serde_json::to_string(&list.stops).unwrap_or_default())
    .bind(list.route_length_m)
    .bind(list.naive_route_length_m)
    .bind(list.created_at.clone())
    .execute(&mut **tx)
    .await
    .map_err(store::StoreError::from)?;
    metrics::counter!("stockroom_picklists_created_total").increment(1);
    metrics::counter!("stockroom_picklist_stops_total").increment(list.stops.len() as u64);
    for id in &list.fulfillments {
        sqlx::query("UPDATE fulfillments SET status = 'picking', picklist_id = $2, updated_at = $3 WHERE id = $1")
            .bind(id.clone())
            .bind(list.id.clone())
            .bind(list.created_at.clone())
            .execute(&mut **tx)
            .await
            .map_err(store::StoreError::from)?;
    }
    let events: Vec<kernel::NewEvent> = batch
        .iter()
        .map(|(id, order, _)| {
            let changed = crate::events::FulfillmentStatusChanged {
                fulfillment: id.clone(),
                order: order.clone(),
                warehouse: warehouse.to_string(),
                from: FulfillmentStatus::Pending.as_str().to_owned(),
                to: FulfillmentStatus::Picking.as_str().to_owned(),
                hold_reason: None,
            };
            kernel::NewEvent::of(format!("fulfillment:{id}"), &changed)
        })
        .collect();
    store::outbox::append(tx, &events, now).await?;
    Ok(list)
}

fn round_cm(metres: f64) -> f64 {
    (metres * 100.0).round() / 100.0
}

/// The lots, first expiry first, that the order's holds in `warehouse` give `quantity` units
/// of `sku` from; empty for an item without lots.
async fn held_lots(
    tx: &mut Tx,
    order: &order::record::OrderRecord,
    warehouse: &str,
    sku: &str,
    quantity: i64,
    now: Timestamp,
) -> Result<Vec<(String, i64)>> {
    let mut reservations: Vec<&str> = order
        .allocations
        .iter()
        .filter(|a| a.sku == sku && a.warehouse == warehouse)
        .map(|a| a.reservation_id.as_str())
        .collect();
    reservations.sort_unstable();
    reservations.dedup();
    let mut lots: Vec<(String, i64)> = Vec::new();
    let mut left = quantity;
    for reservation in reservations {
        let held =
            warehouse::reservation::reservation_in_tx(tx, &ReservationId::from_stored(reservation.into()), now).await?;
        // A hold another fulfilment of the order shipped in full holds nothing any more.
        if held.status != warehouse::reservation::Status::Confirmed {
            continue;
        }
        for take in held.lines.iter().filter(|l| l.sku == sku && l.warehouse == warehouse).flat_map(|l| &l.lots) {
            if left == 0 {
                return Ok(lots);
            }
            let units = left.min(take.quantity);
            left -= units;
            match lots.iter_mut().find(|(lot, _)| *lot == take.lot) {
                Some((_, q)) => *q += units,
                None => lots.push((take.lot.clone(), units)),
            }
        }
    }
    Ok(lots)
}

#[derive(sqlx::FromRow)]
struct ListRow {
    id: String,
    warehouse: String,
    status: String,
    fulfillments: String,
    stops: String,
    route_length_m: f64,
    naive_route_length_m: f64,
    short: Option<String>,
    created_at: String,
    completed_at: Option<String>,
}

impl ListRow {
    fn into_view(self) -> Result<PickList> {
        let bad = |what: &str| corrupt(format!("picklist {}: {what} are not JSON", self.id));
        Ok(PickList {
            fulfillments: serde_json::from_str(&self.fulfillments).map_err(|_| bad("fulfillments"))?,
            stops: serde_json::from_str(&self.stops).map_err(|_| bad("stops"))?,
            short: match &self.short {
                Some(short) => serde_json::from_str(short).map_err(|_| bad("short picks"))?,
                None => Vec::new(),
            },
            id: self.id,
            warehouse: self.warehouse,
            status: self.status,
            route_length_m: self.route_length_m,
            naive_route_length_m: self.naive_route_length_m,
            created_at: self.created_at,
            completed_at: self.completed_at,
        })
    }
}

const LIST_COLUMNS: &str =
    "id, warehouse, status, fulfillments, stops, route_length_m, naive_route_length_m, short, created_at, completed_at";

pub async fn picklist_get(conn: &mut sqlx::AnyConnection, id: &str, lock: bool) -> Result<PickList> {
    let lock = if lock { store::sql::Lock::ForUpdate.clause(store::db::backend_of(conn)) } else { String::new() };
    let row: Option<ListRow> =
        sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {LIST_COLUMNS} FROM picklists WHERE id = $1{lock}")))
            .bind(id.to_owned())
            .fetch_optional(conn)
            .await
            .map_err(store::StoreError::from)?;
    row.ok_or_else(|| FulfillmentError::not_found("picklist", id))?.into_view()
}

type StopKey = (Option<String>, String, Option<String>);

fn key_of(bin: &Option<String>, sku: &str, lot: &Option<String>) -> StopKey {
    (bin.clone(), sku.to_owned(), lot.clone())
}

/// Completes an open pick list with what was picked, per bin, SKU and lot. Picks that match no
/// stop, or more than its stops hold, are refused (all named) and change nothing. Fulfilments
/// cancelled since the list was made are passed over: their units stay in their bins.
pub async fn picklist_complete(tx: &mut Tx, id: &str, picked: &[Picked], now: Timestamp) -> Result<PickList> {
    let mut list = picklist_get(tx, id, true).await?;
    if list.status != "open" {
        return Err(FulfillmentError::invalid_state("picklist", &list.status, "complete: it is completed already"));
    }
    let mut picking: BTreeMap<String, crate::record::Fulfillment> = BTreeMap::new();
    for fulfillment in &list.fulfillments {
        let current = fulfillment_locked(tx, fulfillment).await?;
        if current.status == FulfillmentStatus::Picking && current.picklist.as_deref() == Some(id) {
            picking.insert(fulfillment.clone(), current);
        }
    }
    // Every order a short pick may touch is locked now, in id order, before anything is
    // appended to the outbox: appending holds the outbox's sequence lock until commit, and
    // locking an order after it would deadlock with a ship of that order.
    let mut orders: Vec<&str> = picking.values().map(|f| f.order.as_str()).collect();
    orders.sort_unstable();
    orders.dedup();
    for order in orders {
        order::record::order_in(tx, order, true).await?;
    }
    let mut expected: HashMap<StopKey, i64> = HashMap::new();
    for stop in list.stops.iter().filter(|s| picking.contains_key(&s.fulfillment)) {
        *expected.entry(key_of(&stop.bin, &stop.sku, &stop.lot)).or_default() += stop.quantity;
    }
    let mut found: HashMap<StopKey, i64> = HashMap::new();
    let mut issues = Vec::new();
    for (i, pick) in picked.iter().enumerate() {
        let key = key_of(&pick.bin, &pick.sku, &pick.lot);
        if pick.quantity < 0 {
            issues.push(FieldIssue::new(format!("picked[{i}].quantity"), "must be 0 or more"));
            continue;
        }
        let Some(&stop_units) = expected.get(&key) else {
            issues.push(FieldIssue::new(
                format!("picked[{i}]"),
                "matches no stop of this pick list (bin, sku and lot as listed)",
            ));
            continue;
        };
        let total = found.entry(key).or_default();
        *total += pick.quantity;
        if *total > stop_units {
            issues.push(FieldIssue::new(
                format!("picked[{i}].quantity"),
                format!("the list's stops for this bin, sku and lot hold {stop_units}"),
            ));
        }
    }
    if !issues.is_empty() {
        return Err(FulfillmentError::invalid_fields(issues));
    }
    let warehouse =
        WarehouseCode::parse(&list.warehouse).map_err(|_| corrupt(format!("picklist {id}: bad warehouse")))?;
    let mut short = Vec::new();
    // Per fulfilment and SKU: units not found.
    let mut missing: BTreeMap<(String, String), i64> = BTreeMap::new();
    for stop in list.stops.iter().filter(|s| picking.contains_key(&s.fulfillment)) {
        let available = found.entry(key_of(&stop.bin, &stop.sku, &stop.lot)).or_default();
        let got = stop.quantity.min(*available);
        *available -= got;
        let sku = SkuCode::parse(&stop.sku).map_err(|_| corrupt(format!("picklist {id}: bad sku")))?;
        if let Some(bin) = &stop.bin {
            warehouse::bin::bin_take(tx, &warehouse, bin, &sku, got).await?;
        }
        let lacking = stop.quantity - got;
        if lacking == 0 {
            continue;
        }
        let fulfillment = &picking[&stop.fulfillment];
        let released = order::shortfall::reopen_short(
            tx,
            &fulfillment.order,
            &fulfillment.id,
            &list.warehouse,
            &stop.sku,
            lacking,
            now,
        )
        .await?;
        if let Some(bin) = &stop.bin {
            warehouse::bin::bin_take(tx, &warehouse, bin, &sku, lacking).await?;
        }
        // The units the hold gave up are the ones adjusted out: per lot they are the lots the
        // hold released (first expiry first), which are free now whatever lot was missing.
        let parts: Vec<(Option<String>, i64)> = if released.is_empty() {
            vec![(stop.lot.clone(), lacking)]
        } else {
            released.into_iter().map(|(lot, units)| (Some(lot), units)).collect()
        };
        for (lot, units) in parts {
            let adjustment = warehouse::adjustment::Adjustment {
                warehouse: warehouse.clone(),
                sku: sku.clone(),
                change: warehouse::adjustment::Change::Delta(-units),
                lot,
                reason: Some(format!(
                    "short pick: not found in bin {} on pick list {id}",
                    stop.bin.as_deref().unwrap_or("(none)")
                )),
            };
            warehouse::adjustment::adjust(tx, adjustment, now).await?;
        }
        *missing.entry((stop.fulfillment.clone(), stop.sku.clone())).or_default() += lacking;
        short.push(ShortPick {
            fulfillment: stop.fulfillment.clone(),
            bin: stop.bin.clone(),
            sku: stop.sku.clone(),
            lot: stop.lot.clone(),
            quantity: lacking,
        });
    }
    let at = now.to_rfc3339();
    let mut events = Vec::with_capacity(picking.len());
    for (fulfillment_id, fulfillment) in &picking {
        let lines: Vec<FulfillmentLine> = fulfillment
            .lines
            .iter()
            .map(|l| FulfillmentLine {
                sku: l.sku.clone(),
                quantity: l.quantity - missing.get(&(fulfillment_id.clone(), l.sku.clone())).copied().unwrap_or(0),
            })
            .filter(|l| l.quantity > 0)
            .collect();
        // Nothing left to ship: the order waits for all of it as a backorder instead.
        let (status, reason) = if lines.is_empty() {
            (FulfillmentStatus::Cancelled, Some("short_pick"))
        } else {
            (FulfillmentStatus::Picked, None)
        };
        events.push(crate::events::status_changed(fulfillment, status, reason));
        sqlx::query("UPDATE fulfillments SET status = $2, hold_reason = $3, lines = $4, updated_at = $5 WHERE id = $1")
            .bind(fulfillment_id.clone())
            .bind(status.as_str())
            .bind(reason)
            .bind(serde_json::to_string(&lines).unwrap_or_default())
            .bind(at.clone())
            .execute(&mut **tx)
            .await
            .map_err(store::StoreError::from)?;
    }
    sqlx::query("UPDATE picklists SET status = 'completed', short = $2, completed_at = $3 WHERE id = $1")
        .bind(id.to_owned())
        .bind(serde_json::to_string(&short).unwrap_or_default())
        .bind(at.clone())
        .execute(&mut **tx)
        .await
        .map_err(store::StoreError::from)?;
    store::outbox::append(tx, &events, now).await?;
    let short_units: i64 = short.iter().map(|s| s.quantity).sum();
    metrics::counter!("stockroom_short_picked_units_total").increment(short_units.max(0) as u64);
    list.status = "completed".into();
    list.short = short;
    list.completed_at = Some(at);
    Ok(list)
}
