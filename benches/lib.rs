//! Shared helpers for the benchmarks: events of a chosen size, and the
//! machine's fsync floor (a bare write + `fdatasync` loop, no engine).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;

use waymark_engine::{AttemptScope, Event, EventBody, RunScope, TaskScope};

/// One `Put` event whose value is `value_bytes` long.
pub fn put_event(i: u64, value_bytes: usize) -> Event {
    Event {
        ts_micros: 1_700_000_000_000_000 + i as i64,
        body: EventBody::Put {
            codec: waymark_engine::Codec::Raw,
            attempt: std::sync::Arc::new(AttemptScope {
                task: TaskScope {
                    run: RunScope {
                        tenant: "acme".into(),
                        dag: "docs".into(),
                        run: "r1".into(),
                    },
                    task: "ocr".into(),
                },
                try_number: 1,
            }),
            key: format!("k{}", i % 1000),
            value: vec![(i % 251) as u8; value_bytes],
            meta: Vec::new(),
        },
    }
}

/// How a floor file is laid out before the loop writes into it.
#[derive(Clone, Copy, Debug)]
pub enum FloorFile {
    /// Each write extends the file.
    Growing,
    /// `set_len` to the full size first (a sparse file: blocks are
    /// allocated on first write).
    Sparse,
    /// Zeros written and synced first (blocks allocated up front).
    Zeroed,
}

/// A file for the fsync floor loop, `bytes` long (unless growing).
pub struct Floor {
    file: File,
    offset: u64,
    bytes: u64,
}

impl Floor {
    /// Creates the file at `path` laid out as `kind`.
    pub fn new(path: &Path, kind: FloorFile, bytes: u64) -> std::io::Result<Floor> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        match kind {
            FloorFile::Growing => {}
            FloorFile::Sparse => file.set_len(bytes)?,
            FloorFile::Zeroed => {
                let chunk = vec![0u8; 1 << 20];
                for _ in 0..bytes.div_ceil(chunk.len() as u64) {
                    file.write_all(&chunk)?;
                }
                file.sync_all()?;
            }
        }
        Ok(Floor {
            file,
            offset: 0,
            bytes,
        })
    }

    /// One 128-byte write at the next offset, then `fdatasync`. Returns false
    /// when the file is used up.
    pub fn write_sync(&mut self, record: &[u8; 128]) -> std::io::Result<bool> {
        if self.offset + 128 > self.bytes {
            return Ok(false);
        }
        self.file.write_all_at(record, self.offset)?;
        self.file.sync_data()?;
        self.offset += 128;
        Ok(true)
    }
}

/// The number in environment variable `name`, else `default`.
pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The median of `v` (the mean of the middle two for an even count).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Runs `op(i)` from `threads` threads for `span`, each taking the next `i`
/// from one counter; returns microseconds per completed `op`.
pub fn run_for(threads: usize, span: std::time::Duration, op: &(dyn Fn(u64) + Sync)) -> f64 {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let (next, done, stop) = (AtomicU64::new(0), AtomicU64::new(0), AtomicBool::new(false));
    let start = std::time::Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    op(next.fetch_add(1, Ordering::Relaxed));
                    done.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        std::thread::sleep(span);
        stop.store(true, Ordering::Relaxed);
    });
    start.elapsed().as_secs_f64() * 1e6 / done.load(Ordering::Relaxed) as f64
}
