//! pairgate: a durable pairing and session store for OpenClaw-compatible gateways.

pub mod admin;
pub mod auth;
pub mod cli;
pub mod client;
pub mod gateway;
pub mod lock;
pub mod metrics;
pub mod migrate;
pub mod server;

pub use pairgate_domain as domain;
pub use pairgate_domain::clock;
pub use pairgate_store_sqlite as store;
