//! Options and limits: every bound the engine enforces, with its default and
//! the reason for it, in one place.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::log::frame::FRAME_PAYLOAD_BYTES_MAX;

/// When an append is acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Durability {
    /// Acknowledge after the batch's group is written and `fdatasync`ed. An
    /// acknowledged batch survives any crash. The default.
    #[default]
    Sync,
    /// Acknowledge after the write; the writer `fdatasync`s within the given
    /// interval of the first unsynced write. A crash may lose batches
    /// acknowledged in the last interval (the loss window), always whole
    /// batches and always a suffix of the log.
    Periodic(Duration),
    /// Acknowledge after the write; sync only at segment rollover and clean
    /// close. For tests and scratch state: a crash may lose any suffix.
    None,
}

/// What to do on open when the log is corrupt somewhere other than its torn
/// tail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RecoveryMode {
    /// Refuse to open with [`Error::Corruption`] naming segment and offset.
    /// The default.
    #[default]
    Strict,
    /// Open anyway: truncate the log at the first bad frame, remove the
    /// segments after it, and report exactly what was dropped.
    Salvage,
}

/// Input size limits. Input over a limit is an [`Error::LimitExceeded`]
/// before anything is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest tenant, dag, run, task, checkpoint, worker or failure-kind
    /// name. Default 1 KiB: names are identifiers, and every key of a view
    /// repeats them.
    pub name_bytes_max: u32,
    /// Longest key. Default 4 KiB, as names: keys are identifiers.
    pub key_bytes_max: u32,
    /// Largest value, metadata blob, task result or error message. Default
    /// 8 MiB: larger blobs belong in object storage, referenced by key.
    pub value_bytes_max: u32,
    /// Largest sum of one event's names, keys and values. Default 16 MiB.
    pub event_bytes_max: u32,
    /// Largest encoded batch (one frame's payload). Default 32 MiB: the
    /// writer holds a whole group in memory, and a batch must fit a segment.
    pub batch_bytes_max: u32,
    /// Most events in one batch. Default 100,000.
    pub batch_events_max: u32,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            name_bytes_max: 1024,
            key_bytes_max: 4096,
            value_bytes_max: 8 << 20,
            event_bytes_max: 16 << 20,
            batch_bytes_max: 32 << 20,
            batch_events_max: 100_000,
        }
    }
}

impl Limits {
    /// The largest limits the format allows: for an engine that re-applies
    /// batches another engine accepted under its own limits (a replay, a
    /// fork, a salvage), so that a log written with raised limits replays.
    ///
    /// ```
    /// use waymark_engine::{Limits, Options};
    ///
    /// let options = Options { limits: Limits::format_max(), ..Options::default() };
    /// assert!(options.validate().is_ok());
    /// ```
    pub fn format_max() -> Limits {
        Limits {
            name_bytes_max: u32::MAX,
            key_bytes_max: u32::MAX,
            value_bytes_max: u32::MAX,
            event_bytes_max: u32::MAX,
            batch_bytes_max: u32::try_from(FRAME_PAYLOAD_BYTES_MAX)
                .expect("the frame limit (1 GiB) fits a u32"),
            batch_events_max: u32::MAX,
        }
    }
}

/// The largest [`Options::writer_queue_depth`]: the queue's slots are
/// allocated when the engine opens.
pub const WRITER_QUEUE_DEPTH_MAX: u32 = 1 << 20;

/// How an engine opens and writes its log.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use waymark_engine::{Durability, Options};
///
/// let options = Options {
///     durability: Durability::Periodic(Duration::from_millis(5)),
///     segment_bytes_max: 8 << 20,
///     ..Options::default()
/// };
/// assert!(options.validate().is_ok());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// When appends are acknowledged. Default [`Durability::Sync`].
    pub durability: Durability,
    /// Segment size at which the writer starts a new segment. Default
    /// 16 MiB: big enough that rollover (two fsyncs) is rare, small enough
    /// that retention frees space in useful steps, and that an open after a
    /// crash, which reads the tail segment whole to find its end, reads
    /// little (W6 at 1e6 events: about 36 ms with 16 MiB, 37-48 ms with
    /// 64 MiB, BENCHMARKS.md). A batch larger than this gets a segment of
    /// its own.
    pub segment_bytes_max: u64,
    /// Whether a new segment is extended to `segment_bytes_max` (zeros) when
    /// created, so that appends do not grow the file and each `fdatasync`
    /// need not update its size. Default true. Recovery tells the zero tail
    /// from data: no frame has length zero.
    pub preallocate: bool,
    /// Input size limits.
    pub limits: Limits,
    /// Batches that may wait for the writer before `append` blocks
    /// (backpressure). Default 4096, at most [`WRITER_QUEUE_DEPTH_MAX`].
    pub writer_queue_depth: u32,
    /// Most batches in one group commit. Default 4096.
    pub group_batches_max: u32,
    /// Most payload bytes in one group commit (a single larger batch still
    /// goes alone). Default 8 MiB.
    pub group_bytes_max: u32,
    /// What to do with corruption found on open. Default
    /// [`RecoveryMode::Strict`].
    pub recovery: RecoveryMode,
    /// When the views are snapshotted into redb.
    pub snapshots: SnapshotOptions,
    /// What happens to segments whose events are all in a durable
    /// snapshot. Default [`Retention::KeepAll`].
    pub retention: Retention,
    /// Whether values are stored compressed. Default `None`: every value
    /// is stored as written.
    pub compression: Option<Compression>,
}

/// Value compression (opt-in): every value of a set (attempt state, task
/// state, a shared variable) of at least `min_bytes` is compressed with
/// zstd, once, on the appending thread, and stored so in the log and the
/// views. Readers get the value back as written; limits apply to it as
/// written. A value that does not shrink is stored raw. Logs written with
/// compression need format version 3 to be read (FORMAT.md, "Value
/// compression").
///
/// # Examples
///
/// ```
/// use waymark_engine::{Compression, Options};
///
/// let options = Options { compression: Some(Compression::default()), ..Options::default() };
/// assert!(options.validate().is_ok());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Compression {
    /// The zstd level, 1 (fastest) to 19. Default 1: on 10 KiB JSON-like
    /// values it stores about as few bytes as level 3 (6.9 KB against
    /// 7.0 KB a set in `compare`'s W8) at a third of the time on the
    /// appending thread; raise it where disk matters more than the rate.
    pub level: i32,
    /// Values shorter than this are stored raw. Default 1024: below about
    /// a kilobyte a zstd frame saves little and costs a call each.
    pub min_bytes: u32,
}

impl Default for Compression {
    fn default() -> Compression {
        Compression {
            level: 1,
            min_bytes: 1024,
        }
    }
}

/// What happens to log segments once every event in them is in a durable
/// snapshot of the views (checked after each snapshot; the active segment
/// is always kept).
///
/// The trade-off: offline replay (`LogReader`, the `waymark` CLI) reaches
/// back only as far as the log is kept, and the views can be rebuilt from
/// the log (if `views.redb` is lost) only while the log starts at LSN 1.
/// Named checkpoints live in the views, so they stay restorable whatever
/// the retention.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Retention {
    /// Keep every segment: the whole history stays replayable. The default.
    #[default]
    KeepAll,
    /// Remove a segment (oldest first) once it is older than `age` (by the
    /// creation time in its header) or while the eligible segments together
    /// exceed `bytes`.
    KeepFor {
        /// Keep segments younger than this.
        age: Duration,
        /// Keep at most this many bytes of eligible segments.
        bytes: u64,
    },
    /// Move every eligible segment into this directory (a synced copy, then
    /// removal from the log), for replay elsewhere. The directory is on the
    /// same storage as the log.
    Archive(std::path::PathBuf),
}

/// When the snapshotter writes the memtable into redb: whichever of the
/// thresholds comes first, counted since the last snapshot.
///
/// The defaults start a snapshot every 16,384 events, and bound the log
/// tail that an open replays to about 32,768 events (some 35 ms on
/// a 2-core machine), whatever the log's size: past
/// [`memtable_events_max`](SnapshotOptions::memtable_events_max) appends
/// wait for the snapshotter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotOptions {
    /// Whether snapshots run at all. Default true. Without them the views
    /// live in memory only, grow with the state, and every open replays the
    /// whole log: for tests and short-lived scratch state.
    pub enabled: bool,
    /// Events applied since the last snapshot. Default 16,384.
    pub every_events: u64,
    /// Bytes held by the active memtable. Default 16 MiB.
    pub every_bytes: u64,
    /// Time since the last snapshot, if anything was applied. Default 10 s.
    pub interval: Duration,
    /// The memory bound: when the memtables together hold more than this,
    /// appends wait for the snapshot in progress (backpressure) instead of
    /// growing memory without bound. Default 256 MiB. Must exceed
    /// `every_bytes`.
    pub memtable_bytes_max: u64,
    /// The replay bound: when the memtables together hold this many events
    /// (applied, not yet in a snapshot), appends wait for the snapshot in
    /// progress. An open after a crash replays at most about this many
    /// events, however far the snapshotter had fallen behind the writers.
    /// Default 32,768 (two snapshots' worth). Must exceed `every_events`,
    /// or be `u64::MAX` (no bound).
    pub memtable_events_max: u64,
}

impl SnapshotOptions {
    /// Snapshots only when [`crate::Engine::snapshot`] is called: no
    /// threshold, no timer, no memory bound. For tests and tools that need
    /// to know exactly what is in `views.redb`.
    pub fn manual() -> SnapshotOptions {
        SnapshotOptions {
            enabled: true,
            every_events: u64::MAX,
            every_bytes: u64::MAX - 1,
            interval: Duration::from_secs(365 * 24 * 3600),
            memtable_bytes_max: u64::MAX,
            memtable_events_max: u64::MAX,
        }
    }
}

impl Default for SnapshotOptions {
    fn default() -> SnapshotOptions {
        SnapshotOptions {
            enabled: true,
            every_events: 16_384,
            every_bytes: 16 << 20,
            interval: Duration::from_secs(10),
            memtable_bytes_max: 256 << 20,
            memtable_events_max: 32_768,
        }
    }
}

impl Default for Options {
    fn default() -> Options {
        Options {
            durability: Durability::Sync,
            segment_bytes_max: 16 << 20,
            preallocate: true,
            limits: Limits::default(),
            writer_queue_depth: 4096,
            group_batches_max: 4096,
            group_bytes_max: 8 << 20,
            recovery: RecoveryMode::Strict,
            snapshots: SnapshotOptions::default(),
            retention: Retention::KeepAll,
            compression: None,
        }
    }
}

impl Options {
    /// For state that lives in memory and is thrown away: a test double (a
    /// kernel's `in_memory`), on [`crate::storage::in_memory`].
    ///
    /// - `durability`: [`Durability::Sync`], as in production: a sync of
    ///   the simulated disk is a copy in memory, and it keeps the durable
    ///   LSN (what history and watches read up to) at every acknowledged
    ///   batch.
    /// - `preallocate`: false, and `segment_bytes_max` 1 MiB: a preallocated
    ///   segment is memory held whether or not anything is written (16 MiB
    ///   each by default).
    /// - `snapshots`: off: the views live in their memtables.
    /// - `writer_queue_depth`: 64: the queue's slots are allocated (and
    ///   written) when the engine opens, about 120 bytes each.
    /// - `limits`: the defaults, so that a test meets the limits production
    ///   does.
    ///
    /// ```
    /// use waymark_engine::{Engine, Options, storage};
    ///
    /// let engine = Engine::open_with(storage::in_memory(7), "/state", Options::in_memory())?;
    /// assert!(engine.options().validate().is_ok());
    /// # Ok::<(), waymark_engine::Error>(())
    /// ```
    pub fn in_memory() -> Options {
        Options {
            durability: Durability::Sync,
            segment_bytes_max: 1 << 20,
            preallocate: false,
            snapshots: SnapshotOptions {
                enabled: false,
                ..SnapshotOptions::default()
            },
            writer_queue_depth: 64,
            ..Options::default()
        }
    }

    /// For an engine that re-applies batches another engine accepted (a
    /// replay to a point in the past, a fork, a salvage): no syncs, no
    /// preallocation, and the format's largest limits (the batches passed
    /// their writer's limits, which may have been raised). Snapshots stay
    /// on, so that a replay of a large log on disk keeps bounded memory;
    /// turn them off for a replay held in memory.
    pub fn scratch() -> Options {
        Options {
            durability: Durability::None,
            preallocate: false,
            limits: Limits::format_max(),
            ..Options::default()
        }
    }

    /// Checks that the options are consistent.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOptions`] saying which option is wrong.
    pub fn validate(&self) -> Result<()> {
        let bad = |why: &str| Err(Error::InvalidOptions(why.to_string()));
        let l = &self.limits;
        if self.segment_bytes_max < 4096 {
            return bad("segment_bytes_max must be at least 4096");
        }
        if l.batch_bytes_max == 0 || u64::from(l.batch_bytes_max) > FRAME_PAYLOAD_BYTES_MAX {
            return bad("batch_bytes_max must be between 1 and the format's frame limit (1 GiB)");
        }
        if l.value_bytes_max > l.event_bytes_max {
            return bad("value_bytes_max must not exceed event_bytes_max");
        }
        if l.batch_events_max == 0 {
            return bad("batch_events_max must be at least 1");
        }
        if self.writer_queue_depth == 0 || self.group_batches_max == 0 {
            return bad("writer_queue_depth and group_batches_max must be at least 1");
        }
        // The queue's slots are allocated when the engine opens.
        if self.writer_queue_depth > WRITER_QUEUE_DEPTH_MAX {
            return bad("writer_queue_depth must be at most 1,048,576");
        }
        let snap = &self.snapshots;
        if snap.every_events == 0 || snap.every_bytes == 0 || snap.interval.is_zero() {
            return bad(
                "snapshot thresholds (every_events, every_bytes, interval) must be above zero",
            );
        }
        if snap.memtable_bytes_max <= snap.every_bytes {
            return bad("snapshots.memtable_bytes_max must exceed snapshots.every_bytes");
        }
        if snap.memtable_events_max <= snap.every_events && snap.memtable_events_max != u64::MAX {
            return bad(
                "snapshots.memtable_events_max must exceed snapshots.every_events (or be u64::MAX)",
            );
        }
        if let Durability::Periodic(interval) = self.durability
            && interval.is_zero()
        {
            return bad("a periodic durability interval must be above zero");
        }
        if let Some(c) = self.compression
            && !(1..=19).contains(&c.level)
        {
            return bad("compression.level must be between 1 and 19");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Options that would fail later (or abort the process: the queue's
    /// slots are allocated at open) are refused by `validate`, by name.
    #[test]
    fn out_of_range_options_are_refused_before_open() {
        assert!(Options::default().validate().is_ok());
        let at_max = Options {
            writer_queue_depth: WRITER_QUEUE_DEPTH_MAX,
            ..Options::default()
        };
        assert!(at_max.validate().is_ok());
        let unbounded = Options {
            snapshots: SnapshotOptions {
                every_events: u64::MAX,
                memtable_events_max: u64::MAX,
                ..SnapshotOptions::default()
            },
            ..Options::default()
        };
        assert!(unbounded.validate().is_ok(), "no replay bound");
        assert!(
            Options {
                snapshots: SnapshotOptions::manual(),
                ..Options::default()
            }
            .validate()
            .is_ok()
        );
        for (what, options) in [
            (
                "writer_queue_depth",
                Options {
                    writer_queue_depth: WRITER_QUEUE_DEPTH_MAX + 1,
                    ..Options::default()
                },
            ),
            (
                "writer_queue_depth",
                Options {
                    writer_queue_depth: 0,
                    ..Options::default()
                },
            ),
            (
                "segment_bytes_max",
                Options {
                    segment_bytes_max: 4095,
                    ..Options::default()
                },
            ),
            (
                "memtable_events_max",
                Options {
                    snapshots: SnapshotOptions {
                        memtable_events_max: 16_384,
                        ..SnapshotOptions::default()
                    },
                    ..Options::default()
                },
            ),
            (
                "compression.level",
                Options {
                    compression: Some(Compression {
                        level: 0,
                        ..Compression::default()
                    }),
                    ..Options::default()
                },
            ),
        ] {
            match options.validate() {
                Err(Error::InvalidOptions(why)) => assert!(why.contains(what), "{why}"),
                other => panic!("{what}: {other:?}"),
            }
        }
    }
}
