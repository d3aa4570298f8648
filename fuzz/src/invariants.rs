//! The codec invariants the fuzz targets check, shared with `tests/tests/regressions.rs`
//! (which includes this file with `#[path]`, so a crash found by the fuzzer replays as a plain
//! `cargo test`). Depends on `dmsg_core` and `std` only: no `arbitrary`, no libFuzzer.
//!
//! Two entry points:
//! - [`check_decode_bytes`]: any bytes. Byte 0 picks the chunking, byte 1 the decoder limits,
//!   the rest is the stream. Nothing may panic; the stream decodes to the same frames and the
//!   same (sticky) error in one piece and in chunks; every decoded frame re-encodes to a frame
//!   that decodes to the same fields.
//! - [`check_roundtrip`]: headers, bodies and aux data. Encoding either fails for a documented
//!   reason without using a sequence number, or the frame decodes to exactly what was sent.

use std::cell::RefCell;
use std::ops::Range;

use dmsg_core::crc::{Crc32c, SoftCrc32c16, SoftCrc32cNoTable};
use dmsg_core::decode::{DecodeError, Decoder, DecoderConfig};
use dmsg_core::encode::{frame_len, EncodeError, Encoder};
use dmsg_core::wire::{
    align64, Body, ByteOrder, Cmd, Command, Flags, Header, HeaderRepr, MsgId, WireError, AUX_MAX,
    HDR_MAX, HDR_MAX_BLOCKS, HEADER_LEN,
};

/// Bytes in front of the stream in a `decode_bytes` input: the split byte and the config byte.
pub const PREFIX_LEN: usize = 2;

const SALT: Range<usize> = 0x04..0x08;
const AUX_CRC: Range<usize> = 0x24..0x28;
const HDR_CRC: Range<usize> = 0x3C..0x40;

thread_local! {
    /// Decoder storage reused across runs (the largest configuration needs 1 MiB + 2 KiB; a
    /// fresh allocation per input would dominate the fuzzing speed).
    static STORAGE: RefCell<Vec<u8>> = RefCell::new(vec![0u8; HDR_MAX + AUX_MAX]);
}

/// The decoder limits selected by the config byte of a `decode_bytes` input.
///
/// bit 0: sequence check off; bits 1-2: aux limit (1 MiB, 4096, 1000, 0);
/// bits 3-4: header limit (32, 8, 7, 1 blocks); bit 5: see [`wants_fixup`]; bits 6-7: unused.
pub fn config_from_byte(b: u8) -> DecoderConfig {
    DecoderConfig {
        max_aux_bytes: [AUX_MAX, 4096, 1000, 0][usize::from((b >> 1) & 3)],
        max_header_blocks: [HDR_MAX_BLOCKS, 8, 7, 1][usize::from((b >> 3) & 3)],
        check_sequence: b & 1 == 0,
    }
}

/// Bit 5 of the config byte: before decoding, recompute the salt counters and both CRCs of
/// every frame the stream's size fields delimit ([`fix_frames`]), so that mutated header
/// fields reach the code behind the CRC checks instead of failing them.
pub fn wants_fixup(cfg: u8) -> bool {
    cfg & 0x20 != 0
}

/// Rewrites, in place, the salt counter and both CRCs of each whole frame at the start of
/// `stream` (stopping at the first bad magic, size or aux length, or a partial frame; a partial
/// frame whose extended header is complete gets its header CRC fixed).
pub fn fix_frames(stream: &mut [u8]) {
    let mut at = 0;
    let mut seq = 0u8;
    while stream.len() - at >= HEADER_LEN {
        let (order, blocks, aux_len) = match Header::new_checked(&stream[at..at + HEADER_LEN]) {
            Ok(h) => (
                h.byte_order(),
                h.cmd().size_blocks(),
                h.aux_bytes() as usize,
            ),
            Err(_) => return,
        };
        if blocks == 0 || blocks > HDR_MAX_BLOCKS || aux_len > AUX_MAX {
            return;
        }
        let hlen = usize::from(blocks) * 64;
        let total = hlen + align64(aux_len);
        if stream.len() - at < hlen {
            return;
        }
        let end = (at + total).min(stream.len());
        let frame = &mut stream[at..end];
        let whole = frame.len() == total;
        frame[seq_byte(order)] = seq;
        if whole && aux_len > 0 {
            let crc = SoftCrc32c16.checksum(&frame[hlen..]);
            put_u32(frame, AUX_CRC, crc, order);
        }
        frame[HDR_CRC].fill(0);
        let crc = SoftCrc32c16.checksum(&frame[..hlen]);
        put_u32(frame, HDR_CRC, crc, order);
        if !whole {
            return;
        }
        at += total;
        seq = seq.wrapping_add(1);
    }
}

/// Chunk lengths derived from one byte: 0 = everything at once; `n` = pseudo-random lengths in
/// `1..=n` (so 1 = one byte at a time).
#[derive(Clone, Debug)]
pub struct Splitter {
    max: usize,
    state: u32,
}

impl Splitter {
    /// The splitter for `byte`.
    pub fn new(byte: u8) -> Splitter {
        Splitter {
            max: usize::from(byte),
            state: u32::from(byte).wrapping_mul(0x9E37_79B9) | 1,
        }
    }

    /// The next chunk length (`usize::MAX` for "all the rest").
    pub fn next_len(&mut self) -> usize {
        if self.max == 0 {
            return usize::MAX;
        }
        let mut x = self.state;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.state = x;
        1 + (x as usize % self.max)
    }
}

/// One decoded frame, copied out of the decoder, with where it sat in the stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeenFrame {
    /// Offset of the frame in the stream.
    pub offset: usize,
    /// The base header.
    pub repr: HeaderRepr,
    /// The sender's byte order.
    pub order: ByteOrder,
    /// The extended header as received.
    pub ext: Vec<u8>,
    /// The aux data without padding.
    pub aux: Vec<u8>,
    /// True when the aux alignment padding was all zero (as our encoder writes it).
    pub pad_zero: bool,
    /// The parsed body.
    pub body: Result<Body, WireError>,
}

/// What one decoder run over a stream produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// Frames, in order.
    pub frames: Vec<SeenFrame>,
    /// The latched error, if the stream went bad.
    pub error: Option<DecodeError>,
    /// `rejected_header()` after the error.
    pub rejected: Option<HeaderRepr>,
    /// Bytes of a partial frame left buffered at the end (no error).
    pub buffered: usize,
    /// Frames the decoder returned in place (no copy).
    pub in_place: u64,
}

/// A valid LNK_PING with salt counter 0.
fn ping_bytes() -> [u8; 64] {
    let mut out = [0u8; 64];
    let hdr = HeaderRepr::new(Cmd::new(Command::LnkPing, Flags::empty()), MsgId(0));
    Encoder::new(1)
        .encode(&SoftCrc32c16, &hdr, &Body::None, &[], &mut out)
        .expect("a ping encodes");
    out
}

/// Decodes `stream` with `config`, fed in chunks from `split`, checking every decoder
/// invariant along the way.
pub fn run_decoder(stream: &[u8], config: DecoderConfig, split: u8) -> Outcome {
    STORAGE.with(|cell| {
        let mut storage = cell.borrow_mut();
        let len = config.storage_len();
        // Exactly the configured size, so any access past it panics; stale bytes from earlier
        // runs overwritten so a read of never-written storage behaves the same every run.
        let storage = &mut storage[..len];
        let scrub = len.min(stream.len() + 64 * 1024);
        storage[..scrub].fill(0xA5);
        run_with_storage(stream, config, split, storage)
    })
}

fn run_with_storage(
    stream: &[u8],
    config: DecoderConfig,
    split: u8,
    storage: &mut [u8],
) -> Outcome {
    let storage_len = storage.len();
    let mut dec = Decoder::new(storage, config, SoftCrc32c16).expect("valid config");
    let mut splitter = Splitter::new(split);
    let mut frames = Vec::new();
    let mut pos = 0; // stream bytes the decoder has taken
    let mut frame_end = 0; // stream offset just past the last frame
    let mut error = None;
    'stream: while pos < stream.len() {
        let n = splitter.next_len().min(stream.len() - pos);
        let mut chunk = &stream[pos..pos + n];
        loop {
            let result = dec.decode(chunk).map(|out| {
                let consumed = out.consumed;
                let frame = out.frame.map(|f| {
                    let body = f.body();
                    (
                        f.repr(),
                        f.byte_order(),
                        f.ext_bytes().to_vec(),
                        f.aux().to_vec(),
                        f.wire_len(),
                        body,
                    )
                });
                (consumed, frame)
            });
            match result {
                Ok((consumed, frame)) => {
                    assert!(consumed <= chunk.len(), "consumed more than given");
                    chunk = &chunk[consumed..];
                    pos += consumed;
                    match frame {
                        Some((repr, order, ext, aux, wire_len, body)) => {
                            assert!(consumed > 0, "a frame was returned without progress");
                            assert_eq!(
                                pos,
                                frame_end + wire_len,
                                "frame does not end where input did"
                            );
                            let at = frame_end;
                            let hlen = ext.len();
                            assert_eq!(hlen, repr.cmd.header_len());
                            assert_eq!(aux.len(), repr.aux_bytes as usize);
                            assert_eq!(wire_len, hlen + align64(aux.len()));
                            assert!(hlen <= usize::from(config.max_header_blocks) * 64);
                            assert!(aux.len() <= config.max_aux_bytes);
                            assert_eq!(
                                &stream[at..at + hlen],
                                &ext[..],
                                "ext is not the received bytes"
                            );
                            assert_eq!(&stream[at + hlen..at + hlen + aux.len()], &aux[..]);
                            let pad = &stream[at + hlen + aux.len()..at + wire_len];
                            let hdr =
                                Header::new_checked(&ext[..]).expect("delivered header is checked");
                            assert_eq!(hdr.byte_order(), order);
                            assert_eq!(HeaderRepr::parse(&hdr), repr);
                            if config.check_sequence {
                                assert_eq!(
                                    repr.salt & 0xFF,
                                    (frames.len() % 256) as u32,
                                    "sequence"
                                );
                            }
                            // Both CRCs, recomputed by a different implementation.
                            let mut zeroed = ext.clone();
                            zeroed[HDR_CRC].fill(0);
                            assert_eq!(SoftCrc32cNoTable.checksum(&zeroed), repr.hdr_crc);
                            if !aux.is_empty() {
                                let aligned = &stream[at + hlen..at + wire_len];
                                assert_eq!(SoftCrc32cNoTable.checksum(aligned), repr.aux_crc);
                            }
                            frames.push(SeenFrame {
                                offset: at,
                                repr,
                                order,
                                ext,
                                aux,
                                pad_zero: pad.iter().all(|&b| b == 0),
                                body,
                            });
                            frame_end = pos;
                            assert!(dec.is_idle(), "not idle at a frame boundary");
                            assert_eq!(dec.buffered(), 0);
                        }
                        None => {
                            assert!(chunk.is_empty(), "no frame, yet input was left over");
                            assert_eq!(dec.buffered(), pos - frame_end);
                            if dec.buffered() > 0 {
                                assert_eq!(dec.frame_offset(), frame_end as u64);
                            }
                            assert!(dec.buffered() <= storage_len);
                            assert_eq!(dec.is_idle(), dec.buffered() == 0);
                            break;
                        }
                    }
                }
                Err(e) => {
                    // The error latches: every later call, whatever the input, repeats it.
                    assert_eq!(dec.error(), Some(e));
                    assert!(!dec.is_idle());
                    assert_eq!(
                        dec.decode(chunk).err(),
                        Some(e),
                        "error not sticky (same input)"
                    );
                    assert_eq!(
                        dec.decode(&[]).err(),
                        Some(e),
                        "error not sticky (no input)"
                    );
                    assert_eq!(
                        dec.decode(&stream[pos..]).err(),
                        Some(e),
                        "error not sticky (rest)"
                    );
                    assert_eq!(
                        dec.decode(&ping_bytes()).err(),
                        Some(e),
                        "error not sticky (ping)"
                    );
                    assert_eq!(dec.error(), Some(e));
                    error = Some(e);
                    break 'stream;
                }
            }
        }
    }
    let rejected = dec.rejected_header();
    match error {
        Some(
            DecodeError::HeaderCrc { .. }
            | DecodeError::AuxCrc { .. }
            | DecodeError::Sequence { .. },
        ) => {
            let hdr = Header::new_checked(&stream[frame_end..frame_end + HEADER_LEN])
                .expect("a rejected frame had a good magic");
            assert_eq!(
                rejected,
                Some((HeaderRepr::parse(&hdr), hdr.byte_order())),
                "rejected_header"
            );
        }
        Some(_) => assert_eq!(rejected, None),
        None => {
            assert_eq!(rejected, None);
            assert_eq!(pos, stream.len());
            assert_eq!(frame_end + dec.buffered(), stream.len());
            assert_eq!(dec.stats().bytes, stream.len() as u64);
        }
    }
    if error.is_some() {
        assert_eq!(
            dec.frame_offset(),
            frame_end as u64,
            "frame_offset of the rejected frame"
        );
    }
    assert_eq!(dec.stats().frames, frames.len() as u64);
    let buffered = if error.is_none() { dec.buffered() } else { 0 };
    let in_place = dec.stats().frames_in_place;
    // A reset decoder takes a new stream.
    dec.reset();
    assert_eq!(dec.error(), None);
    assert!(dec.is_idle());
    let ping = ping_bytes();
    let out = dec.decode(&ping).expect("a reset decoder takes a ping");
    assert_eq!(out.consumed, 64);
    assert!(out.frame.is_some());
    Outcome {
        frames,
        error,
        rejected: rejected.map(|(h, _)| h),
        buffered,
        in_place,
    }
}

/// The salt byte that carries the frame counter.
fn seq_byte(order: ByteOrder) -> usize {
    match order {
        ByteOrder::Little => SALT.start,
        ByteOrder::Big => SALT.end - 1,
    }
}

/// Writes `v` as a u32 field at `at` in `order`.
fn put_u32(buf: &mut [u8], at: Range<usize>, v: u32, order: ByteOrder) {
    let b = match order {
        ByteOrder::Little => v.to_le_bytes(),
        ByteOrder::Big => v.to_be_bytes(),
    };
    buf[at].copy_from_slice(&b);
}

/// Two encoders in lock step, one per byte order, so the one that re-encodes frame `i` is in
/// the state the sender's was in (salt counter `i`).
struct Reencoder {
    le: Encoder,
    be: Encoder,
}

impl Reencoder {
    fn new(seed: u32) -> Reencoder {
        Reencoder {
            le: Encoder::with_byte_order(seed, ByteOrder::Little),
            be: Encoder::with_byte_order(seed, ByteOrder::Big),
        }
    }

    /// The encoder for `order`, after advancing the other one by a frame.
    fn step(&mut self, order: ByteOrder) -> &mut Encoder {
        let mut scratch = [0u8; 64];
        let hdr = HeaderRepr::new(Cmd::new(Command::LnkPad, Flags::empty()), MsgId(0));
        let other = match order {
            ByteOrder::Little => &mut self.be,
            ByteOrder::Big => &mut self.le,
        };
        other
            .encode(&SoftCrc32c16, &hdr, &Body::None, &[], &mut scratch)
            .expect("a pad encodes");
        match order {
            ByteOrder::Little => &mut self.le,
            ByteOrder::Big => &mut self.be,
        }
    }
}

/// Re-encodes every decoded frame and checks the result against the original.
///
/// The encoder assigns the salt's random bits, both CRCs and the padding, and writes only the
/// bytes its body repr describes (zero elsewhere). So: the base header comes back byte for byte
/// except the salt's random bits, `hdr_crc` and (when the original had non-zero padding or no
/// aux) `aux_crc`; every other byte of the extended header is either the original or zero; the
/// re-encoded frame decodes to the same fields; and re-encoding that with an encoder in the
/// same state gives the same bytes again (the encoding is canonical).
pub fn check_reencode(frames: &[SeenFrame], check_sequence: bool) {
    let mut encoders = Reencoder::new(0x5eed);
    for f in frames {
        let enc = encoders.step(f.order);
        let before = *enc;
        let hlen = f.ext.len();
        let body = match f.body {
            Ok(b) => b,
            Err(WireError::BodyTooShort { .. }) => {
                // The header is too short for the command's structure: the encoder must refuse
                // to send such a frame (and not use a sequence number doing so).
                let mut scratch = vec![0u8; hlen + align64(f.aux.len())];
                let r = enc.encode(&SoftCrc32c16, &f.repr, &Body::None, &f.aux, &mut scratch);
                assert_eq!(r, Err(EncodeError::BodyMismatch));
                assert_eq!(*enc, before);
                let mut scratch = [0u8; 64];
                let hdr = HeaderRepr::new(Cmd::new(Command::LnkPad, Flags::empty()), MsgId(0));
                enc.encode(&SoftCrc32c16, &hdr, &Body::None, &[], &mut scratch)
                    .expect("a pad encodes");
                continue;
            }
            Err(e) => panic!("body of a decoded frame failed to parse: {e:?}"),
        };
        let total = hlen + align64(f.aux.len());
        let mut out = vec![0xEEu8; total];
        let n = enc
            .encode(&SoftCrc32c16, &f.repr, &body, &f.aux, &mut out)
            .expect("every decoded frame re-encodes");
        assert_eq!(n, total);

        // Base header: byte for byte, except what the encoder computes.
        let aux_crc_kept = f.pad_zero && !f.aux.is_empty();
        for (i, (&new, &old)) in out.iter().zip(&f.ext).enumerate().take(HEADER_LEN) {
            let computed = HDR_CRC.contains(&i)
                || (SALT.contains(&i) && !(check_sequence && i == seq_byte(f.order)))
                || (AUX_CRC.contains(&i) && !aux_crc_kept);
            if !computed {
                assert_eq!(new, old, "re-encoded base header byte {i:#x} differs");
            }
        }
        // Extended header: the original byte, or zero where the repr does not carry it.
        for (i, (&new, &old)) in out
            .iter()
            .zip(&f.ext)
            .enumerate()
            .take(hlen)
            .skip(HEADER_LEN)
        {
            assert!(
                new == old || new == 0,
                "re-encoded extended header byte {i:#x} is {new:#04x}, received {old:#04x}"
            );
        }
        assert_eq!(&out[hlen..hlen + f.aux.len()], &f.aux[..]);
        assert!(
            out[hlen + f.aux.len()..].iter().all(|&b| b == 0),
            "padding not zero"
        );

        // With the original salt put back and the header CRC recomputed, a canonical frame
        // comes back exactly.
        if out[HEADER_LEN..hlen] == f.ext[HEADER_LEN..] && (aux_crc_kept || f.aux.is_empty()) {
            let mut patched = out[..hlen].to_vec();
            put_u32(&mut patched, SALT, f.repr.salt, f.order);
            if f.aux.is_empty() {
                put_u32(&mut patched, AUX_CRC, f.repr.aux_crc, f.order);
            }
            patched[HDR_CRC].fill(0);
            let crc = SoftCrc32c16.checksum(&patched);
            put_u32(&mut patched, HDR_CRC, crc, f.order);
            assert_eq!(
                patched, f.ext,
                "canonical frame does not re-encode to its own bytes"
            );
        }

        // The re-encoded frame decodes to the same fields.
        let again = decode_one(&out, hlen, f.aux.len());
        let r = again.repr;
        assert_eq!(again.order, f.order);
        assert_eq!(again.aux, f.aux);
        assert_eq!(again.body, Ok(body));
        let expected = HeaderRepr {
            salt: r.salt,
            hdr_crc: r.hdr_crc,
            aux_crc: if aux_crc_kept {
                f.repr.aux_crc
            } else {
                r.aux_crc
            },
            ..f.repr
        };
        assert_eq!(r, expected);
        if check_sequence {
            assert_eq!(r.salt & 0xFF, f.repr.salt & 0xFF);
        }
        if f.aux.is_empty() {
            assert_eq!(r.aux_crc, 0);
        }

        // Canonical: the same encoder state gives the same bytes for the decoded fields.
        let mut twin = before;
        let mut out2 = vec![0x11u8; total];
        twin.encode(&SoftCrc32c16, &again.repr, &body, &again.aux, &mut out2)
            .expect("re-encoded frame re-encodes");
        assert_eq!(out2, out, "encoding is not canonical");
        assert_eq!(twin, *enc);
    }
}

/// Decodes exactly one frame from `bytes` with a decoder sized to fit it.
fn decode_one(bytes: &[u8], hlen: usize, aux_len: usize) -> SeenFrame {
    let config = DecoderConfig {
        max_aux_bytes: aux_len,
        max_header_blocks: (hlen / 64) as u8,
        check_sequence: false,
    };
    let out = run_decoder(bytes, config, 0);
    assert_eq!(out.error, None);
    assert_eq!(out.frames.len(), 1);
    assert_eq!(out.buffered, 0);
    out.frames.into_iter().next().expect("one frame")
}

/// Checks a stream under `config`: decoded in one piece and in the chunks `split` selects it
/// gives the same frames and error, every frame whole in the input is returned in place, and
/// every frame re-encodes ([`check_reencode`]). Returns the one-piece outcome.
pub fn check_stream(stream: &[u8], config: DecoderConfig, split: u8) -> Outcome {
    let whole = run_decoder(stream, config, 0);
    assert_eq!(
        whole.in_place,
        whole.frames.len() as u64,
        "whole frames were copied"
    );
    if split != 0 {
        let chunked = run_decoder(stream, config, split);
        assert_eq!(chunked.frames, whole.frames, "chunking changed the frames");
        assert_eq!(chunked.error, whole.error, "chunking changed the error");
        assert_eq!(chunked.rejected, whole.rejected);
        assert_eq!(chunked.buffered, whole.buffered);
    }
    check_reencode(&whole.frames, config.check_sequence);
    whole
}

/// The `decode_bytes` fuzz target: `[split, config, stream...]`.
pub fn check_decode_bytes(data: &[u8]) {
    let (split, cfg, stream) = match data {
        [split, cfg, stream @ ..] => (*split, *cfg, stream),
        [split] => (*split, 0, &[][..]),
        [] => (0, 0, &[][..]),
    };
    if wants_fixup(cfg) {
        let mut fixed = stream.to_vec();
        fix_frames(&mut fixed);
        check_stream(&fixed, config_from_byte(cfg), split);
    } else {
        check_stream(stream, config_from_byte(cfg), split);
    }
}

/// Why encoding `header`/`body`/`aux` must fail, per [`EncodeError`]'s documentation.
pub fn expected_encode_error(header: &HeaderRepr, body: &Body, aux: &[u8]) -> Option<EncodeError> {
    let blocks = header.cmd.size_blocks();
    let needed = body.blocks();
    if blocks == 0 || blocks > HDR_MAX_BLOCKS || blocks < needed {
        Some(EncodeError::BadHeaderSize { blocks, needed })
    } else if !body.fits(header.cmd.command()) {
        Some(EncodeError::BodyMismatch)
    } else if aux.len() > AUX_MAX {
        Some(EncodeError::AuxTooLarge(aux.len()))
    } else {
        None
    }
}

/// `header` with its command word changed as little as possible to carry `body`: the flags
/// are kept, the command replaced by one the body fits (chosen by the code bits), the size
/// clamped to what the body needs..=32 blocks.
pub fn make_valid(header: &HeaderRepr, body: &Body) -> HeaderRepr {
    let cmd = header.cmd;
    let sel = usize::from(cmd.code());
    let command = if body.fits(cmd.command()) {
        cmd.command()
    } else {
        match body {
            Body::None => [
                Command::LnkPad,
                Command::LnkPing,
                Command::LnkError,
                Command::DbgShell,
                // Protocol nibbles 8..=15 are all unknown.
                Command::from_parts(cmd.protocol().nibble() | 8, cmd.code()),
            ][sel % 5],
            Body::Auth(_) => Command::LnkAuth,
            Body::Conn(_) => Command::LnkConn,
            Body::Span(_) => Command::LnkSpan,
            Body::Volconf(_) => Command::LnkVolconf,
            Body::BlkOpen(_) => [Command::BlkOpen, Command::BlkClose][sel % 2],
            Body::BlkIo(_) => [
                Command::BlkRead,
                Command::BlkWrite,
                Command::BlkFlush,
                Command::BlkFreeblks,
            ][sel % 4],
            Body::BlkError(_) => Command::BlkError,
        }
    };
    let blocks = cmd.size_blocks().clamp(body.blocks(), HDR_MAX_BLOCKS);
    HeaderRepr {
        cmd: Cmd::with_size(command, cmd.flags(), blocks),
        ..*header
    }
}

/// A `roundtrip` case: frames to send in one stream.
#[derive(Clone, Debug, Default)]
pub struct RoundtripCase {
    /// Header (salt, CRCs and aux length are ignored by the encoder), body, aux data.
    pub frames: Vec<(HeaderRepr, Body, Vec<u8>)>,
    /// Send big-endian.
    pub big_endian: bool,
    /// Salt seed.
    pub seed: u32,
    /// Chunking of the decoder's input ([`Splitter`]).
    pub split: u8,
    /// Piece sizes for the [`dmsg_core::encode::FrameWriter`] ([`Splitter`]; 0 = all at once).
    pub piece: u8,
}

/// The `roundtrip` fuzz target: every frame either fails to encode for its documented reason
/// (then it is made valid with [`make_valid`] and sent anyway) or is sent; the stream decodes
/// to exactly the frames sent.
pub fn check_roundtrip(case: &RoundtripCase) {
    let order = if case.big_endian {
        ByteOrder::Big
    } else {
        ByteOrder::Little
    };
    let crc = SoftCrc32c16;
    let mut enc = Encoder::with_byte_order(case.seed, order);
    let mut stream = Vec::new();
    let mut sent = Vec::new();
    let mut pieces = Splitter::new(case.piece);
    for (header, body, aux) in &case.frames {
        let aux = &aux[..aux.len().min(AUX_MAX)];
        let before = enc;
        let header = match expected_encode_error(header, body, aux) {
            None => *header,
            Some(err) => {
                let mut buf = vec![0u8; HDR_MAX + align64(aux.len())];
                assert_eq!(enc.encode(&crc, header, body, aux, &mut buf), Err(err));
                assert_eq!(enc.start(&crc, header, body, aux).err(), Some(err));
                assert_eq!(enc, before, "a failed encode used a sequence number");
                let fixed = make_valid(header, body);
                assert_eq!(expected_encode_error(&fixed, body, aux), None, "make_valid");
                fixed
            }
        };
        let total = frame_len(header.cmd.size_blocks(), aux.len());
        let mut out = vec![0xEEu8; total];
        // One byte short: refused, nothing written, no sequence number used.
        assert_eq!(
            enc.encode(&crc, &header, body, aux, &mut out[..total - 1]),
            Err(EncodeError::BufferTooSmall {
                needed: total,
                available: total - 1
            })
        );
        assert!(out.iter().all(|&b| b == 0xEE));
        assert_eq!(enc, before);
        let n = enc
            .encode(&crc, &header, body, aux, &mut out)
            .expect("valid frame encodes");
        assert_eq!(n, total);
        // The piecewise writer from the same state writes the same bytes.
        let mut twin = before;
        let mut w = twin
            .start(&crc, &header, body, aux)
            .expect("valid frame starts");
        assert_eq!(w.len(), total);
        let mut piecewise = vec![0x77u8; total];
        let mut at = 0;
        while !w.is_done() {
            let len = pieces.next_len().min(total - at);
            let wrote = w.write(&mut piecewise[at..at + len]);
            assert_eq!(wrote, len, "writer wrote less than asked while not done");
            at += wrote;
            assert_eq!(w.remaining(), total - at);
        }
        assert_eq!(at, total);
        assert_eq!(w.write(&mut [0u8; 8]), 0, "writer wrote after done");
        assert_eq!(piecewise, out, "piecewise writer differs from encode");
        assert_eq!(twin, enc);
        stream.extend_from_slice(&out);
        sent.push((header, *body, aux.to_vec()));
    }
    if sent.is_empty() {
        return;
    }
    let config = DecoderConfig {
        max_aux_bytes: sent.iter().map(|(_, _, a)| a.len()).max().unwrap_or(0),
        max_header_blocks: sent
            .iter()
            .map(|(h, _, _)| h.cmd.size_blocks())
            .max()
            .unwrap_or(1),
        check_sequence: true,
    };
    let got = check_stream(&stream, config, case.split);
    assert_eq!(got.error, None);
    assert_eq!(got.buffered, 0);
    assert_eq!(got.frames.len(), sent.len());
    for (i, (f, (h, body, aux))) in got.frames.iter().zip(&sent).enumerate() {
        assert_eq!(f.order, order);
        assert_eq!(f.aux, *aux);
        assert_eq!(f.body, Ok(*body), "frame {i} body");
        assert!(f.pad_zero);
        let expected = HeaderRepr {
            salt: f.repr.salt,
            aux_bytes: aux.len() as u32,
            aux_crc: if aux.is_empty() {
                0
            } else {
                SoftCrc32cNoTable.checksum(
                    &stream[f.offset + f.ext.len()..f.offset + f.ext.len() + align64(aux.len())],
                )
            },
            hdr_crc: f.repr.hdr_crc, // checked against a recomputation in `run_decoder`
            ..*h
        };
        assert_eq!(f.repr, expected, "frame {i} header");
        assert_eq!(f.repr.salt & 0xFF, i as u32 % 256);
    }
}
