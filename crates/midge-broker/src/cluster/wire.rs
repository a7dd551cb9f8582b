//! A message between nodes: the payload is the NATS message's payload, the topic its subject
//! ([`super::subject`]), and what else must travel is in NATS headers, one per field:
//!
//! | header | value |
//! | --- | --- |
//! | `Midge-Origin` | `NODE/BOOT`: the node that received it from its publisher, and that node's start (tells a restarted node's numbering from the last) |
//! | `Midge-Seq` | its number among that node's messages (for [`super::dedup`]) |
//! | `Mqtt-Qos` | the QoS it was published with: a subscriber gets the lower of it and its subscription's [MQTT-3.8.4-8] |
//! | `Mqtt-Retain` | `1` when published with RETAIN (for Retain As Published [MQTT-3.3.1-13]) |
//! | `Mqtt-Publisher` | the publisher's client id (No Local compares it [MQTT-3.8.3-3]) |
//! | `Mqtt-Expiry` | the Message Expiry Interval left, in seconds, when it was sent [MQTT-3.3.2-6] |
//! | `Mqtt-Payload-Format`, `Mqtt-Content-Type`, `Mqtt-Response-Topic`, `Mqtt-Correlation-Data` | the 5.0 properties forwarded unchanged [MQTT-3.3.2-4] |
//! | `Mqtt-User-Property` | one value per User Property, `NAME VALUE`, in order [MQTT-3.3.2-18] |
//!
//! Strings and binary data are escaped as topic levels are (printable ASCII but `%`, `.`, `*`,
//! `>` as is, anything else `%XX`, and an empty one `%` alone), so a header value never holds
//! a space, a line break or a byte NATS would read otherwise, and is never empty (NATS trims
//! header values); the space in a user property separates name and value.
use bytes::Bytes;
use bytestring::ByteString;
use midge_codec::{Properties, Property, QoS};

/// The headers' names.
pub mod names {
    #![allow(missing_docs)]
    pub const ORIGIN: &str = "Midge-Origin";
    pub const SEQ: &str = "Midge-Seq";
    pub const QOS: &str = "Mqtt-Qos";
    pub const RETAIN: &str = "Mqtt-Retain";
    pub const PUBLISHER: &str = "Mqtt-Publisher";
    pub const EXPIRY: &str = "Mqtt-Expiry";
    pub const PAYLOAD_FORMAT: &str = "Mqtt-Payload-Format";
    pub const CONTENT_TYPE: &str = "Mqtt-Content-Type";
    pub const RESPONSE_TOPIC: &str = "Mqtt-Response-Topic";
    pub const CORRELATION_DATA: &str = "Mqtt-Correlation-Data";
    pub const USER_PROPERTY: &str = "Mqtt-User-Property";
}

/// What a node learns of a message from another node (or from the retained stream).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Carried {
    /// QoS as published.
    pub qos: QoS,
    /// RETAIN as published.
    pub retain: bool,
    /// The publisher's client id.
    pub publisher: ByteString,
    /// The forwarded 5.0 properties, Message Expiry Interval (the time left) included.
    pub properties: Properties,
    /// `NODE/BOOT` of the node it came from, and its number there.
    pub origin: Option<(String, u64)>,
}

/// A header a node cannot read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad NATS header {name}: '{value}'")]
pub struct BadHeader {
    /// The header.
    pub name: &'static str,
    /// Its value.
    pub value: String,
}

/// Escapes bytes for a header value (see the module's doc). Empty is `%` alone: NATS trims
/// header values, so nothing may be empty or end in the space of a user property.
pub fn escape(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "%".to_owned();
    }
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if matches!(b, b'!'..=b'~') && !matches!(b, b'.' | b'*' | b'>' | b'%') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The bytes of an escaped value.
pub fn unescape(s: &str) -> Option<Vec<u8>> {
    if s == "%" {
        return Some(Vec::new());
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

fn unescape_str(name: &'static str, s: &str) -> Result<ByteString, BadHeader> {
    unescape(s)
        .and_then(|b| String::from_utf8(b).ok())
        .map(ByteString::from)
        .ok_or_else(|| BadHeader { name, value: s.to_owned() })
}

/// The headers of a message: its QoS and RETAIN as published, publisher, the forwarded
/// properties, `expiry` (the seconds left, if it expires) and where it comes from.
pub fn headers(
    qos: QoS,
    retain: bool,
    publisher: &str,
    properties: &Properties,
    expiry: Option<u32>,
    origin: (&str, u64),
) -> Vec<(&'static str, String)> {
    let mut h = vec![
        (names::ORIGIN, origin.0.to_owned()),
        (names::SEQ, origin.1.to_string()),
        (names::QOS, (qos as u8).to_string()),
        (names::PUBLISHER, escape(publisher.as_bytes())),
    ];
    if retain {
        h.push((names::RETAIN, "1".into()));
    }
    if let Some(secs) = expiry {
        h.push((names::EXPIRY, secs.to_string()));
    }
    for p in properties.iter() {
        match p {
            Property::PayloadFormatIndicator(v) => h.push((names::PAYLOAD_FORMAT, v.to_string())),
            Property::ContentType(v) => h.push((names::CONTENT_TYPE, escape(v.as_bytes()))),
            Property::ResponseTopic(v) => h.push((names::RESPONSE_TOPIC, escape(v.as_bytes()))),
            Property::CorrelationData(v) => h.push((names::CORRELATION_DATA, escape(v))),
            Property::UserProperty(k, v) => {
                h.push((names::USER_PROPERTY, format!("{} {}", escape(k.as_bytes()), escape(v.as_bytes()))))
            }
            // Message Expiry travels as `expiry`; the others are not forwarded.
            _ => {}
        }
    }
    h
}

/// Reads the headers of a message from another node; `get_all(name)` gives a header's
/// values in order.
pub fn read<'a, F, I>(get_all: F) -> Result<Carried, BadHeader>
where
    F: Fn(&'static str) -> I,
    I: Iterator<Item = &'a str>,
{
    let first = |name: &'static str| get_all(name).next();
    let number = |name: &'static str| -> Result<Option<u64>, BadHeader> {
        first(name).map(|v| v.parse::<u64>().map_err(|_| BadHeader { name, value: v.to_owned() })).transpose()
    };
    let qos = match first(names::QOS) {
        Some(v) => v
            .parse::<u8>()
            .ok()
            .and_then(QoS::from_u8)
            .ok_or_else(|| BadHeader { name: names::QOS, value: v.to_owned() })?,
        None => QoS::AtMostOnce,
    };
    let retain = first(names::RETAIN) == Some("1");
    let publisher = match first(names::PUBLISHER) {
        Some(v) => unescape_str(names::PUBLISHER, v)?,
        None => ByteString::new(),
    };
    let origin = match (first(names::ORIGIN), number(names::SEQ)?) {
        (Some(o), Some(seq)) => Some((o.to_owned(), seq)),
        _ => None,
    };
    let mut properties = Properties::new();
    if let Some(v) = number(names::PAYLOAD_FORMAT)? {
        let v = u8::try_from(v).ok().filter(|v| *v <= 1);
        let v = v.ok_or_else(|| BadHeader { name: names::PAYLOAD_FORMAT, value: format!("{v:?}") })?;
        properties.push(Property::PayloadFormatIndicator(v));
    }
    if let Some(v) = number(names::EXPIRY)? {
        properties.push(Property::MessageExpiryInterval(u32::try_from(v).unwrap_or(u32::MAX)));
    }
    if let Some(v) = first(names::CONTENT_TYPE) {
        properties.push(Property::ContentType(unescape_str(names::CONTENT_TYPE, v)?));
    }
    if let Some(v) = first(names::RESPONSE_TOPIC) {
        properties.push(Property::ResponseTopic(unescape_str(names::RESPONSE_TOPIC, v)?));
    }
    if let Some(v) = first(names::CORRELATION_DATA) {
        let b =
            unescape(v).ok_or_else(|| BadHeader { name: names::CORRELATION_DATA, value: v.to_owned() })?;
        properties.push(Property::CorrelationData(Bytes::from(b)));
    }
    for v in get_all(names::USER_PROPERTY) {
        let bad = || BadHeader { name: names::USER_PROPERTY, value: v.to_owned() };
        let (k, val) = v.split_once(' ').ok_or_else(bad)?;
        properties.push(Property::UserProperty(
            unescape_str(names::USER_PROPERTY, k)?,
            unescape_str(names::USER_PROPERTY, val)?,
        ));
    }
    Ok(Carried { qos, retain, publisher, properties, origin })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn read_pairs(h: &[(&'static str, String)]) -> Result<Carried, BadHeader> {
        read(|name| h.iter().filter(move |(n, _)| *n == name).map(|(_, v)| v.as_str()))
    }

    #[test]
    fn every_forwarded_property_travels() {
        let mut p = Properties::new();
        p.push(Property::PayloadFormatIndicator(1));
        p.push(Property::ContentType("".into()));
        p.push(Property::ResponseTopic("reply/to me.now".into()));
        p.push(Property::CorrelationData(Bytes::from_static(b"\x00\xff\r\n id")));
        p.push(Property::UserProperty("k 1".into(), "v\n1".into()));
        p.push(Property::UserProperty("k 1".into(), "".into()));
        p.push(Property::UserProperty("".into(), "é%".into()));
        let h = headers(QoS::ExactlyOnce, true, "client 1", &p, Some(30), ("node-a/7", 42));
        for (_, v) in &h {
            assert!(!v.bytes().any(|b| b == b'\r' || b == b'\n'), "{v:?}");
            assert_eq!(v.trim(), v, "NATS trims header values");
            assert!(!v.is_empty());
        }
        let c = read_pairs(&h).unwrap();
        assert_eq!(c.qos, QoS::ExactlyOnce);
        assert!(c.retain);
        assert_eq!(&*c.publisher, "client 1");
        assert_eq!(c.origin, Some(("node-a/7".into(), 42)));
        assert_eq!(c.properties.message_expiry_interval(), Some(30));
        let mut without_expiry = c.properties.clone();
        without_expiry.remove(midge_codec::PropertyId::MessageExpiryInterval);
        assert_eq!(without_expiry, p);
    }

    #[test]
    fn defaults_and_errors() {
        let c = read_pairs(&[]).unwrap();
        assert_eq!((c.qos, c.retain, c.origin), (QoS::AtMostOnce, false, None));
        assert!(read_pairs(&[(names::QOS, "3".into())]).is_err());
        assert!(read_pairs(&[(names::USER_PROPERTY, "novalue".into())]).is_err());
        assert!(read_pairs(&[(names::CORRELATION_DATA, "%G1".into())]).is_err());
    }

    proptest! {
        #[test]
        fn escaping_round_trips(b in prop::collection::vec(any::<u8>(), 0..40)) {
            let e = escape(&b);
            prop_assert!(e.bytes().all(|c| matches!(c, b'!'..=b'~')));
            prop_assert_eq!(unescape(&e).unwrap(), b);
        }
    }
}
