//! The reorder buffer: received frames that arrived ahead of a gap.
//!
//! Up to `R` frames in `RB` bytes (extended header plus unpadded aux of each). Entries and
//! their bytes are kept in arrival order; removing one moves the later bytes down, so the
//! cost of a removal is bounded by `RB` and the storage never fragments. Over a TCP transport
//! frames never arrive ahead of a gap (see `spec/SESSION.md`), so `R = 0` is a valid choice.

use core::fmt;

use crate::wire::ByteOrder;

use super::seq::Seq;

/// One held frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Held {
    pub seq: Seq,
    pub off: u32,
    pub ext_len: u32,
    pub aux_len: u32,
    pub order: ByteOrder,
    /// The peer's FIN (no bytes).
    pub fin: bool,
}

impl Held {
    const EMPTY: Held = Held {
        seq: Seq::ONE,
        off: 0,
        ext_len: 0,
        aux_len: 0,
        order: ByteOrder::Little,
        fin: false,
    };
}

/// The reorder storage. Plain data: `Clone`, `Eq`, `Hash`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) struct Reorder<const R: usize, const RB: usize> {
    bytes: [u8; RB],
    entries: [Held; R],
    count: usize,
    used: usize,
}

impl<const R: usize, const RB: usize> fmt::Debug for Reorder<R, RB> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.entries[..self.count]).finish()
    }
}

impl<const R: usize, const RB: usize> Reorder<R, RB> {
    pub(crate) const fn new() -> Self {
        Reorder {
            bytes: [0; RB],
            entries: [Held::EMPTY; R],
            count: 0,
            used: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.count
    }

    pub(crate) fn find(&self, seq: Seq) -> Option<usize> {
        self.entries[..self.count].iter().position(|h| h.seq == seq)
    }

    /// Stores a frame; false (and nothing stored) when there is no slot or no room.
    pub(crate) fn insert(
        &mut self,
        seq: Seq,
        ext: &[u8],
        aux: &[u8],
        order: ByteOrder,
        fin: bool,
    ) -> bool {
        let len = ext.len() + aux.len();
        if self.count >= R || len > RB - self.used {
            return false;
        }
        let off = self.used;
        self.bytes[off..off + ext.len()].copy_from_slice(ext);
        self.bytes[off + ext.len()..off + len].copy_from_slice(aux);
        self.used += len;
        self.entries[self.count] = Held {
            seq,
            off: off as u32,
            ext_len: ext.len() as u32,
            aux_len: aux.len() as u32,
            order,
            fin,
        };
        self.count += 1;
        true
    }

    /// The entry at `idx` and its extended header and aux bytes.
    pub(crate) fn get(&self, idx: usize) -> (Held, &[u8], &[u8]) {
        let h = self.entries[idx];
        let ext_end = (h.off + h.ext_len) as usize;
        let aux_end = ext_end + h.aux_len as usize;
        (
            h,
            &self.bytes[h.off as usize..ext_end],
            &self.bytes[ext_end..aux_end],
        )
    }

    /// Removes the entry at `idx`, moving later bytes down.
    pub(crate) fn remove(&mut self, idx: usize) {
        debug_assert!(idx < self.count);
        let h = self.entries[idx];
        let start = h.off as usize;
        let len = (h.ext_len + h.aux_len) as usize;
        self.bytes.copy_within(start + len..self.used, start);
        self.used -= len;
        for j in idx + 1..self.count {
            let mut e = self.entries[j];
            e.off -= len as u32;
            self.entries[j - 1] = e;
        }
        self.count -= 1;
    }

    pub(crate) fn clear(&mut self) {
        self.count = 0;
        self.used = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: u32) -> Seq {
        Seq::new(v).unwrap()
    }

    #[test]
    fn removal_compacts_and_keeps_the_others_intact() {
        let mut r: Reorder<3, 300> = Reorder::new();
        assert!(r.insert(s(5), &[5; 64], b"five", ByteOrder::Little, false));
        assert!(r.insert(s(3), &[3; 64], b"", ByteOrder::Big, false));
        assert!(r.insert(s(4), &[], &[], ByteOrder::Little, true));
        assert!(!r.insert(s(6), &[6; 64], b"", ByteOrder::Little, false)); // no slot
        r.remove(0);
        let i = r.find(s(3)).unwrap();
        let (h, ext, aux) = r.get(i);
        assert_eq!(
            (h.order, ext, aux),
            (ByteOrder::Big, &[3u8; 64][..], &b""[..])
        );
        assert!(r.get(r.find(s(4)).unwrap()).0.fin);
        assert!(r.insert(s(6), &[6; 64], &[7; 100], ByteOrder::Little, false));
        assert!(!r.insert(s(7), &[7; 64], &[7; 100], ByteOrder::Little, false)); // bytes
        assert_eq!(r.get(r.find(s(6)).unwrap()).2, &[7u8; 100][..]);
        r.clear();
        assert_eq!(r.len(), 0);
    }

    #[test]
    fn zero_capacity_holds_nothing() {
        let mut r: Reorder<0, 0> = Reorder::new();
        assert!(!r.insert(s(1), &[0; 64], &[], ByteOrder::Little, false));
        assert_eq!(r.find(s(1)), None);
    }
}
