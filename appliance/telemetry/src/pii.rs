//! `Pii<T>`: a value that is personal data (phone numbers, SIP URIs, display names, IP addresses,
//! transcript text). Its `Debug` and `Display` print `<redacted>`, so it cannot leak through a log line or
//! an error message by accident; code that really needs the value calls [`Pii::expose`].

use std::fmt;

/// Personal data that must never reach logs or metric labels.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Pii<T>(T);

impl<T> Pii<T> {
    pub fn new(value: T) -> Self {
        Pii(value)
    }

    /// The wrapped value, for the few places that must process it (encryption, redaction).
    pub fn expose(&self) -> &T {
        &self.0
    }

    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> fmt::Debug for Pii<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl<T> fmt::Display for Pii<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl<T> From<T> for Pii<T> {
    fn from(value: T) -> Self {
        Pii(value)
    }
}

#[cfg(test)]
mod tests {
    use super::Pii;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let number = Pii::new(String::from("+15551230001"));
        assert_eq!(format!("{number:?}"), "<redacted>");
        assert_eq!(format!("{number}"), "<redacted>");
        assert_eq!(format!("{:?}", Some(&number)), "Some(<redacted>)");
        assert_eq!(number.expose(), "+15551230001");
    }
}
