//! RTP packet parsing (RFC 3550 §5.1): fixed header, CSRC list, header extension and padding, every length
//! checked against the datagram. RTCP arriving on the same port (RFC 5761 multiplexing) is recognised and
//! reported as [`RtpError::Rtcp`] so the caller can ignore it.

/// The fixed RTP header: V, P, X, CC, M, PT, sequence number, timestamp, SSRC.
const FIXED_HEADER_LEN: usize = 12;
/// Bytes per CSRC identifier and per header-extension word.
const WORD_LEN: usize = 4;
/// The only RTP version in use.
const RTP_VERSION: u8 = 2;
/// Second header byte (marker bit and payload type together) of RTCP packet types 192–223: RTP payload
/// types 64–95 with the marker set, which RFC 5761 §4 keeps free so the two can share a port.
const RTCP_SECOND_BYTE: std::ops::RangeInclusive<u8> = 192..=223;

/// Why a datagram is not an RTP packet we can use. All variants except [`RtpError::Rtcp`] mean the peer
/// sent malformed data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RtpError {
    /// Shorter than the 12-byte fixed header.
    #[error("datagram of {len} bytes is shorter than an RTP header")]
    TooShort { len: usize },
    /// The version field is not 2.
    #[error("RTP version {version} is not 2")]
    BadVersion { version: u8 },
    /// An RTCP packet multiplexed on the RTP port (RFC 5761); not an error, just not media.
    #[error("RTCP packet type {packet_type}")]
    Rtcp { packet_type: u8 },
    /// The CSRC list or header extension runs past the end of the datagram.
    #[error("RTP header of {header_len} bytes overruns a {len}-byte datagram")]
    HeaderOverrun { header_len: usize, len: usize },
    /// The padding count is zero or larger than what follows the header.
    #[error("RTP padding of {padding} bytes does not fit in {available} bytes after the header")]
    BadPadding { padding: usize, available: usize },
}

/// A header extension (RFC 3550 §5.3.1): the profile-defined 16 bits and the extension words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderExtension<'a> {
    pub profile: u16,
    /// The extension body (a whole number of 32-bit words), without its 4-byte header.
    pub data: &'a [u8],
}

/// A parsed RTP packet borrowing the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpPacket<'a> {
    pub marker: bool,
    pub payload_type: u8,
    pub sequence_number: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    /// The CSRC list as raw bytes (4 per identifier); see [`RtpPacket::csrcs`].
    csrc_bytes: &'a [u8],
    pub extension: Option<HeaderExtension<'a>>,
    /// The payload, without padding.
    pub payload: &'a [u8],
    /// Padding bytes removed from the end (0 when the P bit is clear).
    pub padding: u8,
}

/// The header of an RTP packet (fixed part, CSRC list, extension) without looking at what follows it —
/// which is what SRTP needs, since there the padding is encrypted and a tag follows the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RtpHeader<'a> {
    first: u8,
    second: u8,
    pub(crate) sequence_number: u16,
    timestamp: u32,
    pub(crate) ssrc: u32,
    csrc_bytes: &'a [u8],
    extension: Option<HeaderExtension<'a>>,
    /// Header length in bytes, CSRCs and extension included; never more than the datagram.
    pub(crate) len: usize,
}

impl<'a> RtpHeader<'a> {
    /// Reads the header of one datagram. Never panics; rejects a header that overruns the datagram.
    pub(crate) fn parse(datagram: &'a [u8]) -> Result<RtpHeader<'a>, RtpError> {
        let len = datagram.len();
        let (Some(&first), Some(&second), Some(fixed)) = (
            datagram.first(),
            datagram.get(1),
            datagram.get(..FIXED_HEADER_LEN),
        ) else {
            return Err(RtpError::TooShort { len });
        };
        let version = first >> 6;
        if version != RTP_VERSION {
            return Err(RtpError::BadVersion { version });
        }
        if RTCP_SECOND_BYTE.contains(&second) {
            return Err(RtpError::Rtcp { packet_type: second });
        }
        let has_extension = first & 0x10 != 0;
        let csrc_count = usize::from(first & 0x0F);
        let word = |at: usize| {
            fixed
                .get(at..at + 4)
                .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        };
        let sequence_number = u16::from_be_bytes([fixed[2], fixed[3]]);
        let timestamp = word(4);
        let ssrc = word(8);

        let mut header_len = FIXED_HEADER_LEN + csrc_count * WORD_LEN;
        let overrun = |header_len| RtpError::HeaderOverrun { header_len, len };
        let csrc_bytes = datagram
            .get(FIXED_HEADER_LEN..header_len)
            .ok_or(overrun(header_len))?;
        let extension = if has_extension {
            let ext_header = datagram
                .get(header_len..header_len + WORD_LEN)
                .ok_or(overrun(header_len + WORD_LEN))?;
            let profile = u16::from_be_bytes([ext_header[0], ext_header[1]]);
            let words = usize::from(u16::from_be_bytes([ext_header[2], ext_header[3]]));
            let data_start = header_len + WORD_LEN;
            header_len = data_start + words * WORD_LEN;
            let data = datagram.get(data_start..header_len).ok_or(overrun(header_len))?;
            Some(HeaderExtension { profile, data })
        } else {
            None
        };
        Ok(RtpHeader {
            first,
            second,
            sequence_number,
            timestamp,
            ssrc,
            csrc_bytes,
            extension,
            len: header_len,
        })
    }
}

impl<'a> RtpPacket<'a> {
    /// Parses one datagram. Never panics; rejects anything whose declared lengths exceed the datagram.
    pub fn parse(datagram: &'a [u8]) -> Result<RtpPacket<'a>, RtpError> {
        let header = RtpHeader::parse(datagram)?;
        let has_padding = header.first & 0x20 != 0;
        let body = datagram.get(header.len..).unwrap_or_default();
        let (payload, padding) = if has_padding {
            let padding = body.last().copied().unwrap_or(0);
            let payload_len = body
                .len()
                .checked_sub(usize::from(padding))
                .filter(|_| padding > 0);
            let Some(payload) = payload_len.and_then(|payload_len| body.get(..payload_len)) else {
                return Err(RtpError::BadPadding {
                    padding: usize::from(padding),
                    available: body.len(),
                });
            };
            (payload, padding)
        } else {
            (body, 0)
        };

        Ok(RtpPacket {
            marker: header.second & 0x80 != 0,
            payload_type: header.second & 0x7F,
            sequence_number: header.sequence_number,
            timestamp: header.timestamp,
            ssrc: header.ssrc,
            csrc_bytes: header.csrc_bytes,
            extension: header.extension,
            payload,
            padding,
        })
    }

    /// The contributing sources, in order.
    pub fn csrcs(&self) -> impl Iterator<Item = u32> + 'a {
        self.csrc_bytes
            .chunks_exact(WORD_LEN)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(first: u8, second: u8) -> Vec<u8> {
        let mut packet = vec![
            first, second, 0x12, 0x34, 0, 0, 0x03, 0x20, 0xDE, 0xAD, 0xBE, 0xEF,
        ];
        packet.truncate(FIXED_HEADER_LEN);
        packet
    }

    #[test]
    fn minimal_packet() {
        let mut datagram = header(0x80, 0x80);
        datagram.extend([1, 2, 3]);
        let packet = RtpPacket::parse(&datagram).expect("valid");
        assert!(packet.marker);
        assert_eq!(packet.payload_type, 0);
        assert_eq!(packet.sequence_number, 0x1234);
        assert_eq!(packet.timestamp, 800);
        assert_eq!(packet.ssrc, 0xDEAD_BEEF);
        assert_eq!(packet.payload, &[1, 2, 3]);
        assert_eq!(packet.csrcs().count(), 0);
        assert_eq!(packet.extension, None);
        assert_eq!(packet.padding, 0);
        assert_eq!(RtpPacket::parse(&datagram[..12]).map(|p| p.payload.len()), Ok(0));
    }

    #[test]
    fn csrcs_extension_and_padding() {
        let mut datagram = header(0xB2, 0x08); // V=2, P, X, CC=2; PT 8
        datagram.extend([0, 0, 0, 1, 0, 0, 0, 2]);
        datagram.extend([0xBE, 0xDE, 0, 1, 0x10, 0xAA, 0, 0]);
        datagram.extend([9, 9, 9, 0, 0, 3]);
        let packet = RtpPacket::parse(&datagram).expect("valid");
        assert_eq!(packet.csrcs().collect::<Vec<_>>(), [1, 2]);
        assert_eq!(
            packet.extension,
            Some(HeaderExtension {
                profile: 0xBEDE,
                data: &[0x10, 0xAA, 0, 0]
            })
        );
        assert_eq!(packet.payload, &[9, 9, 9]);
        assert_eq!(packet.padding, 3);
        assert_eq!(packet.payload_type, 8);
        assert!(!packet.marker);
    }

    #[test]
    fn bad_padding_is_rejected() {
        let mut datagram = header(0xA0, 0);
        datagram.extend([1, 2, 0]);
        assert_eq!(
            RtpPacket::parse(&datagram),
            Err(RtpError::BadPadding {
                padding: 0,
                available: 3
            })
        );
        let last = datagram.len() - 1;
        datagram[last] = 4;
        assert_eq!(
            RtpPacket::parse(&datagram),
            Err(RtpError::BadPadding {
                padding: 4,
                available: 3
            })
        );
        datagram[last] = 3;
        assert_eq!(RtpPacket::parse(&datagram).map(|p| p.payload.len()), Ok(0));
        assert_eq!(
            RtpPacket::parse(&header(0xA0, 0)),
            Err(RtpError::BadPadding {
                padding: 0,
                available: 0
            })
        );
    }

    #[test]
    fn lengths_are_checked() {
        assert_eq!(RtpPacket::parse(&[0x80; 11]), Err(RtpError::TooShort { len: 11 }));
        assert_eq!(RtpPacket::parse(&[]), Err(RtpError::TooShort { len: 0 }));
        let mut datagram = header(0x83, 0);
        datagram.extend([0; 8]);
        assert_eq!(
            RtpPacket::parse(&datagram),
            Err(RtpError::HeaderOverrun {
                header_len: 24,
                len: 20
            })
        );
        let mut datagram = header(0x90, 0);
        datagram.extend([0, 0]);
        assert_eq!(
            RtpPacket::parse(&datagram),
            Err(RtpError::HeaderOverrun {
                header_len: 16,
                len: 14
            })
        );
        let mut datagram = header(0x90, 0);
        datagram.extend([0, 0, 0, 2, 1, 2, 3, 4]);
        assert_eq!(
            RtpPacket::parse(&datagram),
            Err(RtpError::HeaderOverrun {
                header_len: 24,
                len: 20
            })
        );
    }

    #[test]
    fn other_versions_are_rejected() {
        assert_eq!(
            RtpPacket::parse(&header(0x40, 0)),
            Err(RtpError::BadVersion { version: 1 })
        );
        assert_eq!(
            RtpPacket::parse(&header(0x00, 0)),
            Err(RtpError::BadVersion { version: 0 })
        );
    }

    #[test]
    fn multiplexed_rtcp_is_recognised() {
        for packet_type in [200, 201, 202, 203, 204, 205, 206, 207] {
            assert_eq!(
                RtpPacket::parse(&header(0x81, packet_type)),
                Err(RtpError::Rtcp { packet_type })
            );
        }
        // PT 72 without the marker bit is not an RTCP packet type.
        assert!(RtpPacket::parse(&header(0x80, 72)).is_ok());
    }

    #[test]
    fn never_panics_on_any_short_input() {
        let mut seed = 0x1234_5678_9ABC_DEF1u64;
        for len in 0..200usize {
            for _ in 0..200 {
                let datagram: Vec<u8> = (0..len)
                    .map(|index| {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        // Keep the version right half the time so the deeper paths run.
                        if index == 0 && seed.is_multiple_of(2) {
                            0x80 | (seed as u8 & 0x3F)
                        } else {
                            seed as u8
                        }
                    })
                    .collect();
                if let Ok(packet) = RtpPacket::parse(&datagram) {
                    assert!(packet.payload.len() <= len);
                }
            }
        }
    }
}
