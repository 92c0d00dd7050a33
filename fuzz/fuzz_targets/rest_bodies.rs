//! Any bytes as the body of a request to the HTTP API, driven through the router with
//! no port (an in-memory SQLite store, one server for the whole run). Each input
//! starts with two bytes: which route, which caller and which call, and whether the
//! body is labelled JSON. Before it, alice rings bob in a fresh call; after it, the
//! call ends, so inputs do not pile up active calls.
//!
//! Never a panic, never a 5xx: bad input is a 4xx in the JSON error shape.

#![no_main]

use std::sync::OnceLock;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use huddle::api::{self, MetricsRoute};
use huddle::auth::{Claims, JwtKey};
use huddle::clock::SystemClock;
use huddle::config::Config;
use huddle::server::Server;
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};
use tokio::runtime::Runtime;
use tower::ServiceExt;

const JWT_SECRET: &str = "fuzz-jwt-secret-0123456789abcdef";

struct World {
    runtime: Runtime,
    app: Router,
    jwt: JwtKey,
    /// Keeps the store, the SFU and the sweeper alive.
    _server: Server,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let config = Config::from_args([
            "huddle",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--database-url",
            "sqlite::memory:",
            "--jwt-secret",
            JWT_SECRET,
            "--sfu-host",
            "127.0.0.1",
            "--sfu-port",
            "0",
            "--turn-embedded",
            "false",
            "--demo-tokens",
            "true",
            // Each input replays the same few users: limits meant for real clients
            // would refuse the scaffolding the target needs, not the input under test.
            "--rate-limit-user-per-sec",
            "0",
            "--rate-limit-ip-per-sec",
            "0",
            "--decline-cooldown",
            "0",
        ])
        .expect("fuzz configuration");
        let server = runtime
            .block_on(Server::start(&config, std::sync::Arc::new(SystemClock)))
            .expect("server starts");
        World {
            app: api::app(server.state.clone(), MetricsRoute::Main),
            runtime,
            jwt: JwtKey::new(JWT_SECRET.as_bytes()),
            _server: server,
        }
    })
}

impl World {
    fn token(&self, user: &str, role: Option<&str>) -> String {
        self.jwt.sign(&Claims {
            sub: user.into(),
            exp: i64::MAX / 2,
            iat: None,
            nbf: None,
            name: None,
            role: role.map(str::to_owned),
        })
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        caller: Option<(&str, Option<&str>)>,
        json: bool,
        body: Vec<u8>,
    ) -> (StatusCode, Vec<u8>) {
        let mut request = Request::builder().method(method).uri(path);
        if let Some((user, role)) = caller {
            request = request.header(
                "authorization",
                format!("Bearer {}", self.token(user, role)),
            );
        }
        if json {
            request = request.header("content-type", "application/json");
        }
        let response = self
            .app
            .clone()
            .oneshot(request.body(Body::from(body)).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, bytes.to_vec())
    }
}

fuzz_target!(|data: &[u8]| {
    let [route, who, body @ ..] = data else {
        return;
    };
    let world = world();
    world.runtime.block_on(async {
        let (status, started) = world
            .send(
                Method::POST,
                "/api/v1/calls/start",
                Some(("alice", None)),
                true,
                json!({ "type": "video", "participantIds": ["bob"] })
                    .to_string()
                    .into_bytes(),
            )
            .await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{}",
            String::from_utf8_lossy(&started)
        );
        let started: Value = serde_json::from_slice(&started).unwrap();
        let live = started["data"]["call"]["id"].as_str().unwrap().to_owned();

        let call = match (who >> 2) & 3 {
            0 | 1 => live.as_str(),
            2 => "00000000-0000-4000-8000-000000000000",
            _ => "not-a-call",
        };
        let caller = match who & 3 {
            0 => Some(("alice", None)),
            1 => Some(("bob", None)),
            2 => Some(("root", Some("admin"))),
            _ => None,
        };
        let (method, path) = match route % 6 {
            0 => (Method::POST, "/api/v1/calls/start".to_owned()),
            1 => (Method::POST, format!("/api/v1/calls/{call}/join")),
            2 => (Method::POST, format!("/api/v1/calls/{call}/end")),
            3 => (Method::POST, format!("/api/v1/calls/{call}/token")),
            4 => (Method::PATCH, format!("/api/v1/calls/{call}/participant")),
            _ => (Method::POST, "/demo/token".to_owned()),
        };
        let json = who & 16 == 0;
        let (status, answer) = world.send(method, &path, caller, json, body.to_vec()).await;
        assert!(
            !status.is_server_error(),
            "{path} answered {status}: {}",
            String::from_utf8_lossy(&answer)
        );

        // Whatever the input did, no call its callers started stays active.
        for (user, role) in [("alice", None), ("bob", None), ("root", Some("admin"))] {
            let caller = Some((user, role));
            let (status, active) = world
                .send(Method::GET, "/api/v1/calls/active", caller, true, vec![])
                .await;
            assert_eq!(status, StatusCode::OK);
            let active: Value = serde_json::from_slice(&active).unwrap();
            for call in active["data"]["calls"].as_array().into_iter().flatten() {
                let path = format!("/api/v1/calls/{}/end", call["id"].as_str().unwrap());
                let body = json!({ "reason": "normal" }).to_string().into_bytes();
                let (status, answer) = world.send(Method::POST, &path, caller, true, body).await;
                assert_eq!(
                    status,
                    StatusCode::OK,
                    "{path}: {}",
                    String::from_utf8_lossy(&answer)
                );
            }
        }
    });
});
