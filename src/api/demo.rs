//! The demo page: a reference client of the SFU protocol, built into the binary so
//! that a fresh `cargo run` serves it at `/`, with the official Socket.IO client.

use std::sync::LazyLock;

use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use super::docs::Success;
use super::error::ErrorBody;
use super::extract::JsonBody;
use super::{ApiResult, AppState, ok};
use crate::auth::{self, Claims};
use crate::wire::{Failure, id_text};

const PAGE: &str = include_str!("../../web/index.html");
/// socket.io-client's browser bundle (MIT), as published on npm.
const SOCKET_IO_CLIENT: &str = include_str!("../../web/socket.io.min.js");
/// Demo tokens last a day.
const DEMO_TOKEN_TTL: i64 = 86_400;

/// The demo page's Content-Security-Policy: its own inline script and style (by
/// hash) and the Socket.IO client from this server, requests to this server only
/// (`fetch`, Socket.IO polling and WebSocket), nothing else; WebRTC is not a fetch
/// and needs no directive.
static PAGE_CSP: LazyLock<String> = LazyLock::new(|| {
    let hash = |open: &str, close: &str| {
        let inline = PAGE
            .split_once(open)
            .and_then(|(_, rest)| rest.split_once(close))
            .map_or("", |(inline, _)| inline);
        base64::engine::general_purpose::STANDARD.encode(Sha256::digest(inline))
    };
    format!(
        "default-src 'none'; script-src 'self' 'sha256-{}'; style-src 'sha256-{}'; \
         connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        hash("<script>", "</script>"),
        hash("<style>", "</style>"),
    )
});

/// The demo page.
#[utoipa::path(
    get,
    path = "/",
    tag = "pages",
    responses((status = 200, description = "The demo page", content_type = "text/html", body = String))
)]
pub async fn page() -> impl IntoResponse {
    (
        [(header::CONTENT_SECURITY_POLICY, PAGE_CSP.as_str())],
        Html(PAGE),
    )
}

/// The demo page, at `/demo` too.
#[utoipa::path(
    get,
    path = "/demo",
    tag = "pages",
    responses((status = 200, description = "The demo page", content_type = "text/html", body = String))
)]
pub async fn demo_page() -> impl IntoResponse {
    page().await
}

/// The official Socket.IO client, for the demo page.
#[utoipa::path(
    get,
    path = "/demo/socket.io.min.js",
    tag = "pages",
    responses((status = 200, description = "The official Socket.IO client the demo page uses", content_type = "text/javascript", body = String))
)]
pub async fn socket_io_client() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        SOCKET_IO_CLIENT,
    )
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DemoTokenRequest {
    user_id: String,
    name: Option<String>,
}

/// A minted token.
#[derive(Debug, Serialize, ToSchema)]
pub struct DemoToken {
    /// A JWT for the user, valid for a day.
    token: String,
}

/// A token for any user id, when demo tokens are on (DEMO_TOKENS).
#[utoipa::path(
    post,
    path = "/demo/token",
    tag = "pages",
    request_body = DemoTokenRequest,
    responses(
        (status = 200, description = "A token for that user", body = Success<DemoToken>),
        (status = 400, description = "`VALIDATION_ERROR`: a bad `userId` or `name`", body = ErrorBody),
        (status = 404, description = "`NOT_FOUND`: demo tokens are off (DEMO_TOKENS)", body = ErrorBody),
    )
)]
pub async fn token(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<DemoTokenRequest>,
) -> ApiResult {
    if !state.demo_tokens {
        return Err(Failure::not_found(
            "demo tokens are off: set DEMO_TOKENS=true, or make tokens with `huddle token`",
        ));
    }
    id_text("userId", &body.user_id)?;
    if let Some(name) = &body.name {
        auth::check_name(name).map_err(|rule| Failure::invalid("name", rule))?;
    }
    let now = state.service.now().timestamp();
    let claims = Claims {
        sub: body.user_id,
        exp: now + DEMO_TOKEN_TTL,
        iat: Some(now),
        nbf: None,
        name: body.name,
        role: None,
    };
    ok(DemoToken {
        token: state.jwt.sign(&claims),
    })
}
