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

/// An engine on a simulated disk whose snapshotter runs every `events`
/// events.
fn engine_snapshotting_every(seed: u64, events: u64) -> Engine {
    let storage: Arc<dyn Storage> = Arc::new(SimDisk::new(seed));
    let options = Options {
        segment_bytes_max: 1 << 16,
        snapshots: SnapshotOptions {
            every_events: events,
            ..SnapshotOptions::default()
        },
        ..Options::default()
    };
    Engine::open_with(storage, "/state", options).unwrap()
}

/// Snapshots ran during the test, and none failed.
fn assert_snapshots_ran(engine: &Engine) {
    let stats = engine.stats();
    assert!(
        stats.snapshots > 0,
        "snapshots ran during the test: {stats:?}"
    );
    assert_eq!(stats.snapshot_error, None);
}

#[test]
fn readers_never_go_back_in_time_during_writes_and_snapshots() {
    let engine = engine_snapshotting_every(7, 40);
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
                            codec: waymark_engine::Codec::Raw,
                            attempt: std::sync::Arc::new(attempt(w)),
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
        // A writer that failed stops the readers too, so that the test
        // fails instead of waiting for them forever.
        let joined: Vec<_> = writers.into_iter().map(|w| w.join()).collect();
        done.store(true, Ordering::Release);
        for j in joined {
            if let Err(panic) = j {
                std::panic::resume_unwind(panic);
            }
        }
    });
    assert_snapshots_ran(&engine);
}

/// While writers append batches that each bump a counter and add a new
/// key, and snapshots move memtables into redb, a reader's scan of a task
/// attempt's state always holds as many new keys as the counter says:
/// never part of a batch (a scan that merged redb rows newer than its LSN
/// with older memtable values showed a key without its counter).
#[test]
fn scans_see_whole_batches_during_writes_and_snapshots() {
    const BATCHES: u64 = 1500;
    let engine = engine_snapshotting_every(8, 20);
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        let mut writers = Vec::new();
        for w in 0..WRITERS {
            let engine = engine.clone();
            writers.push(s.spawn(move || {
                for round in 1..=BATCHES {
                    let put = |key: String| {
                        Event::now(EventBody::Put {
                            codec: waymark_engine::Codec::Raw,
                            attempt: std::sync::Arc::new(attempt(w)),
                            key,
                            value: round.to_be_bytes().to_vec(),
                            meta: Vec::new(),
                        })
                    };
                    engine
                        .append(vec![put("count".into()), put(format!("item{round:06}"))])
                        .unwrap();
                }
            }));
        }
        for r in 0..READERS {
            let engine = engine.clone();
            let done = &done;
            s.spawn(move || {
                let views = engine.views();
                let mut scans = 0u64;
                while !done.load(Ordering::Acquire) || scans == 0 {
                    for w in 0..WRITERS {
                        let entries = views.attempt_entries(&attempt(w)).unwrap();
                        let count = entries
                            .iter()
                            .find(|(k, _)| k == "count")
                            .map_or(0, |(_, v)| {
                                u64::from_be_bytes(v.value.clone().try_into().unwrap())
                            });
                        let items = entries
                            .iter()
                            .filter(|(k, _)| k.starts_with("item"))
                            .count();
                        assert_eq!(
                            items as u64, count,
                            "reader {r}: writer {w} has {items} items and count {count}"
                        );
                        scans += 1;
                    }
                }
            });
        }
        // A writer that failed stops the readers too, so that the test
        // fails instead of waiting for them forever.
        let joined: Vec<_> = writers.into_iter().map(|w| w.join()).collect();
        done.store(true, Ordering::Release);
        for j in joined {
            if let Err(panic) = j {
                std::panic::resume_unwind(panic);
            }
        }
    });
    assert_snapshots_ran(&engine);
}
