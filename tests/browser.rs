//! Runs the browser suite (`tests/browser`: Node's test runner driving headless
//! Chromium through `playwright-core`) against the huddle binary Cargo built for this
//! run: the demo page served at `/`, in a group call through the SFU. Node, npm and
//! Debian's Chromium (`/usr/bin/chromium`, or `CHROMIUM`) are required; without
//! Chromium the suite fails rather than skips. The node packages are installed from
//! the lock file on first run.

use std::path::Path;
use std::process::Command;

#[test]
fn the_demo_page_holds_a_group_call_through_the_sfu_in_chromium() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    if !dir.join("node_modules/playwright-core").exists()
        || !dir.join("node_modules/socket.io-client").exists()
    {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .status()
            .expect("npm is required to install playwright-core for the browser suite");
        assert!(status.success(), "npm ci failed in {}", dir.display());
    }
    let mut suites: Vec<String> = std::fs::read_dir(&dir)
        .expect("tests/browser")
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".test.mjs"))
        .collect();
    suites.sort();
    assert!(
        !suites.is_empty(),
        "no *.test.mjs suites in {}",
        dir.display()
    );
    let output = Command::new("node")
        .args(["--test", "--test-reporter=spec"])
        .args(&suites)
        .current_dir(&dir)
        .env("HUDDLE_BIN", env!("CARGO_BIN_EXE_huddle"))
        .output()
        .expect("node is required to run the browser suite");
    let report = String::from_utf8_lossy(&output.stdout);
    println!("{report}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(
        output.status.success(),
        "the browser suite failed: its report is above"
    );
}
