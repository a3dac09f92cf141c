//! In-band DTMF: a tone detector ([`DtmfDetector`]) and a streaming masker ([`DtmfMasker`]) for 8 kHz and
//! 16 kHz mono 16-bit PCM. This module owns finding DTMF digits in decoded audio and silencing them in the
//! audio a recorder keeps; it does not own RFC 4733 telephone-events (those arrive as RTP packets, see
//! `airlock-rtp`), the payment-context policy, or wiring into the recorder. Pure code: no I/O, no clock;
//! time is the sample position the caller passes (the detector) or counts from zero (the masker).
//!
//! # Privacy
//!
//! A detected digit ([`DtmfTone::digit`]) is card or PIN material. It is handed to the caller only so that
//! it can decide, in memory, whether a payment context is active. It must never be logged, traced,
//! exported as a metric label, persisted or sent anywhere. [`DtmfTone`]'s `Debug` prints the digit as
//! `<redacted>` so that a stray `{:?}` cannot leak it; nothing in this module formats it.
//!
//! # Detection (ITU-T Q.23 frequencies, Q.24 acceptance)
//!
//! * **Blocks.** Goertzel filters at the eight DTMF frequencies run over blocks of 102 samples at 8 kHz
//!   (204 at 16 kHz) = 12.75 ms, evaluated every half block (hop 6.4 ms). 12.75 ms gives bins 78.4 Hz
//!   apart, so the neighbouring row tones (73, 82, 89 Hz apart) fall near the first null of the
//!   rectangular window (≈ −19 dB or lower) while a 40 ms tone still spans several blocks.
//! * **Per-block checks.** The strongest row tone and the strongest column tone must each be at least
//!   [`MIN_TONE_LEVEL_DBM0`] (−33 dBm0, 8 dB under the −25 dBm0 a sender may use); the twist is limited to
//!   8 dB forward (column above row) and 4 dB reverse (row above column); each of the two must be
//!   [`PEAK_MARGIN_DB`] above every other tone of its group; and the two tones must carry at least
//!   [`ENERGY_RATIO`] of the block's total energy. The energy ratio is the talk-off defence: speech spreads
//!   its energy over harmonics and formants, a DTMF pair puts it all in two 78 Hz wide bins. It also
//!   rejects blocks only partly covered by a tone, which makes the block count a duration measure.
//! * **Duration.** A digit needs [`MIN_BLOCKS`] (5) consecutive valid blocks of the same digit, one
//!   invalid block is bridged (a dropout), and two consecutive invalid blocks or a different digit end it.
//!   In quiet conditions tones of 40 ms are always accepted and tones of 23 ms or less always rejected
//!   (Q.24: accept ≥ 40 ms, reject < 23 ms); the tests check both at every block alignment.
//!
//! A tone is reported when it ends (or at [`DtmfDetector::flush`]) as the span of the valid blocks that
//! held it; since a block counts once most of it holds the tone, the real tone may extend a few
//! milliseconds beyond either end, which the masker's guard covers.
//!
//! # Masking
//!
//! [`DtmfMasker`] delays audio by [`MASK_DELAY_MS`] (60 ms) in a fixed ring buffer and replaces each
//! detected tone, widened by [`MASK_GUARD_MS`] (20 ms) on each side, with digital silence (zeros; comfort
//! noise is not needed for recordings, and silence makes the masking auditable). The output has as many
//! samples as the input, delayed by exactly the constant; every other sample passes bit-exact. The delay
//! is long enough that a tone is confirmed before its first guarded sample leaves the buffer, and the
//! output depends only on the input samples, never on how they were split into chunks.

use std::collections::VecDeque;
use std::fmt;

/// Digits by row (697, 770, 852, 941 Hz) and column (1209, 1336, 1477, 1633 Hz).
const DIGITS: [[char; 4]; 4] = [
    ['1', '2', '3', 'A'],
    ['4', '5', '6', 'B'],
    ['7', '8', '9', 'C'],
    ['*', '0', '#', 'D'],
];
const ROW_HZ: [f32; 4] = [697.0, 770.0, 852.0, 941.0];
const COLUMN_HZ: [f32; 4] = [1209.0, 1336.0, 1477.0, 1633.0];

/// Analysis block length in milliseconds: 102 samples at 8 kHz, 204 at 16 kHz.
pub const BLOCK_MS: f32 = 12.75;
/// Minimum level of each of the two tones, in dBm0 (a full-scale 16-bit sine is +3.17 dBm0, as in G.711).
pub const MIN_TONE_LEVEL_DBM0: f32 = -33.0;
/// Largest accepted excess of the column tone over the row tone, in dB.
pub const FORWARD_TWIST_DB: f32 = 8.0;
/// Largest accepted excess of the row tone over the column tone, in dB.
pub const REVERSE_TWIST_DB: f32 = 4.0;
/// How far the strongest row (column) tone must stand above every other row (column) tone, in dB.
pub const PEAK_MARGIN_DB: f32 = 8.0;
/// Share of the block's energy the two tones must carry.
pub const ENERGY_RATIO: f32 = 0.6;
/// Consecutive valid blocks (one hop, half a block, apart) needed to accept a digit.
pub const MIN_BLOCKS: u32 = 5;
/// Consecutive invalid blocks that end a digit (one is bridged as a dropout).
const END_BLOCKS: u32 = 2;
/// Delay of [`DtmfMasker`]'s output behind its input, in milliseconds.
pub const MASK_DELAY_MS: u32 = 60;
/// Silence added before and after each detected tone by [`DtmfMasker`], in milliseconds.
pub const MASK_GUARD_MS: u32 = 20;

/// Amplitude of a 0 dBm0 sine in 16-bit PCM (full scale is +3.17 dBm0).
const DBM0_AMPLITUDE: f32 = 22_713.0;

/// Why a detector or masker cannot be used as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DtmfError {
    #[error("DTMF detection supports 8000 and 16000 Hz mono PCM, not {0} Hz")]
    UnsupportedRate(u32),
    #[error("samples at position {got} overlap samples already analysed (next expected: {expected})")]
    PositionBackwards { expected: u64, got: u64 },
}

/// One detected DTMF tone: `[start_sample, end_sample)` in the caller's sample positions.
///
/// `digit` is sensitive (card numbers, PINs): keep it in memory for the payment-context decision only and
/// never log, trace, persist or export it. `Debug` redacts it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct DtmfTone {
    /// `0`–`9`, `*`, `#` or `A`–`D`. Never log it.
    pub digit: char,
    /// Position of the first sample of the first block that held the tone.
    pub start_sample: u64,
    /// Position one past the last sample of the last block that held the tone.
    pub end_sample: u64,
}

impl fmt::Debug for DtmfTone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DtmfTone")
            .field("digit", &format_args!("<redacted>"))
            .field("start_sample", &self.start_sample)
            .field("end_sample", &self.end_sample)
            .finish()
    }
}

/// Largest block length (16 kHz).
const MAX_BLOCK: usize = 204;

/// A digit being followed across blocks.
#[derive(Debug, Clone, Copy)]
struct Track {
    row: usize,
    column: usize,
    start: u64,
    last_end: u64,
    valid_blocks: u32,
    misses: u32,
}

impl Track {
    fn confirmed(&self) -> bool {
        self.valid_blocks >= MIN_BLOCKS
    }

    fn tone(&self) -> DtmfTone {
        DtmfTone {
            digit: DIGITS[self.row][self.column],
            start_sample: self.start,
            end_sample: self.last_end,
        }
    }
}

/// Sans-IO in-band DTMF detector for 8 kHz or 16 kHz mono 16-bit PCM (see the module docs for the method).
///
/// Feed samples with [`push`](Self::push) in chunks of any size, each with the position of its first
/// sample; positions must not go backwards. A jump forward is a gap: what was being tracked is ended as if
/// the stream had been flushed. Tones are returned as they end; [`flush`](Self::flush) ends the stream.
/// State is a fixed 204-sample window plus a few counters.
#[derive(Debug, Clone)]
pub struct DtmfDetector {
    sample_rate: u32,
    block_len: usize,
    hop: usize,
    row_coefficients: [f32; 4],
    column_coefficients: [f32; 4],
    /// Goertzel power (energy of the tone over one block) of a tone at the minimum level.
    min_power: f32,
    window: [f32; MAX_BLOCK],
    /// Ring index of the oldest sample in `window`.
    write: usize,
    /// Samples in `window` since the last reset, up to `block_len`.
    filled: usize,
    since_hop: usize,
    next_position: Option<u64>,
    track: Option<Track>,
}

impl DtmfDetector {
    /// A detector for `sample_rate` Hz (8000 or 16000).
    pub fn new(sample_rate: u32) -> Result<Self, DtmfError> {
        let block_len = match sample_rate {
            8000 => 102,
            16000 => 204,
            other => return Err(DtmfError::UnsupportedRate(other)),
        };
        let coefficient = |hz: f32| 2.0 * (2.0 * std::f32::consts::PI * hz / sample_rate as f32).cos();
        let min_amplitude = DBM0_AMPLITUDE * 10f32.powf(MIN_TONE_LEVEL_DBM0 / 20.0);
        Ok(Self {
            sample_rate,
            block_len,
            hop: block_len / 2,
            row_coefficients: ROW_HZ.map(coefficient),
            column_coefficients: COLUMN_HZ.map(coefficient),
            min_power: min_amplitude * min_amplitude * block_len as f32 / 2.0,
            window: [0.0; MAX_BLOCK],
            write: 0,
            filled: 0,
            since_hop: 0,
            next_position: None,
            track: None,
        })
    }

    /// The sample rate given at construction.
    pub fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    /// Analyses `samples`, the first of which is at position `position`, and appends to `tones` every
    /// tone that ended within them (at most one per [`MIN_BLOCKS`] hops), in order.
    pub fn push(
        &mut self,
        position: u64,
        samples: &[i16],
        tones: &mut Vec<DtmfTone>,
    ) -> Result<(), DtmfError> {
        if let Some(expected) = self.next_position {
            if position < expected {
                return Err(DtmfError::PositionBackwards {
                    expected,
                    got: position,
                });
            }
            if position > expected {
                self.flush(tones);
            }
        }
        self.next_position = Some(position);
        self.push_contiguous(samples, tones);
        Ok(())
    }

    /// Where the tone being followed began, confirmed or not yet (a caller that must not release audio
    /// before knowing whether it holds a tone waits for this); `None` when no tone is in progress.
    pub fn tone_in_progress_since(&self) -> Option<u64> {
        self.track.map(|track| track.start)
    }

    /// Ends the stream: reports the tone in progress if it was long enough and resets the analysis, so
    /// the next [`push`](Self::push) starts afresh (at any position not before the end of this one).
    pub fn flush(&mut self, tones: &mut Vec<DtmfTone>) {
        if let Some(track) = self.track.take()
            && track.confirmed()
        {
            tones.push(track.tone());
        }
        self.write = 0;
        self.filled = 0;
        self.since_hop = 0;
    }

    /// Analyses samples that continue the stream (the caller has checked the position).
    fn push_contiguous(&mut self, samples: &[i16], tones: &mut Vec<DtmfTone>) {
        for &sample in samples {
            self.window[self.write] = f32::from(sample);
            self.write = (self.write + 1) % self.block_len;
            self.filled = (self.filled + 1).min(self.block_len);
            self.since_hop += 1;
            let position = self.next_position.unwrap_or(0).saturating_add(1);
            self.next_position = Some(position);
            if self.since_hop == self.hop {
                self.since_hop = 0;
                if self.filled == self.block_len {
                    self.end_of_block(position, tones);
                }
            }
        }
    }

    /// Samples until the detector next evaluates a block (its state changes only then); at least 1.
    fn samples_to_next_block(&self) -> usize {
        self.hop - self.since_hop
    }

    /// Start of the confirmed tone in progress, if any.
    fn confirmed_start(&self) -> Option<u64> {
        self.track.filter(Track::confirmed).map(|track| track.start)
    }

    /// Evaluates the block ending (exclusively) at `end` and advances the digit tracking.
    fn end_of_block(&mut self, end: u64, tones: &mut Vec<DtmfTone>) {
        let found = self.classify();
        let start = end.saturating_sub(self.block_len as u64);
        match (self.track.as_mut(), found) {
            (Some(track), Some((row, column))) if track.row == row && track.column == column => {
                track.valid_blocks += 1;
                track.last_end = end;
                track.misses = 0;
            }
            (Some(track), None) => {
                track.misses += 1;
                if track.misses >= END_BLOCKS {
                    self.end_track(tones);
                }
            }
            (_, Some((row, column))) => {
                self.end_track(tones);
                self.track = Some(Track {
                    row,
                    column,
                    start,
                    last_end: end,
                    valid_blocks: 1,
                    misses: 0,
                });
            }
            (None, None) => {}
        }
    }

    fn end_track(&mut self, tones: &mut Vec<DtmfTone>) {
        if let Some(track) = self.track.take()
            && track.confirmed()
        {
            tones.push(track.tone());
        }
    }

    /// The (row, column) of a valid DTMF pair in the current window, if the block passes every check.
    fn classify(&self) -> Option<(usize, usize)> {
        let (older, newer) = self.window[..self.block_len].split_at(self.write);
        let mut rows = [[0f32; 2]; 4];
        let mut columns = [[0f32; 2]; 4];
        let mut energy = 0f32;
        for &x in newer.iter().chain(older.iter()) {
            energy += x * x;
            for (state, &c) in rows.iter_mut().zip(&self.row_coefficients) {
                let s = x + c * state[0] - state[1];
                *state = [s, state[0]];
            }
            for (state, &c) in columns.iter_mut().zip(&self.column_coefficients) {
                let s = x + c * state[0] - state[1];
                *state = [s, state[0]];
            }
        }
        // |X|² = s1² + s2² − c·s1·s2; 2|X|²/N is the tone's energy over the block.
        let scale = 2.0 / self.block_len as f32;
        let power = |states: &[[f32; 2]; 4], coefficients: &[f32; 4]| {
            let mut out = [0f32; 4];
            for ((slot, state), &c) in out.iter_mut().zip(states).zip(coefficients) {
                *slot = (state[0] * state[0] + state[1] * state[1] - c * state[0] * state[1]) * scale;
            }
            out
        };
        let row_power = power(&rows, &self.row_coefficients);
        let column_power = power(&columns, &self.column_coefficients);
        let (row, row_peak) = strongest(&row_power)?;
        let (column, column_peak) = strongest(&column_power)?;
        let db = |value: f32| 10f32.powf(value / 10.0);
        let valid = row_peak >= self.min_power
            && column_peak >= self.min_power
            && column_peak <= row_peak * db(FORWARD_TWIST_DB)
            && row_peak <= column_peak * db(REVERSE_TWIST_DB)
            && stands_out(&row_power, row, row_peak / db(PEAK_MARGIN_DB))
            && stands_out(&column_power, column, column_peak / db(PEAK_MARGIN_DB))
            && row_peak + column_peak >= ENERGY_RATIO * energy;
        valid.then_some((row, column))
    }
}

/// Index and value of the largest of four finite powers.
fn strongest(power: &[f32; 4]) -> Option<(usize, f32)> {
    power
        .iter()
        .copied()
        .enumerate()
        .filter(|(_, p)| p.is_finite())
        .max_by(|a, b| a.1.total_cmp(&b.1))
}

/// Whether every power but `peak_index` is at most `limit`.
fn stands_out(power: &[f32; 4], peak_index: usize, limit: f32) -> bool {
    power
        .iter()
        .enumerate()
        .all(|(index, &p)| index == peak_index || p <= limit)
}

/// Streaming DTMF masker: delays audio by [`MASK_DELAY_MS`] and silences detected tones plus
/// [`MASK_GUARD_MS`] on each side (see the module docs). Sample positions count from 0 at construction.
///
/// Memory is fixed at construction: the delay line (480 samples at 8 kHz, 960 at 16 kHz) and the detector.
/// The detected tones are also returned so that the caller can make its payment-context decision; their
/// digits must never be logged.
#[derive(Debug, Clone)]
pub struct DtmfMasker {
    detector: DtmfDetector,
    delay_line: Box<[i16]>,
    guard: u64,
    /// Input samples consumed so far (the position of the next one).
    input_position: u64,
    /// Closed masked spans `[start, end)` (guards included) not yet fully output. Each needs at least
    /// [`MIN_BLOCKS`] + 1 hops of input, so at most three fit in the delay plus guard.
    spans: VecDeque<(u64, u64)>,
}

impl DtmfMasker {
    /// A masker for `sample_rate` Hz (8000 or 16000).
    pub fn new(sample_rate: u32) -> Result<Self, DtmfError> {
        let detector = DtmfDetector::new(sample_rate)?;
        let per_ms = u64::from(sample_rate / 1000);
        let delay = per_ms * u64::from(MASK_DELAY_MS);
        Ok(Self {
            detector,
            delay_line: vec![0; delay as usize].into_boxed_slice(),
            guard: per_ms * u64::from(MASK_GUARD_MS),
            input_position: 0,
            spans: VecDeque::with_capacity(4),
        })
    }

    /// Where the tone being followed began (input position), confirmed or not yet; see
    /// [`DtmfDetector::tone_in_progress_since`].
    pub fn tone_in_progress_since(&self) -> Option<u64> {
        self.detector.tone_in_progress_since()
    }

    /// The delay of the output behind the input, in samples ([`MASK_DELAY_MS`] at this rate).
    pub fn delay_samples(&self) -> usize {
        self.delay_line.len()
    }

    /// Consumes `input` and appends exactly `input.len()` samples to `output`: the input from
    /// [`delay_samples`](Self::delay_samples) earlier (zeros before the stream began), with tones masked.
    /// Appends the tones that ended within `input` to `tones`.
    pub fn push(&mut self, input: &[i16], output: &mut Vec<i16>, tones: &mut Vec<DtmfTone>) {
        output.reserve(input.len());
        let mut rest = input;
        while !rest.is_empty() {
            // The detector's state changes only at block ends, so each piece is masked with the state
            // that holds for all of it, whatever the chunking.
            let (piece, tail) = rest.split_at(self.detector.samples_to_next_block().min(rest.len()));
            self.shift(piece, output);
            let first = tones.len();
            self.detector.push_contiguous(piece, tones);
            self.note_tones(&tones[first..]);
            rest = tail;
        }
    }

    /// Ends the stream: appends the last [`delay_samples`](Self::delay_samples) samples still in the delay
    /// line (masked), and the tone in progress if it qualifies. Afterwards the masker starts afresh.
    pub fn flush(&mut self, output: &mut Vec<i16>, tones: &mut Vec<DtmfTone>) {
        let first = tones.len();
        self.detector.flush(tones);
        self.note_tones(&tones[first..]);
        let delay = self.delay_line.len();
        let end = self.input_position + delay as u64;
        output.reserve(delay);
        for position in self.input_position..end {
            let index = (position % delay as u64) as usize;
            let leaving = position.checked_sub(delay as u64);
            let masked = leaving.is_some_and(|position| self.is_masked(position));
            output.push(if masked { 0 } else { self.delay_line[index] });
            self.delay_line[index] = 0;
        }
        self.input_position = end;
        self.spans.clear();
        // The detector continues from here, after the zeros that flushed the delay line.
        self.detector.next_position = Some(end);
    }

    fn note_tones(&mut self, tones: &[DtmfTone]) {
        for tone in tones {
            self.spans.push_back((
                tone.start_sample.saturating_sub(self.guard),
                tone.end_sample.saturating_add(self.guard),
            ));
        }
    }

    /// Moves `piece` into the delay line and the samples it displaces (masked) into `output`.
    fn shift(&mut self, piece: &[i16], output: &mut Vec<i16>) {
        let delay = self.delay_line.len() as u64;
        for &sample in piece {
            let index = (self.input_position % delay) as usize;
            let leaving = self.input_position.checked_sub(delay);
            let masked = leaving.is_some_and(|position| self.is_masked(position));
            output.push(if masked { 0 } else { self.delay_line[index] });
            self.delay_line[index] = sample;
            self.input_position += 1;
        }
    }

    /// Whether the sample at `position` (about to leave the delay line) lies in a masked span; forgets
    /// spans that end before it.
    fn is_masked(&mut self, position: u64) -> bool {
        while self.spans.front().is_some_and(|&(_, end)| end <= position) {
            self.spans.pop_front();
        }
        let in_closed = self
            .spans
            .iter()
            .any(|&(start, end)| start <= position && position < end);
        let in_open = self
            .detector
            .confirmed_start()
            .is_some_and(|start| start.saturating_sub(self.guard) <= position);
        in_closed || in_open
    }
}

// The delay must let a tone be confirmed (MIN_BLOCKS blocks after its first valid block starts) before its
// guarded start leaves the delay line: block + (MIN_BLOCKS − 1) hops + guard ≤ delay, at 8 kHz (102/51).
const _: () =
    assert!(102 + (MIN_BLOCKS as usize - 1) * 51 + 8 * MASK_GUARD_MS as usize <= 8 * MASK_DELAY_MS as usize);
