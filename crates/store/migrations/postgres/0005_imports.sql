-- Keys of imported rows, so an interrupted import can run again and skip what it applied.
-- Keep in step with ../sqlite/0005_imports.sql.
CREATE TABLE import_keys (
    kind         TEXT NOT NULL,
    row_key      TEXT NOT NULL,
    imported_at  TEXT NOT NULL,
    PRIMARY KEY (kind, row_key)
);
