//! Shared helpers for dmsg's integration tests: locating test data and decoding whole streams.

use std::path::PathBuf;

use dmsg_core::crc::DefaultCrc;
use dmsg_core::decode::{DecodeError, Decoder, DecoderConfig};
use dmsg_core::wire::{Body, HeaderRepr};

/// The repository root (parent of the `tests` crate).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests crate sits in the workspace root")
        .to_path_buf()
}

/// `tests/data/dragonfly/`: byte streams captured from DragonFly's own C implementation.
pub fn dragonfly_dir() -> PathBuf {
    repo_root().join("tests/data/dragonfly")
}

/// One decoded frame, owned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnedFrame {
    /// Base header.
    pub header: HeaderRepr,
    /// Parsed body (or the parse error's text).
    pub body: Result<Body, String>,
    /// Aux data without padding.
    pub aux: Vec<u8>,
    /// The extended header bytes as received.
    pub ext: Vec<u8>,
    /// True when the frame was big-endian.
    pub big_endian: bool,
}

/// Decodes `bytes` fed in chunks of `chunk` bytes; returns the frames and the error, if any.
pub fn decode_stream(
    bytes: &[u8],
    chunk: usize,
    config: DecoderConfig,
) -> (Vec<OwnedFrame>, Option<DecodeError>) {
    let mut dec = Decoder::new(
        vec![0u8; config.storage_len()].into_boxed_slice(),
        config,
        DefaultCrc::default(),
    )
    .expect("valid config");
    let mut frames = Vec::new();
    for piece in bytes.chunks(chunk.max(1)) {
        let mut input = piece;
        loop {
            match dec.decode(input) {
                Ok(out) => {
                    input = &input[out.consumed..];
                    match out.frame {
                        Some(f) => frames.push(OwnedFrame {
                            header: f.repr(),
                            body: f.body().map_err(|e| e.to_string()),
                            aux: f.aux().to_vec(),
                            ext: f.ext_bytes().to_vec(),
                            big_endian: f.byte_order() == dmsg_core::wire::ByteOrder::Big,
                        }),
                        None => {
                            if input.is_empty() {
                                break;
                            }
                        }
                    }
                }
                Err(e) => return (frames, Some(e)),
            }
        }
    }
    (frames, None)
}

pub mod sim;
