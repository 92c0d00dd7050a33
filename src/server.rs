//! Wiring: connects the store, builds the call service, the HTTP API and the
//! Socket.IO server on the same port, binds the listeners, runs the timeout sweeper,
//! and shuts all of it down in order.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use base64::Engine;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use huddle_turn::{Secret, TurnServer};
use signaling::{Signaling, SignalingConfig};

use crate::api::views::MediaAccess;
use crate::api::{self, AppState, MetricsRoute};
use crate::auth::JwtKey;
use crate::calls::service::{CallService, MediaSetup, RoomHost};
use crate::clock::Clock;
use crate::config::Config;
use crate::ice::IceServers;
use crate::livekit::LiveKit;
use crate::media::MediaPlane;
use crate::metrics::Metrics;
use crate::realtime::{LiveMembers, Notifier, Realtime};
use crate::store::{Store, StoreError};

/// How often due calls (ringing timeouts, maximum duration) are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// The server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    #[error("DATABASE_URL: {0}")]
    Database(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("SFU_PORT: cannot bind the media port: {0}")]
    Media(std::io::Error),
    #[error("TURN_PORT: cannot start the embedded TURN server: {0}")]
    Turn(std::io::Error),
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
    /// Flipped to `true` to ask every task to stop.
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Server {
    /// Connects the database (applying migrations), binds the listeners and starts
    /// serving. `clock` is the time the call rules see.
    pub async fn start(config: &Config, clock: Arc<dyn Clock>) -> Result<Server, StartError> {
        let store = Store::connect(&config.database_url).await?;
        let jwt = match &config.jwt_secret {
            Some(secret) => JwtKey::new(secret.as_bytes()),
            None => {
                tracing::warn!(
                    "JWT_SECRET is not set: signing tokens with a random secret made for this \
                     process. Tokens will stop working when it restarts; set JWT_SECRET."
                );
                JwtKey::new(random_secret().as_bytes())
            }
        };
        let (socket_layer, signaling) = Signaling::new(SignalingConfig {
            grace: Duration::from_secs(config.connection_timeout.into()),
        });
        let members = Arc::new(LiveMembers::default());
        let livekit = config.livekit().map(|c| Arc::new(LiveKit::new(c)));
        let notifier = Arc::new(Notifier {
            signaling: signaling.clone(),
            members: members.clone(),
            media: OnceLock::new(),
            livekit: livekit.clone(),
        });
        let metrics = Arc::new(Metrics::default());
        let service = Arc::new(CallService::new(
            store,
            clock,
            config.limits(),
            metrics.clone(),
            notifier.clone(),
            MediaSetup {
                default_mode: config.default_media_mode,
                room_host: livekit.clone().map(|l| l as Arc<dyn RoomHost>),
            },
        ));
        let media = MediaPlane::start(config, service.clone(), signaling.clone())
            .await
            .map_err(StartError::Media)?;
        let _ = notifier.media.set(media.clone());
        let (turn, ice) = start_turn(config, &media).await?;
        let state = AppState {
            service,
            jwt: Arc::new(jwt),
            access: Arc::new(MediaAccess { ice, livekit }),
            turn,
            media: media.clone(),
            demo_tokens: config.demo_tokens.unwrap_or(config.jwt_secret.is_none()),
            metrics,
            rate_limits: Arc::new(config.rate_limits()),
        };
        signaling.start(Arc::new(Realtime {
            service: state.service.clone(),
            jwt: state.jwt.clone(),
            access: state.access.clone(),
            members,
            media,
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
        let mut tasks = vec![serve(
            listener,
            api::app(state.clone(), route).layer(socket_layer),
            stop.subscribe(),
        )];
        if let Some(listener) = metrics_listener {
            tasks.push(serve(
                listener,
                api::metrics_app(state.clone()),
                stop.subscribe(),
            ));
        }
        tasks.push(tokio::spawn(sweep_until_stopped(
            state.service.clone(),
            stop.subscribe(),
        )));
        tracing::info!(
            %addr,
            ?metrics_addr,
            sfu = %state.media.sfu.local_addr(),
            sfu_announced = %state.media.sfu.announced(),
            turn = ?state.turn.as_ref().map(|t| t.local_addr()),
            database = state.service.store().backend(),
            "huddle is listening"
        );
        Ok(Server {
            addr,
            metrics_addr,
            signaling,
            state,
            stop,
            tasks,
        })
    }

    /// Closes every socket, stops accepting connections, lets requests in flight
    /// finish, stops the sweeper, then closes the database.
    pub async fn stop(self) {
        self.signaling.close().await;
        self.state.media.sfu.shutdown();
        if let Some(turn) = &self.state.turn {
            turn.shutdown().await;
        }
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        self.state.service.store().close().await;
    }
}

/// Starts the embedded TURN server (unless TURN_EMBEDDED is false) and works out
/// the ICE servers clients are given. Its relays may always reach the built-in SFU.
async fn start_turn(
    config: &Config,
    media: &MediaPlane,
) -> Result<(Option<Arc<TurnServer>>, IceServers), StartError> {
    let secret = match &config.turn_secret {
        Some(secret) => Some(Secret::new(secret)),
        None if config.turn_embedded => Some(Secret::new(&random_secret())),
        None => None,
    };
    let (Some(secret), true) = (secret.clone(), config.turn_embedded) else {
        return Ok((None, config.ice_servers(secret, None)));
    };
    let sfu = media.sfu.announced();
    let mut services = vec![sfu];
    if !media.sfu.local_addr().ip().is_unspecified() {
        services.push(media.sfu.local_addr());
    }
    let turn = TurnServer::start(config.turn_config(secret.clone(), services))
        .await
        .map_err(StartError::Turn)?;
    let public = SocketAddr::new(config.turn_public_ip(), turn.local_addr().port());
    Ok((
        Some(Arc::new(turn)),
        config.ice_servers(Some(secret), Some(public)),
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

fn serve(
    listener: TcpListener,
    app: axum::Router,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let shutdown = async move {
            let _ = stop.wait_for(|stopping| *stopping).await;
        };
        // With the peer's address in each request: the per-IP rate limit's key.
        let app = app.into_make_service_with_connect_info::<SocketAddr>();
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(error = %e, "HTTP server failed");
        }
    })
}

/// Applies the timeout rules every [`SWEEP_EVERY`] until told to stop. A failed
/// sweep is logged and retried on the next tick: nothing is lost, since due calls
/// stay due until a sweep succeeds.
async fn sweep_until_stopped(service: Arc<CallService>, mut stop: watch::Receiver<bool>) {
    let mut ticks = tokio::time::interval(SWEEP_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = ticks.tick() => match service.sweep().await {
                Ok(0) => {}
                Ok(changed) => tracing::debug!(changed, "timeouts applied"),
                Err(e) => tracing::error!(error = %e, "timeout sweep failed"),
            },
        }
    }
}
