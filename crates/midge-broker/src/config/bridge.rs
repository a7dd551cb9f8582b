//! Bridges in mosquitto.conf: a `connection NAME` line starts one, and the bridge options
//! after it (until the next `connection`) are its own, with mosquitto's defaults.
use std::path::PathBuf;

use midge_codec::{ProtocolVersion, QoS};

use super::error::LineError;
use super::lex::Directive;
use super::values::{flag, one, parse_num};
use super::TlsVersion;

/// The options that belong to the bridge of the last `connection` line.
pub const BRIDGE_OPTIONS: &[&str] = &[
    "address",
    "addresses",
    "topic",
    "bridge_protocol_version",
    "bridge_session_expiry_interval",
    "cleansession",
    "local_cleansession",
    "clientid",
    "remote_clientid",
    "username",
    "remote_username",
    "password",
    "remote_password",
    "local_clientid",
    "local_username",
    "local_password",
    "keepalive_interval",
    "idle_timeout",
    "restart_timeout",
    "start_type",
    "threshold",
    "notifications",
    "notification_topic",
    "notifications_local_only",
    "try_private",
    "bridge_attempt_unsubscribe",
    "bridge_outgoing_retain",
    "bridge_max_packet_size",
    "bridge_cafile",
    "bridge_capath",
    "bridge_certfile",
    "bridge_keyfile",
    "bridge_insecure",
    "bridge_tls_version",
    "bridge_alpn",
    "bridge_bind_address",
    "bridge_require_ocsp",
    "round_robin",
];

/// Where a bridge topic's messages go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From this broker to the remote one.
    Out,
    /// From the remote broker to this one.
    In,
    /// Both ways.
    Both,
}

impl Direction {
    /// Messages go from this broker to the remote one.
    pub fn outgoing(self) -> bool {
        matches!(self, Direction::Out | Direction::Both)
    }

    /// Messages come from the remote broker to this one.
    pub fn incoming(self) -> bool {
        matches!(self, Direction::In | Direction::Both)
    }
}

/// A `topic PATTERN [in|out|both [QOS [LOCAL_PREFIX [REMOTE_PREFIX]]]]` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeTopic {
    /// The pattern (`None`: `""`, the prefixes are the whole topic).
    pub pattern: Option<String>,
    /// Which way.
    pub direction: Direction,
    /// The subscription's QoS.
    pub qos: QoS,
    /// Prepended on this broker (`None`: `""` or none).
    pub local_prefix: Option<String>,
    /// Prepended on the remote broker.
    pub remote_prefix: Option<String>,
}

impl BridgeTopic {
    /// The filter on this broker: local prefix and pattern, joined as written.
    pub fn local_topic(&self) -> String {
        format!("{}{}", self.local_prefix.as_deref().unwrap_or(""), self.pattern.as_deref().unwrap_or(""))
    }

    /// The filter on the remote broker.
    pub fn remote_topic(&self) -> String {
        format!("{}{}", self.remote_prefix.as_deref().unwrap_or(""), self.pattern.as_deref().unwrap_or(""))
    }
}

/// When a bridge connects (`start_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartType {
    /// At start, and again after `restart_timeout` whenever the connection is lost.
    Automatic,
    /// Once `threshold` messages wait for it; it disconnects after `idle_timeout` idle.
    Lazy,
    /// At start only: not again once the connection is lost.
    Once,
}

/// A bridge's TLS settings towards the remote broker.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BridgeTls {
    /// CA certificates the remote's certificate must chain to.
    pub cafile: Option<PathBuf>,
    /// A directory of them.
    pub capath: Option<PathBuf>,
    /// This bridge's certificate (its identity on the remote).
    pub certfile: Option<PathBuf>,
    /// Its key.
    pub keyfile: Option<PathBuf>,
    /// Accept a certificate whose name is not the remote's host name (never use in production).
    pub insecure: bool,
    /// The lowest TLS version.
    pub min_version: Option<TlsVersion>,
    /// ALPN protocol.
    pub alpn: Option<String>,
}

impl BridgeTls {
    /// True when the bridge speaks TLS (a CA is given).
    pub fn enabled(&self) -> bool {
        self.cafile.is_some() || self.capath.is_some()
    }
}

/// One bridge: a connection to another broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bridge {
    /// The `connection` line's name.
    pub name: String,
    /// Where it was declared ("file:line").
    pub origin: String,
    /// The remote brokers: host and port, tried in order.
    pub addresses: Vec<(String, u16)>,
    /// `round_robin`: go on to the next address at each reconnection (otherwise start again
    /// from the first, the main one).
    pub round_robin: bool,
    /// The topics.
    pub topics: Vec<BridgeTopic>,
    /// `bridge_protocol_version`.
    pub protocol: ProtocolVersion,
    /// `cleansession`: the session on the remote broker ends with the connection.
    pub clean_session: bool,
    /// `bridge_session_expiry_interval` (mosquitto 2.1's option; 5.0 only): the Session
    /// Expiry Interval asked of the remote (0xFFFFFFFF: never expires). `None`: 0.
    pub session_expiry_interval: Option<u32>,
    /// `local_cleansession` (`None`: as `cleansession`): the bridge's session on this
    /// broker ends with the connection, so nothing waits for the remote while it is away.
    pub local_clean_session: Option<bool>,
    /// `remote_clientid` / `clientid` (`None`: HOSTNAME.NAME).
    pub remote_clientid: Option<String>,
    /// `remote_username` / `username`.
    pub remote_username: Option<String>,
    /// `remote_password` / `password`.
    pub remote_password: Option<String>,
    /// `local_clientid` (`None`: local.REMOTE_CLIENTID).
    pub local_clientid: Option<String>,
    /// `local_username`: the bridge's user on this broker (for the ACL).
    pub local_username: Option<String>,
    /// `local_password`.
    pub local_password: Option<String>,
    /// `keepalive_interval`, seconds.
    pub keepalive: u16,
    /// `idle_timeout` (lazy bridges), seconds.
    pub idle_timeout: u64,
    /// `restart_timeout BASE [CAP]`: seconds before reconnecting; with a cap, a backoff
    /// ("decorrelated jitter") between them.
    pub restart_timeout: (u64, Option<u64>),
    /// `start_type`.
    pub start_type: StartType,
    /// `threshold` (lazy bridges): messages waiting before it connects.
    pub threshold: usize,
    /// `notifications`: publish the bridge's state (1 connected, 0 not), retained.
    pub notifications: bool,
    /// `notification_topic` (`None`: $SYS/broker/connection/REMOTE_CLIENTID/state).
    pub notification_topic: Option<String>,
    /// `notifications_local_only`.
    pub notifications_local_only: bool,
    /// `try_private`: tell the remote it is a bridge (3.1.1: protocol level | 0x80), so it
    /// does not send back what the bridge published.
    pub try_private: bool,
    /// `bridge_attempt_unsubscribe`: unsubscribe on the remote from out-only topics.
    pub attempt_unsubscribe: bool,
    /// `bridge_outgoing_retain`: keep RETAIN on messages sent to the remote.
    pub outgoing_retain: bool,
    /// `bridge_max_packet_size` (0: none).
    pub max_packet_size: u32,
    /// TLS towards the remote.
    pub tls: BridgeTls,
    /// `bridge_bind_address`: the local address to connect from.
    pub bind_address: Option<String>,
}

impl Bridge {
    fn new(name: String, origin: String) -> Bridge {
        Bridge {
            name,
            origin,
            addresses: Vec::new(),
            round_robin: false,
            topics: Vec::new(),
            protocol: ProtocolVersion::V3_1_1,
            clean_session: false,
            session_expiry_interval: None,
            local_clean_session: None,
            remote_clientid: None,
            remote_username: None,
            remote_password: None,
            local_clientid: None,
            local_username: None,
            local_password: None,
            keepalive: 60,
            idle_timeout: 60,
            restart_timeout: (5, Some(30)),
            start_type: StartType::Automatic,
            threshold: 10,
            notifications: true,
            notification_topic: None,
            notifications_local_only: false,
            try_private: true,
            attempt_unsubscribe: true,
            outgoing_retain: true,
            max_packet_size: 0,
            tls: BridgeTls::default(),
            bind_address: None,
        }
    }

    /// The client id on the remote broker: `remote_clientid`, or HOSTNAME.NAME as mosquitto.
    pub fn remote_clientid(&self) -> String {
        self.remote_clientid.clone().unwrap_or_else(|| format!("{}.{}", hostname(), self.name))
    }

    /// The client id of its session on this broker: `local_clientid`, or local.REMOTE_ID.
    pub fn local_clientid(&self) -> String {
        self.local_clientid.clone().unwrap_or_else(|| format!("local.{}", self.remote_clientid()))
    }

    /// Whether its session on this broker ends with each connection to the remote.
    pub fn local_clean(&self) -> bool {
        self.local_clean_session.unwrap_or(self.clean_session)
    }

    /// The Session Expiry Interval a 5.0 bridge asks of the remote: `bridge_session_expiry_interval`,
    /// 0 (none sent) by default, as mosquitto 2.0 (which sends none) and 2.1 (whose option
    /// this is, default 0) do: the remote then ends the bridge's session at each disconnection,
    /// even with `cleansession false`. mosquitto's own bridge tests expect that CONNECT byte
    /// for byte.
    pub fn session_expiry(&self) -> u32 {
        self.session_expiry_interval.unwrap_or(0)
    }

    /// True for a 5.0 bridge with `cleansession false` whose session the remote does not keep
    /// (no `bridge_session_expiry_interval`): worth a warning at start.
    pub fn loses_its_remote_session(&self) -> bool {
        self.protocol.is_v5() && !self.clean_session && self.session_expiry() == 0
    }

    /// Where the bridge's state is published.
    pub fn notification_topic(&self) -> String {
        self.notification_topic
            .clone()
            .unwrap_or_else(|| format!("$SYS/broker/connection/{}/state", self.remote_clientid()))
    }
}

/// This machine's host name (mosquitto's default bridge client ids start with it).
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// The word `""` stands for an empty value in bridge lines, as in mosquitto.
fn word(s: &str) -> Option<String> {
    (s != "\"\"").then(|| s.to_owned())
}

fn invalid(d: &Directive, value: &str, expected: &'static str) -> LineError {
    LineError::InvalidValue { option: d.name.clone(), value: value.to_owned(), expected }
}

/// Starts a bridge (`connection NAME`).
pub(super) fn connection(d: &Directive, bridges: &[Bridge]) -> Result<Bridge, LineError> {
    let name = one(d, "a bridge name")?;
    if bridges.iter().any(|b| b.name == name) {
        return Err(invalid(d, name, "a name no other bridge has"));
    }
    Ok(Bridge::new(name.to_owned(), d.location()))
}

/// Reads a bridge option into the bridge of the last `connection` line.
pub(super) fn option(d: &Directive, b: &mut Bridge) -> Result<(), LineError> {
    let name = d.name.as_str();
    match name {
        "address" | "addresses" => {
            if d.args.is_empty() {
                return Err(LineError::MissingValue { option: d.name.clone(), expected: "HOST[:PORT] ..." });
            }
            if !b.addresses.is_empty() {
                // As mosquitto ("Invalid bridge configuration"): a second line would add to
                // the list, or, without its `connection` line, to another bridge's.
                let expected = "one address line per bridge (its addresses go on that line)";
                return Err(invalid(d, &d.args.join(" "), expected));
            }
            for a in &d.args {
                let (host, port) = match a.rsplit_once(':') {
                    Some((h, p)) if !h.contains(':') || h.starts_with('[') => {
                        (h.trim_matches(['[', ']']).to_owned(), parse_num::<u16>(name, p)?)
                    }
                    _ => (a.clone(), 1883),
                };
                if port == 0 {
                    return Err(invalid(d, a, "a port from 1 to 65535"));
                }
                b.addresses.push((host, port));
            }
        }
        "topic" => b.topics.push(topic(d)?),
        "bridge_protocol_version" => {
            b.protocol = match one(d, "mqttv31, mqttv311 or mqttv50")? {
                "mqttv31" => ProtocolVersion::V3_1,
                "mqttv311" => ProtocolVersion::V3_1_1,
                "mqttv50" => ProtocolVersion::V5,
                other => return Err(invalid(d, other, "mqttv31, mqttv311 or mqttv50")),
            }
        }
        "cleansession" => b.clean_session = flag(d)?,
        "bridge_session_expiry_interval" => {
            let v = one(d, "seconds")?;
            b.session_expiry_interval = Some(match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
                Some(hex) => {
                    u32::from_str_radix(hex, 16).map_err(|_| invalid(d, v, "seconds (0xFFFFFFFF: never)"))?
                }
                None => parse_num(name, v)?,
            });
        }
        "local_cleansession" => b.local_clean_session = Some(flag(d)?),
        "clientid" | "remote_clientid" => b.remote_clientid = Some(one(d, "a client id")?.to_owned()),
        "username" | "remote_username" => b.remote_username = Some(one(d, "a user name")?.to_owned()),
        "password" | "remote_password" => b.remote_password = Some(d.value.clone()),
        "local_clientid" => b.local_clientid = Some(one(d, "a client id")?.to_owned()),
        "local_username" => b.local_username = Some(one(d, "a user name")?.to_owned()),
        "local_password" => b.local_password = Some(d.value.clone()),
        "keepalive_interval" => b.keepalive = parse_num(name, one(d, "seconds")?)?,
        "idle_timeout" => b.idle_timeout = parse_num(name, one(d, "seconds")?)?,
        "restart_timeout" => {
            let (base, cap) = match d.args.as_slice() {
                [base] => (parse_num::<u64>(name, base)?.max(1), None),
                [base, cap] => {
                    let base = parse_num::<u64>(name, base)?.max(1);
                    let cap = parse_num::<u64>(name, cap)?;
                    if cap < base {
                        return Err(invalid(
                            d,
                            &d.value,
                            "a cap at least the base (restart_timeout BASE CAP)",
                        ));
                    }
                    (base, Some(cap))
                }
                _ => return Err(invalid(d, &d.value, "seconds, or a base and a cap")),
            };
            b.restart_timeout = (base, cap);
        }
        "start_type" => {
            b.start_type = match one(d, "automatic, lazy or once")? {
                "automatic" => StartType::Automatic,
                "lazy" => StartType::Lazy,
                "once" => StartType::Once,
                other => return Err(invalid(d, other, "automatic, lazy or once")),
            }
        }
        "threshold" => b.threshold = parse_num::<usize>(name, one(d, "a count")?)?.max(1),
        "notifications" => b.notifications = flag(d)?,
        "notification_topic" => {
            let t = one(d, "a topic")?;
            // Published to: a topic name, without wildcards [MQTT-3.3.2-2].
            if midge_codec::validate_topic_name(t).is_err() {
                return Err(invalid(d, t, "a topic name (no + or #)"));
            }
            b.notification_topic = Some(t.to_owned());
        }
        "notifications_local_only" => b.notifications_local_only = flag(d)?,
        "try_private" => b.try_private = flag(d)?,
        "bridge_attempt_unsubscribe" => b.attempt_unsubscribe = flag(d)?,
        "bridge_outgoing_retain" => b.outgoing_retain = flag(d)?,
        "bridge_max_packet_size" => b.max_packet_size = parse_num(name, one(d, "bytes")?)?,
        "bridge_cafile" => b.tls.cafile = Some(d.value.clone().into()),
        "bridge_capath" => b.tls.capath = Some(d.value.clone().into()),
        "bridge_certfile" => b.tls.certfile = Some(d.value.clone().into()),
        "bridge_keyfile" => b.tls.keyfile = Some(d.value.clone().into()),
        "bridge_insecure" => b.tls.insecure = flag(d)?,
        "bridge_tls_version" => {
            b.tls.min_version = Some(match one(d, "tlsv1.2 or tlsv1.3")? {
                "tlsv1.2" => TlsVersion::V1_2,
                "tlsv1.3" => TlsVersion::V1_3,
                "tlsv1" | "tlsv1.1" => return Err(LineError::OldTlsVersion(d.value.clone())),
                other => return Err(invalid(d, other, "tlsv1.2 or tlsv1.3")),
            })
        }
        "bridge_alpn" => b.tls.alpn = Some(one(d, "a protocol name")?.to_owned()),
        "bridge_bind_address" => b.bind_address = Some(one(d, "an address")?.to_owned()),
        "round_robin" => b.round_robin = flag(d)?,
        // An OCSP response from the remote broker: rustls does not check one, and a bridge
        // without the check would trust a revoked certificate, so true is refused.
        "bridge_require_ocsp" => {
            if flag(d)? {
                return Err(LineError::RestrictingValue { option: d.name.clone(), value: true });
            }
        }
        _ => return Err(LineError::Unknown(d.name.clone())),
    }
    Ok(())
}

/// A `topic` line, as mosquitto reads it: a `#` word ends it (a comment).
fn topic(d: &Directive) -> Result<BridgeTopic, LineError> {
    let words: Vec<&str> = d.args.iter().map(String::as_str).collect();
    let Some((&pattern, rest)) = words.split_first() else {
        return Err(LineError::MissingValue { option: d.name.clone(), expected: "a topic pattern" });
    };
    let mut t = BridgeTopic {
        pattern: word(pattern),
        direction: Direction::Out,
        qos: QoS::AtMostOnce,
        local_prefix: None,
        remote_prefix: None,
    };
    let mut rest = rest.iter().copied().take_while(|w| !w.starts_with('#'));
    if let Some(dir) = rest.next() {
        t.direction = match dir.to_ascii_lowercase().as_str() {
            "out" => Direction::Out,
            "in" => Direction::In,
            "both" => Direction::Both,
            _ => return Err(invalid(d, dir, "in, out or both")),
        };
    }
    if let Some(q) = rest.next() {
        t.qos = q.parse::<u8>().ok().and_then(QoS::from_u8).ok_or_else(|| invalid(d, q, "0, 1 or 2"))?;
    }
    t.local_prefix = rest.next().and_then(word);
    t.remote_prefix = rest.next().and_then(word);
    if t.pattern.is_none() && (t.local_prefix.is_none() || t.remote_prefix.is_none()) {
        return Err(invalid(d, &d.value, "a pattern, or \"\" with both a local and a remote prefix"));
    }
    for prefix in [&t.local_prefix, &t.remote_prefix].into_iter().flatten() {
        if !midge_codec::is_valid_topic_name(prefix) {
            return Err(invalid(d, prefix, "a prefix without wildcards"));
        }
    }
    for filter in [t.local_topic(), t.remote_topic()] {
        if !midge_codec::is_valid_topic_filter(&filter) {
            return Err(invalid(d, &filter, "a valid topic filter (prefix and pattern)"));
        }
    }
    Ok(t)
}
