//! Reading the availability of many SKUs in one channel from one consistent snapshot: the
//! SKUs' variants and prices and the outbox head in one query, their sellable stock over the
//! channel's warehouses in one more (the warehouse context's public read), both inside one
//! read transaction (`REPEATABLE READ` on PostgreSQL; on SQLite a read transaction sees one
//! WAL snapshot). The head `seq` names the snapshot: it is the entry's `version`, and every
//! event up to it is reflected in the figures.

use crate::Result;
use crate::channel::ChannelConfig;
use kernel::Timestamp;
use sqlx::{AnyPool, FromRow};
use store::Backend;

/// One SKU's availability in one channel, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub sku: String,
    /// False: the SKU is no variant of any product (the answer lists it in `not_found`).
    pub known: bool,
    pub available: i64,
    pub backorder: bool,
    /// Amount and compare-at price in the channel's currency's minor units; `None`: no price
    /// in this channel.
    pub price_minor: Option<(i64, Option<i64>)>,
    /// The outbox head when read: every event up to it is in these figures.
    pub seq: i64,
    /// When it was read (ms since the epoch).
    pub read_at_ms: i64,
}

#[derive(FromRow)]
struct VariantPriceRow {
    sku: String,
    backorder: i64,
    amount_minor: Option<i64>,
    compare_at_minor: Option<i64>,
    head: i64,
}

/// Reads `skus` (distinct, at most [`kernel::limits::STOCK_BATCH_SKUS_MAX`]) in `channel`.
/// Returns one snapshot per SKU, in the order asked.
pub async fn read_snapshots(
    reader: &AnyPool,
    backend: Backend,
    channel: &ChannelConfig,
    skus: &[String],
    now: Timestamp,
) -> Result<Vec<Snapshot>> {
    let mut tx = reader.begin().await?;
    if backend == Backend::Postgres {
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY").execute(&mut *tx).await?;
    }
    let sql = format!(
        "SELECT v.sku, v.backorder, p.amount_minor, p.compare_at_minor, \
                (SELECT last_seq FROM event_sequence WHERE id = 1) AS head \
         FROM product_variants v LEFT JOIN prices p ON p.sku = v.sku AND p.channel = $1 \
         WHERE v.sku IN ({})",
        store::sql::list_placeholders(skus.len(), 2)
    );
    let mut query = sqlx::query_as::<_, VariantPriceRow>(sqlx::AssertSqlSafe(sql)).bind(channel.code.clone());
    for sku in skus {
        query = query.bind(sku.clone());
    }
    let rows = query.fetch_all(&mut *tx).await?;
    let head = match rows.first() {
        Some(row) => row.head,
        None => sqlx::query_scalar("SELECT last_seq FROM event_sequence WHERE id = 1").fetch_one(&mut *tx).await?,
    };
    let known: Vec<String> = rows.iter().map(|r| r.sku.clone()).collect();
    let sellable = warehouse::stock::sellable_in(&mut tx, &known, &channel.warehouses, now).await?;
    tx.commit().await?;
    let mut by_sku: std::collections::HashMap<String, VariantPriceRow> =
        rows.into_iter().map(|r| (r.sku.clone(), r)).collect();
    Ok(skus
        .iter()
        .map(|sku| match by_sku.remove(sku) {
            Some(row) => Snapshot {
                available: sellable.get(sku).copied().unwrap_or(0),
                backorder: row.backorder != 0,
                price_minor: row.amount_minor.map(|a| (a, row.compare_at_minor)),
                known: true,
                sku: row.sku,
                seq: head,
                read_at_ms: now.millis(),
            },
            None => Snapshot {
                sku: sku.clone(),
                known: false,
                available: 0,
                backorder: false,
                price_minor: None,
                seq: head,
                read_at_ms: now.millis(),
            },
        })
        .collect())
}
