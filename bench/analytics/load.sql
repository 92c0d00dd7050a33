-- Bulk load for bench/analytics/run: Huddle calls with their participants and quality
-- samples, and phone calls, spread over the year before now(), into a database whose
-- schema huddle's migrations made. Run by psql with -v calls=N -v phone=N
-- -v users=N -v numbers=N (quality samples: 16 per connected call on average, ~10.2 M
-- for 1 M calls); the rows follow the schema of migrations/postgres/000{1,2,4,6}.
-- Rows are inserted in the order they happen (calls and their members by creation
-- time, samples by time, phone calls by start), as a running service writes them,
-- so a table's heap is ordered by time as it would be in production.
--
-- Foreign keys are not checked while loading (session_replication_role = replica:
-- the rows are consistent by construction), and the secondary indexes are dropped
-- first and built again at the end from their own definitions, so the schema ends as
-- the migrations left it. Primary and unique keys stay in place.
\set ON_ERROR_STOP on
\timing on
SET session_replication_role = replica;
SET synchronous_commit = off;
SET maintenance_work_mem = '1GB';
SET work_mem = '256MB';

CREATE TEMP TABLE bench_indexes AS
    SELECT indexname, indexdef FROM pg_indexes
    WHERE schemaname = current_schema()
      AND tablename IN ('calls', 'call_participants', 'call_quality_metrics',
                        'call_quality_totals', 'phone_calls')
      AND indexname NOT IN (SELECT conname FROM pg_constraint);
SELECT format('DROP INDEX %I', indexname) FROM bench_indexes \gexec

-- One row per call with the random draws its rows are made of. Most calls are
-- one-to-one, the rest have 3 to 8 members; initiators are skewed (a few users make
-- many calls, user-00000 most), the other members are distinct users a random stride
-- apart. Outcomes: 64 % connected (normal or max_duration), the rest missed, timed
-- out, declined, cancelled, busy or failed.
CREATE UNLOGGED TABLE bench_calls AS
SELECT g,
       md5('call' || g)::uuid::text AS id,
       created,
       members,
       initiator,
       stride,
       reason,
       started,
       talk,
       coalesce(started + make_interval(secs => talk), created + interval '45 seconds') AS ended,
       r_rec < 0.05 AS recorded,
       r_type < 0.7 AS audio,
       -- quality samples of a connected call: 16 on average (10M over ~640k calls)
       CASE WHEN reason IN ('normal', 'max_duration') THEN 4 + floor(r_q * 25)::int ELSE 0 END AS samples
FROM (
    SELECT g,
           now() - make_interval(secs => random() * 365 * 86400) AS created,
           CASE WHEN random() < 0.55 THEN 2 ELSE 3 + floor(random() * 6)::int END AS members,
           floor(:users * random() ^ 2)::int AS initiator,
           1 + floor(random() * 1400)::int AS stride,
           (ARRAY['normal', 'max_duration', 'missed', 'timeout', 'declined', 'cancelled', 'busy', 'failed'])[
               CASE WHEN o < 0.62 THEN 1 WHEN o < 0.64 THEN 2 WHEN o < 0.76 THEN 3
                    WHEN o < 0.80 THEN 4 WHEN o < 0.88 THEN 5 WHEN o < 0.93 THEN 6
                    WHEN o < 0.96 THEN 7 ELSE 8 END] AS reason,
           random() AS r_start, random() AS r_len, random() AS r_rec, random() AS r_type,
           random() AS r_q
    FROM (SELECT g, random() AS o FROM generate_series(1, :calls) g) s
) d, LATERAL (
    SELECT CASE WHEN reason IN ('normal', 'max_duration') THEN created + make_interval(secs => 3 + floor(r_start * 25)) END AS started,
           CASE WHEN reason = 'max_duration' THEN 3600
                WHEN reason = 'normal' THEN least(3599, 5 + floor(-ln(1 - r_len) * 240))::bigint END AS talk
) t;

INSERT INTO calls (id, room_id, type, state, initiator_id, chat_id, is_group, max_participants,
                   created_at, started_at, ended_at, duration, end_reason, recording_enabled,
                   recording_url, next_deadline, updated_at, version)
SELECT id, 'room-' || id, CASE WHEN audio THEN 'audio' ELSE 'video' END, 'ended',
       'user-' || lpad(initiator::text, 5, '0'), NULL, members > 2, 8,
       created, started, ended, coalesce(talk, 0), reason, recorded,
       CASE WHEN recorded THEN 'https://recordings.example/' || id END, NULL, ended, 3
FROM bench_calls ORDER BY created;

INSERT INTO call_participants (id, call_id, user_id, display_name, role, invited_at, joined_at,
                               left_at, duration, connection_state, audio_enabled,
                               video_enabled, screen_share_enabled, call_created_at)
SELECT md5('part' || c.g || '-' || k)::uuid::text, c.id,
       'user-' || lpad(((c.initiator + k * c.stride) % :users)::text, 5, '0'),
       'User ' || ((c.initiator + k * c.stride) % :users),
       CASE WHEN k = 0 THEN 'initiator' ELSE 'participant' END,
       c.created,
       CASE WHEN k = 0 THEN c.created ELSE c.started END,
       CASE WHEN k = 0 OR c.started IS NOT NULL THEN c.ended END,
       CASE WHEN k = 0 THEN floor(extract(epoch FROM c.ended - c.created))::bigint
            WHEN c.started IS NOT NULL THEN c.talk ELSE 0 END,
       CASE WHEN k = 0 OR c.started IS NOT NULL THEN 'left'
            WHEN c.reason = 'declined' THEN 'declined' ELSE 'missed' END,
       true, NOT c.audio, false, c.created
FROM bench_calls c, generate_series(0, c.members - 1) k
ORDER BY c.created, k;

-- Quality samples of connected calls, alternately a member's client's and the SFU's,
-- every 10 s of the call from its start.
INSERT INTO call_quality_metrics (id, call_id, participant_id, timestamp, jitter, packet_loss,
                                  round_trip_time, bandwidth, fps, resolution, codec, quality,
                                  source)
SELECT md5('q' || c.g || '-' || s)::uuid::text, c.id,
       md5('part' || c.g || '-' || (s % c.members))::uuid::text,
       c.started + make_interval(secs => s * 10),
       random() * 30, random() * 3, 20 + random() * 200, 300000 + random() * 2000000,
       CASE WHEN c.audio THEN NULL ELSE 15 + floor(random() * 16) END,
       CASE WHEN c.audio THEN NULL ELSE '1280x720' END,
       CASE WHEN c.audio THEN 'opus' ELSE 'VP8' END,
       1 + random() * 3.5,
       CASE WHEN s % 2 = 0 THEN 'client' ELSE 'sfu' END
FROM bench_calls c, generate_series(1, c.samples) s
WHERE c.samples > 0
ORDER BY c.started + make_interval(secs => s * 10);

-- Each call's running totals per measurer, as storing its samples keeps them.
INSERT INTO call_quality_totals
SELECT q.call_id, q.source, c.created_at, COUNT(*),
       COALESCE(SUM(q.jitter), 0), COUNT(q.jitter),
       COALESCE(SUM(q.packet_loss), 0), COUNT(q.packet_loss),
       COALESCE(SUM(q.round_trip_time), 0), COUNT(q.round_trip_time),
       COALESCE(SUM(q.quality), 0), COUNT(q.quality)
FROM call_quality_metrics q JOIN calls c ON c.id = q.call_id
GROUP BY q.call_id, q.source, c.created_at
ORDER BY c.created_at;

DROP TABLE bench_calls;

-- Phone calls between :numbers numbers (+1 415 201 0000 onwards; callers skewed as
-- the users are): 62 % completed, 35 % missed, the rest still ringing or talking.
INSERT INTO phone_calls (id, external_id, calling_number, called_number, initiated_at,
                         answered_at, ended_at, duration, state, created_at, updated_at)
SELECT md5('phone' || g)::uuid::text, 'pbx-' || g,
       '+1415201' || lpad(a::text, 4, '0'),
       '+1415201' || lpad(((a + 1 + b) % :numbers)::text, 4, '0'),
       t,
       CASE WHEN state IN ('completed', 'answered') THEN t + make_interval(secs => ring) END,
       CASE WHEN state IN ('completed', 'missed') THEN t + make_interval(secs => ring + talk) END,
       CASE WHEN state IN ('completed', 'missed') THEN (ring + talk)::bigint END,
       state, t, t + make_interval(secs => ring + talk)
FROM (
    SELECT g,
           floor(:numbers * random() ^ 2)::int AS a,
           floor(random() * (:numbers - 1))::int AS b,
           now() - make_interval(secs => random() * 365 * 86400) AS t,
           3 + floor(random() * 20)::int AS ring,
           (ARRAY['completed', 'missed', 'initiated', 'answered'])[
               CASE WHEN o < 0.62 THEN 1 WHEN o < 0.97 THEN 2 WHEN o < 0.985 THEN 3 ELSE 4 END] AS state,
           CASE WHEN o < 0.62 OR o >= 0.985 THEN floor(-ln(1 - random()) * 180)::int ELSE 0 END AS talk
    FROM (SELECT g, random() AS o FROM generate_series(1, :phone) g) s
) d
ORDER BY t;

SELECT indexdef FROM bench_indexes \gexec
-- As autovacuum would have by now: statistics, and the visibility map that lets
-- index-only scans skip the heap.
VACUUM (ANALYZE) calls;
VACUUM (ANALYZE) call_participants;
VACUUM (ANALYZE) call_quality_metrics;
VACUUM (ANALYZE) call_quality_totals;
VACUUM (ANALYZE) phone_calls;
