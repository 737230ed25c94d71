//! Guards the log's promises across crashes, on the simulated disk:
//! - every batch acknowledged under `Sync` is present after a crash, at its
//!   LSN, with its exact content;
//! - no batch is ever partly present, and none appears twice;
//! - LSNs run 1, 2, 3, ... with no gap, and each writer's batches appear in
//!   the order it wrote them (the log is a prefix of what was written);
//! - a crash during recovery changes nothing (recovery is idempotent), and
//!   the recovered log accepts appends at the next LSN.
//!
//! - after a failed append (an injected I/O fault or a full disk), every
//!   later append fails too (fail-stop).
//!
//! How: several threads append random batches under a random durability
//! mode and segment size while the disk crashes at a random point of the run
//! (a fraction of the operations a dry run of the same case counts) with a
//! random damage (every kind `SimDisk` has); some cases also fail one chosen
//! storage operation or fill the disk first; sometimes the disk crashes
//! again during recovery. Each case prints its scenario on failure; the seed
//! drives every choice of the disk, and with one writer thread under `Sync`
//! or `None` a case replays exactly (`Periodic` syncs by the clock).
//! `WAYMARK_PROPTEST_CASES` raises the number of cases.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use waymark_engine::storage::{Damage, LockGuard, OpKind, OpenMode, SimDisk, Storage, StorageFile};
use waymark_engine::{Durability, Engine, Error, LogReader, Lsn, Options};
use waymark_tests::{CrashAt, Crashed, batch, batch_origin, crash_property, proptest_cases};

const DIR: &str = "/state";

#[derive(Clone, Debug)]
struct Scenario {
    seed: u64,
    writers: u32,
    batches_per_writer: u32,
    durability: Durability,
    segment_bytes_max: u64,
    preallocate: bool,
    crash_at: CrashAt,
    damage: Damage,
    crash_in_recovery: Option<(u64, Damage)>,
    /// The `n`-th operation of this kind fails.
    fault: Option<(OpKind, u64)>,
    /// The disk holds this many bytes.
    capacity: Option<u64>,
}

/// Storage operations a fault may hit while the log is written.
const FAULTS: [OpKind; 8] = [
    OpKind::Write,
    OpKind::Sync,
    OpKind::SyncDir,
    OpKind::Create,
    OpKind::SetLen,
    OpKind::Read,
    OpKind::Open,
    OpKind::List,
];

fn scenario() -> impl Strategy<Value = Scenario> {
    (
        any::<u64>(),
        1..=4u32,
        1..=30u32,
        prop_oneof![
            3 => Just(Durability::Sync),
            1 => Just(Durability::Periodic(Duration::from_millis(1))),
            1 => Just(Durability::None),
        ],
        prop_oneof![Just(4096u64), Just(16384), Just(1 << 20)],
        any::<bool>(),
        CrashAt::strategy(),
        proptest::sample::select(Damage::ALL.to_vec()),
        proptest::option::of((0..80u64, proptest::sample::select(Damage::ALL.to_vec()))),
        proptest::option::weighted(0.25, (proptest::sample::select(FAULTS.to_vec()), 1..40u64)),
        proptest::option::weighted(0.1, 20_000..400_000u64),
    )
        .prop_map(
            |(
                seed,
                writers,
                batches_per_writer,
                durability,
                segment_bytes_max,
                preallocate,
                crash_at,
                damage,
                crash_in_recovery,
                fault,
                capacity,
            )| {
                Scenario {
                    seed,
                    writers,
                    batches_per_writer,
                    durability,
                    segment_bytes_max,
                    preallocate,
                    crash_at,
                    damage,
                    crash_in_recovery,
                    fault,
                    capacity,
                }
            },
        )
}

struct Ack {
    writer: u32,
    index: u32,
    lsn: Lsn,
}

/// Runs the writers until they finish, fail or the disk crashes (before
/// operation `crash_after_ops`, if given); returns the acks and the disk's
/// operations when the open returned, or what broke fail-stop.
fn write_until_crash(
    s: &Scenario,
    disk: &SimDisk,
    options: &Options,
    crash_after_ops: Option<u64>,
) -> Result<(Vec<Ack>, u64), String> {
    let storage: Arc<dyn Storage> = Arc::new(disk.clone());
    if let Some(ops) = crash_after_ops {
        disk.crash_after_ops(ops);
    }
    if let Some((kind, n)) = s.fault {
        disk.fail_nth(kind, n);
    }
    disk.set_capacity(s.capacity);
    let engine = match Engine::open_with(storage, DIR, options.clone()) {
        Ok(engine) => engine,
        // The crash came during the first open: nothing was acknowledged.
        Err(_) => return Ok((Vec::new(), disk.ops())),
    };
    let opened = disk.ops();
    // When the first append failed, on any thread: fail-stop means no
    // append started after it is acknowledged, on any thread.
    let first_failure: std::sync::Mutex<Option<std::time::Instant>> = Default::default();
    let acks = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..s.writers)
            .map(|writer| {
                let engine = engine.clone();
                let first_failure = &first_failure;
                scope.spawn(move || {
                    let mut acks = Vec::new();
                    for index in 0..s.batches_per_writer {
                        let started = std::time::Instant::now();
                        match engine.append(batch(s.seed, writer, index)) {
                            Ok(lsn) => {
                                let failed = *first_failure.lock().unwrap();
                                if failed.is_some_and(|at| started > at) {
                                    return Err(format!(
                                        "writer {writer}'s append started after another thread's failed, and was acknowledged at {lsn}"
                                    ));
                                }
                                acks.push(Ack { writer, index, lsn });
                            }
                            Err(e) => {
                                first_failure
                                    .lock()
                                    .unwrap()
                                    .get_or_insert_with(std::time::Instant::now);
                                // Fail-stop: nothing is acknowledged after a
                                // failure (the batch would be a new one).
                                if let Ok(lsn) = engine.append(batch(s.seed, writer + 100, index)) {
                                    return Err(format!(
                                        "an append succeeded at {lsn} after one failed with: {e}"
                                    ));
                                }
                                break;
                            }
                        }
                    }
                    Ok(acks)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("writer threads do not panic"))
            .collect::<Result<Vec<_>, String>>()
    });
    drop(engine);
    Ok((acks?.into_iter().flatten().collect(), opened))
}

/// Every frame of the log, decoded, in order.
fn read_log(storage: Arc<dyn Storage>) -> Result<Vec<(Lsn, Vec<waymark_engine::Event>)>, Error> {
    let reader = LogReader::open_on(storage, DIR)?;
    let mut cursor = reader.cursor(Lsn(1));
    let mut out = Vec::new();
    while let Some(frame) = cursor.next_frame()? {
        out.push((frame.lsn(), frame.decode()?));
    }
    Ok(out)
}

fn check(s: &Scenario) -> Result<Crashed, TestCaseError> {
    let options = Options {
        durability: s.durability,
        segment_bytes_max: s.segment_bytes_max,
        preallocate: s.preallocate,
        ..Options::default()
    };
    let crash_after_ops = s.crash_at.ops(|| {
        let dry = SimDisk::new(s.seed);
        let (_, opened) = write_until_crash(s, &dry, &options, None)
            .map_err(|e| TestCaseError::fail(format!("dry run: {e}")))?;
        Ok::<_, TestCaseError>((opened, dry.ops()))
    })?;
    let disk = SimDisk::new(s.seed);
    let (acks, _) =
        write_until_crash(s, &disk, &options, crash_after_ops).map_err(TestCaseError::fail)?;
    let crashed = if disk.has_crashed() && !acks.is_empty() {
        Crashed::WithAcks
    } else {
        Crashed::Otherwise
    };
    let mut disk = disk.reboot(s.damage);
    if let Some((ops, damage)) = s.crash_in_recovery {
        disk.crash_after_ops(ops);
        let _ = Engine::open_with(Arc::new(disk.clone()), DIR, options.clone());
        disk = disk.reboot(damage);
    }
    let storage: Arc<dyn Storage> = Arc::new(disk.clone());
    let engine = Engine::open_with(Arc::clone(&storage), DIR, options.clone())
        .map_err(|e| TestCaseError::fail(format!("reopen after crash failed: {e}")))?;
    let report = engine.recovery_report().clone();
    drop(engine);

    let log =
        read_log(Arc::clone(&storage)).map_err(|e| TestCaseError::fail(format!("read: {e}")))?;
    let mut found: HashMap<(u32, u32), Lsn> = HashMap::new();
    for (i, (lsn, events)) in log.iter().enumerate() {
        prop_assert_eq!(
            lsn.0,
            i as u64 + 1,
            "LSNs must run 1, 2, 3, ... with no gap"
        );
        let origin = batch_origin(events)
            .ok_or_else(|| TestCaseError::fail(format!("unknown batch at {lsn}")))?;
        prop_assert_eq!(
            events,
            &batch(s.seed, origin.0, origin.1),
            "batch at LSN {} is not exactly what writer {} wrote as #{}",
            lsn,
            origin.0,
            origin.1
        );
        prop_assert!(
            found.insert(origin, *lsn).is_none(),
            "batch {:?} appears twice",
            origin
        );
    }
    prop_assert_eq!(report.last_lsn.map_or(0, |l| l.0), log.len() as u64);
    // Each writer's batches are a prefix of what it wrote, in order.
    let mut per_writer: BTreeMap<u32, Vec<(u32, Lsn)>> = BTreeMap::new();
    for (&(w, i), &lsn) in &found {
        per_writer.entry(w).or_default().push((i, lsn));
    }
    for (w, mut batches) in per_writer {
        batches.sort();
        for (k, (i, lsn)) in batches.iter().enumerate() {
            prop_assert_eq!(
                *i,
                k as u32,
                "writer {} has batch {} without the ones before",
                w,
                i
            );
            if k > 0 {
                prop_assert!(
                    *lsn > batches[k - 1].1,
                    "writer {}'s batches out of order",
                    w
                );
            }
        }
    }
    for ack in &acks {
        let at = found.get(&(ack.writer, ack.index));
        if s.durability == Durability::Sync {
            prop_assert_eq!(
                at,
                Some(&ack.lsn),
                "acknowledged batch w{}/b{} (LSN {}) lost",
                ack.writer,
                ack.index,
                ack.lsn
            );
        } else if let Some(at) = at {
            prop_assert_eq!(*at, ack.lsn, "batch w{}/b{} moved", ack.writer, ack.index);
        }
    }

    // The recovered log takes the next LSN, and stays recovered.
    let engine = Engine::open_with(Arc::clone(&storage), DIR, options.clone())
        .map_err(|e| TestCaseError::fail(format!("second reopen failed: {e}")))?;
    prop_assert!(
        engine.recovery_report().torn_tail.is_none(),
        "recovery is not idempotent"
    );
    let next = engine
        .append(batch(s.seed, 99, 0))
        .map_err(|e| TestCaseError::fail(format!("append after recovery: {e}")))?;
    prop_assert_eq!(next.0, log.len() as u64 + 1);
    Ok(crashed)
}

#[test]
fn acknowledged_batches_survive_any_crash() {
    crash_property(
        "log crash property",
        file!(),
        proptest_cases(64),
        scenario(),
        0.6,
        |s| check(&s),
    );
}

/// A fixed set of scenarios that hit each damage with a crash at points
/// through the writers' run (fractions of the operations a dry run
/// makes, so that each lands mid-run: asserted), so every CI run covers
/// them whatever proptest draws.
#[test]
fn every_damage_at_several_crash_points() {
    for (d, damage) in Damage::ALL.into_iter().enumerate() {
        for per_mille in [100, 300, 500, 700] {
            let s = Scenario {
                seed: 1000 + d as u64 * 7 + per_mille,
                writers: 3,
                batches_per_writer: 25,
                durability: Durability::Sync,
                segment_bytes_max: 4096,
                preallocate: d % 2 == 0,
                crash_at: CrashAt::PerMille(per_mille),
                damage,
                crash_in_recovery: (per_mille == 500).then_some((10, Damage::Random)),
                fault: None,
                capacity: None,
            };
            // Three writers and the snapshotter race, so a run makes a
            // different number of operations from its dry run: one that
            // ended before its crash point (checked all the same, as a
            // clean close) is tried again with a fresh dry run. A case
            // that never lands mid-run in five tries fails.
            let landed = (0..5).any(|_| match check(&s) {
                Ok(crashed) => crashed == Crashed::WithAcks,
                Err(e) => panic!("{s:?}: {e}"),
            });
            assert!(landed, "{s:?}: did not crash mid-run in five tries");
        }
    }
}

/// The failure `log_crash_property.proptest-regressions` recorded, pinned:
/// the saved seed replays a different case since the scenario gained
/// fields (proptest saves its random seed, not the values).
#[test]
fn recorded_failure_crash_at_73_then_in_recovery() {
    let s = Scenario {
        seed: 14877340034605003236,
        writers: 2,
        batches_per_writer: 20,
        durability: Durability::Sync,
        segment_bytes_max: 4096,
        preallocate: true,
        crash_at: CrashAt::Op(73),
        damage: Damage::DropAll,
        crash_in_recovery: Some((50, Damage::TornLastWrite)),
        fault: None,
        capacity: None,
    };
    if let Err(e) = check(&s) {
        panic!("{s:?}: {e}");
    }
}

/// `Periodic(interval)`'s loss window, checked: the timer syncs what was
/// acknowledged (the engine's durable LSN reaches the last acknowledged
/// batch with no further write: waited for, with a bound no loaded machine
/// reaches), and a power cut that drops everything unsynced keeps every
/// batch up to the durable LSN it reported; of the batches after it, what
/// survives is a prefix. (A `Sync` write is checked by the property above;
/// `None` promises nothing but a prefix.)
#[test]
fn a_periodic_write_older_than_its_interval_survives_a_power_cut() {
    for round in 0..4u64 {
        let disk = SimDisk::new(round);
        let options = Options {
            durability: Durability::Periodic(Duration::from_millis(10)),
            ..Options::default()
        };
        let engine = Engine::open_with(Arc::new(disk.clone()), DIR, options.clone()).unwrap();
        let old: Vec<Lsn> = (0..5)
            .map(|i| engine.append(batch(round, 0, i)).unwrap())
            .collect();
        let last_old = *old.last().expect("five batches");
        let waited = std::time::Instant::now();
        while engine.durable_lsn() < last_old {
            assert!(
                waited.elapsed() < Duration::from_secs(60),
                "round {round}: the 10 ms timer never synced LSN {last_old}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let recent: Vec<Lsn> = (5..10)
            .map(|i| engine.append(batch(round, 0, i)).unwrap())
            .collect();
        let durable = engine.durable_lsn();
        let disk = disk.reboot(Damage::DropAll);
        drop(engine);
        let storage: Arc<dyn Storage> = Arc::new(disk);
        let log = read_log(storage).unwrap();
        let lsns: Vec<Lsn> = log.iter().map(|(lsn, _)| *lsn).collect();
        for lsn in old.iter().chain(&recent).filter(|l| **l <= durable) {
            assert!(
                lsns.contains(lsn),
                "round {round}: LSN {lsn}, synced (durable LSN {durable}), lost"
            );
        }
        // What survived of the recent ones is a prefix of them.
        let kept: Vec<&Lsn> = recent.iter().filter(|l| lsns.contains(l)).collect();
        assert_eq!(
            kept,
            recent.iter().take(kept.len()).collect::<Vec<_>>(),
            "round {round}: the loss is not a suffix"
        );
    }
}

/// A disk whose `fdatasync` does nothing: the bug a power cut catches and
/// a killed process cannot (its page cache survives).
#[derive(Debug)]
struct NoSync(SimDisk);

#[derive(Debug)]
struct NoSyncFile(Arc<dyn StorageFile>);

impl StorageFile for NoSyncFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        self.0.read_at(buf, offset)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        self.0.write_all_at(buf, offset)
    }
    fn len(&self) -> std::io::Result<u64> {
        self.0.len()
    }
    fn set_len(&self, len_bytes: u64) -> std::io::Result<()> {
        self.0.set_len(len_bytes)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Storage for NoSync {
    fn open(
        &self,
        path: &std::path::Path,
        mode: OpenMode,
    ) -> std::io::Result<Arc<dyn StorageFile>> {
        Ok(Arc::new(NoSyncFile(self.0.open(path, mode)?)))
    }
    fn create_dir_all(&self, path: &std::path::Path) -> std::io::Result<()> {
        self.0.create_dir_all(path)
    }
    fn list_dir(&self, path: &std::path::Path) -> std::io::Result<Vec<String>> {
        self.0.list_dir(path)
    }
    fn exists(&self, path: &std::path::Path) -> std::io::Result<bool> {
        self.0.exists(path)
    }
    fn remove_file(&self, path: &std::path::Path) -> std::io::Result<()> {
        self.0.remove_file(path)
    }
    fn rename(&self, from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
        self.0.rename(from, to)
    }
    fn sync_dir(&self, path: &std::path::Path) -> std::io::Result<()> {
        self.0.sync_dir(path)
    }
    fn lock(&self, path: &std::path::Path) -> std::io::Result<LockGuard> {
        self.0.lock(path)
    }
    fn new_log_id(&self) -> u128 {
        self.0.new_log_id()
    }
}

/// The property's check has teeth: the same `Sync` workload, crashed
/// after its last acknowledgement with `DropAll` (a power cut), loses
/// acknowledged batches when `fdatasync` is skipped, and none when it is
/// not. (The SIGKILL test on real files cannot catch this.)
#[test]
fn a_power_cut_catches_a_missing_fsync() {
    let lost = |skip_sync: bool| {
        let disk = SimDisk::new(11);
        let storage: Arc<dyn Storage> = if skip_sync {
            Arc::new(NoSync(disk.clone()))
        } else {
            Arc::new(disk.clone())
        };
        let engine = Engine::open_with(storage, DIR, Options::default()).unwrap();
        let acked: Vec<Lsn> = (0..20)
            .map(|i| engine.append(batch(11, 0, i)).unwrap())
            .collect();
        let disk = disk.reboot(Damage::DropAll);
        drop(engine);
        let lsns: Vec<Lsn> = match read_log(Arc::new(disk)) {
            Ok(log) => log.iter().map(|(lsn, _)| *lsn).collect(),
            // No segment header survived: nothing did.
            Err(_) => Vec::new(),
        };
        acked.iter().filter(|l| !lsns.contains(l)).count()
    };
    assert_eq!(
        lost(false),
        0,
        "with fdatasync, a power cut loses nothing acknowledged"
    );
    assert!(
        lost(true) > 0,
        "without fdatasync, a power cut must lose acknowledged batches"
    );
}
