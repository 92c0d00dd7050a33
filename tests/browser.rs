//! Runs the browser suite (`tests/browser`: Node's test runner driving headless
//! Chromium through `playwright-core`) against the huddle binary Cargo built for this
//! run: the demo page served at `/`, in a group call through the SFU, and in calls that
//! may use nothing but the embedded TURN server's relays (UDP, then TCP, then TLS with a
//! test certificate made by the `openssl` CLI), a page on another site let in or
//! refused by CORS_ORIGINS, and calls recorded through the REST API whose files are
//! checked with `ffprobe` and `ffmpeg`. Node, npm, `openssl`, Debian's `ffmpeg` and
//! Chromium (`/usr/bin/chromium`, or `CHROMIUM`) are required; without them the suite
//! fails rather than skips.

mod node_suite;

#[test]
fn the_demo_page_holds_calls_through_the_sfu_and_through_turn_relays_in_chromium() {
    node_suite::run("browser", &["playwright-core", "socket.io-client"]);
}
