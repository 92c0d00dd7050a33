//! `--janus`: the bench's participants against Janus (Debian's `janus` package, its
//! VideoRoom plugin) on the same load, driven through Janus's HTTP API.
//!
//! Janus runs as a child process with a copy of `/etc/janus/*.jcfg` in a temporary
//! directory: its own RTP port range, no mDNS, only the `videoroom` plugin and the
//! `http` transport (on 127.0.0.1, a free port), string ids. Janus gathers no candidates
//! on a loopback interface (and pairs none of its own with a loopback one), so its ICE
//! runs on the host's own IPv4 address (`interface`, `ice_enforce_list`), where the
//! participants bind for this load: the kernel delivers those datagrams over `lo` as
//! well. The participants' signaling requests become VideoRoom requests on one Janus
//! session:
//! - `Publish`: a publisher handle, `join` (ptype publisher), then `publish` with the
//!   participant's offer (full SDP, `trickle: false`); Janus's answer (its candidates in
//!   it) comes in the `configured` event;
//! - once all 8 publishers of a room have their PeerConnection up (`webrtcup`), one
//!   subscriber handle per participant, `join` (ptype subscriber) with the 7 others'
//!   feeds (a multistream subscription); Janus's offer, in the `attached` event, goes to
//!   the participant through its offer route;
//! - `Answer`: `start` with the participant's answer on its subscriber handle.
//!
//! Events come from long-polling the session (`GET /janus/<session>?maxev=100`), which
//! also keeps it alive. Janus's CPU is the process's utime + stime (all its threads,
//! `/proc/<pid>/stat`).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc as std_mpsc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rooms::{PeerId, RoomId};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::{
    Figures, OfferRoutes, PARTICIPANTS, Report, Request, Res, SETUP_TIMEOUT, Shared, err, ms,
    percentile, spread, stat_cpu_ns,
};

const JANUS: &str = "/usr/bin/janus";
const CONFIGS: &str = "/etc/janus";
/// Janus's RTP ports: this many, from a base that depends on the bench's pid.
const PORTS: u16 = 200;
/// A long poll returns after at most 30 s when nothing happens.
const LONG_POLL: Duration = Duration::from_secs(45);

/// A running Janus, stopped (SIGTERM, then SIGKILL) and its directory removed on drop.
pub(super) struct Janus {
    child: Child,
    dir: PathBuf,
    ports: (u16, u16),
    api: Arc<Api>,
    events: Option<JoinHandle<()>>,
}

impl Janus {
    /// Starts Janus, creates `rooms` VideoRoom rooms (`room-0`, ...) and serves the
    /// participants' `requests`, sending Janus's subscribe offers along `offers`.
    pub(super) fn start(
        rooms: usize,
        offers: OfferRoutes,
        requests: mpsc::UnboundedReceiver<Request>,
        shared: Arc<Shared>,
    ) -> Res<Janus> {
        if !Path::new(JANUS).exists() {
            return Err(format!(
                "--janus needs Janus from Debian's package, and {JANUS} is missing: \
                 apt-get install -y janus"
            ));
        }
        let dir = std::env::temp_dir().join(format!("huddle-bench-janus-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(err)?;
        let http_port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .map_err(err)?
            .port();
        let base = 20_000 + (std::process::id() % 60) as u16 * PORTS;
        let ports = (base, base + PORTS - 1);
        let log = dir.join("janus.out");
        let child = configure(&dir, http_port, ports, shared.host)
            .and_then(|()| std::fs::File::create(&log).map_err(err))
            .and_then(|out| {
                Command::new(JANUS)
                    .arg("-C")
                    .arg(dir.join("janus.jcfg"))
                    .arg("-F")
                    .arg(&dir)
                    .args(["-o", "-N", "-L"])
                    .arg(dir.join("janus.log"))
                    .stdin(Stdio::null())
                    .stdout(out.try_clone().map_err(err)?)
                    .stderr(out)
                    .spawn()
                    .map_err(|e| format!("{JANUS}: {e}"))
            });
        let child = match child {
            Ok(child) => child,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        let mut janus = Janus {
            child,
            dir,
            ports,
            api: Arc::new(Api {
                addr: SocketAddr::from((Ipv4Addr::LOCALHOST, http_port)),
                session: AtomicU64::new(0),
                transaction: AtomicU64::new(0),
                waiters: Mutex::new(HashMap::new()),
                subscribers: Mutex::new(HashMap::new()),
                up: Mutex::new(HashMap::new()),
                stopping: AtomicBool::new(false),
                shared,
                offers,
            }),
            events: None,
        };
        // From here on, dropping `janus` stops it.
        let info = janus.wait_ready()?;
        println!(
            "Janus {} (pid {}, config and logs in {}), HTTP API on {}, RTP ports {}-{}",
            info["version_string"].as_str().unwrap_or("?"),
            janus.child.id(),
            janus.dir.display(),
            janus.api.addr,
            ports.0,
            ports.1
        );
        let api = janus.api.clone();
        let session = api.request("/janus", json!({"janus": "create"}))?;
        let session = session["data"]["id"]
            .as_u64()
            .ok_or("Janus created a session without an id")?;
        api.session.store(session, Ordering::Relaxed);
        let events = api.clone();
        janus.events = Some(
            thread::Builder::new()
                .name("janus-events".into())
                .spawn(move || events.poll_events())
                .map_err(err)?,
        );
        let control = api.attach()?;
        for n in 0..rooms {
            api.message(
                control,
                json!({
                    "request": "create",
                    "room": format!("room-{n}"),
                    "publishers": PARTICIPANTS,
                    "audiocodec": "opus",
                    "videocodec": "vp8",
                }),
                None,
            )?;
        }
        thread::Builder::new()
            .name("janus-api".into())
            .spawn(move || serve(api, requests))
            .map_err(err)?;
        Ok(janus)
    }

    /// Waits for the HTTP API to answer, and checks that VideoRoom is loaded.
    fn wait_ready(&mut self) -> Res<Value> {
        let began = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "Janus exited at start ({status}); the end of its log:\n{}",
                    self.log_tail()
                ));
            }
            if let Ok(info) = http(self.api.addr, "GET", "/janus/info", None) {
                if info["plugins"].get("janus.plugin.videoroom").is_none() {
                    return Err("Janus started without its VideoRoom plugin".into());
                }
                return Ok(info);
            }
            if began.elapsed() > Duration::from_secs(15) {
                return Err(format!(
                    "Janus's HTTP API did not answer within 15 s; the end of its log:\n{}",
                    self.log_tail()
                ));
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("janus.log"))
            .or_else(|_| std::fs::read_to_string(self.dir.join("janus.out")))
            .unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// CPU ns of the Janus process so far, all its threads.
    pub(super) fn cpu_ns(&self) -> u64 {
        stat_cpu_ns(Path::new(&format!("/proc/{}", self.child.id()))).unwrap_or(0)
    }

    /// The UDP ports Janus's PeerConnections may use.
    pub(super) fn ports(&self) -> std::collections::HashSet<u16> {
        (self.ports.0..=self.ports.1).collect()
    }
}

impl Drop for Janus {
    fn drop(&mut self) {
        self.api.stopping.store(true, Ordering::Relaxed);
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let began = Instant::now();
        while matches!(self.child.try_wait(), Ok(None)) && began.elapsed() < Duration::from_secs(10)
        {
            thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(events) = self.events.take() {
            let _ = events.join();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The host's first global IPv4 address (`ip -4 -o addr show scope global`): Janus
/// gathers candidates on no loopback interface, and does not pair its candidates with
/// loopback ones, so its participants use this address (the kernel still delivers
/// their datagrams over `lo`).
pub(super) fn host_address() -> Res<IpAddr> {
    let out = Command::new("ip")
        .args(["-4", "-o", "addr", "show", "scope", "global"])
        .output()
        .map_err(|e| format!("ip addr: {e}"))?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .skip_while(|word| *word != "inet")
        .nth(1)
        .and_then(|cidr| cidr.split('/').next()?.parse().ok())
        .ok_or_else(|| {
            "Janus needs a non-loopback IPv4 address on this host, and it has none".into()
        })
}

/// Copies Janus's configuration into `dir` and sets what this bench needs.
fn configure(dir: &Path, http_port: u16, ports: (u16, u16), host: IpAddr) -> Res<()> {
    for entry in std::fs::read_dir(CONFIGS).map_err(|e| format!("{CONFIGS}: {e}"))? {
        let path = entry.map_err(err)?.path();
        if path.extension().is_some_and(|e| e == "jcfg") {
            let name = path.file_name().ok_or("a nameless file")?;
            std::fs::copy(&path, dir.join(name)).map_err(err)?;
        }
    }
    let edit = |file: &str, settings: &[(&str, &str, String)]| -> Res<()> {
        let path = dir.join(file);
        let mut text = std::fs::read_to_string(&path).map_err(|e| format!("{file}: {e}"))?;
        for (section, key, value) in settings {
            text = set(&text, section, key, value).map_err(|e| format!("{file}: {e}"))?;
        }
        std::fs::write(&path, text).map_err(err)
    };
    let main = std::fs::read_to_string(dir.join("janus.jcfg")).map_err(err)?;
    // Every plugin but VideoRoom, every transport but HTTP.
    let others = |folder: &str, keep: &str| -> Res<String> {
        let folder = setting(&main, folder).ok_or_else(|| format!("janus.jcfg has no {folder}"))?;
        let mut names: Vec<String> = std::fs::read_dir(&folder)
            .map_err(|e| format!("{folder}: {e}"))?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|name| name.ends_with(".so") && name != keep)
            .collect();
        names.sort();
        Ok(format!("\"{}\"", names.join(",")))
    };
    let quoted = |s: &str| format!("\"{s}\"");
    edit(
        "janus.jcfg",
        &[
            (
                "general",
                "configs_folder",
                quoted(&dir.display().to_string()),
            ),
            ("general", "interface", quoted(&host.to_string())),
            (
                "media",
                "rtp_port_range",
                format!("\"{}-{}\"", ports.0, ports.1),
            ),
            ("nat", "ice_enforce_list", quoted(&host.to_string())),
            ("nat", "ignore_mdns", "true".into()),
            (
                "plugins",
                "disable",
                others("plugins_folder", "libjanus_videoroom.so")?,
            ),
            (
                "transports",
                "disable",
                others("transports_folder", "libjanus_http.so")?,
            ),
        ],
    )?;
    edit(
        "janus.transport.http.jcfg",
        &[
            ("general", "port", http_port.to_string()),
            ("general", "ip", quoted("127.0.0.1")),
            ("general", "json", quoted("compact")),
            ("admin", "admin_http", "false".into()),
        ],
    )?;
    edit(
        "janus.plugin.videoroom.jcfg",
        &[("general", "string_ids", "true".into())],
    )
}

/// `text` (a `.jcfg` file) with `key = value` as the first setting of the top-level
/// `section`, and any earlier `key` of that section removed.
fn set(text: &str, section: &str, key: &str, value: &str) -> Res<String> {
    let header = format!("{section}: {{");
    let mut out = String::with_capacity(text.len() + 64);
    let (mut inside, mut found) = (false, false);
    for line in text.lines() {
        if inside && line.starts_with('}') {
            inside = false;
        }
        if inside
            && line
                .trim_start()
                .strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        {
            continue;
        }
        out.push_str(line);
        out.push('\n');
        if line.trim_end() == header {
            inside = true;
            found = true;
            let _ = writeln!(out, "\t{key} = {value}");
        }
    }
    if found {
        Ok(out)
    } else {
        Err(format!("no {section} section"))
    }
}

/// The quoted value of an uncommented `key = "value"` line.
fn setting(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let rest = line.trim_start().strip_prefix(key)?.trim_start();
        let value = rest.strip_prefix('=')?.trim_start().strip_prefix('"')?;
        Some(value.split('"').next()?.to_owned())
    })
}

/// One HTTP/1.1 request to Janus (a connection each), its JSON answer.
fn http(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> Res<Value> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(err)?;
    stream.set_read_timeout(Some(LONG_POLL)).map_err(err)?;
    let body = body.map(Value::to_string).unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .map_err(err)?;
    let mut response = String::new();
    stream.read_to_string(&mut response).map_err(err)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{method} {path}: a malformed HTTP response"))?;
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(format!("{method} {path}: {status}"));
    }
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_owned()
    };
    serde_json::from_str(&body).map_err(|e| format!("{method} {path}: {e}"))
}

/// A chunked HTTP body's content (Janus's HTTP transport answers in chunks).
fn dechunk(mut body: &str) -> Res<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").ok_or("a malformed chunk")?;
        let size = size.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size, 16).map_err(err)?;
        if size == 0 {
            return Ok(out);
        }
        out.push_str(rest.get(..size).ok_or("a short chunk")?);
        body = rest
            .get(size..)
            .and_then(|r| r.strip_prefix("\r\n"))
            .ok_or("a malformed chunk")?;
    }
}

/// Janus's API on one session, shared by the threads that drive it.
struct Api {
    addr: SocketAddr,
    session: AtomicU64,
    transaction: AtomicU64,
    /// Who waits for which event: by transaction, or by `<event>:<handle>`.
    waiters: Mutex<HashMap<String, std_mpsc::Sender<Value>>>,
    /// Participants' subscriber handles.
    subscribers: Mutex<HashMap<(RoomId, PeerId), u64>>,
    /// Publishers whose PeerConnection is up, by room.
    up: Mutex<HashMap<RoomId, Vec<PeerId>>>,
    stopping: AtomicBool,
    shared: Arc<Shared>,
    offers: OfferRoutes,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Api {
    fn session_path(&self) -> String {
        format!("/janus/{}", self.session.load(Ordering::Relaxed))
    }

    fn next_transaction(&self) -> String {
        format!("t{}", self.transaction.fetch_add(1, Ordering::Relaxed))
    }

    /// A request answered at once: `success`, or the error.
    fn request(&self, path: &str, mut body: Value) -> Res<Value> {
        body["transaction"] = self.next_transaction().into();
        let answer = http(self.addr, "POST", path, Some(&body))?;
        match answer["janus"].as_str() {
            Some("success") => Ok(answer),
            _ => Err(format!("Janus refused {body}: {answer}")),
        }
    }

    fn attach(&self) -> Res<u64> {
        let answer = self.request(
            &self.session_path(),
            json!({"janus": "attach", "plugin": "janus.plugin.videoroom"}),
        )?;
        answer["data"]["id"]
            .as_u64()
            .ok_or_else(|| "Janus attached a handle without an id".into())
    }

    /// Receives the next event `key` (`<event>:<handle>`) names.
    fn expect(&self, key: String) -> std_mpsc::Receiver<Value> {
        let (tx, rx) = std_mpsc::channel();
        lock(&self.waiters).insert(key, tx);
        rx
    }

    /// A VideoRoom message on `handle`: the plugin's answer (synchronous requests) or
    /// its event (asynchronous ones), an error if the plugin reports one.
    fn message(&self, handle: u64, body: Value, jsep: Option<Value>) -> Res<Value> {
        let transaction = self.next_transaction();
        let event = self.expect(transaction.clone());
        let mut message =
            json!({"janus": "message", "transaction": transaction, "body": body.clone()});
        if let Some(jsep) = jsep {
            message["jsep"] = jsep;
        }
        let path = format!("{}/{handle}", self.session_path());
        let answer = http(self.addr, "POST", &path, Some(&message));
        let kind = answer
            .as_ref()
            .ok()
            .and_then(|a| a["janus"].as_str())
            .map(str::to_owned);
        let answer = match kind.as_deref() {
            Some("ack") => event
                .recv_timeout(SETUP_TIMEOUT)
                .map_err(|_| format!("no answer from Janus to {body} within 20 s")),
            Some("success") => answer,
            _ => Err(format!("Janus refused {body}: {answer:?}")),
        };
        lock(&self.waiters).remove(&transaction);
        let answer = answer?;
        let data = &answer["plugindata"]["data"];
        if let Some(error) = data.get("error") {
            return Err(format!("VideoRoom refused {body}: {error}"));
        }
        Ok(answer)
    }

    /// Long-polls the session's events and hands them to who waits for them.
    fn poll_events(&self) {
        let path = format!("{}?maxev=100", self.session_path());
        while !self.stopping.load(Ordering::Relaxed) {
            match http(self.addr, "GET", &path, None) {
                Ok(Value::Array(events)) => events.into_iter().for_each(|e| self.dispatch(e)),
                Ok(event) => self.dispatch(event),
                Err(e) => {
                    if !self.stopping.load(Ordering::Relaxed) {
                        self.shared.fail(format!("Janus's event poll: {e}"));
                    }
                    return;
                }
            }
        }
    }

    fn dispatch(&self, event: Value) {
        let kind = event["janus"].as_str().unwrap_or_default().to_owned();
        let mut waiters = lock(&self.waiters);
        let waiter = event["transaction"]
            .as_str()
            .and_then(|t| waiters.remove(t))
            .or_else(|| waiters.remove(&format!("{kind}:{}", event["sender"])));
        drop(waiters);
        match waiter {
            Some(waiter) => {
                let _ = waiter.send(event);
            }
            None if matches!(kind.as_str(), "hangup" | "detached")
                && !self.stopping.load(Ordering::Relaxed) =>
            {
                self.shared.fail(format!("Janus: {event}"));
            }
            None => {}
        }
    }

    /// A participant's publisher handle: Janus's answer to `offer`, and where its
    /// `webrtcup` will come.
    fn publish(
        &self,
        room: &RoomId,
        peer: &PeerId,
        offer: String,
    ) -> Res<(String, std_mpsc::Receiver<Value>)> {
        let handle = self.attach()?;
        let up = self.expect(format!("webrtcup:{handle}"));
        self.message(
            handle,
            json!({"request": "join", "ptype": "publisher", "room": room.0,
                   "id": feed(room, peer), "display": peer.0}),
            None,
        )?;
        let configured = self.message(
            handle,
            json!({"request": "publish"}),
            Some(json!({"type": "offer", "sdp": offer, "trickle": false})),
        )?;
        let answer = configured["jsep"]["sdp"]
            .as_str()
            .ok_or("Janus answered the publish without SDP")?;
        Ok((answer.to_owned(), up))
    }

    /// Once a room's publishers are all up: every participant's subscriber handle, on
    /// the 7 others' feeds; Janus's offers go to the participants.
    fn publisher_up(&self, room: &RoomId, peer: &PeerId) -> Res<()> {
        let peers = {
            let mut up = lock(&self.up);
            let peers = up.entry(room.clone()).or_default();
            peers.push(peer.clone());
            if peers.len() < PARTICIPANTS {
                return Ok(());
            }
            peers.clone()
        };
        for peer in &peers {
            let handle = self.attach()?;
            let streams: Vec<Value> = peers
                .iter()
                .filter(|other| *other != peer)
                .map(|other| json!({"feed": feed(room, other)}))
                .collect();
            let attached = self.message(
                handle,
                json!({"request": "join", "ptype": "subscriber", "room": room.0,
                       "streams": streams}),
                None,
            )?;
            let offer = attached["jsep"]["sdp"]
                .as_str()
                .ok_or("Janus's subscription came without an offer")?;
            lock(&self.subscribers).insert((room.clone(), peer.clone()), handle);
            let route = self
                .offers
                .get(&(room.clone(), peer.clone()))
                .ok_or("a participant without an offer route")?;
            route
                .send(offer.to_owned())
                .map_err(|_| format!("{}/{} is gone", room, peer))?;
        }
        Ok(())
    }

    /// A participant's answer to Janus's subscribe offer.
    fn start(&self, room: &RoomId, peer: &PeerId, answer: String) -> Res<()> {
        let handle = *lock(&self.subscribers)
            .get(&(room.clone(), peer.clone()))
            .ok_or("an answer without a subscription")?;
        self.message(
            handle,
            json!({"request": "start"}),
            Some(json!({"type": "answer", "sdp": answer, "trickle": false})),
        )
        .map(drop)
    }
}

/// A participant's VideoRoom feed id.
fn feed(room: &RoomId, peer: &PeerId) -> String {
    format!("{}-{}", room.0, peer.0)
}

/// The participants' signaling, each request in a thread of its own.
fn serve(api: Arc<Api>, mut requests: mpsc::UnboundedReceiver<Request>) {
    while let Some(request) = requests.blocking_recv() {
        let worker = api.clone();
        let spawned =
            thread::Builder::new()
                .name("janus-api".into())
                .spawn(move || match request {
                    Request::Publish {
                        room,
                        peer,
                        offer,
                        reply,
                    } => {
                        let up = match worker.publish(&room, &peer, offer) {
                            Ok((answer, up)) => {
                                let _ = reply.send(Ok(answer));
                                up
                            }
                            Err(e) => {
                                let _ = reply.send(Err(e));
                                return;
                            }
                        };
                        let subscribed = up
                            .recv_timeout(SETUP_TIMEOUT)
                            .map_err(|_| {
                                "Janus's publisher PeerConnection never came up".to_owned()
                            })
                            .and_then(|_| worker.publisher_up(&room, &peer));
                        if let Err(e) = subscribed {
                            worker.shared.fail(format!("{room}/{peer} on Janus: {e}"));
                        }
                    }
                    Request::Answer {
                        room,
                        peer,
                        answer,
                        reply,
                    } => {
                        let _ = reply.send(worker.start(&room, &peer, answer));
                    }
                    Request::Record { reply, .. } => {
                        let _ = reply.send(Err("the Janus run does not record".into()));
                    }
                });
        if let Err(e) = spawned {
            api.shared.fail(format!("janus-api thread: {e}"));
        }
    }
}

/// Huddle and Janus side by side, on the same load.
pub(super) fn compare(huddle: &Report, janus: &Report) -> String {
    let mut out = String::from("\nHuddle against Janus, same participants and load:\n");
    let mut row = |label: &str, h: String, j: String| {
        let _ = writeln!(out, "  {label:<36} {h:>22} {j:>22}");
    };
    row("", "Huddle".into(), "Janus".into());
    row(
        "rooms x participants",
        format!("{} x {PARTICIPANTS}", huddle.args.rooms),
        format!("{} x {PARTICIPANTS}", janus.args.rooms),
    );
    let both = |f: &dyn Fn(&Report) -> String| (f(huddle), f(janus));
    let (h, j) = both(&|r| r.srtp.1.clone());
    row("SRTP profile (subscribe)", h, j);
    let (h, j) = both(&|r| r.srtp.0.clone());
    row("SRTP profile (publish)", h, j);
    let (h, j) = both(&|r| format!("{:.0}", r.forwarded() as f64 / r.window.as_secs_f64()));
    row("packets/s forwarded", h, j);
    let (h, j) = both(&|r| format!("{:.3}", r.server_cpu as f64 / 1e9 / r.window.as_secs_f64()));
    row("server CPU, cores", h, j);
    let (h, j) = both(&|r| format!("{:.2} us", r.server_us()));
    row("server CPU per forwarded packet", h, j);
    let (h, j) = both(&|r| format!("{:.2} us", r.floor_us(false)));
    row("floor per forwarded packet", h, j);
    let (h, j) = both(&|r| format!("{:.1} x", r.server_us() / r.floor_us(false)));
    row("ratio server / floor", h, j);
    let (h, j) = both(&|r| {
        let lost = r.forwarded() as i64 - r.stats.received as i64;
        format!(
            "{lost} ({:.3} %)",
            100.0 * lost as f64 / r.forwarded().max(1) as f64
        )
    });
    row("lost", h, j);
    let (h, j) = both(&|r| {
        format!(
            "{} / {} ms",
            ms(percentile(&r.stats.latencies_us, 0.5)),
            ms(percentile(&r.stats.latencies_us, 0.99))
        )
    });
    row("latency p50 / p99", h, j);
    let ratio = huddle.server_us() / janus.server_us();
    let _ = writeln!(
        out,
        "  Huddle / Janus CPU per forwarded packet: {ratio:.2}   (target <= 0.50: {})",
        if ratio <= 0.5 { "MET" } else { "NOT MET" }
    );
    out
}

/// Huddle's CPU per forwarded packet against Janus's, per round: median and spread.
pub(super) fn summary(rounds: &[(Figures, Figures)]) -> String {
    let ratios = rounds.iter().map(|(h, j)| h.server_us / j.server_us);
    format!(
        "  {:<48} {}   (target <= 0.50)\n",
        "Huddle / Janus CPU per forwarded packet",
        spread(ratios, " x", 2)
    )
}
