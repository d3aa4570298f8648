//! # dmsg-embassy
//!
//! A DMSG cluster leaf for microcontrollers: runs a [`dmsg_core`] link over one
//! `embassy_net::tcp::TcpSocket`, on any embassy-net stack (W5500, STM32 Ethernet, CYW43, a
//! TAP device, ...), with no heap and every buffer sized at compile time.
//!
//! - [`Runner`] connects to the hub (default port 987), reconnects with bounded exponential
//!   [`backoff`] and jitter, drives the core's timers with `embassy-time`, and follows the
//!   core's drive contract (transmit, then events, then the timer, after every input).
//! - The application talks to it over two `embassy-sync` channels ([`Channels`]):
//!   [`LeafCommand`]s in (open, send, reply, delete, abort, one-way; aux in a bounded
//!   `heapless::Vec`), [`LeafEvent`]s out (copies of the core's borrowed events).
//! - The leaf's own protocol behaviour lives in [`binding`], sans-IO and tested on the host:
//!   after the hub's LNK_CONN it opens its LNK_SPAN (from [`LeafConfig`]'s ids, labels and
//!   peer type) and keeps it open; optionally it answers echo transactions by itself
//!   ([`LeafConfig::echo`]). That module is the only one that knows the core's API, so a
//!   multi-link node can replace the single connection there.
//!
//! ## Example
//!
//! A leaf that echoes DBG_SHELL and answers an application command `READ` with a reading.
//! In firmware, `runner.run()` usually gets a task of its own (see the examples in
//! `embassy-driver/examples/`: W5500-EVB-Pico and Nucleo-H743ZI); here both halves run in one.
//!
//! ```
//! use dmsg_core::errcode::txn::NOSUPP;
//! use dmsg_core::wire::Command;
//! use dmsg_embassy::{Channels, LeafCommand, LeafConfig, LeafEvent, Runner};
//! use embassy_futures::select::select;
//! use embassy_net::{IpAddress, Ipv4Address, Stack};
//! use embassy_sync::blocking_mutex::raw::NoopRawMutex;
//!
//! /// An application command (protocol nibble 3 is unassigned).
//! const READ: Command = Command::from_parts(3, 0x001);
//!
//! static CONFIG: LeafConfig<'static> = LeafConfig {
//!     pfs_label: "thermometer",
//!     echo: Some(Command::DbgShell),
//!     ..LeafConfig::new(
//!         LeafConfig::hub_at(IpAddress::Ipv4(Ipv4Address::new(192, 168, 1, 10))),
//!         "leaf-07",
//!     )
//! };
//!
//! async fn leaf(stack: Stack<'_>, sockets: &mut [u8; 8192], read: impl Fn() -> u8) {
//!     // 64 bytes of aux per command/event, 2 commands and 2 events in flight.
//!     let channels = Channels::<NoopRawMutex, 64, 2, 2>::new();
//!     let (rx, tx) = sockets.split_at_mut(4096);
//!     let mut runner: Runner<'_, NoopRawMutex, 64, 2, 2> =
//!         Runner::new(stack, &CONFIG, &channels, rx, tx, 0x5eed).expect("labels fit");
//!     let app = async {
//!         loop {
//!             let cmd = match channels.events.receive().await {
//!                 LeafEvent::Request { txn, msg } if msg.command == READ => LeafCommand::Send {
//!                     txn,
//!                     command: READ,
//!                     aux: heapless::Vec::from_slice(&[read()]).unwrap(),
//!                     error: 0,
//!                     delete: true,
//!                 },
//!                 LeafEvent::Request { txn, .. } => LeafCommand::Reply { txn, error: NOSUPP },
//!                 _ => continue, // Up, PeerConn, SpanAdvertised, Closed, Down, ...
//!             };
//!             channels.commands.send(cmd).await;
//!         }
//!     };
//!     select(runner.run(), app).await;
//! }
//! ```
//!
//! ## Memory
//!
//! | what | bytes (thumbv6m, measured) |
//! |---|---|
//! | `Runner<.., LeafConnection>` (the link: 1 KiB aux in, 8 transactions per side, 1 KiB output queue) | 6,168 |
//! | `Runner<.., McuConnection>` (the core's alias, 2 KiB output queue) | 7,192 |
//! | `Runner<.., LeafConnection>` with the `secure` feature (the secure channel's two record buffers) | 11,488 |
//! | its `run()` future (the task, as its embassy task pool) | 608 |
//! | `Channels<_, 64, 2, 2>` | 512 |
//! | `LeafConfig` | none if it is a `static` (flash); 152 otherwise |
//! | TCP socket buffers | the caller's, e.g. 2 × 4 KiB |
//!
//! (`size_of` on `thumbv6m-none-eabi`, read off the firmware build; the task pool from the
//! firmware's symbol table.)
//!
//! Keep the runner in a `StaticCell` and pass `&'static mut Runner` to its task: an `async fn`
//! argument is stored twice in the task's future. Flash and RAM figures of whole firmware are in
//! the crate's README (`size-report.sh`).
//!
//! ## Features
//!
//! - `defmt`: log with defmt (and `defmt::Format` on the events and commands); `log`: log
//!   through the `log` facade. At most one of them.
//! - `secure`: encrypted, mutually authenticated links (dmsg-core's Noise IK secure channel
//!   between the TCP socket and the link: `Runner::with_secure`, module `secure`); without it the
//!   crypto is left out of the firmware (about 28.6 KB of flash and 5.6 KB of RAM on an
//!   RP2040).
//! - `proto-ipv4` (default), `proto-ipv6`, `medium-ethernet` (default), `medium-ip`: forwarded
//!   to embassy-net, which needs at least one protocol and one medium.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod fmt;

pub mod backoff;
pub mod binding;
pub mod runner;
#[cfg(feature = "secure")]
pub mod secure;
pub mod types;

pub use backoff::{Backoff, BackoffConfig};
pub use binding::{ConfigError, CoreLink, Leaf, LeafConnection, Polled};
pub use runner::Runner;
#[cfg(feature = "secure")]
pub use secure::SecureLink;
pub use types::{Aux, Channels, Down, LeafCommand, LeafConfig, LeafEvent, Msg};

#[cfg(test)]
mod tests;
