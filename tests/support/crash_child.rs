//! A worker for the SIGKILL tests: opens the state directory given as its
//! first argument with `Sync` durability and appends batches from four
//! threads forever, printing `LSN WRITER INDEX` for each acknowledged batch.
//! Writers are numbered from the second argument so that rounds differ.
//!
//! With a third argument `kernel`, the four threads are workers of the
//! kernel instead: each runs task after task (start, two writes, the last
//! output and the success in one batch), and prints `put TASK KEY VALUE`
//! and `status TASK KIND` for each acknowledged write and transition.

use std::io::Write;

use waymark_engine::Engine;
use waymark_tests::batch;

/// The seed every round's batches are drawn from; the test uses it too.
const SEED: u64 = 0x5157_4b11;

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .expect("usage: waymark-crash-child DIR FIRST_WRITER");
    let first_writer: u32 = args
        .next()
        .and_then(|s| s.parse().ok())
        .expect("usage: waymark-crash-child DIR FIRST_WRITER");
    if args.next().as_deref() == Some("kernel") {
        kernel_workers(&dir, first_writer);
        return;
    }
    let engine = Engine::open(&dir).unwrap_or_else(|e| {
        eprintln!("crash child: {e}");
        std::process::exit(2);
    });
    say_ready();
    std::thread::scope(|s| {
        for writer in first_writer..first_writer + 4 {
            let engine = engine.clone();
            s.spawn(move || {
                for index in 0.. {
                    let lsn = engine.append(batch(SEED, writer, index)).expect("append");
                    let mut out = std::io::stdout().lock();
                    // One write per line, so a kill never splits a line we
                    // then trust: the test ignores a last line with no newline.
                    let _ = out.write_all(format!("{} {writer} {index}\n", lsn.0).as_bytes());
                    let _ = out.flush();
                }
            });
        }
    });
}

/// Prints one line whole (a kill never splits a line the test trusts: it
/// ignores a last line with no newline).
fn say(line: String) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(format!("{line}\n").as_bytes());
    let _ = out.flush();
}

/// Four kernel workers, task after task, until killed.
fn kernel_workers(dir: &str, first_writer: u32) {
    let kernel = waymark_kernel::Kernel::builder()
        .worker_id(format!("child-{first_writer}"))
        .open(dir)
        .unwrap_or_else(|e| {
            eprintln!("crash child: {e}");
            std::process::exit(2);
        });
    let run = waymark_kernel::RunRef::new("acme", "docs", "sigkill").expect("valid names");
    say_ready();
    std::thread::scope(|s| {
        for writer in first_writer..first_writer + 4 {
            let (kernel, run) = (kernel.clone(), run.clone());
            s.spawn(move || {
                for n in 0.. {
                    let name = format!("w{writer}-n{n}");
                    let ti = run.task(name.clone()).expect("a valid name");
                    kernel.start(&ti).expect("start");
                    say(format!("status {name} running"));
                    let ctx = kernel.context(ti.clone());
                    for k in 0..2 {
                        let value = format!("{name}-{k}");
                        ctx.set(&format!("k{k}"), &value).expect("set");
                        say(format!("put {name} k{k} {value}"));
                    }
                    let value = format!("{name}-out");
                    ctx.batch()
                        .set("out", &value)
                        .succeed(b"ok".to_vec())
                        .commit()
                        .expect("finish");
                    say(format!("put {name} out {value}"));
                    say(format!("status {name} succeeded"));
                }
            });
        }
    });
}

/// Tells the test the child holds the directory and starts writing.
fn say_ready() {
    println!("ready");
    std::io::stdout()
        .flush()
        .expect("stdout is a pipe the test reads");
}
