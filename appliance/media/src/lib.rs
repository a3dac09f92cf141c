//! Audio media: the codecs Airlock accepts (PCMU, PCMA, G.722, L16) decoded to 16-bit PCM, simple
//! resampling between their rates, WAV headers, in-band DTMF detection and masking ([`dtmf`]), and cutting a
//! continuous capture into calls ([`segment`]). Pure code: no I/O, no clocks.

mod codec;
mod decoder;
pub mod dtmf;
pub mod g711;
pub mod g722;
mod resample;
pub mod segment;
pub mod wav;

pub use codec::Codec;
pub use decoder::{DecodeError, Decoder};
pub use dtmf::{DtmfDetector, DtmfError, DtmfMasker, DtmfTone};
pub use resample::resample;
