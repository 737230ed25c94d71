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
use waymark_kernel::{EngineBackend, Error, Kernel, TaskRef};

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
