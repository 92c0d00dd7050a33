//! Call recording over real HTTP, each test on SQLite and on PostgreSQL: who may
//! start, stop, list, download and delete; the policy; one recording at a time; what
//! the planes' reports do to the row and the call; call end; the retention sweep;
//! restart recovery; downloads with Range. (Socket.IO notices, the unwritable
//! directory reaching a ringing invitee among them, are in
//! `tests/socketio/recording.test.mjs`.)
//!
//! Rows and files that only the SFU's recorder would make (a running recording, a
//! completed file) are made here through the store and the recording service's
//! report handler, so these tests do not need media; `a_recording_starts_and_stops`
//! is the one that needs the recorder itself.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use common::{Backend, Harness, raw, raw_with_headers};
use huddle::calls::model::{CallId, UserId};
use huddle::config::Config;
use huddle::media::RecordingReport;
use huddle::recordings::Recording;
use rooms::PeerId;
use rooms::record::{
    RecordedTrack, RecordingEvent, RecordingResult, StopReason, TrackKind, spool_path,
};

const NODE: &str = "recording-test-node";

/// A folder of the test's own, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("huddle-rec-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("scratch folder");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A server recording into `dir` with `extra` settings.
async fn server(backend: Backend, dir: &Path, extra: &[&str]) -> Harness {
    let dir = dir.to_string_lossy().into_owned();
    let mut args = vec!["--recordings-dir", dir.as_str(), "--node-id", NODE];
    args.extend_from_slice(extra);
    Harness::start_with(backend, &args).await
}

/// A request with an admin token.
async fn as_admin(h: &Harness, method: Method, path: &str, user: &str) -> (StatusCode, Value) {
    let headers = [
        ("authorization", format!("Bearer {}", h.admin_token(user))),
        ("content-type", "application/json".to_owned()),
    ];
    let (status, body) = raw(h.addr(), method, path, &headers, b"{}".to_vec()).await;
    (status, serde_json::from_slice(&body).expect("JSON"))
}

/// `user` asks to start recording `call` (no body).
async fn start_as(h: &Harness, call: &str, user: &str) -> (StatusCode, Value) {
    h.post(
        &format!("/api/v1/calls/{call}/recording/start"),
        user,
        json!({}),
    )
    .await
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("(none)")
}

/// A `recording` row for `call`, as a start that reached the plane leaves it.
async fn running(h: &Harness, call: &str, by: &str) -> Recording {
    let call: CallId = call.parse().expect("call id");
    let r = Recording::new(call, &UserId(by.into()), NODE, h.clock_now());
    let store = h.server.state.service.store();
    assert!(store.insert_recording(&r).await.expect("insert"));
    r
}

/// A completed recording of `call` whose file holds `bytes`, made as the recorder's
/// reports would make it.
async fn completed(h: &Harness, dir: &Path, call: &str, bytes: &[u8]) -> Recording {
    let r = running(h, call, "alice").await;
    let path = dir.join(r.relative_path());
    std::fs::create_dir_all(path.parent().expect("folder")).expect("folder");
    std::fs::write(&path, bytes).expect("file");
    report(
        h,
        &r,
        RecordingEvent::Stopped {
            reason: StopReason::Asked,
        },
    )
    .await;
    let result = RecordingResult {
        path,
        size: bytes.len() as u64,
        duration: Duration::from_millis(6_500),
        tracks: vec![RecordedTrack {
            peer: PeerId("alice".into()),
            kind: TrackKind::Audio,
            source: rooms::Source::Microphone,
            codec: "audio/opus".into(),
            start: Duration::from_millis(20),
            end: Duration::from_millis(6_480),
            frames: 323,
        }],
        dropped_frames: 0,
    };
    report(h, &r, RecordingEvent::Completed(result)).await;
    stored(h, &r).await
}

async fn report(h: &Harness, r: &Recording, event: RecordingEvent) {
    h.server
        .state
        .recordings
        .on_report(RecordingReport {
            call: r.call_id,
            id: r.id.to_string(),
            event,
        })
        .await
        .expect("report applied");
}

async fn stored(h: &Harness, r: &Recording) -> Recording {
    h.server
        .state
        .service
        .store()
        .recording(r.id)
        .await
        .expect("read")
        .expect("the row")
}

/// Starts an `sfu` call from alice to `invitees` and lets bob answer.
async fn call_with_bob(h: &Harness, invitees: &[&str]) -> String {
    let call = h.start_call("alice", "video", invitees).await;
    let (status, body) = h.join(&call, "bob").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    call
}

trait Now {
    fn clock_now(&self) -> chrono::DateTime<chrono::Utc>;
}

impl Now for Harness {
    fn clock_now(&self) -> chrono::DateTime<chrono::Utc> {
        use huddle::clock::Clock;
        self.clock.now()
    }
}

/// Runs each `async fn name(backend)` as `sqlite::name` and `postgres::name`.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test] async fn $name() { super::$name(super::Backend::Sqlite).await })*
        }
        mod postgres {
            $(#[tokio::test] async fn $name() { super::$name(super::Backend::Postgres).await })*
        }
    };
}

on_both_backends!(
    outsiders_and_never_joined_members_reach_nothing,
    the_policy_decides_who_records,
    the_format_is_checked,
    one_recording_at_a_time,
    reports_move_the_row_and_the_call,
    a_deleted_recording_is_gone,
    downloads_serve_ranges,
    the_list_pages_and_filters,
    an_unwritable_directory_fails_the_recording_not_the_call,
    a_recording_stops_when_its_call_ends,
    a_restart_finishes_unfinished_recordings,
    p2p_calls_cannot_be_recorded,
    retention_deletes_old_recordings,
    a_recording_starts_and_stops,
);

async fn outsiders_and_never_joined_members_reach_nothing(backend: Backend) {
    let dir = Scratch::new();
    let h = server(backend, &dir.0, &[]).await;
    let call = call_with_bob(&h, &["bob", "dave"]).await;
    let r = completed(&h, &dir.0, &call, b"webm").await;
    let base = format!("/api/v1/calls/{call}/recording");
    let download = format!("{base}?download=true&recordingId={}", r.id);
    for (method, path) in [
        (Method::POST, format!("{base}/start")),
        (Method::POST, format!("{base}/stop")),
        (Method::GET, base.clone()),
        (Method::GET, download.clone()),
        (Method::DELETE, base.clone()),
    ] {
        let (status, body) = h.call(method.clone(), &path, Some("carol"), None).await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::FORBIDDEN, "NOT_A_MEMBER"),
            "{method} {path}: {body}"
        );
    }
    // dave is rung but never joined: he is told of recordings, and cannot fetch them.
    for path in [&base, &download] {
        let (status, body) = h.get(path, "dave").await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::FORBIDDEN, "FORBIDDEN"),
            "{body}"
        );
    }
    let (status, body) = h.get("/api/v1/calls/recordings", "dave").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["recordings"], json!([]));
    // No such call.
    let nowhere = format!("/api/v1/calls/{}/recording", uuid::Uuid::new_v4());
    let (status, body) = h.get(&nowhere, "alice").await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::NOT_FOUND, "CALL_NOT_FOUND")
    );
    let (status, body) = h.get(&format!("{base}?recordingId=nope"), "alice").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    // An admin reads any call's recordings.
    let (status, body) = as_admin(&h, Method::GET, &base, "root").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["recordings"][0]["id"], json!(r.id));
    h.finish().await;
}

async fn the_policy_decides_who_records(backend: Backend) {
    // Starting reaches the disk only for those the policy lets through; an unwritable
    // directory makes that visible (500 RECORDING_FAILED) without a recorder.
    let scratch = Scratch::new();
    std::fs::write(scratch.0.join("file"), b"x").expect("a file");
    let dir = scratch.0.join("file").join("sub");
    for (policy, allowed, refused) in [
        ("initiator", "alice", "bob"),
        ("member", "bob", "dave"),
        ("admin", "root", "alice"),
    ] {
        let h = server(backend, &dir, &["--recording-policy", policy]).await;
        let call = call_with_bob(&h, &["bob", "dave"]).await;
        let start = format!("/api/v1/calls/{call}/recording/start");
        let (status, body) = h.post(&start, refused, json!({})).await;
        let expected = if refused == "dave" {
            // Ringing, not joined: not in the call yet.
            (StatusCode::CONFLICT, "NOT_IN_CALL")
        } else {
            (StatusCode::FORBIDDEN, "FORBIDDEN")
        };
        assert_eq!((status, code(&body)), expected, "{policy}: {body}");
        let (status, body) = if allowed == "root" {
            // An admin must be in the call too.
            let (status, body) = as_admin(&h, Method::POST, &start, "root").await;
            assert_eq!(
                (status, code(&body)),
                (StatusCode::FORBIDDEN, "NOT_A_MEMBER")
            );
            let (status, body) = h.post(&start, "bob", json!({})).await;
            assert_eq!((status, code(&body)), (StatusCode::FORBIDDEN, "FORBIDDEN"));
            as_admin(&h, Method::POST, &start, "alice").await
        } else {
            h.post(&start, allowed, json!({})).await
        };
        assert_eq!(
            (status, code(&body)),
            (StatusCode::INTERNAL_SERVER_ERROR, "RECORDING_FAILED"),
            "{policy}: {body}"
        );
        // recordingEnabled at start is the initiator's, under the same policy.
        let (status, body) = h
            .post(
                "/api/v1/calls/start",
                "alice",
                json!({ "type": "audio", "participantIds": ["erin"], "recordingEnabled": true }),
            )
            .await;
        if policy == "admin" {
            assert_eq!((status, code(&body)), (StatusCode::FORBIDDEN, "FORBIDDEN"));
        } else {
            // The call starts; its recording failed (the directory), and said so.
            assert_eq!(status, StatusCode::OK, "{body}");
            let id = body["data"]["call"]["id"].as_str().expect("id").to_owned();
            assert_eq!(body["data"]["call"]["recordingEnabled"], json!(false));
            let (_, list) = h
                .get(&format!("/api/v1/calls/{id}/recording"), "alice")
                .await;
            assert_eq!(
                list["data"]["recordings"][0]["status"],
                json!("failed"),
                "{list}"
            );
        }
        h.finish().await;
    }
}

async fn the_format_is_checked(backend: Backend) {
    let dir = Scratch::new();
    let h = server(backend, &dir.0, &[]).await;
    let call = call_with_bob(&h, &["bob"]).await;
    let start = format!("/api/v1/calls/{call}/recording/start");
    for body in [json!({ "format": "mp4" }), json!({ "format": 5 })] {
        let (status, answer) = h.post(&start, "alice", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        assert_eq!(answer["error"]["field"], json!("format"), "{answer}");
    }
    let (status, body) = h.get("/api/v1/calls/recordings?format=mp4", "alice").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    // Nothing was stored by a refused request.
    let (_, list) = h
        .get(&format!("/api/v1/calls/{call}/recording"), "alice")
        .await;
    assert_eq!(list["data"]["recordings"], json!([]));
    h.finish().await;
}

async fn one_recording_at_a_time(backend: Backend) {
    let dir = Scratch::new();
    let h = server(backend, &dir.0, &[]).await;
    let call = call_with_bob(&h, &["bob"]).await;
    let r = running(&h, &call, "alice").await;
    let base = format!("/api/v1/calls/{call}/recording");
    let (status, body) = h.post(&format!("{base}/start"), "alice", json!({})).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::CONFLICT, "RECORDING_ACTIVE")
    );
    // A running recording cannot be deleted.
    let (status, body) = h.call(Method::DELETE, &base, Some("alice"), None).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::CONFLICT, "RECORDING_ACTIVE")
    );
    let (status, body) = h.post(&format!("{base}/stop"), "alice", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let stopped = &body["data"]["recording"];
    assert_eq!(stopped["id"], json!(r.id));
    assert_eq!(stopped["status"], json!("processing"));
    assert_eq!(stopped["reason"], json!("asked"));
    assert_eq!(stopped["url"], Value::Null);
    let (status, body) = h.post(&format!("{base}/stop"), "alice", json!({})).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::NOT_FOUND, "RECORDING_NOT_FOUND")
    );
    // The room's own stop report, coming after, changes nothing.
    report(
        &h,
        &r,
        RecordingEvent::Stopped {
            reason: StopReason::Limit,
        },
    )
    .await;
    assert_eq!(stored(&h, &r).await.reason.as_deref(), Some("asked"));
    h.finish().await;
}

async fn reports_move_the_row_and_the_call(backend: Backend) {
    let dir = Scratch::new();
    let h = server(backend, &dir.0, &[]).await;
    let call = call_with_bob(&h, &["bob"]).await;
    let r = completed(&h, &dir.0, &call, b"0123456789").await;
    assert_eq!(r.size, Some(10));
    assert_eq!(r.duration, Some(6.5));
    assert_eq!(r.reason.as_deref(), Some("asked"));
    let (_, body) = h
        .get(&format!("/api/v1/calls/{call}/recording"), "bob")
        .await;
    let shown = &body["data"]["recordings"][0];
    let url = format!(
        "/api/v1/calls/{call}/recording?download=true&recordingId={}",
        r.id
    );
    assert_eq!(shown["status"], json!("completed"), "{body}");
    assert_eq!(shown["url"], json!(url));
    assert_eq!(shown["format"], json!("webm"));
    assert_eq!(
        shown["tracks"],
        json!([{ "userId": "alice", "kind": "audio", "source": "microphone",
                 "codec": "audio/opus", "start": 0.02, "end": 6.48, "frames": 323 }])
    );
    let call_now = h.call_of(&call, "alice").await;
    assert_eq!(call_now["call"]["recordingUrl"], json!(url));
    assert_eq!(call_now["call"]["recordingEnabled"], json!(false));

    // A recording that fails before it is stopped is stopped for `failed`.
    let failing = running(&h, &call, "alice").await;
    report(
        &h,
        &failing,
        RecordingEvent::Failed {
            error: "disk full".into(),
        },
    )
    .await;
    let failed = stored(&h, &failing).await;
    assert_eq!(failed.status.as_str(), "failed");
    assert_eq!(failed.reason.as_deref(), Some("failed"));
    assert_eq!(failed.error.as_deref(), Some("disk full"));
    // The latest completed recording still gives the call its URL.
    let call_now = h.call_of(&call, "alice").await;
    assert_eq!(call_now["call"]["recordingUrl"], json!(url));
    h.finish().await;
}

async fn a_deleted_recording_is_gone(backend: Backend) {
    let dir = Scratch::new();
    let h = server(backend, &dir.0, &[]).await;
    let call = call_with_bob(&h, &["bob"]).await;
    let r = completed(&h, &dir.0, &call, b"webm bytes").await;
    let file = dir.0.join(r.relative_path());
    std::fs::write(spool_path(&file), b"left over").expect("a spool");
    let base = format!("/api/v1/calls/{call}/recording");
    // bob may download, but under the initiator policy not delete.
    let (status, body) = h.call(Method::DELETE, &base, Some("bob"), None).await;
    assert_eq!((status, code(&body)), (StatusCode::FORBIDDEN, "FORBIDDEN"));
    let (status, body) = h
        .call(
            Method::DELETE,
            &format!("{base}?recordingId={}", uuid::Uuid::new_v4()),
            Some("alice"),
            None,
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::NOT_FOUND, "RECORDING_NOT_FOUND")
    );
    let (status, body) = h
        .call(
            Method::DELETE,
            &format!("{base}?recordingId={}", r.id),
            Some("alice"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["recordings"][0]["status"], json!("deleted"));
    assert!(!file.exists() && !spool_path(&file).exists());
    assert_eq!(stored(&h, &r).await.status.as_str(), "deleted");
    let (status, body) = h.get(&format!("{base}?download=true"), "alice").await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::NOT_FOUND, "RECORDING_NOT_FOUND")
    );
    let (_, body) = h.get(&base, "alice").await;
    assert_eq!(body["data"]["recordings"][0]["status"], json!("deleted"));
    assert_eq!(body["data"]["recordings"][0]["url"], Value::Null);
    let call_now = h.call_of(&call, "alice").await;
    assert_eq!(call_now["call"]["recordingUrl"], Value::Null);
    h.finish().await;
}

async fn downloads_serve_ranges(backend: Backend) {
    let dir = Scratch::new();
    let h = server(backend, &dir.0, &[]).await;
    let call = call_with_bob(&h, &["bob"]).await;
    let bytes: Vec<u8> = (0..=255u8).cycle().take(300_000).collect();
    let r = completed(&h, &dir.0, &call, &bytes).await;
    let path = format!("/api/v1/calls/{call}/recording?download=true");
    let auth = ("authorization", format!("Bearer {}", h.token("bob")));
    let addr = h.addr();
    let fetch = |range: Option<&str>| {
        let mut headers = vec![auth.clone()];
        if let Some(range) = range {
            headers.push(("range", range.to_owned()));
        }
        let path = path.clone();
        async move { raw_with_headers(addr, Method::GET, &path, &headers, Vec::new()).await }
    };
    let (status, headers, body) = fetch(None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "video/webm");
    assert_eq!(headers["accept-ranges"], "bytes");
    assert_eq!(headers["content-length"], "300000");
    assert_eq!(body.as_ref(), bytes.as_slice());
    let (status, headers, body) = fetch(Some("bytes=1000-1999")).await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(headers["content-range"], "bytes 1000-1999/300000");
    assert_eq!(headers["content-length"], "1000");
    assert_eq!(body.as_ref(), &bytes[1000..2000]);
    let (status, headers, body) = fetch(Some("bytes=-10")).await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(headers["content-range"], "bytes 299990-299999/300000");
    assert_eq!(body.as_ref(), &bytes[299_990..]);
    let (status, headers, _) = fetch(Some("bytes=300000-")).await;
    assert_eq!(status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(headers["content-range"], "bytes */300000");
    // By id too; a recording that is not completed is not served.
    let by_id = format!("{path}&recordingId={}", r.id);
    let (status, _, body) = raw_with_headers(
        h.addr(),
        Method::GET,
        &by_id,
        std::slice::from_ref(&auth),
        Vec::new(),
    )
    .await;
    assert_eq!((status, body.len()), (StatusCode::OK, 300_000));
    let other = running(&h, &call, "alice").await;
    let (status, body) = h
        .get(&format!("{path}&recordingId={}", other.id), "bob")
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::NOT_FOUND, "RECORDING_NOT_FOUND")
    );
    h.finish().await;
}

async fn the_list_pages_and_filters(backend: Backend) {
    let dir = Scratch::new();
    let h = server(backend, &dir.0, &[]).await;
    check_the_list(&h).await;
    h.finish().await;
}

async fn check_the_list(h: &Harness) {
    let first = call_with_bob(h, &["bob"]).await;
    let second = h.start_call("carol", "audio", &["alice"]).await;
    let day = chrono::Duration::days(1);
    let mut ids = Vec::new();
    for (call, days_ago) in [(&first, 3), (&first, 2), (&second, 1)] {
        let mut r = Recording::new(
            call.parse().expect("id"),
            &UserId("alice".into()),
            NODE,
            h.clock_now() - day * days_ago,
        );
        r.id = uuid::Uuid::new_v4();
        let store = h.server.state.service.store();
        assert!(store.insert_recording(&r).await.expect("insert"));
        report(
            h,
            &r,
            RecordingEvent::Stopped {
                reason: StopReason::Asked,
            },
        )
        .await;
        ids.push(json!(r.id));
    }
    let page = |query: &str, user: &'static str| {
        let path = format!("/api/v1/calls/recordings{query}");
        async move {
            let (status, body) = h.get(&path, user).await;
            assert_eq!(status, StatusCode::OK, "{path}: {body}");
            let got: Vec<Value> = body["data"]["recordings"]
                .as_array()
                .expect("recordings")
                .iter()
                .map(|r| r["id"].clone())
                .collect();
            (got, body["data"]["pagination"].clone())
        }
    };
    // alice never joined carol's call (still ringing): only the first call's.
    let (got, pagination) = page("", "alice").await;
    assert_eq!(got, vec![ids[1].clone(), ids[0].clone()]);
    assert_eq!(pagination, json!({ "limit": 50, "offset": 0, "total": 2 }));
    let (got, pagination) = page("?page=2&limit=1", "bob").await;
    assert_eq!(got, vec![ids[0].clone()]);
    assert_eq!(pagination, json!({ "limit": 1, "offset": 1, "total": 2 }));
    let (got, _) = page("", "carol").await;
    assert_eq!(got, vec![ids[2].clone()]);
    // Dates: RFC 3339 or whole days (UTC).
    let from = (h.clock_now() - day * 2 - chrono::Duration::minutes(1)).to_rfc3339();
    let query = format!("?dateFrom={}&format=webm", urlencode(&from));
    let (got, _) = page(&query, "alice").await;
    assert_eq!(got, vec![ids[1].clone()]);
    let before = (h.clock_now() - day * 3).date_naive().format("%Y-%m-%d");
    let (got, _) = page(&format!("?dateTo={before}"), "alice").await;
    assert_eq!(got, vec![ids[0].clone()]);
    // An admin sees everyone's.
    let (status, body) = as_admin(h, Method::GET, "/api/v1/calls/recordings", "root").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"]["pagination"]["total"], json!(3));
    for bad in [
        "?page=0",
        "?limit=500",
        "?dateFrom=yesterday",
        "?dateFrom=2026-02-02&dateTo=2026-01-31",
    ] {
        let (status, body) = h
            .get(&format!("/api/v1/calls/recordings{bad}"), "alice")
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }
}

fn urlencode(text: &str) -> String {
    text.replace('+', "%2B").replace(':', "%3A")
}

async fn an_unwritable_directory_fails_the_recording_not_the_call(backend: Backend) {
    // Tests run as root: permission bits would not stop the writes, a file would.
    let scratch = Scratch::new();
    std::fs::write(scratch.0.join("file"), b"x").expect("a file");
    let h = server(backend, &scratch.0.join("file").join("sub"), &[]).await;
    let call = call_with_bob(&h, &["bob", "dave"]).await;
    let (status, body) = start_as(&h, &call, "alice").await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::INTERNAL_SERVER_ERROR, "RECORDING_FAILED")
    );
    let (_, list) = h
        .get(&format!("/api/v1/calls/{call}/recording"), "bob")
        .await;
    let failed = &list["data"]["recordings"][0];
    assert_eq!(failed["status"], json!("failed"), "{list}");
    assert_eq!(failed["reason"], json!("failed"));
    assert!(failed["endedAt"].is_string());
    let now = h.call_of(&call, "alice").await;
    assert_eq!(now["call"]["state"], json!("connected"));
    assert_eq!(now["call"]["recordingEnabled"], json!(false));
    // Another try may be made: nothing is left recording.
    let (status, body) = start_as(&h, &call, "alice").await;
    assert_eq!(code(&body), "RECORDING_FAILED", "{status}");
    h.finish().await;
}

async fn a_recording_stops_when_its_call_ends(backend: Backend) {
    let dir = Scratch::new();
    let h = server(backend, &dir.0, &[]).await;
    let call = call_with_bob(&h, &["bob"]).await;
    let r = running(&h, &call, "alice").await;
    let (status, body) = h.end(&call, "alice").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let stopped = eventually(&h, &r, |r| r.status.as_str() != "recording").await;
    assert_eq!(stopped.status.as_str(), "processing");
    assert_eq!(stopped.reason.as_deref(), Some("call_ended"));
    assert!(stopped.ended_at.is_some());
    h.finish().await;
}

/// The row once `done` holds (within 10 s).
async fn eventually(h: &Harness, r: &Recording, done: impl Fn(&Recording) -> bool) -> Recording {
    for _ in 0..200 {
        let now = stored(h, r).await;
        if done(&now) {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "recording {} never got there: {:?}",
        r.id,
        stored(h, r).await
    );
}

async fn a_restart_finishes_unfinished_recordings(backend: Backend) {
    let dir = Scratch::new();
    let mut h = server(backend, &dir.0, &[]).await;
    let call = call_with_bob(&h, &["bob"]).await;
    // As a process killed mid-recording leaves it: the row, and a spool.
    let r = running(&h, &call, "alice").await;
    let file = dir.0.join(r.relative_path());
    std::fs::create_dir_all(file.parent().expect("folder")).expect("folder");
    std::fs::write(spool_path(&file), b"not a spool the recorder wrote").expect("spool");
    h.restart().await;
    // Stopped with the process; then written from the spool (completed) or, as this
    // spool is garbage, failed: never left recording.
    let done = eventually(&h, &r, |r| {
        matches!(r.status.as_str(), "completed" | "failed")
    })
    .await;
    assert_eq!(done.reason.as_deref(), Some("failed"));
    let now = h.call_of(&call, "alice").await;
    assert_eq!(now["call"]["recordingEnabled"], json!(false));
    // Another node's rows are that node's to finish.
    let mut theirs = Recording::new(
        call.parse().expect("id"),
        &UserId("alice".into()),
        "another-node",
        h.clock_now(),
    );
    theirs.id = uuid::Uuid::new_v4();
    h.server
        .state
        .service
        .store()
        .insert_recording(&theirs)
        .await
        .expect("insert");
    h.restart().await;
    assert_eq!(stored(&h, &theirs).await.status.as_str(), "recording");
    h.finish().await;
}

async fn p2p_calls_cannot_be_recorded(backend: Backend) {
    let dir = Scratch::new();
    let h = server(backend, &dir.0, &[]).await;
    let (status, body) = h
        .post(
            "/api/v1/calls/start",
            "alice",
            json!({ "type": "audio", "participantIds": ["bob"], "mediaMode": "p2p" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let call = body["data"]["call"]["id"].as_str().expect("id");
    let (status, body) = start_as(&h, call, "alice").await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::CONFLICT, "RECORDING_UNAVAILABLE")
    );
    let (_, list) = h
        .get(&format!("/api/v1/calls/{call}/recording"), "alice")
        .await;
    assert_eq!(list["data"]["recordings"], json!([]));
    // Asked at start, nothing starts (nobody is rung).
    let (status, body) = h
        .post(
            "/api/v1/calls/start",
            "alice",
            json!({ "type": "audio", "participantIds": ["carol"], "mediaMode": "p2p",
                    "recordingEnabled": true }),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::CONFLICT, "RECORDING_UNAVAILABLE")
    );
    let (_, active) = h.get("/api/v1/calls/active", "carol").await;
    assert_eq!(active["data"]["calls"], json!([]));
    h.finish().await;
}

async fn retention_deletes_old_recordings(backend: Backend) {
    let dir = Scratch::new();
    let h = server(backend, &dir.0, &["--recording-retention-days", "2"]).await;
    let call = call_with_bob(&h, &["bob"]).await;
    let r = completed(&h, &dir.0, &call, b"old").await;
    let recordings = &h.server.state.recordings;
    h.clock.advance(chrono::Duration::days(1));
    assert_eq!(recordings.expire().await.expect("sweep"), 0);
    h.clock
        .advance(chrono::Duration::days(1) + chrono::Duration::seconds(1));
    assert_eq!(recordings.expire().await.expect("sweep"), 1);
    assert_eq!(stored(&h, &r).await.status.as_str(), "deleted");
    assert!(!dir.0.join(r.relative_path()).exists());
    assert_eq!(recordings.expire().await.expect("sweep"), 0);
    h.finish().await;
}

/// Needs the SFU's recorder (rooms::record): a recording asked before anyone
/// publishes starts the room, and stops with nothing recorded.
async fn a_recording_starts_and_stops(backend: Backend) {
    let dir = Scratch::new();
    let h = server(backend, &dir.0, &[]).await;
    let call = call_with_bob(&h, &["bob"]).await;
    let base = format!("/api/v1/calls/{call}/recording");
    let (status, body) = h.post(&format!("{base}/start"), "alice", json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let started = &body["data"]["recording"];
    assert_eq!(started["status"], json!("recording"));
    assert_eq!(started["reason"], Value::Null);
    assert_eq!(
        h.call_of(&call, "bob").await["call"]["recordingEnabled"],
        json!(true)
    );
    let (status, body) = h.post(&format!("{base}/stop"), "alice", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["recording"]["status"], json!("processing"));
    assert_eq!(
        h.call_of(&call, "bob").await["call"]["recordingEnabled"],
        json!(false)
    );
    let id: uuid::Uuid = serde_json::from_value(started["id"].clone()).expect("id");
    let r = Recording {
        id,
        ..Recording::new(
            call.parse().expect("id"),
            &UserId("alice".into()),
            NODE,
            h.clock_now(),
        )
    };
    let done = eventually(&h, &r, |r| r.status.as_str() == "failed").await;
    assert_eq!(done.error.as_deref(), Some("no media was recorded"));
    h.finish().await;
}

#[test]
fn bad_recording_settings_are_one_line_errors() {
    let parse = |flags: &[&str]| {
        let mut args = vec!["huddle"];
        args.extend_from_slice(flags);
        Config::from_args(args)
    };
    for (flags, variable) in [
        (&["--recording-policy", "everyone"][..], "RECORDING_POLICY"),
        (
            &["--recording-retention-days", "99999"][..],
            "RECORDING_RETENTION_DAYS",
        ),
        (&["--recording-max-mb", "0"][..], "RECORDING_MAX_MB"),
        (
            &["--recording-max-minutes", "x"][..],
            "RECORDING_MAX_MINUTES",
        ),
        (&["--recordings-dir", ""][..], "RECORDINGS_DIR"),
    ] {
        let error = parse(flags).expect_err("refused");
        assert!(
            error.contains(variable) && !error.contains('\n'),
            "{flags:?}: {error}"
        );
    }
    let config = parse(&[]).expect("defaults");
    let settings = config.recordings("n".into());
    assert!(settings.dir.is_absolute() && settings.dir.ends_with("recordings"));
    assert_eq!(settings.max_bytes, 2048 * 1024 * 1024);
    assert_eq!(settings.max_duration, Duration::from_secs(240 * 60));
    assert!(settings.retention.is_none());
}
