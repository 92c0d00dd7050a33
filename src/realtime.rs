//! The Socket.IO door to the call service. [`Realtime`] carries out signaling's
//! requests with the same service, validation and error codes as REST;
//! [`Notifier`] turns every stored change ([`CallEvent`]s, whoever caused them)
//! into notices for the call's members.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};

use axum::http::StatusCode;
use serde_json::{Value, json};
use signaling::events::{Invite, Media, Notice, Request, SfuMessage};
use signaling::{BoxFuture, CallDomain, SignalError, Signaling, User};

use crate::api::ApiError;
use crate::api::calls::{call_id, end_reason, with_outcome};
use crate::api::views::{MediaAccess, ParticipantView, call_data};
use crate::auth::JwtKey;
use crate::calls::events::CallEvent;
use crate::calls::lifecycle::{CallError, CallSnapshot, Caller, MediaFlags, MediaPatch, NewCall};
use crate::calls::model::{CallId, CallType, MediaMode, MetricSource, UserId};
use crate::calls::quality::QualityReport;
use crate::calls::service::{CallObserver, CallService, ServiceError};
use crate::livekit::LiveKit;
use crate::media::MediaPlane;

/// Serves signaling requests with the call service.
#[derive(Debug)]
pub struct Realtime {
    pub service: Arc<CallService>,
    pub jwt: Arc<JwtKey>,
    pub access: Arc<MediaAccess>,
    pub members: Arc<LiveMembers>,
    pub media: Arc<MediaPlane>,
}

/// Members of the live calls this process has seen, so that relaying a `webrtc:*`
/// message (dozens per call setup) needs no database read. The [`Notifier`] keeps it
/// current: every change stored by this process passes through it. A call not in it
/// is read from the store once. (Changes made by another node sharing the database
/// are not seen: with several nodes, relays must move to a shared adapter.)
#[derive(Debug, Default)]
pub struct LiveMembers {
    // A std mutex: held for a map lookup or update, never across an await.
    calls: Mutex<HashMap<CallId, HashSet<UserId>>>,
}

impl LiveMembers {
    fn update(&self, call: &CallSnapshot) {
        let mut calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        if call.call.state.is_active() {
            let members = call
                .participants
                .iter()
                .map(|p| p.user_id.clone())
                .collect();
            calls.insert(call.call.id, members);
        } else {
            calls.remove(&call.call.id);
        }
    }

    /// Whether `a` and `b` are both members of live call `id`; `None` if the call is
    /// not known here.
    fn both_members(&self, id: CallId, a: &UserId, b: &UserId) -> Option<(bool, bool)> {
        let calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        calls.get(&id).map(|m| (m.contains(a), m.contains(b)))
    }
}

impl From<ApiError> for SignalError {
    fn from(e: ApiError) -> Self {
        SignalError {
            code: e.code.to_owned(),
            message: e.message,
            field: e.field,
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
    async fn request(&self, user: &User, request: Request) -> Result<Value, ApiError> {
        let me = caller(user);
        let service = &self.service;
        Ok(match request {
            Request::Invite(invite) => self.invite(&me, invite).await?,
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
                with_outcome(call_data(&call), outcome)
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
    async fn invite(&self, me: &Caller, invite: Invite) -> Result<Value, ApiError> {
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
            .map_err(|_| ApiError::invalid("type", "must be audio or video"))?;
        let media_mode = match invite.media_mode.as_deref() {
            None => self.service.default_media_mode(),
            Some(mode) => mode
                .parse::<MediaMode>()
                .map_err(|_| ApiError::invalid("mediaMode", "must be sfu, p2p or livekit"))?,
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
        let call = self.service.start(me, request).await?;
        Ok(self.access.connect_data(&call, &me.id)?)
    }

    async fn relay_check(&self, user: &User, call: &str, target: &str) -> Result<(), ApiError> {
        let id = call_id(call)?;
        let (sender, target) = (UserId(user.id.clone()), UserId(target.to_owned()));
        let (sender_in, target_in) = match self.members.both_members(id, &sender, &target) {
            Some(membership) => membership,
            None => {
                let call = self.service.get_active(&sender, id).await?;
                self.members.update(&call);
                (true, call.member(&target).is_some())
            }
        };
        if !sender_in {
            return Err(ServiceError::Call(CallError::NotMember).into());
        }
        if !target_in {
            let message = "the target is not a member of this call";
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "NOT_A_MEMBER",
                message,
            ));
        }
        Ok(())
    }
}

impl CallDomain for Realtime {
    fn authenticate(&self, token: &str) -> Result<User, String> {
        let identity = self
            .jwt
            .verify(token, self.service.now().timestamp())
            .map_err(|e| e.to_string())?;
        Ok(User {
            id: identity.id.0,
            name: identity.name,
        })
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
            self.media
                .handle(user, message)
                .await
                .map_err(SignalError::from)
        })
    }

    fn user_gone<'a>(&'a self, user: &'a User) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if let Err(e) = self.service.drop_out(&UserId(user.id.clone())).await {
                tracing::error!(user = %user.id, error = %e, "could not take a disconnected user out of their calls");
            }
        })
    }
}

/// Announces call changes to their members over Socket.IO, and keeps
/// [`LiveMembers`] current.
#[derive(Debug)]
pub struct Notifier {
    pub signaling: Signaling,
    pub members: Arc<LiveMembers>,
    /// The SFU, set once it is bound (it needs the call service this observes).
    pub media: OnceLock<Arc<MediaPlane>>,
    /// LiveKit, when configured: rooms follow their calls.
    pub livekit: Option<Arc<LiveKit>>,
}

impl CallObserver for Notifier {
    fn call_changed(&self, call: &CallSnapshot, events: &[CallEvent]) {
        self.members.update(call);
        if let Some(media) = self.media.get() {
            media.call_changed(call, events);
        }
        if let Some(livekit) = &self.livekit {
            livekit.call_changed(call, events);
        }
        let members: Vec<String> = call
            .participants
            .iter()
            .map(|p| p.user_id.0.clone())
            .collect();
        let call_id = call.call.id.to_string();
        let participant = |user: &UserId| json!(call.member(user).map(ParticipantView::from));
        for event in events {
            let (call_id, user_id) = (call_id.clone(), |u: &UserId| u.0.clone());
            let notice = match event {
                CallEvent::Incoming { .. } => {
                    let mut invitation = call_data(call);
                    invitation["callId"] = json!(call_id);
                    invitation["type"] = json!(call.call.call_type);
                    invitation["from"] = participant(&call.call.initiator_id);
                    Notice::Incoming {
                        call_id,
                        invitation,
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
                CallEvent::Incoming { user } => vec![user.0.clone()],
                _ => members.clone(),
            };
            self.signaling.notify(to, notice);
        }
    }
}
