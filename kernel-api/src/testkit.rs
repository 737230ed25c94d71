//! The crash-testing kit (feature `testkit`): a property-based
//! crash-recovery test of your own worker, in one call.
//!
//! Give [`CrashTest`] a workload (a closure that drives a [`Kernel`], the
//! way your worker does) and a check (a closure that gets the reopened,
//! resumed kernel and the batches that were acknowledged before the
//! crash). The kit runs the workload once without a crash and counts the
//! storage operations it makes on the simulated disk; then, for **every**
//! storage operation after the kernel's open (or a seeded sample of them
//! when there are more cases than the budget) and every kind of
//! [`Damage`], it runs the workload
//! again on a fresh disk that crashes just before that operation, brings
//! the disk back with that damage, reopens the kernel, resumes every run
//! in the log, checks that every acknowledged batch is in the log as it
//! was acknowledged, and runs your check.
//!
//! A failure panics with the seed, the crash point and the damage, and a
//! line that replays exactly that case: `WAYMARK_CRASH_CASE=seed:point:damage`
//! set in the environment runs that one case and nothing else. Of a
//! sample, the failure reported is shrunk to the smallest failing crash
//! point with its damage. `WAYMARK_CRASH_BUDGET` overrides the budget.
//!
//! The workload should be deterministic (the same calls in the same order
//! from the same seed), so that a crash point names the same moment in
//! every run; a workload on several threads still runs, with crash points
//! that land on roughly the same moments.
//!
//! ```
//! use waymark_kernel::testkit::CrashTest;
//! use waymark_kernel::RunRef;
//!
//! let run = RunRef::new("acme", "documents", "run-42")?;
//! let ti = run.task("ocr")?;
//! let report = CrashTest::new(|kernel| {
//!     kernel.start(&ti)?;
//!     kernel.context(ti.clone()).batch().set("text", b"Invoice 17").succeed(b"ok").commit()?;
//!     Ok(())
//! })
//! .budget(200)
//! .run(|kernel, acked| {
//!     // Acknowledged: the text and the success, together or not at all.
//!     let text = kernel.context(ti.clone()).get("text").map_err(|e| e.to_string())?;
//!     match acked.last_value(&ti, "text") {
//!         Some(v) if text.as_deref() != Some(v) => Err(format!("lost the text: {text:?}")),
//!         _ => Ok(()),
//!     }
//! });
//! assert!(report.images > 0);
//! # Ok::<(), waymark_kernel::Error>(())
//! ```

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use waymark_engine::storage::Damage;
use waymark_engine::storage::SimDisk;
use waymark_engine::{
    AttemptScope, CheckpointRecord, Condition, Engine, Event, EventBody, KvValue, Lsn, Options,
    RunRecord, RunScope, SharedValue, SnapshotOptions, TaskRecord, TaskScope, TaskStatus,
};

use crate::backend::{Backend, BackendStats, EngineBackend};
use crate::error::Result;
use crate::kernel::Kernel;
use crate::task_ref::{RunRef, TaskRef};

/// The environment variable that replays one case: `seed:point:damage`.
pub const CASE_VAR: &str = "WAYMARK_CRASH_CASE";
/// The environment variable that overrides [`CrashTest::budget`].
pub const BUDGET_VAR: &str = "WAYMARK_CRASH_BUDGET";
/// Where the kit puts the state directory on its simulated disks.
const DIR: &str = "/state";

/// One crash image: the disk's seed, the storage operation it crashes
/// just before (counted from the disk's creation, the kit's open
/// included), and the damage it comes back with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Case {
    /// The simulated disk's seed.
    pub seed: u64,
    /// The storage operation the disk crashes just before (0: the first).
    pub crash_at: u64,
    /// What the crash does to what was not synced.
    pub damage: Damage,
}

impl fmt::Display for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.seed, self.crash_at, self.damage.name())
    }
}

impl std::str::FromStr for Case {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Case, String> {
        let bad = || format!("{s:?} is not seed:point:damage (say 7:120:TornLastWrite)");
        let mut parts = s.trim().split(':');
        let seed = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let crash_at = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let damage = parts.next().and_then(Damage::from_name).ok_or_else(bad)?;
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(Case {
            seed,
            crash_at,
            damage,
        })
    }
}

/// One acknowledged batch: its LSN and its events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AckedBatch {
    /// The LSN the append returned.
    pub lsn: Lsn,
    /// The events, as appended.
    pub events: Vec<Event>,
}

/// What the workload was told had been written before the crash: every
/// acknowledged batch, in LSN order, with helpers for the usual checks.
/// The helpers follow puts, deletes, clears and purges; they do not model
/// checkpoint restores.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Acked {
    batches: Vec<AckedBatch>,
}

impl Acked {
    /// Every acknowledged batch, in LSN order.
    pub fn batches(&self) -> &[AckedBatch] {
        &self.batches
    }

    /// Whether nothing was acknowledged.
    pub fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    /// Every acknowledged event, in order, with its batch's LSN.
    pub fn events(&self) -> impl Iterator<Item = (Lsn, &Event)> {
        self.batches
            .iter()
            .flat_map(|b| b.events.iter().map(move |e| (b.lsn, e)))
    }

    /// The last acknowledged value of `key` in attempt `ti`'s attempt
    /// state (`None`: never set, or deleted, cleared or purged since).
    pub fn last_value(&self, ti: &TaskRef, key: &str) -> Option<&[u8]> {
        let attempt = ti.attempt_scope();
        let mut value = None;
        for (_, e) in self.events() {
            match &e.body {
                EventBody::Put {
                    attempt: a,
                    key: k,
                    value: v,
                    ..
                } if **a == attempt && k == key => value = Some(v.as_slice()),
                EventBody::Delete { attempt: a, key: k } if *a == attempt && k == key => {
                    value = None;
                }
                EventBody::ClearTask { task } if *task == attempt.task => value = None,
                EventBody::PurgeRun { run } if *run == attempt.task.run => value = None,
                _ => {}
            }
        }
        value
    }

    /// The last acknowledged value of `key` in `ti`'s task state.
    pub fn last_task_state(&self, ti: &TaskRef, key: &str) -> Option<&[u8]> {
        let task = ti.task_scope();
        let mut value = None;
        for (_, e) in self.events() {
            match &e.body {
                EventBody::TaskPut {
                    task: t,
                    key: k,
                    value: v,
                    ..
                } if *t == task && k == key => value = Some(v.as_slice()),
                EventBody::TaskDelete { task: t, key: k } if *t == task && k == key => {
                    value = None;
                }
                EventBody::PurgeRun { run } if *run == task.run => value = None,
                _ => {}
            }
        }
        value
    }

    /// The last acknowledged status of attempt `ti`.
    pub fn last_status(&self, ti: &TaskRef) -> Option<&TaskStatus> {
        let attempt = ti.attempt_scope();
        let mut status = None;
        for (_, e) in self.events() {
            match &e.body {
                EventBody::TaskStatus {
                    attempt: a,
                    status: s,
                    ..
                } if *a == attempt => status = Some(s),
                EventBody::PurgeRun { run } if *run == attempt.task.run => status = None,
                _ => {}
            }
        }
        status
    }

    /// Every run an acknowledged event belongs to.
    pub fn runs(&self) -> Vec<RunScope> {
        let mut runs: Vec<RunScope> = self.events().map(|(_, e)| e.run().clone()).collect();
        runs.sort();
        runs.dedup();
        runs
    }
}

/// What a crash test ran.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct Report {
    /// Crash images checked.
    pub images: u64,
    /// Of them, the images whose crash came after at least one batch was
    /// acknowledged (the others crashed in the open, or before the first
    /// write returned).
    pub crashed_with_acks: u64,
    /// Recovery crash images checked (a crash inside the recovery of a
    /// crash image, see [`CrashTest::crash_recovery`]).
    pub recovery_images: u64,
    /// Storage operations of the run without a crash, from the disk's
    /// creation (the open included) to the close.
    pub ops: u64,
    /// Crash points (every operation after the open) × damages, before
    /// any sampling to the budget.
    pub cases: u64,
    /// How long it took.
    pub elapsed: Duration,
}

impl Report {
    /// Crash images (recovery images included) checked per second.
    pub fn images_per_second(&self) -> f64 {
        (self.images + self.recovery_images) as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The share of images that crashed after an acknowledged write.
    pub fn crashed_with_acks_share(&self) -> f64 {
        self.crashed_with_acks as f64 / self.images.max(1) as f64
    }
}

/// A failed case: which, and why.
#[derive(Clone, Debug)]
pub struct Failure {
    /// The case (the smallest failing crash point found, for its damage).
    pub case: Case,
    /// The storage operations of the run without a crash.
    pub ops: u64,
    /// What failed: the reopen, a lost acknowledged batch, or the check.
    pub why: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "crash test failed: seed {}, crash before storage operation {} of {}, damage {}: {}\n\
             replay this case alone: {}={} (then run the same test)",
            self.case.seed,
            self.case.crash_at,
            self.ops,
            self.case.damage.name(),
            self.why,
            CASE_VAR,
            self.case,
        )
    }
}

impl std::error::Error for Failure {}

/// What [`CrashTest::prepare`] does to each new disk.
type Prepare = Box<dyn Fn(&SimDisk)>;

/// A crash-recovery test of a workload: see the [module docs](self).
pub struct CrashTest<W> {
    workload: W,
    prepare: Option<Prepare>,
    options: Options,
    seed: u64,
    disks: u64,
    budget: u64,
    damages: Vec<Damage>,
    recovery_crashes: u64,
    worker: String,
}

impl<W> fmt::Debug for CrashTest<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CrashTest")
            .field("seed", &self.seed)
            .field("budget", &self.budget)
            .field("damages", &self.damages)
            .finish_non_exhaustive()
    }
}

/// The options the kit opens its kernels with unless told otherwise: the
/// defaults (`Sync`), with 64 KiB segments and a snapshot every 256
/// events, so that a small workload rolls segments and snapshots into the
/// views (and crashes land in both) on a disk that stays small.
pub fn default_options() -> Options {
    Options {
        segment_bytes_max: 64 << 10,
        snapshots: SnapshotOptions {
            every_events: 256,
            every_bytes: 1 << 20,
            memtable_bytes_max: 8 << 20,
            ..SnapshotOptions::default()
        },
        ..Options::default()
    }
}

impl<W> CrashTest<W>
where
    W: Fn(&Kernel) -> Result<()>,
{
    /// A test of `workload`. Defaults: seed 0, a budget of 2,000 crash
    /// images, every damage, no crashes inside recovery, the options of
    /// [`default_options`].
    pub fn new(workload: W) -> CrashTest<W> {
        CrashTest {
            workload,
            prepare: None,
            options: default_options(),
            seed: 0,
            disks: 1,
            budget: 2_000,
            damages: Damage::ALL.to_vec(),
            recovery_crashes: 0,
            worker: "crash-test".into(),
        }
    }

    /// The seed of every simulated disk (and of the sample). Default 0.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// The engine options of every kernel the kit opens.
    pub fn options(mut self, options: Options) -> Self {
        self.options = options;
        self
    }

    /// How many simulated disks to run the whole test on: seeds `seed`,
    /// `seed + 1`, …; each tears writes at other bytes and keeps other
    /// pages. Default 1. The budget is per disk.
    pub fn disks(mut self, disks: u64) -> Self {
        self.disks = disks.max(1);
        self
    }

    /// The most crash images to check: with more crash points × damages
    /// than this, a seeded sample of this many. Default 2,000;
    /// [`BUDGET_VAR`] overrides it.
    pub fn budget(mut self, images: u64) -> Self {
        self.budget = images;
        self
    }

    /// The damages to crash with. Default: [`Damage::ALL`].
    pub fn damages(mut self, damages: &[Damage]) -> Self {
        self.damages = damages.to_vec();
        self
    }

    /// Also crash the recovery of each image at up to `points` of its
    /// storage operations (seeded), bring that disk back with the image's
    /// damage, and check that the second recovery recovers the same log as
    /// a recovery that was not crashed. Default 0 (off).
    pub fn crash_recovery(mut self, points: u64) -> Self {
        self.recovery_crashes = points;
        self
    }

    /// Calls `prepare` with each new simulated disk before the kernel opens
    /// on it (the dry run's too): to schedule a fault
    /// ([`SimDisk::fail_nth`], [`SimDisk::set_capacity`]) that the
    /// workload then meets at the same point in every run. A workload that
    /// meets a fault must not fail for it (the dry run would call that a
    /// bug): it stops writing and returns `Ok`.
    pub fn prepare(mut self, prepare: impl Fn(&SimDisk) + 'static) -> Self {
        self.prepare = Some(Box::new(prepare));
        self
    }

    /// The worker id of the kernels the kit opens. Default `crash-test`.
    pub fn worker_id(mut self, worker: impl Into<String>) -> Self {
        self.worker = worker.into();
        self
    }

    /// Runs the test and returns what it ran.
    ///
    /// # Panics
    ///
    /// On the first failing case (shrunk to its smallest crash point), with
    /// the seed, the crash point, the damage and how to replay it; if the
    /// workload fails without a crash; on a malformed [`CASE_VAR`].
    pub fn run<C>(&self, check: C) -> Report
    where
        C: Fn(&Kernel, &Acked) -> std::result::Result<(), String>,
    {
        match self.try_run(check) {
            Ok(report) => report,
            Err(failure) => panic!("{failure}"),
        }
    }

    /// As [`CrashTest::run`], returning the failure instead of panicking.
    ///
    /// # Errors
    ///
    /// The first failing case, shrunk to its smallest crash point.
    ///
    /// # Panics
    ///
    /// If the workload fails without a crash, or on a malformed
    /// [`CASE_VAR`].
    pub fn try_run<C>(&self, check: C) -> std::result::Result<Report, Failure>
    where
        C: Fn(&Kernel, &Acked) -> std::result::Result<(), String>,
    {
        let started = Instant::now();
        if let Ok(case) = std::env::var(CASE_VAR) {
            let case: Case = case.parse().unwrap_or_else(|e| panic!("{CASE_VAR}: {e}"));
            let mut report = Report::default();
            self.image(case, &check, &mut report)
                .map_err(|why| Failure { case, ops: 0, why })?;
            report.elapsed = started.elapsed();
            return Ok(report);
        }
        let budget = std::env::var(BUDGET_VAR)
            .ok()
            .and_then(|b| b.parse().ok())
            .unwrap_or(self.budget);
        let mut report = Report::default();
        for seed in (0..self.disks).map(|i| self.seed.wrapping_add(i)) {
            let (opened, ops) = self.dry_run(seed, &check);
            report.ops = report.ops.max(ops);
            report.cases += (ops - opened + 1) * self.damages.len() as u64;
            for case in &self.cases(seed, opened, ops, budget) {
                if let Err(why) = self.image(*case, &check, &mut report) {
                    let smallest = self.shrink(opened, *case, why, &check, &mut report);
                    return Err(Failure {
                        case: smallest.0,
                        ops,
                        why: smallest.1,
                    });
                }
            }
        }
        report.elapsed = started.elapsed();
        Ok(report)
    }

    /// Runs the workload with no crash, checks it, and returns how many
    /// storage operations the open made, and how many all of it made (the
    /// close included).
    fn dry_run<C>(&self, seed: u64, check: &C) -> (u64, u64)
    where
        C: Fn(&Kernel, &Acked) -> std::result::Result<(), String>,
    {
        let disk = self.disk(seed);
        let (acked, failed, opened) = self.drive(&disk);
        if let Some(e) = failed {
            panic!("the workload fails without a crash (seed {seed}): {e}",);
        }
        let ops = disk.ops();
        if let Err(why) = self.verify(&disk.reboot(Damage::KeepAll), &acked, check) {
            panic!("the check fails without a crash (seed {seed}, after a clean close): {why}",);
        }
        (opened, ops)
    }

    /// Every crash point from the end of the open to the end of the run ×
    /// every damage, or a seeded sample of `budget` of them, in order of
    /// crash point. (Crashes inside the open are the engine's own tests';
    /// the workload has not run yet.)
    fn cases(&self, seed: u64, opened: u64, ops: u64, budget: u64) -> Vec<Case> {
        let damages = self.damages.len() as u64;
        let all = (ops - opened + 1) * damages;
        let case = |i: u64| Case {
            seed,
            crash_at: opened + i / damages,
            damage: self.damages[usize::try_from(i % damages).expect("few damages")],
        };
        if all <= budget {
            return (0..all).map(case).collect();
        }
        let mut rng = fastrand::Rng::with_seed(seed ^ 0x7e57_c0de);
        let mut picked: Vec<u64> = rand_sample(&mut rng, all, budget);
        picked.sort_unstable();
        picked.into_iter().map(case).collect()
    }

    /// The smallest crash point that fails with `failed`'s damage, looking
    /// below `failed` (a sample may have skipped smaller ones).
    fn shrink<C>(
        &self,
        opened: u64,
        failed: Case,
        why: String,
        check: &C,
        report: &mut Report,
    ) -> (Case, String)
    where
        C: Fn(&Kernel, &Acked) -> std::result::Result<(), String>,
    {
        for crash_at in opened..failed.crash_at {
            let case = Case { crash_at, ..failed };
            if let Err(why) = self.image(case, check, report) {
                return (case, why);
            }
        }
        (failed, why)
    }

    /// A new disk, prepared.
    fn disk(&self, seed: u64) -> SimDisk {
        let disk = SimDisk::new(seed);
        if let Some(prepare) = &self.prepare {
            prepare(&disk);
        }
        disk
    }

    /// Opens a kernel on `disk` that records what it acknowledges, runs
    /// the workload, and closes it. Returns the acknowledged batches, the
    /// workload's error if the disk had not crashed (a bug of the workload,
    /// or of the kernel), and the storage operations the open made.
    fn drive(&self, disk: &SimDisk) -> (Acked, Option<String>, u64) {
        let recorded = Arc::new(Mutex::new(Vec::new()));
        let Ok(engine) = Engine::open_with(Arc::new(disk.clone()), DIR, self.options.clone())
        else {
            return (Acked::default(), None, disk.ops());
        };
        let opened = disk.ops();
        let kernel = Kernel::recording(
            Recording {
                inner: EngineBackend::new(engine.clone()),
                acked: Arc::clone(&recorded),
            },
            engine,
            self.worker.clone(),
        );
        let outcome = catch_unwind(AssertUnwindSafe(|| (self.workload)(&kernel)));
        let failed = match outcome {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(panic) => Some(format!("the workload panicked: {}", panic_text(&panic))),
        };
        // The close syncs; after a crash it fails, as a drop would.
        let _ = kernel.close();
        drop(kernel);
        let mut batches = std::mem::take(&mut *recorded.lock().unwrap_or_else(|e| e.into_inner()));
        batches.sort_by_key(|b: &AckedBatch| b.lsn);
        let failed = failed.filter(|_| !disk.has_crashed());
        (Acked { batches }, failed, opened)
    }

    /// One crash image: run, crash, bring back, reopen, check.
    fn image<C>(
        &self,
        case: Case,
        check: &C,
        report: &mut Report,
    ) -> std::result::Result<(), String>
    where
        C: Fn(&Kernel, &Acked) -> std::result::Result<(), String>,
    {
        let disk = self.disk(case.seed);
        disk.crash_after_ops(case.crash_at);
        let (acked, failed, _) = self.drive(&disk);
        if let Some(e) = failed {
            return Err(format!("the workload failed before the crash: {e}"));
        }
        report.images += 1;
        report.crashed_with_acks += u64::from(disk.has_crashed() && !acked.is_empty());
        let after = disk.reboot(case.damage);
        if self.recovery_crashes > 0 {
            self.crash_recoveries(&after, case, report)?;
        }
        self.verify(&after, &acked, check)
    }

    /// Reopens `disk` (a copy of it), resumes every run the acknowledged
    /// batches touched, checks that each acknowledged batch is in the log
    /// as acknowledged (under `Sync`), and runs the user's check.
    fn verify<C>(&self, disk: &SimDisk, acked: &Acked, check: &C) -> std::result::Result<(), String>
    where
        C: Fn(&Kernel, &Acked) -> std::result::Result<(), String>,
    {
        let copy = disk.reboot(Damage::KeepAll);
        let kernel = Kernel::builder()
            .worker_id(self.worker.clone())
            .options(self.options.clone())
            .open_on(Arc::new(copy), DIR)
            .map_err(|e| format!("the reopen failed: {e}"))?;
        let log = log_of(&kernel).map_err(|e| format!("the log does not read: {e}"))?;
        if self.options.durability == waymark_engine::Durability::Sync {
            // Retention may have removed the segments of older batches: the
            // views hold them, the log no longer does.
            let first = kernel
                .engine()
                .expect("the kit opens kernels on the engine")
                .reader()
                .segments()
                .map_err(|e| format!("the log does not list: {e}"))?
                .first()
                .map_or(Lsn(1), |s| s.0);
            for b in acked.batches.iter().filter(|b| b.lsn >= first) {
                match log.get(&b.lsn) {
                    Some(events) if *events == b.events => {}
                    Some(_) => {
                        return Err(format!(
                            "the batch acknowledged as LSN {} is another in the log",
                            b.lsn
                        ));
                    }
                    None => return Err(format!("the batch acknowledged as LSN {} is lost", b.lsn)),
                }
            }
        }
        // Every run the log holds, acknowledged or not (a batch the crash
        // cut off from its acknowledgement may have reached the disk).
        let mut runs: Vec<RunScope> = log.values().flatten().map(|e| e.run().clone()).collect();
        runs.sort();
        runs.dedup();
        for run in runs {
            let run = RunRef::new(run.tenant, run.dag, run.run)
                .map_err(|e| format!("a run of the log: {e}"))?;
            if kernel.run(&run).map_err(|e| e.to_string())?.is_some() {
                kernel
                    .resume(&run)
                    .map_err(|e| format!("resume of {run} after the reopen: {e}"))?;
            }
        }
        match catch_unwind(AssertUnwindSafe(|| check(&kernel, acked))) {
            Ok(result) => result,
            Err(panic) => Err(format!("the check panicked: {}", panic_text(&panic))),
        }
    }

    /// Crashes the recovery of `image` at up to `recovery_crashes` of its
    /// storage operations; each must come back to the log an uncrashed
    /// recovery leaves.
    fn crash_recoveries(
        &self,
        image: &SimDisk,
        case: Case,
        report: &mut Report,
    ) -> std::result::Result<(), String> {
        let dry = image.reboot(Damage::KeepAll);
        let expected = match Kernel::builder()
            .options(self.options.clone())
            .open_on(Arc::new(dry.clone()), DIR)
        {
            Ok(kernel) => {
                let ops = dry.ops();
                let log = log_of(&kernel).map_err(|e| format!("the log does not read: {e}"))?;
                drop(kernel);
                (ops, log)
            }
            // The verification reports a failed reopen.
            Err(_) => return Ok(()),
        };
        let (ops, log) = expected;
        let mut rng = fastrand::Rng::with_seed(case.seed ^ case.crash_at ^ 0x4ec0);
        for at in rand_sample(&mut rng, ops, self.recovery_crashes) {
            let disk = image.reboot(Damage::KeepAll);
            disk.crash_after_ops(at);
            let _ = Kernel::builder()
                .options(self.options.clone())
                .open_on(Arc::new(disk.clone()), DIR);
            report.recovery_images += 1;
            let again = disk.reboot(case.damage);
            let kernel = Kernel::builder()
                .options(self.options.clone())
                .open_on(Arc::new(again), DIR)
                .map_err(|e| {
                    format!(
                        "recovery crashed at its operation {at} ({}), then the reopen failed: {e}",
                        case.damage.name()
                    )
                })?;
            let second = log_of(&kernel).map_err(|e| format!("the log does not read: {e}"))?;
            if second != log {
                return Err(format!(
                    "recovery crashed at its operation {at} recovers another log: LSNs {:?} against {:?}",
                    second.keys().last(),
                    log.keys().last()
                ));
            }
        }
        Ok(())
    }
}

/// `n` distinct numbers of `0..all` (all of them if `n >= all`).
fn rand_sample(rng: &mut fastrand::Rng, all: u64, n: u64) -> Vec<u64> {
    if n >= all {
        return (0..all).collect();
    }
    let mut picked = std::collections::BTreeSet::new();
    while (picked.len() as u64) < n {
        picked.insert(rng.u64(0..all));
    }
    picked.into_iter().collect()
}

/// Every batch the kernel's log holds (from its first segment: retention
/// may have removed older ones), by LSN.
fn log_of(kernel: &Kernel) -> Result<std::collections::BTreeMap<Lsn, Vec<Event>>> {
    let first = match kernel.engine() {
        Some(engine) => engine.reader().segments()?.first().map_or(Lsn(1), |s| s.0),
        None => Lsn(1),
    };
    let mut log = std::collections::BTreeMap::new();
    kernel.backend().scan_log(first, &mut |lsn, events| {
        log.insert(lsn, events);
        true
    })?;
    Ok(log)
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_string()))
        .unwrap_or_else(|| "a panic".into())
}

/// The engine's backend, recording every batch it acknowledges.
#[derive(Debug)]
struct Recording {
    inner: EngineBackend,
    acked: Arc<Mutex<Vec<AckedBatch>>>,
}

impl Backend for Recording {
    fn append(&self, conditions: Vec<Condition>, events: Vec<Event>) -> Result<Lsn> {
        let copy = events.clone();
        let lsn = self.inner.append(conditions, events)?;
        self.acked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(AckedBatch { lsn, events: copy });
        Ok(lsn)
    }
    fn get(&self, attempt: &AttemptScope, key: &str) -> Result<Option<KvValue>> {
        self.inner.get(attempt, key)
    }
    fn attempt_entries(&self, attempt: &AttemptScope) -> Result<Vec<(String, KvValue)>> {
        self.inner.attempt_entries(attempt)
    }
    fn latest_attempt_value(&self, task: &TaskScope, key: &str) -> Result<Option<(u32, KvValue)>> {
        self.inner.latest_attempt_value(task, key)
    }
    fn task_state(&self, task: &TaskScope, key: &str) -> Result<Option<KvValue>> {
        self.inner.task_state(task, key)
    }
    fn task_state_entries(&self, task: &TaskScope) -> Result<Vec<(String, KvValue)>> {
        self.inner.task_state_entries(task)
    }
    fn task(&self, task: &TaskScope) -> Result<Option<TaskRecord>> {
        self.inner.task(task)
    }
    fn tasks(&self, run: &RunScope) -> Result<Vec<(String, TaskRecord)>> {
        self.inner.tasks(run)
    }
    fn run(&self, run: &RunScope) -> Result<Option<RunRecord>> {
        self.inner.run(run)
    }
    fn runs(&self, tenant: &str, dag: Option<&str>) -> Result<Vec<(RunScope, RunRecord)>> {
        self.inner.runs(tenant, dag)
    }
    fn shared(&self, run: &RunScope, key: &str) -> Result<Option<SharedValue>> {
        self.inner.shared(run, key)
    }
    fn checkpoint(&self, run: &RunScope, name: &str) -> Result<Option<CheckpointRecord>> {
        self.inner.checkpoint(run, name)
    }
    fn checkpoints(&self, run: &RunScope) -> Result<Vec<(String, CheckpointRecord)>> {
        self.inner.checkpoints(run)
    }
    fn scan_log(&self, from: Lsn, visit: &mut dyn FnMut(Lsn, Vec<Event>) -> bool) -> Result<()> {
        self.inner.scan_log(from, visit)
    }
    fn durable_lsn(&self) -> Lsn {
        self.inner.durable_lsn()
    }
    fn flush(&self) -> Result<Lsn> {
        self.inner.flush()
    }
    fn close(&self) -> Result<()> {
        self.inner.close()
    }
    fn stats(&self) -> BackendStats {
        self.inner.stats()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cases_print_and_parse_back() {
        let case = Case {
            seed: 7,
            crash_at: 120,
            damage: Damage::TornLastWrite,
        };
        assert_eq!(case.to_string(), "7:120:TornLastWrite");
        assert_eq!("7:120:TornLastWrite".parse::<Case>(), Ok(case));
        assert!("7:120".parse::<Case>().is_err());
        assert!("7:x:Pages".parse::<Case>().is_err());
        assert!("7:1:Pages:9".parse::<Case>().is_err());
    }

    /// A worker whose resume logic is wrong (it trusts attempt state, which
    /// a retry clears, where task state was needed) is caught, with a case
    /// that replays and a crash point no larger than needed.
    #[test]
    fn a_broken_check_is_caught_shrunk_and_replayable() {
        let ti = TaskRef::new("acme", "docs", "r1", "ocr", 1).unwrap();
        let test = CrashTest::new(|k| {
            let ctx = k.context(ti.clone());
            for i in 0..4u8 {
                ctx.set(&format!("k{i}"), [i])?;
            }
            Ok(())
        })
        .damages(&[Damage::DropAll])
        .budget(50);
        // A check that demands everything, acknowledged or not: it fails
        // where the crash cut the run short.
        let failure = test
            .try_run(|k, _| {
                let n = k.context(ti.clone()).len().map_err(|e| e.to_string())?;
                if n == 4 {
                    Ok(())
                } else {
                    Err(format!("{n} keys"))
                }
            })
            .unwrap_err();
        assert_eq!(failure.case.damage, Damage::DropAll);
        // Every crash before the last write fails this check: shrunk, the
        // failure is the first point after the open.
        let opened = {
            let disk = SimDisk::new(0);
            let engine = Engine::open_with(Arc::new(disk.clone()), DIR, default_options()).unwrap();
            let opened = disk.ops();
            drop(engine);
            opened
        };
        assert!(opened > 0);
        assert_eq!(
            failure.case.crash_at, opened,
            "shrunk to the smallest point"
        );
        assert!(
            failure
                .to_string()
                .contains(&format!("WAYMARK_CRASH_CASE={}", failure.case))
        );
        // A check that holds only what was acknowledged passes everywhere.
        let report = test.run(|k, acked| {
            for i in 0..4u8 {
                let got = k
                    .context(ti.clone())
                    .get(&format!("k{i}"))
                    .map_err(|e| e.to_string())?;
                if let Some(v) = acked.last_value(&ti, &format!("k{i}"))
                    && got.as_deref() != Some(v)
                {
                    return Err(format!("k{i} lost"));
                }
            }
            Ok(())
        });
        assert!(report.images > 10);
        assert!(report.crashed_with_acks > 0);
    }
}
