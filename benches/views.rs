//! View benchmarks: point reads from the memtable (hot) and from redb
//! (cold), open time against log size with snapshots on and off, snapshot
//! throughput, and the peak RSS of an open.
//!
//! Run: `cargo bench -p waymark-benches --bench views`. BENCHMARKS.md holds
//! the figures and the targets they are held to.

use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use waymark_engine::{
    AttemptScope, Durability, Engine, Event, EventBody, Options, RunScope, SnapshotOptions,
    TaskScope,
};

/// Distinct keys in the live state of the open benchmarks.
const LIVE_KEYS: u64 = 100_000;
/// Value bytes per event.
const VALUE_BYTES: usize = 100;
/// Events per batch while building a log.
const BATCH: u64 = 100;

fn attempt(task: u64) -> AttemptScope {
    AttemptScope {
        task: TaskScope {
            run: RunScope {
                tenant: "acme".into(),
                dag: "docs".into(),
                run: "r1".into(),
            },
            task: format!("t{task}"),
        },
        try_number: 1,
    }
}

/// The `i`-th event of a built log: a put to one of [`LIVE_KEYS`] keys,
/// spread over 100 tasks.
fn event(i: u64) -> Event {
    let k = i % LIVE_KEYS;
    Event {
        ts_micros: 1_700_000_000_000_000 + i as i64,
        body: EventBody::Put {
            codec: waymark_engine::Codec::Raw,
            attempt: std::sync::Arc::new(attempt(k % 100)),
            key: format!("key-{k:08}"),
            value: vec![(i % 251) as u8; VALUE_BYTES],
            meta: Vec::new(),
        },
    }
}

/// Live state bytes after any log of at least [`LIVE_KEYS`] events: keys
/// with their scope names, and values.
fn live_state_bytes(events: u64) -> u64 {
    let keys = events.min(LIVE_KEYS);
    // tenant + dag + run + task + key names, and the value.
    keys * ("acme".len() + "docs".len() + "r1".len() + 3 + 12 + VALUE_BYTES) as u64
}

fn options(snapshots: bool) -> Options {
    Options {
        snapshots: SnapshotOptions {
            enabled: snapshots,
            ..SnapshotOptions::default()
        },
        ..Options::default()
    }
}

/// Events written after the last snapshot of a built log: half the
/// default snapshot interval, the average tail an open after a crash
/// replays. Fixed, so that opens of logs of different sizes compare.
const TAIL_EVENTS: u64 = 8_192;

/// Writes `events` events into a new state directory under `Durability::None`
/// (with snapshots on: a snapshot, then the last [`TAIL_EVENTS`] of them),
/// then drops the engine without a final snapshot, as a crash would leave
/// it (apart from the page cache).
fn build(dir: &Path, events: u64, snapshots: bool) {
    let engine = Engine::open_with(
        std::sync::Arc::new(waymark_engine::storage::FsStorage),
        dir,
        Options {
            durability: Durability::None,
            ..options(snapshots)
        },
    )
    .unwrap();
    let tail_from = if snapshots {
        events.saturating_sub(TAIL_EVENTS)
    } else {
        u64::MAX
    };
    let mut i = 0;
    let mut snapshotted = false;
    while i < events {
        if i >= tail_from && !snapshotted {
            engine.snapshot().unwrap();
            snapshotted = true;
        }
        let n = BATCH.min(events - i);
        engine.append((i..i + n).map(event).collect()).unwrap();
        i += n;
    }
    engine.flush().unwrap();
}

fn open(c: &mut Criterion) {
    let mut g = c.benchmark_group("open");
    g.sample_size(10);
    for events in [10_000u64, 100_000, 1_000_000] {
        for snapshots in [true, false] {
            let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
            build(dir.path(), events, snapshots);
            let label = if snapshots {
                "snapshots_on"
            } else {
                "snapshots_off"
            };
            let engine = Engine::open_with(
                std::sync::Arc::new(waymark_engine::storage::FsStorage),
                dir.path(),
                options(snapshots),
            )
            .unwrap();
            let s = engine.stats();
            eprintln!(
                "open/{label}/{events}: replays {} events from LSN {} (applied {}); \
                 open {:?} of which replay {:?}",
                s.replayed_events,
                s.replayed_from.0,
                s.applied_lsn.0,
                s.recovery_duration,
                s.replay_duration
            );
            drop(engine);
            g.bench_with_input(BenchmarkId::new(label, events), &events, |b, _| {
                b.iter(|| {
                    Engine::open_with(
                        std::sync::Arc::new(waymark_engine::storage::FsStorage),
                        dir.path(),
                        options(snapshots),
                    )
                    .unwrap()
                })
            });
        }
    }
    g.finish();
}

fn get(c: &mut Criterion) {
    let mut g = c.benchmark_group("get");
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let engine = Engine::open_with(
        std::sync::Arc::new(waymark_engine::storage::FsStorage),
        dir.path(),
        Options {
            durability: Durability::None,
            // Only when asked: a timed snapshot in the middle of a measurement
            // would move the "hot" keys into redb.
            snapshots: SnapshotOptions::manual(),
            ..Options::default()
        },
    )
    .unwrap();
    // Cold: LIVE_KEYS keys, all snapshotted into redb.
    let mut i = 0;
    while i < LIVE_KEYS {
        engine.append((i..i + BATCH).map(event).collect()).unwrap();
        i += BATCH;
    }
    engine.snapshot().unwrap();
    let views = engine.views();
    // Scopes and key names made up front: the loop times the read only.
    let attempts: Vec<AttemptScope> = (0..100).map(attempt).collect();
    let names: Vec<String> = (0..LIVE_KEYS).map(|k| format!("key-{k:08}")).collect();
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % LIVE_KEYS
    };
    g.bench_function("cold_redb", |b| {
        b.iter(|| {
            let k = next() as usize;
            views
                .get(&attempts[k % 100], &names[k])
                .unwrap()
                .expect("present")
        })
    });
    // Hot: 10,000 keys rewritten since the snapshot, in the memtable (and
    // nowhere else until the next snapshot, which only this bench takes).
    for j in 0..100 {
        engine
            .append((0..BATCH).map(|x| event(j * BATCH + x)).collect())
            .unwrap();
    }
    let hot = 10_000;
    g.bench_function("hot_memtable", |b| {
        b.iter(|| {
            let k = (next() % hot) as usize;
            views
                .get(&attempts[k % 100], &names[k])
                .unwrap()
                .expect("present")
        })
    });
    g.finish();
}

fn snapshot(c: &mut Criterion) {
    let mut g = c.benchmark_group("snapshot");
    g.sample_size(10);
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let engine = Engine::open_with(
        std::sync::Arc::new(waymark_engine::storage::FsStorage),
        dir.path(),
        Options {
            durability: Durability::None,
            snapshots: SnapshotOptions::manual(),
            ..Options::default()
        },
    )
    .unwrap();
    let per_snapshot = 16_384u64;
    g.throughput(Throughput::Elements(per_snapshot));
    let mut i = 0u64;
    g.bench_function("16384_events", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let end = i + per_snapshot;
                while i < end {
                    engine.append((i..i + BATCH).map(event).collect()).unwrap();
                    i += BATCH;
                }
                let start = Instant::now();
                engine.snapshot().unwrap();
                total += start.elapsed();
            }
            total
        })
    });
    g.finish();
}

/// Opens a state directory in a fresh child process, as a restart after a
/// crash does, and returns (whole open in µs, replay in µs, peak RSS in KiB).
fn open_in_child(dir: &Path) -> (u64, u64, u64) {
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(exe)
        .env("WAYMARK_OPEN_CHILD", dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Vec<u64> = text
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    assert_eq!(v.len(), 3, "child printed {text:?}");
    (v[0], v[1], v[2])
}

/// Open time and peak RSS in fresh processes (the way a worker restarts
/// after a crash), 15 opens per log size; prints medians. Building the log
/// happens in this process, so it does not count towards the child's RSS.
fn open_fresh_process() {
    for events in [10_000u64, 100_000, 1_000_000] {
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        build(dir.path(), events, true);
        let mut runs: Vec<(u64, u64, u64)> = (0..15).map(|_| open_in_child(dir.path())).collect();
        let median = |f: fn(&(u64, u64, u64)) -> u64, runs: &mut Vec<(u64, u64, u64)>| {
            runs.sort_by_key(f);
            f(&runs[runs.len() / 2])
        };
        let open_us = median(|r| r.0, &mut runs);
        let replay_us = median(|r| r.1, &mut runs);
        let peak_kib = median(|r| r.2, &mut runs);
        let live = live_state_bytes(events);
        eprintln!(
            "open_fresh_process/{events}: open {:.1} ms (replay {:.1} ms), peak RSS {:.1} MiB \
             = {:.2}x the live state ({:.1} MiB)",
            open_us as f64 / 1000.0,
            replay_us as f64 / 1000.0,
            peak_kib as f64 / 1024.0,
            (peak_kib * 1024) as f64 / live as f64,
            live as f64 / (1 << 20) as f64,
        );
    }
}

fn open_child(dir: &str) {
    let engine = Engine::open(dir).unwrap();
    let s = engine.stats();
    drop(engine);
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0);
    println!(
        "{} {} {hwm}",
        s.recovery_duration.as_micros(),
        s.replay_duration.as_micros()
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    targets = get, open, snapshot
}

fn main() {
    if let Ok(dir) = std::env::var("WAYMARK_OPEN_CHILD") {
        open_child(&dir);
        return;
    }
    benches();
    let args: Vec<String> = std::env::args().collect();
    // With a filter, run the fresh-process opens only if it names them.
    let filter = args.iter().skip(1).find(|a| !a.starts_with('-'));
    if args.iter().all(|a| a != "--list")
        && filter.is_none_or(|f| "open_fresh_process".contains(f.as_str()))
    {
        open_fresh_process();
    }
    Criterion::default().configure_from_args().final_summary();
}
