-- Indexes for call analytics (GET /api/v1/calls/analytics; src/store/analytics.rs).
-- (0004 is the phone tables, from the phone branch; the analytics of phone calls use
-- its (state, initiated_at) index.)

-- A user's calls: the membership subquery reads (user_id → call_id) from the index
-- alone. It replaces the index on user_id only, which it covers.
CREATE INDEX call_participants_user_call_idx ON call_participants (user_id, call_id);
DROP INDEX call_participants_user_idx;

-- Quality averages per measurer over a window's calls: an index-only scan per call.
CREATE INDEX call_quality_metrics_analytics_idx ON call_quality_metrics (call_id, source)
    INCLUDE (jitter, packet_loss, round_trip_time, quality);

-- A window's calls with the columns the summary reads, for an index-only scan.
CREATE INDEX calls_created_analytics_idx ON calls (created_at)
    INCLUDE (id, started_at, state, duration, end_reason, recording_enabled);
DROP INDEX calls_created_idx;
