//! The storage layer: the only code in the engine that touches files.
//!
//! Every byte the engine reads or writes goes through [`Storage`] and
//! [`StorageFile`]. Two implementations exist: [`FsStorage`] on real files, and
//! (with the `sim` feature) [`SimDisk`], an in-memory disk that keeps written
//! and synced bytes apart and can crash, tear, fill up or fail on demand. The
//! crash-recovery properties run the engine on the simulated disk; users can
//! do the same with their own workers.
//!
//! The trait mirrors what the log needs and nothing more: positional reads and
//! writes, length changes, `fdatasync`, and the directory operations whose
//! durability the engine manages itself (a new or renamed file is durable only
//! after [`Storage::sync_dir`] of its parent).

mod cow;
mod fs;
#[cfg(feature = "sim")]
mod sim;

use std::any::Any;
use std::fmt;
use std::io;
use std::path::Path;
use std::sync::Arc;

pub(crate) use cow::CowStorage;
pub use fs::{DIR_MODE, FILE_MODE, FsStorage};
#[cfg(feature = "sim")]
pub use sim::{Damage, Fault, FaultPath, OpKind, SimDisk};

/// The real file system, as the engine's storage: what
/// [`crate::Engine::open`] uses.
pub fn file_system() -> Arc<dyn Storage> {
    Arc::new(FsStorage)
}

/// A fresh simulated disk in memory whose random choices come from `seed`:
/// the storage of an engine (or a kernel) that is a test double, with
/// [`crate::Options::in_memory`]. Nothing touches the real disk; the same
/// seed makes the same run.
#[cfg(feature = "sim")]
pub fn in_memory(seed: u64) -> Arc<dyn Storage> {
    Arc::new(SimDisk::new(seed))
}

/// How [`Storage::open`] opens a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenMode {
    /// Read only; the file must exist.
    Read,
    /// Read and write; the file must exist.
    ReadWrite,
    /// Create a new file for reading and writing; fails if it exists.
    CreateNew,
}

/// A held directory lock; dropping it releases the lock.
pub type LockGuard = Box<dyn Any + Send + Sync>;

/// An open file: positional I/O, length changes and `fdatasync`.
///
/// Handles are shared between threads (`&self` everywhere); the engine never
/// writes one region from two threads at once.
// A file's length is an I/O call, not a collection's size: no `is_empty`.
#[allow(clippy::len_without_is_empty)]
pub trait StorageFile: Send + Sync + fmt::Debug {
    /// Reads up to `buf.len()` bytes at `offset`; returns how many were read
    /// (fewer only at the end of the file).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// Writes all of `buf` at `offset`, extending the file if needed. On error
    /// any prefix of `buf` may have been written.
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// The file's current length in bytes.
    fn len(&self) -> io::Result<u64>;
    /// Truncates or extends (with zeros) the file to `len_bytes`.
    fn set_len(&self, len_bytes: u64) -> io::Result<()>;
    /// Makes the file's data and length durable (`fdatasync`). An error means
    /// the unsynced data may be lost; it must not be retried as if it could
    /// succeed later.
    fn sync_data(&self) -> io::Result<()>;
    /// Drops the file's cached pages that are clean, so that later reads
    /// come from the disk (`posix_fadvise(DONTNEED)`). After a failed sync,
    /// Linux keeps the pages it could not write marked clean: a later
    /// reader in the same boot (a reopen after the engine was poisoned)
    /// would see bytes the disk does not hold, and no sync writes them.
    /// Applies to `len` bytes from `offset` (`None`: to the end of the
    /// file). Advice: storage that cannot drop its cache does nothing.
    fn forget_cached(&self, offset: u64, len: Option<u64>) -> io::Result<()> {
        let _ = (offset, len);
        Ok(())
    }

    /// Reads exactly `buf.len()` bytes at `offset`, or fails with
    /// [`io::ErrorKind::UnexpectedEof`].
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let mut done = 0usize;
        while done < buf.len() {
            let n = self.read_at(&mut buf[done..], offset + done as u64)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "file shorter than expected",
                ));
            }
            done += n;
        }
        Ok(())
    }
}

/// A file system: the engine's only way to reach files and directories.
pub trait Storage: Send + Sync + fmt::Debug {
    /// Opens the file at `path` in `mode`.
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>>;
    /// Creates `path` and its missing parents. Not durable until
    /// [`Storage::sync_dir`] of each parent.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// The names of the entries directly inside the directory `path`, sorted.
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>>;
    /// Whether a file or directory exists at `path`.
    fn exists(&self, path: &Path) -> io::Result<bool>;
    /// Removes the file at `path`. Not durable until its directory is synced.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Renames `from` to `to`, replacing `to`. Not durable until the
    /// directory is synced.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes the entries of directory `path` (creations, renames, removals)
    /// durable.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
    /// Takes an exclusive lock on the file at `path` (creating it), or fails
    /// with [`io::ErrorKind::WouldBlock`] if another holder has it.
    fn lock(&self, path: &Path) -> io::Result<LockGuard>;
    /// A fresh random 128-bit id for a new log. The simulated disk draws it
    /// from its seed so that a run replays exactly.
    fn new_log_id(&self) -> u128;
    /// Whether log cursors may read ahead on a helper thread (see
    /// [`crate::LogReader::with_read_ahead`]). The simulated disk says no
    /// unless told (`SimDisk::set_read_ahead`): a helper's reads would
    /// count towards its scheduled crash in an order no seed fixes, and
    /// every run must replay from its seed.
    fn read_ahead(&self) -> bool {
        true
    }
}

/// Reads the whole file at `path` (used for small files such as the lock).
pub(crate) fn read_to_vec(file: &dyn StorageFile) -> io::Result<Vec<u8>> {
    let len = file.len()?;
    let len = usize::try_from(len)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "file larger than memory"))?;
    let mut buf = vec![0u8; len];
    let n = read_up_to(file, &mut buf, 0)?;
    buf.truncate(n);
    Ok(buf)
}

/// Reads into `buf` at `offset` until it is full or the file ends; returns
/// the number of bytes read.
pub(crate) fn read_up_to(file: &dyn StorageFile, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0usize;
    while done < buf.len() {
        let n = file.read_at(&mut buf[done..], offset + done as u64)?;
        if n == 0 {
            break;
        }
        done += n;
    }
    Ok(done)
}
