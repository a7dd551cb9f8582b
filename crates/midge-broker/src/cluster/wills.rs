//! The wills of a node's connections, kept in JetStream (bucket `MIDGE_WILLS`, one entry per
//! client id) so that another node publishes them when the node dies. A record is the will as
//! [`super::wire`] carries a message (its headers as `NAME:VALUE` lines, values escaped: no
//! line break in them), after three lines: the node's `NODE/BOOT`, the connection, and the
//! seconds after the node's death it is due (the lower of the will delay and the session
//! expiry), then an empty line and the payload.
use bytes::Bytes;
use bytestring::ByteString;
use midge_codec::Will;

use super::wire::{self, Carried};

/// A will as the bucket keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WillRecord {
    /// `NODE/BOOT` of the node the connection is on.
    pub origin: String,
    /// The connection.
    pub conn_id: u64,
    /// Seconds after the node's death the will is due.
    pub delay: u32,
    /// The will's topic.
    pub topic: String,
    /// QoS, RETAIN, the client id (as publisher) and the 5.0 properties.
    pub carried: Carried,
    /// The payload.
    pub payload: Bytes,
}

impl WillRecord {
    /// The will, to publish.
    pub fn will(&self) -> Will {
        let mut properties = self.carried.properties.clone();
        properties.remove(midge_codec::PropertyId::WillDelayInterval);
        Will {
            topic: ByteString::from(self.topic.clone()),
            payload: self.payload.clone(),
            qos: self.carried.qos,
            retain: self.carried.retain,
            properties,
        }
    }
}

/// A record of `will`, of client `client_id` on connection `conn_id` of node `origin`.
pub fn encode(origin: &str, conn_id: u64, delay: u32, client_id: &str, will: &Will) -> Vec<u8> {
    let expiry = will.properties.message_expiry_interval();
    let mut out = format!("{origin}\n{conn_id}\n{delay}\n{}\n", wire::escape(will.topic.as_bytes()));
    for (name, value) in
        wire::headers(will.qos, will.retain, client_id, &will.properties, expiry, (origin, conn_id))
    {
        out.push_str(name);
        out.push(':');
        out.push_str(&value);
        out.push('\n');
    }
    out.push('\n');
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(&will.payload);
    bytes
}

/// The record in `bytes`, if it is one.
pub fn decode(bytes: &[u8]) -> Option<WillRecord> {
    let end = bytes.windows(2).position(|w| w == b"\n\n")?;
    let head = std::str::from_utf8(&bytes[..end]).ok()?;
    let payload = Bytes::copy_from_slice(&bytes[end + 2..]);
    let mut lines = head.split('\n');
    let origin = lines.next()?.to_owned();
    let conn_id = lines.next()?.parse().ok()?;
    let delay = lines.next()?.parse().ok()?;
    let topic = String::from_utf8(wire::unescape(lines.next()?)?).ok()?;
    let headers: Vec<(&str, &str)> = lines.filter_map(|l| l.split_once(':')).collect();
    let carried =
        wire::read(|name| headers.iter().filter(move |(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| *v))
            .ok()?;
    Some(WillRecord { origin, conn_id, delay, topic, carried, payload })
}

#[cfg(test)]
mod tests {
    use super::*;
    use midge_codec::{Properties, Property, QoS};

    #[test]
    fn a_will_comes_back_as_it_went() {
        let mut properties = Properties::default();
        properties.push(Property::ContentType("text/plain; x".into()));
        properties.push(Property::UserProperty("k 1".into(), "v\n2".into()));
        properties.push(Property::MessageExpiryInterval(60));
        let will = Will {
            topic: "gone/a.b/ c".into(),
            payload: Bytes::from_static(b"\n\nbye\x00"),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties,
        };
        let bytes = encode("node-a/17", 9, 30, "client 1", &will);
        let r = decode(&bytes).unwrap();
        assert_eq!((r.origin.as_str(), r.conn_id, r.delay), ("node-a/17", 9, 30));
        assert_eq!(r.carried.publisher, "client 1");
        let back = r.will();
        assert_eq!(back.topic, will.topic);
        assert_eq!(back.payload, will.payload);
        assert_eq!((back.qos, back.retain), (will.qos, will.retain));
        assert_eq!(back.properties.content_type().map(|s| s.to_string()), Some("text/plain; x".to_owned()));
        assert_eq!(back.properties.message_expiry_interval(), Some(60));
        assert_eq!(back.properties.user_properties().count(), 1);
    }

    #[test]
    fn garbage_is_no_record() {
        assert_eq!(decode(b""), None);
        assert_eq!(decode(b"a\nb\n\n"), None);
        assert_eq!(decode(b"a\n1\nx\nt\n\n"), None);
    }
}
