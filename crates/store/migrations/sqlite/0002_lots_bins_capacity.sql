-- Lots with expiry (FEFO), bins, and capacities. Keep in step with ../postgres/0002_lots_bins_capacity.sql.

-- NULL: no limit. Units of all SKUs on hand in the warehouse.
ALTER TABLE warehouses ADD COLUMN capacity_units INTEGER
    CONSTRAINT warehouses_capacity_positive CHECK (capacity_units IS NULL OR capacity_units > 0);

CREATE TABLE bins (
    warehouse       TEXT NOT NULL REFERENCES warehouses (code),
    code            TEXT NOT NULL,
    zone            TEXT,
    x               REAL,
    y               REAL,
    capacity_units  INTEGER CONSTRAINT bins_capacity_positive CHECK (capacity_units IS NULL OR capacity_units > 0),
    created_at      TEXT NOT NULL,
    PRIMARY KEY (warehouse, code)
);

-- Units of a SKU known to be in a bin. Their sum per warehouse and SKU never exceeds on hand;
-- units not in any bin are unbinned.
CREATE TABLE bin_stock (
    warehouse  TEXT NOT NULL,
    bin        TEXT NOT NULL,
    sku        TEXT NOT NULL REFERENCES items (sku),
    on_hand    INTEGER NOT NULL CONSTRAINT bin_stock_not_negative CHECK (on_hand >= 0),
    PRIMARY KEY (warehouse, bin, sku),
    FOREIGN KEY (warehouse, bin) REFERENCES bins (warehouse, code)
);

-- Stock of lot-tracked items per lot. The stock level is their sum.
CREATE TABLE stock_lots (
    sku             TEXT NOT NULL REFERENCES items (sku),
    warehouse       TEXT NOT NULL REFERENCES warehouses (code),
    lot             TEXT NOT NULL,
    expires_on      TEXT NOT NULL,
    -- Start of expires_on in UTC: from this instant the lot is expired.
    expires_at_ms   INTEGER NOT NULL,
    received_at_ms  INTEGER NOT NULL,
    on_hand         INTEGER NOT NULL,
    reserved        INTEGER NOT NULL,
    quarantined     INTEGER NOT NULL DEFAULT 0 CONSTRAINT stock_lots_quarantined_flag CHECK (quarantined IN (0, 1)),
    -- Set by the lot expiry worker once it has recorded the expiry.
    expiry_recorded INTEGER NOT NULL DEFAULT 0 CONSTRAINT stock_lots_expiry_recorded_flag CHECK (expiry_recorded IN (0, 1)),
    PRIMARY KEY (sku, warehouse, lot),
    CONSTRAINT stock_lots_reserved_not_negative CHECK (reserved >= 0),
    CONSTRAINT stock_lots_reserved_within_on_hand CHECK (reserved <= on_hand)
);
CREATE INDEX stock_lots_unrecorded_expiry ON stock_lots (expires_at_ms) WHERE expiry_recorded = 0;

-- Which lots each reservation line holds.
CREATE TABLE reservation_lots (
    reservation_id  TEXT NOT NULL REFERENCES reservations (id),
    line_no         INTEGER NOT NULL,
    lot             TEXT NOT NULL,
    -- FEFO order of the lots within the line.
    position        INTEGER NOT NULL,
    quantity        INTEGER NOT NULL CONSTRAINT reservation_lot_quantity_positive CHECK (quantity > 0),
    PRIMARY KEY (reservation_id, line_no, lot)
);
