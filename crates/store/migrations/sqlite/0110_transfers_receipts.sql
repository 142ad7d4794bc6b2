-- Transfers and receipts as records that can be looked up (GET /v1/transfers/{id},
-- GET /v1/receipts/{id} and their lists), and two-step transfers: `in_transit` between the
-- shipment out of `from` and the receipt into `to`, its units in neither warehouse's stock
-- (shown as `incoming` at `to`). Keep in step with ../postgres/0110_transfers_receipts.sql.
CREATE TABLE transfers (
    id           TEXT PRIMARY KEY NOT NULL,
    from_wh      TEXT NOT NULL,
    to_wh        TEXT NOT NULL,
    reference    TEXT,
    status       TEXT NOT NULL CONSTRAINT transfers_status_known CHECK (status IN ('in_transit', 'received')),
    created_at   TEXT NOT NULL,
    received_at  TEXT
);
CREATE INDEX transfers_by_status ON transfers (status, to_wh, id);

CREATE TABLE transfer_lines (
    transfer_id  TEXT NOT NULL REFERENCES transfers (id),
    sku          TEXT NOT NULL,
    quantity     INTEGER NOT NULL CONSTRAINT transfer_lines_quantity_positive CHECK (quantity > 0),
    -- For lot-tracked items: [{"lot", "expires_on", "quantity"}] as taken out of `from`.
    lots         TEXT,
    PRIMARY KEY (transfer_id, sku)
);
CREATE INDEX transfer_lines_by_sku ON transfer_lines (sku, transfer_id);

CREATE TABLE receipts (
    id          TEXT PRIMARY KEY NOT NULL,
    warehouse   TEXT NOT NULL,
    reference   TEXT,
    lines       TEXT NOT NULL,
    created_at  TEXT NOT NULL
);
CREATE INDEX receipts_by_warehouse ON receipts (warehouse, id);
