//! Room behaviour in simulated time: synthetic participants against the room core.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rtc::rtp_transceiver::rtp_sender::RtpCodecKind::{Audio, Video};

use std::collections::{BTreeSet, HashMap};

use crate::record::{Entry, Frame, StopReason, TrackKind, TrackMeta};
use crate::sim::{self, Link, Sim};
use crate::{MediaSwitch, PeerId, Room, RoomConfig, RoomError, RoomId};

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
            let ssrc = u32::from_be_bytes(payload[12..16].try_into().unwrap());
            assert_eq!(payload, &sim.sent[&(ssrc, *seq)]);
            assert_eq!(&payload[12..], sim::payload(ssrc, *seq).as_slice());
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
        ..Link::default()
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

/// Alice's last offer, each line kept, changed or dropped by `edit`.
fn alice_offer_edited(sim: &Sim, edit: impl FnMut(&str) -> Option<String>) -> String {
    sim.clients[0]
        .last_offer
        .lines()
        .filter_map(edit)
        .map(|l| l + "\r\n")
        .collect()
}

/// Packets bob has received from alice.
fn bob_from_alice(sim: &Sim) -> usize {
    sim.clients[1]
        .receiving_from()
        .get("alice")
        .copied()
        .unwrap_or(0)
}

/// Alice and bob in a room, each receiving the other.
fn alice_and_bob(seed: u64) -> Sim {
    let mut sim = Sim::new(seed);
    sim.join("alice", &AV).unwrap();
    sim.join("bob", &AV).unwrap();
    sim.run(Duration::from_secs(2));
    assert!(
        bob_from_alice(&sim) > 100,
        "{:?}",
        sim.clients[1].receiving_from()
    );
    sim
}

/// A re-offer without `a=ice-ufrag`, which the room must refuse.
fn without_ice_ufrag(sim: &Sim) -> String {
    alice_offer_edited(sim, |l| {
        (!l.starts_with("a=ice-ufrag:")).then(|| l.to_owned())
    })
}

/// A re-offer whose sections name different ICE ufrags: it passes the room's own
/// checks and fails only while being applied to the connection.
fn with_conflicting_ice_ufrags(sim: &Sim) -> String {
    let mut seen = 0;
    alice_offer_edited(sim, |l| {
        Some(if l.starts_with("a=ice-ufrag:") {
            seen += 1;
            format!("a=ice-ufrag:conflict{seen}")
        } else {
            l.to_owned()
        })
    })
}

#[test]
fn a_re_offer_without_an_ice_ufrag_is_refused_and_media_keeps_flowing() {
    let mut sim = alice_and_bob(15);
    let alice = PeerId("alice".into());
    let refused = sim
        .room
        .publish(sim.now, &alice, without_ice_ufrag(&sim), HashMap::new());
    assert!(
        matches!(refused, Err(RoomError::InvalidSdp(_))),
        "{refused:?}"
    );
    let before = bob_from_alice(&sim);
    sim.run(Duration::from_secs(1));
    assert!(bob_from_alice(&sim) > before + 100);
}

#[test]
fn a_valid_re_offer_after_one_without_an_ice_ufrag_is_answered() {
    let mut sim = alice_and_bob(16);
    let alice = PeerId("alice".into());
    let offer = without_ice_ufrag(&sim);
    assert!(
        sim.room
            .publish(sim.now, &alice, offer, HashMap::new())
            .is_err()
    );
    sim.now += Duration::from_secs(1);
    assert_eq!(sim.republish(0), Ok(()));
    let before = bob_from_alice(&sim);
    sim.run(Duration::from_secs(1));
    assert!(bob_from_alice(&sim) > before + 100);
}

#[test]
fn a_re_offer_that_fails_to_apply_is_rolled_back_and_the_next_one_is_answered() {
    let mut sim = alice_and_bob(17);
    let alice = PeerId("alice".into());
    let offer = with_conflicting_ice_ufrags(&sim);
    let refused = sim.room.publish(sim.now, &alice, offer, HashMap::new());
    assert!(
        matches!(refused, Err(RoomError::InvalidSdp(_))),
        "{refused:?}"
    );
    sim.now += Duration::from_secs(1);
    assert_eq!(sim.republish(0), Ok(()));
    let before = bob_from_alice(&sim);
    sim.run(Duration::from_secs(1));
    assert!(bob_from_alice(&sim) > before + 100);
}

#[test]
fn everyone_in_a_64_party_room_receives_everyone_else_and_the_64th_can_leave() {
    let mut sim = Sim::new(18);
    sim.room = Room::new(
        RoomId("call-64".into()),
        RoomConfig {
            max_peers: 64,
            ..RoomConfig::new(sim::SERVER)
        },
    );
    let names: Vec<String> = (1..=64).map(|i| format!("p{i}")).collect();
    // Audio only: 64 × 63 forwarded tracks are enough to fill every peer index, and
    // the test stays quick.
    for name in &names {
        sim.join(name, &[Audio]).unwrap();
    }
    sim.run(Duration::from_secs(1));
    for c in &sim.clients {
        let from = c.receiving_from();
        let silent: Vec<&String> = names
            .iter()
            .filter(|n| **n != c.id.0 && from.get(n.as_str()).is_none_or(|n| *n < 10))
            .collect();
        assert!(silent.is_empty(), "{} hears too little of {silent:?}", c.id);
    }
    // The last to join leaves: peer index 63, the highest, is taken out.
    sim.leave(63);
    sim.run(Duration::from_millis(100));
    assert_eq!(sim.room.peers().count(), 63);
}

/// The room's connection counters: (connected, connect timeouts, ICE failed, DTLS
/// failed).
fn connection_counts(sim: &Sim) -> (u64, u64, u64, u64) {
    let c = &sim.counters;
    let get = |n: &AtomicU64| n.load(Ordering::Relaxed);
    (
        get(&c.connected),
        get(&c.connect_timeouts),
        get(&c.ice_failed),
        get(&c.dtls_failed),
    )
}

#[test]
fn connections_that_come_up_are_counted_once_each() {
    let mut sim = alice_and_bob(19);
    sim.run(Duration::from_secs(1));
    assert_eq!(connection_counts(&sim), (4, 0, 0, 0));
}

#[test]
fn a_connection_whose_client_never_gets_through_is_counted_as_a_connect_timeout() {
    let mut sim = Sim::new(20);
    sim.link.down = true;
    sim.join("alice", &AV).unwrap();
    sim.run(Duration::from_secs(25));
    // Only the publish connection was negotiated: nobody publishes to alice.
    assert_eq!(connection_counts(&sim), (0, 1, 0, 0));
}

#[test]
fn connections_lost_after_coming_up_are_counted_as_ice_failures() {
    let mut sim = alice_and_bob(21);
    sim.link.down = true;
    sim.run(Duration::from_secs(40));
    assert_eq!(connection_counts(&sim), (4, 0, 4, 0));
}

#[test]
fn a_client_whose_certificate_does_not_match_its_fingerprint_is_counted_as_a_dtls_failure() {
    let mut sim = Sim::new(22);
    // Another certificate's fingerprint, as good as: a 2^-256 chance to be hers.
    let wrong = |sdp: String| -> String {
        sdp.lines()
            .map(|l| {
                if l.starts_with("a=fingerprint:sha-256 ") {
                    format!("a=fingerprint:sha-256 {}\r\n", ["AB"; 32].join(":"))
                } else {
                    format!("{l}\r\n")
                }
            })
            .collect()
    };
    sim.join_offering("alice", &AV, wrong).unwrap();
    sim.run(Duration::from_secs(25));
    assert_eq!(connection_counts(&sim), (0, 0, 0, 1));
}

/// Packets participant `to` has received from `from`.
fn received(sim: &Sim, to: &str, from: &str) -> usize {
    sim.clients
        .iter()
        .find(|c| c.id.0 == to)
        .and_then(|c| c.receiving_from().get(from).copied())
        .unwrap_or(0)
}

/// Why the room refused `peer`'s answers, in order.
fn refusals(sim: &Sim, peer: &str) -> Vec<RoomError> {
    sim.refused_answers
        .iter()
        .filter(|(p, _)| p.0 == peer)
        .map(|(_, e)| e.clone())
        .collect()
}

/// `sdp` without its lines starting with `prefix`.
fn without_lines(sdp: &str, prefix: &str) -> String {
    sdp.lines()
        .filter(|l| !l.starts_with(prefix))
        .map(|l| format!("{l}\r\n"))
        .collect()
}

/// Every participant receives every other one's media, each more than `min` packets.
fn everyone_receives_everyone(sim: &Sim, min: usize) {
    for to in &sim.clients {
        for from in &sim.clients {
            if to.id != from.id {
                let n = received(sim, &to.id.0, &from.id.0);
                assert!(n > min, "{} has {n} packets from {}", to.id, from.id);
            }
        }
    }
}

#[test]
fn a_garbage_subscribe_answer_is_refused_and_the_subscriber_still_gets_media_and_later_offers() {
    let mut sim = Sim::new(23);
    sim.join("alice", &AV).unwrap();
    sim.run(Duration::from_secs(1));
    sim.edit_answers("bob", vec![Box::new(|_| "not sdp at all\r\n".to_owned())]);
    sim.join("bob", &AV).unwrap();
    let refused = refusals(&sim, "bob");
    assert!(
        matches!(refused[..], [RoomError::InvalidSdp(_)]),
        "{refused:?}"
    );
    sim.run(Duration::from_secs(2));
    everyone_receives_everyone(&sim, 100);
    // A later offer, for carol's tracks, is answered and carries her media.
    sim.join("carol", &AV).unwrap();
    sim.run(Duration::from_secs(2));
    everyone_receives_everyone(&sim, 100);
    assert_eq!(refusals(&sim, "bob").len(), 1);
}

#[test]
fn a_subscribe_answer_without_an_ice_ufrag_is_refused_and_a_correct_one_afterwards_is_taken() {
    // Bob's first subscribe answer: `rtc` would switch to stable before finding the
    // ufrag missing, and never start the connection's transports.
    let mut sim = Sim::new(24);
    sim.join("alice", &AV).unwrap();
    sim.run(Duration::from_secs(1));
    sim.edit_answers(
        "bob",
        vec![Box::new(|sdp| without_lines(&sdp, "a=ice-ufrag:"))],
    );
    sim.join("bob", &AV).unwrap();
    let refused = refusals(&sim, "bob");
    assert!(
        matches!(&refused[..], [RoomError::InvalidSdp(why)] if why.contains("ice-ufrag")),
        "{refused:?}"
    );
    sim.run(Duration::from_secs(2));
    everyone_receives_everyone(&sim, 100);
    let alice_before = received(&sim, "alice", "bob");
    sim.join("carol", &AV).unwrap();
    sim.run(Duration::from_secs(2));
    everyone_receives_everyone(&sim, 100);
    assert!(
        received(&sim, "alice", "bob") > alice_before + 100,
        "alice kept bob"
    );
}

#[test]
fn subscribe_answers_with_wrong_mids_a_missing_m_section_no_fingerprint_or_an_unknown_payload_type_are_refused_and_the_next_correct_one_is_taken()
 {
    let mut sim = alice_and_bob(25);
    let edits: Vec<crate::sim::AnswerEdit> = vec![
        Box::new(|sdp| sdp.replace("a=mid:", "a=mid:x")),
        Box::new(|sdp| match sdp.rfind("\r\nm=") {
            Some(last) => format!("{}\r\n", &sdp[..last]),
            None => sdp,
        }),
        Box::new(|sdp| without_lines(&sdp, "a=fingerprint:")),
        Box::new(|sdp| {
            sdp.lines()
                .map(|l| match l.starts_with("m=video") {
                    true => format!("{l} 123\r\n"),
                    false => format!("{l}\r\n"),
                })
                .collect()
        }),
    ];
    sim.edit_answers("bob", edits);
    sim.join("carol", &AV).unwrap();
    sim.run(Duration::from_secs(2));
    let refused = refusals(&sim, "bob");
    let reasons = ["mid", "m-sections", "fingerprint", "payload type"];
    assert_eq!(refused.len(), reasons.len(), "{refused:?}");
    for (refusal, reason) in refused.iter().zip(reasons) {
        assert!(
            matches!(refusal, RoomError::InvalidSdp(why) if why.contains(reason)),
            "{reason}: {refusal:?}"
        );
    }
    everyone_receives_everyone(&sim, 100);
}

#[test]
fn a_participant_who_publishes_from_a_new_connection_starts_over_and_media_flows_again() {
    let mut sim = Sim::new(19);
    sim.join("alice", &AV).unwrap();
    sim.join("bob", &AV).unwrap();
    sim.run(Duration::from_secs(2));
    // Bob's client drops both peer connections and publishes from a new one, as
    // after `call:media_restart` or a reconnect; the room never heard him leave.
    sim.clients.remove(1);
    let before = sim.clients[0].receiving_from()["bob"];
    sim.join("bob", &AV).unwrap();
    sim.run(Duration::from_secs(2));
    assert_eq!(sim.room.peers().count(), 2);
    let (alice, bob) = (&sim.clients[0], &sim.clients[1]);
    assert!(bob.receiving_from().get("alice").is_some_and(|n| *n > 100));
    let from_bob = alice.receiving_from()["bob"];
    assert!(from_bob > before + 100, "alice: {before} then {from_bob}");
}

// Recording: what the room's recorder queues for the writer.

/// Each track a recording saw, with its frames in order.
fn recorded_tracks(sim: &Sim) -> Vec<(TrackMeta, Vec<Frame>)> {
    let mut tracks: Vec<(TrackMeta, Vec<Frame>)> = Vec::new();
    for entry in &sim.recorded {
        match entry {
            Entry::Track(meta) => tracks.push((meta.clone(), Vec::new())),
            Entry::Frame(frame) => {
                let track = tracks
                    .iter_mut()
                    .find(|(m, _)| m.key == frame.track)
                    .expect("a track is announced before its frames");
                track.1.push(frame.clone());
            }
        }
    }
    tracks
}

/// The recorded track of `peer`'s `kind`.
fn recorded_track(sim: &Sim, peer: &str, kind: TrackKind) -> (TrackMeta, Vec<Frame>) {
    recorded_tracks(sim)
        .into_iter()
        .find(|(m, _)| m.peer.0 == peer && m.kind == kind)
        .unwrap_or_else(|| panic!("no {kind:?} track of {peer} recorded"))
}

/// The sequence numbers of the packets a recorded sim video frame was made of,
/// checked against what was sent: each of its packets in full, in order, the
/// first one a frame's start. Panics on a frame that is not one whole frame.
fn frame_packets(sim: &Sim, ssrc: u32, frame: &Frame) -> Vec<u16> {
    let chunk = 10 + 188;
    assert_eq!(
        frame.data.len(),
        chunk * sim::PACKETS_PER_FRAME as usize,
        "a frame of {} packets",
        sim::PACKETS_PER_FRAME
    );
    let seqs: Vec<u16> = frame
        .data
        .chunks(chunk)
        .map(|c| {
            assert_eq!(u32::from_be_bytes(c[10..14].try_into().unwrap()), ssrc);
            u16::from_be_bytes(c[14..16].try_into().unwrap())
        })
        .collect();
    for (i, (seq, part)) in seqs.iter().zip(frame.data.chunks(chunk)).enumerate() {
        assert_eq!(
            *seq,
            seqs[0].wrapping_add(i as u16),
            "packets in order: {seqs:?}"
        );
        let sent = &sim.sent[&(ssrc, *seq)];
        assert_eq!(&sent[2..], part, "packet {seq} intact");
        assert_eq!(
            sent[0] & 0x10 != 0,
            i == 0,
            "the frame starts at {}",
            seqs[0]
        );
    }
    seqs
}

/// Participant `index`'s next sequence number on track `track`, `ahead` packets on.
fn seq_ahead(sim: &Sim, index: usize, track: usize, ahead: u16) -> u16 {
    let ssrc = sim.ssrc(index, track);
    let last = sim
        .sent
        .keys()
        .filter(|(s, _)| *s == ssrc)
        .map(|(_, seq)| *seq)
        .max()
        .unwrap();
    last.wrapping_add(ahead)
}

#[test]
fn a_recording_under_loss_and_reordering_holds_whole_frames_only_and_restarts_video_at_keyframes_it_asks_for()
 {
    let mut sim = alice_and_bob(40);
    sim.record("rec-1", Duration::from_secs(3600)).unwrap();
    sim.link = Link {
        delay: Duration::from_millis(10),
        jitter: Duration::from_millis(15),
        loss: 0.05,
        ..Link::default()
    };
    // Packets alice never sends: losses no retransmission repairs, ~0.6 s apart
    // (a keyframe request per 0.5 s at most), at a frame's start, middle and end.
    let video = sim.ssrc(0, 1);
    let gaps: Vec<u16> = (0..8u16)
        .map(|k| seq_ahead(&sim, 0, 1, 60 + k * 76))
        .collect();
    for seq in &gaps {
        sim.unsent.insert((video, *seq));
    }
    let requests = sim.clients[0].keyframe_requests;
    sim.run(Duration::from_secs(6));
    sim.link = Link::default();
    sim.run(Duration::from_secs(1));
    sim.room.stop_recording("rec-1", StopReason::Asked);
    assert!(
        sim.media_dropped > 50,
        "the link dropped {}",
        sim.media_dropped
    );

    let (meta, frames) = recorded_track(&sim, "alice", TrackKind::Video);
    assert_eq!(meta.codec.to_ascii_lowercase(), "video/vp8");
    assert!(frames[0].keyframe, "video starts at a keyframe");
    let mut previous: Option<(u16, Duration)> = None;
    for frame in &frames {
        let seqs = frame_packets(&sim, video, frame);
        assert!(
            seqs.iter().all(|s| !gaps.contains(s)),
            "a frame with a packet never sent: {seqs:?}"
        );
        let key = sim.sent[&(video, seqs[0])][2] & 1 == 0;
        assert_eq!(frame.keyframe, key, "keyframe flag of {seqs:?}");
        if let Some((last, at)) = previous {
            assert!(
                seqs[0].wrapping_sub(last) < 0x8000,
                "in order: {last} then {seqs:?}"
            );
            assert!(frame.at > at, "later frames later");
        }
        previous = Some((seqs[0], frame.at));
    }
    // After each gap, video resumes at a keyframe, which alice sent because she was
    // asked (the simulated publisher sends one only then).
    for gap in &gaps {
        let after = frames
            .iter()
            .find(|f| frame_packets(&sim, video, f)[0].wrapping_sub(*gap) < 0x8000)
            .expect("video resumes after a gap");
        assert!(
            after.keyframe,
            "the first frame after the gap at {gap} is a keyframe"
        );
    }
    assert!(
        sim.clients[0].keyframe_requests >= requests + gaps.len(),
        "keyframe requests: {} then {}",
        requests,
        sim.clients[0].keyframe_requests
    );
    // 7 s at 1000/24 frames a second (290); each gap costs the frames until the
    // keyframe (0.3 to 0.9 s): the reorder wait, the keyframe request's throttle
    // (shared with bob's requests) and a round trip.
    assert!(frames.len() > 100, "{} video frames", frames.len());

    let (_, audio) = recorded_track(&sim, "alice", TrackKind::Audio);
    let audio_ssrc = sim.ssrc(0, 0);
    for frame in &audio {
        let seq = u16::from_be_bytes(frame.data[16..18].try_into().unwrap());
        assert_eq!(
            frame.data,
            sim.sent[&(audio_ssrc, seq)],
            "audio frame {seq} intact"
        );
    }
    // 350 sent, 5 % of them lost on the way (audio is not retransmitted).
    assert!(audio.len() > 300, "{} audio frames", audio.len());
}

#[test]
fn recorded_tracks_share_one_clock_a_late_joiner_starts_at_their_offset_and_a_leaver_ends_there() {
    let mut sim = alice_and_bob(41);
    let started = sim.now;
    sim.record("rec-1", Duration::from_secs(3600)).unwrap();
    sim.run(Duration::from_secs(1));
    let carol_joins = sim.now - started;
    sim.join("carol", &AV).unwrap();
    sim.run(Duration::from_secs(1));
    let bob_leaves = sim.now - started;
    sim.leave(1);
    sim.run(Duration::from_secs(1));
    sim.room.stop_recording("rec-1", StopReason::Asked);

    let tracks = recorded_tracks(&sim);
    assert_eq!(tracks.len(), 6, "three participants' audio and video");
    let link = sim.link.delay;
    for (meta, frames) in &tracks {
        assert!(!frames.is_empty(), "{} {:?}", meta.peer, meta.kind);
        // Every frame sits where its first packet was sent, on the recording's
        // clock, plus the link's delay: the media's own timestamps, one clock.
        for frame in frames {
            let rate = if meta.kind == TrackKind::Audio {
                48
            } else {
                90
            };
            let sent = sent_at(&sim, meta, frame, rate);
            let expected = sent.saturating_sub(started - sim.epoch) + link;
            let error = frame.at.abs_diff(expected);
            assert!(
                error <= Duration::from_millis(3),
                "{} {:?} frame at {:?}, sent at {:?}",
                meta.peer,
                meta.kind,
                frame.at,
                expected
            );
        }
        let (first, last) = (frames[0].at, frames[frames.len() - 1].at);
        match meta.peer.0.as_str() {
            "carol" => {
                assert!(first >= carol_joins, "carol starts at {first:?}");
                assert!(
                    first < carol_joins + Duration::from_millis(300),
                    "carol starts at {first:?}"
                );
            }
            "bob" => {
                assert!(
                    first < Duration::from_millis(300),
                    "bob starts at {first:?}"
                );
                assert!(last <= bob_leaves, "bob ends at {last:?}");
                assert!(
                    last > bob_leaves - Duration::from_millis(100),
                    "bob ends at {last:?}"
                );
            }
            _ => {
                assert!(
                    first < Duration::from_millis(300),
                    "alice starts at {first:?}"
                );
                assert!(last > Duration::from_millis(2900), "alice ends at {last:?}");
            }
        }
    }
}

/// When the packets of a recorded frame were sent, since the sim's epoch: the
/// packets' RTP timestamp, found by the sequence number the frame carries.
fn sent_at(sim: &Sim, meta: &TrackMeta, frame: &Frame, rate: u64) -> Duration {
    let (ssrc, seq) = match meta.kind {
        TrackKind::Audio => (
            u32::from_be_bytes(frame.data[12..16].try_into().unwrap()),
            u16::from_be_bytes(frame.data[16..18].try_into().unwrap()),
        ),
        TrackKind::Video => (
            u32::from_be_bytes(frame.data[10..14].try_into().unwrap()),
            u16::from_be_bytes(frame.data[14..16].try_into().unwrap()),
        ),
    };
    let timestamp = sim.timestamps[&(ssrc, seq)];
    Duration::from_millis(u64::from(timestamp) / rate)
}

#[test]
fn a_recording_asks_for_keyframes_when_it_starts_and_begins_video_with_one() {
    let mut sim = alice_and_bob(42);
    // Long after the keyframes the subscribers asked for.
    sim.run(Duration::from_secs(2));
    let requests = sim.clients[0].keyframe_requests;
    sim.record("rec-1", Duration::from_secs(3600)).unwrap();
    assert_eq!(
        sim.clients[0].keyframe_requests,
        requests + 1,
        "asked at once"
    );
    sim.run(Duration::from_millis(200));
    let (_, frames) = recorded_track(&sim, "alice", TrackKind::Video);
    assert!(frames[0].keyframe);
    assert!(
        frames[0].at < Duration::from_millis(60),
        "first frame at {:?}",
        frames[0].at
    );
}

#[test]
fn a_recording_stops_at_its_duration_limit_once_and_a_second_one_is_refused_meanwhile() {
    let mut sim = alice_and_bob(43);
    sim.record("rec-1", Duration::from_secs(1)).unwrap();
    assert_eq!(
        sim.record("rec-2", Duration::from_secs(1)),
        Err(RoomError::Recording("already recording".into()))
    );
    sim.room.stop_recording("rec-2", StopReason::Asked);
    sim.run(Duration::from_millis(1500));
    let feed = sim.recording.as_mut().unwrap();
    assert_eq!(feed.stop.try_recv(), Ok(StopReason::Limit));
    assert!(feed.frames.is_closed(), "the queue closed");
    let last = recorded_tracks(&sim)
        .iter()
        .flat_map(|(_, f)| f.last().map(|f| f.at))
        .max()
        .unwrap();
    assert!(last <= Duration::from_secs(1), "last frame at {last:?}");
    // Stopped, the room records again when asked.
    sim.record("rec-3", Duration::from_secs(1)).unwrap();
}
