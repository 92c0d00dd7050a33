//! How the server's peer connections are made: codecs, RTCP feedback, ICE-lite,
//! DTLS-SRTP profiles, and the one host candidate every connection announces.

use std::net::SocketAddr;
use std::time::Instant;

use rtc::dtls::cipher_suite::CipherSuiteId;
use rtc::dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use rtc::ice::candidate::unmarshal_candidate;
use rtc::interceptor::{
    NackGeneratorBuilder, NackResponderBuilder, ReceiverReportBuilder, Registry,
    SenderReportBuilder, Slot, TwccReceiverBuilder,
};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_VP8, MIME_TYPE_VP9, MediaEngine,
};
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::transport::{
    CandidateConfig, CandidateHostConfig, RTCIceCandidate, RTCIceCandidateInit,
};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::sdp::extmap::ExtMap;
use rtc::sdp::{MediaDescription, SessionDescription};

use crate::feedback::KeyframeRequests;
use crate::room::RoomError;

/// Codecs the SFU forwards. Anything else in an offer is refused by the answer.
/// How many times the server asks a publisher for one lost packet.
const MAX_NACKS_PER_PACKET: u16 = 5;

const FORWARDED: [&str; 4] = [MIME_TYPE_OPUS, MIME_TYPE_VP8, MIME_TYPE_VP9, MIME_TYPE_H264];

/// Which way a server-side connection carries media.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    /// A participant's publish connection: media comes in.
    Publish,
    /// A participant's subscribe connection: media goes out.
    Subscribe,
}

/// A new server-side peer connection announcing `local` as its only candidate, with
/// ICE credentials `ufrag` and `pwd`.
///
/// Each direction gets only the interceptors it uses, since every forwarded packet
/// walks the subscribe connection's whole chain: a publish connection detects loss
/// (NACKs, with a retry bound), reports reception (receiver reports, transport-wide
/// feedback); a subscribe connection answers NACKs from its history, sends sender
/// reports (lip sync, round trips), and passes keyframe requests to the room. The
/// SDP offers the same feedback either way (the media engine's registrations).
pub(crate) fn peer_connection(
    now: Instant,
    local: SocketAddr,
    ufrag: &str,
    pwd: &str,
    direction: Direction,
) -> Result<RTCPeerConnection, RoomError> {
    let mut media = MediaEngine::default();
    media.register_default_codecs().map_err(internal)?;
    // For the media engine's feedback and header extensions; the chain is ours.
    register_default_interceptors(Registry::new(), &mut media).map_err(internal)?;
    let interceptors = match direction {
        Direction::Publish => Registry::new()
            // The default asks again for every missing packet every 100 ms without
            // end: a stall then floods the server with retransmissions it cannot absorb.
            .with(
                Slot::NackGenerator,
                NackGeneratorBuilder::new()
                    .with_max_nacks_per_packet(MAX_NACKS_PER_PACKET)
                    .build(),
            )
            .with(Slot::ReceiverReport, ReceiverReportBuilder::new().build())
            .with(Slot::TwccReceiver, TwccReceiverBuilder::new().build()),
        Direction::Subscribe => Registry::new()
            .with(Slot::NackResponder, NackResponderBuilder::new().build())
            .with(Slot::SenderReport, SenderReportBuilder::new().build())
            // Application-most: subscribers' keyframe requests must reach the room.
            .with(Slot::Custom(100_000), KeyframeRequests::default()),
    };
    let settings = SettingEngineBuilder::new()
        .with_lite(true)
        // Our own credentials, so the UDP port can route the first STUN request by
        // its username and check its integrity with the password.
        .with_ice_credentials(ufrag.to_owned(), pwd.to_owned())
        // GCM first: cheaper per packet and authenticated encryption in one pass.
        .with_srtp_protection_profiles(vec![
            SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm,
            SrtpProtectionProfile::Srtp_Aead_Aes_256_Gcm,
            SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80,
        ])
        // The generated certificate is ECDSA: offering RSA suites could stall a handshake.
        .with_dtls_cipher_suites(vec![
            CipherSuiteId::Tls_Ecdhe_Ecdsa_With_Aes_128_Gcm_Sha256,
            CipherSuiteId::Tls_Ecdhe_Ecdsa_With_Aes_256_Cbc_Sha,
        ])
        .build();
    let mut pc = RTCPeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_media_engine(media)
        .with_setting_engine(settings)
        .with_interceptor_registry(interceptors)
        .build(now)
        .map_err(internal)?;
    pc.add_local_candidate(host_candidate(local)?)
        .map_err(internal)?;
    Ok(pc)
}

/// The ICE host candidate of a UDP socket at `addr`, for `add_local_candidate`.
pub fn host_candidate(addr: SocketAddr) -> Result<RTCIceCandidateInit, RoomError> {
    let candidate = CandidateHostConfig {
        base_config: CandidateConfig {
            network: "udp".to_owned(),
            address: addr.ip().to_string(),
            port: addr.port(),
            component: 1,
            ..Default::default()
        },
        ..Default::default()
    }
    .new_candidate_host()
    .map_err(internal)?;
    RTCIceCandidate::from(&candidate)
        .to_json()
        .map_err(internal)
}

/// A local track of `kind` in stream `stream_id`, sent as one RTP stream with `ssrc`
/// and `codec`.
pub fn single_stream_track(
    stream_id: String,
    track_id: String,
    kind: RtpCodecKind,
    ssrc: u32,
    codec: RTCRtpCodec,
) -> MediaStreamTrack {
    MediaStreamTrack::new(
        stream_id,
        track_id.clone(),
        track_id,
        kind,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec,
            ..Default::default()
        }],
    )
}

/// Checks an offer before it touches a connection: it must parse, carry the ICE
/// credentials and DTLS fingerprint a session needs, and have at least one audio or
/// video section with a codec the SFU forwards. What `rtc` would only find out half
/// way through applying it is refused here, with a clear reason.
pub(crate) fn check_offer(sdp: String) -> Result<RTCSessionDescription, RoomError> {
    let offer =
        RTCSessionDescription::offer(sdp).map_err(|e| RoomError::InvalidSdp(e.to_string()))?;
    let parsed = offer
        .unmarshal()
        .map_err(|e| RoomError::InvalidSdp(e.to_string()))?;
    let usable = parsed.media_descriptions.iter().any(|m| {
        m.attributes.iter().any(|a| {
            a.key == "rtpmap"
                && a.value.as_deref().is_some_and(|v| {
                    v.split_whitespace().nth(1).is_some_and(|codec| {
                        let name = codec.split('/').next().unwrap_or_default();
                        FORWARDED.iter().any(|mime| {
                            mime.rsplit('/')
                                .next()
                                .is_some_and(|n| n.eq_ignore_ascii_case(name))
                        })
                    })
                })
        })
    });
    if !usable {
        return Err(RoomError::NoUsableCodecs);
    }
    for attribute in ["ice-ufrag", "ice-pwd", "fingerprint"] {
        let present = parsed.attribute(attribute).is_some()
            || parsed
                .media_descriptions
                .iter()
                .any(|m| m.attribute(attribute).flatten().is_some());
        if !present {
            return Err(RoomError::InvalidSdp(format!(
                "the offer has no {attribute}"
            )));
        }
    }
    Ok(offer)
}

/// `sdp` (a description the server made) with its ICE candidates and
/// `a=end-of-candidates` in every m-section that is not rejected. `rtc` writes the
/// candidates into the first section only, which is all BUNDLE needs, but stacks that
/// gather remote candidates per section (aiortc, its issue #1437) then have none for
/// the others and never connect. The server gathers nothing (ICE-lite, one host
/// candidate), so every description it makes is complete: `end-of-candidates` tells
/// the client to stop waiting for more.
pub(crate) fn candidates_in_every_section(sdp: &str) -> String {
    const END: &str = "a=end-of-candidates";
    let mut sections: Vec<Vec<&str>> = vec![Vec::new()];
    for line in sdp.split_inclusive('\n') {
        if line.starts_with("m=") {
            sections.push(Vec::new());
        }
        if let Some(section) = sections.last_mut() {
            section.push(line);
        }
    }
    let is_candidate = |line: &&str| line.starts_with("a=candidate:");
    let candidates: Vec<&str> = sections
        .iter()
        .skip(1)
        .map(|s| s.iter().copied().filter(is_candidate).collect::<Vec<_>>())
        .find(|c| !c.is_empty())
        .unwrap_or_default();
    if candidates.is_empty() {
        return sdp.to_owned();
    }
    let mut out = String::with_capacity(sdp.len() + sections.len() * 160);
    let push_line = |out: &mut String, line: &str| {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push_str("\r\n");
        }
        out.push_str(line);
        if !line.ends_with('\n') {
            out.push_str("\r\n");
        }
    };
    for (i, section) in sections.iter().enumerate() {
        for line in section {
            out.push_str(line);
        }
        // A rejected section (port 0) carries no transport at all.
        let rejected = section
            .first()
            .and_then(|m| m.split_whitespace().nth(1))
            .is_some_and(|port| port == "0");
        if i == 0 || rejected {
            continue;
        }
        if !section.iter().any(is_candidate) {
            for line in &candidates {
                push_line(&mut out, line);
            }
        }
        if !section.iter().any(|l| l.trim_end() == END) {
            push_line(&mut out, END);
        }
    }
    out
}

/// Checks a client's answer to `offer` (the server's, as it was sent) before it
/// touches the connection. `rtc` moves a connection to stable as soon as an answer
/// parses and only then checks the rest: an answer it refuses there is half applied,
/// and on the connection's first negotiation its transports never start. So what
/// `rtc` would refuse later is refused here, with its reason: the m-sections must be
/// the offer's (same count, kinds and mids, in order), the ICE credentials and DTLS
/// fingerprint present and the same in every section, and the candidates, payload
/// types and header extensions readable.
pub(crate) fn check_answer(sdp: String, offer: &str) -> Result<RTCSessionDescription, RoomError> {
    let answer = RTCSessionDescription::answer(sdp).map_err(invalid)?;
    let parsed = answer.unmarshal().map_err(invalid)?;
    let offered = RTCSessionDescription::offer(offer.to_owned())
        .and_then(|offer| offer.unmarshal())
        .map_err(internal)?;
    let (sections, offered) = (&parsed.media_descriptions, &offered.media_descriptions);
    if sections.len() != offered.len() {
        return Err(RoomError::InvalidSdp(format!(
            "the answer has {} m-sections for the offer's {}",
            sections.len(),
            offered.len()
        )));
    }
    for (i, (m, o)) in sections.iter().zip(offered).enumerate() {
        let (kind, mid) = (&m.media_name.media, m.attribute("mid").flatten());
        let (offered_kind, offered_mid) = (&o.media_name.media, o.attribute("mid").flatten());
        if kind != offered_kind || mid != offered_mid {
            return Err(RoomError::InvalidSdp(format!(
                "m-section {i} is {kind} with mid {mid:?}; the offer's is {offered_kind} with mid {offered_mid:?}"
            )));
        }
    }
    check_ice(&parsed)?;
    check_fingerprint(&parsed)?;
    // `rtc` reads no codecs from a data channel's section.
    let datachannel = |m: &&MediaDescription| {
        m.media_name.media == "application" && m.media_name.formats == ["webrtc-datachannel"]
    };
    for m in sections.iter().filter(|m| !datachannel(m)) {
        check_formats(m)?;
    }
    Ok(answer)
}

/// The answer's ICE credentials as `rtc` reads them: the session's, else the first
/// section's, and no active section naming others; every candidate readable.
fn check_ice(sdp: &SessionDescription) -> Result<(), RoomError> {
    for key in ["ice-ufrag", "ice-pwd"] {
        let mut expected = sdp.attribute(key).map(String::as_str);
        let mut any = expected.is_some();
        for m in &sdp.media_descriptions {
            let value = m.attribute(key).flatten();
            any |= value.is_some();
            // `rtc` keeps an inactive section's credentials as a fallback only.
            if m.attribute("inactive").is_some() {
                continue;
            }
            expected = expected.or(value);
            if value.is_some() && value != expected {
                return Err(RoomError::InvalidSdp(format!(
                    "the answer's sections have different {key}s"
                )));
            }
        }
        if !any {
            return Err(RoomError::InvalidSdp(format!("the answer has no {key}")));
        }
    }
    let candidates = sdp
        .media_descriptions
        .iter()
        .filter(|m| m.attribute("inactive").is_none())
        .flat_map(|m| &m.attributes)
        .filter(|a| a.is_ice_candidate())
        .filter_map(|a| a.value.as_deref());
    for candidate in candidates {
        unmarshal_candidate(candidate)
            .map_err(|e| RoomError::InvalidSdp(format!("a candidate: {e}")))?;
    }
    Ok(())
}

/// The answer's DTLS fingerprint as `rtc` reads it: one `hash value`, the same
/// wherever it is given.
fn check_fingerprint(sdp: &SessionDescription) -> Result<(), RoomError> {
    let mut fingerprints = sdp
        .attribute("fingerprint")
        .map(String::as_str)
        .into_iter()
        .chain(
            sdp.media_descriptions
                .iter()
                .filter_map(|m| m.attribute("fingerprint").flatten()),
        );
    let Some(first) = fingerprints.next() else {
        return Err(RoomError::InvalidSdp(
            "the answer has no fingerprint".into(),
        ));
    };
    if fingerprints.any(|f| f != first) {
        return Err(RoomError::InvalidSdp(
            "the answer's sections have different fingerprints".into(),
        ));
    }
    if first.split(' ').count() != 2 {
        return Err(RoomError::InvalidSdp(format!(
            "the fingerprint {first:?} is not a hash and a value"
        )));
    }
    Ok(())
}

/// An m-section's payload types each name a codec (its `rtpmap`, or a static one)
/// and its header extensions parse, as `rtc` requires of every answer it applies.
fn check_formats(m: &MediaDescription) -> Result<(), RoomError> {
    let alone = SessionDescription {
        media_descriptions: vec![m.clone()],
        ..Default::default()
    };
    for format in &m.media_name.formats {
        let known = format
            .parse::<u8>()
            .is_ok_and(|pt| pt == 0 || alone.get_codec_for_payload_type(pt).is_ok());
        if !known {
            return Err(RoomError::InvalidSdp(format!(
                "payload type {format:?} of m-section {} has no codec",
                m.media_name.media
            )));
        }
    }
    for extmap in m.attributes.iter().filter(|a| a.key == "extmap") {
        ExtMap::unmarshal(&mut extmap.to_string().as_bytes())
            .map_err(|e| RoomError::InvalidSdp(format!("a header extension: {e}")))?;
    }
    Ok(())
}

fn invalid(e: impl std::fmt::Display) -> RoomError {
    RoomError::InvalidSdp(e.to_string())
}

fn internal(e: impl std::fmt::Display) -> RoomError {
    RoomError::Internal(e.to_string())
}
