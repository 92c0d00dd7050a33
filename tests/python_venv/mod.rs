//! A suite's own Python: `tests/<suite>/.venv`, made with `python3 -m venv` from the
//! pinned `tests/<suite>/requirements.txt` (wheels only), again whenever that file
//! changes. It needs `python3` with its `venv` module (Debian: `python3-venv`), and
//! fails rather than skips without them.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Makes `tests/<suite>/.venv` hold exactly `requirements.txt`'s packages, unless the
/// copy of that file it was last made from is identical; returns the venv's folder.
pub fn install(suite: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(suite);
    let venv = dir.join(".venv");
    let requirements = dir.join("requirements.txt");
    let wanted = std::fs::read_to_string(&requirements)
        .unwrap_or_else(|e| panic!("{}: {e}", requirements.display()));
    let stamp = venv.join("requirements.installed.txt");
    if venv.join("bin/python").exists()
        && std::fs::read_to_string(&stamp).is_ok_and(|installed| installed == wanted)
    {
        return venv;
    }
    let status = Command::new("python3")
        .args(["-m", "venv", "--clear"])
        .arg(&venv)
        .status()
        .unwrap_or_else(|e| panic!("python3 is required for the {suite} suite: {e}"));
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
    venv
}
