-- Call recordings (issue 13): what the wire's recording needs beside the primary
-- contract's columns. `duration` becomes seconds with a fraction; `path` is the file
-- relative to RECORDINGS_DIR on `node` (the NODE_ID that writes it, which finishes
-- its unfinished rows after a restart); `tracks` is JSON text.

ALTER TABLE call_recordings ALTER COLUMN duration TYPE DOUBLE PRECISION;
ALTER TABLE call_recordings ADD COLUMN format TEXT NOT NULL DEFAULT 'webm';
ALTER TABLE call_recordings ADD COLUMN reason TEXT;
ALTER TABLE call_recordings ADD COLUMN error TEXT;
ALTER TABLE call_recordings ADD COLUMN tracks TEXT;
ALTER TABLE call_recordings ADD COLUMN path TEXT;
ALTER TABLE call_recordings ADD COLUMN node TEXT;
ALTER TABLE call_recordings ADD COLUMN started_by TEXT;
ALTER TABLE call_recordings ADD COLUMN dropped_frames BIGINT;

-- A call's recordings newest first, and the listing across calls (and the retention
-- sweep) by start time.
CREATE INDEX call_recordings_call_started_idx ON call_recordings (call_id, started_at);
DROP INDEX call_recordings_call_idx;
CREATE INDEX call_recordings_started_idx ON call_recordings (started_at);
-- One recording at a time per call, whichever node or request asks.
CREATE UNIQUE INDEX call_recordings_one_running_idx ON call_recordings (call_id)
    WHERE status = 'recording';
-- What a node finishes after a restart.
CREATE INDEX call_recordings_unfinished_idx ON call_recordings (node)
    WHERE status IN ('recording', 'processing');
