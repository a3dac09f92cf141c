//! The canonical 44-byte RIFF/WAVE header for 16-bit little-endian PCM, and a strict reader of such files
//! for tests and tools.

/// Size of the header [`header`] writes.
pub const HEADER_LEN: usize = 44;

/// The header of a PCM16 WAV file with `data_bytes` bytes of interleaved little-endian samples after it.
/// Sizes beyond what RIFF's 32-bit fields hold saturate at `u32::MAX`.
pub fn header(sample_rate: u32, channels: u16, data_bytes: u32) -> [u8; HEADER_LEN] {
    let block_align = channels.saturating_mul(2);
    let byte_rate = sample_rate.saturating_mul(u32::from(block_align));
    let riff_len = data_bytes.saturating_add(HEADER_LEN as u32 - 8);
    let mut out = [0u8; HEADER_LEN];
    let fields: [&[u8]; 13] = [
        b"RIFF",
        &riff_len.to_le_bytes(),
        b"WAVE",
        b"fmt ",
        &16u32.to_le_bytes(),
        &1u16.to_le_bytes(),
        &channels.to_le_bytes(),
        &sample_rate.to_le_bytes(),
        &byte_rate.to_le_bytes(),
        &block_align.to_le_bytes(),
        &16u16.to_le_bytes(),
        b"data",
        &data_bytes.to_le_bytes(),
    ];
    for (slot, byte) in out.iter_mut().zip(fields.iter().flat_map(|field| field.iter())) {
        *slot = *byte;
    }
    out
}

/// Why bytes are not a PCM16 WAV file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WavError {
    #[error("not a RIFF/WAVE file")]
    NotWave,
    #[error("chunk `{0}` runs past the end of the file")]
    TruncatedChunk(String),
    #[error("no `fmt ` chunk before the `data` chunk")]
    MissingFormat,
    #[error("no `data` chunk")]
    MissingData,
    #[error("format {format_tag} with {bits_per_sample} bits per sample is not PCM16")]
    NotPcm16 { format_tag: u16, bits_per_sample: u16 },
}

/// A parsed PCM16 WAV file borrowing its sample bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wav<'a> {
    pub sample_rate: u32,
    pub channels: u16,
    /// The `data` chunk: interleaved little-endian 16-bit samples.
    pub data: &'a [u8],
}

impl Wav<'_> {
    /// The interleaved samples (a trailing odd byte is ignored).
    pub fn samples(&self) -> Vec<i16> {
        self.data
            .chunks_exact(2)
            .map(|pair| i16::from_le_bytes([pair[0], pair[1]]))
            .collect()
    }
}

/// Reads a PCM16 WAV file: `fmt ` then `data`, skipping any other chunks. A `data` chunk whose declared
/// size exceeds the file (a recording cut short) is an error, since this reader is for checking output.
pub fn parse(bytes: &[u8]) -> Result<Wav<'_>, WavError> {
    let (Some(b"RIFF"), Some(b"WAVE")) = (bytes.get(0..4), bytes.get(8..12)) else {
        return Err(WavError::NotWave);
    };
    let mut rest = bytes.get(12..).unwrap_or_default();
    let mut format = None;
    while let (Some(id), Some(size)) = (rest.get(0..4), rest.get(4..8)) {
        let size = u32::from_le_bytes([size[0], size[1], size[2], size[3]]) as usize;
        let body = rest
            .get(8..8usize.saturating_add(size))
            .ok_or_else(|| WavError::TruncatedChunk(String::from_utf8_lossy(id).into_owned()))?;
        match id {
            b"fmt " => {
                let field = |at: usize| body.get(at..at + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
                let rate = body
                    .get(4..8)
                    .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
                let (Some(format_tag), Some(channels), Some(sample_rate), Some(bits_per_sample)) =
                    (field(0), field(2), rate, field(14))
                else {
                    return Err(WavError::TruncatedChunk("fmt ".to_string()));
                };
                if format_tag != 1 || bits_per_sample != 16 {
                    return Err(WavError::NotPcm16 {
                        format_tag,
                        bits_per_sample,
                    });
                }
                format = Some((sample_rate, channels));
            }
            b"data" => {
                let (sample_rate, channels) = format.ok_or(WavError::MissingFormat)?;
                return Ok(Wav {
                    sample_rate,
                    channels,
                    data: body,
                });
            }
            _ => {}
        }
        // Chunks are padded to an even length.
        let next = 8usize.saturating_add(size).saturating_add(size % 2);
        rest = rest.get(next..).unwrap_or_default();
    }
    Err(WavError::MissingData)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_canonical_pcm16() {
        let bytes = header(16000, 2, 64000);
        assert_eq!(&bytes[0..4], b"RIFF");
        assert_eq!(
            u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]),
            64036
        );
        assert_eq!(&bytes[8..16], b"WAVEfmt ");
        assert_eq!(&bytes[16..20], &16u32.to_le_bytes());
        assert_eq!(&bytes[20..24], &[1, 0, 2, 0]);
        assert_eq!(&bytes[24..28], &16000u32.to_le_bytes());
        assert_eq!(&bytes[28..32], &64000u32.to_le_bytes());
        assert_eq!(&bytes[32..36], &[4, 0, 16, 0]);
        assert_eq!(&bytes[36..40], b"data");
        assert_eq!(&bytes[40..44], &64000u32.to_le_bytes());
    }

    #[test]
    fn header_and_parser_agree() {
        let samples: [i16; 4] = [1, -1, i16::MAX, i16::MIN];
        let mut file = header(8000, 1, 8).to_vec();
        file.extend(samples.iter().flat_map(|s| s.to_le_bytes()));
        let wav = parse(&file).expect("valid file");
        assert_eq!((wav.sample_rate, wav.channels), (8000, 1));
        assert_eq!(wav.samples(), samples);
    }

    #[test]
    fn parser_skips_unknown_chunks_and_rejects_bad_files() {
        let mut file = header(8000, 1, 2).to_vec();
        file.splice(36..36, b"LIST\x03\x00\x00\x00abc\x00".iter().copied());
        file.extend([5, 0]);
        assert_eq!(parse(&file).map(|wav| wav.samples()), Ok(vec![5]));
        assert_eq!(parse(b"RIFX"), Err(WavError::NotWave));
        let truncated = header(8000, 1, 100);
        assert_eq!(
            parse(&truncated),
            Err(WavError::TruncatedChunk("data".to_string()))
        );
        let mut float = header(8000, 1, 0);
        float[20] = 3;
        assert_eq!(
            parse(&float),
            Err(WavError::NotPcm16 {
                format_tag: 3,
                bits_per_sample: 16
            })
        );
    }

    #[test]
    fn parser_never_panics_on_prefixes() {
        let mut file = header(8000, 1, 4).to_vec();
        file.extend([1, 2, 3, 4]);
        for end in 0..file.len() {
            let _ = parse(&file[..end]);
        }
        let _ = parse(&header(8000, 1, u32::MAX));
    }
}
