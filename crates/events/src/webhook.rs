//! Webhook endpoints and their deliveries: create (the secret shown once), read, list, rotate
//! the secret, delete, list deliveries, retry one, replay from a `seq`.

use crate::{EventsError, EventsSettings, FieldProblem, Result};
use kernel::Timestamp;
use serde::Serialize;
use std::net::IpAddr;
use std::time::Duration;
use store::outbox::EventFilter;
use store::{Db, Tx};

/// Longest URL accepted.
pub const URL_CHARS_MAX: usize = 2048;
/// Most type filters per endpoint.
pub const FILTERS_MAX: usize = 64;
/// Largest page of deliveries.
pub const DELIVERIES_PAGE_MAX: u32 = 1000;

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Webhook {
    pub id: String,
    pub url: String,
    /// Type filters: exact names, `prefix.*`, or `*`.
    pub events: Vec<String>,
    /// `healthy`, `failing` (recent failures, still sending) or `open` (the circuit breaker is
    /// open: only a probe is sent after each cool-down).
    #[schema(example = "healthy")]
    pub state: &'static str,
    /// `false` once the receiver answered 410 Gone; nothing is sent to it any more.
    pub active: bool,
    pub disabled_reason: Option<String>,
    /// The newest event `seq` delivered.
    pub last_delivered_seq: i64,
    /// Every event up to this `seq` has a delivery row, or did not match the filters.
    pub queued_through_seq: i64,
    pub consecutive_failures: i64,
    /// While the breaker is open: when the next probe may go.
    pub breaker_open_until: Option<String>,
    /// After a rotation: until when the previous secret also signs.
    pub previous_secret_until: Option<String>,
    pub created_at: String,
}

/// A webhook with its secret: only in the answers that create or rotate it.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct WebhookWithSecret {
    #[serde(flatten)]
    pub webhook: Webhook,
    /// `whsec_<base64>`: shown once.
    pub secret: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Delivery {
    pub id: String,
    pub webhook: String,
    pub event_seq: i64,
    /// The event's id: the `webhook-id` header of every attempt.
    pub event_id: String,
    pub event_type: String,
    pub aggregate: String,
    pub aggregate_seq: i64,
    /// `pending`, `delivered`, `failed` (will be retried) or `dead` (dead-lettered after the
    /// retry window).
    #[schema(example = "delivered")]
    pub status: String,
    pub attempts: i64,
    pub next_attempt_at: Option<String>,
    pub last_attempt_at: Option<String>,
    /// The receiver's last HTTP status, if it answered.
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub delivered_at: Option<String>,
    pub created_at: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct DeliveryPage {
    pub items: Vec<Delivery>,
    pub next: Option<String>,
}

pub const DELIVERY_STATUSES: [&str; 4] = ["pending", "delivered", "failed", "dead"];

#[derive(sqlx::FromRow)]
pub(crate) struct WebhookRow {
    pub id: String,
    pub url: String,
    pub events: String,
    pub secret: String,
    pub previous_secret: Option<String>,
    pub previous_secret_until_ms: Option<i64>,
    pub active: i64,
    pub disabled_reason: Option<String>,
    pub cursor_seq: i64,
    pub last_delivered_seq: i64,
    pub consecutive_failures: i64,
    pub breaker_open_until_ms: Option<i64>,
    pub created_at: String,
}

pub(crate) const WEBHOOK_COLUMNS: &str = "id, url, events, secret, previous_secret, previous_secret_until_ms, active, \
     disabled_reason, cursor_seq, last_delivered_seq, consecutive_failures, breaker_open_until_ms, created_at";

impl WebhookRow {
    pub(crate) fn filters(&self) -> Vec<String> {
        serde_json::from_str(&self.events).unwrap_or_default()
    }

    fn into_webhook(self, breaker_failures: i64) -> Webhook {
        let at = |ms: Option<i64>| ms.map(|m| Timestamp::from_millis(m).to_rfc3339());
        Webhook {
            state: state_of(self.consecutive_failures, breaker_failures),
            events: self.filters(),
            active: self.active != 0,
            breaker_open_until: if self.consecutive_failures >= breaker_failures {
                at(self.breaker_open_until_ms)
            } else {
                None
            },
            previous_secret_until: at(self.previous_secret_until_ms.filter(|_| self.previous_secret.is_some())),
            id: self.id,
            url: self.url,
            disabled_reason: self.disabled_reason,
            last_delivered_seq: self.last_delivered_seq,
            queued_through_seq: self.cursor_seq,
            consecutive_failures: self.consecutive_failures,
            created_at: self.created_at,
        }
    }
}

pub(crate) fn state_of(failures: i64, breaker_failures: i64) -> &'static str {
    if failures >= breaker_failures {
        "open"
    } else if failures > 0 {
        "failing"
    } else {
        "healthy"
    }
}

/// The store's filter for an endpoint's type filters.
pub(crate) fn event_filter(filters: &[String]) -> EventFilter {
    let mut filter = EventFilter::default();
    if filters.iter().any(|f| f == "*") {
        return filter;
    }
    for f in filters {
        match f.strip_suffix('*') {
            Some(prefix) => filter.type_prefixes.push(prefix.to_owned()),
            None => filter.types.push(f.clone()),
        }
    }
    filter
}

/// Whether `ip` is loopback, private, link-local, shared (CGNAT), unspecified, broadcast or
/// documentation space: somewhere a key holder should not make Stockroom call.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_multicast()
                || o[0] == 0
                || o[0] >= 240
                || (o[0] == 100 && (o[1] & 0xC0) == 64)
                || (o[0] == 198 && (o[1] & 0xFE) == 18)
                || (o[0] == 192 && o[1] == 0 && o[2] == 0)
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            // An IPv4 address inside (mapped, compatible, NAT64, 6to4) is judged as itself.
            let embedded = match s {
                [0, 0, 0, 0, 0, 0xffff, hi, lo] | [0, 0, 0, 0, 0, 0, hi, lo] | [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => {
                    Some((hi, lo))
                }
                [0x2002, hi, lo, ..] => Some((hi, lo)),
                _ => None,
            };
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] & 0xffc0) == 0xfec0
                || embedded.is_some_and(|(hi, lo)| {
                    let v4 = std::net::Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
                    is_private(IpAddr::V4(v4))
                })
        }
    }
}

/// Checks a webhook URL: http or https, a host, and (unless private addresses are allowed) no
/// host that is or resolves to a private address. Redirects are never followed, so the
/// address checked is the address called; the relay's resolver checks again at each call.
pub async fn check_url(raw: &str, allow_private: bool, problems: &mut Vec<FieldProblem>) -> Option<reqwest::Url> {
    let mut refuse = |message: String| problems.push(FieldProblem { field: "url".into(), message });
    if raw.chars().count() > URL_CHARS_MAX {
        refuse(format!("must be at most {URL_CHARS_MAX} characters"));
        return None;
    }
    let url = match reqwest::Url::parse(raw) {
        Ok(url) => url,
        Err(e) => {
            refuse(format!("is not a URL: {e}"));
            return None;
        }
    };
    if !matches!(url.scheme(), "http" | "https") {
        refuse("must be http or https".into());
        return None;
    }
    let Some(host) = url.host() else {
        refuse("must name a host".into());
        return None;
    };
    if allow_private {
        return Some(url);
    }
    let private = match host {
        url::Host::Ipv4(ip) => is_private(IpAddr::V4(ip)),
        url::Host::Ipv6(ip) => is_private(IpAddr::V6(ip)),
        url::Host::Domain(name) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            if name == "localhost" || name.ends_with(".localhost") {
                true
            } else {
                let port = url.port_or_known_default().unwrap_or(443);
                match tokio::time::timeout(Duration::from_secs(3), tokio::net::lookup_host((name.as_str(), port))).await
                {
                    Ok(Ok(addrs)) => {
                        let addrs: Vec<_> = addrs.collect();
                        if addrs.is_empty() {
                            refuse(format!("host {name} has no address"));
                            return None;
                        }
                        addrs.iter().any(|a| is_private(a.ip()))
                    }
                    Ok(Err(e)) => {
                        refuse(format!("host {name} does not resolve: {e}"));
                        return None;
                    }
                    Err(_) => {
                        refuse(format!("host {name} did not resolve in time"));
                        return None;
                    }
                }
            }
        }
    };
    if private {
        refuse("is a loopback or private address (allowed only with --webhook-allow-private)".into());
        return None;
    }
    Some(url)
}

/// Checks type filters against the known event types: each an exact known name, `prefix.*`
/// matching at least one, or `*`.
pub fn check_filters(filters: &[String], known: &[&str], problems: &mut Vec<FieldProblem>) {
    if filters.is_empty() {
        problems.push(FieldProblem { field: "events".into(), message: "must name at least one event type".into() });
    }
    if filters.len() > FILTERS_MAX {
        problems
            .push(FieldProblem { field: "events".into(), message: format!("must have at most {FILTERS_MAX} filters") });
        return;
    }
    for (i, f) in filters.iter().enumerate() {
        let ok = match f.strip_suffix(".*") {
            _ if f == "*" => true,
            Some(prefix) => !prefix.is_empty() && known.iter().any(|k| k.starts_with(&format!("{prefix}."))),
            None => known.contains(&f.as_str()),
        };
        if !ok {
            problems.push(FieldProblem {
                field: format!("events[{i}]"),
                message: format!("{f} is not an event type (GET /v1/event-types), a `prefix.*` of one, or `*`"),
            });
        }
    }
}

fn invalid_if_any(problems: Vec<FieldProblem>) -> Result<()> {
    if problems.is_empty() { Ok(()) } else { Err(EventsError::Invalid(problems)) }
}

/// Creates an endpoint that receives events committed from now on.
pub async fn create(
    db: &Db,
    settings: &EventsSettings,
    known: &[&str],
    url: &str,
    filters: Vec<String>,
    now: Timestamp,
) -> Result<WebhookWithSecret> {
    let mut problems = Vec::new();
    let checked = check_url(url, settings.allow_private, &mut problems).await;
    check_filters(&filters, known, &mut problems);
    invalid_if_any(problems)?;
    let url = checked.expect("checked above").to_string();
    let id = uuid::Uuid::now_v7().to_string();
    let secret = crate::signature::new_secret();
    let mut tx = db.begin().await?;
    let head = store::outbox::committed_head_in(&mut tx).await?;
    sqlx::query(
        "INSERT INTO webhooks (id, url, events, secret, active, cursor_seq, last_delivered_seq, \
         consecutive_failures, created_at, updated_at_ms) VALUES ($1, $2, $3, $4, 1, $5, 0, 0, $6, $7)",
    )
    .bind(id.clone())
    .bind(url)
    .bind(serde_json::to_string(&filters).expect("strings serialize"))
    .bind(secret.clone())
    .bind(head)
    .bind(now.to_rfc3339())
    .bind(now.millis())
    .execute(&mut *tx)
    .await?;
    let webhook = get_in(&mut tx, &id, settings).await?;
    tx.commit().await?;
    Ok(WebhookWithSecret { webhook, secret })
}

pub(crate) async fn row_in(tx: &mut Tx, id: &str) -> Result<WebhookRow> {
    sqlx::query_as::<_, WebhookRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE id = $1"
    )))
    .bind(id.to_owned())
    .fetch_optional(&mut **tx)
    .await?
    .ok_or_else(|| EventsError::NotFound { what: "webhook", key: id.to_owned() })
}

async fn get_in(tx: &mut Tx, id: &str, settings: &EventsSettings) -> Result<Webhook> {
    Ok(row_in(tx, id).await?.into_webhook(settings.breaker_failures))
}

pub async fn get(db: &Db, id: &str, settings: &EventsSettings) -> Result<Webhook> {
    sqlx::query_as::<_, WebhookRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE id = $1"
    )))
    .bind(id.to_owned())
    .fetch_optional(db.reader())
    .await?
    .map(|r| r.into_webhook(settings.breaker_failures))
    .ok_or_else(|| EventsError::NotFound { what: "webhook", key: id.to_owned() })
}

pub async fn list(db: &Db, settings: &EventsSettings) -> Result<Vec<Webhook>> {
    let rows = sqlx::query_as::<_, WebhookRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {WEBHOOK_COLUMNS} FROM webhooks ORDER BY id"
    )))
    .fetch_all(db.reader())
    .await?;
    Ok(rows.into_iter().map(|r| r.into_webhook(settings.breaker_failures)).collect())
}

/// Deletes the endpoint and its delivery records.
pub async fn delete(db: &Db, id: &str) -> Result<()> {
    let mut tx = db.begin().await?;
    row_in(&mut tx, id).await?;
    sqlx::query("DELETE FROM webhook_deliveries WHERE webhook = $1").bind(id.to_owned()).execute(&mut *tx).await?;
    sqlx::query("DELETE FROM webhooks WHERE id = $1").bind(id.to_owned()).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(())
}

/// A new secret, shown once; the old one keeps signing (beside the new) for the overlap.
pub async fn rotate_secret(db: &Db, id: &str, settings: &EventsSettings, now: Timestamp) -> Result<WebhookWithSecret> {
    let mut tx = db.begin().await?;
    let row = row_in(&mut tx, id).await?;
    let secret = crate::signature::new_secret();
    let until = now.millis() + settings.secret_overlap.as_millis() as i64;
    sqlx::query(
        "UPDATE webhooks SET secret = $1, previous_secret = $2, previous_secret_until_ms = $3, updated_at_ms = $4 \
         WHERE id = $5",
    )
    .bind(secret.clone())
    .bind(row.secret)
    .bind(until)
    .bind(now.millis())
    .bind(id.to_owned())
    .execute(&mut *tx)
    .await?;
    let webhook = get_in(&mut tx, id, settings).await?;
    tx.commit().await?;
    Ok(WebhookWithSecret { webhook, secret })
}

/// Queues every matching event from `from_seq` on again (deliveries already made stay as they
/// are; receivers see repeats with the same `webhook-id`).
pub async fn replay(db: &Db, id: &str, from_seq: i64, settings: &EventsSettings, now: Timestamp) -> Result<Webhook> {
    let mut tx = db.begin().await?;
    let row = row_in(&mut tx, id).await?;
    let head = store::outbox::committed_head_in(&mut tx).await?;
    if from_seq < 1 || from_seq > head + 1 {
        return Err(EventsError::Invalid(vec![FieldProblem {
            field: "from_seq".into(),
            message: format!("must be between 1 and {} (the next event)", head + 1),
        }]));
    }
    // Never forward: events the cursor has not reached yet are still to be queued.
    sqlx::query("UPDATE webhooks SET cursor_seq = $1, updated_at_ms = $2 WHERE id = $3")
        .bind((from_seq - 1).min(row.cursor_seq))
        .bind(now.millis())
        .bind(id.to_owned())
        .execute(&mut *tx)
        .await?;
    let webhook = get_in(&mut tx, id, settings).await?;
    tx.commit().await?;
    Ok(webhook)
}

#[derive(sqlx::FromRow)]
struct DeliveryRow {
    id: String,
    webhook: String,
    event_seq: i64,
    event_id: String,
    event_type: String,
    aggregate: String,
    aggregate_seq: i64,
    status: String,
    attempts: i64,
    next_attempt_at_ms: i64,
    last_attempt_at_ms: Option<i64>,
    last_status: Option<i64>,
    last_error: Option<String>,
    delivered_at_ms: Option<i64>,
    created_at_ms: i64,
}

const DELIVERY_COLUMNS: &str = "id, webhook, event_seq, event_id, event_type, aggregate, aggregate_seq, status, \
     attempts, next_attempt_at_ms, last_attempt_at_ms, last_status, last_error, delivered_at_ms, created_at_ms";

impl From<DeliveryRow> for Delivery {
    fn from(r: DeliveryRow) -> Self {
        let at = |ms: i64| Timestamp::from_millis(ms).to_rfc3339();
        let waiting = matches!(r.status.as_str(), "pending" | "failed");
        Delivery {
            next_attempt_at: waiting.then(|| at(r.next_attempt_at_ms)),
            last_attempt_at: r.last_attempt_at_ms.map(at),
            delivered_at: r.delivered_at_ms.map(at),
            created_at: at(r.created_at_ms),
            id: r.id,
            webhook: r.webhook,
            event_seq: r.event_seq,
            event_id: r.event_id,
            event_type: r.event_type,
            aggregate: r.aggregate,
            aggregate_seq: r.aggregate_seq,
            status: r.status,
            attempts: r.attempts,
            last_status: r.last_status,
            last_error: r.last_error,
        }
    }
}

/// A page of an endpoint's deliveries, newest event first, optionally of one status. `after`
/// is the cursor: the `(event_seq, id)` of the last delivery of the previous page.
pub async fn deliveries(
    db: &Db,
    webhook: &str,
    status: Option<&str>,
    after: Option<(i64, String)>,
    limit: u32,
) -> Result<DeliveryPage> {
    let mut tx = db.reader().begin().await?;
    row_in(&mut tx, webhook).await?;
    let mut sql = format!("SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE webhook = $1");
    let mut n = 1;
    if status.is_some() {
        n += 1;
        sql.push_str(&format!(" AND status = ${n}"));
    }
    if after.is_some() {
        sql.push_str(&format!(" AND (event_seq < ${} OR (event_seq = ${} AND id < ${}))", n + 1, n + 1, n + 2));
        n += 2;
    }
    sql.push_str(&format!(" ORDER BY event_seq DESC, id DESC LIMIT ${}", n + 1));
    let mut query = sqlx::query_as::<_, DeliveryRow>(sqlx::AssertSqlSafe(sql)).bind(webhook.to_owned());
    if let Some(s) = status {
        query = query.bind(s.to_owned());
    }
    if let Some((seq, id)) = &after {
        query = query.bind(*seq).bind(id.clone());
    }
    let mut rows = query.bind(i64::from(limit) + 1).fetch_all(&mut *tx).await?;
    tx.rollback().await?;
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let next =
        more.then(|| rows.last().map(|r| kernel::page::encode_cursor(&format!("{}:{}", r.event_seq, r.id)))).flatten();
    Ok(DeliveryPage { items: rows.into_iter().map(Delivery::from).collect(), next })
}

/// Sends a failed or dead-lettered delivery again now, with a fresh retry window.
pub async fn retry(db: &Db, webhook: &str, delivery: &str, now: Timestamp) -> Result<Delivery> {
    let mut tx = db.begin().await?;
    let row = row_in(&mut tx, webhook).await?;
    if row.active == 0 {
        return Err(EventsError::Conflict(format!("webhook {webhook} is disabled; nothing is sent to it")));
    }
    let found = sqlx::query_as::<_, DeliveryRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE id = $1 AND webhook = $2"
    )))
    .bind(delivery.to_owned())
    .bind(webhook.to_owned())
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| EventsError::NotFound { what: "delivery", key: delivery.to_owned() })?;
    if !matches!(found.status.as_str(), "failed" | "dead") {
        return Err(EventsError::Conflict(format!(
            "delivery {delivery} is {}; only failed or dead deliveries are retried",
            found.status
        )));
    }
    sqlx::query(
        "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at_ms = $1, window_started_ms = NULL \
         WHERE id = $2",
    )
    .bind(now.millis())
    .bind(delivery.to_owned())
    .execute(&mut *tx)
    .await?;
    let updated = sqlx::query_as::<_, DeliveryRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE id = $1"
    )))
    .bind(delivery.to_owned())
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(updated.into())
}

#[cfg(test)]
mod tests {
    use super::is_private;

    #[test]
    fn private_and_special_addresses_are_refused_public_ones_are_not() {
        for private in [
            "127.0.0.1",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "240.0.0.1",
            "198.18.0.1",
            "192.0.0.8",
            "192.0.2.1",
            "::1",
            "::",
            "fc00::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
            "2002:a00:1::",
            "::a00:1",
        ] {
            assert!(is_private(private.parse().unwrap()), "{private} passed as public");
        }
        for public in ["93.184.215.14", "8.8.8.8", "2606:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"] {
            assert!(!is_private(public.parse().unwrap()), "{public} refused as private");
        }
    }
}
