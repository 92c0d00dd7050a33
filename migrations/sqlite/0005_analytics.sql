-- Indexes for call analytics (GET /api/v1/calls/analytics; src/store/analytics.rs).
-- SQLite twin of ../postgres/0005_analytics.sql. (0004 is the phone tables, from the
-- phone branch; the analytics of phone calls use its (state, initiated_at) index.)

-- A user's calls: the membership subquery reads (user_id → call_id) from the index
-- alone. It replaces the index on user_id only, which it covers.
CREATE INDEX call_participants_user_call_idx ON call_participants (user_id, call_id);
DROP INDEX call_participants_user_idx;

-- Quality averages per measurer over a window's calls, read from the index alone
-- (SQLite has no INCLUDE: the figures are trailing key columns).
CREATE INDEX call_quality_metrics_analytics_idx ON call_quality_metrics
    (call_id, source, jitter, packet_loss, round_trip_time, quality);
