//! What inspection reports: decoded messages ([`Record`]), findings, warnings and the
//! summary, and the two ways of printing them (text lines like tshark's, and JSON lines).
pub mod json;
pub mod text;

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;

use bytes::Bytes;
use midge_codec::ProtocolVersion;

use crate::tls::version_name;

/// A value of a decoded field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A flag.
    Bool(bool),
    /// A number.
    Int(u64),
    /// Text (UTF-8 on the wire).
    Text(String),
    /// Binary data (payloads, correlation data): shown as text when it is printable UTF-8.
    Bytes(Bytes),
    /// A secret (a password): masked when printed, unless revealing was asked for.
    Secret(Bytes),
    /// A reason code or return code, with its name.
    Reason {
        /// The byte.
        code: u8,
        /// Its name in the specification.
        name: &'static str,
    },
    /// A list.
    List(Vec<Value>),
    /// Named fields (a will message, properties, a subscription).
    Group(Vec<Field>),
}

/// One decoded field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// Its name (snake_case).
    pub name: &'static str,
    /// Its value.
    pub value: Value,
    /// Shown on the one-line summary of the message (all fields are shown with `-v`).
    pub key: bool,
}

impl Field {
    /// A field shown on the one-line summary.
    pub fn key(name: &'static str, value: Value) -> Field {
        Field { name, value, key: true }
    }
    /// A field shown with `-v` only.
    pub fn detail(name: &'static str, value: Value) -> Field {
        Field { name, value, key: false }
    }
}

/// Which way a message went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the client to the broker.
    ClientToBroker,
    /// From the broker to the client.
    BrokerToClient,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::ClientToBroker => "C>B",
            Direction::BrokerToClient => "B>C",
        })
    }
}

/// The protocol a message belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// MQTT of this version; `assumed` when the stream's CONNECT was not captured.
    Mqtt {
        /// The version.
        version: ProtocolVersion,
        /// Taken as 3.1.1 for want of a CONNECT.
        assumed: bool,
    },
    /// A TLS handshake message.
    Tls,
}

/// One decoded message: an MQTT control packet or a TLS hello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The frame that completed it (tshark's frame number).
    pub frame: u64,
    /// Nanoseconds since the capture's first frame.
    pub time_ns: i128,
    /// Which way it went.
    pub direction: Direction,
    /// The client's address.
    pub client: SocketAddr,
    /// The broker's address.
    pub broker: SocketAddr,
    /// The client identifier of the connection, once known.
    pub client_id: Option<String>,
    /// Its protocol.
    pub protocol: Protocol,
    /// Its name: the MQTT packet type ("PUBLISH") or the TLS message ("ClientHello").
    pub name: &'static str,
    /// Its fields.
    pub fields: Vec<Field>,
}

impl Record {
    /// The sender's address.
    pub fn src(&self) -> SocketAddr {
        match self.direction {
            Direction::ClientToBroker => self.client,
            Direction::BrokerToClient => self.broker,
        }
    }
    /// The receiver's address.
    pub fn dst(&self) -> SocketAddr {
        match self.direction {
            Direction::ClientToBroker => self.broker,
            Direction::BrokerToClient => self.client,
        }
    }
}

/// What was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FindingKind {
    /// A CONNECT with a password on a stream that is not encrypted.
    ClearTextPassword {
        /// The user name, if the CONNECT had one (5.0 allows a password alone).
        user: Option<String>,
        /// The password.
        password: Bytes,
    },
    /// A CONNECT with a user name and no password on a stream that is not encrypted.
    ClearTextUser {
        /// The user name.
        user: String,
    },
    /// A TLS stream: nothing in it is decoded.
    Encrypted {
        /// The server name the client asked for.
        sni: Option<String>,
        /// The negotiated version (from the ServerHello).
        version: Option<u16>,
        /// Whether the handshake was captured (else the stream is taken as TLS for its port).
        handshake_seen: bool,
    },
}

/// A finding about one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The frame it was found in.
    pub frame: u64,
    /// Nanoseconds since the capture's first frame.
    pub time_ns: i128,
    /// The client's address.
    pub client: SocketAddr,
    /// The broker's address.
    pub broker: SocketAddr,
    /// What was found.
    pub kind: FindingKind,
}

impl Finding {
    /// "warning" for credentials in clear text, "info" for encrypted streams.
    pub fn severity(&self) -> &'static str {
        if self.is_problem() {
            "warning"
        } else {
            "info"
        }
    }

    /// Whether this is a finding proper (credentials an eavesdropper reads), not a note (an
    /// encrypted stream): `midge inspect` marks those `!!` and exits 1 when there is one.
    pub fn is_problem(&self) -> bool {
        !matches!(self.kind, FindingKind::Encrypted { .. })
    }

    /// A stable name for the kind, for JSON.
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            FindingKind::ClearTextPassword { .. } => "cleartext_password",
            FindingKind::ClearTextUser { .. } => "cleartext_username",
            FindingKind::Encrypted { .. } => "encrypted",
        }
    }

    /// The finding in words (issue #6's wording for credentials).
    pub fn message(&self) -> String {
        let (c, b) = (self.client, self.broker);
        match &self.kind {
            FindingKind::ClearTextPassword { user: Some(u), .. } => {
                format!("password for user '{}' sent in clear text from {c} to {b}", text::escape(u))
            }
            FindingKind::ClearTextPassword { user: None, .. } => {
                format!("password sent in clear text from {c} to {b}")
            }
            FindingKind::ClearTextUser { user } => {
                format!("user name '{}' sent in clear text from {c} to {b}", text::escape(user))
            }
            FindingKind::Encrypted { handshake_seen: false, .. } => {
                format!("encrypted stream from {c} to {b} (TLS port; its handshake was not captured): not decoded")
            }
            FindingKind::Encrypted { sni, version, .. } => {
                let version = version.map_or_else(|| "TLS, version not seen".to_string(), version_name);
                let sni = sni
                    .as_ref()
                    .map_or_else(|| "no SNI".to_string(), |s| format!("SNI '{}'", text::escape(s)));
                format!("encrypted stream from {c} to {b} ({version}, {sni}): not decoded")
            }
        }
    }
}

/// A client seen in a CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientEntry {
    /// Its client identifier (the broker's assigned one for an empty 5.0 identifier).
    pub client_id: String,
    /// Its address.
    pub client: SocketAddr,
    /// The broker's address.
    pub broker: SocketAddr,
    /// The MQTT version of its CONNECT.
    pub version: ProtocolVersion,
    /// Its user name.
    pub user: Option<String>,
}

/// Everything at the end.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Frames read.
    pub frames: u64,
    /// TCP connections seen.
    pub tcp_connections: u64,
    /// Of which decoded as MQTT.
    pub mqtt_connections: u64,
    /// Of which TLS.
    pub tls_connections: u64,
    /// Clients, in the order of their CONNECT.
    pub clients: Vec<ClientEntry>,
    /// PUBLISH packets per topic.
    pub topics: BTreeMap<String, u64>,
    /// MQTT packets per type, by type number.
    pub packets: BTreeMap<u8, (&'static str, u64)>,
    /// Findings and notes, in the order found.
    pub findings: Vec<Finding>,
    /// Warnings given.
    pub warnings: u64,
    /// TCP segments dropped as retransmissions.
    pub retransmissions: u64,
    /// TCP segments held until earlier bytes came.
    pub out_of_order: u64,
}

/// Where inspection sends what it finds, as it finds it.
pub trait Sink {
    /// A decoded message.
    fn record(&mut self, record: &Record) -> io::Result<()>;
    /// A finding.
    fn finding(&mut self, finding: &Finding) -> io::Result<()>;
    /// Something that could not be read, with where.
    fn warning(&mut self, message: &str) -> io::Result<()>;
    /// The end.
    fn summary(&mut self, summary: &Summary) -> io::Result<()>;
}

impl Summary {
    /// Whether a finding proper was reported (not only notes): the exit code says so.
    pub fn has_problems(&self) -> bool {
        self.findings.iter().any(Finding::is_problem)
    }
}

/// Seconds with six decimals, as tshark shows relative times of microsecond captures.
pub fn format_time(ns: i128) -> String {
    let micros = (ns.abs() + 500) / 1000;
    let sign = if ns < 0 { "-" } else { "" };
    format!("{sign}{}.{:06}", micros / 1_000_000, micros % 1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_have_six_decimals() {
        assert_eq!(format_time(0), "0.000000");
        assert_eq!(format_time(1_234_567_000), "1.234567");
        assert_eq!(format_time(1_234_567_499), "1.234567");
        assert_eq!(format_time(1_234_567_500), "1.234568");
        assert_eq!(format_time(-2_000), "-0.000002");
    }

    #[test]
    fn findings_use_the_issue_wording() {
        let f = |kind| Finding {
            frame: 4,
            time_ns: 0,
            client: "10.0.0.5:51234".parse().unwrap(),
            broker: "10.0.0.1:1883".parse().unwrap(),
            kind,
        };
        let pw =
            f(FindingKind::ClearTextPassword { user: Some("alice".into()), password: Bytes::from("pw") });
        assert_eq!(
            pw.message(),
            "password for user 'alice' sent in clear text from 10.0.0.5:51234 to 10.0.0.1:1883"
        );
        let user = f(FindingKind::ClearTextUser { user: "alice".into() });
        assert_eq!(
            user.message(),
            "user name 'alice' sent in clear text from 10.0.0.5:51234 to 10.0.0.1:1883"
        );
        let tls = f(FindingKind::Encrypted {
            sni: Some("localhost".into()),
            version: Some(0x0304),
            handshake_seen: true,
        });
        assert_eq!(
            tls.message(),
            "encrypted stream from 10.0.0.5:51234 to 10.0.0.1:1883 (TLS 1.3, SNI 'localhost'): not decoded"
        );
        assert_eq!((pw.severity(), tls.severity()), ("warning", "info"));
        assert!(pw.is_problem() && user.is_problem() && !tls.is_problem());
    }
}
