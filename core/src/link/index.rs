//! A bounded open-addressing hash index over positions of an array.
//!
//! Tables with many entries (a link's transactions, the node's spans, relays and
//! reachability) keep their records in an array (the node's in a dense `heapless::Vec`
//! whose removal is `swap_remove`) and look them up through one or more `PosIndex`es: `N` slots of `u32` holding `position + 1` (0 = empty), linear probing,
//! backward-shift deletion (no tombstones). The index never owns keys: the caller passes the
//! hash and a predicate that compares the record at a position. Several records may share a
//! key (a multi-map): [`PosIndex::probe`] walks every candidate of a hash.
//!
//! With as many slots as the table has records, a full table still works (every probe ends
//! within `N` steps); lookups are O(1) expected while the table has headroom. Hashes come
//! from [`mix64`], a fixed function: a hostile peer choosing colliding msgids can lengthen
//! probes, never beyond `N` steps.

/// SplitMix64's finalizer: a cheap, well-mixing, deterministic 64-bit hash step.
#[cfg_attr(target_os = "none", inline(never))]
pub(crate) const fn mix64(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Hash of 16 opaque bytes (a UUID).
pub(crate) fn hash_bytes16(b: &[u8; 16], seed: u64) -> u64 {
    let mut lo = [0u8; 8];
    let mut hi = [0u8; 8];
    lo.copy_from_slice(&b[..8]);
    hi.copy_from_slice(&b[8..]);
    mix64(u64::from_le_bytes(lo) ^ mix64(u64::from_le_bytes(hi) ^ seed))
}

/// Open-addressing index of positions; see the module docs.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct PosIndex<const N: usize> {
    slots: [u32; N],
}

impl<const N: usize> PosIndex<N> {
    /// An empty index.
    pub const fn new() -> Self {
        PosIndex { slots: [0; N] }
    }

    const fn home(hash: u64) -> usize {
        if N == 0 {
            0
        } else {
            (hash % N as u64) as usize
        }
    }

    /// Every position stored in the probe run of `hash` (records of other keys included:
    /// the caller filters), in probe order.
    pub fn probe(&self, hash: u64) -> Probe<'_, N> {
        Probe {
            slots: &self.slots,
            at: Self::home(hash),
            left: N,
        }
    }

    /// The first position in the probe run of `hash` for which `is` holds.
    pub fn find(&self, hash: u64, mut is: impl FnMut(usize) -> bool) -> Option<usize> {
        self.probe(hash).find(|&p| is(p))
    }

    /// Stores `pos` under `hash`. Returns false when every slot is taken (the caller keeps
    /// at most `N` records, so this does not happen).
    pub fn insert(&mut self, hash: u64, pos: usize) -> bool {
        if N == 0 {
            return false;
        }
        let mut i = Self::home(hash);
        for _ in 0..N {
            if self.slots[i] == 0 {
                self.slots[i] = pos as u32 + 1;
                return true;
            }
            i = (i + 1) % N;
        }
        false
    }

    fn slot_of(&self, hash: u64, pos: usize) -> Option<usize> {
        if N == 0 {
            return None;
        }
        let want = pos as u32 + 1;
        let mut i = Self::home(hash);
        for _ in 0..N {
            match self.slots[i] {
                0 => return None,
                v if v == want => return Some(i),
                _ => i = (i + 1) % N,
            }
        }
        None
    }

    /// Removes `pos` (stored under `hash`). `hash_of(p)` gives the hash of the record at
    /// position `p`, for the records that shift back into the gap.
    pub fn remove(&mut self, hash: u64, pos: usize, hash_of: impl Fn(usize) -> u64) {
        let Some(mut gap) = self.slot_of(hash, pos) else {
            debug_assert!(false, "removing a position that is not indexed");
            return;
        };
        self.slots[gap] = 0;
        let mut j = (gap + 1) % N;
        for _ in 0..N {
            let v = self.slots[j];
            if v == 0 {
                break;
            }
            let home = Self::home(hash_of(v as usize - 1));
            // Move the record back if its home is not within (gap, j] (cyclically).
            let stays = if gap <= j {
                gap < home && home <= j
            } else {
                gap < home || home <= j
            };
            if !stays {
                self.slots[gap] = v;
                self.slots[j] = 0;
                gap = j;
            }
            j = (j + 1) % N;
        }
    }

    /// The record stored under `hash` at position `old` moved to position `new`.
    pub fn moved(&mut self, hash: u64, old: usize, new: usize) {
        match self.slot_of(hash, old) {
            Some(i) => self.slots[i] = new as u32 + 1,
            None => debug_assert!(false, "moving a position that is not indexed"),
        }
    }
}

/// Iterator of [`PosIndex::probe`].
pub(crate) struct Probe<'a, const N: usize> {
    slots: &'a [u32; N],
    at: usize,
    left: usize,
}

impl<const N: usize> Iterator for Probe<'_, N> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        if self.left == 0 {
            return None;
        }
        let v = self.slots[self.at];
        if v == 0 {
            self.left = 0;
            return None;
        }
        self.left -= 1;
        self.at = (self.at + 1) % N;
        Some(v as usize - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A model: keys in a dense vector, removal by swap_remove, as the tables use it.
    struct Model<const N: usize> {
        keys: std::vec::Vec<u64>,
        idx: PosIndex<N>,
    }

    impl<const N: usize> Model<N> {
        fn h(k: u64) -> u64 {
            k % 7 // many collisions on purpose
        }
        fn insert(&mut self, k: u64) {
            let pos = self.keys.len();
            self.keys.push(k);
            assert!(self.idx.insert(Self::h(k), pos));
        }
        fn find(&self, k: u64) -> Option<usize> {
            self.idx.find(Self::h(k), |p| self.keys[p] == k)
        }
        fn remove(&mut self, k: u64) {
            let pos = self.find(k).unwrap();
            let keys = self.keys.clone();
            self.idx.remove(Self::h(k), pos, |p| Self::h(keys[p]));
            let last = self.keys.len() - 1;
            if pos != last {
                self.idx.moved(Self::h(self.keys[last]), last, pos);
            }
            self.keys.swap_remove(pos);
        }
    }

    #[test]
    // Safe code walking thousands of steps: hours under Miri, and nothing Miri could find.
    #[cfg_attr(miri, ignore)]
    fn insert_find_remove_agree_with_a_model_up_to_full() {
        let mut m = Model::<16> {
            keys: std::vec::Vec::new(),
            idx: PosIndex::new(),
        };
        let mut x = 12345u64;
        let mut live: std::vec::Vec<u64> = std::vec::Vec::new();
        for step in 0..5000u64 {
            x = mix64(x + step);
            let k = x % 40;
            if live.contains(&k) {
                m.remove(k);
                live.retain(|&v| v != k);
            } else if live.len() < 16 {
                m.insert(k);
                live.push(k);
            }
            for &k in &live {
                let p = m.find(k).expect("present");
                assert_eq!(m.keys[p], k);
            }
            for k in 0..40 {
                if !live.contains(&k) {
                    assert_eq!(m.find(k), None);
                }
            }
        }
    }
}
