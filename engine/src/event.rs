//! Events: the only things the log stores.
//!
//! An event is one change to the state of workflow tasks, with the time it
//! was made. Events are encoded with rkyv and read back only through
//! validation: bytes from disk are untrusted. A batch of events (one frame in
//! the log) is archived as an `rkyv` vector of [`Event`]s; see FORMAT.md for
//! the byte layout and how the format is versioned.
//!
//! The engine stores events and (in later layers) materializes views from
//! them; it gives them no meaning beyond that. The kernel API builds them.
//!
//! Changing any type in this module changes the on-disk format: bump
//! [`crate::log::FORMAT_VERSION`] and keep a reader for the old version.

// rkyv's derive generates resolver enums whose fields carry no docs; every
// item written in this file is documented by hand.
#![allow(missing_docs)]

use std::borrow::Cow;
use std::sync::Arc;

use rkyv::{Archive, Deserialize, Serialize};

use crate::error::{Error, Limit, Result};
use crate::options::Limits;

/// A run: one execution of a DAG, owned by a tenant.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[rkyv(derive(Debug), attr(allow(missing_docs)))]
pub struct RunScope {
    /// The tenant that owns the run.
    pub tenant: String,
    /// The DAG's name.
    pub dag: String,
    /// The run's id, unique within the tenant and DAG.
    pub run: String,
}

/// A task within a run, across all its attempts.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[rkyv(derive(Debug), attr(allow(missing_docs)))]
pub struct TaskScope {
    /// The run.
    pub run: RunScope,
    /// The task's id within the run.
    pub task: String,
}

/// One task attempt: one try of one task (`try_number` counts from 1).
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[rkyv(derive(Debug), attr(allow(missing_docs)))]
pub struct AttemptScope {
    /// The task.
    pub task: TaskScope,
    /// Which try, from 1.
    pub try_number: u32,
}

/// The status of a task attempt.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug), attr(allow(missing_docs)))]
pub enum TaskStatus {
    /// Waiting to run.
    Scheduled,
    /// Running now.
    Running,
    /// Finished; `result` is the task's output (may be empty).
    Succeeded {
        /// The task's result bytes.
        result: Vec<u8>,
    },
    /// Failed with an error message and a kind (for retry policies).
    Failed {
        /// What went wrong.
        error: String,
        /// The failure's kind, e.g. `timeout` or `user`.
        kind: String,
    },
    /// Was running when its worker died.
    Interrupted,
    /// Cancelled before finishing.
    Cancelled,
}

/// The status of a run.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug), attr(allow(missing_docs)))]
pub enum RunStatus {
    /// Created, not started.
    Created,
    /// Running.
    Running,
    /// Every task finished.
    Succeeded,
    /// The run failed.
    Failed,
    /// The run was cancelled.
    Cancelled,
    /// The run is paused: no task of it starts until it is resumed (format
    /// version 2).
    Paused,
}

/// The run and task that started a sub-workflow.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug), attr(allow(missing_docs)))]
pub struct ParentRef {
    /// The parent run.
    pub run: RunScope,
    /// The task in the parent run that started this run.
    pub task: String,
}

/// How a value's bytes are stored: as written, or compressed (format
/// version 3; FORMAT.md, "Value compression"). The engine compresses on
/// [`crate::Engine::append`] when [`crate::Options::compression`] asks it
/// to, and every reader gets the value back as written: a caller always
/// appends [`Codec::Raw`], and [`crate::log::FrameView::decode`] and the
/// views return raw values. Only the zero-copy
/// [`crate::log::FrameView::events`] shows stored bytes; [`Codec::decode`]
/// restores them.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[rkyv(derive(Debug, PartialEq, Eq), attr(allow(missing_docs)))]
#[repr(u8)]
pub enum Codec {
    /// The bytes as written.
    #[default]
    Raw = 0,
    /// A zstd frame of the bytes as written.
    Zstd = 1,
}

/// The largest value a compressed value may restore to: the format's frame
/// limit (1 GiB). A zstd frame that claims more is refused unread.
pub const DECOMPRESSED_BYTES_MAX: u64 = crate::log::frame::FRAME_PAYLOAD_BYTES_MAX;

impl Codec {
    /// The bytes as written, from `stored` (borrowed when raw).
    ///
    /// # Errors
    ///
    /// Why `stored` is not what its codec says: not a zstd frame, no
    /// recorded size, a size over [`DECOMPRESSED_BYTES_MAX`], or a frame
    /// that does not restore to the size it records.
    ///
    /// ```
    /// use waymark_engine::Codec;
    ///
    /// assert_eq!(&*Codec::Raw.decode(b"12 pages")?, b"12 pages");
    /// assert!(Codec::Zstd.decode(b"12 pages").is_err());
    /// # Ok::<(), String>(())
    /// ```
    pub fn decode(self, stored: &[u8]) -> std::result::Result<Cow<'_, [u8]>, String> {
        match self {
            Codec::Raw => Ok(Cow::Borrowed(stored)),
            Codec::Zstd => decompress(stored).map(Cow::Owned),
        }
    }
}

impl ArchivedCodec {
    /// The codec, from its archived form.
    pub fn native(&self) -> Codec {
        match self {
            ArchivedCodec::Raw => Codec::Raw,
            ArchivedCodec::Zstd => Codec::Zstd,
        }
    }
}

/// The size a zstd frame records for its content.
fn zstd_content_size(frame: &[u8]) -> std::result::Result<u64, String> {
    match zstd::zstd_safe::get_frame_content_size(frame) {
        Ok(Some(n)) if n <= DECOMPRESSED_BYTES_MAX => Ok(n),
        Ok(Some(n)) => Err(format!(
            "a compressed value claims {n} bytes, over the format's {DECOMPRESSED_BYTES_MAX}"
        )),
        Ok(None) => Err("a compressed value's zstd frame does not record its size".into()),
        Err(_) => Err("a compressed value is not a zstd frame".into()),
    }
}

thread_local! {
    /// A zstd context per thread, at the level it was made for: a context
    /// holds megabytes of tables, too much to build per value.
    static COMPRESSOR: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { std::cell::RefCell::new(None) };
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

fn decompress(frame: &[u8]) -> std::result::Result<Vec<u8>, String> {
    let size = zstd_content_size(frame)?;
    let size = usize::try_from(size).map_err(|_| "a compressed value is too large".to_string())?;
    let out = DECOMPRESSOR.with_borrow_mut(|slot| {
        if slot.is_none() {
            *slot = Some(zstd::bulk::Decompressor::new().map_err(|e| e.to_string())?);
        }
        let d = slot.as_mut().expect("filled just above");
        d.decompress(frame, size).map_err(|e| e.to_string())
    });
    let out = out.map_err(|why| format!("a compressed value does not decompress: {why}"))?;
    if out.len() != size {
        return Err(format!(
            "a compressed value restored to {} bytes, not the {size} it records",
            out.len()
        ));
    }
    Ok(out)
}

/// `value` compressed at `level`, if that makes it smaller.
fn compress(value: &[u8], level: i32) -> Option<Vec<u8>> {
    COMPRESSOR.with_borrow_mut(|slot| {
        if slot.as_ref().is_none_or(|(l, _)| *l != level) {
            *slot = Some((level, zstd::bulk::Compressor::new(level).ok()?));
        }
        let (_, c) = slot.as_mut().expect("filled just above");
        // A failure (for want of memory) stores the value raw.
        let out = c.compress(value).ok()?;
        (out.len() < value.len()).then_some(out)
    })
}

/// Compresses, in place, every raw value of `events` of at least
/// `options.min_bytes` that shrinks.
pub(crate) fn compress_values(events: &mut [Event], options: &crate::options::Compression) {
    let min = options.min_bytes as usize;
    for event in events {
        let (codec, value) = match &mut event.body {
            EventBody::Put { codec, value, .. }
            | EventBody::TaskPut { codec, value, .. }
            | EventBody::SharedPut { codec, value, .. } => (codec, value),
            _ => continue,
        };
        if *codec != Codec::Raw || value.len() < min || value.len() as u64 > DECOMPRESSED_BYTES_MAX
        {
            continue;
        }
        if let Some(out) = compress(value, options.level) {
            *value = out;
            *codec = Codec::Zstd;
        }
    }
}

/// Restores, in place, every compressed value of `events`.
pub(crate) fn decompress_values(events: &mut [Event]) -> std::result::Result<(), String> {
    for event in events {
        let (codec, value) = match &mut event.body {
            EventBody::Put { codec, value, .. }
            | EventBody::TaskPut { codec, value, .. }
            | EventBody::SharedPut { codec, value, .. } => (codec, value),
            _ => continue,
        };
        if *codec == Codec::Zstd {
            *value = decompress(value)?;
            *codec = Codec::Raw;
        }
    }
    Ok(())
}

/// What changed.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug), attr(allow(missing_docs)))]
pub enum EventBody {
    /// Sets a key of a task attempt's attempt state.
    Put {
        /// How `value` is stored (always [`Codec::Raw`] from a caller).
        /// First, so that it sits in what was padding before format
        /// version 3: older events read as `Raw`.
        codec: Codec,
        /// The task attempt. Shared: the sets of one batch, or of one
        /// `RunContext`, name their attempt without a copy each; the log
        /// holds it inline in every event all the same (`Unshare`).
        #[rkyv(with = rkyv::with::Unshare)]
        attempt: Arc<AttemptScope>,
        /// The key.
        key: String,
        /// The value.
        value: Vec<u8>,
        /// Caller-defined metadata (for example JSON); may be empty.
        meta: Vec<u8>,
    },
    /// Deletes a key of a task attempt's attempt state.
    Delete {
        /// The task attempt.
        attempt: AttemptScope,
        /// The key.
        key: String,
    },
    /// Clears the attempt state of every attempt of a task (before a retry).
    ClearTask {
        /// The task.
        task: TaskScope,
    },
    /// Sets a key of a task's task state, which survives retries.
    TaskPut {
        /// How `value` is stored (always [`Codec::Raw`] from a caller).
        codec: Codec,
        /// The task.
        task: TaskScope,
        /// The key.
        key: String,
        /// The value.
        value: Vec<u8>,
    },
    /// Deletes a key of a task's task state.
    TaskDelete {
        /// The task.
        task: TaskScope,
        /// The key.
        key: String,
    },
    /// A task attempt's status changed.
    TaskStatus {
        /// The task attempt.
        attempt: AttemptScope,
        /// The new status.
        status: TaskStatus,
        /// The id of the worker that made the change.
        worker: String,
    },
    /// A run's status changed (the first one creates the run).
    RunStatus {
        /// The run.
        run: RunScope,
        /// The new status.
        status: RunStatus,
        /// The parent run and task, for a sub-workflow.
        parent: Option<ParentRef>,
    },
    /// Captures the run's state (attempt state, task state, shared
    /// variables) under a name. The views compute the capture and its
    /// checksum when they apply the event, so replaying the log always
    /// captures the same state.
    Checkpoint {
        /// The run.
        run: RunScope,
        /// The checkpoint's name.
        name: String,
    },
    /// Brings a run's state back to a checkpoint.
    RestoreCheckpoint {
        /// The run.
        run: RunScope,
        /// The checkpoint's name.
        name: String,
    },
    /// Sets a run-scoped shared variable.
    SharedPut {
        /// How `value` is stored (always [`Codec::Raw`] from a caller).
        codec: Codec,
        /// The run.
        run: RunScope,
        /// The variable's key.
        key: String,
        /// The value.
        value: Vec<u8>,
        /// Whether the variable may never be written again.
        immutable: bool,
    },
    /// Removes a run and all its state.
    PurgeRun {
        /// The run.
        run: RunScope,
    },
    /// Deletes a named checkpoint of a run (checkpoint retention).
    DeleteCheckpoint {
        /// The run.
        run: RunScope,
        /// The checkpoint's name.
        name: String,
    },
}

/// One change, with the time it was made.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug), attr(allow(missing_docs)))]
pub struct Event {
    /// When the change was made, in microseconds since the Unix epoch.
    pub ts_micros: i64,
    /// What changed.
    pub body: EventBody,
}

impl TaskStatus {
    /// The status's name, as the CLI and the JSON output spell it:
    /// `scheduled`, `running`, `succeeded`, `failed`, `interrupted`,
    /// `cancelled`.
    pub fn name(&self) -> &'static str {
        match self {
            TaskStatus::Scheduled => "scheduled",
            TaskStatus::Running => "running",
            TaskStatus::Succeeded { .. } => "succeeded",
            TaskStatus::Failed { .. } => "failed",
            TaskStatus::Interrupted => "interrupted",
            TaskStatus::Cancelled => "cancelled",
        }
    }
}

impl RunStatus {
    /// Every status, in the order of their encoding.
    pub const ALL: [RunStatus; 6] = [
        RunStatus::Created,
        RunStatus::Running,
        RunStatus::Succeeded,
        RunStatus::Failed,
        RunStatus::Cancelled,
        RunStatus::Paused,
    ];

    /// The status's name: `created`, `running`, `succeeded`, `failed`,
    /// `cancelled`, `paused`.
    pub fn name(self) -> &'static str {
        match self {
            RunStatus::Created => "created",
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
            RunStatus::Paused => "paused",
        }
    }

    /// Whether the run is over: succeeded, failed or cancelled.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            RunStatus::Succeeded | RunStatus::Failed | RunStatus::Cancelled
        )
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Event {
    /// An event made now.
    ///
    /// # Examples
    ///
    /// ```
    /// use waymark_engine::{Event, EventBody, RunScope};
    ///
    /// let run = RunScope { tenant: "acme".into(), dag: "etl".into(), run: "r1".into() };
    /// let e = Event::now(EventBody::PurgeRun { run });
    /// assert!(e.ts_micros > 0);
    /// ```
    pub fn now(body: EventBody) -> Event {
        Event {
            ts_micros: now_micros(),
            body,
        }
    }

    /// The event kind's stable name, as the CLI and JSON export print it.
    pub fn kind(&self) -> &'static str {
        match &self.body {
            EventBody::Put { .. } => "put",
            EventBody::Delete { .. } => "delete",
            EventBody::ClearTask { .. } => "clear_task",
            EventBody::TaskPut { .. } => "task_put",
            EventBody::TaskDelete { .. } => "task_delete",
            EventBody::TaskStatus { .. } => "task_status",
            EventBody::RunStatus { .. } => "run_status",
            EventBody::Checkpoint { .. } => "checkpoint",
            EventBody::RestoreCheckpoint { .. } => "restore_checkpoint",
            EventBody::SharedPut { .. } => "shared_put",
            EventBody::PurgeRun { .. } => "purge_run",
            EventBody::DeleteCheckpoint { .. } => "delete_checkpoint",
        }
    }

    /// The run the event belongs to (every event belongs to one).
    pub fn run(&self) -> &RunScope {
        match &self.body {
            EventBody::Put { attempt, .. } => &attempt.task.run,
            EventBody::Delete { attempt, .. } | EventBody::TaskStatus { attempt, .. } => {
                &attempt.task.run
            }
            EventBody::ClearTask { task }
            | EventBody::TaskPut { task, .. }
            | EventBody::TaskDelete { task, .. } => &task.run,
            EventBody::RunStatus { run, .. }
            | EventBody::Checkpoint { run, .. }
            | EventBody::RestoreCheckpoint { run, .. }
            | EventBody::SharedPut { run, .. }
            | EventBody::PurgeRun { run }
            | EventBody::DeleteCheckpoint { run, .. } => run,
        }
    }

    /// The task the event belongs to, if it is about one task.
    pub fn task(&self) -> Option<&str> {
        match &self.body {
            EventBody::Put { attempt, .. } => Some(&attempt.task.task),
            EventBody::Delete { attempt, .. } | EventBody::TaskStatus { attempt, .. } => {
                Some(&attempt.task.task)
            }
            EventBody::ClearTask { task }
            | EventBody::TaskPut { task, .. }
            | EventBody::TaskDelete { task, .. } => Some(&task.task),
            _ => None,
        }
    }

    /// The try number, if the event is about one task attempt.
    pub fn try_number(&self) -> Option<u32> {
        match &self.body {
            EventBody::Put { attempt, .. } => Some(attempt.try_number),
            EventBody::Delete { attempt, .. } | EventBody::TaskStatus { attempt, .. } => {
                Some(attempt.try_number)
            }
            _ => None,
        }
    }

    /// The state key, if the event writes one (attempt state, task state or
    /// a shared variable).
    pub fn key(&self) -> Option<&str> {
        match &self.body {
            EventBody::Put { key, .. }
            | EventBody::Delete { key, .. }
            | EventBody::TaskPut { key, .. }
            | EventBody::TaskDelete { key, .. }
            | EventBody::SharedPut { key, .. } => Some(key),
            _ => None,
        }
    }

    /// Checks the event against `limits`, naming the first limit exceeded.
    /// Returns the bytes of its names, keys and values, which its encoding
    /// holds at least.
    pub(crate) fn check(&self, limits: &Limits) -> Result<u64> {
        // Names first, then keys, then values (the order in which a limit
        // is named when several are exceeded), without allocating: this
        // runs for every event of every batch.
        let mut t = Tally { limits, total: 0 };
        match &self.body {
            EventBody::Put {
                codec,
                attempt,
                key,
                value,
                meta,
            } => {
                t.task(&attempt.task)?;
                t.key(key)?;
                t.coded(*codec, key, value)?;
                t.value(meta)?;
            }
            EventBody::Delete { attempt, key } => {
                t.task(&attempt.task)?;
                t.key(key)?;
            }
            EventBody::ClearTask { task } => t.task(task)?,
            EventBody::TaskPut {
                codec,
                task,
                key,
                value,
            } => {
                t.task(task)?;
                t.key(key)?;
                t.coded(*codec, key, value)?;
            }
            EventBody::TaskDelete { task, key } => {
                t.task(task)?;
                t.key(key)?;
            }
            EventBody::TaskStatus {
                attempt,
                status,
                worker,
            } => {
                t.task(&attempt.task)?;
                t.name(worker)?;
                match status {
                    TaskStatus::Succeeded { result } => t.value(result)?,
                    TaskStatus::Failed { error, kind } => {
                        t.name(kind)?;
                        t.value(error.as_bytes())?;
                    }
                    _ => {}
                }
            }
            EventBody::RunStatus { run, parent, .. } => {
                t.run(run)?;
                if let Some(parent) = parent {
                    t.run(&parent.run)?;
                    t.name(&parent.task)?;
                }
            }
            EventBody::Checkpoint { run, name }
            | EventBody::RestoreCheckpoint { run, name }
            | EventBody::DeleteCheckpoint { run, name } => {
                t.run(run)?;
                t.name(name)?;
            }
            EventBody::SharedPut {
                codec,
                run,
                key,
                value,
                ..
            } => {
                t.run(run)?;
                t.key(key)?;
                t.coded(*codec, key, value)?;
            }
            EventBody::PurgeRun { run } => t.run(run)?,
        }
        exceeds(
            Limit::EventBytes,
            t.total,
            u64::from(limits.event_bytes_max),
        )?;
        Ok(t.total)
    }
}

/// The bytes of an event's names, keys and values so far, each checked
/// against its limit as it is added.
struct Tally<'a> {
    limits: &'a Limits,
    total: u64,
}

impl Tally<'_> {
    fn add(&mut self, what: Limit, len: usize, max: u32) -> Result<()> {
        let len = len as u64;
        exceeds(what, len, u64::from(max))?;
        self.total += len;
        Ok(())
    }

    fn name(&mut self, name: &str) -> Result<()> {
        self.add(Limit::NameBytes, name.len(), self.limits.name_bytes_max)
    }

    fn key(&mut self, key: &str) -> Result<()> {
        self.add(Limit::KeyBytes, key.len(), self.limits.key_bytes_max)
    }

    fn value(&mut self, value: &[u8]) -> Result<()> {
        self.add(Limit::ValueBytes, value.len(), self.limits.value_bytes_max)
    }

    /// A value as stored: the limit is on its bytes as written, which a
    /// compressed value's zstd frame records.
    fn coded(&mut self, codec: Codec, key: &str, value: &[u8]) -> Result<()> {
        match codec {
            Codec::Raw => self.value(value),
            Codec::Zstd => {
                let raw = zstd_content_size(value).map_err(|why| Error::InvalidEvent {
                    key: key.to_string(),
                    why,
                })?;
                exceeds(
                    Limit::ValueBytes,
                    raw,
                    u64::from(self.limits.value_bytes_max),
                )?;
                self.total += raw;
                Ok(())
            }
        }
    }

    fn run(&mut self, run: &RunScope) -> Result<()> {
        self.name(&run.tenant)?;
        self.name(&run.dag)?;
        self.name(&run.run)
    }

    fn task(&mut self, task: &TaskScope) -> Result<()> {
        self.run(&task.run)?;
        self.name(&task.task)
    }
}

fn exceeds(what: Limit, actual_bytes: u64, max_bytes: u64) -> Result<()> {
    if actual_bytes > max_bytes {
        return Err(Error::LimitExceeded {
            what,
            actual_bytes,
            max_bytes,
        });
    }
    Ok(())
}

/// Microseconds since the Unix epoch, now.
pub fn now_micros() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_micros()).unwrap_or(i64::MAX)
}

/// The archived form of a batch, as it sits in a frame's payload.
pub type ArchivedBatch = rkyv::vec::ArchivedVec<ArchivedEvent>;

/// Encodes a batch of events into a frame payload.
///
/// # Errors
///
/// [`Error::LimitExceeded`] (`BatchBytes`) if the encoding does not fit
/// rkyv's 32-bit relative pointers: a payload past 2 GiB, over any batch
/// limit (its `max_bytes` is the format's frame limit; the caller's
/// configured limit is smaller).
pub(crate) fn encode_batch(events: &Vec<Event>) -> Result<rkyv::util::AlignedVec> {
    encode_batch_in(events, rkyv::util::AlignedVec::new())
}

/// [`encode_batch`] into `out`, which the caller sized for the batch: a
/// large batch is then written once, not copied each time its buffer
/// doubles.
pub(crate) fn encode_batch_in(
    events: &Vec<Event>,
    out: rkyv::util::AlignedVec,
) -> Result<rkyv::util::AlignedVec> {
    rkyv::api::high::to_bytes_in::<_, rkyv::rancor::Error>(events, out).map_err(|_| {
        Error::LimitExceeded {
            what: Limit::BatchBytes,
            // An offset past i32::MAX is what fails, so the encoding is at
            // least that long.
            actual_bytes: i32::MAX as u64 + 1,
            max_bytes: crate::log::frame::FRAME_PAYLOAD_BYTES_MAX,
        }
    })
}

/// The encoded payload size of a batch (for benchmarks and size planning).
#[doc(hidden)]
pub fn __payload_len(events: &[Event]) -> usize {
    encode_batch(&events.to_vec()).map_or(usize::MAX, |payload| payload.len())
}

/// Validates a frame payload as a batch and returns its archived view.
///
/// # Errors
///
/// The reason the bytes are not a valid batch, if they are not.
pub fn access_batch(payload: &[u8]) -> std::result::Result<&ArchivedBatch, String> {
    access_with_reason::<ArchivedBatch>(payload, "batch")
}

/// Validates `bytes` (16-aligned) as an archived `A` and returns it, or why
/// they are not one; `what` names `A` in the fallback reason.
///
/// Validates with rkyv's zero-sized error first: the same checks, but about
/// half the instructions of validating with a boxed error (the error
/// plumbing keeps the checks from inlining; BENCHMARKS.md, "Replay:
/// validating with rkyv's zero-sized error"). Only bytes that fail are
/// validated again, to say why. The low-level validator leaves out the
/// shared-pointer registry, which events and view records have no use for:
/// were an `Rc` or `Arc` ever added to them, this would stop compiling
/// rather than validate less.
pub(crate) fn access_with_reason<'a, A>(
    bytes: &'a [u8],
    what: &str,
) -> std::result::Result<&'a A, String>
where
    A: rkyv::Portable
        + for<'b> rkyv::bytecheck::CheckBytes<rkyv::api::low::LowValidator<'b, rkyv::rancor::Failure>>
        + for<'b> rkyv::bytecheck::CheckBytes<
            rkyv::api::high::HighValidator<'b, rkyv::rancor::BoxedError>,
        >,
{
    match rkyv::api::low::access::<A, rkyv::rancor::Failure>(bytes) {
        Ok(archived) => Ok(archived),
        Err(_) => match rkyv::access::<A, rkyv::rancor::BoxedError>(bytes) {
            Err(e) => Err(e.to_string()),
            // Both runs apply the same checks to the same bytes, so this
            // arm is not reached; if it were, the bytes are still invalid.
            Ok(_) => Err(format!("the {what} failed validation")),
        },
    }
}

/// Validates and decodes a frame payload into owned events.
///
/// # Errors
///
/// The reason the bytes are not a valid batch, if they are not.
pub fn decode_batch(payload: &[u8]) -> std::result::Result<Vec<Event>, String> {
    let archived = access_batch(payload)?;
    // Deserializing a validated batch into owned events cannot fail but
    // for want of memory, which aborts; the zero-sized error costs nothing.
    rkyv::deserialize::<Vec<Event>, rkyv::rancor::Failure>(archived)
        .map_err(|_| "the batch could not be deserialized".to_string())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const GOLDEN: (usize, u32) = (1232, 2_427_136_901);

    pub(crate) fn sample_task() -> TaskScope {
        TaskScope {
            run: RunScope {
                tenant: "t".into(),
                dag: "d".into(),
                run: "r".into(),
            },
            task: "ocr".into(),
        }
    }

    pub(crate) fn sample(i: u32) -> Event {
        let run = RunScope {
            tenant: "t".into(),
            dag: "d".into(),
            run: format!("r{i}"),
        };
        Event {
            ts_micros: 1_700_000_000_000_000 + i64::from(i),
            body: EventBody::Put {
                codec: Codec::Raw,
                attempt: std::sync::Arc::new(AttemptScope {
                    task: TaskScope {
                        run,
                        task: "ocr".into(),
                    },
                    try_number: 1,
                }),
                key: format!("k{i}"),
                value: vec![i as u8; 40],
                meta: b"{}".to_vec(),
            },
        }
    }

    #[test]
    fn batch_round_trips() {
        let events: Vec<Event> = (0..10).map(sample).collect();
        let bytes = encode_batch(&events).unwrap();
        assert_eq!(decode_batch(&bytes).unwrap(), events);
    }

    /// The bytes a batch encodes to, pinned: a change to any event type
    /// changes the on-disk format and must bump `FORMAT_VERSION` (this
    /// test then gets the new figures). Recorded before `Put`'s attempt
    /// became an `Arc` (with `Unshare`), which kept them, and on format
    /// version 2, before `Put` had a `codec`: a raw value's codec takes the
    /// padding byte after the variant's tag, which rkyv zeroes, so version
    /// 1 and 2 payloads read as version 3 ones with `Codec::Raw`.
    #[test]
    fn the_encoding_is_pinned() {
        let events: Vec<Event> = (0..10).map(sample).collect();
        let bytes = encode_batch(&events).unwrap();
        let got = (bytes.len(), crc32fast::hash(&bytes));
        assert_eq!(got, GOLDEN);
    }

    /// Sets that share one attempt (as a `RunContext`'s do) encode each
    /// its own copy of it: the same bytes as with an attempt apiece.
    #[test]
    fn a_shared_attempt_encodes_inline() {
        let first = match sample(0).body {
            EventBody::Put { attempt, .. } => attempt,
            _ => unreachable!("sample makes puts"),
        };
        let one: Vec<Event> = (0..10)
            .map(|i| {
                let mut e = sample(i);
                if let EventBody::Put { attempt, .. } = &mut e.body {
                    *attempt = Arc::clone(&first);
                }
                e
            })
            .collect();
        let copies: Vec<Event> = (0..10)
            .map(|i| {
                let mut e = sample(i);
                if let EventBody::Put { attempt, .. } = &mut e.body {
                    *attempt = Arc::new((*first).clone());
                }
                e
            })
            .collect();
        let bytes = encode_batch(&one).unwrap();
        assert_eq!(bytes.as_slice(), encode_batch(&copies).unwrap().as_slice());
        assert_eq!(decode_batch(&bytes).unwrap(), copies);
    }

    #[test]
    fn a_batch_encoded_into_a_sized_buffer_is_the_same_bytes() {
        let events: Vec<Event> = (0..50).map(sample).collect();
        let grown = encode_batch(&events).unwrap();
        for capacity in [0, 16, grown.len() / 2, grown.len(), grown.len() * 3] {
            let sized =
                encode_batch_in(&events, rkyv::util::AlignedVec::with_capacity(capacity)).unwrap();
            assert_eq!(sized.as_slice(), grown.as_slice(), "capacity {capacity}");
        }
        assert_eq!(decode_batch(&grown).unwrap(), events);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let events: Vec<Event> = (0..3).map(sample).collect();
        let mut bytes = encode_batch(&events).unwrap().to_vec();
        let n = bytes.len();
        bytes[n - 4..].copy_from_slice(&[0xff; 4]);
        let mut aligned = rkyv::util::AlignedVec::<16>::new();
        aligned.extend_from_slice(&bytes);
        assert!(decode_batch(&aligned).is_err());
        assert!(decode_batch(&[]).is_err());
    }

    #[test]
    fn a_rejected_batch_says_why() {
        // The fast check carries no reason; the second run must supply
        // rkyv's, which names what is wrong.
        let events: Vec<Event> = (0..3).map(sample).collect();
        let good = encode_batch(&events).unwrap();
        let mut bytes = good.to_vec();
        let n = bytes.len();
        // The root vector's relative pointer, in the last 8 bytes: point it
        // far outside the buffer.
        bytes[n - 8..n - 4].copy_from_slice(&0x4000_0000u32.to_le_bytes());
        let mut aligned = rkyv::util::AlignedVec::<16>::new();
        aligned.extend_from_slice(&bytes);
        let why = access_batch(&aligned).unwrap_err();
        assert!(!why.is_empty());
        assert_ne!(why, "the batch failed validation", "the reason was lost");
        assert!(access_batch(&good).is_ok());
    }

    #[test]
    fn limits_name_the_field() {
        let limits = Limits {
            key_bytes_max: 1,
            ..Limits::default()
        };
        let err = sample(1).check(&limits).unwrap_err();
        assert!(matches!(
            err,
            Error::LimitExceeded {
                what: Limit::KeyBytes,
                ..
            }
        ));
        let limits = Limits {
            value_bytes_max: 10,
            ..Limits::default()
        };
        let err = sample(1).check(&limits).unwrap_err();
        assert!(matches!(
            err,
            Error::LimitExceeded {
                what: Limit::ValueBytes,
                actual_bytes: 40,
                max_bytes: 10
            }
        ));
        sample(1).check(&Limits::default()).unwrap();
    }

    /// With several limits exceeded, the one named is a name's, then a
    /// key's, then a value's; within all of them, the event's total; and
    /// the bytes returned are every name, key and value.
    #[test]
    fn the_first_limit_exceeded_is_named_in_order() {
        let what = |limits: Limits, event: &Event| match event.check(&limits) {
            Err(Error::LimitExceeded { what, .. }) => Some(what),
            Err(other) => panic!("a limit error, not {other}"),
            Ok(_) => None,
        };
        let tight = |name, key, value, event| Limits {
            name_bytes_max: name,
            key_bytes_max: key,
            value_bytes_max: value,
            event_bytes_max: event,
            ..Limits::default()
        };
        let e = sample(1);
        assert_eq!(what(tight(1, 1, 1, 1 << 20), &e), Some(Limit::NameBytes));
        assert_eq!(what(tight(64, 1, 1, 1 << 20), &e), Some(Limit::KeyBytes));
        assert_eq!(what(tight(64, 64, 1, 1 << 20), &e), Some(Limit::ValueBytes));
        assert_eq!(what(tight(64, 64, 64, 8), &e), Some(Limit::EventBytes));
        let failed = Event {
            ts_micros: 0,
            body: EventBody::TaskStatus {
                attempt: AttemptScope {
                    task: TaskScope {
                        run: RunScope {
                            tenant: "t".into(),
                            dag: "d".into(),
                            run: "r".into(),
                        },
                        task: "x".into(),
                    },
                    try_number: 1,
                },
                status: TaskStatus::Failed {
                    error: "e".repeat(50),
                    kind: "k".repeat(20),
                },
                worker: "w".into(),
            },
        };
        // The failure's kind is a name, its error a value.
        assert_eq!(
            what(tight(10, 64, 10, 1 << 20), &failed),
            Some(Limit::NameBytes)
        );
        assert_eq!(
            what(tight(20, 64, 10, 1 << 20), &failed),
            Some(Limit::ValueBytes)
        );
        assert_eq!(failed.check(&Limits::default()).unwrap(), 4 + 1 + 20 + 50);
    }
}
