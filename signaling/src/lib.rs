//! # Huddle signaling
//!
//! The Socket.IO side of Huddle: the only crate that knows event names and payload
//! shapes. It authenticates sockets, turns client events into checked
//! [`events::Request`]s for a [`CallDomain`] (implemented by the server), relays
//! `webrtc:*` messages between members of a call, delivers [`events::Notice`]s to
//! every socket of a user, and tracks presence.
//!
//! ## Conventions
//! - A client authenticates with `auth: { token }` (or `Authorization: Bearer`); a
//!   refused token is a `connect_error` whose message says why.
//! - Each socket joins the room `user:<id>`, so whatever is sent to a user reaches all
//!   of their devices.
//! - Every request answers its acknowledgement callback with `{ ok: true, ... }` or
//!   `{ ok: false, error: { code, message, field? } }`; sent without a callback, a
//!   failure arrives as `call:error` with the same `error` and the `event` it was for.
//! - Each socket's events are carried out one at a time, in the order sent, and every
//!   one is answered; a client that does not read its answers is disconnected rather
//!   than left to miss them (see [`server`](crate::Signaling)).
//! - When a user's last socket drops, [`CallDomain::user_away`] is told; when their
//!   first socket opens, [`CallDomain::user_back`]. What being away means (a grace
//!   period before leaving their calls) is the domain's to decide and to store.
//!
//! ## Single process or cluster
//! [`Signaling::new`] serves one process, with socketioxide's in-memory adapter.
//! [`Signaling::clustered`] makes one node of a cluster sharing a Redis: the same
//! handlers run over socketioxide-redis's adapter, so a notice or a relay reaches the
//! sockets of its users on every node. Either way the server applies the returned
//! [`SignalingLayer`] to its router. Presence stays per node: [`CallDomain::user_away`]
//! means this node's last socket of the user closed, and the domain decides what that
//! means for the cluster.

mod cluster;
pub mod events;
mod layer;
mod presence;
mod server;

use std::future::Future;
use std::pin::Pin;

use serde::Serialize;
use serde_json::Value;

pub use cluster::ClusterError;
pub use layer::{SignalingLayer, SignalingService};
/// The redis crate this crate is built with: make the client for
/// [`Signaling::clustered`] with it (`signaling::redis::Client::open(url)`).
pub use redis;
pub use server::{PUBLISH_WAIT, Signaling};

/// A boxed future, for the object-safe [`CallDomain`].
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// An authenticated socket's user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: String,
    pub name: Option<String>,
    /// Where the socket connected from, when known (for per-address limits).
    pub ip: Option<std::net::IpAddr>,
    /// The token's role is `admin` (for what only admins may do, such as recording
    /// under an admin-only policy).
    pub admin: bool,
    /// The token's role: `customer` (when it names none), `representative`, `admin`
    /// or `service`.
    pub role: String,
}

/// A refused request, as the client sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SignalError {
    pub code: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// For `RATE_LIMITED`: whole seconds after which the event would be accepted.
    #[serde(rename = "retryAfter", skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
}

impl SignalError {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
            field: None,
            retry_after: None,
        }
    }

    /// `VALIDATION_ERROR` about `field`.
    pub fn invalid(field: &str, message: impl std::fmt::Display) -> Self {
        Self {
            code: "VALIDATION_ERROR".into(),
            message: format!("{field}: {message}"),
            field: Some(field.to_owned()),
            retry_after: None,
        }
    }
}

impl std::fmt::Display for SignalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

/// What signaling needs from the call domain. The server implements it over its
/// call service, so REST and Socket.IO share one lifecycle.
pub trait CallDomain: Send + Sync + 'static {
    /// Checks a connecting socket's token (`request` is its HTTP request, for the
    /// client's address); the error text goes to the client.
    fn authenticate(&self, token: &str, request: &http::request::Parts) -> Result<User, String>;

    /// Whether `user` may have one more event carried out now (rate limits); the
    /// refusal is the event's answer.
    fn admit(&self, user: &User) -> Result<(), SignalError>;

    /// Carries out `request` for `user`; the object is merged into the `{ ok: true }`
    /// acknowledgement.
    fn handle<'a>(
        &'a self,
        user: &'a User,
        request: events::Request,
    ) -> BoxFuture<'a, Result<Value, SignalError>>;

    /// Whether `user` may send `webrtc:*` messages to `target` about `call_id`: both
    /// must be members of that call, and it must not have ended.
    fn may_relay<'a>(
        &'a self,
        user: &'a User,
        call_id: &'a str,
        target: &'a str,
    ) -> BoxFuture<'a, Result<(), SignalError>>;

    /// The last socket of `user` closed. An error is retried.
    fn user_away<'a>(&'a self, user: &'a User) -> BoxFuture<'a, Result<(), String>>;

    /// The first socket of `user` opened (after they were away). An error is retried.
    fn user_back<'a>(&'a self, user: &'a User) -> BoxFuture<'a, Result<(), String>>;

    /// A `webrtc:*` message for the built-in SFU. Its replies (the answer to an
    /// offer, and the SFU's own offers) go out as [`events::Notice`]s.
    fn to_sfu<'a>(
        &'a self,
        user: &'a User,
        message: events::SfuMessage,
    ) -> BoxFuture<'a, Result<Value, SignalError>>;
}
