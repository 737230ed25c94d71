//! The systems `compare` drives, each the way its own users would: waymark
//! through the kernel API, SQLite with Marie's `task_state` table, redb,
//! fjall and RocksDB with their durable commits, and the floor (what the
//! disk allows). Every one stores the same data: the state of task attempts
//! `acme/doc/run1/taskNNN/1`, keys `KEY_NNNNNN`.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use redb::ReadableDatabase;
use waymark_engine::log::{FRAME_ALIGN_BYTES, FRAME_HEADER_BYTES};
use waymark_engine::{Compression, LogReader, Lsn, Options};
use waymark_kernel::{Kernel, RunContext, RunRef, TaskRef};

/// The run every workload writes to.
pub const TENANT: &str = "acme";
/// The DAG of that run.
pub const DAG: &str = "doc";
/// The run's id.
pub const RUN: &str = "run1";
/// The try number of every attempt written (W5 clears it).
pub const TRY: u32 = 1;
/// Tasks whose `RunContext` waymark holds from its open, as a worker holds
/// one per task attempt it runs; W5's fresh tasks lie above.
pub const HELD_TASKS: usize = 1_024;
/// waymark's state directory inside a measurement's directory.
const WAYMARK_DIR: &str = "state";
/// Threads that may call one store at once (SQLite keeps a connection for
/// each).
pub const MAX_THREADS: usize = 64;

/// The task id of task number `task`.
pub fn task_id(task: usize) -> String {
    format!("task{task:03}")
}

/// The key name of key number `key` (unique within its task).
pub fn key_name(key: u64) -> String {
    format!("KEY_{key:06}")
}

/// The whole key, as a key-value store's user would spell it.
pub fn full_key(task: usize, key: u64) -> String {
    format!("{TENANT}/{DAG}/{RUN}/task{task:03}/{TRY}/KEY_{key:06}")
}

/// Every key of `task`'s attempt starts with this; `prefix_end` is the
/// first string after them all.
fn prefix(task: usize) -> String {
    format!("{TENANT}/{DAG}/{RUN}/task{task:03}/{TRY}/")
}

/// The prefix with its last byte (`/`) raised by one (`0`).
fn prefix_end(task: usize) -> String {
    format!("{TENANT}/{DAG}/{RUN}/task{task:03}/{TRY}0")
}

/// A system under comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum System {
    /// waymark through `waymark_kernel`, default `Sync` durability.
    Waymark,
    /// The same with value compression (`Options::compression`, zstd level
    /// 1, the default, values of 1 KiB and more): W8 only.
    #[value(name = "waymark-zstd")]
    WaymarkZstd,
    /// SQLite, WAL mode, `synchronous=FULL`, Marie's `task_state` table.
    Sqlite,
    /// redb, one write transaction per commit (`Durability::Immediate`).
    Redb,
    /// fjall, batches committed with `PersistMode::SyncData`.
    Fjall,
    /// RocksDB 7.8 (the system's librocksdb), `sync` writes.
    Rocksdb,
    /// A record write plus `fdatasync` into a preallocated file.
    Floor,
}

impl System {
    /// Every system, in the table's order.
    pub const ALL: [System; 7] = [
        System::Floor,
        System::Sqlite,
        System::Redb,
        System::Fjall,
        System::Rocksdb,
        System::Waymark,
        System::WaymarkZstd,
    ];

    /// The name in tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            System::Waymark => "waymark",
            System::WaymarkZstd => "waymark-zstd",
            System::Sqlite => "sqlite",
            System::Redb => "redb",
            System::Fjall => "fjall",
            System::Rocksdb => "rocksdb",
            System::Floor => "floor",
        }
    }

    /// Whether this is waymark (in either configuration).
    pub fn is_waymark(self) -> bool {
        matches!(self, System::Waymark | System::WaymarkZstd)
    }

    /// Opens (or creates) this system's store in `dir`.
    pub fn open(self, dir: &Path) -> Result<Box<dyn Store>> {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        Ok(match self {
            System::Waymark => Box::new(Waymark::open(dir, Options::default())?),
            System::WaymarkZstd => Box::new(Waymark::open(
                dir,
                Options {
                    compression: Some(Compression::default()),
                    ..Options::default()
                },
            )?),
            System::Sqlite => Box::new(Sqlite::open(dir)?),
            System::Redb => Box::new(Redb::open(dir)?),
            System::Fjall => Box::new(Fjall::open(dir)?),
            System::Rocksdb => Box::new(Rocks::open(dir)?),
            System::Floor => Box::new(Floor::open(dir)?),
        })
    }

    /// Visits every record stored in `dir` (closed), touching each value's
    /// bytes; returns the records and the bytes visited, and the time the
    /// visit took once the store was open (fjall's and RocksDB's open
    /// replay their journals, which is not the read compared here).
    pub fn scan(self, dir: &Path) -> Result<(u64, u64, Duration)> {
        match self {
            System::Waymark | System::WaymarkZstd => {
                let reader = LogReader::open(dir.join(WAYMARK_DIR))?;
                let start = std::time::Instant::now();
                let mut cursor = reader.cursor(Lsn(1));
                let (mut events, mut bytes, mut touched) = (0u64, 0u64, 0u64);
                while let Some(frame) = cursor.next_frame()? {
                    let batch = frame.events()?;
                    events += batch.len() as u64;
                    bytes += (FRAME_HEADER_BYTES + frame.payload_len())
                        .next_multiple_of(FRAME_ALIGN_BYTES) as u64;
                    touched ^= batch[0].ts_micros.to_native() as u64;
                }
                std::hint::black_box(touched);
                Ok((events, bytes, start.elapsed()))
            }
            System::Floor => {
                let start = std::time::Instant::now();
                let (records, bytes) = Floor::read_back(&dir.join(FLOOR_FILE))?;
                Ok((records, bytes, start.elapsed()))
            }
            _ => {
                let store = self.open(dir)?;
                let start = std::time::Instant::now();
                let (records, bytes) = store.scan()?;
                let took = start.elapsed();
                store.close()?;
                Ok((records, bytes, took))
            }
        }
    }
}

/// One system's store, open. Every write returns once durable in the
/// system's own sense (see BENCHMARKS.md, "Side by side").
pub trait Store: Send + Sync {
    /// One durable set of `key` in `task`'s attempt, from thread number
    /// `thread` (below [`MAX_THREADS`]).
    fn set(&self, thread: usize, task: usize, key: u64, value: &[u8]) -> Result<()>;

    /// The keys `keys` of `task`'s attempt in one durable commit; key `k`
    /// takes `values[k % values.len()]`.
    fn set_many(
        &self,
        thread: usize,
        task: usize,
        keys: Range<u64>,
        values: &[Vec<u8>],
    ) -> Result<()>;

    /// Reads `key` of `task`'s attempt as an owned value; its length, or
    /// `None` if absent. `Ok(None)` from a store that cannot read (the
    /// floor) is refused by the workloads before they run.
    fn get(&self, thread: usize, task: usize, key: u64) -> Result<Option<usize>>;

    /// Clears all state of `task`'s attempt, durably, as a retry does.
    fn clear(&self, thread: usize, task: usize) -> Result<()>;

    /// Every record, once: how many, and the key and value bytes visited.
    fn scan(&self) -> Result<(u64, u64)>;

    /// Closes the store, syncing what it must.
    fn close(self: Box<Self>) -> Result<()>;
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

// ---------------------------------------------------------------- waymark

/// The kernel, and a `RunContext` held for each of the first tasks.
struct Waymark {
    kernel: Kernel,
    run: RunRef,
    held: Vec<RunContext>,
}

impl Waymark {
    fn open(dir: &Path, options: Options) -> Result<Waymark> {
        let kernel = Kernel::builder()
            .options(options)
            .open(dir.join(WAYMARK_DIR))?;
        let run = RunRef::new(TENANT, DAG, RUN)?;
        let held = (0..HELD_TASKS)
            .map(|t| Ok(kernel.context(run.task(task_id(t))?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Waymark { kernel, run, held })
    }

    fn ti(&self, task: usize) -> Result<TaskRef> {
        Ok(self.run.task(task_id(task))?.with_try(TRY)?)
    }

    /// The held context of `task`, or one built for this call.
    fn with_ctx<T>(&self, task: usize, f: impl FnOnce(&RunContext) -> Result<T>) -> Result<T> {
        match self.held.get(task) {
            Some(ctx) => f(ctx),
            None => f(&self.kernel.context(self.ti(task)?)),
        }
    }
}

impl Store for Waymark {
    fn set(&self, _thread: usize, task: usize, key: u64, value: &[u8]) -> Result<()> {
        self.with_ctx(task, |ctx| Ok(ctx.set(&key_name(key), value).map(drop)?))
    }

    fn set_many(
        &self,
        _thread: usize,
        task: usize,
        keys: Range<u64>,
        values: &[Vec<u8>],
    ) -> Result<()> {
        self.with_ctx(task, |ctx| {
            let mut batch = ctx.batch();
            for k in keys {
                batch = batch.set(&key_name(k), &values[k as usize % values.len()]);
            }
            batch.commit()?;
            Ok(())
        })
    }

    fn get(&self, _thread: usize, task: usize, key: u64) -> Result<Option<usize>> {
        self.with_ctx(task, |ctx| Ok(ctx.get(&key_name(key))?.map(|v| v.len())))
    }

    fn clear(&self, _thread: usize, task: usize) -> Result<()> {
        self.kernel.clear_for_retry(&self.ti(task)?)?;
        Ok(())
    }

    fn scan(&self) -> Result<(u64, u64)> {
        bail!("waymark's scan replays its log (System::scan)")
    }

    fn close(self: Box<Self>) -> Result<()> {
        Ok(self.kernel.close()?)
    }
}

// ---------------------------------------------------------------- SQLite

/// Marie's `task_state` table (her PostgreSQL DDL in SQLite's types).
const SQLITE_SCHEMA: &str = "CREATE TABLE IF NOT EXISTS task_state (
    tenant_id  TEXT NOT NULL,
    dag_name   TEXT NOT NULL,
    dag_id     TEXT NOT NULL,
    task_id    TEXT NOT NULL,
    try_number INT  NOT NULL,
    key        TEXT NOT NULL,
    value_json BLOB NOT NULL,
    metadata   BLOB,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, dag_name, dag_id, task_id, try_number, key)
)";

const SQLITE_UPSERT: &str = "INSERT INTO task_state
    (tenant_id, dag_name, dag_id, task_id, try_number, key, value_json, metadata, created_at)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, NULL, ?8)
    ON CONFLICT (tenant_id, dag_name, dag_id, task_id, try_number, key)
    DO UPDATE SET value_json = excluded.value_json, metadata = excluded.metadata,
                  created_at = excluded.created_at";

const SQLITE_GET: &str = "SELECT value_json FROM task_state WHERE tenant_id = ?1
    AND dag_name = ?2 AND dag_id = ?3 AND task_id = ?4 AND try_number = ?5 AND key = ?6";

const SQLITE_CLEAR: &str = "DELETE FROM task_state WHERE tenant_id = ?1
    AND dag_name = ?2 AND dag_id = ?3 AND task_id = ?4 AND try_number = ?5";

/// One connection per thread, opened on the thread's first call.
struct Sqlite {
    path: PathBuf,
    conns: Vec<Mutex<Option<rusqlite::Connection>>>,
}

impl Sqlite {
    fn open(dir: &Path) -> Result<Sqlite> {
        let store = Sqlite {
            path: dir.join("state.sqlite"),
            conns: (0..MAX_THREADS).map(|_| Mutex::new(None)).collect(),
        };
        drop(store.conn(0)?);
        Ok(store)
    }

    fn connect(&self) -> Result<rusqlite::Connection> {
        let conn = rusqlite::Connection::open(&self.path)?;
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |row| row.get(0))?;
        if mode != "wal" {
            bail!("SQLite refused WAL mode ({mode})");
        }
        conn.pragma_update(None, "synchronous", "FULL")?;
        // Writers from other connections wait for the lock (SQLite's busy
        // handler) instead of failing with SQLITE_BUSY.
        conn.busy_timeout(Duration::from_secs(60))?;
        conn.execute(SQLITE_SCHEMA, [])?;
        Ok(conn)
    }

    /// Thread `thread`'s connection (no other thread locks it).
    fn conn(&self, thread: usize) -> Result<MutexGuard<'_, Option<rusqlite::Connection>>> {
        let mut guard = self.conns[thread]
            .lock()
            .map_err(|_| anyhow::anyhow!("a thread panicked holding SQLite connection {thread}"))?;
        if guard.is_none() {
            *guard = Some(self.connect()?);
        }
        Ok(guard)
    }
}

fn sqlite_upsert(conn: &rusqlite::Connection, task: &str, key: u64, value: &[u8]) -> Result<()> {
    conn.prepare_cached(SQLITE_UPSERT)?
        .execute(rusqlite::params![
            TENANT,
            DAG,
            RUN,
            task,
            TRY,
            key_name(key),
            value,
            now_micros()
        ])?;
    Ok(())
}

impl Store for Sqlite {
    fn set(&self, thread: usize, task: usize, key: u64, value: &[u8]) -> Result<()> {
        let guard = self.conn(thread)?;
        let conn = guard.as_ref().context("connected by conn()")?;
        sqlite_upsert(conn, &task_id(task), key, value)
    }

    fn set_many(
        &self,
        thread: usize,
        task: usize,
        keys: Range<u64>,
        values: &[Vec<u8>],
    ) -> Result<()> {
        let mut guard = self.conn(thread)?;
        let conn = guard.as_mut().context("connected by conn()")?;
        let tx = conn.transaction()?;
        let task = task_id(task);
        for k in keys {
            sqlite_upsert(&tx, &task, k, &values[k as usize % values.len()])?;
        }
        tx.commit()?;
        Ok(())
    }

    fn get(&self, thread: usize, task: usize, key: u64) -> Result<Option<usize>> {
        use rusqlite::OptionalExtension;
        let guard = self.conn(thread)?;
        let conn = guard.as_ref().context("connected by conn()")?;
        let value: Option<Vec<u8>> = conn
            .prepare_cached(SQLITE_GET)?
            .query_row(
                rusqlite::params![TENANT, DAG, RUN, task_id(task), TRY, key_name(key)],
                |row| row.get(0),
            )
            .optional()?;
        Ok(value.map(|v| v.len()))
    }

    fn clear(&self, thread: usize, task: usize) -> Result<()> {
        let guard = self.conn(thread)?;
        let conn = guard.as_ref().context("connected by conn()")?;
        conn.prepare_cached(SQLITE_CLEAR)?
            .execute(rusqlite::params![TENANT, DAG, RUN, task_id(task), TRY])?;
        Ok(())
    }

    fn scan(&self) -> Result<(u64, u64)> {
        let guard = self.conn(0)?;
        let conn = guard.as_ref().context("connected by conn()")?;
        let mut stmt = conn.prepare("SELECT task_id, key, value_json FROM task_state")?;
        let mut rows = stmt.query([])?;
        let (mut n, mut bytes) = (0u64, 0u64);
        while let Some(row) = rows.next()? {
            let task = row.get_ref(0)?.as_str()?;
            let key = row.get_ref(1)?.as_str()?;
            let value = row.get_ref(2)?.as_blob()?;
            n += 1;
            bytes += (task.len() + key.len() + value.len()) as u64
                + u64::from(value.first().copied().unwrap_or(0) & 1);
        }
        Ok((n, bytes))
    }

    fn close(self: Box<Self>) -> Result<()> {
        for conn in self.conns {
            if let Some(conn) = conn.into_inner().ok().flatten() {
                conn.close().map_err(|(_, e)| e)?;
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- redb

const REDB_TABLE: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("task_state");

struct Redb {
    db: redb::Database,
}

impl Redb {
    fn open(dir: &Path) -> Result<Redb> {
        let db = redb::Database::create(dir.join("state.redb"))?;
        let tx = db.begin_write()?;
        tx.open_table(REDB_TABLE)?;
        tx.commit()?;
        Ok(Redb { db })
    }
}

impl Store for Redb {
    fn set(&self, _thread: usize, task: usize, key: u64, value: &[u8]) -> Result<()> {
        let tx = self.db.begin_write()?;
        tx.open_table(REDB_TABLE)?
            .insert(full_key(task, key).as_str(), value)?;
        tx.commit()?;
        Ok(())
    }

    fn set_many(
        &self,
        _thread: usize,
        task: usize,
        keys: Range<u64>,
        values: &[Vec<u8>],
    ) -> Result<()> {
        let tx = self.db.begin_write()?;
        {
            let mut table = tx.open_table(REDB_TABLE)?;
            for k in keys {
                table.insert(
                    full_key(task, k).as_str(),
                    values[k as usize % values.len()].as_slice(),
                )?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn get(&self, _thread: usize, task: usize, key: u64) -> Result<Option<usize>> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(REDB_TABLE)?;
        let value = table
            .get(full_key(task, key).as_str())?
            .map(|v| v.value().to_vec());
        Ok(value.map(|v| v.len()))
    }

    fn clear(&self, _thread: usize, task: usize) -> Result<()> {
        let tx = self.db.begin_write()?;
        {
            let mut table = tx.open_table(REDB_TABLE)?;
            let (from, to) = (prefix(task), prefix_end(task));
            table.retain_in(from.as_str()..to.as_str(), |_, _| false)?;
        }
        tx.commit()?;
        Ok(())
    }

    fn scan(&self) -> Result<(u64, u64)> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(REDB_TABLE)?;
        let (mut n, mut bytes) = (0u64, 0u64);
        for entry in table.range::<&str>(..)? {
            let (k, v) = entry?;
            let v = v.value();
            n += 1;
            bytes +=
                (k.value().len() + v.len()) as u64 + u64::from(v.first().copied().unwrap_or(0) & 1);
        }
        Ok((n, bytes))
    }

    fn close(self: Box<Self>) -> Result<()> {
        drop(self.db);
        Ok(())
    }
}

// ---------------------------------------------------------------- fjall

struct Fjall {
    db: fjall::Database,
    keyspace: fjall::Keyspace,
}

impl Fjall {
    fn open(dir: &Path) -> Result<Fjall> {
        let db = fjall::Database::builder(dir.join("fjall")).open()?;
        let keyspace = db.keyspace("task_state", fjall::KeyspaceCreateOptions::default)?;
        Ok(Fjall { db, keyspace })
    }

    fn batch(&self) -> fjall::OwnedWriteBatch {
        self.db
            .batch()
            .durability(Some(fjall::PersistMode::SyncData))
    }
}

impl Store for Fjall {
    fn set(&self, _thread: usize, task: usize, key: u64, value: &[u8]) -> Result<()> {
        let mut batch = self.batch();
        batch.insert(&self.keyspace, full_key(task, key), value);
        batch.commit()?;
        Ok(())
    }

    fn set_many(
        &self,
        _thread: usize,
        task: usize,
        keys: Range<u64>,
        values: &[Vec<u8>],
    ) -> Result<()> {
        let mut batch = self.batch();
        for k in keys {
            batch.insert(
                &self.keyspace,
                full_key(task, k),
                values[k as usize % values.len()].as_slice(),
            );
        }
        batch.commit()?;
        Ok(())
    }

    fn get(&self, _thread: usize, task: usize, key: u64) -> Result<Option<usize>> {
        Ok(self.keyspace.get(full_key(task, key))?.map(|v| v.len()))
    }

    fn clear(&self, _thread: usize, task: usize) -> Result<()> {
        let mut batch = self.batch();
        for guard in self.keyspace.prefix(prefix(task)) {
            batch.remove(&self.keyspace, guard.key()?);
        }
        batch.commit()?;
        Ok(())
    }

    fn scan(&self) -> Result<(u64, u64)> {
        let (mut n, mut bytes) = (0u64, 0u64);
        for guard in self.keyspace.iter() {
            let (k, v) = guard.into_inner()?;
            n += 1;
            bytes += (k.len() + v.len()) as u64 + u64::from(v.first().copied().unwrap_or(0) & 1);
        }
        Ok((n, bytes))
    }

    fn close(self: Box<Self>) -> Result<()> {
        self.db.persist(fjall::PersistMode::SyncAll)?;
        Ok(())
    }
}

// ---------------------------------------------------------------- RocksDB

struct Rocks {
    db: rocksdb::DB,
    sync: rocksdb::WriteOptions,
}

impl Rocks {
    fn open(dir: &Path) -> Result<Rocks> {
        let mut options = rocksdb::Options::default();
        options.create_if_missing(true);
        let db = rocksdb::DB::open(&options, dir.join("rocksdb"))?;
        let mut sync = rocksdb::WriteOptions::default();
        sync.set_sync(true);
        Ok(Rocks { db, sync })
    }
}

impl Store for Rocks {
    fn set(&self, _thread: usize, task: usize, key: u64, value: &[u8]) -> Result<()> {
        self.db.put_opt(full_key(task, key), value, &self.sync)?;
        Ok(())
    }

    fn set_many(
        &self,
        _thread: usize,
        task: usize,
        keys: Range<u64>,
        values: &[Vec<u8>],
    ) -> Result<()> {
        let mut batch = rocksdb::WriteBatch::default();
        for k in keys {
            batch.put(full_key(task, k), &values[k as usize % values.len()]);
        }
        self.db.write_opt(batch, &self.sync)?;
        Ok(())
    }

    fn get(&self, _thread: usize, task: usize, key: u64) -> Result<Option<usize>> {
        Ok(self.db.get(full_key(task, key))?.map(|v| v.len()))
    }

    fn clear(&self, _thread: usize, task: usize) -> Result<()> {
        let mut batch = rocksdb::WriteBatch::default();
        batch.delete_range(prefix(task), prefix_end(task));
        self.db.write_opt(batch, &self.sync)?;
        Ok(())
    }

    fn scan(&self) -> Result<(u64, u64)> {
        let (mut n, mut bytes) = (0u64, 0u64);
        for entry in self.db.iterator(rocksdb::IteratorMode::Start) {
            let (k, v) = entry?;
            n += 1;
            bytes += (k.len() + v.len()) as u64 + u64::from(v.first().copied().unwrap_or(0) & 1);
        }
        Ok((n, bytes))
    }

    fn close(self: Box<Self>) -> Result<()> {
        self.db.flush_wal(true)?;
        Ok(())
    }
}

// ---------------------------------------------------------------- floor

/// Bytes of the floor's file, zeroed and synced before the first write;
/// writes wrap around to its start.
const FLOOR_BYTES: u64 = 64 << 20;
/// A floor record's header: length and checksum, as a log frame has.
const FLOOR_HEADER: usize = 8;

/// What the disk allows: each commit is one write of its records (key and
/// value behind a length and CRC) at the next offset of a preallocated
/// file, then one `fdatasync`. Concurrent commits write at distinct
/// offsets and sync independently (the file system may merge them).
struct Floor {
    file: File,
    offset: AtomicU64,
}

/// The floor's file in its directory.
const FLOOR_FILE: &str = "floor";

impl Floor {
    fn open(dir: &Path) -> Result<Floor> {
        let path = dir.join(FLOOR_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        if file.metadata()?.len() < FLOOR_BYTES {
            let chunk = vec![0u8; 1 << 20];
            for i in 0..FLOOR_BYTES / chunk.len() as u64 {
                file.write_all_at(&chunk, i * chunk.len() as u64)?;
            }
            file.sync_all()?;
        }
        Ok(Floor {
            file,
            offset: AtomicU64::new(0),
        })
    }

    fn record(buf: &mut Vec<u8>, key: &str, value: &[u8]) {
        let start = buf.len();
        buf.extend_from_slice(&((key.len() + value.len()) as u32).to_le_bytes());
        buf.extend_from_slice(&[0; 4]);
        buf.extend_from_slice(key.as_bytes());
        buf.extend_from_slice(value);
        let crc = crc32fast::hash(&buf[start + FLOOR_HEADER..]);
        buf[start + 4..start + FLOOR_HEADER].copy_from_slice(&crc.to_le_bytes());
    }

    /// Reads the whole file at `path` back, a CRC over each 64 KiB: the
    /// CPU's and the page cache's limit for a replay. Returns the records
    /// of W7's size those bytes hold, and the bytes.
    fn read_back(path: &Path) -> Result<(u64, u64)> {
        let mut reader = std::io::BufReader::with_capacity(1 << 20, File::open(path)?);
        let mut chunk = vec![0u8; 64 << 10];
        let (mut read, mut crc) = (0u64, 0u32);
        loop {
            let n = reader.read(&mut chunk)?;
            if n == 0 {
                break;
            }
            crc ^= crc32fast::hash(&chunk[..n]);
            read += n as u64;
        }
        std::hint::black_box(crc);
        let record = (FLOOR_HEADER + full_key(0, 0).len() + 100) as u64;
        Ok((read / record, read))
    }

    fn commit(&self, buf: &[u8]) -> Result<()> {
        let len = buf.len() as u64;
        if len > FLOOR_BYTES {
            bail!("a floor commit of {len} bytes exceeds its {FLOOR_BYTES}-byte file");
        }
        let mut at = self.offset.fetch_add(len, Ordering::Relaxed) % FLOOR_BYTES;
        if at + len > FLOOR_BYTES {
            at = 0;
        }
        self.file.write_all_at(buf, at)?;
        self.file.sync_data()?;
        Ok(())
    }
}

impl Store for Floor {
    fn set(&self, _thread: usize, task: usize, key: u64, value: &[u8]) -> Result<()> {
        let mut buf = Vec::with_capacity(FLOOR_HEADER + 40 + value.len());
        Floor::record(&mut buf, &full_key(task, key), value);
        self.commit(&buf)
    }

    fn set_many(
        &self,
        _thread: usize,
        task: usize,
        keys: Range<u64>,
        values: &[Vec<u8>],
    ) -> Result<()> {
        let mut buf = Vec::new();
        for k in keys {
            Floor::record(
                &mut buf,
                &full_key(task, k),
                &values[k as usize % values.len()],
            );
        }
        self.commit(&buf)
    }

    fn get(&self, _thread: usize, _task: usize, _key: u64) -> Result<Option<usize>> {
        bail!("the floor has no reads")
    }

    fn clear(&self, _thread: usize, task: usize) -> Result<()> {
        // What one durable event costs: one record, one sync.
        let mut buf = Vec::new();
        Floor::record(&mut buf, &prefix(task), b"clear");
        self.commit(&buf)
    }

    fn scan(&self) -> Result<(u64, u64)> {
        bail!("the floor's scan reads its file back (System::scan)")
    }

    fn close(self: Box<Self>) -> Result<()> {
        self.file.sync_all()?;
        Ok(())
    }
}

/// Bytes allocated on disk under `dir` (the sum of its files' blocks).
pub fn disk_bytes(dir: &Path) -> Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            disk_bytes(&entry.path())?
        } else {
            meta.blocks() * 512
        };
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every system reads back what it wrote, clears exactly the attempt
    /// it is asked to, and scans every record: the workloads compare like
    /// with like only if these hold.
    #[test]
    fn every_store_sets_gets_clears_and_scans() {
        let values = vec![vec![7u8; 100]];
        for system in System::ALL {
            let dir = tempfile::tempdir().expect("a temporary directory");
            let store = system.open(dir.path()).expect("open");
            store.set_many(0, 5, 0..50, &values).expect("set_many");
            store.set_many(1, 6, 0..50, &values).expect("set_many");
            store.set(2, 5, 50, &[1, 2, 3]).expect("set");
            if system == System::Floor {
                assert!(store.get(0, 5, 3).is_err(), "the floor refuses reads");
                store.clear(0, 5).expect("clear");
                store.close().expect("close");
                let (records, bytes, _) = system.scan(dir.path()).expect("scan");
                assert_eq!(bytes, FLOOR_BYTES);
                assert!(records > 0);
                continue;
            }
            let name = system.name();
            assert_eq!(store.get(0, 5, 3).expect("get"), Some(100), "{name}");
            assert_eq!(store.get(1, 5, 50).expect("get"), Some(3), "{name}");
            assert_eq!(store.get(0, 5, 51).expect("get"), None, "{name}");
            store.clear(0, 5).expect("clear");
            for key in [0, 3, 49, 50] {
                assert_eq!(store.get(0, 5, key).expect("get"), None, "{name}: {key}");
            }
            assert_eq!(store.get(0, 6, 3).expect("get"), Some(100), "{name}");
            store.close().expect("close");
            let (records, bytes, _) = system.scan(dir.path()).expect("scan");
            if system.is_waymark() {
                // The log keeps every event: 101 sets and the clear's two.
                assert_eq!(records, 103, "{name}");
            } else {
                assert_eq!(records, 50, "{name}");
                assert!(bytes >= 50 * 100, "{name}: {bytes}");
            }
        }
    }
}
