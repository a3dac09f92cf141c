//! Checks a whisper.cpp model file (the legacy `ggml` layout) before it is handed to whisper.cpp, so a
//! missing, truncated or foreign file is a startup error that names the problem rather than a crash or a
//! silent misload. Walks the whole file: header, mel filters, vocabulary, then every tensor's header and
//! the exact byte length its type and shape imply, and requires the file to end where the last tensor does.
//! Works for any Whisper model an operator installs (tiny … large, English-only or multilingual, f32, f16 or
//! quantised).

use std::io::Read;

const MAGIC: u32 = 0x6767_6d6c;
/// Larger than any real value: guards allocations and arithmetic against hostile headers.
const MAX_DIM: u64 = 1 << 24;
const MAX_NAME: usize = 256;
const MAX_TOKEN_BYTES: usize = 1024;

/// The hyper-parameters and content summary of a checked model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInfo {
    pub n_vocab: u32,
    pub n_audio_ctx: u32,
    pub n_audio_state: u32,
    pub n_audio_layer: u32,
    pub n_text_layer: u32,
    pub n_mels: u32,
    /// ggml file type (1 = f16, 2007 = Q8_0 after re-quantisation, …).
    pub ftype: u32,
    pub tensors: usize,
    /// The model's size class by encoder layers: "tiny", "base", "small", "medium", "large".
    pub size_class: &'static str,
    /// Whether the vocabulary is the English-only one.
    pub english_only: bool,
}

/// Why a model file was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ModelFileError {
    #[error("not a whisper.cpp ggml model (magic {0:#010x})")]
    BadMagic(u32),
    #[error("the file ends early, inside the {0}")]
    Truncated(&'static str),
    #[error("implausible header value {name} = {value}")]
    BadHeader { name: &'static str, value: i64 },
    #[error("tensor #{index} is malformed: {reason}")]
    BadTensor { index: usize, reason: String },
    #[error("required tensor {0} is missing")]
    MissingTensor(&'static str),
    #[error("cannot read the file: {0}")]
    Io(String),
}

/// Bytes taken by `elements` values of ggml type `kind`, or None for a type whisper.cpp cannot load.
fn tensor_bytes(kind: u32, elements: u64) -> Option<u64> {
    // (block size, bytes per block) of the ggml types whisper.cpp's loader accepts.
    let (block, bytes) = match kind {
        0 => (1, 4),   // f32
        1 => (1, 2),   // f16
        2 => (32, 18), // q4_0
        3 => (32, 20), // q4_1
        6 => (32, 22), // q5_0
        7 => (32, 24), // q5_1
        8 => (32, 34), // q8_0
        _ => return None,
    };
    if !elements.is_multiple_of(block) {
        return None;
    }
    (elements / block).checked_mul(bytes)
}

struct Reader<R> {
    inner: R,
}

impl<R: Read> Reader<R> {
    fn u32(&mut self, what: &'static str) -> Result<u32, ModelFileError> {
        let mut bytes = [0u8; 4];
        self.exact(&mut bytes, what)?;
        Ok(u32::from_le_bytes(bytes))
    }

    fn count(&mut self, name: &'static str, max: u64) -> Result<u32, ModelFileError> {
        let value = self.u32(name)?;
        if value == 0 || u64::from(value) > max {
            return Err(ModelFileError::BadHeader {
                name,
                value: i64::from(value as i32),
            });
        }
        Ok(value)
    }

    fn exact(&mut self, buf: &mut [u8], what: &'static str) -> Result<(), ModelFileError> {
        self.inner.read_exact(buf).map_err(|error| match error.kind() {
            std::io::ErrorKind::UnexpectedEof => ModelFileError::Truncated(what),
            _ => ModelFileError::Io(error.to_string()),
        })
    }

    /// Skips `len` bytes; fails if the file ends first.
    fn skip(&mut self, len: u64, what: &'static str) -> Result<(), ModelFileError> {
        let copied = std::io::copy(&mut (&mut self.inner).take(len), &mut std::io::sink())
            .map_err(|error| ModelFileError::Io(error.to_string()))?;
        if copied == len {
            Ok(())
        } else {
            Err(ModelFileError::Truncated(what))
        }
    }

    /// Reads one byte if there is one (the end of the tensor list).
    fn at_end(&mut self) -> Result<Option<u8>, ModelFileError> {
        let mut byte = [0u8; 1];
        loop {
            match self.inner.read(&mut byte) {
                Ok(0) => return Ok(None),
                Ok(_) => return Ok(Some(byte[0])),
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                Err(error) => return Err(ModelFileError::Io(error.to_string())),
            }
        }
    }
}

/// Checks the model read from `input` and summarises it.
pub fn check_model(input: impl Read) -> Result<ModelInfo, ModelFileError> {
    let mut reader = Reader { inner: input };
    let magic = reader.u32("header")?;
    if magic != MAGIC {
        return Err(ModelFileError::BadMagic(magic));
    }
    let n_vocab = reader.count("n_vocab", 1 << 20)?;
    let n_audio_ctx = reader.count("n_audio_ctx", 1 << 16)?;
    let n_audio_state = reader.count("n_audio_state", 1 << 16)?;
    reader.count("n_audio_head", 1 << 10)?;
    let n_audio_layer = reader.count("n_audio_layer", 1 << 10)?;
    reader.count("n_text_ctx", 1 << 16)?;
    reader.count("n_text_state", 1 << 16)?;
    reader.count("n_text_head", 1 << 10)?;
    let n_text_layer = reader.count("n_text_layer", 1 << 10)?;
    let n_mels = reader.count("n_mels", 512)?;
    let ftype = reader.u32("header")?;
    let mel_rows = reader.count("mel filter rows", 512)?;
    let mel_cols = reader.count("mel filter columns", 1 << 16)?;
    if mel_rows != n_mels {
        return Err(ModelFileError::BadHeader {
            name: "mel filter rows",
            value: i64::from(mel_rows),
        });
    }
    reader.skip(u64::from(mel_rows) * u64::from(mel_cols) * 4, "mel filters")?;
    let tokens = reader.count("vocabulary size", 1 << 20)?;
    for _ in 0..tokens {
        let len = reader.u32("vocabulary")? as usize;
        if len > MAX_TOKEN_BYTES {
            return Err(ModelFileError::BadHeader {
                name: "token length",
                value: len as i64,
            });
        }
        reader.skip(len as u64, "vocabulary")?;
    }
    let mut seen_conv = false;
    let mut seen_embedding = false;
    let mut index = 0usize;
    while let Some(first) = reader.at_end()? {
        let mut rest = [0u8; 3];
        reader.exact(&mut rest, "tensor header")?;
        let n_dims = u32::from_le_bytes([first, rest[0], rest[1], rest[2]]);
        let name_len = reader.u32("tensor header")? as usize;
        let kind = reader.u32("tensor header")?;
        let bad = |reason: String| ModelFileError::BadTensor { index, reason };
        if !(1..=4).contains(&n_dims) {
            return Err(bad(format!("{n_dims} dimensions")));
        }
        if name_len == 0 || name_len > MAX_NAME {
            return Err(bad(format!("name length {name_len}")));
        }
        let mut elements = 1u64;
        for _ in 0..n_dims {
            let dim = u64::from(reader.u32("tensor header")?);
            if dim == 0 || dim > MAX_DIM {
                return Err(bad(format!("dimension {dim}")));
            }
            elements = elements.saturating_mul(dim);
        }
        let mut name = vec![0u8; name_len];
        reader.exact(&mut name, "tensor header")?;
        let name = String::from_utf8(name).map_err(|_| bad("name is not UTF-8".into()))?;
        let bytes = tensor_bytes(kind, elements)
            .ok_or_else(|| bad(format!("{name}: type {kind} with {elements} values")))?;
        reader.skip(bytes, "tensor data")?;
        seen_conv |= name == "encoder.conv1.weight";
        seen_embedding |= name == "decoder.token_embedding.weight";
        index += 1;
    }
    if !seen_conv {
        return Err(ModelFileError::MissingTensor("encoder.conv1.weight"));
    }
    if !seen_embedding {
        return Err(ModelFileError::MissingTensor("decoder.token_embedding.weight"));
    }
    let size_class = match n_audio_layer {
        0..=4 => "tiny",
        5..=6 => "base",
        7..=12 => "small",
        13..=24 => "medium",
        _ => "large",
    };
    Ok(ModelInfo {
        n_vocab,
        n_audio_ctx,
        n_audio_state,
        n_audio_layer,
        n_text_layer,
        n_mels,
        ftype,
        tensors: index,
        size_class,
        english_only: n_vocab < 51_865,
    })
}

/// Fuzz entry: the checker must return, never panic or allocate without bound, on any input.
pub fn fuzz_check_model(data: &[u8]) {
    let _ = check_model(data);
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A structurally valid miniature model: `tensors` of (name, type, dims).
    pub(crate) fn tiny_model(tensors: &[(&str, u32, &[u32])]) -> Vec<u8> {
        let mut out = Vec::new();
        let put = |v: u32, out: &mut Vec<u8>| out.extend_from_slice(&v.to_le_bytes());
        put(MAGIC, &mut out);
        for v in [51_864, 1500, 384, 6, 4, 448, 384, 6, 4, 80, 1] {
            put(v, &mut out);
        }
        put(80, &mut out);
        put(2, &mut out);
        out.extend(std::iter::repeat_n(0u8, 80 * 2 * 4));
        put(2, &mut out);
        for token in ["a", "bc"] {
            put(token.len() as u32, &mut out);
            out.extend_from_slice(token.as_bytes());
        }
        for (name, kind, dims) in tensors {
            put(dims.len() as u32, &mut out);
            put(name.len() as u32, &mut out);
            put(*kind, &mut out);
            for d in *dims {
                put(*d, &mut out);
            }
            out.extend_from_slice(name.as_bytes());
            let elements = dims.iter().fold(1u64, |n, &d| n.saturating_mul(u64::from(d)));
            out.extend(std::iter::repeat_n(
                0u8,
                tensor_bytes(*kind, elements).unwrap_or(0) as usize,
            ));
        }
        out
    }

    const GOOD: &[(&str, u32, &[u32])] = &[
        ("encoder.conv1.weight", 1, &[3, 8, 4]),
        ("encoder.conv1.bias", 0, &[1, 4]),
        ("decoder.token_embedding.weight", 8, &[64, 4]),
    ];

    #[test]
    fn a_well_formed_model_is_summarised() {
        let info = check_model(tiny_model(GOOD).as_slice()).unwrap();
        assert_eq!(info.tensors, 3);
        assert_eq!(info.n_vocab, 51_864);
        assert_eq!(info.size_class, "tiny");
        assert!(info.english_only);
    }

    #[test]
    fn every_truncation_is_reported_not_panicked() {
        let model = tiny_model(GOOD);
        for len in 0..model.len() {
            let result = check_model(&model[..len]);
            assert!(result.is_err(), "prefix of {len} bytes accepted");
        }
    }

    #[test]
    fn foreign_files_and_bad_tensors_are_named() {
        assert_eq!(
            check_model(&b"GGUF\x03\0\0\0"[..]),
            Err(ModelFileError::BadMagic(0x4655_4747))
        );
        let mut trailing = tiny_model(GOOD);
        trailing.push(7);
        assert!(matches!(
            check_model(trailing.as_slice()),
            Err(ModelFileError::Truncated("tensor header"))
        ));
        let odd = tiny_model(&[("encoder.conv1.weight", 8, &[3, 80, 5])]);
        assert!(matches!(
            check_model(odd.as_slice()),
            Err(ModelFileError::BadTensor { index: 0, .. })
        ));
        // Dimensions whose product overflows must be refused, not wrap or panic (found by fuzzing).
        let huge = tiny_model(&[("encoder.conv1.weight", 0, &[1 << 24, 1 << 24, 1 << 24, 1 << 24])]);
        assert!(matches!(
            check_model(huge.as_slice()),
            Err(ModelFileError::BadTensor { index: 0, .. })
        ));
        let missing = tiny_model(&GOOD[..2]);
        assert_eq!(
            check_model(missing.as_slice()),
            Err(ModelFileError::MissingTensor("decoder.token_embedding.weight"))
        );
    }
}
