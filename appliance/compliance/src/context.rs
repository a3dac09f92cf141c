//! Conversation context: which kinds of sensitive data the call has recently asked for or mentioned. A
//! cue ("card number", "security code", "date of birth", "routing number" …) said by either speaker opens a
//! context for the next few segments; finding the entity it asked for closes it (so "your appointment is on
//! April 24" after the date of birth was given is not taken for a second one).

use std::collections::VecDeque;

use crate::lexer::Token;

/// What a cue asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cue {
    /// A payment card is being talked about.
    Payment,
    Expiry,
    SecurityCode,
    Ssn,
    /// Bank details in general (account numbers).
    Bank,
    /// A routing (ABA transit) number in particular.
    Routing,
    DateOfBirth,
    Phone,
}

impl Cue {
    /// For how many segments (counting the one with the cue as 0) a cue stays in force.
    fn window_segments(self) -> u64 {
        match self {
            Cue::Payment => 6,
            _ => 3,
        }
    }
}

const CUE_PHRASES: &[(&[&str], Cue)] = &[
    (&["card"], Cue::Payment),
    (&["credit"], Cue::Payment),
    (&["debit"], Cue::Payment),
    (&["visa"], Cue::Payment),
    (&["mastercard"], Cue::Payment),
    (&["amex"], Cue::Payment),
    (&["american", "express"], Cue::Payment),
    (&["discover"], Cue::Payment),
    (&["long", "number"], Cue::Payment),
    (&["pay"], Cue::Payment),
    (&["paying"], Cue::Payment),
    (&["payment"], Cue::Payment),
    (&["expiry"], Cue::Expiry),
    (&["expiration"], Cue::Expiry),
    (&["expires"], Cue::Expiry),
    (&["expire"], Cue::Expiry),
    (&["expiring"], Cue::Expiry),
    (&["exp"], Cue::Expiry),
    (&["valid", "thru"], Cue::Expiry),
    (&["valid", "through"], Cue::Expiry),
    (&["valid", "until"], Cue::Expiry),
    (&["good", "thru"], Cue::Expiry),
    (&["good", "through"], Cue::Expiry),
    (&["good", "until"], Cue::Expiry),
    (&["security", "code"], Cue::SecurityCode),
    (&["cvv"], Cue::SecurityCode),
    (&["cvc"], Cue::SecurityCode),
    (&["cid"], Cue::SecurityCode),
    (&["csc"], Cue::SecurityCode),
    (&["c", "v", "v"], Cue::SecurityCode),
    (&["c", "v", "c"], Cue::SecurityCode),
    (&["verification", "code"], Cue::SecurityCode),
    (&["verification", "value"], Cue::SecurityCode),
    (&["on", "the", "back"], Cue::SecurityCode),
    (&["back", "of", "the", "card"], Cue::SecurityCode),
    (&["social", "security"], Cue::Ssn),
    (&["social"], Cue::Ssn),
    (&["ssn"], Cue::Ssn),
    (&["s", "s", "n"], Cue::Ssn),
    (&["routing"], Cue::Routing),
    (&["aba"], Cue::Routing),
    (&["transit", "number"], Cue::Routing),
    (&["account"], Cue::Bank),
    (&["checking"], Cue::Bank),
    (&["savings"], Cue::Bank),
    (&["bank"], Cue::Bank),
    (&["iban"], Cue::Bank),
    (&["date", "of", "birth"], Cue::DateOfBirth),
    (&["birth", "date"], Cue::DateOfBirth),
    (&["birthdate"], Cue::DateOfBirth),
    (&["birthday"], Cue::DateOfBirth),
    (&["born"], Cue::DateOfBirth),
    (&["dob"], Cue::DateOfBirth),
    (&["d", "o", "b"], Cue::DateOfBirth),
    (&["phone"], Cue::Phone),
    (&["telephone"], Cue::Phone),
    (&["cell"], Cue::Phone),
    (&["mobile"], Cue::Phone),
    (&["reach", "you"], Cue::Phone),
    (&["reach", "me"], Cue::Phone),
    (&["call", "you"], Cue::Phone),
    (&["call", "me"], Cue::Phone),
    (&["callback"], Cue::Phone),
    (&["call", "back"], Cue::Phone),
    (&["contact", "number"], Cue::Phone),
    (&["text", "me"], Cue::Phone),
];

/// The cues said in one segment's words.
fn cues_in(tokens: &[Token], payment_active: bool) -> Vec<Cue> {
    let words: Vec<&str> = tokens.iter().filter_map(Token::word).collect();
    let mut found = Vec::new();
    for start in 0..words.len() {
        for (phrase, cue) in CUE_PHRASES {
            if words[start..].starts_with(phrase) {
                found.push(*cue);
            }
        }
        // A bare "code" only asks for the security code while a card is being discussed, and not as in
        // "zip code" or "area code".
        let other_code = start > 0
            && matches!(
                words[start - 1],
                "zip"
                    | "postal"
                    | "post"
                    | "area"
                    | "promo"
                    | "discount"
                    | "coupon"
                    | "confirmation"
                    | "reference"
                    | "access"
                    | "country"
            );
        if words[start] == "code" && !other_code && (payment_active || found.contains(&Cue::Payment)) {
            found.push(Cue::SecurityCode);
        }
    }
    if found
        .iter()
        .any(|cue| matches!(cue, Cue::Expiry | Cue::SecurityCode))
    {
        found.push(Cue::Payment);
    }
    if found.contains(&Cue::Routing) {
        found.push(Cue::Bank);
    }
    found
}

/// The contexts in force for one segment. Ages are in segments since the cue (0 = this segment).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ActiveContext {
    pub payment: bool,
    pub expiry: bool,
    pub security_code: bool,
    pub ssn: Option<u64>,
    pub bank: Option<u64>,
    pub routing: Option<u64>,
    /// A routing number asked for earlier in the call has been given.
    pub routing_given: bool,
    pub date_of_birth: bool,
    pub phone: bool,
}

#[derive(Debug, Clone)]
struct CueSeen {
    cue: Cue,
    sequence: u64,
    answered: bool,
}

/// The bound on remembered cues (older ones are outside every window anyway).
const MAX_REMEMBERED_CUES: usize = 64;

/// Remembers recent cues of a conversation.
#[derive(Debug, Clone, Default)]
pub(crate) struct ContextTracker {
    cues: VecDeque<CueSeen>,
}

impl ContextTracker {
    /// Records the cues in segment `sequence` and returns the context that segment is read in.
    pub fn observe(&mut self, sequence: u64, tokens: &[Token]) -> ActiveContext {
        let payment_active = self.age(Cue::Payment, sequence).is_some();
        for cue in cues_in(tokens, payment_active) {
            self.renew(cue, sequence);
        }
        ActiveContext {
            payment: self.age(Cue::Payment, sequence).is_some(),
            expiry: self.age(Cue::Expiry, sequence).is_some(),
            security_code: self.age(Cue::SecurityCode, sequence).is_some(),
            ssn: self.age(Cue::Ssn, sequence),
            bank: self.age(Cue::Bank, sequence),
            routing: self.age(Cue::Routing, sequence),
            routing_given: self
                .cues
                .iter()
                .any(|seen| seen.cue == Cue::Routing && seen.answered),
            date_of_birth: self.age(Cue::DateOfBirth, sequence).is_some(),
            phone: self.age(Cue::Phone, sequence).is_some(),
        }
    }

    /// Opens (or keeps open) a context as if its cue were said in segment `sequence`: part of the answer
    /// was given there and the rest may follow.
    pub fn renew(&mut self, cue: Cue, sequence: u64) {
        if self.cues.len() == MAX_REMEMBERED_CUES {
            self.cues.pop_front();
        }
        self.cues.push_back(CueSeen {
            cue,
            sequence,
            answered: false,
        });
    }

    /// Closes the open cues of this kind: the entity they asked for has been given.
    pub fn answered(&mut self, cue: Cue, sequence: u64) {
        for seen in self
            .cues
            .iter_mut()
            .filter(|seen| seen.cue == cue && seen.sequence <= sequence)
        {
            seen.answered = true;
        }
    }

    fn age(&self, cue: Cue, sequence: u64) -> Option<u64> {
        self.cues
            .iter()
            .rev()
            .filter(|seen| seen.cue == cue && !seen.answered && seen.sequence <= sequence)
            .map(|seen| sequence - seen.sequence)
            .find(|&age| age < cue.window_segments())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lexer::tokenize;

    #[test]
    fn a_cue_opens_a_context_for_a_few_segments_until_answered() {
        let mut tracker = ContextTracker::default();
        let asked = tracker.observe(0, &tokenize("And your date of birth?"));
        assert!(asked.date_of_birth);
        assert!(
            tracker
                .observe(1, &tokenize("It's the fifth of May."))
                .date_of_birth
        );
        tracker.answered(Cue::DateOfBirth, 1);
        assert!(
            !tracker
                .observe(2, &tokenize("Your appointment is on May 9."))
                .date_of_birth
        );
    }

    #[test]
    fn cues_expire_after_their_window() {
        let mut tracker = ContextTracker::default();
        tracker.observe(0, &tokenize("What's your social security number?"));
        assert_eq!(tracker.observe(2, &tokenize("hm")).ssn, Some(2));
        assert_eq!(tracker.observe(3, &tokenize("hm")).ssn, None);
    }

    #[test]
    fn social_security_is_not_a_security_code() {
        let mut tracker = ContextTracker::default();
        let context = tracker.observe(
            0,
            &tokenize("For security, can you confirm your social security number?"),
        );
        assert!(context.ssn.is_some());
        assert!(!context.payment && !context.security_code);
    }

    #[test]
    fn a_bare_code_is_a_security_code_cue_only_in_payment_context() {
        let mut tracker = ContextTracker::default();
        assert!(!tracker.observe(0, &tokenize("The code is 4821.")).security_code);
        tracker.observe(1, &tokenize("Which card do you want to use?"));
        assert!(tracker.observe(2, &tokenize("And the code?")).security_code);
        tracker.answered(Cue::SecurityCode, 2);
        assert!(
            !tracker
                .observe(3, &tokenize("And the billing zip code?"))
                .security_code
        );
    }
}
