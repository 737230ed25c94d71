//! The native part of the `waymark` Python package (`waymark._waymark`):
//! the kernel API of `waymark_kernel` as Python classes. The Rust crates
//! know nothing of Python; everything Python-specific is here and in the
//! package's pure-Python modules (`waymark/`).
//!
//! No panic crosses into the interpreter: PyO3 turns one into a Python
//! `PanicException`, and the code here raises typed errors instead
//! (`waymark.errors`).
#![forbid(unsafe_code)]

mod errors;
mod kernel;
mod records;
mod refs;
mod retry;
mod value;
mod watch;

use pyo3::prelude::*;

/// The native module; `waymark/__init__.py` re-exports what users call.
#[pymodule]
fn _waymark(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<kernel::PyKernel>()?;
    m.add_class::<kernel::PyRunContext>()?;
    m.add_class::<kernel::PyBatch>()?;
    m.add_class::<refs::PyTaskRef>()?;
    m.add_class::<refs::PyRunRef>()?;
    m.add_class::<retry::PyRetryPolicy>()?;
    m.add_class::<watch::PyWatch>()?;
    Ok(())
}
