//! pairgate: a durable pairing and session store for OpenClaw-compatible gateways.
//!
//! # Layout
//! `ARCHITECTURE.md` has the map; in one breath, from the bottom up:
//! - [`domain`] (crate `pairgate-domain`): plain types and rules, the clock, the typed refusals. No I/O.
//! - [`store`]: the store boundary; behind it, crate `pairgate-store-sqlite` has the only SQL. One transaction per change, with its audit row.
//! - [`auth`]: device identity, shared secrets, locality, the failed-auth limiter, and the pure pairing
//!   policy.
//! - [`app`]: the operator decisions and run control every front end shares; the live-socket registry.
//! - front ends, each translating its wire format to `app` and back: [`gateway`] (the OpenClaw WebSocket
//!   protocol), [`admin`] (HTTP: REST, health, metrics), [`cli`] (the command line).
//! - [`server`]: assembles the front ends over one application and serves them.
//! - [`importer`]: reads OpenClaw's own state for `pairgate import openclaw`.
//! - [`client`]: a protocol client (device identity, signed connect) for tests and the load generator.

pub mod admin;
pub mod app;
pub mod auth;
pub mod cli;
pub mod client;
pub mod gateway;
pub mod importer;
pub mod metrics;
pub mod server;
pub mod store;

pub use pairgate_domain as domain;
pub use pairgate_domain::clock;
