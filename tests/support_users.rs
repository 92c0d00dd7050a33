//! The support lines' users over real HTTP, each test on SQLite and on PostgreSQL:
//! profiles, the queues representatives serve, availability; accounts (AUTH_ACCOUNTS:
//! register, login, refresh, refresh-token reuse, the login lockout); call feedback.

mod common;

use chrono::Duration;
use hyper::{HeaderMap, Method, StatusCode};
use serde_json::{Value, json};

use common::{Backend, Harness, raw_with_headers};

/// A request with `token` (none: no Authorization header) and a JSON body.
async fn send(
    h: &Harness,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Value,
) -> (StatusCode, HeaderMap, Value) {
    let mut headers = vec![("content-type", "application/json".to_owned())];
    if let Some(token) = token {
        headers.push(("authorization", format!("Bearer {token}")));
    }
    let (status, head, bytes) = raw_with_headers(
        h.addr(),
        method,
        path,
        &headers,
        body.to_string().into_bytes(),
    )
    .await;
    let json = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!(
            "{path} answered {status} with non-JSON ({e}): {}",
            String::from_utf8_lossy(&bytes)
        )
    });
    (status, head, json)
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("(none)")
}

fn representative(h: &Harness, user: &str) -> String {
    h.token_with(user, Some("representative"))
}

async fn profile(h: &Harness, token: &str) -> (StatusCode, Value) {
    let (status, _, body) = send(
        h,
        Method::GET,
        "/api/v1/users/profile",
        Some(token),
        json!({}),
    )
    .await;
    (status, body)
}

async fn put(h: &Harness, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
    let (status, _, body) = send(h, Method::PUT, path, Some(token), body).await;
    (status, body)
}

async fn auth(h: &Harness, what: &str, body: Value) -> (StatusCode, HeaderMap, Value) {
    send(h, Method::POST, &format!("/api/v1/auth/{what}"), None, body).await
}

/// Registers `username` with `password`; returns the session.
async fn register(h: &Harness, username: &str, password: &str) -> Value {
    let (status, _, body) = auth(
        h,
        "register",
        json!({ "username": username, "password": password }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["data"].clone()
}

async fn login(h: &Harness, username: &str, password: &str) -> (StatusCode, HeaderMap, Value) {
    auth(
        h,
        "login",
        json!({ "username": username, "password": password }),
    )
    .await
}

async fn refresh(h: &Harness, token: &Value) -> (StatusCode, Value) {
    let (status, _, body) = auth(h, "refresh", json!({ "refreshToken": token })).await;
    (status, body)
}

/// A call from alice to bob that bob answered and alice ended; carol was rung too
/// and never answered.
async fn ended_call(h: &Harness) -> String {
    let call = h.start_call("alice", "audio", &["bob", "carol"]).await;
    assert_eq!(h.join(&call, "bob").await.0, StatusCode::OK);
    let (status, body) = h.end(&call, "alice").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    call
}

async fn rate(h: &Harness, call: &str, user: &str, body: Value) -> (StatusCode, Value) {
    h.post(&format!("/api/v1/calls/{call}/feedback"), user, body)
        .await
}

#[tokio::test]
async fn with_accounts_off_every_account_route_is_404_accounts_disabled() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let h = Harness::start(backend).await;
        for what in ["register", "login", "refresh"] {
            // Not even the body is read.
            let (status, _, body) = auth(&h, what, json!("not an object")).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{what}: {body}");
            assert_eq!(code(&body), "ACCOUNTS_DISABLED", "{what}");
        }
        h.finish().await;
    }
}

on_both_backends! {
    flags = ["--auth-accounts", "true"];

    async fn a_first_request_makes_the_profile_from_the_token(h) {
        let (status, body) = profile(&h, &h.token("alice")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(
            body["data"]["profile"],
            json!({
                "userId": "alice",
                "displayName": "alice name",
                "role": "customer",
                "availability": "offline",
                "queues": [],
            })
        );
    }

    async fn a_new_representative_serves_the_default_queue(h) {
        let (status, body) = profile(&h, &representative(&h, "rita")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["data"]["profile"]["role"], "representative");
        assert_eq!(body["data"]["profile"]["queues"], json!(["default"]));
    }

    async fn a_display_name_set_is_kept_over_the_tokens(h) {
        let token = h.token("alice");
        let (status, body) = put(&h, "/api/v1/users/profile", &token, json!({ "displayName": "Alice A." })).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["data"]["profile"]["displayName"], "Alice A.");
        let (_, body) = profile(&h, &token).await;
        assert_eq!(body["data"]["profile"]["displayName"], "Alice A.");
    }

    async fn a_token_with_another_role_changes_the_role(h) {
        profile(&h, &h.token("rita")).await;
        let (_, body) = profile(&h, &representative(&h, "rita")).await;
        assert_eq!(body["data"]["profile"]["role"], "representative");
        assert_eq!(body["data"]["profile"]["queues"], json!(["default"]));
    }

    async fn a_service_token_has_no_profile(h) {
        let (status, body) = profile(&h, &h.token_with("pbx", Some("service"))).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    }

    async fn a_representative_sets_their_availability(h) {
        let token = representative(&h, "rita");
        let (status, body) = put(&h, "/api/v1/users/availability", &token, json!({ "status": "available" })).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["data"]["profile"]["availability"], "available");
        let (_, body) = put(&h, "/api/v1/users/availability", &token, json!({ "status": "busy" })).await;
        assert_eq!(body["data"]["profile"]["availability"], "busy");
    }

    async fn availability_is_for_representatives_and_known_statuses_only(h) {
        for token in [h.token("alice"), h.admin_token("ops")] {
            let (status, body) = put(&h, "/api/v1/users/availability", &token, json!({ "status": "available" })).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        }
        let rita = representative(&h, "rita");
        for bad in [json!({ "status": "away" }), json!({}), json!({ "status": 1 })] {
            let (status, body) = put(&h, "/api/v1/users/availability", &rita, bad.clone()).await;
            assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "VALIDATION_ERROR"), "{bad}");
            assert_eq!(body["error"]["field"], "status", "{bad}");
        }
        let (_, body) = profile(&h, &rita).await;
        assert_eq!(body["data"]["profile"]["availability"], "offline");
    }

    async fn a_representative_chooses_the_queues_they_serve(h) {
        let rita = representative(&h, "rita");
        let (status, body) = put(&h, "/api/v1/users/profile", &rita, json!({ "queues": ["default", "default"] })).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["data"]["profile"]["queues"], json!(["default"]));
        let (status, body) = put(&h, "/api/v1/users/profile", &rita, json!({ "queues": [] })).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["data"]["profile"]["queues"], json!([]));
    }

    async fn an_unknown_queue_is_refused_and_nothing_changes(h) {
        let rita = representative(&h, "rita");
        let (status, body) = put(
            &h,
            "/api/v1/users/profile",
            &rita,
            json!({ "displayName": "Rita", "queues": ["default", "billing"] }),
        )
        .await;
        assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "VALIDATION_ERROR"), "{body}");
        assert_eq!(body["error"]["field"], "queues");
        let (_, body) = profile(&h, &rita).await;
        assert_eq!(body["data"]["profile"]["queues"], json!(["default"]));
        assert_eq!(body["data"]["profile"]["displayName"], "rita name");
    }

    async fn only_representatives_serve_queues(h) {
        let (status, body) = put(&h, "/api/v1/users/profile", &h.token("alice"), json!({ "queues": ["default"] })).await;
        assert_eq!((status, code(&body)), (StatusCode::FORBIDDEN, "FORBIDDEN"), "{body}");
        let (status, body) = put(&h, "/api/v1/users/profile", &h.token("alice"), json!({})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        let (_, body) = profile(&h, &h.token("alice")).await;
        assert_eq!(body["data"]["profile"]["queues"], json!([]));
    }

    async fn a_registered_customer_logs_in_refreshes_and_uses_the_access_token(h) {
        let session = register(&h, "Alice.B", "correct horse").await;
        let user = &session["user"];
        assert_eq!(user["username"], "alice.b");
        assert_eq!(user["role"], "customer");
        assert_eq!(user["displayName"], "alice.b");
        assert!(user["userId"].as_str().unwrap().starts_with("u_"), "{user}");
        assert_eq!(session["expiresIn"], 900);
        let (status, body) = profile(&h, session["accessToken"].as_str().unwrap()).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["data"]["profile"], *user);

        let (status, _, logged_in) = login(&h, "ALICE.b", "correct horse").await;
        assert_eq!(status, StatusCode::OK, "{logged_in}");
        assert_eq!(logged_in["data"]["user"]["userId"], user["userId"]);

        let (status, refreshed) = refresh(&h, &logged_in["data"]["refreshToken"]).await;
        assert_eq!(status, StatusCode::OK, "{refreshed}");
        let refreshed = &refreshed["data"];
        assert_ne!(refreshed["refreshToken"], logged_in["data"]["refreshToken"]);
        let (status, _) = profile(&h, refreshed["accessToken"].as_str().unwrap()).await;
        assert_eq!(status, StatusCode::OK);
    }

    async fn an_access_token_expires_after_access_token_ttl(h) {
        let session = register(&h, "alice", "correct horse").await;
        let token = session["accessToken"].as_str().unwrap();
        h.clock.advance(Duration::seconds(900 + 31));
        let (status, body) = profile(&h, token).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    }

    async fn a_refresh_token_used_twice_revokes_its_whole_family(h) {
        let session = register(&h, "alice", "correct horse").await;
        let first = session["refreshToken"].clone();
        let (status, second) = refresh(&h, &first).await;
        assert_eq!(status, StatusCode::OK, "{second}");
        let second = second["data"]["refreshToken"].clone();

        let (status, body) = refresh(&h, &first).await;
        assert_eq!((status, code(&body)), (StatusCode::UNAUTHORIZED, "REFRESH_TOKEN_REUSED"), "{body}");
        // The newest of the family is revoked too: whoever holds it must log in.
        let (status, body) = refresh(&h, &second).await;
        assert_eq!((status, code(&body)), (StatusCode::UNAUTHORIZED, "REFRESH_TOKEN_REUSED"), "{body}");
        // Another login's family is not.
        let (_, _, other) = login(&h, "alice", "correct horse").await;
        let (status, body) = refresh(&h, &other["data"]["refreshToken"]).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    async fn of_two_refreshes_with_one_token_at_once_one_wins_and_the_family_is_revoked(h) {
        let session = register(&h, "alice", "correct horse").await;
        let token = &session["refreshToken"];
        let ((a, a_body), (b, b_body)) = tokio::join!(refresh(&h, token), refresh(&h, token));
        let mut statuses = [a, b];
        statuses.sort();
        assert_eq!(statuses, [StatusCode::OK, StatusCode::UNAUTHORIZED], "{a_body} {b_body}");
        let (winner, loser) = if a == StatusCode::OK { (a_body, b_body) } else { (b_body, a_body) };
        assert_eq!(code(&loser), "REFRESH_TOKEN_REUSED");
        let (status, body) = refresh(&h, &winner["data"]["refreshToken"]).await;
        assert_eq!((status, code(&body)), (StatusCode::UNAUTHORIZED, "REFRESH_TOKEN_REUSED"), "{body}");
    }

    async fn an_unknown_or_expired_refresh_token_is_refused(h) {
        let (status, body) = refresh(&h, &json!("bm90IGEgdG9rZW4")).await;
        assert_eq!((status, code(&body)), (StatusCode::UNAUTHORIZED, "INVALID_REFRESH_TOKEN"), "{body}");
        let session = register(&h, "alice", "correct horse").await;
        h.clock.advance(Duration::days(30));
        let (status, body) = refresh(&h, &session["refreshToken"]).await;
        assert_eq!((status, code(&body)), (StatusCode::UNAUTHORIZED, "REFRESH_TOKEN_EXPIRED"), "{body}");
    }

    async fn an_unknown_user_and_a_wrong_password_answer_alike(h) {
        register(&h, "alice", "correct horse").await;
        let (status, _, wrong) = login(&h, "alice", "wrong horse").await;
        let (status2, _, unknown) = login(&h, "mallory", "correct horse").await;
        assert_eq!((status, status2), (StatusCode::UNAUTHORIZED, StatusCode::UNAUTHORIZED));
        assert_eq!(wrong, unknown);
        assert_eq!(code(&wrong), "INVALID_CREDENTIALS");
    }

    async fn five_wrong_passwords_lock_the_username_in_any_case_for_15_minutes(h) {
        register(&h, "alice", "correct horse").await;
        for (i, name) in ["alice", "ALICE", "Alice", "aLiCe", "alicE"].iter().enumerate() {
            let (status, _, body) = login(&h, name, "wrong horse").await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "attempt {i}: {body}");
        }
        for name in ["alice", "ALICE"] {
            let (status, head, body) = login(&h, name, "correct horse").await;
            assert_eq!((status, code(&body)), (StatusCode::TOO_MANY_REQUESTS, "TOO_MANY_ATTEMPTS"), "{body}");
            assert_eq!(head["retry-after"], "900");
        }
        // An unknown name locks alike: a lock says nothing about who exists.
        for _ in 0..5 {
            login(&h, "nobody", "wrong horse").await;
        }
        let (status, _, _) = login(&h, "nobody", "wrong horse").await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);

        h.clock.advance(Duration::minutes(15));
        let (status, _, body) = login(&h, "alice", "correct horse").await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    async fn wrong_passwords_spread_over_more_than_15_minutes_do_not_lock(h) {
        register(&h, "alice", "correct horse").await;
        for _ in 0..4 {
            login(&h, "alice", "wrong horse").await;
        }
        h.clock.advance(Duration::minutes(16));
        let (status, _, _) = login(&h, "alice", "wrong horse").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, _, body) = login(&h, "alice", "correct horse").await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    async fn registration_makes_customers_only(h) {
        let (status, _, body) = auth(
            &h,
            "register",
            json!({ "username": "boss", "password": "correct horse", "role": "admin" }),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body["data"]["user"]["role"], "customer");
        let token = body["data"]["accessToken"].as_str().unwrap();
        let (status, body) = put(&h, "/api/v1/users/availability", token, json!({ "status": "available" })).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    }

    async fn a_taken_username_in_any_case_is_409(h) {
        register(&h, "alice", "correct horse").await;
        let (status, _, body) = auth(&h, "register", json!({ "username": "ALICE", "password": "another one" })).await;
        assert_eq!((status, code(&body)), (StatusCode::CONFLICT, "USERNAME_TAKEN"), "{body}");
        let (status, _, _) = login(&h, "alice", "another one").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }

    async fn a_bad_registration_is_400_and_makes_no_account(h) {
        for (bad, field) in [
            (json!({ "username": "al", "password": "correct horse" }), "username"),
            (json!({ "username": "al ice", "password": "correct horse" }), "username"),
            (json!({ "username": "x".repeat(65), "password": "correct horse" }), "username"),
            (json!({ "username": "alice", "password": "short" }), "password"),
            (json!({ "username": "alice", "password": "p".repeat(257) }), "password"),
            (json!({ "username": "alice", "password": "correct horse", "displayName": "a\u{202E}b" }), "displayName"),
            (json!({ "username": "alice" }), "password"),
            (json!({ "username": 5, "password": "correct horse" }), "username"),
        ] {
            let (status, _, body) = auth(&h, "register", bad.clone()).await;
            assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "VALIDATION_ERROR"), "{bad}: {body}");
            assert_eq!(body["error"]["field"], field, "{bad}");
        }
        let (status, _, body) = login(&h, "alice", "correct horse").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        register(&h, "alice", "correct horse").await;
    }

    async fn a_participant_rates_an_ended_call_once(h) {
        let call = ended_call(&h).await;
        let (status, body) = rate(&h, &call, "bob", json!({ "rating": 4, "comment": "fine", "categories": ["audio"] })).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let feedback = &body["data"]["feedback"];
        assert_eq!(
            (&feedback["userId"], &feedback["rating"], &feedback["comment"], &feedback["categories"]),
            (&json!("bob"), &json!(4), &json!("fine"), &json!(["audio"]))
        );
        let (status, body) = rate(&h, &call, "bob", json!({ "rating": 5 })).await;
        assert_eq!((status, code(&body)), (StatusCode::CONFLICT, "FEEDBACK_EXISTS"), "{body}");

        let (status, body) = rate(&h, &call, "alice", json!({ "rating": 2 })).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let details = h.call_of(&call, "alice").await;
        let given: Vec<(&Value, &Value)> = details["feedback"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| (&f["userId"], &f["rating"]))
            .collect();
        assert_eq!(given.len(), 2, "{details}");
        assert!(given.contains(&(&json!("bob"), &json!(4))) && given.contains(&(&json!("alice"), &json!(2))));
    }

    async fn feedback_is_for_participants_who_joined_an_ended_call(h) {
        let live = h.start_call("alice", "audio", &["bob"]).await;
        let (status, body) = rate(&h, &live, "alice", json!({ "rating": 3 })).await;
        assert_eq!((status, code(&body)), (StatusCode::CONFLICT, "CALL_NOT_ENDED"), "{body}");
        let call = ended_call(&h).await;
        for outsider in ["mallory", "carol"] {
            let (status, body) = rate(&h, &call, outsider, json!({ "rating": 3 })).await;
            assert_eq!((status, code(&body)), (StatusCode::FORBIDDEN, "NOT_A_MEMBER"), "{outsider}: {body}");
        }
        assert_eq!(h.call_of(&call, "alice").await["feedback"], json!([]));
    }

    async fn bad_feedback_is_400_and_stores_nothing(h) {
        let call = ended_call(&h).await;
        for (bad, field) in [
            (json!({ "rating": 0 }), "rating"),
            (json!({ "rating": 6 }), "rating"),
            (json!({}), "rating"),
            (json!({ "rating": 3, "comment": "c".repeat(2001) }), "comment"),
            (json!({ "rating": 3, "categories": vec!["a"; 11] }), "categories"),
            (json!({ "rating": 3, "categories": ["x".repeat(65)] }), "categories[0]"),
        ] {
            let (status, body) = rate(&h, &call, "bob", bad.clone()).await;
            assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "VALIDATION_ERROR"), "{bad}: {body}");
            assert_eq!(body["error"]["field"], field, "{bad}");
        }
        assert_eq!(h.call_of(&call, "alice").await["feedback"], json!([]));
    }

    async fn call_stats_average_the_ratings_of_the_calls_they_count(h) {
        let (_, body) = h.get("/api/v1/calls/stats", "bob").await;
        assert_eq!(body["data"]["averageRating"], Value::Null);
        let first = ended_call(&h).await;
        let second = ended_call(&h).await;
        rate(&h, &first, "bob", json!({ "rating": 5 })).await;
        rate(&h, &second, "bob", json!({ "rating": 2 })).await;
        rate(&h, &second, "alice", json!({ "rating": 4 })).await;
        let (_, body) = h.get("/api/v1/calls/stats", "bob").await;
        let average = body["data"]["averageRating"].as_f64().unwrap();
        assert!((average - 11.0 / 3.0).abs() < 1e-9, "{body}");
        // Dave's calls have no feedback.
        h.start_call("dave", "audio", &["erin"]).await;
        let (_, body) = h.get("/api/v1/calls/stats", "dave").await;
        assert_eq!(body["data"]["averageRating"], Value::Null);
    }
}
