-- Seams for the next contexts. Keep in step with ../sqlite/0007_typed_outcomes_and_event_versions.sql.

-- The batch executor stores an idempotent request's outcome as a typed domain value (JSON),
-- rendered by the API on every replay, instead of an HTTP status and body.
ALTER TABLE idempotency_keys ADD COLUMN outcome TEXT;

-- Each event records the version of its payload's schema (GET /v1/event-types).
ALTER TABLE events ADD COLUMN version BIGINT NOT NULL DEFAULT 1;

-- Subscribers' persisted offsets: when each last ran, for the lag a dashboard shows.
ALTER TABLE worker_offsets ADD COLUMN updated_at_ms BIGINT NOT NULL DEFAULT 0;
