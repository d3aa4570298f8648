//! The incremental frame decoder.
//!
//! Feed it any chunking of a byte stream, from one byte at a time to many frames at once, and
//! it yields the same frames. It checks, in the order DragonFly's receive path does: the magic
//! (byte order), the header size field, the aux size against the configured maximum, the
//! extended-header CRC, the aux CRC, and the salt frame counter. The first error latches: the
//! stream is unusable and every later call returns the same error.
//!
//! Memory is the storage the caller hands in (an array, a `&mut [u8]` or, on a host, a boxed
//! slice), which must hold the largest header plus the largest aligned aux payload the
//! configuration allows. When a whole frame already sits in the caller's input and nothing is
//! buffered, the frame is verified and returned in place, without a copy.
//!
//! ```
//! use dmsg_core::crc::DefaultCrc;
//! use dmsg_core::decode::{Decoder, DecoderConfig};
//! use dmsg_core::encode::Encoder;
//! use dmsg_core::wire::{Body, Cmd, Command, Flags, HeaderRepr, MsgId};
//!
//! // Encode two frames into one buffer.
//! let mut enc = Encoder::new(7);
//! let mut wire = [0u8; 512];
//! let ping = HeaderRepr::new(Cmd::new(Command::LnkPing, Flags::empty()), MsgId(0));
//! let mut n = enc.encode(&DefaultCrc::default(), &ping, &Body::None, &[], &mut wire).unwrap();
//! n += enc.encode(&DefaultCrc::default(), &ping, &Body::None, b"hi", &mut wire[n..]).unwrap();
//!
//! // Decode them, one byte at a time.
//! let cfg = DecoderConfig { max_aux_bytes: 1024, ..DecoderConfig::default() };
//! let mut dec = Decoder::new([0u8; 2048 + 1024], cfg, DefaultCrc::default()).unwrap();
//! let mut frames = 0;
//! for byte in wire[..n].chunks(1) {
//!     let mut input = byte;
//!     while !input.is_empty() {
//!         let out = dec.decode(input).unwrap();
//!         input = &input[out.consumed..];
//!         if let Some(frame) = out.frame {
//!             assert_eq!(frame.repr().cmd.command(), Command::LnkPing);
//!             frames += 1;
//!         }
//!     }
//! }
//! assert_eq!(frames, 2);
//! ```

use core::fmt;

use crate::crc::Crc32c;
use crate::errcode::RecvErrorCode;
use crate::wire::{
    align64, Body, ByteOrder, Header, HeaderRepr, WireError, AUX_MAX, HDR_MAX_BLOCKS, HEADER_LEN,
};

/// Decoder limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct DecoderConfig {
    /// Largest aux payload accepted, in bytes (at most 1 MiB). An MCU leaf typically wants
    /// 1 KiB, a host 1 MiB. A frame announcing more is a `FIELD` error.
    pub max_aux_bytes: usize,
    /// Largest extended header accepted, in 64-byte blocks (1..=32). The protocol allows 32
    /// (2 KiB); the largest structure defined is LNK_VOLCONF with 8 (512 bytes), so a tight
    /// firmware can set 8 and save 1.5 KiB of buffer.
    pub max_header_blocks: u8,
    /// Check the salt's low byte against the count of frames received (DragonFly does; a
    /// capture that starts mid-stream needs this off).
    pub check_sequence: bool,
}

impl Default for DecoderConfig {
    /// 1 MiB aux, 32-block headers, sequence checked.
    fn default() -> Self {
        DecoderConfig {
            max_aux_bytes: AUX_MAX,
            max_header_blocks: HDR_MAX_BLOCKS,
            check_sequence: true,
        }
    }
}

impl DecoderConfig {
    /// Bytes of storage a decoder with this configuration needs.
    pub const fn storage_len(&self) -> usize {
        self.max_header_blocks as usize * 64 + align64(self.max_aux_bytes)
    }
}

/// A configuration the decoder cannot run with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum ConfigError {
    /// `max_aux_bytes` is larger than the protocol's 1 MiB.
    AuxLimitTooLarge(usize),
    /// `max_header_blocks` is 0 or larger than 32.
    HeaderLimitOutOfRange(u8),
    /// The storage is shorter than [`DecoderConfig::storage_len`].
    StorageTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes given.
        given: usize,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ConfigError::AuxLimitTooLarge(n) => {
                write!(f, "max_aux_bytes {n} exceeds the protocol limit {AUX_MAX}")
            }
            ConfigError::HeaderLimitOutOfRange(n) => {
                write!(f, "max_header_blocks {n} is outside 1..={HDR_MAX_BLOCKS}")
            }
            ConfigError::StorageTooSmall { needed, given } => {
                write!(
                    f,
                    "decoder storage is {given} bytes, configuration needs {needed}"
                )
            }
        }
    }
}

impl core::error::Error for ConfigError {}

/// Why a stream became unusable. Each maps to a protocol receive error with
/// [`DecodeError::code`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum DecodeError {
    /// The magic is neither 0x4832 nor 0x3248 (`SYNC`).
    BadMagic {
        /// The magic as read little-endian.
        magic: u16,
    },
    /// The header size field is 0 or above the configured maximum (`FIELD`).
    BadHeaderSize {
        /// The size field.
        blocks: u8,
        /// The configured maximum.
        max_blocks: u8,
    },
    /// `aux_bytes` exceeds the configured maximum (`FIELD`).
    AuxTooLarge {
        /// The announced length.
        aux_bytes: u32,
        /// The configured maximum.
        max: u32,
    },
    /// The extended-header CRC does not match (`XCRC`).
    HeaderCrc {
        /// The `hdr_crc` field.
        expected: u32,
        /// CRC computed over the received bytes.
        computed: u32,
    },
    /// The aux CRC does not match (`ACRC`).
    AuxCrc {
        /// The `aux_crc` field.
        expected: u32,
        /// CRC computed over the received aligned aux bytes.
        computed: u32,
    },
    /// The salt frame counter skipped (`MSGSEQ`).
    Sequence {
        /// The low byte we expected.
        expected: u8,
        /// The low byte received.
        got: u8,
    },
}

impl DecodeError {
    /// The protocol receive error this maps to.
    pub const fn code(&self) -> RecvErrorCode {
        match self {
            DecodeError::BadMagic { .. } => RecvErrorCode::Sync,
            DecodeError::BadHeaderSize { .. } | DecodeError::AuxTooLarge { .. } => {
                RecvErrorCode::Field
            }
            DecodeError::HeaderCrc { .. } => RecvErrorCode::Xcrc,
            DecodeError::AuxCrc { .. } => RecvErrorCode::Acrc,
            DecodeError::Sequence { .. } => RecvErrorCode::MsgSeq,
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let code = self.code();
        match *self {
            DecodeError::BadMagic { magic } => write!(
                f,
                "{code}: bad magic {magic:#06x}; the stream is not DMSG or lost sync (encrypted peer?)"
            ),
            DecodeError::BadHeaderSize { blocks, max_blocks } => write!(
                f,
                "{code}: header size field {blocks} blocks is outside 1..={max_blocks}"
            ),
            DecodeError::AuxTooLarge { aux_bytes, max } => write!(
                f,
                "{code}: aux_bytes {aux_bytes} exceeds the configured maximum {max}"
            ),
            DecodeError::HeaderCrc { expected, computed } => write!(
                f,
                "{code}: header CRC mismatch (field {expected:#010x}, computed {computed:#010x})"
            ),
            DecodeError::AuxCrc { expected, computed } => write!(
                f,
                "{code}: aux CRC mismatch (field {expected:#010x}, computed {computed:#010x})"
            ),
            DecodeError::Sequence { expected, got } => write!(
                f,
                "{code}: salt sequence {got} where {expected} was expected (frame lost or injected)"
            ),
        }
    }
}

impl core::error::Error for DecodeError {}

/// One complete, verified frame, borrowing either the decoder's buffer or the caller's input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    ext: &'a [u8],
    aux: &'a [u8],
    order: ByteOrder,
}

impl<'a> Frame<'a> {
    /// The base header view.
    pub fn header(&self) -> Header<&'a [u8]> {
        Header::new_unchecked(self.ext, self.order)
    }

    /// The base header as plain values (in native order).
    pub fn repr(&self) -> HeaderRepr {
        HeaderRepr::parse(&self.header())
    }

    /// The extended header parsed for its command. Unknown commands give [`Body::None`].
    pub fn body(&self) -> Result<Body, WireError> {
        Body::parse(self.header().cmd().command(), self.ext, self.order)
    }

    /// The whole extended header as received (base header included).
    pub fn ext_bytes(&self) -> &'a [u8] {
        self.ext
    }

    /// The aux data without its alignment padding (`aux_bytes` long).
    pub fn aux(&self) -> &'a [u8] {
        self.aux
    }

    /// The byte order the sender used.
    pub fn byte_order(&self) -> ByteOrder {
        self.order
    }

    /// Bytes the frame occupied on the wire (header plus aligned aux).
    pub fn wire_len(&self) -> usize {
        self.ext.len() + align64(self.aux.len())
    }
}

/// Result of one [`Decoder::decode`] call.
#[derive(Debug)]
#[must_use = "`consumed` bytes of the input were used and a frame may be ready"]
pub struct Decoded<'a> {
    /// Bytes of the input used; hand the rest to the next call.
    pub consumed: usize,
    /// A complete frame, if one finished. It is valid until the next call.
    pub frame: Option<Frame<'a>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Stage {
    /// Collecting the 64-byte base header.
    Base,
    /// Collecting the rest of the extended header.
    Ext,
    /// Collecting the aligned aux data.
    Aux,
    /// A frame from the buffer was handed out; discard it on the next call.
    Delivered,
}

/// Decoder counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct DecoderStats {
    /// Frames decoded.
    pub frames: u64,
    /// Bytes consumed from the current stream.
    pub bytes: u64,
    /// Frames returned without copying (whole frame in the caller's input).
    pub frames_in_place: u64,
}

/// The incremental decoder. `B` is its storage; `C` the CRC-32C implementation.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Decoder<B, C> {
    storage: B,
    crc: C,
    config: DecoderConfig,
    stage: Stage,
    filled: usize,
    header_len: usize,
    aux_len: usize,
    order: ByteOrder,
    rx_seq: u8,
    error: Option<DecodeError>,
    frame_start: u64,
    stats: DecoderStats,
}

/// Sizes announced by a valid base header.
struct Sizes {
    order: ByteOrder,
    header_len: usize,
    aux_len: usize,
}

impl<B: AsRef<[u8]> + AsMut<[u8]>, C: Crc32c> Decoder<B, C> {
    /// A decoder over `storage`, which must be at least `config.storage_len()` bytes.
    pub fn new(storage: B, config: DecoderConfig, crc: C) -> Result<Self, ConfigError> {
        if config.max_aux_bytes > AUX_MAX {
            return Err(ConfigError::AuxLimitTooLarge(config.max_aux_bytes));
        }
        if config.max_header_blocks == 0 || config.max_header_blocks > HDR_MAX_BLOCKS {
            return Err(ConfigError::HeaderLimitOutOfRange(config.max_header_blocks));
        }
        let given = storage.as_ref().len();
        if given < config.storage_len() {
            return Err(ConfigError::StorageTooSmall {
                needed: config.storage_len(),
                given,
            });
        }
        Ok(Decoder {
            storage,
            crc,
            config,
            stage: Stage::Base,
            filled: 0,
            header_len: 0,
            aux_len: 0,
            order: ByteOrder::Little,
            rx_seq: 0,
            error: None,
            frame_start: 0,
            stats: DecoderStats::default(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &DecoderConfig {
        &self.config
    }

    /// Counters.
    pub fn stats(&self) -> &DecoderStats {
        &self.stats
    }

    /// The latched error, if the stream went bad.
    pub fn error(&self) -> Option<DecodeError> {
        self.error
    }

    /// True when no partial frame is buffered (a clean place for the stream to end).
    pub fn is_idle(&self) -> bool {
        self.error.is_none() && matches!(self.stage, Stage::Base | Stage::Delivered) && {
            self.stage == Stage::Delivered || self.filled == 0
        }
    }

    /// Bytes of a partial frame currently buffered.
    pub fn buffered(&self) -> usize {
        if self.stage == Stage::Delivered {
            0
        } else {
            self.filled
        }
    }

    /// Stream offset (bytes since the start or the last [`Decoder::reset`]) of the first byte
    /// of the frame being assembled, or, after an error, of the frame that was rejected.
    pub fn frame_offset(&self) -> u64 {
        self.frame_start
    }

    /// The base header and byte order of the frame that failed a CRC or sequence check, for
    /// diagnostics.
    pub fn rejected_header(&self) -> Option<(HeaderRepr, ByteOrder)> {
        match self.error {
            Some(
                DecodeError::HeaderCrc { .. }
                | DecodeError::AuxCrc { .. }
                | DecodeError::Sequence { .. },
            ) if self.filled >= HEADER_LEN => {
                let h = Header::new_checked(&self.storage.as_ref()[..HEADER_LEN]).ok()?;
                Some((HeaderRepr::parse(&h), h.byte_order()))
            }
            _ => None,
        }
    }

    /// Restarts on a new stream (e.g. after a reconnect): clears the buffer, the error, the
    /// frame counter and the stream offset. Frame counters are kept.
    pub fn reset(&mut self) {
        self.stage = Stage::Base;
        self.filled = 0;
        self.rx_seq = 0;
        self.error = None;
        self.stats.bytes = 0;
        self.frame_start = 0;
    }

    fn fail(&mut self, e: DecodeError) -> DecodeError {
        self.error = Some(e);
        e
    }

    /// Checks a complete base header and returns the sizes it announces.
    fn check_base(&self, base: &[u8]) -> Result<Sizes, DecodeError> {
        let magic = u16::from_le_bytes([base[0], base[1]]);
        let h = Header::new_checked(base).map_err(|_| DecodeError::BadMagic { magic })?;
        let blocks = h.cmd().size_blocks();
        if blocks == 0 || blocks > self.config.max_header_blocks {
            return Err(DecodeError::BadHeaderSize {
                blocks,
                max_blocks: self.config.max_header_blocks,
            });
        }
        let aux_bytes = h.aux_bytes();
        if aux_bytes as usize > self.config.max_aux_bytes {
            return Err(DecodeError::AuxTooLarge {
                aux_bytes,
                max: self.config.max_aux_bytes as u32,
            });
        }
        Ok(Sizes {
            order: h.byte_order(),
            header_len: blocks as usize * 64,
            aux_len: aux_bytes as usize,
        })
    }

    /// Feeds `input` and returns how much of it was used and, if one completed, a frame.
    ///
    /// Call again with the unused rest until `consumed` is the whole input and no frame is
    /// returned. A returned frame is valid until the next call.
    pub fn decode<'r>(&'r mut self, input: &'r [u8]) -> Result<Decoded<'r>, DecodeError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        if self.stage == Stage::Delivered {
            self.stage = Stage::Base;
            self.filled = 0;
        }
        if self.filled == 0 {
            self.frame_start = self.stats.bytes;
        }
        // Fast path: nothing buffered and a whole frame in the input.
        if self.filled == 0 && input.len() >= HEADER_LEN {
            let sizes = match self.check_base(&input[..HEADER_LEN]) {
                Ok(s) => s,
                Err(e) => return Err(self.fail(e)),
            };
            let total = sizes.header_len + align64(sizes.aux_len);
            if input.len() >= total {
                let frame = match verify(&self.crc, &sizes, &input[..total]) {
                    Ok(f) => f,
                    Err(e) => {
                        // Keep the header for `rejected_header`.
                        self.storage.as_mut()[..HEADER_LEN].copy_from_slice(&input[..HEADER_LEN]);
                        self.filled = HEADER_LEN;
                        return Err(self.fail(e));
                    }
                };
                if let Err(e) = self.check_sequence(&frame) {
                    self.storage.as_mut()[..HEADER_LEN].copy_from_slice(&input[..HEADER_LEN]);
                    self.filled = HEADER_LEN;
                    return Err(self.fail(e));
                }
                self.stats.frames += 1;
                self.stats.frames_in_place += 1;
                self.stats.bytes += total as u64;
                return Ok(Decoded {
                    consumed: total,
                    frame: Some(frame),
                });
            }
        }
        let mut consumed = 0;
        loop {
            let need = match self.stage {
                Stage::Base => HEADER_LEN,
                Stage::Ext => self.header_len,
                Stage::Aux => self.header_len + align64(self.aux_len),
                Stage::Delivered => unreachable_stage(),
            };
            if self.filled < need {
                let take = (need - self.filled).min(input.len() - consumed);
                self.storage.as_mut()[self.filled..self.filled + take]
                    .copy_from_slice(&input[consumed..consumed + take]);
                self.filled += take;
                consumed += take;
                self.stats.bytes += take as u64;
                if self.filled < need {
                    return Ok(Decoded {
                        consumed,
                        frame: None,
                    });
                }
            }
            match self.stage {
                Stage::Base => {
                    let sizes = match self.check_base(&self.storage.as_ref()[..HEADER_LEN]) {
                        Ok(s) => s,
                        Err(e) => return Err(self.fail(e)),
                    };
                    self.order = sizes.order;
                    self.header_len = sizes.header_len;
                    self.aux_len = sizes.aux_len;
                    self.stage = Stage::Ext;
                }
                Stage::Ext => {
                    let sizes = self.sizes();
                    let buf = &self.storage.as_ref()[..self.header_len];
                    if let Err(e) = check_header_crc(&self.crc, sizes.order, buf) {
                        return Err(self.fail(e));
                    }
                    self.stage = Stage::Aux;
                }
                Stage::Aux => {
                    let sizes = self.sizes();
                    let total = sizes.header_len + align64(sizes.aux_len);
                    let checked = {
                        let buf = &self.storage.as_ref()[..total];
                        check_aux_crc(&self.crc, &sizes, buf).and_then(|()| {
                            let salt = Header::new_unchecked(buf, sizes.order).salt();
                            expected_sequence(salt, self.rx_seq, self.config.check_sequence)
                        })
                    };
                    if let Err(e) = checked {
                        return Err(self.fail(e));
                    }
                    self.rx_seq = self.rx_seq.wrapping_add(1);
                    self.stats.frames += 1;
                    self.stage = Stage::Delivered;
                    let buf = &self.storage.as_ref()[..total];
                    return Ok(Decoded {
                        consumed,
                        frame: Some(Frame {
                            ext: &buf[..sizes.header_len],
                            aux: &buf[sizes.header_len..sizes.header_len + sizes.aux_len],
                            order: sizes.order,
                        }),
                    });
                }
                // Replaced at the top of `decode`; recover to a clean state if ever seen.
                Stage::Delivered => {
                    self.stage = Stage::Base;
                    self.filled = 0;
                }
            }
        }
    }

    fn sizes(&self) -> Sizes {
        Sizes {
            order: self.order,
            header_len: self.header_len,
            aux_len: self.aux_len,
        }
    }

    fn check_sequence(&mut self, frame: &Frame<'_>) -> Result<(), DecodeError> {
        expected_sequence(
            frame.header().salt(),
            self.rx_seq,
            self.config.check_sequence,
        )?;
        self.rx_seq = self.rx_seq.wrapping_add(1);
        Ok(())
    }
}

/// The `Delivered` stage is replaced at the top of `decode`, so the loop never sees it. Kept
/// as a function so the invariant has one name; it resolves to the `Base` need if ever hit.
#[inline(always)]
fn unreachable_stage() -> usize {
    debug_assert!(false, "decoder loop reached the Delivered stage");
    HEADER_LEN
}

fn expected_sequence(salt: u32, rx_seq: u8, check: bool) -> Result<(), DecodeError> {
    let got = (salt & 0xFF) as u8;
    if check && got != rx_seq {
        return Err(DecodeError::Sequence {
            expected: rx_seq,
            got,
        });
    }
    Ok(())
}

fn check_header_crc<C: Crc32c>(crc: &C, order: ByteOrder, ext: &[u8]) -> Result<(), DecodeError> {
    let h = Header::new_unchecked(ext, order);
    let expected = h.hdr_crc();
    // One contiguous update over a copy with the field zeroed: splitting the base header
    // around the 4-byte field makes the table CRC fall back to byte steps (callgrind).
    let mut base = [0u8; HEADER_LEN];
    base.copy_from_slice(&ext[..HEADER_LEN]);
    base[0x3C..0x40].fill(0);
    let computed = crc.checksum_parts(&[&base, &ext[HEADER_LEN..]]);
    if computed != expected {
        return Err(DecodeError::HeaderCrc { expected, computed });
    }
    Ok(())
}

fn check_aux_crc<C: Crc32c>(crc: &C, sizes: &Sizes, frame: &[u8]) -> Result<(), DecodeError> {
    if sizes.aux_len == 0 {
        return Ok(());
    }
    let h = Header::new_unchecked(&frame[..HEADER_LEN], sizes.order);
    let expected = h.aux_crc();
    let computed = crc.checksum(&frame[sizes.header_len..]);
    if computed != expected {
        return Err(DecodeError::AuxCrc { expected, computed });
    }
    Ok(())
}

fn verify<'a, C: Crc32c>(
    crc: &C,
    sizes: &Sizes,
    frame: &'a [u8],
) -> Result<Frame<'a>, DecodeError> {
    check_header_crc(crc, sizes.order, &frame[..sizes.header_len])?;
    check_aux_crc(crc, sizes, frame)?;
    Ok(Frame {
        ext: &frame[..sizes.header_len],
        aux: &frame[sizes.header_len..sizes.header_len + sizes.aux_len],
        order: sizes.order,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crc::DefaultCrc;
    use crate::encode::Encoder;
    use crate::wire::{Cmd, Command, Flags, MsgId};

    const CFG: DecoderConfig = DecoderConfig {
        max_aux_bytes: 256,
        max_header_blocks: 8,
        check_sequence: true,
    };

    fn dec() -> Decoder<[u8; 768], DefaultCrc> {
        Decoder::new([0u8; 768], CFG, DefaultCrc::default()).unwrap()
    }

    fn frames(n: usize, aux: &[u8]) -> ([u8; 4096], usize) {
        let mut enc = Encoder::new(3);
        let mut out = [0u8; 4096];
        let mut len = 0;
        for i in 0..n {
            let h = HeaderRepr::new(Cmd::new(Command::DbgShell, Flags::empty()), MsgId(i as u64));
            len += enc
                .encode(
                    &DefaultCrc::default(),
                    &h,
                    &Body::None,
                    aux,
                    &mut out[len..],
                )
                .unwrap();
        }
        (out, len)
    }

    #[test]
    fn config_is_validated() {
        let c = DefaultCrc::default();
        let too_big = DecoderConfig {
            max_aux_bytes: AUX_MAX + 1,
            ..CFG
        };
        assert_eq!(
            Decoder::new([0u8; 768], too_big, c).err(),
            Some(ConfigError::AuxLimitTooLarge(AUX_MAX + 1))
        );
        let zero = DecoderConfig {
            max_header_blocks: 0,
            ..CFG
        };
        assert_eq!(
            Decoder::new([0u8; 768], zero, c).err(),
            Some(ConfigError::HeaderLimitOutOfRange(0))
        );
        assert_eq!(
            Decoder::new([0u8; 100], CFG, c).err(),
            Some(ConfigError::StorageTooSmall {
                needed: 768,
                given: 100
            })
        );
    }

    #[test]
    fn whole_frames_are_returned_in_place_and_split_ones_buffered() {
        let (wire, len) = frames(3, b"hello");
        let mut d = dec();
        let mut pos = 0;
        let mut n = 0;
        while pos < len {
            let out = d.decode(&wire[pos..len]).unwrap();
            pos += out.consumed;
            let f = out.frame.unwrap();
            assert_eq!(f.aux(), b"hello");
            assert_eq!(f.repr().msgid, MsgId(n));
            n += 1;
        }
        assert_eq!(n, 3);
        assert_eq!(d.stats().frames_in_place, 3);
        assert!(d.is_idle());

        let mut d = dec();
        let out = d.decode(&wire[..100]).unwrap();
        assert_eq!((out.consumed, out.frame.is_none()), (100, true));
        assert!(!d.is_idle());
        assert_eq!(d.buffered(), 100);
        let out = d.decode(&wire[100..len]).unwrap();
        assert_eq!(out.consumed, 28);
        assert_eq!(out.frame.unwrap().aux(), b"hello");
        assert!(d.is_idle());
    }

    #[test]
    fn errors_latch_and_keep_the_rejected_header() {
        let (mut wire, len) = frames(2, b"x");
        wire[128 + 64] ^= 0x01; // aux byte of the second frame
        let mut d = dec();
        let out = d.decode(&wire[..len]).unwrap();
        assert!(out.frame.is_some());
        let e = d.decode(&wire[128..len]).unwrap_err();
        assert!(matches!(e, DecodeError::AuxCrc { .. }));
        assert_eq!(e.code(), RecvErrorCode::Acrc);
        assert_eq!(d.rejected_header().unwrap().0.msgid, MsgId(1));
        assert_eq!(d.frame_offset(), 128);
        assert_eq!(d.decode(&[]).unwrap_err(), e);
        assert_eq!(d.decode(&wire[..len]).unwrap_err(), e);
        d.reset();
        assert!(d.decode(&wire[..len]).unwrap().frame.is_some());
    }

    #[test]
    fn limits_are_field_errors() {
        let mut d = dec();
        let (mut wire, _) = frames(1, &[]);
        wire[0x20] = 9; // size 9 blocks > configured 8
        assert_eq!(
            d.decode(&wire[..64]).unwrap_err(),
            DecodeError::BadHeaderSize {
                blocks: 9,
                max_blocks: 8
            }
        );
        let mut d = dec();
        let (mut wire, _) = frames(1, &[]);
        wire[0x28..0x2C].copy_from_slice(&257u32.to_le_bytes());
        assert_eq!(
            d.decode(&wire[..64]).unwrap_err().code(),
            RecvErrorCode::Field
        );
        let mut d = dec();
        assert_eq!(
            d.decode(&[0x48, 0x48]).map(|o| o.consumed).unwrap(),
            2,
            "partial base header is buffered"
        );
        assert_eq!(
            d.decode(&[0u8; 62]).unwrap_err(),
            DecodeError::BadMagic { magic: 0x4848 }
        );
    }

    #[test]
    fn sequence_gap_is_msgseq() {
        let (wire, _) = frames(2, &[]);
        let mut d = dec();
        let e = d.decode(&wire[64..128]).unwrap_err();
        assert_eq!(
            e,
            DecodeError::Sequence {
                expected: 0,
                got: 1
            }
        );
        let mut off = Decoder::new(
            [0u8; 768],
            DecoderConfig {
                check_sequence: false,
                ..CFG
            },
            DefaultCrc::default(),
        )
        .unwrap();
        assert!(off.decode(&wire[64..128]).unwrap().frame.is_some());
    }
}
