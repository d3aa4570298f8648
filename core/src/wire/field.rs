//! Byte-order aware field access on slices whose length the caller has already checked.

use super::ByteOrder;

#[cfg_attr(target_os = "none", inline(never))]
pub(crate) fn u16_at(buf: &[u8], off: usize, order: ByteOrder) -> u16 {
    let b = [buf[off], buf[off + 1]];
    match order {
        ByteOrder::Little => u16::from_le_bytes(b),
        ByteOrder::Big => u16::from_be_bytes(b),
    }
}

#[cfg_attr(target_os = "none", inline(never))]
pub(crate) fn u32_at(buf: &[u8], off: usize, order: ByteOrder) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&buf[off..off + 4]);
    match order {
        ByteOrder::Little => u32::from_le_bytes(b),
        ByteOrder::Big => u32::from_be_bytes(b),
    }
}

#[cfg_attr(target_os = "none", inline(never))]
pub(crate) fn u64_at(buf: &[u8], off: usize, order: ByteOrder) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&buf[off..off + 8]);
    match order {
        ByteOrder::Little => u64::from_le_bytes(b),
        ByteOrder::Big => u64::from_be_bytes(b),
    }
}

#[cfg_attr(target_os = "none", inline(never))]
pub(crate) fn put_u16(buf: &mut [u8], off: usize, v: u16, order: ByteOrder) {
    let b = match order {
        ByteOrder::Little => v.to_le_bytes(),
        ByteOrder::Big => v.to_be_bytes(),
    };
    buf[off..off + 2].copy_from_slice(&b);
}

#[cfg_attr(target_os = "none", inline(never))]
pub(crate) fn put_u32(buf: &mut [u8], off: usize, v: u32, order: ByteOrder) {
    let b = match order {
        ByteOrder::Little => v.to_le_bytes(),
        ByteOrder::Big => v.to_be_bytes(),
    };
    buf[off..off + 4].copy_from_slice(&b);
}

#[cfg_attr(target_os = "none", inline(never))]
pub(crate) fn put_u64(buf: &mut [u8], off: usize, v: u64, order: ByteOrder) {
    let b = match order {
        ByteOrder::Little => v.to_le_bytes(),
        ByteOrder::Big => v.to_be_bytes(),
    };
    buf[off..off + 8].copy_from_slice(&b);
}

pub(crate) fn bytes_at<const N: usize>(buf: &[u8], off: usize) -> [u8; N] {
    let mut b = [0u8; N];
    b.copy_from_slice(&buf[off..off + N]);
    b
}
