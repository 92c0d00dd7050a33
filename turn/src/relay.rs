//! UDP sockets for the `turn` crate: the listening socket, and the relay sockets
//! allocations relay through. Each relay socket is bound inside the configured port
//! range, counts what it relays, and refuses to send anywhere the [`PeerPolicy`] does
//! not allow.

use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use async_trait::async_trait;
use tokio::net::UdpSocket;
use webrtc_turn::Error as TurnError;
use webrtc_turn::relay::RelayAddressGenerator;
use webrtc_util::Conn;

use crate::policy::PeerPolicy;
use crate::server::Counters;

/// Hands out relay sockets from a port range, next-fit.
pub(crate) struct PortRange {
    /// Where relay sockets bind.
    pub bind: IpAddr,
    /// The address put in XOR-RELAYED-ADDRESS (the public IP behind NAT).
    pub public: IpAddr,
    pub ports: RangeInclusive<u16>,
    pub policy: Arc<PeerPolicy>,
    pub counters: Arc<Counters>,
    /// Offset into `ports` where the next search starts.
    pub next: AtomicU32,
}

impl PortRange {
    fn len(&self) -> u32 {
        u32::from(*self.ports.end()) - u32::from(*self.ports.start()) + 1
    }

    fn wrap(
        &self,
        socket: UdpSocket,
    ) -> Result<(Arc<dyn Conn + Send + Sync>, SocketAddr), TurnError> {
        let local = socket.local_addr()?;
        let conn = UdpConn {
            socket: Arc::new(socket),
            local,
            relay: Some(RelayDuty {
                policy: self.policy.clone(),
                counters: self.counters.clone(),
                serving: AtomicBool::new(false),
            }),
        };
        Ok((Arc::new(conn), SocketAddr::new(self.public, local.port())))
    }
}

#[async_trait]
impl RelayAddressGenerator for PortRange {
    fn validate(&self) -> Result<(), TurnError> {
        if self.ports.is_empty() || *self.ports.start() == 0 {
            return Err(TurnError::ErrMaxPortLessThanMinPort);
        }
        Ok(())
    }

    async fn allocate_conn(
        &self,
        use_ipv4: bool,
        requested_port: u16,
    ) -> Result<(Arc<dyn Conn + Send + Sync>, SocketAddr), TurnError> {
        if use_ipv4 != self.bind.is_ipv4() && !self.bind.is_unspecified() {
            return Err(TurnError::ErrInvalidRequestedFamilyValue);
        }
        if requested_port != 0 {
            if !self.ports.contains(&requested_port) {
                return Err(TurnError::ErrMaxRetriesExceeded);
            }
            let socket = UdpSocket::bind((self.bind, requested_port)).await?;
            return self.wrap(socket);
        }
        let len = self.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for i in 0..len {
            let offset = (start.wrapping_add(i)) % len;
            let port = u16::try_from(u32::from(*self.ports.start()) + offset)
                .map_err(|_| TurnError::ErrMaxRetriesExceeded)?;
            if let Ok(socket) = UdpSocket::bind((self.bind, port)).await {
                self.next.store(offset + 1, Ordering::Relaxed);
                return self.wrap(socket);
            }
        }
        Err(TurnError::ErrMaxRetriesExceeded)
    }
}

/// A UDP socket as the `turn` crate sees it: the listening socket, or an
/// allocation's relay socket. The local address is kept, not asked of the kernel:
/// the crate wants it for every ChannelData datagram (to build the 5-tuple).
pub(crate) struct UdpConn {
    socket: Arc<UdpSocket>,
    local: SocketAddr,
    relay: Option<RelayDuty>,
}

/// What a relay socket does besides sending and receiving.
struct RelayDuty {
    policy: Arc<PeerPolicy>,
    counters: Arc<Counters>,
    /// Set when an allocation starts reading it (the crate also binds sockets only
    /// to find a free even port, and drops them).
    serving: AtomicBool,
}

impl UdpConn {
    pub fn listener(socket: Arc<UdpSocket>) -> std::io::Result<Self> {
        Ok(UdpConn {
            local: socket.local_addr()?,
            socket,
            relay: None,
        })
    }
}

#[async_trait]
impl Conn for UdpConn {
    async fn connect(&self, addr: SocketAddr) -> webrtc_util::Result<()> {
        Ok(self.socket.connect(addr).await?)
    }

    async fn recv(&self, buf: &mut [u8]) -> webrtc_util::Result<usize> {
        Ok(self.socket.recv(buf).await?)
    }

    async fn recv_from(&self, buf: &mut [u8]) -> webrtc_util::Result<(usize, SocketAddr)> {
        if let Some(relay) = &self.relay
            && !relay.serving.swap(true, Ordering::Relaxed)
        {
            relay.counters.allocation_created();
        }
        let (n, from) = self.socket.recv_from(buf).await?;
        if let Some(relay) = &self.relay {
            relay.counters.relayed(n);
        }
        Ok((n, from))
    }

    async fn send(&self, buf: &[u8]) -> webrtc_util::Result<usize> {
        Ok(self.socket.send(buf).await?)
    }

    /// A relay sends only to peers the policy allows; anything else is dropped (and
    /// counted), reported as sent so that the caller moves on.
    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> webrtc_util::Result<usize> {
        if let Some(relay) = &self.relay
            && !relay.policy.allows(target)
        {
            relay.counters.refused_peer();
            return Ok(buf.len());
        }
        let n = self.socket.send_to(buf, target).await?;
        if let Some(relay) = &self.relay {
            relay.counters.relayed(n);
        }
        Ok(n)
    }

    fn local_addr(&self) -> webrtc_util::Result<SocketAddr> {
        Ok(self.local)
    }

    fn remote_addr(&self) -> Option<SocketAddr> {
        None
    }

    async fn close(&self) -> webrtc_util::Result<()> {
        Ok(())
    }

    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}
