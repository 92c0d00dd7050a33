//! Runs the Socket.IO suite (`tests/socketio`: Node's test runner with the official
//! `socket.io-client`) against the huddle binary Cargo built for this run. Node and
//! npm are required.

mod node_suite;

#[test]
fn the_socketio_suite_passes_with_the_official_client() {
    node_suite::run("socketio", &["socket.io-client"]);
}
