//! Health and monitoring: `/health` (no token), `/monitoring/metrics` (admin token,
//! the primary contract's JSON) and `/metrics` (Prometheus text, no token: expose it
//! only where Prometheus can reach it, or move it to METRICS_PORT; a request that
//! accepts only JSON gets seed 000's `{ "latestStaleCalls": n }` there instead).

use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::error::ErrorBody;
use super::extract::Auth;
use super::phone::SeedError;
use crate::cluster::NodeInfo;
use crate::metrics::family;
use crate::wire::Failure;

/// How long a scrape waits for the database's gauges: under Prometheus's default
/// scrape timeout (10 s), so the in-memory figures arrive even when the database hangs.
const DATABASE_SCRAPE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// Whether the server and its database answer.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok`, or `degraded` when the database does not answer.
    status: &'static str,
    /// `huddle`.
    service: &'static str,
    version: &'static str,
    database: DatabaseHealth,
    timestamp: chrono::DateTime<chrono::Utc>,
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct DatabaseHealth {
    /// `sqlite` or `postgres`.
    backend: &'static str,
    /// `ok` or `unreachable`.
    status: &'static str,
}

/// Health: 200 when the database answers, 503 when it does not.
#[utoipa::path(
    get,
    path = "/health",
    tag = "monitoring",
    responses(
        (status = 200, description = "Up, with its database", body = Health),
        (status = 503, description = "The database does not answer (`status: degraded`)", body = Health),
    )
)]
pub async fn health(State(state): State<AppState>) -> impl IntoResponse {
    let store = state.service.store();
    let (status, db_status) = match store.ping().await {
        Ok(()) => (StatusCode::OK, "ok"),
        Err(e) => {
            tracing::warn!(error = %e, "health check: database unreachable");
            (StatusCode::SERVICE_UNAVAILABLE, "unreachable")
        }
    };
    let body = Health {
        status: if status == StatusCode::OK {
            "ok"
        } else {
            "degraded"
        },
        service: "huddle",
        version: env!("CARGO_PKG_VERSION"),
        database: DatabaseHealth {
            backend: store.backend(),
            status: db_status,
        },
        timestamp: state.service.now(),
    };
    (status, Json(body))
}

/// Call counts and success rate over all calls, and the SFU's, TURN's, LiveKit's and
/// the cluster's figures.
#[utoipa::path(
    get,
    path = "/monitoring/metrics",
    tag = "monitoring",
    security(("bearer" = ["admin"])),
    responses(
        (status = 200, description = "The figures", body = Monitoring),
        (status = 403, description = "`FORBIDDEN`: not an admin token", body = ErrorBody),
        (status = 500, description = "`INTERNAL_ERROR`", body = ErrorBody),
    )
)]
pub async fn monitoring(
    State(state): State<AppState>,
    Auth(me): Auth,
) -> Result<Json<Monitoring>, Failure> {
    if !me.admin {
        return Err(Failure::forbidden(
            "monitoring needs a token with \"role\": \"admin\"",
        ));
    }
    let stats = state.service.stats(None).await?;
    let finished = stats.total_calls - stats.active_calls;
    let success_rate = if finished > 0 {
        stats.completed_calls as f64 * 100.0 / finished as f64
    } else {
        0.0
    };
    Ok(Json(Monitoring {
        calls: CallCounts {
            total: stats.total_calls,
            active: stats.active_calls,
            completed: stats.completed_calls,
            failed: stats.failed_calls,
            missed: stats.missed_calls,
            declined: stats.declined_calls,
        },
        performance: Performance {
            success_rate: format!("{success_rate:.2}%"),
            average_duration: stats.average_duration,
        },
        sfu: sfu_figures(&state),
        turn: turn_figures(&state).await,
        livekit: LiveKitFigures {
            enabled: state.livekit.is_some(),
            active_rooms: state.livekit.as_ref().map_or(0, |l| l.active_rooms()),
        },
        cluster: cluster_figures(&state).await,
        timestamp: state.service.now(),
    }))
}

/// Everything `GET /monitoring/metrics` reports.
#[derive(Debug, Serialize, ToSchema)]
pub struct Monitoring {
    /// Over all calls.
    calls: CallCounts,
    performance: Performance,
    sfu: SfuFigures,
    turn: TurnFigures,
    livekit: LiveKitFigures,
    cluster: ClusterFigures,
    timestamp: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CallCounts {
    total: i64,
    active: i64,
    completed: i64,
    failed: i64,
    missed: i64,
    declined: i64,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Performance {
    /// Completed calls over ended ones, as `97.35%`.
    success_rate: String,
    /// Seconds, over the calls that connected and ended.
    average_duration: Option<f64>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LiveKitFigures {
    enabled: bool,
    /// LiveKit rooms Huddle opened for live calls.
    active_rooms: usize,
}

/// This node's part in a cluster (REDIS_URL): `node` and `nodes` only when it runs
/// in one.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClusterFigures {
    enabled: bool,
    /// This node's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    node: Option<String>,
    /// The live nodes as the registry has them; `null` when Redis does not answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<NodeInfo>>)]
    nodes: Option<Option<Vec<NodeInfo>>>,
}

async fn cluster_figures(state: &AppState) -> ClusterFigures {
    let Some(cluster) = &state.cluster else {
        return ClusterFigures {
            enabled: false,
            node: None,
            nodes: None,
        };
    };
    let nodes = match cluster.nodes().await {
        Ok(nodes) => Some(nodes),
        Err(e) => {
            tracing::warn!(error = %e, "monitoring: Redis unreachable");
            None
        }
    };
    ClusterFigures {
        enabled: true,
        node: Some(cluster.node().to_owned()),
        nodes: Some(nodes),
    }
}

/// Prometheus text exposition. It always answers: a scrape matters
/// most when something is wrong. When the database does not answer within
/// [`DATABASE_SCRAPE_TIMEOUT`], `huddle_database_up` is 0 and the gauges read from it
/// (`huddle_active_calls`, `huddle_participants_connected`) are left out rather than
/// repeated from an earlier scrape: a stale value would look current, while a gap
/// next to `huddle_database_up 0` says what happened.
///
/// A request whose `Accept` names only `application/json` is a client of seed 000's
/// call tracker asking for its stale phone calls: it gets `{ "latestStaleCalls": n }`
/// (500 `{ "error": "Failed to retrieve metrics" }`). Prometheus, which accepts
/// text, and any request without `Accept` get the text exposition.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "monitoring",
    description = "Prometheus text exposition (always 200, with `huddle_database_up 0` while \
        the database does not answer). A request whose `Accept` names only \
        `application/json` gets seed 000's `{ latestStaleCalls }` instead.",
    responses(
        (status = 200, description = "The figures", content(
            (String = "text/plain"),
            (StaleCalls = "application/json"),
        )),
        (status = 500, description = "Seed 000's answer when the database fails (`Accept: application/json`)", body = SeedError),
    )
)]
pub async fn prometheus(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if accepts_only_json(&headers) {
        return match state.phone.stale_calls().await {
            Ok(stale) => Json(StaleCalls {
                latest_stale_calls: stale,
            })
            .into_response(),
            Err(e) => {
                tracing::warn!(error = %e, "metrics: database unreachable");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    Json(SeedError::new("Failed to retrieve metrics")),
                )
                    .into_response()
            }
        };
    }
    prometheus_text(&state).await
}

/// Seed 000's stale phone calls: started more than PHONE_STALE_AFTER ago, not ended.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StaleCalls {
    latest_stale_calls: i64,
}

/// Whether every media range `Accept` lists (refused ones, `q=0`, aside) is
/// `application/json`, and there is one.
fn accepts_only_json(headers: &HeaderMap) -> bool {
    let mut json = false;
    for value in headers.get_all(header::ACCEPT) {
        let Ok(text) = value.to_str() else {
            return false;
        };
        for range in text.split(',') {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or_default().trim();
            let refused = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q == 0.0)
            });
            if media.is_empty() || refused {
                continue;
            }
            if !media.eq_ignore_ascii_case("application/json") {
                return false;
            }
            json = true;
        }
    }
    json
}

async fn prometheus_text(state: &AppState) -> Response {
    let from_database = tokio::time::timeout(DATABASE_SCRAPE_TIMEOUT, async {
        let mut text = state.service.prometheus().await?;
        let stale = state.phone.stale_calls().await?;
        family(
            &mut text,
            "huddle_phone_stale_calls",
            "gauge",
            "Phone calls started more than PHONE_STALE_AFTER ago and not ended.",
            &[(String::new(), stale.unsigned_abs())],
        );
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(text)
    })
    .await;
    let (mut text, up) = match from_database {
        Ok(Ok(text)) => (text, 1),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "metrics: database unreachable");
            (state.metrics.render_counters(), 0)
        }
        Err(_) => {
            tracing::warn!("metrics: database did not answer in time");
            (state.metrics.render_counters(), 0)
        }
    };
    family(
        &mut text,
        "huddle_database_up",
        "gauge",
        "Whether the database answered this scrape (1) or not (0).",
        &[(String::new(), up)],
    );
    let limits = &state.rate_limits;
    family(
        &mut text,
        "huddle_rate_limited_total",
        "counter",
        "Requests refused by a rate limit, by limit.",
        &[
            ("{limit=\"ip\"}".to_owned(), limits.ip.refused()),
            ("{limit=\"user\"}".to_owned(), limits.user.refused()),
        ],
    );
    family(
        &mut text,
        "huddle_rate_limit_keys",
        "gauge",
        "Clients (IPs, users) a rate limiter is tracking, by limit.",
        &[
            ("{limit=\"ip\"}".to_owned(), limits.ip.keys() as u64),
            ("{limit=\"user\"}".to_owned(), limits.user.keys() as u64),
        ],
    );
    let c = state.sfu.sfu.connection_counters();
    let read = |n: &std::sync::atomic::AtomicU64| n.load(Ordering::Relaxed);
    family(
        &mut text,
        "huddle_sfu_connections_total",
        "counter",
        "SFU peer connections by outcome: came up, or failed (ICE never connected, ICE lost, DTLS).",
        &[
            ("{outcome=\"connected\"}".to_owned(), read(&c.connected)),
            (
                "{outcome=\"connect_timeout\"}".to_owned(),
                read(&c.connect_timeouts),
            ),
            ("{outcome=\"ice_failed\"}".to_owned(), read(&c.ice_failed)),
            ("{outcome=\"dtls_failed\"}".to_owned(), read(&c.dtls_failed)),
        ],
    );
    family(
        &mut text,
        "huddle_socketio_slow_consumers_total",
        "counter",
        "Sockets disconnected because they did not read what was sent to them.",
        &[(String::new(), state.signaling.slow_consumers())],
    );
    family(
        &mut text,
        "huddle_http_connections_refused_total",
        "counter",
        "Connections refused for going over HTTP_MAX_CONNECTIONS_PER_IP.",
        &[(String::new(), read(&state.drain.refused_connections))],
    );
    let sfu = sfu_figures(state);
    text.push_str(&format!(
        "# HELP huddle_sfu_rooms Media rooms running in the built-in SFU.\n\
         # TYPE huddle_sfu_rooms gauge\n\
         huddle_sfu_rooms {}\n\
         # HELP huddle_sfu_datagrams_dropped_total Datagrams the SFU's port could not deliver.\n\
         # TYPE huddle_sfu_datagrams_dropped_total counter\n\
         huddle_sfu_datagrams_dropped_total{{reason=\"unroutable\"}} {}\n\
         huddle_sfu_datagrams_dropped_total{{reason=\"overflow\"}} {}\n",
        sfu.active_rooms, sfu.dropped_unroutable, sfu.dropped_overflow
    ));
    if let Some(livekit) = &state.livekit {
        text.push_str(&format!(
            "# HELP huddle_livekit_rooms LiveKit rooms Huddle opened for live calls.\n\
             # TYPE huddle_livekit_rooms gauge\n\
             huddle_livekit_rooms {}\n",
            livekit.active_rooms()
        ));
    }
    if let Some(turn) = &state.turn {
        let t = turn.stats().await;
        text.push_str(&format!(
            "# HELP huddle_turn_allocations Relay allocations alive on the embedded TURN server.\n\
             # TYPE huddle_turn_allocations gauge\n\
             huddle_turn_allocations {}\n\
             # HELP huddle_turn_allocations_created_total Relay allocations made.\n\
             # TYPE huddle_turn_allocations_created_total counter\n\
             huddle_turn_allocations_created_total {}\n\
             # HELP huddle_turn_relayed_bytes_total Bytes relayed, both directions.\n\
             # TYPE huddle_turn_relayed_bytes_total counter\n\
             huddle_turn_relayed_bytes_total {}\n\
             # HELP huddle_turn_relayed_packets_total Datagrams relayed, both directions.\n\
             # TYPE huddle_turn_relayed_packets_total counter\n\
             huddle_turn_relayed_packets_total {}\n\
             # HELP huddle_turn_refused_total TURN requests and datagrams refused.\n\
             # TYPE huddle_turn_refused_total counter\n\
             huddle_turn_refused_total{{reason=\"peer\"}} {}\n\
             huddle_turn_refused_total{{reason=\"quota\"}} {}\n\
             huddle_turn_refused_total{{reason=\"stale_nonce\"}} {}\n\
             huddle_turn_refused_total{{reason=\"unauthorized\"}} {}\n\
             huddle_turn_refused_total{{reason=\"malformed\"}} {}\n\
             huddle_turn_refused_total{{reason=\"tcp_limit\"}} {}\n\
             huddle_turn_refused_total{{reason=\"tcp_idle\"}} {}\n\
             huddle_turn_refused_total{{reason=\"tcp_partial\"}} {}\n",
            t.allocations,
            t.allocations_created,
            t.relayed_bytes,
            t.relayed_packets,
            t.refused_peers,
            t.refused_quota,
            t.stale_nonces,
            t.unauthorized,
            t.malformed,
            t.refused_tcp_limit,
            t.closed_tcp_idle,
            t.closed_tcp_partial,
        ));
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// The embedded TURN server's figures: `enabled: false` and nothing else when
/// coturn serves TURN (TURN_EMBEDDED=false).
#[derive(Debug, Default, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TurnFigures {
    enabled: bool,
    /// Allocations alive now.
    #[serde(skip_serializing_if = "Option::is_none")]
    allocations: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    allocations_created: Option<u64>,
    /// Both directions.
    #[serde(skip_serializing_if = "Option::is_none")]
    relayed_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    relayed_packets: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refused: Option<TurnRefusals>,
}

/// TURN requests and datagrams refused, by reason.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TurnRefusals {
    peer: u64,
    quota: u64,
    stale_nonce: u64,
    unauthorized: u64,
    malformed: u64,
    tcp_limit: u64,
    tcp_idle: u64,
    tcp_partial: u64,
}

async fn turn_figures(state: &AppState) -> TurnFigures {
    let Some(turn) = &state.turn else {
        return TurnFigures::default();
    };
    let t = turn.stats().await;
    TurnFigures {
        enabled: true,
        allocations: Some(t.allocations),
        allocations_created: Some(t.allocations_created),
        relayed_bytes: Some(t.relayed_bytes),
        relayed_packets: Some(t.relayed_packets),
        refused: Some(TurnRefusals {
            peer: t.refused_peers,
            quota: t.refused_quota,
            stale_nonce: t.stale_nonces,
            unauthorized: t.unauthorized,
            malformed: t.malformed,
            tcp_limit: t.refused_tcp_limit,
            tcp_idle: t.closed_tcp_idle,
            tcp_partial: t.closed_tcp_partial,
        }),
    }
}

/// The built-in SFU's figures.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SfuFigures {
    /// Media rooms running.
    active_rooms: usize,
    /// Datagrams its port could not route to a room.
    dropped_unroutable: u64,
    /// Datagrams dropped because a room's queue was full.
    dropped_overflow: u64,
    connections: SfuConnections,
}

/// Peer connections by outcome.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SfuConnections {
    connected: u64,
    connect_timeouts: u64,
    ice_failed: u64,
    dtls_failed: u64,
}

fn sfu_figures(state: &AppState) -> SfuFigures {
    let sfu = &state.sfu.sfu;
    let (unroutable, overflow) = sfu.dropped();
    let c = sfu.connection_counters();
    SfuFigures {
        active_rooms: sfu.room_count(),
        dropped_unroutable: unroutable,
        dropped_overflow: overflow,
        connections: SfuConnections {
            connected: c.connected.load(Ordering::Relaxed),
            connect_timeouts: c.connect_timeouts.load(Ordering::Relaxed),
            ice_failed: c.ice_failed.load(Ordering::Relaxed),
            dtls_failed: c.dtls_failed.load(Ordering::Relaxed),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(header::ACCEPT, v.parse().unwrap());
        }
        headers
    }

    #[test]
    fn only_a_request_accepting_json_alone_gets_json() {
        for json in [
            &["application/json"][..],
            &["Application/JSON; charset=utf-8"],
            &["application/json;q=0.9"],
            &["application/json, text/plain;q=0"],
            &["application/json", "application/json"],
        ] {
            assert!(accepts_only_json(&accept(json)), "{json:?}");
        }
        for text in [
            &[][..],
            &["*/*"],
            &["text/plain"],
            &["application/json, */*"],
            &["application/json", "text/plain"],
            &[
                "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
            ],
            &["application/json;q=0"],
        ] {
            assert!(!accepts_only_json(&accept(text)), "{text:?}");
        }
    }
}
