//! `waymark timeline`: a run's task attempts on a time axis.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde_json::json;
use waymark_engine::{EventBody, LogReader, Lsn, RunStatus, TaskStatus};

use crate::{json, out};

/// One task attempt's span.
#[derive(Debug, Clone)]
struct Span {
    task: String,
    try_number: u32,
    start: i64,
    end: Option<i64>,
    outcome: &'static str,
    detail: String,
}

/// What the timeline marks besides attempts.
#[derive(Debug)]
struct Mark {
    at: i64,
    what: String,
}

/// A time the run was paused: from its pause to its resume (or the end).
#[derive(Debug, Clone, Copy)]
struct Paused {
    start: i64,
    end: Option<i64>,
}

/// What a run's timeline shows.
struct Collected {
    spans: Vec<Span>,
    marks: Vec<Mark>,
    paused: Vec<Paused>,
    lo: i64,
    hi: i64,
}

fn collect(dir: &Path, run: &str) -> Result<Collected> {
    let reader = LogReader::open(dir)?;
    let mut cursor = reader.cursor(Lsn(1));
    let mut spans: BTreeMap<(String, u32), Span> = BTreeMap::new();
    let mut marks = Vec::new();
    let mut paused: Vec<Paused> = Vec::new();
    let (mut lo, mut hi) = (i64::MAX, i64::MIN);
    while let Some(frame) = cursor.next_frame()? {
        for e in frame.decode()? {
            if e.run().run != run {
                continue;
            }
            lo = lo.min(e.ts_micros);
            hi = hi.max(e.ts_micros);
            match &e.body {
                EventBody::TaskStatus {
                    attempt,
                    status,
                    worker,
                } => {
                    let key = (attempt.task.task.clone(), attempt.try_number);
                    let span = spans.entry(key).or_insert_with(|| Span {
                        task: attempt.task.task.clone(),
                        try_number: attempt.try_number,
                        start: e.ts_micros,
                        end: None,
                        outcome: "scheduled",
                        detail: String::new(),
                    });
                    if matches!(status, TaskStatus::Running) {
                        span.start = e.ts_micros;
                    }
                    span.outcome = status.name();
                    span.detail = match status {
                        TaskStatus::Failed { error, kind } => format!("{kind}: {error} ({worker})"),
                        _ => worker.clone(),
                    };
                    if !matches!(status, TaskStatus::Scheduled | TaskStatus::Running) {
                        span.end = Some(e.ts_micros);
                    }
                }
                EventBody::Checkpoint { name, .. } => marks.push(Mark {
                    at: e.ts_micros,
                    what: format!("checkpoint {name}"),
                }),
                EventBody::RestoreCheckpoint { name, .. } => marks.push(Mark {
                    at: e.ts_micros,
                    what: format!("restore {name}"),
                }),
                EventBody::ClearTask { task } => marks.push(Mark {
                    at: e.ts_micros,
                    what: format!("retry of {} (state cleared)", task.task),
                }),
                EventBody::RunStatus { status, .. } => {
                    let open = paused.last_mut().filter(|p| p.end.is_none());
                    match (status, open) {
                        (RunStatus::Paused, None) => {
                            paused.push(Paused {
                                start: e.ts_micros,
                                end: None,
                            });
                            marks.push(Mark {
                                at: e.ts_micros,
                                what: "run paused".into(),
                            });
                        }
                        (RunStatus::Paused, Some(_)) => {}
                        (status, Some(p)) => {
                            p.end = Some(e.ts_micros);
                            marks.push(Mark {
                                at: e.ts_micros,
                                what: match status {
                                    RunStatus::Running => "run resumed".into(),
                                    status => format!("run {status} (was paused)"),
                                },
                            });
                        }
                        (status, None) => marks.push(Mark {
                            at: e.ts_micros,
                            what: format!("run {status}"),
                        }),
                    }
                }
                _ => {}
            }
        }
    }
    crate::log_end(&cursor)?;
    if lo > hi {
        bail!("no events for run {run:?} in {}", dir.display());
    }
    let mut spans: Vec<Span> = spans.into_values().collect();
    spans.sort_by_key(|s| (s.start, s.try_number));
    Ok(Collected {
        spans,
        marks,
        paused,
        lo,
        hi,
    })
}

/// `to - from` in microseconds, without overflow: timestamps come from the
/// log and may be anything an `i64` holds.
fn micros_between(from: i64, to: i64) -> i128 {
    i128::from(to) - i128::from(from)
}

fn secs(micros: i128) -> String {
    format!("{:.3}s", micros as f64 / 1e6)
}

pub fn timeline(dir: &Path, run: &str, html: Option<&Path>, as_json: bool) -> Result<()> {
    let collected = collect(dir, run)?;
    let Collected {
        spans,
        marks,
        paused,
        lo,
        hi,
    } = &collected;
    let (lo, hi) = (*lo, *hi);
    if as_json {
        for s in spans {
            out(&json!({
                "kind": "attempt",
                "task": s.task, "try": s.try_number, "outcome": s.outcome,
                "start": json::time(s.start), "end": s.end.map(json::time),
                "detail": s.detail,
            })
            .to_string())?;
        }
        for p in paused {
            out(&json!({
                "kind": "paused",
                "start": json::time(p.start), "end": p.end.map(json::time),
            })
            .to_string())?;
        }
        return Ok(());
    }
    if let Some(path) = html {
        write_private(path, render_html(run, &collected).as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
        out(&format!(
            "wrote {} ({} attempts)",
            path.display(),
            spans.len()
        ))?;
        return Ok(());
    }
    const WIDTH: i64 = 50;
    // A run whose events share one timestamp still gets a width of one.
    let span = micros_between(lo, hi).max(1);
    let col = |t: i64| {
        usize::try_from(
            (micros_between(lo, t) * i128::from(WIDTH) / span).clamp(0, WIDTH as i128 - 1),
        )
        .expect("clamped to 0..WIDTH")
    };
    out(&format!(
        "run {run}: {} .. {} ({})",
        json::time(lo),
        json::time(hi),
        secs(micros_between(lo, hi))
    ))?;
    if !paused.is_empty() {
        let mut bar = vec![' '; WIDTH as usize];
        let mut total = 0i128;
        for p in paused {
            let end = p.end.unwrap_or(hi);
            total += micros_between(p.start, end);
            for c in bar.iter_mut().take(col(end) + 1).skip(col(p.start)) {
                *c = '=';
            }
        }
        out(&format!(
            "{:<16}     [{}] {:<11} {}",
            "(run)",
            bar.into_iter().collect::<String>(),
            "paused",
            secs(total)
        ))?;
    }
    for s in spans {
        let end = s.end.unwrap_or(hi);
        let (a, b) = (col(s.start), col(end).max(col(s.start)));
        let glyph = match s.outcome {
            "succeeded" => '█',
            "failed" => 'x',
            "interrupted" => '!',
            "cancelled" => '-',
            _ => '▒',
        };
        let mut bar = vec![' '; WIDTH as usize];
        for c in bar.iter_mut().take(b + 1).skip(a) {
            *c = glyph;
        }
        for m in marks {
            let c = col(m.at);
            if bar[c] == ' ' {
                bar[c] = '|';
            }
        }
        out(&format!(
            "{:<16} #{:<2} [{}] {:<11} {}",
            s.task,
            s.try_number,
            bar.into_iter().collect::<String>(),
            s.outcome,
            secs(micros_between(s.start, end))
        ))?;
    }
    for m in marks {
        out(&format!(
            "  | {} at +{}",
            m.what,
            secs(micros_between(lo, m.at))
        ))?;
    }
    Ok(())
}

/// Escapes text for HTML.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// One HTML file: inline CSS, no scripts or links to anything outside it.
fn render_html(run: &str, c: &Collected) -> String {
    let (spans, marks, lo, hi) = (&c.spans, &c.marks, c.lo, c.hi);
    let span = micros_between(lo, hi).max(1) as f64;
    let pct = |t: i64| micros_between(lo, t) as f64 * 100.0 / span;
    let mut rows = String::new();
    if !c.paused.is_empty() {
        rows.push_str("<div class=\"row\"><div class=\"label\">run</div><div class=\"lane\">");
        for p in &c.paused {
            let end = p.end.unwrap_or(hi);
            let left = pct(p.start);
            let width = (pct(end) - left).max(0.6);
            rows.push_str(&format!(
                "<div class=\"span paused\" style=\"left:{left:.3}%;width:{width:.3}%\" \
                 title=\"paused, {dur}\"></div>",
                dur = secs(micros_between(p.start, end)),
            ));
        }
        rows.push_str("</div></div>\n");
    }
    for s in spans {
        let end = s.end.unwrap_or(hi);
        let left = pct(s.start);
        let width = (pct(end) - left).max(0.6);
        rows.push_str(&format!(
            "<div class=\"row\"><div class=\"label\">{task} <span class=\"try\">#{n}</span></div>\
             <div class=\"lane\"><div class=\"span {o}\" style=\"left:{left:.3}%;width:{width:.3}%\" \
             title=\"{task} try {n}: {o}, {dur} — {detail}\"></div></div></div>\n",
            task = esc(&s.task),
            n = s.try_number,
            o = s.outcome,
            dur = secs(micros_between(s.start, end)),
            detail = esc(&s.detail),
        ));
    }
    let mut mark_html = String::new();
    for m in marks {
        mark_html.push_str(&format!(
            "<div class=\"mark\" style=\"left:{:.3}%\" title=\"{}\"></div>\n",
            pct(m.at),
            esc(&m.what)
        ));
    }
    let legend = [
        "succeeded",
        "failed",
        "interrupted",
        "cancelled",
        "running",
        "scheduled",
        "paused",
    ]
    .iter()
    .map(|o| format!("<span class=\"key\"><span class=\"span {o}\"></span>{o}</span>"))
    .collect::<String>();
    format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>waymark timeline: {run}</title>\n<style>\n\
body{{font:14px system-ui,sans-serif;margin:24px;color:#222}}\n\
h1{{font-size:18px}}\n\
.row{{display:flex;align-items:center;height:26px}}\n\
.label{{width:180px;text-align:right;padding-right:10px;white-space:nowrap;overflow:hidden}}\n\
.try{{color:#888}}\n\
.lane{{position:relative;flex:1;height:18px;background:#f3f3f3;border-radius:3px}}\n\
.span{{position:absolute;top:0;height:18px;border-radius:3px;min-width:3px}}\n\
.succeeded{{background:#2e9d4f}} .failed{{background:#d64545}} .interrupted{{background:#e8912d}}\n\
.cancelled{{background:#999}} .running{{background:#3b7dd8}} .scheduled{{background:#b9c8e6}}\n\
.paused{{background:repeating-linear-gradient(45deg,#c9b6e8,#c9b6e8 4px,#efe8f8 4px,#efe8f8 8px)}}\n\
.marks{{position:relative;margin-left:190px;height:0}}\n\
.mark{{position:absolute;top:-{h}px;height:{h}px;border-left:2px dashed #6a3fb5}}\n\
.legend{{margin-top:16px}} .key{{margin-right:14px}} .key .span{{position:relative;display:inline-block;width:14px;height:10px;margin-right:4px}}\n\
</style></head><body>\n<h1>Run {run}</h1>\n<p>{from} → {to} ({dur}). Bars are task attempts (hover for details); dashed lines mark checkpoints, restores, retries and run status changes; the run's row shows when it was paused.</p>\n\
{rows}<div class=\"marks\">{marks}</div>\n<div class=\"legend\">{legend}<span class=\"key\" style=\"border-left:2px dashed #6a3fb5;padding-left:4px\">checkpoint / restore / retry / run status</span></div>\n</body></html>\n",
        run = esc(run),
        from = json::time(lo),
        to = json::time(hi),
        dur = secs(micros_between(lo, hi)),
        rows = rows,
        marks = mark_html,
        legend = legend,
        h = (spans.len() + usize::from(!c.paused.is_empty())) * 26,
    )
}

/// Writes `bytes` to the file `path` (replacing a file that is there),
/// private (0600) when it creates it, and never through a symlink: the
/// page holds the run's task names and errors, and a symlink planted where
/// it goes would send them elsewhere.
fn write_private(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        bail!(
            "{} is a symlink; write the page to a file of its own",
            path.display()
        );
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(waymark_engine::storage::FILE_MODE)
        .open(path)?;
    file.write_all(bytes)?;
    Ok(())
}
