//! Any text a client sends as an SDP offer into a room of the built-in SFU, in
//! simulated time. The first byte picks the role: `r` a renegotiation after a real
//! Chromium offer, anything else an offer from a newcomer. Then the room's timers run
//! for a simulated minute. Never a panic; a refused first offer leaves nobody in the
//! room.
//!
//! Not here yet: SDP answers. The SFU offers a subscriber another's tracks only once
//! their codec is learnt from the first RTP packet, so reaching `Room::answer` needs
//! a client that completes DTLS-SRTP and sends media (as `rooms/src/sim.rs` does in
//! tests).

#![no_main]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use rooms::{PeerId, Room, RoomConfig, RoomId, Source};

/// What Chromium 156 offers for a camera and a microphone.
const CHROMIUM_OFFER: &str = include_str!("../sdp/chromium-offer.sdp");

/// Drains the room's outputs.
fn drain(room: &mut Room) {
    while room.poll_output().is_some() {}
}

fuzz_target!(|data: &[u8]| {
    let [mode, sdp @ ..] = data else {
        return;
    };
    let sdp = String::from_utf8_lossy(sdp).into_owned();
    let mut now = Instant::now();
    let mut room = Room::new(
        RoomId("fuzz".into()),
        RoomConfig::new("127.0.0.1:7882".parse().unwrap()),
    );
    let sources = || HashMap::from([("camera".to_owned(), Source::Camera)]);
    let alice = PeerId("alice".to_owned());
    if *mode == b'r' {
        room.publish(now, &alice, CHROMIUM_OFFER.to_owned(), sources())
            .expect("Chromium's offer is accepted");
        let _ = room.publish(now, &alice, sdp, sources());
    } else if room.publish(now, &alice, sdp, sources()).is_err() {
        assert!(room.is_empty(), "a refused first offer leaves nobody in");
    }
    drain(&mut room);
    // Time goes on: whatever the SDP set up must survive its timers.
    let end = now + Duration::from_secs(60);
    while let Some(due) = room.poll_timeout() {
        if due > end {
            break;
        }
        now = now.max(due) + Duration::from_millis(1);
        room.handle_timeout(now);
        drain(&mut room);
    }
});
