//! mosquitto's database (`mosquitto.db`, the format of mosquitto 1.6 and 2.0, versions 5
//! and 6) read at midge's first start with persistence on, so that a mosquitto user keeps
//! retained messages, persistent sessions, subscriptions and queued messages.
//!
//! The file is a header and chunks; a chunk's fixed part is a C struct (big-endian 16- and
//! 32-bit fields, host-order 64-bit fields: little-endian on every machine midge runs on),
//! then its strings, payload and MQTT 5 properties. Read as mosquitto reads it, and stricter:
//! every chunk's parts must add up to its length. The file is left as it is.
use std::collections::HashMap;
use std::path::Path;

use bytes::{BufMut, Bytes, BytesMut};
use bytestring::ByteString;
use midge_codec::{
    decode_within, DecodeLimits, Packet, Properties, ProtocolVersion, QoS, RetainHandling,
    SubscriptionOptions,
};

use super::records::{self, Clock, Progress, SessionRecord};
use super::{Op, Records, Store};
use crate::session::Message;

const MAGIC: &[u8; 15] = b"\x00\xB5\x00mosquitto db";

/// Why a mosquitto database cannot be imported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    /// Not a mosquitto database.
    #[error("not a mosquitto database (unrecognised file format)")]
    NotMosquitto,
    /// A version midge does not read.
    #[error(
        "database format version {0} is not supported (midge reads versions 5 and 6: mosquitto 1.6 and 2.0)"
    )]
    Version(u32),
    /// A chunk that does not read as its type says.
    #[error("chunk {index} (type {kind}) at offset {offset} is damaged")]
    Chunk {
        /// Its position among the chunks.
        index: usize,
        /// Its type.
        kind: u32,
        /// Where it starts.
        offset: usize,
    },
}

/// What the import found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Imported {
    /// Retained messages.
    pub retained: usize,
    /// Sessions.
    pub sessions: usize,
    /// Subscriptions.
    pub subscriptions: usize,
    /// Messages queued or in flight for sessions.
    pub queued: usize,
    /// Incoming QoS 2 messages not yet released (delivered at import: mosquitto forwards
    /// them only on PUBREL).
    pub incoming: usize,
    /// Chunks skipped (unknown type, unknown message, expired).
    pub skipped: usize,
}

struct StoredMsg {
    topic: ByteString,
    payload: Bytes,
    qos: QoS,
    retain: bool,
    properties: Properties,
    expiry: i64,
    source: ByteString,
}

/// Reads a fixed number of bytes at a time.
struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.data.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(s)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn host64(&mut self) -> Option<u64> {
        self.take(8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes)
    }
    fn string(&mut self, n: usize) -> Option<ByteString> {
        let b = self.take(n)?;
        // A C string in mosquitto: cut at a NUL (a writer bug leaves garbage after one).
        let b = &b[..b.iter().position(|&c| c == 0).unwrap_or(b.len())];
        ByteString::try_from(Bytes::copy_from_slice(b)).ok()
    }
}

/// An MQTT 5 property block as stored (possibly empty), read through the codec by wrapping
/// it in a PUBLISH.
fn properties(block: &[u8]) -> Option<Properties> {
    if block.is_empty() {
        return Some(Properties::new());
    }
    let mut body = BytesMut::new();
    body.put_u16(1);
    body.put_u8(b'x');
    body.extend_from_slice(block);
    let mut frame = BytesMut::new();
    frame.put_u8(0x30);
    let mut len = body.len();
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        frame.put_u8(byte);
        if len == 0 {
            break;
        }
    }
    frame.extend_from_slice(&body);
    match decode_within(&mut frame, ProtocolVersion::V5, DecodeLimits::stored()) {
        Ok(Some(Packet::Publish(p))) => Some(p.properties),
        _ => None,
    }
}

/// An empty mosquitto 2.0 database, byte for byte what mosquitto writes when it holds
/// nothing: the header (magic, a CRC field mosquitto leaves 0, format version 6) and the
/// configuration chunk (last message id 0, clean shutdown, 8-byte ids). midge writes it as
/// the `persistence_file` when there is none, so that the file a mosquitto user knows is
/// there, mosquitto itself can start from it, and removing it resets the broker (see
/// `Server::restore`).
pub fn empty_database() -> Vec<u8> {
    let mut out = Vec::with_capacity(47);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&0u32.to_be_bytes());
    out.extend_from_slice(&6u32.to_be_bytes());
    out.extend_from_slice(&1u32.to_be_bytes()); // chunk type: CFG
    out.extend_from_slice(&16u32.to_be_bytes()); // sizeof(struct PF_cfg)
    out.extend_from_slice(&0u64.to_le_bytes()); // last_db_id (host order)
    out.push(1); // shutdown: clean
    out.push(8); // dbid_size
    out.extend_from_slice(&[0; 6]); // the struct's padding
    out
}

/// A mosquitto database found at the first start, read and ready to import.
#[derive(Debug)]
pub struct Found {
    ops: Vec<Op>,
    imported: Imported,
}

/// Why the mosquitto database found at the first start cannot be imported.
#[derive(Debug, thiserror::Error)]
pub enum ImportFailure {
    /// It cannot be read.
    #[error("cannot read {} to import it: {source}", path.display())]
    Read {
        /// The database.
        path: std::path::PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// It is not a database midge can read.
    #[error("cannot import {} (mosquitto's database): {source}", path.display())]
    Format {
        /// The database.
        path: std::path::PathBuf,
        /// What is wrong with it.
        source: ImportError,
    },
}

/// Reads `path`, mosquitto's database, at midge's first start with persistence on: `None`
/// when there is none (or it is empty). Called before the store is made, so that a broker
/// refusing to start over a database it cannot import tries again at the next start, as
/// mosquitto refuses to start over one it cannot restore.
pub fn load(path: &Path) -> Result<Option<Found>, ImportFailure> {
    let data = match std::fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(ImportFailure::Read { path: path.to_owned(), source }),
    };
    if data.is_empty() {
        return Ok(None);
    }
    let (ops, imported) = read(&data, &Clock::now())
        .map_err(|source| ImportFailure::Format { path: path.to_owned(), source })?;
    Ok(Some(Found { ops, imported }))
}

/// Puts what [`load`] read from `path` into `store` (and `records`, which the broker then
/// restores), and logs it.
pub fn import_into(found: Found, path: &Path, store: &Store, records: &mut Records) {
    let Found { ops, imported } = found;
    for op in &ops {
        if let Op::Put(k, v) = op {
            records.insert(Bytes::copy_from_slice(k), Bytes::copy_from_slice(v));
        }
    }
    store.append(ops);
    tracing::info!(
        "Imported {} (mosquitto's database): {} retained messages, {} sessions, {} subscriptions, \
         {} queued messages{}{}. The file is left as it was.",
        path.display(),
        imported.retained,
        imported.sessions,
        imported.subscriptions,
        imported.queued,
        if imported.incoming > 0 {
            format!(", {} QoS 2 messages received and not yet released", imported.incoming)
        } else {
            String::new()
        },
        if imported.skipped > 0 { format!(" ({} entries skipped)", imported.skipped) } else { String::new() }
    );
}

/// Reads a mosquitto database into store operations.
pub fn read(data: &[u8], clock: &Clock) -> Result<(Vec<Op>, Imported), ImportError> {
    if data.get(..15) != Some(&MAGIC[..]) {
        return Err(ImportError::NotMosquitto);
    }
    let version = data
        .get(19..23)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or(ImportError::NotMosquitto)?;
    if !(5..=6).contains(&version) {
        return Err(ImportError::Version(version));
    }
    let now_s = (clock.unix_ms / 1000) as i64;
    let mut imported = Imported::default();
    let mut ops = Vec::new();
    let mut stored: HashMap<u64, StoredMsg> = HashMap::new();
    let mut sessions: HashMap<ByteString, SessionRecord> = HashMap::new();
    let mut entry = 0u64;
    let mut pos = 23;
    let mut index = 0;
    while pos + 8 <= data.len() {
        let kind = u32::from_be_bytes([data[pos], data[pos + 1], data[pos + 2], data[pos + 3]]);
        let len = u32::from_be_bytes([data[pos + 4], data[pos + 5], data[pos + 6], data[pos + 7]]) as usize;
        let offset = pos;
        let damaged = ImportError::Chunk { index, kind, offset };
        let body = data.get(pos + 8..pos + 8 + len).ok_or(damaged.clone())?;
        pos += 8 + len;
        index += 1;
        let mut c = Cursor { data: body, pos: 0 };
        let ok = match kind {
            // CFG: nothing midge needs (its ids are its own).
            1 => Some(()),
            2 => (|| {
                let id = c.host64()?;
                let expiry = c.host64()? as i64;
                let payload_len = c.u32()? as usize;
                let _source_mid = c.u16()?;
                let (source_len, user_len, topic_len) = (c.u16()?, c.u16()?, c.u16()?);
                let _port = c.u16()?;
                let (qos, retain) = (QoS::from_u8(c.u8()?)?, c.u8()? != 0);
                let source = c.string(usize::from(source_len))?;
                c.take(usize::from(user_len))?;
                let topic = c.string(usize::from(topic_len))?;
                let payload = Bytes::copy_from_slice(c.take(payload_len)?);
                let props = properties(&body[c.pos..])?;
                stored
                    .insert(id, StoredMsg { topic, payload, qos, retain, properties: props, expiry, source });
                Some(())
            })(),
            3 => (|| {
                let id = c.host64()?;
                let mid = c.u16()?;
                let id_len = c.u16()?;
                let qos = QoS::from_u8(c.u8()?)?;
                let state = c.u8()?;
                let retain = c.u8()? >> 4 != 0;
                let direction = c.u8()?;
                let client = c.string(usize::from(id_len))?;
                let props = properties(&body[c.pos..])?;
                let Some(m) = stored.get(&id).filter(|m| m.expiry == 0 || m.expiry > now_s) else {
                    imported.skipped += 1;
                    return Some(());
                };
                let message = to_message(m, clock);
                if direction == 0 {
                    // Incoming QoS 2, not yet released: mosquitto would forward it on PUBREL.
                    // midge forwards at PUBLISH, so it goes now, and the identifier is held
                    // so that the client's PUBREL completes.
                    ops.push(Op::Put(records::incoming_key(&client, mid), Vec::new()));
                    imported.incoming += 1;
                    pending_publish(&mut ops, &message, clock);
                    return Some(());
                }
                entry += 1;
                let sub_ids: Vec<u32> = props.subscription_identifiers().collect();
                ops.push(Op::Put(
                    records::queue_key(entry),
                    records::queued_value(&client, 0, qos, retain, &sub_ids, &message, clock),
                ));
                match state {
                    5 => ops.push(Op::Put(
                        records::progress_key(entry),
                        records::progress_value(Progress::Sent(mid)),
                    )),
                    6 | 9 => ops.push(Op::Put(
                        records::progress_key(entry),
                        records::progress_value(Progress::Released(mid)),
                    )),
                    _ => {}
                }
                imported.queued += 1;
                Some(())
            })(),
            4 => (|| {
                let id = c.host64()?;
                match stored.get(&id).filter(|m| m.expiry == 0 || m.expiry > now_s) {
                    Some(m) => {
                        let message = Message { retain: true, ..to_message(m, clock) };
                        ops.push(Op::Put(
                            records::retained_key(&message.topic),
                            records::retained_value(&message, clock),
                        ));
                        imported.retained += 1;
                    }
                    None => imported.skipped += 1,
                }
                Some(())
            })(),
            5 => (|| {
                let identifier = c.u32()?;
                let (id_len, topic_len) = (c.u16()?, c.u16()?);
                let (qos, flags) = (QoS::from_u8(c.u8()?)?, c.u8()?);
                c.take(2)?;
                let client = c.string(usize::from(id_len))?;
                let filter = c.string(usize::from(topic_len))?;
                let options = SubscriptionOptions {
                    qos,
                    no_local: flags & 0x04 != 0,
                    retain_as_published: flags & 0x08 != 0,
                    retain_handling: RetainHandling::SendAtSubscribe,
                };
                ops.push(Op::Put(
                    records::subscription_key(&client, &filter),
                    records::subscription_value(options, (identifier != 0).then_some(identifier)),
                ));
                sessions.entry(client).or_insert(SessionRecord {
                    expiry_interval: u32::MAX,
                    expires_at: None,
                    will: None,
                    will_owner: None,
                    last_packet_id: 0,
                });
                imported.subscriptions += 1;
                Some(())
            })(),
            6 => (|| {
                let expiry_time = c.host64()? as i64;
                let interval = c.u32()?;
                let last_mid = c.u16()?;
                let id_len = c.u16()?;
                if version == 6 {
                    let (_port, user_len) = (c.u16()?, c.u16()?);
                    c.take(4)?;
                    let client = c.string(usize::from(id_len))?;
                    c.take(usize::from(user_len))?;
                    add_session(&mut sessions, client, interval, expiry_time, now_s, last_mid);
                } else {
                    let client = c.string(usize::from(id_len))?;
                    add_session(&mut sessions, client, interval, expiry_time, now_s, last_mid);
                }
                Some(())
            })(),
            _ => {
                imported.skipped += 1;
                Some(())
            }
        };
        ok.ok_or(damaged)?;
    }
    for (client, record) in sessions {
        if record.expiry_interval == 0 {
            continue;
        }
        ops.push(Op::Put(records::session_key(&client), records::session_value(&record)));
        imported.sessions += 1;
    }
    Ok((ops, imported))
}

/// mosquitto's session expiry: an interval of 0xFFFFFFFF never expires; otherwise at the
/// stored time, or (online when saved, time 0) an interval from now; past: dropped.
fn add_session(
    sessions: &mut HashMap<ByteString, SessionRecord>,
    client: ByteString,
    interval: u32,
    expiry_time: i64,
    now_s: i64,
    last_packet_id: u16,
) {
    let expires_at = match interval {
        u32::MAX => None,
        0 => return,
        i if expiry_time > 0 => {
            if expiry_time <= now_s {
                return;
            }
            let _ = i;
            Some(expiry_time as u64 * 1000)
        }
        i => Some((now_s as u64 + u64::from(i)) * 1000),
    };
    sessions.insert(
        client,
        SessionRecord { expiry_interval: interval, expires_at, will: None, will_owner: None, last_packet_id },
    );
}

fn to_message(m: &StoredMsg, clock: &Clock) -> Message {
    let mut message = Message::from_publish(
        m.topic.clone(),
        m.payload.clone(),
        m.qos,
        m.retain,
        m.properties.clone(),
        m.source.clone(),
        clock.now,
    );
    if m.expiry > 0 {
        message.expires_at = Some(clock.to_instant(m.expiry as u64 * 1000));
    }
    message
}

/// An incoming message to forward at start: a record the broker routes once restored, then
/// deletes.
fn pending_publish(ops: &mut Vec<Op>, m: &Message, clock: &Clock) {
    let n = ops.len() as u64;
    ops.push(Op::Put(records::forward_key(n), records::retained_value(m, clock)));
}
