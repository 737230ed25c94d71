//! Guards what concurrent readers rely on: while writers append and the
//! snapshotter moves memtables into redb, a reader on any thread never sees
//! a value older than one it already saw for the same key (no going back in
//! time across memtable → frozen → redb), and a writer always reads its own
//! write once `append` has returned (read-your-writes).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use waymark_engine::storage::{SimDisk, Storage};
use waymark_engine::{
    AttemptScope, Engine, Event, EventBody, Options, RunScope, SnapshotOptions, TaskScope,
};

const WRITERS: u32 = 3;
const READERS: u32 = 4;
const KEYS: u32 = 8;
const ROUNDS: u64 = 3000;

fn attempt(writer: u32) -> AttemptScope {
    AttemptScope {
        task: TaskScope {
            run: RunScope {
                tenant: "acme".into(),
                dag: "docs".into(),
                run: "r1".into(),
            },
            task: format!("writer-{writer}"),
        },
        try_number: 1,
    }
}

#[test]
fn readers_never_go_back_in_time_during_writes_and_snapshots() {
    let storage: Arc<dyn Storage> = Arc::new(SimDisk::new(7));
    let options = Options {
        segment_bytes_max: 1 << 16,
        snapshots: SnapshotOptions {
            every_events: 40,
            ..SnapshotOptions::default()
        },
        ..Options::default()
    };
    let engine = Engine::open_with(storage, "/state", options).unwrap();
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        let mut writers = Vec::new();
        for w in 0..WRITERS {
            let engine = engine.clone();
            writers.push(s.spawn(move || {
                let views = engine.views();
                for round in 1..=ROUNDS {
                    let key = format!("k{}", round % u64::from(KEYS));
                    engine
                        .append(vec![Event::now(EventBody::Put {
                            attempt: attempt(w),
                            key: key.clone(),
                            value: round.to_be_bytes().to_vec(),
                            meta: Vec::new(),
                        })])
                        .unwrap();
                    let seen = views.get(&attempt(w), &key).unwrap().expect("own write");
                    let seen = u64::from_be_bytes(seen.value.try_into().unwrap());
                    assert!(
                        seen >= round,
                        "writer {w} wrote {round} to {key} and read {seen}"
                    );
                }
            }));
        }
        for r in 0..READERS {
            let engine = engine.clone();
            let done = &done;
            s.spawn(move || {
                let views = engine.views();
                let mut last: HashMap<(u32, u32), u64> = HashMap::new();
                let mut reads = 0u64;
                while !done.load(Ordering::Acquire) || reads == 0 {
                    for w in 0..WRITERS {
                        for k in 0..KEYS {
                            let Some(v) = views.get(&attempt(w), &format!("k{k}")).unwrap() else {
                                continue;
                            };
                            let v = u64::from_be_bytes(v.value.try_into().unwrap());
                            let prev = last.insert((w, k), v).unwrap_or(0);
                            assert!(
                                v >= prev,
                                "reader {r}: writer {w} key k{k} went back from {prev} to {v}"
                            );
                            reads += 1;
                        }
                    }
                }
            });
        }
        for w in writers {
            w.join().unwrap();
        }
        done.store(true, Ordering::Release);
    });
    let stats = engine.stats();
    assert!(
        stats.snapshots > 0,
        "snapshots ran during the test: {stats:?}"
    );
    assert_eq!(stats.snapshot_error, None);
}
