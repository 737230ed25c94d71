//! Runs, run-shared variables and checkpoints.
//!
//! A run's status follows a checked lifecycle (see [`run_allowed_from`]):
//! `created → running ⇄ paused`, and `running → succeeded | failed |
//! cancelled`. Every decision here is a conditional batch, as for tasks:
//! of racing callers, exactly one pauses a run, writes an immutable
//! variable first, restores or deletes one checkpoint, or purges a run.

use std::time::Duration;

use waymark_engine::{Condition, Event, EventBody, Found, Lsn, ParentRef, RunRecord, RunStatus};

use crate::error::{Error, Result};
use crate::kernel::Kernel;
use crate::lifecycle::DECISION_TRIES;
use crate::task_ref::RunRef;
use crate::task_ref::check_name;

/// A checkpoint as listed by [`Kernel::checkpoints`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointInfo {
    /// Its name.
    pub name: String,
    /// The LSN of the `Checkpoint` event.
    pub lsn: Lsn,
    /// When it was taken, microseconds since the Unix epoch.
    pub ts_micros: i64,
    /// The size of the captured state.
    pub size_bytes: u64,
    /// CRC32 of the captured state.
    pub checksum: u32,
}

/// A run as listed by [`Kernel::runs`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunInfo {
    /// The run.
    pub run: RunRef,
    /// Its status, times, task counts and parent.
    pub record: RunRecord,
}

/// The statuses a run may move to `to` from (`None`: no record yet).
///
/// ```
/// use waymark_kernel::{RunStatus, run_allowed_from};
///
/// assert_eq!(run_allowed_from(RunStatus::Paused), [Some(RunStatus::Running)]);
/// // Only `resume_run` leaves a pause; nothing leaves a finished run.
/// assert!(!run_allowed_from(RunStatus::Running).contains(&Some(RunStatus::Paused)));
/// assert!(!run_allowed_from(RunStatus::Running).contains(&Some(RunStatus::Succeeded)));
/// ```
pub fn run_allowed_from(to: RunStatus) -> &'static [Option<RunStatus>] {
    use RunStatus as S;
    match to {
        S::Created => &[None],
        // Out of `Paused` only by `resume_run`: a scheduler that marks its
        // runs running does not undo an operator's pause.
        S::Running => &[None, Some(S::Created)],
        S::Paused => &[Some(S::Running)],
        S::Succeeded => &[Some(S::Created), Some(S::Running)],
        S::Failed => &[Some(S::Created), Some(S::Running), Some(S::Paused)],
        S::Cancelled => &[None, Some(S::Created), Some(S::Running), Some(S::Paused)],
    }
}

impl Kernel {
    /// Moves a run to `status` if its lifecycle allows it from the status
    /// the run has when the batch's turn comes, recording (for a
    /// sub-workflow) the run and task that started it.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRunTransition`] with the status found;
    /// [`Error::InvalidRef`] for a bad parent task id; the backend's errors.
    pub fn set_run_status(
        &self,
        run: &RunRef,
        status: RunStatus,
        parent: Option<(&RunRef, &str)>,
    ) -> Result<Lsn> {
        let parent = match parent {
            Some((p, task)) => {
                check_name("parent task_id", task)?;
                Some(ParentRef {
                    run: p.scope(),
                    task: task.into(),
                })
            }
            None => None,
        };
        self.move_run(run, run_allowed_from(status), status, parent)
    }

    /// Moves a run to `to` if its status is one of `from` when the batch's
    /// turn comes.
    fn move_run(
        &self,
        run: &RunRef,
        from: &[Option<RunStatus>],
        to: RunStatus,
        parent: Option<ParentRef>,
    ) -> Result<Lsn> {
        let condition = Condition::RunStatus {
            run: run.scope(),
            any_of: from.to_vec(),
        };
        let event = Event::now(EventBody::RunStatus {
            run: run.scope(),
            status: to,
            parent,
        });
        self.append_guarded(vec![condition], vec![event], |found| match found {
            // A run with no record yet cannot be paused or resumed.
            Found::RunStatus(None)
                if to == RunStatus::Paused || from == [Some(RunStatus::Paused)] =>
            {
                Some(Error::UnknownRun {
                    run: run.to_string(),
                })
            }
            Found::RunStatus(from) => Some(Error::InvalidRunTransition {
                run: run.to_string(),
                from,
                to,
            }),
            _ => None,
        })
    }

    /// Pauses a running run: none of its tasks starts (a `start` gets
    /// [`Error::RunPaused`]) until [`Kernel::resume_run`]. Running attempts
    /// go on and may finish.
    ///
    /// ```
    /// use waymark_kernel::{Error, Kernel, RunRef, RunStatus};
    ///
    /// let kernel = Kernel::in_memory()?;
    /// let run = RunRef::new("acme", "documents", "run-42")?;
    /// kernel.set_run_status(&run, RunStatus::Running, None)?;
    /// kernel.pause_run(&run)?;
    /// assert!(matches!(kernel.start(&run.task("ocr")?), Err(Error::RunPaused { .. })));
    /// kernel.resume_run(&run)?;
    /// kernel.start(&run.task("ocr")?)?;
    /// # Ok::<(), waymark_kernel::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRunTransition`] unless the run is running (of racing
    /// pauses, one wins); the backend's errors.
    pub fn pause_run(&self, run: &RunRef) -> Result<Lsn> {
        self.set_run_status(run, RunStatus::Paused, None)
    }

    /// Resumes a paused run: its tasks may start again.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRunTransition`] unless the run is paused; the
    /// backend's errors.
    pub fn resume_run(&self, run: &RunRef) -> Result<Lsn> {
        self.move_run(run, &[Some(RunStatus::Paused)], RunStatus::Running, None)
    }

    /// A run's record: status, times, task counts, parent.
    ///
    /// # Errors
    ///
    /// The backend's read errors.
    pub fn run(&self, run: &RunRef) -> Result<Option<RunRecord>> {
        self.backend().run(&run.scope())
    }

    /// A tenant's runs, optionally only one DAG's.
    ///
    /// # Errors
    ///
    /// The backend's read errors.
    pub fn runs(&self, tenant: &str, dag_name: Option<&str>) -> Result<Vec<RunInfo>> {
        self.backend()
            .runs(tenant, dag_name)?
            .into_iter()
            .map(|(scope, record)| {
                Ok(RunInfo {
                    run: RunRef::new(scope.tenant, scope.dag, scope.run)?,
                    record,
                })
            })
            .collect()
    }

    /// The runs of `run`'s tenant whose parent is `run` (sub-workflows).
    ///
    /// # Errors
    ///
    /// [`Error::UnknownRun`] if `run` has no record; the backend's errors.
    pub fn children(&self, run: &RunRef) -> Result<Vec<RunInfo>> {
        let scope = run.scope();
        if self.backend().run(&scope)?.is_none() {
            return Err(Error::UnknownRun {
                run: run.to_string(),
            });
        }
        Ok(self
            .runs(run.tenant(), None)?
            .into_iter()
            .filter(|r| r.record.parent.as_ref().is_some_and(|p| p.run == scope))
            .collect())
    }

    /// Removes a run and all its state, as one event (the log keeps it).
    ///
    /// # Errors
    ///
    /// [`Error::UnknownRun`] if the run has no record and no state when
    /// its turn comes (of racing purges, one purges); the backend's
    /// errors.
    pub fn purge_run(&self, run: &RunRef) -> Result<Lsn> {
        self.append_guarded(
            vec![Condition::RunKnown { run: run.scope() }],
            vec![Event::now(EventBody::PurgeRun { run: run.scope() })],
            |found| {
                matches!(found, Found::RunUnknown).then(|| Error::UnknownRun {
                    run: run.to_string(),
                })
            },
        )
    }

    /// Sets a run-shared variable. An immutable one can be written once: of
    /// two racing first writes, one sets the value and the other gets
    /// [`Error::ImmutableShared`].
    ///
    /// # Errors
    ///
    /// [`Error::ImmutableShared`] if the variable is set and immutable when
    /// the batch's turn comes; an empty key; the backend's errors.
    pub fn set_shared(
        &self,
        run: &RunRef,
        key: &str,
        value: impl AsRef<[u8]>,
        immutable: bool,
    ) -> Result<Lsn> {
        if key.is_empty() {
            return Err(Error::InvalidRef("a shared variable's key is empty".into()));
        }
        self.append_guarded(
            vec![Condition::SharedWritable {
                run: run.scope(),
                key: key.into(),
            }],
            vec![Event::now(EventBody::SharedPut {
                codec: waymark_engine::Codec::Raw,
                run: run.scope(),
                key: key.into(),
                value: value.as_ref().to_vec(),
                immutable,
            })],
            |found| {
                matches!(found, Found::SharedImmutable).then(|| Error::ImmutableShared {
                    run: run.to_string(),
                    key: key.into(),
                })
            },
        )
    }

    /// A run-shared variable.
    ///
    /// # Errors
    ///
    /// The backend's read errors.
    pub fn shared(&self, run: &RunRef, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.backend().shared(&run.scope(), key)?.map(|v| v.value))
    }

    /// Captures the run's state (attempt state, task state, shared
    /// variables) under `name`, with a checksum. Taking a checkpoint with
    /// an existing name replaces it.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRef`] for a bad name; [`Error::UnknownRun`] if the
    /// run has no record and no state (nothing to capture); the backend's
    /// errors.
    pub fn checkpoint(&self, run: &RunRef, name: &str) -> Result<Lsn> {
        check_name("checkpoint name", name)?;
        self.append_guarded(
            vec![Condition::RunKnown { run: run.scope() }],
            vec![Event::now(EventBody::Checkpoint {
                run: run.scope(),
                name: name.into(),
            })],
            |found| {
                matches!(found, Found::RunUnknown).then(|| Error::UnknownRun {
                    run: run.to_string(),
                })
            },
        )
    }

    /// The run's checkpoints, oldest first.
    ///
    /// # Errors
    ///
    /// The backend's read errors.
    pub fn checkpoints(&self, run: &RunRef) -> Result<Vec<CheckpointInfo>> {
        let mut out: Vec<CheckpointInfo> = self
            .backend()
            .checkpoints(&run.scope())?
            .into_iter()
            .map(|(name, r)| CheckpointInfo {
                name,
                lsn: Lsn(r.lsn),
                ts_micros: r.ts_micros,
                size_bytes: r.size_bytes(),
                checksum: r.checksum,
            })
            .collect();
        out.sort_by_key(|c| c.lsn);
        Ok(out)
    }

    /// Brings the run's state (attempt state, task state, shared
    /// variables; not task or run statuses) back to checkpoint `name`, as a
    /// new event (history is never rewritten). The checkpoint's checksum is verified
    /// first, and the restore is conditional on that very checkpoint
    /// (taken at the same LSN) still being there when its turn comes: a
    /// checkpoint deleted or replaced in between is not restored blind.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownCheckpoint`], [`Error::ChecksumMismatch`],
    /// [`Error::Contended`]; the backend's errors.
    pub fn restore(&self, run: &RunRef, name: &str) -> Result<Lsn> {
        for _ in 0..DECISION_TRIES {
            let record = self
                .backend()
                .checkpoint(&run.scope(), name)?
                .ok_or_else(|| Error::UnknownCheckpoint {
                    run: run.to_string(),
                    name: name.into(),
                })?;
            if !record.verify() {
                return Err(Error::ChecksumMismatch {
                    run: run.to_string(),
                    name: name.into(),
                });
            }
            let appended = self.backend().append(
                vec![Condition::CheckpointAt {
                    run: run.scope(),
                    name: name.into(),
                    lsn: Some(record.lsn),
                }],
                vec![Event::now(EventBody::RestoreCheckpoint {
                    run: run.scope(),
                    name: name.into(),
                })],
            );
            match appended {
                // Replaced or deleted since it was read: read it again.
                Err(Error::Conflict { .. }) => {}
                other => return other,
            }
        }
        Err(Error::Contended {
            what: format!("restore of checkpoint {name:?} of run {run}"),
            tries: DECISION_TRIES,
        })
    }

    /// Deletes checkpoint `name` of the run.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownCheckpoint`] if there is none when the batch's turn
    /// comes (of racing deletes, one deletes); the backend's errors.
    pub fn delete_checkpoint(&self, run: &RunRef, name: &str) -> Result<Lsn> {
        let unknown = || Error::UnknownCheckpoint {
            run: run.to_string(),
            name: name.into(),
        };
        for _ in 0..DECISION_TRIES {
            let record = self
                .backend()
                .checkpoint(&run.scope(), name)?
                .ok_or_else(unknown)?;
            match self.delete_checkpoints(run, &[(name.to_string(), Lsn(record.lsn))]) {
                Err(Error::Conflict { .. }) => {}
                other => return other,
            }
        }
        Err(Error::Contended {
            what: format!("delete of checkpoint {name:?} of run {run}"),
            tries: DECISION_TRIES,
        })
    }

    /// Deletes each checkpoint named, conditional on each being the one
    /// taken at its LSN: one atomic batch.
    fn delete_checkpoints(&self, run: &RunRef, doomed: &[(String, Lsn)]) -> Result<Lsn> {
        let conditions = doomed
            .iter()
            .map(|(name, lsn)| Condition::CheckpointAt {
                run: run.scope(),
                name: name.clone(),
                lsn: Some(lsn.0),
            })
            .collect();
        let events = doomed
            .iter()
            .map(|(name, _)| {
                Event::now(EventBody::DeleteCheckpoint {
                    run: run.scope(),
                    name: name.clone(),
                })
            })
            .collect();
        self.backend().append(conditions, events)
    }

    /// Deletes checkpoints beyond the newest `keep_last` and those older
    /// than `max_age`; returns the names deleted (one atomic batch, each
    /// deletion conditional on the checkpoint it judged: of racing prunes,
    /// each checkpoint is deleted by one, and a checkpoint taken again
    /// under a doomed name in between is kept).
    ///
    /// # Errors
    ///
    /// [`Error::Contended`]; the backend's errors.
    pub fn prune_checkpoints(
        &self,
        run: &RunRef,
        keep_last: Option<usize>,
        max_age: Option<Duration>,
    ) -> Result<Vec<String>> {
        for _ in 0..DECISION_TRIES {
            let all = self.checkpoints(run)?;
            let now = waymark_engine::event::now_micros();
            let keep_from = keep_last.map_or(0, |k| all.len().saturating_sub(k));
            let doomed: Vec<(String, Lsn)> = all
                .iter()
                .enumerate()
                .filter(|(i, c)| {
                    let too_many = *i < keep_from;
                    let too_old = max_age.is_some_and(|age| {
                        now.saturating_sub(c.ts_micros)
                            > i64::try_from(age.as_micros()).unwrap_or(i64::MAX)
                    });
                    too_many || too_old
                })
                .map(|(_, c)| (c.name.clone(), c.lsn))
                .collect();
            if doomed.is_empty() {
                return Ok(Vec::new());
            }
            match self.delete_checkpoints(run, &doomed) {
                Ok(_) => return Ok(doomed.into_iter().map(|(name, _)| name).collect()),
                Err(Error::Conflict { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Err(Error::Contended {
            what: format!("prune of the checkpoints of run {run}"),
            tries: DECISION_TRIES,
        })
    }
}
