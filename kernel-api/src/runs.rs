//! Runs, run-shared variables and checkpoints.

use std::time::Duration;

use waymark_engine::{Event, EventBody, Lsn, ParentRef, RunRecord, RunStatus};

use crate::error::{Error, Result};
use crate::kernel::Kernel;
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

fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

impl Kernel {
    fn append_one(&self, body: EventBody) -> Result<Lsn> {
        self.backend().append(vec![Event::now(body)])
    }

    /// Records a run's status, and (for a sub-workflow) the run and task
    /// that started it.
    ///
    /// # Errors
    ///
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
        self.append_one(EventBody::RunStatus {
            run: run.scope(),
            status,
            parent,
        })
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
    /// The backend's errors.
    pub fn purge_run(&self, run: &RunRef) -> Result<Lsn> {
        self.append_one(EventBody::PurgeRun { run: run.scope() })
    }

    /// Sets a run-shared variable. An immutable one can be written once.
    ///
    /// # Errors
    ///
    /// [`Error::ImmutableShared`] if the variable exists and is immutable;
    /// the backend's errors.
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
        if self
            .backend()
            .shared(&run.scope(), key)?
            .is_some_and(|v| v.immutable)
        {
            return Err(Error::ImmutableShared {
                run: run.to_string(),
                key: key.into(),
            });
        }
        self.append_one(EventBody::SharedPut {
            run: run.scope(),
            key: key.into(),
            value: value.as_ref().to_vec(),
            immutable,
        })
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
    /// [`Error::InvalidRef`] for a bad name; the backend's errors.
    pub fn checkpoint(&self, run: &RunRef, name: &str) -> Result<Lsn> {
        check_name("checkpoint name", name)?;
        self.append_one(EventBody::Checkpoint {
            run: run.scope(),
            name: name.into(),
        })
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

    /// Brings the run's state back to checkpoint `name`, as a new event
    /// (history is never rewritten). The checkpoint's checksum is verified
    /// first.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownCheckpoint`], [`Error::ChecksumMismatch`]; the
    /// backend's errors.
    pub fn restore(&self, run: &RunRef, name: &str) -> Result<Lsn> {
        let record = self
            .backend()
            .checkpoint(&run.scope(), name)?
            .ok_or_else(|| Error::UnknownCheckpoint {
                run: run.run_id().into(),
                name: name.into(),
            })?;
        if !record.verify() {
            return Err(Error::ChecksumMismatch {
                run: run.run_id().into(),
                name: name.into(),
            });
        }
        self.append_one(EventBody::RestoreCheckpoint {
            run: run.scope(),
            name: name.into(),
        })
    }

    /// Deletes checkpoints beyond the newest `keep_last` and those older
    /// than `max_age`; returns the names deleted (one atomic batch).
    ///
    /// # Errors
    ///
    /// The backend's errors.
    pub fn prune_checkpoints(
        &self,
        run: &RunRef,
        keep_last: Option<usize>,
        max_age: Option<Duration>,
    ) -> Result<Vec<String>> {
        let all = self.checkpoints(run)?;
        let now = now_micros();
        let keep_from = keep_last.map_or(0, |k| all.len().saturating_sub(k));
        let doomed: Vec<String> = all
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
            .map(|(_, c)| c.name.clone())
            .collect();
        if !doomed.is_empty() {
            self.backend().append(
                doomed
                    .iter()
                    .map(|name| {
                        Event::now(EventBody::DeleteCheckpoint {
                            run: run.scope(),
                            name: name.clone(),
                        })
                    })
                    .collect(),
            )?;
        }
        Ok(doomed)
    }
}
