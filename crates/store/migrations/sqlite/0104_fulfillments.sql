-- The fulfillment context's fulfilments: one per fulfilment an order requests (same id),
-- taken from the `fulfillment.requested` event. Keep in step with
-- ../postgres/0104_fulfillments.sql.
CREATE TABLE fulfillments (
    id            TEXT PRIMARY KEY NOT NULL,
    order_id      TEXT NOT NULL,
    warehouse     TEXT NOT NULL,
    status        TEXT NOT NULL CONSTRAINT fulfillments_status_known CHECK (status IN
                      ('pending', 'picking', 'picked', 'packed', 'shipped', 'delivered', 'on_hold', 'cancelled')),
    hold_reason   TEXT,
    -- JSON: [{"sku", "quantity"}].
    lines         TEXT NOT NULL,
    carrier       TEXT,
    tracking      TEXT,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    shipped_at    TEXT,
    delivered_at  TEXT
);
CREATE INDEX fulfillments_by_order ON fulfillments (order_id);
CREATE INDEX fulfillments_by_warehouse_status ON fulfillments (warehouse, status, id);
