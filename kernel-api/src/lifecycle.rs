//! Task lifecycle, retry and resume.
//!
//! An attempt moves `scheduled → running → succeeded | failed | cancelled`
//! (`cancelled` also from no status or `scheduled`), and `running →
//! interrupted` when [`Kernel::resume`] finds it running after a crash.
//! Each change is an event with its time and the worker id.
//!
//! Every decision here is one conditional batch: the backend checks the
//! conditions (the attempt's status, its task's latest try, its run's
//! status) against the state every earlier batch left, and writes the
//! batch only if they hold. So of N threads racing one transition exactly
//! one wins; the others get [`Error::InvalidTransition`] naming the status
//! the winner left. Transitions of unrelated tasks do not wait for each
//! other (they share a group commit).
//!
//! The rules beyond each attempt's own graph:
//! - an attempt is scheduled or started only while no later attempt of its
//!   task exists ([`Error::NotLatestAttempt`]);
//! - a task of a paused run does not start ([`Error::RunPaused`]);
//! - a retry ([`Kernel::clear_for_retry`]) takes the latest attempt once it
//!   has finished (or a task with state and no status), clears the attempt
//!   state of every attempt, and schedules the next one, in one batch: of
//!   racing retries, one makes the next attempt.

use waymark_engine::{
    Condition, Event, EventBody, Found, Lsn, RunStatus, TaskRecord, TaskStatus, TaskStatusKind,
};

use crate::error::{Error, Result};
use crate::kernel::Kernel;
use crate::task_ref::{RunRef, TaskRef};

/// How many times a decision that keeps meeting concurrent changes is
/// taken again before [`Error::Contended`]: each refusal means another
/// writer changed the state in between, so a few suffice.
pub(crate) const DECISION_TRIES: u32 = 64;

/// The statuses an attempt may move to `to` from (`None`: no status yet).
pub fn allowed_from(to: TaskStatusKind) -> &'static [Option<TaskStatusKind>] {
    use TaskStatusKind as K;
    match to {
        K::Scheduled => &[None],
        K::Running => &[None, Some(K::Scheduled)],
        K::Succeeded | K::Failed | K::Interrupted => &[Some(K::Running)],
        K::Cancelled => &[None, Some(K::Scheduled), Some(K::Running)],
    }
}

/// The run statuses in which a task may start: a run that is not paused
/// and not over (and a run with no record yet).
const STARTABLE: [Option<RunStatus>; 3] =
    [None, Some(RunStatus::Created), Some(RunStatus::Running)];

/// The conditions under which attempt `ti` may move to `to`.
///
/// A transition that may make an attempt (to `scheduled`, `running` or
/// `cancelled`, from no status) also requires that no later attempt exists
/// and that no other attempt of the task is live: a task has at most one
/// live attempt, its latest, so a second worker never runs it beside the
/// first, and [`Kernel::resume`], which looks at the latest attempt, finds
/// every running one.
pub(crate) fn transition_conditions(ti: &TaskRef, to: TaskStatusKind) -> Vec<Condition> {
    let mut conditions = vec![Condition::AttemptStatus {
        attempt: ti.attempt_scope(),
        any_of: allowed_from(to).to_vec(),
    }];
    if matches!(
        to,
        TaskStatusKind::Scheduled | TaskStatusKind::Running | TaskStatusKind::Cancelled
    ) {
        conditions.push(Condition::LatestTry {
            task: ti.task_scope(),
            min: 0,
            max: ti.try_number(),
        });
        conditions.push(Condition::NoOtherLiveAttempt {
            attempt: ti.attempt_scope(),
        });
    }
    if to == TaskStatusKind::Running {
        conditions.push(Condition::RunStatus {
            run: ti.run_scope(),
            any_of: STARTABLE.to_vec(),
        });
    }
    conditions
}

/// The error a failed transition condition means to the caller (`None`
/// for a finding none of its conditions makes: the conflict is reported
/// as it is).
pub(crate) fn transition_refusal(ti: &TaskRef, to: TaskStatusKind, found: Found) -> Option<Error> {
    Some(match found {
        Found::AttemptStatus(from) => Error::InvalidTransition {
            task: ti.to_string(),
            from,
            to,
        },
        Found::LatestTry(latest, _) => Error::NotLatestAttempt {
            task: ti.to_string(),
            latest,
        },
        Found::LiveAttempt(try_number, status) => Error::AttemptInProgress {
            task: ti.to_string(),
            try_number,
            status,
        },
        Found::RunStatus(Some(RunStatus::Paused)) => Error::RunPaused {
            run: ti.run_ref().to_string(),
        },
        Found::RunStatus(Some(status)) => Error::RunFinished {
            run: ti.run_ref().to_string(),
            status,
        },
        _ => return None,
    })
}

/// The status event of attempt `ti` moving to `to`.
pub(crate) fn status_event(ti: &TaskRef, to: TaskStatus, worker: &str) -> Event {
    Event::now(EventBody::TaskStatus {
        attempt: ti.attempt_scope(),
        status: to,
        worker: worker.into(),
    })
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
/// ([`RunState::scheduled`]), unless the run is paused
/// ([`RunState::is_paused`]). Cancelled tasks are in none of the three.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunState {
    /// The run's status when it was resumed (a run whose tasks alone
    /// created its record is `Created`).
    pub status: RunStatus,
    /// Every task with a status, by task id.
    pub tasks: Vec<TaskResume>,
    /// The LSN of the batch that recorded the interruptions, if this
    /// resume found tasks running.
    pub recorded: Option<Lsn>,
}

impl RunState {
    /// The tasks whose latest attempt succeeded.
    pub fn succeeded(&self) -> impl Iterator<Item = &TaskResume> {
        self.tasks
            .iter()
            .filter(|t| matches!(t.status, TaskStatus::Succeeded { .. }))
    }

    /// The tasks scheduled and not started: start them as they are (their
    /// attempt is numbered already; a crash after `clear_for_retry` but
    /// before `start` leaves a task here).
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

    /// Whether the run is paused: its tasks do not start until
    /// [`Kernel::resume_run`].
    pub fn is_paused(&self) -> bool {
        self.status == RunStatus::Paused
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

    /// Moves attempt `ti` to `to`, if the lifecycle allows it from the
    /// attempt's status when the batch's turn comes (see the module docs).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidTransition`] (with the status found),
    /// [`Error::NotLatestAttempt`] (scheduling or starting a superseded
    /// attempt), [`Error::RunPaused`] (starting a task of a paused run);
    /// the backend's errors.
    pub fn transition(&self, ti: &TaskRef, to: TaskStatus) -> Result<Lsn> {
        let kind = to.kind();
        self.append_guarded(
            transition_conditions(ti, kind),
            vec![status_event(ti, to, self.worker_id())],
            |found| transition_refusal(ti, kind, found),
        )
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

    /// Marks attempt `ti` succeeded with `result`. To write the attempt's
    /// last outputs in the same atomic step, use
    /// [`Kernel::succeed_with`] or a [`crate::Batch`].
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

    /// Marks attempt `ti` succeeded with `result` and sets `outputs` in its
    /// attempt state, in one atomic batch: after any crash both are there
    /// or neither, and a refused transition writes no output.
    ///
    /// ```
    /// use waymark_kernel::{Kernel, TaskRef};
    ///
    /// let kernel = Kernel::in_memory()?;
    /// let ti = TaskRef::new("acme", "documents", "run-42", "ocr", 1)?;
    /// kernel.start(&ti)?;
    /// kernel.succeed_with(&ti, b"ok".to_vec(), [("lines", b"Invoice 17".as_slice())])?;
    /// assert_eq!(kernel.context(ti).get("lines")?, Some(b"Invoice 17".to_vec()));
    /// # Ok::<(), waymark_kernel::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Kernel::transition`]; an empty key.
    pub fn succeed_with<K, V>(
        &self,
        ti: &TaskRef,
        result: impl Into<Vec<u8>>,
        outputs: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Lsn>
    where
        K: AsRef<str>,
        V: AsRef<[u8]>,
    {
        self.finish_with(
            ti,
            TaskStatus::Succeeded {
                result: result.into(),
            },
            outputs,
        )
    }

    /// Marks attempt `ti` failed with an error message and a kind (what a
    /// [`crate::RetryPolicy`] decides on).
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

    /// Marks attempt `ti` failed and sets `outputs` in its attempt state
    /// (its diagnostics: what it saw, where it stopped) in one atomic
    /// batch. A retry clears every attempt's attempt state: what the next
    /// attempt needs belongs in task state (a [`crate::Batch`] with
    /// `set_task_state` and `fail` writes both).
    ///
    /// # Errors
    ///
    /// As [`Kernel::transition`]; an empty key.
    pub fn fail_with<K, V>(
        &self,
        ti: &TaskRef,
        error: impl Into<String>,
        kind: impl Into<String>,
        outputs: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Lsn>
    where
        K: AsRef<str>,
        V: AsRef<[u8]>,
    {
        self.finish_with(
            ti,
            TaskStatus::Failed {
                error: error.into(),
                kind: kind.into(),
            },
            outputs,
        )
    }

    /// Sets `outputs` in `ti`'s attempt state and moves it to `to`, in one
    /// batch.
    fn finish_with<K, V>(
        &self,
        ti: &TaskRef,
        to: TaskStatus,
        outputs: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Lsn>
    where
        K: AsRef<str>,
        V: AsRef<[u8]>,
    {
        let ctx = self.context(ti.clone());
        let batch = outputs
            .into_iter()
            .fold(ctx.batch(), |b, (k, v)| b.set(k.as_ref(), v));
        let lsn = batch.transition(to).commit()?;
        Ok(lsn.expect("a batch with a transition is never empty"))
    }

    /// Marks attempt `ti` cancelled.
    ///
    /// # Errors
    ///
    /// As [`Kernel::transition`].
    pub fn cancel(&self, ti: &TaskRef) -> Result<Lsn> {
        self.transition(ti, TaskStatus::Cancelled)
    }

    /// Retries `ti`: clears the attempt state of every attempt of its task
    /// (one event: the log keeps what was there), schedules the next
    /// attempt, and returns its ref, all in one batch. Task state is kept.
    ///
    /// `ti` must be the task's latest attempt (or newer), and every attempt
    /// of the task finished: succeeded, failed, interrupted or cancelled
    /// (or the task has state and no status at all). The batch is
    /// conditional on exactly that, as read: of racing retries of one
    /// attempt, one makes the next attempt; the others read again and get
    /// [`Error::NotLatestAttempt`] naming it.
    ///
    /// ```
    /// use waymark_kernel::{Error, Kernel, TaskRef, TaskStatus};
    ///
    /// let kernel = Kernel::in_memory()?;
    /// let ti = TaskRef::new("acme", "documents", "run-42", "ocr", 1)?;
    /// kernel.start(&ti)?;
    /// assert!(matches!(kernel.clear_for_retry(&ti), Err(Error::NotRetryable { .. })));
    /// kernel.fail(&ti, "timeout", "transient")?;
    /// let next = kernel.clear_for_retry(&ti)?;
    /// assert_eq!(next.try_number(), 2);
    /// assert_eq!(kernel.task(&next)?.unwrap().status, TaskStatus::Scheduled);
    /// # Ok::<(), waymark_kernel::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::NotLatestAttempt`], [`Error::NotRetryable`] (an attempt of
    /// the task is scheduled or running), [`Error::UnknownTask`] if the
    /// task has no status and no state, [`Error::InvalidRef`] at the last
    /// try number, [`Error::Contended`]; the backend's errors. Nothing is
    /// written in any of these cases.
    pub fn clear_for_retry(&self, ti: &TaskRef) -> Result<TaskRef> {
        // Checked before anything is written: a task at the last try
        // number has no next attempt.
        let next = ti.with_try(ti.try_number().checked_add(1).ok_or_else(|| {
            Error::InvalidRef(format!("{ti}: no try number after {}", u32::MAX))
        })?)?;
        let task = ti.task_scope();
        for _ in 0..DECISION_TRIES {
            let record = self.task(ti)?;
            let latest = record.as_ref().map_or(0, |r| r.latest_try);
            if ti.try_number() < latest {
                return Err(Error::NotLatestAttempt {
                    task: ti.to_string(),
                    latest,
                });
            }
            if let Some(live) = record
                .as_ref()
                .and_then(|r| r.attempts.iter().find(|a| !a.status.kind().is_final()))
            {
                return Err(Error::NotRetryable {
                    task: ti.with_try(live.try_number)?.to_string(),
                    status: live.status.kind(),
                });
            }
            let mut conditions = vec![
                // Nobody made another attempt since the record was read,
                Condition::LatestTry {
                    task: task.clone(),
                    min: latest,
                    max: latest,
                },
                // and every one made is finished.
                Condition::NoOtherLiveAttempt {
                    attempt: next.attempt_scope(),
                },
            ];
            if record.is_none() {
                conditions.push(Condition::TaskKnown { task: task.clone() });
            }
            let events = vec![
                Event::now(EventBody::ClearTask { task: task.clone() }),
                status_event(&next, TaskStatus::Scheduled, self.worker_id()),
            ];
            match self.backend().append(conditions, events) {
                Ok(_) => return Ok(next),
                Err(Error::Conflict {
                    found: Found::TaskUnknown,
                    ..
                }) => {
                    return Err(Error::UnknownTask {
                        task: ti.to_string(),
                    });
                }
                // Another writer changed the task's attempts since the
                // read: decide again on what it left.
                Err(Error::Conflict { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Err(Error::Contended {
            what: format!("retry of {ti}"),
            tries: DECISION_TRIES,
        })
    }

    /// After a crash: every task of `run` with its latest attempt and
    /// status, and the run's status. Attempts found running are recorded
    /// as interrupted, in one atomic batch whose every interruption is
    /// conditional on the attempt still running: an attempt that finished
    /// in the meantime keeps its status, and of racing resumes one records
    /// each interruption. The other statuses reported are as read, just
    /// before that batch.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownRun`] if the run has no record; [`Error::Contended`]
    /// if the run's tasks kept changing under every try; the backend's
    /// errors.
    pub fn resume(&self, run: &RunRef) -> Result<RunState> {
        for _ in 0..DECISION_TRIES {
            let Some(record) = self.backend().run(&run.scope())? else {
                return Err(Error::UnknownRun {
                    run: run.to_string(),
                });
            };
            let mut tasks = Vec::new();
            let mut conditions = Vec::new();
            let mut interrupt = Vec::new();
            for (task_id, record) in self.backend().tasks(&run.scope())? {
                let ti = run.task(task_id)?.with_try(record.latest_try)?;
                let running = matches!(record.status, TaskStatus::Running);
                if running {
                    conditions.extend(transition_conditions(&ti, TaskStatusKind::Interrupted));
                    interrupt.push(status_event(&ti, TaskStatus::Interrupted, self.worker_id()));
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
            tasks.sort_by(|a, b| a.ti.task_id().cmp(b.ti.task_id()));
            let mut state = RunState {
                status: record.status,
                tasks,
                recorded: None,
            };
            if interrupt.is_empty() {
                return Ok(state);
            }
            match self.backend().append(conditions, interrupt) {
                Ok(lsn) => {
                    state.recorded = Some(lsn);
                    return Ok(state);
                }
                // An attempt finished (or another resume recorded it) in
                // the meantime: read again.
                Err(Error::Conflict { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Err(Error::Contended {
            what: format!("resume of run {run}"),
            tries: DECISION_TRIES,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The graph as a table: every pair (from, to) the lifecycle allows.
    #[test]
    fn the_transition_graph() {
        use TaskStatusKind as K;
        let allowed: Vec<(Option<K>, K)> = K::ALL
            .into_iter()
            .flat_map(|to| allowed_from(to).iter().map(move |from| (*from, to)))
            .collect();
        assert_eq!(
            allowed,
            [
                (None, K::Scheduled),
                (None, K::Running),
                (Some(K::Scheduled), K::Running),
                (Some(K::Running), K::Succeeded),
                (Some(K::Running), K::Failed),
                (Some(K::Running), K::Interrupted),
                (None, K::Cancelled),
                (Some(K::Scheduled), K::Cancelled),
                (Some(K::Running), K::Cancelled),
            ]
        );
        for final_kind in K::ALL.into_iter().filter(|k| k.is_final()) {
            for to in K::ALL {
                assert!(
                    !allowed_from(to).contains(&Some(final_kind)),
                    "{final_kind} is final, yet {to} may follow it"
                );
            }
        }
    }
}
