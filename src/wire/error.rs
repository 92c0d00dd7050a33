//! [`Failure`]: a refused or failed request, as both doors answer it. REST renders it
//! as `{ "success": false, "error": { "code", "message", "field"? } }` with its HTTP
//! status (`api::error`); Socket.IO as the `{ code, message, field? }` of an ack or
//! `call:error` (`realtime`). Internal failures are logged with their cause and
//! answered with a generic 500 / `INTERNAL_ERROR`.

use std::borrow::Cow;

use axum::http::StatusCode;

use crate::auth::AuthError;
use crate::calls::lifecycle::CallError;
use crate::calls::service::ServiceError;
use crate::ratelimit::RetryAfter;
use crate::store::StoreError;

#[derive(Debug)]
pub struct Failure {
    pub(crate) status: StatusCode,
    pub(crate) code: Cow<'static, str>,
    pub(crate) message: String,
    /// The request field at fault, for validation errors.
    pub(crate) field: Option<String>,
    /// Seconds the client should wait, sent as `Retry-After` (429).
    pub(crate) retry_after: Option<u64>,
}

impl Failure {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code: Cow::Borrowed(code),
            message: message.into(),
            field: None,
            retry_after: None,
        }
    }

    /// 429: a rate limit refused the request; try again after `retry_after`.
    pub fn rate_limited(RetryAfter(secs): RetryAfter) -> Self {
        Self {
            retry_after: Some(secs),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "RATE_LIMITED",
                format!("too many requests: retry in {secs} s"),
            )
        }
    }

    /// 400: `field` of the request is invalid.
    pub fn invalid(field: impl Into<String>, message: impl std::fmt::Display) -> Self {
        let field = field.into();
        Self {
            message: format!("{field}: {message}"),
            field: Some(field),
            ..Self::new(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", "")
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NOT_FOUND", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "FORBIDDEN", message)
    }

    /// 500 whose cause is logged and never sent.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(%cause, "request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL_ERROR",
            "internal server error",
        )
    }
}

impl From<AuthError> for Failure {
    fn from(e: AuthError) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", e.to_string())
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Self::internal(&e)
    }
}

impl From<ServiceError> for Failure {
    fn from(e: ServiceError) -> Self {
        let message = e.to_string();
        match e {
            ServiceError::NotFound => Self::new(StatusCode::NOT_FOUND, "CALL_NOT_FOUND", message),
            ServiceError::Call(CallError::Invalid { field, message }) => {
                Self::invalid(field, message)
            }
            ServiceError::Call(e) => {
                let (status, code) = match e {
                    CallError::NotMember => (StatusCode::FORBIDDEN, "NOT_A_MEMBER"),
                    CallError::CallEnded => (StatusCode::CONFLICT, "CALL_ENDED"),
                    CallError::AlreadyJoined => (StatusCode::CONFLICT, "ALREADY_JOINED"),
                    CallError::NotJoined => (StatusCode::CONFLICT, "NOT_IN_CALL"),
                    CallError::CallFull(_) => (StatusCode::CONFLICT, "CALL_FULL"),
                    CallError::NotRinging => (StatusCode::CONFLICT, "NOT_RINGING"),
                    CallError::RingingLimit { .. } => (StatusCode::CONFLICT, "RINGING_LIMIT"),
                    CallError::DeclinedRecently { retry_after, .. } => {
                        return Self {
                            retry_after: Some(retry_after),
                            field: Some("participantIds".to_owned()),
                            ..Self::new(StatusCode::CONFLICT, "DECLINED_RECENTLY", message)
                        };
                    }
                    CallError::Invalid { .. } => (StatusCode::BAD_REQUEST, "VALIDATION_ERROR"),
                };
                Self::new(status, code, message)
            }
            ServiceError::Contention => {
                Self::new(StatusCode::CONFLICT, "CONCURRENT_UPDATE", message)
            }
            ServiceError::Store(e) => Self::internal(&e),
            ServiceError::Media(_) => {
                Self::new(StatusCode::BAD_GATEWAY, "MEDIA_UNAVAILABLE", message)
            }
        }
    }
}
