//! CRC-32C with the CPU's instruction, for the core's [`Crc32c`] trait.
//!
//! The core's default is a 16-table software CRC (`no_std`, no unsafe). On a host the CRC
//! instruction (x86-64 SSE 4.2, ARMv8 CRC) is several times faster; the [`crc32c`] crate
//! detects it at run time and falls back to software where it is missing.
//!
//! ```
//! use dmsg_core::crc::{Crc32c, SoftCrc32c16};
//! use dmsg_std::crc::HwCrc32c;
//! assert_eq!(HwCrc32c.checksum(b"123456789"), 0xE306_9283);
//! assert_eq!(HwCrc32c.checksum_parts(&[b"1234", b"56789"]), SoftCrc32c16.checksum(b"123456789"));
//! ```

use dmsg_core::crc::Crc32c;

/// CRC-32C computed with the CPU's CRC instruction when it has one (checked once, at run
/// time), else in software.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct HwCrc32c;

impl Crc32c for HwCrc32c {
    fn checksum_parts(&self, parts: &[&[u8]]) -> u32 {
        parts
            .iter()
            .fold(0, |crc, part| crc32c::crc32c_append(crc, part))
    }

    fn checksum(&self, data: &[u8]) -> u32 {
        crc32c::crc32c(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dmsg_core::crc::SoftCrc32c16;

    #[test]
    fn matches_the_software_crc_on_every_split() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 + 3) as u8).collect();
        for len in [0, 1, 7, 8, 63, 64, 65, 999, 1000] {
            let want = SoftCrc32c16.checksum(&data[..len]);
            assert_eq!(HwCrc32c.checksum(&data[..len]), want, "len {len}");
            for cut in [0, len / 3, len / 2, len] {
                let (a, b) = data[..len].split_at(cut);
                assert_eq!(
                    HwCrc32c.checksum_parts(&[a, b]),
                    want,
                    "len {len} cut {cut}"
                );
            }
        }
    }
}
