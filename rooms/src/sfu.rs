//! [`Sfu`]: the media server as the rest of Huddle sees it. It owns the UDP port and
//! a registry of running rooms, and turns calls into room commands.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use crate::actor::{self, Command, RoomHandle, Wiring};
use crate::port::{self, PortCounters};
use crate::{
    MediaSwitch, PeerId, QualityStats, Room, RoomConfig, RoomError, RoomId, Source, TrackInfo,
};

/// Bytes of kernel buffer asked for the media socket, each way (the kernel caps it at
/// `net.core.rmem_max` / `wmem_max`).
const SOCKET_BUFFER: usize = 4 << 20;

/// Where the SFU listens and what it tells clients.
#[derive(Debug, Clone)]
pub struct SfuConfig {
    /// The UDP address to bind (port 7882 by default).
    pub listen: SocketAddr,
    /// The IP clients are told to send media to: the public IP behind NAT or in a
    /// container, else an address of this host.
    pub announce_ip: IpAddr,
    /// The port clients are told, when a NAT or proxy maps another port to ours;
    /// `None` announces the bound port.
    pub announce_port: Option<u16>,
    /// Participants per room at most.
    pub max_peers: usize,
}

/// What rooms tell the server.
#[derive(Debug, Clone, PartialEq)]
pub enum SfuEvent {
    /// Send `sdp` to `peer` as the SFU's offer for their subscribe connection.
    Offer {
        room: RoomId,
        peer: PeerId,
        sdp: String,
        tracks: Vec<TrackInfo>,
    },
    /// Quality measured for `peer`.
    Quality {
        room: RoomId,
        peer: PeerId,
        stats: QualityStats,
    },
}

/// A running SFU. Cheap to clone; the port and rooms stop when the last clone is
/// dropped or [`Sfu::shutdown`] is called.
#[derive(Debug, Clone)]
pub struct Sfu {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    // A std mutex: held to find, add or remove a room handle, never across an await
    // and never per packet.
    rooms: Mutex<HashMap<RoomId, RoomHandle>>,
    wiring: Wiring,
    room_config: RoomConfig,
    local_addr: SocketAddr,
    counters: Arc<PortCounters>,
}

impl Sfu {
    /// Binds the media port and starts its task. Room events arrive on the receiver.
    pub async fn bind(config: SfuConfig) -> io::Result<(Self, mpsc::UnboundedReceiver<SfuEvent>)> {
        let socket = UdpSocket::bind(config.listen).await?;
        // The kernel's default (~200 KB, ~90 video packets) overflows in a 30 ms stall.
        let options = socket2::SockRef::from(&socket);
        for result in [
            options.set_recv_buffer_size(SOCKET_BUFFER),
            options.set_send_buffer_size(SOCKET_BUFFER),
        ] {
            if let Err(e) = result {
                tracing::warn!(error = %e, "could not enlarge the media socket's buffers");
            }
        }
        let socket = Arc::new(socket);
        let local_addr = socket.local_addr()?;
        let (port, control) = mpsc::unbounded_channel();
        let (events, events_rx) = mpsc::unbounded_channel();
        let counters = Arc::new(PortCounters::default());
        tokio::spawn(port::run(socket.clone(), control, counters.clone()));
        let mut room_config = RoomConfig::new(SocketAddr::new(
            config.announce_ip,
            config.announce_port.unwrap_or(local_addr.port()),
        ));
        room_config.max_peers = config.max_peers;
        let inner = Inner {
            rooms: Mutex::new(HashMap::new()),
            wiring: Wiring {
                socket,
                port,
                events,
            },
            room_config,
            local_addr,
            counters,
        };
        Ok((
            Self {
                inner: Arc::new(inner),
            },
            events_rx,
        ))
    }

    /// The bound UDP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// The address connections announce.
    pub fn announced(&self) -> SocketAddr {
        self.inner.room_config.announce
    }

    /// Rooms running now.
    pub fn room_count(&self) -> usize {
        self.rooms().len()
    }

    /// Datagrams dropped at the port: unroutable, and for a room that was too busy.
    pub fn dropped(&self) -> (u64, u64) {
        let c = &self.inner.counters;
        (
            c.unroutable.load(Ordering::Relaxed),
            c.overflow.load(Ordering::Relaxed),
        )
    }

    /// `peer` publishes in `room` (started if it is not running); returns the answer.
    pub async fn publish(
        &self,
        room: &RoomId,
        peer: &PeerId,
        offer: String,
        sources: HashMap<String, Source>,
    ) -> Result<String, RoomError> {
        let handle = self.room(room, true).ok_or(RoomError::Closed)?;
        let (reply, answer) = oneshot::channel();
        let command = Command::Publish {
            peer: peer.clone(),
            offer,
            sources,
            reply,
        };
        Self::ask(&handle, command, answer).await?
    }

    /// `peer`'s answer to the SFU's last offer in `room`.
    pub async fn answer(
        &self,
        room: &RoomId,
        peer: &PeerId,
        answer: String,
    ) -> Result<(), RoomError> {
        let handle = self.room(room, false).ok_or(RoomError::NotInRoom)?;
        let (reply, done) = oneshot::channel();
        let command = Command::Answer {
            peer: peer.clone(),
            answer,
            reply,
        };
        Self::ask(&handle, command, done).await?
    }

    /// Stops (or resumes) forwarding `peer`'s `media` in `room`.
    pub fn set_muted(&self, room: &RoomId, peer: &PeerId, media: MediaSwitch, muted: bool) {
        self.tell(
            room,
            Command::Mute {
                peer: peer.clone(),
                media,
                muted,
            },
        );
    }

    /// Takes `peer` out of `room`.
    pub fn leave(&self, room: &RoomId, peer: &PeerId) {
        self.tell(room, Command::Leave { peer: peer.clone() });
    }

    /// Ends `room`: every connection in it closes.
    pub fn close(&self, room: &RoomId) {
        self.rooms().remove(room);
    }

    /// Ends every room.
    pub fn shutdown(&self) {
        self.rooms().clear();
    }

    fn rooms(&self) -> std::sync::MutexGuard<'_, HashMap<RoomId, RoomHandle>> {
        self.inner.rooms.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn room(&self, id: &RoomId, start: bool) -> Option<RoomHandle> {
        let mut rooms = self.rooms();
        if let Some(handle) = rooms.get(id).filter(|h| !h.commands.is_closed()) {
            return Some(handle.clone());
        }
        if !start {
            return None;
        }
        let room = Room::new(self.inner.room_config.clone());
        let handle = actor::spawn(id.clone(), room, self.inner.wiring.clone());
        rooms.insert(id.clone(), handle.clone());
        Some(handle)
    }

    async fn ask<T>(
        handle: &RoomHandle,
        command: Command,
        reply: oneshot::Receiver<T>,
    ) -> Result<T, RoomError> {
        handle
            .commands
            .send(command)
            .await
            .map_err(|_| RoomError::Closed)?;
        reply.await.map_err(|_| RoomError::Closed)
    }

    /// Queues a command that needs no reply; a full queue waits in a task of its own.
    fn tell(&self, room: &RoomId, command: Command) {
        let Some(handle) = self.room(room, false) else {
            return;
        };
        if let Err(mpsc::error::TrySendError::Full(command)) = handle.commands.try_send(command) {
            tokio::spawn(async move {
                let _ = handle.commands.send(command).await;
            });
        }
    }
}
