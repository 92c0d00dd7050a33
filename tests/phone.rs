//! Phone calls of an outside telephone system (issue 16) over real HTTP, on SQLite and
//! on PostgreSQL: events in (seed 002's INITIATE / ANSWER / DISCONNECT and seed 000's
//! start/end), the history of a number, stale calls and `/metrics`, bad input, and who
//! may do it. Time is the harness's ManualClock.

mod common;

use chrono::{DateTime, Duration, Utc};
use hyper::{HeaderMap, Method, StatusCode};
use serde_json::{Value, json};

use common::{Harness, raw_with_headers};
use huddle::auth::{Claims, JwtKey};
use huddle::clock::Clock;

/// Our number, and the numbers it calls and is called by (all valid, in E.164).
const A: &str = "+14155552671";
const B: &str = "+442071838750";
const C: &str = "+12015550123";

/// A token for `user` with `role` (`service`, `admin`, or none for a user).
fn token(h: &Harness, user: &str, role: Option<&str>) -> String {
    let now = h.clock.now().timestamp();
    JwtKey::new(common::SECRET.as_bytes()).sign(&Claims {
        sub: user.into(),
        exp: now + 86_400,
        iat: Some(now),
        nbf: None,
        name: None,
        role: role.map(str::to_owned),
    })
}

fn service(h: &Harness) -> String {
    token(h, "pbx", Some("service"))
}

/// One request; the status, headers and body bytes.
async fn send(
    h: &Harness,
    method: Method,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> (StatusCode, HeaderMap, Vec<u8>) {
    let mut all: Vec<(&str, String)> = headers.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
    if let Some(t) = token {
        all.push(("authorization", format!("Bearer {t}")));
    }
    if body.is_some() {
        all.push(("content-type", "application/json".to_owned()));
    }
    let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
    let (status, head, body) = raw_with_headers(h.addr(), method, path, &all, bytes).await;
    (status, head, body.to_vec())
}

fn json_of(path: &str, status: StatusCode, bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap_or_else(|e| {
        panic!(
            "{path} answered {status} with non-JSON ({e}): {}",
            String::from_utf8_lossy(bytes)
        )
    })
}

async fn request(
    h: &Harness,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (StatusCode, Value) {
    let (status, _, bytes) = send(h, method, path, token, &[], body).await;
    (status, json_of(path, status, &bytes))
}

/// Posts events with a service token; returns `data` of a 200.
async fn post_events(h: &Harness, body: Value) -> Value {
    let (status, answer) = request(
        h,
        Method::POST,
        "/api/v1/phone/events",
        Some(&service(h)),
        Some(&body),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["success"], true, "{answer}");
    answer["data"].clone()
}

/// The history of `number` (a path segment, as given) with `query`: `data`.
async fn history(h: &Harness, number: &str, query: &str) -> Value {
    let path = format!("/api/v1/phone/history/{number}{query}");
    let (status, answer) = request(h, Method::GET, &path, Some(&service(h)), None).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    answer["data"].clone()
}

async fn stale_calls(h: &Harness) -> i64 {
    let (status, answer) = request(
        h,
        Method::GET,
        "/api/v1/phone/metrics",
        Some(&service(h)),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["data"]["staleAfterSeconds"], 3600, "{answer}");
    answer["data"]["latestStaleCalls"]
        .as_i64()
        .expect("a count")
}

/// Asserts a 400 naming `field`.
fn assert_invalid(status: StatusCode, answer: &Value, field: &str) {
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(answer["error"]["code"], "VALIDATION_ERROR", "{answer}");
    assert_eq!(answer["error"]["field"], field, "{answer}");
}

const DAY: &str = "2024-04-01";

fn time(clock: &str) -> String {
    format!("{DAY}T{clock}Z")
}

fn event(id: &str, call: &str, kind: &str, from: &str, to: &str, clock: &str) -> Value {
    json!({
        "event_id": id, "call_id": call, "event": kind,
        "calling_number": from, "called_number": to, "created_at": time(clock),
    })
}

/// Seed 002's scenarios around A: answered and unanswered, outbound and inbound,
/// and a call still ringing.
fn scenario() -> Vec<Value> {
    vec![
        // A calls B, who answers; 120 s.
        event("1-i", "call-1", "INITIATE", A, B, "12:00:00"),
        event("1-a", "call-1", "ANSWER", A, B, "12:00:05"),
        event("1-d", "call-1", "DISCONNECT", A, B, "12:02:00"),
        // A calls C, who does not answer.
        event("2-i", "call-2", "INITIATE", A, C, "13:00:00"),
        event("2-d", "call-2", "DISCONNECT", A, C, "13:00:30"),
        // B calls A, who answers; 600 s.
        event("3-i", "call-3", "INITIATE", B, A, "14:00:00"),
        event("3-a", "call-3", "ANSWER", B, A, "14:00:10"),
        event("3-d", "call-3", "DISCONNECT", B, A, "14:10:00"),
        // C calls A, who does not answer.
        event("4-i", "call-4", "INITIATE", C, A, "15:00:00"),
        event("4-d", "call-4", "DISCONNECT", C, A, "15:00:20"),
        // A calls B: still ringing, so in nobody's history yet.
        event("5-i", "call-5", "INITIATE", A, B, "16:00:00"),
    ]
}

/// A's history after [`scenario`], newest first.
fn expected_history_of_a() -> Value {
    json!([
        { "call_time": time("15:00:00"), "counterparty_number": C, "call_status": "Missed Inbound", "duration": null },
        { "call_time": time("14:00:00"), "counterparty_number": B, "call_status": "Completed Inbound", "duration": 600 },
        { "call_time": time("13:00:00"), "counterparty_number": C, "call_status": "Missed Outbound", "duration": null },
        { "call_time": time("12:00:00"), "counterparty_number": B, "call_status": "Completed Outbound", "duration": 120 },
    ])
}

/// Times in a history as instants, so that `Z` and `+00:00` compare equal.
fn normalized(rows: &Value) -> Value {
    let mut rows = rows.clone();
    for row in rows.as_array_mut().expect("rows") {
        let t: DateTime<Utc> = row["call_time"]
            .as_str()
            .expect("call_time")
            .parse()
            .expect("RFC 3339 call_time");
        row["call_time"] = json!(t.timestamp_millis());
    }
    rows
}

fn assert_rows(actual: &Value, expected: &Value) {
    assert_eq!(normalized(actual), normalized(expected), "{actual}");
}

/// A fixed scrambling of `items` (no two runs differ, every item moves).
fn shuffled<T: Clone>(items: &[T]) -> Vec<T> {
    let mut order: Vec<usize> = (0..items.len()).collect();
    let mut state = 0x2545_f491_u64;
    for i in (1..order.len()).rev() {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1);
        order.swap(i, (state >> 33) as usize % (i + 1));
    }
    order.into_iter().map(|i| items[i].clone()).collect()
}

/// Every sample line of a Prometheus text exposition, checked for its syntax:
/// `name{labels} value`, each family declared once by `# TYPE` before its samples.
fn prometheus_samples(text: &str) -> Vec<(String, f64)> {
    let mut declared = std::collections::HashSet::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let name = rest.split(' ').next().unwrap_or_default();
            assert!(declared.insert(name.to_owned()), "{name} declared twice");
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("`series value`");
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("{line}"));
        let name = series.split('{').next().unwrap_or_default();
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "{line}"
        );
        assert!(
            series.ends_with('}') == series.contains('{'),
            "labels closed: {line}"
        );
        let family = ["_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .filter(|f| declared.contains(*f))
            .unwrap_or(name);
        assert!(declared.contains(family), "{name} sampled before its TYPE");
        samples.push((series.to_owned(), value));
    }
    samples
}

async fn scrape(h: &Harness, accept: Option<&str>) -> (StatusCode, HeaderMap, Vec<u8>) {
    let headers: Vec<(&str, &str)> = accept.iter().map(|a| ("accept", *a)).collect();
    send(h, Method::GET, "/metrics", None, &headers, None).await
}

on_both_backends! {
    async fn answered_and_unanswered_calls_both_ways_give_the_four_statuses(h) {
        let data = post_events(&h, json!(scenario())).await;
        assert_eq!((data["received"].as_u64(), data["stored"].as_u64(), data["duplicates"].as_u64()),
                   (Some(11), Some(11), Some(0)), "{data}");
        let call = |id: &str| data["calls"].as_array().unwrap().iter().find(|c| c["callId"] == id).cloned().unwrap();
        assert_eq!(call("call-1"), json!({ "callId": "call-1", "state": "completed", "duration": 120 }));
        assert_eq!(call("call-2"), json!({ "callId": "call-2", "state": "missed", "duration": 30 }));
        assert_eq!(call("call-5"), json!({ "callId": "call-5", "state": "initiated", "duration": null }));

        let a = history(&h, A, "").await;
        assert_rows(&a["calls"], &expected_history_of_a());
        assert_eq!(a["pagination"], json!({ "limit": 50, "offset": 0, "total": 4 }));

        let b = history(&h, B, "").await;
        assert_rows(&b["calls"], &json!([
            { "call_time": time("14:00:00"), "counterparty_number": A, "call_status": "Completed Outbound", "duration": 600 },
            { "call_time": time("12:00:00"), "counterparty_number": A, "call_status": "Completed Inbound", "duration": 120 },
        ]));
        let c = history(&h, C, "").await;
        let statuses: Vec<&str> = c["calls"].as_array().unwrap().iter().map(|r| r["call_status"].as_str().unwrap()).collect();
        assert_eq!(statuses, ["Missed Outbound", "Missed Inbound"]);
    }

    async fn a_history_pages_and_filters_like_the_call_history(h) {
        post_events(&h, json!(scenario())).await;
        let page = history(&h, A, "?limit=2&offset=1").await;
        let middle = Value::from(expected_history_of_a().as_array().unwrap()[1..3].to_vec());
        assert_rows(&page["calls"], &middle);
        assert_eq!(page["pagination"], json!({ "limit": 2, "offset": 1, "total": 4 }));
        let window = history(&h, A, &format!("?from={}&to={}", time("13:00:00"), time("15:00:00"))).await;
        assert_rows(&window["calls"], &middle);
        assert_eq!(window["pagination"]["total"], 2);
        let later = history(&h, A, "?from=2024-04-01T14:30:00%2B00:00").await;
        assert_eq!(later["pagination"]["total"], 1, "an offset's + written %2B");
        let service = service(&h);
        let reversed = format!("?from={}&to={}", time("15:00:00"), time("13:00:00"));
        for (query, field) in [("?limit=0", "limit"), ("?limit=101", "limit"), ("?offset=-1", "offset"),
                               ("?from=yesterday", "from"), (reversed.as_str(), "to")] {
            let (status, answer) = request(&h, Method::GET, &format!("/api/v1/phone/history/{A}{query}"), Some(&service), None).await;
            assert_invalid(status, &answer, field);
        }
    }

    async fn a_number_in_any_common_format_reads_the_same_history(h) {
        post_events(&h, json!(scenario())).await;
        for written in ["%2B1%20(415)%20555-2671", "+1-415-555-2671", "+1.415.555.2671", "tel:+14155552671"] {
            assert_rows(&history(&h, written, "").await["calls"], &expected_history_of_a());
        }
        let (status, answer) = request(&h, Method::GET, "/api/v1/phone/history/12", Some(&service(&h)), None).await;
        assert_invalid(status, &answer, "number");
        let (status, answer) = request(&h, Method::GET, "/api/v1/phone/history/4155552671", Some(&service(&h)), None).await;
        assert_invalid(status, &answer, "number");
        assert!(answer["error"]["message"].as_str().unwrap().contains("PHONE_DEFAULT_REGION"), "{answer}");
    }

    async fn seed_002s_path_answers_the_bare_rows(h) {
        post_events(&h, json!(scenario())).await;
        for path in [format!("/call-history/{A}/"), format!("/call-history/{A}")] {
            let (status, rows) = request(&h, Method::GET, &path, Some(&service(&h)), None).await;
            assert_eq!(status, StatusCode::OK, "{rows}");
            assert_rows(&rows, &expected_history_of_a());
        }
    }

    async fn shuffled_and_duplicated_events_give_the_same_history(h) {
        // Events one at a time in a scrambled order (DISCONNECT before ANSWER or
        // INITIATE included), each of the first half twice, then the whole scenario
        // again as one batch with duplicates inside.
        let events = shuffled(&scenario());
        assert_ne!(events, scenario());
        let mut stored = 0;
        for (i, e) in events.iter().enumerate() {
            let copies = if i < events.len() / 2 { 2 } else { 1 };
            for _ in 0..copies {
                stored += post_events(&h, e.clone()).await["stored"].as_u64().unwrap();
            }
        }
        assert_eq!(stored, 11, "each event stored once");
        let mut again = shuffled(&events);
        again.extend(events[..3].iter().cloned());
        let data = post_events(&h, json!(again)).await;
        assert_eq!((data["stored"].as_u64(), data["duplicates"].as_u64()), (Some(0), Some(14)), "{data}");
        assert_rows(&history(&h, A, "").await["calls"], &expected_history_of_a());
        assert_eq!(history(&h, B, "").await["pagination"]["total"], 2);

        // An event id sent again with other content changes nothing either.
        let forged = event("1-d", "call-1", "DISCONNECT", A, B, "23:00:00");
        assert_eq!(post_events(&h, forged).await["duplicates"], 1);
        assert_rows(&history(&h, A, "").await["calls"], &expected_history_of_a());
    }

    async fn a_disconnect_before_its_answer_is_missed_then_completed(h) {
        let d = post_events(&h, event("x-d", "x", "DISCONNECT", A, B, "10:01:00")).await;
        assert_eq!(d["calls"][0], json!({ "callId": "x", "state": "missed", "duration": null }));
        let a = post_events(&h, event("x-a", "x", "ANSWER", A, B, "10:00:10")).await;
        assert_eq!(a["calls"][0], json!({ "callId": "x", "state": "completed", "duration": null }));
        let i = post_events(&h, event("x-i", "x", "INITIATE", A, B, "10:00:00")).await;
        assert_eq!(i["calls"][0], json!({ "callId": "x", "state": "completed", "duration": 60 }));
    }

    async fn events_of_one_call_arriving_at_once_give_the_whole_call(h) {
        // A call's events in concurrent requests: whichever commits last must see the
        // others' events (the call's row is locked first), whether the call is new
        // or known already.
        for round in 0..8 {
            let call = format!("race-{round}");
            let initiate = event(&format!("{call}-i"), &call, "INITIATE", A, B, "07:00:00");
            if round % 2 == 0 {
                post_events(&h, initiate.clone()).await;
            }
            let (i, a, d) = tokio::join!(
                post_events(&h, initiate),
                post_events(&h, event(&format!("{call}-a"), &call, "ANSWER", A, B, "07:00:02")),
                post_events(&h, event(&format!("{call}-d"), &call, "DISCONNECT", A, B, "07:00:45")),
            );
            assert_eq!([&a, &d].map(|r| r["stored"].as_u64()), [Some(1); 2]);
            assert_eq!(i["stored"].as_u64(), Some(u64::from(round % 2 == 1)));
        }
        let rows = history(&h, A, "").await;
        assert_eq!(rows["pagination"]["total"], 8);
        for row in rows["calls"].as_array().unwrap() {
            assert_eq!((row["call_status"].as_str(), row["duration"].as_i64()), (Some("Completed Outbound"), Some(45)), "{row}");
        }
    }

    async fn seed_000s_start_and_end_events_on_its_own_path(h) {
        let service = service(&h);
        let start = json!({ "call_id": "s1", "from": "+1 415 555 2671", "to": B, "started": time("09:00:00") });
        for _ in 0..2 {
            let (status, answer) = request(&h, Method::POST, "/events", Some(&service), Some(&start)).await;
            assert_eq!((status, answer), (StatusCode::OK, json!({ "status": "ok" })));
        }
        assert_eq!(history(&h, A, "").await["pagination"]["total"], 0, "not ended yet");
        let mut ended = start.clone();
        ended["ended"] = json!(time("09:05:30"));
        let (status, answer) = request(&h, Method::POST, "/events", Some(&service), Some(&ended)).await;
        assert_eq!((status, answer), (StatusCode::OK, json!({ "status": "ok" })));
        assert_rows(&history(&h, A, "").await["calls"], &json!([
            { "call_time": time("09:00:00"), "counterparty_number": B, "call_status": "Completed Outbound", "duration": 330 },
        ]));
        // The same call and fields again: nothing new.
        let data = post_events(&h, ended).await;
        assert_eq!((data["stored"].as_u64(), data["duplicates"].as_u64()), (Some(0), Some(2)), "{data}");

        let (status, answer) = request(&h, Method::POST, "/events", Some(&service), Some(&json!({ "call_id": "s2", "from": A }))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(answer["error"], "Bad Request", "{answer}");
        assert_eq!(answer["field"], "to", "{answer}");
        let (status, _, bytes) = send(&h, Method::POST, "/events", Some(&service), &[("content-type", "application/json")], None).await;
        let answer = json_of("/events", status, &bytes);
        assert_eq!((status, &answer["error"]), (StatusCode::BAD_REQUEST, &json!("Bad Request")), "{answer}");
    }

    async fn calls_not_ended_become_stale_past_the_threshold(h) {
        let now = h.clock.now();
        let at = |t: DateTime<Utc>| t.to_rfc3339();
        post_events(&h, json!([
            // seed 000: one started, one started and ended.
            { "call_id": "open", "from": A, "to": B, "started": at(now) },
            { "call_id": "done", "from": A, "to": C, "started": at(now), "ended": at(now + Duration::seconds(30)) },
            // seed 002: one ringing, one answered and still talking, one missed.
            { "event_id": "r-i", "call_id": "ringing", "event": "INITIATE", "calling_number": B, "called_number": A, "created_at": at(now) },
            { "event_id": "t-i", "call_id": "talking", "event": "INITIATE", "calling_number": C, "called_number": A, "created_at": at(now) },
            { "event_id": "t-a", "call_id": "talking", "event": "ANSWER", "calling_number": C, "called_number": A, "created_at": at(now + Duration::seconds(5)) },
            { "event_id": "m-i", "call_id": "missed", "event": "INITIATE", "calling_number": C, "called_number": B, "created_at": at(now) },
            { "event_id": "m-d", "call_id": "missed", "event": "DISCONNECT", "calling_number": C, "called_number": B, "created_at": at(now + Duration::seconds(20)) },
        ])).await;
        assert_eq!(stale_calls(&h).await, 0);
        h.clock.advance(Duration::seconds(3599));
        assert_eq!(stale_calls(&h).await, 0, "not yet an hour");
        h.clock.advance(Duration::seconds(1));
        assert_eq!(stale_calls(&h).await, 3, "open, ringing and talking");
        let (status, _, bytes) = scrape(&h, Some("application/json")).await;
        assert_eq!((status, json_of("/metrics", status, &bytes)), (StatusCode::OK, json!({ "latestStaleCalls": 3 })));

        let (status, answer) = request(&h, Method::POST, "/events", Some(&service(&h)), Some(&json!({
            "call_id": "open", "from": A, "to": B, "started": at(now), "ended": at(h.clock.now()),
        }))).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        post_events(&h, json!({ "event_id": "r-d", "call_id": "ringing", "event": "DISCONNECT",
                                "calling_number": B, "called_number": A, "created_at": at(h.clock.now()) })).await;
        assert_eq!(stale_calls(&h).await, 1, "talking is still on");
        let (_, _, bytes) = scrape(&h, None).await;
        let samples = prometheus_samples(&String::from_utf8_lossy(&bytes));
        assert!(samples.contains(&("huddle_phone_stale_calls".to_owned(), 1.0)), "{samples:?}");
    }

    async fn metrics_answer_json_only_to_requests_that_accept_only_json(h) {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        for accept in [None, Some(prometheus), Some("text/plain"), Some("*/*"), Some("application/json, text/plain")] {
            let (status, head, bytes) = scrape(&h, accept).await;
            assert_eq!(status, StatusCode::OK, "{accept:?}");
            assert!(head["content-type"].to_str().unwrap().starts_with("text/plain; version=0.0.4"), "{accept:?}");
            let samples = prometheus_samples(&String::from_utf8_lossy(&bytes));
            for family in ["huddle_phone_stale_calls", "huddle_database_up", "huddle_calls_started_total"] {
                assert!(samples.iter().any(|(s, _)| s == family), "{family} in {accept:?}: {samples:?}");
            }
        }
        for accept in ["application/json", "application/json; charset=utf-8"] {
            let (status, head, bytes) = scrape(&h, Some(accept)).await;
            assert_eq!(status, StatusCode::OK);
            assert!(head["content-type"].to_str().unwrap().starts_with("application/json"));
            assert_eq!(json_of("/metrics", status, &bytes), json!({ "latestStaleCalls": 0 }));
        }
    }

    async fn bad_events_are_refused_naming_the_field_and_store_nothing(h) {
        let good = scenario();
        let with = |i: usize, key: &str, value: Value| {
            let mut batch = good.clone();
            batch[i][key] = value;
            json!(batch)
        };
        let without = |i: usize, key: &str| {
            let mut batch = good.clone();
            batch[i].as_object_mut().unwrap().remove(key);
            json!(batch)
        };
        let too_many: Vec<Value> = (0..1001).map(|i| event(&format!("e{i}"), &format!("c{i}"), "INITIATE", A, B, "08:00:00")).collect();
        let cases = [
            (with(3, "calling_number", json!("+1 415 555")), "[3].calling_number"),
            (with(10, "called_number", json!("not a number")), "[10].called_number"),
            (with(4, "called_number", json!("4155552671")), "[4].called_number"),
            (with(0, "created_at", json!("2024-04-01 12:00:00")), "[0].created_at"),
            (with(1, "created_at", json!("1711972800")), "[1].created_at"),
            (with(2, "event", json!("HANGUP")), "[2].event"),
            (with(5, "call_id", json!(7)), "[5].call_id"),
            (without(6, "event_id"), "[6].event_id"),
            (without(7, "called_number"), "[7].called_number"),
            (json!(too_many), "body"),
            (json!([]), "body"),
            (json!("INITIATE"), "body"),
            (json!({ "call_id": "s", "from": A, "to": B, "started": "noon" }), "started"),
            (json!({ "call_id": "s", "from": A, "to": B, "started": time("12:00:00"), "ended": time("11:00:00") }), "ended"),
            (json!({ "call_id": "s", "from": A, "started": time("12:00:00") }), "to"),
        ];
        let service = service(&h);
        for (body, field) in cases {
            let (status, answer) = request(&h, Method::POST, "/api/v1/phone/events", Some(&service), Some(&body)).await;
            assert_invalid(status, &answer, field);
        }
        // Nothing of the refused batches was kept: every event is new now.
        let data = post_events(&h, json!(good)).await;
        assert_eq!((data["stored"].as_u64(), data["duplicates"].as_u64()), (Some(11), Some(0)), "{data}");
        let data = post_events(&h, json!([{ "call_id": "s", "from": A, "to": B, "started": time("12:00:00") }])).await;
        assert_eq!(data["stored"], 1, "{data}");
    }

    async fn a_full_batch_is_taken_in_one_request(h) {
        let batch: Vec<Value> = (0..250)
            .flat_map(|i| {
                let call = format!("bulk-{i}");
                let clock = format!("{:02}:{:02}:00", 8 + i / 60, i % 60);
                ["INITIATE", "ANSWER", "DISCONNECT", "DISCONNECT"].into_iter().enumerate().map(|(k, kind)| {
                    event(&format!("{call}-{k}"), &call, kind, A, C, &clock)
                }).collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(batch.len(), 1000);
        let data = post_events(&h, json!(batch)).await;
        assert_eq!((data["stored"].as_u64(), data["calls"].as_array().map(Vec::len)), (Some(1000), Some(250)));
        assert_eq!(history(&h, C, "?limit=1").await["pagination"]["total"], 250);
    }

    async fn only_backend_tokens_reach_phone_calls(h) {
        let user = token(&h, "alice", None);
        let admin = token(&h, "ops", Some("admin"));
        let one = event("e", "c", "INITIATE", A, B, "12:00:00");
        let endpoints = [
            (Method::POST, "/api/v1/phone/events".to_owned(), Some(one.clone())),
            (Method::GET, "/api/v1/phone/metrics".to_owned(), None),
            (Method::GET, format!("/api/v1/phone/history/{A}"), None),
            (Method::GET, format!("/call-history/{A}/"), None),
        ];
        for (method, path, body) in &endpoints {
            let (status, answer) = request(&h, method.clone(), path, None, body.as_ref()).await;
            assert_eq!((status, answer["error"]["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("UNAUTHORIZED")), "{path}");
            let (status, answer) = request(&h, method.clone(), path, Some(&user), body.as_ref()).await;
            assert_eq!((status, answer["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("FORBIDDEN")), "{path}");
        }
        let (status, answer) = request(&h, Method::POST, "/events", Some(&user), Some(&one)).await;
        assert_eq!((status, &answer["error"]), (StatusCode::FORBIDDEN, &json!("Forbidden")), "{answer}");
        let (status, answer) = request(&h, Method::POST, "/events", None, Some(&one)).await;
        assert_eq!((status, &answer["error"]), (StatusCode::UNAUTHORIZED, &json!("Unauthorized")), "{answer}");
        assert_eq!(post_events(&h, one.clone()).await["stored"], 1, "refused requests stored nothing");
        for (method, path, body) in &endpoints {
            let (status, answer) = request(&h, method.clone(), path, Some(&admin), body.as_ref()).await;
            assert_eq!(status, StatusCode::OK, "an operator's token, {path}: {answer}");
        }
    }
}
