//! The built-in SFU as the call service sees it. [`MediaPlane`] admits only joined
//! members of `sfu`-mode calls to a call's room, turns the SFU's offers and answers
//! into `webrtc:*` notices from `"sfu"`, keeps rooms in step with the calls (leaving,
//! muting, ending), and stores the quality the SFU measures.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::StatusCode;
use rooms::{MediaSwitch, PeerId, RoomError, RoomId, Sfu, SfuConfig, SfuEvent, Source};
use serde_json::{Map, Value, json};
use signaling::events::{Notice, SFU_PEER, SfuMessage, SfuMessageKind};
use signaling::{Signaling, User};
use tokio::sync::mpsc;

use crate::api::ApiError;
use crate::api::calls::call_id;
use crate::calls::events::CallEvent;
use crate::calls::lifecycle::{CallError, CallSnapshot};
use crate::calls::model::{CallId, MediaMode, MetricSource, Participant, UserId};
use crate::calls::quality::QualityReport;
use crate::calls::service::{CallService, ServiceError};
use crate::config::{Config, outbound_ip};
use crate::live::LiveCalls;

/// The SFU, bound to its port, and what it needs to reach the call service.
#[derive(Debug)]
pub struct MediaPlane {
    pub sfu: Sfu,
    service: Arc<CallService>,
    signaling: Signaling,
    /// Who may reach a room, without a database read per message.
    live: Arc<LiveCalls>,
}

impl MediaPlane {
    /// Binds the SFU's port; its events are handled until the SFU stops.
    pub async fn start(
        config: &Config,
        service: Arc<CallService>,
        signaling: Signaling,
        live: Arc<LiveCalls>,
    ) -> std::io::Result<Arc<Self>> {
        let sfu_config = SfuConfig {
            listen: SocketAddr::new(config.sfu_host, config.sfu_port),
            announce_ip: config
                .sfu_public_ip
                .unwrap_or_else(|| outbound_ip(config.sfu_host)),
            announce_port: None,
            max_peers: config.max_call_participants as usize,
        };
        let (sfu, events) = Sfu::bind(sfu_config).await?;
        let plane = Arc::new(Self {
            sfu,
            service,
            signaling,
            live,
        });
        tokio::spawn(pump(Arc::downgrade(&plane), events));
        Ok(plane)
    }

    /// Carries out a client's `webrtc:*` message to `"sfu"`.
    pub async fn handle(&self, user: &User, message: SfuMessage) -> Result<Value, ApiError> {
        let id = call_id(&message.call_id)?;
        let me = UserId(user.id.clone());
        let call = self.live.joined(&self.service, &me, id).await?;
        let member = call
            .member(&me)
            .ok_or(ServiceError::Call(CallError::NotMember))?;
        if call.call.media_mode != MediaMode::Sfu {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "NOT_AN_SFU_CALL",
                "this call's media is p2p: send webrtc messages to its members",
            ));
        }
        let (room, peer) = (room_of(id), PeerId(user.id.clone()));
        match message.kind {
            SfuMessageKind::Offer { sdp, sources } => {
                let sources = parse_sources(sources)?;
                let answer = self
                    .sfu
                    .publish(&room, &peer, sdp, sources)
                    .await
                    .map_err(room_error)?;
                self.apply_switches(&room, member);
                self.signaling.notify(
                    vec![user.id.clone()],
                    Notice::SfuAnswer {
                        call_id: id.to_string(),
                        from_user_id: SFU_PEER,
                        answer: json!({ "type": "answer", "sdp": answer }),
                    },
                );
            }
            SfuMessageKind::Answer { sdp } => {
                self.sfu
                    .answer(&room, &peer, sdp)
                    .await
                    .map_err(room_error)?;
            }
            SfuMessageKind::Candidate => {}
        }
        Ok(json!({}))
    }

    /// Keeps the call's room in step with a stored change.
    pub fn call_changed(&self, call: &CallSnapshot, events: &[CallEvent]) {
        if call.call.media_mode != MediaMode::Sfu {
            return;
        }
        let room = room_of(call.call.id);
        for event in events {
            match event {
                CallEvent::Left { user } => self.sfu.leave(&room, &PeerId(user.0.clone())),
                CallEvent::Updated { user } => {
                    if let Some(member) = call.member(user) {
                        self.apply_switches(&room, member);
                    }
                }
                CallEvent::Ended { .. } => self.sfu.close(&room),
                _ => {}
            }
        }
    }

    /// Forwards only the media the participant has switched on.
    fn apply_switches(&self, room: &RoomId, member: &Participant) {
        let peer = PeerId(member.user_id.0.clone());
        for (media, on) in [
            (MediaSwitch::Audio, member.audio_enabled),
            (MediaSwitch::Video, member.video_enabled),
            (MediaSwitch::ScreenShare, member.screen_share_enabled),
        ] {
            self.sfu.set_muted(room, &peer, media, !on);
        }
    }

    async fn on_event(&self, event: SfuEvent) {
        match event {
            SfuEvent::Offer {
                room,
                peer,
                sdp,
                tracks,
            } => {
                let tracks: Map<String, Value> = tracks
                    .into_iter()
                    .map(|t| {
                        let info = json!({ "userId": t.peer.0, "source": t.source.as_str() });
                        (t.mid, info)
                    })
                    .collect();
                self.signaling.notify(
                    vec![peer.0],
                    Notice::SfuOffer {
                        call_id: room.0,
                        from_user_id: SFU_PEER,
                        offer: json!({ "type": "offer", "sdp": sdp }),
                        tracks: Value::Object(tracks),
                    },
                );
            }
            SfuEvent::Quality { room, peer, stats } => {
                let Ok(id) = room.0.parse::<CallId>() else {
                    return;
                };
                let report = QualityReport {
                    jitter: Some(stats.jitter_ms),
                    packet_loss: Some(stats.packet_loss),
                    round_trip_time: stats.round_trip_ms,
                    bandwidth: Some(stats.bitrate / 1000.0),
                    ..QualityReport::default()
                };
                let stored = self
                    .service
                    .report_quality(&UserId(peer.0.clone()), id, report, MetricSource::Sfu)
                    .await;
                if let Err(e) = stored {
                    tracing::debug!(call = %id, user = %peer, error = %e, "SFU quality not stored");
                }
            }
        }
    }
}

/// Handles the SFU's events while the media plane exists.
async fn pump(plane: std::sync::Weak<MediaPlane>, mut events: mpsc::UnboundedReceiver<SfuEvent>) {
    while let Some(event) = events.recv().await {
        let Some(plane) = plane.upgrade() else {
            return;
        };
        plane.on_event(event).await;
    }
}

/// A call's room is named by the call id.
fn room_of(id: CallId) -> RoomId {
    RoomId(id.to_string())
}

fn parse_sources(sources: Vec<(String, String)>) -> Result<HashMap<String, Source>, ApiError> {
    sources
        .into_iter()
        .map(|(track, source)| match Source::parse(&source) {
            Some(s) => Ok((track, s)),
            None => Err(ApiError::invalid(
                format!("sources.{track}"),
                "must be microphone, camera, screen or screen_audio",
            )),
        })
        .collect()
}

fn room_error(e: RoomError) -> ApiError {
    let (status, code) = match e {
        RoomError::Full(_) => (StatusCode::CONFLICT, "CALL_FULL"),
        RoomError::InvalidSdp(_) => (StatusCode::BAD_REQUEST, "INVALID_SDP"),
        RoomError::NoUsableCodecs => (StatusCode::BAD_REQUEST, "NO_USABLE_CODECS"),
        RoomError::TooManyOffers => (StatusCode::TOO_MANY_REQUESTS, "TOO_MANY_OFFERS"),
        RoomError::UnexpectedAnswer | RoomError::NotInRoom => {
            (StatusCode::CONFLICT, "NO_OFFER_PENDING")
        }
        RoomError::Closed => (StatusCode::CONFLICT, "CALL_ENDED"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "MEDIA_ERROR"),
    };
    ApiError::new(status, code, e.to_string())
}
