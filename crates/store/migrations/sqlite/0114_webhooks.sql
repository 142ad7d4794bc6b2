-- Webhooks (the events context, crates/events): endpoints with their own cursor over the
-- outbox, and one delivery row per event matched, kept whatever the outcome.
-- Keep in step with ../postgres/0114_webhooks.sql.
CREATE TABLE webhooks (
    id                        TEXT PRIMARY KEY NOT NULL,
    url                       TEXT NOT NULL,
    -- JSON array of type filters: exact names or `prefix.*`.
    events                    TEXT NOT NULL,
    secret                    TEXT NOT NULL,
    -- The secret before the last rotation, still signed with until then.
    previous_secret           TEXT,
    previous_secret_until_ms  INTEGER,
    active                    INTEGER NOT NULL CONSTRAINT webhooks_active_flag CHECK (active IN (0, 1)),
    disabled_reason           TEXT,
    -- Every event up to it has a delivery row (or did not match).
    cursor_seq                INTEGER NOT NULL,
    last_delivered_seq        INTEGER NOT NULL,
    consecutive_failures      INTEGER NOT NULL,
    breaker_open_until_ms     INTEGER,
    created_at                TEXT NOT NULL,
    updated_at_ms             INTEGER NOT NULL
);

CREATE TABLE webhook_deliveries (
    id                  TEXT PRIMARY KEY NOT NULL,
    webhook             TEXT NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event_seq           INTEGER NOT NULL,
    event_id            TEXT NOT NULL,
    event_type          TEXT NOT NULL,
    aggregate           TEXT NOT NULL,
    aggregate_seq       INTEGER NOT NULL,
    status              TEXT NOT NULL CONSTRAINT webhook_deliveries_status
                            CHECK (status IN ('pending', 'delivered', 'failed', 'dead')),
    attempts            INTEGER NOT NULL,
    -- The first try of the current retry window (NULL until tried): a failure this long after
    -- it is dead-lettered. A manual retry opens a new window.
    window_started_ms   INTEGER,
    next_attempt_at_ms  INTEGER NOT NULL,
    last_attempt_at_ms  INTEGER,
    last_status         INTEGER,
    last_error          TEXT,
    delivered_at_ms     INTEGER,
    created_at_ms       INTEGER NOT NULL
);
-- Due work, and what an aggregate still owes, per endpoint.
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (webhook, status, next_attempt_at_ms);
CREATE INDEX webhook_deliveries_by_aggregate ON webhook_deliveries (webhook, aggregate, event_seq);
CREATE INDEX webhook_deliveries_by_event ON webhook_deliveries (webhook, event_seq);
