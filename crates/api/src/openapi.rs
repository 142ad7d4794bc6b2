//! The OpenAPI document (`/openapi.json`) and the docs page (`/docs`).

use crate::AppState;
use crate::routes::{
    alerts, catalog, counts, fulfillment, health, inventory, ledger, locations, orders, reservations, reviews, webhooks,
};
use axum::routing::get;
use axum::{Json, Router};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_swagger_ui::SwaggerUi;

#[derive(OpenApi)]
#[openapi(
    info(title = "Stockroom", description = "Inventory, order and fulfillment backbone. Errors are RFC 9457 problem documents."),
    paths(
        health::health, health::ready, health::metrics_text,
        inventory::item_create, inventory::item_list, inventory::item_get, inventory::item_patch,
        inventory::warehouse_create, inventory::warehouse_list, inventory::warehouse_get, inventory::warehouse_patch,
        inventory::receipt_create, inventory::receipt_list, inventory::receipt_get, inventory::adjustment_create,
        inventory::bulk_adjustments, inventory::transfer_create, inventory::transfer_list, inventory::transfer_get,
        inventory::transfer_receive,
        inventory::stock_one, inventory::stock_batch,
        reservations::reservation_create, reservations::reservation_list, reservations::reservation_get,
        reservations::reservation_extend,
        reservations::reservation_confirm, reservations::reservation_release, reservations::reservation_reduce,
        reservations::reservation_fulfill,
        ledger::movements, ledger::events, ledger::events_head, ledger::event_types, ledger::reconciliation,
        alerts::rules, alerts::rule_default, alerts::rule_item, alerts::rule_item_warehouse, alerts::alerts, alerts::acknowledge,
        counts::count_open, counts::count_list, counts::count_get, counts::count_submit, counts::count_approve, counts::count_cancel,
        locations::bin_create, locations::bin_list, locations::bin_move_create, locations::lots, locations::lot_quarantine, locations::lot_release,
        locations::quarantine_create, locations::quarantine_list, locations::quarantine_release, locations::quarantine_scrap,
        locations::bins_of_sku,
        catalog::channel_create, catalog::channel_list, catalog::channel_get, catalog::channel_patch,
        catalog::shipping_rates_put, catalog::shipping_rates_get,
        catalog::product_create, catalog::product_list, catalog::product_get, catalog::product_patch,
        catalog::price_put, catalog::price_get, catalog::price_history, catalog::availability, catalog::availability_status, catalog::search,
        orders::cart_create, orders::cart_get, orders::cart_line_add, orders::cart_line_patch, orders::cart_line_delete,
        orders::cart_preview, orders::cart_checkout, orders::sourcing_plan,
        orders::order_list, orders::order_get, orders::payment_report, orders::order_cancel,
        orders::promotion_create, orders::promotion_list, orders::promotion_get, orders::promotion_patch,
        orders::saga_list, orders::saga_get,
        fulfillment::fulfillment_list, fulfillment::fulfillment_get, fulfillment::fulfillment_ship, fulfillment::fulfillment_deliver,
        fulfillment::fulfillment_pack, fulfillment::fulfillment_qc, fulfillment::picklist_create, fulfillment::picklist_get, fulfillment::picklist_complete,
        fulfillment::return_create, fulfillment::return_get, fulfillment::return_receive, fulfillment::settings_put, fulfillment::settings_get,
        reviews::review_create, reviews::review_list,
        webhooks::webhook_create, webhooks::webhook_list, webhooks::webhook_get, webhooks::webhook_delete,
        webhooks::webhook_rotate_secret, webhooks::webhook_replay, webhooks::delivery_list, webhooks::delivery_retry,
    ),
    components(schemas(crate::error::Problem, crate::error::FieldError, warehouse::ShortLine)),
    modifiers(&BearerAuth, &CommonAnswers),
    tags(
        (name = "items"), (name = "warehouses"), (name = "stock"), (name = "reservations"),
        (name = "ledger"), (name = "alerts"), (name = "counts"), (name = "channels"), (name = "catalog"), (name = "carts"), (name = "orders"), (name = "promotions"), (name = "fulfillment"), (name = "reviews"), (name = "webhooks"), (name = "operations")
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// What every operation can answer besides its own responses, and the response details OpenAPI
/// 3.1 requires: a `description` on every response (the status's reason phrase where a route
/// gave none), problem documents under `application/problem+json` (as they are served), and the
/// answers the middleware gives: 401 and 403 on secured routes, 400 (malformed JSON) and 413
/// (body too large) where a route takes a body, 503 (a dependency down, the database busy)
/// everywhere under `/v1`.
struct CommonAnswers;

const PROBLEM_TYPE: &str = "application/problem+json";

fn problem_response(description: &str) -> utoipa::openapi::RefOr<utoipa::openapi::Response> {
    let content =
        utoipa::openapi::ContentBuilder::new().schema(Some(utoipa::openapi::Ref::from_schema_name("Problem"))).build();
    utoipa::openapi::ResponseBuilder::new().description(description).content(PROBLEM_TYPE, content).build().into()
}

impl Modify for CommonAnswers {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let secured_by_default = openapi.security.as_ref().is_some_and(|s| !s.is_empty());
        for (path, item) in openapi.paths.paths.iter_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
                &mut item.options,
                &mut item.head,
                &mut item.trace,
            ];
            for operation in operations.into_iter().flatten() {
                for parameter in operation.parameters.iter_mut().flatten() {
                    if let utoipa::openapi::RefOr::T(parameter) = parameter
                        && parameter.description.as_deref().is_none_or(str::is_empty)
                    {
                        parameter.description = Some(parameter_description(path, parameter));
                    }
                }
                let secured = operation.security.as_ref().map_or(secured_by_default, |s| !s.is_empty());
                let takes_body = operation.request_body.is_some();
                let responses = &mut operation.responses.responses;
                for (status, response) in responses.iter_mut() {
                    let utoipa::openapi::RefOr::T(response) = response else { continue };
                    if response.description.is_empty() {
                        response.description = status
                            .parse::<u16>()
                            .ok()
                            .and_then(|s| axum::http::StatusCode::from_u16(s).ok())
                            .and_then(|s| s.canonical_reason())
                            .unwrap_or("Answer")
                            .to_owned();
                    }
                    if (status.starts_with('4') || status.starts_with('5'))
                        && let Some(content) = response.content.shift_remove("application/json")
                    {
                        response.content.insert(PROBLEM_TYPE.to_owned(), content);
                    }
                }
                let mut add = |status: &str, description: &str| {
                    responses.entry(status.to_owned()).or_insert_with(|| problem_response(description));
                };
                if path.starts_with("/v1") {
                    add(
                        "503",
                        "A dependency is down or the database is busy; nothing was changed, retry (`unavailable`)",
                    );
                }
                if secured {
                    add("401", "No key, or an unknown one (`unauthorized`); carries `WWW-Authenticate: Bearer`");
                    add("403", "The key lacks the route's scope (`forbidden`)");
                }
                if takes_body {
                    add("400", "The body is not JSON, or not sent as `application/json` (`malformed_request`)");
                    add("413", "The body is larger than the limit (`payload_too_large`)");
                }
            }
        }
    }
}

/// A description for a parameter the route left undescribed, from its name and place: a path
/// parameter names the resource of the collection before it (`/v1/warehouses/{code}`: "The
/// warehouse's code"), query filters and paging say what they do.
fn parameter_description(path: &str, parameter: &utoipa::openapi::path::Parameter) -> String {
    use utoipa::openapi::path::ParameterIn;
    let name = parameter.name.as_str();
    match parameter.parameter_in {
        ParameterIn::Path => {
            let placeholder = format!("{{{name}}}");
            let segments: Vec<&str> = path.split('/').collect();
            let collection = segments
                .iter()
                .position(|s| *s == placeholder)
                .and_then(|i| i.checked_sub(1))
                .map(|i| segments[i])
                .unwrap_or("resource");
            let resource = collection.strip_suffix('s').unwrap_or(collection);
            if resource == name { format!("The {name}") } else { format!("The {resource}'s {name}") }
        }
        ParameterIn::Header if name.eq_ignore_ascii_case("idempotency-key") => {
            "Makes the write safe to retry: a retry with the same key and body answers what the first did \
             (with `Idempotent-Replayed: true`); the same key with another body is 422 \
             `idempotency_key_reused`"
                .to_owned()
        }
        _ => match name {
            "next" => "The cursor a previous page answered as `next`; absent for the first page".to_owned(),
            "limit" => "Items per page, 1 to 1000 (default 100)".to_owned(),
            "status" => "Only those in this status".to_owned(),
            "warehouse" => "Only those of this warehouse (its code)".to_owned(),
            "order" => "Only those of this order (its id)".to_owned(),
            "sku" => "Only those of this SKU".to_owned(),
            "customer" => "Only those of this customer".to_owned(),
            "channel" => "The channel (its code)".to_owned(),
            "kind" => "Only those of this kind".to_owned(),
            other => format!("The `{other}` parameter"),
        },
    }
}

pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/openapi.json", get(|| async { Json(document()) }))
        .merge(SwaggerUi::new("/docs").url("/docs/openapi.json", document()))
}
