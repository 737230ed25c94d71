//! Guards the views through crashes: a worker appends random batches of
//! puts, deletes, task clears, status changes, shared variables,
//! checkpoints, restores and run purges, with snapshots into redb at random
//! points; the simulated disk crashes at a random storage operation (in an
//! append, in a snapshot's redb transaction, in recovery) with a random
//! damage. After reopening:
//! - the directory opens (no crash leaves it unopenable);
//! - every batch acknowledged under `Sync` is in the log, in order;
//! - the views equal a model fed exactly the batches the log holds: none
//!   partly, none twice, nothing from a lost batch;
//! - reopening again changes nothing.
//!
//! Log and redb share the simulated disk (redb's `StorageBackend` runs on
//! the engine's storage). Explicit snapshots run on the writing thread, so a
//! case replays exactly from its seed; one case in four also lets the
//! background snapshotter run, which adds thread interleavings.
//! `WAYMARK_PROPTEST_CASES` raises the case count.

use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use waymark_engine::storage::{Damage, SimDisk, Storage};
use waymark_engine::{Durability, Engine, Event, LogReader, Lsn, Options, SnapshotOptions};
use waymark_tests::model::{Model, Universe, event};
use waymark_tests::proptest_cases;

const DIR: &str = "/state";

#[derive(Clone, Debug)]
struct Scenario {
    seed: u64,
    batches: Vec<Vec<Event>>,
    durability: Durability,
    /// Snapshot after every this many batches (0: never explicitly).
    snapshot_every: usize,
    /// Let the background snapshotter run at a small threshold.
    background: bool,
    segment_bytes_max: u64,
    crash_after_ops: u64,
    damage: Damage,
    crash_in_recovery: Option<(u64, Damage)>,
}

fn scenario() -> impl Strategy<Value = Scenario> {
    let universe = Universe::default();
    (
        any::<u64>(),
        proptest::collection::vec(proptest::collection::vec(event(&universe), 1..4), 1..40),
        prop_oneof![
            4 => Just(Durability::Sync),
            1 => Just(Durability::None),
        ],
        0..6usize,
        proptest::bool::weighted(0.25),
        prop_oneof![Just(4096u64), Just(1 << 16)],
        0..1500u64,
        proptest::sample::select(Damage::ALL.to_vec()),
        proptest::option::of((0..200u64, proptest::sample::select(Damage::ALL.to_vec()))),
    )
        .prop_map(
            |(
                seed,
                batches,
                durability,
                snapshot_every,
                background,
                segment_bytes_max,
                crash_after_ops,
                damage,
                crash_in_recovery,
            )| Scenario {
                seed,
                batches,
                durability,
                snapshot_every,
                background,
                segment_bytes_max,
                crash_after_ops,
                damage,
                crash_in_recovery,
            },
        )
}

fn options(s: &Scenario) -> Options {
    Options {
        durability: s.durability,
        segment_bytes_max: s.segment_bytes_max,
        snapshots: if s.background {
            SnapshotOptions {
                every_events: 7,
                ..SnapshotOptions::default()
            }
        } else {
            SnapshotOptions {
                every_events: u64::MAX,
                every_bytes: u64::MAX - 1,
                memtable_bytes_max: u64::MAX,
                interval: Duration::from_secs(3600),
                ..SnapshotOptions::default()
            }
        },
        ..Options::default()
    }
}

/// Appends until the batches run out or the disk crashes; returns how many
/// batches were acknowledged.
fn write_until_crash(s: &Scenario, disk: &SimDisk) -> usize {
    disk.crash_after_ops(s.crash_after_ops);
    let Ok(engine) = Engine::open_with(Arc::new(disk.clone()), DIR, options(s)) else {
        return 0; // The crash came during the first open.
    };
    let mut acked = 0;
    for (i, batch) in s.batches.iter().enumerate() {
        if engine.append(batch.clone()).is_err() {
            break;
        }
        acked += 1;
        if s.snapshot_every > 0 && i % s.snapshot_every == 0 && engine.snapshot().is_err() {
            break;
        }
    }
    acked
}

fn read_log(storage: Arc<dyn Storage>) -> Result<Vec<(Lsn, Vec<Event>)>, String> {
    let reader = LogReader::open_on(storage, DIR).map_err(|e| e.to_string())?;
    let mut cursor = reader.cursor(Lsn(1));
    let mut out = Vec::new();
    while let Some(frame) = cursor.next_frame().map_err(|e| e.to_string())? {
        out.push((frame.lsn(), frame.decode().map_err(|e| e.to_string())?));
    }
    Ok(out)
}

fn check(s: &Scenario) -> Result<(), TestCaseError> {
    let universe = Universe::default();
    let disk = SimDisk::new(s.seed);
    let acked = write_until_crash(s, &disk);
    let mut disk = disk.reboot(s.damage);
    if let Some((ops, damage)) = s.crash_in_recovery {
        disk.crash_after_ops(ops);
        let _ = Engine::open_with(Arc::new(disk.clone()), DIR, options(s));
        disk = disk.reboot(damage);
    }
    let storage: Arc<dyn Storage> = Arc::new(disk.clone());
    for round in ["reopen", "second reopen"] {
        let engine = Engine::open_with(Arc::clone(&storage), DIR, options(s))
            .map_err(|e| TestCaseError::fail(format!("{round} after crash failed: {e}")))?;
        let views = engine.views();
        let log = read_log(Arc::clone(&storage)).map_err(TestCaseError::fail)?;
        if s.durability == Durability::Sync {
            prop_assert!(
                log.len() >= acked,
                "{round}: {} acknowledged batches, {} in the log",
                acked,
                log.len()
            );
        }
        let mut model = Model::default();
        for (i, (lsn, events)) in log.iter().enumerate() {
            prop_assert_eq!(*lsn, Lsn(i as u64 + 1));
            prop_assert_eq!(events, &s.batches[i], "{}: batch {} differs", round, i);
            for e in events {
                model.apply(e);
            }
        }
        model
            .check(&views, &universe)
            .map_err(|e| TestCaseError::fail(format!("{round}: {e}")))?;
        prop_assert_eq!(views.visible_lsn(), Lsn(log.len() as u64));
        drop(engine);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(proptest_cases(128)))]

    #[test]
    fn views_survive_any_crash(s in scenario()) {
        check(&s)?;
    }
}
