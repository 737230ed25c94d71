//! waymark side by side with SQLite, redb and fjall on this machine: durable
//! single-record writes from 1 and from 16 threads, and a sequential read of
//! everything written. It prints each system's median and waymark's ratio
//! to it.
//!
//! Every system writes records of about 128 bytes (the size of the fsync
//! floor's record): waymark a `Put` batch whose encoded payload is ~128
//! bytes, the others an 8-byte key and a 120-byte value. Each write is
//! acknowledged only once durable, in each system's own way:
//!
//! - waymark: `Durability::Sync` (one `fdatasync` per group of batches);
//! - SQLite: WAL mode, `synchronous=FULL`, one `INSERT` per transaction;
//!   16 threads share one connection behind a mutex (separate connections
//!   contend through SQLite's busy handler, which sleeps in milliseconds);
//! - redb: one write transaction per record, `Durability::Immediate` (its
//!   default);
//! - fjall: an insert, then `persist(PersistMode::SyncData)`.
//!
//! Each write measurement starts from an empty database in a new directory;
//! every round measures all four in rotating order, and the verdict takes
//! the median over rounds, since this machine's speed drifts by tens of
//! percent from one minute to the next (BENCHMARKS.md).
//!
//! The read measures records per second over 200,000 records written once
//! per system, in whole passes for a quarter of the write span each round: waymark replays its log (CRC, validation, access to every
//! event), SQLite steps a `SELECT` over the table, redb and fjall iterate
//! the whole key range.
//!
//! Run: `cargo bench -p waymark-benches --bench compare`. Environment:
//! `WAYMARK_COMPARE_ROUNDS` (default 5) and `WAYMARK_COMPARE_MS`
//! (milliseconds per write measurement, default 1000).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redb::ReadableDatabase;
use waymark_benches::{env_or, median, put_event, run_for};
use waymark_engine::storage::FsStorage;
use waymark_engine::{Durability, Engine, LogReader, Lsn, Options};

/// Value size that makes one waymark `Put` batch's payload about 128 bytes.
const WAYMARK_VALUE: usize = 8;
/// The other systems' value: with the 8-byte key, 128 bytes a record.
const VALUE: [u8; 120] = [7; 120];
/// Records written once and read back by the read measurement.
const SCAN_RECORDS: u64 = 200_000;

const REDB_TABLE: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("t");

#[derive(Clone, Copy, Debug, PartialEq)]
enum System {
    Waymark,
    Sqlite,
    Redb,
    Fjall,
}

const SYSTEMS: [System; 4] = [System::Waymark, System::Sqlite, System::Redb, System::Fjall];

impl System {
    fn name(self) -> &'static str {
        match self {
            System::Waymark => "waymark",
            System::Sqlite => "SQLite",
            System::Redb => "redb",
            System::Fjall => "fjall",
        }
    }
}

fn waymark_engine(dir: &Path, durability: Durability) -> Engine {
    let options = Options {
        durability,
        ..Options::default()
    };
    Engine::open_with(Arc::new(FsStorage), dir, options).expect("open waymark")
}

fn sqlite(dir: &Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(dir.join("db.sqlite")).expect("open SQLite");
    let mode: String = conn
        .query_row("PRAGMA journal_mode=WAL", [], |row| row.get(0))
        .expect("WAL mode");
    assert_eq!(mode, "wal");
    conn.pragma_update(None, "synchronous", "FULL")
        .expect("synchronous=FULL");
    conn.execute(
        "CREATE TABLE IF NOT EXISTS t (k INTEGER PRIMARY KEY, v BLOB NOT NULL)",
        [],
    )
    .expect("create table");
    conn
}

fn sqlite_insert(conn: &rusqlite::Connection, i: u64) {
    conn.prepare_cached("INSERT INTO t (k, v) VALUES (?1, ?2)")
        .expect("prepare")
        .execute(rusqlite::params![i as i64, &VALUE[..]])
        .expect("insert");
}

fn redb_db(dir: &Path) -> redb::Database {
    redb::Database::create(dir.join("db.redb")).expect("open redb")
}

fn fjall_db(dir: &Path) -> (fjall::Database, fjall::Keyspace) {
    let db = fjall::Database::builder(dir.join("fjall"))
        .open()
        .expect("open fjall");
    let keyspace = db
        .keyspace("t", fjall::KeyspaceCreateOptions::default)
        .expect("fjall keyspace");
    (db, keyspace)
}

/// Microseconds per durable write of one record, from `threads` threads,
/// into a new database under `parent`.
fn write_us(system: System, parent: &Path, threads: usize, span: Duration) -> f64 {
    let dir = tempfile::tempdir_in(parent).expect("temp dir");
    let dir = dir.path();
    match system {
        System::Waymark => {
            let engine = waymark_engine(dir, Durability::Sync);
            run_for(threads, span, &|i| {
                engine
                    .append(vec![put_event(i, WAYMARK_VALUE)])
                    .expect("append");
            })
        }
        System::Sqlite => {
            let conn = Mutex::new(sqlite(dir));
            run_for(threads, span, &|i| {
                sqlite_insert(&conn.lock().expect("no writer panicked"), i);
            })
        }
        System::Redb => {
            let db = redb_db(dir);
            run_for(threads, span, &|i| {
                let tx = db.begin_write().expect("begin");
                tx.open_table(REDB_TABLE)
                    .expect("table")
                    .insert(i, &VALUE[..])
                    .expect("insert");
                tx.commit().expect("commit");
            })
        }
        System::Fjall => {
            let (db, keyspace) = fjall_db(dir);
            run_for(threads, span, &|i| {
                keyspace.insert(i.to_be_bytes(), VALUE).expect("insert");
                db.persist(fjall::PersistMode::SyncData).expect("persist");
            })
        }
    }
}

/// Writes `SCAN_RECORDS` records into a new database of `system` under
/// `dir` (durable once this returns).
fn load(system: System, dir: &Path) {
    match system {
        System::Waymark => {
            let engine = waymark_engine(dir, Durability::None);
            for i in 0..SCAN_RECORDS {
                engine
                    .append(vec![put_event(i, WAYMARK_VALUE)])
                    .expect("append");
            }
            engine.close().expect("close");
        }
        System::Sqlite => {
            let mut conn = sqlite(dir);
            let tx = conn.transaction().expect("begin");
            for i in 0..SCAN_RECORDS {
                sqlite_insert(&tx, i);
            }
            tx.commit().expect("commit");
        }
        System::Redb => {
            let db = redb_db(dir);
            let tx = db.begin_write().expect("begin");
            {
                let mut table = tx.open_table(REDB_TABLE).expect("table");
                for i in 0..SCAN_RECORDS {
                    table.insert(i, &VALUE[..]).expect("insert");
                }
            }
            tx.commit().expect("commit");
        }
        System::Fjall => {
            let (db, keyspace) = fjall_db(dir);
            for i in 0..SCAN_RECORDS {
                keyspace.insert(i.to_be_bytes(), VALUE).expect("insert");
            }
            db.persist(fjall::PersistMode::SyncAll).expect("persist");
        }
    }
}

/// Reads every record of the database `load` wrote into `dir` once;
/// returns the records read and the time the read took. The clock starts
/// once the database is open (fjall's open replays its journal into a
/// memtable, which is not the read being compared). Each record's bytes are
/// touched, so nothing is skipped lazily.
fn scan_pass(system: System, dir: &Path) -> (u64, Duration) {
    let (records, touched, elapsed) = match system {
        System::Waymark => {
            let reader = LogReader::open(dir).expect("open log");
            let start = Instant::now();
            let mut cursor = reader.cursor(Lsn(1));
            let (mut n, mut ts) = (0u64, 0i64);
            while let Some(frame) = cursor.next_frame().expect("frame") {
                let events = frame.events().expect("events");
                n += events.len() as u64;
                ts ^= events[0].ts_micros.to_native();
            }
            (n, ts as u64, start.elapsed())
        }
        System::Sqlite => {
            let conn = sqlite(dir);
            let mut stmt = conn.prepare("SELECT k, v FROM t").expect("prepare");
            let start = Instant::now();
            let mut rows = stmt.query([]).expect("query");
            let (mut n, mut bytes) = (0u64, 0u64);
            while let Some(row) = rows.next().expect("row") {
                let v = row.get_ref(1).expect("v").as_blob().expect("blob");
                n += 1;
                bytes += v.len() as u64 + u64::from(v[0]);
            }
            (n, bytes, start.elapsed())
        }
        System::Redb => {
            let db = redb_db(dir);
            let tx = db.begin_read().expect("begin read");
            let table = tx.open_table(REDB_TABLE).expect("table");
            let start = Instant::now();
            let (mut n, mut bytes) = (0u64, 0u64);
            for entry in table.range::<u64>(..).expect("range") {
                let (_, v) = entry.expect("entry");
                n += 1;
                bytes += v.value().len() as u64 + u64::from(v.value()[0]);
            }
            (n, bytes, start.elapsed())
        }
        System::Fjall => {
            let (_db, keyspace) = fjall_db(dir);
            let start = Instant::now();
            let (mut n, mut bytes) = (0u64, 0u64);
            for guard in keyspace.iter() {
                let (_, v) = guard.into_inner().expect("entry");
                n += 1;
                bytes += v.len() as u64 + u64::from(v[0]);
            }
            (n, bytes, start.elapsed())
        }
    };
    assert_eq!(
        records,
        SCAN_RECORDS,
        "{} read back every record",
        system.name()
    );
    std::hint::black_box(touched);
    (records, elapsed)
}

/// Millions of records per second over as many whole passes as fit in
/// `span` (at least one).
fn scan_m_per_s(system: System, dir: &Path, span: Duration) -> f64 {
    let (mut records, mut elapsed) = (0u64, Duration::ZERO);
    while elapsed < span || records == 0 {
        let (n, took) = scan_pass(system, dir);
        records += n;
        elapsed += took;
    }
    records as f64 / elapsed.as_secs_f64() / 1e6
}

/// One line per system: its median (and the range over rounds) and how
/// waymark's median compares to it.
/// `lower_is_better` says whether the unit is a time (µs per write) or a
/// rate.
fn report(title: &str, unit: &str, results: &[(System, Vec<f64>)], lower_is_better: bool) {
    println!("{title}");
    let medians: Vec<(System, f64, f64, f64)> = results
        .iter()
        .map(|(system, values)| {
            let min = values.iter().copied().fold(f64::INFINITY, f64::min);
            let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            (*system, median(values.clone()), min, max)
        })
        .collect();
    let ours = medians
        .iter()
        .find(|(s, ..)| *s == System::Waymark)
        .map_or(f64::NAN, |(_, m, ..)| *m);
    for (system, m, min, max) in &medians {
        let vs = if *system == System::Waymark {
            String::new()
        } else if lower_is_better && *m >= ours {
            format!("waymark {:.2}× faster", m / ours)
        } else if lower_is_better {
            format!("waymark {:.2}× slower", ours / m)
        } else {
            format!("waymark {:.2}× the rate", ours / m)
        };
        let range = format!("({min:.2}–{max:.2})");
        println!("  {:<8} {m:>9.2} {unit:<9} {range:<17} {vs}", system.name());
    }
}

fn main() {
    // `cargo bench` passes `--bench`; a filter or `--list` from a harness
    // run of every bench target is not ours to honour.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rounds = env_or("WAYMARK_COMPARE_ROUNDS", 5).max(1);
    let span = Duration::from_millis(env_or("WAYMARK_COMPARE_MS", 1000).max(10));
    let parent = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir");
    let parent = parent.path();

    let mut scan_dirs = Vec::new();
    for system in SYSTEMS {
        let dir = tempfile::tempdir_in(parent).expect("temp dir");
        load(system, dir.path());
        scan_dirs.push((system, dir));
    }

    println!(
        "{rounds} rounds, {} ms per write measurement, systems in rotating order",
        span.as_millis()
    );
    let mut one: Vec<(System, Vec<f64>)> = SYSTEMS.iter().map(|s| (*s, Vec::new())).collect();
    let (mut sixteen, mut scan) = (one.clone(), one.clone());
    for round in 0..rounds as usize {
        for k in 0..SYSTEMS.len() {
            let at = (k + round) % SYSTEMS.len();
            let system = SYSTEMS[at];
            one[at].1.push(write_us(system, parent, 1, span));
            sixteen[at].1.push(write_us(system, parent, 16, span));
            scan[at]
                .1
                .push(scan_m_per_s(system, scan_dirs[at].1.path(), span / 4));
        }
        println!("round {} of {rounds} done", round + 1);
    }
    report(
        "durable write of one ~128-byte record, 1 thread",
        "µs/write",
        &one,
        true,
    );
    report(
        "durable write of one ~128-byte record, 16 threads",
        "µs/write",
        &sixteen,
        true,
    );
    report(
        &format!("sequential read of {SCAN_RECORDS} records"),
        "M rec/s",
        &scan,
        false,
    );
}
