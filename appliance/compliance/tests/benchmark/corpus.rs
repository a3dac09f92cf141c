//! The benchmark's labelled dialogues, generated from a seed: agent and customer turns around card payments,
//! SSNs, bank details, dates of birth and contact details, with every sensitive value labelled (its type,
//! character range and, for a value split over several segments, a group), and negative material — order
//! ids, times, amounts, quantities, tracking and reference numbers, 16-digit numbers failing Luhn — labelled
//! separately, to measure what is redacted that should not be.

use std::ops::Range;

use airlock_compliance::EntityKind;

/// xorshift64*, seeded through splitmix64: small and deterministic.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }

    fn chance(&mut self, numerator: usize, denominator: usize) -> bool {
        self.below(denominator) < numerator
    }

    fn pick<T: Copy>(&mut self, choices: &[T]) -> T {
        choices[self.below(choices.len())]
    }

    fn digits(&mut self, count: usize) -> Vec<u8> {
        (0..count).map(|_| self.below(10) as u8).collect()
    }
}

/// A labelled sensitive value (or one part of a value split over segments).
#[derive(Debug, Clone)]
pub struct Gold {
    pub segment: usize,
    pub chars: Range<usize>,
    pub kind: EntityKind,
    /// The parts of one value share a group.
    pub group: usize,
}

/// Labelled material that must not be redacted.
#[derive(Debug, Clone)]
pub struct Negative {
    pub segment: usize,
    pub chars: Range<usize>,
    pub kind: &'static str,
}

/// One generated dialogue.
#[derive(Debug, Default)]
pub struct Dialogue {
    pub scenario: &'static str,
    pub segments: Vec<(&'static str, String)>,
    pub gold: Vec<Gold>,
    pub negatives: Vec<Negative>,
    next_group: usize,
}

const AGENT: &str = "agent";
const CUSTOMER: &str = "customer";

/// A piece of a turn: plain words, a sensitive value (kind, group) or negative material.
enum Part {
    Text(String),
    Value(EntityKind, usize, String),
    Negative(&'static str, String),
}

fn text(words: impl Into<String>) -> Part {
    Part::Text(words.into())
}

impl Dialogue {
    fn group(&mut self) -> usize {
        self.next_group += 1;
        self.next_group
    }

    fn say(&mut self, speaker: &'static str, parts: Vec<Part>) {
        let segment = self.segments.len();
        let mut said = String::new();
        for part in parts {
            let start = said.chars().count();
            match part {
                Part::Text(words) => said.push_str(&words),
                Part::Value(kind, group, value) => {
                    said.push_str(&value);
                    self.gold.push(Gold {
                        segment,
                        chars: start..said.chars().count(),
                        kind,
                        group,
                    });
                }
                Part::Negative(kind, value) => {
                    said.push_str(&value);
                    self.negatives.push(Negative {
                        segment,
                        chars: start..said.chars().count(),
                        kind,
                    });
                }
            }
        }
        self.segments.push((speaker, said));
    }

    fn value(&mut self, speaker: &'static str, kind: EntityKind, before: &str, value: String, after: &str) {
        let group = self.group();
        self.say(
            speaker,
            vec![text(before), Part::Value(kind, group, value), text(after)],
        );
    }
}

fn luhn_check_digit(body: &[u8]) -> u8 {
    let sum: u32 = body
        .iter()
        .rev()
        .enumerate()
        .map(|(position, &digit)| {
            let value = u32::from(digit);
            match position % 2 {
                0 if value * 2 > 9 => value * 2 - 9,
                0 => value * 2,
                _ => value,
            }
        })
        .sum();
    ((10 - sum % 10) % 10) as u8
}

/// Issuer prefixes and lengths of the major brands: Visa, Mastercard (51–55 and 2221–2720), American
/// Express, Discover, Diners Club, JCB, UnionPay, Maestro.
const BRANDS: &[(&[&str], &[usize])] = &[
    (&["4"], &[13, 16, 19]),
    (&["51", "52", "53", "54", "55", "2221", "2300", "2720"], &[16]),
    (&["34", "37"], &[15]),
    (&["6011", "644", "649", "65"], &[16, 19]),
    (&["36", "38", "300", "305"], &[14]),
    (&["3528", "3589"], &[16, 17, 18, 19]),
    (&["62"], &[16, 17, 18, 19]),
    (&["50", "56", "58", "6304", "6759"], &[13, 15, 17, 18, 19]),
];

/// A Luhn-valid card number of a major brand.
fn card_number(rng: &mut Rng) -> Vec<u8> {
    let (prefixes, lengths) = rng.pick(BRANDS);
    let prefix = rng.pick(prefixes);
    let length = rng.pick(lengths);
    let mut digits: Vec<u8> = prefix.bytes().map(|b| b - b'0').collect();
    digits.extend(rng.digits(length - 1 - digits.len()));
    digits.push(luhn_check_digit(&digits));
    digits
}

/// How a card prints its digits: 4-6-5 (15 digits), 4-6-4 (14), otherwise fours.
fn card_groups(length: usize) -> Vec<usize> {
    match length {
        15 => vec![4, 6, 5],
        14 => vec![4, 6, 4],
        _ => {
            let mut sizes = vec![4; length / 4];
            if !length.is_multiple_of(4) {
                sizes.push(length % 4);
            }
            sizes
        }
    }
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

fn written(digits: &[u8]) -> String {
    digits.iter().map(|digit| char::from(b'0' + digit)).collect()
}

fn zero_word(rng: &mut Rng) -> &'static str {
    if rng.chance(1, 2) { "oh" } else { "zero" }
}

/// Digit by digit, "oh" or "zero" for 0, "double"/"triple" now and then.
fn spoken_digits(digits: &[u8], rng: &mut Rng) -> String {
    let mut words = Vec::new();
    let mut index = 0;
    while index < digits.len() {
        let digit = digits[index];
        let word = if digit == 0 {
            zero_word(rng)
        } else {
            DIGIT_WORDS[usize::from(digit)]
        };
        let repeated = digits[index..].iter().take_while(|&&next| next == digit).count();
        if repeated >= 3 && rng.chance(1, 2) {
            words.push(format!("triple {word}"));
            index += 3;
        } else if repeated >= 2 && rng.chance(1, 2) {
            words.push(format!("double {word}"));
            index += 2;
        } else {
            words.push(word.to_string());
            index += 1;
        }
    }
    words.join(" ")
}

/// In pairs, as numbers: "forty one eleven", "oh five twenty"; a group of odd length ends digit by digit.
fn spoken_pairs(digits: &[u8], rng: &mut Rng) -> String {
    let mut words = Vec::new();
    for pair in digits.chunks(2) {
        match *pair {
            [0, 0] => words.push("double oh".to_string()),
            [0, unit] => words.push(format!("{} {}", zero_word(rng), DIGIT_WORDS[usize::from(unit)])),
            [1, unit] => words.push(TEENS[usize::from(unit)].to_string()),
            [tens, 0] => words.push(TENS[usize::from(tens)].to_string()),
            [tens, unit] => words.push(format!(
                "{} {}",
                TENS[usize::from(tens)],
                DIGIT_WORDS[usize::from(unit)]
            )),
            _ => words.push(spoken_digits(pair, rng)),
        }
    }
    words.join(" ")
}

/// The form of a number read out: written (how ASR often writes it), spoken digit by digit, spoken in
/// pairs, or a mixture group by group.
#[derive(Clone, Copy)]
enum Form {
    Written,
    Digits,
    Pairs,
    Mixed,
}

fn render_group(group: &[u8], form: Form, rng: &mut Rng) -> String {
    let form = match form {
        Form::Mixed => rng.pick(&[Form::Written, Form::Digits, Form::Pairs]),
        other => other,
    };
    match form {
        Form::Written => written(group),
        Form::Pairs if group.len().is_multiple_of(2) => spoken_pairs(group, rng),
        _ => spoken_digits(group, rng),
    }
}

/// Splits `digits` into groups of `sizes` and renders each.
fn render_groups(digits: &[u8], sizes: &[usize], form: Form, rng: &mut Rng) -> Vec<String> {
    let mut start = 0;
    sizes
        .iter()
        .map(|&size| {
            let group = &digits[start..start + size];
            start += size;
            render_group(group, form, rng)
        })
        .collect()
}

fn any_form(rng: &mut Rng) -> Form {
    rng.pick(&[
        Form::Written,
        Form::Written,
        Form::Digits,
        Form::Pairs,
        Form::Mixed,
    ])
}

/// A card number read by the customer over one to four segments, the agent now and then acknowledging in
/// between, and sometimes read back by the agent.
fn read_card(dialogue: &mut Dialogue, rng: &mut Rng) {
    let ask = rng.pick(&[
        "Can I have the long card number please?",
        "What's the card number?",
        "Okay, go ahead with the number on the card.",
        "Which card would you like to use? I'll need the full number.",
        "And the sixteen digits across the front of the card?",
        "Please read me your credit card number.",
    ]);
    dialogue.say(AGENT, vec![text(ask)]);
    let digits = card_number(rng);
    let form = any_form(rng);
    let sizes = match rng.below(4) {
        0 => vec![digits.len()],
        1 => {
            // Irregular pauses.
            let mut sizes = Vec::new();
            let mut left = digits.len();
            while left > 0 {
                let size = (2 + rng.below(5)).min(left);
                sizes.push(size);
                left -= size;
            }
            sizes
        }
        _ => card_groups(digits.len()),
    };
    let groups = render_groups(&digits, &sizes, form, rng);
    let separator = match form {
        Form::Written => rng.pick(&[" ", " ", "-", ", ", ". ", " - "]),
        _ => rng.pick(&[" ", ", ", ". ", "... "]),
    };
    let parts = 1 + rng.below(4.min(groups.len()));
    let mut cuts: Vec<usize> = (1..groups.len()).collect();
    while cuts.len() > parts - 1 {
        cuts.remove(rng.below(cuts.len()));
    }
    cuts.push(groups.len());
    let group = dialogue.group();
    let mut start = 0;
    for (index, &cut) in cuts.iter().enumerate() {
        let lead = if index == 0 {
            rng.pick(&[
                "",
                "Sure, it's ",
                "It's ",
                "Okay, so ",
                "Yeah, ",
                "The number is ",
                "Um, ",
            ])
        } else {
            rng.pick(&["", "", "Then ", "And ", "Okay, "])
        };
        let last = index + 1 == cuts.len();
        let end = if last {
            rng.pick(&["", ".", "?", ", that's it.", " okay?"])
        } else {
            rng.pick(&["", ",", "...", " um"])
        };
        let value = groups[start..cut].join(separator);
        start = cut;
        dialogue.say(
            CUSTOMER,
            vec![
                text(lead),
                Part::Value(EntityKind::CardNumber, group, value),
                text(end),
            ],
        );
        if !last && rng.chance(1, 2) {
            let ack = rng.pick(&[
                "Mm-hmm.",
                "Okay.",
                "Go on.",
                "Yes.",
                "Got it.",
                "Uh-huh, and then?",
            ]);
            dialogue.say(AGENT, vec![text(ack)]);
        }
    }
    if rng.chance(1, 5) {
        let groups = render_groups(&digits, &card_groups(digits.len()), Form::Written, rng);
        let group = dialogue.group();
        dialogue.say(
            AGENT,
            vec![
                text("Let me read that back: "),
                Part::Value(EntityKind::CardNumber, group, groups.join(" ")),
                text(". Is that right?"),
            ],
        );
        dialogue.say(
            CUSTOMER,
            vec![text(rng.pick(&["Yes.", "That's right.", "Correct."]))],
        );
    }
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

fn two_digit_number(value: usize) -> String {
    match value {
        0..=9 => format!("oh {}", DIGIT_WORDS[value]),
        10..=19 => TEENS[value - 10].to_string(),
        _ if value.is_multiple_of(10) => TENS[value / 10].to_string(),
        _ => format!("{} {}", TENS[value / 10], DIGIT_WORDS[value % 10]),
    }
}

fn expiry(dialogue: &mut Dialogue, rng: &mut Rng) {
    let ask = rng.pick(&[
        "And the expiry date?",
        "What's the expiration date on the card?",
        "When does the card expire?",
        "Can I have the expiry, month and year?",
    ]);
    dialogue.say(AGENT, vec![text(ask)]);
    let month = 1 + rng.below(12);
    let year = 26 + rng.below(10);
    let value = match rng.below(8) {
        0 => format!("{month:02}/{year}"),
        1 => format!("{month}/{year}"),
        2 => format!("{month:02}/20{year}"),
        3 => format!("{} {}", two_digit_number(month), two_digit_number(year)),
        4 => format!("{} twenty {}", MONTHS[month - 1], two_digit_number(year)),
        5 => format!("{} 20{year}", MONTHS[month - 1]),
        6 => format!(
            "{} slash {}",
            spoken_digits(&[(month / 10) as u8, (month % 10) as u8], rng),
            two_digit_number(year)
        ),
        _ => format!("{month:02}{year}"),
    };
    let before = rng.pick(&["", "It's ", "Expires ", "Good through ", "Um, "]);
    dialogue.value(
        CUSTOMER,
        EntityKind::Expiry,
        before,
        value,
        rng.pick(&["", ".", " I think."]),
    );
}

fn security_code(dialogue: &mut Dialogue, rng: &mut Rng) {
    let ask = rng.pick(&[
        "And the three digit security code on the back?",
        "What's the CVV?",
        "Finally the security code, please.",
        "And the code on the back of the card?",
    ]);
    dialogue.say(AGENT, vec![text(ask)]);
    let length = 3 + usize::from(rng.chance(1, 6));
    let code = rng.digits(length);
    let value = match rng.below(3) {
        0 => written(&code),
        1 => code
            .iter()
            .map(|digit| digit.to_string())
            .collect::<Vec<_>>()
            .join(" "),
        _ => spoken_digits(&code, rng),
    };
    let before = rng.pick(&["", "It's ", "Sure, ", "The code is "]);
    dialogue.value(CUSTOMER, EntityKind::Cvv, before, value, rng.pick(&["", "."]));
}

/// Order ids of up to six digits, amounts, times and quantities said in a payment call.
fn payment_wrap_up(dialogue: &mut Dialogue, rng: &mut Rng) {
    let order = 10_000 + rng.below(990_000);
    let dollars = 5 + rng.below(2_000);
    let cents = rng.below(100);
    let quantity = 1 + rng.below(12);
    let parts = match rng.below(4) {
        0 => vec![
            text("Thank you, your order number is "),
            Part::Negative("ORDER_ID", order.to_string()),
            text(", and the total is "),
            Part::Negative("AMOUNT", format!("${dollars}.{cents:02}")),
            text("."),
        ],
        1 => vec![
            text("That's "),
            Part::Negative("QUANTITY", quantity.to_string()),
            text(" items for "),
            Part::Negative("AMOUNT", format!("{dollars} dollars and {cents} cents")),
            text("."),
        ],
        2 => vec![
            text("Done. It will ship by "),
            Part::Negative("TIME", format!("{}:{:02} pm", 1 + rng.below(11), rng.below(60))),
            text(", reference "),
            Part::Negative("ORDER_ID", order.to_string()),
            text("."),
        ],
        _ => vec![
            text("Payment approved for "),
            Part::Negative("AMOUNT", format!("${dollars}")),
            text(", it arrives in "),
            Part::Negative(
                "QUANTITY",
                format!("{} to {}", 2 + rng.below(3), 5 + rng.below(6)),
            ),
            text(" business days."),
        ],
    };
    dialogue.say(AGENT, parts);
}

fn ssn_digits(rng: &mut Rng) -> Vec<u8> {
    loop {
        let digits = rng.digits(9);
        let area = written(&digits[..3]);
        if area != "000"
            && area != "666"
            && digits[0] != 9
            && digits[3..5] != [0, 0]
            && digits[5..] != [0, 0, 0, 0]
        {
            return digits;
        }
    }
}

fn ssn(dialogue: &mut Dialogue, rng: &mut Rng) {
    let ask = rng.pick(&[
        "For verification, can you give me your social security number?",
        "What's your SSN?",
        "I'll need your social security number to continue.",
        "Can you confirm your social?",
    ]);
    dialogue.say(AGENT, vec![text(ask)]);
    let digits = ssn_digits(rng);
    let (area, group, serial) = (&digits[..3], &digits[3..5], &digits[5..]);
    let spoken = |rng: &mut Rng, part: &[u8]| spoken_digits(part, rng);
    let before = rng.pick(&["", "Sure, it's ", "It's ", "Yeah, "]);
    if rng.chance(1, 6) {
        // Read in two goes.
        let id = dialogue.group();
        let (first, second) = if rng.chance(1, 2) {
            (format!("{} {}", written(area), written(group)), written(serial))
        } else {
            (
                format!("{}, {}", spoken(rng, area), spoken(rng, group)),
                spoken(rng, serial),
            )
        };
        dialogue.say(
            CUSTOMER,
            vec![text(before), Part::Value(EntityKind::Ssn, id, first), text("...")],
        );
        if rng.chance(1, 2) {
            dialogue.say(AGENT, vec![text("Mm-hmm.")]);
        }
        dialogue.say(
            CUSTOMER,
            vec![Part::Value(EntityKind::Ssn, id, second), text(".")],
        );
        return;
    }
    let value = match rng.below(5) {
        0 => format!("{}-{}-{}", written(area), written(group), written(serial)),
        1 => format!("{} {} {}", written(area), written(group), written(serial)),
        2 => written(&digits),
        3 => format!(
            "{}, {}, {}",
            spoken(rng, area),
            spoken(rng, group),
            spoken(rng, serial)
        ),
        _ => format!(
            "{} dash {} dash {}",
            spoken(rng, area),
            spoken(rng, group),
            spoken(rng, serial)
        ),
    };
    dialogue.value(CUSTOMER, EntityKind::Ssn, before, value, rng.pick(&["", "."]));
}

fn aba_routing(rng: &mut Rng) -> Vec<u8> {
    let mut digits = rng.digits(8);
    digits[0] = rng.pick(&[0, 1, 2, 3]);
    let weights = [3, 7, 1, 3, 7, 1, 3, 7];
    let sum: usize = digits
        .iter()
        .zip(weights)
        .map(|(&digit, weight)| usize::from(digit) * weight)
        .sum();
    digits.push(((10 - sum % 10) % 10) as u8);
    digits
}

fn bank(dialogue: &mut Dialogue, rng: &mut Rng) {
    dialogue.say(
        AGENT,
        vec![text(rng.pick(&[
            "What's the routing number for the account?",
            "I'll need the bank routing number.",
        ]))],
    );
    let routing = aba_routing(rng);
    let value = if rng.chance(1, 2) {
        written(&routing)
    } else {
        spoken_digits(&routing, rng)
    };
    dialogue.value(
        CUSTOMER,
        EntityKind::RoutingNumber,
        rng.pick(&["", "It's "]),
        value,
        ".",
    );
    dialogue.say(
        AGENT,
        vec![text(rng.pick(&[
            "And the account number?",
            "Now the checking account number, please.",
        ]))],
    );
    let length = 8 + rng.below(5);
    let account = rng.digits(length);
    let value = match rng.below(3) {
        0 => written(&account),
        1 => spoken_digits(&account, rng),
        _ => {
            let (head, tail) = account.split_at(4);
            format!("{} {}", written(head), written(tail))
        }
    };
    dialogue.value(
        CUSTOMER,
        EntityKind::BankAccount,
        rng.pick(&["", "It's ", "Sure, "]),
        value,
        ".",
    );
}

fn date_of_birth(dialogue: &mut Dialogue, rng: &mut Rng) {
    dialogue.say(
        AGENT,
        vec![text(rng.pick(&[
            "Can I have your date of birth?",
            "And what's your date of birth?",
            "To verify, when were you born?",
        ]))],
    );
    let month = 1 + rng.below(12);
    let day = 1 + rng.below(28);
    let year = 1940 + rng.below(66);
    let ordinal = |day: usize| {
        let suffix = match day {
            1 | 21 => "st",
            2 | 22 => "nd",
            3 | 23 => "rd",
            _ => "th",
        };
        format!("{day}{suffix}")
    };
    let spoken_year = |year: usize| format!("nineteen {}", two_digit_number(year % 100));
    let value = match rng.below(6) {
        0 => format!("{} {}, {year}", MONTHS[month - 1], ordinal(day)),
        1 => format!("{month:02}/{day:02}/{year}"),
        2 => format!("the {} of {} {year}", ordinal(day), MONTHS[month - 1]),
        3 => format!("{month}/{day}/{:02}", year % 100),
        4 if year < 2000 => format!("{} {day} {}", MONTHS[month - 1], spoken_year(year)),
        _ => format!("{} {day}, {year}", MONTHS[month - 1]),
    };
    dialogue.value(
        CUSTOMER,
        EntityKind::DateOfBirth,
        rng.pick(&["", "It's ", "I was born "]),
        value,
        ".",
    );
}

const NAMES: [&str; 8] = ["jane", "john", "maria", "li", "omar", "kate", "raj", "sam"];
const SURNAMES: [&str; 8] = [
    "doe", "smith", "garcia", "chen", "haddad", "okafor", "patel", "lee",
];
const DOMAINS: [(&str, &str); 4] = [
    ("example", "com"),
    ("mail", "net"),
    ("example", "org"),
    ("post", "co"),
];

fn contact(dialogue: &mut Dialogue, rng: &mut Rng) {
    dialogue.say(
        AGENT,
        vec![text(rng.pick(&[
            "What's the best number to reach you on?",
            "Can I get a phone number for you?",
        ]))],
    );
    let area = 201 + rng.below(700);
    let exchange = 200 + rng.below(800);
    let line = rng.digits(4);
    let value = match rng.below(4) {
        0 => format!("({area}) {exchange}-{}", written(&line)),
        1 => format!("{area}-{exchange}-{}", written(&line)),
        2 => format!(
            "{}, {}, {}",
            spoken_digits(&digits_of(area), rng),
            spoken_digits(&digits_of(exchange), rng),
            spoken_digits(&line, rng)
        ),
        _ => format!("+44 20 {} {}", written(&rng.digits(4)), written(&line)),
    };
    dialogue.value(
        CUSTOMER,
        EntityKind::Phone,
        rng.pick(&["", "It's ", "Sure, "]),
        value,
        ".",
    );
    dialogue.say(AGENT, vec![text("And an email address?")]);
    let (name, surname) = (rng.pick(&NAMES), rng.pick(&SURNAMES));
    let (domain, tld) = rng.pick(&DOMAINS);
    let value = match rng.below(3) {
        0 => format!("{name}.{surname}@{domain}.{tld}"),
        1 => format!("{name} dot {surname} at {domain} dot {tld}"),
        _ => format!("{name} underscore {surname} at {domain} dot {tld}"),
    };
    dialogue.value(
        CUSTOMER,
        EntityKind::Email,
        rng.pick(&["", "It's ", "Sure, "]),
        value,
        ".",
    );
}

fn digits_of(value: usize) -> Vec<u8> {
    value.to_string().bytes().map(|b| b - b'0').collect()
}

/// A 16-digit number that fails Luhn.
fn invalid_luhn_16(rng: &mut Rng) -> Vec<u8> {
    let mut digits = rng.digits(15);
    digits[0] = 1 + rng.below(9) as u8;
    let check = luhn_check_digit(&digits);
    digits.push((check + 1 + rng.below(9) as u8) % 10);
    digits
}

/// A call about an order or a policy: numbers everywhere, nothing to redact.
fn negative_call(dialogue: &mut Dialogue, rng: &mut Rng) {
    let order = 100_000 + rng.below(99_900_000);
    dialogue.say(
        AGENT,
        vec![
            text("I see your order "),
            Part::Negative("ORDER_ID", order.to_string()),
            text(" shipped on "),
            Part::Negative("DATE", format!("{} {}", MONTHS[rng.below(12)], 1 + rng.below(28))),
            text("."),
        ],
    );
    let tracking_length = rng.pick(&[12, 20, 22]);
    let tracking = {
        let mut digits = rng.digits(tracking_length);
        digits[0] = 1 + rng.below(9) as u8;
        digits
    };
    let tracking = if rng.chance(1, 2) {
        written(&tracking)
    } else {
        tracking.chunks(4).map(written).collect::<Vec<_>>().join(" ")
    };
    dialogue.say(CUSTOMER, vec![text("Okay, what's the tracking number?")]);
    dialogue.say(
        AGENT,
        vec![
            text("It's "),
            Part::Negative("TRACKING", tracking),
            text(", and it should arrive by "),
            Part::Negative("TIME", format!("{} pm", 1 + rng.below(11))),
            text("."),
        ],
    );
    let policy = invalid_luhn_16(rng);
    let policy = if rng.chance(1, 2) {
        written(&policy)
    } else {
        policy.chunks(4).map(written).collect::<Vec<_>>().join(" ")
    };
    dialogue.say(
        CUSTOMER,
        vec![
            text("My policy number is "),
            Part::Negative("INVALID_LUHN_16", policy),
            text(", I ordered "),
            Part::Negative("QUANTITY", (2 + rng.below(40)).to_string()),
            text(" boxes."),
        ],
    );
    dialogue.say(
        AGENT,
        vec![
            text("Thanks. We're open until "),
            Part::Negative("TIME", format!("{}:{:02}", 5 + rng.below(4), 15 * rng.below(4))),
            text(", and the refund of "),
            Part::Negative(
                "AMOUNT",
                format!(
                    "${},{:03}.{:02}",
                    1 + rng.below(9),
                    rng.below(1000),
                    rng.below(100)
                ),
            ),
            text(" goes out in "),
            Part::Negative("QUANTITY", (3 + rng.below(8)).to_string()),
            text(" days."),
        ],
    );
}

/// Dialogue `index` of the set generated from `seed`.
pub fn dialogue(seed: u64, index: usize) -> Dialogue {
    let mut rng = Rng::new(seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut dialogue = Dialogue::default();
    dialogue.say(
        AGENT,
        vec![text(rng.pick(&[
            "Thanks for calling, how can I help?",
            "Good morning, you're through to customer service.",
        ]))],
    );
    match rng.below(8) {
        0..=2 => {
            dialogue.scenario = "payment";
            read_card(&mut dialogue, &mut rng);
            expiry(&mut dialogue, &mut rng);
            security_code(&mut dialogue, &mut rng);
            payment_wrap_up(&mut dialogue, &mut rng);
        }
        3 => {
            dialogue.scenario = "identity";
            date_of_birth(&mut dialogue, &mut rng);
            ssn(&mut dialogue, &mut rng);
        }
        4 => {
            dialogue.scenario = "ssn";
            ssn(&mut dialogue, &mut rng);
        }
        5 => {
            dialogue.scenario = "bank";
            bank(&mut dialogue, &mut rng);
        }
        6 => {
            dialogue.scenario = "contact";
            contact(&mut dialogue, &mut rng);
        }
        _ => {
            dialogue.scenario = "negative";
            negative_call(&mut dialogue, &mut rng);
        }
    }
    dialogue
}
