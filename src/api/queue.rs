//! `/api/v1/queue/*` and `/api/v1/queues`: customers join, follow, leave a support
//! queue or ask to be called back; representatives and admins read its figures;
//! admins create queues. What happens in line is `queue`'s.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::docs::Success;
use super::error::ErrorBody;
use super::extract::{Auth, JsonBody, Seen};
use super::{ApiResult, AppState, ok};
use crate::queue::model::{EntryView, QueueInfo, QueueStats};
use crate::queue::parse_call_type;
use crate::wire::Failure;

/// A join, or a callback asked for without a place in line.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct JoinRequest {
    /// The queue (`default` when absent).
    queue: Option<String>,
    /// `audio` or `video`.
    #[serde(rename = "type")]
    call_type: Option<String>,
}

/// 201 with `data`.
fn created(data: impl serde::Serialize) -> Response {
    (StatusCode::CREATED, axum::Json(Success::new(data))).into_response()
}

/// Joins a queue. Customers only. The caller hears `queue:position_update` as their
/// place changes and `queue:your_turn` when a representative is given their call.
#[utoipa::path(
    post,
    path = "/api/v1/queue/join",
    tag = "queues",
    security(("bearer" = [])),
    request_body = JoinRequest,
    responses(
        (status = 201, description = "The caller's place", body = Success<EntryView>),
        (status = 400, description = "`VALIDATION_ERROR` (`field: type`): not `audio` or `video`", body = ErrorBody),
        (status = 403, description = "`FORBIDDEN`: representatives and admins do not join queues", body = ErrorBody),
        (status = 404, description = "`QUEUE_NOT_FOUND`", body = ErrorBody),
        (status = 409, description = "`ALREADY_IN_QUEUE`: the caller has a place already", body = ErrorBody),
    )
)]
pub async fn join(
    State(state): State<AppState>,
    Seen(me): Seen,
    JsonBody(body): JsonBody<JoinRequest>,
) -> Result<Response, Failure> {
    let call_type = parse_call_type(body.call_type.as_deref())?;
    let entry = state.queue.join(&me, body.queue, call_type, false).await?;
    Ok(created(entry))
}

/// The caller's place in line.
#[utoipa::path(
    get,
    path = "/api/v1/queue/position",
    tag = "queues",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's open place (`waiting` or `assigned`)", body = Success<EntryView>),
        (status = 404, description = "`NOT_IN_QUEUE`", body = ErrorBody),
    )
)]
pub async fn position(State(state): State<AppState>, Seen(me): Seen) -> ApiResult {
    ok(state.queue.position(&me.id).await?)
}

/// The body of a leave: no fields.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct LeaveRequest {}

/// Leaves the line (status `left`).
#[utoipa::path(
    post,
    path = "/api/v1/queue/leave",
    tag = "queues",
    security(("bearer" = [])),
    request_body = Option<LeaveRequest>,
    responses(
        (status = 200, description = "The place, `left`", body = Success<EntryView>),
        (status = 404, description = "`NOT_IN_QUEUE`", body = ErrorBody),
        (status = 409, description = "`QUEUE_ENTRY_ASSIGNED`: a representative has the call already; end the call instead", body = ErrorBody),
    )
)]
pub async fn leave(
    State(state): State<AppState>,
    Seen(me): Seen,
    JsonBody(LeaveRequest {}): JsonBody<LeaveRequest>,
) -> ApiResult {
    ok(state.queue.leave(&me.id).await?)
}

/// Asks to be called back: the caller keeps their place without waiting online
/// (never abandoned), and when a representative is free the call rings the
/// caller. Without a place, joins (`type` required) with a callback asked for.
#[utoipa::path(
    post,
    path = "/api/v1/queue/callback",
    tag = "queues",
    security(("bearer" = [])),
    request_body = Option<JoinRequest>,
    responses(
        (status = 200, description = "The place, `callback: true`", body = Success<EntryView>),
        (status = 201, description = "Joined with a callback asked for", body = Success<EntryView>),
        (status = 400, description = "`VALIDATION_ERROR` (`field: type`): no place in line, and no valid `type`", body = ErrorBody),
        (status = 403, description = "`FORBIDDEN`: representatives and admins do not join queues", body = ErrorBody),
        (status = 404, description = "`QUEUE_NOT_FOUND`", body = ErrorBody),
        (status = 409, description = "`QUEUE_ENTRY_ASSIGNED`: a representative has the call already", body = ErrorBody),
    )
)]
pub async fn callback(
    State(state): State<AppState>,
    Seen(me): Seen,
    JsonBody(body): JsonBody<JoinRequest>,
) -> Result<Response, Failure> {
    let (entry, joined) = state
        .queue
        .callback(&me, body.queue, body.call_type.as_deref())
        .await?;
    Ok(if joined {
        created(entry)
    } else {
        axum::Json(Success::new(entry)).into_response()
    })
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatsQuery {
    /// One queue's figures (every queue's when absent).
    queue: Option<String>,
}

/// Figures of the last 24 hours per queue and per representative. Representatives
/// and admins only.
#[utoipa::path(
    get,
    path = "/api/v1/queue/stats",
    tag = "queues",
    security(("bearer" = ["representative"]), ("bearer" = ["admin"])),
    params(StatsQuery),
    responses(
        (status = 200, description = "Figures", body = Success<QueueStats>),
        (status = 400, description = "`VALIDATION_ERROR`: a malformed query", body = ErrorBody),
        (status = 403, description = "`FORBIDDEN`: customers", body = ErrorBody),
        (status = 404, description = "`QUEUE_NOT_FOUND`", body = ErrorBody),
    )
)]
pub async fn stats(
    State(state): State<AppState>,
    Seen(me): Seen,
    query: Result<Query<StatsQuery>, QueryRejection>,
) -> ApiResult {
    let Query(query) = query.map_err(|e| Failure::invalid("query", e.body_text()))?;
    ok(state.queue.stats(&me, query.queue.as_deref()).await?)
}

/// The queues.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct QueueList {
    queues: Vec<QueueInfo>,
}

/// Every queue. Anyone.
#[utoipa::path(
    get,
    path = "/api/v1/queues",
    tag = "queues",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The queues, by name", body = Success<QueueList>),
    )
)]
pub async fn list(State(state): State<AppState>, Auth(_): Auth) -> ApiResult {
    ok(QueueList {
        queues: state.queue.queues().await?,
    })
}

/// A new queue.
#[derive(Debug, Deserialize, ToSchema)]
pub struct NewQueue {
    /// 1 to 64 letters, digits, `.`, `_`, `-`.
    name: String,
    /// Up to 500 characters.
    description: Option<String>,
}

/// The queue made.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct QueueData {
    queue: QueueInfo,
}

/// Creates a queue. Admins only.
#[utoipa::path(
    post,
    path = "/api/v1/queues",
    tag = "queues",
    security(("bearer" = ["admin"])),
    request_body = NewQueue,
    responses(
        (status = 201, description = "The queue", body = Success<QueueData>),
        (status = 400, description = "`VALIDATION_ERROR` (`field: name` or `description`)", body = ErrorBody),
        (status = 403, description = "`FORBIDDEN`: not an admin", body = ErrorBody),
        (status = 409, description = "`QUEUE_EXISTS`", body = ErrorBody),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    Seen(me): Seen,
    JsonBody(body): JsonBody<NewQueue>,
) -> Result<Response, Failure> {
    let queue = state
        .queue
        .create_queue(&me, body.name, body.description)
        .await?;
    Ok(created(QueueData { queue }))
}
