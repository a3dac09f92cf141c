//! SIP message bodies of a Recording Session: `multipart/mixed` framing (RFC 2046 §5.1.1, RFC 5621) and the
//! classification of a whole body into what SIPREC cares about — the SDP offer, the rs-metadata document
//! (RFC 7865/7866, `application/rs-metadata+xml` or the legacy `application/rs-metadata`) and a metadata
//! snapshot request (`application/rs-metadata-request`).
//!
//! Owns: Content-Type / Content-Disposition parameter parsing, boundary delimiters, per-part headers, and the
//! [`BodyError`] → SIP status mapping for body problems. Pure and zero-copy: parts borrow the body.
//!
//! Tolerance (every real SRC deviates somewhere): parts in any order (BroadWorks puts metadata first), extra
//! parts ignored unless they say `handling=required` (Cisco's `application/gtd` says `optional`), CRLF or
//! bare LF line endings, preamble and epilogue, header folding, quoted or unquoted boundary, parameters in
//! any case. A per-part `Content-Length` is parsed but framing always follows the boundary delimiters
//! (RFC 2046 makes them authoritative; vendors' counts are not always right).

use std::fmt;

use thiserror::Error;

/// Largest body [`classify`] and [`parse`] accept; a larger one is refused with [`BodyError::BodyTooLarge`]
/// (SIP 413) before any parsing.
pub const MAX_BODY_BYTES: usize = 512 * 1024;
/// Most parts a multipart body may have (SDP + metadata + a few vendor extras); one more is refused with
/// [`BodyError::TooManyParts`].
pub const MAX_PARTS: usize = 8;
/// Most header lines in one part; one more is refused with [`BodyError::TooManyPartHeaders`].
pub const MAX_PART_HEADERS: usize = 16;
/// Longest boundary accepted. RFC 2046 allows 70 characters; some tolerance on top, then
/// [`BodyError::InvalidBoundary`].
pub const MAX_BOUNDARY_CHARS: usize = 200;
/// Most parameters kept from one Content-Type or Content-Disposition value; further ones are ignored.
pub const MAX_PARAMETERS: usize = 16;
/// How much of an unsupported content type is echoed back in [`BodyError::UnsupportedContentType`].
const MAX_ECHOED_CONTENT_TYPE_CHARS: usize = 64;

/// The body types an SRS accepts, for the `Accept` header of a 415 response.
pub const ACCEPTED_CONTENT_TYPES: &str =
    "application/sdp, application/rs-metadata+xml, application/rs-metadata, multipart/mixed";

const SDP: &str = "application/sdp";
const METADATA_XML: &str = "application/rs-metadata+xml";
const METADATA_LEGACY: &str = "application/rs-metadata";
const METADATA_REQUEST: &str = "application/rs-metadata-request";
const MULTIPART_MIXED: &str = "multipart/mixed";
const RECORDING_SESSION: &str = "recording-session";

/// A body problem, split by whose fault it is. [`BodyError::sip_status`] and [`BodyError::reason_phrase`]
/// give the response the control layer sends.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BodyError {
    // --- the peer sent something malformed (400) ---
    /// A non-empty body without a Content-Type header.
    #[error("the body has no Content-Type")]
    MissingContentType,
    /// A Content-Type (of the message or of a part) that is not `type/subtype *(; param)`.
    #[error("malformed Content-Type")]
    MalformedContentType,
    /// `multipart/mixed` without a `boundary` parameter.
    #[error("multipart/mixed without a boundary parameter")]
    MissingBoundary,
    /// An empty boundary or one longer than [`MAX_BOUNDARY_CHARS`].
    #[error("multipart boundary is empty or too long")]
    InvalidBoundary,
    /// No `--boundary` line anywhere in the body.
    #[error("no opening boundary delimiter in the multipart body")]
    NoOpeningBoundary,
    /// The body ends inside a part: the closing `--boundary--` is missing (typically a truncated datagram).
    #[error("multipart body ends without its closing boundary delimiter")]
    UnterminatedPart,
    /// A part header line without a colon, with a non-UTF-8 value, or an unparsable Content-Length.
    #[error("malformed header in a body part")]
    MalformedPartHeader,
    /// The SDP or metadata text is not UTF-8.
    #[error("the {0} part is not valid UTF-8")]
    NotUtf8(PartKind),
    /// Two SDP parts or two metadata parts: ambiguous, so refused.
    #[error("more than one {0} part")]
    DuplicatePart(PartKind),
    /// Returned by [`SiprecBody::require_sdp`] when a request that must carry an offer has none.
    #[error("no application/sdp part in the body")]
    NoSdpPart,
    // --- the peer sent something valid we do not support (415) ---
    /// A body type, or a part marked `handling=required`, that an SRS cannot process. Carries the lowercased
    /// `type/subtype` (at most 64 characters) for logs; it is not personal data.
    #[error("unsupported content type {0}")]
    UnsupportedContentType(String),
    // --- one of our limits was reached (413) ---
    /// The body is larger than [`MAX_BODY_BYTES`].
    #[error("body larger than {MAX_BODY_BYTES} bytes")]
    BodyTooLarge,
    /// More than [`MAX_PARTS`] parts.
    #[error("more than {MAX_PARTS} body parts")]
    TooManyParts,
    /// A part with more than [`MAX_PART_HEADERS`] header lines.
    #[error("more than {MAX_PART_HEADERS} headers in a body part")]
    TooManyPartHeaders,
}

impl BodyError {
    /// The SIP status to answer with: 400 for malformed bodies, 415 for unsupported types (send
    /// `Accept: `[`ACCEPTED_CONTENT_TYPES`]), 413 when one of our limits was reached.
    pub fn sip_status(&self) -> u16 {
        match self {
            BodyError::UnsupportedContentType(_) => 415,
            BodyError::BodyTooLarge | BodyError::TooManyParts | BodyError::TooManyPartHeaders => 413,
            _ => 400,
        }
    }

    /// A short reason phrase naming the problem, for the status line (and a `Warning: 399` text).
    pub fn reason_phrase(&self) -> &'static str {
        match self {
            BodyError::MissingContentType => "Missing Content-Type",
            BodyError::MalformedContentType => "Malformed Content-Type",
            BodyError::MissingBoundary => "Missing Multipart Boundary",
            BodyError::InvalidBoundary => "Invalid Multipart Boundary",
            BodyError::NoOpeningBoundary => "Multipart Boundary Not Found",
            BodyError::UnterminatedPart => "Unterminated Multipart Body",
            BodyError::MalformedPartHeader => "Malformed Body Part Header",
            BodyError::NotUtf8(PartKind::Sdp) => "SDP Not UTF-8",
            BodyError::NotUtf8(PartKind::Metadata) => "Recording Metadata Not UTF-8",
            BodyError::DuplicatePart(PartKind::Sdp) => "Duplicate SDP Part",
            BodyError::DuplicatePart(PartKind::Metadata) => "Duplicate Recording Metadata Part",
            BodyError::NoSdpPart => "Missing SDP Offer",
            BodyError::UnsupportedContentType(_) => "Unsupported Media Type",
            BodyError::BodyTooLarge => "Body Too Large",
            BodyError::TooManyParts => "Too Many Body Parts",
            BodyError::TooManyPartHeaders => "Too Many Body Part Headers",
        }
    }
}

/// Which SIPREC part an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartKind {
    /// The `application/sdp` part.
    Sdp,
    /// The `application/rs-metadata(+xml)` part.
    Metadata,
}

impl fmt::Display for PartKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PartKind::Sdp => "application/sdp",
            PartKind::Metadata => "rs-metadata",
        })
    }
}

/// A header value of the form `token *( ";" name [ "=" value ] )` with the leading token lowercased and
/// parameter names lowercased; parameter values are kept as sent (quotes and escapes removed).
#[derive(Debug, Clone, PartialEq, Eq)]
struct ParameterizedValue {
    primary: String,
    parameters: Vec<(String, String)>,
}

impl ParameterizedValue {
    fn parse(value: &str) -> Option<ParameterizedValue> {
        let (primary, mut rest) = match value.find(';') {
            Some(semicolon) => (value.get(..semicolon)?, value.get(semicolon..)?),
            None => (value, ""),
        };
        let primary = primary.trim();
        if primary.is_empty() {
            return None;
        }
        let mut parameters = Vec::new();
        while let Some(after_semicolon) = rest.strip_prefix(';') {
            let (parameter, remainder) = split_parameter(after_semicolon)?;
            rest = remainder.trim_start();
            if let Some(parameter) = parameter
                && parameters.len() < MAX_PARAMETERS
            {
                parameters.push(parameter);
            }
        }
        if !rest.is_empty() {
            return None;
        }
        Some(ParameterizedValue {
            primary: primary.to_ascii_lowercase(),
            parameters,
        })
    }

    fn parameter(&self, name: &str) -> Option<&str> {
        self.parameters
            .iter()
            .find(|(candidate, _)| candidate.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// Splits one `name[=value]` parameter off `input` (which starts right after a `;`). Returns the parameter
/// (None for an empty one, e.g. `;;`) and the rest starting at the next `;` or at the end.
fn split_parameter(input: &str) -> Option<(Option<(String, String)>, &str)> {
    let input = input.trim_start();
    let name_end = input.find(['=', ';']).unwrap_or(input.len());
    let name = input.get(..name_end)?.trim().to_ascii_lowercase();
    let after_name = input.get(name_end..)?;
    let Some(after_equals) = after_name.strip_prefix('=') else {
        let parameter = (!name.is_empty()).then(|| (name, String::new()));
        return Some((parameter, after_name));
    };
    let after_equals = after_equals.trim_start();
    let (value, rest) = if let Some(quoted) = after_equals.strip_prefix('"') {
        unquote(quoted)?
    } else {
        let value_end = after_equals.find(';').unwrap_or(after_equals.len());
        (
            after_equals.get(..value_end)?.trim().to_owned(),
            after_equals.get(value_end..)?,
        )
    };
    if name.is_empty() {
        return None;
    }
    Some((Some((name, value)), rest))
}

/// Reads a quoted-string body (after the opening quote) up to the closing quote, resolving `\x` escapes.
/// Returns the value and what follows the closing quote; None when the quote is never closed.
fn unquote(quoted: &str) -> Option<(String, &str)> {
    let mut value = String::new();
    let mut chars = quoted.char_indices();
    while let Some((index, character)) = chars.next() {
        match character {
            '"' => return Some((value, quoted.get(index + 1..)?)),
            '\\' => value.push(chars.next()?.1),
            other => value.push(other),
        }
    }
    None
}

/// A parsed `Content-Type` value: lowercased `type/subtype` and its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentType(ParameterizedValue);

impl ContentType {
    /// Parses a Content-Type header value such as `multipart/mixed;Boundary="unique-boundary-1"`.
    /// None when it is not `type/subtype` followed by well-formed parameters.
    pub fn parse(value: &str) -> Option<ContentType> {
        let parsed = ParameterizedValue::parse(value)?;
        let (kind, subtype) = parsed.primary.split_once('/')?;
        let is_token =
            |text: &str| !text.is_empty() && !text.contains(|c: char| c.is_whitespace() || c == '/');
        (is_token(kind) && is_token(subtype)).then_some(ContentType(parsed))
    }

    /// The lowercased `type/subtype`, e.g. `application/sdp`.
    pub fn essence(&self) -> &str {
        &self.0.primary
    }

    /// A parameter's value by case-insensitive name.
    pub fn parameter(&self, name: &str) -> Option<&str> {
        self.0.parameter(name)
    }
}

/// A parsed `Content-Disposition` value (RFC 3261 §20.11, RFC 7866 `recording-session`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentDisposition(ParameterizedValue);

impl ContentDisposition {
    /// Parses e.g. `recording-session` or `session;handling=required`. None when malformed.
    pub fn parse(value: &str) -> Option<ContentDisposition> {
        ParameterizedValue::parse(value).map(ContentDisposition)
    }

    /// The lowercased disposition type, e.g. `session`, `recording-session`, `signal`.
    pub fn disposition_type(&self) -> &str {
        &self.0.primary
    }

    /// True when the part says `handling=required`: a part we do not understand must then be refused (415)
    /// rather than ignored (RFC 3261 §20.11, RFC 5621 §9). A missing `handling` counts as optional here, to
    /// tolerate SRCs that send extra parts without it.
    pub fn handling_required(&self) -> bool {
        self.0
            .parameter("handling")
            .is_some_and(|handling| handling.eq_ignore_ascii_case("required"))
    }
}

/// One part of a multipart body. `Debug` shows the content length, never the content (it may be PII).
#[derive(Clone, PartialEq, Eq)]
pub struct Part<'a> {
    /// The part's Content-Type; None when absent (RFC 2046's default `text/plain` then applies).
    pub content_type: Option<ContentType>,
    /// The part's Content-Disposition, if any.
    pub disposition: Option<ContentDisposition>,
    /// The part's own Content-Length header, if any (informational; framing follows the delimiters).
    pub declared_length: Option<usize>,
    /// The part's content: from after the blank line ending its headers to before the line break that
    /// precedes the next delimiter.
    pub content: &'a [u8],
}

impl fmt::Debug for Part<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Part")
            .field(
                "content_type",
                &self.content_type.as_ref().map(ContentType::essence),
            )
            .field(
                "disposition",
                &self
                    .disposition
                    .as_ref()
                    .map(ContentDisposition::disposition_type),
            )
            .field("declared_length", &self.declared_length)
            .field("content_bytes", &self.content.len())
            .finish()
    }
}

/// Splits a `multipart/*` body into its parts, given the message's Content-Type value. The preamble before
/// the first delimiter and the epilogue after the closing one are ignored.
pub fn parse<'a>(content_type: &str, body: &'a [u8]) -> Result<Vec<Part<'a>>, BodyError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(BodyError::BodyTooLarge);
    }
    let content_type = ContentType::parse(content_type).ok_or(BodyError::MalformedContentType)?;
    parse_with_boundary(&content_type, body)
}

fn parse_with_boundary<'a>(content_type: &ContentType, body: &'a [u8]) -> Result<Vec<Part<'a>>, BodyError> {
    let boundary = content_type
        .parameter("boundary")
        .ok_or(BodyError::MissingBoundary)?;
    if boundary.is_empty() || boundary.chars().count() > MAX_BOUNDARY_CHARS {
        return Err(BodyError::InvalidBoundary);
    }
    split_at_delimiters(body, boundary)?
        .into_iter()
        .map(parse_part)
        .collect()
}

/// Finds the delimiter lines (`--boundary`, closing `--boundary--`, optionally followed by whitespace) and
/// returns the raw parts between them.
fn split_at_delimiters<'a>(body: &'a [u8], boundary: &str) -> Result<Vec<&'a [u8]>, BodyError> {
    let dash_boundary = format!("--{boundary}");
    let mut parts = Vec::new();
    let mut current_part_start = None;
    let mut line_start = 0;
    while let Some(remaining) = body.get(line_start..).filter(|remaining| !remaining.is_empty()) {
        let line_length = remaining.iter().position(|&byte| byte == b'\n');
        let next_line_start = line_start + line_length.map_or(remaining.len(), |length| length + 1);
        let line = remaining
            .get(..line_length.unwrap_or(remaining.len()))
            .unwrap_or_default();
        let is_closing = match line
            .strip_prefix(dash_boundary.as_bytes())
            .map(trim_trailing_whitespace)
        {
            Some(b"") => false,
            Some(b"--") => true,
            _ => {
                line_start = next_line_start;
                continue;
            }
        };
        if let Some(start) = current_part_start {
            if parts.len() == MAX_PARTS {
                return Err(BodyError::TooManyParts);
            }
            // The line break before a delimiter belongs to the delimiter (RFC 2046 §5.1.1).
            let content = body.get(start..line_start).unwrap_or_default();
            let content = content
                .strip_suffix(b"\n")
                .map_or(content, |c| c.strip_suffix(b"\r").unwrap_or(c));
            parts.push(content);
        }
        if is_closing {
            return Ok(parts);
        }
        current_part_start = Some(next_line_start);
        line_start = next_line_start;
    }
    Err(match current_part_start {
        None => BodyError::NoOpeningBoundary,
        Some(_) => BodyError::UnterminatedPart,
    })
}

fn trim_trailing_whitespace(bytes: &[u8]) -> &[u8] {
    let kept = bytes
        .iter()
        .rposition(|byte| !matches!(byte, b' ' | b'\t' | b'\r'))
        .map_or(0, |last| last + 1);
    bytes.get(..kept).unwrap_or_default()
}

/// Parses one raw part: header lines (folded continuation lines allowed) up to the first empty line, then
/// content. A part without any empty line is all headers and has empty content.
fn parse_part(raw: &[u8]) -> Result<Part<'_>, BodyError> {
    let mut headers: Vec<Vec<u8>> = Vec::new();
    let mut line_start = 0;
    let mut content: &[u8] = &[];
    while let Some(remaining) = raw.get(line_start..).filter(|remaining| !remaining.is_empty()) {
        let line_length = remaining.iter().position(|&byte| byte == b'\n');
        let next_line_start = line_start + line_length.map_or(remaining.len(), |length| length + 1);
        let line = remaining
            .get(..line_length.unwrap_or(remaining.len()))
            .unwrap_or_default();
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        line_start = next_line_start;
        if line.is_empty() {
            content = raw.get(next_line_start..).unwrap_or_default();
            break;
        }
        if matches!(line.first(), Some(b' ' | b'\t')) {
            let previous = headers.last_mut().ok_or(BodyError::MalformedPartHeader)?;
            previous.push(b' ');
            previous.extend_from_slice(line.trim_ascii());
        } else if headers.len() == MAX_PART_HEADERS {
            return Err(BodyError::TooManyPartHeaders);
        } else {
            headers.push(line.to_vec());
        }
    }
    let mut part = Part {
        content_type: None,
        disposition: None,
        declared_length: None,
        content,
    };
    for header in &headers {
        let colon = header
            .iter()
            .position(|&byte| byte == b':')
            .ok_or(BodyError::MalformedPartHeader)?;
        let name = header.get(..colon).unwrap_or_default().trim_ascii();
        let value = || {
            let raw_value = header.get(colon + 1..).unwrap_or_default();
            std::str::from_utf8(raw_value)
                .map(str::trim)
                .map_err(|_| BodyError::MalformedPartHeader)
        };
        if name.eq_ignore_ascii_case(b"content-type") || name.eq_ignore_ascii_case(b"c") {
            part.content_type = Some(ContentType::parse(value()?).ok_or(BodyError::MalformedContentType)?);
        } else if name.eq_ignore_ascii_case(b"content-disposition") {
            part.disposition =
                Some(ContentDisposition::parse(value()?).ok_or(BodyError::MalformedPartHeader)?);
        } else if name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"l") {
            part.declared_length = Some(value()?.parse().map_err(|_| BodyError::MalformedPartHeader)?);
        }
    }
    Ok(part)
}

/// Which media type the metadata was sent as (RFC 9806 prefers `+xml`; older SRCs send the legacy type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetadataContentType {
    /// `application/rs-metadata+xml`.
    Xml,
    /// `application/rs-metadata` (Avaya SBCE, AudioCodes, …).
    Legacy,
}

/// The rs-metadata document found in a body. `Debug` hides the XML (participants' AoRs are PII).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct MetadataPart<'a> {
    /// The media type it arrived as.
    pub content_type: MetadataContentType,
    /// The XML text, for `metadata::parse` and for sealing into the manifest.
    pub xml: &'a str,
}

impl fmt::Debug for MetadataPart<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetadataPart")
            .field("content_type", &self.content_type)
            .field("xml_bytes", &self.xml.len())
            .finish()
    }
}

/// What a SIP request body means to an SRS. Any combination is possible: SDP + metadata (initial INVITE),
/// SDP only (pause/resume re-INVITE, Cisco NBR), metadata only (Avaya UPDATE), nothing (empty body).
/// `Debug` shows sizes only (SDP carries IP addresses, metadata carries AoRs).
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct SiprecBody<'a> {
    /// The SDP text, if the body has an `application/sdp` part (or is one).
    pub sdp: Option<&'a str>,
    /// The metadata document, if any.
    pub metadata: Option<MetadataPart<'a>>,
    /// True when the body contains an `application/rs-metadata-request` (RFC 7866 §9: the sender asks for
    /// a complete metadata snapshot).
    pub metadata_request: bool,
    /// True when some part has `Content-Disposition: recording-session` — a SIPREC hint for the lenient
    /// recognition of Recording Sessions from SRCs that omit `Require: siprec` / `+sip.src`.
    pub has_recording_session_disposition: bool,
}

impl fmt::Debug for SiprecBody<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SiprecBody")
            .field("sdp_bytes", &self.sdp.map(str::len))
            .field("metadata", &self.metadata)
            .field("metadata_request", &self.metadata_request)
            .field(
                "has_recording_session_disposition",
                &self.has_recording_session_disposition,
            )
            .finish()
    }
}

impl<'a> SiprecBody<'a> {
    /// The SDP offer, or [`BodyError::NoSdpPart`] for requests that must carry one (an initial INVITE).
    pub fn require_sdp(&self) -> Result<&'a str, BodyError> {
        self.sdp.ok_or(BodyError::NoSdpPart)
    }
}

/// Classifies a SIP request body given its Content-Type header value (None when the header is absent).
/// An empty body is an empty [`SiprecBody`] whatever the Content-Type says. A single-part body may be
/// `application/sdp`, either metadata type, or `application/rs-metadata-request`; `multipart/mixed` is split
/// and each part classified. Unknown parts are ignored unless marked `handling=required`.
pub fn classify<'a>(content_type: Option<&str>, body: &'a [u8]) -> Result<SiprecBody<'a>, BodyError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(BodyError::BodyTooLarge);
    }
    let mut classified = SiprecBody::default();
    if body.trim_ascii().is_empty() {
        return Ok(classified);
    }
    let content_type = ContentType::parse(content_type.ok_or(BodyError::MissingContentType)?)
        .ok_or(BodyError::MalformedContentType)?;
    if content_type.essence() == MULTIPART_MIXED {
        for part in parse_with_boundary(&content_type, body)? {
            classified.add_part(&part)?;
        }
    } else {
        let single = Part {
            content_type: Some(content_type),
            disposition: None,
            declared_length: None,
            content: body,
        };
        if !classified.add_part(&single)? {
            return Err(unsupported(single.content_type.as_ref()));
        }
    }
    Ok(classified)
}

impl<'a> SiprecBody<'a> {
    /// Takes in one part; returns whether it was one SIPREC understands.
    fn add_part(&mut self, part: &Part<'a>) -> Result<bool, BodyError> {
        if part
            .disposition
            .as_ref()
            .is_some_and(|d| d.disposition_type() == RECORDING_SESSION)
        {
            self.has_recording_session_disposition = true;
        }
        let essence = part.content_type.as_ref().map(ContentType::essence);
        let metadata_type = match essence {
            Some(SDP) => {
                if self.sdp.is_some() {
                    return Err(BodyError::DuplicatePart(PartKind::Sdp));
                }
                let text =
                    std::str::from_utf8(part.content).map_err(|_| BodyError::NotUtf8(PartKind::Sdp))?;
                self.sdp = Some(text);
                return Ok(true);
            }
            Some(METADATA_REQUEST) => {
                self.metadata_request = true;
                return Ok(true);
            }
            Some(METADATA_XML) => MetadataContentType::Xml,
            Some(METADATA_LEGACY) => MetadataContentType::Legacy,
            _ if part
                .disposition
                .as_ref()
                .is_some_and(ContentDisposition::handling_required) =>
            {
                return Err(unsupported(part.content_type.as_ref()));
            }
            _ => return Ok(false),
        };
        if self.metadata.is_some() {
            return Err(BodyError::DuplicatePart(PartKind::Metadata));
        }
        let xml = std::str::from_utf8(part.content).map_err(|_| BodyError::NotUtf8(PartKind::Metadata))?;
        self.metadata = Some(MetadataPart {
            content_type: metadata_type,
            xml,
        });
        Ok(true)
    }
}

fn unsupported(content_type: Option<&ContentType>) -> BodyError {
    let essence = content_type.map_or("text/plain", ContentType::essence);
    BodyError::UnsupportedContentType(essence.chars().take(MAX_ECHOED_CONTENT_TYPE_CHARS).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SDP_TEXT: &str = "v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n\
        m=audio 20000 RTP/AVP 0\r\na=label:1\r\na=sendonly\r\n";
    const XML_TEXT: &str = "<?xml version=\"1.0\"?>\r\n<recording xmlns=\"urn:ietf:params:xml:ns:recording:1\">\
        <datamode>complete</datamode></recording>";

    fn two_part_body(line_end: &str) -> String {
        let sdp = SDP_TEXT.replace("\r\n", line_end);
        [
            "This is a preamble, ignored.",
            "--foo-bar_1",
            "Content-Type: application/sdp",
            "",
            sdp.trim_end(),
            "--foo-bar_1",
            "Content-Type: application/rs-metadata+xml",
            "Content-Disposition: recording-session",
            "",
            XML_TEXT,
            "--foo-bar_1--",
            "epilogue",
        ]
        .join(line_end)
    }

    #[test]
    fn classifies_rfc_shaped_multipart_with_crlf_and_bare_lf() {
        for line_end in ["\r\n", "\n"] {
            let body = two_part_body(line_end);
            let classified = classify(Some("multipart/mixed;boundary=foo-bar_1"), body.as_bytes()).unwrap();
            assert_eq!(
                classified.sdp.unwrap(),
                SDP_TEXT.replace("\r\n", line_end).trim_end()
            );
            let metadata = classified.metadata.unwrap();
            assert_eq!(metadata.content_type, MetadataContentType::Xml);
            assert_eq!(metadata.xml, XML_TEXT);
            assert!(classified.has_recording_session_disposition);
            assert!(!classified.metadata_request);
        }
    }

    #[test]
    fn boundary_parameter_may_be_quoted_and_any_case() {
        let body = two_part_body("\r\n");
        for content_type in [
            "multipart/mixed; boundary=\"foo-bar_1\"",
            "Multipart/Mixed;BOUNDARY=foo-bar_1;charset=utf-8",
            "multipart/mixed ; charset=\"x;y\" ; Boundary = \"foo-bar_1\"",
        ] {
            let classified = classify(Some(content_type), body.as_bytes()).unwrap();
            assert!(
                classified.sdp.is_some() && classified.metadata.is_some(),
                "{content_type}"
            );
        }
    }

    #[test]
    fn metadata_first_with_part_lengths_and_extra_gtd_part() {
        let xml = XML_TEXT;
        let body = format!(
            "--uniqueBoundary\r\nContent-Type: application/rs-metadata\r\nContent-Disposition: recording-session\r\n\
             Content-Length: {}\r\n\r\n{xml}\r\n--uniqueBoundary\r\nContent-Type: application/gtd\r\n\
             Content-Disposition: signal;handling=optional\r\n\r\nIAM,\r\nPRN,isdn*,,NET5*,\r\n\
             --uniqueBoundary\r\nContent-Type: application/sdp\r\nContent-Disposition: session;handling=required\r\n\
             \r\n{SDP_TEXT}\r\n--uniqueBoundary--\r\n",
            xml.len()
        );
        let parts = parse("multipart/mixed;boundary=uniqueBoundary", body.as_bytes()).unwrap();
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0].declared_length, Some(xml.len()));
        assert!(parts[2].disposition.as_ref().unwrap().handling_required());
        assert!(!parts[1].disposition.as_ref().unwrap().handling_required());
        let classified = classify(Some("multipart/mixed;boundary=uniqueBoundary"), body.as_bytes()).unwrap();
        assert_eq!(classified.sdp, Some(SDP_TEXT));
        assert_eq!(
            classified.metadata.unwrap().content_type,
            MetadataContentType::Legacy
        );
    }

    #[test]
    fn single_part_bodies() {
        let sdp = classify(Some("application/sdp"), SDP_TEXT.as_bytes()).unwrap();
        assert_eq!(sdp.sdp, Some(SDP_TEXT));
        assert!(sdp.metadata.is_none());

        let update = classify(Some("application/rs-metadata"), XML_TEXT.as_bytes()).unwrap();
        assert!(update.sdp.is_none());
        assert_eq!(update.metadata.unwrap().content_type, MetadataContentType::Legacy);
        assert_eq!(update.require_sdp(), Err(BodyError::NoSdpPart));

        let xml = classify(
            Some("application/rs-metadata+xml; charset=UTF-8"),
            XML_TEXT.as_bytes(),
        )
        .unwrap();
        assert_eq!(xml.metadata.unwrap().content_type, MetadataContentType::Xml);

        let request = classify(Some("application/rs-metadata-request"), b"SRS lost state").unwrap();
        assert!(request.metadata_request);

        assert_eq!(classify(None, b"").unwrap(), SiprecBody::default());
        assert_eq!(
            classify(Some("application/sdp"), b"\r\n").unwrap(),
            SiprecBody::default()
        );
    }

    #[test]
    fn folded_and_compact_headers() {
        let body = "--b\nc:\n  application/sdp\nl: 3\n\nv=0\n--b--";
        let parts = parse("multipart/mixed;boundary=b", body.as_bytes()).unwrap();
        assert_eq!(
            parts[0].content_type.as_ref().unwrap().essence(),
            "application/sdp"
        );
        assert_eq!(parts[0].declared_length, Some(3));
        assert_eq!(parts[0].content, b"v=0");
    }

    #[test]
    fn delimiter_must_be_a_whole_line() {
        let body = "--b\r\nContent-Type: text/plain\r\n\r\nsee --b in text\r\n--bx\r\n--b \r\n\r\nsecond\r\n--b--  \r\n";
        let parts = parse("multipart/mixed;boundary=b", body.as_bytes()).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].content, b"see --b in text\r\n--bx");
        assert_eq!(parts[1].content, b"second");
        assert!(parts[1].content_type.is_none());
    }

    #[test]
    fn errors_name_the_problem() {
        let body = two_part_body("\r\n");
        let cases: Vec<(Option<&str>, Vec<u8>, BodyError)> = vec![
            (
                Some("multipart/mixed"),
                body.clone().into_bytes(),
                BodyError::MissingBoundary,
            ),
            (
                Some("multipart/mixed;boundary=\"\""),
                body.clone().into_bytes(),
                BodyError::InvalidBoundary,
            ),
            (
                Some("multipart/mixed;boundary=other"),
                body.clone().into_bytes(),
                BodyError::NoOpeningBoundary,
            ),
            (
                Some("multipart/mixed;boundary=foo-bar_1"),
                body.as_bytes()[..body.find("--foo-bar_1--").unwrap()].to_vec(),
                BodyError::UnterminatedPart,
            ),
            (None, body.clone().into_bytes(), BodyError::MissingContentType),
            (
                Some("nonsense"),
                body.clone().into_bytes(),
                BodyError::MalformedContentType,
            ),
            (
                Some("multipart/mixed;boundary=\"open"),
                body.clone().into_bytes(),
                BodyError::MalformedContentType,
            ),
            (
                Some("text/html"),
                b"<html/>".to_vec(),
                BodyError::UnsupportedContentType("text/html".to_owned()),
            ),
            (
                Some("application/sdp"),
                vec![b'v', b'=', 0xff],
                BodyError::NotUtf8(PartKind::Sdp),
            ),
            (
                Some("application/sdp"),
                vec![b' '; MAX_BODY_BYTES + 1],
                BodyError::BodyTooLarge,
            ),
        ];
        for (content_type, body, expected) in cases {
            assert_eq!(classify(content_type, &body), Err(expected.clone()), "{expected}");
            assert!(!expected.reason_phrase().is_empty());
        }
        assert_eq!(BodyError::UnsupportedContentType(String::new()).sip_status(), 415);
        assert_eq!(BodyError::TooManyParts.sip_status(), 413);
        assert_eq!(BodyError::UnterminatedPart.sip_status(), 400);
    }

    #[test]
    fn required_unknown_part_is_unsupported_and_duplicates_are_refused() {
        let required = "--b\r\nContent-Type: application/isup\r\nContent-Disposition: signal;handling=required\r\n\r\nx\r\n--b--";
        assert_eq!(
            classify(Some("multipart/mixed;boundary=b"), required.as_bytes()),
            Err(BodyError::UnsupportedContentType("application/isup".to_owned()))
        );
        let twice = format!(
            "--b\r\nContent-Type: application/sdp\r\n\r\n{SDP_TEXT}\r\n--b\r\nContent-Type: application/sdp\r\n\r\n{SDP_TEXT}\r\n--b--"
        );
        assert_eq!(
            classify(Some("multipart/mixed;boundary=b"), twice.as_bytes()),
            Err(BodyError::DuplicatePart(PartKind::Sdp))
        );
    }

    #[test]
    fn part_count_and_header_count_are_capped() {
        let many_parts = format!("{}--b--", "--b\r\n\r\nx\r\n".repeat(MAX_PARTS + 1));
        assert_eq!(
            parse("multipart/mixed;boundary=b", many_parts.as_bytes()),
            Err(BodyError::TooManyParts)
        );
        let exactly = format!("{}--b--", "--b\r\n\r\nx\r\n".repeat(MAX_PARTS));
        assert_eq!(
            parse("multipart/mixed;boundary=b", exactly.as_bytes())
                .unwrap()
                .len(),
            MAX_PARTS
        );
        let many_headers = format!(
            "--b\r\n{}\r\nx\r\n--b--",
            "X-A: 1\r\n".repeat(MAX_PART_HEADERS + 1)
        );
        assert_eq!(
            parse("multipart/mixed;boundary=b", many_headers.as_bytes()),
            Err(BodyError::TooManyPartHeaders)
        );
    }

    #[test]
    fn debug_never_shows_content() {
        let body = two_part_body("\r\n");
        let classified = classify(Some("multipart/mixed;boundary=foo-bar_1"), body.as_bytes()).unwrap();
        let printed = format!("{classified:?}");
        assert!(
            !printed.contains("192.0.2.10") && !printed.contains("urn:ietf"),
            "{printed}"
        );
    }

    #[test]
    fn truncations_and_byte_flips_never_panic() {
        let body = two_part_body("\r\n");
        let content_type = "multipart/mixed;boundary=foo-bar_1";
        for end in 0..=body.len() {
            let _ = classify(Some(content_type), &body.as_bytes()[..end]);
            let _ = classify(
                Some(&content_type[..end.min(content_type.len())]),
                body.as_bytes(),
            );
        }
        let mut mutated = body.into_bytes();
        for index in 0..mutated.len() {
            let original = mutated[index];
            for replacement in [0xc3, b'\n', b'-', b'"'] {
                mutated[index] = replacement;
                let _ = classify(Some(content_type), &mutated);
            }
            mutated[index] = original;
        }
    }
}
