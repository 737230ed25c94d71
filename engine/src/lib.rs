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
//! use waymark_engine::{AttemptScope, Codec, Engine, Event, EventBody, Lsn, RunScope, TaskScope};
//!
//! let dir = tempfile::tempdir()?;
//! let engine = Engine::open(dir.path())?;
//! // Shared by the batch's events (each holds it; the log stores it inline).
//! let attempt = std::sync::Arc::new(AttemptScope {
//!     task: TaskScope {
//!         run: RunScope { tenant: "acme".into(), dag: "docs".into(), run: "r1".into() },
//!         task: "ocr".into(),
//!     },
//!     try_number: 1,
//! });
//! let put = |key: &str, value: &[u8]| {
//!     Event::now(EventBody::Put {
//!         codec: Codec::Raw, // the engine compresses, if its options say so
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
    AttemptScope, Codec, DECOMPRESSED_BYTES_MAX, Event, EventBody, ParentRef, RunScope, RunStatus,
    TaskScope, TaskStatus,
};
pub use lock::LOCK_FILE_NAME;
pub use log::{Cursor, FrameView, LogReader, Lsn, RecoveryReport};
pub use options::{
    Compression, Durability, Limits, Options, RecoveryMode, Retention, SnapshotOptions,
    WRITER_QUEUE_DEPTH_MAX,
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

    /// Key decoding: `buf` read as a view key of every table (the
    /// components the views read back from redb's and the memtables' keys:
    /// length-prefixed names and big-endian try numbers), and `buf` split
    /// into components (one byte of length each) encoded as a key of every
    /// scope, which must decode back to exactly those components and lie
    /// inside the range of each of its scopes' prefixes. A mismatch panics:
    /// the encoding would alias two scopes.
    pub fn view_key(buf: &[u8]) {
        use crate::view::key::{KeyBuf, Table, prefix_range, take_part, take_u32};
        // Any bytes, read the way the views read keys: never a panic.
        for skip in 0..buf.len().min(3) {
            let mut rest = &buf[skip..];
            let _ = Table::of(rest);
            for _ in 0..8 {
                if take_part(&mut rest).is_none() && take_u32(&mut rest).is_none() {
                    break;
                }
            }
        }
        // Components cut from the input; encoded, decoded, ranged.
        let mut parts: Vec<&[u8]> = Vec::new();
        let mut rest = buf;
        while let Some((&len, tail)) = rest.split_first() {
            let n = usize::from(len % 24).min(tail.len());
            parts.push(&tail[..n]);
            rest = &tail[n..];
            if parts.len() == 6 {
                break;
            }
        }
        parts.resize(6, b"");
        let try_number = u32::from(buf.first().copied().unwrap_or(0));
        let mut key = KeyBuf::new(Table::Kv);
        let mut prefixes = Vec::new();
        for (i, part) in parts.iter().enumerate() {
            key = key.part(part);
            if i == 3 {
                key = key.try_number(try_number);
            }
            prefixes.push(key.clone().into_vec());
        }
        let key = key.into_vec();
        let mut rest = &key[1..];
        for (i, part) in parts.iter().enumerate() {
            let got = take_part(&mut rest).expect("an encoded component decodes");
            assert_eq!(got, *part, "component {i} decodes back");
            if i == 3 {
                assert_eq!(
                    take_u32(&mut rest),
                    Some(try_number),
                    "the try decodes back"
                );
            }
        }
        assert!(rest.is_empty(), "nothing after the last component");
        for prefix in &prefixes {
            let (start, end) = prefix_range(prefix);
            assert!(
                start.as_slice() <= key.as_slice() && key.as_slice() < end.as_slice(),
                "a key lies inside the range of each of its scopes"
            );
        }
        // A sibling scope (a component one byte longer or different) is
        // outside the first scope's range.
        if let Some(first) = parts.first() {
            let mut other = first.to_vec();
            other.push(0);
            let sibling = KeyBuf::new(Table::Kv).part(&other).into_vec();
            let (start, end) = prefix_range(&prefixes[0]);
            assert!(
                !(start.as_slice() <= sibling.as_slice() && sibling.as_slice() < end.as_slice()),
                "a longer name is another scope"
            );
        }
    }

    /// Engine operations on the simulated disk, checked against a model:
    /// `data` is a program of appends, conditional appends, snapshots,
    /// injected faults (eight operation kinds, once or for good, or a full
    /// disk), crashes with any damage, and reopens. After every reopen:
    /// every batch acknowledged under `Sync` is in the log at its LSN as
    /// it was acknowledged; the log runs from LSN 1 without a gap; the
    /// views equal the model of the log's batches (the last value of each
    /// key); after a failure no later append was acknowledged until the
    /// reopen. A violation panics.
    pub fn engine_ops(data: &[u8]) {
        use std::collections::BTreeMap;
        use std::sync::Arc;

        use crate::storage::{Damage, Fault, OpKind, SimDisk, Storage};
        use crate::{Engine, Event, EventBody, Lsn, Options, RunScope, SnapshotOptions};

        const KINDS: [OpKind; 8] = [
            OpKind::Write,
            OpKind::Sync,
            OpKind::SyncDir,
            OpKind::Create,
            OpKind::SetLen,
            OpKind::Read,
            OpKind::Remove,
            OpKind::List,
        ];
        let run = RunScope {
            tenant: "t".into(),
            dag: "d".into(),
            run: "r".into(),
        };
        let options = Options {
            segment_bytes_max: 4096,
            preallocate: false,
            snapshots: SnapshotOptions::manual(),
            retention: crate::Retention::KeepAll,
            ..Options::default()
        };
        let put = |key: u8, len: u8, n: u64| Event {
            ts_micros: n as i64,
            body: EventBody::SharedPut {
                codec: crate::Codec::Raw,
                run: run.clone(),
                key: format!("k{}", key % 8),
                value: vec![key; usize::from(len)],
                immutable: false,
            },
        };
        let mut disk = SimDisk::new(data.len() as u64);
        let mut engine = Engine::open_with(Arc::new(disk.clone()), "/s", options.clone()).ok();
        let mut acked: BTreeMap<Lsn, Vec<Event>> = BTreeMap::new();
        let mut failed = false;
        let mut n = 0u64;
        let check = |disk: &SimDisk, acked: &BTreeMap<Lsn, Vec<Event>>| -> Option<Engine> {
            let storage: Arc<dyn Storage> = Arc::new(disk.clone());
            let engine = Engine::open_with(Arc::clone(&storage), "/s", options.clone()).ok()?;
            let reader = crate::LogReader::open_on(storage, "/s").expect("an opened log reads");
            let mut cursor = reader.cursor(Lsn(1));
            let mut log = BTreeMap::new();
            let mut next = Lsn(1);
            while let Some(frame) = cursor.next_frame().expect("an opened log reads to its end") {
                assert_eq!(frame.lsn(), next, "the log has no gap");
                next = next.next();
                log.insert(
                    frame.lsn(),
                    frame.decode().expect("a frame the open kept decodes"),
                );
            }
            for (lsn, batch) in acked {
                assert_eq!(
                    log.get(lsn),
                    Some(batch),
                    "acknowledged LSN {lsn} is in the log as acknowledged"
                );
            }
            let mut model: BTreeMap<String, Vec<u8>> = BTreeMap::new();
            for events in log.values() {
                for e in events {
                    if let EventBody::SharedPut { key, value, .. } = &e.body {
                        model.insert(key.clone(), value.clone());
                    }
                }
            }
            for key in 0..8u8 {
                let key = format!("k{key}");
                let found = engine
                    .views()
                    .shared(&run, &key)
                    .expect("the views read")
                    .map(|v| v.value);
                assert_eq!(
                    found.as_ref(),
                    model.get(&key),
                    "the views hold the log's last value of {key}"
                );
            }
            Some(engine)
        };
        for op in data.chunks(3) {
            let [code, a, b] = [op[0], *op.get(1).unwrap_or(&0), *op.get(2).unwrap_or(&0)];
            match code % 8 {
                0..=2 => {
                    let Some(e) = &engine else { continue };
                    n += 1;
                    let batch: Vec<Event> = (0..=(b % 3))
                        .map(|i| put(a.wrapping_add(i), b, n))
                        .collect();
                    match e.append(batch.clone()) {
                        Ok(lsn) => {
                            assert!(!failed, "an append acknowledged after a failed one");
                            acked.insert(lsn, batch);
                        }
                        Err(_) => failed = true,
                    }
                }
                3 => {
                    let Some(e) = &engine else { continue };
                    n += 1;
                    let key = format!("k{}", a % 8);
                    let cond = vec![crate::Condition::SharedWritable {
                        run: run.clone(),
                        key,
                    }];
                    match e.append_if(cond, vec![put(a, b, n)]) {
                        Ok(lsn) => {
                            assert!(!failed, "an append acknowledged after a failed one");
                            acked.insert(lsn, vec![put(a, b, n)]);
                        }
                        Err(crate::Error::Conflict { .. }) => {}
                        Err(_) => failed = true,
                    }
                }
                4 => {
                    if let Some(e) = &engine {
                        let _ = e.snapshot();
                    }
                }
                5 => {
                    let kind = KINDS[usize::from(a) % KINDS.len()];
                    let mut fault = Fault::new(kind).nth(u64::from(b % 16) + 1);
                    if a & 0x40 != 0 {
                        fault = fault.forever();
                    }
                    if a & 0x80 != 0 {
                        fault = fault.disk_full();
                    }
                    disk.inject(fault);
                }
                6 => {
                    // A crash now, or a few operations from now.
                    if b % 2 == 0 {
                        disk.crash();
                    } else {
                        disk.crash_after_ops(u64::from(a % 32));
                    }
                }
                _ => {
                    // Reboot with a damage and reopen: the checks.
                    drop(engine.take());
                    disk = disk.reboot(Damage::ALL[usize::from(a) % Damage::ALL.len()]);
                    engine = check(&disk, &acked);
                    failed = false;
                    if engine.is_none() {
                        // A reboot that does not open is a bug: no fault
                        // survives a reboot.
                        panic!("the directory does not open after a reboot");
                    }
                }
            }
        }
        drop(engine);
        let disk = disk.reboot(Damage::DropAll);
        assert!(
            check(&disk, &acked).is_some(),
            "the directory opens after the last reboot"
        );
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

    /// A few valid inputs for each fuzz target, by target name: the seed
    /// corpus (`fuzz/corpus/<target>/`) that starts the fuzzer inside the
    /// formats instead of at their first check.
    pub fn seed_corpus() -> Vec<(&'static str, Vec<Vec<u8>>)> {
        use crate::event::{RunStatus, TaskStatus};
        use crate::log::segment::SegmentHeader;
        use crate::view::key::{KeyBuf, Table};
        use crate::view::record::{
            AttemptRecord, Capture, CheckpointRecord, KvValue, RunRecord, SharedValue, TaskCounts,
            TaskRecord, encode,
        };
        use crate::{AttemptScope, Event, EventBody, Lsn, RunScope, TaskScope};

        let run = RunScope {
            tenant: "acme".into(),
            dag: "documents".into(),
            run: "run-42".into(),
        };
        let task = TaskScope {
            run: run.clone(),
            task: "ocr".into(),
        };
        let batches: Vec<Vec<Event>> = vec![
            vec![Event {
                ts_micros: 1,
                body: EventBody::SharedPut {
                    codec: crate::Codec::Raw,
                    run: run.clone(),
                    key: "pages".into(),
                    value: b"3".to_vec(),
                    immutable: true,
                },
            }],
            // A compressed value (format version 3).
            vec![Event {
                ts_micros: 1,
                body: EventBody::TaskPut {
                    codec: crate::Codec::Zstd,
                    task: task.clone(),
                    key: "lines".into(),
                    value: zstd::bulk::compress(&b"Invoice 17, Total 42.00; ".repeat(60), 3)
                        .expect("compressing into memory cannot fail"),
                },
            }],
            vec![
                Event {
                    ts_micros: 2,
                    body: EventBody::TaskStatus {
                        attempt: AttemptScope {
                            task: task.clone(),
                            try_number: 1,
                        },
                        status: TaskStatus::Running,
                        worker: "w1".into(),
                    },
                },
                Event {
                    ts_micros: 2,
                    body: EventBody::RunStatus {
                        run: run.clone(),
                        status: RunStatus::Running,
                        parent: None,
                    },
                },
            ],
        ];
        let payloads: Vec<Vec<u8>> = batches
            .iter()
            .filter_map(|b| crate::event::encode_batch(b).ok().map(|p| p.to_vec()))
            .collect();
        let frames: Vec<Vec<u8>> = payloads
            .iter()
            .enumerate()
            .map(|(i, payload)| {
                let mut out = Vec::new();
                let lsn = Lsn(i as u64 + 1);
                crate::log::frame::encode_frame(&mut out, 0, lsn, Lsn(i as u64), payload);
                out
            })
            .collect();
        let header = SegmentHeader {
            format_version: crate::log::FORMAT_VERSION,
            log_id: RECOVERY_LOG_ID,
            base_lsn: Lsn(1),
            created_unix_ms: 0,
        }
        .encode()
        .to_vec();
        let mut one_segment = vec![0];
        one_segment.extend(sealed_frames(&batches));
        let mut two_segments = vec![128];
        two_segments.extend(sealed_frames(&batches[..1]));
        let mut records = vec![
            encode(&KvValue {
                value: b"[\"Invoice 17\"]".to_vec(),
                meta: b"{\"source\":\"ocr\"}".to_vec(),
                lsn: 7,
                ts_micros: 1,
            }),
            encode(&SharedValue {
                value: b"3".to_vec(),
                immutable: true,
                lsn: 1,
                ts_micros: 1,
            }),
            encode(&TaskRecord {
                latest_try: 1,
                status: TaskStatus::Running,
                attempts: vec![AttemptRecord {
                    try_number: 1,
                    status: TaskStatus::Running,
                    started_micros: Some(2),
                    finished_micros: None,
                    worker: "w1".into(),
                }],
                created_micros: 2,
                updated_micros: 2,
                lsn: 2,
            }),
            encode(&RunRecord {
                status: RunStatus::Running,
                created_micros: 1,
                updated_micros: 2,
                task_counts: TaskCounts {
                    running: 1,
                    ..TaskCounts::default()
                },
                parent: None,
            }),
        ];
        // A compressed value record (views version 3: the LSN's top bit).
        records.push(encode(&KvValue {
            value: zstd::bulk::compress(&b"Invoice 17, Total 42.00; ".repeat(60), 3)
                .expect("compressing into memory cannot fail"),
            meta: Vec::new(),
            lsn: 8 | crate::view::record::ZSTD_LSN_BIT,
            ts_micros: 2,
        }));
        let capture = encode(&Capture {
            entries: vec![(b"k".to_vec(), records[0].clone())],
        });
        records.push(encode(&CheckpointRecord {
            lsn: 3,
            ts_micros: 3,
            checksum: crc32fast::hash(&capture),
            capture,
        }));
        let keys = vec![
            KeyBuf::new(Table::Kv)
                .part(b"acme")
                .part(b"documents")
                .part(b"run-42")
                .part(b"ocr")
                .try_number(1)
                .part(b"LINES")
                .into_vec(),
            // Components as view_key cuts them: one byte of length each.
            b"\x04acme\x09documents\x06run-42\x03ocr\x05LINES".to_vec(),
            vec![0; 12],
        ];
        // Engine programs (three bytes per operation, see `engine_ops`):
        // appends, a snapshot, a crash and a reboot; a conditional append
        // and a fault that lasts; a full disk during appends.
        let programs = vec![
            vec![
                0, 1, 2, 1, 2, 3, 4, 0, 0, 0, 3, 4, 6, 0, 0, 7, 0, 0, 0, 5, 1,
            ],
            vec![
                3, 1, 1, 3, 1, 2, 5, 0x41, 1, 0, 2, 2, 0, 3, 3, 7, 1, 0, 0, 4, 4,
            ],
            vec![0, 1, 9, 5, 0x80, 0, 0, 2, 200, 1, 3, 200, 7, 2, 0, 0, 1, 1],
            vec![0, 0, 0, 4, 0, 0, 6, 5, 1, 1, 1, 1, 2, 2, 2, 7, 3, 0],
        ];
        vec![
            ("frame", frames),
            ("segment_header", vec![header]),
            ("batch", payloads),
            ("recovery", vec![one_segment, two_segments]),
            ("view_record", records),
            ("view_key", keys),
            ("engine_ops", programs),
        ]
    }

    /// Validates and decodes a batch payload, and restores its compressed
    /// values.
    pub fn batch(buf: &[u8]) {
        let mut aligned = rkyv::util::AlignedVec::<16>::new();
        aligned.extend_from_slice(buf);
        if let Ok(mut events) = crate::event::decode_batch(&aligned) {
            let _ = crate::event::decompress_values(&mut events);
        }
    }
}
