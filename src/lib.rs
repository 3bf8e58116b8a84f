//! pairgate: a durable pairing and session store for OpenClaw-compatible gateways.

pub mod admin;
pub mod auth;
pub mod cli;
pub mod client;
pub mod clock;
pub mod domain;
pub mod gateway;
pub mod lock;
pub mod metrics;
pub mod migrate;
pub mod server;
pub mod store;
