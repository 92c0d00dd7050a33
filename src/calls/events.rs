//! What changed in a call, as events for the people in it. [`diff`] compares a call
//! before and after a change, so every change (over REST, Socket.IO, or by a timeout)
//! is announced the same way by the one function that sees them all.

use super::lifecycle::CallSnapshot;
use super::model::{CallState, ConnectionState, EndReason, Participant, UserId};

/// One thing members of a call should hear about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallEvent {
    /// `user` is now being rung (a new call, or an invitation to a running one).
    /// `in_call`: they are in another live call already (call waiting); filled in by
    /// the call service, which knows about other calls.
    Incoming {
        user: UserId,
        in_call: bool,
    },
    /// `user` answered their invitation.
    Accepted {
        user: UserId,
    },
    /// `user` refused their invitation.
    Declined {
        user: UserId,
    },
    /// `user` entered the call (after answering, or coming back).
    Joined {
        user: UserId,
    },
    /// `user` left the call.
    Left {
        user: UserId,
    },
    /// `user`'s participant record changed otherwise: media toggles, or an invitation
    /// that rang out (`missed`).
    Updated {
        user: UserId,
    },
    StateChanged {
        state: CallState,
    },
    /// The call is over. `by` is who ended it, if a person did.
    Ended {
        by: Option<UserId>,
        reason: EndReason,
    },
}

/// The events that take a call from `before` (`None`: it did not exist) to `after`.
/// `actor` is who made the change, if a person did. Once a call ends, only
/// [`CallEvent::Ended`] is reported for it: the rest is implied.
pub fn diff(
    before: Option<&CallSnapshot>,
    after: &CallSnapshot,
    actor: Option<&UserId>,
) -> Vec<CallEvent> {
    let mut events = Vec::new();
    let ended_now =
        !after.call.state.is_active() && before.is_none_or(|b| b.call.state.is_active());
    for p in &after.participants {
        let old = before.and_then(|b| b.member(&p.user_id));
        let was = old.map(|o| o.connection_state);
        let user = || p.user_id.clone();
        let rung_again = old.is_some_and(|o| o.invited_at != p.invited_at);
        match (was, p.connection_state) {
            (_, ConnectionState::Invited)
                if was != Some(ConnectionState::Invited) || rung_again =>
            {
                events.push(CallEvent::Incoming {
                    user: user(),
                    in_call: false,
                })
            }
            (Some(ConnectionState::Invited), ConnectionState::Connected) => {
                events.push(CallEvent::Accepted { user: user() });
                events.push(CallEvent::Joined { user: user() });
            }
            (Some(w), ConnectionState::Connected) if w != ConnectionState::Connected => {
                events.push(CallEvent::Joined { user: user() })
            }
            (Some(ConnectionState::Invited), ConnectionState::Declined) => {
                events.push(CallEvent::Declined { user: user() })
            }
            _ if ended_now => {}
            (Some(ConnectionState::Connected), ConnectionState::Left) => {
                events.push(CallEvent::Left { user: user() })
            }
            (Some(ConnectionState::Invited), ConnectionState::Missed) => {
                events.push(CallEvent::Updated { user: user() })
            }
            (Some(_), _) if old.is_some_and(|o| announced_change(o, p)) && p.is_joined() => {
                events.push(CallEvent::Updated { user: user() })
            }
            _ => {}
        }
    }
    if before.is_some_and(|b| b.call.state != after.call.state) && !ended_now {
        events.push(CallEvent::StateChanged {
            state: after.call.state,
        });
    }
    if ended_now {
        let by = actor.filter(|a| after.member(a).is_some()).cloned();
        let reason = after.call.end_reason.unwrap_or(EndReason::Normal);
        events.push(CallEvent::Ended { by, reason });
    }
    events
}

/// Whether a participant record changed in a way members hear about: being away
/// (no connection, within the grace period) is not announced.
fn announced_change(before: &Participant, after: &Participant) -> bool {
    let unannounced = Participant {
        away_until: before.away_until,
        ..after.clone()
    };
    *before != unannounced
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calls::lifecycle::MediaPatch;
    use crate::calls::lifecycle::tests::{AV, LIMITS, caller, start, t, user as u};
    use crate::calls::model::CallType;

    fn started(invitees: &[&str]) -> CallSnapshot {
        start(CallType::Video, invitees).unwrap()
    }

    #[test]
    fn a_new_call_rings_each_invitee() {
        let call = started(&["bob", "carol"]);
        assert_eq!(
            diff(None, &call, Some(&u("alice"))),
            vec![
                CallEvent::Incoming {
                    user: u("bob"),
                    in_call: false
                },
                CallEvent::Incoming {
                    user: u("carol"),
                    in_call: false
                }
            ]
        );
    }

    #[test]
    fn an_answer_is_accepted_joined_and_connects_the_call() {
        let before = started(&["bob"]);
        let mut after = before.clone();
        after.join(&caller("bob"), AV, &LIMITS, t(1)).unwrap();
        assert_eq!(
            diff(Some(&before), &after, Some(&u("bob"))),
            vec![
                CallEvent::Accepted { user: u("bob") },
                CallEvent::Joined { user: u("bob") },
                CallEvent::StateChanged {
                    state: CallState::Connected
                },
            ]
        );
    }

    #[test]
    fn a_toggle_updates_and_a_leave_in_a_group_is_announced() {
        let mut before = started(&["bob", "carol"]);
        before.join(&caller("bob"), AV, &LIMITS, t(1)).unwrap();
        let mut after = before.clone();
        let mute = MediaPatch {
            audio: Some(false),
            ..MediaPatch::default()
        };
        after.update_media(&u("bob"), mute, t(2)).unwrap();
        assert_eq!(
            diff(Some(&before), &after, Some(&u("bob"))),
            vec![CallEvent::Updated { user: u("bob") }]
        );
        let mut left = after.clone();
        left.end(&u("bob"), EndReason::Normal, &LIMITS, t(3))
            .unwrap();
        assert_eq!(
            diff(Some(&after), &left, Some(&u("bob"))),
            vec![CallEvent::Left { user: u("bob") }]
        );
    }

    #[test]
    fn an_ending_is_one_event_naming_who_ended_it() {
        let mut before = started(&["bob"]);
        before.join(&caller("bob"), AV, &LIMITS, t(1)).unwrap();
        let mut after = before.clone();
        after
            .end(&u("bob"), EndReason::Normal, &LIMITS, t(9))
            .unwrap();
        assert_eq!(
            diff(Some(&before), &after, Some(&u("bob"))),
            vec![CallEvent::Ended {
                by: Some(u("bob")),
                reason: EndReason::Normal
            }]
        );
    }

    #[test]
    fn a_decline_is_announced_before_the_call_ends() {
        let before = started(&["bob"]);
        let mut after = before.clone();
        after.decline(&u("bob"), &LIMITS, t(2)).unwrap();
        assert_eq!(
            diff(Some(&before), &after, Some(&u("bob"))),
            vec![
                CallEvent::Declined { user: u("bob") },
                CallEvent::Ended {
                    by: Some(u("bob")),
                    reason: EndReason::Declined
                },
            ]
        );
    }

    #[test]
    fn a_ring_out_tells_the_caller_and_a_re_invitation_rings_again() {
        let mut before = started(&["bob", "carol"]);
        before.join(&caller("bob"), AV, &LIMITS, t(1)).unwrap();
        let mut after = before.clone();
        after.expire(&LIMITS, t(60));
        assert_eq!(
            diff(Some(&before), &after, None),
            vec![CallEvent::Updated { user: u("carol") }]
        );
        let mut again = after.clone();
        again
            .invite(&u("alice"), vec![u("carol")], &LIMITS, t(70))
            .unwrap();
        assert_eq!(
            diff(Some(&after), &again, Some(&u("alice"))),
            vec![CallEvent::Incoming {
                user: u("carol"),
                in_call: false
            }]
        );
    }

    #[test]
    fn being_away_or_back_is_not_announced() {
        let mut before = started(&["bob"]);
        before.join(&caller("bob"), AV, &LIMITS, t(1)).unwrap();
        let mut after = before.clone();
        assert!(after.away(&u("bob"), t(31), false, &LIMITS, t(2)));
        assert_eq!(diff(Some(&before), &after, None), vec![]);
        let mut back = after.clone();
        assert!(back.back(&u("bob"), &LIMITS, t(3)));
        assert_eq!(diff(Some(&after), &back, None), vec![]);
    }
}
