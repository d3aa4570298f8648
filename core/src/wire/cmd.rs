//! The 32-bit command word: flags, protocol, command and header size.

use core::fmt;

bitflags::bitflags! {
    /// Flag bits of the command word (its top byte).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
    pub struct Flags: u32 {
        /// First message of a transaction direction: opens the transaction.
        const CREATE = 0x8000_0000;
        /// Last message of a transaction direction: closes that direction.
        const DELETE = 0x4000_0000;
        /// The message travels in the reply direction of the transaction.
        const REPLY = 0x2000_0000;
        /// Abort request (see the special cases in `spec/PROTOCOL.md`).
        const ABORT = 0x1000_0000;
        /// `msgid` names the transaction of the opposite direction's table.
        const REVTRANS = 0x0800_0000;
        /// `circuit` names a transaction of the opposite direction's table.
        const REVCIRC = 0x0400_0000;
        /// Reserved for protocol use.
        const FLAG1 = 0x0200_0000;
        /// Reserved for protocol use.
        const FLAG0 = 0x0100_0000;
    }
}

#[cfg(feature = "defmt")]
impl defmt::Format for Flags {
    fn format(&self, f: defmt::Formatter) {
        defmt::write!(f, "{=u32:#x}", self.bits())
    }
}

impl Flags {
    /// Names of the set flags, in wire-bit order (CREATE first).
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        self.iter_names().map(|(n, _)| n)
    }
}

/// Mask of the flag bits.
pub const FLAGS_MASK: u32 = 0xFF00_0000;
/// Mask of the protocol nibble.
pub const PROTO_MASK: u32 = 0x00F0_0000;
/// Mask of the 12-bit command.
pub const CMDS_MASK: u32 = 0x000F_FF00;
/// Mask of the header size (in 64-byte blocks).
pub const SIZE_MASK: u32 = 0x0000_00FF;

/// The protocol nibble of the command word.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Protocol {
    /// Link layer (PAD, PING, AUTH, CONN, SPAN, VOLCONF, ERROR).
    Lnk,
    /// Debug (DBG_SHELL).
    Dbg,
    /// HAMMER2 cluster operations.
    Hm2,
    /// Reserved.
    Xx3,
    /// Reserved.
    Xx4,
    /// Block device protocol.
    Blk,
    /// VOP protocol.
    Vop,
    /// Any other value of the nibble.
    Other(u8),
}

impl Protocol {
    /// The protocol of nibble value `n` (0..=15).
    pub const fn from_nibble(n: u8) -> Protocol {
        match n {
            0 => Protocol::Lnk,
            1 => Protocol::Dbg,
            2 => Protocol::Hm2,
            3 => Protocol::Xx3,
            4 => Protocol::Xx4,
            5 => Protocol::Blk,
            6 => Protocol::Vop,
            n => Protocol::Other(n & 0x0F),
        }
    }

    /// The nibble value.
    pub const fn nibble(self) -> u8 {
        match self {
            Protocol::Lnk => 0,
            Protocol::Dbg => 1,
            Protocol::Hm2 => 2,
            Protocol::Xx3 => 3,
            Protocol::Xx4 => 4,
            Protocol::Blk => 5,
            Protocol::Vop => 6,
            Protocol::Other(n) => n & 0x0F,
        }
    }
}

/// A command: protocol plus 12-bit command code, without flags and size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Command {
    /// LNK_PAD: one-way filler, ignored.
    LnkPad,
    /// LNK_PING: keepalive; answered with LNK_PING|REPLY.
    LnkPing,
    /// LNK_AUTH: authentication (unused in plaintext mode).
    LnkAuth,
    /// LNK_CONN: opens the SPAN protocol on a link; kept open for the link's life.
    LnkConn,
    /// LNK_SPAN: advertises a node; kept open while the node is reachable.
    LnkSpan,
    /// LNK_VOLCONF: HAMMER2 volume configuration (command code 0x20).
    LnkVolconf,
    /// LNK_ERROR: simple result of a transaction (the `error` field).
    LnkError,
    /// DBG_SHELL: debug shell text in aux data.
    DbgShell,
    /// BLK_OPEN: open a block device.
    BlkOpen,
    /// BLK_CLOSE: close one open of a BLK_OPEN transaction.
    BlkClose,
    /// BLK_READ: strategy read.
    BlkRead,
    /// BLK_WRITE: strategy write.
    BlkWrite,
    /// BLK_FLUSH: strategy flush.
    BlkFlush,
    /// BLK_FREEBLKS: strategy freeblks.
    BlkFreeblks,
    /// BLK_ERROR: extended result of a BLK transaction.
    BlkError,
    /// A command this implementation has no structure for. It is still framed and relayed.
    Unknown {
        /// Protocol nibble.
        proto: u8,
        /// 12-bit command code.
        code: u16,
    },
}

impl Command {
    /// Every command with a known structure.
    pub const KNOWN: [Command; 15] = [
        Command::LnkPad,
        Command::LnkPing,
        Command::LnkAuth,
        Command::LnkConn,
        Command::LnkSpan,
        Command::LnkVolconf,
        Command::LnkError,
        Command::DbgShell,
        Command::BlkOpen,
        Command::BlkClose,
        Command::BlkRead,
        Command::BlkWrite,
        Command::BlkFlush,
        Command::BlkFreeblks,
        Command::BlkError,
    ];

    /// The command identified by a protocol nibble and code.
    pub const fn from_parts(proto: u8, code: u16) -> Command {
        match (proto, code) {
            (0, 0x000) => Command::LnkPad,
            (0, 0x001) => Command::LnkPing,
            (0, 0x010) => Command::LnkAuth,
            (0, 0x011) => Command::LnkConn,
            (0, 0x012) => Command::LnkSpan,
            (0, 0x020) => Command::LnkVolconf,
            (0, 0xFFF) => Command::LnkError,
            (1, 0x001) => Command::DbgShell,
            (5, 0x001) => Command::BlkOpen,
            (5, 0x002) => Command::BlkClose,
            (5, 0x003) => Command::BlkRead,
            (5, 0x004) => Command::BlkWrite,
            (5, 0x005) => Command::BlkFlush,
            (5, 0x006) => Command::BlkFreeblks,
            (5, 0xFFF) => Command::BlkError,
            (proto, code) => Command::Unknown {
                proto: proto & 0x0F,
                code: code & 0x0FFF,
            },
        }
    }

    /// `(protocol nibble, command code)`.
    pub const fn parts(self) -> (u8, u16) {
        match self {
            Command::LnkPad => (0, 0x000),
            Command::LnkPing => (0, 0x001),
            Command::LnkAuth => (0, 0x010),
            Command::LnkConn => (0, 0x011),
            Command::LnkSpan => (0, 0x012),
            Command::LnkVolconf => (0, 0x020),
            Command::LnkError => (0, 0xFFF),
            Command::DbgShell => (1, 0x001),
            Command::BlkOpen => (5, 0x001),
            Command::BlkClose => (5, 0x002),
            Command::BlkRead => (5, 0x003),
            Command::BlkWrite => (5, 0x004),
            Command::BlkFlush => (5, 0x005),
            Command::BlkFreeblks => (5, 0x006),
            Command::BlkError => (5, 0xFFF),
            Command::Unknown { proto, code } => (proto & 0x0F, code & 0x0FFF),
        }
    }

    /// Size in bytes of the command's structure (base header included), before alignment.
    /// `None` for unknown commands.
    pub const fn struct_len(self) -> Option<usize> {
        Some(match self {
            Command::LnkPad | Command::LnkPing | Command::LnkError | Command::DbgShell => 64,
            Command::LnkAuth => 128,
            Command::LnkConn => 0x148,
            Command::LnkSpan => 0x1B0,
            Command::LnkVolconf => 0x1D8,
            Command::BlkOpen | Command::BlkClose => 72,
            Command::BlkRead | Command::BlkWrite | Command::BlkFlush | Command::BlkFreeblks => 96,
            Command::BlkError => 144,
            Command::Unknown { .. } => return None,
        })
    }

    /// The header size in 64-byte blocks that a sender uses for this command
    /// (`ceil(struct_len / 64)`); 1 for unknown commands.
    pub const fn blocks(self) -> u8 {
        match self.struct_len() {
            Some(len) => len.div_ceil(64) as u8,
            None => 1,
        }
    }

    /// The protocol's name of the command, e.g. `"LNK_CONN"`; `"UNKNOWN"` for unknown ones.
    pub const fn name(self) -> &'static str {
        match self {
            Command::LnkPad => "LNK_PAD",
            Command::LnkPing => "LNK_PING",
            Command::LnkAuth => "LNK_AUTH",
            Command::LnkConn => "LNK_CONN",
            Command::LnkSpan => "LNK_SPAN",
            Command::LnkVolconf => "LNK_VOLCONF",
            Command::LnkError => "LNK_ERROR",
            Command::DbgShell => "DBG_SHELL",
            Command::BlkOpen => "BLK_OPEN",
            Command::BlkClose => "BLK_CLOSE",
            Command::BlkRead => "BLK_READ",
            Command::BlkWrite => "BLK_WRITE",
            Command::BlkFlush => "BLK_FLUSH",
            Command::BlkFreeblks => "BLK_FREEBLKS",
            Command::BlkError => "BLK_ERROR",
            Command::Unknown { .. } => "UNKNOWN",
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Command::Unknown { proto, code } => write!(f, "UNKNOWN({proto:x}:{code:03x})"),
            c => f.write_str(c.name()),
        }
    }
}

/// The full command word: `flags | protocol << 20 | command << 8 | size`.
///
/// ```
/// use dmsg_core::wire::{Cmd, Command, Flags};
/// let c = Cmd::new(Command::LnkConn, Flags::CREATE);
/// assert_eq!(c.0, 0x8000_1106);
/// assert_eq!(c.command(), Command::LnkConn);
/// assert_eq!(c.size_blocks(), 6);
/// assert_eq!(Cmd(0xa80f_ff01).flags(), Flags::CREATE | Flags::REPLY | Flags::REVTRANS);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Cmd(pub u32);

impl Cmd {
    /// The command word for `command` with `flags`, its size field computed from the
    /// command's structure size.
    pub const fn new(command: Command, flags: Flags) -> Cmd {
        let (proto, code) = command.parts();
        Cmd(flags.bits() | ((proto as u32) << 20) | ((code as u32) << 8) | command.blocks() as u32)
    }

    /// Like [`Cmd::new`] with an explicit header size in blocks (for unknown commands or
    /// extended headers larger than the structure).
    pub const fn with_size(command: Command, flags: Flags, blocks: u8) -> Cmd {
        Cmd((Cmd::new(command, flags).0 & !SIZE_MASK) | blocks as u32)
    }

    /// The flag bits.
    pub const fn flags(self) -> Flags {
        Flags::from_bits_truncate(self.0 & FLAGS_MASK)
    }

    /// The protocol nibble.
    pub const fn protocol(self) -> Protocol {
        Protocol::from_nibble(((self.0 & PROTO_MASK) >> 20) as u8)
    }

    /// The 12-bit command code.
    pub const fn code(self) -> u16 {
        ((self.0 & CMDS_MASK) >> 8) as u16
    }

    /// The command (protocol and code).
    pub const fn command(self) -> Command {
        Command::from_parts(((self.0 & PROTO_MASK) >> 20) as u8, self.code())
    }

    /// The header size field in 64-byte blocks.
    pub const fn size_blocks(self) -> u8 {
        (self.0 & SIZE_MASK) as u8
    }

    /// Header length in bytes (`size_blocks * 64`).
    pub const fn header_len(self) -> usize {
        self.size_blocks() as usize * 64
    }

    /// The same word with `flags` replacing the flag bits.
    pub const fn with_flags(self, flags: Flags) -> Cmd {
        Cmd((self.0 & !FLAGS_MASK) | flags.bits())
    }

    /// True for a one-way message (none of CREATE, DELETE, ABORT): not tracked as a transaction.
    pub const fn is_one_way(self) -> bool {
        self.0 & (Flags::CREATE.bits() | Flags::DELETE.bits() | Flags::ABORT.bits()) == 0
    }
}

impl fmt::Display for Cmd {
    /// `LNK_SPAN|CREATE|REPLY`, the form DragonFly's tools print.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.command())?;
        for name in self.flags().names() {
            write!(f, "|{name}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_commands_round_trip_through_the_word() {
        for c in Command::KNOWN {
            let w = Cmd::new(c, Flags::CREATE | Flags::DELETE);
            assert_eq!(w.command(), c);
            assert_eq!(w.flags(), Flags::CREATE | Flags::DELETE);
            assert_eq!(w.size_blocks(), c.blocks());
        }
    }

    #[test]
    fn command_words_match_dragonfly() {
        let cases = [
            (Command::LnkPad, 0x0000_0001),
            (Command::LnkPing, 0x0000_0101),
            (Command::LnkAuth, 0x0000_1002),
            (Command::LnkConn, 0x0000_1106),
            (Command::LnkSpan, 0x0000_1207),
            (Command::LnkVolconf, 0x0000_2008),
            (Command::LnkError, 0x000F_FF01),
            (Command::DbgShell, 0x0010_0101),
            (Command::BlkOpen, 0x0050_0102),
            (Command::BlkClose, 0x0050_0202),
            (Command::BlkRead, 0x0050_0302),
            (Command::BlkWrite, 0x0050_0402),
            (Command::BlkFlush, 0x0050_0502),
            (Command::BlkFreeblks, 0x0050_0602),
            (Command::BlkError, 0x005F_FF03),
        ];
        for (c, w) in cases {
            assert_eq!(Cmd::new(c, Flags::empty()).0, w, "{c}");
        }
    }

    #[test]
    fn unknown_commands_keep_their_bits() {
        let w = Cmd(0x0073_4503);
        assert_eq!(
            w.command(),
            Command::Unknown {
                proto: 7,
                code: 0x345
            }
        );
        assert_eq!(Cmd::with_size(w.command(), w.flags(), 3), w);
    }

    #[test]
    fn one_way_detection() {
        assert!(Cmd::new(Command::DbgShell, Flags::REPLY).is_one_way());
        assert!(!Cmd::new(Command::LnkSpan, Flags::ABORT).is_one_way());
    }
}
