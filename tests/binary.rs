//! The `huddle` binary as a user runs it: flags and environment, one-line errors,
//! `huddle token`, `huddle check`, `huddle migrate`, a zero-configuration start,
//! and shutdown on SIGTERM.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hyper::{Method, StatusCode};
use serde_json::Value;

const HUDDLE: &str = env!("CARGO_BIN_EXE_huddle");

/// Settings read from the environment, cleared so the developer's or CI's own do not
/// leak into these tests.
const SETTINGS: &[&str] = &[
    "HOST",
    "PORT",
    "DATABASE_URL",
    "JWT_SECRET",
    "MAX_CALL_PARTICIPANTS",
    "MAX_CALL_DURATION",
    "RINGING_TIMEOUT",
    "LOG_LEVEL",
    "METRICS_PORT",
    "STUN_SERVER_URL",
    "TURN_SERVER_URL",
    "TURN_USERNAME",
    "TURN_PASSWORD",
    "SFU_HOST",
    "SFU_PORT",
    "SFU_PUBLIC_IP",
    "DEMO_TOKENS",
    "TURN_SECRET",
    "TURN_REALM",
    "TURN_TTL",
    "TURN_EMBEDDED",
    "TURN_HOST",
    "TURN_PORT",
    "TURN_PUBLIC_IP",
    "TURN_RELAY_IP",
    "TURN_MIN_PORT",
    "TURN_MAX_PORT",
    "TURN_USER_QUOTA",
    "TURN_TOTAL_QUOTA",
    "TURN_ALLOWED_PEERS",
    "TURN_URLS",
    "DEFAULT_MEDIA_MODE",
    "LIVEKIT_URL",
    "LIVEKIT_API_KEY",
    "LIVEKIT_API_SECRET",
    "LIVEKIT_TOKEN_TTL",
    "LIVEKIT_EMPTY_TIMEOUT",
    "CORS_ORIGINS",
    "SSL_CERT_PATH",
    "SSL_KEY_PATH",
    "SSL_RELOAD_INTERVAL",
    "TURN_TLS_PORT",
    "TURN_TLS_HOST",
    "RECORDINGS_DIR",
    "RECORDING_POLICY",
    "RECORDING_RETENTION_DAYS",
    "RECORDING_MAX_MB",
    "RECORDING_MAX_MINUTES",
    "QUEUE_DEFAULT_HANDLE_SECONDS",
];

fn huddle(dir: &Path) -> Command {
    let mut command = Command::new(HUDDLE);
    command.current_dir(dir);
    for var in SETTINGS {
        command.env_remove(var);
    }
    command
}

fn scratch_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("huddle-bin-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

#[test]
fn help_lists_every_setting_with_its_environment_variable() {
    let out = huddle(&std::env::temp_dir())
        .arg("--help")
        .output()
        .expect("run huddle");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for var in SETTINGS {
        assert!(
            help.contains(&format!("[env: {var}")),
            "--help does not mention {var}:\n{help}"
        );
    }
    for command in ["token", "check", "migrate"] {
        assert!(help.contains(&format!("  {command} ")), "{command}: {help}");
    }
}

#[test]
fn bad_configuration_is_one_line_naming_the_setting_and_a_failure_exit() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("PORT", "http")], "PORT"),
        (&[("MAX_CALL_PARTICIPANTS", "1")], "MAX_CALL_PARTICIPANTS"),
        (&[("RINGING_TIMEOUT", "-5")], "RINGING_TIMEOUT"),
        (&[("DATABASE_URL", "mongodb://x")], "DATABASE_URL"),
        (&[("JWT_SECRET", "tiny")], "JWT_SECRET"),
        (&[("LOG_LEVEL", "loud")], "LOG_LEVEL"),
        (&[("RECORDING_POLICY", "anyone")], "RECORDING_POLICY"),
        (
            &[("PORT", "4100"), ("METRICS_PORT", "4100")],
            "METRICS_PORT",
        ),
    ];
    for (env, setting) in cases {
        let out = refusal(
            huddle(&std::env::temp_dir())
                .env("PORT", "0")
                .envs(env.iter().copied()),
        );
        assert_eq!(out.status.code(), Some(2), "{env:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.trim_end().lines().count(), 1, "{env:?}: {stderr}");
        assert!(
            stderr.starts_with("huddle: ") && stderr.contains(setting),
            "{env:?}: {stderr}"
        );
    }
}

/// Runs a command that should refuse to start; kills it and fails the test if it is
/// still running after 20 s (it started serving instead).
fn refusal(command: &mut Command) -> std::process::Output {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn huddle");
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("huddle started instead of refusing its configuration");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

#[test]
fn an_unreachable_database_fails_start_up_with_a_clear_error() {
    let dir = scratch_dir();
    let out = refusal(
        huddle(&dir)
            .env("PORT", "0")
            .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none"),
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("huddle: DATABASE_URL: ")),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_token_command_needs_the_secret() {
    let out = huddle(&std::env::temp_dir())
        .args(["token", "--user", "alice"])
        .output()
        .expect("run huddle");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("JWT_SECRET"));
}

/// A server process started in `dir`, and the address it announced.
struct Running {
    child: Child,
    addr: std::net::SocketAddr,
    /// Lines logged up to the address announcement.
    early_log: Vec<String>,
    log: std::sync::mpsc::Receiver<String>,
}

fn start(dir: &Path, env: &[(&str, &str)]) -> Running {
    let mut child = huddle(dir)
        .env("PORT", "0")
        .env("HOST", "127.0.0.1")
        .env("SFU_PORT", "0")
        .env("TURN_HOST", "127.0.0.1")
        .env("TURN_PORT", "0")
        .envs(env.iter().copied())
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn huddle");
    let (tx, log) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().expect("stderr");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        if let Ok(line) = log.recv_timeout(Duration::from_millis(100)) {
            let announced = line
                .split("addr=")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next());
            if let Some(addr) = announced.and_then(|a| a.parse().ok()) {
                seen.push(line);
                return Running {
                    child,
                    addr,
                    early_log: seen,
                    log,
                };
            }
            seen.push(line);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("huddle did not announce its address:\n{}", seen.join("\n"));
}

impl Running {
    /// Sends SIGTERM and returns the exit status and the rest of the log.
    fn terminate(mut self) -> (std::process::ExitStatus, String) {
        let killed = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        assert!(killed.is_ok_and(|s| s.success()));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                // The reader thread ends with the process; take every line it read.
                let rest: Vec<String> = self.log.iter().collect();
                return (status, [self.early_log, rest].concat().join("\n"));
            }
            assert!(
                Instant::now() < deadline,
                "huddle did not stop within 10 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[tokio::test]
async fn with_no_configuration_it_serves_from_a_sqlite_file_and_stops_cleanly_on_sigterm() {
    let dir = scratch_dir();
    let running = start(&dir, &[]);
    let (status, bytes) = common::raw(running.addr, Method::GET, "/health", &[], Vec::new()).await;
    assert_eq!(status, StatusCode::OK);
    let health: Value = serde_json::from_slice(&bytes).expect("JSON");
    assert_eq!(health["database"]["backend"], "sqlite");
    assert!(
        dir.join("huddle.db").exists(),
        "the database file is made in the working directory"
    );

    let (exit, log) = running.terminate();
    assert!(exit.success(), "exit status {exit}: {log}");
    assert!(log.contains("stopped"), "{log}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn without_a_secret_it_warns_that_tokens_will_not_survive_a_restart() {
    let dir = scratch_dir();
    let running = start(&dir, &[]);
    let (_, log) = running.terminate();
    assert!(
        log.contains("WARN") && log.contains("JWT_SECRET is not set"),
        "{log}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_printed_token_is_accepted_by_a_server_with_the_same_secret() {
    let dir = scratch_dir();
    let secret = ("JWT_SECRET", "binary-test-secret-0123456789");
    let out = huddle(&dir)
        .env(secret.0, secret.1)
        .args([
            "token", "--user", "alice", "--name", "Alice", "--ttl", "600", "--admin",
        ])
        .output()
        .expect("run huddle token");
    assert!(out.status.success());
    let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();

    let running = start(&dir, &[secret]);
    let auth = [("authorization", format!("Bearer {token}"))];
    let (status, bytes) = common::raw(
        running.addr,
        Method::GET,
        "/monitoring/metrics",
        &auth,
        Vec::new(),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&bytes)
    );

    // A backend's token (`--role service`) reaches the phone endpoints, not the
    // operator's views.
    let out = huddle(&dir)
        .env(secret.0, secret.1)
        .args(["token", "--user", "pbx", "--role", "service"])
        .output()
        .expect("run huddle token");
    assert!(out.status.success());
    let service = [(
        "authorization",
        format!("Bearer {}", String::from_utf8_lossy(&out.stdout).trim()),
    )];
    for (path, expected) in [
        ("/api/v1/phone/metrics", StatusCode::OK),
        ("/monitoring/metrics", StatusCode::FORBIDDEN),
    ] {
        let (status, bytes) =
            common::raw(running.addr, Method::GET, path, &service, Vec::new()).await;
        assert_eq!(
            status,
            expected,
            "{path}: {}",
            String::from_utf8_lossy(&bytes)
        );
    }
    let (exit, _) = running.terminate();
    assert!(exit.success());
    let _ = std::fs::remove_dir_all(dir);
}

/// `huddle` with nothing of this process's environment but `PATH`, in `dir`.
fn bare_huddle(dir: &Path) -> Command {
    let mut command = Command::new(HUDDLE);
    command
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default());
    command
}

#[test]
fn check_prints_the_effective_settings_with_every_secret_masked() {
    let dir = scratch_dir();
    let secrets = [
        "jwt-secret-never-printed-0123",
        "turn-secret-never-printed-0123",
        "livekit-secret-never-printed",
        "db-password-never-printed",
        "query-password-never-printed",
        "static-turn-password-never-printed",
    ];
    let database = format!(
        "postgres://huddle:{}@db.example:5432/calls?sslmode=prefer&password={}",
        secrets[3], secrets[4]
    );
    let out = bare_huddle(&dir)
        .env("JWT_SECRET", secrets[0])
        .env("TURN_SECRET", secrets[1])
        .env("LIVEKIT_URL", "wss://lk.example")
        .env("LIVEKIT_API_KEY", "APIkey")
        .env("LIVEKIT_API_SECRET", secrets[2])
        .env("DATABASE_URL", &database)
        .env("TURN_SERVER_URL", "turn:t.example:3478")
        .env("TURN_USERNAME", "static")
        .env("TURN_PASSWORD", secrets[5])
        .env("CORS_ORIGINS", "https://app.example,http://localhost:3344")
        .args(["check", "--port", "4100"])
        .output()
        .expect("run huddle check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    for secret in secrets {
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "{secret} printed:\n{stdout}{stderr}"
        );
    }
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[0].starts_with(
            "# huddle check: the configuration is valid (postgres database, one process)"
        ),
        "{stdout}"
    );
    for expected in [
        "PORT=4100  # flag",
        "HOST=0.0.0.0  # default",
        "JWT_SECRET=****  # environment",
        "TURN_SECRET=****  # environment",
        "LIVEKIT_API_SECRET=****  # environment",
        "TURN_PASSWORD=****  # environment",
        "LIVEKIT_API_KEY=APIkey  # environment",
        "DATABASE_URL=postgres://huddle:****@db.example:5432/calls?sslmode=prefer&password=****  # environment",
        "CORS_ORIGINS=https://app.example,http://localhost:3344  # environment",
        "# REDIS_URL is unset",
    ] {
        assert!(
            lines.contains(&expected),
            "no line {expected:?} in:\n{stdout}"
        );
    }
    // Every setting is accounted for, set or not, once.
    for var in SETTINGS {
        let mentions = lines
            .iter()
            .filter(|l| l.starts_with(&format!("{var}=")) || **l == format!("# {var} is unset"))
            .count();
        assert_eq!(mentions, 1, "{var} in:\n{stdout}");
    }
    assert_eq!(
        std::fs::read_dir(&dir).expect("dir").count(),
        0,
        "check opens and creates nothing"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn check_names_the_first_problem_and_fails() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("PORT", "http")], "PORT"),
        (
            &[("PORT", "4100"), ("METRICS_PORT", "4100")],
            "METRICS_PORT",
        ),
        (
            &[("DATABASE_URL", "postgres://db.example:port/calls")],
            "DATABASE_URL",
        ),
        (&[("REDIS_URL", "redis://r.example:6379/0")], "REDIS_URL"),
        (
            &[("CORS_ORIGINS", "https://app.example/path")],
            "CORS_ORIGINS",
        ),
        (&[("DEFAULT_MEDIA_MODE", "livekit")], "DEFAULT_MEDIA_MODE"),
    ];
    for (env, setting) in cases {
        let out = bare_huddle(&std::env::temp_dir())
            .envs(env.iter().copied())
            .arg("check")
            .output()
            .expect("run huddle check");
        assert_eq!(out.status.code(), Some(2), "{env:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.trim_end().lines().count(), 1, "{env:?}: {stderr}");
        assert!(
            stderr.starts_with("huddle: ") && stderr.contains(setting),
            "{env:?}: {stderr}"
        );
        assert!(
            out.stdout.is_empty(),
            "{env:?}: nothing is printed as effective"
        );
    }
}

/// The migrations recorded as applied, in order.
const APPLIED: &str = "SELECT version FROM _sqlx_migrations WHERE success ORDER BY version";

/// The versions of the migrations in `migrations/<dialect>`.
fn migrations_in(dialect: &str) -> Vec<i64> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(dialect);
    let mut versions: Vec<i64> = std::fs::read_dir(dir)
        .expect("migrations")
        .filter_map(|e| {
            e.ok()?
                .file_name()
                .to_str()?
                .split('_')
                .next()?
                .parse()
                .ok()
        })
        .collect();
    versions.sort();
    versions
}

#[tokio::test]
async fn migrate_applies_every_migration_to_a_fresh_sqlite_file_and_exits() {
    use sqlx::Connection;
    let dir = scratch_dir();
    let url = format!("sqlite://{}", dir.join("calls.db").display());
    for _ in 0..2 {
        let out = bare_huddle(&dir)
            .env("DATABASE_URL", &url)
            .arg("migrate")
            .output()
            .expect("run huddle migrate");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(stdout.trim(), format!("huddle: {url} is migrated (sqlite)"));
    }
    let mut conn = sqlx::SqliteConnection::connect(&url).await.expect("open");
    let applied: Vec<i64> = sqlx::query_scalar(APPLIED)
        .fetch_all(&mut conn)
        .await
        .expect("migrations table");
    assert_eq!(applied, migrations_in("sqlite"));
    drop(conn);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn migrate_applies_every_migration_to_a_fresh_postgres_schema() {
    use sqlx::Connection;
    let base = common::postgres_url();
    let schema = format!("huddle_migrate_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect(&base)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {base} is required for this test: {e}"));
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut admin)
        .await
        .expect("create schema");
    let separator = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{separator}options=-c%20search_path%3D{schema}");
    let out = bare_huddle(&std::env::temp_dir())
        .env("DATABASE_URL", &url)
        .arg("migrate")
        .output()
        .expect("run huddle migrate");
    let migrated = out.status.success();
    let applied: Vec<i64> = match sqlx::PgConnection::connect(&url).await {
        Ok(mut conn) => sqlx::query_scalar(APPLIED)
            .fetch_all(&mut conn)
            .await
            .unwrap_or_default(),
        Err(_) => vec![],
    };
    sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(&mut admin)
        .await
        .expect("drop schema");
    assert!(migrated, "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).ends_with("is migrated (postgres)\n"));
    assert_eq!(applied, migrations_in("postgres"));
}

#[test]
fn migrate_without_a_database_fails_naming_it() {
    let out = refusal(
        bare_huddle(&std::env::temp_dir())
            .env(
                "DATABASE_URL",
                "postgres://nobody:secret-pw@127.0.0.1:1/none",
            )
            .arg("migrate"),
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("huddle: DATABASE_URL: "), "{stderr}");
    assert!(!stderr.contains("secret-pw"), "{stderr}");
}
