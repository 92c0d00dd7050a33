//! The media port: one UDP socket shared by every connection of every room. Its task
//! reads datagrams and hands each to the room that owns its connection, by source
//! address; an address is learnt from a STUN binding request that names the
//! connection and proves it knows its ICE password ([`Routes`]). Rooms send from the
//! same socket directly.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::BytesMut;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::room::ConnId;
use crate::stun;
use crate::udp::RecvBatch;

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
        pwd: String,
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
    /// From an unknown address and not a binding request whose MESSAGE-INTEGRITY
    /// verifies for the live connection it names.
    pub unroutable: AtomicU64,
    /// For a room whose queue was full.
    pub overflow: AtomicU64,
}

/// Source addresses remembered per connection. A live ICE pair normally needs one
/// or two (a client behind a NAT that rebinds, or switching networks); the bound
/// keeps what a flood of verified requests from spoofed addresses can pin small.
pub const ADDRS_PER_CONN: usize = 4;

/// Which connection each datagram is for: the port's routing table, without the
/// socket, so tests and fuzz targets can drive it with any datagrams.
///
/// A datagram from an address learnt before goes to that address's connection. An
/// address is learnt only from a STUN binding request that names a live connection
/// by its ufrag *and* carries a MESSAGE-INTEGRITY made with that connection's ICE
/// password: knowing a ufrag (it is in the SDP, and crosses the network in the
/// clear) is not enough to reach a connection, nor to make the port remember an
/// address. Each connection keeps its [`ADDRS_PER_CONN`] most recently learnt
/// addresses. `T` is what the port delivers to (a room's queue).
#[derive(Debug)]
pub struct Routes<T> {
    by_ufrag: HashMap<Arc<str>, Entry<T>>,
    by_addr: HashMap<SocketAddr, Target<T>>,
    counters: Arc<PortCounters>,
}

/// A live connection.
#[derive(Debug)]
struct Entry<T> {
    conn: ConnId,
    /// Its ICE password: the key of its requests' MESSAGE-INTEGRITY.
    pwd: Vec<u8>,
    target: T,
    /// Addresses learnt for it, oldest first.
    addrs: VecDeque<SocketAddr>,
}

/// Where datagrams from one address go.
#[derive(Debug, Clone)]
struct Target<T> {
    ufrag: Arc<str>,
    conn: ConnId,
    target: T,
}

impl<T: Clone> Routes<T> {
    /// An empty table counting what it cannot route in `counters.unroutable`.
    pub fn new(counters: Arc<PortCounters>) -> Self {
        Self {
            by_ufrag: HashMap::new(),
            by_addr: HashMap::new(),
            counters,
        }
    }

    /// Connection `conn` is live: requests naming `ufrag` and signed with `pwd` (the
    /// server's ICE credentials for it) teach its addresses.
    pub fn add(&mut self, ufrag: String, pwd: String, conn: ConnId, target: T) {
        let ufrag: Arc<str> = ufrag.into();
        self.remove(&ufrag);
        let entry = Entry {
            conn,
            pwd: pwd.into_bytes(),
            target,
            addrs: VecDeque::new(),
        };
        self.by_ufrag.insert(ufrag, entry);
    }

    /// The connection of `ufrag` is closed: forgets it and its addresses.
    pub fn remove(&mut self, ufrag: &str) {
        if let Some(entry) = self.by_ufrag.remove(ufrag) {
            for addr in entry.addrs {
                self.by_addr.remove(&addr);
            }
        }
    }

    /// The connection datagram `data` from `from` is for, and where it goes; `None`
    /// (counted unroutable) if there is none.
    pub fn route(&mut self, data: &[u8], from: SocketAddr) -> Option<(ConnId, &T)> {
        // A request naming another connection than its address's, signed for it,
        // moves the address: the client changed its mind about the pair.
        if let Some(ufrag) = stun::request_ufrag(data)
            && let Some((ufrag, entry)) = self.by_ufrag.get_key_value(ufrag)
            && self.by_addr.get(&from).is_none_or(|t| t.ufrag != *ufrag)
            && stun::verify_integrity(data, &entry.pwd)
        {
            let ufrag = ufrag.clone();
            self.learn(ufrag, from);
        }
        match self.by_addr.get(&from) {
            Some(t) => Some((t.conn, &t.target)),
            None => {
                self.counters.unroutable.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Addresses remembered, for every connection together.
    pub fn addrs(&self) -> usize {
        self.by_addr.len()
    }

    /// `from` proved it holds `ufrag`'s password: its datagrams go there now.
    fn learn(&mut self, ufrag: Arc<str>, from: SocketAddr) {
        if let Some(old) = self.by_addr.remove(&from)
            && let Some(entry) = self.by_ufrag.get_mut(&old.ufrag)
        {
            entry.addrs.retain(|a| *a != from);
        }
        let Some(entry) = self.by_ufrag.get_mut(&ufrag) else {
            return;
        };
        entry.addrs.push_back(from);
        if entry.addrs.len() > ADDRS_PER_CONN
            && let Some(oldest) = entry.addrs.pop_front()
        {
            self.by_addr.remove(&oldest);
        }
        let target = Target {
            ufrag,
            conn: entry.conn,
            target: entry.target.clone(),
        };
        self.by_addr.insert(from, target);
    }
}

/// Runs the port until every route sender is gone.
pub(crate) async fn run(
    socket: Arc<UdpSocket>,
    mut control: mpsc::UnboundedReceiver<Control>,
    counters: Arc<PortCounters>,
) {
    let mut routes = Routes::new(counters.clone());
    let mut batch = RecvBatch::default();
    loop {
        tokio::select! {
            biased;
            change = control.recv() => match change {
                Some(Control::Add { ufrag, pwd, conn, room }) => routes.add(ufrag, pwd, conn, room),
                Some(Control::Remove { ufrag }) => routes.remove(&ufrag),
                None => return,
            },
            ready = socket.readable() => {
                if ready.is_err() || batch.read(&socket).is_err() {
                    continue;
                }
                for (data, from) in batch.datagrams() {
                    let Some((conn, room)) = routes.route(data, from) else {
                        continue;
                    };
                    let datagram = Datagram { conn, from, data: BytesMut::from(data) };
                    if room.try_send(datagram).is_err() {
                        counters.overflow.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stun::tests::signed_request;

    const RTP: [u8; 12] = [0x80, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0, 7];

    fn addr(n: u16) -> SocketAddr {
        SocketAddr::from(([198, 51, 100, 7], 40000 + n))
    }

    /// A table with connection 1 (`srv1`, password `pass1`) and 2 (`srv2`, `pass2`).
    fn routes() -> (Routes<()>, Arc<PortCounters>) {
        let counters = Arc::new(PortCounters::default());
        let mut routes = Routes::new(counters.clone());
        routes.add("srv1".into(), "pass1".into(), ConnId(1), ());
        routes.add("srv2".into(), "pass2".into(), ConnId(2), ());
        (routes, counters)
    }

    fn conn(routes: &mut Routes<()>, data: &[u8], from: SocketAddr) -> Option<ConnId> {
        routes.route(data, from).map(|(conn, ())| conn)
    }

    #[test]
    fn a_request_with_a_bad_integrity_does_not_map_its_address() {
        let (mut routes, _) = routes();
        let forged = signed_request("srv1:evil", "guess");
        assert_eq!(conn(&mut routes, &forged, addr(1)), None);
        assert_eq!(conn(&mut routes, &RTP, addr(1)), None);
        assert_eq!(routes.addrs(), 0);
    }

    #[test]
    fn a_verified_request_maps_its_address_to_its_connection() {
        let (mut routes, _) = routes();
        let request = signed_request("srv1:cli", "pass1");
        assert_eq!(conn(&mut routes, &request, addr(1)), Some(ConnId(1)));
        assert_eq!(conn(&mut routes, &RTP, addr(1)), Some(ConnId(1)));
    }

    #[test]
    fn a_connection_keeps_its_four_latest_addresses() {
        let (mut routes, _) = routes();
        let request = signed_request("srv1:cli", "pass1");
        for n in 0..20 {
            assert_eq!(conn(&mut routes, &request, addr(n)), Some(ConnId(1)));
        }
        assert_eq!(routes.addrs(), ADDRS_PER_CONN);
        for n in 0..16 {
            assert_eq!(conn(&mut routes, &RTP, addr(n)), None, "address {n}");
        }
        for n in 16..20 {
            assert_eq!(conn(&mut routes, &RTP, addr(n)), Some(ConnId(1)));
        }
    }

    #[test]
    fn what_comes_from_an_unknown_address_unverified_is_counted_unroutable() {
        let (mut routes, counters) = routes();
        let datagrams = [
            RTP.to_vec(),
            signed_request("srv1:evil", "guess"),
            signed_request("srv1:evil", "pass2"),
            signed_request("nobody:cli", "pass1"),
            Vec::new(),
        ];
        for data in &datagrams {
            assert_eq!(conn(&mut routes, data, addr(1)), None);
        }
        let unroutable = counters.unroutable.load(Ordering::Relaxed);
        assert_eq!(unroutable, datagrams.len() as u64);
    }

    #[test]
    fn a_request_verified_for_another_connection_moves_the_address() {
        let (mut routes, _) = routes();
        conn(&mut routes, &signed_request("srv1:cli", "pass1"), addr(1));
        let moved = conn(&mut routes, &signed_request("srv2:cli", "pass2"), addr(1));
        assert_eq!(moved, Some(ConnId(2)));
        assert_eq!(conn(&mut routes, &RTP, addr(1)), Some(ConnId(2)));
        assert_eq!(routes.addrs(), 1);
    }

    #[test]
    fn a_removed_connection_forgets_its_addresses() {
        let (mut routes, _) = routes();
        conn(&mut routes, &signed_request("srv1:cli", "pass1"), addr(1));
        routes.remove("srv1");
        assert_eq!(conn(&mut routes, &RTP, addr(1)), None);
        assert_eq!(routes.addrs(), 0);
    }
}
