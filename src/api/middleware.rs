//! What every request passes on its way to a handler, outermost first:
//! [`json_errors`] gives every error response the JSON error shape, whoever made it;
//! [`limit_per_ip`] applies the per-IP rate limit; [`limit_sizes`] refuses URIs and
//! header sections too large to be a real client's.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::extract::is_json_media_type;
use crate::ratelimit::ip_key;
use crate::wire::Failure;

/// Longest URI (path and query) accepted. Huddle's own are under 200 bytes; hyper
/// refuses URIs over 64 KiB before any of this code runs, with an empty 414 it writes
/// itself, so this limit sits well below that to answer in the error shape instead.
pub const MAX_URI_LEN: usize = 8 * 1024;
/// Largest header section accepted (names and values). hyper refuses sections over
/// about 400 KiB, or of more than 100 headers, with an empty 431 of its own.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// Most bytes of another layer's plain-text error message passed on to the client.
const MAX_MESSAGE_BYTES: usize = 1024;

/// Rewrites an error response that is not JSON (axum's plain-text rejections, an
/// empty status from any layer) into `{ success: false, error: { code, message } }`,
/// keeping its status and headers (`Allow`, `Retry-After`, ...). A 4xx keeps its text
/// as the message; a 5xx's text is dropped, as for [`Failure::internal`].
pub async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(is_json_media_type);
    if is_json || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = match axum::body::to_bytes(body, MAX_MESSAGE_BYTES).await {
        Ok(bytes) if status.is_client_error() => String::from_utf8(bytes.to_vec()).ok(),
        _ => None,
    };
    let message = text
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| {
            status
                .canonical_reason()
                .unwrap_or("request failed")
                .to_lowercase()
        });
    let mut shaped = Failure::new(status, code_for(status), message).into_response();
    copy_headers(&parts.headers, shaped.headers_mut());
    shaped
}

/// The error code of a status no handler chose a code for.
fn code_for(status: StatusCode) -> &'static str {
    match status {
        StatusCode::NOT_FOUND => "NOT_FOUND",
        StatusCode::METHOD_NOT_ALLOWED => "METHOD_NOT_ALLOWED",
        StatusCode::PAYLOAD_TOO_LARGE => "PAYLOAD_TOO_LARGE",
        StatusCode::URI_TOO_LONG => "URI_TOO_LONG",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "UNSUPPORTED_MEDIA_TYPE",
        StatusCode::TOO_MANY_REQUESTS => "RATE_LIMITED",
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "HEADERS_TOO_LARGE",
        s if s.is_client_error() => "BAD_REQUEST",
        _ => "INTERNAL_ERROR",
    }
}

/// The original response's headers, but for those describing its old body.
fn copy_headers(from: &HeaderMap, to: &mut HeaderMap) {
    for (name, value) in from {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH && !to.contains_key(name)
        {
            to.append(name, value.clone());
        }
    }
}

/// The per-IP rate limit (RATE_LIMIT_IP_*), before any token is read, on every route
/// but `/health` and `/metrics`: probes and scrapers poll those from one address, and
/// neither touches a call. Without a peer address (the router driven in-process,
/// without `into_make_service_with_connect_info`) there is nobody to limit.
pub async fn limit_per_ip(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let exempt = matches!(request.uri().path(), "/health" | "/metrics");
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| ip_key(addr.ip()));
    if let (false, Some(ip)) = (exempt, peer) {
        if let Err(retry) = state.rate_limits.ip.check(&ip, state.service.now()) {
            return Failure::rate_limited(retry).into_response();
        }
    }
    next.run(request).await
}

/// 414 for a URI over [`MAX_URI_LEN`], 431 for headers over [`MAX_HEADER_BYTES`].
pub async fn limit_sizes(request: Request, next: Next) -> Response {
    let uri_len = request
        .uri()
        .path_and_query()
        .map_or(0, |pq| pq.as_str().len());
    if uri_len > MAX_URI_LEN {
        return Failure::new(
            StatusCode::URI_TOO_LONG,
            "URI_TOO_LONG",
            format!("the request URI is over {MAX_URI_LEN} bytes"),
        )
        .into_response();
    }
    let header_bytes: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if header_bytes > MAX_HEADER_BYTES {
        return Failure::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "HEADERS_TOO_LARGE",
            format!("the request headers are over {MAX_HEADER_BYTES} bytes"),
        )
        .into_response();
    }
    next.run(request).await
}
