//! Product reviews: written by customers, `verified` from their delivered, not fully returned
//! order lines.

use crate::AppState;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::extract::{ApiJson, NoQuery, QueryMap, check_text, finish, problem};
use crate::idempotency::{Answer, run_write};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::post;
use axum::{Extension, Json, Router};
use kernel::ProductHandle;
use review::{NewReview, Review, Summary};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub fn routes() -> Router<AppState> {
    Router::new().route("/products/{handle}/reviews", post(review_create).get(review_list))
}

fn path_handle(raw: &str) -> Result<ProductHandle, ApiError> {
    ProductHandle::parse(raw).map_err(|_| ApiError::not_found(format!("product {raw} does not exist")))
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"customer": "c-1", "rating": 5, "title": "Soft", "body": "Fits well."}))]
pub struct CreateReview {
    /// 1 to 512 characters.
    pub customer: String,
    /// 1 to 5.
    pub rating: i64,
    /// 1 to 512 characters.
    pub title: String,
    /// Up to 512 characters; may be empty.
    #[serde(default)]
    pub body: String,
}

/// Writes a customer's review of a product: `verified` only if the customer has a delivered
/// order line of one of its variants that was not fully returned. One per customer and product.
#[utoipa::path(post, path = "/v1/products/{handle}/reviews", tag = "reviews", params(("handle" = String, Path)),
    request_body = CreateReview,
    responses((status = 201, body = Review, description = "The review"),
              (status = 404, body = crate::error::Problem, description = "No such product"),
              (status = 409, body = crate::error::Problem, description = "The customer has reviewed it already (`conflict`)"),
              (status = 422, body = crate::error::Problem, description = "Bad fields, e.g. a rating outside 1 to 5")),
    security(("bearer" = [])))]
pub async fn review_create(
    State(state): State<AppState>,
    _query: NoQuery,
    Extension(principal): Extension<Principal>,
    Path(handle): Path<String>,
    headers: HeaderMap,
    body: ApiJson<CreateReview>,
) -> Result<Response, ApiError> {
    let product = path_handle(&handle)?;
    let req = body.value;
    let mut errors = Vec::new();
    check_text("customer", &req.customer, true, &mut errors);
    if !(review::RATING_MIN..=review::RATING_MAX).contains(&req.rating) {
        problem(&mut errors, "rating", "must be from 1 to 5");
    }
    check_text("title", &req.title, true, &mut errors);
    check_text("body", &req.body, false, &mut errors);
    finish(errors)?;
    let key = [handle.as_bytes(), b"\0", &body.raw].concat();
    run_write(&state, &principal, "POST /v1/products/{handle}/reviews", &headers, &key, move |tx, now| {
        let (product, req) = (product.clone(), req.clone());
        Box::pin(async move {
            let new = NewReview { customer: req.customer, rating: req.rating, title: req.title, body: req.body };
            let review = review::review_create(tx, &product, new, now).await?;
            Ok(Answer::json(StatusCode::CREATED, &review))
        })
    })
    .await
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReviewPage {
    pub items: Vec<Review>,
    /// Of every review of the product, not only this page's.
    pub summary: Summary,
    pub next: Option<String>,
}

/// A product's reviews, oldest first, with the summary of all of them.
#[utoipa::path(get, path = "/v1/products/{handle}/reviews", tag = "reviews",
    params(("handle" = String, Path), ("limit" = Option<u32>, Query, description = "1 to 1000 (default 100)"),
           ("next" = Option<String>, Query)),
    responses((status = 200, body = ReviewPage), (status = 404, body = crate::error::Problem),
              (status = 422, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn review_list(
    State(state): State<AppState>,
    Path(handle): Path<String>,
    query: QueryMap,
) -> Result<Json<ReviewPage>, ApiError> {
    let product = path_handle(&handle)?;
    let mut query = query.only(&["limit", "next"]);
    let page = query.page();
    query.finish()?;
    let (rows, summary) = review::reviews_of(state.db.reader(), &product, page.after.as_deref(), page.limit).await?;
    let page = kernel::Page::from_rows(rows, page.limit, |r| r.id.clone());
    Ok(Json(ReviewPage { items: page.items, summary, next: page.next }))
}
