//! A support queue's vocabulary: a customer's place in line ([`QueueEntry`]) and
//! its statuses, what the wire shows of it, the wait estimate, and the figures of
//! `GET /api/v1/queue/stats`.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::calls::model::{CallId, CallType, UserId, text_enum};

text_enum! {
    /// Where a customer's place in a queue is (`queue_entries.status`). `waiting` and
    /// `assigned` are open (one per customer); the others are final.
    EntryStatus, "queue entry status" {
        /// In line (a callback entry keeps its place without waiting online).
        Waiting = "waiting",
        /// Given to a representative: the call rings them (the customer, for a callback).
        Assigned = "assigned",
        /// A representative answered (the customer, for a callback).
        Served = "served",
        /// The customer left the line, or hung up before a representative answered.
        Left = "left",
        /// The customer had no socket for CONNECTION_TIMEOUT while waiting.
        Abandoned = "abandoned",
        /// Called back, and the customer did not answer.
        Missed = "missed",
    }
}

/// One customer's place in a queue (`queue_entries`).
#[derive(Debug, Clone, PartialEq)]
pub struct QueueEntry {
    pub id: String,
    pub queue: String,
    pub customer_id: UserId,
    pub call_type: CallType,
    pub status: EntryStatus,
    /// Asked to be called back: never abandoned, and the call rings the customer.
    pub callback: bool,
    /// Orders the line; kept when the entry comes back after a representative
    /// declined or let it ring out.
    pub joined_at: DateTime<Utc>,
    pub representative_id: Option<UserId>,
    /// The call of the current (or last) assignment.
    pub call_id: Option<CallId>,
    pub assigned_at: Option<DateTime<Utc>>,
    pub answered_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    /// How many times it was assigned.
    pub attempts: i64,
}

/// A queue and its description.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueueInfo {
    pub name: String,
    pub description: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// Where an entry stands: its place among the waiting and the estimated wait.
/// `0` and `0` once it is no longer waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    pub position: i64,
    pub estimated_wait_seconds: i64,
}

/// The wait estimate: `round(avgHandle × position / max(onDuty, 1))` seconds, where
/// `avgHandle` is the mean handling time (answered → ended) of the queue's last 20
/// served entries (QUEUE_DEFAULT_HANDLE_SECONDS while there are none) and `onDuty`
/// the representatives serving the queue whose availability is `available` (free or
/// in a call). A customer at position p waits, on average, for p calls to end
/// among `onDuty` representatives working in parallel.
pub fn estimate(avg_handle_seconds: f64, position: i64, on_duty: i64) -> i64 {
    if position <= 0 {
        return 0;
    }
    (avg_handle_seconds * position as f64 / on_duty.max(1) as f64).round() as i64
}

/// An entry as the customer sees it.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EntryView {
    pub entry_id: String,
    pub queue: String,
    /// `audio` or `video`.
    #[serde(rename = "type")]
    #[schema(value_type = String)]
    pub call_type: CallType,
    /// `waiting`, `assigned`, `served`, `left`, `abandoned` or `missed`.
    #[schema(value_type = String)]
    pub status: EntryStatus,
    /// 1 for the next in line; 0 once not waiting.
    pub position: i64,
    /// See docs/api.md for the formula; 0 once not waiting.
    pub estimated_wait_seconds: i64,
    pub callback: bool,
    pub joined_at: DateTime<Utc>,
    /// The call of the assignment, once assigned.
    #[schema(value_type = Option<String>)]
    pub call_id: Option<CallId>,
    #[schema(value_type = Option<String>)]
    pub representative_id: Option<UserId>,
}

impl EntryView {
    pub fn new(e: &QueueEntry, standing: Standing) -> Self {
        EntryView {
            entry_id: e.id.clone(),
            queue: e.queue.clone(),
            call_type: e.call_type,
            status: e.status,
            position: standing.position,
            estimated_wait_seconds: standing.estimated_wait_seconds,
            callback: e.callback,
            joined_at: e.joined_at,
            call_id: e.call_id,
            representative_id: e.representative_id.clone(),
        }
    }
}

/// One queue's figures.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueueFigures {
    pub queue: String,
    /// Waiting now (callbacks included).
    pub waiting: i64,
    /// Mean wait (joined → assigned) of the entries assigned in the last 24 h.
    pub average_wait_seconds: Option<f64>,
    /// How long the longest-waiting customer has waited, now.
    pub longest_wait_seconds: i64,
    /// Served in the last 24 h.
    pub served: i64,
    /// Abandoned in the last 24 h.
    pub abandoned: i64,
    /// Waiting now with a callback asked for.
    pub callbacks_pending: i64,
}

/// One representative's figures.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RepresentativeFigures {
    #[schema(value_type = String)]
    pub user_id: UserId,
    pub display_name: Option<String>,
    /// `available`, `busy` or `offline`.
    pub availability: String,
    /// Queue calls they answered that ended in the last 24 h.
    pub calls_handled: i64,
    /// Mean answered → ended of those calls.
    pub average_handling_seconds: Option<f64>,
    /// Mean rating customers gave those calls (`call_feedback`).
    pub average_rating: Option<f64>,
}

/// `GET /api/v1/queue/stats`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueueStats {
    pub queues: Vec<QueueFigures>,
    pub representatives: Vec<RepresentativeFigures>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_estimate_is_the_handling_time_per_place_shared_among_those_on_duty() {
        // Nobody on duty counts as one.
        assert_eq!(estimate(180.0, 1, 0), 180);
        assert_eq!(estimate(180.0, 3, 2), 270);
        assert_eq!(estimate(100.0, 1, 3), 33);
        // Not waiting: nothing to estimate.
        assert_eq!(estimate(180.0, 0, 1), 0);
    }
}
