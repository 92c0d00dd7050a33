//! Cluster mode's link to Redis: the pub/sub driver under socketioxide-redis's adapter.
//!
//! ## Why not socketioxide-redis's own driver
//! Its `RedisDriver` holds one `MultiplexedConnection`, made once. The redis crate's
//! multiplexed connection never reconnects: when Redis restarts, every later publish
//! fails and the subscriptions are gone for good, so the node would stay cut off from
//! the others until it restarts. This driver is the same code over the redis crate's
//! `ConnectionManager`, which reconnects with backoff and, with automatic resubscription
//! on, subscribes again to every channel it held before the connection broke.
//!
//! The manager reconnects when Redis closes the connection (a RESP3 disconnection push)
//! and when a command fails, but it gives up after a few attempts. A node with nothing to
//! publish would then never try again: [`RedisDriver::keep_alive`] sends a `PING` every
//! [`KEEPALIVE`], so a node is back within a second or two of Redis, whatever it does.
//!
//! ## RESP3
//! Subscriptions arrive as RESP3 push messages on the same multiplexed connection, so the
//! client must speak RESP3 (Redis 6+; the cluster spec asks for 7+). [`RedisDriver::connect`]
//! switches the client it is given to RESP3: `REDIS_URL` needs no `?protocol=resp3`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, FromRedisValue, ProtocolVersion, PushInfo, PushKind};
use socketioxide::adapter::Emitter;
use socketioxide_redis::CustomRedisAdapter;
use socketioxide_redis::drivers::{ChanItem, Driver, MessageStream};
use tokio::sync::mpsc;

/// The adapter of a clustered [`Signaling`](crate::Signaling).
pub(crate) type ClusterAdapter = CustomRedisAdapter<Emitter, RedisDriver>;

/// How long one attempt to connect to Redis may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a command waits for Redis's answer before it counts as failed.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest pause between two reconnection attempts.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(1);
/// How often an idle node checks that Redis is still there.
pub(crate) const KEEPALIVE: Duration = Duration::from_secs(1);

/// Why a clustered [`Signaling`](crate::Signaling) could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// Redis could not be reached, or refused the connection.
    #[error("cannot use Redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// The subscribed channels and where their messages go.
// A std lock: held only to look up or change the map, never across an await.
type Handlers = Arc<RwLock<HashMap<String, mpsc::Sender<ChanItem>>>>;

/// socketioxide-redis's pub/sub [`Driver`] over a reconnecting [`ConnectionManager`].
#[derive(Clone)]
pub(crate) struct RedisDriver {
    /// Commands and subscriptions share this one connection, re-made when it breaks.
    conn: ConnectionManager,
    /// Where each subscribed channel's messages go (the adapter's streams).
    handlers: Handlers,
}

impl std::fmt::Debug for RedisDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisDriver").finish_non_exhaustive()
    }
}

impl RedisDriver {
    /// Connects to the Redis of `client` (over RESP3, whatever the client asked for).
    pub async fn connect(client: &redis::Client) -> Result<Self, redis::RedisError> {
        let info = client.get_connection_info().clone();
        let settings = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        let client = redis::Client::open(info.set_redis_settings(settings))?;
        let handlers = Handlers::default();
        let route = handlers.clone();
        let config = ConnectionManagerConfig::new()
            .set_push_sender(move |push: PushInfo| {
                route_push(&route, push);
                Ok::<(), Infallible>(())
            })
            .set_automatic_resubscription()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_max_delay(MAX_RETRY_DELAY);
        let conn = client.get_connection_manager_with_config(config).await?;
        Ok(Self { conn, handlers })
    }

    /// Pings Redis every [`KEEPALIVE`] while `owner` lives, so that a broken connection
    /// is noticed and re-made (with its subscriptions) even when nothing is published.
    /// Says once when Redis becomes unreachable and once when it is back.
    pub fn keep_alive<T: Send + Sync + 'static>(&self, owner: Weak<T>) {
        let mut conn = self.conn.clone();
        tokio::spawn(async move {
            let mut reachable = true;
            loop {
                tokio::time::sleep(KEEPALIVE).await;
                if owner.strong_count() == 0 {
                    return;
                }
                let ping = redis::cmd("PING").query_async::<()>(&mut conn).await;
                match (ping, reachable) {
                    (Ok(()), false) => {
                        tracing::info!("Redis is reachable again");
                        reachable = true;
                    }
                    (Err(e), true) => {
                        tracing::warn!(error = %e, "Redis is unreachable: messages for other nodes are lost until it is back");
                        reachable = false;
                    }
                    _ => {}
                }
            }
        });
    }
}

/// Hands a pub/sub message to the stream of its channel. A full stream loses the
/// message (as socketioxide-redis's own driver does): the adapter reads it in a loop
/// of its own, through a stream of bounded size.
fn route_push(handlers: &Handlers, push: PushInfo) {
    if push.kind != PushKind::Message || push.data.len() < 2 {
        return;
    }
    let mut data = push.data.into_iter();
    let (Some(channel), Some(message)) = (data.next(), data.next()) else {
        return;
    };
    let (channel, message) = match (
        String::from_redis_value(channel),
        Vec::<u8>::from_redis_value(message),
    ) {
        (Ok(channel), Ok(message)) => (channel, message),
        _ => {
            tracing::error!("unreadable pub/sub message from Redis");
            return;
        }
    };
    let handlers = handlers.read().unwrap_or_else(|e| e.into_inner());
    match handlers.get(&channel) {
        Some(stream) => {
            if let Err(e) = stream.try_send((channel, message)) {
                tracing::warn!(error = %e, "message from another node lost: its stream is full");
            }
        }
        None => tracing::debug!(channel, "message for a channel no longer read"),
    }
}

impl Driver for RedisDriver {
    type Error = redis::RedisError;

    async fn publish(&self, chan: String, val: Vec<u8>) -> Result<(), Self::Error> {
        self.conn
            .clone()
            .publish::<_, _, redis::Value>(chan, val)
            .await?;
        Ok(())
    }

    /// Tries until Redis says yes: the adapter subscribes once, when the namespace is
    /// made, and the connection resubscribes after a reconnect only to the channels
    /// Redis had confirmed. (A node that started while Redis was away thus hears the
    /// others as soon as it is back.)
    async fn subscribe(
        &self,
        chan: String,
        size: usize,
    ) -> Result<MessageStream<ChanItem>, Self::Error> {
        // The handler goes in first: a message may arrive before SUBSCRIBE's answer.
        let (tx, rx) = mpsc::channel(size);
        self.handlers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(chan.clone(), tx);
        let mut said = false;
        while let Err(e) = self.conn.clone().subscribe(chan.as_str()).await {
            if !said {
                tracing::warn!(channel = chan, error = %e, "cannot subscribe to Redis yet: trying again");
                said = true;
            }
            tokio::time::sleep(KEEPALIVE).await;
        }
        Ok(MessageStream::new(rx))
    }

    async fn unsubscribe(&self, chan: String) -> Result<(), Self::Error> {
        self.handlers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&chan);
        self.conn.clone().unsubscribe(chan).await
    }

    async fn num_serv(&self, chan: &str) -> Result<u16, Self::Error> {
        let (_, count): (String, u16) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(chan)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(count)
    }
}
