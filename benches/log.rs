//! Log benchmarks: the machine's fsync floor, `Sync` appends from 1 to 64
//! threads (group commit), conditional `Sync` appends (a lifecycle step of
//! each thread's own tasks, as the kernel makes them), `None` appends, and
//! sequential replay.
//!
//! Run: `cargo bench -p waymark-benches --bench log`. BENCHMARKS.md holds the
//! figures and the targets they are held to.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use waymark_benches::{Floor, FloorFile, put_event};
use waymark_engine::storage::FsStorage;
use waymark_engine::{
    AttemptScope, Condition, Durability, Engine, Event, EventBody, LogReader, Lsn, Options,
    RunScope, TaskScope, TaskStatus,
};

/// Value size that makes one `Put` batch's payload about 128 bytes, like the
/// floor's record.
const VALUE_128: usize = 8;
/// Value size that makes one event about 224 bytes encoded (replay).
const VALUE_224: usize = 104;

fn fsync_floor(c: &mut Criterion) {
    let mut g = c.benchmark_group("fsync_floor");
    g.throughput(Throughput::Elements(1));
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    for kind in [FloorFile::Growing, FloorFile::Sparse, FloorFile::Zeroed] {
        let path = dir.path().join(format!("{kind:?}"));
        let bytes = 64 << 20;
        let mut floor = Floor::new(&path, kind, bytes).unwrap();
        let record = [7u8; 128];
        g.bench_function(format!("{kind:?}").to_lowercase(), |b| {
            b.iter(|| {
                if !floor.write_sync(&record).unwrap() {
                    floor = Floor::new(&path, kind, bytes).unwrap();
                    floor.write_sync(&record).unwrap();
                }
            })
        });
    }
    g.finish();
}

fn open(durability: Durability) -> (tempfile::TempDir, Engine) {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let options = Options {
        durability,
        ..Options::default()
    };
    let engine = Engine::open_with(Arc::new(FsStorage), dir.path(), options).unwrap();
    (dir, engine)
}

/// Runs `op(i)` for `i` from `first` to `first + iters` from `threads`
/// threads and returns how long it took. The threads take `i` from one
/// counter rather than a fixed share each: with fixed shares the threads
/// that finish first leave the last ones appending with less and less
/// company, and the sample measures that tail.
fn counted(threads: usize, first: u64, iters: u64, op: &(dyn Fn(u64) + Sync)) -> Duration {
    let next = std::sync::atomic::AtomicU64::new(first);
    let stop = first + iters;
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            let next = &next;
            s.spawn(move || {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= stop {
                        break;
                    }
                    op(i);
                }
            });
        }
    });
    start.elapsed()
}

fn append_sync(c: &mut Criterion) {
    let mut g = c.benchmark_group("append_sync");
    g.throughput(Throughput::Elements(1));
    let payload = waymark_engine::event::__payload_len(&[put_event(0, VALUE_128)]);
    eprintln!("append batch payload: {payload} bytes");
    for threads in [1usize, 4, 16, 64] {
        let (_dir, engine) = open(Durability::Sync);
        g.bench_with_input(
            BenchmarkId::from_parameter(threads),
            &threads,
            |b, &threads| {
                b.iter_custom(|iters| {
                    counted(threads, 0, iters, &|i| {
                        engine.append(vec![put_event(i, VALUE_128)]).unwrap();
                    })
                })
            },
        );
        let stats = engine.stats();
        eprintln!(
            "append_sync/{threads}: mean group {:.1} batches, {} fsyncs for {} batches",
            stats.mean_group_batches(),
            stats.fsyncs,
            stats.batches
        );
    }
    g.finish();
}

/// The `i`-th conditional batch: attempt `i` (a task of its own, among
/// 4,096, and a try of its own) scheduled if it has no status yet: what
/// the kernel's `schedule` appends.
fn schedule_if_new(i: u64) -> (Vec<Condition>, Vec<Event>) {
    let attempt = AttemptScope {
        task: TaskScope {
            run: RunScope {
                tenant: "acme".into(),
                dag: "docs".into(),
                run: "r1".into(),
            },
            task: format!("task-{}", i % 4096),
        },
        try_number: u32::try_from(i / 4096 + 1).expect("fewer than 2^44 batches"),
    };
    let condition = Condition::AttemptStatus {
        attempt: attempt.clone(),
        any_of: vec![None],
    };
    let event = Event {
        ts_micros: 1_700_000_000_000_000 + i as i64,
        body: EventBody::TaskStatus {
            attempt,
            status: TaskStatus::Scheduled,
            worker: "bench".into(),
        },
    };
    (vec![condition], vec![event])
}

/// `Sync` appends with a condition each, on unrelated tasks: the cost of
/// checking conditions in the writer, and that they keep group commit.
fn append_if_sync(c: &mut Criterion) {
    let mut g = c.benchmark_group("append_if_sync");
    g.throughput(Throughput::Elements(1));
    // `16_unconditioned`: the same batches appended without their
    // conditions, to tell the conditions' cost from the events'.
    for (name, threads, conditioned) in [
        ("1", 1usize, true),
        ("16", 16, true),
        ("16_unconditioned", 16, false),
    ] {
        let (_dir, engine) = open(Durability::Sync);
        let next = std::sync::atomic::AtomicU64::new(0);
        g.bench_with_input(
            BenchmarkId::from_parameter(name),
            &threads,
            |b, &threads| {
                b.iter_custom(|iters| {
                    // Attempts never repeat across samples: each is new.
                    let first = next.fetch_add(iters, std::sync::atomic::Ordering::Relaxed);
                    counted(threads, first, iters, &|i| {
                        let (conditions, events) = schedule_if_new(i);
                        if conditioned {
                            engine.append_if(conditions, events).unwrap();
                        } else {
                            engine.append(events).unwrap();
                        }
                    })
                })
            },
        );
        let stats = engine.stats();
        eprintln!(
            "append_if_sync/{name}: mean group {:.1} batches, {} fsyncs for {} batches, {} conflicts",
            stats.mean_group_batches(),
            stats.fsyncs,
            stats.batches,
            stats.conflicts
        );
    }
    g.finish();
}

fn append_none(c: &mut Criterion) {
    let mut g = c.benchmark_group("append_none");
    g.throughput(Throughput::Elements(1));
    let (_dir, engine) = open(Durability::None);
    let mut i = 0u64;
    g.bench_function("1", |b| {
        b.iter(|| {
            i += 1;
            engine.append(vec![put_event(i, VALUE_128)]).unwrap()
        })
    });
    g.finish();
}

fn replay(c: &mut Criterion) {
    const FRAMES: u64 = 200_000;
    let (dir, engine) = open(Durability::None);
    let payload = waymark_engine::event::__payload_len(&[put_event(0, VALUE_224)]);
    eprintln!("replay event payload: {payload} bytes");
    for i in 0..FRAMES {
        engine.append(vec![put_event(i, VALUE_224)]).unwrap();
    }
    let log_bytes = engine.stats().log_bytes;
    drop(engine);
    let reader = LogReader::open(dir.path()).unwrap();
    let mut g = c.benchmark_group("replay");
    g.throughput(Throughput::Bytes(log_bytes));
    g.bench_function("validate_access", |b| {
        b.iter(|| {
            let mut cursor = reader.cursor(Lsn(1));
            let mut n = 0u64;
            let mut ts = 0i64;
            while let Some(frame) = cursor.next_frame().unwrap() {
                let events = frame.events().unwrap();
                n += events.len() as u64;
                ts ^= events[0].ts_micros.to_native();
            }
            assert_eq!(n, FRAMES);
            ts
        })
    });
    // The same CPU work on a segment already in memory: CRC, validation and
    // access, without the read from the page cache.
    let segment = {
        let (_, path) = reader.segments().unwrap().remove(0);
        let bytes = std::fs::read(path).unwrap();
        let mut aligned = rkyv::util::AlignedVec::<16>::new();
        aligned.extend_from_slice(&bytes);
        aligned
    };
    g.bench_function("cpu_only", |b| {
        b.iter(|| assert!(waymark_engine::__bench::scan_segment(&segment) >= FRAMES))
    });
    g.throughput(Throughput::Elements(FRAMES));
    g.bench_function("decode_owned", |b| {
        b.iter(|| {
            let mut cursor = reader.cursor(Lsn(1));
            let mut n = 0usize;
            while let Some(frame) = cursor.next_frame().unwrap() {
                n += frame.decode().unwrap().len();
            }
            n
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    targets = fsync_floor, append_sync, append_if_sync, append_none, replay
}
criterion_main!(benches);
