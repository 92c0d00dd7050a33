//! A short soak (`bench/soak/soak.mjs`) against the huddle binary Cargo built for this
//! run: REST and Socket.IO calls, socket churn, relays and toggle bursts, and SFU
//! rooms of synthetic WebRTC participants (npm `@roamhq/wrtc`), for `SOAK_SECONDS`
//! (default 45). It fails on any lost acknowledgement, relay or notice, any HTTP 5xx,
//! a disconnect the client did not ask for, a subscriber without media, anything left
//! after the drain, a panic or an unclean exit. The RSS criterion is checked by the
//! long run only (`bench/soak/run.sh`, 600 s): 45 s is mostly warm-up. Node and npm
//! are required; the packages install from `bench/soak`'s lock file on first run.

#[allow(dead_code)] // the soak uses its installer only
mod node_suite;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// How long the soak may take beyond its load: the drain, the stop, Node's own start.
const GRACE: Duration = Duration::from_secs(120);

fn soak_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("bench")
        .join("soak")
}

/// Stops the server named in `pid_file` if it is still running (the driver stops it on
/// every way out it controls; this covers the driver dying hard or being killed).
fn stop_leftover_server(pid_file: &Path) {
    let Ok(text) = fs::read_to_string(pid_file) else {
        return;
    };
    let pid = text.trim();
    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    if !pid.is_empty() && comm.trim() == "huddle" {
        let _ = Command::new("kill").args(["-9", pid]).status();
    }
}

#[test]
fn a_short_soak_loses_nothing_and_leaves_nothing() {
    let dir = soak_dir();
    node_suite::install_in(&dir, &["@roamhq/wrtc", "socket.io-client"]);
    let seconds: u64 = std::env::var("SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(45);
    let scratch = std::env::temp_dir().join(format!("huddle-soak-test-{}", std::process::id()));
    fs::create_dir_all(&scratch).unwrap();
    let report_path = scratch.join("report.txt");
    let pid_file = scratch.join("server.pid");
    let report = fs::File::create(&report_path).unwrap();
    let mut child = Command::new("node")
        .args([
            "soak.mjs",
            "--seconds",
            &seconds.to_string(),
            "--sample",
            "3",
        ])
        .args(["--bin", env!("CARGO_BIN_EXE_huddle")])
        .arg("--log")
        .arg(scratch.join("huddle.log"))
        .env("SOAK_PID_FILE", &pid_file)
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(report.try_clone().unwrap())
        .stderr(report)
        .spawn()
        .unwrap_or_else(|e| panic!("node is required to run bench/soak: {e}"));

    // Bounded: the driver ends itself; past the deadline it is stopped here.
    let deadline = Instant::now() + Duration::from_secs(seconds) + GRACE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        sleep(Duration::from_millis(200));
    };
    stop_leftover_server(&pid_file);
    let text = fs::read_to_string(&report_path).unwrap_or_default();
    println!("{text}");
    let log = fs::read_to_string(scratch.join("huddle.log")).unwrap_or_default();
    let _ = fs::remove_dir_all(&scratch);
    let Some(status) = status else {
        panic!("the soak did not finish within {seconds} s + {GRACE:?}; its report is above");
    };
    if !status.success() {
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        println!("--- server log (last lines)");
        for line in tail.into_iter().rev() {
            println!("{line}");
        }
    }
    assert!(
        status.success(),
        "the soak missed a target ({status}): its report is above"
    );
    assert!(
        text.contains("==== verdict: PASS ===="),
        "the soak exited 0 without a verdict: its report is above"
    );
}
