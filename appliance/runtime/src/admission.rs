//! Admission by finalisation backlog: ending a call costs disk work (the last checkpoint, assembling the final
//! file, manifest, publish — about a dozen fsyncs). When the disk cannot keep up, calls that ended pile up
//! waiting for it; admitting more would only make every SRC time out and retransmit. So while too many ended
//! calls are still being finalised, new INVITEs are answered 503 + Retry-After (the SRC can fail over at once,
//! RFC 7245), and admission reopens once the backlog has drained to half the limit (hysteresis).

/// Open/closed state from the number of calls being finalised.
#[derive(Debug, Clone)]
pub struct FinalisingBacklog {
    close_at: usize,
    reopen_at: usize,
    finalising: usize,
    open: bool,
}

impl FinalisingBacklog {
    /// Closes admission at `close_at` calls being finalised, reopens at half of it.
    pub fn new(close_at: usize) -> Self {
        let close_at = close_at.max(1);
        FinalisingBacklog {
            close_at,
            reopen_at: close_at / 2,
            finalising: 0,
            open: true,
        }
    }

    /// A call ended and its finalisation began. Returns the new admission state if it changed.
    pub fn call_ending(&mut self) -> Option<bool> {
        self.finalising += 1;
        self.update()
    }

    /// A call's finalisation is done. Returns the new admission state if it changed.
    pub fn call_finalised(&mut self) -> Option<bool> {
        self.finalising = self.finalising.saturating_sub(1);
        self.update()
    }

    pub fn finalising(&self) -> usize {
        self.finalising
    }

    /// Whether the backlog lets new calls in.
    pub fn is_open(&self) -> bool {
        self.open
    }

    fn update(&mut self) -> Option<bool> {
        let open = if self.open {
            self.finalising < self.close_at
        } else {
            self.finalising <= self.reopen_at
        };
        (open != self.open).then(|| {
            self.open = open;
            open
        })
    }
}

#[cfg(test)]
mod tests {
    use super::FinalisingBacklog;

    #[test]
    fn closes_at_the_limit_and_reopens_at_half() {
        let mut backlog = FinalisingBacklog::new(4);
        assert_eq!(backlog.call_ending(), None);
        assert_eq!(backlog.call_ending(), None);
        assert_eq!(backlog.call_ending(), None);
        assert_eq!(backlog.call_ending(), Some(false));
        assert_eq!(backlog.call_ending(), None);
        assert_eq!(backlog.call_finalised(), None);
        assert_eq!(backlog.call_finalised(), None);
        assert_eq!(backlog.call_finalised(), Some(true));
        assert_eq!(backlog.finalising(), 2);
        assert_eq!(backlog.call_finalised(), None);
        assert_eq!(backlog.call_finalised(), None);
        assert_eq!(backlog.call_finalised(), None, "never below zero");
        assert_eq!(backlog.finalising(), 0);
    }
}
