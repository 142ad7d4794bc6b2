//! Alert rules and alerts.

use crate::AppState;
use crate::auth::Principal;
use crate::error::{ApiError, FieldError};
use crate::extract::{ApiJson, NoQuery, QueryMap};
use crate::idempotency::{Answer, run_write};
use crate::routes::inventory::{path_sku, path_warehouse};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post, put};
use axum::{Extension, Json, Router};
use kernel::{SkuCode, WarehouseCode};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use warehouse::alert::{Alert, AlertRule, RuleSpec};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/alert-rules", get(rules))
        .route("/alert-rules/default", put(rule_default))
        .route("/alert-rules/items/{sku}", put(rule_item))
        .route("/alert-rules/items/{sku}/warehouses/{code}", put(rule_item_warehouse))
        .route("/alerts", get(alerts))
        .route("/alerts/{id}/acknowledge", post(acknowledge))
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"low_stock_units": 10, "out_of_stock": true, "overstock_units": 5000,
                          "expiring_within_days": 7, "capacity_share_percent": 90}))]
pub struct PutRule {
    /// Raise `low_stock` when available is at or below this.
    pub low_stock_units: Option<i64>,
    /// Raise `out_of_stock` when nothing is available.
    #[serde(default)]
    pub out_of_stock: bool,
    /// Raise `overstock` when on hand is above this.
    pub overstock_units: Option<i64>,
    /// Raise `expiring_soon` for lots expiring within this many days.
    pub expiring_within_days: Option<i64>,
    /// Raise `capacity` when a warehouse or bin is filled to this share (default rule only).
    pub capacity_share_percent: Option<i64>,
}

fn spec(req: PutRule) -> Result<RuleSpec, ApiError> {
    let mut errors = Vec::new();
    let mut bounded = |field: &str, value: Option<i64>, max: i64| {
        if value.is_some_and(|v| !(0..=max).contains(&v)) {
            errors.push(FieldError { field: field.into(), message: format!("must be between 0 and {max}") });
        }
    };
    bounded("low_stock_units", req.low_stock_units, kernel::limits::STOCK_LEVEL_MAX);
    bounded("overstock_units", req.overstock_units, kernel::limits::STOCK_LEVEL_MAX);
    bounded("expiring_within_days", req.expiring_within_days, 3650);
    bounded("capacity_share_percent", req.capacity_share_percent, 100);
    if !errors.is_empty() {
        return Err(ApiError::validation_many(errors));
    }
    Ok(RuleSpec {
        low_stock_units: req.low_stock_units,
        out_of_stock: req.out_of_stock,
        overstock_units: req.overstock_units,
        expiring_within_days: req.expiring_within_days,
        capacity_share_percent: req.capacity_share_percent,
    })
}

async fn put_rule(
    state: AppState,
    principal: Principal,
    headers: HeaderMap,
    body: ApiJson<PutRule>,
    scope: (Option<SkuCode>, Option<WarehouseCode>),
) -> Result<Response, ApiError> {
    let spec = spec(body.value)?;
    let key = format!("{:?}", scope);
    run_write(
        &state,
        &principal,
        "PUT /v1/alert-rules",
        &headers,
        &[key.as_bytes(), &body.raw].concat(),
        move |tx, now| {
            let (spec, scope) = (spec.clone(), scope.clone());
            Box::pin(async move {
                let rule = warehouse::alert::rule_put(tx, scope.0.as_ref(), scope.1.as_ref(), spec, now).await?;
                Ok(Answer::json(StatusCode::OK, &rule))
            })
        },
    )
    .await
}

/// Sets the default rule. Every stock level is re-evaluated under it in the background (at most
/// 1,000 levels a run of the alerts worker), so it applies to stock that does not move; the
/// change is recorded as an `alert_rule.updated` event.
#[utoipa::path(put, path = "/v1/alert-rules/default", tag = "alerts", request_body = PutRule,
    responses((status = 200, body = AlertRule), (status = 422, body = crate::error::Problem)), security(("bearer" = [])))]
pub async fn rule_default(
    _query: NoQuery,
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    body: ApiJson<PutRule>,
) -> Result<Response, ApiError> {
    put_rule(state, principal, headers, body, (None, None)).await
}

/// Sets the rule of an item (all warehouses).
#[utoipa::path(put, path = "/v1/alert-rules/items/{sku}", tag = "alerts", params(("sku" = String, Path)), request_body = PutRule,
    responses((status = 200, body = AlertRule), (status = 404, body = crate::error::Problem), (status = 422, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn rule_item(
    _query: NoQuery,
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(sku): Path<String>,
    headers: HeaderMap,
    body: ApiJson<PutRule>,
) -> Result<Response, ApiError> {
    put_rule(state, principal, headers, body, (Some(path_sku(&sku)?), None)).await
}

/// Sets the rule of an item in one warehouse.
#[utoipa::path(put, path = "/v1/alert-rules/items/{sku}/warehouses/{code}", tag = "alerts",
    params(("sku" = String, Path), ("code" = String, Path)), request_body = PutRule,
    responses((status = 200, body = AlertRule), (status = 404, body = crate::error::Problem), (status = 422, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn rule_item_warehouse(
    _query: NoQuery,
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path((sku, code)): Path<(String, String)>,
    headers: HeaderMap,
    body: ApiJson<PutRule>,
) -> Result<Response, ApiError> {
    put_rule(state, principal, headers, body, (Some(path_sku(&sku)?), Some(path_warehouse(&code)?))).await
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RuleList {
    pub items: Vec<AlertRule>,
}

/// All alert rules.
#[utoipa::path(get, path = "/v1/alert-rules", tag = "alerts", responses((status = 200, body = RuleList)), security(("bearer" = [])))]
pub async fn rules(_query: NoQuery, State(state): State<AppState>) -> Result<Json<RuleList>, ApiError> {
    Ok(Json(RuleList { items: warehouse::alert::rules_list(state.db.reader()).await? }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AlertPage {
    pub items: Vec<Alert>,
    pub next: Option<String>,
}

/// Alerts in the order raised; `status` is `open`, `raised`, `acknowledged` or `resolved`.
#[utoipa::path(get, path = "/v1/alerts", tag = "alerts",
    params(("status" = Option<String>, Query), ("limit" = Option<u32>, Query), ("next" = Option<String>, Query)),
    responses((status = 200, body = AlertPage), (status = 422, body = crate::error::Problem)), security(("bearer" = [])))]
pub async fn alerts(State(state): State<AppState>, query: QueryMap) -> Result<Json<AlertPage>, ApiError> {
    let mut query = query.only(&["status", "limit", "next"]);
    let page = query.page();
    let status = query.get("status").map(str::to_owned);
    if let Some(s) = &status
        && !warehouse::alert::ALERT_STATUS_FILTERS.contains(&s.as_str())
    {
        query.refuse("status", format!("must be one of {}", warehouse::alert::ALERT_STATUS_FILTERS.join(", ")));
    }
    query.finish()?;
    let rows =
        warehouse::alert::alerts_list(state.db.reader(), status.as_deref(), page.after.as_deref(), page.limit).await?;
    let page = kernel::Page::from_rows(rows, page.limit, |a| a.id.clone());
    Ok(Json(AlertPage { items: page.items, next: page.next }))
}

/// `raised` → `acknowledged`. Acknowledging again changes nothing; a resolved alert: 409.
#[utoipa::path(post, path = "/v1/alerts/{id}/acknowledge", tag = "alerts", params(("id" = String, Path)),
    responses((status = 200, body = Alert), (status = 404, body = crate::error::Problem), (status = 409, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn acknowledge(
    _query: NoQuery,
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if id.len() > 64 || !id.starts_with("alr_") {
        return Err(ApiError::not_found(format!("alert {id} does not exist")));
    }
    let fingerprint_input = id.clone().into_bytes();
    run_write(&state, &principal, "POST /v1/alerts/acknowledge", &headers, &fingerprint_input, move |tx, now| {
        let id = id.clone();
        Box::pin(async move {
            let alert = warehouse::alert::alert_acknowledge(tx, &id, now).await?;
            Ok(Answer::json(StatusCode::OK, &alert))
        })
    })
    .await
}
