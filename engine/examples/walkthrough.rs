//! A walk through the engine as it stands: a worker records a small
//! document-processing run as events, the disk crashes in the middle of a
//! write, the engine reopens, cuts the torn tail, keeps every acknowledged
//! batch, and the log is replayed to show what happened.
//!
//! Run: `cargo run --release -p waymark-engine --example walkthrough`

use std::sync::Arc;

use waymark_engine::storage::{Damage, SimDisk, Storage};
use waymark_engine::{
    AttemptScope, Engine, Event, EventBody, LogReader, Lsn, Options, RunScope, RunStatus,
    TaskScope, TaskStatus,
};

fn attempt(task: &str) -> AttemptScope {
    AttemptScope {
        task: TaskScope {
            run: run(),
            task: task.into(),
        },
        try_number: 1,
    }
}

fn run() -> RunScope {
    RunScope {
        tenant: "acme".into(),
        dag: "documents".into(),
        run: "run-42".into(),
    }
}

fn status(task: &str, status: TaskStatus) -> Event {
    Event::now(EventBody::TaskStatus {
        attempt: attempt(task),
        status,
        worker: "worker-1".into(),
    })
}

fn put(task: &str, key: &str, value: &str) -> Event {
    Event::now(EventBody::Put {
        codec: waymark_engine::Codec::Raw,
        attempt: std::sync::Arc::new(attempt(task)),
        key: key.into(),
        value: value.as_bytes().to_vec(),
        meta: Vec::new(),
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The simulated disk: the same engine, files in memory, crashes on demand.
    let disk = SimDisk::new(2026);
    let storage: Arc<dyn Storage> = Arc::new(disk.clone());
    let engine = Engine::open_with(storage, "/state", Options::default())?;

    let running = |t: &str| status(t, TaskStatus::Running);
    let done = |t: &str| {
        status(
            t,
            TaskStatus::Succeeded {
                result: b"ok".to_vec(),
            },
        )
    };
    let run_status = |s| {
        Event::now(EventBody::RunStatus {
            run: run(),
            status: s,
            parent: None,
        })
    };
    let steps: Vec<Vec<Event>> = vec![
        vec![run_status(RunStatus::Running), running("ingest")],
        vec![
            put("ingest", "pages", "12"),
            put("ingest", "source", "s3://inbox/invoice.pdf"),
            done("ingest"),
        ],
        vec![running("ocr")],
        vec![
            put("ocr", "text_chars", "48211"),
            put("ocr", "language", "en"),
        ],
    ];
    for batch in steps {
        let lsn = engine.append(batch)?;
        println!("acknowledged LSN {lsn} (durable: fdatasync done)");
    }

    // The worker is mid-write when the machine dies: the next batch's write
    // reaches the disk only in part.
    disk.crash_after_ops(1);
    let lost = engine.append(vec![done("ocr")]);
    println!(
        "append during the crash: {}",
        lost.map_or_else(|e| e.to_string(), |l| l.to_string())
    );
    drop(engine);

    let disk = disk.reboot(Damage::TornLastWrite);
    let storage: Arc<dyn Storage> = Arc::new(disk.clone());
    let engine = Engine::open_with(Arc::clone(&storage), "/state", Options::default())?;
    let report = engine.recovery_report();
    println!(
        "\nreopened: {} batches recovered, last LSN {:?}, torn tail: {}",
        report.frames,
        report.last_lsn.map(|l| l.0),
        report
            .torn_tail
            .as_ref()
            .map_or("none".to_string(), |c| format!(
                "{} bytes cut at offset {}",
                c.bytes_dropped, c.offset
            ))
    );
    let lsn = engine.append(vec![done("ocr")])?;
    println!("ocr retried its last write: LSN {lsn}");

    // The views: what a scheduler asks after the crash.
    let views = engine.views();
    if let Some(r) = views.run(&run())? {
        let c = r.task_counts;
        println!(
            "\nviews: run {} is {:?}: {} succeeded, {} running of {} tasks",
            run().run,
            r.status,
            c.succeeded,
            c.running,
            c.total()
        );
    }
    for (task, record) in views.tasks(&run())? {
        println!(
            "  task {task}: try {} {:?}",
            record.latest_try, record.status
        );
    }
    drop(engine);

    println!("\nreplay of the log:");
    let reader = LogReader::open_on(storage, "/state")?;
    let mut cursor = reader.cursor(Lsn(1));
    while let Some(frame) = cursor.next_frame()? {
        for event in frame.decode()? {
            let what = match &event.body {
                EventBody::Put {
                    attempt,
                    key,
                    value,
                    ..
                } => {
                    format!(
                        "{} set {key} = {}",
                        attempt.task.task,
                        String::from_utf8_lossy(value)
                    )
                }
                EventBody::TaskStatus {
                    attempt, status, ..
                } => format!("{} is {status:?}", attempt.task.task),
                EventBody::RunStatus { run, status, .. } => {
                    format!("run {} is {status:?}", run.run)
                }
                other => format!("{other:?}"),
            };
            println!("  LSN {:>2}  {:<12} {what}", frame.lsn(), event.kind());
        }
    }
    Ok(())
}
