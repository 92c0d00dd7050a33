//! What both doors (REST in `api`, Socket.IO in `realtime`) say and check the same
//! way: the [`Failure`] shape, the JSON views of calls, and the parsing of the fields
//! requests share. Nothing here knows HTTP routing or Socket.IO.

pub mod error;
pub mod views;

pub use error::Failure;

use crate::auth::{self, Identity};
use crate::calls::lifecycle::Caller;
use crate::calls::model::{CallId, EndReason};

pub fn caller(identity: &Identity) -> Caller {
    Caller {
        id: identity.id.clone(),
        name: identity.name.clone(),
    }
}

/// A call id from a request (REST path or Socket.IO payload): a UUID, or 400 naming
/// `callId`.
pub fn call_id(raw: &str) -> Result<CallId, Failure> {
    raw.parse()
        .map_err(|_| Failure::invalid("callId", "must be a UUID"))
}

/// Checks an id from a request body (`participantIds`, `chatId`) by the same rule as a
/// token's `sub`, so every id that reaches the store passed one check.
pub fn id_text(field: &str, value: &str) -> Result<(), Failure> {
    auth::check_id(value).map_err(|rule| Failure::invalid(field, rule))
}

/// `reason` of an end request: one a client may give, `normal` if none.
pub fn end_reason(reason: Option<&str>) -> Result<EndReason, Failure> {
    let Some(text) = reason else {
        return Ok(EndReason::Normal);
    };
    text.parse::<EndReason>()
        .ok()
        .filter(|r| r.client_may_give())
        .ok_or_else(|| {
            let allowed: Vec<&str> = EndReason::ALL
                .iter()
                .filter(|r| r.client_may_give())
                .map(|r| r.as_str())
                .collect();
            Failure::invalid("reason", format!("must be one of {}", allowed.join(", ")))
        })
}
