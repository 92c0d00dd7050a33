//! Support queues over real HTTP, each test on SQLite and on PostgreSQL: joining,
//! positions, leaving, callbacks and their errors; assignment first come first
//! served to the representative idle longest; a representative who declines or
//! lets it ring out is `busy` and the customer keeps their place; serving;
//! abandonment; recovery of an assignment whose call never started; statistics;
//! queues. Then, on PostgreSQL, three servers racing to assign 30 customers to 6
//! representatives: nobody given twice, nobody skipped. (Socket.IO notices are in
//! the Node suites.)
//!
//! Representatives' rows are written here straight into `users`, as the user
//! service's availability endpoint would write them.

mod common;

use std::time::Duration;

use chrono::{DateTime, Utc};
use hyper::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::postgres::PgPool;
use sqlx::sqlite::SqlitePool;

use common::{Backend, Harness, RINGING_TIMEOUT, raw};
use huddle::calls::model::UserId;
use huddle::clock::Clock;
use huddle::server::Server;
use huddle::users::AvailabilityObserver;

/// The harness's CONNECTION_TIMEOUT (the default).
const CONNECTION_TIMEOUT: i64 = 30;

/// The test's own database, for the rows the user service would write.
enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

macro_rules! on_db {
    ($db:expr, |$pool:ident| $body:expr) => {
        match $db {
            Db::Sqlite($pool) => $body,
            Db::Postgres($pool) => $body,
        }
    };
}

async fn db(h: &Harness) -> Db {
    let url = h.database_url();
    if url.starts_with("sqlite") {
        Db::Sqlite(SqlitePool::connect(url).await.expect("sqlite"))
    } else {
        Db::Postgres(PgPool::connect(url).await.expect("postgres"))
    }
}

/// Representative `user` serving the default queue, `availability` since `idle`
/// (as `PUT /api/v1/users/availability` stores it); the dispatcher is told.
async fn representative(h: &Harness, user: &str, availability: &str, idle: DateTime<Utc>) {
    let db = db(h).await;
    on_db!(&db, |pool| {
        sqlx::query(
            "INSERT INTO users (user_id, display_name, role, availability, idle_since, \
             created_at, updated_at) VALUES ($1, $1, 'representative', $2, $3, $3, $3) \
             ON CONFLICT (user_id) DO UPDATE SET availability = excluded.availability, \
             idle_since = excluded.idle_since",
        )
        .bind(user)
        .bind(availability)
        .bind(idle)
        .execute(pool)
        .await
        .expect("representative");
        sqlx::query(
            "INSERT INTO representative_queues (user_id, queue) VALUES ($1, 'default') \
             ON CONFLICT DO NOTHING",
        )
        .bind(user)
        .execute(pool)
        .await
        .expect("queue of representative");
    });
    h.server
        .state
        .queue
        .availability_changed(&UserId(user.into()));
}

/// A representative available, idle for `seconds`.
async fn idle_for(h: &Harness, user: &str, seconds: i64) {
    let since = h.clock.now() - chrono::Duration::seconds(seconds);
    representative(h, user, "available", since).await;
}

/// `user`'s availability as stored.
async fn availability(h: &Harness, user: &str) -> String {
    let db = db(h).await;
    on_db!(&db, |pool| sqlx::query_scalar(
        "SELECT availability FROM users WHERE user_id = $1"
    )
    .bind(user)
    .fetch_one(pool)
    .await
    .expect("availability"))
}

/// A request with a token of `role`.
async fn as_role(
    h: &Harness,
    role: &str,
    method: Method,
    path: &str,
    user: &str,
    body: Value,
) -> (StatusCode, Value) {
    let headers = [
        (
            "authorization",
            format!("Bearer {}", h.token_with(user, Some(role))),
        ),
        ("content-type", "application/json".to_owned()),
    ];
    let (status, bytes) = raw(h.addr(), method, path, &headers, body.to_string().into()).await;
    (status, serde_json::from_slice(&bytes).expect("JSON"))
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("(none)")
}

/// A join, a millisecond after the one before (the line is in order of joining,
/// and the harness's clock stands still).
async fn join(h: &Harness, customer: &str, body: Value) -> (StatusCode, Value) {
    h.clock.advance(chrono::Duration::milliseconds(1));
    h.post("/api/v1/queue/join", customer, body).await
}

/// `customer` joins the default queue for an audio call; their entry.
async fn joined(h: &Harness, customer: &str) -> Value {
    let (status, body) = join(h, customer, json!({ "type": "audio" })).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["data"].clone()
}

/// `customer`'s open entry, or the error.
async fn place(h: &Harness, customer: &str) -> (StatusCode, Value) {
    h.get("/api/v1/queue/position", customer).await
}

async fn entry(h: &Harness, customer: &str) -> Value {
    let (status, body) = place(h, customer).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["data"].clone()
}

/// Waits for what the dispatcher does in the background, then dispatches until
/// nothing is left to assign.
async fn dispatched(h: &Harness) {
    h.server.state.queue.dispatch().await.expect("dispatch");
}

/// Applies the end of `call` (as the notifier's channel does, in the background
/// too: whichever comes first closes it) and dispatches.
async fn ended(h: &Harness, call: &str) {
    let call = call.parse().expect("call id");
    h.server.state.queue.call_ended(call).await.expect("end");
    dispatched(h).await;
}

/// The call and representative of `customer`'s assigned entry.
async fn assignment(h: &Harness, customer: &str) -> (String, String) {
    let e = entry(h, customer).await;
    assert_eq!(e["status"], "assigned", "{e}");
    (
        e["callId"].as_str().expect("callId").to_owned(),
        e["representativeId"].as_str().expect("rep").to_owned(),
    )
}

/// `c1` then `c2` join, and representative `r1` becomes available: `c1`'s call
/// rings `r1`. Returns the call.
async fn first_of_two_rings_r1(h: &Harness) -> String {
    joined(h, "c1").await;
    joined(h, "c2").await;
    idle_for(h, "r1", 10).await;
    dispatched(h).await;
    let (call, rep) = assignment(h, "c1").await;
    assert_eq!(rep, "r1");
    call
}

/// `user` ends (or declines) `call`, and its end is applied.
async fn hang_up(h: &Harness, call: &str, user: &str) {
    let (status, body) = h.end(call, user).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    ended(h, call).await;
}

async fn stats(h: &Harness) -> Value {
    let (status, body) = as_role(
        h,
        "admin",
        Method::GET,
        "/api/v1/queue/stats",
        "boss",
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["data"].clone()
}

on_both_backends! {
    async fn a_customer_joins_and_is_told_their_place_and_wait(h) {
        let first = joined(&h, "c1").await;
        assert_eq!(first["queue"], "default");
        assert_eq!(first["status"], "waiting");
        assert_eq!(first["position"], 1);
        assert_eq!(first["type"], "audio");
        assert_eq!(first["callback"], false);
        // Nobody served yet, nobody on duty: QUEUE_DEFAULT_HANDLE_SECONDS × 1 / 1.
        assert_eq!(first["estimatedWaitSeconds"], 180);
        assert!(first["entryId"].is_string(), "{first}");
        let second = joined(&h, "c2").await;
        assert_eq!(second["position"], 2);
        assert_eq!(second["estimatedWaitSeconds"], 360);
        // A `busy` representative is not on duty: the estimate stays.
        representative(&h, "r1", "busy", h.clock.now()).await;
        let again = entry(&h, "c2").await;
        assert_eq!(again["entryId"], second["entryId"]);
        assert_eq!(again["estimatedWaitSeconds"], 360);
    }

    async fn joining_is_refused_with_clear_errors(h) {
        joined(&h, "c1").await;
        let (status, body) = join(&h, "c1", json!({ "type": "video" })).await;
        assert_eq!((status, code(&body)), (StatusCode::CONFLICT, "ALREADY_IN_QUEUE"));
        let (status, body) = join(&h, "c2", json!({ "type": "audio", "queue": "sales" })).await;
        assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, "QUEUE_NOT_FOUND"));
        let (status, body) = join(&h, "c2", json!({ "type": "fax" })).await;
        assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "VALIDATION_ERROR"));
        assert_eq!(body["error"]["field"], "type");
        let (status, body) = join(&h, "c2", json!({})).await;
        assert_eq!((status, body["error"]["field"].as_str()), (StatusCode::BAD_REQUEST, Some("type")));
        for role in ["representative", "admin"] {
            let (status, body) = as_role(&h, role, Method::POST, "/api/v1/queue/join", "staff", json!({ "type": "audio" })).await;
            assert_eq!((status, code(&body)), (StatusCode::FORBIDDEN, "FORBIDDEN"), "{role}");
        }
        let (status, body) = place(&h, "c2").await;
        assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, "NOT_IN_QUEUE"));
        let (status, body) = h.post("/api/v1/queue/leave", "c2", json!({})).await;
        assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, "NOT_IN_QUEUE"));
        // Nothing refused was stored: c2 can still join, second in line.
        assert_eq!(joined(&h, "c2").await["position"], 2);
    }

    async fn a_customer_who_leaves_moves_the_others_up(h) {
        joined(&h, "c1").await;
        joined(&h, "c2").await;
        let (status, body) = h.post("/api/v1/queue/leave", "c1", json!({})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["data"]["status"], "left");
        assert_eq!(body["data"]["position"], 0);
        assert_eq!(entry(&h, "c2").await["position"], 1);
        // Left is final: a new join is a new place, at the end.
        let again = joined(&h, "c1").await;
        assert_eq!(again["position"], 2);
    }

    async fn a_callback_keeps_the_place_or_joins(h) {
        let first = joined(&h, "c1").await;
        joined(&h, "c2").await;
        let (status, body) = h.post("/api/v1/queue/callback", "c1", json!({})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["data"]["callback"], true);
        assert_eq!(body["data"]["position"], 1);
        assert_eq!(body["data"]["entryId"], first["entryId"]);
        let (status, body) = h.post("/api/v1/queue/callback", "c3", json!({})).await;
        assert_eq!((status, body["error"]["field"].as_str()), (StatusCode::BAD_REQUEST, Some("type")));
        let (status, body) = {
            h.clock.advance(chrono::Duration::milliseconds(1));
            h.post("/api/v1/queue/callback", "c3", json!({ "type": "video" })).await
        };
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body["data"]["callback"], true);
        assert_eq!(body["data"]["position"], 3);
        let figures = stats(&h).await;
        assert_eq!(figures["queues"][0]["callbacksPending"], 2);
        assert_eq!(figures["queues"][0]["waiting"], 3);
    }

    async fn the_longest_idle_representative_takes_the_first_customer(h) {
        idle_for(&h, "r-recent", 100).await;
        idle_for(&h, "r-longest", 200).await;
        joined(&h, "c1").await;
        joined(&h, "c2").await;
        dispatched(&h).await;
        let (call1, rep1) = assignment(&h, "c1").await;
        let (call2, rep2) = assignment(&h, "c2").await;
        assert_eq!((rep1.as_str(), rep2.as_str()), ("r-longest", "r-recent"));
        // The call rings the representative; the customer placed it.
        let call = h.call_of(&call1, "c1").await;
        assert_eq!(call["call"]["initiatorId"], "c1", "{call}");
        assert_eq!(call["call"]["state"], "ringing", "{call}");
        assert_ne!(call1, call2);
        let c1 = entry(&h, "c1").await;
        assert_eq!((c1["position"].as_i64(), c1["estimatedWaitSeconds"].as_i64()), (Some(0), Some(0)));
        let (status, body) = h.post("/api/v1/queue/leave", "c1", json!({})).await;
        assert_eq!((status, code(&body)), (StatusCode::CONFLICT, "QUEUE_ENTRY_ASSIGNED"));
    }

    async fn a_representative_who_declines_is_busy_and_the_customer_keeps_their_place(h) {
        let call = first_of_two_rings_r1(&h).await;
        hang_up(&h, &call, "r1").await;
        assert_eq!(availability(&h, "r1").await, "busy");
        let back = entry(&h, "c1").await;
        assert_eq!((back["status"].as_str(), back["position"].as_i64()), (Some("waiting"), Some(1)));
        assert_eq!(entry(&h, "c2").await["position"], 2);
        // The next representative takes the same customer first.
        idle_for(&h, "r2", 5).await;
        dispatched(&h).await;
        assert_eq!(assignment(&h, "c1").await.1, "r2");
        assert_eq!(entry(&h, "c2").await["status"], "waiting");
    }

    async fn a_representative_who_lets_it_ring_out_is_busy_and_the_customer_keeps_their_place(h) {
        let call = first_of_two_rings_r1(&h).await;
        h.advance_and_sweep(RINGING_TIMEOUT + 1).await;
        assert_eq!(h.call_of(&call, "c1").await["call"]["endReason"], "missed");
        ended(&h, &call).await;
        assert_eq!(availability(&h, "r1").await, "busy");
        assert_eq!(entry(&h, "c1").await["position"], 1);
        idle_for(&h, "r2", 5).await;
        dispatched(&h).await;
        assert_eq!(assignment(&h, "c1").await.1, "r2");
    }

    async fn a_representative_who_went_offline_while_rung_stays_offline(h) {
        let call = first_of_two_rings_r1(&h).await;
        representative(&h, "r1", "offline", h.clock.now()).await;
        hang_up(&h, &call, "r1").await;
        assert_eq!(availability(&h, "r1").await, "offline");
        assert_eq!(entry(&h, "c1").await["position"], 1);
    }

    async fn a_served_customer_frees_the_representative_for_the_next(h) {
        let call = first_of_two_rings_r1(&h).await;
        let (status, body) = h.join(&call, "r1").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        h.clock.advance(chrono::Duration::seconds(120));
        hang_up(&h, &call, "c1").await;
        let (status, body) = place(&h, "c1").await;
        assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, "NOT_IN_QUEUE"));
        assert_eq!(availability(&h, "r1").await, "available");
        let (next, rep) = assignment(&h, "c2").await;
        assert_eq!(rep, "r1");
        assert_ne!(next, call);
        let figures = stats(&h).await;
        assert_eq!(figures["queues"][0]["served"], 1, "{figures}");
        assert_eq!(figures["queues"][0]["waiting"], 0, "{figures}");
        let r1 = &figures["representatives"][0];
        assert_eq!((r1["userId"].as_str(), r1["callsHandled"].as_i64()), (Some("r1"), Some(1)), "{figures}");
        assert_eq!(r1["averageHandlingSeconds"], 120.0, "{figures}");
        assert_eq!(r1["averageRating"], Value::Null, "{figures}");
        // The estimate now uses the real handling time: c3 is first in line with r1 on duty.
        let c3 = joined(&h, "c3").await;
        assert_eq!(c3["estimatedWaitSeconds"], 120, "{c3}");
    }

    async fn a_customer_who_hangs_up_before_an_answer_has_left(h) {
        let call = first_of_two_rings_r1(&h).await;
        hang_up(&h, &call, "c1").await;
        assert_eq!(place(&h, "c1").await.0, StatusCode::NOT_FOUND);
        assert_eq!(availability(&h, "r1").await, "available");
        assert_eq!(assignment(&h, "c2").await.1, "r1");
    }

    async fn a_customer_away_past_connection_timeout_is_abandoned_unless_called_back(h) {
        joined(&h, "gone").await;
        joined(&h, "returns").await;
        h.clock.advance(chrono::Duration::milliseconds(1));
        let (status, _) = h.post("/api/v1/queue/callback", "patient", json!({ "type": "audio" })).await;
        assert_eq!(status, StatusCode::CREATED);
        let queue = &h.server.state.queue;
        for user in ["gone", "returns", "patient"] {
            queue.away(&UserId(user.into())).await.expect("away");
        }
        h.clock.advance(chrono::Duration::seconds(CONNECTION_TIMEOUT - 5));
        queue.back(&UserId("returns".into())).await.expect("back");
        h.clock.advance(chrono::Duration::seconds(10));
        queue.tick().await.expect("tick");
        assert_eq!(place(&h, "gone").await.0, StatusCode::NOT_FOUND);
        assert_eq!(entry(&h, "returns").await["position"], 1);
        assert_eq!(entry(&h, "patient").await["position"], 2);
        let figures = stats(&h).await;
        assert_eq!(figures["queues"][0]["abandoned"], 1, "{figures}");
    }

    async fn a_callback_rings_the_customer_and_unanswered_is_missed(h) {
        let (status, _) = h.post("/api/v1/queue/callback", "c1", json!({ "type": "audio" })).await;
        assert_eq!(status, StatusCode::CREATED);
        joined(&h, "c2").await;
        idle_for(&h, "r1", 10).await;
        dispatched(&h).await;
        let (call, _) = assignment(&h, "c1").await;
        let placed = h.call_of(&call, "r1").await;
        assert_eq!(placed["call"]["initiatorId"], "r1", "{placed}");
        h.advance_and_sweep(RINGING_TIMEOUT + 1).await;
        ended(&h, &call).await;
        assert_eq!(place(&h, "c1").await.0, StatusCode::NOT_FOUND);
        // Nobody answered, but the representative did ring: still available.
        assert_eq!(availability(&h, "r1").await, "available");
        let (next, _) = assignment(&h, "c2").await;
        hang_up(&h, &next, "c2").await;
        // A callback the customer answers is served.
        let (status, _) = h.post("/api/v1/queue/callback", "c3", json!({ "type": "audio" })).await;
        assert_eq!(status, StatusCode::CREATED);
        dispatched(&h).await;
        let (call, _) = assignment(&h, "c3").await;
        assert_eq!(h.join(&call, "c3").await.0, StatusCode::OK);
        hang_up(&h, &call, "r1").await;
        assert_eq!(stats(&h).await["queues"][0]["served"], 1);
    }

    async fn an_assignment_whose_call_never_started_is_undone(h) {
        joined(&h, "c1").await;
        // A crash between the claim and the call's start: both rows claimed, no call.
        let lost = huddle::calls::model::CallId::random().to_string();
        let now = h.clock.now();
        let db = db(&h).await;
        on_db!(&db, |pool| {
            sqlx::query(
                "INSERT INTO users (user_id, role, availability, idle_since, current_call_id, \
                 created_at, updated_at) VALUES ('r1', 'representative', 'available', $1, $2, $1, $1)",
            )
            .bind(now)
            .bind(&lost)
            .execute(pool)
            .await
            .expect("representative");
            sqlx::query("INSERT INTO representative_queues (user_id, queue) VALUES ('r1', 'default')")
                .execute(pool)
                .await
                .expect("queue");
            sqlx::query(
                "UPDATE queue_entries SET status = 'assigned', representative_id = 'r1', \
                 call_id = $1, assigned_at = $2, attempts = 1",
            )
            .bind(&lost)
            .bind(now)
            .execute(pool)
            .await
            .expect("claim");
        });
        assert_eq!(assignment(&h, "c1").await.0, lost);
        h.clock.advance(chrono::Duration::seconds(31));
        h.server.state.queue.tick().await.expect("tick");
        // Undone, then given again with a call that exists.
        let (again, rep) = assignment(&h, "c1").await;
        assert_eq!(rep, "r1");
        assert_ne!(again, lost);
        assert_eq!(h.call_of(&again, "c1").await["call"]["state"], "ringing");
    }

    async fn statistics_are_for_representatives_and_admins(h) {
        let (status, body) = h.get("/api/v1/queue/stats", "c1").await;
        assert_eq!((status, code(&body)), (StatusCode::FORBIDDEN, "FORBIDDEN"));
        joined(&h, "c1").await;
        h.clock.advance(chrono::Duration::seconds(42));
        representative(&h, "r1", "offline", h.clock.now()).await;
        let (status, body) = as_role(&h, "representative", Method::GET, "/api/v1/queue/stats?queue=default", "r1", json!({})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(
            body["data"],
            json!({
                "queues": [{
                    "queue": "default", "waiting": 1, "averageWaitSeconds": null,
                    "longestWaitSeconds": 42, "served": 0, "abandoned": 0, "callbacksPending": 0,
                }],
                "representatives": [{
                    "userId": "r1", "displayName": "r1", "availability": "offline",
                    "callsHandled": 0, "averageHandlingSeconds": null, "averageRating": null,
                }],
            })
        );
        let (status, body) = as_role(&h, "admin", Method::GET, "/api/v1/queue/stats?queue=nope", "boss", json!({})).await;
        assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, "QUEUE_NOT_FOUND"));
    }

    async fn admins_create_queues_that_customers_join(h) {
        let (status, body) = h.get("/api/v1/queues", "c1").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["data"]["queues"][0]["name"], "default");
        let new = json!({ "name": "billing", "description": "Invoices" });
        let (status, body) = h.post("/api/v1/queues", "c1", new.clone()).await;
        assert_eq!((status, code(&body)), (StatusCode::FORBIDDEN, "FORBIDDEN"));
        let (status, body) = as_role(&h, "admin", Method::POST, "/api/v1/queues", "boss", new.clone()).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body["data"]["queue"]["name"], "billing");
        let (status, body) = as_role(&h, "admin", Method::POST, "/api/v1/queues", "boss", new).await;
        assert_eq!((status, code(&body)), (StatusCode::CONFLICT, "QUEUE_EXISTS"));
        let (status, body) = as_role(&h, "admin", Method::POST, "/api/v1/queues", "boss", json!({ "name": "a b" })).await;
        assert_eq!((status, body["error"]["field"].as_str()), (StatusCode::BAD_REQUEST, Some("name")));
        let (status, body) = join(&h, "c1", json!({ "type": "audio", "queue": "billing" })).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body["data"]["queue"], "billing");
        // A representative of `default` is not given a `billing` customer.
        idle_for(&h, "r1", 10).await;
        dispatched(&h).await;
        assert_eq!(entry(&h, "c1").await["status"], "waiting");
    }
}

/// What the database says of every entry: (customer, status, representative, call).
async fn entries(pool: &PgPool) -> Vec<(String, String, Option<String>, Option<String>)> {
    sqlx::query_as(
        "SELECT customer_id, status, representative_id, call_id FROM queue_entries \
         ORDER BY joined_at, id",
    )
    .fetch_all(pool)
    .await
    .expect("entries")
}

/// Dispatches on every server at once, several times each.
async fn race(servers: &[&Server]) {
    let mut tasks = Vec::new();
    for server in servers {
        for _ in 0..3 {
            let queue = server.state.queue.clone();
            tasks.push(tokio::spawn(async move { queue.dispatch().await }));
        }
    }
    for task in tasks {
        task.await.expect("task").expect("dispatch");
    }
}

#[tokio::test]
async fn servers_racing_on_one_database_assign_each_customer_once_in_order() {
    const CUSTOMERS: usize = 30;
    const REPS: usize = 6;
    let h = Harness::start(Backend::Postgres).await;
    // Started before anyone joins (a starting server counts every customer away).
    let (second, third) = (h.another_server().await, h.another_server().await);
    let servers = [&h.server, &second, &third];
    let Db::Postgres(pool) = db(&h).await else {
        unreachable!("PostgreSQL")
    };
    for i in 0..CUSTOMERS {
        joined(&h, &format!("c{i:02}")).await;
        h.clock.advance(chrono::Duration::milliseconds(10));
    }
    for r in 0..REPS {
        representative(&h, &format!("r{r}"), "available", h.clock.now()).await;
    }
    let mut served = 0;
    while served < CUSTOMERS {
        race(&servers).await;
        let all = entries(&pool).await;
        let assigned: Vec<_> = all.iter().filter(|e| e.1 == "assigned").collect();
        let open: Vec<_> = all.iter().filter(|e| e.1 != "served").collect();
        // Every free representative took someone, and those are the first in line.
        assert_eq!(assigned.len(), REPS.min(open.len()), "{all:?}");
        assert!(
            open.iter().take(assigned.len()).all(|e| e.1 == "assigned"),
            "skipped: {all:?}"
        );
        let mut reps: Vec<_> = assigned.iter().map(|e| e.2.clone()).collect();
        reps.sort();
        reps.dedup();
        assert_eq!(
            reps.len(),
            assigned.len(),
            "a representative given two: {all:?}"
        );
        let rows: Vec<(String, Option<String>)> = sqlx::query_as(
            "SELECT user_id, current_call_id FROM users WHERE role = 'representative'",
        )
        .fetch_all(&pool)
        .await
        .expect("reps");
        for e in &assigned {
            let rep = rows
                .iter()
                .find(|r| Some(&r.0) == e.2.as_ref())
                .expect("rep");
            assert_eq!(rep.1, e.3, "the representative is in the entry's call");
        }
        // Every representative answers and hangs up at once, on different servers.
        let mut ends = Vec::new();
        for (i, e) in assigned.iter().enumerate() {
            let (call, rep) = (e.3.clone().expect("call"), e.2.clone().expect("rep"));
            assert_eq!(h.join(&call, &rep).await.0, StatusCode::OK);
            let queue = servers[i % servers.len()].state.queue.clone();
            let addr = h.addr();
            let token = h.token(&rep);
            ends.push(tokio::spawn(async move {
                let headers = [
                    ("authorization", format!("Bearer {token}")),
                    ("content-type", "application/json".to_owned()),
                ];
                let path = format!("/api/v1/calls/{call}/end");
                let (status, _) = raw(addr, Method::POST, &path, &headers, b"{}".to_vec()).await;
                assert_eq!(status, StatusCode::OK);
                queue.call_ended(call.parse().expect("id")).await
            }));
        }
        for end in ends {
            end.await.expect("task").expect("end");
        }
        served += assigned.len();
        let done = entries(&pool)
            .await
            .iter()
            .filter(|e| e.1 == "served")
            .count();
        assert_eq!(done, served);
    }
    // Nothing else arrives late: every customer was served exactly once.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let all = entries(&pool).await;
    assert!(all.iter().all(|e| e.1 == "served"), "{all:?}");
    second.stop().await;
    third.stop().await;
    h.finish().await;
}
