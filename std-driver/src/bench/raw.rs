//! The raw-TCP baseline: the same payloads with the thinnest framing that still delimits
//! messages, a 4-byte little-endian length before each payload, over the same kind of socket
//! (Nagle off) with the same batching (one `write` per 256 KiB of frames, one `read` per
//! 256 KiB chunk). No header, no checksum, no state.

use std::hint::black_box;
use std::io::{self, Read, Write};
use std::net::TcpStream;

use super::engine::{READ_BUF, WRITE_BUF};

/// Bytes of framing before each payload.
pub const PREFIX: usize = 4;

/// Sends `count` frames of `payload`, batched; returns the bytes written.
pub fn send(stream: &mut TcpStream, count: u64, payload: &[u8]) -> io::Result<u64> {
    stream.set_nodelay(true)?;
    let frame = PREFIX + payload.len();
    let mut buf = vec![0u8; WRITE_BUF.max(frame)];
    let len = (payload.len() as u32).to_le_bytes();
    let mut fill = 0;
    let mut total = 0u64;
    for _ in 0..count {
        if fill + frame > buf.len() {
            stream.write_all(&buf[..fill])?;
            total += fill as u64;
            fill = 0;
        }
        buf[fill..fill + PREFIX].copy_from_slice(&len);
        buf[fill + PREFIX..fill + frame].copy_from_slice(payload);
        fill += frame;
    }
    stream.write_all(&buf[..fill])?;
    Ok(total + fill as u64)
}

/// Reads frames until `count` arrived; returns the payload bytes received. Every payload is
/// handed out as a slice (and kept alive with `black_box`), as a receiver would use it.
pub fn receive(stream: &mut TcpStream, count: u64) -> io::Result<u64> {
    stream.set_nodelay(true)?;
    let mut buf = vec![0u8; READ_BUF];
    let (mut start, mut end) = (0usize, 0usize);
    let (mut got, mut bytes) = (0u64, 0u64);
    while got < count {
        if start > 0 {
            buf.copy_within(start..end, 0);
            end -= start;
            start = 0;
        }
        if end == buf.len() {
            // A frame larger than the buffer: grow (bounded by the largest payload sent).
            buf.resize(buf.len() * 2, 0);
        }
        let n = stream.read(&mut buf[end..])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the sender closed after {got} of {count} frames"),
            ));
        }
        end += n;
        while let Some((payload, used)) = next_frame(&buf[start..end]) {
            black_box(payload);
            bytes += payload.len() as u64;
            got += 1;
            start += used;
        }
    }
    Ok(bytes)
}

/// The first whole frame in `data`: its payload and the bytes it takes.
pub fn next_frame(data: &[u8]) -> Option<(&[u8], usize)> {
    let len = u32::from_le_bytes(data.get(..PREFIX)?.try_into().ok()?) as usize;
    let payload = data.get(PREFIX..PREFIX + len)?;
    Some((payload, PREFIX + len))
}

/// Reads length-prefixed frames from a stream in large chunks (one `read` gives every frame
/// that arrived), as the DMSG endpoint does.
pub struct FrameReader {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Default for FrameReader {
    fn default() -> Self {
        FrameReader::new()
    }
}

impl FrameReader {
    /// An empty reader with a [`READ_BUF`] buffer.
    pub fn new() -> FrameReader {
        FrameReader {
            buf: vec![0; READ_BUF],
            start: 0,
            end: 0,
        }
    }

    /// The next whole frame's payload, reading as needed; `None` at a clean end of stream.
    pub fn next<'a>(&'a mut self, stream: &mut TcpStream) -> io::Result<Option<&'a [u8]>> {
        loop {
            if let Some((_, used)) = next_frame(&self.buf[self.start..self.end]) {
                let at = self.start;
                self.start += used;
                return Ok(Some(&self.buf[at + PREFIX..at + used]));
            }
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.end == self.buf.len() {
                self.buf.resize(self.buf.len() * 2, 0);
            }
            let n = stream.read(&mut self.buf[self.end..])?;
            if n == 0 {
                return if self.end == 0 {
                    Ok(None)
                } else {
                    Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the stream ended inside a frame",
                    ))
                };
            }
            self.end += n;
        }
    }
}

/// Writes one frame with one `write` (prefix and payload in one buffer).
pub fn write_frame(stream: &mut TcpStream, out: &mut Vec<u8>, payload: &[u8]) -> io::Result<()> {
    out.clear();
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
    stream.write_all(out)
}

/// Answers every frame with the same payload until the client closes (the ping-pong
/// server); returns how many it answered.
pub fn echo(mut stream: TcpStream) -> io::Result<u64> {
    stream.set_nodelay(true)?;
    let mut reader = FrameReader::new();
    let mut out = Vec::new();
    let mut answered = 0;
    while let Some(payload) = reader.next(&mut stream)? {
        write_frame(&mut stream, &mut out, payload)?;
        answered += 1;
    }
    Ok(answered)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_found_only_when_whole() {
        let mut data = vec![3, 0, 0, 0, b'a', b'b', b'c', 0, 0, 0, 0, 2, 0];
        assert_eq!(next_frame(&data), Some((&b"abc"[..], 7)));
        assert_eq!(next_frame(&data[7..]), Some((&b""[..], 4)));
        assert_eq!(next_frame(&data[11..]), None);
        data.truncate(6);
        assert_eq!(next_frame(&data), None);
    }
}
