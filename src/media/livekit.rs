//! LiveKit as a call's media plane (`mediaMode: "livekit"`): Huddle keeps the call,
//! its ringing, history and records; media flows through the operator's LiveKit.
//! A call opens its LiveKit room before it is stored and closes it when it ends;
//! start, join and token responses carry a LiveKit access token for that room; a
//! participant who leaves the call is removed from the room; LiveKit's signed webhooks
//! feed joins, departures and the room's end back into the call.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use livekit_api::access_token::{AccessToken, TokenVerifier, VideoGrants};
use livekit_api::services::room::{CreateRoomOptions, RoomClient};
use livekit_api::webhooks::WebhookReceiver;
use serde_json::{Value, json};

use signaling::events::SfuMessage;

use super::{MediaPlane, not_an_sfu_call};
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

/// The LiveKit media plane: a RoomService client, the token minter and the webhook
/// checker, all with the same API key.
pub struct LiveKit {
    config: LiveKitConfig,
    rooms: Arc<Rooms>,
    webhooks: WebhookReceiver,
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
    pub fn new(config: LiveKitConfig) -> Self {
        let client = RoomClient::with_api_key(&config.url, &config.api_key, &config.api_secret)
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

    /// Keeps the room in step with the call: closed when the call ends, and a member
    /// who left or declined removed from it. Runs in the background; failures are
    /// logged (the room's empty timeout closes what is left).
    fn recording<'a>(
        &'a self,
        call: &'a CallSnapshot,
        _order: crate::media::RecordingOrder,
    ) -> BoxFuture<'a, Result<(), Failure>> {
        // CONTRACT (rec-base): replaced by the helper that implements this plane.
        Box::pin(async move { Err(crate::media::cannot_record(call.call.media_mode)) })
    }

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
}
