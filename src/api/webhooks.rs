//! `POST /webhooks/livekit`: LiveKit's signed webhooks (`participant_joined`,
//! `participant_left`, `room_finished`) applied to the calls whose rooms they name, and
//! Egress's (`egress_ended`) to the recordings whose files they name.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};

use super::AppState;
use super::error::ErrorBody;
use super::extract::RawBody;
use crate::wire::Failure;

/// `{ "success": true }`: the webhook was applied.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Applied {
    success: bool,
}

/// Applies one of LiveKit's webhooks to the call whose room it names.
#[utoipa::path(
    post,
    path = "/webhooks/livekit",
    tag = "webhooks",
    description = "LiveKit's signed webhooks (`participant_joined`, `participant_left`, \
        `room_finished`; `egress_ended` completes or fails a recording, `egress_started` and \
        `egress_updated` are accepted and change nothing), signed by LiveKit in the \
        `Authorization` header (a JWT over the body's hash, with LIVEKIT_API_KEY and \
        LIVEKIT_API_SECRET).",
    request_body(content = String, content_type = "application/webhook+json", description = "The webhook as LiveKit sends it"),
    responses(
        (status = 200, description = "Applied", body = Applied),
        (status = 401, description = "`UNAUTHORIZED`: unsigned, tampered, or not UTF-8", body = ErrorBody),
        (status = 404, description = "`NOT_FOUND`: LiveKit is not configured", body = ErrorBody),
        (status = 413, description = "`PAYLOAD_TOO_LARGE`", body = ErrorBody),
    )
)]
pub async fn livekit(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Json<Applied>, Failure> {
    let Some(livekit) = &state.livekit else {
        return Err(Failure::not_found(
            "LiveKit is not configured on this server",
        ));
    };
    let unauthorized =
        |message: String| Failure::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", message);
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            unauthorized("a LiveKit webhook is signed in its Authorization header".into())
        })?;
    let body =
        std::str::from_utf8(&body).map_err(|_| unauthorized("the body is not UTF-8".into()))?;
    livekit
        .webhook(&state.service, body, authorization)
        .await
        .map_err(|e| unauthorized(e.to_string()))?;
    Ok(Json(Applied { success: true }))
}
