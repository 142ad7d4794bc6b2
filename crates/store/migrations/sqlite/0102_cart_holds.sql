-- Soft holds of carts in channels with cart_hold_ttl_seconds above 0: the cart's one
-- reservation, renewed by every line change, and what it holds per line. Keep in step with
-- ../postgres/0102_cart_holds.sql.
ALTER TABLE carts ADD COLUMN hold_reservation TEXT;
ALTER TABLE carts ADD COLUMN hold_expires_at_ms INTEGER;
CREATE INDEX carts_by_hold_expiry ON carts (hold_expires_at_ms);
ALTER TABLE cart_lines ADD COLUMN held INTEGER NOT NULL DEFAULT 0 CONSTRAINT cart_lines_held_positive CHECK (held >= 0);
