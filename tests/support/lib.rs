//! Shared helpers for the integration tests: deterministic batches whose
//! content names who wrote them, and the proptest case count.

pub mod lifecycle;
pub mod model;
pub mod scenarios;
pub mod torture;

use waymark_engine::{Event, EventBody, RunScope};

/// How many cases a property runs: `WAYMARK_PROPTEST_CASES`, else `default`.
pub fn proptest_cases(default: u32) -> u32 {
    std::env::var("WAYMARK_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The batch that writer `writer` appends as its `index`-th: 1 to 4 events
/// whose keys name writer, index and position, with values of sizes drawn
/// from `seed`. The same arguments always give the same batch.
pub fn batch(seed: u64, writer: u32, index: u32) -> Vec<Event> {
    let mut rng = fastrand::Rng::with_seed(seed ^ (u64::from(writer) << 32) ^ u64::from(index));
    let events = rng.usize(1..=4);
    (0..events)
        .map(|j| {
            let len = if rng.u8(..) < 20 {
                rng.usize(500..3000)
            } else {
                rng.usize(0..200)
            };
            Event {
                ts_micros: i64::from(index),
                body: EventBody::SharedPut {
                    codec: waymark_engine::Codec::Raw,
                    run: RunScope {
                        tenant: format!("w{writer}"),
                        dag: "crash".into(),
                        run: "r".into(),
                    },
                    key: format!("w{writer}/b{index}/e{j}"),
                    value: (0..len).map(|_| rng.u8(..)).collect(),
                    immutable: false,
                },
            }
        })
        .collect()
}

/// Who wrote a batch made by [`batch`]: (writer, index), read from its first
/// key.
pub fn batch_origin(events: &[Event]) -> Option<(u32, u32)> {
    let EventBody::SharedPut { key, .. } = &events.first()?.body else {
        return None;
    };
    let mut parts = key.split('/');
    let writer = parts.next()?.strip_prefix('w')?.parse().ok()?;
    let index = parts.next()?.strip_prefix('b')?.parse().ok()?;
    Some((writer, index))
}

/// Where a crash property crashes its simulated disk.
#[derive(Clone, Copy, Debug)]
pub enum CrashAt {
    /// Just before the disk's `n`-th operation from the start of the run.
    Op(u64),
    /// At this fraction (per mille) of the operations the same run makes
    /// after its first open when nothing crashes, counted by a dry run on a
    /// disk of the same seed. An absolute count drawn from a fixed range
    /// lands after the end of most short runs (three cases in four,
    /// measured on the log property), which then test a clean close
    /// instead of a crash, or inside the open for most of the rest.
    PerMille(u64),
    /// Never during the run (the check's reboot crashes the disk after a
    /// clean close).
    Never,
}

impl CrashAt {
    /// Crash points for proptest: mostly a fraction of the run, sometimes
    /// an early absolute one (in the first open).
    pub fn strategy() -> impl proptest::strategy::Strategy<Value = CrashAt> {
        use proptest::prelude::*;
        prop_oneof![
            9 => (0..1000u64).prop_map(CrashAt::PerMille),
            1 => (0..40u64).prop_map(CrashAt::Op),
        ]
    }

    /// The operations before the crash, or `None` for no crash;
    /// `dry_run` makes the same run without a crash on a fresh disk and
    /// returns how many operations it had made when its first open
    /// returned, and in all. An error of the dry run (a check it failed:
    /// it is a whole run without a crash) is the case's.
    pub fn ops<E>(self, dry_run: impl FnOnce() -> Result<(u64, u64), E>) -> Result<Option<u64>, E> {
        Ok(match self {
            CrashAt::Op(n) => Some(n),
            CrashAt::PerMille(p) => {
                let (opened, all) = dry_run()?;
                Some(opened + all.saturating_sub(opened).saturating_mul(p) / 1000)
            }
            CrashAt::Never => None,
        })
    }
}

/// What one case of a crash property did, for the floor every crash
/// property asserts: whether its disk crashed after at least one write
/// was acknowledged (a case whose crash fell in the first open, or after
/// a clean end, tests less).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Crashed {
    /// The crash came after an acknowledged write.
    WithAcks,
    /// It did not (no crash, or one before anything was acknowledged).
    Otherwise,
}

/// Runs a crash property: `cases` cases of `strategy` (proptest, with its
/// shrinking and its regressions file beside `source_file`), each checked
/// by `check`; then prints how many crashed after an acknowledged write
/// and asserts that at least `floor` of them did.
///
/// # Panics
///
/// On a failing case (proptest's message, with the minimal input) or a
/// share under the floor.
pub fn crash_property<S>(
    name: &str,
    source_file: &'static str,
    cases: u32,
    strategy: S,
    floor: f64,
    check: impl Fn(S::Value) -> Result<Crashed, proptest::test_runner::TestCaseError>,
) where
    S: proptest::strategy::Strategy,
{
    use std::sync::atomic::{AtomicU32, Ordering};
    let config = proptest::test_runner::Config {
        cases,
        source_file: Some(source_file),
        // Beside the test file, as `proptest!` puts it here (this crate's
        // tests have no `lib.rs` above them for `SourceParallel`).
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"),
        )),
        ..proptest::test_runner::Config::default()
    };
    let (with_acks, all) = (AtomicU32::new(0), AtomicU32::new(0));
    let mut runner = proptest::test_runner::TestRunner::new(config);
    let result = runner.run(&strategy, |value| {
        let crashed = check(value)?;
        all.fetch_add(1, Ordering::Relaxed);
        if crashed == Crashed::WithAcks {
            with_acks.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{name}: {e}");
    }
    let (with_acks, all) = (with_acks.into_inner(), all.into_inner());
    let share = f64::from(with_acks) / f64::from(all.max(1));
    println!("{name}: {with_acks} of {all} cases crashed after an acknowledged write");
    assert!(
        share >= floor,
        "{name}: only {with_acks} of {all} cases crashed after an acknowledged write (floor {floor})"
    );
}

/// The rows of the table RELIABILITY.md publishes between
/// `<!-- {name}:begin -->` and `<!-- {name}:end -->`, without its header
/// and separator rows, one per line.
pub fn published_table(name: &str) -> String {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../RELIABILITY.md"))
        .expect("RELIABILITY.md beside the workspace");
    let begin = doc
        .find(&format!("<!-- {name}:begin -->"))
        .expect("the table's begin marker");
    let end = doc
        .find(&format!("<!-- {name}:end -->"))
        .expect("the table's end marker");
    doc[begin..end]
        .lines()
        .filter(|l| l.starts_with("| "))
        .skip(1)
        .filter(|l| !l.starts_with("| ---"))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Panics, naming each row that differs, unless `measured` is the table
/// RELIABILITY.md publishes under `name` (see [`published_table`]).
pub fn assert_table_is_published(name: &str, measured: &str) {
    let published = published_table(name);
    if measured != published {
        let differ: Vec<String> = measured
            .lines()
            .zip(published.lines().chain(std::iter::repeat("(missing)")))
            .filter(|(a, b)| a != b)
            .map(|(a, b)| format!("measured:  {a}\npublished: {b}"))
            .collect();
        panic!(
            "the {name} differs from RELIABILITY.md ({} rows measured, {} published):\n{}",
            measured.lines().count(),
            published.lines().count(),
            differ.join("\n")
        );
    }
}
