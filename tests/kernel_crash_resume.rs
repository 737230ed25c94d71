//! Guards resume after a crash: a worker runs a document DAG through the
//! kernel on the simulated disk; the disk crashes at a random storage
//! operation (a fraction of those a dry run of the case makes) with a
//! random damage; the kernel reopens and `resume` must
//! report every task whose last acknowledged status was `running` as
//! interrupted (and record it), keep every succeeded task succeeded, leave
//! nothing running, and every acknowledged value must be there. Then the
//! worker retries the interrupted tasks and finishes the run.
//! `WAYMARK_PROPTEST_CASES` raises the case count.

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;
use waymark_engine::Options;
use waymark_engine::storage::{Damage, SimDisk};
use waymark_kernel::{Kernel, RunRef, TaskStatus};
use waymark_tests::{CrashAt, proptest_cases};

const TASKS: [&str; 6] = [
    "ingest",
    "ocr",
    "table-a",
    "table-b",
    "table-c",
    "aggregate",
];

fn kernel(disk: &SimDisk) -> waymark_kernel::Result<Kernel> {
    let options = Options {
        segment_bytes_max: 1 << 14,
        ..Options::default()
    };
    Kernel::builder()
        .options(options)
        .worker_id("worker-1")
        .open_on(Arc::new(disk.clone()), "/state")
}

/// What the worker was told had been done.
#[derive(Default, Debug)]
struct Acked {
    /// (task, key) → value, for the attempt state of try 1.
    values: BTreeMap<(String, String), Vec<u8>>,
    /// task → last acknowledged status ("running" or "succeeded").
    status: BTreeMap<String, &'static str>,
}

/// Runs the DAG until it finishes or a write fails (the crash).
fn run_until_crash(k: &Kernel, run: &RunRef, keys_per_task: usize) -> Acked {
    let mut acked = Acked::default();
    let _ = (|| -> waymark_kernel::Result<()> {
        for task in TASKS {
            let ti = run.task(task)?;
            k.start(&ti)?;
            acked.status.insert(task.into(), "running");
            let ctx = k.context(ti.clone());
            for i in 0..keys_per_task {
                let value = format!("{task}-{i}").into_bytes();
                ctx.set(&format!("k{i}"), &value)?;
                acked.values.insert((task.into(), format!("k{i}")), value);
            }
            ctx.set_task_state("cursor", b"done")?;
            k.succeed(&ti, b"ok".to_vec())?;
            acked.status.insert(task.into(), "succeeded");
        }
        Ok(())
    })();
    acked
}

fn check(
    seed: u64,
    crash_at: CrashAt,
    damage: Damage,
    keys_per_task: usize,
) -> Result<(), TestCaseError> {
    let run = RunRef::new("acme", "documents", "run-42").unwrap();
    let crash_after_ops = crash_at.ops(|| {
        let dry = SimDisk::new(seed);
        let Ok(k) = kernel(&dry) else {
            return Ok::<_, TestCaseError>((dry.ops(), dry.ops()));
        };
        let opened = dry.ops();
        run_until_crash(&k, &run, keys_per_task);
        drop(k);
        Ok((opened, dry.ops()))
    })?;
    let disk = SimDisk::new(seed);
    if let Some(ops) = crash_after_ops {
        disk.crash_after_ops(ops);
    }
    let acked = match kernel(&disk) {
        Ok(k) => run_until_crash(&k, &run, keys_per_task),
        Err(_) => Acked::default(),
    };
    let disk = disk.reboot(damage);
    let k = kernel(&disk).map_err(|e| TestCaseError::fail(format!("reopen: {e}")))?;
    let state = match k.resume(&run) {
        Ok(state) => state,
        // Nothing about the run survived: fine only if nothing was acknowledged.
        Err(waymark_kernel::Error::UnknownRun { .. }) if acked.status.is_empty() => {
            waymark_kernel::RunState {
                status: waymark_kernel::RunStatus::Created,
                tasks: Vec::new(),
                recorded: None,
            }
        }
        Err(e) => return Err(TestCaseError::fail(format!("resume: {e}"))),
    };
    let by_task: BTreeMap<String, _> = state
        .tasks
        .iter()
        .map(|t| (t.ti.task_id().to_string(), t))
        .collect();
    for (task, status) in &acked.status {
        let found = by_task
            .get(task)
            .ok_or_else(|| TestCaseError::fail(format!("{task} lost its status")))?;
        match *status {
            "succeeded" => prop_assert!(
                matches!(found.status, TaskStatus::Succeeded { .. }),
                "{task}: acknowledged succeeded, resume says {:?}",
                found.status
            ),
            _ => prop_assert!(
                found.interrupted || matches!(found.status, TaskStatus::Succeeded { .. }),
                "{task}: acknowledged running, resume says {:?}",
                found.status
            ),
        }
    }
    prop_assert!(
        state.tasks.iter().all(|t| t.status != TaskStatus::Running),
        "nothing is left running"
    );
    for ((task, key), value) in &acked.values {
        let got = k
            .context(run.task(task).unwrap())
            .get(key)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(got.as_ref(), Some(value), "{}/{} lost", task, key);
    }
    // The worker retries what was interrupted and finishes the run.
    for task in TASKS {
        let ti = run.task(task).unwrap();
        let done = k
            .task(&ti)
            .unwrap()
            .is_some_and(|r| matches!(r.status, TaskStatus::Succeeded { .. }));
        if done {
            continue;
        }
        let next = match k.task(&ti).unwrap() {
            Some(_) => k.clear_for_retry(&ti).unwrap(),
            None => ti,
        };
        k.start(&next).unwrap();
        let ctx = k.context(next.clone());
        prop_assert!(
            ctx.is_empty().unwrap(),
            "a retry starts with clean attempt state"
        );
        ctx.set("k0", b"retried").unwrap();
        k.succeed(&next, b"ok".to_vec()).unwrap();
    }
    let record = k.run(&run).unwrap().unwrap();
    prop_assert_eq!(record.task_counts.succeeded as usize, TASKS.len());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(proptest_cases(96)))]

    #[test]
    fn resume_after_a_crash_mid_run(
        seed in any::<u64>(),
        crash_at in CrashAt::strategy(),
        damage in proptest::sample::select(Damage::ALL.to_vec()),
        keys_per_task in 1..5usize,
    ) {
        check(seed, crash_at, damage, keys_per_task)?;
    }
}

/// The failures `kernel_crash_resume.proptest-regressions` recorded,
/// pinned: the saved seeds replay different cases since the crash point
/// became a `CrashAt` (proptest saves its random seed, not the values).
#[test]
fn recorded_failures_crash_at_0_and_45() {
    for ops in [0, 45] {
        if let Err(e) = check(0, CrashAt::Op(ops), Damage::KeepAll, 1) {
            panic!("crash after {ops} operations: {e}");
        }
    }
}
