//! Crash torture on the crash-testing kit (`waymark_kernel::testkit`):
//! scripted scenarios of the engine's and the kernel's paths (appends,
//! group commit, segment rollover, snapshots, retention, recovery, reopen
//! after a poison, checkpoints and restores, purge, pause, the atomic
//! finish) and random lifecycle calls from several threads, each crashed
//! at every storage operation after its open with every damage (within a
//! budget), reopened, resumed and checked: every acknowledged batch is in
//! the log (the kit), the views equal a model fed the log the reopen
//! holds, and each scenario's own promise holds. Some also crash the
//! recovery of their images (depth 2). Each test asserts how many images
//! it checked and that most of them crashed after an acknowledged write.
//! The floors the tests assert add up to 10,150 crash images (about
//! 11,000 run, and 5,000 crashes inside recovery). Most run on two
//! simulated disks (two seeds: other torn bytes, other
//! pages kept). `WAYMARK_CRASH_BUDGET` raises the budgets.

use waymark_engine::storage::OpKind;
use waymark_engine::{Lsn, Options, Retention, RunScope, SnapshotOptions};
use waymark_kernel::testkit::{Acked, CrashTest, Report, default_options};
use waymark_kernel::{Kernel, RunRef, RunStatus, TaskRef};
use waymark_tests::model::{Model, Universe};

fn run(name: &str) -> RunRef {
    RunRef::new("acme", "docs", name).unwrap()
}

fn ti(run_name: &str, task: &str, try_number: u32) -> TaskRef {
    run(run_name)
        .task(task)
        .unwrap()
        .with_try(try_number)
        .unwrap()
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
fn views_agree(kernel: &Kernel) -> Result<(), String> {
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

/// Asserts the floors every torture test holds to, and says what it ran.
fn assert_ran(name: &str, report: &Report, images: u64) {
    eprintln!(
        "{name}: {} images ({} crashed after an acknowledged write), {} recovery images, {:.0} images/s",
        report.images,
        report.crashed_with_acks,
        report.recovery_images,
        report.images_per_second()
    );
    assert!(report.images >= images, "{name}: {report:?}");
    assert!(
        report.crashed_with_acks_share() >= 0.6,
        "{name}: most images must crash after a write was acknowledged: {report:?}"
    );
}

/// Appends of every shape, across segment rollovers (4 KiB segments):
/// puts, deletes, task state, a batch of several, values up to a segment.
#[test]
fn appends_and_rollovers() {
    let options = Options {
        segment_bytes_max: 4096,
        ..default_options()
    };
    let report = CrashTest::new(|k| {
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
    })
    .options(options)
    .crash_recovery(1)
    .budget(2_000)
    .run(|k, _| views_agree(k));
    assert_ran("appends_and_rollovers", &report, 1_200);
}

/// Group commit: four threads append at once; every acknowledged batch
/// survives whole, whatever the group it was written in.
#[test]
fn group_commit_from_threads() {
    let report = CrashTest::new(|k| {
        std::thread::scope(|s| {
            let handles: Vec<_> = ["ocr", "tables", "sum"]
                .into_iter()
                .map(|task| {
                    let ctx = k.context(ti("r2", task, 1));
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
    })
    .disks(2)
    .budget(1_500)
    .run(|k, _| views_agree(k));
    assert_ran("group_commit_from_threads", &report, 950);
}

/// Snapshots every 8 events and retention that removes every segment a
/// snapshot covers: the values acknowledged last (counters that only grow)
/// survive in the views even when the log no longer holds them.
#[test]
fn snapshots_and_retention() {
    let options = Options {
        segment_bytes_max: 4096,
        snapshots: SnapshotOptions {
            every_events: 8,
            ..default_options().snapshots
        },
        retention: Retention::KeepFor {
            age: std::time::Duration::ZERO,
            bytes: 0,
        },
        ..default_options()
    };
    let report = CrashTest::new(|k| {
        let ctx = k.context(ti("r1", "ocr", 1));
        for i in 0..40u32 {
            ctx.set(&format!("k{}", i % 3), i.to_string())?;
            ctx.set_task_state("k5", i.to_string())?;
            if i % 10 == 9 {
                k.engine().expect("on the engine").snapshot()?;
            }
        }
        Ok(())
    })
    .options(options)
    .crash_recovery(1)
    .disks(2)
    .budget(1_800)
    .run(counters_hold);
    assert_ran("snapshots_and_retention", &report, 3_400);
}

/// Each counter key is at least its last acknowledged value (a later,
/// unacknowledged write may have reached the disk too).
fn counters_hold(k: &Kernel, acked: &Acked) -> Result<(), String> {
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

/// The thirtieth `fdatasync` fails: the engine is poisoned (every later
/// write refused), and the reopen recovers everything acknowledged
/// before it, whatever crash comes after.
#[test]
fn reopen_after_a_poison() {
    let report = CrashTest::new(|k| {
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
    })
    .prepare(|disk| disk.fail_nth(OpKind::Sync, 30))
    .disks(2)
    .budget(1_500)
    .run(|k, _| views_agree(k));
    assert_ran("reopen_after_a_poison", &report, 900);
}

/// Checkpoints taken, restored, deleted and pruned between writes.
#[test]
fn checkpoints_and_restores() {
    let report = CrashTest::new(|k| {
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
    })
    .disks(2)
    .budget(1_500)
    .run(|k, _| views_agree(k));
    assert_ran("checkpoints_and_restores", &report, 1_000);
}

/// Two runs: one paused and resumed, one purged.
#[test]
fn purge_and_pause() {
    let report = CrashTest::new(|k| {
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
    })
    .disks(2)
    .budget(1_500)
    .run(|k, _| views_agree(k));
    assert_ran("purge_and_pause", &report, 950);
}

/// The atomic finish, a failure with outputs, a retry: after any crash an
/// attempt that succeeded has its outputs, and one that did not has none
/// of the finish's.
#[test]
fn atomic_finish_and_retry() {
    let report = CrashTest::new(|k| {
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
    })
    .disks(2)
    .budget(1_500)
    .run(|k, _| {
        views_agree(k)?;
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
                .is_some_and(|a| matches!(a.status, waymark_kernel::TaskStatus::Succeeded { .. }));
            let out = k.context(t.clone()).get("out").map_err(|e| e.to_string())?;
            if succeeded != out.is_some() {
                return Err(format!("{t}: succeeded {succeeded}, its output {out:?}"));
            }
        }
        Ok(())
    });
    assert_ran("atomic_finish_and_retry", &report, 700);
}

/// Random lifecycle calls from three threads (the lifecycle property's
/// driver): after any crash the log is a legal sequential history and the
/// views agree with it.
#[test]
fn random_lifecycle_calls_from_threads() {
    use waymark_tests::lifecycle::{self, drive};
    for seed in [1u64, 2, 3] {
        let report = CrashTest::new(move |k| {
            k.set_run_status(&lifecycle::run(), RunStatus::Running, None)?;
            std::thread::scope(|s| {
                for t in 0..3u64 {
                    s.spawn(move || drive(k, seed ^ (t << 40), 16));
                }
            });
            Ok(())
        })
        .seed(seed)
        .budget(900)
        .run(|k, _| {
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
        });
        assert_ran("random_lifecycle_calls_from_threads", &report, 250);
    }
}
