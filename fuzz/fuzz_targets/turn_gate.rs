//! Any bytes a TURN client sends, as a UDP datagram or a TCP stream, from any address,
//! into the gate the embedded server checks every message with. The first byte picks
//! how: bit 0 signs the message with valid credentials and a fresh nonce (so that the
//! fuzzer reaches what the gate checks after authentication: quotas, peer addresses),
//! bit 1 sends from IPv6, bit 2 reads the rest as a TCP stream of frames. The next two
//! bytes are the source port.
//!
//! Never a panic; every answer is a STUN error response to the request's transaction.

#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use huddle_turn::fuzzing::{GateProbe, read_frames};
use huddle_turn::{PeerPolicy, Quota, Secret};
use libfuzzer_sys::fuzz_target;
use stun::attributes::{ATTR_NONCE, ATTR_REALM, ATTR_USERNAME};
use stun::integrity::MessageIntegrity;
use stun::message::{CLASS_ERROR_RESPONSE, Message, Setter};
use stun::textattrs::TextAttribute;
use tokio::runtime::Runtime;

const REALM: &str = "huddle";
const SECRET: &str = "fuzz-secret";

fn world() -> &'static (Runtime, GateProbe) {
    static WORLD: OnceLock<(Runtime, GateProbe)> = OnceLock::new();
    WORLD.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let policy = PeerPolicy {
            allowed: vec!["10.0.0.0/8".parse().unwrap()],
            services: vec!["127.0.0.1:7882".parse().unwrap()],
            ..PeerPolicy::default()
        };
        let quota = Quota {
            per_user: 2,
            total: 10,
        };
        (
            runtime,
            GateProbe::new(REALM, Secret::new(SECRET), policy, quota),
        )
    })
}

/// `raw` with USERNAME, REALM, NONCE and MESSAGE-INTEGRITY a client of this gate at
/// `from` would add; `None` if it is not STUN.
fn signed(gate: &GateProbe, raw: &[u8], from: SocketAddr) -> Option<Vec<u8>> {
    let mut m = Message::new();
    m.raw = raw.to_vec();
    m.decode().ok()?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
    let creds = Secret::new(SECRET).mint("alice", now + 3600);
    let setters: [Box<dyn Setter>; 4] = [
        Box::new(TextAttribute::new(ATTR_USERNAME, creds.username.clone())),
        Box::new(TextAttribute::new(ATTR_REALM, REALM.to_owned())),
        Box::new(TextAttribute::new(ATTR_NONCE, gate.nonce_for(from))),
        Box::new(MessageIntegrity::new_long_term_integrity(
            creds.username,
            REALM.to_owned(),
            creds.password,
        )),
    ];
    for setter in setters {
        setter.add_to(&mut m).ok()?;
    }
    Some(m.raw)
}

fn check_answer(request: &[u8], answer: &[u8]) {
    let mut m = Message::new();
    m.raw = answer.to_vec();
    m.decode().expect("the gate answers in STUN");
    assert_eq!(m.typ.class, CLASS_ERROR_RESPONSE, "the gate only refuses");
    assert_eq!(
        &m.transaction_id.0[..],
        &request[8..20],
        "the answer is to the request's transaction"
    );
}

fuzz_target!(|data: &[u8]| {
    let [mode, port_hi, port_lo, rest @ ..] = data else {
        return;
    };
    let (runtime, gate) = world();
    let ip = if mode & 2 == 0 {
        IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7))
    } else {
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7))
    };
    let from = SocketAddr::new(ip, u16::from_be_bytes([*port_hi, *port_lo]));
    runtime.block_on(async {
        let messages = if mode & 4 == 0 {
            vec![rest.to_vec()]
        } else {
            read_frames(rest).await
        };
        for message in messages {
            let message = match mode & 1 {
                1 => signed(gate, &message, from).unwrap_or(message),
                _ => message,
            };
            if let Some(answer) = gate.inspect(&message, from).await {
                check_answer(&message, &answer);
            }
        }
    });
});
