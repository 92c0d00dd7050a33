-- Call records: the primary contract's four tables, plus the bookkeeping columns
-- Huddle's lifecycle needs (created_at, updated_at, next_deadline, version).
-- SQLite twin of ../postgres/0001_calls.sql: same tables, columns and names;
-- timestamps are RFC 3339 text (UTC), booleans 0/1.

CREATE TABLE calls (
    id                TEXT PRIMARY KEY,
    room_id           TEXT NOT NULL UNIQUE,
    type              TEXT NOT NULL CHECK (type IN ('audio', 'video')),
    state             TEXT NOT NULL CHECK (state IN ('initiating', 'ringing', 'connecting', 'connected', 'ended')),
    initiator_id      TEXT NOT NULL,
    chat_id           TEXT,
    is_group          INTEGER NOT NULL,
    max_participants  INTEGER NOT NULL,
    created_at        TEXT NOT NULL,
    started_at        TEXT,
    ended_at          TEXT,
    duration          INTEGER,
    end_reason        TEXT,
    recording_enabled INTEGER NOT NULL DEFAULT 0,
    recording_url     TEXT,
    next_deadline     TEXT,
    updated_at        TEXT NOT NULL,
    version           INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX calls_deadline_idx ON calls (next_deadline) WHERE state <> 'ended';
CREATE INDEX calls_created_idx ON calls (created_at);

CREATE TABLE call_participants (
    id                   TEXT PRIMARY KEY,
    call_id              TEXT NOT NULL REFERENCES calls (id) ON DELETE CASCADE,
    user_id              TEXT NOT NULL,
    display_name         TEXT,
    role                 TEXT NOT NULL CHECK (role IN ('initiator', 'participant')),
    invited_at           TEXT NOT NULL,
    joined_at            TEXT,
    left_at              TEXT,
    duration             INTEGER NOT NULL DEFAULT 0,
    connection_state     TEXT NOT NULL,
    audio_enabled        INTEGER NOT NULL,
    video_enabled        INTEGER NOT NULL,
    screen_share_enabled INTEGER NOT NULL,
    UNIQUE (call_id, user_id)
);
CREATE INDEX call_participants_user_idx ON call_participants (user_id);

CREATE TABLE call_quality_metrics (
    id               TEXT PRIMARY KEY,
    call_id          TEXT NOT NULL REFERENCES calls (id) ON DELETE CASCADE,
    participant_id   TEXT NOT NULL REFERENCES call_participants (id) ON DELETE CASCADE,
    timestamp        TEXT NOT NULL,
    jitter           REAL,
    packet_loss      REAL,
    round_trip_time  REAL,
    bandwidth        REAL,
    fps              REAL,
    resolution       TEXT,
    codec            TEXT,
    quality          REAL
);
CREATE INDEX call_quality_metrics_call_idx ON call_quality_metrics (call_id, timestamp);

CREATE TABLE call_recordings (
    id         TEXT PRIMARY KEY,
    call_id    TEXT NOT NULL REFERENCES calls (id) ON DELETE CASCADE,
    started_at TEXT NOT NULL,
    ended_at   TEXT,
    duration   INTEGER,
    file_size  INTEGER,
    s3_key     TEXT,
    url        TEXT,
    status     TEXT NOT NULL
);
CREATE INDEX call_recordings_call_idx ON call_recordings (call_id);
