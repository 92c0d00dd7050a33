//! Media planes: where a call's audio and video flow. Every call has a media mode,
//! and each mode has one [`MediaPlane`]: the built-in SFU ([`sfu`]), LiveKit
//! ([`livekit`]), or none on this server (`p2p`: members connect to each other).
//! The doors and the notifier reach a call's plane only through [`Planes::of`], so a
//! new kind of plane (a room on another node) is one more implementation.

pub mod livekit;
pub mod sfu;

use std::sync::Arc;

use axum::http::StatusCode;
use rooms::record::{RecordingEvent, RecordingSpec};
use serde::Serialize;
use serde_json::{Value, json};
use signaling::events::SfuMessage;
use utoipa::ToSchema;

use crate::calls::events::CallEvent;
use crate::calls::lifecycle::CallSnapshot;
use crate::calls::model::{CallId, MediaMode, UserId};
use crate::calls::service::{BoxFuture, ServiceError};
use crate::ice::{IceServer, IceServers};
use crate::wire::Failure;
use crate::wire::views::CallData;

/// One way of carrying a call's media. The caller has already checked that `user`
/// is a joined member of `call` (nobody reaches a call they are not a member of).
pub trait MediaPlane: Send + Sync + std::fmt::Debug {
    /// What `user` needs to connect to `call`'s media besides the ICE servers (the
    /// `token` of start, join and token responses): `null` when nothing is needed.
    fn token(&self, call: &CallSnapshot, user: &UserId) -> Result<Value, ServiceError>;

    /// Carries out `user`'s `webrtc:*` message to `"sfu"` about `call`; the value is
    /// merged into the acknowledgement.
    fn signal<'a>(
        &'a self,
        call: &'a CallSnapshot,
        user: &'a UserId,
        message: SfuMessage,
    ) -> BoxFuture<'a, Result<Value, Failure>>;

    /// Keeps the plane's room in step with a stored change to `call` (members
    /// leaving, muting, the call ending).
    fn call_changed(&self, call: &CallSnapshot, events: &[CallEvent]);

    /// Starts or stops recording `call` (the caller checked who may), and says who
    /// carries it out. What becomes of the recording comes back as
    /// [`RecordingReport`]s.
    fn recording<'a>(
        &'a self,
        call: &'a CallSnapshot,
        order: RecordingOrder,
    ) -> BoxFuture<'a, Result<RecordedBy, Failure>>;
}

/// Who makes a recording: what finishes it after a restart, and where its file is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordedBy {
    /// This node's SFU, writing under RECORDINGS_DIR.
    Here,
    /// Another node's SFU (the owner of the call's room in a cluster), writing to
    /// the RECORDINGS_DIR the nodes share.
    Node(String),
    /// LiveKit Egress: the file stays in the storage Egress writes to.
    LiveKit,
}

/// What a plane is asked to do about a call's recording.
#[derive(Debug, Clone)]
pub enum RecordingOrder {
    Start(RecordingSpec),
    Stop { id: String },
}

/// What became of recording `id` of `call`, from the plane that makes it (the SFU's
/// writer, LiveKit's egress webhook).
#[derive(Debug)]
pub struct RecordingReport {
    pub call: CallId,
    pub id: String,
    pub event: RecordingEvent,
}

/// A recording asked of a call whose media does not pass through this server.
pub fn cannot_record(mode: MediaMode) -> Failure {
    Failure::new(
        StatusCode::CONFLICT,
        "RECORDING_UNAVAILABLE",
        format!(
            "a {} call's media does not pass through a server that records it",
            mode.as_str()
        ),
    )
}

/// Calls whose media needs nothing from this server: `p2p` calls (members send each
/// other `webrtc:*` messages), and `livekit` calls once LiveKit is no longer
/// configured (their tokens cannot be minted).
#[derive(Debug)]
struct NoRoom(MediaMode);

impl MediaPlane for NoRoom {
    fn token(&self, _: &CallSnapshot, _: &UserId) -> Result<Value, ServiceError> {
        match self.0 {
            MediaMode::Livekit => Err(ServiceError::Media(
                "this livekit call's server no longer has LiveKit configured".into(),
            )),
            MediaMode::Sfu | MediaMode::P2p => Ok(Value::Null),
        }
    }

    fn signal<'a>(
        &'a self,
        _: &'a CallSnapshot,
        _: &'a UserId,
        _: SfuMessage,
    ) -> BoxFuture<'a, Result<Value, Failure>> {
        Box::pin(async move { Err(not_an_sfu_call(self.0)) })
    }

    fn call_changed(&self, _: &CallSnapshot, _: &[CallEvent]) {}

    fn recording<'a>(
        &'a self,
        _: &'a CallSnapshot,
        _: RecordingOrder,
    ) -> BoxFuture<'a, Result<RecordedBy, Failure>> {
        Box::pin(async move { Err(cannot_record(self.0)) })
    }
}

/// A message for `"sfu"` about a call whose media does not go through the SFU.
pub fn not_an_sfu_call(mode: MediaMode) -> Failure {
    let message = match mode {
        MediaMode::Livekit => "this call's media is LiveKit: connect with its token",
        MediaMode::Sfu | MediaMode::P2p => {
            "this call's media is p2p: send webrtc messages to its members"
        }
    };
    Failure::new(StatusCode::CONFLICT, "NOT_AN_SFU_CALL", message)
}

/// The plane of each media mode.
#[derive(Debug)]
pub struct Planes {
    sfu: Arc<dyn MediaPlane>,
    livekit: Arc<dyn MediaPlane>,
    p2p: Arc<dyn MediaPlane>,
}

impl Planes {
    /// `sfu` carries `sfu` calls; `livekit`, when configured, `livekit` calls.
    pub fn new(sfu: Arc<dyn MediaPlane>, livekit: Option<Arc<dyn MediaPlane>>) -> Self {
        Planes {
            sfu,
            livekit: livekit.unwrap_or_else(|| Arc::new(NoRoom(MediaMode::Livekit))),
            p2p: Arc::new(NoRoom(MediaMode::P2p)),
        }
    }

    /// The plane of calls in `mode`.
    pub fn of(&self, mode: MediaMode) -> &dyn MediaPlane {
        match mode {
            MediaMode::Sfu => &*self.sfu,
            MediaMode::Livekit => &*self.livekit,
            MediaMode::P2p => &*self.p2p,
        }
    }
}

/// What start, join and token responses hand a client for its media.
#[derive(Debug)]
pub struct MediaAccess {
    /// STUN and TURN, with TURN credentials minted per user.
    pub ice: IceServers,
    pub planes: Arc<Planes>,
}

impl MediaAccess {
    /// What `user` needs to connect media: the call with its participants, the
    /// plane's token (`null` for the built-in SFU and p2p, LiveKit's for a `livekit`
    /// call), and the ICE servers.
    pub fn connect_data(&self, call: &CallSnapshot, user: &UserId) -> Result<Value, ServiceError> {
        Ok(json!(ConnectData {
            call: CallData::from(call),
            media: self.credentials(call, user)?,
        }))
    }

    /// The plane's token and the ICE servers, minted for `user` now.
    pub fn credentials(
        &self,
        call: &CallSnapshot,
        user: &UserId,
    ) -> Result<MediaCredentials, ServiceError> {
        Ok(MediaCredentials {
            token: self.planes.of(call.call.media_mode).token(call, user)?,
            ice_servers: self.ice.for_user(&user.0),
        })
    }
}

/// What a member needs to connect a call's media.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MediaCredentials {
    /// `null` for `sfu` and `p2p` calls; for a `livekit` call, LiveKit's access:
    /// `{ token, url, roomName, identity }`.
    #[schema(value_type = Option<Object>)]
    token: Value,
    /// In the browser's `RTCIceServer` shape, TURN credentials minted for the caller.
    ice_servers: Vec<IceServer>,
}

/// The answer to start and join: the call and its members, and how to connect.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConnectData<'a> {
    #[serde(flatten)]
    call: CallData<'a>,
    #[serde(flatten)]
    media: MediaCredentials,
}
