//! [`SimDisk`]: a deterministic, in-memory disk that can crash.
//!
//! The simulated disk keeps, for every file, the bytes as written (what a
//! reader sees now) apart from the bytes known durable (what survived the last
//! `sync_data`), plus the list of unsynced operations in between. Directories
//! likewise keep their current entries apart from the entries made durable by
//! the last `sync_dir`. A crash freezes the disk: every later operation on it,
//! or on a handle opened from it, fails. [`SimDisk::reboot`] then builds the
//! disk as it would come back, applying a [`Damage`] to whatever was not
//! synced. Every random choice is drawn from the seed given to
//! [`SimDisk::new`], so a failing run replays from its seed.
//!
//! What it assumes of a real disk, it assumes of nothing more: an honest
//! `fdatasync`, and that unsynced data may be lost, torn at any byte,
//! reordered at page granularity or corrupted, and that an unsynced directory
//! entry may be forgotten.

// Simulated files live in memory: their offsets and lengths are usize by
// nature, and every offset a caller passes is checked by `to_usize` first.
#![allow(clippy::cast_possible_truncation)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{LockGuard, OpenMode, Storage, StorageFile};

/// The page size used by [`Damage::Pages`].
const PAGE_BYTES: u64 = 4096;

/// What a crash does to the data and directory entries that were not synced.
///
/// Synced data is never damaged: a crash only touches what `sync_data` or
/// `sync_dir` had not yet made durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Damage {
    /// Everything unsynced survives, as if the OS flushed it all in time.
    KeepAll,
    /// Every unsynced change is lost: data, length changes and directory
    /// entries.
    DropAll,
    /// Unsynced writes survive except the last write to each file, of which a
    /// random prefix survives (a torn write).
    TornLastWrite,
    /// Each 4 KiB page holding unsynced bytes is independently kept, dropped
    /// (the durable bytes come back, zeros past the durable length) or
    /// corrupted (the unsynced bytes become random).
    Pages,
    /// Files created, renamed or removed since their directory's last sync
    /// come back as they were at that sync; file data survives.
    ForgetDirEntries,
    /// Unsynced truncations are undone (the cut bytes come back); other
    /// unsynced changes survive.
    DropTruncations,
    /// For each file and each directory, one of the damages above, drawn from
    /// the seed.
    Random,
}

impl Damage {
    /// Every damage a crash can apply, for tests that pick one at random.
    pub const ALL: [Damage; 7] = [
        Damage::KeepAll,
        Damage::DropAll,
        Damage::TornLastWrite,
        Damage::Pages,
        Damage::ForgetDirEntries,
        Damage::DropTruncations,
        Damage::Random,
    ];
}

/// The kinds of storage operation, for fault injection and counting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpKind {
    /// Opening an existing file.
    Open,
    /// Creating a new file.
    Create,
    /// Reading from a file.
    Read,
    /// Writing to a file.
    Write,
    /// Changing a file's length.
    SetLen,
    /// Asking a file's length.
    Len,
    /// `sync_data` of a file.
    Sync,
    /// Syncing a directory.
    SyncDir,
    /// Creating a directory.
    CreateDir,
    /// Listing a directory or testing whether a path exists.
    List,
    /// Removing a file.
    Remove,
    /// Renaming a file.
    Rename,
    /// Taking a lock.
    Lock,
}

type InodeId = u64;

#[derive(Clone, Debug)]
enum Op {
    Write { offset: u64, data: Vec<u8> },
    SetLen { len_bytes: u64 },
}

#[derive(Clone, Debug, Default)]
struct Inode {
    /// What readers see now.
    current: Vec<u8>,
    /// What survived the last `sync_data`.
    durable: Vec<u8>,
    /// The operations since the last `sync_data`, in order.
    unsynced: Vec<Op>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Node {
    Dir,
    File(InodeId),
}

#[derive(Clone, Debug, Default)]
struct Fs {
    inodes: HashMap<InodeId, Inode>,
    /// Current directory entries, by full path.
    entries: BTreeMap<PathBuf, Node>,
    /// Directory entries as of each directory's last sync.
    durable_entries: BTreeMap<PathBuf, Node>,
    next_inode: InodeId,
}

struct State {
    fs: Fs,
    rng: fastrand::Rng,
    crashed: bool,
    ops: u64,
    crash_at_op: Option<u64>,
    faults: Vec<(OpKind, u64)>,
    capacity_bytes: Option<u64>,
    locks: HashSet<PathBuf>,
}

struct Inner {
    seed: u64,
    state: Mutex<State>,
}

/// A deterministic in-memory disk that keeps written and synced bytes apart
/// and can crash, tear, fill up or fail any operation.
///
/// Clones share one disk. Hand it to the engine as an
/// `Arc<dyn Storage>`; crash it with [`SimDisk::crash`] or
/// [`SimDisk::crash_after_ops`], then [`SimDisk::reboot`] to get the disk as
/// it comes back.
///
/// # Examples
///
/// ```
/// use std::path::Path;
/// use waymark_engine::storage::{Damage, OpenMode, SimDisk, Storage};
///
/// let disk = SimDisk::new(7);
/// disk.create_dir_all(Path::new("/d")).unwrap();
/// disk.sync_dir(Path::new("/")).unwrap();
/// let f = disk.open(Path::new("/d/a"), OpenMode::CreateNew).unwrap();
/// disk.sync_dir(Path::new("/d")).unwrap();
/// f.write_all_at(b"durable", 0).unwrap();
/// f.sync_data().unwrap();
/// f.write_all_at(b" and not", 7).unwrap();
///
/// let after = disk.reboot(Damage::DropAll);
/// let f = after.open(Path::new("/d/a"), OpenMode::Read).unwrap();
/// let mut buf = vec![0; f.len().unwrap() as usize];
/// f.read_exact_at(&mut buf, 0).unwrap();
/// assert_eq!(buf, b"durable");
/// ```
#[derive(Clone)]
pub struct SimDisk {
    inner: Arc<Inner>,
}

impl fmt::Debug for SimDisk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimDisk")
            .field("seed", &self.inner.seed)
            .finish()
    }
}

fn crashed_error() -> io::Error {
    io::Error::other("simulated disk has crashed")
}

fn injected_error(kind: OpKind) -> io::Error {
    io::Error::other(format!("injected fault in {kind:?}"))
}

fn full_error() -> io::Error {
    io::Error::new(io::ErrorKind::StorageFull, "simulated disk is full")
}

fn to_usize(n: u64) -> io::Result<usize> {
    usize::try_from(n).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset too large"))
}

impl SimDisk {
    /// An empty disk whose random choices all come from `seed`.
    pub fn new(seed: u64) -> SimDisk {
        let mut fs = Fs::default();
        fs.entries.insert(PathBuf::from("/"), Node::Dir);
        fs.durable_entries.insert(PathBuf::from("/"), Node::Dir);
        SimDisk::from_fs(seed, fs, fastrand::Rng::with_seed(seed))
    }

    fn from_fs(seed: u64, fs: Fs, rng: fastrand::Rng) -> SimDisk {
        let state = State {
            fs,
            rng,
            crashed: false,
            ops: 0,
            crash_at_op: None,
            faults: Vec::new(),
            capacity_bytes: None,
            locks: HashSet::new(),
        };
        SimDisk {
            inner: Arc::new(Inner {
                seed,
                state: Mutex::new(state),
            }),
        }
    }

    /// The seed this disk was made from.
    pub fn seed(&self) -> u64 {
        self.inner.seed
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock_state(&self.inner)
    }

    /// Crashes the disk now: every later operation on it fails.
    pub fn crash(&self) {
        self.state().crashed = true;
    }

    /// Whether the disk has crashed.
    pub fn has_crashed(&self) -> bool {
        self.state().crashed
    }

    /// Crashes the disk just before its `n`-th operation from now
    /// (`n = 0`: before the next one). The operation fails.
    pub fn crash_after_ops(&self, n: u64) {
        let mut state = self.state();
        state.crash_at_op = Some(state.ops + n);
    }

    /// How many operations the disk has performed (or refused) so far.
    pub fn ops(&self) -> u64 {
        self.state().ops
    }

    /// Makes the `n`-th operation of `kind` from now (`n = 1`: the next one)
    /// fail with an I/O error. The failed operation has no effect, except a
    /// failed write, which may have written any prefix of its bytes.
    pub fn fail_nth(&self, kind: OpKind, n: u64) {
        assert!(n >= 1, "fail_nth counts from 1");
        self.state().faults.push((kind, n));
    }

    /// Limits the total bytes of all files; a write past it writes what fits
    /// and fails with [`io::ErrorKind::StorageFull`]. `None` lifts the limit.
    pub fn set_capacity(&self, capacity_bytes: Option<u64>) {
        self.state().capacity_bytes = capacity_bytes;
    }

    /// Crashes the disk (if it has not crashed yet) and returns the disk as it
    /// comes back after `damage` to everything unsynced. The returned disk is
    /// independent of this one, has no faults scheduled, and continues this
    /// disk's random sequence.
    pub fn reboot(&self, damage: Damage) -> SimDisk {
        let mut state = self.state();
        state.crashed = true;
        let mut rng = state.rng.fork();
        let fs = after_crash(&state.fs, damage, &mut rng);
        drop(state);
        SimDisk::from_fs(self.inner.seed, fs, rng)
    }

    /// Counts an operation and decides whether it fails (crash or injected
    /// fault). Called with the state locked, before the operation's effect.
    fn begin(state: &mut State, kind: OpKind) -> io::Result<()> {
        if state.crashed {
            return Err(crashed_error());
        }
        state.ops += 1;
        if state.crash_at_op.is_some_and(|at| state.ops > at) {
            state.crashed = true;
            return Err(crashed_error());
        }
        let mut fail = false;
        state.faults.retain_mut(|(k, n)| {
            if *k != kind || fail {
                return true;
            }
            *n -= 1;
            if *n == 0 {
                fail = true;
                return false;
            }
            true
        });
        if fail {
            return Err(injected_error(kind));
        }
        Ok(())
    }
}

fn lock_state(inner: &Inner) -> MutexGuard<'_, State> {
    // A panic while holding the lock leaves the simulated disk in a state we
    // still want to inspect; the data itself is always consistent between
    // statements, so poisoning carries no information here.
    inner.state.lock().unwrap_or_else(|e| e.into_inner())
}

fn parent_of(path: &Path) -> PathBuf {
    path.parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"))
}

impl Fs {
    fn total_bytes(&self) -> u64 {
        self.inodes.values().map(|i| i.current.len() as u64).sum()
    }

    fn require_dir(&self, path: &Path) -> io::Result<()> {
        match self.entries.get(path) {
            Some(Node::Dir) => Ok(()),
            Some(Node::File(_)) => Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("{} is a file", path.display()),
            )),
            None => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no directory {}", path.display()),
            )),
        }
    }

    fn file(&self, path: &Path) -> io::Result<InodeId> {
        match self.entries.get(path) {
            Some(Node::File(id)) => Ok(*id),
            Some(Node::Dir) => Err(io::Error::new(
                io::ErrorKind::IsADirectory,
                format!("{} is a directory", path.display()),
            )),
            None => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no file {}", path.display()),
            )),
        }
    }
}

/// Applies `op` to `bytes`.
fn apply(bytes: &mut Vec<u8>, op: &Op) {
    match op {
        Op::Write { offset, data } => {
            let start = *offset as usize;
            let end = start + data.len();
            if bytes.len() < end {
                bytes.resize(end, 0);
            }
            bytes[start..end].copy_from_slice(data);
        }
        Op::SetLen { len_bytes } => bytes.resize(*len_bytes as usize, 0),
    }
}

/// The data damages a file can get (the directory damage is separate).
#[derive(Clone, Copy, Debug)]
enum FileDamage {
    Keep,
    Drop,
    TornLast,
    Pages,
    DropTruncations,
}

fn file_damage(damage: Damage, rng: &mut fastrand::Rng) -> FileDamage {
    match damage {
        Damage::KeepAll | Damage::ForgetDirEntries => FileDamage::Keep,
        Damage::DropAll => FileDamage::Drop,
        Damage::TornLastWrite => FileDamage::TornLast,
        Damage::Pages => FileDamage::Pages,
        Damage::DropTruncations => FileDamage::DropTruncations,
        Damage::Random => match rng.u8(0..5) {
            0 => FileDamage::Keep,
            1 => FileDamage::Drop,
            2 => FileDamage::TornLast,
            3 => FileDamage::Pages,
            _ => FileDamage::DropTruncations,
        },
    }
}

/// The content a file has after a crash with `damage`.
fn damaged_content(inode: &Inode, damage: FileDamage, rng: &mut fastrand::Rng) -> Vec<u8> {
    let mut bytes = inode.durable.clone();
    match damage {
        FileDamage::Keep => return inode.current.clone(),
        FileDamage::Drop => {}
        FileDamage::TornLast => {
            if let Some((last, rest)) = inode.unsynced.split_last() {
                for op in rest {
                    apply(&mut bytes, op);
                }
                match last {
                    Op::Write { offset, data } => {
                        let keep = rng.usize(0..data.len().max(1));
                        let torn = Op::Write {
                            offset: *offset,
                            data: data[..keep.min(data.len())].to_vec(),
                        };
                        apply(&mut bytes, &torn);
                    }
                    Op::SetLen { .. } => {
                        if rng.bool() {
                            apply(&mut bytes, last);
                        }
                    }
                }
            }
        }
        FileDamage::DropTruncations => {
            for op in &inode.unsynced {
                match op {
                    Op::SetLen { len_bytes } if (*len_bytes as usize) < bytes.len() => {}
                    _ => apply(&mut bytes, op),
                }
            }
        }
        FileDamage::Pages => {
            bytes = inode.current.clone();
            // Each page touched by an unsynced write is kept, dropped or
            // corrupted; only the unsynced bytes in it are affected.
            let mut dirty: BTreeMap<u64, Vec<(usize, usize)>> = BTreeMap::new();
            for op in &inode.unsynced {
                if let Op::Write { offset, data } = op {
                    let mut start = *offset;
                    let end = offset + data.len() as u64;
                    while start < end {
                        let page = start / PAGE_BYTES;
                        let page_end = ((page + 1) * PAGE_BYTES).min(end);
                        dirty
                            .entry(page)
                            .or_default()
                            .push((start as usize, page_end as usize));
                        start = page_end;
                    }
                }
            }
            for ranges in dirty.values() {
                let choice = rng.u8(0..3);
                for &(start, end) in ranges {
                    let end = end.min(bytes.len()).max(start);
                    for (i, byte) in bytes[start..end].iter_mut().enumerate() {
                        match choice {
                            0 => {}
                            1 => *byte = inode.durable.get(start + i).copied().unwrap_or(0),
                            _ => *byte = rng.u8(..),
                        }
                    }
                }
            }
        }
    }
    bytes
}

/// Builds the file system as it comes back after a crash with `damage`.
fn after_crash(fs: &Fs, damage: Damage, rng: &mut fastrand::Rng) -> Fs {
    // Directory entries: per directory, the current ones or the durable ones.
    let dirs: Vec<PathBuf> = fs
        .entries
        .iter()
        .chain(fs.durable_entries.iter())
        .filter(|(_, node)| **node == Node::Dir)
        .map(|(p, _)| p.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut entries = BTreeMap::new();
    entries.insert(PathBuf::from("/"), Node::Dir);
    for dir in &dirs {
        let forget = match damage {
            Damage::DropAll | Damage::ForgetDirEntries => true,
            Damage::Random => rng.bool(),
            _ => false,
        };
        let source = if forget {
            &fs.durable_entries
        } else {
            &fs.entries
        };
        for (path, node) in source.iter() {
            if path.as_path() != Path::new("/") && parent_of(path) == *dir {
                entries.insert(path.clone(), *node);
            }
        }
    }
    // Keep only entries whose parent directory survived.
    loop {
        let orphans: Vec<PathBuf> = entries
            .keys()
            .filter(|p| {
                p.as_path() != Path::new("/")
                    && !matches!(entries.get(&parent_of(p)), Some(Node::Dir))
            })
            .cloned()
            .collect();
        if orphans.is_empty() {
            break;
        }
        for p in orphans {
            entries.remove(&p);
        }
    }
    let mut inodes = HashMap::new();
    for node in entries.values() {
        if let Node::File(id) = node {
            if inodes.contains_key(id) {
                continue;
            }
            let Some(inode) = fs.inodes.get(id) else {
                continue;
            };
            let content = damaged_content(inode, file_damage(damage, rng), rng);
            inodes.insert(
                *id,
                Inode {
                    current: content.clone(),
                    durable: content,
                    unsynced: Vec::new(),
                },
            );
        }
    }
    Fs {
        inodes,
        durable_entries: entries.clone(),
        entries,
        next_inode: fs.next_inode,
    }
}

#[derive(Debug)]
struct SimFile {
    disk: SimDisk,
    inode: InodeId,
    writable: bool,
}

impl SimFile {
    fn with_inode<T>(
        &self,
        kind: OpKind,
        f: impl FnOnce(&mut State, InodeId) -> io::Result<T>,
    ) -> io::Result<T> {
        let mut state = self.disk.state();
        SimDisk::begin(&mut state, kind)?;
        if !state.fs.inodes.contains_key(&self.inode) {
            // Only a crash removes inodes, and a crash fails every handle.
            return Err(io::Error::new(io::ErrorKind::NotFound, "file is gone"));
        }
        f(&mut state, self.inode)
    }

    fn check_writable(&self) -> io::Result<()> {
        if self.writable {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "file opened read-only",
            ))
        }
    }
}

fn inode_mut(state: &mut State, id: InodeId) -> &mut Inode {
    state
        .fs
        .inodes
        .get_mut(&id)
        .expect("with_inode checked that the inode exists")
}

impl StorageFile for SimFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.with_inode(OpKind::Read, |state, id| {
            let data = &inode_mut(state, id).current;
            let start = to_usize(offset)?.min(data.len());
            let n = buf.len().min(data.len() - start);
            buf[..n].copy_from_slice(&data[start..start + n]);
            Ok(n)
        })
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.check_writable()?;
        self.with_inode(OpKind::Write, |state, id| {
            to_usize(offset)?;
            let mut len = buf.len();
            let mut result = Ok(());
            if let Some(capacity) = state.capacity_bytes {
                let current_len = state.fs.inodes[&id].current.len() as u64;
                let growth = (offset + len as u64).saturating_sub(current_len);
                let free = capacity.saturating_sub(state.fs.total_bytes());
                if growth > free {
                    len -= to_usize(growth - free)?;
                    result = Err(full_error());
                }
            }
            let op = Op::Write {
                offset,
                data: buf[..len].to_vec(),
            };
            let inode = inode_mut(state, id);
            apply(&mut inode.current, &op);
            inode.unsynced.push(op);
            result
        })
    }

    fn len(&self) -> io::Result<u64> {
        self.with_inode(OpKind::Len, |state, id| {
            Ok(inode_mut(state, id).current.len() as u64)
        })
    }

    fn set_len(&self, len_bytes: u64) -> io::Result<()> {
        self.check_writable()?;
        self.with_inode(OpKind::SetLen, |state, id| {
            to_usize(len_bytes)?;
            if let Some(capacity) = state.capacity_bytes {
                let current_len = state.fs.inodes[&id].current.len() as u64;
                let growth = len_bytes.saturating_sub(current_len);
                if growth > capacity.saturating_sub(state.fs.total_bytes()) {
                    return Err(full_error());
                }
            }
            let op = Op::SetLen { len_bytes };
            let inode = inode_mut(state, id);
            apply(&mut inode.current, &op);
            inode.unsynced.push(op);
            Ok(())
        })
    }

    fn sync_data(&self) -> io::Result<()> {
        self.with_inode(OpKind::Sync, |state, id| {
            let inode = inode_mut(state, id);
            inode.durable = inode.current.clone();
            inode.unsynced.clear();
            Ok(())
        })
    }
}

struct SimLock {
    inner: Arc<Inner>,
    path: PathBuf,
}

impl Drop for SimLock {
    fn drop(&mut self) {
        lock_state(&self.inner).locks.remove(&self.path);
    }
}

impl Storage for SimDisk {
    fn read_ahead(&self) -> bool {
        false
    }

    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>> {
        let mut state = self.state();
        let kind = if mode == OpenMode::CreateNew {
            OpKind::Create
        } else {
            OpKind::Open
        };
        SimDisk::begin(&mut state, kind)?;
        let inode = match mode {
            OpenMode::Read | OpenMode::ReadWrite => state.fs.file(path)?,
            OpenMode::CreateNew => {
                if state.fs.entries.contains_key(path) {
                    return Err(io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        format!("{} exists", path.display()),
                    ));
                }
                state.fs.require_dir(&parent_of(path))?;
                let id = state.fs.next_inode;
                state.fs.next_inode += 1;
                state.fs.inodes.insert(id, Inode::default());
                state.fs.entries.insert(path.to_path_buf(), Node::File(id));
                id
            }
        };
        Ok(Arc::new(SimFile {
            disk: self.clone(),
            inode,
            writable: mode != OpenMode::Read,
        }))
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut state = self.state();
        SimDisk::begin(&mut state, OpKind::CreateDir)?;
        for dir in path.ancestors().collect::<Vec<_>>().into_iter().rev() {
            if dir.as_os_str().is_empty() {
                continue;
            }
            match state.fs.entries.get(dir) {
                Some(Node::Dir) => {}
                Some(Node::File(_)) => {
                    return Err(io::Error::new(
                        io::ErrorKind::NotADirectory,
                        format!("{} is a file", dir.display()),
                    ));
                }
                None => {
                    state.fs.entries.insert(dir.to_path_buf(), Node::Dir);
                }
            }
        }
        Ok(())
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let mut state = self.state();
        SimDisk::begin(&mut state, OpKind::List)?;
        state.fs.require_dir(path)?;
        let mut names: Vec<String> = state
            .fs
            .entries
            .keys()
            .filter(|p| p.as_path() != Path::new("/") && parent_of(p) == path)
            .filter_map(|p| p.file_name().and_then(|n| n.to_str()).map(String::from))
            .collect();
        names.sort();
        Ok(names)
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        let mut state = self.state();
        SimDisk::begin(&mut state, OpKind::List)?;
        Ok(state.fs.entries.contains_key(path))
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut state = self.state();
        SimDisk::begin(&mut state, OpKind::Remove)?;
        state.fs.file(path)?;
        state.fs.entries.remove(path);
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.state();
        SimDisk::begin(&mut state, OpKind::Rename)?;
        let id = state.fs.file(from)?;
        state.fs.require_dir(&parent_of(to))?;
        if matches!(state.fs.entries.get(to), Some(Node::Dir)) {
            return Err(io::Error::new(
                io::ErrorKind::IsADirectory,
                format!("{} is a directory", to.display()),
            ));
        }
        state.fs.entries.remove(from);
        state.fs.entries.insert(to.to_path_buf(), Node::File(id));
        Ok(())
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let mut state = self.state();
        SimDisk::begin(&mut state, OpKind::SyncDir)?;
        state.fs.require_dir(path)?;
        let fs = &mut state.fs;
        let is_child = |p: &PathBuf| p.as_path() != Path::new("/") && parent_of(p) == path;
        fs.durable_entries.retain(|p, _| !is_child(p));
        let children: Vec<(PathBuf, Node)> = fs
            .entries
            .iter()
            .filter(|(p, _)| is_child(p))
            .map(|(p, n)| (p.clone(), *n))
            .collect();
        fs.durable_entries.extend(children);
        Ok(())
    }

    fn lock(&self, path: &Path) -> io::Result<LockGuard> {
        let mut state = self.state();
        SimDisk::begin(&mut state, OpKind::Lock)?;
        if state.locks.contains(path) {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "lock held by another open handle",
            ));
        }
        if !state.fs.entries.contains_key(path) {
            state.fs.require_dir(&parent_of(path))?;
            let id = state.fs.next_inode;
            state.fs.next_inode += 1;
            state.fs.inodes.insert(id, Inode::default());
            state.fs.entries.insert(path.to_path_buf(), Node::File(id));
        }
        state.locks.insert(path.to_path_buf());
        Ok(Box::new(SimLock {
            inner: Arc::clone(&self.inner),
            path: path.to_path_buf(),
        }))
    }

    fn new_log_id(&self) -> u128 {
        self.state().rng.u128(..)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(seed: u64) -> (SimDisk, Arc<dyn StorageFile>) {
        let disk = SimDisk::new(seed);
        disk.create_dir_all(Path::new("/d")).unwrap();
        disk.sync_dir(Path::new("/")).unwrap();
        let f = disk.open(Path::new("/d/f"), OpenMode::CreateNew).unwrap();
        disk.sync_dir(Path::new("/d")).unwrap();
        (disk, f)
    }

    fn content(disk: &SimDisk, path: &str) -> Option<Vec<u8>> {
        let f = disk.open(Path::new(path), OpenMode::Read).ok()?;
        Some(crate::storage::read_to_vec(f.as_ref()).unwrap())
    }

    #[test]
    fn synced_data_survives_every_damage() {
        for (i, damage) in Damage::ALL.into_iter().enumerate() {
            let (disk, f) = setup(i as u64);
            f.write_all_at(&[1; 5000], 0).unwrap();
            f.sync_data().unwrap();
            f.write_all_at(&[2; 5000], 5000).unwrap();
            let after = disk.reboot(damage);
            let got = content(&after, "/d/f").unwrap();
            assert!(got.len() >= 5000, "{damage:?}");
            assert_eq!(&got[..5000], &[1; 5000][..], "{damage:?}");
        }
    }

    #[test]
    fn drop_all_loses_unsynced_and_keep_all_keeps_it() {
        let (disk, f) = setup(1);
        f.write_all_at(b"abc", 0).unwrap();
        assert_eq!(content(&disk.reboot(Damage::DropAll), "/d/f").unwrap(), b"");
        assert_eq!(
            content(&disk.reboot(Damage::KeepAll), "/d/f").unwrap(),
            b"abc"
        );
    }

    #[test]
    fn torn_last_write_keeps_a_strict_prefix() {
        for seed in 0..20 {
            let (disk, f) = setup(seed);
            f.write_all_at(b"first", 0).unwrap();
            f.write_all_at(b"second", 5).unwrap();
            let got = content(&disk.reboot(Damage::TornLastWrite), "/d/f").unwrap();
            assert!(got.starts_with(b"first"));
            assert!(got.len() < 11);
            assert!(b"firstsecond".starts_with(&got));
        }
    }

    #[test]
    fn unsynced_new_file_is_forgotten() {
        let (disk, _f) = setup(2);
        let g = disk.open(Path::new("/d/g"), OpenMode::CreateNew).unwrap();
        g.write_all_at(b"x", 0).unwrap();
        g.sync_data().unwrap();
        let after = disk.reboot(Damage::ForgetDirEntries);
        assert!(content(&after, "/d/g").is_none());
        assert!(content(&after, "/d/f").is_some());
    }

    #[test]
    fn removed_file_reappears_unless_dir_synced() {
        let (disk, _f) = setup(3);
        disk.remove_file(Path::new("/d/f")).unwrap();
        assert!(content(&disk.reboot(Damage::DropAll), "/d/f").is_some());
        disk.sync_dir(Path::new("/d")).unwrap_err(); // crashed by reboot
        let (disk, _f) = setup(3);
        disk.remove_file(Path::new("/d/f")).unwrap();
        disk.sync_dir(Path::new("/d")).unwrap();
        assert!(content(&disk.reboot(Damage::DropAll), "/d/f").is_none());
    }

    #[test]
    fn unsynced_truncation_can_be_undone() {
        let (disk, f) = setup(4);
        f.write_all_at(b"0123456789", 0).unwrap();
        f.sync_data().unwrap();
        f.set_len(3).unwrap();
        let got = content(&disk.reboot(Damage::DropTruncations), "/d/f").unwrap();
        assert_eq!(got, b"0123456789");
    }

    #[test]
    fn pages_only_touch_unsynced_bytes() {
        for seed in 0..20 {
            let (disk, f) = setup(seed);
            f.write_all_at(&[7; 100], 0).unwrap();
            f.sync_data().unwrap();
            f.write_all_at(&[9; 10000], 100).unwrap();
            let got = content(&disk.reboot(Damage::Pages), "/d/f").unwrap();
            assert_eq!(&got[..100], &[7; 100][..]);
        }
    }

    #[test]
    fn crash_fails_every_later_operation() {
        let (disk, f) = setup(5);
        disk.crash_after_ops(1);
        f.write_all_at(b"a", 0).unwrap();
        assert!(f.sync_data().is_err());
        assert!(f.read_at(&mut [0; 1], 0).is_err());
        assert!(disk.has_crashed());
    }

    #[test]
    fn injected_fault_fails_the_chosen_operation_once() {
        let (disk, f) = setup(6);
        disk.fail_nth(OpKind::Sync, 2);
        f.sync_data().unwrap();
        assert!(f.sync_data().is_err());
        f.sync_data().unwrap();
    }

    #[test]
    fn full_disk_writes_a_prefix_then_fails() {
        let (disk, f) = setup(7);
        disk.set_capacity(Some(10));
        let err = f.write_all_at(&[1; 15], 0).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::StorageFull);
        assert_eq!(f.len().unwrap(), 10);
    }

    #[test]
    fn lock_is_exclusive_until_dropped() {
        let (disk, _f) = setup(8);
        let guard = disk.lock(Path::new("/d/LOCK")).unwrap();
        let err = disk.lock(Path::new("/d/LOCK")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        drop(guard);
        disk.lock(Path::new("/d/LOCK")).unwrap();
    }

    #[test]
    fn same_seed_same_outcome() {
        let run = |seed| {
            let (disk, f) = setup(seed);
            f.write_all_at(&[3; 9000], 0).unwrap();
            content(&disk.reboot(Damage::Random), "/d/f")
        };
        assert_eq!(run(42), run(42));
    }
}
