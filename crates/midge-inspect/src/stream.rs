//! What a TCP connection carries: MQTT, TLS or neither, decided from the client's first bytes
//! and the ports, then decoded as that.
//!
//! TLS is recognised first, on any port, by a handshake record at the start of the stream;
//! then MQTT on the MQTT ports (1883 and `--port`), or on any port when the client's first
//! bytes are a CONNECT; then a TLS port (8883) whose start was not captured counts as TLS.
//! Nothing inside a TLS stream is decoded or guessed.
use std::collections::HashSet;
use std::net::SocketAddr;

use midge_codec::{FixedHeader, ProtocolVersion};

use crate::mqtt::{MqttOutput, MqttStream};
use crate::tls::{self, Hello, HelloReader};

/// The ports that say what a stream is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ports {
    /// MQTT in clear (1883, and every `--port`).
    pub mqtt: HashSet<u16>,
    /// MQTT over TLS (8883).
    pub tls: HashSet<u16>,
}

/// What a connection turned out to carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// MQTT in clear.
    Mqtt,
    /// TLS.
    Tls,
    /// Something else: ignored.
    Other,
}

/// What the bytes of a connection gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamOutput {
    /// The connection's kind was decided.
    Classified(Kind),
    /// MQTT decoding.
    Mqtt(MqttOutput),
    /// A TLS hello.
    Hello {
        /// From the client.
        from_client: bool,
        /// The hello.
        hello: Hello,
    },
    /// A TLS stream, once: what the handshake told (reported when the ServerHello is read, or
    /// at the end).
    Encrypted {
        /// The ClientHello's server name.
        sni: Option<String>,
        /// The ServerHello's version.
        version: Option<u16>,
        /// Whether a hello was read.
        handshake_seen: bool,
    },
    /// Something worth a warning about this connection.
    Warning(String),
}

#[derive(Debug, Default)]
struct TlsState {
    readers: [HelloReader; 2],
    sni: Option<String>,
    version: Option<u16>,
    handshake_seen: bool,
    reported: bool,
}

#[derive(Debug)]
enum App {
    /// Undecided: the client's first bytes so far.
    Pending(Vec<u8>),
    Mqtt(MqttStream),
    Tls(Box<TlsState>),
    Other,
}

/// One TCP connection's application layer.
#[derive(Debug)]
pub struct Connection {
    /// The client.
    pub client: SocketAddr,
    /// The server.
    pub server: SocketAddr,
    app: App,
}

impl Connection {
    /// A connection whose kind is not known yet.
    pub fn new(client: SocketAddr, server: SocketAddr) -> Connection {
        Connection { client, server, app: App::Pending(Vec::new()) }
    }

    /// The MQTT client identifier, once known.
    pub fn client_id(&self) -> Option<&str> {
        match &self.app {
            App::Mqtt(m) => m.client_id(),
            _ => None,
        }
    }

    /// Takes the next bytes of one direction.
    pub fn data(&mut self, from_client: bool, data: &[u8], ports: &Ports, out: &mut Vec<StreamOutput>) {
        if let App::Pending(buf) = &mut self.app {
            let port = self.server.port();
            let kind = if from_client {
                buf.extend_from_slice(data);
                match classify(buf, port, ports) {
                    Some(kind) => kind,
                    None => return,
                }
            } else if ports.mqtt.contains(&port) {
                Kind::Mqtt // the broker spoke first: a connection whose start was not captured
            } else if ports.tls.contains(&port) {
                Kind::Tls
            } else {
                Kind::Other
            };
            let pending = std::mem::take(buf);
            self.app = match kind {
                Kind::Mqtt => App::Mqtt(MqttStream::default()),
                Kind::Tls => App::Tls(Box::default()),
                Kind::Other => App::Other,
            };
            out.push(StreamOutput::Classified(kind));
            if !pending.is_empty() {
                self.feed(true, &pending, out);
            }
            if from_client {
                return; // `data` was in `pending`
            }
        }
        self.feed(from_client, data, out);
    }

    /// Bytes of one direction were not captured.
    pub fn gap(&mut self, from_client: bool, missing: u64, out: &mut Vec<StreamOutput>) {
        match &mut self.app {
            App::Mqtt(m) => {
                m.gap(from_client);
                let who = if from_client { "client" } else { "broker" };
                out.push(StreamOutput::Warning(format!(
                    "{missing} bytes from the {who} were not captured: decoding resumes after them"
                )));
            }
            App::Pending(_) => self.app = App::Other,
            App::Tls(_) | App::Other => {}
        }
    }

    /// The connection ended.
    pub fn close(&mut self, out: &mut Vec<StreamOutput>) {
        match &mut self.app {
            App::Mqtt(m) => {
                let (c, s) = m.leftover();
                for (n, who) in [(c, "client"), (s, "broker")] {
                    if n > 0 {
                        out.push(StreamOutput::Warning(format!(
                            "{n} bytes from the {who} at the end of the stream are not a whole MQTT packet"
                        )));
                    }
                }
            }
            App::Tls(t) if !t.reported => {
                t.reported = true;
                out.push(StreamOutput::Encrypted {
                    sni: t.sni.clone(),
                    version: t.version,
                    handshake_seen: t.handshake_seen,
                });
            }
            _ => {}
        }
    }

    fn feed(&mut self, from_client: bool, data: &[u8], out: &mut Vec<StreamOutput>) {
        match &mut self.app {
            App::Mqtt(m) => {
                let mut decoded = Vec::new();
                m.push(from_client, data, &mut decoded);
                out.extend(decoded.into_iter().map(StreamOutput::Mqtt));
            }
            App::Tls(t) => {
                for hello in t.readers[usize::from(!from_client)].push(data) {
                    t.handshake_seen = true;
                    match &hello {
                        Hello::Client(c) => t.sni = c.sni.clone(),
                        Hello::Server(s) if !s.retry => t.version = Some(s.version),
                        Hello::Server(_) => {}
                    }
                    out.push(StreamOutput::Hello { from_client, hello });
                }
                if !t.reported && t.version.is_some() {
                    t.reported = true;
                    out.push(StreamOutput::Encrypted {
                        sni: t.sni.clone(),
                        version: t.version,
                        handshake_seen: true,
                    });
                }
            }
            App::Pending(_) | App::Other => {}
        }
    }
}

/// Decides from the client's first bytes; `None`: too few bytes yet.
fn classify(first: &[u8], server_port: u16, ports: &Ports) -> Option<Kind> {
    match tls::starts_tls(first) {
        Some(true) => return Some(Kind::Tls),
        None => return None,
        Some(false) => {}
    }
    if ports.mqtt.contains(&server_port) {
        return Some(Kind::Mqtt);
    }
    match starts_connect(first) {
        Some(true) => return Some(Kind::Mqtt),
        None if first.len() < 16 => return None,
        _ => {}
    }
    Some(if ports.tls.contains(&server_port) { Kind::Tls } else { Kind::Other })
}

/// Whether a stream starts with an MQTT CONNECT: type 1 with flags 0, then the protocol name
/// "MQTT" (3.1.1 section 3.1.2.1, 5.0 section 3.1.2.1) or "MQIsdp" (3.1). `None` while the
/// bytes so far could still be one.
fn starts_connect(first: &[u8]) -> Option<bool> {
    if first.first() != Some(&0x10) {
        return Some(false);
    }
    let header = match FixedHeader::parse(first, ProtocolVersion::V5, usize::MAX) {
        Ok(Some(h)) => h,
        Ok(None) => return None,
        Err(_) => return Some(false),
    };
    let body = &first[header.header_len..];
    for name in [&b"\x00\x04MQTT"[..], &b"\x00\x06MQIsdp"[..]] {
        let n = body.len().min(name.len());
        if body[..n] == name[..n] {
            return if n == name.len() { Some(true) } else { None };
        }
    }
    Some(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ports() -> Ports {
        Ports { mqtt: [1883].into(), tls: [8883].into() }
    }

    #[test]
    fn connect_on_any_port_is_mqtt() {
        let connect = b"\x10\x10\x00\x04MQTT\x04\x02\x00\x3c\x00\x04abcd";
        assert_eq!(classify(connect, 5555, &ports()), Some(Kind::Mqtt));
        assert_eq!(classify(&connect[..4], 5555, &ports()), None);
        assert_eq!(classify(b"\x10\x0c\x00\x06MQIsdp\x03", 5555, &ports()), Some(Kind::Mqtt));
        assert_eq!(classify(b"GET / HTTP/1.1\r\nHost: x\r\n", 5555, &ports()), Some(Kind::Other));
        assert_eq!(
            classify(b"\x10\x10\x00\x04HTTP\x04\x02\x00\x3c\x00\x04abcd", 5555, &ports()),
            Some(Kind::Other)
        );
    }

    #[test]
    fn tls_is_recognised_before_the_port() {
        assert_eq!(classify(&[0x16, 3, 1, 0, 100], 1883, &ports()), Some(Kind::Tls));
        assert_eq!(classify(&[0x16, 3, 1, 0, 100], 4444, &ports()), Some(Kind::Tls));
        // Port 8883 without a handshake at the start: TLS all the same, never decoded.
        assert_eq!(classify(&[0x17; 20], 8883, &ports()), Some(Kind::Tls));
        assert_eq!(classify(&[0x17; 20], 1883, &ports()), Some(Kind::Mqtt));
    }
}
