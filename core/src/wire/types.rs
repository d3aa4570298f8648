//! Newtypes for the identifiers that travel in headers.

use core::fmt;

use super::{WireError, LABEL_SIZE};

/// A transaction id (the `msgid` header field). Unique per direction of a link among open
/// transactions; `0` for one-way messages by convention.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct MsgId(pub u64);

/// A circuit id (the `circuit` header field): the msgid of the open transaction (usually a
/// LNK_SPAN) a message is routed over, or `0` for the directly connected peer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Circuit(pub u64);

impl fmt::Display for MsgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Display for Circuit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// A UUID as 16 opaque bytes in wire order. Never byte-swapped: peers differ in how they store
/// the first three fields, so we carry exactly what was sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Uuid(pub [u8; 16]);

impl Uuid {
    /// The nil UUID (all zero).
    pub const NIL: Uuid = Uuid([0; 16]);

    /// True for the nil UUID.
    pub fn is_nil(&self) -> bool {
        self.0 == [0; 16]
    }
}

impl fmt::Display for Uuid {
    /// `8-4-4-4-12` hex groups of the bytes in wire order.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// A 128-byte, NUL-terminated label field (peer_label, pfs_label).
///
/// Holds at most 127 bytes of text. Bytes received after the first NUL are ignored, and a
/// received label with no NUL is cut at 127 bytes, as DragonFly does.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Label {
    bytes: [u8; LABEL_SIZE],
}

impl Default for Label {
    fn default() -> Self {
        Label {
            bytes: [0; LABEL_SIZE],
        }
    }
}

impl Label {
    /// An empty label.
    pub const EMPTY: Label = Label {
        bytes: [0; LABEL_SIZE],
    };

    /// A label from text of at most 127 bytes with no NUL.
    ///
    /// ```
    /// use dmsg_core::wire::Label;
    /// let l = Label::new("leaf-07").unwrap();
    /// assert_eq!(l.as_bytes(), b"leaf-07");
    /// assert!(Label::new(&"x".repeat(128)).is_err());
    /// ```
    pub fn new(text: &str) -> Result<Label, WireError> {
        Label::from_bytes(text.as_bytes())
    }

    /// A label from bytes of at most 127 bytes with no NUL.
    pub fn from_bytes(text: &[u8]) -> Result<Label, WireError> {
        if text.len() >= LABEL_SIZE || text.contains(&0) {
            return Err(WireError::BadLabel);
        }
        let mut bytes = [0u8; LABEL_SIZE];
        bytes[..text.len()].copy_from_slice(text);
        Ok(Label { bytes })
    }

    /// A label from a received 128-byte field: text up to the first NUL, at most 127 bytes.
    pub fn from_wire(field: &[u8; LABEL_SIZE]) -> Label {
        let len = field
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(LABEL_SIZE - 1)
            .min(LABEL_SIZE - 1);
        let mut bytes = [0u8; LABEL_SIZE];
        bytes[..len].copy_from_slice(&field[..len]);
        Label { bytes }
    }

    /// The 128-byte field as sent (text, then zero fill).
    pub fn to_wire(&self) -> [u8; LABEL_SIZE] {
        self.bytes
    }

    /// The label's bytes (without the NUL).
    pub fn as_bytes(&self) -> &[u8] {
        let len = self.bytes.iter().position(|&b| b == 0).unwrap_or(0);
        &self.bytes[..len]
    }

    /// The label as UTF-8, or `None` if a peer sent other bytes.
    pub fn as_str(&self) -> Option<&str> {
        core::str::from_utf8(self.as_bytes()).ok()
    }

    /// True when the label is empty.
    pub fn is_empty(&self) -> bool {
        self.bytes[0] == 0
    }
}

impl fmt::Debug for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Label({self})")
    }
}

impl fmt::Display for Label {
    /// The text, with `"` and `\\` escaped and bytes that are not printable ASCII shown as
    /// `\xNN`, so it can be printed inside quotes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for &b in self.as_bytes() {
            if b == b'"' || b == b'\\' {
                write!(f, "\\{}", b as char)?;
            } else if b.is_ascii_graphic() || b == b' ' {
                write!(f, "{}", b as char)?;
            } else {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

#[cfg(feature = "defmt")]
impl defmt::Format for Label {
    fn format(&self, f: defmt::Formatter) {
        defmt::write!(f, "{=[u8]:a}", self.as_bytes())
    }
}

#[cfg(feature = "arbitrary")]
impl<'a> arbitrary::Arbitrary<'a> for Label {
    fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
        let len = u.int_in_range(0..=LABEL_SIZE - 1)?;
        let mut bytes = [0u8; LABEL_SIZE];
        for b in bytes.iter_mut().take(len) {
            *b = u.int_in_range(1..=255)?;
        }
        Ok(Label { bytes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_from_wire_stops_at_nul_and_caps_at_127() {
        let mut f = [b'a'; LABEL_SIZE];
        assert_eq!(Label::from_wire(&f).as_bytes().len(), 127);
        f[3] = 0;
        assert_eq!(Label::from_wire(&f).as_bytes(), b"aaa");
    }

    #[test]
    fn label_rejects_nul_and_overlong() {
        assert_eq!(Label::new("a\0b"), Err(WireError::BadLabel));
        assert!(Label::new(&"y".repeat(127)).is_ok());
    }

    #[test]
    fn uuid_displays_in_wire_order() {
        let u = Uuid([
            0x11, 0x11, 0x11, 0x11, 0x22, 0x22, 0x33, 0x33, 0x44, 0x44, 0x55, 0x55, 0x55, 0x55,
            0x55, 0x55,
        ]);
        assert_eq!(std::format!("{u}"), "11111111-2222-3333-4444-555555555555");
    }
}
