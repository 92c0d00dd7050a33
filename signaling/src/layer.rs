//! The tower layer that serves Socket.IO at `/socket.io/`, the same type whichever
//! mode signaling runs in.
//!
//! socketioxide's layer and service are generic over the adapter (in memory, or Redis
//! in cluster mode); the server should not have to be. [`SignalingLayer`] holds one or
//! the other, and [`SignalingService`] forwards each request to the service it made.
//! Both services answer with the same types (engineioxide's response and future do not
//! depend on the adapter), so the forwarding costs a match and nothing else.
//!
//! Besides, the forwarding gives a Socket.IO request headers and a URI of its own
//! (see [`detached`]): engineioxide keeps each connection's request for as long as the
//! connection lives.

use std::task::{Context, Poll};

use http::{HeaderValue, Request, Uri};
use http_body::Body;
use socketioxide::adapter::LocalAdapter;
use socketioxide::layer::SocketIoLayer;
use socketioxide::service::SocketIoService;
use tower_layer::Layer;
use tower_service::Service;

use crate::cluster::ClusterAdapter;

/// Serves Socket.IO at `/socket.io/` in front of the routes it wraps:
/// `router.layer(layer)`. Made by [`Signaling::new`](crate::Signaling::new) or
/// [`Signaling::clustered`](crate::Signaling::clustered).
#[derive(Clone)]
pub struct SignalingLayer(Mode<SocketIoLayer<LocalAdapter>, SocketIoLayer<ClusterAdapter>>);

/// The service of a [`SignalingLayer`]: Socket.IO requests go to signaling, the
/// rest to the wrapped service.
pub struct SignalingService<S: Clone>(
    Mode<SocketIoService<S, LocalAdapter>, SocketIoService<S, ClusterAdapter>>,
);

/// Single process, or one node of a cluster.
#[derive(Clone)]
enum Mode<L, C> {
    Local(L),
    Cluster(C),
}

impl SignalingLayer {
    pub(crate) fn local(layer: SocketIoLayer<LocalAdapter>) -> Self {
        Self(Mode::Local(layer))
    }

    pub(crate) fn cluster(layer: SocketIoLayer<ClusterAdapter>) -> Self {
        Self(Mode::Cluster(layer))
    }
}

impl std::fmt::Debug for SignalingLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mode = match self.0 {
            Mode::Local(_) => "local",
            Mode::Cluster(_) => "cluster",
        };
        f.debug_tuple("SignalingLayer").field(&mode).finish()
    }
}

impl<S: Clone> std::fmt::Debug for SignalingService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignalingService").finish_non_exhaustive()
    }
}

impl<S: Clone> Clone for SignalingService<S> {
    fn clone(&self) -> Self {
        Self(match &self.0 {
            Mode::Local(service) => Mode::Local(service.clone()),
            Mode::Cluster(service) => Mode::Cluster(service.clone()),
        })
    }
}

impl<S: Clone> Layer<S> for SignalingLayer {
    type Service = SignalingService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SignalingService(match &self.0 {
            Mode::Local(layer) => Mode::Local(layer.layer(inner)),
            Mode::Cluster(layer) => Mode::Cluster(layer.layer(inner)),
        })
    }
}

/// The same bounds as socketioxide's own service.
impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for SignalingService<S>
where
    ReqBody: Body + Send + Unpin + std::fmt::Debug + 'static,
    <ReqBody as Body>::Error: std::fmt::Debug,
    <ReqBody as Body>::Data: Send,
    ResBody: Body + Send + 'static,
    S: Service<Request<ReqBody>, Response = http::Response<ResBody>> + Clone,
{
    type Response = <SocketIoService<S, LocalAdapter> as Service<Request<ReqBody>>>::Response;
    type Error = <SocketIoService<S, LocalAdapter> as Service<Request<ReqBody>>>::Error;
    type Future = <SocketIoService<S, LocalAdapter> as Service<Request<ReqBody>>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        match &mut self.0 {
            Mode::Local(service) => Service::<Request<ReqBody>>::poll_ready(service, cx),
            Mode::Cluster(service) => Service::<Request<ReqBody>>::poll_ready(service, cx),
        }
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let request = detached(request);
        match &mut self.0 {
            Mode::Local(service) => Service::<Request<ReqBody>>::call(service, request),
            Mode::Cluster(service) => Service::<Request<ReqBody>>::call(service, request),
        }
    }
}

/// Where socketioxide serves (its default path).
const SOCKET_IO_PATH: &str = "/socket.io";

/// A Socket.IO request whose headers and URI own their bytes. hyper parses them as
/// slices of the connection's read buffer (8 KiB and up), and engineioxide keeps the
/// request of each connection (`Socket::req_parts`) for the connection's life: as
/// parsed, every held connection would keep that whole buffer alive for a few hundred
/// bytes of headers. Other requests are passed on as they are.
fn detached<B>(request: Request<B>) -> Request<B> {
    let path = request.uri().path();
    let socket_io = path
        .strip_prefix(SOCKET_IO_PATH)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
    if !socket_io {
        return request;
    }
    let (mut parts, body) = request.into_parts();
    for value in parts.headers.values_mut() {
        let mut owned = HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| value.clone());
        owned.set_sensitive(value.is_sensitive());
        *value = owned;
    }
    if let Ok(uri) = Uri::try_from(parts.uri.to_string()) {
        parts.uri = uri;
    }
    Request::from_parts(parts, body)
}
