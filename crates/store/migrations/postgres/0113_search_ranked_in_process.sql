-- Search ranks in process (tantivy, crates/catalog/src/search/text.rs): the database keeps
-- each product's document and offers, and says which `search-index` run wrote them
-- (`indexed_seq`), so every replica's in-memory index reads only what changed. The engines'
-- own full-text parts are no longer read. Keep in step with ../sqlite/0113_search_ranked_in_process.sql.
DROP INDEX search_products_document;
ALTER TABLE search_products DROP COLUMN document;
DROP INDEX search_offers_by_price;
ALTER TABLE search_products ADD COLUMN indexed_seq BIGINT NOT NULL DEFAULT 0;
CREATE INDEX search_products_by_indexed_seq ON search_products (indexed_seq);
