//! `POST /webhooks/livekit`: LiveKit's signed webhooks (`participant_joined`,
//! `participant_left`, `room_finished`) applied to the calls whose rooms they name.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use serde_json::{Value, json};

use super::AppState;
use super::extract::RawBody;
use crate::wire::Failure;

pub async fn livekit(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Json<Value>, Failure> {
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
    Ok(Json(json!({ "success": true })))
}
