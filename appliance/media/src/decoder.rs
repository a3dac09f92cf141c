//! The per-stream decoder: one [`Codec`]'s RTP payloads to mono 16-bit PCM at the codec's PCM rate.

use crate::codec::Codec;
use crate::g711;
use crate::g722::G722Decoder;

/// Why a payload could not be decoded. Every variant is the peer's fault (a payload that does not fit its
/// negotiated codec) except [`DecodeError::NoChannels`], which is a configuration error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// An L16 payload whose length is not a whole number of sample frames (2 bytes × channels).
    #[error("L16 payload of {bytes} bytes is not a whole number of {frame_bytes}-byte frames")]
    PartialFrame { bytes: usize, frame_bytes: usize },
    /// An L16 codec configured with zero channels.
    #[error("L16 codec with zero channels")]
    NoChannels,
}

/// Decodes the payloads of one RTP stream. G.722 keeps filter and predictor state between payloads, so
/// use one decoder per stream and feed it payloads in playout order.
#[derive(Debug, Clone)]
pub struct Decoder {
    state: DecoderState,
}

#[derive(Debug, Clone)]
enum DecoderState {
    Pcmu,
    Pcma,
    G722(G722Decoder),
    L16 { channels: u8 },
}

impl Decoder {
    pub fn new(codec: Codec) -> Decoder {
        let state = match codec {
            Codec::Pcmu => DecoderState::Pcmu,
            Codec::Pcma => DecoderState::Pcma,
            Codec::G722 => DecoderState::G722(G722Decoder::new()),
            Codec::L16 { channels, .. } => DecoderState::L16 { channels },
        };
        Decoder { state }
    }

    /// Appends the mono PCM of `payload` to `out` (multi-channel L16 is averaged to mono). On error nothing
    /// is appended. `out` grows by at most two samples per payload byte.
    pub fn decode(&mut self, payload: &[u8], out: &mut Vec<i16>) -> Result<(), DecodeError> {
        match &mut self.state {
            DecoderState::Pcmu => g711::decode_ulaw(payload, out),
            DecoderState::Pcma => g711::decode_alaw(payload, out),
            DecoderState::G722(decoder) => decoder.decode(payload, out),
            DecoderState::L16 { channels } => decode_l16(payload, *channels, out)?,
        }
        Ok(())
    }
}

/// Big-endian interleaved 16-bit PCM; each frame's channels are averaged.
fn decode_l16(payload: &[u8], channels: u8, out: &mut Vec<i16>) -> Result<(), DecodeError> {
    if channels == 0 {
        return Err(DecodeError::NoChannels);
    }
    let frame_bytes = 2 * usize::from(channels);
    if !payload.len().is_multiple_of(frame_bytes) {
        return Err(DecodeError::PartialFrame {
            bytes: payload.len(),
            frame_bytes,
        });
    }
    out.reserve(payload.len() / frame_bytes);
    for frame in payload.chunks_exact(frame_bytes) {
        let sum: i32 = frame
            .chunks_exact(2)
            .map(|pair| i32::from(i16::from_be_bytes([pair[0], pair[1]])))
            .sum();
        // The mean of i16 values is an i16.
        out.push((sum / i32::from(channels)) as i16);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(codec: Codec, payload: &[u8]) -> Result<Vec<i16>, DecodeError> {
        let mut out = vec![7];
        Decoder::new(codec).decode(payload, &mut out)?;
        assert_eq!(out.first(), Some(&7), "decode appends");
        Ok(out.split_off(1))
    }

    #[test]
    fn g711_decodes_one_sample_per_byte() {
        assert_eq!(decode(Codec::Pcmu, &[0xFF, 0x7F, 0x80]), Ok(vec![0, 0, 32124]));
        assert_eq!(decode(Codec::Pcma, &[0xD5, 0x55]), Ok(vec![8, -8]));
    }

    #[test]
    fn l16_mono_is_big_endian() {
        let codec = Codec::L16 {
            rate: 16000,
            channels: 1,
        };
        assert_eq!(
            decode(codec, &[0x01, 0x02, 0xFF, 0xFE, 0x80, 0x00]),
            Ok(vec![0x0102, -2, i16::MIN])
        );
        assert_eq!(decode(codec, &[]), Ok(vec![]));
    }

    #[test]
    fn l16_odd_byte_count_is_rejected_and_appends_nothing() {
        let codec = Codec::L16 {
            rate: 8000,
            channels: 1,
        };
        let mut out = Vec::new();
        let result = Decoder::new(codec).decode(&[0x00, 0x01, 0x02], &mut out);
        assert_eq!(
            result,
            Err(DecodeError::PartialFrame {
                bytes: 3,
                frame_bytes: 2
            })
        );
        assert!(out.is_empty());
    }

    #[test]
    fn l16_stereo_is_downmixed_to_mono() {
        let codec = Codec::L16 {
            rate: 44100,
            channels: 2,
        };
        let payload = [
            0x7F, 0xFF, 0x7F, 0xFF, 0x00, 0x64, 0xFF, 0x9C, 0x80, 0x00, 0x80, 0x00,
        ];
        assert_eq!(decode(codec, &payload), Ok(vec![i16::MAX, 0, i16::MIN]));
        assert_eq!(
            decode(codec, &payload[..6]),
            Err(DecodeError::PartialFrame {
                bytes: 6,
                frame_bytes: 4
            })
        );
    }

    #[test]
    fn l16_without_channels_is_a_configuration_error() {
        assert_eq!(
            decode(
                Codec::L16 {
                    rate: 8000,
                    channels: 0
                },
                &[0, 0]
            ),
            Err(DecodeError::NoChannels)
        );
    }

    #[test]
    fn g722_decodes_two_samples_per_byte() {
        assert_eq!(
            decode(Codec::G722, &[0x00, 0xFF, 0x55]).map(|pcm| pcm.len()),
            Ok(6)
        );
    }

    #[test]
    fn no_payload_makes_any_decoder_panic() {
        let codecs = [
            Codec::Pcmu,
            Codec::Pcma,
            Codec::G722,
            Codec::L16 {
                rate: 8000,
                channels: 1,
            },
            Codec::L16 {
                rate: 48000,
                channels: 2,
            },
            Codec::L16 {
                rate: 48000,
                channels: 255,
            },
        ];
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        let mut out = Vec::new();
        for codec in codecs {
            let mut decoder = Decoder::new(codec);
            for length in 0..600usize {
                let payload: Vec<u8> = (0..length)
                    .map(|_| {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        seed as u8
                    })
                    .collect();
                out.clear();
                let _ = decoder.decode(&payload, &mut out);
                let _ = decoder.decode(&vec![0xFF; length], &mut out);
                let _ = decoder.decode(&vec![0x00; length], &mut out);
                let _ = decoder.decode(&vec![0x80; length], &mut out);
            }
        }
    }
}
