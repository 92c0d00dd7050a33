//! A simulated network for room tests: synthetic participants (sans-IO `rtc` peer
//! connections, as a browser would use them) exchange datagrams with a [`Room`]
//! through in-memory links with loss, delay and reordering, in simulated time. Ten
//! seconds of media take milliseconds, and a seed makes a run repeatable.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_OPUS, MIME_TYPE_VP8, MediaEngine,
};
use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp_transceiver::RTCRtpSenderId;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RtpCodecKind};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};

use crate::port::Routes;
use crate::room::{ConnId, Output, Route, Signal};
use crate::{ConnectionCounters, PeerId, Room, RoomConfig, RoomError, RoomId, Source};

pub(crate) const SERVER: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1)),
    7882,
);

/// How the links between participants and the server behave.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Link {
    /// One-way delay.
    pub delay: Duration,
    /// Extra random delay up to this, which reorders packets.
    pub jitter: Duration,
    /// Share of media datagrams (RTP and RTCP, never the handshake) dropped.
    pub loss: f64,
    /// Nothing gets through, either way: a network outage.
    pub down: bool,
}

impl Default for Link {
    fn default() -> Self {
        Link {
            delay: Duration::from_millis(5),
            jitter: Duration::ZERO,
            loss: 0.0,
            down: false,
        }
    }
}

/// Video frames are this many packets.
pub(crate) const PACKETS_PER_FRAME: u32 = 3;
/// The size a keyframe's header says.
pub(crate) const FRAME_SIZE: (u16, u16) = (320, 240);

/// A track a participant publishes.
struct Outbound {
    sender: RTCRtpSenderId,
    kind: RtpCodecKind,
    ssrc: u32,
    /// The next sequence number.
    seq: u16,
    /// A video frame's packets sent so far, its RTP timestamp, and whether it is a
    /// keyframe.
    frame: (u32, u32, bool),
}

/// A participant: a publish and a subscribe connection, and what it received.
pub(crate) struct Client {
    pub id: PeerId,
    publish: RTCPeerConnection,
    subscribe: Option<RTCPeerConnection>,
    publish_addr: SocketAddr,
    subscribe_addr: SocketAddr,
    /// Each published track.
    senders: Vec<Outbound>,
    /// The next video frame is a keyframe: the first, and one after the server asked.
    keyframe_wanted: bool,
    /// Sequence numbers received per (publisher, our track id on the subscribe side).
    pub received: BTreeMap<(String, String), Vec<u16>>,
    /// Payloads received, by sequence number, per track, to check integrity.
    pub payloads: HashMap<(String, String), HashMap<u16, Bytes>>,
    /// Tracks that opened and closed on the subscribe connection.
    pub open_tracks: BTreeMap<String, String>,
    /// Who publishes each of our subscribe tracks, from the offers' track lists.
    owners: HashMap<String, String>,
    pub closed_tracks: Vec<String>,
    /// Keyframe requests (RTCP PSFB) the server sent to this publisher.
    pub keyframe_requests: usize,
    /// The offer this client last published with.
    pub last_offer: String,
    /// The room's answer to it.
    pub publish_answer: String,
}

pub(crate) struct Sim {
    pub now: Instant,
    /// Where simulated time began: media timestamps count from here.
    pub epoch: Instant,
    pub room: Room,
    pub clients: Vec<Client>,
    /// Routed as the UDP port routes: by address, learnt from signed STUN requests.
    routes: Routes<()>,
    /// Every connection the room has routed so far.
    conns: Vec<ConnId>,
    /// Datagrams in flight: (arrival, sequence for stable order) -> (from, to, bytes).
    wire: BTreeMap<(Instant, u64), (SocketAddr, SocketAddr, BytesMut)>,
    wire_seq: u64,
    pub link: Link,
    rng: u64,
    pub offers: Vec<(PeerId, String)>,
    /// Every RTP payload sent, by (SSRC, sequence number), to check what arrives.
    pub sent: HashMap<(u32, u16), Bytes>,
    /// Their RTP timestamps.
    pub timestamps: HashMap<(u32, u16), u32>,
    /// Packets (SSRC, sequence number) a publisher never sends: losses no
    /// retransmission repairs.
    pub unsent: HashSet<(u32, u16)>,
    /// A recording's queue, and what it delivered.
    pub recording: Option<crate::record::Feed>,
    pub recorded: Vec<crate::record::Entry>,
    pub quality: Vec<(PeerId, crate::QualityStats)>,
    pub media_dropped: usize,
    /// The track list of the last offer each participant got.
    pub last_tracks: HashMap<PeerId, Vec<crate::TrackInfo>>,
    /// The SDP of the last offer each participant got.
    pub last_offer_sdp: HashMap<PeerId, String>,
    /// How the room's connections fared.
    pub counters: Arc<ConnectionCounters>,
    /// Rewrites of participants' next subscribe answers, one per answer, in order:
    /// the room gets the rewritten answer, their own connection keeps the original.
    pub answer_edits: HashMap<PeerId, VecDeque<AnswerEdit>>,
    /// Answers the room refused, and why; only rewritten answers may be refused.
    pub refused_answers: Vec<(PeerId, RoomError)>,
}

/// A rewrite of a subscribe answer on its way to the room.
pub(crate) type AnswerEdit = Box<dyn FnOnce(String) -> String>;

impl Sim {
    pub fn new(seed: u64) -> Self {
        let now = Instant::now();
        let config = RoomConfig::new(SERVER);
        let counters = config.counters.clone();
        Sim {
            now,
            epoch: now,
            room: Room::new(RoomId("call-1".into()), config),
            clients: Vec::new(),
            routes: Routes::new(Default::default()),
            conns: Vec::new(),
            wire: BTreeMap::new(),
            wire_seq: 0,
            link: Link::default(),
            rng: seed | 1,
            offers: Vec::new(),
            sent: HashMap::new(),
            timestamps: HashMap::new(),
            unsent: HashSet::new(),
            recording: None,
            recorded: Vec::new(),
            quality: Vec::new(),
            media_dropped: 0,
            last_tracks: HashMap::new(),
            last_offer_sdp: HashMap::new(),
            counters,
            answer_edits: HashMap::new(),
            refused_answers: Vec::new(),
        }
    }

    /// `peer`'s next subscribe answers reach the room as `edits` rewrite them, one each.
    pub fn edit_answers(&mut self, peer: &str, edits: Vec<AnswerEdit>) {
        self.answer_edits
            .entry(PeerId(peer.to_owned()))
            .or_default()
            .extend(edits);
    }

    fn random(&mut self) -> f64 {
        // xorshift64*: repeatable for a seed.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        (self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A participant who publishes audio and video (or what `kinds` says) and joins.
    pub fn join(&mut self, name: &str, kinds: &[RtpCodecKind]) -> Result<usize, RoomError> {
        self.join_offering(name, kinds, |sdp| sdp)
    }

    /// A participant who joins as [`Sim::join`] does, but sends the room their offer
    /// as `edit` rewrites it (their own connection keeps the original).
    pub fn join_offering(
        &mut self,
        name: &str,
        kinds: &[RtpCodecKind],
        edit: impl FnOnce(String) -> String,
    ) -> Result<usize, RoomError> {
        let n = self.clients.len() as u8 + 1;
        let publish_addr = SocketAddr::from(([192, 168, 0, n], 40000));
        let subscribe_addr = SocketAddr::from(([192, 168, 0, n], 40001));
        let mut publish = client_pc(self.now, publish_addr);
        let mut senders = Vec::new();
        for (i, kind) in kinds.iter().enumerate() {
            let ssrc = 1000 * u32::from(n) + i as u32;
            let codec = match kind {
                RtpCodecKind::Audio => RTCRtpCodec {
                    mime_type: MIME_TYPE_OPUS.to_owned(),
                    clock_rate: 48000,
                    channels: 2,
                    sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
                    rtcp_feedback: vec![],
                },
                _ => RTCRtpCodec {
                    mime_type: MIME_TYPE_VP8.to_owned(),
                    clock_rate: 90000,
                    ..Default::default()
                },
            };
            let track = crate::single_stream_track(
                format!("{name}-stream"),
                format!("{name}-{i}"),
                *kind,
                ssrc,
                codec,
            );
            let sender = publish.add_track(track).expect("add track");
            senders.push(Outbound {
                sender,
                kind: *kind,
                ssrc,
                seq: 1,
                frame: (0, 0, false),
            });
        }
        let offer = publish.create_offer(None).expect("offer");
        publish
            .set_local_description(self.now, offer.clone())
            .expect("local offer");
        self.clients.push(Client {
            id: PeerId(name.to_owned()),
            publish,
            subscribe: None,
            publish_addr,
            subscribe_addr,
            senders,
            keyframe_wanted: true,
            received: BTreeMap::new(),
            payloads: HashMap::new(),
            open_tracks: BTreeMap::new(),
            owners: HashMap::new(),
            closed_tracks: Vec::new(),
            keyframe_requests: 0,
            last_offer: offer.sdp.clone(),
            publish_answer: String::new(),
        });
        let index = self.clients.len() - 1;
        let sources = HashMap::from([(format!("{name}-1"), Source::Camera)]);
        match self
            .room
            .publish(self.now, &PeerId(name.to_owned()), edit(offer.sdp), sources)
        {
            Ok(answer) => {
                self.clients[index].publish_answer = answer.clone();
                let answer = RTCSessionDescription::answer(answer).expect("answer parses");
                self.clients[index]
                    .publish
                    .set_remote_description(self.now, answer)
                    .expect("answer applies");
                self.pump();
                Ok(index)
            }
            Err(e) => {
                self.clients.pop();
                self.pump();
                Err(e)
            }
        }
    }

    /// Participant `index` renegotiates their publish connection with a fresh offer
    /// (tracks unchanged) and applies the room's answer.
    pub fn republish(&mut self, index: usize) -> Result<(), RoomError> {
        let now = self.now;
        let client = &mut self.clients[index];
        let offer = client.publish.create_offer(None).expect("offer");
        client
            .publish
            .set_local_description(now, offer.clone())
            .expect("local offer");
        client.last_offer = offer.sdp.clone();
        let peer = client.id.clone();
        let answer = self.room.publish(now, &peer, offer.sdp, HashMap::new())?;
        let client = &mut self.clients[index];
        client.publish_answer = answer.clone();
        let answer = RTCSessionDescription::answer(answer).expect("answer parses");
        client
            .publish
            .set_remote_description(now, answer)
            .expect("answer applies");
        self.pump();
        Ok(())
    }

    /// Every connection the room has routed so far.
    pub fn conns(&self) -> Vec<ConnId> {
        self.conns.clone()
    }

    /// Participant `index` leaves the room.
    pub fn leave(&mut self, index: usize) {
        let client = self.clients.remove(index);
        self.room.leave(self.now, &client.id);
        self.pump();
    }

    /// Runs for `duration`: participants send audio every 20 ms and video every 8 ms.
    pub fn run(&mut self, duration: Duration) {
        let end = self.now + duration;
        let step = Duration::from_millis(1);
        while self.now < end {
            self.now += step;
            // Milliseconds since the epoch: RTP timestamps run on across runs.
            let tick = (self.now - self.epoch).as_millis() as u64;
            for c in 0..self.clients.len() {
                for t in 0..self.clients[c].senders.len() {
                    let due = match self.clients[c].senders[t].kind {
                        RtpCodecKind::Audio => tick % 20 == 0,
                        _ => tick % 8 == 0,
                    };
                    if due {
                        self.send_rtp(c, t, tick);
                    }
                }
            }
            self.deliver();
            self.timers();
            self.pump();
            if let Some(feed) = &mut self.recording {
                while let Ok(entry) = feed.frames.try_recv() {
                    self.recorded.push(entry);
                }
            }
        }
    }

    /// Starts recording the room into a queue the run drains into
    /// [`Sim::recorded`]: `id`, stopping after `max_duration`.
    pub fn record(&mut self, id: &str, max_duration: Duration) -> Result<(), RoomError> {
        let spec = crate::record::RecordingSpec {
            id: id.to_owned(),
            path: "unused.webm".into(),
            max_bytes: u64::MAX,
            max_duration,
        };
        let (sink, feed) = crate::record::channel(crate::record::QUEUE);
        self.room.start_recording(self.now, &spec, || Ok(sink))?;
        self.recording = Some(feed);
        self.pump();
        Ok(())
    }

    /// The SSRC of participant `index`'s track `track`.
    pub fn ssrc(&self, index: usize, track: usize) -> u32 {
        self.clients[index].senders[track].ssrc
    }

    fn send_rtp(&mut self, c: usize, track: usize, tick: u64) {
        let now = self.now;
        let client = &mut self.clients[c];
        let out = &mut client.senders[track];
        let seq = out.seq;
        out.seq = seq.wrapping_add(1);
        let (head, timestamp, marker) = match out.kind {
            RtpCodecKind::Audio => ([0; 12], (tick * 48) as u32, false),
            _ => {
                let (sent, mut timestamp, mut keyframe) = out.frame;
                if sent == 0 {
                    timestamp = (tick * 90) as u32;
                    keyframe = std::mem::take(&mut client.keyframe_wanted);
                }
                out.frame = ((sent + 1) % PACKETS_PER_FRAME, timestamp, keyframe);
                (
                    vp8_head(sent == 0, keyframe),
                    timestamp,
                    sent + 1 == PACKETS_PER_FRAME,
                )
            }
        };
        let ssrc = out.ssrc;
        let sender = out.sender;
        if self.unsent.contains(&(ssrc, seq)) {
            return;
        }
        let Some(mut sender) = client.publish.rtp_sender(sender) else {
            return;
        };
        let Some(pt) = sender
            .get_parameters()
            .rtp_parameters
            .codecs
            .first()
            .map(|c| c.payload_type)
        else {
            return;
        };
        let mut data = head.to_vec();
        data.extend_from_slice(&payload(ssrc, seq));
        let data = Bytes::from(data);
        self.sent.insert((ssrc, seq), data.clone());
        self.timestamps.insert((ssrc, seq), timestamp);
        let packet = rtc::rtp::Packet {
            header: rtc::rtp::header::Header {
                version: 2,
                payload_type: pt,
                sequence_number: seq,
                timestamp,
                marker,
                ssrc,
                ..Default::default()
            },
            payload: data,
        };
        // Before the connection is up a write fails; the test counts what arrives.
        let _ = sender.write_rtp(now, packet);
    }

    fn timers(&mut self) {
        let now = self.now;
        if self.room.poll_timeout().is_some_and(|t| t <= now) {
            self.room.handle_timeout(now);
        }
        for client in &mut self.clients {
            for pc in std::iter::once(&mut client.publish).chain(client.subscribe.as_mut()) {
                if pc.poll_timeout().is_some_and(|t| t <= now) {
                    let _ = pc.handle_timeout(now);
                }
            }
        }
    }

    fn put_on_wire(&mut self, from: SocketAddr, to: SocketAddr, data: BytesMut) {
        if self.link.down {
            return;
        }
        let media = data.first().is_some_and(|b| (128..192).contains(b));
        // Payload-specific feedback (PLI, FIR) has RTCP packet type 206, in the clear.
        if from == SERVER && data.get(1) == Some(&206) {
            if let Some(c) = self.clients.iter_mut().find(|c| c.publish_addr == to) {
                c.keyframe_requests += 1;
            }
        }
        if media && self.link.loss > 0.0 && self.random() < self.link.loss {
            self.media_dropped += 1;
            return;
        }
        let jitter = self.link.jitter.mul_f64(self.random());
        let at = self.now + self.link.delay + jitter;
        self.wire_seq += 1;
        self.wire.insert((at, self.wire_seq), (from, to, data));
    }

    fn deliver(&mut self) {
        while let Some(entry) = self.wire.first_entry() {
            if entry.key().0 > self.now {
                break;
            }
            let (from, to, data) = entry.remove();
            if from == SERVER && data.get(1) == Some(&206) {
                if let Some(c) = self.clients.iter_mut().find(|c| c.publish_addr == to) {
                    c.keyframe_wanted = true;
                }
            }
            if to == SERVER {
                if let Some((conn, ())) = self.routes.route(&data, from) {
                    self.room.handle_datagram(self.now, conn, from, data);
                }
            } else {
                let now = self.now;
                for client in &mut self.clients {
                    let pc = if to == client.publish_addr {
                        Some(&mut client.publish)
                    } else if to == client.subscribe_addr {
                        client.subscribe.as_mut()
                    } else {
                        None
                    };
                    if let Some(pc) = pc {
                        let _ = pc.handle_read(TaggedBytesMut {
                            now,
                            transport: TransportContext {
                                local_addr: to,
                                peer_addr: from,
                                ecn: None,
                                transport_protocol: TransportProtocol::UDP,
                            },
                            message: data,
                        });
                        break;
                    }
                }
            }
        }
    }

    /// Moves everything waiting to move: room outputs, client datagrams and events.
    pub fn pump(&mut self) {
        loop {
            let mut moved = false;
            while let Some(output) = self.room.poll_output() {
                moved = true;
                match output {
                    Output::Transmit { to, data } => self.put_on_wire(SERVER, to, data),
                    Output::Route(Route::Add { ufrag, pwd, conn }) => {
                        self.routes.add(ufrag, pwd, conn, ());
                        self.conns.push(conn);
                    }
                    Output::Route(Route::Remove { ufrag, .. }) => self.routes.remove(&ufrag),
                    Output::Signal {
                        peer,
                        signal: Signal::Offer { sdp, tracks },
                    } => {
                        self.last_tracks.insert(peer.clone(), tracks);
                        self.last_offer_sdp.insert(peer.clone(), sdp.clone());
                        self.offers.push((peer, sdp));
                    }
                    Output::Quality { peer, stats } => self.quality.push((peer, stats)),
                }
            }
            for (peer, sdp) in std::mem::take(&mut self.offers) {
                moved = true;
                self.answer_offer(&peer, sdp);
            }
            let mut outgoing = Vec::new();
            for client in &mut self.clients {
                let addrs = [client.publish_addr, client.subscribe_addr];
                for (i, pc) in std::iter::once(&mut client.publish)
                    .chain(client.subscribe.as_mut())
                    .enumerate()
                {
                    while let Some(out) = pc.poll_write() {
                        outgoing.push((addrs[i], out.transport.peer_addr, out.message));
                    }
                }
                client.collect();
            }
            for (from, to, data) in outgoing {
                moved = true;
                self.put_on_wire(from, to, data);
            }
            if !moved {
                break;
            }
        }
    }

    fn answer_offer(&mut self, peer: &PeerId, sdp: String) {
        let now = self.now;
        let edit = self
            .answer_edits
            .get_mut(peer)
            .and_then(VecDeque::pop_front);
        let Some(client) = self.clients.iter_mut().find(|c| c.id == *peer) else {
            return;
        };
        let addr = client.subscribe_addr;
        let infos = self.last_tracks.get(peer).cloned().unwrap_or_default();
        for (mid, track_id) in crate::room::sections(&sdp) {
            if let Some(info) = infos.iter().find(|t| t.mid == mid) {
                client
                    .owners
                    .insert(track_id.to_owned(), info.peer.0.clone());
            }
        }
        let pc = client.subscribe.get_or_insert_with(|| client_pc(now, addr));
        let offer = RTCSessionDescription::offer(sdp).expect("server offer parses");
        pc.set_remote_description(now, offer)
            .expect("server offer applies");
        let answer = pc.create_answer(None).expect("answer");
        pc.set_local_description(now, answer.clone())
            .expect("local answer");
        match edit {
            Some(edit) => {
                if let Err(e) = self.room.answer(now, peer, edit(answer.sdp)) {
                    self.refused_answers.push((peer.clone(), e));
                }
            }
            None => self
                .room
                .answer(now, peer, answer.sdp)
                .expect("room takes the answer"),
        }
    }
}

impl Client {
    fn collect(&mut self) {
        if let Some(pc) = &mut self.subscribe {
            while let Some(event) = pc.poll_event() {
                if let RTCPeerConnectionEvent::OnTrack(track) = event {
                    match track {
                        RTCTrackEvent::OnOpen(init) => {
                            let owner =
                                self.owners.get(&init.track_id).cloned().unwrap_or_default();
                            self.open_tracks.insert(init.track_id, owner);
                        }
                        RTCTrackEvent::OnClose(track_id) => self.closed_tracks.push(track_id),
                        _ => {}
                    }
                }
            }
            while let Some(message) = pc.poll_read() {
                if let RTCMessage::RtpPacket(track_id, packet) = message.message {
                    let publisher = self.open_tracks.get(&track_id).cloned().unwrap_or_default();
                    let key = (publisher, track_id);
                    self.received
                        .entry(key.clone())
                        .or_default()
                        .push(packet.header.sequence_number);
                    self.payloads
                        .entry(key)
                        .or_default()
                        .insert(packet.header.sequence_number, packet.payload);
                }
            }
        }
        while let Some(event) = self.publish.poll_event() {
            drop(event);
        }
        while let Some(message) = self.publish.poll_read() {
            drop(message);
        }
    }

    /// Publishers whose media this client receives, with packet counts.
    pub fn receiving_from(&self) -> BTreeMap<String, usize> {
        let mut from = BTreeMap::new();
        for ((publisher, _), seqs) in &self.received {
            *from.entry(publisher.clone()).or_default() += seqs.len();
        }
        from
    }
}

/// The part of packet `seq` of stream `ssrc` after its codec's 12 bytes: known, so
/// that what a recording holds can be traced to the packets it came from.
pub(crate) fn payload(ssrc: u32, seq: u16) -> Vec<u8> {
    let mut p = Vec::with_capacity(188);
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.resize(188, (seq % 251) as u8);
    p
}

/// A video packet's first 12 bytes: the VP8 payload descriptor (2 bytes; S set on a
/// frame's first packet), and at a frame's start the frame's header (for a
/// keyframe, with its start code and [`FRAME_SIZE`]), else zeros.
pub(crate) fn vp8_head(start: bool, keyframe: bool) -> [u8; 12] {
    let mut head = [0; 12];
    head[0] = if start { 0x90 } else { 0x80 };
    if start {
        // show_frame, and P (bit 0) clear for a keyframe.
        head[2] = if keyframe { 0x10 } else { 0x11 };
        if keyframe {
            head[5..8].copy_from_slice(&[0x9d, 0x01, 0x2a]);
            head[8..10].copy_from_slice(&FRAME_SIZE.0.to_le_bytes());
            head[10..12].copy_from_slice(&FRAME_SIZE.1.to_le_bytes());
        }
    }
    head
}

fn client_pc(now: Instant, addr: SocketAddr) -> RTCPeerConnection {
    let mut media = MediaEngine::default();
    media.register_default_codecs().expect("codecs");
    let registry =
        register_default_interceptors(Default::default(), &mut media).expect("interceptors");
    let mut pc = RTCPeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_media_engine(media)
        .with_interceptor_registry(registry)
        .build(now)
        .expect("client pc");
    pc.add_local_candidate(crate::host_candidate(addr).expect("candidate"))
        .expect("local candidate");
    pc
}
