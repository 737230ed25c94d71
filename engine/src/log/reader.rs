//! The log reader: iterate frames from any LSN, offline or beside a live
//! writer.
//!
//! [`LogReader`] takes no lock and writes nothing, so it works on a copied
//! directory and on one that another process is appending to. At the tail it
//! stops cleanly at a frame still being written (or torn), and a later call
//! picks up whatever has been written since: that is how `tail -f` follows.
//! Judging whether an invalid tail is crash damage or corruption is the job
//! of recovery (and `verify`), not of the reader; [`Cursor::tail`] says where
//! and why the reader stopped.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rkyv::util::AlignedVec;

use super::Lsn;
use super::frame::{
    Decoded, FRAME_HEADER_BYTES, FrameInfo, claimed_frame_len, crc_seed, decode_frame,
    peek_frame_len,
};
use super::readahead::ReadAhead;
use super::segment::{HeaderError, SEGMENT_HEADER_BYTES, SegmentHeader, list_segments};
use crate::error::{Error, Invalid, Result};
use crate::event::{ArchivedBatch, Event, access_batch, decode_batch};
use crate::log::LOG_DIR_NAME;
use crate::storage::{OpenMode, Storage, read_up_to};

/// The bytes of one whole segment from some aligned offset to its end, in a
/// buffer aligned for in-place validation (recovery reads segments this way;
/// cursors read through a bounded window instead).
pub(crate) struct LoadedSegment {
    pub path: PathBuf,
    /// File offset of `buf[0]`; a multiple of 8.
    pub buf_offset: u64,
    pub buf: AlignedVec<16>,
}

impl LoadedSegment {
    /// Reads `path` from `from` (8-aligned) to its end.
    pub(crate) fn load(storage: &dyn Storage, path: &Path, from: u64) -> Result<LoadedSegment> {
        assert!(
            from.is_multiple_of(8),
            "segments are loaded from aligned offsets"
        );
        let file = storage
            .open(path, OpenMode::Read)
            .map_err(|e| Error::io(path, e))?;
        let len = file.len().map_err(|e| Error::io(path, e))?;
        let want = usize::try_from(len.saturating_sub(from)).map_err(|_| Error::NotAStateDir {
            path: path.to_path_buf(),
            why: "segment larger than this machine's address space".into(),
        })?;
        let mut buf = AlignedVec::<16>::with_capacity(want);
        buf.resize(want, 0);
        let n = read_up_to(file.as_ref(), &mut buf, from).map_err(|e| Error::io(path, e))?;
        buf.resize(n, 0);
        Ok(LoadedSegment {
            path: path.to_path_buf(),
            buf_offset: from,
            buf,
        })
    }

    /// The position in `buf` of file offset `offset`.
    pub(crate) fn pos(&self, offset: u64) -> usize {
        usize::try_from(offset - self.buf_offset).expect("offsets inside a loaded buffer fit usize")
    }

    /// The file offset of position `pos` in `buf`.
    pub(crate) fn offset(&self, pos: usize) -> u64 {
        self.buf_offset + pos as u64
    }
}

/// Decodes a segment header, mapping failures to errors that name the file.
pub(crate) fn check_header(path: &Path, base: Lsn, bytes: &[u8]) -> Result<SegmentHeader> {
    let header = SegmentHeader::decode(bytes).map_err(|e| match e {
        HeaderError::UnsupportedVersion(version) => Error::UnsupportedVersion {
            path: path.to_path_buf(),
            version,
            supported: super::FORMAT_VERSION,
        },
        HeaderError::Invalid(reason) => Error::Corruption {
            segment: path.to_path_buf(),
            offset: 0,
            expected_lsn: base,
            reason,
        },
    })?;
    if header.base_lsn != base {
        return Err(Error::Corruption {
            segment: path.to_path_buf(),
            offset: 0,
            expected_lsn: base,
            reason: Invalid::BaseLsnMismatch(header.base_lsn),
        });
    }
    Ok(header)
}

/// Reads the log of a state directory, without a lock.
///
/// # Examples
///
/// ```
/// use waymark_engine::{Engine, Event, EventBody, LogReader, Lsn, RunScope};
///
/// let dir = tempfile::tempdir().unwrap();
/// let engine = Engine::open(dir.path()).unwrap();
/// let run = RunScope { tenant: "t".into(), dag: "d".into(), run: "r".into() };
/// engine.append(vec![Event::now(EventBody::PurgeRun { run })]).unwrap();
///
/// let reader = LogReader::open(dir.path()).unwrap();
/// let mut cursor = reader.cursor(Lsn(1));
/// let frame = cursor.next_frame().unwrap().expect("one frame");
/// assert_eq!(frame.lsn(), Lsn(1));
/// assert_eq!(frame.decode().unwrap()[0].kind(), "purge_run");
/// assert!(cursor.next_frame().unwrap().is_none());
/// ```
#[derive(Clone, Debug)]
pub struct LogReader {
    storage: Arc<dyn Storage>,
    log_dir: PathBuf,
    /// Whether cursors may hand long scans to a read-ahead thread.
    read_ahead: bool,
}

impl LogReader {
    /// A reader of the state directory `dir` on the real file system.
    ///
    /// # Errors
    ///
    /// [`Error::NotAStateDir`] if `dir` has no log.
    pub fn open(dir: impl AsRef<Path>) -> Result<LogReader> {
        LogReader::open_on(Arc::new(crate::storage::FsStorage), dir)
    }

    /// A reader of the state directory `dir` on `storage`.
    ///
    /// # Errors
    ///
    /// [`Error::NotAStateDir`] if `dir` has no log.
    pub fn open_on(storage: Arc<dyn Storage>, dir: impl AsRef<Path>) -> Result<LogReader> {
        let dir = dir.as_ref();
        let log_dir = dir.join(LOG_DIR_NAME);
        let exists = storage
            .exists(&log_dir)
            .map_err(|e| Error::io(&log_dir, e))?;
        if !exists {
            let why = if storage.exists(dir).map_err(|e| Error::io(dir, e))? {
                format!("it has no {LOG_DIR_NAME}/ directory")
            } else {
                "it does not exist".to_string()
            };
            return Err(Error::NotAStateDir {
                path: dir.to_path_buf(),
                why,
            });
        }
        Ok(LogReader::of_log_dir(storage, log_dir))
    }

    /// A reader of the log directory `log_dir`, known to exist (an open
    /// engine's): nothing to check, so nothing can fail.
    pub(crate) fn of_log_dir(storage: Arc<dyn Storage>, log_dir: PathBuf) -> LogReader {
        let read_ahead = storage.read_ahead();
        LogReader {
            storage,
            log_dir,
            read_ahead,
        }
    }

    /// The segments, as (base LSN, path), in LSN order.
    ///
    /// # Errors
    ///
    /// An I/O error listing the log directory.
    pub fn segments(&self) -> Result<Vec<(Lsn, PathBuf)>> {
        list_segments(self.storage.as_ref(), &self.log_dir).map_err(|e| Error::io(&self.log_dir, e))
    }

    /// Whether cursors hand long sequential scans to a read-ahead thread
    /// (the default on real files; never on the simulated disk): after
    /// [`READ_AHEAD_AFTER_FRAMES`] frames of a segment with at least
    /// [`READ_AHEAD_MIN_BYTES`] left, a helper thread reads and checks the
    /// next windows while the caller uses the current one. The frames a
    /// cursor yields, and where and why it stops, are the same either way.
    pub fn with_read_ahead(mut self, read_ahead: bool) -> LogReader {
        self.read_ahead = read_ahead;
        self
    }

    /// A cursor that yields frames from `from` on (from the log's first LSN
    /// if `from` is older when the cursor first reads; frames removed
    /// after that are [`Error::Removed`], never passed over).
    pub fn cursor(&self, from: Lsn) -> Cursor {
        Cursor {
            reader: self.clone(),
            next_lsn: from,
            seg: None,
            offset: 0,
            seed: None,
            tail: None,
            hint: None,
            ahead: None,
            read_in_segment: 0,
            read_ahead_frames: 0,
            started: false,
            torn_newest: None,
        }
    }

    /// A cursor at `from`, whose frame recovery found at `offset` in the
    /// segment based at `base`: it starts there instead of walking the
    /// segment from its first frame.
    pub(crate) fn cursor_at(&self, from: Lsn, base: Lsn, offset: u64) -> Cursor {
        Cursor {
            hint: Some((base, offset)),
            ..self.cursor(from)
        }
    }
}

/// Whether the bytes of a segment whose header does not check are those
/// of a creation a crash tore: nothing but zeros after the header (no
/// frame was ever written into it, so nothing in it was acknowledged).
pub(crate) fn zeros_after_header(buf: &[u8]) -> bool {
    buf.get(SEGMENT_HEADER_BYTES..)
        .is_none_or(|rest| rest.iter().all(|b| *b == 0))
}

/// [`zeros_after_header`] for the segment file at `path`, read a chunk at
/// a time (stops at the first byte that is not zero).
pub(crate) fn is_torn_creation(storage: &dyn Storage, path: &Path) -> Result<bool> {
    let file = storage
        .open(path, OpenMode::Read)
        .map_err(|e| Error::io(path, e))?;
    let mut chunk = vec![0u8; READ_CHUNK_BYTES];
    let mut at = SEGMENT_HEADER_BYTES as u64;
    loop {
        let n = read_up_to(file.as_ref(), &mut chunk, at).map_err(|e| Error::io(path, e))?;
        if chunk[..n].iter().any(|b| *b != 0) {
            return Ok(false);
        }
        if n < chunk.len() {
            return Ok(true);
        }
        at += n as u64;
    }
}

/// Where and why a [`Cursor`] stopped at the tail of the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TailStop {
    /// The last segment.
    pub segment: PathBuf,
    /// The byte offset in it where the next frame would start.
    pub offset: u64,
    /// `None` at a clean end (end of file or zero tail); otherwise why the
    /// bytes there are not a valid frame (yet).
    pub invalid: Option<Invalid>,
}

/// A position in the log that yields frames in LSN order; see
/// [`LogReader::cursor`].
pub struct Cursor {
    reader: LogReader,
    next_lsn: Lsn,
    seg: Option<OpenSegment>,
    /// File offset of the next frame in `seg`.
    offset: u64,
    seed: Option<u32>,
    tail: Option<TailStop>,
    /// Where the frame `next_lsn` starts, if known: (segment base, offset).
    hint: Option<(Lsn, u64)>,
    /// The read-ahead of a long scan through `seg`, once started.
    ahead: Option<ReadAhead>,
    /// Frames read from `seg` without read-ahead.
    read_in_segment: u32,
    /// Frames handed out from a read-ahead, since the cursor was made.
    read_ahead_frames: u64,
    /// The cursor has entered a segment: from now on, frames missing
    /// before the log's first segment were removed under it.
    started: bool,
    /// The newest segment, found a torn creation (zeros after a header
    /// that does not check): not read again while its header stays bad.
    torn_newest: Option<PathBuf>,
}

/// Frames a cursor reads from one segment by itself before it starts a
/// read-ahead: short reads (a `tail`, a watch catching up, a small dump)
/// never pay for a thread.
pub const READ_AHEAD_AFTER_FRAMES: u32 = 256;
/// Bytes that must be left in the segment for a read-ahead to start.
pub const READ_AHEAD_MIN_BYTES: u64 = 4 * READ_CHUNK_BYTES as u64;

/// Bytes a cursor reads at a time: big enough that a read costs little per
/// frame, small enough that a cursor's memory stays bounded whatever the
/// segment size (a frame larger than this gets a buffer of its size).
const READ_CHUNK_BYTES: usize = 1 << 18;

/// A segment being read through a window of at most one chunk (or one
/// frame, if larger).
pub(crate) struct OpenSegment {
    base: Lsn,
    path: PathBuf,
    file: Arc<dyn crate::storage::StorageFile>,
    /// Allocated once; only `buf[..filled]` holds file bytes.
    pub(crate) buf: AlignedVec<16>,
    /// File offset of `buf[0]`; a multiple of 8.
    buf_offset: u64,
    filled: usize,
}

impl OpenSegment {
    pub(crate) fn open(storage: &dyn Storage, path: &Path, base: Lsn) -> Result<OpenSegment> {
        let file = storage
            .open(path, OpenMode::Read)
            .map_err(|e| Error::io(path, e))?;
        Ok(OpenSegment {
            base,
            path: path.to_path_buf(),
            file,
            buf: AlignedVec::new(),
            buf_offset: 0,
            filled: 0,
        })
    }

    /// The bytes from file offset `offset` (8-aligned) on, at least `want`
    /// of them unless the file ends first. Reads when the window does not
    /// hold them.
    pub(crate) fn window(&mut self, offset: u64, want: usize) -> Result<(usize, usize)> {
        debug_assert!(offset.is_multiple_of(8));
        let end = self.buf_offset + self.filled as u64;
        if offset < self.buf_offset || offset + want as u64 > end {
            let size = want.max(READ_CHUNK_BYTES);
            if self.buf.len() < size {
                self.buf.resize(size, 0);
            }
            let n = read_up_to(self.file.as_ref(), &mut self.buf[..size], offset)
                .map_err(|e| Error::io(&self.path, e))?;
            self.buf_offset = offset;
            self.filled = n;
        }
        let start = usize::try_from(offset - self.buf_offset).expect("inside the window");
        Ok((start, self.filled))
    }

    /// Forgets the window, so that the next read sees bytes written since.
    fn invalidate(&mut self) {
        self.filled = 0;
    }

    /// Drops the file's clean cached pages from the page holding `offset`
    /// on ([`crate::storage::StorageFile::forget_cached`]), and the window:
    /// later reads come from the disk. Advice: a file system that does not
    /// take it is no reason to fail.
    pub(crate) fn forget_cached_from(&mut self, offset: u64) {
        // `posix_fadvise` leaves a partly covered first page cached.
        const PAGE_BYTES: u64 = 4096;
        let _ = self
            .file
            .forget_cached(offset / PAGE_BYTES * PAGE_BYTES, None);
        self.invalidate();
    }

    /// Decodes the frame at `offset`, reading as much as it needs: one
    /// window lookup in the common case, a second read only for a frame that
    /// runs past the window.
    pub(crate) fn decode_at(
        &mut self,
        offset: u64,
        seed: u32,
        expected: Lsn,
    ) -> Result<(usize, Decoded)> {
        let (start, end) = self.window(offset, FRAME_HEADER_BYTES)?;
        let decoded = decode_frame(&self.buf[..end], start, seed, Some(expected));
        if decoded != Decoded::Invalid(Invalid::Truncated) {
            return Ok((start, decoded));
        }
        let Some(len) = claimed_frame_len(&self.buf[start..end]) else {
            return Ok((start, decoded));
        };
        // A frame the file does not hold (yet) is truncated, whatever its
        // length field says: a damaged one must not make the window grow
        // to the format's 1 GiB ceiling before the read comes up short.
        let file_len = self.file.len().map_err(|e| Error::io(&self.path, e))?;
        if offset + len as u64 > file_len {
            return Ok((start, decoded));
        }
        let (start, end) = self.window(offset, len)?;
        Ok((
            start,
            decode_frame(&self.buf[..end], start, seed, Some(expected)),
        ))
    }
}

/// One frame: one atomically written batch of events.
#[derive(Clone, Copy, Debug)]
pub struct FrameView<'a> {
    lsn: Lsn,
    durable_lsn: Lsn,
    segment: &'a Path,
    offset: u64,
    payload: &'a [u8],
}

impl<'a> FrameView<'a> {
    /// The batch's LSN.
    pub fn lsn(&self) -> Lsn {
        self.lsn
    }

    /// The highest LSN known durable when this frame was written.
    pub fn durable_lsn(&self) -> Lsn {
        self.durable_lsn
    }

    /// The segment file holding the frame.
    pub fn segment(&self) -> &'a Path {
        self.segment
    }

    /// The frame's byte offset in its segment.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The payload's length in bytes.
    pub fn payload_len(&self) -> usize {
        self.payload.len()
    }

    /// The payload's bytes as stored: the archived batch, its checksum
    /// verified but its structure not yet validated (see
    /// [`FrameView::events`]).
    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }

    /// Validates the payload and returns the archived batch, read in place.
    ///
    /// Values are as stored: a value whose `codec` is
    /// [`crate::Codec::Zstd`] is compressed ([`crate::Codec::decode`]
    /// restores it).
    ///
    /// # Errors
    ///
    /// [`Error::Corruption`] if the payload is not a valid batch.
    pub fn events(&self) -> Result<&'a ArchivedBatch> {
        access_batch(self.payload).map_err(|why| self.corrupt(why))
    }

    /// Validates and decodes the payload into owned events, every value as
    /// it was written (a compressed value is restored: its codec reads
    /// [`crate::Codec::Raw`]).
    ///
    /// # Errors
    ///
    /// [`Error::Corruption`] if the payload is not a valid batch, or a
    /// compressed value in it does not decompress.
    pub fn decode(&self) -> Result<Vec<Event>> {
        let mut events = self.decode_stored()?;
        crate::event::decompress_values(&mut events).map_err(|why| self.corrupt(why))?;
        Ok(events)
    }

    /// As [`FrameView::decode`], with values as stored (compressed ones
    /// stay so): what the views apply.
    pub(crate) fn decode_stored(&self) -> Result<Vec<Event>> {
        decode_batch(self.payload).map_err(|why| self.corrupt(why))
    }

    fn corrupt(&self, why: String) -> Error {
        Error::Corruption {
            segment: self.segment.to_path_buf(),
            offset: self.offset,
            expected_lsn: self.lsn,
            reason: Invalid::Payload(why),
        }
    }
}

impl Cursor {
    /// How many of the frames this cursor handed out a read-ahead helper
    /// read and checked (0 on a short scan, or where the storage does not
    /// read ahead).
    pub fn frames_read_ahead(&self) -> u64 {
        self.read_ahead_frames
    }

    /// The LSN the next frame will have.
    pub fn next_lsn(&self) -> Lsn {
        self.next_lsn
    }

    /// Where the last call to [`Cursor::next_frame`] that returned `None`
    /// stopped.
    pub fn tail(&self) -> Option<&TailStop> {
        self.tail.as_ref()
    }

    /// The next frame, or `None` at the current end of the log. Calling again
    /// after `None` returns frames written since.
    ///
    /// # Errors
    ///
    /// [`Error::Corruption`] for an invalid frame or header before the last
    /// segment, [`Error::Gap`] if segments are missing, [`Error::Removed`]
    /// if retention removed the frames this cursor was to read next (after
    /// it started reading), I/O errors.
    pub fn next_frame(&mut self) -> Result<Option<FrameView<'_>>> {
        // A long scan gets most of its frames from the read-ahead: the
        // short way, without `advance`'s stack frame.
        if self.ahead.is_some()
            && let Some((frame_offset, info)) = self.next_ahead()
        {
            let seg = self
                .seg
                .as_ref()
                .expect("a read-ahead runs on an open segment");
            let ahead = self.ahead.as_ref().expect("next_ahead returned a frame");
            return Ok(Some(FrameView {
                lsn: info.lsn,
                durable_lsn: info.durable_lsn,
                segment: &seg.path,
                offset: frame_offset,
                payload: &ahead.buf()[info.payload],
            }));
        }
        match self.advance()? {
            None => Ok(None),
            Some((frame_offset, info)) => {
                let seg = self
                    .seg
                    .as_ref()
                    .expect("advance returned a frame from an open segment");
                let buf: &[u8] = match &self.ahead {
                    Some(ahead) => ahead.buf(),
                    None => &seg.buf,
                };
                Ok(Some(FrameView {
                    lsn: info.lsn,
                    durable_lsn: info.durable_lsn,
                    segment: &seg.path,
                    offset: frame_offset,
                    payload: &buf[info.payload],
                }))
            }
        }
    }

    /// Bytes of the plain cursor's window buffer (for tests of its bound).
    #[cfg(test)]
    pub(crate) fn window_bytes(&self) -> usize {
        self.seg.as_ref().map_or(0, |seg| seg.buf.len())
    }

    /// The next frame from the read-ahead, if one is running; stops it
    /// once it has nothing more (the cursor then reads on by itself from
    /// the end of the last frame it handed out).
    fn next_ahead(&mut self) -> Option<(u64, FrameInfo)> {
        let ahead = self.ahead.as_mut()?;
        match ahead.next_frame() {
            Some((frame_offset, info)) => {
                debug_assert_eq!(
                    frame_offset, self.offset,
                    "read-ahead frames are contiguous"
                );
                debug_assert_eq!(info.lsn, self.next_lsn, "read-ahead LSNs are consecutive");
                self.offset =
                    frame_offset + (info.next - (info.payload.start - FRAME_HEADER_BYTES)) as u64;
                self.next_lsn = self.next_lsn.next();
                self.tail = None;
                self.read_ahead_frames += 1;
                Some((frame_offset, info))
            }
            None => {
                self.ahead = None;
                None
            }
        }
    }

    /// Starts a read-ahead after enough frames of a segment with enough
    /// left in it. Called before the cursor reads its next frame, so the
    /// frame last handed out stays where it is.
    fn maybe_read_ahead(&mut self) {
        if !self.reader.read_ahead
            || self.ahead.is_some()
            || self.read_in_segment != READ_AHEAD_AFTER_FRAMES
        {
            return;
        }
        // Once per segment, whether it starts or not.
        self.read_in_segment += 1;
        let (Some(seg), Some(seed)) = (&self.seg, self.seed) else {
            return;
        };
        let Ok(len) = seg.file.len() else {
            return;
        };
        if len.saturating_sub(self.offset) >= READ_AHEAD_MIN_BYTES {
            self.ahead = ReadAhead::start(
                Arc::clone(&seg.file),
                seed,
                self.offset,
                self.next_lsn,
                READ_CHUNK_BYTES,
            );
        }
    }

    /// Moves to the next frame; returns its file offset and where its
    /// payload is in the open segment's buffer.
    fn advance(&mut self) -> Result<Option<(u64, FrameInfo)>> {
        self.maybe_read_ahead();
        if let Some(found) = self.next_ahead() {
            return Ok(Some(found));
        }
        let mut reread = false;
        let mut reread_after_listing = false;
        loop {
            if self.seg.is_none() && !self.enter_segment()? {
                return Ok(None);
            }
            let seed = self
                .seed
                .expect("the seed is set when a segment is entered");
            let offset = self.offset;
            let seg = self.seg.as_mut().expect("entered a segment above");
            let (start, decoded) = seg.decode_at(offset, seed, self.next_lsn)?;
            let stop = match decoded {
                Decoded::Frame(info) => {
                    self.offset = offset + (info.next - start) as u64;
                    self.next_lsn = self.next_lsn.next();
                    self.tail = None;
                    self.read_in_segment = self.read_in_segment.saturating_add(1);
                    return Ok(Some((offset, info)));
                }
                Decoded::End => None,
                Decoded::Invalid(reason) => Some(reason),
            };
            // The end of what was read: newer bytes may have been written
            // since, so read this segment again once before moving on.
            if !reread {
                reread = true;
                seg.invalidate();
                continue;
            }
            let (seg_base, seg_path) = (seg.base, seg.path.clone());
            let segments = self.reader.segments()?;
            let later = segments.iter().find(|(base, _)| *base > seg_base).cloned();
            let log_first = segments.first().map(|(base, _)| *base);
            match later {
                Some((base, _)) if base == self.next_lsn => {
                    // The writer syncs a segment before starting the next, so
                    // this one is complete; move on.
                    self.seg = None;
                    reread = false;
                }
                // The listing came after the last read: the writer may have
                // finished this segment and started the next in between.
                // Read this segment once more before judging it.
                Some(_) if !reread_after_listing => {
                    reread_after_listing = true;
                    seg.invalidate();
                }
                // This segment is gone from the listing too, and the log
                // now starts past it: retention (which removes oldest
                // first) removed the next one while this one was read.
                Some((base, _)) if stop.is_none() && log_first.is_some_and(|f| f > seg_base) => {
                    return Err(Error::Removed {
                        expected: self.next_lsn,
                        first: log_first.unwrap_or(base),
                    });
                }
                Some((base, path)) => {
                    return Err(match stop {
                        Some(reason) => Error::Corruption {
                            segment: seg_path,
                            offset,
                            expected_lsn: self.next_lsn,
                            reason,
                        },
                        None => Error::Gap {
                            segment: path,
                            expected: self.next_lsn,
                            found: base,
                        },
                    });
                }
                None => {
                    self.tail = Some(TailStop {
                        segment: seg_path,
                        offset,
                        invalid: stop,
                    });
                    return Ok(None);
                }
            }
        }
    }

    /// Opens the segment that holds `next_lsn` and skips to it. Returns false
    /// if the log has no such segment yet.
    fn enter_segment(&mut self) -> Result<bool> {
        let mut listed_again = false;
        let (segments, base, path, mut seg) = loop {
            let segments = self.reader.segments()?;
            let Some(first) = segments.first() else {
                return Ok(false);
            };
            if self.next_lsn < first.0 {
                if self.started {
                    return Err(Error::Removed {
                        expected: self.next_lsn,
                        first: first.0,
                    });
                }
                // A cursor from before the log's first LSN: older frames
                // are gone (retention); start at the oldest kept.
                self.next_lsn = first.0;
            }
            let Some((base, path)) = segments
                .iter()
                .rev()
                .find(|(base, _)| *base <= self.next_lsn)
                .cloned()
            else {
                return Ok(false);
            };
            match OpenSegment::open(self.reader.storage.as_ref(), &path, base) {
                Ok(seg) => break (segments, base, path, seg),
                // Removed (by retention) between the listing and the open:
                // the next listing tells what is left.
                Err(Error::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound && !listed_again =>
                {
                    listed_again = true;
                }
                Err(e) => return Err(e),
            }
        };
        let (start, end) = seg.window(0, SEGMENT_HEADER_BYTES)?;
        if end - start < SEGMENT_HEADER_BYTES && segments.last().map(|s| s.0) == Some(base) {
            // A segment being created: its header is not written yet.
            return Ok(false);
        }
        let header = match check_header(&path, base, &seg.buf[start..end]) {
            Ok(header) => header,
            // A crashed writer's newest segment whose creation was torn:
            // nothing in it was ever acknowledged, and the next open
            // removes it. Not there yet, as for a reader of a live log.
            Err(Error::Corruption { .. })
                if segments.last().map(|s| s.0) == Some(base)
                    && (self.torn_newest.as_ref() == Some(&path)
                        || is_torn_creation(self.reader.storage.as_ref(), &path)?) =>
            {
                // No frame follows a header that is still bad: a poll need
                // not read the (preallocated) file again.
                self.torn_newest = Some(path);
                return Ok(false);
            }
            Err(e) => return Err(e),
        };
        match self.seed {
            None => self.seed = Some(crc_seed(header.log_id)),
            Some(seed) if seed != crc_seed(header.log_id) => {
                return Err(Error::Corruption {
                    segment: path,
                    offset: 0,
                    expected_lsn: base,
                    reason: Invalid::LogIdMismatch,
                });
            }
            Some(_) => {}
        }
        self.seg = Some(seg);
        self.started = true;
        self.ahead = None;
        self.read_in_segment = 0;
        self.offset = SEGMENT_HEADER_BYTES as u64;
        // Skip the frames before `next_lsn` in this segment by their length
        // and LSN fields: the caller does not read them, so their CRC and
        // payload need no checking (an open replays from the middle of the
        // last segment this way). A header that does not fit the walk (a
        // damaged length, the tail) is left to `advance`, which verifies.
        if let Some((hint_base, offset)) = self.hint.take()
            && hint_base == base
        {
            // Recovery walked to this frame already.
            self.offset = offset;
            return Ok(true);
        }
        let target = self.next_lsn;
        self.next_lsn = base;
        while self.next_lsn < target {
            if self.skip_unread_frame()? {
                continue;
            }
            if self.advance()?.is_none() {
                break;
            }
        }
        Ok(self.seg.is_some())
    }

    /// Steps over the frame at the cursor by its header's length if its
    /// header is whole and names the expected LSN. Returns whether it did.
    fn skip_unread_frame(&mut self) -> Result<bool> {
        let Some(seg) = self.seg.as_mut() else {
            return Ok(false);
        };
        let (start, end) = seg.window(self.offset, FRAME_HEADER_BYTES)?;
        let Some(len) = peek_frame_len(&seg.buf[start..end], self.next_lsn) else {
            return Ok(false);
        };
        self.offset += len as u64;
        self.next_lsn = self.next_lsn.next();
        Ok(true)
    }
}
