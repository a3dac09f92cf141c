//! The codec identifiers negotiated in SDP and their RTP clock facts.

/// An audio codec Airlock can decode. Anything else offered in SDP is ignored when answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// G.711 µ-law, 8 kHz mono (static payload type 0).
    Pcmu,
    /// G.711 A-law, 8 kHz mono (static payload type 8).
    Pcma,
    /// G.722 at 64 kbit/s: 16 kHz audio, but an RTP clock of 8 kHz (RFC 3551 §4.5.2).
    G722,
    /// Linear 16-bit big-endian PCM at the given rate and channel count (RFC 3551 L16).
    L16 { rate: u32, channels: u8 },
}

impl Codec {
    /// Maps an SDP `a=rtpmap` encoding name (case-insensitive), clock rate and channel count to a codec.
    pub fn from_rtpmap(name: &str, clock_rate: u32, channels: u8) -> Option<Codec> {
        match (name.to_ascii_uppercase().as_str(), clock_rate, channels) {
            ("PCMU", 8000, 1) => Some(Codec::Pcmu),
            ("PCMA", 8000, 1) => Some(Codec::Pcma),
            ("G722", 8000, 1) => Some(Codec::G722),
            ("L16", rate, channels) if (8000..=48000).contains(&rate) && (1..=2).contains(&channels) => {
                Some(Codec::L16 { rate, channels })
            }
            _ => None,
        }
    }

    /// The codec a static RTP payload type stands for when the offer carries no `a=rtpmap` for it.
    pub fn from_static_payload_type(pt: u8) -> Option<Codec> {
        match pt {
            0 => Some(Codec::Pcmu),
            8 => Some(Codec::Pcma),
            9 => Some(Codec::G722),
            10 => Some(Codec::L16 {
                rate: 44100,
                channels: 2,
            }),
            11 => Some(Codec::L16 {
                rate: 44100,
                channels: 1,
            }),
            _ => None,
        }
    }

    /// The encoding name as written in `a=rtpmap`.
    pub fn rtpmap_name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
            Codec::G722 => "G722",
            Codec::L16 { .. } => "L16",
        }
    }

    /// The RTP clock rate in Hz (what RTP timestamps count).
    pub fn rtp_clock_rate(self) -> u32 {
        match self {
            Codec::Pcmu | Codec::Pcma | Codec::G722 => 8000,
            Codec::L16 { rate, .. } => rate,
        }
    }

    /// The sample rate of the decoded PCM in Hz.
    pub fn pcm_sample_rate(self) -> u32 {
        match self {
            Codec::G722 => 16000,
            other => other.rtp_clock_rate(),
        }
    }

    /// Channels in the decoded PCM.
    pub fn channels(self) -> u8 {
        match self {
            Codec::L16 { channels, .. } => channels,
            _ => 1,
        }
    }
}
