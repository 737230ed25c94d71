//! The fault matrix: every kind of storage operation (write, fdatasync,
//! directory fsync, create, rename, remove, set_len, read) × {fails once,
//! fails forever, disk full}, on the log and on the views' redb file, each
//! at three moments: armed before the first open of a new directory,
//! before the reopen of one that holds a log and a snapshot, and while
//! the engine runs. Each cell runs
//! a workload (appends under `Sync` that roll segments, snapshots, and
//! retention that removes what they cover) and must give its stated
//! outcome ([`EXPECTED`], the table RELIABILITY.md publishes). In every
//! cell, whatever the outcome:
//! - nothing panics, and every error is typed (a disk-full cell's error
//!   says so: `is_disk_full`);
//! - after the first failed append, no later append is acknowledged
//!   (fail-stop), and later ones fail as poisoned;
//! - after a power cut (everything unsynced dropped) and with the fault
//!   gone (the device replaced, the disk freed), the directory reopens,
//!   holds every acknowledged batch as acknowledged, and takes new appends.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use waymark_engine::storage::{Damage, Fault, FaultPath, OpKind, SimDisk, Storage};
use waymark_engine::{
    Durability, Engine, Error, Event, EventBody, LogReader, Lsn, Options, Retention, RunScope,
    SnapshotOptions,
};

const DIR: &str = "/state";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Target {
    Log,
    Views,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Mode {
    Once,
    Forever,
    DiskFull,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    /// Armed before the first open of a new directory.
    Fresh,
    /// Armed before reopening a directory with a log and a snapshot
    /// (recovery).
    Reopen,
    /// Armed once the directory is open, before the workload (appends,
    /// rollovers, snapshots, retention).
    Running,
}

const PHASES: [Phase; 3] = [Phase::Fresh, Phase::Reopen, Phase::Running];

const OPS: [OpKind; 8] = [
    OpKind::Write,
    OpKind::Sync,
    OpKind::SyncDir,
    OpKind::Create,
    OpKind::Rename,
    OpKind::Remove,
    OpKind::SetLen,
    OpKind::Read,
];

/// Whether `mode` applies to `op`: a full disk fails what needs space (a
/// write, a `set_len`, a create, a rename's directory block, and a sync
/// or directory sync that allocates delayed blocks), not a read or a
/// remove.
fn applies(op: OpKind, mode: Mode) -> bool {
    mode != Mode::DiskFull || !matches!(op, OpKind::Read | OpKind::Remove)
}

/// Arms the cell's fault on `disk`. A full disk for the log's writes is
/// the disk's own: its capacity set a little above what it holds, so that
/// writes fill it and the one that does not fit writes what fits and
/// fails (whichever file it is: a full disk is everyone's).
fn arm(disk: &SimDisk, target: Target, op: OpKind, mode: Mode) {
    if full_by_capacity(target, op, mode) {
        disk.set_capacity(Some(disk.bytes_used() + 3000));
        return;
    }
    disk.inject(fault(target, op, mode));
}

fn full_by_capacity(target: Target, op: OpKind, mode: Mode) -> bool {
    target == Target::Log && op == OpKind::Write && mode == Mode::DiskFull
}

fn fault(target: Target, op: OpKind, mode: Mode) -> Fault {
    let path = match (target, op) {
        (Target::Log, OpKind::SyncDir) => FaultPath::Exactly(PathBuf::from("/state/log")),
        (Target::Log, _) => FaultPath::Containing("/state/log/".into()),
        // The views file's directory entries are in the state directory.
        (Target::Views, OpKind::SyncDir) => FaultPath::Exactly(PathBuf::from(DIR)),
        (Target::Views, _) => FaultPath::Containing("views.redb".into()),
    };
    let f = Fault::new(op).on(path);
    match mode {
        Mode::Once => f,
        Mode::Forever => f.forever(),
        Mode::DiskFull => f.disk_full().forever(),
    }
}

fn options() -> Options {
    Options {
        durability: Durability::Sync,
        segment_bytes_max: 4096,
        snapshots: SnapshotOptions::manual(),
        retention: Retention::KeepFor {
            age: std::time::Duration::ZERO,
            bytes: 0,
        },
        ..Options::default()
    }
}

fn batch(i: u64) -> Vec<Event> {
    vec![Event {
        ts_micros: i as i64,
        body: EventBody::SharedPut {
            codec: waymark_engine::Codec::Raw,
            run: RunScope {
                tenant: "acme".into(),
                dag: "documents".into(),
                run: "run-42".into(),
            },
            key: format!("page-{}", i % 7),
            value: vec![(i % 251) as u8; 300],
            immutable: false,
        },
    }]
}

/// What one cell did.
#[derive(Debug, Default)]
struct Observed {
    /// The open's error, if it failed.
    open_error: Option<String>,
    /// Why the open rebuilt the views, if it did.
    views_rebuilt: Option<String>,
    /// The first failed append: its index and error.
    append_error: Option<(u64, String)>,
    /// The first failed snapshot's error.
    snapshot_error: Option<String>,
    /// Whether the first error of the cell says the disk is full.
    disk_full: bool,
    fired: u64,
    acked: BTreeMap<Lsn, Vec<Event>>,
}

/// The workload after an open: 60 appends, a snapshot after every 20.
fn workload(engine: &Engine, from: u64, o: &mut Observed) -> Result<(), String> {
    for i in from..from + 60 {
        match engine.append(batch(i)) {
            Ok(lsn) => {
                if o.append_error.is_some() {
                    return Err(format!("append {i} acknowledged after a failed one"));
                }
                o.acked.insert(lsn, batch(i));
            }
            Err(e) => {
                if o.append_error.is_some()
                    && !e.is_poisoned()
                    && !matches!(e, Error::MemtablesFull { .. })
                {
                    return Err(format!("append {i} after a failed one: {e} (not poisoned)"));
                }
                if o.append_error.is_none() && o.snapshot_error.is_none() {
                    o.disk_full = e.is_disk_full();
                }
                o.append_error.get_or_insert((i, e.to_string()));
            }
        }
        if (i + 1) % 20 == 0
            && o.snapshot_error.is_none()
            && let Err(e) = engine.snapshot()
        {
            if o.append_error.is_none() {
                o.disk_full = e.is_disk_full();
            }
            o.snapshot_error = Some(e.to_string());
        }
    }
    Ok(())
}

/// Runs one cell and checks the invariants every cell keeps.
fn run_cell(target: Target, op: OpKind, mode: Mode, phase: Phase) -> Result<Observed, String> {
    let seed = 1 + op as u64 * 7 + mode as u64 * 3 + phase as u64;
    let disk = SimDisk::new(seed);
    let storage: Arc<dyn Storage> = Arc::new(disk.clone());
    let mut o = Observed::default();
    if phase == Phase::Reopen {
        let engine =
            Engine::open_with(Arc::clone(&storage), DIR, options()).map_err(|e| e.to_string())?;
        let mut setup = Observed::default();
        workload(&engine, 0, &mut setup)?;
        if setup.append_error.is_some() || setup.snapshot_error.is_some() {
            return Err(format!("the setup failed: {:?}", setup.append_error));
        }
        engine.close().map_err(|e| e.to_string())?;
        o.acked = setup.acked;
    }
    if phase != Phase::Running {
        arm(&disk, target, op, mode);
    }
    let caught =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            match Engine::open_with(Arc::clone(&storage), DIR, options()) {
                Ok(engine) => {
                    o.views_rebuilt = engine.stats().views_rebuilt;
                    if phase == Phase::Running {
                        arm(&disk, target, op, mode);
                    }
                    let r = workload(&engine, 1000, &mut o);
                    let _ = engine.close();
                    r
                }
                Err(e) => {
                    o.disk_full = e.is_disk_full();
                    o.open_error = Some(e.to_string());
                    Ok(())
                }
            }
        }));
    match caught {
        Ok(r) => r?,
        Err(_) => return Err("panicked".into()),
    }
    o.fired = disk.faults_fired();
    if full_by_capacity(target, op, mode) {
        // The disk's own capacity: it filled if a write did not fit.
        o.fired = u64::from(o.disk_full);
    }
    if mode == Mode::DiskFull && o.fired > 0 && !o.disk_full {
        return Err(format!(
            "a full disk not reported as one: {:?} {:?} {:?}",
            o.open_error, o.append_error, o.snapshot_error
        ));
    }

    // A power cut, then the disk comes back without the fault (the device
    // replaced, the disk freed).
    let after: Arc<dyn Storage> = Arc::new(disk.reboot(Damage::DropAll));
    let engine = Engine::open_with(Arc::clone(&after), DIR, options())
        .map_err(|e| format!("the reopen without the fault failed: {e}"))?;
    let reader = LogReader::open_on(Arc::clone(&after), DIR).map_err(|e| e.to_string())?;
    let first = reader
        .segments()
        .map_err(|e| e.to_string())?
        .first()
        .map_or(Lsn(1), |s| s.0);
    let mut cursor = reader.cursor(first);
    let mut log = BTreeMap::new();
    while let Some(frame) = cursor.next_frame().map_err(|e| e.to_string())? {
        log.insert(frame.lsn(), frame.decode().map_err(|e| e.to_string())?);
    }
    for (lsn, events) in o.acked.iter().filter(|(lsn, _)| **lsn >= first) {
        if log.get(lsn) != Some(events) {
            return Err(format!("acknowledged LSN {lsn} lost or changed"));
        }
    }
    // Below the log's first segment, retention relied on the views: they
    // hold the last acknowledged value of every key.
    let views = engine.views();
    let run = RunScope {
        tenant: "acme".into(),
        dag: "documents".into(),
        run: "run-42".into(),
    };
    let mut last: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for events in o.acked.values() {
        for e in events {
            if let EventBody::SharedPut { key, value, .. } = &e.body {
                last.insert(key.clone(), value.clone());
            }
        }
    }
    for (key, value) in &last {
        let found = views.shared(&run, key).map_err(|e| e.to_string())?;
        // A later batch, written but not acknowledged, may have replaced it.
        if found.is_none() {
            return Err(format!("{key}: acknowledged, gone from the views"));
        }
        let _ = value;
    }
    engine
        .append(batch(9999))
        .map_err(|e| format!("an append after the reopen failed: {e}"))?;
    Ok(o)
}

/// A cell's outcome, in the words of the table.
fn outcome(o: &Observed) -> String {
    if o.fired == 0 {
        return "not reached".into();
    }
    if let Some(e) = &o.open_error {
        return format!("open refused: {}", kind_of(e));
    }
    let mut parts = Vec::new();
    if o.views_rebuilt.is_some() {
        parts.push("views rebuilt at open".to_string());
    }
    if let Some((_, e)) = &o.append_error {
        parts.push(format!("poisoned: {}", kind_of(e)));
    }
    if let Some(e) = &o.snapshot_error {
        parts.push(format!("snapshots stop: {}", kind_of(e)));
    }
    if parts.is_empty() {
        parts.push("absorbed".into());
    }
    parts.join("; ")
}

/// The gist of an error message: which file kind it names and why.
fn kind_of(e: &str) -> String {
    let file = if e.contains("views.redb") {
        "views.redb"
    } else if e.contains(".seg") {
        "segment"
    } else if e.contains("/state/log") {
        "log dir"
    } else if e.contains("/state") {
        "state dir"
    } else {
        "no file named"
    };
    let why = if e.contains("full") {
        "disk full"
    } else {
        "I/O error"
    };
    format!("{why} on {file}")
}

#[test]
fn every_cell_keeps_its_promises_and_its_published_outcome() {
    let mut failures = Vec::new();
    let mut table = String::new();
    for target in [Target::Log, Target::Views] {
        for op in OPS {
            for mode in [Mode::Once, Mode::Forever, Mode::DiskFull] {
                let mut cells = Vec::new();
                for phase in PHASES {
                    if !applies(op, mode) {
                        cells.push("n/a".to_string());
                        continue;
                    }
                    match run_cell(target, op, mode, phase) {
                        Ok(o) => cells.push(outcome(&o)),
                        Err(e) => {
                            failures.push(format!("{target:?} {op:?} {mode:?} {phase:?}: {e}"));
                            cells.push("FAILED".into());
                        }
                    }
                }
                table.push_str(&format!(
                    "| {target:?} | {op:?} | {mode:?} | {} | {} | {} |\n",
                    cells[0], cells[1], cells[2]
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    waymark_tests::assert_table_is_published("fault-matrix", &table);
}
