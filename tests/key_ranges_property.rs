//! Guards the ranges of the views: no key or name reaches outside its
//! tenant, run or task. Names are crafted to collide if the encoding let
//! them: prefixes of one another (`run-4`, `run-42`), separators
//! (`/`, `:`, NUL), bytes that sort last, multi-byte characters, and names
//! whose concatenations are equal (`a/` + `b` and `a` + `/b`). A random
//! sequence of writes, deletes, checkpoints, restores and purges over a
//! few such tenants, DAGs, runs, tasks and keys runs through the kernel on
//! the simulated disk, with snapshots in between (so that both the
//! memtable and the redb file hold ranges and range tombstones); then every
//! scope's reads are compared with a model, before and after a reopen:
//! attempt state per try, task state per task, shared variables and
//! checkpoints per run, and the run listing per tenant.
//! `WAYMARK_PROPTEST_CASES` raises the case count.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use proptest::prelude::*;
use waymark_engine::Options;
use waymark_engine::storage::SimDisk;
use waymark_kernel::{Error, Kernel, RunRef, TaskRef};
use waymark_tests::proptest_cases;

/// Pieces of crafted names: every name is one to three of them.
const PIECES: [&str; 12] = [
    "a",
    "a/",
    "/b",
    "b",
    ":",
    "\0",
    "run-4",
    "2",
    "\u{ff}",
    "é",
    "\u{10ffff}",
    " ",
];

fn name() -> impl Strategy<Value = String> {
    proptest::collection::vec(proptest::sample::select(PIECES.to_vec()), 1..=3)
        .prop_map(|pieces| pieces.concat())
}

/// The names a case draws its scopes from (duplicates collapse: the model
/// is keyed by name, as the views are).
#[derive(Clone, Debug)]
struct Names {
    tenants: Vec<String>,
    dags: Vec<String>,
    runs: Vec<String>,
    tasks: Vec<String>,
    keys: Vec<String>,
}

fn names() -> impl Strategy<Value = Names> {
    let few = || proptest::collection::vec(name(), 2..=3);
    (few(), few(), few(), few(), few()).prop_map(|(tenants, dags, runs, tasks, keys)| Names {
        tenants,
        dags,
        runs,
        tasks,
        keys,
    })
}

/// Indexes into `Names`: (tenant, dag, run).
type Run = (usize, usize, usize);

#[derive(Clone, Debug)]
enum Op {
    Set {
        run: Run,
        task: usize,
        try_number: u32,
        key: usize,
        value: u8,
    },
    Delete {
        run: Run,
        task: usize,
        try_number: u32,
        key: usize,
    },
    SetTaskState {
        run: Run,
        task: usize,
        key: usize,
        value: u8,
    },
    DeleteTaskState {
        run: Run,
        task: usize,
        key: usize,
    },
    SetShared {
        run: Run,
        key: usize,
        value: u8,
    },
    Checkpoint {
        run: Run,
        name: usize,
    },
    Restore {
        run: Run,
        name: usize,
    },
    Purge {
        run: Run,
    },
    Snapshot,
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    let run = || (0..3usize, 0..3usize, 0..3usize);
    let op = prop_oneof![
        6 => (run(), 0..3usize, 1..=2u32, 0..3usize, any::<u8>())
            .prop_map(|(run, task, try_number, key, value)| Op::Set { run, task, try_number, key, value }),
        1 => (run(), 0..3usize, 1..=2u32, 0..3usize)
            .prop_map(|(run, task, try_number, key)| Op::Delete { run, task, try_number, key }),
        3 => (run(), 0..3usize, 0..3usize, any::<u8>())
            .prop_map(|(run, task, key, value)| Op::SetTaskState { run, task, key, value }),
        1 => (run(), 0..3usize, 0..3usize)
            .prop_map(|(run, task, key)| Op::DeleteTaskState { run, task, key }),
        2 => (run(), 0..3usize, any::<u8>()).prop_map(|(run, key, value)| Op::SetShared { run, key, value }),
        1 => (run(), 0..3usize).prop_map(|(run, name)| Op::Checkpoint { run, name }),
        1 => (run(), 0..3usize).prop_map(|(run, name)| Op::Restore { run, name }),
        1 => run().prop_map(|run| Op::Purge { run }),
        1 => Just(Op::Snapshot),
    ];
    proptest::collection::vec(op, 10..80)
}

/// A run's state by name, as the kernel reads it.
#[derive(Clone, Debug, Default, PartialEq)]
struct RunModel {
    /// (task, try, key) → value.
    attempt: BTreeMap<(String, u32, String), Vec<u8>>,
    /// (task, key) → value.
    task: BTreeMap<(String, String), Vec<u8>>,
    shared: BTreeMap<String, Vec<u8>>,
}

impl RunModel {
    fn is_empty(&self) -> bool {
        self.attempt.is_empty() && self.task.is_empty() && self.shared.is_empty()
    }
}

#[derive(Default, Debug)]
struct Model {
    /// (tenant, dag, run) names → state.
    runs: BTreeMap<(String, String, String), RunModel>,
    /// (tenant, dag, run) names → checkpoint name → captured state.
    checkpoints: BTreeMap<(String, String, String), BTreeMap<String, RunModel>>,
}

struct Case<'a> {
    n: &'a Names,
}

impl Case<'_> {
    fn pick(v: &[String], i: usize) -> &str {
        &v[i % v.len()]
    }
    fn run_names(&self, (t, d, r): Run) -> (String, String, String) {
        (
            Self::pick(&self.n.tenants, t).into(),
            Self::pick(&self.n.dags, d).into(),
            Self::pick(&self.n.runs, r).into(),
        )
    }
    fn run_ref(&self, run: Run) -> RunRef {
        let (t, d, r) = self.run_names(run);
        RunRef::new(t, d, r).expect("crafted names are valid")
    }
    fn task(&self, i: usize) -> String {
        Self::pick(&self.n.tasks, i).into()
    }
    fn key(&self, i: usize) -> String {
        Self::pick(&self.n.keys, i).into()
    }
    fn ti(&self, run: Run, task: usize, try_number: u32) -> TaskRef {
        self.run_ref(run)
            .task(self.task(task))
            .and_then(|t| t.with_try(try_number))
            .expect("crafted names are valid")
    }
}

fn fail(what: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(what.to_string())
}

fn open(disk: &SimDisk) -> Result<Kernel, TestCaseError> {
    Kernel::builder()
        .options(Options {
            snapshots: waymark_engine::SnapshotOptions::manual(),
            // Small preallocated segments: zero-filling the default size on
            // the simulated disk would be most of the case's time.
            segment_bytes_max: 1 << 16,
            ..Options::default()
        })
        .open_on(Arc::new(disk.clone()), "/state")
        .map_err(fail)
}

fn apply(k: &Kernel, c: &Case, model: &mut Model, op: &Op) -> Result<(), TestCaseError> {
    match *op {
        Op::Set {
            run,
            task,
            try_number,
            key,
            value,
        } => {
            k.context(c.ti(run, task, try_number))
                .set(&c.key(key), [value])
                .map_err(fail)?;
            let m = model.runs.entry(c.run_names(run)).or_default();
            m.attempt
                .insert((c.task(task), try_number, c.key(key)), vec![value]);
        }
        Op::Delete {
            run,
            task,
            try_number,
            key,
        } => {
            k.context(c.ti(run, task, try_number))
                .delete(&c.key(key))
                .map_err(fail)?;
            let m = model.runs.entry(c.run_names(run)).or_default();
            m.attempt.remove(&(c.task(task), try_number, c.key(key)));
        }
        Op::SetTaskState {
            run,
            task,
            key,
            value,
        } => {
            k.context(c.ti(run, task, 1))
                .set_task_state(&c.key(key), [value])
                .map_err(fail)?;
            let m = model.runs.entry(c.run_names(run)).or_default();
            m.task.insert((c.task(task), c.key(key)), vec![value]);
        }
        Op::DeleteTaskState { run, task, key } => {
            k.context(c.ti(run, task, 1))
                .delete_task_state(&c.key(key))
                .map_err(fail)?;
            let m = model.runs.entry(c.run_names(run)).or_default();
            m.task.remove(&(c.task(task), c.key(key)));
        }
        Op::SetShared { run, key, value } => {
            k.set_shared(&c.run_ref(run), &c.key(key), [value], false)
                .map_err(fail)?;
            let m = model.runs.entry(c.run_names(run)).or_default();
            m.shared.insert(c.key(key), vec![value]);
        }
        Op::Checkpoint { run, name } => {
            let names = c.run_names(run);
            let state = model.runs.get(&names).cloned().unwrap_or_default();
            match k.checkpoint(&c.run_ref(run), &c.key(name)) {
                Ok(_) => {
                    model
                        .checkpoints
                        .entry(names)
                        .or_default()
                        .insert(c.key(name), state);
                }
                // Nothing to capture: only if the run has no state (a
                // check that looked at another run's range would differ).
                Err(Error::UnknownRun { .. }) => prop_assert!(
                    state.is_empty() && !model.checkpoints.contains_key(&names),
                    "checkpoint of {names:?}: unknown, yet it has state {state:?}"
                ),
                Err(e) => return Err(fail(format!("checkpoint: {e}"))),
            }
        }
        Op::Restore { run, name } => {
            let names = c.run_names(run);
            let captured = model
                .checkpoints
                .get(&names)
                .and_then(|m| m.get(&c.key(name)))
                .cloned();
            match (k.restore(&c.run_ref(run), &c.key(name)), captured) {
                (Ok(_), Some(state)) => {
                    model.runs.insert(names, state);
                }
                (Err(Error::UnknownCheckpoint { .. }), None) => {}
                (got, expected) => {
                    return Err(fail(format!(
                        "restore of {names:?}/{}: {got:?}, the model has {expected:?}",
                        c.key(name)
                    )));
                }
            }
        }
        Op::Purge { run } => {
            let names = c.run_names(run);
            match k.purge_run(&c.run_ref(run)) {
                Ok(_) | Err(Error::UnknownRun { .. }) => {}
                Err(e) => return Err(fail(format!("purge: {e}"))),
            }
            model.runs.remove(&names);
            model.checkpoints.remove(&names);
        }
        Op::Snapshot => {
            k.engine()
                .expect("on the engine")
                .snapshot()
                .map_err(fail)?;
        }
    }
    Ok(())
}

/// Every scope's reads against the model.
fn verify(k: &Kernel, c: &Case, model: &Model, when: &str) -> Result<(), TestCaseError> {
    let all_runs: BTreeSet<Run> = (0..3)
        .flat_map(|t| (0..3).flat_map(move |d| (0..3).map(move |r| (t, d, r))))
        .collect();
    for &run in &all_runs {
        let names = c.run_names(run);
        let expected = model.runs.get(&names).cloned().unwrap_or_default();
        let mut found = RunModel::default();
        for task in 0..3 {
            for try_number in 1..=2 {
                let entries = k
                    .context(c.ti(run, task, try_number))
                    .entries()
                    .map_err(fail)?;
                for (key, value) in entries {
                    found.attempt.insert((c.task(task), try_number, key), value);
                }
            }
            let entries = k
                .context(c.ti(run, task, 1))
                .task_state_entries()
                .map_err(fail)?;
            for (key, value) in entries {
                found.task.insert((c.task(task), key), value);
            }
        }
        for key in 0..3 {
            if let Some(value) = k.shared(&c.run_ref(run), &c.key(key)).map_err(fail)? {
                found.shared.insert(c.key(key), value);
            }
        }
        prop_assert_eq!(&found, &expected, "{}: the state of run {:?}", when, names);
        let checkpoints: BTreeSet<String> = k
            .checkpoints(&c.run_ref(run))
            .map_err(fail)?
            .into_iter()
            .map(|i| i.name)
            .collect();
        let expected: BTreeSet<String> = model
            .checkpoints
            .get(&names)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        prop_assert_eq!(
            checkpoints,
            expected,
            "{}: the checkpoints of run {:?}",
            when,
            names
        );
    }
    for tenant in &c.n.tenants {
        for info in k.runs(tenant, None).map_err(fail)? {
            prop_assert_eq!(
                info.run.tenant(),
                tenant.as_str(),
                "{}: a run of another tenant",
                when
            );
        }
        for dag in &c.n.dags {
            for info in k.runs(tenant, Some(dag)).map_err(fail)? {
                prop_assert!(
                    info.run.tenant() == tenant && info.run.dag_name() == dag,
                    "{when}: {} listed under {tenant:?}/{dag:?}",
                    info.run
                );
            }
        }
    }
    Ok(())
}

fn check(n: &Names, ops: &[Op], seed: u64) -> Result<(), TestCaseError> {
    let c = Case { n };
    let disk = SimDisk::new(seed);
    let k = open(&disk)?;
    let mut model = Model::default();
    for (i, op) in ops.iter().enumerate() {
        apply(&k, &c, &mut model, op)?;
        if i == ops.len() / 2 {
            verify(&k, &c, &model, "midway")?;
        }
    }
    verify(&k, &c, &model, "at the end")?;
    k.close().map_err(fail)?;
    drop(k);
    let k = open(&disk.reboot(waymark_engine::storage::Damage::KeepAll))?;
    verify(&k, &c, &model, "after a reopen")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(proptest_cases(256)))]

    #[test]
    fn no_name_reaches_outside_its_range(n in names(), ops in ops(), seed in any::<u64>()) {
        check(&n, &ops, seed)?;
    }
}

/// The classic aliases, fixed: names that concatenate alike and prefixes
/// of one another, in every scope at once.
#[test]
fn concatenations_and_prefixes_stay_apart() {
    let n = Names {
        tenants: vec!["a/".into(), "a".into(), "a/b".into()],
        dags: vec!["b".into(), "/b".into(), "\0".into()],
        runs: vec!["run-4".into(), "run-42".into(), "run-4\0".into()],
        tasks: vec![":".into(), "::".into(), "\u{ff}".into()],
        keys: vec!["\0\0".into(), "\0".into(), "é".into()],
    };
    let mut ops = Vec::new();
    for t in 0..3 {
        for d in 0..3 {
            for r in 0..3 {
                let run = (t, d, r);
                ops.push(Op::Set {
                    run,
                    task: r,
                    try_number: 1 + (t as u32 % 2),
                    key: d,
                    value: (t * 9 + d * 3 + r) as u8,
                });
                ops.push(Op::SetTaskState {
                    run,
                    task: t,
                    key: r,
                    value: r as u8,
                });
                ops.push(Op::SetShared {
                    run,
                    key: (d + 1) % 3,
                    value: d as u8,
                });
            }
        }
    }
    ops.push(Op::Snapshot);
    ops.push(Op::Checkpoint {
        run: (1, 1, 0),
        name: 0,
    });
    ops.push(Op::Purge { run: (0, 0, 0) });
    ops.push(Op::Purge { run: (1, 1, 1) });
    ops.push(Op::Set {
        run: (1, 1, 0),
        task: 0,
        try_number: 1,
        key: 1,
        value: 99,
    });
    ops.push(Op::Restore {
        run: (1, 1, 0),
        name: 0,
    });
    if let Err(e) = check(&n, &ops, 5) {
        panic!("{e}");
    }
}
