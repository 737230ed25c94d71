//! The `tracing` events an operator must see, each caused and then found
//! in what a subscriber received: a torn tail cut (with its segment,
//! offset, LSN and bytes), views rebuilt and why, poison and its cause,
//! snapshots and retention, a failed snapshot. One test (one process-wide
//! subscriber) runs every scenario in turn.

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

use waymark_engine::storage::{FsStorage, OpKind, SimDisk};
use waymark_engine::{
    Durability, Engine, Event, EventBody, Options, Retention, RunScope, SnapshotOptions,
};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// Everything received since the last call.
    fn take(&self) -> String {
        let mut buf = self.0.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8(std::mem::take(&mut *buf)).expect("the fmt subscriber writes UTF-8")
    }
}

fn put(i: u64) -> Event {
    Event::now(EventBody::SharedPut {
        codec: waymark_engine::Codec::Raw,
        run: RunScope {
            tenant: "acme".into(),
            dag: "documents".into(),
            run: "run-42".into(),
        },
        key: format!("page-{i}"),
        value: vec![7; 100],
        immutable: false,
    })
}

fn manual() -> Options {
    Options {
        snapshots: SnapshotOptions::manual(),
        ..Options::default()
    }
}

/// The end of the last frame of a closed log's only segment (the rest of
/// the preallocated file is zeros).
fn frames_end(segment: &Path) -> usize {
    let bytes = std::fs::read(segment).unwrap();
    (bytes.iter().rposition(|b| *b != 0).unwrap() + 1).next_multiple_of(8)
}

fn only_segment(dir: &Path) -> std::path::PathBuf {
    let mut segments: Vec<_> = std::fs::read_dir(dir.join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(segments.len(), 1);
    segments.remove(0)
}

#[test]
fn operators_see_every_recovery_poison_and_snapshot_event() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing::subscriber::set_global_default(
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || writer.clone())
            .finish(),
    )
    .expect("the only subscriber of this test binary");

    // A torn tail: garbage after the last frame of a closed log.
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open_with(Arc::new(FsStorage), dir.path(), manual()).unwrap();
    for i in 0..5 {
        engine.append(vec![put(i)]).unwrap();
    }
    engine.close().unwrap();
    drop(engine);
    let segment = only_segment(dir.path());
    let end = frames_end(&segment);
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes[end + 4] = 0x55;
    bytes[end + 9] = 0x77;
    std::fs::write(&segment, &bytes).unwrap();
    captured.take();
    let engine = Engine::open_with(Arc::new(FsStorage), dir.path(), manual()).unwrap();
    let seen = captured.take();
    let name = segment.file_name().unwrap().to_str().unwrap();
    assert!(
        seen.contains("WARN")
            && seen.contains("cut a torn tail")
            && seen.contains(name)
            && seen.contains(&format!("offset={end}"))
            && seen.contains("lsn=6")
            && seen.contains("bytes_dropped=10"),
        "{seen}"
    );
    assert!(
        seen.contains("INFO") && seen.contains("opened") && seen.contains("last_lsn=5"),
        "{seen}"
    );

    // A snapshot, then the views file lost: rebuilt from the log, and why.
    engine.snapshot().unwrap();
    let seen = captured.take();
    assert!(
        seen.contains("snapshot written") && seen.contains("applied_lsn=5"),
        "{seen}"
    );
    engine.close().unwrap();
    drop(engine);
    std::fs::remove_file(dir.path().join("views.redb")).unwrap();
    let engine = Engine::open_with(Arc::new(FsStorage), dir.path(), manual()).unwrap();
    let seen = captured.take();
    assert!(
        seen.contains("WARN")
            && seen.contains("views rebuilt from the log")
            && seen.contains("missing"),
        "{seen}"
    );
    drop(engine);

    // Retention after a snapshot: the segments it covers are removed.
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        segment_bytes_max: 4096,
        retention: Retention::KeepFor {
            age: std::time::Duration::ZERO,
            bytes: 0,
        },
        ..manual()
    };
    let engine = Engine::open_with(Arc::new(FsStorage), dir.path(), options).unwrap();
    for i in 0..100 {
        engine.append(vec![put(i)]).unwrap();
    }
    engine.snapshot().unwrap();
    let seen = captured.take();
    assert!(
        seen.contains("retention removed or archived segments"),
        "{seen}"
    );
    drop(engine);

    // A failed fsync poisons the engine, and says why.
    let disk = SimDisk::new(3);
    let engine = Engine::open_with(Arc::new(disk.clone()), "/state", manual()).unwrap();
    engine.append(vec![put(0)]).unwrap();
    captured.take();
    disk.fail_nth(OpKind::Sync, 1);
    assert!(engine.append(vec![put(1)]).is_err());
    let seen = captured.take();
    assert!(
        seen.contains("ERROR")
            && seen.contains("poisoned")
            && seen.contains("injected fault in Sync"),
        "{seen}"
    );
    drop(engine);

    // A failed snapshot: snapshots stop, the log keeps every write.
    let disk = SimDisk::new(4);
    let options = Options {
        durability: Durability::None,
        ..manual()
    };
    let engine = Engine::open_with(Arc::new(disk.clone()), "/state", options).unwrap();
    engine.append(vec![put(0)]).unwrap();
    engine.flush().unwrap();
    captured.take();
    disk.fail_nth(OpKind::Write, 1);
    assert!(engine.snapshot().is_err());
    let seen = captured.take();
    assert!(
        seen.contains("ERROR") && seen.contains("a snapshot failed"),
        "{seen}"
    );
}
