//! One TCP connection of the runtime: the nonblocking socket, its link, and the bytes that
//! wait on either side of it.

use std::io::{self, Read, Write};
use std::net::SocketAddr;

use dmsg_core::span::LinkId;
use dmsg_core::time::Instant;

use crate::link::TransportEnd;
use crate::secure::SecureWire;

/// Where a socket is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// An outbound connect in progress (until `deadline`).
    Connecting { deadline: std::time::Instant },
    /// Accepted; waiting (until `deadline`) for the first 64 bytes to tell a new link from
    /// a resumed one (sessions only).
    Classifying { deadline: std::time::Instant },
    /// Running the secure channel's handshake (deadline: the channel's `poll_timeout`);
    /// `accepted`: we are the responder.
    Handshaking { accepted: bool },
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
    /// The secure channel, when the connection runs one (`input` and `output` above are
    /// then plaintext in and ciphertext out).
    pub sec: Option<SecureWire>,
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
            sec: None,
        }
    }

    /// Reads while the socket has data and the input has room (edge-triggered: a pass ends
    /// at `WouldBlock`, at EOF, at an error, or when `cap` bytes wait).
    pub fn read_some(&mut self, buf: &mut [u8], cap: usize) -> ReadPass {
        let mut bytes = 0;
        loop {
            let target = match self.sec.as_mut() {
                Some(sec) => &mut sec.raw_in,
                None => &mut self.input,
            };
            if !self.readable || self.end.is_some() || target.len() >= cap {
                break;
            }
            let room = (cap - target.len()).min(buf.len());
            match self.stream.read(&mut buf[..room]) {
                Ok(0) => self.end = Some(TransportEnd::Eof),
                Ok(n) => {
                    target.extend_from_slice(&buf[..n]);
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

    /// Sends `bytes` of the DMSG stream: sealed into records when the connection runs the
    /// secure channel, as they are otherwise.
    pub fn write_or_keep(&mut self, bytes: &[u8]) {
        let Some(mut sec) = self.sec.take() else {
            self.write_raw(bytes);
            return;
        };
        if self.end.is_none() {
            if let Err(e) = sec.encrypt(bytes, &mut |c| self.write_raw(c)) {
                self.fail_secure(e);
            }
        }
        self.sec = Some(sec);
    }

    /// Sends what the secure channel has queued itself (handshake messages, FIN).
    pub fn flush_secure(&mut self) {
        let Some(mut sec) = self.sec.take() else {
            return;
        };
        if self.end.is_none() {
            if let Err(e) = sec.flush(&mut |c| self.write_raw(c)) {
                self.fail_secure(e);
            }
        }
        self.sec = Some(sec);
    }

    /// Closes the secure channel's sending direction with its authenticated FIN (best
    /// effort, before the socket is shut down).
    pub fn close_secure(&mut self) {
        if let Some(sec) = self.sec.as_mut() {
            if sec.ch.is_established() && sec.ch.close().is_ok() {
                self.flush_secure();
                self.flush();
            }
        }
    }

    /// Moves authenticated plaintext from the secure channel into `input` (up to `cap`
    /// bytes); at the socket's EOF checks for the peer's authenticated close. A failure
    /// ends the transport with [`TransportEnd::Secure`]. True when something moved.
    pub fn decrypt(&mut self, now: Instant, cap: usize) -> bool {
        let Some(sec) = self.sec.as_mut() else {
            return false;
        };
        if matches!(self.end, Some(TransportEnd::Secure(_))) {
            return false;
        }
        let r = sec.decrypt(now, &mut self.input, cap).and_then(|moved| {
            if self.end == Some(TransportEnd::Eof)
                && sec.raw_in.is_empty()
                && sec.ch.plaintext().is_empty()
            {
                sec.ch.handle_eof()?;
            }
            Ok(moved)
        });
        match r {
            Ok(moved) => moved,
            Err(e) => {
                self.fail_secure(e);
                true
            }
        }
    }

    /// The secure channel failed: the transport ends with the typed error.
    pub fn fail_secure(&mut self, e: dmsg_core::secure::SecureError) {
        self.end = Some(TransportEnd::Secure(e));
        if let Some(sec) = self.sec.as_mut() {
            sec.raw_in.clear();
        }
        self.output.clear();
    }

    /// Writes `bytes` as far as the socket takes them; the rest waits in `output`.
    fn write_raw(&mut self, bytes: &[u8]) {
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
