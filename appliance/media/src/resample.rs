//! Sample-rate conversion between the codec rates a call mixes (8, 16, 32, 44.1, 48 kHz).
//!
//! Quality: deliberately simple. Upsampling interpolates linearly between neighbouring samples (a
//! triangular filter): no delay and no state, but its response is sinc²-shaped. For 8→16 kHz a 1 kHz tone
//! passes at −0.4 dB with its 7 kHz image at −17 dB; near the telephone band edge (3.4 kHz) the tone is at
//! −5.5 dB and its 4.6 kHz image only about 5 dB below it. Downsampling averages each output sample's source
//! span (a box filter), a weak anti-alias filter. Each call is independent: at the end of a buffer the last
//! sample is held rather than interpolated toward the next buffer, so per-packet calls leave a one-sample
//! step at packet boundaries. Adequate for putting a narrowband leg beside a wideband one in a recording of
//! speech, where most energy lies below 1 kHz; not a high-fidelity converter.

use std::borrow::Cow;

/// Converts `samples` from `from_rate` to `to_rate` Hz. Equal rates (or a zero rate, which cannot be
/// converted) return the input unchanged without copying. The output has `len × to / from` samples,
/// rounded down; the rates come from configuration, so the caller bounds that size.
pub fn resample(samples: &[i16], from_rate: u32, to_rate: u32) -> Cow<'_, [i16]> {
    if from_rate == to_rate || from_rate == 0 || to_rate == 0 || samples.is_empty() {
        return Cow::Borrowed(samples);
    }
    let (from, to) = (u64::from(from_rate), u64::from(to_rate));
    let output_len = usize::try_from((samples.len() as u64).saturating_mul(to) / from).unwrap_or(0);
    let last = samples.len() - 1;
    let sample_at = |index: u64| {
        i64::from(
            samples
                .get(usize::try_from(index).unwrap_or(last))
                .copied()
                .unwrap_or(0),
        )
    };
    let output = if to > from {
        (0..output_len as u64)
            .map(|n| {
                // Source position n × from / to, as an integer part and a fraction over `to`.
                let position = n * from;
                let (index, fraction) = (position / to, (position % to) as i64);
                let left = sample_at(index);
                let right = if (index as usize) < last {
                    sample_at(index + 1)
                } else {
                    left
                };
                (left + (right - left) * fraction / to as i64) as i16
            })
            .collect()
    } else {
        (0..output_len as u64)
            .map(|n| {
                let start = n * from / to;
                let end = ((n + 1) * from / to).clamp(start + 1, samples.len() as u64);
                let sum: i64 = (start..end).map(sample_at).sum();
                (sum / (end - start) as i64) as i16
            })
            .collect()
    };
    Cow::Owned(output)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_rates_borrow() {
        let samples = [1, 2, 3];
        assert!(matches!(resample(&samples, 8000, 8000), Cow::Borrowed(s) if s == samples));
        assert!(matches!(resample(&[], 8000, 16000), Cow::Borrowed(&[])));
    }

    #[test]
    fn doubling_interpolates_and_holds_the_last_sample() {
        assert_eq!(
            resample(&[0, 100, -100], 8000, 16000).as_ref(),
            &[0, 50, 100, 0, -100, -100]
        );
    }

    #[test]
    fn integer_ratios_give_exact_lengths() {
        let packet = vec![1000i16; 160];
        assert_eq!(resample(&packet, 8000, 16000).len(), 320);
        assert_eq!(resample(&packet, 8000, 48000).len(), 960);
        assert_eq!(resample(&packet, 16000, 8000).len(), 80);
        assert_eq!(resample(&packet, 8000, 44100).len(), 882);
        assert!(resample(&packet, 8000, 48000).iter().all(|&s| s == 1000));
    }

    #[test]
    fn halving_averages_pairs() {
        assert_eq!(resample(&[0, 100, 200, 300, 7], 16000, 8000).as_ref(), &[50, 250]);
    }

    #[test]
    fn extremes_do_not_overflow() {
        let samples = [i16::MIN, i16::MAX, i16::MIN, i16::MAX];
        assert_eq!(resample(&samples, 8000, 16000).len(), 8);
        assert_eq!(resample(&samples, 48000, 8000).len(), 0);
        assert_eq!(resample(&samples, 16000, 8000).as_ref(), &[0, 0]);
    }
}
