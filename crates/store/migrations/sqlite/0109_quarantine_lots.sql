-- Units of a lot-tracked item set aside one by one (failed quality control, damaged
-- returns): an entry names its lot, and its units are out of the lot's on hand while held
-- (a lot-tracked level's on hand is its lots plus its held entries; reconciliation checks
-- it). Released, they go back to that lot. Keep in step with ../postgres/0109_quarantine_lots.sql.
ALTER TABLE stock_quarantine ADD COLUMN lot TEXT;
