//! Read-ahead for long sequential scans of a segment.
//!
//! A cursor that has read a while through a segment with plenty left in it
//! hands the reading to a helper thread: the helper reads the next windows
//! and checks each frame in them (length, CRC seeded with the log's id, LSN
//! in sequence: [`decode_frame`], the very check the cursor makes itself),
//! while the cursor's caller validates and uses the frames of the window
//! before. On a machine with a core to spare the copy out of the page cache
//! and the CRC (about 40% of a replay's time, BENCHMARKS.md) then overlap
//! the rkyv validation and the caller's own work; on a cold cache the disk
//! reads overlap too.
//!
//! The helper only ever hands over whole, valid frames. At the first bytes
//! that are not one (the end of the data, a frame still being written, a
//! torn or corrupt frame, a failed read) it stops, and the cursor goes on
//! from there by itself: judging the tail and naming corruption stay in one
//! place, `Cursor::advance`.

use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use rkyv::util::AlignedVec;

use super::Lsn;
use super::frame::{Decoded, FRAME_HEADER_BYTES, FrameInfo, claimed_frame_len, decode_frame};
use crate::storage::{StorageFile, read_up_to};

/// Windows the helper may read ahead of the cursor: enough to keep it busy
/// while the cursor works through one, few enough to bound memory.
const WINDOWS_AHEAD: usize = 2;

/// One window of a segment and the frames the helper verified in it.
pub(crate) struct Window {
    buf: AlignedVec<16>,
    /// File offset of `buf[0]`: a frame boundary.
    buf_offset: u64,
    /// The whole frames in `buf`, in order; their ranges index `buf`.
    frames: Vec<FrameInfo>,
}

/// The cursor's end of a read-ahead.
pub(crate) struct ReadAhead {
    windows: Receiver<Window>,
    recycle: Sender<Window>,
    current: Option<Window>,
    /// The next frame of `current` to hand out.
    next: usize,
}

impl ReadAhead {
    /// Starts a helper that reads `file` from `offset` (a frame boundary,
    /// where the frame `lsn` starts) in windows of `window_bytes`. `None`
    /// if no thread could be started: the cursor reads by itself.
    pub(crate) fn start(
        file: Arc<dyn StorageFile>,
        seed: u32,
        offset: u64,
        lsn: Lsn,
        window_bytes: usize,
    ) -> Option<ReadAhead> {
        let (tx, windows) = crossbeam_channel::bounded(WINDOWS_AHEAD);
        let (recycle, recycled) = crossbeam_channel::bounded(WINDOWS_AHEAD + 2);
        std::thread::Builder::new()
            .name("waymark-readahead".into())
            .spawn(move || {
                read_windows(
                    file.as_ref(),
                    seed,
                    offset,
                    lsn,
                    window_bytes,
                    &tx,
                    &recycled,
                )
            })
            .ok()?;
        Some(ReadAhead {
            windows,
            recycle,
            current: None,
            next: 0,
        })
    }

    /// The next verified frame: its file offset and where it sits in
    /// [`ReadAhead::buf`]. `None` once the helper has stopped; the cursor
    /// then reads on from the end of the last frame handed out.
    pub(crate) fn next_frame(&mut self) -> Option<(u64, FrameInfo)> {
        loop {
            if let Some(window) = &self.current
                && let Some(info) = window.frames.get(self.next)
            {
                self.next += 1;
                let start = info.payload.start - FRAME_HEADER_BYTES;
                return Some((window.buf_offset + start as u64, info.clone()));
            }
            if let Some(done) = self.current.take() {
                // The helper reuses the buffer; if it is gone, so is this.
                let _ = self.recycle.try_send(done);
            }
            self.current = Some(self.windows.recv().ok()?);
            self.next = 0;
        }
    }

    /// The bytes of the window the last frame came from.
    pub(crate) fn buf(&self) -> &[u8] {
        self.current.as_ref().map_or(&[], |w| &w.buf)
    }
}

/// The helper: reads window after window from `offset` and sends the whole
/// valid frames of each, until the bytes stop being frames or the cursor
/// is gone.
fn read_windows(
    file: &dyn StorageFile,
    seed: u32,
    mut offset: u64,
    mut lsn: Lsn,
    window_bytes: usize,
    tx: &Sender<Window>,
    recycled: &Receiver<Window>,
) {
    let mut size = window_bytes;
    loop {
        let mut window = match recycled.try_recv() {
            Ok(window) => window,
            Err(TryRecvError::Empty) => Window {
                buf: AlignedVec::new(),
                buf_offset: 0,
                frames: Vec::new(),
            },
            Err(TryRecvError::Disconnected) => return,
        };
        if window.buf.len() < size {
            window.buf.resize(size, 0);
        }
        let Ok(n) = read_up_to(file, &mut window.buf[..size], offset) else {
            return; // The cursor reads again and reports the error.
        };
        window.frames.clear();
        let mut pos = 0;
        let mut next_lsn = lsn;
        while let Decoded::Frame(info) = decode_frame(&window.buf[..n], pos, seed, Some(next_lsn)) {
            pos = info.next;
            next_lsn = next_lsn.next();
            window.frames.push(info);
        }
        if window.frames.is_empty() {
            // A frame larger than the window gets a buffer of its size;
            // anything else that is not a whole frame ends the read-ahead.
            // The file must hold the whole frame: a damaged length field
            // must not make the helper allocate up to the format's 1 GiB
            // ceiling for nothing.
            let fits = |len: usize| {
                file.len()
                    .is_ok_and(|file_len| offset + len as u64 <= file_len)
            };
            match claimed_frame_len(&window.buf[..n]).filter(|len| *len > size) {
                Some(len) if n == size && fits(len) => {
                    size = len;
                    continue;
                }
                _ => return,
            }
        }
        size = window_bytes;
        window.buf_offset = offset;
        offset += pos as u64;
        lsn = next_lsn;
        if tx.send(window).is_err() {
            return; // The cursor is gone.
        }
    }
}
