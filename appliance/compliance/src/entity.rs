//! The kinds of personal and payment data the redactor removes, and the token that replaces each.

use std::fmt;

/// One kind of sensitive data. The replacement token names the kind, never the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EntityKind {
    /// A payment card number (PAN).
    CardNumber,
    /// A card security code (CVV2/CVC2/CID), spoken in payment context.
    Cvv,
    /// A card expiry date, spoken in payment context.
    Expiry,
    /// A US social security number.
    Ssn,
    /// A bank account number, spoken in bank context.
    BankAccount,
    /// An ABA routing number, spoken in bank context.
    RoutingNumber,
    /// A date of birth, spoken in date-of-birth context.
    DateOfBirth,
    /// An email address, written or spoken ("john dot smith at example dot com").
    Email,
    /// A telephone number.
    Phone,
}

impl EntityKind {
    /// Every kind, in the order reports list them.
    pub const ALL: [EntityKind; 9] = [
        EntityKind::CardNumber,
        EntityKind::Cvv,
        EntityKind::Expiry,
        EntityKind::Ssn,
        EntityKind::BankAccount,
        EntityKind::RoutingNumber,
        EntityKind::DateOfBirth,
        EntityKind::Email,
        EntityKind::Phone,
    ];

    /// The label used in data sets and manifests, e.g. `CARD_NUMBER`.
    pub fn label(self) -> &'static str {
        match self {
            EntityKind::CardNumber => "CARD_NUMBER",
            EntityKind::Cvv => "CVV",
            EntityKind::Expiry => "EXPIRY",
            EntityKind::Ssn => "SSN",
            EntityKind::BankAccount => "BANK_ACCOUNT",
            EntityKind::RoutingNumber => "ROUTING_NUMBER",
            EntityKind::DateOfBirth => "DOB",
            EntityKind::Email => "EMAIL",
            EntityKind::Phone => "PHONE",
        }
    }

    /// The kind with this label, if any.
    pub fn from_label(label: &str) -> Option<EntityKind> {
        EntityKind::ALL.into_iter().find(|kind| kind.label() == label)
    }

    /// The text that replaces a redacted span of this kind, e.g. `[CARD_NUMBER]`.
    pub fn replacement(self) -> &'static str {
        match self {
            EntityKind::CardNumber => "[CARD_NUMBER]",
            EntityKind::Cvv => "[CVV]",
            EntityKind::Expiry => "[EXPIRY]",
            EntityKind::Ssn => "[SSN]",
            EntityKind::BankAccount => "[BANK_ACCOUNT]",
            EntityKind::RoutingNumber => "[ROUTING_NUMBER]",
            EntityKind::DateOfBirth => "[DOB]",
            EntityKind::Email => "[EMAIL]",
            EntityKind::Phone => "[PHONE]",
        }
    }

    /// Which kind wins when two detections overlap: card data first (PCI), then the other identifiers.
    pub(crate) fn precedence(self) -> u8 {
        match self {
            EntityKind::CardNumber => 9,
            EntityKind::Ssn => 8,
            EntityKind::Cvv => 7,
            EntityKind::Expiry => 6,
            EntityKind::RoutingNumber => 5,
            EntityKind::BankAccount => 4,
            EntityKind::DateOfBirth => 3,
            EntityKind::Phone => 2,
            EntityKind::Email => 1,
        }
    }
}

impl fmt::Display for EntityKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_round_trip_and_replacements_wrap_the_label_in_brackets() {
        for kind in EntityKind::ALL {
            assert_eq!(EntityKind::from_label(kind.label()), Some(kind));
            assert_eq!(kind.replacement(), format!("[{}]", kind.label()));
        }
        assert_eq!(EntityKind::from_label("NAME"), None);
    }
}
