//! The movement ledger, the event feed and reconciliation.

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{NoQuery, QueryMap};
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use kernel::limits::PAGE_SIZE_MAX;
use kernel::{SkuCode, WarehouseCode};
use serde::Serialize;
use store::outbox::{EventFilter, StoredEvent};
use utoipa::ToSchema;
use warehouse::ledger::{Movement, MovementFilter};
use warehouse::reconcile::Reconciliation;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/movements", get(movements))
        .route("/events", get(events))
        .route("/events/head", get(events_head))
        .route("/event-types", get(event_types))
        .route("/reconciliation", get(reconciliation))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MovementPage {
    pub items: Vec<Movement>,
    pub next: Option<String>,
}

/// Movements, oldest first.
#[utoipa::path(get, path = "/v1/movements", tag = "ledger",
    params(("sku" = Option<String>, Query), ("warehouse" = Option<String>, Query), ("limit" = Option<u32>, Query), ("next" = Option<String>, Query)),
    responses((status = 200, body = MovementPage), (status = 422, body = crate::error::Problem)), security(("bearer" = [])))]
pub async fn movements(State(state): State<AppState>, query: QueryMap) -> Result<Json<MovementPage>, ApiError> {
    let mut query = query.only(&["sku", "warehouse", "limit", "next"]);
    let filter =
        MovementFilter { sku: query.code::<SkuCode>("sku"), warehouse: query.code::<WarehouseCode>("warehouse") };
    let page = query.page();
    let after = query.keep(page.after_seq().map_err(|(f, m)| ApiError::validation(f, m))).unwrap_or(0);
    query.require_item(state.db.reader(), "sku", filter.sku.as_ref()).await?;
    query.require_warehouse(state.db.reader(), "warehouse", filter.warehouse.as_ref()).await?;
    query.finish()?;
    let page = warehouse::ledger::movements_list(state.db.reader(), &filter, after, &page).await?;
    Ok(Json(MovementPage { items: page.items, next: page.next }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventPage {
    pub items: Vec<StoredEvent>,
    /// The `seq` to poll `after=` next while there is more to read; `null` when this page
    /// reached the end.
    pub next: Option<String>,
    /// Every event with `after < seq <= scanned_through` that matches the filters is in this
    /// page: a filtered reader polls `after=` this, not its last item, so as not to scan the
    /// same unmatched events again.
    pub scanned_through: i64,
}

/// Most `seq`s one page of a filtered feed looks at: a rare type costs a bounded scan per
/// request, and `next` says where to go on.
pub const EVENT_SCAN_SEQS: i64 = 10_000;

/// Longest `wait_ms` of a long poll.
pub const EVENT_WAIT_MS_MAX: u64 = 30_000;

/// How often a long poll looks for new events.
const EVENT_POLL_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

/// Parses `type=stock.changed,order.*`: exact names and `prefix.*` families.
fn type_filter(raw: &str, filter: &mut EventFilter) -> Result<(), String> {
    for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, family) = match part.strip_suffix(".*") {
            Some(prefix) => (prefix, true),
            None => (part, false),
        };
        let valid = !name.is_empty()
            && name.len() <= 64
            && name.split('.').all(|seg| {
                !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            });
        if !valid {
            return Err(format!("{part}: must be an event type (stock.changed) or a family (order.*)"));
        }
        if family {
            filter.type_prefixes.push(format!("{name}."));
        } else {
            filter.types.push(name.to_owned());
        }
    }
    if filter.types.is_empty() && filter.type_prefixes.is_empty() {
        return Err("must list at least one event type".into());
    }
    if filter.types.len() + filter.type_prefixes.len() > 50 {
        return Err("must list at most 50 types".into());
    }
    Ok(())
}

/// Events with `seq > after`, in `seq` order, optionally only some types (exact or
/// `prefix.*`) and one aggregate. Polling `after=` the last `scanned_through` seen never misses
/// an event. With `wait_ms`, an empty page waits up to that long for a matching event.
#[utoipa::path(get, path = "/v1/events", tag = "ledger",
    params(("after" = Option<i64>, Query, description = "Only events with a greater `seq`; default 0"),
           ("limit" = Option<u32>, Query, description = "1 to 1000; default 100"),
           ("type" = Option<String>, Query, description = "Comma-separated event types, exact (`stock.changed`) or families (`order.*`)"),
           ("aggregate" = Option<String>, Query, description = "Only events of this aggregate, e.g. `stock:BER-1:SKU`"),
           ("wait_ms" = Option<u64>, Query, description = "0 to 30000: when nothing matches yet, wait up to this long for an event instead of answering an empty page")),
    responses((status = 200, body = EventPage), (status = 422, body = crate::error::Problem)), security(("bearer" = [])))]
pub async fn events(State(state): State<AppState>, query: QueryMap) -> Result<Json<EventPage>, ApiError> {
    let mut query = query.only(&["after", "limit", "type", "aggregate", "wait_ms"]);
    let after = match query.get("after") {
        None => 0,
        Some(raw) => match raw.parse::<i64>().ok().filter(|a| *a >= 0) {
            Some(after) => after,
            None => {
                query.refuse("after", "must be a non-negative integer");
                0
            }
        },
    };
    let limit = match query.get("limit") {
        None => kernel::limits::PAGE_SIZE_DEFAULT,
        Some(raw) => match raw.parse::<u32>().ok().filter(|l| (1..=PAGE_SIZE_MAX).contains(l)) {
            Some(limit) => limit,
            None => {
                query.refuse("limit", format!("must be an integer from 1 to {PAGE_SIZE_MAX}"));
                1
            }
        },
    };
    let mut filter = EventFilter::default();
    if let Some(raw) = query.get("type").map(str::to_owned)
        && let Err(message) = type_filter(&raw, &mut filter)
    {
        query.refuse("type", message);
    }
    if let Some(aggregate) = query.get("aggregate").map(str::to_owned) {
        if aggregate.is_empty() || aggregate.len() > 200 || aggregate.chars().any(char::is_control) {
            query.refuse("aggregate", "must be 1 to 200 characters, as in an event's aggregate");
        } else {
            filter.aggregate = Some(aggregate);
        }
    }
    let wait_ms = match query.get("wait_ms") {
        None => 0,
        Some(raw) => match raw.parse::<u64>().ok().filter(|w| *w <= EVENT_WAIT_MS_MAX) {
            Some(wait) => wait,
            None => {
                query.refuse("wait_ms", format!("must be an integer from 0 to {EVENT_WAIT_MS_MAX}"));
                0
            }
        },
    };
    query.finish()?;

    let pool = state.db.reader();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(wait_ms);
    let mut from = after;
    loop {
        // The head first, then events up to it: an event committed in between is left for the
        // next page instead of being skipped by `scanned_through`.
        let head = store::outbox::events_head(pool).await?;
        let through = head.min(from.saturating_add(EVENT_SCAN_SEQS));
        let items = if through > from {
            store::outbox::events_matching(pool, from, through, &filter, limit).await?
        } else {
            Vec::new()
        };
        let full = items.len() as u32 >= limit;
        let scanned_through = if full { items.last().map_or(through, |e| e.seq) } else { through.max(from) };
        if !items.is_empty() || scanned_through < head || tokio::time::Instant::now() >= deadline {
            let next = if full || scanned_through < head { Some(scanned_through.to_string()) } else { None };
            return Ok(Json(EventPage { items, next, scanned_through }));
        }
        // Nothing yet: look again until the deadline, or until the server stops.
        from = scanned_through;
        tokio::select! {
            _ = tokio::time::sleep(EVENT_POLL_INTERVAL.min(deadline.saturating_duration_since(tokio::time::Instant::now()))) => {}
            _ = state.shutdown.cancelled() => {
                return Ok(Json(EventPage { items, next: None, scanned_through }));
            }
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventHead {
    /// The latest committed `seq`; 0 when there is no event yet.
    #[schema(example = 1042)]
    pub seq: i64,
}

/// The latest committed `seq`: start a reader here to see only what happens from now on.
#[utoipa::path(get, path = "/v1/events/head", tag = "ledger",
    responses((status = 200, body = EventHead), (status = 422, body = crate::error::Problem)), security(("bearer" = [])))]
pub async fn events_head(State(state): State<AppState>, query: QueryMap) -> Result<Json<EventHead>, ApiError> {
    query.only(&[]).finish()?;
    Ok(Json(EventHead { seq: store::outbox::events_head(state.db.reader()).await? }))
}

/// A registered event type: its name, the version of its payload and the payload's JSON
/// Schema (draft 2020-12).
#[derive(Debug, Serialize, ToSchema)]
pub struct EventTypeView {
    #[serde(rename = "type")]
    #[schema(example = "stock.changed")]
    pub event_type: &'static str,
    #[schema(example = 1)]
    pub version: u32,
    pub description: &'static str,
    #[schema(value_type = Object)]
    pub schema: serde_json::Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventTypePage {
    pub items: Vec<EventTypeView>,
    /// Always `null`: every type fits one page.
    pub next: Option<String>,
}

/// Every event type the feed can carry, with its version and JSON Schema.
#[utoipa::path(get, path = "/v1/event-types", tag = "ledger",
    responses((status = 200, body = EventTypePage), (status = 422, body = crate::error::Problem)), security(("bearer" = [])))]
pub async fn event_types(State(state): State<AppState>, query: QueryMap) -> Result<Json<EventTypePage>, ApiError> {
    query.only(&[]).finish()?;
    let items = state
        .event_types
        .types()
        .iter()
        .map(|t| EventTypeView {
            event_type: t.name,
            version: t.version,
            description: t.description,
            schema: t.schema(),
        })
        .collect();
    Ok(Json(EventTypePage { items, next: None }))
}

/// Every stock level against the sum of its movements and reserved against the reservations.
#[utoipa::path(get, path = "/v1/reconciliation", tag = "ledger",
    responses((status = 200, body = Reconciliation)), security(("bearer" = [])))]
pub async fn reconciliation(_query: NoQuery, State(state): State<AppState>) -> Result<Json<Reconciliation>, ApiError> {
    Ok(Json(warehouse::reconcile::reconcile(state.db.reader()).await?))
}
