//! Recovery on open: verify every frame, cut a torn tail, refuse corruption.
//!
//! The rules, and why:
//! - Every segment but the last was synced before the next was created, so
//!   any invalid frame or header in it is corruption.
//! - In the last segment, an invalid frame is the normal result of a crash
//!   (a write that never reached the disk whole) if nothing after it proves
//!   it had been synced. The proof is a later valid frame whose
//!   `durable_lsn` covers the bad frame's LSN: that frame was written after
//!   the bad one was synced, and a crash never damages synced bytes. With no
//!   such proof, the tail from the bad frame on is cut (set to zeros) and
//!   synced, and the report says how many bytes went.
//! - A last segment whose header is invalid and that holds nothing else is a
//!   segment whose creation was torn: it is removed.
//! - Recovery only ever cuts what a crash could have left and syncs each cut
//!   before going on, so a crash during recovery leaves a directory that
//!   recovers the same way (idempotence).
//! - The frames recovered from the last segment are synced before the log is
//!   declared recovered: after a process crash they may sit only in the page
//!   cache, and must not be treated as durable until they are.
//!
//! In [`RecoveryMode::Salvage`], corruption is cut like a torn tail and every
//! later segment is removed; the report says exactly what was dropped.

use std::path::{Path, PathBuf};

use super::Lsn;
use super::frame::{
    Decoded, FRAME_HEADER_BYTES, crc_seed, decode_frame, find_frame_vouching_for, peek_frame_len,
};
use super::reader::{LoadedSegment, check_header};
use super::segment::{SEGMENT_HEADER_BYTES, SegmentHeader, list_segments};
use crate::error::{Error, Invalid, Result};
use crate::event::access_batch;
use crate::options::RecoveryMode;
use crate::storage::{OpenMode, Storage, read_up_to};

/// What recovery found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segments read.
    pub segments: u32,
    /// Valid frames (batches) found.
    pub frames: u64,
    /// The first LSN in the log, if it has any frame.
    pub first_lsn: Option<Lsn>,
    /// The last LSN in the log, if it has any frame.
    pub last_lsn: Option<Lsn>,
    /// Bytes of log read.
    pub bytes_read: u64,
    /// The torn tail that was cut, if there was one.
    pub torn_tail: Option<Cut>,
    /// A last segment whose creation was torn, removed.
    pub removed_torn_segment: Option<PathBuf>,
    /// In salvage mode, the corruption that was cut and what went with it.
    pub salvaged: Option<Salvaged>,
}

/// A cut made at the end of the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cut {
    /// The segment cut.
    pub segment: PathBuf,
    /// Where the cut starts.
    pub offset: u64,
    /// The LSN the first dropped frame would have had.
    pub expected_lsn: Lsn,
    /// Non-zero bytes dropped from that segment (from `offset` to the last
    /// non-zero byte).
    pub bytes_dropped: u64,
    /// Why the bytes at `offset` were not a valid frame.
    pub reason: Invalid,
}

/// What salvage mode dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Salvaged {
    /// The cut in the corrupt segment.
    pub cut: Cut,
    /// Later segments removed whole.
    pub segments_removed: Vec<PathBuf>,
    /// Their bytes.
    pub segment_bytes_removed: u64,
}

/// The recovered log, ready for the writer.
pub(crate) struct Recovered {
    pub report: RecoveryReport,
    /// The log's id, if it has a segment.
    pub log_id: Option<u128>,
    /// The last segment and where its data ends.
    pub tail: Option<(Lsn, PathBuf, u64)>,
    /// The LSN of the next frame.
    pub next_lsn: Lsn,
    /// Where the frame `verify_from` starts, if recovery walked past it:
    /// (segment base, offset). Replay starts there.
    pub resume_at: Option<(Lsn, u64)>,
}

enum SegmentEnd {
    /// The data ends cleanly at this offset.
    Clean(u64),
    /// An invalid frame at `offset`; `proven` says it is corruption even in
    /// the last segment: a later frame proves it had been synced, or its
    /// checksum holds (so no crash tore it).
    Bad {
        offset: u64,
        reason: Invalid,
        proven: bool,
    },
}

/// Scans one loaded segment from its first frame. Returns the end and the
/// number of frames; `expected` advances past each valid frame.
fn scan(seg: &LoadedSegment, seed: u32, expected: &mut Lsn) -> (SegmentEnd, u64) {
    let mut pos = SEGMENT_HEADER_BYTES;
    let mut frames = 0u64;
    loop {
        let reason = match decode_frame(&seg.buf, pos, seed, Some(*expected)) {
            Decoded::Frame(info) => match access_batch(&seg.buf[info.payload.clone()]) {
                Ok(_) => {
                    frames += 1;
                    *expected = expected.next();
                    pos = info.next;
                    continue;
                }
                Err(why) => Invalid::Payload(why),
            },
            // Past its last frame a segment holds zeros (zero-filled ahead
            // or preallocated), in every segment: anything else is a frame
            // whose length field was damaged, reported where it is (in a
            // segment before the last, it used to read as that segment's
            // end and surface as a gap at the next one).
            Decoded::End => {
                if seg.buf[pos..].iter().all(|b| *b == 0) {
                    return (SegmentEnd::Clean(seg.offset(pos)), frames);
                }
                Invalid::TrailingGarbage
            }
            Decoded::Invalid(reason) => reason,
        };
        // A frame whose checksum holds was written whole: a torn or lost
        // write cannot produce one (the seed rules out other logs, and a cut
        // zero-fills). A wrong LSN or payload in it is a writer's bug or
        // tampering, never a crash, so it is not cut as a torn tail.
        let checksum_holds = matches!(reason, Invalid::UnexpectedLsn(_) | Invalid::Payload(_));
        let proven =
            checksum_holds || find_frame_vouching_for(&seg.buf, pos + 1, seed, *expected).is_some();
        let end = SegmentEnd::Bad {
            offset: seg.offset(pos),
            reason,
            proven,
        };
        return (end, frames);
    }
}

/// What [`scan_clean_last`] found in a cleanly ending segment.
struct CleanEnd {
    log_id: u128,
    /// The offset of the frame `verify_from`, if the segment holds it.
    resume_offset: Option<u64>,
    frames: u64,
    /// The LSN after the last frame.
    next: Lsn,
    /// Where the frames end.
    end: u64,
    bytes_read: u64,
}

/// Bytes read at a time when checking that a segment's tail is all zeros.
const ZERO_CHECK_CHUNK_BYTES: usize = 1 << 20;

/// Scans the last segment through a bounded window. Returns `Some` only if
/// its header is valid (and of this log), every frame from `expected` on is
/// valid, and the bytes after the last frame are all zeros to the end of
/// the file: then nothing needs cutting. Anything else returns `None`, and
/// the caller loads the segment whole to judge it (torn tail, corruption,
/// salvage), which only happens after a crash or damage.
///
/// Frames below `verify_from` (their events are in a durable snapshot) are
/// walked by their length and LSN fields only, without the CRC or payload
/// validation: a damaged one can only make the walk stop early or land on a
/// frame with the wrong LSN, and either sends the segment to the slow path,
/// which verifies every frame.
fn scan_clean_last(
    storage: &dyn Storage,
    path: &Path,
    base: Lsn,
    expected: Lsn,
    log_id: Option<u128>,
    verify_from: Lsn,
) -> Result<Option<CleanEnd>> {
    if expected != base {
        return Ok(None); // A gap: the slow path reports it.
    }
    let mut seg = super::reader::OpenSegment::open(storage, path, base)?;
    let (start, end) = seg.window(0, SEGMENT_HEADER_BYTES)?;
    let Ok(header) = check_header(path, base, &seg.buf[start..end])
        .and_then(|h| same_log(path, base, log_id, h))
    else {
        return Ok(None);
    };
    let seed = crc_seed(header.log_id);
    let mut offset = SEGMENT_HEADER_BYTES as u64;
    let mut next = base;
    let mut frames = 0u64;
    let mut resume_offset = None;
    while next < verify_from {
        let (start, end) = seg.window(offset, FRAME_HEADER_BYTES)?;
        let Some(len) = peek_frame_len(&seg.buf[start..end], next) else {
            return Ok(None);
        };
        offset += len as u64;
        next = next.next();
        frames += 1;
    }
    // A failed sync may have left pages of the frames after the snapshot
    // cached and clean although they never reached the disk (Linux marks
    // them clean after a writeback error, and no later sync writes them):
    // read those frames as the disk holds them, so that a failed group is
    // a torn tail now, not a hole under later acknowledged batches after
    // the next power loss. (The frames the snapshot covers were synced
    // before it.)
    seg.forget_cached_from(offset);
    loop {
        if next == verify_from {
            resume_offset = Some(offset);
        }
        let (start, decoded) = seg.decode_at(offset, seed, next)?;
        match decoded {
            Decoded::Frame(info) => {
                if access_batch(&seg.buf[info.payload.clone()]).is_err() {
                    return Ok(None);
                }
                offset += (info.next - start) as u64;
                next = next.next();
                frames += 1;
            }
            Decoded::End => break,
            Decoded::Invalid(_) => return Ok(None),
        }
    }
    let file = storage
        .open(path, OpenMode::Read)
        .map_err(|e| Error::io(path, e))?;
    let len = file.len().map_err(|e| Error::io(path, e))?;
    let mut chunk = vec![0u8; ZERO_CHECK_CHUNK_BYTES];
    let mut at = offset;
    while at < len {
        let n = read_up_to(file.as_ref(), &mut chunk, at).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        // An OR over the whole chunk vectorizes; an early-exit search does
        // not, and this runs over up to a whole preallocated segment.
        if chunk[..n].iter().fold(0u8, |acc, b| acc | b) != 0 {
            return Ok(None);
        }
        at += n as u64;
    }
    Ok(Some(CleanEnd {
        log_id: header.log_id,
        resume_offset,
        frames,
        next,
        end: offset,
        bytes_read: len,
    }))
}

/// Checks that a segment's header belongs to the log whose id recovery has
/// seen so far (if any).
fn same_log(
    path: &Path,
    base: Lsn,
    log_id: Option<u128>,
    header: SegmentHeader,
) -> Result<SegmentHeader> {
    if log_id.is_some_and(|id| id != header.log_id) {
        return Err(Error::Corruption {
            segment: path.to_path_buf(),
            offset: 0,
            expected_lsn: base,
            reason: Invalid::LogIdMismatch,
        });
    }
    Ok(header)
}

/// Zeros the segment from `offset` on and syncs it. Returns the non-zero
/// bytes dropped.
fn cut(
    storage: &dyn Storage,
    seg: &LoadedSegment,
    offset: u64,
    preallocate_bytes: Option<u64>,
) -> Result<u64> {
    let path = &seg.path;
    let tail = &seg.buf[seg.pos(offset)..];
    let dropped = tail
        .iter()
        .rposition(|b| *b != 0)
        .map_or(0, |i| i as u64 + 1);
    let file = storage
        .open(path, OpenMode::ReadWrite)
        .map_err(|e| Error::io(path, e))?;
    let len = seg.offset(seg.buf.len());
    file.set_len(offset).map_err(|e| Error::io(path, e))?;
    // Keep a preallocated segment's size so appends still do not grow it.
    let keep = preallocate_bytes.map_or(offset, |p| len.max(p).max(offset));
    if keep > offset {
        file.set_len(keep).map_err(|e| Error::io(path, e))?;
    }
    file.sync_data().map_err(|e| Error::io(path, e))?;
    Ok(dropped)
}

fn remove(storage: &dyn Storage, log_dir: &Path, path: &Path) -> Result<()> {
    storage.remove_file(path).map_err(|e| Error::io(path, e))?;
    storage.sync_dir(log_dir).map_err(|e| Error::io(log_dir, e))
}

/// Drops the clean cached pages of the whole file at `path`
/// ([`crate::storage::StorageFile::forget_cached`]). Advice the file
/// system may not take (it then reports an error): that is no reason to
/// refuse an open, so only opening the file can fail.
fn forget_cached(storage: &dyn Storage, path: &Path) -> Result<()> {
    let file = storage
        .open(path, OpenMode::Read)
        .map_err(|e| Error::io(path, e))?;
    let _ = file.forget_cached(0, None);
    Ok(())
}

/// Recovers the log in `log_dir`, verifying every frame of every segment
/// that holds an LSN at or above `verify_from`. A segment wholly below it
/// (its frames are already in a durable snapshot of the views) has only its
/// header checked: it was synced before the next segment was created, and
/// `waymark verify` still reads every frame. This keeps an open's cost
/// bounded by the snapshot interval and one segment, not by the log's size.
pub(crate) fn recover(
    storage: &dyn Storage,
    log_dir: &Path,
    mode: RecoveryMode,
    preallocate_bytes: Option<u64>,
    verify_from: Lsn,
) -> Result<Recovered> {
    let segments = list_segments(storage, log_dir).map_err(|e| Error::io(log_dir, e))?;
    let mut report = RecoveryReport::default();
    let mut log_id: Option<u128> = None;
    let mut expected: Option<Lsn> = None;
    let mut tail: Option<(Lsn, PathBuf, u64)> = None;
    let mut resume_at = None;
    let count = segments.len();
    for (i, (base, path)) in segments.iter().enumerate() {
        let last = i + 1 == count;
        // Corruption from this segment on: refused, or cut in salvage mode.
        let salvage = |e: Error, report: &mut RecoveryReport| {
            salvage_or(
                e,
                mode,
                storage,
                log_dir,
                &segments[i..],
                report,
                preallocate_bytes,
                verify_from,
            )
        };
        if let Some((next_base, _)) = segments.get(i + 1)
            && *next_base <= verify_from
            && expected.is_none_or(|e| e == *base)
        {
            let mut head = [0u8; SEGMENT_HEADER_BYTES];
            let file = storage
                .open(path, OpenMode::Read)
                .map_err(|e| Error::io(path, e))?;
            let n = read_up_to(file.as_ref(), &mut head, 0).map_err(|e| Error::io(path, e))?;
            match check_header(path, *base, &head[..n])
                .and_then(|h| same_log(path, *base, log_id, h))
            {
                Ok(header) => {
                    log_id = Some(header.log_id);
                    report.segments += 1;
                    report.first_lsn.get_or_insert(*base);
                    report.last_lsn = Some(Lsn(next_base.0 - 1));
                    expected = Some(*next_base);
                    continue;
                }
                Err(e) => {
                    return salvage(e, &mut report);
                }
            }
        }
        if last
            && let Some(clean) = scan_clean_last(
                storage,
                path,
                *base,
                expected.unwrap_or(*base),
                log_id,
                verify_from,
            )?
        {
            // The common case after any shutdown: every frame valid, then
            // zeros to the end. Read through a bounded window, never the
            // whole (preallocated) file at once.
            report.segments += 1;
            report.bytes_read += clean.bytes_read;
            report.frames += clean.frames;
            if clean.frames > 0 {
                report.first_lsn.get_or_insert(*base);
                report.last_lsn = Some(Lsn(clean.next.0 - 1));
            }
            log_id = Some(clean.log_id);
            expected = Some(clean.next);
            tail = Some((*base, path.clone(), clean.end));
            resume_at = clean.resume_offset.map(|offset| (*base, offset));
            break;
        }
        if last {
            // The slow path reads the whole last segment as the disk holds
            // it (see `scan_clean_last`).
            forget_cached(storage, path)?;
        }
        let seg = LoadedSegment::load(storage, path, 0)?;
        report.segments += 1;
        report.bytes_read += seg.buf.len() as u64;
        let header = match check_header(path, *base, &seg.buf) {
            Ok(header) => header,
            Err(Error::Corruption { .. })
                if last
                    && expected.is_none_or(|e| e == *base)
                    && super::reader::zeros_after_header(&seg.buf) =>
            {
                // Torn creation: nothing was ever acknowledged from it.
                remove(storage, log_dir, path)?;
                report.removed_torn_segment = Some(path.clone());
                break;
            }
            Err(e) => {
                return salvage(e, &mut report);
            }
        };
        let header = match same_log(path, *base, log_id, header) {
            Ok(header) => header,
            Err(e) => return salvage(e, &mut report),
        };
        log_id = Some(header.log_id);
        let mut next = expected.unwrap_or(*base);
        if next != *base {
            let e = Error::Gap {
                segment: path.clone(),
                expected: next,
                found: *base,
            };
            return salvage(e, &mut report);
        }
        let seed = crc_seed(header.log_id);
        let (end, frames) = scan(&seg, seed, &mut next);
        report.frames += frames;
        if frames > 0 {
            report.first_lsn.get_or_insert(*base);
            report.last_lsn = Some(Lsn(next.0 - 1));
        }
        expected = Some(next);
        match end {
            SegmentEnd::Clean(offset) => tail = Some((*base, path.clone(), offset)),
            // A torn tail: the last segment's first bad frame, with no
            // later frame vouching that it had been synced, and above the
            // snapshot (a frame at or below `applied_lsn` was synced before
            // the snapshot was taken, so a bad one is corruption).
            SegmentEnd::Bad {
                offset,
                reason,
                proven,
            } if last && !proven && next >= verify_from => {
                let bytes_dropped = cut(storage, &seg, offset, preallocate_bytes)?;
                report.torn_tail = Some(Cut {
                    segment: path.clone(),
                    offset,
                    expected_lsn: next,
                    bytes_dropped,
                    reason,
                });
                tail = Some((*base, path.clone(), offset));
            }
            SegmentEnd::Bad { offset, reason, .. } => {
                let e = Error::Corruption {
                    segment: path.clone(),
                    offset,
                    expected_lsn: next,
                    reason: reason.clone(),
                };
                // Strict refuses; salvage too below the snapshot (see
                // `salvage_or`).
                if mode == RecoveryMode::Strict || next < verify_from {
                    return Err(e);
                }
                let bytes_dropped = cut(storage, &seg, offset, preallocate_bytes)?;
                let cut = Cut {
                    segment: path.clone(),
                    offset,
                    expected_lsn: next,
                    bytes_dropped,
                    reason,
                };
                tail = Some((*base, path.clone(), offset));
                remove_later(storage, log_dir, &segments[i + 1..], &mut report, cut)?;
                break;
            }
        }
    }
    if let Some((_, path, _)) = &tail {
        // Frames read back after a process crash may sit only in the page
        // cache; make them durable before anything depends on them.
        let file = storage
            .open(path, OpenMode::ReadWrite)
            .map_err(|e| Error::io(path, e))?;
        file.sync_data().map_err(|e| Error::io(path, e))?;
    }
    Ok(Recovered {
        report,
        // Kept even without a tail: when the last segment was a torn
        // creation after segments that a snapshot covers (checked by their
        // headers only), the log goes on from them, under their id.
        log_id,
        next_lsn: expected.unwrap_or(Lsn(1)),
        tail,
        resume_at,
    })
}

/// In strict mode returns `e`; in salvage mode removes `from` (the bad
/// segment and all after it) and reports it.
#[expect(
    clippy::too_many_arguments,
    reason = "recovery's own arguments, passed on to its second pass"
)]
fn salvage_or(
    e: Error,
    mode: RecoveryMode,
    storage: &dyn Storage,
    log_dir: &Path,
    from: &[(Lsn, PathBuf)],
    report: &mut RecoveryReport,
    preallocate_bytes: Option<u64>,
    verify_from: Lsn,
) -> Result<Recovered> {
    if mode == RecoveryMode::Strict {
        return Err(e);
    }
    let (segment, offset, expected_lsn, reason) = match &e {
        Error::Corruption {
            segment,
            offset,
            expected_lsn,
            reason,
        } => (segment.clone(), *offset, *expected_lsn, reason.clone()),
        Error::Gap {
            segment, expected, ..
        } => (segment.clone(), 0, *expected, Invalid::Truncated),
        _ => return Err(e),
    };
    // Frames the snapshot covers cannot be cut: the views would then hold
    // batches the log no longer has, and the open would refuse them after
    // the cut. Refuse first, cutting nothing (RELIABILITY.md says how to
    // rebuild the views instead).
    if expected_lsn < verify_from {
        return Err(e);
    }
    let cut = Cut {
        segment,
        offset,
        expected_lsn,
        bytes_dropped: 0,
        reason,
    };
    remove_later(storage, log_dir, from, report, cut)?;
    // Start over: the log now ends where the bad segment began. Still in
    // salvage mode: the segment now last may hold more bad bytes (frames
    // after a zeroed length field), and a segment checked only by its
    // header before may be bad too; each is cut like the first.
    let mut again = recover(storage, log_dir, mode, preallocate_bytes, verify_from)?;
    let first = report.salvaged.take();
    again.report.salvaged = match (again.report.salvaged.take(), first) {
        // Cut again, earlier in the log: that cut is where the log now
        // ends, and the report counts everything both passes removed.
        (Some(mut second), Some(first)) => {
            second.segments_removed.extend(first.segments_removed);
            second.segment_bytes_removed += first.segment_bytes_removed;
            Some(second)
        }
        (second, first) => second.or(first),
    };
    Ok(again)
}

fn remove_later(
    storage: &dyn Storage,
    log_dir: &Path,
    later: &[(Lsn, PathBuf)],
    report: &mut RecoveryReport,
    cut: Cut,
) -> Result<()> {
    let mut removed = Vec::new();
    let mut bytes = 0u64;
    for (_, path) in later {
        let file = storage
            .open(path, OpenMode::Read)
            .map_err(|e| Error::io(path, e))?;
        bytes += file.len().map_err(|e| Error::io(path, e))?;
        storage.remove_file(path).map_err(|e| Error::io(path, e))?;
        removed.push(path.clone());
    }
    if !removed.is_empty() {
        storage
            .sync_dir(log_dir)
            .map_err(|e| Error::io(log_dir, e))?;
    }
    report.salvaged = Some(Salvaged {
        cut,
        segments_removed: removed,
        segment_bytes_removed: bytes,
    });
    Ok(())
}
