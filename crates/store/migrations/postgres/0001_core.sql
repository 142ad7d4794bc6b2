-- Flags are 0/1 integers: sqlx's Any driver cannot decode SQLite booleans.
-- Stockroom core schema (PostgreSQL). Keep in step with ../sqlite/0001_core.sql.

CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    key_hash    TEXT NOT NULL UNIQUE,
    scopes      TEXT NOT NULL,
    label       TEXT NOT NULL,
    created_at  TEXT NOT NULL
);

CREATE TABLE items (
    sku           TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    weight_grams  BIGINT,
    track_lots    BIGINT NOT NULL DEFAULT 0 CONSTRAINT items_track_lots_flag CHECK (track_lots IN (0, 1)),
    created_at    TEXT NOT NULL
);

CREATE TABLE warehouses (
    code        TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    country     TEXT,
    latitude    DOUBLE PRECISION,
    longitude   DOUBLE PRECISION,
    priority    BIGINT NOT NULL DEFAULT 100,
    active      BIGINT NOT NULL DEFAULT 1 CONSTRAINT warehouses_active_flag CHECK (active IN (0, 1)),
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);

CREATE TABLE stock_levels (
    sku        TEXT NOT NULL REFERENCES items (sku),
    warehouse  TEXT NOT NULL REFERENCES warehouses (code),
    on_hand    BIGINT NOT NULL,
    reserved   BIGINT NOT NULL,
    PRIMARY KEY (sku, warehouse),
    CONSTRAINT stock_reserved_not_negative CHECK (reserved >= 0),
    CONSTRAINT stock_reserved_within_on_hand CHECK (reserved <= on_hand),
    CONSTRAINT stock_on_hand_bounded CHECK (on_hand <= 1000000000000000)
);

CREATE TABLE movements (
    seq             BIGSERIAL PRIMARY KEY,
    id              TEXT NOT NULL UNIQUE,
    warehouse       TEXT NOT NULL,
    sku             TEXT NOT NULL,
    kind            TEXT NOT NULL,
    on_hand_delta   BIGINT NOT NULL,
    reserved_delta  BIGINT NOT NULL,
    on_hand_after   BIGINT NOT NULL,
    reserved_after  BIGINT NOT NULL,
    reference       TEXT,
    reason          TEXT,
    at              TEXT NOT NULL
);
CREATE INDEX movements_by_sku ON movements (sku, warehouse, seq);
CREATE INDEX movements_by_warehouse ON movements (warehouse, seq);

CREATE TABLE reservations (
    id             TEXT PRIMARY KEY,
    reference      TEXT NOT NULL,
    status         TEXT NOT NULL
        CONSTRAINT reservation_status_known
        CHECK (status IN ('active', 'confirmed', 'released', 'expired', 'fulfilled')),
    expires_at_ms  BIGINT NOT NULL,
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL
);
CREATE INDEX reservations_active_by_expiry ON reservations (expires_at_ms) WHERE status = 'active';

CREATE TABLE reservation_lines (
    reservation_id  TEXT NOT NULL REFERENCES reservations (id),
    line_no         BIGINT NOT NULL,
    sku             TEXT NOT NULL,
    warehouse       TEXT NOT NULL,
    quantity        BIGINT NOT NULL CONSTRAINT reservation_line_quantity_positive CHECK (quantity > 0),
    PRIMARY KEY (reservation_id, line_no)
);
CREATE INDEX reservation_lines_by_sku ON reservation_lines (sku);

-- One row: its lock orders event appends by commit (see store::outbox).
CREATE TABLE event_sequence (
    id        BIGINT PRIMARY KEY CHECK (id = 1),
    last_seq  BIGINT NOT NULL
);
INSERT INTO event_sequence (id, last_seq) VALUES (1, 0);

CREATE TABLE aggregate_heads (
    aggregate  TEXT PRIMARY KEY,
    last_seq   BIGINT NOT NULL
);

CREATE TABLE events (
    seq            BIGINT PRIMARY KEY,
    id             TEXT NOT NULL UNIQUE,
    event_type     TEXT NOT NULL,
    aggregate      TEXT NOT NULL,
    aggregate_seq  BIGINT NOT NULL,
    at             TEXT NOT NULL,
    data           TEXT NOT NULL,
    CONSTRAINT events_aggregate_seq_unique UNIQUE (aggregate, aggregate_seq)
);

CREATE TABLE idempotency_keys (
    scope          TEXT NOT NULL,
    idem_key       TEXT NOT NULL,
    fingerprint    TEXT NOT NULL,
    status         BIGINT,
    body           TEXT,
    created_at_ms  BIGINT NOT NULL,
    PRIMARY KEY (scope, idem_key)
);
