//! Reservations: hold, read, confirm, release (whole or in part), fulfill.

use crate::AppState;
use crate::auth::Principal;
use crate::error::{ApiError, FieldError};
use crate::extract::{ApiJson, NoQuery, QueryMap, check_text};
use crate::idempotency::{Answer, idempotency_key, idempotency_scope, mark_replayed, run_write};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use kernel::limits::{LINES_PER_REQUEST_MAX, RESERVATION_TTL_SECONDS_DEFAULT, RESERVATION_TTL_SECONDS_MAX};
use kernel::{Quantity, ReservationId, SkuCode, WarehouseCode};
use serde::Deserialize;
use store::batch::IdempotencyKey;
use utoipa::ToSchema;
use warehouse::reservation::{HoldCommand, HoldLine, Reservation, ReservationFilter, Status};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/reservations", post(reservation_create).get(reservation_list))
        .route("/reservations/{id}", get(reservation_get))
        .route("/reservations/{id}/extend", post(reservation_extend))
        .route("/reservations/{id}/confirm", post(reservation_confirm))
        .route("/reservations/{id}/release", post(reservation_release))
        .route("/reservations/{id}/reduce", post(reservation_reduce))
        .route("/reservations/{id}/fulfill", post(reservation_fulfill))
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HoldLineRequest {
    #[schema(value_type = String, example = "TSHIRT-RED-M")]
    pub sku: SkuCode,
    #[schema(value_type = i64, example = 2, minimum = 1, maximum = 1000000000)]
    pub quantity: Quantity,
    /// Omit to let the server choose (warehouse priority, then stock), possibly splitting.
    #[schema(value_type = Option<String>, example = "BER-1")]
    pub warehouse: Option<WarehouseCode>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"reference": "cart-123", "ttl_seconds": 900, "lines": [{"sku": "TSHIRT-RED-M", "quantity": 2, "warehouse": "BER-1"}]}))]
pub struct CreateReservation {
    pub reference: Option<String>,
    /// 1 to 604800; default 900.
    pub ttl_seconds: Option<i64>,
    pub lines: Vec<HoldLineRequest>,
}

/// Parses a reservation request into a hold command (with a fresh id).
pub fn hold_command(req: CreateReservation) -> Result<HoldCommand, ApiError> {
    let mut errors = Vec::new();
    if req.lines.is_empty() || req.lines.len() > LINES_PER_REQUEST_MAX {
        errors.push(FieldError {
            field: "lines".into(),
            message: format!("must have 1 to {LINES_PER_REQUEST_MAX} lines"),
        });
    }
    let ttl_seconds = req.ttl_seconds.unwrap_or(RESERVATION_TTL_SECONDS_DEFAULT);
    if !(1..=RESERVATION_TTL_SECONDS_MAX).contains(&ttl_seconds) {
        errors.push(FieldError {
            field: "ttl_seconds".into(),
            message: format!("must be between 1 and {RESERVATION_TTL_SECONDS_MAX}"),
        });
    }
    if let Some(r) = &req.reference {
        check_text("reference", r, false, &mut errors);
    }
    if !errors.is_empty() {
        return Err(ApiError::validation_many(errors));
    }
    Ok(HoldCommand {
        id: ReservationId::new(),
        reference: req.reference.unwrap_or_default(),
        ttl_seconds,
        lines: req
            .lines
            .into_iter()
            .map(|l| HoldLine { sku: l.sku, quantity: l.quantity, warehouse: l.warehouse })
            .collect(),
    })
}

/// Holds stock, all lines or nothing.
#[utoipa::path(post, path = "/v1/reservations", tag = "reservations", request_body = CreateReservation,
    params(("Idempotency-Key" = Option<String>, Header, description = "Holds once however often it is sent")),
    responses((status = 201, body = Reservation,
               headers(("Idempotent-Replayed" = String, description = "`true` when this is the stored answer of an earlier request with the same Idempotency-Key"))),
              (status = 409, body = crate::error::Problem, description = "insufficient_stock, with the short lines",
               example = json!({"type": "urn:stockroom:problem:insufficient_stock", "title": "Insufficient stock", "status": 409,
                                "code": "insufficient_stock", "detail": "TSHIRT-RED-M: requested 5, available 3",
                                "lines": [{"sku": "TSHIRT-RED-M", "requested": 5, "available": 3}]})),
              (status = 422, body = crate::error::Problem)), security(("bearer" = [])))]
pub async fn reservation_create(
    _query: NoQuery,
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    body: ApiJson<CreateReservation>,
) -> Result<Response, ApiError> {
    let lines: Vec<HoldLine> = body
        .value
        .lines
        .iter()
        .take(LINES_PER_REQUEST_MAX)
        .map(|l| HoldLine { sku: l.sku.clone(), quantity: l.quantity, warehouse: l.warehouse.clone() })
        .collect();
    let command = match hold_command(body.value) {
        Ok(command) => command,
        Err(refused) => {
            crate::extract::finish_all(&state, refused.errors.clone(), move |tx| {
                Box::pin(async move { warehouse::reservation::hold_issues(tx, &lines).await })
            })
            .await?;
            return Err(refused);
        }
    };
    let Some(key) = idempotency_key(&headers)? else {
        let reservation = state.reservations.hold(command).await?;
        return Ok((StatusCode::CREATED, Json(reservation)).into_response());
    };
    // With a key the hold goes through the batch executor too: the key is claimed and the
    // typed outcome stored in the batch's transaction; a replay is rendered like a fresh one.
    let key = IdempotencyKey {
        scope: idempotency_scope("POST /v1/reservations", &principal),
        key,
        fingerprint: store::idempotency::fingerprint(&body.raw),
    };
    let once = state.reservations.hold_once(command, key).await;
    let mut response = match once.answer {
        Ok(reservation) => (StatusCode::CREATED, Json(reservation)).into_response(),
        Err(error) => ApiError::from(error).into_response(),
    };
    if once.replayed {
        mark_replayed(&mut response);
    }
    Ok(response)
}

fn path_id(raw: &str) -> Result<ReservationId, ApiError> {
    ReservationId::parse(raw).ok_or_else(|| ApiError::not_found(format!("reservation {raw} does not exist")))
}

/// Reads a reservation; an active one past its expiry reads as expired.
#[utoipa::path(get, path = "/v1/reservations/{id}", tag = "reservations", params(("id" = String, Path)),
    responses((status = 200, body = Reservation), (status = 404, body = crate::error::Problem)), security(("bearer" = [])))]
pub async fn reservation_get(
    _query: NoQuery,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Reservation>, ApiError> {
    let id = path_id(&id)?;
    Ok(Json(warehouse::reservation::reservation_get(&state.db, &id, state.clock.now()).await?))
}

#[derive(Debug, serde::Serialize, ToSchema)]
pub struct ReservationPage {
    pub items: Vec<Reservation>,
    pub next: Option<String>,
}

/// Lists reservations, oldest first: who holds this stock, what a cart or order holds.
#[utoipa::path(get, path = "/v1/reservations", tag = "reservations",
    params(("reference" = Option<String>, Query, description = "Only reservations with this reference"),
           ("status" = Option<String>, Query, description = "active, confirmed, released, expired or fulfilled, as the reservation reads now (an active one past its expiry is expired)"),
           ("sku" = Option<String>, Query, description = "Only reservations with a line of this SKU"),
           ("warehouse" = Option<String>, Query, description = "Only reservations with a line in this warehouse (with `sku`: a line of that SKU there)"),
           ("limit" = Option<u32>, Query, description = "1 to 1000; default 100"),
           ("next" = Option<String>, Query, description = "The cursor of the previous page")),
    responses((status = 200, body = ReservationPage), (status = 422, body = crate::error::Problem)), security(("bearer" = [])))]
pub async fn reservation_list(
    State(state): State<AppState>,
    query: QueryMap,
) -> Result<Json<ReservationPage>, ApiError> {
    let mut query = query.only(&["reference", "status", "sku", "warehouse", "limit", "next"]);
    let page = query.page();
    let mut filter = ReservationFilter {
        sku: query.code::<SkuCode>("sku"),
        warehouse: query.code::<WarehouseCode>("warehouse"),
        ..Default::default()
    };
    if let Some(reference) = query.get("reference").map(str::to_owned) {
        let mut errors = Vec::new();
        check_text("reference", &reference, true, &mut errors);
        for error in errors {
            query.refuse(error.field, error.message);
        }
        filter.reference = Some(reference);
    }
    if let Some(raw) = query.get("status").map(str::to_owned) {
        match Status::named(&raw) {
            Some(status) => filter.status = Some(status),
            None => query.refuse("status", "must be active, confirmed, released, expired or fulfilled"),
        }
    }
    query.require_item(state.db.reader(), "sku", filter.sku.as_ref()).await?;
    query.require_warehouse(state.db.reader(), "warehouse", filter.warehouse.as_ref()).await?;
    query.finish()?;
    let rows = warehouse::reservation::reservations_list(
        &state.db,
        &filter,
        page.after.as_deref(),
        page.limit,
        state.clock.now(),
    )
    .await?;
    let page = kernel::Page::from_rows(rows, page.limit, |r| r.id.clone());
    Ok(Json(ReservationPage { items: page.items, next: page.next }))
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"ttl_seconds": 900}))]
pub struct ExtendReservation {
    /// 1 to 604800: the reservation expires this long from now.
    pub ttl_seconds: i64,
}

/// An active reservation holds on until `ttl_seconds` from now. Anything but an active
/// reservation (confirmed ones do not expire): 409 `invalid_state`.
#[utoipa::path(post, path = "/v1/reservations/{id}/extend", tag = "reservations", params(("id" = String, Path),
        ("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer for repeats")),
    request_body = ExtendReservation,
    responses((status = 200, body = Reservation), (status = 404, body = crate::error::Problem), (status = 409, body = crate::error::Problem),
              (status = 422, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn reservation_extend(
    _query: NoQuery,
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: ApiJson<ExtendReservation>,
) -> Result<Response, ApiError> {
    let id = path_id(&id)?;
    let ttl_seconds = body.value.ttl_seconds;
    if !(1..=RESERVATION_TTL_SECONDS_MAX).contains(&ttl_seconds) {
        return Err(ApiError::validation(
            "ttl_seconds",
            format!("must be between 1 and {RESERVATION_TTL_SECONDS_MAX}"),
        ));
    }
    let fingerprint_input = [id.as_str().as_bytes(), b"\0", &body.raw].concat();
    run_write(&state, &principal, "POST /v1/reservations/extend", &headers, &fingerprint_input, move |tx, now| {
        let id = id.clone();
        Box::pin(async move {
            let reservation = warehouse::reservation::extend(tx, &id, ttl_seconds, now).await?;
            Ok(Answer::json(StatusCode::OK, &reservation))
        })
    })
    .await
}

#[derive(Clone, Copy)]
enum Action {
    Confirm,
    Release,
    Fulfill,
}

async fn transition(
    state: AppState,
    principal: Principal,
    id: String,
    headers: HeaderMap,
    action: Action,
) -> Result<Response, ApiError> {
    let id = path_id(&id)?;
    if idempotency_key(&headers)?.is_none() {
        let group = &state.reservations;
        let reservation = match action {
            Action::Confirm => group.confirm(id).await?,
            Action::Release => group.release(id).await?,
            Action::Fulfill => group.fulfill(id).await?,
        };
        return Ok(Json(reservation).into_response());
    }
    let route = match action {
        Action::Confirm => "POST /v1/reservations/confirm",
        Action::Release => "POST /v1/reservations/release",
        Action::Fulfill => "POST /v1/reservations/fulfill",
    };
    // These actions take no body: the id is what the key guards, so the same key on another
    // reservation is a reuse.
    let fingerprint_input = id.as_str().as_bytes().to_vec();
    run_write(&state, &principal, route, &headers, &fingerprint_input, move |tx, now| {
        let id = id.clone();
        Box::pin(async move {
            let reservation = match action {
                Action::Confirm => warehouse::reservation::confirm(tx, &id, now).await?,
                Action::Release => warehouse::reservation::release(tx, &id, now).await?,
                Action::Fulfill => warehouse::reservation::fulfill(tx, &id, now).await?,
            };
            Ok(Answer::json(StatusCode::OK, &reservation))
        })
    })
    .await
}

/// `active` → `confirmed` (no expiry). Repeating it changes nothing (200); expired or released: 409.
#[utoipa::path(post, path = "/v1/reservations/{id}/confirm", tag = "reservations", params(("id" = String, Path)),
    responses((status = 200, body = Reservation), (status = 404, body = crate::error::Problem), (status = 409, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn reservation_confirm(
    _query: NoQuery,
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    transition(state, principal, id, headers, Action::Confirm).await
}

/// Gives the stock back. Repeating it changes nothing (200); fulfilled: 409.
#[utoipa::path(post, path = "/v1/reservations/{id}/release", tag = "reservations", params(("id" = String, Path)),
    responses((status = 200, body = Reservation), (status = 404, body = crate::error::Problem), (status = 409, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn reservation_release(
    _query: NoQuery,
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    transition(state, principal, id, headers, Action::Release).await
}

/// `confirmed` → `fulfilled`: on hand and reserved both go down. Anything else: 409.
#[utoipa::path(post, path = "/v1/reservations/{id}/fulfill", tag = "reservations", params(("id" = String, Path)),
    responses((status = 200, body = Reservation), (status = 404, body = crate::error::Problem), (status = 409, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn reservation_fulfill(
    _query: NoQuery,
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    transition(state, principal, id, headers, Action::Fulfill).await
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReduceLine {
    #[schema(value_type = String, example = "TSHIRT-RED-M")]
    pub sku: SkuCode,
    #[schema(value_type = String, example = "BER-1")]
    pub warehouse: WarehouseCode,
    #[schema(value_type = i64, example = 1, minimum = 1, maximum = 1000000000)]
    pub quantity: Quantity,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"lines": [{"sku": "TSHIRT-RED-M", "warehouse": "BER-1", "quantity": 1}]}))]
pub struct ReduceRequest {
    pub lines: Vec<ReduceLine>,
}

/// Gives back part of an active or confirmed reservation: the units named go back to available
/// stock (`release` movements, lots first expiry first) and the rest stays held
/// (`reservation.reduced`). Giving back everything it holds releases it. A line for more than
/// the reservation holds of that SKU in that warehouse is 422 naming the line; a reservation
/// in another state is 409.
#[utoipa::path(post, path = "/v1/reservations/{id}/reduce", tag = "reservations", params(("id" = String, Path)),
    request_body = ReduceRequest,
    responses((status = 200, body = Reservation, description = "The reservation with what it still holds"),
              (status = 404, body = crate::error::Problem, description = "No such reservation"),
              (status = 409, body = crate::error::Problem, description = "Not active or confirmed (`invalid_state`)"),
              (status = 422, body = crate::error::Problem, description = "Bad lines, or more than held")),
    security(("bearer" = [])))]
pub async fn reservation_reduce(
    _query: NoQuery,
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: ApiJson<ReduceRequest>,
) -> Result<Response, ApiError> {
    let id = path_id(&id)?;
    let lines = body.value.lines;
    if lines.is_empty() || lines.len() > LINES_PER_REQUEST_MAX {
        return Err(ApiError::validation("lines", format!("must hold 1 to {LINES_PER_REQUEST_MAX} lines")));
    }
    let fingerprint_input = [id.as_str().as_bytes(), b"\0", &body.raw].concat();
    run_write(&state, &principal, "POST /v1/reservations/reduce", &headers, &fingerprint_input, move |tx, now| {
        let (id, lines) = (id.clone(), lines.clone());
        Box::pin(async move {
            let current = warehouse::reservation::reservation_in_tx(tx, &id, now).await?;
            let holds = matches!(current.status, Status::Active | Status::Confirmed);
            // Every line over what is held is named, before anything changes (a reservation
            // that holds nothing any more is refused as such by `settle_part`).
            let mut asked: std::collections::HashMap<(String, String), i64> = Default::default();
            let mut errors = Vec::new();
            for (i, line) in lines.iter().enumerate() {
                let key = (line.sku.to_string(), line.warehouse.to_string());
                let held: i64 =
                    current.lines.iter().filter(|l| l.sku == key.0 && l.warehouse == key.1).map(|l| l.quantity).sum();
                let total = asked.entry(key).or_default();
                *total += line.quantity.get();
                if holds && *total > held {
                    errors.push(FieldError {
                        field: format!("lines[{i}].quantity"),
                        message: format!("the reservation holds {held} of {} in {}", line.sku, line.warehouse),
                    });
                }
            }
            if !errors.is_empty() {
                return Err(ApiError::validation_many(errors));
            }
            let parts: Vec<warehouse::reservation::Part> = lines
                .iter()
                .map(|l| warehouse::reservation::Part {
                    sku: l.sku.clone(),
                    warehouse: l.warehouse.clone(),
                    quantity: l.quantity.get(),
                })
                .collect();
            let settled =
                warehouse::reservation::settle_part(tx, &id, &parts, warehouse::reservation::Settlement::Release, now)
                    .await?;
            Ok(Answer::json(StatusCode::OK, &settled))
        })
    })
    .await
}
