//! The embedded TURN server: UDP and TCP on one port, and TURN over TLS on a port of
//! its own when given a certificate, relaying through the `turn` crate's allocations,
//! behind the [`Gate`](crate::gate::Gate).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, BufReader};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use webrtc_turn::allocation::allocation_manager::{Manager, ManagerConfig};
use webrtc_turn::allocation::five_tuple::FiveTuple;
use webrtc_turn::proto::PROTO_UDP;
use webrtc_turn::server::request::Request;
use webrtc_util::Conn;

use crate::credentials::Secret;
use crate::gate::{Gate, Quota, RestAuth, Verdict};
use crate::policy::PeerPolicy;
use crate::relay::{PortRange, UdpConn};
use crate::tcp::{TcpConn, read_frame};

/// Largest UDP datagram read from clients.
const MTU: usize = 1500;
/// Socket buffers of the listening UDP socket, for bursts of media.
const SOCKET_BUFFER: usize = 4 << 20;
/// Most TURN-over-TCP connections at once.
const MAX_TCP_CONNECTIONS: usize = 4096;
/// Channel bindings last this long unless refreshed (RFC 8656).
const CHANNEL_LIFETIME: Duration = Duration::from_secs(600);

/// How the embedded server runs.
#[derive(Debug, Clone)]
pub struct TurnConfig {
    /// UDP and TCP listen here (port 0: any free port, the same for both).
    pub listen: SocketAddr,
    /// Where relay sockets bind.
    pub relay_bind: IpAddr,
    /// The relay address clients are told (the public IP behind NAT).
    pub relay_public: IpAddr,
    pub relay_ports: RangeInclusive<u16>,
    pub realm: String,
    pub secret: Secret,
    pub quota: Quota,
    pub policy: PeerPolicy,
    /// Limits of TURN over TCP, and of TURN over TLS.
    pub tcp: TcpLimits,
    /// TURN over TLS (`turns:`), if wanted.
    pub tls: Option<TurnTls>,
}

/// TURN over TLS: TURN over TCP's framing inside TLS, on a TCP port of its own.
#[derive(Debug, Clone)]
pub struct TurnTls {
    /// Where it listens (port 0: any free port).
    pub listen: SocketAddr,
    /// The certificate (a resolver the owner may swap certificates in) and settings.
    pub config: Arc<ServerConfig>,
}

/// What a TURN-over-TCP connection may hold on to. A TCP connection costs a task, a
/// socket and a buffer for as long as the client keeps it open, so connections that
/// do nothing useful are closed and no one address may open very many.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpLimits {
    /// A connection without an allocation that completes no message for this long is
    /// closed. A connection with an allocation stays while the allocation lives (its
    /// client refreshes it every few minutes and may send nothing in between); once
    /// the allocation is gone this applies again.
    pub idle_timeout: Duration,
    /// A message started must be complete within this long, allocation or not: a
    /// client that sends half a header and stalls is not sending media.
    pub partial_timeout: Duration,
    /// Most connections open at once from one client IP address; the next one is
    /// closed as soon as it is accepted.
    pub max_per_ip: usize,
}

impl Default for TcpLimits {
    /// 30 s idle: clients send their Allocate within a round trip of connecting.
    /// 10 s for one message of at most 1504 bytes. 32 per IP leaves room for many
    /// browsers behind one NAT (each peer connection opens one).
    fn default() -> Self {
        TcpLimits {
            idle_timeout: Duration::from_secs(30),
            partial_timeout: Duration::from_secs(10),
            max_per_ip: 32,
        }
    }
}

/// What the server has done since it started.
#[derive(Debug, Default)]
pub struct Counters {
    allocations_created: AtomicU64,
    relayed_bytes: AtomicU64,
    relayed_packets: AtomicU64,
    refused_peers: AtomicU64,
    refused_quota: AtomicU64,
    stale_nonces: AtomicU64,
    unauthorized: AtomicU64,
    malformed: AtomicU64,
    refused_tcp_limit: AtomicU64,
    closed_tcp_idle: AtomicU64,
    closed_tcp_partial: AtomicU64,
}

impl Counters {
    pub(crate) fn allocation_created(&self) {
        self.allocations_created.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn relayed(&self, bytes: usize) {
        self.relayed_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
        self.relayed_packets.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn refused_peer(&self) {
        self.refused_peers.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn refused_quota(&self) {
        self.refused_quota.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn stale_nonce(&self) {
        self.stale_nonces.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn unauthorized(&self) {
        self.unauthorized.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn malformed(&self) {
        self.malformed.fetch_add(1, Ordering::Relaxed);
    }
    fn refused_tcp_limit(&self) {
        self.refused_tcp_limit.fetch_add(1, Ordering::Relaxed);
    }
    fn closed_tcp_idle(&self) {
        self.closed_tcp_idle.fetch_add(1, Ordering::Relaxed);
    }
    fn closed_tcp_partial(&self) {
        self.closed_tcp_partial.fetch_add(1, Ordering::Relaxed);
    }
}

/// A snapshot of the server's state and counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TurnStats {
    /// Allocations alive now.
    pub allocations: usize,
    pub allocations_created: u64,
    /// Bytes and datagrams relayed, both directions, counted at the relay sockets.
    pub relayed_bytes: u64,
    pub relayed_packets: u64,
    /// Permissions or datagrams refused because the peer is not allowed.
    pub refused_peers: u64,
    /// Allocations refused by a quota.
    pub refused_quota: u64,
    /// Requests answered 438 (stale, foreign or forged nonce).
    pub stale_nonces: u64,
    /// Requests with credentials answered 401 (unknown, expired, forged, another
    /// realm, or a wrong MESSAGE-INTEGRITY).
    pub unauthorized: u64,
    /// Datagrams or frames that were not TURN, and failed TLS handshakes.
    pub malformed: u64,
    /// TCP (and TLS) connections closed on accept: too many from one IP, or on the
    /// server.
    pub refused_tcp_limit: u64,
    /// TCP connections without an allocation closed for completing no message within
    /// the idle timeout; TLS ones also for not completing the handshake within it.
    pub closed_tcp_idle: u64,
    /// TCP connections closed for leaving a message unfinished past the partial
    /// timeout.
    pub closed_tcp_partial: u64,
}

/// A running embedded TURN server.
#[derive(Debug)]
pub struct TurnServer {
    local: SocketAddr,
    tls_local: Option<SocketAddr>,
    gate: Arc<Gate>,
    policy: Arc<PeerPolicy>,
    stop: watch::Sender<bool>,
    tasks: std::sync::Mutex<Vec<JoinHandle<()>>>,
}

impl TurnServer {
    /// Binds UDP and TCP (and TLS) and starts serving.
    pub async fn start(config: TurnConfig) -> std::io::Result<TurnServer> {
        let (udp, tcp) = bind_pair(config.listen).await?;
        let local = udp.local_addr()?;
        let tls = match config.tls {
            Some(tls) => Some((
                TcpListener::bind(tls.listen).await?,
                TlsAcceptor::from(tls.config),
            )),
            None => None,
        };
        let tls_local = tls
            .as_ref()
            .map(|(listener, _)| listener.local_addr())
            .transpose()?;
        let counters = Arc::new(Counters::default());
        let policy = Arc::new(config.policy);
        let manager = || {
            Arc::new(Manager::new(ManagerConfig {
                relay_addr_generator: Box::new(PortRange {
                    bind: config.relay_bind,
                    public: config.relay_public,
                    ports: config.relay_ports.clone(),
                    policy: policy.clone(),
                    counters: counters.clone(),
                    next: AtomicU32::new(0),
                }),
                alloc_close_notify: None,
            }))
        };
        let (udp_manager, tcp_manager) = (manager(), manager());
        let auth = Arc::new(RestAuth {
            secret: config.secret,
            realm: config.realm,
        });
        let gate = Arc::new(Gate::new(
            auth,
            policy.clone(),
            counters.clone(),
            config.quota,
            vec![udp_manager.clone(), tcp_manager.clone()],
        ));
        let (stop, _) = watch::channel(false);
        let mut tasks = vec![
            tokio::spawn(serve_udp(
                Arc::new(udp),
                gate.clone(),
                udp_manager,
                stop.subscribe(),
            )),
            tokio::spawn(serve_tcp(
                tcp,
                None,
                config.tcp,
                gate.clone(),
                tcp_manager.clone(),
                stop.subscribe(),
            )),
            tokio::spawn(prune_nonces(gate.clone(), stop.subscribe())),
        ];
        // Allocations over TLS are told apart from those over TCP by the listening
        // port in their 5-tuple: one manager serves both.
        if let Some((listener, acceptor)) = tls {
            tasks.push(tokio::spawn(serve_tcp(
                listener,
                Some(acceptor),
                config.tcp,
                gate.clone(),
                tcp_manager,
                stop.subscribe(),
            )));
        }
        Ok(TurnServer {
            local,
            tls_local,
            gate,
            policy,
            stop,
            tasks: std::sync::Mutex::new(tasks),
        })
    }

    /// Where UDP and TCP listen.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Where TURN over TLS listens, if it does.
    pub fn tls_local_addr(&self) -> Option<SocketAddr> {
        self.tls_local
    }

    /// Lets relays reach `services` too (the media ports of a cluster's other
    /// nodes), in place of those given before.
    pub fn reach_services(&self, services: Vec<SocketAddr>) {
        self.policy.learn(services);
    }

    pub async fn stats(&self) -> TurnStats {
        let mut allocations = 0;
        for manager in &self.gate.managers {
            allocations += manager.get_allocations_info(None).await.len();
        }
        let c = &self.gate.counters;
        let get = |n: &AtomicU64| n.load(Ordering::Relaxed);
        TurnStats {
            allocations,
            allocations_created: get(&c.allocations_created),
            relayed_bytes: get(&c.relayed_bytes),
            relayed_packets: get(&c.relayed_packets),
            refused_peers: get(&c.refused_peers),
            refused_quota: get(&c.refused_quota),
            stale_nonces: get(&c.stale_nonces),
            unauthorized: get(&c.unauthorized),
            malformed: get(&c.malformed),
            refused_tcp_limit: get(&c.refused_tcp_limit),
            closed_tcp_idle: get(&c.closed_tcp_idle),
            closed_tcp_partial: get(&c.closed_tcp_partial),
        }
    }

    /// Stops listening and closes every allocation.
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for task in tasks {
            let _ = task.await;
        }
        for manager in &self.gate.managers {
            let _ = manager.close().await;
        }
    }
}

/// A UDP socket and a TCP listener on the same port.
async fn bind_pair(listen: SocketAddr) -> std::io::Result<(UdpSocket, TcpListener)> {
    let mut last_error = None;
    for _ in 0..16 {
        let udp = udp_socket(listen)?;
        let port = udp.local_addr()?.port();
        match TcpListener::bind(SocketAddr::new(listen.ip(), port)).await {
            Ok(tcp) => return Ok((udp, tcp)),
            // with port 0 the UDP port may be taken for TCP; try another
            Err(e) if listen.port() == 0 => last_error = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last_error.unwrap_or_else(|| std::io::Error::other("no free port")))
}

fn udp_socket(listen: SocketAddr) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(
        Domain::for_address(listen),
        Type::DGRAM,
        Some(Protocol::UDP),
    )?;
    // Best effort: the kernel caps these at net.core.{r,w}mem_max.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    socket.set_nonblocking(true)?;
    socket.bind(&listen.into())?;
    UdpSocket::from_std(socket.into())
}

/// One message from a client: checked by the gate, then handled by the `turn` crate.
async fn serve(
    gate: &Gate,
    conn: &Arc<dyn Conn + Send + Sync>,
    manager: &Arc<Manager>,
    packet: &[u8],
    from: SocketAddr,
) {
    match gate.inspect(packet, from).await {
        Verdict::Drop => {}
        Verdict::Reply(bytes) => {
            let _ = conn.send_to(&bytes, from).await;
        }
        Verdict::Pass => {
            let mut request = Request {
                conn: conn.clone(),
                src_addr: from,
                buff: packet.to_vec(),
                allocation_manager: manager.clone(),
                nonces: gate.nonces.clone(),
                auth_handler: gate.auth.clone(),
                realm: gate.auth.realm.clone(),
                channel_bind_timeout: CHANNEL_LIFETIME,
            };
            if let Err(e) = request.handle_request().await {
                tracing::trace!(%from, error = %e, "TURN request refused");
            }
        }
    }
}

async fn serve_udp(
    socket: Arc<UdpSocket>,
    gate: Arc<Gate>,
    manager: Arc<Manager>,
    mut stop: watch::Receiver<bool>,
) {
    let Ok(conn) = UdpConn::listener(socket.clone()) else {
        return;
    };
    let conn: Arc<dyn Conn + Send + Sync> = Arc::new(conn);
    let mut buf = vec![0u8; MTU];
    loop {
        let received = tokio::select! {
            _ = stop.changed() => return,
            received = socket.recv_from(&mut buf) => received,
        };
        match received {
            Ok((n, from)) => serve(&gate, &conn, &manager, &buf[..n], from).await,
            // ICMP errors for earlier sends surface here on some systems; keep going
            Err(e) => tracing::debug!(error = %e, "TURN UDP receive failed"),
        }
    }
}

/// Accepts TURN-over-TCP connections, or with `tls` TURN-over-TLS ones.
async fn serve_tcp(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    limits: TcpLimits,
    gate: Arc<Gate>,
    manager: Arc<Manager>,
    mut stop: watch::Receiver<bool>,
) {
    let local = match listener.local_addr() {
        Ok(local) => local,
        Err(_) => return,
    };
    let slots = Arc::new(Semaphore::new(MAX_TCP_CONNECTIONS));
    let per_ip = PerIp::new(limits.max_per_ip);
    loop {
        let accepted = tokio::select! {
            _ = stop.changed() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, peer)) = accepted else {
            continue;
        };
        // Counted here, before the next accept, so that the connections of one burst
        // are judged in order. Refused streams are dropped, closing them.
        let (Ok(slot), Some(mine)) = (slots.clone().try_acquire_owned(), per_ip.admit(peer.ip()))
        else {
            gate.counters.refused_tcp_limit();
            continue;
        };
        let (gate, manager, stop) = (gate.clone(), manager.clone(), stop.clone());
        let tls = tls.clone();
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let client = Client {
                local,
                peer,
                limits,
                gate: &gate,
                manager: &manager,
            };
            match tls {
                None => {
                    let (reader, writer) = stream.into_split();
                    serve_tcp_client(client, reader, writer, stop).await;
                }
                // The handshake is the first message: the idle timeout covers it.
                Some(tls) => {
                    match tokio::time::timeout(limits.idle_timeout, tls.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            let (reader, writer) = tokio::io::split(stream);
                            serve_tcp_client(client, reader, writer, stop).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TURN TLS handshake failed");
                            gate.counters.malformed();
                        }
                        Err(_) => gate.counters.closed_tcp_idle(),
                    }
                }
            }
            drop((slot, mine));
        });
    }
}

/// How many connections each client IP address holds, against a cap: TURN over TCP
/// here, and Huddle's HTTP port too.
#[derive(Debug)]
pub struct PerIp {
    /// Only addresses with a connection open; a std mutex, never held across an await.
    open: std::sync::Mutex<HashMap<IpAddr, usize>>,
    max: usize,
}

impl PerIp {
    /// At most `max` connections per address.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(PerIp {
            open: std::sync::Mutex::default(),
            max,
        })
    }

    /// A place for one more connection from `ip`, if it has fewer than the maximum.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<PerIpSlot> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(ip).or_default();
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(PerIpSlot {
            per_ip: self.clone(),
            ip,
        })
    }
}

/// One connection's place in [`PerIp`], given back when it is dropped.
#[derive(Debug)]
pub struct PerIpSlot {
    per_ip: Arc<PerIp>,
    ip: IpAddr,
}

impl Drop for PerIpSlot {
    fn drop(&mut self) {
        let mut open = self.per_ip.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Why a TURN-over-TCP connection stopped being read.
enum Ended {
    /// The client closed it, the server is stopping, or the stream failed before a
    /// message began.
    Closed,
    /// Not STUN or ChannelData, too large, or cut inside a message.
    Malformed,
    Idle,
    Partial,
}

/// One TURN-over-TCP (or TLS) client connection, as the server sees it.
struct Client<'a> {
    /// The listening address: the "destination" of the client's 5-tuple.
    local: SocketAddr,
    peer: SocketAddr,
    limits: TcpLimits,
    gate: &'a Gate,
    manager: &'a Arc<Manager>,
}

/// Serves a client's messages until the connection ends, then deletes its allocation.
async fn serve_tcp_client(
    Client {
        local,
        peer,
        limits,
        gate,
        manager,
    }: Client<'_>,
    reader: impl AsyncRead + Unpin,
    writer: impl AsyncWrite + Unpin + Send + Sync + 'static,
    mut stop: watch::Receiver<bool>,
) {
    // Buffered, so that waiting for the start of a message (idle) and reading the rest
    // (partial) are two steps without a system call more per message.
    let mut reader = BufReader::new(reader);
    let conn: Arc<dyn Conn + Send + Sync> = Arc::new(TcpConn::new(writer, local, peer));
    // The allocation lives as long as its connection (RFC 8656 §5).
    let five_tuple = FiveTuple {
        src_addr: peer,
        dst_addr: local,
        protocol: PROTO_UDP,
    };
    let mut buf = Vec::with_capacity(MTU);
    let read = async {
        loop {
            // fill_buf consumes nothing, so a timeout here loses no byte
            match tokio::time::timeout(limits.idle_timeout, reader.fill_buf()).await {
                Ok(Ok([])) | Ok(Err(_)) => return Ended::Closed,
                Ok(Ok(_)) => {}
                Err(_) => {
                    if manager.get_allocation(&five_tuple).await.is_none() {
                        return Ended::Idle;
                    }
                    continue;
                }
            }
            let frame =
                tokio::time::timeout(limits.partial_timeout, read_frame(&mut reader, &mut buf))
                    .await;
            match frame {
                Ok(Ok(Some(()))) => serve(gate, &conn, manager, &buf, peer).await,
                Ok(Ok(None)) => return Ended::Closed,
                Ok(Err(_)) => return Ended::Malformed,
                Err(_) => return Ended::Partial,
            }
        }
    };
    let ended = tokio::select! {
        _ = stop.changed() => Ended::Closed,
        ended = read => ended,
    };
    match ended {
        Ended::Closed => {}
        Ended::Malformed => gate.counters.malformed(),
        Ended::Idle => gate.counters.closed_tcp_idle(),
        Ended::Partial => gate.counters.closed_tcp_partial(),
    }
    manager.delete_allocation(&five_tuple).await;
}

async fn prune_nonces(gate: Arc<Gate>, mut stop: watch::Receiver<bool>) {
    let mut ticks = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = ticks.tick() => gate.prune_nonces().await,
        }
    }
}
