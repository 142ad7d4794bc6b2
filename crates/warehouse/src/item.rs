//! Items: SKUs as physical goods.

use crate::{Result, WarehouseError};
use kernel::{NewEvent, SkuCode, Timestamp};
use serde::Serialize;
use sqlx::{AnyPool, FromRow};
use store::Tx;

#[derive(FromRow)]
struct ItemRow {
    sku: String,
    name: String,
    weight_grams: Option<i64>,
    #[sqlx(try_from = "store::sql::IntFlag")]
    track_lots: bool,
    gtin: Option<String>,
    #[sqlx(try_from = "store::sql::IntFlag")]
    archived: bool,
    created_at: String,
}

const ITEM_COLUMNS: &str = "sku, name, weight_grams, track_lots, gtin, archived, created_at";

impl From<ItemRow> for Item {
    fn from(r: ItemRow) -> Self {
        Item {
            sku: r.sku,
            name: r.name,
            weight_grams: r.weight_grams,
            track_lots: r.track_lots,
            gtin: r.gtin,
            archived: r.archived,
            created_at: r.created_at,
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Item {
    pub sku: String,
    pub name: String,
    pub weight_grams: Option<i64>,
    pub track_lots: bool,
    /// The barcode: a GTIN-8, -12, -13 or -14.
    pub gtin: Option<String>,
    /// An archived item stays readable and keeps its stock; lists can leave it out.
    pub archived: bool,
    pub created_at: String,
}

/// A change to an item: `None` keeps a field; `Some(None)` clears an optional one.
#[derive(Debug, Clone, Default)]
pub struct ItemPatch {
    pub name: Option<String>,
    pub weight_grams: Option<Option<i64>>,
    pub gtin: Option<Option<String>>,
    pub archived: Option<bool>,
    pub track_lots: Option<bool>,
}

/// Which items a list shows.
#[derive(Debug, Clone, Default)]
pub struct ItemFilter {
    pub sku_prefix: Option<String>,
    /// `None`: archived or not.
    pub archived: Option<bool>,
}

#[derive(Debug, Clone)]
pub struct NewItem {
    pub sku: SkuCode,
    pub name: String,
    pub weight_grams: Option<i64>,
    pub track_lots: bool,
}

pub async fn item_create(tx: &mut Tx, new: NewItem, now: Timestamp) -> Result<Item> {
    let item = Item {
        sku: new.sku.as_str().to_owned(),
        name: new.name,
        weight_grams: new.weight_grams,
        track_lots: new.track_lots,
        gtin: None,
        archived: false,
        created_at: now.to_rfc3339(),
    };
    let inserted = sqlx::query(
        "INSERT INTO items (sku, name, weight_grams, track_lots, created_at) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (sku) DO NOTHING",
    )
    .bind(item.sku.clone())
    .bind(item.name.clone())
    .bind(item.weight_grams)
    .bind(i64::from(item.track_lots))
    .bind(item.created_at.clone())
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if inserted == 0 {
        return Err(WarehouseError::Conflict(format!("an item with SKU {} exists already", item.sku)));
    }
    store::outbox::append(
        tx,
        &[NewEvent::of(format!("item:{}", item.sku), &crate::events::ItemCreated::from(&item))],
        now,
    )
    .await?;
    Ok(item)
}

pub async fn item_get(pool: &AnyPool, sku: &SkuCode) -> Result<Item> {
    let mut conn = pool.acquire().await?;
    item_find(&mut conn, sku).await
}

async fn item_find(conn: &mut sqlx::AnyConnection, sku: &SkuCode) -> Result<Item> {
    sqlx::query_as::<_, ItemRow>(sqlx::AssertSqlSafe(format!("SELECT {ITEM_COLUMNS} FROM items WHERE sku = $1")))
        .bind(sku.as_str().to_owned())
        .fetch_optional(&mut *conn)
        .await?
        .map(Item::from)
        .ok_or_else(|| WarehouseError::NotFound { what: "item", key: sku.to_string() })
}

/// Items by SKU after the SKU `after`, optionally those starting with a prefix and those
/// (not) archived.
pub async fn items_list(pool: &AnyPool, filter: &ItemFilter, after: Option<&str>, limit: u32) -> Result<Vec<Item>> {
    let prefix = filter.sku_prefix.clone().unwrap_or_default();
    // substr, not LIKE: `_` is a SKU character, not a wildcard.
    let sql = format!(
        "SELECT {ITEM_COLUMNS} FROM items WHERE sku > $1 AND substr(sku, 1, {}) = $2 AND ($3 < 0 OR archived = $3) \
         ORDER BY sku LIMIT $4",
        prefix.chars().count()
    );
    let rows = sqlx::query_as::<_, ItemRow>(sqlx::AssertSqlSafe(sql))
        .bind(after.unwrap_or("").to_owned())
        .bind(prefix)
        .bind(filter.archived.map_or(-1, i64::from))
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await?;
    Ok(rows.into_iter().map(Item::from).collect())
}

/// Applies a patch; `track_lots` may change only while the item has no stock anywhere (no
/// units on hand or held, no lots). An `item.updated` event records the item as it is after.
pub async fn item_update(tx: &mut Tx, sku: &SkuCode, patch: ItemPatch, now: Timestamp) -> Result<Item> {
    // The row locked, so two patches do not interleave.
    let lock = store::sql::Lock::ForUpdate.clause(store::db::backend_of(tx));
    let mut item: Item = sqlx::query_as::<_, ItemRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {ITEM_COLUMNS} FROM items WHERE sku = $1{lock}"
    )))
    .bind(sku.as_str().to_owned())
    .fetch_optional(&mut **tx)
    .await?
    .map(Item::from)
    .ok_or_else(|| WarehouseError::NotFound { what: "item", key: sku.to_string() })?;
    if let Some(track_lots) = patch.track_lots
        && track_lots != item.track_lots
    {
        let stocked: i64 = sqlx::query_scalar(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM stock_levels WHERE sku = $1 AND (on_hand <> 0 OR reserved <> 0)",
        )
        .bind(sku.as_str().to_owned())
        .fetch_one(&mut **tx)
        .await?;
        let lots: i64 =
            sqlx::query_scalar("SELECT CAST(COUNT(*) AS BIGINT) FROM stock_lots WHERE sku = $1 AND on_hand <> 0")
                .bind(sku.as_str().to_owned())
                .fetch_one(&mut **tx)
                .await?;
        if stocked > 0 || lots > 0 {
            return Err(WarehouseError::invalid(
                "track_lots",
                format!("can change only while item {sku} has no stock; it has stock in {stocked} warehouse(s)"),
            ));
        }
        item.track_lots = track_lots;
    }
    if let Some(name) = patch.name {
        item.name = name;
    }
    if let Some(weight) = patch.weight_grams {
        item.weight_grams = weight;
    }
    if let Some(gtin) = patch.gtin {
        item.gtin = gtin;
    }
    if let Some(archived) = patch.archived {
        item.archived = archived;
    }
    sqlx::query(
        "UPDATE items SET name = $1, weight_grams = $2, track_lots = $3, gtin = $4, archived = $5 WHERE sku = $6",
    )
    .bind(item.name.clone())
    .bind(item.weight_grams)
    .bind(i64::from(item.track_lots))
    .bind(item.gtin.clone())
    .bind(i64::from(item.archived))
    .bind(sku.as_str().to_owned())
    .execute(&mut **tx)
    .await?;
    store::outbox::append(
        tx,
        &[NewEvent::of(format!("item:{}", item.sku), &crate::events::ItemUpdated::from(&item))],
        now,
    )
    .await?;
    Ok(item)
}

/// The items among `skus` that exist, with whether each tracks lots; one query.
pub async fn items_known(tx: &mut Tx, skus: &[&SkuCode]) -> Result<Vec<(String, bool)>> {
    if skus.is_empty() {
        return Ok(Vec::new());
    }
    let skus = &store::sql::padded_in_list(skus);
    let sql =
        format!("SELECT sku, track_lots FROM items WHERE sku IN ({})", store::sql::list_placeholders(skus.len(), 1));
    let mut query = sqlx::query_as::<_, (String, i64)>(sqlx::AssertSqlSafe(sql));
    for sku in skus {
        query = query.bind(sku.as_str().to_owned());
    }
    Ok(query.fetch_all(&mut **tx).await?.into_iter().map(|(sku, lots)| (sku, lots != 0)).collect())
}

/// Fails with [`WarehouseError::Invalid`] naming every line whose SKU does not exist.
pub(crate) async fn require_items<'a>(
    tx: &mut Tx,
    lines: impl IntoIterator<Item = (String, &'a SkuCode)>,
) -> Result<Vec<(String, bool)>> {
    let mut issues = crate::error::Issues::default();
    let known = check_items(tx, lines, &mut issues).await?;
    issues.finish()?;
    Ok(known)
}

/// The known items among the lines' SKUs (with whether each tracks lots), recording an issue
/// for every line whose SKU does not exist.
pub(crate) async fn check_items<'a>(
    tx: &mut Tx,
    lines: impl IntoIterator<Item = (String, &'a SkuCode)>,
    issues: &mut crate::error::Issues,
) -> Result<Vec<(String, bool)>> {
    let lines: Vec<(String, &SkuCode)> = lines.into_iter().collect();
    let mut distinct: Vec<&SkuCode> = lines.iter().map(|(_, s)| *s).collect();
    distinct.sort();
    distinct.dedup();
    let known = items_known(tx, &distinct).await?;
    for (field, sku) in &lines {
        if !known.iter().any(|(k, _)| k == sku.as_str()) {
            issues.push(field.clone(), format!("unknown SKU {sku}"));
        }
    }
    Ok(known)
}

/// The unit weight in grams of each of `skus` that exists (`None`: not recorded), for
/// shipping costs; one query.
pub async fn weights_of(
    conn: &mut sqlx::AnyConnection,
    skus: &[String],
) -> Result<std::collections::HashMap<String, Option<i64>>> {
    if skus.is_empty() {
        return Ok(Default::default());
    }
    let sql =
        format!("SELECT sku, weight_grams FROM items WHERE sku IN ({})", store::sql::list_placeholders(skus.len(), 1));
    let mut query = sqlx::query_as::<_, (String, Option<i64>)>(sqlx::AssertSqlSafe(sql));
    for sku in skus {
        query = query.bind(sku.clone());
    }
    Ok(query.fetch_all(conn).await?.into_iter().collect())
}
