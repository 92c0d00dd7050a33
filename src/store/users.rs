//! Users (`users`), the queues representatives serve (`representative_queues`) and
//! their availability. A user's row is upserted whenever they are seen, written only
//! when something in it changes, so a user's every request costs no write.

use chrono::{DateTime, Utc};

use super::{Pool, Store, StoreError};
use crate::calls::model::{Availability, UserId};
use crate::users::Profile;

/// Makes `$1`'s row (name `$2`, role `$3`, at `$4`), or refreshes its role and, when
/// it has none, its name.
const SEEN: &str = "INSERT INTO users (user_id, display_name, role, created_at, updated_at) \
     VALUES ($1, $2, $3, $4, $4) \
     ON CONFLICT (user_id) DO UPDATE SET role = excluded.role, \
         display_name = COALESCE(users.display_name, excluded.display_name), \
         updated_at = excluded.updated_at \
     WHERE users.role <> excluded.role \
        OR (users.display_name IS NULL AND excluded.display_name IS NOT NULL)";

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
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let before: Option<String> =
                sqlx::query_scalar("SELECT role FROM users WHERE user_id = $1")
                    .bind(user.as_str())
                    .fetch_optional(&mut *tx)
                    .await?;
            sqlx::query(SEEN)
                .bind(user.as_str())
                .bind(name)
                .bind(role)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            if role == "representative" && before.as_deref() != Some(role) {
                sqlx::query(SERVE_DEFAULT)
                    .bind(user.as_str())
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await
        })?;
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
