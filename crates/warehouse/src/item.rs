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
    track_lots: i64,
    created_at: String,
}

impl From<ItemRow> for Item {
    fn from(r: ItemRow) -> Self {
        Item {
            sku: r.sku,
            name: r.name,
            weight_grams: r.weight_grams,
            track_lots: r.track_lots != 0,
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
    pub created_at: String,
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
    sqlx::query_as::<_, ItemRow>("SELECT sku, name, weight_grams, track_lots, created_at FROM items WHERE sku = $1")
        .bind(sku.as_str().to_owned())
        .fetch_optional(pool)
        .await?
        .map(Item::from)
        .ok_or_else(|| WarehouseError::NotFound { what: "item", key: sku.to_string() })
}

/// The items among `skus` that exist, with whether each tracks lots; one query.
pub async fn items_known(tx: &mut Tx, skus: &[&SkuCode]) -> Result<Vec<(String, bool)>> {
    if skus.is_empty() {
        return Ok(Vec::new());
    }
    let sql =
        format!("SELECT sku, track_lots FROM items WHERE sku IN ({})", store::sql::list_placeholders(skus.len(), 1));
    let mut query = sqlx::query_as::<_, (String, i64)>(sqlx::AssertSqlSafe(sql));
    for sku in skus {
        query = query.bind(sku.as_str().to_owned());
    }
    Ok(query.fetch_all(&mut **tx).await?.into_iter().map(|(sku, lots)| (sku, lots != 0)).collect())
}

/// Fails with [`WarehouseError::Invalid`] naming the first line whose SKU does not exist.
pub(crate) async fn require_items<'a>(
    tx: &mut Tx,
    lines: impl IntoIterator<Item = (String, &'a SkuCode)>,
) -> Result<Vec<(String, bool)>> {
    let lines: Vec<(String, &SkuCode)> = lines.into_iter().collect();
    let mut distinct: Vec<&SkuCode> = lines.iter().map(|(_, s)| *s).collect();
    distinct.sort();
    distinct.dedup();
    let known = items_known(tx, &distinct).await?;
    for (field, sku) in &lines {
        if !known.iter().any(|(k, _)| k == sku.as_str()) {
            return Err(WarehouseError::invalid(field.clone(), format!("unknown SKU {sku}")));
        }
    }
    Ok(known)
}
