//! The kernel's one error type.

/// What went wrong in a kernel call. Every misuse is one of these, naming
/// what was wrong; none panics.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A `TaskRef` (or run or task name) that cannot be used.
    #[error("invalid task reference: {0}")]
    InvalidRef(String),
    /// A task status change that the lifecycle does not allow.
    #[error("task {task}: cannot go from {from} to {to}")]
    InvalidTransition {
        /// The task attempt.
        task: String,
        /// Its current status ("none" if it has none).
        from: &'static str,
        /// The status asked for.
        to: &'static str,
    },
    /// A run with no record (no run or task status was ever written).
    #[error("unknown run {run}: it has no status (was it started under another tenant or DAG?)")]
    UnknownRun {
        /// The run, as tenant/dag/run.
        run: String,
    },
    /// A task with no status and no state in its run.
    #[error("unknown task {task}: it has no status and no state")]
    UnknownTask {
        /// The task attempt.
        task: String,
    },
    /// A run-shared variable marked immutable was written again.
    #[error("shared variable {key:?} of run {run} is immutable and already set")]
    ImmutableShared {
        /// The run.
        run: String,
        /// The variable.
        key: String,
    },
    /// No checkpoint of that name in that run.
    #[error("run {run} has no checkpoint named {name:?}")]
    UnknownCheckpoint {
        /// The run id.
        run: String,
        /// The checkpoint's name.
        name: String,
    },
    /// A checkpoint's captured state no longer matches its checksum.
    #[error("checkpoint {name:?} of run {run} fails its checksum: not restored")]
    ChecksumMismatch {
        /// The run id.
        run: String,
        /// The checkpoint's name.
        name: String,
    },
    /// A read of the log from an LSN the log no longer holds: retention
    /// removed (or archived) the segments before `first`.
    #[error(
        "the log no longer holds LSN {from}: it starts at LSN {first} (older segments were removed or archived by retention)"
    )]
    HistoryRemoved {
        /// The LSN asked for, or, when retention removed segments while a
        /// scan read, the next LSN the scan was to read.
        from: u64,
        /// The oldest LSN the log still holds.
        first: u64,
    },
    /// A URL `Kernel::open_url` does not know.
    #[error("unsupported state URL {url:?}: use file:///path or memory://")]
    UnsupportedUrl {
        /// The URL given.
        url: String,
    },
    /// A value that does not serialize or deserialize as the JSON asked for.
    #[error("value of key {key:?} is not the JSON expected: {source}")]
    Json {
        /// The key.
        key: String,
        /// serde_json's error.
        #[source]
        source: serde_json::Error,
    },
    /// An error from the storage engine below (I/O, limits, poisoned,
    /// closed, corruption).
    #[error(transparent)]
    Engine(#[from] waymark_engine::Error),
}

/// The kernel's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
