//! A worker with two tasks passing state: `ocr` writes lines, `tables`
//! reads them from upstream and writes rows. Run:
//! `cargo run -p waymark-kernel --example two_tasks`

use waymark_kernel::{Kernel, RunRef};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let kernel = Kernel::open(dir.path())?;
    let run = RunRef::new("acme", "documents", "run-42")?;

    let ocr = run.task("ocr")?;
    kernel.start(&ocr)?;
    let ctx = kernel.context(ocr.clone());
    ctx.set_json("lines", &["Invoice 17", "Qty 3 x 14.00", "Total 42.00"])?;
    ctx.push("language", b"en", br#"{"confidence":0.97}"#)?;
    kernel.succeed(&ocr, b"3 lines".to_vec())?;
    println!("{ocr}: wrote {} keys", ctx.len()?);

    let tables = run.task("tables")?;
    kernel.start(&tables)?;
    let ctx = kernel.context(tables.clone());
    let lines: Vec<String> = serde_json::from_slice(
        &ctx.get_from("ocr", "lines")?
            .ok_or("ocr has not written its lines")?,
    )?;
    let rows: Vec<&String> = lines.iter().filter(|l| l.contains(" x ")).collect();
    ctx.set_json("rows", &rows)?;
    kernel.succeed(&tables, format!("{} rows", rows.len()).into_bytes())?;
    println!(
        "{tables}: read {} lines from ocr, wrote {} rows",
        lines.len(),
        rows.len()
    );

    let record = kernel.run(&run)?;
    if let Some(r) = record {
        println!(
            "run {}: {} of {} tasks succeeded",
            run.run_id(),
            r.task_counts.succeeded,
            r.task_counts.total()
        );
    }
    Ok(())
}
