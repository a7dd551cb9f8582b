//! The pipeline: frames to TCP segments, segments to streams, streams to MQTT packets and TLS
//! hellos; records, findings and the summary to a [`Sink`] as they are found.
use std::collections::{HashMap, HashSet};
use std::io;

use midge_codec::Packet;

use crate::capture::link::{self, LinkError};
use crate::capture::{Frame, LinkType};
use crate::mqtt::{describe, Decoded, MqttOutput};
use crate::net::ip;
use crate::net::tcp::{ConnId, Reassembler, TcpEvent};
use crate::report::{
    ClientEntry, Direction, Field, Finding, FindingKind, Protocol, Record, Sink, Summary, Value,
};
use crate::stream::{Connection, Kind, Ports, StreamOutput};
use crate::tls::{version_name, Hello};

/// The standard MQTT port (IANA), decoded always.
pub const MQTT_PORT: u16 = 1883;
/// The standard MQTT over TLS port (IANA).
pub const MQTT_TLS_PORT: u16 = 8883;

/// What to decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Ports of MQTT in clear: 1883 and the `--port`s.
    pub mqtt_ports: Vec<u16>,
    /// Ports of MQTT over TLS: 8883.
    pub tls_ports: Vec<u16>,
}

impl Config {
    /// The standard ports, and `extra` as MQTT ports.
    pub fn with_ports(extra: &[u16]) -> Config {
        let mut mqtt = vec![MQTT_PORT];
        mqtt.extend(extra.iter().copied().filter(|p| *p != MQTT_PORT));
        Config { mqtt_ports: mqtt, tls_ports: vec![MQTT_TLS_PORT] }
    }

    /// Every port, for a capture filter.
    pub fn all_ports(&self) -> Vec<u16> {
        let mut all: Vec<u16> = self.mqtt_ports.iter().chain(&self.tls_ports).copied().collect();
        all.sort_unstable();
        all.dedup();
        all
    }
}

impl Default for Config {
    fn default() -> Self {
        Config::with_ports(&[])
    }
}

/// Where in the capture something happened.
#[derive(Clone, Copy)]
struct At {
    frame: u64,
    time_ns: i128,
}

/// Inspects frames one at a time.
pub struct Inspector {
    ports: Ports,
    first_ts: Option<i128>,
    reassembler: Reassembler,
    conns: HashMap<ConnId, Connection>,
    /// The summary's client entry of each MQTT connection.
    client_entries: HashMap<ConnId, usize>,
    summary: Summary,
    unsupported_links: HashSet<LinkType>,
    undecodable: u64,
    /// The last frame: what happens at the end of the capture happens there.
    last: At,
    /// A frame cut short by the snapshot length was reported.
    cut_warned: bool,
}

impl Inspector {
    /// An inspector for these ports.
    pub fn new(config: &Config) -> Inspector {
        let ports = Ports {
            mqtt: config.mqtt_ports.iter().copied().collect(),
            tls: config.tls_ports.iter().copied().collect(),
        };
        Inspector {
            reassembler: Reassembler::new(config.all_ports()),
            ports,
            first_ts: None,
            conns: HashMap::new(),
            client_entries: HashMap::new(),
            summary: Summary::default(),
            unsupported_links: HashSet::new(),
            undecodable: 0,
            last: At { frame: 0, time_ns: 0 },
            cut_warned: false,
        }
    }

    /// A warning from elsewhere (the capture reader), counted in the summary.
    pub fn warning(&mut self, message: &str, sink: &mut dyn Sink) -> io::Result<()> {
        self.summary.warnings += 1;
        sink.warning(message)
    }

    /// Takes the next frame.
    pub fn frame(&mut self, frame: &Frame, sink: &mut dyn Sink) -> io::Result<()> {
        self.summary.frames = self.summary.frames.max(frame.number);
        let first = *self.first_ts.get_or_insert(frame.timestamp_ns);
        let at = At { frame: frame.number, time_ns: frame.timestamp_ns - first };
        self.last = at;
        if frame.data.len() < frame.orig_len as usize && !self.cut_warned {
            self.cut_warned = true;
            let m = format!(
                "frame {} was captured cut to {} of its {} bytes (a snapshot length): TCP payloads are \
                 incomplete; capture whole packets (tcpdump -s 0)",
                at.frame,
                frame.data.len(),
                frame.orig_len
            );
            self.warning(&m, sink)?;
        }
        let payload = match link::strip(frame.link, &frame.data) {
            Ok(p) => p,
            Err(LinkError::Unsupported(l)) => {
                if self.unsupported_links.insert(l) {
                    let m = format!(
                        "frame {}: {l} is not supported: frames of this link type are skipped",
                        at.frame
                    );
                    self.warning(&m, sink)?;
                }
                return Ok(());
            }
            Err(LinkError::NotIp(_)) => return Ok(()),
            Err(e) => return self.undecodable(at, &e.to_string(), sink),
        };
        let segment = match ip::tcp_segment(payload) {
            Ok(Some(s)) => s,
            Ok(None) => return Ok(()),
            Err(e) => return self.undecodable(at, &e.to_string(), sink),
        };
        let mut events = Vec::new();
        self.reassembler.push(&segment, &mut events);
        for event in events {
            self.tcp_event(event, at, sink)?;
        }
        Ok(())
    }

    /// The capture ended: open connections are closed and the summary is printed.
    pub fn finish(mut self, sink: &mut dyn Sink) -> io::Result<Summary> {
        let at = self.last;
        let mut events = Vec::new();
        self.reassembler.finish(&mut events);
        for event in events {
            self.tcp_event(event, at, sink)?;
        }
        if self.undecodable > 0 {
            let m = format!("{} frames could not be decoded as IP (truncated or damaged)", self.undecodable);
            self.warning(&m, sink)?;
        }
        let stats = self.reassembler.stats();
        self.summary.retransmissions = stats.retransmissions;
        self.summary.out_of_order = stats.out_of_order;
        sink.summary(&self.summary)?;
        Ok(self.summary)
    }

    fn undecodable(&mut self, at: At, why: &str, sink: &mut dyn Sink) -> io::Result<()> {
        self.undecodable += 1;
        if self.undecodable <= 3 {
            self.warning(&format!("frame {}: {why}: skipped", at.frame), sink)?;
        }
        Ok(())
    }

    fn tcp_event(&mut self, event: TcpEvent, at: At, sink: &mut dyn Sink) -> io::Result<()> {
        let mut out = Vec::new();
        let closed = matches!(event, TcpEvent::Closed { .. });
        let id = match event {
            TcpEvent::Opened { id, client, server, .. } => {
                self.summary.tcp_connections += 1;
                self.conns.insert(id, Connection::new(client, server));
                return Ok(());
            }
            TcpEvent::Data { id, from_client, data } => {
                if let Some(c) = self.conns.get_mut(&id) {
                    c.data(from_client, &data, &self.ports, &mut out);
                }
                id
            }
            TcpEvent::Gap { id, from_client, missing } => {
                if let Some(c) = self.conns.get_mut(&id) {
                    c.gap(from_client, missing, &mut out);
                }
                id
            }
            TcpEvent::Closed { id } => {
                if let Some(c) = self.conns.get_mut(&id) {
                    c.close(&mut out);
                }
                id
            }
        };
        for o in out {
            self.stream_output(id, o, at, sink)?;
        }
        if closed {
            self.conns.remove(&id);
            self.client_entries.remove(&id);
        }
        Ok(())
    }

    fn stream_output(&mut self, id: ConnId, o: StreamOutput, at: At, sink: &mut dyn Sink) -> io::Result<()> {
        let Some(conn) = self.conns.get(&id) else { return Ok(()) };
        let (client, broker) = (conn.client, conn.server);
        match o {
            StreamOutput::Classified(Kind::Mqtt) => self.summary.mqtt_connections += 1,
            StreamOutput::Classified(Kind::Tls) => self.summary.tls_connections += 1,
            StreamOutput::Classified(Kind::Other) => {}
            StreamOutput::Mqtt(MqttOutput::Packet(d)) => self.packet(id, d, at, sink)?,
            StreamOutput::Mqtt(MqttOutput::Malformed { from_client, reason }) => {
                let (src, dst) = if from_client { (client, broker) } else { (broker, client) };
                self.warning(&format!("frame {}: {src} → {dst}: {reason}", at.frame), sink)?;
            }
            StreamOutput::Hello { from_client, hello } => {
                let (name, fields) = hello_fields(&hello);
                let record = Record {
                    frame: at.frame,
                    time_ns: at.time_ns,
                    direction: if from_client {
                        Direction::ClientToBroker
                    } else {
                        Direction::BrokerToClient
                    },
                    client,
                    broker,
                    client_id: None,
                    protocol: Protocol::Tls,
                    name,
                    fields,
                };
                sink.record(&record)?;
            }
            StreamOutput::Encrypted { sni, version, handshake_seen } => {
                let kind = FindingKind::Encrypted { sni, version, handshake_seen };
                self.finding(Finding { frame: at.frame, time_ns: at.time_ns, client, broker, kind }, sink)?;
            }
            StreamOutput::Warning(m) => {
                self.warning(&format!("frame {}: {client} → {broker}: {m}", at.frame), sink)?;
            }
        }
        Ok(())
    }

    fn packet(&mut self, id: ConnId, d: Decoded, at: At, sink: &mut dyn Sink) -> io::Result<()> {
        let Some(conn) = self.conns.get(&id) else { return Ok(()) };
        let (client, broker) = (conn.client, conn.server);
        let client_id = conn.client_id().map(str::to_string);
        let ptype = d.packet.packet_type();
        self.summary.packets.entry(ptype as u8).or_insert((ptype.name(), 0)).1 += 1;
        match &d.packet {
            Packet::Publish(_) => {
                if let Some(topic) = &d.topic {
                    *self.summary.topics.entry(topic.clone()).or_insert(0) += 1;
                }
            }
            Packet::Connect(c) if d.from_client => {
                self.client_entries.insert(id, self.summary.clients.len());
                self.summary.clients.push(ClientEntry {
                    client_id: c.client_id.to_string(),
                    client,
                    broker,
                    version: c.protocol,
                    user: c.username.as_ref().map(|u| u.to_string()),
                });
            }
            Packet::ConnAck(_) => {
                // A 5.0 broker may assign the identifier of an empty one.
                if let (Some(&i), Some(cid)) = (self.client_entries.get(&id), &client_id) {
                    if let Some(entry) = self.summary.clients.get_mut(i) {
                        entry.client_id.clone_from(cid);
                    }
                }
            }
            _ => {}
        }
        let record = Record {
            frame: at.frame,
            time_ns: at.time_ns,
            direction: if d.from_client { Direction::ClientToBroker } else { Direction::BrokerToClient },
            client,
            broker,
            client_id,
            protocol: Protocol::Mqtt { version: d.version, assumed: d.version_assumed },
            name: ptype.name(),
            fields: describe::fields(&d.packet, d.version, d.topic.as_deref()),
        };
        sink.record(&record)?;
        // Every CONNECT with credentials on a stream that is not TLS: anyone on the path reads
        // them (MQTT 3.1.1 section 5.4.1, 5.0 section 5.4.1: credentials are sent in clear
        // unless the transport encrypts them).
        if let Packet::Connect(c) = &d.packet {
            let user = c.username.as_ref().map(|u| u.to_string());
            let kind = match (&c.password, user) {
                (Some(password), user) => {
                    Some(FindingKind::ClearTextPassword { user, password: password.clone() })
                }
                (None, Some(user)) => Some(FindingKind::ClearTextUser { user }),
                (None, None) => None,
            };
            if let Some(kind) = kind {
                self.finding(Finding { frame: at.frame, time_ns: at.time_ns, client, broker, kind }, sink)?;
            }
        }
        Ok(())
    }

    fn finding(&mut self, f: Finding, sink: &mut dyn Sink) -> io::Result<()> {
        sink.finding(&f)?;
        self.summary.findings.push(f);
        Ok(())
    }
}

/// A TLS hello as a record's name and fields.
fn hello_fields(hello: &Hello) -> (&'static str, Vec<Field>) {
    match hello {
        Hello::Client(c) => {
            let mut f = Vec::new();
            if let Some(sni) = &c.sni {
                f.push(Field::key("sni", Value::Text(sni.clone())));
            }
            f.push(Field::detail("legacy_version", Value::Text(version_name(c.legacy_version))));
            if !c.versions.is_empty() {
                let names = c.versions.iter().map(|v| Value::Text(version_name(*v))).collect();
                f.push(Field::key("supported_versions", Value::List(names)));
            }
            if !c.alpn.is_empty() {
                f.push(Field::key("alpn", Value::List(c.alpn.iter().cloned().map(Value::Text).collect())));
            }
            ("ClientHello", f)
        }
        Hello::Server(s) => {
            let name = if s.retry { "HelloRetryRequest" } else { "ServerHello" };
            (name, vec![Field::key("version", Value::Text(version_name(s.version)))])
        }
    }
}
