//! Just enough STUN to route a datagram from an unknown address: is it a binding
//! request, and which of our username fragments does it name? Everything else about
//! STUN (integrity, fingerprint, the response) is the peer connection's business.

const BINDING_REQUEST: u16 = 0x0001;
const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
const USERNAME: u16 = 0x0006;
const HEADER: usize = 20;

/// The server's username fragment from a STUN binding request (`USERNAME` is
/// `<server ufrag>:<client ufrag>`), or `None` if `datagram` is anything else.
pub(crate) fn request_ufrag(datagram: &[u8]) -> Option<&str> {
    if datagram.len() < HEADER
        || u16::from_be_bytes([datagram[0], datagram[1]]) != BINDING_REQUEST
        || datagram[4..8] != MAGIC_COOKIE
    {
        return None;
    }
    let length = usize::from(u16::from_be_bytes([datagram[2], datagram[3]]));
    let mut attributes = datagram.get(HEADER..HEADER + length)?;
    while attributes.len() >= 4 {
        let kind = u16::from_be_bytes([attributes[0], attributes[1]]);
        let len = usize::from(u16::from_be_bytes([attributes[2], attributes[3]]));
        let value = attributes.get(4..4 + len)?;
        if kind == USERNAME {
            let username = std::str::from_utf8(value).ok()?;
            return username.split(':').next();
        }
        // Attributes are padded to four bytes.
        attributes = attributes.get(4 + len.next_multiple_of(4)..)?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

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
