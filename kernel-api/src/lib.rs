//! waymark-kernel: the task-state vocabulary that workflow workers use, on
//! top of [`waymark_engine`].
//!
//! A worker opens one [`Kernel`] and gives each task attempt a
//! [`RunContext`] for a [`TaskRef`]. Attempt state (`set`/`get`) belongs
//! to one try; task state (`set_task_state`) survives retries; upstream
//! reads (`get_from`, `pull`, `pull_all`) see the latest attempt of another
//! task of the same run that has the key. Every write is an event in the
//! engine's log, durable when the call returns.
//!
//! ```
//! use waymark_kernel::{Kernel, TaskRef};
//!
//! let kernel = Kernel::in_memory()?;
//! let ocr = kernel.context(TaskRef::new("acme", "documents", "run-42", "ocr", 1)?);
//! ocr.set_json("lines", &vec!["Invoice 17", "Total 42.00"])?;
//!
//! let tables = kernel.context(ocr.ti().sibling("tables")?);
//! let lines: Vec<String> = serde_json::from_slice(&tables.get_from("ocr", "lines")?.unwrap())
//!     .expect("ocr wrote JSON");
//! assert_eq!(lines.len(), 2);
//! # Ok::<(), waymark_kernel::Error>(())
//! ```
//!
//! The kernel does no file I/O of its own: it uses its storage through the
//! [`Backend`] trait ([`EngineBackend`] today).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod backend;
mod context;
mod error;
mod history;
mod kernel;
mod lifecycle;
mod retry;
mod runs;
mod task_ref;
#[cfg(feature = "testkit")]
pub mod testkit;
mod watch;

pub use backend::{Backend, BackendStats, EngineBackend};
pub use context::{Batch, Entry, Pulled, RunContext};
pub use error::{Error, Result};
pub use history::{At, LoggedEvent};
pub use kernel::{Kernel, KernelBuilder};
pub use lifecycle::{RunState, TaskResume, allowed_from};
pub use retry::{Backoff, RetryPolicy};
pub use runs::{CheckpointInfo, RunInfo, run_allowed_from};
pub use task_ref::{NAME_BYTES_MAX, RunRef, TaskRef};
pub use watch::{Watch, WatchFilter, Watched};
pub use waymark_engine as engine;
pub use waymark_engine::{
    Condition, Found, RunRecord, RunStatus, TaskRecord, TaskStatus, TaskStatusKind,
};

/// The README's examples, compiled and run as doctests so that they stay
/// true (here, where both the kernel and the engine are in scope).
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
