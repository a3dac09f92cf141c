//! SDP (RFC 4566) as an SRS meets it: parsing the offers SRCs send (N `m=` lines, `a=label`, directions,
//! hold by `c=IN IP4 0.0.0.0`, `a=crypto` kept raw) and writing the answer (RFC 3264: same m-lines in the
//! same order, rejected ones with port 0, accepted audio `a=recvonly`/`a=inactive`, labels echoed).
//!
//! Owns: the SDP text format only. Which streams and codecs to accept is decided in `negotiate`, which
//! hands [`AnswerMedia`] back here to be written.
//!
//! Tolerance: CRLF or bare LF, blank lines, unknown line types and attributes ignored, attribute names in any
//! case, a malformed `a=rtpmap`/`a=fmtp`/`a=ptime`/`a=rtcp` value ignored (its payload type then simply has
//! no mapping), and parsing stops at a second `v=` line (an Oracle SBC capture carries a stray second SDP
//! inside the SDP part). Strict where a guess would be dangerous: `v=`, `c=` and `m=` must be well-formed,
//! and lines must not contain control characters (values are echoed into our answer).

use std::fmt::{self, Write as _};
use std::net::IpAddr;

use airlock_telemetry::Pii;
use thiserror::Error;

/// Largest SDP accepted; a larger one is refused with [`SdpError::TooLarge`].
pub const MAX_SDP_BYTES: usize = 64 * 1024;
/// Most lines accepted (this also bounds every per-media list: rtpmaps, fmtps, crypto lines); one more is
/// refused with [`SdpError::TooManyLines`].
pub const MAX_SDP_LINES: usize = 2048;
/// Most `m=` lines accepted; one more is refused with [`SdpError::TooManyMediaDescriptions`].
pub const MAX_MEDIA_DESCRIPTIONS: usize = 32;

/// Why an SDP was refused. All are the peer's fault except the two limits; the control layer answers 400
/// (or 488 inside an offer it cannot use), see [`SdpError::reason_phrase`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SdpError {
    /// The first line is not `v=0`.
    #[error("not an SDP session description (no v=0 first line)")]
    NotSdp,
    /// A line that is not `<letter>=<value>`, contains control characters, or a `c=`/`m=` line without its
    /// mandatory fields. `line` is 1-based.
    #[error("malformed SDP line {line} ({what})")]
    MalformedLine {
        /// 1-based line number in the SDP text.
        line: usize,
        /// What was wrong, for logs.
        what: &'static str,
    },
    /// Larger than [`MAX_SDP_BYTES`].
    #[error("SDP larger than {MAX_SDP_BYTES} bytes")]
    TooLarge,
    /// More than [`MAX_SDP_LINES`] lines.
    #[error("SDP has more than {MAX_SDP_LINES} lines")]
    TooManyLines,
    /// More than [`MAX_MEDIA_DESCRIPTIONS`] `m=` lines.
    #[error("SDP has more than {MAX_MEDIA_DESCRIPTIONS} media descriptions")]
    TooManyMediaDescriptions,
}

impl SdpError {
    /// A short reason phrase for the SIP status line.
    pub fn reason_phrase(&self) -> &'static str {
        match self {
            SdpError::NotSdp => "Body Is Not SDP",
            SdpError::MalformedLine { .. } => "Malformed SDP",
            SdpError::TooLarge => "SDP Too Large",
            SdpError::TooManyLines => "SDP Too Long",
            SdpError::TooManyMediaDescriptions => "Too Many Media Streams",
        }
    }
}

/// Media direction attribute (RFC 4566 §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// `a=sendrecv` (also the default when none is given).
    SendRecv,
    /// `a=sendonly`: what an SRC should offer.
    SendOnly,
    /// `a=recvonly`: what an SRS answers.
    RecvOnly,
    /// `a=inactive`: paused.
    Inactive,
}

impl Direction {
    fn from_attribute(name: &str) -> Option<Direction> {
        match name {
            "sendrecv" => Some(Direction::SendRecv),
            "sendonly" => Some(Direction::SendOnly),
            "recvonly" => Some(Direction::RecvOnly),
            "inactive" => Some(Direction::Inactive),
            _ => None,
        }
    }

    /// The attribute name as written in SDP.
    pub fn as_attribute(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    /// True when the offerer will send media in this direction (sendonly or sendrecv).
    pub fn offerer_sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }
}

/// A `c=` line. The address is personal data (an IP) and is kept wrapped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    /// The connection address without any `/ttl` or `/count` suffix.
    pub address: Pii<String>,
}

impl Connection {
    /// True for `0.0.0.0` or `::` — the old RFC 2543 way of putting a stream on hold (BroadWorks pauses so).
    pub fn is_unspecified(&self) -> bool {
        self.address
            .expose()
            .parse::<IpAddr>()
            .is_ok_and(|address| address.is_unspecified())
    }
}

/// The `o=` line fields an answerer may care about (the address is not kept: it is an IP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// `sess-id` as sent.
    pub session_id: String,
    /// `sess-version` as sent: unchanged in a re-offer means the SDP did not change (RFC 3264 §8).
    pub session_version: String,
}

/// The transport protocol of an `m=` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransportProtocol {
    /// `RTP/AVP`.
    RtpAvp,
    /// `RTP/AVPF`.
    RtpAvpf,
    /// `RTP/SAVP` (SDES-SRTP).
    RtpSavp,
    /// `RTP/SAVPF`.
    RtpSavpf,
    /// Anything else, as sent (e.g. `UDP/TLS/RTP/SAVP`, `udptl`, `TCP/MSRP`).
    Other(String),
}

impl TransportProtocol {
    fn parse(token: &str) -> TransportProtocol {
        match token.to_ascii_uppercase().as_str() {
            "RTP/AVP" => TransportProtocol::RtpAvp,
            "RTP/AVPF" => TransportProtocol::RtpAvpf,
            "RTP/SAVP" => TransportProtocol::RtpSavp,
            "RTP/SAVPF" => TransportProtocol::RtpSavpf,
            _ => TransportProtocol::Other(token.to_owned()),
        }
    }

    /// As written in SDP.
    pub fn as_str(&self) -> &str {
        match self {
            TransportProtocol::RtpAvp => "RTP/AVP",
            TransportProtocol::RtpAvpf => "RTP/AVPF",
            TransportProtocol::RtpSavp => "RTP/SAVP",
            TransportProtocol::RtpSavpf => "RTP/SAVPF",
            TransportProtocol::Other(other) => other,
        }
    }

    /// True for any profile carrying SRTP (`SAVP` anywhere in the name).
    pub fn is_secure(&self) -> bool {
        self.as_str().to_ascii_uppercase().contains("SAVP")
    }
}

/// An `a=rtpmap:<pt> <encoding>/<clock rate>[/<channels>]` attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpMap {
    /// The payload type it maps.
    pub payload_type: u8,
    /// The encoding name as sent (case preserved), e.g. `PCMU`, `telephone-event`.
    pub encoding: String,
    /// Clock rate in Hz.
    pub clock_rate: u32,
    /// Channel count (the optional third field); None when absent (meaning 1 for audio).
    pub channels: Option<u8>,
}

impl RtpMap {
    /// The value as written after `a=rtpmap:<pt> `.
    pub fn encoding_value(&self) -> String {
        match self.channels {
            Some(channels) => format!("{}/{}/{channels}", self.encoding, self.clock_rate),
            None => format!("{}/{}", self.encoding, self.clock_rate),
        }
    }
}

/// One `m=` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaDescription {
    /// The media type lowercased: `audio`, `video`, `text`, `application`, `message`, `image`, …
    pub media_type: String,
    /// The port; 0 means the stream is disabled (RFC 3264 §5.1).
    pub port: u16,
    /// The transport protocol.
    pub protocol: TransportProtocol,
    /// The format list as sent (payload type numbers for RTP profiles), in the offerer's preference order.
    pub formats: Vec<String>,
    /// Media-level `c=`, if any.
    pub connection: Option<Connection>,
    /// `a=rtpmap` attributes.
    pub rtpmaps: Vec<RtpMap>,
    /// `a=fmtp:<pt> <parameters>` attributes as (payload type, parameters).
    pub fmtps: Vec<(u8, String)>,
    /// `a=label` (RFC 4574): binds the stream to the metadata's `<stream><label>`.
    pub label: Option<String>,
    /// Media-level direction attribute, if any.
    pub direction: Option<Direction>,
    /// Raw `a=crypto` values (RFC 4568). They carry SRTP master keys: wrapped so they never print.
    pub crypto: Vec<Pii<String>>,
    /// `a=ptime` in milliseconds.
    pub ptime: Option<u32>,
    /// The port of `a=rtcp` (RFC 3605), if given.
    pub rtcp_port: Option<u16>,
}

impl MediaDescription {
    fn new(media_type: String, port: u16, protocol: TransportProtocol, formats: Vec<String>) -> Self {
        MediaDescription {
            media_type,
            port,
            protocol,
            formats,
            connection: None,
            rtpmaps: Vec::new(),
            fmtps: Vec::new(),
            label: None,
            direction: None,
            crypto: Vec::new(),
            ptime: None,
            rtcp_port: None,
        }
    }

    /// True for `m=audio`.
    pub fn is_audio(&self) -> bool {
        self.media_type == "audio"
    }

    /// The numeric payload types of the format list (non-numeric or > 127 entries skipped), in order.
    pub fn payload_types(&self) -> impl Iterator<Item = u8> + '_ {
        self.formats
            .iter()
            .filter_map(|format| format.parse::<u8>().ok())
            .filter(|&pt| pt <= 127)
    }

    /// The `a=rtpmap` for a payload type, if any.
    pub fn rtpmap(&self, payload_type: u8) -> Option<&RtpMap> {
        self.rtpmaps.iter().find(|map| map.payload_type == payload_type)
    }

    /// The `a=fmtp` parameters for a payload type, if any.
    pub fn fmtp(&self, payload_type: u8) -> Option<&str> {
        self.fmtps
            .iter()
            .find(|(pt, _)| *pt == payload_type)
            .map(|(_, parameters)| parameters.as_str())
    }
}

/// A parsed session description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionDescription {
    /// The `o=` line, if present.
    pub origin: Option<Origin>,
    /// Session-level `c=`, if any.
    pub connection: Option<Connection>,
    /// Session-level direction attribute, if any.
    pub direction: Option<Direction>,
    /// The `m=` sections in order (the order is the identity of a stream within a dialog, RFC 3264 §8).
    pub media: Vec<MediaDescription>,
}

impl SessionDescription {
    /// Parses SDP text. See the module docs for what is tolerated.
    pub fn parse(text: &str) -> Result<SessionDescription, SdpError> {
        if text.len() > MAX_SDP_BYTES {
            return Err(SdpError::TooLarge);
        }
        let mut description = SessionDescription {
            origin: None,
            connection: None,
            direction: None,
            media: Vec::new(),
        };
        let mut seen_version = false;
        for (index, raw_line) in text.split('\n').enumerate() {
            let line_number = index + 1;
            if line_number > MAX_SDP_LINES {
                return Err(SdpError::TooManyLines);
            }
            let line = raw_line
                .strip_suffix('\r')
                .unwrap_or(raw_line)
                .trim_end_matches([' ', '\t']);
            if line.is_empty() {
                continue;
            }
            let malformed = |what| SdpError::MalformedLine {
                line: line_number,
                what,
            };
            if line.chars().any(|c| c.is_control() && c != '\t') {
                return Err(malformed("control character"));
            }
            let (kind, value) = match line.split_once('=') {
                Some((kind, value)) if kind.len() == 1 && kind.bytes().all(|b| b.is_ascii_alphabetic()) => {
                    (kind, value)
                }
                _ if !seen_version => return Err(SdpError::NotSdp),
                _ => return Err(malformed("not <type>=<value>")),
            };
            if !seen_version {
                if kind != "v" || value.trim() != "0" {
                    return Err(SdpError::NotSdp);
                }
                seen_version = true;
                continue;
            }
            match kind {
                "v" => break,
                "o" => description.origin = parse_origin(value),
                "c" => {
                    let connection = parse_connection(value).ok_or_else(|| malformed("c= needs 3 fields"))?;
                    match description.media.last_mut() {
                        Some(media) => media.connection = Some(connection),
                        None => description.connection = Some(connection),
                    }
                }
                "m" => {
                    if description.media.len() == MAX_MEDIA_DESCRIPTIONS {
                        return Err(SdpError::TooManyMediaDescriptions);
                    }
                    description
                        .media
                        .push(parse_media_line(value).ok_or_else(|| malformed("bad m= line"))?);
                }
                "a" => description.add_attribute(value),
                _ => {}
            }
        }
        if !seen_version {
            return Err(SdpError::NotSdp);
        }
        Ok(description)
    }

    /// The direction that applies to a media section: its own attribute, else the session-level one, else
    /// sendrecv (RFC 4566 §6).
    pub fn direction_of(&self, media: &MediaDescription) -> Direction {
        media.direction.or(self.direction).unwrap_or(Direction::SendRecv)
    }

    /// The connection that applies to a media section: its own `c=`, else the session-level one.
    pub fn connection_of<'a>(&'a self, media: &'a MediaDescription) -> Option<&'a Connection> {
        media.connection.as_ref().or(self.connection.as_ref())
    }

    fn add_attribute(&mut self, attribute: &str) {
        let (name, value) = match attribute.split_once(':') {
            Some((name, value)) => (name.trim().to_ascii_lowercase(), Some(value.trim())),
            None => (attribute.trim().to_ascii_lowercase(), None),
        };
        let Some(media) = self.media.last_mut() else {
            if let Some(direction) = Direction::from_attribute(&name) {
                self.direction = Some(direction);
            }
            return;
        };
        if let Some(direction) = Direction::from_attribute(&name) {
            media.direction = Some(direction);
            return;
        }
        let Some(value) = value else { return };
        match name.as_str() {
            "rtpmap" => media.rtpmaps.extend(parse_rtpmap(value)),
            "fmtp" => media.fmtps.extend(parse_fmtp(value)),
            "label" => media.label = Some(value.to_owned()),
            "crypto" => media.crypto.push(Pii::new(value.to_owned())),
            "ptime" => media.ptime = value.parse().ok(),
            "rtcp" => media.rtcp_port = value.split_whitespace().next().and_then(|port| port.parse().ok()),
            _ => {}
        }
    }
}

fn parse_origin(value: &str) -> Option<Origin> {
    let mut fields = value.split_whitespace();
    let _username = fields.next()?;
    let session_id = fields.next()?.to_owned();
    let session_version = fields.next()?.to_owned();
    Some(Origin {
        session_id,
        session_version,
    })
}

fn parse_connection(value: &str) -> Option<Connection> {
    let mut fields = value.split_whitespace();
    let _network_type = fields.next()?;
    let _address_type = fields.next()?;
    let address = fields.next()?;
    let address = address.split('/').next().filter(|address| !address.is_empty())?;
    Some(Connection {
        address: Pii::new(address.to_owned()),
    })
}

fn parse_media_line(value: &str) -> Option<MediaDescription> {
    let mut fields = value.split_whitespace();
    let media_type = fields.next()?.to_ascii_lowercase();
    let port_field = fields.next()?;
    let port = port_field.split('/').next()?.parse().ok()?;
    let protocol = TransportProtocol::parse(fields.next()?);
    let formats = fields.map(str::to_owned).collect();
    Some(MediaDescription::new(media_type, port, protocol, formats))
}

fn parse_rtpmap(value: &str) -> Option<RtpMap> {
    let (payload_type, encoding) = value.split_once(char::is_whitespace)?;
    let payload_type = payload_type.parse().ok().filter(|&pt: &u8| pt <= 127)?;
    let mut fields = encoding.trim().split('/');
    let encoding = fields.next().filter(|name| !name.is_empty())?.to_owned();
    let clock_rate = fields.next()?.trim().parse().ok()?;
    let channels = fields
        .next()
        .map(|channels| channels.trim().parse())
        .transpose()
        .ok()?;
    Some(RtpMap {
        payload_type,
        encoding,
        clock_rate,
        channels,
    })
}

fn parse_fmtp(value: &str) -> Option<(u8, String)> {
    let (payload_type, parameters) = value.split_once(char::is_whitespace)?;
    let payload_type = payload_type.parse().ok().filter(|&pt: &u8| pt <= 127)?;
    Some((payload_type, parameters.trim().to_owned()))
}

/// The `o=` line of our answers in one dialog: a fixed session id and a version that increases with every
/// answer rendered (RFC 3264 §8 requires an increase whenever the SDP changes; increasing on every answer is
/// always allowed and keeps the bookkeeping trivial). The control layer keeps one per dialog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerOrigin {
    session_id: u64,
    next_version: u64,
}

impl AnswerOrigin {
    /// A new origin for a dialog. `session_id` should be unique per dialog (e.g. derived from the call id);
    /// the first answer has version 1.
    pub fn new(session_id: u64) -> AnswerOrigin {
        AnswerOrigin {
            session_id,
            next_version: 1,
        }
    }

    /// The session id written in `o=`.
    pub fn session_id(&self) -> u64 {
        self.session_id
    }

    fn take_version(&mut self) -> u64 {
        let version = self.next_version;
        self.next_version = version.saturating_add(1);
        version
    }
}

/// A payload type in an answered audio stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerFormat {
    /// The offerer's payload type number (kept as offered).
    pub payload_type: u8,
    /// The `a=rtpmap` value after the payload type, e.g. `PCMU/8000`.
    pub rtpmap: String,
    /// The offerer's `a=fmtp` parameters for it, echoed (e.g. `0-15` for telephone-event).
    pub fmtp: Option<String>,
}

/// One m-line of an answer, in the offer's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnswerMedia {
    /// Port 0: the stream is refused; type and protocol echo the offer, with one of its formats.
    Rejected {
        /// Offered media type.
        media_type: String,
        /// Offered protocol.
        protocol: TransportProtocol,
        /// One format of the offer (RFC 3264 §6 requires at least one).
        format: String,
    },
    /// An audio stream we receive.
    Audio {
        /// Our local RTP port.
        port: u16,
        /// The offered protocol (RTP/AVP or RTP/AVPF).
        protocol: TransportProtocol,
        /// Accepted codecs then telephone-event, in the offer's order.
        formats: Vec<AnswerFormat>,
        /// The offer's `a=label`, echoed.
        label: Option<String>,
        /// `RecvOnly`, or `Inactive` when the offerer does not send.
        direction: Direction,
        /// Our `a=crypto` value for an SDES-SRTP stream (it carries a key: never printed).
        crypto: Option<Pii<String>>,
    },
}

/// Writes an answer: `o=` from `origin` (the version increases with each call), a session-level `c=` with
/// our media address, then one `m=` per entry of `media` in order. Lines end with CRLF.
pub fn render_answer(origin: &mut AnswerOrigin, address: IpAddr, media: &[AnswerMedia]) -> String {
    let address_type = match address {
        IpAddr::V4(_) => "IP4",
        IpAddr::V6(_) => "IP6",
    };
    let mut sdp = String::new();
    let version = origin.take_version();
    // `write!` into a String cannot fail; the results are ignored on purpose.
    let _ = write!(
        sdp,
        "v=0\r\no=airlock {} {version} IN {address_type} {address}\r\ns=Airlock SRS\r\n\
         c=IN {address_type} {address}\r\nt=0 0\r\n",
        origin.session_id
    );
    for entry in media {
        let _ = write_media(&mut sdp, entry);
    }
    sdp
}

fn write_media(sdp: &mut String, media: &AnswerMedia) -> fmt::Result {
    match media {
        AnswerMedia::Rejected {
            media_type,
            protocol,
            format,
        } => {
            write!(sdp, "m={media_type} 0 {} {format}\r\n", protocol.as_str())
        }
        AnswerMedia::Audio {
            port,
            protocol,
            formats,
            label,
            direction,
            crypto,
        } => {
            write!(sdp, "m=audio {port} {}", protocol.as_str())?;
            for format in formats {
                write!(sdp, " {}", format.payload_type)?;
            }
            sdp.push_str("\r\n");
            for format in formats {
                write!(sdp, "a=rtpmap:{} {}\r\n", format.payload_type, format.rtpmap)?;
                if let Some(parameters) = &format.fmtp {
                    write!(sdp, "a=fmtp:{} {parameters}\r\n", format.payload_type)?;
                }
            }
            if let Some(crypto) = crypto {
                write!(sdp, "a=crypto:{}\r\n", crypto.expose())?;
            }
            if let Some(label) = label {
                write!(sdp, "a=label:{label}\r\n")?;
            }
            write!(sdp, "a={}\r\n", direction.as_attribute())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two labelled sendonly streams, G.711 + telephone-event, RTCP attribute, ptime (jambonz/rtpengine-like).
    const TWO_STREAMS: &str = "v=0\r\n\
        o=- 3912345678 3912345678 IN IP4 192.0.2.10\r\n\
        s=SIPREC\r\n\
        c=IN IP4 192.0.2.10\r\n\
        t=0 0\r\n\
        m=audio 30000 RTP/AVP 0 8 101\r\n\
        a=rtpmap:0 PCMU/8000\r\n\
        a=rtpmap:8 PCMA/8000\r\n\
        a=rtpmap:101 telephone-event/8000\r\n\
        a=fmtp:101 0-16\r\n\
        a=ptime:20\r\n\
        a=rtcp:30001\r\n\
        a=label:1\r\n\
        a=sendonly\r\n\
        m=audio 30002 RTP/AVP 0 101\r\n\
        a=rtpmap:101 telephone-event/8000\r\n\
        a=label:0\r\n\
        a=sendonly\r\n";

    #[test]
    fn parses_labels_codecs_and_directions() {
        let sdp = SessionDescription::parse(TWO_STREAMS).unwrap();
        assert_eq!(sdp.origin.as_ref().unwrap().session_version, "3912345678");
        assert_eq!(sdp.media.len(), 2);
        let first = &sdp.media[0];
        assert!(first.is_audio());
        assert_eq!(first.port, 30000);
        assert_eq!(first.protocol, TransportProtocol::RtpAvp);
        assert_eq!(first.payload_types().collect::<Vec<_>>(), [0, 8, 101]);
        assert_eq!(first.rtpmap(101).unwrap().encoding, "telephone-event");
        assert_eq!(first.fmtp(101), Some("0-16"));
        assert_eq!(first.label.as_deref(), Some("1"));
        assert_eq!(first.ptime, Some(20));
        assert_eq!(first.rtcp_port, Some(30001));
        assert_eq!(sdp.direction_of(first), Direction::SendOnly);
        assert_eq!(sdp.media[1].label.as_deref(), Some("0"));
        assert!(!sdp.connection_of(first).unwrap().is_unspecified());
    }

    #[test]
    fn session_level_direction_and_hold_connection() {
        let text = "v=0\no=- 1 2 IN IP4 0.0.0.0\ns=-\nc=IN IP4 0.0.0.0\nt=0 0\na=inactive\n\
            m=audio 4000 RTP/AVP 8\nm=audio 4002 RTP/AVP 8\nc=IN IP6 ::\na=sendonly\n";
        let sdp = SessionDescription::parse(text).unwrap();
        assert_eq!(sdp.direction_of(&sdp.media[0]), Direction::Inactive);
        assert_eq!(sdp.direction_of(&sdp.media[1]), Direction::SendOnly);
        assert!(sdp.connection_of(&sdp.media[0]).unwrap().is_unspecified());
        assert!(sdp.connection_of(&sdp.media[1]).unwrap().is_unspecified());
    }

    #[test]
    fn keeps_non_audio_srtp_and_crypto_without_printing_keys() {
        let text = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
            m=audio 5000 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\n\
            m=video 5002 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n\
            m=text 5004 RTP/AVP 98\r\nm=application 5006 TCP/MSRP *\r\n";
        let sdp = SessionDescription::parse(text).unwrap();
        assert_eq!(sdp.media.len(), 4);
        assert!(sdp.media[0].protocol.is_secure());
        assert_eq!(sdp.media[0].crypto.len(), 1);
        assert!(
            sdp.media[0].crypto[0]
                .expose()
                .starts_with("1 AES_CM_128_HMAC_SHA1_80 inline:")
        );
        assert!(!format!("{sdp:?}").contains("inline:") && !format!("{sdp:?}").contains("192.0.2.1"));
        assert_eq!(
            sdp.media[3].protocol,
            TransportProtocol::Other("TCP/MSRP".to_owned())
        );
        assert_eq!(sdp.media[3].payload_types().count(), 0);
        assert_eq!(sdp.media[1].media_type, "video");
    }

    #[test]
    fn stops_at_a_stray_second_session_description() {
        let text = format!("{TWO_STREAMS}v=0\r\no=- 9 9 IN IP4 192.0.2.99\r\nm=audio 1 RTP/AVP 0\r\n");
        assert_eq!(SessionDescription::parse(&text).unwrap().media.len(), 2);
    }

    #[test]
    fn refuses_what_it_cannot_understand() {
        assert_eq!(SessionDescription::parse(""), Err(SdpError::NotSdp));
        assert_eq!(SessionDescription::parse("hello"), Err(SdpError::NotSdp));
        assert_eq!(SessionDescription::parse("v=1\r\n"), Err(SdpError::NotSdp));
        assert!(matches!(
            SessionDescription::parse("v=0\r\nm=audio\r\n"),
            Err(SdpError::MalformedLine { line: 2, .. })
        ));
        assert!(matches!(
            SessionDescription::parse("v=0\r\nm=audio 70000 RTP/AVP 0\r\n"),
            Err(SdpError::MalformedLine { .. })
        ));
        assert!(matches!(
            SessionDescription::parse("v=0\r\nc=IN IP4\r\n"),
            Err(SdpError::MalformedLine { .. })
        ));
        assert!(matches!(
            SessionDescription::parse("v=0\r\nm=audio 1 RTP/AVP 0\r\na=label:x\ry\r\n"),
            Err(SdpError::MalformedLine {
                what: "control character",
                ..
            })
        ));
        let many_media = format!(
            "v=0\r\n{}",
            "m=audio 1 RTP/AVP 0\r\n".repeat(MAX_MEDIA_DESCRIPTIONS + 1)
        );
        assert_eq!(
            SessionDescription::parse(&many_media),
            Err(SdpError::TooManyMediaDescriptions)
        );
        let many_lines = format!("v=0\r\n{}", "a=x\r\n".repeat(MAX_SDP_LINES));
        assert_eq!(
            SessionDescription::parse(&many_lines),
            Err(SdpError::TooManyLines)
        );
    }

    #[test]
    fn ignores_malformed_optional_attributes() {
        let text = "v=0\r\nm=audio 1 RTP/AVP 0 96\r\na=rtpmap:96\r\na=rtpmap:300 X/8000\r\na=rtpmap:96 opus/x\r\n\
            a=ptime:abc\r\na=fmtp:\r\na=RTPMAP:0 PCMU/8000\r\n";
        let sdp = SessionDescription::parse(text).unwrap();
        assert_eq!(sdp.media[0].rtpmaps.len(), 1);
        assert_eq!(sdp.media[0].rtpmap(0).unwrap().encoding, "PCMU");
        assert_eq!(sdp.media[0].ptime, None);
    }

    #[test]
    fn answer_renders_and_parses_back() {
        let media = vec![
            AnswerMedia::Audio {
                port: 16000,
                protocol: TransportProtocol::RtpAvp,
                formats: vec![
                    AnswerFormat {
                        payload_type: 0,
                        rtpmap: "PCMU/8000".to_owned(),
                        fmtp: None,
                    },
                    AnswerFormat {
                        payload_type: 101,
                        rtpmap: "telephone-event/8000".to_owned(),
                        fmtp: Some("0-16".to_owned()),
                    },
                ],
                label: Some("1".to_owned()),
                direction: Direction::RecvOnly,
                crypto: None,
            },
            AnswerMedia::Rejected {
                media_type: "video".to_owned(),
                protocol: TransportProtocol::RtpAvp,
                format: "96".to_owned(),
            },
        ];
        let mut origin = AnswerOrigin::new(42);
        let first = render_answer(&mut origin, "198.51.100.7".parse().unwrap(), &media);
        let second = render_answer(&mut origin, "198.51.100.7".parse().unwrap(), &media);
        let parsed = SessionDescription::parse(&first).unwrap();
        assert_eq!(parsed.origin.as_ref().unwrap().session_id, "42");
        assert_eq!(parsed.origin.unwrap().session_version, "1");
        let reparsed = SessionDescription::parse(&second).unwrap();
        assert_eq!(reparsed.origin.unwrap().session_version, "2");
        assert_eq!(parsed.connection.unwrap().address.expose(), "198.51.100.7");
        assert_eq!(parsed.media.len(), 2);
        assert_eq!(parsed.media[0].port, 16000);
        assert_eq!(parsed.media[0].payload_types().collect::<Vec<_>>(), [0, 101]);
        assert_eq!(parsed.media[0].fmtp(101), Some("0-16"));
        assert_eq!(parsed.media[0].label.as_deref(), Some("1"));
        assert_eq!(parsed.media[0].direction, Some(Direction::RecvOnly));
        assert_eq!(parsed.media[1].port, 0);
        assert_eq!(parsed.media[1].formats, ["96"]);
        assert!(first.ends_with("\r\n") && !first.replace("\r\n", "").contains('\n'));

        let v6 = render_answer(&mut origin, "2001:db8::7".parse().unwrap(), &[]);
        assert!(v6.contains("c=IN IP6 2001:db8::7\r\n"));
    }

    #[test]
    fn truncations_and_byte_flips_never_panic() {
        for end in 0..=TWO_STREAMS.len() {
            let _ = SessionDescription::parse(&TWO_STREAMS[..end]);
        }
        let mut bytes = TWO_STREAMS.as_bytes().to_vec();
        for index in 0..bytes.len() {
            let original = bytes[index];
            for replacement in [b'\r', b'=', b'/', b' ', b':', 0xc3] {
                bytes[index] = replacement;
                if let Ok(text) = std::str::from_utf8(&bytes) {
                    let _ = SessionDescription::parse(text);
                }
            }
            bytes[index] = original;
        }
    }
}
