//! Guards the views' meaning: after any sequence of puts, deletes, task
//! clears, task and run status changes, shared variables, checkpoints,
//! restores and run purges, every read of the views equals an independent
//! model fed the same events, both while the engine runs and after it is
//! reopened (views rebuilt from the log).
//!
//! Names are drawn from a small universe crafted to collide if the key
//! encoding let them. `WAYMARK_PROPTEST_CASES` raises the case count.

use std::sync::Arc;

use proptest::prelude::*;
use waymark_engine::storage::{SimDisk, Storage};
use waymark_engine::{Engine, Event, Lsn, Options, SnapshotOptions};
use waymark_tests::model::{Model, Universe, event};
use waymark_tests::proptest_cases;

const DIR: &str = "/state";

/// Small segments: the simulated disk keeps every byte of a preallocated
/// segment in memory, twice (written and synced).
fn options(snapshot_every_events: u64) -> Options {
    Options {
        segment_bytes_max: 64 << 10,
        snapshots: SnapshotOptions {
            every_events: snapshot_every_events,
            ..SnapshotOptions::default()
        },
        ..Options::default()
    }
}

fn batches() -> impl Strategy<Value = Vec<Vec<Event>>> {
    let universe = Universe::default();
    proptest::collection::vec(proptest::collection::vec(event(&universe), 1..4), 1..40)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(proptest_cases(256)))]

    #[test]
    fn views_equal_the_model(
        batches in batches(),
        seed in any::<u64>(),
        every_events in prop_oneof![Just(16_384u64), 1..30u64],
        snapshot_every_batches in 0..8usize,
    ) {
        let universe = Universe::default();
        let disk = SimDisk::new(seed);
        let storage: Arc<dyn Storage> = Arc::new(disk.clone());
        let engine = Engine::open_with(Arc::clone(&storage), DIR, options(every_events)).unwrap();
        let mut model = Model::default();
        for (i, batch) in batches.iter().enumerate() {
            engine.append(batch.clone()).unwrap();
            for e in batch {
                model.apply(e);
            }
            if snapshot_every_batches > 0 && i % snapshot_every_batches == 0 {
                engine.snapshot().unwrap();
            }
            if i % 8 == 0 {
                model.check(&engine.views(), &universe).map_err(|e| TestCaseError::fail(format!("after batch {i}: {e}")))?;
            }
        }
        model.check(&engine.views(), &universe).map_err(TestCaseError::fail)?;
        let applied = engine.stats().applied_lsn;
        drop(engine);
        let engine = Engine::open_with(Arc::clone(&storage), DIR, options(every_events)).unwrap();
        // The snapshotter may have run again between the stats and the close.
        prop_assert!(engine.stats().replayed_from > applied, "replay starts after the snapshot");
        model
            .check(&engine.views(), &universe)
            .map_err(|e| TestCaseError::fail(format!("after reopen: {e}")))?;
        // Views built by snapshot + tail equal views built from LSN 1.
        drop(engine);
        storage.remove_file(std::path::Path::new("/state/views.redb")).unwrap();
        let engine = Engine::open_with(storage, DIR, options(every_events)).unwrap();
        prop_assert_eq!(engine.stats().replayed_from, Lsn(1));
        prop_assert!(engine.stats().views_rebuilt.is_some(), "the rebuild is reported");
        model
            .check(&engine.views(), &universe)
            .map_err(|e| TestCaseError::fail(format!("after a rebuild from LSN 1: {e}")))?;
    }
}
