//! # dmsg-embassy-tap
//!
//! The `dmsg-embassy` leaf, unchanged, on a Linux host: embassy's std executor and time
//! driver, the embassy-net TCP/IP stack on a TAP device, and the firmware's runner on top.
//! It is how the microcontroller code path (smoltcp, the runner's reconnect and backoff,
//! the core's keepalive) runs for real against a hub on the Linux side of the TAP.
//!
//! - [`device`]: the TAP device as an embassy-net driver that survives the interface going
//!   down (the stock `embassy-net-tuntap` driver panics then);
//! - [`leaf`]: the stack, the runner and a small application with a line protocol on
//!   stdin/stdout; the `dmsg-tap-leaf` binary runs it;
//! - [`netns`]: a throw-away network namespace with a TAP device, for the integration test
//!   (`tests/tap.rs`), which runs the leaf against a hub inside one and flaps the link.
//!
//! Linux only; attaching to a TAP device needs CAP_NET_ADMIN.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod device;
pub mod leaf;
pub mod netns;

pub use device::{TapDevice, TapStats};
pub use leaf::{LeafOptions, READ};
