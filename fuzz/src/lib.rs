//! Fuzz targets for dmsg-core's codec and link layer (see `README.md`).
//!
//! The invariants live in [`invariants`] so that `tests/tests/regressions.rs` can replay
//! crash inputs without libFuzzer; this file adds only the `arbitrary` input type of the
//! `roundtrip` target.

pub mod connection;
pub mod invariants;
pub mod node;
pub mod session;

use arbitrary::Arbitrary;
use dmsg_core::wire::{Body, HeaderRepr};

pub use connection::check_connection;
pub use invariants::{check_decode_bytes, check_roundtrip, RoundtripCase};
pub use node::{check_node, NodeRun};
pub use session::{check_session, SessionRun};

/// At most this many frames per `roundtrip` input.
pub const MAX_FRAMES: usize = 8;

/// One frame of a `roundtrip` input.
#[derive(Clone, Debug, Arbitrary)]
pub struct FrameInput {
    /// Any header: the command word may not fit the body (then the encoder must refuse it,
    /// and the target sends a fixed-up copy).
    pub header: HeaderRepr,
    /// Any body.
    pub body: Body,
    /// Aux data.
    pub aux: Vec<u8>,
}

/// The `roundtrip` target's input.
#[derive(Clone, Debug, Arbitrary)]
pub struct RoundtripInput {
    /// Send big-endian.
    pub big_endian: bool,
    /// Salt seed.
    pub seed: u32,
    /// Decoder input chunking (0 = all at once).
    pub split: u8,
    /// Frame writer piece sizes (0 = all at once).
    pub piece: u8,
    /// The frames.
    pub frames: Vec<FrameInput>,
}

impl From<RoundtripInput> for RoundtripCase {
    fn from(input: RoundtripInput) -> RoundtripCase {
        RoundtripCase {
            frames: input
                .frames
                .into_iter()
                .take(MAX_FRAMES)
                .map(|f| (f.header, f.body, f.aux))
                .collect(),
            big_endian: input.big_endian,
            seed: input.seed,
            split: input.split,
            piece: input.piece,
        }
    }
}
