//! `Kernel`: a handle on task state, shared by every task of a worker, and
//! `KernelBuilder`, which opens one on any storage.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use waymark_engine::storage::{self, Storage};
use waymark_engine::{Condition, Engine, Event, Found, Lsn, Options};

use crate::backend::{Backend, BackendStats, EngineBackend};
use crate::context::RunContext;
use crate::error::{Error, Result};
use crate::task_ref::TaskRef;

/// The task-state kernel of one worker. `Send + Sync`, and cheap to clone
/// into threads: clones share one backend. Every decision it takes from
/// state (a transition, the next try, a write-once variable, a run's
/// status) is one conditional batch: of racing callers, exactly one wins.
///
/// ```
/// use waymark_kernel::{Kernel, TaskRef};
///
/// let kernel = Kernel::in_memory()?;
/// let ctx = kernel.context(TaskRef::new("acme", "documents", "run-42", "ocr", 1)?);
/// ctx.set("pages", b"12")?;
/// assert_eq!(ctx.get("pages")?, Some(b"12".to_vec()));
/// # Ok::<(), waymark_kernel::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Kernel {
    backend: Arc<dyn Backend>,
    /// The engine, when the kernel was opened on one by the builder.
    engine: Option<Engine>,
    worker: Arc<str>,
}

/// Opens a [`Kernel`] with chosen settings; every setting has a documented
/// default.
///
/// ```
/// use waymark_kernel::Kernel;
/// use waymark_kernel::engine::storage::SimDisk;
///
/// // A kernel on a simulated disk a test can crash (see the engine's
/// // `SimDisk`): the same engine as on files.
/// let disk = SimDisk::new(7);
/// let kernel = Kernel::builder()
///     .worker_id("worker-1")
///     .open_on(std::sync::Arc::new(disk.clone()), "/state")?;
/// assert_eq!(kernel.worker_id(), "worker-1");
/// # Ok::<(), waymark_kernel::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct KernelBuilder {
    options: Option<Options>,
    worker: String,
    seed: u64,
}

impl Default for KernelBuilder {
    fn default() -> KernelBuilder {
        KernelBuilder {
            options: None,
            worker: default_worker_id(),
            seed: 0,
        }
    }
}

/// `host:pid` when the host name is known, else `pid:N`.
fn default_worker_id() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_default();
    if host.is_empty() {
        format!("pid:{}", std::process::id())
    } else {
        format!("{host}:{}", std::process::id())
    }
}

impl KernelBuilder {
    /// Engine options (durability, limits, snapshots, retention). Default:
    /// [`Options::default`] on a directory (`Sync` durability: an
    /// acknowledged write survives any crash), [`Options::in_memory`] for
    /// [`KernelBuilder::in_memory`].
    pub fn options(mut self, options: Options) -> KernelBuilder {
        self.options = Some(options);
        self
    }

    /// The id recorded with every status change this kernel makes. Default:
    /// `$HOSTNAME:pid`, or `pid:N`.
    pub fn worker_id(mut self, worker: impl Into<String>) -> KernelBuilder {
        self.worker = worker.into();
        self
    }

    /// The seed of an in-memory kernel's simulated disk (its log id and
    /// every random choice). Default 0: runs replay.
    pub fn seed(mut self, seed: u64) -> KernelBuilder {
        self.seed = seed;
        self
    }

    /// Opens (or creates) the state directory `dir` on the real file
    /// system.
    ///
    /// # Errors
    ///
    /// The engine's open errors: a held lock, corruption, I/O.
    pub fn open(self, dir: impl AsRef<Path>) -> Result<Kernel> {
        self.open_on(storage::file_system(), dir)
    }

    /// Opens (or creates) the state directory `dir` on `storage`: the real
    /// file system, a simulated disk a test crashes, or any other
    /// [`Storage`] (as redb's `create_with_backend`).
    ///
    /// # Errors
    ///
    /// The engine's open errors: a held lock, corruption, I/O, invalid
    /// options.
    pub fn open_on(self, storage: Arc<dyn Storage>, dir: impl AsRef<Path>) -> Result<Kernel> {
        let options = self.options.unwrap_or_default();
        let engine = Engine::open_with(storage, dir, options)?;
        Ok(Kernel::on_engine(engine, self.worker))
    }

    /// A kernel whose state lives in memory: the same engine on a
    /// simulated disk of its own, seeded by [`KernelBuilder::seed`], with
    /// [`Options::in_memory`] unless options were given (a kernel holding
    /// a few keys costs well under a mebibyte). A test double: nothing
    /// survives it.
    ///
    /// # Errors
    ///
    /// Invalid options.
    pub fn in_memory(mut self) -> Result<Kernel> {
        let options = self.options.take().unwrap_or_else(Options::in_memory);
        let seed = self.seed;
        self.options(options)
            .open_on(storage::in_memory(seed), "/state")
    }
}

impl Kernel {
    /// Opens (or creates) the state directory `dir` with default settings.
    ///
    /// # Errors
    ///
    /// The engine's open errors: a held lock, corruption, I/O.
    pub fn open(dir: impl AsRef<Path>) -> Result<Kernel> {
        KernelBuilder::default().open(dir)
    }

    /// A kernel in memory with default settings (see
    /// [`KernelBuilder::in_memory`]).
    ///
    /// # Errors
    ///
    /// None in practice; kept for symmetry with [`Kernel::open`].
    pub fn in_memory() -> Result<Kernel> {
        KernelBuilder::default().in_memory()
    }

    /// Settings before opening.
    pub fn builder() -> KernelBuilder {
        KernelBuilder::default()
    }

    /// Opens by URL: `file:///path/to/dir` or `memory://`.
    ///
    /// # Errors
    ///
    /// [`Error::UnsupportedUrl`] for any other scheme, or the errors of
    /// [`Kernel::open`].
    pub fn open_url(url: &str) -> Result<Kernel> {
        if url == "memory://" {
            return Kernel::in_memory();
        }
        match url.strip_prefix("file://") {
            Some(path) if path.starts_with('/') => Kernel::open(PathBuf::from(path)),
            _ => Err(Error::UnsupportedUrl { url: url.into() }),
        }
    }

    /// A kernel on any backend.
    pub fn on(backend: impl Backend, worker: impl Into<String>) -> Kernel {
        Kernel {
            backend: Arc::new(backend),
            engine: None,
            worker: worker.into().into(),
        }
    }

    /// A kernel on an open engine ([`Kernel::engine`] then returns it).
    pub fn on_engine(engine: Engine, worker: impl Into<String>) -> Kernel {
        Kernel {
            backend: Arc::new(EngineBackend::new(engine.clone())),
            engine: Some(engine),
            worker: worker.into().into(),
        }
    }

    /// A kernel on `backend` (which wraps `engine`), with
    /// [`Kernel::engine`] returning the engine.
    #[cfg(feature = "testkit")]
    pub(crate) fn recording(backend: impl Backend, engine: Engine, worker: String) -> Kernel {
        Kernel {
            backend: Arc::new(backend),
            engine: Some(engine),
            worker: worker.into(),
        }
    }

    /// The context of one task attempt.
    pub fn context(&self, ti: TaskRef) -> RunContext {
        RunContext::new(self.clone(), ti)
    }

    /// The backend.
    pub fn backend(&self) -> &dyn Backend {
        self.backend.as_ref()
    }

    /// The engine below, if the kernel runs on one (opened by the builder
    /// or [`Kernel::on_engine`]): for what the kernel does not cover
    /// (snapshots, sizes, the log reader).
    pub fn engine(&self) -> Option<&Engine> {
        self.engine.as_ref()
    }

    /// The worker id recorded with status changes.
    pub fn worker_id(&self) -> &str {
        &self.worker
    }

    /// Makes everything written so far durable, whatever the durability
    /// mode, and returns the durable LSN.
    ///
    /// # Errors
    ///
    /// The backend's errors (a failed sync).
    pub fn flush(&self) -> Result<Lsn> {
        self.backend.flush()
    }

    /// Syncs and closes the backend for every clone of this kernel: later
    /// writes fail with the engine's `Closed`. Unlike dropping the last
    /// clone, it reports the final sync's failure.
    ///
    /// # Errors
    ///
    /// The backend's errors (a failed final sync, an earlier poison).
    pub fn close(&self) -> Result<()> {
        self.backend.close()
    }

    /// Counters since open: batches, refusals, the durable LSN, and the
    /// engine's own when it is the backend.
    pub fn stats(&self) -> BackendStats {
        self.backend.stats()
    }

    /// Appends `events` if `conditions` hold, turning a failed condition
    /// into the caller's own error with `refuse` (given what was found;
    /// `None` reports the conflict as it is).
    pub(crate) fn append_guarded(
        &self,
        conditions: Vec<Condition>,
        events: Vec<Event>,
        refuse: impl FnOnce(Found) -> Option<Error>,
    ) -> Result<Lsn> {
        match self.backend.append(conditions, events) {
            Err(Error::Conflict {
                index,
                condition,
                found,
            }) => Err(refuse(found.clone()).unwrap_or(Error::Conflict {
                index,
                condition,
                found,
            })),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert!(Kernel::open_url("memory://").is_ok());
        assert!(matches!(
            Kernel::open_url("postgres://x"),
            Err(Error::UnsupportedUrl { .. })
        ));
        assert!(matches!(
            Kernel::open_url("file://relative"),
            Err(Error::UnsupportedUrl { .. })
        ));
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().display());
        assert!(Kernel::open_url(&url).is_ok());
    }

    /// A batch is one moment: its events carry the time of its commit.
    #[test]
    fn the_events_of_a_batch_share_the_time_of_its_commit() {
        let kernel = Kernel::in_memory().unwrap();
        let ti = crate::TaskRef::new("acme", "docs", "r1", "ocr", 1).unwrap();
        let ctx = kernel.context(ti.clone());
        kernel.start(&ti).unwrap();
        let before = waymark_engine::event::now_micros();
        let mut batch = ctx.batch();
        for i in 0..100 {
            batch = batch
                .set(&format!("k{i}"), b"v")
                .set_task_state(&format!("t{i}"), b"v");
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
        let lsn = batch.succeed(b"ok").commit().unwrap().unwrap();
        let events: Vec<_> = kernel
            .history_of_task(&ti)
            .unwrap()
            .into_iter()
            .filter(|e| e.lsn == lsn)
            .collect();
        assert_eq!(events.len(), 201, "200 writes and the success");
        let at = events[0].event.ts_micros;
        assert!(
            at >= before + 2_000,
            "timed at commit, not as each write was added"
        );
        assert!(events[..200].iter().all(|e| e.event.ts_micros == at));
        assert!(events[200].event.ts_micros >= at);
    }

    #[test]
    fn kernel_is_send_sync_and_clone() {
        fn check<T: Send + Sync + Clone>() {}
        check::<Kernel>();
    }

    /// An in-memory kernel replays: the same seed gives the same log id.
    #[test]
    fn in_memory_kernels_are_seeded() {
        let id = |seed| {
            Kernel::builder()
                .seed(seed)
                .in_memory()
                .unwrap()
                .engine()
                .unwrap()
                .log_id()
        };
        assert_eq!(id(3), id(3));
        assert_ne!(id(3), id(4));
        let default = || Kernel::in_memory().unwrap().engine().unwrap().log_id();
        assert_eq!(default(), default(), "the default seed is fixed");
    }

    /// `close` reports and refuses: later writes are an error, not lost.
    #[test]
    fn close_syncs_then_refuses_writes() {
        let dir = tempfile::tempdir().unwrap();
        let kernel = Kernel::open(dir.path()).unwrap();
        let ctx = kernel.context(TaskRef::new("a", "d", "r", "t", 1).unwrap());
        ctx.set("k", b"v").unwrap();
        assert!(kernel.flush().unwrap() >= Lsn(1));
        kernel.close().unwrap();
        assert!(matches!(
            ctx.set("k", b"w"),
            Err(Error::Engine(waymark_engine::Error::Closed))
        ));
        drop((ctx, kernel));
        let kernel = Kernel::open(dir.path()).unwrap();
        let ctx = kernel.context(TaskRef::new("a", "d", "r", "t", 1).unwrap());
        assert_eq!(ctx.get("k").unwrap(), Some(b"v".to_vec()));
        assert_eq!(kernel.stats().batches, 0, "counted since this open");
    }
}
