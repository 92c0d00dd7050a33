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
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{
    AnyOfBuilder, ArrayBuilder, ArrayItems, ObjectBuilder, Schema, Type,
};
use utoipa::{IntoParams, PartialSchema, ToSchema};

use super::calls::{Pagination, page_bounds};
use super::docs::Success;
use super::error::ErrorBody;
use super::extract::{Auth, JsonBody};
use super::{ApiResult, AppState, ok};
use crate::phone::call::PhoneCallState;
use crate::phone::events::rfc3339;
use crate::phone::{HistoryPage, PhoneError};
use crate::store::phone::{Ingested, PhoneHistoryRow};
use crate::wire::Failure;

/// Largest body of `POST …/events`: a full batch (1000 events of about 250 bytes)
/// with room to spare.
pub const BODY_LIMIT: usize = 1024 * 1024;

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

/// The body of `POST …/events`: one event or an array of 1 to 1000, each in either
/// reference service's shape. `crate::phone::events` reads it field by field, to name
/// the first bad one; [`PartialSchema`] describes it for the document.
#[derive(Debug, Deserialize)]
#[serde(transparent)]
pub struct PhoneEvents(Value);

impl PartialSchema for PhoneEvents {
    fn schema() -> RefOr<Schema> {
        let text = |description: &str| {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .description(Some(description))
        };
        let id = |description: &str| text(description).min_length(Some(1)).max_length(Some(128));
        let seed_002 = ObjectBuilder::new()
            .description(Some("Seed 002's event"))
            .property("event_id", id("The idempotency key"))
            .property("call_id", id("The telephone system's id of the call"))
            .property(
                "event",
                text("`INITIATE`, `ANSWER` or `DISCONNECT` (any case)"),
            )
            .property("calling_number", text("A phone number, stored in E.164"))
            .property("called_number", text("A phone number, stored in E.164"))
            .property("created_at", text("RFC 3339, with an offset"))
            .required("event_id")
            .required("call_id")
            .required("event")
            .required("calling_number")
            .required("called_number")
            .required("created_at");
        let seed_000 = ObjectBuilder::new()
            .description(Some(
                "Seed 000's call: its start, and its end once `ended` is given",
            ))
            .property("call_id", id("The telephone system's id of the call"))
            .property("from", text("The calling number"))
            .property("to", text("The called number"))
            .property("started", text("RFC 3339, with an offset"))
            .property("ended", text("RFC 3339, not before `started`"))
            .required("call_id")
            .required("from")
            .required("to")
            .required("started");
        let event: Schema = AnyOfBuilder::new().item(seed_002).item(seed_000).into();
        let batch = ArrayBuilder::new()
            .items(ArrayItems::RefOrSchema(Box::new(event.clone().into())))
            .min_items(Some(1))
            .max_items(Some(1000));
        AnyOfBuilder::new().item(event).item(batch).into()
    }
}

impl ToSchema for PhoneEvents {}

/// What a request of events did.
#[derive(Debug, Serialize, ToSchema)]
pub struct IngestedData {
    /// Events in the request (a seed 000 call with `ended` is two).
    received: usize,
    /// Events new to Huddle.
    stored: usize,
    /// Events known already by their id: changed nothing.
    duplicates: usize,
    /// Each call the request named, as it is now.
    calls: Vec<PhoneCallNow>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PhoneCallNow {
    call_id: String,
    state: PhoneCallState,
    /// Seconds from the start to the end, once both are known.
    duration: Option<i64>,
}

impl From<&Ingested> for IngestedData {
    fn from(done: &Ingested) -> Self {
        Self {
            received: done.stored + done.duplicates,
            stored: done.stored,
            duplicates: done.duplicates,
            calls: done
                .calls
                .iter()
                .map(|(id, call)| PhoneCallNow {
                    call_id: id.clone(),
                    state: call.state,
                    duration: call.duration,
                })
                .collect(),
        }
    }
}

/// The 403 of the phone endpoints.
const BACKEND_ONLY: &str =
    "`FORBIDDEN`: a user's token (phone calls need `role: service` or `admin`)";

/// Takes in a telephone system's events: one or an array of up to 1000, stored all or
/// none.
#[utoipa::path(
    post,
    path = "/api/v1/phone/events",
    tag = "phone",
    security(("bearer" = ["service"]), ("bearer" = ["admin"])),
    request_body = PhoneEvents,
    responses(
        (status = 200, description = "Stored (or known already)", body = Success<IngestedData>),
        (status = 400, description = "`VALIDATION_ERROR` naming the field (`[3].called_number`): nothing of the request was stored", body = ErrorBody),
        (status = 403, description = BACKEND_ONLY, body = ErrorBody),
        (status = 500, description = "`INTERNAL_ERROR`", body = ErrorBody),
    )
)]
pub async fn ingest(
    State(state): State<AppState>,
    _: Backend,
    JsonBody(PhoneEvents(body)): JsonBody<PhoneEvents>,
) -> ApiResult {
    let done = state.phone.ingest(&body).await?;
    ok(IngestedData::from(&done))
}

/// Seed 000's and seed 002's answer to a failure: the status's reason phrase, with
/// Huddle's message and field, which their clients ignore.
#[derive(Debug, Serialize, ToSchema)]
pub struct SeedError {
    /// `Bad Request`, `Unauthorized`, `Forbidden`, `Internal Server Error`, ...
    error: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<String>,
}

impl SeedError {
    pub fn new(error: &'static str) -> Self {
        Self {
            error,
            message: None,
            field: None,
        }
    }
}

/// Seed 000's answer to a stored request.
#[derive(Debug, Serialize, ToSchema)]
pub struct SeedOk {
    /// `ok`.
    status: &'static str,
}

/// Seed 000's path for phone events: as `POST /api/v1/phone/events`, answered
/// `{ "status": "ok" }`, failures as `{ "error": "Bad Request", "message", "field"? }`.
#[utoipa::path(
    post,
    path = "/events",
    tag = "seed paths",
    security(("bearer" = ["service"]), ("bearer" = ["admin"])),
    request_body = PhoneEvents,
    responses(
        (status = 200, description = "Stored (or known already)", body = SeedOk),
        (status = 400, description = "`Bad Request`: a bad event, named in `field`; nothing stored", body = SeedError),
        (status = 401, description = "`Unauthorized`", body = SeedError),
        (status = 403, description = "`Forbidden`: a user's token", body = SeedError),
        (status = 413, description = "`Payload Too Large`", body = SeedError),
        (status = 415, description = "`Unsupported Media Type`", body = SeedError),
        (status = 429, description = "Over a rate limit (`Retry-After`): `{ error: \"Too Many Requests\" }` \
            past a user's, Huddle's error shape (`RATE_LIMITED`) past an address's"),
        (status = 500, description = "`Internal Server Error`", body = SeedError),
    )
)]
pub async fn ingest_seed_000(
    State(state): State<AppState>,
    backend: Result<Backend, Failure>,
    body: Result<JsonBody<PhoneEvents>, Failure>,
) -> Response {
    let result = async {
        backend?;
        let JsonBody(PhoneEvents(body)) = body?;
        state.phone.ingest(&body).await?;
        Ok::<_, Failure>(())
    };
    match result.await {
        Ok(()) => Json(SeedOk { status: "ok" }).into_response(),
        Err(failure) => seed_error(failure),
    }
}

/// A failure as the reference services answer it: `{ "error": <reason phrase> }`,
/// plus Huddle's message and field, which their clients ignore.
fn seed_error(failure: Failure) -> Response {
    let status = failure.status;
    let mut body = SeedError::new(status.canonical_reason().unwrap_or("Error"));
    if !status.is_server_error() {
        body.message = Some(failure.message);
        body.field = failure.field;
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

/// Phone calls left hanging.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PhoneMetrics {
    /// Calls started PHONE_STALE_AFTER ago or more and not ended.
    latest_stale_calls: i64,
    stale_after_seconds: i64,
}

/// The phone calls left hanging: `{ latestStaleCalls, staleAfterSeconds }`.
#[utoipa::path(
    get,
    path = "/api/v1/phone/metrics",
    tag = "phone",
    security(("bearer" = ["service"]), ("bearer" = ["admin"])),
    responses(
        (status = 200, description = "The stale calls", body = Success<PhoneMetrics>),
        (status = 403, description = BACKEND_ONLY, body = ErrorBody),
        (status = 500, description = "`INTERNAL_ERROR`", body = ErrorBody),
    )
)]
pub async fn metrics(State(state): State<AppState>, _: Backend) -> ApiResult {
    let stale = state
        .phone
        .stale_calls()
        .await
        .map_err(|e| Failure::internal(&e))?;
    ok(PhoneMetrics {
        latest_stale_calls: stale,
        stale_after_seconds: state.phone.stale_after().num_seconds(),
    })
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
    /// Calls placed at or after this RFC 3339 time.
    from: Option<String>,
    /// Calls placed before this RFC 3339 time.
    to: Option<String>,
}

/// `{number}`: a phone number in any common format (`+1 415-555-2671`,
/// `tel:+14155552671`, or national with PHONE_DEFAULT_REGION).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct NumberPath {
    #[param(example = "+14155552671")]
    number: String,
}

/// The page a history request asks for, checked.
fn history_page(query: HistoryRequest) -> Result<HistoryPage, Failure> {
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
type NumberRequest = Result<Path<NumberPath>, axum::extract::rejection::PathRejection>;
type HistoryRequest = Result<Query<HistoryQuery>, QueryRejection>;

async fn history_of(
    state: &AppState,
    number: NumberRequest,
    query: HistoryRequest,
) -> Result<(Vec<PhoneHistoryRow>, i64, HistoryPage), Failure> {
    let Path(NumberPath { number }) =
        number.map_err(|_| Failure::invalid("number", "must be a phone number"))?;
    let page = history_page(query)?;
    let (rows, total) = state.phone.history(&number, page).await?;
    Ok((rows, total, page))
}

/// A page of a number's history.
#[derive(Debug, Serialize, ToSchema)]
pub struct PhoneHistory {
    calls: Vec<PhoneHistoryRow>,
    pagination: Pagination,
}

/// The ended calls of a number, newest first, as seed 002's rows, paginated like the
/// call history.
#[utoipa::path(
    get,
    path = "/api/v1/phone/history/{number}",
    tag = "phone",
    security(("bearer" = ["service"]), ("bearer" = ["admin"])),
    params(NumberPath, HistoryQuery),
    responses(
        (status = 200, description = "A page of the number's ended calls, newest first", body = Success<PhoneHistory>),
        (status = 400, description = "`VALIDATION_ERROR`: a bad number, `limit`, `offset`, `from` or `to`", body = ErrorBody),
        (status = 403, description = BACKEND_ONLY, body = ErrorBody),
        (status = 500, description = "`INTERNAL_ERROR`", body = ErrorBody),
    )
)]
pub async fn history(
    State(state): State<AppState>,
    _: Backend,
    number: NumberRequest,
    query: HistoryRequest,
) -> ApiResult {
    let (rows, total, page) = history_of(&state, number, query).await?;
    ok(PhoneHistory {
        calls: rows,
        pagination: Pagination::new(page.limit, page.offset, total),
    })
}

/// Seed 002's path for a number's history: the same rows, as a bare array.
#[utoipa::path(
    get,
    path = "/call-history/{number}",
    tag = "seed paths",
    security(("bearer" = ["service"]), ("bearer" = ["admin"])),
    params(NumberPath, HistoryQuery),
    responses(
        (status = 200, description = "The number's ended calls, newest first", body = Vec<PhoneHistoryRow>),
        (status = 400, description = "`VALIDATION_ERROR`", body = ErrorBody),
        (status = 403, description = BACKEND_ONLY, body = ErrorBody),
        (status = 500, description = "`INTERNAL_ERROR`", body = ErrorBody),
    )
)]
pub async fn history_seed_002(
    State(state): State<AppState>,
    _: Backend,
    number: NumberRequest,
    query: HistoryRequest,
) -> Result<Json<Vec<PhoneHistoryRow>>, Failure> {
    let (rows, _, _) = history_of(&state, number, query).await?;
    Ok(Json(rows))
}

/// Seed 002's path for a number's history, as its clients write it.
#[utoipa::path(
    get,
    path = "/call-history/{number}/",
    tag = "seed paths",
    security(("bearer" = ["service"]), ("bearer" = ["admin"])),
    params(NumberPath, HistoryQuery),
    responses(
        (status = 200, description = "The number's ended calls, newest first", body = Vec<PhoneHistoryRow>),
        (status = 400, description = "`VALIDATION_ERROR`", body = ErrorBody),
        (status = 403, description = BACKEND_ONLY, body = ErrorBody),
        (status = 500, description = "`INTERNAL_ERROR`", body = ErrorBody),
    )
)]
pub async fn history_seed_002_slash(
    state: State<AppState>,
    backend: Backend,
    number: NumberRequest,
    query: HistoryRequest,
) -> Result<Json<Vec<PhoneHistoryRow>>, Failure> {
    history_seed_002(state, backend, number, query).await
}
