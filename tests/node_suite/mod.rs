//! Runs a folder of Node test suites (`*.test.mjs`, Node's built-in test runner)
//! against the huddle binary Cargo built for this run (`HUDDLE_BIN`), installing the
//! folder's npm packages from its lock file first if any is missing.

use std::path::Path;
use std::process::Command;

/// Installs `tests/<folder>`'s npm packages from its lock file if any of `packages`
/// is missing.
pub fn install(folder: &str, packages: &[&str]) {
    install_in(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests")
            .join(folder),
        packages,
    );
}

/// Installs `dir`'s npm packages from its lock file if any of `packages` is missing.
pub fn install_in(dir: &Path, packages: &[&str]) {
    if packages
        .iter()
        .any(|p| !dir.join("node_modules").join(p).exists())
    {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(dir)
            .status()
            .unwrap_or_else(|e| panic!("npm is required to install {packages:?}: {e}"));
        assert!(status.success(), "npm ci failed in {}", dir.display());
    }
}

/// Runs every suite in `tests/<folder>`; panics with the report when one fails, else
/// returns it.
pub fn run(folder: &str, packages: &[&str]) -> String {
    install(folder, packages);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(folder);
    let mut suites: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
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
        .unwrap_or_else(|e| panic!("node is required to run tests/{folder}: {e}"));
    let report = String::from_utf8_lossy(&output.stdout).into_owned();
    println!("{report}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(
        output.status.success(),
        "tests/{folder} failed: its report is above"
    );
    report
}
