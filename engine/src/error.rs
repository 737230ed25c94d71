//! The engine's public error type.
//!
//! Every expected fault (I/O, a full disk, corrupt bytes, a caller's bad
//! input, a held lock) is an [`Error`] that says where it happened: the path,
//! the segment file, the byte offset, the LSN. Broken invariants are bugs and
//! panic instead.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use crate::condition::{Condition, Found};
use crate::log::Lsn;

/// A `Result` whose error is the engine's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Which configured limit an input exceeded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Limit {
    /// A tenant, dag, run, task, checkpoint or worker name.
    NameBytes,
    /// A key.
    KeyBytes,
    /// A value or a metadata blob.
    ValueBytes,
    /// One event's variable-size parts, summed.
    EventBytes,
    /// The encoded size of one batch.
    BatchBytes,
    /// The number of events in one batch.
    BatchEvents,
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            Limit::NameBytes => "name",
            Limit::KeyBytes => "key",
            Limit::ValueBytes => "value",
            Limit::EventBytes => "event",
            Limit::BatchBytes => "encoded batch",
            Limit::BatchEvents => "batch event count",
        };
        f.write_str(s)
    }
}

/// Why a frame or segment header failed to validate.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Invalid {
    /// The frame's length field is zero or larger than the format allows.
    BadLength(u32),
    /// The frame runs past the end of the file.
    Truncated,
    /// The checksum does not match (bit flip, torn write, or another log's frame).
    Checksum,
    /// The checksum matches but the LSN is not the next one expected.
    UnexpectedLsn(Lsn),
    /// The payload does not validate as a batch of events.
    Payload(String),
    /// The segment header's magic bytes are wrong.
    BadMagic,
    /// The segment header's checksum does not match.
    HeaderChecksum,
    /// The segment header names a base LSN other than its file name's.
    BaseLsnMismatch(Lsn),
    /// The segment belongs to another log.
    LogIdMismatch,
    /// Non-zero bytes follow the end of the frames.
    TrailingGarbage,
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Invalid::BadLength(n) => write!(f, "bad frame length {n}"),
            Invalid::Truncated => f.write_str("frame runs past the end of the file"),
            Invalid::Checksum => f.write_str("checksum mismatch"),
            Invalid::UnexpectedLsn(lsn) => write!(f, "frame has LSN {lsn}"),
            Invalid::Payload(why) => write!(f, "payload does not validate: {why}"),
            Invalid::BadMagic => f.write_str("not a waymark segment (bad magic)"),
            Invalid::HeaderChecksum => f.write_str("segment header checksum mismatch"),
            Invalid::BaseLsnMismatch(lsn) => {
                write!(f, "header says base LSN {lsn}, unlike the file name")
            }
            Invalid::LogIdMismatch => f.write_str("segment belongs to another log"),
            Invalid::TrailingGarbage => f.write_str("non-zero bytes after the last frame"),
        }
    }
}

/// The engine's error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O operation failed on `path`.
    #[error("I/O error on {path}: {source}", path = .path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The disk is full; nothing in the failed batch was acknowledged.
    #[error("disk full while writing {path}", path = .path.display())]
    DiskFull {
        /// The file being written.
        path: PathBuf,
    },
    /// The state directory is already open in this process.
    #[error("{path} is already open in this process; share the open engine instead", path = .path.display())]
    AlreadyOpenInThisProcess {
        /// The state directory.
        path: PathBuf,
    },
    /// Another process holds the state directory's lock.
    #[error("{path} is locked by another process ({holder}); only one process may write a state directory", path = .path.display())]
    LockedByOtherProcess {
        /// The state directory.
        path: PathBuf,
        /// What the lock file says about its holder (its pid), if anything.
        holder: String,
    },
    /// A frame or segment header that is not at the torn tail failed to
    /// validate: the log is corrupt. Open in salvage mode to truncate it.
    #[error("corrupt log: segment {segment} offset {offset} (expected LSN {expected_lsn}): {reason}", segment = .segment.display())]
    Corruption {
        /// The segment file.
        segment: PathBuf,
        /// The byte offset of the bad frame or header in the segment.
        offset: u64,
        /// The LSN the frame at that offset should have had.
        expected_lsn: Lsn,
        /// What was wrong.
        reason: Invalid,
    },
    /// A record in a view (the memtables or the redb file) failed to
    /// validate: the views are corrupt. The log is intact; reopening
    /// rebuilds the views from it when the log reaches back far enough.
    #[error("corrupt view record in table {table}: {reason}")]
    CorruptView {
        /// The view table.
        table: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// The views' redb file could not be opened, read or written.
    #[error("views {path}: {reason}", path = .path.display())]
    Views {
        /// The redb file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// The views' redb file does not belong with this log: another log's
    /// id, a snapshot beyond the log's end, or a log that no longer reaches
    /// back to the snapshot.
    #[error("views {path} do not match the log: {reason}", path = .path.display())]
    ViewsMismatch {
        /// The redb file.
        path: PathBuf,
        /// What differs, and what to do.
        reason: String,
    },
    /// The log is missing a segment: LSNs jump.
    #[error("log has a gap: segment {segment} starts at LSN {found}, expected {expected}", segment = .segment.display())]
    Gap {
        /// The segment that starts too late.
        segment: PathBuf,
        /// The LSN expected next.
        expected: Lsn,
        /// The LSN the segment starts at.
        found: Lsn,
    },
    /// Retention removed the frames a cursor was about to read while it
    /// read the log: the cursor does not pass over them in silence.
    #[error(
        "LSN {expected} was removed from the log while it was read; the log now starts at LSN {first}"
    )]
    Removed {
        /// The LSN the cursor was to read next.
        expected: Lsn,
        /// The first LSN the log still holds.
        first: Lsn,
    },
    /// A segment's format version is newer than this build reads.
    #[error("{path} has format version {version}; this build reads versions up to {supported}", path = .path.display())]
    UnsupportedVersion {
        /// The segment file.
        path: PathBuf,
        /// The version found.
        version: u32,
        /// The newest version this build reads.
        supported: u32,
    },
    /// A path that should be a waymark state directory is not one.
    #[error("{path} is not a waymark state directory: {why}", path = .path.display())]
    NotAStateDir {
        /// The path given.
        path: PathBuf,
        /// What is missing or wrong.
        why: String,
    },
    /// An input exceeded a configured limit; nothing was written.
    #[error("{what} is {actual_bytes} bytes, over the limit of {max_bytes}")]
    LimitExceeded {
        /// Which limit.
        what: Limit,
        /// The input's size (bytes, or events for `BatchEvents`).
        actual_bytes: u64,
        /// The limit.
        max_bytes: u64,
    },
    /// A batch had no events.
    #[error("a batch must hold at least one event")]
    EmptyBatch,
    /// An event is not what its fields say (a value marked compressed that
    /// is not a zstd frame); nothing was written.
    #[error("the event for key {key:?} is invalid: {why}")]
    InvalidEvent {
        /// The event's key.
        key: String,
        /// What is wrong.
        why: String,
    },
    /// The options are inconsistent.
    #[error("invalid options: {0}")]
    InvalidOptions(String),
    /// An earlier write or fsync failed; the engine refuses further writes.
    /// Reopen the directory to recover.
    ///
    /// The failure is kept as the error's source, shared by every caller
    /// refused since: a full disk under the log or the views is still a
    /// full disk ([`Error::is_disk_full`] looks through the chain).
    #[error(
        "engine is poisoned by an earlier failure and refuses writes; reopen to recover: {cause}"
    )]
    Poisoned {
        /// The failure that poisoned the engine.
        #[source]
        cause: Arc<Error>,
    },
    /// A thread of the engine stopped in the middle of its work: a bug
    /// (it has printed its panic). The engine is poisoned with this cause.
    #[error("the engine's {thread} thread stopped unexpectedly (a bug; it printed why)")]
    ThreadDied {
        /// Which thread: `writer` or `acker`.
        thread: &'static str,
    },
    /// A condition of [`crate::Engine::append_if`] could not be checked:
    /// the views it reads could not be read. The batch was not written
    /// (unlike an I/O error of the log, which leaves a batch's fate open).
    #[error("a condition could not be checked, so the batch was not written: {cause}")]
    ConditionUnreadable {
        /// Why the views could not be read.
        #[source]
        cause: Box<Error>,
    },
    /// A snapshot of the views into redb failed; the snapshotter has
    /// stopped (the log is untouched, reads stay correct). Reopening
    /// replays the log after the last good snapshot.
    #[error("a snapshot of the views failed, and snapshots have stopped: {cause}")]
    SnapshotFailed {
        /// Why the snapshot failed.
        #[source]
        cause: Arc<Error>,
    },
    /// The memtables reached their memory bound and the snapshot that
    /// would have made room failed: appends wait no longer.
    #[error("the memtables are full and the snapshot that frees them failed: {cause}")]
    MemtablesFull {
        /// Why the snapshot failed.
        #[source]
        cause: Arc<Error>,
    },
    /// A condition of [`crate::Engine::append_if`] did not hold when the
    /// batch's turn came (after every earlier batch, before this one was
    /// written): nothing was written.
    #[error("condition {index} does not hold ({condition}): found {found}")]
    Conflict {
        /// The index of the first condition that failed, in the list given.
        index: usize,
        /// That condition.
        condition: Box<Condition>,
        /// What the views held instead.
        found: Found,
    },
    /// The engine was closed.
    #[error("engine is closed")]
    Closed,
}

impl Error {
    /// Whether the disk filled up: this error or any error in its chain of
    /// causes (a poison keeps the failure that caused it) is
    /// [`Error::DiskFull`].
    ///
    /// ```
    /// use waymark_engine::Error;
    ///
    /// let full = Error::DiskFull { path: "/state/log/0001.seg".into() };
    /// let later = Error::Poisoned { cause: std::sync::Arc::new(full) };
    /// assert!(later.is_disk_full());
    /// ```
    pub fn is_disk_full(&self) -> bool {
        self.chain().any(|e| matches!(e, Error::DiskFull { .. }))
    }

    /// Whether the engine refuses writes until it is reopened: poisoned by a
    /// failed write, sync or apply, or a thread that died.
    pub fn is_poisoned(&self) -> bool {
        matches!(
            self,
            Error::Poisoned { .. } | Error::ThreadDied { .. } | Error::MemtablesFull { .. }
        )
    }

    /// This error and the engine errors it was caused by, outermost first.
    pub fn chain(&self) -> impl Iterator<Item = &Error> {
        std::iter::successors(Some(self), |e| match e {
            Error::Poisoned { cause }
            | Error::MemtablesFull { cause }
            | Error::SnapshotFailed { cause } => Some(cause.as_ref()),
            _ => None,
        })
    }

    /// Wraps an I/O error with the path it happened on, telling a full disk
    /// apart.
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Error {
        let path = path.into();
        if source.kind() == io::ErrorKind::StorageFull {
            Error::DiskFull { path }
        } else {
            Error::Io { path, source }
        }
    }
}
