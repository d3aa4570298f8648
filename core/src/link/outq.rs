//! The per-link output queue: encoded frames waiting for [`poll_transmit`].
//!
//! Frames are encoded when they are accepted, in the order they will leave, so the salt frame
//! counter always matches the wire order. The queue is one linear buffer that is compacted
//! (a `copy_within`) when a frame does not fit behind the last one.
//!
//! [`poll_transmit`]: super::Connection::poll_transmit

use crate::crc::Crc32c;
use crate::encode::{EncodeError, Encoder};
use crate::wire::{align64, Body, ByteOrder, Header, HeaderRepr};

/// Bytes held back for frames the connection must send by itself (PING replies, error
/// answers, LNK_CONN answers and DELETEs): two 64-byte frames, the most one received frame
/// can cause. Application commands may fill the queue only up to `TX - CTL_RESERVE`, and
/// input is read only while this much is free, so these frames always fit.
pub const CTL_RESERVE: usize = 2 * 64;

/// A FIFO of encoded bytes with a fixed capacity of `N`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct OutQueue<const N: usize> {
    buf: [u8; N],
    start: usize,
    end: usize,
}

/// Wire length of a frame with this header and aux data.
pub(crate) fn wire_len(header: &HeaderRepr, aux: &[u8]) -> usize {
    header.header_len() + align64(aux.len())
}

impl<const N: usize> OutQueue<N> {
    pub const fn new() -> Self {
        OutQueue {
            buf: [0; N],
            start: 0,
            end: 0,
        }
    }

    /// Bytes waiting.
    pub const fn len(&self) -> usize {
        self.end - self.start
    }

    pub const fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Bytes that can still be queued.
    pub const fn free(&self) -> usize {
        N - self.len()
    }

    /// Encodes one frame at the end of the queue. On error nothing is queued and no salt is
    /// used.
    pub fn push<C: Crc32c>(
        &mut self,
        enc: &mut Encoder,
        crc: &C,
        header: &HeaderRepr,
        body: &Body,
        aux: &[u8],
    ) -> Result<usize, EncodeError> {
        let need = wire_len(header, aux);
        if need > self.free() {
            return Err(EncodeError::BufferTooSmall {
                needed: need,
                available: self.free(),
            });
        }
        if self.end + need > N {
            self.compact();
        }
        let n = enc.encode(crc, header, body, aux, &mut self.buf[self.end..])?;
        debug_assert_eq!(n, need);
        self.end += n;
        debug_assert!(self.end <= N);
        Ok(n)
    }

    /// Like [`push`](Self::push), with `ext` written after the base header as an opaque
    /// extended header (the header size in `header.cmd` must cover it) and the header CRC
    /// computed over the result. On error nothing is queued.
    pub fn push_with_ext<C: Crc32c>(
        &mut self,
        enc: &mut Encoder,
        crc: &C,
        header: &HeaderRepr,
        body: &Body,
        ext: &[u8],
        aux: &[u8],
    ) -> Result<usize, EncodeError> {
        if ext.is_empty() {
            return self.push(enc, crc, header, body, aux);
        }
        let hlen = header.header_len();
        if 64 + ext.len() > hlen {
            return Err(EncodeError::BodyMismatch);
        }
        let need = wire_len(header, aux);
        if need > self.free() {
            return Err(EncodeError::BufferTooSmall {
                needed: need,
                available: self.free(),
            });
        }
        if self.end + need > N {
            self.compact();
        }
        let frame = &mut self.buf[self.end..];
        let n = enc.encode_unsealed(crc, header, body, aux, frame)?;
        debug_assert_eq!(n, need);
        frame[64..64 + ext.len()].copy_from_slice(ext);
        let hdr_crc = crc.checksum(&frame[..hlen]);
        Header::new_unchecked(&mut frame[..hlen], ByteOrder::Little).set_hdr_crc(hdr_crc);
        self.end += n;
        debug_assert!(self.end <= N);
        Ok(n)
    }

    /// Moves the waiting bytes to the front of the buffer.
    fn compact(&mut self) {
        self.buf.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
    }

    /// Copies waiting bytes into `out`; returns how many.
    pub fn pop(&mut self, out: &mut [u8]) -> usize {
        let n = self.len().min(out.len());
        out[..n].copy_from_slice(&self.buf[self.start..self.start + n]);
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        n
    }

    /// Drops the first `n` waiting bytes (they were written from [`waiting`](Self::waiting));
    /// returns how many were dropped (at most what waits).
    pub fn consume(&mut self, n: usize) -> usize {
        let n = n.min(self.len());
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        n
    }

    /// The bytes waiting, oldest first.
    pub fn waiting(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Drops everything waiting after the first `keep` bytes.
    pub fn truncate(&mut self, keep: usize) {
        self.end = self.end.min(self.start + keep);
    }

    /// Drops everything waiting; returns how many bytes.
    pub fn clear(&mut self) -> usize {
        let n = self.len();
        self.start = 0;
        self.end = 0;
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crc::DefaultCrc;
    use crate::wire::{Cmd, Command, Flags, MsgId};

    #[test]
    fn frames_come_out_in_order_across_compaction() {
        let mut q = OutQueue::<256>::new();
        let mut enc = Encoder::new(1);
        let crc = DefaultCrc::default();
        let ping = HeaderRepr::new(Cmd::new(Command::LnkPing, Flags::empty()), MsgId(0));
        for _ in 0..3 {
            q.push(&mut enc, &crc, &ping, &Body::None, &[]).unwrap();
        }
        let mut out = [0u8; 100];
        assert_eq!(q.pop(&mut out), 100);
        // 92 bytes wait at offset 100; a 128-byte frame needs compaction.
        q.push(&mut enc, &crc, &ping, &Body::None, b"x").unwrap();
        assert_eq!(q.len(), 92 + 128);
        assert!(matches!(
            q.push(&mut enc, &crc, &ping, &Body::None, &[]),
            Err(EncodeError::BufferTooSmall { .. })
        ));
        let mut all = [0u8; 256];
        let n = q.pop(&mut all);
        assert_eq!(n, 220);
        // The fourth frame's salt counter is 3: nothing was consumed by the failed push.
        assert_eq!(all[92 + 4], 3);
        assert!(q.is_empty());
    }

    #[test]
    fn consuming_in_place_gives_the_same_bytes_as_popping() {
        let crc = DefaultCrc::default();
        let ping = HeaderRepr::new(Cmd::new(Command::LnkPing, Flags::empty()), MsgId(0));
        let (mut a, mut b) = (OutQueue::<512>::new(), OutQueue::<512>::new());
        let (mut ea, mut eb) = (Encoder::new(9), Encoder::new(9));
        for _ in 0..3 {
            a.push(&mut ea, &crc, &ping, &Body::None, b"abc").unwrap();
            b.push(&mut eb, &crc, &ping, &Body::None, b"abc").unwrap();
        }
        let mut popped = [0u8; 512];
        let n = a.pop(&mut popped[..100]);
        let mut lent = b.waiting()[..100].to_vec();
        assert_eq!(b.consume(100), 100);
        let rest = a.pop(&mut popped[n..]);
        lent.extend_from_slice(b.waiting());
        assert_eq!(b.consume(usize::MAX), rest, "capped at what waits");
        assert_eq!(&popped[..n + rest], &lent[..]);
        assert!(b.is_empty() && b.waiting().is_empty());
    }
}
