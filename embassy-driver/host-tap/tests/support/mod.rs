//! Test support: the interim hub.
pub mod hub;
