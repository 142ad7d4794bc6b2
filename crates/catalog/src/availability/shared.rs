//! The shared tier: Redis, for many replicas (`--redis-url`). Values are sealed
//! ([`super::keys::Keyer::seal`]) under keys nobody without the secret can compute; a value
//! that does not unseal, or is older than an invalidation this replica has seen, is rejected
//! and counted, and the read goes to the database. Redis failing is never an error of the
//! read: the tier is skipped (and counted) and the in-process cache and the database answer.

use super::keys::CacheKey;
use redis::aio::ConnectionManager;
use std::time::Duration;

/// Longest a Redis round trip may take before the tier is skipped for that read: well above a
/// loopback or LAN round trip, well below the database read it would save.
const SHARED_TIMEOUT: Duration = Duration::from_millis(250);

#[derive(Clone)]
pub struct SharedTier {
    connection: ConnectionManager,
}

impl std::fmt::Debug for SharedTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedTier(redis)")
    }
}

/// The Redis key of a cache key: a fixed prefix and the HMAC in hex.
pub fn redis_key(key: &CacheKey) -> String {
    let mut out = String::with_capacity(8 + 64);
    out.push_str("sr:avl:");
    for b in key {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

impl SharedTier {
    /// Connects (and checks the server answers); the manager reconnects by itself later.
    pub async fn connect(url: &str) -> Result<Self, redis::RedisError> {
        let client = redis::Client::open(url)?;
        let mut connection = ConnectionManager::new(client).await?;
        redis::cmd("PING").query_async::<String>(&mut connection).await?;
        Ok(Self { connection })
    }

    /// The stored values of `keys`, in order (`None` where absent); `None` if Redis failed.
    pub async fn get_many(&self, keys: &[CacheKey]) -> Option<Vec<Option<Vec<u8>>>> {
        if keys.is_empty() {
            return Some(Vec::new());
        }
        let names: Vec<String> = keys.iter().map(redis_key).collect();
        let mut connection = self.connection.clone();
        let mut command = redis::cmd("MGET");
        command.arg(&names);
        let query = command.query_async::<Vec<Option<Vec<u8>>>>(&mut connection);
        match tokio::time::timeout(SHARED_TIMEOUT, query).await {
            Ok(Ok(values)) if values.len() == keys.len() => Some(values),
            Ok(Ok(_)) => None,
            Ok(Err(error)) => {
                tracing::warn!(%error, "the shared availability cache failed; reading without it");
                metrics::counter!("stockroom_availability_shared_errors_total").increment(1);
                None
            }
            Err(_) => {
                metrics::counter!("stockroom_availability_shared_errors_total").increment(1);
                None
            }
        }
    }

    /// Stores sealed values with their TTLs (ms), in one round trip; failures are counted only.
    pub async fn put_many(&self, values: Vec<(CacheKey, Vec<u8>, i64)>) {
        if values.is_empty() {
            return;
        }
        let mut pipe = redis::pipe();
        for (key, value, ttl_ms) in &values {
            pipe.cmd("SET").arg(redis_key(key)).arg(value.as_slice()).arg("PX").arg((*ttl_ms).max(1)).ignore();
        }
        let mut connection = self.connection.clone();
        let sent = pipe.query_async::<()>(&mut connection);
        if !matches!(tokio::time::timeout(SHARED_TIMEOUT, sent).await, Ok(Ok(()))) {
            metrics::counter!("stockroom_availability_shared_errors_total").increment(1);
        }
    }

    /// Drops `keys` (an invalidation); failures are counted only: the `seq` check on read
    /// rejects what a failed delete left behind.
    pub async fn delete_many(&self, keys: &[CacheKey]) {
        if keys.is_empty() {
            return;
        }
        let names: Vec<String> = keys.iter().map(redis_key).collect();
        let mut connection = self.connection.clone();
        let mut command = redis::cmd("DEL");
        command.arg(&names);
        let sent = command.query_async::<i64>(&mut connection);
        if !matches!(tokio::time::timeout(SHARED_TIMEOUT, sent).await, Ok(Ok(_))) {
            metrics::counter!("stockroom_availability_shared_errors_total").increment(1);
        }
    }
}
