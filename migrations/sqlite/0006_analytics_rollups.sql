-- SQLite twin of ../postgres/0006_analytics_rollups.sql (read its comments). SQLite
-- has no INCLUDE: covered columns trail the keys. The added column is NOT NULL with
-- a default only because SQLite cannot add one without; every insert sets it.

ALTER TABLE call_participants ADD COLUMN call_created_at TEXT NOT NULL DEFAULT '';
UPDATE call_participants
   SET call_created_at = (SELECT c.created_at FROM calls c WHERE c.id = call_participants.call_id);

CREATE INDEX call_participants_window_idx
    ON call_participants (call_created_at, user_id, role, duration, call_id);
CREATE INDEX call_participants_user_created_idx
    ON call_participants (user_id, call_created_at, call_id);
DROP INDEX call_participants_user_call_idx;

CREATE TABLE call_quality_totals (
    call_id                 TEXT NOT NULL REFERENCES calls (id) ON DELETE CASCADE,
    source                  TEXT NOT NULL,
    call_created_at         TEXT NOT NULL,
    samples                 INTEGER NOT NULL,
    jitter_sum              REAL NOT NULL,
    jitter_samples          INTEGER NOT NULL,
    packet_loss_sum         REAL NOT NULL,
    packet_loss_samples     INTEGER NOT NULL,
    round_trip_time_sum     REAL NOT NULL,
    round_trip_time_samples INTEGER NOT NULL,
    quality_sum             REAL NOT NULL,
    quality_samples         INTEGER NOT NULL,
    PRIMARY KEY (call_id, source)
);
INSERT INTO call_quality_totals
SELECT q.call_id, q.source, c.created_at, COUNT(*),
       COALESCE(SUM(q.jitter), 0), COUNT(q.jitter),
       COALESCE(SUM(q.packet_loss), 0), COUNT(q.packet_loss),
       COALESCE(SUM(q.round_trip_time), 0), COUNT(q.round_trip_time),
       COALESCE(SUM(q.quality), 0), COUNT(q.quality)
FROM call_quality_metrics q JOIN calls c ON c.id = q.call_id
GROUP BY q.call_id, q.source, c.created_at;
CREATE INDEX call_quality_totals_window_idx ON call_quality_totals
    (call_created_at, source, samples, jitter_sum, jitter_samples, packet_loss_sum,
     packet_loss_samples, round_trip_time_sum, round_trip_time_samples, quality_sum,
     quality_samples);
DROP INDEX call_quality_metrics_analytics_idx;

CREATE INDEX phone_calls_window_idx
    ON phone_calls (initiated_at, state, duration, calling_number, called_number);
