//! Codes and ids: parsed once at the edge, then trusted.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Why a code was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodeError {
    #[error("must be 1 to 64 characters")]
    Length,
    #[error("may contain only A-Z a-z 0-9 . _ -")]
    Charset,
}

fn check_code(raw: &str) -> Result<(), CodeError> {
    if raw.is_empty() || raw.len() > 64 {
        return Err(CodeError::Length);
    }
    if !raw.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')) {
        return Err(CodeError::Charset);
    }
    Ok(())
}

macro_rules! code_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn parse(raw: impl Into<String>) -> Result<Self, CodeError> {
                let raw = raw.into();
                check_code(&raw)?;
                Ok(Self(raw))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(d)?;
                Self::parse(raw).map_err(serde::de::Error::custom)
            }
        }

        impl std::str::FromStr for $name {
            type Err = CodeError;
            fn from_str(s: &str) -> Result<Self, CodeError> {
                Self::parse(s)
            }
        }
    };
}

code_type!(
    /// A SKU code: 1 to 64 characters of `A-Z a-z 0-9 . _ -`.
    SkuCode
);
code_type!(
    /// A warehouse code: 1 to 64 characters of `A-Z a-z 0-9 . _ -`.
    WarehouseCode
);
code_type!(
    /// A channel code (where a retailer sells): 1 to 64 characters of `A-Z a-z 0-9 . _ -`.
    ChannelCode
);
code_type!(
    /// A product handle: 1 to 64 characters of `A-Z a-z 0-9 . _ -`.
    ProductHandle
);

/// A reservation id, made by the server (UUID v7: time-ordered, so inserts stay local in
/// the index).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ReservationId(String);

impl ReservationId {
    pub fn new() -> Self {
        Self(format!("res_{}", uuid::Uuid::now_v7().simple()))
    }

    /// Accepts any id of the right shape; whether it exists is the store's question.
    pub fn parse(raw: &str) -> Option<Self> {
        let ok = raw.len() <= 64 && raw.starts_with("res_") && raw[4..].bytes().all(|b| b.is_ascii_hexdigit());
        ok.then(|| Self(raw.to_owned()))
    }

    pub fn from_stored(raw: String) -> Self {
        Self(raw)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for ReservationId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for ReservationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_accept_the_documented_alphabet_and_length() {
        assert!(SkuCode::parse("TSHIRT-RED_M.1").is_ok());
        assert!(SkuCode::parse("a".repeat(64)).is_ok());
        assert_eq!(SkuCode::parse("").unwrap_err(), CodeError::Length);
        assert_eq!(SkuCode::parse("a".repeat(65)).unwrap_err(), CodeError::Length);
        assert_eq!(WarehouseCode::parse("BER 1").unwrap_err(), CodeError::Charset);
        assert_eq!(WarehouseCode::parse("BÉR").unwrap_err(), CodeError::Charset);
    }

    #[test]
    fn reservation_ids_round_trip_and_reject_other_shapes() {
        let id = ReservationId::new();
        assert_eq!(ReservationId::parse(id.as_str()), Some(id));
        assert_eq!(ReservationId::parse("res_xyz"), None);
        assert_eq!(ReservationId::parse("../etc"), None);
    }
}
