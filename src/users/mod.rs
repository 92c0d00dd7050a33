//! Users of the support lines (issue 17): everyone Huddle has seen (`users`, keyed by
//! the token's `sub`), their profile, the queues a representative serves and their
//! availability; optional accounts with passwords in [`accounts`].
//!
//! A user's row is made, or its role refreshed, by [`UserService::seen`] whenever
//! they come (a REST request to the users, queue or feedback routes, a socket coming
//! back). A representative's availability and queues are theirs to set; a change is
//! told to the [`AvailabilityObserver`] (the queue's dispatcher, which may now assign).

pub mod accounts;

use std::sync::Arc;

use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::{Identity, Role};
use crate::calls::model::{Availability, UserId};
use crate::clock::Clock;
use crate::store::Store;
use crate::wire::Failure;

/// Most queues one representative may serve.
pub const MAX_QUEUES: usize = 100;

/// Hears of representatives whose availability or queues changed.
pub trait AvailabilityObserver: Send + Sync + std::fmt::Debug {
    /// A representative's availability or queues changed (dispatch may now assign).
    fn availability_changed(&self, user: &UserId);
}

/// A user as `GET /api/v1/users/profile` shows them.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    pub user_id: String,
    pub display_name: Option<String>,
    /// `customer`, `representative` or `admin`: the role of their latest token.
    pub role: String,
    /// What they said (`offline` until a representative says otherwise).
    pub availability: Availability,
    /// The queues they serve, by name (representatives only; others: none).
    pub queues: Vec<String>,
    /// Their account's username, when they have one (AUTH_ACCOUNTS).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
}

/// What a profile update changes; `None` leaves it as it is.
#[derive(Debug, Clone, Default)]
pub struct ProfileChange {
    /// `Some(None)`: no display name.
    pub display_name: Option<Option<String>>,
    pub queues: Option<Vec<String>>,
}

/// Reads and changes users' profiles and availability.
#[derive(Debug)]
pub struct UserService {
    store: Store,
    clock: Arc<dyn Clock>,
    observer: Arc<dyn AvailabilityObserver>,
}

impl UserService {
    pub fn new(
        store: Store,
        clock: Arc<dyn Clock>,
        observer: Arc<dyn AvailabilityObserver>,
    ) -> Self {
        Self {
            store,
            clock,
            observer,
        }
    }

    /// `who` came: their row is made if missing, with the token's name as display
    /// name (one they set themselves is kept), and their role is the token's. A new
    /// representative serves the `default` queue. A service token (a backend) is no
    /// user and makes no row.
    pub async fn seen(&self, who: &Identity) -> Result<(), Failure> {
        if who.role == Role::Service {
            return Ok(());
        }
        self.store
            .user_seen(
                &who.id,
                who.name.as_deref(),
                who.role.as_str(),
                self.clock.now(),
            )
            .await?;
        Ok(())
    }

    /// `user`'s profile (once seen); a service token's user has none.
    pub async fn profile(&self, user: &UserId) -> Result<Profile, Failure> {
        self.store
            .profile(user)
            .await?
            .ok_or_else(|| Failure::forbidden("a service token has no profile"))
    }

    /// Changes `who`'s display name or queues (at most [`MAX_QUEUES`], checked by the
    /// caller); only representatives serve queues, and every queue named must exist.
    /// All or nothing.
    pub async fn update(&self, who: &Identity, change: ProfileChange) -> Result<Profile, Failure> {
        self.profile(&who.id).await?;
        if change.queues.is_some() && who.role != Role::Representative {
            return Err(Failure::forbidden("only representatives serve queues"));
        }
        let queues = change.queues.map(|mut q| {
            q.sort();
            q.dedup();
            q
        });
        let applied = self
            .store
            .update_profile(&who.id, change.display_name.as_ref(), queues.as_deref())
            .await?;
        if let Err(unknown) = applied {
            return Err(Failure::invalid(
                "queues",
                format!("no queue is named `{unknown}`"),
            ));
        }
        if queues.is_some() {
            self.observer.availability_changed(&who.id);
        }
        self.profile(&who.id).await
    }

    /// A representative says whether they take customers now. Becoming `available`
    /// starts their idle time (which orders who is assigned next); saying it again
    /// keeps it.
    pub async fn set_availability(
        &self,
        who: &Identity,
        status: Availability,
    ) -> Result<Profile, Failure> {
        if who.role != Role::Representative {
            return Err(Failure::forbidden(
                "only representatives have an availability",
            ));
        }
        self.store
            .set_availability(&who.id, status, self.clock.now())
            .await?;
        self.observer.availability_changed(&who.id);
        self.profile(&who.id).await
    }
}
