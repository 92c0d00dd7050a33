//! The Socket.IO server: authentication, dispatch of client events, `webrtc:*`
//! relay, ordered delivery of notices, presence.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use socketioxide::SocketIo;
use socketioxide::adapter::LocalAdapter;
use socketioxide::extract::{AckSender, Event, SocketRef, TryData};
use socketioxide::handler::{ConnectHandler, FromMessageParts};
use socketioxide::layer::SocketIoLayer;
use socketioxide::socket::Socket;
use tokio::sync::mpsc;

use crate::events::{self, Notice, Relay, SfuMessage};
use crate::presence::Presence;
use crate::{CallDomain, SignalError, User};

/// Largest Socket.IO message accepted from a client, with room for a maximal relay.
const MAX_MESSAGE_BYTES: usize = 2 * events::MAX_RELAY_BYTES;

/// Settings of the signaling server.
#[derive(Debug, Clone, Copy)]
pub struct SignalingConfig {
    /// How long a user whose sockets all dropped stays in their calls (CONNECTION_TIMEOUT).
    pub grace: Duration,
}

/// Handle to the Socket.IO server: attach handlers with [`Signaling::start`], send
/// notices with [`Signaling::notify`]. Cheap to clone.
#[derive(Clone)]
pub struct Signaling {
    io: SocketIo,
    /// Notices waiting to be broadcast, in the order they were produced.
    outbox: mpsc::UnboundedSender<(Vec<String>, Notice)>,
    presence: Arc<Presence>,
    /// Set once shutdown begins: sockets closing then are not users leaving.
    closing: Arc<AtomicBool>,
    config: SignalingConfig,
}

impl std::fmt::Debug for Signaling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signaling")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The room every socket of `user` is in.
fn user_room(user: &str) -> String {
    format!("user:{user}")
}

impl Signaling {
    /// A Socket.IO server, and the tower layer that serves it at `/socket.io/`.
    /// Must be called within a Tokio runtime (it starts the delivery task).
    pub fn new(config: SignalingConfig) -> (SocketIoLayer, Self) {
        // Client messages are small (relays are capped at 64 KiB): refuse anything
        // larger at the transport, and keep per-connection buffers small so that idle
        // connections are cheap.
        let (layer, io) = SocketIo::builder()
            .max_payload(MAX_MESSAGE_BYTES as u64)
            .ws_max_message_size(MAX_MESSAGE_BYTES)
            .ws_max_frame_size(MAX_MESSAGE_BYTES)
            .ws_read_buffer_size(1024)
            .max_buffer_size(64)
            .build_layer();
        let (outbox, mut queue) = mpsc::unbounded_channel::<(Vec<String>, Notice)>();
        let delivery_io = io.clone();
        tokio::spawn(async move {
            while let Some((users, notice)) = queue.recv().await {
                let rooms: Vec<String> = users.iter().map(|u| user_room(u)).collect();
                if let Err(e) = delivery_io.to(rooms).emit(notice.event(), &notice).await {
                    tracing::warn!(event = notice.event(), error = %e, "notice not delivered");
                }
            }
        });
        let signaling = Signaling {
            io,
            outbox,
            presence: Arc::default(),
            closing: Arc::default(),
            config,
        };
        (layer, signaling)
    }

    /// Starts accepting sockets on the default namespace, served by `domain`.
    pub fn start<D: CallDomain>(&self, domain: Arc<D>) {
        let auth_domain = domain.clone();
        let this = self.clone();
        let on_connect = move |socket: SocketRef| {
            let (this, domain) = (this.clone(), domain.clone());
            async move { this.connected(socket, domain) }
        };
        let authenticate = move |socket: SocketRef, auth: TryData<Value>| {
            let domain = auth_domain.clone();
            async move { authenticate(&*domain, &socket, auth.0.ok()) }
        };
        self.io.ns("/", on_connect.with(authenticate));
    }

    /// Sends `notice` to every socket of each of `users`, after the notices sent before it.
    pub fn notify(&self, users: Vec<String>, notice: Notice) {
        if self.outbox.send((users, notice)).is_err() {
            tracing::warn!("notice dropped: the delivery task has stopped");
        }
    }

    /// Disconnects every socket (without counting their users as gone).
    pub async fn close(&self) {
        self.closing.store(true, Ordering::SeqCst);
        self.io.close().await;
    }

    fn connected<D: CallDomain>(&self, socket: SocketRef, domain: Arc<D>) {
        let Some(user) = socket.extensions.get::<User>() else {
            return;
        };
        socket.join(user_room(&user.id));
        self.presence.connected(&user.id);
        let handler_user = user.clone();
        let handler_domain = domain.clone();
        socket.on_fallback(
            move |socket: SocketRef, Event(event): Event, data: TryData<Value>, reply: Reply| {
                let (user, domain) = (handler_user.clone(), handler_domain.clone());
                async move {
                    let data = data.0.unwrap_or(Value::Null);
                    let call_id = data
                        .get("callId")
                        .and_then(Value::as_str)
                        .map(str::to_owned);
                    let result = dispatch(&*domain, &socket, &user, &event, data).await;
                    reply.answer(&socket, &event, call_id.as_deref(), result);
                }
            },
        );
        let this = self.clone();
        socket.on_disconnect(move || {
            let (this, user, domain) = (this.clone(), user.clone(), domain.clone());
            async move { this.disconnected(user, domain) }
        });
    }

    fn disconnected<D: CallDomain>(&self, user: User, domain: Arc<D>) {
        let Some(epoch) = self.presence.disconnected(&user.id) else {
            return;
        };
        let (presence, closing, grace) = (
            self.presence.clone(),
            self.closing.clone(),
            self.config.grace,
        );
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            if presence.still_gone(&user.id, epoch) && !closing.load(Ordering::SeqCst) {
                domain.user_gone(&user).await;
            }
        });
    }
}

/// The connect middleware: a socket without a valid token is refused with a
/// `connect_error` whose message says why.
fn authenticate<D: CallDomain>(
    domain: &D,
    socket: &SocketRef,
    auth: Option<Value>,
) -> Result<(), String> {
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
    let user = domain.authenticate(&token)?;
    socket.extensions.insert(user);
    Ok(())
}

/// Carries out one client event.
async fn dispatch<D: CallDomain>(
    domain: &D,
    socket: &SocketRef,
    user: &User,
    event: &str,
    data: Value,
) -> Result<Value, SignalError> {
    if event == events::ECHO {
        return Ok(json!({ "data": data }));
    }
    if let Some(request) = events::parse_request(event, &data) {
        return domain.handle(user, request?).await;
    }
    if let Some(relay) = events::parse_relay(event, data) {
        return relay_to_member(domain, socket, user, event, relay?).await;
    }
    Err(SignalError::new(
        "UNKNOWN_EVENT",
        format!("unknown event `{event}`"),
    ))
}

/// Forwards a `webrtc:*` message to the sockets of its target, a fellow member.
async fn relay_to_member<D: CallDomain>(
    domain: &D,
    socket: &SocketRef,
    user: &User,
    event: &str,
    relay: Relay,
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
    socket
        .to(user_room(&relay.target_user_id))
        .emit(event, &payload)
        .await
        .map_err(|e| SignalError::new("DELIVERY_FAILED", e.to_string()))?;
    Ok(json!({}))
}

/// How to answer a client event: through its acknowledgement callback if it sent
/// one, else failures as `call:error`.
pub struct Reply {
    ack: AckSender,
    wants_ack: bool,
}

impl FromMessageParts<LocalAdapter> for Reply {
    type Error = Infallible;

    fn from_message_parts(
        socket: &Arc<Socket<LocalAdapter>>,
        value: &mut socketioxide::handler::Value,
        ack_id: &Option<i64>,
    ) -> Result<Self, Infallible> {
        Ok(Reply {
            ack: AckSender::from_message_parts(socket, value, ack_id)?,
            wants_ack: ack_id.is_some(),
        })
    }
}

impl Reply {
    fn answer(
        self,
        socket: &SocketRef,
        event: &str,
        call_id: Option<&str>,
        result: Result<Value, SignalError>,
    ) {
        let sent = match (result, self.wants_ack) {
            (Ok(value), true) => {
                let mut body = json!({ "ok": true });
                if let (Value::Object(body), Value::Object(fields)) = (&mut body, value) {
                    body.extend(fields);
                }
                self.ack.send(&body)
            }
            (Ok(_), false) => Ok(()),
            (Err(error), true) => self.ack.send(&json!({ "ok": false, "error": error })),
            (Err(error), false) => socket.emit(
                events::CALL_ERROR,
                &json!({ "error": error, "event": event, "callId": call_id }),
            ),
        };
        if let Err(e) = sent {
            tracing::debug!(event, error = %e, "could not answer a client event");
        }
    }
}
