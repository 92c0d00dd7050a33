//! Any bytes a Socket.IO client sends as an event's payload, parsed as JSON and read as
//! every event the server knows (and one it does not): parsing must never panic, and a
//! relay addressed to the SFU must read as an SFU message or fail cleanly.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use signaling::events::{self, SfuMessage, client, webrtc};

const EVENTS: &[&str] = &[
    client::INVITE,
    client::ACCEPT,
    client::DECLINE,
    client::END,
    client::TOGGLE_AUDIO,
    client::TOGGLE_VIDEO,
    client::TOGGLE_SCREEN_SHARE,
    client::QUALITY_UPDATE,
    webrtc::OFFER,
    webrtc::ANSWER,
    webrtc::ICE_CANDIDATE,
    events::ECHO,
    "call:unknown",
];

fuzz_target!(|data: &[u8]| {
    let Ok(payload) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    for event in EVENTS {
        let _ = events::parse_request(event, &payload);
        if let Some(Ok(relay)) = events::parse_relay(event, payload.clone()) {
            let _ = SfuMessage::from_relay(relay);
        }
    }
});
