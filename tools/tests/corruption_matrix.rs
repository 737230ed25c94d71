//! The corruption matrix: each place of a state directory (segment header,
//! frame length, CRC and LSN, payload, the tail frame, the middle of a
//! sealed segment, the first frame of the last segment, the zero-filled
//! region after the last frame, a frame the snapshot covers, `views.redb`'s
//! header page, its other pages, its meta record, `views.redb.head`) ×
//! each damage (bit flip, garbage burst, zeroed 4 KiB, truncation, zero
//! extension, a stale frame from another log), tried at up to 100
//! positions (every one where the place has fewer), plus the directory's
//! own damages (a duplicated segment, a removed middle segment, foreign
//! files). At every position the engine's open and `waymark verify` run on
//! copies of the damaged directory and must agree:
//! - an open refused for corruption ⇒ verify exits 1 naming the same
//!   segment and offset; any other refusal ⇒ verify exits non-zero;
//! - an open that cuts a torn tail ⇒ verify exits 0 and names the same
//!   segment and offset as a torn tail; an open that rebuilds the views ⇒
//!   verify names them as rebuilt by the next open;
//! - verify exits 0 ⇒ the open succeeds;
//! - the open passes what verify refuses only where the open does not read
//!   (frames a snapshot covers, which it checks by their headers only).
//!
//! Nothing panics. Every cell's outcomes must be those RELIABILITY.md
//! publishes between its corruption-matrix markers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use waymark_engine::storage::{FsStorage, LockGuard, OpenMode, Storage, StorageFile};
use waymark_engine::{
    Engine, Error, Event, EventBody, LogReader, Lsn, Options, RunScope, SnapshotOptions,
};

const POSITIONS: usize = 100;

fn options() -> Options {
    Options {
        segment_bytes_max: 16 * 1024,
        snapshots: SnapshotOptions::manual(),
        ..Options::default()
    }
}

fn batch(i: u64) -> Vec<Event> {
    vec![Event {
        ts_micros: 1_700_000_000_000_000 + i as i64,
        body: EventBody::SharedPut {
            codec: waymark_engine::Codec::Raw,
            run: RunScope {
                tenant: "acme".into(),
                dag: "documents".into(),
                run: "run-42".into(),
            },
            key: format!("page-{}", i % 9),
            value: vec![(i % 251) as u8; 200],
            immutable: false,
        },
    }]
}

/// Where scratch directories go: memory when the machine has it (the open
/// syncs, and a thousand positions of fsyncs on a real disk are minutes).
fn scratch() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(d) = tempfile::tempdir_in(shm)
    {
        return d;
    }
    tempfile::tempdir().expect("a temporary directory")
}

/// The real file system with a fixed log id. A log's id seeds its frames'
/// CRCs: with a random one, a cut inside a CRC leaves a prefix that is all
/// zeros (read as the zero fill after the last frame) at a position that
/// changes from run to run, and the cell's counts with it.
#[derive(Debug)]
struct FixedLogId(u128);

impl Storage for FixedLogId {
    fn open(&self, path: &Path, mode: OpenMode) -> std::io::Result<Arc<dyn StorageFile>> {
        FsStorage.open(path, mode)
    }
    fn create_dir_all(&self, path: &Path) -> std::io::Result<()> {
        FsStorage.create_dir_all(path)
    }
    fn list_dir(&self, path: &Path) -> std::io::Result<Vec<String>> {
        FsStorage.list_dir(path)
    }
    fn exists(&self, path: &Path) -> std::io::Result<bool> {
        FsStorage.exists(path)
    }
    fn remove_file(&self, path: &Path) -> std::io::Result<()> {
        FsStorage.remove_file(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        FsStorage.rename(from, to)
    }
    fn sync_dir(&self, path: &Path) -> std::io::Result<()> {
        FsStorage.sync_dir(path)
    }
    fn lock(&self, path: &Path) -> std::io::Result<LockGuard> {
        FsStorage.lock(path)
    }
    fn new_log_id(&self) -> u128 {
        self.0
    }
}

/// The base directory's log id, and the other log's (for stale frames).
const LOG_ID: u128 = 0x7761_796d_6172_6b00_0c0f_fee0_dead_beef;
const OTHER_LOG_ID: u128 = 0x6f74_6865_7200_0000_1234_5678_9abc_def0;

#[derive(Clone, Debug)]
struct FrameAt {
    segment: PathBuf,
    offset: u64,
    /// Header, payload and padding.
    len: u64,
    lsn: Lsn,
}

/// The directory every case starts from: 150 batches over several 16 KiB
/// segments, a snapshot at LSN 40, then the rest.
struct Base {
    _root: tempfile::TempDir,
    dir: PathBuf,
    frames: Vec<FrameAt>,
    segments: Vec<PathBuf>,
    applied: Lsn,
    log_id: u128,
    /// Every frame of another log with the same shape, by LSN.
    foreign_frames: BTreeMap<Lsn, Vec<u8>>,
}

fn write_log(dir: &Path, log_id: u128, batches: u64, snapshot_at: Option<u64>) {
    let engine = Engine::open_with(Arc::new(FixedLogId(log_id)), dir, options()).unwrap();
    for i in 0..batches {
        engine.append(batch(i)).unwrap();
        if Some(i + 1) == snapshot_at {
            engine.snapshot().unwrap();
        }
    }
    engine.close().unwrap();
}

fn frames_of(dir: &Path) -> Vec<FrameAt> {
    let reader = LogReader::open(dir).unwrap();
    let mut cursor = reader.cursor(Lsn(1));
    let mut frames = Vec::new();
    while let Some(f) = cursor.next_frame().unwrap() {
        let len = (24 + f.payload_len() as u64).next_multiple_of(8);
        frames.push(FrameAt {
            segment: f.segment().to_path_buf(),
            offset: f.offset(),
            len,
            lsn: f.lsn(),
        });
    }
    frames
}

fn base() -> Base {
    let root = scratch();
    let dir = root.path().join("state");
    write_log(&dir, LOG_ID, 150, Some(40));
    let frames = frames_of(&dir);
    let mut segments: Vec<PathBuf> = std::fs::read_dir(dir.join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    segments.sort();
    assert!(
        segments.len() >= 4,
        "several sealed segments: {}",
        segments.len()
    );
    let meta = waymark_engine::inspect::views_meta(&dir).unwrap().unwrap();
    let other = root.path().join("other");
    write_log(&other, OTHER_LOG_ID, 150, None);
    let mut foreign_frames = BTreeMap::new();
    for f in frames_of(&other) {
        let bytes = std::fs::read(&f.segment).unwrap();
        foreign_frames.insert(
            f.lsn,
            bytes[f.offset as usize..(f.offset + f.len) as usize].to_vec(),
        );
    }
    Base {
        _root: root,
        dir,
        frames,
        segments,
        applied: meta.applied_lsn,
        log_id: meta.log_id,
        foreign_frames,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Place {
    SegmentHeader,
    FrameLength,
    FrameCrc,
    FrameLsn,
    Payload,
    TailFrame,
    SealedSegmentMiddle,
    FirstFrameOfLastSegment,
    ZerosAfterLastFrame,
    FrameTheSnapshotCovers,
    ViewsHeaderPage,
    ViewsPages,
    ViewsMeta,
    ViewsHead,
}

const PLACES: [Place; 14] = [
    Place::SegmentHeader,
    Place::FrameLength,
    Place::FrameCrc,
    Place::FrameLsn,
    Place::Payload,
    Place::TailFrame,
    Place::SealedSegmentMiddle,
    Place::FirstFrameOfLastSegment,
    Place::ZerosAfterLastFrame,
    Place::FrameTheSnapshotCovers,
    Place::ViewsHeaderPage,
    Place::ViewsPages,
    Place::ViewsMeta,
    Place::ViewsHead,
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Damage {
    BitFlip,
    GarbageBurst,
    Zeroed4K,
    Truncation,
    ZeroExtension,
    StaleFrame,
}

const DAMAGES: [Damage; 6] = [
    Damage::BitFlip,
    Damage::GarbageBurst,
    Damage::Zeroed4K,
    Damage::Truncation,
    Damage::ZeroExtension,
    Damage::StaleFrame,
];

/// Up to `POSITIONS` of `all`, spread evenly (all of them if fewer).
fn spread(all: Vec<(PathBuf, u64)>) -> Vec<(PathBuf, u64)> {
    if all.len() <= POSITIONS {
        return all;
    }
    let step = all.len() as f64 / POSITIONS as f64;
    (0..POSITIONS)
        .map(|i| all[(i as f64 * step) as usize].clone())
        .collect()
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).unwrap().len()
}

/// The end of the last frame in the last segment.
fn frames_end(b: &Base) -> u64 {
    let last = b.frames.last().unwrap();
    last.offset + last.len
}

/// Every byte position (file, offset) of a place, in the base directory.
fn bytes_of(b: &Base, place: Place) -> Vec<(PathBuf, u64)> {
    let after_snapshot = || b.frames.iter().filter(|f| f.lsn > b.applied);
    let field = |from: u64, to: u64| -> Vec<(PathBuf, u64)> {
        after_snapshot()
            .flat_map(|f| (from..to).map(move |i| (f.segment.clone(), f.offset + i)))
            .collect()
    };
    let frame_bytes = |f: &FrameAt| {
        (0..f.len)
            .map(|i| (f.segment.clone(), f.offset + i))
            .collect::<Vec<_>>()
    };
    let last_segment = b.segments.last().unwrap().clone();
    let views = b.dir.join("views.redb");
    match place {
        // A sealed segment after the snapshot: the open reads its frames.
        Place::SegmentHeader => (0..64).map(|i| (b.segments[2].clone(), i)).collect(),
        Place::FrameCrc => field(0, 4),
        Place::FrameLength => field(4, 8),
        Place::FrameLsn => field(8, 16),
        Place::Payload => after_snapshot()
            .flat_map(|f| (24..f.len).map(move |i| (f.segment.clone(), f.offset + i)))
            .collect(),
        Place::TailFrame => frame_bytes(b.frames.last().unwrap()),
        Place::SealedSegmentMiddle => {
            let seg = &b.segments[2];
            let frames: Vec<&FrameAt> = b.frames.iter().filter(|f| &f.segment == seg).collect();
            let mid = &frames[frames.len() / 3..frames.len() * 2 / 3];
            mid.iter().flat_map(|f| frame_bytes(f)).collect()
        }
        Place::FirstFrameOfLastSegment => {
            frame_bytes(b.frames.iter().find(|f| f.segment == last_segment).unwrap())
        }
        Place::ZerosAfterLastFrame => (frames_end(b)..file_len(&last_segment))
            .map(|i| (last_segment.clone(), i))
            .collect(),
        Place::FrameTheSnapshotCovers => b
            .frames
            .iter()
            .filter(|f| f.lsn <= b.applied && f.lsn > Lsn(1))
            .flat_map(frame_bytes)
            .collect(),
        Place::ViewsHeaderPage => (0..4096.min(file_len(&views)))
            .map(|i| (views.clone(), i))
            .collect(),
        Place::ViewsPages => (4096..file_len(&views))
            .map(|i| (views.clone(), i))
            .collect(),
        Place::ViewsMeta => {
            // The meta record holds the log id (u128, little-endian), the
            // format version and applied_lsn: wherever the file holds it.
            let bytes = std::fs::read(&views).unwrap();
            let id = b.log_id.to_le_bytes();
            let at: Vec<usize> = bytes
                .windows(16)
                .enumerate()
                .filter(|(_, w)| *w == id)
                .map(|(i, _)| i)
                .collect();
            assert!(!at.is_empty(), "the meta record is in views.redb");
            at.iter()
                .flat_map(|&i| (i..(i + 28).min(bytes.len())).map(|o| (views.clone(), o as u64)))
                .collect()
        }
        Place::ViewsHead => {
            let head = b.dir.join("views.redb.head");
            (0..file_len(&head)).map(|i| (head.clone(), i)).collect()
        }
    }
}

/// The positions a damage is tried at in a place; `None`: it does not
/// apply there.
fn positions(b: &Base, place: Place, damage: Damage) -> Option<Vec<(PathBuf, u64)>> {
    let all = bytes_of(b, place);
    let frame_place = matches!(
        place,
        Place::FrameLength
            | Place::FrameCrc
            | Place::FrameLsn
            | Place::Payload
            | Place::TailFrame
            | Place::SealedSegmentMiddle
            | Place::FirstFrameOfLastSegment
            | Place::FrameTheSnapshotCovers
    );
    Some(match damage {
        Damage::BitFlip | Damage::GarbageBurst => spread(all),
        Damage::Zeroed4K => {
            let mut pages: Vec<(PathBuf, u64)> =
                all.into_iter().map(|(p, o)| (p, o / 4096 * 4096)).collect();
            pages.dedup();
            spread(pages)
        }
        // A cut at every offset of the place (the tail's, and the views
        // file's pages and head): everything from there on is gone.
        Damage::Truncation => spread(all),
        // Zeros appended to the place's file: one position.
        Damage::ZeroExtension => vec![all.first()?.clone()],
        // Another log's frame over one of this log's frames, at its offset.
        Damage::StaleFrame if frame_place => {
            let mut starts: Vec<(PathBuf, u64)> = b
                .frames
                .iter()
                .filter(|f| {
                    all.iter()
                        .any(|(p, o)| *p == f.segment && *o >= f.offset && *o < f.offset + f.len)
                })
                .map(|f| (f.segment.clone(), f.offset))
                .collect();
            starts.dedup();
            spread(starts)
        }
        Damage::StaleFrame => return None,
    })
}

/// Applies `damage` at `offset` of `file` (its copy in the case's
/// directory).
fn damage_file(b: &Base, file: &Path, offset: u64, damage: Damage, seed: u64) {
    let mut bytes = std::fs::read(file).unwrap();
    let at = offset as usize;
    match damage {
        Damage::BitFlip => bytes[at] ^= 1 << (seed % 8),
        Damage::GarbageBurst => {
            let mut rng = fastrand::Rng::with_seed(seed);
            let end = (at + 16).min(bytes.len());
            for byte in &mut bytes[at..end] {
                *byte = rng.u8(..);
            }
        }
        Damage::Zeroed4K => {
            let end = (at + 4096).min(bytes.len());
            bytes[at..end].fill(0);
        }
        Damage::Truncation => bytes.truncate(at),
        Damage::ZeroExtension => bytes.extend(std::iter::repeat_n(0u8, 4096)),
        Damage::StaleFrame => {
            let frame = b
                .frames
                .iter()
                .find(|f| f.offset == offset && f.segment.file_name() == file.file_name())
                .unwrap();
            let stale = b
                .foreign_frames
                .get(&frame.lsn)
                .or_else(|| b.foreign_frames.values().next())
                .unwrap();
            let end = (at + stale.len()).min(bytes.len());
            bytes[at..end].copy_from_slice(&stale[..end - at]);
        }
    }
    std::fs::write(file, bytes).unwrap();
}

/// Copies the directory `from` to `to`.
fn copy_dir(from: &Path, to: &Path) {
    for sub in ["", "log"] {
        std::fs::create_dir_all(to.join(sub)).unwrap();
        for e in std::fs::read_dir(from.join(sub)).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_file() {
                std::fs::copy(e.path(), to.join(sub).join(e.file_name())).unwrap();
            }
        }
    }
}

/// What the open did with a damaged directory.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Open {
    Clean,
    CutTornTail { segment: String, offset: u64 },
    RemovedTornSegment,
    RebuiltViews,
    Corruption { segment: String, offset: u64 },
    Refused(String),
    Panicked,
}

fn open(dir: &Path) -> Open {
    let result = std::panic::catch_unwind(|| {
        Engine::open_with(Arc::new(FixedLogId(LOG_ID)), dir, options())
    });
    match result {
        Err(_) => Open::Panicked,
        Ok(Ok(engine)) => {
            let report = engine.recovery_report().clone();
            let rebuilt = engine.stats().views_rebuilt.is_some();
            drop(engine);
            if let Some(cut) = report.torn_tail {
                Open::CutTornTail {
                    segment: name(&cut.segment),
                    offset: cut.offset,
                }
            } else if report.removed_torn_segment.is_some() {
                Open::RemovedTornSegment
            } else if rebuilt {
                Open::RebuiltViews
            } else {
                Open::Clean
            }
        }
        Ok(Err(Error::Corruption {
            segment, offset, ..
        })) => Open::Corruption {
            segment: name(&segment),
            offset,
        },
        Ok(Err(e)) => Open::Refused(kind(&e)),
    }
}

fn name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

/// An error's variant, for the table.
fn kind(e: &Error) -> String {
    let debug = format!("{e:?}");
    debug
        .split([' ', '(', '{'])
        .next()
        .unwrap_or("?")
        .to_string()
}

struct Verify {
    code: i32,
    out: String,
}

fn verify(dir: &Path) -> Verify {
    let out = assert_cmd::Command::cargo_bin("waymark")
        .unwrap()
        .arg("verify")
        .arg(dir)
        .output()
        .unwrap();
    Verify {
        code: out.status.code().unwrap_or(-1),
        out: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// Checks that verify agrees with the open; returns the outcome's words
/// for the table.
fn agree(open: &Open, v: &Verify) -> Result<String, String> {
    let at = |segment: &str, offset: u64| {
        v.out.contains(segment) && v.out.contains(&format!("offset {offset}"))
    };
    match open {
        Open::Panicked => Err("the open panicked".into()),
        Open::Corruption { segment, offset } => {
            if v.code == 1 && v.out.contains("CORRUPT") && at(segment, *offset) {
                Ok("corruption named".into())
            } else {
                Err(format!(
                    "the open refused corruption at {segment} offset {offset}; verify said: {}",
                    v.out
                ))
            }
        }
        Open::Refused(kind) => {
            if v.code != 0 {
                Ok(format!("refused: {kind}"))
            } else {
                Err(format!(
                    "the open refused ({kind}); verify passed: {}",
                    v.out
                ))
            }
        }
        Open::CutTornTail { segment, offset } => {
            if v.code == 0 && v.out.contains("torn tail") && at(segment, *offset) {
                Ok("torn tail cut".into())
            } else {
                Err(format!(
                    "the open cut a torn tail at {segment} offset {offset}; verify said: {}",
                    v.out
                ))
            }
        }
        // The tools treat a newest segment with a torn header and nothing
        // after it as not there yet, as the open removes it.
        Open::RemovedTornSegment if v.code == 0 => Ok("torn segment removed".into()),
        Open::RemovedTornSegment => Err(format!(
            "the open removed a torn newest segment; verify said: {}",
            v.out
        )),
        Open::RebuiltViews => {
            if v.code == 0 && v.out.contains("the next open rebuilds them") {
                Ok("views rebuilt".into())
            } else {
                Err(format!(
                    "the open rebuilt the views; verify said: {}",
                    v.out
                ))
            }
        }
        Open::Clean if v.code == 0 => Ok("no effect".into()),
        Open::Clean if v.out.contains("CORRUPT") => Ok("only verify names it".into()),
        Open::Clean if v.out.contains("DIFFERS") => Ok("views differ (verify)".into()),
        Open::Clean => Err(format!("the open passed; verify refused: {}", v.out)),
    }
}

/// Runs one position: damage a copy, open a copy of that, verify the other.
fn case(b: &Base, work: &Path, i: usize, damage: impl Fn(&Path)) -> Result<(String, Open), String> {
    let damaged = work.join(format!("d{i}"));
    copy_dir(&b.dir, &damaged);
    damage(&damaged);
    let opened = work.join(format!("o{i}"));
    copy_dir(&damaged, &opened);
    let o = open(&opened);
    let v = verify(&damaged);
    let words = agree(&o, &v)?;
    std::fs::remove_dir_all(&damaged).ok();
    std::fs::remove_dir_all(&opened).ok();
    Ok((words, o))
}

/// The table's cell: how many positions, and each outcome with its count.
fn cell(outcomes: &BTreeMap<String, usize>, n: usize) -> String {
    let parts: Vec<String> = outcomes.iter().map(|(w, c)| format!("{w} ×{c}")).collect();
    format!("{n}: {}", parts.join(", "))
}

/// What the open and verify must do in a cell beyond agreeing: an
/// outcome that is a bug wherever it appears.
fn acceptable(place: Place, words: &str, o: &Open) -> Result<(), String> {
    // A snapshot-covered frame is read by verify, not the open.
    if words == "only verify names it" && place != Place::FrameTheSnapshotCovers {
        return Err(format!("the open passed a damage it reads, at {place:?}"));
    }
    // Damage to the views is repaired or refused by the views' checks,
    // never taken for a damaged log.
    let views = matches!(
        place,
        Place::ViewsHeaderPage | Place::ViewsPages | Place::ViewsMeta | Place::ViewsHead
    );
    if views && matches!(o, Open::Corruption { .. } | Open::CutTornTail { .. }) {
        return Err(format!("views damage {o:?} reported as the log's"));
    }
    Ok(())
}

/// A damage to a whole directory.
type DirDamage<'a> = Box<dyn Fn(&Path) + 'a>;

fn measured() -> (String, Vec<String>) {
    let b = base();
    let work = scratch();
    let mut table = String::new();
    let mut failures = Vec::new();
    let mut positions_tried = 0usize;
    for place in PLACES {
        for damage in DAMAGES {
            let Some(at) = positions(&b, place, damage) else {
                continue;
            };
            let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
            for (i, (file, offset)) in at.iter().enumerate() {
                let rel = file.strip_prefix(&b.dir).unwrap().to_path_buf();
                let seed = i as u64 * 31 + *offset;
                match case(&b, work.path(), i, |d| {
                    damage_file(&b, &d.join(&rel), *offset, damage, seed)
                }) {
                    Ok((words, o)) => {
                        if let Err(e) = acceptable(place, &words, &o) {
                            failures.push(format!("{place:?} {damage:?} at {rel:?} {offset}: {e}"));
                        }
                        *outcomes.entry(words).or_default() += 1;
                    }
                    Err(e) => {
                        failures.push(format!("{place:?} {damage:?} at {rel:?} {offset}: {e}"))
                    }
                }
                positions_tried += 1;
            }
            table.push_str(&format!(
                "| {place:?} | {damage:?} | {} |\n",
                cell(&outcomes, at.len())
            ));
        }
    }
    // The directory's own damages.
    let seg = |i: usize| b.segments[i].strip_prefix(&b.dir).unwrap().to_path_buf();
    let last_lsn = b.frames.last().unwrap().lsn;
    let dir_damages: Vec<(&str, DirDamage)> = vec![
        (
            "a sealed segment duplicated under the next segment's name",
            Box::new(|d: &Path| {
                let to = d.join("log").join(format!("{:020}.seg", last_lsn.0 + 1));
                std::fs::copy(d.join(seg(2)), to).unwrap();
            }),
        ),
        (
            "a sealed segment duplicated under its own name plus one",
            Box::new(|d: &Path| {
                let base: u64 = seg(2)
                    .file_stem()
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                std::fs::copy(
                    d.join(seg(2)),
                    d.join("log").join(format!("{:020}.seg", base + 1)),
                )
                .unwrap();
            }),
        ),
        (
            "a middle segment removed",
            Box::new(|d: &Path| std::fs::remove_file(d.join(seg(2))).unwrap()),
        ),
        (
            "foreign files in the log directory",
            Box::new(|d: &Path| {
                std::fs::write(d.join("log/README"), b"notes").unwrap();
                std::fs::write(d.join("log/00000000000000000007.seg.bak"), b"backup").unwrap();
                std::fs::write(d.join("log/.DS_Store"), [0u8; 64]).unwrap();
            }),
        ),
        (
            "a file named like a segment holding garbage, after the last",
            Box::new(|d: &Path| {
                let to = d.join("log").join(format!("{:020}.seg", last_lsn.0 + 1));
                std::fs::write(
                    to,
                    (0..4096u32).map(|i| (i * 13 + 7) as u8).collect::<Vec<_>>(),
                )
                .unwrap();
            }),
        ),
        (
            "a foreign file in the state directory",
            Box::new(|d: &Path| std::fs::write(d.join("views.redb.bak"), b"old").unwrap()),
        ),
    ];
    for (i, (what, damage)) in dir_damages.iter().enumerate() {
        match case(&b, work.path(), 10_000 + i, damage) {
            Ok((words, _)) => table.push_str(&format!("| directory | {what} | 1: {words} ×1 |\n")),
            Err(e) => failures.push(format!("{what}: {e}")),
        }
        positions_tried += 1;
    }
    println!("{positions_tried} positions");
    (table, failures)
}

#[test]
fn verify_agrees_with_the_open_on_every_cell() {
    let (table, failures) = measured();
    println!("{table}");
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    waymark_tests::assert_table_is_published("corruption-matrix", &table);
}
