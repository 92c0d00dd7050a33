//! # Huddle rooms: the selective forwarding unit
//!
//! Everything that carries media in Huddle. A [`Room`] holds the WebRTC peer
//! connections of one call and forwards every participant's audio and video to every
//! other participant. It is sans-IO: datagrams, commands and the current time go in,
//! datagrams, signals and quality reports come out, so its tests run in simulated time.
//! [`Sfu`] is the async edge: one UDP port for every room ([`port`]), one task per room
//! ([`actor`]), on a runtime of the SFU's own when [`SfuConfig::threads`] asks for one,
//! and the handle the server talks to.
//!
//! ## Design
//! - **One UDP port.** Every peer connection of the server shares it. A datagram from
//!   an address learnt before goes to that address's connection. An address is learnt
//!   only from a STUN binding request that names a connection by the server's ICE
//!   username fragment in its `USERNAME` (each connection has its own) *and* carries a
//!   `MESSAGE-INTEGRITY` made with that connection's ICE password: a ufrag travels in
//!   the clear, the password only in the SDP. Each connection keeps its four latest
//!   addresses. Anything else is dropped and counted ([`port::Routes`]).
//! - **ICE-lite, DTLS-SRTP.** The server never sends connectivity checks; it answers
//!   the client's and learns its address from them. AES-GCM SRTP profiles are
//!   preferred when the client offers them.
//! - **Two connections per participant.** The *publish* connection carries what the
//!   participant sends: the client always offers, the server always answers. The
//!   *subscribe* connection carries what they receive: the server always offers, the
//!   client always answers. Each connection has one offerer, so nothing can glare,
//!   and the server keeps at most one offer outstanding per subscriber, folding
//!   changes that happen meanwhile into the next one. An answer it refuses is
//!   followed by an offer again, so a subscriber is never left without one.
//! - **One task per room.** The room owns its connections, so forwarding is plain
//!   `&mut` code: no locks between a packet's arrival and its copies leaving. Its
//!   commands (publish, answer, mute, leave) arrive in one ordered queue, apart from
//!   datagrams, so a leave never overtakes the mute sent before it. Rooms spread over
//!   the threads of the SFU's runtime; a room runs on one at a time.
//! - **Batched UDP.** The port reads with `recvmmsg`; a room reads every datagram
//!   queued for it before it drains its connections, and what that round of work
//!   produced leaves in `sendmmsg` calls (`udp.rs`).
//! - **Each connection its own interceptors.** A forwarded packet walks its subscribe
//!   connection's whole interceptor chain, so each direction gets only what it uses
//!   (publish: NACKs out, receiver reports, transport-wide feedback; subscribe: NACK
//!   answers, sender reports, keyframe requests in).
//! - **Closed means closed.** [`Sfu`] remembers the rooms it closed: a publish that
//!   arrives after its call ended is refused instead of starting a room again.
//! - **Connections are visible.** Each connection's ICE and connection state changes
//!   are logged at `debug` with the call, the participant and which connection;
//!   whether it came up or failed (ICE never connected, ICE lost, DTLS) is counted
//!   in [`ConnectionCounters`], which [`Sfu::connection_counters`] exposes.
//! - **No clock inside.** [`Room`] takes `now` with every input and says when it
//!   next needs [`Room::handle_timeout`]; only the actor reads the clock.
//! - **Recording stays off the forwarding path.** A recording room ([`record`])
//!   assembles what it forwards into whole frames and hands them to a writer
//!   thread through a bounded queue: a slow disk drops recorded frames (counted),
//!   never a call's packets. The writer appends to a spool a crash leaves readable,
//!   and writes the WebM when the recording stops; it outlives the room, to finish
//!   the file when the call ends, and holds only a weak handle to ask it to stop
//!   (full disk, size limit), so a closed room still ends.

pub mod actor;
mod codecs;
mod feedback;
pub mod port;
pub mod record;
pub mod room;
mod sfu;
mod stun;
mod udp;

pub use codecs::{host_candidate, single_stream_track};
pub use room::{ConnectionCounters, Output, Room, RoomConfig, RoomError, Signal, TrackInfo};
pub use sfu::{SFU_THREAD, Sfu, SfuConfig, SfuEvent};

use std::fmt;

/// A participant of a room: the call member's user id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub String);

/// A room: one per call.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomId(pub String);

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for RoomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a published track carries. The client names it per track id when it
/// publishes; unnamed audio is the microphone and unnamed video the camera.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    Microphone,
    Camera,
    Screen,
    ScreenAudio,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Microphone => "microphone",
            Source::Camera => "camera",
            Source::Screen => "screen",
            Source::ScreenAudio => "screen_audio",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "microphone" => Source::Microphone,
            "camera" => Source::Camera,
            "screen" => Source::Screen,
            "screen_audio" => Source::ScreenAudio,
            _ => return None,
        })
    }
}

/// Which of a participant's media a mute switch governs, as the call's toggles name
/// them: audio is the microphone, video the camera, screen share both screen tracks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaSwitch {
    Audio,
    Video,
    ScreenShare,
}

impl MediaSwitch {
    fn governs(self, source: Source) -> bool {
        matches!(
            (self, source),
            (MediaSwitch::Audio, Source::Microphone)
                | (MediaSwitch::Video, Source::Camera)
                | (
                    MediaSwitch::ScreenShare,
                    Source::Screen | Source::ScreenAudio
                )
        )
    }
}

/// Quality the SFU measured for one participant over the last reporting period.
#[derive(Debug, Clone, PartialEq)]
pub struct QualityStats {
    /// Share of the participant's packets lost on the way to the server, percent.
    pub packet_loss: f64,
    /// Largest inter-arrival jitter of their inbound streams, milliseconds.
    pub jitter_ms: f64,
    /// Round trip to them as their receiver reports show it, milliseconds.
    pub round_trip_ms: Option<f64>,
    /// Bits per second received from them.
    pub bitrate: f64,
}

#[cfg(test)]
mod room_tests;
#[cfg(test)]
mod sim;
