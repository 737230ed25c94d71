//! The `waymark` binary on directories the tests generate with the kernel:
//! output parsed as JSON, filters, and the one-line errors with their exit
//! codes.

use assert_cmd::Command;
use serde_json::Value;
use waymark_engine::Engine;
use waymark_kernel::{Kernel, RunRef};

/// A state directory with a small run: ocr (one try), tables (failed, then
/// retried), and a second tenant.
fn generate() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    let k = Kernel::on_engine(engine.clone(), "cli-test");
    let run = RunRef::new("acme", "documents", "run-42").unwrap();
    let ocr = run.task("ocr").unwrap();
    k.start(&ocr).unwrap();
    k.context(ocr.clone()).set("text", b"Invoice 17").unwrap();
    k.context(ocr.clone())
        .set("blob", [0xff, 0x00, 0xfe])
        .unwrap();
    k.succeed(&ocr, b"ok".to_vec()).unwrap();
    let tables = run.task("tables").unwrap();
    k.start(&tables).unwrap();
    k.context(tables.clone()).set("rows", b"half").unwrap();
    k.fail(&tables, "noise", "transient").unwrap();
    let retry = k.clear_for_retry(&tables).unwrap();
    k.start(&retry).unwrap();
    k.context(retry.clone()).set("rows", b"3").unwrap();
    k.succeed(&retry, b"ok".to_vec()).unwrap();
    // Snapshot the views, then write one more event after the snapshot.
    engine.snapshot().unwrap();
    let beta = RunRef::new("beta", "documents", "run-1").unwrap();
    k.context(beta.task("ocr").unwrap())
        .set("text", b"other")
        .unwrap();
    dir
}

fn segment(dir: &std::path::Path) -> std::path::PathBuf {
    std::fs::read_dir(dir.join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .min()
        .unwrap()
}

#[test]
fn verify_passes_then_names_a_flipped_byte_a_torn_tail_and_foreign_views() {
    let dir = generate();
    let ok = waymark().arg("verify").arg(dir.path()).output().unwrap();
    let text = String::from_utf8(ok.stdout).unwrap();
    assert!(
        ok.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(text.contains("views ok"), "{text}");

    // A torn tail: garbage after the last frame. Repairable: exit 0.
    let seg = segment(dir.path());
    let bytes = std::fs::read(&seg).unwrap();
    let end = (bytes.iter().rposition(|b| *b != 0).unwrap() + 1).next_multiple_of(8);
    let mut torn = bytes.clone();
    torn[end + 4] = 0x55;
    torn[end + 9] = 0x77;
    std::fs::write(&seg, &torn).unwrap();
    let out = waymark().arg("verify").arg(dir.path()).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{text}");
    let name = seg.file_name().unwrap().to_str().unwrap();
    assert!(
        text.contains("torn tail")
            && text.contains(name)
            && text.contains(&format!("offset {end},"))
            && text.contains("where LSN 13 would be"),
        "names the segment, the offset and the LSN: {text}"
    );

    // A flipped byte in the middle of the segment: exit 1, names where.
    let mut flipped = bytes.clone();
    flipped[end / 2] ^= 0x40;
    std::fs::write(&seg, &flipped).unwrap();
    let out = waymark().arg("verify").arg(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    let name = seg.file_name().unwrap().to_str().unwrap();
    assert!(
        text.contains("CORRUPT") && text.contains(name) && text.contains("offset"),
        "{text}"
    );

    // Views of another log: exit 1.
    std::fs::write(&seg, &bytes).unwrap();
    let other = generate();
    std::fs::copy(
        other.path().join("views.redb"),
        dir.path().join("views.redb"),
    )
    .unwrap();
    let out = waymark().arg("verify").arg(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8(out.stdout)
            .unwrap()
            .contains("belongs to log")
    );
}

fn waymark() -> Command {
    Command::cargo_bin("waymark").unwrap()
}

/// Runs `waymark` with `args`, asserts it succeeded (showing its output if
/// not), and returns its standard output.
fn stdout_of(args: &[&str]) -> Vec<u8> {
    let out = waymark().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn json_lines(stdout: &[u8]) -> Vec<Value> {
    String::from_utf8(stdout.to_vec())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("every line is JSON"))
        .collect()
}

#[test]
fn info_json_is_one_object_with_applied_lsn() {
    let dir = generate();
    let out = waymark()
        .args(["info", "--json"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["format_version"], waymark_engine::log::FORMAT_VERSION);
    assert_eq!(v["first_lsn"], 1);
    assert_eq!(v["last_lsn"], 12);
    assert!(v.get("applied_lsn").is_some());
    assert_eq!(v["segments"], 1);
    let text = waymark().arg("info").arg(dir.path()).output().unwrap();
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.contains("LSNs             1 ..= 12"), "{text}");
}

#[test]
fn export_is_every_event_as_json_lines() {
    let dir = generate();
    let out = waymark().arg("export").arg(dir.path()).output().unwrap();
    assert!(out.status.success());
    let events = json_lines(&out.stdout);
    // 12 batches, 13 events: the retry clears and schedules in one batch.
    assert_eq!(events.len(), 13);
    for e in &events {
        for field in ["lsn", "ts", "kind", "tenant", "dag", "run"] {
            assert!(e.get(field).is_some(), "{field} missing in {e}");
        }
        e["ts"]
            .as_str()
            .unwrap()
            .parse::<jiff::Timestamp>()
            .expect("ts is RFC 3339");
    }
    let blob = events.iter().find(|e| e["key"] == "blob").unwrap();
    assert_eq!(blob["value"]["len"], 3);
    assert_eq!(blob["value"]["base64"], "/wD+");
    let text = events.iter().find(|e| e["key"] == "text").unwrap();
    assert_eq!(text["value"]["text"], "Invoice 17");
    assert_eq!(text["try"], 1);
    assert_eq!(text["task"], "ocr");
}

#[test]
fn dump_filters() {
    let dir = generate();
    let run = |args: &[&str]| -> Vec<Value> {
        let out = waymark()
            .arg("dump")
            .arg(dir.path())
            .arg("--json")
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        json_lines(&out.stdout)
    };
    assert_eq!(run(&["--tenant", "beta"]).len(), 1);
    let tables = run(&["--task", "tables"]);
    assert!(tables.iter().all(|e| e["task"] == "tables"));
    assert_eq!(
        tables.len(),
        8,
        "2 starts, 2 puts, a failure, a clear, the retry's schedule, a success"
    );
    let retry = run(&["--task", "tables", "--try", "2"]);
    assert_eq!(retry.len(), 4, "scheduled, started, a put, succeeded");
    let puts = run(&["--kind", "put", "--key", "rows"]);
    let values: Vec<&str> = puts
        .iter()
        .map(|e| e["value"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(values, ["half", "3"]);
    let window = run(&["--from-lsn", "3", "--to-lsn", "5"]);
    assert!(
        window
            .iter()
            .all(|e| (3..=5).contains(&e["lsn"].as_u64().unwrap()))
    );
    let last_two = run(&["--reverse", "--limit", "2"]);
    assert_eq!(last_two.len(), 2);
    assert!(last_two[0]["lsn"].as_u64() > last_two[1]["lsn"].as_u64());
    assert_eq!(run(&["--since", "1 hour ago"]).len(), 13);
    assert_eq!(run(&["--until", "2000-01-01T00:00:00Z"]).len(), 0);
    let human = waymark().arg("dump").arg(dir.path()).output().unwrap();
    let human = String::from_utf8(human.stdout).unwrap();
    assert_eq!(human.lines().count(), 13);
    assert!(human.contains("failed (transient): noise"), "{human}");
}

#[test]
fn errors_are_one_line_with_exit_2() {
    let missing = waymark()
        .args(["info", "/definitely/not/here"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
    let err = String::from_utf8(missing.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("/definitely/not/here"), "{err}");

    let plain = tempfile::tempdir().unwrap();
    let out = waymark().arg("dump").arg(plain.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("not a waymark state directory")
    );

    let dir = generate();
    let out = waymark()
        .arg("dump")
        .arg(dir.path())
        .args(["--kind", "nonsense"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("unknown event kind")
    );
}

#[test]
fn a_live_directory_is_read_without_its_lock() {
    let dir = generate();
    // The worker is still running: the kernel holds the directory's lock.
    let k = Kernel::open(dir.path()).unwrap();
    k.context(
        RunRef::new("acme", "documents", "run-42")
            .unwrap()
            .task("late")
            .unwrap(),
    )
    .set("x", b"1")
    .unwrap();
    let out = waymark().arg("export").arg(dir.path()).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(json_lines(&out.stdout).len(), 14);
}

#[test]
fn runs_history_and_replay() {
    let dir = generate();
    let out = waymark()
        .arg("runs")
        .arg(dir.path())
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let runs = json_lines(&out.stdout);
    assert_eq!(
        runs.len(),
        1,
        "beta's run has no status, so no run record: {runs:?}"
    );
    assert_eq!(runs[0]["run"], "run-42");
    assert_eq!(runs[0]["succeeded"], 2);
    let table = waymark().arg("runs").arg(dir.path()).output().unwrap();
    assert!(String::from_utf8(table.stdout).unwrap().contains("run-42"));

    let h = waymark()
        .arg("history")
        .arg(dir.path())
        .args(["--run", "run-42", "--task", "tables"])
        .output()
        .unwrap();
    let text = String::from_utf8(h.stdout).unwrap();
    assert!(
        text.contains("attempt 1") && text.contains("attempt 2"),
        "{text}"
    );
    assert!(text.contains("cleared"), "{text}");
    let h = waymark()
        .arg("history")
        .arg(dir.path())
        .args([
            "--run", "run-42", "--task", "tables", "--key", "rows", "--json",
        ])
        .output()
        .unwrap();
    let events = json_lines(&h.stdout);
    let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["put", "clear_task", "put"]);

    // Replay to LSN 6 (tables' first try wrote "half") and check it against
    // the kernel's own view of the run at that LSN.
    let k = Kernel::open(dir.path()).unwrap();
    let run = RunRef::new("acme", "documents", "run-42").unwrap();
    for lsn in [2u64, 6, 10] {
        let at = k
            .run_as_of(&run, waymark_kernel::At::Lsn(waymark_engine::Lsn(lsn)))
            .unwrap();
        let out = waymark()
            .arg("replay")
            .arg(dir.path())
            .args(["--to-lsn", &lsn.to_string(), "--run", "run-42", "--json"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let tasks = json_lines(&out.stdout);
        assert!(!tasks.is_empty(), "LSN {lsn}: replay printed no task");
        for task in tasks {
            let name = task["task"].as_str().unwrap();
            let try_number = task["try"].as_u64().unwrap() as u32;
            let ctx = at.context(run.task(name).unwrap().with_try(try_number).unwrap());
            let entries = ctx.entries().unwrap();
            let state = task["state"].as_object().unwrap();
            assert_eq!(state.len(), entries.len(), "LSN {lsn} task {name}");
            for (key, value) in entries {
                assert_eq!(state[&key]["len"], value.len(), "LSN {lsn} {name}/{key}");
            }
        }
    }
    drop(k);

    // A fork at LSN 6 is a state directory that verify accepts.
    let fork = tempfile::tempdir().unwrap();
    let target = fork.path().join("fork");
    let out = waymark()
        .arg("replay")
        .arg(dir.path())
        .args(["--to-lsn", "6", "--out"])
        .arg(&target)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = waymark().arg("verify").arg(&target).output().unwrap();
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stdout));
    let info = waymark()
        .args(["info", "--json"])
        .arg(&target)
        .output()
        .unwrap();
    let info: Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(info["last_lsn"], 6);
}

#[test]
fn diff_du_tail_and_salvage() {
    let dir = generate();
    let d = dir.path().to_str().unwrap();
    // LSN 6: tables' first try wrote rows=half. LSN 10: try 2 wrote rows=3.
    let changes = json_lines(&stdout_of(&[
        "diff", d, "--from", "6", "--to", "10", "--json",
    ]));
    let find = |what: &str| {
        changes
            .iter()
            .find(|c| c["what"].as_str().unwrap().contains(what))
            .cloned()
    };
    let removed = find("tables#1 rows").expect("try 1's rows cleared");
    assert_eq!(removed["change"], "removed");
    let added = find("tables#2 rows").expect("try 2's rows written");
    assert_eq!(added["change"], "added");
    let status = changes
        .iter()
        .find(|c| c["view"] == "status" && c["what"].as_str().unwrap().ends_with("/tables"))
        .expect("tables' status changed");
    assert_eq!(status["change"], "changed");
    // Cross-check with the kernel's own view at both points: every key of
    // tables' attempt state that differs shows up in the diff.
    {
        let k = Kernel::open(dir.path()).unwrap();
        let run = RunRef::new("acme", "documents", "run-42").unwrap();
        let at = |n: u64| {
            k.run_as_of(&run, waymark_kernel::At::Lsn(waymark_engine::Lsn(n)))
                .unwrap()
        };
        let (a, b) = (at(6), at(10));
        for try_number in 1..=2 {
            let ti = run.task("tables").unwrap().with_try(try_number).unwrap();
            let before = a.context(ti.clone()).entries().unwrap();
            let after = b.context(ti.clone()).entries().unwrap();
            if before != after {
                assert!(
                    changes.iter().any(|c| c["what"]
                        .as_str()
                        .unwrap()
                        .contains(&format!("tables#{try_number}"))),
                    "the kernel sees try {try_number} change; the diff must too: {changes:?}"
                );
            }
        }
    }
    let none = String::from_utf8(stdout_of(&["diff", d, "--from", "6", "--to", "6"])).unwrap();
    assert_eq!(none.trim(), "no changes");

    let du = json_lines(&stdout_of(&["du", d, "--json"]));
    let acme = du
        .iter()
        .find(|r| r["tenant"] == "acme" && r.get("run").is_none())
        .unwrap();
    assert!(acme["log_bytes"].as_u64().unwrap() > 0 && acme["live_bytes"].as_u64().unwrap() > 0);
    assert!(du.iter().any(|r| r["run"] == "run-42"));
    let tables = du
        .iter()
        .find(|r| r["task"] == "tables")
        .expect("a row per task");
    assert!(tables["live_bytes"].as_u64().unwrap() > 0);

    let tail = json_lines(&stdout_of(&["tail", d, "-n", "3", "--json"]));
    let lsns: Vec<u64> = tail.iter().map(|e| e["lsn"].as_u64().unwrap()).collect();
    assert_eq!(lsns, [10, 11, 12]);

    // Salvage a log with a flipped byte in the middle: the prefix is copied
    // into a directory the engine opens, and the drop is reported.
    let seg = segment(dir.path());
    let mut bytes = std::fs::read(&seg).unwrap();
    let end = (bytes.iter().rposition(|b| *b != 0).unwrap() + 1).next_multiple_of(8);
    bytes[end / 2] ^= 0x40;
    std::fs::write(&seg, &bytes).unwrap();
    let target = tempfile::tempdir().unwrap().path().join("salvaged");
    let out = waymark()
        .args(["salvage", d, "--out"])
        .arg(&target)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("dropped everything from"), "{text}");
    let v = waymark().arg("verify").arg(&target).output().unwrap();
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stdout));
    assert!(waymark_engine::Engine::open(&target).is_ok());
}

#[test]
fn tail_follow_sees_a_live_writer() {
    use std::io::{BufRead, BufReader};
    let dir = generate();
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("waymark"))
        .arg("tail")
        .arg(dir.path())
        // Whether the child starts before or after the write below, the
        // event is printed once: in the last 1000, or when followed.
        .args(["-n", "1000", "-f", "--json"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let k = Kernel::open(dir.path()).unwrap();
    let run = RunRef::new("acme", "documents", "run-42").unwrap();
    k.context(run.task("late").unwrap())
        .set("fresh", b"1")
        .unwrap();
    // Lines come through a channel, so a `tail -f` that never prints the
    // live event fails after a bound instead of hanging the suite.
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = 0;
    let outcome = loop {
        match rx.recv_timeout(std::time::Duration::from_secs(60)) {
            Ok(line) => {
                let e: Value = serde_json::from_str(&line.unwrap()).unwrap();
                seen += 1;
                if e["key"] == "fresh" {
                    break Ok(());
                }
            }
            Err(e) => break Err(e),
        }
    };
    child.kill().unwrap();
    child.wait().unwrap();
    outcome.unwrap_or_else(|e| panic!("after {seen} lines, no live event: {e:?}"));
    assert_eq!(seen, 14, "the 13 events before, then the live one");
}

#[test]
fn timeline_in_the_terminal_and_as_one_self_contained_html_file() {
    let dir = generate();
    let d = dir.path().to_str().unwrap();
    let out = waymark()
        .args(["timeline", d, "--run", "run-42"])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("tables") && text.contains("#2") && text.contains("failed"),
        "{text}"
    );
    assert!(text.contains("retry of tables"), "{text}");
    let attempts = json_lines(
        &waymark()
            .args(["timeline", d, "--run", "run-42", "--json"])
            .output()
            .unwrap()
            .stdout,
    );
    let outcomes: Vec<(String, u64, String)> = attempts
        .iter()
        .map(|a| {
            (
                a["task"].as_str().unwrap().to_string(),
                a["try"].as_u64().unwrap(),
                a["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(outcomes.contains(&("tables".into(), 1, "failed".into())));
    assert!(outcomes.contains(&("tables".into(), 2, "succeeded".into())));

    let html_dir = tempfile::tempdir().unwrap();
    let html = html_dir.path().join("t.html");
    let out = waymark()
        .args(["timeline", d, "--run", "run-42", "--html"])
        .arg(&html)
        .output()
        .unwrap();
    assert!(out.status.success());
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.starts_with("<!doctype html>") && page.contains("</html>"));
    assert!(page.contains("class=\"span failed\"") && page.contains("class=\"span succeeded\""));
    for external in ["http://", "https://", "src=", "<link", "url(", "@import"] {
        assert!(!page.contains(external), "the page references {external}");
    }
    let missing = waymark()
        .args(["timeline", d, "--run", "nope"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
}

#[test]
fn the_demo_runs_kills_resumes_retries_and_explains() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("demo-state");
    let out = waymark().arg("demo").arg(&dir).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("killed (SIGKILL)"), "{text}");
    assert!(text.contains("interrupted"), "{text}");
    assert!(text.contains("table_items#2 failed"), "{text}");
    assert!(text.contains("6 of 6 tasks succeeded"), "{text}");
    assert!(
        text.contains("attempt 3"),
        "history shows the retries: {text}"
    );
    assert!(text.contains("Explore further"), "{text}");
    // The directory is left in place, consistent.
    let v = waymark().arg("verify").arg(&dir).output().unwrap();
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stdout));
    // A second demo into the same directory is refused.
    let again = waymark().arg("demo").arg(&dir).output().unwrap();
    assert_eq!(again.status.code(), Some(2));
}

/// Timestamps come from the log and may be any `i64`: a run spanning the
/// whole range, and one whose events all sit at the very end of it, draw
/// a timeline in the terminal and in HTML (the arithmetic overflowed).
#[test]
fn timeline_of_timestamps_at_the_ends_of_the_range() {
    use waymark_engine::{AttemptScope, Event, EventBody, RunScope, TaskScope, TaskStatus};
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    let status = |run: &str, ts_micros: i64, status: TaskStatus| Event {
        ts_micros,
        body: EventBody::TaskStatus {
            attempt: AttemptScope {
                task: TaskScope {
                    run: RunScope {
                        tenant: "t".into(),
                        dag: "d".into(),
                        run: run.into(),
                    },
                    task: "a".into(),
                },
                try_number: 1,
            },
            status,
            worker: "w".into(),
        },
    };
    engine
        .append(vec![
            status("wide", i64::MIN, TaskStatus::Running),
            status(
                "wide",
                i64::MAX,
                TaskStatus::Succeeded { result: Vec::new() },
            ),
            status("late", i64::MAX, TaskStatus::Running),
        ])
        .unwrap();
    drop(engine);
    let d = dir.path().to_str().unwrap();
    let html_dir = tempfile::tempdir().unwrap();
    for run in ["wide", "late"] {
        let text = String::from_utf8(stdout_of(&["timeline", d, "--run", run])).unwrap();
        assert!(text.contains('a'), "{run}: {text}");
        let html = html_dir.path().join(format!("{run}.html"));
        stdout_of(&[
            "timeline",
            d,
            "--run",
            run,
            "--html",
            html.to_str().unwrap(),
        ]);
    }
}

/// Corruption in the middle of the last segment (a later frame proves the
/// bad one had been synced): every command that reads the log says so and
/// exits 1, rather than printing the frames before it as if they were the
/// whole log. A torn tail is only a note on stderr, exit 0.
#[test]
fn every_scanning_command_refuses_corruption_and_notes_a_torn_tail() {
    let dir = generate();
    let d = dir.path().to_str().unwrap().to_string();
    let html_dir = tempfile::tempdir().unwrap();
    let html = html_dir.path().join("t.html");
    let commands: Vec<Vec<&str>> = vec![
        vec!["info", &d],
        vec!["dump", &d],
        vec!["export", &d],
        vec!["runs", &d],
        vec!["du", &d],
        vec!["replay", &d, "--to-lsn", "100", "--run", "run-42"],
        vec!["history", &d, "--run", "run-42", "--task", "tables"],
        vec!["timeline", &d, "--run", "run-42"],
        vec![
            "timeline",
            &d,
            "--run",
            "run-42",
            "--html",
            html.to_str().unwrap(),
        ],
        vec!["tail", &d, "-n", "3"],
        vec!["diff", &d, "--from", "1", "--to", "100"],
    ];
    let seg = segment(dir.path());
    let bytes = std::fs::read(&seg).unwrap();
    let end = (bytes.iter().rposition(|b| *b != 0).unwrap() + 1).next_multiple_of(8);

    let mut torn = bytes.clone();
    torn[end + 4] = 0x55;
    torn[end + 9] = 0x77;
    std::fs::write(&seg, &torn).unwrap();
    // The 12 batches of `generate` end at LSN 12: the torn frame is 13.
    let name = seg.file_name().unwrap().to_str().unwrap();
    for args in &commands {
        let out = waymark().args(args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {err}");
        assert!(
            err.contains("incomplete frame")
                && err.contains(name)
                && err.contains(&format!("offset {end},"))
                && err.contains("where LSN 13 would be"),
            "{args:?}: stderr names the segment, the offset and the LSN: {err}"
        );
    }

    let mut flipped = bytes.clone();
    flipped[end / 2] ^= 0x40;
    std::fs::write(&seg, &flipped).unwrap();
    for args in &commands {
        let out = waymark().args(args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains("corrupt log"), "{args:?}: {err}");
    }
}

/// A directory whose worker still runs, and a copy taken meanwhile (as
/// after a crash): redb finds `views.redb` not closed cleanly. `verify`
/// and `info` read the views anyway (redb repairs them in memory; the file
/// is never written) instead of calling them unreadable (exit 1).
#[test]
fn verify_and_info_read_the_views_of_a_live_directory_and_of_a_crashed_copy() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    let k = Kernel::on_engine(engine.clone(), "cli-test");
    let ocr = RunRef::new("acme", "documents", "run-42")
        .unwrap()
        .task("ocr")
        .unwrap();
    k.start(&ocr).unwrap();
    engine.snapshot().unwrap();
    k.context(ocr.clone()).set("text", b"Invoice 17").unwrap();
    let copy = tempfile::tempdir().unwrap();
    for sub in ["", "log"] {
        std::fs::create_dir_all(copy.path().join(sub)).unwrap();
        for e in std::fs::read_dir(dir.path().join(sub)).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_file() {
                std::fs::copy(e.path(), copy.path().join(sub).join(e.file_name())).unwrap();
            }
        }
    }
    let views = dir.path().join("views.redb");
    let before = std::fs::read(&views).unwrap();
    for d in [dir.path(), copy.path()] {
        let d = d.to_str().unwrap();
        let text = String::from_utf8(stdout_of(&["verify", d])).unwrap();
        assert!(text.contains("views ok"), "{text}");
        let text = String::from_utf8(stdout_of(&["info", d])).unwrap();
        assert!(text.contains("applied_lsn 1"), "{text}");
    }
    assert_eq!(std::fs::read(&views).unwrap(), before, "never written");
    drop(k);
    drop(engine);
}

/// A task that wrote state without ever having a status, and a run's
/// shared variables: `replay` prints them and `diff` lists them (both
/// walked only the tasks with a status).
#[test]
fn replay_and_diff_show_state_of_tasks_without_a_status_and_shared_variables() {
    let dir = generate();
    let k = Kernel::open(dir.path()).unwrap();
    let beta = RunRef::new("beta", "documents", "run-1").unwrap();
    k.set_shared(&beta, "model", b"v2", false).unwrap();
    drop(k);
    let d = dir.path().to_str().unwrap();
    let lines = json_lines(&stdout_of(&[
        "replay", d, "--to-lsn", "1000", "--run", "run-1", "--json",
    ]));
    let task = lines
        .iter()
        .find(|l| l["kind"] == "task" && l["task"] == "ocr")
        .unwrap_or_else(|| panic!("ocr of run-1 in {lines:?}"));
    assert!(task["status"].is_null(), "{task}");
    assert_eq!(task["state"]["text"]["text"], "other", "{task}");
    let shared = lines
        .iter()
        .find(|l| l["kind"] == "shared")
        .unwrap_or_else(|| panic!("shared variables in {lines:?}"));
    assert_eq!(shared["shared"]["model"]["text"], "v2", "{shared}");
    let out = stdout_of(&["diff", d, "--from", "0", "--to", "now", "--run", "run-1"]);
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains("run-1/ocr#1 text"), "{text}");
    assert!(text.contains("shared") && text.contains("model"), "{text}");
}

/// A log written with raised limits (an 8 KiB key, over the default
/// 4 KiB) replays: the scratch engines take the format's largest limits
/// (they used to refuse the batch with `LimitExceeded`).
#[test]
fn a_log_written_with_raised_limits_replays() {
    use waymark_engine::{AttemptScope, Event, EventBody, Limits, Options, RunScope, TaskScope};
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        limits: Limits {
            key_bytes_max: 16 << 10,
            ..Limits::default()
        },
        ..Options::default()
    };
    let engine = Engine::open_with(
        std::sync::Arc::new(waymark_engine::storage::FsStorage),
        dir.path(),
        options,
    )
    .unwrap();
    let attempt = AttemptScope {
        task: TaskScope {
            run: RunScope {
                tenant: "acme".into(),
                dag: "documents".into(),
                run: "run-42".into(),
            },
            task: "ocr".into(),
        },
        try_number: 1,
    };
    let key = "k".repeat(8 << 10);
    engine
        .append(vec![Event::now(EventBody::Put {
            codec: waymark_engine::Codec::Raw,
            attempt: attempt.into(),
            key: key.clone(),
            value: b"v".to_vec(),
            meta: Vec::new(),
        })])
        .unwrap();
    drop(engine);
    let d = dir.path().to_str().unwrap();
    let lines = json_lines(&stdout_of(&["replay", d, "--to-lsn", "10", "--json"]));
    assert!(
        lines.iter().any(|l| l["state"][&key].is_object()),
        "{lines:?}"
    );
    let k = Kernel::open(dir.path()).unwrap();
    let run = RunRef::new("acme", "documents", "run-42").unwrap();
    let then = k
        .run_as_of(&run, waymark_kernel::At::Lsn(waymark_engine::Lsn(10)))
        .unwrap();
    let value = then.context(run.task("ocr").unwrap()).get(&key).unwrap();
    assert_eq!(value, Some(b"v".to_vec()));
}

/// A crashed worker's newest segment whose creation was torn (a header
/// that does not check, zeros after it) holds nothing acknowledged, and
/// the next open removes it: the tools read the log up to it, as the
/// engine would, instead of calling it corruption.
#[test]
fn a_torn_newest_segment_is_not_corruption_to_the_tools() {
    let dir = generate();
    let reader = waymark_engine::LogReader::open(dir.path()).unwrap();
    let mut cursor = reader.cursor(waymark_engine::Lsn(1));
    while cursor.next_frame().unwrap().is_some() {}
    let next = cursor.next_lsn().0;
    let mut torn = vec![0u8; 64 << 10];
    torn[..12].copy_from_slice(b"garbled head");
    let path = dir.path().join("log").join(format!("{next:020}.seg"));
    std::fs::write(&path, &torn).unwrap();
    let d = dir.path().to_str().unwrap();
    let text = String::from_utf8(stdout_of(&["verify", d])).unwrap();
    assert!(text.contains("views ok"), "{text}");
    let events = json_lines(&stdout_of(&["dump", d, "--json"]));
    assert_eq!(events.last().unwrap()["lsn"], next - 1);
    stdout_of(&["info", d]);
    // The engine's open removes it.
    let engine = Engine::open(dir.path()).unwrap();
    assert_eq!(
        engine.recovery_report().removed_torn_segment.as_deref(),
        Some(path.as_path())
    );
}

/// A paused run: `runs` says so, and the timeline shows the paused time
/// (a row in the terminal, a `paused` object in JSON, a lane in HTML) and
/// marks the pause and the resume.
#[test]
fn runs_and_the_timeline_show_a_paused_run() {
    let dir = tempfile::tempdir().unwrap();
    {
        let k = Kernel::open(dir.path()).unwrap();
        let run = RunRef::new("acme", "documents", "run-7").unwrap();
        k.set_run_status(&run, waymark_kernel::RunStatus::Running, None)
            .unwrap();
        let ocr = run.task("ocr").unwrap();
        k.start(&ocr).unwrap();
        k.succeed(&ocr, b"ok".to_vec()).unwrap();
        k.pause_run(&run).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        k.resume_run(&run).unwrap();
        k.pause_run(&run).unwrap();
    }
    let d = dir.path().to_str().unwrap();
    let runs = json_lines(
        &waymark()
            .args(["runs", d, "--json"])
            .output()
            .unwrap()
            .stdout,
    );
    assert_eq!(runs[0]["status"], "paused", "{runs:?}");
    let out = waymark()
        .args(["timeline", d, "--run", "run-7"])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{text}");
    assert!(text.contains("(run)") && text.contains("paused"), "{text}");
    assert!(
        text.contains("run paused") && text.contains("run resumed"),
        "{text}"
    );
    let objects = json_lines(
        &waymark()
            .args(["timeline", d, "--run", "run-7", "--json"])
            .output()
            .unwrap()
            .stdout,
    );
    let paused: Vec<&Value> = objects.iter().filter(|o| o["kind"] == "paused").collect();
    assert_eq!(paused.len(), 2, "{objects:?}");
    assert!(paused[0]["end"].is_string(), "the first pause ended");
    assert!(paused[1]["end"].is_null(), "the second goes on");
    let html = dir.path().join("t.html");
    waymark()
        .args(["timeline", d, "--run", "run-7", "--html"])
        .arg(&html)
        .assert()
        .success();
    assert!(
        std::fs::read_to_string(&html)
            .unwrap()
            .contains("span paused")
    );
}

/// `replay --out`, `salvage --out` and `timeline --html` never write
/// through a symlink (dangling, or to a directory elsewhere): they refuse
/// with exit 2 and leave the symlink's target untouched. What they create
/// is private: directories 0700, files 0600.
#[test]
fn outputs_are_private_and_never_written_through_a_symlink() {
    use std::os::unix::fs::{PermissionsExt, symlink};
    let dir = generate();
    let d = dir.path().to_str().unwrap();
    let place = tempfile::tempdir().unwrap();
    let elsewhere = place.path().join("elsewhere");
    let dangling = place.path().join("dangling");
    symlink(&elsewhere, &dangling).unwrap();
    let existing = place.path().join("elsewhere-dir");
    std::fs::create_dir(&existing).unwrap();
    let to_dir = place.path().join("to-dir");
    symlink(&existing, &to_dir).unwrap();
    for link in [&dangling, &to_dir] {
        let l = link.to_str().unwrap();
        for args in [
            vec!["replay", d, "--to-lsn", "6", "--out", l],
            vec!["salvage", d, "--out", l],
            vec!["timeline", d, "--run", "run-42", "--html", l],
        ] {
            let out = waymark().args(&args).output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            // Not corruption: exit 2, as for any path the command cannot use.
            assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
            assert!(err.contains(l), "{args:?} names the path: {err}");
        }
    }
    assert!(
        !elsewhere.exists(),
        "nothing created through the dangling symlink"
    );
    assert_eq!(std::fs::read_dir(&existing).unwrap().count(), 0);

    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let fork = place.path().join("new").join("fork");
    stdout_of(&[
        "replay",
        d,
        "--to-lsn",
        "6",
        "--out",
        fork.to_str().unwrap(),
    ]);
    let salvaged = place.path().join("salvaged");
    stdout_of(&["salvage", d, "--out", salvaged.to_str().unwrap()]);
    let page = place.path().join("t.html");
    stdout_of(&[
        "timeline",
        d,
        "--run",
        "run-42",
        "--html",
        page.to_str().unwrap(),
    ]);
    assert_eq!(mode(&page) & !0o600, 0, "{:o}", mode(&page));
    for state in [&fork, &salvaged] {
        for sub in [state.clone(), state.join("log")] {
            assert_eq!(mode(&sub), 0o700, "{}", sub.display());
            for e in std::fs::read_dir(&sub).unwrap() {
                let path = e.unwrap().path();
                if path.is_file() {
                    assert_eq!(
                        mode(&path) & !0o600,
                        0,
                        "{} is {:o}",
                        path.display(),
                        mode(&path)
                    );
                }
            }
        }
    }
    assert_eq!(
        mode(&place.path().join("new")),
        0o700,
        "a parent it creates too"
    );
}

/// `-v` shows the engine's operator events on stderr (here the open of
/// the salvaged copy and its snapshot-free replay); without it, stderr
/// holds none, and stdout is the command's output either way.
#[test]
fn verbose_shows_the_engine_events_on_stderr() {
    let dir = generate();
    let d = dir.path().to_str().unwrap();
    let place = tempfile::tempdir().unwrap();
    let quiet = place.path().join("quiet");
    let out = waymark()
        .args(["salvage", d, "--out", quiet.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("INFO") && !err.contains("opened"), "{err}");

    let loud = place.path().join("loud");
    let out = waymark()
        .args(["salvage", d, "--out", loud.to_str().unwrap(), "-v"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("INFO") && err.contains("opened") && err.contains(loud.to_str().unwrap()),
        "{err}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("INFO"));
}
