//! Sourcing: which warehouses ship an order's lines.
//!
//! A pure planner (no database, no clock but the time budget's): [`plan`] takes the lines,
//! the channel's warehouses in priority order, their sellable stock, their shipping rates and
//! the destination, and returns the shipments with an [`Explanation`] a person can read.
//!
//! Every strategy first caps each line at the stock of the warehouses it may use (all of
//! them for `priority` and `distance`, those with a shipping rate for `cost`); what is over
//! goes into [`Plan::short`] and the rest is allocated in full, never above any warehouse's
//! stock.
//!
//! - `priority`: the first warehouse in channel order that has every line ships everything;
//!   when none has, each line takes from the warehouses in channel order, as much as each has.
//! - `distance`: the same, with the warehouses ordered by great-circle distance from the
//!   destination (those without coordinates last, in channel order); channel order when the
//!   destination has no coordinates.
//! - `cost`: the cheapest allocation of all, exactly, where a shipment costs its rate's base
//!   plus its per-kilogram price for every started kilogram, and every shipment beyond the
//!   first adds the channel's split penalty. Ties go to fewer shipments, then to warehouses
//!   earlier in channel order. When the exact solve outlives its time budget, the cheaper of
//!   the best plan found so far and a greedy one is returned, marked
//!   [`Solver::GreedyFallback`].
//!
//! The exact solve goes over warehouse sets in increasing order of a lower bound (their bases,
//! their split penalties and the cheapest fractional per-kilogram cost of the lines) and stops
//! when the bound exceeds the best plan found. For one set, a branch-and-bound search
//! enumerates how many units of each line each warehouse ships, with every warehouse of the set
//! shipping at least one unit, pruned only by valid lower bounds, so no cheaper plan is ever
//! skipped (the `exact` module tells how).
//!
//! Bad values never panic: negative stock counts as none, lines of quantity below 1 are
//! ignored, lines of one SKU given twice are merged (as are warehouses given twice: the first
//! counts), negative grams count as 0, and negative rates and split penalties as 0.

use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// Earth's mean radius, for haversine distances.
pub const EARTH_RADIUS_KM: f64 = 6371.0;
/// Most warehouse sets an explanation lists as alternatives (the chosen one included).
pub const ALTERNATIVES_MAX: usize = 5;
/// Most usable warehouses the exact cost solve takes (2^16 sets); beyond, the greedy plan.
pub const EXACT_WAREHOUSES_MAX: usize = 16;

/// How the warehouses are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// The channel's warehouse order.
    Priority,
    /// The warehouse nearest the destination first.
    Distance,
    /// The cheapest plan by shipping rates and split penalty.
    Cost,
}

/// A line to ship, its SKU distinct among the input's lines.
#[derive(Debug, Clone, PartialEq)]
pub struct SourcingLine {
    pub sku: String,
    /// At least 1; lines below are ignored.
    pub quantity: i64,
    /// Weight of one unit; 0 when unknown (such units cost nothing per kilogram).
    pub unit_grams: i64,
}

/// A warehouse's shipping rate: `base_minor + per_kg_minor * ceil(grams / 1000)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Rate {
    pub base_minor: i64,
    /// Per started kilogram.
    pub per_kg_minor: i64,
}

/// A warehouse the channel ships from; the input lists them most preferred first.
#[derive(Debug, Clone, PartialEq)]
pub struct SourcingWarehouse {
    pub code: String,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    /// `None`: no rate to the destination (such a warehouse is not used by `cost`).
    pub rate: Option<Rate>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Destination {
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SourcingInput {
    pub strategy: Strategy,
    pub lines: Vec<SourcingLine>,
    /// In the channel's priority order, most preferred first.
    pub warehouses: Vec<SourcingWarehouse>,
    /// Sellable units by (SKU, warehouse code); a missing pair has none.
    pub available: HashMap<(String, String), i64>,
    /// Added for every shipment beyond the first.
    pub split_penalty_minor: i64,
    pub destination: Destination,
    /// Bound on the exact cost solve.
    pub time_budget: Duration,
}

/// The chosen shipments and why.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Plan {
    pub strategy: Strategy,
    /// One per warehouse used, in the order chosen.
    pub shipments: Vec<Shipment>,
    /// Lines asking for more than all the usable warehouses have.
    pub short: Vec<ShortLine>,
    /// Sum of the shipments' shipping; `None` when a shipment's warehouse has no rate.
    pub shipping_minor: Option<i64>,
    /// Shipping plus split penalties; `None` when shipping is.
    pub cost_minor: Option<i64>,
    pub explanation: Explanation,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Shipment {
    pub warehouse: String,
    /// In the input's line order.
    pub lines: Vec<Allocation>,
    pub grams: i64,
    /// `None` when the warehouse has no rate.
    pub shipping_minor: Option<i64>,
    /// `None` when the warehouse or the destination has no coordinates.
    pub distance_km: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Allocation {
    pub sku: String,
    pub quantity: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ShortLine {
    pub sku: String,
    pub requested: i64,
    /// Units of all the usable warehouses together, all of which the plan ships.
    pub available: i64,
}

/// Which method made the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Solver {
    Priority,
    Distance,
    /// The exact cost solve, finished within its time budget.
    Exact,
    /// The exact cost solve ran out of its time budget (or the instance was too large for it):
    /// the cheaper of the best plan it had found and a greedy one.
    GreedyFallback,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Explanation {
    pub solver: Solver,
    /// Every warehouse given, in channel order.
    pub candidates: Vec<Candidate>,
    /// For `cost`: the cheapest warehouse sets whose cost the solve established, best first,
    /// the chosen one first (at most [`ALTERNATIVES_MAX`]): every single warehouse that has
    /// every line, and every set that beat the best plan so far when it was searched (others
    /// are only known to cost more); under `greedy_fallback`, the plans found before time ran
    /// out. Empty for the other strategies.
    pub alternatives: Vec<Alternative>,
    /// One sentence on why this plan won; money in minor units.
    pub reason: String,
    /// Complete plans priced.
    pub plans_evaluated: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Candidate {
    pub warehouse: String,
    /// 0-based position in the channel's order.
    pub priority: usize,
    pub distance_km: Option<f64>,
    pub rate: Option<Rate>,
    /// Why the warehouse could not be used, e.g. "no shipping rate", "no stock of any line".
    pub excluded: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Alternative {
    /// In channel order.
    pub warehouses: Vec<String>,
    pub cost_minor: i64,
    pub shipments: usize,
}

/// Plans the shipments of `input`'s lines by its strategy.
pub fn plan(input: &SourcingInput) -> Plan {
    let deadline = Instant::now().checked_add(input.time_budget);
    let ctx = Ctx::new(input);
    match input.strategy {
        Strategy::Priority | Strategy::Distance => plan_in_order(&ctx, input.strategy),
        Strategy::Cost => plan_cost(&ctx, deadline, input.time_budget),
    }
}

/// Great-circle distance in kilometres between two (latitude, longitude) points in degrees.
pub fn haversine_km(from: (f64, f64), to: (f64, f64)) -> f64 {
    let (lat1, lat2) = (from.0.to_radians(), to.0.to_radians());
    let (dlat, dlon) = ((to.0 - from.0).to_radians(), (to.1 - from.1).to_radians());
    let h = (dlat / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * (dlon / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_KM * h.sqrt().min(1.0).asin()
}

/// Shipping of `grams` at `rate`, negative rate parts counting as 0.
pub fn shipping_minor(rate: &Rate, grams: i64) -> i64 {
    rate.base_minor.max(0).saturating_add(rate.per_kg_minor.max(0).saturating_mul(started_kg(grams)))
}

fn started_kg(grams: i64) -> i64 {
    if grams <= 0 { 0 } else { grams / 1000 + i64::from(grams % 1000 != 0) }
}

fn coordinates(latitude: Option<f64>, longitude: Option<f64>) -> Option<(f64, f64)> {
    let (lat, lon) = (latitude?, longitude?);
    let valid = lat.is_finite() && lon.is_finite() && lat.abs() <= 90.0 && lon.abs() <= 180.0;
    valid.then_some((lat, lon))
}

/// A line as planned: merged by SKU, quantity at least 1, grams at least 0.
struct Line<'a> {
    sku: &'a str,
    quantity: i64,
    grams: i64,
}

struct Site<'a> {
    code: &'a str,
    rate: Option<Rate>,
    distance_km: Option<f64>,
}

/// Units by line, then by site (the sites' indices are their channel priority).
type Alloc = Vec<Vec<i64>>;

struct Ctx<'a> {
    lines: Vec<Line<'a>>,
    sites: Vec<Site<'a>>,
    /// Stock by line, then by site, never negative.
    avail: Vec<Vec<i64>>,
    penalty: i64,
    destination: Option<(f64, f64)>,
}

impl<'a> Ctx<'a> {
    fn new(input: &'a SourcingInput) -> Self {
        let mut lines: Vec<Line<'a>> = Vec::new();
        let mut by_sku: HashMap<&str, usize> = HashMap::new();
        for line in input.lines.iter().filter(|l| l.quantity >= 1) {
            match by_sku.get(line.sku.as_str()) {
                Some(&i) => lines[i].quantity = lines[i].quantity.saturating_add(line.quantity),
                None => {
                    by_sku.insert(&line.sku, lines.len());
                    lines.push(Line { sku: &line.sku, quantity: line.quantity, grams: line.unit_grams.max(0) });
                }
            }
        }
        let destination = coordinates(input.destination.latitude, input.destination.longitude);
        let mut seen = HashSet::new();
        let sites: Vec<Site<'a>> = input
            .warehouses
            .iter()
            .filter(|w| seen.insert(w.code.as_str()))
            .map(|w| Site {
                code: &w.code,
                rate: w.rate,
                distance_km: destination.zip(coordinates(w.latitude, w.longitude)).map(|(d, c)| haversine_km(d, c)),
            })
            .collect();
        let mut key = (String::new(), String::new());
        let avail = lines
            .iter()
            .map(|line| {
                sites
                    .iter()
                    .map(|site| {
                        key.0.clear();
                        key.0.push_str(line.sku);
                        key.1.clear();
                        key.1.push_str(site.code);
                        input.available.get(&key).copied().unwrap_or(0).max(0)
                    })
                    .collect()
            })
            .collect();
        Ctx { lines, sites, avail, penalty: input.split_penalty_minor.max(0), destination }
    }

    /// Each line's quantity capped at the stock of the `usable` sites, and the short lines.
    fn cap(&self, usable: &[bool]) -> (Vec<i64>, Vec<ShortLine>) {
        let mut capped = Vec::with_capacity(self.lines.len());
        let mut short = Vec::new();
        for (l, line) in self.lines.iter().enumerate() {
            let total =
                self.avail[l].iter().zip(usable).filter(|(_, u)| **u).fold(0_i64, |t, (a, _)| t.saturating_add(*a));
            if line.quantity > total {
                short.push(ShortLine { sku: line.sku.to_owned(), requested: line.quantity, available: total });
            }
            capped.push(line.quantity.min(total));
        }
        (capped, short)
    }

    fn has_stock(&self, site: usize, capped: &[i64]) -> bool {
        capped.iter().zip(&self.avail).any(|(q, a)| *q > 0 && a[site] > 0)
    }

    fn candidates(&self, capped: &[i64], need_rate: bool) -> Vec<Candidate> {
        self.sites
            .iter()
            .enumerate()
            .map(|(w, site)| Candidate {
                warehouse: site.code.to_owned(),
                priority: w,
                distance_km: site.distance_km,
                rate: site.rate,
                excluded: if need_rate && site.rate.is_none() {
                    Some("no shipping rate".to_owned())
                } else if !self.has_stock(w, capped) {
                    Some("no stock of any line".to_owned())
                } else {
                    None
                },
            })
            .collect()
    }

    fn shipments(&self, alloc: &Alloc, order: &[usize]) -> Vec<Shipment> {
        order
            .iter()
            .filter_map(|&w| {
                let lines: Vec<Allocation> = self
                    .lines
                    .iter()
                    .zip(alloc)
                    .filter(|(_, a)| a[w] > 0)
                    .map(|(line, a)| Allocation { sku: line.sku.to_owned(), quantity: a[w] })
                    .collect();
                if lines.is_empty() {
                    return None;
                }
                let grams = self.grams(alloc, w);
                let site = &self.sites[w];
                Some(Shipment {
                    warehouse: site.code.to_owned(),
                    lines,
                    grams,
                    shipping_minor: site.rate.map(|r| shipping_minor(&r, grams)),
                    distance_km: site.distance_km,
                })
            })
            .collect()
    }

    fn grams(&self, alloc: &Alloc, w: usize) -> i64 {
        self.lines.iter().zip(alloc).fold(0_i64, |g, (line, a)| g.saturating_add(a[w].saturating_mul(line.grams)))
    }

    /// Cost of an allocation from rated sites; `None` if a site used has no rate.
    fn cost(&self, alloc: &Alloc) -> Option<i64> {
        let mut total = 0_i64;
        let mut used = 0_i64;
        for w in 0..self.sites.len() {
            if alloc.iter().any(|a| a[w] > 0) {
                total = total.saturating_add(shipping_minor(self.sites[w].rate.as_ref()?, self.grams(alloc, w)));
                used += 1;
            }
        }
        Some(total.saturating_add(self.penalty.saturating_mul((used - 1).max(0))))
    }

    /// Each line takes from the sites in `order`, as much as each has.
    fn fill(&self, capped: &[i64], order: &[usize]) -> Alloc {
        capped
            .iter()
            .zip(&self.avail)
            .map(|(&q, avail)| {
                let mut row = vec![0; self.sites.len()];
                let mut rest = q;
                for &w in order {
                    let take = rest.min(avail[w]);
                    row[w] = take;
                    rest -= take;
                }
                row
            })
            .collect()
    }

    /// A site that has every line's capped quantity, if anything is to be shipped.
    fn ships_all(&self, capped: &[i64], w: usize) -> bool {
        capped.iter().any(|q| *q > 0) && capped.iter().zip(&self.avail).all(|(q, a)| a[w] >= *q)
    }

    fn single(&self, capped: &[i64], w: usize) -> Alloc {
        capped
            .iter()
            .map(|&q| {
                let mut row = vec![0; self.sites.len()];
                row[w] = q;
                row
            })
            .collect()
    }

    fn codes(&self, sites: impl IntoIterator<Item = usize>) -> Vec<String> {
        sites.into_iter().map(|w| self.sites[w].code.to_owned()).collect()
    }
}

fn totals(shipments: &[Shipment], penalty: i64) -> (Option<i64>, Option<i64>) {
    let shipping = shipments.iter().try_fold(0_i64, |t, s| s.shipping_minor.map(|m| t.saturating_add(m)));
    let splits = (shipments.len() as i64 - 1).max(0);
    (shipping, shipping.map(|s| s.saturating_add(penalty.saturating_mul(splits))))
}

fn short_note(short: &[ShortLine]) -> String {
    match short.len() {
        0 => String::new(),
        1 => format!("; {} is short", short[0].sku),
        n => format!("; {n} lines are short"),
    }
}

fn plan_in_order(ctx: &Ctx, strategy: Strategy) -> Plan {
    let usable = vec![true; ctx.sites.len()];
    let (capped, short) = ctx.cap(&usable);
    let mut order: Vec<usize> = (0..ctx.sites.len()).collect();
    let (solver, prefix, single_phrase, split_phrase) = if strategy == Strategy::Priority {
        (Solver::Priority, "", "the first warehouse in channel order that has every line", "in channel order")
    } else if ctx.destination.is_none() {
        (
            Solver::Distance,
            "destination has no coordinates, so channel order: ",
            "the first warehouse in channel order that has every line",
            "in channel order",
        )
    } else {
        // Warehouses without coordinates last, in channel order.
        order.sort_by(|&a, &b| match (ctx.sites[a].distance_km, ctx.sites[b].distance_km) {
            (Some(x), Some(y)) => x.total_cmp(&y).then(a.cmp(&b)),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => a.cmp(&b),
        });
        (Solver::Distance, "", "the nearest warehouse that has every line", "nearest first")
    };
    let single = order.iter().copied().find(|&w| ctx.ships_all(&capped, w));
    let alloc = match single {
        Some(w) => ctx.single(&capped, w),
        None => ctx.fill(&capped, &order),
    };
    let shipments = ctx.shipments(&alloc, &order);
    let (shipping_minor, cost_minor) = totals(&shipments, ctx.penalty);
    let reason = match (single, shipments.as_slice()) {
        (_, []) if ctx.lines.is_empty() => "nothing to ship: no lines".to_owned(),
        (_, []) => format!("nothing to ship: no warehouse has stock of any line{}", short_note(&short)),
        (Some(w), _) => {
            let distance = match ctx.sites[w].distance_km {
                Some(d) if strategy == Strategy::Distance => format!(" ({d:.1} km)"),
                _ => String::new(),
            };
            format!("{prefix}{}{distance} ships everything: {single_phrase}{}", ctx.sites[w].code, short_note(&short))
        }
        (None, shipments) => {
            let codes: Vec<&str> = shipments.iter().map(|s| s.warehouse.as_str()).collect();
            format!(
                "{prefix}no single warehouse has every line: split over {} {split_phrase}{}",
                codes.join(", "),
                short_note(&short)
            )
        }
    };
    Plan {
        strategy,
        shipments,
        short,
        shipping_minor,
        cost_minor,
        explanation: Explanation {
            solver,
            candidates: ctx.candidates(&capped, false),
            alternatives: Vec::new(),
            reason,
            plans_evaluated: 1,
        },
    }
}

fn plan_cost(ctx: &Ctx, deadline: Option<Instant>, budget: Duration) -> Plan {
    let rated: Vec<bool> = ctx.sites.iter().map(|s| s.rate.is_some()).collect();
    let (capped, short) = ctx.cap(&rated);
    let candidates = ctx.candidates(&capped, true);
    let usable: Vec<usize> = (0..ctx.sites.len()).filter(|&w| candidates[w].excluded.is_none()).collect();
    let finish =
        |alloc: &Alloc, solver: Solver, alternatives: Vec<Alternative>, plans: u64, why: &dyn Fn(&str) -> String| {
            let order: Vec<usize> = (0..ctx.sites.len()).collect();
            let shipments = ctx.shipments(alloc, &order);
            let (shipping_minor, cost_minor) = totals(&shipments, ctx.penalty);
            let codes: Vec<&str> = shipments.iter().map(|s| s.warehouse.as_str()).collect();
            let summary = format!(
                "{} shipping + {} split penalty ({} from {}){}",
                shipping_minor.unwrap_or(0),
                ctx.penalty.saturating_mul((shipments.len() as i64 - 1).max(0)),
                if shipments.len() == 1 { "1 shipment".to_owned() } else { format!("{} shipments", shipments.len()) },
                codes.join(", "),
                short_note(&short),
            );
            Plan {
                strategy: Strategy::Cost,
                shipments,
                short: short.clone(),
                shipping_minor,
                cost_minor,
                explanation: Explanation {
                    solver,
                    candidates: candidates.clone(),
                    alternatives,
                    reason: why(&summary),
                    plans_evaluated: plans,
                },
            }
        };
    if capped.iter().all(|q| *q == 0) {
        let alloc = ctx.fill(&capped, &[]);
        let reason = if ctx.lines.is_empty() {
            "nothing to ship: no lines".to_owned()
        } else {
            format!("nothing to ship: no warehouse with a shipping rate has stock of any line{}", short_note(&short))
        };
        return finish(&alloc, Solver::Exact, Vec::new(), 0, &|_| reason.clone());
    }
    if !exact::fits(ctx, &capped, &usable) {
        let greedy = greedy(ctx, &capped, &usable);
        let alternatives = vec![alternative(ctx, &greedy.0, greedy.1)];
        return finish(&greedy.0, Solver::GreedyFallback, alternatives, 1, &|summary| {
            if usable.len() > EXACT_WAREHOUSES_MAX {
                format!("{} usable warehouses are more than the exact solve takes, so greedy: {summary}", usable.len())
            } else {
                format!("quantities, weights or rates too large for the exact solve, so greedy: {summary}")
            }
        });
    }
    let outcome = exact::solve(ctx, &capped, &usable, deadline);
    let mut alternatives: Vec<(i64, usize, Alloc)> =
        outcome.found.iter().map(|f| (f.cost, f.shipments, f.alloc.clone())).collect();
    if !outcome.timed_out
        && let Some(best) = outcome.found.first()
    {
        let tie = outcome.found.get(1).is_some_and(|f| f.cost == best.cost);
        let alternatives = alternatives.iter().map(|(c, _, a)| alternative(ctx, a, *c)).collect();
        let (plans, searched, sets) = (outcome.plans, outcome.searched, outcome.sets);
        return finish(&best.alloc, Solver::Exact, alternatives, plans, &|summary| {
            let tie = if tie { " (ties go to fewer shipments, then channel order)" } else { "" };
            let plans = if plans == 1 { "1 plan".to_owned() } else { format!("{plans} plans") };
            if searched == sets {
                format!(
                    "cheapest of {plans} priced over all {sets} warehouse sets that can ship every line{tie}: {summary}"
                )
            } else {
                format!(
                    "cheapest of {plans} priced in {searched} of the {sets} warehouse sets that can ship every line, \
                     the others ruled out by lower bounds{tie}: {summary}"
                )
            }
        });
    }
    // Out of time: the best found so far, unless the greedy plan is cheaper.
    let greedy = greedy(ctx, &capped, &usable);
    let greedy_sites: Vec<usize> = used_sites(&greedy.0).collect();
    let greedy_wins = alternatives.first().is_none_or(|(c, s, _)| (greedy.1, greedy_sites.len()) < (*c, *s));
    if greedy_wins {
        // The interrupted search's plan for the greedy plan's set, if any, is the dearer one.
        alternatives.retain(|(_, _, a)| used_sites(a).ne(greedy_sites.iter().copied()));
        alternatives.insert(0, (greedy.1, greedy_sites.len(), greedy.0.clone()));
    }
    alternatives.truncate(ALTERNATIVES_MAX);
    let chosen = alternatives[0].2.clone();
    let listed = alternatives.iter().map(|(c, _, a)| alternative(ctx, a, *c)).collect();
    let micros = budget.as_micros();
    finish(&chosen, Solver::GreedyFallback, listed, outcome.plans, &|summary| {
        let source = if greedy_wins { "the greedy plan" } else { "the best plan found" };
        format!(
            "the exact solve ran out of its {micros} µs budget after {} plans, so {source}: {summary}",
            outcome.plans
        )
    })
}

fn used_sites(alloc: &Alloc) -> impl Iterator<Item = usize> + '_ {
    let sites = alloc.first().map_or(0, |row| row.len());
    (0..sites).filter(move |&w| alloc.iter().any(|row| row[w] > 0))
}

fn alternative(ctx: &Ctx, alloc: &Alloc, cost: i64) -> Alternative {
    let warehouses = ctx.codes(used_sites(alloc));
    Alternative { shipments: warehouses.len(), warehouses, cost_minor: cost }
}

/// The greedy plan: the cheapest single warehouse that has every line, or every line taking
/// from the cheapest rates first (per kilogram, then base, then channel order), whichever
/// costs less. Returns the allocation and its cost.
fn greedy(ctx: &Ctx, capped: &[i64], usable: &[usize]) -> (Alloc, i64) {
    let rate = |w: usize| ctx.sites[w].rate.unwrap_or(Rate { base_minor: 0, per_kg_minor: 0 });
    let mut order = usable.to_vec();
    order.sort_by_key(|&w| (rate(w).per_kg_minor.max(0), rate(w).base_minor.max(0), w));
    let split = ctx.fill(capped, &order);
    let mut best = (ctx.cost(&split).unwrap_or(i64::MAX), used_sites(&split).count(), split);
    for &w in usable.iter().filter(|&&w| ctx.ships_all(capped, w)) {
        let single = ctx.single(capped, w);
        let cost = ctx.cost(&single).unwrap_or(i64::MAX);
        if (cost, 1) < (best.0, best.1) {
            best = (cost, 1, single);
        }
    }
    (best.2, best.0)
}

/// The exact cost solve.
///
/// Over the usable warehouses `U` (rated, with stock of some line), every feasible allocation
/// ships from exactly one non-empty set `S ⊆ U`: the warehouses that ship at least one unit.
/// So the cheapest plan is the cheapest, over all sets `S`, of the cheapest allocation that
/// uses every warehouse of `S`; the solve goes set by set:
///
/// 1. A single warehouse that has every line is priced at once (it has one allocation).
/// 2. Every larger `S` whose warehouses have every line's capped quantity together gets a
///    lower bound `lb(S) = Σ base + penalty·(|S|−1) + max(⌈Σ_lines cheapest linear cost⌉,
///    Σ per_kg of the warehouses of S that have no weightless line)`, where a line's linear
///    cost sends its units to the set's cheapest per-kg warehouses first, within their stock,
///    at `per_kg × grams / 1000`. Valid: a started kilogram costs at least its grams' share,
///    that greedy fill is the optimum of the (separable, box-bounded) linear relaxation, and a
///    warehouse shipping only weighed units starts at least one kilogram.
/// 3. Sets go in increasing `(lb, |S|, channel order)`; the solve stops at the first whose
///    bound exceeds the best cost found (every later set's bound is at least as large).
/// 4. For one set, a depth-first search gives each weighed line (heaviest first) its units
///    over the set's warehouses (cheapest per kg first, most units first): every composition
///    within the stock is reached unless a lower bound shows it cannot beat the best plan
///    found (or cannot even match it, for a set that wins ties against the best plan's).
///    Bounds of a partial allocation with grams `G_w` and started kilograms
///    `k_w = ⌈G_w/1000⌉`, each at most the cost of every completion:
///    (a) the linear bound `⌈(Σ per_kg·G_w + linear cost of the units left)/1000⌉`;
///    (b) `Σ per_kg·k_w + min per_kg·⌈(grams left − room left in started kilograms)/1000⌉`
///    (a final `k_w` is at least the current one, and only that room ships for free);
///    (c) the same with what the stock forces: units of a line that the set's other
///    warehouses cannot hold must go to this one, so each warehouse starts at least the
///    kilograms `κ_w` of its grams so far plus its forced grams, and the grams forced nowhere
///    beyond the room of those kilograms pay at least their cheapest prices (the cheapest
///    such grams, a greedy over convex piecewise-linear costs);
///    and a branch is cut when fewer units are left than warehouses that still ship nothing
///    and have no weightless line to ship.
/// 5. Weightless lines cost nothing per kilogram: a complete weighed allocation is accepted
///    when each warehouse it leaves empty can get a weightless unit (a bipartite matching),
///    the rest of those lines filling the set in channel order.
///
/// Ties between sets go to fewer shipments, then to the set earlier in channel order (the one
/// with the first warehouse the other lacks); within a set, to the first allocation found.
/// The alternatives reported are the sets whose cheapest cost the solve established: every
/// single warehouse that has everything, and every set that beat the best plan when searched.
/// The clock is read before every set and every 1024 search nodes. Sums stay in `i64`: the
/// solve takes only instances within [`fits`]'s magnitudes (far above any real cart).
mod exact {
    use super::{ALTERNATIVES_MAX, Alloc, Ctx, EXACT_WAREHOUSES_MAX};
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    use std::time::Instant;

    /// Largest total grams, quantity, per-kg price and base (or split penalty) the solve
    /// takes, which keep every sum below 2^62.
    const GRAMS_MAX: i64 = 1 << 38;
    const QUANTITY_MAX: i64 = 1 << 40;
    const PER_KG_MAX: i64 = 1 << 22;
    const BASE_MAX: i64 = 1 << 36;

    /// Whether the exact solve takes this instance.
    pub(super) fn fits(ctx: &Ctx, capped: &[i64], usable: &[usize]) -> bool {
        let grams = ctx
            .lines
            .iter()
            .zip(capped)
            .fold(0_i128, |g, (l, q)| g.saturating_add(i128::from(l.grams) * i128::from(*q)));
        usable.len() <= EXACT_WAREHOUSES_MAX
            && grams <= i128::from(GRAMS_MAX)
            && capped.iter().all(|q| *q <= QUANTITY_MAX)
            && ctx.penalty <= BASE_MAX
            && usable
                .iter()
                .filter_map(|&w| ctx.sites[w].rate)
                .all(|r| r.per_kg_minor <= PER_KG_MAX && r.base_minor <= BASE_MAX)
    }

    /// One warehouse set's cheapest allocation.
    pub(super) struct Found {
        pub(super) cost: i64,
        pub(super) shipments: usize,
        mask: u32,
        pub(super) alloc: Alloc,
    }

    pub(super) struct Outcome {
        /// Best first, at most `ALTERNATIVES_MAX`; not empty unless timed out.
        pub(super) found: Vec<Found>,
        /// Complete allocations priced.
        pub(super) plans: u64,
        /// Sets that can ship every line (each warehouse at least one unit), and how many of
        /// them were priced or searched rather than ruled out by their bound.
        pub(super) sets: u64,
        pub(super) searched: u64,
        pub(super) timed_out: bool,
    }

    /// A capped line with something to ship, over the usable warehouses.
    struct XLine {
        line: usize,
        quantity: i64,
        grams: i64,
        /// Stock by usable warehouse, at most `quantity`.
        avail: Vec<i64>,
    }

    /// The order of sets of warehouses (bit `i`: the `i`-th usable warehouse in channel
    /// order; at most 16): fewer warehouses first, then, among sets of one size, the one with
    /// the first warehouse the other lacks.
    fn tie_key(mask: u32) -> u32 {
        (mask.count_ones() << 16) | (!(mask.reverse_bits() >> 16) & 0xFFFF)
    }

    fn started_kg(grams: i64) -> i64 {
        if grams <= 0 { 0 } else { (grams + 999) / 1000 }
    }

    /// Two lists of (price, grams) pieces, each cheapest first, as one.
    fn merge(a: &[(i64, i64)], b: &[(i64, i64)]) -> Vec<(i64, i64)> {
        let mut merged = Vec::with_capacity(a.len() + b.len());
        let (mut x, mut y) = (0, 0);
        while x < a.len() || y < b.len() {
            if y == b.len() || (x < a.len() && a[x].0 <= b[y].0) {
                merged.push(a[x]);
                x += 1;
            } else {
                merged.push(b[y]);
                y += 1;
            }
        }
        merged
    }

    struct Search<'c> {
        base: Vec<i64>,
        per_kg: Vec<i64>,
        xlines: Vec<XLine>,
        /// Indices into `xlines`: the weighed lines (heaviest first), the weightless ones.
        weighed: Vec<usize>,
        weightless: Vec<usize>,
        penalty: i64,
        deadline: Option<Instant>,
        nodes: u64,
        plans: u64,
        timed_out: bool,
        found: Vec<Found>,
        ctx: &'c Ctx<'c>,
        usable: &'c [usize],
    }

    /// The search of one warehouse set; positions `p` index its warehouses `ws` (cheapest per
    /// kg first), rows `j` the weighed lines.
    struct SetSearch {
        ws: Vec<usize>,
        m: usize,
        quantity: Vec<i64>,
        grams: Vec<i64>,
        /// `avail[j * m + p]`, and `rest[j * (m + 1) + p]` its sum over positions `p..`.
        avail: Vec<i64>,
        rest: Vec<i64>,
        /// Over rows `j..`: linear cost (per kg × grams), grams and units.
        lin_from: Vec<i64>,
        grams_from: Vec<i64>,
        units_from: Vec<i64>,
        /// Over rows `j..`: grams that must go to position `p` since the other positions
        /// cannot hold them (`forced_from[j * m + p]`), the grams not so forced, and those
        /// free grams' cheapest placement as (per kg, grams) pieces, cheapest first.
        forced_from: Vec<i64>,
        free_from: Vec<i64>,
        pieces_from: Vec<Vec<(i64, i64)>>,
        per_kg: Vec<i64>,
        min_per_kg: i64,
        fixed: i64,
        /// Positions with no stock of a weightless line: they need a weighed unit.
        need_weighed: u32,
        full: u32,
        // The partial allocation: units by row and position, grams and started kilograms by
        // position, Σ per_kg × grams, Σ per_kg × kilograms, room left in started kilograms.
        x: Vec<i64>,
        g: Vec<i64>,
        k: Vec<i64>,
        sum_pg: i64,
        sum_pk: i64,
        room: i64,
        used: u32,
        /// Cut a branch whose bound reaches this.
        limit: i64,
        best: Option<(i64, Alloc)>,
    }

    pub(super) fn solve(ctx: &Ctx, capped: &[i64], usable: &[usize], deadline: Option<Instant>) -> Outcome {
        let xlines: Vec<XLine> = capped
            .iter()
            .enumerate()
            .filter(|(_, q)| **q > 0)
            .map(|(l, &q)| XLine {
                line: l,
                quantity: q,
                grams: ctx.lines[l].grams,
                avail: usable.iter().map(|&w| ctx.avail[l][w].min(q)).collect(),
            })
            .collect();
        let mut weighed: Vec<usize> = (0..xlines.len()).filter(|&j| xlines[j].grams > 0).collect();
        weighed.sort_by_key(|&j| (Reverse(xlines[j].quantity * xlines[j].grams), j));
        let weightless = (0..xlines.len()).filter(|&j| xlines[j].grams == 0).collect();
        let rate = |w: usize| ctx.sites[w].rate.unwrap_or(super::Rate { base_minor: 0, per_kg_minor: 0 });
        let mut search = Search {
            base: usable.iter().map(|&w| rate(w).base_minor.max(0)).collect(),
            per_kg: usable.iter().map(|&w| rate(w).per_kg_minor.max(0)).collect(),
            xlines,
            weighed,
            weightless,
            penalty: ctx.penalty,
            deadline,
            nodes: 0,
            plans: 0,
            timed_out: false,
            found: Vec::new(),
            ctx,
            usable,
        };
        let (sets, searched) = search.run();
        Outcome { found: search.found, plans: search.plans, sets, searched, timed_out: search.timed_out }
    }

    impl Search<'_> {
        fn out_of_time(&mut self) -> bool {
            if !self.timed_out {
                self.timed_out = self.deadline.is_some_and(|d| Instant::now() >= d);
            }
            self.timed_out
        }

        /// Prices the single warehouses, then searches the larger sets in bound order;
        /// returns how many sets can ship every line, and how many were priced or searched.
        fn run(&mut self) -> (u64, u64) {
            if self.out_of_time() {
                return (0, 0);
            }
            let n = self.usable.len();
            let grams: i64 = self.xlines.iter().map(|l| l.quantity * l.grams).sum();
            let mut sets_done = 0;
            for i in 0..n {
                if self.xlines.iter().all(|l| l.avail[i] >= l.quantity) {
                    let mut alloc: Alloc = vec![vec![0; self.ctx.sites.len()]; self.ctx.lines.len()];
                    for line in &self.xlines {
                        alloc[line.line][self.usable[i]] = line.quantity;
                    }
                    self.plans += 1;
                    sets_done += 1;
                    self.record(1 << i, self.base[i] + self.per_kg[i] * started_kg(grams), alloc);
                }
            }
            // For the bounds, bit `r` of `ranked` is the `r`-th cheapest warehouse per kg, so
            // that a line's cheapest fill takes the set's low bits first.
            let mut by_price: Vec<usize> = (0..n).collect();
            by_price.sort_by_key(|&i| (self.per_kg[i], i));
            let price: Vec<i64> = by_price.iter().map(|&i| self.per_kg[i]).collect();
            let fills: Vec<(u32, Vec<i64>, i64, i64)> = self
                .xlines
                .iter()
                .map(|line| {
                    let avail: Vec<i64> = by_price.iter().map(|&i| line.avail[i]).collect();
                    let stock = (0..n).filter(|&r| avail[r] > 0).fold(0_u32, |m, r| m | 1 << r);
                    (stock, avail, line.quantity, line.grams)
                })
                .collect();
            let units = self.xlines.iter().fold(0_i64, |u, l| u.saturating_add(l.quantity));
            let weightless_stock: u32 = (0..n)
                .filter(|&i| self.weightless.iter().any(|&j| self.xlines[j].avail[i] > 0))
                .fold(0, |m, i| m | 1 << i);
            // (bound, tie key, set in channel bits).
            let mut sets: Vec<(i64, u32, u32)> = Vec::new();
            'sets: for ranked in 1..(1_u32 << n) {
                if ranked.is_multiple_of(64) && self.out_of_time() {
                    return (sets_done, sets_done);
                }
                if ranked.count_ones() == 1 || i64::from(ranked.count_ones()) > units {
                    continue;
                }
                let mut linear = 0;
                for (stock, avail, quantity, grams) in &fills {
                    let (mut bits, mut left, mut cost) = (ranked & stock, *quantity, 0);
                    while left > 0 && bits != 0 {
                        let r = bits.trailing_zeros() as usize;
                        bits &= bits - 1;
                        let take = left.min(avail[r]);
                        cost += take * price[r];
                        left -= take;
                    }
                    if left > 0 {
                        continue 'sets;
                    }
                    linear += cost * grams;
                }
                let (mut mask, mut fixed, mut started) =
                    (0_u32, self.penalty * (i64::from(ranked.count_ones()) - 1), 0);
                let mut bits = ranked;
                while bits != 0 {
                    let i = by_price[bits.trailing_zeros() as usize];
                    bits &= bits - 1;
                    mask |= 1 << i;
                    fixed += self.base[i];
                    if weightless_stock & (1 << i) == 0 {
                        started += self.per_kg[i];
                    }
                }
                sets.push((fixed + started_kg(linear).max(started), tie_key(mask), mask));
            }
            let covering = sets_done + sets.len() as u64;
            // Popped cheapest bound first (then fewer warehouses, then channel order): most
            // instances stop after a few sets, so a heap beats sorting them all.
            let mut sets = BinaryHeap::from(sets.into_iter().map(Reverse).collect::<Vec<_>>());
            while let Some(Reverse((bound, tie, mask))) = sets.pop() {
                if self.out_of_time() {
                    break;
                }
                let limit = match self.found.first() {
                    Some(best) if bound > best.cost => break,
                    Some(best) => best.cost + i64::from(tie < tie_key(best.mask)),
                    None => i64::MAX,
                };
                if bound >= limit {
                    continue;
                }
                sets_done += 1;
                if let Some((cost, alloc)) = self.search_set(mask, limit) {
                    self.record(mask, cost, alloc);
                }
            }
            (covering, sets_done)
        }

        fn record(&mut self, mask: u32, cost: i64, alloc: Alloc) {
            let found = Found { cost, shipments: mask.count_ones() as usize, mask, alloc };
            let at = self
                .found
                .iter()
                .position(|f| (f.cost, tie_key(f.mask)) > (cost, tie_key(mask)))
                .unwrap_or(self.found.len());
            self.found.insert(at, found);
            self.found.truncate(ALTERNATIVES_MAX);
        }

        fn search_set(&mut self, mask: u32, limit: i64) -> Option<(i64, Alloc)> {
            let n = self.usable.len();
            let mut ws: Vec<usize> = (0..n).filter(|&i| mask & (1 << i) != 0).collect();
            ws.sort_by_key(|&i| (self.per_kg[i], i));
            let m = ws.len();
            let rows = self.weighed.len();
            let mut s = SetSearch {
                m,
                quantity: self.weighed.iter().map(|&j| self.xlines[j].quantity).collect(),
                grams: self.weighed.iter().map(|&j| self.xlines[j].grams).collect(),
                avail: Vec::with_capacity(rows * m),
                rest: vec![0; rows * (m + 1)],
                lin_from: vec![0; rows + 1],
                grams_from: vec![0; rows + 1],
                units_from: vec![0; rows + 1],
                forced_from: vec![0; (rows + 1) * m],
                free_from: vec![0; rows + 1],
                pieces_from: vec![Vec::new(); rows + 1],
                per_kg: ws.iter().map(|&i| self.per_kg[i]).collect(),
                min_per_kg: self.per_kg[ws[0]],
                fixed: ws.iter().map(|&i| self.base[i]).sum::<i64>() + self.penalty * (m as i64 - 1),
                need_weighed: 0,
                full: (1_u32 << m) - 1,
                x: vec![0; rows * m],
                g: vec![0; m],
                k: vec![0; m],
                sum_pg: 0,
                sum_pk: 0,
                room: 0,
                used: 0,
                limit,
                best: None,
                ws,
            };
            for &j in &self.weighed {
                s.avail.extend(s.ws.iter().map(|&i| self.xlines[j].avail[i]));
            }
            for j in (0..rows).rev() {
                for p in (0..m).rev() {
                    s.rest[j * (m + 1) + p] = s.rest[j * (m + 1) + p + 1] + s.avail[j * m + p];
                }
                s.lin_from[j] = s.lin_from[j + 1] + s.linear(j, 0, s.quantity[j]);
                s.grams_from[j] = s.grams_from[j + 1] + s.quantity[j] * s.grams[j];
                s.units_from[j] = s.units_from[j + 1].saturating_add(s.quantity[j]);
                let mut forced = [0; EXACT_WAREHOUSES_MAX];
                let free = s.forced(j, 0, s.quantity[j], &mut forced);
                for (p, units) in forced.iter().enumerate().take(m) {
                    s.forced_from[j * m + p] = s.forced_from[(j + 1) * m + p] + units * s.grams[j];
                }
                s.free_from[j] = s.free_from[j + 1] + free * s.grams[j];
                let mut pieces = [(0, 0); EXACT_WAREHOUSES_MAX];
                let count = s.free_pieces(j, 0, free, &forced, &mut pieces);
                s.pieces_from[j] = merge(&pieces[..count], &s.pieces_from[j + 1]);
            }
            for (p, &i) in s.ws.iter().enumerate() {
                if !self.weightless.iter().any(|&j| self.xlines[j].avail[i] > 0) {
                    s.need_weighed |= 1 << p;
                }
            }
            if i64::from(s.need_weighed.count_ones()) > s.units_from[0] {
                return None;
            }
            self.row(&mut s, 0);
            s.best
        }

        fn tick(&mut self) -> bool {
            self.nodes += 1;
            if self.nodes.is_multiple_of(1024) {
                self.out_of_time();
            }
            self.timed_out
        }

        fn row(&mut self, s: &mut SetSearch, j: usize) {
            if j == s.quantity.len() {
                self.leaf(s);
            } else {
                self.place(s, j, 0, s.quantity[j]);
            }
        }

        /// Gives `left` units of row `j` to positions `p..`.
        fn place(&mut self, s: &mut SetSearch, j: usize, p: usize, left: i64) {
            if self.tick() {
                return;
            }
            if left == 0 {
                return self.row(s, j + 1);
            }
            let m = s.m;
            let hi = left.min(s.avail[j * m + p]);
            let lo = if p + 1 == m { left } else { (left - s.rest[j * (m + 1) + p + 1]).max(0) };
            let mut x = hi;
            while x >= lo {
                let undo = s.apply(j, p, x);
                if s.bound_ok(j, p, left - x) {
                    if p + 1 == m { self.row(s, j + 1) } else { self.place(s, j, p + 1, left - x) }
                }
                s.undo(j, p, x, undo);
                if self.timed_out {
                    return;
                }
                x -= 1;
            }
        }

        fn leaf(&mut self, s: &mut SetSearch) {
            self.plans += 1;
            let cost = s.fixed + s.sum_pk;
            if cost >= s.limit {
                return;
            }
            let Some(weightless) = self.weightless_units(s) else { return };
            s.limit = cost;
            s.best = Some((cost, self.alloc(s, &weightless)));
        }

        /// Units of the weightless lines by position (`[line][position]`), each warehouse the
        /// weighed lines leave empty getting one, if they can.
        fn weightless_units(&self, s: &SetSearch) -> Option<Vec<Vec<i64>>> {
            let empty = (0..s.m).filter(|&p| (s.full & !s.used) & (1 << p) != 0);
            // Kuhn's augmenting paths: each empty position to a weightless line, at most
            // quantity positions per line.
            let mut matched: Vec<Vec<usize>> = vec![Vec::new(); self.weightless.len()];
            for p in empty {
                let mut seen = vec![false; self.weightless.len()];
                if !self.augment(s, p, &mut matched, &mut seen) {
                    return None;
                }
            }
            let mut by_channel: Vec<usize> = (0..s.m).collect();
            by_channel.sort_by_key(|&p| s.ws[p]);
            let mut units = Vec::with_capacity(self.weightless.len());
            for (t, &j) in self.weightless.iter().enumerate() {
                let line = &self.xlines[j];
                let mut row = vec![0; s.m];
                for &p in &matched[t] {
                    row[p] = 1;
                }
                // The rest in channel order.
                let mut left = line.quantity - matched[t].len() as i64;
                for &p in &by_channel {
                    let take = left.min(line.avail[s.ws[p]] - row[p]);
                    row[p] += take;
                    left -= take;
                }
                units.push(row);
            }
            Some(units)
        }

        fn augment(&self, s: &SetSearch, p: usize, matched: &mut [Vec<usize>], seen: &mut [bool]) -> bool {
            for (t, &j) in self.weightless.iter().enumerate() {
                if seen[t] || self.xlines[j].avail[s.ws[p]] == 0 {
                    continue;
                }
                seen[t] = true;
                if (matched[t].len() as i64) < self.xlines[j].quantity {
                    matched[t].push(p);
                    return true;
                }
                for slot in 0..matched[t].len() {
                    let other = matched[t][slot];
                    if self.augment(s, other, matched, seen) {
                        matched[t][slot] = p;
                        return true;
                    }
                }
            }
            false
        }

        fn alloc(&self, s: &SetSearch, weightless: &[Vec<i64>]) -> Alloc {
            let mut alloc: Alloc = vec![vec![0; self.ctx.sites.len()]; self.ctx.lines.len()];
            let weighed = self.weighed.iter().enumerate().map(|(r, &j)| (j, &s.x[r * s.m..(r + 1) * s.m]));
            let weightless = self.weightless.iter().zip(weightless).map(|(&j, u)| (j, u.as_slice()));
            for (j, units) in weighed.chain(weightless) {
                for (p, &u) in units.iter().enumerate() {
                    alloc[self.xlines[j].line][self.usable[s.ws[p]]] = u;
                }
            }
            alloc
        }
    }

    struct Undo {
        g: i64,
        k: i64,
        used: u32,
    }

    impl SetSearch {
        /// Linear cost (per kg × grams) of `left` units of row `j` over positions `p..`.
        fn linear(&self, j: usize, p: usize, mut left: i64) -> i64 {
            let mut cost = 0;
            for q in p..self.m {
                if left == 0 {
                    break;
                }
                let take = left.min(self.avail[j * self.m + q]);
                cost += take * self.per_kg[q];
                left -= take;
            }
            cost * self.grams[j]
        }

        fn apply(&mut self, j: usize, p: usize, x: i64) -> Undo {
            let undo = Undo { g: self.g[p], k: self.k[p], used: self.used };
            self.x[j * self.m + p] = x;
            if x > 0 {
                let added = x * self.grams[j];
                self.g[p] += added;
                self.k[p] = started_kg(self.g[p]);
                self.sum_pg += added * self.per_kg[p];
                self.sum_pk += (self.k[p] - undo.k) * self.per_kg[p];
                self.room += (self.k[p] - undo.k) * 1000 - added;
                self.used |= 1 << p;
            }
            undo
        }

        fn undo(&mut self, j: usize, p: usize, x: i64, undo: Undo) {
            self.x[j * self.m + p] = 0;
            if x > 0 {
                let added = x * self.grams[j];
                self.sum_pg -= added * self.per_kg[p];
                self.sum_pk -= (self.k[p] - undo.k) * self.per_kg[p];
                self.room -= (self.k[p] - undo.k) * 1000 - added;
                self.g[p] = undo.g;
                self.k[p] = undo.k;
                self.used = undo.used;
            }
        }

        /// Whether the allocation so far, with `left` units of row `j` still to go to
        /// positions after `p`, may still beat the limit.
        fn bound_ok(&self, j: usize, p: usize, left: i64) -> bool {
            let needing = i64::from((self.need_weighed & !self.used).count_ones());
            if needing > left.saturating_add(self.units_from[j + 1]) {
                return false;
            }
            // The cost, fixed + per-kg part, must stay below the limit.
            let budget = self.limit - self.fixed;
            // (b)
            let grams_left = left * self.grams[j] + self.grams_from[j + 1];
            if self.sum_pk + self.min_per_kg * started_kg(grams_left - self.room) >= budget {
                return false;
            }
            // (a): ⌈linear / 1000⌉ < budget.
            let linear = self.sum_pg + self.linear(j, p + 1, left) + self.lin_from[j + 1];
            if linear > (budget - 1).saturating_mul(1000) {
                return false;
            }
            self.forced_bound(j, p, left) < budget
        }

        /// Units of row `j` that positions `p..` must each take of `left` (what the others
        /// cannot hold), into `forced`; returns the units left free.
        fn forced(&self, j: usize, p: usize, left: i64, forced: &mut [i64]) -> i64 {
            let m = self.m;
            let all = self.rest[j * (m + 1) + p];
            let mut free = left;
            for (units, avail) in forced[p..m].iter_mut().zip(&self.avail[j * m + p..(j + 1) * m]) {
                *units = (left - (all - avail)).max(0);
                free -= *units;
            }
            free
        }

        /// The cheapest placement of `free` units of row `j` over positions `p..` beyond their
        /// `forced` units, as (per kg, grams) pieces in price order; returns their count.
        fn free_pieces(&self, j: usize, p: usize, free: i64, forced: &[i64], pieces: &mut [(i64, i64)]) -> usize {
            let m = self.m;
            let (mut left, mut count) = (free, 0);
            let room = self.avail[j * m + p..(j + 1) * m].iter().zip(&forced[p..m]).map(|(a, f)| a - f);
            for (price, room) in self.per_kg[p..].iter().zip(room) {
                if left == 0 {
                    break;
                }
                let take = left.min(room);
                if take > 0 {
                    pieces[count] = (*price, take * self.grams[j]);
                    count += 1;
                    left -= take;
                }
            }
            count
        }

        /// (c): every position pays the started kilograms of its grams so far plus the grams
        /// forced on it; the grams forced nowhere, beyond the room of those kilograms, pay at
        /// least the cheapest prices they can go at.
        fn forced_bound(&self, j: usize, p: usize, left: i64) -> i64 {
            let m = self.m;
            let mut forced = [0; EXACT_WAREHOUSES_MAX];
            let free = if p + 1 < m { self.forced(j, p + 1, left, &mut forced) } else { 0 };
            let (mut paid, mut room) = (0, 0);
            let later = &self.forced_from[(j + 1) * m..(j + 2) * m];
            for (((g, later), forced), price) in self.g.iter().zip(later).zip(&forced).zip(&self.per_kg) {
                let least = g + later + forced * self.grams[j];
                let kilograms = started_kg(least);
                paid += kilograms * price;
                room += kilograms * 1000 - least;
            }
            let mut over = free * self.grams[j] + self.free_from[j + 1] - room;
            if over <= 0 {
                return paid;
            }
            let mut pieces = [(0, 0); EXACT_WAREHOUSES_MAX];
            let count = if p + 1 < m { self.free_pieces(j, p + 1, free, &forced, &mut pieces) } else { 0 };
            let (mine, later) = (&pieces[..count], &self.pieces_from[j + 1]);
            let (mut a, mut b, mut extra) = (0, 0, 0);
            while over > 0 && (a < mine.len() || b < later.len()) {
                let (price, grams) = if b == later.len() || (a < mine.len() && mine[a].0 <= later[b].0) {
                    a += 1;
                    mine[a - 1]
                } else {
                    b += 1;
                    later[b - 1]
                };
                let take = over.min(grams);
                extra += take * price;
                over -= take;
            }
            paid + started_kg(extra)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::{ProptestConfig, prop, prop_assert, prop_assert_eq, proptest};
    use proptest::strategy::Strategy as _;

    fn wh(code: &str, coords: Option<(f64, f64)>, rate: Option<(i64, i64)>) -> SourcingWarehouse {
        SourcingWarehouse {
            code: code.to_owned(),
            latitude: coords.map(|c| c.0),
            longitude: coords.map(|c| c.1),
            rate: rate.map(|(base_minor, per_kg_minor)| Rate { base_minor, per_kg_minor }),
        }
    }

    fn line(sku: &str, quantity: i64, unit_grams: i64) -> SourcingLine {
        SourcingLine { sku: sku.to_owned(), quantity, unit_grams }
    }

    fn input(
        strategy: Strategy,
        lines: Vec<SourcingLine>,
        warehouses: Vec<SourcingWarehouse>,
        stock: &[(&str, &str, i64)],
    ) -> SourcingInput {
        SourcingInput {
            strategy,
            lines,
            warehouses,
            available: stock.iter().map(|(s, w, q)| ((s.to_string(), w.to_string()), *q)).collect(),
            split_penalty_minor: 0,
            destination: Destination { latitude: None, longitude: None },
            time_budget: Duration::from_secs(10),
        }
    }

    /// (warehouse, sku, quantity) of every allocation, in plan order.
    fn allocations(plan: &Plan) -> Vec<(String, String, i64)> {
        plan.shipments
            .iter()
            .flat_map(|s| s.lines.iter().map(|a| (s.warehouse.clone(), a.sku.clone(), a.quantity)))
            .collect()
    }

    fn alloc(list: &[(&str, &str, i64)]) -> Vec<(String, String, i64)> {
        list.iter().map(|(w, s, q)| (w.to_string(), s.to_string(), *q)).collect()
    }

    const BERLIN: (f64, f64) = (52.52, 13.405);
    const MUNICH: (f64, f64) = (48.137, 11.575);
    const HAMBURG: (f64, f64) = (53.551, 9.993);
    const POTSDAM: (f64, f64) = (52.39, 13.064);

    #[test]
    fn priority_prefers_the_first_warehouse_that_ships_everything() {
        let warehouses = vec![wh("BER-1", None, None), wh("MUC-1", None, None), wh("HAM-1", None, None)];
        let stock = [("A", "BER-1", 5), ("A", "MUC-1", 2), ("B", "MUC-1", 1), ("A", "HAM-1", 9), ("B", "HAM-1", 9)];
        let plan = plan(&input(Strategy::Priority, vec![line("A", 2, 100), line("B", 1, 100)], warehouses, &stock));
        assert_eq!(allocations(&plan), alloc(&[("MUC-1", "A", 2), ("MUC-1", "B", 1)]));
        assert_eq!(plan.explanation.solver, Solver::Priority);
        assert!(plan.explanation.reason.starts_with("MUC-1 ships everything"), "{}", plan.explanation.reason);
        assert_eq!(plan.shipping_minor, None);
        assert_eq!(plan.cost_minor, None);
        assert!(plan.explanation.alternatives.is_empty());
    }

    #[test]
    fn priority_splits_in_channel_order() {
        let warehouses = vec![wh("BER-1", None, Some((500, 100))), wh("MUC-1", None, Some((400, 50)))];
        let stock = [("A", "BER-1", 3), ("A", "MUC-1", 2), ("B", "MUC-1", 1)];
        let mut input = input(Strategy::Priority, vec![line("A", 5, 400), line("B", 1, 0)], warehouses, &stock);
        input.split_penalty_minor = 250;
        let plan = plan(&input);
        assert_eq!(allocations(&plan), alloc(&[("BER-1", "A", 3), ("MUC-1", "A", 2), ("MUC-1", "B", 1)]));
        assert_eq!(plan.shipments[0].grams, 1200);
        assert_eq!(plan.shipments[0].shipping_minor, Some(500 + 2 * 100));
        assert_eq!(plan.shipments[1].shipping_minor, Some(400 + 50));
        assert_eq!(plan.shipping_minor, Some(700 + 450));
        assert_eq!(plan.cost_minor, Some(700 + 450 + 250));
        assert_eq!(
            plan.explanation.reason,
            "no single warehouse has every line: split over BER-1, MUC-1 in channel order"
        );
    }

    #[test]
    fn short_lines_are_capped_and_shipped_in_full() {
        let warehouses = vec![wh("BER-1", None, None), wh("MUC-1", None, None)];
        let stock = [("A", "BER-1", 2), ("A", "MUC-1", 1), ("B", "MUC-1", -4)];
        let plan = plan(&input(Strategy::Priority, vec![line("A", 5, 100), line("B", 2, 100)], warehouses, &stock));
        assert_eq!(
            plan.short,
            vec![
                ShortLine { sku: "A".into(), requested: 5, available: 3 },
                ShortLine { sku: "B".into(), requested: 2, available: 0 },
            ]
        );
        assert_eq!(allocations(&plan), alloc(&[("BER-1", "A", 2), ("MUC-1", "A", 1)]));
        assert!(plan.explanation.reason.ends_with("; 2 lines are short"), "{}", plan.explanation.reason);
    }

    #[test]
    fn nothing_available_ships_nothing() {
        let warehouses = vec![wh("BER-1", None, Some((100, 10)))];
        for strategy in [Strategy::Priority, Strategy::Distance, Strategy::Cost] {
            let plan = plan(&input(strategy, vec![line("A", 2, 100)], warehouses.clone(), &[]));
            assert!(plan.shipments.is_empty());
            assert_eq!(plan.short, vec![ShortLine { sku: "A".into(), requested: 2, available: 0 }]);
            assert_eq!(plan.cost_minor, Some(0));
            assert_eq!(plan.explanation.candidates[0].excluded.as_deref(), Some("no stock of any line"));
            assert!(plan.explanation.reason.starts_with("nothing to ship"), "{}", plan.explanation.reason);
        }
    }

    #[test]
    fn distance_orders_by_haversine_and_prefers_the_nearest_that_ships_everything() {
        let warehouses = vec![
            wh("MUC-1", Some(MUNICH), None),
            wh("NOWHERE", None, None),
            wh("HAM-1", Some(HAMBURG), None),
            wh("POT-1", Some(POTSDAM), None),
        ];
        let stock = [("A", "MUC-1", 9), ("A", "HAM-1", 9), ("B", "HAM-1", 9), ("A", "POT-1", 1), ("A", "NOWHERE", 9)];
        let mut input = input(Strategy::Distance, vec![line("A", 2, 100), line("B", 1, 100)], warehouses, &stock);
        input.destination = Destination { latitude: Some(BERLIN.0), longitude: Some(BERLIN.1) };
        let plan = plan(&input);
        assert_eq!(plan.explanation.solver, Solver::Distance);
        assert_eq!(allocations(&plan), alloc(&[("HAM-1", "A", 2), ("HAM-1", "B", 1)]));
        let km = plan.shipments[0].distance_km.unwrap();
        assert!((km - 255.0).abs() < 5.0, "{km}");
        assert!(plan.explanation.reason.starts_with("HAM-1 ("), "{}", plan.explanation.reason);
        assert_eq!(plan.explanation.candidates[1].distance_km, None);

        // Nobody has 20 of A: split nearest first, the warehouse without coordinates last.
        let mut split = input.clone();
        split.lines = vec![line("A", 20, 100)];
        let plan = super::plan(&split);
        assert_eq!(
            allocations(&plan),
            alloc(&[("POT-1", "A", 1), ("HAM-1", "A", 9), ("MUC-1", "A", 9), ("NOWHERE", "A", 1)])
        );
        assert!(plan.explanation.reason.contains("nearest first"), "{}", plan.explanation.reason);
    }

    #[test]
    fn distance_without_destination_coordinates_uses_channel_order() {
        let warehouses = vec![wh("MUC-1", Some(MUNICH), None), wh("POT-1", Some(POTSDAM), None)];
        let stock = [("A", "MUC-1", 1), ("A", "POT-1", 2)];
        let plan = plan(&input(Strategy::Distance, vec![line("A", 3, 100)], warehouses, &stock));
        assert_eq!(plan.explanation.solver, Solver::Distance);
        assert_eq!(allocations(&plan), alloc(&[("MUC-1", "A", 1), ("POT-1", "A", 2)]));
        assert!(plan.explanation.reason.starts_with("destination has no coordinates"), "{}", plan.explanation.reason);
        assert!(plan.shipments.iter().all(|s| s.distance_km.is_none()));
    }

    #[test]
    fn cost_excludes_unrated_warehouses_and_their_stock() {
        let warehouses =
            vec![wh("BER-1", None, None), wh("MUC-1", None, Some((500, 100))), wh("HAM-1", None, Some((1, 1)))];
        let stock = [("A", "BER-1", 9), ("A", "MUC-1", 2)];
        let plan = plan(&input(Strategy::Cost, vec![line("A", 3, 500)], warehouses, &stock));
        assert_eq!(plan.short, vec![ShortLine { sku: "A".into(), requested: 3, available: 2 }]);
        assert_eq!(allocations(&plan), alloc(&[("MUC-1", "A", 2)]));
        let excluded: Vec<Option<&str>> = plan.explanation.candidates.iter().map(|c| c.excluded.as_deref()).collect();
        assert_eq!(excluded, vec![Some("no shipping rate"), None, Some("no stock of any line")]);
        assert_eq!(plan.cost_minor, Some(600));
        assert_eq!(plan.explanation.solver, Solver::Exact);
    }

    #[test]
    fn cost_splits_when_cheaper_and_explains() {
        // BER-1 alone: 100 + 10 kg × 100 = 1100. BER-1 for A (0.9 kg → 1 kg) and MUC-1 for B
        // (9 kg at 10): 200 + 190 = 390, plus a 100 penalty = 490.
        let warehouses = vec![wh("BER-1", None, Some((100, 100))), wh("MUC-1", None, Some((100, 10)))];
        let stock = [("A", "BER-1", 3), ("B", "BER-1", 9), ("B", "MUC-1", 9)];
        let mut input = input(Strategy::Cost, vec![line("A", 3, 300), line("B", 9, 1000)], warehouses, &stock);
        input.split_penalty_minor = 100;
        let plan = plan(&input);
        assert_eq!(allocations(&plan), alloc(&[("BER-1", "A", 3), ("MUC-1", "B", 9)]));
        assert_eq!((plan.shipping_minor, plan.cost_minor), (Some(390), Some(490)));
        let e = &plan.explanation;
        assert_eq!(e.solver, Solver::Exact);
        assert_eq!(
            e.alternatives,
            vec![
                Alternative { warehouses: vec!["BER-1".into(), "MUC-1".into()], cost_minor: 490, shipments: 2 },
                Alternative { warehouses: vec!["BER-1".into()], cost_minor: 1100, shipments: 1 },
            ]
        );
        assert!(e.plans_evaluated >= 2);
        assert!(e.reason.starts_with("cheapest of "), "{}", e.reason);
        assert!(
            e.reason.ends_with(": 390 shipping + 100 split penalty (2 shipments from BER-1, MUC-1)"),
            "{}",
            e.reason
        );
        assert_eq!(e.candidates.len(), 2);
        assert_eq!(e.candidates[1].rate, Some(Rate { base_minor: 100, per_kg_minor: 10 }));
    }

    #[test]
    fn cost_counts_started_kilograms() {
        // 2 × 500 g + 2 × 300 g = 1.6 kg: 2 started kg alone; split so that each shipment
        // stays within 1 kg (A to one, B to the other), 1 + 1 kg: as dear, and a tie.
        let warehouses = vec![wh("BER-1", None, Some((0, 1000))), wh("MUC-1", None, Some((0, 1000)))];
        let stock = [("A", "BER-1", 2), ("A", "MUC-1", 2), ("B", "BER-1", 2), ("B", "MUC-1", 2)];
        let input = input(Strategy::Cost, vec![line("A", 2, 500), line("B", 2, 300)], warehouses, &stock);
        let plan = plan(&input);
        assert_eq!(plan.cost_minor, Some(2000));
        assert_eq!(plan.shipments.len(), 1);
        assert_eq!(plan.shipments[0].warehouse, "BER-1");
        assert!(plan.explanation.reason.contains("ties go to fewer shipments"), "{}", plan.explanation.reason);
    }

    #[test]
    fn cost_ties_go_to_channel_order() {
        let warehouses = vec![wh("BER-1", None, Some((300, 0))), wh("MUC-1", None, Some((300, 0)))];
        let stock = [("A", "BER-1", 2), ("A", "MUC-1", 2)];
        let plan = plan(&input(Strategy::Cost, vec![line("A", 2, 100)], warehouses, &stock));
        assert_eq!(allocations(&plan), alloc(&[("BER-1", "A", 2)]));
        assert_eq!(plan.explanation.alternatives[1].warehouses, vec!["MUC-1".to_owned()]);
    }

    #[test]
    fn cost_weightless_lines_may_open_a_warehouse_only_if_it_ships_something() {
        // The weightless line B is only at MUC-1, so MUC-1 must ship; A is cheaper at BER-1
        // per kg, but BER-1's base makes MUC-1 alone the cheapest.
        let warehouses = vec![wh("BER-1", None, Some((1000, 10))), wh("MUC-1", None, Some((100, 100)))];
        let stock = [("A", "BER-1", 5), ("A", "MUC-1", 5), ("B", "MUC-1", 1)];
        let plan = plan(&input(Strategy::Cost, vec![line("A", 2, 1000), line("B", 1, 0)], warehouses, &stock));
        assert_eq!(allocations(&plan), alloc(&[("MUC-1", "A", 2), ("MUC-1", "B", 1)]));
        assert_eq!(plan.cost_minor, Some(300));
    }

    #[test]
    fn cost_out_of_time_falls_back_to_greedy() {
        let warehouses = vec![wh("BER-1", None, Some((500, 100))), wh("MUC-1", None, Some((400, 50)))];
        let stock = [("A", "BER-1", 3), ("A", "MUC-1", 1)];
        let mut input = input(Strategy::Cost, vec![line("A", 4, 100)], warehouses, &stock);
        input.time_budget = Duration::ZERO;
        let plan = plan(&input);
        assert_eq!(plan.explanation.solver, Solver::GreedyFallback);
        // Cheapest per kg first: MUC-1's unit, then BER-1.
        assert_eq!(allocations(&plan), alloc(&[("BER-1", "A", 3), ("MUC-1", "A", 1)]));
        assert_eq!(plan.cost_minor, Some(600 + 450));
        assert!(plan.explanation.reason.contains("ran out of its 0 µs budget"), "{}", plan.explanation.reason);
        assert_eq!(plan.explanation.alternatives.len(), 1);
    }

    #[test]
    fn bad_values_do_not_panic() {
        let warehouses = vec![
            wh("BER-1", Some((f64::NAN, 400.0)), Some((-5, -7))),
            wh("BER-1", None, None),
            wh("MUC-1", Some(MUNICH), Some((i64::MAX, i64::MAX))),
        ];
        let lines = vec![line("A", 0, 10), line("B", -3, 10), line("C", i64::MAX, i64::MAX), line("C", 2, 5)];
        let stock = [("C", "BER-1", i64::MAX), ("C", "MUC-1", i64::MAX)];
        for strategy in [Strategy::Priority, Strategy::Distance, Strategy::Cost] {
            let mut input = input(strategy, lines.clone(), warehouses.clone(), &stock);
            input.destination = Destination { latitude: Some(91.0), longitude: Some(0.0) };
            input.split_penalty_minor = -100;
            input.time_budget = Duration::MAX;
            let plan = plan(&input);
            assert_eq!(plan.explanation.candidates.len(), 2);
            assert_eq!(plan.shipments.len(), 1, "{strategy:?}");
            assert_eq!(plan.shipments[0].lines, vec![Allocation { sku: "C".into(), quantity: i64::MAX }]);
        }
    }

    #[test]
    fn output_serializes_in_snake_case() {
        let warehouses = vec![wh("BER-1", None, Some((100, 10)))];
        let mut input = input(Strategy::Cost, vec![line("A", 1, 100)], warehouses, &[("A", "BER-1", 1)]);
        input.time_budget = Duration::ZERO;
        let json = serde_json::to_value(plan(&input)).unwrap();
        assert_eq!(json["strategy"], "cost");
        assert_eq!(json["explanation"]["solver"], "greedy_fallback");
        assert_eq!(json["cost_minor"], 110);
        assert_eq!(json["explanation"]["candidates"][0]["rate"]["per_kg_minor"], 10);
    }

    // ---- properties ----

    const GRAMS: [i64; 4] = [0, 300, 700, 1200];

    /// Lines (quantity, grams index), warehouses' rates (base, per kg), availability by line
    /// then warehouse (None: missing), penalty.
    type Generated = (Vec<(i64, usize)>, Vec<Option<(i64, i64)>>, Vec<Vec<Option<i64>>>, i64);

    fn instances() -> impl proptest::strategy::Strategy<Value = Generated> {
        (1..=3_usize, 1..=4_usize).prop_flat_map(|(lines, warehouses)| {
            (
                prop::collection::vec((1..=3_i64, 0..4_usize), lines),
                prop::collection::vec(prop::option::weighted(0.75, (0..1000_i64, 0..300_i64)), warehouses),
                prop::collection::vec(prop::collection::vec(prop::option::weighted(0.8, 0..=4_i64), warehouses), lines),
                0..=500_i64,
            )
        })
    }

    fn build(strategy: Strategy, generated: &Generated) -> SourcingInput {
        let (lines, rates, stock, penalty) = generated;
        let codes: Vec<String> = (0..rates.len()).map(|w| format!("W{w}")).collect();
        let mut available = HashMap::new();
        for (l, row) in stock.iter().enumerate() {
            for (w, units) in row.iter().enumerate() {
                if let Some(units) = units {
                    available.insert((format!("S{l}"), codes[w].clone()), *units);
                }
            }
        }
        SourcingInput {
            strategy,
            lines: lines.iter().enumerate().map(|(l, (q, g))| line(&format!("S{l}"), *q, GRAMS[*g])).collect(),
            warehouses: rates
                .iter()
                .enumerate()
                .map(|(w, r)| wh(&codes[w], Some((50.0 + w as f64, 10.0)), *r))
                .collect(),
            available,
            split_penalty_minor: *penalty,
            destination: Destination { latitude: Some(49.5), longitude: Some(10.0) },
            time_budget: Duration::from_secs(10),
        }
    }

    fn stock_of(input: &SourcingInput, sku: &str, warehouse: &str) -> i64 {
        input.available.get(&(sku.to_owned(), warehouse.to_owned())).copied().unwrap_or(0).max(0)
    }

    /// Capped quantities, by the warehouses a strategy may use.
    fn capped(input: &SourcingInput) -> Vec<i64> {
        input
            .lines
            .iter()
            .map(|l| {
                let usable = input.warehouses.iter().filter(|w| input.strategy != Strategy::Cost || w.rate.is_some());
                l.quantity.min(usable.map(|w| stock_of(input, &l.sku, &w.code)).sum())
            })
            .collect()
    }

    /// The cheapest cost over every assignment of every capped unit to a rated warehouse.
    fn brute_force(input: &SourcingInput) -> i64 {
        let capped = capped(input);
        let units: Vec<usize> =
            capped.iter().enumerate().flat_map(|(l, q)| std::iter::repeat_n(l, *q as usize)).collect();
        let rated: Vec<usize> = (0..input.warehouses.len()).filter(|&w| input.warehouses[w].rate.is_some()).collect();
        let mut counts = vec![vec![0_i64; input.warehouses.len()]; input.lines.len()];
        let mut best = i64::MAX;
        fn go(input: &SourcingInput, units: &[usize], rated: &[usize], counts: &mut Vec<Vec<i64>>, best: &mut i64) {
            let Some((&l, rest)) = units.split_first() else {
                let mut cost = 0;
                let mut used = 0;
                for (w, warehouse) in input.warehouses.iter().enumerate() {
                    let grams: i64 = (0..input.lines.len()).map(|l| counts[l][w] * input.lines[l].unit_grams).sum();
                    if (0..input.lines.len()).any(|l| counts[l][w] > 0) {
                        cost += shipping_minor(&warehouse.rate.unwrap(), grams);
                        used += 1;
                    }
                }
                *best = (*best).min(cost + input.split_penalty_minor * (used - 1).max(0));
                return;
            };
            for &w in rated {
                if counts[l][w] < stock_of(input, &input.lines[l].sku, &input.warehouses[w].code) {
                    counts[l][w] += 1;
                    go(input, rest, rated, counts, best);
                    counts[l][w] -= 1;
                }
            }
        }
        go(input, &units, &rated, &mut counts, &mut best);
        best
    }

    /// Every allocation within stock (and from a rated warehouse for cost), every line's
    /// capped quantity allocated, shipments consistent.
    fn check_allocations(input: &SourcingInput, plan: &Plan) -> Result<(), proptest::test_runner::TestCaseError> {
        let capped = capped(input);
        let mut shipped = vec![0; input.lines.len()];
        for shipment in &plan.shipments {
            let warehouse = input.warehouses.iter().find(|w| w.code == shipment.warehouse).unwrap();
            prop_assert!(input.strategy != Strategy::Cost || warehouse.rate.is_some());
            prop_assert!(!shipment.lines.is_empty());
            let mut grams = 0;
            for a in &shipment.lines {
                let l = input.lines.iter().position(|l| l.sku == a.sku).unwrap();
                prop_assert!(a.quantity >= 1 && a.quantity <= stock_of(input, &a.sku, &shipment.warehouse));
                shipped[l] += a.quantity;
                grams += a.quantity * input.lines[l].unit_grams;
            }
            prop_assert_eq!(shipment.grams, grams);
            prop_assert_eq!(shipment.shipping_minor, warehouse.rate.map(|r| shipping_minor(&r, grams)));
        }
        prop_assert_eq!(shipped, capped.clone());
        let short: Vec<(String, i64)> = plan.short.iter().map(|s| (s.sku.clone(), s.requested - s.available)).collect();
        let expected: Vec<(String, i64)> = input
            .lines
            .iter()
            .zip(&capped)
            .filter(|(l, q)| l.quantity > **q)
            .map(|(l, q)| (l.sku.clone(), l.quantity - q))
            .collect();
        prop_assert_eq!(short, expected);
        let warehouses: HashSet<&str> = plan.shipments.iter().map(|s| s.warehouse.as_str()).collect();
        prop_assert_eq!(warehouses.len(), plan.shipments.len());
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1024, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn cost_is_never_worse_than_brute_force(generated in instances()) {
            let input = build(Strategy::Cost, &generated);
            let plan = plan(&input);
            prop_assert_eq!(plan.explanation.solver, Solver::Exact);
            prop_assert_eq!(plan.cost_minor, Some(brute_force(&input)));
            check_allocations(&input, &plan)?;
            let alternatives = &plan.explanation.alternatives;
            let shipped_cost = plan.cost_minor.filter(|_| !plan.shipments.is_empty());
            prop_assert_eq!(alternatives.first().map(|a| a.cost_minor), shipped_cost);
            prop_assert!(alternatives.windows(2).all(|w| w[0].cost_minor <= w[1].cost_minor));
        }

        #[test]
        fn every_strategy_allocates_the_capped_quantities_within_stock(
            generated in instances(),
            strategy in 0..3_usize,
        ) {
            let strategy = [Strategy::Priority, Strategy::Distance, Strategy::Cost][strategy];
            let input = build(strategy, &generated);
            let plan = plan(&input);
            check_allocations(&input, &plan)?;
            // Deterministic.
            prop_assert_eq!(&plan, &super::plan(&input));
        }

        #[test]
        fn greedy_fallback_allocates_the_capped_quantities_within_stock(generated in instances()) {
            let mut input = build(Strategy::Cost, &generated);
            input.time_budget = Duration::ZERO;
            let plan = plan(&input);
            check_allocations(&input, &plan)?;
            prop_assert!(plan.cost_minor.unwrap() >= brute_force(&input));
        }
    }
}
