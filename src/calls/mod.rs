//! The call domain: what a call is ([`model`]), the rules it lives by
//! ([`lifecycle`], pure), and the service that applies them to stored calls
//! ([`service`]). REST (and, later, Socket.IO) handlers are thin layers over
//! [`service::CallService`].

pub mod lifecycle;
pub mod model;
pub mod service;
