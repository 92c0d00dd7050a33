-- Login lockout (issue 17), by username (lower case) whether an account has it or
-- not, so that a locked name says nothing about whether it exists: `failures` wrong
-- passwords since `since` (a window of 15 minutes); the fifth locks the name until
-- `locked_until`. A successful login removes the row.
CREATE TABLE login_failures (
    username      TEXT PRIMARY KEY,
    failures      INTEGER NOT NULL,
    since         TIMESTAMPTZ NOT NULL,
    locked_until  TIMESTAMPTZ
);
CREATE INDEX login_failures_since_idx ON login_failures (since);
