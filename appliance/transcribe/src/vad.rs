//! Silero VAD (v5/v6 ONNX model from PyPI `silero-vad`) run through ONNX Runtime, which is loaded at run
//! time (dlopen) from the library `ci/install-vad` installs; nothing is downloaded.
//!
//! This module owns three things:
//! - the process's one ONNX Runtime environment ([`SileroModel::load`] creates it from a library path on
//!   first use; `ort` allows one environment per process, so no other code in the process may use `ort`);
//! - [`SileroModel`]: one ONNX Runtime session of `silero_vad.onnx` (1 intra-op, 1 inter-op thread, CPU),
//!   checked at load to have the inputs/outputs below;
//! - [`VadStream`]: one leg's streaming state (LSTM state + the last [`CONTEXT_SAMPLES`] samples), updated
//!   exactly as the reference Python wrapper (`silero_vad.utils_vad.OnnxWrapper`) updates it.
//!
//! Streaming contract (16 kHz only): each call takes the next [`CHUNK_SAMPLES`] samples (32 ms) of one leg,
//! scaled to [-1, 1]. The model input is those samples prefixed with the last [`CONTEXT_SAMPLES`] samples of
//! the previous chunk (zeros after [`VadStream::new`]/[`VadStream::reset`]). Model interface, with `legs` = 1
//! for a single call: inputs `input` f32 `[legs, 576]`, `state` f32 `[2, legs, 128]`, `sr` i64 scalar 16000;
//! outputs `output` f32 `[legs, 1]` (speech probabilities) and `stateN` f32 `[2, legs, 128]`, which becomes
//! the next call's `state`. A failed call leaves the streams unchanged.
//!
//! Threading: ONNX Runtime sessions are not safe for concurrent runs, so `ort` makes `Session::run` take
//! `&mut self`, and so do [`VadStream::speech_probability`] (with its `&mut SileroModel`) and
//! [`SileroModel::speech_probabilities`]. The intended shape is one VAD thread that owns one [`SileroModel`]
//! and serves many legs: each leg keeps its own small [`VadStream`] (plain data, `Send`), and the thread
//! runs whichever legs have a chunk ready, one call per leg or, cheaper, all ready legs in one batched call
//! ([`SileroModel::speech_probabilities`]; each batch row is one leg, so a leg's result does not depend on
//! which other legs share the call). The session keeps no per-leg state, so legs can be interleaved and
//! batched in any order. To use more cores, load one [`SileroModel`] per thread (each is its own session; the
//! library and environment are shared) and give each leg to one thread at a time.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use ort::environment::Environment;
use ort::session::Session;
use ort::value::{TensorElementType, TensorRef, ValueType};

/// The only sample rate this module runs the model at.
pub const SAMPLE_RATE_HZ: u32 = 16_000;
/// Samples per call at 16 kHz (32 ms): the chunk size the model was trained for.
pub const CHUNK_SAMPLES: usize = 512;
/// Samples of the previous chunk that the model sees in front of each chunk at 16 kHz.
pub const CONTEXT_SAMPLES: usize = 64;
/// Samples in one model input: context + chunk.
const WINDOW_SAMPLES: usize = CONTEXT_SAMPLES + CHUNK_SAMPLES;
/// Width of each of the two recurrent state vectors.
const STATE_WIDTH: usize = 128;
/// `state` is `[2, batch, 128]`; with batch 1 that is 256 floats.
const STATE_LEN: usize = 2 * STATE_WIDTH;
/// The `sr` input: a scalar int64.
const SAMPLE_RATE_INPUT: [i64; 1] = [SAMPLE_RATE_HZ as i64];

/// The ONNX Runtime version `ci/install-vad` installs and the tests were validated against.
pub const VALIDATED_ONNXRUNTIME_VERSION: &str = "1.31.1";

/// Why the VAD could not be loaded or run. Every variant names the file involved where there is one.
#[derive(Debug, thiserror::Error)]
pub enum VadError {
    #[error("ONNX Runtime library {}: {source} (run ci/install-vad to install it)", path.display())]
    LibraryMissing {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("ONNX Runtime library {} could not be loaded: {reason}", path.display())]
    LibraryLoad { path: PathBuf, reason: String },
    #[error("{} is not an ONNX Runtime library (it exports no OrtGetApiBase)", path.display())]
    NotOnnxRuntime { path: PathBuf },
    #[error(
        "ONNX Runtime library {} is version {found}; this build needs 1.{}.x or newer (ci/install-vad installs {VALIDATED_ONNXRUNTIME_VERSION})",
        path.display(),
        ort::MINOR_VERSION
    )]
    LibraryVersion { path: PathBuf, found: String },
    #[error(
        "ONNX Runtime is already loaded in this process from {}; it cannot also be loaded from {}",
        loaded.display(),
        requested.display()
    )]
    OtherLibraryLoaded { requested: PathBuf, loaded: PathBuf },
    #[error("ONNX Runtime from {} loaded, but creating its environment failed: {reason}", path.display())]
    Environment { path: PathBuf, reason: String },
    #[error("Silero VAD model {}: {source} (run ci/install-vad to install it)", path.display())]
    ModelMissing {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Silero VAD model {} could not be loaded by ONNX Runtime (corrupt or not ONNX?): {reason}", path.display())]
    ModelInvalid { path: PathBuf, reason: String },
    #[error("Silero VAD model {} is not the expected model: {reason}", path.display())]
    ModelInterface { path: PathBuf, reason: String },
    #[error("Silero VAD inference with model {} failed: {reason}", path.display())]
    Inference { path: PathBuf, reason: String },
}

/// The process's ONNX Runtime: where it was loaded from and its one environment.
struct Runtime {
    library: PathBuf,
    environment: Environment,
}

static RUNTIME: Mutex<Option<Runtime>> = Mutex::new(None);

/// Loads ONNX Runtime from `library` and creates the environment, once per process. A second call with the
/// same file (after canonicalisation) returns the same environment; a different file is an error, since a
/// process can hold only one ONNX Runtime.
fn runtime(library: &Path) -> Result<Environment, VadError> {
    let canonical = std::fs::canonicalize(library).map_err(|source| VadError::LibraryMissing {
        path: library.to_path_buf(),
        source,
    })?;
    let mut runtime = RUNTIME.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(loaded) = runtime.as_ref() {
        return if loaded.library == canonical {
            Ok(loaded.environment.clone())
        } else {
            Err(VadError::OtherLibraryLoaded {
                requested: library.to_path_buf(),
                loaded: loaded.library.clone(),
            })
        };
    }
    let builder = ort::init_from(&canonical).map_err(|error| match error {
        ort::LoadDynamicError::MissingApi { .. } => VadError::NotOnnxRuntime {
            path: library.to_path_buf(),
        },
        ort::LoadDynamicError::BadVersion { version_str, .. } => VadError::LibraryVersion {
            path: library.to_path_buf(),
            found: version_str,
        },
        ort::LoadDynamicError::Dlopen { error, .. } => VadError::LibraryLoad {
            path: library.to_path_buf(),
            // libloading's message is just "dlopen failed"; dlerror()'s text is its source.
            reason: match std::error::Error::source(&error) {
                Some(detail) => detail.to_string(),
                None => error.to_string(),
            },
        },
        other => VadError::LibraryLoad {
            path: library.to_path_buf(),
            reason: other.to_string(),
        },
    })?;
    let environment = builder
        .with_name("airlock-vad")
        .with_telemetry(false)
        .build()
        .map_err(|error| VadError::Environment {
            path: library.to_path_buf(),
            reason: error.to_string(),
        })?;
    tracing::info!(library = %canonical.display(), build = ort::info(), "loaded ONNX Runtime");
    *runtime = Some(Runtime {
        library: canonical,
        environment: environment.clone(),
    });
    Ok(environment)
}

/// One ONNX Runtime session of the Silero VAD model, for one thread (see the module doc on threading).
pub struct SileroModel {
    session: Session,
    path: PathBuf,
    /// Reused model inputs: `input` rows (context then chunk) and `state`, for the legs of one call.
    input: Vec<f32>,
    state: Vec<f32>,
}

impl fmt::Debug for SileroModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SileroModel")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SileroModel {
    /// Loads ONNX Runtime from `onnxruntime_library` (first call in the process only; later calls must name
    /// the same file) and the Silero VAD model from `model_path`, checks the model's interface, and runs one
    /// chunk of silence through it so the first real chunk does not pay for allocation.
    pub fn load(model_path: &Path, onnxruntime_library: &Path) -> Result<SileroModel, VadError> {
        let environment = runtime(onnxruntime_library)?;
        let bytes = std::fs::read(model_path).map_err(|source| VadError::ModelMissing {
            path: model_path.to_path_buf(),
            source,
        })?;
        let invalid = |error: ort::Error| VadError::ModelInvalid {
            path: model_path.to_path_buf(),
            reason: error.to_string(),
        };
        let builder = || -> Result<_, String> {
            Session::builder(&environment)
                .map_err(|error| error.to_string())?
                .with_intra_threads(1)
                .map_err(|error| error.to_string())?
                .with_inter_threads(1)
                .map_err(|error| error.to_string())
        };
        let session = builder()
            .map_err(|reason| VadError::Environment {
                path: onnxruntime_library.to_path_buf(),
                reason,
            })?
            .commit_from_memory(&bytes)
            .map_err(invalid)?;
        check_interface(&session).map_err(|reason| VadError::ModelInterface {
            path: model_path.to_path_buf(),
            reason,
        })?;
        let mut model = SileroModel {
            session,
            path: model_path.to_path_buf(),
            input: Vec::with_capacity(WINDOW_SAMPLES),
            state: Vec::with_capacity(STATE_LEN),
        };
        let probability = VadStream::new().speech_probability(&mut model, &[0.0; CHUNK_SAMPLES])?;
        if !(0.0..=1.0).contains(&probability) {
            return Err(VadError::ModelInterface {
                path: model_path.to_path_buf(),
                reason: format!("speech probability {probability} for silence is not in [0, 1]"),
            });
        }
        Ok(model)
    }

    /// The model file this session was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs one chunk for each of several legs in one model call and returns their speech probabilities in
    /// order. The result for each leg is what [`VadStream::speech_probability`] would give (the batch rows
    /// are independent), but one call for many legs costs less CPU per leg than one call per leg, since
    /// ONNX Runtime's per-call overhead is shared. A leg may appear at most once per batch (the borrow
    /// checker sees to that); legs may join or leave between batches. On error no stream changes.
    pub fn speech_probabilities(
        &mut self,
        batch: &mut [(&mut VadStream, &[f32; CHUNK_SAMPLES])],
    ) -> Result<Vec<f32>, VadError> {
        let legs = batch.len();
        if legs == 0 {
            return Ok(Vec::new());
        }
        let path = &self.path;
        let fail = |reason: &dyn fmt::Display| VadError::Inference {
            path: path.clone(),
            reason: reason.to_string(),
        };
        // Gather: `input` is [legs, 576] (context then chunk per row); `state` is [2, legs, 128].
        self.input.clear();
        self.state.resize(STATE_LEN * legs, 0.0);
        for (leg, (stream, chunk)) in batch.iter().enumerate() {
            self.input.extend_from_slice(&stream.context);
            self.input.extend_from_slice(&chunk[..]);
            for layer in 0..2 {
                let at = (layer * legs + leg) * STATE_WIDTH;
                self.state[at..at + STATE_WIDTH]
                    .copy_from_slice(&stream.state[layer * STATE_WIDTH..][..STATE_WIDTH]);
            }
        }
        let input = TensorRef::from_array_view(([legs, WINDOW_SAMPLES], &self.input[..]))
            .map_err(|error| fail(&error))?;
        let state = TensorRef::from_array_view(([2, legs, STATE_WIDTH], &self.state[..]))
            .map_err(|error| fail(&error))?;
        let sample_rate =
            TensorRef::from_array_view(((), &SAMPLE_RATE_INPUT[..])).map_err(|error| fail(&error))?;
        let outputs = self
            .session
            .run(ort::inputs![input, state, sample_rate])
            .map_err(|error| fail(&error))?;
        let extract = |index: usize, expected: usize| -> Result<&[f32], VadError> {
            let (_, data) = outputs[index]
                .try_extract_tensor::<f32>()
                .map_err(|error| fail(&error))?;
            if data.len() == expected {
                Ok(data)
            } else {
                Err(fail(&format_args!(
                    "output #{index} has {} values, expected {expected}",
                    data.len()
                )))
            }
        };
        let probabilities = extract(0, legs)?.to_vec();
        let next_state = extract(1, STATE_LEN * legs)?;
        // Scatter: only now, with every output checked, do the streams change.
        for (leg, (stream, chunk)) in batch.iter_mut().enumerate() {
            for layer in 0..2 {
                let at = (layer * legs + leg) * STATE_WIDTH;
                stream.state[layer * STATE_WIDTH..][..STATE_WIDTH]
                    .copy_from_slice(&next_state[at..at + STATE_WIDTH]);
            }
            stream
                .context
                .copy_from_slice(&chunk[CHUNK_SAMPLES - CONTEXT_SAMPLES..]);
        }
        Ok(probabilities)
    }
}

/// Checks the session has Silero VAD's interface (see the module doc), in that order.
fn check_interface(session: &Session) -> Result<(), String> {
    let describe = |outlets: &[ort::value::Outlet]| {
        outlets
            .iter()
            .map(|outlet| format!("{}: {}", outlet.name(), outlet.dtype()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let expect = |kind: &str,
                  outlets: &[ort::value::Outlet],
                  wanted: &[(&str, TensorElementType, Option<&[i64]>)]|
     -> Result<(), String> {
        let fits = outlets.len() == wanted.len()
            && outlets.iter().zip(wanted).all(|(outlet, (name, ty, shape))| {
                let ValueType::Tensor {
                    ty: actual_ty,
                    shape: actual_shape,
                    ..
                } = outlet.dtype()
                else {
                    return false;
                };
                outlet.name() == *name
                    && actual_ty == ty
                    && shape.is_none_or(|shape| {
                        // -1 is a dynamic dimension in the model and matches any size.
                        actual_shape.len() == shape.len()
                            && actual_shape
                                .iter()
                                .zip(shape)
                                .all(|(actual, wanted)| *wanted == -1 || actual == wanted)
                    })
            });
        if fits {
            Ok(())
        } else {
            let wanted = wanted
                .iter()
                .map(|(name, ty, shape)| format!("{name}: {ty:?} {shape:?}"))
                .collect::<Vec<_>>()
                .join(", ");
            Err(format!("{kind} are [{}], expected [{wanted}]", describe(outlets)))
        }
    };
    use TensorElementType::{Float32, Int64};
    expect(
        "inputs",
        session.inputs(),
        &[
            ("input", Float32, Some(&[-1, -1])),
            ("state", Float32, Some(&[2, -1, STATE_WIDTH as i64])),
            ("sr", Int64, Some(&[])),
        ],
    )?;
    // `stateN` is declared with dynamic rank in the published model; its size is checked at each run.
    expect(
        "outputs",
        session.outputs(),
        &[("output", Float32, Some(&[-1, 1])), ("stateN", Float32, None)],
    )
}

/// One leg's streaming VAD state: the recurrent state and the last [`CONTEXT_SAMPLES`] samples. 1280 bytes,
/// no heap; independent of any model, so a leg can move between threads between calls.
#[derive(Clone, PartialEq)]
pub struct VadStream {
    state: [f32; STATE_LEN],
    context: [f32; CONTEXT_SAMPLES],
}

impl fmt::Debug for VadStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VadStream").finish_non_exhaustive()
    }
}

impl Default for VadStream {
    fn default() -> Self {
        Self::new()
    }
}

impl VadStream {
    /// A stream at the start of a leg: zero state, zero context (as `OnnxWrapper.reset_states()`).
    pub fn new() -> Self {
        VadStream {
            state: [0.0; STATE_LEN],
            context: [0.0; CONTEXT_SAMPLES],
        }
    }

    /// Forgets everything heard so far, as if the leg started now.
    pub fn reset(&mut self) {
        *self = Self::new();
    }

    /// The probability (0..=1) that the next 32 ms `chunk` (16 kHz, samples in [-1, 1]) of this leg contains
    /// speech. Chunks of one leg must be passed in order without gaps; on error the stream is unchanged.
    pub fn speech_probability(
        &mut self,
        model: &mut SileroModel,
        chunk: &[f32; CHUNK_SAMPLES],
    ) -> Result<f32, VadError> {
        match model.speech_probabilities(&mut [(self, chunk)])?[..] {
            [probability] => Ok(probability),
            ref other => Err(VadError::Inference {
                path: model.path.clone(),
                reason: format!("{} probabilities for one chunk", other.len()),
            }),
        }
    }
}

/// The engine's front-end runs one model for every leg, one chunk at a time. A failed inference counts as
/// silence for that chunk (logged without content; the leg goes on).
impl crate::VoiceActivity for SileroModel {
    type Leg = VadStream;

    fn new_leg(&self) -> VadStream {
        VadStream::new()
    }

    fn probability(&mut self, leg: &mut VadStream, frame: &[f32; CHUNK_SAMPLES]) -> f32 {
        leg.speech_probability(self, frame).unwrap_or_else(|error| {
            tracing::warn!(%error, "VAD inference failed; chunk treated as silence");
            0.0
        })
    }
}
