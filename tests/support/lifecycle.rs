//! Random lifecycle calls through one kernel, and a sequential model of the
//! lifecycle to check a log against: what `tests/kernel_lifecycle_property.rs`
//! and the crash torture drive. The model is written out here, not taken
//! from the kernel's tables, so that a rule the kernel gets wrong shows.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use waymark_engine::storage::SimDisk;
use waymark_engine::{Event, EventBody, Lsn, Options, RunStatus, TaskStatusKind};
use waymark_kernel::{Kernel, RunRef, TaskRef};

/// The tasks the calls are made on.
pub const TASKS: [&str; 3] = ["ocr", "tables", "summary"];

/// The one run they belong to.
pub fn run() -> RunRef {
    RunRef::new("acme", "documents", "run-42").unwrap()
}

/// A kernel on `disk`, with small segments.
pub fn open(disk: &SimDisk) -> waymark_kernel::Result<Kernel> {
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
pub enum Call {
    /// `schedule`, `start`, `succeed`, `fail` or `cancel` of an attempt.
    Transition(TaskRef, TaskStatusKind),
    /// An atomic finish: an output and the status in one batch.
    FinishWith(TaskRef, TaskStatusKind),
    /// `clear_for_retry` of an attempt.
    Retry(TaskRef),
    /// `resume` of the run.
    Resume,
    /// `pause_run`.
    Pause,
    /// `resume_run`.
    Unpause,
}

/// What a call got.
#[derive(Clone, Debug)]
pub enum Outcome {
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
pub enum Shape {
    /// A status change of one attempt (with outputs before it, for an
    /// atomic finish).
    Transition {
        /// The task.
        task: String,
        /// The attempt's try.
        try_number: u32,
        /// The status it moved to.
        to: TaskStatusKind,
        /// The writes before the status.
        outputs: usize,
    },
    /// A retry: the task's attempt state cleared, attempt `next` scheduled.
    Retry {
        /// The task.
        task: String,
        /// The attempt scheduled.
        next: u32,
    },
    /// A resume: these attempts recorded interrupted.
    Interrupts(BTreeSet<(String, u32)>),
    /// A run status change.
    Run(RunStatus),
}

/// The shape of a batch the lifecycle calls write, or what is odd about it.
pub fn shape(events: &[Event]) -> Result<Shape, String> {
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
pub struct Model {
    /// (task, try) → status.
    pub status: BTreeMap<(String, u32), TaskStatusKind>,
    /// task → latest try.
    pub latest: BTreeMap<String, u32>,
    /// Tasks with a status or state.
    pub known: BTreeSet<String>,
    /// The run's status.
    pub run: Option<RunStatus>,
}

/// The lifecycle, written out here rather than taken from the kernel: the
/// statuses each one may follow (`None`: no status yet).
pub fn may_follow(to: TaskStatusKind) -> &'static [Option<TaskStatusKind>] {
    use TaskStatusKind as K;
    match to {
        K::Scheduled => &[None],
        K::Running => &[None, Some(K::Scheduled)],
        K::Succeeded | K::Failed | K::Interrupted => &[Some(K::Running)],
        K::Cancelled => &[None, Some(K::Scheduled), Some(K::Running)],
    }
}

/// Whether an attempt in this status is live (scheduled or running).
pub fn live(kind: TaskStatusKind) -> bool {
    matches!(kind, TaskStatusKind::Scheduled | TaskStatusKind::Running)
}

impl Model {
    /// An attempt's status.
    pub fn status_of(&self, task: &str, try_number: u32) -> Option<TaskStatusKind> {
        self.status.get(&(task.to_string(), try_number)).copied()
    }

    /// A task's latest try (0: none).
    pub fn latest(&self, task: &str) -> u32 {
        self.latest.get(task).copied().unwrap_or(0)
    }

    /// A live attempt of `task` other than `except`, if any.
    pub fn other_live(&self, task: &str, except: u32) -> Option<(u32, TaskStatusKind)> {
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
    pub fn apply(&mut self, shape: &Shape) -> Result<(), String> {
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
pub fn drive(kernel: &Kernel, seed: u64, calls: usize) -> Vec<(Call, Outcome)> {
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
pub fn expected(call: &Call) -> Option<Shape> {
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
pub fn may_be(call: &Call, shape: &Shape) -> bool {
    match (call, shape) {
        (Call::Retry(ti), Shape::Retry { task, next }) => {
            task == ti.task_id() && *next == ti.try_number() + 1
        }
        (Call::Resume, Shape::Interrupts(_)) => true,
        (call, shape) => expected(call).as_ref() == Some(shape),
    }
}
