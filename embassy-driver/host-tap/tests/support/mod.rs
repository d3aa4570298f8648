//! Test support: the hub's client (a dmsg-std node runtime in the namespace).
pub mod client;
