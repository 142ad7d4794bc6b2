//! Money: integer minor units inside, a decimal string in the currency's minor units outside
//! (`"19.99"` EUR, `"1999"` JPY, `"1.250"` KWD). Never a float.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Largest amount in minor units: ten trillion of a two-decimal currency's major unit, far
/// beyond any price or order, and far from `i64` overflow when lines are summed.
pub const AMOUNT_MINOR_MAX: i64 = 1_000_000_000_000_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("must be a three-letter ISO 4217 currency code in capitals")]
    Currency,
    #[error("must be a decimal string with at most {0} decimals, e.g. {1}")]
    Amount(u32, &'static str),
    #[error("is too large")]
    TooLarge,
}

/// An ISO 4217 currency code (`EUR`, `JPY`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Currency(String);

impl Currency {
    pub fn parse(raw: &str) -> Result<Self, MoneyError> {
        if raw.len() == 3 && raw.bytes().all(|b| b.is_ascii_uppercase()) {
            Ok(Self(raw.to_owned()))
        } else {
            Err(MoneyError::Currency)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Decimals of the minor unit (ISO 4217): 0 for JPY and the like, 3 for the dinars, else 2.
    pub fn exponent(&self) -> u32 {
        match self.0.as_str() {
            "BIF" | "CLP" | "DJF" | "GNF" | "ISK" | "JPY" | "KMF" | "KRW" | "PYG" | "RWF" | "UGX" | "UYI" | "VND"
            | "VUV" | "XAF" | "XOF" | "XPF" => 0,
            "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND" => 3,
            _ => 2,
        }
    }

    /// Parses an amount written in this currency's minor units: digits, and at most
    /// [`Currency::exponent`] decimals after a point. Refuses signs, exponents and spaces.
    pub fn parse_amount(&self, raw: &str) -> Result<i64, MoneyError> {
        let exponent = self.exponent();
        let example = match exponent {
            0 => "\"1999\"",
            3 => "\"19.990\"",
            _ => "\"19.99\"",
        };
        let bad = || MoneyError::Amount(exponent, example);
        let (whole, fraction) = match raw.split_once('.') {
            Some((w, f)) => (w, Some(f)),
            None => (raw, None),
        };
        if whole.is_empty() || whole.len() > 19 || !whole.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let fraction = match fraction {
            None => "",
            Some(f) if !f.is_empty() && f.len() <= exponent as usize && f.bytes().all(|b| b.is_ascii_digit()) => f,
            Some(_) => return Err(bad()),
        };
        let scale = 10_i64.pow(exponent);
        let whole: i64 = whole.parse().map_err(|_| MoneyError::TooLarge)?;
        let padded = format!("{fraction:0<width$}", width = exponent as usize);
        let fraction: i64 = if padded.is_empty() { 0 } else { padded.parse().map_err(|_| bad())? };
        let minor = whole.checked_mul(scale).and_then(|w| w.checked_add(fraction)).ok_or(MoneyError::TooLarge)?;
        if minor > AMOUNT_MINOR_MAX {
            return Err(MoneyError::TooLarge);
        }
        Ok(minor)
    }

    /// Formats minor units as the API writes them: always with all the currency's decimals.
    pub fn format_amount(&self, minor: i64) -> String {
        let exponent = self.exponent();
        if exponent == 0 {
            return minor.to_string();
        }
        let scale = 10_i64.pow(exponent);
        let sign = if minor < 0 { "-" } else { "" };
        let abs = minor.unsigned_abs();
        format!("{sign}{}.{:0width$}", abs / scale as u64, abs % scale as u64, width = exponent as usize)
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_follow_the_currency_minor_unit() {
        let eur = Currency::parse("EUR").unwrap();
        assert_eq!(eur.parse_amount("19.99"), Ok(1999));
        assert_eq!(eur.parse_amount("19.9"), Ok(1990));
        assert_eq!(eur.parse_amount("19"), Ok(1900));
        assert_eq!(eur.format_amount(1990), "19.90");
        assert_eq!(eur.format_amount(5), "0.05");
        let jpy = Currency::parse("JPY").unwrap();
        assert_eq!(jpy.parse_amount("1999"), Ok(1999));
        assert!(jpy.parse_amount("19.99").is_err());
        assert_eq!(jpy.format_amount(1999), "1999");
        let kwd = Currency::parse("KWD").unwrap();
        assert_eq!(kwd.parse_amount("1.25"), Ok(1250));
        assert_eq!(kwd.format_amount(1250), "1.250");
    }

    #[test]
    fn malformed_amounts_are_refused() {
        let eur = Currency::parse("EUR").unwrap();
        for raw in ["", "-1", "+1", "1.", ".5", "1.999", "1e3", " 1", "1,00", "abc", "99999999999999999999"] {
            assert!(eur.parse_amount(raw).is_err(), "{raw:?}");
        }
        assert!(Currency::parse("eur").is_err());
        assert!(Currency::parse("EURO").is_err());
    }

    #[test]
    fn formatting_round_trips() {
        for code in ["EUR", "JPY", "KWD"] {
            let c = Currency::parse(code).unwrap();
            for minor in [0, 1, 99, 100, 123_456, AMOUNT_MINOR_MAX] {
                assert_eq!(c.parse_amount(&c.format_amount(minor)), Ok(minor), "{code} {minor}");
            }
        }
    }
}
