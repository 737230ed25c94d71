//! The kernel API as a worker calls it: a batch of 1,000 sets committed at
//! once (under `Sync`, and under `None` for its CPU cost alone), and gets
//! of existing keys, from a `RunContext` held per task attempt and from one
//! built for each call. Keys are `acme/doc/run1/taskNNN/1/KEY_NNNNNN`,
//! values 100 bytes, as in the side-by-side comparison (issue 16).
//!
//! Run: `cargo bench -p waymark-benches --bench kernel`. BENCHMARKS.md
//! holds the figures. For an instruction profile of the batch path, which
//! this noisy machine cannot time reliably:
//! `valgrind --tool=callgrind target/release/deps/kernel-<hash> --bench
//! kernel_batch/1000_sets_none --profile-time 5`.

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use waymark_engine::{Durability, Options};
use waymark_kernel::{Kernel, RunContext, RunRef};

/// Sets per committed batch.
const BATCH: usize = 1_000;
/// Value bytes of every set.
const VALUE: [u8; 100] = [b'v'; 100];
/// Tasks the keys spread over (one held context each).
const TASKS: usize = 100;
/// Keys per task that the get benchmarks read.
const KEYS_PER_TASK: usize = 100;

fn open(durability: Durability) -> (tempfile::TempDir, Kernel) {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("a temporary directory");
    let kernel = Kernel::builder()
        .options(Options {
            durability,
            ..Options::default()
        })
        .open(dir.path().join("state"))
        .expect("open a new state directory");
    (dir, kernel)
}

fn contexts(kernel: &Kernel) -> Vec<RunContext> {
    let run = RunRef::new("acme", "doc", "run1").expect("valid names");
    (0..TASKS)
        .map(|t| kernel.context(run.task(format!("task{t:03}")).expect("a valid task id")))
        .collect()
}

fn batch(c: &mut Criterion) {
    let mut g = c.benchmark_group("kernel_batch");
    g.throughput(Throughput::Elements(BATCH as u64));
    let keys: Vec<String> = (0..BATCH).map(|k| format!("KEY_{k:06}")).collect();
    for (name, durability) in [
        ("1000_sets_sync", Durability::Sync),
        ("1000_sets_none", Durability::None),
    ] {
        let (_dir, kernel) = open(durability);
        let ctxs = contexts(&kernel);
        let mut n = 0usize;
        g.bench_function(name, |b| {
            b.iter(|| {
                let ctx = &ctxs[n % TASKS];
                n += 1;
                let mut batch = ctx.batch();
                for key in &keys {
                    batch = batch.set(key, VALUE);
                }
                batch.commit().expect("a durable commit")
            })
        });
    }
    g.finish();
}

fn get(c: &mut Criterion) {
    let mut g = c.benchmark_group("kernel_get");
    let (_dir, kernel) = open(Durability::None);
    let ctxs = contexts(&kernel);
    let keys: Vec<String> = (0..KEYS_PER_TASK).map(|k| format!("KEY_{k:06}")).collect();
    for ctx in &ctxs {
        let mut batch = ctx.batch();
        for key in &keys {
            batch = batch.set(key, VALUE);
        }
        batch.commit().expect("a commit");
    }
    let mut rng = fastrand::Rng::with_seed(7);
    g.bench_function("held_context", |b| {
        b.iter(|| {
            let ctx = &ctxs[rng.usize(..TASKS)];
            ctx.get(&keys[rng.usize(..KEYS_PER_TASK)])
                .expect("a read")
                .expect("the key exists")
        })
    });
    let task_ids: Vec<String> = (0..TASKS).map(|t| format!("task{t:03}")).collect();
    g.bench_function("context_per_call", |b| {
        b.iter(|| {
            let run = RunRef::new("acme", "doc", "run1").expect("valid names");
            let ti = run
                .task(task_ids[rng.usize(..TASKS)].as_str())
                .expect("a valid task id");
            kernel
                .context(ti)
                .get(&keys[rng.usize(..KEYS_PER_TASK)])
                .expect("a read")
                .expect("the key exists")
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    targets = batch, get
}
criterion_main!(benches);
