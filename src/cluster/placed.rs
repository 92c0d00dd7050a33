//! [`PlacedSfu`]: the media plane of `sfu` calls in cluster mode. A call's room is
//! on one node; a member's message to `"sfu"`, or a recording order, is carried out
//! here if this node owns the room, else forwarded to the owner; a call without a
//! room gets one on the least loaded node when its first member publishes (or it is
//! recorded).

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use rooms::record::RecordingSpec;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use signaling::events::{SfuMessage, SfuMessageKind};

use super::Cluster;
use crate::calls::events::CallEvent;
use crate::calls::lifecycle::CallSnapshot;
use crate::calls::model::UserId;
use crate::calls::service::{BoxFuture, ServiceError};
use crate::media::{MediaPlane, RecordedBy, RecordingOrder};
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

/// A recording order for a call's room, as it travels between nodes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "order", rename_all = "snake_case")]
pub enum ForwardedOrder {
    Start {
        id: String,
        path: PathBuf,
        max_bytes: u64,
        max_duration: Duration,
    },
    Stop {
        id: String,
    },
}

impl From<RecordingOrder> for ForwardedOrder {
    fn from(order: RecordingOrder) -> Self {
        match order {
            RecordingOrder::Start(spec) => ForwardedOrder::Start {
                id: spec.id,
                path: spec.path,
                max_bytes: spec.max_bytes,
                max_duration: spec.max_duration,
            },
            RecordingOrder::Stop { id } => ForwardedOrder::Stop { id },
        }
    }
}

impl From<ForwardedOrder> for RecordingOrder {
    fn from(order: ForwardedOrder) -> Self {
        match order {
            ForwardedOrder::Start {
                id,
                path,
                max_bytes,
                max_duration,
            } => RecordingOrder::Start(RecordingSpec {
                id,
                path,
                max_bytes,
                max_duration,
            }),
            ForwardedOrder::Stop { id } => RecordingOrder::Stop { id },
        }
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

/// Which node has a call's room.
enum Owner {
    Here,
    Node(String),
}

impl PlacedSfu {
    /// The node of `call`'s room: this one if it owns the room or takes it (the
    /// least loaded node is chosen when nobody has it), else the owner.
    async fn owner(&self, call: &CallSnapshot) -> Result<Owner, Failure> {
        let cluster = &self.cluster;
        let id = call.call.id;
        for _ in 0..ATTEMPTS {
            if cluster.owns(id) {
                return Ok(Owner::Here);
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
                return Ok(Owner::Node(node));
            }
            if cluster.claim(id).await? {
                tracing::debug!(call = %id, "room placed here");
                return Ok(Owner::Here);
            }
        }
        Err(unavailable("the call's media is moving: try again"))
    }

    async fn route(
        &self,
        call: &CallSnapshot,
        user: &UserId,
        message: SfuMessage,
    ) -> Result<Value, Failure> {
        match self.owner(call).await? {
            Owner::Here => self.cluster.sfu.signal(call, user, message).await,
            Owner::Node(node) => {
                let id = call.call.id;
                tracing::debug!(call = %id, %user, %node, "message for the room forwarded");
                self.cluster.forward(&node, id, user, message.into()).await
            }
        }
    }

    async fn record(
        &self,
        call: &CallSnapshot,
        order: RecordingOrder,
    ) -> Result<RecordedBy, Failure> {
        match self.owner(call).await? {
            Owner::Here => self.cluster.sfu.recording(call, order).await,
            Owner::Node(node) => {
                tracing::debug!(call = %call.call.id, %node, "recording order forwarded");
                self.cluster
                    .forward_recording(&node, call.call.id, order.into())
                    .await?;
                Ok(RecordedBy::Node(node))
            }
        }
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

    /// Carried out by the SFU of the node that owns the call's room (placed now if
    /// it has none); the reports come from that node.
    fn recording<'a>(
        &'a self,
        call: &'a CallSnapshot,
        order: RecordingOrder,
    ) -> BoxFuture<'a, Result<RecordedBy, Failure>> {
        Box::pin(self.record(call, order))
    }

    /// Applied here if this node owns the room; the owner elsewhere applies it when
    /// it hears of the change ([`Cluster::call_changed`]).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recording_orders_travel_between_nodes_whole() {
        let spec = RecordingSpec {
            id: "rec-1".into(),
            path: PathBuf::from("/shared/recordings/call/rec-1.webm"),
            max_bytes: 2048 << 20,
            max_duration: Duration::from_secs(240 * 60),
        };
        let text =
            serde_json::to_string(&ForwardedOrder::from(RecordingOrder::Start(spec.clone())))
                .unwrap();
        let order: ForwardedOrder = serde_json::from_str(&text).unwrap();
        let RecordingOrder::Start(back) = RecordingOrder::from(order) else {
            panic!("{text}")
        };
        assert_eq!(back, spec);
        let stop = ForwardedOrder::from(RecordingOrder::Stop { id: "rec-1".into() });
        let text = serde_json::to_string(&stop).unwrap();
        let order: ForwardedOrder = serde_json::from_str(&text).unwrap();
        assert!(
            matches!(RecordingOrder::from(order), RecordingOrder::Stop { id } if id == "rec-1")
        );
    }
}
