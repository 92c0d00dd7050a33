//! Call recordings (`call_recordings`): one row per recording, moved along its
//! statuses by conditional updates (`... WHERE status = 'recording'`), so that of two
//! reports of one step (a stop asked for and the room's own `Stopped`) exactly one
//! wins and is announced. One recording runs per call at a time: a unique index on
//! the running ones refuses a second, whichever node asks.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Pool, Store, StoreError, unless_duplicate};
use crate::calls::model::{CallId, RecordingStatus, UserId};
use crate::recordings::model::{Recording, RecordingTrack};

/// Runs an update of `call_recordings` with these parameters; whether it changed a row.
macro_rules! update {
    ($store:expr, $sql:expr, $($arg:expr),+) => {{
        let affected = with_pool!($store, |pool| {
            sqlx::query($sql)$(.bind($arg))+.execute(pool).await?.rows_affected()
        });
        Ok(affected > 0)
    }};
}

/// The columns of a [`RecordingRow`]; `duration` is cast because SQLite keeps a
/// whole number of seconds as an integer.
const COLUMNS: &str = "id, call_id, status, format, started_at, ended_at, \
     CAST(duration AS DOUBLE PRECISION) AS duration, file_size, tracks, reason, error, \
     node, started_by, dropped_frames, s3_key";

const INSERT: &str = "INSERT INTO call_recordings (id, call_id, status, format, started_at, \
     path, node, started_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";

/// Recordings visible to user `$1` (all for NULL): of calls they joined at some time.
/// `$2`, `$3`: started in [from, to); `$4`: format.
const VISIBLE: &str = "FROM call_recordings WHERE \
     (CAST($1 AS TEXT) IS NULL OR call_id IN (SELECT call_id FROM call_participants \
         WHERE user_id = $1 AND joined_at IS NOT NULL)) \
     AND (CAST($2 AS TEXT) IS NULL OR started_at >= $2) \
     AND (CAST($3 AS TEXT) IS NULL OR started_at < $3) \
     AND (CAST($4 AS TEXT) IS NULL OR format = $4)";

#[derive(Debug, sqlx::FromRow)]
struct RecordingRow {
    id: String,
    call_id: String,
    status: String,
    format: String,
    started_at: DateTime<Utc>,
    ended_at: Option<DateTime<Utc>>,
    duration: Option<f64>,
    file_size: Option<i64>,
    tracks: Option<String>,
    reason: Option<String>,
    error: Option<String>,
    node: Option<String>,
    started_by: Option<String>,
    dropped_frames: Option<i64>,
    s3_key: Option<String>,
}

impl TryFrom<RecordingRow> for Recording {
    type Error = StoreError;

    fn try_from(row: RecordingRow) -> Result<Self, StoreError> {
        let corrupt = |what: &str, e: &dyn std::fmt::Display| {
            StoreError::Corrupt(format!("call_recordings {}: {what}: {e}", row.id))
        };
        let tracks = match &row.tracks {
            Some(text) => serde_json::from_str::<Vec<RecordingTrack>>(text)
                .map_err(|e| corrupt("tracks", &e))?,
            None => Vec::new(),
        };
        Ok(Recording {
            id: Uuid::try_parse(&row.id).map_err(|e| corrupt("id", &e))?,
            call_id: row.call_id.parse().map_err(|e| corrupt("call_id", &e))?,
            status: row.status.parse().map_err(|e| corrupt("status", &e))?,
            format: row.format,
            started_at: row.started_at,
            ended_at: row.ended_at,
            duration: row.duration,
            size: row.file_size,
            tracks,
            reason: row.reason,
            error: row.error,
            node: row.node.unwrap_or_default(),
            started_by: UserId(row.started_by.unwrap_or_default()),
            dropped_frames: row.dropped_frames,
            location: row.s3_key,
        })
    }
}

fn recordings(rows: Vec<RecordingRow>) -> Result<Vec<Recording>, StoreError> {
    rows.into_iter().map(Recording::try_from).collect()
}

/// What a completed recording's file turned out to be.
#[derive(Debug, Clone)]
pub struct Finished {
    /// `webm`; for LiveKit Egress, its file's extension (`mp4`, `ogg`).
    pub format: String,
    /// Where LiveKit Egress stored it; `None` for a file on Huddle's disk.
    pub location: Option<String>,
    pub size: i64,
    pub duration: f64,
    pub tracks: Vec<RecordingTrack>,
    pub dropped_frames: i64,
}

/// Which recordings a listing wants.
#[derive(Debug, Clone, Default)]
pub struct RecordingFilter {
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub format: Option<String>,
}

impl Store {
    /// Stores a new recording (status `recording`). `false`, storing nothing, when its
    /// call already has one recording.
    pub async fn insert_recording(&self, r: &Recording) -> Result<bool, StoreError> {
        let path = r.relative_path().to_string_lossy().into_owned();
        let inserted = with_pool!(self, |pool| {
            sqlx::query(INSERT)
                .bind(r.id.to_string())
                .bind(r.call_id.to_string())
                .bind(r.status.as_str())
                .bind(&r.format)
                .bind(r.started_at)
                .bind(&path)
                .bind(&r.node)
                .bind(r.started_by.as_str())
                .execute(pool)
                .await
                .map(drop)
        });
        unless_duplicate(inserted)
    }

    /// Forgets a recording that never started (its plane refused it).
    pub async fn remove_recording(&self, id: Uuid) -> Result<(), StoreError> {
        with_pool!(self, |pool| sqlx::query(
            "DELETE FROM call_recordings WHERE id = $1"
        )
        .bind(id.to_string())
        .execute(pool)
        .await
        .map(drop))?;
        Ok(())
    }

    pub async fn recording(&self, id: Uuid) -> Result<Option<Recording>, StoreError> {
        let query = format!("SELECT {COLUMNS} FROM call_recordings WHERE id = $1");
        let row: Option<RecordingRow> = with_pool!(self, |pool| {
            sqlx::query_as(&query)
                .bind(id.to_string())
                .fetch_optional(pool)
                .await?
        });
        row.map(Recording::try_from).transpose()
    }

    /// A call's recordings, newest first.
    pub async fn recordings_of(&self, call: CallId) -> Result<Vec<Recording>, StoreError> {
        let query = format!(
            "SELECT {COLUMNS} FROM call_recordings WHERE call_id = $1 \
             ORDER BY started_at DESC, id DESC"
        );
        let rows: Vec<RecordingRow> = with_pool!(self, |pool| {
            sqlx::query_as(&query)
                .bind(call.to_string())
                .fetch_all(pool)
                .await?
        });
        recordings(rows)
    }

    /// A page of the recordings `user` may see (all of them for `None`), newest
    /// first, and how many there are in all.
    pub async fn recordings_page(
        &self,
        user: Option<&UserId>,
        filter: &RecordingFilter,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<Recording>, i64), StoreError> {
        let page = format!(
            "SELECT {COLUMNS} {VISIBLE} ORDER BY started_at DESC, id DESC LIMIT $5 OFFSET $6"
        );
        let count = format!("SELECT COUNT(*) {VISIBLE}");
        let user = user.map(UserId::as_str);
        let (rows, total): (Vec<RecordingRow>, i64) = with_pool!(self, |pool| {
            let rows = sqlx::query_as(&page)
                .bind(user)
                .bind(filter.from)
                .bind(filter.to)
                .bind(filter.format.as_deref())
                .bind(limit)
                .bind(offset)
                .fetch_all(pool)
                .await?;
            let total = sqlx::query_scalar(&count)
                .bind(user)
                .bind(filter.from)
                .bind(filter.to)
                .bind(filter.format.as_deref())
                .fetch_one(pool)
                .await?;
            (rows, total)
        });
        Ok((recordings(rows)?, total))
    }

    /// `node`'s recordings in `status`, oldest first: what a restart finishes.
    pub async fn recordings_on_node(
        &self,
        node: &str,
        statuses: &[RecordingStatus],
    ) -> Result<Vec<Recording>, StoreError> {
        let list: Vec<String> = statuses
            .iter()
            .map(|s| format!("'{}'", s.as_str()))
            .collect();
        let query = format!(
            "SELECT {COLUMNS} FROM call_recordings WHERE node = $1 AND status IN ({}) \
             ORDER BY started_at, id",
            list.join(", ")
        );
        let rows: Vec<RecordingRow> = with_pool!(self, |pool| {
            sqlx::query_as(&query).bind(node).fetch_all(pool).await?
        });
        recordings(rows)
    }

    /// `node`'s finished (completed or failed) recordings started before `before`.
    pub async fn expired_recordings(
        &self,
        node: &str,
        before: DateTime<Utc>,
    ) -> Result<Vec<Recording>, StoreError> {
        let query = format!(
            "SELECT {COLUMNS} FROM call_recordings WHERE started_at < $2 AND node = $1 \
             AND status IN ('completed', 'failed') ORDER BY started_at, id"
        );
        let rows: Vec<RecordingRow> = with_pool!(self, |pool| {
            sqlx::query_as(&query)
                .bind(node)
                .bind(before)
                .fetch_all(pool)
                .await?
        });
        recordings(rows)
    }

    /// `recording` → `processing`, stopped for `reason` at `now`. `false` if it was
    /// not recording (someone else stopped it first).
    pub async fn stop_recording(
        &self,
        id: Uuid,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        update!(
            self,
            "UPDATE call_recordings SET status = 'processing', reason = $2, ended_at = $3 \
             WHERE id = $1 AND status = 'recording'",
            id.to_string(),
            reason,
            now
        )
    }

    /// `recording` or `processing` → `completed`, with what the file turned out to
    /// be and where it is downloaded from (`None`: not from Huddle).
    pub async fn complete_recording(
        &self,
        id: Uuid,
        url: Option<&str>,
        f: &Finished,
    ) -> Result<bool, StoreError> {
        let tracks = serde_json::to_string(&f.tracks)
            .map_err(|e| StoreError::Corrupt(format!("recording tracks: {e}")))?;
        update!(
            self,
            "UPDATE call_recordings SET status = 'completed', file_size = $2, duration = $3, \
             tracks = $4, dropped_frames = $5, url = $6, format = $7, s3_key = $8 \
             WHERE id = $1 AND status IN ('recording', 'processing')",
            id.to_string(),
            f.size,
            f.duration,
            tracks,
            f.dropped_frames,
            url,
            &f.format,
            f.location.as_deref()
        )
    }

    /// Recording `id` is made by `node` (another node's SFU, or LiveKit Egress).
    pub async fn set_recording_node(&self, id: Uuid, node: &str) -> Result<bool, StoreError> {
        update!(
            self,
            "UPDATE call_recordings SET node = $2 WHERE id = $1",
            id.to_string(),
            node
        )
    }

    /// `from` → `failed` with `error`; a recording failing while still `recording`
    /// stops now, for reason `failed`.
    pub async fn fail_recording(
        &self,
        id: Uuid,
        from: RecordingStatus,
        error: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        update!(
            self,
            "UPDATE call_recordings SET status = 'failed', error = $2, \
             reason = COALESCE(reason, 'failed'), ended_at = COALESCE(ended_at, $3) \
             WHERE id = $1 AND status = $4",
            id.to_string(),
            error,
            now,
            from.as_str()
        )
    }

    /// A finished (completed or failed) recording → `deleted`: its file is gone.
    pub async fn delete_recording(&self, id: Uuid) -> Result<bool, StoreError> {
        update!(
            self,
            "UPDATE call_recordings SET status = 'deleted', url = NULL \
             WHERE id = $1 AND status IN ('completed', 'failed')",
            id.to_string()
        )
    }
}
