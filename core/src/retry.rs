//! The retry policy: how many automatic attempts and how long to wait between them.
//!
//! Pure functions only; the engine turns the delays into monotonic deadlines.

use std::time::Duration;

/// Exponential backoff with a cap and optional jitter (`PRODUCT.md`, Retries).
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Automatic retries after the first attempt; attempts ≤ `max_retries + 1`.
    pub max_retries: u32,
    pub initial_delay: Duration,
    pub multiplier: f64,
    pub max_delay: Duration,
    /// Fraction (0..=1) of the delay that is randomised away: the delay is drawn from
    /// `[d × (1 − jitter), d]`, so jitter never extends a backoff.
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 3,
            initial_delay: Duration::from_secs(5),
            multiplier: 2.0,
            max_delay: Duration::from_secs(300),
            jitter: 0.0,
        }
    }
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    /// Wait this long, then queue the next attempt.
    RetryAfter(Duration),
    /// No retries left (or the failure is not retryable): the deployment fails.
    GiveUp,
}

impl RetryPolicy {
    /// The delay before automatic retry number `retry` (1-based): `initial × multiplier^(retry−1)`,
    /// capped at `max_delay`. With the defaults: 5 s, 10 s, 20 s.
    pub fn delay(&self, retry: u32) -> Duration {
        let exponent = i32::try_from(retry.saturating_sub(1)).unwrap_or(i32::MAX);
        let secs = self.initial_delay.as_secs_f64() * self.multiplier.max(1.0).powi(exponent);
        let capped = secs.min(self.max_delay.as_secs_f64());
        if capped.is_finite() && capped >= 0.0 { Duration::from_secs_f64(capped) } else { self.max_delay }
    }

    /// The delay with jitter applied; `unit` is a random number in `[0, 1)` supplied by the
    /// caller so that this stays a pure function.
    pub fn jittered_delay(&self, retry: u32, unit: f64) -> Duration {
        let delay = self.delay(retry);
        let jitter = self.jitter.clamp(0.0, 1.0);
        delay.mul_f64(1.0 - jitter * unit.clamp(0.0, 1.0))
    }

    /// Decides after a failed attempt, given the automatic retries already used.
    pub fn decide(&self, retries_used: u32, retryable: bool, unit: f64) -> RetryDecision {
        if retryable && retries_used < self.max_retries {
            RetryDecision::RetryAfter(self.jittered_delay(retries_used + 1, unit))
        } else {
            RetryDecision::GiveUp
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn default_backoff_is_5_10_20_then_give_up() {
        let policy = RetryPolicy::default();
        let delays: Vec<_> = (0..3)
            .map(|used| match policy.decide(used, true, 0.5) {
                RetryDecision::RetryAfter(d) => d,
                RetryDecision::GiveUp => panic!("gave up after {used}"),
            })
            .collect();
        assert_eq!(delays, [Duration::from_secs(5), Duration::from_secs(10), Duration::from_secs(20)]);
        assert_eq!(policy.decide(3, true, 0.0), RetryDecision::GiveUp);
        assert_eq!(policy.decide(0, false, 0.0), RetryDecision::GiveUp);
    }

    #[test]
    fn delay_is_capped() {
        let policy = RetryPolicy { max_retries: 50, max_delay: Duration::from_secs(60), ..RetryPolicy::default() };
        assert_eq!(policy.delay(10), Duration::from_secs(60));
        assert_eq!(policy.delay(5000), Duration::from_secs(60));
    }

    proptest! {
        /// Jitter only ever shortens a delay, never below `(1 − jitter) × delay`, and delays never
        /// shrink from one retry to the next.
        #[test]
        fn jitter_stays_within_bounds(retry in 1u32..20, unit in 0.0f64..1.0, jitter in 0.0f64..1.0) {
            let policy = RetryPolicy { jitter, max_retries: 20, ..RetryPolicy::default() };
            let base = policy.delay(retry);
            let got = policy.jittered_delay(retry, unit);
            prop_assert!(got <= base);
            prop_assert!(got.as_secs_f64() >= base.as_secs_f64() * (1.0 - jitter) - 1e-6);
            prop_assert!(policy.delay(retry + 1) >= base);
        }
    }
}
