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
//! - a message the node published itself was routed locally and numbered
//!   ([`super::Outbox::send`]) with no copy taken in between (the copy holds
//!   [`super::Outbox::hold_numbering`]): numbered at or below `ticket`, in it; above, not;
//! - but one numbered at or below `arrived_at` (before the session came to the node from
//!   another, within [`super::ARRIVAL_WINDOW`]: [`super::Outbox::arrived_at`]) reached it
//!   only from the stream, by the node's tail, as any other node's message: at or below
//!   `position`, in it; above, not;
//! - a message of an earlier run of the node was routed by that run, whose sessions this
//!   run restored: in it; of a later run (the node restarted): not.
//!
//! The value: `version (3) | at (8) | position (8) | ticket (8) | arrived at (8) | parked
//! at, seconds since the epoch (8) | origin length (2) | origin | session`; numbers
//! little-endian. The claim (`origin`, `at`) is the connection that parked it: a node uses
//! the snapshot only while that is still the client id's claim in `MIDGE_SESSIONS` (a later
//! connection, anywhere, makes it stale).
use std::sync::Arc;

use bytestring::ByteString;
use midge_codec::{topic_matches, QoS, SubscriptionOptions};

use crate::session::{Delivery, Message};

/// 3: not the first byte of a bare [`super::handoff`] encoding (1), which nodes sent as
/// their answer before, nor of the layout without `arrived_at` (2).
const VERSION: u8 = 3;
/// The bytes before the origin.
const HEADER: usize = 1 + 5 * 8 + 2;

/// A parked session's snapshot and where its node was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parked {
    /// `NODE/BOOT` of the node that parked it.
    pub origin: String,
    /// When the connection that parked it opened (its claim's time).
    pub at: u64,
    /// The node's position in the QoS stream when the snapshot was taken.
    pub position: u64,
    /// The last number the node had given its own QoS 1 and 2 messages.
    pub ticket: u64,
    /// The node's last number when the session came to it from another node (0: it did
    /// not): its messages numbered up to it reached the session only from the stream.
    pub arrived_at: u64,
    /// When it was parked, in seconds since the Unix epoch.
    pub parked_at: u64,
    /// The session ([`super::handoff::encode`]).
    pub session: Vec<u8>,
}

/// Why bytes are not a parked session.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a parked session kept in the cluster cannot be read ({0})")]
pub struct ParkedError(&'static str);

impl Parked {
    /// The bucket's value.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + self.origin.len() + self.session.len());
        out.push(VERSION);
        for n in [self.at, self.position, self.ticket, self.arrived_at, self.parked_at] {
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
        if rest.len() < HEADER - 1 {
            return Err(ParkedError("cut short"));
        }
        let n = |i: usize| u64::from_le_bytes(rest[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
        let len = usize::from(u16::from_le_bytes([rest[40], rest[41]]));
        let rest_after = &rest[HEADER - 1..];
        if rest_after.len() < len {
            return Err(ParkedError("cut short"));
        }
        let origin = std::str::from_utf8(&rest_after[..len]).map_err(|_| ParkedError("origin"))?;
        Ok(Parked {
            at: n(0),
            position: n(1),
            ticket: n(2),
            arrived_at: n(3),
            parked_at: n(4),
            origin: origin.to_owned(),
            session: rest_after[len..].to_vec(),
        })
    }

    /// Whether a message of the QoS stream after [`Parked::position`], published by
    /// `origin` (`NODE/BOOT`, and its number there), is missing from the copy (it goes to the
    /// session if it matches).
    pub fn replays(&self, origin: Option<(&str, u64)>) -> bool {
        let Some((from, ticket)) = origin else { return true };
        if node_of(from) != node_of(&self.origin) {
            return true;
        }
        if from != self.origin {
            // A later run of the node (restarted) routed it after the copy; an earlier one,
            // before.
            return matches!((boot_of(from), boot_of(&self.origin)), (Some(run), Some(copied)) if run > copied);
        }
        // Only messages after `position` are asked about: one numbered before the session
        // came had not reached it from the stream yet.
        ticket > self.ticket || ticket <= self.arrived_at
    }
}

/// The run's start in `NODE/BOOT` (nanoseconds since the epoch, in hexadecimal).
fn boot_of(origin: &str) -> Option<u64> {
    u64::from_str_radix(origin.rsplit_once('/')?.1, 16).ok()
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
        let Some(qos) = crate::router::granted_qos(options, client_id, message, upgrade) else { continue };
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

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn parked() -> Parked {
        Parked {
            origin: "node-a/17".into(),
            at: 5,
            position: 100,
            ticket: 10,
            arrived_at: 4,
            parked_at: 1_700_000_000,
            session: vec![1, 2, 3],
        }
    }

    #[test]
    fn round_trip_and_garbage() {
        let p = parked();
        assert_eq!(Parked::decode(&p.encode()), Ok(p.clone()));
        let bytes = p.encode();
        for cut in 0..HEADER + p.origin.len() {
            assert!(Parked::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        assert!(Parked::decode(&[2; 60]).is_err());
    }

    #[test]
    fn each_message_once() {
        let p = parked();
        assert!(p.replays(None));
        assert!(p.replays(Some(("node-b/3", 1))), "another node's, after the position");
        assert!(!p.replays(Some(("node-a/17", 10))), "numbered before the copy");
        assert!(p.replays(Some(("node-a/17", 11))), "numbered after the copy");
        assert!(p.replays(Some(("node-a/17", 4))), "numbered before the session came to node a");
        assert!(!p.replays(Some(("node-a/17", 5))), "routed to it on node a");
        assert!(!p.replays(Some(("node-a/16", 500))), "an earlier run's");
        assert!(p.replays(Some(("node-a/1a", 1))), "a later run's (restarted)");
        assert!(!p.replays(Some(("node-a/zz", 1))));
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
    }
}
