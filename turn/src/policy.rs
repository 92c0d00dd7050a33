//! Which peers a TURN allocation may relay to. Public addresses are open; the
//! operator's own networks (loopback, private, link-local, unspecified, multicast,
//! broadcast, unique-local) are closed unless the operator opened a range, so that a
//! TURN credential is not a way into the server's LAN. Exact socket addresses (the
//! built-in SFU's media port) can be opened one by one.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::{PoisonError, RwLock};

/// An IP network in CIDR notation (`10.0.0.0/8`, `::1/128`, or a bare address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpRange {
    network: IpAddr,
    prefix: u8,
}

impl IpRange {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for IpRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (ip, prefix) = s.split_once('/').unwrap_or((s, ""));
        let network = canonical(
            ip.trim()
                .parse::<IpAddr>()
                .map_err(|_| format!("`{s}` is not an IP address or CIDR range"))?,
        );
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = if prefix.is_empty() {
            max
        } else {
            prefix
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{s}`: the prefix length must be 0 to {max}"))?
        };
        Ok(IpRange { network, prefix })
    }
}

impl std::fmt::Display for IpRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// What an allocation may send to.
#[derive(Debug, Default)]
pub struct PeerPolicy {
    /// Ranges opened by the operator, even if they are internal.
    pub allowed: Vec<IpRange>,
    /// Single internal socket addresses always reachable (the built-in SFU).
    pub services: Vec<SocketAddr>,
    /// Services learnt while running, reachable like `services` (the media ports of
    /// the other nodes of a cluster): see [`PeerPolicy::learn`].
    pub learnt: RwLock<Vec<SocketAddr>>,
}

impl Clone for PeerPolicy {
    fn clone(&self) -> Self {
        PeerPolicy {
            allowed: self.allowed.clone(),
            services: self.services.clone(),
            learnt: RwLock::new(self.learnt().clone()),
        }
    }
}

impl PeerPolicy {
    /// Whether a permission (which RFC 8656 scopes to an IP address) may be created.
    pub fn allows_ip(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        !is_internal(ip)
            || self.allowed.iter().any(|range| range.contains(ip))
            || self.services.iter().any(|s| canonical(s.ip()) == ip)
            || self.learnt().iter().any(|s| canonical(s.ip()) == ip)
    }

    /// Whether a datagram may be relayed to `peer`. Stricter than [`allows_ip`]: an
    /// internal address reached only as a service is reachable on that port alone.
    ///
    /// [`allows_ip`]: PeerPolicy::allows_ip
    pub fn allows(&self, peer: SocketAddr) -> bool {
        let ip = canonical(peer.ip());
        let service = |s: &SocketAddr| canonical(s.ip()) == ip && s.port() == peer.port();
        !is_internal(ip)
            || self.allowed.iter().any(|range| range.contains(ip))
            || self.services.iter().any(service)
            || self.learnt().iter().any(service)
    }

    /// Makes `services` the learnt services (replacing those learnt before).
    pub fn learn(&self, services: Vec<SocketAddr>) {
        *self.learnt.write().unwrap_or_else(PoisonError::into_inner) = services;
    }

    fn learnt(&self) -> std::sync::RwLockReadGuard<'_, Vec<SocketAddr>> {
        self.learnt.read().unwrap_or_else(PoisonError::into_inner)
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`) judged as the IPv4 they carry.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => is_internal_v4(ip),
        IpAddr::V6(ip) => is_internal_v6(ip),
    }
}

fn is_internal_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_multicast()
        || ip.is_broadcast()
        || a == 0
        // shared address space (carrier-grade NAT), 100.64.0.0/10
        || (a == 100 && (b & 0xc0) == 64)
}

fn is_internal_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        // unique local fc00::/7, link-local fe80::/10
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn internal_networks_are_closed_by_default() {
        let policy = PeerPolicy::default();
        for peer in [
            "127.0.0.1:9",
            "10.1.2.3:9",
            "172.16.0.1:9",
            "172.31.255.255:9",
            "192.168.1.1:9",
            "169.254.169.254:80",
            "0.0.0.0:9",
            "224.0.0.1:9",
            "255.255.255.255:9",
            "100.64.0.1:9",
            "[::1]:9",
            "[::]:9",
            "[fd00::1]:9",
            "[fe80::1]:9",
            "[::ffff:127.0.0.1]:9",
            "[::ffff:10.0.0.1]:9",
        ] {
            assert!(!policy.allows(addr(peer)), "{peer} must be refused");
            assert!(!policy.allows_ip(addr(peer).ip()), "{peer} must be refused");
        }
        for peer in [
            "8.8.8.8:53",
            "172.32.0.1:9",
            "100.128.0.1:9",
            "[2001:db8::1]:9",
        ] {
            assert!(policy.allows(addr(peer)), "{peer} must be allowed");
        }
    }

    #[test]
    fn opened_ranges_and_services() {
        let policy = PeerPolicy {
            allowed: vec!["127.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()],
            services: vec![addr("10.0.0.5:7882")],
            ..PeerPolicy::default()
        };
        assert!(policy.allows(addr("127.0.0.1:5000")));
        assert!(policy.allows(addr("[::ffff:127.0.0.2]:5000")));
        assert!(policy.allows(addr("[fd12::1]:5")));
        assert!(policy.allows(addr("10.0.0.5:7882")));
        assert!(policy.allows_ip(addr("10.0.0.5:22").ip()));
        assert!(
            !policy.allows(addr("10.0.0.5:22")),
            "only the service's port"
        );
        assert!(!policy.allows(addr("10.0.0.6:7882")));
        assert!(!policy.allows(addr("192.168.0.1:7882")));
    }

    #[test]
    fn learnt_services_are_reachable_on_their_port_until_forgotten() {
        let policy = PeerPolicy::default();
        assert!(!policy.allows(addr("10.0.0.7:7883")));
        policy.learn(vec![addr("10.0.0.7:7883")]);
        assert!(policy.allows(addr("10.0.0.7:7883")));
        assert!(policy.allows_ip(addr("10.0.0.7:1").ip()));
        assert!(
            !policy.allows(addr("10.0.0.7:22")),
            "only the service's port"
        );
        policy.learn(vec![addr("10.0.0.8:7882")]);
        assert!(!policy.allows(addr("10.0.0.7:7883")), "replaced, not added");
        assert!(policy.allows(addr("10.0.0.8:7882")));
    }

    #[test]
    fn ranges_parse_strictly() {
        assert_eq!(
            "10.0.0.0/8".parse::<IpRange>().unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert_eq!("::1".parse::<IpRange>().unwrap().to_string(), "::1/128");
        assert!(
            "0.0.0.0/0"
                .parse::<IpRange>()
                .unwrap()
                .contains("1.2.3.4".parse().unwrap())
        );
        for bad in ["10.0.0.0/33", "fe80::/129", "ten/8", "", "10.0.0.0/x"] {
            assert!(bad.parse::<IpRange>().is_err(), "{bad}");
        }
    }
}
