//! `RunContext`: what one task attempt reads and writes.
//!
//! Two scopes, named apart everywhere:
//! - **attempt state** (`set`, `get`, `push`, `delete`, `entries`): belongs
//!   to this try; `Kernel::clear_for_retry` clears it before the next try.
//! - **task state** (`set_task_state`, `task_state`, ...): belongs to the
//!   task across its tries (a progress cursor, say); retries keep it.
//!
//! Writes of state carry no condition (they decide nothing): a worker still
//! running a superseded attempt can write into that attempt's state and
//! the task's. The kernel keeps one live attempt a task, so a scheduler
//! that stops its old workers on a retry has none. A finish that must be
//! all or nothing with its outputs is one [`Batch`] with its transition.

use std::sync::{Arc, OnceLock};

use serde::Serialize;
use serde::de::DeserializeOwned;
use waymark_engine::{AttemptScope, Event, EventBody, KvValue, Lsn, TaskStatus};

use crate::error::{Error, Result};
use crate::kernel::Kernel;
use crate::lifecycle::{status_event, transition_conditions, transition_refusal};
use crate::task_ref::{TaskRef, check_name};

/// A value read back with where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The value's bytes.
    pub value: Vec<u8>,
    /// The metadata written with it by [`RunContext::push`] (empty if none).
    pub meta: Vec<u8>,
    /// The LSN of the batch that wrote it.
    pub lsn: Lsn,
    /// When it was written, microseconds since the Unix epoch.
    pub ts_micros: i64,
}

impl From<KvValue> for Entry {
    fn from(v: KvValue) -> Entry {
        Entry {
            value: v.value,
            meta: v.meta,
            lsn: Lsn(v.lsn),
            ts_micros: v.ts_micros,
        }
    }
}

/// An upstream value with its provenance, from [`RunContext::pull_all`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pulled {
    /// The upstream task.
    pub task_id: String,
    /// The attempt of it that wrote the value (its latest with the key).
    pub try_number: u32,
    /// The value and when it was written.
    pub entry: Entry,
}

/// The state API of one task attempt. Cheap to clone.
#[derive(Clone, Debug)]
pub struct RunContext {
    kernel: Kernel,
    ti: TaskRef,
    /// The engine's scope of the attempt, built on first use: a held
    /// context reads without building it again (a fifth of a hot get's
    /// instructions went to building it, issue 16).
    scope: OnceLock<Arc<AttemptScope>>,
}

fn check_key(key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(Error::InvalidRef("a state key is empty".into()));
    }
    Ok(())
}

impl RunContext {
    pub(crate) fn new(kernel: Kernel, ti: TaskRef) -> RunContext {
        RunContext {
            kernel,
            ti,
            scope: OnceLock::new(),
        }
    }

    /// The engine's scope of this attempt, built once and shared: a `Put`
    /// event holds it without a copy per set.
    fn scope(&self) -> &Arc<AttemptScope> {
        self.scope.get_or_init(|| Arc::new(self.ti.attempt_scope()))
    }

    /// The task attempt this context writes as.
    pub fn ti(&self) -> &TaskRef {
        &self.ti
    }

    fn append(&self, body: Vec<EventBody>) -> Result<Lsn> {
        self.kernel
            .backend()
            .append(Vec::new(), body.into_iter().map(Event::now).collect())
    }

    /// Sets a key of this attempt's state. Durable when it returns.
    ///
    /// # Errors
    ///
    /// An empty key; the engine's limits ([`waymark_engine::Error::LimitExceeded`]),
    /// poison or I/O errors.
    pub fn set(&self, key: &str, value: impl AsRef<[u8]>) -> Result<Lsn> {
        self.push(key, value, [])
    }

    /// Sets a key with metadata (read back with [`RunContext::get_entry`]).
    ///
    /// # Errors
    ///
    /// As [`RunContext::set`].
    pub fn push(&self, key: &str, value: impl AsRef<[u8]>, meta: impl AsRef<[u8]>) -> Result<Lsn> {
        check_key(key)?;
        self.append(vec![EventBody::Put {
            codec: waymark_engine::Codec::Raw,
            attempt: Arc::clone(self.scope()),
            key: key.into(),
            value: value.as_ref().to_vec(),
            meta: meta.as_ref().to_vec(),
        }])
    }

    /// A key of this attempt's state.
    ///
    /// # Errors
    ///
    /// The backend's read errors.
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.get_entry(key)?.map(|e| e.value))
    }

    /// A key of this attempt's state, or `default`.
    ///
    /// # Errors
    ///
    /// The backend's read errors.
    pub fn get_or(&self, key: &str, default: impl Into<Vec<u8>>) -> Result<Vec<u8>> {
        Ok(self.get(key)?.unwrap_or_else(|| default.into()))
    }

    /// A key with its metadata, LSN and time.
    ///
    /// # Errors
    ///
    /// The backend's read errors.
    pub fn get_entry(&self, key: &str) -> Result<Option<Entry>> {
        Ok(self
            .kernel
            .backend()
            .get(self.scope(), key)?
            .map(Entry::from))
    }

    /// Deletes a key of this attempt's state (deleting a missing key is not
    /// an error).
    ///
    /// # Errors
    ///
    /// As [`RunContext::set`].
    pub fn delete(&self, key: &str) -> Result<Lsn> {
        check_key(key)?;
        self.append(vec![EventBody::Delete {
            attempt: AttemptScope::clone(self.scope()),
            key: key.into(),
        }])
    }

    /// Every key and value of this attempt's state.
    ///
    /// # Errors
    ///
    /// The backend's read errors.
    pub fn entries(&self) -> Result<Vec<(String, Vec<u8>)>> {
        Ok(self
            .kernel
            .backend()
            .attempt_entries(self.scope())?
            .into_iter()
            .map(|(k, v)| (k, v.value))
            .collect())
    }

    /// How many keys this attempt's state holds.
    ///
    /// # Errors
    ///
    /// The backend's read errors.
    pub fn len(&self) -> Result<usize> {
        Ok(self.entries()?.len())
    }

    /// Whether this attempt's state is empty.
    ///
    /// # Errors
    ///
    /// The backend's read errors.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Sets a key to `value` as JSON (strings, numbers, maps, lists and
    /// null round-trip exactly).
    ///
    /// # Errors
    ///
    /// [`Error::Json`] if `value` does not serialize; as [`RunContext::set`].
    pub fn set_json<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<Lsn> {
        let bytes = serde_json::to_vec(value).map_err(|source| Error::Json {
            key: key.into(),
            source,
        })?;
        self.set(key, bytes)
    }

    /// A key read as JSON.
    ///
    /// # Errors
    ///
    /// [`Error::Json`] if the bytes are not the JSON `T` expects.
    pub fn get_json<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        self.get(key)?
            .map(|bytes| {
                serde_json::from_slice(&bytes).map_err(|source| Error::Json {
                    key: key.into(),
                    source,
                })
            })
            .transpose()
    }

    /// Sets a key of the task's state, which survives retries.
    ///
    /// # Errors
    ///
    /// As [`RunContext::set`].
    pub fn set_task_state(&self, key: &str, value: impl AsRef<[u8]>) -> Result<Lsn> {
        check_key(key)?;
        self.append(vec![EventBody::TaskPut {
            codec: waymark_engine::Codec::Raw,
            task: self.ti.task_scope(),
            key: key.into(),
            value: value.as_ref().to_vec(),
        }])
    }

    /// A key of the task's state.
    ///
    /// # Errors
    ///
    /// The backend's read errors.
    pub fn task_state(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .kernel
            .backend()
            .task_state(&self.ti.task_scope(), key)?
            .map(|v| v.value))
    }

    /// Deletes a key of the task's state.
    ///
    /// # Errors
    ///
    /// As [`RunContext::set`].
    pub fn delete_task_state(&self, key: &str) -> Result<Lsn> {
        check_key(key)?;
        self.append(vec![EventBody::TaskDelete {
            task: self.ti.task_scope(),
            key: key.into(),
        }])
    }

    /// Every key and value of the task's state.
    ///
    /// # Errors
    ///
    /// The backend's read errors.
    pub fn task_state_entries(&self) -> Result<Vec<(String, Vec<u8>)>> {
        Ok(self
            .kernel
            .backend()
            .task_state_entries(&self.ti.task_scope())?
            .into_iter()
            .map(|(k, v)| (k, v.value))
            .collect())
    }

    /// `key` as written by upstream task `task_id` of the same run: the
    /// value from that task's **latest attempt that has the key** (not this
    /// context's try number).
    ///
    /// # Errors
    ///
    /// An invalid task id; the backend's read errors.
    pub fn get_from(&self, task_id: &str, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.latest_upstream(task_id, key)?.map(|p| p.entry.value))
    }

    fn latest_upstream(&self, task_id: &str, key: &str) -> Result<Option<Pulled>> {
        check_name("task_id", task_id)?;
        let upstream = self.ti.sibling(task_id)?;
        let found = self
            .kernel
            .backend()
            .latest_attempt_value(&upstream.task_scope(), key)?;
        Ok(found.map(|(try_number, v)| Pulled {
            task_id: task_id.into(),
            try_number,
            entry: v.into(),
        }))
    }

    /// Fan-in: the value of `key` from the first task in `from_tasks` (in
    /// list order) that has it, each read as [`RunContext::get_from`].
    ///
    /// # Errors
    ///
    /// An invalid task id; the backend's read errors.
    pub fn pull(&self, key: &str, from_tasks: &[&str]) -> Result<Option<Vec<u8>>> {
        for task in from_tasks {
            if let Some(p) = self.latest_upstream(task, key)? {
                return Ok(Some(p.entry.value));
            }
        }
        Ok(None)
    }

    /// [`RunContext::pull`] with a default.
    ///
    /// # Errors
    ///
    /// As [`RunContext::pull`].
    pub fn pull_or(
        &self,
        key: &str,
        from_tasks: &[&str],
        default: impl Into<Vec<u8>>,
    ) -> Result<Vec<u8>> {
        Ok(self
            .pull(key, from_tasks)?
            .unwrap_or_else(|| default.into()))
    }

    /// Every upstream value of `key`, one per task that has it, in list
    /// order, with its provenance (task, attempt, LSN, time).
    ///
    /// # Errors
    ///
    /// As [`RunContext::pull`].
    pub fn pull_all(&self, key: &str, from_tasks: &[&str]) -> Result<Vec<Pulled>> {
        let mut out = Vec::new();
        for task in from_tasks {
            if let Some(p) = self.latest_upstream(task, key)? {
                out.push(p);
            }
        }
        Ok(out)
    }

    /// Starts a batch of writes that [`Batch::commit`] appends atomically:
    /// after any crash all of them are there, or none. A batch may also
    /// carry one lifecycle transition of this attempt ([`Batch::succeed`],
    /// say): then it is written only if the transition is allowed, and a
    /// task's outputs and its final status are one step.
    pub fn batch(&self) -> Batch<'_> {
        Batch {
            ctx: self,
            events: Vec::new(),
            transition: None,
            error: None,
        }
    }
}

/// Several writes of one task attempt, and at most one lifecycle
/// transition of it, committed as one atomic batch.
///
/// ```
/// use waymark_kernel::{Error, Kernel, TaskRef};
///
/// let kernel = Kernel::in_memory()?;
/// let ti = TaskRef::new("acme", "docs", "r1", "ocr", 1)?;
/// let ctx = kernel.context(ti.clone());
/// ctx.batch()
///     .set("text", b"hello")
///     .set("language", b"en")
///     .set_task_state("cursor", b"page-3")
///     .commit()?;
/// assert_eq!(ctx.len()?, 2);
///
/// // The last output and the status together: both or neither.
/// kernel.start(&ti)?;
/// ctx.batch().set("summary", b"2 pages").succeed(b"ok").commit()?;
/// // A second finish is refused, and writes none of its outputs.
/// let again = ctx.batch().set("summary", b"other").succeed(b"ok").commit();
/// assert!(matches!(again, Err(Error::InvalidTransition { .. })));
/// assert_eq!(ctx.get("summary")?, Some(b"2 pages".to_vec()));
/// # Ok::<(), waymark_kernel::Error>(())
/// ```
#[derive(Debug)]
#[must_use = "a batch writes nothing until `commit`"]
pub struct Batch<'a> {
    ctx: &'a RunContext,
    /// The events so far, timed when the batch is committed.
    events: Vec<Event>,
    /// The attempt's status change, written last in the batch.
    transition: Option<TaskStatus>,
    error: Option<Error>,
}

impl Batch<'_> {
    fn add(&mut self, body: EventBody) {
        // Timed at `commit`: one batch is one moment.
        self.events.push(Event { ts_micros: 0, body });
    }

    fn key_ok(&mut self, key: &str) -> bool {
        if self.error.is_none()
            && let Err(e) = check_key(key)
        {
            self.error = Some(e);
        }
        self.error.is_none()
    }

    /// Adds a set of attempt state.
    pub fn set(self, key: &str, value: impl AsRef<[u8]>) -> Self {
        self.push(key, value, [])
    }

    /// Adds a set of attempt state with metadata.
    pub fn push(mut self, key: &str, value: impl AsRef<[u8]>, meta: impl AsRef<[u8]>) -> Self {
        if self.key_ok(key) {
            self.add(EventBody::Put {
                codec: waymark_engine::Codec::Raw,
                attempt: Arc::clone(self.ctx.scope()),
                key: key.into(),
                value: value.as_ref().to_vec(),
                meta: meta.as_ref().to_vec(),
            });
        }
        self
    }

    /// Adds a set of attempt state to `value` as JSON.
    pub fn set_json<T: Serialize + ?Sized>(mut self, key: &str, value: &T) -> Self {
        match serde_json::to_vec(value) {
            Ok(bytes) => self.set(key, bytes),
            Err(source) => {
                self.error.get_or_insert(Error::Json {
                    key: key.into(),
                    source,
                });
                self
            }
        }
    }

    /// Adds a delete of attempt state.
    pub fn delete(mut self, key: &str) -> Self {
        if self.key_ok(key) {
            self.add(EventBody::Delete {
                attempt: AttemptScope::clone(self.ctx.scope()),
                key: key.into(),
            });
        }
        self
    }

    /// Adds a set of task state.
    pub fn set_task_state(mut self, key: &str, value: impl AsRef<[u8]>) -> Self {
        if self.key_ok(key) {
            self.add(EventBody::TaskPut {
                codec: waymark_engine::Codec::Raw,
                task: self.ctx.ti.task_scope(),
                key: key.into(),
                value: value.as_ref().to_vec(),
            });
        }
        self
    }

    /// Adds a delete of task state.
    pub fn delete_task_state(mut self, key: &str) -> Self {
        if self.key_ok(key) {
            self.add(EventBody::TaskDelete {
                task: self.ctx.ti.task_scope(),
                key: key.into(),
            });
        }
        self
    }

    /// Adds a lifecycle transition of this attempt (at most one a batch):
    /// the batch is then written only if the attempt may move to `to` when
    /// its turn comes, as [`Kernel::transition`] checks.
    pub fn transition(mut self, to: TaskStatus) -> Self {
        if self.transition.is_some() {
            self.error.get_or_insert(Error::InvalidBatch(format!(
                "{}: a batch carries at most one transition",
                self.ctx.ti
            )));
        }
        self.transition = Some(to);
        self
    }

    /// Adds the start of this attempt.
    pub fn start(self) -> Self {
        self.transition(TaskStatus::Running)
    }

    /// Adds the success of this attempt, with its result.
    pub fn succeed(self, result: impl Into<Vec<u8>>) -> Self {
        self.transition(TaskStatus::Succeeded {
            result: result.into(),
        })
    }

    /// Adds the failure of this attempt, with an error message and a kind.
    pub fn fail(self, error: impl Into<String>, kind: impl Into<String>) -> Self {
        self.transition(TaskStatus::Failed {
            error: error.into(),
            kind: kind.into(),
        })
    }

    /// Adds the cancellation of this attempt.
    pub fn cancel(self) -> Self {
        self.transition(TaskStatus::Cancelled)
    }

    /// Appends every write, and the transition after them, as one batch.
    /// An empty batch writes nothing and returns `None`. The writes carry
    /// the time of the commit (one time for all of them), not the times
    /// they were added.
    ///
    /// # Errors
    ///
    /// The first invalid key given, or two transitions; the transition's
    /// refusals, as [`Kernel::transition`]; else as [`RunContext::set`].
    /// Nothing is written in any of these cases.
    pub fn commit(self) -> Result<Option<Lsn>> {
        if let Some(e) = self.error {
            return Err(e);
        }
        // Timed in place: a batch of a thousand sets is not moved into a
        // second vector to be timed.
        let mut events = self.events;
        let now = waymark_engine::event::now_micros();
        for event in &mut events {
            event.ts_micros = now;
        }
        let Some(to) = self.transition else {
            if events.is_empty() {
                return Ok(None);
            }
            return self
                .ctx
                .kernel
                .backend()
                .append(Vec::new(), events)
                .map(Some);
        };
        let ti = &self.ctx.ti;
        let kind = to.kind();
        let kernel = &self.ctx.kernel;
        events.push(status_event(ti, to, kernel.worker_id()));
        kernel
            .append_guarded(transition_conditions(ti, kind), events, |found| {
                transition_refusal(ti, kind, found)
            })
            .map(Some)
    }
}
