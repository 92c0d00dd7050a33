//! Huddle's TURN side: time-limited credentials in coturn's `use-auth-secret` scheme,
//! and an embedded TURN server (UDP, TCP and TLS) built on the webrtc-rs `turn` crate.
//! The same secret works here and in coturn, so swapping one for the other changes
//! configuration only.

mod credentials;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod gate;
mod policy;
mod relay;
mod server;
mod tcp;

pub use credentials::{Credentials, Secret, UsernameError, parse_username};
pub use gate::Quota;
pub use policy::{IpRange, PeerPolicy};
pub use server::{PerIp, PerIpSlot, TcpLimits, TurnConfig, TurnServer, TurnStats, TurnTls};
