//! The call domain: what a call is ([`model`]), the rules it lives by
//! ([`lifecycle`], pure), what each change announces ([`events`], pure), quality
//! reports ([`quality`]), and the service that applies them to stored calls
//! ([`service`]). REST and Socket.IO handlers are thin layers over
//! [`service::CallService`]. [`analytics`] names what call analytics ask and
//! builds their report from the figures the store computes. [`feedback`]: what
//! participants thought of an ended call.

pub mod analytics;
pub mod events;
pub mod feedback;
pub mod lifecycle;
pub mod model;
pub mod quality;
pub mod service;
