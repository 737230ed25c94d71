//! One owner per state directory: the `LOCK` file.
//!
//! The engine takes an exclusive lock on `STATE_DIR/LOCK` (through the
//! storage layer: `flock` on real files) and writes its pid into it, so that a
//! second open can say who holds the directory: this process (share the open
//! engine instead) or another one (and which pid). The lock is released when
//! the engine is dropped, or when its process dies.

use std::io;
use std::path::Path;

use crate::error::{Error, Result};
use crate::storage::{LockGuard, OpenMode, Storage, read_to_vec};

/// The lock file's name inside a state directory.
pub const LOCK_FILE_NAME: &str = "LOCK";

/// Takes the lock of the state directory `dir`.
pub(crate) fn lock_dir(storage: &dyn Storage, dir: &Path) -> Result<LockGuard> {
    let mut tries = 0;
    loop {
        match try_lock_dir(storage, dir) {
            // Between `fork` and `exec`, a child that another thread of this
            // process is spawning holds a copy of every descriptor, the lock
            // file's included, and with it the `flock` of an engine this
            // process has just dropped. The child lets go at `exec`: try
            // again for a moment before saying the directory is open here.
            Err(Error::AlreadyOpenInThisProcess { .. }) if tries < IN_PROCESS_RETRIES => {
                tries += 1;
                std::thread::sleep(IN_PROCESS_RETRY_WAIT);
            }
            result => return result,
        }
    }
}

/// How often, and how long apart, a lock held by this very process is tried
/// again (100 ms in all).
const IN_PROCESS_RETRIES: u32 = 20;
const IN_PROCESS_RETRY_WAIT: std::time::Duration = std::time::Duration::from_millis(5);

fn try_lock_dir(storage: &dyn Storage, dir: &Path) -> Result<LockGuard> {
    let path = dir.join(LOCK_FILE_NAME);
    match storage.lock(&path) {
        Ok(guard) => {
            let file = storage
                .open(&path, OpenMode::ReadWrite)
                .map_err(|e| Error::io(&path, e))?;
            let note = format!("pid {}\n", std::process::id());
            file.set_len(0).map_err(|e| Error::io(&path, e))?;
            file.write_all_at(note.as_bytes(), 0)
                .map_err(|e| Error::io(&path, e))?;
            Ok(guard)
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            let holder = storage
                .open(&path, OpenMode::Read)
                .and_then(|f| read_to_vec(f.as_ref()))
                .map(|bytes| String::from_utf8_lossy(&bytes).trim().to_string())
                .unwrap_or_default();
            if holder == format!("pid {}", std::process::id()) {
                Err(Error::AlreadyOpenInThisProcess {
                    path: dir.to_path_buf(),
                })
            } else {
                Err(Error::LockedByOtherProcess {
                    path: dir.to_path_buf(),
                    holder: if holder.is_empty() {
                        "unknown holder".to_string()
                    } else {
                        holder
                    },
                })
            }
        }
        Err(e) => Err(Error::io(&path, e)),
    }
}
