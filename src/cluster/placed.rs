//! [`PlacedSfu`]: the media plane of `sfu` calls in cluster mode. A call's room is
//! on one node; a member's message to `"sfu"` is carried out here if this node owns
//! the room, else forwarded to the owner; a call without a room gets one on the
//! least loaded node when its first member publishes.

use std::borrow::Cow;
use std::sync::Arc;

use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use signaling::events::{SfuMessage, SfuMessageKind};

use super::Cluster;
use crate::calls::events::CallEvent;
use crate::calls::lifecycle::CallSnapshot;
use crate::calls::model::UserId;
use crate::calls::service::{BoxFuture, ServiceError};
use crate::media::MediaPlane;
use crate::wire::Failure;

/// How many times a message looks for its room's node before giving up (a room
/// being placed while another node places it too).
const ATTEMPTS: usize = 3;

/// The built-in SFU, one room per call somewhere in the cluster.
#[derive(Debug)]
pub struct PlacedSfu {
    pub cluster: Arc<Cluster>,
}

/// A member's message to `"sfu"`, as it travels between nodes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Forwarded {
    Offer {
        call_id: String,
        sdp: String,
        sources: Vec<(String, String)>,
    },
    Answer {
        call_id: String,
        sdp: String,
    },
    Candidate {
        call_id: String,
    },
}

impl From<SfuMessage> for Forwarded {
    fn from(m: SfuMessage) -> Self {
        match m.kind {
            SfuMessageKind::Offer { sdp, sources } => Forwarded::Offer {
                call_id: m.call_id,
                sdp,
                sources,
            },
            SfuMessageKind::Answer { sdp } => Forwarded::Answer {
                call_id: m.call_id,
                sdp,
            },
            SfuMessageKind::Candidate => Forwarded::Candidate { call_id: m.call_id },
        }
    }
}

impl From<Forwarded> for SfuMessage {
    fn from(f: Forwarded) -> Self {
        let (call_id, kind) = match f {
            Forwarded::Offer {
                call_id,
                sdp,
                sources,
            } => (call_id, SfuMessageKind::Offer { sdp, sources }),
            Forwarded::Answer { call_id, sdp } => (call_id, SfuMessageKind::Answer { sdp }),
            Forwarded::Candidate { call_id } => (call_id, SfuMessageKind::Candidate),
        };
        SfuMessage { call_id, kind }
    }
}

/// A [`Failure`] as it travels between nodes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireFailure {
    status: u16,
    code: String,
    message: String,
    field: Option<String>,
    retry_after: Option<u64>,
}

impl From<Failure> for WireFailure {
    fn from(f: Failure) -> Self {
        WireFailure {
            status: f.status.as_u16(),
            code: f.code.into_owned(),
            message: f.message,
            field: f.field,
            retry_after: f.retry_after,
        }
    }
}

impl From<WireFailure> for Failure {
    fn from(w: WireFailure) -> Self {
        Failure {
            status: StatusCode::from_u16(w.status).unwrap_or(StatusCode::BAD_GATEWAY),
            code: Cow::Owned(w.code),
            message: w.message,
            field: w.field,
            retry_after: w.retry_after,
        }
    }
}

/// 503 `MEDIA_UNAVAILABLE`: the call's room cannot be reached right now (it is
/// moving, or the cluster is unreachable); the client retries shortly.
pub fn unavailable(message: impl Into<String>) -> Failure {
    Failure {
        retry_after: Some(1),
        ..Failure::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "MEDIA_UNAVAILABLE",
            message,
        )
    }
}

impl PlacedSfu {
    async fn route(
        &self,
        call: &CallSnapshot,
        user: &UserId,
        message: SfuMessage,
    ) -> Result<Value, Failure> {
        let cluster = &self.cluster;
        let id = call.call.id;
        for _ in 0..ATTEMPTS {
            if cluster.owns(id) {
                return cluster.sfu.signal(call, user, message).await;
            }
            let node = match cluster.owner(id).await? {
                // The owner died: its lease runs out and the node that reaps it
                // restarts everyone's media; until then there is nowhere to go.
                Some(owner) if !cluster.is_alive(&owner).await? => {
                    return Err(unavailable(format!(
                        "node {owner}, which had this call's media, is gone: try again"
                    )));
                }
                Some(owner) => owner,
                None => cluster.place(id).await?,
            };
            if node != cluster.node() {
                tracing::debug!(call = %id, %user, %node, "message for the room forwarded");
                return cluster.forward(&node, id, user, message.into()).await;
            }
            if cluster.claim(id).await? {
                tracing::debug!(call = %id, "room placed here");
                return cluster.sfu.signal(call, user, message).await;
            }
        }
        Err(unavailable("the call's media is moving: try again"))
    }
}

impl MediaPlane for PlacedSfu {
    fn token(&self, call: &CallSnapshot, user: &UserId) -> Result<Value, ServiceError> {
        self.cluster.sfu.token(call, user)
    }

    fn signal<'a>(
        &'a self,
        call: &'a CallSnapshot,
        user: &'a UserId,
        message: SfuMessage,
    ) -> BoxFuture<'a, Result<Value, Failure>> {
        Box::pin(self.route(call, user, message))
    }

    /// Applied here if this node owns the room; the owner elsewhere applies it when
    /// it hears of the change ([`Cluster::call_changed`]).
    fn recording<'a>(
        &'a self,
        call: &'a CallSnapshot,
        _order: crate::media::RecordingOrder,
    ) -> BoxFuture<'a, Result<(), Failure>> {
        // CONTRACT (rec-base): replaced by the helper that implements this plane.
        Box::pin(async move { Err(crate::media::cannot_record(call.call.media_mode)) })
    }

    fn call_changed(&self, call: &CallSnapshot, events: &[CallEvent]) {
        let id = call.call.id;
        if !self.cluster.owns(id) {
            return;
        }
        self.cluster.sfu.call_changed(call, events);
        if events.iter().any(|e| matches!(e, CallEvent::Ended { .. })) {
            let cluster = self.cluster.clone();
            tokio::spawn(async move { cluster.release(id).await });
        }
    }
}
