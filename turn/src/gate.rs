//! What the embedded server checks before the `turn` crate sees a message: nonces
//! bound to the client's address, allocation quotas, and which peers may be reached.
//!
//! Nonces are stateless (`<issued>.<HMAC(issued, client address)>`), so a flood of
//! unauthenticated requests costs no memory, and a nonce taken from one client is
//! stale for every other (a replay from elsewhere gets 438 and a fresh nonce).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use stun::attributes::{
    ATTR_MESSAGE_INTEGRITY, ATTR_NONCE, ATTR_REALM, ATTR_USERNAME, ATTR_XOR_PEER_ADDRESS, AttrType,
};
use stun::error_code::{
    CODE_ALLOC_QUOTA_REACHED, CODE_BAD_REQUEST, CODE_FORBIDDEN, CODE_INSUFFICIENT_CAPACITY,
    CODE_STALE_NONCE, CODE_UNAUTHORIZED, ErrorCode, ErrorCodeAttribute,
};
use stun::integrity::MessageIntegrity;
use stun::message::{
    CLASS_ERROR_RESPONSE, CLASS_INDICATION, CLASS_REQUEST, MAGIC_COOKIE, METHOD_ALLOCATE,
    METHOD_BINDING, METHOD_CHANNEL_BIND, METHOD_CREATE_PERMISSION, METHOD_REFRESH, METHOD_SEND,
    Message, MessageType, Setter,
};
use stun::textattrs::TextAttribute;
use tokio::sync::Mutex;
use tokio::time::Instant;
use webrtc_turn::Error as TurnError;
use webrtc_turn::allocation::allocation_manager::Manager;
use webrtc_turn::auth::{AuthHandler, generate_auth_key};

use crate::credentials::{Secret, parse_username};
use crate::policy::PeerPolicy;
use crate::server::Counters;

/// How long a nonce stays fresh (coturn's `stale-nonce` default).
pub(crate) const NONCE_TTL: Duration = Duration::from_secs(600);

/// Checks TURN REST credentials for the `turn` crate: unexpired, this realm, and the
/// password the shared secret gives.
#[derive(Debug)]
pub(crate) struct RestAuth {
    pub secret: Secret,
    pub realm: String,
}

impl RestAuth {
    /// The long-term key (MD5 of `username:realm:password`) for a valid username.
    fn key(&self, username: &str, realm: &str) -> Option<Vec<u8>> {
        if realm != self.realm {
            return None;
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        parse_username(username, now).ok()?;
        Some(generate_auth_key(
            username,
            realm,
            &self.secret.password(username),
        ))
    }
}

impl AuthHandler for RestAuth {
    fn auth_handle(
        &self,
        username: &str,
        realm: &str,
        _: SocketAddr,
    ) -> Result<Vec<u8>, TurnError> {
        self.key(username, realm)
            .ok_or_else(|| TurnError::Other("unknown, expired or foreign credentials".into()))
    }
}

/// What to do with one message from a client.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Hand it to the `turn` crate.
    Pass,
    /// Ignore it.
    Drop,
    /// Answer with these bytes and go no further.
    Reply(Vec<u8>),
}

/// Allocation quotas.
#[derive(Debug, Clone, Copy)]
pub struct Quota {
    /// Most allocations one user (the part of the username after the expiry) holds.
    pub per_user: usize,
    /// Most allocations on the whole server.
    pub total: usize,
}

pub(crate) struct Gate {
    pub auth: Arc<RestAuth>,
    pub policy: Arc<PeerPolicy>,
    pub counters: Arc<Counters>,
    pub quota: Quota,
    /// The `turn` crate's nonce table: a nonce we accept is put there so that the
    /// crate accepts it too.
    pub nonces: Arc<Mutex<HashMap<String, Instant>>>,
    /// Every listener's allocations (UDP and TCP), for the quotas.
    pub managers: Vec<Arc<Manager>>,
    nonce_key: hmac::Key,
    epoch: Instant,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("quota", &self.quota)
            .finish_non_exhaustive()
    }
}

impl Gate {
    pub fn new(
        auth: Arc<RestAuth>,
        policy: Arc<PeerPolicy>,
        counters: Arc<Counters>,
        quota: Quota,
        managers: Vec<Arc<Manager>>,
    ) -> Self {
        let mut key = [0u8; 32];
        SystemRandom::new()
            .fill(&mut key)
            .expect("the operating system's random source works");
        Gate {
            auth,
            policy,
            counters,
            quota,
            nonces: Arc::default(),
            managers,
            nonce_key: hmac::Key::new(hmac::HMAC_SHA256, &key),
            epoch: Instant::now(),
        }
    }

    pub async fn inspect(&self, packet: &[u8], from: SocketAddr) -> Verdict {
        if packet.first().is_some_and(|b| b >> 6 == 0b01) {
            return Verdict::Pass; // ChannelData: the crate checks the channel
        }
        let mut m = Message::new();
        m.raw = packet.to_vec();
        // STUN's two leading bits are zero (RFC 8489 §6), as the TCP framing checks too;
        // the stun crate's decoder ignores them.
        if packet.first().is_none_or(|b| b >> 6 != 0) || m.decode().is_err() {
            self.counters.malformed();
            return Verdict::Drop;
        }
        match (m.typ.class, m.typ.method) {
            (CLASS_REQUEST, METHOD_BINDING) | (CLASS_INDICATION, METHOD_SEND) => Verdict::Pass,
            (
                CLASS_REQUEST,
                METHOD_ALLOCATE | METHOD_REFRESH | METHOD_CREATE_PERMISSION | METHOD_CHANNEL_BIND,
            ) => self.authorize(&m, from).await,
            _ => {
                self.counters.malformed();
                Verdict::Drop
            }
        }
    }

    async fn authorize(&self, m: &Message, from: SocketAddr) -> Verdict {
        if !m.contains(ATTR_MESSAGE_INTEGRITY) {
            return self.challenge(m, CODE_UNAUTHORIZED, from);
        }
        let nonce = match m.get(ATTR_NONCE).map(String::from_utf8) {
            Ok(Ok(nonce)) => nonce,
            _ => return reply(m, CODE_BAD_REQUEST, vec![]),
        };
        if !self.nonce_is_fresh(&nonce, from) {
            self.counters.stale_nonce();
            return self.challenge(m, CODE_STALE_NONCE, from);
        }
        let (Some(username), Some(realm)) = (text(m, ATTR_USERNAME), text(m, ATTR_REALM)) else {
            return reply(m, CODE_BAD_REQUEST, vec![]);
        };
        // RFC 8489 §9.2.4: unknown, expired or foreign credentials and a wrong
        // MESSAGE-INTEGRITY are all 401, with a fresh challenge.
        let authentic = self
            .auth
            .key(&username, &realm)
            .is_some_and(|key| MessageIntegrity(key).check(&mut m.clone()).is_ok());
        if !authentic {
            self.counters.unauthorized();
            return self.challenge(m, CODE_UNAUTHORIZED, from);
        }
        self.nonces
            .lock()
            .await
            .entry(nonce)
            .or_insert_with(Instant::now);
        match m.typ.method {
            METHOD_ALLOCATE => match self.over_quota(&username, from).await {
                Some(code) => {
                    self.counters.refused_quota();
                    reply(m, code, vec![])
                }
                None => Verdict::Pass,
            },
            METHOD_CREATE_PERMISSION | METHOD_CHANNEL_BIND => {
                let peers = m
                    .attributes
                    .0
                    .iter()
                    .filter(|a| a.typ == ATTR_XOR_PEER_ADDRESS)
                    .map(|a| xor_address(&a.value, &m.transaction_id.0));
                for peer in peers {
                    match peer {
                        None => return reply(m, CODE_BAD_REQUEST, vec![]),
                        Some(peer) if !self.policy.allows_ip(peer.ip()) => {
                            self.counters.refused_peer();
                            return reply(m, CODE_FORBIDDEN, vec![]);
                        }
                        Some(_) => {}
                    }
                }
                Verdict::Pass
            }
            _ => Verdict::Pass,
        }
    }

    /// The quota an authenticated Allocate from a client without an allocation would
    /// exceed, if any.
    async fn over_quota(&self, username: &str, from: SocketAddr) -> Option<ErrorCode> {
        let user = user_of(username);
        let (mut mine, mut total) = (0, 0);
        for manager in &self.managers {
            for (five_tuple, info) in manager.get_allocations_info(None).await {
                if five_tuple.src_addr == from {
                    return None; // a retransmission; the crate answers it
                }
                total += 1;
                mine += usize::from(user_of(&info.username) == user);
            }
        }
        if mine >= self.quota.per_user {
            Some(CODE_ALLOC_QUOTA_REACHED)
        } else if total >= self.quota.total {
            Some(CODE_INSUFFICIENT_CAPACITY)
        } else {
            None
        }
    }

    /// An error that hands the client a nonce for its address and the realm.
    fn challenge(&self, m: &Message, code: ErrorCode, from: SocketAddr) -> Verdict {
        reply(
            m,
            code,
            vec![
                Box::new(TextAttribute::new(ATTR_NONCE, self.nonce_for(from))),
                Box::new(TextAttribute::new(ATTR_REALM, self.auth.realm.clone())),
            ],
        )
    }

    pub(crate) fn nonce_for(&self, client: SocketAddr) -> String {
        let issued = self.epoch.elapsed().as_secs();
        let tag = hmac::sign(&self.nonce_key, &nonce_input(issued, client));
        format!("{issued:x}.{}", URL_SAFE_NO_PAD.encode(tag))
    }

    fn nonce_is_fresh(&self, nonce: &str, client: SocketAddr) -> bool {
        let Some((issued, tag)) = nonce.split_once('.') else {
            return false;
        };
        let (Ok(issued), Ok(tag)) = (u64::from_str_radix(issued, 16), URL_SAFE_NO_PAD.decode(tag))
        else {
            return false;
        };
        let age = self.epoch.elapsed().as_secs().checked_sub(issued);
        age.is_some_and(|age| age < NONCE_TTL.as_secs())
            && hmac::verify(&self.nonce_key, &nonce_input(issued, client), &tag).is_ok()
    }

    /// Forgets nonces that are no longer fresh from the `turn` crate's table.
    pub async fn prune_nonces(&self) {
        self.nonces
            .lock()
            .await
            .retain(|_, added| added.elapsed() < NONCE_TTL);
    }
}

/// A text attribute, if present and UTF-8.
fn text(m: &Message, attribute: AttrType) -> Option<String> {
    String::from_utf8(m.get(attribute).ok()?).ok()
}

fn nonce_input(issued: u64, client: SocketAddr) -> Vec<u8> {
    let mut input = issued.to_be_bytes().to_vec();
    input.extend_from_slice(client.to_string().as_bytes());
    input
}

/// The user part of a TURN REST username.
fn user_of(username: &str) -> &str {
    username.split_once(':').map_or("", |(_, user)| user)
}

fn reply(m: &Message, code: ErrorCode, mut extra: Vec<Box<dyn Setter>>) -> Verdict {
    let mut out = Message::new();
    let mut setters: Vec<Box<dyn Setter>> = vec![
        Box::new(Message {
            transaction_id: m.transaction_id,
            ..Default::default()
        }),
        Box::new(MessageType::new(m.typ.method, CLASS_ERROR_RESPONSE)),
        Box::new(ErrorCodeAttribute {
            code,
            reason: reason(code).as_bytes().to_vec(),
        }),
    ];
    setters.append(&mut extra);
    match out.build(&setters) {
        Ok(()) => Verdict::Reply(out.raw),
        Err(_) => Verdict::Drop,
    }
}

fn reason(code: ErrorCode) -> &'static str {
    match code {
        CODE_BAD_REQUEST => "Bad Request",
        CODE_UNAUTHORIZED => "Unauthorized",
        CODE_FORBIDDEN => "Forbidden",
        CODE_STALE_NONCE => "Stale Nonce",
        CODE_ALLOC_QUOTA_REACHED => "Allocation Quota Reached",
        CODE_INSUFFICIENT_CAPACITY => "Insufficient Capacity",
        _ => "Error",
    }
}

/// An XOR-PEER-ADDRESS value (RFC 8489 §14.2), or `None` if malformed.
fn xor_address(value: &[u8], transaction_id: &[u8; 12]) -> Option<SocketAddr> {
    let cookie = MAGIC_COOKIE.to_be_bytes();
    let port = u16::from_be_bytes([*value.get(2)?, *value.get(3)?]) ^ (MAGIC_COOKIE >> 16) as u16;
    let ip = match (value.get(1)?, value.len()) {
        (1, 8) => {
            let mut octets = [0u8; 4];
            for (i, o) in octets.iter_mut().enumerate() {
                *o = value[4 + i] ^ cookie[i];
            }
            IpAddr::V4(Ipv4Addr::from(octets))
        }
        (2, 20) => {
            let mask: Vec<u8> = cookie.iter().chain(transaction_id).copied().collect();
            let mut octets = [0u8; 16];
            for (i, o) in octets.iter_mut().enumerate() {
                *o = value[4 + i] ^ mask[i];
            }
            IpAddr::V6(Ipv6Addr::from(octets))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xor_peer_addresses_decode() {
        // 192.0.2.1:32853 from RFC 5769 §2.2 (XOR-MAPPED-ADDRESS uses the same encoding)
        let value = [0x00, 0x01, 0xa1, 0x47, 0xe1, 0x12, 0xa6, 0x43];
        assert_eq!(
            xor_address(&value, &[0; 12]),
            Some("192.0.2.1:32853".parse().unwrap())
        );
        assert_eq!(xor_address(&value[..7], &[0; 12]), None);
        assert_eq!(xor_address(&[0, 3, 0, 0, 0, 0, 0, 0], &[0; 12]), None);
    }

    #[test]
    fn user_part_of_usernames() {
        assert_eq!(user_of("1700000000:alice"), "alice");
        assert_eq!(user_of("1700000000"), "");
    }
}
