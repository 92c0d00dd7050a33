//! Just enough STUN to route a datagram from an unknown address: is it a binding
//! request, which of our username fragments does it name, and does its
//! MESSAGE-INTEGRITY prove that the sender knows that connection's ICE password?
//! Everything else about STUN (fingerprint, roles, the response) is the peer
//! connection's business.

use hmac::{Hmac, Mac};
use sha1::Sha1;

const BINDING_REQUEST: u16 = 0x0001;
const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
const USERNAME: u16 = 0x0006;
const MESSAGE_INTEGRITY: u16 = 0x0008;
const HEADER: usize = 20;
/// An attribute's type and length.
const ATTRIBUTE_HEADER: usize = 4;
/// An HMAC-SHA1.
const INTEGRITY_LEN: usize = 20;

/// The server's username fragment from a STUN binding request (`USERNAME` is
/// `<server ufrag>:<client ufrag>`), or `None` if `datagram` is anything else.
pub(crate) fn request_ufrag(datagram: &[u8]) -> Option<&str> {
    let (_, _, username) = attributes(datagram)?.find(|(kind, _, _)| *kind == USERNAME)?;
    std::str::from_utf8(username).ok()?.split(':').next()
}

/// Whether binding request `datagram` carries a MESSAGE-INTEGRITY made with `key`
/// (the short-term credential: the ICE password of the connection it names). The
/// HMAC-SHA1 covers the message up to the attribute, with the header's length
/// field counting up to the end of the attribute (RFC 8489, section 14.5).
pub(crate) fn verify_integrity(datagram: &[u8], key: &[u8]) -> bool {
    let Some((_, at, value)) = attributes(datagram)
        .and_then(|mut attributes| attributes.find(|(kind, _, _)| *kind == MESSAGE_INTEGRITY))
    else {
        return false;
    };
    let (Ok(tag), Some(covered)) = (<[u8; INTEGRITY_LEN]>::try_from(value), datagram.get(..at))
    else {
        return false;
    };
    let Ok(length) = u16::try_from(at + ATTRIBUTE_HEADER + INTEGRITY_LEN - HEADER) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(key) else {
        return false;
    };
    mac.update(&covered[..2]);
    mac.update(&length.to_be_bytes());
    mac.update(&covered[4..]);
    mac.verify_slice(&tag).is_ok()
}

/// The attributes of binding request `datagram` as (type, offset of the attribute
/// in the datagram, value), up to the first that does not fit; `None` if it is not
/// a binding request.
fn attributes(datagram: &[u8]) -> Option<impl Iterator<Item = (u16, usize, &[u8])>> {
    if datagram.len() < HEADER
        || u16::from_be_bytes([datagram[0], datagram[1]]) != BINDING_REQUEST
        || datagram[4..8] != MAGIC_COOKIE
    {
        return None;
    }
    let length = usize::from(u16::from_be_bytes([datagram[2], datagram[3]]));
    let body = datagram.get(HEADER..HEADER + length)?;
    let mut at = 0;
    Some(std::iter::from_fn(move || {
        let header = body.get(at..at + ATTRIBUTE_HEADER)?;
        let kind = u16::from_be_bytes([header[0], header[1]]);
        let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
        let value = body.get(at + ATTRIBUTE_HEADER..at + ATTRIBUTE_HEADER + len)?;
        let offset = HEADER + at;
        // Attributes are padded to four bytes.
        at += ATTRIBUTE_HEADER + len.next_multiple_of(4);
        Some((kind, offset, value))
    }))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A binding request naming `username`, with a MESSAGE-INTEGRITY made with `pwd`.
    pub(crate) fn signed_request(username: &str, pwd: &str) -> Vec<u8> {
        let mut packet = request(&[(USERNAME, username.as_bytes())]);
        let length = packet.len() - HEADER + ATTRIBUTE_HEADER + INTEGRITY_LEN;
        packet[2..4].copy_from_slice(&(length as u16).to_be_bytes());
        let mut mac = Hmac::<Sha1>::new_from_slice(pwd.as_bytes()).unwrap();
        mac.update(&packet);
        packet.extend_from_slice(&MESSAGE_INTEGRITY.to_be_bytes());
        packet.extend_from_slice(&(INTEGRITY_LEN as u16).to_be_bytes());
        packet.extend_from_slice(&mac.finalize().into_bytes());
        packet
    }

    /// The sample request of RFC 5769, section 2.1: short-term credentials, with a
    /// FINGERPRINT after the MESSAGE-INTEGRITY.
    const RFC_5769_REQUEST: [u8; 108] = [
        0x00, 0x01, 0x00, 0x58, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6,
        0x86, 0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x10, 0x53, 0x54, 0x55, 0x4e, 0x20, 0x74,
        0x65, 0x73, 0x74, 0x20, 0x63, 0x6c, 0x69, 0x65, 0x6e, 0x74, 0x00, 0x24, 0x00, 0x04, 0x6e,
        0x00, 0x01, 0xff, 0x80, 0x29, 0x00, 0x08, 0x93, 0x2f, 0xf9, 0xb1, 0x51, 0x26, 0x3b, 0x36,
        0x00, 0x06, 0x00, 0x09, 0x65, 0x76, 0x74, 0x6a, 0x3a, 0x68, 0x36, 0x76, 0x59, 0x20, 0x20,
        0x20, 0x00, 0x08, 0x00, 0x14, 0x9a, 0xea, 0xa7, 0x0c, 0xbf, 0xd8, 0xcb, 0x56, 0x78, 0x1e,
        0xf2, 0xb5, 0xb2, 0xd3, 0xf2, 0x49, 0xc1, 0xb5, 0x71, 0xa2, 0x80, 0x28, 0x00, 0x04, 0xe5,
        0x7a, 0x3b, 0xcf,
    ];
    const RFC_5769_PASSWORD: &[u8] = b"VOkJxbRl1RmTxUk/WvJxBt";

    #[test]
    fn verifies_the_integrity_of_the_rfc_5769_sample_request() {
        assert_eq!(request_ufrag(&RFC_5769_REQUEST), Some("evtj"));
        assert!(verify_integrity(&RFC_5769_REQUEST, RFC_5769_PASSWORD));
    }

    #[test]
    fn refuses_integrity_made_with_another_password() {
        assert!(!verify_integrity(
            &RFC_5769_REQUEST,
            b"VOkJxbRl1RmTxUk/WvJxBu"
        ));
        let signed = signed_request("srv1:cli", "secret");
        assert!(verify_integrity(&signed, b"secret"));
        assert!(!verify_integrity(&signed, b"other"));
    }

    #[test]
    fn refuses_a_request_changed_after_it_was_signed() {
        let mut changed = RFC_5769_REQUEST;
        changed[70] ^= 1; // in USERNAME
        assert!(!verify_integrity(&changed, RFC_5769_PASSWORD));
    }

    #[test]
    fn refuses_a_request_without_integrity_or_with_a_short_one() {
        assert!(!verify_integrity(&request(&[(USERNAME, b"a:b")]), b""));
        let short = request(&[(USERNAME, b"a:b"), (MESSAGE_INTEGRITY, &[0; 19])]);
        assert!(!verify_integrity(&short, b""));
        for len in 0..RFC_5769_REQUEST.len() {
            assert!(!verify_integrity(
                &RFC_5769_REQUEST[..len],
                RFC_5769_PASSWORD
            ));
        }
    }

    fn request(attributes: &[(u16, &[u8])]) -> Vec<u8> {
        let mut body = Vec::new();
        for (kind, value) in attributes {
            body.extend_from_slice(&kind.to_be_bytes());
            body.extend_from_slice(&(value.len() as u16).to_be_bytes());
            body.extend_from_slice(value);
            body.resize(body.len().next_multiple_of(4), 0);
        }
        let mut packet = vec![0x00, 0x01];
        packet.extend_from_slice(&(body.len() as u16).to_be_bytes());
        packet.extend_from_slice(&MAGIC_COOKIE);
        packet.extend_from_slice(&[7; 12]);
        packet.extend_from_slice(&body);
        packet
    }

    #[test]
    fn finds_the_server_ufrag_after_other_attributes() {
        let packet = request(&[
            (0x8029, b"12345678"),
            (USERNAME, b"srv1:cli"),
            (0x0024, b"prio"),
        ]);
        assert_eq!(request_ufrag(&packet), Some("srv1"));
    }

    #[test]
    fn ignores_what_is_not_a_binding_request_with_a_username() {
        assert_eq!(request_ufrag(&request(&[(0x8029, b"12345678")])), None);
        let mut response = request(&[(USERNAME, b"a:b")]);
        response[1] = 0x01;
        response[0] = 0x01;
        assert_eq!(request_ufrag(&response), None);
        assert_eq!(request_ufrag(&[0x80, 0x60, 0, 1]), None);
        assert_eq!(request_ufrag(&[]), None);
    }

    #[test]
    fn survives_lengths_that_lie() {
        let mut packet = request(&[(USERNAME, b"a:b")]);
        packet[3] = 0xff; // the header claims more than there is
        assert_eq!(request_ufrag(&packet), None);
        let mut packet = request(&[(USERNAME, b"a:b")]);
        packet[23] = 0xff; // the attribute claims more than there is
        assert_eq!(request_ufrag(&packet), None);
        for len in 0..40 {
            let _ = request_ufrag(&request(&[(USERNAME, b"abcdef:ghi")])[..len.min(32)]);
        }
    }
}
