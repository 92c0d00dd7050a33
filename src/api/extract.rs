//! Request extractors whose failures are [`Failure`]s in the JSON error shape, not
//! axum's plain-text rejections.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use serde::de::{DeserializeOwned, IgnoredAny};

use super::AppState;
use crate::auth::{AuthError, Identity};
use crate::calls::model::CallId;
use crate::wire::Failure;
use crate::wire::call_id;

/// The caller, from `Authorization: Bearer <jwt>`.
#[derive(Debug)]
pub struct Auth(pub Identity);

impl FromRequestParts<AppState> for Auth {
    type Rejection = Failure;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Failure> {
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or(AuthError::Missing)?
            .to_str()
            .map_err(|_| AuthError::Malformed("Authorization header is not text".into()))?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or_else(|| AuthError::Malformed("Authorization must be `Bearer <token>`".into()))?;
        let now = state.service.now();
        let identity = state.jwt.verify(token.trim(), now.timestamp())?;
        // Here, before any other extractor or the handler runs: a refused request
        // has done nothing.
        state
            .rate_limits
            .user
            .check(&identity.id, now)
            .map_err(Failure::rate_limited)?;
        Ok(Auth(identity))
    }
}

/// The caller, as [`Auth`], once recorded as seen (`users`: their row made or
/// refreshed): for the support lines' endpoints.
#[derive(Debug)]
pub struct Seen(pub Identity);

impl FromRequestParts<AppState> for Seen {
    type Rejection = Failure;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Failure> {
        let Auth(identity) = Auth::from_request_parts(parts, state).await?;
        state.users.seen(&identity).await?;
        Ok(Seen(identity))
    }
}

/// The `{callId}` of a call endpoint. A segment that is not a UUID (or not even UTF-8,
/// which axum's `Path` would refuse in plain text) is a 400 naming `callId`.
#[derive(Debug, utoipa::IntoParams)]
#[into_params(names("callId"), parameter_in = Path)]
pub struct CallIdPath(
    /// The call's id.
    pub CallId,
);

impl FromRequestParts<AppState> for CallIdPath {
    type Rejection = Failure;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Failure> {
        let raw = Path::<String>::from_request_parts(parts, state)
            .await
            .map_or_else(|_| String::new(), |Path(raw)| raw);
        call_id(&raw).map(CallIdPath)
    }
}

/// A body as sent (for signatures over its exact bytes); over the limit it is 413 in
/// the error shape.
#[derive(Debug)]
pub struct RawBody(pub Bytes);

impl FromRequest<AppState> for RawBody {
    type Rejection = Failure;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Failure> {
        Bytes::from_request(req, state)
            .await
            .map(RawBody)
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    Failure::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "PAYLOAD_TOO_LARGE",
                        "request body is too large",
                    )
                } else {
                    Failure::new(
                        StatusCode::BAD_REQUEST,
                        "BAD_REQUEST",
                        rejection.body_text(),
                    )
                }
            })
    }
}

/// A JSON body. An empty body reads as `{}` whatever its content type, so endpoints
/// whose fields are all optional (join, end, token) accept none; a non-empty body must
/// say it is JSON (`application/json` or `application/*+json`), or it is 415: guessing
/// would accept form posts and plain text that the client meant as something else.
/// Over the limit it is 413, unparseable 400 `MALFORMED_JSON`, and well-formed with a
/// field of the wrong shape 400 `VALIDATION_ERROR` naming the field.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = Failure;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Failure> {
        let declared_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(is_json_media_type);
        let RawBody(bytes) = RawBody::from_request(req, state).await?;
        if bytes.is_empty() {
            return parse(b"{}").map(JsonBody);
        }
        if !declared_json {
            return Err(Failure::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UNSUPPORTED_MEDIA_TYPE",
                "a request body must be JSON, sent with Content-Type: application/json",
            ));
        }
        parse(&bytes).map(JsonBody)
    }
}

/// `application/json` or a structured `application/*+json` type, parameters aside.
pub(super) fn is_json_media_type(content_type: &str) -> bool {
    let mime = content_type.split(';').next().unwrap_or_default().trim();
    let Some((kind, subtype)) = mime.split_once('/') else {
        return false;
    };
    let subtype = subtype.to_ascii_lowercase();
    kind.eq_ignore_ascii_case("application") && (subtype == "json" || subtype.ends_with("+json"))
}

/// `body` as a `T`. Syntax is checked first and on its own: serde_json reports some
/// type errors (a number where an enum's name belongs) as syntax errors, and a client
/// that sent well-formed JSON must be told which field is wrong, not that its JSON is.
fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Failure> {
    serde_json::from_slice::<IgnoredAny>(bytes).map_err(|e| {
        Failure::new(
            StatusCode::BAD_REQUEST,
            "MALFORMED_JSON",
            format!("malformed JSON: {e}"),
        )
    })?;
    let mut de = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let inner = e.inner();
        let message = if inner.is_syntax() {
            "invalid type: expected one of its names, as a string".to_owned()
        } else {
            strip_position(&inner.to_string())
        };
        let path = e.path().to_string();
        if path == "." {
            // A missing field is reported at the parent: name it from the message.
            let field = message.split('`').nth(1).unwrap_or("body").to_owned();
            Failure::invalid(field, message)
        } else {
            Failure::invalid(path, message)
        }
    })
}

/// serde_json's messages end with " at line L column C"; the field name says more.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Sample {
        participant_ids: Vec<String>,
        kind: Option<String>,
    }

    fn error_of(body: &str) -> Failure {
        parse::<Sample>(body.as_bytes()).unwrap_err()
    }

    #[test]
    fn a_well_formed_body_parses() {
        let sample: Sample = parse(br#"{"participantIds": ["a"], "kind": "k"}"#).unwrap();
        assert_eq!(
            (sample.participant_ids, sample.kind.as_deref()),
            (vec!["a".to_owned()], Some("k"))
        );
    }

    #[test]
    fn a_wrong_type_names_the_path_to_it() {
        let e = error_of(r#"{"participantIds": ["a", 5]}"#);
        assert_eq!(e.field.as_deref(), Some("participantIds[1]"));
        assert!(e.message.contains("expected a string"), "{}", e.message);
        assert!(!e.message.contains("line"));
    }

    #[test]
    fn a_missing_field_is_named() {
        let e = error_of(r#"{"kind": "x"}"#);
        assert_eq!(e.field.as_deref(), Some("participantIds"));
    }

    #[test]
    fn broken_or_trailing_json_is_malformed() {
        assert_eq!(error_of(r#"{"participantIds": ["#).code, "MALFORMED_JSON");
        assert_eq!(
            error_of(r#"{"participantIds": []} x"#).code,
            "MALFORMED_JSON"
        );
        assert_eq!(error_of("[]").code, "VALIDATION_ERROR");
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(rename_all = "lowercase")]
    enum Kind {
        Audio,
    }

    #[derive(Debug, serde::Deserialize)]
    struct WithEnum {
        #[serde(rename = "type")]
        _kind: Kind,
    }

    #[test]
    fn well_formed_json_of_the_wrong_type_is_a_validation_error_naming_the_field() {
        for body in [
            r#"{"type": 5}"#,
            r#"{"type": null}"#,
            r#"{"type": ["audio"]}"#,
        ] {
            let e = parse::<WithEnum>(body.as_bytes()).unwrap_err();
            assert_eq!(
                (&*e.code, e.field.as_deref()),
                ("VALIDATION_ERROR", Some("type")),
                "{body}"
            );
        }
        assert!(parse::<WithEnum>(br#"{"type": "audio"}"#).is_ok());
        assert_eq!(
            parse::<WithEnum>(br#"{"type": 5"#).unwrap_err().code,
            "MALFORMED_JSON"
        );
    }

    #[test]
    fn json_media_types_are_application_json_and_its_structured_suffix() {
        for json in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/webhook+json",
        ] {
            assert!(is_json_media_type(json), "{json}");
        }
        for other in ["text/plain", "text/json", "application/jsonx", "json", ""] {
            assert!(!is_json_media_type(other), "{other}");
        }
    }
}
