//! Rows as the database returns them, and their conversion to the domain types.
//! Columns hold plain text, integers, booleans and timestamps so that one row type
//! decodes from SQLite and PostgreSQL alike; enums and ids are parsed here, and a
//! value that does not parse is reported as corrupt data rather than guessed at.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::StoreError;
use crate::calls::model::{Call, CallId, Participant, UserId};

#[derive(Debug, sqlx::FromRow)]
pub(super) struct CallRow {
    id: String,
    room_id: String,
    #[sqlx(rename = "type")]
    call_type: String,
    media_mode: String,
    state: String,
    initiator_id: String,
    chat_id: Option<String>,
    is_group: bool,
    max_participants: i64,
    created_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    ended_at: Option<DateTime<Utc>>,
    duration: Option<i64>,
    end_reason: Option<String>,
    recording_enabled: bool,
    recording_url: Option<String>,
    next_deadline: Option<DateTime<Utc>>,
    updated_at: DateTime<Utc>,
    version: i64,
}

#[derive(Debug, sqlx::FromRow)]
pub(super) struct ParticipantRow {
    id: String,
    call_id: String,
    user_id: String,
    display_name: Option<String>,
    role: String,
    invited_at: DateTime<Utc>,
    joined_at: Option<DateTime<Utc>>,
    left_at: Option<DateTime<Utc>>,
    duration: i64,
    connection_state: String,
    audio_enabled: bool,
    video_enabled: bool,
    screen_share_enabled: bool,
    away_until: Option<DateTime<Utc>>,
    declined_at: Option<DateTime<Utc>>,
}

fn parse<T: FromStr>(column: &str, value: &str) -> Result<T, StoreError>
where
    T::Err: std::fmt::Display,
{
    value
        .parse()
        .map_err(|e| StoreError::Corrupt(format!("{column} = {value:?}: {e}")))
}

impl TryFrom<CallRow> for Call {
    type Error = StoreError;
    fn try_from(row: CallRow) -> Result<Self, StoreError> {
        Ok(Call {
            id: parse::<CallId>("calls.id", &row.id)?,
            room_id: row.room_id,
            call_type: parse("calls.type", &row.call_type)?,
            media_mode: parse("calls.media_mode", &row.media_mode)?,
            state: parse("calls.state", &row.state)?,
            initiator_id: UserId(row.initiator_id),
            chat_id: row.chat_id,
            is_group: row.is_group,
            max_participants: u32::try_from(row.max_participants).map_err(|e| {
                StoreError::Corrupt(format!(
                    "calls.max_participants = {}: {e}",
                    row.max_participants
                ))
            })?,
            created_at: row.created_at,
            started_at: row.started_at,
            ended_at: row.ended_at,
            duration: row.duration,
            end_reason: row
                .end_reason
                .as_deref()
                .map(|r| parse("calls.end_reason", r))
                .transpose()?,
            recording_enabled: row.recording_enabled,
            recording_url: row.recording_url,
            next_deadline: row.next_deadline,
            updated_at: row.updated_at,
            version: row.version,
        })
    }
}

impl TryFrom<ParticipantRow> for Participant {
    type Error = StoreError;
    fn try_from(row: ParticipantRow) -> Result<Self, StoreError> {
        Ok(Participant {
            id: parse::<Uuid>("call_participants.id", &row.id)?,
            call_id: parse("call_participants.call_id", &row.call_id)?,
            user_id: UserId(row.user_id),
            display_name: row.display_name,
            role: parse("call_participants.role", &row.role)?,
            invited_at: row.invited_at,
            joined_at: row.joined_at,
            left_at: row.left_at,
            duration: row.duration,
            connection_state: parse("call_participants.connection_state", &row.connection_state)?,
            audio_enabled: row.audio_enabled,
            video_enabled: row.video_enabled,
            screen_share_enabled: row.screen_share_enabled,
            away_until: row.away_until,
            declined_at: row.declined_at,
        })
    }
}
