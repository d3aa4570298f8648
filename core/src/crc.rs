//! CRC-32C (Castagnoli), the checksum of both DMSG CRC fields.
//!
//! The codec takes any [`Crc32c`] implementation, so a host can plug in a hardware
//! instruction and a small MCU can pick a table size that fits its flash:
//!
//! | type | flash for tables | speed (relative) |
//! |---|---|---|
//! | [`SoftCrc32c16`] | 16 KiB | fastest software |
//! | [`SoftCrc32c1`] | 1 KiB | about 1/6 |
//! | [`SoftCrc32cNoTable`] | none | about 1/20 |
//!
//! Only the variant that is used is linked in.
//!
//! ```
//! use dmsg_core::crc::{Crc32c, SoftCrc32c16, SoftCrc32cNoTable};
//! assert_eq!(SoftCrc32c16.checksum(b"123456789"), 0xE306_9283);
//! // Checksums over a sequence of slices equal the checksum of their concatenation.
//! assert_eq!(SoftCrc32cNoTable.checksum_parts(&[b"1234", b"56789"]), 0xE306_9283);
//! ```

use crc::{Crc, NoTable, Table, CRC_32_ISCSI};

/// A CRC-32C implementation (reflected polynomial 0x82F63B78, initial value and final XOR all
/// ones; check value 0xE3069283 over ASCII `123456789`).
pub trait Crc32c {
    /// CRC-32C over the concatenation of `parts`.
    fn checksum_parts(&self, parts: &[&[u8]]) -> u32;

    /// CRC-32C over `data`.
    fn checksum(&self, data: &[u8]) -> u32 {
        self.checksum_parts(&[data])
    }
}

impl<C: Crc32c + ?Sized> Crc32c for &C {
    fn checksum_parts(&self, parts: &[&[u8]]) -> u32 {
        (**self).checksum_parts(parts)
    }
}

static CRC16: Crc<u32, Table<16>> = Crc::<u32, Table<16>>::new(&CRC_32_ISCSI);
static CRC1: Crc<u32, Table<1>> = Crc::<u32, Table<1>>::new(&CRC_32_ISCSI);
static CRC0: Crc<u32, NoTable> = Crc::<u32, NoTable>::new(&CRC_32_ISCSI);

macro_rules! soft_crc {
    ($name:ident, $table:ident, $doc:literal) => {
        #[doc = $doc]
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
        pub struct $name;

        impl Crc32c for $name {
            fn checksum_parts(&self, parts: &[&[u8]]) -> u32 {
                let mut digest = $table.digest();
                for part in parts {
                    digest.update(part);
                }
                digest.finalize()
            }
        }
    };
}

soft_crc!(
    SoftCrc32c16,
    CRC16,
    "Software CRC-32C with 16 lookup tables (16 KiB of flash): the host default."
);
soft_crc!(
    SoftCrc32c1,
    CRC1,
    "Software CRC-32C with one lookup table (1 KiB of flash): a good MCU default."
);
soft_crc!(
    SoftCrc32cNoTable,
    CRC0,
    "Bitwise software CRC-32C with no table: the smallest and slowest."
);

/// The implementation used when none is named: [`SoftCrc32c16`].
pub type DefaultCrc = SoftCrc32c16;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_value_matches_for_every_variant() {
        for crc in [
            &SoftCrc32c16 as &dyn Crc32c,
            &SoftCrc32c1 as &dyn Crc32c,
            &SoftCrc32cNoTable as &dyn Crc32c,
        ] {
            assert_eq!(crc.checksum(b"123456789"), 0xE306_9283);
            assert_eq!(crc.checksum_parts(&[b"12", b"", b"3456789"]), 0xE306_9283);
        }
    }

    #[test]
    fn empty_input_is_zero() {
        assert_eq!(SoftCrc32c16.checksum(&[]), 0);
    }
}
