//! `Watch`: the durable events of the log as a Python iterator.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use waymark_kernel::{Watch, Watched};

use crate::records::{event, record};

/// A watch's subscription: `None` once closed.
pub(crate) type WatchSlot = Mutex<Option<Watch>>;

/// How long an iteration waits before it lets Python check for signals
/// (Ctrl-C interrupts a blocked loop within this).
const SIGNAL_CHECK: Duration = Duration::from_millis(100);

/// The durable events that match a filter, as they are committed; from
/// ``Kernel.watch``. Iterate it (``for event in watch:``); each item is a
/// ``LoggedEvent``, or a ``Lagged`` when the reader fell behind and events
/// were dropped. ``close()`` (or leaving a ``with`` block) stops it; the
/// loop then ends.
#[pyclass(module = "waymark", name = "Watch", frozen)]
pub(crate) struct PyWatch {
    pub(crate) slot: Arc<WatchSlot>,
}

impl PyWatch {
    fn receiver(&self) -> Option<Receiver<Watched>> {
        self.slot
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|w| w.receiver().clone())
    }
}

fn item<'py>(py: Python<'py>, got: Watched) -> PyResult<Bound<'py, PyAny>> {
    match got {
        Watched::Event(e) => event(py, &e),
        Watched::Lagged { from } => {
            let d = PyDict::new(py);
            d.set_item("from_lsn", from.0)?;
            record(py, "Lagged", d)
        }
        Watched::Failed { error } => Err(crate::errors::to_py_ref(&error)),
    }
}

#[pymethods]
impl PyWatch {
    fn __iter__(slf: Py<PyWatch>) -> Py<PyWatch> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let Some(rx) = self.receiver() else {
            return Ok(None);
        };
        loop {
            match py.detach(|| rx.recv_timeout(SIGNAL_CHECK)) {
                Ok(got) => return item(py, got).map(Some),
                Err(RecvTimeoutError::Timeout) => py.check_signals()?,
                Err(RecvTimeoutError::Disconnected) => return Ok(None),
            }
        }
    }

    /// The next item, or ``None`` if none comes within ``timeout`` seconds
    /// (``None``: wait for one) or the watch is closed.
    #[pyo3(signature = (timeout = None))]
    fn next<'py>(
        &self,
        py: Python<'py>,
        timeout: Option<f64>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let Some(timeout) = timeout else {
            return self.__next__(py);
        };
        let Some(rx) = self.receiver() else {
            return Ok(None);
        };
        // A timeout too long for a `Duration` or an `Instant` (an infinite
        // one, say) waits as `None` does.
        let Some(deadline) = Duration::try_from_secs_f64(timeout.max(0.0))
            .ok()
            .and_then(|d| std::time::Instant::now().checked_add(d))
        else {
            return self.__next__(py);
        };
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match py.detach(|| rx.recv_timeout(left.min(SIGNAL_CHECK))) {
                Ok(got) => return item(py, got).map(Some),
                Err(RecvTimeoutError::Timeout) if left > SIGNAL_CHECK => py.check_signals()?,
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return Ok(None),
            }
        }
    }

    /// Stops the watch (its thread ends); iteration then stops.
    fn close(&self, py: Python<'_>) {
        let watch = self.slot.lock().unwrap_or_else(|e| e.into_inner()).take();
        // Dropping the watch joins its thread: without the interpreter.
        py.detach(|| drop(watch));
    }

    fn __repr__(&self) -> &'static str {
        if self
            .slot
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
        {
            "Watch(open)"
        } else {
            "Watch(closed)"
        }
    }

    fn __enter__(slf: Py<PyWatch>) -> Py<PyWatch> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, pyo3::types::PyTuple>) -> bool {
        self.close(py);
        false
    }
}
