-- Stock levels to re-evaluate because an alert rule changed: the rule's scope and how far the
-- alerts worker has gone through its levels, in (sku, warehouse) order. A row is removed when
-- the scope is done. Keep in step with ../sqlite/0006_alert_rescans.sql.
CREATE TABLE alert_rescans (
    scope            TEXT PRIMARY KEY,
    sku              TEXT,
    warehouse        TEXT,
    after_sku        TEXT NOT NULL,
    after_warehouse  TEXT NOT NULL
);
