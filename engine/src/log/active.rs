//! The segment being appended to.
//!
//! [`Active`] owns the writer's file: it creates a segment (header,
//! preallocation, and the directory entry, all durable before a frame goes
//! in), takes over the tail that recovery left (replacing an older format
//! version's empty tail atomically), writes framed bytes at the end with
//! zeros written ahead of them, and syncs. What the bytes are, when to sync
//! and when to roll are the writer's decisions (`writer`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::Lsn;
use super::segment::{SEGMENT_HEADER_BYTES, SegmentHeader, segment_file_name};
use crate::error::{Error, Result};
use crate::options::Options;
use crate::storage::{OpenMode, Storage, StorageFile};

/// The segment being appended to.
pub(super) struct Active {
    file: Arc<dyn StorageFile>,
    path: PathBuf,
    /// Where the next frame goes.
    offset: u64,
    /// Whether bytes were written since the last sync.
    dirty: bool,
    /// The file holds written bytes (frames, or zeros written ahead of
    /// them) up to here; past it a preallocated segment is sparse.
    zeroed_to: u64,
    /// The size the segment was preallocated to, if it was: zeros are
    /// written ahead of the frames up to it.
    preallocated: Option<u64>,
}

/// Bytes of zeros a preallocated segment is written with at a time, ahead
/// of the frames. `set_len` leaves the file sparse, and a frame that lands
/// in a block never written makes its `fdatasync` allocate the block and
/// commit the file system's journal too: measured here, a 1,792-byte group
/// with `fdatasync` took about 1.2x as long in a sparse file as in a
/// zero-filled one, and a group that size lands in a new 4 KiB block every
/// second or third sync (BENCHMARKS.md, "Zero-filling ahead of the
/// frames"). Writing zeros ahead allocates a mebibyte's blocks in one sync
/// (about a millisecond more, once per mebibyte of log) instead of one
/// block in every other sync. PostgreSQL zero-fills its WAL segments for
/// the same reason. A segment smaller than four times this is zero-filled a
/// quarter at a time, so that its first frame does not pay for all of it.
pub(crate) const ZERO_AHEAD_BYTES: u64 = ZEROS.len() as u64;

/// Bytes of zeros written ahead at a time in a segment of `segment_bytes`.
fn zero_ahead_bytes(segment_bytes: u64) -> u64 {
    (segment_bytes / 4).clamp(1024, ZERO_AHEAD_BYTES)
}

/// A mebibyte of zeros to write from.
static ZEROS: [u8; 1 << 20] = [0; 1 << 20];

impl Active {
    /// Creates the segment whose first LSN is `base` and makes it and its
    /// directory entry durable before anything is written into it.
    pub(super) fn create(
        storage: &dyn Storage,
        log_dir: &Path,
        log_id: u128,
        base: Lsn,
        options: &Options,
    ) -> Result<Active> {
        let path = log_dir.join(segment_file_name(base));
        let file = create_segment_file(storage, &path, log_id, base, options)?;
        // A new file is not durable until its directory entry is.
        storage
            .sync_dir(log_dir)
            .map_err(|e| Error::io(log_dir, e))?;
        Ok(Active::at(file, path, SEGMENT_HEADER_BYTES as u64, options))
    }

    /// Takes over the recovered tail segment at `path`, whose last frame
    /// ends at `offset`, to append after it, in the log `log_id`. `next_lsn` is the LSN the next
    /// frame takes. Also says whether a segment file was created: an older
    /// format version's tail is replaced when it holds no frame, and
    /// followed by a new segment when it does (frames of this build's
    /// version never go into a segment whose header names an older one: an
    /// older build would take them for corruption).
    pub(super) fn take_over(
        storage: &dyn Storage,
        log_dir: &Path,
        log_id: u128,
        path: PathBuf,
        offset: u64,
        next_lsn: Lsn,
        options: &Options,
    ) -> Result<(Active, bool)> {
        let file = storage
            .open(&path, OpenMode::ReadWrite)
            .map_err(|e| Error::io(&path, e))?;
        // The tail's directory entry may never have been synced: the open
        // or rollover that created it may have failed or crashed between
        // the file's sync and the directory's. Acks are about to depend on
        // it.
        storage
            .sync_dir(log_dir)
            .map_err(|e| Error::io(log_dir, e))?;
        let opened = Arc::clone(&file);
        match upgrade_of_tail(storage, log_dir, file, &path, offset, options)? {
            TailUpgrade::Resume(file) => {
                let created = !Arc::ptr_eq(&file, &opened);
                // What lies past the recovered tail is not known to be
                // written: zero-filling starts again from it.
                Ok((Active::at(file, path, offset, options), created))
            }
            // Recovery synced the tail: a rollover needs no sync of it.
            TailUpgrade::Roll => Ok((
                Active::create(storage, log_dir, log_id, next_lsn, options)?,
                true,
            )),
        }
    }

    /// The segment `file` at `path`, to be appended to at `offset`.
    fn at(file: Arc<dyn StorageFile>, path: PathBuf, offset: u64, options: &Options) -> Active {
        Active {
            file,
            path,
            offset,
            dirty: false,
            zeroed_to: offset,
            preallocated: options.preallocate.then_some(options.segment_bytes_max),
        }
    }

    /// Where the next frame goes: the bytes in the segment so far.
    pub(super) fn offset(&self) -> u64 {
        self.offset
    }

    /// Whether bytes were written since the last sync.
    pub(super) fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Writes `bytes` (whole frames) at the end of the segment, after the
    /// zeros ahead of them if they reach past what is written already.
    pub(super) fn append(&mut self, bytes: &[u8]) -> Result<()> {
        self.zero_ahead(bytes.len() as u64)?;
        self.file
            .write_all_at(bytes, self.offset)
            .map_err(|e| Error::io(&self.path, e))?;
        self.offset += bytes.len() as u64;
        self.dirty = true;
        Ok(())
    }

    /// One `fdatasync` of the segment. The caller never retries a failed
    /// one (fail-stop): the segment stays dirty.
    pub(super) fn sync(&mut self) -> Result<()> {
        self.file
            .sync_data()
            .map_err(|e| Error::io(&self.path, e))?;
        self.dirty = false;
        Ok(())
    }

    /// In a preallocated segment, writes zeros past the end of the `len`
    /// bytes about to be written when they would reach beyond what is
    /// written already: [`ZERO_AHEAD_BYTES`] at a time (less in a small
    /// segment), never past the segment's preallocated size, never over a
    /// frame. Written before the frames, so that the frames stay the last
    /// write a crash can tear. Zeros read as the end of the data (no frame
    /// has length zero), exactly as the sparse file's holes do, so recovery
    /// and readers see no difference.
    fn zero_ahead(&mut self, len: u64) -> Result<()> {
        let end = self.offset + len;
        let Some(size) = self.preallocated else {
            return Ok(());
        };
        if end <= self.zeroed_to {
            return Ok(());
        }
        // Past `zeroed_to` by the check above: the zeros start at `end`.
        let from = end;
        let to = (from + zero_ahead_bytes(size)).min(size);
        if to > from {
            let len = usize::try_from(to - from).expect("at most ZERO_AHEAD_BYTES");
            self.file
                .write_all_at(&ZEROS[..len], from)
                .map_err(|e| Error::io(&self.path, e))?;
            self.dirty = true;
        }
        self.zeroed_to = to.max(end);
        Ok(())
    }
}

fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Creates a segment file at `path` (header and preallocation, synced;
/// its directory entry is the caller's to sync).
fn create_segment_file(
    storage: &dyn Storage,
    path: &Path,
    log_id: u128,
    base: Lsn,
    options: &Options,
) -> Result<Arc<dyn StorageFile>> {
    let file = storage
        .open(path, OpenMode::CreateNew)
        .map_err(|e| Error::io(path, e))?;
    let header = SegmentHeader {
        format_version: super::FORMAT_VERSION,
        log_id,
        base_lsn: base,
        created_unix_ms: now_unix_ms(),
    };
    file.write_all_at(&header.encode(), 0)
        .map_err(|e| Error::io(path, e))?;
    if options.preallocate {
        file.set_len(options.segment_bytes_max)
            .map_err(|e| Error::io(path, e))?;
    }
    file.sync_data().map_err(|e| Error::io(path, e))?;
    Ok(file)
}

/// The suffix of the file that replaces an empty tail segment of an older
/// format version (see [`upgrade_of_tail`]). Not a segment name: readers
/// and recovery pass over it.
const UPGRADE_SUFFIX: &str = ".upgrade";

/// How the writer takes over a recovered tail segment.
enum TailUpgrade {
    /// Append after its last frame, in this file: its header is this
    /// build's version (or it had no frame and was replaced by an empty
    /// segment of this version).
    Resume(Arc<dyn StorageFile>),
    /// It holds frames under an older version's header: start a new
    /// segment.
    Roll,
}

/// Reads the tail segment's header and decides how to take it over.
///
/// An older version's tail with no frame yet is replaced whole: a new empty
/// segment is written and synced under a temporary name, renamed over it,
/// and the directory synced. The rename is atomic, so a crash leaves the
/// old empty segment or the new one, never neither (rewriting the header in
/// place could tear it, and recovery would remove the torn segment, and
/// with it, if it was the only one, the log's id that the views record).
/// A temporary file a crash left behind is removed first.
fn upgrade_of_tail(
    storage: &dyn Storage,
    log_dir: &Path,
    file: Arc<dyn StorageFile>,
    path: &Path,
    offset: u64,
    options: &Options,
) -> Result<TailUpgrade> {
    let mut bytes = [0u8; SEGMENT_HEADER_BYTES];
    file.read_exact_at(&mut bytes, 0)
        .map_err(|e| Error::io(path, e))?;
    // Recovery checked this header already.
    let header = SegmentHeader::decode(&bytes).map_err(|_| Error::Corruption {
        segment: path.to_path_buf(),
        offset: 0,
        expected_lsn: Lsn(0),
        reason: crate::error::Invalid::HeaderChecksum,
    })?;
    if header.format_version == super::FORMAT_VERSION {
        return Ok(TailUpgrade::Resume(file));
    }
    if offset > SEGMENT_HEADER_BYTES as u64 {
        return Ok(TailUpgrade::Roll);
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(UPGRADE_SUFFIX);
    let tmp = PathBuf::from(tmp);
    if storage.exists(&tmp).map_err(|e| Error::io(&tmp, e))? {
        storage.remove_file(&tmp).map_err(|e| Error::io(&tmp, e))?;
    }
    let new = create_segment_file(storage, &tmp, header.log_id, header.base_lsn, options)?;
    storage.rename(&tmp, path).map_err(|e| Error::io(path, e))?;
    storage
        .sync_dir(log_dir)
        .map_err(|e| Error::io(log_dir, e))?;
    Ok(TailUpgrade::Resume(new))
}
