//! `/api/v1/calls`: the primary contract's call endpoints. Each handler checks the
//! request's shape, asks the call service, and wraps the answer in
//! `{ "success": true, "data": ... }`.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::extract::{Auth, CallIdPath, JsonBody};
use crate::calls::lifecycle::{EndOutcome, MediaFlags, MediaPatch, NewCall};
use crate::calls::model::{CallType, MediaMode, UserId};
use crate::wire::views::{CallListItem, ParticipantView, call_data};
use crate::wire::{Failure, caller, end_reason, id_text, with_outcome};

type ApiResult = Result<Json<Value>, Failure>;

fn ok(data: Value) -> ApiResult {
    Ok(Json(json!({ "success": true, "data": data })))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartRequest {
    #[serde(rename = "type")]
    call_type: CallType,
    participant_ids: Vec<String>,
    chat_id: Option<String>,
    video_enabled: Option<bool>,
    audio_enabled: Option<bool>,
    media_mode: Option<MediaMode>,
}

/// `POST /api/v1/calls/start`
pub async fn start(
    State(state): State<AppState>,
    Auth(me): Auth,
    JsonBody(body): JsonBody<StartRequest>,
) -> ApiResult {
    for (i, id) in body.participant_ids.iter().enumerate() {
        id_text(&format!("participantIds[{i}]"), id)?;
    }
    if let Some(chat_id) = &body.chat_id {
        id_text("chatId", chat_id)?;
    }
    let request = NewCall {
        call_type: body.call_type,
        invitees: body.participant_ids.into_iter().map(UserId).collect(),
        chat_id: body.chat_id,
        media: MediaFlags {
            audio: body.audio_enabled.unwrap_or(true),
            video: body.video_enabled.unwrap_or(true),
        },
        media_mode: body
            .media_mode
            .unwrap_or(state.service.default_media_mode()),
    };
    let snapshot = state.service.start(&caller(&me), request).await?;
    ok(state.access.connect_data(&snapshot, &me.id)?)
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinRequest {
    video_enabled: Option<bool>,
    audio_enabled: Option<bool>,
}

/// `POST /api/v1/calls/:callId/join`
pub async fn join(
    State(state): State<AppState>,
    Auth(me): Auth,
    CallIdPath(id): CallIdPath,
    JsonBody(body): JsonBody<JoinRequest>,
) -> ApiResult {
    let media = MediaFlags {
        audio: body.audio_enabled.unwrap_or(true),
        video: body.video_enabled.unwrap_or(true),
    };
    let snapshot = state.service.join(&caller(&me), id, media).await?;
    ok(state.access.connect_data(&snapshot, &me.id)?)
}

#[derive(Debug, Default, Deserialize)]
pub struct EndRequest {
    reason: Option<String>,
}

/// `POST /api/v1/calls/:callId/end`: see `calls::lifecycle` for what ending means
/// for the initiator, an invitee and a participant.
pub async fn end(
    State(state): State<AppState>,
    Auth(me): Auth,
    CallIdPath(id): CallIdPath,
    JsonBody(body): JsonBody<EndRequest>,
) -> ApiResult {
    let reason = end_reason(body.reason.as_deref())?;
    let (snapshot, outcome) = state.service.end(&me.id, id, reason).await?;
    let message = match outcome {
        EndOutcome::Ended(_) => "Call ended successfully",
        EndOutcome::Declined => "Call declined",
        EndOutcome::Left => "Left the call",
    };
    Ok(Json(json!({
        "success": true,
        "message": message,
        "data": with_outcome(call_data(&snapshot), outcome),
    })))
}

/// The body of `POST …/token`: no fields. It is read all the same, so that a body which
/// is not JSON is refused (415) as on every other endpoint rather than ignored.
#[derive(Debug, Deserialize)]
pub struct TokenRequest {}

/// `POST /api/v1/calls/:callId/token`: fresh connection details for a member of a
/// call that has not ended (reconnection).
pub async fn token(
    State(state): State<AppState>,
    Auth(me): Auth,
    CallIdPath(id): CallIdPath,
    JsonBody(TokenRequest {}): JsonBody<TokenRequest>,
) -> ApiResult {
    let snapshot = state.service.get_joined(&me.id, id).await?;
    let data = state.access.connect_data(&snapshot, &me.id)?;
    ok(json!({ "token": data["token"], "iceServers": data["iceServers"] }))
}

/// `GET /api/v1/calls/:callId`
pub async fn get(
    State(state): State<AppState>,
    Auth(me): Auth,
    CallIdPath(id): CallIdPath,
) -> ApiResult {
    let snapshot = state.service.get(&me.id, id).await?;
    let mut data = call_data(&snapshot);
    data["quality"] = json!(state.service.quality(id).await?);
    ok(data)
}

#[derive(Debug, Deserialize)]
pub struct HistoryQuery {
    limit: Option<i64>,
    offset: Option<i64>,
}

/// `GET /api/v1/calls/history?limit&offset`: the caller's calls, newest first.
pub async fn history(
    State(state): State<AppState>,
    Auth(me): Auth,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> ApiResult {
    let Query(query) = query.map_err(|e| Failure::invalid("query", e.body_text()))?;
    let (limit, offset) = page_bounds(query.limit, query.offset)?;
    let (calls, total) = state.service.history(&me.id, limit, offset).await?;
    let items: Vec<CallListItem> = calls.iter().map(|c| CallListItem::new(c, &me.id)).collect();
    ok(json!({
        "calls": items,
        "pagination": { "limit": limit, "offset": offset, "total": total },
    }))
}

/// `limit` (1 to 100, default 50) and `offset` (0 to 1000000, default 0) of a page of
/// a history.
pub(super) fn page_bounds(limit: Option<i64>, offset: Option<i64>) -> Result<(i64, i64), Failure> {
    let limit = limit.unwrap_or(50);
    if !(1..=100).contains(&limit) {
        return Err(Failure::invalid("limit", "must be from 1 to 100"));
    }
    let offset = offset.unwrap_or(0);
    if !(0..=1_000_000).contains(&offset) {
        return Err(Failure::invalid("offset", "must be from 0 to 1000000"));
    }
    Ok((limit, offset))
}

/// `GET /api/v1/calls/active`: the caller's calls that have not ended.
pub async fn active(State(state): State<AppState>, Auth(me): Auth) -> ApiResult {
    let calls = state.service.active(&me.id).await?;
    let items: Vec<CallListItem> = calls.iter().map(|c| CallListItem::new(c, &me.id)).collect();
    ok(json!({ "calls": items }))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParticipantUpdate {
    audio_enabled: Option<bool>,
    video_enabled: Option<bool>,
    screen_share_enabled: Option<bool>,
}

/// `PATCH /api/v1/calls/:callId/participant`: the caller's own media toggles.
pub async fn update_participant(
    State(state): State<AppState>,
    Auth(me): Auth,
    CallIdPath(id): CallIdPath,
    JsonBody(body): JsonBody<ParticipantUpdate>,
) -> ApiResult {
    let patch = MediaPatch {
        audio: body.audio_enabled,
        video: body.video_enabled,
        screen_share: body.screen_share_enabled,
    };
    if patch.audio.is_none() && patch.video.is_none() && patch.screen_share.is_none() {
        return Err(Failure::invalid(
            "body",
            "give at least one of audioEnabled, videoEnabled, screenShareEnabled",
        ));
    }
    let snapshot = state.service.update_media(&me.id, id, patch).await?;
    let participant = snapshot.member(&me.id).map(ParticipantView::from);
    Ok(Json(json!({
        "success": true,
        "message": "Participant settings updated",
        "data": { "participant": participant },
    })))
}

/// `GET /api/v1/calls/stats`: counts over the caller's calls; over all calls for an
/// admin token.
pub async fn stats(State(state): State<AppState>, Auth(me): Auth) -> ApiResult {
    let scope = if me.admin { None } else { Some(&me.id) };
    let stats = state.service.stats(scope).await?;
    ok(json!(stats))
}
