-- Units on hand that may not be sold (failed quality control, damaged returns), for lot and
-- non-lot items alike, and the entries that hold them. A level's quarantined units equal the
-- units of its held entries (reconciliation checks it). Keep in step with
-- ../sqlite/0103_quarantine.sql.
ALTER TABLE stock_levels ADD COLUMN quarantined BIGINT NOT NULL DEFAULT 0;
ALTER TABLE stock_levels ADD CONSTRAINT stock_quarantined_within_on_hand
    CHECK (quarantined >= 0 AND quarantined + reserved <= on_hand);

CREATE TABLE stock_quarantine (
    id          TEXT PRIMARY KEY NOT NULL,
    sku         TEXT NOT NULL,
    warehouse   TEXT NOT NULL,
    units       BIGINT NOT NULL CONSTRAINT stock_quarantine_units_positive CHECK (units > 0),
    status      TEXT NOT NULL CONSTRAINT stock_quarantine_status_known CHECK (status IN ('held', 'released', 'scrapped')),
    reference   TEXT,
    reason      TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
CREATE INDEX stock_quarantine_by_level ON stock_quarantine (warehouse, sku, status);
