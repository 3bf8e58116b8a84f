//! Real parts for pairgate's tests. Today: a throwaway PostgreSQL cluster.

pub mod postgres;
