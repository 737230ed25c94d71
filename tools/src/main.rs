//! `waymark`: inspect waymark state directories, copied off a worker or
//! live (read only, without taking the worker's lock).
//!
//! Data goes to stdout, diagnostics to stderr. Exit codes: 0 success, 1 a
//! problem found in the data (corruption), 2 a usage or I/O error (missing
//! directory, not a waymark directory, unreadable file).
#![forbid(unsafe_code)]

mod cli;
mod demo;
mod filter;
mod json;
mod more;
mod progress;
mod state;
mod timeline;
mod verify;

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;
use waymark_engine::{Cursor, LogReader, Lsn};

use crate::cli::{Cli, Command};
use crate::filter::Filter;

/// A failure and the exit code it calls for.
struct Failure {
    code: u8,
    error: anyhow::Error,
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Failure {
        // Corruption in the data is exit 1; everything else (I/O, a path
        // that is not a state directory, bad flags) is exit 2.
        let code = match error.downcast_ref::<waymark_engine::Error>() {
            Some(
                waymark_engine::Error::Corruption { .. }
                | waymark_engine::Error::Gap { .. }
                | waymark_engine::Error::CorruptView { .. },
            ) => 1,
            _ => 2,
        };
        Failure { code, error }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.verbose > 0 {
        let level = if cli.verbose == 1 {
            tracing_subscriber::filter::LevelFilter::INFO
        } else {
            tracing_subscriber::filter::LevelFilter::DEBUG
        };
        // The engine emits events and installs no subscriber: this is the
        // only one, on stderr so that stdout stays the command's output.
        tracing_subscriber::fmt()
            .with_max_level(level)
            .with_writer(std::io::stderr)
            .init();
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            // One line: the cause chain, outermost first.
            let chain: Vec<String> = f.error.chain().map(ToString::to_string).collect();
            eprintln!("waymark: {}", chain.join(": "));
            ExitCode::from(f.code)
        }
    }
}

fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Info { dir, json } => info(&dir, json)?,
        Command::Dump { dir, filter, json } => dump(&dir, Filter::from_args(*filter)?, json)?,
        Command::Export { dir } => dump(&dir, Filter::default(), true)?,
        Command::Runs { dir, tenant, json } => state::runs(&dir, tenant.as_deref(), json)?,
        Command::Diff {
            dir,
            from,
            to,
            run,
            json,
        } => more::diff(&dir, &from, &to, run.as_deref(), json)?,
        Command::Du { dir, json } => more::du(&dir, json)?,
        Command::Demo { dir } => demo::demo(&dir)?,
        Command::DemoWorker { dir } => demo::worker(&dir)?,
        Command::Timeline {
            dir,
            run,
            html,
            json,
        } => timeline::timeline(&dir, &run, html.as_deref(), json)?,
        Command::Tail {
            dir,
            lines,
            follow,
            json,
        } => more::tail(&dir, lines, follow, json)?,
        Command::Salvage { dir, out } => more::salvage(&dir, &out)?,
        Command::History {
            dir,
            run,
            task,
            key,
            json,
        } => state::history(&dir, &run, &task, key.as_deref(), json)?,
        Command::Replay {
            dir,
            to_lsn,
            at,
            run,
            out,
            json,
        } => {
            let until = match (to_lsn, at) {
                (Some(n), _) => state::Until::Lsn(Lsn(n)),
                (None, Some(t)) => state::Until::Time(filter::parse_time(&t)?),
                (None, None) => state::Until::End,
            };
            state::replay_cmd(&dir, until, run.as_deref(), out.as_deref(), json)?
        }
        Command::Verify { dir } => {
            let report = verify::verify(&dir)?;
            for line in &report.lines {
                out(line)?;
            }
            if report.problems > 0 {
                return Err(Failure {
                    code: 1,
                    error: anyhow::anyhow!(
                        "{}: {} problem(s) found",
                        dir.display(),
                        report.problems
                    ),
                });
            }
        }
    }
    Ok(())
}

/// Prints a line to stdout; a closed pipe (`| head`) ends quietly.
pub(crate) fn out(line: &str) -> Result<bool> {
    let mut stdout = std::io::stdout().lock();
    match writeln!(stdout, "{line}") {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e).context("writing to stdout"),
    }
}

fn open(dir: &Path) -> Result<LogReader> {
    LogReader::open(dir).map_err(anyhow::Error::from)
}

/// Says how a scan that read to the end of the log ended: nothing at a
/// clean end; a note on stderr at an incomplete last frame (a torn tail,
/// which the next open cuts, or a frame still being written); and, when a
/// later valid frame shows that the bad frame had been synced, the
/// corruption as an error (exit 1), so that no command prints part of a
/// corrupt log as if it were all of it.
pub(crate) fn log_end(cursor: &Cursor) -> Result<()> {
    let Some(stop) = cursor.tail() else {
        return Ok(());
    };
    let Some(reason) = &stop.invalid else {
        return Ok(());
    };
    let expected_lsn = cursor.next_lsn();
    if waymark_engine::inspect::is_vouched_for(&stop.segment, stop.offset, expected_lsn)? {
        return Err(waymark_engine::Error::Corruption {
            segment: stop.segment.clone(),
            offset: stop.offset,
            expected_lsn,
            reason: reason.clone(),
        })
        .context("a crash does not make this frame: it is whole with a wrong LSN or payload, or later frames were written after it was synced");
    }
    eprintln!(
        "waymark: the log ends in an incomplete frame at {} offset {}, where LSN {} would be ({reason}): a torn tail or a frame still being written",
        stop.segment.display(),
        stop.offset,
        expected_lsn.0,
    );
    Ok(())
}

fn dump(dir: &Path, filter: Filter, as_json: bool) -> Result<()> {
    let reader = open(dir)?;
    let mut cursor = reader.cursor(filter.from_lsn);
    let mut shown = 0usize;
    // With `--reverse`, the last `--limit` matching events (all of them
    // without a limit): memory bounded by what will be printed.
    let mut kept: std::collections::VecDeque<(Lsn, waymark_engine::Event)> =
        std::collections::VecDeque::new();
    let print = |lsn: Lsn, e: &waymark_engine::Event| -> Result<bool> {
        if as_json {
            out(&json::event(lsn, e).to_string())
        } else {
            let scope = match (e.task(), e.try_number()) {
                (Some(t), Some(n)) => format!("{}/{}#{n}", e.run().run, t),
                (Some(t), None) => format!("{}/{}", e.run().run, t),
                _ => e.run().run.clone(),
            };
            out(&format!(
                "{:>8}  {}  {:<18}  {:<28}  {:<16}  {}",
                lsn.0,
                json::time(e.ts_micros),
                e.kind(),
                scope,
                e.key().unwrap_or(""),
                json::summary(e)
            ))
        }
    };
    let progress = progress::Progress::start("reading the log", as_json);
    while let Some(frame) = cursor.next_frame()? {
        progress.tick();
        let lsn = frame.lsn();
        if filter.to_lsn.is_some_and(|to| lsn > to) {
            break;
        }
        for event in frame.decode()? {
            if !filter.matches(lsn, &event) {
                continue;
            }
            if filter.reverse {
                kept.push_back((lsn, event));
                if filter.limit.is_some_and(|l| kept.len() > l) {
                    kept.pop_front();
                }
                continue;
            }
            if filter.limit.is_some_and(|l| shown >= l) || !print(lsn, &event)? {
                return Ok(());
            }
            shown += 1;
        }
    }
    log_end(&cursor)?;
    for (lsn, event) in kept.iter().rev() {
        if !print(*lsn, event)? {
            break;
        }
    }
    Ok(())
}

fn info(dir: &Path, as_json: bool) -> Result<()> {
    let segments = waymark_engine::inspect::segments(dir)?;
    let views = waymark_engine::inspect::views_meta(dir);
    // The log's end: read the last segment's frames.
    let reader = open(dir)?;
    let first = segments.first().map(|s| s.base_lsn);
    let mut last = first.map(|f| Lsn(f.0 - 1));
    if let Some(s) = segments.last() {
        let mut cursor = reader.cursor(s.base_lsn);
        while let Some(frame) = cursor.next_frame()? {
            last = Some(frame.lsn());
        }
        log_end(&cursor)?;
    }
    let bytes: u64 = segments.iter().map(|s| s.bytes).sum();
    let log_id = segments.first().map(|s| format!("{:032x}", s.log_id));
    let version = segments.first().map(|s| s.format_version);
    if as_json {
        let views_json = match &views {
            Ok(Some(v)) => serde_json::json!({
                "applied_lsn": v.applied_lsn.0,
                "log_id": format!("{:032x}", v.log_id),
                "format_version": v.format_version,
                "bytes": v.bytes,
            }),
            Ok(None) => serde_json::Value::Null,
            Err(e) => serde_json::json!({"error": e.to_string()}),
        };
        let applied = views
            .as_ref()
            .ok()
            .and_then(|v| v.as_ref())
            .map(|v| v.applied_lsn.0);
        let o = serde_json::json!({
            "dir": dir.display().to_string(),
            "format_version": version,
            "log_id": log_id,
            "segments": segments.len(),
            "log_bytes": bytes,
            "first_lsn": first.map(|l| l.0),
            "last_lsn": last.map(|l| l.0),
            "applied_lsn": applied,
            "views": views_json,
        });
        out(&o.to_string())?;
        return Ok(());
    }
    out(&format!("state directory  {}", dir.display()))?;
    out(&format!(
        "format version   {}",
        version.map_or("-".into(), |v| v.to_string())
    ))?;
    out(&format!(
        "log id           {}",
        log_id.unwrap_or_else(|| "-".into())
    ))?;
    out(&format!(
        "segments         {} ({:.1} MiB on disk)",
        segments.len(),
        bytes as f64 / (1 << 20) as f64
    ))?;
    match (first, last) {
        (Some(f), Some(l)) if l >= f => out(&format!("LSNs             {} ..= {}", f.0, l.0))?,
        _ => out("LSNs             none")?,
    };
    match views {
        Ok(Some(v)) => out(&format!(
            "views            applied_lsn {} ({:.1} MiB, views format {})",
            v.applied_lsn.0,
            v.bytes as f64 / (1 << 20) as f64,
            v.format_version
        ))?,
        Ok(None) => out("views            none (every event would be replayed on open)")?,
        Err(e) => out(&format!("views            unreadable: {e}"))?,
    };
    Ok(())
}
