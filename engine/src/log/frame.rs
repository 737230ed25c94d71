//! Frames: how one batch sits in a segment, byte by byte.
//!
//! ```text
//! offset  size  field
//!      0     4  crc           u32 LE, CRC32 seeded with the log's seed, over
//!                             bytes 4..24, the payload and the padding
//!      4     4  payload_len   u32 LE, bytes of rkyv payload (> 0)
//!      8     8  lsn           u64 LE, this batch's LSN
//!     16     8  durable_lsn   u64 LE, highest LSN known durable when written
//!     24     n  payload       the batch, archived by rkyv
//!   24+n     p  padding       zeros up to the next multiple of 8
//! ```
//!
//! Frames start at 8-aligned offsets, so a payload read into an aligned buffer
//! can be validated and accessed in place with no copy. The checksum comes
//! first so that it covers one contiguous range (one CRC call per frame). A
//! length of zero never starts a frame: it marks the end of the data (a
//! preallocated zero tail).
//! `durable_lsn` lets recovery tell a torn tail (crash damage to writes that
//! were never synced) from corruption of synced data: see
//! `log::recovery`. Pure functions only: no I/O here.

use std::ops::Range;

use super::Lsn;
use crate::error::Invalid;

/// Bytes of a frame header.
pub const FRAME_HEADER_BYTES: usize = 24;
/// Every frame starts at a multiple of this many bytes.
pub const FRAME_ALIGN_BYTES: usize = 8;
/// The format's ceiling on one frame's payload (1 GiB): a length field above
/// it is invalid whatever the options say.
pub const FRAME_PAYLOAD_BYTES_MAX: u64 = 1 << 30;

const _: () = assert!(FRAME_HEADER_BYTES.is_multiple_of(FRAME_ALIGN_BYTES));
const _: () = assert!(FRAME_PAYLOAD_BYTES_MAX <= u32::MAX as u64);

/// Rounds `n` up to the frame alignment.
pub(crate) const fn align_up(n: usize) -> usize {
    n.div_ceil(FRAME_ALIGN_BYTES) * FRAME_ALIGN_BYTES
}

/// The bytes a frame with `payload_len` payload bytes takes, padding included.
pub(crate) const fn frame_len(payload_len: usize) -> usize {
    FRAME_HEADER_BYTES + align_up(payload_len)
}

/// The CRC seed of a log: a frame of another log (or of an earlier log in the
/// same directory) does not validate under this seed.
pub(crate) fn crc_seed(log_id: u128) -> u32 {
    crc32fast::hash(&log_id.to_le_bytes())
}

fn frame_crc(seed: u32, frame: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new_with_initial(seed);
    hasher.update(&frame[4..]);
    hasher.finalize()
}

/// Writes the checksum a frame at the start of `buf` needs under `seed`,
/// if its length field fits `buf`: for fuzzing past the checksum.
#[doc(hidden)]
pub(crate) fn seal(buf: &mut [u8], seed: u32) {
    if buf.len() < FRAME_HEADER_BYTES {
        return;
    }
    let payload_len = read_u32(buf, 4) as usize;
    if u64::try_from(payload_len).is_ok_and(|n| n > FRAME_PAYLOAD_BYTES_MAX) {
        return;
    }
    let len = frame_len(payload_len);
    if len > buf.len() {
        return;
    }
    let crc = frame_crc(seed, &buf[..len]);
    buf[..4].copy_from_slice(&crc.to_le_bytes());
}

/// Appends one frame to `out`, which must hold whole frames only (so the new
/// frame starts aligned).
pub(crate) fn encode_frame(
    out: &mut Vec<u8>,
    seed: u32,
    lsn: Lsn,
    durable_lsn: Lsn,
    payload: &[u8],
) {
    assert!(
        out.len().is_multiple_of(FRAME_ALIGN_BYTES),
        "frames start aligned"
    );
    assert!(
        !payload.is_empty(),
        "an empty payload would read as the end of data"
    );
    assert!(
        payload.len() as u64 <= FRAME_PAYLOAD_BYTES_MAX,
        "payload within the format's ceiling"
    );
    assert!(
        durable_lsn < lsn,
        "a frame cannot be durable before it is written"
    );
    let start = out.len();
    let payload_len =
        u32::try_from(payload.len()).expect("checked against FRAME_PAYLOAD_BYTES_MAX above");
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&payload_len.to_le_bytes());
    out.extend_from_slice(&lsn.0.to_le_bytes());
    out.extend_from_slice(&durable_lsn.0.to_le_bytes());
    out.extend_from_slice(payload);
    out.resize(start + frame_len(payload.len()), 0);
    let crc = frame_crc(seed, &out[start..]);
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
}

/// A frame that validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct FrameInfo {
    pub lsn: Lsn,
    pub durable_lsn: Lsn,
    /// Where the payload sits in the buffer given to [`decode_frame`].
    pub payload: Range<usize>,
    /// Where the next frame would start.
    pub next: usize,
}

/// The length of the frame whose header starts `buf`, if the header is
/// whole, names `expected` as its LSN and a plausible payload length; for
/// stepping over frames nobody reads. Checks no CRC: a caller must treat a
/// `None` (or a later mismatch) by decoding with [`decode_frame`].
pub(crate) fn peek_frame_len(buf: &[u8], expected: Lsn) -> Option<usize> {
    let head = buf.get(..FRAME_HEADER_BYTES)?;
    let lsn = u64::from_le_bytes(head[8..16].try_into().expect("eight bytes"));
    if lsn != expected.0 {
        return None;
    }
    claimed_frame_len(head)
}

/// The whole length of the frame whose header starts `buf`, as its length
/// field claims it, if the field is there and plausible (not zero, within
/// the format's ceiling). Checks nothing else: for sizing a read, never for
/// trusting the frame.
pub(crate) fn claimed_frame_len(buf: &[u8]) -> Option<usize> {
    let head = buf.get(..8)?;
    let payload_len = read_u32(head, 4);
    if payload_len == 0 || u64::from(payload_len) > FRAME_PAYLOAD_BYTES_MAX {
        return None;
    }
    Some(frame_len(payload_len as usize))
}

/// What [`decode_frame`] found at a position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Decoded {
    /// A valid frame.
    Frame(FrameInfo),
    /// The end of the data: the buffer ends, or a zero length field.
    End,
    /// Bytes that are not a valid frame.
    Invalid(Invalid),
}

fn read_u32(buf: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(buf[at..at + 4].try_into().expect("slice of four bytes"))
}

fn read_u64(buf: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(buf[at..at + 8].try_into().expect("slice of eight bytes"))
}

/// Decodes the frame at `pos` in `buf`. With `expected`, a frame whose LSN
/// differs is [`Invalid::UnexpectedLsn`]. The payload is not validated here.
pub(crate) fn decode_frame(buf: &[u8], pos: usize, seed: u32, expected: Option<Lsn>) -> Decoded {
    debug_assert!(pos.is_multiple_of(FRAME_ALIGN_BYTES));
    let rest = buf.len().saturating_sub(pos);
    if rest == 0 {
        return Decoded::End;
    }
    if rest < 8 {
        return if buf[pos..].iter().all(|b| *b == 0) {
            Decoded::End
        } else {
            Decoded::Invalid(Invalid::Truncated)
        };
    }
    let payload_len = read_u32(buf, pos + 4);
    if payload_len == 0 {
        return Decoded::End;
    }
    if u64::from(payload_len) > FRAME_PAYLOAD_BYTES_MAX {
        return Decoded::Invalid(Invalid::BadLength(payload_len));
    }
    let len = frame_len(payload_len as usize);
    if len > rest {
        return Decoded::Invalid(Invalid::Truncated);
    }
    let frame = &buf[pos..pos + len];
    if read_u32(frame, 0) != frame_crc(seed, frame) {
        return Decoded::Invalid(Invalid::Checksum);
    }
    let lsn = Lsn(read_u64(frame, 8));
    let durable_lsn = Lsn(read_u64(frame, 16));
    if expected.is_some_and(|e| e != lsn) {
        return Decoded::Invalid(Invalid::UnexpectedLsn(lsn));
    }
    let payload_start = pos + FRAME_HEADER_BYTES;
    Decoded::Frame(FrameInfo {
        lsn,
        durable_lsn,
        payload: payload_start..payload_start + payload_len as usize,
        next: pos + len,
    })
}

/// Looks for a valid frame anywhere after `from` whose `durable_lsn` is at
/// least `lsn`: proof that the frame expected at `lsn` had been synced, so its
/// invalidity is corruption, not crash damage. Scans aligned offsets only.
pub(crate) fn find_frame_vouching_for(
    buf: &[u8],
    from: usize,
    seed: u32,
    lsn: Lsn,
) -> Option<usize> {
    let start = align_up(from);
    let mut pos = start;
    while pos + FRAME_HEADER_BYTES <= buf.len() {
        let payload_len = read_u32(buf, pos + 4);
        let frame_lsn = read_u64(buf, pos + 8);
        let durable_lsn = read_u64(buf, pos + 16);
        // Cheap plausibility checks before the CRC, which costs the length
        // the candidate claims: most positions fail here. A frame after
        // `lsn`'s place has an LSN past it by at most the frames that fit
        // in between (each at least FRAME_MIN_BYTES), and a durable LSN
        // below its own. Without the LSN bound, a payload of repeated
        // bytes passed them at every aligned offset and each claimed tens
        // of megabytes to checksum: minutes of recovery for one torn
        // frame.
        let lsn_max = lsn
            .0
            .saturating_add(((pos - start) / FRAME_MIN_BYTES) as u64 + 1);
        if payload_len != 0
            && frame_lsn > lsn.0
            && frame_lsn <= lsn_max
            && durable_lsn >= lsn.0
            && durable_lsn < frame_lsn
            && pos + frame_len(payload_len as usize) <= buf.len()
            && let Decoded::Frame(_) = decode_frame(buf, pos, seed, None)
        {
            return Some(pos);
        }
        pos += FRAME_ALIGN_BYTES;
    }
    None
}

/// The smallest frame: a header and one 8-byte-padded payload byte.
const FRAME_MIN_BYTES: usize = FRAME_HEADER_BYTES + FRAME_ALIGN_BYTES;

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: u32 = 0x1234_5678;

    /// Bytes that repeat (a value of one byte over and over) pass the
    /// length and durable-LSN checks at every aligned offset; the LSN bound
    /// keeps the search from checksumming the megabytes each claims (it
    /// took minutes for one torn frame followed by such a payload).
    #[test]
    fn repeated_bytes_are_no_vouching_candidates() {
        let mut buf = vec![0u8; 32];
        buf.extend(std::iter::repeat_n(0x02u8, 1 << 20));
        buf.extend(vec![0u8; 64 << 20]);
        // Without the bound this call checksums ~33 MB at each of 130,000
        // offsets: the test does not finish.
        assert_eq!(find_frame_vouching_for(&buf, 1, SEED, Lsn(2)), None);
    }

    fn one(payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_frame(&mut out, SEED, Lsn(7), Lsn(5), payload);
        out
    }

    #[test]
    fn round_trip_and_alignment() {
        for n in 1..40 {
            let payload: Vec<u8> = (0..n as u8).collect();
            let buf = one(&payload);
            assert_eq!(buf.len(), frame_len(n));
            assert!(buf.len().is_multiple_of(8));
            let Decoded::Frame(info) = decode_frame(&buf, 0, SEED, Some(Lsn(7))) else {
                panic!("frame of {n} bytes did not decode");
            };
            assert_eq!(&buf[info.payload.clone()], &payload[..]);
            assert_eq!(info.lsn, Lsn(7));
            assert_eq!(info.durable_lsn, Lsn(5));
            assert_eq!(info.next, buf.len());
        }
    }

    #[test]
    fn every_flipped_bit_is_caught() {
        let buf = one(b"hello, frame");
        for byte in 0..buf.len() {
            for bit in 0..8 {
                let mut bad = buf.clone();
                bad[byte] ^= 1 << bit;
                let got = decode_frame(&bad, 0, SEED, Some(Lsn(7)));
                assert!(
                    matches!(got, Decoded::Invalid(_) | Decoded::End),
                    "flip of bit {bit} in byte {byte} validated: {got:?}"
                );
            }
        }
    }

    #[test]
    fn another_logs_frame_fails_the_checksum() {
        let buf = one(b"x");
        assert_eq!(
            decode_frame(&buf, 0, SEED ^ 1, None),
            Decoded::Invalid(Invalid::Checksum)
        );
    }

    #[test]
    fn wrong_lsn_is_reported() {
        let buf = one(b"x");
        assert_eq!(
            decode_frame(&buf, 0, SEED, Some(Lsn(8))),
            Decoded::Invalid(Invalid::UnexpectedLsn(Lsn(7)))
        );
    }

    #[test]
    fn truncation_and_lengths() {
        let buf = one(b"some payload bytes");
        for cut in 1..buf.len() {
            let got = decode_frame(&buf[..cut], 0, SEED, None);
            assert_eq!(got, Decoded::Invalid(Invalid::Truncated), "cut at {cut}");
        }
        assert_eq!(decode_frame(&[0; 64], 0, SEED, None), Decoded::End);
        assert_eq!(decode_frame(&[], 0, SEED, None), Decoded::End);
        let mut huge = buf.clone();
        huge[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            decode_frame(&huge, 0, SEED, None),
            Decoded::Invalid(Invalid::BadLength(u32::MAX))
        );
    }

    #[test]
    fn vouching_frame_is_found_only_when_durable_covers() {
        let mut buf = Vec::new();
        encode_frame(&mut buf, SEED, Lsn(1), Lsn(0), b"aaaa");
        encode_frame(&mut buf, SEED, Lsn(2), Lsn(1), b"bbbb");
        encode_frame(&mut buf, SEED, Lsn(3), Lsn(1), b"cccc");
        let second = frame_len(4);
        // Frame 2 is bad; frame 3 says only LSN 1 was durable: a torn tail.
        assert_eq!(
            find_frame_vouching_for(&buf, second + 1, SEED, Lsn(2)),
            None
        );
        // Frame 1 is bad; frames 2 and 3 say LSN 1 was durable: corruption.
        assert_eq!(find_frame_vouching_for(&buf, 1, SEED, Lsn(1)), Some(second));
    }
}
