//! Copy-on-write storage over real files: reads come from the files,
//! every change stays in memory and is gone when the storage is dropped.
//!
//! The tools read `views.redb` of a state directory whose worker crashed
//! (a copied directory) or still runs. redb then finds its file marked as
//! not closed cleanly and must repair it before anyone reads it, which
//! `redb::ReadOnlyDatabase` refuses to do. Opened on this storage, redb
//! repairs in memory, exactly as the worker's next open would on disk, and
//! the file on disk is never written.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use super::{FsStorage, LockGuard, OpenMode, Storage, StorageFile};

/// Bytes of a page the overlay keeps.
const PAGE: u64 = PAGE_BYTES as u64;
const PAGE_BYTES: usize = 4096;

/// See the module documentation. Directory changes (a removed file, a
/// created one) are kept in memory too; renames and locks are refused.
#[derive(Debug, Default)]
pub(crate) struct CowStorage {
    state: Mutex<CowDirs>,
}

#[derive(Debug, Default)]
struct CowDirs {
    /// Every file opened or created, by path.
    files: HashMap<PathBuf, Arc<CowFile>>,
    /// Files removed (their real counterparts stay on disk).
    removed: BTreeSet<PathBuf>,
}

impl CowStorage {
    fn dirs(&self) -> std::sync::MutexGuard<'_, CowDirs> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Storage for CowStorage {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>> {
        let mut dirs = self.dirs();
        let removed = dirs.removed.contains(path);
        if let Some(file) = dirs.files.get(path).filter(|_| !removed) {
            if mode == OpenMode::CreateNew {
                return Err(io::ErrorKind::AlreadyExists.into());
            }
            return Ok(Arc::clone(file) as Arc<dyn StorageFile>);
        }
        let base = if removed {
            None
        } else {
            match std::fs::File::open(path) {
                Ok(file) => Some(file),
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(e) => return Err(e),
            }
        };
        match (&base, mode) {
            (Some(_), OpenMode::CreateNew) => return Err(io::ErrorKind::AlreadyExists.into()),
            (None, OpenMode::Read | OpenMode::ReadWrite) => {
                return Err(io::ErrorKind::NotFound.into());
            }
            _ => {}
        }
        let len = match &base {
            Some(file) => file.metadata()?.len(),
            None => 0,
        };
        let file = Arc::new(CowFile {
            base,
            state: Mutex::new(Overlay {
                len,
                base_len: len,
                pages: HashMap::new(),
            }),
        });
        dirs.removed.remove(path);
        dirs.files.insert(path.to_path_buf(), Arc::clone(&file));
        Ok(file)
    }

    fn create_dir_all(&self, _path: &Path) -> io::Result<()> {
        Ok(())
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        FsStorage.list_dir(path)
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        let dirs = self.dirs();
        if dirs.removed.contains(path) {
            return Ok(false);
        }
        Ok(dirs.files.contains_key(path) || path.try_exists()?)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut dirs = self.dirs();
        dirs.files.remove(path);
        dirs.removed.insert(path.to_path_buf());
        Ok(())
    }

    fn rename(&self, _from: &Path, _to: &Path) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "copy-on-write storage does not rename",
        ))
    }

    fn sync_dir(&self, _path: &Path) -> io::Result<()> {
        Ok(())
    }

    fn lock(&self, _path: &Path) -> io::Result<LockGuard> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "copy-on-write storage takes no locks",
        ))
    }

    fn new_log_id(&self) -> u128 {
        0
    }
}

/// A real file (or none, for a file created here) under pages written in
/// memory.
struct CowFile {
    base: Option<std::fs::File>,
    state: Mutex<Overlay>,
}

impl fmt::Debug for CowFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CowFile").finish_non_exhaustive()
    }
}

struct Overlay {
    /// The file's length as written here.
    len: u64,
    /// Bytes of the real file that still show where no page is kept: its
    /// length at open, lowered by any truncation (past it, zeros).
    base_len: u64,
    /// Pages written here, by index; each `PAGE` bytes.
    pages: HashMap<u64, Box<[u8]>>,
}

impl CowFile {
    fn overlay(&self) -> std::sync::MutexGuard<'_, Overlay> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Fills `out` with the real file's bytes at `offset`, zeros past
    /// `base_len` or past the file's end (a live file may shrink).
    fn read_base(&self, base_len: u64, out: &mut [u8], offset: u64) -> io::Result<()> {
        out.fill(0);
        let (Some(file), true) = (&self.base, offset < base_len) else {
            return Ok(());
        };
        let want =
            usize::try_from((base_len - offset).min(out.len() as u64)).expect("at most out.len()");
        let mut done = 0;
        while done < want {
            match file.read_at(&mut out[done..want], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Reads `out` at `offset` as the file now reads (within `len`).
    fn read_view(&self, o: &Overlay, out: &mut [u8], offset: u64) -> io::Result<()> {
        for (index, within, range) in page_chunks(offset, out.len()) {
            let at = offset + range.start as u64;
            let chunk = &mut out[range];
            match o.pages.get(&index) {
                Some(page) => chunk.copy_from_slice(&page[within..within + chunk.len()]),
                None => self.read_base(o.base_len, chunk, at)?,
            }
        }
        Ok(())
    }
}

/// The pages `len` bytes at `offset` fall in, in order: (page index,
/// offset within the page, range of the bytes in the caller's buffer).
fn page_chunks(
    offset: u64,
    len: usize,
) -> impl Iterator<Item = (u64, usize, std::ops::Range<usize>)> {
    let mut done = 0usize;
    std::iter::from_fn(move || {
        if done == len {
            return None;
        }
        let at = offset + done as u64;
        let within = usize::try_from(at % PAGE).expect("within a page");
        let n = (PAGE_BYTES - within).min(len - done);
        let chunk = (at / PAGE, within, done..done + n);
        done += n;
        Some(chunk)
    })
}

impl StorageFile for CowFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let o = self.overlay();
        if offset >= o.len {
            return Ok(0);
        }
        let n = usize::try_from((o.len - offset).min(buf.len() as u64)).expect("at most buf.len()");
        self.read_view(&o, &mut buf[..n], offset)?;
        Ok(n)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut o = self.overlay();
        let end = offset
            .checked_add(buf.len() as u64)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "write past 2^64"))?;
        for (index, within, range) in page_chunks(offset, buf.len()) {
            if !o.pages.contains_key(&index) {
                let mut page = vec![0u8; PAGE_BYTES].into_boxed_slice();
                // Within the current length the page shows what is there;
                // past it, zeros.
                let start = index * PAGE;
                if start < o.len {
                    let keep = usize::try_from((o.len - start).min(PAGE)).expect("at most a page");
                    self.read_view(&o, &mut page[..keep], start)?;
                }
                o.pages.insert(index, page);
            }
            let page = o.pages.get_mut(&index).expect("inserted above");
            page[within..within + range.len()].copy_from_slice(&buf[range]);
        }
        o.len = o.len.max(end);
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.overlay().len)
    }

    fn set_len(&self, len_bytes: u64) -> io::Result<()> {
        let mut o = self.overlay();
        if len_bytes < o.len {
            // What is cut reads as zeros if the file grows again.
            o.pages.retain(|index, _| index * PAGE < len_bytes);
            let (index, within) = (len_bytes / PAGE, len_bytes % PAGE);
            if let Some(page) = o.pages.get_mut(&index) {
                page[usize::try_from(within).expect("within a page")..].fill(0);
            }
            o.base_len = o.base_len.min(len_bytes);
        }
        o.len = len_bytes;
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads show the real bytes under the writes made here; the real file
    /// never changes; a cut and regrown range reads as zeros.
    #[test]
    fn writes_stay_in_memory_over_the_real_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let real: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &real).unwrap();
        let cow = CowStorage::default();
        let f = cow.open(&path, OpenMode::ReadWrite).unwrap();
        assert_eq!(f.len().unwrap(), 10_000);
        f.write_all_at(&[0xEE; 100], 4090).unwrap(); // across a page boundary
        f.write_all_at(&[0xDD; 10], 9_995).unwrap(); // grows the file
        let mut expect = real.clone();
        expect[4090..4190].fill(0xEE);
        expect.resize(10_005, 0);
        expect[9_995..10_005].fill(0xDD);
        let mut got = vec![0u8; 10_005];
        f.read_exact_at(&mut got, 0).unwrap();
        assert_eq!(got, expect);
        f.set_len(5_000).unwrap();
        f.set_len(9_000).unwrap();
        expect.truncate(5_000);
        expect.resize(9_000, 0);
        let mut got = vec![0u8; 9_000];
        f.read_exact_at(&mut got, 0).unwrap();
        assert_eq!(got, expect);
        assert_eq!(f.read_at(&mut [0u8; 8], 9_000).unwrap(), 0, "end of file");
        assert_eq!(
            std::fs::read(&path).unwrap(),
            real,
            "the real file is untouched"
        );
        // Creating and removing stay in memory too.
        let new = dir.path().join("new");
        cow.open(&new, OpenMode::CreateNew).unwrap();
        assert!(cow.exists(&new).unwrap() && !new.exists());
        cow.remove_file(&path).unwrap();
        assert!(!cow.exists(&path).unwrap() && path.exists());
    }
}
