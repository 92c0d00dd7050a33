//! The SFU over real UDP on 127.0.0.1. Clients built on the async `webrtc` crate
//! (the same `rtc` core a native client would use) publish RTP with known payloads
//! to a real [`rooms::Sfu`] and check what they receive. Nothing is mocked: the
//! sockets, ICE, DTLS, SRTP, RTCP feedback and the SFU's tasks are the real ones,
//! and the lossy link is a UDP proxy on loopback.
//!
//! - three participants receive each other's audio and video, intact and in order;
//! - a subscriber behind a lossy link gets every lost video packet back by NACK;
//! - a participant who leaves stops reaching the others and leaves their offers;
//! - garbage datagrams and bad offers never harm a running call;
//! - a recorded room writes real VP8 and Opus, packetized by the `webrtc` crate,
//!   to a WebM file that ffprobe reads and ffmpeg decodes; a recording stops at
//!   its size limit with a file that plays.

mod common;

use std::cell::Cell;
use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use common::{Call, Media, Participant, eventually, payload};
use rooms::record::{RecordingEvent, RecordingSpec, StopReason, TrackKind};
use rooms::{PeerId, RoomError, Source};
use tokio::net::UdpSocket;

const NAMES: [&str; 3] = ["alice", "bob", "carol"];

fn others(me: &Participant) -> Vec<&'static str> {
    NAMES.into_iter().filter(|n| *n != me.id.0).collect()
}

/// `me` has at least `at_least` packets of both tracks of each of `from`.
fn receives(me: &Participant, from: &[&str], at_least: usize) -> bool {
    let inbox = me.inbox();
    from.iter().all(|p| {
        inbox.count(p, Media::Audio) >= at_least && inbox.count(p, Media::Video) >= at_least
    })
}

fn summary(people: &[Participant]) -> String {
    people
        .iter()
        .map(|p| format!("\n  {}: {}", p.id, p.inbox().summary()))
        .collect()
}

/// Every packet `me` got is what its publisher sent under that number, and no
/// client task failed.
fn assert_intact(me: &Participant) {
    let inbox = me.inbox();
    assert!(inbox.errors.is_empty(), "{}: {:?}", me.id, inbox.errors);
    for ((publisher, media), r) in &inbox.received {
        assert_eq!(
            r.corrupt, 0,
            "{} <- {publisher}/{media:?}: every payload is what was sent with its number",
            me.id
        );
    }
}

fn assert_in_order(me: &Participant) {
    for ((publisher, media), r) in &me.inbox().received {
        assert_eq!(
            r.out_of_order, 0,
            "{} <- {publisher}/{media:?}: numbers only go up on a loss-free link",
            me.id
        );
    }
}

/// Runs a test's body, failing it if it takes longer than a test may.
async fn within_budget(body: impl std::future::Future<Output = ()>) {
    tokio::time::timeout(Duration::from_secs(28), body)
        .await
        .expect("the test finishes within 28 s");
}

async fn close(people: Vec<Participant>) {
    for p in people {
        p.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_participants_receive_each_others_audio_and_video_intact_and_in_order() {
    within_budget(async {
        let call = Call::start(8, None).await;
        let mut people = Vec::new();
        for name in NAMES {
            people.push(call.join(name).await);
        }
        // Video numbers start just below 65535, so waiting for the wrap also waits for a
        // few hundred packets per track.
        eventually(
            "everyone gets both tracks of both others, and video wraps past 65535",
            Duration::from_secs(20),
            || {
                people.iter().all(|me| {
                    receives(me, &others(me), 50)
                        && others(me).iter().all(|p| {
                            me.inbox()
                                .received
                                .get(&(p.to_string(), Media::Video))
                                .is_some_and(|r| {
                                    r.wrapped && r.seqs.last().is_some_and(|s| *s > 50)
                                })
                        })
                })
            },
            || summary(&people),
        )
        .await;
        for me in &people {
            me.stop_sending();
        }
        for me in &people {
            let inbox = me.inbox();
            let tracks: Vec<(String, Media)> = inbox.received.keys().cloned().collect();
            let expected: Vec<(String, Media)> = others(me)
                .into_iter()
                .flat_map(|p| [(p.to_owned(), Media::Audio), (p.to_owned(), Media::Video)])
                .collect();
            assert_eq!(
                tracks, expected,
                "{} gets exactly the others' tracks",
                me.id
            );
            // Each track came in its own m-section of the subscribe connection.
            let mids: HashSet<&str> = inbox.received.values().map(|r| r.mid.as_str()).collect();
            assert_eq!(mids.len(), 4, "{}: {mids:?}", me.id);
            for ((publisher, media), r) in &inbox.received {
                eprintln!(
                    "{} <- {publisher}/{media:?} (mid {}): {} packets, {}..{}",
                    me.id,
                    r.mid,
                    r.seqs.len(),
                    r.seqs[0],
                    r.seqs[r.seqs.len() - 1]
                );
            }
            drop(inbox);
            assert_intact(me);
            assert_in_order(me);
        }
        assert!(
            call.strays().is_empty(),
            "offers for nobody: {:?}",
            call.strays()
        );
        close(people).await;
    })
    .await;
}

/// How one received track fared behind the lossy link.
#[derive(Debug)]
struct Recovery {
    /// Packets the publisher sent from the first one received until the cutoff.
    window: usize,
    /// Of those, dropped by the proxy on their first trip.
    lost_on_wire: Vec<u16>,
    /// Of those, never received.
    missing: Vec<u16>,
    /// Packets received beyond the first copy of each number.
    duplicates: usize,
    /// Datagrams the SFU sent on the track's RTX stream, dropped or not.
    rtx_sent: u32,
}

/// What `subscriber` got of `publisher`'s `media`, from its first packet until those
/// sent before `cutoff`: later ones may still be on their way or waiting for a NACK.
fn recovery(
    subscriber: &Participant,
    publisher: &Participant,
    media: Media,
    proxy: &common::Proxy,
    cutoff: Instant,
) -> Option<Recovery> {
    let (ssrc, first, got, duplicates, sdp) = {
        let inbox = subscriber.inbox();
        let r = inbox.received.get(&(publisher.id.0.clone(), media))?;
        let got = r.unique();
        (
            r.ssrc,
            *r.seqs.first()?,
            got.clone(),
            r.seqs.len() - got.len(),
            inbox.last_offer_sdp.clone(),
        )
    };
    let window: Vec<u16> = {
        let inbox = publisher.inbox();
        let sent = inbox.sent.get(&media)?;
        let start = sent.iter().position(|(seq, _)| *seq == first)?;
        sent[start..]
            .iter()
            .take_while(|(_, at)| *at < cutoff)
            .map(|(seq, _)| *seq)
            .collect()
    };
    let stats = proxy.stats();
    let dropped = stats.dropped(ssrc);
    Some(Recovery {
        window: window.len(),
        lost_on_wire: window
            .iter()
            .filter(|s| dropped.contains(s))
            .copied()
            .collect(),
        missing: window
            .iter()
            .filter(|s| !got.contains(s))
            .copied()
            .collect(),
        duplicates,
        rtx_sent: common::rtx_ssrc(&sdp, ssrc).map_or(0, |rtx| stats.sent(rtx)),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_behind_a_lossy_link_gets_every_lost_video_packet_back_by_nack() {
    within_budget(async {
    const LOSS: f64 = 0.08;
    let (front, proxy_addr) = common::Proxy::bind().await;
    let call = Call::start(8, Some(proxy_addr.port())).await;
    let proxy = common::Proxy::run(front, call.sfu.local_addr(), LOSS);
    let mut people = Vec::new();
    for name in NAMES {
        people.push(call.join(name).await);
    }
    let [alice, bob, carol] = [0, 1, 2].map(|i| &people[i]);
    eventually(
        "alice has a subscribe offer",
        Duration::from_secs(5),
        || !alice.inbox().last_offer_sdp.is_empty(),
        || summary(&people),
    )
    .await;
    let ufrag = common::ice_ufrag(&alice.inbox().last_offer_sdp)
        .expect("the offer has an ICE ufrag")
        .to_owned();
    // Only alice's subscribe connection is lossy: bob and carol are the control.
    proxy.make_lossy(&ufrag);

    let publishers = [bob, carol];
    let status = |cutoff: Instant| -> BTreeMap<(String, Media), Recovery> {
        publishers
            .iter()
            .flat_map(|p| [Media::Audio, Media::Video].map(|m| (p, m)))
            .filter_map(|(p, m)| {
                Some(((p.id.0.clone(), m), recovery(alice, p, m, &proxy, cutoff)?))
            })
            .collect()
    };
    // The cutoff of the look that succeeded, so that the figures below are those.
    let cutoff = Cell::new(Instant::now());
    eventually(
        "60 of alice's video packets were lost on the wire, and every video packet \
         sent more than a second ago has reached her",
        Duration::from_secs(15),
        || {
            cutoff.set(Instant::now() - Duration::from_secs(1));
            let status = status(cutoff.get());
            let video: Vec<&Recovery> = status
                .iter()
                .filter(|((_, m), _)| *m == Media::Video)
                .map(|(_, r)| r)
                .collect();
            video.len() == 2
                && video.iter().map(|r| r.lost_on_wire.len()).sum::<usize>() >= 60
                && video.iter().all(|r| r.missing.is_empty())
        },
        || {
            format!(
                "{:#?}{}",
                status(Instant::now() - Duration::from_secs(1)),
                summary(&people)
            )
        },
    )
    .await;
    for p in &people {
        p.stop_sending();
    }
    let status = status(cutoff.get());
    let (nacks, rtcp) = {
        let stats = proxy.stats();
        (stats.nacks_up, stats.rtcp_up)
    };
    eprintln!("alice's RTCP to the SFU: {rtcp} datagrams, {nacks} of them NACKs");
    for ((publisher, media), r) in &status {
        eprintln!(
            "alice <- {publisher}/{media:?}: {} sent, {} lost on the wire, {} RTX datagrams \
             from the SFU, {} duplicates received, {} finally missing {:?}",
            r.window,
            r.lost_on_wire.len(),
            r.rtx_sent,
            r.duplicates,
            r.missing.len(),
            r.missing
        );
    }

    for ((publisher, media), r) in &status {
        match media {
            Media::Video => {
                assert!(
                    r.missing.is_empty(),
                    "alice <- {publisher}/video: everything sent before the last second arrives"
                );
                assert!(
                    r.rtx_sent as usize >= r.lost_on_wire.len(),
                    "alice <- {publisher}/video: each loss was answered on the RTX stream: {r:?}"
                );
            }
            // Opus negotiates no NACK (neither the SFU nor browsers offer it), so what the
            // proxy drops stays lost, and nothing else is: the loss is all the proxy's.
            Media::Audio => {
                assert_eq!(
                    r.missing, r.lost_on_wire,
                    "alice <- {publisher}/audio: exactly the proxy's drops are missing"
                );
                assert_eq!(r.rtx_sent, 0, "alice <- {publisher}/audio: no RTX for Opus");
            }
        }
    }
    assert!(nacks > 0, "alice's client sent NACKs through the proxy");
    assert_intact(alice);
    for control in [bob, carol] {
        assert!(
            receives(control, &others(control), 50),
            "{}",
            summary(&people)
        );
        assert_intact(control);
        assert_in_order(control);
    }
    close(people).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_who_leaves_stops_reaching_the_others_and_leaves_their_offers() {
    within_budget(async {
        let call = Call::start(8, None).await;
        let mut people = Vec::new();
        for name in NAMES {
            people.push(call.join(name).await);
        }
        eventually(
            "everyone gets both tracks of both others",
            Duration::from_secs(10),
            || people.iter().all(|me| receives(me, &others(me), 20)),
            || summary(&people),
        )
        .await;
        let [alice, bob, carol] = [0, 1, 2].map(|i| &people[i]);
        let stayers = [alice, bob];
        let offers_before: Vec<usize> = stayers.iter().map(|p| p.inbox().offers.len()).collect();

        call.sfu.leave(&call.room, &carol.id);

        eventually(
            "alice and bob each get a new offer",
            Duration::from_secs(5),
            || {
                stayers
                    .iter()
                    .zip(&offers_before)
                    .all(|(p, n)| p.inbox().offers.len() > *n)
            },
            || summary(&people),
        )
        .await;
        for (me, n) in stayers.iter().zip(&offers_before) {
            let next = me.inbox().offers[*n].clone();
            assert!(
                next.iter().all(|t| t.peer != carol.id),
                "{}'s next offer no longer lists carol: {next:?}",
                me.id
            );
            let other = stayers.iter().find(|p| p.id != me.id).expect("the other");
            let mut theirs: Vec<Source> = next
                .iter()
                .filter(|t| t.peer == other.id)
                .map(|t| t.source)
                .collect();
            theirs.sort_by_key(|s| s.as_str());
            assert_eq!(
                theirs,
                [Source::Camera, Source::Microphone],
                "{}'s next offer still lists {}'s tracks",
                me.id,
                other.id
            );
        }

        // Packets the SFU forwarded just before the leave may still be in flight; after
        // a few dozen more of the stayers' packets nothing of carol's can be.
        let video_between =
            |a: &Participant, b: &Participant| a.inbox().count(&b.id.0, Media::Video);
        let grown = |by: usize| {
            let start = [video_between(alice, bob), video_between(bob, alice)];
            move || {
                video_between(alice, bob) >= start[0] + by
                    && video_between(bob, alice) >= start[1] + by
            }
        };
        eventually(
            "alice and bob get 30 more of each other's video",
            Duration::from_secs(5),
            grown(30),
            || summary(&people),
        )
        .await;
        let carol_counts = || -> Vec<usize> {
            let mut counts = Vec::new();
            for me in [alice, bob] {
                counts.push(me.inbox().count("carol", Media::Audio));
                counts.push(me.inbox().count("carol", Media::Video));
            }
            for from in ["alice", "bob"] {
                counts.push(carol.inbox().count(from, Media::Audio));
                counts.push(carol.inbox().count(from, Media::Video));
            }
            counts
        };
        let settled = carol_counts();
        eventually(
            "alice and bob get 100 more of each other's video (a second of it)",
            Duration::from_secs(5),
            grown(100),
            || summary(&people),
        )
        .await;
        assert_eq!(
            carol_counts(),
            settled,
            "carol's media no longer reaches alice and bob, nor theirs her"
        );
        for me in [alice, bob] {
            assert_intact(me);
            assert_in_order(me);
        }
        close(people).await;
    })
    .await;
}

/// Deterministic bytes for garbage datagrams.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A syntactically valid offer whose only codec is PCMU, which the SFU does not forward.
const PCMU_ONLY_OFFER: &str = "v=0\r\n\
o=- 4611731400430051336 2 IN IP4 127.0.0.1\r\n\
s=-\r\n\
t=0 0\r\n\
a=group:BUNDLE 0\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 0\r\n\
c=IN IP4 0.0.0.0\r\n\
a=rtcp-mux\r\n\
a=ice-ufrag:abcd\r\n\
a=ice-pwd:abcdefghijklmnopqrstuvwx\r\n\
a=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF\r\n\
a=setup:actpass\r\n\
a=mid:0\r\n\
a=sendonly\r\n\
a=rtpmap:0 PCMU/8000\r\n";

/// An Opus offer with neither ICE credentials nor a DTLS fingerprint: it passes the
/// codec check, so the SFU gets as far as applying it to a new connection.
const OPUS_WITHOUT_TRANSPORT: &str = "v=0\r\n\
o=- 4611731400430051337 2 IN IP4 127.0.0.1\r\n\
s=-\r\n\
t=0 0\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
c=IN IP4 0.0.0.0\r\n\
a=mid:0\r\n\
a=sendonly\r\n\
a=rtpmap:111 opus/48000/2\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_datagrams_and_bad_offers_never_harm_a_running_call() {
    within_budget(async {
        // Room for three: a refused offer that left someone half-joined would keep carol out.
        let call = Call::start(3, None).await;
        let mut people = vec![call.join("alice").await, call.join("bob").await];
        eventually(
            "alice and bob get each other's tracks",
            Duration::from_secs(10),
            || receives(&people[0], &["bob"], 20) && receives(&people[1], &["alice"], 20),
            || summary(&people),
        )
        .await;
        let (alice, bob) = (&people[0], &people[1]);
        let alice_publish = common::ice_ufrag(&alice.publish_answer)
            .expect("ufrag")
            .to_owned();
        let bob_subscribe = common::ice_ufrag(&bob.inbox().last_offer_sdp)
            .expect("ufrag")
            .to_owned();
        let sfu_addr = call.sfu.local_addr();
        let (unroutable_before, overflow_before) = call.sfu.dropped();

        // From an address the SFU has never seen, none of this names a live connection.
        let mut unroutable: Vec<Vec<u8>> = vec![Vec::new()];
        for (i, len) in [1, 2, 7, 19, 20, 21, 100, 1200, 2047, 2048, 3000]
            .into_iter()
            .enumerate()
        {
            unroutable.push(noise(i as u64 + 1, len));
        }
        let real_looking = common::stun_request(&format!("{alice_publish}:evil"), &[]);
        unroutable.push(real_looking[..10].to_vec());
        unroutable.push(real_looking[..20].to_vec());
        let mut lying_length = real_looking.clone();
        lying_length[3] = 0xff;
        unroutable.push(lying_length);
        let mut lying_attribute = real_looking.clone();
        lying_attribute[23] = 0xff;
        unroutable.push(lying_attribute);
        let mut response = real_looking.clone();
        response[0..2].copy_from_slice(&[0x01, 0x01]);
        unroutable.push(response);
        unroutable.push(common::stun_request("nobody:evil", &[]));
        unroutable.push(common::stun_request("", &[]));
        unroutable.push(common::stun_request(&format!(":{alice_publish}"), &[]));
        unroutable.push(common::stun_request(
            &format!("{}:evil", alice_publish.to_uppercase()),
            &[],
        ));
        let mut rtp = vec![0x80, 96, 0, 1, 0, 0, 0, 1];
        rtp.extend_from_slice(&0x1234_5678u32.to_be_bytes());
        rtp.extend_from_slice(&payload("alice", Media::Video, 1));
        unroutable.push(rtp.clone());
        unroutable.push([&[0x80, 200, 0, 6][..], &noise(99, 24)].concat());
        unroutable.push([&[22, 0xfe, 0xfd][..], &noise(98, 100)].concat());

        let junk = UdpSocket::bind((common::LOCALHOST, 0)).await.expect("bind");
        for datagram in &unroutable {
            junk.send_to(datagram, sfu_addr).await.expect("send");
        }
        let expected = unroutable.len() as u64;
        eventually(
            "the SFU counts every garbage datagram as unroutable",
            Duration::from_secs(5),
            || call.sfu.dropped().0 - unroutable_before >= expected,
            || {
                format!(
                    "{:?} of {expected}",
                    call.sfu.dropped().0 - unroutable_before
                )
            },
        )
        .await;

        // Binding requests naming real connections, without a valid MESSAGE-INTEGRITY,
        // also when they try to nominate the sender's address (USE-CANDIDATE): the port
        // refuses them, so the impostor's address is never routed, and its media and
        // DTLS are as unroutable as the rest.
        let impostor = UdpSocket::bind((common::LOCALHOST, 0)).await.expect("bind");
        let mut impostor_sent = 0;
        for ufrag in [&alice_publish, &bob_subscribe] {
            let username = format!("{ufrag}:evil");
            let requests = [
                common::stun_request(&username, &[]),
                common::stun_request(&username, &[(0x0024, &[0, 0, 0, 1]), (0x0025, &[])]),
                common::stun_request(
                    &username,
                    &[(0x0024, &[0, 0, 0, 1]), (0x0025, &[]), (0x0008, &[0; 20])],
                ),
            ];
            let others = [
                rtp.clone(),
                [&[22, 0xfe, 0xfd][..], &noise(97, 100)].concat(),
                noise(96, 300),
            ];
            for datagram in requests.iter().chain(&others) {
                impostor.send_to(datagram, sfu_addr).await.expect("send");
                impostor_sent += 1;
            }
        }

        let counts = |me: &Participant, from: &str| me.inbox().count(from, Media::Video);
        let before = [counts(alice, "bob"), counts(bob, "alice")];
        eventually(
            "alice and bob get 100 more of each other's video",
            Duration::from_secs(5),
            || counts(alice, "bob") >= before[0] + 100 && counts(bob, "alice") >= before[1] + 100,
            || summary(&people),
        )
        .await;
        let mut answers = Vec::new();
        let mut buf = [0u8; 2048];
        while let Ok(Ok((n, _))) =
            tokio::time::timeout(Duration::from_millis(1), impostor.recv_from(&mut buf)).await
        {
            answers.push(buf[..n].to_vec());
        }
        // No answer at all: requests that fail their integrity check never reach a
        // connection, and a nomination by one would have turned bob's media to the
        // impostor.
        assert!(
            answers.is_empty(),
            "the impostor gets nothing back, got {:?}",
            answers
                .iter()
                .map(|a| &a[..a.len().min(4)])
                .collect::<Vec<_>>()
        );
        let (unroutable_after, overflow_after) = call.sfu.dropped();
        assert_eq!(
            unroutable_after - unroutable_before,
            expected + impostor_sent,
            "exactly the garbage and the impostor's datagrams are counted unroutable"
        );
        assert_eq!(overflow_after, overflow_before, "no room queue overflowed");

        let mallory = PeerId("mallory".to_owned());
        let refusals = [
            (&mallory, "this is not SDP".to_owned()),
            (&mallory, PCMU_ONLY_OFFER.to_owned()),
            (&mallory, OPUS_WITHOUT_TRANSPORT.to_owned()),
            (&alice.id, "v=0\r\no=garbage\r\n".to_owned()),
        ];
        for (who, sdp) in refusals {
            let refused = call
                .sfu
                .publish(&call.room, who, sdp.clone(), Default::default())
                .await;
            eprintln!(
                "{who} offering {:?}...: {refused:?}",
                &sdp[..sdp.len().min(20)]
            );
            match refused {
                Err(RoomError::InvalidSdp(_)) if sdp != PCMU_ONLY_OFFER => {}
                Err(RoomError::NoUsableCodecs) if sdp == PCMU_ONLY_OFFER => {}
                other => panic!("{who}'s offer {sdp:?} is refused as it should be, not {other:?}"),
            }
        }

        // The room is still whole: a third participant fits and everybody hears everybody.
        people.push(call.join("carol").await);
        eventually(
            "all three get both tracks of both others",
            Duration::from_secs(10),
            || people.iter().all(|me| receives(me, &others(me), 20)),
            || summary(&people),
        )
        .await;
        for me in &people {
            assert_intact(me);
            assert_in_order(me);
        }
        assert_eq!(
            call.strays(),
            Vec::<PeerId>::new(),
            "nobody refused got an offer"
        );
        close(people).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_room_writes_a_webm_of_each_publishers_audio_and_video_from_when_they_joined() {
    within_budget(async {
        let media = common::encoded_media(3);
        let call = Call::start(8, None).await;
        let dir = std::env::temp_dir().join(format!("huddle-udp-rec-{}", std::process::id()));
        let path = dir.join("room-1/rec-1.webm");
        let spec = RecordingSpec {
            id: "rec-1".into(),
            path: path.clone(),
            max_bytes: 64 << 20,
            max_duration: Duration::from_secs(60),
        };
        call.sfu.start_recording(&call.room, spec).await.unwrap();
        let started = Instant::now();
        let mut alice = call.publish_media("alice", &media).await;
        tokio::time::sleep_until((started + Duration::from_secs(1)).into()).await;
        let mut bob = call.publish_media("bob", &media).await;
        // His publish connection is up: he sends from now.
        let bob_sends = started.elapsed();
        alice.sent().await;
        bob.sent().await;
        // What is still on its way is recorded, not cut off by the stop.
        tokio::time::sleep(Duration::from_millis(300)).await;
        call.sfu.stop_recording(&call.room, "rec-1");
        alice.close().await;
        bob.close().await;
        eventually(
            "the recording is written",
            Duration::from_secs(10),
            || call.recording("rec-1").len() == 2,
            || format!("{:?}", call.recording("rec-1")),
        )
        .await;
        let events = call.recording("rec-1");
        let (probe, errors) = common::probe(&path);
        let _ = std::fs::remove_dir_all(&dir);

        assert_eq!(
            events[0],
            RecordingEvent::Stopped {
                reason: StopReason::Asked
            }
        );
        let RecordingEvent::Completed(result) = &events[1] else {
            panic!("{events:?}")
        };
        assert_eq!(result.dropped_frames, 0);
        let track = |peer: &str, kind: TrackKind| {
            result
                .tracks
                .iter()
                .find(|t| t.peer.0 == peer && t.kind == kind)
                .unwrap_or_else(|| panic!("{peer}'s {kind:?} in {:?}", result.tracks))
        };
        assert_eq!(result.tracks.len(), 4, "{:?}", result.tracks);
        for peer in ["alice", "bob"] {
            let (audio, video) = (track(peer, TrackKind::Audio), track(peer, TrackKind::Video));
            // Every frame, on a loss-free link: the first is a keyframe.
            assert_eq!(
                video.frames,
                media.video.len() as u64,
                "{peer}'s video frames"
            );
            assert_eq!(
                audio.frames,
                media.audio.len() as u64,
                "{peer}'s audio frames"
            );
            // Each track lasts what was sent, and audio and video start together.
            for t in [audio, video] {
                let lasted = (t.end - t.start).as_secs_f64();
                assert!(
                    (lasted - 2.97).abs() < 0.05,
                    "{peer}'s {:?} lasted {lasted}",
                    t.kind
                );
            }
            assert!(
                audio.start.abs_diff(video.start) < Duration::from_millis(50),
                "{peer}: {audio:?} {video:?}"
            );
        }
        // Bob's tracks begin where he joined, after alice's.
        let (alice_start, bob_start) = (
            track("alice", TrackKind::Audio).start,
            track("bob", TrackKind::Audio).start,
        );
        assert!(
            alice_start < Duration::from_millis(500),
            "alice from {alice_start:?}"
        );
        assert!(
            bob_start >= Duration::from_secs(1)
                && bob_start <= bob_sends + Duration::from_millis(100),
            "bob sends from {bob_sends:?}, recorded from {bob_start:?}"
        );

        assert_eq!(errors, "", "ffmpeg decodes the file without errors");
        let streams: Vec<(&str, &str)> = probe["streams"]
            .as_array()
            .expect("streams")
            .iter()
            .map(|s| {
                (
                    s["codec_type"].as_str().unwrap(),
                    s["codec_name"].as_str().unwrap(),
                )
            })
            .collect();
        let mut sorted = streams.clone();
        sorted.sort();
        assert_eq!(
            sorted,
            [
                ("audio", "opus"),
                ("audio", "opus"),
                ("video", "vp8"),
                ("video", "vp8")
            ],
            "{streams:?}"
        );
        let duration: f64 = probe["format"]["duration"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let expected = result.duration.as_secs_f64();
        assert!(
            (duration - expected).abs() < 0.1,
            "{duration} s, {expected} s recorded"
        );
        assert!(
            expected > 3.9,
            "from alice's start to bob's end: {expected} s"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recording_that_reaches_its_size_limit_stops_with_limit_and_its_file_plays() {
    within_budget(async {
        let media = common::encoded_media(3);
        let call = Call::start(8, None).await;
        let dir = std::env::temp_dir().join(format!("huddle-udp-limit-{}", std::process::id()));
        let path = dir.join("room-1/rec-1.webm");
        // About a second and a half of the test media.
        let spec = RecordingSpec {
            id: "rec-1".into(),
            path: path.clone(),
            max_bytes: 60_000,
            max_duration: Duration::from_secs(60),
        };
        call.sfu.start_recording(&call.room, spec).await.unwrap();
        let mut alice = call.publish_media("alice", &media).await;
        eventually(
            "the writer stops the recording at its limit, and the file is written",
            Duration::from_secs(10),
            || call.recording("rec-1").len() == 2,
            || format!("{:?}", call.recording("rec-1")),
        )
        .await;
        alice.sent().await;
        alice.close().await;
        let events = call.recording("rec-1");
        let (probe, errors) = common::probe(&path);
        let _ = std::fs::remove_dir_all(&dir);

        assert_eq!(
            events[0],
            RecordingEvent::Stopped {
                reason: StopReason::Limit
            }
        );
        let RecordingEvent::Completed(result) = &events[1] else {
            panic!("{events:?}")
        };
        let seconds = result.duration.as_secs_f64();
        assert!((0.5..2.8).contains(&seconds), "stopped after {seconds} s");
        assert!(result.size < 70_000, "{} bytes", result.size);
        assert_eq!(errors, "", "ffmpeg decodes the file without errors");
        assert_eq!(probe["streams"].as_array().map(Vec::len), Some(2));
        // A second recording may start now.
        let again = RecordingSpec {
            id: "rec-2".into(),
            path: dir.join("room-1/rec-2.webm"),
            max_bytes: 60_000,
            max_duration: Duration::from_secs(60),
        };
        assert_eq!(call.sfu.start_recording(&call.room, again).await, Ok(()));
        call.sfu.stop_recording(&call.room, "rec-2");
        eventually(
            "the empty second recording fails",
            Duration::from_secs(5),
            || call.recording("rec-2").len() == 2,
            || format!("{:?}", call.recording("rec-2")),
        )
        .await;
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(
            call.recording("rec-2")[1],
            RecordingEvent::Failed {
                error: "no media was recorded".into()
            }
        );
    })
    .await;
}
