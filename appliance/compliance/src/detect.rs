//! Detection within one segment: given its tokens and the conversation context, which byte ranges hold
//! which kind of sensitive data, plus the digit runs at the segment's edges that a card number split across
//! segments could continue from or into (the conversation layer joins those).

use std::ops::Range;

use crate::context::ActiveContext;
use crate::entity::EntityKind;
use crate::lexer::{Token, TokenKind};
use crate::runs::{self, CARD_DIGITS, LeadingOh, Run};
use crate::spoken;

/// A detected entity: a byte range of the segment text and its kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Detection {
    pub range: Range<usize>,
    pub kind: EntityKind,
}

/// Adds a detection, merging it with any it overlaps; the merged range keeps the kind of highest
/// precedence (card data wins).
pub(crate) fn add_detection(detections: &mut Vec<Detection>, range: Range<usize>, kind: EntityKind) {
    let mut merged = Detection { range, kind };
    detections.retain(|existing| {
        let overlaps = existing.range.start < merged.range.end && merged.range.start < existing.range.end;
        if overlaps {
            merged.range =
                merged.range.start.min(existing.range.start)..merged.range.end.max(existing.range.end);
            if existing.kind.precedence() > merged.kind.precedence() {
                merged.kind = existing.kind;
            }
        }
        !overlaps
    });
    detections.push(merged);
}

/// What one segment holds.
#[derive(Debug, Clone, Default)]
pub(crate) struct SegmentFindings {
    pub detections: Vec<Detection>,
    /// The digit run the segment starts with (after filler words), which may continue a held card number.
    pub head_run: Option<Run>,
    /// The digit run the segment ends with (before filler words), which the next segment may continue.
    pub tail_run: Option<Run>,
    /// The segment is nothing but one digit run and filler words.
    pub only_digits: bool,
    /// Digits redacted as part of an SSN read in more than one go (fewer than nine in one run): the
    /// question stays open for the rest.
    pub ssn_fragment_digits: usize,
}

/// Words that may come before the rest of a dictated number at the start of a segment ("and then 4111 …").
fn is_leading_filler(word: &str) -> bool {
    is_trailing_filler(word)
        || matches!(
            word,
            "yes"
                | "yeah"
                | "yep"
                | "sure"
                | "the"
                | "rest"
                | "is"
                | "it's"
                | "its"
                | "it"
                | "next"
                | "that's"
                | "sorry"
                | "continuing"
        )
}

/// Words that may follow a number at the end of a segment while the speaker is still dictating it
/// ("4111 1111, okay").
fn is_trailing_filler(word: &str) -> bool {
    matches!(
        word,
        "uh" | "um"
            | "er"
            | "erm"
            | "ah"
            | "hmm"
            | "mm"
            | "okay"
            | "ok"
            | "so"
            | "and"
            | "then"
            | "right"
            | "please"
    )
}

fn only_fillers(tokens: &[Token], is_filler: fn(&str) -> bool) -> bool {
    tokens.iter().all(|token| match &token.kind {
        TokenKind::Punct(_) => true,
        TokenKind::Word(word) => is_filler(word),
        TokenKind::Digits(_) => false,
    })
}

/// Finds everything sensitive in one segment.
pub(crate) fn analyse(text: &str, tokens: &[Token], context: &ActiveContext) -> SegmentFindings {
    let mut detections = Vec::new();
    for range in written_emails(text).into_iter().chain(spoken_emails(tokens)) {
        add_detection(&mut detections, range, EntityKind::Email);
    }
    for date in month_dates(tokens) {
        let kind = if context.date_of_birth {
            Some(EntityKind::DateOfBirth)
        } else if (context.expiry || context.payment) && date.has_year && !date.has_day {
            Some(EntityKind::Expiry)
        } else {
            None
        };
        if let Some(kind) = kind {
            add_detection(&mut detections, date.range, kind);
        }
    }
    let blocked: Vec<bool> = tokens
        .iter()
        .map(|token| {
            detections
                .iter()
                .any(|found| found.range.start < token.range.end && token.range.start < found.range.end)
        })
        .collect();
    let all_runs = runs::find_runs(tokens, &blocked, LeadingOh::Interjection);
    for run in &all_runs {
        for (range, kind) in classify_run_with_cards(run, tokens, context) {
            let range = if kind == EntityKind::Phone {
                with_phone_prefix(range, tokens)
            } else {
                range
            };
            add_detection(&mut detections, range, kind);
        }
    }
    // Where a segment holds card data, other digit groups in it are taken as pieces of the same number
    // that the recogniser split with misheard words ("4929, I'm free for 5346 …").
    if detections
        .iter()
        .any(|found| found.kind == EntityKind::CardNumber)
    {
        for run in &all_runs {
            let range = run.range();
            let detected = detections
                .iter()
                .any(|found| found.range.start < range.end && range.start < found.range.end);
            if !detected && run.digit_count() >= MIN_PIECE_BESIDE_CARD_DIGITS && !is_amount(run, tokens) {
                add_detection(&mut detections, range, EntityKind::CardNumber);
            }
        }
    }
    // Across segments a leading "oh" reads as a zero: "… four three" / "oh, nine five".
    let edge_runs = runs::find_runs(tokens, &blocked, LeadingOh::Zero);
    let head_run = edge_runs
        .first()
        .filter(|run| only_fillers(&tokens[..run.tokens().start], is_leading_filler))
        .cloned();
    let tail_run = edge_runs
        .last()
        .filter(|run| only_fillers(&tokens[run.tokens().end..], is_trailing_filler))
        .cloned();
    let only_digits = edge_runs.len() == 1 && head_run.is_some() && tail_run.is_some();
    let ssn_fragment_digits = all_runs
        .iter()
        .filter(|run| run.digit_count() < SSN_DIGITS)
        .filter(|run| {
            let range = run.range();
            detections.iter().any(|found| {
                found.kind == EntityKind::Ssn
                    && found.range.start <= range.start
                    && range.end <= found.range.end
            })
        })
        .map(Run::digit_count)
        .sum();
    SegmentFindings {
        detections,
        head_run,
        tail_run,
        only_digits,
        ssn_fragment_digits,
    }
}

/// A phone number's range widened over a "+" or "(" written right before it.
fn with_phone_prefix(range: Range<usize>, tokens: &[Token]) -> Range<usize> {
    let Some(first) = tokens.iter().position(|token| token.range.start == range.start) else {
        return range;
    };
    match first.checked_sub(1).and_then(|index| tokens.get(index)) {
        Some(prefix) if prefix.is_punct('(') || prefix.is_punct('+') => prefix.range.start..range.end,
        _ => range,
    }
}

/// Card numbers first (any Luhn-valid 13–19 digit window of whole pieces; in payment context any run of
/// 13 or more digits), then each stretch of the run left over is classified on its own.
fn classify_run_with_cards(
    run: &Run,
    tokens: &[Token],
    context: &ActiveContext,
) -> Vec<(Range<usize>, EntityKind)> {
    let digit_count = run.digit_count();
    if context.payment && CARD_DIGITS.contains(&digit_count) {
        return vec![(run.range(), EntityKind::CardNumber)];
    }
    let mut covered = vec![false; run.pieces.len()];
    for window in runs::card_windows(run.pieces.iter().map(|piece| piece.digits.as_str())) {
        covered[window].iter_mut().for_each(|flag| *flag = true);
    }
    if context.payment && digit_count > *CARD_DIGITS.end() && !covered.contains(&true) {
        return vec![(run.range(), EntityKind::CardNumber)];
    }
    let mut found = Vec::new();
    let mut start = 0;
    while start < covered.len() {
        let end = (start..covered.len())
            .find(|&i| covered[i] != covered[start])
            .unwrap_or(covered.len());
        let stretch = run.slice(start..end);
        if covered[start] {
            found.push((stretch.range(), EntityKind::CardNumber));
        } else if let Some(kind) = classify_run(&stretch, tokens, context) {
            found.push((stretch.range(), kind));
        }
        start = end;
    }
    found
}

fn word_at(tokens: &[Token], index: usize) -> Option<&str> {
    tokens.get(index).and_then(Token::word)
}

/// An amount of money or a percentage rather than an identifier.
fn is_amount(run: &Run, tokens: &[Token]) -> bool {
    let span = run.tokens();
    let before = span.start.checked_sub(1).and_then(|index| tokens.get(index));
    let after = tokens.get(span.end);
    let currency_before = before.is_some_and(|token| matches!(token.kind, TokenKind::Punct('$' | '£' | '€')));
    let unit_after = after.is_some_and(|token| match &token.kind {
        TokenKind::Punct('%') => true,
        TokenKind::Word(word) => matches!(
            word.as_str(),
            "dollars" | "dollar" | "cents" | "cent" | "bucks" | "pounds" | "euros" | "percent" | "pence"
        ),
        _ => false,
    });
    currency_before || unit_after
}

fn all_separators_are(run: &Run, allowed: impl Fn(&str) -> bool) -> bool {
    run.separators.iter().all(|separator| allowed(separator))
}

fn plausible_ssn(digits: &str) -> bool {
    let (area, rest) = digits.split_at(3);
    let (group, serial) = rest.split_at(2);
    area != "000" && area != "666" && !area.starts_with('9') && group != "00" && serial != "0000"
}

/// Month and year as a card prints them: MMYY, M/YY, MM/YYYY (or YYYY-MM).
fn expiry_shaped(run: &Run) -> bool {
    let digits = run.digits();
    let month_ok = |month: &str| month.parse::<u8>().is_ok_and(|month| (1..=12).contains(&month));
    let slashed = run.separators.iter().any(|separator| separator.contains('/'));
    match digits.len() {
        3 => {
            slashed
                && run.pieces.first().is_some_and(|piece| piece.digits.len() == 1)
                && month_ok(&digits[..1])
        }
        4 => month_ok(&digits[..2]),
        6 => {
            (month_ok(&digits[..2]) && digits[2..].starts_with("20"))
                || (digits.starts_with("20") && month_ok(&digits[4..]))
        }
        _ => false,
    }
}

/// Day, month and year as three numbers, either order (M/D/Y or D/M/Y), 2- or 4-digit year ("12/8/1973",
/// "twelve eight seventy three").
fn numeric_date_shaped(run: &Run) -> bool {
    let lengths = run.group_lengths();
    let separated = all_separators_are(run, |separator| matches!(separator, "" | "/" | "-" | "." | ","));
    let values: Vec<u32> = run
        .pieces
        .iter()
        .filter_map(|piece| piece.digits.parse().ok())
        .collect();
    separated
        && lengths.len() == 3
        && matches!(lengths[2], 2 | 4)
        && lengths[..2].iter().all(|&length| length <= 2)
        && values.len() == 3
        && values[..2].iter().all(|&value| (1..=31).contains(&value))
        && values[..2].iter().any(|&value| value <= 12)
}

fn phone_shaped(run: &Run, tokens: &[Token]) -> bool {
    let lengths = run.group_lengths();
    let grouped = matches!(lengths.as_slice(), [3, 3, 4] | [1, 3, 3, 4]);
    let bracketed = run.separators.iter().any(|separator| separator.contains(')'));
    let area_code_ok = |digits: &str| !digits.starts_with('0') && !digits.starts_with('1');
    let digits = run.digits();
    let international = run
        .tokens()
        .start
        .checked_sub(1)
        .and_then(|index| tokens.get(index))
        .is_some_and(|token| token.is_punct('+') || token.word() == Some("plus"))
        && (8..=15).contains(&digits.len());
    let national = match lengths.as_slice() {
        [3, 3, 4] => area_code_ok(&digits),
        [1, 3, 3, 4] => digits.starts_with('1') && area_code_ok(&digits[1..]),
        _ => false,
    };
    (grouped || bracketed) && national || international
}

/// In payment context, a run this long that is nothing else is taken as part of a card number (read in two
/// goes, with words in between, or with digits lost by the recogniser): PCI allows at most the first six and
/// last four digits to be shown, so more than six digits of a card must not leave. Order or confirmation
/// numbers of seven or more digits in a payment call are redacted too — over-redaction by design.
pub(crate) const MIN_CARD_FRAGMENT_DIGITS: usize = 7;

/// Beside card data in the same segment, a digit group this long is taken as another piece of the card.
const MIN_PIECE_BESIDE_CARD_DIGITS: usize = 3;

/// The digits of an SSN.
pub(crate) const SSN_DIGITS: usize = 9;

/// While an SSN is asked for, a shorter run this long is taken as part of it, read in more than one go
/// ("123 45" … "6789").
const MIN_SSN_PIECE_DIGITS: usize = 2;

/// Classifies a digit run that holds no whole card number.
fn classify_run(run: &Run, tokens: &[Token], context: &ActiveContext) -> Option<EntityKind> {
    if is_amount(run, tokens) || (run.pieces.len() == 1 && run.pieces[0].glued_to_letters) {
        return None;
    }
    let digits = run.digits();
    let count = digits.len();
    let lengths = run.group_lengths();
    // The SSN shape alone is enough, except while a card is being read (where 3-2-4 is a card fragment).
    let ssn_shaped = lengths == [3, 2, 4]
        && all_separators_are(run, |separator| separator == "-")
        && plausible_ssn(&digits);
    if ssn_shaped && (!context.payment || context.ssn.is_some()) {
        return Some(EntityKind::Ssn);
    }
    if count == SSN_DIGITS {
        let ssn_first = match (context.ssn, context.bank) {
            (Some(ssn_age), Some(bank_age)) => {
                ssn_age < bank_age || (ssn_age == bank_age && !runs::aba_valid(&digits))
            }
            (ssn, _) => ssn.is_some(),
        };
        if ssn_first {
            return Some(EntityKind::Ssn);
        }
        if context.bank.is_some() {
            // A routing number passes the ABA checksum; one asked for by name is taken as said even when a
            // digit was misheard. Once the routing number has been given, nine digits that pass ABA by chance
            // (one account number in ten) are the account number.
            let asked_for_routing = context
                .routing
                .is_some_and(|routing_age| context.bank.is_none_or(|bank_age| routing_age <= bank_age));
            return Some(
                if (runs::aba_valid(&digits) && !context.routing_given) || asked_for_routing {
                    EntityKind::RoutingNumber
                } else {
                    EntityKind::BankAccount
                },
            );
        }
    }
    if context.bank.is_some() && (5..=17).contains(&count) {
        return Some(EntityKind::BankAccount);
    }
    if context.date_of_birth && (numeric_date_shaped(run) || (6..=8).contains(&count)) {
        return Some(EntityKind::DateOfBirth);
    }
    if context.ssn.is_some()
        && !context.security_code
        && !context.expiry
        && (MIN_SSN_PIECE_DIGITS..SSN_DIGITS).contains(&count)
    {
        return Some(EntityKind::Ssn);
    }
    if context.payment {
        let slashed = run.separators.iter().any(|separator| separator.contains('/'));
        if expiry_shaped(run) && (context.expiry || slashed) {
            return Some(EntityKind::Expiry);
        }
        if context.security_code && (3..=4).contains(&count) {
            return Some(EntityKind::Cvv);
        }
        if count >= MIN_CARD_FRAGMENT_DIGITS {
            return Some(EntityKind::CardNumber);
        }
    }
    if phone_shaped(run, tokens) || (context.phone && matches!(count, 7 | 10 | 11)) {
        return Some(EntityKind::Phone);
    }
    None
}

/// Characters of an email address's local part and domain as written.
fn is_local_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '%' | '+' | '-')
}

fn is_domain_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '-')
}

/// Written addresses: `local@domain.tld`.
fn written_emails(text: &str) -> Vec<Range<usize>> {
    let mut found = Vec::new();
    for (at, _) in text.match_indices('@') {
        let local_start = text[..at]
            .char_indices()
            .rev()
            .take_while(|&(_, c)| is_local_char(c))
            .last()
            .map_or(at, |(index, _)| index);
        let domain = &text[at + 1..];
        let domain_len = domain.find(|c: char| !is_domain_char(c)).unwrap_or(domain.len());
        let domain = domain[..domain_len].trim_end_matches(['.', '-']);
        let local = text[local_start..at].trim_start_matches('.');
        let labels_ok = domain.split('.').count() >= 2 && domain.split('.').all(|label| !label.is_empty());
        if !local.is_empty() && labels_ok {
            found.push(at - local.len()..at + 1 + domain.len());
        }
    }
    found
}

fn is_top_level_domain(word: &str) -> bool {
    matches!(
        word,
        "com"
            | "net"
            | "org"
            | "edu"
            | "gov"
            | "mil"
            | "io"
            | "co"
            | "uk"
            | "us"
            | "ca"
            | "de"
            | "fr"
            | "au"
            | "in"
            | "info"
            | "biz"
            | "me"
            | "ie"
            | "nl"
    )
}

/// Spoken addresses: "john dot smith at example dot com", "jane_doe at mail dot co dot uk".
fn spoken_emails(tokens: &[Token]) -> Vec<Range<usize>> {
    let is_name = |token: &Token| matches!(token.kind, TokenKind::Word(_) | TokenKind::Digits(_));
    let is_dot = |token: &Token| token.is_punct('.') || token.word() == Some("dot");
    let is_local_joiner = |token: &Token| {
        is_dot(token)
            || matches!(token.kind, TokenKind::Punct('_' | '-'))
            || matches!(token.word(), Some("underscore" | "dash" | "hyphen"))
    };
    let mut found = Vec::new();
    for (at, token) in tokens.iter().enumerate() {
        if token.word() != Some("at") && !token.is_punct('@') {
            continue;
        }
        // Domain: name (dot name)+ ending in a known top-level domain.
        let mut end = at + 1;
        if !tokens.get(end).is_some_and(is_name) {
            continue;
        }
        let mut last_label = end;
        end += 1;
        while tokens.get(end).is_some_and(is_dot) && tokens.get(end + 1).is_some_and(is_name) {
            last_label = end + 1;
            end += 2;
        }
        if last_label == at + 1 || !tokens[last_label].word().is_some_and(is_top_level_domain) {
            continue;
        }
        // Local part: name ((dot | underscore | dash) name)* going back from "at".
        if at == 0 || !is_name(&tokens[at - 1]) {
            continue;
        }
        let mut start = at - 1;
        while start >= 2 && is_local_joiner(&tokens[start - 1]) && is_name(&tokens[start - 2]) {
            start -= 2;
        }
        found.push(tokens[start].range.start..tokens[last_label].range.end);
    }
    found
}

/// A date written or spoken with a month name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MonthDate {
    pub range: Range<usize>,
    pub has_day: bool,
    pub has_year: bool,
}

/// A day of the month at `index`: "5", "5th", "fifth", "twenty fourth", "twenty-four". Returns the tokens used.
fn day_at(tokens: &[Token], index: usize) -> Option<usize> {
    let token = tokens.get(index)?;
    if let TokenKind::Digits(digits) = &token.kind {
        let value: u32 = digits.parse().ok()?;
        if digits.len() > 2 || !(1..=31).contains(&value) {
            return None;
        }
        let suffixed = tokens
            .get(index + 1)
            .is_some_and(|next| next.glued_to_previous && next.word().is_some_and(spoken::is_ordinal_suffix));
        return Some(if suffixed { 2 } else { 1 });
    }
    let word = token.word()?;
    if spoken::ordinal_word(word).is_some() {
        return Some(1);
    }
    if matches!(word, "twenty" | "thirty") {
        let mut next = index + 1;
        if tokens.get(next).is_some_and(|t| t.is_punct('-')) {
            next += 1;
        }
        let unit = word_at(tokens, next);
        if unit.is_some_and(|unit| spoken::ordinal_word(unit).is_some_and(|value| value < 10))
            || unit.and_then(spoken::digit_word).is_some_and(|value| value > 0)
        {
            return Some(next + 1 - index);
        }
        return Some(1);
    }
    if spoken::teen_word(word).is_some() || spoken::digit_word(word).is_some_and(|value| value > 0) {
        return Some(1);
    }
    None
}

/// A year at `index`: "1973", "nineteen seventy three", "twenty twenty-nine", "two thousand and five".
fn year_at(tokens: &[Token], index: usize) -> Option<usize> {
    let token = tokens.get(index)?;
    if let TokenKind::Digits(digits) = &token.kind {
        let value: u32 = digits.parse().ok()?;
        return (digits.len() == 4 && (1900..=2099).contains(&value)).then_some(1);
    }
    let word = token.word()?;
    let century = word == "nineteen" || word == "twenty";
    if century {
        let next = word_at(tokens, index + 1)?;
        if spoken::teen_word(next).is_some() {
            return Some(2);
        }
        if spoken::tens_word(next).is_some() {
            let mut after = index + 2;
            if tokens.get(after).is_some_and(|t| t.is_punct('-')) {
                after += 1;
            }
            let unit = word_at(tokens, after)
                .and_then(spoken::digit_word)
                .is_some_and(|value| value > 0);
            return Some(if unit { after + 1 - index } else { 2 });
        }
        if spoken::is_weak_zero(next) && word_at(tokens, index + 2).and_then(spoken::digit_word).is_some() {
            return Some(3);
        }
        return None;
    }
    if word == "two" && word_at(tokens, index + 1) == Some("thousand") {
        let mut after = index + 2;
        if word_at(tokens, after) == Some("and") {
            after += 1;
        }
        let unit = word_at(tokens, after)
            .is_some_and(|unit| spoken::digit_word(unit).is_some() || spoken::teen_word(unit).is_some());
        return Some(if unit { after + 1 - index } else { 2 });
    }
    None
}

/// Dates built around a month name: "May 6, 1997", "July 5th 1945", "the 24th of September 1973",
/// "December 2031", "January twenty twenty nine".
pub(crate) fn month_dates(tokens: &[Token]) -> Vec<MonthDate> {
    let mut found = Vec::new();
    for (month, token) in tokens.iter().enumerate() {
        if token.word().and_then(spoken::month_name).is_none() {
            continue;
        }
        let mut start = month;
        let mut end = month + 1;
        let mut has_day = false;
        // "the 24th of September": a day before the month.
        if month >= 2 && word_at(tokens, month - 1) == Some("of") {
            let day_start = (0..month - 1)
                .rev()
                .take(3)
                .find(|&index| day_at(tokens, index) == Some(month - 1 - index));
            if let Some(day_start) = day_start {
                has_day = true;
                start = if day_start > 0 && word_at(tokens, day_start - 1) == Some("the") {
                    day_start - 1
                } else {
                    day_start
                };
            }
        }
        if !has_day {
            let mut cursor = end;
            if word_at(tokens, cursor) == Some("the") {
                cursor += 1;
            }
            // A four-digit number right after the month is a year, not a day.
            if year_at(tokens, cursor).is_none()
                && let Some(used) = day_at(tokens, cursor)
            {
                has_day = true;
                end = cursor + used;
            }
        }
        let mut cursor = end;
        if tokens.get(cursor).is_some_and(|t| t.is_punct(',')) || word_at(tokens, cursor) == Some("of") {
            cursor += 1;
        }
        let year = year_at(tokens, cursor);
        if let Some(used) = year {
            end = cursor + used;
        }
        if has_day || year.is_some() {
            found.push(MonthDate {
                range: tokens[start].range.start..tokens[end - 1].range.end,
                has_day,
                has_year: year.is_some(),
            });
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lexer::tokenize;

    fn found(text: &str, context: ActiveContext) -> Vec<(String, EntityKind)> {
        let tokens = tokenize(text);
        let mut detections = analyse(text, &tokens, &context).detections;
        detections.sort_by_key(|found| found.range.start);
        detections
            .into_iter()
            .map(|found| (text[found.range].to_string(), found.kind))
            .collect()
    }

    fn no_context() -> ActiveContext {
        ActiveContext::default()
    }

    fn payment() -> ActiveContext {
        ActiveContext {
            payment: true,
            ..ActiveContext::default()
        }
    }

    #[test]
    fn luhn_valid_card_numbers_are_found_without_any_context() {
        assert_eq!(
            found("sure it's 4111 1111 1111 1111 thanks", no_context()),
            [("4111 1111 1111 1111".to_string(), EntityKind::CardNumber)]
        );
        assert_eq!(
            found(
                "five five five five, five five five five, double five five five, four four four four",
                no_context()
            ),
            [(
                "five five five five, five five five five, double five five five, four four four four"
                    .to_string(),
                EntityKind::CardNumber
            )]
        );
    }

    #[test]
    fn a_non_luhn_long_run_is_card_data_only_in_payment_context() {
        assert!(found("tracking 1234 5678 9012 3456", no_context()).is_empty());
        assert_eq!(
            found("it's 1234 5678 9012 3456", payment())[0].1,
            EntityKind::CardNumber
        );
    }

    #[test]
    fn expiry_and_security_code_need_payment_context() {
        let asked_expiry = ActiveContext {
            payment: true,
            expiry: true,
            ..ActiveContext::default()
        };
        assert_eq!(
            found("it's oh four twenty eight", asked_expiry)[0].1,
            EntityKind::Expiry
        );
        assert_eq!(
            found("good through January twenty twenty nine", asked_expiry)[0].0,
            "January twenty twenty nine"
        );
        let asked_code = ActiveContext {
            payment: true,
            security_code: true,
            ..ActiveContext::default()
        };
        assert_eq!(
            found("the three digits are 4 0 2", asked_code),
            [("4 0 2".to_string(), EntityKind::Cvv)]
        );
        assert!(found("that was 402 dollars", asked_code).is_empty());
        assert!(found("it's 402", no_context()).is_empty());
        assert!(found("it's 04/28", no_context()).is_empty());
    }

    #[test]
    fn expiry_dates_in_the_forms_asr_writes_them() {
        let asked = ActiveContext {
            payment: true,
            expiry: true,
            ..ActiveContext::default()
        };
        for (text, expiry) in [
            ("it's 01/2029", "01/2029"),
            ("expires 1/29.", "1/29"),
            ("twelve twenty nine", "twelve twenty nine"),
            (
                "good through zero one slash twenty nine",
                "zero one slash twenty nine",
            ),
            ("oh four, twenty-eight", "oh four, twenty-eight"),
            ("expiration is March of twenty thirty", "March of twenty thirty"),
            ("valid until 2028-11", "2028-11"),
        ] {
            assert_eq!(
                found(text, asked),
                [(expiry.to_string(), EntityKind::Expiry)],
                "{text}"
            );
        }
    }

    #[test]
    fn card_numbers_as_pairs_or_with_thousands_separators() {
        for text in [
            "forty one eleven, eleven eleven, eleven eleven, eleven eleven",
            "4,111,111,111,111,111",
        ] {
            assert_eq!(
                found(text, no_context()),
                [(text.to_string(), EntityKind::CardNumber)]
            );
        }
    }

    #[test]
    fn digit_groups_beside_card_data_are_card_data_too() {
        let found = found("sure it's 4929, I'm free for 5346 2781 3676", payment());
        assert!(
            found
                .iter()
                .any(|(text, kind)| text == "4929" && *kind == EntityKind::CardNumber),
            "{found:?}"
        );
    }

    #[test]
    fn in_payment_context_long_fragments_are_card_data_but_order_numbers_survive() {
        assert_eq!(
            found("4111 1111, sorry, 1111 1111", payment()),
            [
                ("4111 1111".to_string(), EntityKind::CardNumber),
                ("1111 1111".to_string(), EntityKind::CardNumber)
            ]
        );
        assert!(found("your order number is 423466, total 583 dollars", payment()).is_empty());
    }

    #[test]
    fn ssn_by_shape_or_in_context() {
        assert_eq!(found("mine is 123-45-6789.", no_context())[0].1, EntityKind::Ssn);
        assert!(found("mine is 123456789.", no_context()).is_empty());
        let asked = ActiveContext {
            ssn: Some(1),
            ..ActiveContext::default()
        };
        assert_eq!(
            found("one two three four five six seven eight nine", asked)[0].1,
            EntityKind::Ssn
        );
    }

    #[test]
    fn an_ssn_read_in_pieces_is_redacted_piece_by_piece_while_asked_for() {
        let asked = ActiveContext {
            ssn: Some(1),
            ..ActiveContext::default()
        };
        let tokens = tokenize("sure, 123 45...");
        let findings = analyse("sure, 123 45...", &tokens, &asked);
        assert_eq!(findings.detections[0].kind, EntityKind::Ssn);
        assert_eq!(findings.ssn_fragment_digits, 5);
        assert_eq!(
            found("six seven eight nine", asked),
            [("six seven eight nine".to_string(), EntityKind::Ssn)]
        );
        assert!(found("six seven eight nine", no_context()).is_empty());
        assert!(found("give me 1 second", asked).is_empty());
    }

    #[test]
    fn bank_numbers_in_bank_context() {
        let asked = ActiveContext {
            bank: Some(0),
            ..ActiveContext::default()
        };
        assert_eq!(found("it's 011000015", asked)[0].1, EntityKind::RoutingNumber);
        assert_eq!(found("it's 011000016", asked)[0].1, EntityKind::BankAccount);
        let routing_asked = ActiveContext {
            bank: Some(0),
            routing: Some(0),
            ..ActiveContext::default()
        };
        assert_eq!(
            found("it's 011000016", routing_asked)[0].1,
            EntityKind::RoutingNumber
        );
        assert_eq!(found("account 00123456789", asked)[0].1, EntityKind::BankAccount);
        let routing_given = ActiveContext {
            bank: Some(0),
            routing_given: true,
            ..ActiveContext::default()
        };
        assert_eq!(
            found("it's 011000015", routing_given)[0].1,
            EntityKind::BankAccount
        );
        assert!(found("routing is 011000015", no_context()).is_empty());
    }

    #[test]
    fn dates_of_birth_only_when_asked() {
        let asked = ActiveContext {
            date_of_birth: true,
            ..ActiveContext::default()
        };
        assert_eq!(
            found("I was born the 3rd of March, 1961", asked)[0].0,
            "the 3rd of March, 1961"
        );
        assert_eq!(found("it's 07/04/82", asked)[0].0, "07/04/82");
        assert_eq!(
            found("twelve eight seventy three", asked)[0].0,
            "twelve eight seventy three"
        );
        assert_eq!(
            found("March third nineteen sixty one", asked)[0].0,
            "March third nineteen sixty one"
        );
        assert!(found("see you on March 3rd", no_context()).is_empty());
    }

    #[test]
    fn emails_written_and_spoken() {
        assert_eq!(
            found("mail a.b-c@mail.example.org.", no_context())[0].0,
            "a.b-c@mail.example.org"
        );
        assert_eq!(
            found("it's john dot smith at example dot co dot uk", no_context())[0].0,
            "john dot smith at example dot co dot uk"
        );
        assert!(found("meet me at home dot", no_context()).is_empty());
        assert!(found("we're at example dot something", no_context()).is_empty());
    }

    #[test]
    fn phone_numbers_by_shape_or_when_asked() {
        assert_eq!(
            found("call 555-867-5309 today", no_context())[0].0,
            "555-867-5309"
        );
        assert_eq!(
            found("it's +44 20 7946 0958", no_context())[0].0,
            "+44 20 7946 0958"
        );
        assert_eq!(found("on (415) 555-0132.", no_context())[0].0, "(415) 555-0132");
        assert_eq!(found("1 (800) 555 0199", no_context())[0].0, "1 (800) 555 0199");
        assert_eq!(
            found(
                "plus four four seven seven double oh nine oh oh one two three",
                no_context()
            )[0]
            .1,
            EntityKind::Phone
        );
        let asked = ActiveContext {
            phone: true,
            ..ActiveContext::default()
        };
        assert_eq!(
            found("four one five five five five oh one nine nine", asked)[0].1,
            EntityKind::Phone
        );
        assert!(found("order 5558675309", no_context()).is_empty());
    }

    #[test]
    fn everyday_numbers_survive() {
        for text in [
            "Your order 36146343 shipped on April 1.",
            "it takes 4 to 11 business days, total 159.74",
            "count with me: 1 2 3",
            "back in 2019 we moved to zip 90210",
            "see you at 3 fifteen, room 1204",
            "reference F6974, extension 882",
        ] {
            assert!(found(text, no_context()).is_empty(), "{text}");
        }
    }
}
