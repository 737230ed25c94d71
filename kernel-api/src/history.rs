//! History: the events of a task, a key, a run or a time range, and the
//! state of a run as it was at an LSN or a time.

use waymark_engine::{Durability, Event, Lsn, Options, SnapshotOptions};

use crate::error::Result;
use crate::kernel::Kernel;
use crate::task_ref::RunRef;
use crate::task_ref::TaskRef;

/// One event of the log with its LSN.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedEvent {
    /// The LSN of the batch the event was in.
    pub lsn: Lsn,
    /// The event.
    pub event: Event,
}

/// A point in a run's history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum At {
    /// Every batch up to and including this LSN.
    Lsn(Lsn),
    /// Every event with a timestamp at or before this time (microseconds
    /// since the Unix epoch).
    TimeMicros(i64),
}

impl Kernel {
    fn collect(&self, mut keep: impl FnMut(&Event) -> bool) -> Result<Vec<LoggedEvent>> {
        let mut out = Vec::new();
        self.backend().scan_log(Lsn(1), &mut |lsn, events| {
            for event in events {
                if keep(&event) {
                    out.push(LoggedEvent { lsn, event });
                }
            }
            true
        })?;
        Ok(out)
    }

    /// Every event of a task (all attempts), in order.
    ///
    /// # Errors
    ///
    /// The backend's errors.
    pub fn history_of_task(&self, ti: &TaskRef) -> Result<Vec<LoggedEvent>> {
        let run = ti.run_scope();
        self.collect(|e| e.run() == &run && e.task() == Some(ti.task_id()))
    }

    /// Every event that wrote `key` in a task's attempt or task state, and
    /// every clear of the task, in order.
    ///
    /// # Errors
    ///
    /// The backend's errors.
    pub fn history_of_key(&self, ti: &TaskRef, key: &str) -> Result<Vec<LoggedEvent>> {
        let run = ti.run_scope();
        self.collect(|e| {
            e.run() == &run
                && e.task() == Some(ti.task_id())
                && (e.key() == Some(key)
                    || matches!(e.body, waymark_engine::EventBody::ClearTask { .. }))
        })
    }

    /// Every event of a run, in order.
    ///
    /// # Errors
    ///
    /// The backend's errors.
    pub fn history_of_run(&self, run: &RunRef) -> Result<Vec<LoggedEvent>> {
        let scope = run.scope();
        self.collect(|e| e.run() == &scope)
    }

    /// Every event with a timestamp in `[from_micros, to_micros]`, in log
    /// order.
    ///
    /// # Errors
    ///
    /// The backend's errors.
    pub fn events_between(&self, from_micros: i64, to_micros: i64) -> Result<Vec<LoggedEvent>> {
        self.collect(|e| (from_micros..=to_micros).contains(&e.ts_micros))
    }

    /// The run as it was at `at`: a kernel in memory holding exactly the
    /// run's events up to that point, applied by the same engine code, to
    /// read with the usual API (contexts, `task`, `shared`, `checkpoints`).
    ///
    /// # Errors
    ///
    /// The backend's errors.
    pub fn run_as_of(&self, run: &RunRef, at: At) -> Result<Kernel> {
        // In memory, the format's largest limits (the batches passed the
        // limits of the engine that wrote them, which may have been
        // raised), and no snapshots: the state stays in its memtables.
        // Synced, so that the history of the state returned reads whole.
        let scratch = Kernel::builder()
            .worker_id(self.worker_id())
            .options(Options {
                durability: Durability::Sync,
                snapshots: SnapshotOptions {
                    enabled: false,
                    ..SnapshotOptions::default()
                },
                ..Options::scratch()
            })
            .in_memory()?;
        let scope = run.scope();
        let mut failed = None;
        self.backend().scan_log(Lsn(1), &mut |lsn, events| {
            if let At::Lsn(end) = at
                && lsn > end
            {
                return false;
            }
            // A batch is in the state at a time only whole: if any of its
            // events is later than `t`, it was committed after `t`.
            if let At::TimeMicros(t) = at
                && events.iter().any(|e| e.ts_micros > t)
            {
                return true;
            }
            let batch: Vec<Event> = events.into_iter().filter(|e| e.run() == &scope).collect();
            if batch.is_empty() {
                return true;
            }
            match scratch.backend().append(Vec::new(), batch) {
                Ok(_) => true,
                Err(e) => {
                    failed = Some(e);
                    false
                }
            }
        })?;
        if let Some(e) = failed {
            return Err(e);
        }
        Ok(scratch)
    }
}
