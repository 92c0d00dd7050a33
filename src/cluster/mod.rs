//! Cluster mode (REDIS_URL): several nodes behind one address, sharing one
//! PostgreSQL and one Redis. Sockets of one user may be on different nodes
//! (`signaling`'s Socket.IO Redis adapter carries notices and relays between them);
//! this module keeps everything else that is live in step:
//!
//! - **Registry**: each node writes `huddle:node:<id>` (its load, `PX` [`LEASE`])
//!   every [`BEAT`]; a node whose key is gone is dead.
//! - **Rooms**: a call's SFU room lives on one node, which holds the lease
//!   `huddle:room:<call>` (set if absent, renewed every beat). Members' messages to
//!   `"sfu"` and recording orders go to the owner ([`placed::PlacedSfu`]); its offers
//!   reach members wherever they are connected, as notices, and its recordings are
//!   reported there (into the shared database and the cluster-wide signaling).
//! - **Changes**: every stored change to a call is published on `huddle:calls`, so
//!   each node's [`LiveCalls`] forgets what it knew and the room's owner applies it.
//! - **Presence**: `huddle:presence:<user>` is the set of nodes holding a socket of
//!   the user; a user is away only when no live node does.
//! - **Loss**: a node that sees another's registry key gone reaps it (once, under
//!   `huddle:reap:<id>`): its rooms' members get `call:media_restart` and its users
//!   without a socket elsewhere are away (their deadline is stored with the call).
//! - **Sweeper**: only the holder of `huddle:sweeper` applies timeouts.

pub mod placed;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, ProtocolVersion, PushInfo, PushKind, Script};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use signaling::Signaling;
use signaling::events::Notice;
use tokio::sync::{mpsc, oneshot};

use crate::calls::events::CallEvent;
use crate::calls::lifecycle::CallSnapshot;
use crate::calls::model::{CallId, MediaMode, UserId};
use crate::calls::service::{CallService, ServiceError};
use crate::live::LiveCalls;
use crate::media::MediaPlane;
use crate::media::sfu::SfuPlane;
use crate::wire::Failure;

/// How often a node writes its registry key and renews its leases.
pub const BEAT: Duration = Duration::from_secs(1);
/// How long a registry key or a lease lives without renewal: a node that stops
/// beating is dead, and its rooms free, within this.
pub const LEASE: Duration = Duration::from_secs(3);
/// How long a node must have been talking to Redis before it reaps others: after a
/// Redis restart every live node writes its key again within a beat.
const SETTLED: Duration = Duration::from_secs(5);
/// How long a member's message forwarded to a room's owner waits for its answer.
const FORWARD_WAIT: Duration = Duration::from_secs(3);
/// How long a node trusts what it knows of a call without news of it (news of
/// other nodes' changes travels through Redis, and can be lost while it restarts).
pub const TRUST_CACHED_CALLS: Duration = Duration::from_secs(5);
/// Every how many beats a node checks that the calls of its rooms are still live.
const PRUNE_EVERY: u64 = 10;
/// The channel every node hears call changes on.
const CHANGES: &str = "huddle:calls";

/// Cluster mode could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("REDIS_URL: {0}")]
    Redis(#[from] redis::RedisError),
}

/// What a node publishes about itself every beat.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeInfo {
    pub id: String,
    /// Rooms this node owns.
    pub rooms: usize,
    /// Joined members of those rooms' calls.
    pub participants: usize,
    /// Shutting down: takes no new rooms.
    pub draining: bool,
    /// Where its SFU receives media.
    #[schema(value_type = String)]
    pub media: SocketAddr,
}

/// A message between nodes, on `huddle:calls` or a node's own channel.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Message {
    /// Call `call` changed on node `from` (now at `version`); the room's owner
    /// applies `room`.
    Changed {
        from: String,
        call: CallId,
        version: i64,
        room: Vec<RoomChange>,
    },
    /// A member's message for the room of `call`, for its owner; answered with
    /// [`Message::Answer`] to `from`.
    Signal {
        from: String,
        id: u64,
        call: CallId,
        user: UserId,
        message: placed::Forwarded,
    },
    /// A recording order for the room of `call`, for its owner; answered with
    /// [`Message::Answer`] (`null`) to `from`.
    Record {
        from: String,
        id: u64,
        call: CallId,
        order: placed::ForwardedOrder,
    },
    /// The owner's answer to [`Message::Signal`] or [`Message::Record`] `id`.
    Answer {
        id: u64,
        result: Result<Value, placed::WireFailure>,
    },
}

/// What a call change means for its room.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum RoomChange {
    Left {
        user: UserId,
    },
    Switches {
        user: UserId,
        audio: bool,
        video: bool,
        screen_share: bool,
    },
    Ended,
}

/// This node's part in the cluster.
pub struct Cluster {
    node: String,
    redis: ConnectionManager,
    media: SocketAddr,
    signaling: Signaling,
    live: Arc<LiveCalls>,
    sfu: Arc<SfuPlane>,
    /// Rooms this node owns: their leases are renewed every beat.
    owned: Mutex<HashSet<CallId>>,
    /// Users with a socket on this node, as told to Redis.
    here: Mutex<HashSet<UserId>>,
    draining: AtomicBool,
    /// Whether this node holds the sweeper's lease.
    sweeper: AtomicBool,
    /// Whether this node has been in the registry (a later beat that adds it again
    /// finds that Redis lost its state).
    registered: AtomicBool,
    /// Since when Redis has answered every beat (`None`: the last beat failed).
    healthy_since: Mutex<Option<Instant>>,
    /// Answers awaited from other nodes, by request number.
    waiting: Mutex<HashMap<u64, oneshot::Sender<Result<Value, placed::WireFailure>>>>,
    next_request: AtomicU64,
    /// Call changes to publish, in the order they were stored.
    outbox: mpsc::UnboundedSender<Message>,
    /// What Redis pushes (pub/sub messages), until [`Cluster::run`] listens.
    pushed: Mutex<Option<mpsc::UnboundedReceiver<PushInfo>>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn node_key(node: &str) -> String {
    format!("huddle:node:{node}")
}
fn room_key(call: CallId) -> String {
    format!("huddle:room:{call}")
}
fn rooms_of(node: &str) -> String {
    format!("huddle:node:{node}:rooms")
}
fn users_of(node: &str) -> String {
    format!("huddle:node:{node}:users")
}
fn presence_key(user: &UserId) -> String {
    format!("huddle:presence:{}", user.0)
}
fn inbox(node: &str) -> String {
    format!("huddle:to:{node}")
}
const NODES: &str = "huddle:nodes";
const SWEEPER: &str = "huddle:sweeper";

/// Sets `KEYS[1]` to `ARGV[1]` for `ARGV[2]` ms if it is unset or already
/// `ARGV[1]`'s; returns the holder.
const CLAIM: &str = r"
local holder = redis.call('GET', KEYS[1])
if not holder or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return ARGV[1]
end
return holder";

/// Deletes `KEYS[1]` if `ARGV[1]` holds it; returns whether it did or it was unset.
const RELEASE: &str = r"
local holder = redis.call('GET', KEYS[1])
if not holder then return 1 end
if holder == ARGV[1] then redis.call('DEL', KEYS[1]) return 1 end
return 0";

/// The Redis client for REDIS_URL, speaking RESP3 (pushes carry pub/sub messages on
/// the same connection, which resubscribes by itself after a reconnect).
pub fn redis_client(url: &str) -> Result<redis::Client, ClusterError> {
    use redis::IntoConnectionInfo;
    let info = url.into_connection_info()?;
    let settings = info
        .redis_settings()
        .clone()
        .set_protocol(ProtocolVersion::RESP3);
    Ok(redis::Client::open(info.set_redis_settings(settings))?)
}

impl Cluster {
    /// Connects to Redis and subscribes to the cluster's channels; nothing is
    /// registered until [`Cluster::run`].
    pub async fn connect(
        client: &redis::Client,
        node: String,
        signaling: Signaling,
        live: Arc<LiveCalls>,
        sfu: Arc<SfuPlane>,
    ) -> Result<Arc<Cluster>, ClusterError> {
        let (pushes, pushed) = mpsc::unbounded_channel::<PushInfo>();
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_max_delay(Duration::from_millis(500))
            .set_automatic_resubscription()
            .set_push_sender(pushes);
        let mut redis = client.get_connection_manager_with_config(config).await?;
        redis.subscribe(&[CHANGES, &inbox(&node)]).await?;
        let (outbox, outgoing) = mpsc::unbounded_channel();
        tokio::spawn(publish(redis.clone(), outgoing));
        Ok(Arc::new(Cluster {
            media: sfu.sfu.announced(),
            node,
            redis,
            signaling,
            live,
            sfu,
            owned: Mutex::default(),
            here: Mutex::default(),
            draining: AtomicBool::new(false),
            sweeper: AtomicBool::new(false),
            registered: AtomicBool::new(false),
            healthy_since: Mutex::new(Some(Instant::now())),
            waiting: Mutex::default(),
            next_request: AtomicU64::new(1),
            outbox,
            pushed: Mutex::new(Some(pushed)),
        }))
    }

    /// Takes this node's place: clears what a previous process with this node id
    /// left (its rooms restart, its users are away unless connected elsewhere),
    /// registers, and starts beating and hearing other nodes.
    pub async fn run(self: &Arc<Self>, service: Arc<CallService>) -> Result<(), ClusterError> {
        let stale = self.reap(&self.node, &service).await?;
        if stale > 0 {
            tracing::info!(
                rooms = stale,
                "took over from an earlier process with this NODE_ID"
            );
        }
        self.beat().await?;
        tokio::spawn(beat(Arc::downgrade(self), service.clone()));
        if let Some(mut pushed) = lock(&self.pushed).take() {
            let cluster = Arc::downgrade(self);
            tokio::spawn(async move {
                while let Some(push) = pushed.recv().await {
                    let Some(cluster) = cluster.upgrade() else {
                        return;
                    };
                    if let Some(message) = message_of(push) {
                        cluster.heard(message, &service).await;
                    }
                }
            });
        }
        tracing::info!(node = %self.node, "joined the cluster");
        Ok(())
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// Whether this node applies the timeout rules now.
    pub fn sweeps(&self) -> bool {
        self.sweeper.load(Ordering::SeqCst)
    }

    fn owns(&self, call: CallId) -> bool {
        lock(&self.owned).contains(&call)
    }

    fn conn(&self) -> ConnectionManager {
        self.redis.clone()
    }

    /// Announces a stored change to the other nodes (in order, in the background).
    pub fn call_changed(&self, call: &CallSnapshot, events: &[CallEvent]) {
        let room = if call.call.media_mode == MediaMode::Sfu {
            room_changes(call, events)
        } else {
            Vec::new()
        };
        let _ = self.outbox.send(Message::Changed {
            from: self.node.clone(),
            call: call.call.id,
            version: call.call.version,
            room,
        });
    }

    /// A message from another node (or this one, on `huddle:calls`).
    async fn heard(self: &Arc<Self>, message: Message, service: &Arc<CallService>) {
        match message {
            Message::Changed {
                from,
                call,
                version,
                room,
            } => {
                if from == self.node {
                    return;
                }
                self.live.forget(call, version);
                if self.owns(call) {
                    for change in &room {
                        self.apply(call, change);
                    }
                    if room.iter().any(|c| matches!(c, RoomChange::Ended)) {
                        self.release(call).await;
                    }
                }
            }
            Message::Signal {
                from,
                id,
                call,
                user,
                message,
            } => {
                let (this, service) = (self.clone(), service.clone());
                self.answer(from, id, async move {
                    this.serve(&service, call, &user, message).await
                });
            }
            Message::Record {
                from,
                id,
                call,
                order,
            } => {
                let (this, service) = (self.clone(), service.clone());
                self.answer(from, id, async move {
                    this.record(&service, call, order)
                        .await
                        .map(|()| Value::Null)
                });
            }
            Message::Answer { id, result } => {
                if let Some(waiter) = lock(&self.waiting).remove(&id) {
                    let _ = waiter.send(result);
                }
            }
        }
    }

    /// Carries out a request from node `from` in the background and sends it the
    /// result as [`Message::Answer`] `id`.
    fn answer(
        self: &Arc<Self>,
        from: String,
        id: u64,
        request: impl Future<Output = Result<Value, Failure>> + Send + 'static,
    ) {
        let this = self.clone();
        tokio::spawn(async move {
            let result = request.await.map_err(placed::WireFailure::from);
            let answer = Message::Answer { id, result };
            if let Err(e) = this.send_to(&from, &answer).await {
                tracing::warn!(to = %from, error = %e, "answer to a node not sent");
            }
        });
    }

    /// Applies a change to `call` heard from another node (this node owns its room).
    fn apply(&self, call: CallId, change: &RoomChange) {
        match change {
            RoomChange::Left { user } => self.sfu.leave(call, user),
            RoomChange::Switches {
                user,
                audio,
                video,
                screen_share,
            } => self
                .sfu
                .set_switches(call, user, [*audio, *video, *screen_share]),
            RoomChange::Ended => self.sfu.close(call),
        }
    }

    /// Carries out a member's message forwarded by another node: this node must own
    /// the room, or take it if nobody does.
    async fn serve(
        &self,
        service: &CallService,
        call: CallId,
        user: &UserId,
        message: placed::Forwarded,
    ) -> Result<Value, Failure> {
        let snapshot = self.live.joined(service, user, call).await?;
        tracing::debug!(%call, %user, owned = self.owns(call), "forwarded message for a room");
        self.hold(call).await?;
        self.sfu.signal(&snapshot, user, message.into()).await
    }

    /// Carries out a recording order forwarded by another node (whose recording
    /// service checked who may give it) as [`Cluster::serve`] does a message.
    async fn record(
        &self,
        service: &CallService,
        call: CallId,
        order: placed::ForwardedOrder,
    ) -> Result<(), Failure> {
        let snapshot = match self.live.peek(call) {
            Some(snapshot) => snapshot,
            None => {
                let stored = service.store().load(call).await;
                let snapshot = stored.map_err(ServiceError::from)?;
                Arc::new(snapshot.ok_or(ServiceError::NotFound)?)
            }
        };
        tracing::debug!(%call, owned = self.owns(call), "forwarded recording order");
        self.hold(call).await?;
        self.sfu.recording(&snapshot, order.into()).await.map(drop)
    }

    /// Makes sure this node owns `call`'s room, taking it if nobody does.
    async fn hold(&self, call: CallId) -> Result<(), Failure> {
        if self.owns(call) || self.claim(call).await? {
            Ok(())
        } else {
            Err(placed::unavailable("the call's media moved: try again"))
        }
    }

    async fn send_to(&self, node: &str, message: &Message) -> redis::RedisResult<()> {
        let text = serde_json::to_string(message).expect("messages serialize");
        self.conn().publish::<_, _, ()>(inbox(node), text).await
    }

    /// Sends a member's message to `node`, the room's owner (or the node chosen to
    /// be), and waits for its answer.
    async fn forward(
        &self,
        node: &str,
        call: CallId,
        user: &UserId,
        message: placed::Forwarded,
    ) -> Result<Value, Failure> {
        self.ask(node, |from, id| Message::Signal {
            from,
            id,
            call,
            user: user.clone(),
            message,
        })
        .await
    }

    /// Sends a recording order to `node`, the room's owner (or the node chosen to
    /// be), and waits for its answer.
    async fn forward_recording(
        &self,
        node: &str,
        call: CallId,
        order: placed::ForwardedOrder,
    ) -> Result<(), Failure> {
        self.ask(node, |from, id| Message::Record {
            from,
            id,
            call,
            order,
        })
        .await
        .map(drop)
    }

    /// Sends `node` the request `request(this node, request number)` and waits for
    /// its [`Message::Answer`].
    async fn ask(
        &self,
        node: &str,
        request: impl FnOnce(String, u64) -> Message,
    ) -> Result<Value, Failure> {
        let id = self.next_request.fetch_add(1, Ordering::Relaxed);
        let (answered, answer) = oneshot::channel();
        lock(&self.waiting).insert(id, answered);
        let request = request(self.node.clone(), id);
        let sent = self.send_to(node, &request).await;
        let result = match sent {
            Ok(()) => tokio::time::timeout(FORWARD_WAIT, answer).await,
            Err(e) => {
                lock(&self.waiting).remove(&id);
                return Err(placed::unavailable(format!("cluster unreachable: {e}")));
            }
        };
        lock(&self.waiting).remove(&id);
        match result {
            Ok(Ok(answer)) => answer.map_err(Failure::from),
            _ => Err(placed::unavailable(format!(
                "node {node}, which has this call's media, did not answer: try again"
            ))),
        }
    }

    /// Whether `node` is this one or has beaten within [`LEASE`].
    async fn is_alive(&self, node: &str) -> Result<bool, Failure> {
        if node == self.node {
            return Ok(true);
        }
        self.conn()
            .exists(node_key(node))
            .await
            .map_err(|e| placed::unavailable(format!("cluster unreachable: {e}")))
    }

    /// The node owning `call`'s room, if any.
    async fn owner(&self, call: CallId) -> Result<Option<String>, Failure> {
        self.conn()
            .get(room_key(call))
            .await
            .map_err(|e| placed::unavailable(format!("cluster unreachable: {e}")))
    }

    /// Takes `call`'s room unless another node holds it; whether this node owns it.
    async fn claim(&self, call: CallId) -> Result<bool, Failure> {
        if self.draining.load(Ordering::SeqCst) {
            return Ok(false);
        }
        let holder: String = Script::new(CLAIM)
            .key(room_key(call))
            .arg(&self.node)
            .arg(LEASE.as_millis() as u64)
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| placed::unavailable(format!("cluster unreachable: {e}")))?;
        if holder != self.node {
            return Ok(false);
        }
        lock(&self.owned).insert(call);
        let _: Result<(), _> = self
            .conn()
            .sadd(rooms_of(&self.node), call.to_string())
            .await;
        Ok(true)
    }

    /// Gives up `call`'s room (it ended, or this node is leaving).
    async fn release(&self, call: CallId) {
        lock(&self.owned).remove(&call);
        let mut conn = self.conn();
        let released: redis::RedisResult<i64> = Script::new(RELEASE)
            .key(room_key(call))
            .arg(&self.node)
            .invoke_async(&mut conn)
            .await;
        let removed: redis::RedisResult<i64> =
            conn.srem(rooms_of(&self.node), call.to_string()).await;
        if let Err(e) = released.and(removed) {
            tracing::warn!(%call, error = %e, "room lease not released (it expires)");
        }
    }

    /// The live nodes, from the registry.
    pub async fn nodes(&self) -> redis::RedisResult<Vec<NodeInfo>> {
        let mut conn = self.conn();
        let ids: Vec<String> = conn.smembers(NODES).await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids.iter().map(|id| node_key(id)).collect();
        let infos: Vec<Option<String>> =
            redis::cmd("MGET").arg(&keys).query_async(&mut conn).await?;
        Ok(infos
            .into_iter()
            .flatten()
            .filter_map(|text| serde_json::from_str(&text).ok())
            .collect())
    }

    /// The node a new room should go to: the least loaded live one taking rooms.
    async fn place(&self, call: CallId) -> Result<String, Failure> {
        let nodes = self
            .nodes()
            .await
            .map_err(|e| placed::unavailable(format!("cluster unreachable: {e}")))?;
        nodes
            .into_iter()
            .filter(|n| !n.draining)
            .min_by_key(|n| (n.participants, n.rooms, spread(call, &n.id)))
            .map(|n| n.id)
            .ok_or_else(|| placed::unavailable("no node takes rooms now: try again"))
    }

    /// Writes this node's registry key, renews its leases and sweeper lease, and
    /// reaps nodes that stopped beating.
    async fn beat(&self) -> redis::RedisResult<()> {
        let owned: Vec<CallId> = lock(&self.owned).iter().copied().collect();
        let participants = owned
            .iter()
            .filter_map(|call| self.live.peek(*call))
            .map(|call| call.joined_count())
            .sum();
        let info = NodeInfo {
            id: self.node.clone(),
            rooms: owned.len(),
            participants,
            draining: self.draining.load(Ordering::SeqCst),
            media: self.media,
        };
        let mut conn = self.conn();
        let ttl = LEASE.as_millis() as u64;
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(node_key(&self.node))
            .arg(serde_json::to_string(&info).expect("node info serializes"))
            .arg("PX")
            .arg(ttl)
            .ignore()
            .sadd(NODES, &self.node);
        let (added,): (i64,) = pipe.query_async(&mut conn).await?;
        if added == 1 && self.registered.swap(true, Ordering::SeqCst) {
            // Redis lost what this node had told it (it restarted empty): tell again.
            tracing::warn!("Redis lost this node's state: writing it again");
            self.tell_again(&mut conn, &owned).await?;
        }
        for call in owned {
            let holder: String = Script::new(CLAIM)
                .key(room_key(call))
                .arg(&self.node)
                .arg(ttl)
                .invoke_async(&mut conn)
                .await?;
            if holder != self.node {
                // Another node took the room (this one was thought dead): let go.
                tracing::warn!(%call, owner = %holder, "room taken over by another node");
                lock(&self.owned).remove(&call);
                self.sfu.close(call);
            }
        }
        let holder: String = Script::new(CLAIM)
            .key(SWEEPER)
            .arg(&self.node)
            .arg(ttl)
            .invoke_async(&mut conn)
            .await?;
        self.sweeper.store(
            holder == self.node && !self.draining.load(Ordering::SeqCst),
            Ordering::SeqCst,
        );
        Ok(())
    }

    /// Writes again who is connected here and which rooms this node has.
    async fn tell_again(
        &self,
        conn: &mut ConnectionManager,
        owned: &[CallId],
    ) -> redis::RedisResult<()> {
        let users: Vec<UserId> = lock(&self.here).iter().cloned().collect();
        let mut pipe = redis::pipe();
        for user in &users {
            pipe.sadd(presence_key(user), &self.node)
                .ignore()
                .sadd(users_of(&self.node), &user.0)
                .ignore();
        }
        for call in owned {
            pipe.sadd(rooms_of(&self.node), call.to_string()).ignore();
        }
        pipe.query_async(conn).await
    }

    /// Closes the rooms of calls that have ended without this node hearing of it
    /// (news lost while Redis restarted), and gives up their leases.
    async fn prune(&self, service: &CallService) {
        let owned: Vec<CallId> = lock(&self.owned).iter().copied().collect();
        for call in owned {
            match service.store().load(call).await {
                Ok(Some(c)) if c.call.state.is_active() => {}
                Ok(_) => {
                    tracing::info!(%call, "closing the room of a call that ended");
                    self.sfu.close(call);
                    self.release(call).await;
                }
                Err(e) => tracing::debug!(%call, error = %e, "room not checked"),
            }
        }
    }

    /// Looks for nodes that stopped beating and reaps each once, cluster-wide.
    async fn reap_dead(&self, service: &CallService) -> Result<(), ClusterError> {
        let settled = lock(&self.healthy_since).is_some_and(|since| since.elapsed() >= SETTLED);
        if !settled {
            return Ok(());
        }
        let mut conn = self.conn();
        let ids: Vec<String> = conn.smembers(NODES).await?;
        for id in ids.into_iter().filter(|id| *id != self.node) {
            let alive: bool = conn.exists(node_key(&id)).await?;
            if alive {
                continue;
            }
            let mine: Option<String> = redis::cmd("SET")
                .arg(format!("huddle:reap:{id}"))
                .arg(&self.node)
                .arg("NX")
                .arg("PX")
                .arg(10_000)
                .query_async(&mut conn)
                .await?;
            if mine.is_some() {
                let rooms = self.reap(&id, service).await?;
                tracing::warn!(node = %id, rooms, "node lost: its rooms restart elsewhere");
            }
        }
        Ok(())
    }

    /// Clears what dead `node` held: members of its rooms restart their media (the
    /// rooms move when they publish again), and its users with no socket on a live
    /// node are away. Returns how many rooms it had.
    async fn reap(&self, node: &str, service: &CallService) -> Result<usize, ClusterError> {
        let mut conn = self.conn();
        let rooms: Vec<String> = conn.smembers(rooms_of(node)).await?;
        for call in rooms.iter().filter_map(|c| c.parse::<CallId>().ok()) {
            let _: i64 = Script::new(RELEASE)
                .key(room_key(call))
                .arg(node)
                .invoke_async(&mut conn)
                .await?;
            self.restart_media(service, call, "node_lost").await;
        }
        let users: Vec<String> = conn.smembers(users_of(node)).await?;
        for user in users.into_iter().map(UserId) {
            let _: i64 = conn.srem(presence_key(&user), node).await?;
            if !self.connected_anywhere(&user).await? {
                if let Err(e) = service.away(&user).await {
                    tracing::warn!(%user, error = %e, "user of a lost node not marked away");
                }
            }
        }
        let mut pipe = redis::pipe();
        pipe.del(rooms_of(node))
            .ignore()
            .del(users_of(node))
            .ignore()
            .srem(NODES, node)
            .ignore();
        pipe.query_async::<()>(&mut conn).await?;
        Ok(rooms.len())
    }

    /// Tells the joined members of live `sfu` call `call` to publish and subscribe
    /// again (`call:media_restart`).
    async fn restart_media(&self, service: &CallService, call: CallId, reason: &str) {
        let snapshot = match service.store().load(call).await {
            Ok(Some(snapshot)) => snapshot,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(%call, error = %e, "media restart not announced");
                return;
            }
        };
        if !snapshot.call.state.is_active() || snapshot.call.media_mode != MediaMode::Sfu {
            return;
        }
        let members = snapshot
            .participants
            .iter()
            .filter(|p| p.is_joined())
            .map(|p| p.user_id.0.clone())
            .collect();
        self.signaling.notify(
            members,
            Notice::MediaRestart {
                call_id: call.to_string(),
                reason: reason.to_owned(),
            },
        );
    }

    /// Whether a live node holds a socket of `user`.
    pub async fn connected_anywhere(&self, user: &UserId) -> redis::RedisResult<bool> {
        let mut conn = self.conn();
        let holders: Vec<String> = conn.smembers(presence_key(user)).await?;
        for node in holders {
            if node == self.node || conn.exists::<_, bool>(node_key(&node)).await? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// This node's first socket of `user` opened.
    pub async fn user_here(&self, user: &UserId) -> redis::RedisResult<()> {
        lock(&self.here).insert(user.clone());
        let mut pipe = redis::pipe();
        pipe.sadd(presence_key(user), &self.node)
            .ignore()
            .sadd(users_of(&self.node), &user.0)
            .ignore();
        pipe.query_async(&mut self.conn()).await
    }

    /// This node's last socket of `user` closed; whether they are still connected to
    /// another live node.
    pub async fn user_gone(&self, user: &UserId) -> redis::RedisResult<bool> {
        lock(&self.here).remove(user);
        let mut pipe = redis::pipe();
        pipe.srem(presence_key(user), &self.node)
            .ignore()
            .srem(users_of(&self.node), &user.0)
            .ignore();
        pipe.query_async::<()>(&mut self.conn()).await?;
        self.connected_anywhere(user).await
    }

    /// Shutting down: takes no new rooms, and moves the ones it has (their members
    /// restart media and the rooms are placed on other nodes).
    pub async fn drain(&self, service: &CallService) {
        self.draining.store(true, Ordering::SeqCst);
        self.sweeper.store(false, Ordering::SeqCst);
        if let Err(e) = self.beat().await {
            tracing::warn!(error = %e, "could not tell the cluster this node is draining");
        }
        let _: redis::RedisResult<i64> = Script::new(RELEASE)
            .key(SWEEPER)
            .arg(&self.node)
            .invoke_async(&mut self.conn())
            .await;
        let owned: Vec<CallId> = lock(&self.owned).iter().copied().collect();
        for call in owned {
            self.release(call).await;
            self.sfu.close(call);
            self.restart_media(service, call, "node_draining").await;
        }
    }

    /// Leaves the registry after this node's sockets have closed: users with no
    /// socket on another node are away (CONNECTION_TIMEOUT to come back elsewhere).
    pub async fn leave(&self, service: &CallService) {
        let mut conn = self.conn();
        let users: Vec<String> = conn
            .smembers(users_of(&self.node))
            .await
            .unwrap_or_default();
        for user in users.into_iter().map(UserId) {
            match self.user_gone(&user).await {
                Ok(false) => {
                    if let Err(e) = service.away(&user).await {
                        tracing::warn!(%user, error = %e, "user not marked away at shutdown");
                    }
                }
                Ok(true) => {}
                Err(e) => tracing::warn!(%user, error = %e, "presence not updated at shutdown"),
            }
        }
        let mut pipe = redis::pipe();
        pipe.del(node_key(&self.node))
            .ignore()
            .del(rooms_of(&self.node))
            .ignore()
            .del(users_of(&self.node))
            .ignore()
            .srem(NODES, &self.node)
            .ignore();
        if let Err(e) = pipe.query_async::<()>(&mut conn).await {
            tracing::warn!(error = %e, "could not leave the cluster registry (it expires)");
        }
    }
}

/// Beats every [`BEAT`] while the cluster exists and is not draining: registry,
/// leases, reaping.
async fn beat(cluster: std::sync::Weak<Cluster>, service: Arc<CallService>) {
    let mut ticks = tokio::time::interval(BEAT);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for beat in 1u64.. {
        ticks.tick().await;
        let Some(cluster) = cluster.upgrade() else {
            return;
        };
        if cluster.draining.load(Ordering::SeqCst) {
            continue;
        }
        if beat % PRUNE_EVERY == 0 {
            cluster.prune(&service).await;
        }
        match cluster.beat().await {
            Ok(()) => {
                lock(&cluster.healthy_since).get_or_insert_with(Instant::now);
                if let Err(e) = cluster.reap_dead(&service).await {
                    tracing::warn!(error = %e, "looking for lost nodes failed");
                }
            }
            Err(e) => {
                if lock(&cluster.healthy_since).take().is_some() {
                    tracing::error!(error = %e, "Redis unreachable: cluster state is not kept until it is back");
                }
                cluster.sweeper.store(false, Ordering::SeqCst);
            }
        }
    }
}

/// Keeps the embedded TURN server's relays able to reach every live node's media
/// port (its own SFU they always reach), as the registry lists them, every [`BEAT`].
pub async fn open_relays_to_nodes(cluster: Arc<Cluster>, turn: Arc<huddle_turn::TurnServer>) {
    let mut ticks = tokio::time::interval(BEAT);
    let mut known = Vec::new();
    loop {
        ticks.tick().await;
        let Ok(nodes) = cluster.nodes().await else {
            continue; // Redis unreachable: keep what was known
        };
        let mut media: Vec<SocketAddr> = nodes
            .into_iter()
            .filter(|n| n.id != cluster.node)
            .map(|n| n.media)
            .collect();
        media.sort();
        if media != known {
            tracing::debug!(?media, "TURN relays may reach these nodes' media ports");
            turn.reach_services(media.clone());
            known = media;
        }
    }
}

/// Publishes call changes in order; one that cannot be published is logged (other
/// nodes' caches of the call then expire by age).
async fn publish(mut redis: ConnectionManager, mut outgoing: mpsc::UnboundedReceiver<Message>) {
    while let Some(message) = outgoing.recv().await {
        let text = serde_json::to_string(&message).expect("messages serialize");
        if let Err(e) = redis.publish::<_, _, ()>(CHANGES, text).await {
            tracing::debug!(error = %e, "call change not published");
        }
    }
}

/// A pub/sub message pushed by Redis, if it is one of ours.
fn message_of(push: PushInfo) -> Option<Message> {
    if push.kind != PushKind::Message {
        return None;
    }
    let payload = push.data.get(1)?;
    let text: String = redis::from_redis_value_ref(payload).ok()?;
    serde_json::from_str(&text)
        .inspect_err(|e| tracing::warn!(error = %e, "unreadable cluster message"))
        .ok()
}

/// What `events` mean for the room of `call`.
fn room_changes(call: &CallSnapshot, events: &[CallEvent]) -> Vec<RoomChange> {
    events
        .iter()
        .filter_map(|event| match event {
            CallEvent::Left { user } => Some(RoomChange::Left { user: user.clone() }),
            CallEvent::Updated { user } => call.member(user).map(|p| RoomChange::Switches {
                user: user.clone(),
                audio: p.audio_enabled,
                video: p.video_enabled,
                screen_share: p.screen_share_enabled,
            }),
            CallEvent::Ended { .. } => Some(RoomChange::Ended),
            _ => None,
        })
        .collect()
}

/// A tie-breaker that spreads equally loaded choices over nodes, stable per call.
fn spread(call: CallId, node: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (call, node).hash(&mut hasher);
    hasher.finish()
}
