//! `GET /api/v1/calls/analytics` on SQLite and PostgreSQL: reports over generated
//! calls (every outcome, durations, days, hours, quality samples from clients and the
//! SFU, several users) checked against figures this file computes from the generated
//! data itself, in Rust; scoping (a user's own calls, an admin's everyone's with
//! per-user rows); phone calls (`kind=phone`, rows written straight into
//! `phone_calls`); and refused requests.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, SecondsFormat, TimeZone, Utc};
use hyper::{Method, StatusCode};
use serde_json::Value;
use sqlx::Connection;
use uuid::Uuid;

use common::{Harness, raw};
use huddle::calls::lifecycle::CallSnapshot;
use huddle::calls::model::{
    Call, CallId, CallState, CallType, ConnectionState, EndReason, MediaMode, MetricSource,
    Participant, ParticipantRole, UserId,
};
use huddle::calls::quality::{QualityMetric, QualityReport};
use huddle::clock::Clock;

const USERS: [&str; 5] = ["alice", "bob", "carol", "dave", "erin"];

/// A small deterministic generator (xorshift64*): the same data on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }

    /// `Some(value)` four times in five.
    fn maybe(&mut self, value: f64) -> Option<f64> {
        (!self.chance(5)).then_some(value)
    }
}

/// Monday 2024-03-04, midnight UTC: the generated calls are around it.
fn base() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 3, 4, 0, 0, 0).unwrap()
}

/// The window the tests ask for: `from=2024-03-04&to=2024-03-10` is seven whole days.
const WINDOW: &str = "from=2024-03-04&to=2024-03-10";

fn window() -> (DateTime<Utc>, DateTime<Utc>) {
    (base(), base() + Duration::days(7))
}

/// A generated Huddle call and what the test knows of it.
struct Generated {
    snapshot: CallSnapshot,
    quality: Vec<QualityMetric>,
    /// A row in `call_recordings` although `recording_enabled` is false.
    recording_row: bool,
}

impl Generated {
    fn call(&self) -> &Call {
        &self.snapshot.call
    }

    fn has_member(&self, user: &str) -> bool {
        self.snapshot
            .participants
            .iter()
            .any(|p| p.user_id.as_str() == user)
    }

    fn recorded(&self) -> bool {
        self.call().recording_enabled || self.recording_row
    }
}

/// `n` calls between two days before the window and two days after it, with every
/// way of ending, plus calls exactly on the window's edges.
fn generate_calls(rng: &mut Rng, n: usize) -> Vec<Generated> {
    let mut offsets: Vec<i64> = (0..n)
        .map(|_| rng.below(11 * 86_400_000) as i64 - 2 * 86_400_000)
        .collect();
    // On `from` (counted) and on `to` (not counted), and a millisecond before `from`.
    offsets.extend([0, 7 * 86_400_000, -1]);
    offsets
        .into_iter()
        .enumerate()
        .map(|(i, ms)| generate_call(rng, base() + Duration::milliseconds(ms), i))
        .collect()
}

fn generate_call(rng: &mut Rng, created_at: DateTime<Utc>, i: usize) -> Generated {
    let initiator = USERS[rng.below(USERS.len() as u64) as usize];
    let mut invitees: Vec<&str> = Vec::new();
    for _ in 0..=rng.below(3) {
        let u = USERS[rng.below(USERS.len() as u64) as usize];
        if u != initiator && !invitees.contains(&u) {
            invitees.push(u);
        }
    }
    if invitees.is_empty() {
        invitees.push(if initiator == "alice" { "bob" } else { "alice" });
    }
    // What happened: (end reason or None if still going, whether it connected).
    let (reason, connected) = match i % 11 {
        0 | 1 => (Some(EndReason::Normal), true),
        2 => (Some(EndReason::MaxDuration), true),
        3 => (Some(EndReason::Missed), false),
        4 => (Some(EndReason::Timeout), false),
        5 => (Some(EndReason::Declined), false),
        6 => (Some(EndReason::Busy), false),
        7 => (Some(EndReason::Failed), rng.chance(2)),
        8 => (Some(EndReason::Cancelled), false),
        9 => (None, false),
        _ => (None, true),
    };
    let started_at = connected.then(|| created_at + Duration::seconds(2 + rng.below(20) as i64));
    let talk = 5 + rng.below(3000) as i64;
    let ended_at = reason.map(|_| {
        started_at.map_or(created_at + Duration::seconds(30), |s| {
            s + Duration::seconds(talk)
        })
    });
    let duration = match (reason, started_at) {
        (Some(_), Some(_)) => Some(talk),
        (Some(_), None) => Some(0),
        (None, _) => None,
    };
    let state = match (reason, connected) {
        (Some(_), _) => CallState::Ended,
        (None, true) => CallState::Connected,
        (None, false) => CallState::Ringing,
    };
    let id = CallId::random();
    let member = |user: &str, role, joined: bool, seconds: i64| Participant {
        id: Uuid::new_v4(),
        call_id: id,
        user_id: UserId(user.into()),
        display_name: None,
        role,
        invited_at: created_at,
        joined_at: joined.then_some(started_at.unwrap_or(created_at)),
        left_at: None,
        duration: seconds,
        connection_state: match (state, joined) {
            (CallState::Ended, true) => ConnectionState::Left,
            (CallState::Ended, false) => ConnectionState::Missed,
            (_, true) => ConnectionState::Connected,
            (_, false) => ConnectionState::Invited,
        },
        audio_enabled: true,
        video_enabled: false,
        screen_share_enabled: false,
        away_until: None,
        declined_at: None,
    };
    let in_call = |rng: &mut Rng| {
        if connected && reason.is_some() {
            rng.below(talk as u64 + 1) as i64
        } else {
            0
        }
    };
    let mut participants = vec![member(
        initiator,
        ParticipantRole::Initiator,
        true,
        in_call(rng),
    )];
    for (k, user) in invitees.iter().enumerate() {
        let joined = connected && (k == 0 || rng.chance(2));
        let seconds = if joined { in_call(rng) } else { 0 };
        participants.push(member(user, ParticipantRole::Participant, joined, seconds));
    }
    let call = Call {
        id,
        room_id: format!("room_{id}"),
        call_type: CallType::Audio,
        media_mode: MediaMode::Sfu,
        state,
        initiator_id: UserId(initiator.into()),
        chat_id: None,
        is_group: invitees.len() > 1,
        max_participants: 4,
        created_at,
        started_at,
        ended_at,
        duration,
        end_reason: reason,
        recording_enabled: rng.chance(4),
        recording_url: None,
        // No deadline: the sweeper leaves generated calls alone.
        next_deadline: None,
        updated_at: created_at,
        version: 0,
    };
    let mut quality = Vec::new();
    if connected {
        for _ in 0..rng.below(5) {
            let p = &participants[rng.below(participants.len() as u64) as usize];
            let (jitter, loss, rtt) = (
                rng.below(4000) as f64 / 100.0,
                rng.below(800) as f64 / 100.0,
                20.0 + rng.below(400) as f64,
            );
            let mos = 1.0 + rng.below(350) as f64 / 100.0;
            let report = QualityReport {
                jitter: rng.maybe(jitter),
                packet_loss: rng.maybe(loss),
                round_trip_time: rng.maybe(rtt),
                ..QualityReport::default()
            };
            quality.push(QualityMetric {
                id: Uuid::new_v4(),
                call_id: id,
                participant_id: p.id,
                timestamp: started_at.unwrap_or(created_at) + Duration::seconds(5),
                source: if rng.chance(2) {
                    MetricSource::Sfu
                } else {
                    MetricSource::Client
                },
                quality: rng.maybe(mos),
                report,
            });
        }
    }
    let recording_row = !call.recording_enabled && rng.chance(6);
    Generated {
        snapshot: CallSnapshot { call, participants },
        quality,
        recording_row,
    }
}

/// A timestamp as SQL text both backends read, and as sqlx stores it in SQLite.
fn sql_time(t: DateTime<Utc>) -> String {
    format!("'{}'", t.to_rfc3339_opts(SecondsFormat::AutoSi, false))
}

/// A connection of the test's own to its database, for rows no API writes.
enum Db {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

impl Db {
    async fn open(h: &Harness) -> Db {
        Db::connect(h.database_url()).await
    }

    async fn connect(url: &str) -> Db {
        if url.starts_with("sqlite:") {
            Db::Sqlite(sqlx::SqliteConnection::connect(url).await.expect("sqlite"))
        } else {
            Db::Postgres(sqlx::PgConnection::connect(url).await.expect("postgres"))
        }
    }

    async fn execute(&mut self, sql: &str) {
        match self {
            Db::Sqlite(c) => sqlx::raw_sql(sql).execute(c).await.map(drop),
            Db::Postgres(c) => sqlx::raw_sql(sql).execute(c).await.map(drop),
        }
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

async fn insert_calls(h: &Harness, calls: &[Generated]) {
    let store = h.server.state.service.store();
    let mut db = Db::open(h).await;
    for g in calls {
        store.insert(&g.snapshot).await.expect("insert call");
        for m in &g.quality {
            store.insert_quality(m).await.expect("insert quality");
        }
        insert_recording_row(&mut db, g).await;
    }
}

/// The `call_recordings` row of a call that has one.
async fn insert_recording_row(db: &mut Db, g: &Generated) {
    if g.recording_row {
        db.execute(&format!(
            "INSERT INTO call_recordings (id, call_id, started_at, status) \
             VALUES ('{}', '{}', {}, 'completed')",
            Uuid::new_v4(),
            g.call().id,
            sql_time(g.call().created_at)
        ))
        .await;
    }
}

/// Writes a call, its members and its quality samples as a Huddle older than
/// migration 0006 did: no `call_participants.call_created_at`, no quality totals.
async fn insert_before_0006(db: &mut Db, g: &Generated) {
    let text = |v: Option<&str>| v.map_or("NULL".to_owned(), |v| format!("'{v}'"));
    let time = |t: Option<DateTime<Utc>>| t.map_or("NULL".to_owned(), sql_time);
    let number = |v: Option<f64>| v.map_or("NULL".to_owned(), |v| format!("{v:?}"));
    // Quoted, booleans read as such by both backends.
    let flag = |b: bool| if b { "'1'" } else { "'0'" };
    let c = g.call();
    db.execute(&format!(
        "INSERT INTO calls (id, room_id, type, state, initiator_id, is_group, \
         max_participants, created_at, started_at, ended_at, duration, end_reason, \
         recording_enabled, updated_at, version, media_mode) \
         VALUES ('{}', '{}', '{}', '{}', '{}', {}, {}, {}, {}, {}, {}, {}, {}, {}, 1, '{}')",
        c.id,
        c.room_id,
        c.call_type.as_str(),
        c.state.as_str(),
        c.initiator_id.as_str(),
        flag(c.is_group),
        c.max_participants,
        sql_time(c.created_at),
        time(c.started_at),
        time(c.ended_at),
        c.duration.map_or("NULL".to_owned(), |d| d.to_string()),
        text(c.end_reason.map(|r| r.as_str())),
        flag(c.recording_enabled),
        sql_time(c.updated_at),
        c.media_mode.as_str(),
    ))
    .await;
    for p in &g.snapshot.participants {
        db.execute(&format!(
            "INSERT INTO call_participants (id, call_id, user_id, role, invited_at, joined_at, \
             left_at, duration, connection_state, audio_enabled, video_enabled, \
             screen_share_enabled) \
             VALUES ('{}', '{}', '{}', '{}', {}, {}, {}, {}, '{}', {}, {}, {})",
            p.id,
            p.call_id,
            p.user_id.as_str(),
            p.role.as_str(),
            sql_time(p.invited_at),
            time(p.joined_at),
            time(p.left_at),
            p.duration,
            p.connection_state.as_str(),
            flag(p.audio_enabled),
            flag(p.video_enabled),
            flag(p.screen_share_enabled),
        ))
        .await;
    }
    for m in &g.quality {
        let r = &m.report;
        db.execute(&format!(
            "INSERT INTO call_quality_metrics (id, call_id, participant_id, timestamp, jitter, \
             packet_loss, round_trip_time, quality, source) \
             VALUES ('{}', '{}', '{}', {}, {}, {}, {}, {}, '{}')",
            m.id,
            m.call_id,
            m.participant_id,
            sql_time(m.timestamp),
            number(r.jitter),
            number(r.packet_loss),
            number(r.round_trip_time),
            number(m.quality),
            m.source.as_str(),
        ))
        .await;
    }
    insert_recording_row(db, g).await;
}

/// `GET /api/v1/calls/analytics?<query>` with `token`.
async fn analytics(h: &Harness, token: &str, query: &str) -> (StatusCode, Value) {
    let headers = [("authorization", format!("Bearer {token}"))];
    let path = format!("/api/v1/calls/analytics?{query}");
    let (status, bytes) = raw(h.addr(), Method::GET, &path, &headers, Vec::new()).await;
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{path}: {status} {e}: {}", String::from_utf8_lossy(&bytes)));
    (status, body)
}

async fn report(h: &Harness, token: &str, query: &str) -> Value {
    let (status, body) = analytics(h, token, query).await;
    assert_eq!(status, StatusCode::OK, "{query}: {body}");
    assert_eq!(body["success"], true);
    body["data"].clone()
}

fn mean(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    let values: Vec<f64> = values.into_iter().collect();
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

fn round(value: f64, decimals: i32) -> f64 {
    let f = 10f64.powi(decimals);
    (value * f).round() / f
}

/// `actual` is `expected` (a number, or null for `None`) to within rounding error.
fn assert_close(actual: &Value, expected: Option<f64>, what: &str) {
    match (actual.as_f64(), expected) {
        (None, None) if actual.is_null() => {}
        (Some(a), Some(e)) if (a - e).abs() <= 1e-9 * e.abs().max(1.0) => {}
        _ => panic!("{what}: got {actual}, expected {expected:?}"),
    }
}

/// The figures every report has, computed here from generated data.
#[derive(Debug, Default)]
struct Expected {
    total: i64,
    connected: i64,
    recorded: i64,
    active: i64,
    average_duration: Option<f64>,
    /// Outcome name → count.
    outcomes: BTreeMap<&'static str, i64>,
    /// UTC date → calls, for every date of the window.
    daily: BTreeMap<String, i64>,
    /// UTC hour → calls.
    hours: BTreeMap<u32, i64>,
}

impl Expected {
    /// No calls yet: every date of the window at 0, every outcome at 0.
    fn new() -> Self {
        let (from, to) = window();
        let mut daily = BTreeMap::new();
        let mut day = from;
        while day < to {
            daily.insert(day.format("%Y-%m-%d").to_string(), 0);
            day += Duration::days(1);
        }
        let outcomes = [
            "completed",
            "missed",
            "declined",
            "busy",
            "failed",
            "cancelled",
        ]
        .into_iter()
        .map(|o| (o, 0))
        .collect();
        Expected {
            daily,
            outcomes,
            ..Expected::default()
        }
    }

    /// Counts a call of the window that began at `t`.
    fn count_time(&mut self, t: DateTime<Utc>) {
        self.total += 1;
        *self
            .daily
            .get_mut(&t.format("%Y-%m-%d").to_string())
            .expect("a day of the window") += 1;
        *self
            .hours
            .entry(t.format("%H").to_string().parse().unwrap())
            .or_default() += 1;
    }

    fn assert_matches(&self, report: &Value) {
        let s = &report["summary"];
        assert_eq!(s["totalCalls"], self.total, "{s}");
        assert_eq!(s["connectedCalls"], self.connected, "{s}");
        assert_eq!(s["recordedCalls"], self.recorded, "{s}");
        assert_eq!(s["activeCalls"], self.active, "{s}");
        assert_close(
            &s["averageCallDuration"],
            self.average_duration,
            "averageCallDuration",
        );
        let rate = if self.total == 0 {
            0.0
        } else {
            round(100.0 * self.connected as f64 / self.total as f64, 1)
        };
        assert_close(&s["connectionRate"], Some(rate), "connectionRate");
        for (outcome, n) in &self.outcomes {
            assert_eq!(
                report["outcomes"][outcome], *n,
                "outcome {outcome}: {report}"
            );
        }
        let finished: i64 = self.outcomes.values().sum();
        assert_eq!(finished + self.active, self.total);

        let trends = &report["trends"];
        assert_close(
            &trends["callsPerDay"],
            Some(round(self.total as f64 / 7.0, 2)),
            "callsPerDay",
        );
        let daily: Vec<(String, i64)> = trends["daily"]
            .as_array()
            .expect("daily")
            .iter()
            .map(|d| {
                (
                    d["date"].as_str().unwrap().to_owned(),
                    d["calls"].as_i64().unwrap(),
                )
            })
            .collect();
        let expected: Vec<(String, i64)> = self.daily.clone().into_iter().collect();
        assert_eq!(daily, expected);
        let mut hours: Vec<(u32, i64)> = self.hours.iter().map(|(h, n)| (*h, *n)).collect();
        hours.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        hours.truncate(3);
        let peak: Vec<(u32, i64)> = trends["peakHours"]
            .as_array()
            .expect("peakHours")
            .iter()
            .map(|h| {
                (
                    h["hour"].as_u64().unwrap() as u32,
                    h["calls"].as_i64().unwrap(),
                )
            })
            .collect();
        assert_eq!(peak, hours, "{trends}");
    }
}

fn in_window(t: DateTime<Utc>) -> bool {
    let (from, to) = window();
    from <= t && t < to
}

/// The outcome each end reason is reported under (docs/api.md, Analytics).
fn outcome_name(reason: EndReason) -> &'static str {
    match reason {
        EndReason::Normal | EndReason::MaxDuration => "completed",
        EndReason::Missed | EndReason::Timeout => "missed",
        EndReason::Declined => "declined",
        EndReason::Busy => "busy",
        EndReason::Failed => "failed",
        EndReason::Cancelled => "cancelled",
    }
}

/// What the report over `calls` (already scoped) should say.
fn expected_app<'a>(calls: impl IntoIterator<Item = &'a Generated>) -> Expected {
    let mut e = Expected::new();
    let mut durations = Vec::new();
    for g in calls {
        let c = g.call();
        if !in_window(c.created_at) {
            continue;
        }
        e.count_time(c.created_at);
        if c.started_at.is_some() {
            e.connected += 1;
            durations.extend(c.duration.map(|d| d as f64));
        }
        e.recorded += i64::from(g.recorded());
        match c.end_reason {
            Some(reason) => *e.outcomes.get_mut(outcome_name(reason)).unwrap() += 1,
            None => e.active += 1,
        }
    }
    e.average_duration = mean(durations);
    e
}

/// Checks `quality.client` and `quality.sfu` against the samples of `calls`.
fn assert_quality<'a>(report: &Value, calls: impl IntoIterator<Item = &'a Generated> + Clone) {
    for source in [MetricSource::Client, MetricSource::Sfu] {
        let samples: Vec<&QualityMetric> = calls
            .clone()
            .into_iter()
            .filter(|g| in_window(g.call().created_at))
            .flat_map(|g| &g.quality)
            .filter(|m| m.source == source)
            .collect();
        let q = &report["quality"][source.as_str()];
        assert_eq!(q["samples"], samples.len() as i64, "{source}: {q}");
        let avg = |f: fn(&QualityMetric) -> Option<f64>| mean(samples.iter().filter_map(|m| f(m)));
        assert_close(&q["averageJitter"], avg(|m| m.report.jitter), "jitter");
        assert_close(
            &q["averagePacketLoss"],
            avg(|m| m.report.packet_loss),
            "packetLoss",
        );
        assert_close(
            &q["averageRoundTripTime"],
            avg(|m| m.report.round_trip_time),
            "roundTripTime",
        );
        assert_close(&q["averageMOS"], avg(|m| m.quality), "MOS");
    }
}

/// A generated phone call.
struct PhoneCall {
    calling: Option<&'static str>,
    called: Option<&'static str>,
    initiated_at: Option<DateTime<Utc>>,
    state: &'static str,
    duration: Option<i64>,
}

const NUMBERS: [&str; 4] = [
    "+14155550100",
    "+14155550101",
    "+442079460000",
    "+4930901820",
];

fn generate_phone_calls(rng: &mut Rng, n: usize) -> Vec<PhoneCall> {
    (0..n)
        .map(|i| {
            let calling = NUMBERS[rng.below(4) as usize];
            let called = NUMBERS
                .iter()
                .copied()
                .filter(|n| *n != calling)
                .nth(rng.below(3) as usize)
                .unwrap();
            let state = ["initiated", "answered", "completed", "completed", "missed"][i % 5];
            let initiated_at = (i % 13 != 12)
                .then(|| base() + Duration::seconds(rng.below(9 * 86_400) as i64 - 86_400));
            let duration = match state {
                "completed" | "missed" => Some(10 + rng.below(2000) as i64),
                _ => None,
            };
            PhoneCall {
                // An event naming no calling number leaves it unknown.
                calling: (i % 7 != 6).then_some(calling),
                called: Some(called),
                initiated_at,
                state,
                duration: duration.filter(|_| initiated_at.is_some()),
            }
        })
        .collect()
}

async fn insert_phone_calls(db: &mut Db, calls: &[PhoneCall]) {
    let text = |v: Option<&str>| v.map_or("NULL".to_owned(), |v| format!("'{v}'"));
    let time = |t: Option<DateTime<Utc>>| t.map_or("NULL".to_owned(), sql_time);
    for (i, c) in calls.iter().enumerate() {
        let ended = c
            .duration
            .zip(c.initiated_at)
            .map(|(d, t)| t + Duration::seconds(d));
        let answered = (c.state != "initiated" && c.state != "missed")
            .then(|| c.initiated_at.map(|t| t + Duration::seconds(3)))
            .flatten();
        let now = sql_time(base());
        db.execute(&format!(
            "INSERT INTO phone_calls (id, external_id, calling_number, called_number, \
             initiated_at, answered_at, ended_at, duration, state, created_at, updated_at) \
             VALUES ('{}', 'ext-{i}', {}, {}, {}, {}, {}, {}, '{}', {now}, {now})",
            Uuid::new_v4(),
            text(c.calling),
            text(c.called),
            time(c.initiated_at),
            time(answered),
            time(ended),
            c.duration.map_or("NULL".to_owned(), |d| d.to_string()),
            c.state,
        ))
        .await;
    }
}

on_both_backends! {
    async fn an_admins_report_matches_figures_computed_from_the_generated_calls(h) {
        let calls = generate_calls(&mut Rng(0x5EED_0001), 90);
        insert_calls(&h, &calls).await;
        let report = report(&h, &h.admin_token("ops"), &format!("period=week&{WINDOW}")).await;
        assert_eq!(report["kind"], "app");
        assert_eq!(report["period"], "week");
        assert_eq!(report["scope"], "all");
        assert_eq!(report["from"], "2024-03-04T00:00:00Z");
        assert_eq!(report["to"], "2024-03-11T00:00:00Z");
        let expected = expected_app(&calls);
        assert!(expected.total > 40 && expected.connected > 10, "the data covers the cases: {expected:?}");
        assert!(expected.outcomes.values().all(|n| *n > 0), "{expected:?}");
        expected.assert_matches(&report);
        assert_quality(&report, &calls);
        let both = &report["quality"];
        assert!(both["client"]["samples"].as_i64() > Some(0) && both["sfu"]["samples"].as_i64() > Some(0), "{both}");
    }

    async fn an_admins_report_has_a_row_per_user_busiest_first(h) {
        let calls = generate_calls(&mut Rng(0x5EED_0002), 70);
        insert_calls(&h, &calls).await;
        let report = report(&h, &h.admin_token("ops"), WINDOW).await;
        let rows = report["users"].as_array().expect("users");
        assert_eq!(report["moreRows"], false);
        let mut expected: Vec<(String, i64, i64, i64, Option<f64>, i64)> = USERS
            .iter()
            .map(|user| {
                let theirs: Vec<&Generated> = calls
                    .iter()
                    .filter(|g| in_window(g.call().created_at) && g.has_member(user))
                    .collect();
                let me = |g: &&Generated| {
                    g.snapshot.participants.iter().find(|p| p.user_id.as_str() == *user).cloned().unwrap()
                };
                (
                    user.to_string(),
                    theirs.len() as i64,
                    theirs.iter().filter(|g| g.call().initiator_id.as_str() == *user).count() as i64,
                    theirs.iter().filter(|g| g.call().started_at.is_some()).count() as i64,
                    mean(theirs.iter().filter(|g| g.call().started_at.is_some()).filter_map(|g| g.call().duration).map(|d| d as f64)),
                    theirs.iter().map(|g| me(g).duration).sum(),
                )
            })
            .filter(|row| row.1 > 0)
            .collect();
        expected.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        assert_eq!(rows.len(), expected.len(), "{rows:?}");
        for (row, (user, total, initiated, connected, average, time)) in rows.iter().zip(&expected) {
            assert_eq!(row["userId"], user.as_str(), "{rows:?}");
            assert_eq!(row["totalCalls"], *total, "{row}");
            assert_eq!(row["initiatedCalls"], *initiated, "{row}");
            assert_eq!(row["connectedCalls"], *connected, "{row}");
            assert_close(&row["averageCallDuration"], *average, "averageCallDuration");
            assert_eq!(row["timeInCalls"], *time, "{row}");
        }
    }

    async fn a_user_sees_only_the_calls_they_are_a_member_of(h) {
        let calls = generate_calls(&mut Rng(0x5EED_0003), 70);
        insert_calls(&h, &calls).await;
        let admin = report(&h, &h.admin_token("ops"), WINDOW).await;
        for user in USERS {
            let mine = report(&h, &h.token(user), WINDOW).await;
            assert_eq!(mine["scope"], "own");
            assert!(mine.get("users").is_none(), "no per-user rows for a user: {mine}");
            let theirs: Vec<&Generated> = calls.iter().filter(|g| g.has_member(user)).collect();
            expected_app(theirs.iter().copied()).assert_matches(&mine);
            assert_quality(&mine, theirs.iter().copied());
            let row = admin["users"].as_array().unwrap().iter().find(|r| r["userId"] == user).expect("a row");
            assert_eq!(row["totalCalls"], mine["summary"]["totalCalls"], "the admin's row for {user} is their own total");
            assert_eq!(row["connectedCalls"], mine["summary"]["connectedCalls"]);
        }
        // Someone in no call gets a report of zeros, every day of the window listed.
        let nobody = report(&h, &h.token("zed"), WINDOW).await;
        Expected::new().assert_matches(&nobody);
        assert_eq!(nobody["quality"]["sfu"]["samples"], 0);
        assert!(nobody["quality"]["sfu"]["averageMOS"].is_null());
        assert_eq!(nobody["summary"]["averageCallDurationText"], Value::Null);
    }

    async fn without_from_the_period_ends_at_the_servers_now(h) {
        let now = h.clock.now();
        let at = |ago: i64| {
            let mut g = generate_call(&mut Rng(ago as u64 + 1), now - Duration::minutes(ago), 0);
            // Alice alone, so the other users' reports stay empty.
            g.snapshot.participants.truncate(1);
            g.snapshot.participants[0].user_id = UserId("alice".into());
            g.snapshot.call.initiator_id = UserId("alice".into());
            g.quality.clear();
            g
        };
        // 1 hour, 23 hours, 25 hours, 6 days and 8 days ago.
        let calls: Vec<Generated> = [60, 23 * 60, 25 * 60, 6 * 1440, 8 * 1440].into_iter().map(at).collect();
        insert_calls(&h, &calls).await;
        let total = |r: &Value| r["summary"]["totalCalls"].as_i64().unwrap();
        assert_eq!(total(&report(&h, &h.token("alice"), "period=day").await), 2);
        assert_eq!(total(&report(&h, &h.token("alice"), "period=week").await), 4);
        assert_eq!(total(&report(&h, &h.token("alice"), "").await), 4, "week is the default");
        assert_eq!(total(&report(&h, &h.token("alice"), "period=month").await), 5);
        let from = (now - Duration::days(6) - Duration::hours(1)).to_rfc3339_opts(SecondsFormat::Secs, true);
        let r = report(&h, &h.token("alice"), &format!("period=day&from={from}")).await;
        assert_eq!(total(&r), 1, "from alone runs one period forward: {r}");
        assert_eq!(r["trends"]["daily"].as_array().map(Vec::len), Some(2), "a day starting mid-day touches two dates");
    }

    async fn phone_calls_are_reported_to_admins_by_state_and_number(h) {
        let mut db = Db::open(&h).await;
        let calls = generate_phone_calls(&mut Rng(0x5EED_0004), 80);
        insert_phone_calls(&mut db, &calls).await;
        let report = report(&h, &h.admin_token("ops"), &format!("kind=phone&{WINDOW}")).await;
        assert_eq!(report["kind"], "phone");

        let counted: Vec<&PhoneCall> = calls.iter().filter(|c| c.initiated_at.is_some_and(in_window)).collect();
        let mut e = Expected::new();
        for c in &counted {
            e.count_time(c.initiated_at.unwrap());
            match c.state {
                "completed" => { e.connected += 1; *e.outcomes.get_mut("completed").unwrap() += 1; }
                "missed" => *e.outcomes.get_mut("missed").unwrap() += 1,
                _ => e.active += 1,
            }
        }
        let completed = |c: &&&PhoneCall| c.state == "completed";
        e.average_duration = mean(counted.iter().filter(completed).filter_map(|c| c.duration).map(|d| d as f64));
        assert!(e.total > 30 && e.active > 0 && e.connected > 0, "{e:?}");
        e.assert_matches(&report);
        for source in ["client", "sfu"] {
            assert_eq!(report["quality"][source]["samples"], 0, "phone calls have no quality samples");
        }

        let mut rows: BTreeMap<&str, (i64, i64, i64, i64, Vec<f64>)> = BTreeMap::new();
        for c in &counted {
            for (number, outbound) in [(c.calling, true), (c.called, false)] {
                let Some(number) = number else { continue };
                let row = rows.entry(number).or_default();
                row.0 += 1;
                if outbound { row.1 += 1 } else { row.2 += 1 }
                if c.state == "completed" {
                    row.3 += 1;
                    row.4.extend(c.duration.map(|d| d as f64));
                }
            }
        }
        let mut expected: Vec<_> = rows.into_iter().collect();
        expected.sort_by(|a, b| b.1.0.cmp(&a.1.0).then(a.0.cmp(b.0)));
        let got = report["numbers"].as_array().expect("numbers");
        assert!(report.get("users").is_none());
        assert_eq!(got.len(), expected.len(), "{got:?}");
        for (row, (number, (total, outbound, inbound, connected, durations))) in got.iter().zip(expected) {
            assert_eq!(row["number"], number);
            assert_eq!(row["totalCalls"], total, "{row}");
            assert_eq!(row["outboundCalls"], outbound, "{row}");
            assert_eq!(row["inboundCalls"], inbound, "{row}");
            assert_eq!(row["connectedCalls"], connected, "{row}");
            assert_close(&row["averageCallDuration"], mean(durations), "averageCallDuration");
        }
        let numbers: BTreeSet<&str> = got.iter().filter_map(|r| r["number"].as_str()).collect();
        assert!(numbers.len() > 1);

        let (status, body) = analytics(&h, &h.token("alice"), "kind=phone").await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert_eq!(body["error"]["code"], "FORBIDDEN");
    }

    async fn bad_fields_are_refused_naming_them(h) {
        let token = h.token("alice");
        let cases = [
            ("period=year", "period"),
            ("period=", "period"),
            ("kind=fax", "kind"),
            ("kind=APP", "kind"),
            ("from=yesterday", "from"),
            ("from=2024-02-30", "from"),
            ("to=2024-03-01T25:00:00Z", "to"),
            ("to=1709251200", "to"),
            ("from=2024-03-05&to=2024-03-04", "from"),
            ("from=2024-03-04T10:00:00Z&to=2024-03-04T10:00:00Z", "from"),
            ("from=2023-01-01&to=2024-01-02", "from"),
            ("period=day&period=week", "query"),
        ];
        for (query, field) in cases {
            let (status, body) = analytics(&h, &token, query).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
            assert_eq!(body["error"]["code"], "VALIDATION_ERROR", "{query}: {body}");
            assert_eq!(body["error"]["field"], field, "{query}: {body}");
        }
        let r = report(&h, &token, "from=2023-01-01&to=2023-12-31&kind=app&period=month").await;
        assert_eq!(r["trends"]["daily"].as_array().map(Vec::len), Some(365), "a year fits");
        let (status, body) = h.call(Method::GET, "/api/v1/calls/analytics", None, None).await;
        assert_eq!((status, &body["error"]["code"]), (StatusCode::UNAUTHORIZED, &Value::from("UNAUTHORIZED")));
    }
}

/// Calls stored before migration 0006 (which added the copies and totals analytics
/// read) are in the reports, history and per-user rows after the upgrade, as if
/// stored after it.
async fn an_upgrade_brings_existing_calls_into_the_reports(backend: common::Backend) {
    let mut calls = generate_calls(&mut Rng(0x5EED_0006), 60);
    // Ended calls only: a server that starts ends calls still live from 2024 whose
    // members never come back (restart recovery), which is not what this tests.
    calls.retain(|g| g.call().state == CallState::Ended);
    let h = Harness::start_from_version(backend, 5, |url| {
        let calls = &calls;
        async move {
            let mut db = Db::connect(&url).await;
            for g in calls {
                insert_before_0006(&mut db, g).await;
            }
        }
    })
    .await;
    let report = report(&h, &h.admin_token("ops"), WINDOW).await;
    expected_app(&calls).assert_matches(&report);
    assert_quality(&report, &calls);
    for user in USERS {
        let theirs: Vec<&Generated> = calls.iter().filter(|g| g.has_member(user)).collect();
        let mine = report_for(&h, user).await;
        expected_app(theirs.iter().copied()).assert_matches(&mine);
        assert_quality(&mine, theirs.iter().copied());
        let row = report["users"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["userId"] == user);
        let in_window = theirs
            .iter()
            .filter(|g| in_window(g.call().created_at))
            .count();
        assert_eq!(
            row.map_or(0, |r| r["totalCalls"].as_u64().unwrap()) as usize,
            in_window,
            "{user}"
        );
        // Their history: every call, newest first.
        let (status, body) = h.get("/api/v1/calls/history?limit=100", user).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let mut expected: Vec<(DateTime<Utc>, String)> = theirs
            .iter()
            .map(|g| (g.call().created_at, g.call().id.to_string()))
            .collect();
        expected.sort_by(|a, b| b.cmp(a));
        let listed: Vec<&str> = body["data"]["calls"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_str().unwrap())
            .collect();
        let expected: Vec<&str> = expected.iter().map(|(_, id)| id.as_str()).collect();
        assert_eq!(listed, expected, "{user}'s history");
        assert_eq!(
            body["data"]["pagination"]["total"],
            expected.len(),
            "{user}"
        );
    }
    h.finish().await;
}

async fn report_for(h: &Harness, user: &str) -> Value {
    report(h, &h.token(user), WINDOW).await
}

#[tokio::test]
async fn sqlite_an_upgrade_brings_existing_calls_into_the_reports() {
    an_upgrade_brings_existing_calls_into_the_reports(common::Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_an_upgrade_brings_existing_calls_into_the_reports() {
    an_upgrade_brings_existing_calls_into_the_reports(common::Backend::Postgres).await;
}
