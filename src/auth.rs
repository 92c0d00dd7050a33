//! Who is calling: HS256 JSON Web Tokens signed with JWT_SECRET.
//!
//! Claims Huddle reads (any JWT library can mint them):
//! - `sub` (required): the user id, 1 to 128 characters, not blank, without control or
//!   bidirectional-override characters (see [`check_id`]).
//! - `exp` (required): expiry, seconds since the Unix epoch.
//! - `nbf`, `iat` (optional): not-before and issued-at, seconds since the epoch.
//! - `name` (optional): a display name shown to other participants (see [`check_name`]).
//! - `role` (optional): `"customer"` (the default, also when absent or unknown).
//!   `"representative"` answers a support line's queue (`/api/v1/queue`,
//!   availability). `"admin"` grants the operator views (global statistics,
//!   `/monitoring/metrics`, queue statistics); it grants no access to other people's
//!   calls. `"service"` marks a backend, such as a telephone system posting its call
//!   events (`/api/v1/phone/*`); it grants nothing else either.
//!
//! Only `alg: HS256` is accepted; `none` and every other algorithm are refused, and
//! the signature is compared in constant time. `exp` and `nbf` allow 30 s of clock skew.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::calls::model::UserId;

type HmacSha256 = Hmac<Sha256>;

/// Clock skew tolerated on `exp` and `nbf`, in seconds.
const LEEWAY_SECS: i64 = 30;
/// Longest token accepted; real ones are a few hundred bytes.
const MAX_TOKEN_LEN: usize = 8 * 1024;
/// Header of every token Huddle signs: `{"alg":"HS256","typ":"JWT"}`.
const HEADER: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9";

/// Why a token was refused. The text is safe to show the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    #[error("missing Authorization: Bearer token")]
    Missing,
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("unsupported token algorithm `{0}` (only HS256 is accepted)")]
    UnsupportedAlgorithm(String),
    #[error("token signature does not match")]
    BadSignature,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
}

/// The claims of a Huddle token; see the module documentation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

/// What a token's `role` claim makes its holder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    #[default]
    Customer,
    Representative,
    Admin,
    Service,
}

impl Role {
    /// The claim's value; anything else (or none) is a customer.
    pub fn of_claim(role: Option<&str>) -> Role {
        match role {
            Some("representative") => Role::Representative,
            Some("admin") => Role::Admin,
            Some("service") => Role::Service,
            _ => Role::Customer,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Customer => "customer",
            Role::Representative => "representative",
            Role::Admin => "admin",
            Role::Service => "service",
        }
    }
}

/// An authenticated user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub id: UserId,
    pub name: Option<String>,
    pub role: Role,
    /// `role` is [`Role::Admin`].
    pub admin: bool,
    /// A backend's token (`"role": "service"`), for the phone-call endpoints.
    pub service: bool,
}

impl Identity {
    /// `id`, named `name`, with `role` (and the flags it implies).
    pub fn new(id: UserId, name: Option<String>, role: Role) -> Self {
        Self {
            id,
            name,
            role,
            admin: role == Role::Admin,
            service: role == Role::Service,
        }
    }
}

#[derive(Deserialize)]
struct Header {
    alg: String,
}

/// The key tokens are signed and checked with.
#[derive(Clone)]
pub struct JwtKey {
    secret: Vec<u8>,
}

impl std::fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwtKey(..)")
    }
}

impl JwtKey {
    pub fn new(secret: &[u8]) -> Self {
        Self {
            secret: secret.to_vec(),
        }
    }

    fn mac(&self, signed_part: &str) -> HmacSha256 {
        // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
        let mut mac = HmacSha256::new_from_slice(&self.secret).unwrap_or_else(|_| unreachable!());
        mac.update(signed_part.as_bytes());
        mac
    }

    /// A signed token carrying `claims`.
    pub fn sign(&self, claims: &Claims) -> String {
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
        let signed_part = format!("{HEADER}.{payload}");
        let signature = URL_SAFE_NO_PAD.encode(self.mac(&signed_part).finalize().into_bytes());
        format!("{signed_part}.{signature}")
    }

    /// Checks `token`'s algorithm, signature and validity period as of `now` (seconds
    /// since the epoch) and returns who it names.
    pub fn verify(&self, token: &str, now: i64) -> Result<Identity, AuthError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(AuthError::Malformed("token is too long".into()));
        }
        let mut parts = token.split('.');
        let (Some(header_b64), Some(payload_b64), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Malformed(
                "expected three dot-separated parts".into(),
            ));
        };
        let header: Header = decode_json(header_b64, "header")?;
        if header.alg != "HS256" {
            return Err(AuthError::UnsupportedAlgorithm(header.alg));
        }
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| AuthError::Malformed("signature is not base64url".into()))?;
        let signed_part = &token[..header_b64.len() + 1 + payload_b64.len()];
        self.mac(signed_part)
            .verify_slice(&signature)
            .map_err(|_| AuthError::BadSignature)?;
        let claims: Claims = decode_json(payload_b64, "payload")?;
        if now > claims.exp + LEEWAY_SECS {
            return Err(AuthError::Expired);
        }
        if claims.nbf.is_some_and(|nbf| nbf > now + LEEWAY_SECS) {
            return Err(AuthError::NotYetValid);
        }
        claims.identity()
    }
}

impl Claims {
    fn identity(self) -> Result<Identity, AuthError> {
        check_id(&self.sub).map_err(|rule| AuthError::Malformed(format!("`sub` {rule}")))?;
        if let Some(name) = &self.name {
            check_name(name).map_err(|rule| AuthError::Malformed(format!("`name` {rule}")))?;
        }
        Ok(Identity::new(
            UserId(self.sub),
            self.name.filter(|n| !n.trim().is_empty()),
            Role::of_claim(self.role.as_deref()),
        ))
    }
}

pub use signaling::events::{check_id, check_name};

fn decode_json<T: serde::de::DeserializeOwned>(part: &str, what: &str) -> Result<T, AuthError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| AuthError::Malformed(format!("{what} is not base64url")))?;
    serde_json::from_slice(&bytes).map_err(|e| AuthError::Malformed(format!("{what}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calls::model::MAX_ID_LEN;

    const NOW: i64 = 1_800_000_000;

    fn claims(sub: &str, exp: i64) -> Claims {
        Claims {
            sub: sub.into(),
            exp,
            iat: Some(NOW),
            nbf: None,
            name: Some("Alice".into()),
            role: None,
        }
    }

    #[test]
    fn signs_like_every_other_hs256_implementation() {
        // The example token of RFC 7519's companion site jwt.io, secret
        // "your-256-bit-secret": our MAC over its signed part reproduces its signature.
        let token = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ";
        let key = JwtKey::new(b"your-256-bit-secret");
        let signature = URL_SAFE_NO_PAD.encode(key.mac(token).finalize().into_bytes());
        assert_eq!(signature, "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c");
    }

    #[test]
    fn a_signed_token_verifies_to_its_user() {
        let key = JwtKey::new(b"a secret of reasonable length");
        let identity = key
            .verify(&key.sign(&claims("alice", NOW + 60)), NOW)
            .unwrap();
        assert_eq!(identity.id.as_str(), "alice");
        assert_eq!(identity.name.as_deref(), Some("Alice"));
        assert!(!identity.admin && !identity.service);
    }

    #[test]
    fn the_admin_role_claim_marks_an_operator() {
        let key = JwtKey::new(b"k");
        let mut c = claims("ops", NOW + 60);
        c.role = Some("admin".into());
        assert!(key.verify(&key.sign(&c), NOW).unwrap().admin);
    }

    #[test]
    fn the_service_role_claim_marks_a_backend_not_an_operator() {
        let key = JwtKey::new(b"k");
        let mut c = claims("pbx", NOW + 60);
        c.role = Some("service".into());
        let identity = key.verify(&key.sign(&c), NOW).unwrap();
        assert!(identity.service && !identity.admin);
        assert!(
            !key.verify(&key.sign(&claims("a", NOW + 60)), NOW)
                .unwrap()
                .service
        );
    }

    #[test]
    fn expired_and_not_yet_valid_tokens_are_refused_with_leeway() {
        let key = JwtKey::new(b"k");
        assert!(key.verify(&key.sign(&claims("a", NOW - 10)), NOW).is_ok());
        assert_eq!(
            key.verify(&key.sign(&claims("a", NOW - 31)), NOW),
            Err(AuthError::Expired)
        );
        let mut early = claims("a", NOW + 600);
        early.nbf = Some(NOW + 120);
        assert_eq!(
            key.verify(&key.sign(&early), NOW),
            Err(AuthError::NotYetValid)
        );
    }

    #[test]
    fn a_token_signed_with_another_secret_or_altered_is_refused() {
        let token = JwtKey::new(b"other").sign(&claims("a", NOW + 60));
        assert_eq!(
            JwtKey::new(b"k").verify(&token, NOW),
            Err(AuthError::BadSignature)
        );

        let key = JwtKey::new(b"k");
        let token = key.sign(&claims("alice", NOW + 60));
        let forged_payload = URL_SAFE_NO_PAD.encode(br#"{"sub":"mallory","exp":1900000000}"#);
        let mut parts: Vec<&str> = token.split('.').collect();
        parts[1] = &forged_payload;
        assert_eq!(
            key.verify(&parts.join("."), NOW),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn the_none_algorithm_is_refused() {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(br#"{"sub":"a","exp":1900000000}"#);
        let result = JwtKey::new(b"k").verify(&format!("{header}.{payload}."), NOW);
        assert_eq!(result, Err(AuthError::UnsupportedAlgorithm("none".into())));
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        let key = JwtKey::new(b"k");
        for token in ["", "a", "a.b", "a.b.c.d", "!!!.???.***", "eyJ9.eyJ9.AAAA"] {
            assert!(
                matches!(key.verify(token, NOW), Err(AuthError::Malformed(_))),
                "{token}"
            );
        }
        let missing_exp = {
            let payload = URL_SAFE_NO_PAD.encode(br#"{"sub":"a"}"#);
            let signed = format!("{HEADER}.{payload}");
            let sig = URL_SAFE_NO_PAD.encode(key.mac(&signed).finalize().into_bytes());
            format!("{signed}.{sig}")
        };
        let err = key.verify(&missing_exp, NOW).unwrap_err().to_string();
        assert!(err.contains("missing field `exp`"), "{err}");
    }

    #[test]
    fn ids_and_names_with_control_or_bidi_override_characters_are_refused() {
        for bad in [
            "a\0b",
            "a\nb",
            "\u{7f}",
            "evil\u{202E}gpj.exe",
            "\u{2066}x",
            "   ",
            "\t",
        ] {
            assert!(check_id(bad).is_err(), "{bad:?}");
        }
        for bad in [
            "a\0b",
            "Eve\u{202D}",
            "\u{2069}",
            &"n".repeat(MAX_ID_LEN + 1),
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        for good in [
            "alice",
            "user 42",
            "ゆうこ",
            "مريم",
            &"x".repeat(MAX_ID_LEN),
        ] {
            assert_eq!(check_id(good), Ok(()), "{good:?}");
            assert_eq!(check_name(good), Ok(()), "{good:?}");
        }
        assert_eq!(
            check_name("  "),
            Ok(()),
            "a blank name is no name, not an error"
        );
        assert!(check_id("").unwrap_err().contains(&MAX_ID_LEN.to_string()));
    }

    #[test]
    fn a_token_whose_sub_or_name_breaks_the_rule_is_refused_with_the_reason() {
        let key = JwtKey::new(b"k");
        let err = key
            .verify(&key.sign(&claims("a\0b", NOW + 60)), NOW)
            .unwrap_err();
        assert!(
            matches!(&err, AuthError::Malformed(m) if m.starts_with("`sub` ") && m.contains("control")),
            "{err}"
        );
        let mut named = claims("alice", NOW + 60);
        named.name = Some("Al\u{202E}ice".into());
        let err = key.verify(&key.sign(&named), NOW).unwrap_err();
        assert!(
            matches!(&err, AuthError::Malformed(m) if m.starts_with("`name` ")),
            "{err}"
        );
    }

    #[test]
    fn an_empty_or_overlong_subject_is_refused() {
        let key = JwtKey::new(b"k");
        assert!(key.verify(&key.sign(&claims("", NOW + 60)), NOW).is_err());
        assert!(
            key.verify(&key.sign(&claims(&"x".repeat(129), NOW + 60)), NOW)
                .is_err()
        );
    }
}
