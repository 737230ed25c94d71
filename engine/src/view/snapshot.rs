//! The snapshotter thread: writes the memtable into redb, so that an open
//! replays only the log after the last snapshot.
//!
//! It wakes when the writer says a threshold was crossed (events or bytes
//! since the last snapshot) or when the interval has passed. It then asks
//! the writer to freeze the active memtable (`Msg::Freeze`): the writer
//! syncs the log first, so a frozen memtable only ever holds durable
//! events, and freezes between two groups, so it holds whole batches. The
//! snapshotter writes the frozen memtable and `applied_lsn` into redb in
//! one durable transaction, then drops it.
//!
//! A failed snapshot stops the snapshotter and is recorded: the log is
//! untouched, reads stay correct (the frozen memtable stays in place), and
//! once the memtables reach their memory bound appends fail with
//! [`Error::MemtablesFull`] instead of growing memory without bound.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, SendTimeoutError, Sender};

use super::Views;
use super::memtable::Memtable;
use crate::error::{Error, Result};
use crate::log::ack::{AckReceiver, ack_channel};
use crate::log::poison::Poison;
use crate::log::retention;
use crate::log::writer::Msg;
use crate::options::{Retention, SnapshotOptions};
use crate::storage::Storage;

/// What a snapshot needs besides the writer: the views, and the log for
/// retention afterwards.
#[derive(Debug)]
pub(crate) struct Snapshots {
    pub views: Arc<Views>,
    pub storage: Arc<dyn Storage>,
    pub log_dir: PathBuf,
    pub retention: Retention,
    /// Segments removed by retention since open.
    pub removed: AtomicU64,
    /// Segments archived by retention since open.
    pub archived: AtomicU64,
    /// Once the engine is poisoned, retention touches the log no more.
    pub poison: Arc<Poison>,
}

/// What wakes the snapshotter.
#[derive(Debug)]
pub(crate) enum Wake {
    /// A threshold may have been crossed.
    Check,
    /// The engine is closing.
    Stop,
}

/// Runs until told to stop or until a snapshot fails.
pub(crate) fn run(
    snaps: Arc<Snapshots>,
    writer: Sender<Msg>,
    wake: Receiver<Wake>,
    options: SnapshotOptions,
) {
    let views = &snaps.views;
    loop {
        match wake.recv_timeout(options.interval.min(Duration::from_secs(1))) {
            Ok(Wake::Stop) | Err(RecvTimeoutError::Disconnected) => return,
            Ok(Wake::Check) | Err(RecvTimeoutError::Timeout) => {}
        }
        if !due(views, &options) {
            continue;
        }
        match snapshot_once(&snaps, &writer) {
            Ok(()) => {}
            // The engine was closed: nothing failed.
            Err(Error::Closed) => return,
            Err(e) => {
                views.snapshot_failed(e);
                return;
            }
        }
    }
}

/// Whether a threshold is crossed.
pub(crate) fn due(views: &Views, options: &SnapshotOptions) -> bool {
    let levels = views.levels();
    if levels.frozen.is_some() {
        return true; // A frozen memtable left by the writer's memory bound.
    }
    let active = &levels.active;
    !active.is_empty()
        && (crossed(active, options) || views.since_last_snapshot() >= options.interval)
}

/// Whether the active memtable holds enough for a snapshot (events or
/// bytes since the last one). The one place the thresholds are tested: the
/// views' feed asks it after every group, to wake the snapshotter.
pub(crate) fn crossed(active: &Memtable, options: &SnapshotOptions) -> bool {
    active.events() >= options.every_events || active.bytes() >= options.every_bytes
}

/// Asks the writer to freeze the active memtable. Never blocks on a full
/// queue: the writer may be waiting at the memory bound for this very
/// snapshotter, having frozen on its own, while callers keep the queue
/// full; so between tries it looks for a frozen memtable, and returns
/// `None` (nothing sent) once there is one to write.
fn send_freeze(views: &Views, writer: &Sender<Msg>) -> Result<Option<AckReceiver>> {
    let (ack, rx) = ack_channel();
    let mut msg = Msg::Freeze { ack };
    loop {
        match writer.send_timeout(msg, Duration::from_millis(10)) {
            Ok(()) => return Ok(Some(rx)),
            Err(SendTimeoutError::Disconnected(_)) => return Err(Error::Closed),
            Err(SendTimeoutError::Timeout(back)) => {
                if views.levels().frozen.is_some() {
                    return Ok(None);
                }
                msg = back;
            }
        }
    }
}

/// Freezes through the writer (unless a frozen memtable is waiting
/// already), writes the frozen memtable into redb, then applies retention
/// to the segments the snapshot covers.
pub(crate) fn snapshot_once(snaps: &Snapshots, writer: &Sender<Msg>) -> Result<()> {
    let views = &snaps.views;
    let _one = views
        .snap
        .one_at_a_time
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if views.levels().frozen.is_none()
        && let Some(rx) = send_freeze(views, writer)?
    {
        loop {
            match rx.recv_timeout(Duration::from_millis(10)) {
                Some(result) => {
                    result?;
                    break;
                }
                // The writer may have frozen on its own (the memory bound)
                // and be waiting for this very snapshot: write that one.
                None if views.levels().frozen.is_some() => break,
                None => {}
            }
        }
    }
    let started = std::time::Instant::now();
    if let Some(events) = views.snapshot_frozen()? {
        tracing::info!(
            applied_lsn = views.applied_lsn().0,
            events,
            micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
            "snapshot written"
        );
    }
    // Fail-stop: after a failed write or sync the log is left as it is.
    // Retention would sync the segment after the ones it removes, a retried
    // fsync on a file whose last one may have failed; it asks before each
    // step.
    let done = retention::apply(
        snaps.storage.as_ref(),
        &snaps.log_dir,
        views.applied_lsn(),
        &snaps.retention,
        now_unix_ms(),
        &|| snaps.poison.is_set(),
    )?;
    if done.removed > 0 || done.archived > 0 {
        tracing::info!(
            removed = done.removed,
            archived = done.archived,
            before_lsn = views.applied_lsn().0,
            "retention removed or archived segments the snapshot covers"
        );
    }
    snaps.removed.fetch_add(done.removed, Ordering::Relaxed);
    snaps.archived.fetch_add(done.archived, Ordering::Relaxed);
    Ok(())
}

fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
