//! The HTTP listener. axum's own `serve` has no header or idle timeout and no
//! per-client limit, so Huddle accepts connections itself:
//! - at most [`HttpLimits::max_per_ip`] connections from one client address (one
//!   more is closed at once, and counted);
//! - a connection that has not sent a complete request head within
//!   [`HttpLimits::idle_timeout`] is closed: a fresh one, one idle between requests,
//!   or one dribbling headers;
//! - handlers find the client's address as axum's `ConnectInfo<SocketAddr>`;
//! - [`Drain`] stops it in order: new requests are answered 503 `SHUTTING_DOWN`
//!   (with `Connection: close`) while those already in flight finish, then every
//!   connection is closed once its response is out;
//! - with TLS settings, every connection is HTTPS: the handshake, under the idle
//!   timeout, comes first.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use huddle_turn::{PerIp, PerIpSlot};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tower_service::Service;

use crate::wire::Failure;

/// Connection limits of the HTTP port.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// Connections one client address may hold open (HTTP_MAX_CONNECTIONS_PER_IP).
    pub max_per_ip: usize,
    /// How long a connection may go without a complete request head (HTTP_IDLE_TIMEOUT).
    pub idle_timeout: Duration,
}

/// Shutdown state shared by the listener and the draining middleware.
#[derive(Debug, Default)]
pub struct Drain {
    /// Set when shutdown begins.
    draining: AtomicBool,
    /// Requests being handled now (Socket.IO's own transport excluded).
    in_flight: AtomicUsize,
    /// Connections refused for going over the per-address limit.
    pub refused_connections: AtomicU64,
}

impl Drain {
    /// From now on, new requests are refused.
    pub fn begin(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Requests still being handled.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }
}

/// Counts a request as in flight for as long as it is handled.
struct InFlight(Arc<Drain>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Middleware: counts requests in flight, and refuses new ones once draining.
pub async fn drain_layer(
    State(drain): State<Arc<Drain>>,
    request: Request,
    next: Next,
) -> Response {
    drain.in_flight.fetch_add(1, Ordering::SeqCst);
    let _counted = InFlight(drain.clone());
    if drain.is_draining() {
        let mut response = Failure::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "SHUTTING_DOWN",
            "the server is shutting down: try again",
        )
        .into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return response;
    }
    let mut response = next.run(request).await;
    if drain.is_draining() {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// A connection's stream, holding its place in the per-address count for as long
/// as the stream lives: through an upgrade to WebSocket too.
struct Counted {
    stream: TcpStream,
    _slot: PerIpSlot,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Serves `app` on `listener` until `stop` turns true; then closes every connection
/// gracefully (after its response in flight), waiting at most `linger` for them.
/// With `tls`, every connection is HTTPS (WebSockets then being WSS).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    tls: Option<Arc<ServerConfig>>,
    drain: Arc<Drain>,
    mut stop: watch::Receiver<bool>,
    linger: Duration,
) {
    let per_ip = PerIp::new(limits.max_per_ip);
    let tls = tls.map(TlsAcceptor::from);
    let mut connections = JoinSet::new();
    loop {
        let (stream, remote) = tokio::select! {
            () = async { let _ = stop.wait_for(|stopping| *stopping).await; } => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off, do not spin.
                    tracing::warn!(error = %e, "accepting an HTTP connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(slot) = per_ip.admit(remote.ip()) else {
            drain.refused_connections.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%remote, "connection refused: too many from this address");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let stream = Counted {
            stream,
            _slot: slot,
        };
        let (router, tls, mut stop) = (app.clone(), tls.clone(), stop.clone());
        connections.spawn(async move {
            let Some(tls) = tls else {
                return serve_connection(stream, router, remote, limits, stop).await;
            };
            // The handshake comes before any request head: the idle timeout covers it.
            let handshake = tokio::time::timeout(limits.idle_timeout, tls.accept(stream));
            let handshake = tokio::select! {
                _ = stop.wait_for(|stopping| *stopping) => return,
                handshake = handshake => handshake,
            };
            match handshake {
                Ok(Ok(stream)) => serve_connection(stream, router, remote, limits, stop).await,
                Ok(Err(e)) => tracing::debug!(%remote, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%remote, "TLS handshake timed out"),
            }
        });
        // Reap finished connections so the set does not grow with the server's age.
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    let closing = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(linger, closing).await.is_err() {
        tracing::warn!(
            left = connections.len(),
            "HTTP connections still open at the drain deadline: closed"
        );
        connections.abort_all();
    }
}

/// Serves HTTP/1.1 (and upgrades) on one connection from `remote` until it closes,
/// or, once `stop` turns true, until its response in flight is out.
async fn serve_connection(
    stream: impl AsyncRead + AsyncWrite + Unpin + Send + 'static,
    router: Router,
    remote: SocketAddr,
    limits: HttpLimits,
    mut stop: watch::Receiver<bool>,
) {
    let service = hyper::service::service_fn(move |mut request: Request<_>| {
        request.extensions_mut().insert(ConnectInfo(remote));
        let mut router = router.clone();
        async move {
            Ok::<_, Infallible>(
                router
                    .call(request.map(axum::body::Body::new))
                    .await
                    .into_response(),
            )
        }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.idle_timeout);
    let connection = builder
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(connection);
    let stopping = async { stop.wait_for(|stopping| *stopping).await.map(drop) };
    tokio::select! {
        _ = connection.as_mut() => return,
        _ = stopping => {}
    }
    connection.as_mut().graceful_shutdown();
    let _ = connection.await;
}
