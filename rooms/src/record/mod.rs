//! Recording a room: what it forwards, written without transcoding to one WebM file
//! per recording.
//!
//! CONTRACT (rec-base): the public types and signatures below are what the huddle
//! crate codes against; the rooms helper fills in the implementation and may add to
//! (not change) this API. Remove this paragraph when implemented.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::{PeerId, Source};

/// What to record and where: asked of a room by [`crate::Sfu::start_recording`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingSpec {
    /// The recording's id (`call_recordings.id`), named in its events.
    pub id: String,
    /// Where the finished WebM file goes. While recording, frames are appended to
    /// [`spool_path`]`(path)`; the WebM is written from it when the recording stops
    /// (or by [`recover`] after a crash).
    pub path: PathBuf,
    /// The recording stops with [`StopReason::Limit`] once its spool holds this many
    /// bytes.
    pub max_bytes: u64,
    /// ... or once it has run this long.
    pub max_duration: Duration,
}

/// Why a recording stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StopReason {
    /// Stopped on request ([`crate::Sfu::stop_recording`]).
    Asked,
    /// The room closed (its call ended).
    CallEnded,
    /// It reached its size or duration limit.
    Limit,
    /// Writing failed (an unwritable directory, a full disk).
    Failed,
}

impl StopReason {
    /// As the wire names it: `asked`, `call_ended`, `limit`, `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::Asked => "asked",
            StopReason::CallEnded => "call_ended",
            StopReason::Limit => "limit",
            StopReason::Failed => "failed",
        }
    }
}

/// Audio or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrackKind {
    Audio,
    Video,
}

impl TrackKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TrackKind::Audio => "audio",
            TrackKind::Video => "video",
        }
    }
}

/// One track of a finished recording.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedTrack {
    /// Whose it is.
    pub peer: PeerId,
    pub kind: TrackKind,
    pub source: Source,
    /// The codec's MIME type, as negotiated (`audio/opus`, `video/VP8`, ...).
    pub codec: String,
    /// When its first and last frames are, from the recording's start.
    pub start: Duration,
    pub end: Duration,
    /// Frames written.
    pub frames: u64,
}

/// A finished recording's file.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordingResult {
    pub path: PathBuf,
    /// Bytes of the WebM file.
    pub size: u64,
    /// From its start to its last frame.
    pub duration: Duration,
    pub tracks: Vec<RecordedTrack>,
    /// Frames the writer could not keep up with (a slow disk), dropped and counted.
    pub dropped_frames: u64,
}

/// What a room reports about one of its recordings, as
/// [`crate::SfuEvent::Recording`].
#[derive(Debug, Clone, PartialEq)]
pub enum RecordingEvent {
    /// The room stopped recording; the file is being written. Sent once per
    /// recording, whatever stopped it.
    Stopped { reason: StopReason },
    /// The file is written. Follows `Stopped`.
    Completed(RecordingResult),
    /// Nothing playable could be written. Follows `Stopped`.
    Failed { error: String },
}

/// Where frames are appended while `path` is being recorded.
pub fn spool_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".spool");
    PathBuf::from(name)
}

/// Writes the WebM file `path` from the spool a stopped process left behind
/// (playable up to the crash), and removes the spool. Blocking: call it from
/// `spawn_blocking`.
pub fn recover(path: &Path) -> std::io::Result<RecordingResult> {
    let _ = path;
    Err(std::io::Error::other("CONTRACT: not implemented yet"))
}
