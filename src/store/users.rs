//! Users (`users`), the queues representatives serve (`representative_queues`) and
//! their availability. A user's row is made or refreshed whenever they are seen,
//! written only when something in it changes, so a user's every request costs no
//! write.

use chrono::{DateTime, Utc};

use super::{Pool, Store, StoreError};
use crate::calls::model::{Availability, UserId};
use crate::users::Profile;

/// Makes `$1`'s row (name `$2`, role `$3`, at `$4`) if it is missing.
const INSERT_USER: &str = "INSERT INTO users (user_id, display_name, role, created_at, updated_at) \
     VALUES ($1, $2, $3, $4, $4) ON CONFLICT (user_id) DO NOTHING";

/// Gives representative `$1` the `default` queue if they serve none.
const SERVE_DEFAULT: &str = "INSERT INTO representative_queues (user_id, queue) \
     SELECT $1, name FROM queues WHERE name = 'default' \
         AND NOT EXISTS (SELECT 1 FROM representative_queues WHERE user_id = $1) \
     ON CONFLICT (user_id, queue) DO NOTHING";

#[derive(Debug, sqlx::FromRow)]
struct ProfileRow {
    user_id: String,
    display_name: Option<String>,
    role: String,
    availability: String,
    username: Option<String>,
}

impl Store {
    /// `user` was seen now with token name `name` and role `role`; see
    /// [`crate::users::UserService::seen`].
    pub async fn user_seen(
        &self,
        user: &UserId,
        name: Option<&str>,
        role: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        // Single statements, each writing only when something changes: no
        // transaction that reads before it writes (which SQLite may refuse under
        // concurrent writers rather than wait).
        with_pool!(self, |pool| {
            let promoted = sqlx::query(
                "UPDATE users SET role = $2, updated_at = $3 WHERE user_id = $1 AND role <> $2",
            )
            .bind(user.as_str())
            .bind(role)
            .bind(now)
            .execute(pool)
            .await?
            .rows_affected();
            let made = sqlx::query(INSERT_USER)
                .bind(user.as_str())
                .bind(name)
                .bind(role)
                .bind(now)
                .execute(pool)
                .await?
                .rows_affected();
            if name.is_some() && made == 0 {
                sqlx::query(
                    "UPDATE users SET display_name = $2, updated_at = $3 \
                     WHERE user_id = $1 AND display_name IS NULL",
                )
                .bind(user.as_str())
                .bind(name)
                .bind(now)
                .execute(pool)
                .await?;
            }
            if role == "representative" && promoted + made > 0 {
                sqlx::query(SERVE_DEFAULT)
                    .bind(user.as_str())
                    .execute(pool)
                    .await?;
            }
        });
        Ok(())
    }

    /// `user`'s profile; `None` if they were never seen.
    pub async fn profile(&self, user: &UserId) -> Result<Option<Profile>, StoreError> {
        let (row, queues): (Option<ProfileRow>, Vec<String>) = with_pool!(self, |pool| {
            let row = sqlx::query_as(
                "SELECT u.user_id, u.display_name, u.role, u.availability, a.username \
                 FROM users u LEFT JOIN accounts a ON a.user_id = u.user_id \
                 WHERE u.user_id = $1",
            )
            .bind(user.as_str())
            .fetch_optional(pool)
            .await?;
            let queues = sqlx::query_scalar(
                "SELECT queue FROM representative_queues WHERE user_id = $1 ORDER BY queue",
            )
            .bind(user.as_str())
            .fetch_all(pool)
            .await?;
            (row, queues)
        });
        row.map(|row| {
            Ok(Profile {
                availability: row.availability.parse().map_err(|e| {
                    StoreError::Corrupt(format!("users {}: availability: {e}", row.user_id))
                })?,
                user_id: row.user_id,
                display_name: row.display_name,
                role: row.role,
                queues,
                username: row.username,
            })
        })
        .transpose()
    }

    /// Sets `user`'s display name (`Some`) and the queues they serve (`Some`: exactly
    /// these), all or nothing. `Err(name)`, changing nothing, when no queue is named
    /// `name`.
    pub async fn update_profile(
        &self,
        user: &UserId,
        display_name: Option<&Option<String>>,
        queues: Option<&[String]>,
    ) -> Result<Result<(), String>, StoreError> {
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            if let Some(name) = display_name {
                sqlx::query("UPDATE users SET display_name = $2 WHERE user_id = $1")
                    .bind(user.as_str())
                    .bind(name.as_deref())
                    .execute(&mut *tx)
                    .await?;
            }
            if let Some(queues) = queues {
                sqlx::query("DELETE FROM representative_queues WHERE user_id = $1")
                    .bind(user.as_str())
                    .execute(&mut *tx)
                    .await?;
                for queue in queues {
                    let added = sqlx::query(
                        "INSERT INTO representative_queues (user_id, queue) \
                         SELECT $1, name FROM queues WHERE name = $2",
                    )
                    .bind(user.as_str())
                    .bind(queue)
                    .execute(&mut *tx)
                    .await?;
                    if added.rows_affected() == 0 {
                        // Dropped without a commit: rolled back.
                        return Ok(Err(queue.clone()));
                    }
                }
            }
            tx.commit().await?;
            Ok(Ok(()))
        })
    }

    /// Representative `user` is `status` from `now`; becoming available starts their
    /// idle time, staying available keeps it.
    pub async fn set_availability(
        &self,
        user: &UserId,
        status: Availability,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        with_pool!(self, |pool| {
            sqlx::query(
                "UPDATE users SET \
                 idle_since = CASE WHEN $2 = 'available' AND availability <> 'available' \
                     THEN $3 ELSE idle_since END, \
                 availability = $2, updated_at = $3 WHERE user_id = $1",
            )
            .bind(user.as_str())
            .bind(status.as_str())
            .bind(now)
            .execute(pool)
            .await
            .map(drop)
        })?;
        Ok(())
    }
}
