-- Cycle counts. Keep in step with ../sqlite/0004_counts.sql.

CREATE TABLE counts (
    id                       TEXT PRIMARY KEY,
    warehouse                TEXT NOT NULL REFERENCES warehouses (code),
    zone                     TEXT,
    status                   TEXT NOT NULL CONSTRAINT counts_status_known CHECK (status IN ('open', 'approved', 'cancelled')),
    recount_threshold_units  BIGINT NOT NULL,
    created_at               TEXT NOT NULL,
    approved_at              TEXT
);

-- One line per bin and SKU ('' is the unbinned stock of the warehouse).
CREATE TABLE count_lines (
    count_id       TEXT NOT NULL REFERENCES counts (id),
    bin            TEXT NOT NULL,
    sku            TEXT NOT NULL REFERENCES items (sku),
    -- What the ledger held in this place when the line was counted: the variance is measured
    -- against it, so movements during the count are not mistaken for variance.
    expected       BIGINT,
    counted        BIGINT,
    previous_counted BIGINT,
    needs_recount  BIGINT NOT NULL DEFAULT 0 CONSTRAINT count_lines_recount_flag CHECK (needs_recount IN (0, 1)),
    counted_at     TEXT,
    PRIMARY KEY (count_id, bin, sku)
);
