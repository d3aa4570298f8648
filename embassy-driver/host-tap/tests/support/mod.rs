//! Test support: the interim hub and a session-capable peer.
pub mod hub;
pub mod session_peer;
