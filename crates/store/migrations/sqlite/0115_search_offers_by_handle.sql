-- The search-index subscriber deletes a product's offers by handle, and every replica's
-- search follower joins offers to products by handle: without this index each was a scan of
-- every offer (on SQLite 14 ms and 40 ms per run over 100k products, holding the write lock
-- for the first). Keep in step with ../postgres/0115_search_offers_by_handle.sql.
CREATE INDEX search_offers_by_handle ON search_offers (handle);
