-- Analytics that read a window's rows in time order instead of probing per call
-- (issue 16, section 7; src/store/analytics.rs). Call ids are random: an index keyed
-- by call id scatters a month's calls across the whole table, and a month's report
-- probed it ~80,000 times (1.3 s on a million calls).

-- Each member row carries its call's creation time (fixed when the call is made), so
-- a window's memberships and a user's newest calls are one range of an index.
ALTER TABLE call_participants ADD COLUMN call_created_at TIMESTAMPTZ;
UPDATE call_participants p SET call_created_at = c.created_at FROM calls c WHERE c.id = p.call_id;
ALTER TABLE call_participants ALTER COLUMN call_created_at SET NOT NULL;

-- Per-user rows of a window (admins' reports).
CREATE INDEX call_participants_window_idx ON call_participants (call_created_at)
    INCLUDE (user_id, role, duration, call_id);
-- A user's calls, newest first (history pages), and the membership subquery's
-- (user_id -> call_id), from the index alone. Replaces (user_id, call_id).
CREATE INDEX call_participants_user_created_idx
    ON call_participants (user_id, call_created_at, call_id);
DROP INDEX call_participants_user_call_idx;

-- Running totals of each call's quality samples per measurer, kept by the statement
-- that stores a sample: averages over a window are sums of these (two rows per
-- call at most) instead of every sample.
CREATE TABLE call_quality_totals (
    call_id                 TEXT NOT NULL REFERENCES calls (id) ON DELETE CASCADE,
    source                  TEXT NOT NULL,
    call_created_at         TIMESTAMPTZ NOT NULL,
    samples                 BIGINT NOT NULL,
    -- Each figure's sum over the samples that have it, and how many have it.
    jitter_sum              DOUBLE PRECISION NOT NULL,
    jitter_samples          BIGINT NOT NULL,
    packet_loss_sum         DOUBLE PRECISION NOT NULL,
    packet_loss_samples     BIGINT NOT NULL,
    round_trip_time_sum     DOUBLE PRECISION NOT NULL,
    round_trip_time_samples BIGINT NOT NULL,
    quality_sum             DOUBLE PRECISION NOT NULL,
    quality_samples         BIGINT NOT NULL,
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
CREATE INDEX call_quality_totals_window_idx ON call_quality_totals (call_created_at)
    INCLUDE (source, samples, jitter_sum, jitter_samples, packet_loss_sum,
             packet_loss_samples, round_trip_time_sum, round_trip_time_samples,
             quality_sum, quality_samples);
-- The per-sample index 0005 made for the averages has no reader left.
DROP INDEX call_quality_metrics_analytics_idx;

-- A window's phone calls with every column the phone report reads (index-only).
CREATE INDEX phone_calls_window_idx ON phone_calls (initiated_at)
    INCLUDE (state, duration, calling_number, called_number);
