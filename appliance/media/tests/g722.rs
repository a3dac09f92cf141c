//! G.722 against an independent implementation (FFmpeg's, via the vectors in tests/data) and round trips
//! through our own encoder and decoder.

use airlock_media::g722::{G722Decoder, G722Encoder};
use airlock_media::{Codec, Decoder};

const SPEECH: &[u8] = include_bytes!("data/speech_16k.s16le");
const FFMPEG_BITSTREAM: &[u8] = include_bytes!("data/speech_ffmpeg.g722");
const FFMPEG_DECODED: &[u8] = include_bytes!("data/speech_ffmpeg_decoded.s16le");

/// Input to output delay of the analysis plus synthesis QMF, in 16 kHz samples (the 24-tap filters
/// contribute 23 samples; the decoder emits the older sample of each pair first).
const CODEC_DELAY: usize = 22;

fn pcm(bytes: &[u8]) -> Vec<i16> {
    bytes
        .chunks_exact(2)
        .map(|pair| i16::from_le_bytes([pair[0], pair[1]]))
        .collect()
}

fn encode(samples: &[i16]) -> Vec<u8> {
    let mut bits = Vec::new();
    G722Encoder::new().encode(samples, &mut bits);
    bits
}

fn decode(bits: &[u8]) -> Vec<i16> {
    let mut out = Vec::new();
    G722Decoder::new().decode(bits, &mut out);
    out
}

/// Signal-to-noise ratio in dB of `output` against `input` delayed by `delay`, skipping the start-up.
fn snr_db(input: &[i16], output: &[i16], delay: usize) -> f64 {
    let skip = 400;
    let (mut signal, mut noise) = (0f64, 0f64);
    for (&x, &y) in input.iter().zip(output.iter().skip(delay)).skip(skip) {
        signal += f64::from(x).powi(2);
        noise += (f64::from(x) - f64::from(y)).powi(2);
    }
    10.0 * (signal / noise.max(1.0)).log10()
}

/// The delay at which the round trip matches the input best.
fn best_delay(input: &[i16], output: &[i16]) -> usize {
    (0..64)
        .max_by(|&a, &b| snr_db(input, output, a).total_cmp(&snr_db(input, output, b)))
        .unwrap_or(0)
}

fn xorshift(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

#[test]
fn encoder_reproduces_the_reference_bitstream() {
    let ours = encode(&pcm(SPEECH));
    assert_eq!(ours.len(), FFMPEG_BITSTREAM.len());
    let first_difference = ours.iter().zip(FFMPEG_BITSTREAM).position(|(a, b)| a != b);
    assert_eq!(first_difference, None);
}

#[test]
fn decoder_reproduces_the_reference_pcm() {
    let ours = decode(FFMPEG_BITSTREAM);
    let reference = pcm(FFMPEG_DECODED);
    assert_eq!(ours.len(), reference.len());
    let first_difference = ours.iter().zip(&reference).position(|(a, b)| a != b);
    assert_eq!(first_difference, None);
}

#[test]
fn decoder_keeps_state_across_payloads() {
    let mut decoder = Decoder::new(Codec::G722);
    let mut out = Vec::new();
    for payload in FFMPEG_BITSTREAM.chunks(160) {
        decoder
            .decode(payload, &mut out)
            .expect("G.722 accepts any bytes");
    }
    assert_eq!(out, pcm(FFMPEG_DECODED));
}

#[test]
fn speech_round_trip() {
    let input = pcm(SPEECH);
    let output = decode(&encode(&input));
    let delay = best_delay(&input, &output);
    assert_eq!(delay, CODEC_DELAY);
    let snr = snr_db(&input, &output, CODEC_DELAY);
    assert!(snr > 25.0, "speech SNR {snr:.1} dB");
}

#[test]
fn sine_round_trip() {
    for frequency in [440.0, 1000.0, 3000.0, 6000.0] {
        let input: Vec<i16> = (0..16000)
            .map(|n| {
                (12000.0 * (2.0 * std::f64::consts::PI * frequency * f64::from(n) / 16000.0).sin()) as i16
            })
            .collect();
        let output = decode(&encode(&input));
        let snr = snr_db(&input, &output, CODEC_DELAY);
        let required = if frequency < 4000.0 { 38.0 } else { 22.0 };
        assert!(snr > required, "{frequency} Hz sine SNR {snr:.1} dB");
    }
}

#[test]
fn speech_like_noise_round_trip() {
    // White noise through a two-pole resonator near 700 Hz plus a slow envelope: a crude voiced sound.
    let mut seed = 0x9E37_79B9_7F4A_7C15;
    let (mut y1, mut y2) = (0f64, 0f64);
    let input: Vec<i16> = (0..32000)
        .map(|n| {
            let white = (xorshift(&mut seed) % 2001) as f64 - 1000.0;
            let y =
                white + 1.8 * (2.0 * std::f64::consts::PI * 700.0 / 16000.0).cos() * 0.95 * y1 - 0.9025 * y2;
            (y2, y1) = (y1, y);
            let envelope = 0.55 + 0.45 * (2.0 * std::f64::consts::PI * 4.0 * f64::from(n) / 16000.0).sin();
            (y * envelope * 0.8).clamp(-32768.0, 32767.0) as i16
        })
        .collect();
    let output = decode(&encode(&input));
    let snr = snr_db(&input, &output, CODEC_DELAY);
    assert!(snr > 25.0, "noise SNR {snr:.1} dB");
}

#[test]
fn full_scale_input_saturates_without_panicking() {
    let input: Vec<i16> = (0..4000)
        .map(|n| if n % 7 < 3 { i16::MAX } else { i16::MIN })
        .collect();
    let output = decode(&encode(&input));
    assert_eq!(output.len(), input.len());
}

#[test]
fn decoding_any_byte_sequence_is_safe() {
    let mut decoder = G722Decoder::new();
    let mut out = Vec::new();
    let all_codes: Vec<u8> = (0..=255).collect();
    for _ in 0..200 {
        decoder.decode(&all_codes, &mut out);
        decoder.decode(&[0xFF; 256], &mut out);
        decoder.decode(&[0x00; 256], &mut out);
    }
    let mut seed = 1;
    let random: Vec<u8> = (0..200_000).map(|_| xorshift(&mut seed) as u8).collect();
    decoder.decode(&random, &mut out);
    assert_eq!(out.len(), 2 * (200 * 3 * 256 + random.len()));
}

#[test]
fn an_odd_sample_waits_for_its_pair() {
    let input = pcm(SPEECH);
    let mut encoder = G722Encoder::new();
    let mut bits = Vec::new();
    for chunk in input.chunks(161) {
        encoder.encode(chunk, &mut bits);
    }
    assert_eq!(bits, FFMPEG_BITSTREAM);
}
