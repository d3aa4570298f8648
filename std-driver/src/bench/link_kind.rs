//! The kinds of link the benchmark compares, and how a loopback pair of sockets is made.

use std::fmt;
use std::net::{TcpListener, TcpStream};

use dmsg_core::link::{LinkConfig, SessionOffer};

use super::engine::Flavor;

/// One kind of link in a comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// The raw-TCP baseline: 4-byte length prefix, payload.
    Raw,
    /// Plain DMSG: 64-byte CRC'd header, payload padded to 64 bytes with its own CRC.
    Dmsg,
    /// DMSG with the reliable session on (sequence numbers, acks, retransmit window).
    Session,
    /// Plain DMSG inside the secure channel (Noise IK records, ChaCha20-Poly1305).
    Secure,
}

impl Kind {
    /// The short name used in output and JSON.
    pub const fn name(self) -> &'static str {
        match self {
            Kind::Raw => "raw",
            Kind::Dmsg => "dmsg",
            Kind::Session => "dmsg+session",
            Kind::Secure => "dmsg+secure",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The configuration of one end of a benchmark link (`id` tells the ends apart: salt seed and
/// session identity).
pub fn link_config<S: Flavor>(id: u64) -> LinkConfig {
    LinkConfig {
        salt_seed: id as u32 ^ 0x5eed_0000,
        session: S::SESSION.then_some(SessionOffer::new(id)),
        ..LinkConfig::default()
    }
}

/// A connected pair of loopback sockets: (the connecting end, the accepted end).
pub fn socket_pair(listener: &TcpListener) -> std::io::Result<(TcpStream, TcpStream)> {
    let client = TcpStream::connect(listener.local_addr()?)?;
    let (server, _) = listener.accept()?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    Ok((client, server))
}

/// Stack for a thread that builds a benchmark link (the connection is built on the stack,
/// then boxed).
pub const LINK_THREAD_STACK: usize = 64 * 1024 * 1024;
