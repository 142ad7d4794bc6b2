-- Alerts: rules (thresholds) and alerts with a lifecycle. Keep in step with ../postgres/0003_alerts.sql.

-- One rule per scope: `default`, `item:SKU` or `item:SKU@WAREHOUSE`; the most specific applies.
-- A NULL threshold is off.
CREATE TABLE alert_rules (
    scope                   TEXT PRIMARY KEY,
    sku                     TEXT,
    warehouse               TEXT,
    low_stock_units         INTEGER,
    out_of_stock            INTEGER NOT NULL DEFAULT 0 CONSTRAINT alert_rules_out_of_stock_flag CHECK (out_of_stock IN (0, 1)),
    overstock_units         INTEGER,
    expiring_within_days    INTEGER,
    capacity_share_percent  INTEGER,
    updated_at              TEXT NOT NULL
);

CREATE TABLE alerts (
    id               TEXT PRIMARY KEY,
    -- kind|warehouse|sku|lot|bin: one open alert per subject.
    subject          TEXT NOT NULL,
    kind             TEXT NOT NULL CONSTRAINT alerts_kind_known
        CHECK (kind IN ('low_stock', 'out_of_stock', 'overstock', 'expiring_soon', 'capacity')),
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
CREATE UNIQUE INDEX alerts_one_open_per_subject ON alerts (subject) WHERE status <> 'resolved';
CREATE INDEX alerts_by_status ON alerts (status, seq);

-- How far each event-driven worker has read the outbox.
CREATE TABLE worker_offsets (
    worker    TEXT PRIMARY KEY,
    last_seq  INTEGER NOT NULL
);
