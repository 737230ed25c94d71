//! [`FsStorage`]: the storage layer on real files (Unix positional I/O).

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Arc;

use super::{LockGuard, OpenMode, Storage, StorageFile};

/// The mode of every file the engine creates: owner read and write only
/// (before the umask, which can only remove bits).
pub const FILE_MODE: u32 = 0o600;
/// The mode of every directory the engine creates: owner only.
pub const DIR_MODE: u32 = 0o700;

/// The storage layer on the real file system.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use waymark_engine::storage::{FsStorage, Storage};
///
/// let storage: Arc<dyn Storage> = Arc::new(FsStorage);
/// # let _ = storage;
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct FsStorage;

#[derive(Debug)]
struct FsFile {
    file: File,
}

impl StorageFile for FsFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        loop {
            match self.file.read_at(buf, offset) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => return other,
            }
        }
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(buf, offset)
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn set_len(&self, len_bytes: u64) -> io::Result<()> {
        self.file.set_len(len_bytes)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn forget_cached(&self, offset: u64, len: Option<u64>) -> io::Result<()> {
        // Dirty pages are left (the kernel starts their writeback); clean
        // ones, including any a failed sync left clean, are dropped.
        let len = len.and_then(std::num::NonZeroU64::new);
        rustix::fs::fadvise(&self.file, offset, len, rustix::fs::Advice::DontNeed)
            .map_err(io::Error::from)
    }
}

impl Storage for FsStorage {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>> {
        let mut options = OpenOptions::new();
        match mode {
            OpenMode::Read => options.read(true),
            OpenMode::ReadWrite => options.read(true).write(true),
            // Private: a worker's task state is often private data.
            OpenMode::CreateNew => options
                .read(true)
                .write(true)
                .create_new(true)
                .mode(FILE_MODE),
        };
        let file = options.open(path)?;
        Ok(Arc::new(FsFile { file }))
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        // Every directory it creates is private; one that exists keeps the
        // mode its owner gave it.
        fs::DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(path)
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(path)? {
            let entry = entry?;
            // Names that are not UTF-8 cannot be ours; skip them.
            if let Ok(name) = entry.file_name().into_string() {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        path.try_exists()
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        // On Linux a directory is synced by fsync on a read-only handle to it.
        File::open(path)?.sync_all()
    }

    fn lock(&self, path: &Path) -> io::Result<LockGuard> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(FILE_MODE)
            .open(path)?;
        match file.try_lock() {
            Ok(()) => Ok(Box::new(file)),
            Err(TryLockError::WouldBlock) => Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "lock held by another open handle",
            )),
            Err(TryLockError::Error(e)) => Err(e),
        }
    }

    fn new_log_id(&self) -> u128 {
        // fastrand's global generator is seeded from the OS's hash randomness.
        fastrand::u128(..)
    }
}
