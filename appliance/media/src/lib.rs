//! Audio media: the codecs Airlock accepts (PCMU, PCMA, G.722, L16) decoded to 16-bit PCM, integer-ratio
//! resampling and WAV headers. Pure code: no I/O, no clocks.

mod codec;

pub use codec::Codec;
