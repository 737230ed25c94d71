//! The README's crash-testing example, as a test: a worker that processes
//! the pages of a document, recording each page's result and its progress
//! in task state, must never skip or redo a page after any crash. The kit
//! crashes the worker at every storage operation with every damage,
//! reopens and resumes, and the check then retries the task and runs the
//! worker to the end: the pages done must be exactly 1..=PAGES, once
//! each. A worker that writes its progress apart from its result is
//! caught redoing a page.

use waymark_kernel::testkit::CrashTest;
use waymark_kernel::{Kernel, RunRef, TaskRef, TaskStatus};

const PAGES: u32 = 5;

/// The pages done so far, as the worker records them in task state.
fn pages_done(kernel: &Kernel, ti: &TaskRef) -> waymark_kernel::Result<Vec<u32>> {
    let done = kernel.context(ti.clone()).task_state("done")?;
    Ok(done
        .map(|bytes| {
            String::from_utf8_lossy(&bytes)
                .split(',')
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default())
}

fn list(pages: &[u32]) -> String {
    pages
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// The worker: from the page after the last one done, each page's result
/// and the list of pages done go in one atomic batch.
fn worker(kernel: &Kernel, ti: &TaskRef) -> waymark_kernel::Result<()> {
    let mut done = pages_done(kernel, ti)?;
    let ctx = kernel.context(ti.clone());
    for page in done.last().map_or(1, |p| p + 1)..=PAGES {
        done.push(page);
        ctx.batch()
            .set_task_state(&format!("page-{page}"), format!("rows of page {page}"))
            .set_task_state("done", list(&done))
            .commit()?;
    }
    Ok(())
}

/// The same worker written wrong: it records the page in its list, then,
/// in a second write, the cursor it resumes from.
fn worker_with_a_separate_cursor(kernel: &Kernel, ti: &TaskRef) -> waymark_kernel::Result<()> {
    let ctx = kernel.context(ti.clone());
    let cursor: u32 = ctx
        .task_state("cursor")?
        .and_then(|v| String::from_utf8_lossy(&v).parse().ok())
        .unwrap_or(0);
    let mut done = pages_done(kernel, ti)?;
    for page in cursor + 1..=PAGES {
        done.push(page);
        ctx.set_task_state("done", list(&done))?;
        ctx.set_task_state("cursor", page.to_string())?;
    }
    Ok(())
}

type Worker = fn(&Kernel, &TaskRef) -> waymark_kernel::Result<()>;

fn crash_test(work: Worker) -> CrashTest<impl Fn(&Kernel) -> waymark_kernel::Result<()>> {
    let ti = RunRef::new("acme", "documents", "run-42")
        .unwrap()
        .task("ocr_pages")
        .unwrap();
    CrashTest::new(move |kernel| {
        kernel.start(&ti)?;
        work(kernel, &ti)?;
        kernel.succeed(&ti, b"ok".to_vec())?;
        Ok(())
    })
}

/// After any crash: no page done twice or skipped, nothing acknowledged
/// lost; then the retried worker finishes exactly the pages left.
fn check(
    kernel: &Kernel,
    acked: &waymark_kernel::testkit::Acked,
    work: Worker,
) -> Result<(), String> {
    let ti = RunRef::new("acme", "documents", "run-42")
        .map_err(|e| e.to_string())?
        .task("ocr_pages")
        .map_err(|e| e.to_string())?;
    let e = |e: waymark_kernel::Error| e.to_string();
    let done = pages_done(kernel, &ti).map_err(e)?;
    let expected: Vec<u32> = (1..=done.len() as u32).collect();
    if done != expected {
        return Err(format!("pages done after the crash: {done:?}"));
    }
    let acked_done = acked
        .last_task_state(&ti, "done")
        .map_or(0, |d| d.split(|b| *b == b',').count());
    if done.len() < acked_done {
        return Err(format!(
            "{acked_done} pages acknowledged, {} left",
            done.len()
        ));
    }
    // Resume the worker: retry the task unless it succeeded.
    let latest = kernel.task(&ti).map_err(e)?;
    if !latest
        .as_ref()
        .is_some_and(|r| matches!(r.status, TaskStatus::Succeeded { .. }))
    {
        let attempt = match latest {
            Some(r) => kernel
                .clear_for_retry(&ti.with_try(r.latest_try).map_err(e)?)
                .map_err(e)?,
            None => ti.clone(),
        };
        kernel.start(&attempt).map_err(e)?;
        work(kernel, &attempt).map_err(e)?;
        kernel.succeed(&attempt, b"ok".to_vec()).map_err(e)?;
    }
    let done = pages_done(kernel, &ti).map_err(e)?;
    if done != (1..=PAGES).collect::<Vec<_>>() {
        return Err(format!("after resuming, pages done: {done:?}"));
    }
    Ok(())
}

#[test]
fn a_worker_never_skips_or_redoes_a_page_after_any_crash() {
    let report = crash_test(worker).run(|kernel, acked| check(kernel, acked, worker));
    assert!(report.images > 100, "{report:?}");
    assert!(
        report.crashed_with_acks_share() > 0.5,
        "most images crash after a write was acknowledged: {report:?}"
    );
}

#[test]
fn a_worker_that_writes_its_cursor_apart_is_caught_redoing_a_page() {
    let failure = crash_test(worker_with_a_separate_cursor)
        .try_run(|kernel, acked| check(kernel, acked, worker_with_a_separate_cursor))
        .expect_err("a crash between the two writes redoes a page");
    assert!(failure.why.contains("after resuming"), "{failure}");
    assert!(
        failure.to_string().contains("WAYMARK_CRASH_CASE="),
        "{failure}"
    );
}
