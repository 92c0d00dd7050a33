//! How REST renders a [`Failure`]: `{ "success": false, "error": { "code", "message",
//! "field"? } }` with its status, `WWW-Authenticate` on 401 and `Retry-After` when the
//! client should wait.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::wire::Failure;

/// Every error answered over HTTP (but on seed 000's `POST /events`).
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Always `false`.
    success: bool,
    error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// What went wrong, for programs (`VALIDATION_ERROR`, `CALL_NOT_FOUND`, ...).
    #[schema(value_type = String)]
    code: std::borrow::Cow<'static, str>,
    /// What went wrong, for people.
    message: String,
    /// The request field at fault (`participantIds[1]`, `[3].called_number`), for
    /// validation errors.
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<String>,
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            success: false,
            error: ErrorDetail {
                code: self.code,
                message: self.message,
                field: self.field,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}
