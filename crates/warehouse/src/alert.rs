//! Alerts: thresholds for low stock, out of stock, overstock, expiring lots and capacity, and
//! alerts with a lifecycle (raised → acknowledged → resolved).
//!
//! Rules apply per item and warehouse, per item, or as the default (the most specific existing
//! rule applies as a whole). Evaluation is a supervised reconciler that never runs on the hot
//! path: [`check_stock_changes`] reads `stock.changed` events from the outbox after its stored
//! offset and re-evaluates the touched levels (bounded batch per run), [`check_rule_changes`]
//! goes through the levels in the scope of a changed rule (bounded per run, resumable), and
//! [`check_periodic`] re-evaluates expiring lots and capacities. Each raises what holds and is
//! not open yet, resolves what is open and no longer holds, and emits `alert.*` events through
//! the outbox.

use crate::events;
use crate::ledger::Journal;
use crate::{Result, WarehouseError};
use kernel::{NewEvent, SkuCode, Timestamp, WarehouseCode};
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::{AnyPool, FromRow};
use std::collections::{HashMap, HashSet};
use store::outbox::StoredEvent;
use store::subscriber::Subscriber;
use store::{Db, Tx};

/// Most expiring lots and capacities one periodic run looks at.
const PERIODIC_SUBJECTS_MAX: i64 = 1_000;

const STOCK_KINDS: [&str; 3] = ["low_stock", "out_of_stock", "overstock"];
const PERIODIC_KINDS: [&str; 2] = ["expiring_soon", "capacity"];

/// Thresholds; `None` (and `out_of_stock: false`) is off.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleSpec {
    pub low_stock_units: Option<i64>,
    pub out_of_stock: bool,
    pub overstock_units: Option<i64>,
    pub expiring_within_days: Option<i64>,
    pub capacity_share_percent: Option<i64>,
}

#[derive(Debug, Clone, Serialize, FromRow, PartialEq, Eq, utoipa::ToSchema)]
pub struct AlertRule {
    /// `default`, `item:SKU` or `item:SKU@WAREHOUSE`.
    pub scope: String,
    pub sku: Option<String>,
    pub warehouse: Option<String>,
    pub low_stock_units: Option<i64>,
    #[sqlx(try_from = "store::sql::IntFlag")]
    pub out_of_stock: bool,
    pub overstock_units: Option<i64>,
    pub expiring_within_days: Option<i64>,
    pub capacity_share_percent: Option<i64>,
    pub updated_at: String,
}

/// Sets the rule of a scope: the default (no SKU), an item, or an item in a warehouse.
pub async fn rule_put(
    tx: &mut Tx,
    sku: Option<&SkuCode>,
    warehouse: Option<&WarehouseCode>,
    spec: RuleSpec,
    now: Timestamp,
) -> Result<AlertRule> {
    if let Some(sku) = sku {
        crate::item::require_items(tx, [("sku".to_owned(), sku)])
            .await
            .map_err(|_| WarehouseError::NotFound { what: "item", key: sku.to_string() })?;
    }
    if let Some(code) = warehouse {
        crate::site::warehouse_found(tx, code).await?;
    }
    let scope = match (sku, warehouse) {
        (None, _) => "default".to_owned(),
        (Some(s), None) => format!("item:{s}"),
        (Some(s), Some(w)) => format!("item:{s}@{w}"),
    };
    let rule = AlertRule {
        scope,
        sku: sku.map(|s| s.to_string()),
        warehouse: warehouse.map(|w| w.to_string()),
        low_stock_units: spec.low_stock_units,
        out_of_stock: spec.out_of_stock,
        overstock_units: spec.overstock_units,
        expiring_within_days: spec.expiring_within_days,
        capacity_share_percent: spec.capacity_share_percent,
        updated_at: now.to_rfc3339(),
    };
    sqlx::query(
        "INSERT INTO alert_rules (scope, sku, warehouse, low_stock_units, out_of_stock, overstock_units, \
         expiring_within_days, capacity_share_percent, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
         ON CONFLICT (scope) DO UPDATE SET low_stock_units = excluded.low_stock_units, out_of_stock = excluded.out_of_stock, \
         overstock_units = excluded.overstock_units, expiring_within_days = excluded.expiring_within_days, \
         capacity_share_percent = excluded.capacity_share_percent, updated_at = excluded.updated_at",
    )
    .bind(rule.scope.clone())
    .bind(rule.sku.clone())
    .bind(rule.warehouse.clone())
    .bind(rule.low_stock_units)
    .bind(i64::from(rule.out_of_stock))
    .bind(rule.overstock_units)
    .bind(rule.expiring_within_days)
    .bind(rule.capacity_share_percent)
    .bind(rule.updated_at.clone())
    .execute(&mut **tx)
    .await?;
    // Levels whose stock did not change must follow the new thresholds too: the alerts worker
    // goes through the scope's levels (from the start again if a rescan was under way).
    sqlx::query(
        "INSERT INTO alert_rescans (scope, sku, warehouse, after_sku, after_warehouse) VALUES ($1, $2, $3, '', '') \
         ON CONFLICT (scope) DO UPDATE SET after_sku = '', after_warehouse = ''",
    )
    .bind(rule.scope.clone())
    .bind(rule.sku.clone())
    .bind(rule.warehouse.clone())
    .execute(&mut **tx)
    .await?;
    let mut journal = Journal::new();
    journal.event(NewEvent::of(format!("alert_rule:{}", rule.scope), &crate::events::AlertRuleUpdated::from(&rule)));
    journal.flush(tx, now).await?;
    Ok(rule)
}

const RULE_COLUMNS: &str = "scope, sku, warehouse, low_stock_units, out_of_stock, overstock_units, \
     expiring_within_days, capacity_share_percent, updated_at";

pub async fn rules_list(pool: &AnyPool) -> Result<Vec<AlertRule>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {RULE_COLUMNS} FROM alert_rules ORDER BY scope")))
        .fetch_all(pool)
        .await?)
}

/// All rules by scope. TODO(scale): fine for thousands of rules; page them beyond that.
async fn rules_by_scope(tx: &mut Tx) -> Result<HashMap<String, AlertRule>> {
    let rules: Vec<AlertRule> = sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {RULE_COLUMNS} FROM alert_rules")))
        .fetch_all(&mut **tx)
        .await?;
    Ok(rules.into_iter().map(|r| (r.scope.clone(), r)).collect())
}

fn rule_for<'a>(rules: &'a HashMap<String, AlertRule>, sku: &str, warehouse: &str) -> Option<&'a AlertRule> {
    rules
        .get(&format!("item:{sku}@{warehouse}"))
        .or_else(|| rules.get(&format!("item:{sku}")))
        .or_else(|| rules.get("default"))
}

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Alert {
    pub id: String,
    /// `low_stock`, `out_of_stock`, `overstock`, `expiring_soon`, `capacity`, or `holds_cut`
    /// (a cycle count found fewer units than were held and gave holds back; `detail` names
    /// them; it stays open until acknowledged, since nothing resolves it by itself).
    pub kind: String,
    pub warehouse: Option<String>,
    pub sku: Option<String>,
    pub lot: Option<String>,
    pub bin: Option<String>,
    /// `raised`, `acknowledged` or `resolved`.
    pub status: String,
    #[schema(value_type = Object)]
    pub detail: Value,
    pub raised_at: String,
    pub acknowledged_at: Option<String>,
    pub resolved_at: Option<String>,
}

#[derive(FromRow)]
struct AlertRow {
    id: String,
    subject: String,
    kind: String,
    warehouse: Option<String>,
    sku: Option<String>,
    lot: Option<String>,
    bin: Option<String>,
    status: String,
    detail: String,
    raised_at: String,
    acknowledged_at: Option<String>,
    resolved_at: Option<String>,
}

impl From<AlertRow> for Alert {
    fn from(r: AlertRow) -> Self {
        Alert {
            id: r.id,
            kind: r.kind,
            warehouse: r.warehouse,
            sku: r.sku,
            lot: r.lot,
            bin: r.bin,
            status: r.status,
            detail: serde_json::from_str(&r.detail).unwrap_or(Value::Null),
            raised_at: r.raised_at,
            acknowledged_at: r.acknowledged_at,
            resolved_at: r.resolved_at,
        }
    }
}

const ALERT_COLUMNS: &str =
    "id, subject, kind, warehouse, sku, lot, bin, status, detail, raised_at, acknowledged_at, resolved_at";

/// Alerts by id (raise order); `status` filters (`open` means raised or acknowledged).
/// The values `alerts_list` takes as a status filter.
pub const ALERT_STATUS_FILTERS: [&str; 4] = ["open", "raised", "acknowledged", "resolved"];

pub async fn alerts_list(pool: &AnyPool, status: Option<&str>, after: Option<&str>, limit: u32) -> Result<Vec<Alert>> {
    let filter = match status {
        None => "",
        Some("open") => "AND status <> 'resolved'",
        Some("raised") => "AND status = 'raised'",
        Some("acknowledged") => "AND status = 'acknowledged'",
        Some("resolved") => "AND status = 'resolved'",
        Some(_) => return Err(WarehouseError::invalid("status", "must be open, raised, acknowledged or resolved")),
    };
    let rows: Vec<AlertRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {ALERT_COLUMNS} FROM alerts WHERE id > $1 {filter} ORDER BY id LIMIT $2"
    )))
    .bind(after.unwrap_or("").to_owned())
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(Alert::from).collect())
}

/// `raised` → `acknowledged`; acknowledging again changes nothing; a resolved alert cannot be.
pub async fn alert_acknowledge(tx: &mut Tx, id: &str, now: Timestamp) -> Result<Alert> {
    let updated = sqlx::query(
        "UPDATE alerts SET status = 'acknowledged', acknowledged_at = $1 WHERE id = $2 AND status = 'raised'",
    )
    .bind(now.to_rfc3339())
    .bind(id.to_owned())
    .execute(&mut **tx)
    .await?
    .rows_affected();
    let alert: Alert =
        sqlx::query_as::<_, AlertRow>(sqlx::AssertSqlSafe(format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE id = $1")))
            .bind(id.to_owned())
            .fetch_optional(&mut **tx)
            .await?
            .map(Alert::from)
            .ok_or_else(|| WarehouseError::NotFound { what: "alert", key: id.to_owned() })?;
    if alert.status == "resolved" {
        return Err(WarehouseError::InvalidState { what: "alert", from: "resolved".into(), action: "be acknowledged" });
    }
    if updated == 1 {
        let mut journal = Journal::new();
        journal.event(alert_event(&alert, events::AlertAcknowledged));
        journal.flush(tx, now).await?;
    }
    Ok(alert)
}

fn alert_event<E: kernel::Event>(alert: &Alert, wrap: impl FnOnce(events::AlertState) -> E) -> NewEvent {
    NewEvent::of(format!("alert:{}", alert.id), &wrap(alert.into()))
}

/// A condition that holds now and should have an open alert.
#[derive(Debug, Clone)]
struct Condition {
    kind: &'static str,
    warehouse: String,
    sku: Option<String>,
    lot: Option<String>,
    bin: Option<String>,
    detail: Value,
}

impl Condition {
    fn subject(&self) -> String {
        subject(self.kind, &self.warehouse, self.sku.as_deref(), self.lot.as_deref(), self.bin.as_deref())
    }
}

fn subject(kind: &str, warehouse: &str, sku: Option<&str>, lot: Option<&str>, bin: Option<&str>) -> String {
    format!("{kind}|{warehouse}|{}|{}|{}", sku.unwrap_or(""), lot.unwrap_or(""), bin.unwrap_or(""))
}

/// Raises the conditions that are not open and resolves the open alerts among `in_scope` that
/// no longer hold.
async fn settle(
    tx: &mut Tx,
    journal: &mut Journal,
    conditions: Vec<Condition>,
    open: Vec<AlertRow>,
    now: Timestamp,
) -> Result<(usize, usize)> {
    let wanted: HashSet<String> = conditions.iter().map(Condition::subject).collect();
    let open_subjects: HashSet<String> = open.iter().map(|a| a.subject.clone()).collect();
    let mut resolved = 0;
    for alert in open.into_iter().filter(|a| !wanted.contains(&a.subject)) {
        // The event-driven check and the rescan may settle one subject at once (and replicas
        // too): whoever changes the row emits the event; the other changes nothing.
        let changed = sqlx::query(
            "UPDATE alerts SET status = 'resolved', resolved_at = $1 WHERE id = $2 AND status <> 'resolved'",
        )
        .bind(now.to_rfc3339())
        .bind(alert.id.clone())
        .execute(&mut **tx)
        .await?
        .rows_affected();
        if changed == 0 {
            continue;
        }
        let mut alert = Alert::from(alert);
        alert.status = "resolved".into();
        alert.resolved_at = Some(now.to_rfc3339());
        journal.event(alert_event(&alert, events::AlertResolved));
        resolved += 1;
    }
    let mut raised = 0;
    for c in conditions.into_iter().filter(|c| !open_subjects.contains(&c.subject())) {
        let alert = Alert {
            id: format!("alr_{}", uuid::Uuid::now_v7().simple()),
            kind: c.kind.to_owned(),
            warehouse: Some(c.warehouse.clone()),
            sku: c.sku.clone(),
            lot: c.lot.clone(),
            bin: c.bin.clone(),
            status: "raised".into(),
            detail: c.detail.clone(),
            raised_at: now.to_rfc3339(),
            acknowledged_at: None,
            resolved_at: None,
        };
        let inserted = sqlx::query(
            "INSERT INTO alerts (id, subject, kind, warehouse, sku, lot, bin, status, detail, raised_at, seq) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'raised', $8, $9, $10) \
             ON CONFLICT (subject) WHERE status <> 'resolved' DO NOTHING",
        )
        .bind(alert.id.clone())
        .bind(c.subject())
        .bind(c.kind)
        .bind(c.warehouse)
        .bind(c.sku)
        .bind(c.lot)
        .bind(c.bin)
        .bind(alert.detail.to_string())
        .bind(alert.raised_at.clone())
        .bind(now.millis())
        .execute(&mut **tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            continue;
        }
        journal.event(alert_event(&alert, events::AlertRaised));
        raised += 1;
    }
    Ok((raised, resolved))
}

/// Raises a `holds_cut` alert for the holds count `count_id` gave back because it found
/// `missing` units of `sku` fewer than the ledger held in `warehouse`: one alert per count and
/// SKU, naming each reservation (and its reference, so the order or cart can be found).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn raise_holds_cut(
    tx: &mut Tx,
    journal: &mut Journal,
    count_id: &str,
    warehouse: &WarehouseCode,
    sku: &SkuCode,
    missing: i64,
    cut: &[crate::reservation::CutHold],
    now: Timestamp,
) -> Result<()> {
    let alert = Alert {
        id: format!("alr_{}", uuid::Uuid::now_v7().simple()),
        kind: "holds_cut".into(),
        warehouse: Some(warehouse.to_string()),
        sku: Some(sku.to_string()),
        lot: None,
        bin: None,
        status: "raised".into(),
        detail: json!({
            "count": count_id,
            "missing_units": missing,
            "units_cut": cut.iter().map(|c| c.quantity).sum::<i64>(),
            "reservations": cut,
        }),
        raised_at: now.to_rfc3339(),
        acknowledged_at: None,
        resolved_at: None,
    };
    let subject = format!("{}|{count_id}", subject("holds_cut", warehouse.as_str(), Some(sku.as_str()), None, None));
    sqlx::query(
        "INSERT INTO alerts (id, subject, kind, warehouse, sku, lot, bin, status, detail, raised_at, seq) \
         VALUES ($1, $2, 'holds_cut', $3, $4, NULL, NULL, 'raised', $5, $6, $7)",
    )
    .bind(alert.id.clone())
    .bind(subject)
    .bind(warehouse.to_string())
    .bind(sku.to_string())
    .bind(alert.detail.to_string())
    .bind(alert.raised_at.clone())
    .bind(now.millis())
    .execute(&mut **tx)
    .await?;
    metrics::counter!("stockroom_alerts_raised_total", "kind" => "holds_cut").increment(1);
    journal.event(alert_event(&alert, events::AlertRaised));
    Ok(())
}

async fn open_alerts(tx: &mut Tx, kinds: &[&str]) -> Result<Vec<AlertRow>> {
    let sql = format!(
        "SELECT {ALERT_COLUMNS} FROM alerts WHERE status <> 'resolved' AND kind IN ({})",
        store::sql::list_placeholders(kinds.len(), 1)
    );
    let mut query = sqlx::query_as::<_, AlertRow>(sqlx::AssertSqlSafe(sql));
    for kind in kinds {
        query = query.bind(kind.to_string());
    }
    Ok(query.fetch_all(&mut **tx).await?)
}

/// Stock conditions (low, out, over) of one level under its rule.
fn stock_conditions(rule: &AlertRule, warehouse: &str, sku: &str, on_hand: i64, available: i64) -> Vec<Condition> {
    let mut out = Vec::new();
    let condition = |kind, detail| Condition {
        kind,
        warehouse: warehouse.to_owned(),
        sku: Some(sku.to_owned()),
        lot: None,
        bin: None,
        detail,
    };
    if rule.out_of_stock && available <= 0 {
        out.push(condition("out_of_stock", json!({"available": available})));
    } else if let Some(low) = rule.low_stock_units
        && available <= low
    {
        out.push(condition("low_stock", json!({"available": available, "threshold": low})));
    }
    if let Some(over) = rule.overstock_units
        && on_hand > over
    {
        out.push(condition("overstock", json!({"on_hand": on_hand, "threshold": over})));
    }
    out
}

/// The alerts' subscriber (`store::subscriber`): re-evaluates the stock levels that
/// `stock.changed` events touched, in the transaction that moves its offset.
#[derive(Debug, Default, Clone, Copy)]
pub struct StockAlerts;

impl Subscriber for StockAlerts {
    type Error = WarehouseError;

    fn name(&self) -> &'static str {
        "alerts"
    }

    fn event_types(&self) -> &'static [&'static str] {
        &[<events::StockChanged as kernel::Event>::TYPE]
    }

    fn handle<'a>(
        &'a self,
        tx: &'a mut Tx,
        events: &'a [StoredEvent],
        now: Timestamp,
    ) -> impl std::future::Future<Output = Result<()>> + Send + 'a {
        settle_stock_changes(tx, events, now)
    }
}

/// The (warehouse, SKU) a `stock.changed` event is about. A payload without them is corrupt:
/// an error, never skipped.
fn touched_level(event: &StoredEvent) -> Result<(String, String)> {
    match (event.data["warehouse"].as_str(), event.data["sku"].as_str()) {
        (Some(w), Some(s)) => Ok((w.to_owned(), s.to_owned())),
        _ => Err(WarehouseError::Store(store::StoreError::Corrupt(format!(
            "event {} ({}) has no warehouse and sku",
            event.seq, event.event_type
        )))),
    }
}

async fn settle_stock_changes(tx: &mut Tx, events: &[StoredEvent], now: Timestamp) -> Result<()> {
    let mut touched: HashSet<(String, String)> = HashSet::new();
    for event in events {
        touched.insert(touched_level(event)?);
    }
    let rules = rules_by_scope(tx).await?;
    let mut levels = HashMap::new();
    for (warehouse, sku) in &touched {
        let level: Option<(i64, i64)> =
            sqlx::query_as("SELECT on_hand, reserved FROM stock_levels WHERE warehouse = $1 AND sku = $2")
                .bind(warehouse.clone())
                .bind(sku.clone())
                .fetch_optional(&mut **tx)
                .await?;
        if let Some(level) = level {
            levels.insert((warehouse.clone(), sku.clone()), level);
        }
    }
    let mut journal = Journal::new();
    settle_levels(tx, &mut journal, &rules, &touched, &levels, now).await?;
    journal.flush(tx, now).await
}

/// Re-evaluates the stock alerts of the `touched` levels under the current rules: raises what
/// holds and resolves what no longer does (a pair missing from `levels` has no stock).
async fn settle_levels(
    tx: &mut Tx,
    journal: &mut Journal,
    rules: &HashMap<String, AlertRule>,
    touched: &HashSet<(String, String)>,
    levels: &HashMap<(String, String), (i64, i64)>,
    now: Timestamp,
) -> Result<(usize, usize)> {
    let mut conditions = Vec::new();
    for ((warehouse, sku), (on_hand, reserved)) in levels {
        if let Some(rule) = rule_for(rules, sku, warehouse) {
            conditions.extend(stock_conditions(rule, warehouse, sku, *on_hand, on_hand - reserved));
        }
    }
    let open: Vec<AlertRow> = open_alerts(tx, &STOCK_KINDS)
        .await?
        .into_iter()
        .filter(|a| touched.contains(&(a.warehouse.clone().unwrap_or_default(), a.sku.clone().unwrap_or_default())))
        .collect();
    settle(tx, journal, conditions, open, now).await
}

/// One run of the rule-change check: goes on through the levels of the scopes whose rules
/// changed, at most `levels_max` levels a run, and re-evaluates their stock alerts; returns
/// how many levels it looked at.
pub async fn check_rule_changes(db: &Db, now: Timestamp, levels_max: i64) -> Result<usize> {
    let mut tx = db.begin().await?;
    /// scope, its SKU and warehouse (if any), and the last level done.
    type Rescan = (String, Option<String>, Option<String>, String, String);
    let rescans: Vec<Rescan> = sqlx::query_as(
        "SELECT scope, sku, warehouse, after_sku, after_warehouse FROM alert_rescans ORDER BY scope LIMIT 16",
    )
    .fetch_all(&mut *tx)
    .await?;
    if rescans.is_empty() {
        tx.commit().await?;
        return Ok(0);
    }
    // The levels of every scope (scopes may overlap: each level is settled once), then one
    // settle against the open alerts.
    let mut levels: HashMap<(String, String), (i64, i64)> = HashMap::new();
    let mut looked_at = 0;
    for (scope, sku, warehouse, after_sku, after_warehouse) in rescans {
        let budget = levels_max - looked_at as i64;
        if budget <= 0 {
            break;
        }
        // Keyset order over the primary key; the scope narrows it to one SKU or one level.
        let (filter, binds): (&str, Vec<String>) = match (sku, warehouse) {
            (Some(s), Some(w)) => ("sku = $4 AND warehouse = $5 AND", vec![s, w]),
            (Some(s), None) => ("sku = $4 AND", vec![s]),
            _ => ("", vec![]),
        };
        let sql = format!(
            "SELECT sku, warehouse, on_hand, reserved FROM stock_levels \
             WHERE {filter} (sku > $1 OR (sku = $1 AND warehouse > $2)) ORDER BY sku, warehouse LIMIT $3"
        );
        let mut query = sqlx::query_as::<_, (String, String, i64, i64)>(sqlx::AssertSqlSafe(sql))
            .bind(after_sku)
            .bind(after_warehouse)
            .bind(budget);
        for value in binds {
            query = query.bind(value);
        }
        let rows = query.fetch_all(&mut *tx).await?;
        looked_at += rows.len();
        let budget_spent = rows.len() as i64 >= budget;
        let cursor = rows.last().filter(|_| budget_spent).map(|(s, w, _, _)| (s.clone(), w.clone()));
        levels.extend(rows.into_iter().map(|(s, w, on_hand, reserved)| ((w, s), (on_hand, reserved))));
        match cursor {
            // The budget ran out: the next run goes on after the last level seen.
            Some((s, w)) => {
                sqlx::query("UPDATE alert_rescans SET after_sku = $1, after_warehouse = $2 WHERE scope = $3")
                    .bind(s)
                    .bind(w)
                    .bind(scope)
                    .execute(&mut *tx)
                    .await?;
            }
            None => {
                sqlx::query("DELETE FROM alert_rescans WHERE scope = $1").bind(scope).execute(&mut *tx).await?;
            }
        }
    }
    let rules = rules_by_scope(&mut tx).await?;
    let touched: HashSet<(String, String)> = levels.keys().cloned().collect();
    let mut journal = Journal::new();
    settle_levels(&mut tx, &mut journal, &rules, &touched, &levels, now).await?;
    journal.flush(&mut tx, now).await?;
    tx.commit().await?;
    Ok(looked_at)
}

/// One run of the periodic check: lots expiring within their rule's window, and warehouses
/// and bins filled beyond the default rule's share of capacity.
pub async fn check_periodic(db: &Db, now: Timestamp) -> Result<(usize, usize)> {
    let mut tx = db.begin().await?;
    let rules = rules_by_scope(&mut tx).await?;
    let mut conditions = Vec::new();

    let horizon_days = rules.values().filter_map(|r| r.expiring_within_days).max().unwrap_or(0);
    if horizon_days > 0 {
        let lots: Vec<(String, String, String, String, i64, i64)> = sqlx::query_as(
            "SELECT sku, warehouse, lot, expires_on, expires_at_ms, on_hand - reserved FROM stock_lots \
             WHERE on_hand - reserved > 0 AND quarantined = 0 AND expires_at_ms > $1 AND expires_at_ms <= $2 \
             ORDER BY expires_at_ms LIMIT $3",
        )
        .bind(now.millis())
        .bind(now.plus_seconds(horizon_days * 86_400).millis())
        .bind(PERIODIC_SUBJECTS_MAX)
        .fetch_all(&mut *tx)
        .await?;
        for (sku, warehouse, lot, expires_on, expires_at_ms, free) in lots {
            let within = rule_for(&rules, &sku, &warehouse).and_then(|r| r.expiring_within_days);
            if within.is_some_and(|days| expires_at_ms <= now.plus_seconds(days * 86_400).millis()) {
                conditions.push(Condition {
                    kind: "expiring_soon",
                    warehouse,
                    sku: Some(sku),
                    lot: Some(lot),
                    bin: None,
                    detail: json!({"expires_on": expires_on, "units": free, "within_days": within}),
                });
            }
        }
    }

    if let Some(share) = rules.get("default").and_then(|r| r.capacity_share_percent) {
        let warehouses: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT w.code, w.capacity_units, CAST(COALESCE(SUM(s.on_hand), 0) AS BIGINT) FROM warehouses w \
             LEFT JOIN stock_levels s ON s.warehouse = w.code WHERE w.capacity_units IS NOT NULL \
             GROUP BY w.code, w.capacity_units ORDER BY w.code LIMIT $1",
        )
        .bind(PERIODIC_SUBJECTS_MAX)
        .fetch_all(&mut *tx)
        .await?;
        for (code, capacity, used) in warehouses {
            if used * 100 >= capacity * share {
                conditions.push(Condition {
                    kind: "capacity",
                    warehouse: code,
                    sku: None,
                    lot: None,
                    bin: None,
                    detail: json!({"used_units": used, "capacity_units": capacity, "threshold_percent": share}),
                });
            }
        }
        let bins: Vec<(String, String, i64, i64)> = sqlx::query_as(
            "SELECT b.warehouse, b.code, b.capacity_units, CAST(COALESCE(SUM(s.on_hand), 0) AS BIGINT) FROM bins b \
             LEFT JOIN bin_stock s ON s.warehouse = b.warehouse AND s.bin = b.code WHERE b.capacity_units IS NOT NULL \
             GROUP BY b.warehouse, b.code, b.capacity_units ORDER BY b.warehouse, b.code LIMIT $1",
        )
        .bind(PERIODIC_SUBJECTS_MAX)
        .fetch_all(&mut *tx)
        .await?;
        for (warehouse, bin, capacity, used) in bins {
            if used * 100 >= capacity * share {
                conditions.push(Condition {
                    kind: "capacity",
                    warehouse,
                    sku: None,
                    lot: None,
                    bin: Some(bin),
                    detail: json!({"used_units": used, "capacity_units": capacity, "threshold_percent": share}),
                });
            }
        }
    }

    let open = open_alerts(&mut tx, &PERIODIC_KINDS).await?;
    let mut journal = Journal::new();
    let counts = settle(&mut tx, &mut journal, conditions, open, now).await?;
    journal.flush(&mut tx, now).await?;
    tx.commit().await?;
    Ok(counts)
}
