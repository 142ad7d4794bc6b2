//! Search: full-text over products' name, category, description and attributes, with
//! relevance ranking, filters (category, in stock, price range), sorting and pagination.
//!
//! Two parts:
//! - In the database, one document per product and one offer per channel and product (lowest
//!   price, in stock or not), kept by the `search-index` subscriber, so an index change and the
//!   subscriber's offset commit together: nothing is indexed twice or skipped, every replica
//!   reads the same rows, and each row says which run wrote it (`indexed_seq`). At start an
//!   empty set of rows over a non-empty catalog is rebuilt from the tables.
//! - In each process, a tantivy index over those rows ([`text::SearchIndex`]) that ranks, filters
//!   and sorts. It reads only rows written after what it has applied, in one snapshot with the
//!   subscriber's offset, so a page's `as_of_seq` is exact. The databases' own full-text
//!   engines ranked every match of a common word (seconds over 100k products); tantivy keeps
//!   only the top of the page.

pub mod text;

pub use text::SearchIndex;

use crate::{CatalogError, Result};
use kernel::{ChannelCode, Timestamp};
use serde::Serialize;
use serde_json::Value;
use sqlx::Row;
use std::collections::{BTreeSet, HashMap};
use store::outbox::StoredEvent;
use store::subscriber::Subscriber;
use store::{Db, Tx};

/// The subscriber's name (its offset is the index's `as_of_seq`).
pub const SEARCH_SUBSCRIBER: &str = "search-index";

/// Furthest a page may start (offset pagination under relevance order).
pub const SEARCH_OFFSET_MAX: usize = 10_000;

/// Longest query text, in characters.
pub const QUERY_CHARS_MAX: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sort {
    Relevance,
    PriceAsc,
    PriceDesc,
}

impl Sort {
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "relevance" => Some(Sort::Relevance),
            "price_asc" => Some(Sort::PriceAsc),
            "price_desc" => Some(Sort::PriceDesc),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct SearchQuery {
    pub channel: ChannelCode,
    /// Free text; `None` lists everything that matches the filters.
    pub text: Option<String>,
    pub category: Option<String>,
    pub in_stock: bool,
    pub min_price_minor: Option<i64>,
    pub max_price_minor: Option<i64>,
    pub sort: Sort,
    pub offset: usize,
    pub limit: u32,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, utoipa::ToSchema)]
pub struct SearchVariant {
    pub sku: String,
    #[schema(value_type = Object)]
    pub options: serde_json::Map<String, Value>,
}

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct SearchHit {
    pub handle: String,
    pub name: String,
    pub category: Option<String>,
    /// The lowest variant price in the channel; `null` when no variant has one.
    pub price_from: Option<String>,
    pub in_stock: bool,
    pub variants: Vec<SearchVariant>,
}

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct SearchPage {
    pub items: Vec<SearchHit>,
    pub next: Option<String>,
    /// The last outbox `seq` the index has applied.
    pub as_of_seq: i64,
}

/// The words of `text` (letters and digits, lower case), at most 16.
pub(crate) fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).take(16).map(str::to_lowercase).collect()
}

/// The variants of `handles`, in their products' order, read in `tx`'s snapshot.
pub(crate) async fn variants_in(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    handles: &[String],
) -> Result<HashMap<String, Vec<SearchVariant>>> {
    let mut map: HashMap<String, Vec<SearchVariant>> = HashMap::new();
    for chunk in handles.chunks(kernel::limits::INSERT_ROWS_MAX) {
        let sql = format!(
            "SELECT product, sku, options FROM product_variants WHERE product IN ({}) ORDER BY product, position",
            store::sql::list_placeholders(chunk.len(), 1)
        );
        let mut query = sqlx::query_as::<_, (String, String, String)>(sqlx::AssertSqlSafe(sql));
        for handle in chunk {
            query = query.bind(handle.clone());
        }
        for (product, sku, options) in query.fetch_all(&mut **tx).await? {
            let options = match serde_json::from_str(&options) {
                Ok(Value::Object(map)) => map,
                _ => return Err(store::StoreError::Corrupt(format!("variant {sku} options")).into()),
            };
            map.entry(product).or_default().push(SearchVariant { sku, options });
        }
    }
    Ok(map)
}

/// The last `seq` the subscriber has applied to the rows.
pub(crate) async fn rows_seq(tx: &mut sqlx::Transaction<'static, sqlx::Any>) -> Result<i64> {
    let seq: Option<i64> = sqlx::query_scalar("SELECT last_seq FROM worker_offsets WHERE worker = $1")
        .bind(SEARCH_SUBSCRIBER)
        .fetch_optional(&mut **tx)
        .await?;
    Ok(seq.unwrap_or(0))
}

/// The attribute values of a product as words for the index.
fn attribute_words(attributes: &str) -> String {
    match serde_json::from_str::<Value>(attributes) {
        Ok(Value::Object(map)) => map
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => format!("{k} {s}"),
                other => format!("{k} {other}"),
            })
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// Re-indexes `handles` (their documents and every channel's offer) from the catalog's tables
/// and the warehouse's sellable stock, in `tx`, marking them written by the run that applies
/// events up to `seq`. A handle that no longer names a product is removed.
pub async fn reindex(tx: &mut Tx, handles: &[String], seq: i64, now: Timestamp) -> Result<()> {
    if handles.is_empty() {
        return Ok(());
    }
    for chunk in handles.chunks(kernel::limits::INSERT_ROWS_MAX) {
        let list = store::sql::list_placeholders(chunk.len(), 1);
        for table in ["search_offers", "search_products"] {
            let mut delete = store::sql::dynamic(format!("DELETE FROM {table} WHERE handle IN ({list})"));
            for h in chunk {
                delete = delete.bind(h.clone());
            }
            delete.execute(&mut **tx).await?;
        }
        let mut select = store::sql::dynamic(format!(
            "SELECT handle, name, description, category, attributes FROM products WHERE handle IN ({list})"
        ));
        for h in chunk {
            select = select.bind(h.clone());
        }
        let products = select.fetch_all(&mut **tx).await?;
        if products.is_empty() {
            continue;
        }
        let mut documents = store::sql::Values::new(tx, 6);
        let mut found = Vec::with_capacity(products.len());
        for row in &products {
            let handle: String = row.try_get(0)?;
            let attributes: String = row.try_get(4)?;
            let description: Option<String> = row.try_get(2)?;
            let category: Option<String> = row.try_get(3)?;
            documents
                .row()
                .text(handle.as_str())
                .text(row.try_get::<String, _>(1)?)
                .opt_text(description)
                .opt_text(category)
                .text(attribute_words(&attributes))
                .int(seq);
            found.push(handle);
        }
        let documents_sql = "INSERT INTO search_products (handle, name, description, category, attributes_text, \
             indexed_seq) VALUES {values}";
        documents.query(documents_sql).execute(&mut **tx).await?;
        offers(tx, &found, now).await?;
    }
    Ok(())
}

/// Writes every channel's offer of `handles`: the lowest price and whether any variant can be
/// bought (sellable stock in the channel's warehouses, or backorder).
async fn offers(tx: &mut Tx, handles: &[String], now: Timestamp) -> Result<()> {
    let list = store::sql::list_placeholders(handles.len(), 1);
    let mut select =
        store::sql::dynamic(format!("SELECT product, sku, backorder FROM product_variants WHERE product IN ({list})"));
    for h in handles {
        select = select.bind(h.clone());
    }
    let mut variants: Vec<(String, String, bool)> = Vec::new();
    for row in select.fetch_all(&mut **tx).await? {
        variants.push((row.try_get(0)?, row.try_get(1)?, row.try_get::<i64, _>(2)? != 0));
    }
    let skus: Vec<String> = variants.iter().map(|(_, s, _)| s.clone()).collect();
    let channels: Vec<(String, Vec<String>)> = {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT channel, warehouse FROM channel_warehouses ORDER BY channel, position")
                .fetch_all(&mut **tx)
                .await?;
        let mut grouped: Vec<(String, Vec<String>)> = Vec::new();
        for (channel, warehouse) in rows {
            match grouped.last_mut() {
                Some((c, ws)) if *c == channel => ws.push(warehouse),
                _ => grouped.push((channel, vec![warehouse])),
            }
        }
        grouped
    };
    for (channel, warehouses) in channels {
        let sellable = if skus.is_empty() {
            HashMap::new()
        } else {
            warehouse::stock::sellable_in(tx, &skus, &warehouses, now).await?
        };
        let mut prices: HashMap<String, i64> = HashMap::new();
        if !skus.is_empty() {
            let sql = format!(
                "SELECT sku, amount_minor FROM prices WHERE channel = $1 AND sku IN ({})",
                store::sql::list_placeholders(skus.len(), 2)
            );
            let mut query = sqlx::query_as::<_, (String, i64)>(sqlx::AssertSqlSafe(sql)).bind(channel.clone());
            for sku in &skus {
                query = query.bind(sku.clone());
            }
            prices = query.fetch_all(&mut **tx).await?.into_iter().collect();
        }
        let mut values = store::sql::Values::new(tx, 4);
        for handle in handles {
            let of_product = variants.iter().filter(|(p, _, _)| p == handle);
            let price_from = of_product.clone().filter_map(|(_, s, _)| prices.get(s).copied()).min();
            let in_stock =
                of_product.clone().any(|(_, s, backorder)| *backorder || sellable.get(s).is_some_and(|u| *u > 0));
            values.row().text(channel.as_str()).text(handle.as_str()).opt_int(price_from).flag(in_stock);
        }
        values
            .query("INSERT INTO search_offers (channel, handle, price_from_minor, in_stock) VALUES {values}")
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Rebuilds the whole index from the tables when it is empty but the catalog is not (a new
/// database, or one restored without it), moving the subscriber's offset to the head in the
/// same transaction. Returns how many products it indexed.
pub async fn rebuild_if_missing(db: &Db, now: Timestamp) -> Result<usize> {
    let indexed: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM search_products").fetch_one(db.reader()).await?;
    let products: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM products").fetch_one(db.reader()).await?;
    if indexed > 0 || products == 0 {
        return Ok(0);
    }
    let mut tx = db.begin().await?;
    let head: i64 = sqlx::query_scalar("SELECT last_seq FROM event_sequence WHERE id = 1").fetch_one(&mut *tx).await?;
    let handles: Vec<String> =
        sqlx::query_scalar("SELECT handle FROM products ORDER BY handle").fetch_all(&mut *tx).await?;
    reindex(&mut tx, &handles, head, now).await?;
    sqlx::query(
        "INSERT INTO worker_offsets (worker, last_seq, updated_at_ms) VALUES ($1, $2, $3) \
         ON CONFLICT (worker) DO UPDATE SET last_seq = excluded.last_seq, updated_at_ms = excluded.updated_at_ms",
    )
    .bind(SEARCH_SUBSCRIBER)
    .bind(head)
    .bind(now.millis())
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(handles.len())
}

/// Keeps the index in step with product, price, stock, lot, channel and warehouse events.
#[derive(Debug, Clone, Copy, Default)]
pub struct SearchIndexer;

impl Subscriber for SearchIndexer {
    type Error = CatalogError;

    fn name(&self) -> &'static str {
        SEARCH_SUBSCRIBER
    }

    fn event_types(&self) -> &'static [&'static str] {
        &[
            "product.created",
            "product.updated",
            "price.changed",
            "stock.changed",
            "lot.quarantined",
            "lot.released",
            "lot.expired",
            "channel.created",
            "channel.updated",
            "warehouse.updated",
        ]
    }

    async fn handle(&self, tx: &mut Tx, events: &[StoredEvent], now: Timestamp) -> Result<()> {
        let mut handles: BTreeSet<String> = BTreeSet::new();
        let mut skus: BTreeSet<String> = BTreeSet::new();
        let mut everything = false;
        for event in events {
            let text = |field: &str| event.data.get(field).and_then(|v| v.as_str()).map(str::to_owned);
            match event.event_type.as_str() {
                "product.created" | "product.updated" => handles.extend(text("handle")),
                "channel.created" | "channel.updated" | "warehouse.updated" => everything = true,
                _ => skus.extend(text("sku")),
            }
        }
        let handles: Vec<String> = if everything {
            sqlx::query_scalar("SELECT handle FROM products ORDER BY handle").fetch_all(&mut **tx).await?
        } else {
            let skus: Vec<String> = skus.into_iter().collect();
            for chunk in skus.chunks(kernel::limits::INSERT_ROWS_MAX) {
                let sql = format!(
                    "SELECT DISTINCT product FROM product_variants WHERE sku IN ({})",
                    store::sql::list_placeholders(chunk.len(), 1)
                );
                let mut query = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql));
                for sku in chunk {
                    query = query.bind(sku.clone());
                }
                handles.extend(query.fetch_all(&mut **tx).await?);
            }
            handles.into_iter().collect()
        };
        let seq = events.last().map_or(0, |e| e.seq);
        reindex(tx, &handles, seq, now).await
    }
}
