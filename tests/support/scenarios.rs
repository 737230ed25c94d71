//! The kernel's scenario suite: what a worker relies on, written once
//! against a [`Harness`] (a kernel that can be closed and reopened on the
//! same state), and run by one thin test file per backend with
//! [`kernel_scenarios!`](crate::kernel_scenarios): today the engine on the
//! simulated disk (`tests/kernel_on_sim_disk.rs`), on files
//! (`tests/kernel_on_files.rs`) and the in-memory test double
//! (`tests/kernel_in_memory.rs`). A later backend adds one file of three
//! lines and runs exactly this suite.
//!
//! Every scenario that writes checks again after a reopen, and every
//! decision the kernel takes from state is raced by threads here, not only
//! taken in sequence: of N racing callers exactly one wins, on every
//! backend.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use serde_json::json;
use waymark_engine::storage::SimDisk;
use waymark_engine::{Lsn, Options, TaskStatusKind};
use waymark_kernel::{
    Error, Kernel, RunRef, RunStatus, TaskRef, TaskResume, TaskStatus, WatchFilter, Watched,
};

/// A kernel that can be closed and reopened on the same state.
pub trait Harness {
    /// The open kernel (a clone: drop it before [`Harness::reopen`]).
    fn kernel(&self) -> Kernel;
    /// Closes the kernel (every clone must be dropped) and opens it again
    /// on the same state. A harness whose state does not outlive its
    /// kernel (the in-memory test double) keeps it open.
    fn reopen(&self);
}

/// Opens a kernel, again and again, on one state.
struct Reopening {
    open: Box<dyn Fn() -> Kernel>,
    kernel: RefCell<Option<Kernel>>,
}

impl Reopening {
    fn new(open: impl Fn() -> Kernel + 'static) -> Reopening {
        Reopening {
            kernel: RefCell::new(Some(open())),
            open: Box::new(open),
        }
    }

    fn kernel(&self) -> Kernel {
        self.kernel.borrow().clone().expect("open")
    }

    fn reopen(&self) {
        let old = self.kernel.borrow_mut().take().expect("open");
        old.close().expect("a clean close");
        drop(old);
        *self.kernel.borrow_mut() = Some((self.open)());
    }
}

/// The engine on a simulated disk, with the default (`Sync`) options,
/// reopened on the same disk.
pub struct SimDiskHarness(Reopening);

impl SimDiskHarness {
    /// A fresh disk from `seed`.
    pub fn new(seed: u64) -> SimDiskHarness {
        let disk = SimDisk::new(seed);
        SimDiskHarness(Reopening::new(move || {
            Kernel::builder()
                .worker_id("test-worker")
                .open_on(Arc::new(disk.clone()), "/state")
                .expect("open on the simulated disk")
        }))
    }
}

impl Harness for SimDiskHarness {
    fn kernel(&self) -> Kernel {
        self.0.kernel()
    }
    fn reopen(&self) {
        self.0.reopen();
    }
}

/// The engine on a state directory on the real disk.
pub struct FileHarness {
    reopening: Reopening,
    _dir: tempfile::TempDir,
}

impl FileHarness {
    /// A fresh temporary directory, opened with `options`.
    pub fn with(options: Options) -> FileHarness {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().to_path_buf();
        FileHarness {
            reopening: Reopening::new(move || {
                Kernel::builder()
                    .worker_id("test-worker")
                    .options(options.clone())
                    .open(&path)
                    .expect("open the state directory")
            }),
            _dir: dir,
        }
    }

    /// A fresh temporary directory with the default options.
    pub fn new() -> FileHarness {
        FileHarness::with(Options::default())
    }
}

impl Default for FileHarness {
    fn default() -> FileHarness {
        FileHarness::new()
    }
}

impl Harness for FileHarness {
    fn kernel(&self) -> Kernel {
        self.reopening.kernel()
    }
    fn reopen(&self) {
        self.reopening.reopen();
    }
}

/// `Kernel::in_memory()`, the test double users' suites open: its state
/// lives as long as it does, so "reopen" keeps it.
pub struct InMemoryHarness(Kernel);

impl InMemoryHarness {
    /// A fresh in-memory kernel.
    pub fn new() -> InMemoryHarness {
        InMemoryHarness(
            Kernel::builder()
                .worker_id("test-worker")
                .in_memory()
                .expect("an in-memory kernel"),
        )
    }
}

impl Default for InMemoryHarness {
    fn default() -> InMemoryHarness {
        InMemoryHarness::new()
    }
}

impl Harness for InMemoryHarness {
    fn kernel(&self) -> Kernel {
        self.0.clone()
    }
    fn reopen(&self) {}
}

/// Runs every scenario of this module as its own `#[test]`, each on a
/// fresh harness made by the expression given.
///
/// ```ignore
/// waymark_tests::kernel_scenarios!(waymark_tests::scenarios::FileHarness::new());
/// ```
#[macro_export]
macro_rules! kernel_scenarios {
    ($harness:expr) => {
        $crate::kernel_scenarios!(@each $harness;
            set_get_default_metadata_delete_entries,
            json_values_round_trip_exactly,
            task_state_is_its_own_scope,
            upstream_reads_see_the_latest_attempt_that_has_the_key,
            a_batch_is_atomic_and_an_invalid_one_writes_nothing,
            tenants_runs_tasks_and_attempts_are_isolated_even_with_crafted_names,
            misuse_is_a_typed_error,
            threads_share_one_kernel,
            lifecycle_transitions_are_validated_and_recorded,
            racing_callers_of_one_transition_have_one_winner,
            a_finish_writes_its_outputs_and_its_status_in_one_step,
            a_refused_finish_writes_none_of_its_outputs,
            clear_for_retry_clears_every_attempt_and_keeps_task_state,
            a_retry_takes_the_latest_finished_attempt,
            racing_retries_of_one_attempt_make_one_next_attempt,
            resume_reports_and_records_interrupted_tasks,
            racing_resumes_record_each_interruption_once,
            runs_pause_and_resume_with_checked_transitions,
            racing_pauses_have_one_winner,
            checkpoints_capture_restore_list_and_prune,
            racing_deletes_of_one_checkpoint_have_one_winner,
            racing_decisions_meet_at_the_append,
            shared_variables_and_runs,
            racing_first_writes_of_an_immutable_variable_leave_one_value,
            racing_purges_have_one_winner,
            history_of_a_task_a_key_a_run_and_a_time_range,
            a_run_as_of_an_lsn_or_a_time,
            watch_delivers_matching_durable_events_and_reports_lag,
            clears_and_reads_during_writes_and_concurrent_fan_in,
            unknown_runs_and_tasks_are_named,
            flush_close_and_stats,
        );
    };
    (@each $harness:expr; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                let harness = $harness;
                $crate::scenarios::$name(&harness);
            }
        )*
    };
}

fn ti(task: &str, try_number: u32) -> TaskRef {
    TaskRef::new("acme", "documents", "run-42", task, try_number).unwrap()
}

fn run42() -> RunRef {
    RunRef::new("acme", "documents", "run-42").unwrap()
}

/// Runs `f` on `n` threads released together; returns their results in
/// thread order.
fn race<T: Send>(n: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let barrier = Barrier::new(n);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let (f, barrier) = (&f, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    f(i)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a racer panicked"))
            .collect()
    })
}

/// Asserts that exactly one of `results` is `Ok` and every other is an
/// error `lost` accepts (the refusal racing losers must get).
fn one_winner<T: std::fmt::Debug>(results: &[Result<T, Error>], lost: impl Fn(&Error) -> bool) {
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "{results:?}"
    );
    for r in results {
        if let Err(e) = r {
            assert!(lost(e), "a loser got {e:?}");
        }
    }
}

/// The events of `ti`'s task in the log whose status is `kind`.
fn statuses_logged(k: &Kernel, ti: &TaskRef, kind: TaskStatusKind) -> usize {
    k.history_of_task(ti)
        .unwrap()
        .iter()
        .filter(|e| {
            matches!(
                &e.event.body,
                waymark_engine::EventBody::TaskStatus { attempt, status, .. }
                    if attempt.try_number == ti.try_number() && status.kind() == kind
            )
        })
        .count()
}

/// Set, get, defaults, metadata, delete and listing of attempt state.
pub fn set_get_default_metadata_delete_entries(h: &dyn Harness) {
    let ctx = h.kernel().context(ti("ocr", 1));
    ctx.set("pages", b"12").unwrap();
    ctx.push("text", b"hello", br#"{"lang":"en"}"#).unwrap();
    ctx.set("scratch", b"x").unwrap();
    ctx.delete("scratch").unwrap();
    ctx.delete("never-set").unwrap();
    drop(ctx);
    h.reopen();
    let ctx = h.kernel().context(ti("ocr", 1));
    assert_eq!(ctx.get("pages").unwrap(), Some(b"12".to_vec()));
    assert_eq!(ctx.get("scratch").unwrap(), None);
    assert_eq!(ctx.get_or("missing", b"dflt".to_vec()).unwrap(), b"dflt");
    let entry = ctx.get_entry("text").unwrap().unwrap();
    assert_eq!(entry.meta, br#"{"lang":"en"}"#);
    assert!(entry.lsn.0 > 0 && entry.ts_micros > 0);
    let keys: Vec<String> = ctx.entries().unwrap().into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys.len(), 2);
    assert!(keys.contains(&"pages".into()) && keys.contains(&"text".into()));
    assert_eq!(ctx.len().unwrap(), 2);
}

/// JSON values come back exactly as they went in.
pub fn json_values_round_trip_exactly(h: &dyn Harness) {
    let ctx = h.kernel().context(ti("ocr", 1));
    let values = BTreeMap::from([
        ("string", json!("héllo \u{0} wörld")),
        ("int", json!(-42)),
        ("big", json!(u64::MAX)),
        ("float", json!(0.1)),
        (
            "map",
            json!({"rows": [[1, 2], [3, 4]], "columns": ["a", "b"]}),
        ),
        ("list", json!([1, "two", null, {"x": true}])),
        ("null", json!(null)),
    ]);
    for (k, v) in &values {
        ctx.set_json(k, v).unwrap();
    }
    drop(ctx);
    h.reopen();
    let ctx = h.kernel().context(ti("ocr", 1));
    for (k, v) in &values {
        let back: serde_json::Value = ctx.get_json(k).unwrap().unwrap();
        assert_eq!(&back, v, "{k}");
    }
    ctx.set("not-json", b"\xff").unwrap();
    assert!(matches!(
        ctx.get_json::<serde_json::Value>("not-json"),
        Err(Error::Json { .. })
    ));
}

/// Task state belongs to the task across tries; attempt state to one try.
pub fn task_state_is_its_own_scope(h: &dyn Harness) {
    let first = h.kernel().context(ti("extract", 1));
    first.set("partial", b"attempt-1").unwrap();
    first.set_task_state("cursor", b"page-3").unwrap();
    let second = h.kernel().context(ti("extract", 2));
    assert_eq!(
        second.get("partial").unwrap(),
        None,
        "attempt state is per try"
    );
    assert_eq!(
        second.task_state("cursor").unwrap(),
        Some(b"page-3".to_vec())
    );
    assert_eq!(
        first.get("cursor").unwrap(),
        None,
        "task state is not attempt state"
    );
    second.set_task_state("cursor", b"page-4").unwrap();
    drop((first, second));
    h.reopen();
    let ctx = h.kernel().context(ti("extract", 1));
    assert_eq!(ctx.task_state("cursor").unwrap(), Some(b"page-4".to_vec()));
    assert_eq!(ctx.task_state_entries().unwrap().len(), 1);
    ctx.delete_task_state("cursor").unwrap();
    assert_eq!(ctx.task_state("cursor").unwrap(), None);
}

/// `get_from`, `pull` and `pull_all` read an upstream task's latest
/// attempt that has the key, in list order, with provenance.
pub fn upstream_reads_see_the_latest_attempt_that_has_the_key(h: &dyn Harness) {
    let k = h.kernel();
    k.context(ti("ocr", 1)).set("lines", b"from-try-1").unwrap();
    k.context(ti("ocr", 2)).set("other", b"x").unwrap();
    k.context(ti("ocr", 3)).set("lines", b"from-try-3").unwrap();
    k.context(ti("ocr", 4)).set("unrelated", b"y").unwrap();
    k.context(ti("table_b", 1)).set("rows", b"b").unwrap();
    k.context(ti("table_c", 2)).set("rows", b"c").unwrap();
    drop(k);
    h.reopen();
    // The reader is on try 1 of its own task: upstream tries are the
    // upstream's own.
    let agg = h.kernel().context(ti("aggregate", 1));
    assert_eq!(
        agg.get_from("ocr", "lines").unwrap(),
        Some(b"from-try-3".to_vec())
    );
    assert_eq!(agg.get_from("ocr", "missing").unwrap(), None);
    assert_eq!(agg.get_from("nobody", "lines").unwrap(), None);
    let order = ["table_a", "table_c", "table_b"];
    assert_eq!(agg.pull("rows", &order).unwrap(), Some(b"c".to_vec()));
    assert_eq!(agg.pull_or("nope", &order, b"d".to_vec()).unwrap(), b"d");
    let all = agg.pull_all("rows", &order).unwrap();
    let got: Vec<(&str, u32, &[u8])> = all
        .iter()
        .map(|p| (p.task_id.as_str(), p.try_number, p.entry.value.as_slice()))
        .collect();
    assert_eq!(
        got,
        vec![("table_c", 2, &b"c"[..]), ("table_b", 1, &b"b"[..])]
    );
    assert!(
        all.iter()
            .all(|p| p.entry.lsn.0 > 0 && p.entry.ts_micros > 0)
    );
    assert!(matches!(
        agg.get_from("", "rows"),
        Err(Error::InvalidRef(_))
    ));
}

/// A batch is one LSN; an invalid one writes nothing.
pub fn a_batch_is_atomic_and_an_invalid_one_writes_nothing(h: &dyn Harness) {
    let ctx = h.kernel().context(ti("ocr", 1));
    let lsn = ctx
        .batch()
        .set("a", b"1")
        .push("b", b"2", b"meta")
        .set_task_state("cursor", b"3")
        .commit()
        .unwrap()
        .unwrap();
    assert_eq!(ctx.get_entry("a").unwrap().unwrap().lsn, lsn);
    assert_eq!(ctx.get_entry("b").unwrap().unwrap().lsn, lsn);
    let bad = ctx.batch().set("c", b"3").set("", b"empty key").commit();
    assert!(matches!(bad, Err(Error::InvalidRef(_))));
    assert_eq!(ctx.get("c").unwrap(), None, "nothing of a refused batch");
    let two = ctx
        .batch()
        .set("c", b"3")
        .start()
        .succeed(b"ok".to_vec())
        .commit();
    assert!(matches!(two, Err(Error::InvalidBatch(_))), "{two:?}");
    assert_eq!(ctx.get("c").unwrap(), None, "nothing of a refused batch");
    assert_eq!(ctx.batch().commit().unwrap(), None);
    drop(ctx);
    h.reopen();
    let ctx = h.kernel().context(ti("ocr", 1));
    assert_eq!(ctx.len().unwrap(), 2);
}

/// Names that would alias if joined with separators stay apart.
pub fn tenants_runs_tasks_and_attempts_are_isolated_even_with_crafted_names(h: &dyn Harness) {
    let k = h.kernel();
    let refs = [
        TaskRef::new("a", "d", "r/x", "t", 1).unwrap(),
        TaskRef::new("a", "d", "r", "x/t", 1).unwrap(),
        TaskRef::new("a/d", "r", "x", "t", 1).unwrap(),
        TaskRef::new("a", "d:r", "x", "t", 1).unwrap(),
        TaskRef::new("a", "d", "r:x", "t", 1).unwrap(),
        TaskRef::new("a", "d", "r/x", "t", 2).unwrap(),
        TaskRef::new("b", "d", "r/x", "t", 1).unwrap(),
        TaskRef::new("a\0", "d", "r", "t", 1).unwrap(),
    ];
    for (i, r) in refs.iter().enumerate() {
        k.context(r.clone()).set("k", i.to_string()).unwrap();
    }
    drop(k);
    h.reopen();
    let k = h.kernel();
    for (i, r) in refs.iter().enumerate() {
        let ctx = k.context(r.clone());
        assert_eq!(
            ctx.get("k").unwrap(),
            Some(i.to_string().into_bytes()),
            "{r}"
        );
        assert_eq!(ctx.len().unwrap(), 1, "{r}");
    }
}

/// Empty keys, oversized keys and values, try 0: typed errors.
pub fn misuse_is_a_typed_error(h: &dyn Harness) {
    let ctx = h.kernel().context(ti("ocr", 1));
    assert!(matches!(ctx.set("", b"x"), Err(Error::InvalidRef(_))));
    let huge_key = "k".repeat(1 << 20);
    assert!(matches!(
        ctx.set(&huge_key, b"x"),
        Err(Error::Engine(waymark_engine::Error::LimitExceeded { .. }))
    ));
    let huge_value = vec![0u8; 64 << 20];
    assert!(matches!(
        ctx.set("v", &huge_value),
        Err(Error::Engine(waymark_engine::Error::LimitExceeded { .. }))
    ));
    assert!(TaskRef::new("acme", "d", "r", "t", 0).is_err());
}

/// Threads share one kernel: each reads its writes, the last write wins.
pub fn threads_share_one_kernel(h: &dyn Harness) {
    let k = h.kernel();
    std::thread::scope(|s| {
        for t in 0..4u32 {
            let k = k.clone();
            s.spawn(move || {
                let same = k.context(ti("shared", 1));
                let own = k.context(ti(&format!("task-{t}"), 1));
                for i in 0..50u32 {
                    same.set("hot", format!("{t}:{i}")).unwrap();
                    own.set(&format!("k{i}"), i.to_string()).unwrap();
                    assert_eq!(
                        own.get(&format!("k{i}")).unwrap(),
                        Some(i.to_string().into_bytes())
                    );
                }
            });
        }
    });
    // Last write wins: the value is one that some thread wrote last.
    let hot = String::from_utf8(k.context(ti("shared", 1)).get("hot").unwrap().unwrap()).unwrap();
    assert!(hot.ends_with(":49"), "{hot}");
    for t in 0..4 {
        assert_eq!(k.context(ti(&format!("task-{t}"), 1)).len().unwrap(), 50);
    }
    let agg = k.context(ti("aggregate", 1));
    let tasks: Vec<String> = (0..4).map(|t| format!("task-{t}")).collect();
    let names: Vec<&str> = tasks.iter().map(String::as_str).collect();
    assert_eq!(agg.pull_all("k49", &names).unwrap().len(), 4);
}

/// The transition graph is enforced and every change recorded.
pub fn lifecycle_transitions_are_validated_and_recorded(h: &dyn Harness) {
    let k = h.kernel();
    let t1 = ti("ocr", 1);
    k.schedule(&t1).unwrap();
    assert!(matches!(
        k.succeed(&t1, b"early".to_vec()),
        Err(Error::InvalidTransition {
            from: Some(TaskStatusKind::Scheduled),
            to: TaskStatusKind::Succeeded,
            ..
        })
    ));
    k.start(&t1).unwrap();
    k.succeed(&t1, b"ok".to_vec()).unwrap();
    assert!(matches!(
        k.start(&t1),
        Err(Error::InvalidTransition {
            from: Some(TaskStatusKind::Succeeded),
            ..
        })
    ));
    let t2 = ti("tables", 1);
    k.start(&t2).unwrap();
    k.fail(&t2, "timeout", "transient").unwrap();
    let never = ti("never-started", 1);
    assert!(matches!(
        k.fail(&never, "x", "y"),
        Err(Error::InvalidTransition { from: None, .. })
    ));
    k.cancel(&never).unwrap();
    drop(k);
    h.reopen();
    let k = h.kernel();
    let rec = k.task(&t1).unwrap().unwrap();
    assert_eq!(rec.latest_try, 1);
    assert_eq!(
        rec.status,
        TaskStatus::Succeeded {
            result: b"ok".to_vec()
        }
    );
    let a = &rec.attempts[0];
    assert_eq!(a.worker, "test-worker");
    assert!(a.started_micros.is_some() && a.finished_micros >= a.started_micros);
    let rec = k.task(&t2).unwrap().unwrap();
    assert!(matches!(rec.status, TaskStatus::Failed { ref kind, .. } if kind == "transient"));
    assert_eq!(k.task(&ti("never", 1)).unwrap(), None);
    assert_eq!(
        k.task(&never).unwrap().unwrap().status,
        TaskStatus::Cancelled
    );
}

/// Eight threads race each transition of one attempt: one wins, seven are
/// told the status the winner left, and the log holds one of each.
pub fn racing_callers_of_one_transition_have_one_winner(h: &dyn Harness) {
    let k = h.kernel();
    let t = ti("ocr", 1);
    for (to, from_after) in [
        (TaskStatusKind::Scheduled, TaskStatusKind::Scheduled),
        (TaskStatusKind::Running, TaskStatusKind::Running),
        (TaskStatusKind::Succeeded, TaskStatusKind::Succeeded),
    ] {
        let results = race(8, |i| match to {
            TaskStatusKind::Scheduled => k.schedule(&t),
            TaskStatusKind::Running => k.start(&t),
            _ => k.succeed(&t, vec![u8::try_from(i).unwrap()]),
        });
        let won = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(won, 1, "{to}: {results:?}");
        for r in results.iter().filter(|r| r.is_err()) {
            assert!(
                matches!(r, Err(Error::InvalidTransition { from: Some(f), to: t2, .. })
                    if *f == from_after && *t2 == to),
                "{to}: {r:?}"
            );
        }
        assert_eq!(statuses_logged(&k, &t, to), 1, "{to}");
    }
    assert_eq!(k.stats().conflicts, 21);
    drop(k);
    h.reopen();
    let k = h.kernel();
    assert!(matches!(
        k.task(&t).unwrap().unwrap().status,
        TaskStatus::Succeeded { .. }
    ));
}

/// The atomic finish: outputs, task state and the status in one batch
/// (one LSN), by `Batch`, `succeed_with` and `fail_with`.
pub fn a_finish_writes_its_outputs_and_its_status_in_one_step(h: &dyn Harness) {
    let k = h.kernel();
    let t = ti("tables", 1);
    k.start(&t).unwrap();
    let ctx = k.context(t.clone());
    let lsn = ctx
        .batch()
        .set("rows", b"3")
        .set_task_state("pages_done", b"4")
        .succeed(b"ok".to_vec())
        .commit()
        .unwrap()
        .unwrap();
    let failing = ti("ocr", 1);
    k.start(&failing).unwrap();
    let failed = k
        .fail_with(&failing, "noise", "transient", [("failed_page", "2")])
        .unwrap();
    let direct = ti("aggregate", 1);
    k.start(&direct).unwrap();
    let succeeded = k
        .succeed_with(&direct, b"done".to_vec(), [("report", b"r".as_slice())])
        .unwrap();
    drop((k, ctx));
    h.reopen();
    let k = h.kernel();
    let ctx = k.context(t.clone());
    assert_eq!(ctx.get_entry("rows").unwrap().unwrap().lsn, lsn);
    assert_eq!(ctx.task_state("pages_done").unwrap(), Some(b"4".to_vec()));
    let record = k.task(&t).unwrap().unwrap();
    assert!(matches!(record.status, TaskStatus::Succeeded { ref result } if result == b"ok"));
    let history = k.history_of_task(&t).unwrap();
    let last = history.last().unwrap();
    assert_eq!(last.lsn, lsn, "the status is in the outputs' batch");
    assert_eq!(last.event.kind(), "task_status");
    assert_eq!(
        k.context(failing.clone())
            .get_entry("failed_page")
            .unwrap()
            .unwrap()
            .lsn,
        failed
    );
    assert!(matches!(
        k.task(&failing).unwrap().unwrap().status,
        TaskStatus::Failed { .. }
    ));
    assert_eq!(
        k.context(direct.clone())
            .get_entry("report")
            .unwrap()
            .unwrap()
            .lsn,
        succeeded
    );
}

/// A finish the lifecycle refuses writes none of its outputs: of racing
/// finishers of one attempt, only the winner's outputs are there.
pub fn a_refused_finish_writes_none_of_its_outputs(h: &dyn Harness) {
    let k = h.kernel();
    let t = ti("ocr", 1);
    let ctx = k.context(t.clone());
    let early = ctx
        .batch()
        .set("rows", b"early")
        .succeed(b"ok".to_vec())
        .commit();
    assert!(matches!(
        early,
        Err(Error::InvalidTransition { from: None, .. })
    ));
    assert_eq!(ctx.get("rows").unwrap(), None);
    k.start(&t).unwrap();
    let results = race(6, |i| {
        k.context(t.clone())
            .batch()
            .set("rows", format!("from-{i}"))
            .set_task_state(&format!("by-{i}"), b"x")
            .succeed(b"ok".to_vec())
            .commit()
    });
    let winners: Vec<usize> = (0..6).filter(|i| results[*i].is_ok()).collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    let winner = winners[0];
    drop((k, ctx));
    h.reopen();
    let ctx = h.kernel().context(t);
    assert_eq!(
        ctx.get("rows").unwrap(),
        Some(format!("from-{winner}").into_bytes())
    );
    let by: Vec<String> = ctx
        .task_state_entries()
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(by, [format!("by-{winner}")]);
}

/// A retry clears the attempt state of every attempt, keeps task state,
/// and schedules the next attempt in the same batch.
pub fn clear_for_retry_clears_every_attempt_and_keeps_task_state(h: &dyn Harness) {
    let k = h.kernel();
    let t1 = ti("extract", 1);
    let ctx = k.context(t1.clone());
    ctx.set("partial", b"p1").unwrap();
    ctx.set_task_state("cursor", b"page-3").unwrap();
    k.start(&t1).unwrap();
    k.fail(&t1, "boom", "transient").unwrap();
    let t2 = k.clear_for_retry(&t1).unwrap();
    assert_eq!(t2.try_number(), 2);
    assert_eq!(
        k.task(&t2).unwrap().unwrap().status,
        TaskStatus::Scheduled,
        "the retry scheduled the next attempt"
    );
    k.start(&t2).unwrap();
    let ctx2 = k.context(t2.clone());
    ctx2.set("partial", b"p2").unwrap();
    k.fail(&t2, "boom", "transient").unwrap();
    let t3 = k.clear_for_retry(&t2).unwrap();
    assert_eq!(t3.try_number(), 3);
    drop((k, ctx, ctx2));
    h.reopen();
    let k = h.kernel();
    assert_eq!(k.context(t1.clone()).get("partial").unwrap(), None);
    assert_eq!(k.context(t2.clone()).get("partial").unwrap(), None);
    assert_eq!(
        k.context(t3.clone()).task_state("cursor").unwrap(),
        Some(b"page-3".to_vec())
    );
    // The failures are still in the task's history.
    let record = k.task(&t1).unwrap().unwrap();
    assert!(matches!(
        record.attempts[0].status,
        TaskStatus::Failed { .. }
    ));
    assert_eq!(record.latest_try, 3);
    // A task with task state only (no status, no attempt state) is known:
    // its retry is the next try.
    let stateful = ti("index", 1);
    k.context(stateful.clone())
        .set_task_state("cursor", b"0")
        .unwrap();
    assert_eq!(k.clear_for_retry(&stateful).unwrap().try_number(), 2);
    // The last try number has no next: a typed error, and nothing written
    // (the attempt state of the last try survives).
    let last = ti("load", u32::MAX);
    k.context(last.clone()).set("partial", b"x").unwrap();
    assert!(matches!(
        k.clear_for_retry(&last),
        Err(Error::InvalidRef(_))
    ));
    assert_eq!(k.context(last).get("partial").unwrap(), Some(b"x".to_vec()));
}

/// A retry takes the task's latest attempt once it finished: not a
/// superseded one, not one still scheduled or running; and a superseded
/// attempt cannot be started.
pub fn a_retry_takes_the_latest_finished_attempt(h: &dyn Harness) {
    let k = h.kernel();
    let t1 = ti("ocr", 1);
    k.start(&t1).unwrap();
    assert!(matches!(
        k.clear_for_retry(&t1),
        Err(Error::NotRetryable {
            status: TaskStatusKind::Running,
            ..
        })
    ));
    k.fail(&t1, "x", "transient").unwrap();
    let t2 = k.clear_for_retry(&t1).unwrap();
    assert!(matches!(
        k.clear_for_retry(&t2),
        Err(Error::NotRetryable {
            status: TaskStatusKind::Scheduled,
            ..
        })
    ));
    assert!(matches!(
        k.clear_for_retry(&t1),
        Err(Error::NotLatestAttempt { latest: 2, .. })
    ));
    assert!(
        matches!(k.start(&t1), Err(Error::InvalidTransition { .. })),
        "t1 failed"
    );
    // A superseded attempt that never ran cannot start either.
    let late = ti("late", 1);
    k.context(late.clone()).set("k", b"v").unwrap();
    let late2 = k.clear_for_retry(&late).unwrap();
    assert!(matches!(
        k.start(&late),
        Err(Error::NotLatestAttempt { latest: 2, .. })
    ));
    k.start(&late2).unwrap();
    // A cancelled attempt is retried.
    k.cancel(&t2).unwrap();
    let t3 = k.clear_for_retry(&t2).unwrap();
    assert_eq!(t3.try_number(), 3);
    // One live attempt a task: while #3 is scheduled (or running), a
    // retry through a higher try, or a start, schedule or cancel of a new
    // attempt, is refused, naming the live one.
    k.start(&t3).unwrap();
    let t9 = t1.with_try(9).unwrap();
    assert!(
        matches!(
            k.clear_for_retry(&t9),
            Err(Error::NotRetryable { ref task, status: TaskStatusKind::Running }) if task.ends_with("#3")
        ),
        "a retry must not clear a running attempt's state"
    );
    for result in [k.start(&t9), k.schedule(&t9), k.cancel(&t9)] {
        assert!(
            matches!(
                result,
                Err(Error::AttemptInProgress {
                    try_number: 3,
                    status: TaskStatusKind::Running,
                    ..
                })
            ),
            "{result:?}"
        );
    }
    assert_eq!(k.task(&t1).unwrap().unwrap().latest_try, 3);
    k.succeed(&t3, b"ok".to_vec()).unwrap();
    assert_eq!(k.clear_for_retry(&t9).unwrap().try_number(), 10);
}

/// Eight threads retry one failed attempt at once: one next attempt is
/// made, and the others are told which.
pub fn racing_retries_of_one_attempt_make_one_next_attempt(h: &dyn Harness) {
    let k = h.kernel();
    let t1 = ti("ocr", 1);
    k.context(t1.clone()).set("partial", b"x").unwrap();
    k.start(&t1).unwrap();
    k.fail(&t1, "boom", "transient").unwrap();
    let results = race(8, |_| k.clear_for_retry(&t1));
    let next: Vec<&TaskRef> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(next.len(), 1, "{results:?}");
    assert_eq!(next[0].try_number(), 2);
    for r in results.iter().filter(|r| r.is_err()) {
        assert!(
            matches!(r, Err(Error::NotLatestAttempt { latest: 2, .. })),
            "{r:?}"
        );
    }
    let clears = k
        .history_of_task(&t1)
        .unwrap()
        .iter()
        .filter(|e| e.event.kind() == "clear_task")
        .count();
    assert_eq!(clears, 1);
    drop(k);
    h.reopen();
    let k = h.kernel();
    let record = k.task(&t1).unwrap().unwrap();
    assert_eq!(record.latest_try, 2);
    assert_eq!(record.attempts.len(), 2);
}

/// After a "crash" (a reopen), resume reports what finished, what was
/// running (recorded as interrupted, once) and what is scheduled.
pub fn resume_reports_and_records_interrupted_tasks(h: &dyn Harness) {
    let k = h.kernel();
    let run = run42();
    let done = run.task("ingest").unwrap();
    k.start(&done).unwrap();
    k.succeed(&done, b"ok".to_vec()).unwrap();
    let busy = run.task("ocr").unwrap().with_try(2).unwrap();
    k.start(&busy).unwrap();
    let waiting = run.task("tables").unwrap();
    k.schedule(&waiting).unwrap();
    drop(k);
    h.reopen(); // the "crash"
    let k = h.kernel();
    let state = k.resume(&run).unwrap();
    let by_task: BTreeMap<&str, &TaskResume> =
        state.tasks.iter().map(|t| (t.ti.task_id(), t)).collect();
    assert_eq!(by_task.len(), 3);
    assert!(by_task["ocr"].interrupted);
    assert_eq!(by_task["ocr"].ti.try_number(), 2);
    assert_eq!(by_task["ocr"].status, TaskStatus::Interrupted);
    assert!(!by_task["ingest"].interrupted);
    assert_eq!(by_task["tables"].status, TaskStatus::Scheduled);
    assert_eq!(state.succeeded().count(), 1);
    assert_eq!(state.to_retry().count(), 1);
    let scheduled: Vec<&str> = state.scheduled().map(|t| t.ti.task_id()).collect();
    assert_eq!(scheduled, ["tables"]);
    assert_eq!(state.status, RunStatus::Created);
    assert!(state.recorded.is_some());
    // Recorded: a second resume finds nothing running.
    let again = k.resume(&run).unwrap();
    assert!(again.tasks.iter().all(|t| !t.interrupted));
    assert_eq!(again.recorded, None);
    assert_eq!(
        k.task(&busy).unwrap().unwrap().status,
        TaskStatus::Interrupted
    );
}

/// Racing resumes of one run: each running attempt is recorded
/// interrupted once, and a finish that lands first keeps its status.
pub fn racing_resumes_record_each_interruption_once(h: &dyn Harness) {
    let k = h.kernel();
    let run = run42();
    let tasks: Vec<TaskRef> = (0..4).map(|i| run.task(format!("t{i}")).unwrap()).collect();
    for t in &tasks {
        k.start(t).unwrap();
    }
    let finisher = &tasks[0];
    let results = race(5, |i| {
        if i == 4 {
            k.succeed(finisher, b"ok".to_vec()).map(|_| None)
        } else {
            k.resume(&run).map(Some)
        }
    });
    for r in &results[..4] {
        assert!(r.is_ok(), "{r:?}");
    }
    // The finish lost to a resume only if that resume recorded the
    // attempt interrupted first.
    assert!(
        matches!(
            &results[4],
            Ok(None)
                | Err(Error::InvalidTransition {
                    from: Some(TaskStatusKind::Interrupted),
                    ..
                })
        ),
        "{:?}",
        results[4]
    );
    for t in &tasks[1..] {
        assert_eq!(
            statuses_logged(&k, t, TaskStatusKind::Interrupted),
            1,
            "{t}"
        );
    }
    let finished = statuses_logged(&k, finisher, TaskStatusKind::Succeeded);
    let interrupted = statuses_logged(&k, finisher, TaskStatusKind::Interrupted);
    assert_eq!(finished + interrupted, 1, "one of the two, never both");
    let recorded = results
        .iter()
        .filter_map(|r| r.as_ref().ok().cloned().flatten())
        .filter(|s| s.recorded.is_some())
        .count();
    assert!(recorded >= 1);
}

/// A run pauses and resumes; a start in a paused run is refused; every
/// run status change is checked.
pub fn runs_pause_and_resume_with_checked_transitions(h: &dyn Harness) {
    let k = h.kernel();
    let run = run42();
    assert!(matches!(k.pause_run(&run), Err(Error::UnknownRun { .. })));
    assert!(matches!(k.resume_run(&run), Err(Error::UnknownRun { .. })));
    k.set_run_status(&run, RunStatus::Running, None).unwrap();
    let ocr = run.task("ocr").unwrap();
    k.start(&ocr).unwrap();
    k.pause_run(&run).unwrap();
    let tables = run.task("tables").unwrap();
    assert!(matches!(k.start(&tables), Err(Error::RunPaused { .. })));
    k.schedule(&tables).unwrap(); // queued while paused
    k.succeed(&ocr, b"ok".to_vec()).unwrap(); // running work finishes
    for status in [RunStatus::Succeeded, RunStatus::Running] {
        assert!(
            matches!(
                k.set_run_status(&run, status, None),
                Err(Error::InvalidRunTransition {
                    from: Some(RunStatus::Paused),
                    ..
                })
            ),
            "only resume_run leaves a pause ({status})"
        );
    }
    drop(k);
    h.reopen();
    let k = h.kernel();
    let state = k.resume(&run).unwrap();
    assert!(state.is_paused());
    assert_eq!(
        k.runs("acme", None).unwrap()[0].record.status,
        RunStatus::Paused
    );
    k.resume_run(&run).unwrap();
    assert!(matches!(
        k.resume_run(&run),
        Err(Error::InvalidRunTransition {
            from: Some(RunStatus::Running),
            ..
        })
    ));
    k.start(&tables).unwrap();
    k.succeed(&tables, b"ok".to_vec()).unwrap();
    k.set_run_status(&run, RunStatus::Succeeded, None).unwrap();
    assert!(matches!(
        k.set_run_status(&run, RunStatus::Running, None),
        Err(Error::InvalidRunTransition {
            from: Some(RunStatus::Succeeded),
            ..
        })
    ));
    assert!(!k.resume(&run).unwrap().is_paused());
    // A run that is over starts no task.
    assert!(matches!(
        k.start(&run.task("late").unwrap()),
        Err(Error::RunFinished {
            status: RunStatus::Succeeded,
            ..
        })
    ));
}

/// Racing pauses (and resumes) of one run: one wins each.
pub fn racing_pauses_have_one_winner(h: &dyn Harness) {
    let k = h.kernel();
    let run = run42();
    k.set_run_status(&run, RunStatus::Running, None).unwrap();
    for pause in [true, false] {
        let results = race(6, |_| {
            if pause {
                k.pause_run(&run)
            } else {
                k.resume_run(&run)
            }
        });
        one_winner(&results, |e| {
            matches!(e, Error::InvalidRunTransition { .. })
        });
    }
    assert_eq!(k.run(&run).unwrap().unwrap().status, RunStatus::Running);
}

/// Checkpoints capture and restore a run's state (history is kept), are
/// listed, deleted and pruned.
pub fn checkpoints_capture_restore_list_and_prune(h: &dyn Harness) {
    let k = h.kernel();
    let run = run42();
    let ocr = k.context(run.task("ocr").unwrap());
    ocr.set("text", b"v1").unwrap();
    ocr.set_task_state("cursor", b"c1").unwrap();
    k.set_shared(&run, "model", b"m1", false).unwrap();
    k.checkpoint(&run, "before-tables").unwrap();
    ocr.set("text", b"v2").unwrap();
    ocr.set("extra", b"x").unwrap();
    ocr.set_task_state("cursor", b"c2").unwrap();
    k.set_shared(&run, "model", b"m2", false).unwrap();
    k.checkpoint(&run, "after-tables").unwrap();
    drop((k, ocr));
    h.reopen();
    let k = h.kernel();
    let ocr = k.context(run.task("ocr").unwrap());
    let list = k.checkpoints(&run).unwrap();
    let names: Vec<&str> = list.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["before-tables", "after-tables"]);
    assert!(list.iter().all(|c| c.size_bytes > 0 && c.ts_micros > 0));
    k.restore(&run, "before-tables").unwrap();
    assert_eq!(ocr.get("text").unwrap(), Some(b"v1".to_vec()));
    assert_eq!(ocr.get("extra").unwrap(), None);
    assert_eq!(ocr.task_state("cursor").unwrap(), Some(b"c1".to_vec()));
    assert_eq!(k.shared(&run, "model").unwrap(), Some(b"m1".to_vec()));
    // History is not rewritten: the later checkpoint still restores.
    k.restore(&run, "after-tables").unwrap();
    assert_eq!(ocr.get("extra").unwrap(), Some(b"x".to_vec()));
    assert!(matches!(
        k.restore(&run, "nope"),
        Err(Error::UnknownCheckpoint { .. })
    ));
    assert!(matches!(
        k.checkpoint(&RunRef::new("acme", "documents", "ghost").unwrap(), "c"),
        Err(Error::UnknownRun { .. })
    ));
    k.checkpoint(&run, "third").unwrap();
    k.checkpoint(&run, "fourth").unwrap();
    k.delete_checkpoint(&run, "fourth").unwrap();
    assert!(matches!(
        k.delete_checkpoint(&run, "fourth"),
        Err(Error::UnknownCheckpoint { .. })
    ));
    let pruned = k.prune_checkpoints(&run, Some(1), None).unwrap();
    assert_eq!(pruned, ["before-tables", "after-tables"]);
    let left: Vec<String> = k
        .checkpoints(&run)
        .unwrap()
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(left, ["third"]);
    let pruned = k
        .prune_checkpoints(&run, None, Some(Duration::ZERO))
        .unwrap();
    assert_eq!(pruned, ["third"], "older than zero");
}

/// Racing deletes of one checkpoint: one deletes it; racing prunes delete
/// each checkpoint once in all.
pub fn racing_deletes_of_one_checkpoint_have_one_winner(h: &dyn Harness) {
    let k = h.kernel();
    let run = run42();
    k.context(run.task("ocr").unwrap())
        .set("text", b"v")
        .unwrap();
    k.checkpoint(&run, "c").unwrap();
    let results = race(6, |_| k.delete_checkpoint(&run, "c"));
    one_winner(&results, |e| matches!(e, Error::UnknownCheckpoint { .. }));
    for name in ["a", "b", "c", "d"] {
        k.checkpoint(&run, name).unwrap();
    }
    let pruned = race(4, |_| k.prune_checkpoints(&run, Some(1), None).unwrap());
    let mut all: Vec<String> = pruned.into_iter().flatten().collect();
    all.sort();
    assert_eq!(all, ["a", "b", "c"], "each deleted by one prune");
    let restored = race(4, |_| k.restore(&run, "d"));
    assert!(restored.iter().all(Result::is_ok), "{restored:?}");
    // A restore racing the checkpoint's delete: restored before it, or
    // refused after it, never restored from a deleted checkpoint.
    let both = race(2, |i| {
        if i == 0 {
            k.restore(&run, "d")
        } else {
            k.delete_checkpoint(&run, "d")
        }
    });
    assert!(both[1].is_ok(), "{both:?}");
    assert!(
        matches!(both[0], Ok(_) | Err(Error::UnknownCheckpoint { .. })),
        "{both:?}"
    );
    let history = k.history_of_run(&run).unwrap();
    let kinds: Vec<&str> = history.iter().map(|e| e.event.kind()).collect();
    let deleted = kinds
        .iter()
        .rposition(|k| *k == "delete_checkpoint")
        .unwrap();
    assert!(
        !kinds[deleted..].contains(&"restore_checkpoint"),
        "a restore after the delete: {kinds:?}"
    );
}

/// A backend that holds the first `n` appends until all `n` have come:
/// every racer has read the state before any writes, so each decision's
/// refusal comes from its conditions (the conflict path), not from a read
/// that already saw the winner's batch.
#[derive(Debug)]
struct Gate {
    inner: Kernel,
    barrier: Arc<Barrier>,
    left: std::sync::atomic::AtomicUsize,
}

impl Gate {
    fn kernel(inner: Kernel, n: usize) -> Kernel {
        let worker = inner.worker_id().to_string();
        Kernel::on(
            Gate {
                inner,
                barrier: Arc::new(Barrier::new(n)),
                left: std::sync::atomic::AtomicUsize::new(n),
            },
            worker,
        )
    }
}

impl waymark_kernel::Backend for Gate {
    fn append(
        &self,
        conditions: Vec<waymark_engine::Condition>,
        events: Vec<waymark_engine::Event>,
    ) -> waymark_kernel::Result<Lsn> {
        let held = self
            .left
            .fetch_update(
                std::sync::atomic::Ordering::AcqRel,
                std::sync::atomic::Ordering::Acquire,
                |n| n.checked_sub(1),
            )
            .is_ok();
        if held {
            self.barrier.wait();
        }
        self.inner.backend().append(conditions, events)
    }
    fn get(
        &self,
        a: &waymark_engine::AttemptScope,
        k: &str,
    ) -> waymark_kernel::Result<Option<waymark_engine::KvValue>> {
        self.inner.backend().get(a, k)
    }
    fn attempt_entries(
        &self,
        a: &waymark_engine::AttemptScope,
    ) -> waymark_kernel::Result<Vec<(String, waymark_engine::KvValue)>> {
        self.inner.backend().attempt_entries(a)
    }
    fn latest_attempt_value(
        &self,
        t: &waymark_engine::TaskScope,
        k: &str,
    ) -> waymark_kernel::Result<Option<(u32, waymark_engine::KvValue)>> {
        self.inner.backend().latest_attempt_value(t, k)
    }
    fn task_state(
        &self,
        t: &waymark_engine::TaskScope,
        k: &str,
    ) -> waymark_kernel::Result<Option<waymark_engine::KvValue>> {
        self.inner.backend().task_state(t, k)
    }
    fn task_state_entries(
        &self,
        t: &waymark_engine::TaskScope,
    ) -> waymark_kernel::Result<Vec<(String, waymark_engine::KvValue)>> {
        self.inner.backend().task_state_entries(t)
    }
    fn task(
        &self,
        t: &waymark_engine::TaskScope,
    ) -> waymark_kernel::Result<Option<waymark_engine::TaskRecord>> {
        self.inner.backend().task(t)
    }
    fn tasks(
        &self,
        r: &waymark_engine::RunScope,
    ) -> waymark_kernel::Result<Vec<(String, waymark_engine::TaskRecord)>> {
        self.inner.backend().tasks(r)
    }
    fn run(
        &self,
        r: &waymark_engine::RunScope,
    ) -> waymark_kernel::Result<Option<waymark_engine::RunRecord>> {
        self.inner.backend().run(r)
    }
    fn runs(
        &self,
        t: &str,
        d: Option<&str>,
    ) -> waymark_kernel::Result<Vec<(waymark_engine::RunScope, waymark_engine::RunRecord)>> {
        self.inner.backend().runs(t, d)
    }
    fn shared(
        &self,
        r: &waymark_engine::RunScope,
        k: &str,
    ) -> waymark_kernel::Result<Option<waymark_engine::SharedValue>> {
        self.inner.backend().shared(r, k)
    }
    fn checkpoint(
        &self,
        r: &waymark_engine::RunScope,
        n: &str,
    ) -> waymark_kernel::Result<Option<waymark_engine::CheckpointRecord>> {
        self.inner.backend().checkpoint(r, n)
    }
    fn checkpoints(
        &self,
        r: &waymark_engine::RunScope,
    ) -> waymark_kernel::Result<Vec<(String, waymark_engine::CheckpointRecord)>> {
        self.inner.backend().checkpoints(r)
    }
    fn scan_log(
        &self,
        from: Lsn,
        visit: &mut dyn FnMut(Lsn, Vec<waymark_engine::Event>) -> bool,
    ) -> waymark_kernel::Result<()> {
        self.inner.backend().scan_log(from, visit)
    }
    fn durable_lsn(&self) -> Lsn {
        self.inner.backend().durable_lsn()
    }
    fn flush(&self) -> waymark_kernel::Result<Lsn> {
        self.inner.flush()
    }
    fn close(&self) -> waymark_kernel::Result<()> {
        self.inner.close()
    }
    fn stats(&self) -> waymark_kernel::BackendStats {
        self.inner.stats()
    }
}

/// Racers of the decisions that read before they write (retry, checkpoint
/// delete, resume, purge, write-once variable, transition), held at the
/// append until all have read: each is refused by its conditions, and the
/// refusal still names what the winner left.
pub fn racing_decisions_meet_at_the_append(h: &dyn Harness) {
    let run = run42();
    let t1 = ti("ocr", 1);
    {
        let k = h.kernel();
        k.start(&t1).unwrap();
        k.fail(&t1, "boom", "transient").unwrap();
        k.context(run.task("tables").unwrap())
            .set("k", b"v")
            .unwrap();
        k.checkpoint(&run, "c").unwrap();
    }
    let gated = Gate::kernel(h.kernel(), 4);
    let results = race(4, |_| gated.clear_for_retry(&t1));
    one_winner(&results, |e| {
        matches!(e, Error::NotLatestAttempt { latest: 2, .. })
    });
    let gated = Gate::kernel(h.kernel(), 4);
    let results = race(4, |_| gated.delete_checkpoint(&run, "c"));
    one_winner(&results, |e| matches!(e, Error::UnknownCheckpoint { .. }));
    let gated = Gate::kernel(h.kernel(), 4);
    let results = race(4, |i| gated.set_shared(&run, "once", i.to_string(), true));
    one_winner(&results, |e| matches!(e, Error::ImmutableShared { .. }));
    let t2 = t1.with_try(2).unwrap();
    let gated = Gate::kernel(h.kernel(), 4);
    let results = race(4, |_| gated.start(&t2));
    one_winner(&results, |e| {
        matches!(
            e,
            Error::InvalidTransition {
                from: Some(TaskStatusKind::Running),
                ..
            }
        )
    });
    // Racing resumes all read t2 running; one records it.
    let gated = Gate::kernel(h.kernel(), 4);
    let states = race(4, |_| gated.resume(&run).unwrap());
    assert_eq!(
        states.iter().filter(|s| s.recorded.is_some()).count(),
        1,
        "{states:?}"
    );
    assert_eq!(
        statuses_logged(&h.kernel(), &t2, TaskStatusKind::Interrupted),
        1
    );
    let gated = Gate::kernel(h.kernel(), 4);
    let results = race(4, |_| gated.purge_run(&run));
    one_winner(&results, |e| matches!(e, Error::UnknownRun { .. }));
    let conflicts = h.kernel().stats().conflicts;
    assert!(
        conflicts >= 15,
        "the losers met their conditions: {conflicts}"
    );
}

/// Shared variables (write-once ones too), runs, children and a purge.
pub fn shared_variables_and_runs(h: &dyn Harness) {
    let k = h.kernel();
    let parent = run42();
    let child = RunRef::new("acme", "pages", "run-42.p1").unwrap();
    let other = RunRef::new("acme", "documents", "run-43").unwrap();
    let beta = RunRef::new("beta", "documents", "run-42").unwrap();
    k.set_shared(&parent, "threshold", b"0.8", true).unwrap();
    assert!(matches!(
        k.set_shared(&parent, "threshold", b"0.9", true),
        Err(Error::ImmutableShared { .. })
    ));
    assert!(matches!(
        k.set_shared(&parent, "threshold", b"0.9", false),
        Err(Error::ImmutableShared { .. })
    ));
    k.set_shared(&parent, "mutable", b"1", false).unwrap();
    k.set_shared(&parent, "mutable", b"2", false).unwrap();
    k.set_run_status(&parent, RunStatus::Running, None).unwrap();
    k.set_run_status(&child, RunStatus::Running, Some((&parent, "split")))
        .unwrap();
    k.set_run_status(&other, RunStatus::Running, None).unwrap();
    k.set_run_status(&other, RunStatus::Succeeded, None)
        .unwrap();
    k.set_run_status(&beta, RunStatus::Running, None).unwrap();
    k.start(&parent.task("split").unwrap()).unwrap();
    drop(k);
    h.reopen();
    let k = h.kernel();
    assert_eq!(
        k.shared(&parent, "threshold").unwrap(),
        Some(b"0.8".to_vec())
    );
    assert_eq!(k.shared(&parent, "mutable").unwrap(), Some(b"2".to_vec()));
    assert_eq!(k.shared(&other, "threshold").unwrap(), None);
    let acme: Vec<String> = k
        .runs("acme", None)
        .unwrap()
        .into_iter()
        .map(|r| r.run.run_id().to_string())
        .collect();
    assert_eq!(acme.len(), 3);
    let docs = k.runs("acme", Some("documents")).unwrap();
    assert_eq!(docs.len(), 2);
    let p = k.run(&parent).unwrap().unwrap();
    assert_eq!(p.status, RunStatus::Running);
    assert_eq!(p.task_counts.running, 1);
    let children = k.children(&parent).unwrap();
    assert_eq!(children.len(), 1);
    assert_eq!(children[0].run, child);
    k.purge_run(&parent).unwrap();
    assert_eq!(k.run(&parent).unwrap(), None);
    assert_eq!(k.shared(&parent, "threshold").unwrap(), None);
    assert!(k.run(&other).unwrap().is_some(), "other runs untouched");
    assert!(k.run(&beta).unwrap().is_some(), "other tenants untouched");
    // Purged, the write-once variable can be written afresh.
    k.set_shared(&parent, "threshold", b"0.9", true).unwrap();
}

/// Two (and eight) first writes of an immutable variable, raced: one value,
/// the others `ImmutableShared`.
pub fn racing_first_writes_of_an_immutable_variable_leave_one_value(h: &dyn Harness) {
    let k = h.kernel();
    let run = run42();
    for (round, racers) in [2usize, 8].into_iter().enumerate() {
        let key = format!("threshold-{round}");
        let results = race(racers, |i| k.set_shared(&run, &key, i.to_string(), true));
        let winners: Vec<usize> = (0..racers).filter(|i| results[*i].is_ok()).collect();
        assert_eq!(winners.len(), 1, "{results:?}");
        assert!(
            results
                .iter()
                .filter(|r| r.is_err())
                .all(|r| matches!(r, Err(Error::ImmutableShared { .. })))
        );
        assert_eq!(
            k.shared(&run, &key).unwrap(),
            Some(winners[0].to_string().into_bytes())
        );
    }
}

/// Racing purges of one run: one purges, the others find it unknown.
pub fn racing_purges_have_one_winner(h: &dyn Harness) {
    let k = h.kernel();
    let run = run42();
    k.context(run.task("ocr").unwrap()).set("k", b"v").unwrap();
    let results = race(4, |_| k.purge_run(&run));
    one_winner(&results, |e| matches!(e, Error::UnknownRun { .. }));
    assert_eq!(k.context(run.task("ocr").unwrap()).get("k").unwrap(), None);
}

/// A wall-clock time (in microseconds, as events carry it) after every
/// event written before the call and before every event written after
/// it returns: the clock is read until it moves on, on both sides (two
/// reads back to back often fall in one microsecond, and an event of
/// that microsecond would be on either side of it).
fn a_microsecond_between_writes() -> i64 {
    let before = waymark_engine::event::now_micros();
    let mut mid = waymark_engine::event::now_micros();
    while mid <= before {
        std::hint::spin_loop();
        mid = waymark_engine::event::now_micros();
    }
    while waymark_engine::event::now_micros() <= mid {
        std::hint::spin_loop();
    }
    mid
}

/// History of a task, a key, a run, and of a time range.
pub fn history_of_a_task_a_key_a_run_and_a_time_range(h: &dyn Harness) {
    let k = h.kernel();
    let t1 = ti("ocr", 1);
    let ctx = k.context(t1.clone());
    k.start(&t1).unwrap();
    ctx.set("text", b"v1").unwrap();
    ctx.set("other", b"o").unwrap();
    let mid = a_microsecond_between_writes();
    ctx.set("text", b"v2").unwrap();
    k.fail(&t1, "boom", "transient").unwrap();
    let t2 = k.clear_for_retry(&t1).unwrap();
    k.context(t2.clone()).set("text", b"v3").unwrap();
    k.context(ti("tables", 1))
        .set("text", b"elsewhere")
        .unwrap();
    drop((k, ctx));
    h.reopen();
    let k = h.kernel();
    let task = k.history_of_task(&t1).unwrap();
    let kinds: Vec<&str> = task.iter().map(|e| e.event.kind()).collect();
    assert_eq!(
        kinds,
        [
            "task_status",
            "put",
            "put",
            "put",
            "task_status",
            "clear_task",
            "task_status",
            "put"
        ]
    );
    assert!(
        task.windows(2).all(|w| w[0].lsn <= w[1].lsn),
        "in log order"
    );
    assert_eq!(task[5].lsn, task[6].lsn, "the retry is one batch");
    let key = k.history_of_key(&t1, "text").unwrap();
    let kinds: Vec<&str> = key.iter().map(|e| e.event.kind()).collect();
    assert_eq!(kinds, ["put", "put", "clear_task", "put"]);
    assert_eq!(k.history_of_run(t1.run_ref()).unwrap().len(), 9);
    let late = k.events_between(mid, i64::MAX).unwrap();
    assert_eq!(late.len(), 6, "v2, fail, clear, scheduled, v3, elsewhere");
}

/// The state of a run as of an LSN or a time, read with the usual API.
pub fn a_run_as_of_an_lsn_or_a_time(h: &dyn Harness) {
    use waymark_kernel::At;
    let k = h.kernel();
    let t1 = ti("ocr", 1);
    let ctx = k.context(t1.clone());
    let first = ctx.set("text", b"v1").unwrap();
    k.start(&t1).unwrap();
    let t_mid = a_microsecond_between_writes();
    ctx.set("text", b"v2").unwrap();
    k.succeed(&t1, b"ok".to_vec()).unwrap();
    k.context(TaskRef::new("beta", "documents", "run-42", "ocr", 1).unwrap())
        .set("text", b"other tenant")
        .unwrap();
    drop((k, ctx));
    h.reopen();
    let k = h.kernel();
    let then = k.run_as_of(t1.run_ref(), At::Lsn(first)).unwrap();
    assert_eq!(
        then.context(t1.clone()).get("text").unwrap(),
        Some(b"v1".to_vec())
    );
    assert_eq!(then.task(&t1).unwrap(), None, "not started yet");
    let mid = k.run_as_of(t1.run_ref(), At::TimeMicros(t_mid)).unwrap();
    assert_eq!(
        mid.context(t1.clone()).get("text").unwrap(),
        Some(b"v1".to_vec())
    );
    assert_eq!(mid.task(&t1).unwrap().unwrap().status, TaskStatus::Running);
    let now = k.run_as_of(t1.run_ref(), At::Lsn(Lsn(u64::MAX))).unwrap();
    assert_eq!(
        now.context(t1.clone()).get("text").unwrap(),
        Some(b"v2".to_vec())
    );
    assert!(matches!(
        now.task(&t1).unwrap().unwrap().status,
        TaskStatus::Succeeded { .. }
    ));
}

/// A watch delivers durable events that match its filter, and says when a
/// subscriber that does not read fell behind.
pub fn watch_delivers_matching_durable_events_and_reports_lag(h: &dyn Harness) {
    let k = h.kernel();
    let run = run42();
    let filter = WatchFilter {
        run_id: Some("run-42".into()),
        task_id: Some("ocr".into()),
        ..WatchFilter::default()
    };
    // Flushed first: under `Durability::None` a watch sees only what is
    // synced.
    let from = k.flush().unwrap().next();
    let watch = k.watch(filter, from, 1000).unwrap();
    let ocr = k.context(run.task("ocr").unwrap());
    ocr.set("a", b"1").unwrap();
    k.context(run.task("tables").unwrap())
        .set("a", b"not watched")
        .unwrap();
    ocr.set("b", b"2").unwrap();
    k.flush().unwrap();
    let mut keys = Vec::new();
    while keys.len() < 2 {
        match watch
            .receiver()
            .recv_timeout(Duration::from_secs(5))
            .expect("an event")
        {
            Watched::Event(e) => keys.push(e.event.key().unwrap().to_string()),
            Watched::Lagged { .. } => panic!("no lag with room"),
            Watched::Failed { error } => panic!("the watch failed: {error}"),
        }
    }
    assert_eq!(keys, ["a", "b"]);
    assert!(
        watch
            .receiver()
            .recv_timeout(Duration::from_millis(50))
            .is_err(),
        "nothing else"
    );
    drop(watch);

    // A subscriber that does not read: writers go on, the watch reports lag.
    let slow = k.watch(WatchFilter::default(), Lsn(1), 2).unwrap();
    for i in 0..20 {
        ocr.set("k", i.to_string()).unwrap();
    }
    k.flush().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let mut lagged = false;
    while let Ok(w) = slow.receiver().recv_timeout(Duration::from_millis(200)) {
        lagged |= matches!(w, Watched::Lagged { .. });
    }
    assert!(lagged, "a full channel is reported as lag");
}

/// Upstream reads while upstream tasks write, and a task retried while it
/// writes: readers see only values some writer wrote, and every retry
/// clears all attempts.
pub fn clears_and_reads_during_writes_and_concurrent_fan_in(h: &dyn Harness) {
    let k = h.kernel();
    let run = run42();
    std::thread::scope(|s| {
        // Three upstream tasks written concurrently.
        for t in ["table-a", "table-b", "table-c"] {
            let k = k.clone();
            let run = run.clone();
            s.spawn(move || {
                let ti = run.task(t).unwrap();
                for i in 0..30 {
                    k.context(ti.clone())
                        .set("rows", format!("{t}:{i}"))
                        .unwrap();
                }
            });
        }
        // A task retried every ten writes while it is written.
        let k2 = k.clone();
        let run2 = run.clone();
        s.spawn(move || {
            let mut ti = run2.task("flaky").unwrap();
            k2.start(&ti).unwrap();
            for i in 0..30 {
                k2.context(ti.clone()).set(&format!("k{i}"), b"x").unwrap();
                if i % 10 == 9 {
                    k2.fail(&ti, "flaky", "transient").unwrap();
                    ti = k2.clear_for_retry(&ti).unwrap();
                    k2.start(&ti).unwrap();
                }
            }
        });
        // A reader pulling while they write: only values some writer wrote.
        let k3 = k.clone();
        let run3 = run.clone();
        s.spawn(move || {
            let agg = k3.context(run3.task("aggregate").unwrap());
            for _ in 0..30 {
                for p in agg
                    .pull_all("rows", &["table-a", "table-b", "table-c"])
                    .unwrap()
                {
                    let v = String::from_utf8(p.entry.value).unwrap();
                    assert!(v.starts_with(&p.task_id), "{v} from {}", p.task_id);
                }
            }
        });
    });
    let agg = k.context(run.task("aggregate").unwrap());
    let all = agg
        .pull_all("rows", &["table-a", "table-b", "table-c"])
        .unwrap();
    let values: Vec<String> = all
        .into_iter()
        .map(|p| String::from_utf8(p.entry.value).unwrap())
        .collect();
    assert_eq!(values, ["table-a:29", "table-b:29", "table-c:29"]);
    // The last retry came after k29 was written: no attempt holds anything.
    let flaky = run.task("flaky").unwrap();
    assert_eq!(k.task(&flaky).unwrap().unwrap().latest_try, 4);
    for try_number in 1..=4 {
        assert!(
            k.context(flaky.with_try(try_number).unwrap())
                .is_empty()
                .unwrap(),
            "try {try_number}"
        );
    }
}

/// Unknown runs and tasks are named in their errors.
pub fn unknown_runs_and_tasks_are_named(h: &dyn Harness) {
    let k = h.kernel();
    let ghost = RunRef::new("acme", "documents", "ghost").unwrap();
    let err = k.resume(&ghost).unwrap_err();
    assert!(
        matches!(&err, Error::UnknownRun { run } if run == "acme/documents/ghost"),
        "{err}"
    );
    assert!(matches!(k.children(&ghost), Err(Error::UnknownRun { .. })));
    assert!(matches!(k.purge_run(&ghost), Err(Error::UnknownRun { .. })));
    let never = ghost.task("never").unwrap();
    assert!(matches!(
        k.clear_for_retry(&never),
        Err(Error::UnknownTask { .. })
    ));
    // A task with state but no status can be cleared.
    k.context(never.clone()).set("k", b"v").unwrap();
    assert_eq!(k.clear_for_retry(&never).unwrap().try_number(), 2);
}

/// `flush` makes writes durable and says where; `stats` counts; `close`
/// reports and refuses later writes.
pub fn flush_close_and_stats(h: &dyn Harness) {
    let k = h.kernel();
    let ctx = k.context(ti("ocr", 1));
    let lsn = ctx.set("k", b"v").unwrap();
    assert!(k.flush().unwrap() >= lsn);
    assert!(k.stats().durable_lsn >= lsn);
    assert!(k.succeed(&ti("ocr", 1), b"".to_vec()).is_err());
    let stats = k.stats();
    assert!(stats.batches >= 1, "{stats:?}");
    assert!(stats.conflicts >= 1, "{stats:?}");
    drop((k, ctx));
    h.reopen();
    let k = h.kernel();
    assert_eq!(
        k.context(ti("ocr", 1)).get("k").unwrap(),
        Some(b"v".to_vec())
    );
    // Closed, for every clone: writes are refused, not lost in a drop.
    k.close().unwrap();
    let refused = k.context(ti("ocr", 1)).set("k", b"w");
    assert!(
        matches!(refused, Err(Error::Engine(waymark_engine::Error::Closed))),
        "{refused:?}"
    );
}
