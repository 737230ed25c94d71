//! Guards the atomicity of the kernel's decisions under racing threads:
//! several threads drive random lifecycle calls (schedule, start, succeed,
//! an atomic finish with outputs, fail, cancel, retry, resume after a
//! crash, pause and resume of the run) on a few tasks of one run, through
//! one kernel on the simulated disk. Afterwards the log, read in LSN
//! order, must be a legal sequential history: every batch is a call the
//! lifecycle allows from the state the batches before it left. Every `Ok`
//! a thread got is in it (at its LSN, with its content), and nothing a
//! thread was refused is: each batch of the log is some acknowledged
//! call's. Half the cases also crash the disk in the middle of the run
//! (at a fraction of the operations a dry run made) with a random damage:
//! then a call that failed with an I/O error may or may not be in the log,
//! every acknowledged one still is, and the reopened views agree with the
//! history. The seed replays each thread's calls (the interleaving of
//! threads is the machine's). `WAYMARK_PROPTEST_CASES` raises the case
//! count.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Barrier};

use proptest::prelude::*;
use waymark_engine::storage::{Damage, SimDisk};
use waymark_engine::{Event, EventBody, Lsn, Options, RunStatus, TaskStatusKind};
use waymark_kernel::{Kernel, RunRef, TaskRef};
use waymark_tests::{CrashAt, proptest_cases};

const TASKS: [&str; 3] = ["ocr", "tables", "summary"];

fn run() -> RunRef {
    RunRef::new("acme", "documents", "run-42").unwrap()
}

fn open(disk: &SimDisk) -> waymark_kernel::Result<Kernel> {
    Kernel::builder()
        .worker_id("prop")
        .options(Options {
            segment_bytes_max: 1 << 14,
            ..Options::default()
        })
        .open_on(Arc::new(disk.clone()), "/state")
}

/// A call a thread made.
#[derive(Clone, Debug)]
enum Call {
    Transition(TaskRef, TaskStatusKind),
    /// An atomic finish: an output and the status in one batch.
    FinishWith(TaskRef, TaskStatusKind),
    Retry(TaskRef),
    Resume,
    Pause,
    Unpause,
}

/// What a call got.
#[derive(Clone, Debug)]
enum Outcome {
    /// Written, at this LSN (`None`: a resume that found nothing running).
    Written(Option<Lsn>),
    /// A retry, written: the next attempt it made.
    Retried(u32),
    /// Refused by the state it found: nothing written.
    Refused,
    /// An I/O error (the disk crashed): written or not.
    Unknown,
}

/// The shape of one batch of the log.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Shape {
    /// A status change of one attempt (with outputs before it, for an
    /// atomic finish).
    Transition {
        task: String,
        try_number: u32,
        to: TaskStatusKind,
        outputs: usize,
    },
    /// A retry: the task's attempt state cleared, attempt `next` scheduled.
    Retry { task: String, next: u32 },
    /// A resume: these attempts recorded interrupted.
    Interrupts(BTreeSet<(String, u32)>),
    /// A run status change.
    Run(RunStatus),
}

fn shape(events: &[Event]) -> Result<Shape, String> {
    let status = |e: &Event| match &e.body {
        EventBody::TaskStatus {
            attempt, status, ..
        } => Some((attempt.task.task.clone(), attempt.try_number, status.kind())),
        _ => None,
    };
    if !events.is_empty()
        && events
            .iter()
            .all(|e| status(e).is_some_and(|(_, _, k)| k == TaskStatusKind::Interrupted))
    {
        return Ok(Shape::Interrupts(
            events
                .iter()
                .filter_map(status)
                .map(|(t, n, _)| (t, n))
                .collect(),
        ));
    }
    match events {
        [e] if matches!(e.body, EventBody::RunStatus { .. }) => {
            let EventBody::RunStatus { status, .. } = &e.body else {
                unreachable!("matched above")
            };
            return Ok(Shape::Run(*status));
        }
        [clear, scheduled] if matches!(clear.body, EventBody::ClearTask { .. }) => {
            let EventBody::ClearTask { task } = &clear.body else {
                unreachable!("matched above")
            };
            if let Some((t, next, TaskStatusKind::Scheduled)) = status(scheduled)
                && t == task.task
            {
                return Ok(Shape::Retry { task: t, next });
            }
        }
        _ => {}
    }
    let (last, outputs) = events.split_last().ok_or("an empty batch")?;
    let (task, try_number, to) = status(last).ok_or_else(|| format!("a batch {events:?}"))?;
    for e in outputs {
        match &e.body {
            EventBody::Put { attempt, .. }
                if attempt.task.task == task && attempt.try_number == try_number => {}
            EventBody::TaskPut { task: t, .. } if t.task == task => {}
            _ => return Err(format!("a batch {events:?}")),
        }
    }
    Ok(Shape::Transition {
        task,
        try_number,
        to,
        outputs: outputs.len(),
    })
}

/// What the batches applied so far add up to, for the lifecycle's rules.
#[derive(Debug, Default)]
struct Model {
    status: BTreeMap<(String, u32), TaskStatusKind>,
    latest: BTreeMap<String, u32>,
    /// Tasks with a status or state.
    known: BTreeSet<String>,
    run: Option<RunStatus>,
}

/// The lifecycle, written out here rather than taken from the kernel: the
/// statuses each one may follow (`None`: no status yet).
fn may_follow(to: TaskStatusKind) -> &'static [Option<TaskStatusKind>] {
    use TaskStatusKind as K;
    match to {
        K::Scheduled => &[None],
        K::Running => &[None, Some(K::Scheduled)],
        K::Succeeded | K::Failed | K::Interrupted => &[Some(K::Running)],
        K::Cancelled => &[None, Some(K::Scheduled), Some(K::Running)],
    }
}

fn live(kind: TaskStatusKind) -> bool {
    matches!(kind, TaskStatusKind::Scheduled | TaskStatusKind::Running)
}

impl Model {
    fn status_of(&self, task: &str, try_number: u32) -> Option<TaskStatusKind> {
        self.status.get(&(task.to_string(), try_number)).copied()
    }

    fn latest(&self, task: &str) -> u32 {
        self.latest.get(task).copied().unwrap_or(0)
    }

    /// A live attempt of `task` other than `except`, if any.
    fn other_live(&self, task: &str, except: u32) -> Option<(u32, TaskStatusKind)> {
        self.status
            .iter()
            .find(|((t, n), k)| t == task && *n != except && live(**k))
            .map(|((_, n), k)| (*n, *k))
    }

    fn set(&mut self, task: &str, try_number: u32, to: TaskStatusKind) {
        self.status.insert((task.to_string(), try_number), to);
        let latest = self.latest.entry(task.to_string()).or_default();
        *latest = (*latest).max(try_number);
        self.known.insert(task.to_string());
        self.run.get_or_insert(RunStatus::Created);
    }

    /// Checks that `shape` is allowed now, then applies it.
    fn apply(&mut self, shape: &Shape) -> Result<(), String> {
        match shape {
            Shape::Transition {
                task,
                try_number,
                to,
                ..
            } => {
                let from = self.status_of(task, *try_number);
                if !may_follow(*to).contains(&from) {
                    return Err(format!("{task}#{try_number}: {from:?} -> {to}"));
                }
                // A transition that may make an attempt: no later one, and
                // no other live one (one live attempt a task at most).
                if matches!(
                    to,
                    TaskStatusKind::Scheduled | TaskStatusKind::Running | TaskStatusKind::Cancelled
                ) {
                    if self.latest(task) > *try_number {
                        return Err(format!(
                            "{task}#{try_number} {to} after try {} exists",
                            self.latest(task)
                        ));
                    }
                    if let Some((n, k)) = self.other_live(task, *try_number) {
                        return Err(format!("{task}#{try_number} {to} while #{n} is {k}"));
                    }
                }
                if *to == TaskStatusKind::Running
                    && !matches!(self.run, Some(RunStatus::Created | RunStatus::Running))
                {
                    return Err(format!(
                        "{task}#{try_number} started in a {:?} run",
                        self.run
                    ));
                }
                self.set(task, *try_number, *to);
            }
            Shape::Retry { task, next } => {
                let retried = next - 1;
                if self.latest(task) > retried {
                    return Err(format!(
                        "retry of {task}#{retried} after try {} exists",
                        self.latest(task)
                    ));
                }
                if let Some((n, k)) = self.other_live(task, *next) {
                    return Err(format!("retry of {task}#{retried} while #{n} is {k}"));
                }
                if !self.known.contains(task) {
                    return Err(format!("retry of unknown {task}"));
                }
                self.set(task, *next, TaskStatusKind::Scheduled);
            }
            Shape::Interrupts(attempts) => {
                for (task, n) in attempts {
                    let status = self.status_of(task, *n);
                    if status != Some(TaskStatusKind::Running) {
                        return Err(format!("{task}#{n} interrupted from {status:?}"));
                    }
                    self.set(task, *n, TaskStatusKind::Interrupted);
                }
            }
            Shape::Run(to) => {
                let from = match to {
                    RunStatus::Paused => RunStatus::Running,
                    RunStatus::Running if self.run.is_some() => RunStatus::Paused,
                    // The setup's start of the run.
                    RunStatus::Running => {
                        self.run = Some(RunStatus::Running);
                        return Ok(());
                    }
                    other => return Err(format!("run status {other} is never set here")),
                };
                if self.run != Some(from) {
                    return Err(format!("run {:?} -> {to}", self.run));
                }
                self.run = Some(*to);
            }
        }
        Ok(())
    }
}

/// One thread's calls: random ones from its own seed, each on the state it
/// reads just before.
fn drive(kernel: &Kernel, seed: u64, calls: usize) -> Vec<(Call, Outcome)> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let run = run();
    let mut out = Vec::with_capacity(calls);
    for _ in 0..calls {
        let task = run.task(TASKS[rng.usize(..TASKS.len())]).unwrap();
        let Ok(record) = kernel.task(&task) else {
            break;
        };
        let latest = record.map_or(0, |r| r.latest_try);
        let try_number = match rng.u8(0..20) {
            0..14 => latest.max(1),
            14..17 => latest + 1,
            _ => latest.saturating_sub(1).max(1),
        };
        let ti = task.with_try(try_number).unwrap();
        let call = match rng.u8(0..100) {
            0..10 => Call::Transition(ti, TaskStatusKind::Scheduled),
            10..32 => Call::Transition(ti, TaskStatusKind::Running),
            32..44 => Call::Transition(ti, TaskStatusKind::Succeeded),
            44..54 => Call::FinishWith(
                ti,
                if rng.bool() {
                    TaskStatusKind::Succeeded
                } else {
                    TaskStatusKind::Failed
                },
            ),
            54..66 => Call::Transition(ti, TaskStatusKind::Failed),
            66..71 => Call::Transition(ti, TaskStatusKind::Cancelled),
            71..88 => Call::Retry(ti),
            88..93 => Call::Resume,
            93..97 => Call::Pause,
            _ => Call::Unpause,
        };
        let result: waymark_kernel::Result<Outcome> = match &call {
            Call::Transition(ti, to) => match to {
                TaskStatusKind::Scheduled => kernel.schedule(ti),
                TaskStatusKind::Running => kernel.start(ti),
                TaskStatusKind::Succeeded => kernel.succeed(ti, b"ok".to_vec()),
                TaskStatusKind::Failed => kernel.fail(ti, "boom", "transient"),
                _ => kernel.cancel(ti),
            }
            .map(|lsn| Outcome::Written(Some(lsn))),
            Call::FinishWith(ti, to) => {
                let ctx = kernel.context(ti.clone());
                let batch = ctx
                    .batch()
                    .set("output", b"rows")
                    .set_task_state("cursor", b"done");
                match to {
                    TaskStatusKind::Succeeded => batch.succeed(b"ok".to_vec()),
                    _ => batch.fail("boom", "transient"),
                }
                .commit()
                .map(Outcome::Written)
            }
            Call::Retry(ti) => kernel
                .clear_for_retry(ti)
                .map(|next| Outcome::Retried(next.try_number())),
            Call::Resume => kernel.resume(&run).map(|s| Outcome::Written(s.recorded)),
            Call::Pause => kernel
                .pause_run(&run)
                .map(|lsn| Outcome::Written(Some(lsn))),
            Call::Unpause => kernel
                .resume_run(&run)
                .map(|lsn| Outcome::Written(Some(lsn))),
        };
        let outcome = match result {
            Ok(outcome) => outcome,
            Err(e) if e.is_refusal() => Outcome::Refused,
            Err(_) => Outcome::Unknown,
        };
        let stop = matches!(outcome, Outcome::Unknown);
        out.push((call, outcome));
        if stop {
            break;
        }
    }
    out
}

/// The shape an acknowledged call's batch must have.
fn expected(call: &Call) -> Option<Shape> {
    let transition = |ti: &TaskRef, to: &TaskStatusKind, outputs| Shape::Transition {
        task: ti.task_id().into(),
        try_number: ti.try_number(),
        to: *to,
        outputs,
    };
    Some(match call {
        Call::Transition(ti, to) => transition(ti, to, 0),
        Call::FinishWith(ti, to) => transition(ti, to, 2),
        Call::Pause => Shape::Run(RunStatus::Paused),
        Call::Unpause => Shape::Run(RunStatus::Running),
        Call::Retry(_) | Call::Resume => return None,
    })
}

/// Whether a batch of `shape` may be the write of `call`, whose outcome
/// is unknown.
fn may_be(call: &Call, shape: &Shape) -> bool {
    match (call, shape) {
        (Call::Retry(ti), Shape::Retry { task, next }) => {
            task == ti.task_id() && *next == ti.try_number() + 1
        }
        (Call::Resume, Shape::Interrupts(_)) => true,
        (call, shape) => expected(call).as_ref() == Some(shape),
    }
}

/// The whole case: setup, racing threads, an optional crash, then the
/// checks on the log as the reopened disk holds it.
fn check(
    seed: u64,
    threads: usize,
    calls: usize,
    crash_at: CrashAt,
    damage: Damage,
) -> Result<(), TestCaseError> {
    let race = |disk: &SimDisk| -> (Option<Lsn>, Vec<Vec<(Call, Outcome)>>) {
        let Ok(kernel) = open(disk) else {
            return (None, Vec::new());
        };
        let Ok(setup) = kernel.set_run_status(&run(), RunStatus::Running, None) else {
            return (None, Vec::new());
        };
        let barrier = Barrier::new(threads);
        let per_thread = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let (kernel, barrier) = (&kernel, &barrier);
                    s.spawn(move || {
                        barrier.wait();
                        drive(kernel, seed ^ ((t as u64 + 1) << 48), calls)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        (Some(setup), per_thread)
    };
    let crash_after = crash_at.ops(|| {
        let dry = SimDisk::new(seed);
        let Ok(kernel) = open(&dry) else {
            return Ok::<_, TestCaseError>((dry.ops(), dry.ops()));
        };
        let opened = dry.ops();
        drop(kernel);
        let dry = SimDisk::new(seed);
        race(&dry);
        Ok((opened, dry.ops()))
    })?;
    let disk = SimDisk::new(seed);
    if let Some(ops) = crash_after {
        disk.crash_after_ops(ops);
    }
    let (setup, per_thread) = race(&disk);
    let crashed = disk.has_crashed();
    let disk = disk.reboot(damage);
    let kernel = open(&disk).map_err(|e| TestCaseError::fail(format!("reopen: {e}")))?;
    let calls: Vec<(Call, Outcome)> = per_thread.into_iter().flatten().collect();
    if !crashed {
        for (call, outcome) in &calls {
            prop_assert!(
                !matches!(outcome, Outcome::Unknown),
                "{call:?} failed without a crash"
            );
        }
    }

    // The log, in LSN order.
    let engine = kernel.engine().expect("on the engine");
    let mut cursor = engine.reader().cursor(Lsn(1));
    let mut log: Vec<(Lsn, Vec<Event>)> = Vec::new();
    while let Some(frame) = cursor
        .next_frame()
        .map_err(|e| TestCaseError::fail(format!("read the log: {e}")))?
    {
        log.push((frame.lsn(), frame.decode().unwrap()));
    }

    // Acknowledged calls, by LSN and (retries) by content; unknown ones.
    let mut by_lsn: BTreeMap<Lsn, (Shape, &Call)> = BTreeMap::new();
    let mut resumes: BTreeSet<Lsn> = BTreeSet::new();
    let mut retries: BTreeMap<(String, u32), usize> = BTreeMap::new();
    let mut unknown: Vec<&Call> = Vec::new();
    for (call, outcome) in &calls {
        match (call, outcome) {
            (Call::Resume, Outcome::Written(Some(lsn))) => {
                resumes.insert(*lsn);
            }
            (Call::Retry(ti), Outcome::Retried(next)) => {
                *retries.entry((ti.task_id().into(), *next)).or_default() += 1;
            }
            (call, Outcome::Written(Some(lsn))) => {
                let shape = expected(call).expect("an LSN is returned with a shape");
                prop_assert!(
                    by_lsn.insert(*lsn, (shape, call)).is_none(),
                    "two calls acknowledged with LSN {lsn}"
                );
            }
            (_, Outcome::Unknown) => unknown.push(call),
            _ => {}
        }
    }

    let mut model = Model::default();
    for (lsn, events) in &log {
        let shape = shape(events).map_err(|e| TestCaseError::fail(format!("LSN {lsn}: {e}")))?;
        let is_setup = model.run.is_none() && shape == Shape::Run(RunStatus::Running);
        model
            .apply(&shape)
            .map_err(|e| TestCaseError::fail(format!("LSN {lsn} is not allowed here: {e}")))?;
        // The setup's batch (acknowledged, or failed by the crash but
        // written).
        if is_setup {
            prop_assert!(setup.is_none_or(|s| s == *lsn), "the setup is at {setup:?}");
            continue;
        }
        if let Some((want, call)) = by_lsn.remove(lsn) {
            prop_assert_eq!(&want, &shape, "LSN {} is not what {:?} wrote", lsn, call);
            continue;
        }
        if resumes.remove(lsn) {
            prop_assert!(
                matches!(shape, Shape::Interrupts(_)),
                "LSN {lsn}: a resume wrote {shape:?}"
            );
            continue;
        }
        if let Shape::Retry { task, next } = &shape
            && let Some(n) = retries.get_mut(&(task.clone(), *next))
            && *n > 0
        {
            *n -= 1;
            continue;
        }
        let Some(i) = unknown.iter().position(|c| may_be(c, &shape)) else {
            return Err(TestCaseError::fail(format!(
                "LSN {lsn} ({shape:?}) is no acknowledged call's: a refused call was written"
            )));
        };
        unknown.swap_remove(i);
    }
    prop_assert!(by_lsn.is_empty(), "acknowledged and lost: {by_lsn:?}");
    prop_assert!(resumes.is_empty(), "acknowledged resumes lost: {resumes:?}");
    prop_assert!(
        retries.values().all(|n| *n == 0),
        "acknowledged retries lost: {retries:?}"
    );
    if let Some(setup) = setup {
        prop_assert!(log.iter().any(|(lsn, _)| *lsn == setup), "the setup lost");
    }

    // The reopened views agree with the history.
    for task in TASKS {
        let record = kernel.task(&run().task(task).unwrap()).unwrap();
        let latest = model.latest(task);
        prop_assert_eq!(
            record.as_ref().map_or(0, |r| r.latest_try),
            latest,
            "{}",
            task
        );
        if let Some(record) = record {
            for a in &record.attempts {
                prop_assert_eq!(
                    Some(a.status.kind()),
                    model.status_of(task, a.try_number),
                    "{}#{}",
                    task,
                    a.try_number
                );
            }
        }
    }
    prop_assert_eq!(
        kernel.run(&run()).unwrap().map(|r| r.status),
        model.run,
        "the run's status"
    );
    // And the kernel goes on: a resume after the crash is a legal call.
    if model.run.is_some() {
        kernel
            .resume(&run())
            .map_err(|e| TestCaseError::fail(format!("resume after reopen: {e}")))?;
    }
    Ok(())
}

fn crash_or_not() -> impl Strategy<Value = CrashAt> {
    prop_oneof![
        1 => Just(CrashAt::Never),
        1 => CrashAt::strategy(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(proptest_cases(48)))]

    #[test]
    fn racing_lifecycle_calls_leave_a_legal_history(
        seed in any::<u64>(),
        threads in 2..=4usize,
        calls in 4..=24usize,
        crash_at in crash_or_not(),
        damage in proptest::sample::select(Damage::ALL.to_vec()),
    ) {
        check(seed, threads, calls, crash_at, damage)?;
    }
}

/// The checker itself: a history with a second success of one attempt, or
/// a start in a paused run, is refused (a checker that passes everything
/// would pass a kernel that checks nothing).
#[test]
fn the_model_refuses_illegal_histories() {
    let t = |to| Shape::Transition {
        task: "ocr".into(),
        try_number: 1,
        to,
        outputs: 0,
    };
    let mut model = Model::default();
    model.apply(&Shape::Run(RunStatus::Running)).unwrap();
    model.apply(&t(TaskStatusKind::Running)).unwrap();
    model.apply(&t(TaskStatusKind::Succeeded)).unwrap();
    assert!(model.apply(&t(TaskStatusKind::Succeeded)).is_err());
    model.apply(&Shape::Run(RunStatus::Paused)).unwrap();
    let other = Shape::Transition {
        task: "tables".into(),
        try_number: 1,
        to: TaskStatusKind::Running,
        outputs: 0,
    };
    assert!(model.apply(&other).is_err(), "a start in a paused run");
    let retry = Shape::Retry {
        task: "ocr".into(),
        next: 2,
    };
    model.apply(&retry).unwrap();
    assert!(model.apply(&retry).is_err(), "a second next attempt");
}
