//! The store's files: segments of checksummed records, and the manifest that names the
//! segments in use.
//!
//! A segment starts with [`SEGMENT_MAGIC`], then holds records back to back:
//!
//! ```text
//! u32 LE  length of what follows the checksum
//! u32 LE  CRC-32 of what follows it
//! u64 LE  sequence number (every record's own, increasing in the order of appends)
//! u8      kind: 1 put, 2 delete
//! u16 LE  key length, then the key, then the value (the rest)
//! ```
//!
//! Reading never trusts a length, and stops at the first record that does not check out:
//! what follows is reported and not read. A write cut short by a crash ends the newest
//! segment that way; past it there is nothing acknowledged, and looking further for a record
//! that checks out would find one in the bytes of a cut record's payload, which a client
//! chose (a forged record), at a cost that grows with the square of the bytes searched.
use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;

/// The first bytes of every segment file.
pub(crate) const SEGMENT_MAGIC: &[u8; 8] = b"MIDGELG1";
/// Bytes before the part the checksum covers.
const FRAME: usize = 8;
/// The smallest checksummed part: sequence, kind, key length.
const MIN_BODY: usize = 8 + 1 + 2;
/// The manifest's first line.
const MANIFEST_HEADER: &str = "midge-store 1";
/// The manifest's file name.
pub(crate) const MANIFEST: &str = "MANIFEST";

/// What a record does to its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Put = 1,
    Delete = 2,
}

/// Appends one record to `buf`; returns its size on disk.
pub(crate) fn encode(buf: &mut Vec<u8>, seq: u64, kind: Kind, key: &[u8], value: &[u8]) -> usize {
    let body_len = MIN_BODY + key.len() + value.len();
    let start = buf.len();
    buf.extend_from_slice(&(body_len as u32).to_le_bytes());
    buf.extend_from_slice(&[0; 4]);
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.push(kind as u8);
    buf.extend_from_slice(&(key.len() as u16).to_le_bytes());
    buf.extend_from_slice(key);
    buf.extend_from_slice(value);
    let crc = crc32fast::hash(&buf[start + FRAME..]);
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    FRAME + body_len
}

/// One record read back.
#[derive(Debug, Clone)]
pub(crate) struct Record {
    pub seq: u64,
    pub kind: Kind,
    pub key: Bytes,
    pub value: Bytes,
    pub size: u32,
}

/// Damage found in a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Damage {
    /// The file does not start as a segment does: nothing in it can be read.
    NotASegment,
    /// The segment's records stop at an incomplete or damaged one: a write cut short.
    TornTail {
        /// Where it starts.
        offset: u64,
        /// How many bytes it has.
        bytes: u64,
    },
    /// A segment older than the newest ends with an incomplete record. Only the newest is
    /// being written when the broker stops, so this one was cut or damaged since, and the
    /// records it held after `offset` are lost (not a torn write).
    Truncated {
        /// Where the incomplete record starts.
        offset: u64,
        /// How many bytes it has.
        bytes: u64,
    },
}

/// What a segment holds.
#[derive(Debug, Default)]
pub(crate) struct Segment {
    pub records: Vec<Record>,
    pub damage: Vec<Damage>,
    /// The length up to the end of the last valid record (where appending may go on).
    pub valid_len: u64,
}

/// Tries to read a record at `pos`: `Some` when it is whole and its checksum matches.
fn record_at(data: &Bytes, pos: usize) -> Option<Record> {
    let header = data.get(pos..pos + FRAME)?;
    let body_len = u32::from_le_bytes(header[..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(header[4..8].try_into().ok()?);
    if body_len < MIN_BODY {
        return None;
    }
    let body = data.get(pos + FRAME..(pos + FRAME).checked_add(body_len)?)?;
    let kind = match body[8] {
        1 => Kind::Put,
        2 => Kind::Delete,
        _ => return None,
    };
    let key_len = usize::from(u16::from_le_bytes([body[9], body[10]]));
    if MIN_BODY + key_len > body_len || crc32fast::hash(body) != crc {
        return None;
    }
    let start = pos + FRAME + MIN_BODY;
    Some(Record {
        seq: u64::from_le_bytes(body[..8].try_into().ok()?),
        kind,
        key: data.slice(start..start + key_len),
        value: data.slice(start + key_len..pos + FRAME + body_len),
        size: (FRAME + body_len) as u32,
    })
}

/// Reads every valid record of a segment, skipping and reporting what is not valid.
pub(crate) fn read_segment(data: Bytes) -> Segment {
    let mut seg = Segment::default();
    if data.get(..SEGMENT_MAGIC.len()) != Some(&SEGMENT_MAGIC[..]) {
        seg.damage.push(Damage::NotASegment);
        return seg;
    }
    let mut pos = SEGMENT_MAGIC.len();
    seg.valid_len = pos as u64;
    while pos < data.len() {
        if let Some(r) = record_at(&data, pos) {
            pos += r.size as usize;
            seg.valid_len = pos as u64;
            seg.records.push(r);
            continue;
        }
        // Not a record: the rest is not read (see the module's comment).
        seg.damage.push(Damage::TornTail { offset: pos as u64, bytes: (data.len() - pos) as u64 });
        break;
    }
    seg
}

/// The file name of segment `id`.
pub(crate) fn segment_name(id: u64) -> String {
    format!("seg-{id:06}.log")
}

/// Writes the manifest naming `segments` (in order) atomically: a temporary file, synced,
/// renamed over the old one, and the directory synced.
pub(crate) fn write_manifest(dir: &Path, segments: &[u64]) -> std::io::Result<()> {
    let mut text = format!("{MANIFEST_HEADER}\n");
    for id in segments {
        text.push_str(&segment_name(*id));
        text.push('\n');
    }
    let crc = crc32fast::hash(text.as_bytes());
    text.push_str(&format!("crc {crc:08x}\n"));
    let tmp = dir.join(format!("{MANIFEST}.tmp"));
    let mut f = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::File::options().create(true).truncate(true).write(true).mode(0o600).open(&tmp)?
    };
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(MANIFEST))?;
    sync_dir(dir)
}

/// Why a manifest cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// It cannot be read.
    #[error("cannot read {path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        error: String,
    },
    /// It is missing, though segments with records are there: they cannot be told apart from
    /// leftovers, and a first start would remove them.
    #[error(
        "{path} is missing, but {segments} segment file(s) with records are next to it (seg-*.log): \
             restore the manifest, or move the directory away to start afresh"
    )]
    Missing {
        /// The file.
        path: PathBuf,
        /// How many segment files hold records.
        segments: usize,
    },
    /// It is not a manifest, or it is damaged (its checksum does not match).
    #[error("{path} is damaged (not a midge store manifest, or its checksum does not match)")]
    Damaged {
        /// The file.
        path: PathBuf,
    },
}

/// Reads the manifest: the segment ids in order. `Ok(None)` when there is none (a new store).
pub(crate) fn read_manifest(dir: &Path) -> Result<Option<Vec<u64>>, ManifestError> {
    let path = dir.join(MANIFEST);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // A first start, unless segments with records are there (a start cut short
            // leaves one of the magic bytes alone).
            let with_records = std::fs::read_dir(dir)
                .map(|entries| {
                    entries
                        .flatten()
                        .filter(|e| e.file_name().to_string_lossy().starts_with("seg-"))
                        .filter(|e| e.metadata().is_ok_and(|m| m.len() > SEGMENT_MAGIC.len() as u64))
                        .count()
                })
                .unwrap_or(0);
            if with_records > 0 {
                return Err(ManifestError::Missing { path, segments: with_records });
            }
            return Ok(None);
        }
        Err(e) => return Err(ManifestError::Io { path, error: e.to_string() }),
    };
    let damaged = || ManifestError::Damaged { path: path.clone() };
    let (body, crc_line) = text.trim_end_matches('\n').rsplit_once('\n').ok_or_else(damaged)?;
    let body = format!("{body}\n");
    let crc = crc_line.strip_prefix("crc ").and_then(|c| u32::from_str_radix(c, 16).ok());
    if crc != Some(crc32fast::hash(body.as_bytes())) {
        return Err(damaged());
    }
    let mut lines = body.lines();
    if lines.next() != Some(MANIFEST_HEADER) {
        return Err(damaged());
    }
    lines
        .map(|l| {
            l.strip_prefix("seg-")
                .and_then(|l| l.strip_suffix(".log"))
                .and_then(|n| n.parse().ok())
                .ok_or_else(damaged)
        })
        .collect::<Result<Vec<u64>, _>>()
        .map(Some)
}

/// Syncs a directory, so that a file created or renamed in it survives a power loss.
pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(records: &[(u64, Kind, &str, &str)]) -> Vec<u8> {
        let mut buf = SEGMENT_MAGIC.to_vec();
        for (seq, kind, k, v) in records {
            encode(&mut buf, *seq, *kind, k.as_bytes(), v.as_bytes());
        }
        buf
    }

    #[test]
    fn records_read_back() {
        let data =
            segment(&[(1, Kind::Put, "a", "1"), (2, Kind::Delete, "a", ""), (3, Kind::Put, "b", "22")]);
        let seg = read_segment(Bytes::from(data.clone()));
        assert!(seg.damage.is_empty());
        assert_eq!(seg.valid_len, data.len() as u64);
        let got: Vec<_> = seg.records.iter().map(|r| (r.seq, r.kind, &r.key[..], &r.value[..])).collect();
        assert_eq!(
            got,
            vec![
                (1, Kind::Put, &b"a"[..], &b"1"[..]),
                (2, Kind::Delete, b"a", b""),
                (3, Kind::Put, b"b", b"22")
            ]
        );
    }

    #[test]
    fn a_torn_tail_is_cut_and_reported() {
        let whole = segment(&[(1, Kind::Put, "a", "1"), (2, Kind::Put, "b", "2")]);
        let last = FRAME + MIN_BODY + 2;
        for cut in 1..last {
            let seg = read_segment(Bytes::from(whole[..whole.len() - cut].to_vec()));
            assert_eq!(seg.records.len(), 1, "cut {cut}");
            assert_eq!(seg.valid_len as usize, whole.len() - last);
            assert_eq!(
                seg.damage,
                vec![Damage::TornTail { offset: seg.valid_len, bytes: (last - cut) as u64 }]
            );
        }
    }

    #[test]
    fn reading_stops_at_a_damaged_record() {
        let mut data =
            segment(&[(1, Kind::Put, "a", "one"), (2, Kind::Put, "b", "two"), (3, Kind::Put, "c", "three")]);
        let second = SEGMENT_MAGIC.len() + (FRAME + MIN_BODY + 1 + 3);
        data[second + FRAME + MIN_BODY + 1] ^= 0x40;
        let len = data.len();
        let seg = read_segment(Bytes::from(data));
        let keys: Vec<_> = seg.records.iter().map(|r| r.key.clone()).collect();
        assert_eq!(keys, vec![Bytes::from("a")]);
        assert_eq!(
            seg.damage,
            vec![Damage::TornTail { offset: second as u64, bytes: (len - second) as u64 }]
        );
    }

    #[test]
    fn a_record_hidden_in_a_cut_payload_is_not_read() {
        // A client's payload that holds a whole record of its own, cut short by a crash.
        let mut forged = Vec::new();
        encode(&mut forged, u64::MAX, Kind::Put, b"retain/secret", b"forged");
        let mut payload = vec![b'x'; 16];
        payload.extend_from_slice(&forged);
        payload.extend_from_slice(&[b'y'; 64]);
        let mut data = segment(&[(1, Kind::Put, "a", "1")]);
        encode(&mut data, 2, Kind::Put, b"retain/t", &payload);
        data.truncate(data.len() - 10);
        let seg = read_segment(Bytes::from(data));
        let keys: Vec<_> = seg.records.iter().map(|r| r.key.clone()).collect();
        assert_eq!(keys, vec![Bytes::from("a")]);
        assert!(matches!(seg.damage[..], [Damage::TornTail { .. }]), "{:?}", seg.damage);
    }

    #[test]
    fn manifests_round_trip_and_damage_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_manifest(dir.path()).unwrap(), None);
        write_manifest(dir.path(), &[3, 7]).unwrap();
        assert_eq!(read_manifest(dir.path()).unwrap(), Some(vec![3, 7]));
        let path = dir.path().join(MANIFEST);
        let text = std::fs::read_to_string(&path).unwrap().replace("000007", "000008");
        std::fs::write(&path, text).unwrap();
        assert!(matches!(read_manifest(dir.path()), Err(ManifestError::Damaged { .. })));
        assert!(read_segment(Bytes::from_static(b"garbage!")).damage == vec![Damage::NotASegment]);
    }

    #[test]
    fn a_missing_manifest_next_to_records_is_not_a_first_start() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(segment_name(1)), SEGMENT_MAGIC).unwrap();
        assert_eq!(read_manifest(dir.path()).unwrap(), None, "a start cut short: nothing in it");
        std::fs::write(dir.path().join(segment_name(2)), segment(&[(1, Kind::Put, "a", "1")])).unwrap();
        assert!(matches!(read_manifest(dir.path()), Err(ManifestError::Missing { segments: 1, .. })));
    }
}
