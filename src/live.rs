//! [`LiveCalls`]: the latest state of every live call this process has seen, so
//! that the messages that flow while a call is set up (`webrtc:*` relays and
//! messages to the SFU, dozens per participant) are checked without a database
//! read. Every change stored by this process passes through the call service's
//! observer, which keeps it current; a call not in it is read from the store once.
//! In a cluster, a change stored by another node makes this one forget the call
//! (`cluster` hears of it), so the next message reads it again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::calls::lifecycle::{CallError, CallSnapshot};
use crate::calls::model::{CallId, UserId};
use crate::calls::service::{CallService, ServiceError};

#[derive(Debug, Default)]
pub struct LiveCalls {
    // A std mutex: held for a map lookup or update, never across an await.
    calls: Mutex<HashMap<CallId, Arc<CallSnapshot>>>,
}

impl LiveCalls {
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
            .is_none_or(|known| known.call.version <= call.call.version)
        {
            calls.insert(call.call.id, Arc::new(call.clone()));
        }
    }

    /// Forgets call `id` if what is known of it is older than `version` (another
    /// node changed it).
    pub fn forget(&self, id: CallId, version: i64) {
        let mut calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        if calls
            .get(&id)
            .is_some_and(|known| known.call.version < version)
        {
            calls.remove(&id);
        }
    }

    /// Call `id` as last known, if it is live and known.
    pub fn peek(&self, id: CallId) -> Option<Arc<CallSnapshot>> {
        self.calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned()
    }

    /// Live call `id` as `user` may see it: they must be a member of it and have
    /// joined it (a ringing invitee has not: they can answer or decline, nothing else).
    pub async fn joined(
        &self,
        service: &CallService,
        user: &UserId,
        id: CallId,
    ) -> Result<Arc<CallSnapshot>, ServiceError> {
        let call = match self.peek(id) {
            Some(call) => call,
            None => {
                let call = service.get_active(user, id).await?;
                self.update(&call);
                Arc::new(call)
            }
        };
        match call.member(user) {
            None => Err(CallError::NotMember.into()),
            Some(p) if !p.is_joined() => Err(CallError::NotJoined.into()),
            Some(_) => Ok(call),
        }
    }
}
