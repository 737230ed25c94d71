//! The kernel's one error type.
//!
//! Every refusal names what it found, typed: a transition error carries the
//! statuses, a retry of an attempt that is not the latest says which is.
//! Errors of the storage below keep their cause: the engine's as
//! [`Error::Engine`] (a poison keeps the failure that caused it as its
//! source), another backend's as [`Error::Backend`].

use waymark_engine::{Condition, Found, RunStatus, TaskStatusKind};

/// What went wrong in a kernel call. Every misuse is one of these, naming
/// what was wrong; none panics.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A `TaskRef` (or run or task name, or key) that cannot be used.
    #[error("invalid task reference: {0}")]
    InvalidRef(String),
    /// A batch that cannot be committed as built (two transitions in it).
    #[error("invalid batch: {0}")]
    InvalidBatch(String),
    /// A task status change that the lifecycle does not allow from the
    /// attempt's status when its turn came: of racing callers of one
    /// transition, every one but the winner gets this, with the status the
    /// winner left.
    #[error("task {task}: cannot go from {} to {to}", from.map_or("no status", TaskStatusKind::name))]
    InvalidTransition {
        /// The task attempt.
        task: String,
        /// Its status (`None`: it had none).
        from: Option<TaskStatusKind>,
        /// The status asked for.
        to: TaskStatusKind,
    },
    /// The attempt is not its task's latest: a later attempt exists (a
    /// retry made it), so this one can no longer be started, scheduled or
    /// retried. Of racing retries of one attempt, every one but the winner
    /// gets this, naming the attempt the winner made.
    #[error("task {task} is not the latest attempt: try {latest} is")]
    NotLatestAttempt {
        /// The task attempt asked for.
        task: String,
        /// The task's latest try number.
        latest: u32,
    },
    /// A retry while an attempt of the task has not finished: it is
    /// scheduled or running. (After a crash, [`crate::Kernel::resume`]
    /// records running attempts as interrupted; cancel a scheduled one to
    /// retry it.)
    #[error(
        "task {task} is {status}: only a finished attempt (succeeded, failed, interrupted or cancelled) is retried"
    )]
    NotRetryable {
        /// The task attempt.
        task: String,
        /// Its status.
        status: TaskStatusKind,
    },
    /// Another attempt of the task is live (scheduled or running): a task
    /// runs one attempt at a time, so a new one is neither scheduled,
    /// started nor cancelled beside it.
    #[error("task {task}: try {try_number} of it is {status}; finish or cancel it first")]
    AttemptInProgress {
        /// The task attempt asked for.
        task: String,
        /// The live attempt's try number.
        try_number: u32,
        /// Its status.
        status: TaskStatusKind,
    },
    /// A task of a run that is over (succeeded, failed or cancelled) does
    /// not start.
    #[error("run {run} is {status}: its tasks do not start any more")]
    RunFinished {
        /// The run, as tenant/dag/run.
        run: String,
        /// Its status.
        status: RunStatus,
    },
    /// A run status change that the run's lifecycle does not allow.
    #[error("run {run}: cannot go from {} to {to}", from.map_or("no status", RunStatus::name))]
    InvalidRunTransition {
        /// The run, as tenant/dag/run.
        run: String,
        /// Its status (`None`: it had no record).
        from: Option<RunStatus>,
        /// The status asked for.
        to: RunStatus,
    },
    /// A task of a paused run cannot start until the run is resumed.
    #[error("run {run} is paused: its tasks start once it is resumed")]
    RunPaused {
        /// The run, as tenant/dag/run.
        run: String,
    },
    /// A run with no record and no state.
    #[error(
        "unknown run {run}: it has no status and no state (was it started under another tenant or DAG?)"
    )]
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
    /// A run-shared variable marked immutable was written again. Of two
    /// racing first writes, the later gets this.
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
        /// The run, as tenant/dag/run.
        run: String,
        /// The checkpoint's name.
        name: String,
    },
    /// A checkpoint's captured state no longer matches its checksum.
    #[error("checkpoint {name:?} of run {run} fails its checksum: not restored")]
    ChecksumMismatch {
        /// The run, as tenant/dag/run.
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
    /// A condition of a backend's conditional append did not hold and no
    /// more specific error applies; nothing was written. Kernel calls turn
    /// the conditions they set into the errors above; a [`crate::Backend`]
    /// returns this for every failed condition.
    #[error("condition {index} does not hold ({condition}): found {found}")]
    Conflict {
        /// The index of the first condition that failed.
        index: usize,
        /// That condition.
        condition: Box<Condition>,
        /// What the backend held instead.
        found: Found,
    },
    /// A decision that kept meeting concurrent changes (each try found the
    /// state changed by another writer before its batch's turn): given up
    /// after `tries`. Nothing was written by the last try.
    #[error("{what}: the state kept changing under {tries} tries; try again")]
    Contended {
        /// The call.
        what: String,
        /// How many times it was decided and refused.
        tries: u32,
    },
    /// A watch's thread could not be started.
    #[error("could not start the watch thread: {0}")]
    Spawn(#[source] std::io::Error),
    /// An error from the waymark engine below (I/O, limits, poisoned,
    /// closed, corruption).
    #[error(transparent)]
    Engine(waymark_engine::Error),
    /// An error from a backend other than the engine (its storage, its
    /// connection), with its cause.
    #[error("backend: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl From<waymark_engine::Error> for Error {
    fn from(e: waymark_engine::Error) -> Error {
        match e {
            waymark_engine::Error::Conflict {
                index,
                condition,
                found,
            } => Error::Conflict {
                index,
                condition,
                found,
            },
            waymark_engine::Error::Removed { expected, first } => Error::HistoryRemoved {
                from: expected.0,
                first: first.0,
            },
            e => Error::Engine(e),
        }
    }
}

impl Error {
    /// Whether the storage refuses writes until it is reopened (a failed
    /// write or sync poisoned the engine).
    pub fn is_poisoned(&self) -> bool {
        matches!(self, Error::Engine(e) if e.is_poisoned())
    }

    /// Whether the disk filled up, here or anywhere in the chain of causes
    /// (a poison keeps the full disk that caused it).
    pub fn is_disk_full(&self) -> bool {
        matches!(self, Error::Engine(e) if e.is_disk_full())
    }

    /// Whether this is a refusal of a decision: the state the call found
    /// does not allow it (a transition, a retry, a write-once variable, a
    /// paused run, a conflict), or kept changing under it (`Contended`).
    /// Nothing was written.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            Error::InvalidTransition { .. }
                | Error::NotLatestAttempt { .. }
                | Error::NotRetryable { .. }
                | Error::AttemptInProgress { .. }
                | Error::InvalidRunTransition { .. }
                | Error::RunPaused { .. }
                | Error::RunFinished { .. }
                | Error::ImmutableShared { .. }
                | Error::UnknownRun { .. }
                | Error::UnknownTask { .. }
                | Error::UnknownCheckpoint { .. }
                | Error::Conflict { .. }
                | Error::Contended { .. }
        )
    }
}

/// The kernel's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
