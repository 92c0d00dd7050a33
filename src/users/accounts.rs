//! Accounts (AUTH_ACCOUNTS), for deployments without an identity service of their
//! own: a username and an Argon2id password hash per user, and sessions of a Huddle
//! access token (a JWT like any backend mints, ACCESS_TOKEN_TTL) and a refresh token.
//!
//! Refresh tokens rotate: each is 32 random bytes, stored only as its SHA-256 hash,
//! and good for one refresh, which issues the next of its family. Presenting one
//! that was used (or revoked) again means it was copied: the whole family is revoked,
//! so the thief's copy and the owner's newest token both stop working.
//!
//! Logins are limited per username (lower case, so `Alice` and `alice` share one
//! count), known or not: [`MAX_FAILURES`] wrong passwords within [`LOCK_WINDOW`] lock
//! the name for [`LOCK_TIME`] (429 `TOO_MANY_ATTEMPTS`), the right password included.
//! An unknown username and a wrong password answer the same 401, after the same work
//! (a password checked against a hash of nobody's).

use std::sync::Arc;

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use axum::http::StatusCode;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use utoipa::ToSchema;
use uuid::Uuid;

use super::Profile;
use crate::auth::{Claims, JwtKey, check_name};
use crate::calls::model::UserId;
use crate::clock::Clock;
use crate::store::Store;
use crate::wire::Failure;

/// Wrong passwords for one username that lock it.
pub const MAX_FAILURES: i64 = 5;
/// How far back wrong passwords count.
pub const LOCK_WINDOW: Duration = Duration::minutes(15);
/// How long a locked username stays locked.
pub const LOCK_TIME: Duration = Duration::minutes(15);

/// What the account settings say.
#[derive(Debug, Clone)]
pub struct AccountSettings {
    /// AUTH_ACCOUNTS: without it every account route answers 404 `ACCOUNTS_DISABLED`.
    pub enabled: bool,
    /// ACCESS_TOKEN_TTL.
    pub access_ttl: Duration,
    /// REFRESH_TOKEN_TTL_DAYS.
    pub refresh_ttl: Duration,
}

/// A refresh token as stored: by its hash.
#[derive(Debug, Clone, PartialEq)]
pub struct RefreshToken {
    /// SHA-256 of the token, hex.
    pub hash: String,
    pub user: UserId,
    /// The tokens that followed each other from one login or registration.
    pub family: String,
    pub expires_at: DateTime<Utc>,
    /// Used up or revoked.
    pub spent: bool,
}

/// What a registration, a login or a refresh gives.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Session {
    pub user: Profile,
    /// A Huddle JWT (`Authorization: Bearer`), valid for `expiresIn` seconds.
    pub access_token: String,
    /// For `POST /api/v1/auth/refresh`, once.
    pub refresh_token: String,
    pub expires_in: i64,
}

/// Registers, logs in and refreshes sessions.
#[derive(Debug)]
pub struct Accounts {
    store: Store,
    clock: Arc<dyn Clock>,
    jwt: Arc<JwtKey>,
    settings: AccountSettings,
    /// A hash of nobody's password, checked against for unknown usernames so that
    /// they take as long as a wrong password. Empty when accounts are off.
    nobody: String,
    /// One Argon2id computation per core at a time: each takes 19 MiB and tens of
    /// milliseconds on purpose, so a flood of logins queues here instead of taking
    /// the memory and every blocking thread.
    hashing: Semaphore,
}

fn invalid_credentials() -> Failure {
    Failure::new(
        StatusCode::UNAUTHORIZED,
        "INVALID_CREDENTIALS",
        "wrong username or password",
    )
}

fn refresh_refused(code: &'static str, message: &str) -> Failure {
    Failure::new(StatusCode::UNAUTHORIZED, code, message)
}

/// `username` as stored: 3 to 64 of `A-Z a-z 0-9 . _ @ -`, in lower case.
pub fn username(raw: &str) -> Result<String, Failure> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-');
    if !(3..=64).contains(&raw.len()) || !raw.chars().all(allowed) {
        return Err(Failure::invalid(
            "username",
            "must be 3 to 64 of the letters A-Z, digits and . _ @ -",
        ));
    }
    Ok(raw.to_ascii_lowercase())
}

/// A new password: 8 to 256 characters.
pub fn password(raw: &str) -> Result<(), Failure> {
    if !(8..=256).contains(&raw.chars().count()) {
        return Err(Failure::invalid("password", "must be 8 to 256 characters"));
    }
    Ok(())
}

fn hash(argon2: &Argon2, password: &[u8]) -> Result<String, Failure> {
    argon2
        .hash_password(password)
        .map(|h| h.to_string())
        .map_err(|e| Failure::internal(&e))
}

/// SHA-256 of a refresh token, hex: what is stored.
fn token_hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Accounts {
    pub fn new(
        store: Store,
        clock: Arc<dyn Clock>,
        jwt: Arc<JwtKey>,
        settings: AccountSettings,
    ) -> Result<Self, Failure> {
        let nobody = if settings.enabled {
            hash(&Argon2::default(), Uuid::new_v4().as_bytes())?
        } else {
            String::new()
        };
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Ok(Self {
            store,
            clock,
            jwt,
            settings,
            nobody,
            hashing: Semaphore::new(cores),
        })
    }

    /// Runs Argon2id work off the async threads, one per core at a time.
    async fn argon2<T: Send + 'static>(
        &self,
        work: impl FnOnce(Argon2<'static>) -> T + Send + 'static,
    ) -> Result<T, Failure> {
        let _turn = self
            .hashing
            .acquire()
            .await
            .map_err(|e| Failure::internal(&e))?;
        tokio::task::spawn_blocking(move || work(Argon2::default()))
            .await
            .map_err(|e| Failure::internal(&e))
    }

    /// 404 `ACCOUNTS_DISABLED` unless AUTH_ACCOUNTS is on.
    pub fn check_enabled(&self) -> Result<(), Failure> {
        if self.settings.enabled {
            Ok(())
        } else {
            Err(Failure::new(
                StatusCode::NOT_FOUND,
                "ACCOUNTS_DISABLED",
                "accounts are off on this server (AUTH_ACCOUNTS)",
            ))
        }
    }

    /// A new customer with an account, logged in.
    pub async fn register(
        &self,
        raw_username: &str,
        new_password: String,
        display_name: Option<String>,
    ) -> Result<Session, Failure> {
        let username = username(raw_username)?;
        password(&new_password)?;
        let display_name = match display_name {
            Some(name) => {
                check_name(&name).map_err(|rule| Failure::invalid("displayName", rule))?;
                Some(name).filter(|n| !n.trim().is_empty())
            }
            None => None,
        };
        let hashed = self
            .argon2(move |a| hash(&a, new_password.as_bytes()))
            .await??;
        let user = UserId(format!("u_{}", Uuid::new_v4().simple()));
        let name = display_name.as_deref().unwrap_or(&username);
        let now = self.clock.now();
        if !self
            .store
            .insert_account(&user, &username, Some(name), &hashed, now)
            .await?
        {
            return Err(Failure::new(
                StatusCode::CONFLICT,
                "USERNAME_TAKEN",
                "this username is taken",
            ));
        }
        self.session(&user, &Uuid::new_v4().to_string()).await
    }

    /// Logs `raw_username` in with `given` password.
    pub async fn login(&self, raw_username: &str, given: String) -> Result<Session, Failure> {
        // Whatever case was typed, it is the lower-case name that is counted and
        // locked. A name no account could have needs no lookup.
        let Ok(username) = username(raw_username) else {
            return Err(invalid_credentials());
        };
        let now = self.clock.now();
        let locked = self.store.login_locked_until(&username).await?;
        if let Some(until) = locked.filter(|until| *until > now) {
            let secs = (until - now)
                .num_milliseconds()
                .unsigned_abs()
                .div_ceil(1000)
                .max(1);
            return Err(Failure {
                retry_after: Some(secs),
                ..Failure::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "TOO_MANY_ATTEMPTS",
                    format!("too many wrong passwords: try again in {secs} s"),
                )
            });
        }
        let account = self.store.account(&username).await?;
        let (user, stored) = match account {
            Some((user, stored)) => (Some(user), stored),
            None => (None, self.nobody.clone()),
        };
        let right = self
            .argon2(move |a| a.verify_password(given.as_bytes(), stored.as_str()).is_ok())
            .await?;
        match user {
            Some(user) if right => {
                self.store.login_succeeded(&username).await?;
                self.session(&user, &Uuid::new_v4().to_string()).await
            }
            _ => {
                self.store
                    .login_failed(
                        &username,
                        now,
                        now - LOCK_WINDOW,
                        MAX_FAILURES,
                        now + LOCK_TIME,
                    )
                    .await?;
                Err(invalid_credentials())
            }
        }
    }

    /// A new session for the holder of refresh token `token`, which is used up. A
    /// token used (or revoked) already revokes its whole family.
    pub async fn refresh(&self, token: &str) -> Result<Session, Failure> {
        let now = self.clock.now();
        let Some(stored) = self.store.refresh_token(&token_hash(token)).await? else {
            return Err(refresh_refused(
                "INVALID_REFRESH_TOKEN",
                "no such refresh token",
            ));
        };
        if stored.spent {
            return Err(self.reused(&stored, now).await);
        }
        if stored.expires_at <= now {
            return Err(refresh_refused(
                "REFRESH_TOKEN_EXPIRED",
                "this refresh token has expired: log in again",
            ));
        }
        let (next, secret) = self.new_token(&stored.user, &stored.family, now)?;
        if !self
            .store
            .rotate_refresh_token(&stored.hash, &next, now)
            .await?
        {
            // Another refresh used it a moment ago: this one is the copy.
            return Err(self.reused(&stored, now).await);
        }
        self.access(&stored.user, secret).await
    }

    /// Revokes `token`'s family: it was presented again after its use.
    async fn reused(&self, token: &RefreshToken, now: DateTime<Utc>) -> Failure {
        tracing::warn!(user = %token.user, family = %token.family, "a used refresh token was presented again: its family is revoked");
        if let Err(e) = self.store.revoke_token_family(&token.family, now).await {
            return Failure::internal(&e);
        }
        refresh_refused(
            "REFRESH_TOKEN_REUSED",
            "this refresh token was used already: every session it led to is revoked",
        )
    }

    /// A refresh token for `user` in `family`: as stored, and the secret itself.
    fn new_token(
        &self,
        user: &UserId,
        family: &str,
        now: DateTime<Utc>,
    ) -> Result<(RefreshToken, String), Failure> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| Failure::internal(&e))?;
        let secret = URL_SAFE_NO_PAD.encode(bytes);
        let token = RefreshToken {
            hash: token_hash(&secret),
            user: user.clone(),
            family: family.to_owned(),
            expires_at: now + self.settings.refresh_ttl,
            spent: false,
        };
        Ok((token, secret))
    }

    /// A new session for `user`: the first refresh token of a new `family`.
    async fn session(&self, user: &UserId, family: &str) -> Result<Session, Failure> {
        let now = self.clock.now();
        let (token, secret) = self.new_token(user, family, now)?;
        self.store.insert_refresh_token(&token, now).await?;
        self.access(user, secret).await
    }

    /// `user`'s profile and a fresh access token, with `refresh_token`.
    async fn access(&self, user: &UserId, refresh_token: String) -> Result<Session, Failure> {
        let profile = self
            .store
            .profile(user)
            .await?
            .ok_or_else(|| Failure::internal(&format!("account {user} has no user row")))?;
        let now = self.clock.now().timestamp();
        let expires_in = self.settings.access_ttl.num_seconds();
        let access_token = self.jwt.sign(&Claims {
            sub: user.0.clone(),
            exp: now + expires_in,
            iat: Some(now),
            nbf: None,
            name: profile.display_name.clone(),
            role: Some(profile.role.clone()),
        });
        Ok(Session {
            user: profile,
            access_token,
            refresh_token,
            expires_in,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_kept_in_lower_case_and_checked() {
        assert_eq!(
            username("Alice.B@example-1_x").unwrap(),
            "alice.b@example-1_x"
        );
        for bad in ["al", "al ice", "ålice", "alice!", &"x".repeat(65), ""] {
            assert_eq!(
                username(bad).unwrap_err().field.as_deref(),
                Some("username"),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn passwords_are_8_to_256_characters() {
        assert!(password("12345678").is_ok());
        assert!(password(&"é".repeat(256)).is_ok(), "characters, not bytes");
        assert!(password("1234567").is_err());
        assert!(password(&"p".repeat(257)).is_err());
    }

    #[test]
    fn refresh_tokens_are_stored_as_their_sha_256_in_hex() {
        // FIPS 180-2's example: SHA-256("abc").
        assert_eq!(
            token_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn a_password_hash_is_an_argon2id_phc_string_that_verifies_only_its_password() {
        let argon2 = Argon2::default();
        let stored = hash(&argon2, b"correct horse").unwrap();
        assert!(stored.starts_with("$argon2id$v=19$"), "{stored}");
        assert!(
            argon2
                .verify_password(b"correct horse", stored.as_str())
                .is_ok()
        );
        assert!(
            argon2
                .verify_password(b"wrong horse", stored.as_str())
                .is_err()
        );
    }
}
