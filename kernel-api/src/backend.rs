//! The one trait between the kernel and its storage.
//!
//! The kernel turns the workflow vocabulary into events, conditions and
//! view reads; a [`Backend`] stores the events and answers the reads.
//! Today's backend is the waymark engine ([`EngineBackend`], on files or on
//! the simulated disk); a SQL one implements the same trait and runs the
//! same scenario suite (`tests/support/scenarios.rs`).
//!
//! The contract every backend keeps is on [`Backend`].

use waymark_engine::{
    AttemptScope, CheckpointRecord, Condition, Engine, Event, KvValue, Lsn, RunRecord, RunScope,
    SharedValue, TaskRecord, TaskScope, ViewReader,
};

use crate::error::{Error, Result};

/// What a backend counts, for [`crate::Kernel::stats`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BackendStats {
    /// Batches committed since the backend was opened.
    pub batches: u64,
    /// Batches refused because a condition did not hold.
    pub conflicts: u64,
    /// Every batch up to this LSN is durable.
    pub durable_lsn: Lsn,
    /// The engine's own counters, when the backend is the engine.
    pub engine: Option<waymark_engine::Stats>,
}

/// Storage for the kernel: an atomic, durable, conditional append of
/// events, and reads of the state those events add up to.
///
/// # The contract
///
/// - [`Backend::append`] is atomic and durable in the backend's configured
///   mode: when it returns `Ok` under the engine's default `Sync`, every
///   event of the batch survives any crash (under `Periodic` or `None` a
///   crash may lose a suffix of acknowledged batches, never part of one).
///   After any crash all of a batch's events are there, or none.
/// - It is **conditional**: the conditions are checked against the state
///   left by every batch committed before this one, and the batch is
///   committed only if all of them hold, as one step. Batches are
///   committed in one total order, numbered by consecutive LSNs from 1 in
///   that order, and conditions see exactly the batches before. A batch
///   whose condition fails is not written and takes no LSN; the call
///   returns [`Error::Conflict`] with the first failed condition's index
///   and what was found. A condition the backend does not know (the enum is
///   `#[non_exhaustive]`) is refused with an error, never taken as holding.
/// - Reads see every batch whose append has returned, on any thread, and
///   never part of a batch. `scan_log` delivers batches in LSN order up to
///   `durable_lsn`, with no gap: a watch resumes from the next LSN.
/// - Errors are the kernel's: [`Error::Conflict`] and
///   [`Error::HistoryRemoved`] as described, [`Error::Engine`] from the
///   engine, [`Error::Backend`] (with its cause) from any other storage.
/// - The views' meaning is the engine's (`waymark_engine::view`): a
///   task's record lists its attempts with their statuses and the latest
///   try; a run's record is created `Created` by its first task status and
///   counts tasks by status; a `ClearTask` masks the attempt state of every
///   attempt; a write to an immutable shared variable is not applied; a
///   checkpoint captures the run's attempt state, task state and shared
///   variables when it is applied (with a CRC32 of the capture), and a
///   restore brings those back (not statuses).
///
/// The engine checks conditions on its writer thread, in LSN order. A SQL
/// backend does it in one transaction per batch: take a lock that orders
/// commits (the LSN must follow commit order without gaps, so it is
/// allocated under that lock, or a row per run and task that the
/// conditions name is upserted and locked, `SELECT … FOR UPDATE`, before
/// they are checked: most conditions test for an absent row, which a plain
/// row lock does not cover; `SERIALIZABLE` isolation with a retry of
/// serialization failures does too), check the conditions, insert the
/// events, update the views, commit.
pub trait Backend: Send + Sync + std::fmt::Debug + 'static {
    /// Appends `events` as one atomic batch if every one of `conditions`
    /// holds after every batch committed before it; returns its LSN once
    /// durable.
    ///
    /// # Errors
    ///
    /// [`Error::Conflict`] if a condition failed (nothing was written); the
    /// storage's errors.
    fn append(&self, conditions: Vec<Condition>, events: Vec<Event>) -> Result<Lsn>;
    /// One key of one attempt's state.
    fn get(&self, attempt: &AttemptScope, key: &str) -> Result<Option<KvValue>>;
    /// Every key of one attempt's state.
    fn attempt_entries(&self, attempt: &AttemptScope) -> Result<Vec<(String, KvValue)>>;
    /// `key` in the attempt state of the latest attempt of `task` that has
    /// it, with that attempt's try number (an upstream read).
    fn latest_attempt_value(&self, task: &TaskScope, key: &str) -> Result<Option<(u32, KvValue)>>;
    /// One key of a task's state (survives retries).
    fn task_state(&self, task: &TaskScope, key: &str) -> Result<Option<KvValue>>;
    /// Every key of a task's state.
    fn task_state_entries(&self, task: &TaskScope) -> Result<Vec<(String, KvValue)>>;
    /// A task's lifecycle record.
    fn task(&self, task: &TaskScope) -> Result<Option<TaskRecord>>;
    /// Every task of a run with a status.
    fn tasks(&self, run: &RunScope) -> Result<Vec<(String, TaskRecord)>>;
    /// A run's record.
    fn run(&self, run: &RunScope) -> Result<Option<RunRecord>>;
    /// A tenant's runs, optionally of one DAG.
    fn runs(&self, tenant: &str, dag: Option<&str>) -> Result<Vec<(RunScope, RunRecord)>>;
    /// One run-shared variable.
    fn shared(&self, run: &RunScope, key: &str) -> Result<Option<SharedValue>>;
    /// One named checkpoint.
    fn checkpoint(&self, run: &RunScope, name: &str) -> Result<Option<CheckpointRecord>>;
    /// Every checkpoint of a run.
    fn checkpoints(&self, run: &RunScope) -> Result<Vec<(String, CheckpointRecord)>>;
    /// Calls `visit` with every durable batch from `from` on, in LSN order,
    /// until it returns `false` or the durable end of the log.
    ///
    /// # Errors
    ///
    /// [`Error::HistoryRemoved`] if the log no longer holds `from`
    /// (retention), before `visit` is called; the log's errors
    /// (corruption).
    fn scan_log(&self, from: Lsn, visit: &mut dyn FnMut(Lsn, Vec<Event>) -> bool) -> Result<()>;
    /// The highest LSN that is durable (and so may be reported to watchers).
    fn durable_lsn(&self) -> Lsn;
    /// Makes everything committed so far durable, whatever the durability
    /// mode; returns the durable LSN.
    ///
    /// # Errors
    ///
    /// The storage's errors (a failed sync).
    fn flush(&self) -> Result<Lsn>;
    /// Syncs and closes: later appends fail. Reports the final sync's
    /// failure instead of losing it in a `Drop`.
    ///
    /// # Errors
    ///
    /// The storage's errors (a failed sync, an earlier poison).
    fn close(&self) -> Result<()>;
    /// Counters since open.
    fn stats(&self) -> BackendStats;
}

/// The waymark engine as a [`Backend`].
#[derive(Debug, Clone)]
pub struct EngineBackend {
    engine: Engine,
    views: ViewReader,
}

impl EngineBackend {
    /// Wraps an open engine.
    pub fn new(engine: Engine) -> EngineBackend {
        let views = engine.views();
        EngineBackend { engine, views }
    }

    /// The engine below, for what the kernel does not cover (snapshots,
    /// sizes, the log reader).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }
}

impl Backend for EngineBackend {
    fn append(&self, conditions: Vec<Condition>, events: Vec<Event>) -> Result<Lsn> {
        Ok(self.engine.append_if(conditions, events)?)
    }
    fn get(&self, attempt: &AttemptScope, key: &str) -> Result<Option<KvValue>> {
        Ok(self.views.get(attempt, key)?)
    }
    fn attempt_entries(&self, attempt: &AttemptScope) -> Result<Vec<(String, KvValue)>> {
        Ok(self.views.attempt_entries(attempt)?)
    }
    fn latest_attempt_value(&self, task: &TaskScope, key: &str) -> Result<Option<(u32, KvValue)>> {
        Ok(self.views.latest_attempt_value(task, key)?)
    }
    fn task_state(&self, task: &TaskScope, key: &str) -> Result<Option<KvValue>> {
        Ok(self.views.task_state(task, key)?)
    }
    fn task_state_entries(&self, task: &TaskScope) -> Result<Vec<(String, KvValue)>> {
        Ok(self.views.task_state_entries(task)?)
    }
    fn task(&self, task: &TaskScope) -> Result<Option<TaskRecord>> {
        Ok(self.views.task(task)?)
    }
    fn tasks(&self, run: &RunScope) -> Result<Vec<(String, TaskRecord)>> {
        Ok(self.views.tasks(run)?)
    }
    fn run(&self, run: &RunScope) -> Result<Option<RunRecord>> {
        Ok(self.views.run(run)?)
    }
    fn runs(&self, tenant: &str, dag: Option<&str>) -> Result<Vec<(RunScope, RunRecord)>> {
        Ok(self.views.runs(tenant, dag)?)
    }
    fn shared(&self, run: &RunScope, key: &str) -> Result<Option<SharedValue>> {
        Ok(self.views.shared(run, key)?)
    }
    fn checkpoint(&self, run: &RunScope, name: &str) -> Result<Option<CheckpointRecord>> {
        Ok(self.views.checkpoint(run, name)?)
    }
    fn checkpoints(&self, run: &RunScope) -> Result<Vec<(String, CheckpointRecord)>> {
        Ok(self.views.checkpoints(run)?)
    }
    fn scan_log(&self, from: Lsn, visit: &mut dyn FnMut(Lsn, Vec<Event>) -> bool) -> Result<()> {
        let durable = self.durable_lsn();
        let reader = self.engine.reader();
        // LSNs start at 1: from 0 means from the start.
        let from = Lsn(from.0.max(1));
        let mut cursor = reader.cursor(from);
        let mut first = true;
        // Retention removed what the cursor was to read next, mid-scan:
        // `Error::Removed` becomes `HistoryRemoved` by `From`.
        while let Some(frame) = cursor.next_frame().map_err(Error::from)? {
            // A cursor from more than one past the log's end starts at the
            // end: the frames before `from` are not asked for.
            if frame.lsn() < from {
                continue;
            }
            // A cursor from before the log's first LSN starts there: say
            // so rather than pass over what retention removed.
            if std::mem::take(&mut first) && frame.lsn() > from {
                return Err(Error::HistoryRemoved {
                    from: from.0,
                    first: frame.lsn().0,
                });
            }
            if frame.lsn() > durable {
                break;
            }
            if !visit(frame.lsn(), frame.decode()?) {
                break;
            }
        }
        // No frame at all, and the cursor moved past `from` to the first
        // kept segment: retention removed `from` (the newest segment can
        // hold no frame).
        if first && cursor.next_lsn() > from {
            return Err(Error::HistoryRemoved {
                from: from.0,
                first: cursor.next_lsn().0,
            });
        }
        Ok(())
    }
    fn durable_lsn(&self) -> Lsn {
        // Under `Durability::None` or `Periodic`, what was acknowledged may
        // not be synced yet; the engine's own count says what is.
        self.engine.durable_lsn()
    }
    fn flush(&self) -> Result<Lsn> {
        Ok(self.engine.flush()?)
    }
    fn close(&self) -> Result<()> {
        Ok(self.engine.close()?)
    }
    fn stats(&self) -> BackendStats {
        let engine = self.engine.stats();
        BackendStats {
            batches: engine.batches,
            conflicts: engine.conflicts,
            durable_lsn: engine.durable_lsn,
            engine: Some(engine),
        }
    }
}
