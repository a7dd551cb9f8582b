//! A parked session kept in JetStream, for when its node is lost: when a persistent session
//! parks (its client left), its node writes the session ([`super::handoff`]'s bytes) to the
//! key-value bucket `MIDGE_PARKED`, with where the node was in the QoS stream and in its
//! own numbering of the messages it published. A node whose client comes back while the
//! session's node does not answer takes the session from the bucket and reads the QoS
//! stream from that position for what was routed to it since ([`Parked::replays`]); so the
//! offline queue of a node that is gone for good is not lost with it.
//!
//! What the snapshot holds and the stream adds up to the queue the lost node had, each
//! message once:
//! - a message of another node at a stream position at or below `position` was routed by the
//!   node before the snapshot: in it; above it: not in it;
//! - a message the node published itself was routed locally before it was numbered
//!   ([`super::Outbox::send`] after the router): numbered at or below `tickets.0` (read
//!   before the snapshot), in it; above `tickets.1` (read after), not in it; in between
//!   (published while the snapshot was taken, a few microseconds), in it only if the
//!   snapshot's queue has it ([`Keep::UnlessQueued`]);
//! - a message of an earlier run of the node was routed by that run, whose sessions this
//!   run restored: in it.
//!
//! The value: `version (1) | at (8) | position (8) | ticket before (8) | ticket after (8) |
//! parked at, seconds since the epoch (8) | origin length (2) | origin | session`; numbers
//! little-endian. The claim (`origin`, `at`) is the connection that parked it: a node uses
//! the snapshot only while that is still the client id's claim in `MIDGE_SESSIONS` (a later
//! connection, anywhere, makes it stale).
use std::sync::Arc;

use bytestring::ByteString;
use midge_codec::{topic_matches, QoS, SubscriptionOptions};

use crate::session::{Delivery, Message};

const VERSION: u8 = 1;

/// A parked session's snapshot and where its node was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parked {
    /// `NODE/BOOT` of the node that parked it.
    pub origin: String,
    /// When the connection that parked it opened (its claim's time).
    pub at: u64,
    /// The node's position in the QoS stream when the snapshot was taken.
    pub position: u64,
    /// The node's last message number read before the snapshot, and after it.
    pub tickets: (u64, u64),
    /// When it was parked, in seconds since the Unix epoch.
    pub parked_at: u64,
    /// The session ([`super::handoff::encode`]).
    pub session: Vec<u8>,
}

/// What to do with a message of the QoS stream read after the snapshot's position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// It was routed after the snapshot: it goes to the session if it matches.
    Yes,
    /// The snapshot has it (or its run routed it).
    No,
    /// Published while the snapshot was taken: only if the snapshot's queue does not have it.
    UnlessQueued,
}

/// Why bytes are not a parked session.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a parked session kept in the cluster cannot be read ({0})")]
pub struct ParkedError(&'static str);

impl Parked {
    /// The bucket's value.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(43 + self.origin.len() + self.session.len());
        out.push(VERSION);
        for n in [self.at, self.position, self.tickets.0, self.tickets.1, self.parked_at] {
            out.extend_from_slice(&n.to_le_bytes());
        }
        let origin = &self.origin.as_bytes()[..self.origin.len().min(usize::from(u16::MAX))];
        out.extend_from_slice(&(origin.len() as u16).to_le_bytes());
        out.extend_from_slice(origin);
        out.extend_from_slice(&self.session);
        out
    }

    /// A value read from the bucket; never panics on any input.
    pub fn decode(v: &[u8]) -> Result<Parked, ParkedError> {
        let (&version, rest) = v.split_first().ok_or(ParkedError("empty"))?;
        if version != VERSION {
            return Err(ParkedError("version"));
        }
        if rest.len() < 42 {
            return Err(ParkedError("cut short"));
        }
        let n = |i: usize| u64::from_le_bytes(rest[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
        let len = usize::from(u16::from_le_bytes([rest[40], rest[41]]));
        let rest_after = &rest[42..];
        if rest_after.len() < len {
            return Err(ParkedError("cut short"));
        }
        let origin = std::str::from_utf8(&rest_after[..len]).map_err(|_| ParkedError("origin"))?;
        Ok(Parked {
            at: n(0),
            position: n(1),
            tickets: (n(2), n(3)),
            parked_at: n(4),
            origin: origin.to_owned(),
            session: rest_after[len..].to_vec(),
        })
    }

    /// Whether a message of the QoS stream after [`Parked::position`], published by
    /// `origin` (`NODE/BOOT`, and its number there), is added to the snapshot's queue.
    pub fn replays(&self, origin: Option<(&str, u64)>) -> Keep {
        let Some((from, ticket)) = origin else { return Keep::Yes };
        if node_of(from) != node_of(&self.origin) {
            return Keep::Yes;
        }
        if from != self.origin || ticket <= self.tickets.0 {
            return Keep::No;
        }
        if ticket <= self.tickets.1 {
            Keep::UnlessQueued
        } else {
            Keep::Yes
        }
    }
}

/// The node's name in `NODE/BOOT`.
pub fn node_of(origin: &str) -> &str {
    origin.rsplit_once('/').map_or(origin, |(n, _)| n)
}

/// The delivery of `message` to a session with `subscriptions`, as the router makes it: the
/// highest QoS of the matching subscriptions (the published QoS at most, unless `upgrade`),
/// every subscription identifier, RETAIN only with Retain As Published [MQTT-3.3.1-12], not
/// to the publisher itself with No Local [MQTT-3.8.3-3]. Shared subscriptions are left out:
/// their messages went to their group. None when nothing matches.
pub fn delivery_for(
    subscriptions: &[(ByteString, SubscriptionOptions, Option<u32>)],
    client_id: &str,
    message: &Arc<Message>,
    upgrade: bool,
) -> Option<Delivery> {
    let mut found: Option<Delivery> = None;
    for (filter, options, id) in subscriptions {
        if filter.starts_with("$share/") || !topic_matches(filter, &message.topic) {
            continue;
        }
        if options.no_local && *client_id == *message.publisher {
            continue;
        }
        let qos = if upgrade { options.qos } else { options.qos.min(message.qos) };
        let d = found.get_or_insert_with(|| Delivery {
            message: message.clone(),
            qos: QoS::AtMostOnce,
            retain: false,
            sub_ids: Vec::new(),
            share: None,
            entry: None,
        });
        d.qos = d.qos.max(qos);
        d.retain |= options.retain_as_published && message.retain;
        d.sub_ids.extend(*id);
    }
    found
}

/// True when `queued` has a message like `m` (topic, payload and publisher): one published
/// while the snapshot was taken, which the snapshot may have.
pub fn queued_has(queued: &[Delivery], m: &Message) -> bool {
    queued.iter().any(|d| {
        d.message.topic == m.topic && d.message.payload == m.payload && d.message.publisher == m.publisher
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn parked() -> Parked {
        Parked {
            origin: "node-a/17".into(),
            at: 5,
            position: 100,
            tickets: (10, 12),
            parked_at: 1_700_000_000,
            session: vec![1, 2, 3],
        }
    }

    #[test]
    fn round_trip_and_garbage() {
        let p = parked();
        assert_eq!(Parked::decode(&p.encode()), Ok(p.clone()));
        let bytes = p.encode();
        for cut in 0..43 + p.origin.len() {
            assert!(Parked::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        assert!(Parked::decode(&[2; 60]).is_err());
    }

    #[test]
    fn each_message_once() {
        let p = parked();
        assert_eq!(p.replays(None), Keep::Yes);
        assert_eq!(p.replays(Some(("node-b/3", 1))), Keep::Yes, "another node's, after the position");
        assert_eq!(p.replays(Some(("node-a/17", 10))), Keep::No, "numbered before the snapshot");
        assert_eq!(p.replays(Some(("node-a/17", 11))), Keep::UnlessQueued);
        assert_eq!(p.replays(Some(("node-a/17", 12))), Keep::UnlessQueued);
        assert_eq!(p.replays(Some(("node-a/17", 13))), Keep::Yes, "numbered after the snapshot");
        assert_eq!(p.replays(Some(("node-a/16", 500))), Keep::No, "an earlier run's");
    }

    fn message(topic: &str, qos: QoS, retain: bool, publisher: &str) -> Arc<Message> {
        let mut m = Message::from_publish(
            ByteString::from(topic),
            Bytes::from_static(b"x"),
            qos,
            retain,
            Default::default(),
            ByteString::from(publisher),
            std::time::Instant::now(),
        );
        m.retain = retain;
        Arc::new(m)
    }

    #[test]
    fn deliveries_as_the_router_makes_them() {
        let o = |qos, no_local, rap| SubscriptionOptions {
            qos,
            no_local,
            retain_as_published: rap,
            ..Default::default()
        };
        let subs = vec![
            (ByteString::from("a/#"), o(QoS::AtLeastOnce, false, false), Some(1)),
            (ByteString::from("a/b"), o(QoS::ExactlyOnce, false, true), Some(2)),
            (ByteString::from("$share/g/a/b"), o(QoS::ExactlyOnce, false, false), None),
            (ByteString::from("own/#"), o(QoS::AtLeastOnce, true, false), None),
        ];
        let d = delivery_for(&subs, "me", &message("a/b", QoS::ExactlyOnce, true, "x"), false).unwrap();
        assert_eq!((d.qos, d.retain, d.sub_ids.as_slice()), (QoS::ExactlyOnce, true, &[1, 2][..]));
        let d = delivery_for(&subs, "me", &message("a/c", QoS::ExactlyOnce, true, "x"), false).unwrap();
        assert_eq!((d.qos, d.retain), (QoS::AtLeastOnce, false));
        let d = delivery_for(&subs, "me", &message("a/c", QoS::AtMostOnce, false, "x"), true).unwrap();
        assert_eq!(d.qos, QoS::AtLeastOnce, "upgrade_outgoing_qos");
        assert!(delivery_for(&subs, "me", &message("own/x", QoS::AtLeastOnce, false, "me"), false).is_none());
        assert!(delivery_for(&subs, "me", &message("own/x", QoS::AtLeastOnce, false, "you"), false).is_some());
        assert!(delivery_for(&subs, "me", &message("b", QoS::AtLeastOnce, false, "x"), false).is_none());
        let queued =
            vec![delivery_for(&subs, "me", &message("a/c", QoS::AtLeastOnce, false, "x"), false).unwrap()];
        assert!(queued_has(&queued, &message("a/c", QoS::AtLeastOnce, false, "x")));
        assert!(!queued_has(&queued, &message("a/c", QoS::AtLeastOnce, false, "y")));
    }
}
