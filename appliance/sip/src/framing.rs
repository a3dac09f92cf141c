//! Transport framing: cutting a TCP/TLS byte stream into whole SIP messages (RFC 3261 §18.3), and the UDP
//! datagram size limit.
//!
//! Every buffer here is bounded: a header block longer than `max_header_bytes`, a message longer than
//! `max_message_bytes`, or more unconsumed input than [`StreamFramer::buffer_limit`] is an error, never
//! growth. A stream cannot be resynchronised after a framing error, so the runtime closes the connection.

use crate::message::{MAX_HEADER_LINES, Request, stateless_answer};

/// Largest UDP datagram accepted (RFC 3261 §18.1.1 allows up to 65,535 bytes; SIPREC INVITEs with SDP and
/// metadata are routinely larger than one MTU). The runtime's receive buffer must be this big.
pub const MAX_DATAGRAM_BYTES: usize = 65_535;

/// Why a stream could not be framed. Always the peer's fault; the connection must be closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    #[error("header block exceeds {limit} bytes")]
    HeaderBlockTooLarge { limit: usize },
    #[error("message exceeds {limit} bytes")]
    MessageTooLarge { limit: usize },
    #[error("Content-Length missing on a stream transport")]
    ContentLengthMissing,
    #[error("malformed Content-Length")]
    ContentLengthMalformed,
    #[error("unconsumed stream input exceeds {limit} bytes")]
    BufferFull { limit: usize },
}

impl FramingError {
    /// The SIP status that describes the problem (the stream itself is closed, so this is for counters and
    /// for a best-effort answer before closing).
    pub fn status(&self) -> u16 {
        match self {
            FramingError::HeaderBlockTooLarge { .. } | FramingError::MessageTooLarge { .. } => 513,
            FramingError::ContentLengthMissing
            | FramingError::ContentLengthMalformed
            | FramingError::BufferFull { .. } => 400,
        }
    }

    /// The reason phrase of that status.
    pub fn reason(&self) -> &'static str {
        match self {
            FramingError::HeaderBlockTooLarge { .. } | FramingError::MessageTooLarge { .. } => {
                "Message Too Large"
            }
            FramingError::ContentLengthMissing => "Content-Length required on stream transports",
            FramingError::ContentLengthMalformed => "Malformed Content-Length",
            FramingError::BufferFull { .. } => "Stream input too large",
        }
    }
}

/// Limits for [`StreamFramer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamFramerConfig {
    /// Longest header block (start line + headers + blank line), in bytes. Default 32 KiB.
    pub max_header_bytes: usize,
    /// Longest whole message (headers + body), in bytes. Default 256 KiB.
    pub max_message_bytes: usize,
}

impl Default for StreamFramerConfig {
    fn default() -> Self {
        Self {
            max_header_bytes: 32 * 1024,
            max_message_bytes: 256 * 1024,
        }
    }
}

/// Cuts a TCP/TLS byte stream into whole SIP messages using Content-Length (required on streams).
///
/// Use: [`push`](Self::push) each chunk read from the socket, then call [`next_message`](Self::next_message)
/// until it returns `Ok(None)`; an `Err` means: close the connection. CRLF keep-alives (RFC 5626 §3.5.1) between messages are skipped.
#[derive(Debug, Clone)]
pub struct StreamFramer {
    config: StreamFramerConfig,
    /// Bounded by [`StreamFramer::buffer_limit`].
    buffer: Vec<u8>,
    /// A chunk did not fit; `next_message` reports `BufferFull` from now on.
    overflowed: bool,
}

impl StreamFramer {
    /// A framer whose messages may be up to `max_message_bytes` long (header block capped at the default
    /// 32 KiB or the message cap, whichever is smaller).
    pub fn new(max_message_bytes: usize) -> Self {
        let default = StreamFramerConfig::default();
        Self::with_config(StreamFramerConfig {
            max_header_bytes: default.max_header_bytes.min(max_message_bytes),
            max_message_bytes,
        })
    }

    /// A framer with the given limits.
    pub fn with_config(config: StreamFramerConfig) -> Self {
        Self {
            config,
            buffer: Vec::new(),
            overflowed: false,
        }
    }

    /// Most bytes held unconsumed: one partial message plus one more message's worth of input. Draining
    /// with `next_message` after every `push` keeps well below it.
    pub fn buffer_limit(&self) -> usize {
        self.config.max_message_bytes.saturating_mul(2)
    }

    /// Appends bytes read from the stream. When the unconsumed input would exceed
    /// [`buffer_limit`](Self::buffer_limit) the chunk is discarded and every later `next_message` returns
    /// `BufferFull` (the stream has lost bytes and cannot be resynchronised).
    pub fn push(&mut self, chunk: &[u8]) {
        if self.overflowed || self.buffer.len().saturating_add(chunk.len()) > self.buffer_limit() {
            self.overflowed = true;
            self.buffer.clear();
            return;
        }
        self.buffer.extend_from_slice(chunk);
    }

    /// A best-effort answer to the message that caused `error` (returned by the last
    /// [`next_message`](Self::next_message)), to write before closing the connection: `error.status()`
    /// with `error.reason()`, when the request line and the headers a response echoes (Via, Call-ID, CSeq)
    /// are in the buffered head. `None` for responses, ACKs, unrecognisable input and `BufferFull` (whose
    /// bytes are gone). Looks at no more than the header limit.
    pub fn rejection(&self, error: &FramingError) -> Option<Vec<u8>> {
        if matches!(error, FramingError::BufferFull { .. }) {
            return None;
        }
        let head = self
            .buffer
            .get(..self.buffer.len().min(self.config.max_header_bytes))?;
        let request = Request::salvage_head(head)?;
        stateless_answer(&request, error.status(), error.reason())
    }

    /// Bytes currently buffered.
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    /// The next whole message, `Ok(None)` when more input is needed.
    pub fn next_message(&mut self) -> Result<Option<Vec<u8>>, FramingError> {
        if self.overflowed {
            return Err(FramingError::BufferFull {
                limit: self.buffer_limit(),
            });
        }
        let keepalive_bytes = self
            .buffer
            .iter()
            .take_while(|byte| matches!(byte, b'\r' | b'\n'))
            .count();
        self.buffer.drain(..keepalive_bytes);
        if self.buffer.is_empty() {
            return Ok(None);
        }
        let search_window = self.buffer.len().min(self.config.max_header_bytes);
        let header_end = self
            .buffer
            .get(..search_window)
            .and_then(|window| window.windows(4).position(|candidate| candidate == b"\r\n\r\n"));
        let Some(header_end) = header_end else {
            if self.buffer.len() >= self.config.max_header_bytes {
                return Err(FramingError::HeaderBlockTooLarge {
                    limit: self.config.max_header_bytes,
                });
            }
            return Ok(None);
        };
        let body_start = header_end + 4;
        let content_length = content_length_of(self.buffer.get(..header_end).unwrap_or_default())?;
        let total = body_start
            .checked_add(content_length)
            .filter(|total| *total <= self.config.max_message_bytes);
        let Some(total) = total else {
            return Err(FramingError::MessageTooLarge {
                limit: self.config.max_message_bytes,
            });
        };
        if self.buffer.len() < total {
            return Ok(None);
        }
        let rest = self.buffer.split_off(total);
        Ok(Some(std::mem::replace(&mut self.buffer, rest)))
    }
}

/// Reads Content-Length (or its compact form `l`) from a header block; every occurrence must agree.
fn content_length_of(head: &[u8]) -> Result<usize, FramingError> {
    let text = String::from_utf8_lossy(head);
    let mut found = None;
    for line in text
        .split("\r\n")
        .skip(1)
        .take(MAX_HEADER_LINES.saturating_mul(4))
    {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if !(name.eq_ignore_ascii_case("Content-Length") || name.eq_ignore_ascii_case("l")) {
            continue;
        }
        let length: usize = value
            .trim()
            .parse()
            .map_err(|_| FramingError::ContentLengthMalformed)?;
        if found.is_some_and(|previous| previous != length) {
            return Err(FramingError::ContentLengthMalformed);
        }
        found = Some(length);
    }
    found.ok_or(FramingError::ContentLengthMissing)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(body: &str) -> String {
        format!(
            "OPTIONS sip:srs@example.com SIP/2.0\r\nVia: SIP/2.0/TCP a;branch=z9hG4bK1\r\nCall-ID: x\r\n\
             l: {}\r\n\r\n{body}",
            body.len()
        )
    }

    #[test]
    fn split_input_is_reassembled() {
        let text = message("hello");
        let mut framer = StreamFramer::with_config(StreamFramerConfig::default());
        for chunk in text.as_bytes().chunks(7) {
            framer.push(chunk);
        }
        assert_eq!(
            framer.next_message().expect("ok"),
            Some(text.clone().into_bytes())
        );
        assert_eq!(framer.next_message().expect("ok"), None);
        assert_eq!(framer.buffered(), 0);
    }

    #[test]
    fn byte_by_byte_input_is_reassembled() {
        let text = message("body");
        let mut framer = StreamFramer::with_config(StreamFramerConfig::default());
        let mut frames = Vec::new();
        for byte in text.as_bytes() {
            framer.push(std::slice::from_ref(byte));
            while let Some(frame) = framer.next_message().expect("ok") {
                frames.push(frame);
            }
        }
        assert_eq!(frames, vec![text.into_bytes()]);
    }

    #[test]
    fn merged_messages_and_keepalives_are_split() {
        let first = message("one");
        let second = message("");
        let mut framer = StreamFramer::with_config(StreamFramerConfig::default());
        framer.push(format!("\r\n\r\n{first}\r\n{second}\r\n\r\n").as_bytes());
        assert_eq!(framer.next_message().expect("ok"), Some(first.into_bytes()));
        assert_eq!(framer.next_message().expect("ok"), Some(second.into_bytes()));
        assert_eq!(framer.next_message().expect("ok"), None);
    }

    #[test]
    fn oversized_inputs_are_errors() {
        let config = StreamFramerConfig {
            max_header_bytes: 128,
            max_message_bytes: 256,
        };
        let mut framer = StreamFramer::with_config(config);
        framer.push(&[b'a'; 200]);
        assert_eq!(
            framer.next_message(),
            Err(FramingError::HeaderBlockTooLarge { limit: 128 })
        );

        let mut framer = StreamFramer::with_config(config);
        framer.push(message(&"b".repeat(600)).as_bytes());
        assert_eq!(
            framer.next_message(),
            Err(FramingError::BufferFull { limit: 512 })
        );
        let mut framer = StreamFramer::with_config(config);
        framer.push(b"INVITE sip:a SIP/2.0\r\nContent-Length: 1000\r\n\r\n");
        assert_eq!(
            framer.next_message(),
            Err(FramingError::MessageTooLarge { limit: 256 })
        );

        let mut framer = StreamFramer::with_config(config);
        framer.push(b"INVITE sip:a SIP/2.0\r\nContent-Length: 99999999999999999999999\r\n\r\n");
        assert_eq!(framer.next_message(), Err(FramingError::ContentLengthMalformed));
    }

    #[test]
    fn framing_errors_are_answered_when_the_request_is_visible() {
        let config = StreamFramerConfig {
            max_header_bytes: 256,
            max_message_bytes: 1024,
        };
        let head = "INVITE sip:srs@example.com SIP/2.0\r\nVia: SIP/2.0/TCP a;branch=z9hG4bK1\r\n\
From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\n";
        // An endless header block.
        let mut framer = StreamFramer::with_config(config);
        framer.push(format!("{head}X-Long: {}", "a".repeat(400)).as_bytes());
        let error = framer.next_message().expect_err("header block too large");
        let answer = framer.rejection(&error).expect("answerable");
        assert!(answer.starts_with(b"SIP/2.0 513 Message Too Large\r\n"));
        // A body over the limit.
        let mut framer = StreamFramer::with_config(config);
        framer.push(format!("{head}Content-Length: 5000\r\n\r\n").as_bytes());
        let error = framer.next_message().expect_err("message too large");
        assert_eq!(error.status(), 513);
        assert!(framer.rejection(&error).is_some());
        // No Content-Length: 400 with a reason.
        let mut framer = StreamFramer::with_config(config);
        framer.push(format!("{head}\r\n").as_bytes());
        let error = framer.next_message().expect_err("no length");
        let answer = framer.rejection(&error).expect("answerable");
        assert!(answer.starts_with(b"SIP/2.0 400 Content-Length required on stream transports\r\n"));
        // Nothing recognisable, or the bytes are gone: no answer.
        let mut framer = StreamFramer::with_config(config);
        framer.push(&[b'a'; 300]);
        let error = framer.next_message().expect_err("garbage");
        assert_eq!(framer.rejection(&error), None);
        let mut framer = StreamFramer::with_config(config);
        framer.push(&[b'a'; 3000]);
        let error = framer.next_message().expect_err("overflow");
        assert_eq!(framer.rejection(&error), None);
    }

    #[test]
    fn content_length_is_required_and_must_agree() {
        let mut framer = StreamFramer::with_config(StreamFramerConfig::default());
        framer.push(b"OPTIONS sip:a SIP/2.0\r\nCall-ID: x\r\n\r\n");
        assert_eq!(framer.next_message(), Err(FramingError::ContentLengthMissing));
        let mut framer = StreamFramer::with_config(StreamFramerConfig::default());
        framer.push(b"OPTIONS sip:a SIP/2.0\r\nContent-Length: 1\r\nl: 2\r\n\r\nab");
        assert_eq!(framer.next_message(), Err(FramingError::ContentLengthMalformed));
    }
}
