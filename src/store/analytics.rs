//! The analytics queries (`calls::analytics`): counts and averages computed in SQL,
//! over Huddle's calls (`calls`, `call_participants`, and the quality samples'
//! running totals `call_quality_totals`) or a telephone system's (`phone_calls`).
//!
//! Every statement reads its window's rows as one range of an index ordered by
//! time: call ids are random, so anything keyed by call id is probed all over for a
//! window's calls. Member rows and quality totals carry their call's `created_at`
//! for that reason (`migrations/*/0006_analytics_rollups.sql`).
//!
//! One SQL text serves both backends except where a timestamp is cut into a UTC
//! hour: SQLite stores RFC 3339 text and reads it with `strftime`, PostgreSQL
//! stores `timestamptz` and truncates it `AT TIME ZONE 'UTC'`. Those expressions
//! ([`Bucket`]) are the only difference, spliced into otherwise shared text.
//!
//! Every query reads the window `[$1, $2)`; on SQLite the bound instants are encoded
//! exactly as stored timestamps are (RFC 3339, UTC), so text comparison orders them.

use chrono::{DateTime, Utc};

use super::{Pool, Store, StoreError};
use crate::calls::analytics::{
    Figures, Kind, MAX_ROWS, NumberFigures, Outcome, Query, Rows, Scope, SummaryFigures,
};

/// The UTC hour of a timestamp column as a grouping key, and that key as text
/// `YYYY-MM-DD HH`, per backend. PostgreSQL groups by `date_trunc` and formats only
/// the groups (formatting every row with `to_char` cost 40 ms of a month's 80,000
/// calls in bench/analytics).
struct Bucket {
    hour: fn(&str) -> String,
    label: fn(&str) -> String,
}

const SQLITE: Bucket = Bucket {
    hour: |col| format!("strftime('%Y-%m-%d %H', {col})"),
    label: |key| key.to_owned(),
};

const POSTGRES: Bucket = Bucket {
    hour: |col| format!("date_trunc('hour', {col} AT TIME ZONE 'UTC')"),
    label: |key| format!("to_char({key}, 'YYYY-MM-DD HH24')"),
};

/// Huddle's calls in the window, all of them (`$3` NULL) or those user `$3` is a
/// member of.
const APP_CALLS: &str = "c.created_at >= $1 AND c.created_at < $2 \
     AND (CAST($3 AS TEXT) IS NULL OR c.id IN (SELECT call_id FROM call_participants \
          WHERE user_id = $3 AND call_created_at >= $1 AND call_created_at < $2))";

/// Phone calls in the window (`phone_calls_window_idx` covers what is read).
const PHONE_CALLS: &str = "initiated_at >= $1 AND initiated_at < $2";

/// `COALESCE(SUM(CASE WHEN <cond> THEN 1 ELSE 0 END), 0) AS <name>`: a count that is
/// 0, not NULL, over no rows, and BIGINT on PostgreSQL.
fn count_if(condition: &str, name: &str) -> String {
    format!("COALESCE(SUM(CASE WHEN {condition} THEN 1 ELSE 0 END), 0) AS {name}")
}

fn outcome_count(outcome: Outcome, name: &str) -> String {
    let reasons: Vec<String> = outcome
        .reasons()
        .into_iter()
        .map(|r| format!("'{r}'"))
        .collect();
    count_if(&format!("c.end_reason IN ({})", reasons.join(", ")), name)
}

fn app_summary() -> String {
    format!(
        "SELECT COUNT(*) AS total_calls, {connected}, {recorded}, {active}, \
         AVG(CASE WHEN c.started_at IS NOT NULL THEN CAST(c.duration AS DOUBLE PRECISION) END) \
             AS average_duration, \
         {completed}, {missed}, {declined}, {busy}, {failed}, {cancelled} \
         FROM calls c WHERE {APP_CALLS}",
        connected = count_if("c.started_at IS NOT NULL", "connected_calls"),
        // `IN`, not a correlated `EXISTS`: PostgreSQL reads call_recordings once into a
        // hash instead of probing its index once per call of the window (220 ms of a
        // month's 80,000 calls in bench/analytics).
        recorded = count_if(
            "c.recording_enabled OR c.id IN (SELECT r.call_id FROM call_recordings r)",
            "recorded_calls"
        ),
        active = count_if("c.state <> 'ended'", "active_calls"),
        completed = outcome_count(Outcome::Completed, "completed"),
        missed = outcome_count(Outcome::Missed, "missed"),
        declined = outcome_count(Outcome::Declined, "declined"),
        busy = outcome_count(Outcome::Busy, "busy"),
        failed = outcome_count(Outcome::Failed, "failed"),
        cancelled = outcome_count(Outcome::Cancelled, "cancelled"),
    )
}

/// The averages from the calls' running totals (`call_quality_totals`, two rows per
/// call at most, in the window by the call's creation time): a sum of sums over a
/// sum of counts is the mean of the samples.
fn app_quality() -> String {
    let mean = |figure: &str| {
        format!(
            "CAST(SUM(t.{figure}_sum) AS DOUBLE PRECISION) \
             / NULLIF(SUM(t.{figure}_samples), 0)"
        )
    };
    format!(
        "SELECT t.source AS source, CAST(SUM(t.samples) AS BIGINT) AS samples, \
         {jitter} AS average_jitter, {loss} AS average_packet_loss, \
         {rtt} AS average_round_trip_time, {mos} AS average_mos \
         FROM call_quality_totals t \
         WHERE t.call_created_at >= $1 AND t.call_created_at < $2 \
           AND (CAST($3 AS TEXT) IS NULL \
                OR t.call_id IN (SELECT call_id FROM call_participants \
                    WHERE user_id = $3 AND call_created_at >= $1 AND call_created_at < $2)) \
         GROUP BY t.source ORDER BY t.source",
        jitter = mean("jitter"),
        loss = mean("packet_loss"),
        rtt = mean("round_trip_time"),
        mos = mean("quality"),
    )
}

/// Calls per UTC hour (`YYYY-MM-DD HH`) of `bucket`'s column over `from`; the
/// report makes its days and hours of day from these.
fn per_hour(bucket: &Bucket, column: &str, from: &str, filter: &str) -> String {
    format!(
        "SELECT {label} AS bucket, calls FROM \
         (SELECT {hour} AS hour, COUNT(*) AS calls FROM {from} WHERE {filter} GROUP BY 1) \
         AS per_hour ORDER BY 1",
        label = (bucket.label)("hour"),
        hour = (bucket.hour)(column),
    )
}

/// Per-user rows; `$3` is the row limit. The window's member rows are one range
/// of `call_participants_window_idx`, joined with the window's calls.
const APP_USERS: &str = "SELECT p.user_id AS user_id, COUNT(*) AS total_calls, \
     COALESCE(SUM(CASE WHEN p.role = 'initiator' THEN 1 ELSE 0 END), 0) AS initiated_calls, \
     COALESCE(SUM(CASE WHEN c.started_at IS NOT NULL THEN 1 ELSE 0 END), 0) AS connected_calls, \
     AVG(CASE WHEN c.started_at IS NOT NULL THEN CAST(c.duration AS DOUBLE PRECISION) END) \
         AS average_duration, \
     CAST(COALESCE(SUM(p.duration), 0) AS BIGINT) AS time_in_calls \
     FROM call_participants p JOIN calls c ON c.id = p.call_id \
     WHERE p.call_created_at >= $1 AND p.call_created_at < $2 \
       AND c.created_at >= $1 AND c.created_at < $2 \
     GROUP BY p.user_id ORDER BY total_calls DESC, p.user_id LIMIT $3";

fn phone_summary() -> String {
    format!(
        "SELECT COUNT(*) AS total_calls, {connected}, {active}, \
         AVG(CASE WHEN state = 'completed' THEN CAST(duration AS DOUBLE PRECISION) END) \
             AS average_duration, {missed} \
         FROM phone_calls WHERE {PHONE_CALLS}",
        connected = count_if("state = 'completed'", "connected_calls"),
        active = count_if("state IN ('initiated', 'answered')", "active_calls"),
        missed = count_if("state = 'missed'", "missed"),
    )
}

#[derive(Debug, sqlx::FromRow)]
struct PhoneSummary {
    total_calls: i64,
    connected_calls: i64,
    active_calls: i64,
    average_duration: Option<f64>,
    missed: i64,
}

/// Per-number rows: each call counts for its calling number (outbound) and its
/// called number (inbound); `$3` is the row limit.
fn phone_numbers() -> String {
    format!(
        "SELECT number, COUNT(*) AS total_calls, \
         COALESCE(SUM(CASE WHEN direction = 'outbound' THEN 1 ELSE 0 END), 0) AS outbound_calls, \
         COALESCE(SUM(CASE WHEN direction = 'inbound' THEN 1 ELSE 0 END), 0) AS inbound_calls, \
         COALESCE(SUM(CASE WHEN state = 'completed' THEN 1 ELSE 0 END), 0) AS connected_calls, \
         AVG(CASE WHEN state = 'completed' THEN CAST(duration AS DOUBLE PRECISION) END) \
             AS average_duration \
         FROM (SELECT calling_number AS number, 'outbound' AS direction, state, duration \
                 FROM phone_calls WHERE {PHONE_CALLS} AND calling_number IS NOT NULL \
               UNION ALL \
               SELECT called_number AS number, 'inbound' AS direction, state, duration \
                 FROM phone_calls WHERE {PHONE_CALLS} AND called_number IS NOT NULL) AS ends \
         GROUP BY number ORDER BY total_calls DESC, number LIMIT $3"
    )
}

impl Store {
    /// The figures of an analytics query, each computed by the database.
    pub async fn analytics(&self, query: &Query) -> Result<Figures, StoreError> {
        let bucket = match self.pool {
            Pool::Sqlite(_) => &SQLITE,
            Pool::Postgres(_) => &POSTGRES,
        };
        let (from, to) = (query.window.from, query.window.to);
        match query.kind {
            Kind::App => self.app_analytics(bucket, from, to, &query.scope).await,
            Kind::Phone => self.phone_analytics(bucket, from, to, &query.scope).await,
        }
    }

    async fn app_analytics(
        &self,
        bucket: &Bucket,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        scope: &Scope,
    ) -> Result<Figures, StoreError> {
        let member = match scope {
            Scope::All => None,
            Scope::Member(user) => Some(user.as_str()),
        };
        let summary = app_summary();
        let quality = app_quality();
        let hourly = per_hour(bucket, "c.created_at", "calls c", APP_CALLS);
        // The statements are independent: run at once, on connections of their own,
        // the report takes as long as its slowest statement rather than their sum.
        Ok(with_pool!(self, |pool| {
            let users = async {
                match scope {
                    Scope::Member(_) => Ok(None),
                    Scope::All => sqlx::query_as(APP_USERS)
                        .bind(from)
                        .bind(to)
                        .bind(MAX_ROWS + 1)
                        .fetch_all(pool)
                        .await
                        .map(|users| Some(Rows::Users(users))),
                }
            };
            let (summary, quality, hourly, rows) = tokio::try_join!(
                sqlx::query_as(&summary)
                    .bind(from)
                    .bind(to)
                    .bind(member)
                    .fetch_one(pool),
                sqlx::query_as(&quality)
                    .bind(from)
                    .bind(to)
                    .bind(member)
                    .fetch_all(pool),
                sqlx::query_as(&hourly)
                    .bind(from)
                    .bind(to)
                    .bind(member)
                    .fetch_all(pool),
                users,
            )?;
            Figures {
                summary,
                quality,
                hourly,
                rows,
            }
        }))
    }

    /// Phone calls belong to no Huddle user: only [`Scope::All`] reaches here (the
    /// service refuses others).
    async fn phone_analytics(
        &self,
        bucket: &Bucket,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        scope: &Scope,
    ) -> Result<Figures, StoreError> {
        let summary = phone_summary();
        let hourly = per_hour(bucket, "initiated_at", "phone_calls", PHONE_CALLS);
        let numbers = phone_numbers();
        let (s, hourly, numbers): (PhoneSummary, _, Option<Vec<NumberFigures>>) =
            with_pool!(self, |pool| {
                let numbers = async {
                    match scope {
                        Scope::Member(_) => Ok(None),
                        Scope::All => sqlx::query_as(&numbers)
                            .bind(from)
                            .bind(to)
                            .bind(MAX_ROWS + 1)
                            .fetch_all(pool)
                            .await
                            .map(Some),
                    }
                };
                tokio::try_join!(
                    sqlx::query_as(&summary).bind(from).bind(to).fetch_one(pool),
                    sqlx::query_as(&hourly).bind(from).bind(to).fetch_all(pool),
                    numbers,
                )?
            });
        Ok(Figures {
            summary: SummaryFigures {
                total_calls: s.total_calls,
                connected_calls: s.connected_calls,
                active_calls: s.active_calls,
                average_duration: s.average_duration,
                completed: s.connected_calls,
                missed: s.missed,
                ..SummaryFigures::default()
            },
            quality: Vec::new(),
            hourly,
            rows: numbers.map(Rows::Numbers),
        })
    }
}
