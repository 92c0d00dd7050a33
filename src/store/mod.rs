//! Call records in SQLite (the zero-setup default) or PostgreSQL, behind one type.
//!
//! Both backends run the same SQL text: it sticks to what both dialects share
//! (`$N` placeholders, `CASE`, `COALESCE`, `CAST(.. AS DOUBLE PRECISION)`), ids are
//! text, and [`with_pool!`] expands each query once per backend. Migrations for each
//! dialect live in `migrations/` and are applied at start-up.
//!
//! Writes to a call use optimistic concurrency: [`Store::save`] succeeds only if the
//! call's `version` is still the one that was read, so two nodes (or two requests)
//! changing one call at once cannot overwrite each other; the loser re-reads and
//! retries (see `calls::service`).

mod rows;

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};

use crate::calls::lifecycle::CallSnapshot;
use crate::calls::model::{Call, CallId, CallState, Participant, UserId};
use crate::calls::quality::QualityMetric;
use rows::{CallRow, ParticipantRow};

/// A database operation failed. Never shown to API clients verbatim.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("corrupt data in the database: {0}")]
    Corrupt(String),
    #[error("DATABASE_URL must start with sqlite: or postgres:// (got `{0}`)")]
    UnsupportedUrl(String),
}

/// Which database holds the records.
#[derive(Debug, Clone)]
enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// The database a DATABASE_URL names, and how to open it.
enum Target {
    Sqlite(SqliteConnectOptions),
    Postgres(PgConnectOptions),
}

impl Target {
    fn of(url: &str) -> Result<Target, StoreError> {
        if url.starts_with("sqlite:") {
            Ok(Target::Sqlite(
                SqliteConnectOptions::from_str(url)?
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .busy_timeout(Duration::from_secs(5))
                    .foreign_keys(true),
            ))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Target::Postgres(PgConnectOptions::from_str(url)?))
        } else {
            Err(StoreError::UnsupportedUrl(url.to_owned()))
        }
    }
}

/// The call records. Cheap to clone (a pool handle).
#[derive(Debug, Clone)]
pub struct Store {
    pool: Pool,
}

/// Runs `$body` with `$pool` bound to whichever pool the store has; the body is
/// compiled once per backend, so the SQL in it must be valid in both dialects.
macro_rules! with_pool {
    ($store:expr, |$pool:ident| $body:expr) => {
        match &$store.pool {
            Pool::Sqlite($pool) => $body,
            Pool::Postgres($pool) => $body,
        }
    };
}

// After `with_pool!`, which they use.
pub mod accounts;
mod analytics;
pub mod feedback;
pub mod phone;
pub mod queue;
pub mod recordings;
pub mod users;

/// Binds a participant's columns in `INSERT_PARTICIPANT` order.
macro_rules! bind_participant {
    ($query:expr, $p:expr) => {
        $query
            .bind($p.id.to_string())
            .bind($p.call_id.to_string())
            .bind($p.user_id.as_str())
            .bind($p.display_name.as_deref())
            .bind($p.role.as_str())
            .bind($p.invited_at)
            .bind($p.joined_at)
            .bind($p.left_at)
            .bind($p.duration)
            .bind($p.connection_state.as_str())
            .bind($p.audio_enabled)
            .bind($p.video_enabled)
            .bind($p.screen_share_enabled)
            .bind($p.away_until)
            .bind($p.declined_at)
    };
}

const INSERT_CALL: &str = "INSERT INTO calls (id, room_id, type, state, initiator_id, chat_id, \
     is_group, max_participants, created_at, started_at, ended_at, duration, end_reason, \
     recording_enabled, recording_url, next_deadline, updated_at, version, media_mode) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)";

/// `call_created_at` is copied from the call (stored before its members), so that a
/// window's memberships and a user's newest calls read one range of an index.
const INSERT_PARTICIPANT: &str = "INSERT INTO call_participants (id, call_id, user_id, \
     display_name, role, invited_at, joined_at, left_at, duration, connection_state, \
     audio_enabled, video_enabled, screen_share_enabled, away_until, declined_at, \
     call_created_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, \
     (SELECT created_at FROM calls WHERE id = $2))";

const UPDATE_CALL: &str = "UPDATE calls SET state = $1, started_at = $2, ended_at = $3, \
     duration = $4, end_reason = $5, next_deadline = $6, updated_at = $7, is_group = $8, \
     recording_enabled = $11, recording_url = $12, \
     version = version + 1 WHERE id = $9 AND version = $10";

const UPDATE_PARTICIPANT: &str = "UPDATE call_participants SET display_name = $1, \
     joined_at = $2, left_at = $3, duration = $4, connection_state = $5, audio_enabled = $6, \
     video_enabled = $7, screen_share_enabled = $8, invited_at = $9, away_until = $10, \
     declined_at = $11 WHERE id = $12";

/// Adds one sample (`$3`..`$6`: jitter, packet loss, round-trip time, MOS, each
/// possibly NULL) to call `$1`'s totals for measurer `$2`.
const ADD_QUALITY_TOTALS: &str = "INSERT INTO call_quality_totals (call_id, source, \
     call_created_at, samples, jitter_sum, jitter_samples, packet_loss_sum, \
     packet_loss_samples, round_trip_time_sum, round_trip_time_samples, quality_sum, \
     quality_samples) \
     SELECT id, $2, created_at, 1, \
         COALESCE($3, 0), CASE WHEN $3 IS NULL THEN 0 ELSE 1 END, \
         COALESCE($4, 0), CASE WHEN $4 IS NULL THEN 0 ELSE 1 END, \
         COALESCE($5, 0), CASE WHEN $5 IS NULL THEN 0 ELSE 1 END, \
         COALESCE($6, 0), CASE WHEN $6 IS NULL THEN 0 ELSE 1 END \
     FROM calls WHERE id = $1 \
     ON CONFLICT (call_id, source) DO UPDATE SET \
         samples = call_quality_totals.samples + 1, \
         jitter_sum = call_quality_totals.jitter_sum + excluded.jitter_sum, \
         jitter_samples = call_quality_totals.jitter_samples + excluded.jitter_samples, \
         packet_loss_sum = call_quality_totals.packet_loss_sum + excluded.packet_loss_sum, \
         packet_loss_samples = call_quality_totals.packet_loss_samples + excluded.packet_loss_samples, \
         round_trip_time_sum = call_quality_totals.round_trip_time_sum + excluded.round_trip_time_sum, \
         round_trip_time_samples = call_quality_totals.round_trip_time_samples + excluded.round_trip_time_samples, \
         quality_sum = call_quality_totals.quality_sum + excluded.quality_sum, \
         quality_samples = call_quality_totals.quality_samples + excluded.quality_samples";

const INVITEE_STATUS: &str = "SELECT \
     (SELECT COUNT(*) FROM call_participants p JOIN calls c ON c.id = p.call_id \
         WHERE p.user_id = $1 AND p.connection_state = 'invited' AND c.state <> 'ended') AS ringing, \
     (SELECT COUNT(*) FROM call_participants p JOIN calls c ON c.id = p.call_id \
         WHERE p.user_id = $1 AND p.connection_state = 'connected' AND c.state <> 'ended') AS in_calls, \
     (SELECT MAX(p.declined_at) FROM call_participants p JOIN calls c ON c.id = p.call_id \
         WHERE p.user_id = $1 AND c.initiator_id = $2 AND p.declined_at > $3) AS declined_at";

/// Participants of a set of calls, initiator first, then in invitation order.
const PARTICIPANT_ORDER: &str = "ORDER BY role, invited_at, user_id";

/// Calls of which `$1` is a member.
const MEMBER_OF: &str = "id IN (SELECT call_id FROM call_participants WHERE user_id = $1)";

const STATS: &str = "SELECT COUNT(*) AS total_calls, \
     COALESCE(SUM(CASE WHEN state <> 'ended' THEN 1 ELSE 0 END), 0) AS active_calls, \
     COALESCE(SUM(CASE WHEN state = 'ended' AND started_at IS NOT NULL \
         AND end_reason <> 'failed' THEN 1 ELSE 0 END), 0) AS completed_calls, \
     COALESCE(SUM(CASE WHEN end_reason = 'failed' THEN 1 ELSE 0 END), 0) AS failed_calls, \
     COALESCE(SUM(CASE WHEN end_reason = 'missed' THEN 1 ELSE 0 END), 0) AS missed_calls, \
     COALESCE(SUM(CASE WHEN end_reason = 'declined' THEN 1 ELSE 0 END), 0) AS declined_calls, \
     AVG(CASE WHEN state = 'ended' AND started_at IS NOT NULL \
         THEN CAST(duration AS DOUBLE PRECISION) END) AS average_duration, \
     (SELECT AVG(CAST(f.rating AS DOUBLE PRECISION)) FROM call_feedback f \
         WHERE CAST($1 AS TEXT) IS NULL \
            OR f.call_id IN (SELECT call_id FROM call_participants WHERE user_id = $1)) \
         AS average_rating \
     FROM calls \
     WHERE CAST($1 AS TEXT) IS NULL \
        OR id IN (SELECT call_id FROM call_participants WHERE user_id = $1)";

/// Call counts, over all calls or over one user's.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CallStats {
    pub total_calls: i64,
    /// Not yet ended.
    pub active_calls: i64,
    /// Ended after connecting, and not reported as failed.
    pub completed_calls: i64,
    pub failed_calls: i64,
    pub missed_calls: i64,
    pub declined_calls: i64,
    /// Mean `duration` of the completed and failed calls that connected, in seconds.
    pub average_duration: Option<f64>,
    /// Mean rating (1 to 5) of the feedback on these calls; `null` when none.
    pub average_rating: Option<f64>,
}

/// Quality measurements of one call.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QualitySummary {
    pub samples: i64,
    /// Mean of the samples' MOS estimates.
    pub average_mos: Option<f64>,
}

/// What is going on right now, for the Prometheus gauges.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LiveCounts {
    /// Active calls per state.
    pub calls_by_state: Vec<(CallState, i64)>,
    /// Participants currently in an active call.
    pub participants_connected: i64,
}

impl Store {
    /// Opens the database named by `url` (`sqlite:...` or `postgres://...`) and applies
    /// pending migrations. A SQLite file is created if missing.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let pool = match Target::of(url)? {
            Target::Sqlite(options) => {
                // An in-memory database lives and dies with its one connection.
                let in_memory = url.contains(":memory:") || url.contains("mode=memory");
                let pool = SqlitePoolOptions::new()
                    .max_connections(if in_memory { 1 } else { 4 })
                    .idle_timeout(None)
                    .max_lifetime(None)
                    .connect_with(options)
                    .await?;
                sqlx::migrate!("migrations/sqlite").run(&pool).await?;
                Pool::Sqlite(pool)
            }
            Target::Postgres(options) => {
                let pool = PgPoolOptions::new()
                    .max_connections(10)
                    .acquire_timeout(Duration::from_secs(5))
                    .connect_with(options)
                    .await?;
                sqlx::migrate!("migrations/postgres").run(&pool).await?;
                Pool::Postgres(pool)
            }
        };
        Ok(Store { pool })
    }

    /// Reads `url` as [`Store::connect`] does, without connecting: `sqlite` or
    /// `postgres` when it names a database that could be opened.
    pub fn check_url(url: &str) -> Result<&'static str, StoreError> {
        Ok(match Target::of(url)? {
            Target::Sqlite(_) => "sqlite",
            Target::Postgres(_) => "postgres",
        })
    }

    /// `sqlite` or `postgres`.
    pub fn backend(&self) -> &'static str {
        match self.pool {
            Pool::Sqlite(_) => "sqlite",
            Pool::Postgres(_) => "postgres",
        }
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        with_pool!(self, |pool| sqlx::query("SELECT 1")
            .execute(pool)
            .await
            .map(drop))?;
        Ok(())
    }

    /// Waits for connections in use to be returned, then closes them all.
    pub async fn close(&self) {
        with_pool!(self, |pool| pool.close().await)
    }

    /// Records a new call and its participants, all or nothing.
    pub async fn insert(&self, snapshot: &CallSnapshot) -> Result<(), StoreError> {
        let c = &snapshot.call;
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query(INSERT_CALL)
                .bind(c.id.to_string())
                .bind(&c.room_id)
                .bind(c.call_type.as_str())
                .bind(c.state.as_str())
                .bind(c.initiator_id.as_str())
                .bind(c.chat_id.as_deref())
                .bind(c.is_group)
                .bind(i64::from(c.max_participants))
                .bind(c.created_at)
                .bind(c.started_at)
                .bind(c.ended_at)
                .bind(c.duration)
                .bind(c.end_reason.map(|r| r.as_str()))
                .bind(c.recording_enabled)
                .bind(c.recording_url.as_deref())
                .bind(c.next_deadline)
                .bind(c.updated_at)
                .bind(c.version)
                .bind(c.media_mode.as_str())
                .execute(&mut *tx)
                .await?;
            for p in &snapshot.participants {
                bind_participant!(sqlx::query(INSERT_PARTICIPANT), p)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await
        })?;
        Ok(())
    }

    /// Writes the changes from `before` to `after` if nobody changed the call since
    /// `before` was read. Returns `false`, writing nothing, if somebody did.
    pub async fn save(
        &self,
        before: &CallSnapshot,
        after: &CallSnapshot,
    ) -> Result<bool, StoreError> {
        if after.participants.len() < before.participants.len()
            || before
                .participants
                .iter()
                .zip(&after.participants)
                .any(|(b, a)| b.id != a.id)
        {
            return Err(StoreError::Corrupt(format!(
                "call {}: a save may change or add participants, not remove or reorder them",
                after.call.id
            )));
        }
        let c = &after.call;
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let updated = sqlx::query(UPDATE_CALL)
                .bind(c.state.as_str())
                .bind(c.started_at)
                .bind(c.ended_at)
                .bind(c.duration)
                .bind(c.end_reason.map(|r| r.as_str()))
                .bind(c.next_deadline)
                .bind(c.updated_at)
                .bind(c.is_group)
                .bind(c.id.to_string())
                .bind(before.call.version)
                .bind(c.recording_enabled)
                .bind(c.recording_url.as_deref())
                .execute(&mut *tx)
                .await?;
            if updated.rows_affected() == 0 {
                return Ok(false);
            }
            for (old, p) in before.participants.iter().zip(&after.participants) {
                if old == p {
                    continue;
                }
                sqlx::query(UPDATE_PARTICIPANT)
                    .bind(p.display_name.as_deref())
                    .bind(p.joined_at)
                    .bind(p.left_at)
                    .bind(p.duration)
                    .bind(p.connection_state.as_str())
                    .bind(p.audio_enabled)
                    .bind(p.video_enabled)
                    .bind(p.screen_share_enabled)
                    .bind(p.invited_at)
                    .bind(p.away_until)
                    .bind(p.declined_at)
                    .bind(p.id.to_string())
                    .execute(&mut *tx)
                    .await?;
            }
            for p in &after.participants[before.participants.len()..] {
                bind_participant!(sqlx::query(INSERT_PARTICIPANT), p)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(true)
        })
    }

    /// Records a quality measurement, and adds it to its call's running totals for
    /// that measurer (`call_quality_totals`, which analytics read).
    pub async fn insert_quality(&self, m: &QualityMetric) -> Result<(), StoreError> {
        let r = &m.report;
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "INSERT INTO call_quality_metrics (id, call_id, participant_id, timestamp, jitter, \
                 packet_loss, round_trip_time, bandwidth, fps, resolution, codec, quality, source) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
            )
            .bind(m.id.to_string())
            .bind(m.call_id.to_string())
            .bind(m.participant_id.to_string())
            .bind(m.timestamp)
            .bind(r.jitter)
            .bind(r.packet_loss)
            .bind(r.round_trip_time)
            .bind(r.bandwidth)
            .bind(r.fps)
            .bind(r.resolution.as_deref())
            .bind(r.codec.as_deref())
            .bind(m.quality)
            .bind(m.source.as_str())
            .execute(&mut *tx)
            .await?;
            sqlx::query(ADD_QUALITY_TOTALS)
                .bind(m.call_id.to_string())
                .bind(m.source.as_str())
                .bind(r.jitter)
                .bind(r.packet_loss)
                .bind(r.round_trip_time)
                .bind(m.quality)
                .execute(&mut *tx)
                .await?;
            tx.commit().await
        })?;
        Ok(())
    }

    /// How many quality measurements a call has, and their mean MOS.
    pub async fn quality_summary(&self, call: CallId) -> Result<QualitySummary, StoreError> {
        Ok(with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT COUNT(*) AS samples, AVG(quality) AS average_mos \
                 FROM call_quality_metrics WHERE call_id = $1",
            )
            .bind(call.to_string())
            .fetch_one(pool)
            .await?
        }))
    }

    /// The call with this id and its participants.
    pub async fn load(&self, id: CallId) -> Result<Option<CallSnapshot>, StoreError> {
        let id = id.to_string();
        let (calls, participants): (Vec<CallRow>, Vec<ParticipantRow>) = with_pool!(self, |pool| {
            let calls = sqlx::query_as("SELECT * FROM calls WHERE id = $1")
                .bind(&id)
                .fetch_all(pool)
                .await?;
            let participants = sqlx::query_as(&format!(
                "SELECT * FROM call_participants WHERE call_id = $1 {PARTICIPANT_ORDER}"
            ))
            .bind(&id)
            .fetch_all(pool)
            .await?;
            (calls, participants)
        });
        Ok(assemble(calls, participants)?.pop())
    }

    /// A page of `user`'s calls, newest first, and how many they have in all.
    pub async fn history(
        &self,
        user: &UserId,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<CallSnapshot>, i64), StoreError> {
        // The user's member rows carry their calls' creation times: the page is a
        // range of (user_id, call_created_at, call_id), newest first, and the count
        // is their member rows (one per call: UNIQUE (call_id, user_id)).
        let page = "SELECT c.* FROM call_participants p JOIN calls c ON c.id = p.call_id \
             WHERE p.user_id = $1 ORDER BY p.call_created_at DESC, p.call_id DESC \
             LIMIT $2 OFFSET $3";
        let count = "SELECT COUNT(*) FROM call_participants WHERE user_id = $1";
        let (calls, total): (Vec<CallRow>, i64) = with_pool!(self, |pool| {
            let calls = sqlx::query_as(page)
                .bind(user.as_str())
                .bind(limit)
                .bind(offset)
                .fetch_all(pool)
                .await?;
            let total = sqlx::query_scalar(count)
                .bind(user.as_str())
                .fetch_one(pool)
                .await?;
            (calls, total)
        });
        Ok((self.with_participants(calls).await?, total))
    }

    /// `user`'s calls that have not ended, newest first.
    pub async fn active_for(&self, user: &UserId) -> Result<Vec<CallSnapshot>, StoreError> {
        let query = format!(
            "SELECT * FROM calls WHERE state <> 'ended' AND {MEMBER_OF} ORDER BY created_at DESC, id DESC"
        );
        let calls: Vec<CallRow> = with_pool!(self, |pool| {
            sqlx::query_as(&query)
                .bind(user.as_str())
                .fetch_all(pool)
                .await?
        });
        self.with_participants(calls).await
    }

    /// Loads the participants of `calls` and pairs them up, keeping the calls' order.
    async fn with_participants(
        &self,
        calls: Vec<CallRow>,
    ) -> Result<Vec<CallSnapshot>, StoreError> {
        let calls: Vec<Call> = calls
            .into_iter()
            .map(Call::try_from)
            .collect::<Result<_, _>>()?;
        if calls.is_empty() {
            return Ok(Vec::new());
        }
        let placeholders: Vec<String> = (1..=calls.len()).map(|i| format!("${i}")).collect();
        let query = format!(
            "SELECT * FROM call_participants WHERE call_id IN ({}) {PARTICIPANT_ORDER}",
            placeholders.join(", ")
        );
        let participants: Vec<ParticipantRow> = with_pool!(self, |pool| {
            let mut q = sqlx::query_as(&query);
            for call in &calls {
                q = q.bind(call.id.to_string());
            }
            q.fetch_all(pool).await?
        });
        group(calls, participants)
    }

    /// What stands in the way of ringing `invitee` for `caller`: how many live calls
    /// ring them now, whether they are in a live call, and when they last declined a
    /// call of `caller`'s (started by them) after `since`.
    pub async fn invitee_status(
        &self,
        caller: &UserId,
        invitee: &UserId,
        since: DateTime<Utc>,
    ) -> Result<InviteeStatus, StoreError> {
        Ok(with_pool!(self, |pool| {
            sqlx::query_as(INVITEE_STATUS)
                .bind(invitee.as_str())
                .bind(caller.as_str())
                .bind(since)
                .fetch_one(pool)
                .await?
        }))
    }

    /// Ids of every call that has not ended.
    pub async fn active_ids(&self) -> Result<Vec<CallId>, StoreError> {
        let ids: Vec<String> = with_pool!(self, |pool| {
            sqlx::query_scalar("SELECT id FROM calls WHERE state <> 'ended'")
                .fetch_all(pool)
                .await?
        });
        call_ids(&ids)
    }

    /// Ids of active calls whose next deadline is at or before `now`, earliest first.
    pub async fn due(&self, now: DateTime<Utc>, limit: i64) -> Result<Vec<CallId>, StoreError> {
        let ids: Vec<String> = with_pool!(self, |pool| {
            sqlx::query_scalar(
                "SELECT id FROM calls WHERE state <> 'ended' AND next_deadline <= $1 \
                 ORDER BY next_deadline LIMIT $2",
            )
            .bind(now)
            .bind(limit)
            .fetch_all(pool)
            .await?
        });
        call_ids(&ids)
    }

    /// Call counts over everyone's calls (`None`) or one user's.
    pub async fn stats(&self, user: Option<&UserId>) -> Result<CallStats, StoreError> {
        let user = user.map(UserId::as_str);
        Ok(with_pool!(self, |pool| sqlx::query_as(STATS)
            .bind(user)
            .fetch_one(pool)
            .await?))
    }

    /// Active calls per state and participants in them, for the gauges.
    pub async fn live_counts(&self) -> Result<LiveCounts, StoreError> {
        let (by_state, participants_connected): (Vec<(String, i64)>, i64) = with_pool!(
            self,
            |pool| {
                let by_state = sqlx::query_as(
                "SELECT state, COUNT(*) FROM calls WHERE state <> 'ended' GROUP BY state ORDER BY state",
            )
            .fetch_all(pool)
            .await?;
                let connected = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM call_participants p JOIN calls c ON c.id = p.call_id \
                 WHERE c.state <> 'ended' AND p.connection_state = 'connected'",
                )
                .fetch_one(pool)
                .await?;
                (by_state, connected)
            }
        );
        let calls_by_state = by_state
            .into_iter()
            .map(|(state, n)| {
                state
                    .parse()
                    .map(|s| (s, n))
                    .map_err(|e| StoreError::Corrupt(format!("calls.state: {e}")))
            })
            .collect::<Result<_, _>>()?;
        Ok(LiveCounts {
            calls_by_state,
            participants_connected,
        })
    }
}

/// Converts rows of one call (or none) into snapshots.
fn assemble(
    calls: Vec<CallRow>,
    participants: Vec<ParticipantRow>,
) -> Result<Vec<CallSnapshot>, StoreError> {
    let calls = calls
        .into_iter()
        .map(Call::try_from)
        .collect::<Result<_, _>>()?;
    group(calls, participants)
}

/// Gives each call its participants, keeping the order of both.
fn group(
    calls: Vec<Call>,
    participants: Vec<ParticipantRow>,
) -> Result<Vec<CallSnapshot>, StoreError> {
    let mut by_call: HashMap<CallId, Vec<Participant>> = HashMap::with_capacity(calls.len());
    for row in participants {
        let participant = Participant::try_from(row)?;
        by_call
            .entry(participant.call_id)
            .or_default()
            .push(participant);
    }
    Ok(calls
        .into_iter()
        .map(|call| CallSnapshot {
            participants: by_call.remove(&call.id).unwrap_or_default(),
            call,
        })
        .collect())
}

/// See [`Store::invitee_status`].
#[derive(Debug, sqlx::FromRow)]
pub struct InviteeStatus {
    /// Live calls ringing them now.
    pub ringing: i64,
    /// Live calls they are in now.
    pub in_calls: i64,
    /// When they last declined the caller, within the period asked about.
    pub declined_at: Option<DateTime<Utc>>,
}

/// An insert's result: `true` if it stored its row, `false` if a unique index
/// refused it (the row, or one it stands for, exists), or the error.
fn unless_duplicate(inserted: Result<(), sqlx::Error>) -> Result<bool, StoreError> {
    match inserted {
        Ok(()) => Ok(true),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Parses ids read from `calls.id`.
fn call_ids(ids: &[String]) -> Result<Vec<CallId>, StoreError> {
    ids.iter()
        .map(|id| {
            id.parse()
                .map_err(|e| StoreError::Corrupt(format!("calls.id = {id:?}: {e}")))
        })
        .collect()
}
