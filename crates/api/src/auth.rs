//! API keys and scopes.
//!
//! Keys are random 256-bit tokens shown once and stored as SHA-256 hashes: a high-entropy key
//! needs no slow hash, and a leaked table reveals no usable key. The admin key from the
//! environment is kept only as a hash in memory.

use crate::AppState;
use crate::error::ApiError;
use axum::extract::{Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::Response;
use kernel::Timestamp;
use sha2::{Digest, Sha256};
use store::{Db, StoreError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Admin,
    InventoryRead,
    InventoryWrite,
    CatalogRead,
    CatalogWrite,
    OrdersRead,
    OrdersWrite,
    WebhooksAdmin,
}

impl Scope {
    pub const ALL: [Scope; 8] = [
        Scope::Admin,
        Scope::InventoryRead,
        Scope::InventoryWrite,
        Scope::CatalogRead,
        Scope::CatalogWrite,
        Scope::OrdersRead,
        Scope::OrdersWrite,
        Scope::WebhooksAdmin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Admin => "admin",
            Scope::InventoryRead => "inventory:read",
            Scope::InventoryWrite => "inventory:write",
            Scope::CatalogRead => "catalog:read",
            Scope::CatalogWrite => "catalog:write",
            Scope::OrdersRead => "orders:read",
            Scope::OrdersWrite => "orders:write",
            Scope::WebhooksAdmin => "webhooks:admin",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == raw)
    }
}

/// Who is calling: the key's id (for idempotency scopes) and what it may do.
#[derive(Debug, Clone)]
pub struct Principal {
    pub key_id: String,
    pub scopes: Vec<Scope>,
}

impl Principal {
    pub fn allows(&self, needed: Scope) -> bool {
        self.scopes.iter().any(|s| *s == Scope::Admin || *s == needed)
    }
}

pub fn hash_key(key: &str) -> String {
    // Every request hashes its key: one allocation, not one per byte.
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut hex = String::with_capacity(64);
    for b in Sha256::digest(key.as_bytes()) {
        hex.push(char::from(DIGITS[usize::from(b >> 4)]));
        hex.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    hex
}

fn new_key() -> String {
    format!("sk_{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple())
}

/// A key as created: the secret is shown once and never stored.
#[derive(Debug, Clone)]
pub struct CreatedKey {
    pub id: String,
    pub secret: String,
}

/// Creates and stores a key with `scopes`.
pub async fn key_create(db: &Db, scopes: &[Scope], label: &str, now: Timestamp) -> Result<CreatedKey, StoreError> {
    let secret = new_key();
    let id = format!("key_{}", uuid::Uuid::now_v7().simple());
    let scopes_text = scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" ");
    let mut tx = db.begin().await?;
    sqlx::query("INSERT INTO api_keys (id, key_hash, scopes, label, created_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(id.clone())
        .bind(hash_key(&secret))
        .bind(scopes_text)
        .bind(label.to_owned())
        .bind(now.to_rfc3339())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(CreatedKey { id, secret })
}

/// Creates the bootstrap admin key if this database has none; returns it if it did.
pub async fn bootstrap_admin_key(db: &Db, now: Timestamp) -> Result<Option<CreatedKey>, StoreError> {
    let existing: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM api_keys WHERE label = 'bootstrap'").fetch_one(db.reader()).await?;
    if existing > 0 {
        return Ok(None);
    }
    key_create(db, &[Scope::Admin], "bootstrap", now).await.map(Some)
}

async fn principal_of(state: &AppState, key: &str) -> Result<Option<Principal>, ApiError> {
    let hash = hash_key(key);
    if state.admin_key_hash.as_deref() == Some(hash.as_str()) {
        return Ok(Some(Principal { key_id: "admin".into(), scopes: vec![Scope::Admin] }));
    }
    let row: Option<(String, String)> = sqlx::query_as("SELECT id, scopes FROM api_keys WHERE key_hash = $1")
        .bind(hash)
        .fetch_optional(state.db.reader())
        .await?;
    Ok(row.map(|(key_id, scopes)| Principal { key_id, scopes: scopes.split(' ').filter_map(Scope::parse).collect() }))
}

/// Channels, shipping rates, products, prices, availability and search are the catalog's:
/// they need the `catalog:*` scopes. `path` is as seen inside `/v1` (or with it).
fn is_catalog_path(path: &str) -> bool {
    let path = path.strip_prefix("/v1").unwrap_or(path);
    ["/channels", "/products", "/prices", "/availability", "/search"]
        .iter()
        .any(|prefix| path == *prefix || path.starts_with(&format!("{prefix}/")))
        || (path.starts_with("/warehouses/") && path.ends_with("/shipping-rates"))
}

/// Carts, orders, promotions, sourcing plans and sagas are the order context's: they need
/// the `orders:*` scopes.
fn is_order_path(path: &str) -> bool {
    let path = path.strip_prefix("/v1").unwrap_or(path);
    ["/carts", "/orders", "/promotions", "/sourcing", "/sagas"]
        .iter()
        .any(|prefix| path == *prefix || path.starts_with(&format!("{prefix}/")))
}

/// Webhook endpoints and their deliveries need `webhooks:admin`, reads included: an endpoint
/// names where events go.
fn is_webhook_path(path: &str) -> bool {
    let path = path.strip_prefix("/v1").unwrap_or(path);
    path == "/webhooks" || path.starts_with("/webhooks/")
}

/// Middleware for `/v1`: reads need `inventory:read` (catalog routes `catalog:read`),
/// everything else `inventory:write` (`catalog:write`, order routes `orders:read` and
/// `orders:write`); `admin` allows all.
pub async fn require_key(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let key = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        // The scheme is case-insensitive (RFC 9110, section 11.1).
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, key)| key.trim())
        .filter(|k| !k.is_empty() && k.len() <= 256)
        .ok_or_else(ApiError::unauthorized)?;
    let principal = principal_of(&state, key).await?.ok_or_else(ApiError::unauthorized)?;
    let read = matches!(*request.method(), Method::GET | Method::HEAD);
    let path = request.uri().path();
    let needed = match (is_catalog_path(path), is_order_path(path), read) {
        _ if is_webhook_path(path) => Scope::WebhooksAdmin,
        (true, _, true) => Scope::CatalogRead,
        (true, _, false) => Scope::CatalogWrite,
        (_, true, true) => Scope::OrdersRead,
        (_, true, false) => Scope::OrdersWrite,
        (_, _, true) => Scope::InventoryRead,
        (_, _, false) => Scope::InventoryWrite,
    };
    if !principal.allows(needed) {
        return Err(ApiError::forbidden(needed.as_str()));
    }
    request.extensions_mut().insert(principal);
    Ok(next.run(request).await)
}
