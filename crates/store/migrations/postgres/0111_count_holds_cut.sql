-- A cycle count records what it found even below what is reserved: the holds that no longer
-- fit are cut (given back) and named here, on the count, and in a `holds_cut` alert. Keep in
-- step with ../sqlite/0111_count_holds_cut.sql.
CREATE TABLE count_holds_cut (
    count_id        TEXT NOT NULL REFERENCES counts (id),
    -- The order the holds were cut in.
    position        BIGINT NOT NULL,
    reservation_id  TEXT NOT NULL,
    reference       TEXT,
    -- What the reservation was when it was cut: active or confirmed.
    status          TEXT NOT NULL,
    sku             TEXT NOT NULL,
    warehouse       TEXT NOT NULL,
    quantity        BIGINT NOT NULL CONSTRAINT count_holds_cut_quantity_positive CHECK (quantity > 0),
    PRIMARY KEY (count_id, reservation_id, sku)
);

ALTER TABLE alerts DROP CONSTRAINT alerts_kind_known;
ALTER TABLE alerts ADD CONSTRAINT alerts_kind_known
    CHECK (kind IN ('low_stock', 'out_of_stock', 'overstock', 'expiring_soon', 'capacity', 'holds_cut'));
