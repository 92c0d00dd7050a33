-- Call records: the primary contract's four tables, plus the bookkeeping columns
-- Huddle's lifecycle needs (created_at, updated_at, next_deadline, version).
-- Ids are TEXT so that user ids from any identity provider fit and so that the
-- same queries run unchanged on SQLite.

CREATE TABLE calls (
    id                TEXT PRIMARY KEY,
    room_id           TEXT NOT NULL UNIQUE,
    type              TEXT NOT NULL CHECK (type IN ('audio', 'video')),
    state             TEXT NOT NULL CHECK (state IN ('initiating', 'ringing', 'connecting', 'connected', 'ended')),
    initiator_id      TEXT NOT NULL,
    chat_id           TEXT,
    is_group          BOOLEAN NOT NULL,
    max_participants  BIGINT NOT NULL,
    created_at        TIMESTAMPTZ NOT NULL,
    started_at        TIMESTAMPTZ,
    ended_at          TIMESTAMPTZ,
    duration          BIGINT,
    end_reason        TEXT,
    recording_enabled BOOLEAN NOT NULL DEFAULT FALSE,
    recording_url     TEXT,
    next_deadline     TIMESTAMPTZ,
    updated_at        TIMESTAMPTZ NOT NULL,
    version           BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX calls_deadline_idx ON calls (next_deadline) WHERE state <> 'ended';
CREATE INDEX calls_created_idx ON calls (created_at);

CREATE TABLE call_participants (
    id                   TEXT PRIMARY KEY,
    call_id              TEXT NOT NULL REFERENCES calls (id) ON DELETE CASCADE,
    user_id              TEXT NOT NULL,
    display_name         TEXT,
    role                 TEXT NOT NULL CHECK (role IN ('initiator', 'participant')),
    invited_at           TIMESTAMPTZ NOT NULL,
    joined_at            TIMESTAMPTZ,
    left_at              TIMESTAMPTZ,
    duration             BIGINT NOT NULL DEFAULT 0,
    connection_state     TEXT NOT NULL,
    audio_enabled        BOOLEAN NOT NULL,
    video_enabled        BOOLEAN NOT NULL,
    screen_share_enabled BOOLEAN NOT NULL,
    UNIQUE (call_id, user_id)
);
CREATE INDEX call_participants_user_idx ON call_participants (user_id);

CREATE TABLE call_quality_metrics (
    id               TEXT PRIMARY KEY,
    call_id          TEXT NOT NULL REFERENCES calls (id) ON DELETE CASCADE,
    participant_id   TEXT NOT NULL REFERENCES call_participants (id) ON DELETE CASCADE,
    timestamp        TIMESTAMPTZ NOT NULL,
    jitter           DOUBLE PRECISION,
    packet_loss      DOUBLE PRECISION,
    round_trip_time  DOUBLE PRECISION,
    bandwidth        DOUBLE PRECISION,
    fps              DOUBLE PRECISION,
    resolution       TEXT,
    codec            TEXT,
    quality          DOUBLE PRECISION
);
CREATE INDEX call_quality_metrics_call_idx ON call_quality_metrics (call_id, timestamp);

CREATE TABLE call_recordings (
    id         TEXT PRIMARY KEY,
    call_id    TEXT NOT NULL REFERENCES calls (id) ON DELETE CASCADE,
    started_at TIMESTAMPTZ NOT NULL,
    ended_at   TIMESTAMPTZ,
    duration   BIGINT,
    file_size  BIGINT,
    s3_key     TEXT,
    url        TEXT,
    status     TEXT NOT NULL
);
CREATE INDEX call_recordings_call_idx ON call_recordings (call_id);
