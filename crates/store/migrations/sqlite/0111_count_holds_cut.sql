-- A cycle count records what it found even below what is reserved: the holds that no longer
-- fit are cut (given back) and named here, on the count, and in a `holds_cut` alert. Keep in
-- step with ../postgres/0111_count_holds_cut.sql.
CREATE TABLE count_holds_cut (
    count_id        TEXT NOT NULL REFERENCES counts (id),
    -- The order the holds were cut in.
    position        INTEGER NOT NULL,
    reservation_id  TEXT NOT NULL,
    reference       TEXT,
    -- What the reservation was when it was cut: active or confirmed.
    status          TEXT NOT NULL,
    sku             TEXT NOT NULL,
    warehouse       TEXT NOT NULL,
    quantity        INTEGER NOT NULL CONSTRAINT count_holds_cut_quantity_positive CHECK (quantity > 0),
    PRIMARY KEY (count_id, reservation_id, sku)
);

-- SQLite cannot change a CHECK constraint in place: the alerts table is rebuilt with the new
-- kind, its rows and indexes as they were.
ALTER TABLE alerts RENAME TO alerts_before_0111;
CREATE TABLE alerts (
    id               TEXT PRIMARY KEY,
    -- kind|warehouse|sku|lot|bin: one open alert per subject.
    subject          TEXT NOT NULL,
    kind             TEXT NOT NULL CONSTRAINT alerts_kind_known
        CHECK (kind IN ('low_stock', 'out_of_stock', 'overstock', 'expiring_soon', 'capacity', 'holds_cut')),
    warehouse        TEXT,
    sku              TEXT,
    lot              TEXT,
    bin              TEXT,
    status           TEXT NOT NULL CONSTRAINT alerts_status_known CHECK (status IN ('raised', 'acknowledged', 'resolved')),
    detail           TEXT NOT NULL,
    raised_at        TEXT NOT NULL,
    acknowledged_at  TEXT,
    resolved_at      TEXT,
    seq              INTEGER NOT NULL
);
INSERT INTO alerts (id, subject, kind, warehouse, sku, lot, bin, status, detail, raised_at, acknowledged_at, resolved_at, seq)
    SELECT id, subject, kind, warehouse, sku, lot, bin, status, detail, raised_at, acknowledged_at, resolved_at, seq
    FROM alerts_before_0111;
DROP TABLE alerts_before_0111;
CREATE UNIQUE INDEX alerts_one_open_per_subject ON alerts (subject) WHERE status <> 'resolved';
CREATE INDEX alerts_by_status ON alerts (status, seq);
