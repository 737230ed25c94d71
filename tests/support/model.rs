//! A model of the views, written independently of the engine: plain maps
//! keyed by names (no key encoding, no memtables), fed the same events.
//! Tests compare what the engine's views return with what the model holds.

use std::collections::BTreeMap;

use proptest::prelude::*;
use waymark_engine::{
    AttemptScope, Event, EventBody, RunScope, RunStatus, TaskScope, TaskStatus, ViewReader,
};

/// Attempt state of a run: (task, try, key) → (value, meta).
pub type AttemptKv = BTreeMap<(String, u32, String), (Vec<u8>, Vec<u8>)>;

/// One run's state in the model.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunModel {
    /// (task, try, key) → (value, meta)
    pub kv: AttemptKv,
    /// (task, key) → value
    pub task_kv: BTreeMap<(String, String), Vec<u8>>,
    /// key → (value, immutable)
    pub shared: BTreeMap<String, (Vec<u8>, bool)>,
    /// task → try → status
    pub tasks: BTreeMap<String, BTreeMap<u32, TaskStatus>>,
    /// `Some` once a run or task status was recorded.
    pub status: Option<RunStatus>,
    /// name → captured (kv, task_kv, shared)
    pub checkpoints: BTreeMap<String, Captured>,
}

/// What a checkpoint captured.
pub type Captured = (
    AttemptKv,
    BTreeMap<(String, String), Vec<u8>>,
    BTreeMap<String, (Vec<u8>, bool)>,
);

/// The model of every run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Model {
    /// Every run that any event touched, until purged.
    pub runs: BTreeMap<RunScope, RunModel>,
}

impl Model {
    /// Applies one event.
    pub fn apply(&mut self, event: &Event) {
        match &event.body {
            EventBody::Put {
                attempt,
                key,
                value,
                meta,
                ..
            } => {
                self.run(&attempt.task.run).kv.insert(
                    (attempt.task.task.clone(), attempt.try_number, key.clone()),
                    (value.clone(), meta.clone()),
                );
            }
            EventBody::Delete { attempt, key } => {
                self.run(&attempt.task.run).kv.remove(&(
                    attempt.task.task.clone(),
                    attempt.try_number,
                    key.clone(),
                ));
            }
            EventBody::ClearTask { task } => {
                self.run(&task.run)
                    .kv
                    .retain(|(t, _, _), _| *t != task.task);
            }
            EventBody::TaskPut {
                task, key, value, ..
            } => {
                self.run(&task.run)
                    .task_kv
                    .insert((task.task.clone(), key.clone()), value.clone());
            }
            EventBody::TaskDelete { task, key } => {
                self.run(&task.run)
                    .task_kv
                    .remove(&(task.task.clone(), key.clone()));
            }
            EventBody::TaskStatus {
                attempt, status, ..
            } => {
                let run = self.run(&attempt.task.run);
                run.tasks
                    .entry(attempt.task.task.clone())
                    .or_default()
                    .insert(attempt.try_number, status.clone());
                run.status.get_or_insert(RunStatus::Created);
            }
            EventBody::RunStatus { run, status, .. } => {
                self.run(run).status = Some(*status);
            }
            EventBody::Checkpoint { run, name } => {
                let r = self.run(run);
                let captured = (r.kv.clone(), r.task_kv.clone(), r.shared.clone());
                r.checkpoints.insert(name.clone(), captured);
            }
            EventBody::RestoreCheckpoint { run, name } => {
                let r = self.run(run);
                if let Some((kv, task_kv, shared)) = r.checkpoints.get(name).cloned() {
                    r.kv = kv;
                    r.task_kv = task_kv;
                    r.shared = shared;
                }
            }
            EventBody::SharedPut {
                run,
                key,
                value,
                immutable,
                ..
            } => {
                let r = self.run(run);
                if !r.shared.get(key).is_some_and(|(_, imm)| *imm) {
                    r.shared.insert(key.clone(), (value.clone(), *immutable));
                }
            }
            EventBody::DeleteCheckpoint { run, name } => {
                self.run(run).checkpoints.remove(name);
            }
            EventBody::PurgeRun { run } => {
                self.runs.remove(run);
            }
        }
    }

    fn run(&mut self, run: &RunScope) -> &mut RunModel {
        self.runs.entry(run.clone()).or_default()
    }

    /// Checks every read of `views` over `universe` against the model.
    pub fn check(&self, views: &ViewReader, universe: &Universe) -> Result<(), String> {
        let empty = RunModel::default();
        for run in &universe.runs {
            let m = self.runs.get(run).unwrap_or(&empty);
            for task in &universe.tasks {
                let scope = TaskScope {
                    run: run.clone(),
                    task: task.clone(),
                };
                for try_number in 1..=universe.tries {
                    let attempt = AttemptScope {
                        task: scope.clone(),
                        try_number,
                    };
                    let got: BTreeMap<String, (Vec<u8>, Vec<u8>)> = views
                        .attempt_entries(&attempt)
                        .map_err(|e| e.to_string())?
                        .into_iter()
                        .map(|(k, v)| (k, (v.value, v.meta)))
                        .collect();
                    let want: BTreeMap<String, (Vec<u8>, Vec<u8>)> =
                        m.kv.iter()
                            .filter(|((t, n, _), _)| t == task && *n == try_number)
                            .map(|((_, _, k), v)| (k.clone(), v.clone()))
                            .collect();
                    if got != want {
                        return Err(format!(
                            "attempt {attempt:?}: views {got:?}, model {want:?}"
                        ));
                    }
                    for key in &universe.keys {
                        let got = views
                            .get(&attempt, key)
                            .map_err(|e| e.to_string())?
                            .map(|v| v.value);
                        if got.as_ref() != want.get(key).map(|v| &v.0) {
                            return Err(format!("get {attempt:?} {key:?}: views {got:?}"));
                        }
                    }
                }
                let got: BTreeMap<String, Vec<u8>> = views
                    .task_state_entries(&scope)
                    .map_err(|e| e.to_string())?
                    .into_iter()
                    .map(|(k, v)| (k, v.value))
                    .collect();
                let want: BTreeMap<String, Vec<u8>> = m
                    .task_kv
                    .iter()
                    .filter(|((t, _), _)| t == task)
                    .map(|((_, k), v)| (k.clone(), v.clone()))
                    .collect();
                if got != want {
                    return Err(format!(
                        "task state {scope:?}: views {got:?}, model {want:?}"
                    ));
                }
                let got = views.task(&scope).map_err(|e| e.to_string())?;
                let want = m.tasks.get(task);
                match (got, want) {
                    (None, None) => {}
                    (Some(got), Some(want)) => {
                        let (latest, status) = want.iter().next_back().expect("non-empty");
                        let tries: Vec<u32> = got.attempts.iter().map(|a| a.try_number).collect();
                        let want_tries: Vec<u32> = want.keys().copied().collect();
                        if got.latest_try != *latest || &got.status != status || tries != want_tries
                        {
                            return Err(format!("task {scope:?}: views {got:?}, model {want:?}"));
                        }
                    }
                    (got, want) => {
                        return Err(format!("task {scope:?}: views {got:?}, model {want:?}"));
                    }
                }
            }
            let got = views.run(run).map_err(|e| e.to_string())?;
            match (&got, m.status) {
                (None, None) => {}
                (Some(got), Some(status)) => {
                    let mut counts = waymark_engine::TaskCounts::default();
                    for tries in m.tasks.values() {
                        let (_, latest) = tries.iter().next_back().expect("non-empty");
                        match latest {
                            TaskStatus::Scheduled => counts.scheduled += 1,
                            TaskStatus::Running => counts.running += 1,
                            TaskStatus::Succeeded { .. } => counts.succeeded += 1,
                            TaskStatus::Failed { .. } => counts.failed += 1,
                            TaskStatus::Interrupted => counts.interrupted += 1,
                            TaskStatus::Cancelled => counts.cancelled += 1,
                        }
                    }
                    if got.status != status || got.task_counts != counts {
                        return Err(format!(
                            "run {run:?}: views {got:?}, model {status:?} {counts:?}"
                        ));
                    }
                }
                (got, want) => return Err(format!("run {run:?}: views {got:?}, model {want:?}")),
            }
            for key in &universe.keys {
                let got = views
                    .shared(run, key)
                    .map_err(|e| e.to_string())?
                    .map(|v| (v.value, v.immutable));
                if got.as_ref() != m.shared.get(key) {
                    return Err(format!("shared {run:?} {key:?}: views {got:?}"));
                }
            }
            let got: Vec<String> = views
                .checkpoints(run)
                .map_err(|e| e.to_string())?
                .into_iter()
                .map(|(name, record)| {
                    assert!(record.verify(), "checkpoint {name} fails its checksum");
                    name
                })
                .collect();
            let want: Vec<String> = m.checkpoints.keys().cloned().collect();
            if got != want {
                return Err(format!(
                    "checkpoints {run:?}: views {got:?}, model {want:?}"
                ));
            }
        }
        for tenant in universe.runs.iter().map(|r| &r.tenant) {
            let got: Vec<RunScope> = views
                .runs(tenant, None)
                .map_err(|e| e.to_string())?
                .into_iter()
                .map(|(r, _)| r)
                .collect();
            let want: Vec<RunScope> = self
                .runs
                .iter()
                .filter(|(r, m)| &r.tenant == tenant && m.status.is_some())
                .map(|(r, _)| r.clone())
                .collect();
            let (mut got, mut want) = (got, want);
            got.sort();
            want.sort();
            if got != want {
                return Err(format!("runs of {tenant:?}: views {got:?}, model {want:?}"));
            }
        }
        Ok(())
    }
}

/// The names events are drawn from: few, and crafted to collide if the key
/// encoding let them ("a/b"+"c" against "a"+"b/c", separators, NUL, empty).
#[derive(Clone, Debug)]
pub struct Universe {
    /// Runs events touch.
    pub runs: Vec<RunScope>,
    /// Task names in every run.
    pub tasks: Vec<String>,
    /// Keys of attempt state, task state and shared variables.
    pub keys: Vec<String>,
    /// Try numbers run from 1 to this.
    pub tries: u32,
}

impl Default for Universe {
    fn default() -> Universe {
        let run = |tenant: &str, dag: &str, run: &str| RunScope {
            tenant: tenant.into(),
            dag: dag.into(),
            run: run.into(),
        };
        Universe {
            runs: vec![
                run("acme", "docs", "a/b"),
                run("acme", "docs", "a"),
                run("acme", "docs/a", ""),
                run("beta", "docs", "a/b"),
            ],
            tasks: vec!["c".into(), "b/c".into(), "".into(), "x\0y".into()],
            keys: vec!["k".into(), "k:1".into(), "".into()],
            tries: 3,
        }
    }
}

/// A strategy for one event over `universe`.
pub fn event(universe: &Universe) -> impl Strategy<Value = Event> + use<> {
    let runs = universe.runs.clone();
    let tasks = universe.tasks.clone();
    let keys = universe.keys.clone();
    let tries = universe.tries;
    let run = proptest::sample::select(runs);
    let task = (run.clone(), proptest::sample::select(tasks))
        .prop_map(|(run, task)| TaskScope { run, task });
    let attempt =
        (task.clone(), 1..=tries).prop_map(|(task, try_number)| AttemptScope { task, try_number });
    let key = proptest::sample::select(keys);
    // Mostly a few random bytes; sometimes a few hundred that compress
    // (which an engine with compression on stores as zstd frames).
    let value = prop_oneof![
        6 => proptest::collection::vec(any::<u8>(), 0..8),
        1 => (any::<u8>(), 64..600usize).prop_map(|(first, len)| {
            b"invoice total 42.00 "
                .iter()
                .cycle()
                .skip(usize::from(first % 20))
                .take(len)
                .copied()
                .collect()
        }),
    ];
    let status = prop_oneof![
        Just(TaskStatus::Scheduled),
        Just(TaskStatus::Running),
        value
            .clone()
            .prop_map(|result| TaskStatus::Succeeded { result }),
        Just(TaskStatus::Failed {
            error: "boom".into(),
            kind: "transient".into()
        }),
        Just(TaskStatus::Interrupted),
        Just(TaskStatus::Cancelled),
    ];
    let run_status = prop_oneof![
        Just(RunStatus::Created),
        Just(RunStatus::Running),
        Just(RunStatus::Succeeded),
        Just(RunStatus::Failed),
    ];
    let checkpoint = proptest::sample::select(vec!["one".to_string(), "two".to_string()]);
    let body = prop_oneof![
        8 => (attempt.clone(), key.clone(), value.clone(), value.clone())
            .prop_map(|(attempt, key, value, meta)| EventBody::Put { codec: waymark_engine::Codec::Raw, attempt: attempt.into(), key, value, meta }),
        2 => (attempt.clone(), key.clone()).prop_map(|(attempt, key)| EventBody::Delete { attempt, key }),
        1 => task.clone().prop_map(|task| EventBody::ClearTask { task }),
        3 => (task.clone(), key.clone(), value.clone())
            .prop_map(|(task, key, value)| EventBody::TaskPut { codec: waymark_engine::Codec::Raw, task, key, value }),
        1 => (task.clone(), key.clone()).prop_map(|(task, key)| EventBody::TaskDelete { task, key }),
        3 => (attempt, status).prop_map(|(attempt, status)| EventBody::TaskStatus {
            attempt,
            status,
            worker: "w1".into(),
        }),
        1 => (run.clone(), run_status).prop_map(|(run, status)| EventBody::RunStatus {
            run,
            status,
            parent: None,
        }),
        2 => (run.clone(), key, value, any::<bool>()).prop_map(|(run, key, value, immutable)| {
            EventBody::SharedPut { codec: waymark_engine::Codec::Raw, run, key, value, immutable }
        }),
        1 => (run.clone(), checkpoint.clone()).prop_map(|(run, name)| EventBody::Checkpoint { run, name }),
        1 => (run.clone(), checkpoint.clone()).prop_map(|(run, name)| EventBody::RestoreCheckpoint { run, name }),
        1 => (run.clone(), checkpoint.clone()).prop_map(|(run, name)| EventBody::DeleteCheckpoint { run, name }),
        1 => run.prop_map(|run| EventBody::PurgeRun { run }),
    ];
    (body, any::<u32>()).prop_map(|(body, ts)| Event {
        ts_micros: i64::from(ts),
        body,
    })
}
