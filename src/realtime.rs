//! The Socket.IO door to the call service. [`Realtime`] carries out signaling's
//! requests with the same service, validation and error codes as REST;
//! [`Notifier`] turns every stored change ([`CallEvent`]s, whoever caused them)
//! into notices for the call's members.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::ConnectInfo;
use axum::http::StatusCode;
use serde_json::{Value, json};
use signaling::events::{Invite, Media, Notice, Request, SfuMessage};
use signaling::{BoxFuture, CallDomain, SignalError, Signaling, User};
use tokio::sync::mpsc;

use crate::auth::{Identity, JwtKey, Role};
use crate::calls::events::CallEvent;
use crate::calls::lifecycle::{CallSnapshot, Caller, MediaFlags, MediaPatch, NewCall};
use crate::calls::model::{CallId, CallType, MediaMode, MetricSource, UserId};
use crate::calls::quality::QualityReport;
use crate::calls::service::{CallObserver, CallService};
use crate::cluster::Cluster;
use crate::live::LiveCalls;
use crate::media::{MediaAccess, Planes};
use crate::ratelimit::{RateLimits, ip_key};
use crate::recordings::{Recording, RecordingChange, RecordingObserver, RecordingService};
use crate::users::UserService;
use crate::wire::views::{ParticipantView, RecordingView, call_data, end_data};
use crate::wire::{Failure, call_id, end_reason};

/// Serves signaling requests with the call service.
#[derive(Debug)]
pub struct Realtime {
    pub service: Arc<CallService>,
    pub recordings: Arc<RecordingService>,
    pub jwt: Arc<JwtKey>,
    pub access: Arc<MediaAccess>,
    pub live: Arc<LiveCalls>,
    /// The REST rate limiters, shared: one budget per user and per address.
    pub limits: Arc<RateLimits>,
    /// In a cluster: presence is cluster-wide.
    pub cluster: Option<Arc<Cluster>>,
    /// Users coming back are recorded as seen.
    pub users: Arc<UserService>,
}

impl From<Failure> for SignalError {
    fn from(e: Failure) -> Self {
        SignalError {
            code: e.code.into_owned(),
            message: e.message,
            field: e.field,
            retry_after: e.retry_after,
        }
    }
}

fn caller(user: &User) -> Caller {
    Caller {
        id: UserId(user.id.clone()),
        name: user.name.clone(),
    }
}

impl Realtime {
    async fn request(&self, user: &User, request: Request) -> Result<Value, Failure> {
        let me = caller(user);
        let service = &self.service;
        Ok(match request {
            Request::Invite(invite) => self.invite(&me, user.admin, invite).await?,
            Request::Accept(accept) => {
                let media = MediaFlags {
                    audio: accept.audio_enabled.unwrap_or(true),
                    video: accept.video_enabled.unwrap_or(true),
                };
                let call = service.join(&me, call_id(&accept.call_id)?, media).await?;
                self.access.connect_data(&call, &me.id)?
            }
            Request::Decline { call_id: id } => {
                call_data(&service.decline(&me.id, call_id(&id)?).await?)
            }
            Request::End {
                call_id: id,
                reason,
            } => {
                let reason = end_reason(reason.as_deref())?;
                let (call, outcome) = service.end(&me.id, call_id(&id)?, reason).await?;
                end_data(&call, outcome)
            }
            Request::Toggle {
                call_id: id,
                media,
                enabled,
            } => {
                let mut patch = MediaPatch::default();
                *match media {
                    Media::Audio => &mut patch.audio,
                    Media::Video => &mut patch.video,
                    Media::ScreenShare => &mut patch.screen_share,
                } = Some(enabled);
                let call = service.update_media(&me.id, call_id(&id)?, patch).await?;
                json!({ "participant": call.member(&me.id).map(ParticipantView::from) })
            }
            Request::RecordingStart {
                call_id: id,
                format,
            } => {
                let recording = self
                    .recordings
                    .start(&me.id, user.admin, call_id(&id)?, format.as_deref())
                    .await?;
                json!({ "recording": RecordingView::from(&recording) })
            }
            Request::RecordingStop { call_id: id } => {
                let recording = self
                    .recordings
                    .stop(&me.id, user.admin, call_id(&id)?)
                    .await?;
                json!({ "recording": RecordingView::from(&recording) })
            }
            Request::Quality(q) => {
                let report = QualityReport {
                    jitter: q.jitter,
                    packet_loss: q.packet_loss,
                    round_trip_time: q.round_trip_time,
                    bandwidth: q.bandwidth,
                    fps: q.fps,
                    resolution: q.resolution,
                    codec: q.codec,
                };
                let metric = service
                    .report_quality(&me.id, call_id(&q.call_id)?, report, MetricSource::Client)
                    .await?;
                json!({ "quality": metric.quality, "timestamp": metric.timestamp })
            }
        })
    }

    /// `call:invite`: into a running call with `callId`, else a new call.
    async fn invite(&self, me: &Caller, admin: bool, invite: Invite) -> Result<Value, Failure> {
        let invitees: Vec<UserId> = invite.participant_ids.into_iter().map(UserId).collect();
        if let Some(id) = invite.call_id {
            let call = self.service.invite(&me.id, call_id(&id)?, invitees).await?;
            return Ok(call_data(&call));
        }
        let call_type = invite
            .call_type
            .as_deref()
            .unwrap_or_default()
            .parse::<CallType>()
            .map_err(|_| Failure::invalid("type", "must be audio or video"))?;
        let media_mode = match invite.media_mode.as_deref() {
            None => self.service.default_media_mode(),
            Some(mode) => mode
                .parse::<MediaMode>()
                .map_err(|_| Failure::invalid("mediaMode", "must be sfu, p2p or livekit"))?,
        };
        let request = NewCall {
            media_mode,
            call_type,
            invitees,
            chat_id: invite.chat_id,
            media: MediaFlags {
                audio: invite.audio_enabled.unwrap_or(true),
                video: invite.video_enabled.unwrap_or(true),
            },
        };
        let record = invite.recording_enabled.unwrap_or(false);
        let call = self
            .recordings
            .start_call(me, admin, request, record)
            .await?;
        Ok(self.access.connect_data(&call, &me.id)?)
    }

    /// A `webrtc:*` message to `"sfu"`: for the plane of the call, from one of its
    /// joined members.
    async fn to_media(&self, user: &User, message: SfuMessage) -> Result<Value, Failure> {
        let me = UserId(user.id.clone());
        let id = call_id(&message.call_id)?;
        let call = self.live.joined(&self.service, &me, id).await?;
        let plane = self.access.planes.of(call.call.media_mode);
        plane.signal(&call, &me, message).await
    }

    /// `webrtc:*` messages go only between members who have both joined the call: a
    /// ringing invitee neither sends nor receives them until they answer.
    async fn relay_check(&self, user: &User, call: &str, target: &str) -> Result<(), Failure> {
        let sender = UserId(user.id.clone());
        let target = UserId(target.to_owned());
        let target_joined = |call: &CallSnapshot| match call.member(&target) {
            Some(p) if p.is_joined() => Ok(()),
            Some(_) => Err(Failure::new(
                StatusCode::CONFLICT,
                "TARGET_NOT_IN_CALL",
                "the target has not joined this call (yet)",
            )),
            None => Err(Failure::new(
                StatusCode::FORBIDDEN,
                "NOT_A_MEMBER",
                "the target is not a member of this call",
            )),
        };
        self.live
            .checked(&self.service, &sender, call_id(call)?, target_joined)
            .await
            .map(|_| ())
    }
}

impl CallDomain for Realtime {
    fn authenticate(
        &self,
        token: &str,
        request: &axum::http::request::Parts,
    ) -> Result<User, String> {
        let identity = self
            .jwt
            .verify(token, self.service.now().timestamp())
            .map_err(|e| e.to_string())?;
        let ip = request
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip());
        Ok(User {
            id: identity.id.0,
            name: identity.name,
            ip,
            admin: identity.admin,
            role: identity.role.as_str().to_owned(),
        })
    }

    /// Socket.IO events spend the same budgets as REST requests: per client
    /// address (RATE_LIMIT_IP_*) and per user (RATE_LIMIT_USER_*).
    fn admit(&self, user: &User) -> Result<(), SignalError> {
        let now = self.service.now();
        if let Some(ip) = user.ip {
            self.limits
                .ip
                .check(&ip_key(ip), now)
                .map_err(|r| SignalError::from(Failure::rate_limited(r)))?;
        }
        self.limits
            .user
            .check(&UserId(user.id.clone()), now)
            .map_err(|r| SignalError::from(Failure::rate_limited(r)))
    }

    fn handle<'a>(
        &'a self,
        user: &'a User,
        request: Request,
    ) -> BoxFuture<'a, Result<Value, SignalError>> {
        Box::pin(async move { self.request(user, request).await.map_err(SignalError::from) })
    }

    fn may_relay<'a>(
        &'a self,
        user: &'a User,
        call: &'a str,
        target: &'a str,
    ) -> BoxFuture<'a, Result<(), SignalError>> {
        Box::pin(async move {
            self.relay_check(user, call, target)
                .await
                .map_err(SignalError::from)
        })
    }

    fn to_sfu<'a>(
        &'a self,
        user: &'a User,
        message: SfuMessage,
    ) -> BoxFuture<'a, Result<Value, SignalError>> {
        Box::pin(async move {
            self.to_media(user, message)
                .await
                .map_err(SignalError::from)
        })
    }

    /// In a cluster, a user whose last socket here closed is away only if no other
    /// live node holds one of theirs; if one appeared meanwhile, they are back.
    fn user_away<'a>(&'a self, user: &'a User) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let user = UserId(user.id.clone());
            let Some(cluster) = &self.cluster else {
                return self.service.away(&user).await.map_err(|e| e.to_string());
            };
            if cluster.user_gone(&user).await.map_err(|e| e.to_string())? {
                return Ok(());
            }
            self.service.away(&user).await.map_err(|e| e.to_string())?;
            if cluster
                .connected_anywhere(&user)
                .await
                .map_err(|e| e.to_string())?
            {
                self.service.back(&user).await.map_err(|e| e.to_string())?;
            }
            Ok(())
        })
    }

    fn user_back<'a>(&'a self, user: &'a User) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let who = Identity::new(
                UserId(user.id.clone()),
                user.name.clone(),
                Role::of_claim(Some(&user.role)),
            );
            self.users.seen(&who).await.map_err(|e| e.message)?;
            let user = who.id;
            if let Some(cluster) = &self.cluster {
                cluster.user_here(&user).await.map_err(|e| e.to_string())?;
            }
            self.service.back(&user).await.map_err(|e| e.to_string())
        })
    }
}

/// Announces call changes to their members over Socket.IO, keeps [`LiveCalls`]
/// current, and keeps each call's media room in step.
#[derive(Debug)]
pub struct Notifier {
    pub signaling: Signaling,
    pub live: Arc<LiveCalls>,
    /// Each call's room follows its call on the plane of its media mode.
    pub planes: Arc<Planes>,
    /// In a cluster: the other nodes hear of every change.
    pub cluster: Option<Arc<Cluster>>,
    /// Calls that ended, for the services that follow them: the recording service
    /// (which stops their recordings) and the queue service (which closes the
    /// assignments they were).
    pub call_ended: Vec<mpsc::UnboundedSender<CallId>>,
    /// Users away (`true`) or back, for the queue service (customers away too long
    /// are abandoned).
    pub presence: mpsc::UnboundedSender<(UserId, bool)>,
}

impl CallObserver for Notifier {
    fn presence_changed(&self, user: &UserId, away: bool) {
        let _ = self.presence.send((user.clone(), away));
    }

    fn call_changed(&self, call: &CallSnapshot, events: &[CallEvent]) {
        self.live.update(call);
        self.planes
            .of(call.call.media_mode)
            .call_changed(call, events);
        if let Some(cluster) = &self.cluster {
            cluster.call_changed(call, events);
        }
        if events.iter().any(|e| matches!(e, CallEvent::Ended { .. })) {
            for follower in &self.call_ended {
                let _ = follower.send(call.call.id);
            }
        }
        let members = members(call);
        let call_id = call.call.id.to_string();
        let participant = |user: &UserId| json!(call.member(user).map(ParticipantView::from));
        for event in events {
            let (call_id, user_id) = (call_id.clone(), |u: &UserId| u.0.clone());
            let notice = match event {
                CallEvent::Incoming { in_call, .. } => {
                    let mut invitation = call_data(call);
                    invitation["callId"] = json!(call_id);
                    invitation["type"] = json!(call.call.call_type);
                    invitation["from"] = participant(&call.call.initiator_id);
                    Notice::Incoming {
                        call_id,
                        invitation,
                        in_call: *in_call,
                    }
                }
                CallEvent::Accepted { user } => Notice::Accepted {
                    call_id,
                    user_id: user_id(user),
                },
                CallEvent::Declined { user } => Notice::Declined {
                    call_id,
                    user_id: user_id(user),
                },
                CallEvent::Joined { user } => Notice::ParticipantJoined {
                    call_id,
                    user_id: user_id(user),
                    participant: participant(user),
                },
                CallEvent::Left { user } => Notice::ParticipantLeft {
                    call_id,
                    user_id: user_id(user),
                },
                CallEvent::Updated { user } => Notice::ParticipantUpdated {
                    call_id,
                    user_id: user_id(user),
                    participant: participant(user),
                },
                CallEvent::StateChanged { state } => Notice::StateChanged {
                    call_id,
                    state: state.to_string(),
                },
                CallEvent::Ended { by, reason } => Notice::Ended {
                    call_id,
                    user_id: by.as_ref().map(user_id),
                    reason: reason.to_string(),
                },
            };
            // An invitation rings only the invitee; everything else is for every member,
            // ringing ones included (so that their devices stop ringing when it ends).
            let to = match event {
                CallEvent::Incoming { user, .. } => vec![user.0.clone()],
                _ => members.clone(),
            };
            self.signaling.notify(to, notice);
        }
    }
}

/// Everyone in `call`'s member list, ringing invitees included.
fn members(call: &CallSnapshot) -> Vec<String> {
    call.participants
        .iter()
        .map(|p| p.user_id.0.clone())
        .collect()
}

impl RecordingObserver for Notifier {
    /// Every member hears of it, ringing invitees included: nobody is recorded
    /// without being told.
    fn recording_changed(
        &self,
        call: &CallSnapshot,
        recording: &Recording,
        change: RecordingChange,
    ) {
        let (call_id, view) = (
            call.call.id.to_string(),
            json!(RecordingView::from(recording)),
        );
        let notice = match change {
            RecordingChange::Started => Notice::RecordingStarted {
                call_id,
                recording: view,
            },
            RecordingChange::Stopped { reason } => Notice::RecordingStopped {
                call_id,
                recording: view,
                reason: reason.to_owned(),
            },
            RecordingChange::Finished => Notice::RecordingFinished {
                call_id,
                recording: view,
            },
        };
        self.signaling.notify(members(call), notice);
    }
}
