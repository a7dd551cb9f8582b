//! The broker's state as the store's keys and values. One key per thing that changes on its
//! own: a retained topic, a session, a subscription, a queued message and its delivery
//! state, an incoming QoS 2 identifier. Messages are kept as MQTT 5.0 PUBLISH packets (the
//! codec writes and checks them), with absolute times for their expiry, since the
//! broker's clock does not survive a restart.
//!
//! | key | value |
//! |---|---|
//! | `r` topic | retained message |
//! | `s` client id | session: expiry interval, when it ends (if offline), delayed will and whose it is (user name, listener) |
//! | `u` client id `\0` filter | subscription options and identifier |
//! | `q` entry (u64 BE) | a message queued for a session: client id, QoS, RETAIN, identifiers |
//! | `p` entry (u64 BE) | where that message's delivery stands: packet id, state |
//! | `i` client id `\0` packet id | a QoS 2 message received and not yet released: the commit of its copies |
//! | `n` commit (u64 BE) | the commit of a QoS 2 message's copies, once its `i` record is gone |
//! | `x` n | a message to route once the broker has started (imported from mosquitto) |
//! | `c` | cluster mode: the position in the cluster's QoS stream routed last with copies here (u64 LE); an `n` record written for such a message holds it too |
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use midge_codec::{
    decode_within, DecodeLimits, Packet, PropertyId, ProtocolVersion, Publish, QoS, RetainHandling,
    SubscriptionOptions, Will,
};

use crate::router::RetainSource;
use crate::session::Message;

/// The version byte every value starts with.
const VERSION: u8 = 1;

/// Why a record cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a stored {what} cannot be read")]
pub struct RecordError {
    /// What kind of record.
    pub what: &'static str,
}

fn bad(what: &'static str) -> RecordError {
    RecordError { what }
}

/// The broker's clock and the wall clock at one moment: stored times are wall-clock
/// milliseconds, the broker's are [`Instant`]s.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// The broker's clock.
    pub now: Instant,
    /// Milliseconds since 1970 at the same moment.
    pub unix_ms: u64,
}

impl Clock {
    /// Now.
    pub fn now() -> Clock {
        Clock {
            now: Instant::now(),
            unix_ms: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
        }
    }

    /// A broker time as wall-clock milliseconds.
    pub fn to_unix(&self, t: Instant) -> u64 {
        match t.checked_duration_since(self.now) {
            Some(ahead) => self.unix_ms + ahead.as_millis() as u64,
            None => self.unix_ms.saturating_sub(self.now.duration_since(t).as_millis() as u64),
        }
    }

    /// Wall-clock milliseconds as a broker time (in the past: now).
    pub fn to_instant(&self, unix_ms: u64) -> Instant {
        self.now + Duration::from_millis(unix_ms.saturating_sub(self.unix_ms))
    }
}

/// The key of a retained topic.
pub fn retained_key(topic: &str) -> Vec<u8> {
    [b"r", topic.as_bytes()].concat()
}

/// The key of a session.
pub fn session_key(client_id: &str) -> Vec<u8> {
    [b"s", client_id.as_bytes()].concat()
}

/// The key of a subscription (client ids cannot contain U+0000 [MQTT-1.5.4-2]).
pub fn subscription_key(client_id: &str, filter: &str) -> Vec<u8> {
    [b"u", client_id.as_bytes(), b"\0", filter.as_bytes()].concat()
}

/// The key of a queued message.
pub fn queue_key(entry: u64) -> Vec<u8> {
    [b"q".as_slice(), &entry.to_be_bytes()].concat()
}

/// The key of a queued message's delivery state.
pub fn progress_key(entry: u64) -> Vec<u8> {
    [b"p".as_slice(), &entry.to_be_bytes()].concat()
}

/// The key of a QoS 2 packet identifier received and not released.
pub fn incoming_key(client_id: &str, packet_id: u16) -> Vec<u8> {
    [b"i", client_id.as_bytes(), b"\0", &packet_id.to_be_bytes()].concat()
}

/// The key of the commit of an incoming QoS 2 message whose copies outlive the record of
/// its packet identifier.
pub fn commit_key(commit: u64) -> Vec<u8> {
    [b"n".as_slice(), &commit.to_be_bytes()].concat()
}

/// The key of a message to route once the broker has started (imported from mosquitto).
pub fn forward_key(n: u64) -> Vec<u8> {
    [b"x".as_slice(), &n.to_be_bytes()].concat()
}

/// The key of the cluster stream's position.
pub fn stream_position_key() -> Vec<u8> {
    b"c".to_vec()
}

/// The first byte of every key of one kind, for reading them back.
pub mod prefix {
    /// Retained messages.
    pub const RETAINED: u8 = b'r';
    /// Sessions.
    pub const SESSION: u8 = b's';
    /// Subscriptions.
    pub const SUBSCRIPTION: u8 = b'u';
    /// Queued messages.
    pub const QUEUED: u8 = b'q';
    /// Delivery states.
    pub const PROGRESS: u8 = b'p';
    /// Incoming QoS 2 identifiers.
    pub const INCOMING: u8 = b'i';
    /// Messages to route once started.
    pub const FORWARD: u8 = b'x';
    /// Commits of incoming QoS 2 messages.
    pub const COMMIT: u8 = b'n';
    /// The cluster stream's position.
    pub const STREAM_POSITION: u8 = b'c';
}

/// Splits `client id \0 rest` (the part of a key after its prefix).
pub fn split_client(key: &[u8]) -> Option<(ByteString, &[u8])> {
    let i = key.iter().position(|&b| b == 0)?;
    let id = ByteString::try_from(Bytes::copy_from_slice(&key[..i])).ok()?;
    Some((id, &key[i + 1..]))
}

/// A message as a PUBLISH packet, after its absolute expiry (0: none).
fn put_message(out: &mut Vec<u8>, m: &Message, clock: &Clock) {
    out.extend_from_slice(&m.expires_at.map_or(0, |t| clock.to_unix(t).max(1)).to_le_bytes());
    let publish = Publish {
        dup: false,
        qos: m.qos,
        retain: m.retain,
        topic: m.topic.clone(),
        packet_id: if m.qos == QoS::AtMostOnce { 0 } else { 1 },
        properties: m.properties.clone(),
        payload: m.payload.clone(),
    };
    let mut buf = BytesMut::new();
    // Every message the broker holds was decoded from a valid packet (or built from one).
    if Packet::Publish(publish).encode(ProtocolVersion::V5, &mut buf).is_ok() {
        out.extend_from_slice(&buf);
    }
}

fn get_message(data: &[u8], publisher: ByteString, clock: &Clock) -> Result<Message, RecordError> {
    let expires =
        u64::from_le_bytes(data.get(..8).ok_or(bad("message"))?.try_into().map_err(|_| bad("message"))?);
    let mut buf = BytesMut::from(&data[8..]);
    let Ok(Some(Packet::Publish(p))) = decode_within(&mut buf, ProtocolVersion::V5, DecodeLimits::stored())
    else {
        return Err(bad("message"));
    };
    let mut m =
        Message::from_publish(p.topic, p.payload, p.qos, p.retain, p.properties, publisher, clock.now);
    m.expires_at = (expires != 0).then(|| clock.to_instant(expires));
    Ok(m)
}

/// A retained message.
pub fn retained_value(m: &Message, clock: &Clock) -> Vec<u8> {
    let mut out = vec![VERSION];
    put_message(&mut out, m, clock);
    out
}

/// Retained messages with their publisher ([`RetainSource`], `check_retain_source`) before
/// the message; those of version [`VERSION`] have none.
const RETAINED_WITH_SOURCE: u8 = 2;

/// A retained message's value with its publisher, kept for `check_retain_source`: the
/// client id, the user name (a flag, then the name), the listener index, then the message.
pub fn retained_value_from(m: &Message, source: &RetainSource, clock: &Clock) -> Vec<u8> {
    let mut out = vec![RETAINED_WITH_SOURCE];
    put_str(&mut out, &source.client_id);
    put_owner(&mut out, source.username.as_deref(), source.listener);
    put_message(&mut out, m, clock);
    out
}

/// A string: its length (u16, little-endian; MQTT strings have at most 65,535 bytes), then
/// its bytes.
fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u16).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// A client's user name (a flag, then the name) and its listener's index (u32 LE).
fn put_owner(out: &mut Vec<u8>, username: Option<&str>, listener: usize) {
    match username {
        Some(u) => {
            out.push(1);
            put_str(out, u);
        }
        None => out.push(0),
    }
    out.extend_from_slice(&(listener as u32).to_le_bytes());
}

/// What [`put_owner`] wrote.
fn take_owner(rest: &mut &[u8]) -> Option<(Option<ByteString>, usize)> {
    let username = match take(rest, 1)? {
        [0] => None,
        [1] => Some(take_str(rest)?),
        _ => return None,
    };
    let listener = u32::from_le_bytes(take(rest, 4)?.try_into().ok()?);
    Some((username, listener as usize))
}

/// The next `n` bytes of `rest`.
fn take<'a>(rest: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    let head = rest.get(..n)?;
    *rest = &rest[n..];
    Some(head)
}

/// A string of `rest`: its length (u16, little-endian), then its bytes.
fn take_str(rest: &mut &[u8]) -> Option<ByteString> {
    let len = u16::from_le_bytes(take(rest, 2)?.try_into().ok()?);
    ByteString::try_from(Bytes::copy_from_slice(take(rest, usize::from(len))?)).ok()
}

/// Reads a retained message, with its publisher if one was kept.
pub fn read_retained(v: &[u8], clock: &Clock) -> Result<(Message, Option<RetainSource>), RecordError> {
    let err = || bad("retained message");
    match v.split_first() {
        Some((&VERSION, rest)) => Ok((get_message(rest, ByteString::new(), clock)?, None)),
        Some((&RETAINED_WITH_SOURCE, mut rest)) => {
            let client_id = take_str(&mut rest).ok_or_else(err)?;
            let (username, listener) = take_owner(&mut rest).ok_or_else(err)?;
            let source = RetainSource { client_id, username, listener };
            Ok((get_message(rest, ByteString::new(), clock)?, Some(source)))
        }
        _ => Err(err()),
    }
}

/// A session as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionRecord {
    /// The Session Expiry Interval.
    pub expiry_interval: u32,
    /// When it ends, if it is offline and ends (wall-clock ms).
    pub expires_at: Option<u64>,
    /// A will waiting for its delay, and when it is due (wall-clock ms).
    pub will: Option<(Will, u64)>,
    /// Whose will it is (the user name and the listener's index), if known: a restored will
    /// is checked against that client's rights when it is due, as one that never left
    /// memory. Not known: there was no ACL when the client connected, or a record of a
    /// version before [`SESSION_WITH_OWNER`].
    pub will_owner: Option<(Option<ByteString>, usize)>,
    /// The packet identifier last given to a message to the client: the next one follows it
    /// after a restart, as mosquitto's `last_mid`.
    pub last_packet_id: u16,
}

/// Session records with `last_packet_id` (after the expiry time); those of version
/// [`VERSION`] have none.
const SESSION_VERSION: u8 = 2;

/// Session records whose will, if any, has its owner before it (a flag byte: 1 and
/// [`put_owner`]'s bytes, or 0 when not known).
const SESSION_WITH_OWNER: u8 = 3;

/// A session's value.
pub fn session_value(s: &SessionRecord) -> Vec<u8> {
    // Version 2 unless there is an owner to keep: a midge of before can still read it.
    let mut out = vec![if s.will_owner.is_some() { SESSION_WITH_OWNER } else { SESSION_VERSION }];
    out.extend_from_slice(&s.expiry_interval.to_le_bytes());
    out.extend_from_slice(&s.expires_at.unwrap_or(0).to_le_bytes());
    out.extend_from_slice(&s.last_packet_id.to_le_bytes());
    if let Some((will, due)) = &s.will {
        out.extend_from_slice(&due.to_le_bytes());
        if let Some((username, listener)) = &s.will_owner {
            out.push(1);
            put_owner(&mut out, username.as_deref(), *listener);
        }
        let mut properties = will.properties.clone();
        // Only what a PUBLISH may carry: the delay is over once this is published.
        properties.retain(|p| p.id() != PropertyId::WillDelayInterval);
        let publish = Publish {
            dup: false,
            qos: will.qos,
            retain: will.retain,
            topic: will.topic.clone(),
            packet_id: if will.qos == QoS::AtMostOnce { 0 } else { 1 },
            properties,
            payload: will.payload.clone(),
        };
        let mut buf = BytesMut::new();
        if Packet::Publish(publish).encode(ProtocolVersion::V5, &mut buf).is_ok() {
            out.extend_from_slice(&buf);
        }
    }
    out
}

/// Reads a session.
pub fn read_session(v: &[u8]) -> Result<SessionRecord, RecordError> {
    let err = || bad("session");
    let (&version, rest) = v.split_first().ok_or_else(err)?;
    let expiry_interval = u32::from_le_bytes(rest.get(..4).ok_or_else(err)?.try_into().map_err(|_| err())?);
    let expires = u64::from_le_bytes(rest.get(4..12).ok_or_else(err)?.try_into().map_err(|_| err())?);
    // Version 1 has no last packet identifier: the will, if any, follows the expiry time.
    let (last_packet_id, will_at) = match version {
        VERSION => (0, 12),
        SESSION_VERSION | SESSION_WITH_OWNER => {
            (u16::from_le_bytes(rest.get(12..14).ok_or_else(err)?.try_into().map_err(|_| err())?), 14)
        }
        _ => return Err(err()),
    };
    let (mut will, mut will_owner) = (None, None);
    if rest.len() > will_at {
        let due = u64::from_le_bytes(
            rest.get(will_at..will_at + 8).ok_or_else(err)?.try_into().map_err(|_| err())?,
        );
        let mut packet = &rest[will_at + 8..];
        if version == SESSION_WITH_OWNER {
            will_owner = match take(&mut packet, 1).ok_or_else(err)? {
                [0] => None,
                [1] => Some(take_owner(&mut packet).ok_or_else(err)?),
                _ => return Err(err()),
            };
        }
        let mut buf = BytesMut::from(packet);
        let Ok(Some(Packet::Publish(p))) =
            decode_within(&mut buf, ProtocolVersion::V5, DecodeLimits::stored())
        else {
            return Err(err());
        };
        let w = Will {
            topic: p.topic,
            payload: p.payload,
            qos: p.qos,
            retain: p.retain,
            properties: p.properties,
        };
        will = Some((w, due));
    }
    let expires_at = (expires != 0).then_some(expires);
    Ok(SessionRecord { expiry_interval, expires_at, will, will_owner, last_packet_id })
}

/// A subscription's value.
pub fn subscription_value(options: SubscriptionOptions, id: Option<u32>) -> Vec<u8> {
    let handling = match options.retain_handling {
        RetainHandling::SendAtSubscribe => 0,
        RetainHandling::SendIfNew => 1,
        RetainHandling::DoNotSend => 2,
    };
    let flags = options.qos.as_u8()
        | (u8::from(options.no_local) << 2)
        | (u8::from(options.retain_as_published) << 3)
        | (handling << 4);
    let mut out = vec![VERSION, flags];
    if let Some(id) = id {
        out.extend_from_slice(&id.to_le_bytes());
    }
    out
}

/// Reads a subscription.
pub fn read_subscription(v: &[u8]) -> Result<(SubscriptionOptions, Option<u32>), RecordError> {
    let err = || bad("subscription");
    let [VERSION, flags, rest @ ..] = v else { return Err(err()) };
    let qos = QoS::from_u8(flags & 3).ok_or_else(err)?;
    let retain_handling = match (flags >> 4) & 3 {
        0 => RetainHandling::SendAtSubscribe,
        1 => RetainHandling::SendIfNew,
        _ => RetainHandling::DoNotSend,
    };
    let options = SubscriptionOptions {
        qos,
        no_local: flags & 4 != 0,
        retain_as_published: flags & 8 != 0,
        retain_handling,
    };
    let id = match rest {
        [] => None,
        [a, b, c, d] => Some(u32::from_le_bytes([*a, *b, *c, *d])),
        _ => return Err(err()),
    };
    Ok((options, id))
}

/// A message queued for a session.
#[derive(Debug, Clone)]
pub struct QueuedRecord {
    /// The commit it belongs to (0: none).
    pub commit: u64,
    /// Whose.
    pub client_id: ByteString,
    /// The QoS it goes with.
    pub qos: QoS,
    /// The RETAIN flag it goes with.
    pub retain: bool,
    /// Subscription identifiers to send with it.
    pub sub_ids: Vec<u32>,
    /// The message.
    pub message: Message,
}

/// A queued message's value.
pub fn queued_value(
    client_id: &str,
    commit: u64,
    qos: QoS,
    retain: bool,
    sub_ids: &[u32],
    m: &Message,
    clock: &Clock,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + client_id.len() + m.topic.len() + m.payload.len());
    out.extend_from_slice(&[VERSION, qos.as_u8() | (u8::from(retain) << 2)]);
    out.extend_from_slice(&commit.to_le_bytes());
    out.extend_from_slice(&(client_id.len() as u16).to_le_bytes());
    out.extend_from_slice(client_id.as_bytes());
    out.push(sub_ids.len().min(255) as u8);
    for id in sub_ids.iter().take(255) {
        out.extend_from_slice(&id.to_le_bytes());
    }
    put_message(&mut out, m, clock);
    out
}

/// Reads a queued message.
pub fn read_queued(v: &[u8], clock: &Clock) -> Result<QueuedRecord, RecordError> {
    let err = || bad("queued message");
    let [VERSION, flags, rest @ ..] = v else { return Err(err()) };
    let qos = QoS::from_u8(flags & 3).ok_or_else(err)?;
    let commit = u64::from_le_bytes(rest.get(..8).ok_or_else(err)?.try_into().map_err(|_| err())?);
    let rest = &rest[8..];
    let id_len =
        usize::from(u16::from_le_bytes(rest.get(..2).ok_or_else(err)?.try_into().map_err(|_| err())?));
    let id = rest.get(2..2 + id_len).ok_or_else(err)?;
    let client_id = ByteString::try_from(Bytes::copy_from_slice(id)).map_err(|_| err())?;
    let mut at = 2 + id_len;
    let n = usize::from(*rest.get(at).ok_or_else(err)?);
    at += 1;
    let mut sub_ids = Vec::with_capacity(n);
    for _ in 0..n {
        let b = rest.get(at..at + 4).ok_or_else(err)?;
        sub_ids.push(u32::from_le_bytes(b.try_into().map_err(|_| err())?));
        at += 4;
    }
    let message = get_message(&rest[at..], ByteString::new(), clock)?;
    Ok(QueuedRecord { commit, client_id, qos, retain: flags & 4 != 0, sub_ids, message })
}

/// Where a queued message's delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// PUBLISH (QoS 2) sent with this packet id: awaiting PUBREC.
    Sent(u16),
    /// PUBREC received, PUBREL sent: awaiting PUBCOMP.
    Released(u16),
}

/// A delivery state's value.
pub fn progress_value(p: Progress) -> Vec<u8> {
    let (state, id) = match p {
        Progress::Sent(id) => (1, id),
        Progress::Released(id) => (2, id),
    };
    let mut out = vec![VERSION, state];
    out.extend_from_slice(&id.to_le_bytes());
    out
}

/// Reads a delivery state.
pub fn read_progress(v: &[u8]) -> Result<Progress, RecordError> {
    match v {
        [VERSION, 1, a, b] => Ok(Progress::Sent(u16::from_le_bytes([*a, *b]))),
        [VERSION, 2, a, b] => Ok(Progress::Released(u16::from_le_bytes([*a, *b]))),
        _ => Err(bad("delivery state")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use midge_codec::{Properties, Property};

    fn message(topic: &str, qos: QoS, clock: &Clock) -> Message {
        let mut props = Properties::new();
        props.push(Property::UserProperty("k".into(), "v".into()));
        props.push(Property::MessageExpiryInterval(60));
        Message::from_publish(
            topic.into(),
            Bytes::from_static(b"payload"),
            qos,
            true,
            props,
            "pub".into(),
            clock.now,
        )
    }

    #[test]
    fn records_round_trip() {
        let clock = Clock::now();
        let m = message("a/b", QoS::ExactlyOnce, &clock);
        let (back, source) = read_retained(&retained_value(&m, &clock), &clock).unwrap();
        assert_eq!(source, None);
        assert_eq!((&back.topic, &back.payload, back.qos, back.retain), (&m.topic, &m.payload, m.qos, true));
        assert_eq!(back.properties.user_properties().count(), 1);
        let left = back.expires_at.unwrap().duration_since(clock.now);
        assert!(left <= Duration::from_secs(60) && left >= Duration::from_secs(59), "{left:?}");
        for username in [None, Some("ü-user".into())] {
            let s = RetainSource { client_id: "pub-1".into(), username, listener: 3 };
            let (back, source) = read_retained(&retained_value_from(&m, &s, &clock), &clock).unwrap();
            assert_eq!((source, &back.topic, &back.payload), (Some(s), &m.topic, &m.payload));
        }

        let q = read_queued(&queued_value("c1", 42, QoS::AtLeastOnce, false, &[7, 9], &m, &clock), &clock)
            .unwrap();
        assert_eq!(q.commit, 42);
        assert_eq!(
            (&*q.client_id, q.qos, q.retain, &q.sub_ids[..]),
            ("c1", QoS::AtLeastOnce, false, &[7, 9][..])
        );
        assert_eq!(q.message.payload, m.payload);

        let opts = SubscriptionOptions {
            qos: QoS::AtLeastOnce,
            no_local: true,
            retain_as_published: false,
            retain_handling: RetainHandling::DoNotSend,
        };
        assert_eq!(read_subscription(&subscription_value(opts, Some(300))).unwrap(), (opts, Some(300)));
        assert_eq!(read_subscription(&subscription_value(opts, None)).unwrap(), (opts, None));

        for p in [Progress::Sent(5), Progress::Released(65535)] {
            assert_eq!(read_progress(&progress_value(p)).unwrap(), p);
        }

        let mut will_props = Properties::new();
        will_props.push(Property::WillDelayInterval(30));
        will_props.push(Property::ContentType("text/plain".into()));
        let will = Will {
            topic: "wills/x".into(),
            payload: Bytes::from_static(b"gone"),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: will_props,
        };
        let s = SessionRecord {
            expiry_interval: 3600,
            expires_at: Some(123),
            will: Some((will, 456)),
            will_owner: Some((Some("alice".into()), 2)),
            last_packet_id: 77,
        };
        let back = read_session(&session_value(&s)).unwrap();
        assert_eq!(back.expiry_interval, 3600);
        assert_eq!(back.expires_at, Some(123));
        assert_eq!(back.will_owner, Some((Some("alice".into()), 2)));
        let (w, due) = back.will.clone().unwrap();
        assert_eq!((&*w.topic, due, w.retain), ("wills/x", 456, true));
        assert!(w.properties.content_type().is_some());
        for owner in [None, Some((None, 0))] {
            let s = SessionRecord { will_owner: owner.clone(), ..back.clone() };
            assert_eq!(read_session(&session_value(&s)).unwrap().will_owner, owner);
        }
        // Without an owner, a record of version 2, as before owners were kept.
        let v2 = session_value(&SessionRecord { will_owner: None, ..back.clone() });
        assert_eq!(v2[0], SESSION_VERSION);
        let old = read_session(&v2).unwrap();
        assert_eq!((old.will_owner, old.will.unwrap().0.topic), (None, "wills/x".into()));
        let plain = SessionRecord {
            expiry_interval: u32::MAX,
            expires_at: None,
            will: None,
            will_owner: None,
            last_packet_id: 0,
        };
        assert_eq!(read_session(&session_value(&plain)).unwrap(), plain);
    }

    #[test]
    fn a_message_an_older_version_took_with_a_control_character_is_still_read() {
        // Clients may no longer send them (midge_codec::is_disallowed_char), but a store
        // written before keeps its messages.
        let clock = Clock::now();
        let m = message("line\nbreak/\u{85}", QoS::AtLeastOnce, &clock);
        let (back, _) = read_retained(&retained_value(&m, &clock), &clock).unwrap();
        assert_eq!(&*back.topic, "line\nbreak/\u{85}");
    }

    #[test]
    fn keys_split() {
        let k = subscription_key("client", "a/+/#");
        assert_eq!(k[0], prefix::SUBSCRIPTION);
        let (id, rest) = split_client(&k[1..]).unwrap();
        assert_eq!((&*id, rest), ("client", &b"a/+/#"[..]));
        assert!(queue_key(1) < queue_key(256), "entries sort in order");
    }
}
