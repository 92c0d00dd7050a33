//! Test harness: a real Huddle server on 127.0.0.1:0, talking real HTTP, over a
//! fresh database per test: a new SQLite file, or a new schema in the PostgreSQL at
//! TEST_DATABASE_URL (default `postgres://postgres@127.0.0.1:5432/test`). A test
//! that needs PostgreSQL fails, loudly, when it is unreachable.
//!
//! Time is a `ManualClock`: tests advance it and run the sweeper instead of sleeping.

#![allow(dead_code)] // each test binary uses a different part of the harness

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;

use chrono::{Duration, Utc};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use sqlx::Connection;
use tokio::net::TcpStream;

use huddle::auth::{Claims, JwtKey};
use huddle::clock::{Clock, ManualClock};
use huddle::config::Config;
use huddle::server::Server;

pub const SECRET: &str = "integration-test-secret-0123456789";
/// TURN_SECRET of the harness's server.
pub const TURN_SECRET: &str = "integration-turn-secret-0123456789";
/// The harness's limits: small enough to reach in a test.
pub const MAX_PARTICIPANTS: u32 = 4;
pub const RINGING_TIMEOUT: i64 = 60;
pub const MAX_DURATION: i64 = 3600;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub fn postgres_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// Where a test's database lives, to be removed when the test ends.
enum Scratch {
    File(std::path::PathBuf),
    Schema(String),
}

pub struct Harness {
    pub server: Server,
    pub clock: Arc<ManualClock>,
    scratch: Scratch,
    config: Config,
}

/// A fresh, empty database for one test, and the URL that reaches it.
async fn scratch_database(backend: Backend) -> (String, Scratch) {
    match backend {
        Backend::Sqlite => {
            let path = std::env::temp_dir()
                .join(format!("huddle-test-{}.db", uuid::Uuid::new_v4().simple()));
            (format!("sqlite://{}", path.display()), Scratch::File(path))
        }
        Backend::Postgres => {
            let base = postgres_url();
            let schema = format!("huddle_test_{}", uuid::Uuid::new_v4().simple());
            let mut conn = sqlx::PgConnection::connect(&base)
                .await
                .unwrap_or_else(|e| panic!("PostgreSQL at {base} is required for this test: {e}"));
            sqlx::query(&format!("CREATE SCHEMA {schema}"))
                .execute(&mut conn)
                .await
                .expect("create test schema");
            let separator = if base.contains('?') { '&' } else { '?' };
            (
                format!("{base}{separator}options=-c%20search_path%3D{schema}"),
                Scratch::Schema(schema),
            )
        }
    }
}

impl Harness {
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, &[]).await
    }

    /// Starts a server with the harness's settings plus `extra` flags.
    pub async fn start_with(backend: Backend, extra: &[&str]) -> Self {
        let (url, scratch) = scratch_database(backend).await;
        Self::launch(url, scratch, extra).await
    }

    /// Starts a server on a database that was first brought to migration `version`
    /// only and handed (by URL) to `fill`: the server's start applies the later
    /// migrations to the rows `fill` wrote, as an upgrade does.
    pub async fn start_from_version<F, Fut>(backend: Backend, version: i64, fill: F) -> Self
    where
        F: FnOnce(String) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let (url, scratch) = scratch_database(backend).await;
        let until = |mut migrator: sqlx::migrate::Migrator| {
            let kept: Vec<_> = migrator
                .migrations
                .iter()
                .filter(|m| m.version <= version)
                .cloned()
                .collect();
            migrator.migrations = kept.into();
            migrator
        };
        match backend {
            Backend::Sqlite => {
                let options = sqlx::sqlite::SqliteConnectOptions::from_str(&url)
                    .expect("sqlite url")
                    .create_if_missing(true);
                let mut conn = sqlx::SqliteConnection::connect_with(&options)
                    .await
                    .expect("sqlite");
                until(sqlx::migrate!("migrations/sqlite"))
                    .run(&mut conn)
                    .await
                    .expect("early migrations");
            }
            Backend::Postgres => {
                let mut conn = sqlx::PgConnection::connect(&url).await.expect("postgres");
                until(sqlx::migrate!("migrations/postgres"))
                    .run(&mut conn)
                    .await
                    .expect("early migrations");
            }
        }
        fill(url.clone()).await;
        Self::launch(url, scratch, &[]).await
    }

    async fn launch(url: String, scratch: Scratch, extra: &[&str]) -> Self {
        let max = MAX_PARTICIPANTS.to_string();
        let ringing = RINGING_TIMEOUT.to_string();
        let duration = MAX_DURATION.to_string();
        let mut args = vec![
            "huddle",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--database-url",
            &url,
            "--jwt-secret",
            SECRET,
            "--max-call-participants",
            &max,
            "--ringing-timeout",
            &ringing,
            "--max-call-duration",
            &duration,
            "--sfu-host",
            "127.0.0.1",
            "--sfu-port",
            "0",
            "--turn-host",
            "127.0.0.1",
            "--turn-port",
            "0",
            "--turn-secret",
            TURN_SECRET,
            "--turn-ttl",
            "3600",
        ];
        args.extend_from_slice(extra);
        let config = Config::from_args(args).expect("test configuration");
        let clock = Arc::new(ManualClock::new(Utc::now()));
        let server = Server::start(&config, clock.clone())
            .await
            .expect("server starts");
        Harness {
            server,
            clock,
            scratch,
            config,
        }
    }

    /// A restart: a new server on the same database and clock (and new ports)
    /// takes over, and the old one stops as on SIGTERM.
    pub async fn restart(&mut self) {
        let server = Server::start(&self.config, self.clock.clone())
            .await
            .expect("server restarts");
        std::mem::replace(&mut self.server, server).stop().await;
    }

    /// Another server on the same database and clock, as another node of a
    /// cluster without Redis: for tests of what nodes race for in the database.
    pub async fn another_server(&self) -> Server {
        Server::start(&self.config, self.clock.clone())
            .await
            .expect("another server starts")
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    /// The URL of the test's own database, for tests that write rows directly.
    pub fn database_url(&self) -> &str {
        &self.config.database_url
    }

    /// Checks that `ice` is what a client of the harness's server gets for `user`:
    /// the embedded TURN server as STUN, and as TURN over UDP and TCP with fresh
    /// credentials for `user` that TURN_SECRET signs.
    pub fn assert_ice_servers_for(&self, ice: &Value, user: &str) {
        let turn = self
            .server
            .state
            .turn
            .as_ref()
            .expect("the embedded TURN server runs")
            .local_addr();
        let at = format!("127.0.0.1:{}", turn.port());
        assert_eq!(ice[0], json!({ "urls": [format!("stun:{at}")] }), "{ice}");
        assert_eq!(
            ice[1]["urls"],
            json!([
                format!("turn:{at}?transport=udp"),
                format!("turn:{at}?transport=tcp")
            ]),
            "{ice}"
        );
        assert_eq!(ice.as_array().map(Vec::len), Some(2), "{ice}");
        let username = ice[1]["username"].as_str().expect("a TURN username");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let (expiry, owner) = huddle_turn::parse_username(username, now).expect("unexpired");
        assert_eq!(owner, user);
        assert!(
            (now + 3590..=now + 3601).contains(&expiry),
            "TURN_TTL is 3600: {expiry} vs {now}"
        );
        assert_eq!(
            ice[1]["credential"].as_str(),
            Some(
                huddle_turn::Secret::new(TURN_SECRET)
                    .password(username)
                    .as_str()
            )
        );
    }

    /// A token for `user`, valid for a day of the harness's clock.
    pub fn token(&self, user: &str) -> String {
        self.token_with(user, None)
    }

    pub fn admin_token(&self, user: &str) -> String {
        self.token_with(user, Some("admin"))
    }

    /// A token for `user` with the `role` claim `role` (none: a customer).
    pub fn token_with(&self, user: &str, role: Option<&str>) -> String {
        let now = self.clock.now().timestamp();
        JwtKey::new(SECRET.as_bytes()).sign(&Claims {
            sub: user.into(),
            exp: now + 86_400,
            iat: Some(now),
            nbf: None,
            name: Some(format!("{user} name")),
            role: role.map(str::to_owned),
        })
    }

    /// Moves the server's clock forward and applies the timeout rules, as the
    /// sweeper would on its next tick.
    pub async fn advance_and_sweep(&self, seconds: i64) -> usize {
        self.clock.advance(Duration::seconds(seconds));
        self.server.state.service.sweep().await.expect("sweep")
    }

    /// A request as `user` (no Authorization header for `None`) with a JSON body.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        user: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let token = user.map(|u| self.token(u));
        let body = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let headers: Vec<(&str, String)> = token
            .iter()
            .map(|t| ("authorization", format!("Bearer {t}")))
            .chain(std::iter::once((
                "content-type",
                "application/json".to_owned(),
            )))
            .collect();
        let (status, bytes) = raw(self.addr(), method, path, &headers, body).await;
        let json = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "{path} answered {status} with non-JSON ({e}): {}",
                String::from_utf8_lossy(&bytes)
            )
        });
        (status, json)
    }

    pub async fn get(&self, path: &str, user: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, Some(user), None).await
    }

    pub async fn post(&self, path: &str, user: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(user), Some(body)).await
    }

    /// Starts a call from `initiator` to `invitees`; returns its id.
    pub async fn start_call(&self, initiator: &str, call_type: &str, invitees: &[&str]) -> String {
        let (status, body) = self
            .post(
                "/api/v1/calls/start",
                initiator,
                serde_json::json!({ "type": call_type, "participantIds": invitees }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["data"]["call"]["id"]
            .as_str()
            .expect("call id")
            .to_owned()
    }

    pub async fn join(&self, call: &str, user: &str) -> (StatusCode, Value) {
        self.post(
            &format!("/api/v1/calls/{call}/join"),
            user,
            serde_json::json!({}),
        )
        .await
    }

    pub async fn end(&self, call: &str, user: &str) -> (StatusCode, Value) {
        self.post(
            &format!("/api/v1/calls/{call}/end"),
            user,
            serde_json::json!({}),
        )
        .await
    }

    /// The call as its member `user` sees it.
    pub async fn call_of(&self, call: &str, user: &str) -> Value {
        let (status, body) = self.get(&format!("/api/v1/calls/{call}"), user).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["data"].clone()
    }

    /// Stops the server and removes the test's database.
    pub async fn finish(self) {
        self.server.stop().await;
        match self.scratch {
            Scratch::File(path) => {
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
                }
            }
            Scratch::Schema(schema) => {
                let mut conn = sqlx::PgConnection::connect(&postgres_url())
                    .await
                    .expect("postgres");
                sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
                    .execute(&mut conn)
                    .await
                    .expect("drop test schema");
            }
        }
    }
}

/// One HTTP/1.1 request on a new connection; returns status and body bytes.
pub async fn raw(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, String)],
    body: Vec<u8>,
) -> (StatusCode, Bytes) {
    let (status, _, bytes) = raw_with_headers(addr, method, path, headers, body).await;
    (status, bytes)
}

pub async fn raw_with_headers(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, String)],
    body: Vec<u8>,
) -> (StatusCode, hyper::HeaderMap, Bytes) {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(connection);
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = sender
        .send_request(request.body(Full::new(Bytes::from(body))).expect("request"))
        .await
        .expect("response");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, headers, bytes)
}

/// Declares each test once and runs it against SQLite and against PostgreSQL:
/// `async fn name(h) { ... }` becomes `sqlite::name` and `postgres::name`. With
/// `flags = ["--flag", "value"];` first, each server starts with those flags too.
#[macro_export]
macro_rules! on_both_backends {
    (flags = [$($flag:expr),* $(,)?]; $($tests:tt)*) => {
        $crate::tests_on_backend!(sqlite, Sqlite, [$($flag),*], $($tests)*);
        $crate::tests_on_backend!(postgres, Postgres, [$($flag),*], $($tests)*);
    };
    ($($tests:tt)*) => {
        $crate::on_both_backends!(flags = []; $($tests)*);
    };
}

/// One module of [`on_both_backends!`]: the tests, each on a fresh `$backend` server.
#[macro_export]
macro_rules! tests_on_backend {
    ($module:ident, $backend:ident, $flags:tt, $(async fn $name:ident($h:ident) $body:block)*) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test]
                async fn $name() {
                    #[allow(unused_mut)]
                    let mut $h =
                        common::Harness::start_with(common::Backend::$backend, &$flags).await;
                    $body
                    $h.finish().await;
                }
            )*
        }
    };
}
