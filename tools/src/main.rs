//! `waymark`: offline inspection of waymark state directories.
//!
//! Only `waymark log DIR` exists so far: it prints every batch in the log.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use waymark_engine::{LogReader, Lsn};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [cmd, dir] = args.as_slice() else {
        eprintln!("usage: waymark log DIR");
        return ExitCode::from(2);
    };
    if cmd != "log" {
        eprintln!("waymark: unknown command {cmd:?}; usage: waymark log DIR");
        return ExitCode::from(2);
    }
    match print_log(dir) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("waymark: {e}");
            ExitCode::from(1)
        }
    }
}

fn print_log(dir: &str) -> waymark_engine::Result<()> {
    let reader = LogReader::open(dir)?;
    let mut cursor = reader.cursor(Lsn(1));
    while let Some(frame) = cursor.next_frame()? {
        for event in frame.decode()? {
            println!("{:>8}  {:<12}  {:?}", frame.lsn(), event.kind(), event.body);
        }
    }
    Ok(())
}
