//! Value compression: stored compressed in the log and the views, read back
//! as written everywhere, on every path a value takes (live apply, replay
//! on open, snapshot, checkpoint and restore).

use std::sync::Arc;

use super::*;
use crate::event::{AttemptScope, Codec, EventBody, RunScope, TaskScope};
use crate::options::{Compression, SnapshotOptions};
use crate::storage::SimDisk;

const DIR: &str = "/state";

fn run() -> RunScope {
    RunScope {
        tenant: "acme".into(),
        dag: "docs".into(),
        run: "r1".into(),
    }
}

fn attempt() -> AttemptScope {
    AttemptScope {
        task: TaskScope {
            run: run(),
            task: "ocr".into(),
        },
        try_number: 1,
    }
}

/// About 4 KiB of JSON, different for each `i`.
fn document(i: u32) -> Vec<u8> {
    let line = format!(r#"{{"n":{i},"text":"invoice total amount due","confidence":0.97}},"#);
    format!("[{}]", line.repeat(64)).into_bytes()
}

fn compressing() -> Options {
    Options {
        compression: Some(Compression::default()),
        snapshots: SnapshotOptions::manual(),
        ..Options::default()
    }
}

fn puts(i: u32) -> Vec<Event> {
    let task = attempt().task;
    vec![
        Event::now(EventBody::Put {
            codec: Codec::Raw,
            attempt: Arc::new(attempt()),
            key: format!("lines{i}"),
            value: document(i),
            meta: b"{\"source\":\"ocr\"}".to_vec(),
        }),
        // Below `min_bytes`: stored raw.
        Event::now(EventBody::Put {
            codec: Codec::Raw,
            attempt: Arc::new(attempt()),
            key: format!("pages{i}"),
            value: b"12".to_vec(),
            meta: Vec::new(),
        }),
        Event::now(EventBody::TaskPut {
            codec: Codec::Raw,
            task,
            key: format!("progress{i}"),
            value: document(i + 1000),
        }),
        Event::now(EventBody::SharedPut {
            codec: Codec::Raw,
            run: run(),
            key: format!("summary{i}"),
            value: document(i + 2000),
            immutable: false,
        }),
    ]
}

/// Every value of batch `i`, as the views return it.
fn read_back(engine: &Engine, i: u32) -> (Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>) {
    let views = engine.views();
    let a = attempt();
    let got = views.get(&a, &format!("lines{i}")).unwrap().expect("set");
    assert_eq!(got.meta, b"{\"source\":\"ocr\"}");
    assert!(got.lsn < 1 << 32, "a plain LSN, not the stored bits");
    (
        got.value,
        views
            .get(&a, &format!("pages{i}"))
            .unwrap()
            .expect("set")
            .value,
        views
            .task_state(&a.task, &format!("progress{i}"))
            .unwrap()
            .expect("set")
            .value,
        views
            .shared(&run(), &format!("summary{i}"))
            .unwrap()
            .expect("set")
            .value,
    )
}

fn expected(i: u32) -> (Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>) {
    (
        document(i),
        b"12".to_vec(),
        document(i + 1000),
        document(i + 2000),
    )
}

#[test]
fn values_are_stored_compressed_and_read_back_as_written() {
    let disk = SimDisk::new(16);
    let storage: Arc<dyn Storage> = Arc::new(disk.clone());
    let engine = Engine::open_with(Arc::clone(&storage), DIR, compressing()).unwrap();
    for i in 0..4 {
        engine.append(puts(i)).unwrap();
    }
    // Live: the memtable holds them compressed.
    for i in 0..4 {
        assert_eq!(read_back(&engine, i), expected(i));
    }
    // The log: stored compressed (and smaller), decoded as written.
    let raw_bytes: usize = puts(0)
        .iter()
        .map(|e| match &e.body {
            EventBody::Put { value, .. }
            | EventBody::TaskPut { value, .. }
            | EventBody::SharedPut { value, .. } => value.len(),
            _ => 0,
        })
        .sum();
    let mut cursor = engine.reader().cursor(Lsn(1));
    let frame = cursor.next_frame().unwrap().expect("batch 1");
    assert!(
        frame.payload_len() * 4 < raw_bytes,
        "{} payload bytes for {raw_bytes} bytes of values",
        frame.payload_len()
    );
    let codecs: Vec<Codec> = frame
        .events()
        .unwrap()
        .iter()
        .filter_map(|e| match &e.body {
            crate::event::ArchivedEventBody::Put { codec, .. }
            | crate::event::ArchivedEventBody::TaskPut { codec, .. }
            | crate::event::ArchivedEventBody::SharedPut { codec, .. } => Some(codec.native()),
            _ => None,
        })
        .collect();
    assert_eq!(codecs, [Codec::Zstd, Codec::Raw, Codec::Zstd, Codec::Zstd]);
    let decoded = frame.decode().unwrap();
    let want = puts(0);
    for (got, want) in decoded.iter().zip(&want) {
        assert_eq!(got.body, want.body, "decode restores what was appended");
    }
    drop(cursor);
    // Half the batches in a snapshot, half replayed from the log on open.
    engine.snapshot().unwrap();
    for i in 4..8 {
        engine.append(puts(i)).unwrap();
    }
    drop(engine);
    let engine = Engine::open_with(Arc::clone(&storage), DIR, compressing()).unwrap();
    for i in 0..8 {
        assert_eq!(read_back(&engine, i), expected(i), "batch {i} after reopen");
    }
    drop(engine);
    // An engine without compression reads what one with it wrote.
    let plain = Options {
        snapshots: SnapshotOptions::manual(),
        ..Options::default()
    };
    let engine = Engine::open_with(storage, DIR, plain).unwrap();
    for i in 0..8 {
        assert_eq!(read_back(&engine, i), expected(i), "batch {i} read plain");
    }
    let entries = engine.views().attempt_entries(&attempt()).unwrap();
    assert_eq!(entries.len(), 16);
    let compressed = engine.views().sizes().unwrap().total;
    drop(engine);
    // The same batches without compression: the views hold several times
    // the bytes (they hold what the log holds, compressed or not).
    let plain = Engine::open_with(
        Arc::new(SimDisk::new(19)),
        DIR,
        Options {
            snapshots: SnapshotOptions::manual(),
            ..Options::default()
        },
    )
    .unwrap();
    for i in 0..8 {
        plain.append(puts(i)).unwrap();
    }
    let raw = plain.views().sizes().unwrap().total;
    assert!(
        compressed * 4 < raw,
        "{compressed} bytes compressed, {raw} raw"
    );
    assert!(
        entries
            .iter()
            .any(|(k, v)| k == "lines3" && v.value == document(3))
    );
}

/// A checkpoint captures stored bytes and a restore brings them back:
/// compressed values survive the round trip, in memory and after a
/// snapshot.
#[test]
fn a_checkpoint_restores_compressed_values() {
    let disk = SimDisk::new(17);
    let storage: Arc<dyn Storage> = Arc::new(disk.clone());
    let engine = Engine::open_with(Arc::clone(&storage), DIR, compressing()).unwrap();
    engine.append(puts(0)).unwrap();
    engine
        .append(vec![Event::now(EventBody::Checkpoint {
            run: run(),
            name: "after-ocr".into(),
        })])
        .unwrap();
    let mut later = puts(0);
    for e in &mut later {
        if let EventBody::Put { value, .. }
        | EventBody::TaskPut { value, .. }
        | EventBody::SharedPut { value, .. } = &mut e.body
        {
            *value = document(99);
        }
    }
    engine.append(later).unwrap();
    assert_eq!(read_back(&engine, 0).0, document(99));
    engine.snapshot().unwrap();
    engine
        .append(vec![Event::now(EventBody::RestoreCheckpoint {
            run: run(),
            name: "after-ocr".into(),
        })])
        .unwrap();
    assert_eq!(read_back(&engine, 0), expected(0));
    drop(engine);
    let engine = Engine::open_with(storage, DIR, compressing()).unwrap();
    assert_eq!(read_back(&engine, 0), expected(0));
}

/// A caller may append a value it compressed itself (copied from another
/// log's zero-copy events): its limit is checked on the size its zstd
/// frame records, and bytes that are not a zstd frame are refused before
/// anything is written.
#[test]
fn a_value_marked_compressed_is_checked_before_it_is_written() {
    let disk = SimDisk::new(18);
    let storage: Arc<dyn Storage> = Arc::new(disk.clone());
    let options = Options {
        limits: crate::options::Limits {
            value_bytes_max: 8192,
            ..crate::options::Limits::default()
        },
        ..Options::default()
    };
    let engine = Engine::open_with(storage, DIR, options).unwrap();
    let marked = |value: Vec<u8>| {
        vec![Event::now(EventBody::TaskPut {
            codec: Codec::Zstd,
            task: attempt().task,
            key: "progress".into(),
            value,
        })]
    };
    match engine.append(marked(b"not a zstd frame".to_vec())) {
        Err(Error::InvalidEvent { key, why }) => {
            assert_eq!(key, "progress");
            assert!(why.contains("zstd"), "{why}");
        }
        other => panic!("an invalid event, not {other:?}"),
    }
    let big = zstd::bulk::compress(&[b'x'; 10_000], 3).unwrap();
    match engine.append(marked(big)) {
        Err(Error::LimitExceeded {
            what: crate::error::Limit::ValueBytes,
            actual_bytes: 10_000,
            max_bytes: 8192,
        }) => {}
        other => panic!("the value's size as written is over its limit: {other:?}"),
    }
    assert_eq!(engine.durable_lsn(), Lsn(0), "nothing was written");
    let fine = zstd::bulk::compress(&document(5), 3).unwrap();
    engine.append(marked(fine)).unwrap();
    let got = engine
        .views()
        .task_state(&attempt().task, "progress")
        .unwrap()
        .expect("set");
    assert_eq!(got.value, document(5));
}
