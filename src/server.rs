//! Wiring: connects the store, builds the call service, the HTTP API and the
//! Socket.IO server on the same port, binds the listeners, runs the timeout sweeper,
//! and shuts all of it down in order.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::middleware;
use base64::Engine;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use huddle_turn::{Secret, TurnServer};
use signaling::Signaling;

use crate::api::{self, AppState, MetricsRoute};
use crate::auth::JwtKey;
use crate::browsers::{self, Browsers};
use crate::calls::model::MetricSource;
use crate::calls::service::{CallService, MediaSetup, RoomHost, ServiceError};
use crate::clock::Clock;
use crate::cluster::placed::PlacedSfu;
use crate::cluster::{self, Cluster, ClusterError};
use crate::config::Config;
use crate::http::{self, Drain};
use crate::ice::IceServers;
use crate::live::LiveCalls;
use crate::media::livekit::LiveKit;
use crate::media::sfu::{Measured, SfuPlane};
use crate::media::{MediaAccess, MediaPlane, Planes};
use crate::metrics::Metrics;
use crate::phone::PhoneCalls;
use crate::queue::QueueService;
use crate::realtime::{Notifier, Realtime};
use crate::recordings::RecordingService;
use crate::store::{Store, StoreError};
use crate::tls::{Certificates, TlsError};
use crate::users::UserService;
use crate::users::accounts::Accounts;

/// How often due calls (ringing timeouts, maximum duration) are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// How often recordings past RECORDING_RETENTION_DAYS are looked for.
const RETENTION_SWEEP_EVERY: Duration = Duration::from_secs(600);
/// How long a shutdown keeps answering new requests 503 at least, so that clients
/// on keep-alive connections hear `Connection: close` before those connections close.
const DRAIN_WINDOW: Duration = Duration::from_millis(500);
/// How long closing HTTP connections may take to send what they have in flight.
const LINGER: Duration = Duration::from_secs(2);

/// The server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    #[error("DATABASE_URL: {0}")]
    Database(#[from] StoreError),
    /// SSL_CERT_PATH or SSL_KEY_PATH cannot be used: a bad setting.
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot recover the calls in progress: {0}")]
    Recovery(#[from] ServiceError),
    #[error("cannot recover the recordings in progress: {0}")]
    Recordings(String),
    #[error("cannot recover the support queues: {0}")]
    Queues(String),
    #[error("AUTH_ACCOUNTS: {0}")]
    Accounts(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("SFU_PORT: cannot bind the media port: {0}")]
    Media(std::io::Error),
    #[error("TURN_PORT: cannot start the embedded TURN server: {0}")]
    Turn(std::io::Error),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("REDIS_URL: {0}")]
    Signaling(signaling::ClusterError),
    #[error(
        "REDIS_URL is set but DATABASE_URL is SQLite: the nodes of a cluster share one \
         PostgreSQL database"
    )]
    ClusterOnSqlite,
}

/// A running server.
#[derive(Debug)]
pub struct Server {
    /// Where HTTP is served.
    pub addr: SocketAddr,
    /// Where Prometheus `/metrics` is served when METRICS_PORT is set.
    pub metrics_addr: Option<SocketAddr>,
    pub state: AppState,
    signaling: Signaling,
    /// Refuses new HTTP requests at shutdown and counts those in flight.
    drain: Arc<Drain>,
    drain_timeout: Duration,
    /// Flipped to `true` to stop the timeout sweeper (first thing at shutdown).
    stop_sweeper: watch::Sender<bool>,
    sweeper: JoinHandle<()>,
    /// Flipped to `true` to close the HTTP listeners (last thing before the rest).
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// The certificate of HTTPS and TURN over TLS, when SSL_CERT_PATH is set.
    tls: Option<Arc<Certificates>>,
}

impl Server {
    /// Connects the database (applying migrations), binds the listeners and starts
    /// serving. `clock` is the time the call rules see.
    pub async fn start(config: &Config, clock: Arc<dyn Clock>) -> Result<Server, StartError> {
        let tls = config.tls_files().map(Certificates::load).transpose()?;
        let store = Store::connect(&config.database_url).await?;
        if config.redis_url.is_some() && store.backend() == "sqlite" {
            return Err(StartError::ClusterOnSqlite);
        }
        let jwt = Arc::new(match &config.jwt_secret {
            Some(secret) => JwtKey::new(secret.as_bytes()),
            None => {
                tracing::warn!(
                    "JWT_SECRET is not set: signing tokens with a random secret made for this \
                     process. Tokens will stop working when it restarts; set JWT_SECRET."
                );
                JwtKey::new(random_secret().as_bytes())
            }
        });
        let redis = config
            .redis_url
            .as_deref()
            .map(cluster::redis_client)
            .transpose()?;
        let (socket_layer, signaling) = match &redis {
            Some(client) => Signaling::clustered(client.clone())
                .await
                .map_err(StartError::Signaling)?,
            None => Signaling::new(),
        };
        let live = Arc::new(match &redis {
            // Another node's change is heard of through Redis, which can lose news.
            Some(_) => LiveCalls::trusted_for(cluster::TRUST_CACHED_CALLS),
            None => LiveCalls::default(),
        });
        // Every plane that records reports on this one channel.
        let (recording_reports, reports) = mpsc::unbounded_channel();
        let livekit = config
            .livekit()
            .map(|c| Arc::new(LiveKit::new(c, recording_reports.clone())));
        let (sfu, measured) = SfuPlane::start(config, signaling.clone(), recording_reports)
            .await
            .map_err(StartError::Media)?;
        let node = config.node_id();
        let cluster = match &redis {
            Some(client) => Some(
                Cluster::connect(
                    client,
                    node.clone(),
                    signaling.clone(),
                    live.clone(),
                    sfu.clone(),
                )
                .await?,
            ),
            None => None,
        };
        // In a cluster a call's room may be on another node.
        let sfu_plane: Arc<dyn MediaPlane> = match &cluster {
            Some(cluster) => Arc::new(PlacedSfu {
                cluster: cluster.clone(),
            }),
            None => sfu.clone(),
        };
        let planes = Arc::new(Planes::new(
            sfu_plane,
            livekit.clone().map(|l| l as Arc<dyn MediaPlane>),
        ));
        let (call_ended, ended) = mpsc::unbounded_channel();
        let (queue_call_ended, queue_ended) = mpsc::unbounded_channel();
        let (presence, presence_changes) = mpsc::unbounded_channel();
        let notifier = Arc::new(Notifier {
            signaling: signaling.clone(),
            live: live.clone(),
            planes: planes.clone(),
            cluster: cluster.clone(),
            call_ended: vec![call_ended, queue_call_ended],
            presence,
        });
        let metrics = Arc::new(Metrics::default());
        let phone = Arc::new(PhoneCalls::new(
            store.clone(),
            clock.clone(),
            config.phone(),
        ));
        let accounts = Accounts::new(store.clone(), clock.clone(), jwt.clone(), config.accounts())
            .map(Arc::new)
            .map_err(|e| StartError::Accounts(e.message))?;
        let service = Arc::new(CallService::new(
            store.clone(),
            clock.clone(),
            config.limits(),
            metrics.clone(),
            notifier.clone(),
            MediaSetup {
                default_mode: config.default_media_mode,
                room_host: livekit.clone().map(|l| l as Arc<dyn RoomHost>),
            },
        ));
        let queue = Arc::new(QueueService::new(
            service.clone(),
            signaling.clone(),
            config.queues(),
        ));
        // A representative who becomes available may take the next customer at once.
        let users = Arc::new(UserService::new(store, clock, queue.clone()));
        match &cluster {
            // Other nodes may hold the sockets of people in live calls: only what
            // an earlier process with this node id held is cleared.
            Some(cluster) => cluster.run(service.clone()).await?,
            None => {
                // Nobody is connected to a process that just started: everyone still
                // in a call gets CONNECTION_TIMEOUT from now to come back (crash or not).
                let recovered = service.restarted().await?;
                // Customers waiting in a queue likewise, from their sockets.
                queue
                    .restarted()
                    .await
                    .map_err(|e| StartError::Queues(format!("{}: {}", e.code, e.message)))?;
                if recovered > 0 {
                    tracing::info!(
                        calls = recovered,
                        "live calls found at start-up: their members have CONNECTION_TIMEOUT to reconnect"
                    );
                }
            }
        }
        tokio::spawn(store_measured(service.clone(), measured));
        let recordings = Arc::new(RecordingService::new(
            service.clone(),
            planes.clone(),
            notifier.clone(),
            config.recordings(node),
        ));
        let unfinished = recordings
            .restarted()
            .await
            .map_err(|e| StartError::Recordings(format!("{}: {}", e.code, e.message)))?;
        if unfinished > 0 {
            tracing::info!(
                recordings = unfinished,
                "unfinished recordings found at start-up: writing their files"
            );
        }
        tokio::spawn(recordings.clone().run(reports, ended));
        tokio::spawn(queue.clone().run(queue_ended, presence_changes));
        let (turn, ice) = start_turn(config, &sfu, tls.as_ref()).await?;
        if let (Some(cluster), Some(turn)) = (&cluster, &turn) {
            tokio::spawn(cluster::open_relays_to_nodes(cluster.clone(), turn.clone()));
        }
        let state = AppState {
            service,
            jwt,
            access: Arc::new(MediaAccess { ice, planes }),
            turn,
            sfu,
            livekit,
            cluster: cluster.clone(),
            demo_tokens: config.demo_tokens.unwrap_or(config.jwt_secret.is_none()),
            metrics,
            rate_limits: Arc::new(config.rate_limits()),
            signaling: signaling.clone(),
            drain: Arc::new(Drain::default()),
            phone,
            recordings: recordings.clone(),
            queue,
            users: users.clone(),
            accounts,
        };
        signaling.start(Arc::new(Realtime {
            service: state.service.clone(),
            recordings,
            jwt: state.jwt.clone(),
            access: state.access.clone(),
            live,
            limits: state.rate_limits.clone(),
            cluster: cluster.clone(),
            users,
        }));

        let listener = bind(SocketAddr::new(config.host, config.port)).await?;
        let addr = local_addr(&listener)?;
        let metrics_listener = match config.metrics_port {
            Some(port) => Some(bind(SocketAddr::new(config.host, port)).await?),
            None => None,
        };
        let metrics_addr = metrics_listener.as_ref().map(local_addr).transpose()?;

        let (stop, _) = watch::channel(false);
        let route = if metrics_listener.is_some() {
            MetricsRoute::Separate
        } else {
            MetricsRoute::Main
        };
        let drain = state.drain.clone();
        // Socket.IO's own transport (long polls included) stays outside the drain
        // layer: signaling drains its sockets itself.
        let app = api::app(state.clone(), route)
            .layer(middleware::from_fn_with_state(
                drain.clone(),
                http::drain_layer,
            ))
            .layer(socket_layer);
        // Outermost, so that Socket.IO's own requests pass it too.
        let guard = middleware::from_fn_with_state(
            Browsers::new(config.cors_origins.clone()),
            browsers::guard,
        );
        let app = app.layer(guard.clone());
        let serve = |listener, app, tls| {
            tokio::spawn(http::serve(
                listener,
                app,
                config.http_limits(),
                tls,
                drain.clone(),
                stop.subscribe(),
                LINGER,
            ))
        };
        let mut tasks = vec![serve(listener, app, tls.as_ref().map(Certificates::https))];
        // Prometheus scrapes a port of its own over the internal network: plain HTTP.
        if let Some(listener) = metrics_listener {
            tasks.push(serve(
                listener,
                api::metrics_app(state.clone()).layer(guard),
                None,
            ));
        }
        if let (Some(tls), Some(every)) = (&tls, config.ssl_reload_interval()) {
            tasks.push(tokio::spawn(tls.clone().watch(every, stop.subscribe())));
        }
        tasks.push(tokio::spawn(
            state
                .recordings
                .clone()
                .expire_every(RETENTION_SWEEP_EVERY, stop.subscribe()),
        ));
        let (stop_sweeper, sweeper_stopped) = watch::channel(false);
        let sweeper = tokio::spawn(sweep_until_stopped(
            state.service.clone(),
            state.queue.clone(),
            cluster.clone(),
            sweeper_stopped,
        ));
        tracing::info!(
            %addr,
            ?metrics_addr,
            sfu = %state.sfu.sfu.local_addr(),
            sfu_announced = %state.sfu.sfu.announced(),
            turn = ?state.turn.as_ref().map(|t| t.local_addr()),
            turn_tls = ?state.turn.as_ref().and_then(|t| t.tls_local_addr()),
            tls = tls.is_some(),
            database = state.service.store().backend(),
            "huddle is listening"
        );
        Ok(Server {
            addr,
            metrics_addr,
            signaling,
            state,
            drain,
            drain_timeout: config.drain_timeout(),
            stop_sweeper,
            sweeper,
            stop,
            tasks,
            tls,
        })
    }

    /// The certificate in use, to reload (on SIGHUP), when SSL_CERT_PATH is set.
    pub fn tls(&self) -> Option<Arc<Certificates>> {
        self.tls.clone()
    }

    /// Stops in order, within DRAIN_TIMEOUT: new HTTP requests (503), sockets and
    /// events are refused and the sweeper stops; requests and events in flight
    /// finish and the notices they produce are delivered; then every socket is
    /// closed (its user is not counted as gone: after a restart everyone has
    /// CONNECTION_TIMEOUT to come back), the listeners close, and the media, TURN
    /// and the database stop.
    pub async fn stop(self) {
        let began = tokio::time::Instant::now();
        let until = began + self.drain_timeout;
        self.drain.begin();
        self.signaling.refuse_new();
        if let Some(cluster) = &self.state.cluster {
            cluster.drain(&self.state.service).await;
        }
        let _ = self.stop_sweeper.send(true);
        let _ = self.sweeper.await;
        // Clients on keep-alive connections learn from their next response
        // (`Connection: close`) not to reuse them; closing a connection under a
        // request the client is already sending would lose it.
        let window = (began + DRAIN_WINDOW).min(until);
        let now = tokio::time::Instant::now;
        while (self.drain.in_flight() > 0 || now() < window) && now() < until {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if self.drain.in_flight() > 0 {
            tracing::warn!(
                requests = self.drain.in_flight(),
                "requests still in flight at the drain deadline"
            );
        }
        let left = until.saturating_duration_since(tokio::time::Instant::now());
        self.signaling.drain(left).await;
        if let Some(cluster) = &self.state.cluster {
            cluster.leave(&self.state.service).await;
        }
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        self.state.sfu.sfu.shutdown();
        if let Some(turn) = &self.state.turn {
            turn.shutdown().await;
        }
        self.state.service.store().close().await;
    }
}

/// Starts the embedded TURN server (unless TURN_EMBEDDED is false), over TLS too
/// with a certificate, and works out the ICE servers clients are given. Its relays
/// may always reach the built-in SFU.
async fn start_turn(
    config: &Config,
    media: &SfuPlane,
    tls: Option<&Arc<Certificates>>,
) -> Result<(Option<Arc<TurnServer>>, IceServers), StartError> {
    let secret = match &config.turn_secret {
        Some(secret) => Some(Secret::new(secret)),
        None if config.turn_embedded => Some(Secret::new(&random_secret())),
        None => None,
    };
    let (Some(secret), true) = (secret.clone(), config.turn_embedded) else {
        return Ok((None, config.ice_servers(secret, None, None)));
    };
    let sfu = media.sfu.announced();
    let mut services = vec![sfu];
    if !media.sfu.local_addr().ip().is_unspecified() {
        services.push(media.sfu.local_addr());
    }
    let turn_config = config.turn_config(secret.clone(), services, tls.map(Certificates::turn));
    let turn = TurnServer::start(turn_config)
        .await
        .map_err(StartError::Turn)?;
    let public = SocketAddr::new(config.turn_public_ip(), turn.local_addr().port());
    let tls_port = turn.tls_local_addr().map(|addr| addr.port());
    Ok((
        Some(Arc::new(turn)),
        config.ice_servers(Some(secret), Some(public), tls_port),
    ))
}

/// 32 random bytes, base64: for secrets the operator did not set.
fn random_secret() -> String {
    base64::engine::general_purpose::STANDARD.encode(
        [
            uuid::Uuid::new_v4().into_bytes(),
            uuid::Uuid::new_v4().into_bytes(),
        ]
        .concat(),
    )
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Listen { addr, source })
}

fn local_addr(listener: &TcpListener) -> Result<SocketAddr, StartError> {
    listener.local_addr().map_err(|source| StartError::Listen {
        addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        source,
    })
}

/// Stores the quality the SFU measures, until the SFU stops.
async fn store_measured(
    service: Arc<CallService>,
    mut measured: tokio::sync::mpsc::UnboundedReceiver<Measured>,
) {
    while let Some(Measured { call, user, report }) = measured.recv().await {
        let stored = service
            .report_quality(&user, call, report, MetricSource::Sfu)
            .await;
        if let Err(e) = stored {
            tracing::debug!(%call, %user, error = %e, "SFU quality not stored");
        }
    }
}

/// Applies the timeout rules, and the queues' (abandonment, dispatch, recovery),
/// every [`SWEEP_EVERY`] until told to stop. A failed
/// sweep is logged and retried on the next tick: nothing is lost, since due calls
/// stay due until a sweep succeeds.
async fn sweep_until_stopped(
    service: Arc<CallService>,
    queue: Arc<QueueService>,
    cluster: Option<Arc<Cluster>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticks = tokio::time::interval(SWEEP_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = ticks.tick() => {}
        }
        // In a cluster one node at a time sweeps (another's sweep would find nothing
        // left to do: every change is a versioned write).
        if cluster.as_ref().is_some_and(|c| !c.sweeps()) {
            continue;
        }
        match service.sweep().await {
            Ok(0) => {}
            Ok(changed) => tracing::debug!(changed, "timeouts applied"),
            Err(e) => tracing::error!(error = %e, "timeout sweep failed"),
        }
        if let Err(e) = queue.tick().await {
            tracing::error!(code = %e.code, error = %e.message, "queue sweep failed");
        }
    }
}
