//! How a warehouse picks and packs: where pick walks start (the dock) and how much a package
//! may weigh off what it should. A warehouse that never set them uses [`Settings::default`].

use crate::Result;
use kernel::{Timestamp, WarehouseCode};
use serde::{Deserialize, Serialize};
use store::Tx;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"dock_x": 0.0, "dock_y": 0.0, "packaging_grams": 120, "tolerance_percent": 5.0, "tolerance_grams": 50}))]
pub struct Settings {
    /// Where pick walks start and end, in the bins' coordinates (metres).
    pub dock_x: f64,
    pub dock_y: f64,
    /// Added to the items' weights for each package (box, filler, label).
    pub packaging_grams: i64,
    /// A package may weigh off its expected weight by the larger of this share of it...
    pub tolerance_percent: f64,
    /// ...and this many grams.
    pub tolerance_grams: i64,
}

impl Default for Settings {
    /// A dock at the origin, no packaging weight, 5 % or 50 g: a common scale's tolerance.
    fn default() -> Self {
        Self { dock_x: 0.0, dock_y: 0.0, packaging_grams: 0, tolerance_percent: 5.0, tolerance_grams: 50 }
    }
}

/// What a package is allowed to weigh off its expected weight.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, utoipa::ToSchema)]
pub struct WeightTolerance {
    pub percent: f64,
    pub grams: i64,
}

impl Settings {
    pub const COORDINATE_MAX: f64 = 100_000.0;
    pub const GRAMS_MAX: i64 = 1_000_000;

    pub fn tolerance(&self) -> WeightTolerance {
        WeightTolerance { percent: self.tolerance_percent, grams: self.tolerance_grams }
    }

    /// The largest difference in grams allowed for a package expected to weigh `expected`.
    pub fn allowed_difference(&self, expected: i64) -> i64 {
        let share = (expected as f64 * self.tolerance_percent / 100.0).round() as i64;
        share.max(self.tolerance_grams)
    }

    /// Every bad field, named.
    pub fn issues(&self) -> Vec<warehouse::FieldIssue> {
        let mut issues = Vec::new();
        let mut bad = |field: &str, message: &str| issues.push(warehouse::FieldIssue::new(field, message));
        for (field, value) in [("dock_x", self.dock_x), ("dock_y", self.dock_y)] {
            if !value.is_finite() || value.abs() > Self::COORDINATE_MAX {
                bad(field, "must be a number from -100000 to 100000");
            }
        }
        for (field, value) in [("packaging_grams", self.packaging_grams), ("tolerance_grams", self.tolerance_grams)] {
            if !(0..=Self::GRAMS_MAX).contains(&value) {
                bad(field, "must be from 0 to 1000000");
            }
        }
        if !self.tolerance_percent.is_finite() || !(0.0..=100.0).contains(&self.tolerance_percent) {
            bad("tolerance_percent", "must be from 0 to 100");
        }
        issues
    }
}

/// The settings of `warehouse`, or the defaults.
pub async fn settings_of(conn: &mut sqlx::AnyConnection, warehouse: &str) -> Result<Settings> {
    let row: Option<(f64, f64, i64, f64, i64)> = sqlx::query_as(
        "SELECT dock_x, dock_y, packaging_grams, tolerance_percent, tolerance_grams FROM fulfillment_settings \
         WHERE warehouse = $1",
    )
    .bind(warehouse.to_owned())
    .fetch_optional(conn)
    .await
    .map_err(store::StoreError::from)?;
    Ok(row.map_or_else(Settings::default, |(dock_x, dock_y, packaging_grams, tolerance_percent, tolerance_grams)| {
        Settings { dock_x, dock_y, packaging_grams, tolerance_percent, tolerance_grams }
    }))
}

/// Replaces the settings of an existing warehouse. Bad fields are refused, all named.
pub async fn settings_put(
    tx: &mut Tx,
    warehouse: &WarehouseCode,
    settings: Settings,
    now: Timestamp,
) -> Result<Settings> {
    let issues = settings.issues();
    if !issues.is_empty() {
        return Err(crate::FulfillmentError::invalid_fields(issues));
    }
    warehouse::site::warehouse_in_tx(tx, warehouse).await?;
    sqlx::query(
        "INSERT INTO fulfillment_settings (warehouse, dock_x, dock_y, packaging_grams, tolerance_percent, \
         tolerance_grams, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (warehouse) DO UPDATE SET dock_x = $2, dock_y = $3, packaging_grams = $4, \
         tolerance_percent = $5, tolerance_grams = $6, updated_at = $7",
    )
    .bind(warehouse.as_str().to_owned())
    .bind(settings.dock_x)
    .bind(settings.dock_y)
    .bind(settings.packaging_grams)
    .bind(settings.tolerance_percent)
    .bind(settings.tolerance_grams)
    .bind(now.to_rfc3339())
    .execute(&mut **tx)
    .await
    .map_err(store::StoreError::from)?;
    Ok(settings)
}
