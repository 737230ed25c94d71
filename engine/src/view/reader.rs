//! Reading the views: [`ViewReader`], the public read handle, and the
//! live state's [`Sizes`].

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;

use super::key::{
    KeyBuf, Table, checkpoint_key, kv_key, prefix_range, shared_key, take_part, take_u32,
    task_kv_key,
};
use super::record::{CheckpointRecord, KvValue, Record, RunRecord, SharedValue, TaskRecord};
use super::{Views, corrupt_key, decode_as, utf8};
use crate::error::Result;
use crate::event::{AttemptScope, RunScope, TaskScope};
use crate::log::Lsn;

/// Live state bytes, from [`ViewReader::sizes`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Sizes {
    /// Every view together.
    pub total: u64,
    /// Per tenant.
    pub by_tenant: BTreeMap<String, u64>,
    /// Per run.
    pub by_run: BTreeMap<RunScope, u64>,
}

/// Reads the views of an open engine: point reads and scans of each table,
/// at the latest published LSN. Cheap to clone; `Send + Sync`.
///
/// Every read sees whole batches only, and sees every batch whose `append`
/// has returned (read-your-writes), on any thread.
///
/// ```
/// use waymark_engine::{
///     AttemptScope, Codec, Compression, Engine, Event, EventBody, Options, RunScope, TaskScope,
/// };
///
/// let dir = tempfile::tempdir()?;
/// let options = Options { compression: Some(Compression::default()), ..Options::default() };
/// let engine = Engine::open_with(waymark_engine::storage::file_system(), dir.path(), options)?;
/// let attempt = AttemptScope {
///     task: TaskScope {
///         run: RunScope { tenant: "acme".into(), dag: "docs".into(), run: "r1".into() },
///         task: "ocr".into(),
///     },
///     try_number: 1,
/// };
/// let lines = br#"{"text":"Invoice 17","amount":42.0}"#.repeat(100);
/// engine.append(vec![Event::now(EventBody::Put {
///     codec: Codec::Raw,
///     attempt: attempt.clone().into(),
///     key: "lines".into(),
///     value: lines.clone(),
///     meta: Vec::new(),
/// })])?;
/// // Stored compressed (3.5 KB of JSON), read back as written.
/// let value = engine.views().get(&attempt, "lines")?.expect("just written");
/// assert_eq!(value.value, lines);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct ViewReader {
    pub(crate) views: Arc<Views>,
}

impl ViewReader {
    /// The LSN reads are made at: every batch up to it is visible.
    pub fn visible_lsn(&self) -> Lsn {
        self.views.visible_lsn()
    }

    fn point<T>(&self, table: Table, key: &[u8]) -> Result<Option<T>>
    where
        T: Record,
    {
        let levels = self.views.levels();
        let at = self.views.visible_lsn().0;
        self.views
            .get_at(&levels, key, at)?
            .map(|b| decode_as(table, &b))
            .transpose()
    }

    fn range(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Bytes)>> {
        let (start, end) = prefix_range(prefix);
        loop {
            // The LSN first, then the levels: levels taken after it hold
            // every batch redb lacks, so redb at or below the LSN merges
            // with them whole. (Taken the other way round, two snapshots
            // between them could leave redb holding a memtable newer than
            // the levels, at or below the LSN.)
            let at = self.views.visible_lsn().0;
            let levels = self.views.levels();
            // A snapshot that lands in the middle of the scan means reading
            // again (snapshots are seconds apart).
            if let Some(rows) = self.views.scan_at(&levels, &start, &end, at)? {
                return Ok(rows);
            }
        }
    }

    /// Every entry under `prefix` whose key ends in one name after it, as
    /// (name, record).
    fn named<T>(&self, table: Table, prefix: &[u8]) -> Result<Vec<(String, T)>>
    where
        T: Record,
    {
        self.range(prefix)?
            .into_iter()
            .map(|(key, value)| {
                let mut rest = &key[prefix.len()..];
                let name = take_part(&mut rest).ok_or_else(|| corrupt_key(table))?;
                Ok((utf8(table, name)?, decode_as(table, &value)?))
            })
            .collect()
    }

    /// One key of a task attempt's state.
    pub fn get(&self, attempt: &AttemptScope, key: &str) -> Result<Option<KvValue>> {
        self.point(Table::Kv, &kv_key(attempt, key))
    }

    /// Every key of a task attempt's state, in key-encoding order.
    pub fn attempt_entries(&self, attempt: &AttemptScope) -> Result<Vec<(String, KvValue)>> {
        self.named(
            Table::Kv,
            &KeyBuf::new(Table::Kv).attempt(attempt).into_vec(),
        )
    }

    /// `key` in the attempt state of the task's latest attempt that has
    /// it: `(try_number, value)`. What an upstream read (`get_from`)
    /// needs: only the matching key's record is decoded.
    pub fn latest_attempt_value(
        &self,
        task: &TaskScope,
        key: &str,
    ) -> Result<Option<(u32, KvValue)>> {
        let prefix = KeyBuf::new(Table::Kv).task(task).into_vec();
        let mut found: Option<(u32, Bytes)> = None;
        // Keys sort by try then key: the last match is the latest try.
        for (k, value) in self.range(&prefix)? {
            let mut rest = &k[prefix.len()..];
            let try_number = take_u32(&mut rest).ok_or_else(|| corrupt_key(Table::Kv))?;
            let name = take_part(&mut rest).ok_or_else(|| corrupt_key(Table::Kv))?;
            if name == key.as_bytes() {
                found = Some((try_number, value));
            }
        }
        found
            .map(|(try_number, value)| Ok((try_number, decode_as(Table::Kv, &value)?)))
            .transpose()
    }

    /// Every key of every attempt of a task: `(try_number, key, value)`,
    /// by try then key.
    pub fn task_attempt_entries(&self, task: &TaskScope) -> Result<Vec<(u32, String, KvValue)>> {
        let prefix = KeyBuf::new(Table::Kv).task(task).into_vec();
        self.range(&prefix)?
            .into_iter()
            .map(|(key, value)| {
                let mut rest = &key[prefix.len()..];
                let try_number = take_u32(&mut rest).ok_or_else(|| corrupt_key(Table::Kv))?;
                let name = take_part(&mut rest).ok_or_else(|| corrupt_key(Table::Kv))?;
                Ok((
                    try_number,
                    utf8(Table::Kv, name)?,
                    decode_as(Table::Kv, &value)?,
                ))
            })
            .collect()
    }

    /// One key of a task's state (survives retries).
    pub fn task_state(&self, task: &TaskScope, key: &str) -> Result<Option<KvValue>> {
        self.point(Table::TaskKv, &task_kv_key(task, key))
    }

    /// Every key of a task's state.
    pub fn task_state_entries(&self, task: &TaskScope) -> Result<Vec<(String, KvValue)>> {
        self.named(
            Table::TaskKv,
            &KeyBuf::new(Table::TaskKv).task(task).into_vec(),
        )
    }

    /// A task's lifecycle: latest try, status, attempts.
    pub fn task(&self, task: &TaskScope) -> Result<Option<TaskRecord>> {
        self.point(
            Table::Tasks,
            &KeyBuf::new(Table::Tasks).task(task).into_vec(),
        )
    }

    /// Every task of a run that has a status, by task name.
    pub fn tasks(&self, run: &RunScope) -> Result<Vec<(String, TaskRecord)>> {
        self.named(Table::Tasks, &KeyBuf::new(Table::Tasks).run(run).into_vec())
    }

    /// Every task of a run with a status, attempt state or task state, by
    /// name: [`ViewReader::tasks`] leaves out tasks that wrote state but
    /// never had a status.
    pub fn task_names(&self, run: &RunScope) -> Result<Vec<String>> {
        let mut names: std::collections::BTreeSet<String> =
            self.tasks(run)?.into_iter().map(|(task, _)| task).collect();
        for table in [Table::Kv, Table::TaskKv] {
            let prefix = KeyBuf::new(table).run(run).into_vec();
            for (key, _) in self.range(&prefix)? {
                let mut rest = &key[prefix.len()..];
                let name = take_part(&mut rest).ok_or_else(|| corrupt_key(table))?;
                names.insert(utf8(table, name)?);
            }
        }
        Ok(names.into_iter().collect())
    }

    /// A run's status, times, task counts and parent.
    pub fn run(&self, run: &RunScope) -> Result<Option<RunRecord>> {
        self.point(Table::Runs, &KeyBuf::new(Table::Runs).run(run).into_vec())
    }

    /// A tenant's runs, optionally only those of one DAG.
    pub fn runs(&self, tenant: &str, dag: Option<&str>) -> Result<Vec<(RunScope, RunRecord)>> {
        let mut prefix = KeyBuf::new(Table::Runs).part(tenant.as_bytes());
        if let Some(dag) = dag {
            prefix = prefix.part(dag.as_bytes());
        }
        let prefix = prefix.into_vec();
        self.range(&prefix)?
            .into_iter()
            .map(|(key, value)| {
                let mut rest = &key[1..];
                let mut next = || {
                    take_part(&mut rest)
                        .ok_or_else(|| corrupt_key(Table::Runs))
                        .and_then(|p| utf8(Table::Runs, p))
                };
                let run = RunScope {
                    tenant: next()?,
                    dag: next()?,
                    run: next()?,
                };
                Ok((run, decode_as(Table::Runs, &value)?))
            })
            .collect()
    }

    /// Live state bytes (keys and encoded records, every view) per run and
    /// per tenant, for size accounting. This scans every view: its cost
    /// grows with the state, so call it when you need the figures, not on a
    /// hot path.
    pub fn sizes(&self) -> Result<Sizes> {
        let mut sizes = Sizes::default();
        for table in Table::ALL {
            let tag = [table as u8];
            for (key, value) in self.range(&tag)? {
                let mut rest = &key[1..];
                let mut next = || {
                    take_part(&mut rest)
                        .ok_or_else(|| corrupt_key(table))
                        .and_then(|p| utf8(table, p))
                };
                let run = RunScope {
                    tenant: next()?,
                    dag: next()?,
                    run: next()?,
                };
                let bytes = (key.len() + value.len()) as u64;
                *sizes.by_tenant.entry(run.tenant.clone()).or_default() += bytes;
                *sizes.by_run.entry(run).or_default() += bytes;
                sizes.total += bytes;
            }
        }
        Ok(sizes)
    }

    /// One run-shared variable.
    pub fn shared(&self, run: &RunScope, key: &str) -> Result<Option<SharedValue>> {
        self.point(Table::Shared, &shared_key(run, key))
    }

    /// Every shared variable of a run, by key.
    pub fn shared_entries(&self, run: &RunScope) -> Result<Vec<(String, SharedValue)>> {
        self.named(
            Table::Shared,
            &KeyBuf::new(Table::Shared).run(run).into_vec(),
        )
    }

    /// One named checkpoint of a run.
    pub fn checkpoint(&self, run: &RunScope, name: &str) -> Result<Option<CheckpointRecord>> {
        self.point(Table::Checkpoints, &checkpoint_key(run, name))
    }

    /// Every checkpoint of a run, by name.
    pub fn checkpoints(&self, run: &RunScope) -> Result<Vec<(String, CheckpointRecord)>> {
        self.named(
            Table::Checkpoints,
            &KeyBuf::new(Table::Checkpoints).run(run).into_vec(),
        )
    }
}
