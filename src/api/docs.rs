//! The API's description: the OpenAPI 3.1 document (`GET /api/openapi.json`), made
//! from the handlers' `#[utoipa::path]` attributes and the types they answer with as
//! [`super::app`] registers each route, and Swagger UI over it (`GET /api/docs`),
//! whose files are compiled in (`web/swagger-ui`, see its README) so that no CDN is
//! needed.
//!
//! What the layers in front of every handler may answer (the per-IP limit, size
//! limits, a missing token, a body that is not JSON) is added to each operation here,
//! by [`common_responses`], from what the operation declares (a token, a body).

use axum::Extension;
use axum::body::Bytes;
use axum::extract::Path;
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use serde::Serialize;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi as Document, Ref, ResponseBuilder};
use utoipa::{Modify, OpenApi, ToSchema};

use super::error::ErrorBody;
use crate::wire::Failure;

/// `{ "success": true, "data": … }`: every answer of Huddle's own endpoints.
#[derive(Debug, Serialize, ToSchema)]
pub struct Success<T> {
    /// Always `true`.
    success: bool,
    data: T,
}

impl<T> Success<T> {
    pub fn new(data: T) -> Self {
        Self {
            success: true,
            data,
        }
    }
}

/// `{ "success": true, "message": …, "data": … }`: what an end or a participant
/// update did, in words too.
#[derive(Debug, Serialize, ToSchema)]
pub struct SuccessWithMessage<T> {
    /// Always `true`.
    success: bool,
    message: &'static str,
    data: T,
}

impl<T> SuccessWithMessage<T> {
    pub fn new(message: &'static str, data: T) -> Self {
        Self {
            success: true,
            message,
            data,
        }
    }
}

/// The document's fixed parts; [`super::app`] adds an operation per route.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Huddle",
        description = "Huddle's REST API: calls, analytics, phone calls of an outside \
            telephone system, monitoring. Socket.IO signaling (`/socket.io/`), the SFU's \
            media protocol and TURN are described in docs/api.md. Every endpoint but \
            `/health`, `/metrics` and the pages takes `Authorization: Bearer <jwt>` \
            (HS256, JWT_SECRET); a role in the security requirement is the token's \
            `role` claim the endpoint needs. Errors have one shape: \
            `{ success: false, error: { code, message, field? } }`."
    ),
    modifiers(&BearerJwt),
    components(schemas(ErrorBody)),
    tags(
        (name = "calls", description = "The call lifecycle: start, join, end, tokens, history"),
        (name = "users", description = "Profiles, the queues representatives serve, their availability"),
        (name = "auth", description = "Accounts with passwords (AUTH_ACCOUNTS): register, log in, refresh"),
        (name = "analytics", description = "Counts, outcomes, quality and trends over a window"),
        (name = "queues", description = "Support lines: customers wait in queues, representatives answer"),
        (name = "phone", description = "Calls of an outside telephone system, for backends (`role: service` or `admin`)"),
        (name = "seed paths", description = "The reference services' own paths (seeds 000 and 002), with their answer shapes"),
        (name = "monitoring", description = "Health, figures, Prometheus"),
        (name = "pages", description = "The demo page, its token minting, and these docs"),
        (name = "webhooks", description = "Calls back from LiveKit"),
    )
)]
pub struct ApiDoc;

/// The name of the bearer JWT security scheme in the document.
pub const BEARER: &str = "bearer";

struct BearerJwt;

impl Modify for BearerJwt {
    fn modify(&self, doc: &mut Document) {
        doc.components.get_or_insert_default().add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// Adds to every operation the answers of the layers in front of its handler
/// (`crate::browsers` and `middleware`, and `crate::http`'s drain): 403, 414, 431 and
/// 503 to all; 429 to all but `/health` and `/metrics` (not rate limited);
/// 401 to those that take a token; 400, 413 and 415 to those that take a JSON body;
/// and to those about one call (`{callId}`), what the call service refuses. A status
/// the operation documents already keeps its description, with these codes added.
pub fn common_responses(doc: &mut Document) {
    for (path, item) in doc.paths.paths.iter_mut() {
        let limited = !matches!(path.as_str(), "/health" | "/metrics");
        let about_a_call = path.contains("{callId}");
        for operation in operations(item) {
            let takes_token = operation.security.is_some();
            let takes_json = operation
                .request_body
                .as_ref()
                .is_some_and(|body| body.content.contains_key("application/json"));
            let mut add = |status: &str, text: &str| add_response(operation, status, text);
            add(
                "403",
                "`ORIGIN_NOT_ALLOWED`: a browser's `Origin` that is neither this server's \
                 nor in CORS_ORIGINS",
            );
            add("414", "`URI_TOO_LONG`: a URI over 8 KiB");
            add("431", "`HEADERS_TOO_LARGE`: request headers over 64 KiB");
            add(
                "503",
                "`SHUTTING_DOWN`: the server is draining before it stops (`Retry-After`)",
            );
            if limited {
                add(
                    "429",
                    "`RATE_LIMITED`: over a rate limit; `Retry-After` says when to retry",
                );
            }
            if takes_token {
                add(
                    "401",
                    "`UNAUTHORIZED`: the token is missing, malformed, forged or expired",
                );
            }
            if takes_json {
                add(
                    "400",
                    "`MALFORMED_JSON`: the body is not JSON; `VALIDATION_ERROR` (with \
                     `field`): a field is missing or of the wrong type",
                );
                add(
                    "413",
                    "`PAYLOAD_TOO_LARGE`: a body over 64 KiB (1 MiB for phone events)",
                );
                add(
                    "415",
                    "`UNSUPPORTED_MEDIA_TYPE`: a non-empty body not sent as JSON",
                );
            }
            if about_a_call {
                add("400", "`VALIDATION_ERROR` (`field: callId`): not a UUID");
                add("403", "`NOT_A_MEMBER`: the call is not yours");
                add("404", "`CALL_NOT_FOUND`: no such call");
                add(
                    "409",
                    "`CALL_ENDED`, `ALREADY_JOINED`, `NOT_IN_CALL`, `CALL_FULL`, \
                     `NOT_RINGING`, `CONCURRENT_UPDATE`: the call's state does not allow it",
                );
                add("500", "`INTERNAL_ERROR`: logged with its cause");
            }
        }
    }
}

fn operations(item: &mut utoipa::openapi::PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
    ]
    .into_iter()
    .filter_map(Option::as_mut)
}

/// `status` answered with the error shape, described by `text`, on `operation`.
fn add_response(operation: &mut Operation, status: &str, text: &str) {
    use utoipa::openapi::RefOr;
    let responses = &mut operation.responses.responses;
    if let Some(RefOr::T(existing)) = responses.get_mut(status) {
        if !existing.description.contains(text) {
            existing.description = format!("{}; {text}", existing.description);
        }
        return;
    }
    // Seed 000's `POST /events` answers errors in its own shape, declared on the
    // operation; anything else not declared has Huddle's.
    let response = ResponseBuilder::new()
        .description(text)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build();
    responses.insert(status.to_owned(), response.into());
}

/// The document, serialized once when the router is built.
#[derive(Debug, Clone)]
pub struct DocumentJson(pub Bytes);

/// This document.
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    tag = "pages",
    responses((status = 200, description = "This document (OpenAPI 3.1)", body = Object))
)]
pub async fn openapi_json(Extension(DocumentJson(json)): Extension<DocumentJson>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], json).into_response()
}

const PAGE: &str = include_str!("../../web/swagger-ui/index.html");
/// Swagger UI's Content-Security-Policy: its scripts and style sheet from this server
/// (the page has no inline script or style), its icons (`data:` SVGs in its style
/// sheet), requests to this server only (the document, and "Try it out"), nothing
/// framed.
const PAGE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

/// The files of Swagger UI, by name under `/api/docs/`, with their content types.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "swagger-ui-bundle.js",
        "text/javascript; charset=utf-8",
        include_str!("../../web/swagger-ui/swagger-ui-bundle.js"),
    ),
    (
        "swagger-ui.css",
        "text/css; charset=utf-8",
        include_str!("../../web/swagger-ui/swagger-ui.css"),
    ),
    (
        "swagger-initializer.js",
        "text/javascript; charset=utf-8",
        include_str!("../../web/swagger-ui/swagger-initializer.js"),
    ),
];

/// Swagger UI over this document.
#[utoipa::path(
    get,
    path = "/api/docs",
    tag = "pages",
    responses((status = 200, description = "Swagger UI over this document", content_type = "text/html", body = String))
)]
pub async fn page() -> impl IntoResponse {
    ([(header::CONTENT_SECURITY_POLICY, PAGE_CSP)], Html(PAGE))
}

/// A file of Swagger UI, compiled into Huddle.
#[utoipa::path(
    get,
    path = "/api/docs/{file}",
    tag = "pages",
    params(("file" = String, Path, description = "`swagger-ui-bundle.js`, `swagger-ui.css` or `swagger-initializer.js`")),
    responses(
        (status = 200, description = "A file of Swagger UI", content(
            (String = "text/javascript"),
            (String = "text/css"),
        )),
        (status = 400, description = "`BAD_REQUEST`: a name that is not UTF-8", body = ErrorBody),
        (status = 404, description = "`NOT_FOUND`: no such file", body = ErrorBody),
    )
)]
pub async fn asset(Path(file): Path<String>) -> Result<Response, Failure> {
    let (_, content_type, text) = ASSETS
        .iter()
        .find(|(name, _, _)| *name == file)
        .ok_or_else(|| Failure::not_found("no such file of Swagger UI"))?;
    Ok(([(header::CONTENT_TYPE, *content_type)], *text).into_response())
}
