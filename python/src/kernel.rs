//! `Kernel`, `RunContext` and `Batch`: the kernel API in Python's idiom.
//!
//! Every call that can block (an append waits for its group's fsync; a
//! read may touch the disk) runs with the interpreter detached, so that
//! threads of one Python worker group their commits as Rust threads do.
//! Values are encoded before and decoded after, attached.

use std::sync::{Arc, Mutex, RwLock, Weak};

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};
use waymark_kernel::{
    At, Kernel, RunContext, RunStatus, TaskRef, WatchFilter,
    engine::{Compression, Durability, Lsn, Options},
};

use crate::errors::IntoPy;
use crate::records::{entry_fields, record, run_state, task_record};
use crate::refs::{PyTaskRef, run_of};
use crate::value::{decode, encode, encode_into, encode_opt};
use crate::watch::{PyWatch, WatchSlot};

/// The state store of one worker: a state directory opened by this
/// process (or an in-memory one for tests). Thread-safe; share one per
/// process. ``with Kernel.open(path) as kernel:`` syncs and closes it on
/// leaving.
#[pyclass(module = "waymark", name = "Kernel", frozen)]
pub(crate) struct PyKernel {
    /// `None` once closed.
    inner: RwLock<Option<Kernel>>,
    /// The contexts made on it, each holding a clone of the kernel that
    /// `close` takes back.
    contexts: Mutex<Vec<Weak<Slot>>>,
    /// The watches started on it, each with a thread holding a clone.
    watches: Mutex<Vec<Weak<WatchSlot>>>,
    worker: String,
    /// What it was opened on, for `repr`.
    place: String,
}

/// A context's kernel API: `None` once its kernel is closed.
type Slot = RwLock<Option<RunContext>>;

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    // A poisoned lock here means a panic while it was held, which the
    // binding never does while holding one; the value is still whole.
    l.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

fn lock<T>(l: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    l.lock().unwrap_or_else(|e| e.into_inner())
}

/// The error of a call on a closed kernel.
fn closed() -> waymark_kernel::Error {
    waymark_kernel::Error::Engine(waymark_kernel::engine::Error::Closed)
}

impl PyKernel {
    fn new(kernel: Kernel, place: String) -> PyKernel {
        PyKernel {
            worker: kernel.worker_id().to_owned(),
            inner: RwLock::new(Some(kernel)),
            contexts: Mutex::new(Vec::new()),
            watches: Mutex::new(Vec::new()),
            place,
        }
    }

    /// Runs `f` on the kernel, or fails with `Closed` once it is closed.
    fn with<T>(
        &self,
        f: impl FnOnce(&Kernel) -> waymark_kernel::Result<T>,
    ) -> waymark_kernel::Result<T> {
        match read(&self.inner).as_ref() {
            Some(k) => f(k),
            None => Err(closed()),
        }
    }

    /// A context for `ti`, registered so that `close` can take it back.
    /// Taken with the interpreter detached: `close` holds the registry's
    /// lock while it waits for calls in flight, which need the interpreter
    /// back to finish.
    fn context_slot(&self, py: Python<'_>, ti: &TaskRef) -> Arc<Slot> {
        py.detach(|| {
            // The registry's lock first, then the kernel's, as `close`
            // takes them: a context made while `close` runs is either
            // registered before it (and emptied by it) or made on the
            // closed kernel.
            let mut contexts = lock(&self.contexts);
            let slot = Arc::new(RwLock::new(
                read(&self.inner).as_ref().map(|k| k.context(ti.clone())),
            ));
            register(&mut contexts, &slot);
            slot
        })
    }
}

/// Adds `slot` to a registry of weak references, first forgetting the
/// slots gone since when the list would grow: it stays within twice the
/// live ones.
fn register<T>(registry: &mut Vec<Weak<T>>, slot: &Arc<T>) {
    if registry.len() == registry.capacity() {
        registry.retain(|w| w.strong_count() > 0);
    }
    registry.push(Arc::downgrade(slot));
}

/// A Python list of `items`, each made by `make`.
fn list_of<'py, T>(
    py: Python<'py>,
    items: &[T],
    make: impl Fn(Python<'py>, &T) -> PyResult<Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyList>> {
    let out = PyList::empty(py);
    for item in items {
        out.append(make(py, item)?)?;
    }
    Ok(out)
}

/// Microseconds since the Unix epoch of an `int` (taken as such) or a
/// `datetime` (naive ones are local time, as `datetime.timestamp` says).
fn micros(t: &Bound<'_, PyAny>) -> PyResult<i64> {
    if let Ok(us) = t.extract::<i64>() {
        return Ok(us);
    }
    let secs: f64 = t
        .call_method0("timestamp")
        .and_then(|s| s.extract())
        .map_err(|_| {
            pyo3::exceptions::PyTypeError::new_err(
                "a time is a datetime or microseconds since the Unix epoch (int)",
            )
        })?;
    Ok((secs * 1e6).round() as i64)
}

/// `default`, or `None` if there is none.
fn or_none<'py>(py: Python<'py>, default: Option<Bound<'py, PyAny>>) -> Bound<'py, PyAny> {
    default.unwrap_or_else(|| py.None().into_bound(py))
}

/// Stored entries as a dictionary of Python values, in their order.
fn dict_of(py: Python<'_>, entries: Vec<(String, Vec<u8>)>) -> PyResult<Bound<'_, PyDict>> {
    let d = PyDict::new(py);
    for (k, v) in entries {
        d.set_item(k, decode(py, &v)?)?;
    }
    Ok(d)
}

/// A run status by its name.
fn run_status(name: &str) -> PyResult<RunStatus> {
    Ok(match name {
        "created" => RunStatus::Created,
        "running" => RunStatus::Running,
        "succeeded" => RunStatus::Succeeded,
        "failed" => RunStatus::Failed,
        "cancelled" => RunStatus::Cancelled,
        "paused" => RunStatus::Paused,
        _ => {
            return Err(crate::errors::invalid(format!(
                "unknown run status {name:?}: use created, running, succeeded, failed, cancelled or paused"
            )));
        }
    })
}

#[pymethods]
impl PyKernel {
    /// Opens (or creates) the state directory ``path``. Only one process
    /// may hold a directory: a second gets ``LockedError``.
    ///
    /// ``durability``: ``"sync"`` (the default: a write returns once its
    /// group's fdatasync has, and survives any crash), ``"periodic"``
    /// (returns after the write; synced within ``sync_interval`` seconds, so
    /// a crash may lose the writes of the last interval, always whole
    /// batches) or ``"none"`` (scratch state: a crash may lose any suffix).
    /// ``compress=True`` stores values of 1 KiB and more zstd-compressed,
    /// transparently to every reader.
    #[staticmethod]
    #[pyo3(signature = (path, *, worker_id = None, durability = "sync", sync_interval = 0.01, compress = false))]
    fn open(
        py: Python<'_>,
        path: std::path::PathBuf,
        worker_id: Option<String>,
        durability: &str,
        sync_interval: f64,
        compress: bool,
    ) -> PyResult<PyKernel> {
        let durability = match durability {
            "sync" => Durability::Sync,
            "periodic" => Durability::Periodic(
                std::time::Duration::try_from_secs_f64(sync_interval)
                    .ok()
                    .filter(|d| !d.is_zero())
                    .ok_or_else(|| {
                        crate::errors::invalid(format!(
                            "sync_interval must be a positive number of seconds; got {sync_interval}"
                        ))
                    })?,
            ),
            "none" => Durability::None,
            other => {
                return Err(crate::errors::invalid(format!(
                    "unknown durability {other:?}: use sync, periodic or none"
                )));
            }
        };
        let options = Options {
            durability,
            compression: compress.then(Compression::default),
            ..Options::default()
        };
        let place = path.display().to_string();
        let inner = py
            .detach(|| {
                let mut builder = Kernel::builder().options(options);
                if let Some(w) = worker_id {
                    builder = builder.worker_id(w);
                }
                builder.open(&path)
            })
            .py_err()?;
        Ok(PyKernel::new(inner, place))
    }

    /// A kernel whose state lives in memory (the same engine on a
    /// simulated disk): for tests; nothing survives it.
    #[staticmethod]
    #[pyo3(signature = (*, worker_id = None))]
    fn in_memory(worker_id: Option<String>) -> PyResult<PyKernel> {
        let mut builder = Kernel::builder();
        if let Some(w) = worker_id {
            builder = builder.worker_id(w);
        }
        Ok(PyKernel::new(
            builder.in_memory().py_err()?,
            "memory://".into(),
        ))
    }

    /// Opens by URL: ``file:///path/to/dir`` or ``memory://``.
    #[staticmethod]
    fn open_url(py: Python<'_>, url: String) -> PyResult<PyKernel> {
        let inner = py.detach(|| Kernel::open_url(&url)).py_err()?;
        Ok(PyKernel::new(inner, url))
    }

    /// The state API of attempt ``ti`` (the same as ``RunContext(ti,
    /// kernel)``).
    fn context(slf: &Bound<'_, PyKernel>, ti: Bound<'_, PyTaskRef>) -> PyRunContext {
        PyRunContext::build(slf, ti)
    }

    /// The id recorded with every status change this kernel makes.
    #[getter]
    fn worker_id(&self) -> &str {
        &self.worker
    }

    /// Syncs everything written so far (under the default durability every
    /// acknowledged write is synced already). Returns the last LSN.
    fn flush(&self, py: Python<'_>) -> PyResult<u64> {
        Ok(py.detach(|| self.with(|k| k.flush())).py_err()?.0)
    }

    /// Syncs and closes; later calls raise ``ClosedError``.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| {
            // The registries' locks, then the kernel's (the order every
            // registration takes them in): nothing registers between the
            // kernel's removal and the taking of the lists.
            let (kernel, contexts, watches) = {
                let mut contexts = lock(&self.contexts);
                let mut watches = lock(&self.watches);
                let kernel = write(&self.inner).take();
                (
                    kernel,
                    std::mem::take(&mut *contexts),
                    std::mem::take(&mut *watches),
                )
            };
            // Closing twice is closing once.
            let Some(kernel) = kernel else {
                return Ok(());
            };
            // The watches first: a loop over one ends cleanly rather than
            // with the closed engine's error. Each is joined outside its
            // slot's lock.
            for slot in watches.iter().filter_map(Weak::upgrade) {
                let watch = lock(&slot).take();
                drop(watch);
            }
            let closed = kernel.close();
            // Every context lets go of its clone, so that dropping this
            // last one stops the engine's threads and releases the
            // directory: the same process may open it again at once.
            for slot in contexts.iter().filter_map(Weak::upgrade) {
                write(&slot).take();
            }
            drop(kernel);
            closed
        })
        .py_err()
    }

    /// The kernel's and the engine's counters, as a dictionary:
    /// ``batches``, ``conflicts``, ``durable_lsn``, and for a kernel on the
    /// engine ``groups`` (group commits: batches written and synced
    /// together count one), ``fsyncs``,
    /// ``log_bytes``, ``memtable_bytes``, ``memtable_events``,
    /// ``replayed_events`` (by the open) and ``recovery_ms``.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = py.detach(|| self.with(|k| Ok(k.stats()))).py_err()?;
        let d = PyDict::new(py);
        d.set_item("batches", s.batches)?;
        d.set_item("conflicts", s.conflicts)?;
        d.set_item("durable_lsn", s.durable_lsn.0)?;
        if let Some(e) = s.engine {
            d.set_item("groups", e.groups)?;
            d.set_item("fsyncs", e.fsyncs)?;
            d.set_item("log_bytes", e.log_bytes)?;
            d.set_item("memtable_bytes", e.memtable_bytes)?;
            d.set_item("memtable_events", e.memtable_events)?;
            d.set_item("replayed_events", e.replayed_events)?;
            d.set_item("recovery_ms", e.recovery_duration.as_secs_f64() * 1e3)?;
        }
        Ok(d)
    }

    fn __enter__(slf: Py<PyKernel>) -> Py<PyKernel> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, PyTuple>) -> PyResult<bool> {
        self.close(py)?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        format!("Kernel({:?})", self.place)
    }

    // The lifecycle of task attempts.

    /// The task's lifecycle record (every attempt's status), or ``None`` if
    /// it has none.
    fn task<'py>(&self, py: Python<'py>, ti: PyRef<'py, PyTaskRef>) -> PyResult<Bound<'py, PyAny>> {
        let ti = &ti.inner;
        match py.detach(|| self.with(|k| k.task(ti))).py_err()? {
            Some(r) => task_record(py, &r),
            None => Ok(py.None().into_bound(py)),
        }
    }

    /// Marks attempt ``ti`` scheduled. Returns the LSN.
    fn schedule(&self, py: Python<'_>, ti: PyRef<'_, PyTaskRef>) -> PyResult<u64> {
        let ti = &ti.inner;
        Ok(py.detach(|| self.with(|k| k.schedule(ti))).py_err()?.0)
    }

    /// Marks attempt ``ti`` running. Of racing starts of one attempt,
    /// exactly one succeeds; the others raise ``InvalidTransitionError``.
    fn start(&self, py: Python<'_>, ti: PyRef<'_, PyTaskRef>) -> PyResult<u64> {
        let ti = &ti.inner;
        Ok(py.detach(|| self.with(|k| k.start(ti))).py_err()?.0)
    }

    /// Marks attempt ``ti`` succeeded with an optional result (any value).
    #[pyo3(signature = (ti, result = None))]
    fn succeed(
        &self,
        py: Python<'_>,
        ti: PyRef<'_, PyTaskRef>,
        result: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<u64> {
        let result = encode_opt(result)?;
        let ti = &ti.inner;
        Ok(py
            .detach(|| self.with(|k| k.succeed(ti, result)))
            .py_err()?
            .0)
    }

    /// Marks attempt ``ti`` failed with an error message and a kind (what a
    /// retry policy decides on).
    #[pyo3(signature = (ti, error, kind = String::from("error")))]
    fn fail(
        &self,
        py: Python<'_>,
        ti: PyRef<'_, PyTaskRef>,
        error: String,
        kind: String,
    ) -> PyResult<u64> {
        let ti = &ti.inner;
        Ok(py
            .detach(|| self.with(|k| k.fail(ti, error, kind)))
            .py_err()?
            .0)
    }

    /// Cancels attempt ``ti``.
    fn cancel(&self, py: Python<'_>, ti: PyRef<'_, PyTaskRef>) -> PyResult<u64> {
        let ti = &ti.inner;
        Ok(py.detach(|| self.with(|k| k.cancel(ti))).py_err()?.0)
    }

    /// Clears the attempt state of every attempt of ``ti``'s task (task
    /// state stays) and schedules the next attempt, in one atomic batch;
    /// returns the next attempt's reference. Raises
    /// ``InvalidTransitionError`` if an attempt is still scheduled or
    /// running or ``ti`` is not the latest, ``NotFoundError`` if the task
    /// has neither status nor state, ``InvalidArgumentError`` at the last
    /// try number, ``ConflictError`` if the task's attempts kept changing
    /// under every try. Nothing is written in any of these cases.
    fn clear_for_task(&self, py: Python<'_>, ti: PyRef<'_, PyTaskRef>) -> PyResult<PyTaskRef> {
        let ti = &ti.inner;
        let next = py
            .detach(|| self.with(|k| k.clear_for_retry(ti)))
            .py_err()?;
        Ok(PyTaskRef { inner: next })
    }

    /// The same as ``clear_for_task`` (the Rust API's name).
    fn clear_for_retry(&self, py: Python<'_>, ti: PyRef<'_, PyTaskRef>) -> PyResult<PyTaskRef> {
        self.clear_for_task(py, ti)
    }

    /// After a crash: every task of the run (a ``RunRef`` or any
    /// ``TaskInstanceRef`` of it) with its latest attempt and status.
    /// Attempts found running are recorded interrupted, atomically.
    fn resume<'py>(&self, py: Python<'py>, run: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let run = run_of(run)?;
        let state = py.detach(|| self.with(|k| k.resume(&run))).py_err()?;
        run_state(py, &state)
    }

    /// Moves the run to ``status`` (``created``, ``running``,
    /// ``succeeded``, ``failed``, ``cancelled`` or ``paused``) if its
    /// lifecycle allows it; ``parent`` (a ``TaskInstanceRef``) records the
    /// task of another run that started this one as a sub-workflow.
    #[pyo3(signature = (run, status, *, parent = None))]
    fn set_run_status(
        &self,
        py: Python<'_>,
        run: &Bound<'_, PyAny>,
        status: &str,
        parent: Option<PyRef<'_, PyTaskRef>>,
    ) -> PyResult<u64> {
        let run = run_of(run)?;
        let status = run_status(status)?;
        let parent = parent
            .as_ref()
            .map(|p| (p.inner.run_ref(), p.inner.task_id()));
        Ok(py
            .detach(|| self.with(|k| k.set_run_status(&run, status, parent)))
            .py_err()?
            .0)
    }

    /// The run's status, or ``None`` if it has no record.
    fn run_status(&self, py: Python<'_>, run: &Bound<'_, PyAny>) -> PyResult<Option<&'static str>> {
        let run = run_of(run)?;
        let record = py.detach(|| self.with(|k| k.run(&run))).py_err()?;
        Ok(record.map(|r| r.status.name()))
    }

    /// Every event of attempt ``ti``'s task (all its attempts), in LSN
    /// order.
    fn history_of_task<'py>(
        &self,
        py: Python<'py>,
        ti: PyRef<'py, PyTaskRef>,
    ) -> PyResult<Bound<'py, PyList>> {
        let ti = &ti.inner;
        let events = py
            .detach(|| self.with(|k| k.history_of_task(ti)))
            .py_err()?;
        list_of(py, &events, crate::records::event)
    }

    /// Every event that wrote or deleted ``key`` of attempt ``ti``.
    fn history_of_key<'py>(
        &self,
        py: Python<'py>,
        ti: PyRef<'py, PyTaskRef>,
        key: &str,
    ) -> PyResult<Bound<'py, PyList>> {
        let ti = &ti.inner;
        let events = py
            .detach(|| self.with(|k| k.history_of_key(ti, key)))
            .py_err()?;
        list_of(py, &events, crate::records::event)
    }

    /// Every event of the run, in LSN order.
    fn history_of_run<'py>(
        &self,
        py: Python<'py>,
        run: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyList>> {
        let run = run_of(run)?;
        let events = py
            .detach(|| self.with(|k| k.history_of_run(&run)))
            .py_err()?;
        list_of(py, &events, crate::records::event)
    }

    /// Every event stamped between ``start`` and ``end`` inclusive (each a
    /// ``datetime`` or microseconds since the Unix epoch).
    fn events_between<'py>(
        &self,
        py: Python<'py>,
        start: &Bound<'py, PyAny>,
        end: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyList>> {
        let (from, to) = (micros(start)?, micros(end)?);
        let events = py
            .detach(|| self.with(|k| k.events_between(from, to)))
            .py_err()?;
        list_of(py, &events, crate::records::event)
    }

    /// The run as it was after LSN ``lsn``, or at time ``time`` (a
    /// ``datetime`` or microseconds): a kernel in memory holding exactly
    /// the run's events up to there, to read with the usual API.
    #[pyo3(signature = (run, *, lsn = None, time = None))]
    fn run_as_of(
        &self,
        py: Python<'_>,
        run: &Bound<'_, PyAny>,
        lsn: Option<u64>,
        time: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyKernel> {
        let run = run_of(run)?;
        let at = match (lsn, time) {
            (Some(l), None) => At::Lsn(Lsn(l)),
            (None, Some(t)) => At::TimeMicros(micros(t)?),
            _ => {
                return Err(crate::errors::invalid(
                    "run_as_of takes exactly one of lsn= and time=",
                ));
            }
        };
        let place = format!("{} as of {at:?}", self.place);
        let past = py
            .detach(|| self.with(|k| k.run_as_of(&run, at)))
            .py_err()?;
        Ok(PyKernel::new(past, place))
    }

    /// Captures the run's state (every task's attempt and task state, its
    /// shared variables) under ``name``, checksummed. Returns the LSN.
    fn checkpoint(&self, py: Python<'_>, run: &Bound<'_, PyAny>, name: &str) -> PyResult<u64> {
        let run = run_of(run)?;
        Ok(py
            .detach(|| self.with(|k| k.checkpoint(&run, name)))
            .py_err()?
            .0)
    }

    /// The run's checkpoints, oldest first (each a ``CheckpointInfo``).
    fn checkpoints<'py>(
        &self,
        py: Python<'py>,
        run: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyList>> {
        let run = run_of(run)?;
        let all = py.detach(|| self.with(|k| k.checkpoints(&run))).py_err()?;
        list_of(py, &all, crate::records::checkpoint)
    }

    /// Puts the run's state back as checkpoint ``name`` captured it, in one
    /// atomic batch. Raises ``NotFoundError`` for an unknown name and
    /// ``CorruptionError`` if the checkpoint fails its checksum.
    fn restore(&self, py: Python<'_>, run: &Bound<'_, PyAny>, name: &str) -> PyResult<u64> {
        let run = run_of(run)?;
        Ok(py
            .detach(|| self.with(|k| k.restore(&run, name)))
            .py_err()?
            .0)
    }

    /// Deletes checkpoint ``name`` of the run.
    fn delete_checkpoint(
        &self,
        py: Python<'_>,
        run: &Bound<'_, PyAny>,
        name: &str,
    ) -> PyResult<u64> {
        let run = run_of(run)?;
        Ok(py
            .detach(|| self.with(|k| k.delete_checkpoint(&run, name)))
            .py_err()?
            .0)
    }

    /// Deletes the run's checkpoints beyond the newest ``keep_last``, and
    /// those older than ``max_age`` seconds; returns the names deleted.
    #[pyo3(signature = (run, *, keep_last = None, max_age = None))]
    fn prune_checkpoints(
        &self,
        py: Python<'_>,
        run: &Bound<'_, PyAny>,
        keep_last: Option<usize>,
        max_age: Option<f64>,
    ) -> PyResult<Vec<String>> {
        let run = run_of(run)?;
        let max_age = max_age
            .map(|s| {
                std::time::Duration::try_from_secs_f64(s).map_err(|_| {
                    crate::errors::invalid(format!(
                        "max_age must be a non-negative number of seconds; got {s}"
                    ))
                })
            })
            .transpose()?;
        py.detach(|| self.with(|k| k.prune_checkpoints(&run, keep_last, max_age)))
            .py_err()
    }

    /// Sets shared variable ``key`` of the run (seen by all its tasks);
    /// ``immutable=True`` makes later sets raise ``ConflictError``.
    #[pyo3(signature = (run, key, value, *, immutable = false))]
    fn set_shared(
        &self,
        py: Python<'_>,
        run: &Bound<'_, PyAny>,
        key: &str,
        value: &Bound<'_, PyAny>,
        immutable: bool,
    ) -> PyResult<u64> {
        let run = run_of(run)?;
        let value = encode(value)?;
        Ok(py
            .detach(|| self.with(|k| k.set_shared(&run, key, value, immutable)))
            .py_err()?
            .0)
    }

    /// The run's shared variable ``key``, or ``default``.
    #[pyo3(signature = (run, key, default = None))]
    fn get_shared<'py>(
        &self,
        py: Python<'py>,
        run: &Bound<'py, PyAny>,
        key: &str,
        default: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let run = run_of(run)?;
        match py.detach(|| self.with(|k| k.shared(&run, key))).py_err()? {
            Some(v) => decode(py, &v),
            None => Ok(or_none(py, default)),
        }
    }

    /// The runs of a tenant (of one DAG if ``dag_name`` is given), each a
    /// ``RunInfo``.
    #[pyo3(signature = (tenant_id, dag_name = None))]
    fn runs<'py>(
        &self,
        py: Python<'py>,
        tenant_id: &str,
        dag_name: Option<&str>,
    ) -> PyResult<Bound<'py, PyList>> {
        let runs = py
            .detach(|| self.with(|k| k.runs(tenant_id, dag_name)))
            .py_err()?;
        list_of(py, &runs, crate::records::run_info)
    }

    /// The sub-workflows the run started (runs whose parent is one of its
    /// tasks).
    fn children<'py>(
        &self,
        py: Python<'py>,
        run: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyList>> {
        let run = run_of(run)?;
        let runs = py.detach(|| self.with(|k| k.children(&run))).py_err()?;
        list_of(py, &runs, crate::records::run_info)
    }

    /// Removes every state of the run (its history stays in the log until
    /// retention).
    fn purge_run(&self, py: Python<'_>, run: &Bound<'_, PyAny>) -> PyResult<u64> {
        let run = run_of(run)?;
        Ok(py.detach(|| self.with(|k| k.purge_run(&run))).py_err()?.0)
    }

    /// Watches durable events as they are committed, filtered by tenant,
    /// DAG, run and task (each optional), from LSN ``from_lsn`` on (default:
    /// the first LSN not yet durable when called, so only later events
    /// under the default durability). At most ``capacity`` events wait
    /// undelivered; past that the watch yields a ``Lagged``.
    #[pyo3(signature = (*, tenant_id = None, dag_name = None, dag_id = None, task_id = None, from_lsn = None, capacity = 1024))]
    #[allow(clippy::too_many_arguments)]
    fn watch(
        &self,
        py: Python<'_>,
        tenant_id: Option<String>,
        dag_name: Option<String>,
        dag_id: Option<String>,
        task_id: Option<String>,
        from_lsn: Option<u64>,
        capacity: usize,
    ) -> PyResult<PyWatch> {
        let filter = WatchFilter {
            tenant: tenant_id,
            dag_name,
            run_id: dag_id,
            task_id,
        };
        let slot = py
            .detach(|| {
                let mut watches = lock(&self.watches);
                let watch = self.with(|k| {
                    let from = match from_lsn {
                        Some(l) => Lsn(l),
                        None => Lsn(k.stats().durable_lsn.0 + 1),
                    };
                    k.watch(filter, from, capacity)
                })?;
                let slot = Arc::new(Mutex::new(Some(watch)));
                register(&mut watches, &slot);
                Ok(slot)
            })
            .py_err()?;
        Ok(PyWatch { slot })
    }

    /// Pauses the run: its tasks do not start until ``resume_run``.
    fn pause_run(&self, py: Python<'_>, run: &Bound<'_, PyAny>) -> PyResult<u64> {
        let run = run_of(run)?;
        Ok(py.detach(|| self.with(|k| k.pause_run(&run))).py_err()?.0)
    }

    /// Resumes a paused run.
    fn resume_run(&self, py: Python<'_>, run: &Bound<'_, PyAny>) -> PyResult<u64> {
        let run = run_of(run)?;
        Ok(py.detach(|| self.with(|k| k.resume_run(&run))).py_err()?.0)
    }
}

/// The state API of one task attempt: attempt state (cleared before a
/// retry), task state (kept across retries) and upstream reads.
///
/// ``RunContext(ti, kernel)``; cheap to make, and cheaper to keep for the
/// attempt's whole run.
#[pyclass(module = "waymark", name = "RunContext", frozen)]
pub(crate) struct PyRunContext {
    slot: Arc<Slot>,
    ti: Py<PyTaskRef>,
    kernel: Py<PyKernel>,
}

impl PyRunContext {
    fn build(kernel: &Bound<'_, PyKernel>, ti: Bound<'_, PyTaskRef>) -> PyRunContext {
        PyRunContext {
            slot: kernel.get().context_slot(kernel.py(), &ti.get().inner),
            ti: ti.unbind(),
            kernel: kernel.clone().unbind(),
        }
    }

    /// Runs `f` on the context, or fails with `Closed` once its kernel is
    /// closed.
    fn with<T>(
        &self,
        f: impl FnOnce(&RunContext) -> waymark_kernel::Result<T>,
    ) -> waymark_kernel::Result<T> {
        match read(&self.slot).as_ref() {
            Some(c) => f(c),
            None => Err(closed()),
        }
    }
}

/// The task ids of `from_task` or `from_tasks`.
fn upstreams(from_task: Option<String>, from_tasks: Option<Vec<String>>) -> Option<Vec<String>> {
    match (from_task, from_tasks) {
        (Some(t), Some(mut ts)) => {
            ts.insert(0, t);
            Some(ts)
        }
        (Some(t), None) => Some(vec![t]),
        (None, ts) => ts,
    }
}

#[pymethods]
impl PyRunContext {
    #[new]
    fn new(ti: Bound<'_, PyTaskRef>, kernel: Bound<'_, PyKernel>) -> PyRunContext {
        PyRunContext::build(&kernel, ti)
    }

    /// The attempt this context writes.
    #[getter]
    fn ti(&self, py: Python<'_>) -> Py<PyTaskRef> {
        self.ti.clone_ref(py)
    }

    /// The kernel it writes to.
    #[getter]
    fn kernel(&self, py: Python<'_>) -> Py<PyKernel> {
        self.kernel.clone_ref(py)
    }

    /// Sets ``key`` of this attempt to ``value`` (any JSON value, or
    /// bytes); durable when it returns. Returns the LSN.
    fn set(&self, py: Python<'_>, key: &str, value: &Bound<'_, PyAny>) -> PyResult<u64> {
        let value = encode(value)?;
        Ok(py.detach(|| self.with(|k| k.set(key, value))).py_err()?.0)
    }

    /// ``set`` with metadata (any JSON value) stored beside the value.
    #[pyo3(signature = (key, value, *, metadata = None))]
    fn push(
        &self,
        py: Python<'_>,
        key: &str,
        value: &Bound<'_, PyAny>,
        metadata: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<u64> {
        let value = encode(value)?;
        let meta = encode_opt(metadata)?;
        Ok(py
            .detach(|| self.with(|k| k.push(key, value, meta)))
            .py_err()?
            .0)
    }

    /// The value of ``key`` in this attempt, or of the latest attempt of
    /// task ``from_task`` of the same run that has it; ``default`` if
    /// there is none.
    #[pyo3(signature = (key, default = None, *, from_task = None))]
    fn get<'py>(
        &self,
        py: Python<'py>,
        key: &str,
        default: Option<Bound<'py, PyAny>>,
        from_task: Option<&str>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let got = py
            .detach(|| match from_task {
                Some(task) => self.with(|k| k.get_from(task, key)),
                None => self.with(|k| k.get(key)),
            })
            .py_err()?;
        match got {
            Some(v) => decode(py, &v),
            None => Ok(or_none(py, default)),
        }
    }

    /// The value of ``key`` in this attempt with its metadata, LSN and
    /// time (an ``Entry``), or ``None``.
    fn get_entry<'py>(&self, py: Python<'py>, key: &str) -> PyResult<Bound<'py, PyAny>> {
        match py.detach(|| self.with(|k| k.get_entry(key))).py_err()? {
            Some(e) => {
                let d = PyDict::new(py);
                entry_fields(py, &e, &d)?;
                record(py, "Entry", d)
            }
            None => Ok(py.None().into_bound(py)),
        }
    }

    /// Deletes ``key`` of this attempt.
    fn delete(&self, py: Python<'_>, key: &str) -> PyResult<u64> {
        Ok(py.detach(|| self.with(|k| k.delete(key))).py_err()?.0)
    }

    /// All state of this attempt, as a dictionary in key order.
    fn get_all<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let entries = py.detach(|| self.with(|k| k.entries())).py_err()?;
        dict_of(py, entries)
    }

    /// The first value of ``key`` in the latest attempt that has it of
    /// each task of ``from_tasks`` (in list order; ``from_task`` first if given), or of
    /// this attempt if neither is given; ``default`` if none has it.
    #[pyo3(signature = (key, *, from_task = None, from_tasks = None, default = None))]
    fn pull<'py>(
        &self,
        py: Python<'py>,
        key: &str,
        from_task: Option<String>,
        from_tasks: Option<Vec<String>>,
        default: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let got = py
            .detach(|| match upstreams(from_task, from_tasks) {
                Some(tasks) => {
                    let tasks: Vec<&str> = tasks.iter().map(String::as_str).collect();
                    self.with(|k| k.pull(key, &tasks))
                }
                None => self.with(|k| k.get(key)),
            })
            .py_err()?;
        match got {
            Some(v) => decode(py, &v),
            None => Ok(or_none(py, default)),
        }
    }

    /// Every value of ``key``, from the latest attempt that has it of each
    /// task of ``from_tasks``,
    /// in list order, each a ``Pulled`` with its task, try, metadata, LSN
    /// and time.
    fn pull_all<'py>(
        &self,
        py: Python<'py>,
        key: &str,
        from_tasks: Vec<String>,
    ) -> PyResult<Bound<'py, PyList>> {
        let pulled = py
            .detach(|| {
                let tasks: Vec<&str> = from_tasks.iter().map(String::as_str).collect();
                self.with(|k| k.pull_all(key, &tasks))
            })
            .py_err()?;
        let out = PyList::empty(py);
        for p in pulled {
            let d = PyDict::new(py);
            d.set_item("task_id", p.task_id)?;
            d.set_item("try_number", p.try_number)?;
            entry_fields(py, &p.entry, &d)?;
            out.append(record(py, "Pulled", d)?)?;
        }
        Ok(out)
    }

    /// Sets ``key`` of the task state: kept across retries of the task.
    fn set_task_state(&self, py: Python<'_>, key: &str, value: &Bound<'_, PyAny>) -> PyResult<u64> {
        let value = encode(value)?;
        Ok(py
            .detach(|| self.with(|k| k.set_task_state(key, value)))
            .py_err()?
            .0)
    }

    /// The task state's value of ``key``, or ``default``.
    #[pyo3(signature = (key, default = None))]
    fn get_task_state<'py>(
        &self,
        py: Python<'py>,
        key: &str,
        default: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        match py.detach(|| self.with(|k| k.task_state(key))).py_err()? {
            Some(v) => decode(py, &v),
            None => Ok(or_none(py, default)),
        }
    }

    /// Deletes ``key`` of the task state.
    fn delete_task_state(&self, py: Python<'_>, key: &str) -> PyResult<u64> {
        Ok(py
            .detach(|| self.with(|k| k.delete_task_state(key)))
            .py_err()?
            .0)
    }

    /// All task state, as a dictionary in key order.
    fn get_all_task_state<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let entries = py
            .detach(|| self.with(|k| k.task_state_entries()))
            .py_err()?;
        dict_of(py, entries)
    }

    /// A batch of writes committed atomically: all of it or none after any
    /// crash. ``with ctx.batch() as b: b.set(...)`` commits on leaving the
    /// block (and writes nothing if the block raised).
    fn batch(slf: &Bound<'_, PyRunContext>) -> PyBatch {
        PyBatch {
            ctx: slf.clone().unbind(),
            writes: Mutex::new(Some(Writes::default())),
        }
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        format!("RunContext({})", self.ti.bind(py).get().inner)
    }
}

/// Where one key or value of a batch lies in its [`Writes::bytes`].
type Span = std::ops::Range<usize>;

/// One write of a batch, its key and value copied into the batch's bytes.
enum Op {
    Set(Span, Span),
    Push(Span, Span, Span),
    Delete(Span),
    SetTaskState(Span, Span),
    DeleteTaskState(Span),
    Start,
    Succeed(Vec<u8>),
    Fail(String, String),
    Cancel,
}

/// The writes of a batch not yet committed.
#[derive(Default)]
struct Writes {
    /// Every key and encoded value, end to end: a batch of a thousand sets
    /// makes one growing buffer, not two thousand allocations.
    bytes: Vec<u8>,
    ops: Vec<Op>,
}

impl Writes {
    fn append(&mut self, data: &[u8]) -> Span {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(data);
        start..self.bytes.len()
    }

    fn slice(&self, span: &Span) -> &[u8] {
        &self.bytes[span.clone()]
    }

    fn key(&self, span: &Span) -> &str {
        std::str::from_utf8(self.slice(span))
            .expect("a batch's keys are copied from Python's UTF-8")
    }
}

/// A key or a value of one write, before it is copied into the batch.
enum Part<'a, 'py> {
    Key(&'a Bound<'py, PyString>),
    Value(&'a Bound<'py, PyAny>),
}

/// The most a thread keeps of its scratch buffer between writes.
const SCRATCH_KEPT_MAX: usize = 64 << 10;

thread_local! {
    /// Where a thread encodes a write's parts before taking the batch's
    /// lock: the lock is never held while Python runs.
    static SCRATCH: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

fn committed_already() -> PyErr {
    crate::errors::to_py(waymark_kernel::Error::InvalidBatch(
        "the batch is committed already".into(),
    ))
}

/// Writes gathered for one atomic commit, from ``RunContext.batch()``:
/// state writes, and the attempt's status change with them (``start``,
/// ``succeed``, ``fail``, ``cancel``), so that a task's outputs and its
/// final status land together or not at all.
#[pyclass(module = "waymark", name = "Batch", frozen)]
pub(crate) struct PyBatch {
    ctx: Py<PyRunContext>,
    /// `None` once committed.
    writes: Mutex<Option<Writes>>,
}

impl PyBatch {
    fn add(&self, op: Op) -> PyResult<()> {
        self.add_parts(&[], |_| op)
    }

    /// Encodes `parts` (at most three: key, value, metadata), copies them
    /// into the batch's bytes and adds the op that `make` builds from
    /// their spans. Nothing is added if a part is refused.
    fn add_parts(&self, parts: &[Part<'_, '_>], make: impl FnOnce(&[Span]) -> Op) -> PyResult<()> {
        // Taken, not borrowed: a nested call finds an empty buffer, never
        // a borrow.
        let mut scratch = SCRATCH.take();
        scratch.clear();
        let added = self.add_encoded(parts, &mut scratch, make);
        if scratch.capacity() <= SCRATCH_KEPT_MAX {
            SCRATCH.set(scratch);
        }
        added
    }

    fn add_encoded(
        &self,
        parts: &[Part<'_, '_>],
        scratch: &mut Vec<u8>,
        make: impl FnOnce(&[Span]) -> Op,
    ) -> PyResult<()> {
        let mut ends = [0; 3];
        for (end, part) in ends.iter_mut().zip(parts) {
            match part {
                Part::Key(k) => scratch.extend_from_slice(k.encode_utf8()?.as_bytes()),
                Part::Value(v) => encode_into(v, scratch)?,
            }
            *end = scratch.len();
        }
        let mut writes = lock(&self.writes);
        let w = writes.as_mut().ok_or_else(committed_already)?;
        let base = w.append(scratch).start;
        let mut spans: [Span; 3] = Default::default();
        let mut from = 0;
        for (span, &end) in spans.iter_mut().zip(&ends[..parts.len()]) {
            *span = base + from..base + end;
            from = end;
        }
        w.ops.push(make(&spans[..parts.len()]));
        Ok(())
    }
}

#[pymethods]
impl PyBatch {
    /// Adds a set of ``key``; returns the batch.
    fn set<'py>(
        slf: Bound<'py, PyBatch>,
        key: &Bound<'py, PyString>,
        value: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyBatch>> {
        slf.get()
            .add_parts(&[Part::Key(key), Part::Value(value)], |s| {
                Op::Set(s[0].clone(), s[1].clone())
            })?;
        Ok(slf)
    }

    /// Adds a set of ``key`` with metadata; returns the batch.
    #[pyo3(signature = (key, value, *, metadata = None))]
    fn push<'py>(
        slf: Bound<'py, PyBatch>,
        key: &Bound<'py, PyString>,
        value: &Bound<'py, PyAny>,
        metadata: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyBatch>> {
        let batch = slf.get();
        match metadata.filter(|m| !m.is_none()) {
            Some(meta) => batch.add_parts(
                &[Part::Key(key), Part::Value(value), Part::Value(meta)],
                |s| Op::Push(s[0].clone(), s[1].clone(), s[2].clone()),
            ),
            None => batch.add_parts(&[Part::Key(key), Part::Value(value)], |s| {
                Op::Set(s[0].clone(), s[1].clone())
            }),
        }?;
        Ok(slf)
    }

    /// Adds a delete of ``key``; returns the batch.
    fn delete<'py>(
        slf: Bound<'py, PyBatch>,
        key: &Bound<'py, PyString>,
    ) -> PyResult<Bound<'py, PyBatch>> {
        slf.get()
            .add_parts(&[Part::Key(key)], |s| Op::Delete(s[0].clone()))?;
        Ok(slf)
    }

    /// Adds a set of task state ``key``; returns the batch.
    fn set_task_state<'py>(
        slf: Bound<'py, PyBatch>,
        key: &Bound<'py, PyString>,
        value: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyBatch>> {
        slf.get()
            .add_parts(&[Part::Key(key), Part::Value(value)], |s| {
                Op::SetTaskState(s[0].clone(), s[1].clone())
            })?;
        Ok(slf)
    }

    /// Adds a delete of task state ``key``; returns the batch.
    fn delete_task_state<'py>(
        slf: Bound<'py, PyBatch>,
        key: &Bound<'py, PyString>,
    ) -> PyResult<Bound<'py, PyBatch>> {
        slf.get()
            .add_parts(&[Part::Key(key)], |s| Op::DeleteTaskState(s[0].clone()))?;
        Ok(slf)
    }

    /// Adds the attempt's start (scheduled to running); returns the batch.
    fn start(slf: Bound<'_, PyBatch>) -> PyResult<Bound<'_, PyBatch>> {
        slf.get().add(Op::Start)?;
        Ok(slf)
    }

    /// Adds the attempt's success with an optional result; the batch then
    /// commits only if the attempt is running when its turn comes (else
    /// ``InvalidTransitionError``, and nothing of it is written).
    #[pyo3(signature = (result = None))]
    fn succeed<'py>(
        slf: Bound<'py, PyBatch>,
        result: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyBatch>> {
        slf.get().add(Op::Succeed(encode_opt(result)?))?;
        Ok(slf)
    }

    /// Adds the attempt's failure with a message and a kind.
    #[pyo3(signature = (error, kind = String::from("error")))]
    fn fail(slf: Bound<'_, PyBatch>, error: String, kind: String) -> PyResult<Bound<'_, PyBatch>> {
        slf.get().add(Op::Fail(error, kind))?;
        Ok(slf)
    }

    /// Adds the attempt's cancellation.
    fn cancel(slf: Bound<'_, PyBatch>) -> PyResult<Bound<'_, PyBatch>> {
        slf.get().add(Op::Cancel)?;
        Ok(slf)
    }

    /// Writes the batch atomically; durable when it returns. Returns the
    /// LSN, or ``None`` for an empty batch (nothing written).
    fn commit(&self, py: Python<'_>) -> PyResult<Option<u64>> {
        let w = lock(&self.writes).take().ok_or_else(committed_already)?;
        let ctx = self.ctx.bind(py).get();
        let lsn = py
            .detach(|| {
                ctx.with(|ctx| {
                    let mut batch = ctx.batch();
                    for op in &w.ops {
                        batch = match op {
                            Op::Set(k, v) => batch.set(w.key(k), w.slice(v)),
                            Op::Push(k, v, m) => batch.push(w.key(k), w.slice(v), w.slice(m)),
                            Op::Delete(k) => batch.delete(w.key(k)),
                            Op::SetTaskState(k, v) => batch.set_task_state(w.key(k), w.slice(v)),
                            Op::DeleteTaskState(k) => batch.delete_task_state(w.key(k)),
                            Op::Start => batch.start(),
                            Op::Succeed(result) => batch.succeed(result.clone()),
                            Op::Fail(error, kind) => batch.fail(error.clone(), kind.clone()),
                            Op::Cancel => batch.cancel(),
                        };
                    }
                    batch.commit()
                })
            })
            .py_err()?;
        Ok(lsn.map(|l| l.0))
    }

    fn __repr__(&self) -> String {
        match lock(&self.writes).as_ref() {
            Some(w) => format!("Batch({} writes)", w.ops.len()),
            None => "Batch(committed)".into(),
        }
    }

    /// How many writes the batch holds.
    fn __len__(&self) -> usize {
        lock(&self.writes).as_ref().map_or(0, |w| w.ops.len())
    }

    fn __enter__(slf: Py<PyBatch>) -> Py<PyBatch> {
        slf
    }

    /// Commits if the block ended normally; drops the writes if it raised.
    fn __exit__(
        &self,
        py: Python<'_>,
        exc_type: Option<&Bound<'_, PyAny>>,
        _exc: Option<&Bound<'_, PyAny>>,
        _tb: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        if exc_type.is_some_and(|t| !t.is_none()) {
            lock(&self.writes).take();
        } else {
            self.commit(py)?;
        }
        Ok(false)
    }
}
