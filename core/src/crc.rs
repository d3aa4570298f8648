//! CRC-32C (Castagnoli), the checksum of both DMSG CRC fields.
//!
//! The codec takes any [`Crc32c`] implementation, so a host can plug in a hardware
//! instruction and a small MCU can pick a table size that fits its flash:
//!
//! | type | flash for tables | speed (relative) |
//! |---|---|---|
//! | [`SoftCrc32c16`] | 16 KiB | fastest software |
//! | [`SoftCrc32c1`] | 1 KiB | about 1/6 |
//! | [`SoftCrc32cNibble`] | 64 bytes | about 1/12 |
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

/// The reflected CRC-32C polynomial.
const POLY_REFLECTED: u32 = 0x82F6_3B78;

/// CRC of each 4-bit value (the half-byte table of [`SoftCrc32cNibble`]).
const NIBBLE_TABLE: [u32; 16] = {
    let mut table = [0u32; 16];
    let mut i = 0;
    while i < 16 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 4 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ POLY_REFLECTED
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

/// Software CRC-32C with one 16-entry table (64 bytes of flash), two lookups per byte: for
/// a microcontroller whose flash budget is tight (about 1 KiB smaller than [`SoftCrc32c1`],
/// half its speed, several times faster than [`SoftCrc32cNoTable`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SoftCrc32cNibble;

impl Crc32c for SoftCrc32cNibble {
    fn checksum_parts(&self, parts: &[&[u8]]) -> u32 {
        let mut crc = !0u32;
        for part in parts {
            for &byte in *part {
                crc ^= u32::from(byte);
                crc = (crc >> 4) ^ NIBBLE_TABLE[(crc & 0xF) as usize];
                crc = (crc >> 4) ^ NIBBLE_TABLE[(crc & 0xF) as usize];
            }
        }
        !crc
    }
}

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
            &SoftCrc32cNibble as &dyn Crc32c,
            &SoftCrc32cNoTable as &dyn Crc32c,
        ] {
            assert_eq!(crc.checksum(b"123456789"), 0xE306_9283);
            assert_eq!(crc.checksum_parts(&[b"12", b"", b"3456789"]), 0xE306_9283);
        }
    }

    #[test]
    fn nibble_variant_equals_the_table_variant_on_every_length_and_split() {
        let data: [u8; 300] = core::array::from_fn(|i| (i as u8).wrapping_mul(167) ^ 0x5A);
        for len in 0..data.len() {
            let d = &data[..len];
            let split = len / 3;
            assert_eq!(SoftCrc32cNibble.checksum(d), SoftCrc32c16.checksum(d));
            assert_eq!(
                SoftCrc32cNibble.checksum_parts(&[&d[..split], &d[split..]]),
                SoftCrc32c16.checksum(d)
            );
        }
    }

    #[test]
    fn empty_input_is_zero() {
        assert_eq!(SoftCrc32c16.checksum(&[]), 0);
    }
}
