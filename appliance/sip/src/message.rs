//! SIP messages: parsing (tolerant of what real SBCs send, never panicking), typed header accessors,
//! building responses and serialising with a correct Content-Length.
//!
//! The parser accepts folded header lines, compact header names (`v`, `i`, `f`, `t`, `m`, `l`, `c`, `k`, …),
//! bare-LF line ends, IPv6 hosts and `tel:` URIs, and any extension method (so it can be answered 501). It caps
//! the number of header lines. A request that lexes but fails validation comes back inside [`ParseError`] so
//! the endpoint can still answer it with a 400 naming the problem.

use std::fmt::Write as _;
use std::hash::{DefaultHasher, Hash, Hasher};

/// Most header lines accepted in one message; more is a 400 ("Too many headers").
pub const MAX_HEADER_LINES: usize = 256;

/// The magic cookie that marks an RFC 3261 branch.
pub const BRANCH_MAGIC_COOKIE: &str = "z9hG4bK";

/// A SIP request method. Methods are case-sensitive tokens (RFC 3261 §7.1); unknown tokens are kept as
/// [`Method::Extension`] so they can be answered 501.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    Invite,
    Ack,
    Bye,
    Cancel,
    Options,
    Update,
    Info,
    Prack,
    Register,
    Subscribe,
    Notify,
    Refer,
    Message,
    Publish,
    /// Any other token.
    Extension(String),
}

impl Method {
    /// Parses a method token; `None` when it is not a valid token.
    pub fn parse(token: &str) -> Option<Method> {
        if token.is_empty() || !token.bytes().all(is_token_byte) {
            return None;
        }
        Some(match token {
            "INVITE" => Method::Invite,
            "ACK" => Method::Ack,
            "BYE" => Method::Bye,
            "CANCEL" => Method::Cancel,
            "OPTIONS" => Method::Options,
            "UPDATE" => Method::Update,
            "INFO" => Method::Info,
            "PRACK" => Method::Prack,
            "REGISTER" => Method::Register,
            "SUBSCRIBE" => Method::Subscribe,
            "NOTIFY" => Method::Notify,
            "REFER" => Method::Refer,
            "MESSAGE" => Method::Message,
            "PUBLISH" => Method::Publish,
            other => Method::Extension(other.to_owned()),
        })
    }

    /// The method token as sent on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Options => "OPTIONS",
            Method::Update => "UPDATE",
            Method::Info => "INFO",
            Method::Prack => "PRACK",
            Method::Register => "REGISTER",
            Method::Subscribe => "SUBSCRIBE",
            Method::Notify => "NOTIFY",
            Method::Refer => "REFER",
            Method::Message => "MESSAGE",
            Method::Publish => "PUBLISH",
            Method::Extension(token) => token,
        }
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a message could not be parsed. Always the peer's fault. [`ParseErrorKind::status`] is the SIP status
/// to answer with and the `Display` text is the reason phrase.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseErrorKind {
    #[error("Incomplete message")]
    Incomplete,
    #[error("Malformed start line")]
    StartLine,
    #[error("SIP Version Not Supported")]
    Version,
    #[error("Malformed header line")]
    HeaderLine,
    #[error("Too many headers")]
    TooManyHeaders,
    #[error("Missing {0} header")]
    MissingHeader(&'static str),
    #[error("Malformed {0} header")]
    MalformedHeader(&'static str),
    #[error("CSeq method does not match request method")]
    CSeqMethodMismatch,
    #[error("Body shorter than Content-Length")]
    BodyTruncated,
}

impl ParseErrorKind {
    /// The SIP status code this error is answered with.
    pub fn status(&self) -> u16 {
        match self {
            ParseErrorKind::Version => 505,
            _ => 400,
        }
    }
}

/// A message that could not be parsed, with the request as far as it lexed (when it did) so it can be
/// answered.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{kind}")]
pub struct ParseError {
    /// What was wrong.
    pub kind: ParseErrorKind,
    /// The request's start line and headers when they lexed; `None` for responses and unlexable input.
    pub salvaged_request: Option<Box<Request>>,
}

impl ParseError {
    fn new(kind: ParseErrorKind) -> Self {
        Self {
            kind,
            salvaged_request: None,
        }
    }
}

/// One header line: canonical name (compact forms expanded) and the trimmed, unfolded value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderField {
    /// Canonical header name, e.g. `Call-ID` for `i`.
    pub name: String,
    /// The value with folding undone and outer whitespace trimmed.
    pub value: String,
}

/// The headers of a message, in order. Lookups are case-insensitive and accept compact forms.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    fields: Vec<HeaderField>,
}

/// Maps a compact header name (RFC 3261 §7.3.3 and later RFCs) to its long form.
fn expand_compact_name(name: &str) -> Option<&'static str> {
    let mut chars = name.chars();
    let (Some(first), None) = (chars.next(), chars.next()) else {
        return None;
    };
    Some(match first.to_ascii_lowercase() {
        'a' => "Accept-Contact",
        'b' => "Referred-By",
        'c' => "Content-Type",
        'd' => "Request-Disposition",
        'e' => "Content-Encoding",
        'f' => "From",
        'i' => "Call-ID",
        'j' => "Reject-Contact",
        'k' => "Supported",
        'l' => "Content-Length",
        'm' => "Contact",
        'o' => "Event",
        'r' => "Refer-To",
        's' => "Subject",
        't' => "To",
        'u' => "Allow-Events",
        'v' => "Via",
        'x' => "Session-Expires",
        'y' => "Identity",
        _ => return None,
    })
}

/// The canonical spelling of a header name: compact forms expanded, well-known names in their usual case.
fn canonical_name(name: &str) -> String {
    if let Some(long) = expand_compact_name(name) {
        return long.to_owned();
    }
    const WELL_KNOWN: &[&str] = &[
        "Accept",
        "Allow",
        "Call-ID",
        "Contact",
        "Content-Disposition",
        "Content-Length",
        "Content-Type",
        "CSeq",
        "From",
        "Max-Forwards",
        "Record-Route",
        "Require",
        "Retry-After",
        "Route",
        "Supported",
        "To",
        "Unsupported",
        "Via",
    ];
    WELL_KNOWN
        .iter()
        .find(|known| known.eq_ignore_ascii_case(name))
        .map_or_else(|| name.to_owned(), |known| (*known).to_owned())
}

fn names_match(field_name: &str, wanted: &str) -> bool {
    field_name.eq_ignore_ascii_case(wanted)
        || expand_compact_name(wanted).is_some_and(|long| field_name.eq_ignore_ascii_case(long))
}

/// Removes CR, LF and other control characters so a value cannot inject header lines.
fn sanitize_line(value: &str) -> String {
    value
        .chars()
        .map(|c| if c.is_control() && c != '\t' { ' ' } else { c })
        .collect()
}

impl Headers {
    /// The first value of the named header.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|field| names_match(&field.name, name))
            .map(|field| field.value.as_str())
    }

    /// Every line of the named header, in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.fields
            .iter()
            .filter(move |field| names_match(&field.name, name))
            .map(|field| field.value.as_str())
    }

    /// The comma-separated elements of the named header across all its lines (commas inside quotes or
    /// angle brackets do not split), trimmed, empty elements skipped.
    pub fn list(&self, name: &str) -> Vec<&str> {
        self.fields
            .iter()
            .filter(|field| names_match(&field.name, name))
            .flat_map(|field| split_list(&field.value))
            .collect()
    }

    /// Whether the named header's list contains `token` (case-insensitive), e.g. `Require: siprec`.
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.list(name)
            .iter()
            .any(|element| element.eq_ignore_ascii_case(token))
    }

    /// Appends a header line. CR/LF in the value are replaced so no line can be injected.
    pub fn push(&mut self, name: &str, value: &str) {
        self.fields.push(HeaderField {
            name: canonical_name(name),
            value: sanitize_line(value),
        });
    }

    /// Inserts a header line before all others (used for our Via).
    pub fn push_front(&mut self, name: &str, value: &str) {
        self.fields.insert(
            0,
            HeaderField {
                name: canonical_name(name),
                value: sanitize_line(value),
            },
        );
    }

    /// Removes every line of the named header.
    pub fn remove(&mut self, name: &str) {
        self.fields.retain(|field| !names_match(&field.name, name));
    }

    /// Replaces every line of the named header with one line.
    pub fn set(&mut self, name: &str, value: &str) {
        self.remove(name);
        self.push(name, value);
    }

    /// All header lines in order.
    pub fn iter(&self) -> impl Iterator<Item = &HeaderField> {
        self.fields.iter()
    }

    /// Number of header lines.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// Whether there are no header lines.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// The Call-ID.
    pub fn call_id(&self) -> Option<&str> {
        self.get("Call-ID").filter(|value| !value.is_empty())
    }

    /// The parsed CSeq, `None` when absent or malformed.
    pub fn cseq(&self) -> Option<CSeq> {
        self.get("CSeq").and_then(CSeq::parse)
    }

    /// The From header.
    pub fn from(&self) -> Option<NameAddr> {
        self.get("From").and_then(NameAddr::parse)
    }

    /// The To header.
    pub fn to(&self) -> Option<NameAddr> {
        self.get("To").and_then(NameAddr::parse)
    }

    /// The topmost Via.
    pub fn top_via(&self) -> Option<Via> {
        self.list("Via").first().and_then(|value| Via::parse(value))
    }

    /// Every Contact entry.
    pub fn contacts(&self) -> Vec<NameAddr> {
        self.list("Contact")
            .into_iter()
            .filter_map(NameAddr::parse)
            .collect()
    }

    /// Every Record-Route entry, in order, verbatim.
    pub fn record_routes(&self) -> Vec<&str> {
        self.list("Record-Route")
    }

    /// The option tags in Require.
    pub fn require(&self) -> Vec<&str> {
        self.list("Require")
    }

    /// The option tags in Supported.
    pub fn supported(&self) -> Vec<&str> {
        self.list("Supported")
    }

    /// The Content-Type value (with parameters).
    pub fn content_type(&self) -> Option<&str> {
        self.get("Content-Type")
    }

    /// The Content-Length, `None` when absent or not a number.
    pub fn content_length(&self) -> Option<usize> {
        self.get("Content-Length")
            .and_then(|value| value.trim().parse().ok())
    }

    /// Max-Forwards, `None` when absent or not a number.
    pub fn max_forwards(&self) -> Option<u32> {
        self.get("Max-Forwards")
            .and_then(|value| value.trim().parse().ok())
    }

    fn write_to(&self, out: &mut String, body_len: usize) {
        for field in self
            .fields
            .iter()
            .filter(|field| !field.name.eq_ignore_ascii_case("Content-Length"))
        {
            let _ = write!(out, "{}: {}\r\n", field.name, field.value);
        }
        let _ = write!(out, "Content-Length: {body_len}\r\n\r\n");
    }
}

/// Splits a header value at commas that are outside quotes and angle brackets.
fn split_list(value: &str) -> impl Iterator<Item = &str> {
    let mut parts = Vec::new();
    let mut in_quotes = false;
    let mut angle_depth = 0u32;
    let mut escaped = false;
    let mut start = 0;
    for (index, c) in value.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if in_quotes => escaped = true,
            '"' => in_quotes = !in_quotes,
            '<' if !in_quotes => angle_depth = angle_depth.saturating_add(1),
            '>' if !in_quotes => angle_depth = angle_depth.saturating_sub(1),
            ',' if !in_quotes && angle_depth == 0 => {
                parts.push(value.get(start..index).unwrap_or_default());
                start = index + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(value.get(start..).unwrap_or_default());
    parts.into_iter().map(str::trim).filter(|part| !part.is_empty())
}

/// Splits `;`-separated parameters outside quotes into `(name, value)` pairs; values are unquoted.
fn parse_params(text: &str) -> Vec<(String, Option<String>)> {
    let mut params = Vec::new();
    let mut in_quotes = false;
    let mut start = 0;
    let mut pieces = Vec::new();
    for (index, c) in text.char_indices() {
        match c {
            '"' => in_quotes = !in_quotes,
            ';' if !in_quotes => {
                pieces.push(text.get(start..index).unwrap_or_default());
                start = index + 1;
            }
            _ => {}
        }
    }
    pieces.push(text.get(start..).unwrap_or_default());
    for piece in pieces
        .into_iter()
        .map(str::trim)
        .filter(|piece| !piece.is_empty())
    {
        let (name, value) = match piece.split_once('=') {
            Some((name, value)) => (name.trim(), Some(value.trim().trim_matches('"').to_owned())),
            None => (piece, None),
        };
        params.push((name.to_owned(), value));
    }
    params
}

/// A name-addr or addr-spec header value (From, To, Contact, Route): the URI and the header parameters.
/// The display name is deliberately not kept (PII, and never needed by the SRS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    /// The URI, without angle brackets.
    pub uri: String,
    /// Header parameters (after the URI), names as sent.
    pub params: Vec<(String, Option<String>)>,
}

impl NameAddr {
    /// Parses `"Display" <uri>;params`, `<uri>;params` or `uri;params`.
    pub fn parse(value: &str) -> Option<NameAddr> {
        let value = value.trim();
        let mut in_quotes = false;
        let mut open = None;
        for (index, c) in value.char_indices() {
            match c {
                '"' => in_quotes = !in_quotes,
                '<' if !in_quotes => {
                    open = Some(index);
                    break;
                }
                _ => {}
            }
        }
        let (uri, rest) = match open {
            Some(open) => {
                let after_open = value.get(open + 1..)?;
                let close = after_open.find('>')?;
                (after_open.get(..close)?, after_open.get(close + 1..)?)
            }
            None => match value.find(';') {
                Some(semicolon) => (value.get(..semicolon)?, value.get(semicolon..)?),
                None => (value, ""),
            },
        };
        let uri = uri.trim();
        if uri.is_empty() || uri.contains(char::is_whitespace) {
            return None;
        }
        Some(NameAddr {
            uri: uri.to_owned(),
            params: parse_params(rest),
        })
    }

    /// The value of a header parameter: `Some(None)` for a flag parameter like `+sip.src`.
    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        self.params
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_deref())
    }

    /// Whether a parameter is present (with or without value).
    pub fn has_param(&self, name: &str) -> bool {
        self.param(name).is_some()
    }

    /// The `tag` parameter.
    pub fn tag(&self) -> Option<&str> {
        self.param("tag").flatten().filter(|tag| !tag.is_empty())
    }
}

/// The parts of a Via the transaction layer needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// The transport token, upper-cased (`UDP`, `TCP`, `TLS`, …).
    pub transport: String,
    /// `host[:port]` as sent.
    pub sent_by: String,
    /// The branch parameter.
    pub branch: Option<String>,
}

impl Via {
    /// Parses one Via element, e.g. `SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK…;rport`.
    pub fn parse(value: &str) -> Option<Via> {
        let value = value.trim();
        let (protocol, rest) = value.split_once(|c: char| c.is_ascii_whitespace())?;
        let mut protocol_parts = protocol.split('/').map(str::trim);
        let (Some(name), Some(version), Some(transport), None) = (
            protocol_parts.next(),
            protocol_parts.next(),
            protocol_parts.next(),
            protocol_parts.next(),
        ) else {
            return None;
        };
        if !name.eq_ignore_ascii_case("SIP") || version != "2.0" || transport.is_empty() {
            return None;
        }
        let rest = rest.trim();
        let (sent_by, params) = match rest.find(';') {
            Some(semicolon) => (rest.get(..semicolon)?, rest.get(semicolon..)?),
            None => (rest, ""),
        };
        let sent_by = sent_by.trim();
        if sent_by.is_empty() || sent_by.contains(char::is_whitespace) {
            return None;
        }
        let branch = parse_params(params)
            .into_iter()
            .find(|(key, _)| key.eq_ignore_ascii_case("branch"))
            .and_then(|(_, value)| value)
            .filter(|branch| !branch.is_empty());
        Some(Via {
            transport: transport.to_ascii_uppercase(),
            sent_by: sent_by.to_owned(),
            branch,
        })
    }
}

/// The CSeq header: sequence number and method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CSeq {
    /// Sequence number (RFC 3261 limits it to 2^31 − 1; any u32 is accepted).
    pub seq: u32,
    /// The method it numbers.
    pub method: Method,
}

impl CSeq {
    /// Parses `314159 INVITE`.
    pub fn parse(value: &str) -> Option<CSeq> {
        let mut parts = value.split_ascii_whitespace();
        let (Some(seq), Some(method), None) = (parts.next(), parts.next(), parts.next()) else {
            return None;
        };
        Some(CSeq {
            seq: seq.parse().ok()?,
            method: Method::parse(method)?,
        })
    }
}

impl std::fmt::Display for CSeq {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.seq, self.method)
    }
}

/// A SIP request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    method: Method,
    uri: String,
    headers: Headers,
    body: Vec<u8>,
}

impl Request {
    /// A request with no headers and no body.
    pub fn new(method: Method, uri: &str) -> Self {
        Self {
            method,
            uri: sanitize_line(uri).replace(' ', ""),
            headers: Headers::default(),
            body: Vec::new(),
        }
    }

    /// The method.
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The Request-URI as sent.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// The headers.
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// The headers, for building.
    pub fn headers_mut(&mut self) -> &mut Headers {
        &mut self.headers
    }

    /// The body (exactly Content-Length bytes when it was given).
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// Sets the body and its Content-Type.
    pub fn set_body(&mut self, content_type: &str, body: Vec<u8>) {
        self.headers.set("Content-Type", content_type);
        self.body = body;
    }

    /// Adds a header line (builder style).
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push(name, value);
        self
    }

    /// Serialises with a Content-Length matching the body.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut head = String::new();
        let _ = write!(head, "{} {} SIP/2.0\r\n", self.method, self.uri);
        self.headers.write_to(&mut head, self.body.len());
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }

    /// Parses a request; a response is an error ("Malformed start line").
    pub fn parse(bytes: &[u8]) -> Result<Request, ParseError> {
        match Message::parse(bytes)? {
            Message::Request(request) => Ok(request),
            Message::Response(_) => Err(ParseError::new(ParseErrorKind::StartLine)),
        }
    }

    /// The request line and the header lines that lex from the start of a header block that is cut short
    /// or broken (a stream message over the size limits): enough to answer it with [`stateless_answer`].
    /// Only whole lines are used, at most [`MAX_HEADER_LINES`] of them; `None` if the start line is not a
    /// request line.
    pub fn salvage_head(head: &[u8]) -> Option<Request> {
        let start = head
            .iter()
            .position(|byte| *byte != b'\r' && *byte != b'\n')
            .unwrap_or(head.len());
        let head = head.get(start..).unwrap_or_default();
        let head = match find_header_end(head) {
            Some((end, _)) => head.get(..end).unwrap_or_default(),
            None => {
                let last_newline = head.iter().rposition(|byte| *byte == b'\n')?;
                head.get(..last_newline).unwrap_or_default()
            }
        };
        let text = String::from_utf8_lossy(head);
        let mut lines = text
            .split('\n')
            .map(|line| line.strip_suffix('\r').unwrap_or(line));
        let start_line = lines.next().unwrap_or_default();
        let headers = parse_header_lines(lines).unwrap_or_else(|(_, partial)| partial);
        request_from_start_line(start_line, headers)
    }

    /// Checks what every request must carry (RFC 3261 §8.1.1) and that CSeq names this method.
    fn validate(&self) -> Result<(), ParseErrorKind> {
        validate_common_headers(&self.headers)?;
        let cseq = self
            .headers
            .cseq()
            .ok_or(ParseErrorKind::MalformedHeader("CSeq"))?;
        if cseq.method != self.method {
            return Err(ParseErrorKind::CSeqMethodMismatch);
        }
        Ok(())
    }
}

/// A response to `request` sent without any transaction state (RFC 3261 §8.2.6), if it can be answered
/// at all: never to an ACK (§17.2.1), and only when it has the top Via, Call-ID and CSeq a response must
/// echo. Used for refusals before the transaction layer: malformed or oversized requests, refused sources.
pub fn stateless_answer(request: &Request, status: u16, reason: &str) -> Option<Vec<u8>> {
    let headers = request.headers();
    let answerable = request.method != Method::Ack
        && headers.top_via().is_some()
        && headers.call_id().is_some()
        && headers.cseq().is_some();
    answerable.then(|| Response::for_request(request, status, reason).to_bytes())
}

fn validate_common_headers(headers: &Headers) -> Result<(), ParseErrorKind> {
    for name in ["Via", "From", "To", "Call-ID", "CSeq"] {
        if headers.get(name).is_none() {
            return Err(ParseErrorKind::MissingHeader(name));
        }
    }
    if headers.top_via().is_none() {
        return Err(ParseErrorKind::MalformedHeader("Via"));
    }
    if headers.call_id().is_none() {
        return Err(ParseErrorKind::MalformedHeader("Call-ID"));
    }
    if headers.cseq().is_none() {
        return Err(ParseErrorKind::MalformedHeader("CSeq"));
    }
    if headers.from().is_none() {
        return Err(ParseErrorKind::MalformedHeader("From"));
    }
    if headers.to().is_none() {
        return Err(ParseErrorKind::MalformedHeader("To"));
    }
    Ok(())
}

/// A SIP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    status: u16,
    reason: String,
    headers: Headers,
    body: Vec<u8>,
}

/// A To-tag derived from the request's dialog-forming identity (Call-ID and From-tag), so every response
/// to one INVITE carries the same tag without the transaction layer storing it. Unique per dialog, not
/// secret (RFC 3261 §19.3 asks for uniqueness; tags are visible on the wire anyway).
fn derived_local_tag(request: &Request) -> String {
    let mut hasher = DefaultHasher::new();
    request.headers.call_id().hash(&mut hasher);
    request
        .headers
        .from()
        .and_then(|from| from.tag().map(str::to_owned))
        .hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

impl Response {
    /// A response with no headers and no body. The reason phrase has control characters removed.
    pub fn new(status: u16, reason: &str) -> Self {
        Self {
            status,
            reason: sanitize_line(reason),
            headers: Headers::default(),
            body: Vec::new(),
        }
    }

    /// A response to `request` (RFC 3261 §8.2.6): Via (all, in order), From, To, Call-ID and CSeq copied;
    /// a To-tag added for any status above 100 when the request had none; Record-Route copied into
    /// dialog-creating responses to INVITE.
    pub fn for_request(request: &Request, status: u16, reason: &str) -> Self {
        let mut response = Response::new(status, reason);
        for via in request.headers.get_all("Via") {
            response.headers.push("Via", via);
        }
        for name in ["From", "To", "Call-ID", "CSeq"] {
            if let Some(value) = request.headers.get(name) {
                response.headers.push(name, value);
            }
        }
        let to_has_tag = request.headers.to().is_some_and(|to| to.tag().is_some());
        if status > 100 && !to_has_tag && request.headers.get("To").is_some() {
            response.set_to_tag(&derived_local_tag(request));
        }
        if request.method == Method::Invite && (101..300).contains(&status) {
            for record_route in request.headers.get_all("Record-Route") {
                response.headers.push("Record-Route", record_route);
            }
        }
        response
    }

    /// Sets (or replaces) the tag on the To header.
    pub fn set_to_tag(&mut self, tag: &str) {
        let Some(to) = self.headers.get("To").map(str::to_owned) else {
            return;
        };
        let without_tag = match NameAddr::parse(&to) {
            Some(parsed) if parsed.tag().is_some() => strip_tag_param(&to),
            _ => to,
        };
        self.headers.set("To", &format!("{without_tag};tag={tag}"));
    }

    /// Adds a header line.
    pub fn add_header(&mut self, name: &str, value: &str) {
        self.headers.push(name, value);
    }

    /// Adds a header line (builder style).
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push(name, value);
        self
    }

    /// Sets the body and its Content-Type.
    pub fn set_body(&mut self, content_type: &str, body: Vec<u8>) {
        self.headers.set("Content-Type", content_type);
        self.body = body;
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The reason phrase.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// 1xx.
    pub fn is_provisional(&self) -> bool {
        self.status < 200
    }

    /// 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The headers.
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// The headers, for building.
    pub fn headers_mut(&mut self) -> &mut Headers {
        &mut self.headers
    }

    /// The body.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// Serialises with a Content-Length matching the body.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut head = String::new();
        let _ = write!(head, "SIP/2.0 {} {}\r\n", self.status, self.reason);
        self.headers.write_to(&mut head, self.body.len());
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }
}

/// Removes `;tag=…` from a name-addr header value, keeping everything else as sent.
fn strip_tag_param(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut in_quotes = false;
    let mut angle_depth = 0u32;
    let mut skipping = false;
    for (index, c) in value.char_indices() {
        if skipping {
            if c == ';' {
                skipping = false;
            } else {
                continue;
            }
        }
        match c {
            '"' => in_quotes = !in_quotes,
            '<' if !in_quotes => angle_depth = angle_depth.saturating_add(1),
            '>' if !in_quotes => angle_depth = angle_depth.saturating_sub(1),
            ';' if !in_quotes && angle_depth == 0 => {
                let rest = value.get(index + 1..).unwrap_or_default().trim_start();
                let is_tag = rest.get(..3).is_some_and(|name| name.eq_ignore_ascii_case("tag"))
                    && rest
                        .get(3..)
                        .is_some_and(|after| after.trim_start().starts_with('='));
                if is_tag {
                    skipping = true;
                    continue;
                }
            }
            _ => {}
        }
        out.push(c);
    }
    out.trim_end().to_owned()
}

/// A parsed SIP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Request(Request),
    Response(Response),
}

fn is_token_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&byte)
}

/// Finds the end of the header block: `(index of the blank line, index where the body starts)`.
fn find_header_end(bytes: &[u8]) -> Option<(usize, usize)> {
    let crlf = bytes
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .map(|at| (at, at + 4));
    let lf = bytes
        .windows(2)
        .position(|window| window == b"\n\n")
        .map(|at| (at, at + 2));
    match (crlf, lf) {
        (Some(crlf), Some(lf)) => Some(if lf.0 < crlf.0 { lf } else { crlf }),
        (crlf, lf) => crlf.or(lf),
    }
}

impl Message {
    /// Parses one whole message (a UDP datagram or a frame from [`crate::StreamFramer`]).
    ///
    /// When Content-Length is present the body is exactly that long and trailing bytes are ignored
    /// (RFC 3261 §18.3); without it the body is the rest of the input. Leading CR/LF are skipped.
    pub fn parse(bytes: &[u8]) -> Result<Message, ParseError> {
        let start = bytes
            .iter()
            .position(|byte| *byte != b'\r' && *byte != b'\n')
            .unwrap_or(bytes.len());
        let bytes = bytes.get(start..).unwrap_or_default();
        let (head_end, body_start) = find_header_end(bytes)
            .or_else(|| {
                // A message with no body may end right after its last header line.
                bytes.ends_with(b"\r\n").then_some((bytes.len(), bytes.len()))
            })
            .ok_or_else(|| ParseError::new(ParseErrorKind::Incomplete))?;
        let head = String::from_utf8_lossy(bytes.get(..head_end).unwrap_or_default());
        let mut lines = head
            .split('\n')
            .map(|line| line.strip_suffix('\r').unwrap_or(line));
        let start_line = lines.next().unwrap_or_default();
        let headers = parse_header_lines(lines).map_err(|(kind, partial)| ParseError {
            kind,
            salvaged_request: request_from_start_line(start_line, partial).map(Box::new),
        })?;
        let rest = bytes.get(body_start..).unwrap_or_default();

        if let Some(status_part) = start_line.strip_prefix("SIP/") {
            let mut parts = status_part.splitn(3, ' ');
            let (Some(version), Some(code)) = (parts.next(), parts.next()) else {
                return Err(ParseError::new(ParseErrorKind::StartLine));
            };
            if version != "2.0" {
                return Err(ParseError::new(ParseErrorKind::Version));
            }
            let status = code
                .parse::<u16>()
                .ok()
                .filter(|status| (100..700).contains(status))
                .ok_or_else(|| ParseError::new(ParseErrorKind::StartLine))?;
            let reason = parts.next().unwrap_or_default();
            let body = take_body(&headers, rest).map_err(ParseError::new)?;
            validate_common_headers(&headers).map_err(ParseError::new)?;
            return Ok(Message::Response(Response {
                status,
                reason: reason.to_owned(),
                headers,
                body,
            }));
        }

        let mut parts = start_line.split(' ');
        let (Some(method), Some(uri), Some(version), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(ParseError::new(ParseErrorKind::StartLine));
        };
        let method = Method::parse(method).ok_or_else(|| ParseError::new(ParseErrorKind::StartLine))?;
        if uri.is_empty() || !uri.contains(':') {
            return Err(ParseError::new(ParseErrorKind::StartLine));
        }
        let mut request = Request {
            method,
            uri: uri.to_owned(),
            headers,
            body: Vec::new(),
        };
        let salvage = |kind, request: Request| ParseError {
            kind,
            salvaged_request: Some(Box::new(request)),
        };
        if !version.eq_ignore_ascii_case("SIP/2.0") {
            return Err(salvage(ParseErrorKind::Version, request));
        }
        match take_body(&request.headers, rest) {
            Ok(body) => request.body = body,
            Err(kind) => return Err(salvage(kind, request)),
        }
        if let Err(kind) = request.validate() {
            return Err(salvage(kind, request));
        }
        Ok(Message::Request(request))
    }
}

/// A request with `start_line` and `headers` and no body, if `start_line` is a request line: what is kept
/// of a request whose header block is broken, to answer it.
fn request_from_start_line(start_line: &str, headers: Headers) -> Option<Request> {
    let mut parts = start_line.split(' ');
    let (Some(method), Some(uri), Some(_version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let method = Method::parse(method)?;
    (!uri.is_empty() && uri.contains(':')).then(|| Request {
        method,
        uri: uri.to_owned(),
        headers,
        body: Vec::new(),
    })
}

/// The header lines in order; on a bad line, the error and the headers before it.
fn parse_header_lines<'a>(
    lines: impl Iterator<Item = &'a str>,
) -> Result<Headers, (ParseErrorKind, Headers)> {
    let mut headers = Headers::default();
    for line in lines {
        if line.starts_with([' ', '\t']) {
            let Some(last) = headers.fields.last_mut() else {
                return Err((ParseErrorKind::HeaderLine, headers));
            };
            last.value.push(' ');
            last.value.push_str(line.trim());
            continue;
        }
        if line.is_empty() {
            continue;
        }
        if headers.fields.len() >= MAX_HEADER_LINES {
            return Err((ParseErrorKind::TooManyHeaders, headers));
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err((ParseErrorKind::HeaderLine, headers));
        };
        let name = name.trim_end();
        if name.is_empty() || !name.bytes().all(is_token_byte) {
            return Err((ParseErrorKind::HeaderLine, headers));
        }
        headers.fields.push(HeaderField {
            name: canonical_name(name),
            value: value.trim().to_owned(),
        });
    }
    Ok(headers)
}

fn take_body(headers: &Headers, rest: &[u8]) -> Result<Vec<u8>, ParseErrorKind> {
    if headers.get("Content-Length").is_none() {
        return Ok(rest.to_vec());
    }
    let length = headers
        .content_length()
        .ok_or(ParseErrorKind::MalformedHeader("Content-Length"))?;
    rest.get(..length)
        .map(<[u8]>::to_vec)
        .ok_or(ParseErrorKind::BodyTruncated)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIPREC_INVITE: &str = "INVITE sip:srs@192.0.2.10:5060;transport=tcp SIP/2.0\r\n\
Via: SIP/2.0/TCP 198.51.100.7:5060;branch=z9hG4bK-524287-1---4c5a1f;rport\r\n\
Max-Forwards: 70\r\n\
From: \"SBC Recorder\" <sip:src@198.51.100.7>;tag=3c1d5e\r\n\
To: <sip:srs@192.0.2.10>\r\n\
Call-ID: 8f2e6c4a-1@198.51.100.7\r\n\
CSeq: 101 INVITE\r\n\
Contact: <sip:src@198.51.100.7:5060;transport=tcp>;+sip.src\r\n\
Require: siprec\r\n\
Supported: timer, replaces\r\n\
Content-Type: multipart/mixed;boundary=foobar\r\n\
Content-Length: 11\r\n\
\r\n\
--foobar--\r\n";

    #[test]
    fn parses_a_siprec_invite() {
        let request = Request::parse(SIPREC_INVITE.as_bytes()).expect("valid");
        assert_eq!(request.method(), &Method::Invite);
        assert_eq!(request.headers().call_id(), Some("8f2e6c4a-1@198.51.100.7"));
        assert_eq!(
            request.headers().cseq(),
            Some(CSeq {
                seq: 101,
                method: Method::Invite
            })
        );
        assert!(request.headers().has_token("Require", "siprec"));
        assert_eq!(request.headers().supported(), vec!["timer", "replaces"]);
        let contact = request.headers().contacts().remove(0);
        assert!(contact.has_param("+sip.src"));
        assert_eq!(
            request
                .headers()
                .from()
                .and_then(|from| from.tag().map(str::to_owned))
                .as_deref(),
            Some("3c1d5e")
        );
        let via = request.headers().top_via().expect("via");
        assert_eq!(via.transport, "TCP");
        assert_eq!(via.branch.as_deref(), Some("z9hG4bK-524287-1---4c5a1f"));
        assert_eq!(request.body(), b"--foobar--\r\n".get(..11).expect("slice"));
    }

    #[test]
    fn compact_forms_folding_ipv6_and_tel_uris() {
        let text = "OPTIONS sip:srs@[2001:db8::10] SIP/2.0\n\
v: SIP/2.0/UDP [2001:db8::7]:5060;branch=z9hG4bKab\n\
f: <tel:+15551230001>;tag=x\n\
t: <sip:srs@[2001:db8::10]>\n\
i: abc\n\
CSeq:\n 7 OPTIONS\n\
l: 0\n\n";
        let request = Request::parse(text.as_bytes()).expect("valid");
        assert_eq!(request.headers().get("Call-ID"), Some("abc"));
        assert_eq!(request.headers().get("i"), Some("abc"));
        assert_eq!(request.headers().cseq().map(|cseq| cseq.seq), Some(7));
        assert_eq!(
            request.headers().top_via().map(|via| via.sent_by),
            Some("[2001:db8::7]:5060".to_owned())
        );
        assert_eq!(
            request.headers().from().map(|from| from.uri),
            Some("tel:+15551230001".to_owned())
        );
    }

    #[test]
    fn extension_methods_parse_for_a_501() {
        let text = "FOO sip:srs@example.com SIP/2.0\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\n\
To: <sip:c@d>\r\nCall-ID: x\r\nCSeq: 1 FOO\r\n\r\n";
        let request = Request::parse(text.as_bytes()).expect("valid");
        assert_eq!(request.method(), &Method::Extension("FOO".to_owned()));
    }

    #[test]
    fn validation_errors_keep_the_request_for_a_400() {
        let text = "INVITE sip:srs@example.com SIP/2.0\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\n\
To: <sip:c@d>\r\nCall-ID: x\r\nCSeq: 1 BYE\r\n\r\n";
        let error = Request::parse(text.as_bytes()).expect_err("mismatch");
        assert_eq!(error.kind, ParseErrorKind::CSeqMethodMismatch);
        assert!(error.salvaged_request.is_some());
        let text = text.replace("Call-ID: x\r\n", "");
        let error = Request::parse(text.as_bytes()).expect_err("missing");
        assert_eq!(error.kind.to_string(), "Missing Call-ID header");
    }

    #[test]
    fn header_errors_keep_the_lines_before_them_for_a_400() {
        let head = "OPTIONS sip:srs@example.com SIP/2.0\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK1\r\n\
From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\n";
        let many = format!("{head}{}\r\n", "X-Pad: y\r\n".repeat(MAX_HEADER_LINES));
        let error = Request::parse(many.as_bytes()).expect_err("too many");
        assert_eq!(error.kind, ParseErrorKind::TooManyHeaders);
        let request = error.salvaged_request.expect("salvaged");
        let answer = stateless_answer(&request, 400, &error.kind.to_string()).expect("answerable");
        let answer = String::from_utf8(answer).expect("utf-8");
        assert!(answer.starts_with("SIP/2.0 400 Too many headers\r\n"), "{answer}");
        assert!(answer.contains("CSeq: 1 OPTIONS"), "{answer}");

        let broken = format!("{head}no colon here\r\n\r\n");
        let error = Request::parse(broken.as_bytes()).expect_err("bad line");
        assert_eq!(error.kind, ParseErrorKind::HeaderLine);
        assert!(error.salvaged_request.is_some());
        let error = Request::parse(b"SIP/2.0 200 OK\r\nbad\r\n\r\n").expect_err("response");
        assert!(error.salvaged_request.is_none());
    }

    #[test]
    fn salvage_head_uses_whole_lines_only() {
        let head = b"\r\nINVITE sip:srs@example.com SIP/2.0\r\nVia: SIP/2.0/TCP a;branch=z9hG4bK1\r\n\
From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: x\r\nCSeq: 7 INVITE\r\nX-Long: aaaa";
        let request = Request::salvage_head(head).expect("request line");
        assert_eq!(request.headers().cseq().map(|cseq| cseq.seq), Some(7));
        assert_eq!(request.headers().get("X-Long"), None);
        let answer = stateless_answer(&request, 513, "Message Too Large").expect("answerable");
        assert!(answer.starts_with(b"SIP/2.0 513 Message Too Large\r\n"));
        assert!(Request::salvage_head(b"SIP/2.0 200 OK\r\nVia: x\r\n").is_none());
        assert!(Request::salvage_head(b"INVITE sip:a SIP/2.0").is_none());
        let ack =
            b"ACK sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP a;branch=z9hG4bK1\r\nCall-ID: x\r\nCSeq: 1 ACK\r\n";
        let ack = Request::salvage_head(ack).expect("request line");
        assert_eq!(stateless_answer(&ack, 513, "Message Too Large"), None);
    }

    #[test]
    fn truncated_body_is_an_error_and_extra_bytes_are_ignored() {
        let base = "MESSAGE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\n\
To: <sip:c@d>\r\nCall-ID: x\r\nCSeq: 1 MESSAGE\r\nContent-Length: 5\r\n\r\n";
        let error = Request::parse(format!("{base}abc").as_bytes()).expect_err("short");
        assert_eq!(error.kind, ParseErrorKind::BodyTruncated);
        let request = Request::parse(format!("{base}abcdefgh").as_bytes()).expect("long is fine");
        assert_eq!(request.body(), b"abcde");
    }

    #[test]
    fn response_for_request_copies_headers_and_adds_a_stable_to_tag() {
        let request = Request::parse(SIPREC_INVITE.as_bytes()).expect("valid");
        let trying = Response::for_request(&request, 100, "Trying");
        assert_eq!(
            trying.headers().to().and_then(|to| to.tag().map(str::to_owned)),
            None
        );
        let ok = Response::for_request(&request, 200, "OK")
            .with_header("Contact", "<sip:srs@192.0.2.10>;+sip.srs");
        let busy = Response::for_request(&request, 486, "Busy Here");
        let ok_tag = ok.headers().to().and_then(|to| to.tag().map(str::to_owned));
        assert!(ok_tag.is_some());
        assert_eq!(
            ok_tag,
            busy.headers().to().and_then(|to| to.tag().map(str::to_owned))
        );
        let reparsed = Message::parse(&ok.to_bytes()).expect("round trip");
        let Message::Response(reparsed) = reparsed else {
            panic!("not a response")
        };
        assert_eq!(reparsed.status(), 200);
        assert_eq!(reparsed.headers().content_length(), Some(0));
        assert_eq!(reparsed.headers().cseq(), request.headers().cseq());
    }

    #[test]
    fn set_to_tag_replaces_an_existing_tag_and_values_cannot_inject_lines() {
        let mut response = Response::new(200, "OK\r\nX: y");
        response.add_header("To", "\"A;tag=b\" <sip:a@b;tag=uri>;tag=old;x=1");
        response.set_to_tag("new");
        assert_eq!(
            response.headers().get("To"),
            Some("\"A;tag=b\" <sip:a@b;tag=uri>;x=1;tag=new")
        );
        response.add_header("Subject", "a\r\nInjected: 1");
        let text = String::from_utf8(response.to_bytes()).expect("utf8");
        assert!(!text.contains("\r\nInjected"));
        assert!(!text.contains("\r\nX: y"));
    }
}
