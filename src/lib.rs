//! pairgate: a durable pairing and session store for OpenClaw-compatible gateways.

pub mod auth;
pub mod clock;
pub mod domain;
pub mod store;
