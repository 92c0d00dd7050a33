//! The test harness for `udp.rs`: participants built on the async `webrtc` crate that
//! publish RTP with known payloads through a real [`Sfu`] on 127.0.0.1 and record
//! what they receive, and a UDP proxy that can drop a chosen subscriber's media.

mod media;

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rooms::record::RecordingEvent;
use rooms::{PeerId, RoomId, Sfu, SfuConfig, SfuEvent, Source, TrackInfo};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_OPUS, MIME_TYPE_VP8};
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RtpCodecKind};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfigurationBuilder, RTCPeerConnectionState, RTCSessionDescription, Registry,
    register_default_interceptors,
};
use webrtc::rtp_transceiver::RtpSender;

pub use media::{EncodedMedia, encoded_media, probe};

pub const LOCALHOST: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// Video packets go out every tick, audio every second tick.
const TICK: Duration = Duration::from_millis(10);
/// The first video sequence number: close enough to the top that the stream wraps
/// to 0 a few seconds in, so receivers see the wrap.
const VIDEO_FIRST_SEQ: u16 = u16::MAX - 299;
const AUDIO_FIRST_SEQ: u16 = 1000;

/// Sleeps between two looks at a condition.
const POLL: Duration = Duration::from_millis(20);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Media {
    Audio,
    Video,
}

impl Media {
    /// `name`'s track of this media: the microphone's Opus or the camera's VP8.
    fn track(self, name: &str) -> MediaStreamTrack {
        let (kind, codec, track_id) = match self {
            Media::Audio => (
                RtpCodecKind::Audio,
                RTCRtpCodec {
                    mime_type: MIME_TYPE_OPUS.to_owned(),
                    clock_rate: 48000,
                    channels: 2,
                    sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
                    rtcp_feedback: vec![],
                },
                "mic",
            ),
            Media::Video => (
                RtpCodecKind::Video,
                RTCRtpCodec {
                    mime_type: MIME_TYPE_VP8.to_owned(),
                    clock_rate: 90000,
                    ..Default::default()
                },
                "cam",
            ),
        };
        rooms::single_stream_track(
            format!("{name}-stream"),
            format!("{name}-{track_id}"),
            kind,
            ssrc(name, self),
            codec,
        )
    }

    /// The payload type `sender` negotiated for this media's codec.
    async fn payload_type(self, sender: &Arc<dyn RtpSender>, name: &str) -> u8 {
        let params = sender.get_parameters().await.expect("sender parameters");
        let mime = match self {
            Media::Audio => MIME_TYPE_OPUS,
            Media::Video => MIME_TYPE_VP8,
        };
        params
            .rtp_parameters
            .codecs
            .iter()
            .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(mime))
            .map(|c| c.payload_type)
            .unwrap_or_else(|| panic!("{mime} is negotiated for {name}"))
    }

    fn of(kind: RtpCodecKind) -> Option<Self> {
        match kind {
            RtpCodecKind::Audio => Some(Media::Audio),
            RtpCodecKind::Video => Some(Media::Video),
            _ => None,
        }
    }
}

/// The payload of packet `seq` of `publisher`'s `media` track. Its length and bytes
/// vary with the sequence number, so a receiver that maps a track to the wrong
/// publisher or gets a damaged or misnumbered packet notices.
pub fn payload(publisher: &str, media: Media, seq: u16) -> Vec<u8> {
    let mut p = Vec::with_capacity(160);
    p.push(media as u8);
    p.push(publisher.len() as u8);
    p.extend_from_slice(publisher.as_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    let filler = 40 + usize::from(seq % 97);
    let salt = publisher
        .bytes()
        .fold(media as u8, |a, b| a.wrapping_mul(31) ^ b);
    p.extend((0..filler).map(|i| (i as u8).wrapping_mul(7) ^ (seq as u8) ^ salt));
    p
}

/// Polls `condition` until it holds, or panics with `what` and `state()` after `limit`.
pub async fn eventually(
    what: &str,
    limit: Duration,
    mut condition: impl FnMut() -> bool,
    state: impl Fn() -> String,
) {
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting until {what}; state: {}",
            state()
        );
        tokio::time::sleep(POLL).await;
    }
}

/// The ICE username fragment an SDP announces.
pub fn ice_ufrag(sdp: &str) -> Option<&str> {
    sdp.lines()
        .find_map(|l| l.strip_prefix("a=ice-ufrag:"))
        .map(str::trim)
}

/// A room on a real SFU, with the signalling a server would do: each participant's
/// subscribe offers are routed to them.
pub struct Call {
    pub sfu: Sfu,
    pub room: RoomId,
    routes: Arc<Mutex<HashMap<PeerId, mpsc::UnboundedSender<Offer>>>>,
    strays: Arc<Mutex<Vec<PeerId>>>,
    /// What the SFU reported of its recordings, by recording id.
    recordings: Arc<Mutex<Vec<(String, RecordingEvent)>>>,
    dispatcher: JoinHandle<()>,
}

struct Offer {
    sdp: String,
    tracks: Vec<TrackInfo>,
}

impl Call {
    /// Binds an SFU on 127.0.0.1; `announce_port` is where clients are told to send.
    pub async fn start(max_peers: usize, announce_port: Option<u16>) -> Call {
        let (sfu, mut events) = Sfu::bind(SfuConfig {
            listen: (LOCALHOST, 0).into(),
            announce_ip: LOCALHOST.into(),
            announce_port,
            max_peers,
            threads: None,
        })
        .await
        .expect("the SFU binds");
        let routes: Arc<Mutex<HashMap<PeerId, mpsc::UnboundedSender<Offer>>>> = Arc::default();
        let table = routes.clone();
        let strays: Arc<Mutex<Vec<PeerId>>> = Arc::default();
        let stray = strays.clone();
        let recordings: Arc<Mutex<Vec<(String, RecordingEvent)>>> = Arc::default();
        let reported = recordings.clone();
        let dispatcher = tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                match event {
                    SfuEvent::Offer {
                        peer, sdp, tracks, ..
                    } => {
                        let route = lock(&table).get(&peer).cloned();
                        match route {
                            Some(route) => {
                                let _ = route.send(Offer { sdp, tracks });
                            }
                            None => lock(&stray).push(peer),
                        }
                    }
                    SfuEvent::Recording { id, event, .. } => lock(&reported).push((id, event)),
                    SfuEvent::Quality { .. } => {}
                }
            }
        });
        Call {
            sfu,
            room: RoomId("room-1".to_owned()),
            routes,
            strays,
            recordings,
            dispatcher,
        }
    }

    /// Participants who got an offer without ever having joined.
    pub fn strays(&self) -> Vec<PeerId> {
        lock(&self.strays).clone()
    }

    /// `name` publishes an Opus and a VP8 track, waits for their publish connection to
    /// be up, and starts sending; offers for their subscribe connection are answered
    /// as they come.
    pub async fn join(&self, name: &str) -> Participant {
        let id = PeerId(name.to_owned());
        let inbox: Arc<Mutex<Inbox>> = Arc::default();
        let (offers_tx, offers_rx) = mpsc::unbounded_channel();
        lock(&self.routes).insert(id.clone(), offers_tx);

        let (publish, mut publish_state, _) = client_pc().await;
        let mut tracks = Vec::new();
        for media in [Media::Audio, Media::Video] {
            let ssrc = ssrc(name, media);
            let track = Arc::new(TrackLocalStaticRTP::new(media.track(name)));
            let sender = publish
                .add_track(track.clone() as Arc<dyn TrackLocal>)
                .await
                .expect("add a track");
            tracks.push((media, track, sender, ssrc));
        }

        let (subscribe, _, track_rx) = client_pc().await;
        let answering = tokio::spawn(answer_offers(
            self.sfu.clone(),
            self.room.clone(),
            id.clone(),
            subscribe.clone(),
            offers_rx,
            inbox.clone(),
        ));
        let receiving = tokio::spawn(receive_tracks(track_rx, subscribe.clone(), inbox.clone()));

        let answer = self.publish(name, &publish, &mut publish_state).await;

        let mut outgoing = Vec::new();
        for (media, track, sender, ssrc) in tracks {
            let payload_type = media.payload_type(&sender, name).await;
            outgoing.push(Outgoing {
                media,
                track,
                ssrc,
                payload_type,
            });
        }
        let (stop, stopped) = watch::channel(false);
        let sending = tokio::spawn(send_media(
            name.to_owned(),
            outgoing,
            inbox.clone(),
            stopped,
        ));
        Participant {
            id,
            publish,
            subscribe,
            publish_answer: answer,
            inbox,
            stop,
            tasks: vec![answering, receiving, sending],
        }
    }
}

impl Call {
    /// `name`'s publish connection offers what `publish` holds, with the camera
    /// and microphone tracks [`Media::track`] makes, and comes up. Returns the
    /// SFU's answer.
    async fn publish(
        &self,
        name: &str,
        publish: &Arc<dyn PeerConnection>,
        state: &mut watch::Receiver<RTCPeerConnectionState>,
    ) -> String {
        let offer = publish.create_offer(None).await.expect("offer");
        publish
            .set_local_description(offer.clone())
            .await
            .expect("local offer");
        let sources = HashMap::from([
            (format!("{name}-mic"), Source::Microphone),
            (format!("{name}-cam"), Source::Camera),
        ]);
        let answer = self
            .sfu
            .publish(&self.room, &PeerId(name.to_owned()), offer.sdp, sources)
            .await
            .unwrap_or_else(|e| panic!("{name} publishes: {e}"));
        publish
            .set_remote_description(RTCSessionDescription::answer(answer.clone()).expect("answer"))
            .await
            .expect("the SFU's answer applies");
        tokio::time::timeout(
            Duration::from_secs(10),
            state.wait_for(|s| *s == RTCPeerConnectionState::Connected),
        )
        .await
        .unwrap_or_else(|_| panic!("{name}'s publish connection is up within 10 s"))
        .expect("publish state");
        answer
    }

    /// `name` publishes `media` (real VP8 and Opus, [`encoded_media`]) in real
    /// time, once, as a browser's encoder would hand it over: each frame and packet
    /// packetized by the `webrtc` crate. They subscribe to nothing.
    pub async fn publish_media(&self, name: &str, media: &EncodedMedia) -> Publisher {
        let (pc, mut state, _) = client_pc().await;
        let mut tracks = Vec::new();
        for kind in [Media::Audio, Media::Video] {
            let track = TrackLocalStaticSample::new(Instant::now(), kind.track(name))
                .expect("a sample track");
            let track = Arc::new(track);
            let sender = pc
                .add_track(track.clone() as Arc<dyn TrackLocal>)
                .await
                .expect("add a track");
            tracks.push((kind, track, sender));
        }
        self.publish(name, &pc, &mut state).await;
        let mut schedule = Vec::new();
        for (kind, track, sender) in tracks {
            let payload_type = kind.payload_type(&sender, name).await;
            let (frames, interval) = match kind {
                Media::Audio => (&media.audio, Duration::from_millis(20)),
                Media::Video => (&media.video, Duration::from_secs(1) / 30),
            };
            for (i, data) in frames.iter().enumerate() {
                let at = interval * i as u32;
                schedule.push((
                    at,
                    track.clone(),
                    ssrc(name, kind),
                    payload_type,
                    interval,
                    data.clone(),
                ));
            }
        }
        schedule.sort_by_key(|(at, ..)| *at);
        let name = name.to_owned();
        let sending = tokio::spawn(async move {
            let start = tokio::time::Instant::now();
            for (at, track, ssrc, payload_type, duration, data) in schedule {
                tokio::time::sleep_until(start + at).await;
                let sample = rtc::media::Sample {
                    data,
                    timestamp: Instant::now(),
                    duration,
                    packet_timestamp: 0,
                    prev_dropped_packets: 0,
                    prev_padding_packets: 0,
                };
                if let Err(e) = track
                    .sample_writer(ssrc, payload_type)
                    .write_sample(&sample)
                    .await
                {
                    panic!("{name} sends a sample: {e}");
                }
            }
        });
        Publisher { pc, sending }
    }

    /// What the SFU reported of recording `id`, in order.
    pub fn recording(&self, id: &str) -> Vec<RecordingEvent> {
        lock(&self.recordings)
            .iter()
            .filter(|(i, _)| i == id)
            .map(|(_, e)| e.clone())
            .collect()
    }
}

/// A participant who only publishes: [`Call::publish_media`].
pub struct Publisher {
    pc: Arc<dyn PeerConnection>,
    sending: JoinHandle<()>,
}

impl Publisher {
    /// Waits until everything was handed to the connection.
    pub async fn sent(&mut self) {
        (&mut self.sending).await.expect("the media was sent");
    }

    pub async fn close(self) {
        self.sending.abort();
        let _ = self.pc.close().await;
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.dispatcher.abort();
        self.sfu.shutdown();
    }
}

/// A client: a publish and a subscribe connection, and what went through them.
pub struct Participant {
    pub id: PeerId,
    publish: Arc<dyn PeerConnection>,
    subscribe: Arc<dyn PeerConnection>,
    /// The SFU's answer to the publish offer.
    pub publish_answer: String,
    inbox: Arc<Mutex<Inbox>>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Participant {
    pub fn inbox(&self) -> MutexGuard<'_, Inbox> {
        lock(&self.inbox)
    }

    /// Stops sending media; what was sent stays recorded.
    pub fn stop_sending(&self) {
        let _ = self.stop.send(true);
    }

    pub async fn close(self) {
        self.stop_sending();
        let _ = self.publish.close().await;
        let _ = self.subscribe.close().await;
        for task in self.tasks {
            task.abort();
        }
    }
}

/// What a participant sent and received, and anything that went wrong on the way.
#[derive(Debug, Default)]
pub struct Inbox {
    /// The track lists of the subscribe offers, in the order they came.
    pub offers: Vec<Vec<TrackInfo>>,
    /// The SDP of the latest subscribe offer.
    pub last_offer_sdp: String,
    /// Which publisher each subscribe m-section carries, from the offers' track lists.
    mids: HashMap<String, PeerId>,
    /// Received tracks by publisher and kind.
    pub received: BTreeMap<(String, Media), Received>,
    /// Sent packets per kind: sequence number and when.
    pub sent: BTreeMap<Media, Vec<(u16, Instant)>>,
    /// What failed in the client's background tasks.
    pub errors: Vec<String>,
}

impl Inbox {
    /// Packets received from `publisher`'s `media` track.
    pub fn count(&self, publisher: &str, media: Media) -> usize {
        self.received
            .get(&(publisher.to_owned(), media))
            .map_or(0, |r| r.seqs.len())
    }

    /// Packet counts per received track, for failure messages.
    pub fn summary(&self) -> String {
        let tracks: Vec<String> = self
            .received
            .iter()
            .map(|((p, m), r)| format!("{p}/{m:?}: {}", r.seqs.len()))
            .collect();
        format!(
            "[{}] offers {} errors {:?}",
            tracks.join(", "),
            self.offers.len(),
            self.errors
        )
    }
}

/// One received track.
#[derive(Debug)]
pub struct Received {
    pub mid: String,
    /// The SSRC the SFU sends it with.
    pub ssrc: u32,
    /// Sequence numbers in arrival order.
    pub seqs: Vec<u16>,
    /// Packets whose payload differs from what the publisher sent with that number.
    pub corrupt: usize,
    /// Packets whose number is not after the one received before (modulo wrap).
    pub out_of_order: usize,
    /// The stream crossed from 65535 to 0.
    pub wrapped: bool,
    pub ended: bool,
}

impl Received {
    pub fn unique(&self) -> HashSet<u16> {
        self.seqs.iter().copied().collect()
    }

    fn push(&mut self, seq: u16, intact: bool) {
        if let Some(&last) = self.seqs.last() {
            if (seq.wrapping_sub(last) as i16) <= 0 {
                self.out_of_order += 1;
            } else if seq < last {
                self.wrapped = true;
            }
        }
        self.corrupt += usize::from(!intact);
        self.seqs.push(seq);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn ssrc(name: &str, media: Media) -> u32 {
    let hash = name.bytes().fold(2_166_136_261u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(16_777_619)
    });
    (hash & !1) | media as u32
}

/// Reports what a client's connection does; `webrtc` calls it from its driver.
struct Handler {
    state: watch::Sender<RTCPeerConnectionState>,
    tracks: mpsc::UnboundedSender<Arc<dyn TrackRemote>>,
}

type Callback<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

// `PeerConnectionEventHandler` is an `async_trait`; these are its methods written out,
// since this crate has no `async-trait` dependency of its own.
impl PeerConnectionEventHandler for Handler {
    fn on_connection_state_change<'a, 'b>(&'a self, state: RTCPeerConnectionState) -> Callback<'b>
    where
        'a: 'b,
        Self: 'b,
    {
        let _ = self.state.send(state);
        Box::pin(async {})
    }

    fn on_track<'a, 'b>(&'a self, track: Arc<dyn TrackRemote>) -> Callback<'b>
    where
        'a: 'b,
        Self: 'b,
    {
        let _ = self.tracks.send(track);
        Box::pin(async {})
    }
}

type ClientPc = (
    Arc<dyn PeerConnection>,
    watch::Receiver<RTCPeerConnectionState>,
    mpsc::UnboundedReceiver<Arc<dyn TrackRemote>>,
);

/// The RTX SSRC an SDP pairs with `primary` (`a=ssrc-group:FID <primary> <rtx>`).
pub fn rtx_ssrc(sdp: &str, primary: u32) -> Option<u32> {
    sdp.lines().find_map(|l| {
        let mut group = l.strip_prefix("a=ssrc-group:FID ")?.split_whitespace();
        (group.next()?.parse::<u32>().ok()? == primary).then_some(())?;
        group.next()?.parse().ok()
    })
}

/// A client connection on its own UDP socket on 127.0.0.1, with the codecs and the
/// RTCP feedback (NACK, reports) a browser would negotiate.
async fn client_pc() -> ClientPc {
    let mut media = MediaEngine::default();
    media.register_default_codecs().expect("codecs");
    let registry =
        register_default_interceptors(Registry::new(), &mut media).expect("interceptors");
    let (state, state_rx) = watch::channel(RTCPeerConnectionState::New);
    let (tracks, tracks_rx) = mpsc::unbounded_channel();
    let pc = PeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_media_engine(media)
        .with_interceptor_registry(registry)
        .with_handler(Arc::new(Handler { state, tracks }))
        .with_udp_addrs(vec![SocketAddr::from((LOCALHOST, 0))])
        .build()
        .await
        .expect("client peer connection");
    (Arc::new(pc), state_rx, tracks_rx)
}

/// Applies the SFU's subscribe offers in order and sends back the answers.
async fn answer_offers(
    sfu: Sfu,
    room: RoomId,
    peer: PeerId,
    pc: Arc<dyn PeerConnection>,
    mut offers: mpsc::UnboundedReceiver<Offer>,
    inbox: Arc<Mutex<Inbox>>,
) {
    while let Some(Offer { sdp, tracks }) = offers.recv().await {
        {
            let mut inbox = lock(&inbox);
            for t in &tracks {
                inbox.mids.insert(t.mid.clone(), t.peer.clone());
            }
            inbox.offers.push(tracks);
            inbox.last_offer_sdp = sdp.clone();
        }
        let result = async {
            let offer = RTCSessionDescription::offer(sdp).map_err(|e| e.to_string())?;
            pc.set_remote_description(offer)
                .await
                .map_err(|e| format!("offer: {e}"))?;
            let answer = pc.create_answer(None).await.map_err(|e| e.to_string())?;
            pc.set_local_description(answer.clone())
                .await
                .map_err(|e| format!("local answer: {e}"))?;
            sfu.answer(&room, &peer, answer.sdp)
                .await
                .map_err(|e| format!("the SFU refused the answer: {e}"))
        }
        .await;
        if let Err(e) = result {
            lock(&inbox).errors.push(e);
        }
    }
}

/// Starts reading every track the subscribe connection opens.
async fn receive_tracks(
    mut tracks: mpsc::UnboundedReceiver<Arc<dyn TrackRemote>>,
    pc: Arc<dyn PeerConnection>,
    inbox: Arc<Mutex<Inbox>>,
) {
    let mut readers = Vec::new();
    while let Some(track) = tracks.recv().await {
        readers.push(tokio::spawn(read_track(track, pc.clone(), inbox.clone())));
    }
    // Dropping the handles would leave the readers running; the driver ends them.
    for reader in readers {
        let _ = reader.await;
    }
}

/// Records one received track's packets, checking each payload against what its
/// publisher (found from the offer's track list by the transceiver's mid) sent.
async fn read_track(
    track: Arc<dyn TrackRemote>,
    pc: Arc<dyn PeerConnection>,
    inbox: Arc<Mutex<Inbox>>,
) {
    let mut key: Option<(String, Media)> = None;
    while let Some(event) = track.poll().await {
        match event {
            TrackRemoteEvent::OnOpen(init) => {
                let mut mid = None;
                for t in pc.get_transceivers().await {
                    if let Ok(Some(r)) = t.receiver().await
                        && r.id() == init.receiver_id
                    {
                        mid = t.mid().await.ok().flatten();
                    }
                }
                let media = Media::of(track.kind().await);
                let mut inbox = lock(&inbox);
                let publisher = mid.as_ref().and_then(|m| inbox.mids.get(m)).cloned();
                match (mid, publisher, media) {
                    (Some(mid), Some(publisher), Some(media)) => {
                        let k = (publisher.0, media);
                        inbox.received.entry(k.clone()).or_insert(Received {
                            mid,
                            ssrc: init.ssrc,
                            seqs: Vec::new(),
                            corrupt: 0,
                            out_of_order: 0,
                            wrapped: false,
                            ended: false,
                        });
                        key = Some(k);
                    }
                    other => inbox
                        .errors
                        .push(format!("a track nobody's offer explains: {other:?}")),
                }
            }
            TrackRemoteEvent::OnRtpPacket(packet) => {
                let mut inbox = lock(&inbox);
                let Some((publisher, media)) = &key else {
                    inbox.errors.push("RTP before the track opened".to_owned());
                    continue;
                };
                let seq = packet.header.sequence_number;
                let intact = packet.payload == payload(publisher, *media, seq).as_slice();
                if let Some(r) = inbox.received.get_mut(&(publisher.clone(), *media)) {
                    r.push(seq, intact);
                }
            }
            TrackRemoteEvent::OnEnded => {
                if let Some(k) = &key
                    && let Some(r) = lock(&inbox).received.get_mut(k)
                {
                    r.ended = true;
                }
            }
            _ => {}
        }
    }
}

struct Outgoing {
    media: Media,
    track: Arc<TrackLocalStaticRTP>,
    ssrc: u32,
    payload_type: u8,
}

/// Sends video every tick and audio every other tick until told to stop, recording
/// each packet's number and time.
async fn send_media(
    name: String,
    tracks: Vec<Outgoing>,
    inbox: Arc<Mutex<Inbox>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next_seq = [AUDIO_FIRST_SEQ, VIDEO_FIRST_SEQ];
    for tick in 0u32.. {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        for t in &tracks {
            if t.media == Media::Audio && tick % 2 == 1 {
                continue;
            }
            let seq = next_seq[t.media as usize];
            next_seq[t.media as usize] = seq.wrapping_add(1);
            let (marker, timestamp) = match t.media {
                Media::Audio => (false, tick.wrapping_mul(480)),
                Media::Video => (true, tick.wrapping_mul(900)),
            };
            let packet = rtc::rtp::Packet {
                header: rtc::rtp::header::Header {
                    version: 2,
                    marker,
                    payload_type: t.payload_type,
                    sequence_number: seq,
                    timestamp,
                    ssrc: t.ssrc,
                    ..Default::default()
                },
                payload: Bytes::from(payload(&name, t.media, seq)),
            };
            // Recorded first: once handed over, the packet may be on the wire.
            lock(&inbox)
                .sent
                .entry(t.media)
                .or_default()
                .push((seq, Instant::now()));
            if let Err(e) = t.track.write_rtp(packet).await {
                lock(&inbox).errors.push(format!("write_rtp: {e}"));
            }
        }
    }
}

/// A UDP relay in front of the SFU, which is told to announce the proxy's port. Each
/// client address gets an upstream socket of its own, so the SFU sees one address
/// per client connection as it would without the proxy. Media the SFU sends to
/// connections named in `lossy` (by the SFU's ICE username fragment) is dropped at
/// random; STUN, DTLS and RTCP always pass.
pub struct Proxy {
    lossy: Arc<Mutex<HashSet<String>>>,
    pub stats: Arc<Mutex<ProxyStats>>,
    task: JoinHandle<()>,
}

/// What crossed the proxy on lossy connections.
#[derive(Debug, Default)]
pub struct ProxyStats {
    /// RTP datagrams from the SFU passed on, by SSRC.
    pub forwarded: HashMap<u32, u32>,
    /// Sequence numbers of the RTP datagrams from the SFU dropped, by SSRC.
    pub dropped: HashMap<u32, Vec<u16>>,
    /// RTCP datagrams the client sent, and those that start with a generic NACK.
    pub rtcp_up: u32,
    pub nacks_up: u32,
}

impl ProxyStats {
    pub fn dropped(&self, ssrc: u32) -> HashSet<u16> {
        self.dropped
            .get(&ssrc)
            .map(|d| d.iter().copied().collect())
            .unwrap_or_default()
    }

    /// RTP datagrams the SFU sent with `ssrc`, dropped or not.
    pub fn sent(&self, ssrc: u32) -> u32 {
        self.forwarded.get(&ssrc).copied().unwrap_or(0)
            + self.dropped.get(&ssrc).map_or(0, |d| d.len() as u32)
    }
}

impl Proxy {
    /// Binds the proxy's port; [`Proxy::run`] starts relaying once the SFU is bound.
    pub async fn bind() -> (UdpSocket, SocketAddr) {
        let socket = UdpSocket::bind((LOCALHOST, 0)).await.expect("proxy binds");
        let addr = socket.local_addr().expect("proxy address");
        (socket, addr)
    }

    /// Relays between clients and `sfu`, dropping `loss` of lossy media.
    pub fn run(front: UdpSocket, sfu: SocketAddr, loss: f64) -> Proxy {
        let lossy: Arc<Mutex<HashSet<String>>> = Arc::default();
        let stats: Arc<Mutex<ProxyStats>> = Arc::default();
        let task = tokio::spawn(relay(
            Arc::new(front),
            sfu,
            loss,
            lossy.clone(),
            stats.clone(),
        ));
        Proxy { lossy, stats, task }
    }

    /// Media to the connection with the SFU-side username fragment `ufrag` is lossy
    /// from now on.
    pub fn make_lossy(&self, ufrag: &str) {
        lock(&self.lossy).insert(ufrag.to_owned());
    }

    pub fn stats(&self) -> MutexGuard<'_, ProxyStats> {
        lock(&self.stats)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One client address as the proxy relays it.
struct Flow {
    up: Arc<UdpSocket>,
    /// The SFU's username fragment from the client's STUN requests.
    ufrag: Arc<Mutex<Option<String>>>,
    task: JoinHandle<()>,
}

impl Drop for Flow {
    // The relay owns its flows: when it is aborted, their downstream tasks end too.
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay(
    front: Arc<UdpSocket>,
    sfu: SocketAddr,
    loss: f64,
    lossy: Arc<Mutex<HashSet<String>>>,
    stats: Arc<Mutex<ProxyStats>>,
) {
    let mut flows: HashMap<SocketAddr, Flow> = HashMap::new();
    let mut buf = vec![0u8; 4096];
    // A fixed seed: which packets die varies only with timing, never between builds.
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    loop {
        let Ok((n, client)) = front.recv_from(&mut buf).await else {
            continue;
        };
        let data = &buf[..n];
        if let Entry::Vacant(vacant) = flows.entry(client) {
            let up = Arc::new(
                UdpSocket::bind((LOCALHOST, 0))
                    .await
                    .expect("upstream socket"),
            );
            up.connect(sfu).await.expect("upstream connect");
            let ufrag: Arc<Mutex<Option<String>>> = Arc::default();
            rng = rng.wrapping_add(0x2545_F491_4F6C_DD1D);
            let task = tokio::spawn(downstream(
                up.clone(),
                front.clone(),
                client,
                ufrag.clone(),
                lossy.clone(),
                stats.clone(),
                loss,
                rng,
            ));
            vacant.insert(Flow { up, ufrag, task });
        }
        let flow = &flows[&client];
        if let Some(u) = stun_request_ufrag(data) {
            *lock(&flow.ufrag) = Some(u.to_owned());
        }
        let is_lossy = lock(&flow.ufrag)
            .as_ref()
            .is_some_and(|u| lock(&lossy).contains(u));
        if is_lossy && is_rtcp(data) {
            let mut s = lock(&stats);
            s.rtcp_up += 1;
            // SRTCP leaves the first header in the clear: PT 205 (RTPFB), FMT 1.
            if data[1] == 205 && data[0] & 0x1f == 1 {
                s.nacks_up += 1;
            }
        }
        let _ = flow.up.send(data).await;
    }
}

#[allow(clippy::too_many_arguments)]
async fn downstream(
    up: Arc<UdpSocket>,
    front: Arc<UdpSocket>,
    client: SocketAddr,
    ufrag: Arc<Mutex<Option<String>>>,
    lossy: Arc<Mutex<HashSet<String>>>,
    stats: Arc<Mutex<ProxyStats>>,
    loss: f64,
    seed: u64,
) {
    let mut rng = seed | 1;
    let mut buf = vec![0u8; 4096];
    loop {
        let Ok(n) = up.recv(&mut buf).await else {
            return;
        };
        let data = &buf[..n];
        let is_lossy = lock(&ufrag)
            .as_ref()
            .is_some_and(|u| lock(&lossy).contains(u));
        if is_lossy && is_rtp(data) {
            // xorshift64*
            rng ^= rng >> 12;
            rng ^= rng << 25;
            rng ^= rng >> 27;
            let draw = (rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64;
            let drop = draw < loss;
            let seq = u16::from_be_bytes([data[2], data[3]]);
            let ssrc = u32::from_be_bytes([data[8], data[9], data[10], data[11]]);
            let mut s = lock(&stats);
            if drop {
                s.dropped.entry(ssrc).or_default().push(seq);
                continue;
            }
            *s.forwarded.entry(ssrc).or_default() += 1;
        }
        let _ = front.send_to(data, client).await;
    }
}

fn is_rtp_or_rtcp(data: &[u8]) -> bool {
    data.len() >= 12 && (128..=191).contains(&data[0])
}

fn is_rtcp(data: &[u8]) -> bool {
    is_rtp_or_rtcp(data) && (192..=223).contains(&data[1])
}

fn is_rtp(data: &[u8]) -> bool {
    is_rtp_or_rtcp(data) && !(192..=223).contains(&data[1])
}

/// The SFU's username fragment from a STUN binding request (`USERNAME` is
/// `<server ufrag>:<client ufrag>`).
fn stun_request_ufrag(data: &[u8]) -> Option<&str> {
    if data.len() < 20 || data[0..2] != [0, 1] || data[4..8] != [0x21, 0x12, 0xA4, 0x42] {
        return None;
    }
    let mut rest = data.get(20..)?;
    while rest.len() >= 4 {
        let kind = u16::from_be_bytes([rest[0], rest[1]]);
        let len = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
        let value = rest.get(4..4 + len)?;
        if kind == 0x0006 {
            return std::str::from_utf8(value).ok()?.split(':').next();
        }
        rest = rest.get(4 + len.next_multiple_of(4)..)?;
    }
    None
}

/// A STUN binding request from the SFU's point of view: `USERNAME` and, if given,
/// more attributes (kind, value), each padded to four bytes.
pub fn stun_request(username: &str, attributes: &[(u16, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (kind, value) in std::iter::once(&(0x0006u16, username.as_bytes())).chain(attributes) {
        body.extend_from_slice(&kind.to_be_bytes());
        body.extend_from_slice(&(value.len() as u16).to_be_bytes());
        body.extend_from_slice(value);
        body.resize(body.len().next_multiple_of(4), 0);
    }
    let mut packet = vec![0x00, 0x01];
    packet.extend_from_slice(&(body.len() as u16).to_be_bytes());
    packet.extend_from_slice(&[0x21, 0x12, 0xA4, 0x42]);
    packet.extend_from_slice(b"huddle-test!");
    packet.extend_from_slice(&body);
    packet
}
