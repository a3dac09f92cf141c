//! ITU-T G.722 wideband audio at 64 kbit/s (mode 1): sub-band ADPCM between 16 kHz 16-bit PCM and one
//! byte per pair of samples.
//!
//! Structure, as the Recommendation describes it: a 24-tap quadrature mirror filter (QMF) splits the
//! 16 kHz signal into a lower (0–4 kHz) and a higher (4–8 kHz) sub-band at 8 kHz each. The lower band is
//! coded with 6-bit adaptive quantisation and the higher band with 2-bit; each byte carries the higher-band
//! code in its top 2 bits and the lower-band code in the bottom 6. Both bands predict their next value with
//! a two-pole, six-zero adaptive predictor driven by the quantised difference (the lower band's is
//! truncated to 4 bits so that the 56 and 48 kbit/s modes stay in step; this module only decodes 64 kbit/s,
//! where all 6 bits feed the reconstructed output). The quantiser step sizes adapt through a logarithmic
//! scale factor. All arithmetic is integer, with the Recommendation's 16-bit saturation, so the output is
//! bit-exact and no input byte can overflow or panic.
//!
//! The encoder is here for tests, the test kit and benchmarks: a G.722 stream to decode must come from
//! somewhere, and a round trip through both halves checks them against each other.

/// Quadrature mirror filter coefficients h(0)…h(23), scaled by 2^13 (they sum to 2^13).
const QMF: [i32; 24] = [
    3, -11, -11, 53, 12, -156, 32, 362, -210, -805, 951, 3876, 3876, 951, -805, -210, 362, 32, -156, 12, 53,
    -11, -11, 3,
];

/// Lower band, 6-bit inverse quantiser output levels by code (multiplied by the step size, then >> 15).
const LOW_LEVELS_6BIT: [i32; 64] = [
    -136, -136, -136, -136, -24808, -21904, -19008, -16704, -14984, -13512, -12280, -11192, -10232, -9360,
    -8576, -7856, -7192, -6576, -6000, -5456, -4944, -4464, -4008, -3576, -3168, -2776, -2400, -2032, -1688,
    -1360, -1040, -728, 24808, 21904, 19008, 16704, 14984, 13512, 12280, 11192, 10232, 9360, 8576, 7856,
    7192, 6576, 6000, 5456, 4944, 4464, 4008, 3576, 3168, 2776, 2400, 2032, 1688, 1360, 1040, 728, 432, 136,
    -432, -136,
];

/// Lower band, 4-bit inverse quantiser levels by the top 4 bits of the code: what the predictor sees.
const LOW_LEVELS_4BIT: [i32; 16] = [
    0, -20456, -12896, -8968, -6288, -4240, -2584, -1200, 20456, 12896, 8968, 6288, 4240, 2584, 1200, 0,
];

/// Lower band scale-factor adaptation weights by the top 4 bits of the code (large codes widen the step).
const LOW_SCALE_WEIGHTS: [i32; 16] = [
    -60, 3042, 1198, 538, 334, 172, 58, -30, 3042, 1198, 538, 334, 172, 58, -30, -60,
];

/// Lower band quantiser decision thresholds for magnitude indices 1…29 (times the step size, >> 12).
const LOW_THRESHOLDS: [i32; 29] = [
    35, 72, 110, 150, 190, 233, 276, 323, 370, 422, 473, 530, 587, 650, 714, 786, 858, 940, 1023, 1121, 1219,
    1339, 1458, 1612, 1765, 1980, 2195, 2557, 2919,
];

/// Higher band, 2-bit inverse quantiser levels by code: large negative, small negative, large, small.
const HIGH_LEVELS: [i32; 4] = [-7408, -1616, 7408, 1616];

/// Higher band scale-factor adaptation weights by code.
const HIGH_SCALE_WEIGHTS: [i32; 4] = [798, -214, 798, -214];

/// Higher band decision threshold between the small and the large level (times the step size, >> 12).
const HIGH_THRESHOLD: i32 = 564;

/// Antilogarithm table for the scale factor: 2^(i/32) scaled by 2^11, for i in 0…31.
const ANTILOG: [i32; 32] = [
    2048, 2093, 2139, 2186, 2233, 2282, 2332, 2383, 2435, 2489, 2543, 2599, 2656, 2714, 2774, 2834, 2896,
    2960, 3025, 3091, 3158, 3228, 3298, 3371, 3444, 3520, 3597, 3676, 3756, 3838, 3922, 4008,
];

/// Sub-band signals are 15-bit: the reconstructed values are limited to this range.
const SUB_BAND_MIN: i32 = -16384;
const SUB_BAND_MAX: i32 = 16383;

/// Saturates to the 16-bit range the Recommendation computes in.
fn saturate(value: i32) -> i32 {
    value.clamp(i32::from(i16::MIN), i32::from(i16::MAX))
}

/// Sign as the Recommendation takes it: the most significant bit, so zero counts as positive.
fn same_sign(a: i32, b: i32) -> bool {
    (a < 0) == (b < 0)
}

/// The adaptive two-pole, six-zero predictor of one sub-band, with that band's scale factor.
#[derive(Debug, Clone)]
struct SubBand {
    /// Pole coefficients a1, a2.
    poles: [i32; 2],
    /// Zero coefficients b1…b6.
    zeros: [i32; 6],
    /// Past quantised differences d(k-1)…d(k-6).
    past_differences: [i32; 6],
    /// Past partially reconstructed signals p(k-1), p(k-2) (difference plus zero-section estimate).
    past_partials: [i32; 2],
    /// Past reconstructed signals r(k-1), r(k-2).
    past_reconstructed: [i32; 2],
    /// Zero-section part of the current estimate.
    zero_estimate: i32,
    /// The current signal estimate s(k).
    estimate: i32,
    /// Logarithmic scale factor.
    log_scale: i32,
    /// Quantiser step size derived from `log_scale`.
    step: i32,
    /// Upper limit of `log_scale` for this band.
    log_scale_max: i32,
    /// Exponent offset turning `log_scale` into `step` for this band.
    step_exponent_offset: i32,
}

impl SubBand {
    fn lower() -> SubBand {
        SubBand::new(32, 18432, 8)
    }

    fn higher() -> SubBand {
        SubBand::new(8, 22528, 10)
    }

    fn new(step: i32, log_scale_max: i32, step_exponent_offset: i32) -> SubBand {
        SubBand {
            poles: [0; 2],
            zeros: [0; 6],
            past_differences: [0; 6],
            past_partials: [0; 2],
            past_reconstructed: [0; 2],
            zero_estimate: 0,
            estimate: 0,
            log_scale: 0,
            step,
            log_scale_max,
            step_exponent_offset,
        }
    }

    /// Adapts the quantiser step size after a code with the given adaptation weight.
    fn adapt_step(&mut self, weight: i32) {
        self.log_scale = (((self.log_scale * 127) >> 7) + weight).clamp(0, self.log_scale_max);
        let mantissa = ANTILOG[((self.log_scale >> 6) & 31) as usize];
        let shift = self.step_exponent_offset - (self.log_scale >> 11);
        let scaled = if shift < 0 {
            mantissa << -shift
        } else {
            mantissa >> shift
        };
        self.step = scaled << 2;
    }

    /// Feeds the quantised difference of this sample into the predictor and computes the next estimate.
    fn update_predictor(&mut self, difference: i32) {
        let reconstructed = saturate(self.estimate + difference);
        let partial = saturate(self.zero_estimate + difference);
        let [a1, a2] = self.poles;
        let [partial1, partial2] = self.past_partials;

        // Second pole: leaks towards zero, pushed by the sign agreement of the partial signals.
        let pushed = saturate(a1 << 2);
        let pushed = if same_sign(partial, partial1) {
            -pushed
        } else {
            pushed
        }
        .min(i32::from(i16::MAX));
        let correlation = if same_sign(partial, partial2) { 128 } else { -128 };
        let new_a2 = ((pushed >> 7) + correlation + ((a2 * 32512) >> 15)).clamp(-12288, 12288);

        // First pole, kept inside the stability triangle set by the second.
        let nudge = if same_sign(partial, partial1) { 192 } else { -192 };
        let limit = 15360 - new_a2;
        let new_a1 = saturate(nudge + ((a1 * 32640) >> 15)).clamp(-limit, limit);

        // Zeros: leak, and move by the sign agreement of this difference with each past one.
        let nudge = if difference == 0 { 0 } else { 128 };
        for (zero, &past) in self.zeros.iter_mut().zip(&self.past_differences) {
            let signed_nudge = if same_sign(difference, past) {
                nudge
            } else {
                -nudge
            };
            *zero = saturate(signed_nudge + ((*zero * 32640) >> 15));
        }

        self.past_differences.rotate_right(1);
        self.past_differences[0] = difference;
        self.past_partials = [partial, partial1];
        self.past_reconstructed = [reconstructed, self.past_reconstructed[0]];
        self.poles = [new_a1, new_a2];

        let pole_estimate = self
            .poles
            .iter()
            .zip(&self.past_reconstructed)
            .map(|(&pole, &past)| (pole * saturate(past << 1)) >> 15)
            .sum::<i32>();
        let zero_estimate = self
            .zeros
            .iter()
            .zip(&self.past_differences)
            .map(|(&zero, &past)| (zero * saturate(past << 1)) >> 15)
            .sum::<i32>();
        self.zero_estimate = saturate(zero_estimate);
        self.estimate = saturate(saturate(pole_estimate) + self.zero_estimate);
    }
}

/// A G.722 64 kbit/s decoder: one byte in, two 16 kHz samples out. Keeps the state of both sub-bands and
/// of the synthesis filter between calls, so one decoder serves one stream.
#[derive(Debug, Clone)]
pub struct G722Decoder {
    lower: SubBand,
    higher: SubBand,
    /// Past sums and differences of the sub-bands, newest first (the synthesis filter's delay lines).
    band_differences: [i32; 12],
    band_sums: [i32; 12],
}

impl Default for G722Decoder {
    fn default() -> Self {
        G722Decoder::new()
    }
}

impl G722Decoder {
    pub fn new() -> G722Decoder {
        G722Decoder {
            lower: SubBand::lower(),
            higher: SubBand::higher(),
            band_differences: [0; 12],
            band_sums: [0; 12],
        }
    }

    /// Appends two samples per byte of `payload` to `out`. Every byte is a valid code.
    pub fn decode(&mut self, payload: &[u8], out: &mut Vec<i16>) {
        out.reserve(payload.len().saturating_mul(2));
        for &code in payload {
            let lower = self.decode_lower(code & 0x3F);
            let higher = self.decode_higher(code >> 6);
            let [first, second] = self.synthesise(lower, higher);
            out.push(first);
            out.push(second);
        }
    }

    fn decode_lower(&mut self, code: u8) -> i32 {
        let band = &mut self.lower;
        let output_difference = (band.step * LOW_LEVELS_6BIT[usize::from(code & 0x3F)]) >> 15;
        let reconstructed = (band.estimate + output_difference).clamp(SUB_BAND_MIN, SUB_BAND_MAX);
        let predictor_code = usize::from((code >> 2) & 0x0F);
        let predictor_difference = (band.step * LOW_LEVELS_4BIT[predictor_code]) >> 15;
        band.adapt_step(LOW_SCALE_WEIGHTS[predictor_code]);
        band.update_predictor(predictor_difference);
        reconstructed
    }

    fn decode_higher(&mut self, code: u8) -> i32 {
        let band = &mut self.higher;
        let code = usize::from(code & 0x03);
        let difference = (band.step * HIGH_LEVELS[code]) >> 15;
        let reconstructed = (band.estimate + difference).clamp(SUB_BAND_MIN, SUB_BAND_MAX);
        band.adapt_step(HIGH_SCALE_WEIGHTS[code]);
        band.update_predictor(difference);
        reconstructed
    }

    /// Receive QMF: two output samples from one pair of sub-band samples.
    fn synthesise(&mut self, lower: i32, higher: i32) -> [i16; 2] {
        self.band_differences.rotate_right(1);
        self.band_differences[0] = lower - higher;
        self.band_sums.rotate_right(1);
        self.band_sums[0] = lower + higher;
        let first: i32 = QMF
            .iter()
            .step_by(2)
            .zip(&self.band_differences)
            .map(|(&h, &x)| h * x)
            .sum();
        let second: i32 = QMF
            .iter()
            .skip(1)
            .step_by(2)
            .zip(&self.band_sums)
            .map(|(&h, &x)| h * x)
            .sum();
        // The taps sum to 2^12 per phase; the sub-bands carry half the input amplitude.
        [to_pcm(first >> 11), to_pcm(second >> 11)]
    }
}

fn to_pcm(value: i32) -> i16 {
    i16::try_from(value).unwrap_or(if value < 0 { i16::MIN } else { i16::MAX })
}

/// A G.722 64 kbit/s encoder: two 16 kHz samples in, one byte out.
#[derive(Debug, Clone)]
pub struct G722Encoder {
    lower: SubBand,
    higher: SubBand,
    /// The last 24 input samples, newest first (the analysis filter's delay line).
    history: [i32; 24],
    /// A sample waiting for its pair when an odd number of samples was given.
    pending: Option<i16>,
}

impl Default for G722Encoder {
    fn default() -> Self {
        G722Encoder::new()
    }
}

impl G722Encoder {
    pub fn new() -> G722Encoder {
        G722Encoder {
            lower: SubBand::lower(),
            higher: SubBand::higher(),
            history: [0; 24],
            pending: None,
        }
    }

    /// Appends one byte per pair of samples to `out`; an odd last sample waits for the next call.
    pub fn encode(&mut self, samples: &[i16], out: &mut Vec<u8>) {
        for &sample in samples {
            match self.pending.take() {
                None => self.pending = Some(sample),
                Some(first) => {
                    let [lower, higher] = self.analyse(first, sample);
                    let lower_code = self.encode_lower(lower);
                    let higher_code = self.encode_higher(higher);
                    out.push((higher_code << 6) | lower_code);
                }
            }
        }
    }

    /// Transmit QMF: the lower and higher sub-band samples of one pair of input samples.
    fn analyse(&mut self, first: i16, second: i16) -> [i32; 2] {
        self.history.rotate_right(2);
        self.history[1] = i32::from(first);
        self.history[0] = i32::from(second);
        let even: i32 = QMF
            .iter()
            .step_by(2)
            .zip(self.history.iter().step_by(2))
            .map(|(&h, &x)| h * x)
            .sum();
        let odd: i32 = QMF
            .iter()
            .skip(1)
            .step_by(2)
            .zip(self.history.iter().skip(1).step_by(2))
            .map(|(&h, &x)| h * x)
            .sum();
        [
            ((even + odd) >> 14).clamp(SUB_BAND_MIN, SUB_BAND_MAX),
            ((even - odd) >> 14).clamp(SUB_BAND_MIN, SUB_BAND_MAX),
        ]
    }

    fn encode_lower(&mut self, sample: i32) -> u8 {
        let band = &mut self.lower;
        let error = saturate(sample - band.estimate);
        let magnitude = if error >= 0 { error } else { -(error + 1) };
        let index = LOW_THRESHOLDS
            .iter()
            .position(|&threshold| magnitude < (threshold * band.step) >> 12)
            .unwrap_or(LOW_THRESHOLDS.len())
            + 1;
        // index is 1…30: positive codes count down from 61, negative from 63 (then 31 after 62).
        let index = index as u8;
        let code = match (error < 0, index) {
            (false, _) => 62 - index,
            (true, 1) => 63,
            (true, 2) => 62,
            (true, _) => 34 - index,
        };
        let predictor_code = usize::from(code >> 2);
        let difference = (band.step * LOW_LEVELS_4BIT[predictor_code]) >> 15;
        band.adapt_step(LOW_SCALE_WEIGHTS[predictor_code]);
        band.update_predictor(difference);
        code
    }

    fn encode_higher(&mut self, sample: i32) -> u8 {
        let band = &mut self.higher;
        let error = saturate(sample - band.estimate);
        let magnitude = if error >= 0 { error } else { -(error + 1) };
        let large = magnitude >= (HIGH_THRESHOLD * band.step) >> 12;
        let code: u8 = match (error < 0, large) {
            (true, true) => 0,
            (true, false) => 1,
            (false, true) => 2,
            (false, false) => 3,
        };
        let difference = (band.step * HIGH_LEVELS[usize::from(code)]) >> 15;
        band.adapt_step(HIGH_SCALE_WEIGHTS[usize::from(code)]);
        band.update_predictor(difference);
        code
    }
}
