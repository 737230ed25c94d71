//! The one trait between the kernel and its storage.
//!
//! The kernel turns the workflow vocabulary into events and view reads; a
//! [`Backend`] stores the events and answers the reads. Today's backend is
//! the waymark engine (on files, or on the simulated disk for
//! [`crate::Kernel::in_memory`]); a PostgreSQL one can implement the same
//! trait and run the same scenario tests.

use waymark_engine::{
    AttemptScope, CheckpointRecord, Engine, Event, KvValue, Lsn, RunRecord, RunScope, SharedValue,
    TaskRecord, TaskScope, ViewReader,
};

use crate::error::Result;

/// Storage for the kernel: an atomic, durable append of events, and reads
/// of the views those events add up to. Reads see every batch whose append
/// has returned, on any thread.
pub trait Backend: Send + Sync + std::fmt::Debug + 'static {
    /// Appends one batch atomically; returns its LSN once durable.
    fn append(&self, batch: Vec<Event>) -> Result<Lsn>;
    /// One key of one attempt's state.
    fn get(&self, attempt: &AttemptScope, key: &str) -> Result<Option<KvValue>>;
    /// Every key of one attempt's state.
    fn attempt_entries(&self, attempt: &AttemptScope) -> Result<Vec<(String, KvValue)>>;
    /// Every key of every attempt of a task: `(try, key, value)`.
    fn task_attempt_entries(&self, task: &TaskScope) -> Result<Vec<(u32, String, KvValue)>>;
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
    /// [`Error::HistoryRemoved`](crate::Error::HistoryRemoved) if the log
    /// no longer holds `from` (retention), before `visit` is called; the
    /// log's errors (corruption).
    fn scan_log(&self, from: Lsn, visit: &mut dyn FnMut(Lsn, Vec<Event>) -> bool) -> Result<()>;
    /// The highest LSN that is durable (and so may be reported to watchers).
    fn durable_lsn(&self) -> Lsn;
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

    /// The engine below, for what the kernel does not cover (stats,
    /// snapshots, the log reader).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }
}

impl Backend for EngineBackend {
    fn append(&self, batch: Vec<Event>) -> Result<Lsn> {
        Ok(self.engine.append(batch)?)
    }
    fn get(&self, attempt: &AttemptScope, key: &str) -> Result<Option<KvValue>> {
        Ok(self.views.get(attempt, key)?)
    }
    fn attempt_entries(&self, attempt: &AttemptScope) -> Result<Vec<(String, KvValue)>> {
        Ok(self.views.attempt_entries(attempt)?)
    }
    fn task_attempt_entries(&self, task: &TaskScope) -> Result<Vec<(u32, String, KvValue)>> {
        Ok(self.views.task_attempt_entries(task)?)
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
        // Retention removed what the cursor was to read next, mid-scan.
        let removed = |e: waymark_engine::Error| match e {
            waymark_engine::Error::Removed { expected, first } => crate::Error::HistoryRemoved {
                from: expected.0,
                first: first.0,
            },
            e => e.into(),
        };
        while let Some(frame) = cursor.next_frame().map_err(removed)? {
            // A cursor from more than one past the log's end starts at the
            // end: the frames before `from` are not asked for.
            if frame.lsn() < from {
                continue;
            }
            // A cursor from before the log's first LSN starts there: say
            // so rather than pass over what retention removed.
            if std::mem::take(&mut first) && frame.lsn() > from {
                return Err(crate::Error::HistoryRemoved {
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
            return Err(crate::Error::HistoryRemoved {
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
}
