//! One TCP connection of the runtime: the nonblocking socket, its link, and the bytes that
//! wait on either side of it.

use std::io::{self, Read, Write};
use std::net::SocketAddr;

use dmsg_core::span::LinkId;

use crate::link::TransportEnd;

/// Where a socket is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// An outbound connect in progress (until `deadline`).
    Connecting { deadline: std::time::Instant },
    /// Accepted; waiting (until `deadline`) for the first 64 bytes to tell a new link from
    /// a resumed one (sessions only).
    Classifying { deadline: std::time::Instant },
    /// Carrying a link.
    Linked,
    /// The transport ended; the node was told (or will be once the input is fed).
    Dead,
}

/// A socket and its buffers.
pub(crate) struct Sock {
    pub stream: mio::net::TcpStream,
    pub peer: SocketAddr,
    pub link: Option<LinkId>,
    /// Index of the dial that made it.
    pub dial: Option<usize>,
    pub phase: Phase,
    /// Received, not yet used by the node.
    pub input: Vec<u8>,
    /// From the node, not yet taken by the socket.
    pub output: Vec<u8>,
    pub readable: bool,
    /// How the transport ended, once it did.
    pub end: Option<TransportEnd>,
    /// The end was reported to the node (`handle_close`).
    pub close_fed: bool,
}

/// What one read pass did.
pub(crate) struct ReadPass {
    pub bytes: usize,
}

impl Sock {
    pub fn new(stream: mio::net::TcpStream, peer: SocketAddr, phase: Phase) -> Sock {
        Sock {
            stream,
            peer,
            link: None,
            dial: None,
            phase,
            input: Vec::new(),
            output: Vec::new(),
            readable: true,
            end: None,
            close_fed: false,
        }
    }

    /// Reads while the socket has data and the input has room (edge-triggered: a pass ends
    /// at `WouldBlock`, at EOF, at an error, or when `cap` bytes wait).
    pub fn read_some(&mut self, buf: &mut [u8], cap: usize) -> ReadPass {
        let mut bytes = 0;
        while self.readable && self.end.is_none() && self.input.len() < cap {
            let room = (cap - self.input.len()).min(buf.len());
            match self.stream.read(&mut buf[..room]) {
                Ok(0) => self.end = Some(TransportEnd::Eof),
                Ok(n) => {
                    self.input.extend_from_slice(&buf[..n]);
                    bytes += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.readable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.end = Some(TransportEnd::ReadError {
                        kind: e.kind(),
                        message: e.to_string(),
                    })
                }
            }
        }
        ReadPass { bytes }
    }

    /// Writes what waits in `output`; true when it is all gone.
    pub fn flush(&mut self) -> bool {
        while !self.output.is_empty() && self.end.is_none() {
            match self.stream.write(&self.output) {
                Ok(0) => {
                    self.fail_write(io::ErrorKind::WriteZero, "the socket took no bytes".into());
                }
                Ok(n) => {
                    self.output.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => self.fail_write(e.kind(), e.to_string()),
            }
        }
        if self.output.is_empty() && self.output.capacity() > 64 * 1024 {
            self.output = Vec::new();
        }
        self.output.is_empty()
    }

    /// Writes `bytes` as far as the socket takes them; the rest waits in `output`.
    pub fn write_or_keep(&mut self, bytes: &[u8]) {
        if self.end.is_some() {
            return;
        }
        let mut done = 0;
        if self.output.is_empty() {
            while done < bytes.len() {
                match self.stream.write(&bytes[done..]) {
                    Ok(0) => {
                        self.fail_write(
                            io::ErrorKind::WriteZero,
                            "the socket took no bytes".into(),
                        );
                        return;
                    }
                    Ok(n) => done += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        self.fail_write(e.kind(), e.to_string());
                        return;
                    }
                }
            }
        }
        self.output.extend_from_slice(&bytes[done..]);
    }

    fn fail_write(&mut self, kind: io::ErrorKind, message: String) {
        if self.end.is_none() {
            self.end = Some(TransportEnd::WriteError { kind, message });
        }
        self.output.clear();
    }

    /// Drops buffers that grew for a burst and are empty now.
    pub fn trim(&mut self) {
        if self.input.is_empty() && self.input.capacity() > 64 * 1024 {
            self.input = Vec::new();
        }
    }
}
