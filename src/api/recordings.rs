//! `/api/v1/calls/…/recording` and `/api/v1/calls/recordings`: starting, stopping,
//! listing, downloading (with Range) and deleting call recordings. Files are streamed
//! from RECORDINGS_DIR, never read whole into memory, and only to those the recording
//! service lets see them.

use std::path::Path;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::calls::{Pagination, page_bounds};
use super::docs::Success;
use super::error::ErrorBody;
use super::extract::{Auth, CallIdPath, JsonBody};
use super::{ApiResult, AppState, created, ok};
use crate::recordings::{Recording, parse_format};
use crate::store::recordings::RecordingFilter;
use crate::wire::Failure;
use crate::wire::views::RecordingView;

/// The body of a start: optional.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct RecordingStartRequest {
    /// `webm` (the default) is the only format.
    format: Option<String>,
}

/// One recording.
#[derive(Debug, Serialize, ToSchema)]
pub struct RecordingData<'a> {
    recording: RecordingView<'a>,
}

fn recording_data(r: &Recording) -> RecordingData<'_> {
    RecordingData {
        recording: RecordingView::from(r),
    }
}

/// Starts recording the call (RECORDING_POLICY says who may: the initiator by
/// default). Members are told with `call:recording_started`.
#[utoipa::path(
    post,
    path = "/api/v1/calls/{callId}/recording/start",
    tag = "recordings",
    security(("bearer" = []), ("bearer" = ["admin"])),
    params(CallIdPath),
    request_body = Option<RecordingStartRequest>,
    responses(
        (status = 201, description = "Recording", body = Success<RecordingData>),
        (status = 400, description = "`VALIDATION_ERROR` (`field: format`): not `webm`", body = ErrorBody),
        (status = 403, description = "`FORBIDDEN`: RECORDING_POLICY does not let the caller record", body = ErrorBody),
        (status = 409, description = "`RECORDING_ACTIVE`: the call is being recorded already; `RECORDING_UNAVAILABLE`: a `p2p` call's media never reaches the server", body = ErrorBody),
        (status = 500, description = "`RECORDING_FAILED`: the file cannot be written; the recording is `failed` and members are told (`call:recording_stopped`)", body = ErrorBody),
    )
)]
pub async fn start(
    State(state): State<AppState>,
    Auth(me): Auth,
    CallIdPath(id): CallIdPath,
    JsonBody(body): JsonBody<RecordingStartRequest>,
) -> Result<Response, Failure> {
    let recording = state
        .recordings
        .start(&me.id, me.admin, id, body.format.as_deref())
        .await?;
    created(recording_data(&recording))
}

/// The body of a stop: no fields (read so that a non-JSON body is refused as elsewhere).
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct RecordingStopRequest {}

/// Stops the call's running recording; its file is then finished (`processing`,
/// then `completed` or `failed`). Members are told with `call:recording_stopped`.
#[utoipa::path(
    post,
    path = "/api/v1/calls/{callId}/recording/stop",
    tag = "recordings",
    security(("bearer" = []), ("bearer" = ["admin"])),
    params(CallIdPath),
    request_body = Option<RecordingStopRequest>,
    responses(
        (status = 200, description = "Stopped: `processing`", body = Success<RecordingData>),
        (status = 403, description = "`FORBIDDEN`: RECORDING_POLICY does not let the caller", body = ErrorBody),
        (status = 404, description = "`RECORDING_NOT_FOUND`: nothing is being recorded", body = ErrorBody),
    )
)]
pub async fn stop(
    State(state): State<AppState>,
    Auth(me): Auth,
    CallIdPath(id): CallIdPath,
    JsonBody(RecordingStopRequest {}): JsonBody<RecordingStopRequest>,
) -> ApiResult {
    let recording = state.recordings.stop(&me.id, me.admin, id).await?;
    ok(recording_data(&recording))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct RecordingQuery {
    /// `true`: the file of the latest completed recording (or of `recordingId`),
    /// instead of the list.
    download: Option<bool>,
    /// A recording of this call.
    recording_id: Option<String>,
}

/// A call's recordings.
#[derive(Debug, Serialize, ToSchema)]
pub struct RecordingList<'a> {
    recordings: Vec<RecordingView<'a>>,
}

/// The call's recordings, newest first; with `download=true`, the file of its latest
/// completed one (or of `recordingId`), with Range support. For members who joined
/// the call at some time, and admins.
#[utoipa::path(
    get,
    path = "/api/v1/calls/{callId}/recording",
    tag = "recordings",
    security(("bearer" = []), ("bearer" = ["admin"])),
    params(CallIdPath, RecordingQuery),
    responses(
        (status = 200, description = "The recordings, or the whole file (`Accept-Ranges: bytes`)", content(
            (Success<RecordingList> = "application/json"),
            (Vec<u8> = "video/webm"),
        )),
        (status = 206, description = "The bytes of the `Range` asked for (`Content-Range`)", content_type = "video/webm", body = Vec<u8>),
        (status = 400, description = "`VALIDATION_ERROR`: `download` or `recordingId` malformed", body = ErrorBody),
        (status = 403, description = "`FORBIDDEN`: a member who never joined the call", body = ErrorBody),
        (status = 404, description = "`RECORDING_NOT_FOUND`: no such completed recording (a deleted one included)", body = ErrorBody),
        (status = 409, description = "`RECORDING_ELSEWHERE`: a `livekit` call's recording, stored by LiveKit Egress at its `location`", body = ErrorBody),
        (status = 416, description = "`RANGE_NOT_SATISFIABLE`: the range starts past the file's end (`Content-Range: bytes */size`)", body = ErrorBody),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    Auth(me): Auth,
    CallIdPath(id): CallIdPath,
    query: Result<Query<RecordingQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, Failure> {
    let Query(query) = query.map_err(|e| Failure::invalid("query", e.body_text()))?;
    let recording = recording_id(query.recording_id.as_deref())?;
    if query.download != Some(true) {
        let recordings = state.recordings.list(&me.id, me.admin, id).await?;
        let list = RecordingList {
            recordings: recordings.iter().map(RecordingView::from).collect(),
        };
        return Ok(axum::Json(Success::new(list)).into_response());
    }
    let (found, path) = state
        .recordings
        .download(&me.id, me.admin, id, recording)
        .await?;
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    serve_file(&path, &format!("{}.webm", found.id), range).await
}

/// Deletes the call's recordings (or `recordingId`): files removed, rows `deleted`.
/// For those the policy lets record (and admins); one still being written is refused.
#[utoipa::path(
    delete,
    path = "/api/v1/calls/{callId}/recording",
    tag = "recordings",
    security(("bearer" = []), ("bearer" = ["admin"])),
    params(CallIdPath, RecordingQuery),
    responses(
        (status = 200, description = "The recordings deleted", body = Success<RecordingList>),
        (status = 400, description = "`VALIDATION_ERROR`: `recordingId` is not a UUID", body = ErrorBody),
        (status = 403, description = "`FORBIDDEN`: RECORDING_POLICY does not let the caller, or they never joined", body = ErrorBody),
        (status = 404, description = "`RECORDING_NOT_FOUND`: no such recording of this call", body = ErrorBody),
        (status = 409, description = "`RECORDING_ACTIVE`: a recording still being written", body = ErrorBody),
    )
)]
pub async fn delete(
    State(state): State<AppState>,
    Auth(me): Auth,
    CallIdPath(id): CallIdPath,
    query: Result<Query<RecordingQuery>, QueryRejection>,
) -> ApiResult {
    let Query(query) = query.map_err(|e| Failure::invalid("query", e.body_text()))?;
    let recording = recording_id(query.recording_id.as_deref())?;
    let deleted = state
        .recordings
        .delete(&me.id, me.admin, id, recording)
        .await?;
    ok(RecordingList {
        recordings: deleted.iter().map(RecordingView::from).collect(),
    })
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct RecordingsQuery {
    /// From 1; default 1.
    #[param(minimum = 1)]
    page: Option<i64>,
    /// 1 to 100; default 50.
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
    /// Recordings started at or after this time (RFC 3339, or a date: its start, UTC).
    date_from: Option<String>,
    /// Recordings started before this time (RFC 3339, or a date: up to its end, UTC).
    date_to: Option<String>,
    /// `webm`.
    format: Option<String>,
}

/// A page of recordings.
#[derive(Debug, Serialize, ToSchema)]
pub struct RecordingPage<'a> {
    recordings: Vec<RecordingView<'a>>,
    pagination: Pagination,
}

/// The recordings of the caller's calls (of calls they joined), newest first, a page
/// at a time; every recording for an admin.
#[utoipa::path(
    get,
    path = "/api/v1/calls/recordings",
    tag = "recordings",
    security(("bearer" = []), ("bearer" = ["admin"])),
    params(RecordingsQuery),
    responses(
        (status = 200, description = "A page of recordings, newest first", body = Success<RecordingPage>),
        (status = 400, description = "`VALIDATION_ERROR`: `page`, `limit`, `dateFrom`, `dateTo` or `format` out of range or malformed", body = ErrorBody),
        (status = 500, description = "`INTERNAL_ERROR`", body = ErrorBody),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    Auth(me): Auth,
    query: Result<Query<RecordingsQuery>, QueryRejection>,
) -> ApiResult {
    let Query(query) = query.map_err(|e| Failure::invalid("query", e.body_text()))?;
    let page = query.page.unwrap_or(1);
    if !(1..=1_000_000).contains(&page) {
        return Err(Failure::invalid("page", "must be from 1 to 1000000"));
    }
    let (limit, _) = page_bounds(query.limit, None)?;
    let offset = (page - 1) * limit;
    let (limit, offset) = page_bounds(Some(limit), Some(offset))
        .map_err(|_| Failure::invalid("page", "is past the last page there can be"))?;
    if query.format.is_some() {
        parse_format(query.format.as_deref())?;
    }
    let filter = RecordingFilter {
        from: query
            .date_from
            .as_deref()
            .map(|t| moment("dateFrom", t, false))
            .transpose()?,
        to: query
            .date_to
            .as_deref()
            .map(|t| moment("dateTo", t, true))
            .transpose()?,
        format: query.format,
    };
    if let (Some(from), Some(to)) = (filter.from, filter.to) {
        if to < from {
            return Err(Failure::invalid("dateTo", "must not be before dateFrom"));
        }
    }
    let (recordings, total) = state
        .recordings
        .page(&me.id, me.admin, &filter, limit, offset)
        .await?;
    ok(RecordingPage {
        recordings: recordings.iter().map(RecordingView::from).collect(),
        pagination: Pagination::new(limit, offset, total),
    })
}

/// `recordingId` of a query: a UUID, or 400.
fn recording_id(raw: Option<&str>) -> Result<Option<Uuid>, Failure> {
    raw.map(|text| {
        Uuid::try_parse(text).map_err(|_| Failure::invalid("recordingId", "must be a UUID"))
    })
    .transpose()
}

/// An RFC 3339 time, or a date (`YYYY-MM-DD`, UTC): its start, or with `end` the
/// start of the next day (bounds are exclusive at the end).
fn moment(field: &str, text: &str, end: bool) -> Result<DateTime<Utc>, Failure> {
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Ok(time.with_timezone(&Utc));
    }
    let day = NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map_err(|_| Failure::invalid(field, "must be an RFC 3339 time or a YYYY-MM-DD date"))?;
    let day = if end { day.succ_opt() } else { Some(day) };
    day.and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .ok_or_else(|| Failure::invalid(field, "is out of range"))
}

/// What a `Range` header asks of a file of `size` bytes.
#[derive(Debug, PartialEq, Eq)]
enum Wanted {
    /// No range, or one this server does not serve (another unit, several ranges, a
    /// malformed one): the whole file, as HTTP allows.
    Whole,
    /// Bytes `start..=end`.
    Part { start: u64, end: u64 },
    /// A range starting past the end.
    Unsatisfiable,
}

fn wanted(range: Option<&str>, size: u64) -> Wanted {
    let Some(spec) = range.and_then(|r| r.trim().strip_prefix("bytes=")) else {
        return Wanted::Whole;
    };
    if spec.contains(',') {
        return Wanted::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Wanted::Whole;
    };
    let (first, last) = (first.trim(), last.trim());
    let number = |s: &str| s.parse::<u64>().ok();
    if first.is_empty() {
        // `bytes=-n`: the last n bytes.
        return match number(last) {
            Some(0) => Wanted::Unsatisfiable,
            Some(_) if size == 0 => Wanted::Unsatisfiable,
            Some(n) => Wanted::Part {
                start: size.saturating_sub(n),
                end: size - 1,
            },
            None => Wanted::Whole,
        };
    }
    let Some(start) = number(first) else {
        return Wanted::Whole;
    };
    // `bytes=n-`: to the end.
    let end = match last {
        "" => u64::MAX,
        last => match number(last) {
            Some(end) if end >= start => end,
            _ => return Wanted::Whole,
        },
    };
    if start >= size {
        return Wanted::Unsatisfiable;
    }
    Wanted::Part {
        start,
        end: end.min(size - 1),
    }
}

/// Streams `path` (or the part `range` asks for) as `video/webm`.
async fn serve_file(path: &Path, name: &str, range: Option<&str>) -> Result<Response, Failure> {
    let mut file = match tokio::fs::File::open(path).await {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::error!(file = %path.display(), "a completed recording's file is missing");
            return Err(Failure::new(
                StatusCode::NOT_FOUND,
                "RECORDING_NOT_FOUND",
                "the recording's file is missing",
            ));
        }
        Err(e) => return Err(Failure::internal(&e)),
    };
    let size = file
        .metadata()
        .await
        .map_err(|e| Failure::internal(&e))?
        .len();
    let (status, start, length) = match wanted(range, size) {
        Wanted::Whole => (StatusCode::OK, 0, size),
        Wanted::Part { start, end } => (StatusCode::PARTIAL_CONTENT, start, end - start + 1),
        Wanted::Unsatisfiable => {
            let mut refused = Failure::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "RANGE_NOT_SATISFIABLE",
                format!("the file has {size} bytes"),
            )
            .into_response();
            refused.headers_mut().insert(
                header::CONTENT_RANGE,
                header_value(&format!("bytes */{size}")),
            );
            return Ok(refused);
        }
    };
    file.seek(std::io::SeekFrom::Start(start))
        .await
        .map_err(|e| Failure::internal(&e))?;
    let body = Body::from_stream(ReaderStream::new(file.take(length)));
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("video/webm"));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    headers.insert(
        header::CONTENT_DISPOSITION,
        header_value(&format!("attachment; filename=\"{name}\"")),
    );
    if status == StatusCode::PARTIAL_CONTENT {
        let end = start + length - 1;
        headers.insert(
            header::CONTENT_RANGE,
            header_value(&format!("bytes {start}-{end}/{size}")),
        );
    }
    Ok(response)
}

/// A header value made of ASCII this module formats.
fn header_value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_read_as_http_says() {
        let part = |start, end| Wanted::Part { start, end };
        assert_eq!(wanted(None, 100), Wanted::Whole);
        assert_eq!(wanted(Some("bytes=0-9"), 100), part(0, 9));
        assert_eq!(wanted(Some("bytes=90-"), 100), part(90, 99));
        assert_eq!(wanted(Some("bytes=90-500"), 100), part(90, 99));
        assert_eq!(wanted(Some("bytes=-10"), 100), part(90, 99));
        assert_eq!(wanted(Some("bytes=-500"), 100), part(0, 99));
        assert_eq!(wanted(Some("bytes=100-"), 100), Wanted::Unsatisfiable);
        assert_eq!(wanted(Some("bytes=-0"), 100), Wanted::Unsatisfiable);
        assert_eq!(wanted(Some("bytes=5-2"), 100), Wanted::Whole);
        assert_eq!(wanted(Some("bytes=0-1,5-6"), 100), Wanted::Whole);
        assert_eq!(wanted(Some("items=0-1"), 100), Wanted::Whole);
        assert_eq!(wanted(Some("bytes=x-1"), 100), Wanted::Whole);
    }
}
