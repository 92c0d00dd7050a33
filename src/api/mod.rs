//! The HTTP API: routes, shared state, and the JSON envelope and error shape.
//! [`app`] builds the router without binding a port; `server` serves it.

mod analytics;
mod auth;
mod calls;
mod demo;
mod docs;
mod error;
mod extract;
mod middleware;
mod monitoring;
mod phone;
mod queue;
mod recordings;
mod users;
mod webhooks;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::middleware::{from_fn, from_fn_with_state, map_response};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use huddle_turn::TurnServer;
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::OpenApi;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

pub use middleware::{MAX_HEADER_BYTES, MAX_URI_LEN};

use signaling::Signaling;

use crate::auth::JwtKey;
use crate::calls::service::CallService;
use crate::cluster::Cluster;
use crate::http::Drain;
use crate::media::MediaAccess;
use crate::media::livekit::LiveKit;
use crate::media::sfu::SfuPlane;
use crate::metrics::Metrics;
use crate::phone::PhoneCalls;
use crate::queue::QueueService;
use crate::ratelimit::RateLimits;
use crate::recordings::RecordingService;
use crate::users::UserService;
use crate::users::accounts::Accounts;
use crate::wire::Failure;

/// Largest request body accepted; call requests are a few hundred bytes.
pub const BODY_LIMIT: usize = 64 * 1024;

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    pub service: Arc<CallService>,
    pub jwt: Arc<JwtKey>,
    /// Handed to clients with every start, join and token response.
    pub access: Arc<MediaAccess>,
    /// The embedded TURN server, unless TURN_EMBEDDED is false.
    pub turn: Option<Arc<TurnServer>>,
    /// This server's built-in SFU (for its figures).
    pub sfu: Arc<SfuPlane>,
    /// LiveKit, when configured (for its webhooks and figures).
    pub livekit: Option<Arc<LiveKit>>,
    /// This node's part in a cluster (REDIS_URL), for its figures.
    pub cluster: Option<Arc<Cluster>>,
    /// Socket.IO, for its counters.
    pub signaling: Signaling,
    /// The HTTP listener's shutdown state and counters.
    pub drain: Arc<Drain>,
    /// Whether `POST /demo/token` mints tokens for anyone.
    pub demo_tokens: bool,
    /// The process's counters, for `/metrics` when the database cannot add its gauges.
    pub metrics: Arc<Metrics>,
    /// The per-IP and per-user rate limiters: one instance each, for every door.
    pub rate_limits: Arc<RateLimits>,
    /// Calls of an outside telephone system (`/api/v1/phone`).
    pub phone: Arc<PhoneCalls>,
    /// Call recordings.
    pub recordings: Arc<RecordingService>,
    /// Support queues and their dispatcher.
    pub queue: Arc<QueueService>,
    /// Users of the support lines: profiles, queues served, availability.
    pub users: Arc<UserService>,
    /// Accounts with passwords (AUTH_ACCOUNTS).
    pub accounts: Arc<Accounts>,
}

/// Where Prometheus `/metrics` is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsRoute {
    /// On the main router.
    Main,
    /// Only on the separate [`metrics_app`] (METRICS_PORT).
    Separate,
}

/// The whole HTTP API, and its OpenAPI document served at `/api/openapi.json`: each
/// route is registered with `routes!`, which takes the handler's path, method and
/// description from its `#[utoipa::path]`, so the router and the document are made
/// from the same list and cannot disagree (`tests/openapi.rs` checks it anyway).
pub fn app(state: AppState, metrics: MetricsRoute) -> Router {
    // Batches of phone events are larger than call requests: their own body limit.
    let phone_body = DefaultBodyLimit::max(phone::BODY_LIMIT);
    let mut api = OpenApiRouter::with_openapi(docs::ApiDoc::openapi())
        .routes(routes!(calls::start))
        .routes(routes!(calls::history))
        .routes(routes!(calls::active))
        .routes(routes!(calls::stats))
        // Call analytics (issue 16 §4).
        .routes(routes!(analytics::analytics))
        // Call recordings (issue 13).
        .routes(routes!(recordings::list))
        .routes(routes!(recordings::start))
        .routes(routes!(recordings::stop))
        .routes(routes!(recordings::get, recordings::delete))
        // Support queues (issue 17).
        .routes(routes!(queue::join))
        .routes(routes!(queue::position))
        .routes(routes!(queue::leave))
        .routes(routes!(queue::callback))
        .routes(routes!(queue::stats))
        .routes(routes!(queue::list, queue::create))
        .routes(routes!(calls::get))
        .routes(routes!(calls::join))
        .routes(routes!(calls::end))
        .routes(routes!(calls::token))
        .routes(routes!(calls::update_participant))
        // Support lines (issue 17): feedback, users, accounts.
        .routes(routes!(calls::feedback))
        .routes(routes!(users::get_profile, users::put_profile))
        .routes(routes!(users::put_availability))
        .routes(routes!(auth::register))
        .routes(routes!(auth::login))
        .routes(routes!(auth::refresh))
        // Phone calls of an outside telephone system (issue 16), and the paths of the
        // reference services (seeds 000 and 002) as aliases with their answer shapes.
        .routes(routes!(phone::ingest).layer(phone_body))
        .routes(routes!(phone::metrics))
        .routes(routes!(phone::history))
        .routes(routes!(phone::ingest_seed_000).layer(phone_body))
        .routes(routes!(phone::history_seed_002))
        .routes(routes!(phone::history_seed_002_slash))
        .routes(routes!(demo::page))
        .routes(routes!(demo::demo_page))
        .routes(routes!(demo::socket_io_client))
        .routes(routes!(demo::token))
        .routes(routes!(webhooks::livekit))
        .routes(routes!(monitoring::health))
        .routes(routes!(monitoring::monitoring))
        .routes(routes!(docs::openapi_json))
        .routes(routes!(docs::page))
        .routes(routes!(docs::asset));
    if metrics == MetricsRoute::Main {
        api = api.routes(routes!(monitoring::prometheus));
    }
    let (router, mut document) = api.split_for_parts();
    docs::common_responses(&mut document);
    let json = document
        .to_json()
        .expect("the OpenAPI document serializes to JSON");
    router
        .layer(Extension(docs::DocumentJson(json.into())))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(from_fn(middleware::limit_sizes))
        .layer(from_fn_with_state(state.clone(), middleware::limit_per_ip))
        .layer(map_response(middleware::json_errors))
        .with_state(state)
}

/// Prometheus `/metrics` alone, for METRICS_PORT.
pub fn metrics_app(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(monitoring::prometheus))
        .fallback(not_found)
        .layer(map_response(middleware::json_errors))
        .with_state(state)
}

/// What most handlers answer: a JSON body, or a [`Failure`].
type ApiResult = Result<Json<Value>, Failure>;

/// `{ "success": true, "data": data }`
fn ok(data: impl Serialize) -> ApiResult {
    Ok(Json(json!(docs::Success::new(data))))
}

/// 201 with `{ "success": true, "data": data }`: something was made.
fn created(data: impl Serialize) -> Result<Response, Failure> {
    Ok((StatusCode::CREATED, Json(docs::Success::new(data))).into_response())
}

/// `{ "success": true, "message": message, "data": data }`
fn ok_with_message(message: &'static str, data: impl Serialize) -> ApiResult {
    Ok(Json(json!(docs::SuccessWithMessage::new(message, data))))
}

async fn not_found() -> Failure {
    Failure::not_found("no such endpoint")
}

async fn method_not_allowed() -> Failure {
    Failure::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
        "method not allowed on this endpoint",
    )
}
