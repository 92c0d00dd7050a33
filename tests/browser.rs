//! Runs the browser suite (`tests/browser`: Node's test runner driving headless
//! Chromium through `playwright-core`) against the huddle binary Cargo built for this
//! run: the demo page served at `/`, in a group call through the SFU. Node, npm and
//! Debian's Chromium (`/usr/bin/chromium`, or `CHROMIUM`) are required; without
//! Chromium the suite fails rather than skips.

mod node_suite;

#[test]
fn the_demo_page_holds_a_group_call_through_the_sfu_in_chromium() {
    node_suite::run("browser", &["playwright-core", "socket.io-client"]);
}
