//! A call recording as stored (`call_recordings`) and as the wire shows it, the
//! setting that says who may start one, and where its file lives.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rooms::record::RecordedTrack;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::calls::lifecycle::CallSnapshot;
use crate::calls::model::{CallId, RecordingStatus, UserId};

/// The only file format the SFU writes: WebM (Matroska), holding what it forwards.
pub const WEBM: &str = "webm";

/// The `node` of a recording LiveKit Egress makes: no Huddle node finishes it after a
/// restart or sweeps its file; its `egress_ended` webhook completes it.
pub const LIVEKIT_NODE: &str = "livekit";

/// One recording of a call.
#[derive(Debug, Clone, PartialEq)]
pub struct Recording {
    pub id: Uuid,
    pub call_id: CallId,
    pub status: RecordingStatus,
    pub format: String,
    pub started_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    /// Seconds, from its start to its last frame; known once completed.
    pub duration: Option<f64>,
    /// Bytes of the file; known once completed.
    pub size: Option<i64>,
    pub tracks: Vec<RecordingTrack>,
    /// Why it stopped (`asked`, `call_ended`, `limit`, `failed`); `None` while recording.
    pub reason: Option<String>,
    /// What went wrong, for a `failed` one (logged and stored, never sent).
    pub error: Option<String>,
    /// The NODE_ID of the node whose disk holds the file (and which finishes the
    /// recording after a restart).
    pub node: String,
    pub started_by: UserId,
    /// Frames the writer could not keep up with.
    pub dropped_frames: Option<i64>,
    /// Where LiveKit Egress stored a completed recording of a `livekit` call (its
    /// file's `location`): such a file is not on Huddle's disk and not served by it.
    pub location: Option<String>,
}

impl Recording {
    /// A recording of `call` that `user` starts now on `node`.
    pub fn new(call: CallId, user: &UserId, node: &str, now: DateTime<Utc>) -> Self {
        Recording {
            id: Uuid::new_v4(),
            call_id: call,
            status: RecordingStatus::Recording,
            format: WEBM.to_owned(),
            started_at: now,
            ended_at: None,
            duration: None,
            size: None,
            tracks: Vec::new(),
            reason: None,
            error: None,
            node: node.to_owned(),
            started_by: user.clone(),
            dropped_frames: None,
            location: None,
        }
    }

    /// Whether LiveKit Egress makes it (its `node` is [`LIVEKIT_NODE`]).
    pub fn by_livekit(&self) -> bool {
        self.node == LIVEKIT_NODE
    }

    /// Its file, relative to RECORDINGS_DIR: `<callId>/<recordingId>.webm`. Made from
    /// the parsed ids only, so no stored text can point outside the directory.
    pub fn relative_path(&self) -> PathBuf {
        Path::new(&self.call_id.to_string()).join(format!("{}.{WEBM}", self.id.hyphenated()))
    }

    /// Where it is downloaded from, once completed (and on Huddle's disk).
    pub fn url(&self) -> Option<String> {
        (self.status == RecordingStatus::Completed && self.location.is_none()).then(|| {
            format!(
                "/api/v1/calls/{}/recording?download=true&recordingId={}",
                self.call_id, self.id
            )
        })
    }
}

/// One track of a completed recording, as stored (JSON text) and shown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecordingTrack {
    /// Whose it is.
    pub user_id: String,
    /// `audio` or `video`.
    pub kind: String,
    /// `microphone`, `camera`, `screen` or `screen_audio`.
    pub source: String,
    /// As negotiated: `audio/opus`, `video/VP8`, ...
    pub codec: String,
    /// Seconds from the recording's start to the track's first frame.
    pub start: f64,
    /// ... and to its last.
    pub end: f64,
    pub frames: u64,
}

impl From<&RecordedTrack> for RecordingTrack {
    fn from(t: &RecordedTrack) -> Self {
        RecordingTrack {
            user_id: t.peer.0.clone(),
            kind: t.kind.as_str().to_owned(),
            source: t.source.as_str().to_owned(),
            codec: t.codec.clone(),
            start: t.start.as_secs_f64(),
            end: t.end.as_secs_f64(),
            frames: t.frames,
        }
    }
}

/// Who may start and stop a call's recordings (RECORDING_POLICY). Admins (a token
/// with `"role": "admin"`) always may, in a call they are a member of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RecordingPolicy {
    /// The call's initiator.
    Initiator,
    /// Anyone who has joined the call.
    Member,
    /// Admins only.
    Admin,
}

impl RecordingPolicy {
    /// Whether `user` (an admin or not) may start, stop or delete `call`'s recordings.
    pub fn allows(self, call: &CallSnapshot, user: &UserId, admin: bool) -> bool {
        admin
            || match self {
                RecordingPolicy::Initiator => call.call.initiator_id == *user,
                RecordingPolicy::Member => call.member(user).is_some_and(|p| p.joined_at.is_some()),
                RecordingPolicy::Admin => false,
            }
    }
}

/// What the recording settings (RECORDING_*) say.
#[derive(Debug, Clone)]
pub struct RecordingSettings {
    /// RECORDINGS_DIR, made absolute.
    pub dir: PathBuf,
    pub policy: RecordingPolicy,
    /// Completed and failed recordings older than this are deleted; `None`: kept.
    pub retention: Option<chrono::Duration>,
    pub max_bytes: u64,
    pub max_duration: Duration,
    /// This node's NODE_ID.
    pub node: String,
}
