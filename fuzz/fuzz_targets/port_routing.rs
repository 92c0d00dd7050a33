//! Datagrams from any address into the media port's routing table
//! (`rooms::port::Routes`), as an attacker who knows a live connection's ICE username
//! would send them: routing must never panic, must map an address only for a
//! binding request whose MESSAGE-INTEGRITY is right, and must never remember more
//! than `ADDRS_PER_CONN` addresses per connection.
//!
//! Each input is a list of steps. A step's first byte says what it is: a datagram of
//! the input's bytes, or the same bytes made into a binding request signed with a live
//! connection's password (or a wrong one), or a connection added or removed; the next
//! two bytes pick the source address.

#![no_main]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use rooms::port::{ADDRS_PER_CONN, PortCounters, Routes};
use rooms::room::ConnId;
use stun::attributes::ATTR_USERNAME;
use stun::integrity::MessageIntegrity;
use stun::message::{BINDING_REQUEST, Message, Setter};
use stun::textattrs::TextAttribute;

/// The connections the table may hold: (server ufrag, password).
const CONNS: [(&str, &str); 3] = [
    ("srv1", "password-one-0123456789"),
    ("srv2", "password-two-0123456789"),
    ("srv3", "password-three-01234567"),
];

/// A binding request for `ufrag` carrying `tail` as its transaction and padding,
/// signed with `pwd`.
fn signed(ufrag: &str, pwd: &str, tail: &[u8]) -> Option<Vec<u8>> {
    let mut m = Message::new();
    m.set_type(BINDING_REQUEST);
    m.write_header();
    // The transaction id is the input's, so runs are reproducible.
    for (slot, byte) in m.raw[8..20].iter_mut().zip(tail) {
        *slot = *byte;
    }
    let setters: [Box<dyn Setter>; 2] = [
        Box::new(TextAttribute::new(ATTR_USERNAME, format!("{ufrag}:client"))),
        Box::new(MessageIntegrity::new_short_term_integrity(pwd.to_owned())),
    ];
    for setter in setters {
        setter.add_to(&mut m).ok()?;
    }
    Some(m.raw)
}

/// Where a non-STUN datagram from `from` goes now.
fn probe(routes: &mut Routes<()>, from: SocketAddr) -> Option<ConnId> {
    routes.route(&[0x80, 0x60, 0, 1], from).map(|(conn, _)| conn)
}

fuzz_target!(|data: &[u8]| {
    let mut routes: Routes<()> = Routes::new(Arc::new(PortCounters::default()));
    let mut live = [false; CONNS.len()];
    for step in data.split(|b| *b == 0xff) {
        let [op, a, b, rest @ ..] = step else {
            continue;
        };
        let from = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, *a)), u16::from(*b));
        let which = usize::from(op >> 4) % CONNS.len();
        let (ufrag, pwd) = CONNS[which];
        match op & 0x0f {
            0 => {
                live[which] = true;
                routes.add(ufrag.to_owned(), pwd.to_owned(), ConnId(which as u32), ());
            }
            1 => {
                live[which] = false;
                routes.remove(ufrag);
            }
            2 | 3 => {
                let right = op & 0x0f == 2;
                let key = if right { pwd } else { "not-the-password-000000" };
                let Some(request) = signed(ufrag, key, rest) else {
                    continue;
                };
                let before = probe(&mut routes, from);
                let routed = routes.route(&request, from).map(|(conn, _)| conn);
                if right && live[which] {
                    assert_eq!(routed, Some(ConnId(which as u32)));
                    assert_eq!(probe(&mut routes, from), routed, "its address is learnt");
                } else {
                    assert_eq!(
                        probe(&mut routes, from),
                        before,
                        "an unverified request changes no route"
                    );
                }
            }
            _ => {
                let _ = routes.route(rest, from);
            }
        }
        let conns = live.iter().filter(|l| **l).count();
        assert!(routes.addrs() <= conns * ADDRS_PER_CONN, "addresses stay bounded");
    }
});
