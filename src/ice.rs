//! ICE servers as browsers take them (`RTCIceServer`): what start, join and token
//! responses hand to clients so that their peer connections can traverse NAT and
//! firewalls. TURN credentials are minted per user and request (coturn's
//! `use-auth-secret` scheme), so every response carries fresh ones.

use std::time::{SystemTime, UNIX_EPOCH};

use huddle_turn::Secret;
use serde::Serialize;

/// One STUN or TURN server, in the shape of the WebRTC `RTCIceServer` dictionary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// TURN servers that check credentials derived from a shared secret (the embedded
/// server, or coturn with `use-auth-secret`).
#[derive(Debug, Clone)]
pub struct RestTurn {
    pub urls: Vec<String>,
    pub secret: Secret,
    /// Seconds minted credentials stay valid.
    pub ttl: u64,
}

/// Every ICE server Huddle hands out.
#[derive(Debug, Clone, Default)]
pub struct IceServers {
    /// STUN servers (no credentials).
    pub stun: Vec<String>,
    /// TURN servers with minted credentials.
    pub rest_turn: Option<RestTurn>,
    /// A TURN server with a fixed username and password (TURN_SERVER_URL).
    pub fixed_turn: Option<IceServer>,
}

impl IceServers {
    /// The ICE servers for `user`, with TURN credentials minted now.
    pub fn for_user(&self, user: &str) -> Vec<IceServer> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let stun = (!self.stun.is_empty()).then(|| IceServer {
            urls: self.stun.clone(),
            username: None,
            credential: None,
        });
        let minted = self.rest_turn.as_ref().map(|turn| {
            let credentials = turn.secret.mint(user, now + turn.ttl);
            IceServer {
                urls: turn.urls.clone(),
                username: Some(credentials.username),
                credential: Some(credentials.password),
            }
        });
        stun.into_iter()
            .chain(minted)
            .chain(self.fixed_turn.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_minted_per_user_with_the_ttl() {
        let ice = IceServers {
            stun: vec!["stun:203.0.113.7:3478".into()],
            rest_turn: Some(RestTurn {
                urls: vec!["turn:203.0.113.7:3478?transport=udp".into()],
                secret: Secret::new("a-shared-turn-secret"),
                ttl: 600,
            }),
            fixed_turn: None,
        };
        let before = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let servers = ice.for_user("alice");
        assert_eq!(servers.len(), 2);
        assert_eq!(servers[0].urls, ["stun:203.0.113.7:3478"]);
        assert_eq!(servers[0].username, None);
        let username = servers[1].username.clone().unwrap();
        let (expiry, user) = huddle_turn::parse_username(&username, before).unwrap();
        assert_eq!(user, "alice");
        assert!((before + 600..=before + 601).contains(&expiry), "{expiry}");
        assert_eq!(
            servers[1].credential.as_deref(),
            Some(
                Secret::new("a-shared-turn-secret")
                    .password(&username)
                    .as_str()
            )
        );
        assert_ne!(ice.for_user("bob")[1].username, servers[1].username);
    }
}
