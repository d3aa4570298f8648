//! Property tests of the frame codec: what the encoder writes the decoder reads back, in any
//! chunking, in either byte order; hostile bytes never panic and latch one error; and every
//! single-bit corruption is caught.
//!
//! Frames are generated valid: every known command with its body (LNK_CONN/SPAN/VOLCONF, the
//! BLK_* family, ...), unknown commands with no body, header sizes from what the body needs up
//! to 32 blocks, any value in every header field the sender controls (the encoder must ignore
//! and recompute `salt`, `aux_bytes`, `aux_crc` and `hdr_crc`, so those get garbage), and
//! 0..=4200 bytes of aux data.
//!
//! Every decoder here gets storage of exactly `DecoderConfig::storage_len()` bytes sized for
//! the stream at hand, so a read or write past what the configuration allows would panic.

use dmsg_core::crc::{Crc32c, SoftCrc32c16, SoftCrc32cNoTable};
use dmsg_core::decode::{DecodeError, Decoder, DecoderConfig};
use dmsg_core::encode::{frame_len, Encoder};
use dmsg_core::wire::body::{
    AuthRepr, BlkErrorRepr, BlkIoRepr, BlkOpenRepr, ConnRepr, SpanRepr, VolconfRepr,
};
use dmsg_core::wire::{
    align64, Body, ByteOrder, Circuit, Cmd, Command, Flags, Header, HeaderRepr, Label, MsgId, Uuid,
    WireError, AUX_MAX, HDR_MAX_BLOCKS, HEADER_LEN,
};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{select, Index};
use proptest::test_runner::FileFailurePersistence;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: if cfg!(miri) { 4 } else { 256 },
        // Miri's isolation forbids the file system.
        failure_persistence: if cfg!(miri) {
            None
        } else {
            Some(Box::new(FileFailurePersistence::default()))
        },
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------------------------

fn uuid() -> impl Strategy<Value = Uuid> {
    any::<[u8; 16]>().prop_map(Uuid)
}

fn label() -> impl Strategy<Value = Label> {
    prop_oneof![
        Just(Label::EMPTY),
        vec(1u8..=255, 0..=127).prop_map(|b| Label::from_bytes(&b).expect("no NUL, < 128")),
    ]
}

fn conn() -> impl Strategy<Value = ConnRepr> {
    (
        (uuid(), uuid(), any::<u64>(), any::<u8>(), any::<u16>()),
        (
            any::<u32>(),
            any::<u32>(),
            label(),
            any::<u32>(),
            any::<u32>(),
            any::<u64>(),
        ),
    )
        .prop_map(
            |(
                (media_id, peer_id, peer_mask, peer_type, proto_version),
                (status, rnss, peer_label, ext_offer, ext_param, session_id),
            )| ConnRepr {
                media_id,
                peer_id,
                peer_mask,
                peer_type,
                proto_version,
                status,
                rnss,
                peer_label,
                ext_offer,
                ext_param,
                session_id,
            },
        )
}

fn span() -> impl Strategy<Value = SpanRepr> {
    (
        (
            uuid(),
            uuid(),
            any::<u8>(),
            any::<u8>(),
            any::<u16>(),
            any::<u32>(),
        ),
        (
            any::<u32>(),
            any::<u32>(),
            any::<[u8; 56]>(),
            label(),
            label(),
        ),
    )
        .prop_map(
            |(
                (peer_id, pfs_id, pfs_type, peer_type, proto_version, status),
                (dist, rnss, media, peer_label, pfs_label),
            )| SpanRepr {
                peer_id,
                pfs_id,
                pfs_type,
                peer_type,
                proto_version,
                status,
                dist,
                rnss,
                media,
                peer_label,
                pfs_label,
            },
        )
}

fn volconf() -> impl Strategy<Value = VolconfRepr> {
    (
        (any::<[u8; 4]>(), any::<u16>(), any::<[u8; 3]>()),
        (
            uuid(),
            any::<[u8; 16]>(),
            any::<[u8; 64]>(),
            any::<i32>(),
            uuid(),
        ),
    )
        .prop_map(
            |(
                ([copyid, inprog, chain_to, chain_from], flags, [error, priority, remote_pfs_type]),
                (pfs_clid, label, path, index, mediaid),
            )| VolconfRepr {
                copyid,
                inprog,
                chain_to,
                chain_from,
                flags,
                error,
                priority,
                remote_pfs_type,
                pfs_clid,
                label,
                path,
                index,
                mediaid,
            },
        )
}

/// A command and a body it carries: every known command, and unknown ones (no body).
fn command_and_body() -> impl Strategy<Value = (Command, Body)> {
    prop_oneof![
        select(vec![
            Command::LnkPad,
            Command::LnkPing,
            Command::LnkError,
            Command::DbgShell
        ])
        .prop_map(|c| (c, Body::None)),
        (0u8..16, 0u16..0x1000).prop_filter_map("a known command", |(p, c)| {
            let cmd = Command::from_parts(p, c);
            matches!(cmd, Command::Unknown { .. }).then_some((cmd, Body::None))
        }),
        any::<[u8; 64]>().prop_map(|dummy| (Command::LnkAuth, Body::Auth(AuthRepr { dummy }))),
        conn().prop_map(|c| (Command::LnkConn, Body::Conn(c))),
        span().prop_map(|s| (Command::LnkSpan, Body::Span(s))),
        volconf().prop_map(|v| (Command::LnkVolconf, Body::Volconf(v))),
        (
            select(vec![Command::BlkOpen, Command::BlkClose]),
            any::<u32>()
        )
            .prop_map(|(c, modes)| (c, Body::BlkOpen(BlkOpenRepr { modes }))),
        (
            select(vec![
                Command::BlkRead,
                Command::BlkWrite,
                Command::BlkFlush,
                Command::BlkFreeblks
            ]),
            any::<(u64, u64, u32, u32)>()
        )
            .prop_map(|(c, (keyid, offset, bytes, flags))| (
                c,
                Body::BlkIo(BlkIoRepr {
                    keyid,
                    offset,
                    bytes,
                    flags
                })
            )),
        (any::<u64>(), any::<u32>(), any::<[u8; 64]>()).prop_map(|(keyid, resid, buf)| (
            Command::BlkError,
            Body::BlkError(BlkErrorRepr { keyid, resid, buf })
        )),
    ]
}

/// Aux lengths, weighted to the alignment edges.
fn aux() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => Just(0usize),
        3 => 1usize..=130,
        2 => select(vec![63usize, 64, 65, 127, 128, 4095, 4096, 4097, 4200]),
        2 => 0usize..=4200,
    ]
    .prop_flat_map(|n| vec(any::<u8>(), n))
}

/// One frame to send.
#[derive(Clone, Debug)]
struct FrameSpec {
    header: HeaderRepr,
    body: Body,
    aux: Vec<u8>,
}

fn frame() -> impl Strategy<Value = FrameSpec> {
    (
        command_and_body(),
        any::<u8>(),
        prop_oneof![3 => Just(0u8), 1 => 0u8..32],
        (any::<u16>(), any::<u64>(), any::<u64>(), any::<u64>()),
        (any::<u32>(), any::<u64>(), any::<u32>()),
        any::<(u32, u32, u32, u32)>(),
        aux(),
    )
        .prop_map(
            |(
                (command, body),
                flag_bits,
                extra,
                (reserved02, msgid, circuit, link_verifier),
                (error, aux_descr, reserved38),
                (salt, aux_crc, aux_bytes, hdr_crc),
                aux,
            )| {
                let blocks = (body.blocks().max(command.blocks()) + extra).min(HDR_MAX_BLOCKS);
                let flags = Flags::from_bits_truncate(u32::from(flag_bits) << 24);
                let header = HeaderRepr {
                    reserved02,
                    salt,
                    msgid: MsgId(msgid),
                    circuit: Circuit(circuit),
                    link_verifier,
                    cmd: Cmd::with_size(command, flags, blocks),
                    aux_crc,
                    aux_bytes,
                    error,
                    aux_descr,
                    reserved38,
                    hdr_crc,
                };
                FrameSpec { header, body, aux }
            },
        )
}

/// A stream of frames from one sender.
#[derive(Clone, Debug)]
struct StreamSpec {
    frames: Vec<FrameSpec>,
    order: ByteOrder,
    seed: u32,
}

fn stream() -> impl Strategy<Value = StreamSpec> {
    (vec(frame(), 1..8), any::<bool>(), any::<u32>()).prop_map(|(frames, big, seed)| StreamSpec {
        frames,
        order: if big {
            ByteOrder::Big
        } else {
            ByteOrder::Little
        },
        seed,
    })
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// The encoded stream and the end offset of each frame.
fn encode(spec: &StreamSpec) -> (Vec<u8>, Vec<usize>) {
    let mut enc = Encoder::with_byte_order(spec.seed, spec.order);
    let mut out = Vec::new();
    let mut ends = Vec::new();
    for f in &spec.frames {
        let start = out.len();
        out.resize(
            start + frame_len(f.header.cmd.size_blocks(), f.aux.len()),
            0xEE,
        );
        let n = enc
            .encode(&SoftCrc32c16, &f.header, &f.body, &f.aux, &mut out[start..])
            .expect("valid frame encodes");
        assert_eq!(start + n, out.len());
        ends.push(out.len());
    }
    (out, ends)
}

/// The smallest configuration that takes every frame of `spec`.
fn tight_config(spec: &StreamSpec) -> DecoderConfig {
    DecoderConfig {
        max_aux_bytes: spec.frames.iter().map(|f| f.aux.len()).max().unwrap_or(0),
        max_header_blocks: spec
            .frames
            .iter()
            .map(|f| f.header.cmd.size_blocks())
            .max()
            .unwrap_or(1),
        check_sequence: true,
    }
}

fn decoder(config: DecoderConfig) -> Decoder<Box<[u8]>, SoftCrc32c16> {
    Decoder::new(
        vec![0u8; config.storage_len()].into_boxed_slice(),
        config,
        SoftCrc32c16,
    )
    .expect("valid config")
}

/// A decoded frame, owned.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Got {
    repr: HeaderRepr,
    body: Result<Body, WireError>,
    ext: Vec<u8>,
    aux: Vec<u8>,
    order: ByteOrder,
}

/// Feeds `chunks` in order; checks the idle/buffered bookkeeping after every call. Returns the
/// frames and the error.
fn feed<'a>(
    dec: &mut Decoder<Box<[u8]>, SoftCrc32c16>,
    chunks: impl IntoIterator<Item = &'a [u8]>,
) -> (Vec<Got>, Option<DecodeError>) {
    let mut frames = Vec::new();
    let mut since_frame = 0usize;
    for chunk in chunks {
        let mut input = chunk;
        loop {
            let r = dec.decode(input).map(|out| {
                let f = out.frame.map(|f| Got {
                    repr: f.repr(),
                    body: f.body(),
                    ext: f.ext_bytes().to_vec(),
                    aux: f.aux().to_vec(),
                    order: f.byte_order(),
                });
                (out.consumed, f)
            });
            match r {
                Ok((consumed, frame)) => {
                    input = &input[consumed..];
                    since_frame += consumed;
                    match frame {
                        Some(f) => {
                            assert!(dec.is_idle(), "not idle right after a frame");
                            assert_eq!(dec.buffered(), 0);
                            since_frame = 0;
                            frames.push(f);
                        }
                        None => {
                            assert!(input.is_empty(), "no frame but input left");
                            assert_eq!(dec.buffered(), since_frame);
                            assert_eq!(dec.is_idle(), since_frame == 0);
                            break;
                        }
                    }
                }
                Err(e) => return (frames, Some(e)),
            }
        }
    }
    (frames, None)
}

fn crc_field_zeroed(ext: &[u8]) -> u32 {
    let mut z = ext.to_vec();
    z[0x3C..0x40].fill(0);
    SoftCrc32cNoTable.checksum(&z)
}

fn aligned_aux_crc(aux: &[u8]) -> u32 {
    if aux.is_empty() {
        return 0;
    }
    let mut a = aux.to_vec();
    a.resize(align64(aux.len()), 0);
    SoftCrc32cNoTable.checksum(&a)
}

/// Checks decoded frames field by field against what was sent.
fn assert_frames_match(spec: &StreamSpec, frames: &[Got]) {
    assert_eq!(frames.len(), spec.frames.len());
    for (i, (got, sent)) in frames.iter().zip(&spec.frames).enumerate() {
        let h = &sent.header;
        let r = &got.repr;
        assert_eq!(got.order, spec.order, "frame {i}");
        assert_eq!(r.salt & 0xFF, i as u32, "frame {i}: salt counter");
        assert_eq!(r.reserved02, h.reserved02, "frame {i}");
        assert_eq!(r.msgid, h.msgid, "frame {i}");
        assert_eq!(r.circuit, h.circuit, "frame {i}");
        assert_eq!(r.link_verifier, h.link_verifier, "frame {i}");
        assert_eq!(r.cmd, h.cmd, "frame {i}");
        assert_eq!(r.error, h.error, "frame {i}");
        assert_eq!(r.aux_descr, h.aux_descr, "frame {i}");
        assert_eq!(r.reserved38, h.reserved38, "frame {i}");
        assert_eq!(r.aux_bytes as usize, sent.aux.len(), "frame {i}");
        assert_eq!(r.aux_crc, aligned_aux_crc(&sent.aux), "frame {i}: aux_crc");
        assert_eq!(r.hdr_crc, crc_field_zeroed(&got.ext), "frame {i}: hdr_crc");
        assert_eq!(got.ext.len(), h.cmd.header_len(), "frame {i}");
        assert_eq!(got.body, Ok(sent.body), "frame {i}");
        assert_eq!(got.aux, sent.aux, "frame {i}");
    }
}

fn cut_points(len: usize, cuts: &[Index]) -> Vec<usize> {
    let mut at: Vec<usize> = cuts.iter().map(|ix| ix.index(len + 1)).collect();
    at.push(0);
    at.push(len);
    at.sort_unstable();
    at.dedup();
    at
}

/// Limits for hostile input: tight (what an MCU leaf would use) or the protocol's maximum.
fn any_config() -> impl Strategy<Value = DecoderConfig> {
    (any::<bool>(), any::<bool>()).prop_map(|(tight, check_sequence)| DecoderConfig {
        max_aux_bytes: if tight { 1000 } else { AUX_MAX },
        max_header_blocks: if tight { 8 } else { HDR_MAX_BLOCKS },
        check_sequence,
    })
}

/// Hostile inputs: random bytes; random bytes with plausible headers planted at each 64-byte
/// boundary; valid streams with a few bytes overwritten or cut short.
fn hostile() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        vec(any::<u8>(), 0..700),
        (
            vec(any::<u8>(), 0..1200),
            any::<bool>(),
            0u8..12,
            0u32..1100
        )
            .prop_map(|(mut bytes, big, blocks, aux)| {
                let magic: [u8; 2] = if big { [0x48, 0x32] } else { [0x32, 0x48] };
                for at in (0..bytes.len().saturating_sub(63)).step_by(64) {
                    let o = if big {
                        ByteOrder::Big
                    } else {
                        ByteOrder::Little
                    };
                    let mut h = Header::new_unchecked(&mut bytes[at..at + 64], o);
                    h.set_cmd(Cmd(0x0000_0100 | u32::from(blocks)));
                    h.set_aux_bytes(aux);
                    bytes[at..at + 2].copy_from_slice(&magic);
                }
                bytes
            }),
        (
            stream(),
            vec((any::<Index>(), any::<u8>()), 1..4),
            any::<Index>()
        )
            .prop_map(|(spec, pokes, cut)| {
                let (mut bytes, _) = encode(&spec);
                for (ix, v) in pokes {
                    let i = ix.index(bytes.len());
                    bytes[i] = v;
                }
                let keep = cut.index(bytes.len() + 1).max(bytes.len() / 2);
                bytes.truncate(keep);
                bytes
            }),
    ]
}

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    /// Every frame the encoder writes decodes to the fields it was given, with the salt
    /// counter equal to the frame's index and both CRCs matching a recomputation by a
    /// different CRC implementation; garbage in the computed header fields is ignored.
    #[test]
    fn emit_then_decode_round_trips_every_valid_frame(spec in stream()) {
        let (bytes, _) = encode(&spec);
        let mut dec = decoder(tight_config(&spec));
        let (frames, err) = feed(&mut dec, [&bytes[..]]);
        prop_assert_eq!(err, None);
        assert_frames_match(&spec, &frames);
        prop_assert!(dec.is_idle());
        prop_assert_eq!(dec.stats().frames, spec.frames.len() as u64);
        prop_assert_eq!(dec.stats().frames_in_place, spec.frames.len() as u64);
        prop_assert_eq!(dec.stats().bytes, bytes.len() as u64);
    }

    /// Split anywhere, any number of times, the stream decodes to the same frames; the decoder
    /// is idle exactly at frame boundaries, and a frame is returned in place exactly when it
    /// arrived whole in one piece of input.
    #[test]
    fn any_chunking_decodes_to_the_same_frames(
        spec in stream(),
        cuts in vec(any::<Index>(), 0..24),
    ) {
        let (bytes, ends) = encode(&spec);
        let at = cut_points(bytes.len(), &cuts);
        let chunks: Vec<&[u8]> = at.windows(2).map(|w| &bytes[w[0]..w[1]]).collect();
        let mut dec = decoder(tight_config(&spec));
        let (frames, err) = feed(&mut dec, chunks.iter().copied());
        prop_assert_eq!(err, None);
        assert_frames_match(&spec, &frames);
        prop_assert!(dec.is_idle());
        prop_assert_eq!(dec.stats().bytes, bytes.len() as u64);
        // A frame [start, end) is in place iff no cut falls strictly inside it.
        let mut start = 0;
        let mut in_place = 0;
        for &end in &ends {
            if !at.iter().any(|&c| c > start && c < end) {
                in_place += 1;
            }
            start = end;
        }
        prop_assert_eq!(dec.stats().frames_in_place, in_place);
        // Byte at a time is the same again.
        let mut dec = decoder(tight_config(&spec));
        let (one_by_one, err) = feed(&mut dec, bytes.chunks(1));
        prop_assert_eq!(err, None);
        prop_assert_eq!(one_by_one, frames);
        prop_assert_eq!(dec.stats().frames_in_place, 0);
    }

    /// Hostile input never panics (nor touches storage beyond the configured size); it
    /// decodes to the same frames and the same error in any chunking; the first error latches:
    /// every later call returns it, whatever it is given, until `reset`.
    #[test]
    fn arbitrary_bytes_never_panic_and_errors_latch(
        bytes in hostile(),
        cuts in vec(any::<Index>(), 0..16),
        config in any_config(),
    ) {
        let mut whole = decoder(config);
        let (frames, err) = feed(&mut whole, [&bytes[..]]);
        let at = cut_points(bytes.len(), &cuts);
        let mut split = decoder(config);
        let (frames2, err2) = feed(&mut split, at.windows(2).map(|w| &bytes[w[0]..w[1]]));
        prop_assert_eq!(&frames2, &frames);
        prop_assert_eq!(err2, err);
        prop_assert_eq!(split.rejected_header(), whole.rejected_header());
        let wire: usize = frames.iter().map(|f| f.ext.len() + align64(f.aux.len())).sum();
        match err {
            None => {
                prop_assert_eq!(wire + whole.buffered(), bytes.len());
                prop_assert_eq!(whole.is_idle(), whole.buffered() == 0);
            }
            Some(e) => {
                for dec in [&mut whole, &mut split] {
                    prop_assert!(!dec.is_idle());
                    prop_assert_eq!(dec.error(), Some(e));
                    prop_assert_eq!(dec.decode(&[]).err(), Some(e));
                    prop_assert_eq!(dec.decode(&bytes).err(), Some(e));
                    prop_assert_eq!(dec.decode(&bytes[wire..]).err(), Some(e));
                    prop_assert_eq!(dec.error(), Some(e));
                    if matches!(
                        e,
                        DecodeError::HeaderCrc { .. }
                            | DecodeError::AuxCrc { .. }
                            | DecodeError::Sequence { .. }
                    ) {
                        let h = Header::new_checked(&bytes[wire..wire + HEADER_LEN]).unwrap();
                        prop_assert_eq!(
                            dec.rejected_header(),
                            Some((HeaderRepr::parse(&h), h.byte_order()))
                        );
                        prop_assert_eq!(dec.frame_offset(), wire as u64);
                    } else {
                        prop_assert_eq!(dec.rejected_header(), None);
                    }
                    dec.reset();
                    prop_assert!(dec.is_idle());
                    prop_assert_eq!(dec.error(), None);
                }
            }
        }
    }

    /// The frame writer, fed output pieces of any size (including empty ones), writes exactly
    /// the bytes `encode` writes, and leaves the encoder in the same state.
    #[test]
    fn piecewise_writer_equals_whole_encode(
        spec in stream(),
        pieces in vec(0usize..300, 1..20),
    ) {
        let mut whole = Encoder::with_byte_order(spec.seed, spec.order);
        let mut piecewise = whole;
        // A non-empty piece in every cycle, so the writer always makes progress.
        let mut pieces = pieces;
        pieces.push(64);
        let mut sizes = pieces.iter().cycle();
        for f in &spec.frames {
            let total = frame_len(f.header.cmd.size_blocks(), f.aux.len());
            let mut a = vec![0xEEu8; total];
            let n = whole.encode(&SoftCrc32c16, &f.header, &f.body, &f.aux, &mut a).unwrap();
            prop_assert_eq!(n, total);
            let mut w = piecewise.start(&SoftCrc32c16, &f.header, &f.body, &f.aux).unwrap();
            prop_assert_eq!(w.len(), total);
            let mut b = vec![0x77u8; total];
            let mut at = 0;
            while !w.is_done() {
                let size = *sizes.next().expect("cycle");
                let end = (at + size).min(total);
                let wrote = w.write(&mut b[at..end]);
                prop_assert_eq!(wrote, end - at);
                at += wrote;
                prop_assert_eq!(w.remaining(), total - at);
            }
            prop_assert_eq!(w.write(&mut [0u8; 16]), 0);
            prop_assert_eq!(&b, &a);
            prop_assert_eq!(piecewise, whole);
        }
    }

    /// Flipping any one bit of a frame is detected, and by the check that covers that byte:
    /// the magic by `BadMagic`; the size byte by `BadHeaderSize`, by the header CRC (now over
    /// a different range) or, when the frame now claims more bytes than there are, by the
    /// frame never completing; `aux_bytes` by `AuxTooLarge` or the header CRC; every other
    /// header byte (CRC fields included) by the header CRC; every aux byte, padding included,
    /// by the aux CRC. CRC-32C detects every single-bit error in a fixed range; the size-byte
    /// cases that change the range are caught with probability 1 - 2^-32.
    #[test]
    fn corrupting_any_byte_is_detected_or_harmless(
        f in frame(),
        big in any::<bool>(),
        seed in any::<u32>(),
        bit in any::<Index>(),
    ) {
        let spec = StreamSpec {
            frames: vec![f],
            order: if big { ByteOrder::Big } else { ByteOrder::Little },
            seed,
        };
        let (bytes, _) = encode(&spec);
        let mut dec = decoder(DecoderConfig::default());
        let bit = bit.index(bytes.len() * 8);
        check_flip(&mut dec, &bytes, bit)?;
    }
}

/// Flips `bit` of the single frame `bytes` and checks the detection rule of
/// `corrupting_any_byte_is_detected_or_harmless` with a default-limits decoder.
fn check_flip(
    dec: &mut Decoder<Box<[u8]>, SoftCrc32c16>,
    bytes: &[u8],
    bit: usize,
) -> Result<(), TestCaseError> {
    let h = Header::new_checked(bytes).unwrap();
    let order = h.byte_order();
    let hlen = h.cmd().header_len();
    let byte = bit / 8;
    let mut bad = bytes.to_vec();
    bad[byte] ^= 1 << (bit % 8);
    dec.reset();
    let (frames, err) = feed(dec, [&bad[..]]);
    prop_assert!(
        frames.is_empty(),
        "a corrupted frame was delivered (bit {})",
        bit
    );
    let size_byte = match order {
        ByteOrder::Little => 0x20,
        ByteOrder::Big => 0x23,
    };
    let flipped = Header::new_unchecked(&bad[..], order);
    match byte {
        0 | 1 => prop_assert!(
            matches!(err, Some(DecodeError::BadMagic { .. })),
            "{:?}",
            err
        ),
        b if b == size_byte => {
            let blocks = flipped.cmd().size_blocks();
            if blocks == 0 || blocks > HDR_MAX_BLOCKS {
                prop_assert!(
                    matches!(err, Some(DecodeError::BadHeaderSize { .. })),
                    "{:?}",
                    err
                );
            } else if usize::from(blocks) * 64 > bad.len() {
                prop_assert_eq!(err, None);
                prop_assert!(!dec.is_idle(), "the frame must stay incomplete");
            } else {
                prop_assert!(
                    matches!(err, Some(DecodeError::HeaderCrc { .. })),
                    "{:?}",
                    err
                );
            }
        }
        0x28..=0x2B if flipped.aux_bytes() as usize > AUX_MAX => {
            prop_assert!(
                matches!(err, Some(DecodeError::AuxTooLarge { .. })),
                "{:?}",
                err
            );
        }
        b if b < hlen => {
            prop_assert!(
                matches!(err, Some(DecodeError::HeaderCrc { .. })),
                "{:?}",
                err
            );
        }
        _ => prop_assert!(matches!(err, Some(DecodeError::AuxCrc { .. })), "{:?}", err),
    }
    if matches!(
        err,
        Some(DecodeError::HeaderCrc { .. } | DecodeError::AuxCrc { .. })
    ) {
        prop_assert_eq!(
            dec.rejected_header(),
            Some((HeaderRepr::parse(&flipped), order))
        );
    }
    Ok(())
}

/// Every one of the single-bit flips of a few fixed frames (a LNK_SPAN with unaligned aux, a
/// BLK_WRITE with 4 KiB of aux, a 32-block unknown command) is detected, in both byte orders.
#[test]
fn every_single_bit_flip_of_fixed_frames_is_detected() {
    let mut span = SpanRepr {
        peer_label: Label::new("cluster").unwrap(),
        pfs_label: Label::new("pfs").unwrap(),
        rnss: 0x1234_5678,
        ..SpanRepr::default()
    };
    span.set_block_media(1 << 40, 4096, ByteOrder::Little);
    let frames = [
        FrameSpec {
            header: HeaderRepr::new(Cmd::new(Command::LnkSpan, Flags::CREATE), MsgId(7)),
            body: Body::Span(span),
            aux: b"hello, world".to_vec(),
        },
        FrameSpec {
            header: HeaderRepr::new(Cmd::new(Command::BlkWrite, Flags::CREATE), MsgId(9)),
            body: Body::BlkIo(BlkIoRepr {
                keyid: 1,
                offset: 4096,
                bytes: 4096,
                flags: 0,
            }),
            aux: (0..4096u32).map(|i| (i * 7) as u8).collect(),
        },
        FrameSpec {
            header: HeaderRepr::new(
                Cmd::with_size(
                    Command::Unknown {
                        proto: 9,
                        code: 0x123,
                    },
                    Flags::REPLY,
                    32,
                ),
                MsgId(1),
            ),
            body: Body::None,
            aux: vec![0xA5; 65],
        },
    ];
    let step = if cfg!(miri) { 257 } else { 1 };
    let mut dec = decoder(DecoderConfig::default());
    for f in frames {
        for order in [ByteOrder::Little, ByteOrder::Big] {
            let spec = StreamSpec {
                frames: vec![f.clone()],
                order,
                seed: 3,
            };
            let (bytes, _) = encode(&spec);
            for bit in (0..bytes.len() * 8).step_by(step) {
                if let Err(e) = check_flip(&mut dec, &bytes, bit) {
                    panic!("{:?} {order:?}, bit {bit}: {e}", f.header.cmd);
                }
            }
        }
    }
}
