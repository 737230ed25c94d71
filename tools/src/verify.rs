//! `waymark verify`: the log frame by frame, then the views against a
//! rebuild from the log.

use std::path::Path;

use anyhow::{Context, Result};
use waymark_engine::{LogReader, Lsn};

use crate::state::Until;

/// What verify found; `problems` empty means consistent.
pub struct Report {
    pub lines: Vec<String>,
    pub problems: usize,
}

pub fn verify(dir: &Path) -> Result<Report> {
    let mut r = Report {
        lines: Vec::new(),
        problems: 0,
    };
    let segments = match waymark_engine::inspect::segments(dir) {
        Ok(s) => s,
        Err(e @ waymark_engine::Error::Corruption { .. }) => {
            r.lines.push(format!("CORRUPT  {e}"));
            r.problems += 1;
            return Ok(r);
        }
        Err(e) => return Err(e.into()),
    };
    r.lines
        .push(format!("segments ok       {} headers", segments.len()));
    let Some(first) = segments.first().map(|s| s.base_lsn) else {
        r.lines.push("log              empty".into());
        return Ok(r);
    };
    let reader = LogReader::open(dir)?;
    let mut cursor = reader.cursor(first);
    let mut frames = 0u64;
    let mut last = Lsn(first.0 - 1);
    let progress = crate::progress::Progress::start("checking frames", false);
    if let Err(line) = read_frames(&mut cursor, &mut frames, &mut last, Lsn(u64::MAX), || {
        progress.tick()
    }) {
        r.lines.push(line);
        r.problems += 1;
        return Ok(r);
    }
    r.lines.push(format!(
        "frames ok         {frames} (LSN {} ..= {})",
        first.0, last.0
    ));
    // A clean end that is zeros up to a stray non-zero byte further on:
    // the next open cuts from the end of the last frame, as for a torn
    // tail (a crash can leave a later page of the tail written and the
    // one before it not).
    if let Some(t) = cursor.tail()
        && t.invalid.is_none()
        && let Some(at) = first_nonzero(&t.segment, t.offset)?
    {
        r.lines.push(format!(
            "torn tail         {} offset {}, where LSN {} would be (zeros, then a non-zero byte at offset {at}): repairable, the next open cuts it; nothing acknowledged under Sync is lost",
            t.segment.display(),
            t.offset,
            last.next().0
        ));
    }
    if let Some(t) = cursor.tail()
        && let Some(reason) = &t.invalid
    {
        if waymark_engine::inspect::is_vouched_for(&t.segment, t.offset, last.next())? {
            // A later frame proves this one had been synced: corruption.
            r.lines.push(format!(
                "CORRUPT  {} offset {} (expected LSN {}): {reason}; not a torn tail (whole with a wrong LSN or payload, or later frames were written after it was synced)",
                t.segment.display(),
                t.offset,
                last.next().0
            ));
            r.problems += 1;
            return Ok(r);
        }
        r.lines.push(format!(
            "torn tail         {} offset {}, where LSN {} would be ({reason}): repairable, the next open cuts it; nothing acknowledged under Sync is lost",
            t.segment.display(),
            t.offset,
            last.next().0
        ));
    }
    let views = match waymark_engine::inspect::views_meta(dir) {
        Ok(Some(v)) => v,
        Ok(None) if frames == 0 => {
            r.lines.push("views            none to compare".into());
            return Ok(r);
        }
        // Missing (or holding no tables yet): as the next open sees it.
        Ok(None) => {
            views_unreadable(&mut r, first, "missing or empty");
            return Ok(r);
        }
        Err(e) => {
            views_unreadable(&mut r, first, &e.to_string());
            return Ok(r);
        }
    };
    if let Some(seg) = segments.first()
        && seg.log_id != views.log_id
    {
        r.lines.push(format!(
            "INCONSISTENT  the views file belongs to log {:032x}, the log is {:032x}",
            views.log_id, seg.log_id
        ));
        r.problems += 1;
        return Ok(r);
    }
    if first != Lsn(1) {
        r.lines.push(format!(
            "views            not compared: the log starts at LSN {} (retention), so it cannot rebuild them",
            first.0
        ));
        return Ok(r);
    }
    // One commit of the views file: its applied_lsn and its tables read
    // together, so that a worker snapshotting meanwhile cannot mix two.
    let theirs = dir.join(waymark_engine::inspect::VIEWS_FILE_NAME);
    let (applied, their_tables) = match waymark_engine::inspect::view_tables(&theirs) {
        Ok(v) => v,
        Err(e) => {
            views_unreadable(&mut r, first, &e.to_string());
            return Ok(r);
        }
    };
    // A live worker may have written (and snapshotted) past the frames
    // read above: read on to the views' applied_lsn.
    if let Err(line) = read_frames(&mut cursor, &mut frames, &mut last, applied, || {}) {
        r.lines.push(line);
        r.problems += 1;
        return Ok(r);
    }
    if applied > last {
        r.lines.push(format!(
            "INCONSISTENT  the views hold LSN {} but the log ends at {}",
            applied.0, last.0
        ));
        r.problems += 1;
        return Ok(r);
    }
    // The same replay `waymark replay --out` does, into a scratch
    // directory, so that its views file can be read like the real one.
    let scratch = tempfile::tempdir().context("creating a scratch directory")?;
    let rebuilt = scratch.path().join("rebuilt");
    let replayed = crate::state::replay(dir, Until::Lsn(applied), None, Some(&rebuilt))?;
    replayed.engine.close()?;
    drop(replayed);
    let ours = rebuilt.join(waymark_engine::inspect::VIEWS_FILE_NAME);
    let (_, our_tables) = waymark_engine::inspect::view_tables(&ours)?;
    let mut differences = 0usize;
    for ((table, a), (_, b)) in their_tables.iter().zip(&our_tables) {
        if a == b {
            continue;
        }
        let (mut i, mut j) = (0, 0);
        while (i < a.len() || j < b.len()) && differences < 20 {
            match (a.get(i), b.get(j)) {
                (Some(x), Some(y)) if x == y => {
                    i += 1;
                    j += 1;
                }
                (Some(x), Some(y)) if x.0 == y.0 => {
                    r.lines.push(format!(
                        "DIFFERS  {table} key {}: value differs",
                        show_key(&x.0)
                    ));
                    differences += 1;
                    i += 1;
                    j += 1;
                }
                (Some(x), None) => {
                    r.lines.push(format!(
                        "DIFFERS  {table} key {}: in the views file only",
                        show_key(&x.0)
                    ));
                    differences += 1;
                    i += 1;
                }
                (Some(x), Some(y)) if x.0 < y.0 => {
                    r.lines.push(format!(
                        "DIFFERS  {table} key {}: in the views file only",
                        show_key(&x.0)
                    ));
                    differences += 1;
                    i += 1;
                }
                (_, Some(y)) => {
                    r.lines.push(format!(
                        "DIFFERS  {table} key {}: missing from the views file",
                        show_key(&y.0)
                    ));
                    differences += 1;
                    j += 1;
                }
                (None, None) => break,
            }
        }
    }
    if differences == 0 {
        r.lines.push(format!(
            "views ok          equal to a rebuild from the log up to applied_lsn {}",
            applied.0
        ));
    }
    r.problems += differences;
    Ok(r)
}

/// The offset of the first non-zero byte of `segment` at or after
/// `offset`, if any: read from `offset` on, a mebibyte at a time (a
/// segment's zero tail can be most of its size).
fn first_nonzero(segment: &Path, offset: u64) -> Result<Option<u64>> {
    use std::os::unix::fs::FileExt;
    let context = || format!("reading {}", segment.display());
    let file = std::fs::File::open(segment).with_context(context)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut at = offset;
    loop {
        let n = file.read_at(&mut buf, at).with_context(context)?;
        if n == 0 {
            return Ok(None);
        }
        if let Some(i) = buf[..n].iter().position(|b| *b != 0) {
            return Ok(Some(at + i as u64));
        }
        at += n as u64;
    }
}

/// Reports an unreadable views file as the next open will treat it: with
/// the log whole from LSN 1, repairable (the open rebuilds the views from
/// the log, as it cuts a torn tail: not a problem); otherwise a problem
/// (the open refuses the directory).
fn views_unreadable(r: &mut Report, first: Lsn, why: &str) {
    if first == Lsn(1) {
        r.lines.push(format!(
            "views unreadable  ({why}): repairable, the next open rebuilds them from the log; nothing is lost"
        ));
    } else {
        r.lines.push(format!(
            "INCONSISTENT  views file unreadable ({why}) and the log starts at LSN {}, so the next open refuses the directory",
            first.0
        ));
        r.problems += 1;
    }
}

/// Reads frames from `cursor` up to `until` (or the end of the log),
/// checking that each one's events validate; counts them into `frames`
/// and `last`. A bad frame is the line that says where.
fn read_frames(
    cursor: &mut waymark_engine::Cursor,
    frames: &mut u64,
    last: &mut Lsn,
    until: Lsn,
    mut tick: impl FnMut(),
) -> Result<(), String> {
    while *last < until {
        tick();
        match cursor.next_frame() {
            Ok(Some(frame)) => {
                if let Err(e) = frame.events() {
                    return Err(format!(
                        "CORRUPT  {} offset {}: {e}",
                        frame.segment().display(),
                        frame.offset()
                    ));
                }
                *frames += 1;
                *last = frame.lsn();
            }
            Ok(None) => break,
            Err(e) => return Err(format!("CORRUPT  {e}")),
        }
    }
    Ok(())
}

/// A key's components, printable: length-prefixed names joined by " | ".
fn show_key(key: &[u8]) -> String {
    let mut parts = Vec::new();
    let mut rest = key;
    while rest.len() >= 4 {
        let len = u32::from_be_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
        match rest.get(4..4 + len) {
            Some(p) => {
                parts.push(String::from_utf8_lossy(p).into_owned());
                rest = &rest[4 + len..];
            }
            None => {
                // A try number (4 bytes) is not length-prefixed.
                parts.push(format!(
                    "#{}",
                    u32::from_be_bytes(rest[..4].try_into().expect("4 bytes"))
                ));
                rest = &rest[4..];
            }
        }
    }
    parts.join(" | ")
}
