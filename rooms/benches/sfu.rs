//! The SFU benchmark: N rooms of 8 synthetic participants over real ICE and DTLS-SRTP
//! on loopback, each sending ~130 video packets/s (1200-byte payloads) and ~50 audio
//! packets/s (160 bytes), every packet forwarded to the 7 others.
//!
//! ```text
//! cargo bench -p rooms --bench sfu -- --rooms 2 --seconds 10
//! ```
//!
//! The [`Sfu`] runs in threads of its own (named `huddle-sfu*`, one tokio runtime), the
//! participants in load-generator threads (`load-client-*`, sans-IO `rtc` peer
//! connections, as a browser would use them, on their own UDP sockets). Once every
//! participant receives every other participant's audio and video, and after a warm-up,
//! a window of `--seconds` is measured:
//! - server CPU: the `huddle-sfu*` threads' CPU time from `/proc/self/task/*/sched`,
//!   over the window, divided by the packets forwarded in it;
//! - forwarded packets: each packet sent in the window times its 7 subscribers
//!   (received plus lost), lost ones being those that never arrived;
//! - latency: every payload carries its send time (nanoseconds since the run's start,
//!   one process clock), receivers record receive − send;
//! - the physical floor, measured in the same run: CPU per loopback UDP `send_to` +
//!   `recv_from` (split between the two by their wall-clock shares) and per SRTP protect
//!   and unprotect (the negotiated profile, through `rtc::srtp`), after the load; and the
//!   one-way latency of a bare relay (three threads: protect + send, receive + unprotect
//!   + protect + send, receive + unprotect) running beside the load in the window.
//!
//! Floor per forwarded packet = (receive + unprotect) / 7 + (protect + send), for the
//! run's mix of video and audio; added latency = latency through the SFU − the bare
//! relay's. The SFU path also crosses the clients' `rtc` stacks, which the relay's does
//! not, so the added latency is an upper bound for the SFU's own. The program exits non-zero when the call setup fails
//! (a participant not receiving everybody within 20 s) or a signaling step errs.
//!
//! Without `--bench` (as `cargo test --all-targets` runs it) it makes a short smoke run.
//!
//! With `--janus`, the same participants then put the same load on Janus's VideoRoom in
//! a Janus process of its own (`sfu/janus.rs`), measured the same way (the process's
//! CPU time), and the report puts both side by side.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket as StdUdpSocket};
use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc as std_mpsc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rooms::record::RecordingSpec;
use rooms::{PeerId, RoomId, Sfu, SfuConfig, SfuEvent};
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_OPUS, MIME_TYPE_VP8, MediaEngine,
};
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp_transceiver::RTCRtpSenderId;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RtpCodecKind};
use rtc::sansio::Protocol;
use rtc::shared::marshal::Marshal;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use rtc::srtp::context::Context as SrtpContext;
use rtc::srtp::protection_profile::ProtectionProfile;
use rtc::statistics::StatsSelector;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

#[path = "sfu/janus.rs"]
mod janus;

/// Participants per room.
const PARTICIPANTS: usize = 8;
/// Subscribers of each packet.
const FANOUT: usize = PARTICIPANTS - 1;
const VIDEO_PPS: f64 = 130.0;
const AUDIO_PPS: f64 = 50.0;
const VIDEO_PAYLOAD: usize = 1200;
const AUDIO_PAYLOAD: usize = 160;
/// The RTP fixed header.
const RTP_HEADER: usize = 12;
/// Every participant must receive everybody within this, or the run fails.
const SETUP_TIMEOUT: Duration = Duration::from_secs(20);
/// After the window, packets sent in it still have this long to arrive.
const GRACE: Duration = Duration::from_millis(1000);

/// Payload header: magic, sender index, kind, send time in ns since the run's start.
/// The magic's first byte is a VP8 payload descriptor (S: a frame starts here) and
/// its second a VP8 keyframe's first byte (P clear), so that a recording room
/// (`--record`) records every video packet as a whole keyframe, as it would a
/// browser's frames; Opus takes any bytes.
const MAGIC: [u8; 4] = [0x10, b'H', b'D', b'L'];
const STAMP: usize = 17;
const KIND_AUDIO: u8 = 0;
const KIND_VIDEO: u8 = 1;

/// The SFU's runtime threads (and its blocking pool's: recording writers).
const SERVER_THREAD: &str = rooms::SFU_THREAD;
/// Signaling: publishes and answers, carried to the SFU as the server would.
const SIGNALING_THREAD: &str = "bench-signaling";
const CLIENT_THREAD: &str = "load-client";
const FLOOR_THREAD: &str = "floor";

type Res<T> = Result<T, String>;

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

#[derive(Debug, Clone)]
struct Args {
    rooms: usize,
    seconds: f64,
    warmup: f64,
    client_threads: usize,
    server_threads: usize,
    /// Smoke run (no `--bench`): short floor measurements.
    quick: bool,
    /// After the window, measure the server's CPU per forwarded packet again,
    /// without and then with every room recording.
    record: bool,
    /// Whole runs (setup, warm-up, window, floor), each reported, then their median
    /// and spread.
    rounds: usize,
    /// After Huddle, the same load against Janus (VideoRoom), side by side.
    janus: bool,
}

const USAGE: &str = "\
usage: cargo bench -p rooms --bench sfu -- [options]
  --rooms N            rooms of 8 participants (default 2)
  --seconds S          measured window, seconds (default 10)
  --warmup S           steady state before the window, seconds (default 2)
  --client-threads N   load-generator threads (default 1)
  --server-threads N   threads of the SFU's runtime, rooms spread over them (default 1)
  --rounds N           whole runs, each reported, then the median and spread of
                       each figure (default 3; 1 without --bench)
  --record             then two more windows of --seconds: server CPU per forwarded
                       packet without, then with every room recording (to a
                       temporary directory), and the difference
  --janus              then the same load against Janus (Debian's janus, VideoRoom
                       plugin, over its HTTP API), and both side by side";

fn parse_args() -> Res<Args> {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let bench = raw.iter().any(|a| a == "--bench");
    let mut args = if bench {
        Args {
            rooms: 2,
            seconds: 10.0,
            warmup: 2.0,
            client_threads: 1,
            server_threads: 1,
            quick: false,
            record: false,
            rounds: 3,
            janus: false,
        }
    } else {
        Args {
            rooms: 1,
            seconds: 1.0,
            warmup: 0.5,
            client_threads: 1,
            server_threads: 1,
            quick: true,
            record: false,
            rounds: 1,
            janus: false,
        }
    };
    let mut it = raw.into_iter();
    while let Some(arg) = it.next() {
        let (key, inline) = match arg.split_once('=') {
            Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
            None => (arg, None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| format!("{key} needs a value"))
        };
        match key.as_str() {
            "--bench" => {}
            "--record" => args.record = true,
            "--janus" => args.janus = true,
            "--rooms" => args.rooms = value()?.parse().map_err(err)?,
            "--seconds" => args.seconds = value()?.parse().map_err(err)?,
            "--warmup" => args.warmup = value()?.parse().map_err(err)?,
            "--client-threads" => args.client_threads = value()?.parse().map_err(err)?,
            "--server-threads" => args.server_threads = value()?.parse().map_err(err)?,
            "--rounds" => args.rounds = value()?.parse().map_err(err)?,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    if args.rooms == 0 || args.client_threads == 0 || args.server_threads == 0 || args.rounds == 0 {
        return Err(
            "--rooms, --client-threads, --server-threads and --rounds must be at least 1".into(),
        );
    }
    if !(args.seconds > 0.0 && args.warmup >= 0.0) {
        return Err("--seconds must be positive and --warmup not negative".into());
    }
    Ok(args)
}

fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("sfu bench: {e}");
            std::process::exit(2);
        }
    };
    match run(&args) {
        Ok(()) => {}
        Err(e) => {
            eprintln!("sfu bench FAILED: {e}");
            std::process::exit(1);
        }
    }
}

/// What every thread of the run shares.
#[derive(Debug)]
struct Shared {
    start: Instant,
    /// The measured window, in ns since `start`; `u64::MAX` until set.
    window_start: AtomicU64,
    window_end: AtomicU64,
    stop: AtomicBool,
    /// Publish connections connected.
    connected: AtomicUsize,
    /// Participants receiving every other participant's audio and video.
    ready: AtomicUsize,
    failures: Mutex<Vec<String>>,
    /// The SRTP profiles negotiated on a publish and a subscribe connection.
    srtp_cipher: Mutex<Option<(String, String)>>,
    /// The load generator's UDP ports, to read their drop counters.
    client_ports: Mutex<Vec<u16>>,
    /// Packets sent so far, for windows measured apart from the main one.
    sent: AtomicU64,
    /// The address the participants' sockets bind (loopback, or for Janus, which
    /// gathers no loopback candidates, the host's own address: still over `lo`).
    host: IpAddr,
}

impl Shared {
    fn nanos(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.start).as_nanos() as u64
    }

    fn in_window(&self, sent: u64) -> bool {
        sent >= self.window_start.load(Ordering::Relaxed)
            && sent < self.window_end.load(Ordering::Relaxed)
    }

    fn fail(&self, message: String) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(message);
    }

    fn failures(&self) -> Vec<String> {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

fn run(args: &Args) -> Res<()> {
    println!(
        "Huddle SFU benchmark at commit {}: {} room(s) x {PARTICIPANTS} participants, {} round(s) \
         of a {} s window after {} s warm-up, {} server thread(s), {} client thread(s), {} cores",
        commit(),
        args.rooms,
        args.rounds,
        args.seconds,
        args.warmup,
        args.server_threads,
        args.client_threads,
        thread::available_parallelism().map_or(0, |n| n.get()),
    );
    if args.quick {
        println!(
            "smoke run (no --bench flag, as `cargo test` runs it): checks the call setup; \
             the figures are no benchmark. Run `cargo bench -p rooms --bench sfu`."
        );
    }
    let mut rounds = Vec::new();
    for n in 1..=args.rounds {
        if args.rounds > 1 {
            println!("\n== round {n} of {}", args.rounds);
        }
        rounds.push(round(args)?);
    }
    if rounds.len() > 1 {
        print!(
            "{}",
            Figures::summary("Huddle", rounds.iter().map(|r| &r.0))
        );
        let janus: Vec<(Figures, Figures)> = rounds
            .iter()
            .filter_map(|(huddle, janus)| Some((*huddle, (*janus)?)))
            .collect();
        if !janus.is_empty() {
            print!("{}", Figures::summary("Janus", janus.iter().map(|r| &r.1)));
            print!("{}", janus::summary(&janus));
        }
    }
    Ok(())
}

/// The commit measured, `-dirty` when the work tree differs from it.
fn commit() -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        Some(head) => match git(&["status", "--porcelain", "--untracked-files=no"]) {
            Some(changes) if changes.is_empty() => head,
            _ => format!("{head}-dirty"),
        },
        None => "unknown (not a git checkout)".to_owned(),
    }
}

/// One whole run: setup, warm-up, the window (and the recording windows), the floor;
/// then the same against Janus with `--janus`. Prints the reports; returns the
/// headline figures of Huddle and of Janus.
fn round(args: &Args) -> Res<(Figures, Option<Figures>)> {
    let mut floors = Vec::new();
    let (mut huddle, recording) = load(args, Target::Huddle, &mut floors)?;
    print!("{}", huddle.render());
    if let Some(recording) = recording {
        print!("{}", recording.render());
    }
    if args.janus {
        // Fewer rooms, down to one, when Janus does not carry the load.
        let mut rooms = args.rooms;
        let mut janus = loop {
            println!(
                "\nThe same load against Janus: {rooms} room(s) x {PARTICIPANTS} participants"
            );
            let tried = Args {
                rooms,
                ..args.clone()
            };
            match load(&tried, Target::Janus, &mut floors) {
                Ok((janus, _)) => break janus,
                Err(e) if rooms > 1 => {
                    println!("Janus did not carry {rooms} room(s): {e}");
                    rooms /= 2;
                }
                Err(e) => return Err(format!("Janus: {e}")),
            }
        };
        print!("{}", janus.render());
        print!("{}", janus::compare(&huddle, &janus));
        return Ok((huddle.figures(), Some(janus.figures())));
    }
    Ok((huddle.figures(), None))
}

/// The SFU under load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Huddle,
    /// Janus's VideoRoom (`--janus`), in a process of its own.
    Janus,
}

enum Server {
    Huddle(Sfu, JoinHandle<()>),
    Janus(janus::Janus),
}

impl Server {
    /// The UDP ports it receives media on.
    fn ports(&self) -> HashSet<u16> {
        match self {
            Server::Huddle(sfu, _) => HashSet::from([sfu.local_addr().port()]),
            Server::Janus(janus) => janus.ports(),
        }
    }

    /// Huddle's own drop counters (unroutable, queue full).
    fn dropped(&self) -> Option<(u64, u64)> {
        match self {
            Server::Huddle(sfu, _) => Some(sfu.dropped()),
            Server::Janus(_) => None,
        }
    }

    /// The CPU ns of a server in a process of its own; Huddle's are its threads'.
    fn process_cpu(&self) -> Option<u64> {
        match self {
            Server::Huddle(..) => None,
            Server::Janus(janus) => Some(janus.cpu_ns()),
        }
    }
}

/// One load against `target`: the participants' call setup, the warm-up, the window
/// and the teardown; the report is against the floor for the SRTP profile the server
/// protects with, measured on the quiet machine after the teardown (once per profile
/// and run).
fn load(
    args: &Args,
    target: Target,
    floors: &mut Vec<(String, Floor)>,
) -> Res<(Report, Option<RecordingCost>)> {
    let participants = args.rooms * PARTICIPANTS;
    // Signaling: offers the SFU makes go to the participant's task by (room, peer).
    let mut offer_routes = HashMap::new();
    let mut specs = Vec::new();
    for index in 0..participants {
        let room = RoomId(format!("room-{}", index / PARTICIPANTS));
        let peer = PeerId(format!("p{}", index % PARTICIPANTS));
        let (tx, rx) = mpsc::unbounded_channel();
        offer_routes.insert((room.clone(), peer.clone()), tx);
        specs.push(Participant {
            index: index as u32,
            room,
            peer,
            offers: rx,
        });
    }
    let shared = Arc::new(Shared {
        start: Instant::now(),
        window_start: AtomicU64::new(u64::MAX),
        window_end: AtomicU64::new(u64::MAX),
        stop: AtomicBool::new(false),
        connected: AtomicUsize::new(0),
        ready: AtomicUsize::new(0),
        failures: Mutex::new(Vec::new()),
        srtp_cipher: Mutex::new(None),
        client_ports: Mutex::new(Vec::new()),
        sent: AtomicU64::new(0),
        host: match target {
            Target::Huddle => IpAddr::V4(Ipv4Addr::LOCALHOST),
            Target::Janus => janus::host_address()?,
        },
    });
    let (requests, requests_rx) = mpsc::unbounded_channel();
    let server = match target {
        Target::Huddle => {
            let (sfu, thread) = start_server(args.server_threads, offer_routes, requests_rx)?;
            Server::Huddle(sfu, thread)
        }
        Target::Janus => Server::Janus(janus::Janus::start(
            args.rooms,
            offer_routes,
            requests_rx,
            shared.clone(),
        )?),
    };

    let mut per_thread: Vec<Vec<Participant>> = (0..args.client_threads).map(|_| vec![]).collect();
    for (i, spec) in specs.into_iter().enumerate() {
        per_thread[i % args.client_threads].push(spec);
    }
    let mut clients = Vec::new();
    for (n, group) in per_thread.into_iter().enumerate() {
        clients.push(start_client(n, group, shared.clone(), requests.clone())?);
    }

    // Setup: everybody connected and receiving everybody.
    let setup_began = Instant::now();
    let outcome = loop {
        let failures = shared.failures();
        if !failures.is_empty() {
            break Err(format!("call setup failed:\n  {}", failures.join("\n  ")));
        }
        let ready = shared.ready.load(Ordering::Relaxed);
        if ready == participants {
            break Ok(setup_began.elapsed());
        }
        if setup_began.elapsed() > SETUP_TIMEOUT {
            break Err(format!(
                "call setup timed out after {} s: {} of {participants} publish connections up, \
                 {ready} of {participants} participants receiving all {} streams",
                SETUP_TIMEOUT.as_secs(),
                shared.connected.load(Ordering::Relaxed),
                2 * FANOUT,
            ));
        }
        thread::sleep(Duration::from_millis(10));
    };
    let setup = match outcome {
        Ok(setup) => setup,
        Err(e) => {
            shared.stop.store(true, Ordering::Relaxed);
            for client in clients {
                let _ = client.join();
            }
            return Err(e);
        }
    };
    let (up, down) = shared
        .srtp_cipher
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .unwrap_or_default();
    println!(
        "setup: {participants} participants, {} subscriptions flowing after {:.2} s; \
         SRTP profile publish {up}, subscribe {down}",
        participants * 2 * FANOUT,
        setup.as_secs_f64()
    );
    // The floor uses the profile the SFU protects forwarded packets with.
    let profile = match down.as_str() {
        "SRTP_AEAD_AES_128_GCM" => ProtectionProfile::AeadAes128Gcm,
        "SRTP_AEAD_AES_256_GCM" => ProtectionProfile::AeadAes256Gcm,
        "SRTP_AES128_CM_HMAC_SHA1_32" => ProtectionProfile::Aes128CmHmacSha1_32,
        _ => ProtectionProfile::Aes128CmHmacSha1_80,
    };

    thread::sleep(Duration::from_secs_f64(args.warmup));

    // The window.
    let probe = FloorProbe::start(shared.clone(), profile)?;
    let client_ports: HashSet<u16> = shared
        .client_ports
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .copied()
        .collect();
    let server_ports = server.ports();
    let udp_before = udp_counters();
    let server_drops_before = socket_drops(&server_ports);
    let client_drops_before = socket_drops(&client_ports);
    let drops_before = server.dropped();
    let cpu_before = thread_cpu();
    let process_before = server.process_cpu();
    let began = Instant::now();
    shared
        .window_start
        .store(shared.nanos(began), Ordering::Relaxed);
    thread::sleep(Duration::from_secs_f64(args.seconds));
    let cpu_after = thread_cpu();
    let process_after = server.process_cpu();
    let ended = Instant::now();
    shared
        .window_end
        .store(shared.nanos(ended), Ordering::Relaxed);
    let window = ended - began;
    thread::sleep(GRACE);
    let drops_after = server.dropped();
    let server_drops = socket_drops(&server_ports).saturating_sub(server_drops_before);
    let client_drops = socket_drops(&client_ports).saturating_sub(client_drops_before);
    let udp_after = udp_counters();
    let floor_latencies = probe.stop();
    let recording = if args.record && target == Target::Huddle {
        Some(measure_recording(args, &shared, &requests))
    } else {
        None
    };
    drop(requests);
    shared.stop.store(true, Ordering::Relaxed);

    let mut stats = ClientStats::default();
    for client in clients {
        let s = client
            .join()
            .map_err(|_| "a load-generator thread panicked".to_owned())?;
        stats.merge(s);
    }
    match server {
        Server::Huddle(sfu, thread) => {
            drop(sfu);
            let _ = thread.join();
        }
        Server::Janus(janus) => drop(janus),
    }
    if let Some(Ok(cost)) = &recording {
        let _ = std::fs::remove_dir_all(&cost.dir);
    }
    let failures = shared.failures();
    if !failures.is_empty() {
        return Err(format!(
            "errors during the run:\n  {}",
            failures.join("\n  ")
        ));
    }

    // The floor, on a quiet machine again.
    let floor = match floors.iter().find(|(name, _)| *name == down) {
        Some((_, floor)) => floor.clone(),
        None => {
            let floor = Floor::measure(profile, args.quick)?;
            floors.push((down.clone(), floor.clone()));
            floor
        }
    };
    let recording = recording.transpose()?;

    let report = Report {
        args: args.clone(),
        window,
        stats,
        floor,
        floor_latencies,
        server_cpu: match (process_before, process_after) {
            (Some(before), Some(after)) => after.saturating_sub(before),
            _ => cpu_delta(&cpu_before, &cpu_after, SERVER_THREAD),
        },
        busiest_thread: match target {
            Target::Huddle => thread_deltas(&cpu_before, &cpu_after, SERVER_THREAD).max(),
            Target::Janus => None,
        },
        client_cpu: cpu_delta(&cpu_before, &cpu_after, CLIENT_THREAD),
        sfu_drops: drops_before.zip(drops_after).map(|(before, after)| {
            (
                after.0.saturating_sub(before.0),
                after.1.saturating_sub(before.1),
            )
        }),
        udp: udp_delta(&udp_before, &udp_after),
        socket_drops: (server_drops, client_drops),
        srtp: (up, down),
    };
    Ok((report, recording))
}

/// What recording every room costs the server, from `--record`.
struct RecordingCost {
    /// Server CPU ns per forwarded packet, without and with every room recording.
    without: f64,
    with: f64,
    /// Bytes the recordings' spools held when the window closed.
    spooled: u64,
    seconds: f64,
    /// Where the recordings went.
    dir: std::path::PathBuf,
}

impl RecordingCost {
    fn render(&self) -> String {
        format!(
            "recording (--record, two more {:.0} s windows): server CPU per forwarded packet \
             {:.0} ns without recording, {:.0} ns with every room recording: {:+.1} %; \
             {:.1} MB spooled\n",
            self.seconds,
            self.without,
            self.with,
            100.0 * (self.with / self.without - 1.0),
            self.spooled as f64 / 1e6,
        )
    }
}

/// Two windows of `--seconds` after the main one: the server's CPU per forwarded
/// packet without recording, then with every room recording to a temporary
/// directory (removed afterwards, once the files are written).
fn measure_recording(
    args: &Args,
    shared: &Shared,
    requests: &mpsc::UnboundedSender<Request>,
) -> Res<RecordingCost> {
    let window = |shared: &Shared| {
        let (cpu, sent) = (thread_cpu(), shared.sent.load(Ordering::Relaxed));
        thread::sleep(Duration::from_secs_f64(args.seconds));
        let spent = cpu_delta(&cpu, &thread_cpu(), SERVER_THREAD);
        let forwarded = (shared.sent.load(Ordering::Relaxed) - sent) * FANOUT as u64;
        spent as f64 / forwarded.max(1) as f64
    };
    let without = window(shared);
    let dir = std::env::temp_dir().join(format!("huddle-bench-recordings-{}", std::process::id()));
    let (reply, started) = oneshot::channel();
    requests
        .send(Request::Record {
            dir: dir.clone(),
            rooms: args.rooms,
            reply,
        })
        .map_err(|_| "the server is gone".to_owned())?;
    started
        .blocking_recv()
        .map_err(|_| "recordings did not start".to_owned())??;
    // Keyframes asked for, writers started.
    thread::sleep(Duration::from_secs(1));
    let with = window(shared);
    let spooled = std::fs::read_dir(&dir)
        .map_err(err)?
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();
    // The recordings stop with the rooms when the server shuts down; the
    // directory goes after that.
    Ok(RecordingCost {
        without,
        with,
        spooled,
        seconds: args.seconds,
        dir,
    })
}

// ---------------------------------------------------------------------------------
// The server side.

/// A signaling request from a participant, carried out on the server's runtime (the
/// SFU starts room tasks on the runtime that calls it).
enum Request {
    Publish {
        room: RoomId,
        peer: PeerId,
        offer: String,
        reply: oneshot::Sender<Res<String>>,
    },
    Answer {
        room: RoomId,
        peer: PeerId,
        answer: String,
        reply: oneshot::Sender<Res<()>>,
    },
    /// Every room (`room-0` to `room-{rooms - 1}`) records into `dir`.
    Record {
        dir: std::path::PathBuf,
        rooms: usize,
        reply: oneshot::Sender<Res<()>>,
    },
}

type OfferRoutes = HashMap<(RoomId, PeerId), mpsc::UnboundedSender<String>>;

fn start_server(
    threads: usize,
    offers: OfferRoutes,
    requests: mpsc::UnboundedReceiver<Request>,
) -> Res<(Sfu, JoinHandle<()>)> {
    let (ready, ready_rx) = std_mpsc::channel();
    let handle = thread::Builder::new()
        .name(SIGNALING_THREAD.to_owned())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            match runtime {
                Ok(runtime) => runtime.block_on(serve(threads, offers, requests, ready)),
                Err(e) => {
                    let _ = ready.send(Err(e.to_string()));
                }
            }
        })
        .map_err(err)?;
    let sfu = ready_rx
        .recv_timeout(Duration::from_secs(10))
        .map_err(|_| "the SFU did not start".to_owned())??;
    Ok((sfu, handle))
}

async fn serve(
    threads: usize,
    offers: OfferRoutes,
    mut requests: mpsc::UnboundedReceiver<Request>,
    ready: std_mpsc::Sender<Res<Sfu>>,
) {
    let config = SfuConfig {
        listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
        announce_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        announce_port: None,
        max_peers: PARTICIPANTS,
        threads: Some(threads),
    };
    let (sfu, mut events) = match Sfu::bind(config).await {
        Ok(bound) => bound,
        Err(e) => {
            let _ = ready.send(Err(format!("bind: {e}")));
            return;
        }
    };
    let _ = ready.send(Ok(sfu.clone()));
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            if let SfuEvent::Offer {
                room, peer, sdp, ..
            } = event
                && let Some(route) = offers.get(&(room, peer))
            {
                let _ = route.send(sdp);
            }
        }
    });
    while let Some(request) = requests.recv().await {
        let sfu = sfu.clone();
        tokio::spawn(async move {
            match request {
                Request::Publish {
                    room,
                    peer,
                    offer,
                    reply,
                } => {
                    let answer = sfu.publish(&room, &peer, offer, HashMap::new()).await;
                    let _ = reply.send(answer.map_err(err));
                }
                Request::Answer {
                    room,
                    peer,
                    answer,
                    reply,
                } => {
                    let done = sfu.answer(&room, &peer, answer).await;
                    let _ = reply.send(done.map_err(err));
                }
                Request::Record { dir, rooms, reply } => {
                    let mut started = Ok(());
                    for n in 0..rooms {
                        let spec = RecordingSpec {
                            id: format!("bench-{n}"),
                            path: dir.join(format!("room-{n}.webm")),
                            max_bytes: u64::MAX,
                            max_duration: Duration::from_secs(24 * 3600),
                        };
                        let room = RoomId(format!("room-{n}"));
                        if let Err(e) = sfu.start_recording(&room, spec).await {
                            started = Err(format!("room-{n} records: {e}"));
                            break;
                        }
                    }
                    let _ = reply.send(started);
                }
            }
        });
    }
    sfu.shutdown();
}

// ---------------------------------------------------------------------------------
// The load generator.

struct Participant {
    /// Global index: the sender id in payloads.
    index: u32,
    room: RoomId,
    peer: PeerId,
    offers: mpsc::UnboundedReceiver<String>,
}

#[derive(Debug, Default)]
struct ClientStats {
    /// Packets sent in the window, by kind.
    sent_video: u64,
    sent_audio: u64,
    /// Packets sent in the window that arrived.
    received: u64,
    /// One-way latency of each of those, microseconds.
    latencies_us: Vec<u32>,
    /// Datagrams that a socket refused or the peer connection did not take.
    send_errors: u64,
    read_errors: u64,
    /// RTP received that this benchmark did not send.
    foreign: u64,
    /// Packets not sent in the window because the client thread stalled > 200 ms.
    skipped: u64,
    /// Datagrams in the window, by [`PUBLISH_OUT`] and the like.
    datagrams: [u64; 4],
}

const PUBLISH_OUT: usize = 0;
const PUBLISH_IN: usize = 1;
const SUBSCRIBE_OUT: usize = 2;
const SUBSCRIBE_IN: usize = 3;

impl ClientStats {
    fn merge(&mut self, other: ClientStats) {
        self.sent_video += other.sent_video;
        self.sent_audio += other.sent_audio;
        self.received += other.received;
        self.latencies_us.extend(other.latencies_us);
        self.send_errors += other.send_errors;
        self.read_errors += other.read_errors;
        self.foreign += other.foreign;
        self.skipped += other.skipped;
        for (mine, theirs) in self.datagrams.iter_mut().zip(other.datagrams) {
            *mine += theirs;
        }
    }
}

fn start_client(
    n: usize,
    participants: Vec<Participant>,
    shared: Arc<Shared>,
    requests: mpsc::UnboundedSender<Request>,
) -> Res<JoinHandle<ClientStats>> {
    thread::Builder::new()
        .name(format!("{CLIENT_THREAD}-{n}"))
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    shared.fail(format!("client runtime: {e}"));
                    return ClientStats::default();
                }
            };
            let stats = Rc::new(RefCell::new(ClientStats::default()));
            let local = tokio::task::LocalSet::new();
            local.block_on(&runtime, async {
                let tasks: Vec<_> = participants
                    .into_iter()
                    .map(|p| {
                        tokio::task::spawn_local(participant(
                            p,
                            shared.clone(),
                            requests.clone(),
                            stats.clone(),
                        ))
                    })
                    .collect();
                for task in tasks {
                    let _ = task.await;
                }
            });
            std::mem::take(&mut *stats.borrow_mut())
        })
        .map_err(err)
}

async fn participant(
    p: Participant,
    shared: Arc<Shared>,
    requests: mpsc::UnboundedSender<Request>,
    stats: Rc<RefCell<ClientStats>>,
) {
    let name = format!("{}/{}", p.room, p.peer);
    let mut local = ClientStats::default();
    if let Err(e) = drive(p, &shared, &requests, &mut local).await {
        shared.fail(format!("{name}: {e}"));
    }
    stats.borrow_mut().merge(local);
}

/// One outgoing stream of a participant.
struct Stream {
    sender: RTCRtpSenderId,
    kind: u8,
    ssrc: u32,
    payload_type: u8,
    seq: u16,
    clock_rate: u64,
    period: Duration,
    next: Instant,
    template: Bytes,
}

/// A participant's life: publish, answer the SFU's offers, send and receive media
/// until the run stops.
async fn drive(
    mut p: Participant,
    shared: &Arc<Shared>,
    requests: &mpsc::UnboundedSender<Request>,
    stats: &mut ClientStats,
) -> Res<()> {
    let local = SocketAddr::new(shared.host, 0);
    let publish_socket = UdpSocket::bind(local).await.map_err(err)?;
    let subscribe_socket = UdpSocket::bind(local).await.map_err(err)?;
    let publish_addr = publish_socket.local_addr().map_err(err)?;
    let subscribe_addr = subscribe_socket.local_addr().map_err(err)?;
    shared
        .client_ports
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .extend([publish_addr.port(), subscribe_addr.port()]);

    let now = Instant::now();
    let mut publish = client_pc(now, publish_addr)?;
    let mut streams = Vec::new();
    for (kind, name) in [(KIND_AUDIO, "audio"), (KIND_VIDEO, "video")] {
        let ssrc = 0x1000_0000 + p.index * 2 + u32::from(kind);
        let (codec_kind, codec, size, pps, clock_rate) = if kind == KIND_AUDIO {
            (
                RtpCodecKind::Audio,
                RTCRtpCodec {
                    mime_type: MIME_TYPE_OPUS.to_owned(),
                    clock_rate: 48000,
                    channels: 2,
                    sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
                    rtcp_feedback: vec![],
                },
                AUDIO_PAYLOAD,
                AUDIO_PPS,
                48_000,
            )
        } else {
            (
                RtpCodecKind::Video,
                RTCRtpCodec {
                    mime_type: MIME_TYPE_VP8.to_owned(),
                    clock_rate: 90000,
                    ..Default::default()
                },
                VIDEO_PAYLOAD,
                VIDEO_PPS,
                90_000,
            )
        };
        let track = rooms::single_stream_track(
            format!("s{}", p.index),
            format!("{name}{}", p.index),
            codec_kind,
            ssrc,
            codec,
        );
        let sender = publish.add_track(track).map_err(err)?;
        let template: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        streams.push(Stream {
            sender,
            kind,
            ssrc,
            payload_type: 0,
            seq: (p.index as u16).wrapping_mul(977),
            clock_rate,
            period: Duration::from_secs_f64(1.0 / pps),
            next: now,
            template: Bytes::from(template),
        });
    }
    let offer = publish.create_offer(None).map_err(err)?;
    publish
        .set_local_description(now, offer.clone())
        .map_err(err)?;
    let (reply, answer) = oneshot::channel();
    requests
        .send(Request::Publish {
            room: p.room.clone(),
            peer: p.peer.clone(),
            offer: offer.sdp,
            reply,
        })
        .map_err(|_| "the server is gone".to_owned())?;
    let answer = answer
        .await
        .map_err(|_| "the server is gone".to_owned())?
        .map_err(|e| format!("publish refused: {e}"))?;
    let answer = RTCSessionDescription::answer(answer).map_err(err)?;
    publish
        .set_remote_description(Instant::now(), answer)
        .map_err(err)?;
    for stream in &mut streams {
        let mut sender = publish
            .rtp_sender(stream.sender)
            .ok_or("a sender vanished")?;
        stream.payload_type = sender
            .get_parameters()
            .rtp_parameters
            .codecs
            .first()
            .map(|c| c.payload_type)
            .ok_or("no codec negotiated")?;
    }

    let mut subscribe: Option<RTCPeerConnection> = None;
    let mut connected = false;
    let mut seen: HashSet<(u32, u8)> = HashSet::new();
    let mut ready = false;
    let mut buf = vec![0u8; 2048];
    let mut sub_buf = vec![0u8; 2048];
    let sleep = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(sleep);

    loop {
        // Everything the connections want sent, and what they received.
        let counting = shared.in_window(shared.nanos(Instant::now()));
        flush(&mut publish, &publish_socket, stats, PUBLISH_OUT, counting);
        while let Some(event) = publish.poll_event() {
            if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) = event {
                match state {
                    RTCPeerConnectionState::Connected if !connected => {
                        connected = true;
                        shared.connected.fetch_add(1, Ordering::Relaxed);
                        let now = Instant::now();
                        for s in &mut streams {
                            s.next = now;
                        }
                    }
                    RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => {
                        return Err(format!("publish connection {state}"));
                    }
                    _ => {}
                }
            }
        }
        while publish.poll_read().is_some() {}
        if let Some(sub) = subscribe.as_mut() {
            flush(sub, &subscribe_socket, stats, SUBSCRIBE_OUT, counting);
            while let Some(event) = sub.poll_event() {
                if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(
                    state @ (RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed),
                ) = event
                {
                    return Err(format!("subscribe connection {state}"));
                }
            }
            take_media(sub, shared, &mut seen, ready, stats);
            if !ready && seen.len() == 2 * FANOUT {
                ready = true;
                if p.index == 0 {
                    let now = Instant::now();
                    let up = publish.get_stats(now, StatsSelector::None);
                    let down = sub.get_stats(now, StatsSelector::None);
                    let cipher = |r: &rtc::statistics::report::RTCStatsReport| {
                        r.transport()
                            .map(|t| t.srtp_cipher.clone())
                            .unwrap_or_default()
                    };
                    *shared.srtp_cipher.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some((cipher(&up), cipher(&down)));
                }
                shared.ready.fetch_add(1, Ordering::Relaxed);
            }
        }
        if shared.stop.load(Ordering::Relaxed) {
            return Ok(());
        }

        let mut deadline = Instant::now() + Duration::from_millis(50);
        let timers = [
            publish.poll_timeout(),
            subscribe.as_mut().and_then(|s| s.poll_timeout()),
        ];
        for t in timers.into_iter().flatten() {
            deadline = deadline.min(t);
        }
        if connected {
            for s in &streams {
                deadline = deadline.min(s.next);
            }
        }
        sleep.as_mut().reset(deadline.into());

        tokio::select! {
            biased;
            read = subscribe_socket.recv_from(&mut sub_buf) => {
                let first = read.map_err(err)?;
                let counting = shared.in_window(shared.nanos(Instant::now()));
                let mut next = Some(first);
                let mut n = 0;
                while let Some((len, from)) = next {
                    if let Some(sub) = subscribe.as_mut() {
                        feed(sub, subscribe_addr, from, &sub_buf[..len], stats, SUBSCRIBE_IN, counting);
                        take_media(sub, shared, &mut seen, ready, stats);
                    }
                    n += 1;
                    next = if n < 64 { subscribe_socket.try_recv_from(&mut sub_buf).ok() } else { None };
                }
            }
            read = publish_socket.recv_from(&mut buf) => {
                let first = read.map_err(err)?;
                let counting = shared.in_window(shared.nanos(Instant::now()));
                let mut next = Some(first);
                let mut n = 0;
                while let Some((len, from)) = next {
                    feed(&mut publish, publish_addr, from, &buf[..len], stats, PUBLISH_IN, counting);
                    n += 1;
                    next = if n < 64 { publish_socket.try_recv_from(&mut buf).ok() } else { None };
                }
            }
            Some(sdp) = p.offers.recv() => {
                let now = Instant::now();
                let sub = match subscribe.as_mut() {
                    Some(sub) => sub,
                    None => subscribe.insert(client_pc(now, subscribe_addr)?),
                };
                let offer = RTCSessionDescription::offer(sdp).map_err(err)?;
                sub.set_remote_description(now, offer).map_err(err)?;
                let answer = sub.create_answer(None).map_err(err)?;
                sub.set_local_description(now, answer.clone()).map_err(err)?;
                let (reply, done) = oneshot::channel();
                requests
                    .send(Request::Answer {
                        room: p.room.clone(),
                        peer: p.peer.clone(),
                        answer: answer.sdp,
                        reply,
                    })
                    .map_err(|_| "the server is gone".to_owned())?;
                let shared = shared.clone();
                let name = format!("{}/{}", p.room, p.peer);
                tokio::task::spawn_local(async move {
                    if let Ok(Err(e)) = done.await {
                        shared.fail(format!("{name}: answer refused: {e}"));
                    }
                });
            }
            () = &mut sleep => {}
        }

        let now = Instant::now();
        if publish.poll_timeout().is_some_and(|t| t <= now) {
            let _ = publish.handle_timeout(now);
        }
        if let Some(sub) = subscribe.as_mut()
            && sub.poll_timeout().is_some_and(|t| t <= now)
        {
            let _ = sub.handle_timeout(now);
        }
        if connected {
            for s in &mut streams {
                // A stalled client does not burst to catch up.
                let behind = now.saturating_duration_since(s.next);
                if behind > Duration::from_millis(200) {
                    if shared.in_window(shared.nanos(now)) {
                        stats.skipped += (behind.as_nanos() / s.period.as_nanos()) as u64;
                    }
                    s.next = now;
                }
                while s.next <= now {
                    send(&mut publish, s, p.index, shared, stats);
                    s.next += s.period;
                }
            }
        }
    }
}

fn feed(
    pc: &mut RTCPeerConnection,
    local: SocketAddr,
    from: SocketAddr,
    data: &[u8],
    stats: &mut ClientStats,
    slot: usize,
    counting: bool,
) {
    if counting {
        stats.datagrams[slot] += 1;
    }
    let read = pc.handle_read(TaggedBytesMut {
        now: Instant::now(),
        transport: TransportContext {
            local_addr: local,
            peer_addr: from,
            ecn: None,
            transport_protocol: TransportProtocol::UDP,
        },
        message: BytesMut::from(data),
    });
    if read.is_err() {
        stats.read_errors += 1;
    }
}

/// Media the subscribe connection decrypted: latency and counts.
fn take_media(
    sub: &mut RTCPeerConnection,
    shared: &Shared,
    seen: &mut HashSet<(u32, u8)>,
    ready: bool,
    stats: &mut ClientStats,
) {
    while let Some(message) = sub.poll_read() {
        if let RTCMessage::RtpPacket(_, packet) = message.message {
            let now = shared.nanos(Instant::now());
            receive(&packet.payload, now, shared, seen, ready, stats);
        }
    }
}

fn flush(
    pc: &mut RTCPeerConnection,
    socket: &UdpSocket,
    stats: &mut ClientStats,
    slot: usize,
    counting: bool,
) {
    while let Some(out) = pc.poll_write() {
        if socket
            .try_send_to(&out.message, out.transport.peer_addr)
            .is_err()
        {
            stats.send_errors += 1;
        } else if counting {
            stats.datagrams[slot] += 1;
        }
    }
}

fn send(
    publish: &mut RTCPeerConnection,
    s: &mut Stream,
    index: u32,
    shared: &Shared,
    stats: &mut ClientStats,
) {
    let at = Instant::now();
    let sent = shared.nanos(at);
    let mut payload = BytesMut::from(&s.template[..]);
    payload[..4].copy_from_slice(&MAGIC);
    payload[4..8].copy_from_slice(&index.to_be_bytes());
    payload[8] = s.kind;
    payload[9..STAMP].copy_from_slice(&sent.to_be_bytes());
    let packet = rtc::rtp::Packet {
        header: rtc::rtp::header::Header {
            version: 2,
            marker: s.kind == KIND_VIDEO,
            payload_type: s.payload_type,
            sequence_number: s.seq,
            timestamp: (u128::from(sent) * u128::from(s.clock_rate) / 1_000_000_000) as u32,
            ssrc: s.ssrc,
            ..Default::default()
        },
        payload: payload.freeze(),
    };
    s.seq = s.seq.wrapping_add(1);
    let Some(mut sender) = publish.rtp_sender(s.sender) else {
        stats.send_errors += 1;
        return;
    };
    let written = sender.write_rtp(at, packet);
    if written.is_ok() {
        shared.sent.fetch_add(1, Ordering::Relaxed);
    }
    match written {
        Ok(()) if shared.in_window(sent) => {
            if s.kind == KIND_VIDEO {
                stats.sent_video += 1;
            } else {
                stats.sent_audio += 1;
            }
        }
        Ok(()) => {}
        Err(_) => stats.send_errors += 1,
    }
}

fn receive(
    payload: &[u8],
    now: u64,
    shared: &Shared,
    seen: &mut HashSet<(u32, u8)>,
    ready: bool,
    stats: &mut ClientStats,
) {
    if payload.len() < STAMP || payload[..4] != MAGIC {
        stats.foreign += 1;
        return;
    }
    let sender = u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]);
    let kind = payload[8];
    let mut stamp = [0u8; 8];
    stamp.copy_from_slice(&payload[9..STAMP]);
    let sent = u64::from_be_bytes(stamp);
    if !ready {
        seen.insert((sender, kind));
    }
    if shared.in_window(sent) {
        stats.received += 1;
        stats
            .latencies_us
            .push((now.saturating_sub(sent) / 1000).min(u64::from(u32::MAX)) as u32);
    }
}

/// A participant's peer connection, as in the room tests: default codecs and
/// interceptors, full ICE with one host candidate.
fn client_pc(now: Instant, addr: SocketAddr) -> Res<RTCPeerConnection> {
    let mut media = MediaEngine::default();
    media.register_default_codecs().map_err(err)?;
    let registry = register_default_interceptors(Default::default(), &mut media).map_err(err)?;
    let mut pc = RTCPeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_media_engine(media)
        .with_interceptor_registry(registry)
        .build(now)
        .map_err(err)?;
    pc.add_local_candidate(rooms::host_candidate(addr).map_err(err)?)
        .map_err(err)?;
    Ok(pc)
}

// ---------------------------------------------------------------------------------
// The physical floor.

/// A plaintext RTP packet with `payload` bytes, `seq`, and the send stamp up front.
fn rtp_packet(seq: u16, payload: usize, sent: u64) -> Res<BytesMut> {
    let mut body = vec![0u8; payload.max(STAMP)];
    body[..4].copy_from_slice(&MAGIC);
    body[9..STAMP].copy_from_slice(&sent.to_be_bytes());
    rtc::rtp::Packet {
        header: rtc::rtp::header::Header {
            version: 2,
            payload_type: 96,
            sequence_number: seq,
            timestamp: u32::from(seq) * 3000,
            ssrc: 0x5eed,
            ..Default::default()
        },
        payload: Bytes::from(body),
    }
    .marshal()
    .map_err(err)
}

fn srtp_pair(profile: ProtectionProfile) -> Res<(SrtpContext, SrtpContext)> {
    let provider = rtc::srtp::crypto::default_provider().map_err(err)?;
    let key: Vec<u8> = (0..profile.key_len()).map(|i| i as u8 ^ 0x5a).collect();
    let salt: Vec<u8> = (0..profile.salt_len()).map(|i| i as u8 ^ 0xa5).collect();
    let protect =
        SrtpContext::new(&key, &salt, profile, None, None, provider.crypto()).map_err(err)?;
    // No replay window, so that the floor can unprotect one batch over and over (a
    // peer connection's check of its 64-packet window is a few bit operations).
    let unprotect =
        SrtpContext::new(&key, &salt, profile, None, None, provider.crypto()).map_err(err)?;
    Ok((protect, unprotect))
}

/// Sends `data` to `to` `count` times in one `sendmmsg`; returns how many left.
fn send_batch(socket: &StdUdpSocket, to: SocketAddr, data: &[u8], count: usize) -> Res<usize> {
    use rustix::net::{MMsgHdr, SendAncillaryBuffer, SendFlags, SocketAddrAny, sendmmsg};
    let to = SocketAddrAny::from(to);
    let slices = [std::io::IoSlice::new(data)];
    let mut controls: Vec<SendAncillaryBuffer<'_, '_, '_>> =
        (0..count).map(|_| SendAncillaryBuffer::default()).collect();
    let mut headers: Vec<MMsgHdr<'_>> = controls
        .iter_mut()
        .map(|control| MMsgHdr::new_with_addr(&to, &slices, control))
        .collect();
    sendmmsg(socket, &mut headers, SendFlags::empty()).map_err(err)
}

/// CPU nanoseconds per operation: the median of a few rounds of `f` (which does `ops`
/// operations per call), each lasting at least `round` so that the scheduler's
/// per-tick accounting of a running thread's CPU time stays precise.
fn cpu_per_op(
    round: Duration,
    rounds: usize,
    ops: usize,
    mut f: impl FnMut() -> Res<()>,
) -> Res<f64> {
    let mut results = Vec::with_capacity(rounds);
    f()?; // warm
    for _ in 0..rounds.max(1) {
        let began = Instant::now();
        let cpu = own_cpu_ns();
        let mut done = 0usize;
        while began.elapsed() < round {
            f()?;
            done += ops;
        }
        let spent = own_cpu_ns().saturating_sub(cpu) as f64;
        results.push(spent / done as f64);
    }
    results.sort_by(f64::total_cmp);
    Ok(results[results.len() / 2])
}

/// Floor costs for one packet size, nanoseconds.
#[derive(Debug, Clone, Copy)]
struct FloorCosts {
    /// Bytes on the wire.
    datagram: usize,
    /// One `send_to` (with the loopback delivery it carries) and one `recv_from`.
    udp: f64,
    /// The share of `udp` that is the send.
    send_share: f64,
    /// One datagram's share of a `sendmmsg` of 32 (with their loopback delivery).
    batched_send: f64,
    protect: f64,
    unprotect: f64,
}

impl FloorCosts {
    fn send(&self) -> f64 {
        self.udp * self.send_share
    }

    fn recv(&self) -> f64 {
        self.udp - self.send()
    }

    /// Floor CPU per forwarded packet: the inbound half shared by the fan-out; with
    /// the send in `sendmmsg` batches when `batched`.
    fn per_forward(&self, batched: bool) -> f64 {
        let send = if batched {
            self.batched_send
        } else {
            self.send()
        };
        (self.recv() + self.unprotect) / FANOUT as f64 + self.protect + send
    }
}

#[derive(Debug, Clone)]
struct Floor {
    video: FloorCosts,
    audio: FloorCosts,
}

impl Floor {
    fn measure(profile: ProtectionProfile, quick: bool) -> Res<Floor> {
        let (round, rounds) = if quick {
            (Duration::from_millis(20), 1)
        } else {
            (Duration::from_millis(100), 5)
        };
        Ok(Floor {
            video: Self::costs(profile, VIDEO_PAYLOAD, round, rounds)?,
            audio: Self::costs(profile, AUDIO_PAYLOAD, round, rounds)?,
        })
    }

    fn costs(
        profile: ProtectionProfile,
        payload: usize,
        round: Duration,
        rounds: usize,
    ) -> Res<FloorCosts> {
        let tag = profile.rtp_auth_tag_len().max(profile.aead_auth_tag_len());
        let datagram = RTP_HEADER + payload + tag;

        // UDP: 32 sends of the datagram on loopback, then its 32 receives (well
        // within a socket buffer). The sends carry the loopback delivery, as the
        // SFU's do. CPU time gives the pair's cost; the wall-clock time of the two
        // halves of each batch splits it. Once with a `send_to` per datagram, once
        // with the 32 in one `sendmmsg`.
        let a = StdUdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).map_err(err)?;
        let b = StdUdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).map_err(err)?;
        let to = b.local_addr().map_err(err)?;
        let out = vec![0x80u8; datagram];
        let mut into = vec![0u8; 2048];
        let mut pair = |send: &dyn Fn() -> Res<()>| -> Res<(f64, f64)> {
            let mut shares = Vec::new();
            let cost = cpu_per_op(round, rounds, 32, || {
                let began = Instant::now();
                send()?;
                let sent = Instant::now();
                for _ in 0..32 {
                    b.recv_from(&mut into).map_err(err)?;
                }
                let send = (sent - began).as_secs_f64();
                shares.push(send / (send + sent.elapsed().as_secs_f64()));
                Ok(())
            })?;
            shares.sort_by(f64::total_cmp);
            Ok((cost, shares.get(shares.len() / 2).copied().unwrap_or(0.5)))
        };
        let (udp, send_share) = pair(&|| {
            for _ in 0..32 {
                a.send_to(&out, to).map_err(err)?;
            }
            Ok(())
        })?;
        let (batched_udp, batched_share) = pair(&|| match send_batch(&a, to, &out, 32)? {
            32 => Ok(()),
            n => Err(format!("sendmmsg sent {n} of 32")),
        })?;
        let batched_send = batched_udp * batched_share;

        // SRTP: protect a batch of packets over and over, and unprotect its result.
        const BATCH: usize = 256;
        let (mut protect_ctx, mut unprotect_ctx) = srtp_pair(profile)?;
        let plain = (0..BATCH)
            .map(|seq| rtp_packet(seq as u16, payload, 0))
            .collect::<Res<Vec<_>>>()?;
        let sealed = plain
            .iter()
            .map(|packet| protect_ctx.encrypt_rtp(packet).map_err(err))
            .collect::<Res<Vec<_>>>()?;
        let protect = cpu_per_op(round, rounds, BATCH, || {
            for packet in &plain {
                protect_ctx.encrypt_rtp(packet).map_err(err)?;
            }
            Ok(())
        })?;
        let unprotect = cpu_per_op(round, rounds, BATCH, || {
            for packet in &sealed {
                unprotect_ctx.decrypt_rtp(packet).map_err(err)?;
            }
            Ok(())
        })?;
        Ok(FloorCosts {
            datagram,
            udp,
            send_share,
            batched_send,
            protect,
            unprotect,
        })
    }

    /// Floor per forwarded packet over the run's mix of video and audio.
    fn per_forward(&self, video_share: f64, batched: bool) -> f64 {
        video_share * self.video.per_forward(batched)
            + (1.0 - video_share) * self.audio.per_forward(batched)
    }
}

/// The floor's latency: protect + send, receive + unprotect + protect + send (a bare
/// relay), receive + unprotect, in three threads beside the load, ~500 packets/s.
struct FloorProbe {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Res<Vec<u32>>>>,
}

impl FloorProbe {
    fn start(shared: Arc<Shared>, profile: ProtectionProfile) -> Res<FloorProbe> {
        let stop = Arc::new(AtomicBool::new(false));
        let tx = StdUdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).map_err(err)?;
        let relay = StdUdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).map_err(err)?;
        let rx = StdUdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).map_err(err)?;
        let relay_addr = relay.local_addr().map_err(err)?;
        let rx_addr = rx.local_addr().map_err(err)?;
        for socket in [&relay, &rx] {
            socket
                .set_read_timeout(Some(Duration::from_millis(50)))
                .map_err(err)?;
        }
        let mut threads = Vec::new();

        let stop_tx = stop.clone();
        let start = shared.start;
        threads.push(spawn_floor("tx", move || {
            let (mut protect, _) = srtp_pair(profile)?;
            let mut seq = 0u16;
            while !stop_tx.load(Ordering::Relaxed) {
                let size = if seq % 18 < 13 {
                    VIDEO_PAYLOAD
                } else {
                    AUDIO_PAYLOAD
                };
                let sent = start.elapsed().as_nanos() as u64;
                let packet = rtp_packet(seq, size, sent)?;
                seq = seq.wrapping_add(1);
                let sealed = protect.encrypt_rtp(&packet).map_err(err)?;
                let _ = tx.send_to(&sealed, relay_addr);
                thread::sleep(Duration::from_millis(2));
            }
            Ok(Vec::new())
        })?);

        let stop_relay = stop.clone();
        threads.push(spawn_floor("relay", move || {
            let (_, mut unprotect) = srtp_pair(profile)?;
            let (mut protect, _) = srtp_pair(profile)?;
            let mut buf = vec![0u8; 2048];
            while !stop_relay.load(Ordering::Relaxed) {
                let Ok((n, _)) = relay.recv_from(&mut buf) else {
                    continue;
                };
                let plain = unprotect.decrypt_rtp(&buf[..n]).map_err(err)?;
                let sealed = protect.encrypt_rtp(&plain).map_err(err)?;
                let _ = relay.send_to(&sealed, rx_addr);
            }
            Ok(Vec::new())
        })?);

        let stop_rx = stop.clone();
        threads.push(spawn_floor("rx", move || {
            let (_, mut unprotect) = srtp_pair(profile)?;
            let mut buf = vec![0u8; 2048];
            let mut latencies = Vec::new();
            while !stop_rx.load(Ordering::Relaxed) {
                let Ok((n, _)) = rx.recv_from(&mut buf) else {
                    continue;
                };
                let plain = unprotect.decrypt_rtp(&buf[..n]).map_err(err)?;
                let now = start.elapsed().as_nanos() as u64;
                let body = &plain[RTP_HEADER..];
                let mut stamp = [0u8; 8];
                stamp.copy_from_slice(&body[9..STAMP]);
                let sent = u64::from_be_bytes(stamp);
                latencies.push((now.saturating_sub(sent) / 1000) as u32);
            }
            Ok(latencies)
        })?);
        Ok(FloorProbe { stop, threads })
    }

    fn stop(self) -> Vec<u32> {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        for t in self.threads {
            match t.join() {
                Ok(Ok(latencies)) => all.extend(latencies),
                Ok(Err(e)) => eprintln!("floor probe: {e}"),
                Err(_) => eprintln!("floor probe panicked"),
            }
        }
        all
    }
}

fn spawn_floor(
    name: &str,
    f: impl FnOnce() -> Res<Vec<u32>> + Send + 'static,
) -> Res<JoinHandle<Res<Vec<u32>>>> {
    thread::Builder::new()
        .name(format!("{FLOOR_THREAD}-{name}"))
        .spawn(f)
        .map_err(err)
}

// ---------------------------------------------------------------------------------
// CPU and kernel counters from /proc.

/// CPU time of a task directory (`/proc/self/task/<tid>` or `/proc/thread-self`), ns:
/// the scheduler's exact runtime where the kernel shows it, else utime + stime ticks.
fn task_cpu_ns(dir: &Path) -> Option<u64> {
    if let Ok(sched) = std::fs::read_to_string(dir.join("sched")) {
        for line in sched.lines() {
            if let Some(rest) = line.strip_prefix("se.sum_exec_runtime") {
                let value = rest.trim_start_matches([' ', ':']).trim();
                let (ms, frac) = value.split_once('.').unwrap_or((value, "0"));
                let ms: u64 = ms.parse().ok()?;
                let mut frac = frac.to_owned();
                frac.truncate(6);
                while frac.len() < 6 {
                    frac.push('0');
                }
                let ns: u64 = frac.parse().ok()?;
                return Some(ms * 1_000_000 + ns);
            }
        }
    }
    stat_cpu_ns(dir)
}

/// utime + stime of a task or process directory (`/proc/<pid>`: all its threads, the
/// exited ones included), ns.
fn stat_cpu_ns(dir: &Path) -> Option<u64> {
    let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks * 10_000_000)
}

fn own_cpu_ns() -> u64 {
    task_cpu_ns(Path::new("/proc/thread-self")).unwrap_or(0)
}

/// CPU ns of every thread of the process, by thread name.
fn thread_cpu() -> HashMap<u32, (String, u64)> {
    let mut threads = HashMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return threads;
    };
    for task in tasks.flatten() {
        let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        let dir = task.path();
        let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if let Some(cpu) = task_cpu_ns(&dir) {
            threads.insert(tid, (name.trim().to_owned(), cpu));
        }
    }
    threads
}

/// CPU ns spent between two snapshots by each thread whose name starts with `prefix`.
fn thread_deltas<'a>(
    before: &'a HashMap<u32, (String, u64)>,
    after: &'a HashMap<u32, (String, u64)>,
    prefix: &'a str,
) -> impl Iterator<Item = u64> + 'a {
    after
        .iter()
        .filter(move |(_, (name, _))| name.starts_with(prefix))
        .map(|(tid, (_, cpu))| cpu.saturating_sub(before.get(tid).map_or(0, |b| b.1)))
}

/// CPU ns spent between two snapshots by threads whose name starts with `prefix`.
fn cpu_delta(
    before: &HashMap<u32, (String, u64)>,
    after: &HashMap<u32, (String, u64)>,
    prefix: &str,
) -> u64 {
    thread_deltas(before, after, prefix).sum()
}

/// Datagrams the kernel dropped (full receive buffer) at the IPv4 UDP sockets bound to
/// `ports`, from the last column of `/proc/net/udp`.
fn socket_drops(ports: &HashSet<u16>) -> u64 {
    let text = std::fs::read_to_string("/proc/net/udp").unwrap_or_default();
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let port = fields.get(1)?.rsplit_once(':')?.1;
            let port = u16::from_str_radix(port, 16).ok()?;
            if !ports.contains(&port) {
                return None;
            }
            fields.last()?.parse::<u64>().ok()
        })
        .sum()
}

/// The kernel's UDP counters (`/proc/net/snmp`), by name.
fn udp_counters() -> HashMap<String, u64> {
    let text = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("Udp:")).collect();
    let mut counters = HashMap::new();
    if let [names, values, ..] = lines[..] {
        for (name, value) in names
            .split_whitespace()
            .zip(values.split_whitespace())
            .skip(1)
        {
            if let Ok(value) = value.parse() {
                counters.insert(name.to_owned(), value);
            }
        }
    }
    counters
}

fn udp_delta(before: &HashMap<String, u64>, after: &HashMap<String, u64>) -> HashMap<String, u64> {
    after
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.saturating_sub(before.get(k).copied().unwrap_or(0)),
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------------
// The report.

struct Report {
    args: Args,
    window: Duration,
    stats: ClientStats,
    floor: Floor,
    floor_latencies: Vec<u32>,
    server_cpu: u64,
    /// CPU ns of the busiest of the server's threads (Huddle's; Janus's are not read
    /// apart).
    busiest_thread: Option<u64>,
    client_cpu: u64,
    /// Huddle's own drop counters (none for Janus).
    sfu_drops: Option<(u64, u64)>,
    udp: HashMap<String, u64>,
    /// Datagrams the kernel dropped at the SFU's socket and at the clients' sockets.
    socket_drops: (u64, u64),
    /// The SRTP profiles negotiated on the publish and the subscribe connections.
    srtp: (String, String),
}

fn percentile(sorted: &[u32], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let at = ((sorted.len() - 1) as f64 * p).round() as usize;
    Some(f64::from(sorted[at]) / 1000.0)
}

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"))
}

/// `values`' median and spread: `median unit (min-max)`.
fn spread(values: impl Iterator<Item = f64>, unit: &str, digits: usize) -> String {
    let mut values: Vec<f64> = values.collect();
    values.sort_by(f64::total_cmp);
    let median = values[values.len() / 2];
    let (min, max) = (values[0], values[values.len() - 1]);
    format!("{median:.digits$}{unit} ({min:.digits$}-{max:.digits$})")
}

/// A round's headline figures, for the summary over rounds.
#[derive(Debug, Clone, Copy)]
struct Figures {
    server_us: f64,
    floor_us: f64,
    batched_floor_us: f64,
    rooms_per_core: f64,
    /// Rooms at which the busiest SFU thread would be saturated, all threads alike
    /// loaded as now: what this many threads carry on a machine with the cores.
    rooms_per_machine: Option<f64>,
    server_cores: f64,
    lost_percent: f64,
    p50_ms: f64,
    p99_ms: f64,
}

impl Figures {
    /// Median and spread (min–max) of each of `server`'s figures over its rounds;
    /// ratios are taken per round.
    fn summary<'a>(server: &str, rounds: impl Iterator<Item = &'a Figures>) -> String {
        let rounds: Vec<&Figures> = rounds.collect();
        let mut out = format!(
            "\n== {server}: {} rounds at commit {}, median (min-max)\n",
            rounds.len(),
            commit()
        );
        let mut row = |label: &str, unit: &str, digits: usize, value: &dyn Fn(&Figures) -> f64| {
            let _ = writeln!(
                out,
                "  {label:<48} {}",
                spread(rounds.iter().map(|f| value(f)), unit, digits)
            );
        };
        row("server CPU per forwarded packet", " us", 2, &|f| {
            f.server_us
        });
        row("floor per forwarded packet (send_to)", " us", 2, &|f| {
            f.floor_us
        });
        row("ratio server / floor", " x", 2, &|f| {
            f.server_us / f.floor_us
        });
        row("batched floor (sendmmsg)", " us", 2, &|f| {
            f.batched_floor_us
        });
        row("ratio server / batched floor", " x", 2, &|f| {
            f.server_us / f.batched_floor_us
        });
        row("rooms per core implied", "", 1, &|f| f.rooms_per_core);
        if rounds.iter().all(|f| f.rooms_per_machine.is_some()) {
            row(
                "rooms per machine implied (busiest SFU thread)",
                "",
                1,
                &|f| f.rooms_per_machine.unwrap_or(f64::NAN),
            );
        }
        row("server CPU", " cores", 3, &|f| f.server_cores);
        row("lost", " %", 3, &|f| f.lost_percent);
        row("latency through the SFU p50", " ms", 2, &|f| f.p50_ms);
        row("latency through the SFU p99", " ms", 2, &|f| f.p99_ms);
        out
    }
}

impl Report {
    /// Packets forwarded in the window: sent × 7.
    fn forwarded(&self) -> u64 {
        (self.stats.sent_video + self.stats.sent_audio) * FANOUT as u64
    }

    /// Server CPU per forwarded packet, µs.
    fn server_us(&self) -> f64 {
        self.server_cpu as f64 / 1000.0 / self.forwarded().max(1) as f64
    }

    /// The floor per forwarded packet for the window's mix of video and audio, µs;
    /// with the send in `sendmmsg` batches when `batched`.
    fn floor_us(&self, batched: bool) -> f64 {
        let sent = self.stats.sent_video + self.stats.sent_audio;
        let video_share = if sent == 0 {
            VIDEO_PPS / (VIDEO_PPS + AUDIO_PPS)
        } else {
            self.stats.sent_video as f64 / sent as f64
        };
        self.floor.per_forward(video_share, batched) / 1000.0
    }

    /// The headline figures; sorts the latencies.
    fn figures(&mut self) -> Figures {
        let seconds = self.window.as_secs_f64();
        let forwarded = self.forwarded();
        let server_us = self.server_us();
        let forwarded_per_room = forwarded as f64 / seconds / self.args.rooms as f64;
        self.stats.latencies_us.sort_unstable();
        let latency = |p| percentile(&self.stats.latencies_us, p).unwrap_or(f64::NAN);
        Figures {
            server_us,
            floor_us: self.floor_us(false),
            batched_floor_us: self.floor_us(true),
            rooms_per_core: 1e6 / (server_us * forwarded_per_room),
            rooms_per_machine: self
                .busiest_thread
                .map(|ns| self.args.rooms as f64 * seconds * 1e9 / ns.max(1) as f64),
            server_cores: self.server_cpu as f64 / 1e9 / seconds,
            lost_percent: 100.0 * (forwarded as f64 - self.stats.received as f64)
                / forwarded.max(1) as f64,
            p50_ms: latency(0.50),
            p99_ms: latency(0.99),
        }
    }

    /// The report; sorts the latencies.
    fn render(&mut self) -> String {
        let Figures {
            server_us,
            floor_us,
            batched_floor_us,
            rooms_per_core,
            rooms_per_machine,
            ..
        } = self.figures();
        let seconds = self.window.as_secs_f64();
        let sent = self.stats.sent_video + self.stats.sent_audio;
        let expected = self.forwarded();
        let received = self.stats.received;
        let lost = expected as i64 - received as i64;
        let forwarded = expected;
        let forwarded_per_room = forwarded as f64 / seconds / self.args.rooms as f64;
        let ratio = server_us / floor_us;

        self.floor_latencies.sort_unstable();
        let p50 = percentile(&self.stats.latencies_us, 0.50);
        let p99 = percentile(&self.stats.latencies_us, 0.99);
        let f50 = percentile(&self.floor_latencies, 0.50);
        let f99 = percentile(&self.floor_latencies, 0.99);
        let added = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => Some(a - b),
            (a, _) => a,
        };

        let (v, a) = (&self.floor.video, &self.floor.audio);
        let udp = |k: &str| self.udp.get(k).copied().unwrap_or(0);
        let mut out = String::from("\n");
        let mut row = |label: &str, value: String| {
            let _ = writeln!(out, "  {label:<48} {value}");
        };
        row(
            "rooms x participants",
            format!(
                "{} x {PARTICIPANTS} = {}",
                self.args.rooms,
                self.args.rooms * PARTICIPANTS
            ),
        );
        row("measured window", format!("{seconds:.2} s"));
        row(
            "packets/s in (to the SFU)",
            format!(
                "{:.0}  (video {:.0}, audio {:.0})",
                sent as f64 / seconds,
                self.stats.sent_video as f64 / seconds,
                self.stats.sent_audio as f64 / seconds
            ),
        );
        row(
            "packets/s out (forwarded, sent x 7)",
            format!("{:.0}", forwarded as f64 / seconds),
        );
        row(
            "server CPU",
            format!(
                "{:.3} cores ({:.3} s in {seconds:.2} s)",
                self.server_cpu as f64 / 1e9 / seconds,
                self.server_cpu as f64 / 1e9
            ),
        );
        row(
            "server CPU per forwarded packet",
            format!(
                "{server_us:.2} us   (target <= 1.5 x the floor, {:.2} us: {})",
                1.5 * floor_us,
                if server_us <= 1.5 * floor_us {
                    "MET"
                } else {
                    "NOT MET"
                }
            ),
        );
        row(
            "rooms per core implied",
            format!(
                "{rooms_per_core:.1}   (1e6 / ({server_us:.2} us x {forwarded_per_room:.0} fwd/s per room))"
            ),
        );
        if let (Some(rooms), Some(busiest)) = (rooms_per_machine, self.busiest_thread) {
            row(
                "rooms per machine implied (busiest SFU thread)",
                format!(
                    "{rooms:.1}   ({} threads; the busiest used {:.3} cores: saturated at {rooms:.1} rooms)",
                    self.args.server_threads,
                    busiest as f64 / 1e9 / seconds
                ),
            );
        }
        row(
            "packets expected / received / lost",
            format!(
                "{expected} / {received} / {lost} ({:.3} %)",
                100.0 * lost as f64 / expected.max(1) as f64
            ),
        );
        row(
            "SFU port drops (unroutable / queue full)",
            self.sfu_drops
                .map_or_else(|| "-".to_owned(), |(a, b)| format!("{a} / {b}")),
        );
        row(
            "kernel drops at SFU socket / client sockets",
            format!("{} / {}", self.socket_drops.0, self.socket_drops.1),
        );
        row(
            "kernel UDP drops (rcvbuf / sndbuf, system)",
            format!("{} / {}", udp("RcvbufErrors"), udp("SndbufErrors")),
        );
        row(
            "latency through the SFU p50 / p99",
            format!(
                "{} / {} ms  (one way, loopback, client stack included)",
                ms(p50),
                ms(p99)
            ),
        );
        let dist: Vec<String> = [0.10, 0.50, 0.90, 0.99, 0.999, 1.0]
            .iter()
            .map(|p| ms(percentile(&self.stats.latencies_us, *p)))
            .collect();
        row(
            "  p10 / p50 / p90 / p99 / p99.9 / max",
            format!("{} ms", dist.join(" / ")),
        );
        row(
            "floor path latency p50 / p99",
            format!(
                "{} / {} ms  (bare SRTP relay beside the load, {} samples)",
                ms(f50),
                ms(f99),
                self.floor_latencies.len()
            ),
        );
        row(
            "added latency p50 / p99",
            format!("{} / {} ms", ms(added(p50, f50)), ms(added(p99, f99))),
        );
        row(
            "floor: UDP send_to + recv_from",
            format!(
                "{:.2} us ({} B)   {:.2} us ({} B)",
                v.udp / 1000.0,
                v.datagram,
                a.udp / 1000.0,
                a.datagram
            ),
        );
        row(
            "  of which send_to (with loopback delivery)",
            format!(
                "{:.2} us            {:.2} us",
                v.send() / 1000.0,
                a.send() / 1000.0
            ),
        );
        row(
            "  a send in sendmmsg batches of 32",
            format!(
                "{:.2} us            {:.2} us",
                v.batched_send / 1000.0,
                a.batched_send / 1000.0
            ),
        );
        row(
            "floor: SRTP protect",
            format!(
                "{:.2} us ({} B)   {:.2} us ({} B)",
                v.protect / 1000.0,
                v.datagram,
                a.protect / 1000.0,
                a.datagram
            ),
        );
        row(
            "floor: SRTP unprotect",
            format!(
                "{:.2} us ({} B)   {:.2} us ({} B)",
                v.unprotect / 1000.0,
                v.datagram,
                a.unprotect / 1000.0,
                a.datagram
            ),
        );
        row(
            "floor per forwarded packet",
            format!(
                "{floor_us:.2} us   (video {:.2}, audio {:.2}; (recv + unprotect)/7 + protect + send)",
                v.per_forward(false) / 1000.0,
                a.per_forward(false) / 1000.0
            ),
        );
        row("ratio server / floor", format!("{ratio:.2} x"));
        row(
            "batched floor per forwarded packet",
            format!("{batched_floor_us:.2} us   (the send in sendmmsg batches)"),
        );
        row(
            "ratio server / batched floor",
            format!("{:.2} x", server_us / batched_floor_us),
        );
        row(
            "load generator CPU",
            format!(
                "{:.3} cores ({:.2} us per received packet)",
                self.client_cpu as f64 / 1e9 / seconds,
                self.client_cpu as f64 / 1000.0 / received.max(1) as f64
            ),
        );
        row(
            "client send / read errors, foreign RTP",
            format!(
                "{} / {} / {}",
                self.stats.send_errors, self.stats.read_errors, self.stats.foreign
            ),
        );
        row(
            "sends skipped (client thread stalled > 200 ms)",
            self.stats.skipped.to_string(),
        );
        let d = self.stats.datagrams.map(|n| n as f64 / seconds);
        row(
            "client datagrams/s: publish out / in",
            format!("{:.0} / {:.0}", d[PUBLISH_OUT], d[PUBLISH_IN]),
        );
        row(
            "client datagrams/s: subscribe in / out",
            format!("{:.0} / {:.0}", d[SUBSCRIBE_IN], d[SUBSCRIBE_OUT]),
        );
        let busiest = self.client_cpu as f64 / 1e9 / seconds / self.args.client_threads as f64;
        if self.stats.skipped > 0 || busiest > 0.85 || self.socket_drops.1 > 0 {
            let _ = writeln!(
                out,
                "\n  WARNING: the load generator did not keep up ({:.0} % of each client thread busy, \
                 {} sends skipped, {} datagrams dropped at client sockets): the figures above \
                 describe an overloaded run. Use fewer --rooms or more --client-threads.",
                100.0 * busiest,
                self.stats.skipped,
                self.socket_drops.1
            );
        }
        out
    }
}
