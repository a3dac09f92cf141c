//! Digit runs: the digits a stretch of transcript spells out, written ("4111 1111"), spoken ("four one one
//! one", "double five", "twenty nine") or mixed, with the separators ASR puts between groups (spaces, `-`,
//! `,`, `/`, brackets, `+`, a full stop followed by a space, an ellipsis, the words "dash" and "slash"). Also the
//! checksums that tell card and routing numbers from other numbers (Luhn, ABA).

use std::ops::Range;

use crate::lexer::{Token, TokenKind};
use crate::spoken;

/// One group of digits from one written number or one spoken number phrase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Piece {
    pub digits: String,
    /// Byte range in the text (a spoken phrase such as "double five" covers both words).
    pub range: Range<usize>,
    /// Index of the first and one past the last token of the piece.
    pub tokens: Range<usize>,
    /// Written with ASCII digits (not spoken).
    pub written: bool,
    /// Digits written against letters with no space ("F6974", "17th"): part of a code, not a bare number.
    pub glued_to_letters: bool,
}

/// Consecutive pieces with nothing but separators between them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Run {
    pub pieces: Vec<Piece>,
    /// The separator characters between piece `i` and `i + 1` (empty for whitespace only).
    pub separators: Vec<String>,
}

impl Run {
    pub fn digit_count(&self) -> usize {
        self.pieces.iter().map(|piece| piece.digits.len()).sum()
    }

    pub fn digits(&self) -> String {
        self.pieces.iter().map(|piece| piece.digits.as_str()).collect()
    }

    pub fn range(&self) -> Range<usize> {
        match (self.pieces.first(), self.pieces.last()) {
            (Some(first), Some(last)) => first.range.start..last.range.end,
            _ => 0..0,
        }
    }

    pub fn tokens(&self) -> Range<usize> {
        match (self.pieces.first(), self.pieces.last()) {
            (Some(first), Some(last)) => first.tokens.start..last.tokens.end,
            _ => 0..0,
        }
    }

    /// The lengths of the pieces, for shape checks such as 3-2-4 (SSN) or 3-3-4 (phone).
    pub fn group_lengths(&self) -> Vec<usize> {
        self.pieces.iter().map(|piece| piece.digits.len()).collect()
    }

    /// The sub-run of pieces `range`.
    pub fn slice(&self, range: Range<usize>) -> Run {
        let separators = if range.end > range.start + 1 {
            self.separators[range.start..range.end - 1].to_vec()
        } else {
            Vec::new()
        };
        Run {
            pieces: self.pieces[range].to_vec(),
            separators,
        }
    }

    fn push(&mut self, piece: Piece, separator: String) {
        if !self.pieces.is_empty() {
            self.separators.push(separator);
        }
        self.pieces.push(piece);
    }
}

const SEPARATOR_CHARS: &[char] = &['-', ',', '/', '(', ')', '+', '\u{2013}', '\u{2014}', '\u{2026}'];

fn word_at(tokens: &[Token], index: usize) -> Option<&str> {
    tokens.get(index).and_then(Token::word)
}

/// "seven hundred", "seven hundred twelve", "seven hundred and forty-two": three digits.
fn hundreds(tokens: &[Token], index: usize, digit: u8) -> (String, usize) {
    let mut next = index + 2;
    if word_at(tokens, next) == Some("and") {
        next += 1;
    }
    let rest = match number_at(tokens, next) {
        Some((digits, used)) if digits.len() <= 2 && !matches!(tokens[next].kind, TokenKind::Digits(_)) => {
            digits.parse::<u16>().ok().map(|value| (value, used))
        }
        _ => None,
    };
    match rest {
        Some((value, used)) => (format!("{}", u16::from(digit) * 100 + value), next + used - index),
        None => (format!("{digit}00"), 2),
    }
}

/// Reads a spoken or written number starting at token `index`: its digits and how many tokens it used.
fn number_at(tokens: &[Token], index: usize) -> Option<(String, usize)> {
    let token = tokens.get(index)?;
    let word = match &token.kind {
        TokenKind::Digits(digits) => return Some((digits.clone(), 1)),
        TokenKind::Word(word) => word.as_str(),
        TokenKind::Punct(_) => return None,
    };
    if let Some(digit) = spoken::digit_word(word) {
        if digit > 0 && word_at(tokens, index + 1) == Some("hundred") {
            return Some(hundreds(tokens, index, digit));
        }
        return Some((digit.to_string(), 1));
    }
    if let Some(teen) = spoken::teen_word(word) {
        return Some((teen.to_string(), 1));
    }
    if let Some(tens) = spoken::tens_word(word) {
        // "twenty nine" or "twenty-nine".
        let mut next = index + 1;
        if tokens.get(next).is_some_and(|t| t.is_punct('-')) {
            next += 1;
        }
        if let Some(unit) = tokens
            .get(next)
            .and_then(Token::word)
            .and_then(spoken::digit_word)
            && unit > 0
        {
            return Some(((tens + unit).to_string(), next + 1 - index));
        }
        return Some((tens.to_string(), 1));
    }
    if let Some(times) = spoken::repeat_word(word) {
        let digit = tokens
            .get(index + 1)
            .and_then(Token::word)
            .and_then(spoken::digit_word)?;
        return Some((digit.to_string().repeat(times), 2));
    }
    None
}

/// Whether token `index` is a letter token glued to digits, or digits glued to letters, on either side.
fn glued_to_letters(tokens: &[Token], first: usize, last: usize) -> bool {
    let before =
        first > 0 && tokens[first].glued_to_previous && matches!(tokens[first - 1].kind, TokenKind::Word(_));
    let after = tokens
        .get(last + 1)
        .is_some_and(|next| next.glued_to_previous && matches!(next.kind, TokenKind::Word(_)));
    before || after
}

/// How to read an "oh" that starts a run and is set off by punctuation ("Oh, four one …").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LeadingOh {
    /// An interjection: not part of the number (how a segment is read on its own).
    Interjection,
    /// A zero: the segment may be continuing a number read out over several segments.
    Zero,
}

/// Finds every digit run in `tokens`, skipping tokens for which `blocked` is true (already redacted as
/// something else). A leading "oh" followed by punctuation is dropped: there it is an interjection.
pub(crate) fn find_runs(tokens: &[Token], blocked: &[bool], leading_oh: LeadingOh) -> Vec<Run> {
    let mut runs = Vec::new();
    let mut current = Run::default();
    let mut separator = String::new();
    let mut index = 0;
    while index < tokens.len() {
        let token = &tokens[index];
        let is_blocked = blocked.get(index).copied().unwrap_or(false);
        if !is_blocked && let Some((digits, used)) = number_at(tokens, index) {
            let last = index + used - 1;
            let piece = Piece {
                digits,
                range: token.range.start..tokens[last].range.end,
                tokens: index..last + 1,
                written: matches!(token.kind, TokenKind::Digits(_)),
                glued_to_letters: matches!(token.kind, TokenKind::Digits(_))
                    && glued_to_letters(tokens, index, last),
            };
            current.push(piece, std::mem::take(&mut separator));
            index += used;
            continue;
        }
        let is_separator = !is_blocked
            && !current.pieces.is_empty()
            && match &token.kind {
                TokenKind::Punct(c) if SEPARATOR_CHARS.contains(c) => {
                    separator.push(*c);
                    true
                }
                TokenKind::Punct('.') => {
                    // A full stop or an ellipsis ("4111... 1111") between groups, not a decimal point.
                    let pause = tokens
                        .get(index + 1)
                        .is_some_and(|next| !next.glued_to_previous || next.is_punct('.'));
                    if pause {
                        separator.push('.');
                    }
                    pause
                }
                TokenKind::Word(word) if word == "dash" || word == "hyphen" => {
                    separator.push('-');
                    true
                }
                TokenKind::Word(word) if word == "slash" => {
                    separator.push('/');
                    true
                }
                _ => false,
            };
        if !is_separator {
            finish_run(&mut runs, std::mem::take(&mut current), tokens, leading_oh);
            separator.clear();
        }
        index += 1;
    }
    finish_run(&mut runs, current, tokens, leading_oh);
    runs
}

fn is_weak_zero_piece(piece: &Piece, tokens: &[Token]) -> bool {
    !piece.written
        && piece.tokens.len() == 1
        && tokens
            .get(piece.tokens.start)
            .and_then(Token::word)
            .is_some_and(spoken::is_weak_zero)
}

fn finish_run(runs: &mut Vec<Run>, run: Run, tokens: &[Token], leading_oh: LeadingOh) {
    // "Oh, four one …": a leading "oh" set off by punctuation is an interjection, not a zero. A lone "oh" is
    // kept: it may be the next digit of a number read out segment by segment.
    let mut first = 0;
    while leading_oh == LeadingOh::Interjection
        && first + 1 < run.pieces.len()
        && is_weak_zero_piece(&run.pieces[first], tokens)
        && run
            .separators
            .get(first)
            .is_none_or(|separator| !separator.is_empty())
    {
        first += 1;
    }
    if first < run.pieces.len() {
        runs.push(run.slice(first..run.pieces.len()));
    }
}

/// The Luhn (mod 10) check used by payment card numbers (`digits`: ASCII digits only, else false).
pub fn luhn_valid(digits: &str) -> bool {
    let mut sum = 0;
    for (position, c) in digits.bytes().rev().enumerate() {
        let mut value = u32::from(c.wrapping_sub(b'0'));
        if value > 9 {
            return false;
        }
        if position % 2 == 1 {
            value *= 2;
            if value > 9 {
                value -= 9;
            }
        }
        sum += value;
    }
    !digits.is_empty() && sum.is_multiple_of(10)
}

/// The ABA routing-number checksum: 3·(d1+d4+d7) + 7·(d2+d5+d8) + (d3+d6+d9) ≡ 0 (mod 10).
pub(crate) fn aba_valid(digits: &str) -> bool {
    let values: Vec<u32> = digits.bytes().map(|c| u32::from(c.wrapping_sub(b'0'))).collect();
    if values.len() != 9 || values.iter().any(|&value| value > 9) {
        return false;
    }
    let weights = [3, 7, 1];
    let sum: u32 = values
        .iter()
        .enumerate()
        .map(|(i, value)| value * weights[i % 3])
        .sum();
    sum.is_multiple_of(10) && values.iter().any(|&value| value != 0)
}

/// The shortest and longest payment card numbers (ISO/IEC 7812).
pub(crate) const CARD_DIGITS: std::ops::RangeInclusive<usize> = 13..=19;

/// Every window of whole pieces `[start, end)` holding 13–19 digits that pass Luhn.
pub(crate) fn card_windows<'a>(pieces: impl IntoIterator<Item = &'a str>) -> Vec<Range<usize>> {
    let pieces: Vec<&str> = pieces.into_iter().collect();
    let mut windows = Vec::new();
    for start in 0..pieces.len() {
        let mut digits = String::new();
        for end in start + 1..=pieces.len() {
            digits.push_str(pieces[end - 1]);
            if digits.len() > *CARD_DIGITS.end() {
                break;
            }
            if CARD_DIGITS.contains(&digits.len()) && luhn_valid(&digits) {
                windows.push(start..end);
            }
        }
    }
    windows
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lexer::tokenize;

    fn runs_of(text: &str) -> Vec<String> {
        let tokens = tokenize(text);
        find_runs(&tokens, &[], LeadingOh::Interjection)
            .iter()
            .map(Run::digits)
            .collect()
    }

    #[test]
    fn reads_written_spoken_and_mixed_digits() {
        assert_eq!(runs_of("it's 4111-1111 1111,1111 ok"), ["4111111111111111"]);
        assert_eq!(runs_of("four one one one double five triple oh"), ["411155000"]);
        assert_eq!(runs_of("January twenty twenty-nine"), ["2029"]);
        assert_eq!(runs_of("zero one slash twenty nine"), ["0129"]);
        assert_eq!(runs_of("seven hundred and twelve"), ["712"]);
        assert_eq!(runs_of("five hundred, one hundred forty-two"), ["500142"]);
        assert_eq!(runs_of("(354) 604-0791."), ["3546040791"]);
        assert_eq!(runs_of("4111... 1111… one one"), ["4111111111"]);
    }

    #[test]
    fn words_and_decimal_points_end_runs_and_edge_ohs_are_dropped() {
        assert_eq!(runs_of("4 to 11 days, total 159.74"), ["4", "11", "159", "74"]);
        assert_eq!(runs_of("oh, four two oh"), ["420"]);
        assert_eq!(runs_of("oh four twenty eight"), ["0428"]);
        let continuing = find_runs(&tokenize("oh. nine"), &[], LeadingOh::Zero);
        assert_eq!(continuing[0].digits(), "09");
        assert_eq!(runs_of("Oh okay"), ["0"]);
    }

    #[test]
    fn digits_glued_to_letters_are_marked() {
        let tokens = tokenize("ref F6974 and 17th");
        let runs = find_runs(&tokens, &[], LeadingOh::Interjection);
        assert!(runs[0].pieces[0].glued_to_letters);
        assert!(runs[1].pieces[0].glued_to_letters);
    }

    #[test]
    fn checksums() {
        assert!(luhn_valid("4111111111111111"));
        assert!(!luhn_valid("4111111111111112"));
        assert!(aba_valid("011000015"));
        assert!(!aba_valid("011000016"));
        assert!(!aba_valid("000000000"));
        assert_eq!(card_windows(["1", "4111", "1111", "1111", "1111"]), vec![1..5]);
    }
}
