//! Phone calls of an outside telephone system (`phone_calls`, `phone_call_events`):
//! storing a batch of events all or nothing, stale calls, and the history of a number.
//!
//! A call's row is never edited by one event: every event is kept (once, by its id),
//! and the row is recomputed from all of the call's events
//! ([`PhoneCallFacts::from_events`]), so that duplicates and any order of arrival
//! give the same row. Two batches touching one call are serialized by a lock on its
//! row, taken first, in the order of the calls' ids (so two batches cannot deadlock):
//! whichever comes second recomputes from everything the first stored.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Pool, Store, StoreError};
use crate::phone::call::{KnownEvent, PhoneCallFacts, PhoneCallState};
use crate::phone::events::PhoneEvent;

/// Creates the call's row if missing, and locks it until the transaction ends (the
/// no-op update takes PostgreSQL's row lock; SQLite has one writer at a time).
const LOCK_CALL: &str = "INSERT INTO phone_calls (id, external_id, state, created_at, updated_at) \
     VALUES ($1, $2, 'initiated', $3, $3) \
     ON CONFLICT (external_id) DO UPDATE SET external_id = excluded.external_id";

const INSERT_EVENT: &str = "INSERT INTO phone_call_events (event_id, external_id, event, \
     calling_number, called_number, occurred_at, received_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (event_id) DO NOTHING";

const EVENTS_OF_CALL: &str = "SELECT event_id, event, calling_number, called_number, occurred_at \
     FROM phone_call_events WHERE external_id = $1";

const CALL_FACTS: &str = "SELECT calling_number, called_number, initiated_at, answered_at, \
     ended_at, duration, state FROM phone_calls WHERE external_id = $1";

const UPDATE_CALL: &str = "UPDATE phone_calls SET calling_number = $1, called_number = $2, \
     initiated_at = $3, answered_at = $4, ended_at = $5, duration = $6, state = $7, \
     updated_at = $8 WHERE external_id = $9";

/// Calls started (or, not knowing when, answered) at or before `$1` that have not
/// ended. Written so that PostgreSQL can use `phone_calls (state, initiated_at)`.
const STALE: &str = "SELECT COUNT(*) FROM phone_calls WHERE state IN ('initiated', 'answered') \
     AND (initiated_at <= $1 OR (initiated_at IS NULL AND answered_at <= $1))";

/// When a call is placed in a number's history: when it was initiated, or the
/// first moment known of it.
const CALL_TIME: &str = "COALESCE(initiated_at, answered_at, ended_at)";

/// The ended calls of number `$1` in `[$2, $3)` (either bound optional).
const HISTORY_OF: &str = "FROM phone_calls WHERE (calling_number = $1 OR called_number = $1) \
     AND state IN ('completed', 'missed') \
     AND (CAST($2 AS TEXT) IS NULL OR COALESCE(initiated_at, answered_at, ended_at) >= $2) \
     AND (CAST($3 AS TEXT) IS NULL OR COALESCE(initiated_at, answered_at, ended_at) < $3)";

/// What storing a batch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ingested {
    /// Events stored for the first time.
    pub stored: usize,
    /// Events already known by their id (sent before, or twice in the batch).
    pub duplicates: usize,
    /// Each call the batch named (by the telephone system's id), as it is now.
    pub calls: Vec<(String, PhoneCallFacts)>,
}

/// One row of a number's history, as seed 002 answers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct PhoneHistoryRow {
    pub call_time: DateTime<Utc>,
    pub counterparty_number: Option<String>,
    /// `Completed Inbound`, `Missed Inbound`, `Completed Outbound` or `Missed Outbound`.
    pub call_status: &'static str,
    /// Seconds, for completed calls.
    pub duration: Option<i64>,
}

#[derive(Debug, sqlx::FromRow)]
struct EventRow {
    event_id: String,
    event: String,
    calling_number: Option<String>,
    called_number: Option<String>,
    occurred_at: DateTime<Utc>,
}

#[derive(Debug, sqlx::FromRow)]
struct FactsRow {
    calling_number: Option<String>,
    called_number: Option<String>,
    initiated_at: Option<DateTime<Utc>>,
    answered_at: Option<DateTime<Utc>>,
    ended_at: Option<DateTime<Utc>>,
    duration: Option<i64>,
    state: String,
}

#[derive(Debug, sqlx::FromRow)]
struct HistoryRow {
    call_time: DateTime<Utc>,
    calling_number: Option<String>,
    called_number: Option<String>,
    state: String,
    duration: Option<i64>,
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

impl TryFrom<EventRow> for KnownEvent {
    type Error = StoreError;
    fn try_from(row: EventRow) -> Result<Self, StoreError> {
        Ok(KnownEvent {
            kind: row
                .event
                .parse()
                .map_err(|e| corrupt("phone_call_events.event", e))?,
            event_id: row.event_id,
            calling_number: row.calling_number,
            called_number: row.called_number,
            occurred_at: row.occurred_at,
        })
    }
}

impl TryFrom<FactsRow> for PhoneCallFacts {
    type Error = StoreError;
    fn try_from(row: FactsRow) -> Result<Self, StoreError> {
        Ok(PhoneCallFacts {
            calling_number: row.calling_number,
            called_number: row.called_number,
            initiated_at: row.initiated_at,
            answered_at: row.answered_at,
            ended_at: row.ended_at,
            duration: row.duration,
            state: row
                .state
                .parse()
                .map_err(|e| corrupt("phone_calls.state", e))?,
        })
    }
}

impl Store {
    /// Stores `events`, all or none (one transaction), and brings each call they
    /// name up to date. `now` is when they were received.
    pub async fn ingest_phone_events(
        &self,
        events: &[PhoneEvent],
        now: DateTime<Utc>,
    ) -> Result<Ingested, StoreError> {
        let mut calls: Vec<&str> = events.iter().map(|e| e.call_id.as_str()).collect();
        calls.sort_unstable();
        calls.dedup();
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            for call in &calls {
                sqlx::query(LOCK_CALL)
                    .bind(uuid::Uuid::new_v4().to_string())
                    .bind(*call)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
            }
            let mut stored = 0;
            for e in events {
                let inserted = sqlx::query(INSERT_EVENT)
                    .bind(&e.event_id)
                    .bind(&e.call_id)
                    .bind(e.kind.as_str())
                    .bind(e.calling_number.as_deref())
                    .bind(e.called_number.as_deref())
                    .bind(e.occurred_at)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                stored += inserted.rows_affected() as usize;
            }
            let mut results = Vec::with_capacity(calls.len());
            for call in calls {
                let rows: Vec<EventRow> = sqlx::query_as(EVENTS_OF_CALL)
                    .bind(call)
                    .fetch_all(&mut *tx)
                    .await?;
                let known = rows
                    .into_iter()
                    .map(KnownEvent::try_from)
                    .collect::<Result<Vec<_>, _>>()?;
                let Some(facts) = PhoneCallFacts::from_events(&known) else {
                    // Its only events were duplicates of another call's ids: the row
                    // made to lock it describes nothing.
                    sqlx::query("DELETE FROM phone_calls WHERE external_id = $1")
                        .bind(call)
                        .execute(&mut *tx)
                        .await?;
                    continue;
                };
                let current: FactsRow = sqlx::query_as(CALL_FACTS)
                    .bind(call)
                    .fetch_one(&mut *tx)
                    .await?;
                if PhoneCallFacts::try_from(current).ok().as_ref() != Some(&facts) {
                    sqlx::query(UPDATE_CALL)
                        .bind(facts.calling_number.as_deref())
                        .bind(facts.called_number.as_deref())
                        .bind(facts.initiated_at)
                        .bind(facts.answered_at)
                        .bind(facts.ended_at)
                        .bind(facts.duration)
                        .bind(facts.state.as_str())
                        .bind(now)
                        .bind(call)
                        .execute(&mut *tx)
                        .await?;
                }
                results.push((call.to_owned(), facts));
            }
            tx.commit().await?;
            Ok(Ingested {
                stored,
                duplicates: events.len() - stored,
                calls: results,
            })
        })
    }

    /// Phone calls started at or before `started_before` that have not ended.
    pub async fn stale_phone_calls(
        &self,
        started_before: DateTime<Utc>,
    ) -> Result<i64, StoreError> {
        Ok(with_pool!(self, |pool| sqlx::query_scalar(STALE)
            .bind(started_before)
            .fetch_one(pool)
            .await?))
    }

    /// A page of the ended calls of `number` (E.164), newest first, between `from`
    /// (inclusive) and `to` (exclusive), and how many there are in all.
    pub async fn phone_history(
        &self,
        number: &str,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<PhoneHistoryRow>, i64), StoreError> {
        let page = format!(
            "SELECT {CALL_TIME} AS call_time, calling_number, called_number, state, duration \
             {HISTORY_OF} ORDER BY call_time DESC, id DESC LIMIT $4 OFFSET $5"
        );
        let count = format!("SELECT COUNT(*) {HISTORY_OF}");
        let (rows, total): (Vec<HistoryRow>, i64) = with_pool!(self, |pool| {
            let rows = sqlx::query_as(&page)
                .bind(number)
                .bind(from)
                .bind(to)
                .bind(limit)
                .bind(offset)
                .fetch_all(pool)
                .await?;
            let total = sqlx::query_scalar(&count)
                .bind(number)
                .bind(from)
                .bind(to)
                .fetch_one(pool)
                .await?;
            (rows, total)
        });
        let rows = rows
            .into_iter()
            .map(|row| {
                let state: PhoneCallState = row
                    .state
                    .parse()
                    .map_err(|e| corrupt("phone_calls.state", e))?;
                let outbound = row.calling_number.as_deref() == Some(number);
                let completed = state == PhoneCallState::Completed;
                Ok(PhoneHistoryRow {
                    call_time: row.call_time,
                    counterparty_number: if outbound {
                        row.called_number
                    } else {
                        row.calling_number
                    },
                    call_status: match (completed, outbound) {
                        (true, false) => "Completed Inbound",
                        (false, false) => "Missed Inbound",
                        (true, true) => "Completed Outbound",
                        (false, true) => "Missed Outbound",
                    },
                    duration: row.duration.filter(|_| completed),
                })
            })
            .collect::<Result<_, StoreError>>()?;
        Ok((rows, total))
    }
}
