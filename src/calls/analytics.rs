//! Call analytics (`GET /api/v1/calls/analytics`): what is asked (kind, window,
//! scope), the figures the store computes in SQL, and the report built from them.
//!
//! The store does the counting and averaging; this module only names the window,
//! fills the gaps (days without calls), picks the peak hours and rounds rates, so
//! [`Report::build`] is pure and tested without a database.
//!
//! Days and hours are UTC. A Huddle (`app`) call belongs to the window of its
//! `created_at`; a phone call to that of its `initiated_at`.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Days, Months, NaiveDate, NaiveTime, Utc};
use serde::Serialize;

use super::model::{EndReason, UserId};

/// The longest window a request may ask for: a leap year, so that "a year to date"
/// always fits, and a bound on the per-day rows returned.
pub const MAX_WINDOW_DAYS: i64 = 366;

/// Most per-user (or per-number) rows an admin's report carries, busiest first.
pub const MAX_ROWS: i64 = 100;

/// How many of the busiest hours `trends.peakHours` lists.
pub const PEAK_HOURS: usize = 3;

/// Which calls: Huddle's own, or those of an outside telephone system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Huddle's calls: `calls`, `call_participants`, `call_quality_metrics`.
    App,
    /// Calls taken in from a telephone system's events: `phone_calls`.
    Phone,
}

impl FromStr for Kind {
    type Err = &'static str;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "app" => Ok(Kind::App),
            "phone" => Ok(Kind::Phone),
            _ => Err("must be app or phone"),
        }
    }
}

/// The window's length when the request does not give both ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    Day,
    Week,
    /// A calendar month (28 to 31 days), as people mean "this month's figures".
    Month,
}

impl FromStr for Period {
    type Err = &'static str;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "day" => Ok(Period::Day),
            "week" => Ok(Period::Week),
            "month" => Ok(Period::Month),
            _ => Err("must be day, week or month"),
        }
    }
}

impl Period {
    fn after(self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Period::Day => t.checked_add_days(Days::new(1)),
            Period::Week => t.checked_add_days(Days::new(7)),
            Period::Month => t.checked_add_months(Months::new(1)),
        }
    }

    fn before(self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Period::Day => t.checked_sub_days(Days::new(1)),
            Period::Week => t.checked_sub_days(Days::new(7)),
            Period::Month => t.checked_sub_months(Months::new(1)),
        }
    }
}

/// A request field that does not make sense, named as the client spelled it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: &'static str,
    pub message: String,
}

impl FieldError {
    fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// The half-open interval `[from, to)` of the calls counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

/// An end of the window as a request gives it: an RFC 3339 instant, or a date
/// (`2024-03-01`), which means that day's midnight (UTC) for `from` and the midnight
/// after it for `to`, so `from=2024-03-01&to=2024-03-31` is the whole of March.
fn parse_end(field: &'static str, text: &str) -> Result<DateTime<Utc>, FieldError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    let date = NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|_| {
        FieldError::new(
            field,
            "must be an RFC 3339 time (2024-03-01T00:00:00Z) or a date (2024-03-01)",
        )
    })?;
    let date = if field == "to" {
        date.succ_opt()
            .ok_or_else(|| FieldError::new(field, "out of range"))?
    } else {
        date
    };
    Ok(date.and_time(NaiveTime::MIN).and_utc())
}

impl Window {
    /// The window a request names. `to` defaults to `now`; a missing `from` is one
    /// `period` before `to`; given `from` alone, `to` is one `period` after it. When
    /// both are given, `period` does not change the window.
    pub fn of(
        period: Period,
        from: Option<&str>,
        to: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Self, FieldError> {
        let from = from.map(|t| parse_end("from", t)).transpose()?;
        let to = to.map(|t| parse_end("to", t)).transpose()?;
        let out_of_range = || FieldError::new("period", "reaches outside the supported dates");
        let (from, to) = match (from, to) {
            (Some(from), Some(to)) => (from, to),
            (Some(from), None) => (from, period.after(from).ok_or_else(out_of_range)?),
            (None, to) => {
                let to = to.unwrap_or(now);
                (period.before(to).ok_or_else(out_of_range)?, to)
            }
        };
        if from >= to {
            return Err(FieldError::new("from", "must be before `to`"));
        }
        if to - from > chrono::Duration::days(MAX_WINDOW_DAYS) {
            return Err(FieldError::new(
                "from",
                format!("the window may span at most {MAX_WINDOW_DAYS} days"),
            ));
        }
        Ok(Window { from, to })
    }

    /// Every UTC date the window touches, in order.
    fn dates(&self) -> Vec<NaiveDate> {
        let last = (self.to - chrono::Duration::nanoseconds(1)).date_naive();
        self.from
            .date_naive()
            .iter_days()
            .take_while(|d| *d <= last)
            .collect()
    }

    /// Its length in days, fractional.
    fn days(&self) -> f64 {
        (self.to - self.from).num_milliseconds() as f64 / 86_400_000.0
    }
}

/// Whose calls are counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Everyone's (an admin token): the report has per-user rows.
    All,
    /// The calls this user is a member of (has a row in `call_participants`).
    Member(UserId),
}

/// What a request asks for, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub kind: Kind,
    pub period: Period,
    pub window: Window,
    pub scope: Scope,
}

/// The outcome a finished call is counted under. Huddle's end reasons map as:
/// `normal` and `max_duration` → completed (the call ran and was hung up, or hit
/// MAX_CALL_DURATION); `missed` and `timeout` → missed (nobody answered: the ringing
/// timeout, or a client that gave up waiting); `declined`, `busy`, `failed` and
/// `cancelled` to their namesakes. A phone call is `completed` or `missed` by its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Completed,
    Missed,
    Declined,
    Busy,
    Failed,
    Cancelled,
}

impl Outcome {
    pub fn of(reason: EndReason) -> Self {
        match reason {
            EndReason::Normal | EndReason::MaxDuration => Outcome::Completed,
            EndReason::Missed | EndReason::Timeout => Outcome::Missed,
            EndReason::Declined => Outcome::Declined,
            EndReason::Busy => Outcome::Busy,
            EndReason::Failed => Outcome::Failed,
            EndReason::Cancelled => Outcome::Cancelled,
        }
    }

    /// The end reasons (as stored in `calls.end_reason`) counted under this outcome.
    pub fn reasons(self) -> Vec<&'static str> {
        EndReason::ALL
            .iter()
            .filter(|r| Outcome::of(**r) == self)
            .map(|r| r.as_str())
            .collect()
    }
}

/// Counts over the calls of the window, as the store computes them.
#[derive(Debug, Clone, Default, PartialEq, sqlx::FromRow)]
pub struct SummaryFigures {
    pub total_calls: i64,
    /// Calls that connected: two people in them at once (`started_at` set); for
    /// phone calls, those answered and ended (`completed`).
    pub connected_calls: i64,
    /// Calls with recording enabled or a stored recording.
    pub recorded_calls: i64,
    /// Calls not ended yet.
    pub active_calls: i64,
    /// Mean duration (seconds) of the connected calls that have one.
    pub average_duration: Option<f64>,
    pub completed: i64,
    pub missed: i64,
    pub declined: i64,
    pub busy: i64,
    pub failed: i64,
    pub cancelled: i64,
}

/// Averages of the quality samples of the window's calls, one measurer's.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct QualityFigures {
    /// `client` or `sfu` (`call_quality_metrics.source`).
    pub source: String,
    pub samples: i64,
    pub average_jitter: Option<f64>,
    pub average_packet_loss: Option<f64>,
    pub average_round_trip_time: Option<f64>,
    pub average_mos: Option<f64>,
}

/// One user's calls in the window (admins' reports).
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserFigures {
    pub user_id: String,
    /// Calls they were a member of: the same count their own report shows.
    pub total_calls: i64,
    /// Of those, the ones they started.
    pub initiated_calls: i64,
    pub connected_calls: i64,
    #[serde(rename = "averageCallDuration")]
    pub average_duration: Option<f64>,
    /// Seconds they spent in calls, over all their joins.
    pub time_in_calls: i64,
}

/// One telephone number's calls in the window (admins' phone reports).
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NumberFigures {
    pub number: String,
    pub total_calls: i64,
    /// Calls from this number (it was `calling_number`).
    pub outbound_calls: i64,
    /// Calls to this number (`called_number`).
    pub inbound_calls: i64,
    pub connected_calls: i64,
    #[serde(rename = "averageCallDuration")]
    pub average_duration: Option<f64>,
}

/// Per-user or per-number rows, for admins.
#[derive(Debug, Clone, PartialEq)]
pub enum Rows {
    Users(Vec<UserFigures>),
    Numbers(Vec<NumberFigures>),
}

/// Everything the store computes for one [`Query`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Figures {
    pub summary: SummaryFigures,
    pub quality: Vec<QualityFigures>,
    /// `("YYYY-MM-DD HH", calls)` for the UTC hours that had calls: the report's
    /// days and hours of day are sums of these.
    pub hourly: Vec<(String, i64)>,
    /// For [`Scope::All`]: up to [`MAX_ROWS`] + 1 rows, busiest first (the extra one
    /// says there are more).
    pub rows: Option<Rows>,
}

/// The answer, as sent.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub kind: Kind,
    pub period: Period,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// `all` (an admin's) or `own`.
    pub scope: &'static str,
    pub summary: Summary,
    pub outcomes: Outcomes,
    pub quality: Quality,
    pub trends: Trends,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub users: Option<Vec<UserFigures>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub numbers: Option<Vec<NumberFigures>>,
    /// Whether rows beyond the first [`MAX_ROWS`] were left out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub more_rows: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub total_calls: i64,
    pub connected_calls: i64,
    pub recorded_calls: i64,
    pub active_calls: i64,
    /// Seconds; `null` when no call connected.
    pub average_call_duration: Option<f64>,
    /// The same as `HH:MM:SS`, rounded to the second (the seed service's shape).
    pub average_call_duration_text: Option<String>,
    /// Percent of the calls that connected, one decimal; 0 without calls.
    pub connection_rate: f64,
}

/// Finished calls by outcome (see [`Outcome`]); calls still going are in
/// `summary.activeCalls`, so these and that add up to `totalCalls`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Outcomes {
    pub completed: i64,
    pub missed: i64,
    pub declined: i64,
    pub busy: i64,
    pub failed: i64,
    pub cancelled: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QualityAverages {
    pub samples: i64,
    /// Milliseconds.
    pub average_jitter: Option<f64>,
    /// Percent.
    pub average_packet_loss: Option<f64>,
    /// Milliseconds.
    pub average_round_trip_time: Option<f64>,
    #[serde(rename = "averageMOS")]
    pub average_mos: Option<f64>,
}

/// The clients' own measurements and the SFU's, kept apart: they measure different
/// legs (the whole path as a client sees it; client to SFU as the SFU sees it).
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Quality {
    pub client: QualityAverages,
    pub sfu: QualityAverages,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Trends {
    /// Calls divided by the window's length in days, two decimals.
    pub calls_per_day: f64,
    /// Every UTC day of the window, with its calls (0 included).
    pub daily: Vec<DayCount>,
    /// The busiest UTC hours of day, most calls first (earlier hour first on a tie),
    /// up to three; hours without calls are not listed.
    pub peak_hours: Vec<HourCount>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct DayCount {
    pub date: String,
    pub calls: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct HourCount {
    pub hour: i64,
    pub calls: i64,
}

fn round_to(value: f64, decimals: i32) -> f64 {
    let factor = 10f64.powi(decimals);
    (value * factor).round() / factor
}

/// `HH:MM:SS` of whole seconds (hours may exceed 24).
fn hms(seconds: f64) -> String {
    let s = seconds.round() as i64;
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

impl Report {
    pub fn build(query: &Query, figures: Figures) -> Report {
        let s = &figures.summary;
        let connection_rate = if s.total_calls == 0 {
            0.0
        } else {
            round_to(100.0 * s.connected_calls as f64 / s.total_calls as f64, 1)
        };
        let mut quality = Quality::default();
        for q in figures.quality {
            let averages = QualityAverages {
                samples: q.samples,
                average_jitter: q.average_jitter,
                average_packet_loss: q.average_packet_loss,
                average_round_trip_time: q.average_round_trip_time,
                average_mos: q.average_mos,
            };
            match q.source.as_str() {
                "sfu" => quality.sfu = averages,
                // `client` is the column's default: anything else was a client's.
                _ => quality.client = averages,
            }
        }
        let mut per_day: HashMap<&str, i64> = HashMap::new();
        let mut per_hour_of_day = [0i64; 24];
        for (key, calls) in &figures.hourly {
            // `YYYY-MM-DD HH`, as the store writes it.
            let (date, hour) = key.split_at(key.len().min(10));
            *per_day.entry(date).or_default() += calls;
            if let Ok(hour @ 0..=23) = hour.trim().parse::<usize>() {
                per_hour_of_day[hour] += calls;
            }
        }
        let daily = query
            .window
            .dates()
            .into_iter()
            .map(|d| {
                let date = d.format("%Y-%m-%d").to_string();
                DayCount {
                    calls: per_day.get(date.as_str()).copied().unwrap_or(0),
                    date,
                }
            })
            .collect();
        let mut hours: Vec<HourCount> = (0..24)
            .zip(per_hour_of_day)
            .filter(|(_, calls)| *calls > 0)
            .map(|(hour, calls)| HourCount { hour, calls })
            .collect();
        hours.sort_by(|a, b| b.calls.cmp(&a.calls).then(a.hour.cmp(&b.hour)));
        hours.truncate(PEAK_HOURS);
        let (users, numbers, more_rows) = match figures.rows {
            None => (None, None, None),
            Some(Rows::Users(mut rows)) => {
                let more = rows.len() as i64 > MAX_ROWS;
                rows.truncate(MAX_ROWS as usize);
                (Some(rows), None, Some(more))
            }
            Some(Rows::Numbers(mut rows)) => {
                let more = rows.len() as i64 > MAX_ROWS;
                rows.truncate(MAX_ROWS as usize);
                (None, Some(rows), Some(more))
            }
        };
        Report {
            kind: query.kind,
            period: query.period,
            from: query.window.from,
            to: query.window.to,
            scope: match query.scope {
                Scope::All => "all",
                Scope::Member(_) => "own",
            },
            summary: Summary {
                total_calls: s.total_calls,
                connected_calls: s.connected_calls,
                recorded_calls: s.recorded_calls,
                active_calls: s.active_calls,
                average_call_duration: s.average_duration,
                average_call_duration_text: s.average_duration.map(hms),
                connection_rate,
            },
            outcomes: Outcomes {
                completed: s.completed,
                missed: s.missed,
                declined: s.declined,
                busy: s.busy,
                failed: s.failed,
                cancelled: s.cancelled,
            },
            quality,
            trends: Trends {
                calls_per_day: round_to(s.total_calls as f64 / query.window.days(), 2),
                daily,
                peak_hours: hours,
            },
            users,
            numbers,
            more_rows,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    const NOW: &str = "2024-03-15T12:00:00Z";

    fn window(period: Period, from: Option<&str>, to: Option<&str>) -> Result<Window, FieldError> {
        Window::of(period, from, to, at(NOW))
    }

    #[test]
    fn without_ends_the_window_is_the_period_up_to_now() {
        let w = window(Period::Week, None, None).unwrap();
        assert_eq!((w.from, w.to), (at("2024-03-08T12:00:00Z"), at(NOW)));
        let w = window(Period::Month, None, None).unwrap();
        assert_eq!(w.from, at("2024-02-15T12:00:00Z"));
    }

    #[test]
    fn from_alone_runs_one_period_forward() {
        let w = window(Period::Month, Some("2024-02-01"), None).unwrap();
        assert_eq!(
            (w.from, w.to),
            (at("2024-02-01T00:00:00Z"), at("2024-03-01T00:00:00Z"))
        );
    }

    #[test]
    fn a_date_for_to_includes_that_whole_day() {
        let w = window(Period::Day, Some("2024-03-01"), Some("2024-03-31")).unwrap();
        assert_eq!(w.to, at("2024-04-01T00:00:00Z"));
        assert_eq!(w.dates().len(), 31);
    }

    #[test]
    fn bad_ends_and_backwards_or_overlong_windows_name_the_field() {
        let field = |r: Result<Window, FieldError>| r.unwrap_err().field;
        assert_eq!(field(window(Period::Day, Some("yesterday"), None)), "from");
        assert_eq!(field(window(Period::Day, None, Some("2024-13-01"))), "to");
        assert_eq!(
            field(window(Period::Day, Some("2024-03-02"), Some("2024-03-01"))),
            "from"
        );
        assert_eq!(
            field(window(
                Period::Day,
                Some("2024-03-01T00:00:00Z"),
                Some("2024-03-01T00:00:00Z")
            )),
            "from"
        );
        assert_eq!(
            field(window(Period::Day, Some("2023-01-01"), Some("2024-01-02"))),
            "from"
        );
        assert!(window(Period::Day, Some("2023-01-01"), Some("2023-12-31")).is_ok());
    }

    #[test]
    fn every_end_reason_has_one_outcome() {
        let all: Vec<&str> = [
            Outcome::Completed,
            Outcome::Missed,
            Outcome::Declined,
            Outcome::Busy,
            Outcome::Failed,
            Outcome::Cancelled,
        ]
        .into_iter()
        .flat_map(Outcome::reasons)
        .collect();
        assert_eq!(all.len(), EndReason::ALL.len());
        assert_eq!(Outcome::Completed.reasons(), ["normal", "max_duration"]);
        assert_eq!(Outcome::Missed.reasons(), ["missed", "timeout"]);
    }

    #[test]
    fn the_report_fills_empty_days_and_ranks_peak_hours() {
        let query = Query {
            kind: Kind::App,
            period: Period::Week,
            window: window(
                Period::Day,
                Some("2024-03-01T12:00:00Z"),
                Some("2024-03-03T12:00:00Z"),
            )
            .unwrap(),
            scope: Scope::Member(UserId("alice".into())),
        };
        let figures = Figures {
            summary: SummaryFigures {
                total_calls: 4,
                connected_calls: 3,
                average_duration: Some(525.0),
                ..SummaryFigures::default()
            },
            // Two calls at 14h on different days make 14h the busiest hour of day.
            hourly: [
                ("2024-03-01 14", 1),
                ("2024-03-02 09", 1),
                ("2024-03-02 14", 1),
                ("2024-03-02 08", 1),
            ]
            .map(|(hour, calls)| (hour.to_owned(), calls))
            .to_vec(),
            ..Figures::default()
        };
        let report = Report::build(&query, figures);
        let days: Vec<(&str, i64)> = report
            .trends
            .daily
            .iter()
            .map(|d| (d.date.as_str(), d.calls))
            .collect();
        assert_eq!(
            days,
            [("2024-03-01", 1), ("2024-03-02", 3), ("2024-03-03", 0)]
        );
        let hours: Vec<(i64, i64)> = report
            .trends
            .peak_hours
            .iter()
            .map(|h| (h.hour, h.calls))
            .collect();
        assert_eq!(hours, [(14, 2), (8, 1), (9, 1)]);
        assert_eq!(report.trends.calls_per_day, 2.0);
        assert_eq!(report.summary.connection_rate, 75.0);
        assert_eq!(
            report.summary.average_call_duration_text.as_deref(),
            Some("00:08:45")
        );
        assert_eq!((report.scope, report.users), ("own", None));
    }
}
