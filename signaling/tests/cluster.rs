//! Cluster mode with real parts: two clustered `Signaling` nodes, each behind its own
//! HTTP listener, sharing a `redis-server` the test starts (and kills), with sockets
//! of the official socket.io client (Node, `tests/socketio/node_modules`).
//!
//! Needs `redis-server`, `node` and `npm` on the PATH (the client's packages are
//! installed into `tests/socketio` from its lock file if missing): without them the
//! tests fail, they do not skip.

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use signaling::events::{self, Notice};
use signaling::{BoxFuture, CallDomain, SignalError, Signaling, User};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

/// How long to keep listening, once what was expected has arrived, for anything more
/// (a second copy).
const QUIET: Duration = Duration::from_millis(400);
/// Longest wait for anything expected.
const PATIENCE: Duration = Duration::from_secs(15);
/// How long Redis stays down: longer than the redis crate's `ConnectionManager` keeps
/// retrying on its own (6 attempts, ~3 s), so that coming back relies on the node
/// trying again by itself.
const OUTAGE: Duration = Duration::from_secs(6);
/// socketioxide-redis's channel for requests to every node of the default namespace.
const REQUEST_CHANNEL: &str = "socket.io-request#/#";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notice_reaches_every_socket_of_its_user_on_every_node_exactly_once_and_in_order() {
    let redis = RedisServer::start();
    let (node1, url1) = node(&redis.url()).await;
    let (_node2, url2) = node(&redis.url()).await;
    redis.wait_for_subscribers(2).await;
    let mut clients = Clients::start();
    clients.connect("alice@1", &url1, "alice").await;
    clients.connect("alice@2", &url2, "alice").await;
    clients.connect("bob@1", &url1, "bob").await;

    for n in 1..=5 {
        node1.notify(vec!["alice".into()], state_changed(&format!("s{n}")));
    }

    let received = clients.receive(10).await;
    for socket in ["alice@1", "alice@2"] {
        let states: Vec<&Value> = received
            .iter()
            .filter(|m| m["id"] == socket)
            .map(|m| &m["data"]["state"])
            .collect();
        assert_eq!(
            states,
            ["s1", "s2", "s3", "s4", "s5"],
            "{socket}, all of it: {received:#?}"
        );
    }
    assert!(received.iter().all(|m| m["event"] == "call:state_changed"));
    assert!(
        received.iter().all(|m| m["id"] != "bob@1"),
        "bob is not told: {received:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_reaches_the_target_on_another_node() {
    let redis = RedisServer::start();
    let (_node1, url1) = node(&redis.url()).await;
    let (_node2, url2) = node(&redis.url()).await;
    redis.wait_for_subscribers(2).await;
    let mut clients = Clients::start();
    clients.connect("bob@1", &url1, "bob").await;
    clients.connect("alice@2", &url2, "alice").await;

    clients
        .emit("bob@1", events::webrtc::OFFER, offer("alice"))
        .await;

    let received = clients.receive(2).await;
    assert_eq!(
        without_order(received),
        without_order(vec![
            json!({ "id": "bob@1", "ack": { "ok": true } }),
            json!({ "id": "alice@2", "event": "webrtc:offer", "data": {
                "callId": "call-1", "fromUserId": "bob", "offer": { "type": "offer", "sdp": "v=0" }
            } }),
        ])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_redis_is_down_local_sockets_are_served_and_once_it_is_back_other_nodes_are_too() {
    let mut redis = RedisServer::start();
    let (node1, url1) = node(&redis.url()).await;
    let (node2, url2) = node(&redis.url()).await;
    redis.wait_for_subscribers(2).await;
    let mut clients = Clients::start();
    clients.connect("alice@1", &url1, "alice").await;
    clients.connect("alice@2", &url2, "alice").await;
    clients.connect("bob@1", &url1, "bob").await;

    redis.kill();
    node1.notify(vec!["alice".into()], state_changed("during the outage"));
    let received = clients.receive(1).await;
    assert_eq!(
        received.iter().map(|m| &m["id"]).collect::<Vec<_>>(),
        ["alice@1"],
        "this node's socket is served, the other node cannot be: {received:#?}"
    );
    let given_up = Instant::now();
    while node1.unpublished() == 0 {
        assert!(given_up.elapsed() < PATIENCE, "the publish never gave up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "with Redis down, the publish gave up after {:?}",
        given_up.elapsed()
    );

    tokio::time::sleep(OUTAGE).await;
    let restarted = Instant::now();
    redis.restart();
    redis.wait_for_subscribers(2).await;
    eprintln!(
        "both nodes subscribed again {:?} after Redis restarted",
        restarted.elapsed()
    );

    node1.notify(vec!["alice".into()], state_changed("after the restart"));
    let received = clients.receive(2).await;
    assert_eq!(
        without_order(received.iter().map(|m| m["id"].clone()).collect()),
        ["alice@1", "alice@2"],
        "{received:#?}"
    );
    clients
        .emit("bob@1", events::webrtc::OFFER, offer("alice"))
        .await;
    let received = clients.receive(3).await;
    assert_eq!(
        without_order(received.iter().map(|m| m["id"].clone()).collect()),
        ["alice@1", "alice@2", "bob@1"],
        "the relay reaches both of alice's sockets, bob has his ack: {received:#?}"
    );
    node2.notify(vec!["bob".into()], state_changed("from node 2"));
    let received = clients.receive(1).await;
    assert_eq!(received[0]["id"], "bob@1", "{received:#?}");
    assert_eq!(received.len(), 1, "{received:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_node_publishes_what_it_produced_then_refuses_sockets() {
    let redis = RedisServer::start();
    let (node1, url1) = node(&redis.url()).await;
    let (_node2, url2) = node(&redis.url()).await;
    redis.wait_for_subscribers(2).await;
    let mut clients = Clients::start();
    clients.connect("alice@2", &url2, "alice").await;

    for n in 1..=3 {
        node1.notify(vec!["alice".into()], state_changed(&format!("s{n}")));
    }
    node1.drain(Duration::from_secs(2)).await;

    let received = clients.receive(3).await;
    let states: Vec<&Value> = received.iter().map(|m| &m["data"]["state"]).collect();
    assert_eq!(states, ["s1", "s2", "s3"], "{received:#?}");
    clients
        .send(json!({ "op": "connect", "id": "late@1", "url": url1, "token": "bob" }))
        .await;
    let refused = clients.receive(1).await;
    assert_eq!(refused[0]["id"], "late@1", "{refused:#?}");
    assert!(refused[0]["connectError"].is_string(), "{refused:#?}");
    assert_eq!(node1.slow_consumers(), 0);
    assert_eq!(node1.unpublished(), 0);
}

fn state_changed(state: &str) -> Notice {
    Notice::StateChanged {
        call_id: "call-1".into(),
        state: state.into(),
    }
}

fn offer(target: &str) -> Value {
    json!({
        "callId": "call-1",
        "targetUserId": target,
        "offer": { "type": "offer", "sdp": "v=0" },
    })
}

/// `values` sorted by their text, to compare sets of messages from several sockets.
fn without_order(mut values: Vec<Value>) -> Vec<Value> {
    values.sort_by_key(|v| v.to_string());
    values
}

/// A clustered node serving `domain` on `127.0.0.1:0`; its URL.
async fn node(redis_url: &str) -> (Signaling, String) {
    let client = signaling::redis::Client::open(redis_url).expect("a Redis URL");
    let (layer, signaling) = Signaling::clustered(client)
        .await
        .expect("signaling joins the cluster");
    signaling.start(Arc::new(Members));
    let app = axum::Router::new()
        .route("/health", axum::routing::get(async || "ok"))
        .layer(layer);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let url = format!("http://{}", listener.local_addr().expect("an address"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (signaling, url)
}

/// A domain where the token is the user id and everyone is in every call.
struct Members;

impl CallDomain for Members {
    fn authenticate(&self, token: &str, _: &http::request::Parts) -> Result<User, String> {
        Ok(User {
            id: token.to_owned(),
            name: None,
            ip: None,
            admin: false,
            role: "customer".into(),
        })
    }
    fn admit(&self, _: &User) -> Result<(), SignalError> {
        Ok(())
    }
    fn handle<'a>(
        &'a self,
        _: &'a User,
        _: events::Request,
    ) -> BoxFuture<'a, Result<Value, SignalError>> {
        Box::pin(async { Err(SignalError::new("UNUSED", "not in this test")) })
    }
    fn may_relay<'a>(
        &'a self,
        _: &'a User,
        _: &'a str,
        _: &'a str,
    ) -> BoxFuture<'a, Result<(), SignalError>> {
        Box::pin(async { Ok(()) })
    }
    fn user_away<'a>(&'a self, _: &'a User) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
    fn user_back<'a>(&'a self, _: &'a User) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
    fn to_sfu<'a>(
        &'a self,
        _: &'a User,
        _: events::SfuMessage,
    ) -> BoxFuture<'a, Result<Value, SignalError>> {
        Box::pin(async { Err(SignalError::new("UNUSED", "not in this test")) })
    }
}

/// A `redis-server` of the test's own on a free port, without persistence; killed
/// when dropped, whatever the test's outcome.
struct RedisServer {
    child: std::process::Child,
    port: u16,
}

impl RedisServer {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Self::spawn(port);
        Self { child, port }
    }

    fn spawn(port: u16) -> std::process::Child {
        let port_arg = port.to_string();
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port_arg, "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server must be installed for the cluster tests");
        let since = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(since.elapsed() < PATIENCE, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        child
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn restart(&mut self) {
        self.kill();
        self.child = Self::spawn(self.port);
    }

    /// Waits until `nodes` signaling nodes listen to the request channel.
    async fn wait_for_subscribers(&self, nodes: u16) {
        let client = signaling::redis::Client::open(self.url()).expect("a Redis URL");
        let since = Instant::now();
        loop {
            if let Ok(mut conn) = client.get_multiplexed_async_connection().await {
                let count: Result<(String, u16), _> = signaling::redis::cmd("PUBSUB")
                    .arg("NUMSUB")
                    .arg(REQUEST_CHANNEL)
                    .query_async(&mut conn)
                    .await;
                if matches!(count, Ok((_, n)) if n == nodes) {
                    return;
                }
            }
            assert!(
                since.elapsed() < PATIENCE,
                "the nodes did not subscribe to Redis"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Socket.IO clients in one Node process (`cluster_client.cjs`), named by the test.
struct Clients {
    _process: tokio::process::Child,
    commands: tokio::process::ChildStdin,
    messages: mpsc::UnboundedReceiver<Value>,
}

/// Installs the socket.io client (`npm ci` in `tests/socketio`) once, if missing.
fn install_client() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/socketio");
        if dir.join("node_modules/socket.io-client").exists() {
            return;
        }
        let status = std::process::Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .status()
            .expect("npm must be installed for the cluster tests");
        assert!(status.success(), "npm ci failed in {}", dir.display());
    });
}

impl Clients {
    fn start() -> Self {
        install_client();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/cluster_client.cjs");
        let mut process = tokio::process::Command::new("node")
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node must be installed for the cluster tests");
        let commands = process.stdin.take().expect("stdin");
        let mut lines = BufReader::new(process.stdout.take().expect("stdout")).lines();
        let (tx, messages) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let message = serde_json::from_str(&line).expect("the client writes JSON");
                if tx.send(message).is_err() {
                    return;
                }
            }
        });
        Self {
            _process: process,
            commands,
            messages,
        }
    }

    async fn send(&mut self, command: Value) {
        let line = format!("{command}\n");
        self.commands
            .write_all(line.as_bytes())
            .await
            .expect("the client is running");
    }

    /// Connects socket `id` to `url` as `user`, and waits until it is connected.
    async fn connect(&mut self, id: &str, url: &str, user: &str) {
        self.send(json!({ "op": "connect", "id": id, "url": url, "token": user }))
            .await;
        let answer = tokio::time::timeout(PATIENCE, self.messages.recv())
            .await
            .expect("the socket connects in time")
            .expect("the client is running");
        assert_eq!(answer, json!({ "id": id, "connected": true }));
    }

    async fn emit(&mut self, id: &str, event: &str, data: Value) {
        self.send(json!({ "op": "emit", "id": id, "event": event, "data": data }))
            .await;
    }

    /// What the sockets receive: `count` messages (failing if they do not come), and
    /// anything else that comes within [`QUIET`] after them.
    async fn receive(&mut self, count: usize) -> Vec<Value> {
        let mut received = Vec::new();
        let until = tokio::time::Instant::now() + PATIENCE;
        while received.len() < count {
            match tokio::time::timeout_at(until, self.messages.recv()).await {
                Ok(Some(message)) => received.push(message),
                Ok(None) => panic!("the client stopped; got {received:#?}"),
                Err(_) => panic!("expected {count} messages, got {received:#?}"),
            }
        }
        while let Ok(Some(message)) = tokio::time::timeout(QUIET, self.messages.recv()).await {
            received.push(message);
        }
        received
    }
}
