//! Runs the aiortc suite (`tests/aiortc`): a call through the SFU between the demo page
//! in headless Chromium and a participant on a second, independent WebRTC stack,
//! Python's aiortc with python-socketio (`tests/aiortc/participant.py`), against the
//! huddle binary Cargo built for this run. Each side must decode the other's video and
//! audio. It needs Node and npm (the browser suite's `playwright-core`), Debian's
//! Chromium, and `python3` with its `venv` module (Debian: `python3-venv`): the Python
//! packages go into `tests/aiortc/.venv`, created here from the pinned
//! `requirements.txt` (wheels only) whenever that file changes. Without any of these
//! the suite fails rather than skips.

mod node_suite;

use std::io::Write;
use std::path::Path;
use std::process::Command;

/// Makes `tests/aiortc/.venv` hold exactly `requirements.txt`'s packages, unless the
/// copy of that file it was last made from is identical.
fn python_packages() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/aiortc");
    let venv = dir.join(".venv");
    let requirements = dir.join("requirements.txt");
    let wanted = std::fs::read_to_string(&requirements)
        .unwrap_or_else(|e| panic!("{}: {e}", requirements.display()));
    let stamp = venv.join("requirements.installed.txt");
    if venv.join("bin/python").exists()
        && std::fs::read_to_string(&stamp).is_ok_and(|installed| installed == wanted)
    {
        return;
    }
    let status = Command::new("python3")
        .args(["-m", "venv", "--clear"])
        .arg(&venv)
        .status()
        .unwrap_or_else(|e| panic!("python3 is required for the aiortc suite: {e}"));
    assert!(
        status.success(),
        "python3 -m venv failed (Debian: apt-get install -y python3-venv)"
    );
    let status = Command::new(venv.join("bin/python"))
        .args(["-m", "pip", "install", "--disable-pip-version-check"])
        .args(["--no-input", "--only-binary=:all:", "-r"])
        .arg(&requirements)
        .status()
        .unwrap_or_else(|e| panic!("pip in {}: {e}", venv.display()));
    assert!(
        status.success(),
        "pip install -r {} failed",
        requirements.display()
    );
    std::fs::write(&stamp, wanted).unwrap_or_else(|e| panic!("{}: {e}", stamp.display()));
}

#[test]
fn chromium_and_an_aiortc_participant_see_and_hear_each_other_through_the_sfu() {
    python_packages();
    // The suite drives Chromium with the browser suite's harness, whose
    // `playwright-core` resolves from `tests/browser/node_modules`.
    node_suite::install("browser", &["playwright-core", "socket.io-client"]);
    let report = node_suite::run("aiortc", &[]);
    // The figures observed, shown even when the test passes (libtest captures only
    // `print!`): frames decoded each way.
    let figures: String = report
        .lines()
        .filter(|line| line.contains("figures:"))
        .map(|line| format!("aiortc suite {}\n", line.trim()))
        .collect();
    assert!(!figures.is_empty(), "the aiortc suite printed no figures");
    std::io::stderr().write_all(figures.as_bytes()).unwrap();
}
