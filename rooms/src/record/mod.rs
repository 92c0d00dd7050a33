//! Recording a room: what it forwards, written without transcoding to one WebM file
//! per recording.
//!
//! Three stages, so that nothing slow touches the forwarding path:
//! - **Frames** (`frames.rs`): inside the sans-IO [`crate::Room`], each forwarded packet
//!   of a recorded track goes through a small reorder buffer to a frame assembler.
//!   Only whole frames leave it: a lost packet drops the frame it belonged to, and a
//!   video track then waits for its next keyframe (and asks for one). Every frame is
//!   stamped on one clock, the recording's: a track's first frame at its arrival,
//!   later ones by their RTP timestamps.
//! - **Spool** (`spool.rs`, `writer.rs`): frames reach a writer thread through a
//!   bounded queue; a full queue drops the frame and counts it rather than wait.
//!   The writer appends them to a spool file in arrival order, which a crash leaves
//!   readable up to its last whole record.
//! - **Mux** (`mux.rs`): when the recording stops (or by [`recover`] after a crash),
//!   the spool is written as WebM with libwebm (the `webm` crate), the reference
//!   muxer Chrome's MediaRecorder uses, which writes the cues and duration a player
//!   needs to seek. Frames are merged by timestamp across tracks as libwebm requires.

mod frames;
mod mux;
mod spool;
mod writer;

pub(crate) use frames::Recorder;
#[cfg(test)]
pub(crate) use writer::{Feed, QUEUE, channel};
pub(crate) use writer::{Sink, start as start_writer};

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;

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
    let spool = spool_path(path);
    if !spool.try_exists()? {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("no spool at {}", spool.display()),
        ));
    }
    // How many frames the writer dropped died with the process.
    mux::write_webm(path, 0)
}

/// A track as the room describes it to the writer, when its first packet is
/// recorded.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TrackMeta {
    /// The room's key for the track, which its frames name.
    pub key: u32,
    pub peer: PeerId,
    pub kind: TrackKind,
    pub source: Source,
    /// The negotiated MIME type.
    pub codec: String,
    pub clock_rate: u32,
}

/// One whole frame of a track, depacketized.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Frame {
    pub track: u32,
    /// On the recording's clock.
    pub at: Duration,
    pub keyframe: bool,
    pub data: Bytes,
}

/// What the room sends the writer, in order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Entry {
    Track(TrackMeta),
    Frame(Frame),
}

/// The codecs a WebM file holds, which are the ones recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Codec {
    Opus,
    Vp8,
    Vp9,
}

impl Codec {
    /// The recordable codec of MIME type `mime`; `None` for H.264 and others WebM
    /// cannot hold.
    pub(crate) fn from_mime(mime: &str) -> Option<Self> {
        if mime.eq_ignore_ascii_case("audio/opus") {
            Some(Codec::Opus)
        } else if mime.eq_ignore_ascii_case("video/vp8") {
            Some(Codec::Vp8)
        } else if mime.eq_ignore_ascii_case("video/vp9") {
            Some(Codec::Vp9)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests;
