//! The retry policy helper: how many attempts, and how long between them.

use std::time::Duration;

/// How long to wait between attempts.
#[derive(Clone, Debug, PartialEq)]
pub enum Backoff {
    /// The same delay every time.
    Fixed(Duration),
    /// `base + step × (attempt − 1)`.
    Linear {
        /// The first delay.
        base: Duration,
        /// Added per attempt.
        step: Duration,
    },
    /// `base × factor^(attempt − 1)`.
    Exponential {
        /// The first delay.
        base: Duration,
        /// The growth per attempt.
        factor: f64,
    },
}

/// Answers "retry? after how long?" for a failed attempt.
///
/// ```
/// use std::time::Duration;
/// use waymark_kernel::{Backoff, RetryPolicy};
///
/// let policy = RetryPolicy::new(3)
///     .backoff(Backoff::Exponential { base: Duration::from_secs(1), factor: 2.0 })
///     .max_delay(Duration::from_secs(30))
///     .retry_only(["transient"]);
/// assert_eq!(policy.delay_without_jitter(1, "transient"), Some(Duration::from_secs(1)));
/// assert_eq!(policy.delay_without_jitter(2, "transient"), Some(Duration::from_secs(2)));
/// assert_eq!(policy.delay_without_jitter(3, "transient"), None); // 3 attempts made
/// assert_eq!(policy.delay_without_jitter(1, "bad-input"), None); // not retryable
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    max_attempts: u32,
    backoff: Backoff,
    max_delay: Duration,
    jitter: f64,
    retryable: Option<Vec<String>>,
}

impl RetryPolicy {
    /// At most `max_attempts` attempts in all (1: never retry). Defaults: a
    /// fixed 1 s backoff, max delay 1 hour, no jitter, every kind
    /// retryable.
    pub fn new(max_attempts: u32) -> RetryPolicy {
        RetryPolicy {
            max_attempts,
            backoff: Backoff::Fixed(Duration::from_secs(1)),
            max_delay: Duration::from_secs(3600),
            jitter: 0.0,
            retryable: None,
        }
    }

    /// The backoff.
    pub fn backoff(mut self, backoff: Backoff) -> RetryPolicy {
        self.backoff = backoff;
        self
    }

    /// The longest delay (before jitter).
    pub fn max_delay(mut self, max_delay: Duration) -> RetryPolicy {
        self.max_delay = max_delay;
        self
    }

    /// Random spread: the delay is multiplied by a factor drawn from
    /// `[1 − jitter, 1 + jitter]`; clamped to `[0, 1]`.
    pub fn jitter(mut self, jitter: f64) -> RetryPolicy {
        self.jitter = jitter.clamp(0.0, 1.0);
        self
    }

    /// Only failures of these kinds are retried.
    pub fn retry_only<I, S>(mut self, kinds: I) -> RetryPolicy
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.retryable = Some(kinds.into_iter().map(Into::into).collect());
        self
    }

    /// After attempt `attempt` (1-based) failed with `kind`: `None` if it
    /// should not be retried, else the delay before the next attempt
    /// (without jitter).
    pub fn delay_without_jitter(&self, attempt: u32, kind: &str) -> Option<Duration> {
        if attempt >= self.max_attempts {
            return None;
        }
        if let Some(kinds) = &self.retryable
            && !kinds.iter().any(|k| k == kind)
        {
            return None;
        }
        let n = attempt.saturating_sub(1);
        let delay = match &self.backoff {
            Backoff::Fixed(d) => *d,
            Backoff::Linear { base, step } => base.saturating_add(step.saturating_mul(n)),
            Backoff::Exponential { base, factor } => {
                let secs =
                    base.as_secs_f64() * factor.max(0.0).powi(i32::try_from(n).unwrap_or(i32::MAX));
                Duration::try_from_secs_f64(secs).unwrap_or(self.max_delay)
            }
        };
        Some(delay.min(self.max_delay))
    }

    /// [`RetryPolicy::delay_without_jitter`] with jitter applied, drawing
    /// from `unit`, a number in `[0, 1)` (pass a random one).
    pub fn delay(&self, attempt: u32, kind: &str, unit: f64) -> Option<Duration> {
        let d = self.delay_without_jitter(attempt, kind)?;
        let factor = 1.0 + self.jitter * (2.0 * unit.clamp(0.0, 1.0) - 1.0);
        // A delay near `Duration::MAX` times a factor over 1 does not fit
        // a `Duration`: it saturates rather than panics.
        Some(
            Duration::try_from_secs_f64(d.as_secs_f64() * factor.max(0.0)).unwrap_or(Duration::MAX),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_policy_answers_retry_and_delay() {
        let secs = Duration::from_secs;
        let fixed = RetryPolicy::new(3).backoff(Backoff::Fixed(secs(5)));
        assert_eq!(fixed.delay_without_jitter(1, "any"), Some(secs(5)));
        assert_eq!(fixed.delay_without_jitter(2, "any"), Some(secs(5)));
        assert_eq!(fixed.delay_without_jitter(3, "any"), None);
        let linear = RetryPolicy::new(10).backoff(Backoff::Linear {
            base: secs(1),
            step: secs(2),
        });
        assert_eq!(linear.delay_without_jitter(4, "x"), Some(secs(7)));
        let exp = RetryPolicy::new(50)
            .backoff(Backoff::Exponential {
                base: secs(1),
                factor: 2.0,
            })
            .max_delay(secs(60));
        assert_eq!(exp.delay_without_jitter(3, "x"), Some(secs(4)));
        assert_eq!(exp.delay_without_jitter(40, "x"), Some(secs(60)), "capped");
        let kinds = RetryPolicy::new(5).retry_only(["transient", "timeout"]);
        assert!(kinds.delay_without_jitter(1, "timeout").is_some());
        assert!(kinds.delay_without_jitter(1, "bad-input").is_none());
        let jittered = RetryPolicy::new(5)
            .backoff(Backoff::Fixed(secs(10)))
            .jitter(0.5);
        assert_eq!(jittered.delay(1, "x", 0.0), Some(secs(5)));
        assert_eq!(jittered.delay(1, "x", 0.5), Some(secs(10)));
        assert!(jittered.delay(1, "x", 0.999).unwrap() < secs(15));
        // Jitter over the longest delay saturates; it used to panic in
        // `Duration::mul_f64`.
        let huge = RetryPolicy::new(5)
            .backoff(Backoff::Fixed(Duration::MAX))
            .max_delay(Duration::MAX)
            .jitter(0.5);
        assert_eq!(huge.delay(1, "x", 0.99), Some(Duration::MAX));
        assert!(huge.delay(1, "x", 0.0).unwrap() < Duration::MAX);
        assert_eq!(
            RetryPolicy::new(1).delay_without_jitter(1, "x"),
            None,
            "one attempt: no retry"
        );
    }
}
