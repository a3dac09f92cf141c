//! `Interleaver`: lines up per-leg PCM by sample position and hands out interleaved frames (one channel per
//! leg) for the writer, with silence where a leg had nothing.
//!
//! Policy, in the order it applies to a `push`:
//! - A channel outside `0..channels` is ignored (a caller bug, not audio).
//! - Positions are shifted by the leg's re-anchoring offset (0 unless a jump happened, below).
//! - Samples for positions already handed out by `drain_ready` are late: they cannot be placed any more and
//!   are counted in `late_samples()`. (The runtime drains behind real time, so this is rare.)
//! - Where the same position of a leg is pushed twice, the first write wins.
//! - A push starting more than `max_pending_frames` after everything buffered so far is a timestamp jump
//!   (no real leg runs that far ahead of the call clock): the leg is re-anchored so the push continues at
//!   the current end, and later pushes of that leg shift by the same offset. Nothing is dropped and a
//!   jump never allocates silence. Counted in `reanchored_jumps()`.
//! - Recording never drops audio: if a push ends more than `max_pending_frames` after the drain point, the
//!   oldest frames are forced out of the buffer into an output queue that the next `drain_ready` returns
//!   first (so it may return more frames than asked for; the frames still follow each other without gaps).
//!
//! Memory: between calls the buffer holds at most `max_pending_frames` frames (during a push, that plus the
//! push); the output queue holds only frames forced out since the last `drain_ready`, i.e. no more than what
//! was pushed in between; and one `drain_ready` produces at most 16 × `max_pending_frames` frames of silence
//! (a drain point further ahead than that is reached by skipping silence, counted).

use std::collections::VecDeque;

/// Frames the buffer may span before audio is forced out: 10 s at 48 kHz, 60 s at 8 kHz.
pub const DEFAULT_MAX_PENDING_FRAMES: u64 = 480_000;

/// How many times `max_pending_frames` of silence one `drain_ready` may produce at most.
const SILENCE_LIMIT_FACTOR: u64 = 16;

/// What happens where a write meets audio already placed on the channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Overlap {
    FirstWins,
    Sum,
}

/// Per-leg PCM at sample positions in, interleaved frames out (see the module docs for the policy).
#[derive(Debug)]
pub struct Interleaver {
    channels: usize,
    max_pending_frames: u64,
    /// Position of the first frame not handed out yet.
    drain_point: u64,
    /// Interleaved samples of the frames from `drain_point` on; silence where nothing was written.
    pending: VecDeque<i16>,
    /// Whether each sample in `pending` was written (first writer wins).
    written: VecDeque<bool>,
    /// Frames forced out of `pending` ahead of the next `drain_ready`.
    forced: Vec<i16>,
    /// Per-channel shift applied to positions after a timestamp jump.
    offsets: Vec<u64>,
    end_position: u64,
    late_samples: u64,
    reanchored_jumps: u64,
    skipped_silence_frames: u64,
}

impl Interleaver {
    /// An interleaver for `channels` legs with the default buffer bound.
    pub fn new(channels: usize) -> Interleaver {
        Interleaver::with_max_pending_frames(channels, DEFAULT_MAX_PENDING_FRAMES)
    }

    /// An interleaver whose buffer spans at most `max_pending_frames` (at least 1) frames.
    pub fn with_max_pending_frames(channels: usize, max_pending_frames: u64) -> Interleaver {
        Interleaver {
            channels,
            max_pending_frames: max_pending_frames.max(1),
            drain_point: 0,
            pending: VecDeque::new(),
            written: VecDeque::new(),
            forced: Vec::new(),
            offsets: vec![0; channels],
            end_position: 0,
            late_samples: 0,
            reanchored_jumps: 0,
            skipped_silence_frames: 0,
        }
    }

    /// Places `samples` of leg `channel` starting at sample `position` of the call; where the channel
    /// already holds audio for a position, the first write wins (a leg's own overlaps).
    pub fn push(&mut self, channel: usize, position: u64, samples: &[i16]) {
        self.place(channel, position, samples, Overlap::FirstWins);
    }

    /// Like [`Interleaver::push`], but where the channel already holds audio the two are summed
    /// (saturating): for a channel that carries more than one leg, so neither leg's audio is lost.
    pub fn mix(&mut self, channel: usize, position: u64, samples: &[i16]) {
        self.place(channel, position, samples, Overlap::Sum);
    }

    fn place(&mut self, channel: usize, position: u64, samples: &[i16], overlap: Overlap) {
        let Some(offset) = self.offsets.get_mut(channel) else {
            return;
        };
        if samples.is_empty() {
            return;
        }
        let mut position = position.saturating_sub(*offset);
        let buffered_end = self.end_position.max(self.drain_point);
        if position > buffered_end.saturating_add(self.max_pending_frames) {
            *offset = offset.saturating_add(position - buffered_end);
            position = buffered_end;
            self.reanchored_jumps += 1;
        }
        let skipped = usize::try_from(self.drain_point.saturating_sub(position)).unwrap_or(usize::MAX);
        let Some(samples) = samples.get(skipped..).filter(|rest| !rest.is_empty()) else {
            self.late_samples += samples.len() as u64;
            return;
        };
        self.late_samples += skipped as u64;
        let start = position.max(self.drain_point);
        let end = start.saturating_add(samples.len() as u64);
        self.end_position = self.end_position.max(end);
        let needed = usize::try_from(end - self.drain_point)
            .unwrap_or(usize::MAX)
            .saturating_mul(self.channels);
        if self.pending.len() < needed {
            self.pending.resize(needed, 0);
            self.written.resize(needed, false);
        }
        let first_slot =
            usize::try_from(start - self.drain_point).unwrap_or(usize::MAX) * self.channels + channel;
        let slots = self
            .pending
            .range_mut(first_slot..)
            .zip(self.written.range_mut(first_slot..));
        for ((value, written), sample) in slots.step_by(self.channels).zip(samples) {
            match (*written, overlap) {
                (false, _) => *value = *sample,
                (true, Overlap::Sum) => *value = value.saturating_add(*sample),
                (true, Overlap::FirstWins) => {}
            }
            *written = true;
        }
        if end - self.drain_point > self.max_pending_frames {
            self.force_out_until(end - self.max_pending_frames);
        }
    }

    /// Moves frames before `until` out of the buffer into the forced output.
    fn force_out_until(&mut self, until: u64) {
        let frames = until.saturating_sub(self.drain_point);
        let samples = usize::try_from(frames)
            .unwrap_or(usize::MAX)
            .saturating_mul(self.channels);
        let buffered = samples.min(self.pending.len());
        self.forced.extend(self.pending.drain(..buffered));
        self.written.drain(..buffered);
        self.forced.resize(self.forced.len() + (samples - buffered), 0);
        self.drain_point = until.max(self.drain_point);
    }

    /// Interleaved frames from the previous drain point up to `until` (exclusive), silence where no leg
    /// wrote, preceded by any frames forced out early. Returns nothing new when `until` was reached already.
    ///
    /// Memory guard: one call produces at most `SILENCE_LIMIT_FACTOR × max_pending_frames` frames of
    /// trailing silence; a drain point further ahead (a caller clock gone wrong) is reached by skipping the
    /// rest, counted in `skipped_silence_frames()`.
    pub fn drain_ready(&mut self, until: u64) -> Vec<i16> {
        let buffered_frames = (self.pending.len() / self.channels.max(1)) as u64;
        let limit = self
            .drain_point
            .saturating_add(buffered_frames)
            .saturating_add(self.max_pending_frames.saturating_mul(SILENCE_LIMIT_FACTOR));
        self.force_out_until(until.min(limit));
        if until > self.drain_point {
            self.skipped_silence_frames += until - self.drain_point;
            self.drain_point = until;
        }
        std::mem::take(&mut self.forced)
    }

    /// Frames of silence `drain_ready` skipped instead of producing (see there).
    pub fn skipped_silence_frames(&self) -> u64 {
        self.skipped_silence_frames
    }

    /// One past the highest position pushed so far (after re-anchoring): drain up to here at the end of a
    /// call to get every sample.
    pub fn end_position(&self) -> u64 {
        self.end_position
    }

    /// Samples that arrived for positions already drained.
    pub fn late_samples(&self) -> u64 {
        self.late_samples
    }

    /// Timestamp jumps a leg was re-anchored for.
    pub fn reanchored_jumps(&self) -> u64 {
        self.reanchored_jumps
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleaves_with_silence_in_gaps() {
        let mut interleaver = Interleaver::new(2);
        interleaver.push(0, 0, &[1, 2, 3]);
        interleaver.push(1, 1, &[10, 20]);
        assert_eq!(interleaver.drain_ready(4), vec![1, 0, 2, 10, 3, 20, 0, 0]);
        assert_eq!(interleaver.drain_ready(4), Vec::<i16>::new());
        assert_eq!(interleaver.drain_ready(5), vec![0, 0]);
        assert_eq!(interleaver.end_position(), 3);
    }

    #[test]
    fn first_writer_wins_and_late_audio_is_counted() {
        let mut interleaver = Interleaver::new(1);
        interleaver.push(0, 0, &[1, 2]);
        interleaver.push(0, 1, &[9, 3]);
        assert_eq!(interleaver.drain_ready(2), vec![1, 2]);
        interleaver.push(0, 0, &[7, 7, 7, 4]);
        assert_eq!(interleaver.late_samples(), 2);
        assert_eq!(interleaver.drain_ready(4), vec![3, 4]);
    }

    #[test]
    fn ignores_unknown_channels_and_empty_pushes() {
        let mut interleaver = Interleaver::new(1);
        interleaver.push(1, 0, &[5]);
        interleaver.push(0, 0, &[]);
        assert_eq!(interleaver.end_position(), 0);
        assert_eq!(interleaver.drain_ready(1), vec![0]);
    }

    #[test]
    fn a_leg_running_ahead_forces_frames_out_without_losing_any() {
        let mut interleaver = Interleaver::with_max_pending_frames(2, 4);
        interleaver.push(1, 0, &[10, 11]);
        interleaver.push(0, 0, &[1, 2, 3, 4, 5, 6]);
        interleaver.push(1, 2, &[12, 13, 14, 15]);
        // Frames 0..2 were forced out by the long push on channel 0; the call asks for frames up to 3.
        assert_eq!(interleaver.drain_ready(3), vec![1, 10, 2, 11, 3, 12]);
        assert_eq!(interleaver.drain_ready(6), vec![4, 13, 5, 14, 6, 15]);
        assert_eq!(interleaver.late_samples(), 0);
    }

    #[test]
    fn a_push_longer_than_the_buffer_is_kept_whole() {
        let mut interleaver = Interleaver::with_max_pending_frames(1, 2);
        let samples: Vec<i16> = (0..10).collect();
        interleaver.push(0, 0, &samples);
        assert_eq!(interleaver.drain_ready(10), samples);
    }

    #[test]
    fn a_timestamp_jump_reanchors_the_leg_instead_of_allocating_silence() {
        let mut interleaver = Interleaver::with_max_pending_frames(2, 100);
        interleaver.push(0, 0, &[1, 2]);
        interleaver.push(1, 1 << 50, &[7, 8]);
        interleaver.push(1, (1 << 50) + 2, &[9]);
        assert_eq!(interleaver.reanchored_jumps(), 1);
        assert_eq!(interleaver.end_position(), 5);
        assert_eq!(interleaver.drain_ready(5), vec![1, 0, 2, 0, 0, 7, 0, 8, 0, 9]);
    }

    #[test]
    fn an_absurd_drain_point_skips_silence_instead_of_allocating_it() {
        let mut interleaver = Interleaver::with_max_pending_frames(1, 2);
        interleaver.push(0, 0, &[1]);
        let frames = interleaver.drain_ready(u64::MAX);
        assert_eq!(frames.len() as u64, 1 + 2 * SILENCE_LIMIT_FACTOR);
        assert_eq!(
            interleaver.skipped_silence_frames(),
            u64::MAX - frames.len() as u64
        );
        interleaver.push(0, 5, &[2]);
        assert_eq!(interleaver.late_samples(), 1);
    }

    #[test]
    fn mix_sums_where_a_channel_already_holds_audio() {
        let mut interleaver = Interleaver::new(1);
        interleaver.push(0, 0, &[100, 200, i16::MAX]);
        interleaver.mix(0, 1, &[5, 10, 20]);
        interleaver.push(0, 0, &[-1, -1]);
        assert_eq!(interleaver.drain_ready(4), vec![100, 205, i16::MAX, 20]);
    }
}
