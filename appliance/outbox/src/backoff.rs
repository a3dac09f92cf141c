//! Retry delays for a sink whose delivery failed: exponential steps from `initial` up to `max`, each with
//! "equal jitter" (between half of the step and the whole step), so a fleet of appliances that lost the same
//! uplink does not retry in lock-step, and no retry comes sooner than half a step. Pure: the caller supplies
//! the randomness.

use std::time::Duration;

/// The retry schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The step before the first retry.
    pub initial: Duration,
    /// The largest step.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(60),
        }
    }
}

impl Backoff {
    /// The exponential step for retry number `attempt` (0 = the first retry), without jitter.
    pub fn step(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// The delay before retry number `attempt`, given a uniformly random `random`: in
    /// `[step / 2, step]`.
    pub fn delay(&self, attempt: u32, random: u64) -> Duration {
        let step = u64::try_from(self.step(attempt).as_micros()).unwrap_or(u64::MAX);
        let half = step / 2;
        let spread = step - half;
        Duration::from_micros(half + random % spread.saturating_add(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_double_up_to_the_maximum() {
        let backoff = Backoff::default();
        assert_eq!(backoff.step(0), Duration::from_millis(500));
        assert_eq!(backoff.step(1), Duration::from_secs(1));
        assert_eq!(backoff.step(3), Duration::from_secs(4));
        assert_eq!(backoff.step(7), Duration::from_secs(60));
        assert_eq!(backoff.step(u32::MAX), Duration::from_secs(60));
    }

    #[test]
    fn delays_stay_within_half_a_step_and_a_step_and_spread() {
        let backoff = Backoff::default();
        let mut seen = std::collections::BTreeSet::new();
        let mut random = 0x9e37_79b9_7f4a_7c15u64;
        for attempt in 0..12 {
            let step = backoff.step(attempt);
            for _ in 0..200 {
                random = random
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let delay = backoff.delay(attempt, random);
                assert!(
                    delay >= step / 2 && delay <= step,
                    "{delay:?} outside [{:?}, {step:?}]",
                    step / 2
                );
                seen.insert(delay);
            }
        }
        assert!(
            seen.len() > 1000,
            "jitter spreads the delays ({} distinct)",
            seen.len()
        );
        assert_eq!(backoff.delay(0, 0), Duration::from_millis(250));
        assert_eq!(backoff.delay(0, u64::MAX), backoff.delay(0, u64::MAX % 250_001));
    }
}
