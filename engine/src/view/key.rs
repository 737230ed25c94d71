//! Key encoding for the views: one byte naming the table, then
//! length-prefixed components.
//!
//! Every component (tenant, dag, run, task, key, checkpoint name) is written
//! as its length in 4 big-endian bytes followed by its bytes; a try number
//! is 4 big-endian bytes. Two facts follow, and a property test checks both:
//! - **No aliasing.** The encoding is injective: a decoder reads it back
//!   component by component, so "a/b"+"c" and "a"+"b/c" differ, as do names
//!   holding ":", "/", NUL bytes or nothing at all.
//! - **Contiguity.** Every key of one tenant, one run, one task or one task
//!   attempt starts with that scope's encoding, so each is one contiguous
//!   range of keys ([`prefix_range`]), which is what range tombstones
//!   (clearing a task, purging a run) and scans rely on.
//!
//! A third holds by construction: each table's keys have a fixed number of
//! components, so no key is a prefix of another. In the memtable a key is
//! followed by its version, and the versions of one key are contiguous
//! because of it: only a longer key could sort between them.
//!
//! Every level orders keys as bytes (lexicographically).

use super::memtable::SUFFIX_BYTES;
use crate::event::{AttemptScope, RunScope, TaskScope};

/// The view a key belongs to: the key's first byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub(crate) enum Table {
    /// Attempt state: (run, task, try, key) → value.
    Kv = 1,
    /// Task state that survives retries: (run, task, key) → value.
    TaskKv = 2,
    /// Per task: latest try, status, attempts.
    Tasks = 3,
    /// Per run: status, counts, parent.
    Runs = 4,
    /// Named checkpoints of a run: (run, name) → capture.
    Checkpoints = 5,
    /// Run-shared variables: (run, key) → value.
    Shared = 6,
}

impl Table {
    /// Every table, in tag order.
    pub(crate) const ALL: [Table; 6] = [
        Table::Kv,
        Table::TaskKv,
        Table::Tasks,
        Table::Runs,
        Table::Checkpoints,
        Table::Shared,
    ];

    /// The table a key's first byte names.
    pub(crate) fn of(key: &[u8]) -> Option<Table> {
        Table::ALL
            .into_iter()
            .find(|t| Some(&(*t as u8)) == key.first())
    }
}

/// Builds one encoded key, component by component.
#[derive(Clone, Debug)]
pub(crate) struct KeyBuf(Vec<u8>);

impl KeyBuf {
    pub(crate) fn new(table: Table) -> KeyBuf {
        let mut v = Vec::with_capacity(64);
        v.push(table as u8);
        KeyBuf(v)
    }

    /// Appends one length-prefixed component.
    /// A key of `table` built into `capacity` bytes: enough for its
    /// components and the memtable's version suffix, so that neither
    /// building it nor versioning it reallocates.
    pub(crate) fn with_capacity(table: Table, capacity: usize) -> KeyBuf {
        let mut v = Vec::with_capacity(capacity);
        v.push(table as u8);
        KeyBuf(v)
    }

    pub(crate) fn part(mut self, component: &[u8]) -> KeyBuf {
        let len = u32::try_from(component.len()).expect("names are limited far below 4 GiB");
        self.0.extend_from_slice(&len.to_be_bytes());
        self.0.extend_from_slice(component);
        self
    }

    pub(crate) fn try_number(mut self, try_number: u32) -> KeyBuf {
        self.0.extend_from_slice(&try_number.to_be_bytes());
        self
    }

    pub(crate) fn run(self, run: &RunScope) -> KeyBuf {
        self.part(run.tenant.as_bytes())
            .part(run.dag.as_bytes())
            .part(run.run.as_bytes())
    }

    pub(crate) fn task(self, task: &TaskScope) -> KeyBuf {
        self.run(&task.run).part(task.task.as_bytes())
    }

    pub(crate) fn attempt(self, attempt: &AttemptScope) -> KeyBuf {
        self.task(&attempt.task).try_number(attempt.try_number)
    }

    pub(crate) fn into_vec(self) -> Vec<u8> {
        self.0
    }
}

/// The half-open range `[prefix, end)` of every key that starts with
/// `prefix`. `prefix` starts with a table tag below 255, so an end exists.
pub(crate) fn prefix_range(prefix: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return (prefix.to_vec(), end);
        }
    }
    unreachable!("a key starts with a table tag below 255")
}

/// The most components a scope prefix holds: a task is tenant, dag, run
/// and task.
const SCOPE_PARTS_MAX: usize = 4;

/// The lengths of `key`'s prefixes that end where a scope does: the table
/// tag, then each of the first four length-prefixed components, shortest
/// first. Every range the views delete is a scope's ([`prefix_range`] of
/// a run's or a task's prefix), so the deleted ranges that can hold `key`
/// are those of these prefixes: a memtable finds them by a lookup each
/// instead of a pass over all its tombstones. Stops early where `key` is
/// shorter than a component says.
pub(crate) fn scope_prefix_lens(key: &[u8]) -> impl Iterator<Item = usize> + '_ {
    let mut next = (!key.is_empty()).then_some(1usize);
    let mut parts = 0usize;
    std::iter::from_fn(move || {
        let here = next?;
        next = if parts < SCOPE_PARTS_MAX {
            key.get(here..here + 4).and_then(|len| {
                let len = u32::from_be_bytes(len.try_into().ok()?) as usize;
                let end = here.checked_add(4)?.checked_add(len)?;
                (end <= key.len()).then_some(end)
            })
        } else {
            None
        };
        parts += 1;
        Some(here)
    })
}

/// Reads one component from the front of `rest`.
pub(crate) fn take_part<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let part = rest.get(4..4 + len)?;
    *rest = &rest[4 + len..];
    Some(part)
}

/// Reads a big-endian try number from the front of `rest`.
pub(crate) fn take_u32(rest: &mut &[u8]) -> Option<u32> {
    let n = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
    *rest = &rest[4..];
    Some(n)
}

/// The bytes of a key of `table` over `task`'s scope, with `more` bytes
/// after it, and room for the memtable's version suffix.
fn task_key_capacity(task: &TaskScope, more: usize) -> usize {
    let run = &task.run;
    1 + 4 * 4
        + run.tenant.len()
        + run.dag.len()
        + run.run.len()
        + task.task.len()
        + more
        + SUFFIX_BYTES
}

/// The `kv` key of `key` in a task attempt's attempt state.
pub(crate) fn kv_key(attempt: &AttemptScope, key: &str) -> Vec<u8> {
    let capacity = task_key_capacity(&attempt.task, 4 + 4 + key.len());
    KeyBuf::with_capacity(Table::Kv, capacity)
        .attempt(attempt)
        .part(key.as_bytes())
        .into_vec()
}

/// The `task_kv` key of `key` in a task's task state.
pub(crate) fn task_kv_key(task: &TaskScope, key: &str) -> Vec<u8> {
    KeyBuf::with_capacity(Table::TaskKv, task_key_capacity(task, 4 + key.len()))
        .task(task)
        .part(key.as_bytes())
        .into_vec()
}

/// The `shared` key of a run's shared variable `key`.
pub(crate) fn shared_key(run: &RunScope, key: &str) -> Vec<u8> {
    KeyBuf::new(Table::Shared)
        .run(run)
        .part(key.as_bytes())
        .into_vec()
}

/// The `checkpoints` key of a run's checkpoint `name`.
pub(crate) fn checkpoint_key(run: &RunScope, name: &str) -> Vec<u8> {
    KeyBuf::new(Table::Checkpoints)
        .run(run)
        .part(name.as_bytes())
        .into_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn run(t: &str, d: &str, r: &str) -> RunScope {
        RunScope {
            tenant: t.into(),
            dag: d.into(),
            run: r.into(),
        }
    }

    fn kv_key(r: &RunScope, task: &str, try_number: u32, key: &str) -> Vec<u8> {
        KeyBuf::new(Table::Kv)
            .run(r)
            .part(task.as_bytes())
            .try_number(try_number)
            .part(key.as_bytes())
            .into_vec()
    }

    #[test]
    fn crafted_names_do_not_alias() {
        let a = kv_key(&run("t", "d", "a/b"), "c", 1, "k");
        let b = kv_key(&run("t", "d", "a"), "b/c", 1, "k");
        assert_ne!(a, b);
        let a = kv_key(&run("t", "d:x", "r"), "", 1, "k");
        let b = kv_key(&run("t", "d", "x:r"), "", 1, "k");
        assert_ne!(a, b);
        let a = kv_key(&run("t\0", "d", "r"), "task", 1, "");
        let b = kv_key(&run("t", "\0d", "r"), "task", 1, "");
        assert_ne!(a, b);
    }

    #[test]
    fn scope_prefix_lens_end_at_the_tag_and_the_first_four_components() {
        let run = RunScope {
            tenant: "acme".into(),
            dag: "".into(),
            run: "r1".into(),
        };
        let task = TaskScope {
            run: run.clone(),
            task: "t".into(),
        };
        let attempt = AttemptScope {
            task: task.clone(),
            try_number: 2,
        };
        let key = KeyBuf::new(Table::Kv)
            .attempt(&attempt)
            .part(b"key")
            .into_vec();
        let lens: Vec<usize> = scope_prefix_lens(&key).collect();
        assert_eq!(lens, vec![1, 9, 13, 19, 24]);
        assert_eq!(lens[3], KeyBuf::new(Table::Kv).run(&run).into_vec().len());
        assert_eq!(lens[4], KeyBuf::new(Table::Kv).task(&task).into_vec().len());
        // A key cut short, or holding a length past its end, stops there.
        assert_eq!(
            scope_prefix_lens(&key[..15]).collect::<Vec<_>>(),
            vec![1, 9, 13]
        );
        assert_eq!(
            scope_prefix_lens(&[1, 0xff, 0, 0, 0, 7]).collect::<Vec<_>>(),
            vec![1]
        );
        assert_eq!(scope_prefix_lens(&[]).count(), 0);
    }

    #[test]
    fn prefix_range_ends_after_every_key_with_the_prefix() {
        let (start, end) = prefix_range(&[1, 0, 0, 0, 255]);
        assert_eq!(start, vec![1, 0, 0, 0, 255]);
        assert_eq!(end, vec![1, 0, 0, 1]);
    }

    fn name() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            "[a/:\\x00b]{0,4}",
            any::<String>(),
            Just("n".repeat(4096)),
        ]
    }

    type Kv = (String, String, String, String, u32, String);

    fn kv() -> impl Strategy<Value = Kv> {
        (name(), name(), name(), name(), 1u32..4, name())
    }

    fn encode(k: &Kv) -> Vec<u8> {
        kv_key(&run(&k.0, &k.1, &k.2), &k.3, k.4, &k.5)
    }

    fn attempt_prefix(k: &Kv) -> Vec<u8> {
        KeyBuf::new(Table::Kv)
            .run(&run(&k.0, &k.1, &k.2))
            .part(k.3.as_bytes())
            .try_number(k.4)
            .into_vec()
    }

    fn task_prefix(k: &Kv) -> Vec<u8> {
        KeyBuf::new(Table::Kv)
            .run(&run(&k.0, &k.1, &k.2))
            .part(k.3.as_bytes())
            .into_vec()
    }

    fn run_prefix(k: &Kv) -> Vec<u8> {
        KeyBuf::new(Table::Kv)
            .run(&run(&k.0, &k.1, &k.2))
            .into_vec()
    }

    fn tenant_prefix(k: &Kv) -> Vec<u8> {
        KeyBuf::new(Table::Kv).part(k.0.as_bytes()).into_vec()
    }

    fn in_range(key: &[u8], prefix: &[u8]) -> bool {
        let (start, end) = prefix_range(prefix);
        start.as_slice() <= key && key < end.as_slice()
    }

    proptest! {
        /// Distinct scopes and keys never encode to the same bytes.
        #[test]
        fn encoding_is_injective(a in kv(), b in kv()) {
            prop_assert_eq!(a == b, encode(&a) == encode(&b));
        }

        /// A key lies in the range of its tenant, run, task and attempt, and
        /// in no other scope's range at the same level.
        #[test]
        fn scopes_are_contiguous_ranges(a in kv(), b in kv()) {
            let key = encode(&b);
            let same_tenant = a.0 == b.0;
            let same_run = same_tenant && a.1 == b.1 && a.2 == b.2;
            let same_task = same_run && a.3 == b.3;
            let same_attempt = same_task && a.4 == b.4;
            prop_assert_eq!(in_range(&key, &tenant_prefix(&a)), same_tenant);
            prop_assert_eq!(in_range(&key, &run_prefix(&a)), same_run);
            prop_assert_eq!(in_range(&key, &task_prefix(&a)), same_task);
            prop_assert_eq!(in_range(&key, &attempt_prefix(&a)), same_attempt);
        }
    }
}
