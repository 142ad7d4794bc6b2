//! Property test of bins and capacity: random receipts (into a named bin or the putaway
//! suggestion), imported receipts, bin moves, adjustments, transfers, holds with fulfilment and
//! release, cycle counts (open, submit, approve, cancel) and capacity changes, applied through
//! the public Rust API to the real store and to an in-memory model of levels and bin contents.
//! Two warehouses per case (the first with a capacity), three SKUs, a few bins with capacities.
//!
//! The model follows the rules exactly (they are deterministic): putaway goes to the first bin
//! (by code) already holding the SKU that has room, else to the bin with the most room (ties:
//! first code), else stays unbinned; when on hand drops, bins give up units in bin order;
//! receipts, imports, transfers and bin moves refuse with `CapacityExceeded` what would take a
//! warehouse or bin above its capacity. Adjustments, counts and a lowered capacity are not
//! refused for capacity (only receipts and transfers are documented to be), so they may leave a
//! bin or warehouse above it, which then refuses what would add to it.
//!
//! After every step: binned units stay within on hand and are never negative, no bin or
//! warehouse is above its capacity (except as just said), a refused step changed nothing
//! (levels, bin contents, movements, counts), the store equals the model (levels, bin contents,
//! used units, movement count, counts), and the ledger reconciles. Every backend.

use kernel::{Quantity, ReservationId, SkuCode, Timestamp, WarehouseCode};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use store::{Db, Tx};
use testdb::model::{ModelLine, StockModel, StockRefusal};
use warehouse::WarehouseError;
use warehouse::adjustment::{Adjustment, Change};
use warehouse::bin::{BinMove, NewBin};
use warehouse::count::{CountedLine, OpenCount};
use warehouse::receipt::{Receipt, ReceiptLine};
use warehouse::reservation::{HoldCommand, HoldLine};
use warehouse::site::NewWarehouse;
use warehouse::transfer::{Transfer, TransferLine};

const SKUS: usize = 3;
/// Warehouse 0 has a capacity and is preferred by holds (priority 10); warehouse 1 has none
/// (priority 20).
const WAREHOUSES: usize = 2;
const PRIORITY: [i64; WAREHOUSES] = [10, 20];
/// Bins of warehouse `w` are `{BIN_PREFIX[w]}1`, `{BIN_PREFIX[w]}2`, ...
const BIN_PREFIX: [&str; WAREHOUSES] = ["A-", "B-"];
/// A bin code no warehouse has.
const UNKNOWN_BIN: &str = "NOPE";
/// Recounts are not what this test is about: no variance asks for one.
const RECOUNT_THRESHOLD: i64 = 1_000_000;

/// The warehouses and bins of a case: warehouse 0's capacity, each warehouse's bin capacities.
#[derive(Debug, Clone)]
struct Setup {
    capacity: i64,
    bins: [Vec<Option<i64>>; WAREHOUSES],
}

fn setup() -> impl Strategy<Value = Setup> {
    let bin_capacity = prop::option::weighted(0.8, 2..9_i64);
    (10..40_i64, prop::collection::vec(bin_capacity.clone(), 1..4), prop::collection::vec(bin_capacity, 0..3))
        .prop_map(|(capacity, a, b)| Setup { capacity, bins: [a, b] })
}

/// A bin as generated (see [`bin_code`]): mostly one of the warehouse's own bins.
type BinPick = usize;

/// What a counter reports: a figure for one of the count's listed places (uncounted ones
/// first), or for any bin (`None`: unbinned) and SKU (found stock), each what the place holds
/// plus an offset (at least 0); or units thought unbinned found in a bin (two figures: the bin
/// `units` more, the unbinned place as many fewer); or the rest of the listed places.
#[derive(Debug, Clone)]
enum Place {
    Listed(usize, i64),
    Anywhere {
        bin: Option<BinPick>,
        sku: usize,
        offset: i64,
    },
    Found {
        bin: BinPick,
        sku: usize,
        units: i64,
    },
    /// Every listed place still uncounted, as it holds now.
    Rest,
}

#[derive(Debug, Clone)]
enum Op {
    /// Lines of (SKU, quantity, bin); no bin: the putaway suggestion.
    Receive {
        wh: usize,
        lines: Vec<(usize, i64, Option<BinPick>)>,
    },
    /// A batch of imported receipt rows (warehouse, SKU, quantity, bin).
    Import {
        rows: Vec<(usize, usize, i64, Option<BinPick>)>,
    },
    /// A new capacity for warehouse 0 (it may be below what the warehouse holds).
    SetCapacity {
        capacity: i64,
    },
    /// `source` Some(i): from the i-th (warehouse, bin, SKU) holding units, at most what it
    /// holds; else as given. `to` is another bin of the warehouse when it has two or more.
    BinMove {
        wh: usize,
        source: Option<usize>,
        sku: usize,
        from: BinPick,
        to: BinPick,
        quantity: i64,
    },
    Adjust {
        wh: usize,
        sku: usize,
        delta: i64,
    },
    /// An adjustment to a counted figure.
    Counted {
        wh: usize,
        sku: usize,
        counted: i64,
    },
    /// To the other warehouse; lines of (SKU pick, see [`stocked_sku`], quantity: at most one
    /// more than available).
    Transfer {
        from: usize,
        lines: Vec<(usize, i64)>,
    },
    /// `wh` None: the server chooses (and may split). `sku`: see [`stocked_sku`].
    Reserve {
        sku: usize,
        quantity: i64,
        wh: Option<usize>,
    },
    /// Confirms and fulfils the n-th reservation still holding stock.
    Fulfill(usize),
    Release(usize),
    /// Opens a cycle count of a whole warehouse.
    CountOpen {
        wh: usize,
    },
    CountSubmit {
        count: usize,
        lines: Vec<Place>,
    },
    CountApprove(usize),
    CountCancel(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let sku = 0..SKUS;
    let wh = 0..WAREHOUSES;
    let bin = 0..11_usize;
    let offset = -3..4_i64;
    let place = prop_oneof![
        4 => (0..6_usize, offset.clone()).prop_map(|(i, offset)| Place::Listed(i, offset)),
        1 => (prop::option::of(bin.clone()), sku.clone(), offset)
            .prop_map(|(bin, sku, offset)| Place::Anywhere { bin, sku, offset }),
        1 => (bin.clone(), sku.clone(), 1..4_i64).prop_map(|(bin, sku, units)| Place::Found { bin, sku, units }),
        1 => Just(Place::Rest),
    ];
    prop_oneof![
        6 => (wh.clone(), prop::collection::vec((sku.clone(), 1..8_i64, prop::option::of(bin.clone())), 1..3))
            .prop_map(|(wh, lines)| Op::Receive { wh, lines }),
        1 => prop::collection::vec((wh.clone(), sku.clone(), 1..8_i64, prop::option::of(bin.clone())), 1..4)
            .prop_map(|rows| Op::Import { rows }),
        1 => (5..40_i64).prop_map(|capacity| Op::SetCapacity { capacity }),
        3 => (wh.clone(), prop::option::weighted(0.75, 0..6_usize), sku.clone(), bin.clone(), bin, 1..6_i64)
            .prop_map(|(wh, source, sku, from, to, quantity)| Op::BinMove { wh, source, sku, from, to, quantity }),
        2 => (wh.clone(), sku.clone(), prop_oneof![-6..0_i64, 1..6_i64])
            .prop_map(|(wh, sku, delta)| Op::Adjust { wh, sku, delta }),
        1 => (wh.clone(), sku.clone(), 0..15_i64).prop_map(|(wh, sku, counted)| Op::Counted { wh, sku, counted }),
        // Mostly into warehouse 0, the one with a capacity.
        2 => (prop::bool::weighted(0.7), prop::collection::vec((sku.clone(), 1..5_i64), 1..3))
            .prop_map(|(into_0, lines)| Op::Transfer { from: usize::from(into_0), lines }),
        3 => (sku, 1..5_i64, prop::option::of(wh.clone()))
            .prop_map(|(sku, quantity, wh)| Op::Reserve { sku, quantity, wh }),
        2 => (0..4_usize).prop_map(Op::Fulfill),
        1 => (0..4_usize).prop_map(Op::Release),
        2 => wh.prop_map(|wh| Op::CountOpen { wh }),
        4 => (0..3_usize, prop::collection::vec(place, 1..4))
            .prop_map(|(count, lines)| Op::CountSubmit { count, lines }),
        2 => (0..3_usize).prop_map(Op::CountApprove),
        1 => (0..3_usize).prop_map(Op::CountCancel),
    ]
}

/// The code a [`BinPick`] names in warehouse `wh`: one of its bins (0 to 8), the first bin of
/// the other warehouse (9), or a code no bin has (10, or when the warehouse has no bins).
fn bin_code(setup: &Setup, wh: usize, pick: BinPick) -> String {
    let own = setup.bins[wh].len();
    let other = setup.bins[1 - wh].len();
    match pick {
        p if p < 9 && own > 0 => format!("{}{}", BIN_PREFIX[wh], p % own + 1),
        9 if other > 0 => format!("{}1", BIN_PREFIX[1 - wh]),
        _ => UNKNOWN_BIN.to_owned(),
    }
}

/// Like [`bin_code`], but an own bin other than `not` when the warehouse has two or more.
fn other_bin_code(setup: &Setup, wh: usize, pick: BinPick, not: &str) -> String {
    let others: Vec<String> =
        (1..=setup.bins[wh].len()).map(|i| format!("{}{i}", BIN_PREFIX[wh])).filter(|c| c != not).collect();
    match pick {
        p if p < 9 && !others.is_empty() => others[p % others.len()].clone(),
        p => bin_code(setup, wh, p),
    }
}

/// The `pick`-th SKU among those with units available in `wh` (any warehouse if None), or
/// among all SKUs when none has: so that takes are not mostly refused for want of stock.
fn stocked_sku(model: &Model, wh: Option<usize>, pick: usize) -> usize {
    let stocked: Vec<usize> = (0..SKUS)
        .filter(|s| (0..WAREHOUSES).filter(|w| wh.is_none_or(|x| x == *w)).any(|w| model.available(w, *s) > 0))
        .collect();
    if stocked.is_empty() { pick % SKUS } else { stocked[pick % stocked.len()] }
}

/// Why a use case refused, as both sides see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    Capacity,
    Invalid,
    Short,
    State,
}

impl From<StockRefusal> for Refusal {
    fn from(refusal: StockRefusal) -> Self {
        match refusal {
            StockRefusal::Short => Refusal::Short,
            StockRefusal::State => Refusal::State,
        }
    }
}

fn refusal_of(e: &WarehouseError) -> Refusal {
    match e {
        WarehouseError::CapacityExceeded(_) => Refusal::Capacity,
        // Several bad fields at once come as one refusal naming each.
        WarehouseError::Invalid { .. } | WarehouseError::InvalidFields(_) => Refusal::Invalid,
        WarehouseError::InsufficientStock { .. } => Refusal::Short,
        WarehouseError::InvalidState { .. } => Refusal::State,
        other => panic!("unexpected error: {other:?}"),
    }
}

#[derive(Debug, Clone)]
struct ModelBin {
    code: String,
    capacity: Option<i64>,
    /// Units per SKU (entries may be 0).
    stock: BTreeMap<usize, i64>,
}

impl ModelBin {
    fn used(&self) -> i64 {
        self.stock.values().sum()
    }

    fn fits(&self, units: i64) -> bool {
        self.capacity.is_none_or(|c| c - self.used() >= units)
    }

    fn over(&self) -> bool {
        self.capacity.is_some_and(|c| self.used() > c)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CountStatus {
    Open,
    Approved,
    Cancelled,
}

impl CountStatus {
    fn as_str(self) -> &'static str {
        match self {
            CountStatus::Open => "open",
            CountStatus::Approved => "approved",
            CountStatus::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug, Clone)]
struct ModelCount {
    id: String,
    wh: usize,
    status: CountStatus,
    /// (bin, "" for unbinned; SKU) -> (expected, counted) as recorded when counted.
    lines: BTreeMap<(String, usize), (Option<i64>, Option<i64>)>,
}

#[derive(Debug, Clone)]
struct Model {
    /// Levels and reservations (the shared model); bins, capacities and counts are this
    /// test's own.
    stock: StockModel,
    /// Per warehouse, in code order.
    bins: [Vec<ModelBin>; WAREHOUSES],
    capacity: [Option<i64>; WAREHOUSES],
    counts: Vec<ModelCount>,
    /// Movements of the case's warehouses.
    movements: i64,
    /// Bins and warehouses above their capacity because a change that is documented not to
    /// check capacity (an adjustment, a counted figure) put them there.
    over_bins: BTreeSet<(usize, String)>,
    over_warehouses: BTreeSet<usize>,
}

impl Model {
    fn new(setup: &Setup) -> Self {
        let bins = std::array::from_fn(|wh| {
            setup.bins[wh]
                .iter()
                .enumerate()
                .map(|(i, capacity)| ModelBin {
                    code: format!("{}{}", BIN_PREFIX[wh], i + 1),
                    capacity: *capacity,
                    stock: BTreeMap::new(),
                })
                .collect()
        });
        Model {
            stock: StockModel::default(),
            bins,
            capacity: [Some(setup.capacity), None],
            counts: Vec::new(),
            movements: 0,
            over_bins: BTreeSet::new(),
            over_warehouses: BTreeSet::new(),
        }
    }

    // This test names places (warehouse, SKU) throughout; the shared model takes (SKU, warehouse).
    fn on_hand(&self, wh: usize, sku: usize) -> i64 {
        self.stock.on_hand(sku, wh)
    }

    fn available(&self, wh: usize, sku: usize) -> i64 {
        self.stock.available(sku, wh)
    }

    fn used(&self, wh: usize) -> i64 {
        self.stock.levels.iter().filter(|((_, w), _)| *w == wh).map(|(_, l)| l.0).sum()
    }

    fn binned(&self, wh: usize, sku: usize) -> i64 {
        self.bins[wh].iter().map(|b| b.stock.get(&sku).copied().unwrap_or(0)).sum()
    }

    fn bin_mut(&mut self, wh: usize, code: &str) -> Option<&mut ModelBin> {
        self.bins[wh].iter_mut().find(|b| b.code == code)
    }

    /// A bin already holding the SKU with room (first by code), else the one with the most
    /// room (first by code on a tie), else none.
    fn putaway(&self, wh: usize, sku: usize, units: i64) -> Option<String> {
        let bins = &self.bins[wh];
        if let Some(b) = bins.iter().find(|b| b.stock.get(&sku).is_some_and(|q| *q > 0) && b.fits(units)) {
            return Some(b.code.clone());
        }
        let mut best: Option<(&ModelBin, i64)> = None;
        for b in bins.iter().filter(|b| b.fits(units)) {
            let room = b.capacity.map(|c| c - b.used()).unwrap_or(i64::MAX);
            if best.is_none_or(|(_, r)| room > r) {
                best = Some((b, room));
            }
        }
        best.map(|(b, _)| b.code.clone())
    }

    fn bin_put(&mut self, wh: usize, code: &str, sku: usize, units: i64) -> Result<(), Refusal> {
        let bin = self.bin_mut(wh, code).ok_or(Refusal::Invalid)?;
        if !bin.fits(units) {
            return Err(Refusal::Capacity);
        }
        *bin.stock.entry(sku).or_default() += units;
        Ok(())
    }

    /// Bins give up units, in bin order, until the SKU's binned units are within on hand.
    fn shrink(&mut self, wh: usize, sku: usize) {
        let mut excess = self.binned(wh, sku) - self.on_hand(wh, sku);
        for bin in self.bins[wh].iter_mut() {
            if excess <= 0 {
                break;
            }
            if let Some(units) = bin.stock.get_mut(&sku).filter(|q| **q > 0) {
                let take = excess.min(*units);
                *units -= take;
                excess -= take;
            }
        }
    }

    /// Forgets what is no longer over capacity; with `unchecked`, notes what the last change
    /// (one that does not check capacity) put over it.
    fn settle_capacity(&mut self, unchecked: bool) {
        for wh in 0..WAREHOUSES {
            for b in &self.bins[wh] {
                let key = (wh, b.code.clone());
                if !b.over() {
                    self.over_bins.remove(&key);
                } else if unchecked {
                    self.over_bins.insert(key);
                }
            }
            if self.capacity[wh].is_none_or(|c| self.used(wh) <= c) {
                self.over_warehouses.remove(&wh);
            } else if unchecked {
                self.over_warehouses.insert(wh);
            }
        }
    }

    /// The bins chosen per line.
    fn receive(&mut self, wh: usize, lines: &[(usize, i64, Option<String>)]) -> Result<Vec<Option<String>>, Refusal> {
        let total: i64 = lines.iter().map(|l| l.1).sum();
        if self.capacity[wh].is_some_and(|c| self.used(wh) + total > c) {
            return Err(Refusal::Capacity);
        }
        let skus: BTreeSet<usize> = lines.iter().map(|l| l.0).collect();
        for (sku, quantity, _) in lines {
            self.stock.receive(*sku, wh, *quantity);
        }
        self.movements += skus.len() as i64;
        let mut chosen = Vec::new();
        for (sku, quantity, bin) in lines {
            let bin = bin.clone().or_else(|| self.putaway(wh, *sku, *quantity));
            if let Some(code) = &bin {
                self.bin_put(wh, code, *sku, *quantity)?;
            }
            chosen.push(bin);
        }
        Ok(chosen)
    }

    /// Rows naming a bin, or into a warehouse that has bins (putaway), go through the receipt
    /// use case one by one, first; the others are added in bulk, unbinned; then each
    /// warehouse's capacity.
    fn import(&mut self, rows: &[(usize, usize, i64, Option<String>)]) -> Result<(), Refusal> {
        let one_by_one = |model: &Self, wh: usize, bin: &Option<String>| bin.is_some() || !model.bins[wh].is_empty();
        for (wh, sku, quantity, bin) in rows {
            if one_by_one(self, *wh, bin) {
                self.receive(*wh, &[(*sku, *quantity, bin.clone())])?;
            }
        }
        for (wh, sku, quantity, bin) in rows {
            if !one_by_one(self, *wh, bin) {
                self.stock.receive(*sku, *wh, *quantity);
                self.movements += 1;
            }
        }
        let warehouses: BTreeSet<usize> = rows.iter().map(|r| r.0).collect();
        if warehouses.iter().any(|wh| self.capacity[*wh].is_some_and(|c| self.used(*wh) > c)) {
            return Err(Refusal::Capacity);
        }
        Ok(())
    }

    fn transfer(&mut self, from: usize, lines: &[(usize, i64)]) -> Result<(), Refusal> {
        let to = 1 - from;
        let mut per_sku: BTreeMap<usize, i64> = BTreeMap::new();
        for (sku, quantity) in lines {
            *per_sku.entry(*sku).or_default() += quantity;
        }
        if per_sku.iter().any(|(sku, q)| self.available(from, *sku) < *q) {
            return Err(Refusal::Short);
        }
        let total: i64 = per_sku.values().sum();
        if self.capacity[to].is_some_and(|c| self.used(to) + total > c) {
            return Err(Refusal::Capacity);
        }
        for (sku, quantity) in per_sku {
            self.stock.transfer(sku, from, to, quantity).expect("checked above");
            self.shrink(from, sku);
            if let Some(code) = self.putaway(to, sku, quantity) {
                self.bin_put(to, &code, sku, quantity).expect("putaway chose a bin that fits");
            }
            self.movements += 2;
        }
        Ok(())
    }

    fn adjust(&mut self, wh: usize, sku: usize, delta: i64) -> Result<(), Refusal> {
        self.stock.adjust(sku, wh, delta)?;
        if delta < 0 {
            self.shrink(wh, sku);
        }
        self.movements += 1;
        Ok(())
    }

    fn counted(&mut self, wh: usize, sku: usize, counted: i64) -> Result<(), Refusal> {
        let dropped = counted < self.on_hand(wh, sku);
        self.stock.count(sku, wh, counted)?;
        if dropped {
            self.shrink(wh, sku);
        }
        self.movements += 1;
        Ok(())
    }

    fn bin_move(&mut self, wh: usize, sku: usize, from: &str, to: &str, quantity: i64) -> Result<(), Refusal> {
        if from == to {
            return Err(Refusal::Invalid);
        }
        let source = self.bin_mut(wh, from).ok_or(Refusal::Invalid)?;
        let there = source.stock.entry(sku).or_default();
        if *there < quantity {
            return Err(Refusal::Short);
        }
        *there -= quantity;
        self.bin_put(wh, to, sku, quantity)?;
        self.movements += 1;
        Ok(())
    }

    /// The planned (warehouse, quantity): a named warehouse, or by priority (warehouse 0 first).
    /// The caller records the hold ([`Model::hold`]) once the store made it.
    fn reserve(&self, sku: usize, quantity: i64, wh: Option<usize>) -> Result<Vec<(usize, i64)>, Refusal> {
        let plan = match wh {
            Some(w) if self.available(w, sku) >= quantity => vec![(w, quantity)],
            Some(_) => return Err(Refusal::Short),
            None => {
                if (0..WAREHOUSES).map(|w| self.available(w, sku)).sum::<i64>() < quantity {
                    return Err(Refusal::Short);
                }
                let mut need = quantity;
                let mut plan = Vec::new();
                for w in 0..WAREHOUSES {
                    let take = need.min(self.available(w, sku));
                    if take > 0 {
                        plan.push((w, take));
                        need -= take;
                    }
                }
                plan
            }
        };
        Ok(plan)
    }

    fn hold(&mut self, id: ReservationId, sku: usize, plan: &[(usize, i64)], expires_at: Timestamp) {
        let lines = plan.iter().map(|(wh, quantity)| ModelLine { sku, wh: *wh, quantity: *quantity, lots: Vec::new() });
        self.stock.hold(id, expires_at, lines.collect());
        self.movements += plan.len() as i64;
    }

    /// Fulfils (confirming first) or releases a reservation that holds its units.
    fn give_back(&mut self, index: usize, fulfil: bool, now: Timestamp) {
        let lines = self.stock.reservations[index].lines.clone();
        if fulfil {
            self.stock.confirm(index, now).expect("the reservation is holding");
            self.stock.fulfill(index).expect("the reservation is confirmed");
        } else {
            self.stock.release(index, now).expect("the reservation is holding");
        }
        for line in lines {
            if fulfil {
                self.shrink(line.wh, line.sku);
            }
            self.movements += 1;
        }
    }

    /// The places a whole-warehouse count lists: binned stock, then SKUs with unbinned units.
    fn count_places(&self, wh: usize) -> Vec<(String, usize)> {
        let mut places: Vec<(String, usize)> = Vec::new();
        for b in &self.bins[wh] {
            places.extend(b.stock.iter().filter(|(_, q)| **q > 0).map(|(sku, _)| (b.code.clone(), *sku)));
        }
        for sku in 0..SKUS {
            if self.on_hand(wh, sku) > self.binned(wh, sku) {
                places.push((String::new(), sku));
            }
        }
        places
    }

    /// What the ledger holds in a place: a bin's units, or the units in no bin.
    fn held_in_place(&self, wh: usize, bin: &str, sku: usize) -> i64 {
        if bin.is_empty() {
            self.on_hand(wh, sku) - self.binned(wh, sku)
        } else {
            self.bins[wh].iter().find(|b| b.code == bin).and_then(|b| b.stock.get(&sku).copied()).unwrap_or(0)
        }
    }

    fn count_submit(&mut self, index: usize, lines: &[(String, usize, i64)]) -> Result<(), Refusal> {
        let wh = self.counts[index].wh;
        if self.counts[index].status != CountStatus::Open {
            return Err(Refusal::State);
        }
        for (bin, sku, counted) in lines {
            if !bin.is_empty() && !self.bins[wh].iter().any(|b| &b.code == bin) {
                return Err(Refusal::Invalid);
            }
            let expected = self.held_in_place(wh, bin, *sku);
            self.counts[index].lines.insert((bin.clone(), *sku), (Some(expected), Some(*counted)));
        }
        Ok(())
    }

    fn count_approve(&mut self, index: usize, now: Timestamp) -> Result<(), Refusal> {
        let count = self.counts[index].clone();
        if count.status != CountStatus::Open || count.lines.values().any(|(_, counted)| counted.is_none()) {
            return Err(Refusal::State);
        }
        let wh = count.wh;
        let mut per_sku: BTreeMap<usize, i64> = BTreeMap::new();
        for ((bin, sku), (expected, counted)) in &count.lines {
            let variance = counted.unwrap_or(0) - expected.unwrap_or(0);
            *per_sku.entry(*sku).or_default() += variance;
            if !bin.is_empty() && variance != 0 {
                let bin = self.bin_mut(wh, bin).expect("submitted bins exist");
                let units = bin.stock.entry(*sku).or_default();
                *units = (*units + variance).max(0);
            }
        }
        for (sku, delta) in per_sku {
            if delta == 0 {
                // Units moved between places of the count: on hand stays, bins still shrink
                // to it (it may have dropped since the count).
                self.shrink(wh, sku);
                continue;
            }
            if self.available(wh, sku) < -delta {
                // The count is the truth: holds that no longer fit are cut, not kept.
                self.movements += self.stock.cut_holds(sku, wh, -delta, now);
            }
            self.stock.adjust(sku, wh, delta)?;
            self.shrink(wh, sku);
            self.movements += 1;
        }
        self.counts[index].status = CountStatus::Approved;
        Ok(())
    }

    fn count_cancel(&mut self, index: usize) -> Result<(), Refusal> {
        match self.counts[index].status {
            CountStatus::Approved => Err(Refusal::State),
            _ => {
                self.counts[index].status = CountStatus::Cancelled;
                Ok(())
            }
        }
    }
}

struct Case {
    setup: Setup,
    skus: Vec<SkuCode>,
    warehouses: Vec<WarehouseCode>,
}

impl Case {
    async fn create(db: &Db, case_no: usize, setup: &Setup) -> Self {
        let case = Case {
            setup: setup.clone(),
            skus: (0..SKUS).map(|i| SkuCode::parse(format!("BM{case_no}-S{i}")).unwrap()).collect(),
            warehouses: ["A", "B"].iter().map(|w| WarehouseCode::parse(format!("BM{case_no}-{w}")).unwrap()).collect(),
        };
        let now = Timestamp::from_millis(0);
        let mut tx = db.begin().await.unwrap();
        for sku in &case.skus {
            let new =
                warehouse::item::NewItem { sku: sku.clone(), name: "x".into(), weight_grams: None, track_lots: false };
            warehouse::item::item_create(&mut tx, new, now).await.unwrap();
        }
        for (wh, code) in case.warehouses.iter().enumerate() {
            let new = NewWarehouse {
                code: code.clone(),
                name: code.to_string(),
                country: None,
                latitude: None,
                longitude: None,
                priority: PRIORITY[wh],
                active: true,
                capacity_units: (wh == 0).then_some(setup.capacity),
            };
            warehouse::site::warehouse_create(&mut tx, new, now).await.unwrap();
            for (i, capacity) in setup.bins[wh].iter().enumerate() {
                let bin = NewBin {
                    code: format!("{}{}", BIN_PREFIX[wh], i + 1),
                    zone: None,
                    x: None,
                    y: None,
                    capacity_units: *capacity,
                };
                warehouse::bin::bin_create(&mut tx, code, bin, now).await.unwrap();
            }
        }
        tx.commit().await.unwrap();
        case
    }

    fn sku_index(&self, sku: &str) -> usize {
        self.skus.iter().position(|s| s.as_str() == sku).unwrap_or_else(|| panic!("unknown SKU {sku}"))
    }

    fn wh_index(&self, wh: &str) -> usize {
        self.warehouses.iter().position(|w| w.as_str() == wh).unwrap_or_else(|| panic!("unknown warehouse {wh}"))
    }
}

/// Asserts that store and model agree on whether (and why) the step was refused; returns it.
#[track_caller]
fn agree<T: std::fmt::Debug, U: std::fmt::Debug>(
    what: &str,
    expected: &Result<T, Refusal>,
    actual: &warehouse::Result<U>,
) -> Option<Refusal> {
    let expected_refusal = expected.as_ref().err().copied();
    let actual_refusal = actual.as_ref().err().map(refusal_of);
    assert_eq!(actual_refusal, expected_refusal, "{what}: the store answered {actual:?}, the model {expected:?}");
    actual_refusal
}

/// Applies `op` to the store in `tx` and to `model`; returns the refusal, if any (the caller
/// then rolls back and forgets the model's changes).
async fn apply(tx: &mut Tx, case: &Case, model: &mut Model, op: &Op, now: Timestamp) -> Option<Refusal> {
    let sku = |i: usize| case.skus[i].clone();
    let wh = |i: usize| case.warehouses[i].clone();
    let setup = &case.setup;
    let refusal = match op {
        Op::Receive { wh: w, lines } => {
            let lines: Vec<(usize, i64, Option<String>)> =
                lines.iter().map(|(s, q, b)| (*s, *q, b.map(|p| bin_code(setup, *w, p)))).collect();
            let what = format!("receive into warehouse {w} (SKU, units, bin) {lines:?}");
            let expected = model.receive(*w, &lines);
            let receipt = Receipt {
                warehouse: wh(*w),
                reference: None,
                lines: lines
                    .iter()
                    .map(|(s, q, bin)| ReceiptLine {
                        sku: sku(*s),
                        quantity: Quantity::new(*q).unwrap(),
                        lot: None,
                        expires_on: None,
                        bin: bin.clone(),
                    })
                    .collect(),
            };
            let actual = warehouse::receipt::receive(tx, receipt, now).await;
            if let (Ok(chosen), Ok(view)) = (&expected, &actual) {
                let bins: Vec<Option<String>> = view.lines.iter().map(|l| l.bin.clone()).collect();
                assert_eq!(&bins, chosen, "{what}: bins chosen (store, model)");
            }
            agree(&what, &expected, &actual)
        }
        Op::Import { rows } => {
            let rows: Vec<(usize, usize, i64, Option<String>)> =
                rows.iter().map(|(w, s, q, b)| (*w, *s, *q, b.map(|p| bin_code(setup, *w, p)))).collect();
            let what = format!("import (warehouse, SKU, units, bin) {rows:?}");
            let expected = model.import(&rows);
            let rows = rows
                .iter()
                .enumerate()
                .map(|(i, (w, s, q, bin))| warehouse::import::Row {
                    number: i as u64 + 1,
                    key: format!("{}-{}", now.millis(), i),
                    value: warehouse::import::ReceiptRow {
                        warehouse: wh(*w),
                        line: ReceiptLine {
                            sku: sku(*s),
                            quantity: Quantity::new(*q).unwrap(),
                            lot: None,
                            expires_on: None,
                            bin: bin.clone(),
                        },
                        reference: None,
                    },
                })
                .collect();
            let actual = warehouse::import::import_receipts(tx, rows, now).await.map_err(|refusal| refusal.error);
            agree(&what, &expected, &actual)
        }
        Op::SetCapacity { capacity } => {
            let patch = warehouse::site::WarehousePatch { capacity_units: Some(Some(*capacity)), ..Default::default() };
            warehouse::site::warehouse_update(tx, &wh(0), patch, now).await.unwrap();
            model.capacity[0] = Some(*capacity);
            None
        }
        Op::BinMove { wh: w, source, sku: s, from, to, quantity } => {
            let holding: Vec<(usize, String, usize, i64)> = (0..WAREHOUSES)
                .flat_map(|w| {
                    model.bins[w].iter().flat_map(move |b| {
                        b.stock.iter().filter(|(_, q)| **q > 0).map(move |(s, q)| (w, b.code.clone(), *s, *q))
                    })
                })
                .collect();
            let (w, from, s, quantity) = match source {
                Some(i) if !holding.is_empty() => {
                    let (w, bin, s, held) = holding[i % holding.len()].clone();
                    (w, bin, s, 1 + (quantity - 1) % held)
                }
                _ => (*w, bin_code(setup, *w, *from), *s, *quantity),
            };
            let to = other_bin_code(setup, w, *to, &from);
            let what = format!("move {quantity} of SKU {s} in warehouse {w} from bin {from} to bin {to}");
            let expected = model.bin_move(w, s, &from, &to, quantity);
            let command = BinMove { warehouse: wh(w), sku: sku(s), from_bin: from, to_bin: to, quantity };
            let actual = warehouse::bin::bin_move(tx, command, now).await;
            agree(&what, &expected, &actual)
        }
        Op::Adjust { wh: w, sku: s, delta } => {
            let expected = model.adjust(*w, *s, *delta);
            let adjustment =
                Adjustment { warehouse: wh(*w), sku: sku(*s), change: Change::Delta(*delta), lot: None, reason: None };
            let actual = warehouse::adjustment::adjust(tx, adjustment, now).await;
            agree(&format!("{op:?}"), &expected, &actual)
        }
        Op::Counted { wh: w, sku: s, counted } => {
            let expected = model.counted(*w, *s, *counted);
            let adjustment = Adjustment {
                warehouse: wh(*w),
                sku: sku(*s),
                change: Change::Counted(*counted),
                lot: None,
                reason: None,
            };
            let actual = warehouse::adjustment::adjust(tx, adjustment, now).await;
            agree(&format!("{op:?}"), &expected, &actual)
        }
        Op::Transfer { from, lines } => {
            let lines: Vec<(usize, i64)> = lines
                .iter()
                .map(|(s, q)| {
                    let s = stocked_sku(model, Some(*from), *s);
                    let available = model.available(*from, s);
                    (s, if available > 0 { 1 + (q - 1) % (available + 1) } else { *q })
                })
                .collect();
            let what = format!("transfer from warehouse {from} (SKU, units) {lines:?}");
            let expected = model.transfer(*from, &lines);
            let transfer = Transfer {
                from: wh(*from),
                to: wh(1 - from),
                reference: None,
                in_transit: false,
                lines: lines
                    .iter()
                    .map(|(s, q)| TransferLine { sku: sku(*s), quantity: Quantity::new(*q).unwrap() })
                    .collect(),
            };
            let actual = warehouse::transfer::transfer(tx, transfer, now).await;
            agree(&what, &expected, &actual)
        }
        Op::Reserve { sku: s, quantity, wh: w } => {
            let s = stocked_sku(model, *w, *s);
            let what = format!("reserve {quantity} of SKU {s} in warehouse {w:?}");
            let expected = model.reserve(s, *quantity, *w);
            let command = HoldCommand {
                id: ReservationId::new(),
                reference: "bins".into(),
                ttl_seconds: 86_400,
                lines: vec![HoldLine {
                    sku: sku(s),
                    quantity: Quantity::new(*quantity).unwrap(),
                    warehouse: w.map(wh),
                }],
            };
            let actual = warehouse::reservation::hold_batch(tx, vec![command.clone()], now)
                .await
                .unwrap()
                .pop()
                .expect("one outcome per command");
            if let (Ok(plan), Ok(reservation)) = (&expected, &actual) {
                let held: Vec<(usize, i64)> =
                    reservation.lines.iter().map(|l| (case.wh_index(&l.warehouse), l.quantity)).collect();
                assert_eq!(&held, plan, "{what}: (warehouse, units) held (store, model)");
                model.hold(command.id, s, plan, now.plus_seconds(command.ttl_seconds));
            }
            agree(&what, &expected, &actual)
        }
        Op::Fulfill(n) | Op::Release(n) => {
            let holding: Vec<usize> =
                (0..model.stock.reservations.len()).filter(|i| model.stock.reservations[*i].holding()).collect();
            if holding.is_empty() {
                return None;
            }
            let index = holding[n % holding.len()];
            let id = model.stock.reservations[index].id.clone();
            let fulfil = matches!(op, Op::Fulfill(_));
            if fulfil {
                warehouse::reservation::confirm(tx, &id, now).await.unwrap();
                warehouse::reservation::fulfill(tx, &id, now).await.unwrap();
            } else {
                warehouse::reservation::release(tx, &id, now).await.unwrap();
            }
            model.give_back(index, fulfil, now);
            None
        }
        Op::CountOpen { wh: w } => {
            let open =
                OpenCount { warehouse: wh(*w), zone: None, skus: None, recount_threshold_units: RECOUNT_THRESHOLD };
            let view = warehouse::count::count_open(tx, open, now).await.unwrap();
            let mut listed: Vec<(String, usize)> =
                view.lines.iter().map(|l| (l.bin.clone().unwrap_or_default(), case.sku_index(&l.sku))).collect();
            listed.sort();
            let mut expected = model.count_places(*w);
            expected.sort();
            assert_eq!(listed, expected, "{op:?}: places listed (store, model)");
            model.counts.push(ModelCount {
                id: view.id,
                wh: *w,
                status: CountStatus::Open,
                lines: expected.into_iter().map(|place| (place, (None, None))).collect(),
            });
            None
        }
        Op::CountSubmit { count, lines } => {
            if model.counts.is_empty() {
                return None;
            }
            let index = count % model.counts.len();
            let w = model.counts[index].wh;
            // Figures relative to what each place holds before this step (a place named twice
            // is counted twice: the second figure wins).
            let mut figures: Vec<(String, usize, i64)> = Vec::new();
            for place in lines {
                match place {
                    Place::Listed(i, offset) => {
                        let listed = &model.counts[index].lines;
                        let uncounted: Vec<&(String, usize)> =
                            listed.iter().filter(|(_, (_, c))| c.is_none()).map(|(k, _)| k).collect();
                        let pool: Vec<&(String, usize)> =
                            if uncounted.is_empty() { listed.keys().collect() } else { uncounted };
                        let (bin, s) = pool.get(i % pool.len().max(1)).map(|p| (*p).clone()).unwrap_or_default();
                        figures.push((bin.clone(), s, (model.held_in_place(w, &bin, s) + offset).max(0)));
                    }
                    Place::Anywhere { bin, sku: s, offset } => {
                        let bin = bin.map(|p| bin_code(setup, w, p)).unwrap_or_default();
                        figures.push((bin.clone(), *s, (model.held_in_place(w, &bin, *s) + offset).max(0)));
                    }
                    Place::Found { bin, sku: s, units } => {
                        // Preferably a SKU that has unbinned units.
                        let unbinned: Vec<usize> = (0..SKUS).filter(|s| model.held_in_place(w, "", *s) > 0).collect();
                        let s = if unbinned.is_empty() { *s } else { unbinned[s % unbinned.len()] };
                        let units = (*units).min(model.held_in_place(w, "", s));
                        let bin = bin_code(setup, w, *bin);
                        figures.push((bin.clone(), s, model.held_in_place(w, &bin, s) + units));
                        figures.push((String::new(), s, model.held_in_place(w, "", s) - units));
                    }
                    Place::Rest => {
                        for ((bin, s), (_, counted)) in &model.counts[index].lines {
                            if counted.is_none() && !figures.iter().any(|f| &f.0 == bin && f.1 == *s) {
                                figures.push((bin.clone(), *s, model.held_in_place(w, bin, *s)));
                            }
                        }
                    }
                }
            }
            let what = format!("submit to count {index} of warehouse {w} (bin, SKU, counted) {figures:?}");
            let id = model.counts[index].id.clone();
            let expected = model.count_submit(index, &figures);
            let counted = figures
                .iter()
                .map(|(bin, s, counted)| CountedLine {
                    bin: (!bin.is_empty()).then(|| bin.clone()),
                    sku: sku(*s),
                    counted: *counted,
                })
                .collect();
            let actual = warehouse::count::count_submit(tx, &id, counted, now).await;
            agree(&what, &expected, &actual)
        }
        Op::CountApprove(n) | Op::CountCancel(n) => {
            if model.counts.is_empty() {
                return None;
            }
            let index = n % model.counts.len();
            let id = model.counts[index].id.clone();
            let what = format!("{op:?}: count {index} {:?}", model.counts[index]);
            if matches!(op, Op::CountApprove(_)) {
                let expected = model.count_approve(index, now);
                let actual = warehouse::count::count_approve(tx, &id, now).await;
                agree(&what, &expected, &actual)
            } else {
                let expected = model.count_cancel(index);
                let actual = warehouse::count::count_cancel(tx, &id).await;
                agree(&what, &expected, &actual)
            }
        }
    };
    // Adjustments and counts record what is there: they are not refused for capacity; a
    // capacity lowered below what a warehouse holds only refuses what would add to it.
    let unchecked = matches!(op, Op::Adjust { .. } | Op::Counted { .. } | Op::CountApprove(_) | Op::SetCapacity { .. });
    model.settle_capacity(unchecked);
    refusal
}

/// A count as seen: status, and lines (bin, "" for unbinned; SKU; counted) in order.
type CountSeen = (String, Vec<(String, usize, Option<i64>)>);

/// What the store shows of a case.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    /// (warehouse, SKU) -> (on hand, reserved), for levels that exist.
    levels: BTreeMap<(usize, usize), (i64, i64)>,
    /// (warehouse, bin, SKU) -> units, for units > 0.
    bin_stock: BTreeMap<(usize, String, usize), i64>,
    /// bin_stock rows below zero.
    negative_bin_rows: i64,
    /// Per warehouse: (bin, capacity, used units).
    bins: Vec<Vec<(String, Option<i64>, i64)>>,
    /// Per warehouse: (capacity, used units).
    warehouses: Vec<(Option<i64>, i64)>,
    movements: i64,
    /// Per count of the model: status and lines (bin, SKU, counted).
    counts: Vec<CountSeen>,
}

async fn observe(db: &Db, case: &Case, model: &Model) -> Seen {
    let pool = db.reader();
    let mut levels = BTreeMap::new();
    for view in warehouse::stock::stock_views(pool, &case.skus, None).await.unwrap() {
        let s = case.sku_index(&view.sku);
        for row in view.warehouses {
            levels.insert((case.wh_index(&row.warehouse), s), (row.on_hand, row.reserved));
        }
    }
    let mut bin_stock = BTreeMap::new();
    let mut bins = Vec::new();
    let mut warehouses = Vec::new();
    let mut negative_bin_rows = 0;
    for (w, code) in case.warehouses.iter().enumerate() {
        for (s, sku) in case.skus.iter().enumerate() {
            for row in warehouse::bin::bin_stock_of(pool, code, sku).await.unwrap() {
                bin_stock.insert((w, row.bin, s), row.on_hand);
            }
        }
        let listed = warehouse::bin::bins_list(pool, code, None, 100).await.unwrap();
        bins.push(listed.into_iter().map(|b| (b.code, b.capacity_units, b.used_units)).collect());
        let site = warehouse::site::warehouse_get(pool, code).await.unwrap();
        warehouses.push((site.capacity_units, site.used_units));
        negative_bin_rows +=
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM bin_stock WHERE warehouse = $1 AND on_hand < 0")
                .bind(code.as_str().to_owned())
                .fetch_one(pool)
                .await
                .unwrap();
    }
    let movements: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM movements WHERE warehouse = $1 OR warehouse = $2")
        .bind(case.warehouses[0].as_str().to_owned())
        .bind(case.warehouses[1].as_str().to_owned())
        .fetch_one(pool)
        .await
        .unwrap();
    let mut counts = Vec::new();
    for count in &model.counts {
        let view = warehouse::count::count_get(pool, &count.id).await.unwrap();
        let mut lines: Vec<(String, usize, Option<i64>)> =
            view.lines.into_iter().map(|l| (l.bin.unwrap_or_default(), case.sku_index(&l.sku), l.counted)).collect();
        lines.sort();
        counts.push((view.status, lines));
    }
    Seen { levels, bin_stock, negative_bin_rows, bins, warehouses, movements, counts }
}

/// The invariants, on what the store shows, then the model's figures.
async fn check(db: &Db, case: &Case, model: &Model, seen: &Seen, step: usize, op: &Op) {
    let at = format!("after step {step} ({op:?})");
    for ((w, s), (on_hand, reserved)) in &seen.levels {
        assert!(0 <= *reserved && reserved <= on_hand, "{at}: level {w}/{s} is {on_hand} on hand, {reserved} reserved");
    }
    assert_eq!(seen.negative_bin_rows, 0, "{at}: bins hold negative units");
    for w in 0..WAREHOUSES {
        for s in 0..SKUS {
            let binned: i64 =
                seen.bin_stock.iter().filter(|((bw, _, bs), _)| *bw == w && *bs == s).map(|(_, q)| q).sum();
            let on_hand = seen.levels.get(&(w, s)).map(|l| l.0).unwrap_or(0);
            // Documented: "When on hand drops, bins give units up so binned never exceeds on hand."
            // `count_approval_with_no_net_variance_keeps_binned_within_on_hand` pins the case
            // this test found.
            assert!(binned <= on_hand, "{at}: {binned} units of SKU {s} in bins of warehouse {w}, {on_hand} on hand");
        }
        for (code, capacity, used) in &seen.bins[w] {
            let allowed = model.over_bins.contains(&(w, code.clone()));
            assert!(
                allowed || capacity.is_none_or(|c| *used <= c),
                "{at}: bin {code} of warehouse {w} holds {used} units, capacity {capacity:?}"
            );
        }
        let (capacity, used) = seen.warehouses[w];
        assert!(
            model.over_warehouses.contains(&w) || capacity.is_none_or(|c| used <= c),
            "{at}: warehouse {w} holds {used} units, capacity {capacity:?}"
        );
    }

    let mut levels = BTreeMap::new();
    for w in 0..WAREHOUSES {
        for s in 0..SKUS {
            let seen_level = seen.levels.get(&(w, s)).copied().unwrap_or((0, 0));
            let model_level = model.stock.level(s, w);
            levels.insert((w, s), (seen_level, model_level));
        }
    }
    for ((w, s), (seen_level, model_level)) in &levels {
        assert_eq!(seen_level, model_level, "{at}: level of SKU {s} in warehouse {w} (store, model)");
    }
    let mut model_bins = BTreeMap::new();
    for (w, bins) in model.bins.iter().enumerate() {
        for b in bins {
            for (s, q) in b.stock.iter().filter(|(_, q)| **q > 0) {
                model_bins.insert((w, b.code.clone(), *s), *q);
            }
        }
    }
    assert_eq!(seen.bin_stock, model_bins, "{at}: bin contents (store, model)");
    for (w, bins) in model.bins.iter().enumerate() {
        let expected: Vec<(String, Option<i64>, i64)> =
            bins.iter().map(|b| (b.code.clone(), b.capacity, b.used())).collect();
        assert_eq!(seen.bins[w], expected, "{at}: bins of warehouse {w} (store, model)");
        assert_eq!(seen.warehouses[w], (model.capacity[w], model.used(w)), "{at}: warehouse {w} (store, model)");
    }
    assert_eq!(seen.movements, model.movements, "{at}: movements (store, model)");
    let counts: Vec<CountSeen> = model
        .counts
        .iter()
        .map(|c| {
            let lines = c.lines.iter().map(|((bin, s), (_, counted))| (bin.clone(), *s, *counted)).collect();
            (c.status.as_str().to_owned(), lines)
        })
        .collect();
    assert_eq!(seen.counts, counts, "{at}: counts (store, model)");

    // Other cases share the database; a failing one must not blame this one while shrinking.
    let report = warehouse::reconcile::reconcile(db.reader()).await.unwrap();
    let mine: Vec<_> = report.mismatches.iter().filter(|m| case.skus.iter().any(|s| s.as_str() == m.sku)).collect();
    assert!(mine.is_empty(), "{at}: reconciliation: {mine:?}");
}

async fn run_case(db: &Db, case_no: usize, setup: &Setup, ops: &[Op]) {
    let case = Case::create(db, case_no, setup).await;
    let mut model = Model::new(setup);
    let mut before = observe(db, &case, &model).await;
    for (step, op) in ops.iter().enumerate() {
        let now = Timestamp::from_millis(1_900_000_000_000 + case_no as i64 * 10_000_000 + step as i64 * 1_000);
        let mut next = model.clone();
        let mut tx = db.begin().await.unwrap();
        let refusal = apply(&mut tx, &case, &mut next, op, now).await;
        if refusal.is_some() {
            // As the API does: a refused use case is rolled back, whatever it wrote before.
            tx.rollback().await.unwrap();
        } else {
            tx.commit().await.unwrap();
            model = next;
        }
        let after = observe(db, &case, &model).await;
        if let Some(refusal) = refusal {
            assert_eq!(after, before, "step {step} ({op:?}) was refused ({refusal:?}) but changed the store");
        }
        check(db, &case, &model, &after, step, op).await;
        before = after;
    }
}

#[test]
fn bins_and_capacities_match_the_model_and_hold_their_invariants() {
    testdb::property_on_each_backend(
        (64, 24),
        &[],
        (setup(), prop::collection::vec(op(), 1..30)),
        |runtime, db, n, (setup, ops)| runtime.block_on(run_case(db, n, &setup, &ops)),
    );
}

/// Found by this property test: `count::count_approve` once called `bins_shrink_to` only for a
/// SKU whose variances summed to a non-zero delta. A count that finds units "in bin A-1, not
/// unbinned" (bin +5, unbinned -5: net 0) adds 5 to the bin; when on hand dropped in the
/// meantime (here an adjustment of -5 between submitting and approving), the bin kept 5 units
/// while on hand was 0, breaking "binned never exceeds on hand".
#[test]
fn count_approval_with_no_net_variance_keeps_binned_within_on_hand() {
    let setup = Setup { capacity: 50, bins: [vec![Some(10)], vec![]] };
    let ops = vec![
        Op::Adjust { wh: 0, sku: 0, delta: 5 },
        Op::CountOpen { wh: 0 },
        Op::CountSubmit { count: 0, lines: vec![Place::Found { bin: 0, sku: 0, units: 5 }] },
        Op::Adjust { wh: 0, sku: 0, delta: -5 },
        Op::CountApprove(0),
    ];
    testdb::property_on_each_backend((1, 1), &[], Just(()), |runtime, db, n, ()| {
        runtime.block_on(run_case(db, n, &setup, &ops))
    });
}

/// A count that finds fewer units than are held records them all the same: the newest hold
/// is released and the older one shrinks to what is left (found when counts stopped refusing).
#[test]
fn count_approval_below_reserved_cuts_the_newest_holds_first() {
    let setup = Setup { capacity: 50, bins: [vec![Some(10)], vec![]] };
    let ops = vec![
        Op::Receive { wh: 0, lines: vec![(0, 3, Some(0))] },
        Op::Reserve { sku: 0, quantity: 2, wh: Some(0) },
        Op::Reserve { sku: 0, quantity: 1, wh: Some(0) },
        Op::CountOpen { wh: 0 },
        Op::CountSubmit { count: 0, lines: vec![Place::Listed(0, -2)] },
        Op::CountApprove(0),
        Op::Fulfill(0),
    ];
    testdb::property_on_each_backend((1, 1), &[], Just(()), |runtime, db, n, ()| {
        runtime.block_on(run_case(db, n, &setup, &ops))
    });
}
