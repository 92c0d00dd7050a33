//! `/api/v1/calls`: the primary contract's call endpoints. Each handler checks the
//! request's shape, asks the call service, and wraps the answer in
//! `{ "success": true, "data": ... }`.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::docs::{Success, SuccessWithMessage};
use super::error::ErrorBody;
use super::extract::{Auth, CallIdPath, JsonBody, Seen};
use super::{ApiResult, AppState, created, ok, ok_with_message};
use crate::calls::feedback::{self, Feedback};
use crate::calls::lifecycle::{EndOutcome, MediaFlags, MediaPatch, NewCall};
use crate::calls::model::{CallType, MediaMode, UserId};
use crate::media::{ConnectData, MediaCredentials};
use crate::store::{CallStats, QualitySummary};
use crate::wire::views::{CallData, CallListItem, EndData, ParticipantView, end_data};
use crate::wire::{Failure, caller, end_reason, id_text};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StartRequest {
    #[serde(rename = "type")]
    call_type: CallType,
    /// The users to ring (1 to MAX_CALL_PARTICIPANTS - 1 ids, not the caller's).
    #[schema(min_items = 1, example = json!(["bob"]))]
    participant_ids: Vec<String>,
    chat_id: Option<String>,
    /// Default `true`.
    video_enabled: Option<bool>,
    /// Default `true`.
    audio_enabled: Option<bool>,
    /// Default DEFAULT_MEDIA_MODE (`sfu` unless set).
    media_mode: Option<MediaMode>,
    /// Record the call from the start (once media flows), as the caller: default
    /// `false`. RECORDING_POLICY must let the caller record.
    recording_enabled: Option<bool>,
}

/// Starts a call and rings the invitees.
#[utoipa::path(
    post,
    path = "/api/v1/calls/start",
    tag = "calls",
    security(("bearer" = [])),
    request_body = StartRequest,
    responses(
        (status = 200, description = "The call, ringing", body = Success<ConnectData>),
        (status = 400, description = "`VALIDATION_ERROR` (with `field`): a bad id, a self-invite or duplicate invitee, too many invitees", body = ErrorBody),
        (status = 403, description = "`FORBIDDEN`: `recordingEnabled` and RECORDING_POLICY does not let the caller record", body = ErrorBody),
        (status = 409, description = "`RINGING_LIMIT`, `DECLINED_RECENTLY` (with `Retry-After`); `RECORDING_UNAVAILABLE`: `recordingEnabled` in a `p2p` call", body = ErrorBody),
        (status = 500, description = "`INTERNAL_ERROR`", body = ErrorBody),
        (status = 502, description = "`MEDIA_UNAVAILABLE`: a `livekit` call could not get its LiveKit room", body = ErrorBody),
    )
)]
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
    let record = body.recording_enabled.unwrap_or(false);
    let snapshot = state
        .recordings
        .start_call(&caller(&me), me.admin, request, record)
        .await?;
    ok(state.access.connect_data(&snapshot, &me.id)?)
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JoinRequest {
    /// Default `true` (an audio call never carries video).
    video_enabled: Option<bool>,
    /// Default `true`.
    audio_enabled: Option<bool>,
}

/// Answers a call (or rejoins it).
#[utoipa::path(
    post,
    path = "/api/v1/calls/{callId}/join",
    tag = "calls",
    security(("bearer" = [])),
    params(CallIdPath),
    request_body = Option<JoinRequest>,
    responses(
        (status = 200, description = "The call, joined", body = Success<ConnectData>),
        (status = 502, description = "`MEDIA_UNAVAILABLE`", body = ErrorBody),
    )
)]
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

#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct EndRequest {
    /// `normal` (default), `declined`, `busy`, `failed`, `cancelled` or `timeout`.
    reason: Option<String>,
}

/// Ends the call for everyone (its initiator, or its last participant), leaves it, or
/// declines it (a ringing invitee): the rules are in `calls::lifecycle`.
#[utoipa::path(
    post,
    path = "/api/v1/calls/{callId}/end",
    tag = "calls",
    security(("bearer" = [])),
    params(CallIdPath),
    request_body = Option<EndRequest>,
    responses(
        (status = 200, description = "Ended for everyone, left, or declined (`outcome`)", body = SuccessWithMessage<EndData>),
    )
)]
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
    ok_with_message(message, end_data(&snapshot, outcome))
}

/// The body of `POST …/token`: no fields. It is read all the same, so that a body which
/// is not JSON is refused (415) as on every other endpoint rather than ignored.
#[derive(Debug, Deserialize, ToSchema)]
pub struct TokenRequest {}

/// Fresh connection details (token, ICE servers) for a member who has joined a call
/// that has not ended: for reconnecting.
#[utoipa::path(
    post,
    path = "/api/v1/calls/{callId}/token",
    tag = "calls",
    security(("bearer" = [])),
    params(CallIdPath),
    request_body = Option<TokenRequest>,
    responses(
        (status = 200, description = "A fresh token and ICE servers", body = Success<MediaCredentials>),
        (status = 502, description = "`MEDIA_UNAVAILABLE`", body = ErrorBody),
    )
)]
pub async fn token(
    State(state): State<AppState>,
    Auth(me): Auth,
    CallIdPath(id): CallIdPath,
    JsonBody(TokenRequest {}): JsonBody<TokenRequest>,
) -> ApiResult {
    let snapshot = state.service.get_joined(&me.id, id).await?;
    ok(state.access.credentials(&snapshot, &me.id)?)
}

/// A call as `GET /api/v1/calls/{callId}` answers it: with its quality so far and
/// the feedback its participants gave.
#[derive(Debug, Serialize, ToSchema)]
pub struct CallDetails<'a> {
    #[serde(flatten)]
    call: CallData<'a>,
    quality: QualitySummary,
    /// Oldest first; empty until the call has ended and someone rated it.
    feedback: Vec<Feedback>,
}

/// A call, its members, its quality so far and its feedback, for its members.
#[utoipa::path(
    get,
    path = "/api/v1/calls/{callId}",
    tag = "calls",
    security(("bearer" = [])),
    params(CallIdPath),
    responses(
        (status = 200, description = "The call, its members, its quality and its feedback", body = Success<CallDetails>),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    Auth(me): Auth,
    CallIdPath(id): CallIdPath,
) -> ApiResult {
    let snapshot = state.service.get(&me.id, id).await?;
    ok(CallDetails {
        call: CallData::from(&snapshot),
        quality: state.service.quality(id).await?,
        feedback: state.service.store().feedback_of(id).await?,
    })
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct FeedbackRequest {
    /// 1 (worst) to 5 (best).
    #[schema(minimum = 1, maximum = 5)]
    rating: i64,
    /// Up to 2000 characters.
    #[schema(max_length = 2000)]
    comment: Option<String>,
    /// Up to 10 labels of 1 to 64 characters.
    #[schema(max_items = 10)]
    categories: Option<Vec<String>>,
}

/// One participant's feedback, as stored.
#[derive(Debug, Serialize, ToSchema)]
pub struct FeedbackData {
    feedback: Feedback,
}

/// Rates an ended call, once, as a participant who joined it.
#[utoipa::path(
    post,
    path = "/api/v1/calls/{callId}/feedback",
    tag = "calls",
    security(("bearer" = [])),
    params(CallIdPath),
    request_body = FeedbackRequest,
    responses(
        (status = 201, description = "The feedback, stored", body = Success<FeedbackData>),
        (status = 400, description = "`VALIDATION_ERROR`: `rating` not 1 to 5, `comment` too long, `categories` too many or too long", body = ErrorBody),
        (status = 403, description = "`NOT_A_MEMBER`: not a participant who joined the call", body = ErrorBody),
        (status = 409, description = "`CALL_NOT_ENDED`; `FEEDBACK_EXISTS`: the caller rated this call already", body = ErrorBody),
        (status = 500, description = "`INTERNAL_ERROR`", body = ErrorBody),
    )
)]
pub async fn feedback(
    State(state): State<AppState>,
    Seen(me): Seen,
    CallIdPath(id): CallIdPath,
    JsonBody(body): JsonBody<FeedbackRequest>,
) -> Result<Response, Failure> {
    let feedback = Feedback::new(
        id,
        &me.id,
        body.rating,
        body.comment,
        body.categories.unwrap_or_default(),
        state.service.now(),
    )?;
    feedback::give(&state.service, &feedback).await?;
    created(FeedbackData { feedback })
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// 1 to 100; default 50.
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
    /// 0 to 1000000; default 0.
    #[param(minimum = 0, maximum = 1_000_000)]
    offset: Option<i64>,
}

/// Where a page of a history is.
#[derive(Debug, Serialize, ToSchema)]
pub struct Pagination {
    limit: i64,
    offset: i64,
    /// How many there are in all.
    total: i64,
}

impl Pagination {
    pub fn new(limit: i64, offset: i64, total: i64) -> Self {
        Self {
            limit,
            offset,
            total,
        }
    }
}

/// A page of the caller's calls.
#[derive(Debug, Serialize, ToSchema)]
pub struct History<'a> {
    calls: Vec<CallListItem<'a>>,
    pagination: Pagination,
}

/// The caller's calls, newest first, a page at a time.
#[utoipa::path(
    get,
    path = "/api/v1/calls/history",
    tag = "calls",
    security(("bearer" = [])),
    params(HistoryQuery),
    responses(
        (status = 200, description = "A page of the caller's calls, newest first", body = Success<History>),
        (status = 400, description = "`VALIDATION_ERROR`: `limit` or `offset` out of range, or not a number", body = ErrorBody),
        (status = 500, description = "`INTERNAL_ERROR`", body = ErrorBody),
    )
)]
pub async fn history(
    State(state): State<AppState>,
    Auth(me): Auth,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> ApiResult {
    let Query(query) = query.map_err(|e| Failure::invalid("query", e.body_text()))?;
    let (limit, offset) = page_bounds(query.limit, query.offset)?;
    let (calls, total) = state.service.history(&me.id, limit, offset).await?;
    let items: Vec<CallListItem> = calls.iter().map(|c| CallListItem::new(c, &me.id)).collect();
    ok(History {
        calls: items,
        pagination: Pagination::new(limit, offset, total),
    })
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

/// The caller's calls that have not ended.
#[derive(Debug, Serialize, ToSchema)]
pub struct ActiveCalls<'a> {
    calls: Vec<CallListItem<'a>>,
}

/// The caller's calls that have not ended.
#[utoipa::path(
    get,
    path = "/api/v1/calls/active",
    tag = "calls",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's calls that have not ended", body = Success<ActiveCalls>),
        (status = 500, description = "`INTERNAL_ERROR`", body = ErrorBody),
    )
)]
pub async fn active(State(state): State<AppState>, Auth(me): Auth) -> ApiResult {
    let calls = state.service.active(&me.id).await?;
    let items: Vec<CallListItem> = calls.iter().map(|c| CallListItem::new(c, &me.id)).collect();
    ok(ActiveCalls { calls: items })
}

/// At least one of the three.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ParticipantUpdate {
    audio_enabled: Option<bool>,
    video_enabled: Option<bool>,
    screen_share_enabled: Option<bool>,
}

/// The caller as a member of the call, after the change.
#[derive(Debug, Serialize, ToSchema)]
pub struct ParticipantData<'a> {
    participant: Option<ParticipantView<'a>>,
}

/// Turns the caller's own audio, video or screen share on or off.
#[utoipa::path(
    patch,
    path = "/api/v1/calls/{callId}/participant",
    tag = "calls",
    security(("bearer" = [])),
    params(CallIdPath),
    request_body = ParticipantUpdate,
    responses(
        (status = 200, description = "The caller's media, as it is now", body = SuccessWithMessage<ParticipantData>),
    )
)]
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
    ok_with_message(
        "Participant settings updated",
        ParticipantData { participant },
    )
}

/// Counts over the caller's calls (and the mean rating of their feedback); over all
/// calls for an admin token.
#[utoipa::path(
    get,
    path = "/api/v1/calls/stats",
    tag = "calls",
    security(("bearer" = []), ("bearer" = ["admin"])),
    responses(
        (status = 200, description = "Counts over the caller's calls (all calls for an admin)", body = Success<CallStats>),
        (status = 500, description = "`INTERNAL_ERROR`", body = ErrorBody),
    )
)]
pub async fn stats(State(state): State<AppState>, Auth(me): Auth) -> ApiResult {
    let scope = if me.admin { None } else { Some(&me.id) };
    ok(state.service.stats(scope).await?)
}
