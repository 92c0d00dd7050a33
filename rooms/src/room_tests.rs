//! Room behaviour in simulated time: synthetic participants against the room core.

use std::time::Duration;

use rtc::rtp_transceiver::rtp_sender::RtpCodecKind::{Audio, Video};

use std::collections::{BTreeSet, HashMap};

use crate::sim::{self, Link, Sim};
use crate::{MediaSwitch, PeerId, RoomError};

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
fn everyone_in_a_full_room_receives_everyone_else_and_the_ninth_is_refused() {
    let mut sim = Sim::new(3);
    let names: Vec<String> = (1..=8).map(|i| format!("p{i}")).collect();
    for name in &names {
        sim.join(name, &AV).unwrap();
    }
    assert_eq!(sim.join("p9", &AV).unwrap_err(), RoomError::Full(8));
    sim.run(Duration::from_secs(2));
    for c in &sim.clients {
        let from = c.receiving_from();
        let others: Vec<&String> = names.iter().filter(|n| **n != c.id.0).collect();
        assert_eq!(from.len(), 7, "{} receives from {:?}", c.id, from);
        for other in others {
            assert!(
                from[other.as_str()] > 100,
                "{} from {other}: {from:?}",
                c.id
            );
        }
    }
    assert_eq!(sim.room.peers().count(), 8);
}

#[test]
fn packets_arrive_intact_and_in_order_on_a_clean_link() {
    let mut sim = Sim::new(4);
    sim.join("alice", &AV).unwrap();
    sim.join("bob", &AV).unwrap();
    sim.run(Duration::from_secs(2));
    let bob = &sim.clients[1];
    for ((publisher, track), seqs) in &bob.received {
        assert!(
            seqs.windows(2).all(|w| w[1] == w[0].wrapping_add(1)),
            "{publisher}/{track} out of order"
        );
        let payloads = &bob.payloads[&(publisher.clone(), track.clone())];
        for (seq, payload) in payloads {
            let ssrc = u32::from_be_bytes(payload[6..10].try_into().unwrap());
            assert_eq!(payload.as_ref(), sim::payload(ssrc, *seq).as_slice());
        }
    }
}

#[test]
fn nacks_recover_what_a_lossy_reordering_link_drops() {
    let mut sim = Sim::new(5);
    sim.join("alice", &[Video]).unwrap();
    sim.join("bob", &[Video]).unwrap();
    sim.run(Duration::from_secs(1));
    let before: usize = sim.clients[1].received.values().map(Vec::len).sum();
    sim.link = Link {
        delay: Duration::from_millis(10),
        jitter: Duration::from_millis(15),
        loss: 0.05,
    };
    sim.run(Duration::from_secs(4));
    // A calm second for the last retransmissions.
    sim.link = Link::default();
    sim.run(Duration::from_secs(1));
    let bob = &sim.clients[1];
    let seqs: BTreeSet<u16> = bob.received.values().flatten().copied().collect();
    let (first, last) = (*seqs.first().unwrap(), *seqs.last().unwrap());
    let missing = (first..=last).filter(|s| !seqs.contains(s)).count();
    let received: usize = bob.received.values().map(Vec::len).sum();
    assert!(
        sim.media_dropped > 50,
        "the link dropped {}",
        sim.media_dropped
    );
    assert!(received > before + 400);
    let reordered = bob
        .received
        .values()
        .flat_map(|s| s.windows(2))
        .filter(|w| w[1] < w[0])
        .count();
    assert!(reordered > 0, "jitter should reorder packets");
    assert_eq!(
        missing, 0,
        "{missing} packets never arrived; {} dropped on the wire",
        sim.media_dropped
    );
}

#[test]
fn a_leaver_stops_reaching_the_others_and_leaves_the_offers() {
    let mut sim = Sim::new(6);
    for name in ["alice", "bob", "carol"] {
        sim.join(name, &AV).unwrap();
    }
    sim.run(Duration::from_secs(2));
    sim.leave(1);
    let counts = |sim: &Sim| -> Vec<usize> {
        sim.clients
            .iter()
            .map(|c| c.receiving_from().get("bob").copied().unwrap_or(0))
            .collect()
    };
    sim.run(Duration::from_millis(100));
    let after_leave = counts(&sim);
    assert!(after_leave.iter().all(|n| *n > 100));
    sim.run(Duration::from_secs(1));
    assert_eq!(counts(&sim), after_leave, "nothing more from bob");
    for c in &sim.clients {
        let tracks = &sim.last_tracks[&c.id];
        assert!(
            tracks.iter().all(|t| t.peer.0 != "bob"),
            "{} still offered bob: {tracks:?}",
            c.id
        );
        assert_eq!(tracks.len(), 2, "{} keeps the other's two tracks", c.id);
    }
    assert!(sim.room.peers().all(|p| p.0 != "bob"));
}

#[test]
fn muting_stops_forwarding_that_media_only() {
    let mut sim = Sim::new(7);
    sim.join("alice", &AV).unwrap();
    sim.join("bob", &AV).unwrap();
    sim.run(Duration::from_secs(1));
    let alice = PeerId("alice".into());
    sim.room
        .set_muted(sim.now, &alice, MediaSwitch::Audio, true);
    let by_source = |sim: &Sim| -> (usize, usize) {
        let bob = &sim.clients[1];
        let count = |prefix: &str| -> usize {
            bob.received
                .iter()
                .filter(|((p, t), _)| p == "alice" && t.starts_with(prefix))
                .map(|(_, s)| s.len())
                .sum()
        };
        (count("microphone"), count("camera"))
    };
    sim.run(Duration::from_millis(50));
    let (audio, video) = by_source(&sim);
    sim.run(Duration::from_secs(1));
    let (audio_after, video_after) = by_source(&sim);
    assert_eq!(audio_after, audio, "muted audio is not forwarded");
    assert!(video_after > video + 100, "video still flows");
    sim.room
        .set_muted(sim.now, &alice, MediaSwitch::Audio, false);
    sim.run(Duration::from_secs(1));
    assert!(
        by_source(&sim).0 > audio_after + 30,
        "unmuted audio flows again"
    );
}

#[test]
fn a_new_subscriber_gets_a_keyframe_request_sent_to_the_publisher() {
    let mut sim = Sim::new(8);
    sim.join("alice", &AV).unwrap();
    sim.run(Duration::from_secs(1));
    let before = sim.clients[0].keyframe_requests;
    sim.join("bob", &AV).unwrap();
    sim.run(Duration::from_secs(1));
    assert!(sim.clients[0].keyframe_requests > before);
    // Throttled: never more than one per keyframe interval (500 ms) per track.
    assert!(sim.clients[0].keyframe_requests - before <= 3);
}

#[test]
fn quality_is_reported_per_participant_with_the_loss_the_server_saw() {
    let mut sim = Sim::new(9);
    sim.join("alice", &AV).unwrap();
    sim.join("bob", &AV).unwrap();
    sim.link.loss = 0.1;
    sim.run(Duration::from_secs(11));
    let alice: Vec<_> = sim.quality.iter().filter(|(p, _)| p.0 == "alice").collect();
    assert!(alice.len() >= 2, "a report every 5 s: {alice:?}");
    let last = &alice.last().unwrap().1;
    assert!(
        last.packet_loss > 1.0 && last.packet_loss < 30.0,
        "{last:?}"
    );
    assert!(last.bitrate > 10_000.0, "{last:?}");
}

#[test]
fn bad_offers_are_refused_and_change_nothing() {
    let mut sim = Sim::new(10);
    sim.join("alice", &AV).unwrap();
    let now = sim.now;
    let mallory = PeerId("mallory".into());
    let garbage = [
        "",
        "v=0",
        "not sdp at all\r\n",
        "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n",
    ];
    for sdp in garbage {
        let err = sim
            .room
            .publish(now, &mallory, sdp.into(), HashMap::new())
            .unwrap_err();
        assert!(
            matches!(err, RoomError::InvalidSdp(_) | RoomError::NoUsableCodecs),
            "{sdp:?}: {err:?}"
        );
    }
    let no_codecs = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=rtpmap:0 PCMU/8000\r\n";
    assert_eq!(
        sim.room
            .publish(now, &mallory, no_codecs.into(), HashMap::new()),
        Err(RoomError::NoUsableCodecs)
    );
    assert_eq!(
        sim.room.answer(now, &mallory, "v=0".into()),
        Err(RoomError::NotInRoom)
    );
    assert_eq!(sim.room.peers().count(), 1, "nobody half-joined");
    let alice = PeerId("alice".into());
    assert_eq!(
        sim.room.answer(now, &alice, "v=0".into()),
        Err(RoomError::UnexpectedAnswer)
    );
}

#[test]
fn an_offer_flood_is_cut_to_a_burst_then_one_a_second() {
    let mut sim = Sim::new(11);
    sim.join("alice", &AV).unwrap();
    let alice = PeerId("alice".into());
    let offer = sim.clients[0].last_offer.clone();
    let now = sim.now;
    let results: Vec<bool> = (0..30)
        .map(|_| {
            sim.room.publish(now, &alice, offer.clone(), HashMap::new())
                != Err(RoomError::TooManyOffers)
        })
        .collect();
    let taken = results.iter().filter(|ok| **ok).count();
    assert!((8..=10).contains(&taken), "{taken} of 30 taken at once");
    let later = now + Duration::from_secs(2);
    assert_ne!(
        sim.room.publish(later, &alice, offer, HashMap::new()),
        Err(RoomError::TooManyOffers)
    );
}

#[test]
fn garbage_datagrams_are_dropped_without_harm() {
    let mut sim = Sim::new(12);
    sim.join("alice", &AV).unwrap();
    sim.join("bob", &AV).unwrap();
    sim.run(Duration::from_secs(1));
    let conns = sim.conns();
    let from: std::net::SocketAddr = "203.0.113.9:5555".parse().unwrap();
    let mut x: u32 = 12345;
    for i in 0..2000usize {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let len = (x as usize >> 8) % 1400;
        let mut data = bytes::BytesMut::with_capacity(len);
        for j in 0..len {
            data.extend_from_slice(&[(x.rotate_left(j as u32 % 32) >> 3) as u8]);
        }
        if let Some(first) = data.first_mut() {
            *first = [0x00, 0x01, 0x16, 0x17, 0x80, 0x90, 0xc8][i % 7] | (*first & 0x0f);
        }
        let conn = conns[i % conns.len()];
        sim.room.handle_datagram(sim.now, conn, from, data);
    }
    let before = sim.clients[1].receiving_from()["alice"];
    sim.run(Duration::from_secs(1));
    assert!(sim.clients[1].receiving_from()["alice"] > before + 100);
}

/// The m-sections of `sdp` that are not rejected (port 0), without the session part.
fn live_sections(sdp: &str) -> Vec<&str> {
    sdp.split("\r\nm=")
        .skip(1)
        .filter(|s| s.split_whitespace().nth(1) != Some("0"))
        .collect()
}

/// Whether an m-section announces the server's host candidate and that there are no more.
fn has_host_candidate(section: &str) -> bool {
    let candidate = format!(" {} {} typ host", sim::SERVER.ip(), sim::SERVER.port());
    section
        .lines()
        .any(|l| l.starts_with("a=candidate:") && l.contains(&candidate))
        && section.lines().any(|l| l == "a=end-of-candidates")
}

#[test]
fn every_m_section_of_a_publish_answer_carries_the_host_candidate() {
    let mut sim = Sim::new(13);
    sim.join("alice", &AV).unwrap();
    let answer = &sim.clients[0].publish_answer;
    let sections = live_sections(answer);
    assert_eq!(sections.len(), 2, "{answer}");
    for section in sections {
        assert!(has_host_candidate(section), "m={section}");
    }
}

#[test]
fn every_m_section_of_a_subscribe_offer_carries_the_host_candidate() {
    let mut sim = Sim::new(14);
    sim.join("alice", &AV).unwrap();
    sim.join("bob", &AV).unwrap();
    sim.run(Duration::from_secs(1));
    let offer = &sim.last_offer_sdp[&PeerId("bob".into())];
    let sections = live_sections(offer);
    assert_eq!(sections.len(), 2, "alice's audio and video: {offer}");
    for section in sections {
        assert!(has_host_candidate(section), "m={section}");
    }
}
