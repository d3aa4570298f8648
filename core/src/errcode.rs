//! The protocol's own numeric error codes, so logs and the wire say the same thing.

use core::fmt;

/// Receive-path (I/O queue) error codes of DragonFly's implementation. The decoder's and the
/// link's errors map onto these with `code()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u32)]
#[non_exhaustive]
pub enum RecvErrorCode {
    /// Bad magic: the stream lost synchronisation.
    Sync = 1,
    /// End of stream.
    Eof = 2,
    /// Socket error.
    Sock = 3,
    /// A header field is out of range (header size, aux size).
    Field = 4,
    /// Base header CRC (unused by the newest revision, which checks the whole extended header).
    Hcrc = 5,
    /// Extended header CRC mismatch.
    Xcrc = 6,
    /// Aux data CRC mismatch.
    Acrc = 7,
    /// Protocol state violation.
    State = 8,
    /// No peer key.
    NoPeer = 9,
    /// The salt frame counter skipped.
    MsgSeq = 15,
    /// Frame for a transaction already closed in that direction.
    EAlready = 16,
    /// Transaction state error (e.g. a frame for an unknown transaction).
    Trans = 17,
    /// Bad circuit.
    BadCircuit = 22,
}

impl RecvErrorCode {
    /// The protocol's name, e.g. `"XCRC"`.
    pub const fn name(self) -> &'static str {
        match self {
            RecvErrorCode::Sync => "SYNC",
            RecvErrorCode::Eof => "EOF",
            RecvErrorCode::Sock => "SOCK",
            RecvErrorCode::Field => "FIELD",
            RecvErrorCode::Hcrc => "HCRC",
            RecvErrorCode::Xcrc => "XCRC",
            RecvErrorCode::Acrc => "ACRC",
            RecvErrorCode::State => "STATE",
            RecvErrorCode::NoPeer => "NOPEER",
            RecvErrorCode::Trans => "TRANS",
            RecvErrorCode::MsgSeq => "MSGSEQ",
            RecvErrorCode::EAlready => "EALREADY",
            RecvErrorCode::BadCircuit => "BAD_CIRCUIT",
        }
    }

    /// The numeric code.
    pub const fn value(self) -> u32 {
        self as u32
    }
}

impl fmt::Display for RecvErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.value())
    }
}

/// Transaction result codes carried in the `error` header field.
pub mod txn {
    /// Success.
    pub const OK: u32 = 0;
    /// The command is not supported.
    pub const NOSUPP: u32 = 0x20;
    /// The link carrying the transaction was lost.
    pub const LOSTLINK: u32 = 0x21;
    /// Generic I/O error.
    pub const IO: u32 = 0x22;
    /// Bad parameter (also: no capacity for the transaction).
    pub const PARAM: u32 = 0x23;
    /// The circuit could not be used (typically a lost span).
    pub const CANTCIRC: u32 = 0x24;

    /// The protocol's name for a transaction error code, if it has one.
    pub const fn name(code: u32) -> Option<&'static str> {
        match code {
            OK => Some("OK"),
            NOSUPP => Some("NOSUPP"),
            LOSTLINK => Some("LOSTLINK"),
            IO => Some("IO"),
            PARAM => Some("PARAM"),
            CANTCIRC => Some("CANTCIRC"),
            _ => None,
        }
    }
}
