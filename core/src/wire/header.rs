//! The 64-byte base header.

use core::fmt;

use super::field::{put_u16, put_u32, put_u64, u16_at, u32_at, u64_at};
use super::{ByteOrder, Circuit, Cmd, MsgId, WireError, HDR_MAX_BLOCKS, HEADER_LEN, MAGIC};

/// Field offsets of the base header.
pub(crate) mod field {
    pub const MAGIC: usize = 0x00;
    pub const RESERVED02: usize = 0x02;
    pub const SALT: usize = 0x04;
    pub const MSGID: usize = 0x08;
    pub const CIRCUIT: usize = 0x10;
    pub const LINK_VERIFIER: usize = 0x18;
    pub const CMD: usize = 0x20;
    pub const AUX_CRC: usize = 0x24;
    pub const AUX_BYTES: usize = 0x28;
    pub const ERROR: usize = 0x2C;
    pub const AUX_DESCR: usize = 0x30;
    pub const RESERVED38: usize = 0x38;
    pub const HDR_CRC: usize = 0x3C;
}

/// A read-only (or, for `T: AsMut<[u8]>`, writable) view of a base header.
///
/// ```
/// use dmsg_core::wire::{Header, Command};
/// let mut bytes = [0u8; 64];
/// bytes[0..2].copy_from_slice(&0x4832u16.to_le_bytes());
/// bytes[0x20..0x24].copy_from_slice(&0x0000_0101u32.to_le_bytes());
/// let h = Header::new_checked(&bytes[..]).unwrap();
/// assert_eq!(h.cmd().command(), Command::LnkPing);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Header<T: AsRef<[u8]>> {
    buffer: T,
    order: ByteOrder,
}

impl<T: AsRef<[u8]>> Header<T> {
    /// A view that checks the length and the magic number (which fixes the byte order).
    /// Every accessor is then panic-free. The size field is not checked here (see
    /// [`Header::check_size`]).
    pub fn new_checked(buffer: T) -> Result<Header<T>, WireError> {
        let bytes = buffer.as_ref();
        if bytes.len() < HEADER_LEN {
            return Err(WireError::Truncated {
                needed: HEADER_LEN,
                available: bytes.len(),
            });
        }
        let magic = u16::from_le_bytes([bytes[0], bytes[1]]);
        let order = ByteOrder::from_magic(magic).ok_or(WireError::BadMagic(magic))?;
        Ok(Header { buffer, order })
    }

    /// A view for writing a new header in `order`. Panics later if the buffer is shorter
    /// than 64 bytes; use [`Header::new_checked`] for received bytes.
    pub fn new_unchecked(buffer: T, order: ByteOrder) -> Header<T> {
        Header { buffer, order }
    }

    /// The byte order this frame was written in.
    pub fn byte_order(&self) -> ByteOrder {
        self.order
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The underlying bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// Checks that the size field is within `1..=HDR_MAX_BLOCKS`.
    pub fn check_size(&self) -> Result<(), WireError> {
        let blocks = self.cmd().size_blocks();
        if blocks == 0 || blocks > HDR_MAX_BLOCKS {
            return Err(WireError::BadHeaderSize(blocks));
        }
        Ok(())
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// `magic` as the sender wrote it, in the frame's byte order (always 0x4832 once decoded).
    pub fn magic(&self) -> u16 {
        u16_at(self.b(), field::MAGIC, self.order)
    }
    /// `reserved02`.
    pub fn reserved02(&self) -> u16 {
        u16_at(self.b(), field::RESERVED02, self.order)
    }
    /// `salt`: random high 24 bits, frame counter in the low byte.
    pub fn salt(&self) -> u32 {
        u32_at(self.b(), field::SALT, self.order)
    }
    /// `msgid`.
    pub fn msgid(&self) -> MsgId {
        MsgId(u64_at(self.b(), field::MSGID, self.order))
    }
    /// `circuit`.
    pub fn circuit(&self) -> Circuit {
        Circuit(u64_at(self.b(), field::CIRCUIT, self.order))
    }
    /// `link_verifier` (offset 0x18).
    pub fn link_verifier(&self) -> u64 {
        u64_at(self.b(), field::LINK_VERIFIER, self.order)
    }
    /// The command word.
    pub fn cmd(&self) -> Cmd {
        Cmd(u32_at(self.b(), field::CMD, self.order))
    }
    /// `aux_crc`.
    pub fn aux_crc(&self) -> u32 {
        u32_at(self.b(), field::AUX_CRC, self.order)
    }
    /// `aux_bytes`: unaligned length of the aux data.
    pub fn aux_bytes(&self) -> u32 {
        u32_at(self.b(), field::AUX_BYTES, self.order)
    }
    /// `error`.
    pub fn error(&self) -> u32 {
        u32_at(self.b(), field::ERROR, self.order)
    }
    /// `aux_descr`.
    pub fn aux_descr(&self) -> u64 {
        u64_at(self.b(), field::AUX_DESCR, self.order)
    }
    /// `reserved38`.
    pub fn reserved38(&self) -> u32 {
        u32_at(self.b(), field::RESERVED38, self.order)
    }
    /// `hdr_crc`.
    pub fn hdr_crc(&self) -> u32 {
        u32_at(self.b(), field::HDR_CRC, self.order)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Header<T> {
    fn m(&mut self) -> &mut [u8] {
        self.buffer.as_mut()
    }
    /// Writes the magic for this view's byte order.
    pub fn set_magic(&mut self) {
        let o = self.order;
        put_u16(self.m(), field::MAGIC, MAGIC, o);
    }
    /// Sets `reserved02`.
    pub fn set_reserved02(&mut self, v: u16) {
        let o = self.order;
        put_u16(self.m(), field::RESERVED02, v, o);
    }
    /// Sets `salt`.
    pub fn set_salt(&mut self, v: u32) {
        let o = self.order;
        put_u32(self.m(), field::SALT, v, o);
    }
    /// Sets `msgid`.
    pub fn set_msgid(&mut self, v: MsgId) {
        let o = self.order;
        put_u64(self.m(), field::MSGID, v.0, o);
    }
    /// Sets `circuit`.
    pub fn set_circuit(&mut self, v: Circuit) {
        let o = self.order;
        put_u64(self.m(), field::CIRCUIT, v.0, o);
    }
    /// Sets `link_verifier`.
    pub fn set_link_verifier(&mut self, v: u64) {
        let o = self.order;
        put_u64(self.m(), field::LINK_VERIFIER, v, o);
    }
    /// Sets the command word.
    pub fn set_cmd(&mut self, v: Cmd) {
        let o = self.order;
        put_u32(self.m(), field::CMD, v.0, o);
    }
    /// Sets `aux_crc`.
    pub fn set_aux_crc(&mut self, v: u32) {
        let o = self.order;
        put_u32(self.m(), field::AUX_CRC, v, o);
    }
    /// Sets `aux_bytes`.
    pub fn set_aux_bytes(&mut self, v: u32) {
        let o = self.order;
        put_u32(self.m(), field::AUX_BYTES, v, o);
    }
    /// Sets `error`.
    pub fn set_error(&mut self, v: u32) {
        let o = self.order;
        put_u32(self.m(), field::ERROR, v, o);
    }
    /// Sets `aux_descr`.
    pub fn set_aux_descr(&mut self, v: u64) {
        let o = self.order;
        put_u64(self.m(), field::AUX_DESCR, v, o);
    }
    /// Sets `reserved38`.
    pub fn set_reserved38(&mut self, v: u32) {
        let o = self.order;
        put_u32(self.m(), field::RESERVED38, v, o);
    }
    /// Sets `hdr_crc`.
    pub fn set_hdr_crc(&mut self, v: u32) {
        let o = self.order;
        put_u32(self.m(), field::HDR_CRC, v, o);
    }
}

/// The base header as plain values.
///
/// `hdr_crc` and `aux_crc` are carried as parsed; the encoder computes them when it writes a
/// frame, so a repr built for sending can leave them zero.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct HeaderRepr {
    /// `reserved02` (zero when we send).
    pub reserved02: u16,
    /// `salt` (the encoder assigns it when sending).
    pub salt: u32,
    /// Transaction id.
    pub msgid: MsgId,
    /// Circuit id.
    pub circuit: Circuit,
    /// `link_verifier`.
    pub link_verifier: u64,
    /// Command word (flags, protocol, command, size).
    pub cmd: Cmd,
    /// CRC-32C of the aligned aux data.
    pub aux_crc: u32,
    /// Unaligned aux length in bytes.
    pub aux_bytes: u32,
    /// Error code (0 = success).
    pub error: u32,
    /// `aux_descr` (out-of-band aux descriptor; zero for in-band data).
    pub aux_descr: u64,
    /// `reserved38`.
    pub reserved38: u32,
    /// CRC-32C of the extended header with this field zeroed.
    pub hdr_crc: u32,
}

impl HeaderRepr {
    /// A header for `cmd` on `msgid`, every other field zero.
    pub fn new(cmd: Cmd, msgid: MsgId) -> HeaderRepr {
        HeaderRepr {
            cmd,
            msgid,
            ..HeaderRepr::default()
        }
    }

    /// Parses a checked view. Never fails: every bit pattern of a base header is representable.
    pub fn parse<T: AsRef<[u8]>>(h: &Header<T>) -> HeaderRepr {
        HeaderRepr {
            reserved02: h.reserved02(),
            salt: h.salt(),
            msgid: h.msgid(),
            circuit: h.circuit(),
            link_verifier: h.link_verifier(),
            cmd: h.cmd(),
            aux_crc: h.aux_crc(),
            aux_bytes: h.aux_bytes(),
            error: h.error(),
            aux_descr: h.aux_descr(),
            reserved38: h.reserved38(),
            hdr_crc: h.hdr_crc(),
        }
    }

    /// Writes every field, including the magic, into `h`.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, h: &mut Header<T>) {
        h.set_magic();
        h.set_reserved02(self.reserved02);
        h.set_salt(self.salt);
        h.set_msgid(self.msgid);
        h.set_circuit(self.circuit);
        h.set_link_verifier(self.link_verifier);
        h.set_cmd(self.cmd);
        h.set_aux_crc(self.aux_crc);
        h.set_aux_bytes(self.aux_bytes);
        h.set_error(self.error);
        h.set_aux_descr(self.aux_descr);
        h.set_reserved38(self.reserved38);
        h.set_hdr_crc(self.hdr_crc);
    }

    /// Header length in bytes from the size field.
    pub fn header_len(&self) -> usize {
        self.cmd.header_len()
    }
}

impl fmt::Display for HeaderRepr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} msgid={} circuit={} error={:#x} aux={}",
            self.cmd, self.msgid, self.circuit, self.error, self.aux_bytes
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Command, Flags};

    #[test]
    fn repr_round_trips_in_both_byte_orders() {
        let r = HeaderRepr {
            reserved02: 1,
            salt: 0x1234_5603,
            msgid: MsgId(0x0102_0304_0506_0708),
            circuit: Circuit(9),
            link_verifier: 10,
            cmd: Cmd::new(Command::LnkSpan, Flags::CREATE),
            aux_crc: 11,
            aux_bytes: 12,
            error: 13,
            aux_descr: 14,
            reserved38: 15,
            hdr_crc: 16,
        };
        for order in [ByteOrder::Little, ByteOrder::Big] {
            let mut buf = [0u8; 64];
            r.emit(&mut Header::new_unchecked(&mut buf[..], order));
            let h = Header::new_checked(&buf[..]).unwrap();
            assert_eq!(h.byte_order(), order);
            assert_eq!(HeaderRepr::parse(&h), r);
        }
    }

    #[test]
    fn checked_view_rejects_short_and_bad_magic() {
        assert!(matches!(
            Header::new_checked(&[0u8; 63][..]),
            Err(WireError::Truncated { .. })
        ));
        assert_eq!(
            Header::new_checked(&[0u8; 64][..]),
            Err(WireError::BadMagic(0))
        );
    }

    #[test]
    fn size_field_is_checked() {
        let mut buf = [0u8; 64];
        let mut h = Header::new_unchecked(&mut buf[..], ByteOrder::Little);
        h.set_magic();
        h.set_cmd(Cmd(0x0000_0100));
        assert_eq!(h.check_size(), Err(WireError::BadHeaderSize(0)));
        h.set_cmd(Cmd(0x0000_0121));
        assert_eq!(h.check_size(), Err(WireError::BadHeaderSize(33)));
        h.set_cmd(Cmd(0x0000_0120));
        assert_eq!(h.check_size(), Ok(()));
    }
}
