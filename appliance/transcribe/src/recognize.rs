//! Whisper decoding of one speech segment: the shared model (weights loaded once), a decoder state per
//! worker thread, the decoding settings, and the guards that keep Whisper's known failure modes out of a
//! transcript — text on silence or noise, and the same words repeated.
//!
//! Cost control: Whisper normally encodes a full 30 s window whatever the segment's length. The encoder
//! context is trimmed to the segment (plus one second) with a floor, which measured ~2.7× cheaper on short
//! utterances; very short contexts make Whisper repeat itself, which the floor and the repetition guard
//! handle.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use whisper_rs::{FullParams, SamplingStrategy, WhisperContext, WhisperContextParameters, WhisperState};

use crate::model::{ModelFileError, ModelInfo, check_model};

/// Whisper's encoder frames per second of audio (one per 20 ms).
const ENCODER_FRAMES_PER_SECOND: f64 = 50.0;
/// Whisper's token timestamps count in 10 ms units.
const TIMESTAMP_UNIT_MS: i64 = 10;

/// Decoding settings; validated by configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct DecoderConfig {
    /// Smallest encoder context (frames of 20 ms); 1500 disables trimming.
    pub audio_ctx_floor: u32,
    /// A segment whose no-speech probability is above this *and* whose mean token probability is below
    /// `min_confidence` is treated as non-speech.
    pub no_speech_threshold: f32,
    pub min_confidence: f32,
    /// Whether whisper.cpp uses flash attention. Off by default: on x86-64 (AVX-512) with tiny.en its CPU
    /// kernel measured 10–15 % more CPU than plain attention, which in turn needs ~35 MB more memory per
    /// decoder state for 20-s segments (its score buffers grow with the segment; docs/BENCHMARKS.md §7).
    pub flash_attention: bool,
    /// Temperature step of whisper.cpp's fallback: a segment whose greedy decoding looks wrong (low mean
    /// log-probability, or repetitive) is decoded again at 0.2, 0.4, … 1.0 by sampling. 0 disables it, which
    /// saves little CPU and lets loops that are not exact repeats through (docs/BENCHMARKS.md §7).
    pub temperature_inc: f32,
    /// The text of a leg's previous segment is given to Whisper as a prompt when that segment ended at
    /// most this long before the new one starts (a sentence split at a pause keeps its context); zero
    /// decodes every segment on its own.
    pub context_window: Duration,
}

impl Default for DecoderConfig {
    fn default() -> Self {
        DecoderConfig {
            audio_ctx_floor: 512,
            no_speech_threshold: 0.6,
            min_confidence: 0.45,
            flash_attention: false,
            temperature_inc: 0.2,
            context_window: Duration::from_secs(5),
        }
    }
}

/// Why the model could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot open the model {path}: {error}")]
    Open { path: String, error: String },
    #[error("the model {path} is not usable: {error}")]
    Invalid { path: String, error: ModelFileError },
    #[error("whisper.cpp refused the model {path}: {error}")]
    Load { path: String, error: String },
    #[error("cannot allocate a decoder state: {0}")]
    State(String),
}

/// A checked, loaded Whisper model; shared by every worker.
#[derive(Clone)]
pub struct Model {
    context: Arc<WhisperContext>,
    info: ModelInfo,
    config: DecoderConfig,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model").field("info", &self.info).finish()
    }
}

impl Model {
    /// Checks the file's structure, then loads it into whisper.cpp.
    pub fn load(path: &Path, config: DecoderConfig) -> Result<Model, ModelError> {
        let shown = path.display().to_string();
        let file = std::fs::File::open(path).map_err(|error| ModelError::Open {
            path: shown.clone(),
            error: error.to_string(),
        })?;
        let info = check_model(std::io::BufReader::with_capacity(1 << 20, file)).map_err(|error| {
            ModelError::Invalid {
                path: shown.clone(),
                error,
            }
        })?;
        // whisper.cpp logs through its own hooks; with no backend they go nowhere, so nothing it prints
        // (it can echo tokens in debug builds) reaches our logs.
        whisper_rs::install_logging_hooks();
        let mut params = WhisperContextParameters::default();
        params.flash_attn(config.flash_attention);
        let context = WhisperContext::new_with_params(path, params).map_err(|error| ModelError::Load {
            path: shown,
            error: error.to_string(),
        })?;
        Ok(Model {
            context: Arc::new(context),
            info,
            config,
        })
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// A decoder state (tiny.en: ~23 MB when created, growing with the longest segment decoded, by ~35 MB
    /// more at 20 s without flash attention); one per worker thread, reused for every segment.
    pub fn decoder(&self) -> Result<Decoder, ModelError> {
        let state = self
            .context
            .create_state()
            .map_err(|error| ModelError::State(error.to_string()))?;
        Ok(Decoder {
            state,
            config: self.config.clone(),
            english_only: self.info.english_only,
            eot: self.context.token_eot(),
        })
    }
}

/// One word with its time inside the segment.
#[derive(Debug, Clone, PartialEq)]
pub struct Word {
    pub text: String,
    pub start_ms: u32,
    pub end_ms: u32,
    pub probability: f32,
}

/// What decoding one segment produced.
#[derive(Debug, Clone, PartialEq)]
pub enum Recognition {
    Text {
        text: String,
        words: Vec<Word>,
        /// Mean token probability of the text.
        confidence: f32,
        /// Whether a repeated phrase was collapsed.
        repetition_removed: bool,
    },
    /// The decoder judged it not speech (or produced nothing but non-speech markers).
    NoSpeech,
}

/// A worker's decoder state.
pub struct Decoder {
    state: WhisperState,
    config: DecoderConfig,
    english_only: bool,
    eot: i32,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder").finish_non_exhaustive()
    }
}

/// The encoder context for `samples` of 16 kHz audio: the audio plus one second, at least the floor, at
/// most Whisper's full window.
pub fn audio_context(samples: usize, floor: u32) -> u32 {
    let seconds = samples as f64 / 16_000.0 + 1.0;
    let frames = (seconds * ENCODER_FRAMES_PER_SECOND).ceil() as u32;
    frames.clamp(floor.min(1500), 1500)
}

/// Tokens allowed for a segment of `samples` 16 kHz samples: 8 per second plus 10, at most Whisper's 224.
pub fn max_tokens(samples: usize) -> u32 {
    let seconds = samples as f64 / 16_000.0;
    ((seconds * 8.0).ceil() as u32 + 10).min(224)
}

impl Decoder {
    /// How recent a leg's previous segment must be to prompt the next one.
    pub fn context_window(&self) -> Duration {
        self.config.context_window
    }

    /// Transcribes one segment of 16 kHz mono audio (at most 30 s); `previous_text`, what the same
    /// speaker said just before, is given to Whisper as context.
    pub fn recognize(&mut self, audio: &[f32], previous_text: Option<&str>) -> Result<Recognition, String> {
        if audio.is_empty() {
            return Ok(Recognition::NoSpeech);
        }
        let mut params = FullParams::new(SamplingStrategy::Greedy { best_of: 1 });
        params.set_n_threads(1);
        params.set_language(Some("en"));
        params.set_translate(false);
        params.set_no_context(true);
        // Timestamp tokens on (whisper may split the segment at them): they anchor the per-token times
        // that become word timings; without them every word would sit at the segment's start.
        params.set_single_segment(false);
        params.set_no_timestamps(false);
        params.set_token_timestamps(true);
        params.set_suppress_blank(true);
        params.set_suppress_nst(true);
        params.set_print_special(false);
        params.set_print_progress(false);
        params.set_print_realtime(false);
        params.set_print_timestamps(false);
        params.set_audio_ctx(audio_context(audio.len(), self.config.audio_ctx_floor) as i32);
        // Nobody says more than ~6 tokens a second: a decoder running past that is looping or inventing.
        params.set_max_tokens(max_tokens(audio.len()) as i32);
        // Whisper's own no-speech rule (needs the logprob check too); ours below also looks at confidence.
        params.set_no_speech_thold(self.config.no_speech_threshold);
        params.set_temperature_inc(self.config.temperature_inc);
        if let Some(previous) = previous_text.filter(|text| !text.trim().is_empty()) {
            params.set_initial_prompt(previous);
        }
        if !self.english_only {
            params.set_detect_language(false);
        }
        self.state
            .full(params, audio)
            .map_err(|error| error.to_string())?;
        let mut text = String::new();
        let mut words: Vec<Word> = Vec::new();
        let (mut probability_sum, mut tokens) = (0.0f32, 0usize);
        let mut no_speech = 0.0f32;
        for segment in self.state.as_iter() {
            no_speech = no_speech.max(segment.no_speech_probability());
            for index in 0..segment.n_tokens() {
                let Some(token) = segment.get_token(index) else {
                    continue;
                };
                let data = token.token_data();
                if data.id >= self.eot {
                    continue; // special and timestamp tokens
                }
                let Ok(piece) = token.to_str_lossy() else {
                    continue;
                };
                let piece = piece.into_owned();
                probability_sum += data.p;
                tokens += 1;
                text.push_str(&piece);
                let start_ms = u32::try_from(data.t0.max(0) * TIMESTAMP_UNIT_MS).unwrap_or(u32::MAX);
                let end_ms = u32::try_from(data.t1.max(0) * TIMESTAMP_UNIT_MS).unwrap_or(u32::MAX);
                match words.last_mut() {
                    Some(word) if !piece.starts_with(' ') => {
                        word.text.push_str(&piece);
                        word.end_ms = word.end_ms.max(end_ms);
                        word.probability = word.probability.min(data.p);
                    }
                    _ => words.push(Word {
                        text: piece.trim_start().to_string(),
                        start_ms,
                        end_ms: end_ms.max(start_ms),
                        probability: data.p,
                    }),
                }
            }
        }
        let confidence = if tokens == 0 {
            0.0
        } else {
            probability_sum / tokens as f32
        };
        Ok(guard(text, words, confidence, no_speech, &self.config))
    }
}

/// Applies the hallucination guards to a decoded segment.
fn guard(
    text: String,
    words: Vec<Word>,
    confidence: f32,
    no_speech: f32,
    config: &DecoderConfig,
) -> Recognition {
    let words: Vec<Word> = words
        .into_iter()
        .filter(|word| !is_non_speech_marker(&word.text) && !word.text.trim().is_empty())
        .collect();
    if words.is_empty() || text.trim().is_empty() {
        return Recognition::NoSpeech;
    }
    if no_speech > config.no_speech_threshold && confidence < config.min_confidence {
        return Recognition::NoSpeech;
    }
    let (words, repetition_removed) = collapse_repeats(words);
    let text = words
        .iter()
        .map(|word| word.text.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    Recognition::Text {
        text,
        words,
        confidence,
        repetition_removed,
    }
}

/// Whisper's annotations for what it heard instead of words: `[BLANK_AUDIO]`, `(music)`, `*sigh*`, `♪`.
fn is_non_speech_marker(word: &str) -> bool {
    let word = word.trim();
    (word.starts_with('[') && word.ends_with(']'))
        || (word.starts_with('(') && word.ends_with(')'))
        || (word.starts_with('*') && word.ends_with('*') && word.len() > 1)
        || word.chars().all(|c| c == '♪' || c == '♫' || c.is_whitespace())
}

/// The longest phrase length checked for repetition (Whisper's loops repeat whole sentences).
const MAX_REPEATED_PHRASE: usize = 32;
/// A phrase of one or two words repeated more than `SHORT_LOOP` times in a row is Whisper stuck (its loops
/// run on to the token cap) and is cut back to `MAX_REPEATS`; up to `SHORT_LOOP` times it is what people say
/// ("no, no, no", "word word word word word").
const MAX_REPEATS: usize = 2;
const SHORT_LOOP: usize = 6;
/// A phrase this long or longer may occur only once in a row: people rarely say the same three words twice
/// back to back, while Whisper on a trimmed window often does ("ten of clubs ten of clubs ten of").
const LONG_PHRASE: usize = 3;

/// Removes runs of the same phrase repeated more than allowed in a row (the loop Whisper falls into on
/// short or trimmed windows), keeping the first occurrences; a loop cut off mid-phrase by the token cap at
/// the end of the text goes too.
fn collapse_repeats(mut words: Vec<Word>) -> (Vec<Word>, bool) {
    let mut normal: Vec<String> = words
        .iter()
        .map(|word| {
            word.text
                .trim_matches(|c: char| !c.is_alphanumeric())
                .to_lowercase()
        })
        .collect();
    let mut removed = false;
    let mut start = 0;
    while start < words.len() {
        let mut cut = None;
        for length in 1..=MAX_REPEATED_PHRASE.min((words.len() - start) / 2) {
            let phrase = &normal[start..start + length];
            let mut repeats = 1;
            while words.len() >= start + (repeats + 1) * length
                && normal[start + repeats * length..start + (repeats + 1) * length] == *phrase
            {
                repeats += 1;
            }
            let (allowed, loop_from) = if length >= LONG_PHRASE {
                (1, 2)
            } else {
                (MAX_REPEATS, SHORT_LOOP + 1)
            };
            if repeats >= loop_from {
                let end = start + repeats * length;
                let tail = &normal[end..];
                let end = if tail.len() < length && phrase.starts_with(tail) {
                    words.len()
                } else {
                    end
                };
                cut = Some((start + allowed * length, end));
                break;
            }
        }
        if let Some((from, to)) = cut {
            words.drain(from..to);
            normal.drain(from..to);
            removed = true;
        }
        start += 1;
    }
    (words, removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<Word> {
        text.split_whitespace()
            .enumerate()
            .map(|(i, w)| Word {
                text: w.to_string(),
                start_ms: i as u32 * 100,
                end_ms: i as u32 * 100 + 90,
                probability: 0.9,
            })
            .collect()
    }

    fn joined(words: &[Word]) -> String {
        words
            .iter()
            .map(|w| w.text.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn looping_phrases_are_collapsed_but_real_repetition_stays() {
        let (out, removed) = collapse_repeats(words("ten of clubs ten of clubs ten of clubs ten of clubs"));
        assert!(removed);
        assert_eq!(joined(&out), "ten of clubs");
        let (out, _) = collapse_repeats(words("10 of clubs 10 of clubs 10 of"));
        assert_eq!(joined(&out), "10 of clubs");
        let (out, _) = collapse_repeats(words("I hardly know her. I hardly know her. Thanks."));
        assert_eq!(joined(&out), "I hardly know her. Thanks.");
        let long = "and the sixth I have a full slide so it makes difference ";
        let (out, _) = collapse_repeats(words(&format!("{} the reporting", long.repeat(4))));
        assert_eq!(joined(&out), format!("{}the reporting", long));
        // A whole 26-word sentence decoded twice over before going on.
        let once = "this is the acoustic corpus I'm talking pretty fast here there's nothing going else going on \
                    we're just you know there's some features but who cares ";
        let (out, _) = collapse_repeats(words(&format!("{once}{once}this is me")));
        assert_eq!(joined(&out), format!("{once}this is me"));
        let (out, removed) = collapse_repeats(words("ten of clubs and ten of spades"));
        assert!(!removed);
        assert_eq!(joined(&out), "ten of clubs and ten of spades");
        let (out, removed) = collapse_repeats(words("no, no, I said the red one"));
        assert!(!removed);
        assert_eq!(joined(&out), "no, no, I said the red one");
        let (out, _) = collapse_repeats(words(&format!("{}bye", "thank you ".repeat(7))));
        assert_eq!(joined(&out), "thank you thank you bye");
        let (out, _) = collapse_repeats(words("a a a a a a a a"));
        assert_eq!(joined(&out), "a a");
        // A speaker's own repetition, up to six times, stands.
        let (out, removed) = collapse_repeats(words("here is some more word word word word word"));
        assert!(!removed);
        assert_eq!(joined(&out), "here is some more word word word word word");
    }

    #[test]
    fn non_speech_and_unsure_silence_give_no_text() {
        let config = DecoderConfig::default();
        let marker = guard(" [BLANK_AUDIO]".into(), words("[BLANK_AUDIO]"), 0.9, 0.1, &config);
        assert_eq!(marker, Recognition::NoSpeech);
        let music = guard(" ♪".into(), words("♪ ♪"), 0.9, 0.1, &config);
        assert_eq!(music, Recognition::NoSpeech);
        let unsure = guard(" you".into(), words("you"), 0.2, 0.9, &config);
        assert_eq!(unsure, Recognition::NoSpeech);
        let sure = guard(" hello there".into(), words("hello there"), 0.8, 0.9, &config);
        assert!(matches!(sure, Recognition::Text { .. }));
    }

    #[test]
    fn the_encoder_context_follows_the_segment_within_floor_and_window() {
        assert_eq!(audio_context(16_000, 384), 384); // 2 s → 100 frames, floored
        assert_eq!(max_tokens(16_000), 18);
        assert_eq!(max_tokens(16_000 * 60), 224);
        assert_eq!(audio_context(16_000 * 10, 384), 550);
        assert_eq!(audio_context(16_000 * 40, 384), 1500);
        assert_eq!(audio_context(16_000, 1500), 1500);
    }
}
