//! A session moving from one node to another: when a client id with a session on node A
//! connects to node B without clean start, B asks A for it, and A answers with the session as
//! bytes (this encoding) and forgets it. Only encoding here, no I/O: the request and the
//! answer are `server/cluster.rs`'s, taking the session apart and putting it together are the
//! broker's (`broker/handoff.rs`).
//!
//! The pieces are the store's records (`store/records.rs`: a subscription's value, a queued
//! message's value with its QoS, RETAIN, identifiers and expiry as a wall-clock time), each
//! with a length in front:
//!
//! | bytes | what |
//! |---|---|
//! | 1 | version (1) |
//! | 4 | session expiry interval |
//! | 2 | last packet identifier used |
//! | 4 + n × (2 + id) | QoS 2 packet identifiers received and not released |
//! | 4 + n × (filter, value) | subscriptions |
//! | 4 + n × (state, packet id, value) | messages in flight (state 1: awaiting PUBACK, 2: PUBREC, 3: PUBCOMP) |
//! | 4 + n × value | messages queued |
//!
//! Numbers are little-endian; each filter and value is a `u32` length and its bytes.
use bytes::Bytes;
use bytestring::ByteString;
use midge_codec::SubscriptionOptions;

use crate::session::{Awaiting, Delivery};
use crate::store::records::{self, Clock};

const VERSION: u8 = 1;

/// A session on its way to another node.
#[derive(Debug, Default, Clone)]
pub struct Handoff {
    /// Its expiry interval.
    pub expiry_interval: u32,
    /// The last packet identifier it used (the next ones follow it).
    pub last_packet_id: u16,
    /// Incoming QoS 2 messages received and not yet released [MQTT-4.3.3-10].
    pub incoming_qos2: Vec<u16>,
    /// Its subscriptions: filter, options, identifier.
    pub subscriptions: Vec<(ByteString, SubscriptionOptions, Option<u32>)>,
    /// Messages sent and not yet acknowledged: resent with their packet identifier
    /// [MQTT-4.4.0-1].
    pub inflight: Vec<(u16, Awaiting, Delivery)>,
    /// Messages waiting to be sent, in order.
    pub queued: Vec<Delivery>,
}

/// Why bytes are not a session.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a session handed over by another node cannot be read ({0})")]
pub struct HandoffError(&'static str);

/// The session as bytes.
pub fn encode(h: &Handoff, clock: &Clock) -> Vec<u8> {
    encode_within(h, &h.queued, usize::MAX, clock).map_or_else(Vec::new, |(bytes, _)| bytes)
}

/// The session as bytes with `queued` as its queue (in place of `h.queued`), as many of them
/// as fit in `max` bytes, in order; and how many were left out. None when it does not fit
/// even without its queue.
pub fn encode_within<'a>(
    h: &Handoff,
    queued: impl IntoIterator<Item = &'a Delivery>,
    max: usize,
    clock: &Clock,
) -> Option<(Vec<u8>, usize)> {
    let mut out = vec![VERSION];
    out.extend_from_slice(&h.expiry_interval.to_le_bytes());
    out.extend_from_slice(&h.last_packet_id.to_le_bytes());
    out.extend_from_slice(&(h.incoming_qos2.len() as u32).to_le_bytes());
    for id in &h.incoming_qos2 {
        out.extend_from_slice(&id.to_le_bytes());
    }
    out.extend_from_slice(&(h.subscriptions.len() as u32).to_le_bytes());
    for (filter, options, id) in &h.subscriptions {
        put(&mut out, filter.as_bytes());
        put(&mut out, &records::subscription_value(*options, *id));
    }
    out.extend_from_slice(&(h.inflight.len() as u32).to_le_bytes());
    for (packet_id, state, d) in &h.inflight {
        out.push(match state {
            Awaiting::PubAck => 1,
            Awaiting::PubRec => 2,
            Awaiting::PubComp => 3,
        });
        out.extend_from_slice(&packet_id.to_le_bytes());
        put(&mut out, &delivery_value(d, clock));
    }
    // The count goes before the messages: written once they are.
    let count_at = out.len();
    out.extend_from_slice(&0u32.to_le_bytes());
    if out.len() > max {
        return None;
    }
    let (mut count, mut left_out) = (0u32, 0usize);
    for d in queued {
        let value = delivery_value(d, clock);
        if out.len() + 4 + value.len() > max {
            left_out += 1;
            continue;
        }
        put(&mut out, &value);
        count += 1;
    }
    out[count_at..count_at + 4].copy_from_slice(&count.to_le_bytes());
    Some((out, left_out))
}

fn delivery_value(d: &Delivery, clock: &Clock) -> Vec<u8> {
    records::queued_value("", 0, d.qos, d.retain, &d.sub_ids, &d.message, clock)
}

fn put(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// Reads a session handed over; never panics on any input.
pub fn decode(bytes: &[u8], clock: &Clock) -> Result<Handoff, HandoffError> {
    let mut r = Reader(bytes);
    if r.take(1)? != [VERSION] {
        return Err(HandoffError("version"));
    }
    let mut h = Handoff { expiry_interval: r.u32()?, last_packet_id: r.u16()?, ..Handoff::default() };
    for _ in 0..r.count()? {
        h.incoming_qos2.push(r.u16()?);
    }
    for _ in 0..r.count()? {
        let filter = ByteString::try_from(Bytes::copy_from_slice(r.sized()?))
            .map_err(|_| HandoffError("subscription filter"))?;
        let (options, id) = records::read_subscription(r.sized()?).map_err(|e| HandoffError(e.what))?;
        h.subscriptions.push((filter, options, id));
    }
    for _ in 0..r.count()? {
        let state = match r.take(1)? {
            [1] => Awaiting::PubAck,
            [2] => Awaiting::PubRec,
            [3] => Awaiting::PubComp,
            _ => return Err(HandoffError("delivery state")),
        };
        let packet_id = r.u16()?;
        h.inflight.push((packet_id, state, delivery(r.sized()?, clock)?));
    }
    for _ in 0..r.count()? {
        h.queued.push(delivery(r.sized()?, clock)?);
    }
    if !r.0.is_empty() {
        return Err(HandoffError("bytes after the end"));
    }
    Ok(h)
}

fn delivery(v: &[u8], clock: &Clock) -> Result<Delivery, HandoffError> {
    let q = records::read_queued(v, clock).map_err(|e| HandoffError(e.what))?;
    Ok(Delivery {
        message: std::sync::Arc::new(q.message),
        qos: q.qos,
        retain: q.retain,
        sub_ids: q.sub_ids,
        share: None,
        entry: None,
    })
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], HandoffError> {
        if self.0.len() < n {
            return Err(HandoffError("cut short"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u16(&mut self) -> Result<u16, HandoffError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, HandoffError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A count of items, each at least 2 bytes: never more than the bytes left allow (a
    /// hostile count allocates nothing).
    fn count(&mut self) -> Result<usize, HandoffError> {
        let n = self.u32()? as usize;
        if n > self.0.len() / 2 {
            return Err(HandoffError("count"));
        }
        Ok(n)
    }

    fn sized(&mut self) -> Result<&'a [u8], HandoffError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::Message;
    use midge_codec::{Properties, QoS};
    use std::time::Instant;

    fn delivery(payload: &'static str, qos: QoS) -> Delivery {
        let m = Message::from_publish(
            "a/b".into(),
            Bytes::from_static(payload.as_bytes()),
            qos,
            false,
            Properties::default(),
            "p".into(),
            Instant::now(),
        );
        Delivery {
            message: std::sync::Arc::new(m),
            qos,
            retain: true,
            sub_ids: vec![7],
            share: None,
            entry: None,
        }
    }

    #[test]
    fn a_session_reads_back_as_it_was_written() {
        let clock = Clock::now();
        let h = Handoff {
            expiry_interval: 300,
            last_packet_id: 41,
            incoming_qos2: vec![3, 9],
            subscriptions: vec![("a/#".into(), SubscriptionOptions::default(), Some(7))],
            inflight: vec![(40, Awaiting::PubRec, delivery("in flight", QoS::ExactlyOnce))],
            queued: vec![delivery("one", QoS::AtLeastOnce), delivery("two", QoS::AtMostOnce)],
        };
        let back = decode(&encode(&h, &clock), &clock).unwrap();
        assert_eq!((back.expiry_interval, back.last_packet_id), (300, 41));
        assert_eq!(back.incoming_qos2, vec![3, 9]);
        assert_eq!(back.subscriptions, h.subscriptions);
        assert_eq!(back.inflight.len(), 1);
        assert_eq!((back.inflight[0].0, back.inflight[0].1), (40, Awaiting::PubRec));
        assert_eq!(&back.inflight[0].2.message.payload[..], b"in flight");
        let queued: Vec<_> =
            back.queued.iter().map(|d| (d.message.payload.clone(), d.qos, d.retain)).collect();
        assert_eq!(
            queued,
            vec![
                (Bytes::from_static(b"one"), QoS::AtLeastOnce, true),
                (Bytes::from_static(b"two"), QoS::AtMostOnce, true)
            ]
        );
        assert_eq!(back.queued[0].sub_ids, vec![7]);
    }

    #[test]
    fn a_queue_past_the_limit_is_cut_in_order_and_a_session_too_large_is_none() {
        let clock = Clock::now();
        let h = Handoff { expiry_interval: 60, ..Handoff::default() };
        let queue = [delivery("first", QoS::AtLeastOnce), delivery("second", QoS::AtLeastOnce)];
        let (all, left_out) = encode_within(&h, &queue, usize::MAX, &clock).unwrap();
        assert_eq!(left_out, 0);
        let (cut, left_out) = encode_within(&h, &queue, all.len() - 1, &clock).unwrap();
        assert_eq!(left_out, 1);
        let back = decode(&cut, &clock).unwrap();
        assert_eq!(back.queued.iter().map(|d| &d.message.payload[..]).collect::<Vec<_>>(), [b"first"]);
        assert!(encode_within(&h, &queue, 10, &clock).is_none(), "not even the session fits");
    }

    #[test]
    fn every_cut_and_a_hostile_count_is_an_error_not_a_panic() {
        let clock = Clock::now();
        let h = Handoff {
            subscriptions: vec![("x".into(), SubscriptionOptions::default(), None)],
            queued: vec![delivery("q", QoS::AtLeastOnce)],
            ..Handoff::default()
        };
        let bytes = encode(&h, &clock);
        for n in 0..bytes.len() {
            assert!(decode(&bytes[..n], &clock).is_err(), "cut at {n}");
        }
        let mut huge = vec![VERSION, 0, 0, 0, 0, 0, 0];
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode(&huge, &clock).unwrap_err(), HandoffError("count"));
    }
}
