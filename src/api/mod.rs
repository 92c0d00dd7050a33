//! The HTTP API: routes, shared state, and the JSON envelope and error shape.
//! [`app`] builds the router without binding a port; `server` serves it.

mod analytics;
mod calls;
mod demo;
mod error;
mod extract;
mod middleware;
mod monitoring;
mod phone;
mod webhooks;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::middleware::{from_fn, from_fn_with_state, map_response};
use axum::routing::{get, patch, post};
use huddle_turn::TurnServer;

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
use crate::ratelimit::RateLimits;
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
}

/// Where Prometheus `/metrics` is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsRoute {
    /// On the main router.
    Main,
    /// Only on the separate [`metrics_app`] (METRICS_PORT).
    Separate,
}

/// The whole HTTP API.
pub fn app(state: AppState, metrics: MetricsRoute) -> Router {
    let calls = Router::new()
        .route("/start", post(calls::start))
        .route("/history", get(calls::history))
        .route("/active", get(calls::active))
        .route("/stats", get(calls::stats))
        // Call analytics (issue 16 §4).
        .route("/analytics", get(analytics::analytics))
        .route("/{call_id}", get(calls::get))
        .route("/{call_id}/join", post(calls::join))
        .route("/{call_id}/end", post(calls::end))
        .route("/{call_id}/token", post(calls::token))
        .route("/{call_id}/participant", patch(calls::update_participant));
    // Phone calls of an outside telephone system (issue 16), and the paths of the
    // reference services (seeds 000 and 002) as aliases with their answer shapes.
    // Batches of events are larger than call requests: their own body limit.
    let phone_body = DefaultBodyLimit::max(phone::BODY_LIMIT);
    let phone = Router::new()
        .route("/events", post(phone::ingest).layer(phone_body))
        .route("/metrics", get(phone::metrics))
        .route("/history/{number}", get(phone::history));
    let phone_aliases = Router::new()
        .route("/events", post(phone::ingest_seed_000).layer(phone_body))
        .route("/call-history/{number}", get(phone::history_seed_002))
        .route("/call-history/{number}/", get(phone::history_seed_002));
    let mut router = Router::new()
        .nest("/api/v1/calls", calls)
        .nest("/api/v1/phone", phone)
        .merge(phone_aliases)
        .route("/", get(demo::page))
        .route("/demo", get(demo::page))
        .route("/demo/socket.io.min.js", get(demo::socket_io_client))
        .route("/demo/token", post(demo::token))
        .route("/webhooks/livekit", post(webhooks::livekit))
        .route("/health", get(monitoring::health))
        .route("/monitoring/metrics", get(monitoring::monitoring));
    if metrics == MetricsRoute::Main {
        router = router.route("/metrics", get(monitoring::prometheus));
    }
    router
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
