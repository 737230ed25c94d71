//! Read-only facts about a state directory for tools: its segments with
//! their headers, and the views file's meta. Takes no lock and writes
//! nothing, so it works on a copied directory and on a live one.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{ReadableDatabase, TableDefinition};

use crate::error::{Error, Invalid, Result};
use crate::log::reader::check_header;
use crate::log::segment::SEGMENT_HEADER_BYTES;
use crate::log::{LogReader, Lsn};
use crate::storage::{FsStorage, OpenMode, Storage, read_up_to};
pub use crate::view::store::VIEWS_FILE_NAME;

/// One segment file and what its header says.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SegmentInfo {
    /// The file.
    pub path: PathBuf,
    /// Its size in bytes (preallocated segments are full-size from birth).
    pub bytes: u64,
    /// The LSN of its first frame.
    pub base_lsn: Lsn,
    /// The format version it was written in.
    pub format_version: u32,
    /// The log's id.
    pub log_id: u128,
    /// When it was created, milliseconds since the Unix epoch.
    pub created_unix_ms: u64,
}

/// The views file's meta, as its last snapshot left it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ViewsMeta {
    /// Every batch up to this LSN is in the views file.
    pub applied_lsn: Lsn,
    /// The log the views belong to.
    pub log_id: u128,
    /// The views' format version.
    pub format_version: u32,
    /// The file's size in bytes.
    pub bytes: u64,
}

/// Every segment of the state directory `dir`, in LSN order, with its
/// header checked; a newest segment whose creation a crash tore (a header
/// that does not check, zeros after it) is left out, as the next open
/// removes it.
///
/// # Errors
///
/// [`Error::NotAStateDir`], [`Error::Corruption`] for a bad header,
/// [`Error::UnsupportedVersion`], or I/O errors.
pub fn segments(dir: impl AsRef<Path>) -> Result<Vec<SegmentInfo>> {
    let storage: Arc<dyn Storage> = Arc::new(FsStorage);
    let reader = LogReader::open_on(Arc::clone(&storage), dir)?;
    let mut out = Vec::new();
    let listed = reader.segments()?;
    let newest = listed.last().map(|(base, _)| *base);
    for (base, path) in listed {
        let file = storage
            .open(&path, OpenMode::Read)
            .map_err(|e| Error::io(&path, e))?;
        let bytes = file.len().map_err(|e| Error::io(&path, e))?;
        let mut head = [0u8; SEGMENT_HEADER_BYTES];
        let n = read_up_to(file.as_ref(), &mut head, 0).map_err(|e| Error::io(&path, e))?;
        let header = match check_header(&path, base, &head[..n]) {
            Ok(header) => header,
            // The newest segment's creation torn by a crash: the next
            // open removes it, and nothing in it was acknowledged.
            Err(Error::Corruption { .. })
                if Some(base) == newest
                    && crate::log::reader::is_torn_creation(storage.as_ref(), &path)? =>
            {
                continue;
            }
            Err(e) => return Err(e),
        };
        out.push(SegmentInfo {
            path,
            bytes,
            base_lsn: base,
            format_version: header.format_version,
            log_id: header.log_id,
            created_unix_ms: header.created_unix_ms,
        });
    }
    Ok(out)
}

/// The views file's meta, or `None` if the directory has no views file.
/// The file is never written: a file that redb must repair (its worker
/// crashed, or still runs) is repaired in memory, as the worker's next
/// open would on disk.
///
/// # Errors
///
/// [`Error::Views`] if the file cannot be read.
pub fn views_meta(dir: impl AsRef<Path>) -> Result<Option<ViewsMeta>> {
    let path = dir.as_ref().join(VIEWS_FILE_NAME);
    crate::view::store::guarded(&path, || views_meta_unguarded(&path))
}

fn views_meta_unguarded(path: &Path) -> Result<Option<ViewsMeta>> {
    if !path.exists() {
        return Ok(None);
    }
    let err = |e: &dyn std::fmt::Display| Error::Views {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let bytes = std::fs::metadata(path)
        .map_err(|e| Error::io(path, e))?
        .len();
    let db = crate::view::store::open_for_reading(path)?;
    let txn = db.begin_read().map_err(|e| err(&e))?;
    let meta: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
    let table = match txn.open_table(meta) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(err(&e)),
    };
    let get = |name: &str| -> Result<Vec<u8>> {
        table
            .get(name)
            .map_err(|e| err(&e))?
            .map(|v| v.value().to_vec())
            .ok_or_else(|| err(&format!("meta lacks {name}")))
    };
    let fixed = |name: &str, v: Vec<u8>, want: usize| -> Result<Vec<u8>> {
        if v.len() == want {
            Ok(v)
        } else {
            Err(err(&format!(
                "meta {name} is {} bytes, not {want}",
                v.len()
            )))
        }
    };
    let applied = fixed("applied_lsn", get("applied_lsn")?, 8)?;
    let log_id = fixed("log_id", get("log_id")?, 16)?;
    let version = fixed("format_version", get("format_version")?, 4)?;
    Ok(Some(ViewsMeta {
        applied_lsn: Lsn(u64::from_le_bytes(
            applied.try_into().expect("checked: 8 bytes"),
        )),
        log_id: u128::from_le_bytes(log_id.try_into().expect("checked: 16 bytes")),
        format_version: u32::from_le_bytes(version.try_into().expect("checked: 4 bytes")),
        bytes,
    }))
}

/// The names of the views' tables in `views.redb`.
pub fn view_table_names() -> Vec<&'static str> {
    crate::view::key::Table::ALL
        .iter()
        .map(|t| crate::view::table_name(*t))
        .collect()
}

/// One views table's entries in key order: raw key and record bytes.
pub type TableRows = crate::view::store::Rows;

/// The views file at `path` as of one commit: the `applied_lsn` it
/// records and every views table (named as [`view_table_names`] names
/// them) with its entries, for comparing two views files. One read
/// transaction: a worker that snapshots meanwhile (a live directory)
/// cannot mix two commits.
///
/// # Errors
///
/// [`Error::Views`] if the file, its meta or a table cannot be read.
pub fn view_tables(path: impl AsRef<Path>) -> Result<(Lsn, Vec<(&'static str, TableRows)>)> {
    let path = path.as_ref();
    crate::view::store::guarded(path, || view_tables_unguarded(path))
}

fn view_tables_unguarded(path: &Path) -> Result<(Lsn, Vec<(&'static str, TableRows)>)> {
    let err = |e: &dyn std::fmt::Display| Error::Views {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let db = crate::view::store::open_for_reading(path)?;
    let txn = db.begin_read().map_err(|e| err(&e))?;
    let meta: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
    let applied = txn
        .open_table(meta)
        .map_err(|e| err(&e))?
        .get("applied_lsn")
        .map_err(|e| err(&e))?
        .and_then(|v| <[u8; 8]>::try_from(v.value()).ok())
        .map(u64::from_le_bytes)
        .ok_or_else(|| err(&"meta lacks an 8-byte applied_lsn"))?;
    let mut tables = Vec::new();
    for name in view_table_names() {
        let def: TableDefinition<&[u8], &[u8]> = TableDefinition::new(name);
        let t = match txn.open_table(def) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => {
                tables.push((name, Vec::new()));
                continue;
            }
            Err(e) => return Err(err(&e)),
        };
        let mut rows = Vec::new();
        for item in redb::ReadableTable::iter(&t).map_err(|e| err(&e))? {
            let (k, v) = item.map_err(|e| err(&e))?;
            rows.push((k.value().to_vec(), v.value().to_vec()));
        }
        tables.push((name, rows));
    }
    Ok((Lsn(applied), tables))
}

/// Whether the invalid frame at `offset` of `segment` (where LSN
/// `expected_lsn` should be) is corruption rather than a torn tail (see
/// RELIABILITY.md): it is still invalid, and either its checksum holds (it
/// was written whole, with a wrong LSN or payload) or some later valid
/// frame of this log records a durable LSN at or above it. A frame a live
/// writer has finished since the caller found it incomplete is valid:
/// `false`. Reads the segment whole (twice if a later frame vouches).
///
/// # Errors
///
/// I/O errors, or a segment whose header does not decode.
pub fn is_vouched_for(segment: impl AsRef<Path>, offset: u64, expected_lsn: Lsn) -> Result<bool> {
    is_vouched_for_on(&FsStorage, segment.as_ref(), offset, expected_lsn)
}

/// [`is_vouched_for`] on `storage`.
pub(crate) fn is_vouched_for_on(
    storage: &dyn Storage,
    path: &Path,
    offset: u64,
    expected_lsn: Lsn,
) -> Result<bool> {
    use crate::log::frame::{Decoded, FRAME_ALIGN_BYTES, decode_frame, find_frame_vouching_for};
    use crate::log::reader::LoadedSegment;
    let seg = LoadedSegment::load(storage, path, 0)?;
    let base = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(crate::log::segment::parse_segment_file_name)
        .ok_or_else(|| Error::NotAStateDir {
            path: path.to_path_buf(),
            why: "not a segment file name".into(),
        })?;
    let header = check_header(path, base, &seg.buf)?;
    let seed = crate::log::frame::crc_seed(header.log_id);
    // `Some(corrupt)` if the frame at `offset` is whole (its checksum
    // holds): corrupt unless it is the valid frame expected. `None` if it
    // is not (yet) a whole frame.
    let whole = |seg: &LoadedSegment| {
        let pos = seg.pos(offset);
        if !pos.is_multiple_of(FRAME_ALIGN_BYTES) {
            return None;
        }
        match decode_frame(&seg.buf, pos, seed, Some(expected_lsn)) {
            Decoded::Frame(info) => {
                Some(crate::event::access_batch(&seg.buf[info.payload]).is_err())
            }
            Decoded::Invalid(Invalid::UnexpectedLsn(_)) => Some(true),
            _ => None,
        }
    };
    if let Some(corrupt) = whole(&seg) {
        return Ok(corrupt);
    }
    if find_frame_vouching_for(&seg.buf, seg.pos(offset) + 1, seed, expected_lsn).is_none() {
        return Ok(false);
    }
    // On a live log the load may have read the frame unfinished and the
    // voucher (written after the frame was synced) later: read again,
    // after the voucher, before calling it corruption.
    let again = LoadedSegment::load(storage, path, 0)?;
    Ok(whole(&again).unwrap_or(true))
}
