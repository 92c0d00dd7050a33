//! The JSON shapes of calls and participants (camelCase, as in the primary contract).

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::calls::lifecycle::{CallSnapshot, EndOutcome};
use crate::calls::model::{
    Call, CallId, CallState, CallType, ConnectionState, EndReason, MediaMode, Participant,
    ParticipantRole, RecordingStatus, UserId,
};
use crate::recordings::{Recording, RecordingTrack};

/// A call.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Call)]
pub struct CallView<'a> {
    id: CallId,
    room_id: &'a str,
    #[serde(rename = "type")]
    call_type: CallType,
    media_mode: MediaMode,
    state: CallState,
    initiator_id: &'a UserId,
    chat_id: Option<&'a str>,
    is_group: bool,
    max_participants: u32,
    created_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    ended_at: Option<DateTime<Utc>>,
    duration: Option<i64>,
    end_reason: Option<EndReason>,
    recording_enabled: bool,
    recording_url: Option<&'a str>,
    updated_at: DateTime<Utc>,
}

impl<'a> From<&'a Call> for CallView<'a> {
    fn from(c: &'a Call) -> Self {
        Self {
            id: c.id,
            room_id: &c.room_id,
            call_type: c.call_type,
            media_mode: c.media_mode,
            state: c.state,
            initiator_id: &c.initiator_id,
            chat_id: c.chat_id.as_deref(),
            is_group: c.is_group,
            max_participants: c.max_participants,
            created_at: c.created_at,
            started_at: c.started_at,
            ended_at: c.ended_at,
            duration: c.duration,
            end_reason: c.end_reason,
            recording_enabled: c.recording_enabled,
            recording_url: c.recording_url.as_deref(),
            updated_at: c.updated_at,
        }
    }
}

/// A member of a call: its initiator or an invitee.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Participant)]
pub struct ParticipantView<'a> {
    id: uuid::Uuid,
    call_id: CallId,
    user_id: &'a UserId,
    display_name: Option<&'a str>,
    role: ParticipantRole,
    invited_at: DateTime<Utc>,
    joined_at: Option<DateTime<Utc>>,
    left_at: Option<DateTime<Utc>>,
    duration: i64,
    connection_state: ConnectionState,
    audio_enabled: bool,
    video_enabled: bool,
    screen_share_enabled: bool,
}

impl<'a> From<&'a Participant> for ParticipantView<'a> {
    fn from(p: &'a Participant) -> Self {
        Self {
            id: p.id,
            call_id: p.call_id,
            user_id: &p.user_id,
            display_name: p.display_name.as_deref(),
            role: p.role,
            invited_at: p.invited_at,
            joined_at: p.joined_at,
            left_at: p.left_at,
            duration: p.duration,
            connection_state: p.connection_state,
            audio_enabled: p.audio_enabled,
            video_enabled: p.video_enabled,
            screen_share_enabled: p.screen_share_enabled,
        }
    }
}

pub fn participants(snapshot: &CallSnapshot) -> Vec<ParticipantView<'_>> {
    snapshot
        .participants
        .iter()
        .map(ParticipantView::from)
        .collect()
}

/// A call and its members.
#[derive(Debug, Serialize, ToSchema)]
pub struct CallData<'a> {
    call: CallView<'a>,
    participants: Vec<ParticipantView<'a>>,
}

impl<'a> From<&'a CallSnapshot> for CallData<'a> {
    fn from(snapshot: &'a CallSnapshot) -> Self {
        Self {
            call: CallView::from(&snapshot.call),
            participants: participants(snapshot),
        }
    }
}

/// `{ call, participants }`
pub fn call_data(snapshot: &CallSnapshot) -> Value {
    json!(CallData::from(snapshot))
}

/// What an end request did to the caller's part, with the call as it is now.
#[derive(Debug, Serialize, ToSchema)]
pub struct EndData<'a> {
    #[serde(flatten)]
    call: CallData<'a>,
    /// `ended` (for everyone), `left` (the call goes on) or `declined` (a ringing
    /// invitee's end).
    outcome: &'static str,
}

/// `{ outcome, call, participants }`
pub fn end_data(snapshot: &CallSnapshot, outcome: EndOutcome) -> Value {
    json!(EndData {
        call: CallData::from(snapshot),
        outcome: outcome.as_str(),
    })
}

/// A call as listed in history and active calls: the call, its participants, and
/// what it was to the user asking.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CallListItem<'a> {
    #[serde(flatten)]
    call: CallView<'a>,
    /// `outbound` if the user started the call, else `inbound`.
    direction: &'static str,
    /// The user's own state in it (e.g. `missed`, `declined`, `left`).
    my_state: Option<ConnectionState>,
    participants: Vec<ParticipantView<'a>>,
}

impl<'a> CallListItem<'a> {
    pub fn new(snapshot: &'a CallSnapshot, user: &UserId) -> Self {
        Self {
            call: CallView::from(&snapshot.call),
            direction: if snapshot.call.initiator_id == *user {
                "outbound"
            } else {
                "inbound"
            },
            my_state: snapshot.member(user).map(|p| p.connection_state),
            participants: participants(snapshot),
        }
    }
}

/// A call recording.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Recording)]
pub struct RecordingView<'a> {
    id: uuid::Uuid,
    call_id: CallId,
    status: RecordingStatus,
    /// `webm`; a `livekit` call's recording is LiveKit Egress's `mp4` (or `ogg` for
    /// an audio call).
    format: &'a str,
    started_at: DateTime<Utc>,
    ended_at: Option<DateTime<Utc>>,
    /// Seconds, once completed.
    duration: Option<f64>,
    /// Bytes of the file, once completed.
    size: Option<i64>,
    /// One per participant's medium recorded, once completed.
    tracks: &'a [RecordingTrack],
    /// Why it stopped: `asked`, `call_ended`, `limit` or `failed`; `null` while recording.
    reason: Option<&'a str>,
    /// Where a completed recording downloads from (with the token); else `null`.
    url: Option<String>,
    /// Where LiveKit Egress stored a completed `livekit` call's recording (Huddle
    /// does not serve it); else `null`.
    location: Option<&'a str>,
}

impl<'a> From<&'a Recording> for RecordingView<'a> {
    fn from(r: &'a Recording) -> Self {
        Self {
            id: r.id,
            call_id: r.call_id,
            status: r.status,
            format: &r.format,
            started_at: r.started_at,
            ended_at: r.ended_at,
            duration: r.duration,
            size: r.size,
            tracks: &r.tracks,
            reason: r.reason.as_deref(),
            url: r.url(),
            location: r.location.as_deref(),
        }
    }
}
