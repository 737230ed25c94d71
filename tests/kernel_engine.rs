//! Kernel behaviour that depends on the engine below it: a backend that
//! corrupts checkpoints, a poisoned or closed engine and the causes its
//! errors keep, a full disk, states as of a time built from hand-made
//! events, and history reads after retention removed segments. The
//! backend-neutral suite is `support/scenarios.rs`.

use std::sync::Arc;

use waymark_engine::storage::SimDisk;
use waymark_engine::{Engine, Options};
use waymark_kernel::{Backend, EngineBackend, Error, Kernel, RunRef, TaskRef};

fn ti(task: &str, try_number: u32) -> TaskRef {
    TaskRef::new("acme", "documents", "run-42", task, try_number).unwrap()
}

/// Small segments, snapshots only when asked for, and retention that
/// removes every segment a snapshot covers.
fn removing_retention() -> Options {
    Options {
        segment_bytes_max: 4096,
        snapshots: waymark_engine::SnapshotOptions::manual(),
        retention: waymark_engine::Retention::KeepFor {
            age: std::time::Duration::ZERO,
            bytes: 0,
        },
        ..Options::default()
    }
}

/// A backend that flips a byte of every checkpoint it returns: what a
/// corrupted checkpoint looks like to the kernel.
#[derive(Debug)]
struct Tampering(EngineBackend);

impl Backend for Tampering {
    fn append(
        &self,
        conditions: Vec<waymark_engine::Condition>,
        batch: Vec<waymark_engine::Event>,
    ) -> waymark_kernel::Result<waymark_engine::Lsn> {
        self.0.append(conditions, batch)
    }
    fn get(
        &self,
        a: &waymark_engine::AttemptScope,
        k: &str,
    ) -> waymark_kernel::Result<Option<waymark_engine::KvValue>> {
        self.0.get(a, k)
    }
    fn attempt_entries(
        &self,
        a: &waymark_engine::AttemptScope,
    ) -> waymark_kernel::Result<Vec<(String, waymark_engine::KvValue)>> {
        self.0.attempt_entries(a)
    }
    fn latest_attempt_value(
        &self,
        t: &waymark_engine::TaskScope,
        k: &str,
    ) -> waymark_kernel::Result<Option<(u32, waymark_engine::KvValue)>> {
        self.0.latest_attempt_value(t, k)
    }
    fn task_state(
        &self,
        t: &waymark_engine::TaskScope,
        k: &str,
    ) -> waymark_kernel::Result<Option<waymark_engine::KvValue>> {
        self.0.task_state(t, k)
    }
    fn task_state_entries(
        &self,
        t: &waymark_engine::TaskScope,
    ) -> waymark_kernel::Result<Vec<(String, waymark_engine::KvValue)>> {
        self.0.task_state_entries(t)
    }
    fn task(
        &self,
        t: &waymark_engine::TaskScope,
    ) -> waymark_kernel::Result<Option<waymark_engine::TaskRecord>> {
        self.0.task(t)
    }
    fn tasks(
        &self,
        r: &waymark_engine::RunScope,
    ) -> waymark_kernel::Result<Vec<(String, waymark_engine::TaskRecord)>> {
        self.0.tasks(r)
    }
    fn run(
        &self,
        r: &waymark_engine::RunScope,
    ) -> waymark_kernel::Result<Option<waymark_engine::RunRecord>> {
        self.0.run(r)
    }
    fn runs(
        &self,
        t: &str,
        d: Option<&str>,
    ) -> waymark_kernel::Result<Vec<(waymark_engine::RunScope, waymark_engine::RunRecord)>> {
        self.0.runs(t, d)
    }
    fn shared(
        &self,
        r: &waymark_engine::RunScope,
        k: &str,
    ) -> waymark_kernel::Result<Option<waymark_engine::SharedValue>> {
        self.0.shared(r, k)
    }
    fn checkpoint(
        &self,
        r: &waymark_engine::RunScope,
        n: &str,
    ) -> waymark_kernel::Result<Option<waymark_engine::CheckpointRecord>> {
        Ok(self.0.checkpoint(r, n)?.map(|mut c| {
            if let Some(b) = c.capture.first_mut() {
                *b ^= 1;
            }
            c
        }))
    }
    fn checkpoints(
        &self,
        r: &waymark_engine::RunScope,
    ) -> waymark_kernel::Result<Vec<(String, waymark_engine::CheckpointRecord)>> {
        self.0.checkpoints(r)
    }
    fn scan_log(
        &self,
        from: waymark_engine::Lsn,
        visit: &mut dyn FnMut(waymark_engine::Lsn, Vec<waymark_engine::Event>) -> bool,
    ) -> waymark_kernel::Result<()> {
        self.0.scan_log(from, visit)
    }
    fn durable_lsn(&self) -> waymark_engine::Lsn {
        self.0.durable_lsn()
    }
    fn flush(&self) -> waymark_kernel::Result<waymark_engine::Lsn> {
        self.0.flush()
    }
    fn close(&self) -> waymark_kernel::Result<()> {
        self.0.close()
    }
    fn stats(&self) -> waymark_kernel::BackendStats {
        self.0.stats()
    }
}

#[test]
fn a_checkpoint_that_fails_its_checksum_is_not_restored() {
    let engine =
        Engine::open_with(Arc::new(SimDisk::new(5)), "/state", Options::default()).unwrap();
    let k = Kernel::on(Tampering(EngineBackend::new(engine)), "w");
    let run = RunRef::new("acme", "documents", "run-42").unwrap();
    k.context(run.task("ocr").unwrap())
        .set("text", b"v1")
        .unwrap();
    k.checkpoint(&run, "c").unwrap();
    k.context(run.task("ocr").unwrap())
        .set("text", b"v2")
        .unwrap();
    assert!(matches!(
        k.restore(&run, "c"),
        Err(Error::ChecksumMismatch { .. })
    ));
    assert_eq!(
        k.context(run.task("ocr").unwrap()).get("text").unwrap(),
        Some(b"v2".to_vec()),
        "nothing restored"
    );
}

/// A full disk under the log fails the write that met it, poisons the
/// engine, and every later refusal still says "disk full" through its
/// cause; a full disk under the views (a snapshot into redb) is a full
/// disk too, once the memtables have nowhere to go.
#[test]
fn a_full_disk_is_still_a_full_disk_after_the_poison() {
    let disk = SimDisk::new(21);
    let k = Kernel::builder()
        .open_on(Arc::new(disk.clone()), "/state")
        .unwrap();
    let ctx = k.context(ti("ocr", 1));
    ctx.set("a", b"1").unwrap();
    // The segment is preallocated: a full disk meets the next segment.
    disk.set_capacity(Some(0));
    let first = (0..10_000)
        .find_map(|i| ctx.set(&format!("k{i}"), vec![1u8; 8192]).err())
        .expect("the disk fills up");
    assert!(first.is_disk_full(), "{first}");
    let later = ctx.set("b", b"2").unwrap_err();
    assert!(later.is_poisoned(), "{later}");
    assert!(later.is_disk_full(), "the poison keeps its cause: {later}");

    // The views: the log's segment is preallocated (its writes take no
    // new space), so the snapshot into redb is what meets the full disk;
    // appends go on to the memory bound and are then refused with the
    // snapshot's cause.
    let disk = SimDisk::new(22);
    let mut options = Options {
        segment_bytes_max: 8 << 20,
        ..Options::default()
    };
    options.snapshots.every_events = u64::MAX;
    options.snapshots.memtable_events_max = u64::MAX;
    options.snapshots.every_bytes = 64 << 10;
    options.snapshots.memtable_bytes_max = 256 << 10;
    let k = Kernel::builder()
        .options(options)
        .open_on(Arc::new(disk.clone()), "/state")
        .unwrap();
    let ctx = k.context(ti("ocr", 1));
    ctx.set("a", b"1").unwrap();
    disk.set_capacity(Some(disk.bytes_used()));
    let refused = (0..5_000)
        .find_map(|i| ctx.set(&format!("k{i}"), vec![1u8; 1000]).err())
        .expect("the memory bound refuses");
    assert!(
        matches!(
            refused,
            Error::Engine(waymark_engine::Error::MemtablesFull { .. })
        ),
        "{refused}"
    );
    assert!(refused.is_disk_full(), "{refused}");
    let stats = k.stats().engine.expect("the engine's counters");
    assert!(stats.snapshot_error.is_some(), "{stats:?}");
}

#[test]
fn a_poisoned_or_closed_engine_is_a_typed_error() {
    let disk = SimDisk::new(9);
    let k = Kernel::builder()
        .open_on(Arc::new(disk.clone()), "/state")
        .unwrap();
    let ctx = k.context(ti("ocr", 1));
    ctx.set("a", b"1").unwrap();
    disk.fail_nth(waymark_engine::storage::OpKind::Sync, 1);
    assert!(matches!(ctx.set("b", b"2"), Err(Error::Engine(_))));
    let later = ctx.set("c", b"3").unwrap_err();
    assert!(later.is_poisoned(), "{later}");
    assert!(matches!(
        later,
        Error::Engine(waymark_engine::Error::Poisoned { .. })
    ));
    // The poison keeps the failed sync as its source.
    let source = std::error::Error::source(&later).expect("a cause");
    assert!(
        source.to_string().contains("injected fault in Sync"),
        "{source}"
    );
    assert_eq!(ctx.get("a").unwrap(), Some(b"1".to_vec()), "reads go on");
    let closed = Engine::open_with(Arc::new(SimDisk::new(10)), "/s", Options::default()).unwrap();
    let k = Kernel::on_engine(closed.clone(), "w");
    closed.close().unwrap();
    assert!(matches!(
        k.context(ti("ocr", 1)).set("a", b"1"),
        Err(Error::Engine(waymark_engine::Error::Closed))
    ));
}

/// A batch is atomic in a state as of a time too: with events at 100 and
/// 101 µs, the state at 100 µs has neither, at 101 µs both (it used to
/// show the first alone).
#[test]
fn a_run_as_of_a_time_never_holds_part_of_a_batch() {
    use waymark_engine::{Event, EventBody};
    use waymark_kernel::At;
    let engine =
        Engine::open_with(Arc::new(SimDisk::new(5)), "/state", Options::default()).unwrap();
    let t1 = ti("ocr", 1);
    let put = |key: &str, ts_micros: i64| Event {
        ts_micros,
        body: EventBody::Put {
            codec: waymark_engine::Codec::Raw,
            attempt: std::sync::Arc::new(t1.attempt_scope()),
            key: key.into(),
            value: b"v".to_vec(),
            meta: Vec::new(),
        },
    };
    engine.append(vec![put("a", 100), put("b", 101)]).unwrap();
    let k = Kernel::on_engine(engine, "test-worker");
    for (at, expect) in [(99, None), (100, None), (101, Some(b"v".to_vec()))] {
        let then = k.run_as_of(t1.run_ref(), At::TimeMicros(at)).unwrap();
        let ctx = then.context(t1.clone());
        assert_eq!(ctx.get("a").unwrap(), expect, "a at {at}");
        assert_eq!(ctx.get("b").unwrap(), expect, "b at {at}");
    }
}

/// Retention removed the log's first segment: a history read, a state as
/// of an LSN and a watch from LSN 1 say so (`HistoryRemoved`, and a
/// `Failed` message that ends the watch) instead of passing over what is
/// gone; reads from the first kept LSN work.
#[test]
fn reads_from_before_retention_say_the_history_is_gone() {
    use std::time::Duration;
    use waymark_kernel::{At, WatchFilter, Watched};
    let engine =
        Engine::open_with(Arc::new(SimDisk::new(9)), "/state", removing_retention()).unwrap();
    let k = Kernel::on_engine(engine.clone(), "test-worker");
    let t1 = ti("ocr", 1);
    let ctx = k.context(t1.clone());
    ctx.set("first", b"gone from the log").unwrap();
    while engine.stats().segments_created < 2 {
        ctx.set("filler", vec![7u8; 500]).unwrap();
    }
    engine.snapshot().unwrap();
    let first = engine.reader().segments().unwrap()[0].0;
    assert!(
        first > waymark_engine::Lsn(1),
        "retention removed a segment"
    );
    // The views still hold what the removed segment wrote.
    assert_eq!(
        ctx.get("first").unwrap(),
        Some(b"gone from the log".to_vec())
    );
    let removed = |r: Result<(), Error>| {
        assert!(
            matches!(r, Err(Error::HistoryRemoved { from: 1, first: f }) if f == first.0),
            "{r:?}"
        );
    };
    removed(k.events_between(i64::MIN, i64::MAX).map(|_| ()));
    removed(
        k.run_as_of(t1.run_ref(), At::Lsn(waymark_engine::Lsn(u64::MAX)))
            .map(|_| ()),
    );
    let watch = k
        .watch(WatchFilter::default(), waymark_engine::Lsn(1), 8)
        .unwrap();
    match watch.receiver().recv_timeout(Duration::from_secs(5)) {
        Ok(Watched::Failed { error }) => assert!(
            matches!(*error, Error::HistoryRemoved { from: 1, .. }),
            "{error}"
        ),
        other => panic!("expected the watch to fail, got {other:?}"),
    }
    assert!(
        watch
            .receiver()
            .recv_timeout(Duration::from_secs(1))
            .is_err(),
        "a failed watch stops"
    );
    // From the first kept LSN on, the log is whole.
    let kept = k.watch(WatchFilter::default(), first, 8).unwrap();
    match kept.receiver().recv_timeout(Duration::from_secs(5)) {
        Ok(Watched::Event(e)) => assert_eq!(e.lsn, first),
        other => panic!("expected the first kept event, got {other:?}"),
    }
}

/// The same with no frame left at all: a crash lost the batch that rolled
/// the log into its newest segment, after retention removed the segments
/// before it. The log is one empty segment, and history from LSN 1 is
/// still gone, not empty.
#[test]
fn history_from_a_log_with_no_frame_left_is_removed_not_empty() {
    use waymark_engine::storage::Damage;
    let options = Options {
        durability: waymark_engine::Durability::None,
        ..removing_retention()
    };
    let disk = SimDisk::new(12);
    let engine = Engine::open_with(Arc::new(disk.clone()), "/state", options.clone()).unwrap();
    let ctx = Kernel::on_engine(engine.clone(), "test-worker").context(ti("ocr", 1));
    loop {
        let segments = engine.stats().segments_created;
        engine.snapshot().unwrap();
        ctx.set("page", vec![7u8; 500]).unwrap();
        if engine.stats().segments_created > segments {
            break;
        }
    }
    // The crash loses the unsynced batch in the new segment.
    let disk = disk.reboot(Damage::DropAll);
    drop((ctx, engine));
    let engine = Engine::open_with(Arc::new(disk), "/state", options).unwrap();
    engine.snapshot().unwrap(); // retention removes the first segment
    let k = Kernel::on_engine(engine, "test-worker");
    let r = k.events_between(i64::MIN, i64::MAX);
    assert!(
        matches!(r, Err(Error::HistoryRemoved { from: 1, .. })),
        "{r:?}"
    );
}
