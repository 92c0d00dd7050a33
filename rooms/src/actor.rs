//! The task that owns a [`Room`]: it feeds it commands, datagrams and the time, and
//! carries out what it outputs. The only place where a room meets the clock and the
//! socket.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use crate::port::{Control, Datagram};
use crate::record::{self, RecordingSpec, StopReason};
use crate::room::{Output, Route, Signal};
use crate::udp::SendBatch;
use crate::{MediaSwitch, PeerId, Room, RoomError, RoomId, SfuEvent, Source};

/// Datagrams a room may queue before the port drops them.
const DATAGRAM_QUEUE: usize = 4096;
/// Datagrams handled in one go before the room looks at commands and timers again.
const BATCH: usize = 64;

/// What the server asks of a room.
#[derive(Debug)]
pub(crate) enum Command {
    Publish {
        peer: PeerId,
        offer: String,
        sources: HashMap<String, Source>,
        reply: oneshot::Sender<Result<String, RoomError>>,
    },
    Answer {
        peer: PeerId,
        answer: String,
        reply: oneshot::Sender<Result<(), RoomError>>,
    },
    Mute {
        peer: PeerId,
        media: MediaSwitch,
        muted: bool,
    },
    Leave {
        peer: PeerId,
    },
    StartRecording {
        spec: RecordingSpec,
        reply: oneshot::Sender<Result<(), RoomError>>,
    },
    /// From the server ([`StopReason::Asked`]) or from the recording's own writer
    /// (a full disk, the size limit).
    StopRecording {
        id: String,
        reason: StopReason,
    },
}

/// The way into a running room.
///
/// Its commands travel one unbounded, ordered queue: a mute, an unmute and a leave
/// must reach the room in the order the call produced them, and the server issues
/// them from synchronous code that cannot wait for room in a bounded queue (a
/// bounded queue with a fallback for when it is full let later commands overtake
/// earlier ones). The queue stays small without a bound: publish and answer
/// callers wait for their reply, so each has at most one command queued, and the
/// others follow the call's membership changes, not the network.
#[derive(Debug, Clone)]
pub(crate) struct RoomHandle {
    commands: mpsc::UnboundedSender<Command>,
}

impl RoomHandle {
    /// A handle and the queue its commands arrive on.
    fn channel() -> (Self, mpsc::UnboundedReceiver<Command>) {
        let (commands, queue) = mpsc::unbounded_channel();
        (Self { commands }, queue)
    }

    /// Queues `command` behind every command sent before it. `Err` when the room's
    /// task has ended.
    pub fn tell(&self, command: Command) -> Result<(), RoomError> {
        self.commands.send(command).map_err(|_| RoomError::Closed)
    }

    /// Queues `command` and waits for the room's `reply` to it.
    pub async fn ask<T>(
        &self,
        command: Command,
        reply: oneshot::Receiver<T>,
    ) -> Result<T, RoomError> {
        self.tell(command)?;
        reply.await.map_err(|_| RoomError::Closed)
    }

    /// Whether the room's task has ended.
    pub fn is_closed(&self) -> bool {
        self.commands.is_closed()
    }
}

/// What a room's task needs from the server around it.
#[derive(Debug, Clone)]
pub(crate) struct Wiring {
    /// Where rooms run.
    pub runtime: tokio::runtime::Handle,
    pub socket: Arc<UdpSocket>,
    pub port: mpsc::UnboundedSender<Control>,
    pub events: mpsc::UnboundedSender<SfuEvent>,
}

/// Starts `room`'s task. It ends, closing every connection, when all handles are gone.
/// (A recording's writer holds only a weak one: it outlives the room, to finish the
/// file, and must not keep it running.)
pub(crate) fn spawn(id: RoomId, room: Room, wiring: Wiring) -> RoomHandle {
    let (handle, commands) = RoomHandle::channel();
    let (datagrams, datagrams_rx) = mpsc::channel(DATAGRAM_QUEUE);
    let own = Own {
        id,
        wiring,
        commands: handle.commands.downgrade(),
    };
    own.wiring
        .runtime
        .clone()
        .spawn(run(own, room, commands, datagrams, datagrams_rx));
    handle
}

/// What a room's task knows of itself.
struct Own {
    id: RoomId,
    wiring: Wiring,
    /// Its own command queue, for a recording's writer to ask it to stop.
    commands: mpsc::WeakUnboundedSender<Command>,
}

async fn run(
    own: Own,
    mut room: Room,
    mut commands: mpsc::UnboundedReceiver<Command>,
    datagrams: mpsc::Sender<Datagram>,
    mut inbox: mpsc::Receiver<Datagram>,
) {
    let (id, wiring) = (&own.id, &own.wiring);
    let mut out = SendBatch::default();
    loop {
        carry_out(id, &mut room, wiring, &datagrams, &mut out);
        let deadline = room.poll_timeout();
        let timer = async move {
            match deadline {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            command = commands.recv() => match command {
                Some(command) => apply(&own, &mut room, Instant::now(), command),
                None => break,
            },
            Some(first) = inbox.recv() => {
                let rest = std::iter::from_fn(|| inbox.try_recv().ok()).take(BATCH - 1);
                let batch = std::iter::once(first).chain(rest);
                room.handle_datagrams(Instant::now(), batch.map(|d| (d.conn, d.from, d.data)));
            }
            () = timer => room.handle_timeout(Instant::now()),
        }
    }
    room.close(Instant::now());
    carry_out(id, &mut room, wiring, &datagrams, &mut out);
}

fn apply(own: &Own, room: &mut Room, now: Instant, command: Command) {
    match command {
        Command::Publish {
            peer,
            offer,
            sources,
            reply,
        } => {
            let _ = reply.send(room.publish(now, &peer, offer, sources));
        }
        Command::Answer {
            peer,
            answer,
            reply,
        } => {
            let _ = reply.send(room.answer(now, &peer, answer));
        }
        Command::Mute { peer, media, muted } => room.set_muted(now, &peer, media, muted),
        Command::Leave { peer } => room.leave(now, &peer),
        Command::StartRecording { spec, reply } => {
            let sink = || {
                let queue = own.commands.clone();
                let id = spec.id.clone();
                let ask_stop = move |reason| {
                    if let Some(queue) = queue.upgrade() {
                        let id = id.clone();
                        let _ = queue.send(Command::StopRecording { id, reason });
                    }
                };
                record::start_writer(own.id.clone(), &spec, own.wiring.events.clone(), ask_stop)
                    .map_err(|e| {
                        RoomError::Recording(format!(
                            "cannot create {}: {e}",
                            record::spool_path(&spec.path).display()
                        ))
                    })
            };
            let _ = reply.send(room.start_recording(now, &spec, sink));
        }
        Command::StopRecording { id, reason } => room.stop_recording(&id, reason),
    }
}

/// Carries out what the room output: its datagrams leave together, after the rest.
fn carry_out(
    id: &RoomId,
    room: &mut Room,
    wiring: &Wiring,
    datagrams: &mpsc::Sender<Datagram>,
    out: &mut SendBatch,
) {
    while let Some(output) = room.poll_output() {
        match output {
            Output::Transmit { to, data } => out.push(to, data),
            Output::Route(Route::Add { ufrag, pwd, conn }) => {
                let _ = wiring.port.send(Control::Add {
                    ufrag,
                    pwd,
                    conn,
                    room: datagrams.clone(),
                });
            }
            Output::Route(Route::Remove { ufrag, .. }) => {
                let _ = wiring.port.send(Control::Remove { ufrag });
            }
            Output::Signal {
                peer,
                signal: Signal::Offer { sdp, tracks },
            } => {
                let _ = wiring.events.send(SfuEvent::Offer {
                    room: id.clone(),
                    peer,
                    sdp,
                    tracks,
                });
            }
            Output::Quality { peer, stats } => {
                let _ = wiring.events.send(SfuEvent::Quality {
                    room: id.clone(),
                    peer,
                    stats,
                });
            }
        }
    }
    // A full socket buffer drops datagrams, as the network would.
    out.flush(&wiring.socket);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mute(peer: &str) -> Command {
        Command::Mute {
            peer: PeerId(peer.to_owned()),
            media: MediaSwitch::Audio,
            muted: true,
        }
    }

    fn leave(peer: &str) -> Command {
        Command::Leave {
            peer: PeerId(peer.to_owned()),
        }
    }

    #[tokio::test]
    async fn mute_then_leave_arrive_in_order_behind_a_long_queue() {
        let (handle, mut queue) = RoomHandle::channel();
        // More than any queue bound a room ever had, so the queue is "full" for one.
        for _ in 0..1000 {
            handle.tell(mute("bob")).unwrap();
        }
        handle.tell(mute("alice")).unwrap();
        // The room takes one command: room in the queue again just before the leave.
        queue.recv().await.unwrap();
        handle.tell(leave("alice")).unwrap();
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        let mut alices = Vec::new();
        while let Ok(command) = queue.try_recv() {
            match command {
                Command::Mute { peer, .. } if peer.0 == "alice" => alices.push("mute"),
                Command::Leave { peer } if peer.0 == "alice" => alices.push("leave"),
                _ => {}
            }
        }
        assert_eq!(alices, ["mute", "leave"]);
    }
}
