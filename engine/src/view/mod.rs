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
//!
//! This module holds the levels and what crosses them (publish, freeze,
//! snapshot hand-off, reads at an LSN, the writer's condition checks); the
//! event fold is `fold`, the public read handle `reader`.

pub(crate) mod feed;
mod fold;
pub(crate) mod key;
pub(crate) mod memtable;
mod reader;
pub mod record;
pub(crate) mod snapshot;
pub(crate) mod store;

pub use reader::{Sizes, ViewReader};

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::condition::{Condition, Found};
use crate::error::{Error, Result};
use crate::event::TaskScope;
use crate::log::Lsn;
use key::{KeyBuf, Table, checkpoint_key, prefix_range, shared_key};
use memtable::{Memtable, Version};
use record::{CheckpointRecord, Record, RunRecord, SharedValue, TaskRecord, decode};
use store::Store;

/// Keys and record bytes, in key order.
type Entries = Vec<(Vec<u8>, Bytes)>;

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

    /// Waits until the memtables hold less than `bytes_max` bytes and
    /// `events_max` events, or no frozen memtable is left to wait for.
    /// Errors if the snapshotter has failed.
    pub(crate) fn wait_below(&self, bytes_max: u64, events_max: u64) -> Result<()> {
        let mut failed = self.snap.failed.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(cause) = failed.as_ref() {
                return Err(Error::MemtablesFull {
                    cause: Arc::clone(cause),
                });
            }
            let levels = self.levels();
            if levels.frozen.is_none() || self.below(bytes_max, events_max) {
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
        self.held().0
    }

    /// Events the memtables hold (active and frozen).
    pub(crate) fn memtable_events(&self) -> u64 {
        self.held().1
    }

    /// Whether the memtables together hold less than `bytes_max` bytes and
    /// `events_max` events.
    pub(crate) fn below(&self, bytes_max: u64, events_max: u64) -> bool {
        let (bytes, events) = self.held();
        bytes < bytes_max && events < events_max
    }

    /// Bytes and events the memtables hold (active and frozen), read from
    /// one view of the levels.
    fn held(&self) -> (u64, u64) {
        let levels = self.levels();
        let frozen = levels.frozen.as_ref();
        (
            levels.active.bytes() + frozen.map_or(0, |f| f.bytes()),
            levels.active.events() + frozen.map_or(0, |f| f.events()),
        )
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

    /// The run record at `key` (a `runs` key), as last applied.
    fn run_record(&self, key: &[u8]) -> Result<Option<RunRecord>> {
        self.latest(key)?
            .map(|b| decode_as(Table::Runs, &b))
            .transpose()
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
        let live_in_active = levels.active.any_value(&start, &end, |key, version| {
            levels.active.masks(key, version, u64::MAX)
                || levels
                    .frozen
                    .as_ref()
                    .is_some_and(|f| f.masks(key, version, u64::MAX))
        });
        if live_in_active {
            return Ok(true);
        }
        let rows = self
            .scan_at(&levels, &start, &end, u64::MAX)?
            .expect("redb never holds more than the applier applied");
        Ok(!rows.is_empty())
    }
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
