//! The media port: one UDP socket shared by every connection of every room. Its task
//! reads datagrams and hands each to the room that owns its connection: by source
//! address once known, else by the username fragment of a STUN binding request.
//! Rooms send from the same socket directly.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::BytesMut;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::room::ConnId;
use crate::stun;

/// Largest datagram read; anything WebRTC sends fits well below it.
const MAX_DATAGRAM: usize = 2048;

/// A datagram for one of a room's connections.
#[derive(Debug)]
pub struct Datagram {
    pub conn: ConnId,
    pub from: SocketAddr,
    pub data: BytesMut,
}

/// A route change, sent by room actors.
#[derive(Debug)]
pub(crate) enum Control {
    Add {
        ufrag: String,
        conn: ConnId,
        room: mpsc::Sender<Datagram>,
    },
    Remove {
        ufrag: String,
    },
}

/// Datagrams the port could not deliver, by reason (read by metrics and tests).
#[derive(Debug, Default)]
pub struct PortCounters {
    /// From an unknown address and not a STUN request naming a live connection.
    pub unroutable: AtomicU64,
    /// For a room whose queue was full.
    pub overflow: AtomicU64,
}

#[derive(Clone)]
struct Target {
    ufrag: Arc<str>,
    conn: ConnId,
    room: mpsc::Sender<Datagram>,
}

/// Runs the port until every route sender is gone.
pub(crate) async fn run(
    socket: Arc<UdpSocket>,
    mut control: mpsc::UnboundedReceiver<Control>,
    counters: Arc<PortCounters>,
) {
    let mut by_ufrag: HashMap<Arc<str>, Target> = HashMap::new();
    let mut by_addr: HashMap<SocketAddr, Target> = HashMap::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        tokio::select! {
            biased;
            change = control.recv() => match change {
                Some(Control::Add { ufrag, conn, room }) => {
                    let ufrag: Arc<str> = ufrag.into();
                    by_ufrag.insert(ufrag.clone(), Target { ufrag, conn, room });
                }
                Some(Control::Remove { ufrag }) => {
                    by_ufrag.remove(ufrag.as_str());
                    by_addr.retain(|_, t| *t.ufrag != *ufrag);
                }
                None => return,
            },
            read = socket.recv_from(&mut buf) => {
                let Ok((n, from)) = read else { continue };
                let data = &buf[..n];
                // A STUN request names its connection: it wins over a stale address.
                let target = match stun::request_ufrag(data).and_then(|u| by_ufrag.get(u)) {
                    Some(target) => {
                        if by_addr.get(&from).is_none_or(|t| t.conn != target.conn) {
                            by_addr.insert(from, target.clone());
                        }
                        target
                    }
                    None => match by_addr.get(&from) {
                        Some(target) => target,
                        None => {
                            counters.unroutable.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                    },
                };
                let datagram = Datagram { conn: target.conn, from, data: BytesMut::from(data) };
                if target.room.try_send(datagram).is_err() {
                    counters.overflow.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}
