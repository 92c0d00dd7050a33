//! Support queues: customers wait in line, available representatives answer, the
//! next customer is given to the representative idle longest, and an assignment is
//! a Huddle call between them that rings the representative (or, for a customer who
//! asked to be called back, rings the customer).
//!
//! ## The model
//! A customer's place is a `queue_entries` row (see [`model::EntryStatus`]): joined
//! `waiting`, then `assigned` to a representative with a call, then `served`, `left`,
//! `abandoned` or `missed`; or back to `waiting` in the same place (same
//! `joined_at`) when the representative declined or let it ring out
//! (RINGING_TIMEOUT), in which case the representative becomes `busy` until they set
//! themselves available again. Position is 1 + the waiting entries of the same
//! queue that joined earlier; callbacks keep their place like anyone else.
//!
//! ## Assignment, exactly once
//! The dispatcher ([`QueueService::dispatch`]) runs on every node, woken by joins,
//! availability changes and call ends, and every second by the sweeper. It picks
//! the longest-idle free representative serving a queue with someone waiting and the
//! oldest waiting entry of the queues they serve (`store::queue`), and claims both
//! in one transaction of two conditional updates; a claim that loses a race to
//! another node changes nothing and the dispatcher looks again, so nobody is given
//! twice and nobody skipped. The call's id is chosen and stored with the claim
//! before the call starts (`CallService::place`): an assignment whose call is
//! missing or ended without being applied (a crash in between) is found by the
//! sweep and undone or closed.
//!
//! ## Ends
//! The notifier passes every ended call to [`QueueService::run`]; the assignment's
//! entry closes by what happened to the call ([`store::queue::Closing`]): answered →
//! `served` (the representative idle from now); declined or rung out → back in line,
//! representative `busy`; hung up by the customer first → `left`; a callback the
//! customer did not answer → `missed`.
//!
//! ## Abandonment
//! A customer whose sockets are all gone (`Realtime::user_away`) is away from then
//! on (`away_since`), until a socket comes back. A waiting entry whose customer has
//! been away for CONNECTION_TIMEOUT is `abandoned`, unless it asked for a callback.
//! A customer who never connected a socket is never abandoned.
//!
//! ## The wait estimate
//! `estimatedWaitSeconds = round(avgHandle × position / max(onDuty, 1))`: see
//! [`model::estimate`].
//!
//! ## Notices
//! `queue:position_update` to a waiting customer whenever their (position,
//! estimate) differs from what they were last told (stored, so that one node tells
//! them); `queue:your_turn` to the customer and `call:assigned` to the
//! representative at each assignment; `queue:update` to every representative and
//! admin whenever a queue's line changes.

pub mod model;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::http::StatusCode;
use chrono::{DateTime, Duration, Utc};
use signaling::Signaling;
use signaling::events::Notice;
use tokio::sync::{Notify, mpsc};

use crate::auth::{Identity, Role};
use crate::calls::lifecycle::{CallSnapshot, Caller, MediaFlags, NewCall};
use crate::calls::model::{CallId, CallType, ConnectionState, EndReason, UserId};
use crate::calls::service::CallService;
use crate::store::queue::Closing;
use crate::users::AvailabilityObserver;
use crate::wire::Failure;
use model::{
    EntryStatus, EntryView, QueueEntry, QueueFigures, QueueInfo, QueueStats, RepresentativeFigures,
    Standing, estimate,
};

/// Served entries whose handling times make the estimate's mean.
const HANDLING_SAMPLE: i64 = 20;
/// Assignments made per dispatch; the rest wait for the next wake or tick.
const DISPATCH_BATCH: usize = 1_000;
/// How long an assignment may go without its call before the sweep undoes it: the
/// call is started right after the claim, so only a crash leaves one this long.
const CLAIM_GRACE: Duration = Duration::seconds(30);
/// The window of the statistics.
const STATS_WINDOW: Duration = Duration::hours(24);
/// The queue a join names none.
pub const DEFAULT_QUEUE: &str = "default";

/// Settings of the support queues.
#[derive(Debug, Clone)]
pub struct QueueSettings {
    /// QUEUE_DEFAULT_HANDLE_SECONDS: the estimate's handling time while a queue has
    /// served nobody yet.
    pub default_handle_seconds: f64,
    /// CONNECTION_TIMEOUT: how long a waiting customer may be away.
    pub away_grace: Duration,
}

/// Queues, their entries and the dispatcher.
#[derive(Debug)]
pub struct QueueService {
    calls: Arc<CallService>,
    signaling: Signaling,
    settings: QueueSettings,
    /// Wakes [`QueueService::run`] to dispatch.
    wake: Notify,
    /// Set when a representative's availability changed: every line's estimates
    /// and figures are announced again on the next wake.
    lines_stale: AtomicBool,
    /// One dispatch at a time on this node (nodes race each other in the store).
    dispatching: tokio::sync::Mutex<()>,
}

fn not_in_queue() -> Failure {
    Failure::new(
        StatusCode::NOT_FOUND,
        "NOT_IN_QUEUE",
        "you have no place in a queue",
    )
}

fn queue_not_found(name: &str) -> Failure {
    Failure::new(
        StatusCode::NOT_FOUND,
        "QUEUE_NOT_FOUND",
        format!("no queue named `{name}`"),
    )
}

fn staff_only(me: &Identity) -> Result<(), Failure> {
    match me.role {
        Role::Representative | Role::Admin => Ok(()),
        Role::Customer | Role::Service => Err(Failure::forbidden(
            "only representatives and admins may see queue statistics",
        )),
    }
}

/// `type` of a join: `audio` or `video`.
pub fn parse_call_type(value: Option<&str>) -> Result<CallType, Failure> {
    value
        .ok_or_else(|| Failure::invalid("type", "is required: audio or video"))?
        .parse()
        .map_err(|_| Failure::invalid("type", "must be audio or video"))
}

/// A queue's name: 1 to 64 letters, digits, `.`, `_`, `-`.
fn check_queue_name(name: &str) -> Result<(), Failure> {
    let fine = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if fine {
        Ok(())
    } else {
        Err(Failure::invalid(
            "name",
            "must be 1 to 64 letters, digits, `.`, `_` or `-`",
        ))
    }
}

impl QueueService {
    pub fn new(calls: Arc<CallService>, signaling: Signaling, settings: QueueSettings) -> Self {
        Self {
            calls,
            signaling,
            settings,
            wake: Notify::new(),
            lines_stale: AtomicBool::new(false),
            dispatching: tokio::sync::Mutex::new(()),
        }
    }

    /// Wakes the dispatcher: someone may now be assigned.
    pub fn kick(&self) {
        self.wake.notify_one();
    }

    /// Every queue.
    pub async fn queues(&self) -> Result<Vec<QueueInfo>, Failure> {
        Ok(self.calls.store().queues().await?)
    }

    /// An admin creates queue `name`.
    pub async fn create_queue(
        &self,
        me: &Identity,
        name: String,
        description: Option<String>,
    ) -> Result<QueueInfo, Failure> {
        if me.role != Role::Admin {
            return Err(Failure::forbidden("only admins may create queues"));
        }
        check_queue_name(&name)?;
        if description
            .as_ref()
            .is_some_and(|d| d.chars().count() > 500)
        {
            return Err(Failure::invalid(
                "description",
                "is longer than 500 characters",
            ));
        }
        let queue = QueueInfo {
            name,
            description,
            created_at: self.calls.now(),
        };
        if !self.calls.store().insert_queue(&queue).await? {
            return Err(Failure::new(
                StatusCode::CONFLICT,
                "QUEUE_EXISTS",
                format!("a queue named `{}` exists", queue.name),
            ));
        }
        Ok(queue)
    }

    /// Fails unless queue `name` exists.
    async fn existing(&self, name: &str) -> Result<(), Failure> {
        let queues = self.calls.store().queues().await?;
        if queues.iter().any(|q| q.name == name) {
            Ok(())
        } else {
            Err(queue_not_found(name))
        }
    }

    /// Customer `me` joins `queue` (the default one for `None`) for a call of
    /// `call_type`, asking to be called back or not.
    pub async fn join(
        &self,
        me: &Identity,
        queue: Option<String>,
        call_type: CallType,
        callback: bool,
    ) -> Result<EntryView, Failure> {
        if me.role != Role::Customer {
            return Err(Failure::forbidden(
                "only customers join queues; representatives answer them",
            ));
        }
        let queue = queue.unwrap_or_else(|| DEFAULT_QUEUE.to_owned());
        self.existing(&queue).await?;
        let entry = QueueEntry {
            id: uuid::Uuid::new_v4().to_string(),
            queue,
            customer_id: me.id.clone(),
            call_type,
            status: EntryStatus::Waiting,
            callback,
            joined_at: self.calls.now(),
            representative_id: None,
            call_id: None,
            assigned_at: None,
            answered_at: None,
            ended_at: None,
            attempts: 0,
        };
        if !self.calls.store().insert_entry(&entry).await? {
            return Err(Failure::new(
                StatusCode::CONFLICT,
                "ALREADY_IN_QUEUE",
                "you already have a place in a queue",
            ));
        }
        self.line_changed(&entry.queue).await?;
        self.kick();
        self.view(&entry).await
    }

    /// `me`'s open entry.
    pub async fn position(&self, me: &UserId) -> Result<EntryView, Failure> {
        let entry = self.open(me).await?;
        self.view(&entry).await
    }

    async fn open(&self, me: &UserId) -> Result<QueueEntry, Failure> {
        self.calls
            .store()
            .open_entry(me)
            .await?
            .ok_or_else(not_in_queue)
    }

    /// `me` leaves the line.
    pub async fn leave(&self, me: &UserId) -> Result<EntryView, Failure> {
        let entry = self.open(me).await?;
        self.change_waiting(entry, EntryStatus::Left, false).await
    }

    /// `me` asks to be called back: their entry keeps its place; without one they
    /// join `queue` with a callback asked for (then the flag is `true`).
    pub async fn callback(
        &self,
        me: &Identity,
        queue: Option<String>,
        call_type: Option<&str>,
    ) -> Result<(EntryView, bool), Failure> {
        match self.calls.store().open_entry(&me.id).await? {
            Some(entry) => Ok((
                self.change_waiting(entry, EntryStatus::Waiting, true)
                    .await?,
                false,
            )),
            None => {
                let call_type = parse_call_type(call_type)?;
                Ok((self.join(me, queue, call_type, true).await?, true))
            }
        }
    }

    /// Moves waiting `entry` to `to` with `callback`; 409 once it is assigned.
    async fn change_waiting(
        &self,
        entry: QueueEntry,
        to: EntryStatus,
        callback: bool,
    ) -> Result<EntryView, Failure> {
        let store = self.calls.store();
        if !store
            .update_waiting(&entry.id, to, callback, self.calls.now())
            .await?
        {
            return Err(Failure::new(
                StatusCode::CONFLICT,
                "QUEUE_ENTRY_ASSIGNED",
                "a representative has been given your call: answer or end the call instead",
            ));
        }
        let changed = store.entry(&entry.id).await?.ok_or_else(not_in_queue)?;
        if to != EntryStatus::Waiting {
            self.line_changed(&changed.queue).await?;
        }
        self.view(&changed).await
    }

    /// `entry` as its customer sees it, with its standing now.
    async fn view(&self, entry: &QueueEntry) -> Result<EntryView, Failure> {
        let standing = if entry.status == EntryStatus::Waiting {
            let line = self.line(&entry.queue).await?;
            line.standings
                .into_iter()
                .find(|(e, _)| e.id == entry.id)
                .map(|(_, s)| s)
        } else {
            None
        };
        let standing = standing.unwrap_or(Standing {
            position: 0,
            estimated_wait_seconds: 0,
        });
        Ok(EntryView::new(entry, standing))
    }

    /// `queue`'s waiting entries with their standings, and who is on duty.
    async fn line(&self, queue: &str) -> Result<Line, Failure> {
        let store = self.calls.store();
        let waiting = store.waiting(queue).await?;
        let times = store.handling_times(queue, HANDLING_SAMPLE).await?;
        let avg_handle = if times.is_empty() {
            self.settings.default_handle_seconds
        } else {
            let total: i64 = times.iter().map(|(a, e)| (*e - *a).num_seconds()).sum();
            total.max(0) as f64 / times.len() as f64
        };
        let on_duty = store.on_duty(queue).await?;
        let standings = waiting
            .into_iter()
            .zip(1..)
            .map(|(entry, position)| {
                let standing = Standing {
                    position,
                    estimated_wait_seconds: estimate(avg_handle, position, on_duty),
                };
                (entry, standing)
            })
            .collect();
        Ok(Line { standings, on_duty })
    }

    /// `queue`'s line changed (or its estimate's inputs): its waiting customers
    /// hear their new standing (those whose standing changed), and representatives
    /// and admins its figures.
    async fn line_changed(&self, queue: &str) -> Result<(), Failure> {
        let store = self.calls.store();
        let line = self.line(queue).await?;
        for (entry, s) in &line.standings {
            if store
                .set_notified(&entry.id, s.position, s.estimated_wait_seconds)
                .await?
            {
                self.signaling.notify(
                    vec![entry.customer_id.0.clone()],
                    Notice::QueuePositionUpdate {
                        entry_id: entry.id.clone(),
                        queue: queue.to_owned(),
                        position: s.position,
                        estimated_wait_seconds: s.estimated_wait_seconds,
                    },
                );
            }
        }
        let now = self.calls.now();
        let longest = line
            .standings
            .first()
            .map_or(0, |(e, _)| (now - e.joined_at).num_seconds().max(0));
        let staff = store.staff().await?;
        if !staff.is_empty() {
            self.signaling.notify(
                staff,
                Notice::QueueUpdate {
                    queue: queue.to_owned(),
                    length: line.standings.len() as i64,
                    longest_wait_seconds: longest,
                    available_representatives: line.on_duty,
                },
            );
        }
        Ok(())
    }

    /// Every queue's line may have changed (a representative's availability).
    async fn all_lines_changed(&self) -> Result<(), Failure> {
        for queue in self.calls.store().queues().await? {
            self.line_changed(&queue.name).await?;
        }
        Ok(())
    }

    /// Assigns waiting customers to free representatives until no pair is left
    /// (or [`DISPATCH_BATCH`] were made). Returns how many were assigned. Safe on
    /// several nodes at once: see the module documentation.
    pub async fn dispatch(&self) -> Result<usize, Failure> {
        let _one = self.dispatching.lock().await;
        let store = self.calls.store();
        let mut assigned = 0;
        let mut changed = BTreeSet::new();
        let result = async {
            while assigned < DISPATCH_BATCH {
                // A call that ended (declined, rung out) may have put its customer
                // back in line ahead of everyone waiting: apply those ends first.
                for entry in store.ended_assignments().await? {
                    if let Some(call) = entry.call_id {
                        self.call_ended(call).await?;
                    }
                }
                let Some((rep, entry)) = store.next_assignment().await? else {
                    break;
                };
                let call = CallId::random();
                if !store.claim(&rep, &entry, call, self.calls.now()).await? {
                    // Another node took one of them first: look again.
                    continue;
                }
                let Some(entry) = store.entry(&entry).await? else {
                    continue;
                };
                changed.insert(entry.queue.clone());
                if let Err(e) = self.place(&entry, &rep, call).await {
                    tracing::error!(entry = %entry.id, %rep, code = %e.code, error = %e.message, "assigned call not started: the customer is back in line");
                    store
                        .close_assignment(&entry, call, Closing::Undone, self.calls.now())
                        .await?;
                    // Not again at once: the next wake or tick tries again.
                    break;
                }
                assigned += 1;
            }
            Ok::<_, Failure>(())
        }
        .await;
        for queue in &changed {
            self.line_changed(queue).await?;
        }
        result.map(|()| assigned)
    }

    /// Starts the call of `entry`'s assignment to `rep` and tells them both.
    async fn place(&self, entry: &QueueEntry, rep: &UserId, call: CallId) -> Result<(), Failure> {
        let store = self.calls.store();
        let (caller, callee) = if entry.callback {
            (rep, &entry.customer_id)
        } else {
            (&entry.customer_id, rep)
        };
        let caller = Caller {
            id: caller.clone(),
            name: store.display_name(caller).await?,
        };
        let request = NewCall {
            call_type: entry.call_type,
            invitees: vec![callee.clone()],
            chat_id: None,
            media: MediaFlags {
                audio: true,
                video: entry.call_type == CallType::Video,
            },
            media_mode: self.calls.default_media_mode(),
        };
        self.calls.place(call, &caller, request).await?;
        let call_id = call.to_string();
        self.signaling.notify(
            vec![entry.customer_id.0.clone()],
            Notice::QueueYourTurn {
                entry_id: entry.id.clone(),
                queue: entry.queue.clone(),
                call_id: call_id.clone(),
                representative_id: rep.0.clone(),
                callback: entry.callback,
            },
        );
        self.signaling.notify(
            vec![rep.0.clone()],
            Notice::CallAssigned {
                call_id,
                entry_id: entry.id.clone(),
                queue: entry.queue.clone(),
                customer_id: entry.customer_id.0.clone(),
                call_type: entry.call_type.as_str().to_owned(),
                callback: entry.callback,
            },
        );
        Ok(())
    }

    /// Call `call` ended: if it was an assignment's, the assignment closes.
    pub async fn call_ended(&self, call: CallId) -> Result<(), Failure> {
        let store = self.calls.store();
        let Some(entry) = store.assigned_to_call(call).await? else {
            return Ok(());
        };
        let Some(snapshot) = store.load(call).await? else {
            return Ok(());
        };
        if snapshot.call.state.is_active() {
            return Ok(());
        }
        let closing = closing(&entry, &snapshot);
        if store
            .close_assignment(&entry, call, closing, self.calls.now())
            .await?
        {
            self.line_changed(&entry.queue).await?;
            self.kick();
        }
        Ok(())
    }

    /// `customer`'s last socket closed: from now on they are away.
    pub async fn away(&self, customer: &UserId) -> Result<(), Failure> {
        let now = self.calls.now();
        Ok(self.calls.store().set_away(customer, Some(now)).await?)
    }

    /// `customer` is connected again.
    pub async fn back(&self, customer: &UserId) -> Result<(), Failure> {
        Ok(self.calls.store().set_away(customer, None).await?)
    }

    /// The (only) process started: nobody is connected to it yet, so every customer
    /// with a place is away from now unless they were already. Run before serving.
    pub async fn restarted(&self) -> Result<(), Failure> {
        Ok(self.calls.store().all_away(self.calls.now()).await?)
    }

    /// What the sweeper does every second: abandons the entries of customers away
    /// past CONNECTION_TIMEOUT, undoes or closes assignments a crash left behind,
    /// and dispatches.
    pub async fn tick(&self) -> Result<(), Failure> {
        let store = self.calls.store();
        let now = self.calls.now();
        let abandoned: BTreeSet<String> = store
            .abandon(now - self.settings.away_grace, now)
            .await?
            .into_iter()
            .collect();
        for queue in &abandoned {
            self.line_changed(queue).await?;
        }
        for entry in store.stranded(now - CLAIM_GRACE).await? {
            let Some(call) = entry.call_id else { continue };
            if store.load(call).await?.is_some() {
                self.call_ended(call).await?;
            } else if store
                .close_assignment(&entry, call, Closing::Undone, now)
                .await?
            {
                tracing::warn!(entry = %entry.id, %call, "an assignment without its call was undone");
                self.line_changed(&entry.queue).await?;
            }
        }
        self.dispatch().await?;
        Ok(())
    }

    /// Dispatches when woken and closes the assignments of calls that end, until
    /// the channel of ended calls closes.
    pub async fn run(
        self: Arc<Self>,
        mut ended: mpsc::UnboundedReceiver<CallId>,
        mut presence: mpsc::UnboundedReceiver<(UserId, bool)>,
    ) {
        loop {
            let handled = tokio::select! {
                // Ends first: they may put customers back in line ahead of others.
                biased;
                call = ended.recv() => match call {
                    Some(call) => self.call_ended(call).await,
                    None => return,
                },
                Some((user, away)) = presence.recv() => match away {
                    true => self.away(&user).await,
                    false => self.back(&user).await,
                },
                () = self.wake.notified() => self.woken().await,
            };
            if let Err(e) = handled {
                tracing::error!(code = %e.code, error = %e.message, "queue step failed");
            }
        }
    }

    /// Announces the lines again if availability changed, then dispatches.
    async fn woken(&self) -> Result<(), Failure> {
        if self.lines_stale.swap(false, Ordering::SeqCst) {
            self.all_lines_changed().await?;
        }
        self.dispatch().await.map(drop)
    }

    /// The figures of the last 24 hours, of every queue or of `queue`.
    pub async fn stats(&self, me: &Identity, queue: Option<&str>) -> Result<QueueStats, Failure> {
        staff_only(me)?;
        if let Some(name) = queue {
            self.existing(name).await?;
        }
        let store = self.calls.store();
        let now = self.calls.now();
        let since = now - STATS_WINDOW;
        let queues: Vec<String> = store
            .queues()
            .await?
            .into_iter()
            .map(|q| q.name)
            .filter(|name| queue.is_none_or(|want| want == name))
            .collect();
        let entries: Vec<QueueEntry> = store
            .recent_entries(since)
            .await?
            .into_iter()
            .filter(|e| queues.contains(&e.queue))
            .collect();
        let ratings = store.representative_ratings(since).await?;
        let representatives = store
            .representatives(queue)
            .await?
            .into_iter()
            .map(|r| {
                let user = UserId(r.user_id);
                let handled: Vec<i64> = entries
                    .iter()
                    .filter(|e| {
                        e.status == EntryStatus::Served
                            && e.representative_id.as_ref() == Some(&user)
                            && e.ended_at.is_some_and(|t| t >= since)
                    })
                    .filter_map(|e| Some((e.ended_at? - e.answered_at?).num_seconds()))
                    .collect();
                RepresentativeFigures {
                    average_rating: ratings
                        .iter()
                        .find(|(id, _)| *id == user.0)
                        .map(|(_, r)| *r),
                    calls_handled: handled.len() as i64,
                    average_handling_seconds: mean(&handled),
                    user_id: user,
                    display_name: r.display_name,
                    availability: r.availability,
                }
            })
            .collect();
        let queues = queues
            .into_iter()
            .map(|name| figures(name, &entries, since, now))
            .collect();
        Ok(QueueStats {
            queues,
            representatives,
        })
    }
}

/// A queue's waiting entries in order, with their standings.
struct Line {
    standings: Vec<(QueueEntry, Standing)>,
    /// Representatives serving the queue with availability `available`.
    on_duty: i64,
}

/// How the assignment of `entry` closes, now that its call has ended.
fn closing(entry: &QueueEntry, call: &CallSnapshot) -> Closing {
    let Some(rep) = &entry.representative_id else {
        return Closing::Undone;
    };
    // The one the call rings answers it.
    let answerer = if entry.callback {
        &entry.customer_id
    } else {
        rep
    };
    let member = call.member(answerer);
    if let Some(at) = member.and_then(|p| p.joined_at) {
        return Closing::Served(at);
    }
    if entry.callback {
        return Closing::Missed;
    }
    let declined = member.is_some_and(|p| p.connection_state == ConnectionState::Declined);
    if declined || call.call.end_reason == Some(EndReason::Missed) {
        Closing::Unanswered
    } else {
        Closing::Left
    }
}

/// One queue's figures from `entries` (those open now and those of the window).
fn figures(
    queue: String,
    entries: &[QueueEntry],
    since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> QueueFigures {
    let of_queue = || entries.iter().filter(|e| e.queue == queue);
    let waiting: Vec<&QueueEntry> = of_queue()
        .filter(|e| e.status == EntryStatus::Waiting)
        .collect();
    let ended_as = |status: EntryStatus| {
        of_queue()
            .filter(|e| e.status == status && e.ended_at.is_some_and(|t| t >= since))
            .count() as i64
    };
    let waits: Vec<i64> = of_queue()
        .filter_map(|e| {
            let assigned = e.assigned_at.filter(|t| *t >= since)?;
            Some((assigned - e.joined_at).num_seconds())
        })
        .collect();
    QueueFigures {
        waiting: waiting.len() as i64,
        average_wait_seconds: mean(&waits),
        longest_wait_seconds: waiting
            .iter()
            .map(|e| (now - e.joined_at).num_seconds().max(0))
            .max()
            .unwrap_or(0),
        served: ended_as(EntryStatus::Served),
        abandoned: ended_as(EntryStatus::Abandoned),
        callbacks_pending: waiting.iter().filter(|e| e.callback).count() as i64,
        queue,
    }
}

fn mean(values: &[i64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<i64>() as f64 / values.len() as f64)
}

impl AvailabilityObserver for QueueService {
    /// Their queues' estimates change, and they may take the next customer: the
    /// lines are announced in the background, and the dispatcher woken.
    fn availability_changed(&self, _user: &UserId) {
        self.lines_stale.store(true, Ordering::SeqCst);
        self.kick();
    }
}
