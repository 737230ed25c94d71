//! Conditions: what must hold of the views for a batch to be written.
//!
//! A decision taken from state and the write it leads to must be one atomic
//! step: of two workers racing to succeed one attempt, exactly one may win.
//! [`crate::Engine::append_if`] takes a batch with a list of conditions on
//! the views; the writer thread checks them **in LSN order**, after every
//! earlier batch (of earlier groups and earlier in its own group) and
//! before the batch is framed. A batch whose conditions hold is written
//! like any other; one whose condition fails is never written, and its
//! caller gets [`crate::Error::Conflict`] saying what the views held.
//!
//! Conditions are data, not closures, so that another backend can check the
//! same contract: a SQL backend reads the rows a condition names with
//! `SELECT … FOR UPDATE` inside the transaction that inserts the batch.
//!
//! How the writer keeps group commit: a condition names what it reads (one
//! task, one run's status, one shared variable, one checkpoint), and
//! [`Condition::may_affect`] says whether an event could change it. The
//! writer checks a condition against the views at once unless a batch
//! written before it, and not yet applied to the views, may affect it: then
//! it waits for that batch (a batch of an earlier group is applied moments
//! after its sync; one earlier in the same group is written and synced
//! first, and the group goes on after it). Conditions on unrelated tasks
//! never wait for each other, so they share one `fdatasync`.

use std::fmt;

use crate::event::{AttemptScope, Event, EventBody, RunScope, RunStatus, TaskScope, TaskStatus};

/// The status of a task attempt without its payload: what a condition
/// compares and a conflict reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TaskStatusKind {
    /// [`TaskStatus::Scheduled`].
    Scheduled,
    /// [`TaskStatus::Running`].
    Running,
    /// [`TaskStatus::Succeeded`].
    Succeeded,
    /// [`TaskStatus::Failed`].
    Failed,
    /// [`TaskStatus::Interrupted`].
    Interrupted,
    /// [`TaskStatus::Cancelled`].
    Cancelled,
}

impl TaskStatusKind {
    /// Every kind, in lifecycle order.
    pub const ALL: [TaskStatusKind; 6] = [
        TaskStatusKind::Scheduled,
        TaskStatusKind::Running,
        TaskStatusKind::Succeeded,
        TaskStatusKind::Failed,
        TaskStatusKind::Interrupted,
        TaskStatusKind::Cancelled,
    ];

    /// The kind's name, as [`TaskStatus::name`] spells it.
    pub fn name(self) -> &'static str {
        match self {
            TaskStatusKind::Scheduled => "scheduled",
            TaskStatusKind::Running => "running",
            TaskStatusKind::Succeeded => "succeeded",
            TaskStatusKind::Failed => "failed",
            TaskStatusKind::Interrupted => "interrupted",
            TaskStatusKind::Cancelled => "cancelled",
        }
    }

    /// Whether an attempt in this status is finished: nothing moves it on.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            TaskStatusKind::Succeeded
                | TaskStatusKind::Failed
                | TaskStatusKind::Interrupted
                | TaskStatusKind::Cancelled
        )
    }
}

impl fmt::Display for TaskStatusKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl TaskStatus {
    /// The status without its payload.
    pub fn kind(&self) -> TaskStatusKind {
        match self {
            TaskStatus::Scheduled => TaskStatusKind::Scheduled,
            TaskStatus::Running => TaskStatusKind::Running,
            TaskStatus::Succeeded { .. } => TaskStatusKind::Succeeded,
            TaskStatus::Failed { .. } => TaskStatusKind::Failed,
            TaskStatus::Interrupted => TaskStatusKind::Interrupted,
            TaskStatus::Cancelled => TaskStatusKind::Cancelled,
        }
    }
}

/// What must hold of the views, when a batch's turn comes, for it to be
/// written. See the [module docs](self).
///
/// ```
/// use waymark_engine::{AttemptScope, Condition, Engine, Error, Event, EventBody, Found};
/// use waymark_engine::{RunScope, TaskScope, TaskStatus, TaskStatusKind};
///
/// let dir = tempfile::tempdir()?;
/// let engine = Engine::open(dir.path())?;
/// let attempt = AttemptScope {
///     task: TaskScope {
///         run: RunScope { tenant: "acme".into(), dag: "docs".into(), run: "r1".into() },
///         task: "ocr".into(),
///     },
///     try_number: 1,
/// };
/// let start = || {
///     let event = Event::now(EventBody::TaskStatus {
///         attempt: attempt.clone(),
///         status: TaskStatus::Running,
///         worker: "w1".into(),
///     });
///     // Start only an attempt that has no status yet.
///     let unstarted = Condition::AttemptStatus { attempt: attempt.clone(), any_of: vec![None] };
///     engine.append_if(vec![unstarted], vec![event])
/// };
/// assert!(start().is_ok());
/// match start() {
///     Err(Error::Conflict { found, .. }) => {
///         assert_eq!(found, Found::AttemptStatus(Some(TaskStatusKind::Running)));
///     }
///     other => panic!("a second start must conflict: {other:?}"),
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Condition {
    /// The attempt's status is one of `any_of` (`None` in the list: the
    /// attempt has no status).
    AttemptStatus {
        /// The task attempt.
        attempt: AttemptScope,
        /// The statuses allowed.
        any_of: Vec<Option<TaskStatusKind>>,
    },
    /// The task's latest try number (0 when no attempt of it has a status)
    /// is within `min..=max`.
    LatestTry {
        /// The task.
        task: TaskScope,
        /// The lowest allowed.
        min: u32,
        /// The highest allowed.
        max: u32,
    },
    /// No attempt of the task but `attempt` is scheduled or running: the
    /// task has at most one live attempt, and it is this one.
    NoOtherLiveAttempt {
        /// The attempt that may be live.
        attempt: AttemptScope,
    },
    /// The task is known: it has a status, attempt state or task state.
    TaskKnown {
        /// The task.
        task: TaskScope,
    },
    /// The run's status is one of `any_of` (`None` in the list: the run has
    /// no record).
    RunStatus {
        /// The run.
        run: RunScope,
        /// The statuses allowed.
        any_of: Vec<Option<RunStatus>>,
    },
    /// The run is known: it has a record, or any state, shared variable or
    /// checkpoint.
    RunKnown {
        /// The run.
        run: RunScope,
    },
    /// The run-shared variable is absent or mutable.
    SharedWritable {
        /// The run.
        run: RunScope,
        /// The variable's key.
        key: String,
    },
    /// The run's checkpoint `name` is the one taken by the batch at `lsn`
    /// (`None`: the run has no checkpoint of that name).
    CheckpointAt {
        /// The run.
        run: RunScope,
        /// The checkpoint's name.
        name: String,
        /// The LSN of the `Checkpoint` event it must have been taken by.
        lsn: Option<u64>,
    },
}

/// What the views held when a [`Condition`] failed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Found {
    /// The attempt's status (`None`: it has none).
    AttemptStatus(Option<TaskStatusKind>),
    /// The task's latest try (0: no attempt has a status), and that
    /// attempt's status.
    LatestTry(u32, Option<TaskStatusKind>),
    /// Another attempt of the task (this try) is scheduled or running.
    LiveAttempt(u32, TaskStatusKind),
    /// The task has no status and no state.
    TaskUnknown,
    /// The run's status (`None`: it has no record).
    RunStatus(Option<RunStatus>),
    /// The run has no record and no state.
    RunUnknown,
    /// The shared variable is set and immutable.
    SharedImmutable,
    /// The checkpoint of that name was taken at this LSN (`None`: there is
    /// none).
    Checkpoint(Option<u64>),
}

impl Condition {
    /// Whether applying `event` could change whether this condition holds.
    /// A `true` for an event that in fact changes nothing is safe (the
    /// writer waits for it); a `false` for one that could is a bug.
    pub fn may_affect(&self, event: &Event) -> bool {
        let body = &event.body;
        match self {
            Condition::AttemptStatus {
                attempt: AttemptScope { task, .. },
                ..
            }
            | Condition::NoOtherLiveAttempt {
                attempt: AttemptScope { task, .. },
            }
            | Condition::LatestTry { task, .. } => match body {
                EventBody::TaskStatus { attempt, .. } => attempt.task == *task,
                EventBody::PurgeRun { run } => *run == task.run,
                _ => false,
            },
            Condition::TaskKnown { task } => match body {
                EventBody::Put { attempt, .. } => attempt.task == *task,
                EventBody::Delete { attempt, .. } | EventBody::TaskStatus { attempt, .. } => {
                    attempt.task == *task
                }
                EventBody::ClearTask { task: t }
                | EventBody::TaskPut { task: t, .. }
                | EventBody::TaskDelete { task: t, .. } => t == task,
                EventBody::PurgeRun { run } | EventBody::RestoreCheckpoint { run, .. } => {
                    *run == task.run
                }
                _ => false,
            },
            Condition::RunStatus { run, any_of } => match body {
                EventBody::RunStatus { run: r, .. } | EventBody::PurgeRun { run: r } => r == run,
                // A task's first status makes its run's record, `Created`:
                // that changes the condition only if it tells "no record"
                // from `Created`.
                EventBody::TaskStatus { attempt, .. } => {
                    attempt.task.run == *run
                        && any_of.contains(&None) != any_of.contains(&Some(RunStatus::Created))
                }
                _ => false,
            },
            Condition::RunKnown { run } => event.run() == run,
            Condition::SharedWritable { run, key } => match body {
                EventBody::SharedPut { run: r, key: k, .. } => r == run && k == key,
                EventBody::RestoreCheckpoint { run: r, .. } | EventBody::PurgeRun { run: r } => {
                    r == run
                }
                _ => false,
            },
            Condition::CheckpointAt { run, name, .. } => match body {
                EventBody::Checkpoint { run: r, name: n }
                | EventBody::DeleteCheckpoint { run: r, name: n } => r == run && n == name,
                EventBody::PurgeRun { run: r } => r == run,
                _ => false,
            },
        }
    }

    /// Whether any event of `batches` may affect this condition.
    pub(crate) fn depends_on<'a>(&self, mut batches: impl Iterator<Item = &'a [Event]>) -> bool {
        batches.any(|events| events.iter().any(|e| self.may_affect(e)))
    }
}

fn list<T>(
    f: &mut fmt::Formatter<'_>,
    items: &[Option<T>],
    name: impl Fn(&T) -> &str,
) -> fmt::Result {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            f.write_str("|")?;
        }
        f.write_str(item.as_ref().map_or("none", &name))?;
    }
    Ok(())
}

fn task_name(task: &TaskScope) -> String {
    format!(
        "{}/{}/{}/{}",
        task.run.tenant, task.run.dag, task.run.run, task.task
    )
}

fn run_name(run: &RunScope) -> String {
    format!("{}/{}/{}", run.tenant, run.dag, run.run)
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Condition::AttemptStatus { attempt, any_of } => {
                write!(f, "{}#{} is ", task_name(&attempt.task), attempt.try_number)?;
                list(f, any_of, |k| k.name())
            }
            Condition::LatestTry { task, min, max } => {
                write!(
                    f,
                    "the latest try of {} is in {min}..={max}",
                    task_name(task)
                )
            }
            Condition::NoOtherLiveAttempt { attempt } => write!(
                f,
                "no attempt of {} but #{} is live",
                task_name(&attempt.task),
                attempt.try_number
            ),
            Condition::TaskKnown { task } => write!(f, "{} is known", task_name(task)),
            Condition::RunStatus { run, any_of } => {
                write!(f, "run {} is ", run_name(run))?;
                list(f, any_of, |s| s.name())
            }
            Condition::RunKnown { run } => write!(f, "run {} is known", run_name(run)),
            Condition::SharedWritable { run, key } => {
                write!(
                    f,
                    "shared variable {key:?} of run {} is writable",
                    run_name(run)
                )
            }
            Condition::CheckpointAt { run, name, lsn } => match lsn {
                Some(lsn) => write!(
                    f,
                    "checkpoint {name:?} of run {} is the one taken at LSN {lsn}",
                    run_name(run)
                ),
                None => write!(f, "run {} has no checkpoint {name:?}", run_name(run)),
            },
        }
    }
}

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Found::AttemptStatus(s) => write!(f, "{}", s.map_or("no status", TaskStatusKind::name)),
            Found::LatestTry(0, _) => f.write_str("no attempt with a status"),
            Found::LatestTry(n, s) => write!(
                f,
                "latest try {n} ({})",
                s.map_or("no status", TaskStatusKind::name)
            ),
            Found::LiveAttempt(n, s) => write!(f, "try {n} {s}"),
            Found::TaskUnknown => f.write_str("no status and no state"),
            Found::RunStatus(s) => write!(f, "{}", s.map_or("no record", RunStatus::name)),
            Found::RunUnknown => f.write_str("no record and no state"),
            Found::SharedImmutable => f.write_str("set and immutable"),
            Found::Checkpoint(Some(lsn)) => write!(f, "the checkpoint taken at LSN {lsn}"),
            Found::Checkpoint(None) => f.write_str("no such checkpoint"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(name: &str) -> TaskScope {
        TaskScope {
            run: RunScope {
                tenant: "t".into(),
                dag: "d".into(),
                run: "r".into(),
            },
            task: name.into(),
        }
    }

    fn status(task: &TaskScope, try_number: u32) -> Event {
        Event::now(EventBody::TaskStatus {
            attempt: AttemptScope {
                task: task.clone(),
                try_number,
            },
            status: TaskStatus::Running,
            worker: "w".into(),
        })
    }

    /// A condition on one task waits for status changes of that task and
    /// for a purge of its run, and for nothing of another task: that is
    /// what lets unrelated lifecycle calls share a group commit.
    #[test]
    fn a_task_condition_depends_on_its_task_only() {
        let a = task("a");
        let b = task("b");
        let c = Condition::AttemptStatus {
            attempt: AttemptScope {
                task: a.clone(),
                try_number: 1,
            },
            any_of: vec![Some(TaskStatusKind::Running)],
        };
        assert!(c.may_affect(&status(&a, 2)), "any attempt of the task");
        assert!(!c.may_affect(&status(&b, 1)));
        let purge = Event::now(EventBody::PurgeRun { run: a.run.clone() });
        assert!(c.may_affect(&purge));
        let put = Event::now(EventBody::Put {
            codec: crate::Codec::Raw,
            attempt: std::sync::Arc::new(AttemptScope {
                task: a.clone(),
                try_number: 1,
            }),
            key: "k".into(),
            value: Vec::new(),
            meta: Vec::new(),
        });
        assert!(!c.may_affect(&put), "state does not change a status");
        assert!(Condition::TaskKnown { task: a.clone() }.may_affect(&put));
    }

    /// A task's status creates its run's record (`Created`): a run condition
    /// that cannot tell `Created` from no record ignores it.
    #[test]
    fn task_statuses_affect_a_run_condition_only_through_its_record() {
        let a = task("a");
        let not_paused = Condition::RunStatus {
            run: a.run.clone(),
            any_of: vec![None, Some(RunStatus::Created), Some(RunStatus::Running)],
        };
        assert!(!not_paused.may_affect(&status(&a, 1)));
        let unknown = Condition::RunStatus {
            run: a.run.clone(),
            any_of: vec![None],
        };
        assert!(unknown.may_affect(&status(&a, 1)));
    }

    #[test]
    fn conditions_and_findings_read_as_sentences() {
        let c = Condition::AttemptStatus {
            attempt: AttemptScope {
                task: task("ocr"),
                try_number: 2,
            },
            any_of: vec![None, Some(TaskStatusKind::Scheduled)],
        };
        assert_eq!(c.to_string(), "t/d/r/ocr#2 is none|scheduled");
        assert_eq!(
            Found::AttemptStatus(Some(TaskStatusKind::Succeeded)).to_string(),
            "succeeded"
        );
        assert_eq!(
            Found::LatestTry(3, Some(TaskStatusKind::Failed)).to_string(),
            "latest try 3 (failed)"
        );
    }
}
