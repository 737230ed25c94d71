//! Retention: what happens to segments whose events are all in a durable
//! snapshot of the views.
//!
//! Runs after each snapshot commits, never before: a segment is eligible
//! only if every LSN in it is at or below the snapshot's `applied_lsn`, and
//! the last (active) segment never is. Segments go oldest first, and the log
//! directory is synced after each one, so that after a crash at any point
//! the log still starts at some segment's base LSN and runs without a gap:
//! at most the one segment being removed comes back, and a segment that
//! comes back is harmless (recovery checks only its header, replay starts
//! after it).
//!
//! The trade-off (see [`Retention`]): offline replay and `waymark` reach
//! back only as far as the log is kept, and views can be rebuilt from the
//! log only while it starts at LSN 1. Named checkpoints live in the views,
//! so they stay restorable whatever the retention.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::Lsn;
use super::reader::check_header;
use super::segment::{SEGMENT_HEADER_BYTES, SegmentHeader, list_segments};
use crate::error::{Error, Result};
use crate::options::Retention;
use crate::storage::{OpenMode, Storage, read_up_to};

/// What one retention pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Retained {
    pub removed: u64,
    pub archived: u64,
}

/// Bytes copied at a time when archiving.
const COPY_CHUNK_BYTES: usize = 1 << 20;

/// Applies `policy` to the segments of `log_dir` wholly at or below
/// `applied_lsn`. Stops, leaving the log as it is, as soon as `poisoned`
/// says the engine is (fail-stop: a write or sync may have failed since
/// the caller looked).
pub(crate) fn apply(
    storage: &dyn Storage,
    log_dir: &Path,
    applied_lsn: Lsn,
    policy: &Retention,
    now_unix_ms: u64,
    poisoned: &dyn Fn() -> bool,
) -> Result<Retained> {
    let mut done = Retained::default();
    if matches!(policy, Retention::KeepAll) || poisoned() {
        return Ok(done);
    }
    let segments = list_segments(storage, log_dir).map_err(|e| Error::io(log_dir, e))?;
    // Segment i is eligible if the next one starts at or below applied + 1.
    let mut eligible: Vec<&(Lsn, PathBuf)> = segments
        .windows(2)
        .take_while(|w| w[1].0 <= applied_lsn.next())
        .map(|w| &w[0])
        .collect();
    // The segment after the last eligible one may be the newest, in the
    // middle of its creation by the writer: its header written but not yet
    // synced, while the directory syncs below make its entry durable. Were
    // everything before it removed and the machine then lost power, the
    // log's only segment would be a torn creation that recovery removes,
    // and the log would start over with a new id. So that segment must have
    // a valid header, synced here, before anything before it goes. (Every
    // older segment was synced, and its directory entry too, before the
    // writer created the one after it.)
    if let Some((next_base, next_path)) = segments.get(eligible.len())
        && !eligible.is_empty()
        && (poisoned() || !header_made_durable(storage, next_path, *next_base)?)
    {
        eligible.pop();
    }
    match policy {
        Retention::KeepAll => {}
        Retention::KeepFor { age, bytes } => {
            let mut sizes = Vec::with_capacity(eligible.len());
            for (_, path) in &eligible {
                sizes.push(segment_info(storage, path)?);
            }
            let mut total: u64 = sizes.iter().map(|(len, _)| len).sum();
            for ((_, path), (len, created_ms)) in eligible.iter().zip(sizes) {
                let too_old = now_unix_ms.saturating_sub(created_ms) > millis(*age);
                if !too_old && total <= *bytes || poisoned() {
                    break; // Oldest first: the rest are younger and fit.
                }
                remove(storage, log_dir, path)?;
                total -= len;
                done.removed += 1;
            }
        }
        Retention::Archive(archive_dir) => {
            for (_, path) in eligible {
                if poisoned() {
                    break;
                }
                archive(storage, log_dir, archive_dir, path)?;
                done.archived += 1;
            }
        }
    }
    Ok(done)
}

/// Whether the segment at `path` has a valid header for `base` (then
/// synced, so it survives a crash); `false` if it does not (yet).
fn header_made_durable(storage: &dyn Storage, path: &Path, base: Lsn) -> Result<bool> {
    let file = storage
        .open(path, OpenMode::ReadWrite)
        .map_err(|e| Error::io(path, e))?;
    let mut head = [0u8; SEGMENT_HEADER_BYTES];
    let n = read_up_to(file.as_ref(), &mut head, 0).map_err(|e| Error::io(path, e))?;
    if check_header(path, base, &head[..n]).is_err() {
        return Ok(false);
    }
    file.sync_data().map_err(|e| Error::io(path, e))?;
    Ok(true)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A segment's length and creation time (from its header).
fn segment_info(storage: &dyn Storage, path: &Path) -> Result<(u64, u64)> {
    let file = storage
        .open(path, OpenMode::Read)
        .map_err(|e| Error::io(path, e))?;
    let len = file.len().map_err(|e| Error::io(path, e))?;
    let mut head = [0u8; SEGMENT_HEADER_BYTES];
    let n = read_up_to(file.as_ref(), &mut head, 0).map_err(|e| Error::io(path, e))?;
    // A header recovery already accepted; if it no longer decodes, treat
    // the segment as old rather than keep it forever.
    let created = SegmentHeader::decode(&head[..n]).map_or(0, |h| h.created_unix_ms);
    Ok((len, created))
}

/// Creates `dir` and any missing parents, and syncs the parent of each
/// directory it created: a new directory's entry is durable only then, and
/// a segment archived into a directory that a crash forgets would be gone.
fn create_dir_durably(storage: &dyn Storage, dir: &Path) -> Result<()> {
    let mut missing = Vec::new();
    for ancestor in dir.ancestors() {
        if ancestor.as_os_str().is_empty()
            || storage
                .exists(ancestor)
                .map_err(|e| Error::io(ancestor, e))?
        {
            break;
        }
        missing.push(ancestor);
    }
    if missing.is_empty() {
        return Ok(());
    }
    storage.create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    for created in missing {
        let parent = created
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        storage.sync_dir(parent).map_err(|e| Error::io(parent, e))?;
    }
    Ok(())
}

fn remove(storage: &dyn Storage, log_dir: &Path, path: &Path) -> Result<()> {
    storage.remove_file(path).map_err(|e| Error::io(path, e))?;
    storage.sync_dir(log_dir).map_err(|e| Error::io(log_dir, e))
}

/// Copies the segment into `archive_dir` (synced: file, then directory),
/// then removes it from the log. A copy, not a rename: the archive may be
/// another directory whose entry a crash could lose independently of the
/// log's, and a segment must never be gone from both.
fn archive(storage: &dyn Storage, log_dir: &Path, archive_dir: &Path, path: &Path) -> Result<()> {
    let name = path.file_name().ok_or_else(|| Error::NotAStateDir {
        path: path.to_path_buf(),
        why: "a segment path without a file name".into(),
    })?;
    let dest = archive_dir.join(name);
    create_dir_durably(storage, archive_dir)?;
    // A copy left by a crash in an earlier pass is redone from scratch.
    if storage.exists(&dest).map_err(|e| Error::io(&dest, e))? {
        storage
            .remove_file(&dest)
            .map_err(|e| Error::io(&dest, e))?;
    }
    let src = storage
        .open(path, OpenMode::Read)
        .map_err(|e| Error::io(path, e))?;
    let dst = storage
        .open(&dest, OpenMode::CreateNew)
        .map_err(|e| Error::io(&dest, e))?;
    let mut buf = vec![0u8; COPY_CHUNK_BYTES];
    let mut at = 0u64;
    loop {
        let n = read_up_to(src.as_ref(), &mut buf, at).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        dst.write_all_at(&buf[..n], at)
            .map_err(|e| Error::io(&dest, e))?;
        at += n as u64;
    }
    dst.sync_data().map_err(|e| Error::io(&dest, e))?;
    storage
        .sync_dir(archive_dir)
        .map_err(|e| Error::io(archive_dir, e))?;
    remove(storage, log_dir, path)
}
