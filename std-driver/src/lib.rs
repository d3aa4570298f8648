//! # dmsg-std
//!
//! The host side of dmsg: the `dmsg` command-line program, built on [`dmsg_core`].
//!
//! The program's subcommands live in modules here so they can be tested without a process:
//! - [`cli`]: subcommand dispatch, the shared argument reader and the top-level help.
//! - [`decode_cmd`]: `dmsg decode`, which walks a captured byte stream frame by frame.
//! - [`render`]: the text and JSON output of `dmsg decode`.
//! - [`hexin`]: reading input that is raw bytes or hex text.
//! - [`json`]: the small JSON writer behind `--json`.
//! - [`shell_cmd`]: `dmsg shell` and `dmsg tree`.
//! - [`node_cmd`]: `dmsg hub` and `dmsg leaf`; [`demo`]: `dmsg demo`.
//! - [`bench`](mod@bench): `dmsg bench`, DMSG against raw TCP over loopback.
//!
//! The std runtime for the core, reusable by later subcommands (a node runtime for `hub`,
//! `leaf`, ...):
//! - [`node`]: a core `Node` (many links, relays, routing) on one `mio` I/O thread, with a
//!   listener, reconnecting dials, a `Send + Clone` [`node::NodeHandle`] and an events
//!   channel: the runtime of `dmsg hub`, `dmsg leaf` and `dmsg demo`.
//! - [`link`]: one core `Connection` over a `TcpStream` on its own threads, with a
//!   `Send + Clone` [`link::LinkHandle`] for commands and an events channel.
//! - [`reader`]: the socket reader thread and its backpressure gate.
//! - [`connector`]: connects with exponential backoff and jitter, and a supervisor that
//!   reconnects a link after every loss.
//! - [`net`]: addresses (`HOST[:PORT]`, default port 987) and connect errors that say what to
//!   check.
//! - [`crc`]: CRC-32C with the CPU's instruction, for the core's `Crc32c` trait.
//! - [`clock`]: the core's clock from `std::time::Instant`, and an interruptible sleep.
//! - [`shell`]: the debug-shell client (DBG_SHELL as DragonFly's `hammer2 shell` sends it).
//! - [`tree`]: the span tree text parsed and converted to Graphviz DOT.
//! - [`logging`]: `log` + `env_logger` set up from `-v` counts.
//! - [`interrupt`]: Ctrl-C / SIGTERM as a graceful stop for `hub` and `leaf`.
//! - [`keys`]: key files, the keys-directory policy (`<peer>.pub` / `<peer>.none` / refuse)
//!   and `dmsg keygen`.
//! - [`secure`]: the secure channel on the node runtime's connections (key pair, per-peer
//!   policy, per-connection glue, counters).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod bench;
pub mod cli;
pub mod clock;
pub mod connector;
pub mod crc;
pub mod decode_cmd;
pub mod demo;
pub mod hexin;
pub mod interrupt;
pub mod json;
pub mod keys;
pub mod link;
pub mod logging;
pub mod net;
pub mod node;
pub mod node_cmd;
pub mod reader;
pub mod render;
pub mod secure;
pub mod shell;
pub mod shell_cmd;
pub mod tree;

/// Exit codes of the `dmsg` program.
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// The input is not a good DMSG stream (decode error, or it ends inside a frame).
    pub const BAD_STREAM: u8 = 1;
    /// Usage error, or the input could not be read.
    pub const USAGE: u8 = 2;
    /// The peer could not be reached, or the connection was lost.
    pub const NETWORK: u8 = 3;
    /// The peer did not answer in time.
    pub const TIMEOUT: u8 = 4;
}
