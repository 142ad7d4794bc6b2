//! The review context: one review per customer and product, `verified` only when the customer
//! has a delivered order line of one of the product's variants that was not fully returned.
//! The [`Verification`] subscriber recomputes a customer's reviews when one of their orders is
//! delivered or a return of theirs is received, in the transaction that moves its offset.
//!
//! It reads products only through `catalog`'s public API and orders only through `order`'s.
//! Its refusals take the order context's error type, rendered the same way.

use kernel::{Clock, ProductHandle, Timestamp};
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;
use store::outbox::StoredEvent;
use store::subscriber::{Subscriber, Subscription, subscription};
use store::{Db, Tx};
use warehouse::FieldIssue;

pub use order::OrderError as ReviewError;
pub type Result<T> = std::result::Result<T, ReviewError>;

pub const RATING_MIN: i64 = 1;
pub const RATING_MAX: i64 = 5;

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Review {
    pub id: String,
    pub product: String,
    pub customer: String,
    pub rating: i64,
    pub title: String,
    pub body: String,
    /// The customer has a delivered order line of one of the product's variants that was not
    /// fully returned.
    pub verified: bool,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Summary {
    pub count: i64,
    /// Of all ratings, to two decimals; `null` without reviews.
    pub average: Option<f64>,
    pub verified_count: i64,
    pub verified_average: Option<f64>,
}

#[derive(Debug, Clone)]
pub struct NewReview {
    pub customer: String,
    pub rating: i64,
    pub title: String,
    pub body: String,
}

#[derive(sqlx::FromRow)]
struct Row {
    id: String,
    product: String,
    customer: String,
    rating: i64,
    title: String,
    body: String,
    verified: i64,
    created_at: String,
    updated_at: String,
}

impl From<Row> for Review {
    fn from(r: Row) -> Self {
        Review {
            id: r.id,
            product: r.product,
            customer: r.customer,
            rating: r.rating,
            title: r.title,
            body: r.body,
            verified: r.verified == 1,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

const COLUMNS: &str = "id, product, customer, rating, title, body, verified, created_at, updated_at";

async fn variant_skus(conn: &mut sqlx::AnyConnection, handle: &ProductHandle) -> Result<Vec<String>> {
    let product = catalog::product::product_in(conn, handle).await?;
    Ok(product.variants.into_iter().map(|v| v.sku).collect())
}

/// Writes `customer`'s review of the product. A rating outside 1–5 is `Invalid`; an unknown
/// product `NotFound`; a second review by the same customer `Conflict`.
pub async fn review_create(tx: &mut Tx, handle: &ProductHandle, new: NewReview, now: Timestamp) -> Result<Review> {
    if !(RATING_MIN..=RATING_MAX).contains(&new.rating) {
        return Err(ReviewError::invalid_fields(vec![FieldIssue::new("rating", "must be from 1 to 5")]));
    }
    let skus = variant_skus(tx, handle).await?;
    let verified = order::returns::has_delivered_unreturned(tx, &new.customer, &skus).await?;
    let review = Review {
        id: format!("rev_{}", uuid::Uuid::now_v7().simple()),
        product: handle.as_str().to_owned(),
        customer: new.customer,
        rating: new.rating,
        title: new.title,
        body: new.body,
        verified,
        created_at: now.to_rfc3339(),
        updated_at: now.to_rfc3339(),
    };
    let inserted = sqlx::query(
        "INSERT INTO reviews (id, product, customer, rating, title, body, verified, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) ON CONFLICT (product, customer) DO NOTHING",
    )
    .bind(review.id.clone())
    .bind(review.product.clone())
    .bind(review.customer.clone())
    .bind(review.rating)
    .bind(review.title.clone())
    .bind(review.body.clone())
    .bind(i64::from(review.verified))
    .bind(review.created_at.clone())
    .execute(&mut **tx)
    .await
    .map_err(store::StoreError::from)?;
    if inserted.rows_affected() == 0 {
        return Err(ReviewError::conflict(format!(
            "customer {} has reviewed {} already: one review per customer and product",
            review.customer, review.product
        )));
    }
    let verified = if review.verified { "true" } else { "false" };
    metrics::counter!("stockroom_reviews_total", "verified" => verified).increment(1);
    Ok(review)
}

/// The product's reviews, oldest first after the id `after`, and the summary of all of them.
/// An unknown product is `NotFound`.
pub async fn reviews_of(
    pool: &sqlx::AnyPool,
    handle: &ProductHandle,
    after: Option<&str>,
    limit: u32,
) -> Result<(Vec<Review>, Summary)> {
    let mut conn = pool.acquire().await.map_err(store::StoreError::from)?;
    catalog::product::product_in(&mut conn, handle).await?;
    let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM reviews WHERE product = $1 AND id > $2 ORDER BY id LIMIT $3"
    )))
    .bind(handle.as_str().to_owned())
    .bind(after.unwrap_or("").to_owned())
    .bind(i64::from(limit))
    .fetch_all(&mut *conn)
    .await
    .map_err(store::StoreError::from)?;
    // Sums, not averages, from the database: both backends add integers alike.
    let (count, sum, verified_count, verified_sum): (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT CAST(COUNT(*) AS BIGINT), CAST(COALESCE(SUM(rating), 0) AS BIGINT), \
         CAST(COALESCE(SUM(verified), 0) AS BIGINT), CAST(COALESCE(SUM(rating * verified), 0) AS BIGINT) \
         FROM reviews WHERE product = $1",
    )
    .bind(handle.as_str().to_owned())
    .fetch_one(&mut *conn)
    .await
    .map_err(store::StoreError::from)?;
    let average = |sum: i64, count: i64| (count > 0).then(|| (sum as f64 / count as f64 * 100.0).round() / 100.0);
    let summary = Summary {
        count,
        average: average(sum, count),
        verified_count,
        verified_average: average(verified_sum, verified_count),
    };
    Ok((rows.into_iter().map(Review::from).collect(), summary))
}

/// Recomputes `verified` on every review of `customer`.
pub async fn reverify_customer(tx: &mut Tx, customer: &str, now: Timestamp) -> Result<usize> {
    let reviews: Vec<(String, String, i64)> =
        sqlx::query_as("SELECT id, product, verified FROM reviews WHERE customer = $1 ORDER BY id")
            .bind(customer.to_owned())
            .fetch_all(&mut **tx)
            .await
            .map_err(store::StoreError::from)?;
    let mut changed = 0;
    for (id, product, was) in reviews {
        let Ok(handle) = ProductHandle::parse(&product) else {
            return Err(store::StoreError::Corrupt(format!("review {id}: product {product}")).into());
        };
        let skus = match variant_skus(tx, &handle).await {
            Ok(skus) => skus,
            // A product removed since: nothing of it can be a verified purchase.
            Err(ReviewError::Catalog(catalog::CatalogError::NotFound { .. })) => Vec::new(),
            Err(e) => return Err(e),
        };
        let verified = i64::from(order::returns::has_delivered_unreturned(tx, customer, &skus).await?);
        if verified != was {
            sqlx::query("UPDATE reviews SET verified = $2, updated_at = $3 WHERE id = $1")
                .bind(id)
                .bind(verified)
                .bind(now.to_rfc3339())
                .execute(&mut **tx)
                .await
                .map_err(store::StoreError::from)?;
            changed += 1;
        }
    }
    Ok(changed)
}

/// The subscriber of `order.delivered` and `return.received`. Its offset is
/// `review-verification`.
#[derive(Debug, Default, Clone, Copy)]
pub struct Verification;

impl Subscriber for Verification {
    type Error = ReviewError;

    fn name(&self) -> &'static str {
        "review-verification"
    }

    fn event_types(&self) -> &'static [&'static str] {
        &[
            <order::events::OrderDelivered as kernel::Event>::TYPE,
            <fulfillment::events::ReturnReceived as kernel::Event>::TYPE,
        ]
    }

    fn handle<'a>(
        &'a self,
        tx: &'a mut Tx,
        events: &'a [StoredEvent],
        now: Timestamp,
    ) -> impl std::future::Future<Output = Result<()>> + Send + 'a {
        reverify(tx, events, now)
    }
}

async fn reverify(tx: &mut Tx, events: &[StoredEvent], now: Timestamp) -> Result<()> {
    let mut customers = std::collections::BTreeSet::new();
    for event in events {
        let Some(order_id) = event.data["order"].as_str() else {
            return Err(
                store::StoreError::Corrupt(format!("event {} ({}) lacks order", event.seq, event.event_type)).into()
            );
        };
        let order = order::record::order_in(tx, order_id, false).await?;
        customers.extend(order.customer);
    }
    for customer in customers {
        reverify_customer(tx, &customer, now).await?;
    }
    Ok(())
}

/// The context's subscribers: the verification of reviews.
pub fn subscriptions(db: &Db, clock: &Arc<dyn Clock>, interval: Duration) -> Vec<Subscription> {
    vec![subscription(db.clone(), clock.clone(), Verification, interval, kernel::limits::OUTBOX_BATCH_MAX)]
}
