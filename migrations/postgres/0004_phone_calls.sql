-- Calls of an outside telephone system, tracked from its events (issue 16): one row
-- per call, recomputed from all of the call's events whenever one arrives, so that
-- duplicates and events out of order give the same row. PostgreSQL twin of
-- ../sqlite/0004_phone_calls.sql; timestamps are TIMESTAMPTZ.

CREATE TABLE phone_calls (
    id             TEXT PRIMARY KEY,
    external_id    TEXT NOT NULL UNIQUE,
    calling_number TEXT,
    called_number  TEXT,
    initiated_at   TIMESTAMPTZ,
    answered_at    TIMESTAMPTZ,
    ended_at       TIMESTAMPTZ,
    duration       BIGINT,
    state          TEXT NOT NULL CHECK (state IN ('initiated', 'answered', 'completed', 'missed')),
    created_at     TIMESTAMPTZ NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL
);
CREATE INDEX phone_calls_calling_idx ON phone_calls (calling_number, initiated_at);
CREATE INDEX phone_calls_called_idx ON phone_calls (called_number, initiated_at);
CREATE INDEX phone_calls_state_idx ON phone_calls (state, initiated_at);

CREATE TABLE phone_call_events (
    event_id       TEXT PRIMARY KEY,
    external_id    TEXT NOT NULL REFERENCES phone_calls (external_id) ON DELETE CASCADE,
    event          TEXT NOT NULL CHECK (event IN ('INITIATE', 'ANSWER', 'DISCONNECT', 'START', 'END')),
    calling_number TEXT,
    called_number  TEXT,
    occurred_at    TIMESTAMPTZ NOT NULL,
    received_at    TIMESTAMPTZ NOT NULL
);
CREATE INDEX phone_call_events_call_idx ON phone_call_events (external_id);
