//! Room behaviour in simulated time: synthetic participants against the room core.

use std::time::Duration;

use rtc::rtp_transceiver::rtp_sender::RtpCodecKind::{Audio, Video};

use crate::sim::Sim;

const AV: [rtc::rtp_transceiver::rtp_sender::RtpCodecKind; 2] = [Audio, Video];

#[test]
fn two_participants_receive_each_others_audio_and_video() {
    let mut sim = Sim::new(1);
    sim.join("alice", &AV).unwrap();
    sim.join("bob", &AV).unwrap();
    sim.run(Duration::from_secs(3));
    for c in &sim.clients {
        eprintln!(
            "{}: {:?} open {:?}",
            c.id,
            c.receiving_from(),
            c.open_tracks
        );
    }
    let alice = &sim.clients[0];
    let bob = &sim.clients[1];
    assert!(alice.receiving_from().get("bob").is_some_and(|n| *n > 100));
    assert!(bob.receiving_from().get("alice").is_some_and(|n| *n > 100));
}

#[test]
fn a_leaver_s_tracks_end_for_everybody_else() {
    let mut sim = Sim::new(2);
    for name in ["alice", "bob", "carol"] {
        sim.join(name, &AV).unwrap();
    }
    sim.run(Duration::from_secs(2));
    sim.leave(1);
    sim.run(Duration::from_secs(1));
    for c in &sim.clients {
        eprintln!(
            "{}: {:?} open {:?} closed {:?}",
            c.id,
            c.receiving_from(),
            c.open_tracks,
            c.closed_tracks
        );
    }
}
