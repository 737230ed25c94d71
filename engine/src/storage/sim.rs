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
    /// come back as they were at that sync; file data survives. (A rename
    /// between two directories is undone unless either was synced since:
    /// renames are atomic.)
    ForgetDirEntries,
    /// Unsynced truncations are undone (the cut bytes come back); other
    /// unsynced changes survive.
    DropTruncations,
    /// For each file, one of the data damages above; for each directory, a
    /// prefix of its unsynced changes, in order (none, some or all), drawn
    /// from the seed.
    Random,
}

impl Damage {
    /// The damage's name, as its variant is spelled (`TornLastWrite`):
    /// what [`Damage::from_name`] reads back, for a case a test prints and
    /// a later run replays.
    pub fn name(self) -> &'static str {
        match self {
            Damage::KeepAll => "KeepAll",
            Damage::DropAll => "DropAll",
            Damage::TornLastWrite => "TornLastWrite",
            Damage::Pages => "Pages",
            Damage::ForgetDirEntries => "ForgetDirEntries",
            Damage::DropTruncations => "DropTruncations",
            Damage::Random => "Random",
        }
    }

    /// The damage named `name` ([`Damage::name`]), if there is one.
    ///
    /// ```
    /// use waymark_engine::storage::Damage;
    ///
    /// assert_eq!(Damage::from_name("Pages"), Some(Damage::Pages));
    /// assert!(Damage::ALL.iter().all(|d| Damage::from_name(d.name()) == Some(*d)));
    /// ```
    pub fn from_name(name: &str) -> Option<Damage> {
        Damage::ALL.into_iter().find(|d| d.name() == name)
    }

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
    /// Advice about the page cache (`posix_fadvise`): no data moves, and
    /// a failure is only advice not taken.
    Advise,
}

/// Which paths a [`Fault`] hits. A file operation (read, write, sync,
/// `set_len`, length) is on the path the file has now; a rename is on
/// both of its paths.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FaultPath {
    /// Every path.
    Any,
    /// Paths whose text contains this (`"/log/"`: the log's segments).
    Containing(String),
    /// This path only (a directory, for a directory sync).
    Exactly(PathBuf),
}

impl FaultPath {
    fn matches(&self, path: Option<&Path>) -> bool {
        match (self, path) {
            (FaultPath::Any, _) => true,
            (_, None) => false,
            (FaultPath::Containing(part), Some(p)) => p.to_string_lossy().contains(part.as_str()),
            (FaultPath::Exactly(want), Some(p)) => p == want,
        }
    }
}

/// A fault to inject with [`SimDisk::inject`]: the `nth` operation of a
/// kind on matching paths fails (once, or it and every later one), with an
/// I/O error or with `ENOSPC` ([`io::ErrorKind::StorageFull`], as a full
/// disk answers a write, a `set_len`, a create, a rename or a sync of
/// delayed allocations).
///
/// ```
/// use std::path::Path;
/// use waymark_engine::storage::{Fault, FaultPath, OpKind, OpenMode, SimDisk, Storage};
///
/// let disk = SimDisk::new(1);
/// disk.inject(Fault::new(OpKind::Write).on(FaultPath::Containing("views".into())).forever());
/// let log = disk.open(Path::new("/seg"), OpenMode::CreateNew).unwrap();
/// assert!(log.write_all_at(b"ok", 0).is_ok());
/// let views = disk.open(Path::new("/views.redb"), OpenMode::CreateNew).unwrap();
/// assert!(views.write_all_at(b"no", 0).is_err());
/// assert!(views.write_all_at(b"no", 0).is_err(), "forever");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    kind: OpKind,
    path: FaultPath,
    nth: u64,
    forever: bool,
    full: bool,
}

impl Fault {
    /// The next operation of `kind`, on any path, fails once with an I/O
    /// error.
    pub fn new(kind: OpKind) -> Fault {
        Fault {
            kind,
            path: FaultPath::Any,
            nth: 1,
            forever: false,
            full: false,
        }
    }

    /// The `n`-th matching operation from now fails (`n = 1`: the next).
    ///
    /// # Panics
    ///
    /// If `n` is 0.
    #[must_use]
    pub fn nth(mut self, n: u64) -> Fault {
        assert!(n >= 1, "faults count from 1");
        self.nth = n;
        self
    }

    /// Only operations on these paths count and fail.
    #[must_use]
    pub fn on(mut self, path: FaultPath) -> Fault {
        self.path = path;
        self
    }

    /// The `n`-th matching operation and every later one fail, until the
    /// disk reboots (a dead device, or a full disk nobody frees).
    #[must_use]
    pub fn forever(mut self) -> Fault {
        self.forever = true;
        self
    }

    /// Fails with `ENOSPC` ([`io::ErrorKind::StorageFull`]) instead of an
    /// I/O error.
    #[must_use]
    pub fn disk_full(mut self) -> Fault {
        self.full = true;
        self
    }

    /// The error a hit operation fails with.
    fn error(&self) -> io::Error {
        if self.full {
            full_error()
        } else {
            injected_error(self.kind)
        }
    }
}

/// A fault, armed: how many more matching operations until it fires.
#[derive(Clone, Debug)]
struct Armed {
    fault: Fault,
    remaining: u64,
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

/// A change to directory entries.
#[derive(Clone, Debug)]
enum DirChange {
    /// A new file or directory (`open` with `CreateNew`, `create_dir_all`,
    /// a new lock file).
    Link { path: PathBuf, node: Node },
    /// `remove_file`.
    Unlink { path: PathBuf },
    /// `rename`: one change, in one directory or two (atomic, as a
    /// journaling file system makes it).
    Rename {
        from: PathBuf,
        to: PathBuf,
        node: Node,
    },
}

impl DirChange {
    /// The directories whose entries it changes.
    fn dirs(&self) -> Vec<PathBuf> {
        match self {
            DirChange::Link { path, .. } | DirChange::Unlink { path } => vec![parent_of(path)],
            DirChange::Rename { from, to, .. } => {
                let (a, b) = (parent_of(from), parent_of(to));
                if a == b { vec![a] } else { vec![a, b] }
            }
        }
    }

    fn apply(&self, entries: &mut BTreeMap<PathBuf, Node>) {
        match self {
            DirChange::Link { path, node } => {
                entries.insert(path.clone(), *node);
            }
            DirChange::Unlink { path } => {
                entries.remove(path);
            }
            DirChange::Rename { from, to, node } => {
                if entries.get(from) == Some(node) {
                    entries.remove(from);
                }
                entries.insert(to.clone(), *node);
            }
        }
    }
}

/// A directory change and whether a directory sync made it durable.
#[derive(Clone, Debug)]
struct DirOp {
    change: DirChange,
    durable: bool,
}

#[derive(Clone, Debug, Default)]
struct Fs {
    inodes: HashMap<InodeId, Inode>,
    /// Current directory entries, by full path.
    entries: BTreeMap<PathBuf, Node>,
    /// The entries before the first change of `dir_ops`.
    base_entries: BTreeMap<PathBuf, Node>,
    /// Directory changes since `base_entries`, in order. A crash keeps the
    /// durable ones and, per directory, a prefix of the others.
    dir_ops: Vec<DirOp>,
    next_inode: InodeId,
}

struct State {
    fs: Fs,
    rng: fastrand::Rng,
    crashed: bool,
    ops: u64,
    crash_at_op: Option<u64>,
    faults: Vec<Armed>,
    /// Operations injected faults have failed.
    faults_fired: u64,
    capacity_bytes: Option<u64>,
    locks: HashSet<PathBuf>,
}

struct Inner {
    seed: u64,
    state: Mutex<State>,
    /// Whether long scans may read ahead on a helper thread.
    read_ahead: std::sync::atomic::AtomicBool,
    /// How long each `sync_data` sleeps before it syncs, in microseconds.
    sync_latency_micros: std::sync::atomic::AtomicU64,
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

/// The end of `len` bytes at `offset`, if a simulated file may reach it
/// (`EFBIG` past [`SimDisk::MAX_FILE_BYTES`], as a real file system past
/// its own limit).
fn file_end(offset: u64, len: u64) -> io::Result<u64> {
    offset
        .checked_add(len)
        .filter(|end| *end <= SimDisk::MAX_FILE_BYTES)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::FileTooLarge,
                "past the simulated disk's largest file",
            )
        })
}

impl SimDisk {
    /// The largest simulated file, in bytes (4 GiB): files live in memory,
    /// so a write or `set_len` past it fails with
    /// [`io::ErrorKind::FileTooLarge`] instead of allocating it.
    pub const MAX_FILE_BYTES: u64 = 1 << 32;

    /// An empty disk whose random choices all come from `seed`.
    pub fn new(seed: u64) -> SimDisk {
        let mut fs = Fs::default();
        fs.entries.insert(PathBuf::from("/"), Node::Dir);
        fs.base_entries.insert(PathBuf::from("/"), Node::Dir);
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
            faults_fired: 0,
            capacity_bytes: None,
            locks: HashSet::new(),
        };
        SimDisk {
            inner: Arc::new(Inner {
                seed,
                state: Mutex::new(state),
                read_ahead: std::sync::atomic::AtomicBool::new(false),
                sync_latency_micros: std::sync::atomic::AtomicU64::new(0),
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
    /// fail with an I/O error. The failed operation has no effect, except:
    ///
    /// - a failed write has written a prefix of its bytes (any length,
    ///   drawn from the seed, possibly none or all);
    /// - a failed `sync_data` has made some of the file's unsynced pages
    ///   durable (each drawn from the seed) and forgets the rest, as Linux
    ///   marks pages clean after a writeback error: readers still see them
    ///   until the next crash, but no later sync makes them durable.
    pub fn fail_nth(&self, kind: OpKind, n: u64) {
        assert!(n >= 1, "fail_nth counts from 1");
        self.inject(Fault::new(kind).nth(n));
    }

    /// Arms `fault` (see [`Fault`]); the partial effects are those of
    /// [`SimDisk::fail_nth`]. A reboot disarms every fault.
    pub fn inject(&self, fault: Fault) {
        let remaining = fault.nth;
        self.state().faults.push(Armed { fault, remaining });
    }

    /// Lets long scans of this disk read ahead on a helper thread, as on
    /// real files (default off: a helper's reads count towards a scheduled
    /// crash in an order no seed fixes). For a test of the read-ahead path
    /// itself, on a disk whose crash is behind it. A rebooted disk starts
    /// with it off.
    pub fn set_read_ahead(&self, on: bool) {
        self.inner
            .read_ahead
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Makes every `sync_data` take `latency` (a sleep before it syncs,
    /// outside the disk's lock), as a real disk's `fdatasync` does, so
    /// that the writer's groups form and wait as they do on files. Default
    /// zero. The crash schedule is unchanged: it counts operations, not
    /// time. A rebooted disk starts with none.
    pub fn set_sync_latency(&self, latency: std::time::Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.inner
            .sync_latency_micros
            .store(micros, std::sync::atomic::Ordering::Relaxed);
    }

    /// The bytes all files hold now (their lengths, summed): what
    /// [`SimDisk::set_capacity`] counts.
    pub fn bytes_used(&self) -> u64 {
        self.state().fs.total_bytes()
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
    fn begin(state: &mut State, kind: OpKind, paths: &[&Path]) -> io::Result<()> {
        match SimDisk::begin_faultable(state, kind, paths)? {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    /// As [`SimDisk::begin`], but an injected fault's error is returned
    /// for the operation to apply its partial effect (a failed write or
    /// sync) before it fails with it. `paths`: what the operation is on
    /// (none known: only faults on any path count it).
    fn begin_faultable(
        state: &mut State,
        kind: OpKind,
        paths: &[&Path],
    ) -> io::Result<Option<io::Error>> {
        if state.crashed {
            return Err(crashed_error());
        }
        state.ops += 1;
        if state.crash_at_op.is_some_and(|at| state.ops > at) {
            state.crashed = true;
            return Err(crashed_error());
        }
        // Every fault of this kind on a matching path counts this operation.
        let mut fail = None;
        state.faults.retain_mut(|armed| {
            let f = &armed.fault;
            let on_path = if paths.is_empty() {
                f.path.matches(None)
            } else {
                paths.iter().any(|p| f.path.matches(Some(p)))
            };
            if f.kind != kind || !on_path {
                return true;
            }
            armed.remaining = armed.remaining.saturating_sub(1);
            if armed.remaining == 0 {
                fail.get_or_insert_with(|| f.error());
                return f.forever;
            }
            true
        });
        // One operation failed, however many faults fired on it.
        state.faults_fired += u64::from(fail.is_some());
        Ok(fail)
    }

    /// How many operations injected faults have failed so far (a full
    /// disk's [`SimDisk::set_capacity`] not included).
    pub fn faults_fired(&self) -> u64 {
        self.state().faults_fired
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
    /// The path a file has now (the first, if it has several), if any.
    fn path_of(&self, inode: InodeId) -> Option<PathBuf> {
        self.entries
            .iter()
            .find(|(_, node)| **node == Node::File(inode))
            .map(|(path, _)| path.clone())
    }

    /// Makes a directory change: now, and in the log of changes a crash
    /// may undo.
    fn change(&mut self, change: DirChange) {
        change.apply(&mut self.entries);
        self.dir_ops.push(DirOp {
            change,
            durable: false,
        });
    }

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

/// Applies `op` to `bytes`. Offsets and lengths were checked against
/// [`SimDisk::MAX_FILE_BYTES`] when the operation was made.
fn apply(bytes: &mut Vec<u8>, op: &Op) {
    match op {
        Op::Write { offset, data } => {
            if data.is_empty() {
                return; // `pwrite` of nothing leaves the file as it is.
            }
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

/// The file once every unsynced operation reached the disk: the durable
/// bytes with them applied. (Not `current` after a failed sync: the pages
/// that sync could not write are still in `current`, but the disk never
/// gets them.)
fn flushed(inode: &Inode) -> Vec<u8> {
    let mut bytes = inode.durable.clone();
    for op in &inode.unsynced {
        apply(&mut bytes, op);
    }
    bytes
}

/// The file after each 4 KiB page holding unsynced bytes was independently
/// kept or dropped (the durable bytes come back, zeros past the durable
/// length), or, with `corrupt`, also possibly corrupted (the unsynced bytes
/// become random). Only the unsynced bytes of a page are affected.
fn page_damage(inode: &Inode, rng: &mut fastrand::Rng, corrupt: bool) -> Vec<u8> {
    let mut bytes = flushed(inode);
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
        let choice = rng.u8(0..if corrupt { 3 } else { 2 });
        for &(start, end) in ranges {
            // A later truncation may have cut the range short, or away.
            let end = end.min(bytes.len());
            if start >= end {
                continue;
            }
            for (i, byte) in bytes[start..end].iter_mut().enumerate() {
                match choice {
                    0 => {}
                    1 => *byte = inode.durable.get(start + i).copied().unwrap_or(0),
                    _ => *byte = rng.u8(..),
                }
            }
        }
    }
    bytes
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
        FileDamage::Keep => return flushed(inode),
        FileDamage::Drop => {}
        FileDamage::TornLast => {
            // The last write is torn; what came after it (a length change)
            // may or may not have reached the disk.
            let last_write = inode
                .unsynced
                .iter()
                .rposition(|op| matches!(op, Op::Write { .. }));
            for (i, op) in inode.unsynced.iter().enumerate() {
                match (op, last_write) {
                    (Op::Write { offset, data }, Some(last)) if i == last => {
                        let keep = rng.usize(0..data.len().max(1));
                        let torn = Op::Write {
                            offset: *offset,
                            data: data[..keep.min(data.len())].to_vec(),
                        };
                        apply(&mut bytes, &torn);
                    }
                    (_, Some(last)) if i > last => {
                        if rng.bool() {
                            apply(&mut bytes, op);
                        }
                    }
                    // No write at all: the last length change is torn
                    // (kept or not).
                    (_, None) if i + 1 == inode.unsynced.len() => {
                        if rng.bool() {
                            apply(&mut bytes, op);
                        }
                    }
                    _ => apply(&mut bytes, op),
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
        FileDamage::Pages => bytes = page_damage(inode, rng, true),
    }
    bytes
}

/// Builds the file system as it comes back after a crash with `damage`.
fn after_crash(fs: &Fs, damage: Damage, rng: &mut fastrand::Rng) -> Fs {
    // Directory entries: the durable changes and, per directory, a prefix
    // of the others (once one change of a directory is lost, every later
    // one of it is: a rename across two is kept only if both keep it).
    let mut pending: BTreeMap<PathBuf, usize> = BTreeMap::new();
    for op in fs.dir_ops.iter().filter(|op| !op.durable) {
        for dir in op.change.dirs() {
            *pending.entry(dir).or_default() += 1;
        }
    }
    let cuts: BTreeMap<PathBuf, usize> = pending
        .into_iter()
        .map(|(dir, n)| {
            let cut = match damage {
                Damage::DropAll | Damage::ForgetDirEntries => 0,
                Damage::Random => rng.usize(0..=n),
                _ => n,
            };
            (dir, cut)
        })
        .collect();
    let mut seen: BTreeMap<PathBuf, usize> = BTreeMap::new();
    let mut closed: std::collections::BTreeSet<PathBuf> = std::collections::BTreeSet::new();
    let mut entries = fs.base_entries.clone();
    for op in &fs.dir_ops {
        let dirs = op.change.dirs();
        let keep = op.durable
            || dirs.iter().all(|d| {
                !closed.contains(d)
                    && seen.get(d).copied().unwrap_or(0) < cuts.get(d).copied().unwrap_or(0)
            });
        if !op.durable {
            for d in &dirs {
                *seen.entry(d.clone()).or_default() += 1;
            }
        }
        if keep {
            op.change.apply(&mut entries);
        } else {
            closed.extend(dirs);
        }
    }
    entries.insert(PathBuf::from("/"), Node::Dir);
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
        base_entries: entries.clone(),
        entries,
        dir_ops: Vec::new(),
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
        self.with_inode_faultable(kind, |state, id, injected| {
            if let Some(error) = injected {
                return Err(error);
            }
            f(state, id)
        })
    }

    /// As `with_inode`, but an injected fault's error is passed to `f`,
    /// which applies the failed operation's partial effect and fails.
    fn with_inode_faultable<T>(
        &self,
        kind: OpKind,
        f: impl FnOnce(&mut State, InodeId, Option<io::Error>) -> io::Result<T>,
    ) -> io::Result<T> {
        let mut state = self.disk.state();
        // The file's path, looked up only for a fault that needs it.
        let path = state
            .faults
            .iter()
            .any(|a| a.fault.kind == kind && a.fault.path != FaultPath::Any)
            .then(|| state.fs.path_of(self.inode))
            .flatten();
        let paths: Vec<&Path> = path.as_deref().into_iter().collect();
        let injected = SimDisk::begin_faultable(&mut state, kind, &paths)?;
        if !state.fs.inodes.contains_key(&self.inode) {
            // Only a crash removes inodes, and a crash fails every handle.
            return Err(io::Error::new(io::ErrorKind::NotFound, "file is gone"));
        }
        f(&mut state, self.inode, injected)
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
        self.with_inode_faultable(OpKind::Write, |state, id, injected| {
            let end = file_end(offset, buf.len() as u64)?;
            let mut len = buf.len();
            let mut result = Ok(());
            if let Some(error) = injected {
                // A failed write may have written any prefix of its bytes.
                len = state.rng.usize(0..=len);
                result = Err(error);
            }
            if let Some(capacity) = state.capacity_bytes {
                let current_len = state.fs.inodes[&id].current.len() as u64;
                let growth = end.saturating_sub(current_len);
                let free = capacity.saturating_sub(state.fs.total_bytes());
                if growth > free {
                    // What fits: up to the file's end plus the free bytes
                    // (a write past the end also fills the hole before it).
                    let fits = (current_len + free).saturating_sub(offset);
                    len = len.min(to_usize(fits)?);
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
            file_end(len_bytes, 0)?;
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
        let latency = self
            .disk
            .inner
            .sync_latency_micros
            .load(std::sync::atomic::Ordering::Relaxed);
        if latency > 0 {
            std::thread::sleep(std::time::Duration::from_micros(latency));
        }
        self.with_inode_faultable(OpKind::Sync, |state, id, injected| {
            if let Some(error) = injected {
                // Some pages reached the disk before the error; the kernel
                // marks the rest clean: no later sync writes them.
                let durable = page_damage(&state.fs.inodes[&id], &mut state.rng, false);
                let inode = inode_mut(state, id);
                inode.durable = durable;
                inode.unsynced.clear();
                return Err(error);
            }
            let inode = inode_mut(state, id);
            for op in std::mem::take(&mut inode.unsynced) {
                apply(&mut inode.durable, &op);
                // A write dirties its whole pages: they go to disk as
                // readers see them, bytes a failed sync left clean included.
                if let Op::Write { offset, data } = &op {
                    let start = (offset / PAGE_BYTES * PAGE_BYTES) as usize;
                    let end = (offset + data.len() as u64).div_ceil(PAGE_BYTES) * PAGE_BYTES;
                    let end = (end as usize)
                        .min(inode.current.len())
                        .min(inode.durable.len());
                    if start < end {
                        inode.durable[start..end].copy_from_slice(&inode.current[start..end]);
                    }
                }
            }
            Ok(())
        })
    }

    fn forget_cached(&self, offset: u64, len: Option<u64>) -> io::Result<()> {
        self.with_inode(OpKind::Advise, |state, id| {
            // Pages a failed sync left clean are gone from the cache: what
            // readers see is the disk, plus what is still dirty. (Both have
            // the same length: lengths are not forgotten.)
            let inode = inode_mut(state, id);
            let flushed = flushed(inode);
            let end = inode.current.len().min(flushed.len());
            let start = usize::try_from(offset).unwrap_or(usize::MAX).min(end);
            let stop = len
                .and_then(|n| usize::try_from(offset.saturating_add(n)).ok())
                .unwrap_or(end)
                .min(end);
            if start < stop {
                inode.current[start..stop].copy_from_slice(&flushed[start..stop]);
            }
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
        self.inner
            .read_ahead
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>> {
        let mut state = self.state();
        let kind = if mode == OpenMode::CreateNew {
            OpKind::Create
        } else {
            OpKind::Open
        };
        SimDisk::begin(&mut state, kind, &[path])?;
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
                state.fs.change(DirChange::Link {
                    path: path.to_path_buf(),
                    node: Node::File(id),
                });
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
        SimDisk::begin(&mut state, OpKind::CreateDir, &[path])?;
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
                    state.fs.change(DirChange::Link {
                        path: dir.to_path_buf(),
                        node: Node::Dir,
                    });
                }
            }
        }
        Ok(())
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let mut state = self.state();
        SimDisk::begin(&mut state, OpKind::List, &[path])?;
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
        SimDisk::begin(&mut state, OpKind::List, &[path])?;
        Ok(state.fs.entries.contains_key(path))
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut state = self.state();
        SimDisk::begin(&mut state, OpKind::Remove, &[path])?;
        state.fs.file(path)?;
        state.fs.change(DirChange::Unlink {
            path: path.to_path_buf(),
        });
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.state();
        SimDisk::begin(&mut state, OpKind::Rename, &[from, to])?;
        let id = state.fs.file(from)?;
        state.fs.require_dir(&parent_of(to))?;
        if matches!(state.fs.entries.get(to), Some(Node::Dir)) {
            return Err(io::Error::new(
                io::ErrorKind::IsADirectory,
                format!("{} is a directory", to.display()),
            ));
        }
        state.fs.change(DirChange::Rename {
            from: from.to_path_buf(),
            to: to.to_path_buf(),
            node: Node::File(id),
        });
        Ok(())
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let mut state = self.state();
        SimDisk::begin(&mut state, OpKind::SyncDir, &[path])?;
        state.fs.require_dir(path)?;
        let fs = &mut state.fs;
        for op in &mut fs.dir_ops {
            if !op.durable && op.change.dirs().iter().any(|d| d == path) {
                op.durable = true;
            }
        }
        // Fold the durable changes at the front into the base.
        let folded = fs.dir_ops.iter().take_while(|op| op.durable).count();
        for op in fs.dir_ops.drain(..folded) {
            op.change.apply(&mut fs.base_entries);
        }
        Ok(())
    }

    fn lock(&self, path: &Path) -> io::Result<LockGuard> {
        let mut state = self.state();
        SimDisk::begin(&mut state, OpKind::Lock, &[path])?;
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
            state.fs.change(DirChange::Link {
                path: path.to_path_buf(),
                node: Node::File(id),
            });
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

    /// Unsynced entries of one directory survive as a prefix, in order:
    /// the first file without the second, never the second without the
    /// first.
    #[test]
    fn unsynced_entries_survive_as_a_prefix() {
        let mut outcomes = HashSet::new();
        for seed in 0..64 {
            let (disk, _f) = setup(seed);
            disk.open(Path::new("/d/a"), OpenMode::CreateNew).unwrap();
            disk.open(Path::new("/d/b"), OpenMode::CreateNew).unwrap();
            let after = disk.reboot(Damage::Random);
            let a = after.exists(Path::new("/d/a")).unwrap();
            let b = after.exists(Path::new("/d/b")).unwrap();
            assert!(a || !b, "b survived without a (seed {seed})");
            outcomes.insert((a, b));
        }
        assert_eq!(outcomes.len(), 3, "{outcomes:?}");
    }

    /// A rename between directories is atomic: after a crash the file is
    /// in one place or the other, never both or neither.
    #[test]
    fn a_rename_between_directories_is_atomic() {
        let mut outcomes = HashSet::new();
        for seed in 0..64 {
            let (disk, _f) = setup(seed);
            disk.create_dir_all(Path::new("/e")).unwrap();
            disk.sync_dir(Path::new("/")).unwrap();
            disk.rename(Path::new("/d/f"), Path::new("/e/g")).unwrap();
            let after = disk.reboot(Damage::Random);
            let old = after.exists(Path::new("/d/f")).unwrap();
            let new = after.exists(Path::new("/e/g")).unwrap();
            assert!(old != new, "seed {seed}: at /d/f {old}, at /e/g {new}");
            outcomes.insert(new);
        }
        assert_eq!(outcomes.len(), 2);
        // Synced on either side, it stays done.
        let (disk, _f) = setup(1);
        disk.create_dir_all(Path::new("/e")).unwrap();
        disk.sync_dir(Path::new("/")).unwrap();
        disk.rename(Path::new("/d/f"), Path::new("/e/g")).unwrap();
        disk.sync_dir(Path::new("/e")).unwrap();
        let after = disk.reboot(Damage::DropAll);
        assert!(!after.exists(Path::new("/d/f")).unwrap());
        assert!(after.exists(Path::new("/e/g")).unwrap());
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

    /// Linux after a writeback error: the failed sync made some pages
    /// durable and marked the rest clean, so a later successful sync does
    /// not write them. Readers see them until the crash.
    #[test]
    fn a_failed_sync_forgets_what_it_did_not_write() {
        let mut lost = 0;
        for seed in 0..32 {
            let (disk, f) = setup(seed);
            f.write_all_at(b"abc", 0).unwrap();
            disk.fail_nth(OpKind::Sync, 1);
            assert!(f.sync_data().is_err());
            f.sync_data().unwrap();
            assert_eq!(content(&disk, "/d/f").unwrap(), b"abc", "readers see it");
            // The page made it, or did not (its length may have).
            let after = content(&disk.reboot(Damage::DropAll), "/d/f").unwrap();
            assert!(
                after == b"abc" || after.iter().all(|b| *b == 0),
                "{after:?}"
            );
            lost += usize::from(after != b"abc");
        }
        assert!(lost > 0 && lost < 32, "kept or lost by the seed: {lost}");
    }

    #[test]
    fn a_failed_write_writes_some_prefix() {
        let lens: HashSet<u64> = (0..32)
            .map(|seed| {
                let (disk, f) = setup(seed);
                disk.fail_nth(OpKind::Write, 1);
                assert!(f.write_all_at(&[5; 100], 0).is_err());
                f.len().unwrap()
            })
            .collect();
        assert!(lens.iter().all(|n| *n <= 100));
        assert!(lens.len() > 2, "{lens:?}");
    }

    #[test]
    fn every_fault_of_a_kind_counts_each_operation() {
        let (disk, f) = setup(9);
        disk.fail_nth(OpKind::Sync, 1);
        disk.fail_nth(OpKind::Sync, 2);
        assert!(f.sync_data().is_err());
        assert!(f.sync_data().is_err());
        f.sync_data().unwrap();
    }

    /// Odd but legal uses get an error or their effect, never a panic.
    #[test]
    fn odd_offsets_and_lengths_never_panic() {
        // Page damage after an unsynced truncation cut a dirty page away.
        let (disk, f) = setup(10);
        f.write_all_at(&[1; 8192], 0).unwrap();
        f.set_len(100).unwrap();
        assert_eq!(
            content(&disk.reboot(Damage::Pages), "/d/f").unwrap().len(),
            100
        );
        // A full disk and a write past the end of the file.
        let (disk, f) = setup(11);
        disk.set_capacity(Some(10));
        let err = f.write_all_at(b"x", 100).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::StorageFull);
        assert_eq!(f.len().unwrap(), 0, "nothing fits past the hole");
        // Offsets past the largest file, or past u64.
        let (_disk, f) = setup(12);
        for err in [
            f.set_len(u64::MAX).unwrap_err(),
            f.write_all_at(b"x", 1 << 40).unwrap_err(),
            f.write_all_at(b"xy", u64::MAX - 1).unwrap_err(),
        ] {
            assert_eq!(err.kind(), io::ErrorKind::FileTooLarge);
        }
        // Writing nothing past the end leaves the length.
        f.write_all_at(b"", 50).unwrap();
        assert_eq!(f.len().unwrap(), 0);
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
