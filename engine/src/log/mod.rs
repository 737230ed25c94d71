//! The durable, segmented event log: the engine's truth.
//!
//! The log is a directory of segments (`segment`), each a header and a run
//! of frames (`frame`), one frame per atomically written batch of events.
//! The writer thread (`writer`) appends with group commit into the active
//! segment (`active`); recovery
//! (`recovery`) verifies every frame on open and cuts a torn tail; the
//! reader (`reader`) iterates frames from any LSN, offline or beside a live
//! writer. FORMAT.md describes every byte.

pub(crate) mod ack;
pub(crate) mod active;
pub(crate) mod frame;
pub(crate) mod poison;
pub(crate) mod readahead;
pub(crate) mod reader;
pub(crate) mod recovery;
pub(crate) mod retention;
pub(crate) mod segment;
pub(crate) mod sink;
pub(crate) mod writer;

use std::fmt;

pub use frame::{FRAME_ALIGN_BYTES, FRAME_HEADER_BYTES};
pub use reader::{
    Cursor, FrameView, LogReader, READ_AHEAD_AFTER_FRAMES, READ_AHEAD_MIN_BYTES, TailStop,
};
pub use recovery::{Cut, RecoveryReport, Salvaged};
pub use segment::SegmentHeader;

/// The on-disk format version this build writes (and the newest it reads).
/// Version 2 added `RunStatus::Paused`; version 3 the `codec` of a set's
/// value (FORMAT.md, "Versioning" and "Value compression").
pub const FORMAT_VERSION: u32 = 3;

/// The oldest format version this build reads. A log whose tail segment is
/// older is appended to in a new segment (FORMAT.md, "Versioning").
pub const FORMAT_VERSION_OLDEST: u32 = 1;

/// The name of the log directory inside a state directory.
pub const LOG_DIR_NAME: &str = "log";

/// A log sequence number: names one committed batch (one frame). LSNs start
/// at 1 and increase by exactly 1 per batch, with no gap; `Lsn(0)` means
/// "before the first batch".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl Lsn {
    /// The LSN after this one.
    pub fn next(self) -> Lsn {
        Lsn(self
            .0
            .checked_add(1)
            .expect("an LSN space of 2^64 batches is never exhausted"))
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}
