//! waymark-kernel: the task-state vocabulary that workflow workers use
//! (`TaskRef`, `RunContext`, retry, resume, checkpoints), on top of
//! [`waymark_engine`].
//!
//! Not built yet: this crate reserves its place in the workspace. The engine
//! it will stand on is usable directly today.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub use waymark_engine as engine;
