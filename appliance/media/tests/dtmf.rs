//! In-band DTMF detection and masking: synthetic tones for every digit at both rates, levels, noise, twist,
//! Q.24 duration limits and digit sequences; talk-off over espeak-ng speech and the LibriVox recordings;
//! masker silencing, bit-exact pass-through and chunk-size independence.

use std::f64::consts::PI;
use std::path::Path;
use std::process::Command;

use airlock_media::dtmf::{MASK_DELAY_MS, MASK_GUARD_MS};
use airlock_media::{DtmfDetector, DtmfError, DtmfMasker, DtmfTone};

const DIGITS: &str = "123A456B789C*0#D";
const ROW_HZ: [f64; 4] = [697.0, 770.0, 852.0, 941.0];
const COLUMN_HZ: [f64; 4] = [1209.0, 1336.0, 1477.0, 1633.0];
/// 0 dBm0 sine amplitude in 16-bit PCM.
const DBM0: f64 = 22_713.0;
const RATES: [u32; 2] = [8000, 16000];

/// Deterministic xorshift noise source.
struct Noise(u64);

impl Noise {
    fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64 - 0.5
    }

    /// Approximately Gaussian, unit variance (sum of 12 uniforms).
    fn gaussian(&mut self) -> f64 {
        (0..12).map(|_| self.uniform()).sum()
    }
}

fn frequencies(digit: char) -> (f64, f64) {
    let index = DIGITS.find(digit).expect("a DTMF digit");
    (ROW_HZ[index / 4], COLUMN_HZ[index % 4])
}

/// Adds a DTMF pair to `signal` at `[start, start + len)` with per-tone levels in dBm0.
fn add_tone(
    signal: &mut [f64],
    rate: u32,
    digit: char,
    start: usize,
    len: usize,
    row_dbm0: f64,
    col_dbm0: f64,
) {
    let (row, column) = frequencies(digit);
    let (a_row, a_col) = (
        DBM0 * 10f64.powf(row_dbm0 / 20.0),
        DBM0 * 10f64.powf(col_dbm0 / 20.0),
    );
    for n in 0..len {
        let t = n as f64 / f64::from(rate);
        signal[start + n] +=
            a_row * (2.0 * PI * row * t + 0.3).sin() + a_col * (2.0 * PI * column * t + 1.1).sin();
    }
}

fn add_noise(signal: &mut [f64], dbm0: f64, seed: u64) {
    let rms = DBM0 / 2f64.sqrt() * 10f64.powf(dbm0 / 20.0);
    let mut noise = Noise(seed | 1);
    for x in signal.iter_mut() {
        *x += rms * noise.gaussian();
    }
}

fn pcm(signal: &[f64]) -> Vec<i16> {
    signal
        .iter()
        .map(|&x| x.round().clamp(-32768.0, 32767.0) as i16)
        .collect()
}

fn ms(rate: u32, ms: usize) -> usize {
    rate as usize / 1000 * ms
}

fn detect_chunked(rate: u32, samples: &[i16], chunk: usize) -> Vec<DtmfTone> {
    let mut detector = DtmfDetector::new(rate).expect("supported rate");
    let mut tones = Vec::new();
    let mut position = 0u64;
    for piece in samples.chunks(chunk) {
        detector
            .push(position, piece, &mut tones)
            .expect("contiguous positions");
        position += piece.len() as u64;
    }
    detector.flush(&mut tones);
    tones
}

fn detect(rate: u32, samples: &[i16]) -> Vec<DtmfTone> {
    detect_chunked(rate, samples, 160)
}

fn digits(tones: &[DtmfTone]) -> String {
    tones.iter().map(|tone| tone.digit).collect()
}

/// One tone of `len_ms` at `offset` samples into 100 ms of lead-in, with 100 ms after it.
fn single(
    rate: u32,
    digit: char,
    offset: usize,
    len_ms: usize,
    row: f64,
    col: f64,
    noise: Option<f64>,
) -> Vec<i16> {
    let start = ms(rate, 100) + offset;
    let len = ms(rate, len_ms);
    let mut signal = vec![0.0; start + len + ms(rate, 100)];
    add_tone(&mut signal, rate, digit, start, len, row, col);
    if let Some(level) = noise {
        add_noise(&mut signal, level, start as u64 * 31 + len as u64);
    }
    pcm(&signal)
}

#[test]
fn every_digit_is_detected_at_both_rates_across_levels_with_noise() {
    let mut attempts = 0;
    let mut hits = 0;
    for rate in RATES {
        for digit in DIGITS.chars() {
            // Per-tone levels from −25 to −3 dBm0, equal and with twist inside the limits, in white noise
            // 20 dB under the weakest tone (and in silence).
            for (row, col) in [
                (-25.0, -25.0),
                (-15.0, -15.0),
                (-3.0, -3.0),
                (-20.0, -13.0),
                (-10.0, -13.0),
            ] {
                for noise in [None, Some(-45.0)] {
                    let samples = single(rate, digit, 17, 50, row, col, noise);
                    let tones = detect(rate, &samples);
                    attempts += 1;
                    let start = ms(rate, 100) as u64 + 17;
                    let end = start + ms(rate, 50) as u64;
                    let block = ms(rate, 13) as u64;
                    if let [tone] = tones.as_slice()
                        && tone.digit == digit
                        && tone.start_sample + block > start
                        && tone.start_sample < start + block
                        && tone.end_sample + block > end
                        && tone.end_sample < end + block
                    {
                        hits += 1;
                    } else {
                        panic!("{rate} Hz digit {digit} at {row}/{col} dBm0, noise {noise:?}: {tones:?}");
                    }
                }
            }
        }
    }
    eprintln!("DTMF detection: {hits}/{attempts} synthetic tones detected");
}

#[test]
fn detection_rate_in_white_noise_at_minus_25_dbm0() {
    // Both tones at −25 dBm0 (the weakest level a sender may use), 50 ms, in white noise; the signal to
    // noise ratio is each tone's power against the whole-band noise power.
    for (noise, required) in [
        (-45.0, 1.0),
        (-40.0, 1.0),
        (-37.0, 1.0),
        (-35.0, 1.0),
        (-33.0, 0.9),
    ] {
        let (mut hits, mut attempts) = (0, 0);
        for rate in RATES {
            for digit in DIGITS.chars() {
                for offset in [0, 13, 29] {
                    let samples = single(rate, digit, offset, 50, -25.0, -25.0, Some(noise));
                    attempts += 1;
                    hits += usize::from(digits(&detect(rate, &samples)) == digit.to_string());
                }
            }
        }
        let rate = hits as f64 / attempts as f64;
        eprintln!(
            "DTMF at -25 dBm0, SNR {:.0} dB: {hits}/{attempts} detected",
            -25.0 - noise
        );
        assert!(rate >= required, "SNR {} dB: {hits}/{attempts}", -25.0 - noise);
    }
}

#[test]
fn a_40_ms_tone_is_accepted_and_a_23_ms_tone_rejected_at_every_alignment() {
    for rate in RATES {
        let hop = ms(rate, 13) / 2;
        for offset in 0..hop {
            for noise in [None, Some(-40.0)] {
                let long = single(rate, '5', offset, 40, -20.0, -20.0, noise);
                assert_eq!(
                    digits(&detect(rate, &long)),
                    "5",
                    "{rate} Hz 40 ms at offset {offset}, {noise:?}"
                );
                let short = single(rate, '5', offset, 23, -10.0, -10.0, noise);
                assert_eq!(
                    digits(&detect(rate, &short)),
                    "",
                    "{rate} Hz 23 ms at offset {offset}, {noise:?}"
                );
            }
        }
    }
}

#[test]
fn twist_beyond_the_limits_is_rejected() {
    for rate in RATES {
        for digit in DIGITS.chars() {
            // Forward twist (column louder) 11 dB and reverse twist (row louder) 7 dB.
            let forward = single(rate, digit, 0, 60, -20.0, -9.0, None);
            assert!(
                detect(rate, &forward).is_empty(),
                "{rate} Hz {digit} forward twist"
            );
            let reverse = single(rate, digit, 0, 60, -9.0, -16.0, None);
            assert!(
                detect(rate, &reverse).is_empty(),
                "{rate} Hz {digit} reverse twist"
            );
        }
    }
}

#[test]
fn a_single_tone_or_a_tone_too_weak_is_not_a_digit() {
    for rate in RATES {
        let mut signal = vec![0.0; ms(rate, 300)];
        let start = ms(rate, 100);
        for (i, x) in signal[start..ms(rate, 200)].iter_mut().enumerate() {
            *x = DBM0 * 0.5 * (2.0 * PI * 770.0 * (start + i) as f64 / f64::from(rate)).sin();
        }
        assert!(detect(rate, &pcm(&signal)).is_empty());
        let weak = single(rate, '8', 0, 80, -40.0, -40.0, None);
        assert!(detect(rate, &weak).is_empty());
    }
}

#[test]
fn digit_sequences_with_short_gaps_are_separate_digits() {
    for rate in RATES {
        for (tone_ms, gap_ms) in [(40, 40), (50, 40), (50, 60), (60, 50)] {
            for sequence in [DIGITS, "5555", "4111111111111111"] {
                let step = ms(rate, tone_ms + gap_ms);
                let mut signal = vec![0.0; ms(rate, 100) + step * sequence.len() + ms(rate, 100)];
                for (i, digit) in sequence.chars().enumerate() {
                    add_tone(
                        &mut signal,
                        rate,
                        digit,
                        ms(rate, 100) + i * step,
                        ms(rate, tone_ms),
                        -12.0,
                        -10.0,
                    );
                }
                add_noise(&mut signal, -45.0, 7);
                let tones = detect(rate, &pcm(&signal));
                assert_eq!(
                    digits(&tones),
                    sequence,
                    "{rate} Hz, {tone_ms} ms tones, {gap_ms} ms gaps"
                );
                assert!(
                    tones
                        .windows(2)
                        .all(|pair| pair[0].end_sample <= pair[1].start_sample)
                );
            }
        }
    }
}

#[test]
fn detection_does_not_depend_on_chunk_size_and_positions_must_not_go_backwards() {
    let rate = 8000;
    let mut signal = vec![0.0; ms(rate, 1000)];
    for (i, digit) in "90#".chars().enumerate() {
        add_tone(
            &mut signal,
            rate,
            digit,
            ms(rate, 100 + 250 * i),
            ms(rate, 70),
            -8.0,
            -6.0,
        );
    }
    let samples = pcm(&signal);
    let reference = detect_chunked(rate, &samples, samples.len());
    assert_eq!(digits(&reference), "90#");
    for chunk in [1, 7, 160, 4000] {
        assert_eq!(
            detect_chunked(rate, &samples, chunk),
            reference,
            "chunks of {chunk}"
        );
    }

    let mut detector = DtmfDetector::new(rate).expect("8 kHz");
    let mut tones = Vec::new();
    detector
        .push(1000, &samples[..100], &mut tones)
        .expect("first push");
    assert_eq!(
        detector.push(1050, &samples[100..200], &mut tones),
        Err(DtmfError::PositionBackwards {
            expected: 1100,
            got: 1050
        })
    );
}

#[test]
fn a_gap_in_positions_ends_the_tone_in_progress() {
    let rate = 16000;
    let samples = single(rate, '7', 0, 200, -10.0, -10.0, None);
    let cut = ms(rate, 200);
    let mut detector = DtmfDetector::new(rate).expect("16 kHz");
    let mut tones = Vec::new();
    detector.push(0, &samples[..cut], &mut tones).expect("push");
    assert!(tones.is_empty(), "the tone is still sounding");
    let since = detector
        .tone_in_progress_since()
        .expect("the tone is being followed");
    // `single` starts the tone 100 ms in.
    assert!(
        (ms(rate, 100)..=ms(rate, 115)).contains(&(since as usize)),
        "{since}"
    );
    let resume = cut as u64 + 5000;
    detector
        .push(resume, &samples[cut..], &mut tones)
        .expect("later push");
    assert_eq!(
        digits(&tones),
        "77",
        "the rest of the tone after the gap is a tone of its own"
    );
    assert!(tones[0].end_sample <= cut as u64);
    assert!(tones[1].start_sample >= resume);
    detector.flush(&mut tones);
    assert_eq!(tones.len(), 2);
    assert_eq!(detector.tone_in_progress_since(), None);
}

#[test]
fn only_8_and_16_khz_are_supported() {
    for rate in [0, 11025, 22050, 32000, 44100, 48000] {
        assert_eq!(
            DtmfDetector::new(rate).err(),
            Some(DtmfError::UnsupportedRate(rate))
        );
        assert_eq!(
            DtmfMasker::new(rate).err(),
            Some(DtmfError::UnsupportedRate(rate))
        );
    }
    assert_eq!(DtmfDetector::new(16000).map(|d| d.sample_rate()), Ok(16000));
}

#[test]
fn debug_output_never_shows_the_digit() {
    let tone = DtmfTone {
        digit: '7',
        start_sample: 10,
        end_sample: 20,
    };
    let text = format!("{tone:?}");
    assert!(!text.contains('7') && text.contains("<redacted>"), "{text}");
}

// ---- talk-off ----

/// `text` spoken by espeak-ng, resampled by sox to `rate` Hz mono s16; None when the tools are missing.
fn espeak(text: &str, rate: u32, voice: &str) -> Option<Vec<i16>> {
    let script = format!(
        "espeak-ng -v {voice} --stdout \"$1\" \
         | sox -q -t wav - -r {rate} -c 1 -e signed-integer -b 16 -L -t raw -"
    );
    let output = Command::new("sh")
        .args(["-c", &script, "sh", text])
        .output()
        .ok()?;
    if !output.status.success() || output.stdout.len() < 1000 {
        return None;
    }
    Some(
        output
            .stdout
            .chunks_exact(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]))
            .collect(),
    )
}

const SPEECH: [&str; 6] = [
    "Thank you for calling. Please hold while I transfer you to the billing department.",
    "My card number is four one one one, two two two two, and the expiry date is nine twenty seven.",
    "Could you please repeat the last four digits of your social security number?",
    "Beep boop. Hmmmm. Oooh, eeee, aaaah. Whistling is not a tone, is it?",
    "The quick brown fox jumps over the lazy dog while singing la la la in a high voice.",
    "One two three four five six seven eight nine zero star pound.",
];

#[test]
fn speech_does_not_trigger_the_detector() {
    let mut false_detections = 0;
    let mut seconds = 0.0;
    let mut sources = 0;

    let have_tools = ["espeak-ng", "sox"]
        .iter()
        .all(|tool| Command::new(tool).arg("--version").output().is_ok());
    if have_tools {
        for rate in RATES {
            for voice in ["en", "en-us", "en+f3", "de", "fr"] {
                for text in SPEECH {
                    let Some(samples) = espeak(text, rate, voice) else {
                        continue;
                    };
                    seconds += samples.len() as f64 / f64::from(rate);
                    sources += 1;
                    let tones = detect(rate, &samples);
                    false_detections += tones.len();
                }
            }
        }
    } else {
        eprintln!("SKIPPED espeak-ng talk-off: espeak-ng and/or sox are not installed (run ci/setup)");
    }

    let librivox = Path::new("/usr/share/pocketsphinx/test/data/librivox");
    match std::fs::read_dir(librivox) {
        Ok(entries) => {
            let mut paths: Vec<_> = entries
                .filter_map(Result::ok)
                .map(|entry| entry.path())
                .filter(|path| path.extension().is_some_and(|ext| ext == "wav"))
                .collect();
            paths.sort();
            for path in paths {
                let bytes = std::fs::read(&path).expect("readable recording");
                let wav = airlock_media::wav::parse(&bytes).expect("PCM16 WAV");
                assert_eq!((wav.sample_rate, wav.channels), (16000, 1), "{}", path.display());
                let wide = wav.samples();
                let narrow = airlock_media::resample(&wide, 16000, 8000).into_owned();
                for (rate, samples) in [(16000, &wide), (8000, &narrow)] {
                    seconds += samples.len() as f64 / f64::from(rate);
                    sources += 1;
                    false_detections += detect(rate, samples).len();
                }
            }
        }
        Err(error) => eprintln!("SKIPPED LibriVox talk-off: {}: {error}", librivox.display()),
    }

    eprintln!(
        "DTMF talk-off: {false_detections} false detections in {sources} sources, {seconds:.1} s of speech"
    );
    assert_eq!(false_detections, 0);
}

// ---- masker ----

fn mask_chunked(rate: u32, input: &[i16], chunk: usize) -> (Vec<i16>, Vec<DtmfTone>) {
    let mut masker = DtmfMasker::new(rate).expect("supported rate");
    let (mut output, mut tones) = (Vec::new(), Vec::new());
    for piece in input.chunks(chunk) {
        let before = output.len();
        masker.push(piece, &mut output, &mut tones);
        assert_eq!(output.len() - before, piece.len(), "same length out as in");
    }
    masker.flush(&mut output, &mut tones);
    (output, tones)
}

/// Speech-like test audio (noise at −30 dBm0) with three tones, long and short.
fn masker_input(rate: u32) -> (Vec<i16>, Vec<(usize, usize)>) {
    let mut signal = vec![0.0; ms(rate, 1500)];
    add_noise(&mut signal, -30.0, 99);
    let spans = [
        (ms(rate, 200) + 3, ms(rate, 45)),
        (ms(rate, 500) + 11, ms(rate, 400)),
        (ms(rate, 1000), ms(rate, 60)),
    ];
    for ((start, len), digit) in spans.iter().zip("4#2".chars()) {
        add_tone(&mut signal, rate, digit, *start, *len, -10.0, -8.0);
    }
    (
        pcm(&signal),
        spans.iter().map(|&(start, len)| (start, start + len)).collect(),
    )
}

fn goertzel_energy(samples: &[i16], rate: u32, hz: f64) -> f64 {
    let c = 2.0 * (2.0 * PI * hz / f64::from(rate)).cos();
    let (mut s1, mut s2) = (0.0, 0.0);
    for &x in samples {
        let s = f64::from(x) + c * s1 - s2;
        (s2, s1) = (s1, s);
    }
    s1 * s1 + s2 * s2 - c * s1 * s2
}

#[test]
fn the_masker_silences_tones_and_passes_everything_else_bit_exact() {
    for rate in RATES {
        let (input, spans) = masker_input(rate);
        let (output, tones) = mask_chunked(rate, &input, 160);
        let delay = ms(rate, MASK_DELAY_MS as usize);
        assert_eq!(output.len(), input.len() + delay);
        assert_eq!(digits(&tones), "4#2");
        assert!(
            output[..delay].iter().all(|&x| x == 0),
            "the delay line starts silent"
        );
        let delayed = &output[delay..];

        let guard = ms(rate, MASK_GUARD_MS as usize);
        let mut masked = vec![false; input.len()];
        for tone in &tones {
            let start = (tone.start_sample as usize).saturating_sub(guard);
            let end = (tone.end_sample as usize + guard).min(input.len());
            masked[start..end].iter_mut().for_each(|m| *m = true);
        }
        for &(start, end) in &spans {
            assert!(
                masked[start..end].iter().all(|&m| m),
                "{rate} Hz: tone {start}..{end} fully masked"
            );
            let span = &delayed[start..end];
            assert!(span.iter().all(|&x| x == 0), "{rate} Hz: tone samples are zero");
            let energy: f64 = ROW_HZ
                .iter()
                .chain(&COLUMN_HZ)
                .map(|&hz| goertzel_energy(span, rate, hz))
                .sum();
            assert_eq!(
                energy, 0.0,
                "{rate} Hz: no energy at the DTMF frequencies in the masked span"
            );
        }
        for (n, (&x, &y)) in input.iter().zip(delayed).enumerate() {
            if !masked[n] {
                assert_eq!(x, y, "{rate} Hz: sample {n} outside tones passes unchanged");
            } else {
                assert_eq!(y, 0, "{rate} Hz: sample {n} inside a masked span is silent");
            }
        }
        let unmasked = masked.iter().filter(|&&m| !m).count();
        assert!(unmasked > input.len() / 2, "most of the audio is not masked");
    }
}

#[test]
fn the_masker_output_does_not_depend_on_chunk_size() {
    for rate in RATES {
        let (input, _) = masker_input(rate);
        let reference = mask_chunked(rate, &input, input.len());
        for chunk in [1, 7, 160, 4000] {
            assert_eq!(
                mask_chunked(rate, &input, chunk),
                reference,
                "{rate} Hz, chunks of {chunk}"
            );
        }
    }
}

#[test]
fn the_masker_passes_speech_unchanged() {
    let Some(speech) = espeak(SPEECH[1], 8000, "en") else {
        eprintln!("SKIPPED masker speech pass-through: espeak-ng and/or sox are not installed");
        return;
    };
    let (output, tones) = mask_chunked(8000, &speech, 160);
    assert!(tones.is_empty());
    assert_eq!(&output[ms(8000, MASK_DELAY_MS as usize)..], speech.as_slice());
}

#[test]
fn a_stream_shorter_than_the_delay_flushes_whole() {
    for rate in RATES {
        for len in [0, 1, 10, ms(rate, MASK_DELAY_MS as usize) - 1] {
            let input: Vec<i16> = (0..len).map(|n| n as i16 * 3 - 7).collect();
            let (output, tones) = mask_chunked(rate, &input, 7);
            let delay = ms(rate, MASK_DELAY_MS as usize);
            assert!(tones.is_empty());
            assert_eq!(output.len(), len + delay);
            assert_eq!(&output[delay..], input.as_slice());
        }
    }
}
