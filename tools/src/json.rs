//! Events as JSON objects: the stable shape of `dump --json` and `export`.
//!
//! Fields: `lsn`, `ts` (RFC 3339), `kind`, and where they apply `tenant`,
//! `dag`, `run`, `task`, `try`, `key`; then the event's own fields. A value
//! is `{"len": N, "text": "..."}` when it is valid UTF-8, else
//! `{"len": N, "base64": "..."}`.

use base64::Engine as _;
use serde_json::{Map, Value, json};
use waymark_engine::{Event, EventBody, Lsn, TaskStatus};

/// A byte value as JSON.
/// Named byte values as one JSON object, each value as [`bytes`] shows it.
pub fn named_bytes<V>(entries: &[(String, V)], value: impl Fn(&V) -> &[u8]) -> Value {
    Value::Object(
        entries
            .iter()
            .map(|(k, v)| (k.clone(), bytes(value(v))))
            .collect(),
    )
}

pub fn bytes(v: &[u8]) -> Value {
    match std::str::from_utf8(v) {
        Ok(text) => json!({"len": v.len(), "text": text}),
        Err(_) => json!({
            "len": v.len(),
            "base64": base64::engine::general_purpose::STANDARD.encode(v),
        }),
    }
}

/// A timestamp in microseconds as RFC 3339.
pub fn time(micros: i64) -> String {
    jiff::Timestamp::from_microsecond(micros)
        .map_or_else(|_| format!("@{micros}us"), |t| t.to_string())
}

fn task_status(s: &TaskStatus) -> Value {
    match s {
        TaskStatus::Succeeded { result } => json!({"status": s.name(), "result": bytes(result)}),
        TaskStatus::Failed { error, kind } => {
            json!({"status": s.name(), "error": error, "error_kind": kind})
        }
        _ => json!({"status": s.name()}),
    }
}

/// One event of batch `lsn` as a JSON object.
pub fn event(lsn: Lsn, e: &Event) -> Value {
    let mut o = Map::new();
    o.insert("lsn".into(), json!(lsn.0));
    o.insert("ts".into(), json!(time(e.ts_micros)));
    o.insert("kind".into(), json!(e.kind()));
    let run = e.run();
    o.insert("tenant".into(), json!(run.tenant));
    o.insert("dag".into(), json!(run.dag));
    o.insert("run".into(), json!(run.run));
    if let Some(task) = e.task() {
        o.insert("task".into(), json!(task));
    }
    if let Some(n) = e.try_number() {
        o.insert("try".into(), json!(n));
    }
    if let Some(key) = e.key() {
        o.insert("key".into(), json!(key));
    }
    match &e.body {
        EventBody::Put { value, meta, .. } => {
            o.insert("value".into(), bytes(value));
            if !meta.is_empty() {
                o.insert("meta".into(), bytes(meta));
            }
        }
        EventBody::TaskPut { value, .. } => {
            o.insert("value".into(), bytes(value));
        }
        EventBody::SharedPut {
            value, immutable, ..
        } => {
            o.insert("value".into(), bytes(value));
            o.insert("immutable".into(), json!(immutable));
        }
        EventBody::TaskStatus { status, worker, .. } => {
            if let Value::Object(s) = task_status(status) {
                o.extend(s);
            }
            o.insert("worker".into(), json!(worker));
        }
        EventBody::RunStatus { status, parent, .. } => {
            o.insert("status".into(), json!(status.name()));
            if let Some(p) = parent {
                o.insert(
                    "parent".into(),
                    json!({"tenant": p.run.tenant, "dag": p.run.dag, "run": p.run.run, "task": p.task}),
                );
            }
        }
        EventBody::Checkpoint { name, .. }
        | EventBody::RestoreCheckpoint { name, .. }
        | EventBody::DeleteCheckpoint { name, .. } => {
            o.insert("checkpoint".into(), json!(name));
        }
        EventBody::Delete { .. }
        | EventBody::ClearTask { .. }
        | EventBody::TaskDelete { .. }
        | EventBody::PurgeRun { .. } => {}
    }
    Value::Object(o)
}

/// A one-line human description of an event's own fields.
pub fn summary(e: &Event) -> String {
    let text = |v: &[u8]| match std::str::from_utf8(v) {
        Ok(t) if t.len() <= 60 => format!("{t:?}"),
        Ok(t) => format!(
            "{:?}… ({} bytes)",
            t.chars().take(57).collect::<String>(),
            v.len()
        ),
        Err(_) => format!("<{} bytes, binary>", v.len()),
    };
    match &e.body {
        EventBody::Put { value, .. } | EventBody::TaskPut { value, .. } => {
            format!("= {}", text(value))
        }
        EventBody::SharedPut {
            value, immutable, ..
        } => {
            format!(
                "= {}{}",
                text(value),
                if *immutable { " (immutable)" } else { "" }
            )
        }
        EventBody::TaskStatus { status, worker, .. } => match status {
            TaskStatus::Succeeded { result } => format!("succeeded {} by {worker}", text(result)),
            TaskStatus::Failed { error, kind } => format!("failed ({kind}): {error} by {worker}"),
            other => format!("{} by {worker}", other.name()),
        },
        EventBody::RunStatus { status, .. } => status.name().to_string(),
        EventBody::Checkpoint { name, .. }
        | EventBody::RestoreCheckpoint { name, .. }
        | EventBody::DeleteCheckpoint { name, .. } => name.clone(),
        _ => String::new(),
    }
}
