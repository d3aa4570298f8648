//! The DMSG wire format: zero-copy views and plain `Repr`s of every header.
//!
//! Modelled on smoltcp's `wire` module:
//! - [`Header`] is a view over a byte buffer with checked field accessors. After
//!   [`Header::new_checked`] succeeds no accessor panics.
//! - [`HeaderRepr`] and the extended-header reprs in [`body`] are plain structs with `parse`
//!   and `emit`. `parse` never panics on any input; `emit` never panics on a buffer of at least
//!   the length it reports.
//!
//! Byte order: DragonFly writes frames in the sender's native order. A little-endian sender's
//! magic reads `0x4832`; a big-endian sender's reads `0x3248` and every base-header field is
//! swapped. Extended-header bodies are read in the frame's byte order too (DragonFly's own C
//! code swaps only the base header; we decode what a big-endian sender actually wrote). UUIDs
//! and labels are byte strings and never swapped. See `spec/PROTOCOL.md`.

mod cmd;
mod field;
mod header;
mod types;

pub mod body;

pub use body::Body;
pub use cmd::{Cmd, Command, Flags, Protocol};
pub use header::{Header, HeaderRepr};
pub use types::{Circuit, Label, MsgId, Uuid};

use core::fmt;

/// Magic number of a frame written in our (little-endian) order, as read little-endian.
pub const MAGIC: u16 = 0x4832;
/// Magic number of a frame from a peer of the other byte order, as read little-endian.
pub const MAGIC_REV: u16 = 0x3248;
/// Length of the base header in bytes.
pub const HEADER_LEN: usize = 64;
/// Alignment of headers and aux data in bytes.
pub const ALIGN: usize = 64;
/// Largest extended header the protocol allows (bytes).
pub const HDR_MAX: usize = 2048;
/// Largest extended header, in 64-byte blocks (the `size` field of the command word).
pub const HDR_MAX_BLOCKS: u8 = (HDR_MAX / ALIGN) as u8;
/// Largest aux payload the newest protocol revision allows (1 MiB). A receiver may configure
/// a smaller limit.
pub const AUX_MAX: usize = 1024 * 1024;
/// Length of the label fields of LNK_CONN and LNK_SPAN.
pub const LABEL_SIZE: usize = 128;
/// TCP port of the DMSG service.
pub const DEFAULT_PORT: u16 = 987;

/// Rounds `len` up to a multiple of [`ALIGN`], saturating.
pub const fn align64(len: usize) -> usize {
    match len.checked_add(ALIGN - 1) {
        Some(v) => v & !(ALIGN - 1),
        None => usize::MAX & !(ALIGN - 1),
    }
}

/// Byte order of a frame, detected from its magic number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ByteOrder {
    /// Little-endian (magic `0x4832`); what we send.
    #[default]
    Little,
    /// Big-endian (magic reads `0x3248` little-endian).
    Big,
}

impl ByteOrder {
    /// The byte order a frame starting with `magic` (read little-endian) was written in.
    pub const fn from_magic(magic: u16) -> Option<ByteOrder> {
        match magic {
            MAGIC => Some(ByteOrder::Little),
            MAGIC_REV => Some(ByteOrder::Big),
            _ => None,
        }
    }
}

/// Errors from parsing or emitting wire structures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum WireError {
    /// The buffer is shorter than the structure needs.
    Truncated {
        /// Bytes needed.
        needed: usize,
        /// Bytes available.
        available: usize,
    },
    /// The magic number is neither `0x4832` nor `0x3248`.
    BadMagic(u16),
    /// The header size field is 0 or larger than [`HDR_MAX_BLOCKS`].
    BadHeaderSize(u8),
    /// The extended header is shorter than the command's structure.
    BodyTooShort {
        /// The command.
        command: Command,
        /// Blocks in the frame.
        blocks: u8,
        /// Blocks the structure needs.
        needed: u8,
    },
    /// A label is longer than [`LABEL_SIZE`] - 1 bytes or contains a NUL byte.
    BadLabel,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            WireError::Truncated { needed, available } => {
                write!(f, "buffer too short: need {needed} bytes, have {available}")
            }
            WireError::BadMagic(m) => write!(f, "bad magic {m:#06x} (expected 0x4832 or 0x3248)"),
            WireError::BadHeaderSize(s) => {
                write!(
                    f,
                    "header size field {s} is outside 1..={HDR_MAX_BLOCKS} blocks"
                )
            }
            WireError::BodyTooShort {
                command,
                blocks,
                needed,
            } => write!(
                f,
                "{command} needs {needed} header blocks, frame has {blocks}"
            ),
            WireError::BadLabel => write!(f, "label longer than 127 bytes or contains NUL"),
        }
    }
}

impl core::error::Error for WireError {}
