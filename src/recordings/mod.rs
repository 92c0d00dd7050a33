//! Call recording: who may record ([`RecordingPolicy`]), starting and stopping a
//! call's recording on its media plane, what the plane reports back, the call's
//! `recordingEnabled` and `recordingUrl`, deleting files (asked, or after
//! RECORDING_RETENTION_DAYS), and finishing what a stopped process left.
//!
//! A recording is a `call_recordings` row first (`recording`), then an order to the
//! call's plane; the plane's [`RecordingReport`]s move the row on (`processing` when
//! it stops, then `completed` or `failed`). Each step is a conditional update, so a
//! stop that is both asked for and reported by the room is announced once. Every
//! step on one call runs under that call's lock, in order, and ends by storing the
//! call's flags (through [`CallService::set_recording`]) and telling the
//! [`RecordingObserver`] (the notifier: `call:recording_started` and
//! `call:recording_stopped` to every member, ringing invitees included).

pub mod model;

use std::path::PathBuf;
use std::sync::Arc;

use axum::http::StatusCode;
use rooms::record::{RecordingEvent, RecordingSpec, StopReason, spool_path};
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

pub use model::{
    LIVEKIT_NODE, Recording, RecordingPolicy, RecordingSettings, RecordingTrack, WEBM,
};

use crate::calls::lifecycle::{CallError, CallSnapshot, Caller, NewCall};
use crate::calls::model::{CallId, MediaMode, RecordingStatus, UserId};
use crate::calls::service::{CallLocks, CallService, ServiceError};
use crate::media::{Planes, RecordedBy, RecordingOrder, RecordingReport, cannot_record};
use crate::store::recordings::{Finished, RecordingFilter};
use crate::wire::Failure;

/// What members hear about a recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordingChange {
    Started,
    /// `reason`: `asked`, `call_ended`, `limit` or `failed`.
    Stopped {
        reason: &'static str,
    },
    /// Its file is written (`completed`) or will never be (`failed`): every recording
    /// ends so, once.
    Finished,
}

/// Hears of every recording that starts or stops (to notify the call's members).
pub trait RecordingObserver: Send + Sync + std::fmt::Debug {
    /// `recording` of `call` (as the call is now) started or stopped.
    fn recording_changed(
        &self,
        call: &CallSnapshot,
        recording: &Recording,
        change: RecordingChange,
    );
}

/// Starts, stops, lists and deletes call recordings.
#[derive(Debug)]
pub struct RecordingService {
    calls: Arc<CallService>,
    planes: Arc<Planes>,
    observer: Arc<dyn RecordingObserver>,
    settings: RecordingSettings,
    /// One step at a time per call, in the order they come.
    locks: CallLocks,
}

fn not_found() -> Failure {
    Failure::new(
        StatusCode::NOT_FOUND,
        "RECORDING_NOT_FOUND",
        "no such recording of this call",
    )
}

/// `format` of a start request: `webm`, the default, or 400.
pub fn parse_format(format: Option<&str>) -> Result<(), Failure> {
    match format {
        None | Some(WEBM) => Ok(()),
        Some(_) => Err(Failure::invalid("format", "must be webm")),
    }
}

impl RecordingService {
    pub fn new(
        calls: Arc<CallService>,
        planes: Arc<Planes>,
        observer: Arc<dyn RecordingObserver>,
        settings: RecordingSettings,
    ) -> Self {
        Self {
            calls,
            planes,
            observer,
            settings,
            locks: CallLocks::default(),
        }
    }

    /// Where recording `r`'s file is on this node's disk.
    pub fn file_of(&self, r: &Recording) -> PathBuf {
        self.settings.dir.join(r.relative_path())
    }

    /// `user` (an admin or not) starts recording call `id`: they must have joined
    /// it, and RECORDING_POLICY must let them.
    pub async fn start(
        &self,
        user: &UserId,
        admin: bool,
        id: CallId,
        format: Option<&str>,
    ) -> Result<Recording, Failure> {
        parse_format(format)?;
        let call = self.calls.get_joined(user, id).await?;
        self.may_control(&call, user, admin)?;
        self.record(&call, user).await
    }

    /// `caller` starts a call (as [`CallService::start`]), recording it from the
    /// start when `record` says so: the room records once media flows. The caller
    /// must be allowed to record, and the mode able to, or nothing starts; a
    /// recording that fails to start leaves the call going (members are told).
    pub async fn start_call(
        &self,
        caller: &Caller,
        admin: bool,
        request: NewCall,
        record: bool,
    ) -> Result<CallSnapshot, Failure> {
        if record {
            recordable(request.media_mode)?;
            // At start the caller is the initiator, and joined.
            if self.settings.policy == RecordingPolicy::Admin && !admin {
                return Err(policy_refusal(self.settings.policy));
            }
        }
        let call = self.calls.start(caller, request).await?;
        if !record {
            return Ok(call);
        }
        match self.record(&call, &caller.id).await {
            Ok(_) => Ok(self.calls.get(&caller.id, call.call.id).await?),
            Err(e) => {
                tracing::warn!(call = %call.call.id, code = %e.code, "the call's recording did not start");
                Ok(call)
            }
        }
    }

    /// Starts recording `call` for `user` (already checked).
    async fn record(&self, call: &CallSnapshot, user: &UserId) -> Result<Recording, Failure> {
        recordable(call.call.media_mode)?;
        let id = call.call.id;
        let _step = self.locks.lock(id).await;
        let store = self.calls.store();
        let recording = Recording::new(id, user, &self.settings.node, self.calls.now());
        if !store.insert_recording(&recording).await? {
            return Err(Failure::new(
                StatusCode::CONFLICT,
                "RECORDING_ACTIVE",
                "this call is being recorded already",
            ));
        }
        let path = self.file_of(&recording);
        let folder = path.parent().map(PathBuf::from).unwrap_or_default();
        if let Err(e) = tokio::fs::create_dir_all(&folder).await {
            let error = format!("cannot create {}: {e}", folder.display());
            return Err(self.failed_to_start(recording, &error).await);
        }
        let spec = RecordingSpec {
            id: recording.id.to_string(),
            path,
            max_bytes: self.settings.max_bytes,
            max_duration: self.settings.max_duration,
        };
        let plane = self.planes.of(call.call.media_mode);
        match plane.recording(call, RecordingOrder::Start(spec)).await {
            Ok(by) => {
                let node = match by {
                    RecordedBy::Here => None,
                    RecordedBy::Node(node) => Some(node),
                    RecordedBy::LiveKit => Some(LIVEKIT_NODE.to_owned()),
                };
                // What finishes it after a restart: the node that writes it.
                if let Some(node) = node {
                    store.set_recording_node(recording.id, &node).await?;
                }
                let call = self.sync_call(id).await?;
                self.observer
                    .recording_changed(&call, &recording, RecordingChange::Started);
                Ok(recording)
            }
            // Refused (the call ended meanwhile, no recorder on this plane): nothing
            // was recorded and nobody was told, so nothing is kept.
            Err(refused) if refused.status.is_client_error() => {
                store.remove_recording(recording.id).await?;
                Err(refused)
            }
            Err(e) => Err(self.failed_to_start(recording, &e.message).await),
        }
    }

    /// The recording could not be started (an unwritable directory, a full disk): it
    /// is `failed`, members are told, and the call goes on.
    async fn failed_to_start(&self, recording: Recording, error: &str) -> Failure {
        tracing::error!(call = %recording.call_id, recording = %recording.id, error, "recording failed to start");
        let failed = self
            .calls
            .store()
            .fail_recording(
                recording.id,
                RecordingStatus::Recording,
                error,
                self.calls.now(),
            )
            .await;
        match failed {
            Ok(_) => {
                let announced = match self.announce_stop(recording.id, StopReason::Failed).await {
                    Ok(_) => self.announce_finish(recording.id).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = announced {
                    tracing::error!(error = %e.message, "failed recording not announced");
                }
                Failure::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "RECORDING_FAILED",
                    "the recording could not be written; it is marked failed",
                )
            }
            Err(e) => Failure::internal(&e),
        }
    }

    /// `user` stops call `id`'s running recording.
    pub async fn stop(&self, user: &UserId, admin: bool, id: CallId) -> Result<Recording, Failure> {
        let call = self.calls.get(user, id).await?;
        self.may_control(&call, user, admin)?;
        let _step = self.locks.lock(id).await;
        let store = self.calls.store();
        let running = store
            .recordings_of(id)
            .await?
            .into_iter()
            .find(|r| r.status == RecordingStatus::Recording)
            .ok_or_else(|| {
                Failure::new(
                    StatusCode::NOT_FOUND,
                    "RECORDING_NOT_FOUND",
                    "this call is not being recorded",
                )
            })?;
        let order = RecordingOrder::Stop {
            id: running.id.to_string(),
        };
        if let Err(e) = self
            .planes
            .of(call.call.media_mode)
            .recording(&call, order)
            .await
        {
            tracing::warn!(call = %id, error = %e.message, "the plane did not take the stop");
        }
        let stopped = self.stopped(running.id, StopReason::Asked).await?;
        Ok(stopped.unwrap_or(running))
    }

    /// Recording `id` stopped for `reason`: `processing`, the call's flags, and the
    /// notice, unless it had stopped already. Under its call's lock.
    async fn stopped(&self, id: Uuid, reason: StopReason) -> Result<Option<Recording>, Failure> {
        let now = self.calls.now();
        if !self
            .calls
            .store()
            .stop_recording(id, reason.as_str(), now)
            .await?
        {
            return Ok(None);
        }
        self.announce_stop(id, reason).await
    }

    /// Stores the call's flags and tells its members that recording `id` stopped.
    async fn announce_stop(
        &self,
        id: Uuid,
        reason: StopReason,
    ) -> Result<Option<Recording>, Failure> {
        let Some(recording) = self.calls.store().recording(id).await? else {
            return Ok(None);
        };
        let call = self.sync_call(recording.call_id).await?;
        self.observer.recording_changed(
            &call,
            &recording,
            RecordingChange::Stopped {
                reason: reason.as_str(),
            },
        );
        Ok(Some(recording))
    }

    /// Stores the call's flags and tells its members that recording `id` is finished
    /// (`completed` or `failed`).
    async fn announce_finish(&self, id: Uuid) -> Result<(), Failure> {
        let Some(recording) = self.calls.store().recording(id).await? else {
            return Ok(());
        };
        let call = self.sync_call(recording.call_id).await?;
        self.observer
            .recording_changed(&call, &recording, RecordingChange::Finished);
        Ok(())
    }

    /// Stores whether `call` is being recorded and its latest completed recording's
    /// URL, as `call_recordings` says now.
    async fn sync_call(&self, call: CallId) -> Result<CallSnapshot, Failure> {
        let all = self.calls.store().recordings_of(call).await?;
        let running = all.iter().any(|r| r.status == RecordingStatus::Recording);
        let url = all.iter().find_map(Recording::url);
        Ok(self.calls.set_recording(call, running, url).await?)
    }

    /// Refuses `user` unless RECORDING_POLICY lets them control `call`'s recordings.
    fn may_control(&self, call: &CallSnapshot, user: &UserId, admin: bool) -> Result<(), Failure> {
        if self.settings.policy.allows(call, user, admin) {
            Ok(())
        } else {
            Err(policy_refusal(self.settings.policy))
        }
    }

    /// Call `id`, if `user` may see its recordings: an admin, or a member who has
    /// joined it at some time.
    async fn viewable(
        &self,
        user: &UserId,
        admin: bool,
        id: CallId,
    ) -> Result<CallSnapshot, Failure> {
        let call = self
            .calls
            .store()
            .load(id)
            .await?
            .ok_or(ServiceError::NotFound)?;
        if admin {
            return Ok(call);
        }
        match call.member(user) {
            None => Err(ServiceError::Call(CallError::NotMember).into()),
            Some(p) if p.joined_at.is_none() => Err(Failure::forbidden(
                "only members who have joined the call may see its recordings",
            )),
            Some(_) => Ok(call),
        }
    }

    /// Call `id`'s recordings, newest first.
    pub async fn list(
        &self,
        user: &UserId,
        admin: bool,
        id: CallId,
    ) -> Result<Vec<Recording>, Failure> {
        self.viewable(user, admin, id).await?;
        Ok(self.calls.store().recordings_of(id).await?)
    }

    /// What a download serves: recording `recording` of call `id` (the latest
    /// completed one for `None`) and its file, if completed.
    pub async fn download(
        &self,
        user: &UserId,
        admin: bool,
        id: CallId,
        recording: Option<Uuid>,
    ) -> Result<(Recording, PathBuf), Failure> {
        self.viewable(user, admin, id).await?;
        let found = self
            .calls
            .store()
            .recordings_of(id)
            .await?
            .into_iter()
            .find(|r| {
                r.status == RecordingStatus::Completed && recording.is_none_or(|want| r.id == want)
            })
            .ok_or_else(not_found)?;
        if let Some(location) = &found.location {
            return Err(Failure::new(
                StatusCode::CONFLICT,
                "RECORDING_ELSEWHERE",
                format!("this recording was stored by LiveKit Egress at {location}"),
            ));
        }
        let path = self.file_of(&found);
        Ok((found, path))
    }

    /// A page of the recordings `user` may see (every one for an admin).
    pub async fn page(
        &self,
        user: &UserId,
        admin: bool,
        filter: &RecordingFilter,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<Recording>, i64), Failure> {
        let scope = (!admin).then_some(user);
        Ok(self
            .calls
            .store()
            .recordings_page(scope, filter, limit, offset)
            .await?)
    }

    /// Deletes recording `recording` of call `id` (every finished one for `None`):
    /// files removed, rows `deleted`. For those who may see them and whom the policy
    /// lets control them; one still being written cannot be deleted (409).
    pub async fn delete(
        &self,
        user: &UserId,
        admin: bool,
        id: CallId,
        recording: Option<Uuid>,
    ) -> Result<Vec<Recording>, Failure> {
        let call = self.viewable(user, admin, id).await?;
        self.may_control(&call, user, admin)?;
        let _step = self.locks.lock(id).await;
        let all = self.calls.store().recordings_of(id).await?;
        let chosen: Vec<Recording> = match recording {
            Some(want) => vec![
                all.into_iter()
                    .find(|r| r.id == want)
                    .ok_or_else(not_found)?,
            ],
            None => all,
        };
        if chosen.iter().any(|r| {
            matches!(
                r.status,
                RecordingStatus::Recording | RecordingStatus::Processing
            )
        }) {
            return Err(Failure::new(
                StatusCode::CONFLICT,
                "RECORDING_ACTIVE",
                "a recording still being written cannot be deleted: stop it first",
            ));
        }
        let mut deleted = Vec::new();
        for r in chosen {
            if r.status != RecordingStatus::Deleted {
                deleted.push(self.remove(r).await?);
            }
        }
        self.sync_call(id).await?;
        Ok(deleted)
    }

    /// Removes a finished recording's file (and any spool left) and marks it deleted.
    async fn remove(&self, mut r: Recording) -> Result<Recording, Failure> {
        let path = self.file_of(&r);
        for file in [spool_path(&path), path] {
            match tokio::fs::remove_file(&file).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::error!(file = %file.display(), error = %e, "recording not deleted");
                    return Err(Failure::internal(&e));
                }
            }
        }
        self.calls.store().delete_recording(r.id).await?;
        r.status = RecordingStatus::Deleted;
        Ok(r)
    }

    /// Handles what the planes report and what calls end, until both channels close.
    pub async fn run(
        self: Arc<Self>,
        mut reports: mpsc::UnboundedReceiver<RecordingReport>,
        mut ended: mpsc::UnboundedReceiver<CallId>,
    ) {
        loop {
            let handled = tokio::select! {
                Some(report) = reports.recv() => self.on_report(report).await,
                Some(call) = ended.recv() => self.call_ended(call).await,
                else => return,
            };
            if let Err(e) = handled {
                tracing::error!(code = %e.code, error = %e.message, "recording report not applied");
            }
        }
    }

    /// What a plane reports about a recording.
    pub async fn on_report(&self, report: RecordingReport) -> Result<(), Failure> {
        let Ok(id) = Uuid::try_parse(&report.id) else {
            tracing::warn!(recording = %report.id, "a report about no recording of ours");
            return Ok(());
        };
        let _step = self.locks.lock(report.call).await;
        let store = self.calls.store();
        match report.event {
            RecordingEvent::Stopped { reason } => {
                self.stopped(id, reason).await?;
            }
            RecordingEvent::Completed(result) => {
                let Some(recording) = store.recording(id).await? else {
                    return Ok(());
                };
                // LiveKit Egress's file stays where it stored it, in its format.
                let (format, location) = match recording.by_livekit() {
                    true => (
                        result.path.extension().map_or_else(
                            || recording.format.clone(),
                            |e| e.to_string_lossy().into_owned(),
                        ),
                        Some(result.path.to_string_lossy().into_owned()),
                    ),
                    false => (recording.format.clone(), None),
                };
                let finished = Finished {
                    format,
                    location,
                    size: i64::try_from(result.size).unwrap_or(i64::MAX),
                    duration: result.duration.as_secs_f64(),
                    tracks: result.tracks.iter().map(RecordingTrack::from).collect(),
                    dropped_frames: i64::try_from(result.dropped_frames).unwrap_or(i64::MAX),
                };
                let completed = Recording {
                    status: RecordingStatus::Completed,
                    location: finished.location.clone(),
                    ..recording
                };
                let url = completed.url();
                if store
                    .complete_recording(id, url.as_deref(), &finished)
                    .await?
                {
                    self.announce_finish(id).await?;
                }
            }
            RecordingEvent::Failed { error } => self.failed(id, &error).await?,
        }
        Ok(())
    }

    /// Recording `id` ended with nothing playable: `failed`, announced as stopped if
    /// its stop was not.
    async fn failed(&self, id: Uuid, error: &str) -> Result<(), Failure> {
        tracing::warn!(recording = %id, error, "recording failed");
        let store = self.calls.store();
        let now = self.calls.now();
        if store
            .fail_recording(id, RecordingStatus::Recording, error, now)
            .await?
        {
            self.announce_stop(id, StopReason::Failed).await?;
            self.announce_finish(id).await?;
        } else if store
            .fail_recording(id, RecordingStatus::Processing, error, now)
            .await?
        {
            self.announce_finish(id).await?;
        }
        Ok(())
    }

    /// Call `call` ended: its plane stops its recording (and reports so); in case it
    /// does not, the recording stops here too.
    async fn call_ended(&self, call: CallId) -> Result<(), Failure> {
        let _step = self.locks.lock(call).await;
        let store = self.calls.store();
        let running: Vec<Recording> = store
            .recordings_of(call)
            .await?
            .into_iter()
            .filter(|r| r.status == RecordingStatus::Recording)
            .collect();
        if running.is_empty() {
            return Ok(());
        }
        let snapshot = store.load(call).await?.ok_or(ServiceError::NotFound)?;
        for r in running {
            let order = RecordingOrder::Stop {
                id: r.id.to_string(),
            };
            let plane = self.planes.of(snapshot.call.media_mode);
            if let Err(e) = plane.recording(&snapshot, order).await {
                tracing::debug!(call = %call, error = %e.message, "stop at call end not taken");
            }
            self.stopped(r.id, StopReason::CallEnded).await?;
        }
        Ok(())
    }

    /// Deletes this node's finished recordings older than RECORDING_RETENTION_DAYS.
    /// Returns how many.
    pub async fn expire(&self) -> Result<usize, Failure> {
        let Some(keep) = self.settings.retention else {
            return Ok(0);
        };
        let before = self.calls.now() - keep;
        let store = self.calls.store();
        let mut expired = 0;
        for r in store
            .expired_recordings(&self.settings.node, before)
            .await?
        {
            let call = r.call_id;
            let _step = self.locks.lock(call).await;
            self.remove(r).await?;
            self.sync_call(call).await?;
            expired += 1;
        }
        Ok(expired)
    }

    /// Runs [`RecordingService::expire`] every `every` until `stop` flips.
    pub async fn expire_every(
        self: Arc<Self>,
        every: std::time::Duration,
        mut stop: watch::Receiver<bool>,
    ) {
        if self.settings.retention.is_none() {
            return;
        }
        let mut ticks = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                _ = ticks.tick() => {}
            }
            match self.expire().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    recordings = n,
                    "recordings past RECORDING_RETENTION_DAYS deleted"
                ),
                Err(e) => tracing::error!(error = %e.message, "retention sweep failed"),
            }
        }
    }

    /// This node (re)started: its recordings still `recording` stopped with the
    /// process (reason `failed`, members told), and every unfinished one is
    /// finished from the spool it left (`completed`, playable up to the stop) or
    /// `failed`, in the background. Run before serving.
    pub async fn restarted(self: &Arc<Self>) -> Result<usize, Failure> {
        let store = self.calls.store();
        let node = &self.settings.node;
        for r in store
            .recordings_on_node(node, &[RecordingStatus::Recording])
            .await?
        {
            let _step = self.locks.lock(r.call_id).await;
            self.stopped(r.id, StopReason::Failed).await?;
        }
        let unfinished = store
            .recordings_on_node(node, &[RecordingStatus::Processing])
            .await?;
        let count = unfinished.len();
        let service = self.clone();
        tokio::spawn(async move {
            for r in unfinished {
                if let Err(e) = service.recover(r).await {
                    tracing::error!(error = %e.message, "recording not recovered");
                }
            }
        });
        Ok(count)
    }

    /// Writes the file of a recording a stopped process left, as its room would have.
    async fn recover(&self, r: Recording) -> Result<(), Failure> {
        let path = self.file_of(&r);
        let written = tokio::task::spawn_blocking(move || rooms::record::recover(&path))
            .await
            .map_err(|e| Failure::internal(&e))?;
        let event = match written {
            Ok(result) => RecordingEvent::Completed(result),
            Err(e) => RecordingEvent::Failed {
                error: format!("not recovered after a restart: {e}"),
            },
        };
        self.on_report(RecordingReport {
            call: r.call_id,
            id: r.id.to_string(),
            event,
        })
        .await
    }
}

/// A `p2p` call's media never reaches a server: 409 RECORDING_UNAVAILABLE.
fn recordable(mode: MediaMode) -> Result<(), Failure> {
    match mode {
        MediaMode::P2p => Err(cannot_record(mode)),
        MediaMode::Sfu | MediaMode::Livekit => Ok(()),
    }
}

fn policy_refusal(policy: RecordingPolicy) -> Failure {
    let who = match policy {
        RecordingPolicy::Initiator => "the call's initiator or an admin",
        RecordingPolicy::Member => "members who have joined the call, or an admin",
        RecordingPolicy::Admin => "admins",
    };
    Failure::forbidden(format!(
        "only {who} may record this call (RECORDING_POLICY)"
    ))
}
