-- The lean ledger shape of holds (issue 13): holds applied together in one group-commit batch
-- share one `reserve` movement (and one `stock.changed`) per stock row. The movement says how
-- many holds it carries; when it carries several, its reference is the batch, and each of
-- those reservations names the batch. Keep in step with ../sqlite/0112_lean_hold_ledger.sql.
ALTER TABLE movements ADD COLUMN reservations BIGINT;
ALTER TABLE reservations ADD COLUMN hold_batch TEXT;
-- Every earlier reserve movement carried exactly one hold, named by its reference.
UPDATE movements SET reservations = 1 WHERE kind = 'reserve';
