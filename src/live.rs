//! [`LiveCalls`]: the latest state of every live call this process has seen, so
//! that the messages that flow while a call is set up (`webrtc:*` relays and
//! messages to the SFU, dozens per participant) are checked without a database
//! read. Every change stored by this process passes through the call service's
//! observer, which keeps it current; a call not in it is read from the store once.
//! In a cluster, a change stored by another node makes this one forget the call
//! (`cluster` hears of it), so the next message reads it again; and since such news
//! can be lost (Redis restarting), what is known is trusted only for a while there.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::calls::lifecycle::{CallError, CallSnapshot};
use crate::calls::model::{CallId, UserId};
use crate::calls::service::{CallService, ServiceError};

#[derive(Debug, Default)]
pub struct LiveCalls {
    // A std mutex: held for a map lookup or update, never across an await.
    calls: Mutex<HashMap<CallId, Known>>,
    /// How long a call is trusted without news of it (`None`: until it changes).
    max_age: Option<Duration>,
}

#[derive(Debug)]
struct Known {
    call: Arc<CallSnapshot>,
    since: Instant,
}

impl LiveCalls {
    /// Calls known for at most `max_age` before they are read again.
    pub fn trusted_for(max_age: Duration) -> Self {
        LiveCalls {
            calls: Mutex::default(),
            max_age: Some(max_age),
        }
    }

    /// Records `call` as it is now (dropping it once it has ended). An older version
    /// than the one known never replaces it: a read that raced a change loses.
    pub fn update(&self, call: &CallSnapshot) {
        let mut calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        if !call.call.state.is_active() {
            calls.remove(&call.call.id);
            return;
        }
        if calls
            .get(&call.call.id)
            .is_none_or(|known| known.call.call.version <= call.call.version)
        {
            let known = Known {
                call: Arc::new(call.clone()),
                since: Instant::now(),
            };
            calls.insert(call.call.id, known);
        }
    }

    /// Forgets call `id` if what is known of it is older than `version` (another
    /// node changed it).
    pub fn forget(&self, id: CallId, version: i64) {
        let mut calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        if calls
            .get(&id)
            .is_some_and(|known| known.call.call.version < version)
        {
            calls.remove(&id);
        }
    }

    /// Call `id` as last known, if it is live and known (and not too long ago).
    pub fn peek(&self, id: CallId) -> Option<Arc<CallSnapshot>> {
        let calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        let known = calls.get(&id)?;
        let fresh = self.max_age.is_none_or(|age| known.since.elapsed() < age);
        fresh.then(|| known.call.clone())
    }

    /// Live call `id` as `user` may see it: they must be a member of it and have
    /// joined it (a ringing invitee has not: they can answer or decline, nothing else).
    pub async fn joined(
        &self,
        service: &CallService,
        user: &UserId,
        id: CallId,
    ) -> Result<Arc<CallSnapshot>, ServiceError> {
        self.checked(service, user, id, |_| Ok(())).await
    }

    /// As [`LiveCalls::joined`], and `check` must pass too. In a cluster a refusal
    /// from what is known is checked again against the store: another node may have
    /// changed the call a moment ago (someone just answered), and its news is on
    /// the way. (Alone, every change passes through here first: what is known is
    /// current.)
    pub async fn checked<E: From<ServiceError>>(
        &self,
        service: &CallService,
        user: &UserId,
        id: CallId,
        check: impl Fn(&CallSnapshot) -> Result<(), E>,
    ) -> Result<Arc<CallSnapshot>, E> {
        let judge = |call: Arc<CallSnapshot>| {
            match call.member(user) {
                None => return Err(E::from(CallError::NotMember.into())),
                Some(p) if !p.is_joined() => return Err(E::from(CallError::NotJoined.into())),
                Some(_) => {}
            }
            check(&call).map(|()| call)
        };
        if let Some(call) = self.peek(id) {
            match judge(call) {
                Ok(call) => return Ok(call),
                Err(refused) if self.max_age.is_none() => return Err(refused),
                Err(_) => {}
            }
        }
        let call = service.get_active(user, id).await?;
        self.update(&call);
        judge(Arc::new(call))
    }
}
