//! Users: who Huddle has seen, their roles, and representatives' availability.

use crate::calls::model::UserId;

/// Hears when a representative's availability or queues change (the queue's
/// dispatcher: a customer may now be assigned).
pub trait AvailabilityObserver: Send + Sync + std::fmt::Debug {
    /// A representative's availability or queues changed (dispatch may now assign).
    fn availability_changed(&self, user: &UserId);
}
