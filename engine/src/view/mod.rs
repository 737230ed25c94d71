//! Views: the state the log's events add up to, kept in memory and read by
//! key.
//!
//! One applier at a time (the acker thread, the writer thread for a lone
//! batch while the acker is idle, or recovery on open) applies each
//! batch's events, in LSN order, to the active memtable once the batch
//! is durable in the mode asked for, then *publishes* the batch's LSN.
//! Readers read at the published LSN, so they see whole batches only, and
//! an append that has returned is visible to every later read on any thread
//! (read-your-writes). Readers take no lock the applier waits on.
//!
//! Reads go: active memtable → frozen memtable (while a snapshot is being
//! written) → redb. Deletes are tombstones; clearing a task's attempt state
//! and purging a run are range tombstones that mask older levels.
//!
//! The tables (`key::Table`): `kv` (attempt state), `task_kv` (task state
//! that survives retries), `tasks`, `runs`, `checkpoints`, `shared`.

pub(crate) mod feed;
pub(crate) mod key;
pub(crate) mod memtable;
pub mod record;
pub(crate) mod snapshot;
pub(crate) mod store;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::condition::{Condition, Found};
use crate::error::{Error, Result};
use crate::event::{AttemptScope, Event, EventBody, RunScope, RunStatus, TaskScope, TaskStatus};
use crate::log::Lsn;
use key::{KeyBuf, Table, prefix_range, take_part, take_u32};
use memtable::{Memtable, Version};

/// Keys and record bytes, in key order.
type Entries = Vec<(Vec<u8>, Bytes)>;
use record::{
    AttemptRecord, Capture, CheckpointRecord, KvValue, Record, RunRecord, SharedValue, TaskCounts,
    TaskRecord, decode, encode, encode_kv, stored_lsn,
};
use store::Store;

/// The version of the views' record encoding, stored in redb's `meta`.
/// Version 2 added `RunStatus::Paused` to run records; version 3 the zstd
/// bit of a value record's LSN (FORMAT.md, "Value compression").
pub const VIEWS_FORMAT_VERSION: u32 = 3;

/// The oldest views version this build reads; a snapshot rewrites the
/// file's version as [`VIEWS_FORMAT_VERSION`].
pub const VIEWS_FORMAT_VERSION_OLDEST: u32 = 1;

/// The levels a read goes through, newest first.
#[derive(Debug, Default)]
pub(crate) struct Levels {
    pub active: Arc<Memtable>,
    pub frozen: Option<Arc<Memtable>>,
    /// The last LSN in `frozen`: what its snapshot records as applied.
    pub frozen_lsn: Lsn,
}

/// The views of one engine: shared by the applier and every reader.
#[derive(Debug)]
pub(crate) struct Views {
    levels: RwLock<Arc<Levels>>,
    /// The highest LSN whose batch is applied and may be read.
    visible_lsn: AtomicU64,
    /// The highest LSN whose batch is applied, published or not (kept in
    /// debug builds only). Only the applier writes it; `freeze` checks that
    /// it equals `visible_lsn`.
    applied_upto: AtomicU64,
    /// Restores of a checkpoint that was missing or failed its checksum when
    /// applied (the kernel checks first; this counts what got past it).
    pub skipped_restores: AtomicU64,
    /// The redb file below the memtables (`None`: memory only).
    store: Option<Store>,
    /// Every batch up to this LSN is durable in the redb file.
    applied_lsn: AtomicU64,
    /// Snapshot bookkeeping, shared with the snapshotter and the writer.
    pub(crate) snap: SnapState,
}

/// What the snapshotter reports, and how the writer waits for it.
#[derive(Debug, Default)]
pub(crate) struct SnapState {
    pub snapshots: AtomicU64,
    pub last_duration_micros: AtomicU64,
    pub last_events: AtomicU64,
    /// When the last snapshot finished (or the views opened).
    pub last_at: Mutex<Option<Instant>>,
    /// Set once a snapshot failed: the snapshotter stops.
    pub failed: Mutex<Option<Arc<Error>>>,
    /// Signalled when a frozen memtable is dropped or a snapshot fails.
    pub done: Condvar,
    /// Held through one snapshot: the snapshotter thread and
    /// `Engine::snapshot` never write (and drop) a frozen memtable at once.
    pub one_at_a_time: Mutex<()>,
}

impl Views {
    /// Empty views that have applied everything up to `applied_lsn`.
    pub(crate) fn new(applied_lsn: Lsn, store: Option<Store>) -> Views {
        let snap = SnapState::default();
        *snap.last_at.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        Views {
            levels: RwLock::new(Arc::new(Levels::default())),
            visible_lsn: AtomicU64::new(applied_lsn.0),
            applied_upto: AtomicU64::new(applied_lsn.0),
            skipped_restores: AtomicU64::new(0),
            store,
            applied_lsn: AtomicU64::new(applied_lsn.0),
            snap,
        }
    }

    /// Every batch up to this LSN is durable in the redb file.
    pub(crate) fn applied_lsn(&self) -> Lsn {
        Lsn(self.applied_lsn.load(Ordering::Acquire))
    }

    /// Freezes the active memtable so the snapshotter can write it, unless
    /// a frozen one is still being written or nothing was applied. Called
    /// by the applier only, between groups, after everything applied is
    /// durable. Returns whether it froze.
    pub(crate) fn freeze(&self) -> bool {
        let mut slot = self.levels.write().unwrap_or_else(|e| e.into_inner());
        if slot.frozen.is_some() || slot.active.is_empty() {
            return false;
        }
        // Freezing mid-group would put applied, unpublished batches above
        // `frozen_lsn` into the frozen memtable: its snapshot would hold them
        // and the next open would apply them again.
        debug_assert_eq!(
            self.applied_upto.load(Ordering::Acquire),
            self.visible_lsn.load(Ordering::Acquire),
            "the applier freezes between groups only"
        );
        *slot = Arc::new(Levels {
            active: Arc::new(Memtable::default()),
            frozen: Some(Arc::clone(&slot.active)),
            frozen_lsn: self.visible_lsn(),
        });
        true
    }

    /// Writes the frozen memtable into redb and drops it. Called by the
    /// snapshotter only. Returns the events written, or `None` if nothing
    /// was frozen.
    pub(crate) fn snapshot_frozen(&self) -> Result<Option<u64>> {
        let levels = self.levels();
        let (Some(frozen), Some(store)) = (&levels.frozen, &self.store) else {
            return Ok(None);
        };
        let start = Instant::now();
        store.write_snapshot(frozen, levels.frozen_lsn)?;
        self.applied_lsn
            .store(levels.frozen_lsn.0, Ordering::Release);
        {
            let mut slot = self.levels.write().unwrap_or_else(|e| e.into_inner());
            *slot = Arc::new(Levels {
                active: Arc::clone(&slot.active),
                frozen: None,
                frozen_lsn: Lsn(0),
            });
        }
        let snap = &self.snap;
        snap.snapshots.fetch_add(1, Ordering::Relaxed);
        snap.last_events.store(frozen.events(), Ordering::Relaxed);
        snap.last_duration_micros.store(
            u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        *snap.last_at.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        snap.done.notify_all();
        Ok(Some(frozen.events()))
    }

    /// Records a failed snapshot: the snapshotter stops, the log is
    /// untouched, and writers waiting on the memory bound are released with
    /// an error.
    /// Returns the failure recorded (the first one, if an earlier snapshot
    /// failed too).
    pub(crate) fn snapshot_failed(&self, e: Error) -> Arc<Error> {
        let mut failed = self.snap.failed.lock().unwrap_or_else(|e| e.into_inner());
        if failed.is_none() {
            tracing::error!(
                cause = %e,
                applied_lsn = self.applied_lsn().0,
                "a snapshot failed: snapshots stop, the log is untouched and keeps every write"
            );
        }
        let first = Arc::clone(failed.get_or_insert_with(|| Arc::new(e)));
        self.snap.done.notify_all();
        first
    }

    /// The cause of a failed snapshot, if one failed.
    pub(crate) fn snapshot_failure(&self) -> Option<Arc<Error>> {
        self.snap
            .failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Waits until the memtables hold less than `bytes_max` or no frozen
    /// memtable is left to wait for. Errors if the snapshotter has failed.
    pub(crate) fn wait_below(&self, bytes_max: u64) -> Result<()> {
        let mut failed = self.snap.failed.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(cause) = failed.as_ref() {
                return Err(Error::MemtablesFull {
                    cause: Arc::clone(cause),
                });
            }
            let levels = self.levels();
            if levels.frozen.is_none() || self.memtable_bytes() < bytes_max {
                return Ok(());
            }
            failed = self
                .snap
                .done
                .wait_timeout(failed, Duration::from_millis(10))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Time since the last snapshot (or since open).
    pub(crate) fn since_last_snapshot(&self) -> Duration {
        self.snap
            .last_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map_or(Duration::ZERO, |t| t.elapsed())
    }

    pub(crate) fn levels(&self) -> Arc<Levels> {
        Arc::clone(&self.levels.read().unwrap_or_else(|e| e.into_inner()))
    }

    pub(crate) fn visible_lsn(&self) -> Lsn {
        Lsn(self.visible_lsn.load(Ordering::Acquire))
    }

    /// Approximate bytes held by the memtables.
    pub(crate) fn memtable_bytes(&self) -> u64 {
        let levels = self.levels();
        levels.active.bytes() + levels.frozen.as_ref().map_or(0, |f| f.bytes())
    }

    /// Makes every batch up to `lsn` visible to readers.
    pub(crate) fn publish(&self, lsn: Lsn) {
        debug_assert!(lsn.0 >= self.visible_lsn.load(Ordering::Relaxed));
        self.visible_lsn.store(lsn.0, Ordering::Release);
    }

    /// The value of `key` at `at_lsn`, through every level.
    fn get_at(&self, levels: &Levels, key: &[u8], at_lsn: u64) -> Result<Option<Bytes>> {
        let found = levels
            .active
            .get(key, at_lsn)
            .or_else(|| levels.frozen.as_ref().and_then(|f| f.get(key, at_lsn)));
        let (version, value) = match found {
            Some(found) => found,
            None => match &self.store {
                Some(store) => (Version::BASE, store.get(key)?.map(Bytes::from)),
                None => (Version::BASE, None),
            },
        };
        let masked = levels.active.masks(key, version, at_lsn)
            || levels
                .frozen
                .as_ref()
                .is_some_and(|f| f.masks(key, version, at_lsn));
        Ok(if masked { None } else { value })
    }

    /// Every live key in `[start, end)` at `at_lsn`, in key order; `None`
    /// if a snapshot committed batches newer than `at_lsn` into redb since
    /// `levels` and `at_lsn` were taken. redb's rows carry no versions, so
    /// they would then mix a later batch with the memtables' view at
    /// `at_lsn`, part of a batch with none of it: take fresh levels and
    /// read again. `levels` must be taken after `at_lsn` was read.
    pub(crate) fn scan_at(
        &self,
        levels: &Levels,
        start: &[u8],
        end: &[u8],
        at_lsn: u64,
    ) -> Result<Option<Entries>> {
        let mut merged: BTreeMap<Vec<u8>, (Version, Option<Bytes>)> = BTreeMap::new();
        if let Some(store) = &self.store {
            let (applied, rows) = store.scan(start, end)?;
            if applied.0 > at_lsn {
                return Ok(None);
            }
            for (key, value) in rows {
                merged.insert(key, (Version::BASE, Some(Bytes::from(value))));
            }
        }
        let memtables = || levels.frozen.iter().chain(std::iter::once(&levels.active));
        for level in memtables() {
            for (key, version, value) in level.scan(start, end, at_lsn) {
                merged.insert(key, (version, value));
            }
        }
        Ok(Some(
            merged
                .into_iter()
                .filter(|(key, (version, _))| {
                    !memtables().any(|level| level.masks(key, *version, at_lsn))
                })
                .filter_map(|(key, (_, value))| value.map(|v| (key, v)))
                .collect(),
        ))
    }

    /// Reads `key` as the applier: everything applied so far.
    fn latest(&self, key: &[u8]) -> Result<Option<Bytes>> {
        self.get_at(&self.levels(), key, u64::MAX)
    }

    /// Whether `condition` holds after everything applied so far: `None`
    /// if it does, else what was found. Called by the writer only, once no
    /// batch that may affect the condition is left unapplied (so the
    /// applier, busy with other keys, changes nothing it reads).
    pub(crate) fn check(&self, condition: &Condition) -> Result<Option<Found>> {
        let task_record = |task: &TaskScope| -> Result<Option<TaskRecord>> {
            self.latest(&KeyBuf::new(Table::Tasks).task(task).into_vec())?
                .map(|b| decode_as(Table::Tasks, &b))
                .transpose()
        };
        Ok(match condition {
            Condition::AttemptStatus { attempt, any_of } => {
                let status = task_record(&attempt.task)?.and_then(|t| {
                    t.attempts
                        .iter()
                        .find(|a| a.try_number == attempt.try_number)
                        .map(|a| a.status.kind())
                });
                (!any_of.contains(&status)).then_some(Found::AttemptStatus(status))
            }
            Condition::LatestTry { task, min, max } => {
                let record = task_record(task)?;
                let latest = record.as_ref().map_or(0, |t| t.latest_try);
                (!(*min..=*max).contains(&latest))
                    .then(|| Found::LatestTry(latest, record.map(|t| t.status.kind())))
            }
            Condition::NoOtherLiveAttempt { attempt } => task_record(&attempt.task)?
                .and_then(|t| {
                    t.attempts
                        .iter()
                        .filter(|a| a.try_number != attempt.try_number)
                        .map(|a| (a.try_number, a.status.kind()))
                        .find(|(_, k)| !k.is_final())
                })
                .map(|(n, k)| Found::LiveAttempt(n, k)),
            Condition::TaskKnown { task } => {
                let known = task_record(task)?.is_some()
                    || self.any_live(&KeyBuf::new(Table::Kv).task(task).into_vec())?
                    || self.any_live(&KeyBuf::new(Table::TaskKv).task(task).into_vec())?;
                (!known).then_some(Found::TaskUnknown)
            }
            Condition::RunStatus { run, any_of } => {
                let status = self
                    .run_record(&KeyBuf::new(Table::Runs).run(run).into_vec())?
                    .map(|r| r.status);
                (!any_of.contains(&status)).then_some(Found::RunStatus(status))
            }
            Condition::RunKnown { run } => {
                let mut known = false;
                for table in Table::ALL {
                    if self.any_live(&KeyBuf::new(table).run(run).into_vec())? {
                        known = true;
                        break;
                    }
                }
                (!known).then_some(Found::RunUnknown)
            }
            Condition::SharedWritable { run, key } => {
                let immutable = match self.latest(&shared_key(run, key))? {
                    Some(bytes) => decode_as::<SharedValue>(Table::Shared, &bytes)?.immutable,
                    None => false,
                };
                immutable.then_some(Found::SharedImmutable)
            }
            Condition::CheckpointAt { run, name, lsn } => {
                let found = match self.latest(&checkpoint_key(run, name))? {
                    Some(bytes) => {
                        Some(decode_as::<CheckpointRecord>(Table::Checkpoints, &bytes)?.lsn)
                    }
                    None => None,
                };
                (found != *lsn).then_some(Found::Checkpoint(found))
            }
        })
    }

    /// Whether any live key starts with `prefix`, after everything applied.
    fn any_live(&self, prefix: &[u8]) -> Result<bool> {
        let (start, end) = prefix_range(prefix);
        let levels = self.levels();
        // The common case without redb: a value in the active memtable is
        // its key's newest version, live unless a tombstone hides it.
        let live_in_active =
            levels
                .active
                .scan(&start, &end, u64::MAX)
                .into_iter()
                .any(|(key, version, value)| {
                    value.is_some()
                        && !levels.active.masks(&key, version, u64::MAX)
                        && !levels
                            .frozen
                            .as_ref()
                            .is_some_and(|f| f.masks(&key, version, u64::MAX))
                });
        if live_in_active {
            return Ok(true);
        }
        let rows = self
            .scan_at(&levels, &start, &end, u64::MAX)?
            .expect("redb never holds more than the applier applied");
        Ok(!rows.is_empty())
    }

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
                m.insert(&kv_key(attempt, key), version, Some(record));
            }
            EventBody::Delete { attempt, key } => m.insert(&kv_key(attempt, key), version, None),
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
                m.insert(&task_kv_key(task, key), version, Some(record));
            }
            EventBody::TaskDelete { task, key } => m.insert(&task_kv_key(task, key), version, None),
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

    fn run_record(&self, key: &[u8]) -> Result<Option<RunRecord>> {
        self.latest(key)?
            .map(|b| decode_as(Table::Runs, &b))
            .transpose()
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

fn kv_key(attempt: &AttemptScope, key: &str) -> Vec<u8> {
    KeyBuf::new(Table::Kv)
        .attempt(attempt)
        .part(key.as_bytes())
        .into_vec()
}

fn task_kv_key(task: &TaskScope, key: &str) -> Vec<u8> {
    KeyBuf::new(Table::TaskKv)
        .task(task)
        .part(key.as_bytes())
        .into_vec()
}

fn shared_key(run: &RunScope, key: &str) -> Vec<u8> {
    KeyBuf::new(Table::Shared)
        .run(run)
        .part(key.as_bytes())
        .into_vec()
}

fn checkpoint_key(run: &RunScope, name: &str) -> Vec<u8> {
    KeyBuf::new(Table::Checkpoints)
        .run(run)
        .part(name.as_bytes())
        .into_vec()
}

pub(crate) fn table_name(table: Table) -> &'static str {
    match table {
        Table::Kv => "kv",
        Table::TaskKv => "task_kv",
        Table::Tasks => "tasks",
        Table::Runs => "runs",
        Table::Checkpoints => "checkpoints",
        Table::Shared => "shared",
    }
}

fn decode_as<T>(table: Table, bytes: &[u8]) -> Result<T>
where
    T: Record,
{
    decode(bytes).map_err(|reason| Error::CorruptView {
        table: table_name(table),
        reason,
    })
}

fn corrupt_key(table: Table) -> Error {
    Error::CorruptView {
        table: table_name(table),
        reason: "malformed key".into(),
    }
}

fn utf8(table: Table, bytes: &[u8]) -> Result<String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| corrupt_key(table))
}

/// Live state bytes, from [`ViewReader::sizes`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Sizes {
    /// Every view together.
    pub total: u64,
    /// Per tenant.
    pub by_tenant: BTreeMap<String, u64>,
    /// Per run.
    pub by_run: BTreeMap<RunScope, u64>,
}

/// Reads the views of an open engine: point reads and scans of each table,
/// at the latest published LSN. Cheap to clone; `Send + Sync`.
///
/// Every read sees whole batches only, and sees every batch whose `append`
/// has returned (read-your-writes), on any thread.
///
/// ```
/// use waymark_engine::{
///     AttemptScope, Codec, Compression, Engine, Event, EventBody, Options, RunScope, TaskScope,
/// };
///
/// let dir = tempfile::tempdir()?;
/// let options = Options { compression: Some(Compression::default()), ..Options::default() };
/// let engine = Engine::open_with(waymark_engine::storage::file_system(), dir.path(), options)?;
/// let attempt = AttemptScope {
///     task: TaskScope {
///         run: RunScope { tenant: "acme".into(), dag: "docs".into(), run: "r1".into() },
///         task: "ocr".into(),
///     },
///     try_number: 1,
/// };
/// let lines = br#"{"text":"Invoice 17","amount":42.0}"#.repeat(100);
/// engine.append(vec![Event::now(EventBody::Put {
///     codec: Codec::Raw,
///     attempt: attempt.clone().into(),
///     key: "lines".into(),
///     value: lines.clone(),
///     meta: Vec::new(),
/// })])?;
/// // Stored compressed (3.5 KB of JSON), read back as written.
/// let value = engine.views().get(&attempt, "lines")?.expect("just written");
/// assert_eq!(value.value, lines);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct ViewReader {
    pub(crate) views: Arc<Views>,
}

impl ViewReader {
    /// The LSN reads are made at: every batch up to it is visible.
    pub fn visible_lsn(&self) -> Lsn {
        self.views.visible_lsn()
    }

    fn point<T>(&self, table: Table, key: &[u8]) -> Result<Option<T>>
    where
        T: Record,
    {
        let levels = self.views.levels();
        let at = self.views.visible_lsn().0;
        self.views
            .get_at(&levels, key, at)?
            .map(|b| decode_as(table, &b))
            .transpose()
    }

    fn range(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Bytes)>> {
        let (start, end) = prefix_range(prefix);
        loop {
            // The LSN first, then the levels: levels taken after it hold
            // every batch redb lacks, so redb at or below the LSN merges
            // with them whole. (Taken the other way round, two snapshots
            // between them could leave redb holding a memtable newer than
            // the levels, at or below the LSN.)
            let at = self.views.visible_lsn().0;
            let levels = self.views.levels();
            // A snapshot that lands in the middle of the scan means reading
            // again (snapshots are seconds apart).
            if let Some(rows) = self.views.scan_at(&levels, &start, &end, at)? {
                return Ok(rows);
            }
        }
    }

    /// Every entry under `prefix` whose key ends in one name after it, as
    /// (name, record).
    fn named<T>(&self, table: Table, prefix: &[u8]) -> Result<Vec<(String, T)>>
    where
        T: Record,
    {
        self.range(prefix)?
            .into_iter()
            .map(|(key, value)| {
                let mut rest = &key[prefix.len()..];
                let name = take_part(&mut rest).ok_or_else(|| corrupt_key(table))?;
                Ok((utf8(table, name)?, decode_as(table, &value)?))
            })
            .collect()
    }

    /// One key of a task attempt's state.
    pub fn get(&self, attempt: &AttemptScope, key: &str) -> Result<Option<KvValue>> {
        self.point(Table::Kv, &kv_key(attempt, key))
    }

    /// Every key of a task attempt's state, in key-encoding order.
    pub fn attempt_entries(&self, attempt: &AttemptScope) -> Result<Vec<(String, KvValue)>> {
        self.named(
            Table::Kv,
            &KeyBuf::new(Table::Kv).attempt(attempt).into_vec(),
        )
    }

    /// `key` in the attempt state of the task's latest attempt that has
    /// it: `(try_number, value)`. What an upstream read (`get_from`)
    /// needs: only the matching key's record is decoded.
    pub fn latest_attempt_value(
        &self,
        task: &TaskScope,
        key: &str,
    ) -> Result<Option<(u32, KvValue)>> {
        let prefix = KeyBuf::new(Table::Kv).task(task).into_vec();
        let mut found: Option<(u32, Bytes)> = None;
        // Keys sort by try then key: the last match is the latest try.
        for (k, value) in self.range(&prefix)? {
            let mut rest = &k[prefix.len()..];
            let try_number = take_u32(&mut rest).ok_or_else(|| corrupt_key(Table::Kv))?;
            let name = take_part(&mut rest).ok_or_else(|| corrupt_key(Table::Kv))?;
            if name == key.as_bytes() {
                found = Some((try_number, value));
            }
        }
        found
            .map(|(try_number, value)| Ok((try_number, decode_as(Table::Kv, &value)?)))
            .transpose()
    }

    /// Every key of every attempt of a task: `(try_number, key, value)`,
    /// by try then key.
    pub fn task_attempt_entries(&self, task: &TaskScope) -> Result<Vec<(u32, String, KvValue)>> {
        let prefix = KeyBuf::new(Table::Kv).task(task).into_vec();
        self.range(&prefix)?
            .into_iter()
            .map(|(key, value)| {
                let mut rest = &key[prefix.len()..];
                let try_number = take_u32(&mut rest).ok_or_else(|| corrupt_key(Table::Kv))?;
                let name = take_part(&mut rest).ok_or_else(|| corrupt_key(Table::Kv))?;
                Ok((
                    try_number,
                    utf8(Table::Kv, name)?,
                    decode_as(Table::Kv, &value)?,
                ))
            })
            .collect()
    }

    /// One key of a task's state (survives retries).
    pub fn task_state(&self, task: &TaskScope, key: &str) -> Result<Option<KvValue>> {
        self.point(Table::TaskKv, &task_kv_key(task, key))
    }

    /// Every key of a task's state.
    pub fn task_state_entries(&self, task: &TaskScope) -> Result<Vec<(String, KvValue)>> {
        self.named(
            Table::TaskKv,
            &KeyBuf::new(Table::TaskKv).task(task).into_vec(),
        )
    }

    /// A task's lifecycle: latest try, status, attempts.
    pub fn task(&self, task: &TaskScope) -> Result<Option<TaskRecord>> {
        self.point(
            Table::Tasks,
            &KeyBuf::new(Table::Tasks).task(task).into_vec(),
        )
    }

    /// Every task of a run that has a status, by task name.
    pub fn tasks(&self, run: &RunScope) -> Result<Vec<(String, TaskRecord)>> {
        self.named(Table::Tasks, &KeyBuf::new(Table::Tasks).run(run).into_vec())
    }

    /// Every task of a run with a status, attempt state or task state, by
    /// name: [`ViewReader::tasks`] leaves out tasks that wrote state but
    /// never had a status.
    pub fn task_names(&self, run: &RunScope) -> Result<Vec<String>> {
        let mut names: std::collections::BTreeSet<String> =
            self.tasks(run)?.into_iter().map(|(task, _)| task).collect();
        for table in [Table::Kv, Table::TaskKv] {
            let prefix = KeyBuf::new(table).run(run).into_vec();
            for (key, _) in self.range(&prefix)? {
                let mut rest = &key[prefix.len()..];
                let name = take_part(&mut rest).ok_or_else(|| corrupt_key(table))?;
                names.insert(utf8(table, name)?);
            }
        }
        Ok(names.into_iter().collect())
    }

    /// A run's status, times, task counts and parent.
    pub fn run(&self, run: &RunScope) -> Result<Option<RunRecord>> {
        self.point(Table::Runs, &KeyBuf::new(Table::Runs).run(run).into_vec())
    }

    /// A tenant's runs, optionally only those of one DAG.
    pub fn runs(&self, tenant: &str, dag: Option<&str>) -> Result<Vec<(RunScope, RunRecord)>> {
        let mut prefix = KeyBuf::new(Table::Runs).part(tenant.as_bytes());
        if let Some(dag) = dag {
            prefix = prefix.part(dag.as_bytes());
        }
        let prefix = prefix.into_vec();
        self.range(&prefix)?
            .into_iter()
            .map(|(key, value)| {
                let mut rest = &key[1..];
                let mut next = || {
                    take_part(&mut rest)
                        .ok_or_else(|| corrupt_key(Table::Runs))
                        .and_then(|p| utf8(Table::Runs, p))
                };
                let run = RunScope {
                    tenant: next()?,
                    dag: next()?,
                    run: next()?,
                };
                Ok((run, decode_as(Table::Runs, &value)?))
            })
            .collect()
    }

    /// Live state bytes (keys and encoded records, every view) per run and
    /// per tenant, for size accounting. This scans every view: its cost
    /// grows with the state, so call it when you need the figures, not on a
    /// hot path.
    pub fn sizes(&self) -> Result<Sizes> {
        let mut sizes = Sizes::default();
        for table in Table::ALL {
            let tag = [table as u8];
            for (key, value) in self.range(&tag)? {
                let mut rest = &key[1..];
                let mut next = || {
                    take_part(&mut rest)
                        .ok_or_else(|| corrupt_key(table))
                        .and_then(|p| utf8(table, p))
                };
                let run = RunScope {
                    tenant: next()?,
                    dag: next()?,
                    run: next()?,
                };
                let bytes = (key.len() + value.len()) as u64;
                *sizes.by_tenant.entry(run.tenant.clone()).or_default() += bytes;
                *sizes.by_run.entry(run).or_default() += bytes;
                sizes.total += bytes;
            }
        }
        Ok(sizes)
    }

    /// One run-shared variable.
    pub fn shared(&self, run: &RunScope, key: &str) -> Result<Option<SharedValue>> {
        self.point(Table::Shared, &shared_key(run, key))
    }

    /// Every shared variable of a run, by key.
    pub fn shared_entries(&self, run: &RunScope) -> Result<Vec<(String, SharedValue)>> {
        self.named(
            Table::Shared,
            &KeyBuf::new(Table::Shared).run(run).into_vec(),
        )
    }

    /// One named checkpoint of a run.
    pub fn checkpoint(&self, run: &RunScope, name: &str) -> Result<Option<CheckpointRecord>> {
        self.point(Table::Checkpoints, &checkpoint_key(run, name))
    }

    /// Every checkpoint of a run, by name.
    pub fn checkpoints(&self, run: &RunScope) -> Result<Vec<(String, CheckpointRecord)>> {
        self.named(
            Table::Checkpoints,
            &KeyBuf::new(Table::Checkpoints).run(run).into_vec(),
        )
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
