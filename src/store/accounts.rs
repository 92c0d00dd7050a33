//! Accounts (`accounts`), the login lockout (`login_failures`) and refresh tokens
//! (`refresh_tokens`, by SHA-256 hash). A refresh token is used up by a conditional
//! update, so of two refreshes with one token exactly one succeeds.

use chrono::{DateTime, Utc};

use super::{Pool, Store, StoreError};
use crate::calls::model::UserId;
use crate::users::accounts::RefreshToken;

/// Inserts refresh token `$token`, made at `$now`, through `$executor` (a pool or a
/// transaction).
macro_rules! insert_token {
    ($executor:expr, $token:expr, $now:expr) => {
        sqlx::query(
            "INSERT INTO refresh_tokens (token_hash, user_id, family_id, created_at, \
             expires_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind($token.hash.as_str())
        .bind($token.user.as_str())
        .bind($token.family.as_str())
        .bind($now)
        .bind($token.expires_at)
        .execute($executor)
        .await
        .map(drop)
    };
}

#[derive(Debug, sqlx::FromRow)]
struct TokenRow {
    token_hash: String,
    user_id: String,
    family_id: String,
    expires_at: DateTime<Utc>,
    used_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
}

impl From<TokenRow> for RefreshToken {
    fn from(row: TokenRow) -> Self {
        RefreshToken {
            hash: row.token_hash,
            user: UserId(row.user_id),
            family: row.family_id,
            expires_at: row.expires_at,
            spent: row.used_at.is_some() || row.revoked_at.is_some(),
        }
    }
}

impl Store {
    /// A new customer `user` with an account: their user row and the account, in one
    /// transaction. `false`, storing nothing, when `username` is taken.
    pub async fn insert_account(
        &self,
        user: &UserId,
        username: &str,
        display_name: Option<&str>,
        password_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let inserted = with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "INSERT INTO users (user_id, display_name, role, created_at, updated_at) \
                 VALUES ($1, $2, 'customer', $3, $3)",
            )
            .bind(user.as_str())
            .bind(display_name)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            let account = sqlx::query(
                "INSERT INTO accounts (user_id, username, password_hash, created_at) \
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(user.as_str())
            .bind(username)
            .bind(password_hash)
            .bind(now)
            .execute(&mut *tx)
            .await;
            match account {
                Ok(_) => tx.commit().await,
                Err(e) => Err(e),
            }
        });
        match inserted {
            Ok(()) => Ok(true),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// The user id and password hash of `username`'s account.
    pub async fn account(&self, username: &str) -> Result<Option<(UserId, String)>, StoreError> {
        let row: Option<(String, String)> = with_pool!(self, |pool| {
            sqlx::query_as("SELECT user_id, password_hash FROM accounts WHERE username = $1")
                .bind(username)
                .fetch_optional(pool)
                .await?
        });
        Ok(row.map(|(user, hash)| (UserId(user), hash)))
    }

    /// Until when logins as `username` are refused, if they ever were.
    pub async fn login_locked_until(
        &self,
        username: &str,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        let locked: Option<Option<DateTime<Utc>>> = with_pool!(self, |pool| {
            sqlx::query_scalar("SELECT locked_until FROM login_failures WHERE username = $1")
                .bind(username)
                .fetch_optional(pool)
                .await?
        });
        Ok(locked.flatten())
    }

    /// A wrong password for `username` at `now`: counted with the others since
    /// `window_start`; the `max`-th locks the name until `lock_until`. Rows whose
    /// window and lock have passed are forgotten.
    pub async fn login_failed(
        &self,
        username: &str,
        now: DateTime<Utc>,
        window_start: DateTime<Utc>,
        max: i64,
        lock_until: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "DELETE FROM login_failures WHERE since <= $1 \
                 AND (locked_until IS NULL OR locked_until <= $2)",
            )
            .bind(window_start)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            let failures: i64 = sqlx::query_scalar(
                "INSERT INTO login_failures (username, failures, since) VALUES ($1, 1, $2) \
                 ON CONFLICT (username) DO UPDATE SET failures = login_failures.failures + 1 \
                 RETURNING CAST(failures AS BIGINT)",
            )
            .bind(username)
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
            if failures >= max {
                sqlx::query("UPDATE login_failures SET locked_until = $2 WHERE username = $1")
                    .bind(username)
                    .bind(lock_until)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await
        })?;
        Ok(())
    }

    /// A right password for `username`: its wrong ones are forgotten.
    pub async fn login_succeeded(&self, username: &str) -> Result<(), StoreError> {
        with_pool!(self, |pool| sqlx::query(
            "DELETE FROM login_failures WHERE username = $1"
        )
        .bind(username)
        .execute(pool)
        .await
        .map(drop))?;
        Ok(())
    }

    /// Stores a new refresh token (its hash) of `family`, made at `now`.
    pub async fn insert_refresh_token(
        &self,
        token: &RefreshToken,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        with_pool!(self, |pool| insert_token!(pool, token, now))?;
        Ok(())
    }

    /// The refresh token whose hash is `hash`.
    pub async fn refresh_token(&self, hash: &str) -> Result<Option<RefreshToken>, StoreError> {
        let row: Option<TokenRow> = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT token_hash, user_id, family_id, expires_at, used_at, revoked_at \
                 FROM refresh_tokens WHERE token_hash = $1",
            )
            .bind(hash)
            .fetch_optional(pool)
            .await?
        });
        Ok(row.map(RefreshToken::from))
    }

    /// Uses up the token whose hash is `used` and stores `next` in its place, in one
    /// transaction. `false`, changing nothing, when it was used, revoked or expired
    /// already (another refresh got there first).
    pub async fn rotate_refresh_token(
        &self,
        used: &str,
        next: &RefreshToken,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let spent = sqlx::query(
                "UPDATE refresh_tokens SET used_at = $2 WHERE token_hash = $1 \
                 AND used_at IS NULL AND revoked_at IS NULL AND expires_at > $2",
            )
            .bind(used)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            if spent.rows_affected() == 0 {
                return Ok(false);
            }
            insert_token!(&mut *tx, next, now)?;
            tx.commit().await?;
            Ok(true)
        })
    }

    /// Revokes every token of `family` not revoked yet.
    pub async fn revoke_token_family(
        &self,
        family: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        with_pool!(self, |pool| sqlx::query(
            "UPDATE refresh_tokens SET revoked_at = $2 \
             WHERE family_id = $1 AND revoked_at IS NULL"
        )
        .bind(family)
        .bind(now)
        .execute(pool)
        .await
        .map(drop))?;
        Ok(())
    }
}
