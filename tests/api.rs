//! The REST API over real HTTP, on SQLite and on PostgreSQL: every endpoint's
//! success and failure paths, and the call lifecycle as clients see it.

mod common;

use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use common::{Backend, Harness, raw, raw_with_headers};
use huddle::auth::{Claims, JwtKey};
use huddle::calls::model::UserId;
use huddle::clock::Clock;

/// Asserts the JSON error shape and returns its code.
fn error_code(status: StatusCode, body: &Value, expected: StatusCode) -> String {
    assert_eq!(status, expected, "{body}");
    assert_eq!(body["success"], false, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    body["error"]["code"]
        .as_str()
        .expect("error code")
        .to_owned()
}

fn state_of(call: &Value, user: &str) -> String {
    call["participants"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["userId"] == user))
        .map(|p| p["connectionState"].as_str().unwrap_or_default().to_owned())
        .unwrap_or_else(|| panic!("{user} is not in {call}"))
}

/// One request on a new connection; the answer's status, headers and JSON body.
async fn send(
    h: &Harness,
    method: Method,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> (StatusCode, hyper::HeaderMap, Value) {
    let (status, head, bytes) =
        raw_with_headers(h.addr(), method, path, headers, body.to_vec()).await;
    let json = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!(
            "{path} answered {status} with non-JSON ({e}): {:?}",
            String::from_utf8_lossy(&bytes)
        )
    });
    (status, head, json)
}

fn bearer(token: &str) -> (&'static str, String) {
    ("authorization", format!("Bearer {token}"))
}

fn content_type(value: &str) -> (&'static str, String) {
    ("content-type", value.to_owned())
}

/// A token signed with the server's secret, carrying these exact claims.
fn token_with_claims(h: &Harness, sub: &str, name: Option<&str>) -> String {
    let now = h.clock.now().timestamp();
    JwtKey::new(common::SECRET.as_bytes()).sign(&Claims {
        sub: sub.into(),
        exp: now + 3600,
        iat: None,
        nbf: None,
        name: name.map(str::to_owned),
        role: None,
    })
}

/// Calls stored, all users together (an admin's statistics).
async fn calls_stored(h: &Harness) -> i64 {
    let headers = [bearer(&h.admin_token("ops"))];
    let (status, _, body) = send(h, Method::GET, "/api/v1/calls/stats", &headers, b"").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["data"]["totalCalls"].as_i64().expect("totalCalls")
}

/// The Prometheus text of `/metrics`, which must answer 200.
async fn scrape(h: &Harness) -> String {
    let (status, bytes) = raw(h.addr(), Method::GET, "/metrics", &[], Vec::new()).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    String::from_utf8_lossy(&bytes).into_owned()
}

fn has_line(text: &str, line: &str) -> bool {
    text.lines().any(|l| l == line)
}

async fn history_total(h: &Harness, user: &str) -> i64 {
    let (status, body) = h.get("/api/v1/calls/history", user).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["data"]["pagination"]["total"].as_i64().expect("total")
}

on_both_backends! {
    async fn health_needs_no_token_and_reports_the_database(h) {
        let (status, body) = h.call(Method::GET, "/health", None, None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["status"], "ok");
        assert_eq!(body["database"]["status"], "ok");
        assert!(body["timestamp"].is_string());
    }

    async fn every_call_endpoint_refuses_a_missing_or_bad_token(h) {
        let call = h.start_call("alice", "video", &["bob"]).await;
        let endpoints = [
            (Method::POST, "/api/v1/calls/start".to_owned()),
            (Method::POST, format!("/api/v1/calls/{call}/join")),
            (Method::POST, format!("/api/v1/calls/{call}/end")),
            (Method::POST, format!("/api/v1/calls/{call}/token")),
            (Method::GET, format!("/api/v1/calls/{call}")),
            (Method::GET, "/api/v1/calls/history".to_owned()),
            (Method::GET, "/api/v1/calls/active".to_owned()),
            (Method::PATCH, format!("/api/v1/calls/{call}/participant")),
            (Method::GET, "/api/v1/calls/stats".to_owned()),
            (Method::GET, "/monitoring/metrics".to_owned()),
        ];
        let forged = huddle::auth::JwtKey::new(b"not the server's secret").sign(&huddle::auth::Claims {
            sub: "alice".into(), exp: i64::MAX / 2, iat: None, nbf: None, name: None, role: None,
        });
        for (method, path) in endpoints {
            for auth in [None, Some("Bearer garbage".to_owned()), Some(format!("Bearer {forged}")), Some("Basic YTpi".to_owned())] {
                let headers: Vec<(&str, String)> = auth.iter().map(|a| ("authorization", a.clone())).collect();
                let (status, head, bytes) = raw_with_headers(h.addr(), method.clone(), &path, &headers, Vec::new()).await;
                let body: Value = serde_json::from_slice(&bytes).expect("JSON error");
                assert_eq!(error_code(status, &body, StatusCode::UNAUTHORIZED), "UNAUTHORIZED", "{method} {path}");
                assert_eq!(head.get("www-authenticate").map(|v| v.to_str().unwrap_or("")), Some("Bearer"));
            }
        }
        assert_eq!(state_of(&h.call_of(&call, "alice").await, "bob"), "invited", "nothing changed");
    }

    async fn an_expired_token_is_refused_by_the_servers_clock(h) {
        let token = h.token("alice");
        h.advance_and_sweep(86_400 + 31).await;
        let headers = [("authorization", format!("Bearer {token}"))];
        let (status, bytes) = raw(h.addr(), Method::GET, "/api/v1/calls/active", &headers, Vec::new()).await;
        let body: Value = serde_json::from_slice(&bytes).expect("JSON");
        assert_eq!(error_code(status, &body, StatusCode::UNAUTHORIZED), "UNAUTHORIZED");
        assert!(body["error"]["message"].as_str().unwrap_or_default().contains("expired"));
    }

    async fn start_rings_the_invitees_and_returns_connection_details(h) {
        let (status, body) = h.post("/api/v1/calls/start", "alice", json!({
            "type": "video", "participantIds": ["bob"], "chatId": "chat-1", "audioEnabled": false
        })).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["success"], true);
        let data = &body["data"];
        assert_eq!(data["call"]["state"], "ringing");
        assert_eq!(data["call"]["type"], "video");
        assert_eq!(data["call"]["initiatorId"], "alice");
        assert_eq!(data["call"]["chatId"], "chat-1");
        assert_eq!(data["call"]["isGroup"], false);
        assert_eq!(data["call"]["maxParticipants"], common::MAX_PARTICIPANTS);
        assert!(data["call"]["roomId"].as_str().unwrap_or_default().starts_with("room_"));
        h.assert_ice_servers_for(&data["iceServers"], "alice");
        assert!(data.as_object().is_some_and(|d| d.contains_key("token")));
        let alice = &data["participants"][0];
        assert_eq!((alice["userId"].as_str(), alice["role"].as_str()), (Some("alice"), Some("initiator")));
        assert_eq!(alice["connectionState"], "connected");
        assert_eq!(alice["audioEnabled"], false);
        assert_eq!(alice["displayName"], "alice name");
        assert_eq!(state_of(data, "bob"), "invited");
        let call = data["call"]["id"].as_str().unwrap_or_default();
        assert_eq!(h.call_of(call, "bob").await["call"]["state"], "ringing", "the invitee is a member");
    }

    async fn start_refuses_bad_requests_naming_the_field_and_creates_nothing(h) {
        let too_many: Vec<String> = (0..common::MAX_PARTICIPANTS).map(|i| format!("u{i}")).collect();
        let cases = [
            (json!({ "participantIds": ["bob"] }), "type"),
            (json!({ "type": "hologram", "participantIds": ["bob"] }), "type"),
            (json!({ "type": "video" }), "participantIds"),
            (json!({ "type": "video", "participantIds": "bob" }), "participantIds"),
            (json!({ "type": "video", "participantIds": ["bob", 7] }), "participantIds[1]"),
            (json!({ "type": "video", "participantIds": [] }), "participantIds"),
            (json!({ "type": "video", "participantIds": ["alice"] }), "participantIds"),
            (json!({ "type": "video", "participantIds": ["bob", "bob"] }), "participantIds"),
            (json!({ "type": "video", "participantIds": too_many }), "participantIds"),
            (json!({ "type": "video", "participantIds": ["x".repeat(129)] }), "participantIds[0]"),
            (json!({ "type": "video", "participantIds": [""] }), "participantIds[0]"),
            (json!({ "type": "video", "participantIds": ["bob"], "chatId": "c".repeat(200) }), "chatId"),
            (json!({ "type": "video", "participantIds": ["bob"], "videoEnabled": "yes" }), "videoEnabled"),
        ];
        for (body, field) in cases {
            let (status, answer) = h.post("/api/v1/calls/start", "alice", body.clone()).await;
            assert_eq!(error_code(status, &answer, StatusCode::BAD_REQUEST), "VALIDATION_ERROR", "{body}");
            assert_eq!(answer["error"]["field"], field, "{body} -> {answer}");
        }
        assert_eq!(history_total(&h, "alice").await, 0);
    }

    async fn malformed_oversized_and_non_json_bodies_are_refused(h) {
        let auth = ("authorization", format!("Bearer {}", h.token("alice")));
        let json_type = ("content-type", "application/json".to_owned());
        let send = |headers: Vec<(&'static str, String)>, body: Vec<u8>| {
            let addr = h.addr();
            async move {
                let (status, bytes) = raw(addr, Method::POST, "/api/v1/calls/start", &headers, body).await;
                (status, serde_json::from_slice::<Value>(&bytes).expect("JSON error"))
            }
        };
        let (status, body) = send(vec![auth.clone(), json_type.clone()], b"{\"type\": \"video\", ".to_vec()).await;
        assert_eq!(error_code(status, &body, StatusCode::BAD_REQUEST), "MALFORMED_JSON");
        let mut huge = br#"{"type":"video","participantIds":["bob"],"chatId":""#.to_vec();
        huge.extend(std::iter::repeat_n(b'x', huddle::api::BODY_LIMIT));
        huge.extend(br#""}"#);
        let (status, body) = send(vec![auth.clone(), json_type], huge).await;
        assert_eq!(error_code(status, &body, StatusCode::PAYLOAD_TOO_LARGE), "PAYLOAD_TOO_LARGE");
        let (status, body) = send(vec![auth, ("content-type", "text/plain".to_owned())], b"type=video".to_vec()).await;
        assert_eq!(error_code(status, &body, StatusCode::UNSUPPORTED_MEDIA_TYPE), "UNSUPPORTED_MEDIA_TYPE");
        assert_eq!(history_total(&h, "alice").await, 0);
        let (status, _) = h.call(Method::GET, "/health", None, None).await;
        assert_eq!(status, StatusCode::OK, "still serving");
    }

    async fn joining_connects_the_call_for_members_only(h) {
        let call = h.start_call("alice", "video", &["bob"]).await;
        let (status, body) = h.join(&call, "bob").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["data"]["call"]["state"], "connected");
        assert!(body["data"]["call"]["startedAt"].is_string());
        assert_eq!(state_of(&body["data"], "bob"), "connected");
        h.assert_ice_servers_for(&body["data"]["iceServers"], "bob");

        let (status, body) = h.join(&call, "bob").await;
        assert_eq!(error_code(status, &body, StatusCode::CONFLICT), "ALREADY_JOINED");
        let (status, body) = h.join(&call, "mallory").await;
        assert_eq!(error_code(status, &body, StatusCode::FORBIDDEN), "NOT_A_MEMBER");
        let (status, body) = h.join("00000000-0000-4000-8000-000000000000", "bob").await;
        assert_eq!(error_code(status, &body, StatusCode::NOT_FOUND), "CALL_NOT_FOUND");
        let (status, body) = h.join("not-a-uuid", "bob").await;
        assert_eq!(error_code(status, &body, StatusCode::BAD_REQUEST), "VALIDATION_ERROR");
        assert_eq!(body["error"]["field"], "callId");
    }

    async fn an_audio_call_joined_with_video_carries_none(h) {
        let call = h.start_call("alice", "audio", &["bob"]).await;
        let (status, body) = h.post(&format!("/api/v1/calls/{call}/join"), "bob", json!({ "videoEnabled": true })).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let bob = body["data"]["participants"].as_array().and_then(|ps| ps.iter().find(|p| p["userId"] == "bob")).cloned();
        assert_eq!(bob.map(|b| b["videoEnabled"].clone()), Some(json!(false)));
    }

    async fn an_invitee_ending_a_one_on_one_call_declines_it(h) {
        let call = h.start_call("alice", "video", &["bob"]).await;
        let (status, body) = h.end(&call, "bob").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["message"], "Call ended successfully");
        assert_eq!(body["data"]["call"]["endReason"], "declined");
        assert_eq!(state_of(&body["data"], "bob"), "declined");
        let (status, body) = h.join(&call, "bob").await;
        assert_eq!(error_code(status, &body, StatusCode::CONFLICT), "CALL_ENDED");
        let (status, body) = h.end(&call, "alice").await;
        assert_eq!(error_code(status, &body, StatusCode::CONFLICT), "CALL_ENDED");
    }

    async fn the_initiator_hanging_up_before_an_answer_cancels_the_call(h) {
        let call = h.start_call("alice", "video", &["bob", "carol"]).await;
        let (status, body) = h.end(&call, "alice").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["data"]["outcome"], "ended");
        assert_eq!(body["data"]["call"]["endReason"], "cancelled");
        assert_eq!(state_of(&body["data"], "carol"), "missed");
    }

    async fn a_group_call_continues_when_a_participant_leaves(h) {
        let call = h.start_call("alice", "video", &["bob", "carol"]).await;
        h.join(&call, "bob").await;
        h.join(&call, "carol").await;
        h.clock.advance(chrono::Duration::seconds(30));
        let (status, body) = h.end(&call, "carol").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["message"], "Left the call");
        assert_eq!(body["data"]["outcome"], "left");
        assert_eq!(body["data"]["call"]["state"], "connected");
        let carol = body["data"]["participants"].as_array().and_then(|ps| ps.iter().find(|p| p["userId"] == "carol")).cloned().unwrap_or_default();
        assert_eq!(carol["duration"], 30);
        assert!(carol["leftAt"].is_string());
        let (status, body) = h.end(&call, "carol").await;
        assert_eq!(error_code(status, &body, StatusCode::CONFLICT), "NOT_IN_CALL");

        let (status, body) = h.end(&call, "bob").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["data"]["call"]["state"], "ended", "alone, alice's call ends");
        assert_eq!(body["data"]["call"]["endReason"], "normal");
        assert_eq!(body["data"]["call"]["duration"], 30);
    }

    async fn end_reasons_are_checked_and_a_bad_one_changes_nothing(h) {
        let call = h.start_call("alice", "video", &["bob"]).await;
        h.join(&call, "bob").await;
        for reason in [json!("exploded"), json!("missed"), json!("max_duration"), json!(3)] {
            let (status, body) = h.post(&format!("/api/v1/calls/{call}/end"), "alice", json!({ "reason": reason })).await;
            assert_eq!(error_code(status, &body, StatusCode::BAD_REQUEST), "VALIDATION_ERROR", "{reason}");
            assert_eq!(body["error"]["field"], "reason");
        }
        assert_eq!(h.call_of(&call, "bob").await["call"]["state"], "connected");
        let (status, body) = h.post(&format!("/api/v1/calls/{call}/end"), "alice", json!({ "reason": "failed" })).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["data"]["call"]["endReason"], "failed");
        let (status, body) = h.end(&call, "mallory").await;
        assert_eq!(error_code(status, &body, StatusCode::FORBIDDEN), "NOT_A_MEMBER");
    }

    async fn call_details_are_for_members_only(h) {
        let call = h.start_call("alice", "audio", &["bob"]).await;
        let data = h.call_of(&call, "bob").await;
        assert_eq!(data["call"]["id"], call.as_str());
        assert_eq!(data["participants"].as_array().map(Vec::len), Some(2));
        let (status, body) = h.get(&format!("/api/v1/calls/{call}"), "mallory").await;
        assert_eq!(error_code(status, &body, StatusCode::FORBIDDEN), "NOT_A_MEMBER");
        let (status, body) = h.get("/api/v1/calls/00000000-0000-4000-8000-000000000000", "alice").await;
        assert_eq!(error_code(status, &body, StatusCode::NOT_FOUND), "CALL_NOT_FOUND");
    }

    async fn the_token_endpoint_serves_members_of_live_calls(h) {
        let call = h.start_call("alice", "video", &["bob"]).await;
        let path = format!("/api/v1/calls/{call}/token");
        let (status, body) = h.post(&path, "bob", json!({})).await;
        assert_eq!(
            error_code(status, &body, StatusCode::CONFLICT),
            "NOT_IN_CALL",
            "a ringing invitee gets media credentials by answering"
        );
        h.join(&call, "bob").await;
        let (status, body) = h.post(&path, "bob", json!({})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        h.assert_ice_servers_for(&body["data"]["iceServers"], "bob");
        assert!(body["data"].as_object().is_some_and(|d| d.contains_key("token")));
        let (status, body) = h.post(&path, "mallory", json!({})).await;
        assert_eq!(error_code(status, &body, StatusCode::FORBIDDEN), "NOT_A_MEMBER");
        h.end(&call, "alice").await;
        let (status, body) = h.post(&path, "bob", json!({})).await;
        assert_eq!(error_code(status, &body, StatusCode::CONFLICT), "CALL_ENDED");
    }

    async fn a_restart_gives_everyone_in_a_call_the_connection_timeout_to_come_back(h) {
        let call = h.start_call("alice", "video", &["bob", "carol"]).await;
        h.join(&call, "bob").await;
        h.join(&call, "carol").await;
        h.restart().await;
        assert_eq!(h.advance_and_sweep(29).await, 0, "within CONNECTION_TIMEOUT");
        let (alice, bob) = (UserId("alice".into()), UserId("bob".into()));
        h.server.state.service.back(&alice).await.expect("alice reconnects");
        h.server.state.service.back(&bob).await.expect("bob reconnects");
        assert_eq!(h.advance_and_sweep(1).await, 1, "carol never came back");
        let seen = h.call_of(&call, "alice").await;
        assert_eq!(seen["call"]["state"], "connected", "{seen}");
        assert_eq!(state_of(&seen, "alice"), "connected");
        assert_eq!(state_of(&seen, "bob"), "connected");
        assert_eq!(state_of(&seen, "carol"), "left");
        assert_eq!(h.advance_and_sweep(3600).await, 1, "max duration only");
    }

    async fn a_call_whose_members_never_come_back_after_a_restart_ends(h) {
        let call = h.start_call("alice", "video", &["bob"]).await;
        h.join(&call, "bob").await;
        h.restart().await;
        assert_eq!(h.advance_and_sweep(30).await, 1);
        let seen = h.call_of(&call, "alice").await;
        assert_eq!(seen["call"]["state"], "ended", "{seen}");
        assert_eq!(seen["call"]["endReason"], "normal", "{seen}");
    }

    async fn a_user_is_rung_by_at_most_ringing_limit_calls_at_once(h) {
        let before = calls_stored(&h).await;
        for caller in ["alice", "dave", "erin"] {
            h.start_call(caller, "video", &["bob"]).await;
        }
        let start = json!({ "type": "video", "participantIds": ["carol", "bob"] });
        let (status, body) = h.post("/api/v1/calls/start", "frank", start.clone()).await;
        assert_eq!(error_code(status, &body, StatusCode::CONFLICT), "RINGING_LIMIT");
        assert_eq!(calls_stored(&h).await, before + 3, "nothing made, nobody rung");
        let active = h.get("/api/v1/calls/active", "bob").await.1;
        let ringing = active["data"]["calls"][0]["id"].as_str().unwrap().to_owned();
        h.post(&format!("/api/v1/calls/{ringing}/end"), "bob", json!({})).await;
        let (status, body) = h.post("/api/v1/calls/start", "frank", start).await;
        assert_eq!(status, StatusCode::OK, "a slot is free again: {body}");
    }

    async fn a_decliner_is_not_rung_again_by_that_caller_within_the_cooldown(h) {
        let call = h.start_call("alice", "video", &["bob"]).await;
        h.end(&call, "bob").await;
        h.clock.advance(chrono::Duration::seconds(20));
        let again = json!({ "type": "video", "participantIds": ["bob"] });
        let body = again.to_string();
        let headers = [
            bearer(&h.token("alice")),
            ("content-type", "application/json".to_owned()),
        ];
        let (status, reply, json) =
            send(&h, Method::POST, "/api/v1/calls/start", &headers, body.as_bytes()).await;
        assert_eq!(error_code(status, &json, StatusCode::CONFLICT), "DECLINED_RECENTLY");
        assert_eq!(json["error"]["field"], "participantIds");
        assert_eq!(reply.get("retry-after").map(|v| v.to_str().unwrap()), Some("40"));
        let (status, _) = h.post("/api/v1/calls/start", "carol", again.clone()).await;
        assert_eq!(status, StatusCode::OK, "another caller may ring bob");
        h.clock.advance(chrono::Duration::seconds(40));
        let (status, _) = h.post("/api/v1/calls/start", "alice", again).await;
        assert_eq!(status, StatusCode::OK, "after the cooldown alice may ring bob again");
    }

    async fn history_pages_through_a_users_calls_newest_first(h) {
        let mut ids = Vec::new();
        for callee in ["bob", "carol", "dave"] {
            ids.push(h.start_call("alice", "audio", &[callee]).await);
            h.clock.advance(chrono::Duration::seconds(1));
        }
        let incoming = h.start_call("bob", "video", &["alice"]).await;
        let (status, body) = h.get("/api/v1/calls/history?limit=2&offset=0", "alice").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let page = &body["data"];
        assert_eq!(page["pagination"], json!({ "limit": 2, "offset": 0, "total": 4 }));
        let listed: Vec<&str> = page["calls"].as_array().into_iter().flatten().filter_map(|c| c["id"].as_str()).collect();
        assert_eq!(listed, [incoming.as_str(), ids[2].as_str()]);
        assert_eq!(page["calls"][0]["direction"], "inbound");
        assert_eq!(page["calls"][0]["myState"], "invited");
        assert_eq!(page["calls"][1]["direction"], "outbound");
        assert_eq!(page["calls"][1]["participants"].as_array().map(Vec::len), Some(2));
        let (_, body) = h.get("/api/v1/calls/history?limit=2&offset=2", "alice").await;
        let listed: Vec<&str> = body["data"]["calls"].as_array().into_iter().flatten().filter_map(|c| c["id"].as_str()).collect();
        assert_eq!(listed, [ids[1].as_str(), ids[0].as_str()]);
        assert_eq!(history_total(&h, "carol").await, 1);
        assert_eq!(history_total(&h, "mallory").await, 0);
        for query in ["limit=0", "limit=101", "offset=-1", "limit=ten"] {
            let (status, body) = h.get(&format!("/api/v1/calls/history?{query}"), "alice").await;
            assert_eq!(error_code(status, &body, StatusCode::BAD_REQUEST), "VALIDATION_ERROR", "{query}");
        }
    }

    async fn active_lists_only_calls_that_have_not_ended(h) {
        let live = h.start_call("alice", "video", &["bob"]).await;
        let over = h.start_call("alice", "video", &["carol"]).await;
        h.end(&over, "alice").await;
        let (status, body) = h.get("/api/v1/calls/active", "alice").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let listed: Vec<&str> = body["data"]["calls"].as_array().into_iter().flatten().filter_map(|c| c["id"].as_str()).collect();
        assert_eq!(listed, [live.as_str()]);
        let (_, body) = h.get("/api/v1/calls/active", "carol").await;
        assert_eq!(body["data"]["calls"], json!([]));
    }

    async fn participants_toggle_their_own_media(h) {
        let call = h.start_call("alice", "video", &["bob"]).await;
        let path = format!("/api/v1/calls/{call}/participant");
        let (status, body) = h.call(Method::PATCH, &path, Some("alice"), Some(json!({ "audioEnabled": false, "screenShareEnabled": true }))).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["message"], "Participant settings updated");
        assert_eq!(body["data"]["participant"]["audioEnabled"], false);
        assert_eq!(body["data"]["participant"]["screenShareEnabled"], true);
        assert_eq!(body["data"]["participant"]["videoEnabled"], true);

        let (status, body) = h.call(Method::PATCH, &path, Some("bob"), Some(json!({ "audioEnabled": false }))).await;
        assert_eq!(error_code(status, &body, StatusCode::CONFLICT), "NOT_IN_CALL");
        let (status, body) = h.call(Method::PATCH, &path, Some("mallory"), Some(json!({ "audioEnabled": false }))).await;
        assert_eq!(error_code(status, &body, StatusCode::FORBIDDEN), "NOT_A_MEMBER");
        let (status, body) = h.call(Method::PATCH, &path, Some("alice"), Some(json!({}))).await;
        assert_eq!(error_code(status, &body, StatusCode::BAD_REQUEST), "VALIDATION_ERROR");
        let (status, body) = h.call(Method::PATCH, &path, Some("alice"), Some(json!({ "audioEnabled": "off" }))).await;
        assert_eq!(error_code(status, &body, StatusCode::BAD_REQUEST), "VALIDATION_ERROR");
        assert_eq!(body["error"]["field"], "audioEnabled");

        let audio = h.start_call("alice", "audio", &["bob"]).await;
        let (status, body) = h.call(Method::PATCH, &format!("/api/v1/calls/{audio}/participant"), Some("alice"), Some(json!({ "videoEnabled": true }))).await;
        assert_eq!(error_code(status, &body, StatusCode::BAD_REQUEST), "VALIDATION_ERROR");
        assert_eq!(body["error"]["field"], "videoEnabled");
    }

    async fn unanswered_calls_time_out_as_missed(h) {
        let call = h.start_call("alice", "video", &["bob"]).await;
        assert_eq!(h.advance_and_sweep(common::RINGING_TIMEOUT - 1).await, 0);
        assert_eq!(h.call_of(&call, "alice").await["call"]["state"], "ringing");
        assert_eq!(h.advance_and_sweep(1).await, 1);
        let data = h.call_of(&call, "alice").await;
        assert_eq!(data["call"]["state"], "ended");
        assert_eq!(data["call"]["endReason"], "missed");
        assert_eq!(state_of(&data, "bob"), "missed");
        assert_eq!(h.advance_and_sweep(600).await, 0, "an ended call is not swept again");
    }

    async fn a_group_call_outlives_an_invitee_who_never_answers(h) {
        let call = h.start_call("alice", "video", &["bob", "carol"]).await;
        h.join(&call, "bob").await;
        h.advance_and_sweep(common::RINGING_TIMEOUT).await;
        let data = h.call_of(&call, "alice").await;
        assert_eq!(data["call"]["state"], "connected");
        assert_eq!(state_of(&data, "carol"), "missed");
        let (status, body) = h.join(&call, "carol").await;
        assert_eq!(status, StatusCode::OK, "a member who missed the ring may still join: {body}");
    }

    async fn a_call_ends_at_its_maximum_duration(h) {
        let call = h.start_call("alice", "video", &["bob"]).await;
        h.join(&call, "bob").await;
        assert_eq!(h.advance_and_sweep(common::MAX_DURATION - 1).await, 0);
        assert_eq!(h.advance_and_sweep(1).await, 1);
        let data = h.call_of(&call, "bob").await;
        assert_eq!(data["call"]["endReason"], "max_duration");
        assert_eq!(data["call"]["duration"], common::MAX_DURATION);
    }

    async fn concurrent_joins_are_all_kept(h) {
        let call = h.start_call("alice", "video", &["bob", "carol", "dave"]).await;
        let (a, b, c) = tokio::join!(h.join(&call, "bob"), h.join(&call, "carol"), h.join(&call, "dave"));
        for (status, body) in [a, b, c] {
            assert_eq!(status, StatusCode::OK, "{body}");
        }
        let data = h.call_of(&call, "alice").await;
        for user in ["alice", "bob", "carol", "dave"] {
            assert_eq!(state_of(&data, user), "connected", "{user}");
        }
    }

    async fn stats_count_a_users_calls_and_all_calls_for_an_admin(h) {
        let talked = h.start_call("alice", "video", &["bob"]).await;
        h.join(&talked, "bob").await;
        h.clock.advance(chrono::Duration::seconds(40));
        h.end(&talked, "bob").await;
        let declined = h.start_call("alice", "audio", &["carol"]).await;
        h.end(&declined, "carol").await;
        h.start_call("alice", "video", &["dave"]).await;
        h.start_call("erin", "video", &["frank"]).await;

        let (status, body) = h.get("/api/v1/calls/stats", "alice").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["data"], json!({
            "totalCalls": 3, "activeCalls": 1, "completedCalls": 1, "failedCalls": 0,
            "missedCalls": 0, "declinedCalls": 1, "averageDuration": 40.0,
            "averageRating": null,
        }));
        let (_, body) = h.call(Method::GET, "/api/v1/calls/stats", None, None).await;
        assert_eq!(body["success"], false);
        let admin = h.admin_token("ops");
        let headers = [("authorization", format!("Bearer {admin}"))];
        let (status, bytes) = raw(h.addr(), Method::GET, "/api/v1/calls/stats", &headers, Vec::new()).await;
        assert_eq!(status, StatusCode::OK);
        let body: Value = serde_json::from_slice(&bytes).expect("JSON");
        assert_eq!(body["data"]["totalCalls"], 4);
        assert_eq!(body["data"]["activeCalls"], 2);

        let (status, bytes) = raw(h.addr(), Method::GET, "/monitoring/metrics", &headers, Vec::new()).await;
        assert_eq!(status, StatusCode::OK);
        let body: Value = serde_json::from_slice(&bytes).expect("JSON");
        assert_eq!(body["calls"]["total"], 4);
        assert_eq!(body["calls"]["completed"], 1);
        assert_eq!(body["performance"]["successRate"], "50.00%");
        assert_eq!(body["turn"]["enabled"], true);
        assert_eq!(body["turn"]["allocations"], 0);
        assert_eq!(body["turn"]["refused"]["peer"], 0);
        let (status, body) = h.get("/monitoring/metrics", "alice").await;
        assert_eq!(error_code(status, &body, StatusCode::FORBIDDEN), "FORBIDDEN");
    }

    async fn prometheus_metrics_count_calls_and_show_live_gauges(h) {
        let ended = h.start_call("alice", "video", &["bob"]).await;
        h.end(&ended, "bob").await;
        let live = h.start_call("alice", "video", &["carol"]).await;
        h.join(&live, "carol").await;
        let (status, bytes) = raw(h.addr(), Method::GET, "/metrics", &[], Vec::new()).await;
        assert_eq!(status, StatusCode::OK);
        let text = String::from_utf8_lossy(&bytes);
        for line in [
            "huddle_calls_started_total 2",
            "huddle_call_joins_total 1",
            "huddle_calls_ended_total{reason=\"declined\"} 1",
            "huddle_active_calls{state=\"connected\"} 1",
            "huddle_participants_connected 2",
            "huddle_turn_allocations 0",
            "huddle_turn_relayed_bytes_total 0",
            "huddle_turn_refused_total{reason=\"peer\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "missing `{line}` in\n{text}");
        }
    }

    async fn ids_and_names_with_control_blank_or_bidi_override_characters_are_refused(h) {
        let start = json!({ "type": "audio", "participantIds": ["bob"] }).to_string();
        let claims = [
            ("ali\0ce", None),
            ("alice", Some("Al\0ice")),
            (" \t ", None),
            ("alice\u{202E}", None),
            ("alice", Some("\u{2066}Bob")),
        ];
        for (sub, name) in claims {
            let headers = [bearer(&token_with_claims(&h, sub, name)), content_type("application/json")];
            let (status, _, body) = send(&h, Method::POST, "/api/v1/calls/start", &headers, start.as_bytes()).await;
            assert_eq!(error_code(status, &body, StatusCode::UNAUTHORIZED), "UNAUTHORIZED", "{sub:?} {name:?}");
            let message = body["error"]["message"].as_str().unwrap_or_default();
            assert!(message.contains("control or bidirectional-override"), "{message}");
        }
        for id in ["bo\0b", "  ", "bob\u{202E}", "\u{2067}bob"] {
            let (status, body) = h.post("/api/v1/calls/start", "alice", json!({ "type": "audio", "participantIds": [id] })).await;
            assert_eq!(error_code(status, &body, StatusCode::BAD_REQUEST), "VALIDATION_ERROR", "{id:?}");
            assert_eq!(body["error"]["field"], "participantIds[0]");
        }
        assert_eq!(calls_stored(&h).await, 0);
    }

    async fn a_wrongly_typed_field_is_a_validation_error_naming_it(h) {
        let cases = [
            (json!({ "type": 5, "participantIds": ["bob"] }), "type"),
            (json!({ "type": null, "participantIds": ["bob"] }), "type"),
            (json!({ "type": "video", "participantIds": ["bob"], "mediaMode": 1 }), "mediaMode"),
        ];
        for (body, field) in cases {
            let (status, answer) = h.post("/api/v1/calls/start", "alice", body.clone()).await;
            assert_eq!(error_code(status, &answer, StatusCode::BAD_REQUEST), "VALIDATION_ERROR", "{body}");
            assert_eq!(answer["error"]["field"], field, "{body} -> {answer}");
        }
        assert_eq!(history_total(&h, "alice").await, 0);
    }

    async fn prometheus_keeps_serving_the_counters_while_the_database_is_down(h) {
        h.start_call("alice", "video", &["bob"]).await;
        let text = scrape(&h).await;
        assert!(has_line(&text, "huddle_database_up 1"), "{text}");
        assert!(has_line(&text, "huddle_active_calls{state=\"ringing\"} 1"), "{text}");

        h.server.state.service.store().close().await;
        let (status, _) = h.call(Method::GET, "/health", None, None).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "the database is down");
        let text = scrape(&h).await;
        for line in ["huddle_database_up 0", "huddle_calls_started_total 1", "huddle_turn_allocations 0"] {
            assert!(has_line(&text, line), "missing `{line}` in\n{text}");
        }
        assert!(text.contains("huddle_sfu_rooms "), "{text}");
        assert!(!text.contains("huddle_active_calls"), "no stale database gauges:\n{text}");
        assert!(!text.contains("huddle_participants_connected"), "{text}");
    }

    async fn unknown_routes_and_methods_answer_in_the_error_shape(h) {
        let (status, body) = h.get("/api/v1/nothing-here", "alice").await;
        assert_eq!(error_code(status, &body, StatusCode::NOT_FOUND), "NOT_FOUND");
        let (status, body) = h.call(Method::DELETE, "/api/v1/calls/start", Some("alice"), None).await;
        assert_eq!(error_code(status, &body, StatusCode::METHOD_NOT_ALLOWED), "METHOD_NOT_ALLOWED");
    }
}

#[tokio::test]
async fn metrics_port_moves_prometheus_off_the_main_port() {
    let h = Harness::start_with(Backend::Sqlite, &["--metrics-port", "0"]).await;
    let metrics_addr = h.server.metrics_addr.expect("metrics listener");
    let (status, bytes) = raw(metrics_addr, Method::GET, "/metrics", &[], Vec::new()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(String::from_utf8_lossy(&bytes).contains("huddle_calls_started_total 0"));
    let (status, _) = raw(h.addr(), Method::GET, "/metrics", &[], Vec::new()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    h.finish().await;
}

#[tokio::test]
async fn with_coturn_instead_of_the_embedded_server_clients_get_coturns_urls() {
    let h = Harness::start_with(
        Backend::Sqlite,
        &[
            "--turn-embedded",
            "false",
            "--turn-urls",
            "turn:turn.example.org:3478?transport=udp,turns:turn.example.org:5349?transport=tcp",
        ],
    )
    .await;
    assert!(h.server.state.turn.is_none(), "no embedded TURN server");
    let call = h.start_call("alice", "video", &["bob"]).await;
    h.join(&call, "bob").await;
    let (status, body) = h
        .post(&format!("/api/v1/calls/{call}/token"), "bob", json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let ice = &body["data"]["iceServers"];
    assert_eq!(
        ice.as_array().map(Vec::len),
        Some(1),
        "no STUN without STUN_SERVER_URL: {ice}"
    );
    assert_eq!(
        ice[0]["urls"],
        json!([
            "turn:turn.example.org:3478?transport=udp",
            "turns:turn.example.org:5349?transport=tcp"
        ])
    );
    let username = ice[0]["username"].as_str().expect("minted");
    assert!(username.ends_with(":bob"), "{username}");
    assert_eq!(
        ice[0]["credential"].as_str(),
        Some(
            huddle_turn::Secret::new(common::TURN_SECRET)
                .password(username)
                .as_str()
        ),
        "coturn checks what TURN_SECRET signs"
    );
    let admin = h.admin_token("ops");
    let headers = [("authorization", format!("Bearer {admin}"))];
    let (_, bytes) = raw(
        h.addr(),
        Method::GET,
        "/monitoring/metrics",
        &headers,
        Vec::new(),
    )
    .await;
    let body: Value = serde_json::from_slice(&bytes).expect("JSON");
    assert_eq!(body["turn"], json!({ "enabled": false }));
    let (_, bytes) = raw(h.addr(), Method::GET, "/metrics", &[], Vec::new()).await;
    assert!(!String::from_utf8_lossy(&bytes).contains("huddle_turn_"));
    h.finish().await;
}

#[tokio::test]
async fn a_body_must_say_it_is_json_but_an_empty_one_needs_no_content_type() {
    let h = Harness::start(Backend::Sqlite).await;
    let call = h.start_call("alice", "video", &["bob", "carol"]).await;
    let participant = format!("/api/v1/calls/{call}/participant");
    let join = format!("/api/v1/calls/{call}/join");
    let token = format!("/api/v1/calls/{call}/token");
    let start = json!({ "type": "audio", "participantIds": ["bob"] }).to_string();
    let requests = [
        (
            Method::POST,
            "/api/v1/calls/start",
            "alice",
            start.as_str(),
            None,
        ),
        (
            Method::POST,
            "/api/v1/calls/start",
            "alice",
            start.as_str(),
            Some("text/plain"),
        ),
        (
            Method::POST,
            "/api/v1/calls/start",
            "alice",
            start.as_str(),
            Some("application/x-www-form-urlencoded"),
        ),
        (
            Method::PATCH,
            participant.as_str(),
            "alice",
            r#"{"audioEnabled":false}"#,
            None,
        ),
        (
            Method::POST,
            join.as_str(),
            "bob",
            r#"{"audioEnabled":false}"#,
            None,
        ),
        (
            Method::POST,
            token.as_str(),
            "bob",
            "{}",
            Some("text/plain"),
        ),
    ];
    for (method, path, user, body, kind) in requests {
        let mut headers = vec![bearer(&h.token(user))];
        headers.extend(kind.map(content_type));
        let (status, _, answer) = send(&h, method.clone(), path, &headers, body.as_bytes()).await;
        assert_eq!(
            error_code(status, &answer, StatusCode::UNSUPPORTED_MEDIA_TYPE),
            "UNSUPPORTED_MEDIA_TYPE",
            "{method} {path} with {kind:?}"
        );
    }
    let data = h.call_of(&call, "alice").await;
    assert_eq!(state_of(&data, "bob"), "invited", "nothing changed");
    assert_eq!(
        data["participants"][0]["audioEnabled"], true,
        "nothing changed"
    );
    assert_eq!(calls_stored(&h).await, 1);

    for (path, user) in [(join.as_str(), "bob"), (token.as_str(), "bob")] {
        let (status, _, answer) =
            send(&h, Method::POST, path, &[bearer(&h.token(user))], b"").await;
        assert_eq!(status, StatusCode::OK, "{path} with no body: {answer}");
    }
    let end = format!("/api/v1/calls/{call}/end");
    let (status, _, answer) = send(&h, Method::POST, &end, &[bearer(&h.token("carol"))], b"").await;
    assert_eq!(answer["data"]["outcome"], "declined", "{status} {answer}");
    let headers = [
        bearer(&h.token("dave")),
        content_type("application/json; charset=utf-8"),
    ];
    let (status, _, answer) = send(
        &h,
        Method::POST,
        "/api/v1/calls/start",
        &headers,
        start.as_bytes(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    h.finish().await;
}

#[tokio::test]
async fn errors_made_outside_the_handlers_carry_the_json_shape() {
    let h = Harness::start(Backend::Sqlite).await;
    let auth = || bearer(&h.token("alice"));
    let long = format!(
        "/api/v1/calls/active?pad={}",
        "x".repeat(huddle::api::MAX_URI_LEN)
    );
    let (status, _, body) = send(&h, Method::GET, &long, &[auth()], b"").await;
    assert_eq!(
        error_code(status, &body, StatusCode::URI_TOO_LONG),
        "URI_TOO_LONG"
    );

    let padding = ("x-padding", "p".repeat(huddle::api::MAX_HEADER_BYTES));
    let (status, _, body) = send(
        &h,
        Method::GET,
        "/api/v1/calls/active",
        &[auth(), padding],
        b"",
    )
    .await;
    assert_eq!(
        error_code(status, &body, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
        "HEADERS_TOO_LARGE"
    );

    let (status, _, body) = send(&h, Method::GET, "/api/v1/calls/%FF%FE", &[auth()], b"").await;
    assert_eq!(
        error_code(status, &body, StatusCode::BAD_REQUEST),
        "VALIDATION_ERROR"
    );
    assert_eq!(body["error"]["field"], "callId");

    let (status, head, body) = send(&h, Method::PUT, "/api/v1/calls/start", &[auth()], b"").await;
    assert_eq!(
        error_code(status, &body, StatusCode::METHOD_NOT_ALLOWED),
        "METHOD_NOT_ALLOWED"
    );
    assert_eq!(
        head.get("allow").map(|v| v.to_str().unwrap_or_default()),
        Some("POST")
    );
    let (status, _) = h.call(Method::GET, "/health", None, None).await;
    assert_eq!(status, StatusCode::OK, "still serving");
    h.finish().await;
}

#[tokio::test]
async fn a_user_past_their_rate_limit_gets_429_with_retry_after_and_nothing_changes() {
    let h = Harness::start_with(
        Backend::Sqlite,
        &[
            "--rate-limit-user-per-sec",
            "1",
            "--rate-limit-user-burst",
            "3",
        ],
    )
    .await;
    for _ in 0..3 {
        let (status, body) = h.get("/api/v1/calls/active", "alice").await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let start = json!({ "type": "audio", "participantIds": ["bob"] }).to_string();
    let headers = [bearer(&h.token("alice")), content_type("application/json")];
    let (status, head, body) = send(
        &h,
        Method::POST,
        "/api/v1/calls/start",
        &headers,
        start.as_bytes(),
    )
    .await;
    assert_eq!(
        error_code(status, &body, StatusCode::TOO_MANY_REQUESTS),
        "RATE_LIMITED"
    );
    assert_eq!(
        head.get("retry-after")
            .map(|v| v.to_str().unwrap_or_default()),
        Some("1")
    );

    let (status, body) = h.get("/api/v1/calls/active", "bob").await;
    assert_eq!(
        status,
        StatusCode::OK,
        "another user is not limited: {body}"
    );
    assert_eq!(history_total(&h, "bob").await, 0, "no call was created");

    h.clock.advance(chrono::Duration::seconds(1));
    h.start_call("alice", "audio", &["bob"]).await;
    assert_eq!(history_total(&h, "bob").await, 1);
    h.finish().await;
}

#[tokio::test]
async fn one_client_ip_past_its_rate_limit_gets_429_whoever_it_claims_to_be() {
    let h = Harness::start_with(
        Backend::Sqlite,
        &["--rate-limit-ip-per-sec", "1", "--rate-limit-ip-burst", "4"],
    )
    .await;
    let (status, _) = h
        .call(Method::GET, "/api/v1/calls/active", None, None)
        .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "refused requests count too"
    );
    let (status, _) = h.get("/api/v1/nothing-here", "alice").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    for user in ["alice", "bob"] {
        let (status, _) = h.get("/api/v1/calls/active", user).await;
        assert_eq!(status, StatusCode::OK);
    }
    let (status, head, body) = send(
        &h,
        Method::GET,
        "/api/v1/calls/active",
        &[bearer(&h.token("carol"))],
        b"",
    )
    .await;
    assert_eq!(
        error_code(status, &body, StatusCode::TOO_MANY_REQUESTS),
        "RATE_LIMITED"
    );
    assert_eq!(
        head.get("retry-after")
            .map(|v| v.to_str().unwrap_or_default()),
        Some("1")
    );
    let (status, _) = h.call(Method::GET, "/health", None, None).await;
    assert_eq!(status, StatusCode::OK, "health is not limited");
    let text = scrape(&h).await;
    assert!(
        has_line(&text, "huddle_rate_limited_total{limit=\"ip\"} 1"),
        "{text}"
    );

    h.clock.advance(chrono::Duration::seconds(1));
    let (status, _) = h.get("/api/v1/calls/active", "carol").await;
    assert_eq!(status, StatusCode::OK, "a second later, one more request");
    h.finish().await;
}

#[tokio::test]
async fn zero_turns_the_rate_limits_off() {
    let h = Harness::start_with(
        Backend::Sqlite,
        &[
            "--rate-limit-user-per-sec",
            "0",
            "--rate-limit-user-burst",
            "1",
            "--rate-limit-ip-per-sec",
            "1",
            "--rate-limit-ip-burst",
            "0",
        ],
    )
    .await;
    for i in 0..20 {
        let (status, body) = h.get("/api/v1/calls/active", "alice").await;
        assert_eq!(status, StatusCode::OK, "request {i}: {body}");
    }
    h.finish().await;
}

/// Reads from `stream` until the server closes it or `within` runs out; returns
/// whether it closed.
async fn closed_within(stream: &mut tokio::net::TcpStream, within: std::time::Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 1024];
    let read_until_eof = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(within, read_until_eof).await.is_ok()
}

#[tokio::test]
async fn connections_that_send_no_complete_request_head_are_closed_after_the_idle_timeout() {
    use tokio::io::AsyncWriteExt;
    let h = Harness::start_with(Backend::Sqlite, &["--http-idle-timeout", "1"]).await;
    let mut silent = tokio::net::TcpStream::connect(h.addr()).await.unwrap();
    let mut dribbling = tokio::net::TcpStream::connect(h.addr()).await.unwrap();
    dribbling
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    let mut idle = tokio::net::TcpStream::connect(h.addr()).await.unwrap();
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let limit = std::time::Duration::from_secs(4);
    assert!(
        closed_within(&mut silent, limit).await,
        "a silent connection"
    );
    assert!(
        closed_within(&mut dribbling, limit).await,
        "half a request head"
    );
    assert!(
        closed_within(&mut idle, limit).await,
        "a keep-alive connection idle after its response"
    );
    let (status, _) = h.get("/api/v1/calls/active", "alice").await;
    assert_eq!(status, StatusCode::OK, "others are served as usual");
    h.finish().await;
}

#[tokio::test]
async fn one_address_holds_at_most_http_max_connections_per_ip() {
    let h = Harness::start_with(Backend::Sqlite, &["--http-max-connections-per-ip", "3"]).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(tokio::net::TcpStream::connect(h.addr()).await.unwrap());
    }
    let mut fourth = tokio::net::TcpStream::connect(h.addr()).await.unwrap();
    assert!(
        closed_within(&mut fourth, std::time::Duration::from_secs(2)).await,
        "the fourth connection is closed at once"
    );
    drop(held);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let (status, _) = h.get("/api/v1/calls/active", "alice").await;
    assert_eq!(status, StatusCode::OK, "closing one frees its place");
    let text = scrape(&h).await;
    assert!(
        text.contains("huddle_http_connections_refused_total 1"),
        "{text}"
    );
    h.finish().await;
}
