-- The catalog context: channels, shipping rates, products and variants, prices and their
-- history. Keep in step with ../postgres/0008_catalog.sql. Warehouses and items are the
-- warehouse context's: they are named here by code and checked through its public API, with
-- no foreign key into its tables.

CREATE TABLE channels (
    code                       TEXT PRIMARY KEY NOT NULL,
    name                       TEXT NOT NULL,
    currency                   TEXT NOT NULL,
    country                    TEXT NOT NULL,
    sourcing                   TEXT NOT NULL CONSTRAINT channels_sourcing_known CHECK (sourcing IN ('priority', 'distance', 'cost')),
    split_penalty_minor        INTEGER NOT NULL CONSTRAINT channels_split_penalty_positive CHECK (split_penalty_minor >= 0),
    cart_hold_ttl_seconds      INTEGER NOT NULL CONSTRAINT channels_cart_hold_ttl_bounded CHECK (cart_hold_ttl_seconds >= 0),
    checkout_hold_ttl_seconds  INTEGER NOT NULL CONSTRAINT channels_checkout_hold_ttl_bounded CHECK (checkout_hold_ttl_seconds >= 1),
    created_at                 TEXT NOT NULL,
    updated_at                 TEXT NOT NULL
);

-- The channel's warehouses in its order of priority (position 0 first).
CREATE TABLE channel_warehouses (
    channel    TEXT NOT NULL REFERENCES channels (code),
    warehouse  TEXT NOT NULL,
    position   INTEGER NOT NULL,
    PRIMARY KEY (channel, warehouse)
);
CREATE INDEX channel_warehouses_by_warehouse ON channel_warehouses (warehouse);

-- What a shipment from a warehouse to a country costs: base plus per started kilogram.
CREATE TABLE shipping_rates (
    warehouse     TEXT NOT NULL,
    country       TEXT NOT NULL,
    currency      TEXT NOT NULL,
    base_minor    INTEGER NOT NULL CONSTRAINT shipping_rates_base_positive CHECK (base_minor >= 0),
    per_kg_minor  INTEGER NOT NULL CONSTRAINT shipping_rates_per_kg_positive CHECK (per_kg_minor >= 0),
    PRIMARY KEY (warehouse, country, currency)
);

CREATE TABLE products (
    handle       TEXT PRIMARY KEY NOT NULL,
    name         TEXT NOT NULL,
    description  TEXT,
    category     TEXT,
    -- A JSON object of attribute names to values.
    attributes   TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL
);
CREATE INDEX products_by_category ON products (category, handle);

-- A SKU belongs to one product (the primary key).
CREATE TABLE product_variants (
    sku        TEXT PRIMARY KEY NOT NULL,
    product    TEXT NOT NULL REFERENCES products (handle),
    position   INTEGER NOT NULL,
    -- A JSON object of option names to values.
    options    TEXT NOT NULL,
    backorder  INTEGER NOT NULL CONSTRAINT product_variants_backorder_flag CHECK (backorder IN (0, 1))
);
CREATE INDEX product_variants_by_product ON product_variants (product, position);

CREATE TABLE prices (
    sku               TEXT NOT NULL,
    channel           TEXT NOT NULL REFERENCES channels (code),
    currency          TEXT NOT NULL,
    amount_minor      INTEGER NOT NULL CONSTRAINT prices_amount_positive CHECK (amount_minor >= 0),
    compare_at_minor  INTEGER CONSTRAINT prices_compare_at_positive CHECK (compare_at_minor IS NULL OR compare_at_minor >= 0),
    updated_at        TEXT NOT NULL,
    PRIMARY KEY (sku, channel)
);
CREATE INDEX prices_by_channel ON prices (channel, sku);

-- Every price a SKU had in a channel, oldest first.
CREATE TABLE price_history (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    sku               TEXT NOT NULL,
    channel           TEXT NOT NULL,
    currency          TEXT NOT NULL,
    amount_minor      INTEGER NOT NULL,
    compare_at_minor  INTEGER,
    at                TEXT NOT NULL
);
CREATE INDEX price_history_by_sku ON price_history (sku, channel, id);

-- The SKUs read most often per channel, saved by the cache warmer so a restart loads them.
CREATE TABLE availability_hot_skus (
    channel  TEXT NOT NULL,
    sku      TEXT NOT NULL,
    hits     INTEGER NOT NULL,
    PRIMARY KEY (channel, sku)
);

-- Secrets the server makes on first start and every replica shares (the cache key secret).
CREATE TABLE server_secrets (
    name        TEXT PRIMARY KEY NOT NULL,
    value       TEXT NOT NULL,
    created_at  TEXT NOT NULL
);
