//! The frame encoder: writes frames into caller-provided buffers.
//!
//! The encoder owns the per-direction salt counter, so every frame a link sends must go
//! through the same `Encoder`, in the order the bytes go out. It computes the size-dependent
//! fields (`aux_bytes`, both CRCs, the salt) itself.
//!
//! Two ways to write a frame:
//! - [`Encoder::encode`] writes a whole frame into one buffer and tells how many bytes it used
//!   (or, if the buffer is too small, how many it needs, without consuming a sequence number).
//! - [`Encoder::start`] returns a [`FrameWriter`] that hands the frame out in pieces of any
//!   size, for sockets that take a few bytes at a time. Only the extended header is copied;
//!   aux data is read from the caller's slice as it is written.
//!
//! ```
//! use dmsg_core::crc::DefaultCrc;
//! use dmsg_core::encode::Encoder;
//! use dmsg_core::wire::{Body, Cmd, Command, Flags, HeaderRepr, MsgId};
//!
//! let mut enc = Encoder::new(1);
//! let hdr = HeaderRepr::new(Cmd::new(Command::DbgShell, Flags::empty()), MsgId(0));
//! let mut w = enc.start(&DefaultCrc::default(), &hdr, &Body::None, b"tree\0").unwrap();
//! let mut out = [0u8; 128];
//! let mut n = 0;
//! while !w.is_done() {
//!     n += w.write(&mut out[n..(n + 7).min(128)]); // 7 bytes at a time
//! }
//! assert_eq!(n, 128); // 64-byte header + 5 bytes of aux padded to 64
//! ```

use core::fmt;

use crate::crc::Crc32c;
use crate::wire::{align64, Body, ByteOrder, Header, HeaderRepr, AUX_MAX, HDR_MAX, HDR_MAX_BLOCKS};

/// Why a frame could not be encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum EncodeError {
    /// The output buffer is too small; nothing was written and no sequence number was used.
    BufferTooSmall {
        /// Bytes the frame needs.
        needed: usize,
        /// Bytes available.
        available: usize,
    },
    /// The header's size field is 0, above 32 blocks, or smaller than the body needs.
    BadHeaderSize {
        /// The size field.
        blocks: u8,
        /// Blocks the body needs.
        needed: u8,
    },
    /// The body is not the structure the command carries.
    BodyMismatch,
    /// Aux data is larger than the protocol's 1 MiB.
    AuxTooLarge(usize),
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            EncodeError::BufferTooSmall { needed, available } => {
                write!(f, "output buffer has {available} bytes, frame needs {needed}")
            }
            EncodeError::BadHeaderSize { blocks, needed } => write!(
                f,
                "header size field {blocks} blocks is invalid (body needs {needed}, max {HDR_MAX_BLOCKS})"
            ),
            EncodeError::BodyMismatch => write!(f, "body does not match the command"),
            EncodeError::AuxTooLarge(n) => write!(f, "aux data of {n} bytes exceeds 1 MiB"),
        }
    }
}

impl core::error::Error for EncodeError {}

/// Bytes a frame with this header size and aux length occupies on the wire.
pub const fn frame_len(header_blocks: u8, aux_len: usize) -> usize {
    header_blocks as usize * 64 + align64(aux_len)
}

/// Per-direction encoder state: the salt frame counter and the salt's random bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Encoder {
    tx_seq: u8,
    rng: u32,
    order: ByteOrder,
    frames: u64,
}

impl Encoder {
    /// An encoder whose salts' random high bits come from `salt_seed` (any value; it only
    /// needs to differ between links, it is not a secret).
    pub const fn new(salt_seed: u32) -> Encoder {
        Encoder {
            tx_seq: 0,
            rng: salt_seed | 1,
            order: ByteOrder::Little,
            frames: 0,
        }
    }

    /// An encoder that writes frames in `order` (for tests and interop checks; real peers
    /// accept either, we send little-endian).
    pub const fn with_byte_order(salt_seed: u32, order: ByteOrder) -> Encoder {
        let mut e = Encoder::new(salt_seed);
        e.order = order;
        e
    }

    /// Frames encoded so far.
    pub const fn frames(&self) -> u64 {
        self.frames
    }

    /// Restarts the frame counter for a new stream.
    pub fn reset(&mut self) {
        self.tx_seq = 0;
    }

    fn next_salt(&mut self) -> u32 {
        // xorshift32: cheap, deterministic, non-zero.
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.rng = x;
        let salt = (x & 0xFFFF_FF00) | self.tx_seq as u32;
        self.tx_seq = self.tx_seq.wrapping_add(1);
        self.frames += 1;
        salt
    }

    fn validate(header: &HeaderRepr, body: &Body, aux: &[u8]) -> Result<usize, EncodeError> {
        let blocks = header.cmd.size_blocks();
        let needed = body.blocks();
        if blocks == 0 || blocks > HDR_MAX_BLOCKS || blocks < needed {
            return Err(EncodeError::BadHeaderSize { blocks, needed });
        }
        if !body.fits(header.cmd.command()) {
            return Err(EncodeError::BodyMismatch);
        }
        if aux.len() > AUX_MAX {
            return Err(EncodeError::AuxTooLarge(aux.len()));
        }
        Ok(blocks as usize * 64)
    }

    /// Writes the extended header into `ext` (exactly the header length), assigning the salt
    /// and both CRCs (the header CRC only if `seal`).
    fn write_ext<C: Crc32c>(
        &mut self,
        crc: &C,
        header: &HeaderRepr,
        body: &Body,
        aux: &[u8],
        ext: &mut [u8],
        seal: bool,
    ) {
        ext.fill(0);
        let aux_crc = if aux.is_empty() {
            0
        } else {
            let pad = [0u8; 64];
            crc.checksum_parts(&[aux, &pad[..align64(aux.len()) - aux.len()]])
        };
        let repr = HeaderRepr {
            salt: self.next_salt(),
            aux_bytes: aux.len() as u32,
            aux_crc,
            hdr_crc: 0,
            ..*header
        };
        repr.emit(&mut Header::new_unchecked(&mut ext[..], self.order));
        body.emit(ext, self.order);
        if seal {
            let hdr_crc = crc.checksum(ext);
            Header::new_unchecked(&mut ext[..], self.order).set_hdr_crc(hdr_crc);
        }
    }

    /// Encodes a whole frame into `out` and returns its length.
    ///
    /// `header.salt`, `aux_bytes`, `aux_crc` and `hdr_crc` are computed; every other field is
    /// sent as given. The size field must be at least what `body` needs ([`crate::wire::Cmd::new`]
    /// computes it).
    pub fn encode<C: Crc32c>(
        &mut self,
        crc: &C,
        header: &HeaderRepr,
        body: &Body,
        aux: &[u8],
        out: &mut [u8],
    ) -> Result<usize, EncodeError> {
        self.encode_inner(crc, header, body, aux, out, true)
    }

    /// [`Encoder::encode`] without the header CRC (`hdr_crc` is left 0), for a frame handed to
    /// a layer that rewrites header fields and computes the header CRC when it sends the frame
    /// (the reliable session, [`crate::session::Session::send`]). Saves one CRC pass over the
    /// header; the aux CRC is computed as usual.
    pub fn encode_unsealed<C: Crc32c>(
        &mut self,
        crc: &C,
        header: &HeaderRepr,
        body: &Body,
        aux: &[u8],
        out: &mut [u8],
    ) -> Result<usize, EncodeError> {
        self.encode_inner(crc, header, body, aux, out, false)
    }

    fn encode_inner<C: Crc32c>(
        &mut self,
        crc: &C,
        header: &HeaderRepr,
        body: &Body,
        aux: &[u8],
        out: &mut [u8],
        seal: bool,
    ) -> Result<usize, EncodeError> {
        let hlen = Self::validate(header, body, aux)?;
        let total = hlen + align64(aux.len());
        if out.len() < total {
            return Err(EncodeError::BufferTooSmall {
                needed: total,
                available: out.len(),
            });
        }
        self.write_ext(crc, header, body, aux, &mut out[..hlen], seal);
        out[hlen..hlen + aux.len()].copy_from_slice(aux);
        out[hlen + aux.len()..total].fill(0);
        Ok(total)
    }

    /// Starts a frame to be written out in pieces. The salt is assigned now, so frames must
    /// be written in the order they were started.
    pub fn start<'a, C: Crc32c>(
        &mut self,
        crc: &C,
        header: &HeaderRepr,
        body: &Body,
        aux: &'a [u8],
    ) -> Result<FrameWriter<'a>, EncodeError> {
        let hlen = Self::validate(header, body, aux)?;
        let mut ext = [0u8; HDR_MAX];
        self.write_ext(crc, header, body, aux, &mut ext[..hlen], true);
        Ok(FrameWriter {
            ext,
            header_len: hlen,
            aux,
            pos: 0,
        })
    }
}

/// A frame being written out in pieces (see [`Encoder::start`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FrameWriter<'a> {
    ext: [u8; HDR_MAX],
    header_len: usize,
    aux: &'a [u8],
    pos: usize,
}

impl FrameWriter<'_> {
    /// Total bytes of the frame on the wire.
    pub fn len(&self) -> usize {
        self.header_len + align64(self.aux.len())
    }

    /// Never true: a frame has at least its 64-byte header.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Bytes not yet written.
    pub fn remaining(&self) -> usize {
        self.len() - self.pos
    }

    /// True when every byte has been written.
    pub fn is_done(&self) -> bool {
        self.pos == self.len()
    }

    /// Copies the next bytes of the frame into `out`; returns how many (0 once done).
    pub fn write(&mut self, out: &mut [u8]) -> usize {
        let mut n = 0;
        while n < out.len() && !self.is_done() {
            let (src, zero_len): (&[u8], usize) = if self.pos < self.header_len {
                (&self.ext[self.pos..self.header_len], 0)
            } else if self.pos < self.header_len + self.aux.len() {
                (&self.aux[self.pos - self.header_len..], 0)
            } else {
                (&[], self.len() - self.pos)
            };
            let avail = out.len() - n;
            let take = if src.is_empty() {
                let t = zero_len.min(avail);
                out[n..n + t].fill(0);
                t
            } else {
                let t = src.len().min(avail);
                out[n..n + t].copy_from_slice(&src[..t]);
                t
            };
            n += take;
            self.pos += take;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crc::DefaultCrc;
    use crate::wire::{body::SpanRepr, Cmd, Command, Flags, MsgId};

    fn span_header() -> HeaderRepr {
        HeaderRepr::new(Cmd::new(Command::LnkSpan, Flags::CREATE), MsgId(5))
    }

    #[test]
    fn too_small_buffer_reports_size_and_keeps_the_counter() {
        let mut e = Encoder::new(9);
        let mut small = [0u8; 100];
        let err = e
            .encode(
                &DefaultCrc::default(),
                &span_header(),
                &Body::Span(SpanRepr::default()),
                &[],
                &mut small,
            )
            .unwrap_err();
        assert_eq!(
            err,
            EncodeError::BufferTooSmall {
                needed: 448,
                available: 100
            }
        );
        assert_eq!(e.frames(), 0);
    }

    #[test]
    fn mismatched_body_and_size_are_rejected() {
        let mut e = Encoder::new(9);
        let mut out = [0u8; 2048];
        let c = DefaultCrc::default();
        let h = HeaderRepr::new(Cmd::new(Command::LnkPing, Flags::empty()), MsgId(0));
        assert_eq!(
            e.encode(&c, &h, &Body::Span(SpanRepr::default()), &[], &mut out),
            Err(EncodeError::BadHeaderSize {
                blocks: 1,
                needed: 7
            })
        );
        let h = HeaderRepr::new(
            Cmd::with_size(Command::LnkPing, Flags::empty(), 7),
            MsgId(0),
        );
        assert_eq!(
            e.encode(&c, &h, &Body::Span(SpanRepr::default()), &[], &mut out),
            Err(EncodeError::BodyMismatch)
        );
    }

    #[test]
    fn writer_pieces_equal_whole_frame() {
        let aux = [7u8; 130];
        let c = DefaultCrc::default();
        let mut whole = [0u8; 1024];
        let n = Encoder::new(4)
            .encode(
                &c,
                &span_header(),
                &Body::Span(SpanRepr::default()),
                &aux,
                &mut whole,
            )
            .unwrap();
        for piece in [1, 5, 64, 1000] {
            let mut w = Encoder::new(4)
                .start(&c, &span_header(), &Body::Span(SpanRepr::default()), &aux)
                .unwrap();
            assert_eq!(w.len(), n);
            let mut out = [0u8; 1024];
            let mut at = 0;
            while !w.is_done() {
                let end = (at + piece).min(out.len());
                at += w.write(&mut out[at..end]);
            }
            assert_eq!(w.write(&mut out[..1]), 0);
            assert_eq!(&out[..at], &whole[..n], "piece {piece}");
        }
    }

    #[test]
    fn salt_low_byte_counts_frames_and_wraps() {
        let mut e = Encoder::new(1);
        let c = DefaultCrc::default();
        let h = HeaderRepr::new(Cmd::new(Command::LnkPad, Flags::empty()), MsgId(0));
        let mut out = [0u8; 64];
        for i in 0..300u32 {
            e.encode(&c, &h, &Body::None, &[], &mut out).unwrap();
            let salt = u32::from_le_bytes([out[4], out[5], out[6], out[7]]);
            assert_eq!(salt & 0xFF, i & 0xFF);
        }
    }
}
