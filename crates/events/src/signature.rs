//! Standard Webhooks signatures (<https://www.standardwebhooks.com/>): the signed content is
//! `{webhook-id}.{webhook-timestamp}.{body}`, the key is the base64 part of the secret
//! `whsec_<base64>`, the signature HMAC-SHA256, sent as `v1,<base64>`; several signatures
//! (during a secret rotation) are separated by spaces.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

const PREFIX: &str = "whsec_";

/// A new secret: 32 bytes from the operating system's generator (two v4 UUIDs' 244 random
/// bits), base64, with the `whsec_` prefix.
pub fn new_secret() -> String {
    let mut key = [0u8; 32];
    key[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    key[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    format!("{PREFIX}{}", B64.encode(key))
}

fn mac(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Option<Hmac<Sha256>> {
    let key = B64.decode(secret.strip_prefix(PREFIX)?).ok()?;
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&key).ok()?;
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Some(mac)
}

/// `v1,<base64 HMAC-SHA256>` of the message under `secret`; `None` for a malformed secret.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Option<String> {
    let tag = mac(secret, id, timestamp, body)?.finalize().into_bytes();
    Some(format!("v1,{}", B64.encode(tag)))
}

/// Whether any `v1` signature of the `webhook-signature` header is the message's under
/// `secret` (compared in constant time). What a receiver does; the tests use it.
pub fn verify(secret: &str, id: &str, timestamp: i64, body: &[u8], header: &str) -> bool {
    header
        .split(' ')
        .filter_map(|s| s.strip_prefix("v1,"))
        .filter_map(|s| B64.decode(s).ok())
        .any(|tag| mac(secret, id, timestamp, body).is_some_and(|m| m.verify_slice(&tag).is_ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_and_a_tampered_body_does_not() {
        let secret = new_secret();
        assert!(secret.starts_with("whsec_"));
        let signature = sign(&secret, "msg_1", 1_700_000_000, b"{\"a\":1}").unwrap();
        assert!(verify(&secret, "msg_1", 1_700_000_000, b"{\"a\":1}", &signature));
        assert!(!verify(&secret, "msg_1", 1_700_000_000, b"{\"a\":2}", &signature));
        assert!(!verify(&secret, "msg_2", 1_700_000_000, b"{\"a\":1}", &signature));
        assert!(!verify(&secret, "msg_1", 1_700_000_001, b"{\"a\":1}", &signature));
        assert!(!verify(&new_secret(), "msg_1", 1_700_000_000, b"{\"a\":1}", &signature));
        // Two signatures during a rotation: either secret verifies.
        let other = new_secret();
        let both = format!("{} {}", sign(&other, "m", 1, b"x").unwrap(), sign(&secret, "m", 1, b"x").unwrap());
        assert!(verify(&secret, "m", 1, b"x", &both) && verify(&other, "m", 1, b"x", &both));
    }

    #[test]
    fn the_standard_webhooks_example_verifies() {
        // The example of the Standard Webhooks specification's reference libraries.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body).unwrap(),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }
}
