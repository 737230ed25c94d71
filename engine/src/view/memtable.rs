//! The memtable: every applied event's effect, in memory, versioned by LSN.
//!
//! A lock-free ordered map (crossbeam's skiplist) from *versioned keys* to
//! values, plus the range tombstones. A versioned key is the view key
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
//!
//! Range tombstones are kept in version order, and those over a scope's
//! prefix (all the views write: a cleared task, a purged or restored run)
//! are indexed by that prefix too, newest first, so that whether one hides
//! a key is a lookup per scope prefix of the key ([`scope_prefix_lens`]),
//! not a pass over every tombstone: a memtable holding the clears of
//! thousands of retries reads as fast as one holding none.

use std::ops::{Bound, ControlFlow};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use crossbeam_skiplist::SkipMap;
use crossbeam_skiplist::map::Entry;

use super::key::{prefix_range, scope_prefix_lens};

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

pub(crate) const SUFFIX_BYTES: usize = 12;

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
    /// The tombstones over a scope's prefix, by prefix and then newest
    /// first: the prefix's length (2 bytes, big-endian), the prefix, the
    /// version's 12-byte suffix. One prefix's tombstones are contiguous:
    /// another prefix of the same length differs in its bytes.
    by_prefix: SkipMap<Vec<u8>, ()>,
    /// Tombstones over a range that is not a scope's prefix (none the
    /// views write; kept correct for any): while there are any, `masks`
    /// checks every tombstone.
    unindexed: AtomicU64,
    /// Approximate bytes held: keys, values and per-entry overhead.
    bytes: AtomicU64,
    /// Events applied.
    events: AtomicU64,
}

/// The length of `start` if `[start, end)` is every key under a scope's
/// prefix (see [`scope_prefix_lens`]).
fn scope_prefix(start: &[u8], end: &[u8]) -> Option<u16> {
    let len = u16::try_from(start.len()).ok()?;
    let whole = scope_prefix_lens(start).any(|l| l == start.len());
    (whole && !start.is_empty() && start[0] < u8::MAX && prefix_range(start).1 == end)
        .then_some(len)
}

/// Most probes (a key and a version) fit this on the stack.
const PROBE_STACK_BYTES: usize = 256;

/// `len` bytes to build a lookup key in: in `stack` when they fit, so the
/// read path does not allocate, else in `heap`.
fn probe_buf<'a>(
    stack: &'a mut [u8; PROBE_STACK_BYTES],
    heap: &'a mut Vec<u8>,
    len: usize,
) -> &'a mut [u8] {
    if len <= stack.len() {
        &mut stack[..len]
    } else {
        heap.resize(len, 0);
        &mut heap[..len]
    }
}

/// Rough per-entry cost of the skiplist's nodes and the `Bytes` handle.
const ENTRY_OVERHEAD_BYTES: u64 = 96;

impl Memtable {
    /// Inserts a value (`Some`) or a tombstone (`None`) for `key` at `version`.
    pub fn insert(&self, key: &[u8], version: Version, value: Option<Bytes>) {
        let mut vkey = Vec::with_capacity(key.len() + SUFFIX_BYTES);
        vkey.extend_from_slice(key);
        self.insert_owned(vkey, version, value);
    }

    /// As [`Memtable::insert`], taking the key: built with
    /// [`SUFFIX_BYTES`] of spare capacity, it becomes the versioned key in
    /// place (no second allocation and copy per set).
    pub fn insert_owned(&self, mut vkey: Vec<u8>, version: Version, value: Option<Bytes>) {
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
        let mut size = (start.len() + end.len()) as u64 + ENTRY_OVERHEAD_BYTES;
        let n = u32::try_from(n).expect("an event adds at most one range per table");
        match scope_prefix(&start, &end) {
            Some(len) => {
                let mut indexed = Vec::with_capacity(2 + start.len() + SUFFIX_BYTES);
                indexed.extend_from_slice(&len.to_be_bytes());
                indexed.extend_from_slice(&start);
                indexed.extend_from_slice(&version.suffix());
                size += indexed.len() as u64 + ENTRY_OVERHEAD_BYTES;
                self.by_prefix.insert(indexed, ());
            }
            None => {
                self.unindexed.fetch_add(1, Ordering::Release);
            }
        }
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
        let (mut stack, mut heap) = ([0u8; PROBE_STACK_BYTES], Vec::new());
        let probe = probe_buf(&mut stack, &mut heap, key.len() + SUFFIX_BYTES);
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
        let mut out = Vec::new();
        let _ = self.visit(
            (Bound::Included(start), Bound::Excluded(end)),
            at_lsn,
            |k, v, value| {
                out.push((k.to_vec(), v, value.cloned()));
                ControlFlow::<()>::Continue(())
            },
        );
        out
    }

    /// Whether `[start, end)` holds a key whose newest version (all LSNs)
    /// is a value that `masked` does not hide. Stops at the first: no key
    /// or value is copied.
    pub fn any_value(
        &self,
        start: &[u8],
        end: &[u8],
        masked: impl Fn(&[u8], Version) -> bool,
    ) -> bool {
        self.visit(
            (Bound::Included(start), Bound::Excluded(end)),
            u64::MAX,
            |key, version, value| {
                if value.is_some() && !masked(key, version) {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            },
        )
        .is_break()
    }

    /// Calls `f` with every key in `range` and its newest version at or
    /// below `at_lsn`, in key order, borrowed from the memtable, until `f`
    /// breaks.
    ///
    /// A key's versions are contiguous, newest first, because no view key
    /// is a prefix of another (each table's keys have a fixed number of
    /// length-prefixed components, `key`): only a longer key could sort
    /// between them.
    fn visit<B>(
        &self,
        range: (Bound<&[u8]>, Bound<&[u8]>),
        at_lsn: u64,
        mut f: impl FnMut(&[u8], Version, Option<&Bytes>) -> ControlFlow<B>,
    ) -> ControlFlow<B> {
        let unversioned = |vkey: &[u8]| vkey.len() - SUFFIX_BYTES;
        let mut last: Option<Entry<'_, Vec<u8>, Option<Bytes>>> = None;
        for entry in self.entries.range::<[u8], _>(range) {
            let vkey = entry.key();
            let (key, suffix) = vkey.split_at(unversioned(vkey));
            let version = Version::from_suffix(suffix);
            if version.lsn > at_lsn {
                continue;
            }
            if last
                .as_ref()
                .is_some_and(|l| &l.key()[..unversioned(l.key())] == key)
            {
                continue; // An older version of a key already taken.
            }
            f(key, version, entry.value().as_ref())?;
            last = Some(entry);
        }
        ControlFlow::Continue(())
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
        if self.unindexed.load(Ordering::Acquire) > 0 {
            return self
                .ranges
                .iter()
                .any(|e| e.value().masks(key, written, at_lsn));
        }
        // Per scope prefix of `key`, its newest tombstone visible at
        // `at_lsn`: it hides `key` if it came after `written` (an older
        // one of the same prefix could only have come earlier still).
        let suffix = Version {
            lsn: at_lsn,
            index: u32::MAX,
        }
        .suffix();
        let (mut stack, mut heap) = ([0u8; PROBE_STACK_BYTES], Vec::new());
        scope_prefix_lens(key).any(|len| {
            let Ok(len16) = u16::try_from(len) else {
                return false; // Longer than any prefix indexed.
            };
            let probe_len = 2 + len + SUFFIX_BYTES;
            let probe = probe_buf(&mut stack, &mut heap, probe_len);
            probe[..2].copy_from_slice(&len16.to_be_bytes());
            probe[2..2 + len].copy_from_slice(&key[..len]);
            probe[2 + len..].copy_from_slice(&suffix);
            let Some(entry) = self
                .by_prefix
                .lower_bound(std::ops::Bound::Included(&*probe))
            else {
                return false;
            };
            let found = entry.key();
            found.len() == probe_len
                && found[..2 + len] == probe[..2 + len]
                && written < Version::from_suffix(&found[2 + len..])
        })
    }

    /// Calls `f` with every key's newest version (all LSNs), for a
    /// snapshot: in key order, borrowed from the memtable (no copy of a
    /// key or a value). Stops at the first error `f` returns.
    pub fn for_each_latest<E>(
        &self,
        mut f: impl FnMut(&[u8], Version, Option<&Bytes>) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), E> {
        let visited = self.visit(
            (Bound::Unbounded, Bound::Unbounded),
            u64::MAX,
            |key, version, value| match f(key, version, value) {
                Ok(()) => ControlFlow::Continue(()),
                Err(e) => ControlFlow::Break(e),
            },
        );
        match visited {
            ControlFlow::Continue(()) => Ok(()),
            ControlFlow::Break(e) => Err(e),
        }
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

    /// What a snapshot writes: each key once, at its newest version, in
    /// key order, and nothing after the first error.
    #[test]
    fn a_snapshot_sees_each_keys_newest_version_once_in_key_order() {
        let m = Memtable::default();
        m.insert(b"\x01k", v(1, 0), Some(Bytes::from_static(b"a")));
        m.insert_owned(b"\x01k".to_vec(), v(4, 2), Some(Bytes::from_static(b"c")));
        m.insert(b"\x01k", v(4, 1), Some(Bytes::from_static(b"b")));
        m.insert(b"\x01m", v(2, 0), None);
        m.insert(b"\x01j", v(3, 0), Some(Bytes::from_static(b"j")));
        let mut seen = Vec::new();
        m.for_each_latest(|key, version, value| {
            seen.push((key.to_vec(), version, value.cloned()));
            Ok::<(), ()>(())
        })
        .unwrap();
        assert_eq!(
            seen,
            vec![
                (b"\x01j".to_vec(), v(3, 0), Some(Bytes::from_static(b"j"))),
                (b"\x01k".to_vec(), v(4, 2), Some(Bytes::from_static(b"c"))),
                (b"\x01m".to_vec(), v(2, 0), None),
            ]
        );
        let mut calls = 0;
        let stopped = m.for_each_latest(|_, _, _| {
            calls += 1;
            Err("full disk")
        });
        assert_eq!((stopped, calls), (Err("full disk"), 1));
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

    /// The lookup by prefix agrees with a pass over every tombstone, for
    /// clears of tasks and purges of runs at any versions, read at any LSN
    /// by keys of those scopes, of their neighbours and of their parents.
    mod indexed {
        use super::*;
        use crate::event::{AttemptScope, RunScope, TaskScope};
        use crate::view::key::{KeyBuf, Table};
        use proptest::prelude::*;

        const NAMES: [&str; 3] = ["", "a", "a\u{ff}b"];

        fn task(run: usize, task: usize) -> TaskScope {
            TaskScope {
                run: RunScope {
                    tenant: "acme".into(),
                    dag: NAMES[run % 3].into(),
                    run: NAMES[run / 3].into(),
                },
                task: NAMES[task].into(),
            }
        }

        fn cases() -> u32 {
            std::env::var("WAYMARK_PROPTEST_CASES")
                .ok()
                .and_then(|c| c.parse().ok())
                .unwrap_or(256)
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(cases()))]
            #[test]
            fn agrees_with_a_pass_over_every_tombstone(
                tombstones in proptest::collection::vec(
                    (0..9usize, proptest::option::of(0..3usize), 1..20u64, 0..3u32), 0..16),
                probes in proptest::collection::vec(
                    (0..9usize, 0..3usize, 1..3u32, 0..2usize, 0..21u64, 0..3u32, 0..22u64), 1..40),
            ) {
                let m = Memtable::default();
                for (run, t, lsn, index) in &tombstones {
                    let prefix = match t {
                        Some(t) => KeyBuf::new(Table::Kv).task(&task(*run, *t)),
                        None => KeyBuf::new(Table::Kv).run(&task(*run, 0).run),
                    };
                    let (start, end) = prefix_range(&prefix.into_vec());
                    m.delete_range(start, end, v(*lsn, *index));
                }
                prop_assert_eq!(m.unindexed.load(Ordering::Relaxed), 0);
                let all = m.ranges(u64::MAX);
                for (run, t, try_number, key, lsn, index, at) in probes {
                    let attempt = AttemptScope { task: task(run, t), try_number };
                    let key = KeyBuf::new(Table::Kv)
                        .attempt(&attempt)
                        .part(NAMES[key].as_bytes())
                        .into_vec();
                    let written = v(lsn, index);
                    let expected = all.iter().any(|rt| rt.masks(&key, written, at));
                    prop_assert_eq!(
                        m.masks(&key, written, at), expected,
                        "{:?} written at {:?} read at {}", key, written, at
                    );
                    // The task's and the run's own prefixes, as keys.
                    for len in scope_prefix_lens(&key) {
                        let short = &key[..len];
                        let expected = all.iter().any(|rt| rt.masks(short, written, at));
                        prop_assert_eq!(m.masks(short, written, at), expected);
                    }
                }
            }
        }

        /// A range that is no scope's prefix still masks, by a pass over
        /// every tombstone.
        #[test]
        fn a_range_over_no_prefix_masks_too() {
            let m = Memtable::default();
            let (start, end) = prefix_range(&KeyBuf::new(Table::Kv).task(&task(1, 1)).into_vec());
            m.delete_range(start, end, v(4, 0));
            let key = KeyBuf::new(Table::Kv)
                .task(&task(1, 1))
                .part(b"k")
                .into_vec();
            assert!(m.masks(&key, v(3, 0), 4));
            m.delete_range(b"\x01".to_vec(), b"\x01\x00\x01".to_vec(), v(5, 0));
            assert_eq!(m.unindexed.load(Ordering::Relaxed), 1);
            assert!(m.masks(&key, v(3, 0), 4), "still found by the pass");
            assert!(m.masks(b"\x01\x00\x00", v(4, 5), 5));
            assert!(m.masks(&key, v(4, 1), 5), "inside the second range");
            assert!(!m.masks(&key, v(5, 1), 5), "written after both");
        }
    }
}
