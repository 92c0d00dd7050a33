//! Request extractors whose failures are [`ApiError`]s in the JSON error shape, not
//! axum's plain-text rejections.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;

use super::AppState;
use super::error::ApiError;
use crate::auth::{AuthError, Identity};

/// The caller, from `Authorization: Bearer <jwt>`.
#[derive(Debug)]
pub struct Auth(pub Identity);

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
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
        let now = state.service.now().timestamp();
        Ok(Auth(state.jwt.verify(token.trim(), now)?))
    }
}

/// A body as sent (for signatures over its exact bytes); over the limit it is 413 in
/// the error shape.
#[derive(Debug)]
pub struct RawBody(pub Bytes);

impl FromRequest<AppState> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        Bytes::from_request(req, state)
            .await
            .map(RawBody)
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "PAYLOAD_TOO_LARGE",
                        "request body is too large",
                    )
                } else {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "BAD_REQUEST",
                        rejection.body_text(),
                    )
                }
            })
    }
}

/// A JSON body. An empty body reads as `{}`, so endpoints whose fields are all
/// optional accept none; a body over the limit is 413, a non-JSON content type 415,
/// and a field of the wrong shape 400 naming the field.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let content_type = req.headers().get(header::CONTENT_TYPE).cloned();
        let RawBody(bytes) = RawBody::from_request(req, state).await?;
        if bytes.is_empty() {
            return parse(b"{}").map(JsonBody);
        }
        if let Some(content_type) = content_type {
            let is_json = content_type.to_str().is_ok_and(|ct| {
                ct.split(';')
                    .next()
                    .is_some_and(|mime| mime.trim().ends_with("json"))
            });
            if !is_json {
                return Err(ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "UNSUPPORTED_MEDIA_TYPE",
                    "request body must be application/json",
                ));
            }
        }
        parse(&bytes).map(JsonBody)
    }
}

fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let inner = e.inner();
        if inner.is_syntax() || inner.is_eof() {
            return ApiError::new(
                StatusCode::BAD_REQUEST,
                "MALFORMED_JSON",
                format!("malformed JSON: {inner}"),
            );
        }
        let message = strip_position(&inner.to_string());
        let path = e.path().to_string();
        if path == "." {
            // A missing field is reported at the parent: name it from the message.
            let field = message.split('`').nth(1).unwrap_or("body").to_owned();
            ApiError::invalid(field, message)
        } else {
            ApiError::invalid(path, message)
        }
    })?;
    de.end().map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "MALFORMED_JSON",
            format!("malformed JSON: {e}"),
        )
    })?;
    Ok(value)
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

    fn error_of(body: &str) -> ApiError {
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
}
