//! Task lifecycle, retry and resume.
//!
//! An attempt moves `scheduled → running → succeeded | failed | cancelled`,
//! and `running → interrupted` when [`Kernel::resume`] finds it running
//! after a crash. Each change is an event with its time and the worker id.
//! A transition not in that graph is [`Error::InvalidTransition`]. The
//! check reads the current status, then appends: two workers racing on one
//! attempt can both pass it (one attempt has one worker in the workflow
//! systems this serves).

use std::time::Duration;

use waymark_engine::{EventBody, Lsn, TaskRecord, TaskStatus};

use crate::error::{Error, Result};
use crate::kernel::Kernel;
use crate::task_ref::{RunRef, TaskRef};

fn name(status: Option<&TaskStatus>) -> &'static str {
    status.map_or("none", TaskStatus::name)
}

/// Whether an attempt may go from `from` to `to`.
fn allowed(from: Option<&TaskStatus>, to: &TaskStatus) -> bool {
    use TaskStatus as S;
    matches!(
        (from, to),
        (None, S::Scheduled | S::Running | S::Cancelled)
            | (Some(S::Scheduled), S::Running | S::Cancelled)
            | (
                Some(S::Running),
                S::Succeeded { .. } | S::Failed { .. } | S::Cancelled | S::Interrupted
            )
    )
}

/// One task's state after a crash, from [`Kernel::resume`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskResume {
    /// The task's latest attempt.
    pub ti: TaskRef,
    /// Its status (`Interrupted` if it was running).
    pub status: TaskStatus,
    /// Whether this resume found it running and recorded it as interrupted.
    pub interrupted: bool,
}

/// A run's tasks after a crash: what a scheduler needs to skip finished
/// tasks ([`RunState::succeeded`]), retry interrupted and failed ones
/// ([`RunState::to_retry`]) and start scheduled ones
/// ([`RunState::scheduled`]). Cancelled tasks are in none of the three.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunState {
    /// Every task with a status, by task id.
    pub tasks: Vec<TaskResume>,
}

impl RunState {
    /// The tasks whose latest attempt succeeded.
    pub fn succeeded(&self) -> impl Iterator<Item = &TaskResume> {
        self.tasks
            .iter()
            .filter(|t| matches!(t.status, TaskStatus::Succeeded { .. }))
    }

    /// The tasks scheduled and not started: start them as they are (their
    /// attempt is numbered already; a crash after `clear_for_retry` and
    /// `schedule` but before `start` leaves a task here).
    pub fn scheduled(&self) -> impl Iterator<Item = &TaskResume> {
        self.tasks
            .iter()
            .filter(|t| matches!(t.status, TaskStatus::Scheduled))
    }

    /// The tasks to run again: interrupted or failed.
    pub fn to_retry(&self) -> impl Iterator<Item = &TaskResume> {
        self.tasks.iter().filter(|t| {
            matches!(
                t.status,
                TaskStatus::Interrupted | TaskStatus::Failed { .. }
            )
        })
    }
}

impl Kernel {
    /// A task's lifecycle: latest try, status, every attempt with its
    /// timings and worker. `None` if it never had a status.
    ///
    /// # Errors
    ///
    /// The backend's read errors.
    pub fn task(&self, ti: &TaskRef) -> Result<Option<TaskRecord>> {
        self.backend().task(&ti.task_scope())
    }

    /// Moves attempt `ti` to `to`, checking the transition.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidTransition`]; the backend's errors.
    pub fn transition(&self, ti: &TaskRef, to: TaskStatus) -> Result<Lsn> {
        let record = self.task(ti)?;
        let from = record.as_ref().and_then(|r| {
            r.attempts
                .iter()
                .find(|a| a.try_number == ti.try_number())
                .map(|a| a.status.clone())
        });
        if !allowed(from.as_ref(), &to) {
            return Err(Error::InvalidTransition {
                task: ti.to_string(),
                from: name(from.as_ref()),
                to: name(Some(&to)),
            });
        }
        self.backend()
            .append(vec![waymark_engine::Event::now(EventBody::TaskStatus {
                attempt: ti.attempt_scope(),
                status: to,
                worker: self.worker_id().into(),
            })])
    }

    /// Marks attempt `ti` scheduled.
    ///
    /// # Errors
    ///
    /// As [`Kernel::transition`].
    pub fn schedule(&self, ti: &TaskRef) -> Result<Lsn> {
        self.transition(ti, TaskStatus::Scheduled)
    }

    /// Marks attempt `ti` running.
    ///
    /// # Errors
    ///
    /// As [`Kernel::transition`].
    pub fn start(&self, ti: &TaskRef) -> Result<Lsn> {
        self.transition(ti, TaskStatus::Running)
    }

    /// Marks attempt `ti` succeeded with `result`.
    ///
    /// # Errors
    ///
    /// As [`Kernel::transition`].
    pub fn succeed(&self, ti: &TaskRef, result: impl Into<Vec<u8>>) -> Result<Lsn> {
        self.transition(
            ti,
            TaskStatus::Succeeded {
                result: result.into(),
            },
        )
    }

    /// Marks attempt `ti` failed with an error message and a kind (what a
    /// [`RetryPolicy`] decides on).
    ///
    /// # Errors
    ///
    /// As [`Kernel::transition`].
    pub fn fail(
        &self,
        ti: &TaskRef,
        error: impl Into<String>,
        kind: impl Into<String>,
    ) -> Result<Lsn> {
        self.transition(
            ti,
            TaskStatus::Failed {
                error: error.into(),
                kind: kind.into(),
            },
        )
    }

    /// Marks attempt `ti` cancelled.
    ///
    /// # Errors
    ///
    /// As [`Kernel::transition`].
    pub fn cancel(&self, ti: &TaskRef) -> Result<Lsn> {
        self.transition(ti, TaskStatus::Cancelled)
    }

    /// Clears the attempt state of every attempt of `ti`'s task (one event:
    /// the log keeps what was there) and returns the next attempt's ref.
    /// Task state is kept.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownTask`] if the task has no status and no state; the
    /// backend's errors.
    pub fn clear_for_retry(&self, ti: &TaskRef) -> Result<TaskRef> {
        let record = self.task(ti)?;
        let scope = ti.task_scope();
        if record.is_none()
            && self.backend().task_attempt_entries(&scope)?.is_empty()
            && self.backend().task_state_entries(&scope)?.is_empty()
        {
            return Err(Error::UnknownTask {
                task: ti.to_string(),
            });
        }
        let latest = record.map_or(0, |r| r.latest_try);
        // Checked before anything is written: a task at the last try
        // number has no next attempt.
        let next = ti.with_try(latest.max(ti.try_number()).checked_add(1).ok_or_else(|| {
            Error::InvalidRef(format!("{ti}: no try number after {}", u32::MAX))
        })?)?;
        self.backend()
            .append(vec![waymark_engine::Event::now(EventBody::ClearTask {
                task: ti.task_scope(),
            })])?;
        Ok(next)
    }

    /// After a crash: every task of `run` with its latest attempt and
    /// status. Attempts found running are recorded as interrupted (one
    /// atomic batch) and reported so.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownRun`] if the run has no record; the backend's errors.
    pub fn resume(&self, run: &RunRef) -> Result<RunState> {
        if self.backend().run(&run.scope())?.is_none() {
            return Err(Error::UnknownRun {
                run: run.to_string(),
            });
        }
        let mut tasks = Vec::new();
        let mut interrupt = Vec::new();
        for (task_id, record) in self.backend().tasks(&run.scope())? {
            let ti = run.task(task_id)?.with_try(record.latest_try)?;
            let running = matches!(record.status, TaskStatus::Running);
            if running {
                interrupt.push(waymark_engine::Event::now(EventBody::TaskStatus {
                    attempt: ti.attempt_scope(),
                    status: TaskStatus::Interrupted,
                    worker: self.worker_id().into(),
                }));
            }
            tasks.push(TaskResume {
                ti,
                status: if running {
                    TaskStatus::Interrupted
                } else {
                    record.status
                },
                interrupted: running,
            });
        }
        if !interrupt.is_empty() {
            self.backend().append(interrupt)?;
        }
        tasks.sort_by(|a, b| a.ti.task_id().cmp(b.ti.task_id()));
        Ok(RunState { tasks })
    }
}

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
