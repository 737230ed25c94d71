//! What the views hold per key: the records readers get back.
//!
//! Records are stored (in memtables and in redb) rkyv-encoded and read back
//! through validation, like events: redb's bytes come from disk. Changing a
//! record type changes the views' format: bump [`super::VIEWS_FORMAT_VERSION`].

use bytes::Bytes;
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor::Fallible;
use rkyv::rancor::{BoxedError, Failure};
use rkyv::ser::{Allocator, Writer};
use rkyv::vec::{ArchivedVec, VecResolver};
use rkyv::{Archive, Deserialize, Place, Serialize};

use crate::event::{ParentRef, RunStatus, TaskStatus};

/// A value of attempt state or task state, with where it came from.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(attr(allow(missing_docs)))]
pub struct KvValue {
    /// The value's bytes.
    pub value: Vec<u8>,
    /// Metadata written with the value (empty if none).
    pub meta: Vec<u8>,
    /// The LSN of the batch that wrote it.
    pub lsn: u64,
    /// The event's timestamp, microseconds since the Unix epoch.
    pub ts_micros: i64,
}

/// A run-scoped shared variable.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(attr(allow(missing_docs)))]
pub struct SharedValue {
    /// The value's bytes.
    pub value: Vec<u8>,
    /// Once written, an immutable variable is never changed: later writes
    /// are ignored by the views (the kernel refuses them with an error).
    pub immutable: bool,
    /// The LSN of the batch that wrote it.
    pub lsn: u64,
    /// The event's timestamp, microseconds since the Unix epoch.
    pub ts_micros: i64,
}

/// One task attempt's lifecycle, as the `tasks` view keeps it.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(attr(allow(missing_docs)))]
pub struct AttemptRecord {
    /// 1-based try number.
    pub try_number: u32,
    /// The attempt's latest status.
    pub status: TaskStatus,
    /// When the attempt first became `Running`, if it did.
    pub started_micros: Option<i64>,
    /// When it reached a final status (succeeded, failed, interrupted,
    /// cancelled), if it did.
    pub finished_micros: Option<i64>,
    /// The worker that made the latest change.
    pub worker: String,
}

/// Per task: its attempts and the latest status.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(attr(allow(missing_docs)))]
pub struct TaskRecord {
    /// The highest try number that has a status.
    pub latest_try: u32,
    /// The status of the latest try.
    pub status: TaskStatus,
    /// Every attempt with a status, by try number.
    pub attempts: Vec<AttemptRecord>,
    /// The first status change, microseconds since the epoch.
    pub created_micros: i64,
    /// The latest status change.
    pub updated_micros: i64,
    /// The LSN of the latest status change.
    pub lsn: u64,
}

/// How many of a run's tasks are in each status (by each task's latest
/// attempt).
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[rkyv(attr(allow(missing_docs)))]
pub struct TaskCounts {
    /// Tasks whose latest attempt is scheduled.
    pub scheduled: u32,
    /// Tasks whose latest attempt is running.
    pub running: u32,
    /// Tasks whose latest attempt succeeded.
    pub succeeded: u32,
    /// Tasks whose latest attempt failed.
    pub failed: u32,
    /// Tasks whose latest attempt was interrupted (a crash, found by
    /// `resume`).
    pub interrupted: u32,
    /// Tasks whose latest attempt was cancelled.
    pub cancelled: u32,
}

impl TaskCounts {
    /// Every task of the run.
    pub fn total(&self) -> u32 {
        // The counts come from disk: saturate rather than overflow.
        [
            self.running,
            self.succeeded,
            self.failed,
            self.interrupted,
            self.cancelled,
        ]
        .into_iter()
        .fold(self.scheduled, u32::saturating_add)
    }

    pub(crate) fn slot(&mut self, status: &TaskStatus) -> &mut u32 {
        match status {
            TaskStatus::Scheduled => &mut self.scheduled,
            TaskStatus::Running => &mut self.running,
            TaskStatus::Succeeded { .. } => &mut self.succeeded,
            TaskStatus::Failed { .. } => &mut self.failed,
            TaskStatus::Interrupted => &mut self.interrupted,
            TaskStatus::Cancelled => &mut self.cancelled,
        }
    }
}

/// Per run: status, times, task counts and parent.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(attr(allow(missing_docs)))]
pub struct RunRecord {
    /// The run's status (`Created` until a `RunStatus` event says otherwise).
    pub status: RunStatus,
    /// The first event that touched the run.
    pub created_micros: i64,
    /// The latest status change of the run or one of its tasks.
    pub updated_micros: i64,
    /// Tasks by the status of their latest attempt.
    pub task_counts: TaskCounts,
    /// The run and task that started this run (sub-workflows).
    pub parent: Option<ParentRef>,
}

/// A named checkpoint of a run: what it captured and its checksum.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(attr(allow(missing_docs)))]
pub struct CheckpointRecord {
    /// The LSN of the `Checkpoint` event.
    pub lsn: u64,
    /// Its timestamp.
    pub ts_micros: i64,
    /// CRC32 of `capture`.
    pub checksum: u32,
    /// The captured state, rkyv-encoded: every attempt-state, task-state
    /// and shared entry of the run at the checkpoint.
    pub capture: Vec<u8>,
}

impl CheckpointRecord {
    /// Whether the capture still matches its checksum.
    pub fn verify(&self) -> bool {
        crc32fast::hash(&self.capture) == self.checksum
    }

    /// The size of the captured state in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.capture.len() as u64
    }
}

/// A run's captured state: every attempt-state, task-state and shared
/// entry, as (table tag, encoded key, encoded record).
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[rkyv(attr(allow(missing_docs)))]
pub(crate) struct Capture {
    pub entries: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Encodes a record for a memtable or redb.
pub(crate) fn encode<T>(record: &T) -> Vec<u8>
where
    T: for<'a> Serialize<
        rkyv::api::high::HighSerializer<
            rkyv::util::AlignedVec,
            rkyv::ser::allocator::ArenaHandle<'a>,
            Failure,
        >,
    >,
{
    // Records hold no shared pointers and serialize into memory: nothing
    // can fail but an allocation, which aborts. The zero-sized error keeps
    // the serializer free of error plumbing.
    rkyv::to_bytes::<Failure>(record)
        .expect("serializing into memory cannot fail")
        .into_vec()
}

/// Encodes the value record of `value` and `meta` written at `lsn` (the
/// stored LSN, zstd bit included): the bytes `encode(&KvValue { .. })`
/// gives, built straight from the event's borrowed bytes into one buffer of
/// their exact size. The applier writes one per set, so it skips the copies
/// into a `KvValue` and the growth of a buffer sized as it goes.
pub(crate) fn encode_kv(value: &[u8], meta: &[u8], lsn: u64, ts_micros: i64) -> Bytes {
    // The layout rkyv writes: the value's bytes, the metadata's, then the
    // root aligned for itself.
    let exact = (value.len() + meta.len())
        .next_multiple_of(std::mem::align_of::<ArchivedKvValue>())
        + std::mem::size_of::<ArchivedKvValue>();
    let record = KvValueRef {
        value,
        meta,
        lsn,
        ts_micros,
    };
    // The low-level serializer, without the high one's arena and sharing
    // map: a value record borrows nothing and shares nothing, so it needs
    // no scratch space (an empty allocator fails any use of it, and the
    // tests below would see that).
    let bytes = rkyv::api::low::to_bytes_in_with_alloc::<_, _, Failure>(
        &record,
        Vec::with_capacity(exact),
        rkyv::ser::allocator::SubAllocator::empty(),
    )
    .expect("a value record is written into memory and takes no scratch space");
    // An exact fit makes the `Bytes` own the buffer as it is.
    debug_assert_eq!(bytes.len(), exact, "the size of a value record");
    Bytes::from(bytes)
}

/// A [`KvValue`] over borrowed bytes: archives to an [`ArchivedKvValue`],
/// byte for byte what the owned record would.
struct KvValueRef<'a> {
    value: &'a [u8],
    meta: &'a [u8],
    lsn: u64,
    ts_micros: i64,
}

impl Archive for KvValueRef<'_> {
    type Archived = ArchivedKvValue;
    type Resolver = (VecResolver, VecResolver);

    fn resolve(&self, (value, meta): Self::Resolver, out: Place<ArchivedKvValue>) {
        rkyv::munge::munge!(let ArchivedKvValue {
            value: out_value,
            meta: out_meta,
            lsn,
            ts_micros,
        } = out);
        ArchivedVec::resolve_from_slice(self.value, value, out_value);
        ArchivedVec::resolve_from_slice(self.meta, meta, out_meta);
        self.lsn.resolve((), lsn);
        self.ts_micros.resolve((), ts_micros);
    }
}

impl<S: Fallible + Allocator + Writer + ?Sized> Serialize<S> for KvValueRef<'_> {
    fn serialize(&self, serializer: &mut S) -> Result<Self::Resolver, S::Error> {
        // In `KvValue`'s field order, as its derived impl writes them.
        Ok((
            ArchivedVec::serialize_from_slice(self.value, serializer)?,
            ArchivedVec::serialize_from_slice(self.meta, serializer)?,
        ))
    }
}

/// A record type the views store: read back through validation.
pub(crate) trait Record: Sized {
    /// Validates `bytes` and decodes them.
    ///
    /// # Errors
    ///
    /// The reason the bytes are not a valid record, if they are not.
    fn decode(bytes: &[u8]) -> Result<Self, String>;
}

macro_rules! records {
    ($($t:ty),* $(,)?) => {
        $(impl Record for $t {
            fn decode(bytes: &[u8]) -> Result<Self, String> {
                decode_checked(bytes)
            }
        })*
    };
}

records!(TaskRecord, RunRecord, CheckpointRecord, Capture);

/// The bit of a stored value record's `lsn` that says its value is a zstd
/// frame (views format version 3; FORMAT.md, "Value compression"). LSNs
/// stay below it: 2^63 batches are never written.
pub(crate) const ZSTD_LSN_BIT: u64 = 1 << 63;

/// The stored `lsn` field of a value record: the LSN, and whether the value
/// is compressed.
pub(crate) fn stored_lsn(lsn: u64, codec: crate::event::Codec) -> u64 {
    debug_assert!(lsn < ZSTD_LSN_BIT, "LSNs stay below 2^63");
    match codec {
        crate::event::Codec::Raw => lsn,
        crate::event::Codec::Zstd => lsn | ZSTD_LSN_BIT,
    }
}

/// The value as written and the LSN, from a stored record's fields.
fn restore(value: &mut Vec<u8>, lsn: &mut u64) -> Result<(), String> {
    if *lsn & ZSTD_LSN_BIT != 0 {
        *value = crate::event::Codec::Zstd.decode(value)?.into_owned();
        *lsn &= !ZSTD_LSN_BIT;
    }
    Ok(())
}

impl Record for KvValue {
    fn decode(bytes: &[u8]) -> Result<Self, String> {
        let mut record: KvValue = decode_checked(bytes)?;
        restore(&mut record.value, &mut record.lsn)?;
        Ok(record)
    }
}

impl Record for SharedValue {
    fn decode(bytes: &[u8]) -> Result<Self, String> {
        let mut record: SharedValue = decode_checked(bytes)?;
        restore(&mut record.value, &mut record.lsn)?;
        Ok(record)
    }
}

/// Decodes a record read from a view, validating it first.
///
/// # Errors
///
/// The reason the bytes are not a valid record, if they are not.
pub(crate) fn decode<T: Record>(bytes: &[u8]) -> Result<T, String> {
    T::decode(bytes)
}

fn decode_checked<T>(bytes: &[u8]) -> Result<T, String>
where
    T: Archive,
    T::Archived: for<'a> CheckBytes<rkyv::api::low::LowValidator<'a, Failure>>
        + for<'a> CheckBytes<rkyv::api::high::HighValidator<'a, BoxedError>>
        + Deserialize<T, rkyv::api::high::HighDeserializer<Failure>>,
{
    // rkyv reads archives from 16-aligned buffers. Memtable records usually
    // are (the allocator aligns them); redb's bytes carry no such promise,
    // so anything else is copied into an aligned buffer first.
    let copy;
    let bytes = if (bytes.as_ptr() as usize).is_multiple_of(16) {
        bytes
    } else {
        let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(bytes.len());
        aligned.extend_from_slice(bytes);
        copy = aligned;
        &copy[..]
    };
    let archived = crate::event::access_with_reason::<T::Archived>(bytes, "record")?;
    // Deserializing validated bytes into owned values cannot fail but for
    // want of memory, which aborts.
    rkyv::deserialize::<T, Failure>(archived)
        .map_err(|_| "the record could not be deserialized".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts decoded from disk may be anything: the total saturates.
    #[test]
    fn task_counts_total_saturates() {
        let counts = TaskCounts {
            scheduled: u32::MAX,
            running: 1,
            ..TaskCounts::default()
        };
        assert_eq!(counts.total(), u32::MAX);
    }

    #[test]
    fn records_round_trip_at_any_alignment() {
        let record = KvValue {
            value: b"12 pages".to_vec(),
            meta: b"{}".to_vec(),
            lsn: 7,
            ts_micros: 1_700_000_000_000_000,
        };
        let bytes = encode(&record);
        let mut shifted = vec![0u8; bytes.len() + 1];
        shifted[1..].copy_from_slice(&bytes);
        assert_eq!(decode::<KvValue>(&bytes), Ok(record.clone()));
        assert_eq!(decode::<KvValue>(&shifted[1..]), Ok(record));
    }

    /// The borrowed encoder writes exactly the owned record's bytes, for
    /// empty, odd and aligned lengths of value and metadata.
    #[test]
    fn a_value_record_encodes_alike_from_borrowed_bytes() {
        for (value_len, meta_len) in [(0, 0), (1, 0), (0, 3), (7, 1), (8, 8), (100, 0), (4097, 13)]
        {
            let value: Vec<u8> = (0..value_len).map(|i| i as u8).collect();
            let meta = vec![b'm'; meta_len];
            let owned = encode(&KvValue {
                value: value.clone(),
                meta: meta.clone(),
                lsn: 1 << 63 | 42,
                ts_micros: -5,
            });
            let borrowed = encode_kv(&value, &meta, 1 << 63 | 42, -5);
            assert_eq!(
                &borrowed[..],
                &owned[..],
                "value {value_len}, meta {meta_len}"
            );
        }
    }

    /// A stored value whose LSN carries the zstd bit reads back as written,
    /// with its plain LSN; a record without it (every record of views
    /// version 2) reads as stored.
    #[test]
    fn a_compressed_value_reads_back_as_written() {
        let written = b"{\"lines\":[\"Invoice 17\",\"Total 42.00\"]}".repeat(40);
        let mut events = vec![crate::event::Event {
            ts_micros: 0,
            body: crate::event::EventBody::TaskPut {
                codec: crate::event::Codec::Raw,
                task: crate::event::tests::sample_task(),
                key: "k".into(),
                value: written.clone(),
            },
        }];
        crate::event::compress_values(&mut events, &crate::options::Compression::default());
        let crate::event::EventBody::TaskPut { codec, value, .. } = &events[0].body else {
            unreachable!("a task put stays one")
        };
        assert_eq!(*codec, crate::event::Codec::Zstd);
        assert!(value.len() < written.len() / 4, "{} bytes", value.len());
        let stored = encode(&KvValue {
            value: value.clone(),
            meta: Vec::new(),
            lsn: stored_lsn(7, *codec),
            ts_micros: 1,
        });
        let back = decode::<KvValue>(&stored).unwrap();
        assert_eq!((back.value, back.lsn), (written.clone(), 7));
        let stored = encode(&SharedValue {
            value: value.clone(),
            immutable: true,
            lsn: stored_lsn(9, *codec),
            ts_micros: 1,
        });
        let back = decode::<SharedValue>(&stored).unwrap();
        assert_eq!((back.value, back.lsn, back.immutable), (written, 9, true));
        // Damaged compressed bytes are a reason, not a panic.
        let stored = encode(&KvValue {
            value: b"not zstd".to_vec(),
            meta: Vec::new(),
            lsn: stored_lsn(7, crate::event::Codec::Zstd),
            ts_micros: 1,
        });
        assert!(decode::<KvValue>(&stored).unwrap_err().contains("zstd"));
    }

    #[test]
    fn a_rejected_record_says_why() {
        let record = KvValue {
            value: vec![1; 40],
            meta: Vec::new(),
            lsn: 7,
            ts_micros: 0,
        };
        let mut bytes = encode(&record);
        // The root sits at the end; its `value` field starts with a relative
        // pointer. Point it far outside the buffer.
        let at = bytes.len() - std::mem::size_of::<ArchivedKvValue>();
        bytes[at..at + 4].copy_from_slice(&0x4000_0000i32.to_le_bytes());
        let reason = decode::<KvValue>(&bytes).unwrap_err();
        assert!(!reason.is_empty());
        assert_ne!(
            reason, "the record failed validation",
            "rkyv's reason is kept"
        );
        assert!(
            decode::<KvValue>(&[0xAB; 3]).is_err(),
            "too short to hold a record"
        );
    }
}
