//! Engine behaviour on the real and the simulated disk: append and reopen,
//! rollover, the lock, limits, poison, and every recovery outcome.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::error::Invalid;
use crate::event::{EventBody, RunScope};
use crate::log::segment::SEGMENT_HEADER_BYTES;
use crate::log::sink::testing::{FAILS_SLOWLY, Faulty, PANICS};
use crate::options::{Durability, RecoveryMode};
use crate::storage::{Damage, FsStorage, OpKind, OpenMode, SimDisk, read_to_vec};

fn event(i: u64, value_len: usize) -> Event {
    Event {
        ts_micros: i as i64,
        body: EventBody::SharedPut {
            codec: crate::Codec::Raw,
            run: tdr(),
            key: format!("k{i}"),
            value: vec![(i % 251) as u8; value_len],
            immutable: false,
        },
    }
}

/// The run every `event` writes to.
fn tdr() -> RunScope {
    RunScope {
        tenant: "t".into(),
        dag: "d".into(),
        run: "r".into(),
    }
}

/// Asserts that the views hold each shared variable `k{i}` of `run` for
/// `i` in `keys`: none of them was lost.
fn assert_shared_kept(engine: &Engine, run: &RunScope, keys: impl IntoIterator<Item = u64>) {
    for i in keys {
        assert!(
            engine
                .views()
                .shared(run, &format!("k{i}"))
                .unwrap()
                .is_some(),
            "k{i} lost"
        );
    }
}

/// Appends one-event batches `event(from..)` of `value_len` bytes until
/// the engine refuses one: how many it acknowledged in all (counting from
/// 0), and the refusal. `bound` names what should refuse them.
fn append_until_refused(engine: &Engine, from: u64, value_len: usize, bound: &str) -> (u64, Error) {
    let mut acked = from;
    loop {
        match engine.append(vec![event(acked, value_len)]) {
            Ok(_) => acked += 1,
            Err(e) => return (acked, e),
        }
        assert!(acked < 10_000, "appends never hit the {bound}");
    }
}

fn small_segments() -> Options {
    Options {
        segment_bytes_max: 4096,
        ..Options::default()
    }
}

/// Default options with snapshots only when asked for.
fn manual_snapshots() -> Options {
    Options {
        snapshots: crate::options::SnapshotOptions::manual(),
        ..Options::default()
    }
}

/// Small segments, snapshots only when asked for, and retention that
/// removes every segment a snapshot covers.
fn removing_retention() -> Options {
    Options {
        snapshots: crate::options::SnapshotOptions::manual(),
        retention: crate::options::Retention::KeepFor {
            age: Duration::ZERO,
            bytes: 0,
        },
        ..small_segments()
    }
}

/// An engine on a fresh simulated disk in `Periodic(interval)` mode.
fn periodic_engine(seed: u64, interval: Duration) -> (SimDisk, Engine) {
    let (disk, storage) = sim(seed);
    let options = Options {
        durability: Durability::Periodic(interval),
        ..Options::default()
    };
    let engine = Engine::open_with(storage, DIR, options).unwrap();
    (disk, engine)
}

fn sim(seed: u64) -> (SimDisk, Arc<dyn Storage>) {
    let disk = SimDisk::new(seed);
    let storage: Arc<dyn Storage> = Arc::new(disk.clone());
    (disk, storage)
}

const DIR: &str = "/state";

/// A log on a fresh simulated disk (`seed`) of `batches` one-event
/// batches (`event(1..=batches, value_len)`), written with `options` and
/// closed.
fn closed_log(
    seed: u64,
    options: Options,
    batches: u64,
    value_len: usize,
) -> (SimDisk, Arc<dyn Storage>) {
    let (disk, storage) = sim(seed);
    let engine = Engine::open_with(Arc::clone(&storage), DIR, options).unwrap();
    for i in 1..=batches {
        engine.append(vec![event(i, value_len)]).unwrap();
    }
    drop(engine);
    (disk, storage)
}

/// Every batch in the log, decoded.
fn read_all(storage: Arc<dyn Storage>, dir: &str) -> Vec<(Lsn, Vec<Event>)> {
    let reader = LogReader::open_on(storage, dir).unwrap();
    let mut cursor = reader.cursor(Lsn(1));
    let mut out = Vec::new();
    while let Some(frame) = cursor.next_frame().unwrap() {
        out.push((frame.lsn(), frame.decode().unwrap()));
    }
    out
}

fn segments(storage: &dyn Storage) -> Vec<PathBuf> {
    crate::log::segment::list_segments(storage, &Path::new(DIR).join("log"))
        .unwrap()
        .into_iter()
        .map(|(_, p)| p)
        .collect()
}

fn overwrite(storage: &dyn Storage, path: &Path, offset: u64, bytes: &[u8]) {
    let f = storage.open(path, OpenMode::ReadWrite).unwrap();
    f.write_all_at(bytes, offset).unwrap();
    f.sync_data().unwrap();
}

#[test]
fn append_then_reopen_on_real_files() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    for i in 1..=20u64 {
        assert_eq!(
            engine
                .append(vec![event(i, 10), event(i + 100, 5)])
                .unwrap(),
            Lsn(i)
        );
    }
    let stats = engine.stats();
    assert_eq!(stats.batches, 20);
    assert_eq!(stats.durable_lsn, Lsn(20));
    drop(engine);
    let engine = Engine::open(dir.path()).unwrap();
    let report = engine.recovery_report();
    assert_eq!(report.last_lsn, Some(Lsn(20)));
    assert_eq!(report.frames, 20);
    assert!(report.torn_tail.is_none());
    assert_eq!(engine.append(vec![event(21, 1)]).unwrap(), Lsn(21));
    let all = read_all(
        Arc::new(crate::storage::FsStorage),
        dir.path().to_str().unwrap(),
    );
    assert_eq!(all.len(), 21);
    assert_eq!(all[3].1, vec![event(4, 10), event(104, 5)]);
}

#[test]
fn a_preallocated_segment_is_zero_filled_ahead_of_its_frames() {
    use crate::log::active::ZERO_AHEAD_BYTES;
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    let segment = dir
        .path()
        .join("log")
        .join(crate::log::segment::segment_file_name(Lsn(1)));
    // `set_len` alone leaves the file sparse: blocks are allocated by the
    // writes that land in them, and with them every other fsync.
    let allocated = || std::fs::metadata(&segment).unwrap().blocks() * 512;
    let before = allocated();
    assert!(
        before < 64 << 10,
        "{before} bytes allocated before any frame"
    );
    engine.append(vec![event(1, 10)]).unwrap();
    let first = allocated();
    assert!(
        first >= ZERO_AHEAD_BYTES,
        "{first} bytes allocated after the first frame"
    );
    assert!(
        first < 4 * ZERO_AHEAD_BYTES,
        "the whole segment was filled: {first}"
    );
    // Frames past the first mebibyte get the next one zeroed.
    let mut lsn = 1;
    while engine.stats().log_bytes < ZERO_AHEAD_BYTES {
        lsn += 1;
        engine.append(vec![event(lsn, 60 << 10)]).unwrap();
    }
    assert!(allocated() >= 2 * ZERO_AHEAD_BYTES);
    // Every frame reads back; the zeros read as the end of the data.
    drop(engine);
    let engine = Engine::open(dir.path()).unwrap();
    assert_eq!(engine.recovery_report().last_lsn, Some(Lsn(lsn)));
    assert!(engine.recovery_report().torn_tail.is_none());
}

#[test]
fn zero_filling_never_touches_a_frame() {
    // Segments of 64 KiB are zero-filled 16 KiB at a time: batches of
    // every size cross the chunk edges, a segment edge, and a reopen (which
    // starts zero-filling again from the recovered tail).
    let (_disk, storage) = sim(3);
    let options = Options {
        segment_bytes_max: 64 << 10,
        ..Options::default()
    };
    let mut expected = Vec::new();
    for round in 0..2u64 {
        let engine = Engine::open_with(Arc::clone(&storage), DIR, options.clone()).unwrap();
        for i in 0..150u64 {
            let n = round * 1000 + i;
            let batch = vec![event(n, (n as usize * 37) % 1500)];
            let lsn = engine.append(batch.clone()).unwrap();
            expected.push((lsn, batch));
        }
    }
    assert!(segments(storage.as_ref()).len() > 2);
    assert_eq!(read_all(storage, DIR), expected);
}

#[test]
fn segments_roll_over_and_read_back_in_order() {
    let (_disk, storage) = sim(1);
    let engine = Engine::open_with(Arc::clone(&storage), DIR, small_segments()).unwrap();
    for i in 1..=100u64 {
        engine.append(vec![event(i, 200)]).unwrap();
    }
    let names = segments(storage.as_ref());
    assert!(names.len() > 5, "only {} segments", names.len());
    // Segments are named by their first LSN.
    assert!(names[0].ends_with("00000000000000000001.seg"));
    drop(engine);
    let all = read_all(Arc::clone(&storage), DIR);
    let lsns: Vec<u64> = all.iter().map(|(l, _)| l.0).collect();
    assert_eq!(lsns, (1..=100).collect::<Vec<_>>());
    let engine = Engine::open_with(Arc::clone(&storage), DIR, small_segments()).unwrap();
    assert_eq!(engine.recovery_report().segments as usize, names.len());
    assert_eq!(engine.append(vec![event(101, 1)]).unwrap(), Lsn(101));
}

#[test]
fn a_batch_larger_than_a_segment_gets_one_of_its_own() {
    let (_disk, storage) = sim(2);
    let engine = Engine::open_with(Arc::clone(&storage), DIR, small_segments()).unwrap();
    engine.append(vec![event(1, 10)]).unwrap();
    engine.append(vec![event(2, 10_000)]).unwrap();
    engine.append(vec![event(3, 10)]).unwrap();
    drop(engine);
    assert_eq!(read_all(Arc::clone(&storage), DIR).len(), 3);
    Engine::open_with(storage, DIR, small_segments()).unwrap();
}

#[test]
fn second_open_is_refused_and_says_who_holds_it() {
    let (_disk, storage) = sim(3);
    let engine = Engine::open_with(Arc::clone(&storage), DIR, Options::default()).unwrap();
    let err = Engine::open_with(Arc::clone(&storage), DIR, Options::default()).unwrap_err();
    assert!(
        matches!(err, Error::AlreadyOpenInThisProcess { .. }),
        "{err}"
    );
    drop(engine);
    Engine::open_with(storage, DIR, Options::default()).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let _engine = Engine::open(dir.path()).unwrap();
    let err = Engine::open(dir.path()).unwrap_err();
    assert!(
        matches!(err, Error::AlreadyOpenInThisProcess { .. }),
        "{err}"
    );
}

#[test]
fn limits_are_checked_before_anything_is_written() {
    let (_disk, storage) = sim(4);
    let options = Options {
        limits: crate::Limits {
            value_bytes_max: 100,
            batch_events_max: 3,
            batch_bytes_max: 300,
            ..crate::Limits::default()
        },
        ..Options::default()
    };
    let engine = Engine::open_with(Arc::clone(&storage), DIR, options).unwrap();
    let err = engine.append(vec![event(1, 101)]).unwrap_err();
    assert!(matches!(
        err,
        Error::LimitExceeded {
            what: Limit::ValueBytes,
            ..
        }
    ));
    let err = engine.append(vec![event(1, 1); 4]).unwrap_err();
    assert!(matches!(
        err,
        Error::LimitExceeded {
            what: Limit::BatchEvents,
            ..
        }
    ));
    // Names, keys and values alone over the limit: refused before the
    // batch is encoded (the figure is theirs, 3 × 105 bytes, not the
    // encoding's).
    let err = engine.append(vec![event(1, 100); 3]).unwrap_err();
    assert!(
        matches!(
            err,
            Error::LimitExceeded {
                what: Limit::BatchBytes,
                actual_bytes: 315,
                max_bytes: 300,
            }
        ),
        "{err}"
    );
    // Under it (3 × 95 bytes), but not once encoded.
    let err = engine.append(vec![event(1, 90); 3]).unwrap_err();
    assert!(
        matches!(
            err,
            Error::LimitExceeded {
                what: Limit::BatchBytes,
                actual_bytes: 301..,
                max_bytes: 300,
            }
        ),
        "{err}"
    );
    assert!(matches!(
        engine.append(vec![]).unwrap_err(),
        Error::EmptyBatch
    ));
    assert_eq!(engine.stats().batches, 0);
    assert_eq!(engine.append(vec![event(1, 100)]).unwrap(), Lsn(1));
}

#[test]
fn failed_fsync_poisons_and_loses_nothing_acknowledged() {
    let (disk, storage) = sim(5);
    let engine = Engine::open_with(Arc::clone(&storage), DIR, Options::default()).unwrap();
    engine.append(vec![event(1, 10)]).unwrap();
    disk.fail_nth(OpKind::Sync, 1);
    let err = engine.append(vec![event(2, 10)]).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    // Fail-stop: no retry, every later append is refused.
    let err = engine.append(vec![event(3, 10)]).unwrap_err();
    assert!(matches!(err, Error::Poisoned { .. }), "{err}");
    drop(engine);
    let storage: Arc<dyn Storage> = Arc::new(disk.reboot(Damage::DropAll));
    let engine = Engine::open_with(Arc::clone(&storage), DIR, Options::default()).unwrap();
    // The failed sync may have written batch 2's page before it failed: the
    // unacknowledged batch is whole or absent, batch 1 is there.
    let last = engine.recovery_report().last_lsn;
    assert!(matches!(last, Some(Lsn(1 | 2))), "{last:?}");
    let batches = read_all(Arc::clone(&storage), DIR);
    assert_eq!(batches[0], (Lsn(1), vec![event(1, 10)]));
    if let Some(second) = batches.get(1) {
        assert_eq!(second, &(Lsn(2), vec![event(2, 10)]));
    }
    assert_eq!(
        engine.append(vec![event(3, 10)]).unwrap(),
        Lsn(batches.len() as u64 + 1)
    );
}

#[test]
fn a_reopen_makes_the_tail_segments_directory_entry_durable_before_acking() {
    let (disk, storage) = sim(41);
    let options = Options {
        snapshots: crate::options::SnapshotOptions::manual(),
        ..small_segments()
    };
    let engine = Engine::open_with(Arc::clone(&storage), DIR, options.clone()).unwrap();
    // The next directory sync is a rollover's: it fails after the new
    // segment's file was synced, so the segment is there, entry not durable.
    disk.fail_nth(OpKind::SyncDir, 1);
    let mut i = 0;
    let err = loop {
        i += 1;
        if let Err(e) = engine.append(vec![event(i, 300)]) {
            break e;
        }
    };
    assert!(matches!(err, Error::Io { .. }), "{err}");
    assert_eq!(segments(storage.as_ref()).len(), 2);
    drop(engine);
    // Reopened without a crash, the engine resumes in that segment.
    let engine = Engine::open_with(Arc::clone(&storage), DIR, options.clone()).unwrap();
    let acked = engine.append(vec![event(i, 300)]).unwrap();
    drop(engine);
    let storage: Arc<dyn Storage> = Arc::new(disk.reboot(Damage::ForgetDirEntries));
    let engine = Engine::open_with(storage, DIR, options).unwrap();
    assert_eq!(engine.recovery_report().last_lsn, Some(acked));
}

/// After a failed sync, Linux keeps the pages it could not write cached and
/// clean: a reopen in the same boot reads a frame the disk does not hold,
/// and no later sync writes those pages. The open reads past the cache, so
/// that frame is a torn tail now; it used to be taken as durable, and the
/// next acknowledged batch, written after it on another page, left a hole
/// under itself that the open after a power loss refused as corruption.
#[test]
fn a_reopen_after_a_failed_sync_reads_what_the_disk_holds() {
    let mut holes = 0;
    // Segments just larger than the frames: the simulated disk holds them
    // in memory, preallocated.
    let options = Options {
        segment_bytes_max: 1 << 16,
        ..manual_snapshots()
    };
    for seed in 0..16 {
        let (disk, storage) = sim(200 + seed);
        let engine = Engine::open_with(Arc::clone(&storage), DIR, options.clone()).unwrap();
        let first = engine.append(vec![event(1, 10)]).unwrap();
        disk.fail_nth(OpKind::Sync, 1);
        // Spans several pages: the failed sync keeps some, forgets others.
        assert!(engine.append(vec![event(2, 9000)]).is_err());
        drop(engine);
        // Reopened without a reboot: the cache still holds the frame.
        let engine = Engine::open_with(Arc::clone(&storage), DIR, options.clone()).unwrap();
        let failed_survived = engine.recovery_report().last_lsn == Some(Lsn(2));
        let third = engine.append(vec![event(3, 10)]).unwrap();
        drop(engine);
        let storage: Arc<dyn Storage> = Arc::new(disk.reboot(Damage::DropAll));
        let engine = Engine::open_with(Arc::clone(&storage), DIR, options.clone())
            .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        drop(engine);
        let batches = read_all(storage, DIR);
        assert_eq!(batches[0], (first, vec![event(1, 10)]), "seed {seed}");
        assert!(
            batches.contains(&(third, vec![event(3, 10)])),
            "seed {seed}: the batch acknowledged after the reopen is lost"
        );
        holes += usize::from(!failed_survived);
    }
    assert!(holes > 0, "no seed forgot a page of the failed frame");
}

#[test]
fn full_disk_fails_the_group_and_poisons() {
    let (disk, storage) = sim(6);
    let engine = Engine::open_with(Arc::clone(&storage), DIR, small_segments()).unwrap();
    engine.append(vec![event(1, 10)]).unwrap();
    // Room for a little more than the preallocated segment: rollover fails.
    disk.set_capacity(Some(4096 + 100));
    let mut acked = 1;
    let err = loop {
        match engine.append(vec![event(acked + 1, 300)]) {
            Ok(_) => acked += 1,
            Err(e) => break e,
        }
    };
    assert!(matches!(err, Error::DiskFull { .. }), "{err}");
    assert!(matches!(
        engine.append(vec![event(99, 1)]).unwrap_err(),
        Error::Poisoned { .. }
    ));
    drop(engine);
    disk.set_capacity(None);
    let storage: Arc<dyn Storage> = Arc::new(disk.reboot(Damage::Random));
    let engine = Engine::open_with(Arc::clone(&storage), DIR, small_segments()).unwrap();
    assert_eq!(engine.recovery_report().last_lsn, Some(Lsn(acked)));
}

/// A frame at the tail whose checksum holds but whose LSN or payload is
/// wrong was written whole: no crash makes one, so recovery refuses it as
/// corruption instead of cutting it (and the acknowledged batch it
/// replaced) as a torn tail.
#[test]
fn a_whole_frame_with_a_wrong_lsn_or_payload_is_corruption_not_a_torn_tail() {
    use crate::log::frame::{crc_seed, encode_frame};
    for (case, seed) in [("lsn", 11), ("payload", 12)] {
        let (_disk, storage) = sim(seed);
        let engine = Engine::open_with(Arc::clone(&storage), DIR, manual_snapshots()).unwrap();
        for i in 1..=3 {
            engine.append(vec![event(i, 50)]).unwrap();
        }
        let log_id = engine.log_id();
        drop(engine);
        let (offset, durable, payload) = {
            let reader = LogReader::open_on(Arc::clone(&storage), DIR).unwrap();
            let mut c = reader.cursor(Lsn(3));
            let f = c.next_frame().unwrap().unwrap();
            (f.offset(), f.durable_lsn(), f.payload().to_vec())
        };
        let mut frame = Vec::new();
        match case {
            "lsn" => encode_frame(&mut frame, crc_seed(log_id), Lsn(2), Lsn(1), &payload),
            _ => encode_frame(
                &mut frame,
                crc_seed(log_id),
                Lsn(3),
                durable,
                &vec![0xff; payload.len()],
            ),
        }
        overwrite(
            storage.as_ref(),
            &segments(storage.as_ref())[0],
            offset,
            &frame,
        );
        let err = Engine::open_with(Arc::clone(&storage), DIR, manual_snapshots()).unwrap_err();
        assert!(
            matches!(
                &err,
                Error::Corruption {
                    offset: o,
                    expected_lsn: Lsn(3),
                    reason: Invalid::UnexpectedLsn(Lsn(2)) | Invalid::Payload(_),
                    ..
                } if *o == offset
            ),
            "{case}: {err}"
        );
        // The tools' check agrees: nothing needs to vouch for it.
        let segment = &segments(storage.as_ref())[0];
        assert!(
            crate::inspect::is_vouched_for_on(storage.as_ref(), segment, offset, Lsn(3)).unwrap(),
            "{case}"
        );
    }
}

#[test]
fn torn_tail_is_cut_and_reported() {
    let (_disk, storage) = closed_log(7, Options::default(), 3, 50);
    let seg = &segments(storage.as_ref())[0];
    let all = read_all(Arc::clone(&storage), DIR);
    assert_eq!(all.len(), 3);
    // Half of a fourth frame: a write the crash tore.
    let end = {
        let reader = LogReader::open_on(Arc::clone(&storage), DIR).unwrap();
        let mut c = reader.cursor(Lsn(1));
        while c.next_frame().unwrap().is_some() {}
        c.tail().unwrap().offset
    };
    overwrite(
        storage.as_ref(),
        seg,
        end,
        &[0x30, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef, 4],
    );
    let engine = Engine::open_with(Arc::clone(&storage), DIR, Options::default()).unwrap();
    let cut = engine
        .recovery_report()
        .torn_tail
        .clone()
        .expect("a torn tail");
    assert_eq!(cut.offset, end);
    assert_eq!(cut.expected_lsn, Lsn(4));
    assert_eq!(cut.bytes_dropped, 9);
    assert_eq!(engine.append(vec![event(4, 1)]).unwrap(), Lsn(4));
    drop(engine);
    // Idempotent: the next open finds nothing to cut.
    let engine = Engine::open_with(Arc::clone(&storage), DIR, Options::default()).unwrap();
    assert!(engine.recovery_report().torn_tail.is_none());
    assert_eq!(engine.recovery_report().last_lsn, Some(Lsn(4)));
}

#[test]
fn corruption_before_the_tail_refuses_to_open_then_salvage_cuts_it() {
    let (_disk, storage) = closed_log(8, small_segments(), 60, 200);
    let segs = segments(storage.as_ref());
    assert!(segs.len() >= 3);
    // Flip a byte inside the first frame of the second segment.
    let offset = SEGMENT_HEADER_BYTES as u64 + 40;
    let f = storage.open(&segs[1], OpenMode::ReadWrite).unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, offset).unwrap();
    overwrite(storage.as_ref(), &segs[1], offset, &[b[0] ^ 0x10]);
    let err = Engine::open_with(Arc::clone(&storage), DIR, small_segments()).unwrap_err();
    let Error::Corruption {
        segment,
        offset: at,
        reason,
        expected_lsn,
    } = &err
    else {
        panic!("expected corruption, got {err}");
    };
    assert_eq!(segment, &segs[1]);
    assert_eq!(*at, SEGMENT_HEADER_BYTES as u64);
    assert_eq!(*reason, Invalid::Checksum);
    let text = err.to_string();
    assert!(
        text.contains(&format!("offset {at}")) && text.contains(&expected_lsn.to_string()),
        "{text}"
    );

    let salvage = Options {
        recovery: RecoveryMode::Salvage,
        ..small_segments()
    };
    let engine = Engine::open_with(Arc::clone(&storage), DIR, salvage).unwrap();
    let report = engine.recovery_report().clone();
    let salvaged = report.salvaged.expect("salvage report");
    assert_eq!(salvaged.cut.segment, segs[1]);
    assert_eq!(salvaged.segments_removed, segs[2..].to_vec());
    assert_eq!(report.last_lsn, Some(Lsn(expected_lsn.0 - 1)));
    assert_eq!(engine.append(vec![event(0, 1)]).unwrap(), *expected_lsn);
}

#[test]
fn a_bad_frame_followed_by_a_frame_that_vouches_for_it_is_corruption() {
    let (_disk, storage) = closed_log(9, Options::default(), 5, 50);
    // Frame 2 was synced before frame 3 was written (Sync mode), so frame 3
    // vouches for it: a flipped bit in frame 2 is corruption, even in the
    // last segment.
    let seg = &segments(storage.as_ref())[0];
    let frame2 = {
        let reader = LogReader::open_on(Arc::clone(&storage), DIR).unwrap();
        let mut c = reader.cursor(Lsn(2));
        c.next_frame().unwrap().unwrap().offset()
    };
    overwrite(storage.as_ref(), seg, frame2 + 30, &[0xff]);
    let err = Engine::open_with(Arc::clone(&storage), DIR, Options::default()).unwrap_err();
    assert!(
        matches!(err, Error::Corruption { offset, expected_lsn: Lsn(2), .. } if offset == frame2),
        "{err}"
    );
}

#[test]
fn torn_segment_creation_is_removed() {
    let (disk, storage) = closed_log(10, small_segments(), 3, 10);
    // A segment whose header never made it to disk.
    let path = Path::new(DIR)
        .join("log")
        .join(crate::log::segment::segment_file_name(Lsn(4)));
    let f = disk.open(&path, OpenMode::CreateNew).unwrap();
    f.write_all_at(b"WAYMK", 0).unwrap();
    f.set_len(4096).unwrap();
    let engine = Engine::open_with(Arc::clone(&storage), DIR, small_segments()).unwrap();
    assert_eq!(
        engine.recovery_report().removed_torn_segment.as_deref(),
        Some(path.as_path())
    );
    assert_eq!(engine.append(vec![event(4, 1)]).unwrap(), Lsn(4));
}

#[test]
fn a_missing_segment_is_a_gap() {
    let (_disk, storage) = closed_log(11, small_segments(), 60, 200);
    let segs = segments(storage.as_ref());
    storage.remove_file(&segs[1]).unwrap();
    let err = Engine::open_with(Arc::clone(&storage), DIR, small_segments()).unwrap_err();
    assert!(matches!(err, Error::Gap { .. }), "{err}");
}

#[test]
fn newer_format_version_is_refused_by_name() {
    let (_disk, storage) = sim(12);
    drop(Engine::open_with(Arc::clone(&storage), DIR, Options::default()).unwrap());
    let seg = &segments(storage.as_ref())[0];
    let newer = crate::log::FORMAT_VERSION + 1;
    set_header_version(storage.as_ref(), seg, newer);
    let err = Engine::open_with(Arc::clone(&storage), DIR, Options::default()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::UnsupportedVersion {
                version,
                supported: crate::log::FORMAT_VERSION,
                ..
            } if version == newer
        ),
        "{err}"
    );
}

/// A version 2 event: run `t/d/r` paused.
fn paused() -> Event {
    Event::now(EventBody::RunStatus {
        run: tdr(),
        status: crate::event::RunStatus::Paused,
        parent: None,
    })
}

/// The header of segment `seg`.
fn read_header(storage: &dyn Storage, seg: &Path) -> [u8; SEGMENT_HEADER_BYTES] {
    let mut header = [0u8; SEGMENT_HEADER_BYTES];
    storage
        .open(seg, OpenMode::Read)
        .unwrap()
        .read_exact_at(&mut header, 0)
        .unwrap();
    header
}

/// Rewrites the header of `seg` to say format version `version`.
fn set_header_version(storage: &dyn Storage, seg: &Path, version: u32) {
    let mut header = read_header(storage, seg);
    header[8..12].copy_from_slice(&version.to_le_bytes());
    let crc = crc32fast::hash(&header[0..60]);
    header[60..64].copy_from_slice(&crc.to_le_bytes());
    overwrite(storage, seg, 0, &header);
}

fn header_version(storage: &dyn Storage, seg: &Path) -> u32 {
    let header = read_header(storage, seg);
    u32::from_le_bytes(header[8..12].try_into().unwrap())
}

/// A log written by a version 1 build opens, reads, and takes this build's
/// events in a new segment: frames of version 2 (a paused run) never go
/// under a version 1 header, which an older build would call corrupt.
#[test]
fn a_version_1_log_is_read_and_appended_to_in_a_new_segment() {
    let (_disk, storage) = closed_log(14, Options::default(), 3, 10);
    let old = segments(storage.as_ref())[0].clone();
    set_header_version(storage.as_ref(), &old, 1);
    let engine = Engine::open_with(Arc::clone(&storage), DIR, Options::default()).unwrap();
    assert_eq!(engine.append(vec![paused()]).unwrap(), Lsn(4));
    drop(engine);
    let segs = segments(storage.as_ref());
    assert_eq!(segs.len(), 2, "a new segment at the first append");
    assert_eq!(header_version(storage.as_ref(), &segs[0]), 1);
    assert_eq!(
        header_version(storage.as_ref(), &segs[1]),
        crate::log::FORMAT_VERSION
    );
    let engine = Engine::open_with(Arc::clone(&storage), DIR, Options::default()).unwrap();
    assert_eq!(read_all(Arc::clone(&storage), DIR).len(), 4);
    let run = tdr();
    assert_eq!(
        engine.views().run(&run).unwrap().unwrap().status,
        crate::event::RunStatus::Paused
    );
}

/// A version 1 tail segment with no frame yet gets this version's header
/// in place, rather than a second segment of the same base LSN.
#[test]
fn an_empty_version_1_tail_takes_this_versions_header() {
    let (_disk, storage) = sim(15);
    drop(Engine::open_with(Arc::clone(&storage), DIR, Options::default()).unwrap());
    let seg = segments(storage.as_ref())[0].clone();
    set_header_version(storage.as_ref(), &seg, 1);
    let engine = Engine::open_with(Arc::clone(&storage), DIR, Options::default()).unwrap();
    engine.append(vec![event(1, 10)]).unwrap();
    drop(engine);
    assert_eq!(segments(storage.as_ref()), std::slice::from_ref(&seg));
    assert_eq!(
        header_version(storage.as_ref(), &seg),
        crate::log::FORMAT_VERSION
    );
    assert_eq!(read_all(storage, DIR).len(), 1);
}

/// Opening a version 1 log (with frames in its tail, or none) and
/// appending a version 2 event, crashed at every storage operation with
/// every damage: the reopen recovers every batch acknowledged, and a
/// version 2 event is only ever found under a version 2 header.
#[test]
fn upgrading_a_version_1_log_survives_a_crash_at_every_step() {
    for frames in [0u64, 3] {
        let (disk, storage) = closed_log(16, small_segments(), frames, 10);
        set_header_version(storage.as_ref(), &segments(storage.as_ref())[0], 1);
        let base = disk.reboot(Damage::KeepAll);
        for damage in Damage::ALL {
            for crash_at in 0.. {
                let d = base.reboot(Damage::KeepAll);
                d.crash_after_ops(crash_at);
                let storage: Arc<dyn Storage> = Arc::new(d.clone());
                let acked = Engine::open_with(Arc::clone(&storage), DIR, small_segments())
                    .and_then(|e| e.append(vec![paused()]))
                    .is_ok();
                let crashed = d.has_crashed();
                let after: Arc<dyn Storage> = Arc::new(d.reboot(damage));
                let engine = Engine::open_with(Arc::clone(&after), DIR, small_segments())
                    .unwrap_or_else(|e| panic!("{frames} frames, {damage:?} at {crash_at}: {e}"));
                drop(engine);
                let batches = read_all(Arc::clone(&after), DIR);
                let want = frames + u64::from(acked);
                assert!(
                    batches.len() as u64 >= want,
                    "{frames} frames, {damage:?} at {crash_at}: {} batches, {want} acked",
                    batches.len()
                );
                for seg in segments(after.as_ref()) {
                    let version = header_version(after.as_ref(), &seg);
                    let base_lsn = crate::log::segment::parse_segment_file_name(
                        seg.file_name().unwrap().to_str().unwrap(),
                    )
                    .unwrap();
                    let holds_paused = batches.iter().any(|(lsn, events)| {
                        *lsn >= base_lsn
                            && events
                                .iter()
                                .any(|e| matches!(e.body, EventBody::RunStatus { .. }))
                            && segments(after.as_ref())
                                .iter()
                                .filter_map(|p| {
                                    crate::log::segment::parse_segment_file_name(
                                        p.file_name().unwrap().to_str().unwrap(),
                                    )
                                })
                                .filter(|b| *b <= *lsn)
                                .max()
                                == Some(base_lsn)
                    });
                    assert!(
                        !holds_paused || version == crate::log::FORMAT_VERSION,
                        "{frames} frames, {damage:?} at {crash_at}: a version 2 event under a \
                         version {version} header"
                    );
                }
                if !crashed {
                    break;
                }
            }
        }
    }
}

#[test]
fn another_logs_segment_does_not_validate() {
    let (_disk, a) = sim(13);
    let (_disk_b, b) = sim(14);
    for storage in [&a, &b] {
        let engine = Engine::open_with(Arc::clone(storage), DIR, small_segments()).unwrap();
        for i in 1..=30 {
            engine.append(vec![event(i, 200)]).unwrap();
        }
    }
    // Replace a's second segment with b's (same name, same base LSN).
    let seg = segments(a.as_ref())[1].clone();
    let from_b =
        crate::storage::read_to_vec(b.open(&seg, OpenMode::Read).unwrap().as_ref()).unwrap();
    overwrite(a.as_ref(), &seg, 0, &from_b);
    let err = Engine::open_with(Arc::clone(&a), DIR, small_segments()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Corruption {
                reason: Invalid::LogIdMismatch,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn reader_follows_a_live_writer_across_segments() {
    let (_disk, storage) = sim(15);
    let engine = Engine::open_with(Arc::clone(&storage), DIR, small_segments()).unwrap();
    let reader = engine.reader();
    let mut cursor = reader.cursor(Lsn(1));
    assert!(cursor.next_frame().unwrap().is_none());
    let mut seen = 0u64;
    for round in 0..5u64 {
        for i in 0..20 {
            engine.append(vec![event(round * 20 + i, 150)]).unwrap();
        }
        while let Some(frame) = cursor.next_frame().unwrap() {
            seen += 1;
            assert_eq!(frame.lsn(), Lsn(seen));
        }
        assert_eq!(seen, (round + 1) * 20);
    }
    // A cursor can start anywhere.
    let mut from = reader.cursor(Lsn(57));
    assert_eq!(from.next_frame().unwrap().unwrap().lsn(), Lsn(57));
}

#[test]
fn periodic_mode_syncs_within_its_interval() {
    let (_disk, engine) = periodic_engine(16, Duration::from_millis(5));
    engine.append(vec![event(1, 1)]).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while engine.stats().durable_lsn < Lsn(1) {
        assert!(
            std::time::Instant::now() < deadline,
            "periodic sync never came"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(engine.flush().unwrap(), Lsn(1));
}

#[test]
fn close_syncs_and_refuses_later_appends() {
    let (disk, storage) = sim(17);
    let options = Options {
        durability: Durability::None,
        ..Options::default()
    };
    let engine = Engine::open_with(Arc::clone(&storage), DIR, options.clone()).unwrap();
    engine.append(vec![event(1, 1)]).unwrap();
    engine.close().unwrap();
    assert!(matches!(
        engine.append(vec![event(2, 1)]).unwrap_err(),
        Error::Closed
    ));
    drop(engine);
    let storage: Arc<dyn Storage> = Arc::new(disk.reboot(Damage::DropAll));
    let engine = Engine::open_with(storage, DIR, options).unwrap();
    assert_eq!(engine.recovery_report().last_lsn, Some(Lsn(1)));
}

#[test]
fn concurrent_appends_share_fsyncs() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    std::thread::scope(|s| {
        for t in 0..8u64 {
            let engine = engine.clone();
            s.spawn(move || {
                for i in 0..50 {
                    engine.append(vec![event(t * 1000 + i, 20)]).unwrap();
                }
            });
        }
    });
    let stats = engine.stats();
    assert_eq!(stats.batches, 400);
    assert_eq!(stats.written_lsn, Lsn(400));
    assert!(stats.fsyncs <= stats.groups + 1);
}

#[test]
fn reader_handles_frames_across_and_beyond_its_read_window() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    // 300 KB frames straddle the 1 MiB read window; a 3 MiB one exceeds it.
    let sizes = [
        300_000usize,
        300_000,
        300_000,
        300_000,
        3_000_000,
        10,
        300_000,
    ];
    for (i, len) in sizes.iter().enumerate() {
        engine.append(vec![event(i as u64, *len)]).unwrap();
    }
    let all = read_all(
        Arc::new(crate::storage::FsStorage),
        dir.path().to_str().unwrap(),
    );
    assert_eq!(all.len(), sizes.len());
    for (i, (lsn, events)) in all.iter().enumerate() {
        assert_eq!(*lsn, Lsn(i as u64 + 1));
        assert_eq!(events, &vec![event(i as u64, sizes[i])]);
    }
}

#[test]
fn retention_removes_only_snapshotted_segments_and_views_survive() {
    let (_disk, storage) = sim(21);
    let options = Options {
        retention: crate::options::Retention::KeepFor {
            age: Duration::ZERO,
            bytes: 0,
        },
        ..small_segments()
    };
    let engine = Engine::open_with(Arc::clone(&storage), DIR, options.clone()).unwrap();
    for i in 0..200 {
        engine.append(vec![event(i, 100)]).unwrap();
    }
    let before = segments(storage.as_ref()).len();
    assert!(before > 3, "the test needs several segments");
    let applied = engine.snapshot().unwrap();
    let stats = engine.stats();
    assert_eq!(
        stats.segments_removed as usize,
        before - 1,
        "all but the active one"
    );
    assert_eq!(applied, Lsn(200));
    drop(engine);

    // The log now starts after LSN 1; the views still hold everything.
    let engine = Engine::open_with(Arc::clone(&storage), DIR, options.clone()).unwrap();
    let run = tdr();
    for i in [0u64, 150, 199] {
        let v = engine.views().shared(&run, &format!("k{i}")).unwrap();
        assert_eq!(v.map(|v| v.value), Some(vec![(i % 251) as u8; 100]));
    }
    assert_eq!(engine.stats().replayed_events, 0);
    drop(engine);

    // Without the views file, the log cannot rebuild them: a typed error.
    storage
        .remove_file(&Path::new(DIR).join("views.redb"))
        .unwrap();
    let err = Engine::open_with(storage, DIR, options).unwrap_err();
    assert!(matches!(err, Error::ViewsMismatch { .. }), "{err}");
}

/// Reads `cursor` (whose last frame was `last`) until it fails, checking
/// that it passes over no LSN; returns the last LSN read and the error.
fn read_until_error(cursor: &mut crate::log::reader::Cursor, mut last: Lsn) -> (Lsn, Error) {
    loop {
        match cursor.next_frame() {
            Ok(Some(frame)) => {
                assert_eq!(frame.lsn(), last.next(), "no LSN passed over");
                last = frame.lsn();
            }
            Ok(None) => panic!("the cursor ended at {last} instead of failing"),
            Err(e) => return (last, e),
        }
    }
}

#[test]
fn a_cursor_never_passes_over_frames_retention_removed_under_it() {
    let (_disk, storage) = sim(23);
    let engine = Engine::open_with(Arc::clone(&storage), DIR, removing_retention()).unwrap();
    for i in 0..200 {
        engine.append(vec![event(i, 100)]).unwrap();
    }
    assert!(segments(storage.as_ref()).len() > 3);
    let reader = engine.reader();
    let mut cursor = reader.cursor(Lsn(1));
    assert_eq!(cursor.next_frame().unwrap().unwrap().lsn(), Lsn(1));
    // Retention removes every segment but the active one while the cursor
    // is in the first: it reads that one to its end (the file is open),
    // then finds the rest gone.
    engine.snapshot().unwrap();
    assert_eq!(segments(storage.as_ref()).len(), 1);
    let (last, err) = read_until_error(&mut cursor, Lsn(1));
    let first = crate::log::segment::list_segments(storage.as_ref(), &Path::new(DIR).join("log"))
        .unwrap()[0]
        .0;
    assert!(
        matches!(err, Error::Removed { expected, first: f } if expected == last.next() && f == first),
        "{err}"
    );
    // A new cursor from before the log's first LSN still starts there.
    let mut cursor = reader.cursor(Lsn(1));
    match cursor.next_frame().unwrap() {
        Some(frame) => assert_eq!(frame.lsn(), first),
        None => assert_eq!(cursor.next_lsn(), first),
    }
}

#[test]
fn views_of_another_log_are_refused() {
    let (_disk, storage) = sim(22);
    let engine = Engine::open_with(Arc::clone(&storage), DIR, small_segments()).unwrap();
    engine.append(vec![event(1, 10)]).unwrap();
    engine.snapshot().unwrap();
    drop(engine);
    let other = "/other";
    let engine = Engine::open_with(Arc::clone(&storage), other, small_segments()).unwrap();
    engine.append(vec![event(1, 10)]).unwrap();
    drop(engine);
    // Move the first directory's views next to the second's log.
    let views = read_to_vec(
        storage
            .open(&Path::new(DIR).join("views.redb"), OpenMode::Read)
            .unwrap()
            .as_ref(),
    )
    .unwrap();
    let target = Path::new(other).join("views.redb");
    storage.remove_file(&target).unwrap();
    let f = storage.open(&target, OpenMode::CreateNew).unwrap();
    f.write_all_at(&views, 0).unwrap();
    f.sync_data().unwrap();
    let err = Engine::open_with(storage, other, small_segments()).unwrap_err();
    assert!(
        matches!(&err, Error::ViewsMismatch { reason, .. } if reason.contains("belongs to log")),
        "{err}"
    );
}

#[test]
fn sizes_account_live_bytes_per_run_and_tenant() {
    let (_disk, storage) = sim(23);
    let engine = Engine::open_with(storage, DIR, small_segments()).unwrap();
    let put = |tenant: &str, run: &str, key: &str, len: usize| Event {
        ts_micros: 1,
        body: EventBody::SharedPut {
            codec: crate::Codec::Raw,
            run: RunScope {
                tenant: tenant.into(),
                dag: "d".into(),
                run: run.into(),
            },
            key: key.into(),
            value: vec![7; len],
            immutable: false,
        },
    };
    engine
        .append(vec![put("a", "r1", "k", 1000), put("a", "r2", "k", 10)])
        .unwrap();
    engine.append(vec![put("b", "r1", "k", 500)]).unwrap();
    engine.snapshot().unwrap();
    engine.append(vec![put("a", "r1", "k", 3000)]).unwrap(); // overwrites
    let sizes = engine.views().sizes().unwrap();
    let run = |t: &str, r: &str| RunScope {
        tenant: t.into(),
        dag: "d".into(),
        run: r.into(),
    };
    let r1 = sizes.by_run[&run("a", "r1")];
    let r2 = sizes.by_run[&run("a", "r2")];
    let b1 = sizes.by_run[&run("b", "r1")];
    assert!(
        r1 > 3000 && r1 < 3200,
        "overwritten value counted once: {r1}"
    );
    assert!(b1 > 500 && b1 < 700, "{b1}");
    assert!(r2 < 200, "{r2}");
    assert_eq!(sizes.by_tenant["a"], r1 + r2);
    assert_eq!(sizes.total, r1 + r2 + b1);
}

#[test]
fn a_failed_snapshot_stops_the_snapshotter_leaves_the_log_and_bounds_memory() {
    let (disk, storage) = sim(24);
    let options = Options {
        snapshots: crate::options::SnapshotOptions {
            every_events: u64::MAX,
            memtable_events_max: u64::MAX,
            every_bytes: 64 << 10,
            memtable_bytes_max: 256 << 10,
            interval: Duration::from_secs(3600),
            ..Default::default()
        },
        ..small_segments()
    };
    let engine = Engine::open_with(Arc::clone(&storage), DIR, options.clone()).unwrap();
    engine.append(vec![event(0, 100)]).unwrap();
    engine.snapshot().unwrap(); // k0 is now in redb only.
    engine.append(vec![event(1, 100)]).unwrap();
    // The next snapshot's first write into redb fails.
    disk.fail_nth(OpKind::Write, 1);
    // The cause is kept: an I/O error on the views' file, not a string.
    let err = engine.snapshot().unwrap_err();
    assert!(
        matches!(&err, Error::SnapshotFailed { cause } if matches!(**cause, Error::Io { .. })),
        "{err}"
    );
    assert!(engine.stats().snapshot_error.is_some());
    assert!(
        matches!(engine.snapshot(), Err(Error::SnapshotFailed { .. })),
        "the snapshotter stays stopped"
    );
    // Reads stay correct and appends go on, up to the memory bound.
    let run = tdr();
    assert!(engine.views().shared(&run, "k0").unwrap().is_some());
    assert!(engine.views().shared(&run, "k1").unwrap().is_some());
    let (acked, refused) = append_until_refused(&engine, 2, 1000, "memory bound");
    assert!(
        matches!(&refused, Error::MemtablesFull { cause } if matches!(**cause, Error::Io { .. })),
        "{refused}"
    );
    assert!(engine.stats().memtable_bytes >= 256 << 10);
    // A flush adds nothing to the memtables: the bound does not refuse it.
    assert!(
        engine.flush().is_ok(),
        "a flush is held back by the memory bound"
    );
    drop(engine);
    // Nothing acknowledged was lost: reopening replays it all.
    let engine = Engine::open_with(storage, DIR, options).unwrap();
    assert_shared_kept(&engine, &run, [0, acked - 1]);
}

/// The replay bound: with the snapshotter stopped (its writes into redb
/// fail), appends go on until the memtables hold `memtable_events_max`
/// events, then are refused; so the open after a crash replays no more
/// than that, and loses nothing acknowledged.
#[test]
fn the_replay_bound_holds_the_log_tail_an_open_replays() {
    use crate::storage::{Fault, FaultPath};
    let (disk, storage) = sim(25);
    let options = Options {
        snapshots: crate::options::SnapshotOptions {
            every_events: 40,
            memtable_events_max: 100,
            interval: Duration::from_secs(3600),
            ..Default::default()
        },
        ..small_segments()
    };
    let engine = Engine::open_with(Arc::clone(&storage), DIR, options.clone()).unwrap();
    disk.inject(
        Fault::new(OpKind::Write)
            .on(FaultPath::Containing("views.redb".into()))
            .forever(),
    );
    let (acked, refused) = append_until_refused(&engine, 0, 10, "replay bound");
    assert!(matches!(refused, Error::MemtablesFull { .. }), "{refused}");
    assert_eq!(acked, 100, "refused exactly at the bound");
    assert_eq!(engine.stats().memtable_events, 100);
    assert!(
        engine.stats().memtable_bytes < 64 << 10,
        "not the memory bound"
    );
    drop(engine);
    let storage: Arc<dyn Storage> = Arc::new(disk.reboot(Damage::DropAll));
    let engine = Engine::open_with(storage, DIR, options).unwrap();
    assert_eq!(engine.stats().replayed_events, acked);
    let run = tdr();
    assert_shared_kept(&engine, &run, 0..acked);
}

/// A caller whose message the writer never took (the writer thread panicked,
/// and a bounded channel keeps queued messages while any sender lives) must
/// not wait forever: once the writer is gone it gets `Closed`.
#[test]
fn a_caller_stops_waiting_once_the_writer_is_gone() {
    let shared = Shared::default();
    // Two in flight: the caller parks instead of polling.
    shared.in_flight.store(2, Ordering::Release);
    shared.last_group_batches.store(2, Ordering::Release);
    let (ack, rx) = ack_channel();
    std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(20));
            shared.writer_gone.store(true, Ordering::Release);
        });
        assert!(matches!(
            wait_for_ack(&shared, &rx, true),
            Err(Error::Closed)
        ));
    });
    // The message (and its ack sender) was still queued all along.
    drop(ack);
}

/// A parked caller whose answer takes longer than the gone-writer check
/// still gets its answer.
#[test]
fn a_slow_ack_still_arrives() {
    let shared = Shared::default();
    shared.in_flight.store(2, Ordering::Release);
    let (ack, rx) = ack_channel();
    std::thread::scope(|s| {
        s.spawn(move || {
            std::thread::sleep(WRITER_GONE_CHECK + Duration::from_millis(50));
            ack.send(Ok(Lsn(9)));
        });
        assert_eq!(wait_for_ack(&shared, &rx, true).unwrap(), Lsn(9));
    });
}

/// The caller of a large batch parks even when it is alone in flight after
/// a lone-batch group (where a small batch's caller would poll), and still
/// gets its answer.
#[test]
fn a_large_batch_caller_parks_and_gets_its_ack() {
    let shared = Shared::default();
    shared.in_flight.store(1, Ordering::Release);
    shared.last_group_batches.store(1, Ordering::Release);
    let (ack, rx) = ack_channel();
    std::thread::scope(|s| {
        let shared = &shared;
        s.spawn(move || {
            // Well inside the 1 ms a poller would hold the polling slot.
            std::thread::sleep(Duration::from_micros(300));
            let polling = shared.ack_spinners.load(Ordering::Acquire);
            ack.send(Ok(Lsn(3)));
            assert_eq!(polling, 0, "the large batch's caller polled");
        });
        assert_eq!(wait_for_ack(shared, &rx, false).unwrap(), Lsn(3));
    });
}

/// What a scan of the whole log saw: every frame as (LSN, offset, payload
/// bytes), then where the cursor stopped (the tail, or an error).
type Scan = (
    Vec<(Lsn, u64, Vec<u8>)>,
    std::result::Result<Option<crate::log::TailStop>, String>,
);

fn scan(reader: &LogReader) -> Scan {
    let mut cursor = reader.cursor(Lsn(1));
    let mut frames = Vec::new();
    loop {
        match cursor.next_frame() {
            Ok(Some(frame)) => {
                frame.events().expect("valid payload");
                frames.push((frame.lsn(), frame.offset(), frame.payload().to_vec()));
            }
            Ok(None) => return (frames, Ok(cursor.tail().cloned())),
            Err(e) => return (frames, Err(e.to_string())),
        }
    }
}

/// The read-ahead of long scans changes nothing a cursor yields: the same
/// frames from the same offsets, and the same stop, at a clean end, a torn
/// tail, a frame larger than the read window, and corruption mid-segment.
#[test]
fn read_ahead_yields_what_the_cursor_reads_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open_with(
        Arc::new(FsStorage),
        dir.path(),
        Options {
            durability: Durability::None,
            ..Options::default()
        },
    )
    .unwrap();
    for i in 0..6000u64 {
        // One frame far larger than the 256 KiB read window.
        let len = if i == 3000 {
            600 << 10
        } else {
            (i % 300) as usize
        };
        engine.append(vec![event(i, len)]).unwrap();
    }
    drop(engine);
    let reader = LogReader::open(dir.path()).unwrap();
    let plain = reader.clone().with_read_ahead(false);
    let (ahead_frames, ahead_stop) = scan(&reader);
    let (plain_frames, plain_stop) = scan(&plain);
    assert_eq!(plain_frames.len(), 6000);
    assert!(ahead_frames == plain_frames, "same frames with read-ahead");
    assert_eq!(ahead_stop, plain_stop);

    // A torn tail: garbage where the next frame would go.
    let (_, path) = reader.segments().unwrap().remove(0);
    let tail = plain_stop.unwrap().expect("a clean end").offset;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, &[0xAB; 40], tail).unwrap();
    let (ahead_frames, ahead_stop) = scan(&reader);
    let (plain_frames, plain_stop) = scan(&plain);
    assert!(ahead_frames == plain_frames);
    assert_eq!(ahead_stop, plain_stop);
    assert!(
        plain_stop.unwrap().unwrap().invalid.is_some(),
        "the torn tail is reported"
    );

    // A flipped byte in the payload of frame 4500, deep in read-ahead land:
    // the cursor stops there either way (the segment is the last one, so
    // it reports a tail; recovery is what calls it corruption).
    let offset = plain_frames[4499].1 + 30;
    let mut byte = [0u8];
    std::os::unix::fs::FileExt::read_exact_at(&file, &mut byte, offset).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, &[byte[0] ^ 0x10], offset).unwrap();
    let (ahead_frames, ahead_stop) = scan(&reader);
    let (plain_frames, plain_stop) = scan(&plain);
    assert_eq!(plain_frames.len(), 4499);
    assert!(ahead_frames == plain_frames);
    assert_eq!(ahead_stop, plain_stop);
}

#[test]
fn a_damaged_length_field_does_not_grow_the_read_window() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    for i in 1..=3u64 {
        engine.append(vec![event(i, 10)]).unwrap();
    }
    drop(engine);
    let reader = LogReader::open(dir.path()).unwrap().with_read_ahead(false);
    let (frames, stop) = scan(&reader);
    assert_eq!(frames.len(), 3);
    let tail = stop.unwrap().expect("a clean end").offset;
    // Where frame 4 would start: a header whose length field claims
    // 900 MiB, within the format's ceiling, in a 64 MiB file.
    let (_, path) = reader.segments().unwrap().remove(0);
    let mut head = [0u8; 24];
    head[4..8].copy_from_slice(&(900u32 << 20).to_le_bytes());
    head[8..16].copy_from_slice(&4u64.to_le_bytes());
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, &head, tail).unwrap();
    let mut cursor = reader.cursor(Lsn(1));
    let mut n = 0;
    while cursor.next_frame().unwrap().is_some() {
        n += 1;
    }
    assert_eq!(n, 3);
    assert_eq!(
        cursor.tail().and_then(|t| t.invalid.clone()),
        Some(Invalid::Truncated)
    );
    assert!(
        cursor.window_bytes() <= 1 << 20,
        "the window grew to {} bytes",
        cursor.window_bytes()
    );
}

/// Polls `done` until it holds, for at most 20 s.
fn eventually(what: &str, done: impl Fn() -> bool) {
    let start = std::time::Instant::now();
    while !done() {
        assert!(start.elapsed() < Duration::from_secs(20), "never: {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Fail-stop in `Periodic` mode: the sync that failed is never tried again
/// (a retry can succeed after the kernel dropped the pages it could not
/// write), and `durable_lsn` never moves past what the last good sync
/// covered.
#[test]
fn a_failed_periodic_sync_is_never_retried() {
    let (disk, engine) = periodic_engine(41, Duration::from_millis(2));
    engine.append(vec![event(1, 10)]).unwrap();
    eventually("the first periodic sync", || engine.durable_lsn() == Lsn(1));
    let before = engine.stats().fsyncs;
    disk.fail_nth(OpKind::Sync, 1);
    engine.append(vec![event(2, 10)]).unwrap();
    eventually("the failed sync", || engine.stats().fsyncs > before);
    // Long enough for a retry loop to show (a retry came 50+ ms later
    // in some runs of the unfixed code).
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        engine.stats().fsyncs,
        before + 1,
        "the failed sync was retried"
    );
    assert_eq!(engine.durable_lsn(), Lsn(1));
    assert!(matches!(
        engine.append(vec![event(3, 10)]),
        Err(Error::Poisoned { .. })
    ));
}

/// `Periodic(interval)` bounds the loss window under steady load too: the
/// timer alone never fires while the queue always holds a batch.
#[test]
fn periodic_syncs_fall_due_under_steady_load() {
    // Real files: the simulated disk's bookkeeping makes each write and
    // sync too slow to keep a backlog of callers waiting.
    let dir = tempfile::tempdir().unwrap();
    let interval = Duration::from_millis(10);
    // Small groups and many callers keep a backlog in the queue.
    let options = Options {
        durability: Durability::Periodic(interval),
        group_batches_max: 1,
        snapshots: crate::options::SnapshotOptions::manual(),
        ..Options::default()
    };
    let engine = Engine::open_with(Arc::new(FsStorage), dir.path(), options).unwrap();
    // Load until 20 syncs have fallen due (about 200 ms: one per interval),
    // within a bound no loaded machine reaches: when only the timer could
    // sync, the count stays at 0-1 and the bound fails the test, however
    // slow the machine.
    let bound = Duration::from_secs(60);
    let start = std::time::Instant::now();
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        for t in 0..64u64 {
            let (engine, done) = (&engine, &done);
            s.spawn(move || {
                let mut i = t << 32;
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    engine.append(vec![event(i, 100)]).unwrap();
                    i += 1;
                }
            });
        }
        while engine.stats().fsyncs < 20 && start.elapsed() < bound {
            std::thread::sleep(Duration::from_millis(5));
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    let stats = engine.stats();
    assert!(
        stats.fsyncs >= 20,
        "{} syncs in {:?}",
        stats.fsyncs,
        start.elapsed()
    );
    assert!(stats.durable_lsn > Lsn(0));
}

/// The snapshotter never blocks on a full writer queue while the writer
/// waits at the memory bound for it (a three-way wait: writer, snapshotter
/// and callers).
#[test]
fn the_memory_bound_and_a_full_queue_do_not_deadlock() {
    let (_disk, storage) = sim(43);
    let options = Options {
        durability: Durability::None,
        writer_queue_depth: 1,
        snapshots: crate::options::SnapshotOptions {
            every_events: u64::MAX,
            memtable_events_max: u64::MAX,
            every_bytes: 48 << 10,
            memtable_bytes_max: 64 << 10,
            interval: Duration::from_secs(3600),
            ..Default::default()
        },
        ..Options::default()
    };
    let engine = Engine::open_with(Arc::clone(&storage), DIR, options).unwrap();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let worker = {
        let engine = engine.clone();
        std::thread::spawn(move || {
            std::thread::scope(|s| {
                for t in 0..8u64 {
                    let engine = &engine;
                    s.spawn(move || {
                        for i in 0..1500 {
                            engine.append(vec![event((t << 32) + i, 400)]).unwrap();
                        }
                    });
                }
            });
            let _ = done_tx.send(());
        })
    };
    assert!(
        done_rx.recv_timeout(Duration::from_secs(120)).is_ok(),
        "appends stalled: writer, snapshotter and callers wait on each other"
    );
    worker.join().unwrap();
    assert!(engine.stats().snapshots > 0);
}

/// A panic on the acker thread (a bug) fails the engine like a failed
/// apply: no later group is acknowledged, and reopening rebuilds views
/// that agree with the log.
#[test]
fn a_dead_acker_poisons_the_engine() {
    let (_disk, storage) = sim(44);
    let (engine, faulty) = open_with_acker_fault(Arc::clone(&storage), Options::default());
    faulty.arm(PANICS);
    let acked = std::sync::Mutex::new(Vec::new());
    // Only a group of several batches goes to the acker, and on the
    // simulated disk a sync is quick: callers may need a few bursts before
    // two of them land in one group.
    for round in 0..50u64 {
        if !faulty.armed() {
            break;
        }
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let (engine, acked) = (&engine, &acked);
                s.spawn(move || {
                    for i in 0..200 {
                        let e = event((round << 40) + (t << 32) + i, 10);
                        match engine.append(vec![e.clone()]) {
                            Ok(lsn) => acked.lock().unwrap().push((lsn, e)),
                            Err(_) => return,
                        }
                    }
                });
            }
        });
    }
    assert!(!faulty.armed(), "a group reached the acker");
    assert!(
        matches!(
            engine.append(vec![event(9, 1)]),
            Err(Error::Poisoned { .. })
        ),
        "the engine goes on after its acker died"
    );
    assert!(engine.close().is_err(), "close hides the dead acker");
    drop(engine);
    let engine = Engine::open_with(storage, DIR, Options::default()).unwrap();
    let run = run_of_event();
    for (lsn, e) in acked.into_inner().unwrap() {
        let EventBody::SharedPut { key, value, .. } = e.body else {
            unreachable!("the test appends SharedPuts")
        };
        let got = engine.views().shared(&run, &key).unwrap();
        assert_eq!(got.map(|v| v.value), Some(value), "{key} at {lsn:?}");
    }
}

/// `close` reports a group that failed to apply on the acker after the
/// close was asked for, not `Ok`.
#[test]
fn close_reports_a_group_that_failed_on_the_acker() {
    let (_disk, storage) = sim(45);
    let (engine, faulty) = open_with_acker_fault(Arc::clone(&storage), Options::default());
    faulty.arm(FAILS_SLOWLY);
    let failed = std::sync::atomic::AtomicBool::new(false);
    let closed = std::thread::scope(|s| {
        for t in 0..4u64 {
            let (engine, failed) = (&engine, &failed);
            s.spawn(move || {
                for i in 0..200 {
                    if engine.append(vec![event((t << 32) + i, 10)]).is_err() {
                        failed.store(true, Ordering::Release);
                        return;
                    }
                }
            });
        }
        // Close once the failing group is on the acker, before it fails.
        eventually("a group on the acker", || !faulty.armed());
        engine.close()
    });
    assert!(failed.load(Ordering::Acquire));
    assert!(matches!(closed, Err(Error::Poisoned { .. })), "{closed:?}");
}

/// Appends one batch at a time, each after a snapshot, until a batch rolls
/// the log over to a new segment; returns that batch's LSN (the new
/// segment's base). Every LSN before it is in the snapshot.
fn roll_after_snapshot(engine: &Engine) -> Lsn {
    for i in 0..1000 {
        engine.snapshot().unwrap();
        let before = engine.stats().segments_created;
        let lsn = engine.append(vec![event(i, 100)]).unwrap();
        if engine.stats().segments_created > before {
            return lsn;
        }
    }
    panic!("no rollover in 1000 batches");
}

/// A closed engine on a fresh simulated disk (manual snapshots, small
/// segments) whose last batch rolled the log over right after a snapshot:
/// (disk, storage, options, log id, the new segment's base).
fn rolled_after_snapshot(seed: u64) -> (SimDisk, Arc<dyn Storage>, Options, u128, Lsn) {
    let (disk, storage) = sim(seed);
    let options = Options {
        snapshots: crate::options::SnapshotOptions::manual(),
        ..small_segments()
    };
    let engine = Engine::open_with(Arc::clone(&storage), DIR, options.clone()).unwrap();
    let log_id = engine.log_id();
    let rolled_at = roll_after_snapshot(&engine);
    drop(engine);
    (disk, storage, options, log_id, rolled_at)
}

/// The run every `event` writes to.
fn run_of_event() -> RunScope {
    tdr()
}

/// An engine whose views' feed faults as armed on the acker thread.
fn open_with_acker_fault(storage: Arc<dyn Storage>, options: Options) -> (Engine, Arc<Faulty>) {
    let mut faulty = None;
    let engine = Engine::open_feeding(storage, DIR, options, |feed| {
        let f = Arc::new(Faulty::new(feed, Some("waymark-acker")));
        faulty = Some(Arc::clone(&f));
        f
    })
    .unwrap();
    (engine, faulty.expect("open wraps the feed"))
}

fn segment_path(base: Lsn) -> PathBuf {
    PathBuf::from(DIR)
        .join(crate::log::LOG_DIR_NAME)
        .join(crate::log::segment::segment_file_name(base))
}

/// A crash while the newest segment was being created (its header never
/// synced) after a snapshot covering every segment before it: recovery
/// removes the torn segment and the log goes on under its own id, with
/// views that still attach. (It used to forget the id, start a new log and
/// refuse the views.)
#[test]
fn a_torn_newest_segment_after_snapshotted_ones_keeps_the_log() {
    let (_disk, storage, options, log_id, rolled_at) = rolled_after_snapshot(46);
    // The newest segment as a crash during its creation leaves it.
    let path = segment_path(rolled_at);
    let file = storage.open(&path, OpenMode::ReadWrite).unwrap();
    let len = usize::try_from(file.len().unwrap()).unwrap();
    file.write_all_at(&vec![0; len], 0).unwrap();
    file.sync_data().unwrap();
    drop(file);
    let engine = Engine::open_with(Arc::clone(&storage), DIR, options).unwrap();
    assert_eq!(engine.log_id(), log_id);
    assert_eq!(engine.recovery_report().removed_torn_segment, Some(path));
    let run = run_of_event();
    for i in 0..rolled_at.0 - 1 {
        assert!(
            engine
                .views()
                .shared(&run, &format!("k{i}"))
                .unwrap()
                .is_some()
        );
    }
    assert_eq!(engine.append(vec![event(9999, 10)]).unwrap(), rolled_at);
}

/// Retention never removes the segment before the newest one while the
/// newest one's header is missing (it may be in the middle of its
/// creation), and syncs that header before it removes anything: after a
/// power loss the log still has a segment to go on from.
#[test]
fn retention_keeps_the_log_until_the_newest_header_is_durable() {
    let (disk, storage, options, log_id, rolled_at) = rolled_after_snapshot(47);
    let log_dir = PathBuf::from(DIR).join(crate::log::LOG_DIR_NAME);
    let newest = segment_path(rolled_at);
    let file = storage.open(&newest, OpenMode::ReadWrite).unwrap();
    let mut header = [0u8; SEGMENT_HEADER_BYTES];
    crate::storage::read_up_to(file.as_ref(), &mut header, 0).unwrap();
    let drop_everything = crate::options::Retention::KeepFor {
        age: Duration::ZERO,
        bytes: 0,
    };
    let applied = Lsn(rolled_at.0 - 1);
    // Retention of everything the snapshot covers, as the engine is
    // poisoned or not.
    let retain = |poisoned: &dyn Fn() -> bool| {
        crate::log::retention::apply(
            storage.as_ref(),
            &log_dir,
            applied,
            &drop_everything,
            u64::MAX,
            poisoned,
        )
        .unwrap()
    };
    // As a crash in the middle of its creation can leave it on disk: no
    // header yet.
    file.write_all_at(&[0; SEGMENT_HEADER_BYTES], 0).unwrap();
    file.sync_data().unwrap();
    // Header not written yet: nothing goes.
    let done = retain(&|| false);
    assert_eq!(
        done.removed, 0,
        "removed the segment before a half-created one"
    );
    // Header written, not synced: retention syncs it, then removes; not
    // once the engine is poisoned (fail-stop: it leaves the log alone).
    file.write_all_at(&header, 0).unwrap();
    let syncs = disk.ops();
    let done = retain(&|| true);
    assert_eq!(done.removed, 0, "removed a segment while poisoned");
    assert_eq!(disk.ops(), syncs, "touched the disk while poisoned");
    // Poisoned once retention has started (a sync failed meanwhile): it
    // stops at its next step.
    let calls = std::cell::Cell::new(0);
    let done = retain(&|| {
        calls.set(calls.get() + 1);
        calls.get() > 1
    });
    assert_eq!(done.removed, 0, "removed a segment after the poison");
    let done = retain(&|| false);
    assert!(done.removed >= 1);
    drop(file);
    let storage: Arc<dyn Storage> = Arc::new(disk.reboot(Damage::DropAll));
    let engine = Engine::open_with(Arc::clone(&storage), DIR, options).unwrap();
    assert_eq!(engine.log_id(), log_id, "the log started over");
    assert_eq!(
        engine.append(vec![event(9999, 10)]).unwrap(),
        Lsn(rolled_at.0 + 1)
    );
}

/// A crafted file named like a segment at LSN 0 (outside the LSN space),
/// with a valid header: not read as a segment, so no LSN arithmetic wraps
/// (it made an open underflow `next_lsn - 1`).
#[test]
fn a_segment_named_outside_the_lsn_space_is_not_read() {
    let (_disk, storage) = sim(48);
    let options = Options {
        snapshots: crate::options::SnapshotOptions {
            enabled: false,
            ..Default::default()
        },
        ..Options::default()
    };
    drop(Engine::open_with(Arc::clone(&storage), DIR, options.clone()).unwrap());
    // Nothing left but the crafted file.
    storage.remove_file(&segment_path(Lsn(1))).unwrap();
    storage
        .remove_file(&PathBuf::from(DIR).join("views.redb"))
        .unwrap();
    let header = crate::log::segment::SegmentHeader {
        format_version: crate::log::FORMAT_VERSION,
        log_id: 7,
        base_lsn: Lsn(0),
        created_unix_ms: 0,
    };
    let path = PathBuf::from(DIR)
        .join(crate::log::LOG_DIR_NAME)
        .join(crate::log::segment::segment_file_name(Lsn(0)));
    let file = storage.open(&path, OpenMode::CreateNew).unwrap();
    file.write_all_at(&header.encode(), 0).unwrap();
    drop(file);
    let engine = Engine::open_with(storage, DIR, options).unwrap();
    assert_eq!(engine.append(vec![event(1, 10)]).unwrap(), Lsn(1));
}

/// A bad frame at or below the snapshot's `applied_lsn` was synced before
/// the snapshot: corruption, never a torn tail to cut, even when no later
/// frame vouches for it (the cut used to happen first, and then the views
/// were refused as ahead of the log).
#[test]
fn a_bad_frame_the_snapshot_covers_is_corruption_not_a_torn_tail() {
    let (_disk, storage) = sim(49);
    let options = manual_snapshots();
    let engine = Engine::open_with(Arc::clone(&storage), DIR, options.clone()).unwrap();
    for i in 1..=5 {
        engine.append(vec![event(i, 50)]).unwrap();
    }
    engine.snapshot().unwrap();
    let last = engine
        .reader()
        .cursor(Lsn(5))
        .next_frame()
        .unwrap()
        .map(|f| f.offset())
        .unwrap();
    drop(engine);
    let path = segment_path(Lsn(1));
    let file = storage.open(&path, OpenMode::ReadWrite).unwrap();
    // Garble the last frame's LSN field.
    file.write_all_at(&[0xEE; 8], last + 8).unwrap();
    file.sync_data().unwrap();
    let before = read_to_vec(file.as_ref()).unwrap();
    drop(file);
    let err = Engine::open_with(Arc::clone(&storage), DIR, options.clone()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Corruption {
                expected_lsn: Lsn(5),
                ..
            }
        ),
        "{err}"
    );
    // Salvage cannot cut it either (the views hold those batches): it
    // refuses too, and cuts nothing.
    let salvage = Options {
        recovery: RecoveryMode::Salvage,
        ..options
    };
    let err = Engine::open_with(Arc::clone(&storage), DIR, salvage).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Corruption {
                expected_lsn: Lsn(5),
                ..
            }
        ),
        "{err}"
    );
    let file = storage.open(&path, OpenMode::Read).unwrap();
    assert_eq!(
        read_to_vec(file.as_ref()).unwrap(),
        before,
        "a refused open cut the log"
    );
}

/// Storage that runs a hook (once) before the next directory listing, and
/// can serve the next open of a file from another disk: ways to put the
/// writer's steps exactly between a reader's steps.
struct BeforeListing {
    inner: Arc<dyn Storage>,
    #[allow(clippy::type_complexity)]
    hook: std::sync::Mutex<Option<Box<dyn FnOnce() + Send>>>,
    /// Serves the next open instead of `inner` (once).
    next_open_from: std::sync::Mutex<Option<Arc<dyn Storage>>>,
}

impl BeforeListing {
    fn new(inner: Arc<dyn Storage>) -> Arc<BeforeListing> {
        Arc::new(BeforeListing {
            inner,
            hook: std::sync::Mutex::new(None),
            next_open_from: std::sync::Mutex::new(None),
        })
    }
}

impl std::fmt::Debug for BeforeListing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BeforeListing").finish_non_exhaustive()
    }
}

impl Storage for BeforeListing {
    fn open(
        &self,
        path: &Path,
        mode: OpenMode,
    ) -> std::io::Result<Arc<dyn crate::storage::StorageFile>> {
        let other = self.next_open_from.lock().unwrap().take();
        other.as_ref().unwrap_or(&self.inner).open(path, mode)
    }
    fn create_dir_all(&self, path: &Path) -> std::io::Result<()> {
        self.inner.create_dir_all(path)
    }
    fn list_dir(&self, path: &Path) -> std::io::Result<Vec<String>> {
        let hook = self.hook.lock().unwrap().take();
        if let Some(hook) = hook {
            hook();
        }
        self.inner.list_dir(path)
    }
    fn exists(&self, path: &Path) -> std::io::Result<bool> {
        self.inner.exists(path)
    }
    fn remove_file(&self, path: &Path) -> std::io::Result<()> {
        self.inner.remove_file(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        self.inner.rename(from, to)
    }
    fn sync_dir(&self, path: &Path) -> std::io::Result<()> {
        self.inner.sync_dir(path)
    }
    fn lock(&self, path: &Path) -> std::io::Result<crate::storage::LockGuard> {
        self.inner.lock(path)
    }
    fn new_log_id(&self) -> u128 {
        self.inner.new_log_id()
    }
}

/// A reader at the end of a live segment, while the writer finishes that
/// segment and starts the next between the reader's last read and its look
/// at the directory: the reader reads the segment again and goes on, never
/// reports a gap (it used to return `Error::Gap`).
#[test]
fn a_live_reader_follows_a_rollover_between_its_read_and_its_listing() {
    // How many batches fill the first segment.
    let per_segment = {
        let (_disk, storage) = sim(50);
        let engine = Engine::open_with(storage, DIR, small_segments()).unwrap();
        let mut n = 0;
        loop {
            engine.append(vec![event(n, 100)]).unwrap();
            if engine.stats().segments_created > 1 {
                break n; // batch n (0-based) rolled over: n fit
            }
            n += 1;
        }
    };
    let (_disk, storage) = sim(51);
    let engine = Engine::open_with(Arc::clone(&storage), DIR, small_segments()).unwrap();
    for i in 0..per_segment - 1 {
        engine.append(vec![event(i, 100)]).unwrap();
    }
    let hooked = BeforeListing::new(Arc::clone(&storage));
    let reader = LogReader::open_on(hooked.clone(), DIR).unwrap();
    let mut cursor = reader.cursor(Lsn(1));
    let mut seen = 0;
    while cursor.next_frame().unwrap().is_some() {
        seen += 1;
    }
    assert_eq!(seen, per_segment - 1);
    // Between the reader's next read of this segment and its listing: the
    // segment's last batch, then one that starts the next segment.
    let writer = engine.clone();
    *hooked.hook.lock().unwrap() = Some(Box::new(move || {
        writer.append(vec![event(per_segment - 1, 100)]).unwrap();
        writer.append(vec![event(per_segment, 100)]).unwrap();
        assert_eq!(writer.stats().segments_created, 2);
    }));
    let mut lsns = Vec::new();
    while let Some(frame) = cursor.next_frame().unwrap() {
        lsns.push(frame.lsn());
    }
    assert_eq!(lsns, vec![Lsn(per_segment), Lsn(per_segment + 1)]);
}

/// Retention removes the next segment between the listing in which a
/// cursor at the end of a segment found it and the listing with which it
/// enters it: the cursor fails with `Removed` (it used to move on to the
/// log's new first segment and pass over every frame in between).
#[test]
fn a_cursor_whose_next_segment_goes_between_two_listings_fails() {
    let (_disk, storage) = sim(53);
    let engine = Engine::open_with(Arc::clone(&storage), DIR, removing_retention()).unwrap();
    for i in 0..200 {
        engine.append(vec![event(i, 100)]).unwrap();
    }
    let hooked = BeforeListing::new(Arc::clone(&storage));
    let reader = LogReader::open_on(hooked.clone(), DIR).unwrap();
    let mut cursor = reader.cursor(Lsn(1));
    assert_eq!(cursor.next_frame().unwrap().unwrap().lsn(), Lsn(1));
    // The next listing is the one at the end of the first segment; the one
    // after it enters the second. Retention runs between the two.
    let rearm = Arc::clone(&hooked);
    let writer = engine.clone();
    *hooked.hook.lock().unwrap() = Some(Box::new(move || {
        *rearm.hook.lock().unwrap() = Some(Box::new(move || {
            writer.snapshot().unwrap();
        }));
    }));
    let (last, err) = read_until_error(&mut cursor, Lsn(1));
    assert!(
        matches!(err, Error::Removed { expected, .. } if expected == last.next()),
        "{err}"
    );
}

/// A zeroed length field in the middle of a segment that is not the last:
/// strict mode refuses, naming that segment and offset (frames follow the
/// zeros), and salvage opens, cutting at the zeros even though valid
/// frames follow them in that segment (the second pass of salvage used to
/// refuse those as corruption, after removing the later segments).
#[test]
fn salvage_cuts_a_zeroed_frame_in_a_segment_that_is_not_the_last() {
    let (_disk, storage) = sim(52);
    let engine = Engine::open_with(Arc::clone(&storage), DIR, small_segments()).unwrap();
    let mut i = 0;
    while engine.stats().segments_created < 2 {
        engine.append(vec![event(i, 100)]).unwrap();
        i += 1;
    }
    engine.append(vec![event(999, 100)]).unwrap();
    // The third frame of the first segment.
    let third = engine
        .reader()
        .cursor(Lsn(3))
        .next_frame()
        .unwrap()
        .map(|f| f.offset())
        .unwrap();
    drop(engine);
    let file = storage
        .open(&segment_path(Lsn(1)), OpenMode::ReadWrite)
        .unwrap();
    file.write_all_at(&[0; 4], third + 4).unwrap();
    file.sync_data().unwrap();
    drop(file);
    // Refused where the damage is (not as a gap at the next segment).
    let err = Engine::open_with(Arc::clone(&storage), DIR, small_segments()).unwrap_err();
    assert!(
        matches!(
            &err,
            Error::Corruption {
                segment,
                offset,
                expected_lsn: Lsn(3),
                reason: Invalid::TrailingGarbage,
            } if *segment == segment_path(Lsn(1)) && *offset == third
        ),
        "{err}"
    );
    let salvage = Options {
        recovery: RecoveryMode::Salvage,
        ..small_segments()
    };
    let engine = Engine::open_with(Arc::clone(&storage), DIR, salvage).unwrap();
    let report = engine.recovery_report();
    assert_eq!(report.last_lsn, Some(Lsn(2)));
    let salvaged = report.salvaged.as_ref().expect("a salvage report");
    assert_eq!(salvaged.cut.expected_lsn, Lsn(3));
    assert!(!salvaged.segments_removed.is_empty());
    assert_eq!(engine.append(vec![event(5000, 10)]).unwrap(), Lsn(3));
}

/// Poisoned by something other than a failed write or sync (here a failed
/// apply), the writer still syncs at `close` what it acknowledged in
/// `Periodic` mode: only a failed write or sync stops syncing.
#[test]
fn close_still_syncs_periodic_writes_after_a_failed_apply() {
    let (disk, storage) = sim(53);
    let options = Options {
        durability: Durability::Periodic(Duration::from_secs(3600)),
        ..Options::default()
    };
    let (engine, faulty) = open_with_acker_fault(storage, options);
    // Acknowledged (after the write) and not synced: the interval is long.
    let mut first = Vec::new();
    for i in 0..20 {
        first.push(engine.append(vec![event(1 << 40 | i, 10)]).unwrap());
    }
    faulty.arm(FAILS_SLOWLY);
    let acked = std::sync::Mutex::new(first);
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let (engine, acked) = (&engine, &acked);
            s.spawn(move || {
                for i in 0..100 {
                    match engine.append(vec![event((t << 32) + i, 10)]) {
                        Ok(lsn) => acked.lock().unwrap().push(lsn),
                        Err(_) => return,
                    }
                }
            });
        }
    });
    assert!(!faulty.armed(), "a group reached the acker");
    assert!(engine.close().is_err());
    drop(engine);
    let storage: Arc<dyn Storage> = Arc::new(disk.reboot(Damage::DropAll));
    let reader = LogReader::open_on(Arc::clone(&storage), DIR).unwrap();
    let mut cursor = reader.cursor(Lsn(1));
    let mut last = Lsn(0);
    while let Some(frame) = cursor.next_frame().unwrap() {
        last = frame.lsn();
    }
    let acked = acked.into_inner().unwrap();
    assert!(!acked.is_empty());
    assert!(
        acked.iter().all(|lsn| *lsn <= last),
        "acknowledged batches up to {:?} lost; the log ends at {last:?}",
        acked.iter().max()
    );
}

/// redb rewrites the views file's first page in place at every commit; a
/// power loss may garble that page whole (the disk model allows it, redb's
/// own does not). The head file keeps the page's last image: the open puts
/// it back, and the views survive even when retention has removed the
/// log's start (before, the open refused them as unreadable and
/// unrebuildable).
#[test]
fn a_garbled_views_header_is_put_back_from_the_head_file() {
    let (_disk, storage) = sim(54);
    let options = removing_retention();
    let engine = Engine::open_with(Arc::clone(&storage), DIR, options.clone()).unwrap();
    for i in 0..200 {
        engine.append(vec![event(i, 100)]).unwrap();
    }
    engine.snapshot().unwrap();
    assert!(
        engine.stats().segments_removed > 0,
        "retention removed the log's start"
    );
    drop(engine);
    let views = storage
        .open(&PathBuf::from(DIR).join("views.redb"), OpenMode::ReadWrite)
        .unwrap();
    let garbage: Vec<u8> = (0..4096u32).map(|i| (i * 7 + 13) as u8).collect();
    views.write_all_at(&garbage, 0).unwrap();
    views.sync_data().unwrap();
    drop(views);
    let engine = Engine::open_with(Arc::clone(&storage), DIR, options).unwrap();
    assert_eq!(engine.stats().views_rebuilt, None);
    let run = run_of_event();
    for i in [0, 199] {
        assert!(
            engine
                .views()
                .shared(&run, &format!("k{i}"))
                .unwrap()
                .is_some()
        );
    }
}

/// A scan that took the memtables' levels and its LSN before a snapshot
/// committed a later batch into redb must not merge the two: redb's rows
/// carry no version, so the scan would show that batch's new keys with the
/// memtables' older values of its other keys (part of a batch). The scan
/// says "read again", and a reader's scan then sees one batch whole.
#[test]
fn a_scan_never_mixes_a_snapshot_newer_than_its_lsn() {
    let (_disk, storage) = sim(48);
    let options = manual_snapshots();
    let engine = Engine::open_with(Arc::clone(&storage), DIR, options).unwrap();
    let run = run_of_event();
    let put = |key: &str, value: &[u8]| Event {
        ts_micros: 0,
        body: EventBody::SharedPut {
            codec: crate::Codec::Raw,
            run: run.clone(),
            key: key.into(),
            value: value.to_vec(),
            immutable: false,
        },
    };
    engine.append(vec![put("a", b"old")]).unwrap();
    // A reader takes its LSN and levels here...
    let views = &engine.inner.views;
    let at = views.visible_lsn().0;
    let levels = views.levels();
    // ...then a batch and a snapshot of it land before it reads redb.
    engine
        .append(vec![put("a", b"new"), put("b", b"new")])
        .unwrap();
    engine.snapshot().unwrap();
    let prefix = crate::view::key::KeyBuf::new(crate::view::key::Table::Shared)
        .run(&run)
        .into_vec();
    let (start, end) = crate::view::key::prefix_range(&prefix);
    assert_eq!(
        views.scan_at(&levels, &start, &end, at).unwrap(),
        None,
        "redb is past the scan's LSN: read again"
    );
    let entries = engine.views().shared_entries(&run).unwrap();
    let values: Vec<(&str, &[u8])> = entries
        .iter()
        .map(|(k, v)| (k.as_str(), v.value.as_slice()))
        .collect();
    assert_eq!(values, [("a", &b"new"[..]), ("b", &b"new"[..])]);
}

/// A memtable frozen earlier (the memory bound does it) and not written
/// yet: `snapshot` writes it and then the batches after it too, so that
/// what it returns covers every batch acknowledged before the call (it
/// returned after the older memtable alone).
#[test]
fn snapshot_covers_batches_after_a_memtable_frozen_earlier() {
    let (_disk, storage) = sim(49);
    let options = manual_snapshots();
    let engine = Engine::open_with(Arc::clone(&storage), DIR, options).unwrap();
    engine.append(vec![event(1, 10)]).unwrap();
    // As the writer does at the memory bound, between groups.
    assert!(engine.inner.views.freeze());
    let last = engine.append(vec![event(2, 10)]).unwrap();
    assert_eq!(engine.snapshot().unwrap(), last);
    assert!(engine.inner.views.levels().frozen.is_none());
}

/// Fail-stop reaches retention: once a sync failed, a snapshot of a
/// memtable frozen before the failure still writes the views, but
/// retention leaves the log as it is (it would have removed segments and
/// synced the next one, a retried fsync).
#[test]
fn retention_leaves_the_log_alone_after_a_failed_sync() {
    let (disk, storage) = sim(50);
    let options = removing_retention();
    let engine = Engine::open_with(Arc::clone(&storage), DIR, options).unwrap();
    let mut i = 0;
    while engine.stats().segments_created < 2 {
        engine.append(vec![event(i, 100)]).unwrap();
        i += 1;
    }
    // A memtable frozen before the failure (the memory bound does this).
    assert!(engine.inner.views.freeze());
    let segments = || engine.reader().segments().unwrap().len();
    let before = segments();
    disk.fail_nth(OpKind::Sync, 1);
    assert!(engine.append(vec![event(i, 100)]).is_err());
    let _ = engine.snapshot();
    assert_eq!(segments(), before, "no segment removed after the failure");
    assert!(
        engine.inner.views.applied_lsn() > Lsn(0),
        "the views were written"
    );
}

/// The other order of the same race: the segment is loaded with the frame
/// still unfinished and, further on, frames the writer wrote after
/// finishing and syncing it (which vouch for it). Read again, the frame is
/// whole: not corruption.
#[test]
fn a_frame_finished_while_its_segment_was_loaded_is_not_corruption() {
    let (disk, storage) = closed_log(54, manual_snapshots(), 3, 10);
    let segment = segments(storage.as_ref())[0].clone();
    let offset = {
        let reader = LogReader::open_on(Arc::clone(&storage), DIR).unwrap();
        let mut c = reader.cursor(Lsn(2));
        c.next_frame().unwrap().unwrap().offset()
    };
    // What the first load sees: frame 2 half written, frame 3 whole.
    let unfinished = disk.reboot(Damage::KeepAll);
    overwrite(&unfinished, &segment, offset + 30, &[0; 8]);
    let hooked = BeforeListing::new(Arc::new(disk.reboot(Damage::KeepAll)));
    *hooked.next_open_from.lock().unwrap() = Some(Arc::new(unfinished.clone()));
    assert!(!crate::inspect::is_vouched_for_on(hooked.as_ref(), &segment, offset, Lsn(2)).unwrap());
    // Unfinished on both reads: corruption, vouched for by frame 3.
    assert!(crate::inspect::is_vouched_for_on(&unfinished, &segment, offset, Lsn(2)).unwrap());
}

/// On a live log a reader can stop at a frame still being written; by the
/// time it asks whether later frames vouch for it, the writer may have
/// finished it and written more. A frame that is valid now is not
/// corruption (later frames do record a durable LSN past it).
#[test]
fn a_frame_finished_since_is_not_vouched_for_as_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    for i in 1..=3 {
        engine.append(vec![event(i, 10)]).unwrap();
    }
    let reader = engine.reader();
    let mut cursor = reader.cursor(Lsn(2));
    let frame = cursor.next_frame().unwrap().unwrap();
    let (segment, offset) = (frame.segment().to_path_buf(), frame.offset());
    assert!(!crate::inspect::is_vouched_for(&segment, offset, Lsn(2)).unwrap());
    // The same bytes damaged: corruption, vouched for by frame 3.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, &[0xFF], offset + 30).unwrap();
    assert!(crate::inspect::is_vouched_for(&segment, offset, Lsn(2)).unwrap());
}

/// A worker's task state is often private data: the state directory, its
/// `log/` and archive directories are created 0700 and every file in them
/// 0600, whatever the umask lets through (it can only remove bits).
#[test]
fn state_directories_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("state");
    let archive = parent.path().join("archive");
    let options = Options {
        retention: crate::options::Retention::Archive(archive.clone()),
        segment_bytes_max: 4096,
        ..Options::default()
    };
    let engine = Engine::open_with(Arc::new(FsStorage), &dir, options).unwrap();
    for i in 0..64 {
        engine.append(vec![event(i, 200)]).unwrap();
    }
    engine.snapshot().unwrap();
    engine.close().unwrap();
    drop(engine);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let mut files = 0;
    for d in [dir.clone(), dir.join("log"), archive] {
        assert_eq!(mode(&d), 0o700, "{}", d.display());
        for e in std::fs::read_dir(&d).unwrap() {
            let path = e.unwrap().path();
            if path.is_file() {
                files += 1;
                assert_eq!(
                    mode(&path) & !0o600,
                    0,
                    "{} is {:o}",
                    path.display(),
                    mode(&path)
                );
            }
        }
    }
    assert!(
        files >= 4,
        "segments, views.redb and the lock checked: {files}"
    );
}

/// The views' snapshots commit with redb's quick-repair, so an open after
/// a crash loads redb's saved allocator state instead of walking and
/// checksumming the whole views file to rebuild it, which takes time in
/// proportion to the views (0.24 s at a million keys before, issue 16's
/// W6). Without quick-repair redb's repair runs on each of these reopens.
#[test]
fn an_open_after_a_crash_needs_no_full_repair_of_the_views() {
    let run = tdr();
    for (seed, damage) in [
        (64, Damage::DropAll),
        (65, Damage::KeepAll),
        (66, Damage::TornLastWrite),
        (67, Damage::Pages),
    ] {
        let (disk, storage) = sim(seed);
        let engine = Engine::open_with(Arc::clone(&storage), DIR, manual_snapshots()).unwrap();
        for i in 0..50 {
            engine.append(vec![event(i, 100)]).unwrap();
        }
        engine.snapshot().unwrap();
        for i in 50..60 {
            engine.append(vec![event(i, 100)]).unwrap();
        }
        disk.crash();
        drop(engine);
        let before = crate::view::store::full_repairs();
        let storage: Arc<dyn Storage> = Arc::new(disk.reboot(damage));
        let engine = Engine::open_with(storage, DIR, manual_snapshots()).unwrap();
        assert_eq!(
            crate::view::store::full_repairs() - before,
            0,
            "{damage:?}: the views were repaired in full"
        );
        // Every acknowledged event is in the views, the snapshot's and the
        // log's after it.
        for i in [0, 49, 50, 59] {
            let got = engine.views().shared(&run, &format!("k{i}")).unwrap();
            assert_eq!(
                got.map(|v| v.value),
                Some(vec![(i % 251) as u8; 100]),
                "{damage:?}: k{i}"
            );
        }
    }
}
