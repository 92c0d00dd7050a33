//! # Huddle
//!
//! A self-hosted call server. This crate is the composition root: configuration,
//! the HTTP API, the call domain, the store and the wiring between them.
//!
//! ## How a request flows
//! `api` (axum handlers) or `realtime` (Socket.IO requests from the `signaling`
//! crate): authenticate, check the request's shape →
//! `calls::service` (load the call, apply a rule, save under optimistic concurrency) →
//! `calls::lifecycle` (the pure rules, time as an input) and `store` (SQLite or
//! PostgreSQL, one SQL text for both). Every stored change is diffed into
//! `calls::events`, which `realtime::Notifier` sends to the call's members.
//!
//! Calls of an outside telephone system, tracked from its events, are `phone`'s
//! (served by `api::phone`, stored by `store::phone`). Call recordings are
//! `recordings`' (served by `api::recordings` and `realtime`, stored by
//! `store::recordings`, written by the call's media plane). Support queues, whose
//! assignments are calls placed through the call service, are `queue`'s (served by
//! `api::queue`, stored by `store::queue`). The support lines'
//! users, their availability and optional accounts are `users`' (served by
//! `api::users` and `api::auth`, stored by `store::users` and `store::accounts`);
//! feedback on calls is `calls::feedback`'s.
//!
//! ## Time
//! Nothing in the call domain reads the system clock: the service asks a
//! [`clock::Clock`], and the lifecycle rules take `now` as an argument. A sweeper in
//! `server` applies the timeout rules once a second to the calls whose stored
//! deadline has passed; tests move a [`clock::ManualClock`] instead of sleeping.
//!
//! ## Invariants
//! - Nobody reaches a call they are not a member of (`CallError::NotMember`).
//! - A refused request changes nothing: rules run on a copy, and only a successful
//!   rule's result is written.
//! - Only `config` (and `main`) read the environment.

pub mod api;
pub mod auth;
pub mod browsers;
pub mod calls;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod http;
pub mod ice;
pub mod live;
pub mod media;
pub mod metrics;
pub mod phone;
pub mod queue;
pub mod ratelimit;
pub mod realtime;
pub mod recordings;
pub mod server;
pub mod store;
pub mod tls;
pub mod users;
pub mod wire;
