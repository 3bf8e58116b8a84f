//! The store boundary: everything above it opens and uses the store through this module, and never names
//! the engine behind it. The records and errors every engine speaks are crate `pairgate-store-types`;
//! today's one engine is SQLite (crate `pairgate-store-sqlite`, the only SQL).

pub mod location;

pub use location::Location;
pub use pairgate_store_sqlite::*;
