//! waymark-engine: an embedded, event-sourced storage engine for the state of
//! workflow (DAG) tasks.
//!
//! Every change is an [`Event`]; batches of events are appended to a durable,
//! segmented log ([`log`]) by a writer thread with group commit. An
//! acknowledged batch survives any crash, and a batch is atomic: after a crash
//! it is wholly there or wholly absent. All file I/O goes through the
//! [`storage`] layer, whose simulated disk ([`storage::SimDisk`]) lets tests,
//! ours and yours, crash the engine at any point.
//!
//! # Examples
//!
//! ```
//! use waymark_engine::{AttemptScope, Engine, Event, EventBody, Lsn, RunScope, TaskScope};
//!
//! let dir = tempfile::tempdir()?;
//! let engine = Engine::open(dir.path())?;
//! let attempt = AttemptScope {
//!     task: TaskScope {
//!         run: RunScope { tenant: "acme".into(), dag: "docs".into(), run: "r1".into() },
//!         task: "ocr".into(),
//!     },
//!     try_number: 1,
//! };
//! let put = |key: &str, value: &[u8]| {
//!     Event::now(EventBody::Put {
//!         attempt: attempt.clone(),
//!         key: key.into(),
//!         value: value.to_vec(),
//!         meta: Vec::new(),
//!     })
//! };
//! // One batch: both events or neither, after any crash.
//! let lsn = engine.append(vec![put("pages", b"12"), put("lang", b"en")])?;
//! assert_eq!(lsn, Lsn(1));
//! drop(engine);
//!
//! // Reopen: recovery verifies every frame.
//! let engine = Engine::open(dir.path())?;
//! assert_eq!(engine.recovery_report().last_lsn, Some(Lsn(1)));
//! let mut cursor = engine.reader().cursor(Lsn(1));
//! let frame = cursor.next_frame()?.expect("the batch is there");
//! assert_eq!(frame.decode()?.len(), 2);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(unsafe_code)]
#![warn(missing_docs)]
// On-disk integers are u32/u64; no cast may silently cut one.
#![cfg_attr(not(test), warn(clippy::cast_possible_truncation))]

pub mod condition;
mod engine;
mod error;
pub mod event;
pub mod inspect;
mod lock;
pub mod log;
mod options;
pub mod storage;
pub mod view;

pub use condition::{Condition, Found, TaskStatusKind};
pub use engine::{Engine, Stats};
pub use error::{Error, Invalid, Limit, Result};
pub use event::{
    AttemptScope, Event, EventBody, ParentRef, RunScope, RunStatus, TaskScope, TaskStatus,
};
pub use lock::LOCK_FILE_NAME;
pub use log::{Cursor, FrameView, LogReader, Lsn, RecoveryReport};
pub use options::{
    Durability, Limits, Options, RecoveryMode, Retention, SnapshotOptions, WRITER_QUEUE_DEPTH_MAX,
};
pub use view::record::{
    AttemptRecord, CheckpointRecord, KvValue, RunRecord, SharedValue, TaskCounts, TaskRecord,
};
pub use view::{Sizes, ViewReader};

#[doc(hidden)]
pub mod __bench {
    //! The replay's CPU work alone, for the benchmark that compares it with
    //! the machine's CPU limit. Not API.

    /// Validates every frame of a loaded segment (`buf` starts at the
    /// segment's first byte and is 8-aligned) and accesses each batch's
    /// first event; returns the number of events.
    pub fn scan_segment(buf: &[u8]) -> u64 {
        use crate::log::frame::{Decoded, crc_seed, decode_frame};
        let header = crate::log::segment::SegmentHeader::decode(buf).expect("a valid segment");
        let seed = crc_seed(header.log_id);
        let mut pos = crate::log::segment::SEGMENT_HEADER_BYTES;
        let mut expected = header.base_lsn;
        let mut events = 0u64;
        while let Decoded::Frame(info) = decode_frame(buf, pos, seed, Some(expected)) {
            let batch = crate::event::access_batch(&buf[info.payload]).expect("a valid batch");
            events += batch.len() as u64 + u64::from(batch[0].ts_micros.to_native() == 0);
            pos = info.next;
            expected = expected.next();
        }
        events
    }
}

#[doc(hidden)]
pub mod __fuzz {
    //! Entry points for the fuzz targets: every decoder of bytes from disk.
    //! Not API.

    /// Decodes a frame at the start of `buf` and validates its payload,
    /// as it is and with its checksum made to hold (random bytes almost
    /// never pass the checksum, and the payload's validation is behind
    /// it).
    pub fn frame(buf: &[u8], seed: u32) {
        let mut sealed = buf.to_vec();
        crate::log::frame::seal(&mut sealed, seed);
        for bytes in [buf, &sealed[..]] {
            if let crate::log::frame::Decoded::Frame(info) =
                crate::log::frame::decode_frame(bytes, 0, seed, None)
            {
                let mut aligned = rkyv::util::AlignedVec::<16>::new();
                aligned.extend_from_slice(&bytes[info.payload]);
                let _ = crate::event::decode_batch(&aligned);
            }
            let _ = crate::log::frame::find_frame_vouching_for(bytes, 0, seed, crate::Lsn(1));
        }
    }

    /// The frames of a log whose batches are `batches` (LSNs from 1), sealed
    /// for the log id [`recovery`] writes in its headers: valid input for
    /// it, to damage.
    pub fn sealed_frames(batches: &[Vec<crate::Event>]) -> Vec<u8> {
        let seed = crate::log::frame::crc_seed(RECOVERY_LOG_ID);
        let mut out = Vec::new();
        for (i, batch) in batches.iter().enumerate() {
            let Ok(payload) = crate::event::encode_batch(batch) else {
                continue;
            };
            let lsn = crate::Lsn(i as u64 + 1);
            crate::log::frame::encode_frame(&mut out, seed, lsn, crate::Lsn(i as u64), &payload);
        }
        out
    }

    /// The log id of the segments [`recovery`] writes.
    const RECOVERY_LOG_ID: u128 = 7;

    /// Decodes a segment header.
    pub fn segment_header(buf: &[u8]) {
        let _ = crate::log::segment::SegmentHeader::decode(buf);
    }

    /// Writes `data` as the log of a state directory on a simulated disk,
    /// opens it strictly and in salvage mode, and reads what opened. The
    /// first byte says where the rest is split between two segments (0:
    /// all in one), each behind a valid header. Errors are fine; panics
    /// are bugs. Returns the last LSN the strict open recovered, if it
    /// opened.
    pub fn recovery(data: &[u8]) -> Option<crate::Lsn> {
        use std::path::Path;
        use std::sync::Arc;

        use crate::log::segment::{SegmentHeader, segment_file_name};
        use crate::storage::{OpenMode, SimDisk, Storage};

        let disk = SimDisk::new(data.len() as u64);
        let storage: Arc<dyn Storage> = Arc::new(disk.clone());
        let log = Path::new("/s/log");
        storage.create_dir_all(log).ok()?;
        let (mode, data) = data.split_first().unwrap_or((&0, &[]));
        let split = match mode {
            0 => data.len(),
            _ => usize::from(*mode) * data.len() / 256,
        };
        let (first, second) = data.split_at(split.min(data.len()));
        let header = |base: u64| SegmentHeader {
            format_version: crate::log::FORMAT_VERSION,
            log_id: RECOVERY_LOG_ID,
            base_lsn: crate::Lsn(base),
            created_unix_ms: 0,
        };
        for (base, body) in [(1u64, first), (2, second)] {
            if base == 2 && body.is_empty() {
                continue;
            }
            let path = log.join(segment_file_name(crate::Lsn(base)));
            let f = storage.open(&path, OpenMode::CreateNew).ok()?;
            let _ = f.write_all_at(&header(base).encode(), 0);
            let _ = f.write_all_at(body, crate::log::segment::SEGMENT_HEADER_BYTES as u64);
        }
        let mut recovered = None;
        for recovery in [crate::RecoveryMode::Strict, crate::RecoveryMode::Salvage] {
            // Small segments: the simulated disk holds preallocated bytes
            // in memory, and the fuzzer wants many cases a second.
            let options = crate::Options {
                recovery,
                segment_bytes_max: 4096,
                preallocate: data.len().is_multiple_of(2),
                ..crate::Options::default()
            };
            if let Ok(engine) = crate::Engine::open_with(Arc::clone(&storage), "/s", options) {
                if recovery == crate::RecoveryMode::Strict {
                    recovered = engine.recovery_report().last_lsn;
                }
                drop(engine);
            }
        }
        if let Ok(reader) = crate::LogReader::open_on(storage, "/s") {
            let mut cursor = reader.cursor(crate::Lsn(1));
            while let Ok(Some(frame)) = cursor.next_frame() {
                let _ = frame.decode();
            }
        }
        recovered
    }

    /// Decodes `buf` as every kind of view record (the bytes redb holds),
    /// at an aligned and at an unaligned address.
    pub fn view_record(buf: &[u8]) {
        use crate::view::record::{
            Capture, CheckpointRecord, KvValue, RunRecord, SharedValue, TaskRecord, decode,
        };
        let mut shifted = vec![0u8; buf.len() + 1];
        shifted[1..].copy_from_slice(buf);
        for bytes in [buf, &shifted[1..]] {
            let _ = decode::<KvValue>(bytes);
            let _ = decode::<SharedValue>(bytes);
            let _ = decode::<TaskRecord>(bytes);
            let _ = decode::<RunRecord>(bytes);
            if let Ok(c) = decode::<CheckpointRecord>(bytes) {
                let _ = c.verify();
                let _ = decode::<Capture>(&c.capture);
            }
        }
    }

    /// Validates and decodes a batch payload.
    pub fn batch(buf: &[u8]) {
        let mut aligned = rkyv::util::AlignedVec::<16>::new();
        aligned.extend_from_slice(buf);
        let _ = crate::event::decode_batch(&aligned);
    }
}
