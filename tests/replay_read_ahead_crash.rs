//! Guards the read-ahead path of long scans across crashes, which the
//! other crash properties never take (the simulated disk reads ahead only
//! when told): a log of 1,500 batches of 2 KiB in one 8 MiB segment (past
//! the cursor's own window: the helper reads them) is crashed at
//! points through the run with every damage; the rebooted disk reads
//! ahead; the reopen (whose replay of every frame goes through a
//! read-ahead cursor, snapshots being off) must hold every acknowledged
//! batch in its views, and a read-ahead scan of the log must hand out
//! exactly the frames a plain scan does.

use std::sync::Arc;

use waymark_engine::storage::{Damage, SimDisk, Storage};
use waymark_engine::{
    Engine, Event, EventBody, LogReader, Lsn, Options, RunScope, SnapshotOptions,
};

const SEED: u64 = 0x2ead;
const BATCHES: u32 = 1_500;

fn run() -> RunScope {
    RunScope {
        tenant: "acme".into(),
        dag: "docs".into(),
        run: "r".into(),
    }
}

/// Batch `i`: one shared variable of 2 KiB.
fn batch(i: u32) -> Vec<Event> {
    vec![Event {
        ts_micros: i64::from(i),
        body: EventBody::SharedPut {
            codec: waymark_engine::Codec::Raw,
            run: run(),
            key: format!("b{i}"),
            value: vec![(i % 251) as u8; 2048],
            immutable: false,
        },
    }]
}

fn options() -> Options {
    Options {
        segment_bytes_max: 8 << 20,
        snapshots: SnapshotOptions {
            enabled: false,
            ..SnapshotOptions::default()
        },
        ..Options::default()
    }
}

/// Appends until done or crashed; returns the acknowledged indexes.
fn write(disk: &SimDisk) -> Vec<u32> {
    let Ok(engine) = Engine::open_with(Arc::new(disk.clone()), "/state", options()) else {
        return Vec::new();
    };
    (0..BATCHES)
        .map_while(|i| engine.append(batch(i)).ok().map(|_| i))
        .collect()
}

fn frames(storage: Arc<dyn Storage>, read_ahead: bool) -> (Vec<(Lsn, usize)>, u64) {
    let reader = LogReader::open_on(storage, "/state")
        .unwrap()
        .with_read_ahead(read_ahead);
    let mut cursor = reader.cursor(Lsn(1));
    let mut out = Vec::new();
    while let Some(frame) = cursor.next_frame().unwrap() {
        out.push((frame.lsn(), frame.payload_len()));
    }
    (out, cursor.frames_read_ahead())
}

#[test]
fn replays_through_read_ahead_keep_every_acknowledged_batch() {
    let dry = SimDisk::new(SEED);
    write(&dry);
    let ops = dry.ops();
    let mut read_ahead_frames = 0;
    for per_mille in [450u64, 700, 950] {
        for damage in Damage::ALL {
            let disk = SimDisk::new(SEED);
            disk.crash_after_ops(ops * per_mille / 1000);
            let acked = write(&disk);
            assert!(acked.len() > 300, "crash at {per_mille}‰: too early");
            let after = disk.reboot(damage);
            after.set_read_ahead(true);
            let storage: Arc<dyn Storage> = Arc::new(after.clone());
            let engine = Engine::open_with(Arc::clone(&storage), "/state", options())
                .unwrap_or_else(|e| panic!("{per_mille}‰ {damage:?}: reopen: {e}"));
            let views = engine.views();
            for i in &acked {
                let got = views.shared(&run(), &format!("b{i}")).unwrap();
                assert_eq!(
                    got.map(|v| v.value),
                    Some(vec![(i % 251) as u8; 2048]),
                    "{per_mille}‰ {damage:?}: batch {i} lost"
                );
            }
            drop(engine);
            let (plain, none) = frames(Arc::clone(&storage), false);
            let (ahead, used) = frames(storage, true);
            assert_eq!(none, 0);
            assert_eq!(plain, ahead, "{per_mille}‰ {damage:?}: the scans differ");
            read_ahead_frames += used;
        }
    }
    assert!(
        read_ahead_frames > 1_000,
        "read-ahead served {read_ahead_frames} frames"
    );
}
