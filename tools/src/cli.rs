//! The raw command line, as clap parses it. `filter.rs` turns the raw
//! filter flags into a checked [`crate::filter::Filter`].

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Inspect waymark state directories: copied off a worker, or live (read
/// only, without taking the worker's lock).
#[derive(Debug, Parser)]
#[command(name = "waymark", version, about, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// Print the engine's operator events on stderr (a torn tail cut,
    /// views rebuilt, snapshots, retention): -v for info, -vv for debug.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Format version, log id, segments, LSN range and the views' applied LSN.
    #[command(after_help = "Example:\n  waymark info ./state\n  waymark info ./state --json")]
    Info {
        /// The state directory.
        dir: PathBuf,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Events in log order, filtered.
    #[command(
        after_help = "Examples:\n  waymark dump ./state --run run-42 --task ocr\n  waymark dump ./state --kind put --since '10m' --json\n  waymark dump ./state --from-lsn 100 --to-lsn 200 --reverse --limit 5"
    )]
    Dump {
        /// The state directory.
        dir: PathBuf,
        /// Which events.
        #[command(flatten)]
        filter: Box<FilterArgs>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Check every segment header and frame, then rebuild the views from the
    /// log and compare them with the views file. Says what the next open
    /// will do. Exit 0: the next open succeeds (consistent, or a torn tail
    /// it will cut, or views it will rebuild from the log: each is named);
    /// 1: corruption (named by segment and offset) or a difference; 2: usage
    /// or I/O error.
    #[command(after_help = "Example:\n  waymark verify ./state")]
    Verify {
        /// The state directory.
        dir: PathBuf,
    },
    /// Runs with DAG name, status, task counts and times (rebuilt from the
    /// log, so it works on a live or copied directory).
    #[command(
        after_help = "Example:\n  waymark runs ./state\n  waymark runs ./state --tenant acme --json"
    )]
    Runs {
        /// The state directory.
        dir: PathBuf,
        /// Only this tenant.
        #[arg(long)]
        tenant: Option<String>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// How a task's state and status changed, attempt by attempt.
    #[command(
        after_help = "Example:\n  waymark history ./state --run run-42 --task tables\n  waymark history ./state --run run-42 --task tables --key rows"
    )]
    History {
        /// The state directory.
        dir: PathBuf,
        /// The run id.
        #[arg(long)]
        run: String,
        /// The task id.
        #[arg(long)]
        task: String,
        /// Only this key (and the clears that removed it).
        #[arg(long)]
        key: Option<String>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// The state exactly as it was at an LSN or a time: printed, or
    /// materialized into a new state directory (a fork) with --out.
    #[command(
        after_help = "Examples:\n  waymark replay ./state --to-lsn 120\n  waymark replay ./state --at '2026-11-22T10:42:00Z' --run run-42\n  waymark replay ./state --to-lsn 120 --out ./fork && waymark verify ./fork"
    )]
    Replay {
        /// The state directory.
        dir: PathBuf,
        /// Every batch up to this LSN.
        #[arg(long, conflicts_with = "at", required_unless_present = "at")]
        to_lsn: Option<u64>,
        /// Every batch whose events are all at or before this time (RFC
        /// 3339 or relative): a batch is in whole or not at all.
        #[arg(long)]
        at: Option<String>,
        /// Only this run id.
        #[arg(long)]
        run: Option<String>,
        /// Write the state into this new directory instead of printing it.
        #[arg(long)]
        out: Option<PathBuf>,
        /// One JSON object per line (when printing): `"kind": "task"` for
        /// each task with a status or state, `"kind": "shared"` for a run's
        /// shared variables.
        #[arg(long)]
        json: bool,
    },
    /// What changed in the state between two points (LSN or time): keys
    /// added, changed, removed; task statuses.
    #[command(
        after_help = "Examples:\n  waymark diff ./state --from 100 --to 200\n  waymark diff ./state --from '1h ago' --to now --run run-42 --json"
    )]
    Diff {
        /// The state directory.
        dir: PathBuf,
        /// The earlier point: an LSN, a time (RFC 3339 or relative), or 0.
        #[arg(long)]
        from: String,
        /// The later point: an LSN, a time, or "now".
        #[arg(long)]
        to: String,
        /// Only this run id.
        #[arg(long)]
        run: Option<String>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Bytes of log and of live state per tenant and run, largest first.
    #[command(after_help = "Example:\n  waymark du ./state")]
    Du {
        /// The state directory.
        dir: PathBuf,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// The last events; with -f, follow new ones as they are written.
    #[command(
        after_help = "Examples:\n  waymark tail ./state\n  waymark tail ./state -n 50 -f --json"
    )]
    Tail {
        /// The state directory.
        dir: PathBuf,
        /// How many of the last events to show first.
        #[arg(short = 'n', long, default_value_t = 10)]
        lines: usize,
        /// Keep following new events (stop with Ctrl-C).
        #[arg(short, long)]
        follow: bool,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Copy what is readable up to the first corruption into a new state
    /// directory and report exactly what was dropped.
    #[command(after_help = "Example:\n  waymark salvage ./broken --out ./salvaged")]
    Salvage {
        /// The state directory (read only).
        dir: PathBuf,
        /// The new state directory to create.
        #[arg(long)]
        out: PathBuf,
    },
    /// A run's task attempts on a time axis: bars in the terminal, or one
    /// self-contained HTML file with --html.
    #[command(
        after_help = "Examples:\n  waymark timeline ./state --run run-42\n  waymark timeline ./state --run run-42 --html run-42.html"
    )]
    Timeline {
        /// The state directory.
        dir: PathBuf,
        /// The run id.
        #[arg(long)]
        run: String,
        /// Write an HTML file (inline CSS, no network) instead.
        #[arg(long)]
        html: Option<PathBuf>,
        /// One JSON object per attempt.
        #[arg(long)]
        json: bool,
    },
    /// The whole product in a few seconds: a worker runs a document DAG, is
    /// killed mid-run, and the directory is reopened, resumed, retried,
    /// finished and explained.
    #[command(after_help = "Example:\n  waymark demo ./demo-state")]
    Demo {
        /// The state directory to create (it must not exist yet).
        dir: PathBuf,
    },
    /// The demo's worker process (started by `waymark demo`).
    #[command(hide = true)]
    DemoWorker {
        /// The state directory.
        dir: PathBuf,
    },
    /// Every event as JSON lines (the same objects as `dump --json`).
    #[command(after_help = "Example:\n  waymark export ./state > events.jsonl")]
    Export {
        /// The state directory.
        dir: PathBuf,
    },
}

/// The filter flags shared by listing commands.
#[derive(Debug, Default, Args)]
pub struct FilterArgs {
    /// Only this tenant.
    #[arg(long)]
    pub tenant: Option<String>,
    /// Only this DAG.
    #[arg(long)]
    pub dag: Option<String>,
    /// Only this run id.
    #[arg(long)]
    pub run: Option<String>,
    /// Only this task id.
    #[arg(long)]
    pub task: Option<String>,
    /// Only this try number.
    #[arg(long = "try")]
    pub try_number: Option<u32>,
    /// Only events writing this key.
    #[arg(long)]
    pub key: Option<String>,
    /// Only this kind of event (put, delete, clear_task, task_put,
    /// task_delete, task_status, run_status, checkpoint,
    /// restore_checkpoint, shared_put, purge_run, delete_checkpoint).
    #[arg(long)]
    pub kind: Option<String>,
    /// From this LSN on.
    #[arg(long)]
    pub from_lsn: Option<u64>,
    /// Up to this LSN.
    #[arg(long)]
    pub to_lsn: Option<u64>,
    /// Events at or after this time: RFC 3339, or relative ("10m",
    /// "2 days ago").
    #[arg(long)]
    pub since: Option<String>,
    /// Events at or before this time (same forms as --since).
    #[arg(long)]
    pub until: Option<String>,
    /// At most this many events.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Newest first.
    #[arg(long)]
    pub reverse: bool,
}
