//! The Socket.IO server: authentication, dispatch of client events, `webrtc:*`
//! relay, ordered delivery of notices, presence, and draining at shutdown.
//!
//! ## Nothing lost
//! socketioxide runs every event handler as a task of its own, and its sends fail
//! at once when a client's outgoing buffer is full. So that a client always learns
//! what happened to what it sent:
//! - each socket's events go into a queue of its own *as they come off the wire*
//!   (the [`Queued`] extractor runs in the connection's read loop) and one task at a
//!   time per socket carries them out in that order: a user's own updates apply in
//!   order. The task runs only while events are waiting, so a held, idle socket costs
//!   no task of Huddle's;
//! - every event is answered (its ack, or `call:error`); an answer waits for room in
//!   the client's buffer, and a client that does not read for [`SEND_WAIT`] is
//!   disconnected, so it reconnects and resyncs instead of missing answers;
//! - a notice or relay that finds a socket's buffer full disconnects that socket
//!   (a slow consumer) for the same reason, rather than skipping it.
//!
//! ## Cluster mode
//! [`Signaling::clustered`] runs the same handlers over socketioxide-redis's adapter
//! (every function here is generic over the [`Adapter`]). Every socket of a node is also
//! in its node's room, and a notice or relay goes out twice, to disjoint sets of sockets:
//! - to this node's sockets directly, as in single-process mode (a full buffer
//!   disconnects the socket, counted in [`Signaling::slow_consumers`]), so this node's
//!   sockets are served even while Redis is down;
//! - to the other nodes' sockets through the adapter's broadcast
//!   (`io.to(rooms).except(node room)`), published by one task per node in the order
//!   the messages were produced. A node receiving it writes it to its sockets' buffers;
//!   a full buffer there means that socket misses it (socketioxide-core logs a warning:
//!   the adapter gives the receiving node no hook to disconnect it). A publish that
//!   fails (Redis down) or that waited more than [`PUBLISH_WAIT`] is not retried: it is
//!   logged and counted in [`Signaling::unpublished`]. Redis pub/sub keeps nothing for
//!   a node that is not connected, so messages sent during an outage are lost for the
//!   other nodes whatever this side does; clients resync when they reconnect.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Value, json};
use socketioxide::adapter::{Adapter, LocalAdapter};
use socketioxide::extract::{AckSender, Event, SocketRef, TryData};
use socketioxide::handler::{ConnectHandler, FromMessageParts};
use socketioxide::socket::{Sid, Socket};
use socketioxide::{SendError, SocketError, SocketIo, SocketIoBuilder};
use socketioxide_core::adapter::DefinedAdapter;
use socketioxide_redis::{RedisAdapterConfig, RedisAdapterCtr};
use tokio::sync::{mpsc, oneshot};

use crate::cluster::{ClusterAdapter, ClusterError, RedisDriver};
use crate::events::{self, Notice, Relay, SfuMessage};
use crate::layer::SignalingLayer;
use crate::presence::Presence;
use crate::{CallDomain, SignalError, User};

/// Largest Socket.IO message accepted from a client, with room for a maximal relay.
const MAX_MESSAGE_BYTES: usize = 2 * events::MAX_RELAY_BYTES;
/// Packets a socket's outgoing buffer holds (socketioxide allocates them as used).
const OUTGOING_PACKETS: usize = 1024;
/// Bytes of a socket's events waiting to be carried out; beyond it, events are
/// refused (answered `OVERLOADED`) without being kept.
const MAX_QUEUED_BYTES: usize = 1 << 20;
/// Events (refused ones included) waiting on one socket; beyond it the client is
/// not reading its answers and is disconnected.
const MAX_QUEUED_EVENTS: usize = 20_000;
/// How long an answer waits for room in a client's outgoing buffer.
const SEND_WAIT: Duration = Duration::from_secs(10);
/// How often a full outgoing buffer is looked at again.
const SEND_RETRY: Duration = Duration::from_millis(2);
/// Cluster mode: messages from other nodes waiting to be written to this node's
/// sockets; beyond it they are lost (and logged). socketioxide-redis's default is 1024.
const STREAM_BUFFER: usize = 8192;
/// Cluster mode: a message for other nodes not published this long after it was
/// produced (Redis slow or down) is dropped rather than delivered late.
pub const PUBLISH_WAIT: Duration = Duration::from_secs(5);

/// Handle to the Socket.IO server: attach handlers with [`Signaling::start`], send
/// notices with [`Signaling::notify`], stop with [`Signaling::drain`]. Cheap to clone.
#[derive(Clone)]
pub struct Signaling {
    io: Io,
    /// Notices waiting to be broadcast, in the order they were produced.
    outbox: mpsc::UnboundedSender<Delivery>,
    presence: Arc<Presence>,
    state: Arc<State>,
}

/// The Socket.IO server, on the adapter of the mode signaling runs in.
#[derive(Clone)]
enum Io {
    Local(SocketIo<LocalAdapter>),
    Cluster(SocketIo<ClusterAdapter>),
}

/// What every socket's tasks share.
#[derive(Debug, Default)]
struct State {
    /// Set once shutdown begins: new sockets and events are refused.
    draining: AtomicBool,
    /// Events taken off the wire and not answered yet, over all sockets.
    pending: AtomicUsize,
    /// Sockets disconnected because they did not read what was sent to them.
    slow_consumers: AtomicU64,
    /// Cluster mode: messages for other nodes that could not be published.
    unpublished: AtomicU64,
    /// Cluster mode only: how to reach the other nodes.
    cluster: Option<ClusterLink>,
}

/// This node's way to the sockets of the other nodes.
#[derive(Debug)]
struct ClusterLink {
    /// The room every socket of this node is in: broadcasts to the other nodes leave
    /// it out, since this node serves its own sockets directly.
    node_room: String,
    /// The queue of the task publishing to the other nodes, in order.
    outgoing: mpsc::UnboundedSender<Outgoing>,
}

/// Work for the delivery task.
enum Delivery {
    Notice(Vec<String>, Notice),
    /// Everything before this has been delivered: say so and stop.
    Stop(oneshot::Sender<()>),
}

/// Work for the task publishing to the other nodes.
enum Outgoing {
    /// `data` for the sockets in `rooms` on the other nodes.
    Publish {
        rooms: Vec<String>,
        event: String,
        data: Value,
        /// When it was produced, for [`PUBLISH_WAIT`].
        produced: Instant,
    },
    /// Everything before this has been published (or given up): say so and stop.
    Stop(oneshot::Sender<()>),
}

impl State {
    /// Cluster mode: queues `data` for the sockets in `rooms` on the other nodes. (In
    /// single-process mode there are none.)
    fn to_other_nodes(&self, rooms: Vec<String>, event: &str, data: Value) {
        if let Some(cluster) = &self.cluster {
            let _ = cluster.outgoing.send(Outgoing::Publish {
                rooms,
                event: event.to_owned(),
                data,
                produced: Instant::now(),
            });
        }
    }
}

impl std::fmt::Debug for Signaling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signaling")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

/// The room every socket of `user` is in.
fn user_room(user: &str) -> String {
    format!("user:{user}")
}

/// socketioxide's builder with Huddle's limits. Client messages are small (relays
/// are capped at 64 KiB): anything larger is refused at the transport, and
/// per-connection read buffers stay small so that idle connections are cheap.
fn builder() -> SocketIoBuilder<LocalAdapter> {
    SocketIo::builder()
        .max_payload(MAX_MESSAGE_BYTES as u64)
        .ws_max_message_size(MAX_MESSAGE_BYTES)
        .ws_max_frame_size(MAX_MESSAGE_BYTES)
        .ws_read_buffer_size(1024)
        .max_buffer_size(OUTGOING_PACKETS)
}

impl Signaling {
    /// A Socket.IO server for a single process, and the tower layer that serves it at
    /// `/socket.io/`. Must be called within a Tokio runtime (it starts the delivery task).
    pub fn new() -> (SignalingLayer, Self) {
        let (layer, io) = builder().build_layer();
        let signaling = Self::with_io(Io::Local(io), State::default());
        (SignalingLayer::local(layer), signaling)
    }

    /// A Socket.IO server that is one node of a cluster sharing the Redis of `redis`,
    /// and the tower layer that serves it at `/socket.io/`: notices and relays reach
    /// every socket of their users on every node, exactly once per socket.
    ///
    /// This node's sockets are served directly, as by [`Signaling::new`] (a full buffer
    /// disconnects the socket), whether Redis is up or not. The other nodes' sockets are
    /// reached through Redis pub/sub, in the order this node produced the messages.
    /// While Redis is down those messages are lost for the other nodes (counted in
    /// [`Signaling::unpublished`]); a socket of another node whose buffer is full misses
    /// the message (that node logs it) rather than being disconnected.
    ///
    /// `redis` may be made from any URL (`redis::Client::open(REDIS_URL)`): it is used
    /// over RESP3 whatever the URL says (Redis 6+). Fails if Redis cannot be reached
    /// now; once started, the node reconnects (and resubscribes) by itself whenever
    /// Redis comes back. Must be called within a Tokio runtime.
    pub async fn clustered(redis: redis::Client) -> Result<(SignalingLayer, Self), ClusterError> {
        let driver = RedisDriver::connect(&redis).await?;
        let config = RedisAdapterConfig::new().with_stream_buffer(STREAM_BUFFER);
        let (layer, io) = builder()
            .with_adapter::<ClusterAdapter>(RedisAdapterCtr::new_with_driver(
                driver.clone(),
                config,
            ))
            .build_layer();
        let node_room = format!("node:{}", Sid::new());
        let (outgoing, queue) = mpsc::unbounded_channel();
        let state = State {
            cluster: Some(ClusterLink {
                node_room: node_room.clone(),
                outgoing,
            }),
            ..State::default()
        };
        let signaling = Self::with_io(Io::Cluster(io.clone()), state);
        let state = Arc::downgrade(&signaling.state);
        tokio::spawn(publish(io, node_room, queue, state.clone()));
        driver.keep_alive(state);
        Ok((SignalingLayer::cluster(layer), signaling))
    }

    fn with_io(io: Io, state: State) -> Self {
        let (outbox, queue) = mpsc::unbounded_channel();
        let state = Arc::new(state);
        match &io {
            Io::Local(io) => tokio::spawn(deliver(io.clone(), queue, state.clone())),
            Io::Cluster(io) => tokio::spawn(deliver(io.clone(), queue, state.clone())),
        };
        Signaling {
            io,
            outbox,
            presence: Arc::default(),
            state,
        }
    }

    /// Starts accepting sockets on the default namespace, served by `domain`.
    ///
    /// A socket is set up (its handlers, its user's room, presence) in the connect
    /// middleware, which socketioxide finishes before it tells the client it is
    /// connected: an event sent the moment `connect` fires finds its handler, and a
    /// notice sent then finds the socket in its user's room. (The connect handler
    /// proper runs as a task of its own after that, too late for both.)
    ///
    /// In cluster mode the namespace subscribes to its Redis channels in the
    /// background, trying again until Redis answers (if it went away since
    /// [`Signaling::clustered`]); until then this node does not hear the others.
    pub fn start<D: CallDomain>(&self, domain: Arc<D>) {
        self.presence.start(domain.clone());
        match &self.io {
            Io::Local(io) => self.accept(io, domain),
            Io::Cluster(io) => {
                let subscribed = self.accept(io, domain);
                tokio::spawn(async move {
                    if let Err(e) = subscribed.await {
                        tracing::error!(error = %e, "signaling's Redis adapter did not start: this node will not hear the others");
                    }
                });
            }
        }
    }

    /// Serves the default namespace of `io` with `domain`.
    fn accept<A: Adapter + DefinedAdapter, D: CallDomain>(
        &self,
        io: &SocketIo<A>,
        domain: Arc<D>,
    ) -> A::InitRes {
        let this = self.clone();
        let accept = move |socket: SocketRef<A>, auth: TryData<Value>| {
            let (this, domain) = (this.clone(), domain.clone());
            async move {
                if this.state.draining.load(Ordering::SeqCst) {
                    return Err("the server is shutting down: connect again".to_owned());
                }
                let user = authenticate(&*domain, &socket, auth.0.ok())?;
                this.set_up(&socket, user, domain);
                Ok::<(), String>(())
            }
        };
        io.ns("/", (async |_: SocketRef<A>| {}).with(accept))
    }

    /// Sends `notice` to every socket of each of `users`, after the notices sent before it.
    pub fn notify(&self, users: Vec<String>, notice: Notice) {
        if self.outbox.send(Delivery::Notice(users, notice)).is_err() {
            tracing::debug!("notice not sent: signaling has stopped");
        }
    }

    /// Sockets disconnected so far because they did not read what was sent to them.
    pub fn slow_consumers(&self) -> u64 {
        self.state.slow_consumers.load(Ordering::Relaxed)
    }

    /// Cluster mode: notices and relays for other nodes that could not be published
    /// so far (Redis down or too slow). Always 0 for a single process.
    pub fn unpublished(&self) -> u64 {
        self.state.unpublished.load(Ordering::Relaxed)
    }

    /// From now on, new sockets are refused and new events answered
    /// `SHUTTING_DOWN`; sockets that close are not users going away.
    pub fn refuse_new(&self) {
        self.state.draining.store(true, Ordering::SeqCst);
        self.presence.close();
    }

    /// Stops in order: refuses new sockets and events, answers the events already
    /// taken (for at most `deadline`), delivers the notices already produced (in
    /// cluster mode: publishes them, or gives up on them, too), then disconnects every
    /// socket (without counting their users as gone).
    pub async fn drain(&self, deadline: Duration) {
        let until = Instant::now() + deadline;
        self.refuse_new();
        while self.state.pending.load(Ordering::SeqCst) > 0 && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let (done, delivered) = oneshot::channel();
        if self.outbox.send(Delivery::Stop(done)).is_ok() {
            let left = until.saturating_duration_since(Instant::now());
            let _ = tokio::time::timeout(left.max(Duration::from_secs(1)), delivered).await;
        }
        match &self.io {
            Io::Local(io) => io.close().await,
            Io::Cluster(io) => io.close().await,
        }
    }

    fn set_up<A: Adapter, D: CallDomain>(&self, socket: &SocketRef<A>, user: User, domain: Arc<D>) {
        socket.join(user_room(&user.id));
        if let Some(cluster) = &self.state.cluster {
            socket.join(cluster.node_room.clone());
        }
        self.presence.connected(&user);
        socket.extensions.insert(Inbox(Arc::new(InboxState {
            user,
            domain,
            queue: Mutex::new(Queue::<A> {
                jobs: VecDeque::new(),
                running: false,
            }),
            bytes: AtomicUsize::new(0),
            events: AtomicUsize::new(0),
            gone: AtomicBool::new(false),
            state: self.state.clone(),
        })));
        socket.on_fallback(|_: Queued<D>| async {});
        let presence = self.presence.clone();
        socket.on_disconnect(move |socket: SocketRef<A>| {
            // A task still carrying out the socket's events drops the rest and ends.
            if let Some(Inbox(inbox)) = socket.extensions.remove::<Inbox<A, D>>() {
                inbox.gone.store(true, Ordering::SeqCst);
                presence.disconnected(&inbox.user);
            }
            async {}
        });
    }
}

/// A socket's queue of events to carry out, in arrival order, and who carries them
/// out. Kept in the socket's extensions until the socket disconnects.
///
/// An idle socket has no task and no channel of its own: the first event queued
/// starts a task (see [`carry_out`]), which carries out the events in order until the
/// queue is empty and then ends. At most one such task runs per socket.
struct Inbox<A: Adapter, D>(Arc<InboxState<A, D>>);

impl<A: Adapter, D> Clone for Inbox<A, D> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

struct InboxState<A: Adapter, D> {
    user: User,
    domain: Arc<D>,
    queue: Mutex<Queue<A>>,
    /// Bytes of the events in the queue, counted against [`MAX_QUEUED_BYTES`].
    bytes: AtomicUsize,
    /// Events in the queue, refused ones included.
    events: AtomicUsize,
    /// Set when the socket disconnects. (Not `Socket::connected`, which socketioxide
    /// sets only after CONNECT is sent: an event the client sends straight back can be
    /// queued before that.)
    gone: AtomicBool,
    state: Arc<State>,
}

/// The events waiting, and whether a task is carrying them out (while one is, it
/// takes the events queued meanwhile too; while none is, the queue is empty).
struct Queue<A: Adapter> {
    jobs: VecDeque<Job<A>>,
    running: bool,
}

/// One client event waiting its turn.
struct Job<A: Adapter> {
    event: String,
    data: Value,
    ack: Option<i64>,
    /// Its size as received, counted against [`MAX_QUEUED_BYTES`].
    bytes: usize,
    /// Refused before its turn (shutting down, overloaded): answered with this.
    refused: Option<SignalError>,
    /// The socket, as the acknowledgement sender needs it.
    socket: Arc<Socket<A>>,
}

/// The extractor that puts an event into its socket's queue. socketioxide runs
/// extractors in the connection's read loop, so events are queued in the order the
/// client sent them; the handler itself has nothing left to do.
struct Queued<D>(std::marker::PhantomData<fn() -> D>);

impl<A: Adapter, D: CallDomain> FromMessageParts<A> for Queued<D> {
    type Error = Infallible;

    fn from_message_parts(
        socket: &Arc<Socket<A>>,
        value: &mut socketioxide::handler::Value,
        ack: &Option<i64>,
    ) -> Result<Self, Infallible> {
        let queued = Queued(std::marker::PhantomData);
        let Some(Inbox(inbox)) = socket.extensions.get::<Inbox<A, D>>() else {
            return Ok(queued);
        };
        let Ok(Event(event)) = Event::from_message_parts(socket, value, ack) else {
            return Ok(queued);
        };
        let bytes = match &*value {
            socketioxide::handler::Value::Str(text, binary) => {
                text.len() + binary.iter().flatten().map(|b| b.len()).sum::<usize>()
            }
            socketioxide::handler::Value::Bytes(b) => b.len(),
        };
        if inbox.events.fetch_add(1, Ordering::SeqCst) >= MAX_QUEUED_EVENTS {
            inbox.events.fetch_sub(1, Ordering::SeqCst);
            drop_slow_consumer(socket.clone().into(), &inbox.state);
            return Ok(queued);
        }
        let refused = if inbox.state.draining.load(Ordering::SeqCst) {
            Some(SignalError::new(
                "SHUTTING_DOWN",
                "the server is shutting down: reconnect and try again",
            ))
        } else if inbox.bytes.load(Ordering::SeqCst) + bytes > MAX_QUEUED_BYTES {
            Some(SignalError::new(
                "OVERLOADED",
                "too much is waiting on this connection: slow down",
            ))
        } else {
            None
        };
        let (data, bytes) = if refused.is_some() {
            (Value::Null, 0)
        } else {
            let TryData(data) = TryData::<Value>::from_message_parts(socket, value, ack)
                .unwrap_or_else(|never| match never {});
            (data.unwrap_or(Value::Null), bytes)
        };
        inbox.bytes.fetch_add(bytes, Ordering::SeqCst);
        inbox.state.pending.fetch_add(1, Ordering::SeqCst);
        let job = Job {
            event,
            data,
            ack: *ack,
            bytes,
            refused,
            socket: socket.clone(),
        };
        let start = {
            let mut queue = inbox.queue.lock().unwrap_or_else(|e| e.into_inner());
            queue.jobs.push_back(job);
            !std::mem::replace(&mut queue.running, true)
        };
        if start {
            tokio::spawn(carry_out(inbox));
        }
        Ok(queued)
    }
}

/// Carries out one socket's queued events, one at a time, in order, answering each,
/// until the queue is empty. Once the socket is gone, what is still queued is dropped
/// uncarried (nobody could hear the answer).
async fn carry_out<A: Adapter, D: CallDomain>(inbox: Arc<InboxState<A, D>>) {
    loop {
        let job = {
            let mut queue = inbox.queue.lock().unwrap_or_else(|e| e.into_inner());
            match queue.jobs.pop_front() {
                Some(job) => job,
                None => {
                    queue.running = false;
                    // Give back what a burst made the queue hold.
                    queue.jobs = VecDeque::new();
                    return;
                }
            }
        };
        inbox.bytes.fetch_sub(job.bytes, Ordering::SeqCst);
        inbox.events.fetch_sub(1, Ordering::SeqCst);
        if !inbox.gone.load(Ordering::SeqCst) {
            carry_out_one(&inbox, job).await;
        }
        inbox.state.pending.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Carries out one event and answers it.
async fn carry_out_one<A: Adapter, D: CallDomain>(inbox: &InboxState<A, D>, job: Job<A>) {
    let (domain, user) = (&*inbox.domain, &inbox.user);
    let call_id = job
        .data
        .get("callId")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let result = match job.refused {
        Some(refusal) => Err(refusal),
        None => match domain.admit(user) {
            Ok(()) => {
                let event = (job.event.as_str(), job.data);
                let socket = SocketRef::from(job.socket.clone());
                dispatch(domain, &socket, user, event, &inbox.state).await
            }
            Err(refusal) => Err(refusal),
        },
    };
    let answer = Answer {
        event: &job.event,
        ack: job.ack,
        call_id: call_id.as_deref(),
    };
    answer
        .send(&job.socket, result, &inbox.gone, &inbox.state)
        .await;
}

/// Who a connecting socket is: one without a valid token is refused with a
/// `connect_error` whose message says why.
fn authenticate<A: Adapter, D: CallDomain>(
    domain: &D,
    socket: &SocketRef<A>,
    auth: Option<Value>,
) -> Result<User, String> {
    let from_auth = auth
        .as_ref()
        .and_then(|a| a.get("token"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let from_header = || {
        let header = socket
            .req_parts()
            .headers
            .get("authorization")?
            .to_str()
            .ok()?;
        header.strip_prefix("Bearer ").map(str::to_owned)
    };
    let Some(token) = from_auth.or_else(from_header) else {
        return Err("missing token: connect with auth: { token }".to_owned());
    };
    domain.authenticate(&token, socket.req_parts())
}

/// Carries out one client event, `(name, data)`.
async fn dispatch<A: Adapter, D: CallDomain>(
    domain: &D,
    socket: &SocketRef<A>,
    user: &User,
    (event, data): (&str, Value),
    state: &State,
) -> Result<Value, SignalError> {
    if event == events::ECHO {
        return Ok(json!({ "data": data }));
    }
    if let Some(request) = events::parse_request(event, &data) {
        return domain.handle(user, request?).await;
    }
    if let Some(relay) = events::parse_relay(event, data) {
        return relay_to_member(domain, socket, user, (event, relay?), state).await;
    }
    Err(SignalError::new(
        "UNKNOWN_EVENT",
        format!("unknown event `{event}`"),
    ))
}

/// Forwards a `webrtc:*` message, `(name, relay)`, to the sockets of its target, a
/// fellow member, on every node.
async fn relay_to_member<A: Adapter, D: CallDomain>(
    domain: &D,
    socket: &SocketRef<A>,
    user: &User,
    (event, relay): (&str, Relay),
    state: &State,
) -> Result<Value, SignalError> {
    if relay.target_user_id == events::SFU_PEER {
        return domain.to_sfu(user, SfuMessage::from_relay(relay)?).await;
    }
    if relay.target_user_id == user.id {
        return Err(SignalError::invalid("targetUserId", "cannot be yourself"));
    }
    domain
        .may_relay(user, &relay.call_id, &relay.target_user_id)
        .await?;
    let mut payload = json!({ "callId": relay.call_id, "fromUserId": user.id });
    payload[relay.field] = relay.body;
    let room = user_room(&relay.target_user_id);
    for target in socket.to(room.clone()).sockets() {
        send_or_drop(&target, event, &payload, state);
    }
    state.to_other_nodes(vec![room], event, payload);
    Ok(json!({}))
}

/// Delivers notices in the order they were produced until told to stop: to this
/// node's sockets now, to the other nodes' through the publishing task.
async fn deliver<A: Adapter>(
    io: SocketIo<A>,
    mut queue: mpsc::UnboundedReceiver<Delivery>,
    state: Arc<State>,
) {
    while let Some(delivery) = queue.recv().await {
        match delivery {
            Delivery::Notice(users, notice) => {
                let rooms: Vec<String> = users.iter().map(|u| user_room(u)).collect();
                for socket in io.to(rooms.clone()).sockets() {
                    send_or_drop(&socket, notice.event(), &notice, &state);
                }
                if state.cluster.is_some() {
                    match serde_json::to_value(&notice) {
                        Ok(data) => state.to_other_nodes(rooms, notice.event(), data),
                        Err(e) => tracing::error!(error = %e, "could not encode a notice"),
                    }
                }
            }
            Delivery::Stop(done) => {
                match &state.cluster {
                    Some(cluster) => {
                        // Done once the publishing task has caught up; if it has
                        // ended already, dropping `done` says so just as well.
                        let _ = cluster.outgoing.send(Outgoing::Stop(done));
                    }
                    None => {
                        let _ = done.send(());
                    }
                }
                return;
            }
        }
    }
}

/// Cluster mode: publishes messages for the sockets of the other nodes, one at a time
/// in the order they were produced, through the adapter's broadcast (which leaves out
/// `node_room`, this node's sockets). A message that cannot be published is counted
/// and dropped; see [the module](self).
async fn publish<A: Adapter>(
    io: SocketIo<A>,
    node_room: String,
    mut queue: mpsc::UnboundedReceiver<Outgoing>,
    state: std::sync::Weak<State>,
) {
    while let Some(outgoing) = queue.recv().await {
        let (rooms, event, data, produced) = match outgoing {
            Outgoing::Publish {
                rooms,
                event,
                data,
                produced,
            } => (rooms, event, data, produced),
            Outgoing::Stop(done) => {
                let _ = done.send(());
                return;
            }
        };
        let published = if produced.elapsed() > PUBLISH_WAIT {
            Err("waited too long for Redis".to_owned())
        } else {
            let broadcast = io.to(rooms).except(node_room.clone());
            broadcast
                .emit(&event, &data)
                .await
                .map_err(|e| e.to_string())
        };
        if let Err(e) = published {
            if let Some(state) = state.upgrade() {
                state.unpublished.fetch_add(1, Ordering::Relaxed);
            }
            tracing::debug!(event, error = %e, "message for other nodes not published");
        }
    }
}

/// Sends an event to one socket now; a socket whose buffer is full is disconnected
/// (it reconnects and resyncs) rather than silently missing it.
fn send_or_drop<A: Adapter, T: Serialize + ?Sized>(
    socket: &SocketRef<A>,
    event: &str,
    data: &T,
    state: &State,
) {
    match socket.emit(event, data) {
        Ok(()) | Err(SendError::Socket(SocketError::Closed)) => {}
        Err(SendError::Socket(SocketError::InternalChannelFull)) => {
            drop_slow_consumer(socket.clone(), state);
        }
        Err(e) => tracing::error!(event, error = %e, "could not encode an event"),
    }
}

/// Disconnects a socket that does not read what is sent to it. The disconnect
/// packet itself needs room in its buffer: retried until it fits or the socket is
/// gone (the transport's heartbeat ends a client that reads nothing at all).
fn drop_slow_consumer<A: Adapter>(socket: SocketRef<A>, state: &State) {
    state.slow_consumers.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(socket = %socket.id, "disconnecting a socket that does not read");
    tokio::spawn(async move {
        let until = Instant::now() + SEND_WAIT;
        while Instant::now() < until {
            match socket.clone().disconnect() {
                Err(SocketError::InternalChannelFull) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                _ => return,
            }
        }
    });
}

/// How to answer one client event.
struct Answer<'a> {
    event: &'a str,
    /// The acknowledgement the client asked for, if any.
    ack: Option<i64>,
    call_id: Option<&'a str>,
}

impl Answer<'_> {
    /// Answers through the acknowledgement callback if the client sent one, else
    /// failures as `call:error`. Waits up to [`SEND_WAIT`] for room in the client's
    /// buffer; a client that never makes room is disconnected.
    async fn send<A: Adapter>(
        self,
        socket: &Arc<Socket<A>>,
        result: Result<Value, SignalError>,
        gone: &AtomicBool,
        state: &State,
    ) {
        let body = match (result, self.ack) {
            (Ok(value), Some(_)) => {
                let mut body = json!({ "ok": true });
                if let (Value::Object(body), Value::Object(fields)) = (&mut body, value) {
                    body.extend(fields);
                }
                body
            }
            (Ok(_), None) => return,
            (Err(error), Some(_)) => json!({ "ok": false, "error": error }),
            (Err(error), None) => {
                json!({ "error": error, "event": self.event, "callId": self.call_id })
            }
        };
        let until = Instant::now() + SEND_WAIT;
        loop {
            let sent = match self.ack {
                Some(id) => {
                    let mut none = socketioxide::handler::Value::Bytes(Default::default());
                    AckSender::from_message_parts(socket, &mut none, &Some(id))
                        .unwrap_or_else(|never| match never {})
                        .send(&body)
                }
                None => socket.emit(events::CALL_ERROR, &body),
            };
            match sent {
                Err(SendError::Socket(SocketError::InternalChannelFull))
                    if Instant::now() < until =>
                {
                    tokio::time::sleep(SEND_RETRY).await;
                }
                Err(SendError::Socket(SocketError::InternalChannelFull)) => {
                    drop_slow_consumer(socket.clone().into(), state);
                    return;
                }
                // Not connected yet (socketioxide marks a socket connected just
                // after sending CONNECT) rather than gone: the moment will pass.
                Err(SendError::Socket(SocketError::Closed))
                    if !gone.load(Ordering::SeqCst) && Instant::now() < until =>
                {
                    tokio::time::sleep(SEND_RETRY).await;
                }
                Ok(()) | Err(SendError::Socket(SocketError::Closed)) => return,
                Err(e) => {
                    tracing::error!(event = self.event, error = %e, "could not encode an answer");
                    return;
                }
            }
        }
    }
}
