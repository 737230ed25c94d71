//! The kernel's records as the frozen dataclasses of `waymark._types`.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple};
use waymark_kernel::engine::{AttemptRecord, Codec, EventBody, ParentRef, RunScope};
use waymark_kernel::{
    CheckpointInfo, Entry, LoggedEvent, RunInfo, RunRef, RunState, TaskRecord, TaskStatus,
};

use crate::refs::{PyRunRef, PyTaskRef};
use crate::value::{decode, decode_opt};

/// The `_types` module's record classes, by name.
pub(crate) fn record<'py>(
    py: Python<'py>,
    class: &str,
    fields: Bound<'py, PyDict>,
) -> PyResult<Bound<'py, PyAny>> {
    TYPES.class(py, class)?.call((), Some(&fields))
}

/// The `waymark._types` classes, looked up once each.
static TYPES: Types = Types(PyOnceLock::new());

/// A cache of the record classes by name.
struct Types(PyOnceLock<Py<PyDict>>);

impl Types {
    fn class<'py>(&self, py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyAny>> {
        let cache = self.0.get_or_init(py, || PyDict::new(py).unbind()).bind(py);
        if let Some(c) = cache.get_item(name)? {
            return Ok(c);
        }
        let c = py.import("waymark._types")?.getattr(name)?;
        cache.set_item(name, &c)?;
        Ok(c)
    }
}

/// The fields of a task status, as the records hold them.
fn status_fields(py: Python<'_>, status: &TaskStatus, d: &Bound<'_, PyDict>) -> PyResult<()> {
    d.set_item("status", status.name())?;
    match status {
        TaskStatus::Succeeded { result } => d.set_item("result", decode_opt(py, result)?)?,
        TaskStatus::Failed { error, kind } => {
            d.set_item("error", error)?;
            d.set_item("kind", kind)?;
        }
        _ => {}
    }
    Ok(())
}

fn attempt<'py>(py: Python<'py>, a: &AttemptRecord) -> PyResult<Bound<'py, PyAny>> {
    let d = PyDict::new(py);
    d.set_item("try_number", a.try_number)?;
    status_fields(py, &a.status, &d)?;
    record(py, "Attempt", d)
}

pub(crate) fn task_record<'py>(py: Python<'py>, r: &TaskRecord) -> PyResult<Bound<'py, PyAny>> {
    let d = PyDict::new(py);
    d.set_item("latest_try", r.latest_try)?;
    d.set_item("status", r.status.name())?;
    let attempts = r
        .attempts
        .iter()
        .map(|a| attempt(py, a))
        .collect::<PyResult<Vec<_>>>()?;
    d.set_item("attempts", PyTuple::new(py, attempts)?)?;
    d.set_item("created_micros", r.created_micros)?;
    d.set_item("updated_micros", r.updated_micros)?;
    d.set_item("lsn", r.lsn)?;
    record(py, "TaskRecord", d)
}

pub(crate) fn run_state<'py>(py: Python<'py>, s: &RunState) -> PyResult<Bound<'py, PyAny>> {
    let tasks = s
        .tasks
        .iter()
        .map(|t| {
            let d = PyDict::new(py);
            d.set_item(
                "ti",
                PyTaskRef {
                    inner: t.ti.clone(),
                },
            )?;
            status_fields(py, &t.status, &d)?;
            d.set_item("interrupted", t.interrupted)?;
            record(py, "TaskResume", d)
        })
        .collect::<PyResult<Vec<_>>>()?;
    let d = PyDict::new(py);
    d.set_item("status", s.status.name())?;
    d.set_item("tasks", PyTuple::new(py, tasks)?)?;
    d.set_item("recorded", s.recorded.map(|l| l.0))?;
    record(py, "RunState", d)
}

/// The fields of an `Entry` (and of a `Pulled`, which is one).
pub(crate) fn entry_fields(py: Python<'_>, e: &Entry, d: &Bound<'_, PyDict>) -> PyResult<()> {
    d.set_item("value", decode(py, &e.value)?)?;
    d.set_item("metadata", decode_opt(py, &e.meta)?)?;
    d.set_item("lsn", e.lsn.0)?;
    d.set_item("ts_micros", e.ts_micros)
}

/// A checkpoint as listed.
pub(crate) fn checkpoint<'py>(py: Python<'py>, c: &CheckpointInfo) -> PyResult<Bound<'py, PyAny>> {
    let d = PyDict::new(py);
    d.set_item("name", &c.name)?;
    d.set_item("lsn", c.lsn.0)?;
    d.set_item("ts_micros", c.ts_micros)?;
    d.set_item("size_bytes", c.size_bytes)?;
    d.set_item("checksum", c.checksum)?;
    record(py, "CheckpointInfo", d)
}

/// A run as listed.
pub(crate) fn run_info<'py>(py: Python<'py>, r: &RunInfo) -> PyResult<Bound<'py, PyAny>> {
    let d = PyDict::new(py);
    d.set_item(
        "run",
        PyRunRef {
            inner: r.run.clone(),
        },
    )?;
    d.set_item("status", r.record.status.name())?;
    d.set_item("created_micros", r.record.created_micros)?;
    d.set_item("updated_micros", r.record.updated_micros)?;
    let counts = &r.record.task_counts;
    let c = PyDict::new(py);
    c.set_item("scheduled", counts.scheduled)?;
    c.set_item("running", counts.running)?;
    c.set_item("succeeded", counts.succeeded)?;
    c.set_item("failed", counts.failed)?;
    c.set_item("interrupted", counts.interrupted)?;
    c.set_item("cancelled", counts.cancelled)?;
    d.set_item("task_counts", c)?;
    match &r.record.parent {
        Some(p) => d.set_item("parent", parent_ref(p)?)?,
        None => d.set_item("parent", py.None())?,
    }
    record(py, "RunInfo", d)
}

/// The task of another run that started a sub-workflow (at try 1).
fn parent_ref(p: &ParentRef) -> PyResult<PyTaskRef> {
    Ok(PyTaskRef {
        inner: run_ref(&p.run)?
            .task(p.task.clone())
            .map_err(crate::errors::to_py)?,
    })
}

fn run_ref(scope: &RunScope) -> PyResult<RunRef> {
    RunRef::new(scope.tenant.clone(), scope.dag.clone(), scope.run.clone())
        .map_err(crate::errors::to_py)
}

/// A stored value of an event, decompressed by its codec, as Python.
fn stored<'py>(py: Python<'py>, codec: Codec, bytes: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    match codec.decode(bytes) {
        Ok(plain) => decode_opt(py, &plain),
        // The log's checksums passed, so this is a codec the build lacks
        // or a bug; the caller sees the raw bytes rather than nothing.
        Err(_) => Ok(pyo3::types::PyBytes::new(py, bytes).into_any()),
    }
}

/// One event of the log: what the CLI's JSON export gives, as a
/// `LoggedEvent` (its kind's own fields in `data`).
pub(crate) fn event<'py>(py: Python<'py>, e: &LoggedEvent) -> PyResult<Bound<'py, PyAny>> {
    let ev = &e.event;
    let run = ev.run();
    let d = PyDict::new(py);
    d.set_item("lsn", e.lsn.0)?;
    d.set_item("kind", ev.kind())?;
    d.set_item("ts_micros", ev.ts_micros)?;
    d.set_item("tenant_id", &run.tenant)?;
    d.set_item("dag_name", &run.dag)?;
    d.set_item("dag_id", &run.run)?;
    d.set_item("task_id", ev.task())?;
    d.set_item("try_number", ev.try_number())?;
    let data = PyDict::new(py);
    match &ev.body {
        EventBody::Put {
            codec,
            key,
            value,
            meta,
            ..
        } => {
            data.set_item("key", key)?;
            data.set_item("value", stored(py, *codec, value)?)?;
            data.set_item("metadata", decode_opt(py, meta)?)?;
        }
        EventBody::Delete { key, .. } | EventBody::TaskDelete { key, .. } => {
            data.set_item("key", key)?;
        }
        EventBody::TaskPut {
            codec, key, value, ..
        } => {
            data.set_item("key", key)?;
            data.set_item("value", stored(py, *codec, value)?)?;
        }
        EventBody::TaskStatus { status, worker, .. } => {
            status_fields(py, status, &data)?;
            data.set_item("worker", worker)?;
        }
        EventBody::RunStatus { status, parent, .. } => {
            data.set_item("status", status.name())?;
            if let Some(p) = parent {
                data.set_item("parent", parent_ref(p)?)?;
            }
        }
        EventBody::Checkpoint { name, .. }
        | EventBody::RestoreCheckpoint { name, .. }
        | EventBody::DeleteCheckpoint { name, .. } => {
            data.set_item("name", name)?;
        }
        EventBody::SharedPut {
            codec,
            key,
            value,
            immutable,
            ..
        } => {
            data.set_item("key", key)?;
            data.set_item("value", stored(py, *codec, value)?)?;
            data.set_item("immutable", immutable)?;
        }
        EventBody::ClearTask { .. } | EventBody::PurgeRun { .. } => {}
    }
    d.set_item("data", data)?;
    record(py, "LoggedEvent", d)
}
