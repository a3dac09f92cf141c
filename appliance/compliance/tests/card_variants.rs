//! Generated variants: valid card numbers of every length in written, spoken (digit by digit or in pairs:
//! "forty one eleven") and mixed forms, grouped or run together, split over one to four segments of the
//! caller with or without the agent speaking in between, and sometimes read back by the agent, must come out
//! fully redacted; everyday numbers — in a payment call or elsewhere — must (almost all) not. A fixed-seed
//! generator keeps the cases reproducible without extra dependencies.

use airlock_compliance::{ConversationRedactor, LegId, RedactorConfig, ReleasedSegment, Segment};
use airlock_telemetry::Pii;

const AGENT: LegId = LegId(0);
const CALLER: LegId = LegId(1);
const CASES: usize = 3_000;

/// xorshift64*: small, deterministic, good enough to pick forms.
struct Generator(u64);

impl Generator {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }

    fn pick<'a>(&mut self, choices: &[&'a str]) -> &'a str {
        choices[self.below(choices.len())]
    }
}

fn luhn_check_digit(body: &[u8]) -> u8 {
    let sum: u32 = body
        .iter()
        .rev()
        .enumerate()
        .map(|(position, &digit)| {
            let value = u32::from(digit);
            if position % 2 == 0 {
                if value * 2 > 9 { value * 2 - 9 } else { value * 2 }
            } else {
                value
            }
        })
        .sum();
    ((10 - sum % 10) % 10) as u8
}

fn card_number(generator: &mut Generator) -> Vec<u8> {
    let length = 13 + generator.below(7);
    let mut digits: Vec<u8> = vec![[3, 4, 5, 6, 2][generator.below(5)]];
    while digits.len() < length - 1 {
        digits.push(generator.below(10) as u8);
    }
    let check = luhn_check_digit(&digits);
    digits.push(check);
    digits
}

const DIGIT_WORDS: [&str; 10] = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
];
const TEENS: [&str; 10] = [
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
];
const TENS: [&str; 10] = [
    "", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
];

/// A group of even length read in pairs, as numbers: "forty one eleven", "oh five twenty", "double oh".
fn render_pairs(group: &[u8]) -> String {
    group
        .chunks(2)
        .map(|pair| match *pair {
            [0, 0] => "double oh".to_string(),
            [0, unit] => format!("oh {}", DIGIT_WORDS[usize::from(unit)]),
            [1, unit] => TEENS[usize::from(unit)].to_string(),
            [tens, 0] => TENS[usize::from(tens)].to_string(),
            [tens, unit] => format!("{} {}", TENS[usize::from(tens)], DIGIT_WORDS[usize::from(unit)]),
            _ => DIGIT_WORDS[usize::from(pair[0])].to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Renders a group of digits written or spoken, digit by digit with "oh" and "double"/"triple" now and then,
/// or (`pairs`, for a group of even length) in pairs.
fn render_group(group: &[u8], spoken: bool, pairs: bool, generator: &mut Generator) -> String {
    if !spoken {
        return group.iter().map(|digit| char::from(b'0' + digit)).collect();
    }
    if pairs && group.len().is_multiple_of(2) {
        return render_pairs(group);
    }
    let mut words = Vec::new();
    let mut index = 0;
    while index < group.len() {
        let digit = group[index];
        let repeated = group[index..].iter().take_while(|&&next| next == digit).count();
        let word = if digit == 0 && generator.below(2) == 0 {
            "oh"
        } else {
            DIGIT_WORDS[usize::from(digit)]
        };
        if repeated >= 3 && generator.below(2) == 0 {
            words.push(format!("triple {word}"));
            index += 3;
        } else if repeated >= 2 && generator.below(2) == 0 {
            words.push(format!("double {word}"));
            index += 2;
        } else {
            words.push(word.to_string());
            index += 1;
        }
    }
    words.join(" ")
}

/// Splits the number into groups (fours, or all at once, or irregular) and renders each; `pairs` reads
/// spoken groups of even length in pairs.
fn render_groups(digits: &[u8], pairs: bool, generator: &mut Generator) -> Vec<String> {
    let spoken = generator.below(3);
    let mut sizes = Vec::new();
    let mut left = digits.len();
    let style = generator.below(3);
    while left > 0 {
        let size = match style {
            0 => 4,
            1 => digits.len(),
            _ => 1 + generator.below(6),
        }
        .min(left);
        sizes.push(size);
        left -= size;
    }
    let mut start = 0;
    sizes
        .into_iter()
        .map(|size| {
            let group = &digits[start..start + size];
            start += size;
            let this_spoken = match spoken {
                0 => false,
                1 => true,
                _ => generator.below(2) == 0,
            };
            render_group(group, this_spoken, pairs, generator)
        })
        .collect()
}

fn segment(leg: LegId, text: String, start_ms: u64) -> Segment {
    Segment {
        leg,
        text: Pii::new(text),
        words: Vec::new(),
        start_ms,
        end_ms: start_ms + 1_500,
    }
}

fn caller_texts(released: &[ReleasedSegment]) -> Vec<String> {
    released
        .iter()
        .filter(|segment| segment.leg == CALLER)
        .map(|segment| segment.text.text().to_string())
        .collect()
}

#[test]
fn every_generated_card_number_is_fully_redacted() {
    let mut generator = Generator(0x5EED_CA4D);
    for case in 0..CASES {
        let digits = card_number(&mut generator);
        let separator = generator.pick(&[" ", ", ", "-", " - ", ". ", "... ", "…"]);
        // Pairs only where a pause marks the end of a group: "ninety two two" could be 9, 2, 2 or 90, 2, 2.
        let pairs = matches!(separator, ", " | ". " | "... ") && generator.below(2) == 0;
        let groups = render_groups(&digits, pairs, &mut generator);
        let lead_in = generator.pick(&["", "Sure, it's ", "My card number is ", "Okay, ", "Yeah "]);
        let ending = generator.pick(&["", ".", " okay?", ", that's it.", "?"]);
        // Cut the groups into up to four segments.
        let parts = 1 + generator.below(4.min(groups.len()));
        let mut cuts: Vec<usize> = (1..groups.len()).collect();
        while cuts.len() > parts - 1 {
            cuts.remove(generator.below(cuts.len()));
        }
        cuts.push(groups.len());
        let mut redactor = ConversationRedactor::new(RedactorConfig::default());
        let mut released = redactor.push(segment(
            AGENT,
            "What card number would you like to use?".into(),
            0,
        ));
        let mut start = 0;
        let mut now_ms = 2_000;
        let mut said = Vec::new();
        for (index, &cut) in cuts.iter().enumerate() {
            let mut text = groups[start..cut].join(separator);
            if index == 0 {
                text = format!("{lead_in}{text}");
            }
            if index == cuts.len() - 1 {
                text.push_str(ending);
            }
            start = cut;
            said.push(text.clone());
            released.extend(redactor.push(segment(CALLER, text, now_ms)));
            now_ms += 2_000;
            if generator.below(3) == 0 {
                let interjection = generator.pick(&["Mm-hmm.", "Go on.", "Okay, yes.", "Sorry, say again?"]);
                released.extend(redactor.push(segment(AGENT, interjection.into(), now_ms)));
                now_ms += 1_000;
            }
        }
        // Split across speakers: now and then the agent reads the whole number back.
        let read_back = generator.below(4) == 0;
        if read_back {
            let spoken_back = render_groups(&digits, false, &mut generator).join(" ");
            said.push(spoken_back.clone());
            released.extend(redactor.push(segment(AGENT, format!("So that's {spoken_back}?"), now_ms)));
        }
        released.extend(redactor.finish());
        let mut texts = caller_texts(&released);
        if read_back {
            texts.extend(
                released
                    .iter()
                    .filter(|segment| segment.leg == AGENT && segment.text.text().starts_with("So that's"))
                    .map(|segment| segment.text.text().to_string()),
            );
        }
        for text in texts {
            let residue = text.replace("[CARD_NUMBER]", "");
            let leaked_digit = residue.chars().any(|c| c.is_ascii_digit())
                || residue.split(|c: char| !c.is_alphabetic()).any(|word| {
                    DIGIT_WORDS.contains(&word)
                        || TEENS.contains(&word)
                        || (!word.is_empty() && TENS.contains(&word))
                        || matches!(word, "oh" | "double" | "triple")
                });
            assert!(!leaked_digit, "case {case}: {said:?} leaked in {text:?}");
        }
    }
}

#[test]
fn everyday_numbers_in_a_payment_call_are_kept() {
    let mut generator = Generator(0x0DD5_0DD5);
    for _ in 0..CASES {
        // Up to six digits: a longer number in a payment call is taken as card data (detect.rs).
        let order = 1_000 + generator.below(999_000);
        let dollars = generator.below(2_000);
        let cents = generator.below(100);
        let hour = 1 + generator.below(12);
        let text = match generator.below(4) {
            0 => format!("Your order number is {order}."),
            1 => format!("That comes to {dollars} dollars and {cents} cents."),
            2 => format!("The total is ${dollars}.{cents:02}, order {order}."),
            _ => format!("It'll be delivered by {hour} pm, reference {order}."),
        };
        let mut redactor = ConversationRedactor::new(RedactorConfig::default());
        redactor.push(segment(CALLER, "I'll pay by card.".into(), 0));
        let mut released = redactor.push(segment(AGENT, text.clone(), 2_000));
        released.extend(redactor.finish());
        let agent: Vec<&ReleasedSegment> = released.iter().filter(|segment| segment.leg == AGENT).collect();
        assert_eq!(agent.len(), 1);
        assert_eq!(agent[0].text.text(), text, "over-redacted");
    }
}

/// Order ids, times, quantities, 12-digit tracking numbers and 16-digit numbers failing Luhn outside a
/// payment call: at most 1 % of them may be redacted (a Luhn-valid window inside a longer number is taken
/// for a card number anywhere).
#[test]
fn everyday_numbers_outside_a_payment_call_are_mostly_kept() {
    let mut generator = Generator(0x0DD5_7E11);
    let mut altered = 0;
    for _ in 0..CASES {
        let order = 1_000 + generator.below(99_999_000);
        let hour = 1 + generator.below(12);
        let minute = generator.below(60);
        let quantity = 1 + generator.below(500);
        let tracking: String = (0..12)
            .map(|index| {
                let digit = if index == 0 {
                    1 + generator.below(9)
                } else {
                    generator.below(10)
                };
                char::from(b'0' + digit as u8)
            })
            .collect();
        let mut policy = card_number(&mut generator);
        if let Some(last) = policy.last_mut() {
            // Any other check digit fails Luhn.
            *last = (*last + 1 + generator.below(9) as u8) % 10;
        }
        let policy: String = policy.iter().map(|digit| char::from(b'0' + digit)).collect();
        let text = match generator.below(5) {
            0 => format!("Your order {order} shipped this morning."),
            1 => format!("We close at {hour}:{minute:02}, and it's {hour} {minute:02} now."),
            2 => format!("I need {quantity} units by Friday, that's {quantity} boxes."),
            3 => format!("The tracking number is {tracking}."),
            _ => format!("My policy number is {policy}."),
        };
        let mut redactor = ConversationRedactor::new(RedactorConfig::default());
        redactor.push(segment(AGENT, "How can I help you today?".into(), 0));
        let mut released = redactor.push(segment(CALLER, text.clone(), 2_000));
        released.extend(redactor.finish());
        let caller = caller_texts(&released);
        assert_eq!(caller.len(), 1);
        altered += usize::from(caller[0] != text);
    }
    assert!(
        altered * 100 <= CASES,
        "{altered} of {CASES} everyday numbers redacted"
    );
}
