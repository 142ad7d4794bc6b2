//! Cycle counts: open, count blind, recount, approve.

use crate::AppState;
use crate::auth::Principal;
use crate::error::{ApiError, FieldError};
use crate::extract::{ApiJson, NoQuery, QueryMap, check_text};
use crate::idempotency::{Answer, run_write};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use kernel::limits::{LINES_PER_REQUEST_MAX, QUANTITY_MAX};
use kernel::{SkuCode, WarehouseCode};
use serde::Deserialize;
use utoipa::ToSchema;
use warehouse::count::{CountView, CountedLine, OpenCount};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/counts", post(count_open).get(count_list))
        .route("/counts/{id}", get(count_get))
        .route("/counts/{id}/lines", post(count_submit))
        .route("/counts/{id}/approve", post(count_approve))
        .route("/counts/{id}/cancel", post(count_cancel))
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"warehouse": "BER-1", "zone": "A", "recount_threshold_units": 2}))]
pub struct CreateCount {
    #[schema(value_type = String)]
    pub warehouse: WarehouseCode,
    /// Count only the bins of this zone.
    pub zone: Option<String>,
    /// Count only these SKUs.
    #[schema(value_type = Option<Vec<String>>)]
    pub skus: Option<Vec<SkuCode>>,
    /// Lines off by more than this many units ask for a recount; default 0.
    pub recount_threshold_units: Option<i64>,
}

/// Opens a count; its lines list what to count, without expected figures.
#[utoipa::path(post, path = "/v1/counts", tag = "counts", request_body = CreateCount,
    responses((status = 201, body = CountView), (status = 422, body = crate::error::Problem)), security(("bearer" = [])))]
pub async fn count_open(
    _query: NoQuery,
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    body: ApiJson<CreateCount>,
) -> Result<Response, ApiError> {
    let req = body.value;
    let mut errors = Vec::new();
    if let Some(zone) = &req.zone {
        check_text("zone", zone, true, &mut errors);
    }
    if req.skus.as_ref().is_some_and(|s| s.is_empty() || s.len() > LINES_PER_REQUEST_MAX) {
        errors
            .push(FieldError { field: "skus".into(), message: format!("must list 1 to {LINES_PER_REQUEST_MAX} SKUs") });
    }
    let threshold = req.recount_threshold_units.unwrap_or(0);
    if !(0..=QUANTITY_MAX).contains(&threshold) {
        errors.push(FieldError {
            field: "recount_threshold_units".into(),
            message: format!("must be between 0 and {QUANTITY_MAX}"),
        });
    }
    if req.skus.as_ref().is_some_and(|s| s.len() > LINES_PER_REQUEST_MAX) {
        return Err(ApiError::validation_many(errors));
    }
    let open =
        OpenCount { warehouse: req.warehouse, zone: req.zone, skus: req.skus, recount_threshold_units: threshold };
    let checked = open.clone();
    crate::extract::finish_all(&state, errors, move |tx| {
        Box::pin(async move { warehouse::count::count_open_issues(tx, &checked).await })
    })
    .await?;
    run_write(&state, &principal, "POST /v1/counts", &headers, &body.raw, move |tx, now| {
        let open = open.clone();
        Box::pin(async move {
            let count = warehouse::count::count_open(tx, open, now).await?;
            Ok(Answer::json(StatusCode::CREATED, &count))
        })
    })
    .await
}

fn path_id(raw: &str) -> Result<String, ApiError> {
    if raw.len() <= 64 && raw.starts_with("cnt_") {
        Ok(raw.to_owned())
    } else {
        Err(ApiError::not_found(format!("count {raw} does not exist")))
    }
}

#[derive(Debug, serde::Serialize, ToSchema)]
pub struct CountPage {
    pub items: Vec<CountView>,
    pub next: Option<String>,
}

/// Counts, oldest first.
#[utoipa::path(get, path = "/v1/counts", tag = "counts",
    params(("warehouse" = Option<String>, Query),
           ("status" = Option<String>, Query, description = "`open`, `approved` or `cancelled`"),
           ("limit" = Option<u32>, Query, description = "1 to 1000 (default 100)"), ("next" = Option<String>, Query)),
    responses((status = 200, body = CountPage), (status = 422, body = crate::error::Problem)), security(("bearer" = [])))]
pub async fn count_list(State(state): State<AppState>, query: QueryMap) -> Result<Json<CountPage>, ApiError> {
    let mut parse = query.only(&["warehouse", "status", "limit", "next"]);
    let warehouse = parse.code::<WarehouseCode>("warehouse");
    let status = parse.get("status").map(str::to_owned);
    if let Some(s) = &status
        && !["open", "approved", "cancelled"].contains(&s.as_str())
    {
        parse.refuse("status", "must be open, approved or cancelled");
    }
    let page = parse.page();
    parse.require_warehouse(state.db.reader(), "warehouse", warehouse.as_ref()).await?;
    parse.finish()?;
    let rows = warehouse::count::counts_list(
        state.db.reader(),
        warehouse.as_ref().map(|w| w.as_str()),
        status.as_deref(),
        page.after.as_deref(),
        page.limit,
    )
    .await?;
    let page = kernel::Page::from_rows(rows, page.limit, |c| c.id.clone());
    Ok(Json(CountPage { items: page.items, next: page.next }))
}

/// Reads a count; expected figures and variances appear once it is approved.
#[utoipa::path(get, path = "/v1/counts/{id}", tag = "counts", params(("id" = String, Path)),
    responses((status = 200, body = CountView), (status = 404, body = crate::error::Problem)), security(("bearer" = [])))]
pub async fn count_get(
    _query: NoQuery,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<CountView>, ApiError> {
    Ok(Json(warehouse::count::count_get(state.db.reader(), &path_id(&id)?).await?))
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CountedLineRequest {
    /// Omit for stock not in any bin.
    pub bin: Option<String>,
    #[schema(value_type = String)]
    pub sku: SkuCode,
    pub counted: i64,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"lines": [{"bin": "A-01-1", "sku": "TSHIRT-RED-M", "counted": 14}]}))]
pub struct SubmitCount {
    pub lines: Vec<CountedLineRequest>,
}

/// Records counted figures; a line far off its expected figure asks for a recount (count it
/// again: the same figure twice is accepted).
#[utoipa::path(post, path = "/v1/counts/{id}/lines", tag = "counts", params(("id" = String, Path)), request_body = SubmitCount,
    responses((status = 200, body = CountView), (status = 404, body = crate::error::Problem), (status = 409, body = crate::error::Problem),
              (status = 422, body = crate::error::Problem)), security(("bearer" = [])))]
pub async fn count_submit(
    _query: NoQuery,
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: ApiJson<SubmitCount>,
) -> Result<Response, ApiError> {
    let id = path_id(&id)?;
    let lines = body.value.lines;
    let mut errors = Vec::new();
    if lines.is_empty() || lines.len() > LINES_PER_REQUEST_MAX {
        errors.push(FieldError {
            field: "lines".into(),
            message: format!("must have 1 to {LINES_PER_REQUEST_MAX} lines"),
        });
    }
    for (i, line) in lines.iter().enumerate() {
        if !(0..=QUANTITY_MAX).contains(&line.counted) {
            errors.push(FieldError {
                field: format!("lines[{i}].counted"),
                message: format!("must be between 0 and {QUANTITY_MAX}"),
            });
        }
        if let Some(bin) = &line.bin {
            check_text(&format!("lines[{i}].bin"), bin, true, &mut errors);
        }
    }
    if lines.len() > LINES_PER_REQUEST_MAX {
        return Err(ApiError::validation_many(errors));
    }
    let lines: Vec<CountedLine> =
        lines.into_iter().map(|l| CountedLine { bin: l.bin, sku: l.sku, counted: l.counted }).collect();
    let (checked_id, checked) = (id.clone(), lines.clone());
    crate::extract::finish_all(&state, errors, move |tx| {
        Box::pin(async move { warehouse::count::count_lines_issues(tx, &checked_id, &checked).await })
    })
    .await?;
    run_write(
        &state,
        &principal,
        "POST /v1/counts/lines",
        &headers,
        &[id.as_bytes(), &body.raw].concat(),
        move |tx, now| {
            let (id, lines) = (id.clone(), lines.clone());
            Box::pin(async move {
                let count = warehouse::count::count_submit(tx, &id, lines, now).await?;
                Ok(Answer::json(StatusCode::OK, &count))
            })
        },
    )
    .await
}

/// Applies the variances as `count` movements in one transaction and closes the count.
#[utoipa::path(post, path = "/v1/counts/{id}/approve", tag = "counts", params(("id" = String, Path)),
    responses((status = 200, body = CountView), (status = 404, body = crate::error::Problem),
              (status = 409, body = crate::error::Problem, description = "Lines uncounted or to recount, or the count is closed")),
    security(("bearer" = [])))]
pub async fn count_approve(
    _query: NoQuery,
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = path_id(&id)?;
    let fingerprint_input = id.clone().into_bytes();
    run_write(&state, &principal, "POST /v1/counts/approve", &headers, &fingerprint_input, move |tx, now| {
        let id = id.clone();
        Box::pin(async move {
            let count = warehouse::count::count_approve(tx, &id, now).await?;
            Ok(Answer::json(StatusCode::OK, &count))
        })
    })
    .await
}

/// Cancels an open count; nothing is applied.
#[utoipa::path(post, path = "/v1/counts/{id}/cancel", tag = "counts", params(("id" = String, Path)),
    responses((status = 200, body = CountView), (status = 404, body = crate::error::Problem), (status = 409, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn count_cancel(
    _query: NoQuery,
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = path_id(&id)?;
    let fingerprint_input = id.clone().into_bytes();
    run_write(&state, &principal, "POST /v1/counts/cancel", &headers, &fingerprint_input, move |tx, _now| {
        let id = id.clone();
        Box::pin(async move {
            let count = warehouse::count::count_cancel(tx, &id).await?;
            Ok(Answer::json(StatusCode::OK, &count))
        })
    })
    .await
}
