-- Login lockout (issue 17). SQLite twin of ../postgres/0009_users.sql: timestamps are
-- RFC 3339 text (UTC).
CREATE TABLE login_failures (
    username      TEXT PRIMARY KEY,
    failures      INTEGER NOT NULL,
    since         TEXT NOT NULL,
    locked_until  TEXT
);
CREATE INDEX login_failures_since_idx ON login_failures (since);
