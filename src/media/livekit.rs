//! LiveKit as a call's media plane (`mediaMode: "livekit"`): Huddle keeps the call,
//! its ringing, history and records; media flows through the operator's LiveKit.
//! A call opens its LiveKit room before it is stored and closes it when it ends;
//! start, join and token responses carry a LiveKit access token for that room; a
//! participant who leaves the call is removed from the room; LiveKit's signed webhooks
//! feed joins, departures and the room's end back into the call. A recording is a
//! room composite egress (LiveKit Egress) to a file named after the recording, so the
//! egress webhooks name the recording they are about.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::http::StatusCode;
use livekit_api::access_token::{AccessToken, TokenVerifier, VideoGrants};
use livekit_api::services::egress::encoding::EncodingOptions;
use livekit_api::services::egress::{
    EgressClient, EgressListFilter, EgressListOptions, EgressOutput, RoomCompositeOptions,
};
use livekit_api::services::room::{CreateRoomOptions, RoomClient};
use livekit_api::webhooks::WebhookReceiver;
use livekit_protocol as proto;
use rooms::record::{RecordingEvent, RecordingResult, RecordingSpec, StopReason};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use signaling::events::SfuMessage;

use super::{MediaPlane, RecordedBy, RecordingOrder, RecordingReport, not_an_sfu_call};
use crate::calls::events::CallEvent;
use crate::calls::lifecycle::{CallError, CallSnapshot, Caller, MediaFlags};
use crate::calls::model::{CallId, CallType, EndReason, MediaMode, UserId};
use crate::calls::service::{BoxFuture, CallService, RoomHost, ServiceError};
use crate::wire::Failure;

/// How Huddle reaches LiveKit.
#[derive(Debug, Clone)]
pub struct LiveKitConfig {
    /// What clients connect to (`wss://…`); RoomService calls go to its HTTP twin.
    pub url: String,
    pub api_key: String,
    pub api_secret: String,
    /// How long a minted access token lets its holder join.
    pub token_ttl: Duration,
    /// Seconds LiveKit keeps an empty room before closing it.
    pub empty_timeout: u32,
    /// Most participants in a room (the call's limit).
    pub max_participants: u32,
    /// How long one RoomService request may take.
    pub request_timeout: Duration,
}

/// The LiveKit media plane: a RoomService client, an Egress client, the token minter
/// and the webhook checker, all with the same API key.
pub struct LiveKit {
    config: LiveKitConfig,
    rooms: Arc<Rooms>,
    webhooks: WebhookReceiver,
    recorder: Arc<Recorder>,
}

/// Recordings through LiveKit Egress; shared with the tasks that stop a recording at
/// its maximum duration.
struct Recorder {
    egress: EgressClient,
    /// Where what becomes of recordings is reported (the recording service).
    reports: mpsc::UnboundedSender<RecordingReport>,
    /// Recordings this process stopped and reported `Stopped` for: their
    /// `egress_ended` webhook reports only the result.
    stopped: Mutex<HashSet<String>>,
}

/// LiveKit's rooms as Huddle sees them; shared with the background tasks that
/// close rooms and remove participants.
struct Rooms {
    client: RoomClient,
    /// Rooms Huddle opened and has not closed.
    open: Mutex<HashSet<String>>,
}

impl Rooms {
    fn open_rooms(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn delete(&self, room: &str) {
        match self.client.delete_room(room).await {
            Ok(()) => {
                self.open_rooms().remove(room);
            }
            Err(e) => tracing::warn!(%room, error = %e, "LiveKit: room not deleted"),
        }
    }
}

impl std::fmt::Debug for LiveKit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveKit")
            .field("url", &self.config.url)
            .field("api_key", &self.config.api_key)
            .finish_non_exhaustive()
    }
}

/// A webhook that cannot be trusted.
#[derive(Debug, thiserror::Error)]
#[error("LiveKit webhook refused: {0}")]
pub struct WebhookRefused(String);

impl LiveKit {
    /// What becomes of recordings (from the egress webhooks) is sent to `reports`.
    pub fn new(config: LiveKitConfig, reports: mpsc::UnboundedSender<RecordingReport>) -> Self {
        let client = RoomClient::with_api_key(&config.url, &config.api_key, &config.api_secret)
            .with_request_timeout(config.request_timeout);
        let egress = EgressClient::with_api_key(&config.url, &config.api_key, &config.api_secret)
            .with_request_timeout(config.request_timeout);
        let webhooks = WebhookReceiver::new(TokenVerifier::with_api_key(
            &config.api_key,
            &config.api_secret,
        ));
        LiveKit {
            config,
            rooms: Arc::new(Rooms {
                client,
                open: Mutex::default(),
            }),
            webhooks,
            recorder: Arc::new(Recorder {
                egress,
                reports,
                stopped: Mutex::default(),
            }),
        }
    }

    /// Rooms open now.
    pub fn active_rooms(&self) -> usize {
        self.rooms.open_rooms().len()
    }

    /// Checks a webhook's signature (the `Authorization` token signs the body's
    /// SHA-256) and applies it to the call whose room it names.
    pub async fn webhook(
        &self,
        service: &CallService,
        body: &str,
        authorization: &str,
    ) -> Result<(), WebhookRefused> {
        let token = authorization
            .strip_prefix("Bearer ")
            .unwrap_or(authorization);
        let event = self
            .webhooks
            .receive(body, token)
            .map_err(|e| WebhookRefused(e.to_string()))?;
        if let Some(info) = &event.egress_info {
            if event.event == "egress_ended" {
                self.recorder.ended(info);
            }
            return Ok(()); // egress_started and egress_updated change nothing
        }
        let room = event
            .room
            .as_ref()
            .map(|r| r.name.as_str())
            .unwrap_or_default();
        let Some(id) = call_of_room(room) else {
            return Ok(()); // not a room of Huddle's
        };
        let identity = event
            .participant
            .as_ref()
            .map(|p| UserId(p.identity.clone()));
        let outcome = match (event.event.as_str(), identity) {
            ("participant_joined", Some(user)) => {
                let name = event.participant.as_ref().map(|p| p.name.clone());
                joined(service, id, user, name).await
            }
            ("participant_left", Some(user)) => {
                service.end(&user, id, EndReason::Normal).await.map(|_| ())
            }
            ("room_finished", _) => {
                self.rooms.open_rooms().remove(room);
                finished(service, id).await
            }
            _ => Ok(()),
        };
        match outcome {
            // LiveKit tells what happened; the call may already know (a REST join, a
            // hang-up): nothing to do then.
            Ok(())
            | Err(ServiceError::Call(
                CallError::AlreadyJoined | CallError::NotJoined | CallError::CallEnded,
            )) => Ok(()),
            Err(e) => {
                tracing::warn!(event = %event.event, %room, error = %e, "LiveKit webhook not applied");
                Ok(())
            }
        }
    }
}

/// A participant LiveKit saw join: joined in the call too (a no-op after a REST or
/// Socket.IO join).
async fn joined(
    service: &CallService,
    id: CallId,
    user: UserId,
    name: Option<String>,
) -> Result<(), ServiceError> {
    let call = service.get(&user, id).await?;
    let media = MediaFlags {
        audio: true,
        video: call.call.call_type == CallType::Video,
    };
    let caller = Caller {
        id: user,
        name: name.filter(|n| !n.is_empty()),
    };
    service.join(&caller, id, media).await.map(|_| ())
}

/// LiveKit closed the room: whoever is still in the call hangs up.
async fn finished(service: &CallService, id: CallId) -> Result<(), ServiceError> {
    let call = service
        .store()
        .load(id)
        .await?
        .ok_or(ServiceError::NotFound)?;
    if !call.call.state.is_active() {
        return Ok(());
    }
    // The initiator first: their hang-up ends the call for everyone, if they are
    // still in it; otherwise the others leave one by one.
    let mut members: Vec<&UserId> = call.participants.iter().map(|p| &p.user_id).collect();
    members.sort_by_key(|user| **user != call.call.initiator_id);
    for user in members {
        match service.end(user, id, EndReason::Normal).await {
            Ok(_) | Err(ServiceError::Call(CallError::CallEnded | CallError::NotJoined)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The call behind a room name (`room_<call id without dashes>`).
fn call_of_room(room: &str) -> Option<CallId> {
    room.strip_prefix("room_")?.parse().ok()
}

/// Recording `id` of a call: a room composite egress of the call's room (every
/// participant's camera, screen and microphone laid out and mixed by LiveKit, which
/// transcodes) to the file `<call id>/<recording id>.mp4` (H.264 and AAC), or
/// `.ogg` (Opus) for an audio call, in the storage LiveKit Egress is configured
/// with. Room composite egress writes MP4, OGG or MP3 files, not WebM. The file's
/// name is all that ties an egress to its recording: the webhooks carry it back.
#[derive(Debug, Clone, PartialEq, Eq)]
struct EgressFile {
    call: CallId,
    id: String,
    room: String,
    audio_only: bool,
}

impl EgressFile {
    fn of(call: &CallSnapshot, id: &str) -> Self {
        EgressFile {
            call: call.call.id,
            id: id.to_owned(),
            room: call.call.room_id.clone(),
            audio_only: call.call.call_type == CallType::Audio,
        }
    }

    /// Relative to Egress's storage.
    fn filepath(&self) -> String {
        let extension = if self.audio_only { "ogg" } else { "mp4" };
        format!("{}/{}.{extension}", self.call, self.id)
    }

    /// The recording egress `info` writes, if it is one of Huddle's: a room
    /// composite egress of a call's room to a file in that call's folder.
    fn recorded_by(info: &proto::EgressInfo) -> Option<Self> {
        let call = call_of_room(&info.room_name)?;
        let asked = match &info.request {
            Some(proto::egress_info::Request::RoomComposite(request)) => {
                request.file_outputs.first()
            }
            _ => None,
        };
        let filepath = asked
            .map(|output| output.filepath.as_str())
            .or_else(|| info.file_results.first().map(|f| f.filename.as_str()))?;
        let (folder, name) = filepath.rsplit_once('/')?;
        let (id, extension) = name.rsplit_once('.')?;
        let ours = folder.rsplit('/').next() == Some(call.to_string().as_str())
            && !id.is_empty()
            && matches!(extension, "mp4" | "ogg");
        ours.then(|| EgressFile {
            call,
            id: id.to_owned(),
            room: info.room_name.clone(),
            audio_only: extension == "ogg",
        })
    }
}

/// How LiveKit encodes a recording: its `H264_720P_30` preset for a video call; Opus
/// for an audio call's OGG file.
fn encoding(audio_only: bool) -> EncodingOptions {
    let (audio_codec, audio_frequency) = if audio_only {
        (proto::AudioCodec::Opus, 48_000)
    } else {
        (proto::AudioCodec::Aac, 44_100)
    };
    EncodingOptions {
        width: 1280,
        height: 720,
        framerate: 30,
        video_bitrate: 3000,
        audio_codec,
        audio_frequency,
        ..EncodingOptions::default()
    }
}

/// 502 `MEDIA_UNAVAILABLE`: LiveKit Egress refused or could not be reached.
fn egress_failed(what: &str, error: impl std::fmt::Display) -> Failure {
    Failure::new(
        StatusCode::BAD_GATEWAY,
        "MEDIA_UNAVAILABLE",
        format!("LiveKit Egress did not {what} the recording: {error}"),
    )
}

/// Why an ended egress stopped, and what came of it. An egress that completes
/// without Huddle stopping it ended with its room, that is with the call.
fn outcome(info: &proto::EgressInfo) -> (StopReason, RecordingEvent) {
    let status = proto::EgressStatus::try_from(info.status).ok();
    let reason = match status {
        Some(proto::EgressStatus::EgressComplete) => StopReason::CallEnded,
        Some(proto::EgressStatus::EgressLimitReached) => StopReason::Limit,
        _ => {
            let error = match (info.error.as_str(), status) {
                ("", Some(proto::EgressStatus::EgressAborted)) => "LiveKit Egress aborted it",
                ("", _) => "LiveKit Egress failed",
                (error, _) => error,
            };
            let event = RecordingEvent::Failed {
                error: error.to_owned(),
            };
            return (StopReason::Failed, event);
        }
    };
    let event = match info.file_results.first() {
        Some(file) => RecordingEvent::Completed(RecordingResult {
            path: PathBuf::from(if file.location.is_empty() {
                &file.filename
            } else {
                &file.location
            }),
            size: u64::try_from(file.size).unwrap_or(0),
            duration: Duration::from_nanos(u64::try_from(file.duration).unwrap_or(0)),
            tracks: Vec::new(),
            dropped_frames: 0,
        }),
        None => RecordingEvent::Failed {
            error: "LiveKit Egress ended without a file".to_owned(),
        },
    };
    (reason, event)
}

impl Recorder {
    fn stopped(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.stopped.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn report(&self, file: &EgressFile, event: RecordingEvent) {
        let report = RecordingReport {
            call: file.call,
            id: file.id.clone(),
            event,
        };
        if self.reports.send(report).is_err() {
            tracing::warn!(call = %file.call, recording = %file.id, "recording report not taken");
        }
    }

    /// Starts the egress of recording `spec.id`, and stops it once it has run
    /// `spec.max_duration` (LiveKit has no such limit per egress; `spec.max_bytes`
    /// cannot be kept: LiveKit tells the size only at the end).
    async fn start(
        self: Arc<Self>,
        call: &CallSnapshot,
        spec: RecordingSpec,
    ) -> Result<(), Failure> {
        let file = EgressFile::of(call, &spec.id);
        let file_type = if file.audio_only {
            proto::EncodedFileType::Ogg
        } else {
            proto::EncodedFileType::Mp4
        };
        let output = proto::EncodedFileOutput {
            file_type: file_type as i32,
            filepath: file.filepath(),
            ..Default::default()
        };
        let options = RoomCompositeOptions {
            audio_only: file.audio_only,
            encoding: encoding(file.audio_only),
            ..Default::default()
        };
        let egress = self
            .egress
            .start_room_composite_egress(&file.room, vec![EgressOutput::File(output)], options)
            .await
            .map_err(|e| egress_failed("start", e))?;
        tracing::info!(call = %file.call, recording = %file.id, egress = %egress.egress_id, "LiveKit egress started");
        tokio::spawn(async move {
            tokio::time::sleep(spec.max_duration).await;
            if let Err(e) = self.stop(&file, StopReason::Limit).await {
                tracing::warn!(call = %file.call, recording = %file.id, error = %e.message, "recording not stopped at its limit");
            }
        });
        Ok(())
    }

    /// Stops the room's running egress that writes `file` and reports `Stopped`;
    /// nothing if none runs (it ended: its `egress_ended` webhook reports it).
    async fn stop(&self, file: &EgressFile, reason: StopReason) -> Result<(), Failure> {
        let options = EgressListOptions {
            filter: EgressListFilter::Room(file.room.clone()),
            active: true,
            page_token: None,
        };
        let egresses = self
            .egress
            .list_egress(options)
            .await
            .map_err(|e| egress_failed("find", e))?;
        let running = egresses.iter().find(|info| {
            matches!(
                proto::EgressStatus::try_from(info.status),
                Ok(proto::EgressStatus::EgressStarting | proto::EgressStatus::EgressActive)
            ) && EgressFile::recorded_by(info).as_ref() == Some(file)
        });
        let Some(egress) = running else {
            return Ok(());
        };
        self.egress
            .stop_egress(&egress.egress_id)
            .await
            .map_err(|e| egress_failed("stop", e))?;
        if self.stopped().insert(file.id.clone()) {
            self.report(file, RecordingEvent::Stopped { reason });
        }
        Ok(())
    }

    /// An egress ended: if it is a recording of Huddle's, `Stopped` (unless this
    /// process stopped it and said so), then `Completed` with the file as LiveKit
    /// reports it, or `Failed`.
    fn ended(&self, info: &proto::EgressInfo) {
        let Some(file) = EgressFile::recorded_by(info) else {
            return; // not an egress of Huddle's
        };
        let (reason, event) = outcome(info);
        if !self.stopped().remove(&file.id) {
            self.report(&file, RecordingEvent::Stopped { reason });
        }
        self.report(&file, event);
    }
}

impl MediaPlane for LiveKit {
    /// `{ token, url, roomName, identity }` for `user` in `call`: a token that joins
    /// that room only, publishing what the call type allows (no camera in an audio
    /// call), subscribing, and sending data.
    fn token(&self, call: &CallSnapshot, user: &UserId) -> Result<Value, ServiceError> {
        let room = &call.call.room_id;
        let sources: &[&str] = match call.call.call_type {
            CallType::Audio => &["microphone"],
            CallType::Video => &["microphone", "camera", "screen_share", "screen_share_audio"],
        };
        let name = call
            .member(user)
            .and_then(|p| p.display_name.clone())
            .unwrap_or_else(|| user.0.clone());
        let token = AccessToken::with_api_key(&self.config.api_key, &self.config.api_secret)
            .with_identity(&user.0)
            .with_name(&name)
            .with_ttl(self.config.token_ttl)
            .with_grants(VideoGrants {
                room_join: true,
                room: room.clone(),
                can_publish: Some(true),
                can_subscribe: Some(true),
                can_publish_data: Some(true),
                can_publish_sources: sources.iter().map(|s| (*s).to_owned()).collect(),
                ..Default::default()
            })
            .to_jwt()
            .map_err(|e| ServiceError::Media(format!("cannot mint a LiveKit token: {e}")))?;
        Ok(json!({
            "token": token,
            "url": self.config.url,
            "roomName": room,
            "identity": user.0,
        }))
    }

    fn signal<'a>(
        &'a self,
        _: &'a CallSnapshot,
        _: &'a UserId,
        _: SfuMessage,
    ) -> BoxFuture<'a, Result<Value, Failure>> {
        Box::pin(async { Err(not_an_sfu_call(MediaMode::Livekit)) })
    }

    /// Starts a room composite egress of the call's room to its file, or stops it;
    /// the result comes from the `egress_ended` webhook.
    fn recording<'a>(
        &'a self,
        call: &'a CallSnapshot,
        order: RecordingOrder,
    ) -> BoxFuture<'a, Result<RecordedBy, Failure>> {
        Box::pin(async move {
            match order {
                RecordingOrder::Start(spec) => self.recorder.clone().start(call, spec).await?,
                RecordingOrder::Stop { id } => {
                    let file = EgressFile::of(call, &id);
                    self.recorder.stop(&file, StopReason::Asked).await?
                }
            }
            Ok(RecordedBy::LiveKit)
        })
    }

    /// Keeps the room in step with the call: closed when the call ends, and a member
    /// who left or declined removed from it. Runs in the background; failures are
    /// logged (the room's empty timeout closes what is left).
    fn call_changed(&self, call: &CallSnapshot, events: &[CallEvent]) {
        for event in events {
            let (rooms, room) = (self.rooms.clone(), call.call.room_id.clone());
            match event {
                CallEvent::Ended { .. } => {
                    tokio::spawn(async move { rooms.delete(&room).await });
                }
                CallEvent::Left { user } => {
                    let identity = user.0.clone();
                    tokio::spawn(async move {
                        if let Err(e) = rooms.client.remove_participant(&room, &identity).await {
                            tracing::debug!(%room, %identity, error = %e, "LiveKit: participant not removed");
                        }
                    });
                }
                _ => {}
            }
        }
    }
}

impl RoomHost for LiveKit {
    fn open<'a>(&'a self, call: &'a CallSnapshot) -> BoxFuture<'a, Result<(), ServiceError>> {
        Box::pin(async move {
            let room = &call.call.room_id;
            let options = CreateRoomOptions {
                empty_timeout: self.config.empty_timeout,
                max_participants: self.config.max_participants.min(call.call.max_participants),
                ..Default::default()
            };
            self.rooms
                .client
                .create_room(room, options)
                .await
                .map_err(|e| {
                    ServiceError::Media(format!("LiveKit did not create the room: {e}"))
                })?;
            self.rooms.open_rooms().insert(room.clone());
            Ok(())
        })
    }

    fn close<'a>(&'a self, call: &'a CallSnapshot) -> BoxFuture<'a, ()> {
        Box::pin(self.rooms.delete(&call.call.room_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooms_name_their_calls() {
        let id = CallId::random();
        assert_eq!(call_of_room(&format!("room_{}", id.0.simple())), Some(id));
        assert_eq!(call_of_room("someone-elses-room"), None);
        assert_eq!(call_of_room("room_not-a-uuid"), None);
    }

    /// An ended room composite egress of `call`'s room that was asked to write
    /// `filepath`.
    fn egress(call: CallId, filepath: &str, status: proto::EgressStatus) -> proto::EgressInfo {
        let request = proto::RoomCompositeEgressRequest {
            room_name: format!("room_{}", call.0.simple()),
            file_outputs: vec![proto::EncodedFileOutput {
                filepath: filepath.to_owned(),
                ..Default::default()
            }],
            ..Default::default()
        };
        proto::EgressInfo {
            egress_id: "EG_test".into(),
            room_name: request.room_name.clone(),
            status: status as i32,
            request: Some(proto::egress_info::Request::RoomComposite(request)),
            ..Default::default()
        }
    }

    #[test]
    fn egresses_name_their_recordings_by_file() {
        let call = CallId::random();
        let info = egress(
            call,
            &format!("{call}/rec-1.mp4"),
            proto::EgressStatus::EgressActive,
        );
        let file = EgressFile::recorded_by(&info).unwrap();
        assert_eq!(
            (file.call, file.id.as_str(), file.audio_only),
            (call, "rec-1", false)
        );
        assert_eq!(file.filepath(), format!("{call}/rec-1.mp4"));
        let audio = egress(
            call,
            &format!("{call}/rec-2.ogg"),
            proto::EgressStatus::EgressActive,
        );
        assert!(EgressFile::recorded_by(&audio).unwrap().audio_only);
        // Another call's folder, another kind of file, another room: not Huddle's.
        let other = CallId::random();
        for path in [
            format!("{other}/rec-1.mp4"),
            format!("{call}/rec-1.webm"),
            "rec.mp4".into(),
        ] {
            let info = egress(call, &path, proto::EgressStatus::EgressActive);
            assert_eq!(EgressFile::recorded_by(&info), None, "{path}");
        }
        let mut elsewhere = info.clone();
        elsewhere.room_name = "someone-elses-room".into();
        assert_eq!(EgressFile::recorded_by(&elsewhere), None);
    }

    #[test]
    fn ended_egresses_complete_or_fail() {
        let call = CallId::random();
        let mut info = egress(
            call,
            &format!("{call}/r.mp4"),
            proto::EgressStatus::EgressComplete,
        );
        info.file_results = vec![proto::FileInfo {
            filename: format!("{call}/r.mp4"),
            location: format!("s3://bucket/{call}/r.mp4"),
            size: 4096,
            duration: 6_500_000_000,
            ..Default::default()
        }];
        let (reason, event) = outcome(&info);
        assert_eq!(reason, StopReason::CallEnded);
        let RecordingEvent::Completed(result) = event else {
            panic!("{event:?}")
        };
        assert_eq!(
            result.path,
            PathBuf::from(format!("s3://bucket/{call}/r.mp4"))
        );
        assert_eq!(
            (result.size, result.duration),
            (4096, Duration::from_millis(6500))
        );
        assert!(result.tracks.is_empty());

        info.status = proto::EgressStatus::EgressLimitReached as i32;
        assert!(matches!(
            outcome(&info),
            (StopReason::Limit, RecordingEvent::Completed(_))
        ));

        info.status = proto::EgressStatus::EgressFailed as i32;
        info.error = "disk full".into();
        assert_eq!(
            outcome(&info),
            (
                StopReason::Failed,
                RecordingEvent::Failed {
                    error: "disk full".into()
                }
            )
        );
        info.status = proto::EgressStatus::EgressAborted as i32;
        info.error.clear();
        assert!(matches!(
            outcome(&info),
            (StopReason::Failed, RecordingEvent::Failed { .. })
        ));

        info.status = proto::EgressStatus::EgressComplete as i32;
        info.file_results.clear();
        assert!(matches!(
            outcome(&info),
            (StopReason::CallEnded, RecordingEvent::Failed { .. })
        ));
    }
}
