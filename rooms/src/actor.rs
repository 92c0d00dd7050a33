//! The task that owns a [`Room`]: it feeds it commands, datagrams and the time, and
//! carries out what it outputs. The only place where a room meets the clock and the
//! socket.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use crate::port::{Control, Datagram};
use crate::room::{Output, Route, Signal};
use crate::{MediaSwitch, PeerId, Room, RoomError, RoomId, SfuEvent, Source};

/// Commands a room may queue before senders wait.
const COMMAND_QUEUE: usize = 256;
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
}

/// The way into a running room.
#[derive(Debug, Clone)]
pub(crate) struct RoomHandle {
    pub commands: mpsc::Sender<Command>,
}

/// What a room's task needs from the server around it.
#[derive(Debug, Clone)]
pub(crate) struct Wiring {
    pub socket: Arc<UdpSocket>,
    pub port: mpsc::UnboundedSender<Control>,
    pub events: mpsc::UnboundedSender<SfuEvent>,
}

/// Starts `room`'s task. It ends, closing every connection, when all handles are gone.
pub(crate) fn spawn(id: RoomId, room: Room, wiring: Wiring) -> RoomHandle {
    let (commands, commands_rx) = mpsc::channel(COMMAND_QUEUE);
    let (datagrams, datagrams_rx) = mpsc::channel(DATAGRAM_QUEUE);
    tokio::spawn(run(id, room, wiring, commands_rx, datagrams, datagrams_rx));
    RoomHandle { commands }
}

async fn run(
    id: RoomId,
    mut room: Room,
    wiring: Wiring,
    mut commands: mpsc::Receiver<Command>,
    datagrams: mpsc::Sender<Datagram>,
    mut inbox: mpsc::Receiver<Datagram>,
) {
    loop {
        carry_out(&id, &mut room, &wiring, &datagrams);
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
                Some(command) => apply(&mut room, Instant::now(), command),
                None => break,
            },
            Some(first) = inbox.recv() => {
                let now = Instant::now();
                room.handle_datagram(now, first.conn, first.from, first.data);
                for _ in 1..BATCH {
                    let Ok(next) = inbox.try_recv() else { break };
                    room.handle_datagram(now, next.conn, next.from, next.data);
                }
            }
            () = timer => room.handle_timeout(Instant::now()),
        }
    }
    room.close(Instant::now());
    carry_out(&id, &mut room, &wiring, &datagrams);
}

fn apply(room: &mut Room, now: Instant, command: Command) {
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
    }
}

fn carry_out(id: &RoomId, room: &mut Room, wiring: &Wiring, datagrams: &mpsc::Sender<Datagram>) {
    while let Some(output) = room.poll_output() {
        match output {
            Output::Transmit { to, data } => {
                // A full socket buffer drops the datagram, as the network would.
                let _ = wiring.socket.try_send_to(&data, to);
            }
            Output::Route(Route::Add { ufrag, conn }) => {
                let _ = wiring.port.send(Control::Add {
                    ufrag,
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
}
