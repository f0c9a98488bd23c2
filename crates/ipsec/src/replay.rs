//! The anti-replay window of an inbound SA (RFC 4303 section 3.4.3 and appendix A2), with
//! 64-bit Extended Sequence Numbers (ESN) inferred from the 32 bits on the wire.
//!
//! The window is a ring of 64-bit words, the layout RFC 6479 describes: sliding right by any
//! amount clears at most all 32 words and never shifts the bitmap, so every operation is
//! O(1) with a constant bound. One word more than the window needs is kept so that the word
//! holding the top of the window can be partly new without losing the oldest in-window bits.
//!
//! Two steps, because the Sequence Number is not authenticated until the ICV is (section
//! 3.4.3): [`ReplayWindow::check`] reads the window and says which 64-bit number the packet
//! would be, changing nothing, and [`ReplayWindow::accept`] marks it once the ICV verified. A
//! forged packet therefore never moves the window.

/// Number of 64-bit words in the ring.
const WORDS: usize = 32;
/// Bits in the ring.
const RING_BITS: u64 = (WORDS as u64) * 64;

/// Width W of the window (RFC 4303 appendix A2): a packet is accepted if its number is above
/// the highest one authenticated so far, or at most W - 1 below it and not seen before.
///
/// 1984 packets: the ring's 2048 bits less the one word kept spare (see the module doc), well
/// above the 64 that section 3.4.3 recommends for 32-bit numbers and the 1024 this project
/// asks for, so that reordering across parallel paths or queues at line rate does not drop.
pub const WINDOW: u64 = RING_BITS - 64;
// The issue asks for at least 1024; appendix A2's inference assumes at most 2^31.
const _: () = assert!(WINDOW >= 1024 && WINDOW <= (1 << 31));

/// Why [`ReplayWindow::check`] or [`ReplayWindow::accept`] refused a sequence number (RFC 4303
/// section 3.4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayDrop {
    /// The number was already authenticated on this SA (or is 0, which no sender uses: the
    /// first packet carries 1, section 3.3.3).
    Duplicate,
    /// The number is left of the window: too old to tell whether it was seen.
    TooOld,
}

/// The receive side of sequence numbering for one SA: the highest number authenticated
/// (T in RFC 4303 appendix A2) and which of the [`WINDOW`] numbers up to it were seen.
#[derive(Clone)]
pub struct ReplayWindow {
    esn: bool,
    /// T: the highest sequence number authenticated so far (0 before the first packet).
    top: u64,
    /// Bit `n % RING_BITS` stands for number `n`, for `top - WINDOW < n <= top`.
    ring: [u64; WORDS],
}

impl std::fmt::Debug for ReplayWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayWindow")
            .field("esn", &self.esn)
            .field("top", &self.top)
            .finish_non_exhaustive()
    }
}

fn slot(n: u64) -> (usize, u64) {
    (((n / 64) % WORDS as u64) as usize, 1u64 << (n % 64))
}

impl ReplayWindow {
    /// A window for a new SA (section 3.4.3: the receive counter starts at zero). `esn` says
    /// whether the SA uses 64-bit Extended Sequence Numbers (section 2.2.1); without them the
    /// 32 bits on the wire are the whole number.
    pub fn new(esn: bool) -> Self {
        let mut ring = [0; WORDS];
        // 0 counts as seen: no sender uses it (section 3.3.3), so it is refused like a replay.
        ring[0] = 1;
        ReplayWindow { esn, top: 0, ring }
    }

    /// A window that resumes after `highest` was the last number authenticated, every number
    /// up to it counting as seen. For manually keyed SAs kept across a restart (RFC 4303
    /// section 3.3.3 asks that counters survive reboots): the numbers the window held are
    /// unknown, so all of them are refused rather than risk accepting a replay.
    pub fn resume(esn: bool, highest: u64) -> Self {
        let mut ring = [u64::MAX; WORDS];
        // Numbers above `highest` in its own word were not received: slide_to relies on them
        // being clear, as they are in a window that grew from new().
        let (word, bit) = slot(highest);
        ring[word] &= bit | (bit - 1);
        ReplayWindow {
            esn,
            top: highest,
            ring,
        }
    }

    /// Whether this window infers 64-bit Extended Sequence Numbers.
    pub fn esn(&self) -> bool {
        self.esn
    }

    /// T: the highest sequence number authenticated so far, 0 before any.
    pub fn top(&self) -> u64 {
        self.top
    }

    /// The full sequence number a packet carrying `seq_low` in its Sequence Number field would
    /// have, if it is not a replay; the window is not changed (section 3.4.3: the "preliminary
    /// check", before integrity is verified).
    ///
    /// With ESN, the high 32 bits are inferred as appendix A2.2 says: the window spans one
    /// subspace (case A, T's low bits >= W - 1) or two (case B), and a low part at or above the
    /// window's bottom belongs to the window's subspace, one below it to the next. So a packet
    /// may be up to 2^32 - W numbers ahead of T; one that is further ahead is mistaken for an
    /// old one and fails its ICV, as the appendix accepts. One refinement: in case B while T's
    /// high bits are 0 there is no subspace below, and a low part at or above the window's
    /// bottom is then ahead in subspace 0 (the section 3.4.3 rule), not below zero.
    pub fn check(&self, seq_low: u32) -> Result<u64, ReplayDrop> {
        let seq = if self.esn {
            self.infer(seq_low)?
        } else {
            u64::from(seq_low)
        };
        self.check_full(seq).map(|()| seq)
    }

    /// Appendix A2.2: the high 32 bits of the number whose low bits are `seq_low`.
    fn infer(&self, seq_low: u32) -> Result<u64, ReplayDrop> {
        let w = WINDOW as u32;
        let tl = self.top as u32;
        let th = (self.top >> 32) as u32;
        let bottom = tl.wrapping_sub(w - 1);
        let high = if tl >= w - 1 {
            // Case A: the window lies in subspace Th; below it is the next subspace.
            if seq_low >= bottom {
                th
            } else {
                // Past 2^64 - 1 nothing can have been sent: refuse instead of wrapping.
                th.checked_add(1).ok_or(ReplayDrop::TooOld)?
            }
        } else if seq_low >= bottom {
            // Case B, upper part: the window's tail in subspace Th - 1 (none when Th is 0).
            th.saturating_sub(1)
        } else {
            th
        };
        Ok((u64::from(high) << 32) | u64::from(seq_low))
    }

    fn check_full(&self, seq: u64) -> Result<(), ReplayDrop> {
        if seq > self.top {
            return Ok(());
        }
        if self.top - seq >= WINDOW {
            return Err(ReplayDrop::TooOld);
        }
        let (word, bit) = slot(seq);
        if self.ring[word] & bit != 0 {
            return Err(ReplayDrop::Duplicate);
        }
        Ok(())
    }

    /// Marks `seq` (a value [`Self::check`] returned) as authenticated, sliding the window
    /// right if it is above T (appendix A2.1). Call it only after the ICV verified, so that
    /// only authenticated numbers move the window (section 3.4.3).
    ///
    /// It checks again, so that a packet that passed [`Self::check`] but lost a race with a
    /// copy of itself, or fell out of the window meanwhile, is still refused.
    pub fn accept(&mut self, seq: u64) -> Result<(), ReplayDrop> {
        self.check_full(seq)?;
        if seq > self.top {
            self.slide_to(seq);
        }
        let (word, bit) = slot(seq);
        self.ring[word] |= bit;
        Ok(())
    }

    /// Makes `seq` (> T) the top: the words between T's and `seq`'s are cleared, at most all
    /// of them. The bits of T's own word above T are already clear (never set: nothing above
    /// T was accepted) and so are the bits of `seq`'s word once it is cleared.
    fn slide_to(&mut self, seq: u64) {
        let from = self.top / 64;
        let to = seq / 64;
        // A jump of a whole ring or more clears every word, T's own included (k = WORDS).
        let words = (to - from).min(WORDS as u64);
        for k in 1..=words {
            let w = ((from + k) % WORDS as u64) as usize;
            self.ring[w] = 0;
        }
        self.top = seq;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    const W: u64 = WINDOW;

    /// check then accept, as a packet with a good ICV goes through.
    fn pass(w: &mut ReplayWindow, seq_low: u32) -> Result<u64, ReplayDrop> {
        let s = w.check(seq_low)?;
        w.accept(s)?;
        Ok(s)
    }

    #[test]
    fn window_size() {
        assert_eq!(W, 1984);
    }

    #[test]
    fn zero_is_never_accepted() {
        for esn in [false, true] {
            let mut w = ReplayWindow::new(esn);
            assert_eq!(w.check(0), Err(ReplayDrop::Duplicate));
            assert_eq!(w.accept(0), Err(ReplayDrop::Duplicate));
            assert_eq!(pass(&mut w, 1), Ok(1));
            assert_eq!(w.check(0), Err(ReplayDrop::Duplicate));
        }
    }

    #[test]
    fn in_order_and_duplicates() {
        let mut w = ReplayWindow::new(false);
        for s in 1..=5000u32 {
            assert_eq!(pass(&mut w, s), Ok(u64::from(s)));
            assert_eq!(w.check(s), Err(ReplayDrop::Duplicate));
        }
        assert_eq!(w.top(), 5000);
    }

    #[test]
    fn check_changes_nothing() {
        let mut w = ReplayWindow::new(true);
        assert_eq!(w.check(7), Ok(7));
        assert_eq!(w.check(7), Ok(7));
        assert_eq!(w.top(), 0);
        // A forged packet far ahead, never accepted, leaves the window where it was.
        assert_eq!(w.check(1_000_000), Ok(1_000_000));
        assert_eq!(pass(&mut w, 3), Ok(3));
        assert_eq!(w.check(2), Ok(2));
    }

    #[test]
    fn window_edges() {
        let mut w = ReplayWindow::new(false);
        let top = 10_000u32;
        assert_eq!(pass(&mut w, top), Ok(10_000));
        // The bottom of the window, T - W + 1, is in; one below is too old.
        let bottom = top - W as u32 + 1;
        assert_eq!(w.check(bottom), Ok(u64::from(bottom)));
        assert_eq!(w.check(bottom - 1), Err(ReplayDrop::TooOld));
        assert_eq!(w.check(1), Err(ReplayDrop::TooOld));
        // Everything inside the window, not yet seen, passes once.
        for s in bottom..top {
            assert_eq!(pass(&mut w, s), Ok(u64::from(s)), "{s}");
            assert_eq!(w.check(s), Err(ReplayDrop::Duplicate));
        }
        assert_eq!(w.check(top), Err(ReplayDrop::Duplicate));
        // Sliding by one pushes the bottom out.
        assert_eq!(pass(&mut w, top + 1), Ok(u64::from(top + 1)));
        assert_eq!(w.check(bottom), Err(ReplayDrop::TooOld));
        assert_eq!(w.check(bottom + 1), Err(ReplayDrop::Duplicate));
    }

    #[test]
    fn slides_across_word_and_ring_boundaries() {
        for jump in [
            1u64,
            63,
            64,
            65,
            127,
            128,
            W - 1,
            W,
            W + 1,
            RING_BITS,
            5 * RING_BITS + 17,
        ] {
            let mut w = ReplayWindow::new(false);
            // Fill a full window below 3000.
            for s in 3000 - W + 1..=3000 {
                assert_eq!(pass(&mut w, s as u32), Ok(s));
            }
            let new_top = 3000 + jump;
            assert_eq!(pass(&mut w, new_top as u32), Ok(new_top));
            // Numbers between old and new top are unseen; old ones still in the window
            // are still seen; anything below the new bottom is too old.
            for s in new_top.saturating_sub(W + 5)..new_top {
                let expect = if new_top - s >= W {
                    Err(ReplayDrop::TooOld)
                } else if s > 3000 {
                    Ok(s)
                } else {
                    Err(ReplayDrop::Duplicate)
                };
                assert_eq!(w.check(s as u32), expect, "jump {jump} seq {s}");
            }
        }
    }

    #[test]
    fn accept_rechecks() {
        let mut w = ReplayWindow::new(false);
        let s = w.check(5).unwrap();
        // A copy of the same packet verified first.
        assert_eq!(w.accept(s), Ok(()));
        assert_eq!(w.accept(s), Err(ReplayDrop::Duplicate));
        // A packet checked, then pushed out of the window before its ICV verified.
        let old = w.check(6).unwrap();
        assert_eq!(pass(&mut w, 6 + W as u32), Ok(6 + W));
        assert_eq!(w.accept(old), Err(ReplayDrop::TooOld));
    }

    #[test]
    fn without_esn_the_wire_value_is_the_number() {
        let mut w = ReplayWindow::new(false);
        assert_eq!(pass(&mut w, u32::MAX), Ok(u64::from(u32::MAX)));
        // No subspace after it: a small number is just too old, not a wrap.
        assert_eq!(w.check(1), Err(ReplayDrop::TooOld));
        assert_eq!(w.check(u32::MAX), Err(ReplayDrop::Duplicate));
    }

    #[test]
    fn esn_case_a_same_and_next_subspace() {
        // T = 5 * 2^32 + 100_000: case A (Tl >= W - 1).
        let t = (5u64 << 32) + 100_000;
        let w = ReplayWindow::resume(true, t);
        let bottom_l = 100_000 - W as u32 + 1;
        // At or above the bottom: subspace Th (ahead of T if above Tl).
        assert_eq!(w.check(100_001), Ok(t + 1));
        assert_eq!(w.check(u32::MAX), Ok((5 << 32) | 0xffff_ffff));
        assert_eq!(w.check(bottom_l), Err(ReplayDrop::Duplicate));
        // Below the bottom: the next subspace, ahead by nearly 2^32.
        assert_eq!(
            w.check(bottom_l - 1),
            Ok((6u64 << 32) | u64::from(bottom_l - 1))
        );
        assert_eq!(w.check(0), Ok(6u64 << 32));
    }

    #[test]
    fn esn_case_a_edge_tl_equals_w_minus_1() {
        let t = (2u64 << 32) + W - 1;
        let w = ReplayWindow::resume(true, t);
        // Bottom is 0 in subspace 2: every low value belongs to subspace 2.
        assert_eq!(w.check(0), Err(ReplayDrop::Duplicate));
        assert_eq!(w.check(W as u32), Ok((2 << 32) + W));
    }

    #[test]
    fn esn_case_b_window_spans_two_subspaces() {
        // T = 3 * 2^32 + 10: the window reaches back into subspace 2.
        let t = (3u64 << 32) + 10;
        let mut w = ReplayWindow::resume(true, t);
        let bottom_l = 10u32.wrapping_sub(W as u32 - 1);
        // Low values at or above the bottom are the tail of subspace 2.
        assert_eq!(w.check(u32::MAX), Err(ReplayDrop::Duplicate));
        assert_eq!(
            w.check(bottom_l - 1),
            Ok((3u64 << 32) | u64::from(bottom_l - 1))
        );
        // Below the bottom: subspace 3.
        assert_eq!(w.check(11), Ok(t + 1));
        assert_eq!(w.check(10), Err(ReplayDrop::Duplicate));
        // Skipping a number leaves it acceptable once.
        assert_eq!(pass(&mut w, 12), Ok(t + 2));
        assert_eq!(pass(&mut w, 11), Ok(t + 1));
        assert_eq!(w.check(11), Err(ReplayDrop::Duplicate));
    }

    #[test]
    fn esn_crossing_the_low_wrap() {
        let mut w = ReplayWindow::resume(true, 0xffff_fff0);
        // Up to the end of subspace 0, then across into subspace 1 in order.
        for s in 0xffff_fff1u32..=0xffff_ffff {
            assert_eq!(pass(&mut w, s), Ok(u64::from(s)));
        }
        for s in 0u32..=20 {
            assert_eq!(pass(&mut w, s), Ok((1u64 << 32) | u64::from(s)));
        }
        // Late copies from the end of subspace 0 (case B now) are inferred as subspace 0.
        assert_eq!(w.check(0xffff_ffff), Err(ReplayDrop::Duplicate));
        assert_eq!(w.check(0xffff_ff00), Err(ReplayDrop::Duplicate));
        // Reordered across the wrap: 2^32 + 25 arrives before 2^32 - 5.
        let mut w = ReplayWindow::new(true);
        assert_eq!(pass(&mut w, 0xffff_ff00), Ok(0xffff_ff00));
        assert_eq!(pass(&mut w, 25), Ok((1 << 32) + 25));
        assert_eq!(w.check(0xffff_fffb), Ok(0xffff_fffb));
        assert_eq!(pass(&mut w, 0xffff_fffb), Ok(0xffff_fffb));
        assert_eq!(w.check(0xffff_fffb), Err(ReplayDrop::Duplicate));
        assert_eq!(w.check(24), Ok((1 << 32) + 24));
        assert_eq!(w.top(), (1 << 32) + 25);
    }

    #[test]
    fn resume_leaves_numbers_above_highest_unseen() {
        let mut w = ReplayWindow::resume(false, 100);
        assert_eq!(pass(&mut w, 103), Ok(103));
        // 101 and 102 share 100's word: not marked by resume.
        assert_eq!(pass(&mut w, 101), Ok(101));
        assert_eq!(pass(&mut w, 102), Ok(102));
    }

    #[test]
    fn esn_case_b_in_subspace_zero_is_ahead() {
        // T = 5: case B with no subspace below. A large low part is ahead, in subspace 0.
        let mut w = ReplayWindow::new(true);
        assert_eq!(pass(&mut w, 5), Ok(5));
        assert_eq!(w.check(0xffff_ff00), Ok(0xffff_ff00));
        assert_eq!(w.check(3), Ok(3));
    }

    #[test]
    fn esn_end_of_number_space() {
        let w = ReplayWindow::resume(true, u64::MAX - 10);
        assert_eq!(w.check(u32::MAX), Ok(u64::MAX));
        // Would be subspace 2^32: past 2^64 - 1.
        assert_eq!(w.check(0), Err(ReplayDrop::TooOld));
        let mut w = ReplayWindow::resume(true, u64::MAX - 1);
        assert_eq!(pass(&mut w, u32::MAX), Ok(u64::MAX));
        assert_eq!(w.check(u32::MAX), Err(ReplayDrop::Duplicate));
    }

    #[test]
    fn resume_refuses_everything_up_to_highest() {
        let w = ReplayWindow::resume(false, 70_000);
        assert_eq!(w.check(70_000), Err(ReplayDrop::Duplicate));
        assert_eq!(w.check(69_000), Err(ReplayDrop::Duplicate));
        assert_eq!(w.check(1), Err(ReplayDrop::TooOld));
        assert_eq!(w.check(70_001), Ok(70_001));
    }

    /// The model: every number seen, and the highest. The 64-bit number a low part stands for
    /// is the one in [T - W + 1, T - W + 1 + 2^32) (appendix A2.2), or, when that is negative,
    /// the one 2^32 higher.
    struct Model {
        esn: bool,
        seen: HashSet<u64>,
        top: u64,
    }

    impl Model {
        fn new(esn: bool, top: u64) -> Self {
            let seen = (top.saturating_sub(W - 1)..=top).collect();
            Model { esn, seen, top }
        }

        fn infer(&self, low: u32) -> Option<u64> {
            if !self.esn {
                return Some(u64::from(low));
            }
            let bottom = i128::from(self.top) - i128::from(W) + 1;
            let span = 1i128 << 32;
            let low = i128::from(low);
            let mut x = bottom + (low - bottom).rem_euclid(span);
            if x < 0 {
                x += span;
            }
            u64::try_from(x).ok()
        }

        fn check(&self, low: u32) -> Result<u64, ReplayDrop> {
            let s = self.infer(low).ok_or(ReplayDrop::TooOld)?;
            if s > self.top {
                Ok(s)
            } else if self.top - s >= W {
                Err(ReplayDrop::TooOld)
            } else if self.seen.contains(&s) {
                Err(ReplayDrop::Duplicate)
            } else {
                Ok(s)
            }
        }

        fn accept(&mut self, s: u64) {
            self.seen.insert(s);
            self.top = self.top.max(s);
        }
    }

    /// A starting point: near zero, just below a subspace boundary, or anywhere.
    fn start() -> impl Strategy<Value = u64> {
        prop_oneof![
            Just(0u64),
            (0u64..3).prop_map(|h| (h << 32) + 0xffff_f000),
            (0u64..4).prop_map(|h| (h << 32) + 1000),
            any::<u64>().prop_map(|s| s >> 1),
        ]
    }

    /// An offset from the current top: mostly near the window, sometimes across subspaces.
    fn step() -> impl Strategy<Value = (i64, bool)> {
        let offset = prop_oneof![
            8 => -2100i64..2100,
            1 => -70_000i64..70_000,
            1 => prop_oneof![Just(1i64 << 32), Just((1i64 << 32) - 1), Just(-(1i64 << 32))],
        ];
        // The flag says whether the "ICV" verifies: a forged packet never reaches accept.
        (offset, prop::bool::weighted(0.8))
    }

    fn run(esn: bool, top0: u64, steps: Vec<(i64, bool)>) -> Result<(), TestCaseError> {
        let mut w = if top0 == 0 {
            ReplayWindow::new(esn)
        } else {
            ReplayWindow::resume(esn, top0)
        };
        let mut m = Model::new(esn, top0);
        for (offset, icv_ok) in steps {
            let target = i128::from(m.top) + i128::from(offset);
            if !(0..=i128::from(u64::MAX)).contains(&target) {
                continue;
            }
            let low = (target as u64) as u32;
            let got = w.check(low);
            prop_assert_eq!(got, m.check(low), "top {} low {}", m.top, low);
            if let Ok(s) = got {
                if icv_ok {
                    prop_assert_eq!(w.accept(s), Ok(()));
                    m.accept(s);
                }
            }
            prop_assert_eq!(w.top(), m.top);
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn matches_the_model_esn(top0 in start(), steps in prop::collection::vec(step(), 1..300)) {
            run(true, top0, steps)?;
        }

        #[test]
        fn matches_the_model_32bit(top0 in 0u64..=u64::from(u32::MAX),
                                   steps in prop::collection::vec(step(), 1..300)) {
            run(false, top0, steps)?;
        }

        /// The inference of appendix A2.2 recovers every number within 2^32 - W ahead of T and
        /// W - 1 behind it, from its low 32 bits alone.
        #[test]
        fn esn_inference_recovers(top in any::<u64>(), back in 0u64..W, ahead in 1u64..(1 << 32) - W) {
            let w = ReplayWindow::resume(true, top);
            if let Some(s) = top.checked_add(ahead) {
                prop_assert_eq!(w.check(s as u32), Ok(s));
            }
            if let Some(s) = top.checked_sub(back) {
                // Behind T: resume marked it seen, so it is a duplicate, of the right number.
                prop_assert_eq!(w.check(s as u32), Err(ReplayDrop::Duplicate));
                prop_assert_eq!(w.infer(s as u32), Ok(s));
            }
        }
    }
}
