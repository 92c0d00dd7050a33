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
mod python_venv;

use std::io::Write;

#[test]
fn chromium_and_an_aiortc_participant_see_and_hear_each_other_through_the_sfu() {
    python_venv::install("aiortc");
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
