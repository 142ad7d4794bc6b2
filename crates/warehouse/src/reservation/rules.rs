//! Pure rules of holding stock: merging lines and choosing warehouses (sourcing).
//!
//! Sourcing: a line that names a warehouse takes from it; a line that does not takes from
//! active warehouses in order of priority (lower first), then most available, then code, and
//! may split across several. Lines naming a warehouse are served first so that a free choice
//! never takes what an explicit line needed.

use crate::ShortLine;
use kernel::{SkuCode, WarehouseCode};
use std::collections::HashMap;

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
