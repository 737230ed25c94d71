//! The writer thread: group commit.
//!
//! Callers encode their batch on their own thread and send it over a bounded
//! crossbeam channel (backpressure: a full queue blocks `append`). The writer
//! takes one batch, drains every other batch already waiting (up to the group
//! limits), frames them all into one buffer, writes it with one call, issues
//! **one** `fdatasync` for the whole group (in `Sync` mode), and only then
//! hands the group on to be *finished*: applied to the views, published, and
//! acknowledged to each caller with its LSN. A group of several batches is
//! finished on the acker thread while the writer writes and syncs the next
//! group; a lone batch is finished inline when the acker is idle (one thread
//! hop less for a lone caller). Groups are finished in LSN order either way.
//! A failed write or sync fails the whole group (no caller in it gets an
//! acknowledgement) and poisons the writer: it never retries a sync, and
//! refuses every later batch.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use rkyv::util::AlignedVec;

use super::Lsn;
use super::ack::AckSender;
use super::active::Active;
use super::frame::{crc_seed, encode_frame, frame_len};
use super::poison::Poison;
use super::segment::SEGMENT_HEADER_BYTES;
use super::sink::Sink;
use crate::condition::Condition;
use crate::error::{Error, Result};
use crate::event::Event;
use crate::options::{Durability, Options};
use crate::storage::Storage;

/// A message to the writer thread.
pub(crate) enum Msg {
    /// Append one encoded batch; the ack carries its LSN.
    Append {
        payload: AlignedVec,
        /// The batch's events, applied to the views once durable.
        events: Vec<Event>,
        /// What must hold of the views, after every earlier batch, for the
        /// batch to be written (`crate::Engine::append_if`); empty for a
        /// plain append.
        conditions: Vec<Condition>,
        ack: AckSender,
    },
    /// A batch whose conditions failed (or could not be checked): never
    /// written. Made by the writer only, in place of the `Append`, so that
    /// its caller hears of it in order with its group.
    Refused { ack: AckSender, error: Error },
    /// Sync everything written so far; the ack carries the durable LSN.
    Flush { ack: AckSender },
    /// Sync and stop accepting batches; the ack carries the durable LSN.
    Close { ack: AckSender },
    /// Sync, then freeze the active memtable for the snapshotter; the ack
    /// carries the durable LSN.
    Freeze { ack: AckSender },
}

/// A caller's acknowledgement channel and what to tell it.
type Ack = (AckSender, Result<Lsn>);

/// A group that is written (and synced, as its mode asks), on its way to
/// its callers.
struct Committed {
    /// The LSN of the group's first batch.
    first_lsn: Lsn,
    /// The events of each batch, in LSN order from `first_lsn` (shared
    /// with the writer, which checks conditions against them until the
    /// views have applied them).
    batches: Arc<Vec<Vec<Event>>>,
    /// One per message of the group, in order.
    acks: Vec<Ack>,
    /// The group held a `Freeze`: freeze the active memtable once the
    /// group is applied (the group's sync made all of it durable).
    freeze: bool,
}

/// Work for the acker thread.
enum Job {
    /// Finish a committed group.
    Finish(Committed),
    /// Reply once every earlier job is finished.
    Barrier(Sender<()>),
}

/// Finishes committed groups, in LSN order: applies their events to the
/// sink, publishes them, tells the sink the group is done (it may freeze or
/// wake its snapshotter), then acknowledges the callers. It runs on the acker thread, or on the writer
/// when the acker has nothing queued; never on both at once.
struct Finisher {
    shared: Arc<Shared>,
    /// What every durable batch is applied to (`None`: the log alone).
    sink: Option<Arc<dyn Sink>>,
    /// Jobs sent to the acker thread and not finished yet. Only the writer
    /// sends, so when it reads zero the acker is idle until the writer sends
    /// again.
    queued: AtomicUsize,
    /// Set once applying a group failed: the sink misses that group, so no
    /// later group may be applied or acknowledged.
    sink_failed: AtomicBool,
}

impl Finisher {
    fn finish(&self, group: Committed) {
        let applied = if self.sink_failed.load(Ordering::Acquire) {
            Err(self.shared.poison.error())
        } else {
            self.apply(&group)
        };
        match applied {
            Ok(()) => {
                for (tx, result) in group.acks {
                    tx.send(result);
                }
            }
            Err(e) => {
                // The batches are in the log, but the sink is not trusted
                // any more: fail like a failed write; reopening rebuilds
                // the views from the log.
                let e = Arc::new(e);
                self.shared.poison.set(&e);
                self.sink_failed.store(true, Ordering::Release);
                for (tx, _) in group.acks {
                    tx.send(Err(replicate(&e)));
                }
            }
        }
    }

    /// Applies the group's batches to the sink, then publishes them: a
    /// caller's ack comes after its batch is visible to every reader.
    fn apply(&self, group: &Committed) -> Result<()> {
        let Some(sink) = &self.sink else {
            return Ok(());
        };
        let mut lsn = group.first_lsn;
        for events in group.batches.iter() {
            sink.apply(lsn, events)?;
            lsn = lsn.next();
        }
        if lsn != group.first_lsn {
            sink.publish(Lsn(lsn.0 - 1));
        }
        sink.after_group(group.freeze);
        Ok(())
    }
}

/// State the writer shares with the engine's handles.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    /// Set by the first failed write, sync or apply (fail-stop).
    pub poison: Arc<Poison>,
    /// Highest LSN written (and acknowledged in non-`Sync` modes).
    pub written_lsn: AtomicU64,
    /// Highest LSN made durable by an `fdatasync`.
    pub durable_lsn: AtomicU64,
    pub batches: AtomicU64,
    pub payload_bytes: AtomicU64,
    pub log_bytes: AtomicU64,
    pub groups: AtomicU64,
    pub fsyncs: AtomicU64,
    pub segments_created: AtomicU64,
    /// Batches refused because a condition did not hold.
    pub conflicts: AtomicU64,
    /// Callers polling for their acknowledgement (at most one).
    pub ack_spinners: AtomicU64,
    /// Appends sent to the writer and not yet acknowledged.
    pub in_flight: AtomicU64,
    /// Set when the writer thread has stopped, normally or by a panic: a
    /// caller still waiting then stops waiting (see `Engine::append`).
    pub writer_gone: AtomicBool,
    /// Messages in the last group: one means a lone caller, worth polling
    /// for (the writer for its next batch, the caller for its ack); more
    /// means concurrent callers, who need the CPU instead.
    pub last_group_batches: AtomicU64,
}

/// The writer thread's state.
pub(crate) struct Writer {
    storage: Arc<dyn Storage>,
    log_dir: PathBuf,
    options: Options,
    log_id: u128,
    seed: u32,
    active: Active,
    next_lsn: Lsn,
    durable_lsn: Lsn,
    /// When the oldest unsynced write was made (`Periodic` mode).
    unsynced_since: Option<Instant>,
    shared: Arc<Shared>,
    buf: Vec<u8>,
    closed: bool,
    /// Finishes committed groups; holds the views and the snapshotter's
    /// wake, which are set before the writer runs.
    finisher: Arc<Finisher>,
    /// Hands committed groups to the acker thread.
    acker: Option<Sender<Job>>,
    /// A write or sync failed: nothing is written or synced any more.
    io_failed: bool,
    /// Groups handed on whose batches the views may not have applied yet:
    /// (first LSN, batches). A condition that one of them may affect waits
    /// until they are visible. Dropped once the views publish past them.
    /// Kept only while conditional batches come (see `tracking_groups`).
    pending: VecDeque<(Lsn, Arc<Vec<Vec<Event>>>)>,
    /// Groups to come whose batches go into `pending`: refreshed to
    /// [`TRACK_GROUPS`] by every conditional batch, counted down by every
    /// group. At zero nothing is kept (a plain workload keeps no events
    /// on the writer, and frees none there), and `pending` is incomplete:
    /// the next conditional batch first waits until every group handed on
    /// is applied.
    tracking_groups: u32,
    /// The writer's end of the channel, once it runs: [`Writer::commit`]
    /// counts what waits in it before each acknowledgement.
    incoming: Option<Receiver<Msg>>,
    /// Messages that waited when the last group was handed on to be
    /// acknowledged: none of them sent by its callers, who were waiting for
    /// it (see [`Writer::gather`]).
    queued_at_ack: usize,
    /// How many appends the last group held: their callers, acknowledged
    /// since, may be about to send again (see [`Writer::gather`]).
    last_group: usize,
    /// How long the last `fdatasync` took: [`Writer::gather`] waits at
    /// most half of it.
    last_sync: Duration,
}

/// The longest [`Writer::gather`] waits, however slow the disk's sync.
const GATHER_WAIT_MAX: Duration = Duration::from_millis(1);

/// Groups after the last conditional batch through which the writer keeps
/// the events of the groups it hands on. A lifecycle workload sends a
/// conditional batch every few groups, and keeps them; a plain one stops
/// after these, and the events are freed by the acker as before.
const TRACK_GROUPS: u32 = 256;

/// An error for each member of a failed group, made from the one that failed
/// it (I/O errors cannot be cloned).
fn replicate(e: &Arc<Error>) -> Error {
    match e.as_ref() {
        Error::Io { path, source } => Error::Io {
            path: path.clone(),
            // The operating system's error number is kept: callers (the
            // Python binding's `errno`) tell the failures apart by it.
            source: match source.raw_os_error() {
                Some(code) => std::io::Error::from_raw_os_error(code),
                None => std::io::Error::new(source.kind(), source.to_string()),
            },
        },
        Error::DiskFull { path } => Error::DiskFull { path: path.clone() },
        Error::Poisoned { cause } => Error::Poisoned {
            cause: Arc::clone(cause),
        },
        Error::MemtablesFull { cause } => Error::MemtablesFull {
            cause: Arc::clone(cause),
        },
        _ => Error::Poisoned {
            cause: Arc::clone(e),
        },
    }
}

impl Writer {
    /// A writer that appends after the recovered tail, or starts the log.
    pub(crate) fn new(
        storage: Arc<dyn Storage>,
        log_dir: PathBuf,
        options: Options,
        log_id: Option<u128>,
        tail: Option<(Lsn, PathBuf, u64)>,
        next_lsn: Lsn,
        shared: Arc<Shared>,
    ) -> Result<Writer> {
        // A new log takes the id it was given (the views file may already
        // carry it), else a fresh one.
        let (log_id, active, created) = match (log_id, tail) {
            (Some(log_id), Some((_, path, offset))) => {
                let (active, created) = Active::take_over(
                    storage.as_ref(),
                    &log_dir,
                    log_id,
                    path,
                    offset,
                    next_lsn,
                    &options,
                )?;
                (log_id, active, created)
            }
            (log_id, _) => {
                let log_id = log_id.unwrap_or_else(|| storage.new_log_id());
                let active =
                    Active::create(storage.as_ref(), &log_dir, log_id, next_lsn, &options)?;
                (log_id, active, true)
            }
        };
        if created {
            shared.segments_created.fetch_add(1, Ordering::Relaxed);
        }
        let durable_lsn = Lsn(next_lsn.0 - 1);
        shared.written_lsn.store(durable_lsn.0, Ordering::Release);
        shared.durable_lsn.store(durable_lsn.0, Ordering::Release);
        let finisher = Arc::new(Finisher {
            shared: Arc::clone(&shared),
            sink: None,
            queued: AtomicUsize::new(0),
            sink_failed: AtomicBool::new(false),
        });
        Ok(Writer {
            storage,
            log_dir,
            options,
            log_id,
            seed: crc_seed(log_id),
            active,
            next_lsn,
            durable_lsn,
            unsynced_since: None,
            finisher,
            shared,
            buf: Vec::with_capacity(1 << 20),
            closed: false,
            acker: None,
            io_failed: false,
            pending: VecDeque::new(),
            tracking_groups: 0,
            incoming: None,
            queued_at_ack: 0,
            last_group: 0,
            last_sync: Duration::ZERO,
        })
    }

    /// The log's id.
    pub(crate) fn log_id(&self) -> u128 {
        self.log_id
    }

    /// Runs until every sender is gone, then syncs and returns. Starts the
    /// acker thread and stops it (after it finished every group) on return.
    pub(crate) fn run(mut self, rx: Receiver<Msg>) {
        let _gone = WriterGone {
            shared: Arc::clone(&self.shared),
            rx: rx.clone(),
        };
        let finisher = Arc::clone(&self.finisher);
        // Unbounded, yet bounded in fact: a caller has one batch in flight,
        // so the groups waiting here never outnumber the callers.
        let (acker, jobs) = crossbeam_channel::unbounded::<Job>();
        // Not a scoped thread: if this thread panics, unwinding drops `self`
        // and with it the job sender, so the acker finishes what is queued
        // and returns instead of waiting for a join that would never end.
        let spawned = std::thread::Builder::new()
            .name("waymark-acker".into())
            .spawn(move || {
                // Dropped first if this thread panics (before `jobs`, whose
                // drop drops the acks still queued): those callers then
                // find the engine poisoned.
                let _gone = AckerGone(Arc::clone(&finisher.shared));
                for job in jobs {
                    match job {
                        Job::Finish(group) => finisher.finish(group),
                        Job::Barrier(done) => {
                            let _ = done.send(());
                        }
                    }
                    finisher.queued.fetch_sub(1, Ordering::AcqRel);
                }
            });
        // Without an acker thread the writer finishes groups inline.
        let acker_thread = spawned.ok();
        if acker_thread.is_some() {
            self.acker = Some(acker);
        }
        self.run_loop(rx);
        // Closing the channel lets the acker finish every queued group.
        self.acker = None;
        if let Some(handle) = acker_thread {
            // A panicking acker is a bug; it has already printed.
            let _ = handle.join();
        }
    }

    fn run_loop(&mut self, rx: Receiver<Msg>) {
        self.incoming = Some(rx.clone());
        loop {
            let first = match self.sync_deadline() {
                Some(deadline) => match rx.recv_deadline(deadline) {
                    Ok(msg) => msg,
                    Err(RecvTimeoutError::Timeout) => {
                        // A periodic sync has no caller to tell; a failure
                        // poisons the writer and the next append says so.
                        let _ = self.sync();
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                },
                None => match spin_recv(
                    &rx,
                    self.shared.last_group_batches.load(Ordering::Relaxed) <= 1,
                ) {
                    Ok(msg) => msg,
                    Err(_) => break,
                },
            };
            let mut group = self.drain(first, &rx);
            self.gather(&mut group, &rx);
            self.shared
                .last_group_batches
                .store(group.len() as u64, Ordering::Relaxed);
            if self.closed {
                for msg in group {
                    ack_of(&msg).send(Err(Error::Closed));
                }
                continue;
            }
            match group.iter().position(|m| matches!(m, Msg::Close { .. })) {
                None => self.commit(group),
                Some(at) => {
                    let rest = group.split_off(at);
                    if !group.is_empty() {
                        self.commit(group);
                    }
                    self.close(rest);
                }
            }
        }
        // Every handle is gone: whatever the mode, what was written is made
        // durable (nobody is left to tell of a failure).
        if !self.closed {
            let _ = self.sync();
        }
    }

    /// Syncs what was written and refuses everything after: `rest` starts
    /// with the `Close` message.
    fn close(&mut self, rest: Vec<Msg>) {
        let synced = self.sync().map(|()| self.durable_lsn);
        // Every earlier caller hears of its batch before `close` returns.
        // A dead acker poisons the engine, which the check below reports.
        let _ = self.quiesce();
        // A group still on the acker may have failed to apply: then the
        // engine is poisoned, and `close` says so too.
        let result = synced.and_then(|lsn| match self.shared.poison.get() {
            Some(e) => Err(e),
            None => Ok(lsn),
        });
        self.closed = true;
        let mut rest = rest.into_iter();
        if let Some(close) = rest.next() {
            ack_of(&close).send(result);
        }
        for msg in rest {
            ack_of(&msg).send(Err(Error::Closed));
        }
    }

    /// When the periodic sync is due: `interval` after the oldest write
    /// not yet synced. Never after a failed write or sync (nothing is
    /// synced any more).
    fn sync_deadline(&self) -> Option<Instant> {
        match self.options.durability {
            Durability::Periodic(interval) if !self.io_failed => {
                self.unsynced_since.map(|t| t + interval)
            }
            _ => None,
        }
    }

    /// Takes `first` and every message already waiting, up to the group
    /// limits.
    fn drain(&self, first: Msg, rx: &Receiver<Msg>) -> Vec<Msg> {
        let mut bytes = payload_len(&first);
        let mut group = vec![first];
        while group.len() < self.options.group_batches_max as usize
            && bytes < self.options.group_bytes_max as usize
        {
            match rx.try_recv() {
                Ok(msg) => {
                    bytes += payload_len(&msg);
                    group.push(msg);
                }
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        group
    }

    /// Waits a moment for the last group's callers before writing
    /// `group` (PostgreSQL's `commit_delay`, bounded by the disk). Under
    /// `Sync`, the group may hold what was queued when the last group was
    /// handed on to be acknowledged (`queued_at_ack`: none of it sent by
    /// that group's callers, who were waiting for it) and one batch more
    /// from each caller of the last group. Until it does, the writer waits,
    /// parked, up to half the last `fdatasync`'s time ([`GATHER_WAIT_MAX`]
    /// at most). Callers that come back one after another (threads of a
    /// Python worker, each taking the interpreter in turn after its
    /// acknowledgement) then share one `fdatasync`, instead of splitting
    /// into two groups that take turns, each waiting out the other's sync
    /// (BENCHMARKS.md, "Gathering a group"). A lone writer never waits: its
    /// own batch is the one it waits for.
    fn gather(&mut self, group: &mut Vec<Msg>, rx: &Receiver<Msg>) {
        let wanted = std::mem::take(&mut self.queued_at_ack)
            .saturating_add(self.last_group)
            .min(self.options.group_batches_max as usize);
        let waits = self.options.durability == Durability::Sync
            && !self.closed
            && !self.io_failed
            && group.len() < wanted
            // A close or a flush is not kept waiting.
            && group.iter().all(|m| matches!(m, Msg::Append { .. }));
        if waits {
            let deadline = Instant::now() + (self.last_sync / 2).min(GATHER_WAIT_MAX);
            let mut bytes: usize = group.iter().map(payload_len).sum();
            while group.len() < wanted && bytes < self.options.group_bytes_max as usize {
                let Ok(msg) = rx.recv_deadline(deadline) else {
                    break; // Time is up, or every handle is gone.
                };
                bytes += payload_len(&msg);
                let append = matches!(msg, Msg::Append { .. });
                group.push(msg);
                if !append {
                    break;
                }
            }
        }
        // Appends only: a flush or a freeze (the snapshotter's) in the group
        // has no caller who will send again.
        self.last_group = group
            .iter()
            .filter(|m| matches!(m, Msg::Append { .. }))
            .count();
    }

    /// Writes, syncs and acknowledges one group, checking the conditions
    /// of its batches in LSN order. A group whose conditional batch depends
    /// on an earlier batch of the same group is committed in parts: the
    /// batches before it are written, synced and applied, then it is
    /// checked against the views that hold them.
    fn commit(&mut self, group: Vec<Msg>) {
        if let Some(e) = self.shared.poison.get() {
            fail_all(group, &Arc::new(e));
            return;
        }
        // The memory bound holds back appends; a flush or freeze adds
        // nothing to the memtables and must not be refused by it.
        let appends = group.iter().any(|m| matches!(m, Msg::Append { .. }));
        let bound = if appends {
            self.hold_memory_bound()
        } else {
            Ok(())
        };
        if let Err(e) = bound {
            // Nothing of this group was written: a clean refusal.
            fail_all(group, &Arc::new(e));
            return;
        }
        // Forget the groups the views have published since: they hold the
        // events of every batch until then.
        self.drop_applied_pending();
        let mut rest = group;
        while !rest.is_empty() {
            let (part, later) = self.decide(rest);
            rest = later;
            // A group applied since (the acker's, or a part of this one)
            // may have failed and poisoned the engine: nothing is written
            // after a poison, decided or not.
            if let Some(e) = self.shared.poison.get() {
                let e = Arc::new(e);
                fail_all(part, &e);
                fail_all(std::mem::take(&mut rest), &e);
                return;
            }
            let first_lsn = self.next_lsn;
            if let Err(e) = self.write_group(&part) {
                self.io_failed = true;
                let e = Arc::new(e);
                self.shared.poison.set(&e);
                fail_all(part, &e);
                fail_all(std::mem::take(&mut rest), &e);
                return;
            }
            let batches = self.next_lsn.0 - first_lsn.0;
            self.shared.batches.fetch_add(batches, Ordering::Relaxed);
            self.shared.groups.fetch_add(1, Ordering::Relaxed);
            let committed = self.committed(part, first_lsn);
            if self.tracking_groups > 0 {
                self.tracking_groups -= 1;
                if self.tracking_groups == 0 {
                    self.pending.clear();
                } else if batches > 0 {
                    self.pending
                        .push_back((first_lsn, Arc::clone(&committed.batches)));
                }
            }
            // Counted before any caller of this group hears of it: what
            // waits now was sent by others.
            if let Some(rx) = &self.incoming {
                self.queued_at_ack = rx.len();
            }
            self.hand_on(committed);
        }
    }

    /// Checks the conditions of `group`'s batches in order and returns the
    /// part to write now (a failed batch turned into `Msg::Refused`) and
    /// the rest: everything from the first conditional batch that an
    /// earlier batch of the part may affect (it is checked once the part is
    /// applied). A condition that a batch of an earlier group may affect
    /// waits until the views have applied that group: moments, as its sync
    /// is done.
    fn decide(&mut self, group: Vec<Msg>) -> (Vec<Msg>, Vec<Msg>) {
        if !group
            .iter()
            .any(|m| matches!(m, Msg::Append { conditions, .. } if !conditions.is_empty()))
        {
            return (group, Vec::new());
        }
        let mut part: Vec<Msg> = Vec::with_capacity(group.len());
        let mut rest = group.into_iter();
        while let Some(msg) = rest.next() {
            let Msg::Append {
                payload,
                events,
                conditions,
                ack,
            } = msg
            else {
                part.push(msg);
                continue;
            };
            if conditions.is_empty() {
                part.push(Msg::Append {
                    payload,
                    events,
                    conditions,
                    ack,
                });
                continue;
            }
            if conditions
                .iter()
                .any(|c| c.depends_on(part.iter().filter_map(appended_events)))
            {
                let mut later = vec![Msg::Append {
                    payload,
                    events,
                    conditions,
                    ack,
                }];
                later.extend(rest);
                return (part, later);
            }
            match self.check(&conditions) {
                Ok(()) => part.push(Msg::Append {
                    payload,
                    events,
                    conditions,
                    ack,
                }),
                Err(error) => {
                    let poisoned = error.is_poisoned();
                    if matches!(error, Error::Conflict { .. }) {
                        self.shared.conflicts.fetch_add(1, Ordering::Relaxed);
                    }
                    part.push(Msg::Refused { ack, error });
                    // The rest is failed by the caller's poison check.
                    if poisoned {
                        return (part, rest.collect());
                    }
                }
            }
        }
        (part, Vec::new())
    }

    /// Checks `conditions` against the views, after waiting for any group
    /// handed on earlier whose batches may affect them.
    fn check(&mut self, conditions: &[Condition]) -> Result<()> {
        let Some(sink) = self.finisher.sink.clone() else {
            return Err(Error::InvalidOptions(
                "conditions need the views, and this log feeds none".into(),
            ));
        };
        // Groups handed on while nothing was tracked are not in `pending`:
        // wait until they are all applied, then track from here.
        let untracked = self.tracking_groups == 0;
        self.tracking_groups = TRACK_GROUPS;
        let waits = untracked
            || conditions.iter().any(|c| {
                c.depends_on(
                    self.pending
                        .iter()
                        .flat_map(|(_, batches)| batches.iter().map(Vec::as_slice)),
                )
            });
        if waits {
            // Every group handed on is applied once the acker is idle (a
            // group finished inline is applied already), unless applying
            // one failed: then the views miss it, and no condition it may
            // affect can be checked (nor any batch written).
            self.quiesce()?;
            if self.finisher.sink_failed.load(Ordering::Acquire) {
                return Err(self.shared.poison.error());
            }
            self.drop_applied_pending();
        }
        for (index, condition) in conditions.iter().enumerate() {
            let checked = sink
                .check(condition)
                .map_err(|cause| Error::ConditionUnreadable {
                    cause: Box::new(cause),
                })?;
            if let Some(found) = checked {
                return Err(Error::Conflict {
                    index,
                    condition: Box::new(condition.clone()),
                    found,
                });
            }
        }
        Ok(())
    }

    /// Forgets the pending groups the views have published.
    fn drop_applied_pending(&mut self) {
        let Some(sink) = &self.finisher.sink else {
            return;
        };
        let visible = sink.visible_lsn();
        while let Some((first, batches)) = self.pending.front() {
            let last = Lsn(first.0 + batches.len() as u64 - 1);
            if last > visible {
                break;
            }
            self.pending.pop_front();
        }
    }

    /// What finishing a written group takes: its events and what to tell
    /// each caller.
    fn committed(&self, group: Vec<Msg>, first_lsn: Lsn) -> Committed {
        let mut lsn = first_lsn;
        let mut batches = Vec::with_capacity(group.len());
        let mut committed = Committed {
            first_lsn,
            batches: Arc::default(),
            acks: Vec::with_capacity(group.len()),
            freeze: false,
        };
        for msg in group {
            match msg {
                Msg::Append { events, ack, .. } => {
                    batches.push(events);
                    committed.acks.push((ack, Ok(lsn)));
                    lsn = lsn.next();
                }
                Msg::Refused { ack, error } => committed.acks.push((ack, Err(error))),
                Msg::Freeze { ack } => {
                    committed.freeze = true;
                    committed.acks.push((ack, Ok(self.durable_lsn)));
                }
                Msg::Flush { ack } | Msg::Close { ack } => {
                    committed.acks.push((ack, Ok(self.durable_lsn)));
                }
            }
        }
        committed.batches = Arc::new(batches);
        committed
    }

    /// Sets what every durable batch is applied to.
    pub(crate) fn set_sink(&mut self, sink: Arc<dyn Sink>) {
        self.finisher_before_run().sink = Some(sink);
    }

    fn finisher_before_run(&mut self) -> &mut Finisher {
        Arc::get_mut(&mut self.finisher)
            .expect("the finisher is shared with the acker only once the writer runs")
    }

    /// The memory and replay bounds: when the sink does not admit the next
    /// group (its memtables hold more than `snapshots.memtable_bytes_max`
    /// bytes or `snapshots.memtable_events_max` events), wait until
    /// everything handed on is applied, sync, and let the sink make room
    /// (freeze, and wait for its snapshot). Appends wait here rather than
    /// grow memory without bound.
    fn hold_memory_bound(&mut self) -> Result<()> {
        // The common case, checked before anything is cloned: this runs
        // before every group.
        let Some(sink) = &self.finisher.sink else {
            return Ok(());
        };
        if sink.admits() {
            return Ok(());
        }
        let sink = Arc::clone(sink);
        // Freezing takes the applier's place between two groups: wait until
        // the acker has applied every group handed to it (and never freeze
        // a memtable a dead acker left half a group in).
        self.quiesce()?;
        // A group that failed to apply may have left part of itself in the
        // active memtable: never freeze (and snapshot) that.
        if self.finisher.sink_failed.load(Ordering::Acquire) {
            return Err(self.shared.poison.error());
        }
        // Synced before freezing (the frozen memtable must be durable) and
        // before waiting either way: the wait can last a whole snapshot, in
        // which no `Periodic` sync falls due on this thread, and batches
        // acknowledged before it must not stay unsynced past the interval.
        self.sync()?;
        sink.make_room()
    }

    /// Finishes a committed group. A group of several batches goes to the
    /// acker thread, which applies it and wakes its callers while this
    /// thread writes and syncs the next group: applying is a skiplist insert
    /// per event and each wake a syscall, and on the writer's path they
    /// would add up to a good part of an fsync. A lone batch is finished
    /// here if the acker is idle (another hop would cost a lone caller a
    /// thread wake); otherwise it queues behind the acker's groups, so
    /// groups are always applied in LSN order.
    fn hand_on(&self, group: Committed) {
        let finisher = &self.finisher;
        let group = match &self.acker {
            Some(acker) if group.acks.len() > 1 || finisher.queued.load(Ordering::Acquire) > 0 => {
                finisher.queued.fetch_add(1, Ordering::AcqRel);
                let Err(crossbeam_channel::SendError(Job::Finish(group))) =
                    acker.send(Job::Finish(group))
                else {
                    return;
                };
                finisher.queued.fetch_sub(1, Ordering::AcqRel);
                let _ = self.acker_died();
                group
            }
            _ => group,
        };
        finisher.finish(group);
    }

    /// Waits until the acker has finished every group handed to it.
    /// Fails with the poison if the acker thread died (then no group
    /// after the one it died in may be acknowledged).
    fn quiesce(&self) -> Result<()> {
        let (finisher, Some(acker)) = (&self.finisher, &self.acker) else {
            return Ok(());
        };
        if finisher.queued.load(Ordering::Acquire) == 0 {
            return Ok(());
        }
        let (done, wait) = crossbeam_channel::bounded(1);
        finisher.queued.fetch_add(1, Ordering::AcqRel);
        let answered = match acker.send(Job::Barrier(done)) {
            Ok(()) => wait.recv().is_ok(),
            Err(_) => {
                finisher.queued.fetch_sub(1, Ordering::AcqRel);
                false
            }
        };
        if answered {
            Ok(())
        } else {
            Err(self.acker_died())
        }
    }

    /// The acker thread is gone: only a panic (a bug) stops it early, in
    /// the middle of a group whose callers heard `Closed`, and the views
    /// may hold part of that group. Fail everything after, as a failed
    /// apply does; reopening rebuilds the views from the log.
    /// Returns the error later callers get.
    fn acker_died(&self) -> Error {
        self.shared
            .poison
            .set(&Arc::new(Error::ThreadDied { thread: "acker" }));
        self.finisher.sink_failed.store(true, Ordering::Release);
        self.shared.poison.error()
    }

    /// Frames the group's batches and writes them, rolling segments as
    /// needed, then syncs if the mode or a flush asks for it.
    fn write_group(&mut self, group: &[Msg]) -> Result<()> {
        self.buf.clear();
        let mut flush = false;
        for msg in group {
            let payload = match msg {
                Msg::Append { payload, .. } => payload,
                Msg::Refused { .. } => continue,
                Msg::Flush { .. } | Msg::Close { .. } | Msg::Freeze { .. } => {
                    flush = true;
                    continue;
                }
            };
            let len = frame_len(payload.len()) as u64;
            let used = self.active.offset() + self.buf.len() as u64;
            let has_frames = used > SEGMENT_HEADER_BYTES as u64;
            if has_frames && used + len > self.options.segment_bytes_max {
                self.write_buf()?;
                self.roll()?;
            }
            encode_frame(
                &mut self.buf,
                self.seed,
                self.next_lsn,
                self.durable_lsn,
                payload,
            );
            self.next_lsn = self.next_lsn.next();
            self.shared
                .payload_bytes
                .fetch_add(payload.len() as u64, Ordering::Relaxed);
        }
        self.write_buf()?;
        // A periodic sync falls due here too: under steady load the queue
        // is never empty when the writer looks, so the timer in `run_loop`
        // would not fire, and the loss window would grow past `interval`.
        let periodic_due = self
            .sync_deadline()
            .is_some_and(|due| Instant::now() >= due);
        if flush || periodic_due || self.options.durability == Durability::Sync {
            self.sync()?;
        } else if self.active.is_dirty() {
            self.unsynced_since.get_or_insert_with(Instant::now);
        }
        Ok(())
    }

    /// Writes the framed bytes at the end of the active segment.
    fn write_buf(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.active.append(&self.buf)?;
        self.shared
            .log_bytes
            .fetch_add(self.buf.len() as u64, Ordering::Relaxed);
        self.buf.clear();
        let written = self.next_lsn.0 - 1;
        self.shared.written_lsn.store(written, Ordering::Release);
        Ok(())
    }

    /// One `fdatasync` of the active segment. Never retried: on error the
    /// caller poisons the writer.
    fn sync(&mut self) -> Result<()> {
        // Fail-stop: once a write or sync failed, never sync again. A
        // retried `fdatasync` can succeed after the kernel dropped the
        // pages the failed one could not write, and would then make
        // `durable_lsn` claim bytes that are not on disk. (Poisoned for
        // another reason, a failed apply, the writer still syncs what it
        // acknowledged in `Periodic` mode.)
        if self.io_failed {
            return Err(self.shared.poison.error());
        }
        if !self.active.is_dirty() {
            return Ok(());
        }
        let started = Instant::now();
        let result = self.active.sync();
        self.last_sync = started.elapsed();
        self.shared.fsyncs.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = result {
            let e = Arc::new(e);
            self.shared.poison.set(&e);
            self.io_failed = true;
            return Err(replicate(&e));
        }
        self.unsynced_since = None;
        // Only whole frames are written, and the buffer is empty here.
        debug_assert!(
            self.buf.is_empty(),
            "sync happens after the buffer is written"
        );
        self.durable_lsn = Lsn(self.next_lsn.0 - 1);
        self.shared
            .durable_lsn
            .store(self.durable_lsn.0, Ordering::Release);
        Ok(())
    }

    /// Seals the active segment (synced) and starts the next one.
    fn roll(&mut self) -> Result<()> {
        assert!(self.buf.is_empty(), "the buffer is written before a roll");
        // Every segment but the last is wholly durable: recovery relies on it.
        self.sync()?;
        let active = Active::create(
            self.storage.as_ref(),
            &self.log_dir,
            self.log_id,
            self.next_lsn,
            &self.options,
        )?;
        self.shared.segments_created.fetch_add(1, Ordering::Relaxed);
        self.active = active;
        Ok(())
    }
}

/// Runs when the writer thread stops, normally or by a panic (a bug). A
/// bounded crossbeam channel keeps its queued messages while any sender
/// lives, so after a panic every queued caller would wait for an ack that
/// never comes: fail them, poison the engine so that later appends say why,
/// and mark the writer gone for callers that are already waiting.
/// Poisons the engine if the acker thread panics (a bug), at once rather
/// than at the writer's next hand-off.
struct AckerGone(Arc<Shared>);

impl Drop for AckerGone {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0
                .poison
                .set(&Arc::new(Error::ThreadDied { thread: "acker" }));
        }
    }
}

struct WriterGone {
    shared: Arc<Shared>,
    rx: Receiver<Msg>,
}

impl Drop for WriterGone {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.shared
                .poison
                .set(&Arc::new(Error::ThreadDied { thread: "writer" }));
        }
        self.shared.writer_gone.store(true, Ordering::Release);
        for msg in self.rx.try_iter() {
            ack_of(&msg).send(Err(Error::Closed));
        }
    }
}

/// How long the idle writer polls for the next batch before it parks. A
/// caller acknowledged a moment ago usually sends its next batch within a few
/// microseconds; catching it here saves a futex wake (measured: see
/// BENCHMARKS.md, append_sync/1).
const IDLE_SPIN: std::time::Duration = std::time::Duration::from_micros(30);

/// Receives the next message, polling for [`IDLE_SPIN`] first if `poll`.
fn spin_recv(
    rx: &Receiver<Msg>,
    poll: bool,
) -> std::result::Result<Msg, crossbeam_channel::RecvError> {
    if !poll {
        return rx.recv();
    }
    let start = Instant::now();
    loop {
        match rx.try_recv() {
            Ok(msg) => return Ok(msg),
            Err(TryRecvError::Disconnected) => return Err(crossbeam_channel::RecvError),
            Err(TryRecvError::Empty) if start.elapsed() < IDLE_SPIN => std::hint::spin_loop(),
            Err(TryRecvError::Empty) => return rx.recv(),
        }
    }
}

/// Tells every caller of `group` that it failed with `e`.
fn fail_all(group: Vec<Msg>, e: &Arc<Error>) {
    for msg in group {
        ack_of(&msg).send(Err(replicate(e)));
    }
}

/// The events of an append, for the dependency checks of conditions.
fn appended_events(msg: &Msg) -> Option<&[Event]> {
    match msg {
        Msg::Append { events, .. } => Some(events),
        _ => None,
    }
}

fn payload_len(msg: &Msg) -> usize {
    match msg {
        Msg::Append { payload, .. } => payload.len(),
        Msg::Refused { .. } | Msg::Flush { .. } | Msg::Close { .. } | Msg::Freeze { .. } => 0,
    }
}

fn ack_of(msg: &Msg) -> &AckSender {
    match msg {
        Msg::Append { ack, .. }
        | Msg::Refused { ack, .. }
        | Msg::Flush { ack }
        | Msg::Close { ack }
        | Msg::Freeze { ack } => ack,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::condition::{Found, TaskStatusKind};
    use crate::event::TaskStatus;
    use crate::event::encode_batch;
    use std::path::Path;

    use crate::event::tests::sample;
    use crate::log::ack::ack_channel;
    use crate::log::sink::testing::{FAILS, Faulty};
    use crate::storage::SimDisk;
    use crate::view::Views;
    use crate::view::feed::ViewFeed;
    use crate::view::snapshot::Wake;

    fn append_msg(i: u32) -> Msg {
        let events = vec![sample(i)];
        let (ack, _rx) = ack_channel();
        Msg::Append {
            payload: encode_batch(&events).unwrap(),
            events,
            conditions: Vec::new(),
            ack,
        }
    }

    /// A writer of a new log in `/log` on a simulated disk, not running.
    fn writer(options: Options, shared: Arc<Shared>) -> Writer {
        let storage: Arc<dyn Storage> = Arc::new(SimDisk::new(60));
        storage.create_dir_all(Path::new("/log")).unwrap();
        Writer::new(
            storage,
            PathBuf::from("/log"),
            options,
            None,
            None,
            Lsn(1),
            shared,
        )
        .unwrap()
    }

    /// A writer feeding views (in memory) with a snapshotter's wake
    /// channel, as the engine wires it.
    fn writer_with_views(
        options: Options,
        shared: Arc<Shared>,
    ) -> (Writer, Arc<Views>, crossbeam_channel::Receiver<Wake>) {
        let (writer, views, woken, _) = writer_with_failing_views(options, shared);
        (writer, views, woken)
    }

    /// [`writer_with_views`], the feed wrapped in a sink whose `apply`
    /// faults as armed.
    fn writer_with_failing_views(
        options: Options,
        shared: Arc<Shared>,
    ) -> (
        Writer,
        Arc<Views>,
        crossbeam_channel::Receiver<Wake>,
        Arc<Faulty>,
    ) {
        let snapshots = options.snapshots.clone();
        let mut writer = writer(options, shared);
        let views = Arc::new(Views::new(Lsn(0), None));
        let (wake, woken) = crossbeam_channel::bounded(1);
        let feed = ViewFeed::new(Arc::clone(&views), Some(wake), snapshots);
        let faulty = Arc::new(Faulty::new(Arc::new(feed), None));
        writer.set_sink(Arc::clone(&faulty) as Arc<dyn Sink>);
        (writer, views, woken, faulty)
    }

    /// A sink that records every call the writer makes, in order.
    #[derive(Debug, Default)]
    struct Recording {
        calls: std::sync::Mutex<Vec<String>>,
        visible: AtomicU64,
    }

    impl Recording {
        fn push(&self, call: String) {
            self.calls.lock().unwrap().push(call);
        }
    }

    impl Sink for Recording {
        fn apply(&self, lsn: Lsn, events: &[Event]) -> Result<()> {
            self.push(format!("apply {lsn} ({} events)", events.len()));
            Ok(())
        }
        fn publish(&self, lsn: Lsn) {
            self.push(format!("publish {lsn}"));
            self.visible.store(lsn.0, Ordering::Release);
        }
        fn visible_lsn(&self) -> Lsn {
            Lsn(self.visible.load(Ordering::Acquire))
        }
        fn after_group(&self, freeze: bool) {
            self.push(format!("after_group freeze={freeze}"));
        }
        fn check(&self, _: &Condition) -> Result<Option<Found>> {
            Ok(None)
        }
        fn admits(&self) -> bool {
            true
        }
        fn make_room(&self) -> Result<()> {
            unreachable!("this sink always admits")
        }
    }

    /// A writer whose last group held `last_group` batches and whose
    /// last sync took `sync`, and its channel.
    fn gathering_writer(
        durability: Durability,
        last_group: usize,
        sync: Duration,
    ) -> (Writer, Sender<Msg>, Receiver<Msg>) {
        let options = Options {
            durability,
            ..Options::default()
        };
        let mut writer = writer(options, Arc::new(Shared::default()));
        writer.last_group = last_group;
        writer.last_sync = sync;
        let (tx, rx) = crossbeam_channel::unbounded();
        (writer, tx, rx)
    }

    #[test]
    fn a_group_waits_for_the_callers_of_the_last_group() {
        // Two were queued while the last group (three) was written: the
        // group takes one batch from each of the three, and no more.
        let (mut w, tx, rx) = gathering_writer(Durability::Sync, 3, Duration::from_secs(1));
        for i in 2..6 {
            tx.send(append_msg(i)).unwrap();
        }
        let mut group = vec![append_msg(0), append_msg(1)];
        w.queued_at_ack = 2;
        w.gather(&mut group, &rx);
        assert_eq!(group.len(), 5, "the three late batches joined the group");
        assert_eq!(rx.len(), 1, "the fourth is left for the next group");
        assert_eq!(w.last_group, 5);
    }

    #[test]
    fn a_group_waits_at_most_half_a_sync() {
        let (mut w, _tx, rx) = gathering_writer(Durability::Sync, 8, Duration::from_micros(600));
        let started = Instant::now();
        let mut group = vec![append_msg(0)];
        w.gather(&mut group, &rx);
        let waited = started.elapsed();
        assert_eq!(group.len(), 1);
        assert!(waited >= Duration::from_micros(300), "{waited:?}");
        assert_eq!(w.last_group, 1, "the next group waits for one caller");
        // However slow the disk, never more than GATHER_WAIT_MAX.
        w.last_group = 8;
        w.last_sync = Duration::from_secs(1);
        let started = Instant::now();
        w.gather(&mut group, &rx);
        let waited = started.elapsed();
        assert!(
            waited >= GATHER_WAIT_MAX && waited < Duration::from_millis(500),
            "{waited:?}"
        );
    }

    #[test]
    fn a_lone_writer_and_writes_without_sync_never_wait() {
        let slow = Duration::from_secs(10);
        for (durability, last_group) in [
            (Durability::Sync, 1),
            (Durability::Sync, 0),
            (Durability::None, 8),
            (Durability::Periodic(Duration::from_millis(5)), 8),
        ] {
            let (mut w, _tx, rx) = gathering_writer(durability, last_group, slow);
            let started = Instant::now();
            w.gather(&mut vec![append_msg(0)], &rx);
            assert!(
                started.elapsed() < Duration::from_millis(500),
                "{durability:?}"
            );
        }
        // A close is not kept waiting, nor are the batches before it.
        let (mut w, _tx, rx) = gathering_writer(Durability::Sync, 8, slow);
        let (ack, _answer) = ack_channel();
        let started = Instant::now();
        w.gather(&mut vec![append_msg(0), Msg::Close { ack }], &rx);
        assert!(started.elapsed() < Duration::from_millis(500));
        // A freeze in a lone writer's group makes its next group wait for
        // nobody: only appends have callers who send again.
        let (mut w, _tx, rx) = gathering_writer(Durability::Sync, 1, slow);
        let (ack, _answer) = ack_channel();
        w.gather(&mut vec![append_msg(0), Msg::Freeze { ack }], &rx);
        assert_eq!(w.last_group, 1);
        let started = Instant::now();
        w.gather(&mut vec![append_msg(1)], &rx);
        assert!(started.elapsed() < Duration::from_millis(500));
        // Nor a writer that can no longer write.
        let (mut w, _tx, rx) = gathering_writer(Durability::Sync, 8, slow);
        w.io_failed = true;
        let started = Instant::now();
        w.gather(&mut vec![append_msg(0)], &rx);
        assert!(started.elapsed() < Duration::from_millis(500));
    }

    #[test]
    fn each_member_of_a_failed_group_gets_the_same_io_error() {
        let failed = Arc::new(Error::Io {
            path: "log/1.seg".into(),
            source: std::io::Error::from_raw_os_error(27),
        });
        let Error::Io { path, source } = replicate(&failed) else {
            panic!("an I/O error is replicated as an I/O error");
        };
        assert_eq!(path, std::path::Path::new("log/1.seg"));
        assert_eq!(source.raw_os_error(), Some(27));
        assert_eq!(source.kind(), std::io::ErrorKind::FileTooLarge);
        let custom = Arc::new(Error::Io {
            path: "log/1.seg".into(),
            source: std::io::Error::other("injected"),
        });
        let Error::Io { source, .. } = replicate(&custom) else {
            panic!("an I/O error is replicated as an I/O error");
        };
        assert_eq!(
            (source.kind(), source.to_string()),
            (std::io::ErrorKind::Other, "injected".into())
        );
    }

    /// The writer hands its sink each durable batch once, in LSN order,
    /// publishes a group once all of it is applied, and tells the sink of
    /// each group's end, with the freeze a group held.
    #[test]
    fn the_sink_gets_each_durable_group_in_order_and_whole() {
        let shared = Arc::new(Shared::default());
        let mut writer = writer(Options::default(), Arc::clone(&shared));
        let sink = Arc::new(Recording::default());
        writer.set_sink(Arc::clone(&sink) as Arc<dyn Sink>);
        writer.commit(vec![append_msg(1)]);
        writer.commit(vec![append_msg(2), append_msg(3)]);
        let (ack, rx) = ack_channel();
        writer.commit(vec![append_msg(4), Msg::Freeze { ack }]);
        writer.quiesce().unwrap();
        assert_eq!(
            answer(&rx).unwrap(),
            Lsn(4),
            "a freeze acks the durable LSN"
        );
        let calls = sink.calls.lock().unwrap().clone();
        assert_eq!(
            calls,
            [
                "apply 1 (1 events)",
                "publish 1",
                "after_group freeze=false",
                "apply 2 (1 events)",
                "apply 3 (1 events)",
                "publish 3",
                "after_group freeze=false",
                "apply 4 (1 events)",
                "publish 4",
                "after_group freeze=true",
            ]
        );
        assert_eq!(shared.durable_lsn.load(Ordering::Acquire), 4);
    }

    fn periodic_writer(interval: std::time::Duration) -> Writer {
        let options = Options {
            durability: Durability::Periodic(interval),
            ..Options::default()
        };
        writer(options, Arc::new(Shared::default()))
    }

    /// In `Periodic` mode a group written once the sync fell due syncs
    /// (the writer does not wait for an idle moment that steady load never
    /// gives), and one written before it does not.
    #[test]
    fn a_periodic_sync_falls_due_with_the_next_group() {
        let mut writer = periodic_writer(std::time::Duration::from_secs(3600));
        writer.write_group(&[append_msg(1)]).unwrap();
        writer.write_group(&[append_msg(2)]).unwrap();
        assert_eq!(
            writer.shared.fsyncs.load(Ordering::Relaxed),
            0,
            "not due yet"
        );
        // The oldest unsynced write is now older than the interval.
        writer.options.durability = Durability::Periodic(std::time::Duration::from_millis(1));
        std::thread::sleep(std::time::Duration::from_millis(5));
        writer.write_group(&[append_msg(3)]).unwrap();
        assert_eq!(
            writer.shared.fsyncs.load(Ordering::Relaxed),
            1,
            "due: synced"
        );
        assert_eq!(writer.durable_lsn, Lsn(3));
        assert_eq!(writer.unsynced_since, None);
    }

    /// In `Periodic` mode, a writer that meets the memory bound while a
    /// frozen memtable is still being snapshotted waits for the snapshot:
    /// what it acknowledged before is synced first, so the wait (a whole
    /// snapshot) does not stretch the loss window past the interval.
    #[test]
    fn a_periodic_writer_syncs_before_waiting_on_the_memory_bound() {
        let mut options = Options {
            durability: Durability::Periodic(std::time::Duration::from_secs(3600)),
            ..Options::default()
        };
        options.snapshots.memtable_bytes_max = 2;
        let shared = Arc::new(Shared::default());
        let (mut writer, views, _woken) = writer_with_views(options, Arc::clone(&shared));
        writer.write_group(&[append_msg(1)]).unwrap();
        assert_eq!(shared.fsyncs.load(Ordering::Relaxed), 0, "not due yet");
        // A frozen memtable in the snapshotter's hands, and more above it.
        views.apply(Lsn(1), &[sample(1)]).unwrap();
        views.publish(Lsn(1));
        assert!(views.freeze());
        views.apply(Lsn(2), &[sample(2)]).unwrap();
        views.publish(Lsn(2));
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(std::time::Duration::from_millis(50));
                views.snapshot_failed(Error::Closed);
            });
            assert!(writer.hold_memory_bound().is_err(), "released by a failure");
        });
        assert_eq!(shared.fsyncs.load(Ordering::Relaxed), 1);
        assert_eq!(writer.durable_lsn, Lsn(1));
    }

    /// A task attempt's status change, conditioned on its status before.
    fn transition(
        task: &str,
        from: Option<TaskStatusKind>,
        to: TaskStatus,
    ) -> (Msg, crate::log::ack::AckReceiver) {
        let attempt = crate::event::AttemptScope {
            task: crate::event::TaskScope {
                run: crate::event::RunScope {
                    tenant: "t".into(),
                    dag: "d".into(),
                    run: "r".into(),
                },
                task: task.into(),
            },
            try_number: 1,
        };
        let events = vec![Event::now(crate::event::EventBody::TaskStatus {
            attempt: attempt.clone(),
            status: to,
            worker: "w".into(),
        })];
        let (ack, rx) = ack_channel();
        let msg = Msg::Append {
            payload: encode_batch(&events).unwrap(),
            events,
            conditions: vec![Condition::AttemptStatus {
                attempt,
                any_of: vec![from],
            }],
            ack,
        };
        (msg, rx)
    }

    fn answer(rx: &crate::log::ack::AckReceiver) -> Result<Lsn> {
        rx.recv_timeout(std::time::Duration::from_secs(5))
            .expect("the writer answered")
    }

    /// Conditional batches on unrelated tasks are checked together and
    /// share one group's sync: conditions do not serialize the writer.
    #[test]
    fn conditions_on_unrelated_tasks_share_one_sync() {
        let shared = Arc::new(Shared::default());
        let (mut writer, _views, _woken) =
            writer_with_views(Options::default(), Arc::clone(&shared));
        let (msgs, rxs): (Vec<Msg>, Vec<_>) = ["a", "b", "c"]
            .iter()
            .map(|t| transition(t, None, TaskStatus::Running))
            .unzip();
        let before = shared.fsyncs.load(Ordering::Relaxed);
        writer.commit(msgs);
        assert_eq!(shared.fsyncs.load(Ordering::Relaxed) - before, 1);
        let lsns: Vec<Lsn> = rxs.iter().map(|rx| answer(rx).unwrap()).collect();
        assert_eq!(lsns, [Lsn(1), Lsn(2), Lsn(3)]);
    }

    /// A conditional batch that depends on an earlier batch of its own
    /// group is checked after that batch is applied (the group is
    /// committed in two parts, two syncs), so it sees it: here the second
    /// start of one attempt is refused, and the succeed after it accepted.
    #[test]
    fn a_condition_sees_the_batches_before_it_in_its_own_group() {
        let shared = Arc::new(Shared::default());
        let (mut writer, views, _woken) =
            writer_with_views(Options::default(), Arc::clone(&shared));
        let (start, first) = transition("a", None, TaskStatus::Running);
        let (again, second) = transition("a", None, TaskStatus::Running);
        let (other, third) = transition("b", None, TaskStatus::Running);
        let (done, fourth) = transition(
            "a",
            Some(TaskStatusKind::Running),
            TaskStatus::Succeeded { result: Vec::new() },
        );
        let before = shared.fsyncs.load(Ordering::Relaxed);
        writer.commit(vec![start, again, other, done]);
        assert_eq!(answer(&first).unwrap(), Lsn(1));
        match answer(&second) {
            Err(Error::Conflict {
                index: 0, found, ..
            }) => {
                assert_eq!(found, Found::AttemptStatus(Some(TaskStatusKind::Running)));
            }
            other => panic!("the second start must conflict: {other:?}"),
        }
        assert_eq!(answer(&third).unwrap(), Lsn(2));
        assert_eq!(answer(&fourth).unwrap(), Lsn(3));
        assert_eq!(shared.fsyncs.load(Ordering::Relaxed) - before, 2);
        assert_eq!(shared.conflicts.load(Ordering::Relaxed), 1);
        assert_eq!(views.visible_lsn(), Lsn(3), "the refused batch took no LSN");
    }

    /// A group whose apply fails leaves the views without it: a later
    /// conditional batch that depends on it is never checked against those
    /// views and written (that would let a condition the log's order makes
    /// false through: two starts of one attempt after a reopen). Here the
    /// group `[start, start]` of one attempt splits; its first part fails
    /// to apply (inline: a lone part is finished on the writer's thread);
    /// the second start is refused and nothing after the first is written.
    #[test]
    fn a_condition_is_never_checked_against_views_that_missed_a_failed_group() {
        let shared = Arc::new(Shared::default());
        let (mut writer, views, _woken, fail) =
            writer_with_failing_views(Options::default(), Arc::clone(&shared));
        let (start, first) = transition("a", None, TaskStatus::Running);
        let (again, second) = transition("a", None, TaskStatus::Running);
        let (plain, third) = {
            let (ack, rx) = ack_channel();
            let Msg::Append {
                payload, events, ..
            } = append_msg(9)
            else {
                unreachable!("an append")
            };
            let msg = Msg::Append {
                payload,
                events,
                conditions: Vec::new(),
                ack,
            };
            (msg, rx)
        };
        fail.arm(FAILS);
        writer.commit(vec![start, again, plain]);
        assert!(answer(&first).is_err(), "its group failed to apply");
        assert!(answer(&second).is_err());
        assert!(answer(&third).is_err());
        assert_eq!(writer.next_lsn, Lsn(2), "only the first start was framed");
        assert_eq!(views.visible_lsn(), Lsn(0));
        assert!(shared.poison.get().is_some());
    }

    /// The writer keeps a group's events for the conditions of later
    /// groups only while conditional batches come, and each only until the
    /// views have published it: a plain workload keeps none (it kept every
    /// event since open, until a conditional batch came; then, each group
    /// until the next, freed on the writer's path).
    #[test]
    fn pending_groups_are_forgotten_once_published() {
        let shared = Arc::new(Shared::default());
        let (mut writer, views, _woken) =
            writer_with_views(Options::default(), Arc::clone(&shared));
        for i in 0..100 {
            writer.commit(vec![append_msg(i)]);
            assert!(writer.pending.is_empty(), "a plain workload keeps nothing");
        }
        // Conditional batches now and then: kept until published, and no
        // longer than that.
        for i in 0..100 {
            let (msg, _rx) = transition(&format!("t{i}"), None, TaskStatus::Running);
            writer.commit(vec![msg, append_msg(i)]);
            assert!(
                writer.pending.len() <= 1,
                "{} pending",
                writer.pending.len()
            );
        }
        assert_eq!(views.visible_lsn(), Lsn(300));
        for i in 0..TRACK_GROUPS {
            writer.commit(vec![append_msg(i)]);
        }
        assert!(writer.pending.is_empty(), "tracking stops");
        assert_eq!(writer.tracking_groups, 0);
    }

    /// A group that failed to apply halfway left a batch in the active
    /// memtable, applied and unpublished. An append that then meets the
    /// memory bound must not freeze that memtable (its snapshot would hold
    /// part of a group; in debug builds `freeze`'s assertion panicked the
    /// writer): it gets the failure, and nothing is frozen.
    #[test]
    fn the_memory_bound_never_freezes_after_a_failed_apply() {
        let mut options = Options::default();
        options.snapshots.every_bytes = 1;
        options.snapshots.memtable_bytes_max = 2;
        let shared = Arc::new(Shared::default());
        let (mut writer, views, _woken) = writer_with_views(options, Arc::clone(&shared));
        // What the acker leaves when a group fails after its first batch.
        views.apply(Lsn(1), &[sample(1)]).unwrap();
        writer.finisher.sink_failed.store(true, Ordering::Release);
        shared.poison.set(&Arc::new(Error::Closed));
        assert!(writer.hold_memory_bound().is_err());
        assert!(views.levels().frozen.is_none(), "nothing frozen");
    }
}
