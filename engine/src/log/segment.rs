//! Segments: the files of the log, and their headers.
//!
//! A segment is named by the LSN of its first frame, zero-padded to 20 digits
//! (`00000000000000000001.seg`), so that names sort in log order. It starts
//! with a 64-byte header, then frames from offset 64:
//!
//! ```text
//! offset  size  field
//!      0     8  magic            b"WAYMKLOG"
//!      8     4  format_version   u32 LE (this build writes 3, reads 1 to 3)
//!     12     4  header_len       u32 LE, 64 in versions 1 and 2
//!     16    16  log_id           u128 LE, random, the same in every segment
//!     32     8  base_lsn         u64 LE, LSN of the segment's first frame
//!     40     8  created_unix_ms  u64 LE, informational
//!     48    12  reserved         zeros
//!     60     4  header_crc       u32 LE, CRC32 (unseeded) of bytes 0..60
//! ```

use std::path::{Path, PathBuf};

use super::{FORMAT_VERSION, FORMAT_VERSION_OLDEST, Lsn};
use crate::error::Invalid;
use crate::storage::Storage;

/// The magic bytes that open every segment.
pub const SEGMENT_MAGIC: [u8; 8] = *b"WAYMKLOG";
/// Bytes of a segment header; frames start here.
pub const SEGMENT_HEADER_BYTES: usize = 64;
/// The file name suffix of segments.
pub const SEGMENT_SUFFIX: &str = ".seg";

const _: () = assert!(SEGMENT_HEADER_BYTES.is_multiple_of(super::frame::FRAME_ALIGN_BYTES));

/// The header length as the header records it.
const HEADER_LEN_FIELD: u32 = 64;
const _: () = assert!(HEADER_LEN_FIELD as usize == SEGMENT_HEADER_BYTES);

/// A segment header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    /// The format version the segment was written in.
    pub format_version: u32,
    /// The log's id.
    pub log_id: u128,
    /// The LSN of the segment's first frame.
    pub base_lsn: Lsn,
    /// When the segment was created, in milliseconds since the Unix epoch.
    pub created_unix_ms: u64,
}

/// Why a header did not decode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum HeaderError {
    Invalid(Invalid),
    UnsupportedVersion(u32),
}

impl SegmentHeader {
    /// The header's bytes.
    pub(crate) fn encode(&self) -> [u8; SEGMENT_HEADER_BYTES] {
        let mut out = [0u8; SEGMENT_HEADER_BYTES];
        out[0..8].copy_from_slice(&SEGMENT_MAGIC);
        out[8..12].copy_from_slice(&self.format_version.to_le_bytes());
        out[12..16].copy_from_slice(&HEADER_LEN_FIELD.to_le_bytes());
        out[16..32].copy_from_slice(&self.log_id.to_le_bytes());
        out[32..40].copy_from_slice(&self.base_lsn.0.to_le_bytes());
        out[40..48].copy_from_slice(&self.created_unix_ms.to_le_bytes());
        let crc = crc32fast::hash(&out[0..60]);
        out[60..64].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes and checks a header.
    pub(crate) fn decode(buf: &[u8]) -> Result<SegmentHeader, HeaderError> {
        if buf.len() < SEGMENT_HEADER_BYTES {
            return Err(HeaderError::Invalid(Invalid::Truncated));
        }
        let u32_at =
            |at: usize| u32::from_le_bytes(buf[at..at + 4].try_into().expect("four bytes"));
        let u64_at =
            |at: usize| u64::from_le_bytes(buf[at..at + 8].try_into().expect("eight bytes"));
        if buf[0..8] != SEGMENT_MAGIC {
            return Err(HeaderError::Invalid(Invalid::BadMagic));
        }
        if u32_at(60) != crc32fast::hash(&buf[0..60]) {
            return Err(HeaderError::Invalid(Invalid::HeaderChecksum));
        }
        let format_version = u32_at(8);
        // Version 2 only added event variants (`RunStatus::Paused`): its
        // frames and payloads decode version 1 segments unchanged, so one
        // decoder reads both. A version whose layout differs gets its own.
        if !(FORMAT_VERSION_OLDEST..=FORMAT_VERSION).contains(&format_version) {
            return Err(HeaderError::UnsupportedVersion(format_version));
        }
        if u32_at(12) != HEADER_LEN_FIELD {
            return Err(HeaderError::Invalid(Invalid::BadLength(u32_at(12))));
        }
        Ok(SegmentHeader {
            format_version,
            log_id: u128::from_le_bytes(buf[16..32].try_into().expect("sixteen bytes")),
            base_lsn: Lsn(u64_at(32)),
            created_unix_ms: u64_at(40),
        })
    }
}

/// The file name of the segment whose first LSN is `base`.
pub(crate) fn segment_file_name(base: Lsn) -> String {
    format!("{:020}{SEGMENT_SUFFIX}", base.0)
}

/// The largest base LSN a segment may have. LSNs start at 1 and a log
/// never gets near 2^63 batches; a name outside `1..=MAX_BASE_LSN` is not a
/// segment, so crafted names cannot make LSN arithmetic wrap.
pub(crate) const MAX_BASE_LSN: u64 = i64::MAX as u64;

/// The base LSN named by a segment file name, if it is one.
pub(crate) fn parse_segment_file_name(name: &str) -> Option<Lsn> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits
        .parse()
        .ok()
        .filter(|base| (1..=MAX_BASE_LSN).contains(base))
        .map(Lsn)
}

/// The segments in `log_dir`, in LSN order.
pub(crate) fn list_segments(
    storage: &dyn Storage,
    log_dir: &Path,
) -> std::io::Result<Vec<(Lsn, PathBuf)>> {
    let mut segments: Vec<(Lsn, PathBuf)> = storage
        .list_dir(log_dir)?
        .into_iter()
        .filter_map(|name| parse_segment_file_name(&name).map(|lsn| (lsn, log_dir.join(name))))
        .collect();
    segments.sort();
    Ok(segments)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> SegmentHeader {
        SegmentHeader {
            format_version: FORMAT_VERSION,
            log_id: 0xdead_beef_u128 << 64 | 7,
            base_lsn: Lsn(42),
            created_unix_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn header_round_trips() {
        assert_eq!(SegmentHeader::decode(&header().encode()), Ok(header()));
    }

    #[test]
    fn header_checks() {
        let good = header().encode();
        let mut bad = good;
        bad[0] = b'X';
        assert_eq!(
            SegmentHeader::decode(&bad),
            Err(HeaderError::Invalid(Invalid::BadMagic))
        );
        let mut bad = good;
        bad[20] ^= 1;
        assert_eq!(
            SegmentHeader::decode(&bad),
            Err(HeaderError::Invalid(Invalid::HeaderChecksum))
        );
        assert_eq!(
            SegmentHeader::decode(&good[..63]),
            Err(HeaderError::Invalid(Invalid::Truncated))
        );
        let newer = SegmentHeader {
            format_version: FORMAT_VERSION + 1,
            ..header()
        }
        .encode();
        assert_eq!(
            SegmentHeader::decode(&newer),
            Err(HeaderError::UnsupportedVersion(FORMAT_VERSION + 1))
        );
        let older = SegmentHeader {
            format_version: 1,
            ..header()
        };
        assert_eq!(SegmentHeader::decode(&older.encode()), Ok(older));
        let zero = SegmentHeader {
            format_version: 0,
            ..header()
        };
        assert_eq!(
            SegmentHeader::decode(&zero.encode()),
            Err(HeaderError::UnsupportedVersion(0))
        );
    }

    #[test]
    fn names_sort_in_lsn_order_and_parse_back() {
        assert_eq!(segment_file_name(Lsn(1)), "00000000000000000001.seg");
        assert_eq!(
            parse_segment_file_name(&segment_file_name(Lsn(MAX_BASE_LSN))),
            Some(Lsn(MAX_BASE_LSN))
        );
        assert!(segment_file_name(Lsn(9)) < segment_file_name(Lsn(10)));
        // Outside the LSN space: LSN arithmetic on them would wrap.
        for base in [0, MAX_BASE_LSN + 1, u64::MAX] {
            assert_eq!(parse_segment_file_name(&segment_file_name(Lsn(base))), None);
        }
        for bad in [
            "1.seg",
            "0000000000000000000a.seg",
            "00000000000000000001.log",
            "LOCK",
        ] {
            assert_eq!(parse_segment_file_name(bad), None, "{bad}");
        }
    }
}
