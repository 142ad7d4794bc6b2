-- The catalog's search index: one document per product and one offer per channel and
-- product, kept by the `search-index` subscriber. The full-text part is each dialect's own
-- (SQLite FTS5, PostgreSQL tsvector with GIN); see crates/catalog/src/search.rs.

CREATE TABLE search_products (
    handle           TEXT PRIMARY KEY NOT NULL,
    name             TEXT NOT NULL,
    description      TEXT,
    category         TEXT,
    -- The attribute values as words.
    attributes_text  TEXT NOT NULL
);
CREATE VIRTUAL TABLE search_text USING fts5(
    handle UNINDEXED, name, description, category, attributes,
    tokenize = 'unicode61 remove_diacritics 2'
);

-- What a product costs and whether it can be bought, per channel.
CREATE TABLE search_offers (
    channel           TEXT NOT NULL,
    handle            TEXT NOT NULL,
    price_from_minor  INTEGER,
    in_stock          INTEGER NOT NULL CONSTRAINT search_offers_in_stock_flag CHECK (in_stock IN (0, 1)),
    PRIMARY KEY (channel, handle)
);
-- Price sorts read it in order (ties by handle), so a page costs its length, not a sort.
CREATE INDEX search_offers_by_price ON search_offers (channel, price_from_minor, handle);
