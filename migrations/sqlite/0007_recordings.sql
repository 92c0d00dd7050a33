-- Call recordings (issue 13). SQLite twin of ../postgres/0007_recordings.sql, but
-- for `duration`: SQLite stores a fraction in the INTEGER column as it is (the
-- store reads it with a CAST), so it needs no change.

ALTER TABLE call_recordings ADD COLUMN format TEXT NOT NULL DEFAULT 'webm';
ALTER TABLE call_recordings ADD COLUMN reason TEXT;
ALTER TABLE call_recordings ADD COLUMN error TEXT;
ALTER TABLE call_recordings ADD COLUMN tracks TEXT;
ALTER TABLE call_recordings ADD COLUMN path TEXT;
ALTER TABLE call_recordings ADD COLUMN node TEXT;
ALTER TABLE call_recordings ADD COLUMN started_by TEXT;
ALTER TABLE call_recordings ADD COLUMN dropped_frames INTEGER;

CREATE INDEX call_recordings_call_started_idx ON call_recordings (call_id, started_at);
DROP INDEX call_recordings_call_idx;
CREATE INDEX call_recordings_started_idx ON call_recordings (started_at);
CREATE UNIQUE INDEX call_recordings_one_running_idx ON call_recordings (call_id)
    WHERE status = 'recording';
CREATE INDEX call_recordings_unfinished_idx ON call_recordings (node)
    WHERE status IN ('recording', 'processing');
