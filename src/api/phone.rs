//! `/api/v1/phone`: calls of an outside telephone system (see `crate::phone`), for
//! backends only (tokens with `"role": "service"`, or an operator's `"admin"`): the
//! events name anyone's numbers, and a history reads anyone's calls.
//!
//! The reference services' own paths are served too, with their answer shapes:
//! `POST /events` (seed 000: `{ "status": "ok" }`, `{ "error": "Bad Request" }`) and
//! `GET /call-history/:number/` (seed 002: a bare array of rows).

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::calls::page_bounds;
use super::extract::{Auth, JsonBody};
use crate::phone::events::rfc3339;
use crate::phone::{HistoryPage, PhoneError};
use crate::store::phone::{Ingested, PhoneHistoryRow};
use crate::wire::Failure;

/// Largest body of `POST …/events`: a full batch (1000 events of about 250 bytes)
/// with room to spare.
pub const BODY_LIMIT: usize = 1024 * 1024;

type ApiResult = Result<Json<Value>, Failure>;

impl From<PhoneError> for Failure {
    fn from(e: PhoneError) -> Self {
        match e {
            PhoneError::Invalid(e) => Failure::invalid(e.field, e.message),
            PhoneError::Store(e) => Failure::internal(&e),
        }
    }
}

/// A caller whose token is a backend's (`service`) or an operator's
/// (`admin`); 403 for anyone else's, before the body is read.
#[derive(Debug)]
pub struct Backend;

impl FromRequestParts<AppState> for Backend {
    type Rejection = Failure;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Failure> {
        let Auth(me) = Auth::from_request_parts(parts, state).await?;
        if !(me.service || me.admin) {
            return Err(Failure::forbidden(
                "phone calls need a token with \"role\": \"service\" (or \"admin\")",
            ));
        }
        Ok(Backend)
    }
}

/// `POST /api/v1/phone/events`: one event or an array of up to 1000, stored all or
/// none.
pub async fn ingest(
    State(state): State<AppState>,
    _: Backend,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult {
    let done = state.phone.ingest(&body).await?;
    Ok(Json(json!({ "success": true, "data": ingested(&done) })))
}

fn ingested(done: &Ingested) -> Value {
    let calls: Vec<Value> = done
        .calls
        .iter()
        .map(|(id, call)| json!({ "callId": id, "state": call.state, "duration": call.duration }))
        .collect();
    json!({
        "received": done.stored + done.duplicates,
        "stored": done.stored,
        "duplicates": done.duplicates,
        "calls": calls,
    })
}

/// `POST /events` (seed 000's path): as [`ingest`], answered `{ "status": "ok" }`, and
/// failures as `{ "error": "Bad Request", "message", "field"? }`.
pub async fn ingest_seed_000(
    State(state): State<AppState>,
    backend: Result<Backend, Failure>,
    body: Result<JsonBody<Value>, Failure>,
) -> Response {
    let result = async {
        backend?;
        let JsonBody(body) = body?;
        state.phone.ingest(&body).await?;
        Ok::<_, Failure>(())
    };
    match result.await {
        Ok(()) => Json(json!({ "status": "ok" })).into_response(),
        Err(failure) => seed_error(failure),
    }
}

/// A failure as the reference services answer it: `{ "error": <reason phrase> }`,
/// plus Huddle's message and field, which their clients ignore.
fn seed_error(failure: Failure) -> Response {
    let status = failure.status;
    let reason = status.canonical_reason().unwrap_or("Error");
    let mut body = json!({ "error": reason });
    if !status.is_server_error() {
        body["message"] = failure.message.into();
        if let Some(field) = failure.field {
            body["field"] = field.into();
        }
    }
    let mut response = (status, Json(body)).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    if let Some(secs) = failure.retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

/// `GET /api/v1/phone/metrics`: `{ latestStaleCalls, staleAfterSeconds }`.
pub async fn metrics(State(state): State<AppState>, _: Backend) -> ApiResult {
    let stale = state
        .phone
        .stale_calls()
        .await
        .map_err(|e| Failure::internal(&e))?;
    Ok(Json(json!({
        "success": true,
        "data": {
            "latestStaleCalls": stale,
            "staleAfterSeconds": state.phone.stale_after().num_seconds(),
        },
    })))
}

#[derive(Debug, Deserialize)]
pub struct HistoryQuery {
    limit: Option<i64>,
    offset: Option<i64>,
    from: Option<String>,
    to: Option<String>,
}

/// The page a history request asks for, checked.
fn history_page(
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> Result<HistoryPage, Failure> {
    let Query(query) = query.map_err(|e| Failure::invalid("query", e.body_text()))?;
    let (limit, offset) = page_bounds(query.limit, query.offset)?;
    let time = |field: &str, text: Option<String>| {
        text.map(|t| rfc3339(&t).map_err(|message| Failure::invalid(field, message)))
            .transpose()
    };
    let from = time("from", query.from)?;
    let to = time("to", query.to)?;
    if let (Some(from), Some(to)) = (from, to) {
        if to < from {
            return Err(Failure::invalid("to", "must not be before from"));
        }
    }
    Ok(HistoryPage {
        limit,
        offset,
        from,
        to,
    })
}

/// The history of `number`, newest first, and the total.
async fn history_of(
    state: &AppState,
    number: Result<Path<String>, axum::extract::rejection::PathRejection>,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> Result<(Vec<PhoneHistoryRow>, i64, HistoryPage), Failure> {
    let Path(number) = number.map_err(|_| Failure::invalid("number", "must be a phone number"))?;
    let page = history_page(query)?;
    let (rows, total) = state.phone.history(&number, page).await?;
    Ok((rows, total, page))
}

/// `GET /api/v1/phone/history/:number?limit&offset&from&to`: the ended calls of a
/// number, newest first, as seed 002's rows, paginated like the call history.
pub async fn history(
    State(state): State<AppState>,
    _: Backend,
    number: Result<Path<String>, axum::extract::rejection::PathRejection>,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> ApiResult {
    let (rows, total, page) = history_of(&state, number, query).await?;
    Ok(Json(json!({
        "success": true,
        "data": {
            "calls": rows,
            "pagination": { "limit": page.limit, "offset": page.offset, "total": total },
        },
    })))
}

/// `GET /call-history/:number/` (seed 002's path): the same rows as a bare array.
pub async fn history_seed_002(
    State(state): State<AppState>,
    _: Backend,
    number: Result<Path<String>, axum::extract::rejection::PathRejection>,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> Result<Json<Vec<PhoneHistoryRow>>, Failure> {
    let (rows, _, _) = history_of(&state, number, query).await?;
    Ok(Json(rows))
}
