//! What a phone call is, given the events known of it: a pure function of the *set*
//! of events, so that duplicates and any order of arrival give the same call.
//!
//! - `initiated_at`: the earliest INITIATE or START; `answered_at`: the earliest
//!   ANSWER; `ended_at`: the earliest DISCONNECT or END.
//! - state: `completed` once ended after an answer (or by a seed 000 END, which
//!   reports no answer), `missed` once ended without one, else `answered` or
//!   `initiated`. An ANSWER arriving after its DISCONNECT turns `missed` into
//!   `completed`.
//! - `duration`: whole seconds from `initiated_at` to `ended_at`, when both are known
//!   (never negative: clocks of a telephone system may disagree by a little).
//! - numbers: those of the earliest event naming them.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::events::EventKind;

/// One stored event of a call, as the fold needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownEvent {
    pub event_id: String,
    pub kind: EventKind,
    pub calling_number: Option<String>,
    pub called_number: Option<String>,
    pub occurred_at: DateTime<Utc>,
}

/// Where a phone call stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PhoneCallState {
    Initiated,
    Answered,
    Completed,
    Missed,
}

impl std::str::FromStr for PhoneCallState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        [
            Self::Initiated,
            Self::Answered,
            Self::Completed,
            Self::Missed,
        ]
        .into_iter()
        .find(|state| state.as_str() == s)
        .ok_or_else(|| format!("unknown phone call state `{s}`"))
    }
}

impl PhoneCallState {
    /// As stored in `phone_calls.state`.
    pub fn as_str(self) -> &'static str {
        match self {
            PhoneCallState::Initiated => "initiated",
            PhoneCallState::Answered => "answered",
            PhoneCallState::Completed => "completed",
            PhoneCallState::Missed => "missed",
        }
    }
}

/// A phone call as its events describe it (the columns of `phone_calls` they decide).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhoneCallFacts {
    pub calling_number: Option<String>,
    pub called_number: Option<String>,
    pub initiated_at: Option<DateTime<Utc>>,
    pub answered_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub duration: Option<i64>,
    pub state: PhoneCallState,
}

impl PhoneCallFacts {
    /// The call `events` describe, whatever their order and however often each
    /// appears. `None` for no events.
    pub fn from_events(events: &[KnownEvent]) -> Option<Self> {
        if events.is_empty() {
            return None;
        }
        // A total order on the set, so that every choice below is the same whatever
        // order the events came in.
        let mut sorted: Vec<&KnownEvent> = events.iter().collect();
        sorted.sort_by(|a, b| {
            (a.occurred_at, a.kind, &a.event_id).cmp(&(b.occurred_at, b.kind, &b.event_id))
        });
        let first = |kinds: &[EventKind]| {
            sorted
                .iter()
                .find(|e| kinds.contains(&e.kind))
                .map(|e| e.occurred_at)
        };
        let initiated_at = first(&[EventKind::Initiate, EventKind::Start]);
        let answered_at = first(&[EventKind::Answer]);
        let ended_at = first(&[EventKind::Disconnect, EventKind::End]);
        let ended_by_seed_000 = sorted.iter().any(|e| e.kind == EventKind::End);
        let state = match (ended_at, answered_at) {
            (Some(_), Some(_)) => PhoneCallState::Completed,
            (Some(_), None) if ended_by_seed_000 => PhoneCallState::Completed,
            (Some(_), None) => PhoneCallState::Missed,
            (None, Some(_)) => PhoneCallState::Answered,
            (None, None) => PhoneCallState::Initiated,
        };
        let duration = match (initiated_at, ended_at) {
            (Some(start), Some(end)) => Some((end - start).num_seconds().max(0)),
            _ => None,
        };
        Some(Self {
            calling_number: sorted.iter().find_map(|e| e.calling_number.clone()),
            called_number: sorted.iter().find_map(|e| e.called_number.clone()),
            initiated_at,
            answered_at,
            ended_at,
            duration,
            state,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "+14155552671";
    const B: &str = "+442071838750";

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_711_972_800 + seconds, 0).unwrap()
    }

    fn event(id: &str, kind: EventKind, seconds: i64) -> KnownEvent {
        KnownEvent {
            event_id: id.into(),
            kind,
            calling_number: Some(A.into()),
            called_number: Some(B.into()),
            occurred_at: at(seconds),
        }
    }

    fn answered_call() -> Vec<KnownEvent> {
        vec![
            event("i", EventKind::Initiate, 0),
            event("a", EventKind::Answer, 5),
            event("d", EventKind::Disconnect, 125),
        ]
    }

    /// Every order of `events`.
    fn permutations(events: &[KnownEvent]) -> Vec<Vec<KnownEvent>> {
        if events.len() <= 1 {
            return vec![events.to_vec()];
        }
        let mut all = Vec::new();
        for i in 0..events.len() {
            let mut rest = events.to_vec();
            let head = rest.remove(i);
            for mut tail in permutations(&rest) {
                tail.insert(0, head.clone());
                all.push(tail);
            }
        }
        all
    }

    #[test]
    fn an_answered_call_is_completed_with_disconnect_minus_initiate() {
        let facts = PhoneCallFacts::from_events(&answered_call()).unwrap();
        assert_eq!(facts.state, PhoneCallState::Completed);
        assert_eq!(facts.duration, Some(125));
        assert_eq!(
            (
                facts.calling_number.as_deref(),
                facts.called_number.as_deref()
            ),
            (Some(A), Some(B))
        );
    }

    #[test]
    fn an_unanswered_call_is_missed_until_a_late_answer_arrives() {
        let mut events = vec![
            event("i", EventKind::Initiate, 0),
            event("d", EventKind::Disconnect, 30),
        ];
        let missed = PhoneCallFacts::from_events(&events).unwrap();
        assert_eq!(
            (missed.state, missed.duration),
            (PhoneCallState::Missed, Some(30))
        );
        events.push(event("a", EventKind::Answer, 3));
        assert_eq!(
            PhoneCallFacts::from_events(&events).unwrap().state,
            PhoneCallState::Completed
        );
    }

    #[test]
    fn every_order_and_any_duplicates_give_the_same_call() {
        let mut events = answered_call();
        events.push(events[1].clone());
        events.push(events[2].clone());
        let expected = PhoneCallFacts::from_events(&answered_call()).unwrap();
        for order in permutations(&events) {
            assert_eq!(
                PhoneCallFacts::from_events(&order).as_ref(),
                Some(&expected)
            );
        }
    }

    #[test]
    fn partial_knowledge_gives_the_states_in_between() {
        let only = |kind, s| PhoneCallFacts::from_events(&[event("x", kind, s)]).unwrap();
        assert_eq!(
            only(EventKind::Initiate, 0).state,
            PhoneCallState::Initiated
        );
        assert_eq!(only(EventKind::Answer, 0).state, PhoneCallState::Answered);
        let disconnect = only(EventKind::Disconnect, 9);
        assert_eq!(
            (disconnect.state, disconnect.duration),
            (PhoneCallState::Missed, None)
        );
        assert!(PhoneCallFacts::from_events(&[]).is_none());
    }

    #[test]
    fn a_seed_000_end_completes_the_call_and_clock_skew_is_no_negative_duration() {
        let events = [
            event("s", EventKind::Start, 10),
            event("e", EventKind::End, 70),
        ];
        let facts = PhoneCallFacts::from_events(&events).unwrap();
        assert_eq!(
            (facts.state, facts.duration),
            (PhoneCallState::Completed, Some(60))
        );
        let skewed = [
            event("i", EventKind::Initiate, 10),
            event("d", EventKind::Disconnect, 9),
        ];
        assert_eq!(
            PhoneCallFacts::from_events(&skewed).unwrap().duration,
            Some(0)
        );
    }
}
