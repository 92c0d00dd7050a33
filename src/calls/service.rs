//! The one place where calls change: every door (REST today, Socket.IO next) goes
//! through [`CallService`], which reads a call, applies a pure rule from
//! [`lifecycle`](super::lifecycle) at the clock's "now", and writes the result back
//! under optimistic concurrency, retrying if another writer got there first.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::lifecycle::{
    CallError, CallSnapshot, Caller, EndOutcome, Limits, MediaFlags, MediaPatch, NewCall,
};
use super::model::{CallId, EndReason, UserId};
use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::store::{CallStats, LiveCounts, Store, StoreError};

/// How many times a change is retried when other writers keep winning the race.
const MAX_ATTEMPTS: usize = 8;
/// Calls handled per sweep; the rest wait for the next tick.
const SWEEP_BATCH: i64 = 500;

/// A request about a call could not be carried out.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    #[error("call not found")]
    NotFound,
    #[error(transparent)]
    Call(#[from] CallError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the call is being changed by others; try again")]
    Contention,
}

/// Starts, joins, ends and reports calls.
#[derive(Debug)]
pub struct CallService {
    store: Store,
    clock: Arc<dyn Clock>,
    limits: Limits,
    metrics: Arc<Metrics>,
}

impl CallService {
    pub fn new(store: Store, clock: Arc<dyn Clock>, limits: Limits, metrics: Arc<Metrics>) -> Self {
        Self {
            store,
            clock,
            limits,
            metrics,
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// `caller` starts a call ringing `request.invitees`.
    pub async fn start(
        &self,
        caller: &Caller,
        request: NewCall,
    ) -> Result<CallSnapshot, ServiceError> {
        let snapshot = CallSnapshot::start(
            CallId::random(),
            caller,
            request,
            &self.limits,
            self.clock.now(),
        )?;
        self.store.insert(&snapshot).await?;
        self.metrics.call_started();
        Ok(snapshot)
    }

    /// The call, if `user` is a member of it.
    pub async fn get(&self, user: &UserId, id: CallId) -> Result<CallSnapshot, ServiceError> {
        let snapshot = self.store.load(id).await?.ok_or(ServiceError::NotFound)?;
        if snapshot.member(user).is_none() {
            return Err(CallError::NotMember.into());
        }
        Ok(snapshot)
    }

    /// The call, if `user` is a member and it has not ended: what a client needs
    /// before (re)connecting media.
    pub async fn get_active(
        &self,
        user: &UserId,
        id: CallId,
    ) -> Result<CallSnapshot, ServiceError> {
        let snapshot = self.get(user, id).await?;
        if !snapshot.call.state.is_active() {
            return Err(CallError::CallEnded.into());
        }
        Ok(snapshot)
    }

    pub async fn join(
        &self,
        caller: &Caller,
        id: CallId,
        media: MediaFlags,
    ) -> Result<CallSnapshot, ServiceError> {
        let (snapshot, ()) = self
            .mutate(id, |call, now| call.join(caller, media, &self.limits, now))
            .await?;
        self.metrics.participant_joined();
        Ok(snapshot)
    }

    pub async fn end(
        &self,
        user: &UserId,
        id: CallId,
        reason: EndReason,
    ) -> Result<(CallSnapshot, EndOutcome), ServiceError> {
        self.mutate(id, |call, now| call.end(user, reason, &self.limits, now))
            .await
    }

    pub async fn update_media(
        &self,
        user: &UserId,
        id: CallId,
        patch: MediaPatch,
    ) -> Result<CallSnapshot, ServiceError> {
        let (snapshot, ()) = self
            .mutate(id, |call, now| call.update_media(user, patch, now))
            .await?;
        Ok(snapshot)
    }

    pub async fn history(
        &self,
        user: &UserId,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<CallSnapshot>, i64), ServiceError> {
        Ok(self.store.history(user, limit, offset).await?)
    }

    pub async fn active(&self, user: &UserId) -> Result<Vec<CallSnapshot>, ServiceError> {
        Ok(self.store.active_for(user).await?)
    }

    /// Statistics over `user`'s calls, or over all calls for `None`.
    pub async fn stats(&self, user: Option<&UserId>) -> Result<CallStats, ServiceError> {
        Ok(self.store.stats(user).await?)
    }

    /// The Prometheus exposition: process counters plus live gauges.
    pub async fn prometheus(&self) -> Result<String, ServiceError> {
        let live: LiveCounts = self.store.live_counts().await?;
        Ok(self.metrics.render(&live))
    }

    /// Applies the timeout rules to every call that is due. Returns how many calls
    /// changed. Run it periodically; it is idempotent and safe on several nodes.
    pub async fn sweep(&self) -> Result<usize, ServiceError> {
        let due = self.store.due(self.clock.now(), SWEEP_BATCH).await?;
        let mut changed = 0;
        for id in due {
            match self
                .mutate(id, |call, now| Ok(call.expire(&self.limits, now)))
                .await
            {
                Ok((_, true)) => changed += 1,
                Ok((_, false)) | Err(ServiceError::NotFound) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(changed)
    }

    /// Reads call `id`, applies `change` at the current time and writes the result,
    /// retrying from a fresh read if another writer changed the call meanwhile.
    /// A refused change writes nothing.
    async fn mutate<T>(
        &self,
        id: CallId,
        mut change: impl FnMut(&mut CallSnapshot, DateTime<Utc>) -> Result<T, CallError>,
    ) -> Result<(CallSnapshot, T), ServiceError> {
        for _ in 0..MAX_ATTEMPTS {
            let before = self.store.load(id).await?.ok_or(ServiceError::NotFound)?;
            let mut after = before.clone();
            let outcome = change(&mut after, self.clock.now())?;
            if after == before {
                return Ok((after, outcome));
            }
            if self.store.save(&before, &after).await? {
                after.call.version += 1;
                if before.call.state.is_active() && !after.call.state.is_active() {
                    self.metrics.call_ended(
                        after.call.end_reason.unwrap_or(EndReason::Normal),
                        after.call.duration.unwrap_or(0),
                    );
                }
                return Ok((after, outcome));
            }
        }
        Err(ServiceError::Contention)
    }
}
