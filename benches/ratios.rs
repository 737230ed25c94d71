//! The log's `Sync` targets as ratios measured side by side: the machine's
//! fsync floor, `Sync` appends from 1 thread and from 16 threads, taken in
//! turn, round after round, and judged round by round.
//!
//! Criterion measures one benchmark after another, minutes apart; on a
//! machine whose disk and CPU speed drift by tens of percent from minute to
//! minute (BENCHMARKS.md), a ratio of two such figures says as much about
//! the drift as about the engine. Here every round measures the floor and
//! both append cases within a few seconds of each other, rotating their
//! order; the verdict compares medians over the rounds, and says in how
//! many rounds the target held against that round's floor.
//!
//! Run: `cargo bench -p waymark-benches --bench ratios`. Environment:
//! `WAYMARK_RATIO_ROUNDS` (default 15) and `WAYMARK_RATIO_MS` (milliseconds
//! per measurement, default 1000).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use waymark_benches::{Floor, FloorFile, env_or, median, put_event, run_for};
use waymark_engine::storage::FsStorage;
use waymark_engine::{Durability, Engine, Options};

/// Value size that makes one `Put` batch's payload about 128 bytes, like the
/// floor's record (the same as the `log` bench).
const VALUE_128: usize = 8;
/// The targets.
const ONE_THREAD_TARGET: f64 = 0.9;
const SIXTEEN_THREADS_TARGET: f64 = 6.0;

/// Microseconds per fsync of the floor loop, over `span`.
fn floor_us(floor: &mut Floor, remake: &dyn Fn() -> Floor, span: Duration) -> f64 {
    let record = [7u8; 128];
    let start = Instant::now();
    let mut ops = 0u64;
    while start.elapsed() < span {
        if !floor.write_sync(&record).expect("floor write") {
            *floor = remake();
        }
        ops += 1;
    }
    start.elapsed().as_secs_f64() * 1e6 / ops as f64
}

/// Microseconds per acknowledged `Sync` append from `threads` threads, over
/// `span`, and the mean batches per fsync in that span. Each measurement
/// gets an engine of its own, with the default options (views and
/// snapshots on), in a new directory under `parent`: a snapshot that the
/// 16 threads' events called for finishes when their engine closes, not in
/// the middle of the next measurement.
fn append_us(parent: &Path, threads: usize, span: Duration) -> (f64, f64) {
    let dir = tempfile::tempdir_in(parent).expect("temp dir");
    let engine = Engine::open_with(
        Arc::new(FsStorage),
        dir.path(),
        Options {
            durability: Durability::Sync,
            ..Options::default()
        },
    )
    .expect("open engine");
    let before = engine.stats();
    let us = run_for(threads, span, &|i| {
        engine
            .append(vec![put_event(i, VALUE_128)])
            .expect("append");
    });
    let after = engine.stats();
    let group =
        (after.batches - before.batches) as f64 / (after.fsyncs - before.fsyncs).max(1) as f64;
    (us, group)
}

fn main() {
    // `cargo bench` passes `--bench`; a filter or `--list` from a harness
    // run of every bench target is not ours to honour.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rounds = env_or("WAYMARK_RATIO_ROUNDS", 15).max(1);
    let span = Duration::from_millis(env_or("WAYMARK_RATIO_MS", 1000).max(10));
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir");
    let floor_bytes = 64 << 20;
    let make = |kind: FloorFile| {
        let path = dir.path().join(format!("{kind:?}"));
        move || Floor::new(&path, kind, floor_bytes).expect("floor file")
    };
    let (make_sparse, make_zeroed) = (make(FloorFile::Sparse), make(FloorFile::Zeroed));
    let (mut sparse, mut zeroed) = (make_sparse(), make_zeroed());

    println!(
        "{rounds} rounds of {} ms per measurement, in rotating order",
        span.as_millis()
    );
    println!(
        "{:>5} {:>10} {:>10} {:>10} {:>10} {:>7}",
        "round", "sparse µs", "zeroed µs", "1 thr µs", "16 thr µs", "group"
    );
    let (mut sparses, mut zeroeds, mut ones, mut sixteens) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let (mut s, mut z, mut a1, mut a16) = (0.0, 0.0, 0.0, (0.0, 0.0));
        // Rotate the order so no case always runs first or last.
        for step in 0..4 {
            match (step + round as usize) % 4 {
                0 => s = floor_us(&mut sparse, &make_sparse, span),
                1 => z = floor_us(&mut zeroed, &make_zeroed, span),
                2 => a1 = append_us(dir.path(), 1, span).0,
                _ => a16 = append_us(dir.path(), 16, span),
            }
        }
        println!(
            "{:>5} {s:>10.1} {z:>10.1} {a1:>10.1} {:>10.1} {:>7.1}",
            round + 1,
            a16.0,
            a16.1
        );
        sparses.push(s);
        zeroeds.push(z);
        ones.push(a1);
        sixteens.push(a16.0);
    }
    // The floor is the faster of the two preallocated layouts, compared
    // by their medians. (Taking the faster of the two in each round would
    // pick the luckier of two noisy samples and bias the floor low.)
    let (ms, mz) = (median(sparses.clone()), median(zeroeds.clone()));
    let (floor, floors, kind) = if ms <= mz {
        (ms, &sparses, "sparse")
    } else {
        (mz, &zeroeds, "zeroed")
    };
    let (m1, m16) = (median(ones.clone()), median(sixteens.clone()));
    // Per round, against the same layout's floor in that round.
    let held = |ops: &[f64], target: f64| {
        ops.iter()
            .zip(floors)
            .filter(|(op, f)| **f / **op >= target)
            .count()
    };
    println!(
        "medians: floor sparse {ms:.1} µs, zeroed {mz:.1} µs (floor = {kind}); 1 thread {m1:.1} µs; 16 threads {m16:.1} µs"
    );
    println!(
        "1 thread vs floor per op: {:.3}× (target ≥ {ONE_THREAD_TARGET}×; held in {} of {rounds} rounds)",
        floor / m1,
        held(&ones, ONE_THREAD_TARGET)
    );
    println!(
        "16 threads vs floor rate: {:.2}× (target ≥ {SIXTEEN_THREADS_TARGET}×; held in {} of {rounds} rounds)",
        floor / m16,
        held(&sixteens, SIXTEEN_THREADS_TARGET)
    );
}
