//! [`Room`]: one call's peer connections and the forwarding between them, as a
//! sans-IO state machine. Inputs carry `now`; outputs are drained with
//! [`Room::poll_output`]; [`Room::poll_timeout`] says when time must be fed in next.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::{RTCIceConnectionState, RTCPeerConnectionState};
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RtpCodecKind};
use rtc::rtp_transceiver::{RTCRtpReceiverId, RTCRtpSenderId};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use rtc::statistics::StatsSelector;
use rtc::statistics::report::RTCStatsReportEntry;

use crate::codecs::{self, Direction};
use crate::feedback;
use crate::record::{Recorder, RecordingSpec, Sink, StopReason, TrackKind, TrackMeta};
use crate::{MediaSwitch, PeerId, QualityStats, RoomId, Source};

/// How a room behaves; the same for every room of a server.
#[derive(Debug, Clone)]
pub struct RoomConfig {
    /// The address every connection announces as its one ICE candidate: the public
    /// IP and the media port.
    pub announce: SocketAddr,
    /// Participants at most; one more is refused.
    pub max_peers: usize,
    /// Shortest gap between two keyframe requests relayed to one published track.
    pub keyframe_interval: Duration,
    /// How often each participant's quality is measured and reported.
    pub stats_interval: Duration,
    /// Offers a participant may send in a burst, and then one per second.
    pub offer_burst: u32,
    /// Where the rooms count how their connections fare; shared by every room of a
    /// server, and read by its metrics.
    pub counters: Arc<ConnectionCounters>,
}

/// How the peer connections of every room fared since the server started, for
/// metrics: comparing the failures with [`ConnectionCounters::connected`] tells
/// whether clients cannot reach the media port (TURN, firewalls) or fail later.
#[derive(Debug, Default)]
pub struct ConnectionCounters {
    /// Connections that came up (ICE and DTLS connected), each counted once.
    pub connected: AtomicU64,
    /// Connections whose ICE did not connect within 20 s of being negotiated: the
    /// client's connectivity checks never arrived, or never passed. Typically a
    /// client that cannot reach the media port (no TURN, a firewall).
    pub connect_timeouts: AtomicU64,
    /// Connections whose ICE, once connected, failed: the client stopped answering
    /// (network lost, or gone without leaving).
    pub ice_failed: AtomicU64,
    /// Connections that failed while their ICE was up: the DTLS handshake failed or
    /// did not complete within 20 s of negotiation (say, a certificate that does not
    /// match the SDP's fingerprint), or DTLS failed later.
    pub dtls_failed: AtomicU64,
}

impl RoomConfig {
    /// Defaults for a server announcing `announce`.
    pub fn new(announce: SocketAddr) -> Self {
        Self {
            announce,
            max_peers: 8,
            keyframe_interval: Duration::from_millis(500),
            stats_interval: Duration::from_secs(5),
            offer_burst: 10,
            counters: Arc::default(),
        }
    }
}

/// Why a room refused something. Nothing changed when one is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RoomError {
    #[error("the call's media room is full ({0} participants)")]
    Full(usize),
    #[error("invalid SDP: {0}")]
    InvalidSdp(String),
    #[error("the offer has no audio or video codec the server forwards (Opus, VP8, VP9, H.264)")]
    NoUsableCodecs,
    #[error("too many offers; at most one a second after a short burst")]
    TooManyOffers,
    #[error("the server has no offer waiting for an answer")]
    UnexpectedAnswer,
    #[error("not in the call's media room; send an offer first")]
    NotInRoom,
    #[error("the call's media room is closed")]
    Closed,
    #[error("recording: {0}")]
    Recording(String),
    #[error("media server error: {0}")]
    Internal(String),
}

/// A message for a participant's client, sent as `webrtc:offer` from `"sfu"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    /// A new description of the subscribe connection, to be answered, and whose
    /// media each of its sections carries.
    Offer { sdp: String, tracks: Vec<TrackInfo> },
}

/// Whose media an m-section of a subscribe offer carries, by its `mid`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackInfo {
    pub mid: String,
    pub peer: PeerId,
    pub source: Source,
}

/// One of a room's peer connections, as the UDP port knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId(pub u32);

/// A change to how the UDP port routes datagrams to this room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// STUN requests naming `ufrag` and signed with `pwd` (the connection's ICE
    /// credentials), and after them datagrams from their source address, go to `conn`.
    Add {
        ufrag: String,
        pwd: String,
        conn: ConnId,
    },
    /// `conn` is closed: forget `ufrag` and every address learnt for it.
    Remove { ufrag: String, conn: ConnId },
}

/// What a room asks of the world.
#[derive(Debug)]
pub enum Output {
    /// Send `data` to `to` from the media port.
    Transmit { to: SocketAddr, data: BytesMut },
    /// Deliver `signal` to `peer`'s client.
    Signal { peer: PeerId, signal: Signal },
    /// Update the port's routes.
    Route(Route),
    /// Quality measured for `peer`.
    Quality { peer: PeerId, stats: QualityStats },
}

/// One call's media: its participants' connections and the tracks between them.
#[derive(Debug)]
pub struct Room {
    /// The call, named in what the room logs.
    id: RoomId,
    config: RoomConfig,
    peers: Vec<Peer>,
    tracks: Vec<TrackIn>,
    /// Source of [`ConnId`]s and track keys, unique for the room's life.
    next_id: u32,
    outputs: VecDeque<Output>,
    /// Peers (by index) whose connections were written to since they were drained.
    dirty: PeerSet,
    next_stats: Option<Instant>,
    /// The recording in progress, which sees every packet forwarded.
    recording: Option<Recorder>,
}

/// A participant.
struct Peer {
    id: PeerId,
    /// Carries what the participant sends; the client offers on it.
    publish: Conn,
    /// Carries what the participant receives; the server offers on it.
    subscribe: Conn,
    /// The offer sent on the subscribe connection and not answered yet: what an
    /// answer is checked against, and sent again when an answer to it is refused.
    offered: Option<Signal>,
    /// The subscribe connection changed since the last offer.
    needs_offer: bool,
    /// What each of their published tracks carries, by the client's track id.
    sources: HashMap<String, Source>,
    /// Media they switched off: audio, video, screen share.
    muted: [bool; 3],
    /// Offers they may still send now (refilled one a second).
    offer_tokens: f64,
    last_offer: Instant,
    /// Other participants' tracks, as sent to this one.
    downtracks: Vec<DownTrack>,
    /// Counters at the last quality report, to report the difference.
    baseline: Counters,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("id", &self.id)
            .field("tracks", &self.downtracks.len())
            .finish_non_exhaustive()
    }
}

struct Conn {
    id: ConnId,
    pc: RTCPeerConnection,
    ufrag: String,
    /// Its last ICE connection state reported: a connection that fails with ICE
    /// still up failed in DTLS.
    ice: RTCIceConnectionState,
    /// ICE connected at least once: tells a lost connection from one that never
    /// came up.
    ice_was_connected: bool,
    /// The connection came up at least once (counted then).
    was_connected: bool,
    /// It failed (counted then; a connection's failure is counted once).
    failed: bool,
    /// When it must have come up, since it was negotiated; `None` before, and once it
    /// came up or failed.
    connect_by: Option<Instant>,
}

impl Conn {
    /// Negotiation started (its first offer and answer are applied): the connection
    /// has [`CONNECT_TIMEOUT`] to come up.
    fn negotiated(&mut self, now: Instant) {
        if !self.was_connected && !self.failed && self.connect_by.is_none() {
            self.connect_by = Some(now + CONNECT_TIMEOUT);
        }
    }
}

/// How long a connection may take from its negotiation to coming up before it
/// counts as failed: longer than any working ICE and DTLS handshake, shorter than
/// ICE's own 30 s, so one that never connects is counted here and not twice.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// Why a connection failed, as counted in [`ConnectionCounters`].
#[derive(Debug, Clone, Copy)]
enum Failure {
    NeverConnected,
    IceLost,
    Dtls,
}

/// A track a participant publishes.
#[derive(Debug)]
struct TrackIn {
    key: u32,
    publisher: PeerId,
    /// The SDP-safe stream id the publisher's tracks are sent under (`p<n>`), so
    /// that a subscriber's browser syncs their audio and video.
    stream: String,
    /// The publisher's track id (from their SDP's `msid`).
    track_id: String,
    receiver: RTCRtpReceiverId,
    kind: RtpCodecKind,
    source: Source,
    ssrc: u32,
    /// Known from the first packet: what the downtracks are negotiated with.
    codec: Option<RTCRtpCodec>,
    last_keyframe_request: Option<Instant>,
}

/// A published track as one subscriber receives it.
#[derive(Debug)]
struct DownTrack {
    track: u32,
    sender: RTCRtpSenderId,
    ssrc: u32,
    /// Our track id on the subscribe connection, which its RTCP names.
    track_id: String,
    /// The payload type the subscriber negotiated for the codec, once known.
    payload_type: Option<u8>,
    /// A keyframe is wanted as soon as this downtrack is negotiated.
    wants_keyframe: bool,
}

#[derive(Debug, Default, Clone, Copy)]
struct Counters {
    received: u64,
    lost: i64,
    bytes: u64,
    at: Option<Instant>,
}

impl Room {
    /// An empty room for call `id`.
    pub fn new(id: RoomId, config: RoomConfig) -> Self {
        Self {
            id,
            config: RoomConfig {
                max_peers: config.max_peers.min(PeerSet::CAPACITY),
                ..config
            },
            peers: Vec::new(),
            tracks: Vec::new(),
            next_id: 1,
            outputs: VecDeque::new(),
            dirty: PeerSet::default(),
            next_stats: None,
            recording: None,
        }
    }

    /// Participants in the room.
    pub fn peers(&self) -> impl Iterator<Item = &PeerId> {
        self.peers.iter().map(|p| &p.id)
    }

    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// `peer` publishes with `offer` (their first, or a renegotiation); returns the
    /// answer. `sources` names what their tracks carry, by track id. The first offer
    /// brings them into the room.
    pub fn publish(
        &mut self,
        now: Instant,
        peer: &PeerId,
        offer: String,
        sources: HashMap<String, Source>,
    ) -> Result<String, RoomError> {
        let offer = codecs::check_offer(offer)?;
        let (index, joined) = match self.index(peer) {
            // A new peer connection from someone already here (their client restarted
            // its media, e.g. after its socket reconnected): start them over.
            Some(i) if self.peers[i].is_new_connection(&offer.sdp) => {
                let old = &mut self.peers[i];
                old.take_offer_token(now, self.config.offer_burst)?;
                let budget = (old.offer_tokens, old.last_offer);
                self.remove(now, i);
                let index = self.join(now, peer)?;
                let new = &mut self.peers[index];
                (new.offer_tokens, new.last_offer) = budget;
                (index, true)
            }
            Some(i) => {
                self.peers[i].take_offer_token(now, self.config.offer_burst)?;
                (i, false)
            }
            None => (self.join(now, peer)?, true),
        };
        let p = &mut self.peers[index];
        let pc = &mut p.publish.pc;
        let answered = pc
            .set_remote_description(now, offer)
            .and_then(|()| {
                let answer = pc.create_answer(None)?;
                pc.set_local_description(now, answer.clone())?;
                Ok(answer)
            })
            .map_err(|e| RoomError::InvalidSdp(e.to_string()));
        let answer = match answered {
            Ok(answer) => answer,
            // A refused first offer leaves nobody half-joined (though `join` already
            // subscribed them to the tracks in the room).
            Err(e) if joined => {
                self.remove(now, index);
                self.drain(now);
                return Err(e);
            }
            // `rtc` moves to have-remote-offer before it finishes checking an offer:
            // without a rollback every later offer would be refused as an invalid
            // signaling state transition, and the participant could never publish
            // again.
            Err(e) => {
                let rollback = RTCSessionDescription::rollback(None)
                    .and_then(|rollback| pc.set_remote_description(now, rollback));
                if let Err(r) = rollback {
                    tracing::warn!(peer = %p.id, error = %r, "could not roll back a refused offer");
                }
                return Err(e);
            }
        };
        p.sources.extend(sources);
        p.publish.negotiated(now);
        self.dirty.insert(index);
        self.drain(now);
        Ok(codecs::candidates_in_every_section(&answer.sdp))
    }

    /// `peer`'s client answers the server's last offer on their subscribe connection.
    /// A refused answer leaves the connection answerable: the offer is sent again, or
    /// a fresh one (see [`Room::answer_refused`]), so the subscriber is never left
    /// without one.
    pub fn answer(&mut self, now: Instant, peer: &PeerId, answer: String) -> Result<(), RoomError> {
        let index = self.index(peer).ok_or(RoomError::NotInRoom)?;
        let p = &mut self.peers[index];
        let Some(Signal::Offer { sdp: offer, .. }) = &p.offered else {
            return Err(RoomError::UnexpectedAnswer);
        };
        let applied = codecs::check_answer(answer, offer).and_then(|answer| {
            p.subscribe
                .pc
                .set_remote_description(now, answer)
                .map_err(|e| RoomError::InvalidSdp(e.to_string()))
        });
        if let Err(e) = applied {
            self.answer_refused(now, index);
            self.drain(now);
            return Err(e);
        }
        let p = &mut self.peers[index];
        p.offered = None;
        p.subscribe.negotiated(now);
        for down in &mut p.downtracks {
            down.payload_type = None;
        }
        self.dirty.insert(index);
        if self.peers[index].needs_offer {
            self.offer(now, index);
        }
        self.drain(now);
        Ok(())
    }

    /// Switches forwarding of `peer`'s `media` off (muted) or back on.
    pub fn set_muted(&mut self, now: Instant, peer: &PeerId, media: MediaSwitch, muted: bool) {
        let Some(index) = self.index(peer) else {
            return;
        };
        let was = std::mem::replace(&mut self.peers[index].muted[media as usize], muted);
        if was && !muted {
            // Coming back: subscribers need a keyframe to show the video again.
            let keys: Vec<u32> = self
                .tracks
                .iter()
                .filter(|t| t.publisher == *peer && media.governs(t.source))
                .map(|t| t.key)
                .collect();
            for key in keys {
                self.request_keyframe(now, key);
            }
            self.drain(now);
        }
    }

    /// `peer` is gone (left, dropped or removed): their connections close and their
    /// tracks end for everybody else.
    pub fn leave(&mut self, now: Instant, peer: &PeerId) {
        if let Some(index) = self.index(peer) {
            self.remove(now, index);
            self.drain(now);
        }
    }

    /// Starts recording what the room forwards, as `spec` says, into the sink
    /// `sink` makes (called only when the room is not recording already: it
    /// creates the spool and starts the writer). Every video track is asked for a
    /// keyframe, which its recording starts with.
    pub(crate) fn start_recording(
        &mut self,
        now: Instant,
        spec: &RecordingSpec,
        sink: impl FnOnce() -> Result<Sink, RoomError>,
    ) -> Result<(), RoomError> {
        if self.recording.is_some() {
            return Err(RoomError::Recording("already recording".into()));
        }
        self.recording = Some(Recorder::new(
            now,
            spec.id.clone(),
            spec.max_duration,
            sink()?,
        ));
        let keys: Vec<u32> = self.tracks.iter().map(|t| t.key).collect();
        for key in keys {
            if let Some(track) = self.tracks.iter_mut().find(|t| t.key == key) {
                track.last_keyframe_request = None;
            }
            self.request_keyframe(now, key);
        }
        self.drain(now);
        Ok(())
    }

    /// Stops recording `id` with `reason`; nothing if the room does not record it.
    pub(crate) fn stop_recording(&mut self, id: &str, reason: StopReason) {
        if self.recording.as_ref().is_some_and(|r| r.id() == id) {
            self.stop_recording_with(reason);
        }
    }

    fn stop_recording_with(&mut self, reason: StopReason) {
        if let Some(recording) = self.recording.take() {
            recording.stop(reason);
        }
    }

    /// Closes every connection; the room is empty after. A recording stops
    /// ([`StopReason::CallEnded`]).
    pub fn close(&mut self, now: Instant) {
        self.stop_recording_with(StopReason::CallEnded);
        while !self.peers.is_empty() {
            self.remove(now, self.peers.len() - 1);
        }
        self.drain(now);
    }

    /// A datagram for connection `conn` arrived from `from`.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        conn: ConnId,
        from: SocketAddr,
        data: BytesMut,
    ) {
        self.handle_datagrams(now, [(conn, from, data)]);
    }

    /// Datagrams that arrived together, each for connection `conn` from `from`: all
    /// are read before the connections are drained, so what they cause leaves
    /// together too.
    pub fn handle_datagrams(
        &mut self,
        now: Instant,
        datagrams: impl IntoIterator<Item = (ConnId, SocketAddr, BytesMut)>,
    ) {
        let local_addr = self.config.announce;
        for (conn, from, data) in datagrams {
            let Some((index, publish)) = self.conn(conn) else {
                continue;
            };
            let peer = &mut self.peers[index];
            let c = if publish {
                &mut peer.publish
            } else {
                &mut peer.subscribe
            };
            let read = c.pc.handle_read(TaggedBytesMut {
                now,
                transport: TransportContext {
                    local_addr,
                    peer_addr: from,
                    ecn: None,
                    transport_protocol: TransportProtocol::UDP,
                },
                message: data,
            });
            if let Err(e) = read {
                tracing::trace!(peer = %peer.id, error = %e, "dropped a datagram");
            }
            self.dirty.insert(index);
        }
        self.drain(now);
    }

    /// When [`Room::handle_timeout`] is next due.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        let mut next = self.next_stats;
        if let Some(recording) = &self.recording {
            let t = recording.deadline();
            next = Some(next.map_or(t, |n| n.min(t)));
        }
        for p in &mut self.peers {
            for conn in [&mut p.publish, &mut p.subscribe] {
                for t in [conn.pc.poll_timeout(), conn.connect_by]
                    .into_iter()
                    .flatten()
                {
                    next = Some(next.map_or(t, |n| n.min(t)));
                }
            }
        }
        next
    }

    /// Time has reached `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        for (i, p) in self.peers.iter_mut().enumerate() {
            for pc in [&mut p.publish.pc, &mut p.subscribe.pc] {
                if pc.poll_timeout().is_some_and(|t| t <= now) {
                    if let Err(e) = pc.handle_timeout(now) {
                        tracing::debug!(call = %self.id, peer = %p.id, error = %e, "connection timer failed");
                    }
                    self.dirty.insert(i);
                }
            }
        }
        self.check_connect_deadlines(now);
        if self.recording.as_ref().is_some_and(|r| r.deadline() <= now) {
            self.stop_recording_with(StopReason::Limit);
        }
        if self.next_stats.is_some_and(|t| t <= now) {
            self.report_quality(now);
        }
        self.drain(now);
    }

    /// The next thing the room wants done.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    fn index(&self, peer: &PeerId) -> Option<usize> {
        self.peers.iter().position(|p| p.id == *peer)
    }

    /// The peer index of connection `conn`, and whether it is their publish one.
    fn conn(&self, conn: ConnId) -> Option<(usize, bool)> {
        self.peers.iter().enumerate().find_map(|(i, p)| {
            if p.publish.id == conn {
                Some((i, true))
            } else if p.subscribe.id == conn {
                Some((i, false))
            } else {
                None
            }
        })
    }

    fn id(&mut self) -> u32 {
        self.next_id = self.next_id.wrapping_add(1);
        self.next_id
    }

    fn new_conn(&mut self, now: Instant, direction: Direction) -> Result<Conn, RoomError> {
        let ufrag = rtc::ice::rand::generate_ufrag();
        let pwd = rtc::ice::rand::generate_pwd();
        let pc = codecs::peer_connection(now, self.config.announce, &ufrag, &pwd, direction)?;
        let id = ConnId(self.id());
        self.outputs.push_back(Output::Route(Route::Add {
            ufrag: ufrag.clone(),
            pwd,
            conn: id,
        }));
        Ok(Conn {
            id,
            pc,
            ufrag,
            ice: RTCIceConnectionState::New,
            ice_was_connected: false,
            was_connected: false,
            failed: false,
            connect_by: None,
        })
    }

    fn join(&mut self, now: Instant, peer: &PeerId) -> Result<usize, RoomError> {
        if self.peers.len() >= self.config.max_peers {
            return Err(RoomError::Full(self.config.max_peers));
        }
        let publish = self.new_conn(now, Direction::Publish)?;
        let subscribe = self.new_conn(now, Direction::Subscribe)?;
        self.peers.push(Peer {
            id: peer.clone(),
            publish,
            subscribe,
            offered: None,
            needs_offer: false,
            sources: HashMap::new(),
            muted: [false; 3],
            offer_tokens: f64::from(self.config.offer_burst.saturating_sub(1)),
            last_offer: now,
            downtracks: Vec::new(),
            baseline: Counters::default(),
        });
        if self.next_stats.is_none() {
            self.next_stats = Some(now + self.config.stats_interval);
        }
        let index = self.peers.len() - 1;
        let keys: Vec<u32> = self
            .tracks
            .iter()
            .filter(|t| t.codec.is_some())
            .map(|t| t.key)
            .collect();
        for key in keys {
            self.subscribe(now, index, key);
        }
        self.offer(now, index);
        Ok(index)
    }

    fn remove(&mut self, now: Instant, index: usize) {
        let mut peer = self.peers.remove(index);
        for conn in [&mut peer.publish, &mut peer.subscribe] {
            let _ = conn.pc.close();
            while let Some(out) = conn.pc.poll_write() {
                self.outputs.push_back(Output::Transmit {
                    to: out.transport.peer_addr,
                    data: out.message,
                });
            }
            self.outputs.push_back(Output::Route(Route::Remove {
                ufrag: conn.ufrag.clone(),
                conn: conn.id,
            }));
        }
        // Indices above `index` moved down by one.
        self.dirty.remove_index(index);
        let gone: Vec<u32> = self
            .tracks
            .iter()
            .filter(|t| t.publisher == peer.id)
            .map(|t| t.key)
            .collect();
        self.end_tracks(now, &gone);
        // An offer made earlier in the same command (by `join`) is for nobody now.
        self.outputs
            .retain(|o| !matches!(o, Output::Signal { peer: p, .. } if *p == peer.id));
        if self.peers.is_empty() {
            self.next_stats = None;
        }
    }

    /// Subscribes peer `index` to track `key`.
    fn subscribe(&mut self, now: Instant, index: usize, key: u32) {
        let ssrc = self.id().wrapping_mul(2_654_435_761);
        let Some(track) = self.tracks.iter().find(|t| t.key == key) else {
            return;
        };
        let Some(codec) = track.codec.clone() else {
            return;
        };
        let track_id = format!("{}-{}", track.source.as_str(), track.key);
        let local = codecs::single_stream_track(
            track.stream.clone(),
            track_id.clone(),
            track.kind,
            ssrc,
            codec,
        );
        let peer = &mut self.peers[index];
        match peer.subscribe.pc.add_track(local) {
            Ok(sender) => {
                peer.downtracks.push(DownTrack {
                    track: key,
                    sender,
                    ssrc,
                    track_id,
                    payload_type: None,
                    wants_keyframe: true,
                });
                peer.needs_offer = true;
            }
            Err(e) => {
                tracing::warn!(peer = %peer.id, error = %e, "could not add a track for a subscriber");
            }
        }
        let _ = now;
    }

    /// Tracks `keys` ended: they leave every subscriber, each offered the change once
    /// (an offer per track would list the tracks not yet removed).
    fn end_tracks(&mut self, now: Instant, keys: &[u32]) {
        self.tracks.retain(|t| !keys.contains(&t.key));
        if let Some(recording) = &mut self.recording {
            for key in keys {
                recording.end_track(*key);
            }
        }
        for index in 0..self.peers.len() {
            let peer = &mut self.peers[index];
            while let Some(at) = peer.downtracks.iter().position(|d| keys.contains(&d.track)) {
                let down = peer.downtracks.remove(at);
                if let Err(e) = peer.subscribe.pc.remove_track(down.sender) {
                    tracing::debug!(peer = %peer.id, error = %e, "could not remove a track");
                }
                peer.needs_offer = true;
            }
            self.offer(now, index);
        }
    }

    /// An answer to peer `index`'s outstanding offer was refused. The subscriber gets
    /// an offer again either way, so a client that answers every offer recovers
    /// without special handling, and the room still has at most one outstanding.
    /// Usually the answer was refused before it touched the connection, which still
    /// waits in have-local-offer: the same offer is sent again, verbatim. A rollback
    /// and a new offer would not do: the client has applied that offer already, and
    /// the new one would give the same tracks new mids, which a browser refuses as
    /// reordered m-lines. If `rtc` refused it while applying it, the connection is in
    /// stable already (it switches state before checking the rest): nothing is left to
    /// answer, so a fresh offer follows, on the m-lines the refused answer associated.
    fn answer_refused(&mut self, now: Instant, index: usize) {
        let peer = &mut self.peers[index];
        if peer.subscribe.pc.pending_local_description().is_some() {
            if let Some(signal) = peer.offered.clone() {
                self.outputs.push_back(Output::Signal {
                    peer: peer.id.clone(),
                    signal,
                });
            }
            return;
        }
        // On the connection's first negotiation this cannot be repaired: `rtc` starts
        // the transports only with the first answer it applies, so they would never
        // start. `check_answer` refuses beforehand what `rtc` is known to refuse late.
        tracing::warn!(call = %self.id, peer = %peer.id, "a subscribe answer failed half applied; offering afresh");
        peer.offered = None;
        peer.needs_offer = true;
        for down in &mut peer.downtracks {
            down.payload_type = None;
        }
        self.offer(now, index);
    }

    /// Sends peer `index` a new offer for their subscribe connection, unless one is
    /// outstanding (then it follows the answer).
    fn offer(&mut self, now: Instant, index: usize) {
        let peer = &mut self.peers[index];
        if !peer.needs_offer {
            return;
        }
        if peer.offered.is_some() {
            return;
        }
        let pc = &mut peer.subscribe.pc;
        let made = pc.create_offer(None).and_then(|offer| {
            pc.set_local_description(now, offer.clone())?;
            Ok(offer)
        });
        match made {
            Ok(offer) => {
                peer.needs_offer = false;
                let tracks = sections(&offer.sdp)
                    .filter_map(|(mid, track_id)| {
                        let key = peer
                            .downtracks
                            .iter()
                            .find(|d| d.track_id == track_id)?
                            .track;
                        let track = self.tracks.iter().find(|t| t.key == key)?;
                        Some(TrackInfo {
                            mid: mid.to_owned(),
                            peer: track.publisher.clone(),
                            source: track.source,
                        })
                    })
                    .collect();
                let signal = Signal::Offer {
                    sdp: codecs::candidates_in_every_section(&offer.sdp),
                    tracks,
                };
                peer.offered = Some(signal.clone());
                self.outputs.push_back(Output::Signal {
                    peer: peer.id.clone(),
                    signal,
                });
                self.dirty.insert(index);
            }
            Err(e) => tracing::warn!(peer = %peer.id, error = %e, "could not make an offer"),
        }
    }

    /// Asks the publisher of track `key` for a keyframe, at most once per
    /// [`RoomConfig::keyframe_interval`].
    fn request_keyframe(&mut self, now: Instant, key: u32) {
        let interval = self.config.keyframe_interval;
        let Some(track) = self.tracks.iter_mut().find(|t| t.key == key) else {
            return;
        };
        if track.kind != RtpCodecKind::Video
            || track
                .last_keyframe_request
                .is_some_and(|t| now.saturating_duration_since(t) < interval)
        {
            return;
        }
        let Some(index) = self.peers.iter().position(|p| p.id == track.publisher) else {
            return;
        };
        track.last_keyframe_request = Some(now);
        let pli = PictureLossIndication {
            sender_ssrc: 0,
            media_ssrc: track.ssrc,
        };
        if let Some(mut receiver) = self.peers[index].publish.pc.rtp_receiver(track.receiver) {
            if let Err(e) = receiver.write_rtcp(now, vec![Box::new(pli)]) {
                tracing::debug!(error = %e, "could not request a keyframe");
            }
            self.dirty.insert(index);
        }
    }

    /// Drains every connection written to since the last drain: their datagrams,
    /// events and received media, which may write to more connections.
    fn drain(&mut self, now: Instant) {
        while let Some(index) = self.dirty.pop_first() {
            if index >= self.peers.len() {
                continue;
            }
            self.drain_peer(now, index);
        }
    }

    fn drain_peer(&mut self, now: Instant, index: usize) {
        for publish in [true, false] {
            loop {
                let peer = &mut self.peers[index];
                let pc = if publish {
                    &mut peer.publish.pc
                } else {
                    &mut peer.subscribe.pc
                };
                let mut progressed = false;
                while let Some(out) = pc.poll_write() {
                    progressed = true;
                    self.outputs.push_back(Output::Transmit {
                        to: out.transport.peer_addr,
                        data: out.message,
                    });
                }
                if let Some(event) = pc.poll_event() {
                    self.on_event(now, index, publish, event);
                    continue;
                }
                let peer = &mut self.peers[index];
                let pc = if publish {
                    &mut peer.publish.pc
                } else {
                    &mut peer.subscribe.pc
                };
                if let Some(message) = pc.poll_read() {
                    self.on_message(now, index, publish, message.message);
                    continue;
                }
                if !progressed {
                    break;
                }
            }
        }
    }

    fn on_event(
        &mut self,
        now: Instant,
        index: usize,
        publish: bool,
        event: RTCPeerConnectionEvent,
    ) {
        match event {
            RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init)) if publish => {
                let peer = &mut self.peers[index];
                let Some(receiver) = peer.publish.pc.rtp_receiver(init.receiver_id) else {
                    return;
                };
                let kind = receiver.track().kind();
                let source = peer
                    .sources
                    .get(&init.track_id)
                    .copied()
                    .unwrap_or(match kind {
                        RtpCodecKind::Audio => Source::Microphone,
                        _ => Source::Camera,
                    });
                let key = self.id();
                let publisher = &self.peers[index];
                self.tracks.push(TrackIn {
                    key,
                    publisher: publisher.id.clone(),
                    stream: format!("p{}", publisher.publish.id.0),
                    track_id: init.track_id,
                    receiver: init.receiver_id,
                    kind,
                    source,
                    ssrc: init.ssrc,
                    codec: None,
                    last_keyframe_request: None,
                });
            }
            RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnClose(track_id)) if publish => {
                let publisher = &self.peers[index].id;
                if let Some(key) = self
                    .tracks
                    .iter()
                    .find(|t| t.publisher == *publisher && t.track_id == track_id)
                    .map(|t| t.key)
                {
                    self.end_tracks(now, &[key]);
                }
            }
            RTCPeerConnectionEvent::OnIceConnectionStateChangeEvent(state) => {
                self.on_ice_state(index, publish, state);
            }
            RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) => {
                self.on_connection_state(index, publish, state);
                if !publish && state == RTCPeerConnectionState::Connected {
                    // Whatever was requested while the subscriber could not yet decrypt
                    // is lost: they need a fresh keyframe of every video they receive.
                    let keys: Vec<u32> = self.peers[index]
                        .downtracks
                        .iter()
                        .map(|d| d.track)
                        .collect();
                    for key in keys {
                        if let Some(track) = self.tracks.iter_mut().find(|t| t.key == key) {
                            track.last_keyframe_request = None;
                        }
                        self.request_keyframe(now, key);
                    }
                }
            }
            _ => {}
        }
    }

    /// Logs an ICE state change of peer `index`'s publish or subscribe connection,
    /// and counts its failure: the only record of why a client never connected.
    fn on_ice_state(&mut self, index: usize, publish: bool, state: RTCIceConnectionState) {
        let (peer, conn) = self.peers[index].conn_mut(publish);
        conn.ice = state;
        let which = Peer::conn_name(publish);
        tracing::debug!(call = %self.id, %peer, conn = which, %state, "ICE state");
        match state {
            RTCIceConnectionState::Connected | RTCIceConnectionState::Completed => {
                conn.ice_was_connected = true;
            }
            RTCIceConnectionState::Failed => {
                let failure = if conn.ice_was_connected {
                    Failure::IceLost
                } else {
                    Failure::NeverConnected
                };
                self.fail(index, publish, failure);
            }
            _ => {}
        }
    }

    /// Logs a state change of peer `index`'s publish or subscribe connection as a
    /// whole (ICE and DTLS), and counts it coming up or failing in DTLS.
    fn on_connection_state(&mut self, index: usize, publish: bool, state: RTCPeerConnectionState) {
        let (peer, conn) = self.peers[index].conn_mut(publish);
        let which = Peer::conn_name(publish);
        tracing::debug!(call = %self.id, %peer, conn = which, %state, "connection state");
        match state {
            RTCPeerConnectionState::Connected => {
                conn.connect_by = None;
                if !std::mem::replace(&mut conn.was_connected, true) {
                    self.config
                        .counters
                        .connected
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
            // `rtc` reports the connection failed before it reports why: with ICE
            // still up, DTLS failed; otherwise ICE's own event counts the failure.
            RTCPeerConnectionState::Failed
                if matches!(
                    conn.ice,
                    RTCIceConnectionState::Connected | RTCIceConnectionState::Completed
                ) =>
            {
                self.fail(index, publish, Failure::Dtls);
            }
            _ => {}
        }
    }

    /// Peer `index`'s publish or subscribe connection failed: logged and counted,
    /// once per connection.
    fn fail(&mut self, index: usize, publish: bool, failure: Failure) {
        let (peer, conn) = self.peers[index].conn_mut(publish);
        conn.connect_by = None;
        if std::mem::replace(&mut conn.failed, true) {
            return;
        }
        let counters = &self.config.counters;
        let (counter, why) = match failure {
            Failure::NeverConnected => (&counters.connect_timeouts, "ICE never connected"),
            Failure::IceLost => (&counters.ice_failed, "ICE failed after connecting"),
            Failure::Dtls => (&counters.dtls_failed, "DTLS failed"),
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let which = Peer::conn_name(publish);
        tracing::debug!(call = %self.id, %peer, conn = which, ice = %conn.ice, "connection failed: {why}");
    }

    /// Connections negotiated [`CONNECT_TIMEOUT`] ago that have not come up have
    /// failed, though `rtc` may never say so (a DTLS handshake that never completes
    /// stays "connecting").
    fn check_connect_deadlines(&mut self, now: Instant) {
        for index in 0..self.peers.len() {
            for publish in [true, false] {
                let (_, conn) = self.peers[index].conn_mut(publish);
                if conn.connect_by.is_some_and(|by| by <= now) {
                    let failure = if conn.ice_was_connected {
                        Failure::Dtls
                    } else {
                        Failure::NeverConnected
                    };
                    self.fail(index, publish, failure);
                }
            }
        }
    }

    fn on_message(&mut self, now: Instant, index: usize, publish: bool, message: RTCMessage) {
        match message {
            RTCMessage::RtpPacket(track_id, packet) if publish => {
                self.forward(now, index, &track_id, packet);
            }
            RTCMessage::RtcpPacket(track_id, packets)
                if !publish && feedback::wants_keyframe(&packets) =>
            {
                let key = self.peers[index]
                    .downtracks
                    .iter()
                    .find(|d| d.track_id == track_id)
                    .map(|d| d.track);
                if let Some(key) = key {
                    self.request_keyframe(now, key);
                }
            }
            _ => {}
        }
    }

    /// Sends one packet of peer `from`'s track to everybody else subscribed to it.
    fn forward(&mut self, now: Instant, from: usize, track_id: &str, mut packet: rtc::rtp::Packet) {
        let publisher = &self.peers[from];
        let Some(at) = self
            .tracks
            .iter()
            .position(|t| t.publisher == publisher.id && t.track_id == track_id)
        else {
            return;
        };
        if self.tracks[at].codec.is_none() {
            self.learn_codec(now, from, at, packet.header.payload_type);
        }
        // Fields borrowed apart: the track stays borrowed while subscribers change.
        let (tracks, peers, dirty) = (&self.tracks, &mut self.peers, &mut self.dirty);
        let track = &tracks[at];
        let Some(codec) = &track.codec else {
            return;
        };
        if MUTE_SWITCHES
            .iter()
            .any(|s| peers[from].muted[*s as usize] && s.governs(track.source))
        {
            return;
        }
        let key = track.key;
        let mut keyframe = false;
        if let Some(recording) = &mut self.recording {
            let meta = || TrackMeta {
                key,
                peer: track.publisher.clone(),
                kind: match track.kind {
                    RtpCodecKind::Audio => TrackKind::Audio,
                    _ => TrackKind::Video,
                },
                source: track.source,
                codec: codec.mime_type.clone(),
                clock_rate: codec.clock_rate,
            };
            keyframe |= recording.packet(now, key, meta, &packet);
        }
        // Extension ids are per connection; the subscriber's differ.
        packet.header.extension = false;
        packet.header.extensions.clear();
        packet.header.extensions_padding = 0;
        for (index, peer) in peers.iter_mut().enumerate() {
            if index == from {
                continue;
            }
            let Some(down) = peer.downtracks.iter_mut().find(|d| d.track == key) else {
                continue;
            };
            let Some(mut sender) = peer.subscribe.pc.rtp_sender(down.sender) else {
                continue;
            };
            let payload_type = match down.payload_type {
                Some(pt) => pt,
                None => {
                    let negotiated = sender
                        .get_parameters()
                        .rtp_parameters
                        .codecs
                        .iter()
                        .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(&codec.mime_type))
                        .map(|c| c.payload_type);
                    let Some(pt) = negotiated else {
                        continue;
                    };
                    down.payload_type = Some(pt);
                    keyframe |= std::mem::take(&mut down.wants_keyframe);
                    pt
                }
            };
            let mut copy = packet.clone();
            copy.header.ssrc = down.ssrc;
            copy.header.payload_type = payload_type;
            if let Err(e) = sender.write_rtp(now, copy) {
                tracing::trace!(peer = %peer.id, error = %e, "could not forward a packet");
            }
            dirty.insert(index);
        }
        if keyframe {
            self.request_keyframe(now, key);
        }
    }

    /// Track `at` sent its first packet, with `payload_type`: now its codec is known,
    /// every other participant subscribes to it.
    fn learn_codec(&mut self, now: Instant, from: usize, at: usize, payload_type: u8) {
        let receiver = self.tracks[at].receiver;
        let Some(mut receiver) = self.peers[from].publish.pc.rtp_receiver(receiver) else {
            return;
        };
        let codec = receiver
            .get_parameters()
            .rtp_parameters
            .codecs
            .iter()
            .find(|c| c.payload_type == payload_type)
            .map(|c| c.rtp_codec.clone());
        let Some(codec) = codec else {
            return;
        };
        self.tracks[at].codec = Some(codec);
        let key = self.tracks[at].key;
        for index in 0..self.peers.len() {
            if index != from {
                self.subscribe(now, index, key);
                self.offer(now, index);
            }
        }
    }

    fn report_quality(&mut self, now: Instant) {
        self.next_stats = Some(now + self.config.stats_interval);
        for peer in &mut self.peers {
            let inbound = peer.publish.pc.get_stats(now, StatsSelector::None);
            let mut counters = Counters {
                at: Some(now),
                ..Counters::default()
            };
            let mut jitter: f64 = 0.0;
            for s in inbound.inbound_rtp_streams() {
                let r = &s.received_rtp_stream_stats;
                counters.received += r.packets_received;
                counters.lost += r.packets_lost;
                counters.bytes += s.bytes_received;
                jitter = jitter.max(r.jitter);
            }
            let outbound = peer.subscribe.pc.get_stats(now, StatsSelector::None);
            let round_trips: Vec<f64> = outbound
                .iter()
                .filter_map(|e| match e {
                    RTCStatsReportEntry::RemoteInboundRtp(r)
                        if r.round_trip_time_measurements > 0 =>
                    {
                        Some(r.round_trip_time)
                    }
                    _ => None,
                })
                .collect();
            let before = std::mem::replace(&mut peer.baseline, counters);
            let received = counters.received.saturating_sub(before.received);
            if received == 0 {
                continue;
            }
            let lost = (counters.lost - before.lost).max(0) as f64;
            let seconds = before
                .at
                .map_or(0.0, |at| now.saturating_duration_since(at).as_secs_f64());
            let bits = counters.bytes.saturating_sub(before.bytes) as f64 * 8.0;
            self.outputs.push_back(Output::Quality {
                peer: peer.id.clone(),
                stats: QualityStats {
                    packet_loss: 100.0 * lost / (lost + received as f64),
                    jitter_ms: jitter * 1000.0,
                    round_trip_ms: (!round_trips.is_empty()).then(|| {
                        1000.0 * round_trips.iter().sum::<f64>() / round_trips.len() as f64
                    }),
                    bitrate: if seconds > 0.0 { bits / seconds } else { 0.0 },
                },
            });
        }
    }
}

/// The `(mid, msid track id)` of each m-section of an SDP we made that sends a track.
pub(crate) fn sections(sdp: &str) -> impl Iterator<Item = (&str, &str)> {
    sdp.split("\nm=").skip(1).filter_map(|section| {
        let mut mid = None;
        let mut track = None;
        for line in section.lines() {
            if let Some(m) = line.strip_prefix("a=mid:") {
                mid = Some(m.trim());
            } else if let Some(msid) = line.strip_prefix("a=msid:") {
                track = msid.split_whitespace().nth(1);
            }
        }
        Some((mid?, track?))
    })
}

/// A set of peer indices, one bit each: the reason a room holds at most
/// [`PeerSet::CAPACITY`] participants. Marking and draining peers happens per
/// packet, so it is a word, not a collection.
#[derive(Debug, Default, Clone, Copy)]
struct PeerSet(u64);

impl PeerSet {
    /// Indices `0..CAPACITY` fit.
    const CAPACITY: usize = u64::BITS as usize;

    fn insert(&mut self, index: usize) {
        self.0 |= Self::bit(index);
    }

    /// Takes out and returns the lowest index in the set.
    fn pop_first(&mut self) -> Option<usize> {
        (self.0 != 0).then(|| {
            let index = self.0.trailing_zeros() as usize;
            self.0 &= !Self::bit(index);
            index
        })
    }

    /// Peer `index` is gone: forgets it, and every index above it moves down one, as
    /// the peers after it do in the room's list.
    fn remove_index(&mut self, index: usize) {
        let below = Self::bit(index).wrapping_sub(1);
        let low = self.0 & below;
        // Shifts of the full width are spelt out: `u64 >> 64` overflows.
        let above = u32::try_from(index + 1)
            .ok()
            .and_then(|shift| self.0.checked_shr(shift))
            .unwrap_or(0);
        self.0 = low | above.checked_shl(index as u32).unwrap_or(0);
    }

    /// The bit of `index`; none for an index beyond the capacity.
    fn bit(index: usize) -> u64 {
        u32::try_from(index)
            .ok()
            .and_then(|i| 1u64.checked_shl(i))
            .unwrap_or(0)
    }
}

const MUTE_SWITCHES: [MediaSwitch; 3] = [
    MediaSwitch::Audio,
    MediaSwitch::Video,
    MediaSwitch::ScreenShare,
];

impl Peer {
    /// Their id, and their publish or subscribe connection.
    fn conn_mut(&mut self, publish: bool) -> (&PeerId, &mut Conn) {
        let conn = if publish {
            &mut self.publish
        } else {
            &mut self.subscribe
        };
        (&self.id, conn)
    }

    /// How the logs name a participant's publish or subscribe connection.
    fn conn_name(publish: bool) -> &'static str {
        if publish { "publish" } else { "subscribe" }
    }

    /// Whether `offer` comes from another client peer connection than the one
    /// publishing now: a new DTLS certificate. (An ICE restart or a renegotiation
    /// on the same connection keeps its certificate.)
    fn is_new_connection(&self, offer: &str) -> bool {
        let fingerprint = |sdp: &str| {
            sdp.lines()
                .find_map(|l| l.trim_end().strip_prefix("a=fingerprint:"))
                .map(str::to_owned)
        };
        let current = self
            .publish
            .pc
            .remote_description()
            .map(|d| fingerprint(&d.sdp));
        matches!((current, fingerprint(offer)), (Some(Some(now)), Some(new)) if now != new)
    }

    fn take_offer_token(&mut self, now: Instant, burst: u32) -> Result<(), RoomError> {
        let refill = now.saturating_duration_since(self.last_offer).as_secs_f64();
        self.last_offer = now;
        self.offer_tokens = (self.offer_tokens + refill).min(f64::from(burst));
        if self.offer_tokens < 1.0 {
            return Err(RoomError::TooManyOffers);
        }
        self.offer_tokens -= 1.0;
        Ok(())
    }
}
