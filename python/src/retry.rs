//! `RetryPolicy`: how many attempts, and how long between them.

use std::time::Duration;

use pyo3::prelude::*;
use waymark_kernel::{Backoff, RetryPolicy};

/// Answers "retry? after how long?" for a failed attempt.
///
/// ``RetryPolicy(3, backoff="exponential", base=1.0, factor=2.0,
/// max_delay=30.0, retry_only=["transient"])``; times in seconds. Backoff
/// ``"fixed"`` waits ``base`` every time, ``"linear"`` ``base + step ×
/// (attempt − 1)``, ``"exponential"`` ``base × factor^(attempt − 1)``,
/// capped at ``max_delay``; then ``jitter`` (0 to 1) spreads each delay by
/// up to that fraction either way (so ``delay`` may exceed the cap by it).
#[pyclass(module = "waymark", name = "RetryPolicy", frozen)]
pub(crate) struct PyRetryPolicy {
    inner: RetryPolicy,
    max_attempts: u32,
}

fn seconds(name: &str, s: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(s).map_err(|_| {
        crate::errors::invalid(format!(
            "{name} must be a finite, non-negative number of seconds; got {s}"
        ))
    })
}

#[pymethods]
impl PyRetryPolicy {
    #[new]
    #[pyo3(signature = (max_attempts, *, backoff = "fixed", base = 1.0, step = 1.0, factor = 2.0, max_delay = 3600.0, jitter = 0.0, retry_only = None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        max_attempts: u32,
        backoff: &str,
        base: f64,
        step: f64,
        factor: f64,
        max_delay: f64,
        jitter: f64,
        retry_only: Option<Vec<String>>,
    ) -> PyResult<PyRetryPolicy> {
        if max_attempts == 0 {
            return Err(crate::errors::invalid(
                "max_attempts counts the first attempt: at least 1",
            ));
        }
        if !(0.0..=1.0).contains(&jitter) {
            return Err(crate::errors::invalid(format!(
                "jitter is a fraction between 0 and 1; got {jitter}"
            )));
        }
        let base = seconds("base", base)?;
        let backoff = match backoff {
            "fixed" => Backoff::Fixed(base),
            "linear" => Backoff::Linear {
                base,
                step: seconds("step", step)?,
            },
            "exponential" if factor.is_finite() && factor >= 0.0 => {
                Backoff::Exponential { base, factor }
            }
            "exponential" => {
                return Err(crate::errors::invalid(format!(
                    "factor must be finite and non-negative; got {factor}"
                )));
            }
            other => {
                return Err(crate::errors::invalid(format!(
                    "unknown backoff {other:?}: use fixed, linear or exponential"
                )));
            }
        };
        let mut inner = RetryPolicy::new(max_attempts)
            .backoff(backoff)
            .max_delay(seconds("max_delay", max_delay)?)
            .jitter(jitter);
        if let Some(kinds) = retry_only {
            inner = inner.retry_only(kinds);
        }
        Ok(PyRetryPolicy {
            inner,
            max_attempts,
        })
    }

    /// After attempt ``attempt`` (1-based) failed with ``kind``: ``None`` if
    /// it should not be retried, else the seconds to wait before the next
    /// attempt, jitter applied (``unit``, in [0, 1), draws it; by default a
    /// fraction taken from the clock's nanoseconds).
    #[pyo3(signature = (attempt, kind = "error", unit = None))]
    fn delay(&self, attempt: u32, kind: &str, unit: Option<f64>) -> Option<f64> {
        let unit = unit.unwrap_or_else(|| {
            // A unit from the clock's nanoseconds: jitter needs spread, not
            // a cryptographic draw.
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            f64::from(nanos) / 1e9
        });
        self.inner
            .delay(attempt, kind, unit)
            .map(|d| d.as_secs_f64())
    }

    /// ``delay`` without jitter.
    #[pyo3(signature = (attempt, kind = "error"))]
    fn delay_without_jitter(&self, attempt: u32, kind: &str) -> Option<f64> {
        self.inner
            .delay_without_jitter(attempt, kind)
            .map(|d| d.as_secs_f64())
    }

    /// Whether attempt ``attempt`` that failed with ``kind`` is retried.
    #[pyo3(signature = (attempt, kind = "error"))]
    fn should_retry(&self, attempt: u32, kind: &str) -> bool {
        self.inner.delay_without_jitter(attempt, kind).is_some()
    }

    /// At most this many attempts in all.
    #[getter]
    fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    fn __repr__(&self) -> String {
        format!("RetryPolicy(max_attempts={})", self.max_attempts)
    }
}
