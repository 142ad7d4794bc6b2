-- The order context's record of how far each of its fulfilments has got, taken from the
-- fulfillment context's `fulfillment.shipped` and `fulfillment.delivered` events. An order is
-- `fulfilled` once every requested fulfilment has shipped and no units wait on backorder,
-- `delivered` once every one is delivered. Keep in step with
-- ../sqlite/0105_order_fulfillment_progress.sql.
CREATE TABLE order_fulfillment_progress (
    fulfillment_id  TEXT PRIMARY KEY NOT NULL,
    order_id        TEXT NOT NULL,
    shipped_at      TEXT NOT NULL,
    delivered_at    TEXT
);
CREATE INDEX order_fulfillment_progress_by_order ON order_fulfillment_progress (order_id);
