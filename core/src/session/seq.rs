//! Session sequence numbers: 32-bit serial numbers that skip 0.
//!
//! On the wire 0 means "not sequenced" (DragonFly sends `link_verifier` 0), so the sequence
//! space is `1..=u32::MAX`, a ring of `M = 2^32 - 1` values: after `u32::MAX` comes 1.
//! Comparison is RFC 1982 serial-number arithmetic on that ring: `a` is before `b` when `b`
//! is 1 to `(M - 1) / 2` steps after `a`. Both ends keep their unacknowledged and reordered
//! frames within a few thousand steps of each other, far inside half the ring.

use core::fmt;

/// Number of distinct sequence numbers (`1..=u32::MAX`).
const RING: u64 = u32::MAX as u64;
/// Largest forward distance that still counts as "after" (half the ring, rounded down).
const HALF: u32 = (u32::MAX - 1) / 2;

/// A sequence number, never 0.
///
/// ```
/// use dmsg_core::session::Seq;
/// let last = Seq::new(u32::MAX).unwrap();
/// assert_eq!(last.next(), Seq::new(1).unwrap()); // 0 is skipped
/// assert_eq!(last.distance_to(Seq::new(2).unwrap()), 2);
/// assert!(last.is_before(Seq::new(1).unwrap()));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Seq(u32);

impl Seq {
    /// The first sequence number of the ring.
    pub const ONE: Seq = Seq(1);

    /// `value` as a sequence number; `None` for 0 ("not sequenced").
    pub const fn new(value: u32) -> Option<Seq> {
        if value == 0 {
            None
        } else {
            Some(Seq(value))
        }
    }

    /// The first sequence number a session with identity `id` uses for its frames: the low
    /// 32 bits of the identity, or 1 if they are 0. Deriving it from the identity makes
    /// frames of different sessions unlikely to fall into each other's windows, and exercises
    /// wrap-around with no extra negotiation.
    pub const fn initial(id: u64) -> Seq {
        let low = id as u32;
        if low == 0 {
            Seq(1)
        } else {
            Seq(low)
        }
    }

    /// The wire value (never 0).
    pub const fn get(self) -> u32 {
        self.0
    }

    /// The sequence number after this one (`u32::MAX` is followed by 1).
    pub const fn next(self) -> Seq {
        if self.0 == u32::MAX {
            Seq(1)
        } else {
            Seq(self.0 + 1)
        }
    }

    /// The sequence number `steps` after this one.
    pub const fn add(self, steps: u32) -> Seq {
        // Both terms are below RING, so one subtraction reduces the sum (no division: this
        // runs several times per frame).
        let mut idx = self.0 as u64 - 1 + steps as u64;
        if idx >= RING {
            idx -= RING;
        }
        Seq(idx as u32 + 1)
    }

    /// Steps forward from `self` to `later` around the ring (0 when equal).
    pub const fn distance_to(self, later: Seq) -> u32 {
        // Both values are in 1..=RING, so the difference is within one ring of 0.
        if later.0 >= self.0 {
            later.0 - self.0
        } else {
            (later.0 as u64 + RING - self.0 as u64) as u32
        }
    }

    /// True when `other` follows `self` by 1 to half the ring (RFC 1982 "less than").
    pub const fn is_before(self, other: Seq) -> bool {
        let d = self.distance_to(other);
        d != 0 && d <= HALF
    }
}

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Packs a sequence number and a cumulative ack (both optional) into `link_verifier`:
/// `ack << 32 | seq`, 0 standing for "none".
pub const fn pack_link_verifier(seq: Option<Seq>, ack: Option<Seq>) -> u64 {
    let s = match seq {
        Some(s) => s.0 as u64,
        None => 0,
    };
    let a = match ack {
        Some(a) => a.0 as u64,
        None => 0,
    };
    (a << 32) | s
}

/// Splits `link_verifier` into `(seq, ack)`; a 0 half is `None`.
pub const fn unpack_link_verifier(v: u64) -> (Option<Seq>, Option<Seq>) {
    (Seq::new(v as u32), Seq::new((v >> 32) as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: u32) -> Seq {
        Seq::new(v).unwrap()
    }

    #[test]
    fn zero_is_not_a_sequence_number_and_is_skipped() {
        assert_eq!(Seq::new(0), None);
        assert_eq!(s(u32::MAX).next(), s(1));
        assert_eq!(s(u32::MAX - 1).add(3), s(2));
        assert_eq!(s(5).add(0), s(5));
        assert_eq!(Seq::initial(0xFFFF_FFFF_0000_0000), s(1));
        assert_eq!(Seq::initial(0x1234_0000_0042), s(0x42));
    }

    #[test]
    fn distance_and_order_are_consistent_across_the_wrap() {
        let points = [1, 2, 1000, HALF - 1, HALF, HALF + 1, u32::MAX - 1, u32::MAX];
        for &a in &points {
            for steps in [0u32, 1, 2, 77, HALF - 1, HALF] {
                let b = s(a).add(steps);
                assert_eq!(s(a).distance_to(b), steps, "{a} + {steps}");
                assert_eq!(s(a).is_before(b), steps != 0, "{a} < {a}+{steps}");
                if steps != 0 {
                    assert!(!b.is_before(s(a)), "{a}+{steps} !< {a}");
                }
            }
        }
        // Walking step by step agrees with `add`.
        let mut x = s(u32::MAX - 3);
        for i in 0..10 {
            assert_eq!(x, s(u32::MAX - 3).add(i));
            x = x.next();
        }
    }

    #[test]
    fn arithmetic_matches_the_modular_definition() {
        let reference_add = |a: u32, k: u32| ((a as u64 - 1 + k as u64) % RING) as u32 + 1;
        let reference_dist = |a: u32, b: u32| ((b as u64 + RING - a as u64) % RING) as u32;
        let values = [
            1,
            2,
            3,
            1000,
            HALF - 1,
            HALF,
            HALF + 1,
            HALF + 2,
            u32::MAX - 2,
            u32::MAX - 1,
            u32::MAX,
        ];
        for &a in &values {
            for &b in &values {
                assert_eq!(s(a).distance_to(s(b)), reference_dist(a, b), "{a}->{b}");
            }
            for k in [
                0,
                1,
                2,
                HALF,
                HALF + 1,
                u32::MAX - 2,
                u32::MAX - 1,
                u32::MAX,
            ] {
                assert_eq!(s(a).add(k).get(), reference_add(a, k), "{a}+{k}");
            }
        }
    }

    #[test]
    fn link_verifier_round_trips() {
        for (seq, ack) in [
            (None, None),
            (Some(s(1)), None),
            (None, Some(s(u32::MAX))),
            (Some(s(7)), Some(s(9))),
        ] {
            assert_eq!(
                unpack_link_verifier(pack_link_verifier(seq, ack)),
                (seq, ack)
            );
        }
        assert_eq!(
            pack_link_verifier(Some(s(1)), Some(s(2))),
            0x0000_0002_0000_0001
        );
    }
}
