//! The compliance gate: the one place transcript text passes on its way out of the appliance (into the
//! transcript artifact and onto the event path). Writers of artifacts and events take [`Released`] text
//! only, and only [`Gate::release`] makes it, so nothing can skip the gate.
//!
//! Today the gate releases text unchanged and says so ([`Gate::policy`] is `"none"`); PCI/PII redaction
//! plugs in here without touching the transcription engine or the writers.

use airlock_telemetry::Pii;

/// Text that has passed the gate and may be written for upload or sent as an event. Still personal data:
/// it prints as `<redacted>` in logs like any `Pii`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Released(Pii<String>);

impl Released {
    /// The released text, for serialisation into an artifact or event.
    pub fn text(&self) -> &str {
        self.0.expose()
    }
}

/// Decides what transcript text may leave.
#[derive(Debug, Clone, Default)]
pub struct Gate {
    _private: (),
}

impl Gate {
    /// The gate in force until redaction exists: every word is released as it was heard.
    pub fn pass_through() -> Gate {
        Gate { _private: () }
    }

    /// The redaction policy applied, as recorded in artifacts: `"none"` for the pass-through gate.
    pub fn policy(&self) -> &'static str {
        "none"
    }

    /// Releases one piece of transcript text.
    pub fn release(&self, text: &Pii<String>) -> Released {
        Released(text.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pass_through_releases_text_unchanged_and_keeps_it_out_of_debug_output() {
        let gate = Gate::pass_through();
        let released = gate.release(&Pii::new("my card is 4111".to_string()));
        assert_eq!(released.text(), "my card is 4111");
        assert_eq!(gate.policy(), "none");
        assert!(!format!("{released:?}").contains("4111"));
    }
}
