//! Who is connected: a count of sockets per user, and an epoch that tells a grace
//! timer whether the user came back (and maybe left again) while it waited.

use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Debug, Default)]
struct UserPresence {
    sockets: usize,
    /// Bumped each time the count drops to zero.
    epoch: u64,
}

/// Socket counts per user id.
#[derive(Debug, Default)]
pub(crate) struct Presence {
    // A std mutex: held only for a map update, never across an await.
    users: Mutex<HashMap<String, UserPresence>>,
}

impl Presence {
    pub fn connected(&self, user: &str) {
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        users.entry(user.to_owned()).or_default().sockets += 1;
    }

    /// A socket of `user` closed. If it was their last, returns the epoch a grace
    /// timer must find unchanged to count them as gone.
    pub fn disconnected(&self, user: &str) -> Option<u64> {
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        let entry = users.get_mut(user)?;
        entry.sockets = entry.sockets.saturating_sub(1);
        if entry.sockets > 0 {
            return None;
        }
        entry.epoch += 1;
        Some(entry.epoch)
    }

    /// After the grace period: whether `user` is still away since `epoch` (and then
    /// forgets them).
    pub fn still_gone(&self, user: &str, epoch: u64) -> bool {
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        let gone = users
            .get(user)
            .is_some_and(|p| p.sockets == 0 && p.epoch == epoch);
        if gone {
            users.remove(user);
        }
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_is_gone_only_when_their_last_socket_closed_and_stayed_closed() {
        let presence = Presence::default();
        presence.connected("alice");
        presence.connected("alice");
        assert_eq!(
            presence.disconnected("alice"),
            None,
            "one device is still on"
        );
        let epoch = presence.disconnected("alice").expect("last socket");
        assert!(presence.still_gone("alice", epoch));
        assert!(!presence.still_gone("alice", epoch), "reported once");
    }

    #[test]
    fn coming_back_within_the_grace_period_cancels_the_departure() {
        let presence = Presence::default();
        presence.connected("bob");
        let first = presence.disconnected("bob").expect("last socket");
        presence.connected("bob");
        assert!(!presence.still_gone("bob", first), "back online");
        let second = presence.disconnected("bob").expect("last socket again");
        assert!(
            !presence.still_gone("bob", first),
            "the first timer is stale"
        );
        assert!(presence.still_gone("bob", second));
    }
}
