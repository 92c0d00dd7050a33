//! ICE servers as browsers take them (`RTCIceServer`): what start, join and token
//! responses hand to clients so that their peer connections can traverse NAT.

use serde::Serialize;

/// One STUN or TURN server, in the shape of the WebRTC `RTCIceServer` dictionary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}
