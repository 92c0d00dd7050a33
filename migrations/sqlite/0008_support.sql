-- Support lines (issue 17). SQLite twin of ../postgres/0008_support.sql: timestamps are
-- RFC 3339 text (UTC), booleans 0/1.

-- Everyone Huddle has seen, keyed by the token's `sub`. `role` is the token's
-- (`customer`, `representative`, `admin`), refreshed whenever they are seen.
-- A representative is free for the next customer when `availability` is
-- `available` and `current_call_id` is NULL; `idle_since` orders the free ones
-- (longest idle first).
CREATE TABLE users (
    user_id          TEXT PRIMARY KEY,
    display_name     TEXT,
    role             TEXT NOT NULL DEFAULT 'customer'
                     CHECK (role IN ('customer', 'representative', 'admin')),
    availability     TEXT NOT NULL DEFAULT 'offline'
                     CHECK (availability IN ('available', 'busy', 'offline')),
    idle_since       TEXT,
    current_call_id  TEXT,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL
);
CREATE INDEX users_free_idx ON users (idle_since)
    WHERE role = 'representative' AND availability = 'available' AND current_call_id IS NULL;
CREATE INDEX users_staff_idx ON users (role) WHERE role <> 'customer';

-- Accounts (AUTH_ACCOUNTS=true): a username and an Argon2id hash (PHC string) per user.
CREATE TABLE accounts (
    user_id         TEXT PRIMARY KEY REFERENCES users (user_id) ON DELETE CASCADE,
    username        TEXT NOT NULL UNIQUE,
    password_hash   TEXT NOT NULL,
    created_at      TEXT NOT NULL
);

-- Login lockout, by username (lower case) whether an account has it or not, so that
-- a locked name says nothing about whether it exists: `failures` wrong passwords
-- since `since` (a window of 15 minutes); the fifth locks the name until
-- `locked_until`. A successful login removes the row.
CREATE TABLE login_failures (
    username      TEXT PRIMARY KEY,
    failures      INTEGER NOT NULL,
    since         TEXT NOT NULL,
    locked_until  TEXT
);
CREATE INDEX login_failures_since_idx ON login_failures (since);

-- Refresh tokens, stored as SHA-256 hashes. Each refresh uses one up (`used_at`)
-- and issues the next of its `family`; presenting a used one revokes the family.
CREATE TABLE refresh_tokens (
    token_hash   TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    family_id    TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    expires_at   TEXT NOT NULL,
    used_at      TEXT,
    revoked_at   TEXT
);
CREATE INDEX refresh_tokens_family_idx ON refresh_tokens (family_id);

CREATE TABLE queues (
    name         TEXT PRIMARY KEY,
    description  TEXT,
    created_at   TEXT NOT NULL
);
INSERT INTO queues (name, description, created_at)
    VALUES ('default', 'The default support line', strftime('%Y-%m-%dT%H:%M:%SZ', 'now'));

-- Which queues a representative serves.
CREATE TABLE representative_queues (
    user_id  TEXT NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    queue    TEXT NOT NULL REFERENCES queues (name) ON DELETE CASCADE,
    PRIMARY KEY (user_id, queue)
);
CREATE INDEX representative_queues_queue_idx ON representative_queues (queue);

-- A customer's place in a queue. `status`: `waiting` (in line; `callback` keeps the
-- place without waiting online), `assigned` (a call rings the representative, or
-- for a callback the customer), then `served`, `left`, `abandoned` or `missed`
-- (a callback nobody answered). The position is the rank among `waiting` entries
-- by `joined_at`; `notified_*` is what the customer was last told.
CREATE TABLE queue_entries (
    id                  TEXT PRIMARY KEY,
    queue               TEXT NOT NULL REFERENCES queues (name),
    customer_id         TEXT NOT NULL,
    call_type           TEXT NOT NULL CHECK (call_type IN ('audio', 'video')),
    status              TEXT NOT NULL
                        CHECK (status IN ('waiting', 'assigned', 'served', 'left', 'abandoned', 'missed')),
    callback            INTEGER NOT NULL DEFAULT 0,
    joined_at           TEXT NOT NULL,
    away_since          TEXT,
    assigned_at         TEXT,
    representative_id   TEXT,
    call_id             TEXT,
    answered_at         TEXT,
    ended_at            TEXT,
    attempts            INTEGER NOT NULL DEFAULT 0,
    notified_position   INTEGER,
    notified_wait       INTEGER,
    updated_at          TEXT NOT NULL
);
-- One open place per customer, whichever node or request asks.
CREATE UNIQUE INDEX queue_entries_one_open_idx ON queue_entries (customer_id)
    WHERE status IN ('waiting', 'assigned');
CREATE INDEX queue_entries_line_idx ON queue_entries (queue, status, joined_at);
CREATE INDEX queue_entries_call_idx ON queue_entries (call_id);
CREATE INDEX queue_entries_ended_idx ON queue_entries (queue, ended_at) WHERE status = 'served';

-- A participant's rating of an ended call, once per user and call.
CREATE TABLE call_feedback (
    id           TEXT PRIMARY KEY,
    call_id      TEXT NOT NULL REFERENCES calls (id) ON DELETE CASCADE,
    user_id      TEXT NOT NULL,
    rating       INTEGER NOT NULL CHECK (rating BETWEEN 1 AND 5),
    comment      TEXT,
    categories   TEXT,
    created_at   TEXT NOT NULL,
    UNIQUE (call_id, user_id)
);
