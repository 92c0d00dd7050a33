//! [`Room`]: one call's peer connections and the forwarding between them, as a
//! sans-IO state machine. Inputs carry `now`; outputs are drained with
//! [`Room::poll_output`]; [`Room::poll_timeout`] says when time must be fed in next.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RtpCodecKind};
use rtc::rtp_transceiver::{RTCRtpReceiverId, RTCRtpSenderId};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use rtc::statistics::StatsSelector;
use rtc::statistics::report::RTCStatsReportEntry;

use crate::{MediaSwitch, PeerId, QualityStats, Source};
use crate::{codecs, feedback};

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
    /// STUN requests naming `ufrag` (and, after, their source address) go to `conn`.
    Add { ufrag: String, conn: ConnId },
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
    config: RoomConfig,
    peers: Vec<Peer>,
    tracks: Vec<TrackIn>,
    /// Source of [`ConnId`]s and track keys, unique for the room's life.
    next_id: u32,
    outputs: VecDeque<Output>,
    /// Peers (by index) whose connections were written to since they were drained.
    dirty: u64,
    next_stats: Option<Instant>,
}

/// A participant.
struct Peer {
    id: PeerId,
    /// Carries what the participant sends; the client offers on it.
    publish: Conn,
    /// Carries what the participant receives; the server offers on it.
    subscribe: Conn,
    /// An offer was sent on the subscribe connection and is not answered yet.
    awaiting_answer: bool,
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
    pub fn new(config: RoomConfig) -> Self {
        Self {
            config: RoomConfig {
                max_peers: config.max_peers.min(64),
                ..config
            },
            peers: Vec::new(),
            tracks: Vec::new(),
            next_id: 1,
            outputs: VecDeque::new(),
            dirty: 0,
            next_stats: None,
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
            Some(i) => {
                self.peers[i].take_offer_token(now, self.config.offer_burst)?;
                (i, false)
            }
            None => (self.join(now, peer)?, true),
        };
        let p = &mut self.peers[index];
        p.sources.extend(sources);
        let pc = &mut p.publish.pc;
        if let Err(e) = pc.set_remote_description(now, offer) {
            // A refused first offer leaves nobody half-joined (though `join` already
            // subscribed them to the tracks in the room).
            if joined {
                self.remove(now, index);
            }
            return Err(RoomError::InvalidSdp(e.to_string()));
        }
        let answer = pc
            .create_answer(None)
            .and_then(|answer| {
                pc.set_local_description(now, answer.clone())?;
                Ok(answer)
            })
            .map_err(|e| RoomError::InvalidSdp(e.to_string()))?;
        self.dirty |= 1 << index;
        self.drain(now);
        Ok(codecs::candidates_in_every_section(&answer.sdp))
    }

    /// `peer`'s client answers the server's last offer on their subscribe connection.
    pub fn answer(&mut self, now: Instant, peer: &PeerId, answer: String) -> Result<(), RoomError> {
        let index = self.index(peer).ok_or(RoomError::NotInRoom)?;
        let p = &mut self.peers[index];
        if !p.awaiting_answer {
            return Err(RoomError::UnexpectedAnswer);
        }
        let answer = codecs::parse_answer(answer)?;
        p.subscribe
            .pc
            .set_remote_description(now, answer)
            .map_err(|e| RoomError::InvalidSdp(e.to_string()))?;
        p.awaiting_answer = false;
        for down in &mut p.downtracks {
            down.payload_type = None;
        }
        self.dirty |= 1 << index;
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

    /// Closes every connection; the room is empty after.
    pub fn close(&mut self, now: Instant) {
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
        let Some((index, publish)) = self.conn(conn) else {
            return;
        };
        let local_addr = self.config.announce;
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
        self.dirty |= 1 << index;
        self.drain(now);
    }

    /// When [`Room::handle_timeout`] is next due.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        let mut next = self.next_stats;
        for p in &mut self.peers {
            for pc in [&mut p.publish.pc, &mut p.subscribe.pc] {
                if let Some(t) = pc.poll_timeout() {
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
                        tracing::debug!(peer = %p.id, error = %e, "connection timer failed");
                    }
                    self.dirty |= 1 << i;
                }
            }
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

    fn new_conn(&mut self, now: Instant) -> Result<Conn, RoomError> {
        let ufrag = rtc::ice::rand::generate_ufrag();
        let pc = codecs::peer_connection(now, self.config.announce, &ufrag)?;
        let id = ConnId(self.id());
        self.outputs.push_back(Output::Route(Route::Add {
            ufrag: ufrag.clone(),
            conn: id,
        }));
        Ok(Conn { id, pc, ufrag })
    }

    fn join(&mut self, now: Instant, peer: &PeerId) -> Result<usize, RoomError> {
        if self.peers.len() >= self.config.max_peers {
            return Err(RoomError::Full(self.config.max_peers));
        }
        let publish = self.new_conn(now)?;
        let subscribe = self.new_conn(now)?;
        self.peers.push(Peer {
            id: peer.clone(),
            publish,
            subscribe,
            awaiting_answer: false,
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
        let low = self.dirty & ((1u64 << index) - 1);
        self.dirty = low | ((self.dirty >> (index + 1)) << index);
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

    /// Sends peer `index` a new offer for their subscribe connection, unless one is
    /// outstanding (then it follows the answer).
    fn offer(&mut self, now: Instant, index: usize) {
        let peer = &mut self.peers[index];
        if !peer.needs_offer {
            return;
        }
        if peer.awaiting_answer {
            return;
        }
        let pc = &mut peer.subscribe.pc;
        let made = pc.create_offer(None).and_then(|offer| {
            pc.set_local_description(now, offer.clone())?;
            Ok(offer)
        });
        match made {
            Ok(offer) => {
                peer.awaiting_answer = true;
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
                self.outputs.push_back(Output::Signal {
                    peer: peer.id.clone(),
                    signal: Signal::Offer {
                        sdp: codecs::candidates_in_every_section(&offer.sdp),
                        tracks,
                    },
                });
                self.dirty |= 1 << index;
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
            self.dirty |= 1 << index;
        }
    }

    /// Drains every connection written to since the last drain: their datagrams,
    /// events and received media, which may write to more connections.
    fn drain(&mut self, now: Instant) {
        while self.dirty != 0 {
            let index = self.dirty.trailing_zeros() as usize;
            self.dirty &= !(1 << index);
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
            RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) => {
                tracing::debug!(peer = %self.peers[index].id, publish, %state, "connection state");
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
        let track = &self.tracks[at];
        let publisher = &self.peers[from];
        if MUTE_SWITCHES
            .iter()
            .any(|s| publisher.muted[*s as usize] && s.governs(track.source))
        {
            return;
        }
        let (key, mime) = match &track.codec {
            Some(codec) => (track.key, codec.mime_type.clone()),
            None => return,
        };
        // Extension ids are per connection; the subscriber's differ.
        packet.header.extension = false;
        packet.header.extensions.clear();
        packet.header.extensions_padding = 0;
        let mut keyframes = Vec::new();
        for (index, peer) in self.peers.iter_mut().enumerate() {
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
                        .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(&mime))
                        .map(|c| c.payload_type);
                    let Some(pt) = negotiated else {
                        continue;
                    };
                    down.payload_type = Some(pt);
                    if std::mem::take(&mut down.wants_keyframe) {
                        keyframes.push(key);
                    }
                    pt
                }
            };
            let mut copy = packet.clone();
            copy.header.ssrc = down.ssrc;
            copy.header.payload_type = payload_type;
            if let Err(e) = sender.write_rtp(now, copy) {
                tracing::trace!(peer = %peer.id, error = %e, "could not forward a packet");
            }
            self.dirty |= 1 << index;
        }
        for key in keyframes {
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

const MUTE_SWITCHES: [MediaSwitch; 3] = [
    MediaSwitch::Audio,
    MediaSwitch::Video,
    MediaSwitch::ScreenShare,
];

impl Peer {
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
