//! [`Sfu`]: the media server as the rest of Huddle sees it. It owns the UDP port and
//! a registry of running rooms, and turns calls into room commands.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use crate::actor::{self, Command, RoomHandle, Wiring};
use crate::port::{self, PortCounters};
use crate::record::{RecordingEvent, RecordingSpec, StopReason};
use crate::{
    ConnectionCounters, MediaSwitch, PeerId, QualityStats, Room, RoomConfig, RoomError, RoomId,
    Source, TrackInfo,
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
    /// Threads of a runtime of the SFU's own (named `huddle-sfu`) that run the port
    /// and the rooms, spread over them; `None` runs them on the runtime that binds.
    pub threads: Option<usize>,
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
    /// What became of recording `id` of `room`.
    Recording {
        room: RoomId,
        id: String,
        event: RecordingEvent,
    },
}

/// A running SFU. Cheap to clone; the port and rooms stop when the last clone is
/// dropped or [`Sfu::shutdown`] is called.
#[derive(Debug, Clone)]
pub struct Sfu {
    inner: Arc<Inner>,
}

/// Closed rooms remembered, so that a late publish cannot start one again; the
/// oldest is forgotten first. Far more than the calls that end while their last
/// messages are in flight, and a few MB at most.
const CLOSED_ROOMS: usize = 16_384;

#[derive(Debug)]
struct Inner {
    // A std mutex: held to find, add or remove a room handle, never across an await
    // and never per packet.
    rooms: Mutex<Registry>,
    wiring: Wiring,
    room_config: RoomConfig,
    local_addr: SocketAddr,
    counters: Arc<PortCounters>,
    /// The SFU's own runtime, when it has one ([`SfuConfig::threads`]).
    _runtime: OwnRuntime,
}

/// A runtime the SFU owns: shut down, without waiting, when the SFU is dropped
/// (which may happen inside another runtime, where waiting is not allowed).
#[derive(Debug)]
struct OwnRuntime(Option<tokio::runtime::Runtime>);

impl Drop for OwnRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// The name of the SFU's own runtime's threads.
pub const SFU_THREAD: &str = "huddle-sfu";

impl Sfu {
    /// Binds the media port and starts its task. Room events arrive on the receiver.
    pub async fn bind(config: SfuConfig) -> io::Result<(Self, mpsc::UnboundedReceiver<SfuEvent>)> {
        let runtime = match config.threads {
            Some(threads) => Some(
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(threads.max(1))
                    .thread_name(SFU_THREAD)
                    .enable_all()
                    .build()?,
            ),
            None => None,
        };
        let runtime = OwnRuntime(runtime);
        let spawner = match &runtime.0 {
            Some(runtime) => runtime.handle().clone(),
            None => tokio::runtime::Handle::current(),
        };
        // Bound on the runtime that polls it, so that its readiness comes from there.
        let socket = spawner
            .spawn(bind_socket(config.listen))
            .await
            .map_err(io::Error::other)??;
        let socket = Arc::new(socket);
        let local_addr = socket.local_addr()?;
        let (port, control) = mpsc::unbounded_channel();
        let (events, events_rx) = mpsc::unbounded_channel();
        let counters = Arc::new(PortCounters::default());
        spawner.spawn(port::run(socket.clone(), control, counters.clone()));
        let mut room_config = RoomConfig::new(SocketAddr::new(
            config.announce_ip,
            config.announce_port.unwrap_or(local_addr.port()),
        ));
        room_config.max_peers = config.max_peers;
        let inner = Inner {
            rooms: Mutex::new(Registry::default()),
            wiring: Wiring {
                runtime: spawner,
                socket,
                port,
                events,
            },
            room_config,
            local_addr,
            counters,
            _runtime: runtime,
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
        self.rooms().running.len()
    }

    /// How the peer connections of every room fared: came up, or failed and why.
    pub fn connection_counters(&self) -> &ConnectionCounters {
        &self.inner.room_config.counters
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
    /// A room that was closed is not started again: [`RoomError::Closed`].
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
        handle.ask(command, answer).await?
    }

    /// `peer`'s answer to the SFU's last offer in `room`.
    pub async fn answer(
        &self,
        room: &RoomId,
        peer: &PeerId,
        answer: String,
    ) -> Result<(), RoomError> {
        let handle = self.room(room, false).ok_or_else(|| {
            if self.rooms().is_closed(room) {
                RoomError::Closed
            } else {
                RoomError::NotInRoom
            }
        })?;
        let (reply, done) = oneshot::channel();
        let command = Command::Answer {
            peer: peer.clone(),
            answer,
            reply,
        };
        handle.ask(command, done).await?
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

    /// Starts recording `room` (started if it is not running, so a recording asked
    /// for before anyone publishes begins when media flows). Fails with
    /// [`RoomError::Recording`] when the room already records or the spool file cannot
    /// be created (nothing started then). What becomes of it comes as
    /// [`SfuEvent::Recording`]; closing the room stops it ([`crate::record::StopReason::CallEnded`]).
    pub async fn start_recording(
        &self,
        room: &RoomId,
        spec: RecordingSpec,
    ) -> Result<(), RoomError> {
        let handle = self.room(room, true).ok_or(RoomError::Closed)?;
        let (reply, started) = oneshot::channel();
        handle
            .ask(Command::StartRecording { spec, reply }, started)
            .await?
    }

    /// Stops recording `id` of `room` ([`StopReason::Asked`]); nothing if it is not
    /// recording it.
    pub fn stop_recording(&self, room: &RoomId, id: &str) {
        self.tell(
            room,
            Command::StopRecording {
                id: id.to_owned(),
                reason: StopReason::Asked,
            },
        );
    }

    /// Ends `room`: every connection in it closes, and it is never started again
    /// (a publish or answer for it gets [`RoomError::Closed`]).
    pub fn close(&self, room: &RoomId) {
        let mut rooms = self.rooms();
        rooms.running.remove(room);
        rooms.bury(room.clone());
    }

    /// Ends every room, as [`Sfu::close`] does.
    pub fn shutdown(&self) {
        let mut rooms = self.rooms();
        let running: Vec<RoomId> = rooms.running.drain().map(|(id, _)| id).collect();
        for id in running {
            rooms.bury(id);
        }
    }

    fn rooms(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.inner.rooms.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The running room `id`; with `start`, started if it has never run or its task
    /// ended on its own, but never once it was closed.
    fn room(&self, id: &RoomId, start: bool) -> Option<RoomHandle> {
        let mut rooms = self.rooms();
        if let Some(handle) = rooms.running.get(id).filter(|h| !h.is_closed()) {
            return Some(handle.clone());
        }
        if !start || rooms.is_closed(id) {
            return None;
        }
        let room = Room::new(id.clone(), self.inner.room_config.clone());
        let handle = actor::spawn(id.clone(), room, self.inner.wiring.clone());
        rooms.running.insert(id.clone(), handle.clone());
        Some(handle)
    }

    /// Queues a command that needs no reply, in order behind every earlier one.
    fn tell(&self, room: &RoomId, command: Command) {
        if let Some(handle) = self.room(room, false) {
            // A room that has just ended needs no more commands.
            let _ = handle.tell(command);
        }
    }
}

/// The media socket at `listen`, with room in its buffers.
async fn bind_socket(listen: SocketAddr) -> io::Result<UdpSocket> {
    let socket = UdpSocket::bind(listen).await?;
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
    Ok(socket)
}

/// The rooms the SFU runs, and those it closed.
#[derive(Debug, Default)]
struct Registry {
    running: HashMap<RoomId, RoomHandle>,
    /// Rooms closed, the most recent [`CLOSED_ROOMS`] of them, in the order they
    /// closed: a publish arriving just after its call ended would otherwise start a
    /// room that nothing closes again.
    closed: VecDeque<RoomId>,
    /// The same rooms, to look them up.
    closed_set: HashSet<RoomId>,
}

impl Registry {
    fn bury(&mut self, id: RoomId) {
        if !self.closed_set.insert(id.clone()) {
            return;
        }
        self.closed.push_back(id);
        if self.closed.len() > CLOSED_ROOMS
            && let Some(oldest) = self.closed.pop_front()
        {
            self.closed_set.remove(&oldest);
        }
    }

    fn is_closed(&self, id: &RoomId) -> bool {
        self.closed_set.contains(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn sfu() -> Sfu {
        sfu_with_events().await.0
    }

    async fn sfu_with_events() -> (Sfu, mpsc::UnboundedReceiver<SfuEvent>) {
        Sfu::bind(SfuConfig {
            listen: (std::net::Ipv4Addr::LOCALHOST, 0).into(),
            announce_ip: std::net::Ipv4Addr::LOCALHOST.into(),
            announce_port: None,
            max_peers: 8,
            threads: None,
        })
        .await
        .expect("the SFU binds")
    }

    fn ids() -> (RoomId, PeerId) {
        (RoomId("call-1".into()), PeerId("alice".into()))
    }

    #[tokio::test]
    async fn a_publish_after_the_room_closed_is_refused_and_starts_nothing() {
        let sfu = sfu().await;
        let (room, alice) = ids();
        let _ = sfu
            .publish(&room, &alice, "v=0".into(), HashMap::new())
            .await;
        assert_eq!(sfu.room_count(), 1);
        sfu.close(&room);
        let late = sfu
            .publish(&room, &alice, "v=0".into(), HashMap::new())
            .await;
        assert_eq!(late, Err(RoomError::Closed));
        assert_eq!(sfu.room_count(), 0);
    }

    #[tokio::test]
    async fn an_answer_after_the_room_closed_is_refused_as_closed() {
        let sfu = sfu().await;
        let (room, alice) = ids();
        sfu.close(&room);
        let late = sfu.answer(&room, &alice, "v=0".into()).await;
        assert_eq!(late, Err(RoomError::Closed));
        assert_eq!(sfu.room_count(), 0);
    }

    fn spec(id: &str, path: std::path::PathBuf) -> RecordingSpec {
        RecordingSpec {
            id: id.into(),
            path,
            max_bytes: 1 << 20,
            max_duration: std::time::Duration::from_secs(60),
        }
    }

    #[tokio::test]
    async fn a_recording_whose_spool_cannot_be_created_is_refused_and_the_next_one_starts() {
        let (sfu, _events) = sfu_with_events().await;
        let (room, _) = ids();
        // Below a file, no directory can be made, whoever runs the test.
        let refused = sfu
            .start_recording(&room, spec("rec-1", "/dev/null/calls/rec-1.webm".into()))
            .await;
        assert!(
            matches!(&refused, Err(RoomError::Recording(why)) if why.contains("/dev/null/calls/rec-1.webm.spool")),
            "{refused:?}"
        );
        let dir = std::env::temp_dir().join(format!("huddle-sfu-rec-{}", std::process::id()));
        let path = dir.join("call-1/rec-2.webm");
        let started = sfu
            .start_recording(&room, spec("rec-2", path.clone()))
            .await;
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(started, Ok(()));
    }

    #[tokio::test]
    async fn a_second_recording_is_refused_and_closing_the_room_ends_the_first_with_call_ended() {
        let (sfu, mut events) = sfu_with_events().await;
        let (room, _) = ids();
        let dir = std::env::temp_dir().join(format!("huddle-sfu-close-{}", std::process::id()));
        let path = dir.join("call-1/rec-1.webm");
        sfu.start_recording(&room, spec("rec-1", path.clone()))
            .await
            .unwrap();
        assert!(
            crate::record::spool_path(&path).exists(),
            "the spool exists once started"
        );
        assert_eq!(sfu.room_count(), 1, "the room was started to record");
        let second = sfu
            .start_recording(&room, spec("rec-2", dir.join("x.webm")))
            .await;
        assert_eq!(
            second,
            Err(RoomError::Recording("already recording".into()))
        );
        // Another recording's id stops nothing.
        sfu.stop_recording(&room, "rec-2");
        sfu.close(&room);
        let mut reports = Vec::new();
        while reports.len() < 2 {
            let event = tokio::time::timeout(std::time::Duration::from_secs(10), events.recv())
                .await
                .expect("the writer reports")
                .expect("events flow");
            if let SfuEvent::Recording { room: r, id, event } = event {
                assert_eq!((r, id.as_str()), (room.clone(), "rec-1"));
                reports.push(event);
            }
        }
        let leftovers = std::fs::read_dir(dir.join("call-1")).map(|d| d.count());
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(
            reports,
            [
                RecordingEvent::Stopped {
                    reason: StopReason::CallEnded
                },
                RecordingEvent::Failed {
                    error: "no media was recorded".into()
                }
            ]
        );
        assert_eq!(
            leftovers.unwrap(),
            0,
            "nothing is left of a failed recording"
        );
    }
}
