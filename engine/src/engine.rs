//! [`Engine`]: opens a state directory, recovers its log, and appends.
//!
//! Opening takes the directory's lock, runs recovery, and starts the writer
//! thread. `append` checks limits and encodes the batch on the caller's
//! thread, then hands it to the writer and waits for its acknowledgement.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;

use crossbeam_channel::{Sender, bounded};

use crate::condition::Condition;
use crate::error::{Error, Invalid, Limit, Result};
use crate::event::{ArchivedEvent, Event, encode_batch_in};
use crate::lock::lock_dir;
use crate::log::ack::{AckReceiver, ack_channel};
use crate::log::sink::Sink;
use crate::log::writer::{Msg, Shared, Writer};
use crate::log::{LOG_DIR_NAME, LogReader, Lsn, RecoveryReport, recovery};
use crate::options::Options;
use crate::storage::{FsStorage, LockGuard, Storage};
use crate::view::feed::ViewFeed;
use crate::view::snapshot::{self, Snapshots, Wake};
use crate::view::store::Store;
use crate::view::{ViewReader, Views};

/// An open state directory: the single writer of its log.
///
/// `Engine` is cheap to clone and `Send + Sync`; clones share one writer.
/// The writer stops (after syncing) when the last clone is dropped or
/// [`Engine::close`] is called.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    storage: Arc<dyn Storage>,
    options: Options,
    tx: Sender<Msg>,
    writer: std::sync::Mutex<Option<JoinHandle<()>>>,
    shared: Arc<Shared>,
    report: RecoveryReport,
    replay: ReplayStats,
    views: Arc<Views>,
    /// What a snapshot needs (shared with the snapshotter thread).
    snaps: Arc<Snapshots>,
    /// Wakes (or stops) the snapshotter thread, and its handle.
    snapshotter: std::sync::Mutex<Option<(Sender<Wake>, JoinHandle<()>)>>,
    log_id: u128,
    _lock: LockGuard,
}

/// Counters since the engine was opened. Cheap to take: every field is a
/// counter or a copy. Bytes per tenant and per run need a scan of the
/// views: [`Engine::sizes`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Batches appended (acknowledged or written).
    pub batches: u64,
    /// Payload bytes appended.
    pub payload_bytes: u64,
    /// Log bytes written (frames, padding included).
    pub log_bytes: u64,
    /// Group commits.
    pub groups: u64,
    /// Batches refused by [`Engine::append_if`] because a condition did not
    /// hold (never written).
    pub conflicts: u64,
    /// `fdatasync` calls on segments.
    pub fsyncs: u64,
    /// Segments created.
    pub segments_created: u64,
    /// The highest LSN written.
    pub written_lsn: Lsn,
    /// The highest LSN made durable.
    pub durable_lsn: Lsn,
    /// The highest LSN applied to the views and visible to readers.
    pub visible_lsn: Lsn,
    /// Approximate bytes held by the memtables (active and frozen).
    pub memtable_bytes: u64,
    /// Events held by the memtables (active and frozen): applied, not yet
    /// in a snapshot. What an open after a crash now would replay, about;
    /// appends wait once it reaches `SnapshotOptions::memtable_events_max`.
    pub memtable_events: u64,
    /// Batches the last open replayed from the log into the views.
    pub replayed_batches: u64,
    /// Events the last open replayed from the log into the views.
    pub replayed_events: u64,
    /// How long the last open's replay into the views took.
    pub replay_duration: std::time::Duration,
    /// How long the last open took in all (lock, views file, log recovery,
    /// replay).
    pub recovery_duration: std::time::Duration,
    /// The first LSN the last open replayed (the one after the snapshot).
    pub replayed_from: Lsn,
    /// Why the last open rebuilt the views from the log, if it did.
    pub views_rebuilt: Option<String>,
    /// Every batch up to this LSN is durable in the views' redb file.
    pub applied_lsn: Lsn,
    /// Snapshots written since open.
    pub snapshots: u64,
    /// How long the last snapshot took.
    pub last_snapshot_duration: std::time::Duration,
    /// Events the last snapshot wrote.
    pub last_snapshot_events: u64,
    /// Why the snapshotter stopped, if a snapshot failed.
    pub snapshot_error: Option<String>,
    /// Segments removed by retention since open.
    pub segments_removed: u64,
    /// Segments archived by retention since open.
    pub segments_archived: u64,
}

impl Stats {
    /// Mean batches per group commit.
    pub fn mean_group_batches(&self) -> f64 {
        if self.groups == 0 {
            0.0
        } else {
            self.batches as f64 / self.groups as f64
        }
    }
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("dir", &self.inner.dir)
            .finish_non_exhaustive()
    }
}

/// The operator's events of a recovery: a torn tail cut (with its segment,
/// offset, LSN and bytes), a torn segment creation removed, and what
/// salvage dropped.
fn trace_recovery(dir: &Path, report: &RecoveryReport) {
    if let Some(cut) = &report.torn_tail {
        tracing::warn!(
            dir = %dir.display(),
            segment = %cut.segment.display(),
            offset = cut.offset,
            lsn = cut.expected_lsn.0,
            bytes_dropped = cut.bytes_dropped,
            reason = %cut.reason,
            "cut a torn tail: the log ends at the last whole frame"
        );
    }
    if let Some(segment) = &report.removed_torn_segment {
        tracing::warn!(
            dir = %dir.display(),
            segment = %segment.display(),
            "removed a segment whose creation was torn"
        );
    }
    if let Some(s) = &report.salvaged {
        tracing::error!(
            dir = %dir.display(),
            segment = %s.cut.segment.display(),
            offset = s.cut.offset,
            lsn = s.cut.expected_lsn.0,
            bytes_dropped = s.cut.bytes_dropped,
            segments_removed = s.segments_removed.len(),
            segment_bytes_removed = s.segment_bytes_removed,
            reason = %s.cut.reason,
            "salvage cut the log at a corrupt frame and dropped everything after it"
        );
    }
}

fn sync_parent(storage: &dyn Storage, path: &Path) -> Result<()> {
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    storage.sync_dir(parent).map_err(|e| Error::io(parent, e))
}

impl Engine {
    /// Opens (or creates) the state directory `dir` on the real file system
    /// with default [`Options`].
    ///
    /// # Errors
    ///
    /// A held lock ([`Error::AlreadyOpenInThisProcess`],
    /// [`Error::LockedByOtherProcess`]), corruption found by recovery
    /// ([`Error::Corruption`], [`Error::Gap`]), or I/O errors.
    pub fn open(dir: impl AsRef<Path>) -> Result<Engine> {
        Engine::open_with(Arc::new(FsStorage), dir, Options::default())
    }

    /// Opens (or creates) the state directory `dir` on `storage`.
    ///
    /// # Errors
    ///
    /// As [`Engine::open`], and [`Error::InvalidOptions`].
    pub fn open_with(
        storage: Arc<dyn Storage>,
        dir: impl AsRef<Path>,
        options: Options,
    ) -> Result<Engine> {
        Engine::open_feeding(storage, dir, options, |feed| feed)
    }

    /// [`Engine::open_with`], with the writer's sink (the views' feed)
    /// passed through `wrap` first: tests put a failing or counting sink
    /// around it there, instead of hooks in the apply path.
    pub(crate) fn open_feeding(
        storage: Arc<dyn Storage>,
        dir: impl AsRef<Path>,
        options: Options,
        wrap: impl FnOnce(Arc<dyn Sink>) -> Arc<dyn Sink>,
    ) -> Result<Engine> {
        options.validate()?;
        let opened_at = std::time::Instant::now();
        let dir = dir.as_ref().to_path_buf();
        let log_dir = dir.join(LOG_DIR_NAME);
        let fresh = !storage
            .exists(&log_dir)
            .map_err(|e| Error::io(&log_dir, e))?;
        if fresh {
            storage
                .create_dir_all(&log_dir)
                .map_err(|e| Error::io(&log_dir, e))?;
        }
        // The directories are durable only once their parents say so. Synced
        // on every open, not only on the one that made them: that one may
        // have crashed before its syncs.
        sync_parent(storage.as_ref(), &dir)?;
        sync_parent(storage.as_ref(), &log_dir)?;
        let lock = lock_dir(storage.as_ref(), &dir)?;
        let probe = Store::probe(&storage, &dir)?;
        let prealloc = options.preallocate.then_some(options.segment_bytes_max);
        let verify_from = probe.verify_from();
        let recovered = recovery::recover(
            storage.as_ref(),
            &log_dir,
            options.recovery,
            prealloc,
            verify_from,
        )?;
        let resume_at = recovered.resume_at;
        trace_recovery(&dir, &recovered.report);
        let shared = Arc::new(Shared::default());
        // The writer creates the first segment of a new log before the views
        // file records the log's id: a crash in between leaves a log whose
        // id a new views file takes, never a views file naming a lost log.
        let mut writer = Writer::new(
            Arc::clone(&storage),
            log_dir,
            options.clone(),
            recovered.log_id,
            recovered.tail,
            recovered.next_lsn,
            Arc::clone(&shared),
        )?;
        let log_id = writer.log_id();
        let log_first = recovered.report.first_lsn.unwrap_or(recovered.next_lsn);
        let log_last = Lsn(recovered.next_lsn.0 - 1);
        let opened = Store::attach(probe, &storage, &dir, log_id, log_first, log_last)?;
        let applied_lsn = opened.applied_lsn;
        let views = Arc::new(Views::new(applied_lsn, Some(opened.store)));
        let from = applied_lsn.next();
        let hint = resume_at.filter(|_| from == verify_from);
        let mut replay = replay_into(&views, &storage, &dir, from, log_last, hint)?;
        if let Some(why) = &opened.rebuilt {
            tracing::warn!(dir = %dir.display(), reason = %why, "views rebuilt from the log");
        }
        replay.views_rebuilt = opened.rebuilt;
        replay.open_duration = opened_at.elapsed();
        tracing::info!(
            dir = %dir.display(),
            first_lsn = log_first.0,
            last_lsn = log_last.0,
            applied_lsn = applied_lsn.0,
            replayed_batches = replay.batches,
            micros = u64::try_from(replay.open_duration.as_micros()).unwrap_or(u64::MAX),
            "opened"
        );
        let (tx, rx) = bounded(options.writer_queue_depth as usize);
        let snaps = Arc::new(Snapshots {
            views: Arc::clone(&views),
            storage: Arc::clone(&storage),
            log_dir: dir.join(LOG_DIR_NAME),
            retention: options.retention.clone(),
            removed: AtomicU64::new(0),
            archived: AtomicU64::new(0),
            poison: Arc::clone(&shared.poison),
        });
        let wake = options.snapshots.enabled.then(|| bounded(1));
        let feed = ViewFeed::new(
            Arc::clone(&views),
            wake.as_ref().map(|(tx, _)| tx.clone()),
            options.snapshots.clone(),
        );
        writer.set_sink(wrap(Arc::new(feed)));
        let snapshotter = if let Some((wake_tx, wake_rx)) = wake {
            let snaps = Arc::clone(&snaps);
            let writer_tx = tx.clone();
            let snap_options = options.snapshots.clone();
            let handle = std::thread::Builder::new()
                .name("waymark-snapshotter".into())
                .spawn(move || snapshot::run(snaps, writer_tx, wake_rx, snap_options))
                .map_err(|e| Error::io(&dir, e))?;
            Some((wake_tx, handle))
        } else {
            None
        };
        let handle = std::thread::Builder::new()
            .name("waymark-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| Error::io(&dir, e))?;
        Ok(Engine {
            inner: Arc::new(Inner {
                dir,
                storage,
                options,
                tx,
                writer: std::sync::Mutex::new(Some(handle)),
                shared,
                report: recovered.report,
                replay,
                views,
                snaps,
                snapshotter: std::sync::Mutex::new(snapshotter),
                log_id,
                _lock: lock,
            }),
        })
    }

    /// Appends one batch atomically and returns its LSN once it is durable in
    /// the configured [`crate::Durability`] mode.
    ///
    /// # Errors
    ///
    /// [`Error::EmptyBatch`], [`Error::LimitExceeded`] and
    /// [`Error::InvalidEvent`] before anything is written; [`Error::Poisoned`] after an earlier failure; I/O errors
    /// ([`Error::Io`], [`Error::DiskFull`]) if the batch's group failed, in
    /// which case the batch may or may not be in the log after a reopen, but
    /// never partly; [`Error::Closed`] after [`Engine::close`].
    pub fn append(&self, batch: Vec<Event>) -> Result<Lsn> {
        self.append_if(Vec::new(), batch)
    }

    /// Appends one batch atomically if every one of `conditions` holds when
    /// its turn comes: checked by the writer in LSN order, after every
    /// earlier batch and before this one is written (see [`Condition`]).
    /// Returns its LSN once durable, as [`Engine::append`].
    ///
    /// This is how a decision taken from state and the write it leads to
    /// are one step: of racing callers whose conditions exclude each other,
    /// exactly one is written. Batches whose conditions concern unrelated
    /// tasks share a group commit as plain appends do.
    ///
    /// Under [`crate::Durability::Periodic`] and
    /// [`crate::Durability::None`], conditions see batches acknowledged but
    /// not yet synced, as every reader does; a crash may lose such a batch
    /// and with it the reason a later batch was refused.
    ///
    /// # Errors
    ///
    /// [`Error::Conflict`] if a condition did not hold (the first that
    /// failed, and what the views held): nothing was written. A view that
    /// cannot be read ([`Error::CorruptView`], [`Error::Views`]) fails the
    /// batch likewise. Else as [`Engine::append`].
    pub fn append_if(&self, conditions: Vec<Condition>, mut batch: Vec<Event>) -> Result<Lsn> {
        let limits = &self.inner.options.limits;
        if batch.is_empty() {
            return Err(Error::EmptyBatch);
        }
        if batch.len() as u64 > u64::from(limits.batch_events_max) {
            return Err(Error::LimitExceeded {
                what: Limit::BatchEvents,
                actual_bytes: batch.len() as u64,
                max_bytes: u64::from(limits.batch_events_max),
            });
        }
        let batch_bytes_max = u64::from(limits.batch_bytes_max);
        let mut least_bytes = 0u64;
        for event in &batch {
            least_bytes = least_bytes.saturating_add(event.check(limits)?);
        }
        // Refused before encoding: a batch far over the limit would first
        // be encoded whole (gigabytes, or past what rkyv can encode).
        if least_bytes > batch_bytes_max {
            return Err(Error::LimitExceeded {
                what: Limit::BatchBytes,
                actual_bytes: least_bytes,
                max_bytes: batch_bytes_max,
            });
        }
        if let Some(e) = self.inner.shared.poison.get() {
            return Err(e);
        }
        // On the caller's thread, once: the log and the views store the
        // same compressed bytes.
        if let Some(compression) = &self.inner.options.compression {
            crate::event::compress_values(&mut batch, compression);
        }
        // Sized once from what the limits check counted (the names, keys
        // and values, each event's fixed part besides): a batch of a
        // thousand sets is not copied at each doubling of its buffer. With
        // compression, more than it needs: what it would take uncompressed.
        let capacity = usize::try_from(least_bytes)
            .unwrap_or(usize::MAX)
            .saturating_add(batch.len() * std::mem::size_of::<ArchivedEvent>());
        let payload = encode_batch_in(&batch, rkyv::util::AlignedVec::with_capacity(capacity))?;
        if payload.len() as u64 > batch_bytes_max {
            return Err(Error::LimitExceeded {
                what: Limit::BatchBytes,
                actual_bytes: payload.len() as u64,
                max_bytes: u64::from(limits.batch_bytes_max),
            });
        }
        let (ack, rx) = ack_channel();
        let shared = &self.inner.shared;
        let poll = payload.len() <= ACK_POLL_PAYLOAD_MAX;
        shared.in_flight.fetch_add(1, Ordering::AcqRel);
        let result = self
            .send(Msg::Append {
                payload,
                events: batch,
                conditions,
                ack,
            })
            .and_then(|()| wait_for_ack(shared, &rx, poll))
            // An ack dropped unanswered by a thread that died (a bug) says
            // `Closed`; the engine is poisoned by then, and says why.
            .map_err(|e| match e {
                Error::Closed => shared.poison.get().unwrap_or(Error::Closed),
                e => e,
            });
        shared.in_flight.fetch_sub(1, Ordering::AcqRel);
        result
    }

    /// Syncs everything written so far, whatever the durability mode, and
    /// returns the durable LSN.
    ///
    /// # Errors
    ///
    /// As the failure of a group in [`Engine::append`].
    pub fn flush(&self) -> Result<Lsn> {
        let (ack, rx) = ack_channel();
        self.send(Msg::Flush { ack })?;
        wait_parked(&self.inner.shared, &rx)
    }

    /// Syncs and stops the writer; later appends get [`Error::Closed`].
    /// Dropping the last clone does the same.
    ///
    /// # Errors
    ///
    /// The failure of the final sync, or [`Error::Poisoned`].
    pub fn close(&self) -> Result<()> {
        let (ack, rx) = ack_channel();
        self.send(Msg::Close { ack })?;
        wait_parked(&self.inner.shared, &rx).map(|_| ())
    }

    fn send(&self, msg: Msg) -> Result<()> {
        self.inner.tx.send(msg).map_err(|_| Error::Closed)
    }

    /// A reader of this engine's log (it takes no lock).
    pub fn reader(&self) -> LogReader {
        LogReader::of_log_dir(
            Arc::clone(&self.inner.storage),
            self.inner.dir.join(crate::log::LOG_DIR_NAME),
        )
    }

    /// Writes the active memtable into the views' redb file now, and
    /// returns once it is durable there: the next open replays nothing
    /// before this point. Snapshots also run on their own (see
    /// [`crate::SnapshotOptions`]); this is for tests, tools and shutdown.
    ///
    /// # Errors
    ///
    /// [`Error::SnapshotFailed`] with the cause (the redb file's error, a
    /// full disk) if this or an earlier snapshot failed (the snapshotter
    /// then stops; the log is untouched), or the errors of
    /// [`Engine::flush`].
    pub fn snapshot(&self) -> Result<Lsn> {
        let views = &self.inner.views;
        if let Some(cause) = views.snapshot_failure() {
            return Err(Error::SnapshotFailed { cause });
        }
        // Every batch acknowledged before this call is visible now.
        let target = views.visible_lsn();
        // A memtable frozen earlier (for the memory bound) is written
        // first, and holds only batches before it: then freeze and write
        // again. Until `target` is covered, or a pass writes nothing (the
        // batches after the last one changed no view: nothing to replay),
        // three passes at most.
        for _ in 0..3 {
            let before = views.applied_lsn();
            snapshot::snapshot_once(&self.inner.snaps, &self.inner.tx).map_err(|e| match e {
                Error::Closed => e,
                e => Error::SnapshotFailed {
                    cause: views.snapshot_failed(e),
                },
            })?;
            let after = views.applied_lsn();
            if after >= target || after == before {
                break;
            }
        }
        Ok(views.applied_lsn())
    }

    /// Reads the views: attempt state, task state, tasks, runs, shared
    /// variables and checkpoints, at the latest published LSN.
    pub fn views(&self) -> ViewReader {
        ViewReader {
            views: Arc::clone(&self.inner.views),
        }
    }

    /// Live state bytes per run and per tenant, for size accounting: a
    /// scan of every view, so its cost grows with the state (unlike
    /// [`Engine::stats`]).
    ///
    /// # Errors
    ///
    /// [`Error::Views`] or [`Error::CorruptView`] if a view cannot be read.
    pub fn sizes(&self) -> Result<crate::Sizes> {
        self.views().sizes()
    }

    /// What recovery found and did when this engine opened.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.inner.report
    }

    /// The state directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The log's id (it seeds every frame's checksum).
    pub fn log_id(&self) -> u128 {
        self.inner.log_id
    }

    /// The options the engine was opened with.
    pub fn options(&self) -> &Options {
        &self.inner.options
    }

    /// The highest LSN made durable by an `fdatasync` (cheap: one atomic
    /// load, unlike [`Engine::stats`]).
    pub fn durable_lsn(&self) -> Lsn {
        Lsn(self.inner.shared.durable_lsn.load(Ordering::Acquire))
    }

    /// Counters since open.
    pub fn stats(&self) -> Stats {
        let s = &self.inner.shared;
        let views = &self.inner.views;
        Stats {
            batches: s.batches.load(Ordering::Relaxed),
            payload_bytes: s.payload_bytes.load(Ordering::Relaxed),
            log_bytes: s.log_bytes.load(Ordering::Relaxed),
            groups: s.groups.load(Ordering::Relaxed),
            conflicts: s.conflicts.load(Ordering::Relaxed),
            fsyncs: s.fsyncs.load(Ordering::Relaxed),
            segments_created: s.segments_created.load(Ordering::Relaxed),
            written_lsn: Lsn(s.written_lsn.load(Ordering::Acquire)),
            durable_lsn: self.durable_lsn(),
            visible_lsn: self.inner.views.visible_lsn(),
            memtable_bytes: self.inner.views.memtable_bytes(),
            memtable_events: self.inner.views.memtable_events(),
            replayed_batches: self.inner.replay.batches,
            replayed_events: self.inner.replay.events,
            replay_duration: self.inner.replay.duration,
            recovery_duration: self.inner.replay.open_duration,
            replayed_from: self.inner.replay.from,
            views_rebuilt: self.inner.replay.views_rebuilt.clone(),
            applied_lsn: views.applied_lsn(),
            snapshots: views.snap.snapshots.load(Ordering::Relaxed),
            last_snapshot_duration: std::time::Duration::from_micros(
                views.snap.last_duration_micros.load(Ordering::Relaxed),
            ),
            last_snapshot_events: views.snap.last_events.load(Ordering::Relaxed),
            snapshot_error: views.snapshot_failure().map(|e| e.to_string()),
            segments_removed: self.inner.snaps.removed.load(Ordering::Relaxed),
            segments_archived: self.inner.snaps.archived.load(Ordering::Relaxed),
        }
    }
}

/// How the views were brought up to date on open.
#[derive(Clone, Debug, Default)]
struct ReplayStats {
    from: Lsn,
    batches: u64,
    events: u64,
    duration: std::time::Duration,
    views_rebuilt: Option<String>,
    /// The whole open up to the replay's end: lock, views file, log
    /// recovery, replay.
    open_duration: std::time::Duration,
}

/// Applies every batch of the recovered log from `from` on to `views` and
/// publishes it.
/// `hint` is where recovery found the frame `from`: (segment base, offset).
fn replay_into(
    views: &Views,
    storage: &Arc<dyn Storage>,
    dir: &Path,
    from: Lsn,
    until: Lsn,
    hint: Option<(Lsn, u64)>,
) -> Result<ReplayStats> {
    let start = std::time::Instant::now();
    let reader = LogReader::open_on(Arc::clone(storage), dir)?;
    let mut cursor = match hint {
        Some((base, offset)) => reader.cursor_at(from, base, offset),
        None => reader.cursor(from),
    };
    let mut stats = ReplayStats {
        from,
        ..ReplayStats::default()
    };
    let mut last = None;
    while let Some(frame) = cursor.next_frame()? {
        let events = frame.decode_stored()?;
        views.apply(frame.lsn(), &events)?;
        stats.batches += 1;
        stats.events += events.len() as u64;
        last = Some(frame.lsn());
    }
    // Recovery proved every frame up to `until` valid; a cursor that stops
    // before it (it treats a bad frame at the log's end as a tail still
    // being written) means the bytes changed under us: refuse, never open
    // with views that silently miss acknowledged batches.
    let reached = last.unwrap_or(Lsn(from.0 - 1));
    if reached < until {
        let stop = cursor.tail().cloned();
        return Err(Error::Corruption {
            segment: stop.as_ref().map(|t| t.segment.clone()).unwrap_or_default(),
            offset: stop.as_ref().map_or(0, |t| t.offset),
            expected_lsn: reached.next(),
            reason: stop.and_then(|t| t.invalid).unwrap_or(Invalid::Truncated),
        });
    }
    if let Some(lsn) = last {
        views.publish(lsn);
    }
    stats.duration = start.elapsed();
    Ok(stats)
}

/// Longest a caller polls for its acknowledgement before it parks.
const ACK_SPIN: std::time::Duration = std::time::Duration::from_millis(1);

/// The largest encoded batch whose caller polls for its acknowledgement.
/// A larger batch keeps the writer (and then the snapshotter) busy for
/// longer than a wake-up costs: a caller polling through it would take a
/// core they need (on 2 cores, 1,000-set batches ran at 0.7x the rate so).
const ACK_POLL_PAYLOAD_MAX: usize = 8 << 10;

/// Waits for an acknowledgement. A caller that is the only append in flight
/// polls instead of parking if `poll` (its batch is small): on a virtual
/// machine, waking a thread whose CPU went idle during the fsync costs tens
/// of microseconds, a third of a fast fsync (see BENCHMARKS.md,
/// append_sync/1). It parks at once if the last group held several batches
/// (other callers come and go between their acks, and a poller would hold
/// one of their cores through a whole fsync), and stops polling as soon as
/// another append is in flight, so concurrent writers never lose CPU that
/// group commit needs.
fn wait_for_ack(shared: &Shared, rx: &AckReceiver, poll: bool) -> Result<Lsn> {
    if poll
        && shared.last_group_batches.load(Ordering::Relaxed) <= 1
        && shared
            .ack_spinners
            .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    {
        let start = std::time::Instant::now();
        let got = loop {
            if let Some(result) = rx.try_recv() {
                break Some(result);
            }
            if start.elapsed() < ACK_SPIN && shared.in_flight.load(Ordering::Acquire) == 1 {
                std::hint::spin_loop();
            } else {
                break None;
            }
        };
        shared.ack_spinners.store(0, Ordering::Release);
        if let Some(result) = got {
            return result;
        }
    }
    wait_parked(shared, rx)
}

/// Waits parked for an acknowledgement, and stops waiting once the writer
/// thread is gone.
fn wait_parked(shared: &Shared, rx: &AckReceiver) -> Result<Lsn> {
    loop {
        if let Some(result) = rx.recv_timeout(WRITER_GONE_CHECK) {
            return result;
        }
        // A message the writer never took (it panicked) holds our ack's
        // sender for as long as any engine handle lives.
        if shared.writer_gone.load(Ordering::Acquire) {
            return rx.try_recv().unwrap_or(Err(Error::Closed));
        }
    }
}

/// How often a parked caller checks that the writer thread is still there.
/// An fsync takes well under this, so a healthy caller never wakes for it.
const WRITER_GONE_CHECK: std::time::Duration = std::time::Duration::from_millis(100);

impl Drop for Inner {
    fn drop(&mut self) {
        // The snapshotter holds a sender to the writer: stop it first.
        let snapshotter = self
            .snapshotter
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some((wake, handle)) = snapshotter {
            // A full channel holds a wake already; the stop follows it.
            let _ = wake.send(Wake::Stop);
            let _ = handle.join();
        }
        // Closing the channel makes the writer sync and return.
        let (tx, _) = bounded(0);
        drop(std::mem::replace(&mut self.tx, tx));
        let handle = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(handle) = handle {
            // A panicking writer thread is a bug; it has already printed.
            let _ = handle.join();
        }
    }
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "engine_conditions_tests.rs"]
mod condition_tests;

#[cfg(test)]
#[path = "engine_compression_tests.rs"]
mod compression_tests;
