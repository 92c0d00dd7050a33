//! Runs the cluster suites (`tests/cluster`: Node's test runner) against the huddle
//! binary Cargo built for this run, as several nodes in cluster mode: each suite starts
//! its own `redis-server` on a free port and its own fresh PostgreSQL database (on
//! `TEST_DATABASE_URL`'s server, else `postgres://postgres@127.0.0.1:5432` with trust
//! auth), and removes both at the end. Signaling across nodes is driven by the official
//! `socket.io-client`; media, node loss and shutdown by the demo page in headless
//! Chromium (`/usr/bin/chromium`, or `CHROMIUM`), through a per-page TCP proxy standing
//! in for a load balancer. LiveKit webhooks are delivered to one node (and retried on
//! another) with the LiveKit suite's stand-in (`tests/livekit/stand-in.mjs`). Node,
//! npm, redis-server, redis-cli, psql and Chromium are required: without any of them
//! the suite fails rather than skips.

mod node_suite;

#[test]
fn calls_go_on_across_nodes_node_loss_and_redis_restarts() {
    // The cluster harness reuses the single-node harnesses, and the LiveKit suite the
    // LiveKit stand-in (`tests/livekit/stand-in.mjs`), which import their own folders'
    // packages.
    node_suite::install("socketio", &["socket.io-client"]);
    node_suite::install("browser", &["playwright-core", "socket.io-client"]);
    node_suite::install("livekit", &["livekit-server-sdk", "@livekit/protocol"]);
    node_suite::run("cluster", &["playwright-core", "socket.io-client"]);
}
