//! Extended headers: the command-specific structures that follow the 64-byte base header.
//!
//! Each repr reads and writes the whole extended header buffer (base header included, so the
//! offsets below match `spec/PROTOCOL.md`); `parse` needs at least the structure's length and
//! `emit` writes only the body's bytes (offset 0x40 onwards), leaving the base header alone.

use super::field::{bytes_at, put_u16, put_u32, put_u64, u16_at, u32_at, u64_at};
use super::{ByteOrder, Command, Label, Uuid, WireError, LABEL_SIZE};

/// Peer types carried in LNK_CONN / LNK_SPAN (`peer_type`; `peer_mask` is a bit mask of them).
pub mod peer_type {
    /// No type.
    pub const NONE: u8 = 0;
    /// A cluster controller (router / hub).
    pub const ROUTER: u8 = 1;
    /// Block devices.
    pub const BLOCK: u8 = 2;
    /// A HAMMER2 mounted volume.
    pub const HAMMER2: u8 = 3;
    /// A client connection.
    pub const CLIENT: u8 = 63;

    /// The protocol's name of a peer type (`"HAMMER2"`), if it has one.
    pub const fn name(t: u8) -> Option<&'static str> {
        match t {
            NONE => Some("NONE"),
            ROUTER => Some("ROUTER"),
            BLOCK => Some("BLOCK"),
            HAMMER2 => Some("HAMMER2"),
            CLIENT => Some("CLIENT"),
            _ => None,
        }
    }
}

fn check_len(ext: &[u8], command: Command) -> Result<(), WireError> {
    let needed = command.struct_len().unwrap_or(64);
    if ext.len() < needed {
        return Err(WireError::BodyTooShort {
            command,
            blocks: (ext.len() / 64) as u8,
            needed: command.blocks(),
        });
    }
    Ok(())
}

fn uuid_at(b: &[u8], off: usize) -> Uuid {
    Uuid(bytes_at::<16>(b, off))
}

fn label_at(b: &[u8], off: usize) -> Label {
    Label::from_wire(&bytes_at::<LABEL_SIZE>(b, off))
}

/// LNK_AUTH body: 64 opaque bytes at 0x40.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct AuthRepr {
    /// `dummy[64]`.
    pub dummy: [u8; 64],
}

impl Default for AuthRepr {
    fn default() -> Self {
        AuthRepr { dummy: [0; 64] }
    }
}

impl AuthRepr {
    /// Parses the body from an extended header.
    pub fn parse(ext: &[u8], _order: ByteOrder) -> Result<Self, WireError> {
        check_len(ext, Command::LnkAuth)?;
        Ok(AuthRepr {
            dummy: bytes_at::<64>(ext, 0x40),
        })
    }
    /// Writes the body into an extended header of at least 128 bytes.
    pub fn emit(&self, ext: &mut [u8], _order: ByteOrder) {
        ext[0x40..0x80].copy_from_slice(&self.dummy);
    }
}

/// LNK_CONN body (newest revision, 6 blocks).
///
/// | off | field |
/// |---|---|
/// | 0x40 | media_id (uuid) |
/// | 0x50 | peer_id (uuid) |
/// | 0x60 | reserved01 (16 bytes) |
/// | 0x70 | peer_mask u64 |
/// | 0x78 | peer_type u8 |
/// | 0x79 | reserved02 u8 |
/// | 0x7A | proto_version u16 |
/// | 0x7C | status u32 |
/// | 0x80 | rnss u32 |
/// | 0x84 | 8 reserved bytes |
/// | 0x8C | ext_offer u32 |
/// | 0x90 | ext_param u32 |
/// | 0x94 | session_id u64 |
/// | 0x9C | 40 reserved bytes |
/// | 0xC4 | peer_label\[128\] |
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct ConnRepr {
    /// Media configuration id.
    pub media_id: Uuid,
    /// Unique peer id (cluster id).
    pub peer_id: Uuid,
    /// Bit mask of peer types whose spans this side wants (`1 << peer_type`).
    pub peer_mask: u64,
    /// This side's peer type (see [`peer_type`]).
    pub peer_type: u8,
    /// High-level protocol version.
    pub proto_version: u16,
    /// Status flags.
    pub status: u32,
    /// Node's random sub-sort value.
    pub rnss: u32,
    /// Peer identity string.
    pub peer_label: Label,
    /// The first reserved u32 at 0x8C. Zero from DragonFly; our link layer uses it to offer
    /// extensions (see `spec/PROTOCOL.md`).
    pub ext_offer: u32,
    /// The second reserved u32 at 0x90 (extension parameter).
    pub ext_param: u32,
    /// The third and fourth reserved u32s at 0x94/0x98, read as one u64 in the frame's byte
    /// order: the sender's reliable-session identity (`crate::session`), 0 for none. Zero
    /// from DragonFly, which never reads it.
    pub session_id: u64,
}

impl ConnRepr {
    /// Parses the body from an extended header.
    pub fn parse(ext: &[u8], o: ByteOrder) -> Result<Self, WireError> {
        check_len(ext, Command::LnkConn)?;
        Ok(ConnRepr {
            media_id: uuid_at(ext, 0x40),
            peer_id: uuid_at(ext, 0x50),
            peer_mask: u64_at(ext, 0x70, o),
            peer_type: ext[0x78],
            proto_version: u16_at(ext, 0x7A, o),
            status: u32_at(ext, 0x7C, o),
            rnss: u32_at(ext, 0x80, o),
            ext_offer: u32_at(ext, 0x8C, o),
            ext_param: u32_at(ext, 0x90, o),
            session_id: u64_at(ext, 0x94, o),
            peer_label: label_at(ext, 0xC4),
        })
    }
    /// Writes the body into an extended header of at least 384 bytes.
    pub fn emit(&self, ext: &mut [u8], o: ByteOrder) {
        ext[0x40..0x50].copy_from_slice(&self.media_id.0);
        ext[0x50..0x60].copy_from_slice(&self.peer_id.0);
        put_u64(ext, 0x70, self.peer_mask, o);
        ext[0x78] = self.peer_type;
        put_u16(ext, 0x7A, self.proto_version, o);
        put_u32(ext, 0x7C, self.status, o);
        put_u32(ext, 0x80, self.rnss, o);
        put_u32(ext, 0x8C, self.ext_offer, o);
        put_u32(ext, 0x90, self.ext_param, o);
        put_u64(ext, 0x94, self.session_id, o);
        ext[0xC4..0xC4 + LABEL_SIZE].copy_from_slice(&self.peer_label.to_wire());
    }
}

/// LNK_SPAN body (newest revision, 7 blocks).
///
/// | off | field |
/// |---|---|
/// | 0x40 | peer_id (uuid) |
/// | 0x50 | pfs_id (uuid) |
/// | 0x60 | pfs_type u8 |
/// | 0x61 | peer_type u8 |
/// | 0x62 | proto_version u16 |
/// | 0x64 | status u32 |
/// | 0x68 | reserved (8) |
/// | 0x70 | dist u32 |
/// | 0x74 | rnss u32 |
/// | 0x78 | media (56 bytes; block media: bytes u64, blksize u32) |
/// | 0xB0 | peer_label\[128\] |
/// | 0x130 | pfs_label\[128\] |
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct SpanRepr {
    /// Cluster id.
    pub peer_id: Uuid,
    /// Node id (unique PFS id).
    pub pfs_id: Uuid,
    /// PFS type.
    pub pfs_type: u8,
    /// Peer type (see [`peer_type`]).
    pub peer_type: u8,
    /// High-level protocol version.
    pub proto_version: u16,
    /// Status flags.
    pub status: u32,
    /// Distance in hops from the advertising node.
    pub dist: u32,
    /// Random sub-sort.
    pub rnss: u32,
    /// The 56-byte media union, as bytes in the frame's order. See [`SpanRepr::block_media`].
    pub media: [u8; 56],
    /// Peer (cluster) label.
    pub peer_label: Label,
    /// PFS (node) label.
    pub pfs_label: Label,
}

impl Default for SpanRepr {
    fn default() -> Self {
        SpanRepr {
            peer_id: Uuid::NIL,
            pfs_id: Uuid::NIL,
            pfs_type: 0,
            peer_type: 0,
            proto_version: 0,
            status: 0,
            dist: 0,
            rnss: 0,
            media: [0; 56],
            peer_label: Label::EMPTY,
            pfs_label: Label::EMPTY,
        }
    }
}

impl SpanRepr {
    /// Parses the body from an extended header.
    pub fn parse(ext: &[u8], o: ByteOrder) -> Result<Self, WireError> {
        check_len(ext, Command::LnkSpan)?;
        Ok(SpanRepr {
            peer_id: uuid_at(ext, 0x40),
            pfs_id: uuid_at(ext, 0x50),
            pfs_type: ext[0x60],
            peer_type: ext[0x61],
            proto_version: u16_at(ext, 0x62, o),
            status: u32_at(ext, 0x64, o),
            dist: u32_at(ext, 0x70, o),
            rnss: u32_at(ext, 0x74, o),
            media: bytes_at::<56>(ext, 0x78),
            peer_label: label_at(ext, 0xB0),
            pfs_label: label_at(ext, 0x130),
        })
    }
    /// Writes the body into an extended header of at least 448 bytes.
    pub fn emit(&self, ext: &mut [u8], o: ByteOrder) {
        ext[0x40..0x50].copy_from_slice(&self.peer_id.0);
        ext[0x50..0x60].copy_from_slice(&self.pfs_id.0);
        ext[0x60] = self.pfs_type;
        ext[0x61] = self.peer_type;
        put_u16(ext, 0x62, self.proto_version, o);
        put_u32(ext, 0x64, self.status, o);
        put_u32(ext, 0x70, self.dist, o);
        put_u32(ext, 0x74, self.rnss, o);
        ext[0x78..0xB0].copy_from_slice(&self.media);
        ext[0xB0..0x130].copy_from_slice(&self.peer_label.to_wire());
        ext[0x130..0x1B0].copy_from_slice(&self.pfs_label.to_wire());
    }

    /// The media union read as block media `(bytes, blksize)` in byte order `o`.
    pub fn block_media(&self, o: ByteOrder) -> (u64, u32) {
        (u64_at(&self.media, 0, o), u32_at(&self.media, 8, o))
    }

    /// Sets the media union to block media `(bytes, blksize)` in byte order `o`.
    pub fn set_block_media(&mut self, bytes: u64, blksize: u32, o: ByteOrder) {
        self.media = [0; 56];
        put_u64(&mut self.media, 0, bytes, o);
        put_u32(&mut self.media, 8, blksize, o);
    }
}

/// LNK_VOLCONF body (HAMMER2 volume configuration, 8 blocks).
///
/// | off | field |
/// |---|---|
/// | 0x40 | copyid, inprog, chain_to, chain_from (u8 each) |
/// | 0x44 | flags u16 |
/// | 0x46 | error u8, priority u8, remote_pfs_type u8 |
/// | 0x60 | pfs_clid (uuid) |
/// | 0x70 | label\[16\] |
/// | 0x80 | path\[64\] |
/// | 0xC0 | index i32 |
/// | 0xC8 | mediaid (uuid) |
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct VolconfRepr {
    /// Copy id 0-255.
    pub copyid: u8,
    /// Operation in progress.
    pub inprog: u8,
    /// Operation chaining to.
    pub chain_to: u8,
    /// Operation chaining from.
    pub chain_from: u8,
    /// Flags.
    pub flags: u16,
    /// Last operational error.
    pub error: u8,
    /// Priority and round-robin flag.
    pub priority: u8,
    /// Probed remote PFS type.
    pub remote_pfs_type: u8,
    /// Copy target cluster id.
    pub pfs_clid: Uuid,
    /// Import/export label.
    pub label: [u8; 16],
    /// Target specification string or key.
    pub path: [u8; 64],
    /// Index of the copy.
    pub index: i32,
    /// Media id.
    pub mediaid: Uuid,
}

impl Default for VolconfRepr {
    fn default() -> Self {
        VolconfRepr {
            copyid: 0,
            inprog: 0,
            chain_to: 0,
            chain_from: 0,
            flags: 0,
            error: 0,
            priority: 0,
            remote_pfs_type: 0,
            pfs_clid: Uuid::NIL,
            label: [0; 16],
            path: [0; 64],
            index: 0,
            mediaid: Uuid::NIL,
        }
    }
}

impl VolconfRepr {
    /// Parses the body from an extended header.
    pub fn parse(ext: &[u8], o: ByteOrder) -> Result<Self, WireError> {
        check_len(ext, Command::LnkVolconf)?;
        Ok(VolconfRepr {
            copyid: ext[0x40],
            inprog: ext[0x41],
            chain_to: ext[0x42],
            chain_from: ext[0x43],
            flags: u16_at(ext, 0x44, o),
            error: ext[0x46],
            priority: ext[0x47],
            remote_pfs_type: ext[0x48],
            pfs_clid: uuid_at(ext, 0x60),
            label: bytes_at::<16>(ext, 0x70),
            path: bytes_at::<64>(ext, 0x80),
            index: u32_at(ext, 0xC0, o) as i32,
            mediaid: uuid_at(ext, 0xC8),
        })
    }
    /// Writes the body into an extended header of at least 512 bytes.
    pub fn emit(&self, ext: &mut [u8], o: ByteOrder) {
        ext[0x40] = self.copyid;
        ext[0x41] = self.inprog;
        ext[0x42] = self.chain_to;
        ext[0x43] = self.chain_from;
        put_u16(ext, 0x44, self.flags, o);
        ext[0x46] = self.error;
        ext[0x47] = self.priority;
        ext[0x48] = self.remote_pfs_type;
        ext[0x60..0x70].copy_from_slice(&self.pfs_clid.0);
        ext[0x70..0x80].copy_from_slice(&self.label);
        ext[0x80..0xC0].copy_from_slice(&self.path);
        put_u32(ext, 0xC0, self.index as u32, o);
        ext[0xC8..0xD8].copy_from_slice(&self.mediaid.0);
    }
}

/// BLK_OPEN / BLK_CLOSE body: `modes` u32 at 0x40 (bit 0 read, bit 1 write).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct BlkOpenRepr {
    /// Open modes.
    pub modes: u32,
}

impl BlkOpenRepr {
    /// Read access.
    pub const RD: u32 = 0x0001;
    /// Write access.
    pub const WR: u32 = 0x0002;

    /// Parses the body from an extended header.
    pub fn parse(ext: &[u8], o: ByteOrder) -> Result<Self, WireError> {
        check_len(ext, Command::BlkOpen)?;
        Ok(BlkOpenRepr {
            modes: u32_at(ext, 0x40, o),
        })
    }
    /// Writes the body into an extended header of at least 128 bytes.
    pub fn emit(&self, ext: &mut [u8], o: ByteOrder) {
        put_u32(ext, 0x40, self.modes, o);
    }
}

/// BLK_READ / BLK_WRITE / BLK_FLUSH / BLK_FREEBLKS body.
///
/// | off | field |
/// |---|---|
/// | 0x40 | keyid u64 |
/// | 0x48 | offset u64 |
/// | 0x50 | bytes u32 |
/// | 0x54 | flags u32 |
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct BlkIoRepr {
    /// Key returned by BLK_OPEN.
    pub keyid: u64,
    /// Byte offset on the device.
    pub offset: u64,
    /// Length in bytes.
    pub bytes: u32,
    /// Flags.
    pub flags: u32,
}

impl BlkIoRepr {
    /// Parses the body from an extended header.
    pub fn parse(ext: &[u8], o: ByteOrder) -> Result<Self, WireError> {
        check_len(ext, Command::BlkRead)?;
        Ok(BlkIoRepr {
            keyid: u64_at(ext, 0x40, o),
            offset: u64_at(ext, 0x48, o),
            bytes: u32_at(ext, 0x50, o),
            flags: u32_at(ext, 0x54, o),
        })
    }
    /// Writes the body into an extended header of at least 128 bytes.
    pub fn emit(&self, ext: &mut [u8], o: ByteOrder) {
        put_u64(ext, 0x40, self.keyid, o);
        put_u64(ext, 0x48, self.offset, o);
        put_u32(ext, 0x50, self.bytes, o);
        put_u32(ext, 0x54, self.flags, o);
    }
}

/// BLK_ERROR body: keyid u64 at 0x40, resid u32 at 0x48, buf\[64\] at 0x50.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct BlkErrorRepr {
    /// Key returned by BLK_OPEN.
    pub keyid: u64,
    /// Residual byte count.
    pub resid: u32,
    /// Extended result bytes.
    pub buf: [u8; 64],
}

impl Default for BlkErrorRepr {
    fn default() -> Self {
        BlkErrorRepr {
            keyid: 0,
            resid: 0,
            buf: [0; 64],
        }
    }
}

impl BlkErrorRepr {
    /// Parses the body from an extended header.
    pub fn parse(ext: &[u8], o: ByteOrder) -> Result<Self, WireError> {
        check_len(ext, Command::BlkError)?;
        Ok(BlkErrorRepr {
            keyid: u64_at(ext, 0x40, o),
            resid: u32_at(ext, 0x48, o),
            buf: bytes_at::<64>(ext, 0x50),
        })
    }
    /// Writes the body into an extended header of at least 192 bytes.
    pub fn emit(&self, ext: &mut [u8], o: ByteOrder) {
        put_u64(ext, 0x40, self.keyid, o);
        put_u32(ext, 0x48, self.resid, o);
        ext[0x50..0x90].copy_from_slice(&self.buf);
    }
}

/// Any extended-header body.
///
/// Without the `all-bodies` feature (on by default) only [`Body::Conn`] and [`Body::Span`]
/// exist: frames of LNK_AUTH, LNK_VOLCONF and the BLK_* commands are then received with
/// [`Body::None`] (their extended header is not parsed) and cannot be sent. A cluster leaf
/// on a small MCU needs neither, and leaving them out saves about 3.5 KiB of flash.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Body {
    /// Base header only (PAD, PING, ERROR, DBG_SHELL), or a command we have no structure for
    /// (its bytes are still available from the frame).
    #[default]
    None,
    /// LNK_AUTH.
    #[cfg(feature = "all-bodies")]
    Auth(AuthRepr),
    /// LNK_CONN.
    Conn(ConnRepr),
    /// LNK_SPAN.
    Span(SpanRepr),
    /// LNK_VOLCONF.
    #[cfg(feature = "all-bodies")]
    Volconf(VolconfRepr),
    /// BLK_OPEN or BLK_CLOSE.
    #[cfg(feature = "all-bodies")]
    BlkOpen(BlkOpenRepr),
    /// BLK_READ, BLK_WRITE, BLK_FLUSH or BLK_FREEBLKS.
    #[cfg(feature = "all-bodies")]
    BlkIo(BlkIoRepr),
    /// BLK_ERROR.
    #[cfg(feature = "all-bodies")]
    BlkError(BlkErrorRepr),
}

impl Body {
    /// Parses the body of `command` from an extended header (base header included).
    pub fn parse(command: Command, ext: &[u8], o: ByteOrder) -> Result<Body, WireError> {
        Ok(match command {
            #[cfg(feature = "all-bodies")]
            Command::LnkAuth => Body::Auth(AuthRepr::parse(ext, o)?),
            Command::LnkConn => Body::Conn(ConnRepr::parse(ext, o)?),
            Command::LnkSpan => Body::Span(SpanRepr::parse(ext, o)?),
            #[cfg(feature = "all-bodies")]
            Command::LnkVolconf => Body::Volconf(VolconfRepr::parse(ext, o)?),
            #[cfg(feature = "all-bodies")]
            Command::BlkOpen | Command::BlkClose => Body::BlkOpen(BlkOpenRepr::parse(ext, o)?),
            #[cfg(feature = "all-bodies")]
            Command::BlkRead | Command::BlkWrite | Command::BlkFlush | Command::BlkFreeblks => {
                Body::BlkIo(BlkIoRepr::parse(ext, o)?)
            }
            #[cfg(feature = "all-bodies")]
            Command::BlkError => Body::BlkError(BlkErrorRepr::parse(ext, o)?),
            _ => Body::None,
        })
    }

    /// The number of 64-byte blocks this body needs (1 for [`Body::None`]).
    pub fn blocks(&self) -> u8 {
        match self {
            Body::None => 1,
            #[cfg(feature = "all-bodies")]
            Body::Auth(_) => Command::LnkAuth.blocks(),
            Body::Conn(_) => Command::LnkConn.blocks(),
            Body::Span(_) => Command::LnkSpan.blocks(),
            #[cfg(feature = "all-bodies")]
            Body::Volconf(_) => Command::LnkVolconf.blocks(),
            #[cfg(feature = "all-bodies")]
            Body::BlkOpen(_) => Command::BlkOpen.blocks(),
            #[cfg(feature = "all-bodies")]
            Body::BlkIo(_) => Command::BlkRead.blocks(),
            #[cfg(feature = "all-bodies")]
            Body::BlkError(_) => Command::BlkError.blocks(),
        }
    }

    /// True when this body is the structure `command` carries.
    pub fn fits(&self, command: Command) -> bool {
        match (self, command) {
            (Body::None, _) => command.struct_len().is_none_or(|l| l <= 64),
            (Body::Conn(_), Command::LnkConn) | (Body::Span(_), Command::LnkSpan) => true,
            #[cfg(feature = "all-bodies")]
            (Body::Auth(_), Command::LnkAuth)
            | (Body::Volconf(_), Command::LnkVolconf)
            | (Body::BlkOpen(_), Command::BlkOpen | Command::BlkClose)
            | (
                Body::BlkIo(_),
                Command::BlkRead | Command::BlkWrite | Command::BlkFlush | Command::BlkFreeblks,
            )
            | (Body::BlkError(_), Command::BlkError) => true,
            _ => false,
        }
    }

    /// Writes the body into `ext` (at least `blocks() * 64` bytes, base header included).
    pub fn emit(&self, ext: &mut [u8], o: ByteOrder) {
        match self {
            Body::None => {}
            #[cfg(feature = "all-bodies")]
            Body::Auth(r) => r.emit(ext, o),
            Body::Conn(r) => r.emit(ext, o),
            Body::Span(r) => r.emit(ext, o),
            #[cfg(feature = "all-bodies")]
            Body::Volconf(r) => r.emit(ext, o),
            #[cfg(feature = "all-bodies")]
            Body::BlkOpen(r) => r.emit(ext, o),
            #[cfg(feature = "all-bodies")]
            Body::BlkIo(r) => r.emit(ext, o),
            #[cfg(feature = "all-bodies")]
            Body::BlkError(r) => r.emit(ext, o),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(feature = "all-bodies")]
    fn every_body_round_trips_in_both_orders() {
        let mut span = SpanRepr {
            peer_id: Uuid([1; 16]),
            pfs_id: Uuid([2; 16]),
            pfs_type: 8,
            peer_type: 3,
            proto_version: 1,
            status: 7,
            dist: 3,
            rnss: 0x1234_5678,
            peer_label: Label::new("cluster").unwrap(),
            pfs_label: Label::new("pfs").unwrap(),
            ..SpanRepr::default()
        };
        span.set_block_media(1 << 40, 4096, ByteOrder::Little);
        let bodies = [
            (Command::LnkAuth, Body::Auth(AuthRepr { dummy: [9; 64] })),
            (
                Command::LnkConn,
                Body::Conn(ConnRepr {
                    media_id: Uuid([3; 16]),
                    peer_id: Uuid([4; 16]),
                    peer_mask: u64::MAX,
                    peer_type: 1,
                    proto_version: 2,
                    status: 3,
                    rnss: 4,
                    peer_label: Label::new("hub").unwrap(),
                    ext_offer: 5,
                    ext_param: 6,
                    session_id: 0x0102_0304_0506_0708,
                }),
            ),
            (Command::LnkSpan, Body::Span(span)),
            (
                Command::LnkVolconf,
                Body::Volconf(VolconfRepr {
                    copyid: 1,
                    flags: 0x0101,
                    index: -3,
                    path: [b'p'; 64],
                    ..VolconfRepr::default()
                }),
            ),
            (Command::BlkClose, Body::BlkOpen(BlkOpenRepr { modes: 3 })),
            (
                Command::BlkWrite,
                Body::BlkIo(BlkIoRepr {
                    keyid: 1,
                    offset: 2,
                    bytes: 3,
                    flags: 4,
                }),
            ),
            (
                Command::BlkError,
                Body::BlkError(BlkErrorRepr {
                    keyid: 5,
                    resid: 6,
                    buf: [7; 64],
                }),
            ),
        ];
        for (cmd, body) in bodies {
            assert!(body.fits(cmd));
            for o in [ByteOrder::Little, ByteOrder::Big] {
                let mut ext = [0u8; 2048];
                let len = body.blocks() as usize * 64;
                body.emit(&mut ext[..len], o);
                assert_eq!(Body::parse(cmd, &ext[..len], o).unwrap(), body, "{cmd}");
            }
        }
    }

    #[test]
    fn short_extended_header_is_an_error_not_a_panic() {
        let ext = [0u8; 64];
        assert!(matches!(
            Body::parse(Command::LnkSpan, &ext, ByteOrder::Little),
            Err(WireError::BodyTooShort { needed: 7, .. })
        ));
    }
}
