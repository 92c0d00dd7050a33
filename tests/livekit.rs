//! Runs the LiveKit suite (`tests/livekit`: Node's test runner with LiveKit's own
//! `livekit-server-sdk`) against the huddle binary Cargo built for this run. No
//! LiveKit server runs here: the suite answers Huddle's RoomService requests with a
//! local stand-in and checks tokens and webhooks with the SDK. Node and npm are
//! required.

mod node_suite;

#[test]
fn the_livekit_suite_passes_with_the_official_server_sdk() {
    // The suite starts huddle with the Socket.IO suite's harness, whose client
    // (`socket.io-client`) resolves from `tests/socketio/node_modules`.
    node_suite::install("socketio", &["socket.io-client"]);
    node_suite::run("livekit", &["livekit-server-sdk", "@livekit/protocol"]);
}
