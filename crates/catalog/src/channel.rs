//! Channels: where a retailer sells, with its currency, country, warehouses (in priority
//! order) and rules; and the shipping rates of warehouses. Nothing outside a channel has a
//! default warehouse, currency or country.

use crate::error::FieldProblem;
use crate::events::{ChannelCreated, ChannelState, ChannelUpdated, ShippingRateState, ShippingRatesUpdated};
use crate::{CatalogError, Result};
use kernel::{ChannelCode, Currency, NewEvent, Timestamp, WarehouseCode};
use serde::{Deserialize, Serialize};
use sqlx::{AnyPool, FromRow};
use store::Tx;

/// Most warehouses in one channel.
pub const CHANNEL_WAREHOUSES_MAX: usize = 100;
/// Most shipping rates of one warehouse.
pub const SHIPPING_RATES_MAX: usize = 500;

/// How checkout picks warehouses for an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Sourcing {
    /// The channel's warehouse order first, then stock.
    Priority,
    /// The warehouse nearest the shipping address first.
    Distance,
    /// The cheapest plan by shipping rates and split penalty.
    Cost,
}

impl Sourcing {
    pub fn as_str(self) -> &'static str {
        match self {
            Sourcing::Priority => "priority",
            Sourcing::Distance => "distance",
            Sourcing::Cost => "cost",
        }
    }

    fn parse(raw: &str) -> Result<Self> {
        match raw {
            "priority" => Ok(Sourcing::Priority),
            "distance" => Ok(Sourcing::Distance),
            "cost" => Ok(Sourcing::Cost),
            other => Err(store::StoreError::Corrupt(format!("channel sourcing {other}")).into()),
        }
    }
}

/// A channel as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Channel {
    pub code: String,
    pub name: String,
    pub currency: String,
    pub country: String,
    /// The channel's warehouses, most preferred first.
    pub warehouses: Vec<String>,
    pub sourcing: Sourcing,
    /// Added to a plan's cost for every shipment past the first, in the channel's currency.
    pub split_penalty: String,
    /// 0: carts hold nothing until checkout.
    pub cart_hold_ttl_seconds: i64,
    pub checkout_hold_ttl_seconds: i64,
    pub created_at: String,
    pub updated_at: String,
}

/// A channel as the other contexts use it.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelConfig {
    pub code: String,
    pub name: String,
    pub currency: Currency,
    pub country: String,
    pub warehouses: Vec<String>,
    pub sourcing: Sourcing,
    pub split_penalty_minor: i64,
    pub cart_hold_ttl_seconds: i64,
    pub checkout_hold_ttl_seconds: i64,
    pub created_at: String,
    pub updated_at: String,
}

impl ChannelConfig {
    pub fn view(&self) -> Channel {
        Channel {
            code: self.code.clone(),
            name: self.name.clone(),
            currency: self.currency.to_string(),
            country: self.country.clone(),
            warehouses: self.warehouses.clone(),
            sourcing: self.sourcing,
            split_penalty: self.currency.format_amount(self.split_penalty_minor),
            cart_hold_ttl_seconds: self.cart_hold_ttl_seconds,
            checkout_hold_ttl_seconds: self.checkout_hold_ttl_seconds,
            created_at: self.created_at.clone(),
            updated_at: self.updated_at.clone(),
        }
    }

    fn state(&self) -> ChannelState {
        ChannelState {
            code: self.code.clone(),
            name: self.name.clone(),
            currency: self.currency.to_string(),
            country: self.country.clone(),
            warehouses: self.warehouses.clone(),
            sourcing: self.sourcing.as_str().to_owned(),
            split_penalty_minor: self.split_penalty_minor,
            cart_hold_ttl_seconds: self.cart_hold_ttl_seconds,
            checkout_hold_ttl_seconds: self.checkout_hold_ttl_seconds,
        }
    }
}

#[derive(Debug, Clone)]
pub struct NewChannel {
    pub code: ChannelCode,
    pub name: String,
    pub currency: Currency,
    pub country: String,
    pub warehouses: Vec<WarehouseCode>,
    pub sourcing: Sourcing,
    pub split_penalty_minor: i64,
    pub cart_hold_ttl_seconds: i64,
    pub checkout_hold_ttl_seconds: i64,
}

/// A partial update: `None` leaves a field as it is. The currency is fixed at creation
/// (prices are kept in it).
#[derive(Debug, Clone, Default)]
pub struct ChannelPatch {
    pub name: Option<String>,
    pub country: Option<String>,
    pub warehouses: Option<Vec<WarehouseCode>>,
    pub sourcing: Option<Sourcing>,
    pub split_penalty_minor: Option<i64>,
    pub cart_hold_ttl_seconds: Option<i64>,
    pub checkout_hold_ttl_seconds: Option<i64>,
}

#[derive(FromRow)]
struct ChannelRow {
    code: String,
    name: String,
    currency: String,
    country: String,
    sourcing: String,
    split_penalty_minor: i64,
    cart_hold_ttl_seconds: i64,
    checkout_hold_ttl_seconds: i64,
    created_at: String,
    updated_at: String,
}

impl ChannelRow {
    fn into_config(self, warehouses: Vec<String>) -> Result<ChannelConfig> {
        Ok(ChannelConfig {
            currency: Currency::parse(&self.currency)
                .map_err(|_| store::StoreError::Corrupt(format!("channel {} currency {}", self.code, self.currency)))?,
            sourcing: Sourcing::parse(&self.sourcing)?,
            code: self.code,
            name: self.name,
            country: self.country,
            warehouses,
            split_penalty_minor: self.split_penalty_minor,
            cart_hold_ttl_seconds: self.cart_hold_ttl_seconds,
            checkout_hold_ttl_seconds: self.checkout_hold_ttl_seconds,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

const COLUMNS: &str = "code, name, currency, country, sourcing, split_penalty_minor, cart_hold_ttl_seconds, \
                       checkout_hold_ttl_seconds, created_at, updated_at";

/// Every warehouse must exist and be listed once; all bad entries are reported.
async fn check_warehouses(tx: &mut Tx, warehouses: &[WarehouseCode]) -> Result<()> {
    let mut problems = Vec::new();
    if warehouses.is_empty() || warehouses.len() > CHANNEL_WAREHOUSES_MAX {
        problems.push(FieldProblem {
            field: "warehouses".into(),
            message: format!("must list 1 to {CHANNEL_WAREHOUSES_MAX} warehouses"),
        });
    }
    let named: Vec<&WarehouseCode> = warehouses.iter().collect();
    let known = warehouse::site::warehouses_known(tx, &named).await?;
    for (i, code) in warehouses.iter().enumerate() {
        if warehouses[..i].contains(code) {
            problems
                .push(FieldProblem { field: format!("warehouses[{i}]"), message: format!("{code} is listed twice") });
        } else if !known.contains(code.as_str()) {
            problems
                .push(FieldProblem { field: format!("warehouses[{i}]"), message: format!("unknown warehouse {code}") });
        }
    }
    if problems.is_empty() { Ok(()) } else { Err(CatalogError::Invalid(problems)) }
}

async fn write_warehouses(tx: &mut Tx, channel: &str, warehouses: &[String]) -> Result<()> {
    sqlx::query("DELETE FROM channel_warehouses WHERE channel = $1")
        .bind(channel.to_owned())
        .execute(&mut **tx)
        .await?;
    let mut values = store::sql::Values::new(tx, 3);
    for (position, warehouse) in warehouses.iter().enumerate() {
        values.row().text(channel).text(warehouse.as_str()).int(position as i64);
    }
    values
        .query("INSERT INTO channel_warehouses (channel, warehouse, position) VALUES {values}")
        .execute(&mut **tx)
        .await?;
    Ok(())
}

pub async fn channel_create(tx: &mut Tx, new: NewChannel, now: Timestamp) -> Result<ChannelConfig> {
    check_warehouses(tx, &new.warehouses).await?;
    let at = now.to_rfc3339();
    let channel = ChannelConfig {
        code: new.code.as_str().to_owned(),
        name: new.name,
        currency: new.currency,
        country: new.country,
        warehouses: new.warehouses.iter().map(|w| w.as_str().to_owned()).collect(),
        sourcing: new.sourcing,
        split_penalty_minor: new.split_penalty_minor,
        cart_hold_ttl_seconds: new.cart_hold_ttl_seconds,
        checkout_hold_ttl_seconds: new.checkout_hold_ttl_seconds,
        created_at: at.clone(),
        updated_at: at,
    };
    let inserted = sqlx::query(
        "INSERT INTO channels (code, name, currency, country, sourcing, split_penalty_minor, cart_hold_ttl_seconds, \
         checkout_hold_ttl_seconds, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
         ON CONFLICT (code) DO NOTHING",
    )
    .bind(channel.code.clone())
    .bind(channel.name.clone())
    .bind(channel.currency.to_string())
    .bind(channel.country.clone())
    .bind(channel.sourcing.as_str())
    .bind(channel.split_penalty_minor)
    .bind(channel.cart_hold_ttl_seconds)
    .bind(channel.checkout_hold_ttl_seconds)
    .bind(channel.created_at.clone())
    .bind(channel.updated_at.clone())
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if inserted == 0 {
        return Err(CatalogError::Conflict(format!("a channel with code {} exists already", channel.code)));
    }
    write_warehouses(tx, &channel.code, &channel.warehouses).await?;
    let event = NewEvent::of(format!("channel:{}", channel.code), &ChannelCreated(channel.state()));
    store::outbox::append(tx, &[event], now).await?;
    Ok(channel)
}

pub async fn channel_update(
    tx: &mut Tx,
    code: &ChannelCode,
    patch: ChannelPatch,
    now: Timestamp,
) -> Result<ChannelConfig> {
    let current = channel_in(tx, code).await?;
    if let Some(warehouses) = &patch.warehouses {
        check_warehouses(tx, warehouses).await?;
    }
    let updated = ChannelConfig {
        name: patch.name.unwrap_or(current.name.clone()),
        country: patch.country.unwrap_or(current.country.clone()),
        warehouses: patch
            .warehouses
            .map(|ws| ws.iter().map(|w| w.as_str().to_owned()).collect())
            .unwrap_or(current.warehouses.clone()),
        sourcing: patch.sourcing.unwrap_or(current.sourcing),
        split_penalty_minor: patch.split_penalty_minor.unwrap_or(current.split_penalty_minor),
        cart_hold_ttl_seconds: patch.cart_hold_ttl_seconds.unwrap_or(current.cart_hold_ttl_seconds),
        checkout_hold_ttl_seconds: patch.checkout_hold_ttl_seconds.unwrap_or(current.checkout_hold_ttl_seconds),
        updated_at: now.to_rfc3339(),
        ..current.clone()
    };
    sqlx::query(
        "UPDATE channels SET name = $1, country = $2, sourcing = $3, split_penalty_minor = $4, \
         cart_hold_ttl_seconds = $5, checkout_hold_ttl_seconds = $6, updated_at = $7 WHERE code = $8",
    )
    .bind(updated.name.clone())
    .bind(updated.country.clone())
    .bind(updated.sourcing.as_str())
    .bind(updated.split_penalty_minor)
    .bind(updated.cart_hold_ttl_seconds)
    .bind(updated.checkout_hold_ttl_seconds)
    .bind(updated.updated_at.clone())
    .bind(updated.code.clone())
    .execute(&mut **tx)
    .await?;
    if updated.warehouses != current.warehouses {
        write_warehouses(tx, &updated.code, &updated.warehouses).await?;
    }
    let event = NewEvent::of(format!("channel:{}", updated.code), &ChannelUpdated(updated.state()));
    store::outbox::append(tx, &[event], now).await?;
    Ok(updated)
}

/// One channel with its warehouses, on any connection (a pool's or a transaction's).
pub async fn channel_in(conn: &mut sqlx::AnyConnection, code: &ChannelCode) -> Result<ChannelConfig> {
    let row: Option<ChannelRow> =
        sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM channels WHERE code = $1")))
            .bind(code.as_str().to_owned())
            .fetch_optional(&mut *conn)
            .await?;
    let row = row.ok_or_else(|| CatalogError::NotFound { what: "channel", key: code.to_string() })?;
    let warehouses: Vec<String> =
        sqlx::query_scalar("SELECT warehouse FROM channel_warehouses WHERE channel = $1 ORDER BY position")
            .bind(code.as_str().to_owned())
            .fetch_all(&mut *conn)
            .await?;
    row.into_config(warehouses)
}

pub async fn channel_get(pool: &AnyPool, code: &ChannelCode) -> Result<ChannelConfig> {
    let mut conn = pool.acquire().await?;
    channel_in(&mut conn, code).await
}

/// Channels ordered by code, after the code `after`; with their warehouses, in two queries.
pub async fn channels_list(pool: &AnyPool, after: Option<&str>, limit: u32) -> Result<Vec<ChannelConfig>> {
    let rows: Vec<ChannelRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM channels WHERE ($1 IS NULL OR code > $1) ORDER BY code LIMIT $2"
    )))
    .bind(after.map(str::to_owned))
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    with_warehouses(pool, rows).await
}

/// Every channel with its warehouses: what the availability view sums over. Channels are few
/// (a retailer's storefronts and marketplaces), so the view keeps them all in memory.
pub async fn channels_all(pool: &AnyPool) -> Result<Vec<ChannelConfig>> {
    let rows: Vec<ChannelRow> =
        sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM channels ORDER BY code")))
            .fetch_all(pool)
            .await?;
    with_warehouses(pool, rows).await
}

/// `rows` with their warehouses, read for all of them in one query.
async fn with_warehouses(pool: &AnyPool, rows: Vec<ChannelRow>) -> Result<Vec<ChannelConfig>> {
    let mut warehouses = warehouses_of_all(pool).await?;
    rows.into_iter()
        .map(|row| {
            let list = warehouses.remove(&row.code).unwrap_or_default();
            row.into_config(list)
        })
        .collect()
}

async fn warehouses_of_all(pool: &AnyPool) -> Result<std::collections::HashMap<String, Vec<String>>> {
    let pairs: Vec<(String, String)> =
        sqlx::query_as("SELECT channel, warehouse FROM channel_warehouses ORDER BY channel, position")
            .fetch_all(pool)
            .await?;
    let mut map: std::collections::HashMap<String, Vec<String>> = Default::default();
    for (channel, warehouse) in pairs {
        map.entry(channel).or_default().push(warehouse);
    }
    Ok(map)
}

/// What a shipment from a warehouse to a country costs.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct ShippingRate {
    pub country: String,
    pub currency: String,
    pub base: String,
    /// Per started kilogram.
    pub per_kg: String,
}

#[derive(Debug, Clone)]
pub struct NewShippingRate {
    pub country: String,
    pub currency: Currency,
    pub base_minor: i64,
    pub per_kg_minor: i64,
}

/// A warehouse's shipping rates.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct ShippingRates {
    pub warehouse: String,
    pub rates: Vec<ShippingRate>,
}

/// Replaces a warehouse's shipping rates (one per country and currency).
pub async fn shipping_rates_set(
    tx: &mut Tx,
    warehouse: &WarehouseCode,
    rates: Vec<NewShippingRate>,
    now: Timestamp,
) -> Result<ShippingRates> {
    if warehouse::site::warehouses_known(tx, &[warehouse]).await?.is_empty() {
        return Err(CatalogError::NotFound { what: "warehouse", key: warehouse.to_string() });
    }
    let mut problems = Vec::new();
    for (i, rate) in rates.iter().enumerate() {
        if rates[..i].iter().any(|r| r.country == rate.country && r.currency == rate.currency) {
            problems.push(FieldProblem {
                field: format!("rates[{i}]"),
                message: format!("a rate for {} in {} is listed twice", rate.country, rate.currency),
            });
        }
    }
    if !problems.is_empty() {
        return Err(CatalogError::Invalid(problems));
    }
    sqlx::query("DELETE FROM shipping_rates WHERE warehouse = $1")
        .bind(warehouse.as_str().to_owned())
        .execute(&mut **tx)
        .await?;
    if !rates.is_empty() {
        let mut values = store::sql::Values::new(tx, 5);
        for rate in &rates {
            values
                .row()
                .text(warehouse.as_str())
                .text(rate.country.as_str())
                .text(rate.currency.as_str())
                .int(rate.base_minor)
                .int(rate.per_kg_minor);
        }
        values
            .query(
                "INSERT INTO shipping_rates (warehouse, country, currency, base_minor, per_kg_minor) VALUES {values}",
            )
            .execute(&mut **tx)
            .await?;
    }
    let event = ShippingRatesUpdated {
        warehouse: warehouse.to_string(),
        rates: rates
            .iter()
            .map(|r| ShippingRateState {
                country: r.country.clone(),
                currency: r.currency.to_string(),
                base_minor: r.base_minor,
                per_kg_minor: r.per_kg_minor,
            })
            .collect(),
    };
    store::outbox::append(tx, &[NewEvent::of(format!("shipping_rates:{warehouse}"), &event)], now).await?;
    Ok(ShippingRates { warehouse: warehouse.to_string(), rates: rates.iter().map(rate_view).collect() })
}

fn rate_view(rate: &NewShippingRate) -> ShippingRate {
    ShippingRate {
        country: rate.country.clone(),
        currency: rate.currency.to_string(),
        base: rate.currency.format_amount(rate.base_minor),
        per_kg: rate.currency.format_amount(rate.per_kg_minor),
    }
}

/// A warehouse's shipping rates (none set: an empty list).
pub async fn shipping_rates_get(pool: &AnyPool, warehouse: &WarehouseCode) -> Result<Vec<NewShippingRate>> {
    let rows: Vec<(String, String, i64, i64)> = sqlx::query_as(
        "SELECT country, currency, base_minor, per_kg_minor FROM shipping_rates WHERE warehouse = $1 \
         ORDER BY country, currency",
    )
    .bind(warehouse.as_str().to_owned())
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|(country, currency, base_minor, per_kg_minor)| {
            let currency = Currency::parse(&currency)
                .map_err(|_| store::StoreError::Corrupt(format!("shipping rate currency {currency}")))?;
            Ok(NewShippingRate { country, currency, base_minor, per_kg_minor })
        })
        .collect()
}

pub fn shipping_rates_view(warehouse: &WarehouseCode, rates: &[NewShippingRate]) -> ShippingRates {
    ShippingRates { warehouse: warehouse.to_string(), rates: rates.iter().map(rate_view).collect() }
}

/// The rate of each of `warehouses` that has one for `country` in `currency`, as
/// `(base, per_kg)` in minor units; one query on the caller's connection.
pub async fn shipping_rates_to(
    conn: &mut sqlx::AnyConnection,
    warehouses: &[String],
    country: &str,
    currency: &Currency,
) -> Result<std::collections::HashMap<String, (i64, i64)>> {
    if warehouses.is_empty() {
        return Ok(Default::default());
    }
    let sql = format!(
        "SELECT warehouse, base_minor, per_kg_minor FROM shipping_rates WHERE country = $1 AND currency = $2 AND warehouse IN ({})",
        store::sql::list_placeholders(warehouses.len(), 3)
    );
    let mut query = sqlx::query_as::<_, (String, i64, i64)>(sqlx::AssertSqlSafe(sql))
        .bind(country.to_owned())
        .bind(currency.to_string());
    for warehouse in warehouses {
        query = query.bind(warehouse.clone());
    }
    Ok(query.fetch_all(conn).await?.into_iter().map(|(w, base, per_kg)| (w, (base, per_kg))).collect())
}
