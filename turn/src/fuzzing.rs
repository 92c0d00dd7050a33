//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`): the first code
//! every byte from a TURN client meets, the [`Gate`] and the TCP framing, without
//! sockets or a running server.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::credentials::Secret;
use crate::gate::{Gate, Quota, RestAuth, Verdict};
use crate::policy::PeerPolicy;
use crate::server::Counters;
use crate::tcp::read_frame;

/// A gate as the server builds it, with no allocations behind it.
#[derive(Debug)]
pub struct GateProbe(Gate);

impl GateProbe {
    pub fn new(realm: &str, secret: Secret, policy: PeerPolicy, quota: Quota) -> Self {
        let auth = Arc::new(RestAuth {
            secret,
            realm: realm.to_owned(),
        });
        GateProbe(Gate::new(
            auth,
            Arc::new(policy),
            Arc::new(Counters::default()),
            quota,
            vec![],
        ))
    }

    /// A nonce the gate accepts from `client`, so that a harness can sign requests and
    /// reach what the gate checks after authentication.
    pub fn nonce_for(&self, client: SocketAddr) -> String {
        self.0.nonce_for(client)
    }

    /// What the gate answers `packet` from `from` with; `None` when it passes the
    /// message on to the `turn` crate or drops it.
    pub async fn inspect(&self, packet: &[u8], from: SocketAddr) -> Option<Vec<u8>> {
        match self.0.inspect(packet, from).await {
            Verdict::Reply(bytes) => Some(bytes),
            Verdict::Pass | Verdict::Drop => None,
        }
    }
}

/// The frames a TURN-over-TCP client sending `stream` gets read as, up to the end or
/// the first framing error.
pub async fn read_frames(mut stream: &[u8]) -> Vec<Vec<u8>> {
    let (mut frames, mut buf) = (Vec::new(), Vec::new());
    while let Ok(Some(())) = read_frame(&mut stream, &mut buf).await {
        frames.push(buf.clone());
    }
    frames
}
