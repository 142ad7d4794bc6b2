//! Promotions: percentage, fixed and buy-x-get-y discounts with conditions, and their uses.
//!
//! A use is taken at checkout with a guarded update (`uses_taken < usage_limit`, and the
//! customer's own count below `per_customer_limit`), in the order's transaction, like stock:
//! held while the order awaits payment, kept when it is paid, given back when it is
//! cancelled or expires. A `CHECK` on `uses_taken <= usage_limit` backs the rule.

use crate::Result;
use crate::error::OrderError;
use crate::events::PromotionSaved;
use kernel::{Currency, NewEvent, Timestamp};
use serde::{Deserialize, Serialize};
use sqlx::AnyPool;
use store::Tx;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// `value` percent off.
    Percentage,
    /// `value` off, in the channel's currency: off the order, or off each matching unit.
    Fixed,
    /// For every `buy` matching units, the next `get` (the cheapest of each group) are
    /// `value` percent off (`"100"`: free).
    BuyXGetY,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Percentage => "percentage",
            Kind::Fixed => "fixed",
            Kind::BuyXGetY => "buy_x_get_y",
        }
    }

    fn parse(raw: &str) -> Result<Self> {
        Ok(match raw {
            "percentage" => Kind::Percentage,
            "fixed" => Kind::Fixed,
            "buy_x_get_y" => Kind::BuyXGetY,
            other => return Err(store::StoreError::Corrupt(format!("promotion kind {other}")).into()),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// The whole order's subtotal.
    Order,
    /// Only the lines that match the conditions' SKUs or categories.
    Items,
}

impl Target {
    pub fn as_str(self) -> &'static str {
        match self {
            Target::Order => "order",
            Target::Items => "items",
        }
    }

    fn parse(raw: &str) -> Result<Self> {
        Ok(match raw {
            "order" => Target::Order,
            "items" => Target::Items,
            other => return Err(store::StoreError::Corrupt(format!("promotion target {other}")).into()),
        })
    }
}

/// Basis points in 100 percent.
pub const PERCENT_BASIS: i64 = 10_000;

/// A promotion as the context uses it; amounts in the channel currency's minor units,
/// percentages in basis points.
#[derive(Debug, Clone, PartialEq)]
pub struct Promotion {
    pub code: String,
    pub channel: String,
    pub currency: Currency,
    pub kind: Kind,
    pub value: i64,
    pub target: Target,
    pub buy: Option<i64>,
    pub get: Option<i64>,
    pub min_subtotal_minor: Option<i64>,
    pub skus: Vec<String>,
    pub categories: Vec<String>,
    pub first_order_only: bool,
    pub starts_at_ms: Option<i64>,
    pub ends_at_ms: Option<i64>,
    pub usage_limit: Option<i64>,
    pub per_customer_limit: Option<i64>,
    pub uses_taken: i64,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Conditions {
    pub min_subtotal: Option<String>,
    pub skus: Vec<String>,
    pub categories: Vec<String>,
    pub first_order_only: bool,
}

/// A promotion as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct PromotionView {
    pub code: String,
    pub channel: String,
    pub kind: Kind,
    /// Percent for `percentage` and `buy_x_get_y`; an amount in the channel's currency for
    /// `fixed`.
    pub value: String,
    pub target: Target,
    /// For `buy_x_get_y`.
    pub buy: Option<i64>,
    pub get: Option<i64>,
    pub conditions: Conditions,
    pub starts_at: Option<String>,
    pub ends_at: Option<String>,
    pub usage_limit: Option<i64>,
    pub per_customer_limit: Option<i64>,
    /// Uses held by orders awaiting payment plus uses kept by paid orders.
    pub uses_taken: i64,
    pub created_at: String,
    pub updated_at: String,
}

pub fn format_percent(basis_points: i64) -> String {
    let whole = basis_points / 100;
    match basis_points % 100 {
        0 => whole.to_string(),
        f if f % 10 == 0 => format!("{whole}.{}", f / 10),
        f => format!("{whole}.{f:02}"),
    }
}

/// A percentage as given (`"10"`, `"12.5"`, at most two decimals, above 0 and at most 100)
/// in basis points.
pub fn parse_percent(raw: &str) -> std::result::Result<i64, String> {
    let bad = || {
        format!(
            "must be a percentage above 0 and at most 100 with at most two decimals, e.g. \"10\" or \"12.5\"; got {raw:?}"
        )
    };
    let (whole, fraction) = raw.split_once('.').unwrap_or((raw, ""));
    if whole.is_empty() || whole.len() > 3 || fraction.len() > 2 || (raw.contains('.') && fraction.is_empty()) {
        return Err(bad());
    }
    if !whole.bytes().chain(fraction.bytes()).all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let whole: i64 = whole.parse().map_err(|_| bad())?;
    let fraction: i64 = if fraction.is_empty() { 0 } else { format!("{fraction:0<2}").parse().map_err(|_| bad())? };
    let points = whole * 100 + fraction;
    if points <= 0 || points > PERCENT_BASIS { Err(bad()) } else { Ok(points) }
}

impl Promotion {
    pub fn view(&self) -> PromotionView {
        let at = |ms: Option<i64>| ms.map(|m| Timestamp::from_millis(m).to_rfc3339());
        PromotionView {
            code: self.code.clone(),
            channel: self.channel.clone(),
            kind: self.kind,
            value: match self.kind {
                Kind::Fixed => self.currency.format_amount(self.value),
                Kind::Percentage | Kind::BuyXGetY => format_percent(self.value),
            },
            target: self.target,
            buy: self.buy,
            get: self.get,
            conditions: Conditions {
                min_subtotal: self.min_subtotal_minor.map(|m| self.currency.format_amount(m)),
                skus: self.skus.clone(),
                categories: self.categories.clone(),
                first_order_only: self.first_order_only,
            },
            starts_at: at(self.starts_at_ms),
            ends_at: at(self.ends_at_ms),
            usage_limit: self.usage_limit,
            per_customer_limit: self.per_customer_limit,
            uses_taken: self.uses_taken,
            created_at: self.created_at.clone(),
            updated_at: self.updated_at.clone(),
        }
    }

    /// Whether a line counts for the conditions: any line when no SKUs or categories are
    /// named; else its SKU is named or its category is a named one or below it.
    pub fn matches(&self, sku: &str, category: Option<&str>) -> bool {
        if self.skus.is_empty() && self.categories.is_empty() {
            return true;
        }
        self.skus.iter().any(|s| s == sku)
            || category.is_some_and(|c| {
                self.categories
                    .iter()
                    .any(|named| c == named || c.strip_prefix(named.as_str()).is_some_and(|rest| rest.starts_with('/')))
            })
    }
}

// ---------------------------------------------------------------- rules

/// An order line as promotions see it: what is billed.
#[derive(Debug, Clone, PartialEq)]
pub struct PricedLine {
    pub sku: String,
    pub quantity: i64,
    pub unit_price_minor: i64,
    pub category: Option<String>,
}

impl PricedLine {
    pub fn amount(&self) -> i64 {
        self.quantity * self.unit_price_minor
    }
}

/// Why a promotion does not apply to an order, or `None` when it does. `prior_orders`: the
/// customer's orders not cancelled, counted up to 1 (`None`: no customer).
pub fn ineligibility(
    promotion: &Promotion,
    channel: &str,
    lines: &[PricedLine],
    prior_orders: Option<i64>,
    now: Timestamp,
) -> Option<String> {
    if promotion.channel != channel {
        return Some(format!("{} is a promotion of channel {}", promotion.code, promotion.channel));
    }
    if promotion.starts_at_ms.is_some_and(|s| now.millis() < s) {
        return Some(format!("{} has not started yet", promotion.code));
    }
    if promotion.ends_at_ms.is_some_and(|e| now.millis() >= e) {
        return Some(format!("{} has expired", promotion.code));
    }
    let subtotal: i64 = lines.iter().map(PricedLine::amount).sum();
    if let Some(min) = promotion.min_subtotal_minor
        && subtotal < min
    {
        return Some(format!(
            "{} needs a subtotal of at least {}",
            promotion.code,
            promotion.currency.format_amount(min)
        ));
    }
    if !lines.iter().any(|l| l.quantity > 0 && promotion.matches(&l.sku, l.category.as_deref())) {
        return Some(format!("{} applies to none of these items", promotion.code));
    }
    if promotion.first_order_only {
        match prior_orders {
            None => {
                return Some(format!(
                    "{} is for a customer's first order, and this cart has no customer",
                    promotion.code
                ));
            }
            Some(n) if n > 0 => return Some(format!("{} is for a customer's first order only", promotion.code)),
            Some(_) => {}
        }
    }
    if promotion.per_customer_limit.is_some() && prior_orders.is_none() {
        return Some(format!("{} is limited per customer, and this cart has no customer", promotion.code));
    }
    None
}

/// Spreads `total` over lines in proportion to `weights` (rounding down, the rest to the
/// first lines with room), never giving a line more than its weight.
fn spread(total: i64, weights: &[i64]) -> Vec<i64> {
    let sum: i64 = weights.iter().sum();
    if sum <= 0 || total <= 0 {
        return vec![0; weights.len()];
    }
    let total = total.min(sum);
    let mut shares: Vec<i64> =
        weights.iter().map(|w| (i128::from(total) * i128::from(*w) / i128::from(sum)) as i64).collect();
    let mut rest = total - shares.iter().sum::<i64>();
    for (share, weight) in shares.iter_mut().zip(weights) {
        if rest == 0 {
            break;
        }
        let room = (weight - *share).min(rest);
        *share += room;
        rest -= room;
    }
    shares
}

fn percent_of(amount: i64, basis_points: i64) -> i64 {
    (i128::from(amount) * i128::from(basis_points) / i128::from(PERCENT_BASIS)) as i64
}

/// The discount of one promotion per line, given what earlier promotions took (`taken`): a
/// line never goes below 0.
pub fn discounts(promotion: &Promotion, lines: &[PricedLine], taken: &[i64]) -> Vec<i64> {
    let remaining: Vec<i64> = lines.iter().zip(taken).map(|(l, t)| (l.amount() - t).max(0)).collect();
    let matching: Vec<bool> = lines.iter().map(|l| promotion.matches(&l.sku, l.category.as_deref())).collect();
    let eligible: Vec<i64> = remaining
        .iter()
        .zip(&matching)
        .map(|(r, m)| if *m || promotion.target == Target::Order { *r } else { 0 })
        .collect();
    match (promotion.kind, promotion.target) {
        (Kind::Percentage, Target::Order) => spread(percent_of(eligible.iter().sum(), promotion.value), &eligible),
        (Kind::Percentage, Target::Items) => eligible.iter().map(|r| percent_of(*r, promotion.value)).collect(),
        (Kind::Fixed, Target::Order) => spread(promotion.value, &eligible),
        (Kind::Fixed, Target::Items) => lines
            .iter()
            .zip(&eligible)
            .map(|(l, r)| if *r > 0 { (promotion.value.saturating_mul(l.quantity)).min(*r) } else { 0 })
            .collect(),
        (Kind::BuyXGetY, _) => {
            let (buy, get) = (promotion.buy.unwrap_or(1).max(1), promotion.get.unwrap_or(1).max(1));
            // Matching units, dearest first: in each group of buy + get, the last `get` units
            // (the group's cheapest) are discounted.
            let mut units: Vec<(i64, usize)> = Vec::new();
            for (i, line) in lines.iter().enumerate() {
                if matching[i] {
                    units.extend(std::iter::repeat_n(
                        (line.unit_price_minor, i),
                        line.quantity.clamp(0, 100_000) as usize,
                    ));
                }
            }
            units.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
            let group = (buy + get) as usize;
            let mut off = vec![0i64; lines.len()];
            for chunk in units.chunks(group).filter(|c| c.len() == group) {
                for (price, i) in &chunk[buy as usize..] {
                    off[*i] += percent_of(*price, promotion.value);
                }
            }
            off.iter().zip(&remaining).map(|(o, r)| (*o).min(*r)).collect()
        }
    }
}

/// Applies promotions in order; the discount of each per line.
pub fn apply_all(promotions: &[Promotion], lines: &[PricedLine]) -> Vec<Vec<i64>> {
    let mut taken = vec![0i64; lines.len()];
    promotions
        .iter()
        .map(|p| {
            let off = discounts(p, lines, &taken);
            for (t, o) in taken.iter_mut().zip(&off) {
                *t += o;
            }
            off
        })
        .collect()
}

// ---------------------------------------------------------------- store

#[derive(sqlx::FromRow)]
struct PromotionRow {
    code: String,
    channel: String,
    kind: String,
    value: i64,
    target: String,
    buy_quantity: Option<i64>,
    get_quantity: Option<i64>,
    min_subtotal_minor: Option<i64>,
    skus: String,
    categories: String,
    first_order_only: i64,
    starts_at_ms: Option<i64>,
    ends_at_ms: Option<i64>,
    usage_limit: Option<i64>,
    per_customer_limit: Option<i64>,
    uses_taken: i64,
    created_at: String,
    updated_at: String,
}

const COLUMNS: &str = "code, channel, kind, value, target, buy_quantity, get_quantity, min_subtotal_minor, skus, categories, \
     first_order_only, starts_at_ms, ends_at_ms, usage_limit, per_customer_limit, uses_taken, created_at, updated_at";

fn from_row(row: PromotionRow, currency: Currency) -> Result<Promotion> {
    let corrupt = |what: &str| OrderError::Store(store::StoreError::Corrupt(format!("promotion {what}")));
    Ok(Promotion {
        code: row.code,
        channel: row.channel,
        currency,
        kind: Kind::parse(&row.kind)?,
        value: row.value,
        target: Target::parse(&row.target)?,
        buy: row.buy_quantity,
        get: row.get_quantity,
        min_subtotal_minor: row.min_subtotal_minor,
        skus: serde_json::from_str(&row.skus).map_err(|_| corrupt("skus"))?,
        categories: serde_json::from_str(&row.categories).map_err(|_| corrupt("categories"))?,
        first_order_only: row.first_order_only == 1,
        starts_at_ms: row.starts_at_ms,
        ends_at_ms: row.ends_at_ms,
        usage_limit: row.usage_limit,
        per_customer_limit: row.per_customer_limit,
        uses_taken: row.uses_taken,
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

/// A promotion's rules as given (amounts already parsed in the channel's currency).
#[derive(Debug, Clone)]
pub struct NewPromotion {
    pub code: String,
    pub channel: kernel::ChannelCode,
    pub kind: Kind,
    pub value: i64,
    pub target: Target,
    pub buy: Option<i64>,
    pub get: Option<i64>,
    pub min_subtotal_minor: Option<i64>,
    pub skus: Vec<String>,
    pub categories: Vec<String>,
    pub first_order_only: bool,
    pub starts_at_ms: Option<i64>,
    pub ends_at_ms: Option<i64>,
    pub usage_limit: Option<i64>,
    pub per_customer_limit: Option<i64>,
}

pub async fn promotion_create(tx: &mut Tx, new: NewPromotion, now: Timestamp) -> Result<Promotion> {
    let channel = catalog::channel::channel_in(tx, &new.channel).await.map_err(|e| match e {
        catalog::CatalogError::NotFound { .. } => {
            OrderError::invalid("channel", format!("channel {} does not exist", new.channel))
        }
        other => other.into(),
    })?;
    let exists: Option<String> = sqlx::query_scalar("SELECT code FROM promotions WHERE code = $1")
        .bind(new.code.clone())
        .fetch_optional(&mut **tx)
        .await?;
    if exists.is_some() {
        return Err(OrderError::conflict(format!("promotion {} exists already", new.code)));
    }
    let at = now.to_rfc3339();
    sqlx::query(
        "INSERT INTO promotions (code, channel, kind, value, target, buy_quantity, get_quantity, min_subtotal_minor, skus, categories, \
         first_order_only, starts_at_ms, ends_at_ms, usage_limit, per_customer_limit, uses_taken, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, 0, $16, $16)",
    )
    .bind(new.code.clone())
    .bind(new.channel.as_str().to_owned())
    .bind(new.kind.as_str())
    .bind(new.value)
    .bind(new.target.as_str())
    .bind(new.buy)
    .bind(new.get)
    .bind(new.min_subtotal_minor)
    .bind(serde_json::to_string(&new.skus).unwrap_or_default())
    .bind(serde_json::to_string(&new.categories).unwrap_or_default())
    .bind(i64::from(new.first_order_only))
    .bind(new.starts_at_ms)
    .bind(new.ends_at_ms)
    .bind(new.usage_limit)
    .bind(new.per_customer_limit)
    .bind(at.clone())
    .execute(&mut **tx)
    .await?;
    let promotion = promotion_in(tx, &new.code, &channel.currency).await?;
    saved_event(tx, &promotion, now).await?;
    Ok(promotion)
}

async fn saved_event(tx: &mut Tx, promotion: &Promotion, now: Timestamp) -> Result<()> {
    let event = PromotionSaved {
        code: promotion.code.clone(),
        channel: promotion.channel.clone(),
        kind: promotion.kind.as_str().to_owned(),
        usage_limit: promotion.usage_limit,
        per_customer_limit: promotion.per_customer_limit,
    };
    store::outbox::append(tx, &[NewEvent::of(format!("promotion:{}", promotion.code), &event)], now).await?;
    Ok(())
}

async fn promotion_in(conn: &mut sqlx::AnyConnection, code: &str, currency: &Currency) -> Result<Promotion> {
    let row: Option<PromotionRow> =
        sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM promotions WHERE code = $1")))
            .bind(code.to_owned())
            .fetch_optional(conn)
            .await?;
    from_row(row.ok_or_else(|| OrderError::not_found("promotion", code))?, currency.clone())
}

/// The promotions named by `codes` that exist, in the channel currency given.
pub async fn promotions_named(
    conn: &mut sqlx::AnyConnection,
    codes: &[String],
    currency: &Currency,
) -> Result<Vec<Promotion>> {
    if codes.is_empty() {
        return Ok(Vec::new());
    }
    let sql =
        format!("SELECT {COLUMNS} FROM promotions WHERE code IN ({})", store::sql::list_placeholders(codes.len(), 1));
    let mut query = sqlx::query_as::<_, PromotionRow>(sqlx::AssertSqlSafe(sql));
    for code in codes {
        query = query.bind(code.clone());
    }
    query.fetch_all(conn).await?.into_iter().map(|r| from_row(r, currency.clone())).collect()
}

async fn currency_of_channel(pool: &AnyPool, channel: &str) -> Result<Currency> {
    let code =
        kernel::ChannelCode::parse(channel).map_err(|_| store::StoreError::Corrupt(format!("channel {channel}")))?;
    Ok(catalog::channel::channel_get(pool, &code).await?.currency)
}

pub async fn promotion_get(pool: &AnyPool, code: &str) -> Result<Promotion> {
    let channel: Option<String> = sqlx::query_scalar("SELECT channel FROM promotions WHERE code = $1")
        .bind(code.to_owned())
        .fetch_optional(pool)
        .await?;
    let channel = channel.ok_or_else(|| OrderError::not_found("promotion", code))?;
    let currency = currency_of_channel(pool, &channel).await?;
    let mut conn = pool.acquire().await?;
    promotion_in(&mut conn, code, &currency).await
}

/// Promotions by code, optionally of one channel, after a cursor.
pub async fn promotions_list(
    pool: &AnyPool,
    channel: Option<&str>,
    after: Option<&str>,
    limit: u32,
) -> Result<Vec<Promotion>> {
    let rows: Vec<PromotionRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM promotions WHERE ($1 IS NULL OR channel = $1) AND code > $2 ORDER BY code LIMIT $3"
    )))
    .bind(channel.map(str::to_owned))
    .bind(after.unwrap_or("").to_owned())
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    let mut currencies: std::collections::HashMap<String, Currency> = Default::default();
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let currency = match currencies.get(&row.channel) {
            Some(c) => c.clone(),
            None => {
                let c = currency_of_channel(pool, &row.channel).await?;
                currencies.insert(row.channel.clone(), c.clone());
                c
            }
        };
        out.push(from_row(row, currency)?);
    }
    Ok(out)
}

/// A merge patch of a promotion's rules: `None` keeps a field, `Some(None)` clears it.
#[derive(Debug, Clone, Default)]
pub struct PromotionPatch {
    pub value: Option<i64>,
    pub min_subtotal_minor: Option<Option<i64>>,
    pub skus: Option<Vec<String>>,
    pub categories: Option<Vec<String>>,
    pub first_order_only: Option<bool>,
    pub starts_at_ms: Option<Option<i64>>,
    pub ends_at_ms: Option<Option<i64>>,
    pub usage_limit: Option<Option<i64>>,
    pub per_customer_limit: Option<Option<i64>>,
}

pub async fn promotion_update(tx: &mut Tx, code: &str, patch: PromotionPatch, now: Timestamp) -> Result<Promotion> {
    let channel: Option<String> = sqlx::query_scalar("SELECT channel FROM promotions WHERE code = $1")
        .bind(code.to_owned())
        .fetch_optional(&mut **tx)
        .await?;
    let channel = channel.ok_or_else(|| OrderError::not_found("promotion", code))?;
    let channel = catalog::channel::channel_in(
        tx,
        &kernel::ChannelCode::parse(&channel).map_err(|_| store::StoreError::Corrupt(format!("channel {channel}")))?,
    )
    .await?;
    let mut current = promotion_in(tx, code, &channel.currency).await?;
    if let Some(v) = patch.value {
        current.value = v;
    }
    if let Some(v) = patch.min_subtotal_minor {
        current.min_subtotal_minor = v;
    }
    if let Some(v) = patch.skus {
        current.skus = v;
    }
    if let Some(v) = patch.categories {
        current.categories = v;
    }
    if let Some(v) = patch.first_order_only {
        current.first_order_only = v;
    }
    if let Some(v) = patch.starts_at_ms {
        current.starts_at_ms = v;
    }
    if let Some(v) = patch.ends_at_ms {
        current.ends_at_ms = v;
    }
    if let Some(v) = patch.usage_limit {
        current.usage_limit = v;
    }
    if let Some(v) = patch.per_customer_limit {
        current.per_customer_limit = v;
    }
    if let Some(limit) = current.usage_limit
        && limit < current.uses_taken
    {
        return Err(OrderError::invalid(
            "usage_limit",
            format!("{limit} is below the {} uses already held or kept", current.uses_taken),
        ));
    }
    if let (Some(s), Some(e)) = (current.starts_at_ms, current.ends_at_ms)
        && e <= s
    {
        return Err(OrderError::invalid("ends_at", "must be after starts_at"));
    }
    sqlx::query(
        "UPDATE promotions SET value = $2, min_subtotal_minor = $3, skus = $4, categories = $5, first_order_only = $6, \
         starts_at_ms = $7, ends_at_ms = $8, usage_limit = $9, per_customer_limit = $10, updated_at = $11 WHERE code = $1",
    )
    .bind(code.to_owned())
    .bind(current.value)
    .bind(current.min_subtotal_minor)
    .bind(serde_json::to_string(&current.skus).unwrap_or_default())
    .bind(serde_json::to_string(&current.categories).unwrap_or_default())
    .bind(i64::from(current.first_order_only))
    .bind(current.starts_at_ms)
    .bind(current.ends_at_ms)
    .bind(current.usage_limit)
    .bind(current.per_customer_limit)
    .bind(now.to_rfc3339())
    .execute(&mut **tx)
    .await?;
    let promotion = promotion_in(tx, code, &channel.currency).await?;
    saved_event(tx, &promotion, now).await?;
    Ok(promotion)
}

/// Takes one use of each promotion for an order, in the caller's transaction: refused
/// (nothing taken) when a promotion's uses are all held or used, or the customer's are.
/// `field_of(i)` names the request field of the i-th promotion in a refusal.
pub async fn take_uses(
    tx: &mut Tx,
    order_id: &str,
    customer: Option<&str>,
    applied: &[(&Promotion, i64)],
    field_of: impl Fn(&str) -> String,
) -> Result<()> {
    for (promotion, discount) in applied {
        let taken = sqlx::query(
            "UPDATE promotions SET uses_taken = uses_taken + 1 WHERE code = $1 AND (usage_limit IS NULL OR uses_taken < usage_limit)",
        )
        .bind(promotion.code.clone())
        .execute(&mut **tx)
        .await?
        .rows_affected();
        if taken != 1 {
            return Err(OrderError::conflict(format!(
                "{}: every use of promotion {} is held or used",
                field_of(&promotion.code),
                promotion.code
            )));
        }
        if let (Some(limit), Some(customer)) = (promotion.per_customer_limit, customer) {
            let taken = sqlx::query(
                "INSERT INTO promotion_customer_uses (code, customer, taken) SELECT $1, $2, 1 WHERE $3 >= 1 \
                 ON CONFLICT (code, customer) DO UPDATE SET taken = promotion_customer_uses.taken + 1 \
                 WHERE promotion_customer_uses.taken < $3",
            )
            .bind(promotion.code.clone())
            .bind(customer.to_owned())
            .bind(limit)
            .execute(&mut **tx)
            .await?
            .rows_affected();
            if taken != 1 {
                return Err(OrderError::conflict(format!(
                    "{}: customer {customer} has used promotion {} {limit} time(s), its limit",
                    field_of(&promotion.code),
                    promotion.code
                )));
            }
        }
        sqlx::query(
            "INSERT INTO promotion_uses (order_id, code, customer, status, discount_minor) VALUES ($1, $2, $3, 'held', $4)",
        )
        .bind(order_id.to_owned())
        .bind(promotion.code.clone())
        .bind(customer.map(str::to_owned))
        .bind(*discount)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// An order's uses are kept (it was paid).
pub async fn keep_uses(tx: &mut Tx, order_id: &str) -> Result<()> {
    sqlx::query("UPDATE promotion_uses SET status = 'kept' WHERE order_id = $1 AND status = 'held'")
        .bind(order_id.to_owned())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// An order's uses, held or kept, are given back (it was cancelled or expired).
pub async fn release_uses(tx: &mut Tx, order_id: &str) -> Result<usize> {
    let uses: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT code, customer FROM promotion_uses WHERE order_id = $1 AND status IN ('held', 'kept') ORDER BY code",
    )
    .bind(order_id.to_owned())
    .fetch_all(&mut **tx)
    .await?;
    for (code, customer) in &uses {
        sqlx::query("UPDATE promotions SET uses_taken = uses_taken - 1 WHERE code = $1")
            .bind(code.clone())
            .execute(&mut **tx)
            .await?;
        if let Some(customer) = customer {
            sqlx::query(
                "UPDATE promotion_customer_uses SET taken = taken - 1 WHERE code = $1 AND customer = $2 AND taken > 0",
            )
            .bind(code.clone())
            .bind(customer.clone())
            .execute(&mut **tx)
            .await?;
        }
    }
    sqlx::query("UPDATE promotion_uses SET status = 'released' WHERE order_id = $1 AND status IN ('held', 'kept')")
        .bind(order_id.to_owned())
        .execute(&mut **tx)
        .await?;
    Ok(uses.len())
}

/// Uses per promotion and status, for reconciliation: `(code, held, kept, uses_taken)`.
pub async fn use_counts(pool: &AnyPool, code: &str) -> Result<(i64, i64, i64)> {
    let (held, kept): (i64, i64) = sqlx::query_as(
        "SELECT CAST(COALESCE(SUM(CASE WHEN status = 'held' THEN 1 ELSE 0 END), 0) AS BIGINT), \
                CAST(COALESCE(SUM(CASE WHEN status = 'kept' THEN 1 ELSE 0 END), 0) AS BIGINT) \
         FROM promotion_uses WHERE code = $1",
    )
    .bind(code.to_owned())
    .fetch_one(pool)
    .await?;
    let taken: i64 = sqlx::query_scalar("SELECT uses_taken FROM promotions WHERE code = $1")
        .bind(code.to_owned())
        .fetch_one(pool)
        .await?;
    Ok((held, kept, taken))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn promotion(kind: Kind, value: i64, target: Target) -> Promotion {
        Promotion {
            code: "P".into(),
            channel: "web".into(),
            currency: Currency::parse("EUR").unwrap(),
            kind,
            value,
            target,
            buy: Some(2),
            get: Some(1),
            min_subtotal_minor: None,
            skus: vec![],
            categories: vec![],
            first_order_only: false,
            starts_at_ms: None,
            ends_at_ms: None,
            usage_limit: None,
            per_customer_limit: None,
            uses_taken: 0,
            created_at: String::new(),
            updated_at: String::new(),
        }
    }

    fn line(sku: &str, quantity: i64, price: i64, category: Option<&str>) -> PricedLine {
        PricedLine { sku: sku.into(), quantity, unit_price_minor: price, category: category.map(str::to_owned) }
    }

    #[test]
    fn percentages_parse_strictly() {
        assert_eq!(parse_percent("10"), Ok(1000));
        assert_eq!(parse_percent("12.5"), Ok(1250));
        assert_eq!(parse_percent("100"), Ok(10_000));
        for bad in ["0", "100.01", "-5", "1.234", "abc", "", ".5", "5."] {
            assert!(parse_percent(bad).is_err(), "{bad}");
        }
        assert_eq!(format_percent(1250), "12.5");
        assert_eq!(format_percent(1000), "10");
        assert_eq!(format_percent(1005), "10.05");
    }

    #[test]
    fn an_order_percentage_is_spread_and_sums_exactly() {
        let lines = [line("A", 1, 999, None), line("B", 3, 333, None)];
        let off = discounts(&promotion(Kind::Percentage, 1000, Target::Order), &lines, &[0, 0]);
        assert_eq!(off.iter().sum::<i64>(), (999 + 999) / 10);
    }

    #[test]
    fn an_items_promotion_touches_only_matching_lines() {
        let mut p = promotion(Kind::Fixed, 100, Target::Items);
        p.categories = vec!["apparel".into()];
        let lines = [
            line("A", 2, 500, Some("apparel/tops")),
            line("B", 1, 500, Some("apparelx")),
            line("C", 1, 50, Some("apparel")),
        ];
        assert_eq!(discounts(&p, &lines, &[0, 0, 0]), vec![200, 0, 50]);
    }

    #[test]
    fn buy_two_get_one_frees_the_cheapest_of_each_group() {
        let p = promotion(Kind::BuyXGetY, PERCENT_BASIS, Target::Items);
        let lines = [line("A", 2, 1000, None), line("B", 2, 400, None)];
        // Units 1000, 1000, 400 | 400: one full group, its cheapest (400) is free.
        assert_eq!(discounts(&p, &lines, &[0, 0]), vec![0, 400]);
    }

    #[test]
    fn a_fixed_discount_never_takes_a_line_below_zero() {
        let lines = [line("A", 1, 300, None)];
        let all = apply_all(
            &[promotion(Kind::Fixed, 250, Target::Order), promotion(Kind::Fixed, 250, Target::Order)],
            &lines,
        );
        assert_eq!(all, vec![vec![250], vec![50]]);
    }

    #[test]
    fn conditions_are_checked_in_order() {
        let mut p = promotion(Kind::Percentage, 1000, Target::Order);
        p.min_subtotal_minor = Some(5000);
        let now = Timestamp::from_millis(1_000);
        assert!(ineligibility(&p, "web", &[line("A", 1, 4999, None)], Some(0), now).unwrap().contains("subtotal"));
        assert!(ineligibility(&p, "web", &[line("A", 1, 5000, None)], Some(0), now).is_none());
        assert!(ineligibility(&p, "other", &[line("A", 1, 5000, None)], Some(0), now).unwrap().contains("channel"));
        p.first_order_only = true;
        assert!(ineligibility(&p, "web", &[line("A", 1, 5000, None)], Some(1), now).unwrap().contains("first order"));
        assert!(ineligibility(&p, "web", &[line("A", 1, 5000, None)], None, now).unwrap().contains("no customer"));
        p.first_order_only = false;
        p.ends_at_ms = Some(1_000);
        assert!(ineligibility(&p, "web", &[line("A", 1, 5000, None)], Some(0), now).unwrap().contains("expired"));
    }
}
