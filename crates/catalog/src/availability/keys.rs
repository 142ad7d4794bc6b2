//! Cache keys and sealed values.
//!
//! A key is HMAC-SHA256 of the logical key (channel and SKU) under the server's secret, so
//! nobody without the secret can predict where an entry lives in a shared cache, let alone
//! write one there ahead of time. A value bound for a shared tier is sealed: it carries its
//! own MAC over the key and the value (so it cannot be forged or moved under another key) and
//! the `seq` it reflects (so an older value can be told from a newer one).

use super::Snapshot;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

pub type CacheKey = [u8; 32];

/// The server secret, keyed once.
#[derive(Clone)]
pub struct Keyer {
    mac: Hmac<Sha256>,
    salt: u64,
}

impl std::fmt::Debug for Keyer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keyer(..)")
    }
}

#[derive(Serialize, Deserialize)]
struct Sealed {
    channel: String,
    sku: String,
    known: bool,
    available: i64,
    backorder: bool,
    amount_minor: Option<i64>,
    compare_at_minor: Option<i64>,
    seq: i64,
    read_at_ms: i64,
    /// Hex HMAC-SHA256 of the key and every field above.
    mac: String,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Keyer {
    pub fn new(secret: &[u8]) -> Self {
        let mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("HMAC takes keys of any length");
        // A per-process salt for TTL jitter, derived from the secret so it is unpredictable
        // outside the server.
        let mut salted = mac.clone();
        salted.update(b"ttl-jitter");
        let bytes = salted.finalize().into_bytes();
        let salt = u64::from_le_bytes(bytes[..8].try_into().expect("32 bytes"));
        Self { mac, salt }
    }

    pub fn key(&self, channel: &str, sku: &str) -> CacheKey {
        let mut mac = self.mac.clone();
        mac.update(b"availability\x1f");
        mac.update(channel.as_bytes());
        mac.update(b"\x1f");
        mac.update(sku.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// An unpredictable number for `key` and `seq`, for jitter.
    pub fn jitter(&self, key: &CacheKey, seq: i64) -> u64 {
        let mut x = u64::from_le_bytes(key[..8].try_into().expect("32 bytes")) ^ self.salt ^ (seq as u64);
        // splitmix64's finalizer: spreads the bits so nearby seqs give unrelated numbers.
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^ (x >> 31)
    }

    fn value_mac(&self, key: &CacheKey, sealed: &Sealed) -> String {
        let mut mac = self.mac.clone();
        mac.update(b"value\x1f");
        mac.update(key);
        let fields = serde_json::json!([
            sealed.channel,
            sealed.sku,
            sealed.known,
            sealed.available,
            sealed.backorder,
            sealed.amount_minor,
            sealed.compare_at_minor,
            sealed.seq,
            sealed.read_at_ms
        ]);
        mac.update(fields.to_string().as_bytes());
        hex(&mac.finalize().into_bytes())
    }

    /// The value as a shared tier stores it under `key`.
    pub fn seal(&self, key: &CacheKey, channel: &str, snapshot: &Snapshot) -> Vec<u8> {
        let mut sealed = Sealed {
            channel: channel.to_owned(),
            sku: snapshot.sku.clone(),
            known: snapshot.known,
            available: snapshot.available,
            backorder: snapshot.backorder,
            amount_minor: snapshot.price_minor.map(|p| p.0),
            compare_at_minor: snapshot.price_minor.and_then(|p| p.1),
            seq: snapshot.seq,
            read_at_ms: snapshot.read_at_ms,
            mac: String::new(),
        };
        sealed.mac = self.value_mac(key, &sealed);
        serde_json::to_vec(&sealed).expect("plain data serializes")
    }

    /// The value read from a shared tier under `key` for `channel`, if it is genuine (its MAC
    /// checks under this secret and names this key) and reflects at least `min_seq`.
    pub fn unseal(&self, key: &CacheKey, channel: &str, bytes: &[u8], min_seq: i64) -> Result<Snapshot, Rejected> {
        let sealed: Sealed = serde_json::from_slice(bytes).map_err(|_| Rejected::Forged)?;
        let expected = self.value_mac(key, &sealed);
        // Compare in constant time: the MAC is the secret's witness.
        let same = sealed.mac.len() == expected.len()
            && sealed.mac.bytes().zip(expected.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
        if !same || sealed.channel != channel || self.key(&sealed.channel, &sealed.sku) != *key {
            return Err(Rejected::Forged);
        }
        if sealed.seq < min_seq {
            return Err(Rejected::Older);
        }
        Ok(Snapshot {
            sku: sealed.sku,
            known: sealed.known,
            available: sealed.available,
            backorder: sealed.backorder,
            price_minor: sealed.amount_minor.map(|a| (a, sealed.compare_at_minor)),
            seq: sealed.seq,
            read_at_ms: sealed.read_at_ms,
        })
    }
}

/// Why a value from a shared tier was not used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// Not written by a holder of the secret, or moved from another key.
    Forged,
    /// Older than an invalidation this server has seen.
    Older,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(available: i64, seq: i64) -> Snapshot {
        Snapshot {
            sku: "SKU-1".into(),
            known: true,
            available,
            backorder: false,
            price_minor: Some((1999, None)),
            seq,
            read_at_ms: 1,
        }
    }

    #[test]
    fn keys_depend_on_the_secret_and_the_logical_key() {
        let a = Keyer::new(b"secret-a");
        let b = Keyer::new(b"secret-b");
        assert_ne!(a.key("web", "SKU-1"), b.key("web", "SKU-1"));
        assert_ne!(a.key("web", "SKU-1"), a.key("web", "SKU-2"));
        // The separator keeps ("ab", "c") and ("a", "bc") apart.
        assert_ne!(a.key("ab", "c"), a.key("a", "bc"));
        assert_eq!(a.key("web", "SKU-1"), a.key("web", "SKU-1"));
    }

    #[test]
    fn sealed_values_round_trip_and_forgeries_are_rejected() {
        let keyer = Keyer::new(b"secret");
        let key = keyer.key("web", "SKU-1");
        let sealed = keyer.seal(&key, "web", &snapshot(5, 10));
        assert_eq!(keyer.unseal(&key, "web", &sealed, 0), Ok(snapshot(5, 10)));

        // Written by someone without the secret.
        let forger = Keyer::new(b"guess");
        assert_eq!(keyer.unseal(&key, "web", &forger.seal(&key, "web", &snapshot(0, 99)), 0), Err(Rejected::Forged));
        // A genuine value with a figure changed.
        let tampered = String::from_utf8(sealed.clone()).unwrap().replace("\"available\":5", "\"available\":0");
        assert_eq!(keyer.unseal(&key, "web", tampered.as_bytes(), 0), Err(Rejected::Forged));
        // A genuine value moved under another key.
        let other = keyer.key("web", "SKU-2");
        assert_eq!(keyer.unseal(&other, "web", &sealed, 0), Err(Rejected::Forged));
        // Garbage.
        assert_eq!(keyer.unseal(&key, "web", b"{}", 0), Err(Rejected::Forged));
        // Older than an invalidation seen.
        assert_eq!(keyer.unseal(&key, "web", &sealed, 11), Err(Rejected::Older));
    }
}
