//! The retransmit window: frames accepted by `send` and not yet acknowledged.
//!
//! Frames are kept in sequence order in a ring of `F` slots; their bytes sit in a ring of `B`
//! bytes in the same order. A frame is never split across the end of the byte ring: when it
//! does not fit before the end it goes to the start (a "bip buffer"), so every stored frame is
//! one contiguous slice that can be stamped in place and copied out in pieces. A FIN takes a
//! slot but no bytes (it is built when sent).

use core::fmt;

use super::seq::Seq;

/// One frame of the window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Slot {
    /// Its sequence number.
    pub seq: Seq,
    /// Offset of its bytes in the byte ring (0 for a FIN).
    pub off: u32,
    /// Length of its bytes (0 for a FIN).
    pub len: u32,
    /// How often it was emitted, saturating.
    pub tx_count: u16,
    /// True when it must be (re)sent: new, or marked for retransmission.
    pub needs_tx: bool,
    /// True for our FIN.
    pub fin: bool,
}

impl Slot {
    const EMPTY: Slot = Slot {
        seq: Seq::ONE,
        off: 0,
        len: 0,
        tx_count: 0,
        needs_tx: false,
        fin: false,
    };
}

/// Why a frame cannot be stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum PushError {
    /// No slot or no contiguous space now; acks will make room.
    Full,
    /// Larger than the whole byte ring; it never fits.
    TooLarge,
}

/// The window storage. Plain data: `Clone`, `Eq`, `Hash`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) struct Window<const F: usize, const B: usize> {
    bytes: [u8; B],
    slots: [Slot; F],
    head: usize,
    count: usize,
    bytes_used: usize,
    /// No frame before this index needs sending (a scan hint).
    tx_hint: usize,
}

impl<const F: usize, const B: usize> fmt::Debug for Window<F, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut l = f.debug_list();
        for i in 0..self.count {
            l.entry(self.slot(i));
        }
        l.finish()
    }
}

impl<const F: usize, const B: usize> Window<F, B> {
    pub(crate) const fn new() -> Self {
        Window {
            bytes: [0; B],
            slots: [Slot::EMPTY; F],
            head: 0,
            count: 0,
            bytes_used: 0,
            tx_hint: 0,
        }
    }

    /// Frames stored (FIN included).
    pub(crate) fn len(&self) -> usize {
        self.count
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes of stored frames.
    pub(crate) fn bytes_used(&self) -> usize {
        self.bytes_used
    }

    fn phys(&self, i: usize) -> usize {
        (self.head + i) % F
    }

    /// The `i`-th oldest frame. `i < len()`.
    pub(crate) fn slot(&self, i: usize) -> &Slot {
        debug_assert!(i < self.count);
        &self.slots[self.phys(i)]
    }

    pub(crate) fn slot_mut(&mut self, i: usize) -> &mut Slot {
        debug_assert!(i < self.count);
        let p = self.phys(i);
        &mut self.slots[p]
    }

    /// Index of the frame with sequence number `seq` (the slots hold consecutive numbers).
    pub(crate) fn find(&self, seq: Seq) -> Option<usize> {
        if self.count == 0 {
            return None;
        }
        let i = self.slot(0).seq.distance_to(seq) as usize;
        if i < self.count && self.slot(i).seq == seq {
            Some(i)
        } else {
            None
        }
    }

    /// The stored bytes of the `i`-th frame.
    pub(crate) fn frame(&self, i: usize) -> &[u8] {
        let s = self.slot(i);
        &self.bytes[s.off as usize..(s.off + s.len) as usize]
    }

    pub(crate) fn frame_mut(&mut self, i: usize) -> &mut [u8] {
        let s = *self.slot(i);
        &mut self.bytes[s.off as usize..(s.off + s.len) as usize]
    }

    /// The oldest and newest slots that hold bytes. Only the newest slot can be a FIN (no
    /// bytes), and a FIN is never followed by anything.
    fn data_span(&self) -> Option<(Slot, Slot)> {
        let mut n = self.count;
        if n > 0 && self.slot(n - 1).fin {
            n -= 1;
        }
        if n == 0 {
            return None;
        }
        Some((*self.slot(0), *self.slot(n - 1)))
    }

    /// Where `len` contiguous bytes fit now, if anywhere.
    fn place(&self, len: usize) -> Option<usize> {
        let Some((first, last)) = self.data_span() else {
            return Some(0);
        };
        let head = first.off as usize;
        let tail = (last.off + last.len) as usize;
        if last.off >= first.off {
            // Not wrapped: free space is [tail, B) and [0, head).
            if B - tail >= len {
                Some(tail)
            } else if head >= len {
                Some(0)
            } else {
                None
            }
        } else if head - tail >= len {
            Some(tail)
        } else {
            None
        }
    }

    /// True when a frame of `len` bytes could be stored while keeping `reserve_slots` free.
    pub(crate) fn fits(&self, len: usize, reserve_slots: usize) -> bool {
        self.count + reserve_slots < F && (len == 0 || self.place(len).is_some())
    }

    /// True when [`push_with`](Self::push_with) would store a frame of `len` bytes while
    /// keeping `reserve_slots` slots and `keep_bytes` contiguous bytes after it free.
    pub(crate) fn fits_keeping(&self, len: usize, reserve_slots: usize, keep_bytes: usize) -> bool {
        len > 0
            && len + keep_bytes <= B
            && self.count + reserve_slots < F
            && self.place(len + keep_bytes).is_some()
    }

    /// True when `n` frames of `len` bytes each could be stored one after the other (by
    /// [`push_with`](Self::push_with) without a byte reserve) while keeping `reserve_slots`
    /// slots free.
    pub(crate) fn fits_many(&self, n: usize, len: usize, reserve_slots: usize) -> bool {
        if self.count + n + reserve_slots > F {
            return false;
        }
        // Replay the placement rule of `place` on the span of stored bytes.
        let (mut head, mut tail, mut wrapped, mut empty) = match self.data_span() {
            None => (0, 0, false, true),
            Some((first, last)) => (
                first.off as usize,
                (last.off + last.len) as usize,
                last.off < first.off,
                false,
            ),
        };
        for _ in 0..n {
            if empty {
                if len > B {
                    return false;
                }
                (head, tail, empty) = (0, len, false);
            } else if !wrapped && B - tail >= len {
                tail += len;
            } else if !wrapped && head >= len {
                (tail, wrapped) = (len, true);
            } else if wrapped && head - tail >= len {
                tail += len;
            } else {
                return false;
            }
        }
        true
    }

    /// The largest frame [`push_with`](Self::push_with) could store now while keeping
    /// `reserve_slots` slots and `keep_bytes` contiguous bytes free (0: none).
    pub(crate) fn room(&self, reserve_slots: usize, keep_bytes: usize) -> usize {
        if self.count + reserve_slots >= F {
            return 0;
        }
        let largest = match self.data_span() {
            None => B,
            Some((first, last)) => {
                let head = first.off as usize;
                let tail = (last.off + last.len) as usize;
                if last.off >= first.off {
                    (B - tail).max(head)
                } else {
                    head - tail
                }
            }
        };
        largest.saturating_sub(keep_bytes)
    }

    /// True when a stored frame waits to be (re)sent.
    pub(crate) fn has_unsent(&self) -> bool {
        (self.tx_hint..self.count).any(|i| self.slot(i).needs_tx)
    }

    /// Bytes of the stored frames that wait to be (re)sent, and how many of them are FINs
    /// (which take no bytes here).
    pub(crate) fn unsent(&self) -> (usize, usize) {
        let (mut bytes, mut fins) = (0, 0);
        for i in self.tx_hint..self.count {
            let s = self.slot(i);
            if s.needs_tx {
                bytes += s.len as usize;
                fins += s.fin as usize;
            }
        }
        (bytes, fins)
    }

    /// Stores a frame of `len` bytes as the newest, written in place by `write`, keeping
    /// `reserve_slots` slots and `keep_bytes` contiguous bytes after it free. When `write`
    /// fails nothing is stored and its error is returned inside `Ok`.
    pub(crate) fn push_with<E>(
        &mut self,
        seq: Seq,
        len: usize,
        reserve_slots: usize,
        keep_bytes: usize,
        write: impl FnOnce(&mut [u8]) -> Result<(), E>,
    ) -> Result<Result<(), E>, PushError> {
        if len == 0 || len + keep_bytes > B {
            return Err(PushError::TooLarge);
        }
        if self.count + reserve_slots >= F {
            return Err(PushError::Full);
        }
        if let Some(last) = self.count.checked_sub(1).map(|i| self.slot(i)) {
            debug_assert_eq!(last.seq.next(), seq, "window holds consecutive numbers");
        }
        let off = self.place(len + keep_bytes).ok_or(PushError::Full)?;
        if let Err(e) = write(&mut self.bytes[off..off + len]) {
            return Ok(Err(e));
        }
        self.bytes_used += len;
        self.push_slot(Slot {
            seq,
            off: off as u32,
            len: len as u32,
            tx_count: 0,
            needs_tx: true,
            fin: false,
        });
        Ok(Ok(()))
    }

    fn push_slot(&mut self, slot: Slot) {
        let p = self.phys(self.count);
        self.slots[p] = slot;
        self.tx_hint = self.tx_hint.min(self.count);
        self.count += 1;
    }

    /// Marks the `i`-th frame for (re)sending.
    pub(crate) fn mark_for_tx(&mut self, i: usize) {
        self.slot_mut(i).needs_tx = true;
        self.tx_hint = self.tx_hint.min(i);
    }

    /// The oldest frame that needs sending.
    pub(crate) fn next_to_send(&mut self) -> Option<usize> {
        while self.tx_hint < self.count {
            if self.slot(self.tx_hint).needs_tx {
                return Some(self.tx_hint);
            }
            self.tx_hint += 1;
        }
        None
    }

    /// Stores a frame as the newest, keeping `reserve_slots` slots free.
    pub(crate) fn push(
        &mut self,
        seq: Seq,
        frame: &[u8],
        reserve_slots: usize,
    ) -> Result<(), PushError> {
        if frame.len() > B || frame.is_empty() {
            return Err(PushError::TooLarge);
        }
        if self.count + reserve_slots >= F {
            return Err(PushError::Full);
        }
        if let Some(last) = self.count.checked_sub(1).map(|i| self.slot(i)) {
            debug_assert_eq!(last.seq.next(), seq, "window holds consecutive numbers");
        }
        let off = self.place(frame.len()).ok_or(PushError::Full)?;
        self.bytes[off..off + frame.len()].copy_from_slice(frame);
        self.bytes_used += frame.len();
        self.push_slot(Slot {
            seq,
            off: off as u32,
            len: frame.len() as u32,
            tx_count: 0,
            needs_tx: true,
            fin: false,
        });
        Ok(())
    }

    /// Stores our FIN as the newest frame (it needs a slot, no bytes).
    pub(crate) fn push_fin(&mut self, seq: Seq) -> Result<(), PushError> {
        if self.count >= F {
            return Err(PushError::Full);
        }
        self.push_slot(Slot {
            seq,
            off: 0,
            len: 0,
            tx_count: 0,
            needs_tx: true,
            fin: true,
        });
        Ok(())
    }

    /// Removes the oldest frame.
    pub(crate) fn pop_front(&mut self) -> Option<Slot> {
        if self.count == 0 {
            return None;
        }
        let s = self.slots[self.head];
        self.head = (self.head + 1) % F;
        self.count -= 1;
        self.bytes_used -= s.len as usize;
        self.tx_hint = self.tx_hint.saturating_sub(1);
        if self.count == 0 {
            self.head = 0;
        }
        Some(s)
    }

    /// Forgets everything.
    pub(crate) fn clear(&mut self) {
        self.head = 0;
        self.count = 0;
        self.bytes_used = 0;
        self.tx_hint = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: u32) -> Seq {
        Seq::new(v).unwrap()
    }

    #[test]
    fn frames_stay_contiguous_across_the_end_of_the_ring() {
        let mut w: Window<4, 256> = Window::new();
        w.push(s(1), &[1; 100], 0).unwrap();
        w.push(s(2), &[2; 100], 0).unwrap();
        assert_eq!(w.push(s(3), &[3; 100], 0), Err(PushError::Full)); // 56 left at the end
        w.pop_front();
        w.push(s(3), &[3; 100], 0).unwrap(); // wraps to 0
        assert_eq!(w.slot(1).off, 0);
        assert_eq!(w.frame(1), &[3; 100][..]);
        // [0, 100) and [100, 200) are used; the 56 bytes at the end are behind the wrap.
        assert_eq!(w.push(s(4), &[4; 1], 0), Err(PushError::Full));
        w.pop_front();
        w.push(s(4), &[4; 150], 0).unwrap();
        assert_eq!(w.slot(1).off, 100);
        assert_eq!(w.find(s(3)), Some(0));
        assert_eq!(w.find(s(4)), Some(1));
        assert_eq!(w.find(s(5)), None);
        assert_eq!(w.push(s(5), &[5; 257], 0), Err(PushError::TooLarge));
        assert_eq!(w.bytes_used(), 250);
    }

    #[test]
    fn placement_checks_agree_with_pushes() {
        let mut w: Window<8, 512> = Window::new();
        let ok = |_: &mut [u8]| Ok::<(), ()>(());
        assert_eq!(w.room(1, 0), 512);
        assert!(w.fits_many(4, 128, 1));
        assert!(!w.fits_many(5, 128, 1));
        w.push_with(s(1), 200, 1, 128, ok).unwrap().unwrap();
        // 312 bytes left at the end: 128 of them are the reserve.
        assert_eq!(w.room(1, 128), 312 - 128);
        assert!(w.fits_keeping(184, 1, 128));
        assert!(!w.fits_keeping(185, 1, 128));
        w.push_with(s(2), 184, 1, 128, ok).unwrap().unwrap();
        assert_eq!(
            w.push_with(s(3), 64, 1, 128, ok),
            Err(PushError::Full),
            "only the reserve is left"
        );
        assert!(w.fits_many(2, 64, 1));
        assert!(!w.fits_many(3, 64, 1));
        // Wrapping: free the first frame; the next ones go to the start.
        w.pop_front();
        assert!(
            w.fits_many(2 + 3, 64, 1),
            "two at the end, three at the start"
        );
        assert!(!w.fits_many(2 + 4, 64, 1));
        assert_eq!(w.room(1, 0), 200);
        assert_eq!(
            w.push_with(s(3), 64, 1, 0, |_| Err(5)),
            Ok(Err(5)),
            "a failed write stores nothing"
        );
        assert_eq!(w.len(), 1);
        assert_eq!(w.push_with(s(3), 513, 1, 0, ok), Err(PushError::TooLarge));
        assert_eq!(w.push_with(s(3), 400, 1, 128, ok), Err(PushError::TooLarge));
        assert!(!w.has_unsent() || w.unsent().0 == 184);
    }

    #[test]
    fn reserved_slot_keeps_room_for_the_fin() {
        let mut w: Window<2, 128> = Window::new();
        w.push(s(1), &[1; 64], 1).unwrap();
        assert_eq!(w.push(s(2), &[1; 64], 1), Err(PushError::Full));
        assert!(!w.fits(64, 1));
        w.push_fin(s(2)).unwrap();
        assert!(w.slot(1).fin);
        assert_eq!(w.pop_front().unwrap().seq, s(1));
        assert_eq!(w.bytes_used(), 0);
        w.clear();
        assert!(w.is_empty());
    }
}
