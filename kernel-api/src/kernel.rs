//! `Kernel`: a handle on task state, shared by every task of a worker.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use waymark_engine::storage::SimDisk;
use waymark_engine::{Engine, Options};

use crate::backend::{Backend, EngineBackend};
use crate::context::RunContext;
use crate::error::{Error, Result};
use crate::task_ref::TaskRef;

/// The task-state kernel of one worker. `Send + Sync`, and cheap to clone
/// into threads: clones share one backend.
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
    worker: Arc<str>,
}

/// Opens a [`Kernel`] with chosen settings; every setting has a documented
/// default.
#[derive(Clone, Debug)]
pub struct KernelBuilder {
    options: Options,
    worker: String,
}

impl Default for KernelBuilder {
    fn default() -> KernelBuilder {
        KernelBuilder {
            options: Options::default(),
            worker: default_worker_id(),
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
    /// [`Options::default`] (`Sync` durability: an acknowledged write
    /// survives any crash).
    pub fn options(mut self, options: Options) -> KernelBuilder {
        self.options = options;
        self
    }

    /// The id recorded with every status change this kernel makes. Default:
    /// `$HOSTNAME:pid`, or `pid:N`.
    pub fn worker_id(mut self, worker: impl Into<String>) -> KernelBuilder {
        self.worker = worker.into();
        self
    }

    /// Opens (or creates) the state directory `dir`.
    ///
    /// # Errors
    ///
    /// The engine's open errors: a held lock, corruption, I/O.
    pub fn open(self, dir: impl AsRef<Path>) -> Result<Kernel> {
        let engine = Engine::open_with(
            Arc::new(waymark_engine::storage::FsStorage),
            dir,
            self.options,
        )?;
        Ok(Kernel::on(EngineBackend::new(engine), self.worker))
    }

    /// A kernel whose state lives on a fresh simulated disk in memory: the
    /// same engine, nothing on the real disk. For tests.
    ///
    /// # Errors
    ///
    /// Invalid options.
    pub fn in_memory(self) -> Result<Kernel> {
        let disk = SimDisk::new(fastrand_seed());
        let engine = Engine::open_with(Arc::new(disk), "/state", self.options)?;
        Ok(Kernel::on(EngineBackend::new(engine), self.worker))
    }
}

fn fastrand_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
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

    /// A kernel on a fresh simulated disk in memory (see
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
            worker: worker.into().into(),
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

    /// The worker id recorded with status changes.
    pub fn worker_id(&self) -> &str {
        &self.worker
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

    #[test]
    fn kernel_is_send_sync_and_clone() {
        fn check<T: Send + Sync + Clone>() {}
        check::<Kernel>();
    }
}
