//! Per-SSRC state of one crypto context: the highest authenticated packet index (which carries the ROC),
//! index estimation (RFC 3711 §3.3.1, Appendix A) and the replay window (§3.3.2), in a table of bounded
//! size that evicts the least recently authenticated SSRC when full.

use super::SrtpError;

/// Half the sequence-number space: the reordering distance the index estimate tolerates.
const HALF_SEQ: i64 = 1 << 15;
const WORD_BITS: usize = 64;

#[derive(Debug)]
struct Stream {
    ssrc: u32,
    /// Highest accepted packet index (ROC · 2^16 + SEQ).
    highest: u64,
    /// Bit `i % window` says whether index `i` (within `window` of `highest`) was accepted.
    seen: Box<[u64]>,
    /// Value of [`Streams::clock`] when this SSRC last had a packet accepted.
    last_used: u64,
}

impl Stream {
    fn bit(&self, index: u64) -> (usize, u64) {
        let position = (index % (self.seen.len() * WORD_BITS) as u64) as usize;
        (position / WORD_BITS, 1 << (position % WORD_BITS))
    }

    fn is_seen(&self, index: u64) -> bool {
        let (word, mask) = self.bit(index);
        self.seen.get(word).is_some_and(|bits| bits & mask != 0)
    }

    fn set(&mut self, index: u64, value: bool) {
        let (word, mask) = self.bit(index);
        if let Some(bits) = self.seen.get_mut(word) {
            if value {
                *bits |= mask;
            } else {
                *bits &= !mask;
            }
        }
    }
}

#[derive(Debug)]
pub(super) struct Streams {
    entries: Vec<Stream>,
    max_ssrcs: usize,
    /// Replay window in packets, a multiple of 64.
    window: u64,
    clock: u64,
}

impl Streams {
    pub(super) fn new(window: usize, max_ssrcs: usize) -> Streams {
        Streams {
            entries: Vec::with_capacity(max_ssrcs),
            max_ssrcs,
            window: window.div_ceil(WORD_BITS).max(1) as u64 * WORD_BITS as u64,
            clock: 0,
        }
    }

    fn get(&self, ssrc: u32) -> Option<&Stream> {
        self.entries.iter().find(|stream| stream.ssrc == ssrc)
    }

    /// The packet index of `seq` for `ssrc`: the one closest to the highest accepted index (RFC 3711
    /// Appendix A). A new SSRC starts with ROC 0. An index that would lie before 0 is [`SrtpError::TooOld`].
    pub(super) fn estimate(&self, ssrc: u32, seq: u16) -> Result<u64, SrtpError> {
        let Some(stream) = self.get(ssrc) else {
            return Ok(u64::from(seq));
        };
        let roc = (stream.highest >> 16) as i64;
        let s_l = (stream.highest & 0xFFFF) as i64;
        let seq = i64::from(seq);
        let guessed_roc = if s_l < HALF_SEQ {
            if seq - s_l > HALF_SEQ { roc - 1 } else { roc }
        } else if s_l - HALF_SEQ > seq {
            roc + 1
        } else {
            roc
        };
        u64::try_from((guessed_roc << 16) + seq).map_err(|_| SrtpError::TooOld)
    }

    /// Whether `index` of `ssrc` may be accepted: not a duplicate, not behind the replay window.
    pub(super) fn check_replay(&self, ssrc: u32, index: u64) -> Result<(), SrtpError> {
        let Some(stream) = self.get(ssrc) else {
            return Ok(());
        };
        if index > stream.highest {
            Ok(())
        } else if stream.highest - index >= self.window {
            Err(SrtpError::TooOld)
        } else if stream.is_seen(index) {
            Err(SrtpError::Replayed)
        } else {
            Ok(())
        }
    }

    /// Records `index` of `ssrc` as accepted (after authentication), creating the SSRC's state — and
    /// evicting the least recently used SSRC if the table is full — when it is new.
    pub(super) fn accept(&mut self, ssrc: u32, index: u64) {
        self.clock += 1;
        let clock = self.clock;
        let window = self.window;
        let position = match self.entries.iter().position(|stream| stream.ssrc == ssrc) {
            Some(position) => position,
            None => {
                if self.entries.len() >= self.max_ssrcs
                    && let Some(oldest) = self
                        .entries
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, stream)| stream.last_used)
                        .map(|(position, _)| position)
                {
                    self.entries.swap_remove(oldest);
                }
                self.entries.push(Stream {
                    ssrc,
                    highest: index,
                    seen: vec![0; (window / WORD_BITS as u64) as usize].into_boxed_slice(),
                    last_used: clock,
                });
                self.entries.len() - 1
            }
        };
        let Some(stream) = self.entries.get_mut(position) else {
            return;
        };
        if index > stream.highest {
            let advance = index - stream.highest;
            if advance >= window {
                stream.seen.fill(0);
            } else {
                for entering in stream.highest + 1..index {
                    stream.set(entering, false);
                }
            }
            stream.highest = index;
        }
        stream.set(index, true);
        stream.last_used = clock;
    }

    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_estimation_follows_appendix_a() {
        let mut streams = Streams::new(128, 4);
        assert_eq!(streams.estimate(7, 65_000), Ok(65_000));
        streams.accept(7, 65_000);
        // Forward across the wrap: ROC + 1.
        assert_eq!(streams.estimate(7, 3), Ok(65_536 + 3));
        streams.accept(7, 65_539);
        // A late packet from before the wrap: ROC - 1.
        assert_eq!(streams.estimate(7, 65_530), Ok(65_530));
        assert_eq!(streams.estimate(7, 100), Ok(65_536 + 100));
        // Before index 0 there is nothing.
        let mut fresh = Streams::new(128, 4);
        fresh.accept(1, 10);
        assert_eq!(fresh.estimate(1, 60_000), Err(SrtpError::TooOld));
    }

    #[test]
    fn replay_window_rejects_duplicates_and_stale_packets() {
        let mut streams = Streams::new(100, 4); // rounded up to 128
        for index in [1000, 998, 1001] {
            assert_eq!(streams.check_replay(1, index), Ok(()));
            streams.accept(1, index);
        }
        assert_eq!(streams.check_replay(1, 1000), Err(SrtpError::Replayed));
        assert_eq!(streams.check_replay(1, 998), Err(SrtpError::Replayed));
        assert_eq!(streams.check_replay(1, 999), Ok(()));
        assert_eq!(streams.check_replay(1, 1001 - 127), Ok(()));
        assert_eq!(streams.check_replay(1, 1001 - 128), Err(SrtpError::TooOld));
        // Jumping ahead forgets bits that left the window.
        streams.accept(1, 1001 + 128 + 998 % 128);
        assert_eq!(streams.check_replay(1, 1001 + 128), Ok(()));
        streams.accept(1, 100_000);
        assert_eq!(streams.check_replay(1, 100_000 - 1), Ok(()));
        assert_eq!(streams.check_replay(2, 5), Ok(()));
    }

    #[test]
    fn the_least_recently_used_ssrc_is_evicted() {
        let mut streams = Streams::new(64, 2);
        streams.accept(1, 10);
        streams.accept(2, 10);
        streams.accept(1, 11);
        streams.accept(3, 10); // evicts 2
        assert_eq!(streams.len(), 2);
        assert_eq!(streams.check_replay(2, 10), Ok(()));
        assert_eq!(streams.check_replay(1, 11), Err(SrtpError::Replayed));
        assert_eq!(streams.check_replay(3, 10), Err(SrtpError::Replayed));
    }
}
