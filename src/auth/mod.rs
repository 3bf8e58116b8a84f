//! Authentication and authorization: device identity, shared secrets, locality, and the pairing policy.

pub mod identity;
pub mod locality;
pub mod policy;
pub mod ratelimit;
pub mod secrets;
