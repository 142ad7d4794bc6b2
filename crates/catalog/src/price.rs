//! Prices: one per SKU and channel, in the channel's currency, with every change kept in
//! `price_history` and announced by `price.changed`.

use crate::events::PriceChanged;
use crate::{CatalogError, Result};
use kernel::{ChannelCode, Currency, NewEvent, SkuCode, Timestamp};
use serde::Serialize;
use sqlx::AnyPool;
use store::Tx;

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Price {
    pub sku: String,
    pub channel: String,
    pub currency: String,
    pub amount: String,
    /// The "was" price shown struck through; `null` when there is none.
    pub compare_at: Option<String>,
    pub updated_at: String,
}

/// A price as given, in minor units (the API parses the decimal strings in the channel's
/// currency, which it reads first).
#[derive(Debug, Clone)]
pub struct NewPrice {
    pub sku: SkuCode,
    pub channel: ChannelCode,
    pub amount_minor: i64,
    pub compare_at_minor: Option<i64>,
}

fn view(sku: &str, channel: &str, currency: &Currency, amount: i64, compare_at: Option<i64>, at: String) -> Price {
    Price {
        sku: sku.to_owned(),
        channel: channel.to_owned(),
        currency: currency.to_string(),
        amount: currency.format_amount(amount),
        compare_at: compare_at.map(|c| currency.format_amount(c)),
        updated_at: at,
    }
}

/// Sets the price of a SKU in a channel. The SKU must be a variant of a product (a price for
/// something the channel cannot show is refused, naming `sku`).
pub async fn price_set(tx: &mut Tx, new: NewPrice, currency: &Currency, now: Timestamp) -> Result<Price> {
    let sku = new.sku.as_str().to_owned();
    let channel = new.channel.as_str().to_owned();
    let is_variant: Option<String> = sqlx::query_scalar("SELECT product FROM product_variants WHERE sku = $1")
        .bind(sku.clone())
        .fetch_optional(&mut **tx)
        .await?;
    if is_variant.is_none() {
        return Err(CatalogError::invalid(
            "sku",
            format!("{sku} is not a variant of any product: create the product first"),
        ));
    }
    let previous: Option<i64> = sqlx::query_scalar("SELECT amount_minor FROM prices WHERE sku = $1 AND channel = $2")
        .bind(sku.clone())
        .bind(channel.clone())
        .fetch_optional(&mut **tx)
        .await?;
    let at = now.to_rfc3339();
    sqlx::query(
        "INSERT INTO prices (sku, channel, currency, amount_minor, compare_at_minor, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (sku, channel) DO UPDATE SET currency = excluded.currency, \
         amount_minor = excluded.amount_minor, compare_at_minor = excluded.compare_at_minor, updated_at = excluded.updated_at",
    )
    .bind(sku.clone())
    .bind(channel.clone())
    .bind(currency.to_string())
    .bind(new.amount_minor)
    .bind(new.compare_at_minor)
    .bind(at.clone())
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "INSERT INTO price_history (sku, channel, currency, amount_minor, compare_at_minor, at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(sku.clone())
    .bind(channel.clone())
    .bind(currency.to_string())
    .bind(new.amount_minor)
    .bind(new.compare_at_minor)
    .bind(at.clone())
    .execute(&mut **tx)
    .await?;
    let event = PriceChanged {
        sku: sku.clone(),
        channel: channel.clone(),
        currency: currency.to_string(),
        amount_minor: new.amount_minor,
        compare_at_minor: new.compare_at_minor,
        previous_amount_minor: previous,
    };
    store::outbox::append(tx, &[NewEvent::of(format!("price:{channel}:{sku}"), &event)], now).await?;
    Ok(view(&sku, &channel, currency, new.amount_minor, new.compare_at_minor, at))
}

type PriceRow = (String, String, String, i64, Option<i64>, String);
type HistoryRow = (i64, String, String, String, i64, Option<i64>, String);

fn from_row((sku, channel, currency, amount, compare_at, at): PriceRow) -> Result<Price> {
    let currency =
        Currency::parse(&currency).map_err(|_| store::StoreError::Corrupt(format!("price currency {currency}")))?;
    Ok(view(&sku, &channel, &currency, amount, compare_at, at))
}

/// A SKU's prices in every channel that has one.
pub async fn prices_of(pool: &AnyPool, sku: &SkuCode) -> Result<Vec<Price>> {
    let rows: Vec<PriceRow> = sqlx::query_as(
        "SELECT sku, channel, currency, amount_minor, compare_at_minor, updated_at FROM prices WHERE sku = $1 ORDER BY channel",
    )
    .bind(sku.as_str().to_owned())
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(from_row).collect()
}

/// A SKU's price changes, oldest first, optionally in one channel; paged by history id.
pub async fn price_history(
    pool: &AnyPool,
    sku: &SkuCode,
    channel: Option<&ChannelCode>,
    after: i64,
    limit: u32,
) -> Result<Vec<(i64, Price)>> {
    let rows: Vec<HistoryRow> = sqlx::query_as(
        "SELECT id, sku, channel, currency, amount_minor, compare_at_minor, at FROM price_history \
         WHERE sku = $1 AND ($2 IS NULL OR channel = $2) AND id > $3 ORDER BY id LIMIT $4",
    )
    .bind(sku.as_str().to_owned())
    .bind(channel.map(|c| c.as_str().to_owned()))
    .bind(after)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|(id, sku, channel, currency, amount, compare_at, at)| {
            Ok((id, from_row((sku, channel, currency, amount, compare_at, at))?))
        })
        .collect()
}

/// What a channel sells a SKU as: its product, category, backorder rule and price there.
#[derive(Debug, Clone, PartialEq)]
pub struct Offer {
    pub sku: String,
    pub product: String,
    pub category: Option<String>,
    pub backorder: bool,
    /// `None`: the SKU is a variant but has no price in the channel.
    pub price_minor: Option<i64>,
}

/// The offers of those of `skus` that are variants of a product, in `channel`; one query on
/// the caller's connection (so an order can read them inside its own transaction).
pub async fn offers_in(
    conn: &mut sqlx::AnyConnection,
    channel: &ChannelCode,
    skus: &[String],
) -> Result<std::collections::HashMap<String, Offer>> {
    if skus.is_empty() {
        return Ok(Default::default());
    }
    let sql = format!(
        "SELECT v.sku, v.product, p.category, v.backorder, pr.amount_minor FROM product_variants v \
         JOIN products p ON p.handle = v.product \
         LEFT JOIN prices pr ON pr.sku = v.sku AND pr.channel = $1 \
         WHERE v.sku IN ({})",
        store::sql::list_placeholders(skus.len(), 2)
    );
    let mut query = sqlx::query_as::<_, (String, String, Option<String>, i64, Option<i64>)>(sqlx::AssertSqlSafe(sql))
        .bind(channel.as_str().to_owned());
    for sku in skus {
        query = query.bind(sku.clone());
    }
    Ok(query
        .fetch_all(conn)
        .await?
        .into_iter()
        .map(|(sku, product, category, backorder, price_minor)| {
            (sku.clone(), Offer { sku, product, category, backorder: backorder == 1, price_minor })
        })
        .collect())
}
