//! The call lifecycle as pure rules: a [`CallSnapshot`] (a call and its participants)
//! changes only through the methods here, each taking `now` as an argument. Nothing
//! here does IO or reads a clock, so every rule is tested in simulated time.
//!
//! # What `end` means
//! - The **initiator** ending a call ends it for everyone (`cancelled` if nobody had
//!   answered yet).
//! - An **invitee who has not joined** ending it declines the invitation.
//! - Anyone else **leaves**.
//!
//! # When a call ends by itself
//! After every change, a call that has fewer than two participants in it and nobody
//! still ringing ends: a 1-on-1 call ends when either side leaves or declines; a group
//! call goes on while two people are in it or someone may still answer. Its reason is
//! `normal` if it ever connected, else `declined` if every invitee declined, else
//! `missed`.
//!
//! # Timeouts
//! Invitees still ringing RINGING_TIMEOUT after their invitation are marked `missed`;
//! a call is ended with `max_duration` MAX_CALL_DURATION after it connected (or was
//! created, if it never did). [`CallSnapshot::expire`] applies both; each call keeps
//! its next deadline so that a sweeper only looks at calls that are due.

use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

use super::model::{
    Call, CallId, CallState, CallType, ConnectionState, EndReason, MediaMode, Participant,
    ParticipantRole, UserId,
};

/// A call with all of its participants: the unit every rule reads and changes.
#[derive(Debug, Clone, PartialEq)]
pub struct CallSnapshot {
    pub call: Call,
    pub participants: Vec<Participant>,
}

/// The time and size limits the rules enforce (from configuration).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Upper bound for a call's participants, the initiator included.
    pub max_participants: u32,
    pub ringing_timeout: Duration,
    pub max_duration: Duration,
    /// How long a participant with no connection stays in their calls
    /// (CONNECTION_TIMEOUT).
    pub away_grace: Duration,
    /// Calls that may ring one user at once (RINGING_LIMIT).
    pub max_ringing: u32,
    /// How long someone who declined a caller is not rung by them again
    /// (DECLINE_COOLDOWN).
    pub decline_cooldown: Duration,
}

/// A rule refused a change. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("you are not a member of this call")]
    NotMember,
    #[error("the call has ended")]
    CallEnded,
    #[error("you are already in this call")]
    AlreadyJoined,
    #[error("you are not in this call")]
    NotJoined,
    #[error("the call is full ({0} participants)")]
    CallFull(u32),
    #[error("you have no ringing invitation to this call")]
    NotRinging,
    /// An invitee is already being rung by as many calls as RINGING_LIMIT allows.
    #[error("`{user}` is already being rung by {limit} calls: try again later")]
    RingingLimit { user: UserId, limit: u32 },
    /// An invitee declined this caller within DECLINE_COOLDOWN.
    #[error("`{user}` declined your call: you can ring them again in {retry_after} s")]
    DeclinedRecently { user: UserId, retry_after: u64 },
    /// A request field is invalid for this call.
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
}

impl CallError {
    fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        CallError::Invalid {
            field,
            message: message.into(),
        }
    }
}

/// Who is acting: the authenticated user and the display name from their token.
#[derive(Debug, Clone)]
pub struct Caller {
    pub id: UserId,
    pub name: Option<String>,
}

/// A request to start a call, already checked for shape (lengths, non-empty ids).
#[derive(Debug, Clone)]
pub struct NewCall {
    pub call_type: CallType,
    pub invitees: Vec<UserId>,
    pub chat_id: Option<String>,
    pub media: MediaFlags,
    pub media_mode: MediaMode,
}

/// Audio/video flags a participant asks for when starting or joining.
#[derive(Debug, Clone, Copy)]
pub struct MediaFlags {
    pub audio: bool,
    pub video: bool,
}

/// A partial update of a participant's media toggles.
#[derive(Debug, Clone, Copy, Default)]
pub struct MediaPatch {
    pub audio: Option<bool>,
    pub video: Option<bool>,
    pub screen_share: Option<bool>,
}

/// What an `end` request turned out to mean for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndOutcome {
    /// The caller left; the call goes on without them.
    Left,
    /// The caller declined their invitation; the call goes on without them.
    Declined,
    /// The call is over for everyone.
    Ended(EndReason),
}

impl EndOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            EndOutcome::Left => "left",
            EndOutcome::Declined => "declined",
            EndOutcome::Ended(_) => "ended",
        }
    }
}

impl CallSnapshot {
    /// A new call: the initiator is in it, every invitee is ringing.
    pub fn start(
        id: CallId,
        initiator: &Caller,
        request: NewCall,
        limits: &Limits,
        now: DateTime<Utc>,
    ) -> Result<Self, CallError> {
        if request.invitees.is_empty() {
            return Err(CallError::invalid(
                "participantIds",
                "invite at least one user",
            ));
        }
        let capacity = limits.max_participants as usize;
        if request.invitees.len() + 1 > capacity {
            return Err(CallError::invalid(
                "participantIds",
                format!(
                    "at most {} users can be invited (MAX_CALL_PARTICIPANTS is {capacity}, the initiator included)",
                    capacity - 1
                ),
            ));
        }
        for (i, invitee) in request.invitees.iter().enumerate() {
            if *invitee == initiator.id {
                return Err(CallError::invalid(
                    "participantIds",
                    "you cannot invite yourself",
                ));
            }
            if request.invitees[..i].contains(invitee) {
                return Err(CallError::invalid(
                    "participantIds",
                    format!("`{invitee}` is listed twice"),
                ));
            }
        }
        let video_allowed = request.call_type == CallType::Video;
        let call = Call {
            id,
            room_id: format!("room_{}", id.0.simple()),
            call_type: request.call_type,
            media_mode: request.media_mode,
            state: CallState::Ringing,
            initiator_id: initiator.id.clone(),
            chat_id: request.chat_id,
            is_group: request.invitees.len() > 1,
            max_participants: limits.max_participants,
            created_at: now,
            started_at: None,
            ended_at: None,
            duration: None,
            end_reason: None,
            recording_enabled: false,
            recording_url: None,
            next_deadline: None,
            updated_at: now,
            version: 0,
        };
        let mut participants = Vec::with_capacity(request.invitees.len() + 1);
        participants.push(Participant {
            id: Uuid::new_v4(),
            call_id: id,
            user_id: initiator.id.clone(),
            display_name: initiator.name.clone(),
            role: ParticipantRole::Initiator,
            invited_at: now,
            joined_at: Some(now),
            left_at: None,
            duration: 0,
            connection_state: ConnectionState::Connected,
            audio_enabled: request.media.audio,
            video_enabled: request.media.video && video_allowed,
            screen_share_enabled: false,
            away_until: None,
            declined_at: None,
        });
        participants.extend(
            request
                .invitees
                .into_iter()
                .map(|user| invited(id, user, now)),
        );
        let mut snapshot = CallSnapshot { call, participants };
        snapshot.settle(limits, now);
        Ok(snapshot)
    }

    /// Whether a recording of the call is running, and where its latest completed
    /// recording downloads from (the recording service keeps them in step with
    /// `call_recordings`). Allowed in any state: a recording finishes after its call.
    pub fn set_recording(&mut self, enabled: bool, url: Option<String>, now: DateTime<Utc>) {
        if self.call.recording_enabled != enabled || self.call.recording_url != url {
            self.call.recording_enabled = enabled;
            self.call.recording_url = url;
            self.call.updated_at = now;
        }
    }

    /// The participant record of `user`, if they are a member.
    pub fn member(&self, user: &UserId) -> Option<&Participant> {
        self.participants.iter().find(|p| p.user_id == *user)
    }

    fn member_index(&self, user: &UserId) -> Result<usize, CallError> {
        self.participants
            .iter()
            .position(|p| p.user_id == *user)
            .ok_or(CallError::NotMember)
    }

    fn ensure_active(&self) -> Result<(), CallError> {
        if self.call.state.is_active() {
            Ok(())
        } else {
            Err(CallError::CallEnded)
        }
    }

    /// How many participants are in the call right now.
    pub fn joined_count(&self) -> usize {
        self.participants.iter().filter(|p| p.is_joined()).count()
    }

    fn ringing_count(&self) -> usize {
        self.participants
            .iter()
            .filter(|p| p.connection_state == ConnectionState::Invited)
            .count()
    }

    /// `caller` (a member) enters the call: answering an invitation, or coming back
    /// after leaving or declining while the call is still going.
    pub fn join(
        &mut self,
        caller: &Caller,
        media: MediaFlags,
        limits: &Limits,
        now: DateTime<Utc>,
    ) -> Result<(), CallError> {
        let index = self.member_index(&caller.id)?;
        self.ensure_active()?;
        if self.participants[index].is_joined() {
            return Err(CallError::AlreadyJoined);
        }
        if self.joined_count() >= self.call.max_participants as usize {
            return Err(CallError::CallFull(self.call.max_participants));
        }
        let video_allowed = self.call.call_type == CallType::Video;
        let participant = &mut self.participants[index];
        participant.connection_state = ConnectionState::Connected;
        participant.joined_at = Some(now);
        participant.left_at = None;
        participant.audio_enabled = media.audio;
        participant.video_enabled = media.video && video_allowed;
        participant.screen_share_enabled = false;
        participant.away_until = None;
        if caller.name.is_some() {
            participant.display_name = caller.name.clone();
        }
        if self.joined_count() >= 2 && self.call.started_at.is_none() {
            self.call.state = CallState::Connected;
            self.call.started_at = Some(now);
        }
        self.call.updated_at = now;
        self.settle(limits, now);
        Ok(())
    }

    /// `caller` hangs up; see the module documentation for what that means.
    pub fn end(
        &mut self,
        caller: &UserId,
        reason: EndReason,
        limits: &Limits,
        now: DateTime<Utc>,
    ) -> Result<EndOutcome, CallError> {
        let index = self.member_index(caller)?;
        self.ensure_active()?;
        let participant = &self.participants[index];
        if participant.role == ParticipantRole::Initiator {
            let reason = if self.call.started_at.is_none() && reason == EndReason::Normal {
                EndReason::Cancelled
            } else {
                reason
            };
            self.finish(reason, now);
            return Ok(EndOutcome::Ended(reason));
        }
        let outcome = match participant.connection_state {
            ConnectionState::Invited => {
                let participant = &mut self.participants[index];
                participant.connection_state = ConnectionState::Declined;
                participant.declined_at = Some(now);
                EndOutcome::Declined
            }
            ConnectionState::Connected => {
                leave(&mut self.participants[index], now);
                EndOutcome::Left
            }
            ConnectionState::Declined | ConnectionState::Missed | ConnectionState::Left => {
                return Err(CallError::NotJoined);
            }
        };
        self.call.updated_at = now;
        self.settle(limits, now);
        Ok(match self.call.end_reason {
            Some(reason) => EndOutcome::Ended(reason),
            None => outcome,
        })
    }

    /// Changes `caller`'s media toggles. Only a participant who is in the call has
    /// media to toggle; audio calls carry no video or screen share.
    pub fn update_media(
        &mut self,
        caller: &UserId,
        patch: MediaPatch,
        now: DateTime<Utc>,
    ) -> Result<(), CallError> {
        let index = self.member_index(caller)?;
        self.ensure_active()?;
        if !self.participants[index].is_joined() {
            return Err(CallError::NotJoined);
        }
        if self.call.call_type == CallType::Audio {
            if patch.video == Some(true) {
                return Err(CallError::invalid(
                    "videoEnabled",
                    "an audio call carries no video",
                ));
            }
            if patch.screen_share == Some(true) {
                return Err(CallError::invalid(
                    "screenShareEnabled",
                    "an audio call carries no screen share",
                ));
            }
        }
        let participant = &mut self.participants[index];
        if let Some(audio) = patch.audio {
            participant.audio_enabled = audio;
        }
        if let Some(video) = patch.video {
            participant.video_enabled = video;
        }
        if let Some(screen_share) = patch.screen_share {
            participant.screen_share_enabled = screen_share;
        }
        self.call.updated_at = now;
        Ok(())
    }

    /// `by`, who is in the call, rings more users into it: new members, or members who
    /// declined, missed or left. Returns who now rings.
    pub fn invite(
        &mut self,
        by: &UserId,
        invitees: Vec<UserId>,
        limits: &Limits,
        now: DateTime<Utc>,
    ) -> Result<Vec<UserId>, CallError> {
        let index = self.member_index(by)?;
        self.ensure_active()?;
        if !self.participants[index].is_joined() {
            return Err(CallError::NotJoined);
        }
        if invitees.is_empty() {
            return Err(CallError::invalid(
                "participantIds",
                "invite at least one user",
            ));
        }
        for (i, invitee) in invitees.iter().enumerate() {
            if invitee == by {
                return Err(CallError::invalid(
                    "participantIds",
                    "you cannot invite yourself",
                ));
            }
            if invitees[..i].contains(invitee) {
                return Err(CallError::invalid(
                    "participantIds",
                    format!("`{invitee}` is listed twice"),
                ));
            }
            if let Some(member) = self.member(invitee) {
                if matches!(
                    member.connection_state,
                    ConnectionState::Invited | ConnectionState::Connected
                ) {
                    return Err(CallError::invalid(
                        "participantIds",
                        format!("`{invitee}` is already in the call or ringing"),
                    ));
                }
            }
        }
        let newcomers = invitees.iter().filter(|u| self.member(u).is_none()).count();
        let capacity = self.call.max_participants as usize;
        if self.participants.len() + newcomers > capacity {
            return Err(CallError::invalid(
                "participantIds",
                format!("a call has at most {capacity} members (MAX_CALL_PARTICIPANTS)"),
            ));
        }
        let call_id = self.call.id;
        for invitee in &invitees {
            match self.participants.iter_mut().find(|p| p.user_id == *invitee) {
                Some(member) => {
                    member.connection_state = ConnectionState::Invited;
                    member.invited_at = now;
                }
                None => self
                    .participants
                    .push(invited(call_id, invitee.clone(), now)),
            }
        }
        self.call.is_group = self.participants.len() > 2;
        self.call.updated_at = now;
        self.settle(limits, now);
        Ok(invitees)
    }

    /// `user` refuses a ringing invitation.
    pub fn decline(
        &mut self,
        user: &UserId,
        limits: &Limits,
        now: DateTime<Utc>,
    ) -> Result<EndOutcome, CallError> {
        let index = self.member_index(user)?;
        self.ensure_active()?;
        if self.participants[index].connection_state != ConnectionState::Invited {
            return Err(CallError::NotRinging);
        }
        self.end(user, EndReason::Declined, limits, now)
    }

    /// `user` has no connection any more: unless [`CallSnapshot::back`] comes first,
    /// they leave the call at `until` (applied by [`CallSnapshot::expire`]). Only a
    /// joined participant can be away; a later deadline never replaces an earlier one
    /// unless `restart` says the server was down (everyone gets the full grace from
    /// the moment it is back). Returns whether anything changed.
    pub fn away(
        &mut self,
        user: &UserId,
        until: DateTime<Utc>,
        restart: bool,
        limits: &Limits,
        now: DateTime<Utc>,
    ) -> bool {
        if !self.call.state.is_active() {
            return false;
        }
        let Some(participant) = self.participants.iter_mut().find(|p| p.user_id == *user) else {
            return false;
        };
        if !participant.is_joined() || (participant.away_until.is_some() && !restart) {
            return false;
        }
        if participant.away_until == Some(until) {
            return false;
        }
        participant.away_until = Some(until);
        self.settle(limits, now);
        true
    }

    /// `user` is connected again: they stay. Returns whether anything changed.
    pub fn back(&mut self, user: &UserId, limits: &Limits, now: DateTime<Utc>) -> bool {
        let Some(participant) = self.participants.iter_mut().find(|p| p.user_id == *user) else {
            return false;
        };
        if participant.away_until.take().is_none() {
            return false;
        }
        self.settle(limits, now);
        true
    }

    /// Applies the timeout rules as of `now`. Returns whether anything changed.
    pub fn expire(&mut self, limits: &Limits, now: DateTime<Utc>) -> bool {
        if !self.call.state.is_active() {
            return false;
        }
        let before = self.clone();
        let connected_or_created = self.call.started_at.unwrap_or(self.call.created_at);
        if connected_or_created + limits.max_duration <= now {
            self.finish(EndReason::MaxDuration, now);
            return true;
        }
        for participant in &mut self.participants {
            if participant.connection_state == ConnectionState::Invited
                && participant.invited_at + limits.ringing_timeout <= now
            {
                participant.connection_state = ConnectionState::Missed;
            }
            if participant.is_joined() && participant.away_until.is_some_and(|t| t <= now) {
                leave(participant, now);
            }
        }
        self.settle(limits, now);
        let changed = *self != before;
        if changed {
            self.call.updated_at = now;
        }
        changed
    }

    /// Ends the call for everyone: those in it leave, those ringing missed it.
    fn finish(&mut self, reason: EndReason, now: DateTime<Utc>) {
        for participant in &mut self.participants {
            match participant.connection_state {
                ConnectionState::Connected => leave(participant, now),
                ConnectionState::Invited => participant.connection_state = ConnectionState::Missed,
                ConnectionState::Declined | ConnectionState::Missed | ConnectionState::Left => {}
            }
        }
        let call = &mut self.call;
        call.state = CallState::Ended;
        call.ended_at = Some(now);
        call.duration = Some(call.started_at.map_or(0, |s| (now - s).num_seconds()));
        call.end_reason = Some(reason);
        call.next_deadline = None;
        call.updated_at = now;
    }

    /// Ends a call nobody can talk in any more, and recomputes its next deadline.
    fn settle(&mut self, limits: &Limits, now: DateTime<Utc>) {
        if !self.call.state.is_active() {
            return;
        }
        if self.joined_count() < 2 && self.ringing_count() == 0 {
            let reason = if self.call.started_at.is_some() {
                EndReason::Normal
            } else if self.participants.iter().all(|p| {
                p.role == ParticipantRole::Initiator
                    || p.connection_state == ConnectionState::Declined
            }) {
                EndReason::Declined
            } else {
                EndReason::Missed
            };
            self.finish(reason, now);
            return;
        }
        let max_duration_at =
            self.call.started_at.unwrap_or(self.call.created_at) + limits.max_duration;
        let ring_timeouts = self
            .participants
            .iter()
            .filter(|p| p.connection_state == ConnectionState::Invited)
            .map(|p| p.invited_at + limits.ringing_timeout);
        let away_deadlines = self.participants.iter().filter_map(|p| p.away_until);
        self.call.next_deadline = ring_timeouts
            .chain(away_deadlines)
            .chain([max_duration_at])
            .min();
    }
}

/// A new member, ringing since `now`.
fn invited(call_id: CallId, user_id: UserId, now: DateTime<Utc>) -> Participant {
    Participant {
        id: Uuid::new_v4(),
        call_id,
        user_id,
        display_name: None,
        role: ParticipantRole::Participant,
        invited_at: now,
        joined_at: None,
        left_at: None,
        duration: 0,
        connection_state: ConnectionState::Invited,
        audio_enabled: false,
        video_enabled: false,
        screen_share_enabled: false,
        away_until: None,
        declined_at: None,
    }
}

/// Takes `participant` out of the call at `now`, adding the time they spent in it.
fn leave(participant: &mut Participant, now: DateTime<Utc>) {
    if let Some(joined) = participant.joined_at {
        participant.duration += (now - joined).num_seconds().max(0);
    }
    participant.connection_state = ConnectionState::Left;
    participant.left_at = Some(now);
    participant.screen_share_enabled = false;
    participant.away_until = None;
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use chrono::TimeZone;

    pub(crate) const LIMITS: Limits = Limits {
        max_participants: 4,
        ringing_timeout: Duration::seconds(60),
        max_duration: Duration::seconds(3600),
        away_grace: Duration::seconds(30),
        max_ringing: 3,
        decline_cooldown: Duration::seconds(60),
    };

    pub(crate) fn t(seconds: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + seconds, 0).unwrap()
    }

    pub(crate) fn user(id: &str) -> UserId {
        UserId(id.to_owned())
    }

    pub(crate) fn caller(id: &str) -> Caller {
        Caller {
            id: user(id),
            name: Some(format!("{id} name")),
        }
    }

    pub(crate) const AV: MediaFlags = MediaFlags {
        audio: true,
        video: true,
    };

    /// A call from alice to `invitees`, started at t(0).
    pub(crate) fn start(call_type: CallType, invitees: &[&str]) -> Result<CallSnapshot, CallError> {
        CallSnapshot::start(
            CallId::random(),
            &caller("alice"),
            NewCall {
                call_type,
                invitees: invitees.iter().map(|u| user(u)).collect(),
                chat_id: None,
                media: AV,
                media_mode: MediaMode::Sfu,
            },
            &LIMITS,
            t(0),
        )
    }

    fn state_of(snapshot: &CallSnapshot, id: &str) -> ConnectionState {
        snapshot.member(&user(id)).unwrap().connection_state
    }

    #[test]
    fn a_started_call_rings_its_invitees_with_the_initiator_in_it() {
        let call = start(CallType::Video, &["bob"]).unwrap();
        assert_eq!(call.call.state, CallState::Ringing);
        assert!(!call.call.is_group);
        assert_eq!(state_of(&call, "alice"), ConnectionState::Connected);
        assert_eq!(state_of(&call, "bob"), ConnectionState::Invited);
        assert_eq!(call.call.next_deadline, Some(t(60)));
        assert!(call.call.room_id.starts_with("room_"));
    }

    #[test]
    fn more_than_one_invitee_makes_a_group_call() {
        assert!(
            start(CallType::Audio, &["bob", "carol"])
                .unwrap()
                .call
                .is_group
        );
    }

    #[test]
    fn start_refuses_self_invites_duplicates_empty_and_oversized_lists() {
        let field_of = |r: Result<CallSnapshot, CallError>| match r {
            Err(CallError::Invalid { field, message }) => (field, message),
            other => panic!("expected a validation error, got {other:?}"),
        };
        assert!(
            field_of(start(CallType::Video, &["alice"]))
                .1
                .contains("yourself")
        );
        assert!(
            field_of(start(CallType::Video, &["bob", "bob"]))
                .1
                .contains("twice")
        );
        assert!(
            field_of(start(CallType::Video, &[]))
                .1
                .contains("at least one")
        );
        let (field, message) = field_of(start(CallType::Video, &["b", "c", "d", "e"]));
        assert_eq!(field, "participantIds");
        assert!(message.contains("at most 3"), "{message}");
        assert!(start(CallType::Video, &["b", "c", "d"]).is_ok());
    }

    #[test]
    fn an_audio_call_starts_without_video() {
        let call = start(CallType::Audio, &["bob"]).unwrap();
        assert!(!call.member(&user("alice")).unwrap().video_enabled);
    }

    #[test]
    fn the_first_answer_connects_the_call() {
        let mut call = start(CallType::Video, &["bob"]).unwrap();
        call.join(&caller("bob"), AV, &LIMITS, t(5)).unwrap();
        assert_eq!(call.call.state, CallState::Connected);
        assert_eq!(call.call.started_at, Some(t(5)));
        let bob = call.member(&user("bob")).unwrap();
        assert_eq!(bob.joined_at, Some(t(5)));
        assert_eq!(bob.display_name.as_deref(), Some("bob name"));
        assert_eq!(call.call.next_deadline, Some(t(5 + 3600)));
    }

    #[test]
    fn joining_twice_a_full_call_or_as_a_stranger_is_refused() {
        let mut call = start(CallType::Video, &["bob", "carol", "dave"]).unwrap();
        call.call.max_participants = 2;
        call.join(&caller("bob"), AV, &LIMITS, t(1)).unwrap();
        assert_eq!(
            call.join(&caller("bob"), AV, &LIMITS, t(2)),
            Err(CallError::AlreadyJoined)
        );
        assert_eq!(
            call.join(&caller("carol"), AV, &LIMITS, t(2)),
            Err(CallError::CallFull(2))
        );
        assert_eq!(
            call.join(&caller("mallory"), AV, &LIMITS, t(2)),
            Err(CallError::NotMember)
        );
    }

    #[test]
    fn a_declined_one_on_one_call_ends_declined() {
        let mut call = start(CallType::Video, &["bob"]).unwrap();
        let outcome = call
            .end(&user("bob"), EndReason::Normal, &LIMITS, t(3))
            .unwrap();
        assert_eq!(outcome, EndOutcome::Ended(EndReason::Declined));
        assert_eq!(state_of(&call, "bob"), ConnectionState::Declined);
        assert_eq!(call.call.state, CallState::Ended);
        assert_eq!(call.call.duration, Some(0));
        assert_eq!(call.call.next_deadline, None);
    }

    #[test]
    fn the_initiator_hanging_up_before_an_answer_cancels() {
        let mut call = start(CallType::Video, &["bob", "carol"]).unwrap();
        let outcome = call
            .end(&user("alice"), EndReason::Normal, &LIMITS, t(3))
            .unwrap();
        assert_eq!(outcome, EndOutcome::Ended(EndReason::Cancelled));
        assert_eq!(state_of(&call, "bob"), ConnectionState::Missed);
        assert_eq!(state_of(&call, "alice"), ConnectionState::Left);
    }

    #[test]
    fn either_side_leaving_ends_a_connected_one_on_one_call_with_durations() {
        let mut call = start(CallType::Video, &["bob"]).unwrap();
        call.join(&caller("bob"), AV, &LIMITS, t(10)).unwrap();
        let outcome = call
            .end(&user("bob"), EndReason::Normal, &LIMITS, t(70))
            .unwrap();
        assert_eq!(outcome, EndOutcome::Ended(EndReason::Normal));
        assert_eq!(call.call.duration, Some(60));
        assert_eq!(call.member(&user("bob")).unwrap().duration, 60);
        assert_eq!(call.member(&user("alice")).unwrap().duration, 70);
        assert_eq!(call.member(&user("alice")).unwrap().left_at, Some(t(70)));
    }

    #[test]
    fn a_group_call_goes_on_while_two_remain_and_a_member_may_rejoin() {
        let mut call = start(CallType::Video, &["bob", "carol"]).unwrap();
        call.join(&caller("bob"), AV, &LIMITS, t(1)).unwrap();
        call.join(&caller("carol"), AV, &LIMITS, t(2)).unwrap();
        assert_eq!(
            call.end(&user("carol"), EndReason::Normal, &LIMITS, t(12)),
            Ok(EndOutcome::Left)
        );
        assert_eq!(call.call.state, CallState::Connected);
        call.join(&caller("carol"), AV, &LIMITS, t(20)).unwrap();
        call.end(&user("carol"), EndReason::Normal, &LIMITS, t(25))
            .unwrap();
        assert_eq!(call.member(&user("carol")).unwrap().duration, 15);
        assert_eq!(
            call.end(&user("carol"), EndReason::Normal, &LIMITS, t(26)),
            Err(CallError::NotJoined)
        );
    }

    #[test]
    fn a_group_call_waits_for_someone_still_ringing() {
        let mut call = start(CallType::Video, &["bob", "carol"]).unwrap();
        call.join(&caller("bob"), AV, &LIMITS, t(1)).unwrap();
        call.end(&user("bob"), EndReason::Normal, &LIMITS, t(5))
            .unwrap();
        assert_eq!(
            call.call.state,
            CallState::Connected,
            "carol may still answer"
        );
        assert_eq!(call.call.next_deadline, Some(t(60)));
        assert!(call.expire(&LIMITS, t(60)));
        assert_eq!(state_of(&call, "carol"), ConnectionState::Missed);
        assert_eq!(call.call.end_reason, Some(EndReason::Normal));
    }

    #[test]
    fn the_initiator_ending_a_group_call_ends_it_for_all() {
        let mut call = start(CallType::Video, &["bob", "carol"]).unwrap();
        call.join(&caller("bob"), AV, &LIMITS, t(1)).unwrap();
        let outcome = call
            .end(&user("alice"), EndReason::Normal, &LIMITS, t(9))
            .unwrap();
        assert_eq!(outcome, EndOutcome::Ended(EndReason::Normal));
        assert_eq!(state_of(&call, "bob"), ConnectionState::Left);
        assert_eq!(state_of(&call, "carol"), ConnectionState::Missed);
    }

    #[test]
    fn nothing_changes_an_ended_call() {
        let mut call = start(CallType::Video, &["bob"]).unwrap();
        call.end(&user("alice"), EndReason::Normal, &LIMITS, t(1))
            .unwrap();
        let ended = call.clone();
        assert_eq!(
            call.join(&caller("bob"), AV, &LIMITS, t(2)),
            Err(CallError::CallEnded)
        );
        assert_eq!(
            call.end(&user("bob"), EndReason::Normal, &LIMITS, t(2)),
            Err(CallError::CallEnded)
        );
        assert_eq!(
            call.update_media(&user("alice"), MediaPatch::default(), t(2)),
            Err(CallError::CallEnded)
        );
        assert!(!call.expire(&LIMITS, t(100_000)));
        assert_eq!(call, ended);
    }

    #[test]
    fn unanswered_invitations_time_out_as_missed_exactly_at_the_deadline() {
        let mut call = start(CallType::Video, &["bob"]).unwrap();
        assert!(!call.expire(&LIMITS, t(59)));
        assert_eq!(call.call.state, CallState::Ringing);
        assert!(call.expire(&LIMITS, t(60)));
        assert_eq!(call.call.state, CallState::Ended);
        assert_eq!(call.call.end_reason, Some(EndReason::Missed));
        assert_eq!(state_of(&call, "bob"), ConnectionState::Missed);
        assert_eq!(call.call.ended_at, Some(t(60)));
    }

    #[test]
    fn some_declined_and_some_missed_counts_as_missed_all_declined_as_declined() {
        let mut call = start(CallType::Audio, &["bob", "carol"]).unwrap();
        call.end(&user("bob"), EndReason::Normal, &LIMITS, t(2))
            .unwrap();
        assert_eq!(call.call.state, CallState::Ringing);
        call.expire(&LIMITS, t(60));
        assert_eq!(call.call.end_reason, Some(EndReason::Missed));

        let mut call = start(CallType::Audio, &["bob", "carol"]).unwrap();
        call.end(&user("bob"), EndReason::Normal, &LIMITS, t(2))
            .unwrap();
        call.end(&user("carol"), EndReason::Normal, &LIMITS, t(3))
            .unwrap();
        assert_eq!(call.call.end_reason, Some(EndReason::Declined));
    }

    #[test]
    fn a_connected_call_ends_at_max_duration_counted_from_connection() {
        let mut call = start(CallType::Video, &["bob"]).unwrap();
        call.join(&caller("bob"), AV, &LIMITS, t(30)).unwrap();
        assert!(!call.expire(&LIMITS, t(3629)));
        assert!(call.expire(&LIMITS, t(3630)));
        assert_eq!(call.call.end_reason, Some(EndReason::MaxDuration));
        assert_eq!(call.call.duration, Some(3600));
    }

    #[test]
    fn a_member_in_the_call_rings_new_and_former_members_up_to_capacity() {
        let mut call = start(CallType::Video, &["bob", "carol"]).unwrap();
        call.end(&user("bob"), EndReason::Normal, &LIMITS, t(1))
            .unwrap();
        assert_eq!(
            call.invite(&user("bob"), vec![user("dave")], &LIMITS, t(2)),
            Err(CallError::NotJoined)
        );
        let rung = call
            .invite(
                &user("alice"),
                vec![user("bob"), user("dave")],
                &LIMITS,
                t(10),
            )
            .unwrap();
        assert_eq!(rung, vec![user("bob"), user("dave")]);
        assert_eq!(state_of(&call, "bob"), ConnectionState::Invited);
        assert_eq!(state_of(&call, "dave"), ConnectionState::Invited);
        assert_eq!(call.member(&user("dave")).unwrap().invited_at, t(10));
        assert_eq!(
            call.call.next_deadline,
            Some(t(60)),
            "carol still rings from t=0"
        );
        let err = call
            .invite(&user("alice"), vec![user("erin")], &LIMITS, t(11))
            .unwrap_err();
        assert!(
            matches!(err, CallError::Invalid { .. }),
            "four members fill a call of four"
        );
        let err = call
            .invite(&user("alice"), vec![user("carol")], &LIMITS, t(11))
            .unwrap_err();
        assert!(
            matches!(err, CallError::Invalid { .. }),
            "carol is already ringing"
        );
    }

    #[test]
    fn only_a_ringing_invitee_can_decline() {
        let mut call = start(CallType::Video, &["bob", "carol"]).unwrap();
        assert_eq!(
            call.decline(&user("alice"), &LIMITS, t(1)),
            Err(CallError::NotRinging)
        );
        assert_eq!(
            call.decline(&user("bob"), &LIMITS, t(1)),
            Ok(EndOutcome::Declined)
        );
        assert_eq!(
            call.decline(&user("bob"), &LIMITS, t(2)),
            Err(CallError::NotRinging)
        );
    }

    #[test]
    fn an_initiator_away_past_the_grace_leaves_a_group_call_without_ending_it() {
        let mut call = start(CallType::Video, &["bob", "carol"]).unwrap();
        call.join(&caller("bob"), AV, &LIMITS, t(1)).unwrap();
        call.join(&caller("carol"), AV, &LIMITS, t(1)).unwrap();
        assert!(call.away(&user("alice"), t(35), false, &LIMITS, t(5)));
        assert_eq!(call.call.next_deadline, Some(t(35)));
        assert!(
            !call.expire(&LIMITS, t(34)),
            "still within the grace period"
        );
        assert!(call.expire(&LIMITS, t(35)));
        assert_eq!(call.call.state, CallState::Connected);
        assert_eq!(state_of(&call, "alice"), ConnectionState::Left);
        assert_eq!(call.member(&user("alice")).unwrap().away_until, None);
        assert!(
            !call.away(&user("alice"), t(70), false, &LIMITS, t(40)),
            "already out"
        );
        assert!(call.away(&user("bob"), t(70), false, &LIMITS, t(40)));
        assert!(call.expire(&LIMITS, t(70)));
        assert_eq!(call.call.end_reason, Some(EndReason::Normal));
    }

    #[test]
    fn coming_back_within_the_grace_keeps_the_participant_in_the_call() {
        let mut call = start(CallType::Video, &["bob"]).unwrap();
        call.join(&caller("bob"), AV, &LIMITS, t(1)).unwrap();
        assert!(call.away(&user("bob"), t(31), false, &LIMITS, t(1)));
        assert!(call.back(&user("bob"), &LIMITS, t(10)));
        assert!(!call.back(&user("bob"), &LIMITS, t(11)), "already back");
        assert_eq!(call.call.next_deadline, Some(t(1) + LIMITS.max_duration));
        assert!(!call.expire(&LIMITS, t(31)));
        assert_eq!(state_of(&call, "bob"), ConnectionState::Connected);
    }

    #[test]
    fn a_second_drop_keeps_the_first_deadline_but_a_restart_grants_a_full_grace() {
        let mut call = start(CallType::Video, &["bob"]).unwrap();
        call.join(&caller("bob"), AV, &LIMITS, t(1)).unwrap();
        assert!(call.away(&user("bob"), t(31), false, &LIMITS, t(1)));
        assert!(!call.away(&user("bob"), t(40), false, &LIMITS, t(10)));
        assert_eq!(call.member(&user("bob")).unwrap().away_until, Some(t(31)));
        assert!(call.away(&user("bob"), t(130), true, &LIMITS, t(100)));
        assert_eq!(call.member(&user("bob")).unwrap().away_until, Some(t(130)));
    }

    #[test]
    fn only_a_joined_participant_of_a_live_call_can_be_away() {
        let mut call = start(CallType::Video, &["bob"]).unwrap();
        assert!(
            !call.away(&user("bob"), t(31), false, &LIMITS, t(1)),
            "ringing"
        );
        assert!(
            !call.away(&user("zed"), t(31), false, &LIMITS, t(1)),
            "a stranger"
        );
        call.end(&user("alice"), EndReason::Normal, &LIMITS, t(2))
            .unwrap();
        assert!(
            !call.away(&user("alice"), t(31), false, &LIMITS, t(3)),
            "ended"
        );
    }

    #[test]
    fn declining_records_when() {
        let mut call = start(CallType::Video, &["bob", "carol"]).unwrap();
        call.decline(&user("bob"), &LIMITS, t(7)).unwrap();
        assert_eq!(call.member(&user("bob")).unwrap().declined_at, Some(t(7)));
        assert_eq!(call.member(&user("carol")).unwrap().declined_at, None);
    }

    #[test]
    fn media_toggles_need_a_joined_member_and_respect_the_call_type() {
        let mut call = start(CallType::Audio, &["bob"]).unwrap();
        let mute = MediaPatch {
            audio: Some(false),
            ..MediaPatch::default()
        };
        assert_eq!(
            call.update_media(&user("bob"), mute, t(1)),
            Err(CallError::NotJoined)
        );
        call.update_media(&user("alice"), mute, t(1)).unwrap();
        assert!(!call.member(&user("alice")).unwrap().audio_enabled);
        let camera = MediaPatch {
            video: Some(true),
            ..MediaPatch::default()
        };
        let err = call.update_media(&user("alice"), camera, t(1)).unwrap_err();
        assert!(matches!(
            err,
            CallError::Invalid {
                field: "videoEnabled",
                ..
            }
        ));
    }
}
