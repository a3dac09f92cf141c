//! Splits transcript text into tokens: runs of ASCII digits, runs of letters (lower-cased) and single
//! punctuation characters, each with its byte range in the text. Whitespace separates tokens and is not one.
//! Digits and letters never share a token, so "F6974" is a word and a number, and "17th" a number followed by
//! the word "th" with no space between (see [`Token::glued_to_previous`]).

use std::ops::Range;

/// What a token is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TokenKind {
    /// ASCII digits, as written.
    Digits(String),
    /// Letters (and apostrophes inside a word), lower-cased.
    Word(String),
    /// One character that is neither a letter, a digit nor whitespace.
    Punct(char),
}

/// One token and where it sits in the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Token {
    pub kind: TokenKind,
    /// Byte range in the text.
    pub range: Range<usize>,
    /// No whitespace between this token and the previous one.
    pub glued_to_previous: bool,
}

impl Token {
    pub fn word(&self) -> Option<&str> {
        match &self.kind {
            TokenKind::Word(word) => Some(word),
            _ => None,
        }
    }

    pub fn is_punct(&self, wanted: char) -> bool {
        self.kind == TokenKind::Punct(wanted)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum CharClass {
    Digit,
    Letter,
    Space,
    Other,
}

fn class_of(c: char) -> CharClass {
    if c.is_ascii_digit() {
        CharClass::Digit
    } else if c.is_alphabetic() {
        CharClass::Letter
    } else if c.is_whitespace() {
        CharClass::Space
    } else {
        CharClass::Other
    }
}

/// Tokenises `text`.
pub(crate) fn tokenize(text: &str) -> Vec<Token> {
    let mut tokens: Vec<Token> = Vec::new();
    let mut chars = text.char_indices().peekable();
    let mut previous_end: Option<usize> = None;
    while let Some((start, c)) = chars.next() {
        let class = class_of(c);
        let mut end = start + c.len_utf8();
        match class {
            CharClass::Space => continue,
            CharClass::Digit | CharClass::Letter => {
                while let Some(&(next_start, next)) = chars.peek() {
                    let continues_word = class == CharClass::Letter
                        && (class_of(next) == CharClass::Letter
                            || (next == '\'' && text[next_start + 1..].starts_with(char::is_alphabetic)));
                    if class_of(next) == class || continues_word {
                        end = next_start + next.len_utf8();
                        chars.next();
                    } else {
                        break;
                    }
                }
            }
            CharClass::Other => {}
        }
        let slice = &text[start..end];
        let kind = match class {
            CharClass::Digit => TokenKind::Digits(slice.to_string()),
            CharClass::Letter => TokenKind::Word(slice.to_lowercase()),
            _ => TokenKind::Punct(c),
        };
        tokens.push(Token {
            kind,
            range: start..end,
            glued_to_previous: previous_end == Some(start),
        });
        previous_end = Some(end);
    }
    tokens
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<TokenKind> {
        tokenize(text).into_iter().map(|token| token.kind).collect()
    }

    #[test]
    fn splits_digits_letters_and_punctuation_and_keeps_byte_ranges() {
        let tokens = tokenize("It's F6974, 17th.");
        let words: Vec<&str> = tokens
            .iter()
            .map(|token| &"It's F6974, 17th."[token.range.clone()])
            .collect();
        assert_eq!(words, ["It's", "F", "6974", ",", "17", "th", "."]);
        assert!(tokens[2].glued_to_previous);
        assert!(!tokens[1].glued_to_previous);
        assert_eq!(tokens[0].word(), Some("it's"));
    }

    #[test]
    fn non_ascii_text_keeps_valid_ranges() {
        assert_eq!(
            kinds("Ünïcode ٣ 4"),
            [
                TokenKind::Word("ünïcode".into()),
                TokenKind::Punct('٣'),
                TokenKind::Digits("4".into())
            ]
        );
    }
}
