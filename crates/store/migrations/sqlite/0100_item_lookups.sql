-- Item lookups and updates, reservation lookups (issue 15). Keep in step with
-- ../postgres/0100_item_lookups.sql. Numbered 0100+ so that other contexts' 0008.. do not clash.

-- PATCH /v1/items/{sku}: a barcode (GTIN-8/12/13/14) and archiving.
ALTER TABLE items ADD COLUMN gtin TEXT;
ALTER TABLE items ADD COLUMN archived INTEGER NOT NULL DEFAULT 0 CONSTRAINT items_archived_flag CHECK (archived IN (0, 1));

-- GET /v1/reservations?reference=&warehouse=: who holds this stock?
CREATE INDEX reservations_by_reference ON reservations (reference);
CREATE INDEX reservation_lines_by_warehouse ON reservation_lines (warehouse);
