//! The `huddle` binary: `huddle` serves, `huddle token ...` prints a token,
//! `huddle check` checks the configuration, `huddle migrate` migrates the database.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use huddle::auth::{Claims, JwtKey};
use huddle::clock::SystemClock;
use huddle::config::{Cli, Command, Config, TokenArgs, effective_settings, mask_password};
use huddle::server::{Server, StartError};
use huddle::store::Store;

fn main() -> ExitCode {
    let (cli, matches) = Cli::parse_or_exit();
    match cli.command {
        Some(Command::Token(args)) => print_token(&args),
        Some(Command::Check(config)) => check(&config, &matches),
        Some(Command::Migrate(config)) => migrate(&config),
        None => serve(cli.config),
    }
}

/// `huddle check`: the first problem on stderr and exit 2, or the effective
/// settings on stdout and exit 0.
fn check(config: &Config, matches: &clap::ArgMatches) -> ExitCode {
    let database = match config.check() {
        Ok(database) => database,
        Err(problem) => {
            eprintln!("huddle: {problem}");
            return ExitCode::from(2);
        }
    };
    let mode = if config.redis_url.is_some() {
        "a node of a cluster"
    } else {
        "one process"
    };
    let report = std::iter::once(format!(
        "# huddle check: the configuration is valid ({database} database, {mode}); \
         no connection was opened. Effective settings, secrets masked:"
    ))
    .chain(effective_settings(matches));
    // Written without println!, which panics when the reader has gone (`| head`).
    let mut out = std::io::stdout().lock();
    for line in report {
        if writeln!(out, "{line}").is_err() {
            break;
        }
    }
    ExitCode::SUCCESS
}

/// `huddle migrate`: applies the migrations DATABASE_URL lacks (the store's own
/// start-up step), then exits; 1 when the database cannot be reached or migrated.
fn migrate(config: &Config) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("huddle: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        match Store::connect(&config.database_url).await {
            Ok(store) => {
                println!(
                    "huddle: {} is migrated ({})",
                    mask_password(&config.database_url),
                    store.backend()
                );
                store.close().await;
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("huddle: {}", StartError::from(e));
                ExitCode::FAILURE
            }
        }
    })
}

fn print_token(args: &TokenArgs) -> ExitCode {
    let Some(secret) = &args.jwt_secret else {
        eprintln!(
            "huddle: JWT_SECRET is not set: a token needs the secret the server checks it with"
        );
        return ExitCode::from(2);
    };
    let now = chrono::Utc::now().timestamp();
    let claims = Claims {
        sub: args.user.clone(),
        exp: now + i64::from(args.ttl),
        iat: Some(now),
        nbf: None,
        name: args.name.clone(),
        role: args.role().map(str::to_owned),
    };
    println!("{}", JwtKey::new(secret.as_bytes()).sign(&claims));
    ExitCode::SUCCESS
}

fn serve(config: Config) -> ExitCode {
    // LOG_LEVEL decides what is logged: the builder's own default (info) would hide
    // the debug and trace it asks for.
    tracing_subscriber::fmt()
        .with_max_level(tracing_subscriber::filter::LevelFilter::TRACE)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .finish()
        .with(config.log_level.clone())
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("huddle: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let server = match Server::start(&config, Arc::new(SystemClock)).await {
            Ok(server) => server,
            Err(e) => {
                eprintln!("huddle: {e}");
                // A certificate that cannot be used is a bad setting, like any other.
                return match e {
                    StartError::Tls(_) => ExitCode::from(2),
                    _ => ExitCode::FAILURE,
                };
            }
        };
        if let Some(tls) = server.tls() {
            tokio::spawn(reload_on_sighup(tls));
        }
        shutdown_signal().await;
        tracing::info!("shutting down: finishing requests in flight (signal again to force)");
        tokio::spawn(async {
            shutdown_signal().await;
            eprintln!("huddle: forced exit");
            std::process::exit(130);
        });
        server.stop().await;
        tracing::info!("stopped");
        ExitCode::SUCCESS
    })
}

/// Loads the certificate files again on every SIGHUP. Only with TLS: otherwise
/// SIGHUP keeps its default action.
async fn reload_on_sighup(tls: Arc<huddle::tls::Certificates>) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(hangups) => hangups,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP: certificates reload on file changes only");
            return;
        }
    };
    while hangups.recv().await.is_some() {
        tls.reload_and_log("SIGHUP");
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}
