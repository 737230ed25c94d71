//! The memtable: every applied event's effect, in memory, versioned by LSN.
//!
//! A lock-free ordered map (crossbeam's skiplist) from *versioned keys* to
//! values, plus a list of range tombstones. A versioned key is the view key
//! followed by 12 bytes of version, inverted so that newer versions sort
//! first: `u64::MAX - lsn` and `u32::MAX - index` (the event's index within
//! its batch), both big-endian. View keys are prefix-free (each table's keys
//! have a fixed number of length-prefixed components, see `key.rs`), so the
//! versions of one key are contiguous and newest first.
//!
//! Nothing is ever overwritten: the single applier inserts new versions, and
//! a reader asks for the newest version at or below the LSN it reads at.
//! That is how readers never block the writer (no lock), and how a batch
//! becomes visible all at once: the applier inserts the whole group, then
//! publishes its LSN; readers read at the published LSN.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use crossbeam_skiplist::SkipMap;

/// When an event was applied: its batch's LSN and its index in the batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Version {
    pub lsn: u64,
    pub index: u32,
}

impl Version {
    /// Older than anything in any memtable: what a value read from redb is.
    pub const BASE: Version = Version { lsn: 0, index: 0 };

    fn suffix(self) -> [u8; 12] {
        let mut out = [0u8; 12];
        out[..8].copy_from_slice(&(u64::MAX - self.lsn).to_be_bytes());
        out[8..].copy_from_slice(&(u32::MAX - self.index).to_be_bytes());
        out
    }

    fn from_suffix(suffix: &[u8]) -> Version {
        let lsn = u64::from_be_bytes(suffix[..8].try_into().expect("8 bytes"));
        let index = u32::from_be_bytes(suffix[8..12].try_into().expect("4 bytes"));
        Version {
            lsn: u64::MAX - lsn,
            index: u32::MAX - index,
        }
    }
}

const SUFFIX_BYTES: usize = 12;

/// A deleted range of keys, `[start, end)`, from one event.
#[derive(Clone, Debug)]
pub(crate) struct RangeTombstone {
    pub version: Version,
    pub start: Vec<u8>,
    pub end: Vec<u8>,
}

impl RangeTombstone {
    /// Whether this tombstone hides `key`'s value written at `written`, for
    /// a reader at `at_lsn`.
    pub fn masks(&self, key: &[u8], written: Version, at_lsn: u64) -> bool {
        self.version.lsn <= at_lsn
            && written < self.version
            && self.start.as_slice() <= key
            && key < self.end.as_slice()
    }
}

/// One memtable: active (taking new versions) or frozen (being snapshotted).
#[derive(Debug, Default)]
pub(crate) struct Memtable {
    entries: SkipMap<Vec<u8>, Option<Bytes>>,
    /// Range tombstones, keyed by version and a counter within the version.
    ranges: SkipMap<(Version, u32), RangeTombstone>,
    /// Approximate bytes held: keys, values and per-entry overhead.
    bytes: AtomicU64,
    /// Events applied.
    events: AtomicU64,
}

/// Rough per-entry cost of the skiplist's nodes and the `Bytes` handle.
const ENTRY_OVERHEAD_BYTES: u64 = 96;

impl Memtable {
    /// Inserts a value (`Some`) or a tombstone (`None`) for `key` at `version`.
    pub fn insert(&self, key: &[u8], version: Version, value: Option<Bytes>) {
        let mut vkey = Vec::with_capacity(key.len() + SUFFIX_BYTES);
        vkey.extend_from_slice(key);
        vkey.extend_from_slice(&version.suffix());
        let size = vkey.len() as u64 + value.as_ref().map_or(0, |v| v.len() as u64);
        self.entries.insert(vkey, value);
        self.bytes
            .fetch_add(size + ENTRY_OVERHEAD_BYTES, Ordering::Relaxed);
    }

    /// Records a range tombstone over `[start, end)` at `version`.
    pub fn delete_range(&self, start: Vec<u8>, end: Vec<u8>, version: Version) {
        let n = self
            .ranges
            .range((version, 0)..=(version, u32::MAX))
            .count();
        let size = (start.len() + end.len()) as u64 + ENTRY_OVERHEAD_BYTES;
        let n = u32::try_from(n).expect("an event adds at most one range per table");
        self.ranges.insert(
            (version, n),
            RangeTombstone {
                version,
                start,
                end,
            },
        );
        self.bytes.fetch_add(size, Ordering::Relaxed);
    }

    /// Counts one applied event.
    pub fn count_event(&self) {
        self.events.fetch_add(1, Ordering::Relaxed);
    }

    /// The newest version of `key` at or below `at_lsn`: `Some((version,
    /// value))`, where a `None` value is a tombstone; `None` if this
    /// memtable has no version of `key` visible at `at_lsn`.
    pub fn get(&self, key: &[u8], at_lsn: u64) -> Option<(Version, Option<Bytes>)> {
        // Most keys fit a stack buffer: no allocation on the read path.
        let suffix = Version {
            lsn: at_lsn,
            index: u32::MAX,
        }
        .suffix();
        let len = key.len() + SUFFIX_BYTES;
        let mut stack = [0u8; 256];
        let mut heap = Vec::new();
        let probe: &mut [u8] = if len <= stack.len() {
            &mut stack[..len]
        } else {
            heap.resize(len, 0);
            &mut heap
        };
        probe[..key.len()].copy_from_slice(key);
        probe[key.len()..].copy_from_slice(&suffix);
        let entry = self
            .entries
            .lower_bound(std::ops::Bound::Included(&*probe))?;
        let vkey = entry.key();
        if vkey.len() != key.len() + SUFFIX_BYTES || !vkey.starts_with(key) {
            return None;
        }
        Some((
            Version::from_suffix(&vkey[key.len()..]),
            entry.value().clone(),
        ))
    }

    /// Every key in `[start, end)` with its newest version at or below
    /// `at_lsn`, in key order.
    pub fn scan(
        &self,
        start: &[u8],
        end: &[u8],
        at_lsn: u64,
    ) -> Vec<(Vec<u8>, Version, Option<Bytes>)> {
        let mut out: Vec<(Vec<u8>, Version, Option<Bytes>)> = Vec::new();
        let range = self.entries.range::<[u8], _>((
            std::ops::Bound::Included(start),
            std::ops::Bound::Excluded(end),
        ));
        for entry in range {
            let vkey = entry.key();
            let (key, suffix) = vkey.split_at(vkey.len() - SUFFIX_BYTES);
            let version = Version::from_suffix(suffix);
            if version.lsn > at_lsn {
                continue;
            }
            if out.last().is_some_and(|(k, _, _)| k.as_slice() == key) {
                continue; // An older version of a key already taken.
            }
            out.push((key.to_vec(), version, entry.value().clone()));
        }
        out
    }

    /// The range tombstones visible at `at_lsn`.
    pub fn ranges(&self, at_lsn: u64) -> Vec<RangeTombstone> {
        self.ranges
            .iter()
            .map(|e| e.value().clone())
            .filter(|rt| rt.version.lsn <= at_lsn)
            .collect()
    }

    /// Whether any range tombstone here hides `key` written at `written`.
    pub fn masks(&self, key: &[u8], written: Version, at_lsn: u64) -> bool {
        // The common case, checked without pinning an epoch.
        if self.ranges.is_empty() {
            return false;
        }
        self.ranges
            .iter()
            .any(|e| e.value().masks(key, written, at_lsn))
    }

    /// Every key's newest version (all LSNs), for a snapshot: in key order.
    pub fn latest(&self) -> Vec<(Vec<u8>, Version, Option<Bytes>)> {
        let mut out: Vec<(Vec<u8>, Version, Option<Bytes>)> = Vec::new();
        for entry in self.entries.iter() {
            let vkey = entry.key();
            let (key, suffix) = vkey.split_at(vkey.len() - SUFFIX_BYTES);
            if out.last().is_some_and(|(k, _, _)| k.as_slice() == key) {
                continue;
            }
            out.push((
                key.to_vec(),
                Version::from_suffix(suffix),
                entry.value().clone(),
            ));
        }
        out
    }

    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    pub fn events(&self) -> u64 {
        self.events.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.ranges.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(lsn: u64, index: u32) -> Version {
        Version { lsn, index }
    }

    #[test]
    fn reads_the_newest_version_at_or_below_the_lsn() {
        let m = Memtable::default();
        m.insert(b"\x01k", v(1, 0), Some(Bytes::from_static(b"a")));
        m.insert(b"\x01k", v(3, 0), Some(Bytes::from_static(b"b")));
        m.insert(b"\x01k", v(3, 1), None);
        m.insert(b"\x01m", v(2, 0), Some(Bytes::from_static(b"other")));
        assert_eq!(m.get(b"\x01k", 0), None);
        assert_eq!(m.get(b"\x01k", 1).unwrap().1.as_deref(), Some(&b"a"[..]));
        assert_eq!(m.get(b"\x01k", 2).unwrap().1.as_deref(), Some(&b"a"[..]));
        assert_eq!(m.get(b"\x01k", 3).unwrap(), (v(3, 1), None));
        assert_eq!(m.get(b"\x01", 9), None);
        let scan = m.scan(b"\x01", b"\x02", 2);
        assert_eq!(scan.len(), 2);
        assert_eq!(scan[0].1, v(1, 0));
    }

    #[test]
    fn range_tombstones_mask_only_older_versions_they_cover() {
        let m = Memtable::default();
        m.delete_range(b"\x01a".to_vec(), b"\x01c".to_vec(), v(5, 2));
        assert!(m.masks(b"\x01b", v(5, 1), 5));
        assert!(!m.masks(b"\x01b", v(5, 1), 4), "not visible yet");
        assert!(!m.masks(b"\x01b", v(5, 3), 5), "written after");
        assert!(!m.masks(b"\x01c", Version::BASE, 9), "end is exclusive");
        assert!(m.masks(b"\x01a", Version::BASE, 9));
    }
}
