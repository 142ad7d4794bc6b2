//! Pure rules of holding stock: merging lines, choosing warehouses (sourcing), and planning a
//! batch of holds against figures in memory ([`plan_batch`]).
//!
//! Sourcing: a line that names a warehouse takes from it; a line that does not takes from
//! active warehouses in order of priority (lower first), then most available, then code, and
//! may split across several. Lines naming a warehouse are served first so that a free choice
//! never takes what an explicit line needed.

use super::HoldLine;
use crate::lot::{LotRow, fefo_take};
use crate::{ShortLine, WarehouseError};
use kernel::{SkuCode, Timestamp, WarehouseCode};
use std::collections::{HashMap, HashSet};

/// A line as asked, after merging duplicates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WantedLine {
    pub sku: SkuCode,
    pub quantity: i64,
    pub warehouse: Option<WarehouseCode>,
}

/// A warehouse that could serve a SKU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub warehouse: WarehouseCode,
    pub priority: i64,
    pub available: i64,
}

/// What to hold where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedLine {
    pub sku: SkuCode,
    pub warehouse: WarehouseCode,
    pub quantity: i64,
}

/// Sums lines with the same SKU and the same warehouse choice, keeping first-seen order.
pub fn merge_lines(lines: impl IntoIterator<Item = (SkuCode, i64, Option<WarehouseCode>)>) -> Vec<WantedLine> {
    let mut merged: Vec<WantedLine> = Vec::new();
    for (sku, quantity, warehouse) in lines {
        match merged.iter_mut().find(|w| w.sku == sku && w.warehouse == warehouse) {
            Some(existing) => existing.quantity += quantity,
            None => merged.push(WantedLine { sku, quantity, warehouse }),
        }
    }
    merged
}

/// Plans the lines against the candidates' availability: all lines, or the short ones.
pub fn plan_hold(
    wanted: &[WantedLine],
    candidates: &HashMap<SkuCode, Vec<Candidate>>,
) -> Result<Vec<PlannedLine>, Vec<ShortLine>> {
    let mut remaining: HashMap<(&SkuCode, &WarehouseCode), i64> = HashMap::new();
    for (sku, list) in candidates {
        for c in list {
            remaining.insert((sku, &c.warehouse), c.available.max(0));
        }
    }
    let mut planned: Vec<PlannedLine> = Vec::new();
    let mut short: Vec<ShortLine> = Vec::new();
    let add = |planned: &mut Vec<PlannedLine>, sku: &SkuCode, warehouse: &WarehouseCode, quantity: i64| match planned
        .iter_mut()
        .find(|p| &p.sku == sku && &p.warehouse == warehouse)
    {
        Some(p) => p.quantity += quantity,
        None => planned.push(PlannedLine { sku: sku.clone(), warehouse: warehouse.clone(), quantity }),
    };

    for line in wanted.iter().filter(|l| l.warehouse.is_some()) {
        let warehouse = line.warehouse.as_ref().expect("filtered on is_some");
        let left = remaining.get_mut(&(&line.sku, warehouse));
        match left {
            Some(left) if *left >= line.quantity => {
                *left -= line.quantity;
                add(&mut planned, &line.sku, warehouse, line.quantity);
            }
            other => short.push(ShortLine {
                sku: line.sku.to_string(),
                warehouse: Some(warehouse.to_string()),
                requested: line.quantity,
                available: other.map(|l| *l).unwrap_or(0),
                reason: None,
            }),
        }
    }

    for line in wanted.iter().filter(|l| l.warehouse.is_none()) {
        let mut order: Vec<&Candidate> = candidates.get(&line.sku).map(|l| l.iter().collect()).unwrap_or_default();
        order.sort_by(|a, b| {
            let left_a = remaining.get(&(&line.sku, &a.warehouse)).copied().unwrap_or(0);
            let left_b = remaining.get(&(&line.sku, &b.warehouse)).copied().unwrap_or(0);
            a.priority.cmp(&b.priority).then(left_b.cmp(&left_a)).then(a.warehouse.cmp(&b.warehouse))
        });
        let total: i64 = order.iter().map(|c| remaining.get(&(&line.sku, &c.warehouse)).copied().unwrap_or(0)).sum();
        if total < line.quantity {
            short.push(ShortLine {
                sku: line.sku.to_string(),
                warehouse: None,
                requested: line.quantity,
                available: total,
                reason: None,
            });
            continue;
        }
        let mut need = line.quantity;
        for c in order {
            if need == 0 {
                break;
            }
            let left = remaining.get_mut(&(&line.sku, &c.warehouse)).expect("candidate has a remaining entry");
            let take = need.min(*left);
            if take > 0 {
                *left -= take;
                need -= take;
                add(&mut planned, &line.sku, &c.warehouse, take);
            }
        }
    }

    if short.is_empty() { Ok(planned) } else { Err(short) }
}

/// A stock level as a batch is planned against it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Level {
    pub on_hand: i64,
    pub reserved: i64,
    /// On hand but not for sale (failed quality control, damaged returns).
    pub quarantined: i64,
    /// The warehouse's priority and whether it is active.
    pub priority: i64,
    pub active: bool,
}

/// What a batch of holds is planned against; planning a command updates it, so the next one
/// sees what the previous ones left.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Figures {
    /// Known items, with whether each is lot-tracked.
    pub items: HashMap<String, bool>,
    pub warehouses: HashSet<String>,
    pub levels: HashMap<(SkuCode, WarehouseCode), Level>,
    /// Lots by (SKU, warehouse), each list in FEFO order.
    pub lots: HashMap<(String, String), Vec<LotRow>>,
}

impl Figures {
    /// Units of a level that may be held now: on hand minus reserved and quarantined, and for a lot-tracked
    /// item no more than its unexpired, unquarantined lots have free.
    fn free(&self, sku: &SkuCode, warehouse: &WarehouseCode, level: &Level, now: Timestamp) -> i64 {
        let free = level.on_hand - level.reserved - level.quarantined;
        if !self.items.get(sku.as_str()).copied().unwrap_or(false) {
            return free;
        }
        let in_lots: i64 = self
            .lots
            .get(&(sku.as_str().to_owned(), warehouse.as_str().to_owned()))
            .map(|list| list.iter().map(|l| l.available_at(now)).sum())
            .unwrap_or(0);
        free.min(in_lots)
    }
}

/// Why a hold was refused; nothing was planned for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HoldRefusal {
    /// Every line naming an unknown SKU or warehouse.
    Invalid(Vec<crate::FieldIssue>),
    Short(Vec<ShortLine>),
}

impl From<HoldRefusal> for WarehouseError {
    fn from(refusal: HoldRefusal) -> Self {
        match refusal {
            HoldRefusal::Invalid(issues) => WarehouseError::invalid_all(issues),
            HoldRefusal::Short(lines) => WarehouseError::InsufficientStock { lines },
        }
    }
}

/// One line of a planned hold, with the level after it (for its movement).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldLine {
    pub sku: SkuCode,
    pub warehouse: WarehouseCode,
    pub quantity: i64,
    /// For lot-tracked items: (lot, units) taken FEFO.
    pub lots: Vec<(String, i64)>,
    pub on_hand_after: i64,
    pub reserved_after: i64,
}

/// Plans each command's lines in order against `figures`, updating them as it goes, so each
/// outcome is what the command alone would get against what the previous ones left. The outer
/// error says the figures are inconsistent (lots holding less than their level allows).
pub fn plan_batch<'a>(
    figures: &mut Figures,
    commands: impl IntoIterator<Item = &'a [HoldLine]>,
    now: Timestamp,
) -> crate::Result<Vec<Result<Vec<HeldLine>, HoldRefusal>>> {
    // Built once: looking a SKU's levels up per command must not scan every level.
    let mut warehouses_of: HashMap<SkuCode, Vec<WarehouseCode>> = HashMap::new();
    for (sku, warehouse) in figures.levels.keys() {
        warehouses_of.entry(sku.clone()).or_default().push(warehouse.clone());
    }
    let mut outcomes = Vec::new();
    for lines in commands {
        outcomes.push(plan_one(figures, &warehouses_of, lines, now)?);
    }
    Ok(outcomes)
}

/// Every line's unknown SKU and unknown warehouse, in line order.
pub(crate) fn unknown_in_lines(figures: &Figures, lines: &[HoldLine]) -> Vec<crate::FieldIssue> {
    let mut issues = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if !figures.items.contains_key(line.sku.as_str()) {
            issues.push(crate::FieldIssue::new(format!("lines[{i}].sku"), format!("unknown SKU {}", line.sku)));
        }
        if let Some(w) = line.warehouse.as_ref().filter(|w| !figures.warehouses.contains(w.as_str())) {
            issues.push(crate::FieldIssue::new(format!("lines[{i}].warehouse"), format!("unknown warehouse {w}")));
        }
    }
    issues
}

fn plan_one(
    figures: &mut Figures,
    warehouses_of: &HashMap<SkuCode, Vec<WarehouseCode>>,
    lines: &[HoldLine],
    now: Timestamp,
) -> crate::Result<Result<Vec<HeldLine>, HoldRefusal>> {
    let issues = unknown_in_lines(figures, lines);
    if !issues.is_empty() {
        return Ok(Err(HoldRefusal::Invalid(issues)));
    }
    let wanted = merge_lines(lines.iter().map(|l| (l.sku.clone(), l.quantity.get(), l.warehouse.clone())));
    let mut candidates: HashMap<SkuCode, Vec<Candidate>> = HashMap::new();
    for sku in wanted.iter().map(|w| &w.sku) {
        if candidates.contains_key(sku) {
            continue;
        }
        let list = warehouses_of
            .get(sku)
            .into_iter()
            .flatten()
            .filter_map(|warehouse| {
                let level = &figures.levels[&(sku.clone(), warehouse.clone())];
                level.active.then(|| Candidate {
                    warehouse: warehouse.clone(),
                    priority: level.priority,
                    available: figures.free(sku, warehouse, level, now),
                })
            })
            .collect();
        candidates.insert(sku.clone(), list);
    }
    let plan = match plan_hold(&wanted, &candidates) {
        Ok(plan) => plan,
        Err(short) => return Ok(Err(HoldRefusal::Short(short))),
    };
    let mut held = Vec::with_capacity(plan.len());
    for line in plan {
        let lot_tracked = figures.items.get(line.sku.as_str()).copied().unwrap_or(false);
        let lots = match figures.lots.get_mut(&(line.sku.as_str().to_owned(), line.warehouse.as_str().to_owned())) {
            // The plan only used units of unexpired, unquarantined lots.
            Some(in_warehouse) if lot_tracked => fefo_take(in_warehouse, line.quantity, now).ok_or_else(|| {
                WarehouseError::Store(::store::StoreError::Corrupt(format!(
                    "lots of {} in {} hold less than their level",
                    line.sku, line.warehouse
                )))
            })?,
            _ => Vec::new(),
        };
        let level =
            figures.levels.get_mut(&(line.sku.clone(), line.warehouse.clone())).expect("planned levels are known");
        level.reserved += line.quantity;
        held.push(HeldLine {
            on_hand_after: level.on_hand,
            reserved_after: level.reserved,
            sku: line.sku,
            warehouse: line.warehouse,
            quantity: line.quantity,
            lots,
        });
    }
    Ok(Ok(held))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sku(s: &str) -> SkuCode {
        SkuCode::parse(s).unwrap()
    }
    fn wh(s: &str) -> WarehouseCode {
        WarehouseCode::parse(s).unwrap()
    }
    fn cand(w: &str, priority: i64, available: i64) -> Candidate {
        Candidate { warehouse: wh(w), priority, available }
    }
    fn want(s: &str, q: i64, w: Option<&str>) -> WantedLine {
        WantedLine { sku: sku(s), quantity: q, warehouse: w.map(wh) }
    }

    #[test]
    fn sourcing_prefers_lower_priority_then_splits() {
        let candidates = HashMap::from([(sku("A"), vec![cand("MUC", 20, 10), cand("BER", 10, 3)])]);
        let plan = plan_hold(&[want("A", 5, None)], &candidates).unwrap();
        assert_eq!(
            plan,
            vec![
                PlannedLine { sku: sku("A"), warehouse: wh("BER"), quantity: 3 },
                PlannedLine { sku: sku("A"), warehouse: wh("MUC"), quantity: 2 },
            ]
        );
    }

    #[test]
    fn equal_priority_prefers_the_warehouse_with_more_stock() {
        let candidates = HashMap::from([(sku("A"), vec![cand("AAA", 10, 2), cand("ZZZ", 10, 9)])]);
        let plan = plan_hold(&[want("A", 2, None)], &candidates).unwrap();
        assert_eq!(plan[0].warehouse, wh("ZZZ"));
    }

    #[test]
    fn short_lines_name_what_was_asked_and_what_was_there() {
        let candidates = HashMap::from([(sku("A"), vec![cand("BER", 10, 3)])]);
        let short =
            plan_hold(&[want("A", 5, None), want("B", 1, None), want("A", 1, Some("MUC"))], &candidates).unwrap_err();
        assert_eq!(short.len(), 3);
        assert_eq!((short[0].requested, short[0].available), (1, 0)); // explicit MUC line first
        assert_eq!((short[1].requested, short[1].available), (5, 3));
        assert_eq!(short[2].sku, "B");
    }

    #[test]
    fn explicit_lines_are_served_before_free_ones() {
        let candidates = HashMap::from([(sku("A"), vec![cand("BER", 10, 5), cand("MUC", 20, 6)])]);
        let plan = plan_hold(&[want("A", 6, None), want("A", 5, Some("BER"))], &candidates).unwrap();
        let at = |w: &str| plan.iter().find(|p| p.warehouse == wh(w)).map(|p| p.quantity);
        assert_eq!(at("BER"), Some(5));
        assert_eq!(at("MUC"), Some(6));
        assert!(plan_hold(&[want("A", 6, None), want("A", 5, Some("BER"))], &HashMap::new()).is_err());
    }

    #[test]
    fn duplicate_lines_merge() {
        let merged = merge_lines([(sku("A"), 2, None), (sku("A"), 3, None), (sku("A"), 1, Some(wh("BER")))]);
        assert_eq!(merged, vec![want("A", 5, None), want("A", 1, Some("BER"))]);
    }
}

/// `plan_batch` against a reference: each command planned alone with [`plan_hold`] on a fresh
/// copy of the figures the previous ones left, with its own candidates, FEFO and update.
#[cfg(test)]
mod batch_properties {
    use super::*;
    use kernel::Quantity;
    use proptest::prelude::*;

    const SKUS: [&str; 3] = ["A", "B", "C"];
    const WAREHOUSES: [&str; 3] = ["W1", "W2", "W3"];
    /// Index 3 in a generated line: a SKU or warehouse nobody knows.
    const UNKNOWN_SKU: &str = "ZZ";
    const UNKNOWN_WAREHOUSE: &str = "WX";
    const DAY_MS: i64 = 86_400_000;
    const NOW_MS: i64 = 1_900_000_000_000;

    /// A generated lot: expiry in days from now (0: expires right now), receipt time, on hand,
    /// reserved (reduced to at most on hand), quarantined.
    type GenLot = (i64, i64, i64, i64, bool);
    /// A generated level: None (no stock row), or on hand, reserved (reduced to at most on
    /// hand) and lots (used, instead of on hand and reserved, for lot-tracked SKUs).
    type GenLevel = Option<(i64, i64, Vec<GenLot>)>;
    /// A generated line: SKU index, quantity, warehouse index (None: the planner chooses).
    type GenLine = (usize, i64, Option<usize>);

    fn figures_strategy() -> impl Strategy<Value = Figures> {
        let lot = (-1..3_i64, 0..3_i64, 0..6_i64, 0..6_i64, prop::bool::weighted(0.2));
        let level = prop::option::weighted(0.8, (0..12_i64, 0..12_i64, prop::collection::vec(lot, 0..4)));
        (
            prop::collection::vec((0..3_i64, prop::bool::weighted(0.8)), WAREHOUSES.len()),
            prop::collection::vec(prop::bool::weighted(0.4), SKUS.len()),
            prop::collection::vec(level, SKUS.len() * WAREHOUSES.len()),
        )
            .prop_map(|(sites, lot_tracked, levels)| build_figures(&sites, &lot_tracked, levels))
    }

    fn build_figures(sites: &[(i64, bool)], lot_tracked: &[bool], levels: Vec<GenLevel>) -> Figures {
        let mut figures = Figures {
            items: SKUS.iter().zip(lot_tracked).map(|(s, t)| (s.to_string(), *t)).collect(),
            warehouses: WAREHOUSES.iter().map(|w| w.to_string()).collect(),
            ..Figures::default()
        };
        for (i, generated) in levels.into_iter().enumerate() {
            let Some((on_hand, reserved, lots)) = generated else { continue };
            let (s, w) = (i / WAREHOUSES.len(), i % WAREHOUSES.len());
            let (priority, active) = sites[w];
            let mut level = Level { on_hand, reserved: reserved % (on_hand + 1), quarantined: 0, priority, active };
            if lot_tracked[s] {
                let mut rows: Vec<LotRow> = lots
                    .into_iter()
                    .enumerate()
                    .map(|(n, (day, received, on_hand, reserved, quarantined))| LotRow {
                        sku: SKUS[s].into(),
                        warehouse: WAREHOUSES[w].into(),
                        lot: format!("L{n}"),
                        expires_on: String::new(),
                        expires_at_ms: NOW_MS + day * DAY_MS,
                        received_at_ms: received,
                        on_hand,
                        reserved: reserved % (on_hand + 1),
                        quarantined,
                    })
                    .collect();
                crate::lot::fefo_order(&mut rows);
                // A lot-tracked level is the sum of its lots.
                level.on_hand = rows.iter().map(|l| l.on_hand).sum();
                level.reserved = rows.iter().map(|l| l.reserved).sum();
                figures.lots.insert((SKUS[s].into(), WAREHOUSES[w].into()), rows);
            }
            figures
                .levels
                .insert((SkuCode::parse(SKUS[s]).unwrap(), WarehouseCode::parse(WAREHOUSES[w]).unwrap()), level);
        }
        figures
    }

    fn commands_strategy() -> impl Strategy<Value = Vec<Vec<GenLine>>> {
        let index = prop_oneof![6 => 0..3_usize, 1 => Just(3_usize)];
        let line = (index.clone(), 1..8_i64, prop::option::of(index));
        prop::collection::vec(prop::collection::vec(line, 1..5), 1..7)
    }

    fn hold_lines(generated: &[GenLine]) -> Vec<HoldLine> {
        generated
            .iter()
            .map(|(s, q, w)| HoldLine {
                sku: SkuCode::parse(SKUS.get(*s).copied().unwrap_or(UNKNOWN_SKU)).unwrap(),
                quantity: Quantity::new(*q).unwrap(),
                warehouse: w
                    .map(|w| WarehouseCode::parse(WAREHOUSES.get(w).copied().unwrap_or(UNKNOWN_WAREHOUSE)).unwrap()),
            })
            .collect()
    }

    /// The reference's view of a held line: SKU, warehouse, units, lots taken, reserved after.
    type Held = (String, String, i64, Vec<(String, i64)>, i64);

    /// One command alone against `figures` (a fresh copy): what it holds, or why not.
    fn reference_plan(figures: &Figures, lines: &[HoldLine], now: Timestamp) -> Result<Vec<PlannedLine>, HoldRefusal> {
        let mut issues = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            if !figures.items.contains_key(line.sku.as_str()) {
                issues.push(crate::FieldIssue::new(format!("lines[{i}].sku"), format!("unknown SKU {}", line.sku)));
            }
            if let Some(w) = line.warehouse.as_ref().filter(|w| !figures.warehouses.contains(w.as_str())) {
                issues.push(crate::FieldIssue::new(format!("lines[{i}].warehouse"), format!("unknown warehouse {w}")));
            }
        }
        if !issues.is_empty() {
            return Err(HoldRefusal::Invalid(issues));
        }
        let wanted = merge_lines(lines.iter().map(|l| (l.sku.clone(), l.quantity.get(), l.warehouse.clone())));
        let mut candidates: HashMap<SkuCode, Vec<Candidate>> = HashMap::new();
        for ((sku, warehouse), level) in &figures.levels {
            if !level.active || !wanted.iter().any(|w| &w.sku == sku) {
                continue;
            }
            let mut available = level.on_hand - level.reserved - level.quarantined;
            if figures.items[sku.as_str()] {
                let lots = figures.lots.get(&(sku.to_string(), warehouse.to_string()));
                let in_lots: i64 = lots
                    .into_iter()
                    .flatten()
                    .filter(|l| !l.quarantined && l.expires_at_ms > now.millis())
                    .map(|l| l.on_hand - l.reserved)
                    .sum();
                available = available.min(in_lots);
            }
            let candidate = Candidate { warehouse: warehouse.clone(), priority: level.priority, available };
            candidates.entry(sku.clone()).or_default().push(candidate);
        }
        plan_hold(&wanted, &candidates).map_err(HoldRefusal::Short)
    }

    /// Applies a planned hold to `figures`: reserved up per line, lots taken first expiry
    /// first, then first received, then by code.
    fn reference_apply(figures: &mut Figures, plan: &[PlannedLine], now: Timestamp) -> Vec<Held> {
        let mut held = Vec::new();
        for line in plan {
            let mut taken = Vec::new();
            if figures.items[line.sku.as_str()] {
                let lots = figures.lots.get_mut(&(line.sku.to_string(), line.warehouse.to_string())).unwrap();
                let mut order: Vec<usize> = (0..lots.len()).collect();
                order.sort_by_key(|i| (lots[*i].expires_at_ms, lots[*i].received_at_ms, lots[*i].lot.clone()));
                let mut need = line.quantity;
                for i in order {
                    let lot = &mut lots[i];
                    let free = if lot.quarantined || lot.expires_at_ms <= now.millis() {
                        0
                    } else {
                        lot.on_hand - lot.reserved
                    };
                    let take = need.min(free);
                    if take > 0 {
                        lot.reserved += take;
                        need -= take;
                        taken.push((lot.lot.clone(), take));
                    }
                }
                assert_eq!(need, 0, "the reference planned more than the lots have free");
            }
            let level = figures.levels.get_mut(&(line.sku.clone(), line.warehouse.clone())).unwrap();
            level.reserved += line.quantity;
            held.push((line.sku.to_string(), line.warehouse.to_string(), line.quantity, taken, level.reserved));
        }
        held
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn a_batch_plans_exactly_like_its_commands_one_by_one(figures in figures_strategy(), commands in commands_strategy()) {
            let now = Timestamp::from_millis(NOW_MS);
            let commands: Vec<Vec<HoldLine>> = commands.iter().map(|c| hold_lines(c)).collect();

            let mut batch_figures = figures.clone();
            let batch = plan_batch(&mut batch_figures, commands.iter().map(|c| c.as_slice()), now).unwrap();
            let batch: Vec<Result<Vec<Held>, HoldRefusal>> = batch
                .into_iter()
                .map(|outcome| {
                    outcome.map(|lines| {
                        lines
                            .into_iter()
                            .map(|l| (l.sku.to_string(), l.warehouse.to_string(), l.quantity, l.lots, l.reserved_after))
                            .collect()
                    })
                })
                .collect();

            let mut left = figures;
            let mut one_by_one = Vec::new();
            for lines in &commands {
                let fresh = left.clone();
                one_by_one.push(reference_plan(&fresh, lines, now).map(|plan| reference_apply(&mut left, &plan, now)));
            }

            prop_assert_eq!(batch, one_by_one);
            prop_assert_eq!(batch_figures, left);
        }
    }
}
