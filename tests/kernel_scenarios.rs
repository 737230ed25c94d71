//! The kernel's scenario suite: what a worker relies on, written once and
//! run against the in-memory kernel (the engine on the simulated disk) and
//! a file-backed kernel, each checked again after close and reopen, so a
//! later backend can run the same suite.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::json;
use waymark_engine::storage::SimDisk;
use waymark_engine::{Engine, Options};
use waymark_kernel::{EngineBackend, Error, Kernel, RunRef, RunStatus, TaskRef, TaskStatus};

/// A kernel that can be closed and reopened on the same state.
struct Harness {
    open: Box<dyn Fn() -> Kernel>,
    kernel: RefCell<Option<Kernel>>,
    _dir: Option<tempfile::TempDir>,
}

impl Harness {
    fn memory() -> Harness {
        let disk = SimDisk::new(11);
        let open = move || {
            let engine = Engine::open_with(Arc::new(disk.clone()), "/state", Options::default())
                .expect("open on the simulated disk");
            Kernel::on(EngineBackend::new(engine), "test-worker")
        };
        Harness {
            kernel: RefCell::new(Some(open())),
            open: Box::new(open),
            _dir: None,
        }
    }

    fn file() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let open = move || {
            Kernel::builder()
                .worker_id("test-worker")
                .open(&path)
                .expect("open the state directory")
        };
        Harness {
            kernel: RefCell::new(Some(open())),
            open: Box::new(open),
            _dir: Some(dir),
        }
    }

    fn kernel(&self) -> Kernel {
        self.kernel.borrow().clone().expect("open")
    }

    /// Closes the kernel (every clone must be dropped) and opens it again.
    fn reopen(&self) {
        self.kernel.borrow_mut().take();
        *self.kernel.borrow_mut() = Some((self.open)());
    }
}

fn ti(task: &str, try_number: u32) -> TaskRef {
    TaskRef::new("acme", "documents", "run-42", task, try_number).unwrap()
}

/// Runs `scenario` on every kind of kernel.
/// Small segments, snapshots only when asked for, and retention that
/// removes every segment a snapshot covers.
fn removing_retention() -> Options {
    Options {
        segment_bytes_max: 4096,
        snapshots: waymark_engine::SnapshotOptions::manual(),
        retention: waymark_engine::Retention::KeepFor {
            age: std::time::Duration::ZERO,
            bytes: 0,
        },
        ..Options::default()
    }
}

fn each(scenario: fn(&Harness)) {
    scenario(&Harness::memory());
    scenario(&Harness::file());
}

#[test]
fn set_get_default_metadata_delete_entries() {
    each(|h| {
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
    });
}

#[test]
fn json_values_round_trip_exactly() {
    each(|h| {
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
    });
}

#[test]
fn task_state_is_its_own_scope() {
    each(|h| {
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
    });
}

#[test]
fn upstream_reads_see_the_latest_attempt_that_has_the_key() {
    each(|h| {
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
    });
}

#[test]
fn a_batch_is_atomic_and_an_invalid_one_writes_nothing() {
    each(|h| {
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
        assert_eq!(ctx.batch().commit().unwrap(), None);
        drop(ctx);
        h.reopen();
        let ctx = h.kernel().context(ti("ocr", 1));
        assert_eq!(ctx.len().unwrap(), 2);
    });
}

#[test]
fn tenants_runs_tasks_and_attempts_are_isolated_even_with_crafted_names() {
    each(|h| {
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
    });
}

#[test]
fn misuse_is_a_typed_error() {
    each(|h| {
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
    });
}

#[test]
fn threads_share_one_kernel() {
    each(|h| {
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
        let hot =
            String::from_utf8(k.context(ti("shared", 1)).get("hot").unwrap().unwrap()).unwrap();
        assert!(hot.ends_with(":49"), "{hot}");
        for t in 0..4 {
            assert_eq!(k.context(ti(&format!("task-{t}"), 1)).len().unwrap(), 50);
        }
        let agg = k.context(ti("aggregate", 1));
        let tasks: Vec<String> = (0..4).map(|t| format!("task-{t}")).collect();
        let names: Vec<&str> = tasks.iter().map(String::as_str).collect();
        assert_eq!(agg.pull_all("k49", &names).unwrap().len(), 4);
    });
}

#[test]
fn lifecycle_transitions_are_validated_and_recorded() {
    each(|h| {
        let k = h.kernel();
        let t1 = ti("ocr", 1);
        k.schedule(&t1).unwrap();
        assert!(matches!(
            k.succeed(&t1, b"early".to_vec()),
            Err(Error::InvalidTransition {
                from: "scheduled",
                to: "succeeded",
                ..
            })
        ));
        k.start(&t1).unwrap();
        k.succeed(&t1, b"ok".to_vec()).unwrap();
        assert!(matches!(k.start(&t1), Err(Error::InvalidTransition { .. })));
        let t2 = ti("tables", 1);
        k.start(&t2).unwrap();
        k.fail(&t2, "timeout", "transient").unwrap();
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
    });
}

#[test]
fn clear_for_retry_clears_every_attempt_and_keeps_task_state() {
    each(|h| {
        let k = h.kernel();
        let t1 = ti("extract", 1);
        let ctx = k.context(t1.clone());
        ctx.set("partial", b"p1").unwrap();
        ctx.set_task_state("cursor", b"page-3").unwrap();
        k.start(&t1).unwrap();
        k.fail(&t1, "boom", "transient").unwrap();
        let t2 = k.clear_for_retry(&t1).unwrap();
        assert_eq!(t2.try_number(), 2);
        let ctx2 = k.context(t2.clone());
        ctx2.set("partial", b"p2").unwrap();
        let t3 = k.clear_for_retry(&t2).unwrap();
        assert_eq!(
            t3.try_number(),
            3,
            "next after the latest try with a status or given"
        );
        drop((k, ctx, ctx2));
        h.reopen();
        let k = h.kernel();
        assert_eq!(k.context(t1.clone()).get("partial").unwrap(), None);
        assert_eq!(k.context(t2.clone()).get("partial").unwrap(), None);
        assert_eq!(
            k.context(t3.clone()).task_state("cursor").unwrap(),
            Some(b"page-3".to_vec())
        );
        // The failure is still in the task's history.
        assert!(matches!(
            k.task(&t1).unwrap().unwrap().attempts[0].status,
            TaskStatus::Failed { .. }
        ));
        // A task with task state only (no status, no attempt state) is
        // known: its retry is the next try.
        let stateful = ti("index", 1);
        k.context(stateful.clone())
            .set_task_state("cursor", b"0")
            .unwrap();
        assert_eq!(k.clear_for_retry(&stateful).unwrap().try_number(), 2);
        // The last try number has no next: a typed error, and nothing
        // written (the attempt state of the last try survives).
        let last = ti("load", u32::MAX);
        k.context(last.clone()).set("partial", b"x").unwrap();
        assert!(matches!(
            k.clear_for_retry(&last),
            Err(Error::InvalidRef(_))
        ));
        assert_eq!(k.context(last).get("partial").unwrap(), Some(b"x".to_vec()));
    });
}

#[test]
fn resume_reports_and_records_interrupted_tasks() {
    each(|h| {
        let k = h.kernel();
        let run = RunRef::new("acme", "documents", "run-42").unwrap();
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
        let by_task: BTreeMap<&str, &waymark_kernel::TaskResume> =
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
        // Recorded: a second resume finds nothing running.
        let again = k.resume(&run).unwrap();
        assert!(again.tasks.iter().all(|t| !t.interrupted));
        assert_eq!(
            k.task(&busy).unwrap().unwrap().status,
            TaskStatus::Interrupted
        );
    });
}

#[test]
fn retry_policy_answers_retry_and_delay() {
    use std::time::Duration;
    use waymark_kernel::{Backoff, RetryPolicy};
    let secs = Duration::from_secs;
    let fixed = RetryPolicy::new(3).backoff(Backoff::Fixed(secs(5)));
    assert_eq!(fixed.delay_without_jitter(1, "any"), Some(secs(5)));
    assert_eq!(fixed.delay_without_jitter(2, "any"), Some(secs(5)));
    assert_eq!(fixed.delay_without_jitter(3, "any"), None);
    let linear = RetryPolicy::new(10).backoff(Backoff::Linear {
        base: secs(1),
        step: secs(2),
    });
    assert_eq!(linear.delay_without_jitter(4, "x"), Some(secs(7)));
    let exp = RetryPolicy::new(50)
        .backoff(Backoff::Exponential {
            base: secs(1),
            factor: 2.0,
        })
        .max_delay(secs(60));
    assert_eq!(exp.delay_without_jitter(3, "x"), Some(secs(4)));
    assert_eq!(exp.delay_without_jitter(40, "x"), Some(secs(60)), "capped");
    let kinds = RetryPolicy::new(5).retry_only(["transient", "timeout"]);
    assert!(kinds.delay_without_jitter(1, "timeout").is_some());
    assert!(kinds.delay_without_jitter(1, "bad-input").is_none());
    let jittered = RetryPolicy::new(5)
        .backoff(Backoff::Fixed(secs(10)))
        .jitter(0.5);
    assert_eq!(jittered.delay(1, "x", 0.0), Some(secs(5)));
    assert_eq!(jittered.delay(1, "x", 0.5), Some(secs(10)));
    assert!(jittered.delay(1, "x", 0.999).unwrap() < secs(15));
    // Jitter over the longest delay saturates; it used to panic in
    // `Duration::mul_f64`.
    let huge = RetryPolicy::new(5)
        .backoff(Backoff::Fixed(Duration::MAX))
        .max_delay(Duration::MAX)
        .jitter(0.5);
    assert_eq!(huge.delay(1, "x", 0.99), Some(Duration::MAX));
    assert!(huge.delay(1, "x", 0.0).unwrap() < Duration::MAX);
    assert_eq!(
        RetryPolicy::new(1).delay_without_jitter(1, "x"),
        None,
        "one attempt: no retry"
    );
}

#[test]
fn checkpoints_capture_restore_list_and_prune() {
    each(|h| {
        let k = h.kernel();
        let run = RunRef::new("acme", "documents", "run-42").unwrap();
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
        k.checkpoint(&run, "third").unwrap();
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
            .prune_checkpoints(&run, None, Some(std::time::Duration::ZERO))
            .unwrap();
        assert_eq!(pruned, ["third"], "older than zero");
    });
}

/// A backend that flips a byte of every checkpoint it returns: what a
/// corrupted checkpoint looks like to the kernel.
#[derive(Debug)]
struct Tampering(EngineBackend);

impl waymark_kernel::Backend for Tampering {
    fn append(
        &self,
        batch: Vec<waymark_engine::Event>,
    ) -> waymark_kernel::Result<waymark_engine::Lsn> {
        self.0.append(batch)
    }
    fn get(
        &self,
        a: &waymark_engine::AttemptScope,
        k: &str,
    ) -> waymark_kernel::Result<Option<waymark_engine::KvValue>> {
        self.0.get(a, k)
    }
    fn attempt_entries(
        &self,
        a: &waymark_engine::AttemptScope,
    ) -> waymark_kernel::Result<Vec<(String, waymark_engine::KvValue)>> {
        self.0.attempt_entries(a)
    }
    fn task_attempt_entries(
        &self,
        t: &waymark_engine::TaskScope,
    ) -> waymark_kernel::Result<Vec<(u32, String, waymark_engine::KvValue)>> {
        self.0.task_attempt_entries(t)
    }
    fn task_state(
        &self,
        t: &waymark_engine::TaskScope,
        k: &str,
    ) -> waymark_kernel::Result<Option<waymark_engine::KvValue>> {
        self.0.task_state(t, k)
    }
    fn task_state_entries(
        &self,
        t: &waymark_engine::TaskScope,
    ) -> waymark_kernel::Result<Vec<(String, waymark_engine::KvValue)>> {
        self.0.task_state_entries(t)
    }
    fn task(
        &self,
        t: &waymark_engine::TaskScope,
    ) -> waymark_kernel::Result<Option<waymark_engine::TaskRecord>> {
        self.0.task(t)
    }
    fn tasks(
        &self,
        r: &waymark_engine::RunScope,
    ) -> waymark_kernel::Result<Vec<(String, waymark_engine::TaskRecord)>> {
        self.0.tasks(r)
    }
    fn run(
        &self,
        r: &waymark_engine::RunScope,
    ) -> waymark_kernel::Result<Option<waymark_engine::RunRecord>> {
        self.0.run(r)
    }
    fn runs(
        &self,
        t: &str,
        d: Option<&str>,
    ) -> waymark_kernel::Result<Vec<(waymark_engine::RunScope, waymark_engine::RunRecord)>> {
        self.0.runs(t, d)
    }
    fn shared(
        &self,
        r: &waymark_engine::RunScope,
        k: &str,
    ) -> waymark_kernel::Result<Option<waymark_engine::SharedValue>> {
        self.0.shared(r, k)
    }
    fn checkpoint(
        &self,
        r: &waymark_engine::RunScope,
        n: &str,
    ) -> waymark_kernel::Result<Option<waymark_engine::CheckpointRecord>> {
        Ok(self.0.checkpoint(r, n)?.map(|mut c| {
            if let Some(b) = c.capture.first_mut() {
                *b ^= 1;
            }
            c
        }))
    }
    fn checkpoints(
        &self,
        r: &waymark_engine::RunScope,
    ) -> waymark_kernel::Result<Vec<(String, waymark_engine::CheckpointRecord)>> {
        self.0.checkpoints(r)
    }
    fn scan_log(
        &self,
        from: waymark_engine::Lsn,
        visit: &mut dyn FnMut(waymark_engine::Lsn, Vec<waymark_engine::Event>) -> bool,
    ) -> waymark_kernel::Result<()> {
        self.0.scan_log(from, visit)
    }
    fn durable_lsn(&self) -> waymark_engine::Lsn {
        self.0.durable_lsn()
    }
}

#[test]
fn a_checkpoint_that_fails_its_checksum_is_not_restored() {
    let engine =
        Engine::open_with(Arc::new(SimDisk::new(5)), "/state", Options::default()).unwrap();
    let k = Kernel::on(Tampering(EngineBackend::new(engine)), "w");
    let run = RunRef::new("acme", "documents", "run-42").unwrap();
    k.context(run.task("ocr").unwrap())
        .set("text", b"v1")
        .unwrap();
    k.checkpoint(&run, "c").unwrap();
    k.context(run.task("ocr").unwrap())
        .set("text", b"v2")
        .unwrap();
    assert!(matches!(
        k.restore(&run, "c"),
        Err(Error::ChecksumMismatch { .. })
    ));
    assert_eq!(
        k.context(run.task("ocr").unwrap()).get("text").unwrap(),
        Some(b"v2".to_vec()),
        "nothing restored"
    );
}

#[test]
fn shared_variables_and_runs() {
    each(|h| {
        let k = h.kernel();
        let parent = RunRef::new("acme", "documents", "run-42").unwrap();
        let child = RunRef::new("acme", "pages", "run-42.p1").unwrap();
        let other = RunRef::new("acme", "documents", "run-43").unwrap();
        let beta = RunRef::new("beta", "documents", "run-42").unwrap();
        k.set_shared(&parent, "threshold", b"0.8", true).unwrap();
        assert!(matches!(
            k.set_shared(&parent, "threshold", b"0.9", true),
            Err(Error::ImmutableShared { .. })
        ));
        k.set_shared(&parent, "mutable", b"1", false).unwrap();
        k.set_shared(&parent, "mutable", b"2", false).unwrap();
        k.set_run_status(&parent, RunStatus::Running, None).unwrap();
        k.set_run_status(&child, RunStatus::Running, Some((&parent, "split")))
            .unwrap();
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
    });
}

#[test]
fn history_of_a_task_a_key_a_run_and_a_time_range() {
    each(|h| {
        let k = h.kernel();
        let t1 = ti("ocr", 1);
        let ctx = k.context(t1.clone());
        k.start(&t1).unwrap();
        ctx.set("text", b"v1").unwrap();
        ctx.set("other", b"o").unwrap();
        let mid = waymark_engine::Event::now(waymark_engine::EventBody::PurgeRun {
            run: waymark_engine::RunScope {
                tenant: "x".into(),
                dag: "x".into(),
                run: "x".into(),
            },
        })
        .ts_micros;
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
                "put"
            ]
        );
        assert!(task.windows(2).all(|w| w[0].lsn < w[1].lsn), "in log order");
        let key = k.history_of_key(&t1, "text").unwrap();
        let kinds: Vec<&str> = key.iter().map(|e| e.event.kind()).collect();
        assert_eq!(kinds, ["put", "put", "clear_task", "put"]);
        assert_eq!(k.history_of_run(t1.run_ref()).unwrap().len(), 8);
        let late = k.events_between(mid, i64::MAX).unwrap();
        assert_eq!(late.len(), 5, "v2, fail, clear, v3, elsewhere");
    });
}

#[test]
fn a_run_as_of_an_lsn_or_a_time() {
    use waymark_kernel::At;
    each(|h| {
        let k = h.kernel();
        let t1 = ti("ocr", 1);
        let ctx = k.context(t1.clone());
        let first = ctx.set("text", b"v1").unwrap();
        k.start(&t1).unwrap();
        let t_mid = waymark_engine::Event::now(waymark_engine::EventBody::PurgeRun {
            run: t1.run_scope(),
        })
        .ts_micros;
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
        let now = k
            .run_as_of(t1.run_ref(), At::Lsn(waymark_engine::Lsn(u64::MAX)))
            .unwrap();
        assert_eq!(
            now.context(t1.clone()).get("text").unwrap(),
            Some(b"v2".to_vec())
        );
        assert!(matches!(
            now.task(&t1).unwrap().unwrap().status,
            TaskStatus::Succeeded { .. }
        ));
    });
}

#[test]
fn watch_delivers_matching_durable_events_and_reports_lag() {
    use std::time::Duration;
    use waymark_kernel::{WatchFilter, Watched};
    let h = Harness::memory();
    let k = h.kernel();
    let run = RunRef::new("acme", "documents", "run-42").unwrap();
    let filter = WatchFilter {
        run_id: Some("run-42".into()),
        task_id: Some("ocr".into()),
        ..WatchFilter::default()
    };
    let watch = k.watch(filter, waymark_engine::Lsn(1), 1000).unwrap();
    let ocr = k.context(run.task("ocr").unwrap());
    ocr.set("a", b"1").unwrap();
    k.context(run.task("tables").unwrap())
        .set("a", b"not watched")
        .unwrap();
    ocr.set("b", b"2").unwrap();
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
    let slow = k
        .watch(WatchFilter::default(), waymark_engine::Lsn(1), 2)
        .unwrap();
    for i in 0..20 {
        ocr.set("k", i.to_string()).unwrap();
    }
    std::thread::sleep(Duration::from_millis(100));
    let mut lagged = false;
    while let Ok(w) = slow.receiver().recv_timeout(Duration::from_millis(200)) {
        lagged |= matches!(w, Watched::Lagged { .. });
    }
    assert!(lagged, "a full channel is reported as lag");
}

#[test]
fn clears_and_reads_during_writes_and_concurrent_fan_in() {
    each(|h| {
        let k = h.kernel();
        let run = RunRef::new("acme", "documents", "run-42").unwrap();
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
            // A task whose attempt state is cleared while it is written.
            let k2 = k.clone();
            let run2 = run.clone();
            s.spawn(move || {
                let ti = run2.task("flaky").unwrap();
                for i in 0..30 {
                    k2.context(ti.clone()).set(&format!("k{i}"), b"x").unwrap();
                    if i % 10 == 9 {
                        k2.clear_for_retry(&ti).unwrap();
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
        // The last clear came after k29 was written: nothing is left.
        assert!(k.context(run.task("flaky").unwrap()).is_empty().unwrap());
    });
}

#[test]
fn unknown_runs_and_tasks_are_named() {
    each(|h| {
        let k = h.kernel();
        let ghost = RunRef::new("acme", "documents", "ghost").unwrap();
        let err = k.resume(&ghost).unwrap_err();
        assert!(
            matches!(&err, Error::UnknownRun { run } if run == "acme/documents/ghost"),
            "{err}"
        );
        assert!(matches!(k.children(&ghost), Err(Error::UnknownRun { .. })));
        let never = ghost.task("never").unwrap();
        assert!(matches!(
            k.clear_for_retry(&never),
            Err(Error::UnknownTask { .. })
        ));
        // A task with state but no status can be cleared.
        k.context(never.clone()).set("k", b"v").unwrap();
        assert_eq!(k.clear_for_retry(&never).unwrap().try_number(), 2);
    });
}

#[test]
fn a_poisoned_or_closed_engine_is_a_typed_error() {
    let disk = SimDisk::new(9);
    let engine = Engine::open_with(Arc::new(disk.clone()), "/state", Options::default()).unwrap();
    let k = Kernel::on(EngineBackend::new(engine.clone()), "w");
    let ctx = k.context(ti("ocr", 1));
    ctx.set("a", b"1").unwrap();
    disk.fail_nth(waymark_engine::storage::OpKind::Sync, 1);
    assert!(matches!(ctx.set("b", b"2"), Err(Error::Engine(_))));
    assert!(matches!(
        ctx.set("c", b"3"),
        Err(Error::Engine(waymark_engine::Error::Poisoned { .. }))
    ));
    assert_eq!(ctx.get("a").unwrap(), Some(b"1".to_vec()), "reads go on");
    let closed = Engine::open_with(Arc::new(SimDisk::new(10)), "/s", Options::default()).unwrap();
    let k = Kernel::on(EngineBackend::new(closed.clone()), "w");
    closed.close().unwrap();
    assert!(matches!(
        k.context(ti("ocr", 1)).set("a", b"1"),
        Err(Error::Engine(waymark_engine::Error::Closed))
    ));
}

/// A batch is atomic in a state as of a time too: with events at 100 and
/// 101 µs, the state at 100 µs has neither, at 101 µs both (it used to
/// show the first alone).
#[test]
fn a_run_as_of_a_time_never_holds_part_of_a_batch() {
    use waymark_engine::{Event, EventBody};
    use waymark_kernel::At;
    let engine =
        Engine::open_with(Arc::new(SimDisk::new(5)), "/state", Options::default()).unwrap();
    let t1 = ti("ocr", 1);
    let put = |key: &str, ts_micros: i64| Event {
        ts_micros,
        body: EventBody::Put {
            attempt: t1.attempt_scope(),
            key: key.into(),
            value: b"v".to_vec(),
            meta: Vec::new(),
        },
    };
    engine.append(vec![put("a", 100), put("b", 101)]).unwrap();
    let k = Kernel::on(EngineBackend::new(engine), "test-worker");
    for (at, expect) in [(99, None), (100, None), (101, Some(b"v".to_vec()))] {
        let then = k.run_as_of(t1.run_ref(), At::TimeMicros(at)).unwrap();
        let ctx = then.context(t1.clone());
        assert_eq!(ctx.get("a").unwrap(), expect, "a at {at}");
        assert_eq!(ctx.get("b").unwrap(), expect, "b at {at}");
    }
}

/// Retention removed the log's first segment: a history read, a state as
/// of an LSN and a watch from LSN 1 say so (`HistoryRemoved`, and a
/// `Failed` message that ends the watch) instead of passing over what is
/// gone; reads from the first kept LSN work.
#[test]
fn reads_from_before_retention_say_the_history_is_gone() {
    use std::time::Duration;
    use waymark_kernel::{At, WatchFilter, Watched};
    let engine =
        Engine::open_with(Arc::new(SimDisk::new(9)), "/state", removing_retention()).unwrap();
    let k = Kernel::on(EngineBackend::new(engine.clone()), "test-worker");
    let t1 = ti("ocr", 1);
    let ctx = k.context(t1.clone());
    ctx.set("first", b"gone from the log").unwrap();
    while engine.stats().segments_created < 2 {
        ctx.set("filler", vec![7u8; 500]).unwrap();
    }
    engine.snapshot().unwrap();
    let first = engine.reader().segments().unwrap()[0].0;
    assert!(
        first > waymark_engine::Lsn(1),
        "retention removed a segment"
    );
    // The views still hold what the removed segment wrote.
    assert_eq!(
        ctx.get("first").unwrap(),
        Some(b"gone from the log".to_vec())
    );
    let removed = |r: Result<(), Error>| {
        assert!(
            matches!(r, Err(Error::HistoryRemoved { from: 1, first: f }) if f == first.0),
            "{r:?}"
        );
    };
    removed(k.events_between(i64::MIN, i64::MAX).map(|_| ()));
    removed(
        k.run_as_of(t1.run_ref(), At::Lsn(waymark_engine::Lsn(u64::MAX)))
            .map(|_| ()),
    );
    let watch = k
        .watch(WatchFilter::default(), waymark_engine::Lsn(1), 8)
        .unwrap();
    match watch.receiver().recv_timeout(Duration::from_secs(5)) {
        Ok(Watched::Failed { error }) => assert!(error.contains("retention"), "{error}"),
        other => panic!("expected the watch to fail, got {other:?}"),
    }
    assert!(
        watch
            .receiver()
            .recv_timeout(Duration::from_secs(1))
            .is_err(),
        "a failed watch stops"
    );
    // From the first kept LSN on, the log is whole.
    let kept = k.watch(WatchFilter::default(), first, 8).unwrap();
    match kept.receiver().recv_timeout(Duration::from_secs(5)) {
        Ok(Watched::Event(e)) => assert_eq!(e.lsn, first),
        other => panic!("expected the first kept event, got {other:?}"),
    }
}

/// The same with no frame left at all: a crash lost the batch that rolled
/// the log into its newest segment, after retention removed the segments
/// before it. The log is one empty segment, and history from LSN 1 is
/// still gone, not empty.
#[test]
fn history_from_a_log_with_no_frame_left_is_removed_not_empty() {
    use waymark_engine::storage::Damage;
    let options = Options {
        durability: waymark_engine::Durability::None,
        ..removing_retention()
    };
    let disk = SimDisk::new(12);
    let engine = Engine::open_with(Arc::new(disk.clone()), "/state", options.clone()).unwrap();
    let ctx = Kernel::on(EngineBackend::new(engine.clone()), "test-worker").context(ti("ocr", 1));
    loop {
        let segments = engine.stats().segments_created;
        engine.snapshot().unwrap();
        ctx.set("page", vec![7u8; 500]).unwrap();
        if engine.stats().segments_created > segments {
            break;
        }
    }
    // The crash loses the unsynced batch in the new segment.
    let disk = disk.reboot(Damage::DropAll);
    drop((ctx, engine));
    let engine = Engine::open_with(Arc::new(disk), "/state", options).unwrap();
    engine.snapshot().unwrap(); // retention removes the first segment
    let k = Kernel::on(EngineBackend::new(engine), "test-worker");
    let r = k.events_between(i64::MIN, i64::MAX);
    assert!(
        matches!(r, Err(Error::HistoryRemoved { from: 1, .. })),
        "{r:?}"
    );
}
