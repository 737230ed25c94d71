//! The kernel's and the engine's errors as the exceptions of
//! `waymark.errors` (defined in Python, where an exception class can also
//! derive from `ValueError`, `LookupError` or `OSError`).

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use waymark_kernel::Error;
use waymark_kernel::engine::Error as EngineError;

/// The `waymark.errors` module, imported once.
static ERRORS: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

/// Where corrupt bytes were found, when the error says.
struct Place {
    path: Option<String>,
    offset: Option<u64>,
}

/// The name of the `waymark.errors` class for `e`, and where corrupt bytes
/// lie.
fn class_of(e: &Error) -> (&'static str, Option<Place>) {
    // A full disk poisons the engine, and every later refusal keeps it as
    // the cause: DiskFullError is a PoisonedError that says why.
    if e.is_disk_full() {
        return ("DiskFullError", None);
    }
    if e.is_poisoned() {
        return ("PoisonedError", None);
    }
    let class = match e {
        Error::InvalidRef(_)
        | Error::InvalidBatch(_)
        | Error::UnsupportedUrl { .. }
        | Error::Json { .. } => "InvalidArgumentError",
        Error::InvalidTransition { .. }
        | Error::InvalidRunTransition { .. }
        | Error::NotLatestAttempt { .. }
        | Error::NotRetryable { .. }
        | Error::AttemptInProgress { .. }
        | Error::RunFinished { .. }
        | Error::RunPaused { .. } => "InvalidTransitionError",
        Error::Conflict { .. } | Error::Contended { .. } | Error::ImmutableShared { .. } => {
            "ConflictError"
        }
        Error::UnknownRun { .. } | Error::UnknownTask { .. } | Error::UnknownCheckpoint { .. } => {
            "NotFoundError"
        }
        Error::ChecksumMismatch { .. } => "CorruptionError",
        Error::HistoryRemoved { .. } => "HistoryRemovedError",
        Error::Spawn(_) | Error::Backend(_) => "StorageError",
        Error::Engine(engine) => return engine_class(engine),
        _ => "Error",
    };
    (class, None)
}

fn engine_class(e: &EngineError) -> (&'static str, Option<Place>) {
    let path = |p: &std::path::Path| Some(p.display().to_string());
    let class = match e {
        EngineError::AlreadyOpenInThisProcess { .. } | EngineError::LockedByOtherProcess { .. } => {
            "LockedError"
        }
        EngineError::Corruption {
            segment, offset, ..
        } => {
            return (
                "CorruptionError",
                Some(Place {
                    path: path(segment),
                    offset: Some(*offset),
                }),
            );
        }
        EngineError::Gap { segment, .. } => {
            return (
                "CorruptionError",
                Some(Place {
                    path: path(segment),
                    offset: None,
                }),
            );
        }
        EngineError::Views { path: p, .. } | EngineError::ViewsMismatch { path: p, .. } => {
            return (
                "CorruptionError",
                Some(Place {
                    path: path(p),
                    offset: None,
                }),
            );
        }
        EngineError::CorruptView { .. } | EngineError::UnsupportedVersion { .. } => {
            "CorruptionError"
        }
        EngineError::LimitExceeded { .. } => "LimitError",
        EngineError::EmptyBatch
        | EngineError::InvalidEvent { .. }
        | EngineError::InvalidOptions(_)
        | EngineError::NotAStateDir { .. } => "InvalidArgumentError",
        EngineError::DiskFull { .. } => "DiskFullError",
        EngineError::Poisoned { .. } => "PoisonedError",
        EngineError::Closed => "ClosedError",
        EngineError::Io { .. }
        | EngineError::ThreadDied { .. }
        | EngineError::ConditionUnreadable { .. }
        | EngineError::SnapshotFailed { .. }
        | EngineError::MemtablesFull { .. } => "StorageError",
        _ => "Error",
    };
    (class, None)
}

/// `e` as the Python exception a caller catches, with the error's message
/// (its causes appended, as the CLI prints them).
pub(crate) fn to_py(e: Error) -> PyErr {
    to_py_ref(&e)
}

/// [`to_py`] of a shared error (a watch's failure).
pub(crate) fn to_py_ref(e: &Error) -> PyErr {
    Python::attach(|py| build(py, e))
}

fn build(py: Python<'_>, e: &Error) -> PyErr {
    let (class, place) = class_of(e);
    let message = message(e);
    let made = (|| -> PyResult<PyErr> {
        let module =
            ERRORS.get_or_try_init(py, || py.import("waymark.errors").map(Bound::unbind))?;
        let exc = module.bind(py).getattr(class)?.call1((message.clone(),))?;
        if let Some(place) = place {
            exc.setattr("path", place.path)?;
            exc.setattr("offset", place.offset)?;
        }
        if let Some((errno, filename)) = os_error(e) {
            // What an OSError carries, so that `except OSError as e:
            // e.errno == errno.ENOSPC` works as it does for open().
            let errno: i32 = match errno {
                Some(n) => n,
                None => py.import("errno")?.getattr("ENOSPC")?.extract()?,
            };
            exc.setattr("errno", errno)?;
            exc.setattr("filename", filename)?;
        }
        Ok(PyErr::from_value(exc))
    })();
    // waymark.errors is part of the package: failing to import it means a
    // broken install, which the RuntimeError says with the message kept.
    made.unwrap_or_else(|import| {
        PyRuntimeError::new_err(format!("{message} (and waymark.errors failed: {import})"))
    })
}

/// The operating system's error number and the file of the I/O error
/// behind `e`, if one is: the number is `None` for a full disk, which is
/// `ENOSPC`.
fn os_error(e: &Error) -> Option<(Option<i32>, String)> {
    let Error::Engine(engine) = e else {
        return None;
    };
    engine.chain().find_map(|e| match e {
        EngineError::Io { path, source } => source
            .raw_os_error()
            .map(|n| (Some(n), path.display().to_string())),
        EngineError::DiskFull { path } => Some((None, path.display().to_string())),
        _ => None,
    })
}

/// The error's message followed by its sources' (`: `-joined).
fn message(e: &Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let next = s.to_string();
        if !text.ends_with(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}

/// An `InvalidArgumentError` with `message`, for input the binding checks
/// itself.
pub(crate) fn invalid(message: impl Into<String>) -> PyErr {
    to_py(Error::InvalidRef(message.into()))
}

/// A shorthand for results of the kernel.
pub(crate) trait IntoPy<T> {
    /// The result, its error as the Python exception.
    fn py_err(self) -> PyResult<T>;
}

impl<T> IntoPy<T> for Result<T, Error> {
    fn py_err(self) -> PyResult<T> {
        self.map_err(to_py)
    }
}
