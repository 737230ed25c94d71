//! Commands that need views: they rebuild them from the log into a scratch
//! engine, so they work on a copied directory and on a live one alike
//! (without its lock), and at any point in the past.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use comfy_table::{ContentArrangement, Table, presets::UTF8_FULL_CONDENSED};
use serde_json::json;
use waymark_engine::storage::{FsStorage, Storage};
use waymark_engine::{Engine, Event, LogReader, Lsn, Options, RunScope};

use crate::json;
use crate::out;

/// Creates `path` as a new, private (0700) directory for `--out`, its
/// missing parents too. Refuses anything already at `path`, a symlink
/// included, dangling or not: `mkdir` never follows a symlink, so nothing
/// is written outside the directory named, and an existing directory is
/// never mixed with a new state.
pub fn new_out_dir(path: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        // Private, as the engine makes the directories it creates.
        FsStorage
            .create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    match std::fs::DirBuilder::new()
        .mode(waymark_engine::storage::DIR_MODE)
        .create(path)
    {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => bail!(
            "{}: already exists (a file, a directory or a symlink); --out needs a new directory",
            path.display()
        ),
        Err(e) => Err(e).with_context(|| format!("creating {}", path.display())),
    }
}

/// Where a replay stops.
#[derive(Clone, Copy, Debug)]
pub enum Until {
    /// The end of the log.
    End,
    /// Every batch up to this LSN.
    Lsn(Lsn),
    /// Every event at or before this time (µs since the epoch).
    Time(i64),
}

/// A replayed state: the engine the batches went into and every run seen.
pub struct Replayed {
    pub engine: Engine,
    pub runs: BTreeSet<RunScope>,
    /// The scratch directory of an engine not written to `--out`: removed
    /// when this is dropped, after `engine` (fields drop in order).
    _scratch: Option<tempfile::TempDir>,
}

/// Replays `dir`'s log up to `until`, keeping only `run`'s events if
/// given, into a new engine: in a scratch directory under the system's
/// temporary directory (`TMPDIR`; it takes about the log's size on disk,
/// not in memory), or in the new directory `out`.
pub fn replay(
    dir: &Path,
    until: Until,
    run: Option<&str>,
    out_dir: Option<&Path>,
) -> Result<Replayed> {
    let reader = LogReader::open(dir)?;
    let first = reader.segments()?.first().map(|s| s.0);
    if let Some(first) = first
        && first != Lsn(1)
    {
        bail!(
            "{}: the log starts at LSN {} (older segments were removed by retention), so the state cannot be rebuilt from it",
            dir.display(),
            first.0
        );
    }
    let mut scratch_dir = None;
    let (storage, at): (Arc<dyn Storage>, std::path::PathBuf) = match out_dir {
        Some(path) => {
            new_out_dir(path)?;
            (Arc::new(FsStorage), path.to_path_buf())
        }
        None => {
            let scratch = tempfile::Builder::new()
                .prefix("waymark-replay-")
                .tempdir()
                .context("creating a scratch directory for the replay")?;
            let at = scratch.path().join("state");
            scratch_dir = Some(scratch);
            (Arc::new(FsStorage), at)
        }
    };
    // No syncs, no preallocated segments, the format's largest limits (the
    // batches passed the writer's own limits, which may have been raised),
    // and snapshots as usual, so that its memtables stay bounded and the
    // state goes to its redb file on disk.
    let engine = Engine::open_with(storage, &at, Options::scratch())
        .with_context(|| format!("creating {}", at.display()))?;
    let mut runs = BTreeSet::new();
    let mut cursor = reader.cursor(Lsn(1));
    let progress = crate::progress::Progress::start("rebuilding state from the log", false);
    while let Some(frame) = cursor.next_frame()? {
        progress.tick();
        if let Until::Lsn(end) = until
            && frame.lsn() > end
        {
            break;
        }
        let events = frame.decode()?;
        // A batch is in the state at a time only whole: if any of its
        // events is later than `t`, it was committed after `t`.
        if let Until::Time(t) = until
            && events.iter().any(|e| e.ts_micros > t)
        {
            continue;
        }
        let batch: Vec<Event> = events
            .into_iter()
            .filter(|e| run.is_none_or(|r| e.run().run == r))
            .collect();
        if batch.is_empty() {
            continue;
        }
        for e in &batch {
            runs.insert(e.run().clone());
        }
        engine.append(batch)?;
    }
    crate::log_end(&cursor)?;
    if out_dir.is_some() {
        engine.snapshot()?;
        engine.flush()?;
    }
    Ok(Replayed {
        engine,
        runs,
        _scratch: scratch_dir,
    })
}

/// A task status's name, with the failure kind for a failure.
fn task_status_name(s: &waymark_engine::TaskStatus) -> String {
    match s {
        waymark_engine::TaskStatus::Failed { kind, .. } => format!("failed ({kind})"),
        other => other.name().to_string(),
    }
}

fn table() -> Table {
    let mut t = Table::new();
    t.load_style(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic);
    if std::env::var_os("NO_COLOR").is_some() {
        t.force_no_tty();
    }
    t
}

pub fn runs(dir: &Path, tenant: Option<&str>, as_json: bool) -> Result<()> {
    let replayed = replay(dir, Until::End, None, None)?;
    let (views, runs) = (replayed.engine.views(), &replayed.runs);
    let mut t = table();
    t.set_header([
        "tenant",
        "dag",
        "run",
        "status",
        "tasks",
        "succeeded",
        "failed",
        "running",
        "created",
        "updated",
    ]);
    for run in runs.iter().filter(|r| tenant.is_none_or(|t| r.tenant == t)) {
        let Some(r) = views.run(run)? else { continue };
        let c = r.task_counts;
        if as_json {
            let o = json!({
                "tenant": run.tenant, "dag": run.dag, "run": run.run,
                "status": r.status.name(),
                "tasks": c.total(), "succeeded": c.succeeded, "failed": c.failed,
                "running": c.running, "interrupted": c.interrupted, "scheduled": c.scheduled,
                "cancelled": c.cancelled,
                "created": json::time(r.created_micros), "updated": json::time(r.updated_micros),
                "parent": r.parent.as_ref().map(|p| json!({"run": p.run.run, "task": p.task})),
            });
            if !out(&o.to_string())? {
                return Ok(());
            }
        } else {
            t.add_row([
                run.tenant.clone(),
                run.dag.clone(),
                run.run.clone(),
                r.status.name().to_string(),
                c.total().to_string(),
                c.succeeded.to_string(),
                c.failed.to_string(),
                c.running.to_string(),
                json::time(r.created_micros),
                json::time(r.updated_micros),
            ]);
        }
    }
    if !as_json {
        out(&t.to_string())?;
    }
    Ok(())
}

pub fn replay_cmd(
    dir: &Path,
    until: Until,
    run: Option<&str>,
    out_dir: Option<&Path>,
    as_json: bool,
) -> Result<()> {
    let replayed = replay(dir, until, run, out_dir)?;
    let (engine, runs) = (&replayed.engine, &replayed.runs);
    if let Some(path) = out_dir {
        let stats = engine.stats();
        engine.close()?;
        out(&format!(
            "wrote {} batches into {} (a new state directory; `waymark verify {}` checks it)",
            stats.batches,
            path.display(),
            path.display()
        ))?;
        return Ok(());
    }
    let views = engine.views();
    for run in runs {
        if !as_json {
            out(&format!("run {}/{}/{}", run.tenant, run.dag, run.run))?;
        }
        // Every task with a status, attempt state or task state; the
        // attempt state shown is the latest try's (with no status, the
        // highest try that wrote any).
        for name in views.task_names(run)? {
            let scope = waymark_engine::TaskScope {
                run: run.clone(),
                task: name.clone(),
            };
            let record = views.task(&scope)?;
            let latest_try = match &record {
                Some(r) => r.latest_try,
                None => views
                    .task_attempt_entries(&scope)?
                    .iter()
                    .map(|(n, _, _)| *n)
                    .max()
                    .unwrap_or(1),
            };
            let status = record
                .as_ref()
                .map_or_else(|| "no status".to_string(), |r| task_status_name(&r.status));
            let attempt = waymark_engine::AttemptScope {
                task: scope.clone(),
                try_number: latest_try,
            };
            let entries = views.attempt_entries(&attempt)?;
            let task_state = views.task_state_entries(&scope)?;
            if as_json {
                let o = json!({
                    "kind": "task",
                    "tenant": run.tenant, "dag": run.dag, "run": run.run, "task": name,
                    "try": latest_try,
                    "status": record.as_ref().map(|r| task_status_name(&r.status)),
                    "state": json::named_bytes(&entries, |v| &v.value),
                    "task_state": json::named_bytes(&task_state, |v| &v.value),
                });
                if !out(&o.to_string())? {
                    return Ok(());
                }
                continue;
            }
            out(&format!("  task {name}  try {latest_try}  {status}"))?;
            for (k, v) in &entries {
                out(&format!("    {k} = {}", json::bytes(&v.value)))?;
            }
            for (k, v) in &task_state {
                out(&format!("    (task) {k} = {}", json::bytes(&v.value)))?;
            }
        }
        let shared = views.shared_entries(run)?;
        if as_json {
            if !shared.is_empty() {
                let o = json!({
                    "kind": "shared",
                    "tenant": run.tenant, "dag": run.dag, "run": run.run,
                    "shared": json::named_bytes(&shared, |v| &v.value),
                });
                if !out(&o.to_string())? {
                    return Ok(());
                }
            }
            continue;
        }
        for (k, v) in &shared {
            out(&format!("  (shared) {k} = {}", json::bytes(&v.value)))?;
        }
    }
    Ok(())
}

pub fn history(dir: &Path, run: &str, task: &str, key: Option<&str>, as_json: bool) -> Result<()> {
    let reader = LogReader::open(dir)?;
    let mut cursor = reader.cursor(Lsn(1));
    let mut current_try: Option<u32> = None;
    let mut found = false;
    while let Some(frame) = cursor.next_frame()? {
        for e in frame.decode()? {
            if e.run().run != run || e.task() != Some(task) {
                continue;
            }
            let is_clear = matches!(e.body, waymark_engine::EventBody::ClearTask { .. });
            if let Some(k) = key
                && e.key() != Some(k)
                && !is_clear
            {
                continue;
            }
            found = true;
            if as_json {
                if !out(&json::event(frame.lsn(), &e).to_string())? {
                    return Ok(());
                }
                continue;
            }
            if let Some(n) = e.try_number()
                && current_try != Some(n)
            {
                current_try = Some(n);
                out(&format!("attempt {n}"))?;
            }
            let what = match (e.key(), &e.body) {
                (Some(k), waymark_engine::EventBody::TaskPut { .. }) => {
                    format!("task state {k} {}", json::summary(&e))
                }
                (Some(k), _) => format!("{k} {}", json::summary(&e)),
                (None, waymark_engine::EventBody::ClearTask { .. }) => {
                    "attempt state of every try cleared (retry)".into()
                }
                (None, _) => json::summary(&e),
            };
            out(&format!(
                "  {:>6}  {}  {:<12} {what}",
                frame.lsn().0,
                json::time(e.ts_micros),
                e.kind()
            ))?;
        }
    }
    crate::log_end(&cursor)?;
    if !found {
        bail!(
            "no events for task {task:?} of run {run:?} in {}",
            dir.display()
        );
    }
    Ok(())
}
