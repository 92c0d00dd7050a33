//! The embedded TURN server against coturn's own tools (Debian package `coturn`):
//! `turnutils_uclient` allocates, binds channels and relays data through it over UDP
//! and TCP, `turnutils_peer` echoes on the far side, and coturn's `turnserver`, started
//! from the repository's coturn.conf, accepts the credentials Huddle mints. The
//! [`bad_input`] module drives the embedded server by hand with the `stun` crate:
//! garbage, stale and forged nonces, refused credentials, quotas, and TCP connections
//! that idle, stall inside a message or come too many from one address.
//!
//! These tests fail, not skip, without coturn's binaries. Each server gets its own relay
//! port range (tests run in parallel): 52000-52899 for embedded servers, 52900-52999 for
//! coturn.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use huddle_turn::{Credentials, PeerPolicy, Quota, Secret, TcpLimits, TurnConfig, TurnServer};
use stun::agent::TransactionId;
use stun::message::{BINDING_REQUEST, BINDING_SUCCESS, Message, Setter};
use tokio::net::UdpSocket;
use tokio::time::timeout;

const SECRET: &str = "embedded-turn-test-secret";
const REALM: &str = "huddle";
const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// Every relay port range of these tests lies here; helper processes stay out of it.
const RELAY_PORTS: RangeInclusive<u16> = 52000..=52999;
/// How long one turnutils_uclient run may take (a good one takes about five seconds).
const UCLIENT_TIMEOUT: Duration = Duration::from_secs(40);

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Credentials for `user` from the test secret, valid for an hour.
fn minted(user: &str) -> Credentials {
    Secret::new(SECRET).mint(user, now() + 3600)
}

async fn server(quota: Quota, policy: PeerPolicy, ports: (u16, u16)) -> TurnServer {
    server_with_tcp(quota, policy, ports, TcpLimits::default()).await
}

async fn server_with_tcp(
    quota: Quota,
    policy: PeerPolicy,
    ports: (u16, u16),
    tcp: TcpLimits,
) -> TurnServer {
    assert!(RELAY_PORTS.contains(&ports.0) && RELAY_PORTS.contains(&ports.1));
    TurnServer::start(TurnConfig {
        listen: SocketAddr::new(LOCALHOST, 0),
        relay_bind: LOCALHOST,
        relay_public: LOCALHOST,
        relay_ports: ports.0..=ports.1,
        realm: REALM.into(),
        secret: Secret::new(SECRET),
        quota,
        policy,
        tcp,
        tls: None,
    })
    .await
    .expect("the embedded TURN server starts")
}

fn loopback_open() -> PeerPolicy {
    PeerPolicy {
        allowed: vec!["127.0.0.0/8".parse().unwrap()],
        ..PeerPolicy::default()
    }
}

const QUOTA: Quota = Quota {
    per_user: 12,
    total: 1200,
};

/// A port free on 127.0.0.1 for UDP and TCP, with the next one free for UDP as well
/// (turnutils_peer takes both), outside the relay port ranges and away from the ports
/// handed to other tests of this process.
fn free_port() -> u16 {
    static HANDED_OUT: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(PoisonError::into_inner);
    for _ in 0..100 {
        let udp = std::net::UdpSocket::bind((LOCALHOST, 0)).unwrap();
        let port = udp.local_addr().unwrap().port();
        if RELAY_PORTS.contains(&port)
            || port == u16::MAX
            || handed_out.iter().any(|p| p.abs_diff(port) < 2)
        {
            continue;
        }
        if std::net::UdpSocket::bind((LOCALHOST, port + 1)).is_ok()
            && std::net::TcpListener::bind((LOCALHOST, port)).is_ok()
        {
            handed_out.push(port);
            return port;
        }
    }
    panic!("no free port pair on 127.0.0.1");
}

/// A helper process (turnutils_peer, turnserver) killed when the test ends, panics
/// included, with its scratch folder.
struct Running {
    child: Child,
    dir: Option<PathBuf>,
}

impl Running {
    /// Starts a coturn binary, failing clearly when coturn is not installed.
    fn spawn(command: &mut Command, dir: Option<PathBuf>) -> Running {
        let name = command.get_program().to_string_lossy().into_owned();
        let child = command
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{name} does not run ({e}): apt-get install -y coturn"));
        Running { child, dir }
    }

    /// What the process logged to its scratch folder, for failure messages.
    fn log(&self) -> String {
        let Some(dir) = &self.dir else {
            return String::new();
        };
        std::fs::read_to_string(dir.join("stdout.log")).unwrap_or_default()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Starts a helper listening on a free UDP port (`start` gets the port) and waits until
/// it answers `probe` with a datagram `ready` accepts. Another program may take the port
/// between its choice and the helper's bind (the helper then exits, or lives on
/// without its listener), so a helper silent for five seconds is replaced by one on
/// another port, three times at most.
async fn start_helper(
    what: &str,
    start: impl Fn(u16) -> Running,
    probe: &[u8],
    ready: impl Fn(&[u8]) -> bool,
) -> (Running, u16) {
    let socket = UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
    let mut buf = [0u8; 1500];
    let mut failure = String::new();
    for _ in 0..3 {
        let port = free_port();
        let mut helper = start(port);
        failure = format!("{what} on port {port} never answered");
        for _ in 0..50 {
            if let Ok(Some(status)) = helper.child.try_wait() {
                failure = format!("{what} on port {port} exited ({status})");
                break;
            }
            socket.send_to(probe, (LOCALHOST, port)).await.unwrap();
            let answer = timeout(Duration::from_millis(100), socket.recv_from(&mut buf)).await;
            if matches!(answer, Ok(Ok((n, from))) if from.port() == port && ready(&buf[..n])) {
                return (helper, port);
            }
        }
        failure = format!("{failure}:\n{}", helper.log());
    }
    panic!("{failure}");
}

/// turnutils_peer, a UDP echo, on 127.0.0.1 (it also takes the next port, for RTCP).
async fn echo_peer() -> (Running, SocketAddr) {
    let start = |port: u16| {
        Running::spawn(
            Command::new("turnutils_peer")
                .args(["-L", "127.0.0.1", "-p", &port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
            None,
        )
    };
    let (peer, port) = start_helper("turnutils_peer", start, b"ping", |echo| echo == b"ping").await;
    (peer, SocketAddr::new(LOCALHOST, port))
}

/// A STUN Binding request: any STUN server answers it, authenticated or not.
fn binding_request() -> Message {
    let mut m = Message::new();
    m.build(&[
        Box::new(TransactionId::new()) as Box<dyn Setter>,
        Box::new(BINDING_REQUEST),
    ])
    .unwrap();
    m
}

/// Whether `raw` is the Binding success answering `request`.
fn answers_binding(raw: &[u8], request: &Message) -> bool {
    let mut m = Message::new();
    m.raw = raw.to_vec();
    m.decode().is_ok() && m.typ == BINDING_SUCCESS && m.transaction_id == request.transaction_id
}

/// TCP limits short enough for a test to wait them out.
fn short_tcp_limits() -> TcpLimits {
    TcpLimits {
        idle_timeout: Duration::from_millis(500),
        partial_timeout: Duration::from_millis(500),
        max_per_ip: 32,
    }
}

/// Where uclient's packets go.
#[derive(Debug, Clone, Copy)]
enum Far {
    /// Between its own clients, each through its own allocation (`-y`).
    Clients,
    /// To a UDP echo (turnutils_peer) at this address, through the relay (`-e`, `-r`).
    Peer(SocketAddr),
}

/// Runs turnutils_uclient against the TURN server on 127.0.0.1:`port`: two clients
/// sending 20 messages of 170 bytes each, over UDP unless `extra` has `-t`.
async fn uclient(port: u16, creds: &Credentials, far: Far, extra: &[&str]) -> Output {
    let mut command = tokio::process::Command::new("turnutils_uclient");
    command.args(["-n", "20", "-m", "2", "-l", "170", "-X"]);
    command.args(["-p", &port.to_string()]);
    command.args(["-u", &creds.username, "-w", &creds.password]);
    match far {
        Far::Clients => command.arg("-y"),
        Far::Peer(peer) => {
            command.args(["-e", &peer.ip().to_string(), "-r", &peer.port().to_string()])
        }
    };
    command.args(extra).arg("127.0.0.1");
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| {
            panic!("turnutils_uclient does not run ({e}): apt-get install -y coturn")
        });
    timeout(UCLIENT_TIMEOUT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| {
            panic!("turnutils_uclient {extra:?} still runs after {UCLIENT_TIMEOUT:?}")
        })
        .unwrap()
}

/// uclient's output, for failure messages.
fn transcript(out: &Output) -> String {
    format!(
        "exit {}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn lost_packets(out: &Output) -> Option<u64> {
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.split("Total lost packets").nth(1))
        .and_then(|rest| {
            rest.trim_start_matches([' ', ':', '\t'])
                .split_whitespace()
                .next()
        })
        .and_then(|n| n.trim_end_matches(',').parse().ok())
}

/// uclient relayed everything: it exited 0 and lost no packet.
fn assert_relayed(out: &Output) {
    assert!(out.status.success(), "uclient failed: {}", transcript(out));
    assert_eq!(lost_packets(out), Some(0), "{}", transcript(out));
}

/// uclient gave up because the server refused it (an allocation or a channel binding);
/// 255 is its exit status for that.
fn assert_refused(out: &Output) {
    assert_eq!(
        out.status.code(),
        Some(255),
        "uclient should have been refused: {}",
        transcript(out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uclient_relays_through_the_embedded_server_with_minted_credentials() {
    let server = server(QUOTA, loopback_open(), (52000, 52099)).await;
    let out = uclient(
        server.local_addr().port(),
        &minted("alice"),
        Far::Clients,
        &[],
    )
    .await;
    assert_relayed(&out);
    let stats = server.stats().await;
    assert!(stats.relayed_packets >= 80, "{stats:?}");
    assert!(stats.allocations_created >= 2, "{stats:?}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uclient_relays_over_tcp() {
    let server = server(QUOTA, loopback_open(), (52100, 52149)).await;
    let out = uclient(
        server.local_addr().port(),
        &minted("alice"),
        Far::Clients,
        &["-t"],
    )
    .await;
    assert_relayed(&out);
    let stats = server.stats().await;
    assert!(stats.relayed_packets >= 80, "{stats:?}");
    assert!(stats.allocations_created >= 2, "{stats:?}");
    // uclient exited: its allocations went with its connections (RFC 8656 §5)
    for _ in 0..100 {
        if server.stats().await.allocations == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(server.stats().await.allocations, 0);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uclient_over_tcp_outlives_the_idle_timeout_while_it_holds_allocations() {
    let server = server_with_tcp(QUOTA, loopback_open(), (52460, 52479), short_tcp_limits()).await;
    // three messages each 1.5 s apart: longer than the idle timeout
    let out = uclient(
        server.local_addr().port(),
        &minted("alice"),
        Far::Clients,
        &["-t", "-n", "3", "-z", "1500"],
    )
    .await;
    assert_relayed(&out);
    let stats = server.stats().await;
    assert!(stats.relayed_packets >= 12, "{stats:?}");
    assert_eq!(
        (stats.closed_tcp_idle, stats.closed_tcp_partial),
        (0, 0),
        "{stats:?}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uclient_reaches_an_echo_peer_through_the_relay() {
    let server = server(QUOTA, loopback_open(), (52150, 52199)).await;
    let (_peer, peer_addr) = echo_peer().await;
    let before = server.stats().await;
    let out = uclient(
        server.local_addr().port(),
        &minted("alice"),
        Far::Peer(peer_addr),
        &[],
    )
    .await;
    assert_relayed(&out);
    let stats = server.stats().await;
    // 40 messages out to the peer and 40 echoes back, at least
    assert!(
        stats.relayed_packets >= before.relayed_packets + 80,
        "{stats:?}"
    );
    assert_eq!(stats.refused_peers, 0, "{stats:?}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uclient_is_refused_with_bad_credentials() {
    let server = server(QUOTA, loopback_open(), (52200, 52249)).await;
    let port = server.local_addr().port();
    let expired = Secret::new(SECRET).mint("alice", now() - 60);
    let forged = Secret::new("not-the-server-secret").mint("alice", now() + 3600);
    let swapped = Credentials {
        username: minted("bob").username,
        ..minted("alice")
    };
    let (expired, forged, swapped) = tokio::join!(
        uclient(port, &expired, Far::Clients, &[]),
        uclient(port, &forged, Far::Clients, &[]),
        uclient(port, &swapped, Far::Clients, &[]),
    );
    for out in [&expired, &forged, &swapped] {
        assert_refused(out);
    }
    let stats = server.stats().await;
    assert_eq!(stats.allocations, 0, "{stats:?}");
    assert_eq!(stats.allocations_created, 0, "{stats:?}");
    assert_eq!(stats.relayed_packets, 0, "{stats:?}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_peers_need_the_policy_to_open_them() {
    let (_peer, peer_addr) = echo_peer().await;
    let closed = server(QUOTA, PeerPolicy::default(), (52250, 52299)).await;
    let service = server(
        QUOTA,
        PeerPolicy {
            services: vec![peer_addr],
            ..PeerPolicy::default()
        },
        (52300, 52349),
    )
    .await;
    // -c: no RTCP leg, which would go to the peer's next port (not the service)
    let run = |server: &TurnServer| {
        let port = server.local_addr().port();
        async move { uclient(port, &minted("alice"), Far::Peer(peer_addr), &["-c"]).await }
    };
    let (refused, relayed) = tokio::join!(run(&closed), run(&service));

    assert_refused(&refused);
    let stats = closed.stats().await;
    assert!(stats.refused_peers > 0, "{stats:?}");
    assert_eq!(stats.relayed_packets, 0, "{stats:?}");

    assert_relayed(&relayed);
    let stats = service.stats().await;
    assert_eq!(stats.refused_peers, 0, "{stats:?}");
    assert!(stats.relayed_packets >= 80, "{stats:?}");

    closed.shutdown().await;
    service.shutdown().await;
}

/// coturn's turnserver from the repository's coturn.conf, on 127.0.0.1 with relay
/// ports 52900-52999 and `secret` as the shared secret. Returns once it answers STUN.
async fn coturn_turnserver(secret: &str) -> (Running, u16) {
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/../coturn.conf");
    let start = |port: u16| {
        let dir =
            std::env::temp_dir().join(format!("huddle-turn-coturn-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // coturn.conf logs to stdout (log-file=stdout): keep it in the scratch folder.
        let stdout = File::create(dir.join("stdout.log")).unwrap();
        Running::spawn(
            Command::new("turnserver")
                .arg("-c")
                .arg(config)
                .args([
                    "--listening-ip=127.0.0.1",
                    "--relay-ip=127.0.0.1",
                    "-p",
                    &port.to_string(),
                    // coturn.conf holds no secret: coturn accepts every secret it is
                    // given, so a placeholder in the file would stay valid next to this.
                    &format!("--static-auth-secret={secret}"),
                    "--min-port=52900",
                    "--max-port=52999",
                    // coturn.conf denies 127.0.0.0/8 (denied-peer-ip), and coturn refuses
                    // loopback peers anyway; uclient's clients relay to each other on
                    // 127.0.0.1, so both must open: --allow-loopback-peers lifts the
                    // loopback ban, --allowed-peer-ip exempts 127.0.0.1 from the denied
                    // range. Either alone still gets 403 on ChannelBind.
                    "--allow-loopback-peers",
                    "--allowed-peer-ip=127.0.0.1",
                ])
                // its own pid file and user database, not /var/run and /var/lib/turn
                .arg(format!(
                    "--pidfile={}",
                    dir.join("turnserver.pid").display()
                ))
                .arg(format!("--userdb={}", dir.join("turndb").display()))
                .stdout(stdout)
                .stderr(Stdio::null()),
            Some(dir),
        )
    };
    let probe = binding_request();
    start_helper("turnserver", start, &probe.raw, |answer| {
        answers_binding(answer, &probe)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coturn_from_the_repository_config_accepts_huddle_credentials() {
    const COTURN_SECRET: &str = "coturn-interop-secret";
    let (turnserver, port) = coturn_turnserver(COTURN_SECRET).await;
    let good = Secret::new(COTURN_SECRET).mint("alice", now() + 3600);
    let forged = Secret::new("not-the-coturn-secret").mint("alice", now() + 3600);
    // what coturn.conf once held as a placeholder: it must not open the server
    let placeholder =
        Secret::new("change-me-to-the-same-value-as-TURN_SECRET").mint("alice", now() + 3600);
    let (good, forged, placeholder) = tokio::join!(
        uclient(port, &good, Far::Clients, &[]),
        uclient(port, &forged, Far::Clients, &[]),
        uclient(port, &placeholder, Far::Clients, &[]),
    );
    let log = turnserver.log();
    assert!(
        good.status.success(),
        "{}\nturnserver:\n{log}",
        transcript(&good)
    );
    assert_relayed(&good);
    assert_refused(&forged);
    assert_refused(&placeholder);
}

/// Hand-made STUN and garbage against the embedded server.
mod bad_input {
    use super::*;

    use stun::attributes::{
        ATTR_NONCE, ATTR_REALM, ATTR_USERNAME, ATTR_XOR_RELAYED_ADDRESS, AttrType,
    };
    use stun::error_code::ErrorCodeAttribute;
    use stun::integrity::MessageIntegrity;
    use stun::message::Getter;
    use stun::message::{
        CLASS_ERROR_RESPONSE, CLASS_INDICATION, CLASS_REQUEST, CLASS_SUCCESS_RESPONSE,
        METHOD_ALLOCATE, METHOD_BINDING, METHOD_CONNECT, METHOD_CREATE_PERMISSION, METHOD_DATA,
        METHOD_REFRESH, MessageClass, MessageType,
    };
    use stun::textattrs::TextAttribute;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use webrtc_turn::proto::PROTO_UDP;
    use webrtc_turn::proto::reqtrans::RequestedTransport;

    /// A TURN client driven by hand, over UDP or TCP.
    enum Client {
        Udp(UdpSocket),
        Tcp(TcpStream),
    }

    impl Client {
        async fn udp(server: SocketAddr) -> Client {
            let socket = UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
            socket.connect(server).await.unwrap();
            Client::Udp(socket)
        }

        async fn tcp(server: SocketAddr) -> Client {
            Client::Tcp(TcpStream::connect(server).await.unwrap())
        }

        async fn send(&mut self, bytes: &[u8]) {
            match self {
                Client::Udp(socket) => {
                    socket.send(bytes).await.unwrap();
                }
                Client::Tcp(stream) => stream.write_all(bytes).await.unwrap(),
            }
        }

        /// The next message from the server; `None` if nothing came within `wait` or
        /// the connection closed.
        async fn recv(&mut self, wait: Duration) -> Option<Message> {
            let raw = timeout(wait, async {
                match self {
                    Client::Udp(socket) => {
                        let mut buf = vec![0u8; 1500];
                        let n = socket.recv(&mut buf).await.ok()?;
                        buf.truncate(n);
                        Some(buf)
                    }
                    Client::Tcp(stream) => {
                        let mut buf = vec![0u8; 20];
                        stream.read_exact(&mut buf).await.ok()?;
                        let length = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
                        buf.resize(20 + length, 0);
                        stream.read_exact(&mut buf[20..]).await.ok()?;
                        Some(buf)
                    }
                }
            })
            .await
            .ok()??;
            let mut m = Message::new();
            m.raw = raw;
            m.decode().expect("the server answers in STUN");
            Some(m)
        }

        /// Sends `request` and returns the server's answer.
        async fn call(&mut self, request: &Message) -> Message {
            self.send(&request.raw).await;
            loop {
                let answer = self
                    .recv(Duration::from_secs(2))
                    .await
                    .unwrap_or_else(|| panic!("no answer to {}", request.typ));
                if answer.transaction_id == request.transaction_id {
                    return answer;
                }
            }
        }

        /// Asks for a nonce with an unauthenticated Allocate, checking the 401 it gets.
        async fn challenge(&mut self) -> String {
            let answer = self.call(&allocate(None)).await;
            assert_eq!(
                answer.typ,
                MessageType::new(METHOD_ALLOCATE, CLASS_ERROR_RESPONSE)
            );
            assert_eq!(error_code(&answer), Some(401), "{answer}");
            assert_eq!(text(&answer, ATTR_REALM).as_deref(), Some(REALM));
            text(&answer, ATTR_NONCE).expect("a 401 carries a NONCE")
        }

        /// Allocates as `creds`: a challenge, then the signed request. Returns the
        /// answer to the latter.
        async fn allocate_as(&mut self, creds: &Credentials) -> Message {
            let nonce = self.challenge().await;
            self.call(&allocate(Some(Auth::new(creds, &nonce)))).await
        }
    }

    /// Long-term credentials for a signed request.
    struct Auth<'a> {
        creds: &'a Credentials,
        realm: &'a str,
        nonce: &'a str,
    }

    impl<'a> Auth<'a> {
        fn new(creds: &'a Credentials, nonce: &'a str) -> Self {
            Auth {
                creds,
                realm: REALM,
                nonce,
            }
        }

        /// USERNAME, REALM, NONCE and, last, MESSAGE-INTEGRITY keyed with
        /// MD5(username:realm:password).
        fn setters(&self) -> Vec<Box<dyn Setter>> {
            vec![
                Box::new(TextAttribute::new(
                    ATTR_USERNAME,
                    self.creds.username.clone(),
                )),
                Box::new(TextAttribute::new(ATTR_REALM, self.realm.into())),
                Box::new(TextAttribute::new(ATTR_NONCE, self.nonce.into())),
                Box::new(MessageIntegrity::new_long_term_integrity(
                    self.creds.username.clone(),
                    self.realm.into(),
                    self.creds.password.clone(),
                )),
            ]
        }
    }

    fn message(typ: MessageType, attributes: Vec<Box<dyn Setter>>) -> Message {
        let mut setters: Vec<Box<dyn Setter>> = vec![Box::new(TransactionId::new()), Box::new(typ)];
        setters.extend(attributes);
        let mut m = Message::new();
        m.build(&setters).unwrap();
        m
    }

    /// An Allocate for a UDP relay, signed if `auth` is given.
    fn allocate(auth: Option<Auth>) -> Message {
        let mut attributes: Vec<Box<dyn Setter>> = vec![Box::new(RequestedTransport {
            protocol: PROTO_UDP,
        })];
        attributes.extend(auth.iter().flat_map(Auth::setters));
        message(MessageType::new(METHOD_ALLOCATE, CLASS_REQUEST), attributes)
    }

    fn error_code(m: &Message) -> Option<u16> {
        let mut attribute = ErrorCodeAttribute::default();
        attribute.get_from(m).ok()?;
        Some(attribute.code.0)
    }

    fn text(m: &Message, attribute: AttrType) -> Option<String> {
        TextAttribute::get_from_as(m, attribute)
            .ok()
            .map(|t| t.text)
    }

    fn assert_allocated(answer: &Message) {
        assert_eq!(
            answer.typ,
            MessageType::new(METHOD_ALLOCATE, CLASS_SUCCESS_RESPONSE),
            "{answer}: error {:?}",
            error_code(answer)
        );
        assert!(answer.contains(ATTR_XOR_RELAYED_ADDRESS), "{answer}");
    }

    fn assert_error(answer: &Message, code: u16) {
        assert_eq!(answer.typ.class, CLASS_ERROR_RESPONSE, "{answer}");
        assert_eq!(error_code(answer), Some(code), "{answer}");
    }

    /// xorshift64*: reproducible noise without another dependency.
    struct Noise(u64);

    impl Noise {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn bytes(&mut self, len: usize) -> Vec<u8> {
            (0..len).map(|_| self.next() as u8).collect()
        }
    }

    /// The `i`-th bad datagram: random bytes, truncated or corrupted STUN, and
    /// well-formed STUN that no client sends (responses, unknown methods, indications
    /// other than Send).
    fn bad_datagram(noise: &mut Noise, i: usize) -> Vec<u8> {
        let signed = || allocate(Some(Auth::new(&minted("mallory"), "0.AAAA"))).raw;
        match i % 6 {
            0 => {
                let len = noise.below(1501);
                noise.bytes(len)
            }
            1 => {
                let mut raw = signed();
                raw.truncate(noise.below(raw.len()));
                raw
            }
            2 => {
                // the magic cookie broken
                let mut raw = binding_request().raw;
                raw[4 + noise.below(4)] ^= 1 << noise.below(8);
                raw
            }
            3 => {
                // an attribute longer than the message
                let mut raw = signed();
                raw[22..24].copy_from_slice(&[0xff, 0xf0]);
                raw
            }
            4 => {
                // the two leading bits, always zero in STUN, set
                let mut raw = binding_request().raw;
                raw[0] |= [0x80, 0xc0][noise.below(2)];
                raw
            }
            _ => {
                let typ = [
                    MessageType::new(METHOD_BINDING, CLASS_SUCCESS_RESPONSE),
                    MessageType::new(METHOD_BINDING, CLASS_ERROR_RESPONSE),
                    MessageType::new(METHOD_ALLOCATE, CLASS_SUCCESS_RESPONSE),
                    MessageType::new(METHOD_ALLOCATE, CLASS_ERROR_RESPONSE),
                    MessageType::new(METHOD_DATA, CLASS_INDICATION),
                    MessageType::new(METHOD_CONNECT, CLASS_REQUEST),
                    // an unknown method (0x0ff), as a request and as an indication
                    unknown_method(CLASS_REQUEST),
                    unknown_method(CLASS_INDICATION),
                ][noise.below(8)];
                message(typ, vec![]).raw
            }
        }
    }

    /// Method 0x0ff, which no TURN or STUN RFC defines.
    fn unknown_method(class: MessageClass) -> MessageType {
        let mut typ = MessageType::new(METHOD_BINDING, class);
        typ.read_value(typ.value() | 0x02ee);
        typ
    }

    /// Sends 2000 bad datagrams from one socket and checks that none is answered and
    /// each is counted as malformed. Every 100 datagrams a Binding request must come
    /// back, answered: the server reads its socket in order, so by then it has seen
    /// (and dropped) everything before.
    async fn flood(server: &TurnServer) {
        let socket = UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
        socket.connect(server.local_addr()).await.unwrap();
        let before = server.stats().await.malformed;
        let mut noise = Noise(0x9e37_79b9_7f4a_7c15);
        let mut buf = vec![0u8; 1500];
        // Bytes shaped like ChannelData go to the turn crate, which drops them for want
        // of a channel; everything else is the gate's to count.
        let mut expected = 0;
        for batch in 0..20 {
            for i in 0..100 {
                let datagram = bad_datagram(&mut noise, batch * 100 + i);
                expected += u64::from(datagram.first().is_none_or(|b| b >> 6 != 0b01));
                socket.send(&datagram).await.unwrap();
            }
            let barrier = binding_request();
            socket.send(&barrier.raw).await.unwrap();
            let n = timeout(Duration::from_secs(2), socket.recv(&mut buf))
                .await
                .expect("the server still answers a Binding request")
                .unwrap();
            assert!(
                answers_binding(&buf[..n], &barrier),
                "a bad datagram of batch {batch} got an answer: {:02x?}",
                &buf[..n.min(40)]
            );
        }
        let stray = timeout(Duration::from_millis(200), socket.recv(&mut buf)).await;
        assert!(stray.is_err(), "a bad datagram got an answer");
        let counted = server.stats().await.malformed - before;
        assert!(
            expected > 1900,
            "the noise makes mostly non-ChannelData: {expected}"
        );
        assert_eq!(counted, expected, "{:?}", server.stats().await);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn garbage_datagrams_are_dropped_and_counted_while_uclient_relays() {
        let server = server(QUOTA, loopback_open(), (52350, 52399)).await;
        let port = server.local_addr().port();
        let during =
            tokio::spawn(async move { uclient(port, &minted("alice"), Far::Clients, &[]).await });
        // once uclient holds its allocations, flood the server
        for _ in 0..200 {
            if server.stats().await.allocations >= 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            server.stats().await.allocations >= 2,
            "uclient never allocated"
        );
        flood(&server).await;
        assert_relayed(&during.await.unwrap());
        // and a new run after the flood
        assert_relayed(&uclient(port, &minted("bob"), Far::Clients, &[]).await);
        server.shutdown().await;
    }

    #[tokio::test]
    async fn requests_without_integrity_get_401_with_nonce_and_realm() {
        let server = server(QUOTA, loopback_open(), (52400, 52409)).await;
        let mut a = Client::udp(server.local_addr()).await;
        let mut b = Client::udp(server.local_addr()).await;
        let (nonce_a, nonce_b) = (a.challenge().await, b.challenge().await);
        assert!(!nonce_a.is_empty());
        assert_ne!(nonce_a, nonce_b, "nonces are bound to the client's address");
        // the other authenticated methods too
        for method in [METHOD_REFRESH, METHOD_CREATE_PERMISSION] {
            let answer = a
                .call(&message(MessageType::new(method, CLASS_REQUEST), vec![]))
                .await;
            assert_error(&answer, 401);
            assert!(text(&answer, ATTR_NONCE).is_some(), "{answer}");
        }
        assert_eq!(server.stats().await.allocations, 0);
        server.shutdown().await;
    }

    #[tokio::test]
    async fn a_nonce_replayed_from_another_address_is_stale() {
        let server = server(QUOTA, loopback_open(), (52410, 52419)).await;
        let alice = minted("alice");
        let mut a = Client::udp(server.local_addr()).await;
        let mut b = Client::udp(server.local_addr()).await;
        let nonce_a = a.challenge().await;

        let answer = b.call(&allocate(Some(Auth::new(&alice, &nonce_a)))).await;
        assert_error(&answer, 438);
        let nonce_b = text(&answer, ATTR_NONCE).expect("a 438 carries a fresh NONCE");
        assert_ne!(nonce_b, nonce_a);
        assert_eq!(text(&answer, ATTR_REALM).as_deref(), Some(REALM));
        assert_eq!(server.stats().await.allocations, 0);

        // B with its own nonce, and A with its own: both allocate
        assert_allocated(&b.call(&allocate(Some(Auth::new(&alice, &nonce_b)))).await);
        assert_allocated(&a.call(&allocate(Some(Auth::new(&alice, &nonce_a)))).await);
        let stats = server.stats().await;
        assert_eq!((stats.allocations, stats.stale_nonces), (2, 1), "{stats:?}");
        server.shutdown().await;
    }

    #[tokio::test]
    async fn forged_nonces_are_stale() {
        let server = server(QUOTA, loopback_open(), (52420, 52429)).await;
        let alice = minted("alice");
        let mut client = Client::udp(server.local_addr()).await;
        let real = client.challenge().await;
        let (issued, tag) = real.split_once('.').unwrap();
        let forged = [
            "0.AAAA".to_string(),
            "no-dot".into(),
            String::new(),
            // one character of the HMAC changed
            format!(
                "{issued}.{}{}",
                if tag.starts_with('A') { 'B' } else { 'A' },
                &tag[1..]
            ),
            // issued in the future
            format!("{:x}.{tag}", u64::from_str_radix(issued, 16).unwrap() + 1),
        ];
        for nonce in &forged {
            let answer = client.call(&allocate(Some(Auth::new(&alice, nonce)))).await;
            assert_error(&answer, 438);
            assert!(text(&answer, ATTR_NONCE).is_some(), "{answer}");
        }
        let stats = server.stats().await;
        assert_eq!(stats.stale_nonces, forged.len() as u64, "{stats:?}");
        assert_eq!(stats.allocations, 0, "{stats:?}");
        server.shutdown().await;
    }

    #[tokio::test]
    async fn wrong_realm_expired_or_forged_credentials_get_401() {
        let server = server(QUOTA, loopback_open(), (52430, 52439)).await;
        let alice = minted("alice");
        let expired = Secret::new(SECRET).mint("alice", now() - 1);
        let forged = Secret::new("not-the-server-secret").mint("alice", now() + 3600);
        let mut client = Client::udp(server.local_addr()).await;
        let nonce = client.challenge().await;
        let refused = [
            Auth {
                realm: "elsewhere",
                ..Auth::new(&alice, &nonce)
            },
            Auth::new(&expired, &nonce),
            Auth::new(&forged, &nonce),
        ];
        for auth in refused {
            let answer = client.call(&allocate(Some(auth))).await;
            assert_error(&answer, 401);
        }
        let stats = server.stats().await;
        assert_eq!(stats.unauthorized, 3, "{stats:?}");
        assert_eq!(
            (stats.allocations, stats.allocations_created),
            (0, 0),
            "{stats:?}"
        );
        // the same nonce with good credentials: the refusals were about credentials
        assert_allocated(
            &client
                .call(&allocate(Some(Auth::new(&alice, &nonce))))
                .await,
        );
        server.shutdown().await;
    }

    #[tokio::test]
    async fn allocation_quotas_per_user_and_in_total() {
        let quota = Quota {
            per_user: 2,
            total: 3,
        };
        let server = server(quota, loopback_open(), (52440, 52449)).await;
        let mut clients = Vec::new();
        for _ in 0..5 {
            clients.push(Client::udp(server.local_addr()).await);
        }
        let (alice, bob, carol) = (minted("alice"), minted("bob"), minted("carol"));
        assert_allocated(&clients[0].allocate_as(&alice).await);
        assert_allocated(&clients[1].allocate_as(&alice).await);
        // alice's third: her quota (the server has room for one more)
        assert_error(&clients[2].allocate_as(&alice).await, 486);
        assert_allocated(&clients[3].allocate_as(&bob).await);
        // full: anyone's next
        assert_error(&clients[4].allocate_as(&carol).await, 508);
        let stats = server.stats().await;
        assert_eq!(
            (stats.allocations, stats.refused_quota),
            (3, 2),
            "{stats:?}"
        );
        server.shutdown().await;
    }

    /// Whether the server closed `stream` within `wait`: end of stream, or a reset.
    async fn closed_within(stream: &mut TcpStream, wait: Duration) -> bool {
        let mut buf = [0u8; 64];
        matches!(
            timeout(wait, stream.read(&mut buf)).await,
            Ok(Ok(0) | Err(_))
        )
    }

    #[tokio::test]
    async fn an_idle_tcp_connection_without_an_allocation_is_closed() {
        let server =
            server_with_tcp(QUOTA, loopback_open(), (52480, 52481), short_tcp_limits()).await;
        let mut idle = TcpStream::connect(server.local_addr()).await.unwrap();
        // a client that keeps completing messages is not idle
        let mut busy = Client::tcp(server.local_addr()).await;
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_millis(250)).await;
            busy.call(&binding_request()).await;
        }
        // 1 s gone: past the idle timeout
        assert!(closed_within(&mut idle, Duration::from_secs(2)).await);
        busy.call(&binding_request()).await;
        let stats = server.stats().await;
        assert_eq!(
            (
                stats.closed_tcp_idle,
                stats.closed_tcp_partial,
                stats.malformed
            ),
            (1, 0, 0),
            "{stats:?}"
        );
        server.shutdown().await;
    }

    #[tokio::test]
    async fn a_half_sent_tcp_message_is_closed_by_the_partial_timeout() {
        let limits = TcpLimits {
            idle_timeout: Duration::from_secs(30),
            ..short_tcp_limits()
        };
        let server = server_with_tcp(QUOTA, loopback_open(), (52482, 52483), limits).await;
        let mut stream = TcpStream::connect(server.local_addr()).await.unwrap();
        stream
            .write_all(&binding_request().raw[..10])
            .await
            .unwrap();
        let started = std::time::Instant::now();
        assert!(closed_within(&mut stream, Duration::from_secs(3)).await);
        // the partial timeout, not the idle one, closed it
        assert!(started.elapsed() < Duration::from_secs(3));
        let stats = server.stats().await;
        assert_eq!(
            (
                stats.closed_tcp_partial,
                stats.closed_tcp_idle,
                stats.malformed
            ),
            (1, 0, 0),
            "{stats:?}"
        );
        server.shutdown().await;
    }

    #[tokio::test]
    async fn an_idle_tcp_connection_with_an_allocation_stays() {
        let server =
            server_with_tcp(QUOTA, loopback_open(), (52484, 52485), short_tcp_limits()).await;
        let alice = minted("alice");
        let mut client = Client::tcp(server.local_addr()).await;
        let nonce = client.challenge().await;
        assert_allocated(
            &client
                .call(&allocate(Some(Auth::new(&alice, &nonce))))
                .await,
        );
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let refresh = message(
            MessageType::new(METHOD_REFRESH, CLASS_REQUEST),
            Auth::new(&alice, &nonce).setters(),
        );
        let answer = client.call(&refresh).await;
        assert_eq!(
            answer.typ,
            MessageType::new(METHOD_REFRESH, CLASS_SUCCESS_RESPONSE),
            "{answer}"
        );
        let stats = server.stats().await;
        assert_eq!(
            (stats.allocations, stats.closed_tcp_idle),
            (1, 0),
            "{stats:?}"
        );
        server.shutdown().await;
    }

    #[tokio::test]
    async fn tcp_connections_beyond_the_per_ip_cap_are_refused() {
        let limits = TcpLimits {
            max_per_ip: 3,
            ..TcpLimits::default()
        };
        let server = server_with_tcp(QUOTA, loopback_open(), (52486, 52487), limits).await;
        let mut clients = Vec::new();
        for _ in 0..3 {
            let mut client = Client::tcp(server.local_addr()).await;
            client.call(&binding_request()).await;
            clients.push(client);
        }
        let mut fourth = TcpStream::connect(server.local_addr()).await.unwrap();
        assert!(closed_within(&mut fourth, Duration::from_secs(2)).await);
        assert_eq!(server.stats().await.refused_tcp_limit, 1);
        for client in &mut clients {
            client.call(&binding_request()).await;
        }
        // one leaves: its place is free again, once the server has seen it go
        clients.pop();
        let mut admitted = false;
        for _ in 0..50 {
            let mut client = Client::tcp(server.local_addr()).await;
            let request = binding_request();
            client.send(&request.raw).await;
            if client.recv(Duration::from_secs(1)).await.is_some() {
                admitted = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(admitted, "{:?}", server.stats().await);
        server.shutdown().await;
    }

    #[tokio::test]
    async fn tcp_garbage_closes_only_that_connection() {
        let server = server(QUOTA, loopback_open(), (52450, 52459)).await;
        let alice = minted("alice");
        let mut tcp = Client::tcp(server.local_addr()).await;
        let nonce = tcp.challenge().await;
        assert_allocated(&tcp.call(&allocate(Some(Auth::new(&alice, &nonce)))).await);
        let mut udp = Client::udp(server.local_addr()).await;
        assert_allocated(&udp.allocate_as(&alice).await);

        let garbage: [&[u8]; 3] = [
            &[0xff; 64],
            b"GET / HTTP/1.1\r\nHost: turn\r\n\r\n",
            // a STUN header announcing more than any datagram holds
            &[0x00, 0x01, 0xff, 0xfc, 0x21, 0x12, 0xa4, 0x42],
        ];
        for bytes in garbage {
            let mut stream = TcpStream::connect(server.local_addr()).await.unwrap();
            stream.write_all(bytes).await.unwrap();
            let mut buf = [0u8; 64];
            let read = timeout(Duration::from_secs(2), stream.read(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("{bytes:02x?} did not close the connection"));
            // closed: end of stream, or a reset if the server closed with bytes unread
            assert!(matches!(read, Ok(0) | Err(_)), "{bytes:02x?} got {read:?}");
        }
        let stats = server.stats().await;
        assert_eq!(stats.malformed, 3, "{stats:?}");
        assert_eq!(stats.allocations, 2, "{stats:?}");

        // the earlier TCP client is still connected and served
        let refresh = message(
            MessageType::new(METHOD_REFRESH, CLASS_REQUEST),
            Auth::new(&alice, &nonce).setters(),
        );
        let answer = tcp.call(&refresh).await;
        assert_eq!(
            answer.typ,
            MessageType::new(METHOD_REFRESH, CLASS_SUCCESS_RESPONSE),
            "{answer}"
        );
        // and a new one allocates
        assert_allocated(
            &Client::tcp(server.local_addr())
                .await
                .allocate_as(&alice)
                .await,
        );
        assert_eq!(server.stats().await.allocations, 3);
        server.shutdown().await;
    }
}
