//! TURN REST credentials, the scheme coturn calls `use-auth-secret`: the username is
//! `<expiry-unix-time>:<userId>` and the password `base64(HMAC-SHA1(secret, username))`.
//! Whoever knows the secret (Huddle, coturn, the embedded server) can check a pair
//! without storing anything.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::hmac;

/// A username and password for a TURN server, valid until `expires_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
    /// Unix time (seconds) after which servers refuse the pair.
    pub expires_at: u64,
}

/// The shared secret behind every credential.
#[derive(Clone)]
pub struct Secret(hmac::Key);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    pub fn new(secret: &str) -> Self {
        Secret(hmac::Key::new(
            hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            secret.as_bytes(),
        ))
    }

    /// Credentials for `user` that expire at `expires_at` (Unix seconds).
    pub fn mint(&self, user: &str, expires_at: u64) -> Credentials {
        let username = format!("{expires_at}:{user}");
        Credentials {
            password: self.password(&username),
            username,
            expires_at,
        }
    }

    /// The password that goes with `username`.
    pub fn password(&self, username: &str) -> String {
        STANDARD.encode(hmac::sign(&self.0, username.as_bytes()))
    }
}

/// Why a TURN REST username is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsernameError {
    #[error("the username does not start with an expiry time")]
    Malformed,
    #[error("the credentials expired")]
    Expired,
}

/// The parts of a TURN REST username, `<expiry>[:<user>]`, if it has not expired at
/// `now` (Unix seconds). As in coturn, the user part may be absent.
pub fn parse_username(username: &str, now: u64) -> Result<(u64, &str), UsernameError> {
    let (expiry, user) = username.split_once(':').unwrap_or((username, ""));
    let expiry: u64 = expiry.parse().map_err(|_| UsernameError::Malformed)?;
    if expiry <= now {
        return Err(UsernameError::Expired);
    }
    Ok((expiry, user))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_match_coturns_formula() {
        // printf '%s' '1700000000:alice' | openssl dgst -sha1 -hmac north-wind-secret -binary | base64
        let secret = Secret::new("north-wind-secret");
        let credentials = secret.mint("alice", 1_700_000_000);
        assert_eq!(credentials.username, "1700000000:alice");
        assert_eq!(credentials.password, "r/l6ttQtMIfbS2lfULS0mDRRNUg=");
        assert_ne!(
            Secret::new("another-secret").password(&credentials.username),
            credentials.password
        );
    }

    #[test]
    fn usernames_carry_an_expiry_and_a_user() {
        assert_eq!(parse_username("200:alice", 100), Ok((200, "alice")));
        assert_eq!(parse_username("200:a:b", 100), Ok((200, "a:b")));
        assert_eq!(parse_username("200", 100), Ok((200, "")));
        assert_eq!(
            parse_username("100:alice", 100),
            Err(UsernameError::Expired)
        );
        assert_eq!(parse_username("alice", 100), Err(UsernameError::Malformed));
        assert_eq!(parse_username(":alice", 100), Err(UsernameError::Malformed));
        assert_eq!(
            parse_username("-5:alice", 100),
            Err(UsernameError::Malformed)
        );
    }
}
