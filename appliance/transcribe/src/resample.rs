//! Streaming conversion of one leg's PCM to the 16 kHz mono float audio Whisper and the VAD expect.
//!
//! A rational polyphase resampler (up by L, low-pass, down by M) with a Kaiser-windowed sinc filter whose
//! cut-off sits below both Nyquist frequencies, so an 8 kHz telephone leg gains no spectral images above
//! 4 kHz (the recording path's linear interpolator leaves images that Whisper would hear as noise). State is
//! carried across calls, so packet-sized pieces give the same output as one long buffer.

/// The rate the speech models take.
pub const MODEL_RATE: u32 = 16_000;

/// Filter span in input samples when upsampling; when downsampling by M the span grows M-fold so the
/// transition band stays as narrow at the output rate.
const BASE_TAPS: usize = 24;
/// Kaiser window shape (≈ 80 dB stop band).
const KAISER_BETA: f64 = 8.0;
/// Cut-off as a fraction of the lower Nyquist frequency (leaves room for the transition band).
const CUTOFF_FRACTION: f64 = 0.9;

/// Converts a stream of PCM16 samples at one rate to f32 samples at [`MODEL_RATE`].
#[derive(Debug, Clone)]
pub struct Resampler {
    up: usize,
    down: usize,
    /// `phases[p][j]` multiplies input sample `n - j` for output phase `p`.
    phases: Vec<Vec<f32>>,
    taps_per_phase: usize,
    /// The last `taps_per_phase - 1` input samples, oldest first, then the pending ones.
    history: Vec<f32>,
    /// Position of the next output sample on the upsampled time axis, relative to `history[0]`.
    next_output: usize,
}

impl Resampler {
    /// A resampler from `input_rate` Hz to 16 kHz. Rates are validated by configuration (8–48 kHz).
    pub fn new(input_rate: u32) -> Resampler {
        let input_rate = input_rate.max(1) as usize;
        let output_rate = MODEL_RATE as usize;
        let divisor = gcd(input_rate, output_rate);
        let (up, down) = (output_rate / divisor, input_rate / divisor);
        let taps_per_phase = BASE_TAPS * down.div_ceil(up).max(1);
        let phases = if up == 1 && down == 1 {
            Vec::new()
        } else {
            design_phases(up, down, taps_per_phase)
        };
        Resampler {
            up,
            down,
            phases,
            taps_per_phase,
            history: vec![0.0; taps_per_phase - 1],
            next_output: (taps_per_phase - 1) * up,
        }
    }

    /// Appends the 16 kHz output for `input` to `output`.
    pub fn process(&mut self, input: &[i16], output: &mut Vec<f32>) {
        if self.phases.is_empty() {
            output.extend(input.iter().map(|&s| f32::from(s) / 32768.0));
            return;
        }
        self.history.extend(input.iter().map(|&s| f32::from(s) / 32768.0));
        // Output sample at upsampled time t uses input samples floor(t / up) and the TAPS-1 before it.
        let available = self.history.len() * self.up;
        while self.next_output < available {
            let index = self.next_output / self.up;
            let phase = self.next_output % self.up;
            let taps = &self.phases[phase];
            let mut acc = 0.0f32;
            for (j, tap) in taps.iter().enumerate() {
                if let Some(sample) = index.checked_sub(j).and_then(|i| self.history.get(i)) {
                    acc += tap * sample;
                }
            }
            output.push(acc);
            self.next_output += self.down;
        }
        // Keep only what the next output still needs.
        let needed_from = (self.next_output / self.up).saturating_sub(self.taps_per_phase - 1);
        if needed_from > 0 {
            self.history.drain(..needed_from.min(self.history.len()));
            self.next_output -= needed_from * self.up;
        }
    }
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// The low-pass prototype at the upsampled rate, split into `up` branches of `taps` taps.
fn design_phases(up: usize, down: usize, taps: usize) -> Vec<Vec<f32>> {
    let length = taps * up;
    // Cut-off in cycles per upsampled sample.
    let cutoff = CUTOFF_FRACTION * 0.5 / up.max(down) as f64;
    let centre = (length - 1) as f64 / 2.0;
    let bessel_beta = bessel_i0(KAISER_BETA);
    let prototype: Vec<f64> = (0..length)
        .map(|n| {
            let x = n as f64 - centre;
            let sinc = if x == 0.0 {
                2.0 * cutoff
            } else {
                (2.0 * std::f64::consts::PI * cutoff * x).sin() / (std::f64::consts::PI * x)
            };
            let ratio = 2.0 * n as f64 / (length - 1) as f64 - 1.0;
            let window = bessel_i0(KAISER_BETA * (1.0 - ratio * ratio).max(0.0).sqrt()) / bessel_beta;
            // Gain `up` restores the amplitude lost by zero-stuffing.
            sinc * window * up as f64
        })
        .collect();
    (0..up)
        .map(|phase| {
            (0..taps)
                .map(|j| prototype.get(phase + j * up).copied().unwrap_or(0.0) as f32)
                .collect()
        })
        .collect()
}

/// Modified Bessel function of the first kind, order 0 (series; converges fast for the β used here).
fn bessel_i0(x: f64) -> f64 {
    let mut sum = 1.0;
    let mut term = 1.0;
    let half = x / 2.0;
    for k in 1..50 {
        term *= (half / k as f64) * (half / k as f64);
        sum += term;
        if term < 1e-12 * sum {
            break;
        }
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(rate: u32, hz: f64, seconds: f64, amplitude: f64) -> Vec<i16> {
        let n = (f64::from(rate) * seconds) as usize;
        (0..n)
            .map(|i| {
                (amplitude * (2.0 * std::f64::consts::PI * hz * i as f64 / f64::from(rate)).sin()) as i16
            })
            .collect()
    }

    /// Amplitude of frequency `hz` in `signal` (16 kHz), by correlation.
    fn amplitude_at(signal: &[f32], hz: f64) -> f64 {
        let (mut re, mut im) = (0.0, 0.0);
        for (i, &s) in signal.iter().enumerate() {
            let phase = 2.0 * std::f64::consts::PI * hz * i as f64 / 16_000.0;
            re += f64::from(s) * phase.cos();
            im += f64::from(s) * phase.sin();
        }
        2.0 * (re * re + im * im).sqrt() / signal.len() as f64
    }

    #[test]
    fn output_length_follows_the_rate_ratio() {
        for rate in [8_000, 16_000, 22_050, 32_000, 44_100, 48_000] {
            let mut resampler = Resampler::new(rate);
            let mut out = Vec::new();
            resampler.process(&vec![0; rate as usize * 2], &mut out);
            let expected = 32_000i64;
            // The filter delay holds back at most TAPS_PER_PHASE input samples.
            assert!(
                (out.len() as i64 - expected).abs() <= BASE_TAPS as i64 * 2,
                "{rate}: {}",
                out.len()
            );
        }
    }

    #[test]
    fn narrowband_upsampling_keeps_the_tone_and_suppresses_its_image() {
        let mut resampler = Resampler::new(8_000);
        let mut out = Vec::new();
        resampler.process(&tone(8_000, 1_000.0, 1.0, 10_000.0), &mut out);
        let steady = &out[200..];
        let wanted = amplitude_at(steady, 1_000.0);
        let image = amplitude_at(steady, 7_000.0);
        assert!((wanted - 10_000.0 / 32_768.0).abs() < 0.01, "{wanted}");
        assert!(image < wanted / 1_000.0, "image {image} vs {wanted}");
    }

    #[test]
    fn downsampling_removes_what_16k_cannot_carry() {
        let mut resampler = Resampler::new(48_000);
        let mut out = Vec::new();
        // 11 kHz would alias to 5 kHz at 16 kHz.
        resampler.process(&tone(48_000, 11_000.0, 1.0, 10_000.0), &mut out);
        assert!(amplitude_at(&out[200..], 5_000.0) < 0.003);
        let mut resampler = Resampler::new(48_000);
        let mut out = Vec::new();
        resampler.process(&tone(48_000, 2_000.0, 1.0, 10_000.0), &mut out);
        assert!((amplitude_at(&out[200..], 2_000.0) - 0.305).abs() < 0.01);
    }

    #[test]
    fn pieces_give_the_same_output_as_one_buffer() {
        let input = tone(8_000, 440.0, 0.5, 8_000.0);
        let mut whole = Vec::new();
        Resampler::new(8_000).process(&input, &mut whole);
        let mut pieces = Vec::new();
        let mut resampler = Resampler::new(8_000);
        for chunk in input.chunks(160) {
            resampler.process(chunk, &mut pieces);
        }
        assert_eq!(whole, pieces);
        let mut odd = Vec::new();
        let mut resampler = Resampler::new(44_100);
        let input = tone(44_100, 440.0, 0.5, 8_000.0);
        for chunk in input.chunks(441) {
            resampler.process(chunk, &mut odd);
        }
        let mut whole = Vec::new();
        Resampler::new(44_100).process(&input, &mut whole);
        assert_eq!(whole, odd);
    }

    #[test]
    fn sixteen_khz_passes_through() {
        let mut out = Vec::new();
        Resampler::new(16_000).process(&[16_384, -32_768], &mut out);
        assert_eq!(out, vec![0.5, -1.0]);
    }
}
