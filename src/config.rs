//! Configuration: command-line flags, each with an environment variable of the
//! primary contract's name (PORT, DATABASE_URL, JWT_SECRET, ...). Only this module
//! and `main` read the environment.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use chrono::Duration;
use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use huddle_turn::{IpRange, PeerPolicy, Quota, Secret, TurnConfig, TurnTls};
use tokio_rustls::rustls::ServerConfig;
use tracing_subscriber::filter::Targets;

use crate::browsers::Origin;
use crate::calls::lifecycle::Limits;
use crate::calls::model::MediaMode;
use crate::http::HttpLimits;
use crate::ice::{IceServer, IceServers, RestTurn};
use crate::media::livekit::LiveKitConfig;
use crate::phone::PhoneSettings;
use crate::phone::number::{Numbers, parse_region};
use crate::queue::QueueSettings;
use crate::ratelimit::{Rate, RateLimits};
use crate::recordings::{RecordingPolicy, RecordingSettings};
use crate::server::StartError;
use crate::store::Store;
use crate::tls::TlsFiles;
use crate::users::accounts::AccountSettings;

/// Huddle: a self-hosted call server.
#[derive(Debug, Clone, Parser)]
#[command(name = "huddle", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub config: Config,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Print a token signed with JWT_SECRET, for trying Huddle out.
    Token(TokenArgs),
    /// Check the configuration as `huddle` would serve with it (flags and
    /// environment), without opening any connection, and print the effective
    /// settings with secrets masked; exit 2 naming the first problem.
    Check(Box<Config>),
    /// Apply the database migrations to DATABASE_URL, then exit (the server also
    /// applies them when it starts).
    Migrate(Box<Config>),
}

#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// User id (the `sub` claim).
    #[arg(long)]
    pub user: String,
    /// Display name (the `name` claim).
    #[arg(long)]
    pub name: Option<String>,
    /// Seconds until the token expires.
    #[arg(long, default_value_t = 86_400, value_parser = clap::value_parser!(u32).range(1..=31_536_000))]
    pub ttl: u32,
    /// Add `"role": "admin"` (global statistics and monitoring); `--role admin` too.
    #[arg(long, conflicts_with = "role")]
    pub admin: bool,
    /// The `role` claim: `admin` (global statistics and monitoring) or `service` (a
    /// backend: posts phone-call events and reads phone histories). None: a user.
    #[arg(long, value_enum)]
    pub role: Option<TokenRole>,
    /// The server's signing secret.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true, value_parser = parse_secret)]
    pub jwt_secret: Option<String>,
}

/// The `role` claim of a printed token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TokenRole {
    Admin,
    Service,
}

impl TokenArgs {
    /// The `role` claim: `--role`, or `admin` for `--admin`.
    pub fn role(&self) -> Option<&'static str> {
        match (self.role, self.admin) {
            (Some(TokenRole::Admin), _) | (None, true) => Some("admin"),
            (Some(TokenRole::Service), _) => Some("service"),
            (None, false) => None,
        }
    }
}

/// Everything the server needs to run.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Address to listen on for HTTP and Socket.IO.
    #[arg(long, env = "HOST", default_value = "0.0.0.0")]
    pub host: IpAddr,
    /// Port for HTTP and Socket.IO (0 picks a free one).
    #[arg(long, env = "PORT", default_value_t = 3003)]
    pub port: u16,
    /// `sqlite://FILE` (created if missing) or `postgres://USER@HOST/DB`.
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite://huddle.db", value_parser = parse_database_url)]
    pub database_url: String,
    /// Secret that signs and checks HS256 tokens (16+ characters). Without it a random
    /// one is made per process, and tokens do not survive a restart.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true, value_parser = parse_secret)]
    pub jwt_secret: Option<String>,
    /// Most participants in one call, the initiator included.
    #[arg(long, env = "MAX_CALL_PARTICIPANTS", default_value_t = 8, value_parser = clap::value_parser!(u32).range(2..=64))]
    pub max_call_participants: u32,
    /// Seconds after which a call is ended (counted from when it connected).
    #[arg(long, env = "MAX_CALL_DURATION", default_value_t = 14_400, value_parser = clap::value_parser!(u32).range(60..=604_800))]
    pub max_call_duration: u32,
    /// Seconds an invitation rings before it counts as missed.
    #[arg(long, env = "RINGING_TIMEOUT", default_value_t = 60, value_parser = clap::value_parser!(u32).range(5..=3_600))]
    pub ringing_timeout: u32,
    /// Seconds a user whose sockets all dropped stays in their calls before leaving.
    #[arg(long, env = "CONNECTION_TIMEOUT", default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=3_600))]
    pub connection_timeout: u32,
    /// Calls that may ring one user at the same time; more invitations to them are
    /// refused (`RINGING_LIMIT`).
    #[arg(long, env = "RINGING_LIMIT", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub ringing_limit: u32,
    /// Seconds during which someone who declined a call is not rung again by its
    /// caller (`DECLINED_RECENTLY`); 0 turns it off.
    #[arg(long, env = "DECLINE_COOLDOWN", default_value_t = 60, value_parser = clap::value_parser!(u32).range(0..=86_400))]
    pub decline_cooldown: u32,
    /// Seconds a shutdown (SIGTERM) waits for requests and events in flight before
    /// closing connections regardless.
    #[arg(long, env = "DRAIN_TIMEOUT", default_value_t = 10, value_parser = clap::value_parser!(u32).range(0..=600))]
    pub drain_timeout: u32,
    /// Seconds an HTTP connection may go without sending a complete request head
    /// (fresh, idle between requests, or dribbling headers) before it is closed.
    #[arg(long, env = "HTTP_IDLE_TIMEOUT", default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=3_600))]
    pub http_idle_timeout: u32,
    /// Connections (HTTP and Socket.IO WebSockets) one client address may hold open.
    #[arg(long, env = "HTTP_MAX_CONNECTIONS_PER_IP", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub http_max_connections_per_ip: u32,
    /// Log filter: a level (`info`) or per-target levels (`huddle=debug,sqlx=warn`).
    #[arg(long, env = "LOG_LEVEL", default_value = "info", value_parser = parse_log_level)]
    pub log_level: Targets,
    /// Serve Prometheus `/metrics` on this port only (instead of on PORT).
    #[arg(long, env = "METRICS_PORT")]
    pub metrics_port: Option<u16>,
    /// REST requests one user may make per second, once their burst is spent (0: no
    /// per-user limit). Set far above what a real app does: it stops a client looping.
    #[arg(long, env = "RATE_LIMIT_USER_PER_SEC", default_value_t = 20, value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub rate_limit_user_per_sec: u32,
    /// REST requests one user may make at once (0: no per-user limit).
    #[arg(long, env = "RATE_LIMIT_USER_BURST", default_value_t = 100, value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub rate_limit_user_burst: u32,
    /// Requests per second from one client IP (an IPv6 /64), before any token is read
    /// (0: no per-IP limit). Offices and mobile carriers put many users behind one IP.
    #[arg(long, env = "RATE_LIMIT_IP_PER_SEC", default_value_t = 100, value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub rate_limit_ip_per_sec: u32,
    /// Requests one client IP may make at once (0: no per-IP limit).
    #[arg(long, env = "RATE_LIMIT_IP_BURST", default_value_t = 400, value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub rate_limit_ip_burst: u32,
    /// STUN server handed to clients, e.g. `stun:stun.example.org:3478`.
    #[arg(long, env = "STUN_SERVER_URL", value_parser = parse_stun_url)]
    pub stun_server_url: Option<String>,
    /// Static TURN server handed to clients, e.g. `turn:turn.example.org:3478`.
    #[arg(long, env = "TURN_SERVER_URL", value_parser = parse_turn_url, requires_all = ["turn_username", "turn_password"])]
    pub turn_server_url: Option<String>,
    /// Username for TURN_SERVER_URL.
    #[arg(long, env = "TURN_USERNAME", requires = "turn_server_url")]
    pub turn_username: Option<String>,
    /// Password for TURN_SERVER_URL.
    #[arg(
        long,
        env = "TURN_PASSWORD",
        hide_env_values = true,
        requires = "turn_server_url"
    )]
    pub turn_password: Option<String>,
    /// Address the SFU's UDP media port binds to.
    #[arg(long, env = "SFU_HOST", default_value = "0.0.0.0")]
    pub sfu_host: IpAddr,
    /// The SFU's one UDP port for every peer connection (0 picks a free one).
    #[arg(long, env = "SFU_PORT", default_value_t = 7882)]
    pub sfu_port: u16,
    /// IP the SFU tells clients to send media to: the public IP behind NAT or in a
    /// container. Default: SFU_HOST if it is specific, else this host's outbound IP.
    #[arg(long, env = "SFU_PUBLIC_IP")]
    pub sfu_public_ip: Option<IpAddr>,
    /// Threads the SFU forwards media on, in a runtime of its own (rooms spread over
    /// them; signaling and the API keep theirs). Default: this machine's cores.
    #[arg(long, env = "SFU_THREADS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub sfu_threads: Option<u16>,
    /// Shared secret for TURN credentials (coturn's `static-auth-secret`). Without it
    /// the embedded server uses a random one made per process.
    #[arg(long, env = "TURN_SECRET", hide_env_values = true, value_parser = parse_secret)]
    pub turn_secret: Option<String>,
    /// TURN realm (coturn's `realm`).
    #[arg(long, env = "TURN_REALM", default_value = "huddle", value_parser = parse_realm)]
    pub turn_realm: String,
    /// Seconds minted TURN credentials stay valid.
    #[arg(long, env = "TURN_TTL", default_value_t = 86_400, value_parser = clap::value_parser!(u32).range(60..=604_800))]
    pub turn_ttl: u32,
    /// Run the embedded TURN server (turn off when coturn serves TURN_URLS).
    #[arg(long, env = "TURN_EMBEDDED", default_value_t = true, action = ArgAction::Set)]
    pub turn_embedded: bool,
    /// Address the embedded TURN server listens on (UDP and TCP).
    #[arg(long, env = "TURN_HOST", default_value = "0.0.0.0")]
    pub turn_host: IpAddr,
    /// Port of the embedded TURN server, UDP and TCP (0 picks a free one).
    #[arg(long, env = "TURN_PORT", default_value_t = 3478)]
    pub turn_port: u16,
    /// IP clients reach the embedded TURN server and its relays at (the public IP
    /// behind NAT). Default: TURN_HOST if it is specific, else this host's outbound IP.
    #[arg(long, env = "TURN_PUBLIC_IP")]
    pub turn_public_ip: Option<IpAddr>,
    /// Address relay sockets bind to. Default: TURN_HOST.
    #[arg(long, env = "TURN_RELAY_IP")]
    pub turn_relay_ip: Option<IpAddr>,
    /// Lowest relay port.
    #[arg(long, env = "TURN_MIN_PORT", default_value_t = 49_152, value_parser = clap::value_parser!(u16).range(1..))]
    pub turn_min_port: u16,
    /// Highest relay port.
    #[arg(long, env = "TURN_MAX_PORT", default_value_t = 65_535, value_parser = clap::value_parser!(u16).range(1..))]
    pub turn_max_port: u16,
    /// Most relay allocations one user holds at once. A browser takes one per network
    /// interface, TURN URL and peer connection (two per SFU call): 8 on a laptop with
    /// two interfaces.
    #[arg(long, env = "TURN_USER_QUOTA", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=1_000))]
    pub turn_user_quota: u32,
    /// Most relay allocations on the embedded server at once.
    #[arg(long, env = "TURN_TOTAL_QUOTA", default_value_t = 1_200, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub turn_total_quota: u32,
    /// Seconds a TURN-over-TCP connection without an allocation may go without a
    /// complete message before it is closed.
    #[arg(long, env = "TURN_TCP_IDLE_TIMEOUT", default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=3_600))]
    pub turn_tcp_idle_timeout: u32,
    /// Seconds a TURN-over-TCP message, once started, has to arrive whole.
    #[arg(long, env = "TURN_TCP_PARTIAL_TIMEOUT", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=600))]
    pub turn_tcp_partial_timeout: u32,
    /// TURN-over-TCP connections one client address may hold open.
    #[arg(long, env = "TURN_TCP_MAX_PER_IP", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=4_096))]
    pub turn_tcp_max_per_ip: u32,
    /// Internal networks relays may reach, comma-separated CIDR ranges (loopback and
    /// private ranges are closed otherwise; the built-in SFU is always reachable).
    #[arg(long, env = "TURN_ALLOWED_PEERS", value_delimiter = ',')]
    pub turn_allowed_peers: Vec<IpRange>,
    /// TURN URLs handed out with minted credentials, comma-separated (`turn:` and
    /// `turns:`). Default: the embedded server over UDP and TCP.
    #[arg(long, env = "TURN_URLS", value_delimiter = ',', value_parser = parse_turn_url)]
    pub turn_urls: Vec<String>,
    /// Media mode of calls whose start request names none: `sfu`, `p2p` or `livekit`.
    #[arg(long, env = "DEFAULT_MEDIA_MODE", default_value = "sfu")]
    pub default_media_mode: MediaMode,
    /// LiveKit server clients connect to for `livekit` calls, e.g. `wss://lk.example.org`.
    #[arg(long, env = "LIVEKIT_URL", value_parser = parse_livekit_url, requires_all = ["livekit_api_key", "livekit_api_secret"])]
    pub livekit_url: Option<String>,
    /// LiveKit API key.
    #[arg(long, env = "LIVEKIT_API_KEY", requires = "livekit_url")]
    pub livekit_api_key: Option<String>,
    /// LiveKit API secret.
    #[arg(
        long,
        env = "LIVEKIT_API_SECRET",
        hide_env_values = true,
        requires = "livekit_url"
    )]
    pub livekit_api_secret: Option<String>,
    /// Seconds a LiveKit access token lets its holder join (reconnect with
    /// `POST /api/v1/calls/:callId/token` for a fresh one).
    #[arg(long, env = "LIVEKIT_TOKEN_TTL", default_value_t = 21_600, value_parser = clap::value_parser!(u32).range(60..=86_400))]
    pub livekit_token_ttl: u32,
    /// Seconds LiveKit keeps a call's room once it is empty.
    #[arg(long, env = "LIVEKIT_EMPTY_TIMEOUT", default_value_t = 300, value_parser = clap::value_parser!(u32).range(1..=86_400))]
    pub livekit_empty_timeout: u32,
    /// Redis (7+) shared by the nodes of a cluster, e.g. `redis://10.0.0.2:6379/0`.
    /// Set, this node joins the cluster (with the others on the same Redis and
    /// DATABASE_URL); unset, Huddle is one process and needs no Redis.
    #[arg(long, env = "REDIS_URL", value_parser = parse_redis_url)]
    pub redis_url: Option<String>,
    /// This node's id in a cluster, unique among its nodes. Default: the host name.
    #[arg(long, env = "NODE_ID", value_parser = parse_node_id)]
    pub node_id: Option<String>,
    /// Region whose numbers phone-call events may give without a country code
    /// (`US`, `GB`, `DE`, ...): `(415) 555-2671` is then read as +14155552671.
    /// Unset, every number must carry its country code (`+1 415 555 2671`).
    #[arg(long, env = "PHONE_DEFAULT_REGION", value_parser = parse_phone_region)]
    pub phone_default_region: Option<phonenumber::country::Id>,
    /// Seconds after which a phone call started and not ended counts as stale.
    #[arg(long, env = "PHONE_STALE_AFTER", default_value_t = 3_600, value_parser = clap::value_parser!(u32).range(1..=2_592_000))]
    pub phone_stale_after: u32,
    /// Let the demo page at `/` mint tokens for any user id (`POST /demo/token`).
    /// Default: on only when JWT_SECRET is unset (tokens then die with the process).
    #[arg(long, env = "DEMO_TOKENS")]
    pub demo_tokens: Option<bool>,
    /// Origins of other sites' pages that may call the REST API and connect to
    /// Socket.IO, comma-separated (`https://app.example.org,http://localhost:3344`).
    /// Unset: only pages Huddle serves itself (its own origin).
    #[arg(long, env = "CORS_ORIGINS", value_delimiter = ',', value_parser = Origin::parse)]
    pub cors_origins: Vec<Origin>,
    /// PEM certificate chain (the server's certificate first) for HTTPS and WSS on
    /// PORT, and TURN over TLS. Set with SSL_KEY_PATH; unset, PORT serves plain HTTP.
    #[arg(long, env = "SSL_CERT_PATH")]
    pub ssl_cert_path: Option<PathBuf>,
    /// PEM private key of SSL_CERT_PATH's certificate.
    #[arg(long, env = "SSL_KEY_PATH")]
    pub ssl_key_path: Option<PathBuf>,
    /// Seconds between looks at the certificate files' modification times: when they
    /// change, the files are loaded again (as on SIGHUP). 0: on SIGHUP only.
    #[arg(long, env = "SSL_RELOAD_INTERVAL", default_value_t = 5, value_parser = clap::value_parser!(u32).range(0..=86_400))]
    pub ssl_reload_interval: u32,
    /// TCP port of the embedded TURN server's TURN over TLS (`turns:`), served when
    /// SSL_CERT_PATH is set (0 picks a free one). 443 passes firewalls that let only
    /// HTTPS out.
    #[arg(long, env = "TURN_TLS_PORT", default_value_t = 5349)]
    pub turn_tls_port: u16,
    /// Host name in the `turns:` URLs handed out, one the certificate names (clients
    /// check it), e.g. `turn.example.org`. Default: TURN_PUBLIC_IP.
    #[arg(long, env = "TURN_TLS_HOST", value_parser = parse_host_name)]
    pub turn_tls_host: Option<String>,
    /// Folder of call recordings (`<callId>/<recordingId>.webm`), created if missing.
    /// Files are served only through the API, to members, never at a public URL.
    #[arg(long, env = "RECORDINGS_DIR", default_value = "./recordings", value_parser = parse_dir)]
    pub recordings_dir: PathBuf,
    /// Who may start and stop a call's recordings: `initiator` (the call's),
    /// `member` (anyone who joined it) or `admin` (admin tokens only). Admins always may.
    #[arg(
        long,
        env = "RECORDING_POLICY",
        value_enum,
        default_value = "initiator"
    )]
    pub recording_policy: RecordingPolicy,
    /// Days after which finished recordings are deleted (files removed, rows
    /// `deleted`); 0 keeps them.
    #[arg(long, env = "RECORDING_RETENTION_DAYS", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=36_500))]
    pub recording_retention_days: u32,
    /// Largest recording in MiB: one that reaches it stops (reason `limit`).
    #[arg(long, env = "RECORDING_MAX_MB", default_value_t = 2_048, value_parser = clap::value_parser!(u32).range(1..=1_048_576))]
    pub recording_max_mb: u32,
    /// Longest recording in minutes: one that reaches it stops (reason `limit`).
    #[arg(long, env = "RECORDING_MAX_MINUTES", default_value_t = 240, value_parser = clap::value_parser!(u32).range(1..=10_080))]
    pub recording_max_minutes: u32,
    /// Seconds a support call is taken to last while a queue has served nobody yet:
    /// the wait estimate's handling time until there are real ones.
    #[arg(long, env = "QUEUE_DEFAULT_HANDLE_SECONDS", default_value_t = 180, value_parser = clap::value_parser!(u32).range(1..=86_400))]
    pub queue_default_handle_seconds: u32,
    /// Accounts with passwords, for deployments without an identity service:
    /// `/api/v1/auth/register`, `login` and `refresh` issue tokens. Off, those answer
    /// 404 and backends mint every token.
    #[arg(long, env = "AUTH_ACCOUNTS", default_value_t = false, action = ArgAction::Set)]
    pub auth_accounts: bool,
    /// Seconds an access token issued by `/api/v1/auth/*` is valid.
    #[arg(long, env = "ACCESS_TOKEN_TTL", default_value_t = 900, value_parser = clap::value_parser!(u32).range(60..=86_400))]
    pub access_token_ttl: u32,
    /// Days a refresh token issued by `/api/v1/auth/*` is valid (if not used first).
    #[arg(long, env = "REFRESH_TOKEN_TTL_DAYS", default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=3_650))]
    pub refresh_token_ttl_days: u32,
}

impl Config {
    /// The configuration a plain `huddle` with no flags and this environment gets;
    /// tests start from here and change fields.
    pub fn from_args<I, T>(args: I) -> Result<Self, String>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        Cli::try_parse_from(args)
            .map(|cli| cli.config)
            .map_err(|e| one_line(&e))
    }

    pub fn limits(&self) -> Limits {
        Limits {
            max_participants: self.max_call_participants,
            ringing_timeout: Duration::seconds(self.ringing_timeout.into()),
            max_duration: Duration::seconds(self.max_call_duration.into()),
            away_grace: Duration::seconds(self.connection_timeout.into()),
            max_ringing: self.ringing_limit,
            decline_cooldown: Duration::seconds(self.decline_cooldown.into()),
        }
    }

    /// Settings of phone-call tracking (PHONE_*).
    pub fn phone(&self) -> PhoneSettings {
        PhoneSettings {
            numbers: Numbers::new(self.phone_default_region),
            stale_after: Duration::seconds(self.phone_stale_after.into()),
        }
    }

    /// Limits of the HTTP port.
    pub fn http_limits(&self) -> HttpLimits {
        HttpLimits {
            max_per_ip: self.http_max_connections_per_ip as usize,
            idle_timeout: std::time::Duration::from_secs(self.http_idle_timeout.into()),
        }
    }

    /// How long a shutdown waits for work in flight.
    pub fn drain_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.drain_timeout.into())
    }

    /// The REST rate limiters (RATE_LIMIT_*), fresh: one set per server.
    pub fn rate_limits(&self) -> RateLimits {
        RateLimits::new(
            Rate {
                per_sec: self.rate_limit_ip_per_sec,
                burst: self.rate_limit_ip_burst,
            },
            Rate {
                per_sec: self.rate_limit_user_per_sec,
                burst: self.rate_limit_user_burst,
            },
        )
    }

    /// This node's id: NODE_ID, else the host name, else `node-` and a random suffix.
    pub fn node_id(&self) -> String {
        self.node_id.clone().unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .and_then(|name| parse_node_id(name.trim()).ok())
                .unwrap_or_else(|| {
                    format!("node-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
                })
        })
    }

    /// The recording settings (RECORDINGS_DIR, RECORDING_*), for node `node`.
    pub fn recordings(&self, node: String) -> RecordingSettings {
        let dir = &self.recordings_dir;
        RecordingSettings {
            dir: std::path::absolute(dir).unwrap_or_else(|_| dir.clone()),
            policy: self.recording_policy,
            retention: (self.recording_retention_days > 0)
                .then(|| Duration::days(self.recording_retention_days.into())),
            max_bytes: u64::from(self.recording_max_mb) * 1024 * 1024,
            max_duration: std::time::Duration::from_secs(
                u64::from(self.recording_max_minutes) * 60,
            ),
            node,
        }
    }

    /// Settings of the support queues.
    pub fn queues(&self) -> QueueSettings {
        QueueSettings {
            default_handle_seconds: f64::from(self.queue_default_handle_seconds),
            away_grace: Duration::seconds(self.connection_timeout.into()),
        }
    }

    /// The account settings (AUTH_ACCOUNTS, ACCESS_TOKEN_TTL, REFRESH_TOKEN_TTL_DAYS).
    pub fn accounts(&self) -> AccountSettings {
        AccountSettings {
            enabled: self.auth_accounts,
            access_ttl: Duration::seconds(self.access_token_ttl.into()),
            refresh_ttl: Duration::days(self.refresh_token_ttl_days.into()),
        }
    }

    /// LiveKit's settings, when LIVEKIT_URL (with its key and secret) is set.
    pub fn livekit(&self) -> Option<LiveKitConfig> {
        Some(LiveKitConfig {
            url: self.livekit_url.clone()?,
            api_key: self.livekit_api_key.clone()?,
            api_secret: self.livekit_api_secret.clone()?,
            token_ttl: std::time::Duration::from_secs(self.livekit_token_ttl.into()),
            empty_timeout: self.livekit_empty_timeout,
            max_participants: self.max_call_participants,
            request_timeout: std::time::Duration::from_secs(10),
        })
    }

    /// The embedded TURN server's settings; `services` are internal addresses its
    /// relays may always reach (the built-in SFU); with `tls`, it serves TURN over TLS.
    pub fn turn_config(
        &self,
        secret: Secret,
        services: Vec<SocketAddr>,
        tls: Option<Arc<ServerConfig>>,
    ) -> TurnConfig {
        TurnConfig {
            listen: SocketAddr::new(self.turn_host, self.turn_port),
            relay_bind: self.turn_relay_ip.unwrap_or(self.turn_host),
            relay_public: self.turn_public_ip(),
            relay_ports: self.turn_min_port..=self.turn_max_port,
            realm: self.turn_realm.clone(),
            secret,
            quota: Quota {
                per_user: self.turn_user_quota as usize,
                total: self.turn_total_quota as usize,
            },
            policy: PeerPolicy {
                allowed: self.turn_allowed_peers.clone(),
                services,
                ..PeerPolicy::default()
            },
            tcp: huddle_turn::TcpLimits {
                idle_timeout: std::time::Duration::from_secs(self.turn_tcp_idle_timeout.into()),
                partial_timeout: std::time::Duration::from_secs(
                    self.turn_tcp_partial_timeout.into(),
                ),
                max_per_ip: self.turn_tcp_max_per_ip as usize,
            },
            tls: tls.map(|config| TurnTls {
                listen: SocketAddr::new(self.turn_host, self.turn_tls_port),
                config,
            }),
        }
    }

    /// The certificate files, when SSL_CERT_PATH and SSL_KEY_PATH are set.
    pub fn tls_files(&self) -> Option<TlsFiles> {
        Some(TlsFiles {
            cert: self.ssl_cert_path.clone()?,
            key: self.ssl_key_path.clone()?,
        })
    }

    /// How often the certificate files are looked at, if at all.
    pub fn ssl_reload_interval(&self) -> Option<std::time::Duration> {
        (self.ssl_reload_interval > 0)
            .then(|| std::time::Duration::from_secs(self.ssl_reload_interval.into()))
    }

    /// Where clients reach the embedded TURN server.
    pub fn turn_public_ip(&self) -> IpAddr {
        self.turn_public_ip
            .unwrap_or_else(|| outbound_ip(self.turn_host))
    }

    /// The ICE servers handed to clients: STUN_SERVER_URL (or the embedded server as
    /// STUN), TURN with minted credentials (TURN_URLS, or the embedded server at
    /// `embedded`, over UDP and TCP, and over TLS on port `embedded_tls` at
    /// TURN_TLS_HOST), and the fixed TURN_SERVER_URL.
    pub fn ice_servers(
        &self,
        secret: Option<Secret>,
        embedded: Option<SocketAddr>,
        embedded_tls: Option<u16>,
    ) -> IceServers {
        let host = |addr: SocketAddr| match addr.ip() {
            IpAddr::V6(ip) => format!("[{ip}]:{}", addr.port()),
            ip => format!("{ip}:{}", addr.port()),
        };
        let tls = |addr: SocketAddr, port| {
            let authority = match &self.turn_tls_host {
                Some(name) => match name.parse::<IpAddr>() {
                    Ok(ip) => host(SocketAddr::new(ip, port)),
                    Err(_) => format!("{name}:{port}"),
                },
                None => host(SocketAddr::new(addr.ip(), port)),
            };
            format!("turns:{authority}?transport=tcp")
        };
        let stun = match (&self.stun_server_url, embedded) {
            (Some(url), _) => vec![url.clone()],
            (None, Some(addr)) => vec![format!("stun:{}", host(addr))],
            (None, None) => vec![],
        };
        let urls = match embedded {
            _ if !self.turn_urls.is_empty() => self.turn_urls.clone(),
            Some(addr) => ["udp", "tcp"]
                .map(|transport| format!("turn:{}?transport={transport}", host(addr)))
                .into_iter()
                .chain(embedded_tls.map(|port| tls(addr, port)))
                .collect(),
            None => vec![],
        };
        IceServers {
            stun,
            rest_turn: secret.filter(|_| !urls.is_empty()).map(|secret| RestTurn {
                urls,
                secret,
                ttl: self.turn_ttl.into(),
            }),
            fixed_turn: self.turn_server_url.as_ref().map(|url| IceServer {
                urls: vec![url.clone()],
                username: self.turn_username.clone(),
                credential: self.turn_password.clone(),
            }),
        }
    }

    /// Checks that go across settings.
    pub fn validate(&self) -> Result<(), String> {
        if self.metrics_port.is_some_and(|p| p != 0 && p == self.port) {
            return Err("METRICS_PORT: must differ from PORT".into());
        }
        if self.default_media_mode == MediaMode::Livekit && self.livekit_url.is_none() {
            return Err("DEFAULT_MEDIA_MODE: livekit needs LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET".into());
        }
        if self.turn_min_port > self.turn_max_port {
            return Err("TURN_MIN_PORT: must not be above TURN_MAX_PORT".into());
        }
        if self.ssl_cert_path.is_some() != self.ssl_key_path.is_some() {
            return Err("SSL_CERT_PATH and SSL_KEY_PATH: set both or neither".into());
        }
        let tls_turn = self.turn_embedded && self.tls_files().is_some();
        let same_host = |a: IpAddr| {
            a == self.turn_host || a.is_unspecified() || self.turn_host.is_unspecified()
        };
        if tls_turn
            && self.turn_tls_port != 0
            && (self.turn_tls_port == self.turn_port
                || (self.turn_tls_port == self.port && same_host(self.host)))
        {
            return Err("TURN_TLS_PORT: must differ from TURN_PORT and PORT".into());
        }
        if !self.turn_embedded && self.turn_secret.is_some() && self.turn_urls.is_empty() {
            return Err(
                "TURN_URLS: name the TURN servers that check TURN_SECRET when TURN_EMBEDDED is false"
                    .into(),
            );
        }
        Ok(())
    }
}

impl Cli {
    /// Parses the command line and environment. Help and version are printed and the
    /// process exits 0; any other problem is one line naming the setting, exit 2.
    /// The matches say where each setting came from (for `huddle check`).
    pub fn parse_or_exit() -> (Self, ArgMatches) {
        let parsed = Cli::command()
            .try_get_matches()
            .and_then(|matches| Ok((Cli::from_arg_matches(&matches)?, matches)));
        match parsed {
            Ok((cli, matches)) => match cli.config.validate() {
                Ok(()) => (cli, matches),
                Err(message) => exit_with(&message),
            },
            Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
                e.exit()
            }
            Err(e) => exit_with(&one_line(&e)),
        }
    }
}

impl Config {
    /// What `huddle check` checks beyond parsing: the checks across settings, that
    /// DATABASE_URL and REDIS_URL are URLs the server could open, and that the
    /// certificate and key of SSL_CERT_PATH and SSL_KEY_PATH load. Returns the
    /// database's kind.
    pub fn check(&self) -> Result<&'static str, String> {
        self.validate()?;
        if let Some(files) = self.tls_files() {
            crate::tls::Certificates::load(files).map_err(|e| e.to_string())?;
        }
        let database =
            Store::check_url(&self.database_url).map_err(|e| format!("DATABASE_URL: {e}"))?;
        if let Some(url) = &self.redis_url {
            crate::cluster::redis_client(url).map_err(|e| e.to_string())?;
            if database == "sqlite" {
                return Err(StartError::ClusterOnSqlite.to_string());
            }
        }
        Ok(database)
    }
}

/// The settings `matches` (of `huddle` or one of its commands) gave, one
/// `VARIABLE=value  # source` line each, in `--help`'s order; secrets (the settings
/// whose values `--help` hides) and passwords in URLs masked.
pub fn effective_settings(matches: &ArgMatches) -> Vec<String> {
    let command = Cli::command();
    let (command, matches) = match matches.subcommand() {
        Some((name, sub)) => match command.find_subcommand(name) {
            Some(command) => (command.clone(), sub),
            None => (command, matches),
        },
        None => (command, matches),
    };
    command
        .get_arguments()
        .filter_map(|arg| {
            let var = arg.get_env()?.to_string_lossy().into_owned();
            let id = arg.get_id().as_str();
            let values: Vec<String> = matches
                .get_raw(id)
                .into_iter()
                .flatten()
                .map(|v| v.to_string_lossy().into_owned())
                .collect();
            let source = match matches.value_source(id) {
                Some(ValueSource::DefaultValue) => "default",
                Some(ValueSource::EnvVariable) => "environment",
                Some(ValueSource::CommandLine) => "flag",
                _ => return Some(format!("# {var} is unset")),
            };
            let value = if arg.is_hide_env_values_set() {
                MASK.to_owned()
            } else {
                values
                    .iter()
                    .map(|v| mask_password(v))
                    .collect::<Vec<_>>()
                    .join(",")
            };
            Some(format!("{var}={value}  # {source}"))
        })
        .collect()
}

/// What a masked secret reads as (whatever its length).
const MASK: &str = "****";

/// `value` with the password of a URL's `user:password@` and of any `password=`
/// query parameter masked.
pub fn mask_password(value: &str) -> String {
    let mut masked = value.to_owned();
    if let Some(start) = value.find("://").map(|i| i + 3) {
        let authority_end = value[start..]
            .find(['/', '?', '#'])
            .map_or(value.len(), |i| start + i);
        if let Some(at) = value[start..authority_end].rfind('@').map(|i| start + i) {
            if let Some(colon) = value[start..at].find(':').map(|i| start + i) {
                masked = format!("{}{MASK}{}", &value[..=colon], &value[at..]);
            }
        }
    }
    if let Some((path, query)) = masked.split_once('?') {
        let query: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) if name.to_ascii_lowercase().ends_with("password") => {
                    format!("{name}={MASK}")
                }
                _ => pair.to_owned(),
            })
            .collect();
        masked = format!("{path}?{}", query.join("&"));
    }
    masked
}

fn exit_with(message: &str) -> ! {
    eprintln!("huddle: {message}");
    std::process::exit(2)
}

/// The first line of a clap error, with the environment variable behind the flag.
fn one_line(e: &clap::Error) -> String {
    let rendered = e.to_string();
    let first = rendered.lines().next().unwrap_or("invalid configuration");
    let first = first.strip_prefix("error: ").unwrap_or(first);
    let env = match e.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(flag)) => env_behind(flag),
        _ => None,
    };
    match env {
        Some(var) => format!("{first} (environment variable {var})"),
        None => first.to_owned(),
    }
}

/// The environment variable of the flag clap shows as `flag` (e.g. `--port <PORT>`).
fn env_behind(flag: &str) -> Option<String> {
    let long = flag.strip_prefix("--")?.split([' ', '=']).next()?;
    Cli::command()
        .get_arguments()
        .find(|arg| arg.get_long() == Some(long))
        .and_then(|arg| arg.get_env())
        .map(|var| var.to_string_lossy().into_owned())
}

fn parse_secret(value: &str) -> Result<String, String> {
    if value.chars().count() < 16 {
        return Err("must be at least 16 characters".into());
    }
    Ok(value.to_owned())
}

fn parse_dir(value: &str) -> Result<PathBuf, String> {
    if value.trim().is_empty() {
        return Err("must name a folder".into());
    }
    Ok(PathBuf::from(value))
}

fn parse_database_url(value: &str) -> Result<String, String> {
    if value.starts_with("sqlite:")
        || value.starts_with("postgres://")
        || value.starts_with("postgresql://")
    {
        Ok(value.to_owned())
    } else {
        Err("must start with sqlite: or postgres://".into())
    }
}

/// A level, or comma-separated `target=level` directives, optionally after a level.
/// Stricter than `Targets` itself, which takes any bare word as a target name.
fn parse_log_level(value: &str) -> Result<Targets, String> {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    let valid = value.split(',').all(|directive| {
        let level = directive.rsplit('=').next().unwrap_or_default().trim();
        LEVELS.contains(&level.to_ascii_lowercase().as_str())
    });
    if !valid {
        return Err(format!(
            "expected a level ({}) or target=level pairs",
            LEVELS.join(", ")
        ));
    }
    Targets::from_str(value).map_err(|e| e.to_string())
}

fn parse_phone_region(value: &str) -> Result<phonenumber::country::Id, String> {
    parse_region(value)
}

fn parse_redis_url(value: &str) -> Result<String, String> {
    parse_url_with(value, &["redis://", "rediss://"])
}

/// A node id: 1 to 64 letters, digits, `-`, `_` or `.`.
fn parse_node_id(value: &str) -> Result<String, String> {
    let fine = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if (1..=64).contains(&value.len()) && value.chars().all(fine) {
        Ok(value.to_owned())
    } else {
        Err("must be 1 to 64 letters, digits, '-', '_' or '.'".to_owned())
    }
}

fn parse_livekit_url(value: &str) -> Result<String, String> {
    parse_url_with(value, &["ws://", "wss://", "http://", "https://"])
}

fn parse_realm(value: &str) -> Result<String, String> {
    if value.is_empty()
        || value.len() > 127
        || value.contains(['"', '\\'])
        || value.contains(char::is_control)
    {
        return Err("must be 1 to 127 characters without quotes or backslashes".into());
    }
    Ok(value.to_owned())
}

/// A DNS name or IP address for URLs: letters, digits, `-` and `.` (or an IP).
fn parse_host_name(value: &str) -> Result<String, String> {
    if value.parse::<IpAddr>().is_ok() {
        return Ok(value.to_owned());
    }
    let label_fine = |label: &str| {
        (1..=63).contains(&label.len())
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    if value.len() <= 253 && value.split('.').all(label_fine) {
        Ok(value.to_owned())
    } else {
        Err("must be a host name (e.g. turn.example.org) or an IP address".to_owned())
    }
}

/// The IP to announce when none is configured: the bind address if it is specific,
/// else the address this host would use to reach the Internet (no packet is sent),
/// else loopback.
pub fn outbound_ip(host: IpAddr) -> IpAddr {
    if !host.is_unspecified() {
        return host;
    }
    std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
        .and_then(|s| {
            s.connect((Ipv4Addr::new(192, 0, 2, 1), 9))?;
            s.local_addr()
        })
        .map(|a| a.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

fn parse_stun_url(value: &str) -> Result<String, String> {
    parse_url_with(value, &["stun:", "stuns:"])
}

fn parse_turn_url(value: &str) -> Result<String, String> {
    parse_url_with(value, &["turn:", "turns:"])
}

fn parse_url_with(value: &str, schemes: &[&str]) -> Result<String, String> {
    match schemes.iter().find_map(|s| value.strip_prefix(s)) {
        Some(rest) if !rest.is_empty() && !rest.contains(char::is_whitespace) => {
            Ok(value.to_owned())
        }
        _ => Err(format!(
            "must be a {} URL with a host",
            schemes.join(" or ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_the_contracts() {
        let config = Config::from_args(["huddle"]).unwrap();
        assert_eq!(config.port, 3003);
        assert_eq!(config.max_call_participants, 8);
        assert_eq!(config.max_call_duration, 14_400);
        assert_eq!(config.ringing_timeout, 60);
        assert_eq!(config.connection_timeout, 30);
        assert_eq!(config.database_url, "sqlite://huddle.db");
        assert!(config.turn_embedded);
        assert_eq!(
            (config.turn_port, config.turn_realm.as_str()),
            (3478, "huddle")
        );
        assert_eq!(config.turn_ttl, 86_400);
        assert!(
            config
                .ice_servers(None, None, None)
                .for_user("alice")
                .is_empty()
        );
    }

    #[test]
    fn rate_limits_default_to_budgets_real_apps_never_reach_and_0_turns_one_off() {
        let config = Config::from_args(["huddle"]).unwrap();
        assert_eq!(
            (config.rate_limit_user_per_sec, config.rate_limit_user_burst),
            (20, 100)
        );
        assert_eq!(
            (config.rate_limit_ip_per_sec, config.rate_limit_ip_burst),
            (100, 400)
        );
        let now = chrono::Utc::now();
        let user = crate::calls::model::UserId("alice".into());
        let limits = config.rate_limits();
        assert!((0..100).all(|_| limits.user.check(&user, now).is_ok()));
        assert!(limits.user.check(&user, now).is_err());
        let off = Config::from_args(["huddle", "--rate-limit-user-per-sec", "0"]).unwrap();
        let limits = off.rate_limits();
        assert!((0..1000).all(|_| limits.user.check(&user, now).is_ok()));
        let err = Config::from_args(["huddle", "--rate-limit-ip-burst", "many"]).unwrap_err();
        assert!(err.contains("RATE_LIMIT_IP_BURST"), "{err}");
    }

    #[test]
    fn a_bad_value_is_one_line_naming_the_flag() {
        let err = Config::from_args(["huddle", "--port", "eighty"]).unwrap_err();
        assert!(
            err.starts_with("invalid value 'eighty' for '--port <PORT>'"),
            "{err}"
        );
        assert!(err.ends_with("(environment variable PORT)"), "{err}");
        assert!(!err.contains('\n'));
        let err = Config::from_args(["huddle", "--max-call-participants", "100"]).unwrap_err();
        assert!(
            err.contains("MAX_CALL_PARTICIPANTS") && err.contains("2..=64"),
            "{err}"
        );
    }

    #[test]
    fn short_secrets_and_unknown_databases_are_refused() {
        let err = Config::from_args(["huddle", "--jwt-secret", "short"]).unwrap_err();
        assert!(
            err.contains("at least 16 characters") && err.contains("JWT_SECRET"),
            "{err}"
        );
        let err = Config::from_args(["huddle", "--database-url", "mysql://x"]).unwrap_err();
        assert!(err.contains("DATABASE_URL"), "{err}");
    }

    #[test]
    fn static_turn_needs_its_credentials_and_ice_servers_follow_the_settings() {
        assert!(Config::from_args(["huddle", "--turn-server-url", "turn:t.example:3478"]).is_err());
        let config = Config::from_args([
            "huddle",
            "--stun-server-url",
            "stun:s.example:3478",
            "--turn-server-url",
            "turn:t.example:3478",
            "--turn-username",
            "u",
            "--turn-password",
            "p",
        ])
        .unwrap();
        let servers = config.ice_servers(None, None, None).for_user("alice");
        assert_eq!(servers.len(), 2);
        assert_eq!(servers[0].urls, ["stun:s.example:3478"]);
        assert_eq!(servers[1].username.as_deref(), Some("u"));
        assert!(Config::from_args(["huddle", "--stun-server-url", "http://x"]).is_err());
    }

    #[test]
    fn the_embedded_turn_server_is_handed_out_over_udp_and_tcp_with_minted_credentials() {
        let config = Config::from_args(["huddle"]).unwrap();
        let secret = Secret::new("turn-secret-for-tests");
        let ice = config.ice_servers(
            Some(secret.clone()),
            Some("[2001:db8::7]:3478".parse().unwrap()),
            None,
        );
        let servers = ice.for_user("alice");
        assert_eq!(servers.len(), 2);
        assert_eq!(servers[0].urls, ["stun:[2001:db8::7]:3478"]);
        assert_eq!(
            servers[1].urls,
            [
                "turn:[2001:db8::7]:3478?transport=udp",
                "turn:[2001:db8::7]:3478?transport=tcp"
            ]
        );
        let username = servers[1].username.as_deref().unwrap();
        assert!(username.ends_with(":alice"), "{username}");
        assert_eq!(
            servers[1].credential.as_deref(),
            Some(secret.password(username).as_str())
        );
    }

    #[test]
    fn livekit_takes_its_url_key_and_secret_together() {
        assert!(Config::from_args(["huddle"]).unwrap().livekit().is_none());
        assert!(Config::from_args(["huddle", "--livekit-url", "wss://lk.example"]).is_err());
        assert!(
            Config::from_args(["huddle", "--livekit-api-key", "k"]).is_err(),
            "a key without a URL"
        );
        let config = Config::from_args([
            "huddle",
            "--livekit-url",
            "wss://lk.example",
            "--livekit-api-key",
            "APIkey",
            "--livekit-api-secret",
            "secret",
            "--default-media-mode",
            "livekit",
        ])
        .unwrap();
        config.validate().unwrap();
        let livekit = config.livekit().unwrap();
        assert_eq!(
            (livekit.url.as_str(), livekit.api_key.as_str()),
            ("wss://lk.example", "APIkey")
        );
        assert_eq!(livekit.token_ttl.as_secs(), 21_600);
        assert!(Config::from_args(["huddle", "--livekit-url", "lk.example"]).is_err());
        let no_livekit = Config::from_args(["huddle", "--default-media-mode", "livekit"]).unwrap();
        assert!(
            no_livekit
                .validate()
                .unwrap_err()
                .starts_with("DEFAULT_MEDIA_MODE")
        );
        assert!(Config::from_args(["huddle", "--default-media-mode", "mesh"]).is_err());
    }

    #[test]
    fn coturn_instead_of_the_embedded_server() {
        let config = Config::from_args([
            "huddle",
            "--turn-embedded",
            "false",
            "--turn-secret",
            "shared-with-coturn-secret",
            "--turn-urls",
            "turn:turn.example:3478?transport=udp,turns:turn.example:5349?transport=tcp",
            "--stun-server-url",
            "stun:turn.example:3478",
        ])
        .unwrap();
        config.validate().unwrap();
        let ice = config.ice_servers(config.turn_secret.as_deref().map(Secret::new), None, None);
        let servers = ice.for_user("bob");
        assert_eq!(servers.len(), 2);
        assert_eq!(servers[1].urls.len(), 2);
        assert!(servers[1].urls[1].starts_with("turns:"));
        let missing_urls = Config::from_args([
            "huddle",
            "--turn-embedded",
            "false",
            "--turn-secret",
            "shared-with-coturn-secret",
        ])
        .unwrap();
        assert!(
            missing_urls
                .validate()
                .unwrap_err()
                .starts_with("TURN_URLS")
        );
        assert!(Config::from_args(["huddle", "--turn-urls", "http://x"]).is_err());
        assert!(Config::from_args(["huddle", "--turn-allowed-peers", "10.0.0.0/40"]).is_err());
        assert!(Config::from_args(["huddle", "--turn-realm", "a\"b"]).is_err());
        let reversed = Config::from_args([
            "huddle",
            "--turn-min-port",
            "5000",
            "--turn-max-port",
            "4000",
        ])
        .unwrap();
        assert!(
            reversed
                .validate()
                .unwrap_err()
                .starts_with("TURN_MIN_PORT")
        );
    }

    #[test]
    fn log_level_takes_levels_and_per_target_levels_only() {
        assert!(Config::from_args(["huddle", "--log-level", "debug"]).is_ok());
        assert!(Config::from_args(["huddle", "--log-level", "warn,huddle=debug,sqlx=off"]).is_ok());
        let err = Config::from_args(["huddle", "--log-level", "loud"]).unwrap_err();
        assert!(err.contains("LOG_LEVEL"), "{err}");
        assert!(Config::from_args(["huddle", "--log-level", "huddle=chatty"]).is_err());
    }

    #[test]
    fn phone_settings_default_to_an_hour_and_no_region() {
        let config = Config::from_args(["huddle"]).unwrap();
        assert_eq!(config.phone_stale_after, 3_600);
        assert!(config.phone_default_region.is_none());
        let config = Config::from_args([
            "huddle",
            "--phone-default-region",
            "gb",
            "--phone-stale-after",
            "600",
        ])
        .unwrap();
        assert_eq!(
            config.phone().numbers.normalize("020 7183 8750").as_deref(),
            Ok("+442071838750")
        );
        assert_eq!(config.phone().stale_after, Duration::minutes(10));
        let err = Config::from_args(["huddle", "--phone-default-region", "Atlantis"]).unwrap_err();
        assert!(err.contains("PHONE_DEFAULT_REGION"), "{err}");
        let err = Config::from_args(["huddle", "--phone-stale-after", "0"]).unwrap_err();
        assert!(err.contains("PHONE_STALE_AFTER"), "{err}");
    }

    #[test]
    fn the_token_command_takes_a_role() {
        let role = |args: &[&str]| match Cli::try_parse_from(args).unwrap().command {
            Some(Command::Token(t)) => t.role(),
            _ => panic!("not the token command"),
        };
        assert_eq!(role(&["huddle", "token", "--user", "u"]), None);
        assert_eq!(
            role(&["huddle", "token", "--user", "u", "--admin"]),
            Some("admin")
        );
        assert_eq!(
            role(&["huddle", "token", "--user", "u", "--role", "admin"]),
            Some("admin")
        );
        assert_eq!(
            role(&["huddle", "token", "--user", "pbx", "--role", "service"]),
            Some("service")
        );
        assert!(Cli::try_parse_from(["huddle", "token", "--user", "u", "--role", "root"]).is_err());
        assert!(
            Cli::try_parse_from([
                "huddle", "token", "--user", "u", "--admin", "--role", "service"
            ])
            .is_err()
        );
    }

    #[test]
    fn passwords_in_urls_are_masked_and_nothing_else() {
        for (url, masked) in [
            ("postgres://u:pw@h:5432/db", "postgres://u:****@h:5432/db"),
            (
                "postgres://u@h/db?password=pw&sslmode=require",
                "postgres://u@h/db?password=****&sslmode=require",
            ),
            ("redis://:pw@r:6379/0", "redis://:****@r:6379/0"),
            ("rediss://user:p%40ss@r/0", "rediss://user:****@r/0"),
            ("postgres://u@h/db", "postgres://u@h/db"),
            ("sqlite://huddle.db", "sqlite://huddle.db"),
            (
                "turn:t.example:3478?transport=udp",
                "turn:t.example:3478?transport=udp",
            ),
            ("http://h/a@b:c", "http://h/a@b:c"),
        ] {
            assert_eq!(mask_password(url), masked, "{url}");
        }
    }

    #[test]
    fn cors_origins_are_origins() {
        let config = Config::from_args([
            "huddle",
            "--cors-origins",
            "https://App.example,http://localhost:3344/",
        ])
        .unwrap();
        let origins: Vec<String> = config
            .cors_origins
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(origins, ["https://app.example", "http://localhost:3344"]);
        let err = Config::from_args(["huddle", "--cors-origins", "https://app.example/login"])
            .unwrap_err();
        assert!(err.contains("CORS_ORIGINS"), "{err}");
        assert!(
            Config::from_args(["huddle"])
                .unwrap()
                .cors_origins
                .is_empty()
        );
    }

    #[test]
    fn metrics_port_must_differ_from_port() {
        let config =
            Config::from_args(["huddle", "--port", "4000", "--metrics-port", "4000"]).unwrap();
        assert!(config.validate().unwrap_err().contains("METRICS_PORT"));
    }

    #[test]
    fn tls_takes_a_certificate_and_a_key_together_and_adds_turns_to_the_ice_servers() {
        let config = Config::from_args(["huddle"]).unwrap();
        assert_eq!(config.tls_files(), None);
        assert_eq!(config.turn_tls_port, 5349);
        assert_eq!(
            config.ssl_reload_interval(),
            Some(std::time::Duration::from_secs(5))
        );
        for half in [["--ssl-cert-path", "/c.pem"], ["--ssl-key-path", "/k.pem"]] {
            let err = Config::from_args([&["huddle"][..], &half].concat())
                .unwrap()
                .validate()
                .unwrap_err();
            assert!(err.starts_with("SSL_CERT_PATH and SSL_KEY_PATH"), "{err}");
        }
        let tls = [
            "huddle",
            "--ssl-cert-path",
            "/etc/huddle/cert.pem",
            "--ssl-key-path",
            "/etc/huddle/key.pem",
        ];
        let config = Config::from_args(tls).unwrap();
        config.validate().unwrap();
        assert_eq!(
            config.tls_files(),
            Some(TlsFiles {
                cert: "/etc/huddle/cert.pem".into(),
                key: "/etc/huddle/key.pem".into(),
            })
        );
        let secret = Secret::new("turn-secret-for-tests");
        let at = Some("203.0.113.7:3478".parse().unwrap());
        let servers = config
            .ice_servers(Some(secret.clone()), at, Some(443))
            .for_user("alice");
        assert_eq!(
            servers[1].urls,
            [
                "turn:203.0.113.7:3478?transport=udp",
                "turn:203.0.113.7:3478?transport=tcp",
                "turns:203.0.113.7:443?transport=tcp"
            ]
        );
        let named =
            Config::from_args([&tls[..], &["--turn-tls-host", "turn.example.org"]].concat())
                .unwrap();
        let servers = named
            .ice_servers(Some(secret), at, Some(5349))
            .for_user("bob");
        assert_eq!(
            servers[1].urls[2],
            "turns:turn.example.org:5349?transport=tcp"
        );
        let v6 =
            Config::from_args([&tls[..], &["--turn-tls-host", "2001:db8::7"]].concat()).unwrap();
        let servers = v6
            .ice_servers(Some(Secret::new("turn-secret-for-tests")), at, Some(443))
            .for_user("bob");
        assert_eq!(servers[1].urls[2], "turns:[2001:db8::7]:443?transport=tcp");
        let err = Config::from_args(["huddle", "--turn-tls-host", "turn example"]).unwrap_err();
        assert!(err.contains("TURN_TLS_HOST"), "{err}");
        let err = Config::from_args(["huddle", "--ssl-reload-interval", "soon"]).unwrap_err();
        assert!(err.contains("SSL_RELOAD_INTERVAL"), "{err}");
    }

    #[test]
    fn turn_over_tls_needs_a_port_of_its_own() {
        let tls = [
            "huddle",
            "--ssl-cert-path",
            "c.pem",
            "--ssl-key-path",
            "k.pem",
        ];
        for clash in [["--turn-tls-port", "3478"], ["--turn-tls-port", "3003"]] {
            let config = Config::from_args([&tls[..], &clash].concat()).unwrap();
            assert!(
                config.validate().unwrap_err().starts_with("TURN_TLS_PORT"),
                "{clash:?}"
            );
        }
        let apart = [
            "--host",
            "10.0.0.1",
            "--turn-host",
            "10.0.0.2",
            "--turn-tls-port",
            "3003",
        ];
        let config = Config::from_args([&tls[..], &apart].concat()).unwrap();
        config.validate().unwrap();
        // Without a certificate nothing listens there.
        let config = Config::from_args(["huddle", "--turn-tls-port", "3478"]).unwrap();
        config.validate().unwrap();
    }
}
