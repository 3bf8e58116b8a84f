//! The store boundary: everything above it opens and uses the store through this module, and never names
//! the engine behind it. Today that engine is SQLite (crate `pairgate-store-sqlite`, the only SQL).

pub mod location;

pub use location::Location;
pub use pairgate_store_sqlite::*;
