//! Spoken-number vocabulary as ASR writes it: digit words ("four", "oh"), teens and tens ("fifteen",
//! "twenty nine"), repeat words ("double", "triple"), ordinals ("fifth", "twenty-fourth") and month names.

/// The digit a single digit word stands for. "oh"/"o" count as zero only inside a digit run (the caller
/// trims them at the edges, where they are usually an interjection).
pub(crate) fn digit_word(word: &str) -> Option<u8> {
    Some(match word {
        "zero" | "oh" | "o" | "nought" | "naught" | "nil" => 0,
        "one" => 1,
        "two" => 2,
        "three" => 3,
        "four" => 4,
        "five" => 5,
        "six" => 6,
        "seven" => 7,
        "eight" => 8,
        "nine" => 9,
        _ => return None,
    })
}

/// Words that are only a weak sign of a zero ("oh", "o"): an interjection at the edge of a run.
pub(crate) fn is_weak_zero(word: &str) -> bool {
    matches!(word, "oh" | "o")
}

/// The value of "ten" … "nineteen".
pub(crate) fn teen_word(word: &str) -> Option<u8> {
    Some(match word {
        "ten" => 10,
        "eleven" => 11,
        "twelve" => 12,
        "thirteen" => 13,
        "fourteen" => 14,
        "fifteen" => 15,
        "sixteen" => 16,
        "seventeen" => 17,
        "eighteen" => 18,
        "nineteen" => 19,
        _ => return None,
    })
}

/// The value of "twenty" … "ninety".
pub(crate) fn tens_word(word: &str) -> Option<u8> {
    Some(match word {
        "twenty" => 20,
        "thirty" => 30,
        "forty" | "fourty" => 40,
        "fifty" => 50,
        "sixty" => 60,
        "seventy" => 70,
        "eighty" => 80,
        "ninety" => 90,
        _ => return None,
    })
}

/// How many times "double"/"triple" repeat the digit that follows.
pub(crate) fn repeat_word(word: &str) -> Option<usize> {
    match word {
        "double" => Some(2),
        "triple" | "treble" => Some(3),
        _ => None,
    }
}

/// The value of an ordinal word used for a day of the month ("first" … "thirty first" is two words; this
/// is the last word: "first" = 1 … "ninth" = 9, "tenth" … "nineteenth", "twentieth", "thirtieth").
pub(crate) fn ordinal_word(word: &str) -> Option<u8> {
    Some(match word {
        "first" => 1,
        "second" => 2,
        "third" => 3,
        "fourth" => 4,
        "fifth" => 5,
        "sixth" => 6,
        "seventh" => 7,
        "eighth" => 8,
        "ninth" => 9,
        "tenth" => 10,
        "eleventh" => 11,
        "twelfth" => 12,
        "thirteenth" => 13,
        "fourteenth" => 14,
        "fifteenth" => 15,
        "sixteenth" => 16,
        "seventeenth" => 17,
        "eighteenth" => 18,
        "nineteenth" => 19,
        "twentieth" => 20,
        "thirtieth" => 30,
        _ => return None,
    })
}

/// Whether a word is an ordinal suffix written after digits ("5th", "1st").
pub(crate) fn is_ordinal_suffix(word: &str) -> bool {
    matches!(word, "st" | "nd" | "rd" | "th")
}

/// The month (1–12) a month name or its usual abbreviation stands for.
pub(crate) fn month_name(word: &str) -> Option<u8> {
    Some(match word {
        "january" | "jan" => 1,
        "february" | "feb" => 2,
        "march" => 3,
        "april" | "apr" => 4,
        "may" => 5,
        "june" | "jun" => 6,
        "july" | "jul" => 7,
        "august" | "aug" => 8,
        "september" | "sept" | "sep" => 9,
        "october" | "oct" => 10,
        "november" | "nov" => 11,
        "december" | "dec" => 12,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vocabulary_covers_the_usual_spellings() {
        assert_eq!(digit_word("oh"), Some(0));
        assert_eq!(digit_word("nine"), Some(9));
        assert_eq!(teen_word("fifteen"), Some(15));
        assert_eq!(tens_word("forty"), Some(40));
        assert_eq!(repeat_word("triple"), Some(3));
        assert_eq!(ordinal_word("twelfth"), Some(12));
        assert_eq!(month_name("sept"), Some(9));
        assert!(is_ordinal_suffix("th"));
        assert_eq!(digit_word("for"), None);
    }
}
