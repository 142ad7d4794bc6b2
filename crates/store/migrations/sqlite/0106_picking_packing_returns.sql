-- The fulfillment context's pick lists, packing, per-warehouse settings and returns. Keep in
-- step with ../postgres/0106_picking_packing_returns.sql.

-- How a warehouse picks and packs. A warehouse without a row uses the defaults of
-- fulfillment::settings::Settings::default.
CREATE TABLE fulfillment_settings (
    warehouse          TEXT PRIMARY KEY NOT NULL,
    -- Where pick walks start and end, in the bins' coordinates (metres).
    dock_x             REAL NOT NULL,
    dock_y             REAL NOT NULL,
    -- Added to the items' weights for each package.
    packaging_grams    INTEGER NOT NULL CONSTRAINT fulfillment_settings_packaging_positive CHECK (packaging_grams >= 0),
    -- A package may weigh this much off its expected weight: the larger of the two.
    tolerance_percent  REAL NOT NULL CONSTRAINT fulfillment_settings_percent_bounded CHECK (tolerance_percent >= 0 AND tolerance_percent <= 100),
    tolerance_grams    INTEGER NOT NULL CONSTRAINT fulfillment_settings_grams_positive CHECK (tolerance_grams >= 0),
    updated_at         TEXT NOT NULL
);

CREATE TABLE picklists (
    id                    TEXT PRIMARY KEY NOT NULL,
    warehouse             TEXT NOT NULL,
    status                TEXT NOT NULL CONSTRAINT picklists_status_known CHECK (status IN ('open', 'completed')),
    -- JSON: the fulfilment ids of the batch, in fulfilment order.
    fulfillments          TEXT NOT NULL,
    -- JSON: [{"bin", "sku", "quantity", "lot", "fulfillment"}] in walk order.
    stops                 TEXT NOT NULL,
    route_length_m        REAL NOT NULL,
    naive_route_length_m  REAL NOT NULL,
    -- JSON, set on completion: [{"fulfillment", "bin", "sku", "lot", "quantity"}] not found.
    short                 TEXT,
    created_at            TEXT NOT NULL,
    completed_at          TEXT
);
CREATE INDEX picklists_by_warehouse ON picklists (warehouse, status, id);

ALTER TABLE fulfillments ADD COLUMN picklist_id TEXT;
-- JSON, set by packing: [{"weight_grams", "expected_weight_grams", "difference_grams", "lines"}].
ALTER TABLE fulfillments ADD COLUMN packages TEXT;
-- JSON, set by packing: {"planned", "actual", "adjustment", "currency"}.
ALTER TABLE fulfillments ADD COLUMN shipping TEXT;

CREATE TABLE returns (
    id           TEXT PRIMARY KEY NOT NULL,
    order_id     TEXT NOT NULL,
    status       TEXT NOT NULL CONSTRAINT returns_status_known CHECK (status IN ('requested', 'received')),
    -- JSON: [{"sku", "quantity", "reason"}].
    lines        TEXT NOT NULL,
    -- Set on receipt.
    warehouse    TEXT,
    -- JSON, set on receipt: [{"sku", "quantity", "condition"}].
    received     TEXT,
    -- Set on receipt: the amount asked back, as the API writes it.
    refund       TEXT,
    created_at   TEXT NOT NULL,
    received_at  TEXT
);
CREATE INDEX returns_by_order ON returns (order_id, id);
