//! The one place where calls change: every door (REST, Socket.IO, the timeout
//! sweeper) goes through [`CallService`], which reads a call, applies a pure rule
//! from [`lifecycle`](super::lifecycle) at the clock's "now", writes the result back
//! under optimistic concurrency (retrying if another writer got there first), and
//! then tells its [`CallObserver`] what changed.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::analytics;
use super::events::{self, CallEvent};
use super::lifecycle::{
    CallError, CallSnapshot, Caller, EndOutcome, Limits, MediaFlags, MediaPatch, NewCall,
};
use super::model::{CallId, EndReason, MediaMode, MetricSource, UserId};
use super::quality::{self, QualityMetric, QualityReport};
use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::store::{CallStats, LiveCounts, QualitySummary, Store, StoreError};

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
    /// The external media plane (LiveKit) failed; the call was not made.
    #[error("{0}")]
    Media(String),
}

/// A boxed future, for the object-safe [`RoomHost`].
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// An external media plane whose room must exist before a call that uses it is
/// stored (LiveKit): opened first, closed again if the call cannot be stored.
pub trait RoomHost: Send + Sync + std::fmt::Debug {
    fn open<'a>(&'a self, call: &'a CallSnapshot) -> BoxFuture<'a, Result<(), ServiceError>>;
    fn close<'a>(&'a self, call: &'a CallSnapshot) -> BoxFuture<'a, ()>;
}

/// Hears about every change to a call once it is stored (to notify its members).
pub trait CallObserver: Send + Sync + std::fmt::Debug {
    /// `call` as it is now, and the events that led there from its previous state.
    fn call_changed(&self, call: &CallSnapshot, events: &[CallEvent]);

    /// `user` has no connection left (`away`), or has one again: for what follows a
    /// user's presence besides their calls (their place in a support queue). Told by
    /// [`CallService::away`] and [`CallService::back`], whoever calls them (a socket
    /// closing, a cluster node lost or leaving).
    fn presence_changed(&self, user: &UserId, away: bool);
}

/// Starts, joins, ends and reports calls.
#[derive(Debug)]
pub struct CallService {
    store: Store,
    clock: Arc<dyn Clock>,
    limits: Limits,
    metrics: Arc<Metrics>,
    observer: Arc<dyn CallObserver>,
    media: MediaSetup,
    /// One writer per call at a time in this process, so a user's own updates queue
    /// up in order instead of losing optimistic-concurrency races to each other.
    writers: CallLocks,
}

/// A lock per call, made on first use and forgotten when nobody holds or awaits it.
#[derive(Debug, Default)]
pub struct CallLocks {
    // A std mutex: held to find or drop a call's lock, never across an await.
    locks: std::sync::Mutex<HashMap<CallId, Arc<tokio::sync::Mutex<()>>>>,
}

/// Held while a call is being changed.
#[derive(Debug)]
pub struct CallGuard<'a> {
    locks: &'a CallLocks,
    id: CallId,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl CallLocks {
    /// Waits for `id`'s lock.
    pub async fn lock(&self, id: CallId) -> CallGuard<'_> {
        let lock = self
            .locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(id)
            .or_default()
            .clone();
        CallGuard {
            locks: self,
            id,
            guard: Some(lock.lock_owned().await),
        }
    }
}

impl Drop for CallGuard<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut locks = self.locks.locks.lock().unwrap_or_else(|e| e.into_inner());
        if locks
            .get(&self.id)
            .is_some_and(|l| Arc::strong_count(l) == 1)
        {
            locks.remove(&self.id);
        }
    }
}

/// How calls get their media plane.
#[derive(Debug, Clone)]
pub struct MediaSetup {
    /// The mode of calls whose start request names none.
    pub default_mode: MediaMode,
    /// Where `livekit` calls get their rooms, when LiveKit is configured.
    pub room_host: Option<Arc<dyn RoomHost>>,
}

impl CallService {
    pub fn new(
        store: Store,
        clock: Arc<dyn Clock>,
        limits: Limits,
        metrics: Arc<Metrics>,
        observer: Arc<dyn CallObserver>,
        media: MediaSetup,
    ) -> Self {
        Self {
            store,
            clock,
            limits,
            metrics,
            observer,
            media,
            writers: CallLocks::default(),
        }
    }

    /// The mode of calls whose start request names none (DEFAULT_MEDIA_MODE).
    pub fn default_media_mode(&self) -> MediaMode {
        self.media.default_mode
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
        let busy = self.may_ring(&caller.id, &request.invitees).await?;
        self.create(CallId::random(), caller, request, &busy).await
    }

    /// A call the support queue's dispatcher places (`queue`): its id was chosen
    /// and stored with the assignment first (so that a crash in between is found and
    /// undone), and no ringing limit applies, since the dispatcher rings only free
    /// representatives, or a customer who asked to be called back.
    pub async fn place(
        &self,
        id: CallId,
        caller: &Caller,
        request: NewCall,
    ) -> Result<CallSnapshot, ServiceError> {
        self.create(id, caller, request, &[]).await
    }

    /// Stores a new call `id` and announces it, ringing the users in `busy` with
    /// call waiting.
    async fn create(
        &self,
        id: CallId,
        caller: &Caller,
        request: NewCall,
        busy: &[UserId],
    ) -> Result<CallSnapshot, ServiceError> {
        let snapshot = CallSnapshot::start(id, caller, request, &self.limits, self.clock.now())?;
        let host = match snapshot.call.media_mode {
            MediaMode::Livekit => Some(
                self.media.room_host.as_ref().ok_or(CallError::Invalid {
                    field: "mediaMode",
                    message: "LiveKit is not configured on this server (LIVEKIT_URL, \
                          LIVEKIT_API_KEY, LIVEKIT_API_SECRET)"
                        .into(),
                })?,
            ),
            MediaMode::Sfu | MediaMode::P2p => None,
        };
        if let Some(host) = host {
            host.open(&snapshot).await?;
        }
        if let Err(e) = self.store.insert(&snapshot).await {
            if let Some(host) = host {
                host.close(&snapshot).await;
            }
            return Err(e.into());
        }
        self.metrics.call_started();
        let mut events = events::diff(None, &snapshot, Some(&caller.id));
        mark_call_waiting(&mut events, busy);
        self.observer.call_changed(&snapshot, &events);
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

    /// The call, if `user` has joined it and it has not ended: what a client needs
    /// to (re)connect media. A ringing invitee can read the call (to show who is
    /// calling) but gets no media credentials until they answer.
    pub async fn get_joined(
        &self,
        user: &UserId,
        id: CallId,
    ) -> Result<CallSnapshot, ServiceError> {
        let snapshot = self.get_active(user, id).await?;
        if !snapshot.member(user).is_some_and(|p| p.is_joined()) {
            return Err(CallError::NotJoined.into());
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
            .mutate(id, Some(&caller.id), |call, now| {
                call.join(caller, media, &self.limits, now)
            })
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
        self.mutate(id, Some(user), |call, now| {
            call.end(user, reason, &self.limits, now)
        })
        .await
    }

    /// `user` refuses a ringing invitation.
    pub async fn decline(&self, user: &UserId, id: CallId) -> Result<CallSnapshot, ServiceError> {
        let (snapshot, _) = self
            .mutate(id, Some(user), |call, now| {
                call.decline(user, &self.limits, now)
            })
            .await?;
        Ok(snapshot)
    }

    /// `user`, in call `id`, rings `invitees` into it.
    pub async fn invite(
        &self,
        user: &UserId,
        id: CallId,
        invitees: Vec<UserId>,
    ) -> Result<CallSnapshot, ServiceError> {
        let busy = self.may_ring(user, &invitees).await?;
        let (snapshot, _) = self
            .mutate_announcing(
                id,
                Some(user),
                |call, now| call.invite(user, invitees.clone(), &self.limits, now),
                &busy,
            )
            .await?;
        Ok(snapshot)
    }

    /// Refuses to ring anyone already rung by RINGING_LIMIT calls, or who declined
    /// `caller` within DECLINE_COOLDOWN. Returns the invitees who are in another
    /// live call (they are rung with call waiting). A limit, not a lock: two calls
    /// racing for a user's last ringing slot may both get it.
    async fn may_ring(
        &self,
        caller: &UserId,
        invitees: &[UserId],
    ) -> Result<Vec<UserId>, ServiceError> {
        let now = self.clock.now();
        let since = now - self.limits.decline_cooldown;
        let mut busy = Vec::new();
        for invitee in invitees {
            let status = self.store.invitee_status(caller, invitee, since).await?;
            if status.ringing >= i64::from(self.limits.max_ringing) {
                return Err(CallError::RingingLimit {
                    user: invitee.clone(),
                    limit: self.limits.max_ringing,
                }
                .into());
            }
            if let Some(declined) = status.declined_at {
                let wait = (declined + self.limits.decline_cooldown - now).num_seconds();
                return Err(CallError::DeclinedRecently {
                    user: invitee.clone(),
                    retry_after: wait.max(1).unsigned_abs(),
                }
                .into());
            }
            if status.in_calls > 0 {
                busy.push(invitee.clone());
            }
        }
        Ok(busy)
    }

    /// `user` has no connection left (their last socket dropped): in every call they
    /// are in, they leave when the grace period (CONNECTION_TIMEOUT) runs out unless
    /// [`CallService::back`] comes first. The deadline is stored with the call and
    /// applied by the sweeper, so a restart cannot lose it.
    pub async fn away(&self, user: &UserId) -> Result<(), ServiceError> {
        self.observer.presence_changed(user, true);
        let until = self.clock.now() + self.limits.away_grace;
        for call in self.store.active_for(user).await? {
            self.mutate(call.call.id, None, |call, now| {
                Ok(call.away(user, until, false, &self.limits, now))
            })
            .await?;
        }
        Ok(())
    }

    /// `user` is connected again: they stay in the calls they were away from.
    pub async fn back(&self, user: &UserId) -> Result<(), ServiceError> {
        self.observer.presence_changed(user, false);
        for call in self.store.active_for(user).await? {
            if call.member(user).is_some_and(|p| p.away_until.is_some()) {
                self.mutate(call.call.id, None, |call, now| {
                    Ok(call.back(user, &self.limits, now))
                })
                .await?;
            }
        }
        Ok(())
    }

    /// The server (re)started: nobody is connected to it yet, so everyone in a live
    /// call gets the grace period from now to come back, as if their last socket had
    /// just dropped (whatever deadline they had before the restart). Run it before
    /// accepting connections. Returns how many calls it touched.
    pub async fn restarted(&self) -> Result<usize, ServiceError> {
        let until = self.clock.now() + self.limits.away_grace;
        let mut touched = 0;
        for id in self.store.active_ids().await? {
            let (_, changed) = self
                .mutate(id, None, |call, now| {
                    let joined: Vec<UserId> = call
                        .participants
                        .iter()
                        .filter(|p| p.is_joined())
                        .map(|p| p.user_id.clone())
                        .collect();
                    let mut changed = false;
                    for user in &joined {
                        changed |= call.away(user, until, true, &self.limits, now);
                    }
                    Ok(changed)
                })
                .await?;
            touched += usize::from(changed);
        }
        Ok(touched)
    }

    /// Stores a quality measurement from `user`, who must be in call `id`.
    pub async fn report_quality(
        &self,
        user: &UserId,
        id: CallId,
        report: QualityReport,
        source: MetricSource,
    ) -> Result<QualityMetric, ServiceError> {
        let call = self.get_joined(user, id).await?;
        let participant = call.member(user).ok_or(CallError::NotMember)?;
        let metric = QualityMetric {
            id: uuid::Uuid::new_v4(),
            call_id: id,
            participant_id: participant.id,
            timestamp: self.clock.now(),
            source,
            quality: quality::mos(&report),
            report,
        };
        self.store.insert_quality(&metric).await?;
        Ok(metric)
    }

    /// Quality measurements of call `id`, for its members.
    pub async fn quality(&self, id: CallId) -> Result<QualitySummary, ServiceError> {
        Ok(self.store.quality_summary(id).await?)
    }

    pub async fn update_media(
        &self,
        user: &UserId,
        id: CallId,
        patch: MediaPatch,
    ) -> Result<CallSnapshot, ServiceError> {
        let (snapshot, ()) = self
            .mutate(id, Some(user), |call, now| {
                call.update_media(user, patch, now)
            })
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

    /// Call analytics over the query's window and scope, computed by the store.
    pub async fn analytics(
        &self,
        query: &analytics::Query,
    ) -> Result<analytics::Report, ServiceError> {
        let figures = self.store.analytics(query).await?;
        Ok(analytics::Report::build(query, figures))
    }

    /// The Prometheus exposition: process counters plus live gauges.
    pub async fn prometheus(&self) -> Result<String, ServiceError> {
        let live: LiveCounts = self.store.live_counts().await?;
        Ok(self.metrics.render(&live))
    }

    /// Stores whether call `id` is being recorded and its latest recording's URL, as
    /// the recording service found them in `call_recordings`. Announced by the
    /// recording service's own notices (which carry the recording); the observer
    /// still hears of the change, with no events, to keep what it caches current.
    pub async fn set_recording(
        &self,
        id: CallId,
        enabled: bool,
        url: Option<String>,
    ) -> Result<CallSnapshot, ServiceError> {
        let (snapshot, ()) = self
            .mutate(id, None, |call, now| {
                call.set_recording(enabled, url.clone(), now);
                Ok(())
            })
            .await?;
        Ok(snapshot)
    }

    /// Applies the timeout rules to every call that is due. Returns how many calls
    /// changed. Run it periodically; it is idempotent and safe on several nodes.
    pub async fn sweep(&self) -> Result<usize, ServiceError> {
        let due = self.store.due(self.clock.now(), SWEEP_BATCH).await?;
        let mut changed = 0;
        for id in due {
            match self
                .mutate(id, None, |call, now| Ok(call.expire(&self.limits, now)))
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
    /// retrying from a fresh read if another writer changed the call meanwhile, then
    /// tells the observer. `actor` is who asked, if a person did. A refused change
    /// writes nothing.
    async fn mutate<T>(
        &self,
        id: CallId,
        actor: Option<&UserId>,
        change: impl FnMut(&mut CallSnapshot, DateTime<Utc>) -> Result<T, CallError>,
    ) -> Result<(CallSnapshot, T), ServiceError> {
        self.mutate_announcing(id, actor, change, &[]).await
    }

    /// [`CallService::mutate`], ringing the users in `busy` with call waiting.
    async fn mutate_announcing<T>(
        &self,
        id: CallId,
        actor: Option<&UserId>,
        mut change: impl FnMut(&mut CallSnapshot, DateTime<Utc>) -> Result<T, CallError>,
        busy: &[UserId],
    ) -> Result<(CallSnapshot, T), ServiceError> {
        let _writer = self.writers.lock(id).await;
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
                let mut events = events::diff(Some(&before), &after, actor);
                mark_call_waiting(&mut events, busy);
                self.observer.call_changed(&after, &events);
                return Ok((after, outcome));
            }
        }
        Err(ServiceError::Contention)
    }
}

/// Rings the users in `busy`, who are in another live call, with call waiting.
fn mark_call_waiting(events: &mut [CallEvent], busy: &[UserId]) {
    for event in events {
        if let CallEvent::Incoming { user, in_call } = event {
            *in_call = busy.contains(user);
        }
    }
}
