//! The views' redb file: `STATE_DIR/views.redb`, written only by snapshots.
//!
//! redb does its file I/O through [`redb::StorageBackend`]; [`RedbFile`]
//! implements it over the engine's own [`Storage`], so the views sit on the
//! same disk as the log: real files in production, the simulated disk in
//! crash tests.
//!
//! Tables: one per view (`kv`, `task_kv`, `tasks`, `runs`, `checkpoints`,
//! `shared`), keyed by the view key without its table byte, and `meta`:
//! `applied_lsn` (u64 LE, every batch up to it is in the tables),
//! `log_id` (u128 LE), `format_version` (u32 LE).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use redb::{Database, ReadableDatabase, TableDefinition};

use super::key::Table;
use super::memtable::Memtable;
use super::{VIEWS_FORMAT_VERSION, VIEWS_FORMAT_VERSION_OLDEST, table_name};
use crate::error::{Error, Result};
use crate::log::Lsn;
use crate::storage::{OpenMode, Storage, StorageFile, read_up_to};

/// The views file's name inside a state directory.
pub const VIEWS_FILE_NAME: &str = "views.redb";

/// Beside the views file: the image of its first page as last written (see
/// [`RedbFile`]).
pub const VIEWS_HEAD_FILE_NAME: &str = "views.redb.head";

/// The bytes at the start of the views file that redb rewrites in place at
/// every commit (its header), shadowed in [`VIEWS_HEAD_FILE_NAME`].
const HEAD_BYTES: u64 = 4096;

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// Raw keys and record bytes, in key order.
pub(crate) type Rows = Vec<(Vec<u8>, Vec<u8>)>;

fn table_def(table: Table) -> TableDefinition<'static, &'static [u8], &'static [u8]> {
    TableDefinition::new(table_name(table))
}

/// redb's storage backend over one file of the engine's storage.
///
/// redb rewrites its header (the file's first page) in place at every
/// commit, and assumes a power loss leaves each byte written or not. The
/// disk model here is harsher (RELIABILITY.md): an unsynced page may come
/// back garbled whole, unchanged bytes included, which would destroy redb's
/// magic number and with it the file, and with retention on the views
/// cannot be rebuilt from the log. So every write into the first page
/// first puts the page's new image into the head file and syncs it; only
/// then is the page written in place. After a crash at any point one of
/// the two holds a whole header, and [`open_db`] puts the copy back when
/// the file's own is unreadable.
#[derive(Debug)]
struct RedbFile {
    file: Arc<dyn StorageFile>,
    head: Arc<dyn StorageFile>,
}

impl redb::StorageBackend for RedbFile {
    fn len(&self) -> std::io::Result<u64> {
        self.file.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.file.read_exact_at(out, offset)
    }

    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.file.set_len(len)
    }

    fn sync_data(&self) -> std::io::Result<()> {
        self.file.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        if offset < HEAD_BYTES {
            self.shadow_head(offset, data)?;
        }
        self.file.write_all_at(data, offset)
    }
}

impl RedbFile {
    /// Writes the first page as it will be once `data` is written at
    /// `offset` into the head file, and syncs it.
    fn shadow_head(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        let len = self.file.len()?;
        let end = (offset + data.len() as u64).min(HEAD_BYTES);
        let page_len = len.min(HEAD_BYTES).max(end);
        let mut page = vec![0u8; usize::try_from(page_len).expect("at most a page")];
        read_up_to(self.file.as_ref(), &mut page, 0)?;
        let (from, to) = (
            usize::try_from(offset).expect("within the page"),
            usize::try_from(end).expect("within the page"),
        );
        page[from..to].copy_from_slice(&data[..to - from]);
        // The image, then its CRC32: a head file torn by a crash before its
        // sync never passes for a header.
        let crc = crc32fast::hash(&page);
        page.extend_from_slice(&crc.to_le_bytes());
        self.head.write_all_at(&page, 0)?;
        self.head.set_len(page.len() as u64)?;
        self.head.sync_data()
    }
}

/// The open views file.
#[derive(Debug)]
pub(crate) struct Store {
    /// The read transaction point reads share (see [`Store::reader`]).
    reader: RwLock<Option<Arc<Reader>>>,
    /// `None` only inside [`Drop`], which closes it (see there).
    db: Option<Database>,
    path: PathBuf,
}

impl Drop for Store {
    /// Closes the file with the shared read transaction dropped first and
    /// redb's panics caught: redb's close commits its allocator state, which reads the
    /// file's pages, and on a damaged page redb panics. Such a close leaves
    /// the file as a crash would, for the next open to repair or rebuild.
    fn drop(&mut self) {
        self.forget_reader();
        if let Some(db) = self.db.take()
            && let Err(why) = caught(move || drop(db))
        {
            tracing::warn!(path = %self.path.display(), "closing the views failed: {why}");
        }
    }
}

/// A read transaction on the file's latest commit, with the tables point
/// reads opened on it: one `begin_read` and one `open_table` per table per
/// snapshot, instead of one of each per read.
struct Reader {
    txn: redb::ReadTransaction,
    tables: [OnceLock<redb::ReadOnlyTable<&'static [u8], &'static [u8]>>; Table::ALL.len()],
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader").finish_non_exhaustive()
    }
}

/// The views file's meta: `(log_id, format_version, applied_lsn)`.
type Meta = (u128, u32, Lsn);

/// A views file opened but not yet checked against the log.
#[derive(Debug)]
pub(crate) struct Probe {
    path: PathBuf,
    /// The store and its meta (`None`: a new, empty file), or why the file
    /// is unreadable.
    found: std::result::Result<(Store, Option<Meta>), String>,
}

impl Probe {
    /// The LSN recovery must verify frames from: the first one the views
    /// file does not hold.
    pub(crate) fn verify_from(&self) -> Lsn {
        match &self.found {
            Ok((_, Some((_, version, applied))))
                if (VIEWS_FORMAT_VERSION_OLDEST..=VIEWS_FORMAT_VERSION).contains(version) =>
            {
                applied.next()
            }
            _ => Lsn(1),
        }
    }
}

/// What opening the views file found.
#[derive(Debug)]
pub(crate) struct Opened {
    pub store: Store,
    /// Every batch up to this LSN is in the views file.
    pub applied_lsn: Lsn,
    /// Why the file was recreated empty, if it was.
    pub rebuilt: Option<String>,
}

impl Store {
    fn new(db: Database, path: PathBuf) -> Store {
        Store {
            db: Some(db),
            path,
            reader: RwLock::new(None),
        }
    }

    fn db(&self) -> &Database {
        self.db
            .as_ref()
            .expect("only Store's Drop takes the database")
    }

    /// A redb error on this file: an I/O error stays one (a full disk is
    /// [`Error::DiskFull`]), anything else is [`Error::Views`].
    fn err(&self, e: impl Into<redb::Error>) -> Error {
        match e.into() {
            redb::Error::Io(io) => Error::io(&self.path, io),
            e => views_err(&self.path, e),
        }
    }

    /// Opens (or creates) the views file of `dir` and reads its meta,
    /// without judging it yet: recovery needs its `applied_lsn` first.
    pub(crate) fn probe(storage: &Arc<dyn Storage>, dir: &Path) -> Result<Probe> {
        let path = dir.join(VIEWS_FILE_NAME);
        let db = match open_db(storage, dir, &path) {
            Ok(db) => db,
            Err(Error::Views { reason, .. }) => {
                return Ok(Probe {
                    path,
                    found: Err(reason),
                });
            }
            Err(e) => return Err(e),
        };
        let store = Store::new(db, path);
        Ok(match store.meta() {
            Ok(meta) => Probe {
                path: store.path.clone(),
                found: Ok((store, meta)),
            },
            // The storage failed, not the file: refuse the open.
            Err(e @ (Error::Io { .. } | Error::DiskFull { .. })) => return Err(e),
            Err(e) => Probe {
                path: store.path.clone(),
                found: Err(e.to_string()),
            },
        })
    }

    /// Checks a probed views file against the log `log_id`, whose first LSN
    /// on disk is `log_first_lsn` and last `log_last_lsn`; creates its
    /// tables if it is new; rebuilds it empty if it is unreadable and the
    /// log reaches back to LSN 1.
    pub(crate) fn attach(
        probe: Probe,
        storage: &Arc<dyn Storage>,
        dir: &Path,
        log_id: u128,
        log_first_lsn: Lsn,
        log_last_lsn: Lsn,
    ) -> Result<Opened> {
        let path = probe.path;
        let mut rebuilt = None;
        let (store, meta) = match probe.found {
            Ok(found) => found,
            Err(e) if log_first_lsn == Lsn(1) => {
                // The log holds everything: the views can be rebuilt from it.
                rebuilt = Some(format!(
                    "the views file was unreadable ({e}); rebuilt from the log"
                ));
                storage
                    .remove_file(&path)
                    .map_err(|e| Error::io(&path, e))?;
                // `open_db` drops the old head file with it.
                let store = Store::new(open_db(storage, dir, &path)?, path);
                (store, None)
            }
            Err(e) => {
                return Err(Error::ViewsMismatch {
                    path,
                    reason: format!(
                        "the views file is unreadable ({e}) and the log starts at LSN {}, not 1, \
                         so it cannot be rebuilt; restore views.redb from a backup or salvage",
                        log_first_lsn.0
                    ),
                });
            }
        };
        let applied_lsn = match meta {
            None => {
                if log_first_lsn > Lsn(1) {
                    return Err(Error::ViewsMismatch {
                        path: store.path.clone(),
                        reason: format!(
                            "the views file is new but the log starts at LSN {}: the events \
                             before it are gone",
                            log_first_lsn.0
                        ),
                    });
                }
                store.init(log_id)?;
                if rebuilt.is_none() && log_last_lsn > Lsn(0) {
                    rebuilt = Some("the views file was missing; rebuilt from the log".into());
                }
                Lsn(0)
            }
            Some((id, version, applied)) => {
                // Version 2 only added `RunStatus::Paused` to run records:
                // a version 1 file reads as it is, and its next snapshot
                // marks it version 2 (an older build then refuses it).
                if !(VIEWS_FORMAT_VERSION_OLDEST..=VIEWS_FORMAT_VERSION).contains(&version) {
                    return Err(Error::UnsupportedVersion {
                        path: store.path.clone(),
                        version,
                        supported: VIEWS_FORMAT_VERSION,
                    });
                }
                if id != log_id {
                    return Err(Error::ViewsMismatch {
                        path: store.path.clone(),
                        reason: format!("it belongs to log {id:032x}, the log is {log_id:032x}"),
                    });
                }
                if applied > log_last_lsn {
                    return Err(Error::ViewsMismatch {
                        path: store.path.clone(),
                        reason: format!(
                            "the views hold LSN {} but the log ends at LSN {}",
                            applied.0, log_last_lsn.0
                        ),
                    });
                }
                if applied.next() < log_first_lsn {
                    return Err(Error::ViewsMismatch {
                        path: store.path.clone(),
                        reason: format!(
                            "the views hold up to LSN {} but the log starts at LSN {}",
                            applied.0, log_first_lsn.0
                        ),
                    });
                }
                applied
            }
        };
        Ok(Opened {
            store,
            applied_lsn,
            rebuilt,
        })
    }

    /// `(log_id, format_version, applied_lsn)`, or `None` for a new file.
    fn meta(&self) -> Result<Option<Meta>> {
        guarded(&self.path, || self.meta_unguarded())
    }

    fn meta_unguarded(&self) -> Result<Option<Meta>> {
        let txn = self.db().begin_read().map_err(|e| self.err(e))?;
        let table = match txn.open_table(META) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(self.err(e)),
        };
        let get = |name: &str| -> Result<Vec<u8>> {
            let value = table.get(name).map_err(|e| self.err(e))?;
            value
                .map(|v| v.value().to_vec())
                .ok_or_else(|| views_err(&self.path, format!("meta lacks {name}")))
        };
        let id = u128::from_le_bytes(
            get("log_id")?
                .try_into()
                .map_err(|_| views_err(&self.path, "meta log_id is not 16 bytes"))?,
        );
        let version = u32::from_le_bytes(
            get("format_version")?
                .try_into()
                .map_err(|_| views_err(&self.path, "meta format_version is not 4 bytes"))?,
        );
        let applied = u64::from_le_bytes(
            get("applied_lsn")?
                .try_into()
                .map_err(|_| views_err(&self.path, "meta applied_lsn is not 8 bytes"))?,
        );
        // No log reaches past the largest segment base: a larger figure is
        // damage (and `Lsn::next` on it would overflow).
        if applied > crate::log::segment::MAX_BASE_LSN {
            return Err(views_err(
                &self.path,
                format!("meta applied_lsn {applied} is outside the LSN space"),
            ));
        }
        Ok(Some((id, version, Lsn(applied))))
    }

    /// A write transaction that commits with quick-repair: redb saves its
    /// allocator state with the commit (and commits in two phases), so an
    /// open after a crash reads that state instead of walking and
    /// checksumming the whole file to rebuild it, which takes time in
    /// proportion to the views' size (0.5 s at a million keys, issue 16's
    /// W6). The cost is one more header write and sync per snapshot.
    fn begin_write(&self) -> Result<redb::WriteTransaction> {
        let mut txn = self.db().begin_write().map_err(|e| self.err(e))?;
        txn.set_quick_repair(true);
        Ok(txn)
    }

    /// Creates every table and the meta of a new file, durably.
    fn init(&self, log_id: u128) -> Result<()> {
        guarded(&self.path, || self.init_unguarded(log_id))
    }

    fn init_unguarded(&self, log_id: u128) -> Result<()> {
        let txn = self.begin_write()?;
        {
            for table in Table::ALL {
                txn.open_table(table_def(table)).map_err(|e| self.err(e))?;
            }
            let mut meta = txn.open_table(META).map_err(|e| self.err(e))?;
            meta.insert("log_id", log_id.to_le_bytes().as_slice())
                .map_err(|e| self.err(e))?;
            meta.insert(
                "format_version",
                VIEWS_FORMAT_VERSION.to_le_bytes().as_slice(),
            )
            .map_err(|e| self.err(e))?;
            meta.insert("applied_lsn", 0u64.to_le_bytes().as_slice())
                .map_err(|e| self.err(e))?;
        }
        let committed = txn.commit().map_err(|e| self.err(e));
        self.forget_reader();
        committed
    }

    /// Reads one view key.
    pub(crate) fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        guarded(&self.path, || self.get_unguarded(key))
    }

    fn get_unguarded(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let table =
            Table::of(key).ok_or_else(|| views_err(&self.path, "a view key without a table"))?;
        let reader = self.reader()?;
        let slot = &reader.tables[Table::ALL
            .iter()
            .position(|t| *t == table)
            .expect("ALL lists every table")];
        let t = match slot.get() {
            Some(t) => t,
            None => {
                let opened = reader
                    .txn
                    .open_table(table_def(table))
                    .map_err(|e| self.err(e))?;
                // Another reader may have opened it first: either is the
                // same table of the same commit.
                let _ = slot.set(opened);
                slot.get().expect("set just above")
            }
        };
        let value = t.get(&key[1..]).map_err(|e| self.err(e))?;
        Ok(value.map(|v| v.value().to_vec()))
    }

    /// The shared read transaction, begun on the latest commit if there is
    /// none. A commit drops it ([`Store::forget_reader`]) before the
    /// memtable it wrote leaves the levels, so a point read, which takes
    /// the levels first and this after, always finds a memtable's batches
    /// in one or the other. It begins under the write lock, which the drop
    /// also takes: a transaction begun before a commit is never kept after
    /// it.
    fn reader(&self) -> Result<Arc<Reader>> {
        if let Some(reader) = &*self.reader.read().unwrap_or_else(|e| e.into_inner()) {
            return Ok(Arc::clone(reader));
        }
        let mut slot = self.reader.write().unwrap_or_else(|e| e.into_inner());
        if let Some(reader) = &*slot {
            return Ok(Arc::clone(reader));
        }
        let reader = Arc::new(Reader {
            txn: self.db().begin_read().map_err(|e| self.err(e))?,
            tables: std::array::from_fn(|_| OnceLock::new()),
        });
        *slot = Some(Arc::clone(&reader));
        Ok(reader)
    }

    /// Drops the shared read transaction after a commit: the next point
    /// read begins one on the commit's data. (Held, it would also keep
    /// redb from reusing the pages the commit freed.)
    fn forget_reader(&self) {
        *self.reader.write().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Every entry with a view key in `[start, end)`, which lie in one table.
    pub(crate) fn scan(&self, start: &[u8], end: &[u8]) -> Result<(Lsn, Rows)> {
        guarded(&self.path, || self.scan_unguarded(start, end))
    }

    fn scan_unguarded(&self, start: &[u8], end: &[u8]) -> Result<(Lsn, Rows)> {
        let table =
            Table::of(start).ok_or_else(|| views_err(&self.path, "a view key without a table"))?;
        let txn = self.db().begin_read().map_err(|e| self.err(e))?;
        // The commit this transaction reads holds every batch up to its
        // `applied_lsn`: the caller needs it to know whether the rows are
        // newer than what it reads the memtables at.
        let applied = match txn.open_table(META) {
            Ok(meta) => meta
                .get("applied_lsn")
                .map_err(|e| self.err(e))?
                .and_then(|v| <[u8; 8]>::try_from(v.value()).ok())
                .map_or(0, u64::from_le_bytes),
            Err(redb::TableError::TableDoesNotExist(_)) => 0,
            Err(e) => return Err(self.err(e)),
        };
        let t = txn.open_table(table_def(table)).map_err(|e| self.err(e))?;
        let tag = table as u8;
        let lower = &start[1..];
        let range = if end.first() == Some(&tag) {
            t.range::<&[u8]>(lower..&end[1..])
        } else {
            t.range::<&[u8]>(lower..)
        }
        .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for item in range {
            let (k, v) = item.map_err(|e| self.err(e))?;
            let mut key = Vec::with_capacity(k.value().len() + 1);
            key.push(tag);
            key.extend_from_slice(k.value());
            out.push((key, v.value().to_vec()));
        }
        Ok((Lsn(applied), out))
    }

    /// Writes a frozen memtable into the tables and records `applied_lsn`,
    /// in one durable write transaction: after a crash the file holds all of
    /// it or none of it.
    pub(crate) fn write_snapshot(&self, frozen: &Memtable, applied_lsn: Lsn) -> Result<()> {
        guarded(&self.path, || {
            self.write_snapshot_unguarded(frozen, applied_lsn)
        })
    }

    fn write_snapshot_unguarded(&self, frozen: &Memtable, applied_lsn: Lsn) -> Result<()> {
        let txn = self.begin_write()?;
        {
            let mut tables = Vec::with_capacity(Table::ALL.len());
            for table in Table::ALL {
                tables.push(txn.open_table(table_def(table)).map_err(|e| self.err(e))?);
            }
            let index = |key: &[u8]| -> Result<usize> {
                let table = Table::of(key)
                    .ok_or_else(|| views_err(&self.path, "a view key without a table"))?;
                Ok(Table::ALL
                    .iter()
                    .position(|t| *t == table)
                    .expect("ALL lists every table"))
            };
            // Range tombstones first, oldest first: each removes what the
            // levels below held in its range. A value the frozen memtable
            // wrote after a tombstone is written below, after it.
            for rt in frozen.ranges(u64::MAX) {
                let i = index(&rt.start)?;
                let tag = Table::ALL[i] as u8;
                let lower = &rt.start[1..];
                let t = &mut tables[i];
                if rt.end.first() == Some(&tag) {
                    t.retain_in::<&[u8], _>(lower..&rt.end[1..], |_, _| false)
                } else {
                    t.retain_in::<&[u8], _>(lower.., |_, _| false)
                }
                .map_err(|e| self.err(e))?;
            }
            frozen.for_each_latest(|key, version, value| {
                if frozen.masks(key, version, u64::MAX) {
                    return Ok(()); // A later range tombstone removed it above.
                }
                let t = &mut tables[index(key)?];
                match value {
                    Some(value) => {
                        t.insert(&key[1..], value.as_ref())
                            .map_err(|e| self.err(e))?;
                    }
                    None => {
                        t.remove(&key[1..]).map_err(|e| self.err(e))?;
                    }
                }
                Ok(())
            })?;
            let mut meta = txn.open_table(META).map_err(|e| self.err(e))?;
            meta.insert("applied_lsn", applied_lsn.0.to_le_bytes().as_slice())
                .map_err(|e| self.err(e))?;
            // The records just written may need this version to read.
            meta.insert(
                "format_version",
                VIEWS_FORMAT_VERSION.to_le_bytes().as_slice(),
            )
            .map_err(|e| self.err(e))?;
        }
        let committed = txn.commit().map_err(|e| self.err(e));
        // Dropped after a failed commit too: redb may or may not have
        // made it durable, and a read must not keep the commit before.
        self.forget_reader();
        committed
    }
}

/// Runs redb's code on the views file at `path`, turning a panic into
/// [`Error::Views`]: redb keeps no checksums of its pages, and a damaged
/// page (media corruption, a foreign write) reaches assertions in its
/// B-tree code (`unreachable!`, index out of bounds). A typed error
/// instead: at open, the file is unreadable (rebuilt from the log when the
/// log reaches back to LSN 1); later, the read fails. The panic's message
/// is still printed by the process's panic hook.
pub(crate) fn guarded<T>(path: &Path, f: impl FnOnce() -> Result<T>) -> Result<T> {
    caught(f).unwrap_or_else(|why| Err(views_err(path, why)))
}

/// Runs `f`, turning a panic (redb's, on a damaged page) into what it said.
fn caught<T>(f: impl FnOnce() -> T) -> std::result::Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into());
        format!("redb failed on a damaged page ({what})")
    })
}

fn views_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Views {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// Opens the redb file at `path`, creating it (and making its directory
/// entry durable) if it does not exist. If redb cannot open it and the head
/// file holds a different first page (a crash garbled the page while it was
/// being rewritten), the head file's copy is put back and the open tried
/// once more.
fn open_db(storage: &Arc<dyn Storage>, dir: &Path, path: &Path) -> Result<Database> {
    let head_path = head_path(path);
    if !storage.exists(path).map_err(|e| Error::io(path, e))?
        && storage
            .exists(&head_path)
            .map_err(|e| Error::io(&head_path, e))?
    {
        // A head file left from an earlier views file is not this one's.
        storage
            .remove_file(&head_path)
            .map_err(|e| Error::io(&head_path, e))?;
    }
    let (file, file_created) = open_or_create(storage.as_ref(), path)?;
    let (head, head_created) = open_or_create(storage.as_ref(), &head_path)?;
    // redb reads its header (the commit slots, in the first page) as the
    // disk holds it, not as a failed sync of an earlier process in this
    // boot left it cached and clean: a commit redb would take as durable,
    // and retention act on. (A commit's data pages are synced before its
    // header is written.) Advice: ignored if the file system does not
    // take it.
    let _ = file.forget_cached(0, Some(HEAD_BYTES));
    let _ = head.forget_cached(0, None);
    if file_created || head_created {
        storage.sync_dir(dir).map_err(|e| Error::io(dir, e))?;
    }
    // redb's open reads its allocator state from the file's pages: a
    // damaged page can panic it (see `guarded`), which makes the file
    // unreadable.
    let open = |file: &Arc<dyn StorageFile>, head: &Arc<dyn StorageFile>| {
        caught(|| {
            let repaired = Arc::new(AtomicBool::new(false));
            let flag = Arc::clone(&repaired);
            let db = redb::Builder::new()
                .set_repair_callback(move |_| flag.store(true, Ordering::Relaxed))
                .create_with_backend(RedbFile {
                    file: Arc::clone(file),
                    head: Arc::clone(head),
                });
            if repaired.load(Ordering::Relaxed) {
                FULL_REPAIRS.with(|n| n.set(n.get() + 1));
                tracing::info!(
                    path = %path.display(),
                    "views repaired in full after an unclean shutdown (a file \
                     written without quick-repair)"
                );
            }
            db
        })
        .unwrap_or_else(|why| {
            Err(redb::DatabaseError::Storage(redb::StorageError::Corrupted(
                why,
            )))
        })
    };
    match open(&file, &head) {
        Ok(db) => Ok(db),
        // The device failed, not the file: a typed I/O error (a full disk
        // is `DiskFull`), and the open is refused as it is. Neither the
        // head file's copy nor a rebuild is the answer to a read or write
        // that did not happen.
        Err(first) if io_failure(&first) => Err(into_io(path, first)),
        // A failure to restore is no worse than no copy: the first error
        // stands (and the views are rebuilt from the log if they can be).
        Err(first) => match restore_head(&file, &head) {
            Ok(true) => open(&file, &head).map_err(|e| {
                if io_failure(&e) {
                    into_io(path, e)
                } else {
                    views_err(path, e)
                }
            }),
            Ok(false) | Err(_) => Err(views_err(path, first)),
        },
    }
}

thread_local! {
    /// Opens on this thread whose redb walked the whole file to rebuild
    /// its allocator state (a crash of a file written without
    /// quick-repair): what [`Store::begin_write`] prevents.
    static FULL_REPAIRS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// How many views files opened on this thread needed redb's full repair.
#[cfg(test)]
pub(crate) fn full_repairs() -> u64 {
    FULL_REPAIRS.with(std::cell::Cell::get)
}

/// Whether redb failed to open the file because the storage failed (an
/// I/O error), rather than because of what the file holds. A read past the
/// end of a truncated file, and what redb reports as invalid data (a
/// garbled header: "not a redb database"), are the file's fault: it is
/// unreadable.
fn io_failure(e: &redb::DatabaseError) -> bool {
    match e {
        redb::DatabaseError::Storage(redb::StorageError::Io(io)) => !matches!(
            io.kind(),
            std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::InvalidData
        ),
        redb::DatabaseError::Storage(redb::StorageError::PreviousIo) => true,
        _ => false,
    }
}

/// An I/O failure of redb's open (see [`io_failure`]) as the engine's
/// typed error on `path`.
fn into_io(path: &Path, e: redb::DatabaseError) -> Error {
    match e {
        redb::DatabaseError::Storage(redb::StorageError::Io(io)) => Error::io(path, io),
        e => Error::io(path, std::io::Error::other(e.to_string())),
    }
}

/// Opens the views file at `path` for reading, never writing to it: on
/// copy-on-write storage ([`crate::storage::CowStorage`]), so that a file
/// redb must repair (its worker crashed, or still runs) is repaired in
/// memory, and a garbled header comes back from the head file, as the
/// worker's next open would do on disk.
pub(crate) fn open_for_reading(path: &Path) -> Result<Database> {
    if !path.try_exists().map_err(|e| Error::io(path, e))? {
        return Err(views_err(path, "no such file"));
    }
    let storage: Arc<dyn Storage> = Arc::new(crate::storage::CowStorage::default());
    let dir = path.parent().unwrap_or(Path::new("."));
    open_db(&storage, dir, path)
}

/// Opens the file at `path` for reading and writing, creating it if it
/// does not exist; says whether it did (its directory entry then needs a
/// sync).
fn open_or_create(storage: &dyn Storage, path: &Path) -> Result<(Arc<dyn StorageFile>, bool)> {
    let exists = storage.exists(path).map_err(|e| Error::io(path, e))?;
    let mode = if exists {
        OpenMode::ReadWrite
    } else {
        OpenMode::CreateNew
    };
    let file = storage.open(path, mode).map_err(|e| Error::io(path, e))?;
    Ok((file, !exists))
}

/// The head file beside the views file at `path`.
fn head_path(path: &Path) -> PathBuf {
    path.with_file_name(VIEWS_HEAD_FILE_NAME)
}

/// Puts the head file's first page back into the views file if the head
/// file holds a whole image (its CRC matches) that differs from the file's
/// first bytes; returns whether it did.
fn restore_head(file: &Arc<dyn StorageFile>, head: &Arc<dyn StorageFile>) -> std::io::Result<bool> {
    let head_len = head.len()?;
    if head_len <= 4 || head_len > HEAD_BYTES + 4 {
        return Ok(false);
    }
    let mut saved = vec![0u8; usize::try_from(head_len).expect("at most a page and a CRC")];
    head.read_exact_at(&mut saved, 0)?;
    let (image, crc) = saved.split_at(saved.len() - 4);
    if crc32fast::hash(image).to_le_bytes() != crc {
        return Ok(false);
    }
    let mut current = vec![0u8; image.len()];
    read_up_to(file.as_ref(), &mut current, 0)?;
    if current == image {
        return Ok(false);
    }
    file.write_all_at(image, 0)?;
    file.sync_data()?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::SimDisk;

    fn file(storage: &SimDisk, name: &str, bytes: &[u8]) -> Arc<dyn StorageFile> {
        let f = storage
            .open(Path::new(name), OpenMode::CreateNew)
            .expect("a new file");
        f.write_all_at(bytes, 0).expect("written");
        f
    }

    /// An `applied_lsn` past any LSN the log can reach makes the views
    /// file unreadable (rebuilt from the log, or refused), never a panic on
    /// `Lsn::next`.
    #[test]
    fn an_applied_lsn_outside_the_lsn_space_is_an_unreadable_file() {
        let disk = SimDisk::new(62);
        let storage: Arc<dyn Storage> = Arc::new(disk);
        let dir = Path::new("/s");
        storage.create_dir_all(dir).unwrap();
        let probe = Store::probe(&storage, dir).unwrap();
        let opened = Store::attach(probe, &storage, dir, 7, Lsn(1), Lsn(0)).unwrap();
        let txn = opened.store.db().begin_write().unwrap();
        {
            let mut meta = txn.open_table(META).unwrap();
            meta.insert("applied_lsn", u64::MAX.to_le_bytes().as_slice())
                .unwrap();
        }
        txn.commit().unwrap();
        drop(opened);
        let probe = Store::probe(&storage, dir).unwrap();
        assert_eq!(probe.verify_from(), Lsn(1));
        assert!(probe.found.is_err());
    }

    /// Only a whole image (its CRC matches) is ever put back: a head file
    /// torn by a crash before its sync must not overwrite a good header
    /// when redb fails to open for another reason.
    #[test]
    fn only_a_whole_head_image_is_put_back() {
        let disk = SimDisk::new(61);
        let header = vec![0x5A; 512];
        let views = file(&disk, "/views.redb", &header);
        let torn = file(&disk, "/torn.head", &[0xEE; 516]);
        assert!(!restore_head(&views, &torn).unwrap());
        let mut current = vec![0; 512];
        views.read_exact_at(&mut current, 0).unwrap();
        assert_eq!(current, header, "a torn head image was written back");

        let mut image = vec![0x33; 512];
        let crc = crc32fast::hash(&image);
        image.extend_from_slice(&crc.to_le_bytes());
        let whole = file(&disk, "/whole.head", &image);
        assert!(restore_head(&views, &whole).unwrap());
        views.read_exact_at(&mut current, 0).unwrap();
        assert_eq!(current, vec![0x33; 512]);
        assert!(
            !restore_head(&views, &whole).unwrap(),
            "nothing left to restore"
        );
    }
}
