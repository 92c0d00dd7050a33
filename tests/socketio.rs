//! Runs the Socket.IO suite (`tests/socketio`: Node's test runner with the official
//! `socket.io-client`) against the huddle binary Cargo built for this run. Node and
//! npm are required; the client is installed from the lock file on first run.

use std::path::Path;
use std::process::Command;

#[test]
fn the_socketio_suite_passes_with_the_official_client() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/socketio");
    if !dir.join("node_modules/socket.io-client").exists() {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .status()
            .expect("npm is required to install socket.io-client for the Socket.IO suite");
        assert!(status.success(), "npm ci failed in {}", dir.display());
    }
    let mut suites: Vec<String> = std::fs::read_dir(&dir)
        .expect("tests/socketio")
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
        .expect("node is required to run the Socket.IO suite");
    let report = String::from_utf8_lossy(&output.stdout);
    println!("{report}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "Socket.IO suite failed:\n{report}");
}
