//! The compliance gate: the one place transcript text passes on its way out of the appliance (into the
//! transcript artifact and onto the event path). Writers of artifacts and events take [`Released`] text
//! only, and only the gate makes it, so nothing can skip the gate.
//!
//! The way through is [`ConversationRedactor`], the transcript redaction engine: one per call, fed
//! finalised segments in order, it releases each segment with card numbers, security codes, expiry dates,
//! SSNs, bank and routing numbers, dates of birth, email addresses and phone numbers replaced by a token
//! naming the kind (`[CARD_NUMBER]`, `[CVV]` …), plus the spans redacted (kind, character range in the
//! original text, call time; never the value). It is sans-IO: call time is a parameter, it has no clock,
//! does no I/O and logs nothing.
//!
//! Modules, and what each owns:
//! - `entity`: the kinds of sensitive data and their replacement tokens;
//! - `lexer`: splitting transcript text into digit, word and punctuation tokens with byte ranges;
//! - `spoken`: the spoken-number vocabulary (digit words, "double", teens and tens, ordinals, months);
//! - `runs`: digit runs (written, spoken or mixed, with the separators ASR writes) and the Luhn and ABA
//!   checksums;
//! - `context`: the cues ("card number", "date of birth" …) that open a context for a few segments;
//! - `detect`: what one segment holds, given its context;
//! - `leak`: the last-gate scanner for what is about to leave (card numbers, SSNs, unmasked digit runs);
//! - `conversation`: the per-call streaming redactor, its hold policy for card numbers split across
//!   segments, and the released form;
//! - `dialogue`: redacting a whole transcript offline through the same redactor, with the time model that
//!   plays it as a call ([`redact_dialogue`]).
//!
//! ## Design decisions
//! - A Luhn-valid run of 13–19 digits is a card number anywhere. In payment context (a card, expiry or
//!   security code mentioned by either speaker in the last six segments) any run of 13 or more digits is
//!   redacted as a card number even when it fails Luhn: a misrecognised digit must not leak the other
//!   fifteen. In payment context a run of 7 or more digits that is nothing else (not an account number, SSN
//!   or date of birth asked for) is taken as a fragment of a card number read in two goes; order numbers of
//!   up to seven digits, amounts and times survive. Pieces joined over consecutive segments of one speaker
//!   in payment context are a card number from 12 digits on (a digit can be lost in transcription:
//!   "ninety", "two" written "ninety two").
//! - Security codes and expiry dates are only looked for in payment context, and only while the question
//!   for them is open (asked within the last three segments and not yet answered); SSNs, bank and routing
//!   numbers, dates of birth and bare phone numbers likewise need their cue, except for unmistakable shapes
//!   (`123-45-6789`, `(555) 010-0199`, `+44 …`, written email addresses). While the SSN is asked for, a
//!   shorter run of two or more digits is taken as part of it (read in more than one go: "123 45" …
//!   "6789") and the question stays open until nine digits have been given. Once a routing number has been
//!   given, nine digits that happen to pass the ABA checksum are the account number.
//! - Digit groups may be separated by spaces, `-`, `,`, `/`, a full stop followed by a space or an ellipsis
//!   (`...`, `…`), the way ASR writes pauses; a decimal point (`159.74`) ends a run.
//! - Hold policy: a segment in payment context that ends in digits (before filler words such as "okay")
//!   which may go on — fewer than 19, not already an expiry date, security code or other answer — is held until its leg speaks again, until [`ConversationRedactor::poll`] passes the hold window
//!   ([`RedactorConfig::hold_window_ms`], 8 s of call time by default) or until
//!   [`ConversationRedactor::finish`]. The other leg is not held up. At most
//!   [`RedactorConfig::max_held_per_leg`] segments are held per leg; beyond that the oldest is released
//!   with its held digits redacted as a card number.

use airlock_telemetry::Pii;

mod context;
mod conversation;
mod detect;
mod dialogue;
mod entity;
mod leak;
mod lexer;
mod runs;
mod spoken;

pub use conversation::{
    ConversationRedactor, LegId, RedactedSpan, RedactorConfig, ReleasedSegment, ReleasedWord, Segment,
    WordTiming,
};
pub use dialogue::{DIALOGUE_MIN_SEGMENT_MS, DIALOGUE_MS_PER_WORD, DIALOGUE_TURN_GAP_MS, redact_dialogue};
pub use entity::EntityKind;
pub use leak::{Leak, LeakKind, MAX_UNMASKED_DIGITS, scan_json, scan_webvtt};
pub use runs::luhn_valid;

/// Text that has passed the gate and may be written for upload or sent as an event. Still personal data:
/// it prints as `<redacted>` in logs like any `Pii`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Released(Pii<String>);

impl Released {
    pub(crate) fn new(text: String) -> Released {
        Released(Pii::new(text))
    }

    /// The released text, for serialisation into an artifact or event.
    pub fn text(&self) -> &str {
        self.0.expose()
    }
}

/// The redaction policy the transcript artifacts record (`redaction_policy`): this crate's detectors and
/// hold policy, versioned so a change of behaviour is visible in what was written.
pub const REDACTION_POLICY: &str = "airlock-pii-2";
