//! diff, du, tail and salvage.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Result, bail};
use serde_json::json;
use waymark_engine::{Engine, Event, LogReader, Lsn, Options, RunScope, ViewReader};

use crate::state::{Until, replay};
use crate::{json, out};

/// A point given as an LSN, "now", or a time.
pub fn parse_point(text: &str) -> Result<Until> {
    if text == "now" {
        return Ok(Until::End);
    }
    if let Ok(n) = text.parse::<u64>() {
        return Ok(Until::Lsn(Lsn(n)));
    }
    Ok(Until::Time(crate::filter::parse_time(text)?))
}

/// Every piece of state, flattened: "(what) run/task#try key" → value.
fn flatten(views: &ViewReader, runs: &[RunScope]) -> Result<BTreeMap<String, String>> {
    let mut m = BTreeMap::new();
    for run in runs {
        let r = format!("{}/{}/{}", run.tenant, run.dag, run.run);
        // Every task with a status, attempt state or task state.
        for task in views.task_names(run)? {
            let scope = waymark_engine::TaskScope {
                run: run.clone(),
                task: task.clone(),
            };
            if let Some(record) = views.task(&scope)? {
                m.insert(
                    format!("status {r}/{task}"),
                    format!("try {} {:?}", record.latest_try, record.status),
                );
            }
            for (k, v) in views.task_state_entries(&scope)? {
                m.insert(
                    format!("task_state {r}/{task} {k}"),
                    json::bytes(&v.value).to_string(),
                );
            }
            for (n, k, v) in views.task_attempt_entries(&scope)? {
                m.insert(
                    format!("state {r}/{task}#{n} {k}"),
                    json::bytes(&v.value).to_string(),
                );
            }
        }
        for (k, v) in views.shared_entries(run)? {
            m.insert(format!("shared {r} {k}"), json::bytes(&v.value).to_string());
        }
    }
    Ok(m)
}

pub fn diff(dir: &Path, from: &str, to: &str, run: Option<&str>, as_json: bool) -> Result<()> {
    let a = replay(dir, parse_point(from)?, run, None)?;
    let b = replay(dir, parse_point(to)?, run, None)?;
    let runs: Vec<RunScope> = a.runs.union(&b.runs).cloned().collect();
    let before = flatten(&a.engine.views(), &runs)?;
    let after = flatten(&b.engine.views(), &runs)?;
    let mut changes = 0;
    for (k, v) in &after {
        let change = match before.get(k) {
            None => Some(("added", None, Some(v))),
            Some(old) if old != v => Some(("changed", Some(old), Some(v))),
            _ => None,
        };
        if let Some((what, old, new)) = change {
            changes += 1;
            emit(as_json, what, k, old, new)?;
        }
    }
    for (k, v) in &before {
        if !after.contains_key(k) {
            changes += 1;
            emit(as_json, "removed", k, Some(v), None)?;
        }
    }
    if changes == 0 && !as_json {
        out("no changes")?;
    }
    Ok(())
}

fn emit(
    as_json: bool,
    what: &str,
    key: &str,
    old: Option<&String>,
    new: Option<&String>,
) -> Result<bool> {
    if as_json {
        let (scope, rest) = key.split_once(' ').unwrap_or((key, ""));
        return out(
            &json!({"change": what, "view": scope, "what": rest, "before": old, "after": new})
                .to_string(),
        );
    }
    let sign = match what {
        "added" => "+",
        "removed" => "-",
        _ => "~",
    };
    match (old, new) {
        (Some(o), Some(n)) => out(&format!("{sign} {key}: {o} -> {n}")),
        (None, Some(n)) => out(&format!("{sign} {key} = {n}")),
        (Some(o), None) => out(&format!("{sign} {key} (was {o})")),
        (None, None) => Ok(true),
    }
}

/// Bytes an event adds to the log, roughly: its names, key and values.
fn event_bytes(e: &Event) -> u64 {
    let run = e.run();
    let mut n = run.tenant.len() + run.dag.len() + run.run.len();
    n += e.task().map_or(0, str::len) + e.key().map_or(0, str::len);
    n += match &e.body {
        waymark_engine::EventBody::Put { value, meta, .. } => value.len() + meta.len(),
        waymark_engine::EventBody::TaskPut { value, .. }
        | waymark_engine::EventBody::SharedPut { value, .. } => value.len(),
        _ => 0,
    };
    n as u64
}

pub fn du(dir: &Path, as_json: bool) -> Result<()> {
    let reader = LogReader::open(dir)?;
    let mut log: BTreeMap<RunScope, u64> = BTreeMap::new();
    let mut task_log: BTreeMap<(RunScope, String), u64> = BTreeMap::new();
    let mut cursor = reader.cursor(Lsn(1));
    while let Some(frame) = cursor.next_frame()? {
        let events = frame.decode()?;
        // Frame overhead shared out over the batch's events.
        let overhead =
            (frame.payload_len() as u64).saturating_sub(events.iter().map(event_bytes).sum());
        let share = overhead / events.len().max(1) as u64;
        for e in &events {
            *log.entry(e.run().clone()).or_default() += event_bytes(e) + share;
            if let Some(task) = e.task() {
                *task_log
                    .entry((e.run().clone(), task.to_string()))
                    .or_default() += event_bytes(e) + share;
            }
        }
    }
    crate::log_end(&cursor)?;
    let replayed = replay(dir, Until::End, None, None)?;
    let views = replayed.engine.views();
    let sizes = views.sizes()?;
    // Live bytes per task: its attempt state (every try) and task state.
    let mut task_rows: Vec<(RunScope, String, u64, u64)> = Vec::new();
    for ((run, task), l) in &task_log {
        let scope = waymark_engine::TaskScope {
            run: run.clone(),
            task: task.clone(),
        };
        let live: u64 = views
            .task_attempt_entries(&scope)?
            .iter()
            .map(|(_, k, v)| (k.len() + v.value.len() + v.meta.len()) as u64)
            .chain(
                views
                    .task_state_entries(&scope)?
                    .iter()
                    .map(|(k, v)| (k.len() + v.value.len()) as u64),
            )
            .sum();
        task_rows.push((run.clone(), task.clone(), *l, live));
    }
    task_rows.sort_by_key(|r| std::cmp::Reverse(r.2 + r.3));
    let mut rows: Vec<(RunScope, u64, u64)> = log
        .iter()
        .map(|(r, l)| (r.clone(), *l, sizes.by_run.get(r).copied().unwrap_or(0)))
        .collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.1 + r.2));
    let mut tenants: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for (r, l, s) in &rows {
        let t = tenants.entry(r.tenant.clone()).or_default();
        t.0 += l;
        t.1 += s;
    }
    let mut tenant_rows: Vec<_> = tenants.into_iter().collect();
    tenant_rows.sort_by_key(|t| std::cmp::Reverse(t.1.0 + t.1.1));
    if as_json {
        for (t, (l, s)) in &tenant_rows {
            out(&json!({"tenant": t, "log_bytes": l, "live_bytes": s}).to_string())?;
        }
        for (r, l, s) in &rows {
            out(&json!({"tenant": r.tenant, "dag": r.dag, "run": r.run, "log_bytes": l, "live_bytes": s}).to_string())?;
        }
        for (r, t, l, s) in &task_rows {
            out(&json!({"tenant": r.tenant, "dag": r.dag, "run": r.run, "task": t, "log_bytes": l, "live_bytes": s}).to_string())?;
        }
        return Ok(());
    }
    let human = |b: u64| {
        if b >= 1 << 20 {
            format!("{:.1} MiB", b as f64 / (1 << 20) as f64)
        } else if b >= 1 << 10 {
            format!("{:.1} KiB", b as f64 / 1024.0)
        } else {
            format!("{b} B")
        }
    };
    let mut t = comfy_table::Table::new();
    t.load_style(comfy_table::presets::UTF8_FULL_CONDENSED);
    t.set_header(["tenant", "dag", "run", "task", "log", "live state"]);
    for (tenant, (l, s)) in &tenant_rows {
        t.add_row([
            tenant.clone(),
            "*".into(),
            "*".into(),
            "*".into(),
            human(*l),
            human(*s),
        ]);
    }
    for (r, l, s) in &rows {
        t.add_row([
            r.tenant.clone(),
            r.dag.clone(),
            r.run.clone(),
            "*".into(),
            human(*l),
            human(*s),
        ]);
    }
    for (r, task, l, s) in &task_rows {
        t.add_row([
            r.tenant.clone(),
            r.dag.clone(),
            r.run.clone(),
            task.clone(),
            human(*l),
            human(*s),
        ]);
    }
    out(&t.to_string())?;
    out(
        "live state: bytes the views store (records with their LSN and time) for tenants and runs; keys and values for tasks",
    )?;
    Ok(())
}

fn line(lsn: Lsn, e: &Event, as_json: bool) -> String {
    if as_json {
        json::event(lsn, e).to_string()
    } else {
        format!(
            "{:>8}  {}  {:<18}  {}/{}  {}  {}",
            lsn.0,
            json::time(e.ts_micros),
            e.kind(),
            e.run().run,
            e.task().unwrap_or("-"),
            e.key().unwrap_or(""),
            json::summary(e)
        )
    }
}

pub fn tail(dir: &Path, lines: usize, follow: bool, as_json: bool) -> Result<()> {
    let reader = LogReader::open(dir)?;
    let mut cursor = reader.cursor(Lsn(1));
    let mut last: std::collections::VecDeque<(Lsn, Event)> = std::collections::VecDeque::new();
    while let Some(frame) = cursor.next_frame()? {
        let lsn = frame.lsn();
        for e in frame.decode()? {
            last.push_back((lsn, e));
            if last.len() > lines {
                last.pop_front();
            }
        }
    }
    crate::log_end(&cursor)?;
    for (lsn, e) in &last {
        if !out(&line(*lsn, e, as_json))? {
            return Ok(());
        }
    }
    if !follow {
        return Ok(());
    }
    loop {
        // The cursor picks up frames written since it stopped.
        match cursor.next_frame()? {
            Some(frame) => {
                let lsn = frame.lsn();
                for e in frame.decode()? {
                    if !out(&line(lsn, &e, as_json))? {
                        return Ok(());
                    }
                }
            }
            None => std::thread::sleep(std::time::Duration::from_millis(100)),
        }
    }
}

pub fn salvage(dir: &Path, out_dir: &Path) -> Result<()> {
    let reader = LogReader::open(dir)?;
    let first = reader.segments()?.first().map(|s| s.0);
    if first.is_some_and(|f| f != Lsn(1)) {
        bail!(
            "{}: the log does not start at LSN 1 (retention); salvage copies from LSN 1",
            dir.display()
        );
    }
    crate::state::new_out_dir(out_dir)?;
    let engine = Engine::open_with(
        Arc::new(waymark_engine::storage::FsStorage),
        out_dir,
        Options {
            // The batches passed the writer's own limits, which may have
            // been raised.
            limits: waymark_engine::Limits::format_max(),
            ..Options::default()
        },
    )?;
    let mut cursor = reader.cursor(Lsn(1));
    let mut copied = 0u64;
    let stop = loop {
        match cursor.next_frame() {
            Ok(Some(frame)) => match frame.decode() {
                Ok(events) => {
                    engine.append(events)?;
                    copied += 1;
                }
                Err(e) => {
                    break Some(format!(
                        "{} offset {}: {e}",
                        frame.segment().display(),
                        frame.offset()
                    ));
                }
            },
            Ok(None) => {
                break cursor.tail().and_then(|t| {
                    t.invalid.clone().map(|r| {
                        format!(
                            "{} offset {}: {r} (torn tail)",
                            t.segment.display(),
                            t.offset
                        )
                    })
                });
            }
            Err(e) => break Some(e.to_string()),
        }
    };
    engine.close()?;
    out(&format!(
        "copied {copied} batches (LSN 1 ..= {copied}) into {}",
        out_dir.display()
    ))?;
    match stop {
        Some(why) => {
            let total: u64 = waymark_engine::inspect::segments(dir)?
                .iter()
                .map(|s| s.bytes)
                .sum();
            out(&format!("dropped everything from {why}"))?;
            out(&format!(
                "(the source log holds {total} bytes of segments; only the readable prefix was copied)"
            ))?;
        }
        None => {
            out("dropped nothing: the log was readable to its end")?;
        }
    }
    Ok(())
}
