//! Quantities of units in a request line.

use crate::limits::QUANTITY_MAX;
use serde::Serialize;

/// A quantity in a request line: 1 to [`QUANTITY_MAX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Quantity(i64);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("must be between 1 and {QUANTITY_MAX}")]
pub struct QuantityError;

impl Quantity {
    pub fn new(units: i64) -> Result<Self, QuantityError> {
        if (1..=QUANTITY_MAX).contains(&units) { Ok(Self(units)) } else { Err(QuantityError) }
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

impl<'de> serde::Deserialize<'de> for Quantity {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let units = i64::deserialize(d)?;
        Quantity::new(units).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantity_is_bounded_on_both_sides() {
        assert!(Quantity::new(0).is_err());
        assert!(Quantity::new(-1).is_err());
        assert!(Quantity::new(QUANTITY_MAX + 1).is_err());
        assert_eq!(Quantity::new(QUANTITY_MAX).unwrap().get(), QUANTITY_MAX);
    }
}
