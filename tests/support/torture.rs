//! The crash torture's scenarios, for `tests/crash_torture.rs` and the
//! `torture` soak binary: each a workload for the crash-testing kit, the
//! engine options it runs with, a fault it meets, and its check.

use waymark_engine::storage::{OpKind, SimDisk};
use waymark_engine::{Lsn, Options, Retention, RunScope, SnapshotOptions};
use waymark_kernel::testkit::{Acked, CrashTest, Report, default_options};
use waymark_kernel::{Kernel, RunRef, RunStatus, TaskRef, TaskStatus};

use crate::lifecycle;
use crate::model::{Model, Universe};

/// One scenario of the torture.
#[derive(Clone, Copy)]
pub struct Scenario {
    /// Its name.
    pub name: &'static str,
    /// The engine options it runs with.
    pub options: fn() -> Options,
    /// The workload: given the kernel, a seed and a thread count (the
    /// scripted scenarios ignore both but `group_commit`'s threads).
    pub workload: fn(&Kernel, u64, usize) -> waymark_kernel::Result<()>,
    /// What must hold after any crash.
    pub check: fn(&Kernel, &Acked) -> Result<(), String>,
    /// A fault scheduled on every disk.
    pub prepare: Option<fn(&SimDisk)>,
}

impl std::fmt::Debug for Scenario {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

impl Scenario {
    /// The crash test of this scenario on disk `seed` with `threads`.
    pub fn crash_test(
        self,
        seed: u64,
        threads: usize,
    ) -> CrashTest<impl Fn(&Kernel) -> waymark_kernel::Result<()>> {
        let workload = self.workload;
        let mut test = CrashTest::new(move |k| workload(k, seed, threads))
            .seed(seed)
            .options((self.options)());
        if let Some(prepare) = self.prepare {
            test = test.prepare(prepare);
        }
        test
    }

    /// Runs the crash test and returns its report, panicking on a failure.
    pub fn run(self, test: CrashTest<impl Fn(&Kernel) -> waymark_kernel::Result<()>>) -> Report {
        test.run(self.check)
    }
}

fn run(name: &str) -> RunRef {
    RunRef::new("acme", "docs", name).expect("valid names")
}

fn ti(run_name: &str, task: &str, try_number: u32) -> TaskRef {
    run(run_name)
        .task(task)
        .and_then(|t| t.with_try(try_number))
        .expect("valid names")
}

/// The names the scenarios use, for the views model's reads.
fn universe() -> Universe {
    let scope = |r: &str| RunScope {
        tenant: "acme".into(),
        dag: "docs".into(),
        run: r.into(),
    };
    Universe {
        runs: vec![scope("r1"), scope("r2")],
        tasks: vec!["ocr".into(), "tables".into(), "sum".into()],
        keys: (0..6)
            .map(|i| format!("k{i}"))
            .chain(["out".into()])
            .collect(),
        tries: 3,
    }
}

/// The views equal a model fed every batch of the log as reopened.
pub fn views_agree(kernel: &Kernel, _: &Acked) -> Result<(), String> {
    let mut model = Model::default();
    kernel
        .backend()
        .scan_log(Lsn(1), &mut |_, events| {
            for e in &events {
                model.apply(e);
            }
            true
        })
        .map_err(|e| e.to_string())?;
    let engine = kernel.engine().ok_or("on the engine")?;
    model.check(&engine.views(), &universe())
}

fn small_segments() -> Options {
    Options {
        segment_bytes_max: 4096,
        ..default_options()
    }
}

/// Appends of every shape, across segment rollovers (4 KiB segments).
pub const APPENDS: Scenario = Scenario {
    name: "appends_and_rollovers",
    options: small_segments,
    workload: |k, _, _| {
        let ocr = k.context(ti("r1", "ocr", 1));
        let tables = k.context(ti("r1", "tables", 1));
        for i in 0..40u32 {
            ocr.set(
                &format!("k{}", i % 6),
                vec![i as u8; 40 + 150 * (i as usize % 4)],
            )?;
            if i % 4 == 3 {
                ocr.delete(&format!("k{}", i % 5))?;
                tables.set_task_state("k0", i.to_string())?;
            }
        }
        tables
            .batch()
            .set("k1", b"a")
            .set("k2", vec![7u8; 3000])
            .set_task_state("k3", b"c")
            .commit()?;
        Ok(())
    },
    check: views_agree,
    prepare: None,
};

/// Appends from several threads at once: group commit.
pub const GROUP_COMMIT: Scenario = Scenario {
    name: "group_commit_from_threads",
    options: default_options,
    workload: |k, _, threads| {
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads.max(1))
                .map(|t| {
                    let task = ["ocr", "tables", "sum"][t % 3];
                    let ctx = k.context(ti(["r1", "r2"][t / 3 % 2], task, 1));
                    s.spawn(move || -> waymark_kernel::Result<()> {
                        for i in 0..24u32 {
                            ctx.set(&format!("k{}", i % 6), i.to_string())?;
                        }
                        Ok(())
                    })
                })
                .collect();
            handles
                .into_iter()
                .try_for_each(|h| h.join().expect("a writer panicked"))
        })
    },
    check: views_agree,
    prepare: None,
};

/// Snapshots every 8 events and retention that removes what they cover.
pub const SNAPSHOTS: Scenario = Scenario {
    name: "snapshots_and_retention",
    options: || Options {
        snapshots: SnapshotOptions {
            every_events: 8,
            ..default_options().snapshots
        },
        retention: Retention::KeepFor {
            age: std::time::Duration::ZERO,
            bytes: 0,
        },
        ..small_segments()
    },
    workload: |k, _, _| {
        let ctx = k.context(ti("r1", "ocr", 1));
        for i in 0..40u32 {
            ctx.set(&format!("k{}", i % 3), i.to_string())?;
            ctx.set_task_state("k5", i.to_string())?;
            if i % 10 == 9 {
                k.engine().expect("on the engine").snapshot()?;
            }
        }
        Ok(())
    },
    check: counters_hold,
    prepare: None,
};

/// Each counter key is at least its last acknowledged value (a later,
/// unacknowledged write may have reached the disk too): the views hold
/// what retention took from the log.
pub fn counters_hold(k: &Kernel, acked: &Acked) -> Result<(), String> {
    let number = |v: Option<Vec<u8>>| -> Option<u32> {
        v.and_then(|v| String::from_utf8(v).ok()?.parse().ok())
    };
    let ocr = ti("r1", "ocr", 1);
    let ctx = k.context(ocr.clone());
    for key in ["k0", "k1", "k2"] {
        let want = number(acked.last_value(&ocr, key).map(<[u8]>::to_vec));
        let got = number(ctx.get(key).map_err(|e| e.to_string())?);
        if got < want {
            return Err(format!("{key}: {got:?} below the acknowledged {want:?}"));
        }
    }
    let want = number(acked.last_task_state(&ocr, "k5").map(<[u8]>::to_vec));
    let got = number(ctx.task_state("k5").map_err(|e| e.to_string())?);
    if got < want {
        return Err(format!(
            "task state: {got:?} below the acknowledged {want:?}"
        ));
    }
    Ok(())
}

/// The thirtieth `fdatasync` fails: poisoned, nothing later acknowledged.
pub const POISON: Scenario = Scenario {
    name: "reopen_after_a_poison",
    options: default_options,
    workload: |k, _, _| {
        let ctx = k.context(ti("r1", "ocr", 1));
        for i in 0..60u32 {
            if ctx.set(&format!("k{}", i % 6), i.to_string()).is_err() {
                // Poisoned: no later write may be acknowledged.
                return match ctx.set("k0", b"after the poison") {
                    Err(e) if e.is_poisoned() => Ok(()),
                    other => Err(waymark_kernel::Error::InvalidRef(format!(
                        "a write after the poison: {other:?}"
                    ))),
                };
            }
        }
        Ok(())
    },
    check: views_agree,
    prepare: Some(|disk| disk.fail_nth(OpKind::Sync, 30)),
};

/// Checkpoints taken, restored, deleted and pruned between writes.
pub const CHECKPOINTS: Scenario = Scenario {
    name: "checkpoints_and_restores",
    options: default_options,
    workload: |k, _, _| {
        for name in ["r1", "r2"] {
            let r = run(name);
            let ocr = k.context(ti(name, "ocr", 1));
            ocr.set("k0", b"v1")?;
            ocr.set_task_state("k1", b"t1")?;
            k.set_shared(&r, "k2", b"s1", false)?;
            k.checkpoint(&r, "c1")?;
            ocr.set("k0", b"v2")?;
            ocr.set("k3", b"x")?;
            k.checkpoint(&r, "c2")?;
            k.restore(&r, "c1")?;
            ocr.set("k4", b"after the restore")?;
            k.delete_checkpoint(&r, "c2")?;
            k.checkpoint(&r, "c3")?;
            k.prune_checkpoints(&r, Some(1), None)?;
            k.restore(&r, "c3")?;
        }
        Ok(())
    },
    check: views_agree,
    prepare: None,
};

/// Two runs: one paused and resumed between tasks, one purged.
pub const PURGE_AND_PAUSE: Scenario = Scenario {
    name: "purge_and_pause",
    options: default_options,
    workload: |k, _, _| {
        let (r1, r2) = (run("r1"), run("r2"));
        k.set_run_status(&r1, RunStatus::Running, None)?;
        k.set_run_status(&r2, RunStatus::Running, None)?;
        for (r, name) in [(&r1, "r1"), (&r2, "r2")] {
            let t = ti(name, "ocr", 1);
            k.start(&t)?;
            k.context(t.clone()).set("k0", name)?;
            k.set_shared(r, "k1", b"once", true)?;
        }
        k.pause_run(&r1)?;
        k.purge_run(&r2)?;
        k.resume_run(&r1)?;
        k.succeed(&ti("r1", "ocr", 1), b"ok".to_vec())?;
        for task in ["tables", "sum"] {
            let t = ti("r1", task, 1);
            k.start(&t)?;
            k.context(t.clone()).set("k2", task)?;
            k.pause_run(&r1)?;
            k.resume_run(&r1)?;
            k.succeed(&t, b"ok".to_vec())?;
        }
        k.set_run_status(&r1, RunStatus::Succeeded, None)?;
        Ok(())
    },
    check: views_agree,
    prepare: None,
};

/// The atomic finish, a failure with outputs, a retry.
pub const ATOMIC_FINISH: Scenario = Scenario {
    name: "atomic_finish_and_retry",
    options: default_options,
    workload: |k, _, _| {
        for name in ["r1", "r2"] {
            let ocr = ti(name, "ocr", 1);
            k.start(&ocr)?;
            k.context(ocr.clone())
                .batch()
                .set("out", b"lines")
                .set_task_state("k0", b"pages 3")
                .succeed(b"ok".to_vec())
                .commit()?;
            let tables = ti(name, "tables", 1);
            k.start(&tables)?;
            k.fail_with(
                &tables,
                "noise",
                "transient",
                [("k1", b"page 2".as_slice())],
            )?;
            let again = k.clear_for_retry(&tables)?;
            k.start(&again)?;
            k.succeed_with(&again, b"ok".to_vec(), [("out", b"rows".as_slice())])?;
        }
        Ok(())
    },
    check: finished_with_outputs,
    prepare: None,
};

/// The views agree, and an attempt that succeeded has its output, one
/// that did not has none of the finish's.
pub fn finished_with_outputs(k: &Kernel, acked: &Acked) -> Result<(), String> {
    views_agree(k, acked)?;
    let attempts = ["r1", "r2"]
        .into_iter()
        .flat_map(|r| [ti(r, "ocr", 1), ti(r, "tables", 2)]);
    for t in attempts {
        let succeeded = k
            .task(&t)
            .map_err(|e| e.to_string())?
            .and_then(|r| {
                r.attempts
                    .into_iter()
                    .find(|a| a.try_number == t.try_number())
            })
            .is_some_and(|a| matches!(a.status, TaskStatus::Succeeded { .. }));
        let out = k.context(t.clone()).get("out").map_err(|e| e.to_string())?;
        if succeeded != out.is_some() {
            return Err(format!("{t}: succeeded {succeeded}, its output {out:?}"));
        }
    }
    Ok(())
}

/// Random lifecycle calls from several threads (the lifecycle property's
/// driver), 16 a thread.
pub const LIFECYCLE: Scenario = Scenario {
    name: "random_lifecycle_calls_from_threads",
    options: default_options,
    workload: |k, seed, threads| {
        k.set_run_status(&lifecycle::run(), RunStatus::Running, None)?;
        std::thread::scope(|s| {
            for t in 0..threads.max(1) as u64 {
                s.spawn(move || lifecycle::drive(k, seed ^ (t << 40), 16));
            }
        });
        Ok(())
    },
    check: legal_history,
    prepare: None,
};

/// The log is a legal sequential history of the lifecycle.
pub fn legal_history(k: &Kernel, _: &Acked) -> Result<(), String> {
    let mut model = lifecycle::Model::default();
    let mut failure = None;
    k.backend()
        .scan_log(Lsn(1), &mut |lsn, events| {
            let checked = lifecycle::shape(&events).and_then(|s| model.apply(&s));
            if let Err(e) = checked {
                failure = Some(format!("LSN {lsn}: {e}"));
                return false;
            }
            true
        })
        .map_err(|e| e.to_string())?;
    failure.map_or(Ok(()), Err)
}

/// Every scenario.
pub const ALL: [Scenario; 8] = [
    APPENDS,
    GROUP_COMMIT,
    SNAPSHOTS,
    POISON,
    CHECKPOINTS,
    PURGE_AND_PAUSE,
    ATOMIC_FINISH,
    LIFECYCLE,
];
