//! Who is connected: a count of sockets per user, and the feed that tells the call
//! domain when a user goes away (their last socket closed) or comes back (their
//! first socket opened).
//!
//! The domain, not this process's memory, decides what being away means (it stores a
//! deadline with each call, so a crash or restart cannot lose it). Changes reach it
//! through a few worker tasks, each owning a share of the users: a user's changes
//! are applied one at a time, and each worker re-reads the user's current socket
//! count before acting, so however fast a user flaps the last word matches the
//! sockets they really have.

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::{CallDomain, User};

/// Workers applying presence changes; a user always goes to the same one.
const WORKERS: usize = 8;
/// How long a failed change waits before it is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Socket counts per user id, and the feed to the domain.
#[derive(Default)]
pub(crate) struct Presence {
    // A std mutex: held only for a map update, never across an await.
    sockets: Mutex<HashMap<String, usize>>,
    /// Set once shutdown begins: sockets closing then are not users going away.
    closing: AtomicBool,
    /// One queue per worker, made when the domain is known.
    feed: OnceLock<Vec<mpsc::UnboundedSender<User>>>,
}

impl std::fmt::Debug for Presence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Presence").finish_non_exhaustive()
    }
}

impl Presence {
    /// Starts the workers that report changes to `domain`.
    pub fn start<D: CallDomain>(self: &Arc<Self>, domain: Arc<D>) {
        let senders = (0..WORKERS)
            .map(|_| {
                let (tx, rx) = mpsc::unbounded_channel();
                tokio::spawn(apply(self.clone(), domain.clone(), tx.clone(), rx));
                tx
            })
            .collect();
        let _ = self.feed.set(senders);
    }

    /// A socket of `user` opened.
    pub fn connected(&self, user: &User) {
        let first = {
            let mut sockets = self.sockets.lock().unwrap_or_else(|e| e.into_inner());
            let count = sockets.entry(user.id.clone()).or_default();
            *count += 1;
            *count == 1
        };
        if first {
            self.report(user);
        }
    }

    /// A socket of `user` closed.
    pub fn disconnected(&self, user: &User) {
        let last = {
            let mut sockets = self.sockets.lock().unwrap_or_else(|e| e.into_inner());
            match sockets.get_mut(&user.id) {
                Some(count) if *count > 1 => {
                    *count -= 1;
                    false
                }
                Some(_) => {
                    sockets.remove(&user.id);
                    true
                }
                None => false,
            }
        };
        if last && !self.closing.load(Ordering::SeqCst) {
            self.report(user);
        }
    }

    pub fn is_online(&self, user: &str) -> bool {
        let sockets = self.sockets.lock().unwrap_or_else(|e| e.into_inner());
        sockets.contains_key(user)
    }

    /// From now on, sockets that close are the server closing them.
    pub fn close(&self) {
        self.closing.store(true, Ordering::SeqCst);
    }

    fn report(&self, user: &User) {
        if let Some(feed) = self.feed.get() {
            let _ = feed[worker_of(&user.id)].send(user.clone());
        }
    }
}

fn worker_of(user: &str) -> usize {
    let mut hasher = DefaultHasher::new();
    user.hash(&mut hasher);
    (hasher.finish() % WORKERS as u64) as usize
}

/// One worker: for each user it hears about, tells the domain whether they are
/// online now, unless it already said so. A change that fails is retried.
async fn apply<D: CallDomain>(
    presence: Arc<Presence>,
    domain: Arc<D>,
    retry: mpsc::UnboundedSender<User>,
    mut queue: mpsc::UnboundedReceiver<User>,
) {
    // What the domain was last told, for users it was told are online. Anyone
    // absent is away as far as the domain knows (that is what a restart means too).
    let mut told_online: HashMap<String, bool> = HashMap::new();
    while let Some(user) = queue.recv().await {
        if presence.closing.load(Ordering::SeqCst) {
            continue;
        }
        let online = presence.is_online(&user.id);
        if told_online.contains_key(&user.id) == online {
            continue;
        }
        let result = if online {
            domain.user_back(&user).await
        } else {
            domain.user_away(&user).await
        };
        match result {
            Ok(()) if online => {
                told_online.insert(user.id.clone(), true);
            }
            Ok(()) => {
                told_online.remove(&user.id);
            }
            Err(e) => {
                tracing::error!(user = %user.id, online, error = %e, "presence change not stored; retrying");
                let retry = retry.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(RETRY_AFTER).await;
                    let _ = retry.send(user);
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BoxFuture, SignalError, events};
    use serde_json::Value;

    /// Records what presence tells it; the first `fail_first` reports fail.
    #[derive(Default)]
    struct Recorder {
        told: Mutex<Vec<(String, bool)>>,
        fail_first: Mutex<usize>,
    }

    impl Recorder {
        fn report(&self, user: &User, online: bool) -> Result<(), String> {
            let mut fail = self.fail_first.lock().unwrap();
            if *fail > 0 {
                *fail -= 1;
                return Err("database unavailable".into());
            }
            self.told.lock().unwrap().push((user.id.clone(), online));
            Ok(())
        }

        fn told(&self) -> Vec<(String, bool)> {
            self.told.lock().unwrap().clone()
        }
    }

    /// Only presence is exercised: the rest of the domain refuses everything.
    impl CallDomain for Recorder {
        fn authenticate(&self, _: &str, _: &http::request::Parts) -> Result<User, String> {
            Err("not used".into())
        }
        fn admit(&self, _: &User) -> Result<(), SignalError> {
            Ok(())
        }
        fn handle<'a>(
            &'a self,
            _: &'a User,
            _: events::Request,
        ) -> BoxFuture<'a, Result<Value, SignalError>> {
            Box::pin(async { Err(SignalError::new("UNUSED", "not used")) })
        }
        fn may_relay<'a>(
            &'a self,
            _: &'a User,
            _: &'a str,
            _: &'a str,
        ) -> BoxFuture<'a, Result<(), SignalError>> {
            Box::pin(async { Err(SignalError::new("UNUSED", "not used")) })
        }
        fn user_away<'a>(&'a self, user: &'a User) -> BoxFuture<'a, Result<(), String>> {
            Box::pin(async move { self.report(user, false) })
        }
        fn user_back<'a>(&'a self, user: &'a User) -> BoxFuture<'a, Result<(), String>> {
            Box::pin(async move { self.report(user, true) })
        }
        fn to_sfu<'a>(
            &'a self,
            _: &'a User,
            _: events::SfuMessage,
        ) -> BoxFuture<'a, Result<Value, SignalError>> {
            Box::pin(async { Err(SignalError::new("UNUSED", "not used")) })
        }
    }

    async fn settle() {
        tokio::time::sleep(Duration::from_secs(5)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn flapping_ends_with_the_domain_told_the_last_state_only_once_per_change() {
        let presence = Arc::new(Presence::default());
        let domain = Arc::new(Recorder::default());
        presence.start(domain.clone());
        for _ in 0..50 {
            presence.connected(&user("alice"));
            presence.disconnected(&user("alice"));
        }
        presence.connected(&user("alice"));
        settle().await;
        let told = domain.told();
        assert_eq!(told.last(), Some(&("alice".to_owned(), true)), "{told:?}");
        assert!(
            told.windows(2).all(|w| w[0].1 != w[1].1),
            "never the same thing twice in a row: {told:?}"
        );
        presence.disconnected(&user("alice"));
        settle().await;
        assert_eq!(domain.told().last(), Some(&("alice".to_owned(), false)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_change_the_domain_could_not_store_is_tried_again() {
        let presence = Arc::new(Presence::default());
        let domain = Arc::new(Recorder::default());
        *domain.fail_first.lock().unwrap() = 2;
        presence.start(domain.clone());
        presence.connected(&user("bob"));
        settle().await;
        assert_eq!(
            domain.told(),
            vec![("bob".to_owned(), true)],
            "on the third try"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn sockets_closed_by_a_shutdown_are_not_users_going_away() {
        let presence = Arc::new(Presence::default());
        let domain = Arc::new(Recorder::default());
        presence.start(domain.clone());
        presence.connected(&user("carol"));
        settle().await;
        presence.close();
        presence.disconnected(&user("carol"));
        settle().await;
        assert_eq!(domain.told(), vec![("carol".to_owned(), true)]);
    }

    fn user(id: &str) -> User {
        User {
            id: id.to_owned(),
            name: None,
            ip: None,
            admin: false,
            role: "customer".into(),
        }
    }

    #[test]
    fn a_user_is_online_while_any_of_their_sockets_is() {
        let presence = Presence::default();
        presence.connected(&user("alice"));
        presence.connected(&user("alice"));
        presence.disconnected(&user("alice"));
        assert!(presence.is_online("alice"), "one device is still on");
        presence.disconnected(&user("alice"));
        assert!(!presence.is_online("alice"));
        presence.disconnected(&user("alice"));
        assert!(!presence.is_online("alice"), "never below zero");
    }
}
