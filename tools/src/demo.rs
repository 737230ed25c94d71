//! `waymark demo`: a worker runs a small document-processing DAG
//! (ingest → ocr → three table extractors in parallel → aggregate); it is
//! SIGKILLed mid-run; the demo reopens the directory, resumes, retries the
//! interrupted tasks (attempt state cleared, task state kept), lets one
//! extractor fail once and retries it under a `RetryPolicy`, pauses and
//! resumes the run, finishes it, and shows what `history`, `replay` and
//! `timeline` say about it. Each task writes its last output and its
//! status in one atomic batch.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use waymark_kernel::{Backoff, Kernel, RetryPolicy, RunRef, RunStatus, TaskRef, TaskStatus};

use crate::out;

const EXTRACTORS: [&str; 3] = ["table_invoice", "table_items", "table_totals"];

fn run_ref() -> Result<RunRef> {
    Ok(RunRef::new("acme", "documents", "run-42")?)
}

/// One page of work: slow enough that the parent can kill the worker in
/// the middle of the extractors.
const PAGE: Duration = Duration::from_millis(120);

/// Runs `task` (already started): processes 4 pages, recording each in its
/// attempt state and its progress cursor in task state, then writes its
/// summary and its success in one atomic batch (a crash leaves both or
/// neither).
fn work(k: &Kernel, ti: &TaskRef, fail_at_page: Option<u32>) -> Result<()> {
    let ctx = k.context(ti.clone());
    let done: u32 = ctx
        .task_state("pages_done")?
        .and_then(|v| String::from_utf8(v).ok()?.parse().ok())
        .unwrap_or(0);
    for page in 1..=4u32 {
        std::thread::sleep(PAGE);
        if fail_at_page == Some(page) {
            // The failure and what it leaves for the next attempt, together.
            k.fail_with(
                ti,
                format!("OCR noise on page {page}"),
                "transient",
                [("failed_page", page.to_string())],
            )?;
            bail!("{} failed on page {page}", ti);
        }
        ctx.set(&format!("page-{page}"), format!("{} rows", page * 3))?;
        if page > done {
            ctx.set_task_state("pages_done", page.to_string())?;
        }
    }
    let upstream = ctx.get_from("ocr", "text")?.unwrap_or_default();
    ctx.batch()
        .set(
            "summary",
            format!("{} bytes of text, 4 pages", upstream.len()),
        )
        .succeed(b"ok".to_vec())
        .commit()?;
    Ok(())
}

/// The worker process: runs the DAG from the start, printing progress.
pub fn worker(dir: &Path) -> Result<()> {
    let k = Kernel::builder().worker_id("worker-1").open(dir)?;
    let run = run_ref()?;
    k.set_run_status(&run, RunStatus::Running, None)?;
    let ingest = run.task("ingest")?;
    k.start(&ingest)?;
    k.context(ingest.clone())
        .set_json("source", &"s3://inbox/invoice-17.pdf")?;
    k.succeed(&ingest, b"ok".to_vec())?;
    println!("ingest done");
    let ocr = run.task("ocr")?;
    k.start(&ocr)?;
    k.context(ocr.clone())
        .set("text", "INVOICE 17\nWidget x3 14.00\nTOTAL 42.00")?;
    k.succeed(&ocr, b"ok".to_vec())?;
    println!("ocr done");
    k.checkpoint(&run, "after-ocr")?;
    std::thread::scope(|s| {
        for name in EXTRACTORS {
            let k = k.clone();
            let run = run.clone();
            s.spawn(move || -> Result<()> {
                let ti = run.task(name)?;
                k.start(&ti)?;
                println!("{name} started");
                work(&k, &ti, None)
            });
        }
    });
    Ok(())
}

pub fn demo(dir: &Path) -> Result<()> {
    if dir.exists() {
        bail!(
            "{}: already exists; the demo creates a new state directory",
            dir.display()
        );
    }
    let started = std::time::Instant::now();
    out(&format!("== 1. a worker runs the DAG in {}", dir.display()))?;
    let exe = std::env::current_exe().context("finding the waymark binary")?;
    let mut child = Command::new(exe)
        .arg("demo-worker")
        .arg(dir)
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the worker process")?;
    let stdout = child.stdout.take().context("the worker's stdout")?;
    let mut started_extractors = 0;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        out(&format!("   worker: {line}"))?;
        if line.ends_with("started") {
            started_extractors += 1;
            if started_extractors == EXTRACTORS.len() {
                break;
            }
        }
    }
    // Let the extractors get part-way, then pull the plug.
    std::thread::sleep(PAGE * 2 + PAGE / 2);
    child.kill().context("killing the worker")?; // SIGKILL
    child.wait()?;
    out("== 2. the worker is killed (SIGKILL) in the middle of the extractors")?;

    let k = Kernel::builder().worker_id("worker-2").open(dir)?;
    let run = run_ref()?;
    let crash_lsn = k.history_of_run(&run)?.last().map_or(0, |e| e.lsn.0);
    let state = k.resume(&run)?;
    out("== 3. reopen and resume")?;
    for t in &state.tasks {
        let ctx = k.context(t.ti.clone());
        out(&format!(
            "   {:<14} try {}  {:<12} attempt state: {} keys, task state pages_done = {}",
            t.ti.task_id(),
            t.ti.try_number(),
            if t.interrupted {
                "interrupted"
            } else {
                t.status.name()
            },
            ctx.len()?,
            ctx.task_state("pages_done")?
                .map_or("-".into(), |v| String::from_utf8_lossy(&v).into_owned()),
        ))?;
    }
    out("== 4. the operator pauses the run: no task of it starts until it is resumed")?;
    k.pause_run(&run)?;
    let refused = k
        .start(&run.task("aggregate")?)
        .err()
        .context("a start in a paused run is refused")?;
    out(&format!("   start of aggregate: {refused}"))?;
    k.resume_run(&run)?;
    out("   resumed")?;
    out(
        "== 5. retry what was interrupted (attempt state cleared, task state kept); table_items fails once",
    )?;
    let policy = RetryPolicy::new(3)
        .backoff(Backoff::Exponential {
            base: Duration::from_millis(50),
            factor: 2.0,
        })
        .retry_only(["transient"]);
    let mut fail_once = true;
    for name in EXTRACTORS {
        let ti = run.task(name)?;
        let mut current = match k.task(&ti)? {
            Some(r) if matches!(r.status, TaskStatus::Succeeded { .. }) => continue,
            Some(_) => k.clear_for_retry(&ti)?,
            None => ti,
        };
        loop {
            k.start(&current)?;
            let kept = k
                .context(current.clone())
                .task_state("pages_done")?
                .map_or("-".into(), |v| String::from_utf8_lossy(&v).into_owned());
            let inject = (name == "table_items" && fail_once).then_some(2);
            fail_once &= inject.is_none();
            match work(&k, &current, inject) {
                Ok(()) => {
                    out(&format!(
                        "   {current} succeeded (its task state survived the retry: pages_done was {kept})"
                    ))?;
                    break;
                }
                Err(e) => {
                    let Some(delay) = policy.delay(current.try_number(), "transient", 0.5) else {
                        bail!("{current} failed for good: {e}");
                    };
                    out(&format!(
                        "   {current} failed ({e}); the policy says retry in {delay:?}"
                    ))?;
                    std::thread::sleep(delay);
                    current = k.clear_for_retry(&current)?;
                }
            }
        }
    }
    let aggregate = run.task("aggregate")?;
    k.start(&aggregate)?;
    let ctx = k.context(aggregate.clone());
    let pulled = ctx.pull_all("summary", &EXTRACTORS)?;
    ctx.set_json(
        "report",
        &pulled
            .iter()
            .map(|p| format!("{}#{}", p.task_id, p.try_number))
            .collect::<Vec<_>>(),
    )?;
    k.succeed(&aggregate, b"ok".to_vec())?;
    k.set_run_status(&run, RunStatus::Succeeded, None)?;
    k.close()?;
    let r = k.run(&run)?.context("the run has a record")?;
    out(&format!(
        "== 6. the run finished: {} of {} tasks succeeded; aggregate pulled from {}",
        r.task_counts.succeeded,
        r.task_counts.total(),
        pulled
            .iter()
            .map(|p| format!("{}#{}", p.task_id, p.try_number))
            .collect::<Vec<_>>()
            .join(", ")
    ))?;
    drop(k);

    out("\n== 7. what the log says: waymark history --run run-42 --task table_items")?;
    crate::state::history(dir, "run-42", "table_items", None, false)?;
    out(&format!(
        "\n== 8. the state at the crash: waymark replay --to-lsn {crash_lsn} --run run-42"
    ))?;
    crate::state::replay_cmd(
        dir,
        crate::state::Until::Lsn(waymark_engine::Lsn(crash_lsn)),
        Some("run-42"),
        None,
        false,
    )?;
    out("\n== 9. waymark timeline --run run-42")?;
    crate::timeline::timeline(dir, "run-42", None, false)?;
    let d = dir.display();
    out(&format!(
        "\ndone in {:.1}s. Explore further:",
        started.elapsed().as_secs_f64()
    ))?;
    for cmd in [
        format!("waymark info {d}"),
        format!("waymark runs {d}"),
        format!("waymark dump {d} --task table_items --json"),
        format!("waymark diff {d} --from {crash_lsn} --to now"),
        format!("waymark timeline {d} --run run-42 --html run-42.html"),
        format!("waymark verify {d}"),
    ] {
        out(&format!("  {cmd}"))?;
    }
    Ok(())
}
