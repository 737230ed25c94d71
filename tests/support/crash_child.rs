//! A worker for the SIGKILL test: opens the state directory given as its
//! first argument with `Sync` durability and appends batches from four
//! threads forever, printing `LSN WRITER INDEX` for each acknowledged batch.
//! Writers are numbered from the second argument so that rounds differ.

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
    let engine = Engine::open(&dir).unwrap_or_else(|e| {
        eprintln!("crash child: {e}");
        std::process::exit(2);
    });
    println!("ready");
    std::io::stdout()
        .flush()
        .expect("stdout is a pipe the test reads");
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
