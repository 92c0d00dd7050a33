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
//! - When a user's last socket drops, they have the grace period to come back before
//!   [`CallDomain::user_gone`] is called; nobody else notices a quick reconnect.

pub mod events;
mod presence;
mod server;

use std::future::Future;
use std::pin::Pin;

use serde::Serialize;
use serde_json::Value;

pub use server::{Signaling, SignalingConfig};

/// A boxed future, for the object-safe [`CallDomain`].
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// An authenticated socket's user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: String,
    pub name: Option<String>,
}

/// A refused request, as the client sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SignalError {
    pub code: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl SignalError {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
            field: None,
        }
    }

    /// `VALIDATION_ERROR` about `field`.
    pub fn invalid(field: &str, message: impl std::fmt::Display) -> Self {
        Self {
            code: "VALIDATION_ERROR".into(),
            message: format!("{field}: {message}"),
            field: Some(field.to_owned()),
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
    /// Checks a connecting socket's token; the error text goes to the client.
    fn authenticate(&self, token: &str) -> Result<User, String>;

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

    /// Every socket of `user` has been gone for the whole grace period.
    fn user_gone<'a>(&'a self, user: &'a User) -> BoxFuture<'a, ()>;

    /// A `webrtc:*` message for the built-in SFU. Its replies (the answer to an
    /// offer, and the SFU's own offers) go out as [`events::Notice`]s.
    fn to_sfu<'a>(
        &'a self,
        user: &'a User,
        message: events::SfuMessage,
    ) -> BoxFuture<'a, Result<Value, SignalError>>;
}
