//! The streaming redactor for one call: takes finalised transcript segments in order, keeps the context
//! that spans segments, holds back a segment whose tail may be the start of a card number until the same
//! speaker goes on (or a hold window of call time passes, or the call ends), and releases only redacted
//! text. Sans-IO: time is a parameter, there is no clock, no I/O and no logging.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Range;

use airlock_telemetry::Pii;

use crate::Released;
use crate::context::{ContextTracker, Cue};
use crate::detect::{self, Detection};
use crate::entity::EntityKind;
use crate::lexer;
use crate::runs::{self, CARD_DIGITS, Run};

/// One leg (speaker) of the call, e.g. 0 for the caller and 1 for the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LegId(pub u32);

/// When a word was spoken: its character range in the segment text and its time in call milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WordTiming {
    /// Character range (Unicode scalar values) of the word in the segment text.
    pub chars: Range<usize>,
    /// When the word starts, in call milliseconds.
    pub start_ms: u64,
    /// When the word ends, in call milliseconds.
    pub end_ms: u64,
}

/// A finalised transcript segment, as the recogniser hands it over.
#[derive(Debug, Clone)]
pub struct Segment {
    /// The leg (speaker) that said it.
    pub leg: LegId,
    /// What the recogniser heard, unredacted.
    pub text: Pii<String>,
    /// Per-word timings over `text`; may be empty.
    pub words: Vec<WordTiming>,
    /// When the segment starts, in call milliseconds.
    pub start_ms: u64,
    /// When the segment ends, in call milliseconds; the hold window counts from here.
    pub end_ms: u64,
}

/// Where something was redacted: no value, only its kind, its place in the original text and its time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedactedSpan {
    /// What was redacted.
    pub kind: EntityKind,
    /// Character range (Unicode scalar values) in the original, unredacted segment text.
    pub chars: Range<usize>,
    /// Start of the call time covered: from the word timings that overlap the span, else the segment's.
    pub start_ms: u64,
    /// End of the call time covered, likewise.
    pub end_ms: u64,
}

/// A segment that may leave: redacted text and where the redactions are.
#[derive(Debug, Clone)]
pub struct ReleasedSegment {
    /// Arrival order within the call (0, 1, 2 …). Held segments are released late, so a caller that needs
    /// transcript order sorts by this.
    pub sequence: u64,
    /// The leg that said it.
    pub leg: LegId,
    /// The segment's start, in call milliseconds.
    pub start_ms: u64,
    /// The segment's end, in call milliseconds.
    pub end_ms: u64,
    /// The redacted text: each redacted span replaced by its kind's token, e.g. `[CARD_NUMBER]`.
    pub text: Released,
    /// Sorted by position; non-overlapping.
    pub spans: Vec<RedactedSpan>,
    /// The segment's timed words, released: a word that touches a redacted span is replaced by the span's
    /// token, and the words of one span become one entry.
    pub words: Vec<ReleasedWord>,
}

/// One timed word of a released segment.
#[derive(Debug, Clone)]
pub struct ReleasedWord {
    /// The word as heard, or the token of the span it belongs to.
    pub text: Released,
    pub start_ms: u64,
    pub end_ms: u64,
    /// The input words (indices into [`Segment::words`]) this entry stands for.
    pub source: Range<usize>,
}

/// How long and how much the redactor may hold back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedactorConfig {
    /// Call time a held segment waits for its speaker to go on before it is released as it stands.
    pub hold_window_ms: u64,
    /// The most segments held per leg. When a further segment would go over, the oldest is released with
    /// its held digits redacted as a card number (the conservative choice), and the rest of that number,
    /// when it resolves, is redacted as a card number too.
    pub max_held_per_leg: usize,
}

impl Default for RedactorConfig {
    fn default() -> Self {
        RedactorConfig {
            hold_window_ms: 8_000,
            max_held_per_leg: 4,
        }
    }
}

/// A segment after detection, waiting to be released.
#[derive(Debug)]
struct PendingSegment {
    sequence: u64,
    segment: Segment,
    detections: Vec<Detection>,
    /// The digit run at the end of the segment that a following segment may continue.
    tail_run: Option<Run>,
    payment_context: bool,
}

/// The segments one leg holds back: consecutive pieces of what may be one dictated card number.
#[derive(Debug, Default)]
struct HeldChain {
    segments: VecDeque<PendingSegment>,
    /// Part of this chain was already released redacted because the hold was full: redact the rest too.
    overflowed: bool,
}

impl HeldChain {
    fn held_runs(&self) -> impl Iterator<Item = &Run> {
        self.segments
            .iter()
            .filter_map(|pending| pending.tail_run.as_ref())
    }

    fn digit_count(&self) -> usize {
        self.held_runs().map(Run::digit_count).sum()
    }

    /// Whether the held digits are a whole card number: Luhn-valid, or long enough for one while no
    /// Luhn-valid number read from their start runs on into `head`.
    fn holds_whole_card(&self, head: Option<&Run>) -> bool {
        let count = self.digit_count();
        if count < *CARD_DIGITS.start() {
            return false;
        }
        let digits: String = self.held_runs().map(Run::digits).collect();
        if runs::luhn_valid(&digits) {
            return true;
        }
        let Some(head) = head else {
            return true;
        };
        let held_pieces = self.held_runs().map(|run| run.pieces.len()).sum::<usize>();
        let pieces = self
            .held_runs()
            .chain([head])
            .flat_map(|run| run.pieces.iter().map(|piece| piece.digits.as_str()));
        // A number is read from its start; allow one leading piece of lead-in ("oh").
        !runs::card_windows(pieces)
            .iter()
            .any(|window| window.start <= 1 && window.end > held_pieces)
    }
}

/// Redacts one call's transcript as its segments finalise. See the crate docs for the contract.
#[derive(Debug)]
pub struct ConversationRedactor {
    config: RedactorConfig,
    context: ContextTracker,
    held: BTreeMap<LegId, HeldChain>,
    next_sequence: u64,
    /// Digits of an SSN given in pieces so far, while the rest is awaited.
    ssn_fragment_digits: usize,
}

impl ConversationRedactor {
    /// A redactor for a new call.
    pub fn new(config: RedactorConfig) -> ConversationRedactor {
        ConversationRedactor {
            config,
            context: ContextTracker::default(),
            held: BTreeMap::new(),
            next_sequence: 0,
            ssn_fragment_digits: 0,
        }
    }

    /// Takes the next finalised segment and returns the segments that may now leave (possibly none, if
    /// this one is held; possibly earlier held ones of the same leg).
    pub fn push(&mut self, segment: Segment) -> Vec<ReleasedSegment> {
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        let tokens = lexer::tokenize(segment.text.expose());
        let context = self.context.observe(sequence, &tokens);
        let findings = detect::analyse(segment.text.expose(), &tokens, &context);
        self.mark_answered(&findings.detections, sequence);
        self.note_ssn_fragment(findings.ssn_fragment_digits, sequence);

        let mut pending = PendingSegment {
            sequence,
            detections: findings.detections,
            tail_run: findings.tail_run,
            payment_context: context.payment,
            segment,
        };
        let mut released = Vec::new();
        let leg = pending.segment.leg;
        let chain = self.held.entry(leg).or_default();
        let head_answered = findings
            .head_run
            .as_ref()
            .is_some_and(|head| answered_as_something_else(head, &pending.detections));
        if head_answered && chain.holds_whole_card(findings.head_run.as_ref()) {
            // The held digits are a card number and what follows is the answer to another question (an
            // expiry date, a security code): it must not be swallowed into the card number.
            released.extend(resolve(std::mem::take(chain), None));
        }
        if !chain.segments.is_empty() {
            match findings.head_run {
                Some(_) if findings.only_digits => {
                    // The number goes on and may go on further: keep holding.
                    if chain.segments.len() >= self.config.max_held_per_leg
                        && let Some(mut oldest) = chain.segments.pop_front()
                    {
                        redact_tail_as_card(&mut oldest);
                        chain.overflowed = true;
                        released.push(release(oldest));
                    }
                    chain.segments.push_back(pending);
                    return released;
                }
                head => {
                    let chain = std::mem::take(chain);
                    released.extend(resolve(chain, head.map(|run| (&mut pending, run))));
                }
            }
        }
        if self.config.max_held_per_leg > 0 && should_hold(&pending) {
            self.held.entry(leg).or_default().segments.push_back(pending);
        } else {
            released.push(release(pending));
        }
        released
    }

    /// Releases the held segments whose hold window has passed at call time `now_ms`.
    pub fn poll(&mut self, now_ms: u64) -> Vec<ReleasedSegment> {
        let hold_window = self.config.hold_window_ms;
        let expired: Vec<LegId> = self
            .held
            .iter()
            .filter(|(_, chain)| {
                chain_deadline(chain, hold_window).is_some_and(|deadline| deadline <= now_ms)
            })
            .map(|(leg, _)| *leg)
            .collect();
        let mut released = Vec::new();
        for leg in expired {
            if let Some(chain) = self.held.remove(&leg) {
                released.extend(resolve(chain, None));
            }
        }
        released.sort_by_key(|segment| segment.sequence);
        released
    }

    /// The call time at which [`poll`](Self::poll) will next release something, if anything is held.
    pub fn next_deadline(&self) -> Option<u64> {
        self.held
            .values()
            .filter_map(|chain| chain_deadline(chain, self.config.hold_window_ms))
            .min()
    }

    /// How many segments are held back now.
    pub fn held_segments(&self) -> usize {
        self.held.values().map(|chain| chain.segments.len()).sum()
    }

    /// The call has ended: releases everything still held.
    pub fn finish(&mut self) -> Vec<ReleasedSegment> {
        let mut released: Vec<ReleasedSegment> = std::mem::take(&mut self.held)
            .into_values()
            .flat_map(|chain| resolve(chain, None))
            .collect();
        released.sort_by_key(|segment| segment.sequence);
        released
    }

    /// An SSN read in pieces: the question stays open until nine digits have been given.
    fn note_ssn_fragment(&mut self, digits: usize, sequence: u64) {
        if digits == 0 {
            return;
        }
        self.ssn_fragment_digits += digits;
        if self.ssn_fragment_digits >= detect::SSN_DIGITS {
            self.ssn_fragment_digits = 0;
            self.context.answered(Cue::Ssn, sequence);
        } else {
            self.context.renew(Cue::Ssn, sequence);
        }
    }

    fn mark_answered(&mut self, detections: &[Detection], sequence: u64) {
        for detection in detections {
            let cue = match detection.kind {
                EntityKind::Cvv => Cue::SecurityCode,
                EntityKind::Expiry => Cue::Expiry,
                EntityKind::Ssn => Cue::Ssn,
                EntityKind::BankAccount => Cue::Bank,
                EntityKind::RoutingNumber => Cue::Routing,
                EntityKind::DateOfBirth => Cue::DateOfBirth,
                EntityKind::Phone => Cue::Phone,
                EntityKind::CardNumber | EntityKind::Email => continue,
            };
            self.context.answered(cue, sequence);
        }
    }
}

fn chain_deadline(chain: &HeldChain, hold_window_ms: u64) -> Option<u64> {
    chain
        .segments
        .back()
        .map(|last| last.segment.end_ms.saturating_add(hold_window_ms))
}

/// Whether a digit run was already found to be something other than a card number (an expiry date, a
/// security code, a routing number …): the answer to another question.
fn answered_as_something_else(run: &Run, detections: &[Detection]) -> bool {
    let range = run.range();
    detections.iter().any(|found| {
        found.kind != EntityKind::CardNumber
            && found.range.start <= range.start
            && range.end <= found.range.end
    })
}

/// A segment is held when a card number is being talked about and it ends in digits that may go on: fewer
/// than 19 (even a Luhn-valid 15 or 16 may be the start of a longer number) and not already something else.
fn should_hold(pending: &PendingSegment) -> bool {
    pending.tail_run.as_ref().is_some_and(|tail| {
        pending.payment_context
            && tail.digit_count() < *CARD_DIGITS.end()
            && !answered_as_something_else(tail, &pending.detections)
    })
}

fn redact_tail_as_card(pending: &mut PendingSegment) {
    if let Some(tail) = &pending.tail_run {
        detect::add_detection(&mut pending.detections, tail.range(), EntityKind::CardNumber);
    }
}

/// In payment context, pieces joined across segments are redacted as one card number from this many digits
/// on: one fewer than the shortest card, because spoken numbers lose digits in transcription ("twenty",
/// "two" is written "twenty two", read as 22) and the digits left must not leak.
const MIN_JOINED_CARD_DIGITS: usize = *CARD_DIGITS.start() - 1;

/// Decides the held chain of one leg, joined with the head run of the segment that continues it (if any),
/// and releases the held segments. A card number found across the joined digits is redacted in every
/// segment that holds part of it.
fn resolve(chain: HeldChain, continuation: Option<(&mut PendingSegment, Run)>) -> Vec<ReleasedSegment> {
    let mut segments: Vec<PendingSegment> = chain.segments.into();
    let payment_context = segments.first().is_some_and(|first| first.payment_context);
    // Every piece of the joined number, with the segment it belongs to (index == segments.len() is the
    // continuing segment).
    let mut pieces: Vec<(usize, Range<usize>, String)> = Vec::new();
    for (owner, pending) in segments.iter().enumerate() {
        if let Some(tail) = &pending.tail_run {
            pieces.extend(
                tail.pieces
                    .iter()
                    .map(|piece| (owner, piece.range.clone(), piece.digits.clone())),
            );
        }
    }
    let continuing_owner = segments.len();
    if let Some((_, head)) = &continuation {
        pieces.extend(
            head.pieces
                .iter()
                .map(|piece| (continuing_owner, piece.range.clone(), piece.digits.clone())),
        );
    }
    let digit_count: usize = pieces.iter().map(|(_, _, digits)| digits.len()).sum();
    let mut is_card =
        vec![chain.overflowed || (payment_context && digit_count >= MIN_JOINED_CARD_DIGITS); pieces.len()];
    for window in runs::card_windows(pieces.iter().map(|(_, _, digits)| digits.as_str())) {
        is_card[window].iter_mut().for_each(|flag| *flag = true);
    }
    let mut continuation_segment = continuation.map(|(pending, _)| pending);
    for ((owner, range, _), card) in pieces.into_iter().zip(is_card) {
        if !card {
            continue;
        }
        let target = if owner == continuing_owner {
            continuation_segment.as_deref_mut()
        } else {
            segments.get_mut(owner)
        };
        if let Some(target) = target {
            detect::add_detection(&mut target.detections, range, EntityKind::CardNumber);
        }
    }
    for pending in &mut segments {
        merge_adjacent_cards(pending);
    }
    if let Some(pending) = continuation_segment {
        merge_adjacent_cards(pending);
    }
    segments.into_iter().map(release).collect()
}

/// Card pieces redacted one by one become one span when only separators stand between them.
fn merge_adjacent_cards(pending: &mut PendingSegment) {
    let text = pending.segment.text.expose();
    pending.detections.sort_by_key(|found| found.range.start);
    let mut merged: Vec<Detection> = Vec::with_capacity(pending.detections.len());
    for found in pending.detections.drain(..) {
        if let Some(previous) = merged.last_mut()
            && previous.kind == EntityKind::CardNumber
            && found.kind == EntityKind::CardNumber
            && text
                .get(previous.range.end..found.range.start)
                .is_some_and(|gap| {
                    gap.chars()
                        .all(|c| c.is_whitespace() || matches!(c, '-' | ',' | '.' | '/'))
                })
        {
            previous.range.end = found.range.end;
            continue;
        }
        merged.push(found);
    }
    pending.detections = merged;
}

fn char_index(text: &str, byte: usize) -> usize {
    text.get(..byte).map_or(0, |prefix| prefix.chars().count())
}

/// Builds the released form: each detection replaced by its token, spans in characters and call time.
fn release(pending: PendingSegment) -> ReleasedSegment {
    let PendingSegment {
        sequence,
        segment,
        mut detections,
        ..
    } = pending;
    let text = segment.text.expose();
    detections.sort_by_key(|found| found.range.start);
    let mut redacted = String::with_capacity(text.len());
    let mut spans = Vec::with_capacity(detections.len());
    let mut copied_to = 0;
    for found in detections {
        // Detections are token-aligned and disjoint; should one overlap the previous, it is cut to the part
        // not yet redacted rather than dropped, so nothing detected is ever released.
        let range = found.range.start.max(copied_to)..found.range.end;
        let (Some(before), Some(_)) = (text.get(copied_to..range.start), text.get(range.clone())) else {
            continue;
        };
        if range.is_empty() {
            continue;
        }
        let found = Detection {
            range,
            kind: found.kind,
        };
        redacted.push_str(before);
        redacted.push_str(found.kind.replacement());
        copied_to = found.range.end;
        let chars = char_index(text, found.range.start)..char_index(text, found.range.end);
        let overlapping = segment
            .words
            .iter()
            .filter(|word| word.chars.start < chars.end && chars.start < word.chars.end);
        let start_ms = overlapping
            .clone()
            .map(|word| word.start_ms)
            .min()
            .unwrap_or(segment.start_ms);
        let end_ms = overlapping
            .map(|word| word.end_ms)
            .max()
            .unwrap_or(segment.end_ms);
        spans.push(RedactedSpan {
            kind: found.kind,
            chars,
            start_ms,
            end_ms,
        });
    }
    redacted.push_str(text.get(copied_to..).unwrap_or_default());
    let words = released_words(text, &segment.words, &spans);
    ReleasedSegment {
        sequence,
        leg: segment.leg,
        start_ms: segment.start_ms,
        end_ms: segment.end_ms,
        text: Released::new(redacted),
        spans,
        words,
    }
}

/// The timed words with every word that touches a span replaced by the span's token (one entry per span).
fn released_words(text: &str, words: &[WordTiming], spans: &[RedactedSpan]) -> Vec<ReleasedWord> {
    let mut released: Vec<ReleasedWord> = Vec::with_capacity(words.len());
    let mut last_span = None;
    for (index, word) in words.iter().enumerate() {
        let covering = spans
            .iter()
            .position(|span| word.chars.start < span.chars.end && span.chars.start < word.chars.end);
        match covering {
            Some(span) if last_span == Some(span) => {
                if let Some(entry) = released.last_mut() {
                    entry.end_ms = entry.end_ms.max(word.end_ms);
                    entry.source.end = index + 1;
                }
            }
            Some(span) => {
                released.push(ReleasedWord {
                    text: Released::new(spans[span].kind.replacement().to_string()),
                    start_ms: word.start_ms,
                    end_ms: word.end_ms,
                    source: index..index + 1,
                });
                last_span = Some(span);
            }
            None => {
                let heard: String = text
                    .chars()
                    .skip(word.chars.start)
                    .take(word.chars.len())
                    .collect();
                released.push(ReleasedWord {
                    text: Released::new(heard),
                    start_ms: word.start_ms,
                    end_ms: word.end_ms,
                    source: index..index + 1,
                });
                last_span = None;
            }
        }
    }
    released
}
