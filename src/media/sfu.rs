//! The built-in SFU as a [`MediaPlane`]: a call's room is named by the call id; the
//! SFU's offers and answers go to members as `webrtc:*` notices from `"sfu"`; rooms
//! follow their calls (leaving, muting, ending). The quality the SFU measures comes
//! out as [`Measured`] reports, which the server stores (this plane does not hold the
//! call service: the service's observer holds the planes); what becomes of the
//! room's recordings goes out as [`RecordingReport`]s, to the recording service.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::StatusCode;
use rooms::{MediaSwitch, PeerId, RoomError, RoomId, Sfu, SfuConfig, SfuEvent, Source};
use serde_json::{Map, Value, json};
use signaling::Signaling;
use signaling::events::{Notice, SFU_PEER, SfuMessage, SfuMessageKind};
use tokio::sync::mpsc;

use super::{MediaPlane, RecordedBy, RecordingOrder, RecordingReport};
use crate::calls::events::CallEvent;
use crate::calls::lifecycle::{CallError, CallSnapshot};
use crate::calls::model::{CallId, Participant, UserId};
use crate::calls::quality::QualityReport;
use crate::calls::service::{BoxFuture, ServiceError};
use crate::config::{Config, outbound_ip};
use crate::wire::Failure;

/// The quality the SFU measured for a member of a call, to be stored.
#[derive(Debug)]
pub struct Measured {
    pub call: CallId,
    pub user: UserId,
    pub report: QualityReport,
}

/// The SFU, bound to its port.
#[derive(Debug)]
pub struct SfuPlane {
    pub sfu: Sfu,
    signaling: Signaling,
    measured: mpsc::UnboundedSender<Measured>,
    recordings: mpsc::UnboundedSender<RecordingReport>,
}

impl SfuPlane {
    /// Binds the SFU's port; its events are handled until the SFU stops. The SFU's
    /// quality measurements come out of the receiver; its recordings' reports go to
    /// `recordings`.
    pub async fn start(
        config: &Config,
        signaling: Signaling,
        recordings: mpsc::UnboundedSender<RecordingReport>,
    ) -> std::io::Result<(Arc<Self>, mpsc::UnboundedReceiver<Measured>)> {
        let sfu_config = SfuConfig {
            listen: SocketAddr::new(config.sfu_host, config.sfu_port),
            announce_ip: config
                .sfu_public_ip
                .unwrap_or_else(|| outbound_ip(config.sfu_host)),
            announce_port: None,
            max_peers: config.max_call_participants as usize,
            threads: Some(config.sfu_threads.map_or_else(
                || std::thread::available_parallelism().map_or(1, |n| n.get()),
                usize::from,
            )),
        };
        let (sfu, events) = Sfu::bind(sfu_config).await?;
        let (measured, reports) = mpsc::unbounded_channel();
        let plane = Arc::new(Self {
            sfu,
            signaling,
            measured,
            recordings,
        });
        tokio::spawn(pump(Arc::downgrade(&plane), events));
        Ok((plane, reports))
    }

    /// Carries out a member's `webrtc:*` message to `"sfu"`.
    async fn handle(
        &self,
        call: &CallSnapshot,
        user: &UserId,
        message: SfuMessage,
    ) -> Result<Value, Failure> {
        let member = call
            .member(user)
            .ok_or(ServiceError::Call(CallError::NotMember))?;
        let id = call.call.id;
        let (room, peer) = (room_of(id), PeerId(user.0.clone()));
        match message.kind {
            SfuMessageKind::Offer { sdp, sources } => {
                let sources = parse_sources(sources)?;
                let answer = self
                    .sfu
                    .publish(&room, &peer, sdp, sources)
                    .await
                    .map_err(room_error)?;
                self.apply_switches(&room, member);
                // The answer is the ack's too: a client that restarts its media can
                // tell which offer it answers (the notice says only whose it is).
                let answer = json!({ "type": "answer", "sdp": answer });
                self.signaling.notify(
                    vec![user.0.clone()],
                    Notice::SfuAnswer {
                        call_id: id.to_string(),
                        from_user_id: SFU_PEER,
                        answer: answer.clone(),
                    },
                );
                return Ok(json!({ "answer": answer }));
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

    /// Forwards only the media the participant has switched on.
    fn apply_switches(&self, room: &RoomId, member: &Participant) {
        let switches = [
            member.audio_enabled,
            member.video_enabled,
            member.screen_share_enabled,
        ];
        self.switch(room, &member.user_id, switches);
    }

    /// Forwards `user`'s audio, video and screen share as `on` says.
    fn switch(&self, room: &RoomId, user: &UserId, on: [bool; 3]) {
        let peer = PeerId(user.0.clone());
        let media = [
            MediaSwitch::Audio,
            MediaSwitch::Video,
            MediaSwitch::ScreenShare,
        ];
        for (media, on) in media.into_iter().zip(on) {
            self.sfu.set_muted(room, &peer, media, !on);
        }
    }

    /// Takes `user` out of `call`'s room.
    pub fn leave(&self, call: CallId, user: &UserId) {
        self.sfu.leave(&room_of(call), &PeerId(user.0.clone()));
    }

    /// Forwards `user`'s audio, video and screen share in `call`'s room as `on` says.
    pub fn set_switches(&self, call: CallId, user: &UserId, on: [bool; 3]) {
        self.switch(&room_of(call), user, on);
    }

    /// Closes `call`'s room (the call ended, or its room moves to another node).
    pub fn close(&self, call: CallId) {
        self.sfu.close(&room_of(call));
    }

    fn on_event(&self, event: SfuEvent) {
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
            SfuEvent::Recording { room, id, event } => {
                let Ok(call) = room.0.parse::<CallId>() else {
                    return;
                };
                let _ = self.recordings.send(RecordingReport { call, id, event });
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
                let _ = self.measured.send(Measured {
                    call: id,
                    user: UserId(peer.0),
                    report,
                });
            }
        }
    }
}

impl MediaPlane for SfuPlane {
    /// The built-in SFU needs no token: a member's socket is their credential.
    fn token(&self, _: &CallSnapshot, _: &UserId) -> Result<Value, ServiceError> {
        Ok(Value::Null)
    }

    fn signal<'a>(
        &'a self,
        call: &'a CallSnapshot,
        user: &'a UserId,
        message: SfuMessage,
    ) -> BoxFuture<'a, Result<Value, Failure>> {
        Box::pin(self.handle(call, user, message))
    }

    /// The room records what it forwards; it starts (if nobody has published yet)
    /// so that the recording begins once media flows.
    fn recording<'a>(
        &'a self,
        call: &'a CallSnapshot,
        order: RecordingOrder,
    ) -> BoxFuture<'a, Result<RecordedBy, Failure>> {
        let room = room_of(call.call.id);
        Box::pin(async move {
            match order {
                RecordingOrder::Start(spec) => self
                    .sfu
                    .start_recording(&room, spec)
                    .await
                    .map_err(room_error)?,
                RecordingOrder::Stop { id } => self.sfu.stop_recording(&room, &id),
            }
            Ok(RecordedBy::Here)
        })
    }

    fn call_changed(&self, call: &CallSnapshot, events: &[CallEvent]) {
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
}

/// Handles the SFU's events while the media plane exists.
async fn pump(plane: std::sync::Weak<SfuPlane>, mut events: mpsc::UnboundedReceiver<SfuEvent>) {
    while let Some(event) = events.recv().await {
        let Some(plane) = plane.upgrade() else {
            return;
        };
        plane.on_event(event);
    }
}

/// A call's room is named by the call id.
fn room_of(id: CallId) -> RoomId {
    RoomId(id.to_string())
}

fn parse_sources(sources: Vec<(String, String)>) -> Result<HashMap<String, Source>, Failure> {
    sources
        .into_iter()
        .map(|(track, source)| match Source::parse(&source) {
            Some(s) => Ok((track, s)),
            None => Err(Failure::invalid(
                format!("sources.{track}"),
                "must be microphone, camera, screen or screen_audio",
            )),
        })
        .collect()
}

fn room_error(e: RoomError) -> Failure {
    let (status, code) = match e {
        RoomError::Full(_) => (StatusCode::CONFLICT, "CALL_FULL"),
        RoomError::InvalidSdp(_) => (StatusCode::BAD_REQUEST, "INVALID_SDP"),
        RoomError::NoUsableCodecs => (StatusCode::BAD_REQUEST, "NO_USABLE_CODECS"),
        RoomError::TooManyOffers => (StatusCode::TOO_MANY_REQUESTS, "TOO_MANY_OFFERS"),
        RoomError::UnexpectedAnswer | RoomError::NotInRoom => {
            (StatusCode::CONFLICT, "NO_OFFER_PENDING")
        }
        RoomError::Closed => (StatusCode::CONFLICT, "CALL_ENDED"),
        // The spool cannot be written (or the room records already, which the
        // recording service's one-at-a-time rule leaves to a fault): a server-side
        // failure, for which the recording is marked failed.
        RoomError::Recording(_) => (StatusCode::INTERNAL_SERVER_ERROR, "RECORDING_FAILED"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "MEDIA_ERROR"),
    };
    Failure::new(status, code, e.to_string())
}
