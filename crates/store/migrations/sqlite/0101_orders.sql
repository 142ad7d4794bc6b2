-- The order context: carts, orders and their lines, allocations and fulfilment requests,
-- payments, promotions and their uses, and sagas. Keep in step with ../postgres/0101_orders.sql.
-- Warehouses, items, channels and prices are other contexts' tables: no foreign keys to them.

CREATE TABLE carts (
    id             TEXT PRIMARY KEY NOT NULL,
    channel        TEXT NOT NULL,
    customer       TEXT,
    currency       TEXT NOT NULL,
    status         TEXT NOT NULL CONSTRAINT carts_status_known CHECK (status IN ('open', 'checked_out')),
    -- Bumped by every line change: a checkout refuses a cart that changed under it.
    version        INTEGER NOT NULL,
    order_id       TEXT,
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL,
    updated_at_ms  INTEGER NOT NULL
);
CREATE INDEX carts_by_status ON carts (status, updated_at_ms);

CREATE TABLE cart_lines (
    cart_id   TEXT NOT NULL REFERENCES carts (id),
    sku       TEXT NOT NULL,
    quantity  INTEGER NOT NULL CONSTRAINT cart_lines_quantity_positive CHECK (quantity > 0),
    position  INTEGER NOT NULL,
    PRIMARY KEY (cart_id, sku)
);

CREATE TABLE orders (
    id                  TEXT PRIMARY KEY NOT NULL,
    channel             TEXT NOT NULL,
    customer            TEXT,
    cart_id             TEXT,
    currency            TEXT NOT NULL,
    status              TEXT NOT NULL CONSTRAINT orders_status_known
                        CHECK (status IN ('awaiting_payment', 'paid', 'fulfilled', 'delivered', 'cancelled')),
    subtotal_minor      INTEGER NOT NULL CONSTRAINT orders_subtotal_positive CHECK (subtotal_minor >= 0),
    discount_minor      INTEGER NOT NULL CONSTRAINT orders_discount_bounded CHECK (discount_minor >= 0 AND discount_minor <= subtotal_minor),
    shipping_minor      INTEGER NOT NULL CONSTRAINT orders_shipping_positive CHECK (shipping_minor >= 0),
    total_minor         INTEGER NOT NULL CONSTRAINT orders_total_sums CHECK (total_minor = subtotal_minor - discount_minor + shipping_minor),
    -- Authorized or captured, less refunded.
    paid_minor          INTEGER NOT NULL,
    -- JSON: the shipping address as given.
    shipping_address    TEXT NOT NULL,
    -- JSON: the sourcing strategy and its explanation.
    sourcing            TEXT NOT NULL,
    hold_expires_at_ms  INTEGER NOT NULL,
    cancel_reason       TEXT,
    created_at          TEXT NOT NULL,
    updated_at          TEXT NOT NULL
);
CREATE INDEX orders_by_customer ON orders (customer, id);
CREATE INDEX orders_by_status ON orders (status, id);

CREATE TABLE order_lines (
    order_id          TEXT NOT NULL REFERENCES orders (id),
    position          INTEGER NOT NULL,
    sku               TEXT NOT NULL,
    -- Ordered: allocated + backordered + cancelled.
    quantity          INTEGER NOT NULL CONSTRAINT order_lines_quantity_positive CHECK (quantity > 0),
    unit_price_minor  INTEGER NOT NULL CONSTRAINT order_lines_price_positive CHECK (unit_price_minor >= 0),
    discount_minor    INTEGER NOT NULL CONSTRAINT order_lines_discount_positive CHECK (discount_minor >= 0),
    backordered       INTEGER NOT NULL CONSTRAINT order_lines_backordered_positive CHECK (backordered >= 0),
    cancelled         INTEGER NOT NULL CONSTRAINT order_lines_cancelled_positive CHECK (cancelled >= 0),
    returned          INTEGER NOT NULL CONSTRAINT order_lines_returned_positive CHECK (returned >= 0),
    partial           TEXT NOT NULL CONSTRAINT order_lines_partial_known CHECK (partial IN ('reject', 'ship_available', 'backorder')),
    PRIMARY KEY (order_id, sku)
);
CREATE INDEX order_lines_backordered ON order_lines (sku, backordered);

-- Which reservation holds which units of an order line in which warehouse.
CREATE TABLE order_allocations (
    order_id        TEXT NOT NULL REFERENCES orders (id),
    sku             TEXT NOT NULL,
    warehouse       TEXT NOT NULL,
    reservation_id  TEXT NOT NULL,
    quantity        INTEGER NOT NULL CONSTRAINT order_allocations_quantity_positive CHECK (quantity > 0),
    PRIMARY KEY (order_id, sku, warehouse, reservation_id)
);
CREATE INDEX order_allocations_by_reservation ON order_allocations (reservation_id);

-- A paid order's request to ship from one warehouse; the fulfilment context takes it over.
CREATE TABLE order_fulfillments (
    id          TEXT PRIMARY KEY NOT NULL,
    order_id    TEXT NOT NULL REFERENCES orders (id),
    warehouse   TEXT NOT NULL,
    status      TEXT NOT NULL CONSTRAINT order_fulfillments_status_known CHECK (status IN ('requested', 'cancelled')),
    -- JSON: [{"sku", "quantity"}].
    lines       TEXT NOT NULL,
    created_at  TEXT NOT NULL
);
CREATE INDEX order_fulfillments_by_order ON order_fulfillments (order_id);

CREATE TABLE payments (
    provider      TEXT NOT NULL,
    reference     TEXT NOT NULL,
    status        TEXT NOT NULL CONSTRAINT payments_status_known CHECK (status IN ('authorized', 'captured', 'failed', 'refunded')),
    order_id      TEXT NOT NULL REFERENCES orders (id),
    amount_minor  INTEGER NOT NULL CONSTRAINT payments_amount_positive CHECK (amount_minor >= 0),
    currency      TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    PRIMARY KEY (provider, reference, status)
);
CREATE INDEX payments_by_order ON payments (order_id);

CREATE TABLE promotions (
    code                TEXT PRIMARY KEY NOT NULL,
    channel             TEXT NOT NULL,
    kind                TEXT NOT NULL CONSTRAINT promotions_kind_known CHECK (kind IN ('percentage', 'fixed', 'buy_x_get_y')),
    -- Percent (basis points) for percentage and buy_x_get_y, minor units for fixed.
    value               INTEGER NOT NULL CONSTRAINT promotions_value_positive CHECK (value > 0),
    target              TEXT NOT NULL CONSTRAINT promotions_target_known CHECK (target IN ('order', 'items')),
    buy_quantity        INTEGER,
    get_quantity        INTEGER,
    min_subtotal_minor  INTEGER,
    -- JSON arrays.
    skus                TEXT NOT NULL,
    categories          TEXT NOT NULL,
    first_order_only    INTEGER NOT NULL CONSTRAINT promotions_first_order_flag CHECK (first_order_only IN (0, 1)),
    starts_at_ms        INTEGER,
    ends_at_ms          INTEGER,
    usage_limit         INTEGER,
    per_customer_limit  INTEGER,
    -- Uses held by orders awaiting payment plus uses kept by paid ones.
    uses_taken          INTEGER NOT NULL CONSTRAINT promotions_uses_within_limit
                        CHECK (uses_taken >= 0 AND (usage_limit IS NULL OR uses_taken <= usage_limit)),
    created_at          TEXT NOT NULL,
    updated_at          TEXT NOT NULL
);
CREATE INDEX promotions_by_channel ON promotions (channel, code);

CREATE TABLE promotion_customer_uses (
    code      TEXT NOT NULL REFERENCES promotions (code),
    customer  TEXT NOT NULL,
    taken     INTEGER NOT NULL CONSTRAINT promotion_customer_uses_positive CHECK (taken >= 0),
    PRIMARY KEY (code, customer)
);

CREATE TABLE promotion_uses (
    order_id        TEXT NOT NULL REFERENCES orders (id),
    code            TEXT NOT NULL REFERENCES promotions (code),
    customer        TEXT,
    status          TEXT NOT NULL CONSTRAINT promotion_uses_status_known CHECK (status IN ('held', 'kept', 'released')),
    discount_minor  INTEGER NOT NULL,
    PRIMARY KEY (order_id, code)
);
CREATE INDEX promotion_uses_by_code ON promotion_uses (code, status);

CREATE TABLE sagas (
    id               TEXT PRIMARY KEY NOT NULL,
    kind             TEXT NOT NULL CONSTRAINT sagas_kind_known CHECK (kind IN ('checkout', 'cancellation')),
    order_id         TEXT NOT NULL REFERENCES orders (id),
    status           TEXT NOT NULL CONSTRAINT sagas_status_known CHECK (status IN ('running', 'compensating', 'failed', 'done')),
    -- The step it waits on or runs next.
    step             TEXT NOT NULL,
    outcome          TEXT,
    attempts         INTEGER NOT NULL,
    -- When the step it waits on is due (a hold's expiry) or overdue (a refund).
    deadline_at_ms   INTEGER,
    stuck            INTEGER NOT NULL CONSTRAINT sagas_stuck_flag CHECK (stuck IN (0, 1)),
    last_error       TEXT,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL
);
CREATE INDEX sagas_by_status ON sagas (status, id);
CREATE INDEX sagas_due ON sagas (status, deadline_at_ms);
CREATE INDEX sagas_by_order ON sagas (order_id);

CREATE TABLE saga_steps (
    saga_id  TEXT NOT NULL REFERENCES sagas (id),
    n        INTEGER NOT NULL,
    name     TEXT NOT NULL,
    status   TEXT NOT NULL CONSTRAINT saga_steps_status_known CHECK (status IN ('done', 'compensated', 'failed')),
    detail   TEXT,
    at       TEXT NOT NULL,
    PRIMARY KEY (saga_id, n)
);
