//! Crash, resume and retry on the simulated disk: a worker is cut off by a
//! power loss in the middle of `tables`; after reopening, `resume` reports
//! `tables` interrupted, the scheduler retries it with its attempt state
//! cleared and its task state (a progress cursor) kept, and the run
//! finishes. Run:
//! `cargo run -p waymark-kernel --example crash_resume_retry`

use std::sync::Arc;

use waymark_engine::storage::{Damage, SimDisk};
use waymark_kernel::{Kernel, RunRef};

/// The same kernel as on files (default options, `Sync`), on a disk the
/// example can crash.
fn kernel_on(disk: &SimDisk) -> waymark_kernel::Result<Kernel> {
    Kernel::builder()
        .worker_id("worker-1")
        .open_on(Arc::new(disk.clone()), "/state")
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let disk = SimDisk::new(42);
    let run = RunRef::new("acme", "documents", "run-42")?;
    {
        let kernel = kernel_on(&disk)?;
        let ocr = run.task("ocr")?;
        kernel.start(&ocr)?;
        kernel
            .context(ocr.clone())
            .set("text", b"Invoice 17 ... Total 42.00")?;
        kernel.succeed(&ocr, b"ok".to_vec())?;

        let tables = run.task("tables")?;
        kernel.start(&tables)?;
        let ctx = kernel.context(tables.clone());
        ctx.set("rows-page-1", b"3 rows")?;
        ctx.set_task_state("cursor", b"page-2")?;
        // Power is cut after the next storage operation: the write reaches
        // the disk's cache, its fsync never happens, nobody is told "done".
        disk.crash_after_ops(1);
        let lost = ctx.set("rows-page-2", b"5 rows");
        println!(
            "write during the crash: {}",
            match lost {
                Ok(_) => "acknowledged".to_string(),
                Err(e) => format!("failed ({e})"),
            }
        );
    }
    let disk = disk.reboot(Damage::Random);
    let kernel = kernel_on(&disk)?;
    let state = kernel.resume(&run)?;
    for t in &state.tasks {
        println!(
            "resume: {} is {:?}{}",
            t.ti,
            t.status,
            if t.interrupted { " (interrupted)" } else { "" }
        );
    }
    for t in state.to_retry() {
        let retry = kernel.clear_for_retry(&t.ti)?;
        let ctx = kernel.context(retry.clone());
        let cursor = ctx.task_state("cursor")?.unwrap_or_default();
        println!(
            "retrying as {retry}: attempt state has {} keys, task state cursor = {}",
            ctx.len()?,
            String::from_utf8_lossy(&cursor)
        );
        kernel.start(&retry)?;
        // The last output and the success in one atomic batch.
        ctx.batch()
            .set("rows-page-2", b"5 rows")
            .succeed(b"ok".to_vec())
            .commit()?;
    }
    let r = kernel.run(&run)?.ok_or("the run has a record")?;
    println!(
        "run {}: {} of {} tasks succeeded",
        run.run_id(),
        r.task_counts.succeeded,
        r.task_counts.total()
    );
    println!("history of tables:");
    for e in kernel.history_of_task(&run.task("tables")?)? {
        println!(
            "  LSN {:>2} {:<12} try {:?} key {:?}",
            e.lsn,
            e.event.kind(),
            e.event.try_number(),
            e.event.key()
        );
    }
    Ok(())
}
