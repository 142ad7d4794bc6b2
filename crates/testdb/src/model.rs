//! An in-memory model of stock levels, lots and reservations, for the property tests that
//! apply the same operations to the store and to the model and compare. SKUs and warehouses
//! are indices into a test's own lists; each test keeps its own operations and checks, and
//! models what only it covers (bins, capacity, counts) around this one.
//!
//! The model follows the documented rules: a level's available units are on hand minus
//! reserved; lots are taken first expiry first, then first received, skipping expired ones;
//! an active reservation past its expiry reads as expired (confirming it is refused,
//! releasing it expires it); fulfilling ships what it holds.

use kernel::{ReservationId, Timestamp};
use std::collections::BTreeMap;
pub use warehouse::reservation::Status;

/// Why the model refuses an operation; the store must refuse it too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StockRefusal {
    /// Not enough available units.
    Short,
    /// The reservation's status does not allow the action.
    State,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelLot {
    pub name: String,
    pub expires_at_ms: i64,
    /// Lots received earlier come first among lots expiring at the same instant.
    pub received_order: usize,
    pub on_hand: i64,
    pub reserved: i64,
}

impl ModelLot {
    fn free_at(&self, now: Timestamp) -> i64 {
        if self.expires_at_ms <= now.millis() { 0 } else { self.on_hand - self.reserved }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelLine {
    pub sku: usize,
    pub wh: usize,
    pub quantity: i64,
    /// For lot-tracked SKUs: (lot, units) held.
    pub lots: Vec<(String, i64)>,
}

#[derive(Debug, Clone)]
pub struct ModelReservation {
    pub id: ReservationId,
    pub status: Status,
    pub expires_at: Timestamp,
    pub lines: Vec<ModelLine>,
}

impl ModelReservation {
    /// Active or confirmed: it holds its units.
    pub fn holding(&self) -> bool {
        matches!(self.status, Status::Active | Status::Confirmed)
    }

    fn due(&self, now: Timestamp) -> bool {
        self.status == Status::Active && self.expires_at <= now
    }
}

#[derive(Debug, Clone, Default)]
pub struct StockModel {
    /// (SKU, warehouse) -> (on hand, reserved).
    pub levels: BTreeMap<(usize, usize), (i64, i64)>,
    /// (SKU, warehouse) -> lots, in the order received.
    pub lots: BTreeMap<(usize, usize), Vec<ModelLot>>,
    pub reservations: Vec<ModelReservation>,
}

impl StockModel {
    /// (on hand, reserved); (0, 0) where there is no level.
    pub fn level(&self, sku: usize, wh: usize) -> (i64, i64) {
        self.levels.get(&(sku, wh)).copied().unwrap_or((0, 0))
    }

    pub fn level_mut(&mut self, sku: usize, wh: usize) -> &mut (i64, i64) {
        self.levels.entry((sku, wh)).or_default()
    }

    pub fn on_hand(&self, sku: usize, wh: usize) -> i64 {
        self.level(sku, wh).0
    }

    pub fn available(&self, sku: usize, wh: usize) -> i64 {
        let (on_hand, reserved) = self.level(sku, wh);
        on_hand - reserved
    }

    pub fn receive(&mut self, sku: usize, wh: usize, quantity: i64) {
        self.level_mut(sku, wh).0 += quantity;
    }

    /// Receives into a lot; a lot received again keeps its first expiry.
    pub fn receive_lot(&mut self, sku: usize, wh: usize, lot: &str, expires_at_ms: i64, quantity: i64) {
        self.receive(sku, wh, quantity);
        let lots = self.lots.entry((sku, wh)).or_default();
        match lots.iter_mut().find(|l| l.name == lot) {
            Some(existing) => existing.on_hand += quantity,
            None => {
                let received_order = lots.len();
                lots.push(ModelLot { name: lot.into(), expires_at_ms, received_order, on_hand: quantity, reserved: 0 })
            }
        }
    }

    /// The lot of `sku` in `wh` named `lot`.
    pub fn lot(&self, sku: usize, wh: usize, lot: &str) -> Option<&ModelLot> {
        self.lots.get(&(sku, wh)).and_then(|lots| lots.iter().find(|l| l.name == lot))
    }

    /// An adjustment by `delta`: it may not take away reserved units.
    pub fn adjust(&mut self, sku: usize, wh: usize, delta: i64) -> Result<(), StockRefusal> {
        if delta < 0 && self.available(sku, wh) < -delta {
            return Err(StockRefusal::Short);
        }
        self.level_mut(sku, wh).0 += delta;
        Ok(())
    }

    /// An adjustment to a counted figure: it may not go below what is reserved.
    pub fn count(&mut self, sku: usize, wh: usize, counted: i64) -> Result<(), StockRefusal> {
        let level = self.level_mut(sku, wh);
        if counted < level.1 {
            return Err(StockRefusal::Short);
        }
        level.0 = counted;
        Ok(())
    }

    /// Moves `quantity` of available units from one warehouse to another.
    pub fn transfer(&mut self, sku: usize, from: usize, to: usize, quantity: i64) -> Result<(), StockRefusal> {
        if self.available(sku, from) < quantity {
            return Err(StockRefusal::Short);
        }
        self.level_mut(sku, from).0 -= quantity;
        self.level_mut(sku, to).0 += quantity;
        Ok(())
    }

    /// Whether a hold of `lines` (SKU, units, warehouse or None for any of `warehouses`) can be
    /// served: lines naming a warehouse fit it, and the others fit what those leave.
    pub fn hold_fits(&self, lines: &[(usize, i64, Option<usize>)], warehouses: usize) -> bool {
        let mut explicit: BTreeMap<(usize, usize), i64> = BTreeMap::new();
        let mut free: BTreeMap<usize, i64> = BTreeMap::new();
        for (sku, quantity, wh) in lines {
            match wh {
                Some(wh) => *explicit.entry((*sku, *wh)).or_default() += quantity,
                None => *free.entry(*sku).or_default() += quantity,
            }
        }
        let explicit_fits = explicit.iter().all(|((sku, wh), q)| self.available(*sku, *wh) >= *q);
        let free_fits = free.iter().all(|(sku, q)| {
            let left: i64 = (0..warehouses)
                .map(|wh| self.available(*sku, wh) - explicit.get(&(*sku, wh)).copied().unwrap_or(0))
                .sum();
            left >= *q
        });
        explicit_fits && free_fits
    }

    /// What holding `quantity` of a lot-tracked `sku` in `wh` takes at `now`: unexpired lots,
    /// first expiry first, then first received; None if they have too little free.
    pub fn fefo_take(&self, sku: usize, wh: usize, quantity: i64, now: Timestamp) -> Option<Vec<(String, i64)>> {
        let lots = self.lots.get(&(sku, wh)).map(Vec::as_slice).unwrap_or_default();
        let mut order: Vec<&ModelLot> = lots.iter().filter(|l| l.free_at(now) > 0).collect();
        order.sort_by_key(|l| (l.expires_at_ms, l.received_order));
        if order.iter().map(|l| l.free_at(now)).sum::<i64>() < quantity {
            return None;
        }
        let mut need = quantity;
        let mut taken = Vec::new();
        for lot in order {
            let take = need.min(lot.free_at(now));
            if take > 0 {
                need -= take;
                taken.push((lot.name.clone(), take));
            }
        }
        Some(taken)
    }

    /// Records a hold the store made (its lines as the store chose them) and reserves them;
    /// returns its index.
    pub fn hold(&mut self, id: ReservationId, expires_at: Timestamp, lines: Vec<ModelLine>) -> usize {
        for line in &lines {
            self.level_mut(line.sku, line.wh).1 += line.quantity;
            for (name, units) in &line.lots {
                self.lot_mut(line.sku, line.wh, name).reserved += units;
            }
        }
        self.reservations.push(ModelReservation { id, status: Status::Active, expires_at, lines });
        self.reservations.len() - 1
    }

    fn lot_mut(&mut self, sku: usize, wh: usize, name: &str) -> &mut ModelLot {
        let lots = self.lots.get_mut(&(sku, wh)).expect("the lot's level has lots");
        lots.iter_mut().find(|l| l.name == name).expect("held lots exist")
    }

    /// `active` → `confirmed`; confirming a confirmed one changes nothing; an active one past
    /// its expiry reads as expired and is refused.
    pub fn confirm(&mut self, index: usize, now: Timestamp) -> Result<(), StockRefusal> {
        let r = &mut self.reservations[index];
        match r.status {
            Status::Confirmed => Ok(()),
            Status::Active if !r.due(now) => {
                r.status = Status::Confirmed;
                Ok(())
            }
            _ => Err(StockRefusal::State),
        }
    }

    /// Gives the units back; an active one past its expiry is expired instead; releasing a
    /// released or expired one changes nothing; a fulfilled one is refused.
    pub fn release(&mut self, index: usize, now: Timestamp) -> Result<(), StockRefusal> {
        let reservation = &self.reservations[index];
        let (status, due) = (reservation.status, reservation.due(now));
        match status {
            Status::Fulfilled => Err(StockRefusal::State),
            Status::Active if due => {
                self.give_back(index, Status::Expired);
                Ok(())
            }
            Status::Active | Status::Confirmed => {
                self.give_back(index, Status::Released);
                Ok(())
            }
            Status::Released | Status::Expired => Ok(()),
        }
    }

    /// `confirmed` → `fulfilled`: the held units leave (on hand and reserved both drop).
    pub fn fulfill(&mut self, index: usize) -> Result<(), StockRefusal> {
        if self.reservations[index].status != Status::Confirmed {
            return Err(StockRefusal::State);
        }
        self.give_back(index, Status::Fulfilled);
        Ok(())
    }

    /// Expires active reservations due at `now` (only those holding one of `skus`, if given:
    /// a hold reclaims inline only the SKUs it is short of).
    pub fn expire_due(&mut self, now: Timestamp, skus: Option<&[usize]>) {
        for index in 0..self.reservations.len() {
            let r = &self.reservations[index];
            let holds = skus.is_none_or(|skus| r.lines.iter().any(|l| skus.contains(&l.sku)));
            if r.due(now) && holds {
                self.give_back(index, Status::Expired);
            }
        }
    }

    /// Frees `units` of `sku` in `wh` for a cycle count that found them missing, as the store
    /// does: due reservations holding the SKU expire, then held units are given back, active
    /// holds before confirmed ones and the newest first within each (a reservation that gives
    /// back all it holds is released; otherwise its lines shrink). Returns the movements
    /// written (one per line of a whole release, one per partial cut).
    pub fn cut_holds(&mut self, sku: usize, wh: usize, units: i64, now: Timestamp) -> i64 {
        self.expire_due(now, Some(&[sku]));
        let mut short = units - self.available(sku, wh);
        let mut order: Vec<usize> = (0..self.reservations.len())
            .filter(|i| {
                let r = &self.reservations[*i];
                r.holding() && r.lines.iter().any(|l| l.sku == sku && l.wh == wh && l.quantity > 0)
            })
            .collect();
        order.sort_by_key(|i| (self.reservations[*i].status != Status::Active, std::cmp::Reverse(*i)));
        let mut movements = 0;
        for index in order {
            if short <= 0 {
                break;
            }
            let lines = &self.reservations[index].lines;
            let held: i64 = lines.iter().filter(|l| l.sku == sku && l.wh == wh).map(|l| l.quantity).sum();
            let total: i64 = lines.iter().map(|l| l.quantity).sum();
            let take = held.min(short);
            short -= take;
            if take == total {
                movements += lines.len() as i64;
                self.give_back(index, Status::Released);
                continue;
            }
            let mut need = take;
            for line in self.reservations[index].lines.iter_mut().filter(|l| l.sku == sku && l.wh == wh) {
                let cut = need.min(line.quantity);
                line.quantity -= cut;
                need -= cut;
            }
            self.reservations[index].lines.retain(|l| l.quantity > 0);
            self.level_mut(sku, wh).1 -= take;
            movements += 1;
        }
        movements
    }

    fn give_back(&mut self, index: usize, status: Status) {
        let shipped = status == Status::Fulfilled;
        for line in self.reservations[index].lines.clone() {
            let level = self.level_mut(line.sku, line.wh);
            level.1 -= line.quantity;
            if shipped {
                level.0 -= line.quantity;
            }
            for (name, units) in &line.lots {
                let lot = self.lot_mut(line.sku, line.wh, name);
                lot.reserved -= units;
                if shipped {
                    lot.on_hand -= units;
                }
            }
        }
        self.reservations[index].status = status;
    }
}
