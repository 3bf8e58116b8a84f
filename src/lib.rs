//! pairgate: a durable pairing and session store for OpenClaw-compatible gateways.

pub mod auth;
pub mod clock;
pub mod domain;
pub mod store;
pub mod admin;
pub mod cli;
pub mod gateway;
pub mod server;
