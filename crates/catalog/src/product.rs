//! Products and their variants. A variant is an existing item (SKU) of the warehouse context
//! with the options that tell it from its siblings; a SKU belongs to one product.

use crate::error::FieldProblem;
use crate::events::{ProductCreated, ProductState, ProductUpdated, VariantState};
use crate::{CatalogError, Result};
use kernel::{NewEvent, ProductHandle, SkuCode, Timestamp};
use serde::Serialize;
use serde_json::{Map, Value};
use sqlx::{AnyPool, FromRow};
use store::Tx;

/// Most variants of one product.
pub const VARIANTS_MAX: usize = 500;

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Variant {
    pub sku: String,
    #[schema(value_type = Object)]
    pub options: Map<String, Value>,
    /// Sold beyond stock: the view shows it and checkout may backorder it.
    pub backorder: bool,
}

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Product {
    pub handle: String,
    pub name: String,
    pub description: Option<String>,
    /// A path such as `apparel/tops`.
    pub category: Option<String>,
    #[schema(value_type = Object)]
    pub attributes: Map<String, Value>,
    pub variants: Vec<Variant>,
    pub created_at: String,
    pub updated_at: String,
}

impl Product {
    fn state(&self) -> ProductState {
        ProductState {
            handle: self.handle.clone(),
            name: self.name.clone(),
            description: self.description.clone(),
            category: self.category.clone(),
            attributes: self.attributes.clone(),
            variants: self
                .variants
                .iter()
                .map(|v| VariantState { sku: v.sku.clone(), options: v.options.clone(), backorder: v.backorder })
                .collect(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct NewVariant {
    pub sku: SkuCode,
    pub options: Map<String, Value>,
    pub backorder: bool,
}

#[derive(Debug, Clone)]
pub struct NewProduct {
    pub handle: ProductHandle,
    pub name: String,
    pub description: Option<String>,
    pub category: Option<String>,
    pub attributes: Map<String, Value>,
    pub variants: Vec<NewVariant>,
}

/// A partial update. The outer `None` keeps a field; `Some(None)` clears an optional one
/// (JSON Merge Patch). `variants`, when given, replaces the list.
#[derive(Debug, Clone, Default)]
pub struct ProductPatch {
    pub name: Option<String>,
    pub description: Option<Option<String>>,
    pub category: Option<Option<String>>,
    pub attributes: Option<Map<String, Value>>,
    pub variants: Option<Vec<NewVariant>>,
}

#[derive(FromRow)]
struct ProductRow {
    handle: String,
    name: String,
    description: Option<String>,
    category: Option<String>,
    attributes: String,
    created_at: String,
    updated_at: String,
}

#[derive(FromRow)]
struct VariantRow {
    sku: String,
    product: String,
    options: String,
    backorder: i64,
}

fn json_object(what: &str, raw: &str) -> Result<Map<String, Value>> {
    match serde_json::from_str(raw) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(store::StoreError::Corrupt(format!("{what} is not a JSON object")).into()),
    }
}

fn assemble(row: ProductRow, variants: Vec<VariantRow>) -> Result<Product> {
    Ok(Product {
        attributes: json_object(&format!("product {} attributes", row.handle), &row.attributes)?,
        variants: variants
            .into_iter()
            .map(|v| {
                Ok(Variant {
                    options: json_object(&format!("variant {} options", v.sku), &v.options)?,
                    sku: v.sku,
                    backorder: v.backorder != 0,
                })
            })
            .collect::<Result<_>>()?,
        handle: row.handle,
        name: row.name,
        description: row.description,
        category: row.category,
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

/// Every variant SKU must be an existing item, listed once, and not a variant of another
/// product; every bad one is reported.
async fn check_variants(tx: &mut Tx, handle: &str, variants: &[NewVariant]) -> Result<()> {
    let mut problems = Vec::new();
    if variants.len() > VARIANTS_MAX {
        problems.push(FieldProblem { field: "variants".into(), message: format!("must have at most {VARIANTS_MAX}") });
        return Err(CatalogError::Invalid(problems));
    }
    let skus: Vec<&SkuCode> = variants.iter().map(|v| &v.sku).collect();
    let known = warehouse::item::items_known(tx, &skus).await?;
    let owners = owners_of(tx, &skus).await?;
    let mut conflicts = Vec::new();
    for (i, variant) in variants.iter().enumerate() {
        let sku = variant.sku.as_str();
        if variants[..i].iter().any(|v| v.sku == variant.sku) {
            problems
                .push(FieldProblem { field: format!("variants[{i}].sku"), message: format!("{sku} is listed twice") });
        } else if !known.iter().any(|(k, _)| k == sku) {
            problems.push(FieldProblem { field: format!("variants[{i}].sku"), message: format!("unknown item {sku}") });
        } else if let Some((_, owner)) = owners.iter().find(|(s, owner)| s == sku && owner != handle) {
            conflicts.push(format!("{sku} (variants[{i}].sku) is a variant of product {owner}"));
        }
    }
    if !problems.is_empty() {
        return Err(CatalogError::Invalid(problems));
    }
    if !conflicts.is_empty() {
        return Err(CatalogError::Conflict(format!("a SKU belongs to one product: {}", conflicts.join("; "))));
    }
    Ok(())
}

async fn owners_of(tx: &mut Tx, skus: &[&SkuCode]) -> Result<Vec<(String, String)>> {
    if skus.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT sku, product FROM product_variants WHERE sku IN ({})",
        store::sql::list_placeholders(skus.len(), 1)
    );
    let mut query = sqlx::query_as::<_, (String, String)>(sqlx::AssertSqlSafe(sql));
    for sku in skus {
        query = query.bind(sku.as_str().to_owned());
    }
    Ok(query.fetch_all(&mut **tx).await?)
}

async fn write_variants(tx: &mut Tx, handle: &str, variants: &[NewVariant]) -> Result<()> {
    sqlx::query("DELETE FROM product_variants WHERE product = $1").bind(handle.to_owned()).execute(&mut **tx).await?;
    if variants.is_empty() {
        return Ok(());
    }
    for chunk in variants.chunks(kernel::limits::INSERT_ROWS_MAX) {
        let mut values = store::sql::Values::new(tx, 5);
        for (position, v) in chunk.iter().enumerate() {
            values
                .row()
                .text(v.sku.as_str())
                .text(handle)
                .int(position as i64)
                .text(Value::Object(v.options.clone()).to_string())
                .flag(v.backorder);
        }
        values
            .query("INSERT INTO product_variants (sku, product, position, options, backorder) VALUES {values}")
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

pub async fn product_create(tx: &mut Tx, new: NewProduct, now: Timestamp) -> Result<Product> {
    let handle = new.handle.as_str().to_owned();
    check_variants(tx, &handle, &new.variants).await?;
    let at = now.to_rfc3339();
    let inserted = sqlx::query(
        "INSERT INTO products (handle, name, description, category, attributes, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (handle) DO NOTHING",
    )
    .bind(handle.clone())
    .bind(new.name.clone())
    .bind(new.description.clone())
    .bind(new.category.clone())
    .bind(Value::Object(new.attributes.clone()).to_string())
    .bind(at.clone())
    .bind(at.clone())
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if inserted == 0 {
        return Err(CatalogError::Conflict(format!("a product with handle {handle} exists already")));
    }
    write_variants(tx, &handle, &new.variants).await?;
    let product = Product {
        handle: handle.clone(),
        name: new.name,
        description: new.description,
        category: new.category,
        attributes: new.attributes,
        variants: new
            .variants
            .into_iter()
            .map(|v| Variant { sku: v.sku.as_str().to_owned(), options: v.options, backorder: v.backorder })
            .collect(),
        created_at: at.clone(),
        updated_at: at,
    };
    let event = NewEvent::of(format!("product:{handle}"), &ProductCreated(product.state()));
    store::outbox::append(tx, &[event], now).await?;
    Ok(product)
}

pub async fn product_update(
    tx: &mut Tx,
    handle: &ProductHandle,
    patch: ProductPatch,
    now: Timestamp,
) -> Result<Product> {
    let current = product_in(tx, handle).await?;
    if let Some(variants) = &patch.variants {
        check_variants(tx, handle.as_str(), variants).await?;
    }
    let variants = match patch.variants {
        Some(new) => new
            .into_iter()
            .map(|v| Variant { sku: v.sku.as_str().to_owned(), options: v.options, backorder: v.backorder })
            .collect(),
        None => current.variants.clone(),
    };
    let updated = Product {
        name: patch.name.unwrap_or(current.name.clone()),
        description: patch.description.unwrap_or(current.description.clone()),
        category: patch.category.unwrap_or(current.category.clone()),
        attributes: patch.attributes.unwrap_or(current.attributes.clone()),
        variants,
        updated_at: now.to_rfc3339(),
        ..current.clone()
    };
    sqlx::query(
        "UPDATE products SET name = $1, description = $2, category = $3, attributes = $4, updated_at = $5 \
         WHERE handle = $6",
    )
    .bind(updated.name.clone())
    .bind(updated.description.clone())
    .bind(updated.category.clone())
    .bind(Value::Object(updated.attributes.clone()).to_string())
    .bind(updated.updated_at.clone())
    .bind(updated.handle.clone())
    .execute(&mut **tx)
    .await?;
    if updated.variants != current.variants {
        let rows: Vec<NewVariant> = updated
            .variants
            .iter()
            .map(|v| NewVariant {
                sku: SkuCode::parse(v.sku.clone()).expect("a stored variant SKU is a valid code"),
                options: v.options.clone(),
                backorder: v.backorder,
            })
            .collect();
        write_variants(tx, handle.as_str(), &rows).await?;
    }
    let removed_skus = current
        .variants
        .iter()
        .filter(|old| !updated.variants.iter().any(|v| v.sku == old.sku))
        .map(|v| v.sku.clone())
        .collect();
    let event =
        NewEvent::of(format!("product:{}", updated.handle), &ProductUpdated { product: updated.state(), removed_skus });
    store::outbox::append(tx, &[event], now).await?;
    Ok(updated)
}

pub async fn product_in(conn: &mut sqlx::AnyConnection, handle: &ProductHandle) -> Result<Product> {
    let row: Option<ProductRow> = sqlx::query_as(
        "SELECT handle, name, description, category, attributes, created_at, updated_at FROM products WHERE handle = $1",
    )
    .bind(handle.as_str().to_owned())
    .fetch_optional(&mut *conn)
    .await?;
    let row = row.ok_or_else(|| CatalogError::NotFound { what: "product", key: handle.to_string() })?;
    let variants: Vec<VariantRow> = sqlx::query_as(
        "SELECT sku, product, options, backorder FROM product_variants WHERE product = $1 ORDER BY position",
    )
    .bind(handle.as_str().to_owned())
    .fetch_all(&mut *conn)
    .await?;
    assemble(row, variants)
}

pub async fn product_get(pool: &AnyPool, handle: &ProductHandle) -> Result<Product> {
    let mut conn = pool.acquire().await?;
    product_in(&mut conn, handle).await
}

/// Products ordered by handle after `after`, optionally of one category (and its
/// subcategories: `apparel` matches `apparel/tops`); variants in one more query.
pub async fn products_list(
    pool: &AnyPool,
    category: Option<&str>,
    after: Option<&str>,
    limit: u32,
) -> Result<Vec<Product>> {
    let rows: Vec<ProductRow> = sqlx::query_as(
        "SELECT handle, name, description, category, attributes, created_at, updated_at FROM products \
         WHERE ($1 IS NULL OR handle > $1) AND ($2 IS NULL OR category = $2 OR category LIKE $3 ESCAPE '\\') \
         ORDER BY handle LIMIT $4",
    )
    .bind(after.map(str::to_owned))
    .bind(category.map(str::to_owned))
    .bind(category.map(|c| format!("{}/%", c.replace('%', "\\%").replace('_', "\\_"))))
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    variants_for(pool, rows).await
}

async fn variants_for(pool: &AnyPool, rows: Vec<ProductRow>) -> Result<Vec<Product>> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT sku, product, options, backorder FROM product_variants WHERE product IN ({}) ORDER BY product, position",
        store::sql::list_placeholders(rows.len(), 1)
    );
    let mut query = sqlx::query_as::<_, VariantRow>(sqlx::AssertSqlSafe(sql));
    for row in &rows {
        query = query.bind(row.handle.clone());
    }
    let mut by_product: std::collections::HashMap<String, Vec<VariantRow>> = Default::default();
    for v in query.fetch_all(pool).await? {
        by_product.entry(v.product.clone()).or_default().push(v);
    }
    rows.into_iter()
        .map(|row| {
            let variants = by_product.remove(&row.handle).unwrap_or_default();
            assemble(row, variants)
        })
        .collect()
}
