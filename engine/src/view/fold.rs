//! The event fold: how each event changes the views.
//!
//! [`Views::apply`] applies one durable batch's events, in order, to the
//! active memtable, each at its own version (the batch's LSN and the
//! event's index in it); the caller publishes the batch afterwards, so
//! readers see it whole. A set or delete of state is one memtable entry;
//! a task status folds into the task's record and its run's counts; a
//! clear or a purge is a range tombstone; a checkpoint captures the run's
//! state as it stands, and a restore puts a checkpoint's capture back.

use std::sync::atomic::Ordering;

use super::key::{KeyBuf, Table, checkpoint_key, kv_key, prefix_range, shared_key, task_kv_key};
use super::memtable::{Memtable, Version};
use super::record::{
    AttemptRecord, Capture, CheckpointRecord, RunRecord, SharedValue, TaskCounts, TaskRecord,
    encode, encode_kv, stored_lsn,
};
use super::{Views, decode_as};
use crate::error::Result;
use crate::event::{AttemptScope, Event, EventBody, RunScope, RunStatus, TaskStatus};
use crate::log::Lsn;

impl Views {
    /// Applies one durable batch's events at `lsn`. The caller publishes.
    pub(crate) fn apply(&self, lsn: Lsn, events: &[Event]) -> Result<()> {
        let levels = self.levels();
        for (index, event) in events.iter().enumerate() {
            let version = Version {
                lsn: lsn.0,
                index: u32::try_from(index).expect("batches are limited far below 4 G events"),
            };
            self.apply_one(&levels.active, version, event)?;
            levels.active.count_event();
        }
        if cfg!(debug_assertions) {
            // Read by `freeze`'s debug assertion only.
            self.applied_upto.store(lsn.0, Ordering::Release);
        }
        Ok(())
    }

    fn apply_one(&self, m: &Memtable, version: Version, event: &Event) -> Result<()> {
        let ts = event.ts_micros;
        match &event.body {
            EventBody::Put {
                codec,
                attempt,
                key,
                value,
                meta,
            } => {
                // Stored as the log holds it: a compressed value stays so.
                let record = encode_kv(value, meta, stored_lsn(version.lsn, *codec), ts);
                m.insert_owned(kv_key(attempt, key), version, Some(record));
            }
            EventBody::Delete { attempt, key } => {
                m.insert_owned(kv_key(attempt, key), version, None);
            }
            EventBody::ClearTask { task } => {
                let (start, end) = prefix_range(&KeyBuf::new(Table::Kv).task(task).into_vec());
                m.delete_range(start, end, version);
            }
            EventBody::TaskPut {
                codec,
                task,
                key,
                value,
            } => {
                let record = encode_kv(value, &[], stored_lsn(version.lsn, *codec), ts);
                m.insert_owned(task_kv_key(task, key), version, Some(record));
            }
            EventBody::TaskDelete { task, key } => {
                m.insert_owned(task_kv_key(task, key), version, None);
            }
            EventBody::TaskStatus {
                attempt,
                status,
                worker,
            } => self.apply_task_status(m, version, ts, attempt, status, worker)?,
            EventBody::RunStatus {
                run,
                status,
                parent,
            } => {
                let key = KeyBuf::new(Table::Runs).run(run).into_vec();
                let mut record = self.run_record(&key)?.unwrap_or_else(|| new_run(ts));
                record.status = *status;
                record.updated_micros = ts;
                if parent.is_some() {
                    record.parent.clone_from(parent);
                }
                m.insert(&key, version, Some(encode(&record).into()));
            }
            EventBody::Checkpoint { run, name } => {
                let capture = self.capture(run)?;
                let capture = encode(&capture);
                let record = CheckpointRecord {
                    lsn: version.lsn,
                    ts_micros: ts,
                    checksum: crc32fast::hash(&capture),
                    capture,
                };
                let key = checkpoint_key(run, name);
                m.insert(&key, version, Some(encode(&record).into()));
            }
            EventBody::RestoreCheckpoint { run, name } => {
                self.apply_restore(m, version, run, name)?;
            }
            EventBody::SharedPut {
                codec,
                run,
                key,
                value,
                immutable,
            } => {
                let key = shared_key(run, key);
                if let Some(bytes) = self.latest(&key)? {
                    let old: SharedValue = decode_as(Table::Shared, &bytes)?;
                    if old.immutable {
                        return Ok(()); // The kernel refuses this; replay ignores it.
                    }
                }
                let record = SharedValue {
                    value: value.clone(),
                    immutable: *immutable,
                    lsn: stored_lsn(version.lsn, *codec),
                    ts_micros: ts,
                };
                m.insert(&key, version, Some(encode(&record).into()));
            }
            EventBody::DeleteCheckpoint { run, name } => {
                m.insert(&checkpoint_key(run, name), version, None);
            }
            EventBody::PurgeRun { run } => {
                for table in Table::ALL {
                    let (start, end) = prefix_range(&KeyBuf::new(table).run(run).into_vec());
                    m.delete_range(start, end, version);
                }
            }
        }
        Ok(())
    }

    fn apply_task_status(
        &self,
        m: &Memtable,
        version: Version,
        ts: i64,
        attempt: &AttemptScope,
        status: &TaskStatus,
        worker: &str,
    ) -> Result<()> {
        let task_key = KeyBuf::new(Table::Tasks).task(&attempt.task).into_vec();
        let old: Option<TaskRecord> = self
            .latest(&task_key)?
            .map(|b| decode_as(Table::Tasks, &b))
            .transpose()?;
        let old_status = old.as_ref().map(|t| t.status.clone());
        let mut task = old.unwrap_or(TaskRecord {
            latest_try: attempt.try_number,
            status: status.clone(),
            attempts: Vec::new(),
            created_micros: ts,
            updated_micros: ts,
            lsn: version.lsn,
        });
        let slot = match task
            .attempts
            .binary_search_by_key(&attempt.try_number, |a| a.try_number)
        {
            Ok(i) => i,
            Err(i) => {
                task.attempts.insert(
                    i,
                    AttemptRecord {
                        try_number: attempt.try_number,
                        status: status.clone(),
                        started_micros: None,
                        finished_micros: None,
                        worker: String::new(),
                    },
                );
                i
            }
        };
        let a = &mut task.attempts[slot];
        a.status = status.clone();
        a.worker = worker.to_string();
        if matches!(status, TaskStatus::Running) && a.started_micros.is_none() {
            a.started_micros = Some(ts);
        }
        if is_final(status) {
            a.finished_micros = Some(ts);
        }
        if attempt.try_number >= task.latest_try {
            task.latest_try = attempt.try_number;
            task.status = status.clone();
        }
        task.updated_micros = ts;
        task.lsn = version.lsn;

        let run_key = KeyBuf::new(Table::Runs).run(&attempt.task.run).into_vec();
        let mut run = self.run_record(&run_key)?.unwrap_or_else(|| new_run(ts));
        if let Some(old_status) = &old_status {
            let n = run.task_counts.slot(old_status);
            *n = n.saturating_sub(1);
        }
        // Counts come from disk: a crafted record at u32::MAX saturates
        // rather than overflows.
        let n = run.task_counts.slot(&task.status);
        *n = n.saturating_add(1);
        run.updated_micros = ts;
        m.insert(&task_key, version, Some(encode(&task).into()));
        m.insert(&run_key, version, Some(encode(&run).into()));
        Ok(())
    }

    /// The run's attempt state, task state and shared variables, as they
    /// stand after everything applied so far.
    fn capture(&self, run: &RunScope) -> Result<Capture> {
        let levels = self.levels();
        let mut entries = Vec::new();
        for table in [Table::Kv, Table::TaskKv, Table::Shared] {
            let (start, end) = prefix_range(&KeyBuf::new(table).run(run).into_vec());
            // The applier reads everything applied: redb is never ahead.
            let rows = self
                .scan_at(&levels, &start, &end, u64::MAX)?
                .expect("redb never holds more than the applier applied");
            for (key, value) in rows {
                entries.push((key, value.to_vec()));
            }
        }
        Ok(Capture { entries })
    }

    fn apply_restore(
        &self,
        m: &Memtable,
        version: Version,
        run: &RunScope,
        name: &str,
    ) -> Result<()> {
        let record: Option<CheckpointRecord> = self
            .latest(&checkpoint_key(run, name))?
            .map(|b| decode_as(Table::Checkpoints, &b))
            .transpose()?;
        let capture = match record {
            Some(record) if record.verify() => {
                decode_as::<Capture>(Table::Checkpoints, &record.capture)?
            }
            _ => {
                self.skipped_restores.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
        };
        // Clear the run's state, then write the capture at the same version:
        // a range tombstone masks only what was written before it.
        for table in [Table::Kv, Table::TaskKv, Table::Shared] {
            let (start, end) = prefix_range(&KeyBuf::new(table).run(run).into_vec());
            m.delete_range(start, end, version);
        }
        let prefixes: Vec<Vec<u8>> = [Table::Kv, Table::TaskKv, Table::Shared]
            .iter()
            .map(|t| KeyBuf::new(*t).run(run).into_vec())
            .collect();
        for (key, value) in capture.entries {
            // A capture only ever holds the run's own keys; check anyway, as
            // its bytes came from disk.
            if prefixes.iter().any(|p| key.starts_with(p)) {
                m.insert(&key, version, Some(value.into()));
            }
        }
        Ok(())
    }
}

fn is_final(status: &TaskStatus) -> bool {
    matches!(
        status,
        TaskStatus::Succeeded { .. }
            | TaskStatus::Failed { .. }
            | TaskStatus::Interrupted
            | TaskStatus::Cancelled
    )
}

fn new_run(ts: i64) -> RunRecord {
    RunRecord {
        status: RunStatus::Created,
        created_micros: ts,
        updated_micros: ts,
        task_counts: TaskCounts::default(),
        parent: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{AttemptScope, TaskScope};

    /// A run record whose count is at `u32::MAX` (it comes from disk) takes
    /// one more task in that status without overflowing (it panicked in
    /// debug builds).
    #[test]
    fn a_task_count_at_its_maximum_saturates() {
        let views = Views::new(Lsn(0), None);
        let run = RunScope {
            tenant: "t".into(),
            dag: "d".into(),
            run: "r".into(),
        };
        let run_key = KeyBuf::new(Table::Runs).run(&run).into_vec();
        let mut record = new_run(0);
        record.task_counts.running = u32::MAX;
        let levels = views.levels();
        levels.active.insert(
            &run_key,
            Version { lsn: 1, index: 0 },
            Some(encode(&record).into()),
        );
        let running = Event {
            ts_micros: 1,
            body: EventBody::TaskStatus {
                attempt: AttemptScope {
                    task: TaskScope {
                        run: run.clone(),
                        task: "a".into(),
                    },
                    try_number: 1,
                },
                status: TaskStatus::Running,
                worker: "w".into(),
            },
        };
        views.apply(Lsn(2), &[running]).unwrap();
        let record = views.run_record(&run_key).unwrap().unwrap();
        assert_eq!(record.task_counts.running, u32::MAX);
    }
}
