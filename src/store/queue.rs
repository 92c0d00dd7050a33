//! Support queues (`queues`, `queue_entries`) and the part of `users` that
//! assignment owns: which call a representative is in (`current_call_id`), since
//! when they are idle (`idle_since`), and `busy` after a call they did not answer.
//! The rest of `users` (profile, role, availability) is the user service's.
//!
//! Every step of an entry is a conditional update (`... WHERE status = 'waiting'`),
//! so that of two nodes (or two requests) taking the same step exactly one does.
//! An assignment takes a representative and an entry in one transaction: the
//! representative's row first (`current_call_id IS NULL`), then the entry
//! (`status = 'waiting'`); both must change one row or neither changes. Every
//! transaction that touches both locks the representative's row first, so that
//! PostgreSQL never sees two of them wait for each other.

use chrono::{DateTime, Utc};

use super::{Pool, Store, StoreError, unless_duplicate};
use crate::calls::model::{CallId, UserId};
use crate::queue::model::{EntryStatus, QueueEntry, QueueInfo};

/// The columns of an [`EntryRow`].
const COLUMNS: &str = "id, queue, customer_id, call_type, status, callback, joined_at, \
     representative_id, call_id, assigned_at, answered_at, ended_at, attempts";

/// The next assignment: the longest-idle free representative serving a queue with
/// someone waiting, and the oldest waiting entry of the queues they serve whose
/// customer is not in a live call.
const NEXT: &str = "SELECT u.user_id AS representative, e.id AS entry \
     FROM users u \
     JOIN representative_queues rq ON rq.user_id = u.user_id \
     JOIN queue_entries e ON e.queue = rq.queue AND e.status = 'waiting' \
     WHERE u.role = 'representative' AND u.availability = 'available' \
       AND u.current_call_id IS NULL AND e.customer_id <> u.user_id \
       AND NOT EXISTS (SELECT 1 FROM call_participants p JOIN calls c ON c.id = p.call_id \
           WHERE p.user_id = e.customer_id AND p.connection_state = 'connected' \
             AND c.state <> 'ended') \
     ORDER BY CASE WHEN u.idle_since IS NULL THEN 0 ELSE 1 END, u.idle_since, u.user_id, \
       e.joined_at, e.id \
     LIMIT 1";

#[derive(Debug, sqlx::FromRow)]
struct EntryRow {
    id: String,
    queue: String,
    customer_id: String,
    call_type: String,
    status: String,
    callback: bool,
    joined_at: DateTime<Utc>,
    representative_id: Option<String>,
    call_id: Option<String>,
    assigned_at: Option<DateTime<Utc>>,
    answered_at: Option<DateTime<Utc>>,
    ended_at: Option<DateTime<Utc>>,
    attempts: i32,
}

impl TryFrom<EntryRow> for QueueEntry {
    type Error = StoreError;

    fn try_from(row: EntryRow) -> Result<Self, StoreError> {
        let corrupt = |what: &str, e: &dyn std::fmt::Display| {
            StoreError::Corrupt(format!("queue_entries {}: {what}: {e}", row.id))
        };
        Ok(QueueEntry {
            call_type: row
                .call_type
                .parse()
                .map_err(|e| corrupt("call_type", &e))?,
            status: row.status.parse().map_err(|e| corrupt("status", &e))?,
            call_id: row
                .call_id
                .as_deref()
                .map(str::parse::<CallId>)
                .transpose()
                .map_err(|e| corrupt("call_id", &e))?,
            id: row.id,
            queue: row.queue,
            customer_id: UserId(row.customer_id),
            callback: row.callback,
            joined_at: row.joined_at,
            representative_id: row.representative_id.map(UserId),
            assigned_at: row.assigned_at,
            answered_at: row.answered_at,
            ended_at: row.ended_at,
            attempts: i64::from(row.attempts),
        })
    }
}

/// The entries `$query` (over [`COLUMNS`]) selects with its one parameter.
macro_rules! entries {
    ($store:expr, $query:expr, $arg:expr) => {{
        let rows: Vec<EntryRow> = with_pool!($store, |pool| {
            sqlx::query_as($query).bind($arg).fetch_all(pool).await?
        });
        rows.into_iter().map(QueueEntry::try_from).collect()
    }};
}

/// How an assignment ends, for [`Store::close_assignment`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closing {
    /// Answered: `served`, answered at this time; the representative is idle from now.
    Served(DateTime<Utc>),
    /// The representative declined or let it ring out: they are `busy` (unless
    /// they set themselves `offline` meanwhile), and the customer is back in line
    /// in their place.
    Unanswered,
    /// The customer hung up first: `left`; the representative is idle from now.
    Left,
    /// A callback the customer did not answer: `missed`; idle from now.
    Missed,
    /// The call never started (a crash, a refused start): the customer is back in
    /// line and the representative free, as if nothing had happened.
    Undone,
}

impl Closing {
    fn status(self) -> EntryStatus {
        match self {
            Closing::Served(_) => EntryStatus::Served,
            Closing::Unanswered | Closing::Undone => EntryStatus::Waiting,
            Closing::Left => EntryStatus::Left,
            Closing::Missed => EntryStatus::Missed,
        }
    }
}

/// A representative as the statistics show them.
#[derive(Debug, sqlx::FromRow)]
pub struct Representative {
    pub user_id: String,
    pub display_name: Option<String>,
    pub availability: String,
}

impl Store {
    /// Every queue, by name.
    pub async fn queues(&self) -> Result<Vec<QueueInfo>, StoreError> {
        let rows: Vec<(String, Option<String>, DateTime<Utc>)> = with_pool!(self, |pool| {
            sqlx::query_as("SELECT name, description, created_at FROM queues ORDER BY name")
                .fetch_all(pool)
                .await?
        });
        Ok(rows
            .into_iter()
            .map(|(name, description, created_at)| QueueInfo {
                name,
                description,
                created_at,
            })
            .collect())
    }

    /// Stores a new queue; `false`, storing nothing, if one has that name.
    pub async fn insert_queue(&self, q: &QueueInfo) -> Result<bool, StoreError> {
        let inserted = with_pool!(self, |pool| {
            sqlx::query("INSERT INTO queues (name, description, created_at) VALUES ($1, $2, $3)")
                .bind(&q.name)
                .bind(q.description.as_deref())
                .bind(q.created_at)
                .execute(pool)
                .await
                .map(drop)
        });
        unless_duplicate(inserted)
    }

    /// Stores a new `waiting` entry; `false`, storing nothing, if its customer
    /// already has an open one (whichever node stored it).
    pub async fn insert_entry(&self, e: &QueueEntry) -> Result<bool, StoreError> {
        let inserted = with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO queue_entries (id, queue, customer_id, call_type, status, callback, \
                 joined_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
            )
            .bind(&e.id)
            .bind(&e.queue)
            .bind(e.customer_id.as_str())
            .bind(e.call_type.as_str())
            .bind(e.status.as_str())
            .bind(e.callback)
            .bind(e.joined_at)
            .execute(pool)
            .await
            .map(drop)
        });
        unless_duplicate(inserted)
    }

    /// The entry with this id.
    pub async fn entry(&self, id: &str) -> Result<Option<QueueEntry>, StoreError> {
        self.one_entry(
            &format!("SELECT {COLUMNS} FROM queue_entries WHERE id = $1"),
            id,
        )
        .await
    }

    /// `customer`'s open (`waiting` or `assigned`) entry.
    pub async fn open_entry(&self, customer: &UserId) -> Result<Option<QueueEntry>, StoreError> {
        let query = format!(
            "SELECT {COLUMNS} FROM queue_entries WHERE customer_id = $1 \
             AND status IN ('waiting', 'assigned')"
        );
        self.one_entry(&query, customer.as_str()).await
    }

    /// The `assigned` entry whose call is `call`.
    pub async fn assigned_to_call(&self, call: CallId) -> Result<Option<QueueEntry>, StoreError> {
        let query = format!(
            "SELECT {COLUMNS} FROM queue_entries WHERE call_id = $1 AND status = 'assigned'"
        );
        self.one_entry(&query, &call.to_string()).await
    }

    async fn one_entry(&self, query: &str, arg: &str) -> Result<Option<QueueEntry>, StoreError> {
        let row: Option<EntryRow> = with_pool!(self, |pool| {
            sqlx::query_as(query).bind(arg).fetch_optional(pool).await?
        });
        row.map(QueueEntry::try_from).transpose()
    }

    /// `queue`'s waiting entries, in line order (the first is position 1).
    pub async fn waiting(&self, queue: &str) -> Result<Vec<QueueEntry>, StoreError> {
        let query = format!(
            "SELECT {COLUMNS} FROM queue_entries WHERE queue = $1 AND status = 'waiting' \
             ORDER BY joined_at, id"
        );
        entries!(self, &query, queue)
    }

    /// Entries open now or finished (or assigned) since `since`: what the
    /// statistics are made of.
    pub async fn recent_entries(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Vec<QueueEntry>, StoreError> {
        let query = format!(
            "SELECT {COLUMNS} FROM queue_entries WHERE status IN ('waiting', 'assigned') \
             OR ended_at >= $1 OR assigned_at >= $1 ORDER BY joined_at, id"
        );
        entries!(self, &query, since)
    }

    /// Entry `id`, waiting, goes from `from` to `to` (`waiting` → `left`: it leaves;
    /// `waiting` → `waiting` with `callback`: it asks for a callback). `false` if it
    /// was not waiting.
    pub async fn update_waiting(
        &self,
        id: &str,
        to: EntryStatus,
        callback: bool,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let ended = (to != EntryStatus::Waiting).then_some(now);
        let affected = with_pool!(self, |pool| {
            sqlx::query(
                "UPDATE queue_entries SET status = $2, callback = $3, ended_at = $4, \
                 updated_at = $5 WHERE id = $1 AND status = 'waiting'",
            )
            .bind(id)
            .bind(to.as_str())
            .bind(callback)
            .bind(ended)
            .bind(now)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(affected > 0)
    }

    /// Stores that entry `id`'s customer was told `position` and `wait`, unless
    /// that is what they were told last or it is no longer waiting: `true` if the
    /// notice is to be sent (so that of several nodes one sends it).
    pub async fn set_notified(
        &self,
        id: &str,
        position: i64,
        wait: i64,
    ) -> Result<bool, StoreError> {
        let (position, wait) = (clamp(position), clamp(wait));
        let affected = with_pool!(self, |pool| {
            sqlx::query(
                "UPDATE queue_entries SET notified_position = $2, notified_wait = $3 \
                 WHERE id = $1 AND status = 'waiting' AND (notified_position IS NULL \
                 OR notified_wait IS NULL OR notified_position <> $2 OR notified_wait <> $3)",
            )
            .bind(id)
            .bind(position)
            .bind(wait)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(affected > 0)
    }

    /// Handling times (answered, ended) of `queue`'s last `limit` served entries.
    pub async fn handling_times(
        &self,
        queue: &str,
        limit: i64,
    ) -> Result<Vec<(DateTime<Utc>, DateTime<Utc>)>, StoreError> {
        Ok(with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT answered_at, ended_at FROM queue_entries WHERE queue = $1 \
                 AND status = 'served' AND answered_at IS NOT NULL AND ended_at IS NOT NULL \
                 ORDER BY ended_at DESC LIMIT $2",
            )
            .bind(queue)
            .bind(limit)
            .fetch_all(pool)
            .await?
        }))
    }

    /// Representatives serving `queue` whose availability is `available`.
    pub async fn on_duty(&self, queue: &str) -> Result<i64, StoreError> {
        Ok(with_pool!(self, |pool| {
            sqlx::query_scalar(
                "SELECT COUNT(*) FROM users u JOIN representative_queues rq \
                 ON rq.user_id = u.user_id WHERE rq.queue = $1 \
                 AND u.role = 'representative' AND u.availability = 'available'",
            )
            .bind(queue)
            .fetch_one(pool)
            .await?
        }))
    }

    /// The next (representative, entry id) to assign, if any: see [`NEXT`].
    pub async fn next_assignment(&self) -> Result<Option<(UserId, String)>, StoreError> {
        let row: Option<(String, String)> = with_pool!(self, |pool| {
            sqlx::query_as(NEXT).fetch_optional(pool).await?
        });
        Ok(row.map(|(rep, entry)| (UserId(rep), entry)))
    }

    /// Gives entry `entry` to `rep` with call `call`, in one transaction: the
    /// representative must still be free and the entry still waiting, or nothing
    /// changes and this returns `false`.
    pub async fn claim(
        &self,
        rep: &UserId,
        entry: &str,
        call: CallId,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let call = call.to_string();
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let taken = sqlx::query(
                "UPDATE users SET current_call_id = $2, updated_at = $3 WHERE user_id = $1 \
                 AND role = 'representative' AND availability = 'available' \
                 AND current_call_id IS NULL",
            )
            .bind(rep.as_str())
            .bind(&call)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if taken != 1 {
                tx.rollback().await?;
                return Ok(false);
            }
            let given = sqlx::query(
                "UPDATE queue_entries SET status = 'assigned', representative_id = $2, \
                 call_id = $3, assigned_at = $4, attempts = attempts + 1, updated_at = $4 \
                 WHERE id = $1 AND status = 'waiting'",
            )
            .bind(entry)
            .bind(rep.as_str())
            .bind(&call)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            Ok(commit_if_one(tx, given).await?)
        })
    }

    /// Ends entry `entry`'s assignment to call `call` as `closing` says, and frees
    /// its representative (if they are still in that call), in one transaction.
    /// `false`, changing nothing, if the entry is no longer assigned to that call
    /// (another node closed it first).
    pub async fn close_assignment(
        &self,
        entry: &QueueEntry,
        call: CallId,
        closing: Closing,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let call = call.to_string();
        let rep = entry.representative_id.as_ref().map(UserId::as_str);
        let (availability, idle_since) = match closing {
            Closing::Unanswered => (Some("busy"), None),
            Closing::Undone => (None, None),
            Closing::Served(_) | Closing::Left | Closing::Missed => (None, Some(now)),
        };
        let answered = match closing {
            Closing::Served(at) => Some(at),
            _ => None,
        };
        let back_in_line = closing.status() == EntryStatus::Waiting;
        let ended = (!back_in_line).then_some(now);
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "UPDATE users SET current_call_id = NULL, \
                 availability = CASE WHEN availability = 'available' \
                     THEN COALESCE($3, availability) ELSE availability END, \
                 idle_since = COALESCE($4, idle_since), updated_at = $5 \
                 WHERE user_id = $1 AND current_call_id = $2",
            )
            .bind(rep)
            .bind(&call)
            .bind(availability)
            .bind(idle_since)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            // Back in line: the same `joined_at`, so the same place; what the
            // customer was told is forgotten, so that they hear their place again.
            let closed = sqlx::query(
                "UPDATE queue_entries SET status = $3, answered_at = $4, ended_at = $5, \
                 call_id = CASE WHEN $6 THEN NULL ELSE call_id END, \
                 representative_id = CASE WHEN $6 THEN NULL ELSE representative_id END, \
                 assigned_at = CASE WHEN $6 THEN NULL ELSE assigned_at END, \
                 notified_position = NULL, notified_wait = NULL, updated_at = $7 \
                 WHERE id = $1 AND call_id = $2 AND status = 'assigned'",
            )
            .bind(&entry.id)
            .bind(&call)
            .bind(closing.status().as_str())
            .bind(answered)
            .bind(ended)
            .bind(back_in_line)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            Ok(commit_if_one(tx, closed).await?)
        })
    }

    /// `assigned` entries, assigned at or before `before`, whose call is missing
    /// (never started: a crash between the claim and the start) or has ended
    /// without its end being applied.
    pub async fn stranded(&self, before: DateTime<Utc>) -> Result<Vec<QueueEntry>, StoreError> {
        let query = format!(
            "SELECT {COLUMNS} FROM queue_entries e WHERE e.status = 'assigned' \
             AND e.assigned_at <= $1 AND NOT EXISTS (SELECT 1 FROM calls c \
             WHERE c.id = e.call_id AND c.state <> 'ended') ORDER BY e.assigned_at, e.id"
        );
        entries!(self, &query, before)
    }

    /// `assigned` entries whose call has ended, its end not applied yet (it is on
    /// its way from the node that ended it): the dispatcher closes them before it
    /// assigns anyone, so a customer put back in line is never passed over.
    pub async fn ended_assignments(&self) -> Result<Vec<QueueEntry>, StoreError> {
        let query = format!(
            "SELECT {COLUMNS} FROM queue_entries e WHERE e.status = $1 \
             AND EXISTS (SELECT 1 FROM calls c WHERE c.id = e.call_id AND c.state = 'ended') \
             ORDER BY e.assigned_at, e.id"
        );
        entries!(self, &query, "assigned")
    }

    /// `customer` has no socket left since `now` (`None`: they are back): kept with
    /// their open entry, for abandonment.
    pub async fn set_away(
        &self,
        customer: &UserId,
        since: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError> {
        with_pool!(self, |pool| {
            sqlx::query(
                "UPDATE queue_entries SET away_since = $2 WHERE customer_id = $1 \
                 AND status IN ('waiting', 'assigned') \
                 AND (CAST($2 AS TEXT) IS NULL OR away_since IS NULL)",
            )
            .bind(customer.as_str())
            .bind(since)
            .execute(pool)
            .await
            .map(drop)
        })?;
        Ok(())
    }

    /// Every open entry's customer is away from `now` unless already away: a
    /// process that starts has nobody connected.
    pub async fn all_away(&self, now: DateTime<Utc>) -> Result<(), StoreError> {
        with_pool!(self, |pool| {
            sqlx::query(
                "UPDATE queue_entries SET away_since = $1 \
                 WHERE status IN ('waiting', 'assigned') AND away_since IS NULL",
            )
            .bind(now)
            .execute(pool)
            .await
            .map(drop)
        })?;
        Ok(())
    }

    /// Waiting entries (not callbacks) whose customer has been away since `cutoff`
    /// or before become `abandoned`. Returns their queues.
    pub async fn abandon(
        &self,
        cutoff: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Vec<String>, StoreError> {
        Ok(with_pool!(self, |pool| {
            sqlx::query_scalar(
                "UPDATE queue_entries SET status = 'abandoned', ended_at = $2, updated_at = $2 \
                 WHERE status = 'waiting' AND NOT callback AND away_since IS NOT NULL \
                 AND away_since <= $1 RETURNING queue",
            )
            .bind(cutoff)
            .bind(now)
            .fetch_all(pool)
            .await?
        }))
    }

    /// Users whose role is `representative` or `admin`: who hears `queue:update`.
    pub async fn staff(&self) -> Result<Vec<String>, StoreError> {
        Ok(with_pool!(self, |pool| {
            sqlx::query_scalar(
                "SELECT user_id FROM users WHERE role IN ('representative', 'admin') \
                 ORDER BY user_id",
            )
            .fetch_all(pool)
            .await?
        }))
    }

    /// `user`'s display name, if Huddle has seen them with one.
    pub async fn display_name(&self, user: &UserId) -> Result<Option<String>, StoreError> {
        let name: Option<Option<String>> = with_pool!(self, |pool| {
            sqlx::query_scalar("SELECT display_name FROM users WHERE user_id = $1")
                .bind(user.as_str())
                .fetch_optional(pool)
                .await?
        });
        Ok(name.flatten())
    }

    /// Representatives (serving `queue`, or any for `None`), by id.
    pub async fn representatives(
        &self,
        queue: Option<&str>,
    ) -> Result<Vec<Representative>, StoreError> {
        Ok(with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT user_id, display_name, availability FROM users \
                 WHERE role = 'representative' AND (CAST($1 AS TEXT) IS NULL OR user_id IN \
                 (SELECT user_id FROM representative_queues WHERE queue = $1)) ORDER BY user_id",
            )
            .bind(queue)
            .fetch_all(pool)
            .await?
        }))
    }

    /// Each representative's mean rating from the customers of their queue calls
    /// served since `since`.
    pub async fn representative_ratings(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Vec<(String, f64)>, StoreError> {
        Ok(with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT e.representative_id, AVG(CAST(f.rating AS DOUBLE PRECISION)) \
                 FROM queue_entries e JOIN call_feedback f \
                 ON f.call_id = e.call_id AND f.user_id = e.customer_id \
                 WHERE e.status = 'served' AND e.ended_at >= $1 \
                 AND e.representative_id IS NOT NULL GROUP BY e.representative_id",
            )
            .bind(since)
            .fetch_all(pool)
            .await?
        }))
    }
}

/// Commits `tx` if the update that decides it changed exactly one row (`true`),
/// else rolls it back.
async fn commit_if_one<DB: sqlx::Database>(
    tx: sqlx::Transaction<'_, DB>,
    changed: u64,
) -> Result<bool, sqlx::Error> {
    if changed == 1 {
        tx.commit().await?;
        Ok(true)
    } else {
        tx.rollback().await?;
        Ok(false)
    }
}

/// An `INTEGER` column's value.
fn clamp(n: i64) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}
