//! The wire protocol: event names, what clients send (parsed and checked into
//! [`Request`]s) and what the server sends ([`Notice`]s). Payload fields are
//! camelCase, as in the primary contract.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::SignalError;

/// Client → server events.
pub mod client {
    pub const INVITE: &str = "call:invite";
    pub const ACCEPT: &str = "call:accept";
    pub const DECLINE: &str = "call:decline";
    pub const END: &str = "call:end";
    pub const TOGGLE_AUDIO: &str = "call:toggle_audio";
    pub const TOGGLE_VIDEO: &str = "call:toggle_video";
    pub const TOGGLE_SCREEN_SHARE: &str = "call:toggle_screen_share";
    pub const QUALITY_UPDATE: &str = "call:quality_update";
    pub const RECORDING_START: &str = "call:recording_start";
    pub const RECORDING_STOP: &str = "call:recording_stop";
}

/// Events relayed between members of a call (both directions).
pub mod webrtc {
    pub const OFFER: &str = "webrtc:offer";
    pub const ANSWER: &str = "webrtc:answer";
    pub const ICE_CANDIDATE: &str = "webrtc:ice_candidate";
}

/// Answered with what was sent: a round-trip probe for clients measuring signaling
/// latency.
pub const ECHO: &str = "echo";

/// The server's error event, for requests sent without an acknowledgement callback.
pub const CALL_ERROR: &str = "call:error";

/// Longest id accepted in a payload (call ids, user ids, chat ids).
pub const MAX_ID_LEN: usize = 128;
/// Largest `webrtc:*` payload relayed, serialized. SDP with many codecs is ~10 KiB.
pub const MAX_RELAY_BYTES: usize = 64 * 1024;
/// The reserved peer id of the server's own media plane.
pub const SFU_PEER: &str = "sfu";

/// Which media a toggle is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Media {
    Audio,
    Video,
    ScreenShare,
}

/// A checked client request.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// With a `call_id`: ring more users into that call. Without: start a call.
    Invite(Invite),
    Accept(Accept),
    Decline {
        call_id: String,
    },
    End {
        call_id: String,
        reason: Option<String>,
    },
    Toggle {
        call_id: String,
        media: Media,
        enabled: bool,
    },
    Quality(Quality),
    /// Start recording the call; `format`: `webm` (the default) is the only one.
    RecordingStart {
        call_id: String,
        format: Option<String>,
    },
    RecordingStop {
        call_id: String,
    },
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Invite {
    pub call_id: Option<String>,
    #[serde(default)]
    pub participant_ids: Vec<String>,
    /// `audio` or `video`, to start a call.
    #[serde(rename = "type")]
    pub call_type: Option<String>,
    pub chat_id: Option<String>,
    pub audio_enabled: Option<bool>,
    pub video_enabled: Option<bool>,
    /// `sfu` (default) or `p2p`, to start a call.
    pub media_mode: Option<String>,
    /// Record the call from its start (as `call:recording_start` once media flows).
    pub recording_enabled: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Accept {
    pub call_id: String,
    pub audio_enabled: Option<bool>,
    pub video_enabled: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Quality {
    pub call_id: String,
    pub jitter: Option<f64>,
    pub packet_loss: Option<f64>,
    pub round_trip_time: Option<f64>,
    pub bandwidth: Option<f64>,
    pub fps: Option<f64>,
    pub resolution: Option<String>,
    pub codec: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CallRef {
    call_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RecordingStart {
    call_id: String,
    format: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct End {
    call_id: String,
    reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Toggle {
    call_id: String,
    enabled: bool,
}

/// The seed's `call:invite` carries its users in `invitation`; accept them there too.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct InviteEnvelope {
    #[serde(flatten)]
    invite: Invite,
    invitation: Option<Invite>,
}

/// A `webrtc:*` payload: where it goes and what it carries.
#[derive(Debug, Clone, PartialEq)]
pub struct Relay {
    pub call_id: String,
    pub target_user_id: String,
    /// `offer`, `answer` or `candidate`.
    pub field: &'static str,
    pub body: Value,
    /// With an offer to the SFU: what each track carries, by track id.
    pub sources: Option<Value>,
}

/// A `webrtc:*` message for the built-in SFU (`targetUserId: "sfu"`).
#[derive(Debug, Clone, PartialEq)]
pub struct SfuMessage {
    pub call_id: String,
    pub kind: SfuMessageKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SfuMessageKind {
    /// The client's offer on its publish connection, with what each track carries
    /// (`microphone`, `camera`, `screen`, `screen_audio`) by track id.
    Offer {
        sdp: String,
        sources: Vec<(String, String)>,
    },
    /// The client's answer to the SFU's offer on its subscribe connection.
    Answer { sdp: String },
    /// A candidate: the SFU is ICE-lite and learns addresses from the client's
    /// checks, so candidates are accepted and not needed.
    Candidate,
}

impl SfuMessage {
    /// Reads an SFU message from a relay addressed to [`SFU_PEER`].
    pub fn from_relay(relay: Relay) -> Result<Self, SignalError> {
        let sdp = |expected: &str| -> Result<String, SignalError> {
            let field = relay.field;
            let (kind, sdp) = match &relay.body {
                Value::String(sdp) => (None, Some(sdp.as_str())),
                Value::Object(o) => (
                    o.get("type").and_then(Value::as_str),
                    o.get("sdp").and_then(Value::as_str),
                ),
                _ => (None, None),
            };
            let sdp =
                sdp.ok_or_else(|| SignalError::invalid(&format!("{field}.sdp"), "is required"))?;
            if kind.is_some_and(|k| k != expected) {
                return Err(SignalError::invalid(
                    &format!("{field}.type"),
                    format!("must be `{expected}`"),
                ));
            }
            if sdp.trim().is_empty() {
                return Err(SignalError::invalid(&format!("{field}.sdp"), "is empty"));
            }
            Ok(sdp.to_owned())
        };
        let kind = match relay.field {
            "offer" => {
                let sdp = sdp("offer")?;
                let sources = match &relay.sources {
                    None | Some(Value::Null) => Vec::new(),
                    Some(Value::Object(map)) => map
                        .iter()
                        .map(|(track, source)| match source {
                            Value::String(s) => Ok((track.clone(), s.clone())),
                            _ => Err(SignalError::invalid(
                                &format!("sources.{track}"),
                                "expected a string",
                            )),
                        })
                        .collect::<Result<_, _>>()?,
                    Some(_) => return Err(SignalError::invalid("sources", "expected an object")),
                };
                SfuMessageKind::Offer { sdp, sources }
            }
            "answer" => SfuMessageKind::Answer {
                sdp: sdp("answer")?,
            },
            _ => SfuMessageKind::Candidate,
        };
        Ok(SfuMessage {
            call_id: relay.call_id,
            kind,
        })
    }
}

/// Parses the payload of client event `event` into a request. `None` for events that
/// are not requests (relays, unknown names).
pub fn parse_request(event: &str, data: &Value) -> Option<Result<Request, SignalError>> {
    let toggle = |media| {
        parse::<Toggle>(data).and_then(|t| {
            check_field_id("callId", &t.call_id)?;
            Ok(Request::Toggle {
                call_id: t.call_id,
                media,
                enabled: t.enabled,
            })
        })
    };
    Some(match event {
        client::INVITE => parse::<InviteEnvelope>(data).and_then(|envelope| {
            let mut invite = envelope.invite;
            if let Some(inner) = envelope.invitation {
                if invite.participant_ids.is_empty() {
                    invite.participant_ids = inner.participant_ids;
                }
                invite.call_type = invite.call_type.or(inner.call_type);
                invite.chat_id = invite.chat_id.or(inner.chat_id);
            }
            if let Some(id) = &invite.call_id {
                check_field_id("callId", id)?;
            } else if invite.call_type.is_none() {
                return Err(SignalError::invalid(
                    "callId",
                    "give callId to invite into a call, or type to start one",
                ));
            }
            for (i, id) in invite.participant_ids.iter().enumerate() {
                check_field_id(&format!("participantIds[{i}]"), id)?;
            }
            if let Some(chat) = &invite.chat_id {
                check_field_id("chatId", chat)?;
            }
            Ok(Request::Invite(invite))
        }),
        client::ACCEPT => parse::<Accept>(data).and_then(|a| {
            check_field_id("callId", &a.call_id)?;
            Ok(Request::Accept(a))
        }),
        client::DECLINE => parse::<CallRef>(data).and_then(|c| {
            check_field_id("callId", &c.call_id)?;
            Ok(Request::Decline { call_id: c.call_id })
        }),
        client::END => parse::<End>(data).and_then(|e| {
            check_field_id("callId", &e.call_id)?;
            Ok(Request::End {
                call_id: e.call_id,
                reason: e.reason,
            })
        }),
        client::RECORDING_START => parse::<RecordingStart>(data).and_then(|r| {
            check_field_id("callId", &r.call_id)?;
            Ok(Request::RecordingStart {
                call_id: r.call_id,
                format: r.format,
            })
        }),
        client::RECORDING_STOP => parse::<CallRef>(data).and_then(|c| {
            check_field_id("callId", &c.call_id)?;
            Ok(Request::RecordingStop { call_id: c.call_id })
        }),
        client::TOGGLE_AUDIO => toggle(Media::Audio),
        client::TOGGLE_VIDEO => toggle(Media::Video),
        client::TOGGLE_SCREEN_SHARE => toggle(Media::ScreenShare),
        client::QUALITY_UPDATE => parse::<Quality>(data).and_then(|q| {
            check_field_id("callId", &q.call_id)?;
            check_quality(&q)?;
            Ok(Request::Quality(q))
        }),
        _ => return None,
    })
}

/// Parses a `webrtc:*` payload. `None` for other events.
pub fn parse_relay(event: &str, data: Value) -> Option<Result<Relay, SignalError>> {
    let field = match event {
        webrtc::OFFER => "offer",
        webrtc::ANSWER => "answer",
        webrtc::ICE_CANDIDATE => "candidate",
        _ => return None,
    };
    Some(parse_relay_body(field, data))
}

fn parse_relay_body(field: &'static str, data: Value) -> Result<Relay, SignalError> {
    if serde_json::to_vec(&data).map_or(usize::MAX, |b| b.len()) > MAX_RELAY_BYTES {
        return Err(SignalError::new(
            "PAYLOAD_TOO_LARGE",
            format!("webrtc payloads are limited to {MAX_RELAY_BYTES} bytes"),
        ));
    }
    let Value::Object(mut object) = data else {
        return Err(SignalError::invalid("body", "expected an object"));
    };
    let mut text = |name: &str| match object.remove(name) {
        Some(Value::String(s)) => check_field_id(name, &s).map(|()| s),
        Some(_) => Err(SignalError::invalid(name, "expected a string")),
        None => Err(SignalError::invalid(name, "is required")),
    };
    let call_id = text("callId")?;
    let target_user_id = text("targetUserId")?;
    let body = match object.remove(field) {
        Some(body @ (Value::Object(_) | Value::String(_))) => body,
        Some(_) => return Err(SignalError::invalid(field, "expected an object")),
        None => return Err(SignalError::invalid(field, "is required")),
    };
    Ok(Relay {
        call_id,
        target_user_id,
        field,
        body,
        sources: object.remove("sources"),
    })
}

fn parse<T: DeserializeOwned>(data: &Value) -> Result<T, SignalError> {
    serde_path_to_error::deserialize(data).map_err(|e| {
        let message = e.inner().to_string();
        let path = e.path().to_string();
        let field = if path == "." {
            message.split('`').nth(1).unwrap_or("payload").to_owned()
        } else {
            path
        };
        SignalError::invalid(&field, message)
    })
}

fn check_field_id(field: &str, value: &str) -> Result<(), SignalError> {
    check_id(value).map_err(|rule| SignalError::invalid(field, rule))
}

/// The rule every id from outside follows (a token's `sub`, `participantIds`,
/// `chatId`), returned as the text of the refusal. Ids are stored, compared and shown
/// to other people: control characters (PostgreSQL refuses NUL outright, terminals and
/// logs misread the rest), blank ids that look like nobody, and bidirectional overrides
/// that make one id display as another are refused wherever an id comes in.
pub fn check_id(value: &str) -> Result<(), &'static str> {
    const RULE: &str = "must be 1 to 128 characters, not all whitespace, without control or \
                        bidirectional-override characters";
    let len = value.chars().count();
    if len == 0 || len > MAX_ID_LEN || value.trim().is_empty() || value.chars().any(forbidden) {
        return Err(RULE);
    }
    Ok(())
}

/// The rule for a display name (a token's `name`): as for ids, but it may be empty or
/// blank (then the participant simply has no display name).
pub fn check_name(value: &str) -> Result<(), &'static str> {
    const RULE: &str =
        "must be at most 128 characters, without control or bidirectional-override characters";
    if value.chars().count() > MAX_ID_LEN || value.chars().any(forbidden) {
        return Err(RULE);
    }
    Ok(())
}

/// Control characters, and the Unicode bidirectional embeddings, overrides and isolates
/// (U+202A–U+202E, U+2066–U+2069) that reorder how the text around them is displayed.
fn forbidden(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

fn check_quality(q: &Quality) -> Result<(), SignalError> {
    let figures = [
        ("jitter", q.jitter, 60_000.0),
        ("packetLoss", q.packet_loss, 100.0),
        ("roundTripTime", q.round_trip_time, 60_000.0),
        ("bandwidth", q.bandwidth, 10_000_000.0),
        ("fps", q.fps, 1_000.0),
    ];
    for (field, value, max) in figures {
        if value.is_some_and(|v| !(0.0..=max).contains(&v)) {
            return Err(SignalError::invalid(
                field,
                format!("must be from 0 to {max}"),
            ));
        }
    }
    for (field, value) in [("resolution", &q.resolution), ("codec", &q.codec)] {
        if value.as_ref().is_some_and(|v| v.len() > 64) {
            return Err(SignalError::invalid(field, "must be at most 64 characters"));
        }
    }
    Ok(())
}

/// Server → client events. Each serializes to the event's payload object.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged, rename_all_fields = "camelCase")]
pub enum Notice {
    /// `call:incoming`: you are being rung; `in_call`: while you are in another call
    /// (call waiting: answering it does not end the other one).
    Incoming {
        call_id: String,
        invitation: Value,
        in_call: bool,
    },
    /// `call:accepted`: `user_id` answered.
    Accepted { call_id: String, user_id: String },
    /// `call:declined`: `user_id` declined.
    Declined { call_id: String, user_id: String },
    /// `call:ended`: the call is over; `user_id` ended it, if a person did.
    Ended {
        call_id: String,
        user_id: Option<String>,
        reason: String,
    },
    /// `call:participant_joined`
    ParticipantJoined {
        call_id: String,
        user_id: String,
        participant: Value,
    },
    /// `call:participant_left`
    ParticipantLeft { call_id: String, user_id: String },
    /// `call:participant_updated`: toggles, or an invitation that rang out.
    ParticipantUpdated {
        call_id: String,
        user_id: String,
        participant: Value,
    },
    /// `call:state_changed`
    StateChanged { call_id: String, state: String },
    /// The SFU's offer for the user's subscribe connection; `tracks` says whose
    /// media each m-section carries, by `mid`.
    SfuOffer {
        call_id: String,
        from_user_id: &'static str,
        offer: Value,
        tracks: Value,
    },
    /// The SFU's answer to the user's offer on their publish connection.
    SfuAnswer {
        call_id: String,
        from_user_id: &'static str,
        answer: Value,
    },
    /// `call:media_restart`: the call's media moved to another server (`reason`:
    /// `node_lost`, `node_draining`): close both peer connections and publish and
    /// subscribe again, as when joining.
    MediaRestart { call_id: String, reason: String },
    /// `call:recording_started`: the call is being recorded from now.
    RecordingStarted { call_id: String, recording: Value },
    /// `call:recording_stopped`: `reason`: `asked`, `call_ended`, `limit` or `failed`.
    RecordingStopped {
        call_id: String,
        recording: Value,
        reason: String,
    },
    /// `call:recording_finished`: the recording's file is written (`status`
    /// `completed`, with its `url`) or will never be (`failed`).
    RecordingFinished { call_id: String, recording: Value },
    /// `queue:position_update`: the waiting customer's place or estimate changed.
    QueuePositionUpdate {
        entry_id: String,
        queue: String,
        position: i64,
        estimated_wait_seconds: i64,
    },
    /// `queue:your_turn`: the customer's entry was assigned: `call_id` rings the
    /// representative (or, for a callback, the customer).
    QueueYourTurn {
        entry_id: String,
        queue: String,
        call_id: String,
        representative_id: String,
        callback: bool,
    },
    /// `call:assigned` (seed 004's `call_assigned`): to the representative given a
    /// customer; `call_id` is the call that rings them (or that they place, for a
    /// callback).
    CallAssigned {
        call_id: String,
        entry_id: String,
        queue: String,
        customer_id: String,
        call_type: String,
        callback: bool,
    },
    /// `queue:update`: to representatives and admins when a queue's figures change.
    QueueUpdate {
        queue: String,
        length: i64,
        longest_wait_seconds: i64,
        available_representatives: i64,
    },
}

impl Notice {
    pub fn event(&self) -> &'static str {
        match self {
            Notice::Incoming { .. } => "call:incoming",
            Notice::Accepted { .. } => "call:accepted",
            Notice::Declined { .. } => "call:declined",
            Notice::Ended { .. } => "call:ended",
            Notice::ParticipantJoined { .. } => "call:participant_joined",
            Notice::ParticipantLeft { .. } => "call:participant_left",
            Notice::ParticipantUpdated { .. } => "call:participant_updated",
            Notice::StateChanged { .. } => "call:state_changed",
            Notice::SfuOffer { .. } => webrtc::OFFER,
            Notice::SfuAnswer { .. } => webrtc::ANSWER,
            Notice::MediaRestart { .. } => "call:media_restart",
            Notice::RecordingStarted { .. } => "call:recording_started",
            Notice::RecordingStopped { .. } => "call:recording_stopped",
            Notice::RecordingFinished { .. } => "call:recording_finished",
            Notice::QueuePositionUpdate { .. } => "queue:position_update",
            Notice::QueueYourTurn { .. } => "queue:your_turn",
            Notice::CallAssigned { .. } => "call:assigned",
            Notice::QueueUpdate { .. } => "queue:update",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request(event: &str, data: Value) -> Result<Request, SignalError> {
        parse_request(event, &data).expect("a request event")
    }

    #[test]
    fn the_seeds_payloads_parse() {
        assert_eq!(
            request(
                client::TOGGLE_AUDIO,
                json!({ "callId": "c", "enabled": false })
            ),
            Ok(Request::Toggle {
                call_id: "c".into(),
                media: Media::Audio,
                enabled: false
            })
        );
        assert_eq!(
            request(client::END, json!({ "callId": "c", "reason": "normal" })),
            Ok(Request::End {
                call_id: "c".into(),
                reason: Some("normal".into())
            })
        );
        let Ok(Request::Invite(invite)) = request(
            client::INVITE,
            json!({ "callId": "c", "invitation": { "participantIds": ["bob"] } }),
        ) else {
            panic!("invite");
        };
        assert_eq!(invite.participant_ids, vec!["bob".to_owned()]);
    }

    #[test]
    fn bad_payloads_name_their_field() {
        let field_of = |r: Result<Request, SignalError>| r.err().and_then(|e| e.field);
        assert_eq!(
            field_of(request(client::ACCEPT, json!({}))).as_deref(),
            Some("callId")
        );
        assert_eq!(
            field_of(request(client::ACCEPT, json!({ "callId": 5 }))).as_deref(),
            Some("callId")
        );
        assert_eq!(
            field_of(request(client::ACCEPT, json!("x"))).as_deref(),
            Some("payload")
        );
        assert_eq!(
            field_of(request(
                client::TOGGLE_VIDEO,
                json!({ "callId": "c", "enabled": "no" })
            ))
            .as_deref(),
            Some("enabled")
        );
        assert_eq!(
            field_of(request(
                client::QUALITY_UPDATE,
                json!({ "callId": "c", "packetLoss": 140 })
            ))
            .as_deref(),
            Some("packetLoss")
        );
        assert_eq!(
            field_of(request(client::INVITE, json!({ "participantIds": ["b"] }))).as_deref(),
            Some("callId")
        );
        assert_eq!(
            field_of(request(client::DECLINE, json!({ "callId": "" }))).as_deref(),
            Some("callId")
        );
        assert_eq!(
            field_of(request(
                client::RECORDING_START,
                json!({ "callId": "c", "format": 3 })
            ))
            .as_deref(),
            Some("format")
        );
        assert_eq!(
            field_of(request(client::RECORDING_STOP, json!({}))).as_deref(),
            Some("callId")
        );
        assert_eq!(
            request(client::RECORDING_START, json!({ "callId": "c" })),
            Ok(Request::RecordingStart {
                call_id: "c".into(),
                format: None
            })
        );
        assert!(parse_request("call:teleport", &json!({})).is_none());
    }

    #[test]
    fn relays_need_a_target_a_body_and_a_bounded_size() {
        let ok = parse_relay(
            webrtc::OFFER,
            json!({ "callId": "c", "targetUserId": "bob", "offer": { "sdp": "v=0" } }),
        );
        assert!(matches!(ok, Some(Ok(Relay { field: "offer", .. }))));
        let missing = parse_relay(
            webrtc::ANSWER,
            json!({ "callId": "c", "targetUserId": "bob" }),
        );
        assert_eq!(
            missing
                .and_then(|r| r.err())
                .and_then(|e| e.field)
                .as_deref(),
            Some("answer")
        );
        let huge = json!({ "callId": "c", "targetUserId": "b", "candidate": { "c": "x".repeat(MAX_RELAY_BYTES) } });
        let err = parse_relay(webrtc::ICE_CANDIDATE, huge).and_then(|r| r.err());
        assert_eq!(err.map(|e| e.code), Some("PAYLOAD_TOO_LARGE".to_owned()));
        assert!(parse_relay(client::END, json!({})).is_none());
    }

    #[test]
    fn notices_serialize_to_the_seeds_payloads() {
        let notice = Notice::Ended {
            call_id: "c".into(),
            user_id: Some("bob".into()),
            reason: "normal".into(),
        };
        assert_eq!(notice.event(), "call:ended");
        assert_eq!(
            serde_json::to_value(&notice).ok(),
            Some(json!({ "callId": "c", "userId": "bob", "reason": "normal" }))
        );
    }
}
